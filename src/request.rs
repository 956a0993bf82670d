//! Reading a request file: UTF-8 and JSON syntax, the top-level shape, and the users
//! one at a time.
//!
//! A file is walked twice. [`envelope`] checks the whole document cheaply (every user
//! skipped as an opaque value), so that a file with a syntax error anywhere is rejected
//! before anything of it is applied. [`for_each_user`] then streams the users array,
//! borrowing every field's raw JSON text from the file, so no `Vec` of a million users
//! is ever built and `balance` keeps the exact digits it was written with.

use crate::messages::{JsonKind, Message};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// The request's token, as far as its type goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    Absent,
    Text(String),
    /// Present but not a string: never accepted.
    NotText,
}

/// What the first, checking pass learns about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub token: Token,
    pub users: u64,
}

/// One element of `users`: the fields of an object, each as its raw JSON text, in the
/// order written; or the kind of a non-object element.
#[derive(Debug)]
pub enum Element<'a> {
    Object(Vec<(Cow<'a, str>, &'a RawValue)>),
    /// An object with a key that is not valid Unicode (a lone surrogate escape).
    BadKey,
    Other(JsonKind),
}

/// The text of a request file: the UTF-8 byte-order mark dropped, UTF-8 checked.
pub fn text(bytes: &[u8]) -> Result<&str, Message> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        let (line, column) = position(&bytes[..e.valid_up_to()]);
        Message::NotUtf8 { line, column }
    })
}

/// Line and column (1-based, columns in bytes as serde_json counts them) just after
/// `prefix`.
fn position(prefix: &[u8]) -> (u64, u64) {
    let line = prefix.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    let column = match prefix.iter().rposition(|&b| b == b'\n') {
        Some(nl) => prefix.len() - nl,
        None => prefix.len() + 1,
    };
    (line, column as u64)
}

/// Checks the whole document and its top-level shape, without looking into users.
pub fn envelope(text: &str) -> Result<Envelope, Message> {
    let mut de = serde_json::Deserializer::from_str(text);
    let walk = Walk { on_user: None };
    let envelope = walk
        .deserialize(&mut de)
        .and_then(|env| de.end().map(|()| env))
        .map_err(|e| file_error(&e))?;
    Ok(envelope)
}

/// A callback asked the walk to stop; the caller keeps the reason.
#[derive(Debug)]
pub struct Halt;

/// Calls `on_user` for each element of `users` in order, with its index. Run it only
/// on a text that [`envelope`] accepted: then the only way it fails is a [`Halt`].
pub fn for_each_user<'a>(
    text: &'a str,
    mut on_user: impl FnMut(u64, Element<'a>) -> Result<(), Halt>,
) -> Result<(), Halt> {
    let mut de = serde_json::Deserializer::from_str(text);
    let walk = Walk {
        on_user: Some(&mut on_user),
    };
    // `envelope` already accepted this text, so the only error left is our own Halt.
    walk.deserialize(&mut de).map(|_| ()).map_err(|_| Halt)
}

/// The fields of an object's raw text; `None` when a key is not valid Unicode.
pub fn object_fields(raw: &RawValue) -> Option<Vec<(Cow<'_, str>, &RawValue)>> {
    serde_json::from_str::<Fields<'_>>(raw.get())
        .ok()
        .map(|f| f.0)
}

/// A raw value, told apart by its first character.
pub enum Value<'a> {
    Null,
    Bool(bool),
    Number(&'a str),
    String(Cow<'a, str>),
    Array,
    Object(&'a RawValue),
    /// A string whose escapes do not decode (a lone UTF-16 surrogate).
    BadString,
}

impl Value<'_> {
    pub fn kind(&self) -> JsonKind {
        match self {
            Value::Null => JsonKind::Null,
            Value::Bool(_) => JsonKind::Boolean,
            Value::Number(_) => JsonKind::Number,
            Value::String(_) | Value::BadString => JsonKind::String,
            Value::Array => JsonKind::Array,
            Value::Object(_) => JsonKind::Object,
        }
    }
}

/// Classifies a raw value that serde_json produced (so it is valid JSON, trimmed).
pub fn value(raw: &RawValue) -> Value<'_> {
    let text = raw.get().trim();
    match text.as_bytes().first() {
        Some(b'n') => Value::Null,
        Some(b't') => Value::Bool(true),
        Some(b'f') => Value::Bool(false),
        Some(b'[') => Value::Array,
        Some(b'{') => Value::Object(raw),
        Some(b'"') => {
            let inner = &text[1..text.len() - 1];
            if inner.contains('\\') {
                // serde_json's syntax check lets lone surrogates (`\ud800`) through;
                // decoding them fails.
                match serde_json::from_str::<String>(text) {
                    Ok(decoded) => Value::String(Cow::Owned(decoded)),
                    Err(_) => Value::BadString,
                }
            } else {
                Value::String(Cow::Borrowed(inner))
            }
        }
        _ => Value::Number(text),
    }
}

fn file_error(e: &serde_json::Error) -> Message {
    let (line, column) = (e.line() as u64, e.column() as u64);
    let full = e.to_string();
    let suffix = format!(" at line {line} column {column}");
    let reason = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    match e.classify() {
        serde_json::error::Category::Data => Message::BadShape {
            line,
            column,
            reason,
        },
        _ => Message::BadJson {
            line,
            column,
            reason,
        },
    }
}

