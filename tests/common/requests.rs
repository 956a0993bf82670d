//! What the soak tests (tests/crash.rs, tests/powercut.rs) share: a seeded xorshift
//! generator, request files of every kind of user, and the model that replays the
//! responses (SPEC §2's merge).

use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::ops::Range;

// ---------------------------------------------------------------------------------
// Randomness

/// xorshift64: enough for test data, no dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // xorshift stays at 0 forever; any other state is fine.
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The seed in the variable `name` (decimal, or hex after `0x`); `None` when it is not
/// set. Panics when it is not a u64.
pub fn seed_from_env(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a u64")))
}

// ---------------------------------------------------------------------------------
// Request files

const TITLES: &[&str] = &[
    "Ivanov Ivan",
    "Olena Petrenko",
    "  Taras Shevchenko  ",
    "Maria Kovalenko",
    "John Smith",
];
const CITIES: &[&str] = &["Kyiv", "Lviv", "  Odesa ", "Kharkiv", "   ", "Dnipro"];
const COUNTRIES: &[&str] = &["Ukraine", "Poland", "Germany"];
const PHONES: &[&str] = &[
    "+380631234567",
    "+380 63 123-45-67",
    "+1 (555) 010.9999",
    "+44 20 7946 0958",
];
const CURRENCIES: &[&str] = &["uah", "USD", "eur"];
const DATES: &[&str] = &["2019-01-01", "2024-02-29", "2030-12-31"];

/// An email of the shared pool, spelt with random case and padding.
pub fn pool_email(rng: &mut Rng, index: u64) -> String {
    let local = if rng.chance(30) {
        format!("User{index}")
    } else {
        format!("user{index}")
    };
    let domain = if rng.chance(20) {
        "Example.COM"
    } else {
        "example.com"
    };
    let pad = if rng.chance(15) { "  " } else { "" };
    format!("{pad}{local}@{domain}{pad}")
}

/// Absent (about half the time), a value, or sometimes `null`.
fn maybe(
    rng: &mut Rng,
    user: &mut Map<String, Value>,
    key: &str,
    value: impl FnOnce(&mut Rng) -> Value,
) {
    match rng.below(10) {
        0..=4 => {}
        5 => {
            user.insert(key.into(), Value::Null);
        }
        _ => {
            let value = value(rng);
            user.insert(key.into(), value);
        }
    }
}

fn balance(rng: &mut Rng) -> Value {
    let cents = rng.below(2_000_000) as i64 - 500_000;
    if rng.chance(50) {
        json!(cents / 100)
    } else {
        json!(cents as f64 / 100.0)
    }
}

fn card(rng: &mut Rng) -> Value {
    let mut card = Map::new();
    while card.is_empty() {
        maybe(rng, &mut card, "discount", |r| json!(r.below(101)));
        maybe(rng, &mut card, "active", |r| json!(r.chance(50)));
        maybe(rng, &mut card, "date_limit", |r| json!(r.pick(DATES)));
        maybe(rng, &mut card, "status", |r| json!(1 + r.below(3)));
    }
    Value::Object(card)
}

/// A valid user with a random selection of optional fields.
pub fn valid_user(rng: &mut Rng, email: String, title: String) -> Value {
    let mut user = Map::new();
    user.insert("title".into(), json!(title));
    user.insert("email".into(), json!(email));
    maybe(rng, &mut user, "city", |r| json!(r.pick(CITIES)));
    maybe(rng, &mut user, "country", |r| json!(r.pick(COUNTRIES)));
    maybe(rng, &mut user, "phone", |r| json!(r.pick(PHONES)));
    maybe(rng, &mut user, "balance", balance);
    maybe(rng, &mut user, "balance_currency", |r| {
        json!(r.pick(CURRENCIES))
    });
    maybe(rng, &mut user, "newsletter_subscription", |r| {
        json!(r.chance(50))
    });
    maybe(rng, &mut user, "customer_group_id", |r| {
        json!(1 + r.below(9))
    });
    if rng.chance(30) {
        let value = if rng.chance(15) {
            Value::Null
        } else {
            card(rng)
        };
        user.insert("discount_card".into(), value);
    }
    Value::Object(user)
}

/// A user that must be rejected (code 1 or 2), in one of several ways.
pub fn invalid_user(rng: &mut Rng, email: String) -> Value {
    let mut user = match valid_user(rng, email, "Broken User".into()) {
        Value::Object(map) => map,
        _ => unreachable!(),
    };
    match rng.below(7) {
        0 => {
            user.remove("title");
        }
        1 => {
            user.insert("email".into(), json!("user@nodot"));
        }
        2 => {
            user.insert("balance".into(), json!("3"));
        }
        3 => {
            user.insert("nickname".into(), json!("nick"));
        }
        4 => {
            user.insert("title".into(), Value::Null);
        }
        5 => {
            user.insert("phone".into(), json!("12"));
        }
        _ => {
            user.insert("discount_card".into(), json!({"discount": 150}));
        }
    }
    Value::Object(user)
}

