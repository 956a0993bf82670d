//! The field rules of SPEC §1, the response format of SPEC §3 and the exit codes of
//! SPEC §6, checked end to end: every test runs the built `userdrop` binary on request
//! files in a temporary folder and reads back the response files and `get` output.

mod common;

use assert_cmd::Command;
use serde_json::{Value, json};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// The email every single-user helper call uses unless the test gives its own.
const EMAIL: &str = "ivan@mail.net";

/// A temporary working folder with a store in `data/` and request files beside it.
struct Env {
    dir: TempDir,
    files: Cell<u32>,
    /// The PostgreSQL database of the test (USERDROP_TEST_ENGINE=postgres), kept for
    /// as long as the test; `None` on sled.
    _store: Option<common::Database>,
}

/// What one `import` of one file gave.
struct Outcome {
    exit: i32,
    response: Value,
}

impl Outcome {
    fn status(&self) -> &str {
        self.response["status"]
            .as_str()
            .unwrap_or_else(|| panic!("no status in {}", self.response))
    }

    fn log(&self) -> &Vec<Value> {
        self.response["response"]["log"]
            .as_array()
            .unwrap_or_else(|| panic!("no log array in {}", self.response))
    }

    /// The codes of `log[i]`.
    fn codes(&self, i: usize) -> Vec<u64> {
        infos(&self.log()[i])
            .iter()
            .map(|e| e["code"].as_u64().expect("a numeric code"))
            .collect()
    }

    /// The messages of `log[i]`.
    fn messages(&self, i: usize) -> Vec<String> {
        infos(&self.log()[i])
            .iter()
            .map(|e| e["message"].as_str().expect("a message").to_owned())
            .collect()
    }

