//! Every text a response can carry, in one place. The pipeline records *what* happened
//! as a [`Message`] value; the words are chosen only when a response is written, so a
//! language (SPEC §3) changes the texts and never the codes or the structure.

use serde::{Deserialize, Serialize};

/// The code of one log entry (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum Code {
    /// Imported or updated.
    Ok = 0,
    /// A mandatory field is missing.
    Missing = 1,
    /// A field failed its rule.
    Invalid = 2,
    /// Something went wrong that the request could not have prevented.
    Unhandled = 3,
}

impl From<Code> for u8 {
    fn from(c: Code) -> u8 {
        c as u8
    }
}

impl TryFrom<u8> for Code {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            0 => Ok(Code::Ok),
            1 => Ok(Code::Missing),
            2 => Ok(Code::Invalid),
            3 => Ok(Code::Unhandled),
            _ => Err(format!("not a log code: {n}")),
        }
    }
}

/// The JSON type a field should have had.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JsonKind {
    String,
    Number,
    Integer,
    Boolean,
    Object,
    Array,
    Null,
}

impl JsonKind {
    fn article_en(self) -> &'static str {
        match self {
            JsonKind::String => "a string",
            JsonKind::Number => "a number",
            JsonKind::Integer => "an integer",
            JsonKind::Boolean => "a boolean",
            JsonKind::Object => "an object",
            JsonKind::Array => "an array",
            JsonKind::Null => "null",
        }
    }
}

/// Why a field's value broke its rule, said after the value in the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    /// Email: no hint, to match the platform's own message word for word.
    Email,
    Phone,
    Percent,
    Date,
    CardStatus,
    AtLeastOne,
    Currency,
    SiteLink,
    /// A number beyond what a 64-bit float can hold: no consumer could read it.
    Finite,
}

/// Something that happened to one user, or to the whole file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    Added {
        email: String,
    },
    Updated {
        email: String,
    },
    Unchanged {
        email: String,
    },
    Missing {
        field: String,
    },
    NullMandatory {
        field: String,
    },
    WrongType {
        field: String,
        expected: JsonKind,
        found: JsonKind,
    },
    Invalid {
        field: String,
        value: String,
        rule: Rule,
    },
    TooLong {
        field: String,
        max: usize,
    },
    UnknownField {
        field: String,
    },
    RepeatedField {
        field: String,
    },
    NotAnObject {
        found: JsonKind,
    },
    /// A string with an escape that is not valid Unicode (a lone surrogate).
    BadText {
        field: String,
    },
    /// An object with a key that is not valid Unicode.
    BadKey {
        within: String,
    },
    Duplicate {
        email: String,
        first: u64,
    },
    Unhandled {
        detail: String,
    },
    // Whole-file problems, for `ERROR` responses.
    NotUtf8 {
        line: u64,
        column: u64,
    },
    BadJson {
        line: u64,
        column: u64,
        reason: String,
    },
    BadShape {
        line: u64,
        column: u64,
        reason: String,
    },
    TooLarge {
        size: u64,
        limit: u64,
    },
    Unreadable {
        reason: String,
    },
    TokenMissing,
    TokenRejected,
}

/// How long a quoted input value may be inside a message, so that a 1 MB string does
/// not make a 1 MB response line.
const QUOTE_LIMIT: usize = 100;

/// Shortens `value` for quoting in a message.
pub fn quote(value: &str) -> String {
    match value.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

impl Message {
    /// The response code this message is reported under.
    pub fn code(&self) -> Code {
        match self {
            Message::Added { .. } | Message::Updated { .. } | Message::Unchanged { .. } => Code::Ok,
            Message::Missing { .. } | Message::NullMandatory { .. } => Code::Missing,
            Message::Unhandled { .. } => Code::Unhandled,
            _ => Code::Invalid,
        }
    }

    /// The text in `lang`.
    pub fn text(&self, lang: Lang) -> String {
        match lang {
            Lang::En => self.text_en(),
        }
    }

    fn text_en(&self) -> String {
        match self {
            Message::Added { email } => format!("User {email} added successfully"),
            Message::Updated { email } => format!("User {email} updated successfully"),
            Message::Unchanged { email } => {
                format!("User {email} is already up to date, nothing changed")
            }
            Message::Missing { field } => format!("Mandatory field {field} is missing"),
            Message::NullMandatory { field } => {
                format!("Mandatory field {field} cannot be null")
            }
            Message::WrongType {
                field,
                expected,
                found,
            } => format!(
                "The {field} field must be {}, not {}",
                expected.article_en(),
                found.article_en()
            ),
            Message::Invalid { field, value, rule } => {
                let hint = match rule {
                    Rule::Email => "",
                    Rule::Phone => ": expected + and 7 to 15 digits, with the country code",
                    Rule::Percent => ": expected a percentage from 0 to 100",
                    Rule::Date => ": expected a real date written YYYY-MM-DD",
                    Rule::CardStatus => {
                        ": expected 1 (confirmed), 2 (pending confirmation) or 3 (rejected)"
                    }
                    Rule::AtLeastOne => ": expected a whole number of at least 1",
                    Rule::Currency => ": expected a three-letter currency code such as UAH",
                    Rule::SiteLink => ": expected an absolute http:// or https:// address",
                    Rule::Finite => ": the number is too large",
                };
                format!("The {field} field ({value}) is set incorrectly{hint}")
            }
            Message::TooLong { field, max } => {
                format!("The {field} field is longer than {max} characters")
            }
            Message::UnknownField { field } => format!("Unknown field {field}"),
            Message::RepeatedField { field } => {
                format!("The {field} field is given more than once")
            }
            Message::NotAnObject { found } => {
                format!("A user must be a JSON object, not {}", found.article_en())
            }
            Message::BadText { field } => format!(
                "The {field} field is not valid Unicode text (it holds a lone surrogate escape)"
            ),
            Message::BadKey { within } => format!(
                "A key of {within} is not valid Unicode text (it holds a lone surrogate escape)"
            ),
            Message::Duplicate { email, first } => format!(
                "The email {email} is given more than once in this file; it was first given by user {first}"
            ),
            Message::Unhandled { detail } => format!("Unhandled error: {detail}"),
            Message::NotUtf8 { line, column } => {
                format!("The file is not valid UTF-8: invalid byte at line {line}, column {column}")
            }
            Message::BadJson {
                line,
                column,
                reason,
            } => format!("Invalid JSON at line {line}, column {column}: {reason}"),
            Message::BadShape {
                line,
                column,
                reason,
            } => format!(
                "The request is not a users/import request (line {line}, column {column}): {reason}"
            ),
            Message::TooLarge { size, limit } => format!(
                "The file is too large: {size} bytes, the limit is {limit} bytes (--max-file-size)"
            ),
            Message::Unreadable { reason } => format!("The file could not be read: {reason}"),
            Message::TokenMissing => "Authorization failed: the request has no token".to_owned(),
            Message::TokenRejected => "Authorization failed: the token is not accepted".to_owned(),
        }
    }
}

/// The language of response messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    #[default]
    En,
}
