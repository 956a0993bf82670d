//! The typed values a valid user is made of, the stored record, and the merge rule
//! of SPEC §2. Every type here can only hold a value that passed its rule, so the
//! store and the exporters never re-check anything.

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use std::fmt;

/// An email address, trimmed and lower-cased, that passed the rule of SPEC §1.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Trims, lower-cases and checks `input`; `None` when it is not a usable address.
    pub fn parse(input: &str) -> Option<Email> {
        let email = input.trim().to_ascii_lowercase();
        is_valid_email(&email).then_some(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Email {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Email::parse(&s).ok_or_else(|| format!("not a valid email: {s}"))
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The rule of SPEC §1 on an already trimmed, lower-cased address. Only ASCII is
/// accepted: internationalised domains must arrive in their `xn--` form (see README).
fn is_valid_email(email: &str) -> bool {
    if email.len() > 254 || !email.is_ascii() {
        return false;
    }
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    let local_ok = (1..=64).contains(&local.len())
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // A top-level domain is never all digits; this rejects bare IPv4 literals.
        && labels.last().is_some_and(|tld| !tld.bytes().all(|b| b.is_ascii_digit()));
    local_ok && domain_ok
}

/// A phone number in E.164 shape: `+` and 7 to 15 digits, separators removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Phone(String);

impl Phone {
    pub fn parse(input: &str) -> Option<Phone> {
        let rest = input.trim().strip_prefix('+')?;
        let mut digits = String::with_capacity(16);
        digits.push('+');
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return None,
            }
        }
        (8..=16).contains(&digits.len()).then_some(Phone(digits))
    }
}

impl Phone {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Phone {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Phone::parse(&s).ok_or_else(|| format!("not a valid phone: {s}"))
    }
}

impl From<Phone> for String {
    fn from(p: Phone) -> String {
        p.0
    }
}

/// Three ASCII letters, upper-cased.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency(String);

impl Currency {
    pub fn parse(input: &str) -> Option<Currency> {
        let code = input.trim();
        (code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()))
            .then(|| Currency(code.to_ascii_uppercase()))
    }
}

impl Currency {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Currency::parse(&s).ok_or_else(|| format!("not a valid currency: {s}"))
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.0
    }
}

/// An absolute `http` or `https` URL, kept as the user wrote it (trimmed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SiteLink(String);

impl SiteLink {
    pub fn parse(input: &str) -> Option<SiteLink> {
        let text = input.trim();
        let url = url::Url::parse(text).ok()?;
        let web = matches!(url.scheme(), "http" | "https") && url.host().is_some();
        web.then(|| SiteLink(text.to_owned()))
    }
}

impl SiteLink {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SiteLink {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        SiteLink::parse(&s).ok_or_else(|| format!("not a valid site link: {s}"))
    }
}

impl From<SiteLink> for String {
    fn from(s: SiteLink) -> String {
        s.0
    }
}

/// A JSON number kept as the exact text it was written with, so that `balance`
/// survives import and export without float rounding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Number(Box<str>);

impl Number {
    /// Accepts exactly the JSON number grammar (RFC 8259 §6).
    pub fn parse(text: &str) -> Option<Number> {
        is_json_number(text).then(|| Number(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The nearest `f64`; only for range checks, never for storage.
    pub fn to_f64(&self) -> f64 {
        self.0.parse().unwrap_or(f64::NAN)
    }

    /// Whether the value lies in 0..=100, judged on the exact decimal text so that
    /// `100.0000000000000001` (which rounds to 100 as a float) is refused.
    pub fn is_percent(&self) -> bool {
        let text = &*self.0;
        if text.contains(['e', 'E']) {
            // Exponent forms are rare here; a float is exact enough for them.
            return (0.0..=100.0).contains(&self.to_f64());
        }
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let frac_zero = frac.bytes().all(|b| b == b'0');
        let int = int.trim_start_matches('0');
        if negative {
            return int.is_empty() && frac_zero;
        }
        int.len() < 3 || (int == "100" && frac_zero)
    }

    /// The value as a whole number, when it is written as one (no fraction, no
    /// exponent) and fits.
    pub fn to_u64(&self) -> Option<u64> {
        self.0.parse().ok()
    }
}

fn is_json_number(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return false;
        }
    }
    i == b.len()
}

impl Serialize for Number {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw = RawValue::from_string(self.0.to_string()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        Number::parse(raw.get())
            .ok_or_else(|| serde::de::Error::custom(format!("not a JSON number: {}", raw.get())))
    }
}

/// `discount_card.status`: 1 confirmed, 2 pending confirmation, 3 rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub enum CardStatus {
    Confirmed = 1,
    Pending = 2,
    Rejected = 3,
}

