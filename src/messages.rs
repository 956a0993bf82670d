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

    // Every Ukrainian and Russian message names a kind after "має бути" / "должно быть"
    // or after the contrasting "а не", and both take the instrumental case. A message
    // that puts a kind anywhere else needs its own case function beside these.
    fn instrumental_uk(self) -> &'static str {
        match self {
            JsonKind::String => "рядком",
            JsonKind::Number => "числом",
            JsonKind::Integer => "цілим числом",
            JsonKind::Boolean => "логічним значенням",
            JsonKind::Object => "об'єктом",
            JsonKind::Array => "масивом",
            JsonKind::Null => "null",
        }
    }

    fn instrumental_ru(self) -> &'static str {
        match self {
            JsonKind::String => "строкой",
            JsonKind::Number => "числом",
            JsonKind::Integer => "целым числом",
            JsonKind::Boolean => "логическим значением",
            JsonKind::Object => "объектом",
            JsonKind::Array => "массивом",
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
    // The same kinds under `--types lenient`, whose hints name the looser forms too.
    LenientInteger,
    LenientNumber,
    LenientBoolean,
    LenientDate,
    LenientPhone,
}

impl Rule {
    fn hint_en(self) -> &'static str {
        match self {
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
            Rule::LenientInteger => ": expected a whole number, or a string of its digits",
            Rule::LenientNumber => ": expected a number, or a string holding one",
            Rule::LenientBoolean => {
                ": expected true, false, 0, 1, \"0\", \"1\", \"true\" or \"false\""
            }
            Rule::LenientDate => {
                ": expected a real date written YYYY-MM-DD (a time may follow) or DD.MM.YYYY"
            }
            Rule::LenientPhone => ": expected + or 00 and 7 to 15 digits, with the country code",
        }
    }

    fn hint_uk(self) -> &'static str {
        match self {
            Rule::Email => "",
            Rule::Phone => ": очікується + і від 7 до 15 цифр разом із кодом країни",
            Rule::Percent => ": очікується відсоток від 0 до 100",
            Rule::Date => ": очікується існуюча дата у форматі YYYY-MM-DD",
            Rule::CardStatus => {
                ": очікується 1 (підтверджено), 2 (очікує підтвердження) або 3 (відхилено)"
            }
            Rule::AtLeastOne => ": очікується ціле число не менше 1",
            Rule::Currency => ": очікується трилітерний код валюти, наприклад UAH",
            Rule::SiteLink => ": очікується повна адреса, що починається з http:// або https://",
            Rule::Finite => ": число завелике",
            Rule::LenientInteger => ": очікується ціле число або рядок із його цифр",
            Rule::LenientNumber => ": очікується число або рядок, що його містить",
            Rule::LenientBoolean => {
                ": очікується true, false, 0, 1, \"0\", \"1\", \"true\" або \"false\""
            }
            Rule::LenientDate => {
                ": очікується існуюча дата у форматі YYYY-MM-DD (після неї може йти час) або DD.MM.YYYY"
            }
            Rule::LenientPhone => ": очікується + або 00 і від 7 до 15 цифр разом із кодом країни",
        }
    }

    fn hint_ru(self) -> &'static str {
        match self {
            Rule::Email => "",
            Rule::Phone => ": ожидается + и от 7 до 15 цифр вместе с кодом страны",
            Rule::Percent => ": ожидается процент от 0 до 100",
            Rule::Date => ": ожидается существующая дата в формате YYYY-MM-DD",
            Rule::CardStatus => {
                ": ожидается 1 (подтверждено), 2 (ожидает подтверждения) или 3 (отклонено)"
            }
            Rule::AtLeastOne => ": ожидается целое число не меньше 1",
            Rule::Currency => ": ожидается трехбуквенный код валюты, например UAH",
            Rule::SiteLink => ": ожидается полный адрес, начинающийся с http:// или https://",
            Rule::Finite => ": число слишком большое",
            Rule::LenientInteger => ": ожидается целое число или строка из его цифр",
            Rule::LenientNumber => ": ожидается число или строка, содержащая его",
            Rule::LenientBoolean => {
                ": ожидается true, false, 0, 1, \"0\", \"1\", \"true\" или \"false\""
            }
            Rule::LenientDate => {
                ": ожидается существующая дата в формате YYYY-MM-DD (после нее может идти время) или DD.MM.YYYY"
            }
            Rule::LenientPhone => ": ожидается + или 00 и от 7 до 15 цифр вместе с кодом страны",
        }
    }
}

/// A form of a value that only `--types lenient` accepts (SPEC §1, "Loose
/// producers"): named in the strict mode's message, so that the sender learns both
/// what was wrong and that a flag would take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Loose {
    /// `"3"`, `"-1250.75"`.
    QuotedNumber,
    /// `3.0`, `3e0` for an integer.
    WholeWithFraction,
    /// `0`, `1` for a boolean.
    NumberAsBoolean,
    /// `"0"`, `"1"`, `"true"`, `"false"` for a boolean.
    StringAsBoolean,
    /// `[]` for `discount_card`: PHP's `json_encode` of an empty array.
    EmptyArray,
    /// `31.12.2025`.
    DayFirstDate,
    /// `2025-12-31 00:00:00`, `2025-12-31T00:00:00Z`.
    DateWithTime,
    /// `00380631234567`.
    DoubleZero,
    /// A no-break space (or another of Unicode's space separators) between digits.
    UnicodeSpace,
}

