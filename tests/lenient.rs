//! `--types lenient` (SPEC §1, "Loose producers") through the built binary: every
//! loose form of the table is accepted and stored as its converted value, refused in
//! strict mode with a message that names it and the flag, and nothing else loosens.
//! The mode comes from the flag, `USERDROP_TYPES` or the config key (reloaded on
//! SIGHUP), and `check` and `schema` follow it.

mod common;

use common::{Env, process, signal, userdrop};
use jsonschema::Validator;
use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Long enough for a loaded 2-core machine, short enough that a hang fails the test.
const LIMIT: Duration = Duration::from_secs(60);

/// One loose form: where it goes, its JSON text as a producer writes it, and what
/// the store must then hold there (`None`: nothing, the field absent).
struct Form {
    field: &'static str,
    written: &'static str,
    stored: Option<Value>,
    /// Words of the strict message that say which form it is.
    named: &'static str,
}

const QUOTED: &str = "a number written as a string";
const FRACTION: &str = "a whole number written with a fraction or an exponent";
const NUMBER_BOOLEAN: &str = "a boolean written as the number 0 or 1";
const STRING_BOOLEAN: &str = "a boolean written as a string";

fn form(field: &'static str, written: &'static str, stored: Value, named: &'static str) -> Form {
    Form {
        field,
        written,
        stored: Some(stored),
        named,
    }
}

