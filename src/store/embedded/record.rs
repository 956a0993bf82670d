//! The binary user record of format version 2, hand-written rather than through a serde
//! format: the model's serde impls are JSON-shaped (fields skipped when absent, and
//! [`Number`] serialises through `serde_json`'s raw values), which a non-self-describing
//! format such as postcard or bincode cannot round-trip, and the layout must stay
//! fixed for as long as stores of this version exist.
//!
//! ```text
//! BINARY | data hash (16, little end first) | fields (u16 LE, a bit per optional
//! field, in UserData's order) | title | email | the optional fields present |
//! created_at | updated_at | source_file
//! ```
//!
//! Strings are a LEB128 length and their UTF-8 bytes; whole numbers LEB128; a time
//! is its seconds (zigzag LEB128) and nanoseconds (LEB128) since the epoch; a date its
//! days from the Common Era (zigzag LEB128); `balance` and `discount` their exact JSON
//! number text. Every value is checked again as it is decoded, by the same rules that
//! admitted it: a damaged record is refused, never handed on as a user.

use crate::model::{
    CardStatus, Currency, DiscountCard, Email, Meta, Number, Phone, SiteLink, StoredUser, UserData,
};
use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// The first byte of a record in this layout. (Format 1's records start with
/// `HASHED`, 1, or with `[`.)
pub const BINARY: u8 = 2;

/// The bytes before the fields: the tag and the data hash.
pub const HEAD: usize = 17;

const PHONE: u16 = 1 << 0;
const COUNTRY: u16 = 1 << 1;
const CITY: u16 = 1 << 2;
const ADDRESS: u16 = 1 << 3;
const CARD: u16 = 1 << 4;
const GROUP: u16 = 1 << 5;
const BALANCE: u16 = 1 << 6;
const CURRENCY: u16 = 1 << 7;
const MANAGER: u16 = 1 << 8;
const SITE: u16 = 1 << 9;
const COMPANY: u16 = 1 << 10;
const ROLE: u16 = 1 << 11;
const NEWSLETTER: u16 = 1 << 12;
const NOTE: u16 = 1 << 13;
const KNOWN: u16 = (1 << 14) - 1;

const DISCOUNT: u8 = 1 << 0;
const ACTIVE: u8 = 1 << 1;
const DATE_LIMIT: u8 = 1 << 2;
const STATUS: u8 = 1 << 3;
const CARD_KNOWN: u8 = (1 << 4) - 1;

/// `user` in this layout, with `hash` (its data's [`crate::store::data_hash`]).
pub fn encode(user: &StoredUser, hash: u128) -> Vec<u8> {
    let d = &user.data;
    let mut out = Vec::with_capacity(HEAD + 2 + 320);
    out.push(BINARY);
    out.extend_from_slice(&hash.to_le_bytes());
    let mut fields = 0u16;
    for (present, bit) in [
        (d.phone.is_some(), PHONE),
        (d.country.is_some(), COUNTRY),
        (d.city.is_some(), CITY),
        (d.address.is_some(), ADDRESS),
        (d.discount_card.is_some(), CARD),
        (d.customer_group_id.is_some(), GROUP),
        (d.balance.is_some(), BALANCE),
        (d.balance_currency.is_some(), CURRENCY),
        (d.manager_id.is_some(), MANAGER),
        (d.site_link.is_some(), SITE),
        (d.company.is_some(), COMPANY),
        (d.role.is_some(), ROLE),
        (d.newsletter_subscription.is_some(), NEWSLETTER),
        (d.note.is_some(), NOTE),
    ] {
        if present {
            fields |= bit;
        }
    }
    out.extend_from_slice(&fields.to_le_bytes());
    put_str(&mut out, &d.title);
    put_str(&mut out, d.email.as_str());
    if let Some(phone) = &d.phone {
        put_str(&mut out, phone.as_str());
    }
    for s in [&d.country, &d.city, &d.address].into_iter().flatten() {
        put_str(&mut out, s);
    }
    if let Some(card) = &d.discount_card {
        let mut bits = 0u8;
        for (present, bit) in [
            (card.discount.is_some(), DISCOUNT),
            (card.active.is_some(), ACTIVE),
            (card.date_limit.is_some(), DATE_LIMIT),
            (card.status.is_some(), STATUS),
        ] {
            if present {
                bits |= bit;
            }
        }
        out.push(bits);
        if let Some(n) = &card.discount {
            put_str(&mut out, n.as_str());
        }
        if let Some(b) = card.active {
            out.push(u8::from(b));
        }
        if let Some(date) = card.date_limit {
            put_signed(&mut out, i64::from(date.num_days_from_ce()));
        }
        if let Some(status) = card.status {
            out.push(u8::from(status));
        }
    }
    if let Some(n) = d.customer_group_id {
        put_uint(&mut out, n);
    }
    if let Some(n) = &d.balance {
        put_str(&mut out, n.as_str());
    }
    if let Some(c) = &d.balance_currency {
        put_str(&mut out, c.as_str());
    }
    if let Some(n) = d.manager_id {
        put_uint(&mut out, n);
    }
    if let Some(s) = &d.site_link {
        put_str(&mut out, s.as_str());
    }
    for s in [&d.company, &d.role].into_iter().flatten() {
        put_str(&mut out, s);
    }
    if let Some(b) = d.newsletter_subscription {
        out.push(u8::from(b));
    }
    if let Some(s) = &d.note {
        put_str(&mut out, s);
    }
    put_time(&mut out, &user.meta.created_at);
    put_time(&mut out, &user.meta.updated_at);
    put_str(&mut out, &user.meta.source_file);
    out
}

