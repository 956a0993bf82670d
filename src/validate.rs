//! The rules of SPEC §1: one request element in, either a typed [`UserPatch`] or every
//! problem found with it. Duplicates within a file are judged here too, so the store
//! only ever sees users it can apply.

mod lenient;

use crate::messages::{JsonKind, Loose, Message, Rule, quote};
use crate::model::{
    CardPatch, CardStatus, Changes, Currency, Email, Number, Patch, Phone, SiteLink, UserPatch,
};
use crate::request::{self, Element, Value};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// How a field's JSON type is read (SPEC §1, "Loose producers"). Either way every
/// rule of the field applies to the value read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Types {
    /// Each field of the JSON type SPEC §1's table gives it: "3" is not a number.
    #[default]
    Strict,
    /// Also the forms PHP scripts and ERP exports write: numbers as strings, booleans
    /// as 0/1, [] for no discount card, DD.MM.YYYY dates and dates with a time, 00
    /// for a phone's +.
    Lenient,
}

/// The verdict on one user.
// A verdict is moved once into the store step, never kept in bulk, so boxing the
// large variant would only add an allocation per user.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Verdict {
    Valid(UserPatch),
    /// Every problem found, in the order of the fields, up to [`PROBLEMS_LISTED`] and a
    /// count of the rest; never empty.
    Rejected(Vec<Message>),
}

/// Judges the users of one file in order, remembering the emails already given.
///
/// Each email is remembered by its 128-bit xxh3 hash, not its text: 24 bytes a user
/// instead of about 80, which is most of what a million-user file keeps in memory. The
/// hash is kept as two `u64` ([`EmailKey`]): as a `u128` its 16-byte alignment padded
/// every entry to 32 bytes, 16 MiB more for a million users (issue 13's RSS target).
/// Two different emails sharing a hash (odds about 2^-128 per pair) would be taken
/// for a duplicate.
#[derive(Default)]
pub struct Validator {
    first_index: HashMap<EmailKey, u64, BuildHasherDefault<Prehashed>>,
    types: Types,
}

/// An email's xxh3-128, in two halves (see [`Validator`]).
#[derive(PartialEq, Eq)]
struct EmailKey(u64, u64);

impl std::hash::Hash for EmailKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already uniform: one half is the map's hash.
        state.write_u64(self.0);
    }
}

/// The map's keys are already uniform hashes: their low bits serve as is, instead
/// of hashing them again with SipHash.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `EmailKey`s reach this hasher; fold anything else in, all the same.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl Validator {
    pub fn new() -> Validator {
        Validator::default()
    }

    /// A validator for a file known to hold `users` elements (the first pass counted
    /// them): the map is sized once instead of growing by doubling, which rehashed a
    /// million-user file's map several times and held two tables at its peak. Only up
    /// to a bound: a file of millions of bare `1`s has elements but no emails.
    pub fn for_users(users: u64, types: Types) -> Validator {
        const PRESIZE_LIMIT: u64 = 1 << 22;
        let capacity = usize::try_from(users.min(PRESIZE_LIMIT)).unwrap_or(0);
        Validator {
            first_index: HashMap::with_capacity_and_hasher(capacity, Default::default()),
            types,
        }
    }

    /// The verdict on `users[index]`. Call it for every index in order, including the
    /// users a resumed file skips, so that duplicates are still recognised.
    pub fn user(&mut self, index: u64, element: Element<'_>) -> Verdict {
        let mut problems = Vec::new();
        let fields = match element {
            Element::Object(fields) => fields,
            Element::Other(found) => {
                return Verdict::Rejected(vec![Message::NotAnObject { found }]);
            }
            Element::BadKey => return Verdict::Rejected(vec![Message::BadUserKey]),
        };
        let patch = user_fields(&fields, self.types, &mut problems);
        if let Some(email) = &patch.email {
            // The first occurrence wins even when it was itself rejected: which of the
            // later ones should apply would otherwise depend on errors elsewhere.
            let hash = xxhash_rust::xxh3::xxh3_128(email.as_str().as_bytes());
            let key = EmailKey(hash as u64, (hash >> 64) as u64);
            match self.first_index.get(&key) {
                Some(&first) => problems.push(Message::Duplicate {
                    email: email.to_string(),
                    first,
                }),
                None => {
                    self.first_index.insert(key, index);
                }
            }
        }
        match patch.finish() {
            Some(patch) if problems.is_empty() => Verdict::Valid(patch),
            _ => Verdict::Rejected(problems),
        }
    }
}