impl TryFrom<u8> for CardStatus {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            1 => Ok(CardStatus::Confirmed),
            2 => Ok(CardStatus::Pending),
            3 => Ok(CardStatus::Rejected),
            _ => Err(format!("not a card status: {n}")),
        }
    }
}

impl From<CardStatus> for u8 {
    fn from(s: CardStatus) -> u8 {
        s as u8
    }
}

/// The user's personal discount card. Each field merges on its own: absent keeps the
/// stored value, `null` clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscountCard {
    /// Personal discount in percent, 0 to 100 inclusive, may be fractional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub discount: Option<Number>,
    /// Personal discount on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Valid until this day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<crate::schema::CalendarDate>")]
    pub date_limit: Option<NaiveDate>,
    /// Status of the card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CardStatus>,
}

impl DiscountCard {
    fn is_empty(&self) -> bool {
        *self == DiscountCard::default()
    }
}

/// The data of one user, in the shape of a `users/import` element: serialising it
/// gives a user that re-imports to itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UserData {
    /// Full name; mandatory.
    pub title: String,
    /// Mandatory; the key of the store, unique within a file.
    pub email: Email,
    /// Phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<Phone>,
    /// Default delivery country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Default delivery city.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Default delivery address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Personal discount card.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discount_card: Option<DiscountCard>,
    /// B2B: the customer group, 1 or more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub customer_group_id: Option<u64>,
    /// B2B: the balance, may be negative; stored and exported exactly as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<Number>,
    /// B2B: the balance's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance_currency: Option<Currency>,
    /// B2B: the shop manager assigned, 1 or more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub manager_id: Option<u64>,
    /// B2B: the company's site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_link: Option<SiteLink>,
    /// B2B: company name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// B2B: position in the company.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Subscribed to the shop's newsletter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newsletter_subscription: Option<bool>,
    /// The shop's note on the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What the store adds to a user's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The name of the request file that last changed this user.
    pub source_file: String,
}

/// A user as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredUser {
    pub data: UserData,
    pub meta: Meta,
}

/// The flat JSON shape `get` and `export --format ndjson` print: the user's fields
/// followed by `created_at`, `updated_at` and `source_file`.
#[derive(Serialize)]
pub struct FlatRecord<'a> {
    #[serde(flatten)]
    pub data: &'a UserData,
    #[serde(flatten)]
    pub meta: &'a Meta,
}

impl StoredUser {
    pub fn flat(&self) -> FlatRecord<'_> {
        FlatRecord {
            data: &self.data,
            meta: &self.meta,
        }
    }
}