/// Every row of SPEC §1's lenient table, each of its forms.
fn forms() -> Vec<Form> {
    vec![
        // integer: a string of ASCII digits (trimmed), a number with a zero fraction.
        form("discount_card.status", r#""3""#, json!(3), QUOTED),
        form("discount_card.status", r#"" 2 ""#, json!(2), QUOTED),
        form("discount_card.status", "1.0", json!(1), FRACTION),
        form("customer_group_id", r#""3""#, json!(3), QUOTED),
        form("customer_group_id", "3.0", json!(3), FRACTION),
        form("customer_group_id", "3e0", json!(3), FRACTION),
        form("manager_id", r#""7""#, json!(7), QUOTED),
        form("manager_id", "30e-1", json!(3), FRACTION),
        form(
            "manager_id",
            r#""18446744073709551615""#,
            json!(u64::MAX),
            QUOTED,
        ),
        // number: a string that is a JSON number once trimmed.
        form("discount_card.discount", r#""3""#, json!(3), QUOTED),
        form("discount_card.discount", r#"" 2.5 ""#, json!(2.5), QUOTED),
        form("balance", r#""-1250.75""#, json!(-1250.75), QUOTED),
        form("balance", r#""1e3""#, json!(1000.0), QUOTED),
        // boolean: 0, 1, "0", "1", "true", "false".
        form("newsletter_subscription", "0", json!(false), NUMBER_BOOLEAN),
        form("newsletter_subscription", "1", json!(true), NUMBER_BOOLEAN),
        form(
            "newsletter_subscription",
            r#""0""#,
            json!(false),
            STRING_BOOLEAN,
        ),
        form(
            "newsletter_subscription",
            r#""1""#,
            json!(true),
            STRING_BOOLEAN,
        ),
        form(
            "discount_card.active",
            r#""true""#,
            json!(true),
            STRING_BOOLEAN,
        ),
        form(
            "discount_card.active",
            r#""false""#,
            json!(false),
            STRING_BOOLEAN,
        ),
        form("discount_card.active", "1", json!(true), NUMBER_BOOLEAN),
        // discount_card: PHP's empty array, stored as no card.
        Form {
            field: "discount_card",
            written: "[]",
            stored: None,
            named: "an empty array (PHP's empty object) in place of an object",
        },
        // date_limit: DD.MM.YYYY, or YYYY-MM-DD and a space or T and a time.
        form(
            "discount_card.date_limit",
            r#""31.12.2025""#,
            json!("2025-12-31"),
            "a date written DD.MM.YYYY",
        ),
        form(
            "discount_card.date_limit",
            r#""29.02.2024""#,
            json!("2024-02-29"),
            "a date written DD.MM.YYYY",
        ),
        form(
            "discount_card.date_limit",
            r#""2025-12-31 00:00:00""#,
            json!("2025-12-31"),
            "a date with a time after it",
        ),
        form(
            "discount_card.date_limit",
            r#""2025-12-31T23:59:59.5+02:00""#,
            json!("2025-12-31"),
            "a date with a time after it",
        ),
        // phone: 00 for the leading +, Unicode spaces as separators.
        form(
            "phone",
            r#""00380631234567""#,
            json!("+380631234567"),
            "00 in place of the leading +",
        ),
        form(
            "phone",
            "\"0038 (063) 123-45-67\"",
            json!("+380631234567"),
            "00 in place of the leading +",
        ),
        form(
            "phone",
            "\"+38\u{a0}063\u{a0}123\u{a0}45\u{a0}67\"",
            json!("+380631234567"),
            "Unicode space",
        ),
        form(
            "phone",
            "\"+38\u{202f}063\u{2009}1234567\"",
            json!("+380631234567"),
            "Unicode space",
        ),
    ]
}

/// A user's JSON text with `field` (a dotted name goes into `discount_card`) written
/// as `written`, verbatim: `3e0` and `1.0` have no other way into a file.
fn user_text(email: &str, field: &str, written: &str) -> String {
    let value = match field.strip_prefix("discount_card.") {
        Some(inner) => format!(r#""discount_card":{{"{inner}":{written}}}"#),
        None => format!(r#""{field}":{written}"#),
    };
    format!(r#"{{"title":"Ivanov Ivan","email":"{email}",{value}}}"#)
}

fn email(i: usize) -> String {
    format!("user{i}@mail.net")
}

/// A request of one user a case, each with its own email.
fn request_of(users: &[(&str, &str)]) -> String {
    let users: Vec<String> = users
        .iter()
        .enumerate()
        .map(|(i, (field, written))| user_text(&email(i), field, written))
        .collect();
    format!(r#"{{"users":[{}]}}"#, users.join(","))
}

impl Env {
    /// Writes `text` as the request `name`.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        fs::write(&path, text).expect("write the request");
        path
    }

    /// `userdrop import --db DATA [extra] FILE` with `envs`: the exit code and the
    /// response written beside the file.
    fn import(&self, path: &Path, extra: &[&str], envs: &[(&str, &str)]) -> (i32, Value) {
        let mut cmd = userdrop();
        cmd.envs(self.store_vars());
        cmd.current_dir(self.dir.path())
            .env_remove("USERDROP_TYPES")
            .arg("import")
            .arg("--db")
            .arg(self.db())
            .args(extra)
            .arg(path)
            .timeout(LIMIT);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run userdrop import");
        let exit = out.status.code().unwrap_or_else(|| {
            panic!(
                "import ended by a signal: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (exit, read_response(path))
    }

    /// `userdrop check --db DATA [extra] FILE`: the would-be response it prints.
    fn check(&self, path: &Path, extra: &[&str]) -> Value {
        let out = userdrop()
            .envs(self.store_vars())
            .current_dir(self.dir.path())
            .env_remove("USERDROP_TYPES")
            .arg("check")
            .arg("--db")
            .arg(self.db())
            .args(extra)
            .arg(path)
            .timeout(LIMIT)
            .output()
            .expect("run userdrop check");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "check printed no JSON ({e}): {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// `userdrop get EMAIL` as text (exact digits), or `None` when it exits 1.
    fn get_text(&self, email: &str) -> Option<String> {
        let out = userdrop()
            .envs(self.store_vars())
            .args(["get", "--db"])
            .arg(self.db())
            .arg(email)
            .timeout(LIMIT)
            .output()
            .expect("run userdrop get");
        match out.status.code() {
            Some(0) => Some(String::from_utf8(out.stdout).expect("UTF-8 output")),
            Some(1) => None,
            other => panic!("get exited with {other:?}"),
        }
    }

    fn get(&self, email: &str) -> Option<Value> {
        self.get_text(email)
            .map(|text| serde_json::from_str(&text).expect("get prints JSON"))
    }
}

fn read_response(request: &Path) -> Value {
    let name = request
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a UTF-8 file name");
    let stem = name.strip_suffix(".json").expect("a .json request");
    let path = request.with_file_name(format!("{stem}.response.json"));
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("no response {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn log(response: &Value) -> &Vec<Value> {
    response["response"]["log"]
        .as_array()
        .unwrap_or_else(|| panic!("no log in {response}"))
}

/// The codes and messages of `log[i]`.
fn entry(response: &Value, i: usize) -> (Vec<u64>, Vec<String>) {
    let info = log(response)[i]["info"]
        .as_array()
        .unwrap_or_else(|| panic!("no info in {response}"));
    let codes = info.iter().filter_map(|e| e["code"].as_u64()).collect();
    let texts = info
        .iter()
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect();
    (codes, texts)
}

/// The value stored at `field` (dotted into the card) of a `get` record.
fn stored_at<'a>(record: &'a Value, field: &str) -> Option<&'a Value> {
    match field.strip_prefix("discount_card.") {
        Some(inner) => record.get("discount_card")?.get(inner),
        None => record.get(field),
    }
}

#[test]
fn every_loose_form_is_stored_as_its_value_with_types_lenient() {
    let forms = forms();
    let cases: Vec<(&str, &str)> = forms.iter().map(|f| (f.field, f.written)).collect();
    let env = Env::new();
    let path = env.file("loose.json", &request_of(&cases));
    let (exit, response) = env.import(&path, &["--types", "lenient"], &[]);
    assert_eq!(
        (exit, response["status"].as_str()),
        (0, Some("OK")),
        "{response}"
    );
    for (i, f) in forms.iter().enumerate() {
        let text = env
            .get_text(&email(i))
            .unwrap_or_else(|| panic!("{} = {} not stored", f.field, f.written));
        let record: Value = serde_json::from_str(&text).expect("get prints JSON");
        // Value equality tells 3 from 3.0 and true from 1: the type is checked too.
        assert_eq!(
            stored_at(&record, f.field),
            f.stored.as_ref(),
            "{} = {}: {record}",
            f.field,
            f.written
        );
        if f.field == "discount_card" {
            assert_eq!(record.get("discount_card"), None, "{record}");
        }
    }
    // The balance keeps the digits inside the string exactly, as a number.
    let balance = forms.iter().position(|f| f.written == r#""-1250.75""#);
    let text = balance.and_then(|i| env.get_text(&email(i)));
    assert!(
        text.as_deref()
            .is_some_and(|t| t.contains(r#""balance": -1250.75,"#)),
        "{text:?}"
    );
}

#[test]
fn every_loose_form_is_refused_in_strict_mode_naming_it_and_the_flag() {
    let forms = forms();
    let cases: Vec<(&str, &str)> = forms.iter().map(|f| (f.field, f.written)).collect();
    let env = Env::new();
    let path = env.file("loose.json", &request_of(&cases));
    // Strict is the default; saying so changes nothing.
    for extra in [&[][..], &["--types", "strict"]] {
        let (exit, response) = env.import(&path, extra, &[]);
        assert_eq!(exit, 3, "{response}");
        assert_eq!(response["status"], "WARNING");
        for (i, f) in forms.iter().enumerate() {
            let (codes, texts) = entry(&response, i);
            assert_eq!(codes, [2], "{} = {}: {texts:?}", f.field, f.written);
            let text = &texts[0];
            let found = format!("The {} field ({})", f.field, f.written);
            assert!(text.starts_with(&found), "{text} does not name {found}");
            assert!(text.contains(f.named), "{text} does not say {}", f.named);
            assert!(text.ends_with("--types lenient accepts it"), "{text}");
            assert_eq!(env.get(&email(i)), None, "a refused user was stored");
        }
    }
}

/// Values outside the loose forms, or whose converted value breaks the field's rule.
const STILL_REFUSED: [(&str, &str); 22] = [
    ("customer_group_id", r#""3a""#),
    ("newsletter_subscription", "2"),
    ("discount_card.active", r#""yes""#),
    ("discount_card.date_limit", r#""32.13.2025""#),
    ("phone", r#""0631234567""#),
    ("manager_id", r#""3.5""#),
    ("discount_card.status", r#""  ""#),
    ("customer_group_id", "3.5"),
    ("discount_card", "[1]"),
    ("discount_card.date_limit", r#""2025-12-31X""#),
    // The rule of the converted value.
    ("customer_group_id", r#""0""#),
    ("manager_id", "0.0"),
    ("discount_card.status", r#""4""#),
    ("discount_card.discount", r#""101""#),
    ("discount_card.date_limit", r#""29.02.2025""#),
    ("discount_card.date_limit", r#""2025-12-31 24:00""#),
    ("phone", r#""00123456""#),
    ("balance", r#""1e400""#),
    // Near the forms, but not among them.
    ("balance", r#""1,5""#),
    ("newsletter_subscription", "1.0"),
    ("newsletter_subscription", r#""TRUE""#),
    ("manager_id", r#""-3""#),
];

#[test]
fn values_outside_the_forms_stay_refused_in_both_modes() {
    let env = Env::new();
    let path = env.file("bad.json", &request_of(&STILL_REFUSED));
    let (_, strict) = env.import(&path, &[], &[]);
    let (exit, lenient) = env.import(&path, &["--types", "lenient"], &[]);
    assert_eq!(exit, 3, "{lenient}");
    for (i, (field, written)) in STILL_REFUSED.iter().enumerate() {
        for (mode, response) in [("strict", &strict), ("lenient", &lenient)] {
            let (codes, texts) = entry(response, i);
            assert_eq!(codes, [2], "{mode}: {field} = {written}: {texts:?}");
            assert!(texts[0].contains(field), "{mode}: {texts:?}");
            // The flag would not help, so the message does not offer it.
            assert!(!texts[0].contains("--types lenient"), "{mode}: {texts:?}");
        }
        assert_eq!(env.get(&email(i)), None, "{field} = {written} was stored");
    }
    // Lenient messages quote what was written and what they would have taken.
    let (_, texts) = entry(&lenient, 0);
    assert_eq!(
        texts,
        [
            r#"The customer_group_id field ("3a") is set incorrectly: expected a whole number, or a string of its digits"#
        ]
    );
    let (_, texts) = entry(&lenient, 4);
    assert_eq!(
        texts,
        [
            "The phone field (0631234567) is set incorrectly: expected + or 00 and 7 to 15 digits, with the country code"
        ]
    );
}

#[test]
fn a_user_with_a_loose_form_and_another_problem_is_refused_for_the_other() {
    let env = Env::new();
    let path = env.file(
        "mixed.json",
        r#"{"users":[
            {"title":"T","email":"a@mail.net","customer_group_id":"3","nickname":"x"},
            {"title":"T","email":"some@email","newsletter_subscription":1},
            {"email":"b@mail.net","discount_card":[]},
            {"title":"T","email":"c@mail.net","phone":"0038063","note":"ok"}
        ]}"#,
    );
    let (exit, response) = env.import(&path, &["--types", "lenient"], &[]);
    assert_eq!(exit, 3, "{response}");
    assert_eq!(entry(&response, 0).1, ["Unknown field nickname"]);
    assert_eq!(
        entry(&response, 1).1,
        ["The email field (some@email) is set incorrectly"]
    );
    assert_eq!(
        entry(&response, 2),
        (vec![1], vec!["Mandatory field title is missing".to_owned()])
    );
    assert_eq!(entry(&response, 3).0, [2]);
    for email in ["a@mail.net", "some@email", "b@mail.net", "c@mail.net"] {
        assert_eq!(env.get(email), None, "{email} was stored");
    }
}

#[test]
fn an_empty_array_for_the_card_keeps_the_stored_card() {
    let env = Env::new();
    let card = env.file(
        "card.json",
        r#"{"users":[{"title":"T","email":"a@mail.net","discount_card":{"discount":5,"status":1}}]}"#,
    );
    assert_eq!(env.import(&card, &[], &[]).0, 0);
    let php = env.file(
        "php.json",
        r#"{"users":[{"title":"T","email":"a@mail.net","discount_card":[ ],"customer_group_id":"2"}]}"#,
    );
    let (exit, response) = env.import(&php, &["--types", "lenient"], &[]);
    assert_eq!(exit, 0, "{response}");
    let record = env.get("a@mail.net").expect("stored");
    assert_eq!(record["discount_card"], json!({"discount": 5, "status": 1}));
    assert_eq!(record["customer_group_id"], json!(2));
}

/// A request that strict mode rejects and lenient mode takes whole.
const PHP_ROW: &str = r#"{"users":[{"title":"T","email":"a@mail.net","discount_card":[],
    "customer_group_id":"3","balance":"-1250.75","newsletter_subscription":"1"}]}"#;

fn status(response: &Value) -> &str {
    response["status"].as_str().unwrap_or_default()
}

#[test]
fn the_env_var_and_the_config_key_choose_the_mode_and_a_flag_wins() {
    let env = Env::new();
    let config = env.file("userdrop.toml", "types = \"lenient\"\n");
    let config = config.to_str().expect("a UTF-8 path");
    let lenient_env = [("USERDROP_TYPES", "lenient")];
    for (extra, envs, expected) in [
        (&[][..], &[][..], "WARNING"),
        (&[], &lenient_env[..], "OK"),
        (&["--config", config], &[], "OK"),
        (&["--types", "strict"], &lenient_env, "WARNING"),
        (&["--config", config, "--types", "strict"], &[], "WARNING"),
    ] {
        let path = env.file("php.json", PHP_ROW);
        let (_, response) = env.import(&path, extra, envs);
        assert_eq!(
            status(&response),
            expected,
            "{extra:?} {envs:?}: {response}"
        );
    }
    // `config` shows the mode and where it came from.
    let out = userdrop()
        .env_remove("USERDROP_TYPES")
        .args(["config", "--json", "--config", config])
        .output()
        .expect("run userdrop config");
    let shown: Value = serde_json::from_slice(&out.stdout).expect("config --json");
    assert_eq!(
        shown["settings"]["types"],
        json!({"value": "lenient", "source": "file"})
    );
    // A value that is not a mode is bad usage, naming the key.
    let bad = env.file("bad.toml", "types = \"loose\"\n");
    let out = userdrop()
        .current_dir(env.dir.path())
        .arg("check")
        .arg("--config")
        .arg(&bad)
        .arg(env.file("php.json", PHP_ROW))
        .output()
        .expect("run userdrop check");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("types") && stderr.contains("lenient"),
        "{stderr}"
    );
    let out = userdrop()
        .current_dir(env.dir.path())
        .args(["check", "--types", "loose"])
        .arg(env.file("php.json", PHP_ROW))
        .output()
        .expect("run userdrop check");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_follows_the_mode() {
    let env = Env::new();
    let path = env.file("php.json", PHP_ROW);
    let strict = env.check(&path, &[]);
    assert_eq!(status(&strict), "WARNING", "{strict}");
    assert_eq!(entry(&strict, 0).0, [2, 2, 2, 2]);
    let lenient = env.check(&path, &["--types", "lenient"]);
    assert_eq!(status(&lenient), "OK", "{lenient}");
    assert_eq!(entry(&lenient, 0).1, ["User a@mail.net added successfully"]);
    assert!(!env.db().exists(), "check created a store");
}

#[test]
fn a_file_cut_short_is_finished_in_the_mode_it_began_in() {
    let env = Env::new();
    let users: Vec<String> = (0..3)
        .map(|i| user_text(&email(i), "customer_group_id", r#""3""#))
        .collect();
    let path = env.file("big.json", &format!(r#"{{"users":[{}]}}"#, users.join(",")));
    let args = ["--types", "lenient", "--step-users", "1"];
    let crashed = userdrop()
        .env_remove("USERDROP_TYPES")
        .env("USERDROP_FAULT", "after-step")
        .arg("import")
        .arg("--db")
        .arg(env.db())
        .args(args)
        .arg(&path)
        .timeout(LIMIT)
        .output()
        .expect("run userdrop import");
    assert!(
        !crashed.status.success(),
        "the fault did not stop the import"
    );
    assert!(
        env.get(&email(0)).is_some(),
        "the first step was not committed"
    );
    // Restarted in strict mode, the rest of the file is still read leniently.
    let (exit, response) = env.import(&path, &[], &[]);
    assert_eq!((exit, status(&response)), (0, "OK"), "{response}");
    for i in 0..3 {
        assert_eq!(
            env.get(&email(i)).expect("stored")["customer_group_id"],
            json!(3)
        );
    }
    // A new file is judged in the mode of now.
    let again = env.file("again.json", &request_of(&[("manager_id", r#""4""#)]));
    assert_eq!(status(&env.import(&again, &[], &[]).1), "WARNING");
}

#[test]
fn sighup_reloads_the_mode_from_the_config_file() {
    let env = Env::new();
    let config = env.dir.path().join("userdrop.toml");
    fs::write(&config, "types = \"strict\"\n").expect("write the config");
    let mut child = process()
        .env_remove("USERDROP_TYPES")
        .args(["run", "--settle", "300", "--watch"])
        .arg(env.inbox())
        .arg("--db")
        .arg(env.db())
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the daemon");
    let respond = |name: &str| -> Value {
        let path = env.inbox().join(name);
        fs::write(
            &path,
            PHP_ROW.replace("a@mail.net", &format!("{name}@mail.net")),
        )
        .expect("write the request");
        let started = Instant::now();
        let response = env.inbox().join(name.replace(".json", ".response.json"));
        while !response.exists() {
            assert!(started.elapsed() < LIMIT, "no {response:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        read_response(&path)
    };
    assert_eq!(status(&respond("a.json")), "WARNING");
    fs::write(&config, "types = \"lenient\"\n").expect("rewrite the config");
    signal(&child, "-HUP");
    // The reload happens at the daemon's next wake-up (within 200 ms).
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(status(&respond("b.json")), "OK");
    signal(&child, "-TERM");
    assert_eq!(child.wait().expect("the daemon exits").code(), Some(0));
}

// ------------------------------------------------------------------ languages

/// The response with every message text taken out: what no language may change.
fn skeleton(response: &Value) -> Value {
    match response {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if k == "message" {
                        Value::Null
                    } else {
                        skeleton(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(skeleton).collect()),
        other => other.clone(),
    }
}

fn all_texts(response: &Value) -> Vec<String> {
    (0..log(response).len())
        .flat_map(|i| entry(response, i).1)
        .collect()
}

#[test]
fn the_new_messages_are_translated_and_keep_codes_and_structure() {
    let forms = forms();
    let mut cases: Vec<(&str, &str)> = forms.iter().map(|f| (f.field, f.written)).collect();
    cases.extend(STILL_REFUSED);
    let env = Env::new();
    let path = env.file("all.json", &request_of(&cases));
    for types in ["strict", "lenient"] {
        let en = env.check(&path, &["--types", types]);
        let en_texts = all_texts(&en);
        for lang in ["uk", "ru"] {
            let other = env.check(&path, &["--types", types, "--lang", lang]);
            assert_eq!(skeleton(&other), skeleton(&en), "{types} {lang}");
            let texts = all_texts(&other);
            assert_eq!(texts.len(), en_texts.len());
            for (text, en_text) in texts.iter().zip(&en_texts) {
                assert_ne!(text, en_text, "{types} {lang}: not translated");
                // The value found and the flag stay as they are in every language.
                if en_text.contains("--types lenient") {
                    assert!(text.contains("--types lenient"), "{lang}: {text}");
                }
                let quoted = en_text
                    .split_once(" (")
                    .and_then(|(_, rest)| rest.split_once(") "));
                if let Some((found, _)) = quoted {
                    assert!(text.contains(found), "{lang}: {text} lacks {found}");
                }
            }
        }
    }
    let uk = env.check(&path, &["--lang", "uk"]);
    assert_eq!(
        entry(&uk, 3).1,
        [
            r#"Поле customer_group_id ("3") — число, записане рядком: строгі типи його не приймають, --types lenient приймає"#
        ]
    );
    let ru = env.check(&path, &["--lang", "ru"]);
    assert_eq!(
        entry(&ru, 21).1,
        [
            r#"Поле discount_card.date_limit ("31.12.2025") — дата в формате DD.MM.YYYY: строгие типы его не принимают, --types lenient принимает"#
        ]
    );
}

// --------------------------------------------------------------------- schema

/// The schema `userdrop schema` prints with `args`, with `envs` set.
fn schema(args: &[&str], envs: &[(&str, &str)]) -> Value {
    let mut cmd = userdrop();
    cmd.env_remove("USERDROP_TYPES").arg("schema").args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("userdrop schema runs");
    assert!(out.status.success(), "exit {:?}", out.status);
    serde_json::from_slice(&out.stdout).expect("the schema is JSON")
}

fn validator(args: &[&str]) -> Validator {
    let schema = schema(args, &[]);
    assert!(jsonschema::meta::is_valid(&schema), "not a valid schema");
    jsonschema::draft202012::new(&schema).expect("a valid 2020-12 schema")
}

/// Every loose form in one file, as a producer would send it.
fn loose_file() -> Value {
    let cases: Vec<(&str, &str)> = forms().iter().map(|f| (f.field, f.written)).collect();
    serde_json::from_str(&request_of(&cases)).expect("the cases are JSON")
}

#[test]
fn the_lenient_schema_takes_the_loose_forms_and_the_strict_one_does_not() {
    let file = loose_file();
    for level in [&[][..], &["--strict"]] {
        let lenient = validator(&[level, &["--types", "lenient"]].concat());
        let errors: Vec<String> = lenient.iter_errors(&file).map(|e| e.to_string()).collect();
        assert_eq!(errors, Vec::<String>::new(), "{level:?}");
        assert!(
            !validator(level).is_valid(&file),
            "{level:?}: the strict schema took it"
        );
    }
    // User by user, the strict level refuses each form JSON Schema can tell apart:
    // 3.0 is the integer 3 to it, a gap the strict schema already states.
    let strict = validator(&["--strict"]);
    let users = file["users"].as_array().expect("users");
    for (f, user) in forms().iter().zip(users) {
        let one = json!({ "users": [user] });
        if f.named != FRACTION {
            assert!(!strict.is_valid(&one), "the strict schema took {user}");
        }
    }
    let described = schema(&["--types", "lenient"], &[]);
    let description = described["description"].as_str().unwrap_or_default();
    assert!(
        description.contains("Lenient (userdrop schema --types lenient)"),
        "{description}"
    );
    // USERDROP_TYPES chooses the schema too; the flag wins.
    let from_env = schema(&[], &[("USERDROP_TYPES", "lenient")]);
    assert_eq!(from_env, described);
    let flagged = schema(&["--types", "strict"], &[("USERDROP_TYPES", "lenient")]);
    assert_eq!(flagged, schema(&[], &[]));
}

/// Values the lenient daemon refuses but the lenient schema cannot: JSON Schema
/// compares numbers by value, a 20-digit range is beyond a readable pattern, and no
/// pattern knows where a 64-bit float ends.
const GAPS: [(&str, &str); 5] = [
    ("newsletter_subscription", "1.0"),
    ("balance", r#""1e400""#),
    ("customer_group_id", r#""99999999999999999999""#),
    ("discount_card.discount", r#""1e5""#),
    ("manager_id", "1e30"),
];

#[test]
fn the_lenient_schema_agrees_with_check_types_lenient_user_by_user() {
    let (format, strict) = (
        validator(&["--types", "lenient"]),
        validator(&["--strict", "--types", "lenient"]),
    );
    let forms = forms();
    let mut cases: Vec<(&str, &str)> = forms.iter().map(|f| (f.field, f.written)).collect();
    cases.extend(STILL_REFUSED);
    cases.extend([
        ("discount_card.discount", r#""100.000""#),
        ("discount_card.discount", r#""-0""#),
        ("discount_card.discount", r#""100.001""#),
        ("discount_card.discount", r#""-0.5""#),
        ("discount_card.status", r#""0""#),
        ("discount_card.status", "3e0"),
        ("discount_card.status", "4.0"),
        ("customer_group_id", r#""007""#),
        ("balance", r#""+1""#),
        ("balance", r#"" ""#),
        ("discount_card.date_limit", r#""2025-12-31T00:00:00Z""#),
        ("discount_card.date_limit", r#""2025-12-31T00:00+0530""#),
        (
            "discount_card.date_limit",
            r#""2025-12-31T00:00:00.1234567890""#,
        ),
        ("discount_card.date_limit", r#""2025-12-31 00:00 ""#),
        ("discount_card.date_limit", r#""31.12.2025 00:00""#),
        ("discount_card.date_limit", r#""1.12.2025""#),
        ("discount_card.date_limit", r#""29.02.2000""#),
        ("discount_card.date_limit", r#""29.02.1900""#),
        ("discount_card.date_limit", r#"" ""#),
        ("phone", "\"\u{3000}00380631234567\u{3000}\""),
        ("phone", "\"00 380\u{2007}63 1234567\""),
        ("phone", r#""+380\t631234567""#),
        ("phone", r#""00+380631234567""#),
        ("phone", r#""001234567""#),
        ("phone", r#""0012345678901234567""#),
        ("newsletter_subscription", r#"" true ""#),
        ("newsletter_subscription", "true"),
        ("discount_card", r#"{"status":"2"}"#),
        ("discount_card", "[{}]"),
    ]);
    cases.extend(GAPS);
    let env = Env::new();
    let path = env.file("cases.json", &request_of(&cases));
    let response = env.check(&path, &["--types", "lenient"]);
    let request: Value = serde_json::from_str(&request_of(&cases)).expect("the cases are JSON");
    let users = request["users"].as_array().expect("users");
    assert_eq!(log(&response).len(), users.len(), "{response}");
    let mut disagreements = Vec::new();
    let (mut accepted, mut rejected) = (0, 0);
    for (i, (case, user)) in cases.iter().zip(users).enumerate() {
        let daemon_ok = entry(&response, i).0 == [0];
        let one = json!({ "users": [user] });
        let schema_ok = strict.is_valid(&one);
        if daemon_ok {
            accepted += 1;
        } else {
            rejected += 1;
        }
        let gap = GAPS.contains(case);
        // The format is looser than strict: it never refuses what either takes.
        if (daemon_ok || schema_ok) && !format.is_valid(&one) {
            disagreements.push(format!("{user}: refused by the lenient request format"));
        }
        let expected = if gap {
            !daemon_ok && schema_ok
        } else {
            schema_ok == daemon_ok
        };
        if !expected {
            disagreements.push(format!(
                "{user}: daemon {:?}, schema {schema_ok}, gap {gap}",
                entry(&response, i).1
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "the lenient schema and check --types lenient disagree:\n{}",
        disagreements.join("\n")
    );
    assert!(accepted > 20 && rejected > 20, "{accepted} / {rejected}");
}

#[test]
fn the_lenient_date_pattern_is_the_calendar_in_both_orders() {
    let v = validator(&["--strict", "--types", "lenient"]);
    let mut checked = 0;
    for year in [0, 4, 100, 400, 1900, 2000, 2019, 2024, 2100, 9999] {
        for month in 0..=13 {
            for day in 0..=32 {
                let real = chrono::NaiveDate::from_ymd_opt(year, month, day).is_some();
                for date in [
                    format!("{day:02}.{month:02}.{year:04}"),
                    format!("{year:04}-{month:02}-{day:02} 12:30"),
                ] {
                    let user = json!({"title": "T", "email": "a@b.co",
                                      "discount_card": {"date_limit": date}});
                    assert_eq!(v.is_valid(&json!({ "users": [user] })), real, "{date}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 10 * 14 * 33 * 2);
}