impl Loose {
    // Said after a dash ("Поле X (…) — …") in Ukrainian and Russian: the nominative.
    fn en(self) -> &'static str {
        match self {
            Loose::QuotedNumber => "a number written as a string",
            Loose::WholeWithFraction => "a whole number written with a fraction or an exponent",
            Loose::NumberAsBoolean => "a boolean written as the number 0 or 1",
            Loose::StringAsBoolean => "a boolean written as a string",
            Loose::EmptyArray => "an empty array (PHP's empty object) in place of an object",
            Loose::DayFirstDate => "a date written DD.MM.YYYY",
            Loose::DateWithTime => "a date with a time after it",
            Loose::DoubleZero => "a phone number with 00 in place of the leading +",
            Loose::UnicodeSpace => {
                "a phone number with a no-break or other Unicode space between its digits"
            }
        }
    }

    fn uk(self) -> &'static str {
        match self {
            Loose::QuotedNumber => "число, записане рядком",
            Loose::WholeWithFraction => "ціле число, записане з дробовою частиною або експонентою",
            Loose::NumberAsBoolean => "логічне значення, записане числом 0 або 1",
            Loose::StringAsBoolean => "логічне значення, записане рядком",
            Loose::EmptyArray => "порожній масив замість об'єкта",
            Loose::DayFirstDate => "дата у форматі DD.MM.YYYY",
            Loose::DateWithTime => "дата з часом після неї",
            Loose::DoubleZero => "номер телефону з 00 замість + на початку",
            Loose::UnicodeSpace => {
                "номер телефону з нерозривним або іншим пробілом Unicode між цифрами"
            }
        }
    }

    fn ru(self) -> &'static str {
        match self {
            Loose::QuotedNumber => "число, записанное строкой",
            Loose::WholeWithFraction => "целое число, записанное с дробной частью или экспонентой",
            Loose::NumberAsBoolean => "логическое значение, записанное числом 0 или 1",
            Loose::StringAsBoolean => "логическое значение, записанное строкой",
            Loose::EmptyArray => "пустой массив вместо объекта",
            Loose::DayFirstDate => "дата в формате DD.MM.YYYY",
            Loose::DateWithTime => "дата со временем после нее",
            Loose::DoubleZero => "номер телефона с 00 вместо + в начале",
            Loose::UnicodeSpace => {
                "номер телефона с неразрывным или другим пробелом Unicode между цифрами"
            }
        }
    }
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
    /// Strict types refused a value that `--types lenient` would have accepted:
    /// `found` is its JSON text as written (shortened).
    LenientOnly {
        field: String,
        found: String,
        form: Loose,
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
    /// An object field (`within` names it) with a key that is not valid Unicode.
    BadKey {
        within: String,
    },
    /// A user object with a key that is not valid Unicode.
    BadUserKey,
    Duplicate {
        email: String,
        first: u64,
    },
    /// The problems of one user past the number a response lists, counted.
    MoreProblems {
        more: u64,
    },
    Unhandled {
        detail: String,
    },
    /// The stored record of this user cannot be decoded (code 3).
    CorruptRecord {
        key: String,
        reason: String,
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

/// Why a file could not be read as a request, in English, Ukrainian and Russian. The
/// English texts are serde_json's own (its `ErrorCode`s) and the request walker's.
const REASONS: [[&str; 3]; 24] = [
    [
        "EOF while parsing a list",
        "файл закінчився посеред масиву",
        "файл закончился посреди массива",
    ],
    [
        "EOF while parsing an object",
        "файл закінчився посеред об'єкта",
        "файл закончился посреди объекта",
    ],
    [
        "EOF while parsing a string",
        "файл закінчився посеред рядка",
        "файл закончился посреди строки",
    ],
    [
        "EOF while parsing a value",
        "файл закінчився там, де мало бути значення",
        "файл закончился там, где должно быть значение",
    ],
    ["expected `:`", "очікувалася `:`", "ожидалось `:`"],
    [
        "expected `,` or `]`",
        "очікувалася `,` або `]`",
        "ожидалось `,` или `]`",
    ],
    [
        "expected `,` or `}`",
        "очікувалася `,` або `}`",
        "ожидалось `,` или `}`",
    ],
    [
        "expected ident",
        "очікувалося true, false або null",
        "ожидалось true, false или null",
    ],
    [
        "expected value",
        "очікувалося значення",
        "ожидалось значение",
    ],
    [
        "expected `\"`",
        "очікувалися лапки `\"`",
        "ожидалась кавычка `\"`",
    ],
    [
        "invalid escape",
        "недопустима екранована послідовність",
        "недопустимая экранированная последовательность",
    ],
    ["invalid number", "недопустиме число", "недопустимое число"],
    [
        "number out of range",
        "число поза допустимим діапазоном",
        "число вне допустимого диапазона",
    ],
    [
        "invalid unicode code point",
        "недопустимий код символу Unicode",
        "недопустимый код символа Unicode",
    ],
    [
        "control character (\\u0000-\\u001F) found while parsing a string",
        "керівний символ (\\u0000-\\u001F) усередині рядка",
        "управляющий символ (\\u0000-\\u001F) внутри строки",
    ],
    [
        "key must be a string",
        "ключ має бути рядком",
        "ключ должен быть строкой",
    ],
    [
        "lone leading surrogate in hex escape",
        "одинокий старший сурогат у послідовності \\u",
        "одиночный старший суррогат в последовательности \\u",
    ],
    [
        "trailing comma",
        "зайва кома в кінці",
        "лишняя запятая в конце",
    ],
    [
        "trailing characters",
        "зайві символи після кінця документа",
        "лишние символы после конца документа",
    ],
    [
        "unexpected end of hex escape",
        "незавершена послідовність \\u",
        "незавершённая последовательность \\u",
    ],
    [
        "recursion limit exceeded",
        "забагато рівнів вкладення",
        "слишком много уровней вложенности",
    ],
    [
        "missing field `users`",
        "немає поля `users`",
        "нет поля `users`",
    ],
    [
        "the users key is given more than once",
        "ключ `users` вказано більше одного разу",
        "ключ `users` указан более одного раза",
    ],
    [
        "the token key is given more than once",
        "ключ `token` вказано більше одного разу",
        "ключ `token` указан более одного раза",
    ],
];

/// What the request walker expected, for "invalid type" reasons.
const EXPECTED: [[&str; 3]; 2] = [
    [
        "a JSON object with a \"users\" array",
        "JSON-об'єкт із масивом `users`",
        "JSON-объект с массивом `users`",
    ],
    [
        "\"users\" to be an array",
        "`users` має бути масивом",
        "`users` должен быть массивом",
    ],
];

/// What was found instead, for "invalid type" reasons: serde's `Unexpected` words,
/// whole or as the prefix of the value they show.
const FOUND: [[&str; 3]; 8] = [
    ["sequence", "масив", "массив"],
    ["map", "об'єкт", "объект"],
    ["null", "null", "null"],
    ["unit", "null", "null"],
    ["string ", "рядок ", "строка "],
    ["integer ", "ціле число ", "целое число "],
    ["floating point ", "дробове число ", "дробное число "],
    ["boolean ", "логічне значення ", "логическое значение "],
];

/// The parser's reason in `lang`, with a quoted value shortened. A reason not known
/// here (a newer serde_json's) stays in English rather than being lost.
fn parser_reason(lang: Lang, en: &str) -> String {
    let column = match lang {
        Lang::En => 0,
        Lang::Uk => 1,
        Lang::Ru => 2,
    };
    let known = |table: &[[&'static str; 3]], text: &str| {
        table
            .iter()
            .find(|row| row[0] == text)
            .map(|row| row[column])
    };
    if let Some(text) = known(&REASONS, en) {
        return text.to_owned();
    }
    let Some((found, expected)) = en
        .strip_prefix("invalid type: ")
        .and_then(|rest| rest.rsplit_once(", expected "))
    else {
        return quote(en);
    };
    let found = FOUND
        .iter()
        .find_map(|row| {
            let value = found.strip_prefix(row[0])?;
            (row[0].ends_with(' ') || value.is_empty())
                .then(|| format!("{}{}", row[column], quote(value)))
        })
        .unwrap_or_else(|| quote(found));
    let expected = known(&EXPECTED, expected).map_or_else(|| expected.to_owned(), str::to_owned);
    match lang {
        Lang::En => format!("invalid type: {found}, expected {expected}"),
        Lang::Uk => format!("недопустимий тип: {found}; очікувалося: {expected}"),
        Lang::Ru => format!("недопустимый тип: {found}; ожидалось: {expected}"),
    }
}

impl Message {
    /// The response code this message is reported under.
    pub fn code(&self) -> Code {
        match self {
            Message::Added { .. } | Message::Updated { .. } | Message::Unchanged { .. } => Code::Ok,
            Message::Missing { .. } | Message::NullMandatory { .. } => Code::Missing,
            Message::Unhandled { .. } | Message::CorruptRecord { .. } => Code::Unhandled,
            _ => Code::Invalid,
        }
    }

    /// The text in `lang`.
    pub fn text(&self, lang: Lang) -> String {
        match lang {
            Lang::En => self.text_en(),
            Lang::Uk => self.text_uk(),
            Lang::Ru => self.text_ru(),
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
                format!(
                    "The {field} field ({value}) is set incorrectly{}",
                    rule.hint_en()
                )
            }
            Message::TooLong { field, max } => {
                format!("The {field} field is longer than {max} characters")
            }
            Message::LenientOnly { field, found, form } => format!(
                "The {field} field ({found}) is {}: strict types refuse it, --types lenient accepts it",
                form.en()
            ),
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
            Message::BadUserKey => {
                "A key of the user is not valid Unicode text (it holds a lone surrogate escape)"
                    .to_owned()
            }
            Message::Duplicate { email, first } => format!(
                "The email {email} is given more than once in this file; it was first given by user {first}"
            ),
            Message::MoreProblems { more } => {
                format!("Further problems with this user, not listed: {more}")
            }
            Message::Unhandled { detail } => format!("Unhandled error: {detail}"),
            Message::CorruptRecord { key, reason } => {
                format!("Unhandled error: the stored record {key} cannot be read: {reason}")
            }
            Message::NotUtf8 { line, column } => {
                format!("The file is not valid UTF-8: invalid byte at line {line}, column {column}")
            }
            Message::BadJson {
                line,
                column,
                reason,
            } => format!(
                "Invalid JSON at line {line}, column {column}: {}",
                parser_reason(Lang::En, reason)
            ),
            Message::BadShape {
                line,
                column,
                reason,
            } => format!(
                "The request is not a users/import request (line {line}, column {column}): {}",
                parser_reason(Lang::En, reason)
            ),
            Message::TooLarge { size, limit } => format!(
                "The file is too large: {size} bytes, the limit is {limit} bytes (--max-file-size)"
            ),
            Message::Unreadable { reason } => format!("The file could not be read: {reason}"),
            Message::TokenMissing => "Authorization failed: the request has no token".to_owned(),
            Message::TokenRejected => "Authorization failed: the token is not accepted".to_owned(),
        }
    }

    fn text_uk(&self) -> String {
        match self {
            Message::Added { email } => format!("Користувача {email} успішно додано"),
            Message::Updated { email } => format!("Користувача {email} успішно оновлено"),
            Message::Unchanged { email } => {
                format!("Дані користувача {email} уже актуальні, нічого не змінено")
            }
            Message::Missing { field } => format!("Відсутнє обов'язкове поле {field}"),
            Message::NullMandatory { field } => {
                format!("Обов'язкове поле {field} не може бути null")
            }
            Message::WrongType {
                field,
                expected,
                found,
            } => format!(
                "Поле {field} має бути {}, а не {}",
                expected.instrumental_uk(),
                found.instrumental_uk()
            ),
            Message::Invalid { field, value, rule } => {
                format!("Поле {field} ({value}) заповнено неправильно{}", rule.hint_uk())
            }
            Message::TooLong { field, max } => format!(
                "Поле {field} довше за {max} {}",
                plural(*max as u64, "символ", "символи", "символів")
            ),
            Message::LenientOnly { field, found, form } => format!(
                "Поле {field} ({found}) — {}: строгі типи його не приймають, --types lenient приймає",
                form.uk()
            ),
            Message::UnknownField { field } => format!("Невідоме поле {field}"),
            Message::RepeatedField { field } => {
                format!("Поле {field} вказано більше одного разу")
            }
            Message::NotAnObject { found } => format!(
                "Користувач має бути об'єктом JSON, а не {}",
                found.instrumental_uk()
            ),
            Message::BadText { field } => format!(
                "Поле {field} не є коректним текстом Unicode (містить екранований одиночний сурогат)"
            ),
            Message::BadKey { within } => format!(
                "Один із ключів у полі {within} не є коректним текстом Unicode (містить екранований одиночний сурогат)"
            ),
            Message::BadUserKey => "Один із ключів користувача не є коректним текстом Unicode (містить екранований одиночний сурогат)".to_owned(),
            Message::Duplicate { email, first } => format!(
                "Email {email} вказано в цьому файлі більше одного разу; уперше — у користувача {first}"
            ),
            Message::MoreProblems { more } => {
                format!("Інші помилки цього користувача, не перелічені тут: {more}")
            }
            Message::Unhandled { detail } => format!("Необроблена помилка: {detail}"),
            Message::CorruptRecord { key, reason } => format!(
                "Необроблена помилка: не вдалося прочитати збережений запис {key}: {reason}"
            ),
            Message::NotUtf8 { line, column } => format!(
                "Файл не є коректним текстом у кодуванні UTF-8: недопустимий байт у рядку {line}, стовпці {column}"
            ),
            Message::BadJson {
                line,
                column,
                reason,
            } => format!(
                "Некоректний JSON у рядку {line}, стовпці {column}: {}",
                parser_reason(Lang::Uk, reason)
            ),
            Message::BadShape {
                line,
                column,
                reason,
            } => format!(
                "Це не запит users/import (рядок {line}, стовпець {column}): {}",
                parser_reason(Lang::Uk, reason)
            ),
            Message::TooLarge { size, limit } => format!(
                "Файл завеликий: {size} {}, обмеження — {limit} {} (--max-file-size)",
                plural(*size, "байт", "байти", "байтів"),
                plural(*limit, "байт", "байти", "байтів")
            ),
            Message::Unreadable { reason } => format!("Не вдалося прочитати файл: {reason}"),
            Message::TokenMissing => "Authorization failed: у запиті немає токена".to_owned(),
            Message::TokenRejected => "Authorization failed: токен не прийнято".to_owned(),
        }
    }

    fn text_ru(&self) -> String {
        match self {
            Message::Added { email } => format!("Пользователь {email} успешно добавлен"),
            Message::Updated { email } => format!("Пользователь {email} успешно обновлен"),
            Message::Unchanged { email } => {
                format!("Данные пользователя {email} уже актуальны, ничего не изменено")
            }
            Message::Missing { field } => format!("Отсутствует обязательное поле {field}"),
            Message::NullMandatory { field } => {
                format!("Обязательное поле {field} не может быть null")
            }
            Message::WrongType {
                field,
                expected,
                found,
            } => format!(
                "Поле {field} должно быть {}, а не {}",
                expected.instrumental_ru(),
                found.instrumental_ru()
            ),
            Message::Invalid { field, value, rule } => {
                format!("Поле {field} ({value}) заполнено неверно{}", rule.hint_ru())
            }
            // "длиннее" takes the genitive: 1 символа, 2 символов, 5 символов.
            Message::TooLong { field, max } => format!(
                "Поле {field} длиннее {max} {}",
                plural(*max as u64, "символа", "символов", "символов")
            ),
            Message::LenientOnly { field, found, form } => format!(
                "Поле {field} ({found}) — {}: строгие типы его не принимают, --types lenient принимает",
                form.ru()
            ),
            Message::UnknownField { field } => format!("Неизвестное поле {field}"),
            Message::RepeatedField { field } => {
                format!("Поле {field} указано более одного раза")
            }
            Message::NotAnObject { found } => format!(
                "Пользователь должен быть объектом JSON, а не {}",
                found.instrumental_ru()
            ),
            Message::BadText { field } => format!(
                "Поле {field} не является корректным текстом Unicode (содержит экранированный одиночный суррогат)"
            ),
            Message::BadKey { within } => format!(
                "Один из ключей в поле {within} не является корректным текстом Unicode (содержит экранированный одиночный суррогат)"
            ),
            Message::BadUserKey => "Один из ключей пользователя не является корректным текстом Unicode (содержит экранированный одиночный суррогат)".to_owned(),
            Message::Duplicate { email, first } => format!(
                "Email {email} указан в этом файле более одного раза; впервые — у пользователя {first}"
            ),
            Message::MoreProblems { more } => {
                format!("Другие ошибки этого пользователя, не перечисленные здесь: {more}")
            }
            Message::Unhandled { detail } => format!("Необработанная ошибка: {detail}"),
            Message::CorruptRecord { key, reason } => format!(
                "Необработанная ошибка: не удалось прочитать сохраненную запись {key}: {reason}"
            ),
            Message::NotUtf8 { line, column } => format!(
                "Файл не является корректным текстом в кодировке UTF-8: недопустимый байт в строке {line}, столбце {column}"
            ),
            Message::BadJson {
                line,
                column,
                reason,
            } => format!(
                "Некорректный JSON в строке {line}, столбце {column}: {}",
                parser_reason(Lang::Ru, reason)
            ),
            Message::BadShape {
                line,
                column,
                reason,
            } => format!(
                "Это не запрос users/import (строка {line}, столбец {column}): {}",
                parser_reason(Lang::Ru, reason)
            ),
            Message::TooLarge { size, limit } => format!(
                "Файл слишком большой: {size} {}, ограничение — {limit} {} (--max-file-size)",
                plural(*size, "байт", "байта", "байт"),
                plural(*limit, "байт", "байта", "байт")
            ),
            Message::Unreadable { reason } => format!("Не удалось прочитать файл: {reason}"),
            Message::TokenMissing => "Authorization failed: в запросе нет токена".to_owned(),
            Message::TokenRejected => "Authorization failed: токен не принят".to_owned(),
        }
    }
}

/// The form of a noun after the number `n` in Ukrainian and Russian, which share the
/// rule: `one` after 1, 21, 101…; `few` after 2–4, 22–24…; `many` after the rest,
/// including 11–14.
fn plural<'a>(n: u64, one: &'a str, few: &'a str, many: &'a str) -> &'a str {
    match (n % 10, n % 100) {
        (_, 11..=14) => many,
        (1, _) => one,
        (2..=4, _) => few,
        _ => many,
    }
}