/// The hash a record of this layout carries; `None` when it is too short to.
pub fn hash(bytes: &[u8]) -> Option<u128> {
    let h = bytes.get(1..HEAD)?;
    <[u8; 16]>::try_from(h).ok().map(u128::from_le_bytes)
}

/// Decodes a record of this layout (starting with [`BINARY`]); the reason it cannot
/// be read otherwise.
pub fn decode(bytes: &[u8]) -> Result<StoredUser, String> {
    let mut r = Reader {
        bytes: bytes.get(HEAD..).ok_or("the record is cut short")?,
    };
    let fields = u16::from_le_bytes([r.byte()?, r.byte()?]);
    if fields & !KNOWN != 0 {
        return Err(format!("unknown fields {fields:#06x}"));
    }
    let has = |bit: u16| fields & bit != 0;
    let title = r.string()?;
    let email = Email::try_from(r.string()?)?;
    let phone = r.opt(has(PHONE), |r| Phone::try_from(r.string()?))?;
    let country = r.opt(has(COUNTRY), Reader::string)?;
    let city = r.opt(has(CITY), Reader::string)?;
    let address = r.opt(has(ADDRESS), Reader::string)?;
    let discount_card = r.opt(has(CARD), Reader::card)?;
    let customer_group_id = r.opt(has(GROUP), Reader::uint)?;
    let balance = r.opt(has(BALANCE), Reader::number)?;
    let balance_currency = r.opt(has(CURRENCY), |r| Currency::try_from(r.string()?))?;
    let manager_id = r.opt(has(MANAGER), Reader::uint)?;
    let site_link = r.opt(has(SITE), |r| SiteLink::try_from(r.string()?))?;
    let company = r.opt(has(COMPANY), Reader::string)?;
    let role = r.opt(has(ROLE), Reader::string)?;
    let newsletter_subscription = r.opt(has(NEWSLETTER), Reader::bool)?;
    let note = r.opt(has(NOTE), Reader::string)?;
    let meta = Meta {
        created_at: r.time()?,
        updated_at: r.time()?,
        source_file: r.string()?,
    };
    if !r.bytes.is_empty() {
        return Err(format!("{} bytes after the record", r.bytes.len()));
    }
    Ok(StoredUser {
        data: UserData {
            title,
            email,
            phone,
            country,
            city,
            address,
            discount_card,
            customer_group_id,
            balance,
            balance_currency,
            manager_id,
            site_link,
            company,
            role,
            newsletter_subscription,
            note,
        },
        meta,
    })
}

fn put_uint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_signed(out: &mut Vec<u8>, n: i64) {
    put_uint(out, ((n << 1) ^ (n >> 63)) as u64);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_time(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    put_signed(out, t.timestamp());
    put_uint(out, u64::from(t.timestamp_subsec_nanos()));
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let (&b, rest) = self.bytes.split_first().ok_or("the record is cut short")?;
        self.bytes = rest;
        Ok(b)
    }

    fn uint(&mut self) -> Result<u64, String> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("a number longer than 64 bits".into())
    }

    fn signed(&mut self) -> Result<i64, String> {
        let n = self.uint()?;
        Ok(((n >> 1) as i64) ^ -((n & 1) as i64))
    }

    fn take(&mut self, len: u64) -> Result<&'a [u8], String> {
        let len = usize::try_from(len).map_err(|_| "a length past memory")?;
        if len > self.bytes.len() {
            return Err("the record is cut short".into());
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn str(&mut self) -> Result<&'a str, String> {
        let len = self.uint()?;
        std::str::from_utf8(self.take(len)?).map_err(|e| e.to_string())
    }

    fn string(&mut self) -> Result<String, String> {
        self.str().map(str::to_owned)
    }

    fn bool(&mut self) -> Result<bool, String> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("not a boolean: {b}")),
        }
    }

    fn number(&mut self) -> Result<Number, String> {
        let text = self.str()?;
        Number::parse(text).ok_or_else(|| format!("not a JSON number: {text}"))
    }

    fn time(&mut self) -> Result<DateTime<Utc>, String> {
        let secs = self.signed()?;
        let nanos = u32::try_from(self.uint()?).map_err(|_| "nanoseconds out of range")?;
        DateTime::from_timestamp(secs, nanos).ok_or_else(|| "a time out of range".into())
    }

    fn card(&mut self) -> Result<DiscountCard, String> {
        let bits = self.byte()?;
        if bits & !CARD_KNOWN != 0 {
            return Err(format!("unknown card fields {bits:#04x}"));
        }
        let has = |bit: u8| bits & bit != 0;
        Ok(DiscountCard {
            discount: self.opt(has(DISCOUNT), Reader::number)?,
            active: self.opt(has(ACTIVE), Reader::bool)?,
            date_limit: self.opt(has(DATE_LIMIT), |r| {
                let days = i32::try_from(r.signed()?).map_err(|_| "a date out of range")?;
                NaiveDate::from_num_days_from_ce_opt(days)
                    .ok_or_else(|| "a date out of range".into())
            })?,
            status: self.opt(has(STATUS), |r| CardStatus::try_from(r.byte()?))?,
        })
    }

    fn opt<T>(
        &mut self,
        present: bool,
        read: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        if present {
            read(self).map(Some)
        } else {
            Ok(None)
        }
    }
}