/// A user under construction; `title` and `email` stay `None` until given validly.
#[derive(Default)]
struct Draft {
    title: Option<String>,
    email: Option<Email>,
    changes: Changes,
}

impl Draft {
    fn finish(self) -> Option<UserPatch> {
        Some(UserPatch {
            title: self.title?,
            email: self.email?,
            changes: self.changes,
        })
    }
}

/// The length limits of SPEC §1, in characters after trimming. `schema` publishes
/// these same numbers, so the schema cannot drift from what is checked here.
pub(crate) const FIELDS_MAX: [(&str, usize); 7] = [
    ("country", 255),
    ("city", 255),
    ("address", 1000),
    ("company", 255),
    ("role", 255),
    ("note", 2000),
    ("title", 255),
];

fn max_len(field: &str) -> usize {
    FIELDS_MAX
        .iter()
        .find(|(name, _)| *name == field)
        .map_or(usize::MAX, |(_, max)| *max)
}

fn user_fields(
    fields: &[(std::borrow::Cow<'_, str>, &RawValue)],
    types: Types,
    problems: &mut Vec<Message>,
) -> Draft {
    let mut draft = Draft::default();
    let mut title_null = false;
    let mut email_null = false;
    check_repeats(fields.iter().map(|(k, _)| k.as_ref()), "", problems);
    for (key, raw) in fields {
        let field = key.as_ref();
        let mut f = FieldCheck::new(field, raw, types, problems);
        let r = &mut draft.changes;
        match field {
            "title" => match f.text() {
                Patch::Set(t) => draft.title = Some(t),
                Patch::Clear => title_null = true,
                Patch::Keep => {}
            },
            "email" => match f.parsed(Rule::Email, Email::parse) {
                Patch::Set(e) => draft.email = Some(e),
                Patch::Clear => email_null = true,
                Patch::Keep => {}
            },
            "phone" => r.phone = f.judged(|f| f.phone()),
            "country" => r.country = f.text(),
            "city" => r.city = f.text(),
            "address" => r.address = f.text(),
            "discount_card" => r.discount_card = f.card(),
            "customer_group_id" => r.customer_group_id = f.judged(|f| f.id()),
            "balance" => r.balance = f.judged(|f| f.number()),
            "balance_currency" => r.balance_currency = f.parsed(Rule::Currency, Currency::parse),
            "manager_id" => r.manager_id = f.judged(|f| f.id()),
            "site_link" => r.site_link = f.parsed(Rule::SiteLink, SiteLink::parse),
            "company" => r.company = f.text(),
            "role" => r.role = f.text(),
            "newsletter_subscription" => r.newsletter_subscription = f.judged(|f| f.boolean()),
            "note" => r.note = f.text(),
            _ => problems.push(Message::UnknownField {
                field: field.to_owned(),
            }),
        }
    }
    // Mandatory fields are reported first, as the platform does.
    let mut mandatory = Vec::new();
    for (name, given, null) in [
        ("title", draft.title.is_some(), title_null),
        ("email", draft.email.is_some(), email_null),
    ] {
        let field = name.to_owned();
        if null {
            mandatory.push(Message::NullMandatory { field });
        } else if !given && (!fields.iter().any(|(k, _)| k == name) || is_blank(fields, name)) {
            // A wrong type or a broken rule is reported where the field is checked.
            mandatory.push(Message::Missing { field });
        }
    }
    problems.splice(0..0, mandatory);
    cap(problems);
    draft
}

/// How many problems of one user's fields a response lists. A user object can hold
/// as many keys as the file size allows, and listing 100 000 unknown keys would make
/// the response (and the stored log) a size bomb of its own; past this many, one
/// last message says how many more there were.
pub(crate) const PROBLEMS_LISTED: usize = 100;

/// Keeps the first [`PROBLEMS_LISTED`] problems (the mandatory ones come first, so
/// they are always kept) and counts the rest in one message.
fn cap(problems: &mut Vec<Message>) {
    if problems.len() > PROBLEMS_LISTED {
        let more = (problems.len() - PROBLEMS_LISTED) as u64;
        problems.truncate(PROBLEMS_LISTED);
        problems.push(Message::MoreProblems { more });
    }
}

/// Whether `name` was given as a string that is empty after trimming.
fn is_blank(fields: &[(std::borrow::Cow<'_, str>, &RawValue)], name: &str) -> bool {
    fields.iter().any(|(k, raw)| {
        k == name && matches!(request::value(raw), Value::String(s) if s.trim().is_empty())
    })
}

/// Reports every key given again after its first occurrence, in order.
fn check_repeats<'k>(
    keys: impl ExactSizeIterator<Item = &'k str>,
    prefix: &str,
    problems: &mut Vec<Message>,
) {
    // A set rather than a scan of the keys seen so far: that scan made an object of
    // N keys cost N²/2 comparisons (100 000 keys took a minute). A user has a few
    // dozen keys at most, and the set is then only a cost, so small objects keep the
    // scan.
    const SCAN_LIMIT: usize = 32;
    let mut seen = Seen::for_keys(keys.len(), SCAN_LIMIT);
    for key in keys {
        if !seen.insert(key) {
            problems.push(Message::RepeatedField {
                field: format!("{prefix}{key}"),
            });
        }
    }
}

/// The keys of one object seen so far.
enum Seen<'k> {
    Few(Vec<&'k str>),
    Many(HashSet<&'k str>),
}

impl<'k> Seen<'k> {
    fn for_keys(keys: usize, scan_limit: usize) -> Seen<'k> {
        if keys <= scan_limit {
            Seen::Few(Vec::with_capacity(keys))
        } else {
            Seen::Many(HashSet::with_capacity(keys))
        }
    }

    /// Whether `key` is new; remembers it.
    fn insert(&mut self, key: &'k str) -> bool {
        match self {
            Seen::Few(seen) if seen.contains(&key) => false,
            Seen::Few(seen) => {
                seen.push(key);
                true
            }
            Seen::Many(seen) => seen.insert(key),
        }
    }
}

/// The check of one field's raw value, recording problems as it goes.
struct FieldCheck<'p, 'v> {
    field: &'v str,
    raw: &'v RawValue,
    types: Types,
    problems: &'p mut Vec<Message>,
    /// The loose form a lenient read took the value from, if it did.
    loose: Option<Loose>,
}

impl<'p, 'v> FieldCheck<'p, 'v> {
    fn new(
        field: &'v str,
        raw: &'v RawValue,
        types: Types,
        problems: &'p mut Vec<Message>,
    ) -> FieldCheck<'p, 'v> {
        FieldCheck {
            field,
            raw,
            types,
            problems,
            loose: None,
        }
    }
}

impl<'v> FieldCheck<'_, 'v> {
    /// Reads the field with `read`. A value that strict types refuse but lenient ones
    /// would accept whole (rules included) gets one message saying so, in place of
    /// the strict ones: the sender learns what was found and which flag takes it.
    fn judged<T>(&mut self, read: impl Fn(&mut FieldCheck<'_, 'v>) -> Patch<T>) -> Patch<T> {
        let before = self.problems.len();
        let patch = read(self);
        if self.types == Types::Strict && self.problems.len() > before {
            let mut scratch = Vec::new();
            let mut probe = FieldCheck::new(self.field, self.raw, Types::Lenient, &mut scratch);
            read(&mut probe);
            if let (Some(form), true) = (probe.loose, scratch.is_empty()) {
                self.problems.truncate(before);
                self.lenient_only(form);
            }
        }
        patch
    }

    fn lenient_only(&mut self, form: Loose) {
        self.problems.push(Message::LenientOnly {
            field: self.field.to_owned(),
            found: quote(self.raw.get().trim()),
            form,
        });
    }

    /// `value`, read from the loose `form`.
    fn loosely<T>(&mut self, value: T, form: Loose) -> T {
        self.loose = Some(form);
        value
    }

    fn lenient(&self) -> bool {
        self.types == Types::Lenient
    }

    fn wrong_type(&mut self, expected: JsonKind, found: JsonKind) {
        self.problems.push(Message::WrongType {
            field: self.field.to_owned(),
            expected,
            found,
        });
    }

    /// The field's value; a string that does not decode is reported here, once.
    fn value(&mut self) -> Option<Value<'v>> {
        match request::value(self.raw) {
            Value::BadString => {
                self.problems.push(Message::BadText {
                    field: self.field.to_owned(),
                });
                None
            }
            v => Some(v),
        }
    }

    fn invalid(&mut self, value: &str, rule: Rule) {
        self.problems.push(Message::Invalid {
            field: self.field.to_owned(),
            value: quote(value),
            rule,
        });
    }

    /// A lenient read that found no form it takes. The value is quoted as the JSON
    /// text written, so that `"3a"` shows it was a string and `"  "` is visible.
    fn not_convertible(&mut self, rule: Rule) {
        let written = self.raw.get().trim();
        self.invalid(written, rule);
    }

    /// A string field: trimmed, empty counts as absent, length limit applied.
    fn text(&mut self) -> Patch<String> {
        let Some(value) = self.value() else {
            return Patch::Keep;
        };
        match value {
            Value::Null => Patch::Clear,
            Value::String(s) => {
                let t = s.trim();
                let max = max_len(self.field.rsplit('.').next().unwrap_or(self.field));
                if t.is_empty() {
                    Patch::Keep
                } else if t.chars().count() > max {
                    self.problems.push(Message::TooLong {
                        field: self.field.to_owned(),
                        max,
                    });
                    Patch::Keep
                } else {
                    Patch::Set(t.to_owned())
                }
            }
            other => {
                self.wrong_type(JsonKind::String, other.kind());
                Patch::Keep
            }
        }
    }

    /// A string field with its own rule.
    fn parsed<T>(&mut self, rule: Rule, parse: impl Fn(&str) -> Option<T>) -> Patch<T> {
        self.parsed_loosely(rule, |s| parse(s).map(|v| (v, None)))
    }

    /// A string field with its own rule, which `parse` may meet in a loose form.
    fn parsed_loosely<T>(
        &mut self,
        rule: Rule,
        parse: impl Fn(&str) -> Option<(T, Option<Loose>)>,
    ) -> Patch<T> {
        let Some(value) = self.value() else {
            return Patch::Keep;
        };
        match value {
            Value::Null => Patch::Clear,
            Value::String(s) if s.trim().is_empty() => Patch::Keep,
            Value::String(s) => match parse(&s) {
                Some((v, loose)) => {
                    self.loose = loose;
                    Patch::Set(v)
                }
                None => {
                    self.invalid(s.trim(), rule);
                    Patch::Keep
                }
            },
            other => {
                self.wrong_type(JsonKind::String, other.kind());
                Patch::Keep
            }
        }
    }

    fn phone(&mut self) -> Patch<Phone> {
        match self.types {
            Types::Strict => self.parsed(Rule::Phone, Phone::parse),
            Types::Lenient => self.parsed_loosely(Rule::LenientPhone, lenient::phone),
        }
    }

    fn boolean(&mut self) -> Patch<bool> {
        let Some(value) = self.value() else {
            return Patch::Keep;
        };
        let lenient = self.lenient();
        let read = match value {
            Value::Null => return Patch::Clear,
            Value::Bool(b) => Some(b),
            Value::Number(text) if lenient => {
                lenient::boolean_number(text).map(|b| self.loosely(b, Loose::NumberAsBoolean))
            }
            Value::String(s) if lenient => {
                lenient::boolean_string(&s).map(|b| self.loosely(b, Loose::StringAsBoolean))
            }
            other => {
                self.wrong_type(JsonKind::Boolean, other.kind());
                return Patch::Keep;
            }
        };
        match read {
            Some(b) => Patch::Set(b),
            None => {
                self.not_convertible(Rule::LenientBoolean);
                Patch::Keep
            }
        }
    }

    fn number(&mut self) -> Patch<Number> {
        let Some(value) = self.value() else {
            return Patch::Keep;
        };
        let n = match value {
            Value::Null => return Patch::Clear,
            Value::Number(text) => match Number::parse(text) {
                Some(n) => n,
                None => {
                    self.wrong_type(JsonKind::Number, JsonKind::Number);
                    return Patch::Keep;
                }
            },
            // The number keeps the text inside the quotes, so that a balance read from
            // "-1250.75" is as exact as one written -1250.75.
            Value::String(s) if self.lenient() => match Number::parse(s.trim()) {
                Some(n) => self.loosely(n, Loose::QuotedNumber),
                None => {
                    self.not_convertible(Rule::LenientNumber);
                    return Patch::Keep;
                }
            },
            other => {
                self.wrong_type(JsonKind::Number, other.kind());
                return Patch::Keep;
            }
        };
        if n.to_f64().is_finite() {
            Patch::Set(n)
        } else {
            self.invalid(n.as_str(), Rule::Finite);
            Patch::Keep
        }
    }

    /// A whole number: written without fraction or exponent, or (lenient) with a zero
    /// fraction, or as a string of digits. The text is the value as read, for messages.
    fn integer(&mut self) -> Option<Patch<(String, Option<u64>)>> {
        let value = self.value()?;
        let lenient = self.lenient();
        match value {
            Value::Null => Some(Patch::Clear),
            Value::Number(text) if text.bytes().all(|b| b.is_ascii_digit() || b == b'-') => {
                Some(Patch::Set((text.to_owned(), text.parse().ok())))
            }
            Value::Number(text) if lenient => match lenient::whole(text) {
                Some(whole) => {
                    let read = (text.to_owned(), whole.fitting());
                    Some(Patch::Set(self.loosely(read, Loose::WholeWithFraction)))
                }
                None => {
                    self.wrong_type(JsonKind::Integer, JsonKind::Number);
                    None
                }
            },
            Value::String(s) if lenient => match lenient::digits(&s) {
                Some(digits) => {
                    let read = (digits.to_owned(), digits.parse().ok());
                    Some(Patch::Set(self.loosely(read, Loose::QuotedNumber)))
                }
                None => {
                    self.not_convertible(Rule::LenientInteger);
                    None
                }
            },
            other => {
                self.wrong_type(JsonKind::Integer, other.kind());
                None
            }
        }
    }

    /// A positive identifier (`customer_group_id`, `manager_id`).
    fn id(&mut self) -> Patch<u64> {
        match self.integer() {
            None => Patch::Keep,
            Some(Patch::Set((_, Some(n)))) if n >= 1 => Patch::Set(n),
            Some(Patch::Set((text, _))) => {
                self.invalid(&text, Rule::AtLeastOne);
                Patch::Keep
            }
            Some(Patch::Clear) => Patch::Clear,
            Some(Patch::Keep) => Patch::Keep,
        }
    }

    fn percent(&mut self) -> Patch<Number> {
        match self.number() {
            Patch::Set(n) if n.is_percent() => Patch::Set(n),
            Patch::Set(n) => {
                self.invalid(n.as_str(), Rule::Percent);
                Patch::Keep
            }
            other => other,
        }
    }

    fn date(&mut self) -> Patch<NaiveDate> {
        match self.types {
            Types::Strict => self.parsed(Rule::Date, |s| iso_date(s.trim())),
            Types::Lenient => self.parsed_loosely(Rule::LenientDate, lenient::date),
        }
    }

    fn card_status(&mut self) -> Patch<CardStatus> {
        match self.integer() {
            None => Patch::Keep,
            Some(Patch::Set((text, n))) => {
                match n
                    .and_then(|n| u8::try_from(n).ok())
                    .and_then(|n| CardStatus::try_from(n).ok())
                {
                    Some(s) => Patch::Set(s),
                    None => {
                        self.invalid(&text, Rule::CardStatus);
                        Patch::Keep
                    }
                }
            }
            Some(Patch::Clear) => Patch::Clear,
            Some(Patch::Keep) => Patch::Keep,
        }
    }

    fn card(&mut self) -> Patch<CardPatch> {
        let Some(value) = self.value() else {
            return Patch::Keep;
        };
        let raw = match value {
            Value::Null => return Patch::Clear,
            Value::Object(raw) => raw,
            // PHP's json_encode writes an empty array for an empty associative one:
            // no card given, so the stored one is kept.
            Value::Array if lenient::is_empty_array(self.raw.get()) => {
                if !self.lenient() {
                    self.lenient_only(Loose::EmptyArray);
                }
                return Patch::Keep;
            }
            other => {
                self.wrong_type(JsonKind::Object, other.kind());
                return Patch::Keep;
            }
        };
        let Some(fields) = request::object_fields(raw) else {
            self.problems.push(Message::BadKey {
                within: self.field.to_owned(),
            });
            return Patch::Keep;
        };
        let mut card = CardPatch::default();
        check_repeats(
            fields.iter().map(|(k, _)| k.as_ref()),
            "discount_card.",
            self.problems,
        );
        for (key, raw) in &fields {
            let name = format!("discount_card.{key}");
            let mut f = FieldCheck::new(&name, raw, self.types, self.problems);
            match key.as_ref() {
                "discount" => card.discount = f.judged(|f| f.percent()),
                "active" => card.active = f.judged(|f| f.boolean()),
                "date_limit" => card.date_limit = f.judged(|f| f.date()),
                "status" => card.status = f.judged(|f| f.card_status()),
                _ => self.problems.push(Message::UnknownField { field: name }),
            }
        }
        Patch::Set(card)
    }
}

/// `YYYY-MM-DD` (already trimmed), a day that exists: the strict form of a date.
fn iso_date(s: &str) -> Option<NaiveDate> {
    let shape = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if shape {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        serde_json::from_str(json).unwrap()
    }

    fn judge(json: &str) -> Verdict {
        Validator::new().user(0, request::element(&raw(json)))
    }

    fn problems(json: &str) -> Vec<Message> {
        match judge(json) {
            Verdict::Rejected(p) => p,
            Verdict::Valid(p) => panic!("accepted {json}: {p:?}"),
        }
    }

    #[test]
    fn seed_third_user_gets_codes_1_and_2() {
        let p = problems(r#"{"email":"some@email"}"#);
        let codes: Vec<u8> = p.iter().map(|m| m.code().into()).collect();
        assert_eq!(codes, [1, 2]);
        assert_eq!(
            p[1].text(crate::messages::Lang::En),
            "The email field (some@email) is set incorrectly"
        );
    }

    #[test]
    fn valid_user_is_normalised() {
        let Verdict::Valid(p) = judge(
            r#"{"title":"  T ","email":" A@B.Co","phone":"+38 (063) 123-45-67",
                "balance_currency":"uah","discount_card":{"discount":2.5,"status":2},
                "company":"  ","manager_id":7}"#,
        ) else {
            panic!()
        };
        assert_eq!(p.title, "T");
        assert_eq!(p.email.as_str(), "a@b.co");
        assert_eq!(p.changes.company, Patch::Keep);
        assert_eq!(p.changes.manager_id, Patch::Set(7));
        assert!(
            matches!(p.changes.discount_card, Patch::Set(ref c) if c.status == Patch::Set(CardStatus::Pending))
        );
    }

    #[test]
    fn strict_types_and_unknown_keys() {
        let p = problems(
            r#"{"title":"t","email":"a@b.co","manager_id":"3","status":1,
                "discount_card":{"discount":"3","extra":1,"status":1.0}}"#,
        );
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(p.iter().all(|m| m.code() == crate::messages::Code::Invalid));
    }

    fn judge_lenient(json: &str) -> Verdict {
        Validator::for_users(1, Types::Lenient).user(0, request::element(&raw(json)))
    }

    #[test]
    fn strict_names_the_loose_form_only_when_lenient_would_take_the_value() {
        let p = problems(
            r#"{"title":"t","email":"a@b.co","manager_id":"3","customer_group_id":"0",
                "discount_card":{"status":2.0,"active":"yes"}}"#,
        );
        assert_eq!(
            p,
            [
                Message::LenientOnly {
                    field: "manager_id".into(),
                    found: "\"3\"".into(),
                    form: Loose::QuotedNumber,
                },
                // "0" would convert, then fail the id rule: the strict message stays.
                Message::WrongType {
                    field: "customer_group_id".into(),
                    expected: JsonKind::Integer,
                    found: JsonKind::String,
                },
                Message::LenientOnly {
                    field: "discount_card.status".into(),
                    found: "2.0".into(),
                    form: Loose::WholeWithFraction,
                },
                Message::WrongType {
                    field: "discount_card.active".into(),
                    expected: JsonKind::Boolean,
                    found: JsonKind::String,
                },
            ]
        );
        let Verdict::Valid(p) = judge_lenient(
            r#"{"title":"t","email":"a@b.co","manager_id":"3","discount_card":{"status":2.0}}"#,
        ) else {
            panic!("refused")
        };
        assert_eq!(p.changes.manager_id, Patch::Set(3));
    }

    #[test]
    fn duplicates_name_the_first_index() {
        let mut v = Validator::new();
        let a = raw(r#"{"title":"t","email":"a@b.co"}"#);
        let b = raw(r#"{"title":"t","email":" A@B.CO"}"#);
        assert!(matches!(v.user(4, request::element(&a)), Verdict::Valid(_)));
        match v.user(9, request::element(&b)) {
            Verdict::Rejected(p) => assert_eq!(
                p,
                [Message::Duplicate {
                    email: "a@b.co".into(),
                    first: 4
                }]
            ),
            Verdict::Valid(_) => panic!(),
        }
    }

    #[test]
    fn lone_surrogates_are_code_2() {
        let p = problems(r#"{"title":"t","email":"x@y.co","note":"\ud800"}"#);
        assert_eq!(
            p,
            [Message::BadText {
                field: "note".into()
            }]
        );
        let p = problems(r#"{"title":"t","email":"x@y.co","discount_card":{"\ud800":1}}"#);
        assert_eq!(
            p,
            [Message::BadKey {
                within: "discount_card".into()
            }]
        );
        let p = problems(r#"{"title":"t","email":"x@y.co","balance":1e400}"#);
        assert_eq!(p[0].code(), crate::messages::Code::Invalid);
    }

    #[test]
    fn null_mandatory_is_code_1() {
        let p = problems(r#"{"title":null,"email":"a@b.co"}"#);
        assert_eq!(
            p,
            [Message::NullMandatory {
                field: "title".into()
            }]
        );
        let p = problems(r#"{"title":" ","email":"a@b.co"}"#);
        assert_eq!(
            p,
            [Message::Missing {
                field: "title".into()
            }]
        );
    }

    /// A user object of `keys` (a JSON fragment of its own keys) after `head`.
    fn user_with(head: &str, keys: impl Iterator<Item = String>) -> String {
        let mut json = format!("{{{head}");
        for key in keys {
            json.push_str(&key);
        }
        json.push('}');
        json
    }

    #[test]
    fn a_hundred_thousand_unknown_keys_are_judged_in_linear_time() {
        let json = user_with(
            r#""title":"t","email":"a@b.co""#,
            (0..100_000).map(|i| format!(r#","k{i}":1"#)),
        );
        let raw = raw(&json);
        let start = std::time::Instant::now();
        let verdict = Validator::new().user(0, request::element(&raw));
        let took = start.elapsed();
        // Quadratic, this took about a minute in a debug build; linear, milliseconds.
        assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
        let Verdict::Rejected(p) = verdict else {
            panic!("accepted")
        };
        assert_eq!(p.len(), PROBLEMS_LISTED + 1);
        for (i, m) in p[..PROBLEMS_LISTED].iter().enumerate() {
            assert_eq!(
                *m,
                Message::UnknownField {
                    field: format!("k{i}")
                }
            );
        }
        assert_eq!(p[PROBLEMS_LISTED], Message::MoreProblems { more: 99_900 });
        assert_eq!(p[PROBLEMS_LISTED].code(), crate::messages::Code::Invalid);
    }

    #[test]
    fn a_key_repeated_a_hundred_thousand_times_is_judged_in_linear_time() {
        let json = user_with(
            r#""title":"t","email":"a@b.co""#,
            (0..100_000).map(|_| r#","note":"x""#.to_owned()),
        );
        let raw = raw(&json);
        let start = std::time::Instant::now();
        let p = match Validator::new().user(0, request::element(&raw)) {
            Verdict::Rejected(p) => p,
            Verdict::Valid(_) => panic!("accepted"),
        };
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
        let repeated = Message::RepeatedField {
            field: "note".into(),
        };
        assert!(p[..PROBLEMS_LISTED].iter().all(|m| *m == repeated), "{p:?}");
        assert_eq!(p[PROBLEMS_LISTED], Message::MoreProblems { more: 99_899 });
    }

    #[test]
    fn repeats_are_found_in_small_and_large_objects_alike() {
        for extra in [3, 40] {
            let json = user_with(
                r#""title":"t","email":"a@b.co","phone":null"#,
                (0..extra)
                    .map(|i| format!(r#","k{i}":1"#))
                    .chain([r#","phone":null"#.to_owned()]),
            );
            let p = problems(&json);
            assert_eq!(p.len(), extra + 1, "{p:?}");
            assert_eq!(
                p[0],
                Message::RepeatedField {
                    field: "phone".into()
                },
                "{extra} keys"
            );
        }
    }

    #[test]
    fn the_cap_keeps_mandatory_problems_first_and_the_duplicate_last() {
        let exactly = user_with(
            r#""title":"t","email":"a@b.co""#,
            (0..PROBLEMS_LISTED).map(|i| format!(r#","k{i}":1"#)),
        );
        assert_eq!(problems(&exactly).len(), PROBLEMS_LISTED, "not capped");

        let mut v = Validator::new();
        let first = raw(r#"{"title":"t","email":"a@b.co"}"#);
        assert!(matches!(
            v.user(0, request::element(&first)),
            Verdict::Valid(_)
        ));
        let many = raw(&user_with(
            r#""title":null,"email":"a@b.co""#,
            (0..500).map(|i| format!(r#","k{i}":1"#)),
        ));
        let Verdict::Rejected(p) = v.user(1, request::element(&many)) else {
            panic!("accepted")
        };
        assert_eq!(p.len(), PROBLEMS_LISTED + 2, "{p:?}");
        assert_eq!(
            p[0],
            Message::NullMandatory {
                field: "title".into()
            }
        );
        assert_eq!(p[PROBLEMS_LISTED], Message::MoreProblems { more: 401 });
        assert_eq!(
            p[PROBLEMS_LISTED + 1],
            Message::Duplicate {
                email: "a@b.co".into(),
                first: 0
            }
        );
    }
}