type OnUser<'f, 'a> = &'f mut dyn FnMut(u64, Element<'a>) -> Result<(), Halt>;

/// The top-level object. With no callback it only counts users.
struct Walk<'f, 'a> {
    on_user: Option<OnUser<'f, 'a>>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_, 'de> {
    type Value = Envelope;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Envelope, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_, 'de> {
    type Value = Envelope;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with a \"users\" array")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Envelope, A::Error> {
        let mut token = Token::Absent;
        let mut token_seen = false;
        let mut users = None;
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match &*key.0 {
                "users" => {
                    if users.is_some() {
                        return Err(de::Error::custom("the users key is given more than once"));
                    }
                    users = Some(map.next_value_seed(Users {
                        on_user: self.on_user.take(),
                    })?);
                }
                "token" => {
                    if token_seen {
                        return Err(de::Error::custom("the token key is given more than once"));
                    }
                    token_seen = true;
                    token = match map.next_value::<TokenValue>()? {
                        TokenValue(Some(t)) => Token::Text(t),
                        TokenValue(None) => Token::NotText,
                    };
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let users = users.ok_or_else(|| de::Error::missing_field("users"))?;
        Ok(Envelope { token, users })
    }
}

struct Users<'f, 'a> {
    on_user: Option<OnUser<'f, 'a>>,
}

impl<'de> DeserializeSeed<'de> for Users<'_, 'de> {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Users<'_, 'de> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"users\" to be an array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        let mut n = 0u64;
        match self.on_user {
            None => {
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
            }
            Some(on_user) => {
                while let Some(element) = seq.next_element::<Element<'de>>()? {
                    on_user(n, element).map_err(|Halt| de::Error::custom("halted"))?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

/// A map key, borrowed from the file unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `token`: a string, or anything else (which is never a valid token).
struct TokenValue(Option<String>);

impl<'de> serde::Deserialize<'de> for TokenValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(d)?;
        Ok(TokenValue(match value(raw) {
            Value::String(s) => Some(s.into_owned()),
            _ => None,
        }))
    }
}

impl<'de> serde::Deserialize<'de> for Element<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Taken raw first: serde_json checks a raw value's syntax only, so no number
        // too large for f64 and no bad escape can fail the walk; each is judged later
        // as a problem of this one user.
        let raw = <&'de RawValue>::deserialize(d)?;
        Ok(match value(raw) {
            Value::Object(raw) => match object_fields(raw) {
                Some(fields) => Element::Object(fields),
                None => Element::BadKey,
            },
            other => Element::Other(other.kind()),
        })
    }
}

/// The fields of an object, each value kept raw.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    fields.push((key.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bom_is_dropped_and_bad_utf8_located() {
        assert_eq!(text(b"\xEF\xBB\xBF{}").unwrap(), "{}");
        assert_eq!(
            text(b"{\n  \"a\": \"\xff\"}").unwrap_err(),
            Message::NotUtf8 { line: 2, column: 9 }
        );
    }

    #[test]
    fn shapes() {
        let env = envelope(r#"{"token":"t","users":[{},1,[2]],"x":{}}"#).unwrap();
        assert_eq!(env.users, 3);
        assert_eq!(env.token, Token::Text("t".into()));
        assert_eq!(
            envelope(r#"{"users":[],"token":5}"#).unwrap().token,
            Token::NotText
        );
        for bad in [
            r#"[]"#,
            r#"{}"#,
            r#"{"users":{}}"#,
            r#"{"users":[],"users":[]}"#,
        ] {
            assert!(
                matches!(envelope(bad), Err(Message::BadShape { .. })),
                "{bad}"
            );
        }
        match envelope("{\"users\": [\n  {\"a\": 1,}\n]}") {
            Err(Message::BadJson {
                line: 2, column, ..
            }) => assert_eq!(column, 11),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            envelope(r#"{"users":[]} x"#),
            Err(Message::BadJson { .. })
        ));
        assert!(matches!(envelope(""), Err(Message::BadJson { .. })));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!(r#"{{"users":[{}]}}"#, "[".repeat(100_000));
        assert!(envelope(&deep).is_err());
        let deep_obj = format!(r#"{{"users":[{{"a":{}}}]}}"#, "[".repeat(100_000));
        assert!(envelope(&deep_obj).is_err());
    }

    #[test]
    fn odd_elements_never_fail_the_walk() {
        let text = r#"{"users":[1e400,-1e400,"\ud800",{"\ud800":1},{"a":1e400}]}"#;
        assert_eq!(envelope(text).unwrap().users, 5);
        let mut kinds = Vec::new();
        for_each_user(text, |_, e| {
            kinds.push(format!("{e:?}"));
            Ok(())
        })
        .unwrap();
        assert_eq!(kinds.len(), 5);
        assert!(kinds[3].contains("BadKey"), "{kinds:?}");
        assert!(kinds[4].contains("1e400"), "{kinds:?}");
    }

    #[test]
    fn streams_users_with_raw_fields() {
        let text = r#"{"users":[{"email":"a\u0040b.co","balance":-0.10},"x"]}"#;
        let mut seen = Vec::new();
        for_each_user(text, |i, e| {
            seen.push((i, format!("{e:?}")));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 2);
        assert!(seen[0].1.contains("-0.10"));
        assert!(seen[1].1.contains("String"));
    }
}