/// The outcome of a whole file, in the platform's own words (SPEC §3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Every user was added or updated.
    Ok,
    /// Some users were rejected.
    Warning,
    /// The file was rejected whole; nothing was applied.
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Error => "ERROR",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One field of an update: absent keeps the stored value, `null` clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Patch<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T> Patch<T> {
    fn apply(self, slot: &mut Option<T>) {
        match self {
            Patch::Keep => {}
            Patch::Clear => *slot = None,
            Patch::Set(v) => *slot = Some(v),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CardPatch {
    pub discount: Patch<Number>,
    pub active: Patch<bool>,
    pub date_limit: Patch<NaiveDate>,
    pub status: Patch<CardStatus>,
}

/// A validated user of a request: its identity and mandatory title, and what to
/// change in the other fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserPatch {
    pub title: String,
    pub email: Email,
    pub changes: Changes,
}

/// The optional fields of a request user, each kept, cleared or set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub phone: Patch<Phone>,
    pub country: Patch<String>,
    pub city: Patch<String>,
    pub address: Patch<String>,
    /// `Set` merges field by field into the stored card; `Clear` removes the card.
    pub discount_card: Patch<CardPatch>,
    pub customer_group_id: Patch<u64>,
    pub balance: Patch<Number>,
    pub balance_currency: Patch<Currency>,
    pub manager_id: Patch<u64>,
    pub site_link: Patch<SiteLink>,
    pub company: Patch<String>,
    pub role: Patch<String>,
    pub newsletter_subscription: Patch<bool>,
    pub note: Patch<String>,
}

impl UserPatch {
    /// The user's data after this patch is applied over `stored` (SPEC §2).
    pub fn merge(self, stored: Option<&UserData>) -> UserData {
        let mut d = match stored {
            Some(d) => d.clone(),
            None => UserData {
                title: String::new(),
                email: self.email.clone(),
                phone: None,
                country: None,
                city: None,
                address: None,
                discount_card: None,
                customer_group_id: None,
                balance: None,
                balance_currency: None,
                manager_id: None,
                site_link: None,
                company: None,
                role: None,
                newsletter_subscription: None,
                note: None,
            },
        };
        d.title = self.title;
        d.email = self.email;
        let c = self.changes;
        c.phone.apply(&mut d.phone);
        c.country.apply(&mut d.country);
        c.city.apply(&mut d.city);
        c.address.apply(&mut d.address);
        match c.discount_card {
            Patch::Keep => {}
            Patch::Clear => d.discount_card = None,
            Patch::Set(p) => {
                let mut card = d.discount_card.take().unwrap_or_default();
                p.discount.apply(&mut card.discount);
                p.active.apply(&mut card.active);
                p.date_limit.apply(&mut card.date_limit);
                p.status.apply(&mut card.status);
                // A card with every field cleared is no card at all.
                d.discount_card = (!card.is_empty()).then_some(card);
            }
        }
        c.customer_group_id.apply(&mut d.customer_group_id);
        c.balance.apply(&mut d.balance);
        c.balance_currency.apply(&mut d.balance_currency);
        c.manager_id.apply(&mut d.manager_id);
        c.site_link.apply(&mut d.site_link);
        c.company.apply(&mut d.company);
        c.role.apply(&mut d.role);
        c.newsletter_subscription
            .apply(&mut d.newsletter_subscription);
        c.note.apply(&mut d.note);
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_rule() {
        for ok in [
            "a@b.co",
            " Ivan@Mail.NET ",
            "first.last+tag@sub.example.com",
            "x@xn--80ak6aa92e.com",
        ] {
            assert!(Email::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "some@email",
            "a@b",
            "user@localhost",
            "@x.com",
            "a..b@x.com",
            ".a@x.com",
            "a@-x.com",
            "a@x-.com",
            "a@x..com",
            "a b@x.com",
            "a@1.2.3.4",
            "ü@x.com",
            "a@x.com@y.com",
        ] {
            assert!(Email::parse(bad).is_none(), "{bad}");
        }
        assert!(Email::parse(&format!("{}@x.com", "a".repeat(64))).is_some());
        assert!(Email::parse(&format!("{}@x.com", "a".repeat(65))).is_none());
        let long = format!("a@{}.com", vec!["b".repeat(60); 5].join("."));
        assert!(long.len() > 254 && Email::parse(&long).is_none());
        assert_eq!(Email::parse(" A@B.Co ").unwrap().as_str(), "a@b.co");
    }

    #[test]
    fn phone_rule() {
        assert_eq!(
            Phone::parse("+38 (063) 123-45.67").unwrap(),
            Phone("+380631234567".into())
        );
        assert!(Phone::parse("+1234567").is_some());
        assert!(Phone::parse("+123456").is_none());
        assert!(Phone::parse("+1234567890123456").is_none());
        assert!(Phone::parse("380631234567").is_none());
        assert!(Phone::parse("+38063x234567").is_none());
    }

    #[test]
    fn number_grammar() {
        for ok in ["0", "-0.10", "12345678901234567.89", "1e5", "1E-2", "3"] {
            assert!(Number::parse(ok).is_some(), "{ok}");
        }
        for bad in ["", "-", "01", "1.", ".5", "1e", "+1", "NaN", "1 "] {
            assert!(Number::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn percent_is_judged_on_the_exact_text() {
        for ok in ["0", "-0.0", "3", "99.999", "100", "100.000", "1e2", "0.5"] {
            assert!(Number::parse(ok).unwrap().is_percent(), "{ok}");
        }
        for bad in ["100.0000000000000001", "101", "-0.01", "-1", "1000", "1e3"] {
            assert!(!Number::parse(bad).unwrap().is_percent(), "{bad}");
        }
    }

    #[test]
    fn number_round_trips_exactly() {
        let n = Number::parse("12345678901234567.89").unwrap();
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, "12345678901234567.89");
        let back: Number = serde_json::from_str(&json).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    fn flat_record_keeps_exact_balance() {
        let data = UserData {
            balance: Number::parse("-0.10"),
            ..serde_json::from_str(r#"{"title":"t","email":"a@b.co"}"#).unwrap()
        };
        let meta = Meta {
            created_at: Utc::now(),
            updated_at: Utc::now(),
            source_file: "x.json".into(),
        };
        let user = StoredUser { data, meta };
        let text = serde_json::to_string(&user.flat()).unwrap();
        assert!(text.contains(r#""balance":-0.10"#), "{text}");
        assert!(text.contains(r#""source_file":"x.json""#), "{text}");
    }
}

/// Which file a request was: its device and inode, size and modification time, as
/// `fstat` of its open descriptor told them. A response is written only beside the
/// file that was applied (SPEC §2): a request removed with its response and uploaded
/// again under the same name has another identity, even where the inode number is
/// reused, because its modification time differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub mtime_ns: i64,
}
