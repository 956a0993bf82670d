//! Exactness and round trips: `balance` comes back from `get` and every export format
//! with the digits it was written with; `export --format json` re-imports to the same
//! store (a property test over random valid users, running the real binary); and the
//! request reader and validator never panic on arbitrary input (in-process).

mod common;

use common::{Env, userdrop};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use std::fs;
use std::path::{Path, PathBuf};
use userdrop::messages::Lang;
use userdrop::request;
use userdrop::validate::{Validator, Verdict};

impl Env {
    fn write_text(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join("in").join(name);
        fs::write(&path, text).unwrap();
        path
    }

    /// Imports `text` as the file `name`; returns the exit code and the response.
    fn import_text(&self, name: &str, text: &str) -> (i32, Value) {
        let path = self.write_text(name, text);
        // This Env's store, not the thread's latest: a test here has two.
        let out = userdrop()
            .envs(self.store_vars())
            .arg("import")
            .arg("--db")
            .arg(self.db())
            .arg(&path)
            .output()
            .expect("userdrop runs");
        let exit = out.status.code().expect("an exit code");
        (exit, response_of(&path))
    }

    fn stdout(&self, args: &[&str]) -> String {
        // This Env's store, not the thread's latest: a test here has two.
        let out = userdrop()
            .envs(self.store_vars())
            .arg(args[0])
            .arg("--db")
            .arg(self.db())
            .args(&args[1..])
            .output()
            .expect("userdrop runs");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    fn export(&self, format: &str) -> String {
        self.stdout(&["export", "--format", format])
    }
}

fn response_of(request: &Path) -> Value {
    let name = request.file_name().unwrap().to_str().unwrap();
    let path = request.with_file_name(name.replace(".json", ".response.json"));
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("no response {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the response is JSON")
}

/// The `(code, message)` of every log entry that is not a single code-0 success.
fn failures(response: &Value) -> Vec<String> {
    response["response"]["log"]
        .as_array()
        .unwrap_or_else(|| panic!("no log in {response}"))
        .iter()
        .filter(|entry| {
            entry["info"]
                .as_array()
                .is_none_or(|i| i.len() != 1 || i[0]["code"] != 0)
        })
        .map(|entry| entry.to_string())
        .collect()
}

fn messages(response: &Value) -> Vec<String> {
    response["response"]["log"]
        .as_array()
        .unwrap_or_else(|| panic!("no log in {response}"))
        .iter()
        .map(|entry| {
            entry["info"][0]["message"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

/// The raw JSON text after `"balance":` in `text`, up to the next `,`, `}` or line end.
fn raw_balances(text: &str) -> Vec<String> {
    text.match_indices("\"balance\":")
        .map(|(at, key)| {
            let rest = text[at + key.len()..].trim_start();
            let end = rest.find([',', '}', '\n']).unwrap_or(rest.len());
            rest[..end].trim().to_owned()
        })
        .collect()
}

const BALANCES: [(&str, &str); 3] = [
    ("a@x.com", "12345678901234567.89"),
    ("b@x.com", "-0.10"),
    ("c@x.com", "1e3"),
];

fn balance_env() -> Env {
    let env = Env::new();
    let users: Vec<String> = BALANCES
        .iter()
        .map(|(email, balance)| {
            format!(
                r#"{{"title": "T", "email": "{email}", "balance": {balance}, "balance_currency": "usd"}}"#
            )
        })
        .collect();
    let text = format!("{{\"users\": [\n{}\n]}}", users.join(",\n"));
    let (exit, response) = env.import_text("money.json", &text);
    assert_eq!(exit, 0, "{response}");
    assert_eq!(response["status"], "OK");
    env
}

#[test]
fn balance_comes_back_exactly_from_get() {
    let env = balance_env();
    for (email, balance) in BALANCES {
        let text = env.stdout(&["get", email]);
        assert_eq!(raw_balances(&text), [balance], "get {email}: {text}");
    }
}

#[test]
fn balance_comes_back_exactly_from_json_and_ndjson_exports() {
    let env = balance_env();
    let expected: Vec<&str> = BALANCES.iter().map(|(_, b)| *b).collect();
    let json = env.export("json");
    assert_eq!(raw_balances(&json), expected, "{json}");
    let ndjson = env.export("ndjson");
    assert_eq!(raw_balances(&ndjson), expected, "{ndjson}");
    assert_eq!(ndjson.lines().count(), 3);

    // And the json export re-imports with the same digits.
    let fresh = Env::new();
    let (exit, _) = fresh.import_text("again.json", &json);
    assert_eq!(exit, 0);
    assert_eq!(fresh.export("json"), json);
    assert_eq!(raw_balances(&fresh.export("ndjson")), expected);
}

#[test]
fn balance_comes_back_exactly_from_csv_export() {
    let env = balance_env();
    let text = env.export("csv");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().expect("a header row").clone();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
    };
    let (email_at, balance_at, currency_at) = (
        column("email"),
        column("balance"),
        column("balance_currency"),
    );
    let rows: Vec<(String, String, String)> = reader
        .records()
        .map(|r| {
            let r = r.expect("a CSV row");
            (
                r[email_at].to_owned(),
                r[balance_at].to_owned(),
                r[currency_at].to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = BALANCES
        .iter()
        .map(|(e, b)| (e.to_string(), b.to_string(), "USD".to_owned()))
        .collect();
    assert_eq!(rows, expected, "{text}");
}

#[test]
fn csv_export_keeps_spreadsheets_from_reading_free_text_as_formulas() {
    let env = Env::new();
    let request = json!({"users": [{
        "title": "=HYPERLINK(\"http://evil.example\",\"click\")",
        "email": "f@x.com",
        "phone": "+380631234567",
        "city": "-2+3",
        "address": "@SUM(A1:A9)",
        "note": "+1 call back",
        "company": "Acme = Co",
        "balance": -5.25,
        "balance_currency": "USD"
    }]});
    let (exit, _) = env.import_text("=evil.json", &request.to_string());
    assert_eq!(exit, 0);
    let text = env.export("csv");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let row = reader.records().next().expect("one row").unwrap();
    let cell = |name: &str| row[header.iter().position(|h| h == name).unwrap()].to_owned();
    assert_eq!(
        cell("title"),
        "'=HYPERLINK(\"http://evil.example\",\"click\")"
    );
    assert_eq!(cell("city"), "'-2+3");
    assert_eq!(cell("address"), "'@SUM(A1:A9)");
    assert_eq!(cell("note"), "'+1 call back");
    assert_eq!(cell("source_file"), "'=evil.json");
    // Not at the start: left alone. Typed columns cannot hold a formula.
    assert_eq!(cell("company"), "Acme = Co");
    assert_eq!(cell("phone"), "+380631234567");
    assert_eq!(cell("balance"), "-5.25");
    // The store and the other formats keep the text as written.
    let stored: Value = serde_json::from_str(&env.stdout(&["get", "f@x.com"])).unwrap();
    assert_eq!(stored["title"], request["users"][0]["title"]);
}

// ---------------------------------------------------------------------------------
// import → export json → import into a fresh store → export json is a fixed point.

/// An optional field: absent, `null`, or a value.
fn optional(value: impl Strategy<Value = Value> + 'static) -> BoxedStrategy<Option<Value>> {
    prop_oneof![
        2 => Just(None),
        1 => Just(Some(Value::Null)),
        4 => value.prop_map(Some),
    ]
    .boxed()
}

fn text(max: usize) -> BoxedStrategy<Value> {
    proptest::string::string_regex(&format!("\\PC{{0,{max}}}"))
        .unwrap()
        .prop_map(Value::String)
        .boxed()
}

fn discount_card() -> impl Strategy<Value = Value> {
    let discount = prop_oneof![
        (0u32..=100).prop_map(|n| json!(n)),
        (0u32..100, 0u32..100)
            .prop_map(|(i, f)| { serde_json::from_str::<Value>(&format!("{i}.{f:02}")).unwrap() }),
    ];
    let date = (1900i32..2100, 1u32..=12, 1u32..=28)
        .prop_map(|(y, m, d)| json!(format!("{y:04}-{m:02}-{d:02}")));
    (
        optional(discount),
        optional(any::<bool>().prop_map(Value::Bool)),
        optional(date),
        optional((1u8..=3).prop_map(|n| json!(n))),
    )
        .prop_map(|(discount, active, date_limit, status)| {
            let mut card = Map::new();
            for (key, value) in [
                ("discount", discount),
                ("active", active),
                ("date_limit", date_limit),
                ("status", status),
            ] {
                if let Some(v) = value {
                    card.insert(key.to_owned(), v);
                }
            }
            Value::Object(card)
        })
}

/// One valid user: its JSON (with a placeholder string for `balance`) and the raw
/// balance text that replaces it. The email is made unique with `index`.
fn valid_user(index: usize) -> impl Strategy<Value = (Value, Option<String>)> {
    let title = ("[A-Za-z]", "\\PC{0,40}", "[ ]{0,2}")
        .prop_map(|(head, tail, pad)| json!(format!("{pad}{head}{tail}{pad}")));
    let email = (
        "[ ]{0,2}",
        "[a-zA-Z0-9_+-]{1,12}",
        "[a-zA-Z0-9]{1,10}",
        prop::sample::select(vec!["com", "net", "ORG", "com.ua"]),
    )
        .prop_map(move |(pad, local, host, tld)| {
            json!(format!("{pad}{local}.{index}@{host}.{tld}{pad}"))
        });
    let phone = prop_oneof![
        "\\+[0-9]{7,15}",
        "\\+[0-9]{2} \\([0-9]{3}\\) [0-9]{3}-[0-9]{2}\\.[0-9]{2}",
    ]
    .prop_map(Value::String);
    let id = (1u64..=u64::MAX).prop_map(|n| json!(n));
    let balance = "-?(0|[1-9][0-9]{0,19})(\\.[0-9]{1,6})?([eE][+-]?[0-9]{1,2})?".prop_map(Some);
    let balance = prop_oneof![2 => Just(None), 1 => Just(Some("null".to_owned())), 4 => balance];
    let currency = "[a-zA-Z]{3}".prop_map(Value::String);
    let link = "https?://[a-z0-9]{1,10}\\.(com|ua)(/[a-z0-9]{0,10})?".prop_map(Value::String);
    let contact = (
        title,
        email,
        optional(phone),
        optional(text(40)),
        optional(text(40)),
        optional(text(120)),
        optional(discount_card()),
    );
    let business = (
        optional(id.clone()),
        balance,
        optional(currency),
        optional(id),
        optional(link),
        optional(text(40)),
        optional(text(40)),
        optional(any::<bool>().prop_map(Value::Bool)),
        optional(text(200)),
    );
    (contact, business).prop_map(move |(contact, business)| {
        let (title, email, phone, country, city, address, card) = contact;
        let (group, balance, currency, manager, link, company, role, newsletter, note) = business;
        let mut user = Map::new();
        user.insert("title".into(), title);
        user.insert("email".into(), email);
        let placeholder = format!("__BALANCE_{index}__");
        let fields = [
            ("phone", phone),
            ("country", country),
            ("city", city),
            ("address", address),
            ("discount_card", card),
            ("customer_group_id", group),
            (
                "balance",
                balance.as_ref().map(|_| Value::String(placeholder.clone())),
            ),
            ("balance_currency", currency),
            ("manager_id", manager),
            ("site_link", link),
            ("company", company),
            ("role", role),
            ("newsletter_subscription", newsletter),
            ("note", note),
        ];
        for (key, value) in fields {
            if let Some(v) = value {
                user.insert(key.to_owned(), v);
            }
        }
        (Value::Object(user), balance)
    })
}

fn valid_request() -> impl Strategy<Value = String> {
    (0usize..7)
        .prop_flat_map(|n| (0..n).map(valid_user).collect::<Vec<_>>())
        .prop_map(|users| {
            let (list, balances): (Vec<Value>, Vec<Option<String>>) = users.into_iter().unzip();
            let mut text =
                serde_json::to_string_pretty(&json!({"token": "t", "users": list})).unwrap();
            for (i, balance) in balances.iter().enumerate() {
                if let Some(raw) = balance {
                    text = text.replace(&format!("\"__BALANCE_{i}__\""), raw);
                }
            }
            text
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn export_json_reimports_to_the_same_store(request in valid_request()) {
        let users = serde_json::from_str::<Value>(&request).unwrap()["users"]
            .as_array()
            .unwrap()
            .len();
        let first = Env::new();
        let (exit, response) = first.import_text("request.json", &request);
        prop_assert_eq!(failures(&response), Vec::<String>::new(), "request: {}", request);
        prop_assert_eq!(exit, 0);
        prop_assert_eq!(&response["status"], "OK");
        let exported = first.export("json");
        let parsed: Value = serde_json::from_str(&exported).expect("export is JSON");
        prop_assert_eq!(parsed["users"].as_array().unwrap().len(), users);

        let second = Env::new();
        let (exit, response) = second.import_text("export.json", &exported);
        prop_assert_eq!(failures(&response), Vec::<String>::new(), "export: {}", exported);
        prop_assert_eq!(exit, 0);
        let again = second.export("json");
        prop_assert_eq!(&again, &exported);
        let strip = |ndjson: String| -> Vec<Value> {
            ndjson
                .lines()
                .map(|l| {
                    let mut v: Value = serde_json::from_str(l).unwrap();
                    for key in ["created_at", "updated_at", "source_file"] {
                        v.as_object_mut().unwrap().remove(key);
                    }
                    v
                })
                .collect()
        };
        prop_assert_eq!(strip(first.export("ndjson")), strip(second.export("ndjson")));

        // The export re-imported into the store it came from changes nothing.
        let before = first.export("ndjson");
        let (exit, response) = first.import_text("export.json", &exported);
        prop_assert_eq!(exit, 0);
        for message in messages(&response) {
            prop_assert!(message.ends_with("is already up to date, nothing changed"), "{}", message);
        }
        prop_assert_eq!(first.export("ndjson"), before);
    }
}

// ---------------------------------------------------------------------------------
// The reader and the validator never panic, whatever the bytes.

/// Runs every library entry point a request goes through on `bytes`.
fn exercise(bytes: &[u8]) {
    let envelope = request::envelope(&mut request::Source::new(bytes, u64::MAX));
    let mut validator = Validator::new();
    let mut seen = 0u64;
    let mut source = request::Source::new(bytes, u64::MAX);
    let walked = request::for_each_user(&mut source, |index, element| {
        assert_eq!(index, seen, "users are walked in order");
        seen += 1;
        match validator.user(index, element) {
            Verdict::Valid(patch) => {
                let _ = patch.merge(None);
            }
            Verdict::Rejected(problems) => {
                assert!(!problems.is_empty(), "a rejection without a reason");
                for problem in problems {
                    let _ = problem.text(Lang::En);
                    let _ = problem.code();
                }
            }
        }
        Ok(())
    });
    match envelope {
        Ok(envelope) => {
            assert!(walked.is_ok(), "an accepted text failed to walk");
            assert_eq!(seen, envelope.users, "walk and envelope disagree");
        }
        Err(request::Unread::Bad(message)) => {
            let _ = message.text(Lang::En);
        }
        Err(request::Unread::Io(e)) => panic!("reading from memory failed: {e}"),
    }
}

const KEYS: [&str; 24] = [
    "title",
    "email",
    "phone",
    "country",
    "city",
    "address",
    "discount_card",
    "discount",
    "active",
    "date_limit",
    "status",
    "customer_group_id",
    "balance",
    "balance_currency",
    "manager_id",
    "site_link",
    "company",
    "role",
    "newsletter_subscription",
    "note",
    "users",
    "token",
    "",
    "\u{0}x",
];

/// Arbitrary JSON built from the request's own vocabulary, so that the validator sees
/// every field with every kind of value.
fn json_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        "-?[0-9]{1,30}(\\.[0-9]{0,30})?([eE][+-]?[0-9]{1,4})?",
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        prop::sample::select(vec![
            "\"+380631234567\"",
            "\"a@b.co\"",
            "\" A@B.CO \"",
            "\"2019-02-29\"",
            "\"2020-02-29\"",
            "\"https://x.com\"",
            "\"uah\"",
            "\"   \"",
            "\"\\u0000\"",
            "\"\\ud800\"",
            "1e400",
            "-0",
            "100.0000001",
        ])
        .prop_map(str::to_owned),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((prop::sample::select(KEYS.to_vec()), inner), 0..8).prop_map(
                |fields| {
                    let body: Vec<String> = fields
                        .into_iter()
                        .map(|(k, v)| format!("{}:{v}", serde_json::to_string(k).unwrap()))
                        .collect();
                    format!("{{{}}}", body.join(","))
                }
            ),
        ]
    })
}

/// A request-shaped document, sometimes cut short or with a byte changed.
fn requestish() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(json_value(), 0..6),
        any::<Option<String>>(),
        any::<prop::sample::Index>(),
        prop_oneof![Just(0u8), Just(1u8), Just(2u8), Just(3u8)],
        any::<u8>(),
    )
        .prop_map(|(users, token, at, mutation, byte)| {
            let token = token
                .map(|t| format!("\"token\":{},", serde_json::to_string(&t).unwrap()))
                .unwrap_or_default();
            let mut bytes = format!("{{{token}\"users\":[{}]}}", users.join(",")).into_bytes();
            let at = at.index(bytes.len());
            match mutation {
                1 => bytes.truncate(at),
                2 => bytes[at] = byte,
                3 => bytes.insert(at, byte),
                _ => {}
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
        let mut with_bom = b"\xEF\xBB\xBF".to_vec();
        with_bom.extend_from_slice(&bytes);
        exercise(&with_bom);
    }

    #[test]
    fn arbitrary_strings_never_panic(text in any::<String>()) {
        exercise(text.as_bytes());
        exercise(format!("{{\"users\":[{text}]}}").as_bytes());
        exercise(format!("{{\"users\":[{{\"title\":{text}}}]}}").as_bytes());
    }

    #[test]
    fn request_shaped_input_never_panics(bytes in requestish()) {
        exercise(&bytes);
    }
}