    /// `response.message` of an `ERROR` response.
    fn message(&self) -> &str {
        self.response["response"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no response.message in {}", self.response))
    }

    /// Asserts the shape of an `ERROR` response and returns its message.
    fn assert_error(&self) -> &str {
        assert_eq!(self.status(), "ERROR", "{}", self.response);
        assert!(
            self.log().is_empty(),
            "log must be empty: {}",
            self.response
        );
        assert_eq!(self.exit, 3, "exit code of an ERROR file");
        let m = self.message();
        assert!(!m.is_empty());
        m
    }
}

fn infos(entry: &Value) -> &Vec<Value> {
    entry["info"]
        .as_array()
        .unwrap_or_else(|| panic!("log entry without info array: {entry}"))
}

/// The binary, on this test's store (common::userdrop).
fn bin() -> Command {
    common::userdrop()
}

impl Env {
    fn new() -> Env {
        Env {
            dir: TempDir::new().expect("a temporary folder"),
            files: Cell::new(0),
            _store: common::fresh_store(),
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Writes `bytes` as a new request file with a name not used before.
    fn write(&self, bytes: &[u8]) -> PathBuf {
        let n = self.files.get() + 1;
        self.files.set(n);
        let path = self.dir.path().join(format!("req{n:04}.json"));
        std::fs::write(&path, bytes).expect("write the request");
        path
    }

    /// Runs `userdrop import --db DATA [extra] FILE`, returning the exit code and the
    /// parsed response file.
    fn import_path(&self, path: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Outcome {
        let mut cmd = bin();
        cmd.arg("import")
            .arg("--db")
            .arg(self.db())
            .args(extra)
            .arg(path);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run userdrop import");
        let exit = out.status.code().expect("an exit code");
        let response_path = response_path(path);
        let text = std::fs::read_to_string(&response_path).unwrap_or_else(|e| {
            panic!(
                "no response {} (exit {exit}): {e}\nstderr: {}",
                response_path.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let response = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("response is not JSON ({e}): {text}"));
        Outcome { exit, response }
    }

    fn import_bytes(&self, bytes: &[u8], extra: &[&str]) -> Outcome {
        let path = self.write(bytes);
        self.import_path(&path, extra, &[])
    }

    fn import(&self, request: &Value) -> Outcome {
        self.import_bytes(request.to_string().as_bytes(), &[])
    }

    fn import_users(&self, users: Vec<Value>) -> Outcome {
        self.import(&json!({ "users": users }))
    }

    /// Imports a file with this one user and returns the codes of its log entry.
    fn codes(&self, user: Value) -> Vec<u64> {
        let out = self.import_users(vec![user.clone()]);
        assert_eq!(
            out.log().len(),
            1,
            "one log entry for {user}: {}",
            out.response
        );
        let codes = out.codes(0);
        let expected_status = if codes == [0] { "OK" } else { "WARNING" };
        assert_eq!(out.status(), expected_status, "{}", out.response);
        assert_eq!(out.exit, if codes == [0] { 0 } else { 3 }, "exit code");
        codes
    }

    /// `userdrop get EMAIL`: the stored user, or `None` when `get` exits 1.
    fn get(&self, email: &str) -> Option<Value> {
        let out = bin()
            .arg("get")
            .arg("--db")
            .arg(self.db())
            .arg(email)
            .output()
            .expect("run userdrop get");
        match out.status.code() {
            Some(0) => Some(serde_json::from_slice(&out.stdout).expect("get prints JSON")),
            Some(1) => None,
            other => panic!("get exited with {other:?}"),
        }
    }

    /// `get` output as text, for checks of exact number digits.
    fn get_text(&self, email: &str) -> String {
        let out = bin()
            .arg("get")
            .arg("--db")
            .arg(self.db())
            .arg(email)
            .output()
            .expect("run userdrop get");
        assert_eq!(out.status.code(), Some(0), "get {email}");
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }
}

fn response_path(request: &Path) -> PathBuf {
    let name = request.file_name().unwrap().to_str().unwrap();
    let stem = name.strip_suffix(".json").unwrap();
    request.with_file_name(format!("{stem}.response.json"))
}

/// A valid user with `field` set to `value` (a dotted name goes into `discount_card`).
fn with(field: &str, value: Value) -> Value {
    let mut user = json!({"title": "Ivanov Ivan", "email": EMAIL});
    match field.strip_prefix("discount_card.") {
        Some(inner) => user["discount_card"] = json!({ inner: value }),
        None => user[field] = value,
    }
    user
}

/// Asserts every good value is accepted and every bad one rejected with code 2 alone,
/// the bad ones against a fresh store so that nothing can be stored by them.
fn check_field(field: &str, good: &[Value], bad: &[Value]) {
    let env = Env::new();
    for v in bad {
        assert_eq!(env.codes(with(field, v.clone())), [2], "{field} = {v}");
    }
    assert_eq!(env.get(EMAIL), None, "a rejected {field} stored the user");
    for v in good {
        assert_eq!(env.codes(with(field, v.clone())), [0], "{field} = {v}");
    }
}

fn chars(c: char, n: usize) -> String {
    std::iter::repeat_n(c, n).collect()
}

// ---------------------------------------------------------------- §1: title, email

#[test]
fn title_missing_empty_null_is_code_1() {
    let env = Env::new();
    assert_eq!(env.codes(json!({"email": EMAIL})), [1]);
    assert_eq!(env.codes(json!({"title": "", "email": EMAIL})), [1]);
    assert_eq!(env.codes(json!({"title": "  \t ", "email": EMAIL})), [1]);
    assert_eq!(env.codes(json!({"title": null, "email": EMAIL})), [1]);
    assert_eq!(env.get(EMAIL), None);
}

#[test]
fn title_length_limit_is_255_characters() {
    let env = Env::new();
    assert_eq!(env.codes(with("title", json!(chars('t', 256)))), [2]);
    assert_eq!(env.codes(with("title", json!(chars('ї', 256)))), [2]);
    assert_eq!(env.get(EMAIL), None);
    // Characters, not bytes: 255 two-byte letters fit.
    assert_eq!(env.codes(with("title", json!(chars('ї', 255)))), [0]);
    assert_eq!(env.get(EMAIL).unwrap()["title"], json!(chars('ї', 255)));
    assert_eq!(env.codes(with("title", json!(chars('t', 255)))), [0]);
}

#[test]
fn title_is_trimmed() {
    let env = Env::new();
    assert_eq!(env.codes(with("title", json!("  Ivanov Ivan \n"))), [0]);
    assert_eq!(env.get(EMAIL).unwrap()["title"], "Ivanov Ivan");
}

#[test]
fn email_missing_empty_null_is_code_1() {
    let env = Env::new();
    assert_eq!(env.codes(json!({"title": "T"})), [1]);
    assert_eq!(env.codes(json!({"title": "T", "email": "   "})), [1]);
    assert_eq!(env.codes(json!({"title": "T", "email": null})), [1]);
    assert_eq!(env.codes(json!({})), [1, 1]);
}

#[test]
fn seed_user_without_title_and_bad_email_gets_codes_1_and_2() {
    let env = Env::new();
    let out = env.import_users(vec![json!({"email": "some@email"})]);
    assert_eq!(out.codes(0), [1, 2]);
    assert_eq!(
        out.messages(0),
        [
            "Mandatory field title is missing",
            "The email field (some@email) is set incorrectly"
        ]
    );
}

#[test]
fn email_bad_values_are_code_2() {
    let long_local = format!("{}@example.com", chars('a', 65));
    let domain_255 = format!(
        "{}@{}.{}.{}.com",
        chars('a', 64),
        chars('b', 63),
        chars('c', 63),
        chars('d', 58)
    );
    assert_eq!(domain_255.len(), 255);
    let env = Env::new();
    for bad in [
        "some@email",
        "a@b",
        "user@localhost",
        long_local.as_str(),
        domain_255.as_str(),
        "no-at-sign.example.com",
        "@example.com",
        "a@@example.com",
        "a b@example.com",
        "a@-example.com",
        "a@example..com",
        ".a@example.com",
    ] {
        assert_eq!(
            env.codes(json!({"title": "T", "email": bad})),
            [2],
            "email {bad:?}"
        );
    }
    assert_eq!(env.get("some@email"), None);
}

#[test]
fn email_good_values_and_boundaries() {
    let local_64 = format!("{}@example.com", chars('a', 64));
    let total_254 = format!(
        "{}@{}.{}.{}.com",
        chars('a', 64),
        chars('b', 63),
        chars('c', 63),
        chars('d', 57)
    );
    assert_eq!(total_254.len(), 254);
    let env = Env::new();
    for good in [
        "ivan@mail.net",
        "a@b.co",
        "first.last+tag@sub.example.com.ua",
        local_64.as_str(),
        total_254.as_str(),
    ] {
        assert_eq!(
            env.codes(json!({"title": "T", "email": good})),
            [0],
            "email {good:?}"
        );
        assert_eq!(env.get(good).unwrap()["email"], good);
    }
}

#[test]
fn email_is_trimmed_and_lower_cased() {
    let env = Env::new();
    let out = env.import_users(vec![json!({"title": "T", "email": "  Ivan@Mail.NET "})]);
    assert_eq!(out.codes(0), [0]);
    assert_eq!(out.messages(0), ["User ivan@mail.net added successfully"]);
    let stored = env
        .get("ivan@mail.net")
        .expect("stored under the lower-case email");
    assert_eq!(stored["email"], "ivan@mail.net");
    assert!(env.get("IVAN@MAIL.NET").is_some());
    // The same user in another case is an update, not a second user.
    let out = env.import_users(vec![json!({"title": "New", "email": "IVAN@mail.net"})]);
    assert_eq!(out.codes(0), [0]);
    assert_eq!(out.messages(0), ["User ivan@mail.net updated successfully"]);
    assert_eq!(env.get(EMAIL).unwrap()["title"], "New");
}

// ---------------------------------------------------------------- §1: other fields

#[test]
fn phone_rules_and_separators_removed() {
    check_field(
        "phone",
        &[
            json!("+380631234567"),
            json!("+1234567"),
            json!("+123456789012345"),
        ],
        &[
            json!("380631234567"),
            json!("+123456"),
            json!("+1234567890123456"),
            json!("+38063abc4567"),
            json!("++380631234567"),
            json!("+"),
            json!(380631234567u64),
        ],
    );
    let env = Env::new();
    assert_eq!(
        env.codes(with("phone", json!(" +38 (063) 123-45.67 "))),
        [0]
    );
    assert_eq!(env.get(EMAIL).unwrap()["phone"], "+380631234567");
}

#[test]
fn country_city_company_role_limit_255() {
    for field in ["country", "city", "company", "role"] {
        check_field(
            field,
            &[
                json!("Kyiv"),
                json!(chars('x', 255)),
                json!(chars('ї', 255)),
            ],
            &[
                json!(chars('x', 256)),
                json!(3),
                json!(true),
                json!(["Kyiv"]),
            ],
        );
    }
}

#[test]
fn address_limit_1000() {
    check_field(
        "address",
        &[json!("Khreschatyk St, 22"), json!(chars('a', 1000))],
        &[json!(chars('a', 1001)), json!(22)],
    );
}

#[test]
fn note_limit_2000() {
    check_field(
        "note",
        &[json!("VIP"), json!(chars('n', 2000))],
        &[json!(chars('n', 2001)), json!({"text": "VIP"})],
    );
}

#[test]
fn text_fields_are_stored_trimmed() {
    let env = Env::new();
    let user = json!({
        "title": "T", "email": EMAIL, "country": " Ukraine ", "city": "\tKyiv\n",
        "address": "  Khreschatyk St, 22  ", "company": " ACME ", "role": " buyer ",
        "note": "  VIP  ",
    });
    assert_eq!(env.codes(user), [0]);
    let s = env.get(EMAIL).unwrap();
    assert_eq!(s["country"], "Ukraine");
    assert_eq!(s["city"], "Kyiv");
    assert_eq!(s["address"], "Khreschatyk St, 22");
    assert_eq!(s["company"], "ACME");
    assert_eq!(s["role"], "buyer");
    assert_eq!(s["note"], "VIP");
}

#[test]
fn empty_after_trim_counts_as_absent() {
    let env = Env::new();
    // On a new user, a blank field is simply not stored.
    let user = json!({"title": "T", "email": EMAIL, "city": "   ", "phone": " ",
                      "site_link": "", "balance_currency": "  "});
    assert_eq!(env.codes(user), [0]);
    let s = env.get(EMAIL).unwrap();
    for field in ["city", "phone", "site_link", "balance_currency"] {
        assert!(s.get(field).is_none(), "{field} stored: {s}");
    }
    // On an update, a blank field keeps the stored value as an absent one would.
    assert_eq!(env.codes(with("city", json!("Kyiv"))), [0]);
    assert_eq!(env.codes(with("city", json!("  "))), [0]);
    assert_eq!(env.get(EMAIL).unwrap()["city"], "Kyiv");
}

#[test]
fn discount_range_0_to_100_fractional_ok() {
    check_field(
        "discount_card.discount",
        &[json!(0), json!(100), json!(2.5), json!(99.99), json!(3)],
        &[
            json!(101),
            json!(-1),
            json!(100.01),
            json!("3"),
            json!(true),
        ],
    );
    let env = Env::new();
    assert_eq!(env.codes(with("discount_card.discount", json!(2.5))), [0]);
    assert_eq!(env.get(EMAIL).unwrap()["discount_card"]["discount"], 2.5);
}

#[test]
fn discount_card_active_is_boolean() {
    check_field(
        "discount_card.active",
        &[json!(true), json!(false)],
        &[json!("true"), json!(1), json!(0)],
    );
    let env = Env::new();
    assert_eq!(env.codes(with("discount_card.active", json!(false))), [0]);
    assert_eq!(env.get(EMAIL).unwrap()["discount_card"]["active"], false);
}

#[test]
fn date_limit_is_a_real_yyyy_mm_dd_date() {
    check_field(
        "discount_card.date_limit",
        &[
            json!("2020-02-29"),
            json!("2019-01-01"),
            json!("2019-12-31"),
        ],
        &[
            json!("2019-02-30"),
            json!("2019-02-29"),
            json!("2019-1-1"),
            json!("2019/01/01"),
            json!("01-01-2019"),
            json!("2019-13-01"),
            json!("2019-01-01T00:00:00Z"),
            json!("tomorrow"),
            json!(20190101),
        ],
    );
    let env = Env::new();
    assert_eq!(
        env.codes(with("discount_card.date_limit", json!(" 2020-02-29 "))),
        [0]
    );
    assert_eq!(
        env.get(EMAIL).unwrap()["discount_card"]["date_limit"],
        "2020-02-29"
    );
}

#[test]
fn card_status_is_integer_1_to_3() {
    check_field(
        "discount_card.status",
        &[json!(1), json!(2), json!(3)],
        &[
            json!(4),
            json!(0),
            json!(-1),
            json!(1.0),
            json!("1"),
            json!(1e0),
        ],
    );
    // `1.0` written literally (serde_json's json! may print 1.0 differently).
    let env = Env::new();
    let out = env.import_bytes(
        br#"{"users":[{"title":"T","email":"ivan@mail.net","discount_card":{"status":1.0}},
                      {"title":"T","email":"b@mail.net","discount_card":{"status":1e0}}]}"#,
        &[],
    );
    assert_eq!(out.codes(0), [2]);
    assert_eq!(out.codes(1), [2]);
    assert_eq!(env.codes(with("discount_card.status", json!(2))), [0]);
    assert_eq!(env.get(EMAIL).unwrap()["discount_card"]["status"], 2);
}

#[test]
fn discount_card_unknown_key_and_wrong_type() {
    check_field(
        "discount_card.colour",
        &[],
        &[json!("gold"), json!(1), json!(null)],
    );
    check_field(
        "discount_card",
        &[
            json!({}),
            json!({"discount": 3, "active": true, "date_limit": "2019-01-01", "status": 1}),
        ],
        &[json!("gold"), json!(3), json!([1]), json!(true)],
    );
}

#[test]
fn customer_group_id_and_manager_id_at_least_1() {
    for field in ["customer_group_id", "manager_id"] {
        check_field(
            field,
            &[json!(1), json!(42), json!(9_007_199_254_740_993u64)],
            &[json!(0), json!(-1), json!(1.5), json!("3"), json!(true)],
        );
        let env = Env::new();
        let out = env.import_bytes(
            format!(r#"{{"users":[{{"title":"T","email":"ivan@mail.net","{field}":1.0}}]}}"#)
                .as_bytes(),
            &[],
        );
        assert_eq!(out.codes(0), [2], "{field} = 1.0");
        assert_eq!(env.codes(with(field, json!(7))), [0]);
        assert_eq!(env.get(EMAIL).unwrap()[field], 7);
    }
}

#[test]
fn balance_any_number_stored_exactly() {
    check_field(
        "balance",
        &[json!(0), json!(-12.5), json!(1000000), json!(0.1)],
        &[json!("100"), json!(true), json!([1]), json!({"uah": 1})],
    );
    let env = Env::new();
    let out = env.import_bytes(
        br#"{"users":[{"title":"T","email":"ivan@mail.net","balance":-12345678901234567890.123456789}]}"#,
        &[],
    );
    assert_eq!(out.codes(0), [0]);
    let text = env.get_text(EMAIL);
    assert!(
        text.contains("-12345678901234567890.123456789"),
        "balance not stored exactly as written: {text}"
    );
    // Beyond f64: no consumer of the export could read it, so it is refused.
    let out = env.import_bytes(
        br#"{"users":[{"title":"T","email":"ivan@mail.net","balance":1e400}]}"#,
        &[],
    );
    assert_eq!(out.codes(0), [2]);
    assert!(
        out.messages(0)[0].contains("too large"),
        "{:?}",
        out.messages(0)
    );
}

#[test]
fn balance_currency_three_letters_upper_cased() {
    check_field(
        "balance_currency",
        &[json!("UAH"), json!("usd"), json!(" eur ")],
        &[
            json!("UA1"),
            json!("UA"),
            json!("UAHH"),
            json!("ГРН"),
            json!(980),
        ],
    );
    let env = Env::new();
    assert_eq!(env.codes(with("balance_currency", json!("uah"))), [0]);
    assert_eq!(env.get(EMAIL).unwrap()["balance_currency"], "UAH");
}

#[test]
fn site_link_absolute_http_or_https() {
    check_field(
        "site_link",
        &[
            json!("https://example.com/shop?id=1"),
            json!("http://example.com"),
        ],
        &[
            json!("javascript:alert(1)"),
            json!("ftp://example.com/file"),
            json!("example.com"),
            json!("https://"),
            json!("/relative/path"),
            json!("mailto:ivan@mail.net"),
            json!(1),
        ],
    );
    let env = Env::new();
    assert_eq!(
        env.codes(with("site_link", json!(" https://acme.example/ "))),
        [0]
    );
    assert_eq!(
        env.get(EMAIL).unwrap()["site_link"],
        "https://acme.example/"
    );
}

#[test]
fn newsletter_subscription_is_boolean() {
    check_field(
        "newsletter_subscription",
        &[json!(true), json!(false)],
        &[json!("yes"), json!(1), json!("true")],
    );
    let env = Env::new();
    assert_eq!(env.codes(with("newsletter_subscription", json!(true))), [0]);
    assert_eq!(env.get(EMAIL).unwrap()["newsletter_subscription"], true);
}

#[test]
fn full_seed_user_is_stored_with_metadata() {
    let env = Env::new();
    let path = env.write(
        json!({"users": [{
            "title": "Ivanov Ivan", "email": "ivan@mail.net", "phone": "+380631234567",
            "country": "Ukraine", "city": "Kyiv", "address": "Khreschatyk St, 22",
            "discount_card": {"discount": 3, "active": true, "date_limit": "2019-01-01", "status": 1},
            "customer_group_id": 2, "balance": 100.5, "balance_currency": "UAH",
            "manager_id": 5, "site_link": "https://ivan.example", "company": "ACME",
            "role": "buyer", "newsletter_subscription": true, "note": "VIP"
        }]})
        .to_string()
        .as_bytes(),
    );
    let out = env.import_path(&path, &[], &[]);
    assert_eq!(out.status(), "OK");
    assert_eq!(out.exit, 0);
    assert_eq!(out.codes(0), [0]);
    let s = env.get(EMAIL).unwrap();
    assert_eq!(s["phone"], "+380631234567");
    assert_eq!(s["discount_card"]["date_limit"], "2019-01-01");
    assert_eq!(s["customer_group_id"], 2);
    assert_eq!(s["manager_id"], 5);
    assert_eq!(s["balance"], 100.5);
    assert_eq!(s["note"], "VIP");
    assert_eq!(
        s["source_file"].as_str(),
        path.file_name().unwrap().to_str()
    );
    for stamp in ["created_at", "updated_at"] {
        let t = s[stamp]
            .as_str()
            .unwrap_or_else(|| panic!("no {stamp}: {s}"));
        assert!(
            t.ends_with('Z') || t.ends_with("+00:00"),
            "{stamp} is not UTC RFC 3339: {t}"
        );
        assert!(t.len() >= 20 && t.as_bytes()[10] == b'T', "{stamp}: {t}");
    }
}

// ---------------------------------------------------------------- types and shape

#[test]
fn wrong_types_are_code_2() {
    let env = Env::new();
    for (field, value) in [
        ("title", json!(3)),
        ("title", json!(["Ivan"])),
        ("email", json!(3)),
        ("phone", json!(380631234567u64)),
        ("city", json!(3)),
        ("country", json!(false)),
        ("balance", json!("3")),
        ("customer_group_id", json!("3")),
        ("manager_id", json!("3")),
        ("newsletter_subscription", json!("true")),
        ("discount_card.discount", json!("3")),
        ("discount_card.status", json!("1")),
        ("discount_card.active", json!("true")),
        ("discount_card.date_limit", json!(20190101)),
    ] {
        let user = if field == "email" {
            json!({"title": "T", "email": value})
        } else {
            with(field, value.clone())
        };
        assert_eq!(env.codes(user), [2], "{field} = {value}");
    }
    assert_eq!(env.get(EMAIL), None);
}

#[test]
fn unknown_key_is_code_2() {
    let env = Env::new();
    assert_eq!(env.codes(with("nickname", json!("Vanya"))), [2]);
    assert_eq!(env.codes(with("Title", json!("T"))), [2]);
    assert_eq!(env.get(EMAIL), None);
}

#[test]
fn user_that_is_not_an_object_is_code_2() {
    let env = Env::new();
    let out = env.import_users(vec![
        json!("ivan@mail.net"),
        json!(3),
        json!(null),
        json!([{"title": "T", "email": EMAIL}]),
        json!(true),
    ]);
    assert_eq!(out.status(), "WARNING");
    assert_eq!(out.exit, 3);
    assert_eq!(out.log().len(), 5);
    for i in 0..5 {
        assert_eq!(out.codes(i), [2], "users[{i}]");
    }
    assert_eq!(env.get(EMAIL), None);
}

#[test]
fn every_problem_of_a_user_is_listed() {
    let env = Env::new();
    let out = env.import_users(vec![json!({
        "email": "ivan@mail.net", "phone": "123", "discount_card": {"status": 9},
        "nickname": "x"
    })]);
    let mut codes = out.codes(0);
    codes.sort_unstable();
    assert_eq!(codes, [1, 2, 2, 2], "{}", out.response);
}

#[test]
fn repeated_key_in_a_user_is_code_2() {
    let env = Env::new();
    let out = env.import_bytes(
        br#"{"users":[{"title":"A","email":"ivan@mail.net","city":"Kyiv","city":"Lviv"}]}"#,
        &[],
    );
    assert_eq!(out.codes(0), [2], "{}", out.response);
    assert_eq!(env.get(EMAIL), None);
}

#[test]
fn title_null_on_update_is_code_1_and_keeps_the_record() {
    let env = Env::new();
    assert_eq!(env.codes(with("title", json!("Ivan"))), [0]);
    assert_eq!(env.codes(json!({"title": null, "email": EMAIL})), [1]);
    assert_eq!(env.codes(json!({"title": "Ivan", "email": null})), [1]);
    assert_eq!(env.get(EMAIL).unwrap()["title"], "Ivan");
}

// ---------------------------------------------------------------- applying

#[test]
fn duplicates_by_case_first_applied_later_rejected_naming_first_index() {
    let env = Env::new();
    let out = env.import_users(vec![
        json!({"title": "Other", "email": "other@mail.net"}),
        json!({"title": "First", "email": "Dup@Mail.net"}),
        json!({"title": "Second", "email": " dup@mail.net "}),
        json!({"title": "Third", "email": "DUP@MAIL.NET"}),
    ]);
    assert_eq!(out.status(), "WARNING");
    assert_eq!(out.exit, 3);
    assert_eq!(out.codes(0), [0]);
    assert_eq!(out.codes(1), [0]);
    for i in [2, 3] {
        assert_eq!(out.codes(i), [2], "users[{i}]");
        let m = &out.messages(i)[0];
        assert!(
            m.contains("user 1"),
            "duplicate message must name index 1: {m}"
        );
        assert!(m.contains("dup@mail.net"), "{m}");
    }
    assert_eq!(env.get("dup@mail.net").unwrap()["title"], "First");
}

#[test]
fn rejected_user_writes_nothing() {
    let env = Env::new();
    let bad = json!({"title": "T", "email": EMAIL, "city": "Kyiv", "phone": "12"});
    assert_eq!(env.codes(bad), [2]);
    assert_eq!(env.get(EMAIL), None, "a rejected new user was stored");
    // A rejected update leaves every stored field as it was.
    assert_eq!(env.codes(with("city", json!("Kyiv"))), [0]);
    let before = env.get(EMAIL).unwrap();
    let bad = json!({"title": "Changed", "email": EMAIL, "city": "Lviv", "manager_id": 0});
    assert_eq!(env.codes(bad), [2]);
    let after = env.get(EMAIL).unwrap();
    assert_eq!(before, after, "a rejected update changed the record");
    // The get command's exit code itself.
    bin()
        .arg("get")
        .arg("--db")
        .arg(env.db())
        .arg("nobody@mail.net")
        .assert()
        .code(1);
}

#[test]
fn null_clears_an_optional_field_on_update() {
    let env = Env::new();
    assert_eq!(env.codes(with("city", json!("Kyiv"))), [0]);
    assert_eq!(env.codes(with("city", json!(null))), [0]);
    assert!(env.get(EMAIL).unwrap().get("city").is_none());
}

// ---------------------------------------------------------------- statuses

#[test]
fn status_ok_for_all_valid() {
    let env = Env::new();
    let out = env.import_users(vec![
        json!({"title": "A", "email": "a@mail.net"}),
        json!({"title": "B", "email": "b@mail.net"}),
    ]);
    assert_eq!(out.status(), "OK");
    assert_eq!(out.exit, 0);
    assert_eq!(out.log().len(), 2);
    assert_eq!(out.messages(0), ["User a@mail.net added successfully"]);
    assert!(out.response["response"].get("message").is_none());
}

#[test]
fn status_warning_for_mixed() {
    let env = Env::new();
    let out = env.import_users(vec![
        json!({"title": "A", "email": "a@mail.net"}),
        json!({"email": "some@email"}),
    ]);
    assert_eq!(out.status(), "WARNING");
    assert_eq!(out.exit, 3);
    assert_eq!(out.codes(0), [0]);
    assert_eq!(out.codes(1), [1, 2]);
    assert!(env.get("a@mail.net").is_some(), "the valid user is applied");
}

#[test]
fn empty_users_is_ok_with_empty_log() {
    let env = Env::new();
    let out = env.import(&json!({"users": []}));
    assert_eq!(out.status(), "OK");
    assert_eq!(out.exit, 0);
    assert!(out.log().is_empty());
}

#[test]
fn other_top_level_keys_are_ignored() {
    let env = Env::new();
    let out = env.import(
        &json!({"users": [{"title": "T", "email": EMAIL}], "extra": 1,
                                 "token": "anything"}),
    );
    assert_eq!(out.status(), "OK");
    assert_eq!(out.exit, 0);
}

#[test]
fn error_invalid_utf8_names_line_and_column() {
    let env = Env::new();
    let out = env.import_bytes(
        b"{\n\"users\": [{\"title\": \"\xff\", \"email\": \"a@b.co\"}]}",
        &[],
    );
    let m = out.assert_error();
    assert!(m.contains("UTF-8"), "{m}");
    assert!(m.contains("line 2"), "{m}");
    assert!(m.contains("column 22"), "{m}");
    assert_eq!(env.get("a@b.co"), None);
}

#[test]
fn error_syntax_error_names_line_and_column() {
    let env = Env::new();
    let out = env.import_bytes(
        b"{\n  \"users\": [\n    {\"title\": x, \"email\": \"a@b.co\"}\n  ]\n}",
        &[],
    );
    let m = out.assert_error();
    assert!(
        m.starts_with("Invalid JSON at line 3, column 15: "),
        "line and column of the bad byte: {m}"
    );
    assert!(
        m.len() > "Invalid JSON at line 3, column 15: ".len(),
        "a reason: {m}"
    );
    assert_eq!(env.get("a@b.co"), None);
}

#[test]
fn error_syntax_error_after_valid_users_applies_nothing() {
    let env = Env::new();
    let out = env.import_bytes(
        b"{\"users\": [{\"title\": \"T\", \"email\": \"a@b.co\"}, {\"title\": \"U\",,}]}",
        &[],
    );
    let m = out.assert_error();
    assert!(m.starts_with("Invalid JSON at line 1, column "), "{m}");
    assert_eq!(env.get("a@b.co"), None);
}

#[test]
fn error_truncated_file() {
    let env = Env::new();
    let out = env.import_bytes(
        b"{\"users\": [{\"title\": \"T\", \"email\": \"a@b.co\"}",
        &[],
    );
    let m = out.assert_error();
    assert!(m.starts_with("Invalid JSON at line 1, column "), "{m}");
    assert_eq!(env.get("a@b.co"), None);
}

#[test]
fn error_wrong_shapes() {
    let env = Env::new();
    for body in [
        r#"[{"title": "T", "email": "a@b.co"}]"#,
        r#"{"token": "x"}"#,
        r#"{"users": {"title": "T", "email": "a@b.co"}}"#,
        r#"{"users": "a@b.co"}"#,
        r#"{"users": null}"#,
        r#""users""#,
    ] {
        let out = env.import_bytes(body.as_bytes(), &[]);
        out.assert_error();
    }
    assert_eq!(env.get("a@b.co"), None);
}

#[test]
fn error_file_over_max_file_size() {
    let env = Env::new();
    let body = json!({"users": [{"title": "T", "email": "a@b.co"}]}).to_string();
    let out = env.import_bytes(body.as_bytes(), &["--max-file-size", "20"]);
    let m = out.assert_error();
    assert!(m.contains("too large"), "{m}");
    assert_eq!(env.get("a@b.co"), None);
    // At the limit exactly the file is accepted.
    let limit = body.len().to_string();
    let out = env.import_bytes(body.as_bytes(), &["--max-file-size", &limit]);
    assert_eq!(out.status(), "OK");
}

#[test]
fn utf8_bom_is_accepted() {
    let env = Env::new();
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(br#"{"users": [{"title": "Ivanov Ivan", "email": "ivan@mail.net"}]}"#);
    let out = env.import_bytes(&bytes, &[]);
    assert_eq!(out.status(), "OK", "{}", out.response);
    assert_eq!(out.exit, 0);
    assert_eq!(env.get(EMAIL).unwrap()["title"], "Ivanov Ivan");
}

// ---------------------------------------------------------------- §5 authorization

#[test]
fn token_missing_with_token_set_is_error() {
    let env = Env::new();
    let out = env.import_bytes(
        json!({"users": [{"title": "T", "email": EMAIL}]})
            .to_string()
            .as_bytes(),
        &["--token", "s3cret"],
    );
    let m = out.assert_error();
    assert!(m.starts_with("Authorization failed"), "{m}");
    assert!(!m.contains("s3cret"), "the token leaked: {m}");
    assert_eq!(env.get(EMAIL), None);
}

#[test]
fn token_wrong_with_token_set_is_error() {
    let env = Env::new();
    for token in [
        json!("wrong"),
        json!("s3cre"),
        json!("s3cret2"),
        json!(""),
        json!(1),
    ] {
        let body = json!({"token": token, "users": [{"title": "T", "email": EMAIL}]});
        let out = env.import_bytes(body.to_string().as_bytes(), &["--token", "s3cret"]);
        let m = out.assert_error();
        assert!(m.starts_with("Authorization failed"), "{m}");
        assert!(!m.contains("s3cret"), "the token leaked: {m}");
    }
    assert_eq!(env.get(EMAIL), None);
}

#[test]
fn token_accepted() {
    let env = Env::new();
    let body = json!({"token": "two", "users": [{"title": "T", "email": EMAIL}]});
    let out = env.import_bytes(
        body.to_string().as_bytes(),
        &["--token", "one", "--token", "two"],
    );
    assert_eq!(out.status(), "OK", "{}", out.response);
    assert_eq!(out.exit, 0);
    assert!(env.get(EMAIL).is_some());
    assert!(
        !out.response.to_string().contains("two\""),
        "{}",
        out.response
    );
}

#[test]
fn tokens_from_environment() {
    let env = Env::new();
    let ok = env.write(
        json!({"token": "beta", "users": [{"title": "T", "email": "a@mail.net"}]})
            .to_string()
            .as_bytes(),
    );
    let out = env.import_path(&ok, &[], &[("USERDROP_TOKENS", "alpha,beta")]);
    assert_eq!(out.status(), "OK", "{}", out.response);
    let bad = env.write(
        json!({"token": "gamma", "users": [{"title": "T", "email": "b@mail.net"}]})
            .to_string()
            .as_bytes(),
    );
    let out = env.import_path(&bad, &[], &[("USERDROP_TOKENS", "alpha,beta")]);
    assert!(out.assert_error().starts_with("Authorization failed"));
    assert!(env.get("a@mail.net").is_some());
    assert_eq!(env.get("b@mail.net"), None);
}

// ---------------------------------------------------------------- §6 exit codes

#[test]
fn exit_0_when_every_file_ok() {
    let env = Env::new();
    let a = env.write(br#"{"users": [{"title": "A", "email": "a@mail.net"}]}"#);
    let b = env.write(br#"{"users": []}"#);
    bin()
        .arg("import")
        .arg("--db")
        .arg(env.db())
        .arg(&a)
        .arg(&b)
        .assert()
        .code(0);
    assert!(response_path(&a).is_file() && response_path(&b).is_file());
}

#[test]
fn exit_3_when_some_file_warning_or_error() {
    let env = Env::new();
    let ok = env.write(br#"{"users": [{"title": "A", "email": "a@mail.net"}]}"#);
    let warning = env.write(br#"{"users": [{"email": "some@email"}]}"#);
    let error = env.write(b"{not json");
    for second in [&warning, &error] {
        bin()
            .arg("import")
            .arg("--db")
            .arg(env.db())
            .arg(&ok)
            .arg(second)
            .assert()
            .code(3);
    }
}

#[test]
fn exit_1_for_missing_file() {
    let env = Env::new();
    let missing = env.dir.path().join("nothing-here.json");
    bin()
        .arg("import")
        .arg("--db")
        .arg(env.db())
        .arg(&missing)
        .assert()
        .code(1);
    assert!(!response_path(&missing).exists());
}

#[test]
fn exit_2_for_bad_usage() {
    let env = Env::new();
    let file = env.write(br#"{"users": []}"#);
    bin()
        .arg("import")
        .arg("--db")
        .arg(env.db())
        .arg("--no-such-flag")
        .arg(&file)
        .assert()
        .code(2);
    bin()
        .arg("import")
        .arg("--db")
        .arg(env.db())
        .assert()
        .code(2);
    bin()
        .arg("import")
        .arg("--db")
        .arg(env.db())
        .arg("--max-file-size")
        .arg("lots")
        .arg(&file)
        .assert()
        .code(2);
    assert!(
        !response_path(&file).exists(),
        "bad usage must process nothing"
    );
}