/// The language of response messages.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// English
    #[default]
    En,
    /// Ukrainian (українська)
    Uk,
    /// Russian (русский)
    Ru,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    const LANGS: [Lang; 3] = [Lang::En, Lang::Uk, Lang::Ru];

    const KINDS: [JsonKind; 7] = [
        JsonKind::String,
        JsonKind::Number,
        JsonKind::Integer,
        JsonKind::Boolean,
        JsonKind::Object,
        JsonKind::Array,
        JsonKind::Null,
    ];

    const RULES: [Rule; 14] = [
        Rule::Email,
        Rule::Phone,
        Rule::Percent,
        Rule::Date,
        Rule::CardStatus,
        Rule::AtLeastOne,
        Rule::Currency,
        Rule::SiteLink,
        Rule::Finite,
        Rule::LenientInteger,
        Rule::LenientNumber,
        Rule::LenientBoolean,
        Rule::LenientDate,
        Rule::LenientPhone,
    ];

    const FORMS: [Loose; 9] = [
        Loose::QuotedNumber,
        Loose::WholeWithFraction,
        Loose::NumberAsBoolean,
        Loose::StringAsBoolean,
        Loose::EmptyArray,
        Loose::DayFirstDate,
        Loose::DateWithTime,
        Loose::DoubleZero,
        Loose::UnicodeSpace,
    ];

    /// Which variant a message is. No wildcard: a new variant does not compile until it
    /// is given a number here, and then `every_variant_has_a_sample` fails until it is
    /// given a sample.
    fn variant(m: &Message) -> usize {
        match m {
            Message::Added { .. } => 0,
            Message::Updated { .. } => 1,
            Message::Unchanged { .. } => 2,
            Message::Missing { .. } => 3,
            Message::NullMandatory { .. } => 4,
            Message::WrongType { .. } => 5,
            Message::Invalid { .. } => 6,
            Message::TooLong { .. } => 7,
            Message::UnknownField { .. } => 8,
            Message::RepeatedField { .. } => 9,
            Message::NotAnObject { .. } => 10,
            Message::BadText { .. } => 11,
            Message::BadKey { .. } => 12,
            Message::BadUserKey => 13,
            Message::Duplicate { .. } => 14,
            Message::Unhandled { .. } => 15,
            Message::CorruptRecord { .. } => 16,
            Message::NotUtf8 { .. } => 17,
            Message::BadJson { .. } => 18,
            Message::BadShape { .. } => 19,
            Message::TooLarge { .. } => 20,
            Message::Unreadable { .. } => 21,
            Message::TokenMissing => 22,
            Message::TokenRejected => 23,
            Message::MoreProblems { .. } => 24,
            Message::LenientOnly { .. } => 25,
        }
    }
    const VARIANTS: usize = 26;

    /// One message of each variant (every rule and every pair of kinds), each with the
    /// input-derived pieces its text must carry unchanged in every language.
    fn samples() -> Vec<(Message, Vec<&'static str>)> {
        let s = |v: &str| v.to_owned();
        let mut all = vec![
            (
                Message::Added {
                    email: s("ivan@mail.net"),
                },
                vec!["ivan@mail.net"],
            ),
            (
                Message::Updated {
                    email: s("ivan@mail.net"),
                },
                vec!["ivan@mail.net"],
            ),
            (
                Message::Unchanged {
                    email: s("ivan@mail.net"),
                },
                vec!["ivan@mail.net"],
            ),
            (Message::Missing { field: s("title") }, vec!["title"]),
            (Message::NullMandatory { field: s("email") }, vec!["email"]),
            (
                Message::TooLong {
                    field: s("company"),
                    max: 255,
                },
                vec!["company", "255"],
            ),
            (
                Message::UnknownField {
                    field: s("nickname"),
                },
                vec!["nickname"],
            ),
            (Message::RepeatedField { field: s("phone") }, vec!["phone"]),
            (Message::BadText { field: s("note") }, vec!["note"]),
            (
                Message::BadKey {
                    within: s("discount_card"),
                },
                vec!["discount_card"],
            ),
            (Message::BadUserKey, vec![]),
            (
                Message::Duplicate {
                    email: s("ivan@mail.net"),
                    first: 17,
                },
                vec!["ivan@mail.net", "17"],
            ),
            (Message::MoreProblems { more: 99_900 }, vec!["99900"]),
            (
                Message::Unhandled {
                    detail: s("disk on fire"),
                },
                vec!["disk on fire"],
            ),
            (
                Message::CorruptRecord {
                    key: s("ivan@mail.net"),
                    reason: s("EOF while parsing"),
                },
                vec!["ivan@mail.net", "EOF while parsing"],
            ),
            (
                Message::NotUtf8 {
                    line: 7,
                    column: 42,
                },
                vec!["7", "42"],
            ),
            (
                Message::BadJson {
                    line: 7,
                    column: 42,
                    reason: s("expected value"),
                },
                vec!["7", "42"],
            ),
            (
                Message::BadShape {
                    line: 7,
                    column: 42,
                    reason: s("missing field `users`"),
                },
                vec!["7", "42"],
            ),
            (
                Message::TooLarge {
                    size: 2049,
                    limit: 2048,
                },
                vec!["2049", "2048", "--max-file-size"],
            ),
            (
                Message::Unreadable {
                    reason: s("Permission denied (os error 13)"),
                },
                vec!["Permission denied (os error 13)"],
            ),
            (Message::TokenMissing, vec!["Authorization failed"]),
            (Message::TokenRejected, vec!["Authorization failed"]),
        ];
        for [en, _, _] in REASONS {
            all.push((
                Message::BadJson {
                    line: 1,
                    column: 2,
                    reason: s(en),
                },
                vec![],
            ));
        }
        for [expected, _, _] in EXPECTED {
            for (found, value) in [
                ("sequence", ""),
                ("map", ""),
                ("null", ""),
                ("string \"x y\"", "\"x y\""),
                ("integer `5`", "`5`"),
                ("floating point `1.5`", "`1.5`"),
                ("boolean `true`", "`true`"),
            ] {
                all.push((
                    Message::BadShape {
                        line: 1,
                        column: 2,
                        reason: format!("invalid type: {found}, expected {expected}"),
                    },
                    [value].into_iter().filter(|v| !v.is_empty()).collect(),
                ));
            }
        }
        for expected in KINDS {
            for found in KINDS {
                all.push((
                    Message::WrongType {
                        field: s("discount_card.discount"),
                        expected,
                        found,
                    },
                    vec!["discount_card.discount"],
                ));
            }
            all.push((Message::NotAnObject { found: expected }, vec![]));
        }
        for form in FORMS {
            all.push((
                Message::LenientOnly {
                    field: s("customer_group_id"),
                    found: s("\"3\""),
                    form,
                },
                vec!["customer_group_id", "\"3\"", "--types lenient"],
            ));
        }
        for rule in RULES {
            all.push((
                Message::Invalid {
                    field: s("phone"),
                    value: s("+38 (063) 12"),
                    rule,
                },
                vec!["phone", "+38 (063) 12"],
            ));
        }
        all
    }

    #[test]
    fn every_variant_has_a_sample() {
        let mut seen = [false; VARIANTS];
        for (m, _) in samples() {
            seen[variant(&m)] = true;
        }
        let missing: Vec<usize> = (0..VARIANTS).filter(|&i| !seen[i]).collect();
        assert!(missing.is_empty(), "variants without a sample: {missing:?}");
    }

    #[test]
    fn every_message_renders_in_every_language_and_uk_ru_differ_from_en() {
        for (m, _) in samples() {
            let [en, uk, ru] = LANGS.map(|l| m.text(l));
            for text in [&en, &uk, &ru] {
                assert!(!text.trim().is_empty(), "{m:?}");
                assert_eq!(text.trim(), text, "{m:?}: stray whitespace");
            }
            assert_ne!(uk, en, "{m:?}");
            assert_ne!(ru, en, "{m:?}");
            assert_ne!(uk, ru, "{m:?}");
        }
    }

    #[test]
    fn input_values_stay_verbatim_in_every_language() {
        for (m, literals) in samples() {
            for lang in LANGS {
                let text = m.text(lang);
                for literal in &literals {
                    assert!(text.contains(literal), "{lang:?} {m:?}: {text}");
                }
            }
        }
    }

    /// What is left of a uk/ru text once the input values and the words that stay
    /// English on purpose are taken out must be Cyrillic: an English word left there
    /// is a missed translation.
    #[test]
    fn uk_and_ru_leave_no_english_words() {
        const KEPT: [&str; 20] = [
            "\\u0000-\\u001F",
            "--types lenient",
            "DD.MM.YYYY",
            "\\u",
            "Authorization failed",
            "--max-file-size",
            "users/import",
            "YYYY-MM-DD",
            "https://",
            "http://",
            "Unicode",
            "UTF-8",
            "Email",
            "JSON",
            "null",
            "UAH",
            // Last: parts of the longer ones above.
            "users",
            "token",
            "true",
            "false",
        ];
        for (m, literals) in samples() {
            for lang in [Lang::Uk, Lang::Ru] {
                let mut rest = m.text(lang);
                for word in literals.iter().chain(KEPT.iter()) {
                    rest = rest.replace(word, " ");
                }
                assert!(
                    !rest.chars().any(|c| c.is_ascii_alphabetic()),
                    "{lang:?} {m:?}: {rest}"
                );
            }
        }
    }

    #[test]
    fn every_reason_the_parser_gives_has_a_translation() {
        // Real parser errors, so that a serde_json that rewords one is caught here
        // rather than by a Ukrainian admin reading English.
        let bad = [
            "[]",
            "\"x\"",
            "5",
            "1.5",
            "true",
            "null",
            "{}",
            r#"{"users":{}}"#,
            r#"{"users":"a"}"#,
            r#"{"users":[],"users":[]}"#,
            r#"{"token":"a","token":"b","users":[]}"#,
            r#"{"users":["#,
            r#"{"users":[{"a":1"#,
            r#"{"users":["a"#,
            r#"{"users":"#,
            r#"{"users" []}"#,
            r#"{"users":[1 2]}"#,
            r#"{"users":[{"a":1 "b":2}]}"#,
            r#"{"users":[tru]}"#,
            r#"{"users":[#]}"#,
            r#"{"users":["\x"]}"#,
            r#"{"users":[01]}"#,
            "{\"users\":[\"\u{1}\"]}",
            r#"{1:2}"#,
            r#"{"users":[1,]}"#,
            r#"{"users":[]} x"#,
            r#"{"users":["\u12"]}"#,
        ];
        let deep = format!(r#"{{"users":{}"#, "[".repeat(200));
        for text in bad.iter().copied().chain([deep.as_str()]) {
            let Err(crate::request::Unread::Bad(m)) = crate::request::envelope_of(text) else {
                panic!("{text} was accepted");
            };
            let en = m.text(Lang::En);
            let reason = en.rsplit_once(": ").map_or(en.as_str(), |(_, r)| r);
            for lang in [Lang::Uk, Lang::Ru] {
                assert!(
                    !m.text(lang).contains(reason),
                    "{text}: {lang:?} keeps {reason:?}"
                );
            }
        }
    }

    #[test]
    fn an_unknown_reason_stays_english_and_a_long_value_is_shortened() {
        assert_eq!(parser_reason(Lang::Uk, "something new"), "something new");
        let long = format!(
            "invalid type: string \"{}\", expected \"users\" to be an array",
            "a".repeat(5000)
        );
        let uk = parser_reason(Lang::Uk, &long);
        assert!(uk.len() < 400, "{uk}");
        assert!(uk.starts_with("недопустимий тип: рядок \"aaa"), "{uk}");
        assert!(parser_reason(Lang::En, &long).len() < 400);
    }

    #[test]
    fn ukrainian_and_russian_letters_do_not_mix() {
        for (m, _) in samples() {
            let uk = m.text(Lang::Uk);
            let ru = m.text(Lang::Ru);
            assert!(!uk.contains(['ы', 'э', 'ъ', 'ё', 'Ы', 'Э']), "{uk}");
            assert!(!ru.contains(['і', 'ї', 'є', 'ґ', 'І', 'Ї', 'Є']), "{ru}");
        }
    }

    #[test]
    fn authorization_messages_begin_in_english_in_every_language() {
        for m in [Message::TokenMissing, Message::TokenRejected] {
            for lang in LANGS {
                let text = m.text(lang);
                assert!(text.starts_with("Authorization failed: "), "{text}");
            }
        }
        assert_eq!(
            Message::TokenMissing.text(Lang::Uk),
            "Authorization failed: у запиті немає токена"
        );
        assert_eq!(
            Message::TokenRejected.text(Lang::Ru),
            "Authorization failed: токен не принят"
        );
    }

    #[test]
    fn kinds_after_must_be_and_not_are_instrumental() {
        let m = Message::WrongType {
            field: "email".into(),
            expected: JsonKind::String,
            found: JsonKind::Number,
        };
        assert_eq!(
            m.text(Lang::En),
            "The email field must be a string, not a number"
        );
        assert_eq!(m.text(Lang::Uk), "Поле email має бути рядком, а не числом");
        assert_eq!(
            m.text(Lang::Ru),
            "Поле email должно быть строкой, а не числом"
        );
        let m = Message::NotAnObject {
            found: JsonKind::Array,
        };
        assert_eq!(
            m.text(Lang::Uk),
            "Користувач має бути об'єктом JSON, а не масивом"
        );
        assert_eq!(
            m.text(Lang::Ru),
            "Пользователь должен быть объектом JSON, а не массивом"
        );
    }

    #[test]
    fn counted_nouns_agree_with_the_number() {
        let cases = [
            (1, "символ"),
            (2, "символи"),
            (4, "символи"),
            (5, "символів"),
            (11, "символів"),
            (12, "символів"),
            (21, "символ"),
            (22, "символи"),
            (111, "символів"),
            (255, "символів"),
            (1000, "символів"),
        ];
        for (n, word) in cases {
            assert_eq!(plural(n, "символ", "символи", "символів"), word, "{n}");
        }
        let too_long = |max| Message::TooLong {
            field: "note".into(),
            max,
        };
        assert_eq!(
            too_long(2000).text(Lang::Uk),
            "Поле note довше за 2000 символів"
        );
        assert_eq!(
            too_long(2000).text(Lang::Ru),
            "Поле note длиннее 2000 символов"
        );
        assert_eq!(too_long(21).text(Lang::Ru), "Поле note длиннее 21 символа");
        assert_eq!(too_long(3).text(Lang::Uk), "Поле note довше за 3 символи");
        let large = Message::TooLarge { size: 22, limit: 1 };
        assert_eq!(
            large.text(Lang::Uk),
            "Файл завеликий: 22 байти, обмеження — 1 байт (--max-file-size)"
        );
        assert_eq!(
            large.text(Lang::Ru),
            "Файл слишком большой: 22 байта, ограничение — 1 байт (--max-file-size)"
        );
    }

    /// The same log written in each language: after the texts are taken out, the
    /// documents are identical, codes included.
    #[test]
    fn codes_and_structure_do_not_depend_on_the_language() {
        let log: Vec<Vec<Message>> = samples().into_iter().map(|(m, _)| vec![m]).collect();
        let render = |lang: Lang, status: Status, message: Option<&Message>| {
            let mut out = Vec::new();
            let chunk = Ok(log.clone());
            crate::response::write_json(&mut out, status, message, std::iter::once(chunk), lang)
                .expect("the response is written");
            let mut v: serde_json::Value =
                serde_json::from_slice(&out).expect("the response is JSON");
            let mut texts = Vec::new();
            strip_messages(&mut v, &mut texts);
            (v, texts)
        };
        for (status, message) in [
            (Status::Warning, None),
            (Status::Error, Some(&Message::TokenRejected)),
        ] {
            let (en, en_texts) = render(Lang::En, status, message);
            for lang in [Lang::Uk, Lang::Ru] {
                let (other, texts) = render(lang, status, message);
                assert_eq!(other, en, "{lang:?}");
                assert_eq!(texts.len(), en_texts.len());
                assert_ne!(texts, en_texts, "{lang:?}");
            }
        }
        let codes: Vec<Code> = log.iter().map(|entry| entry[0].code()).collect();
        assert!(codes.contains(&Code::Ok) && codes.contains(&Code::Missing));
        assert!(codes.contains(&Code::Invalid) && codes.contains(&Code::Unhandled));
    }

    fn strip_messages(v: &mut serde_json::Value, texts: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    if key == "message" {
                        texts.push(value.as_str().unwrap_or_default().to_owned());
                        *value = serde_json::Value::Null;
                    } else {
                        strip_messages(value, texts);
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    strip_messages(item, texts);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn stored_messages_of_earlier_versions_still_read() {
        // Records written before BadUserKey and CorruptRecord existed hold these.
        let old: Message =
            serde_json::from_str(r#"{"BadKey":{"within":"the user"}}"#).expect("old BadKey");
        assert_eq!(
            old.text(Lang::En),
            Message::BadUserKey.text(Lang::En),
            "English output is unchanged by the new variant"
        );
        let m: Message = serde_json::from_str(r#""BadUserKey""#).expect("unit variant");
        assert_eq!(m, Message::BadUserKey);
    }
}