/// A file of a random number (in `count`) of users, each with one of the first `pool`
/// emails of the shared pool (so that files overlap); about one in ten is invalid.
pub fn small_file(rng: &mut Rng, tag: &str, count: Range<u64>, pool: u64) -> Value {
    let count = count.start + rng.below(count.end - count.start);
    let users: Vec<Value> = (0..count)
        .map(|_| {
            let index = rng.below(pool);
            let email = pool_email(rng, index);
            if rng.chance(10) {
                invalid_user(rng, email)
            } else {
                let title = format!("{} {tag}", rng.pick(TITLES).trim());
                let title = if rng.chance(50) {
                    title
                } else {
                    rng.pick(TITLES).to_string()
                };
                valid_user(rng, email, title)
            }
        })
        .collect();
    json!({"token": "ignored", "users": users})
}

/// A file of the bulk users numbered `users`: every 97th invalid, every 50th (else)
/// one of the first `pool` emails of the shared pool instead.
pub fn big_file(rng: &mut Rng, users: Range<usize>, pool: u64, tag: &str) -> Value {
    let users: Vec<Value> = users
        .map(|k| {
            if k % 97 == 0 {
                invalid_user(rng, format!("bulk{k}@example.com"))
            } else if k % 50 == 0 {
                let index = rng.below(pool);
                let email = pool_email(rng, index);
                valid_user(rng, email, format!("Pool {tag}"))
            } else {
                valid_user(
                    rng,
                    format!("Bulk{k}@example.com"),
                    format!("Bulk {k} {tag}"),
                )
            }
        })
        .collect();
    json!({"users": users})
}

// ---------------------------------------------------------------------------------
// The model: replay the requests in name order, applying exactly the users whose
// log entry is a single code 0. Each test reads the responses its own way and
// hands every such user to `Model::merge`.

#[derive(Default)]
pub struct Model {
    pub users: BTreeMap<String, Map<String, Value>>,
    /// The request that last changed each user ("added" or "updated", not "already
    /// up to date").
    pub source: BTreeMap<String, String>,
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub rejected: usize,
    pub error_files: usize,
}

impl Model {
    /// Applies one answered request, as its response says: nothing of a file
    /// answered `ERROR`, and of the others each user whose log entry is a single
    /// code 0.
    pub fn apply_response(&mut self, name: &str, request: &Value, response: &Value) {
        if response["status"] == "ERROR" {
            self.error_files += 1;
            return;
        }
        let users = request["users"].as_array().unwrap();
        let log = response["response"]["log"].as_array().unwrap();
        assert_eq!(log.len(), users.len(), "{name}: one log entry per user");
        for (user, entry) in users.iter().zip(log) {
            let info = entry["info"].as_array().unwrap();
            if !(info.len() == 1 && info[0]["code"] == 0) {
                self.rejected += 1;
                continue;
            }
            let message = info[0]["message"].as_str().unwrap();
            let email = normalise("email", user["email"].as_str().unwrap());
            self.merge(name, email, user, message);
        }
    }

    /// Merges `user`, answered with a single code 0 and `message` by the request
    /// `name`, into the record of `email` (normalised); returns that record.
    pub fn merge(
        &mut self,
        name: &str,
        email: String,
        user: &Value,
        message: &str,
    ) -> &Map<String, Value> {
        let stored = self.users.entry(email.clone()).or_default();
        for (key, value) in user.as_object().unwrap() {
            merge_field(stored, key, value);
        }
        if message.ends_with("nothing changed") {
            self.unchanged += 1;
        } else {
            if message.ends_with("added successfully") {
                self.added += 1;
            } else {
                self.updated += 1;
            }
            self.source.insert(email.clone(), name.to_owned());
        }
        &self.users[&email]
    }
}

pub fn normalise(key: &str, value: &str) -> String {
    let value = value.trim();
    match key {
        "email" => value.to_lowercase(),
        "phone" => value
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
            .collect(),
        "balance_currency" => value.to_uppercase(),
        _ => value.to_owned(),
    }
}

/// SPEC §2's merge of one field into `into`: absent keeps, null clears, strings are
/// trimmed and count as absent when empty, `discount_card` merges field by field.
fn merge_field(into: &mut Map<String, Value>, key: &str, value: &Value) {
    match value {
        Value::Null => {
            into.remove(key);
        }
        Value::String(s) => {
            let s = normalise(key, s);
            if !s.is_empty() {
                into.insert(key.to_owned(), Value::String(s));
            }
        }
        Value::Object(fields) if key == "discount_card" => {
            let mut card = match into.remove(key) {
                Some(Value::Object(card)) => card,
                _ => Map::new(),
            };
            for (k, v) in fields {
                merge_field(&mut card, k, v);
            }
            if !card.is_empty() {
                into.insert(key.to_owned(), Value::Object(card));
            }
        }
        other => {
            into.insert(key.to_owned(), other.clone());
        }
    }
}
