//! `userdrop schema`, `completions` and `man`, run as the built binary. Both levels of
//! the schema are checked with an independent validator: the request format (default)
//! against the platform's example and wrong types, the strict one against the daemon's
//! own verdicts (`check`) on values at the edges of every rule.

mod common;

use chrono::NaiveDate;
use common::{Env, userdrop};
use jsonschema::Validator;
use serde_json::{Value, json};
use std::fs;

/// The schema `userdrop schema` prints with `args` after it.
fn schema(args: &[&str]) -> Value {
    let out = userdrop()
        .arg("schema")
        .args(args)
        .output()
        .expect("userdrop schema runs");
    assert!(out.status.success(), "exit {:?}", out.status);
    serde_json::from_slice(&out.stdout).expect("the schema is JSON")
}

/// The default schema: the request format.
fn format() -> Validator {
    jsonschema::draft202012::new(&schema(&[])).expect("a valid 2020-12 schema")
}

fn strict() -> Validator {
    jsonschema::draft202012::new(&schema(&["--strict"])).expect("a valid 2020-12 schema")
}

/// The instance paths of every error, for messages and for checking where they are.
fn errors(v: &Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} ({e})", e.instance_path()))
        .collect()
}

fn seed() -> Value {
    let text = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/seed-request.json"
    ))
    .expect("the seed request");
    serde_json::from_str(&text).expect("the seed is JSON")
}

/// A valid user with every field, for mutating.
fn full_user() -> Value {
    json!({
        "title": "Ivanov Ivan", "email": "ivan@mail.net", "phone": "+380 (63) 123-45-67",
        "country": "Ukraine", "city": "Kyiv", "address": "Khreschatyk St, 22",
        "discount_card": {"discount": 2.5, "active": true, "date_limit": "2024-02-29", "status": 3},
        "customer_group_id": 1, "balance": -10.50, "balance_currency": "uah",
        "manager_id": 7, "site_link": "https://shop.example.com/", "company": "ACME",
        "role": "buyer", "newsletter_subscription": false, "note": "calls after 5"
    })
}

#[test]
fn schema_is_json_and_declares_2020_12() {
    // (arguments, words its description must use to say which level it is)
    for (args, level) in [
        (&[][..], "Request format (userdrop schema)"),
        (&["--strict"], "Strict (userdrop schema --strict)"),
    ] {
        let s = schema(args);
        assert_eq!(
            s["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{s}"
        );
        assert!(s["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(jsonschema::meta::is_valid(&s), "not a valid schema: {s}");
        let description = s["description"].as_str().unwrap_or_default();
        assert!(description.contains(level), "{args:?}: {description}");
        // The field descriptions come from the doc comments in model.rs.
        let note = &s["$defs"]["UserData"]["properties"]["note"]["description"];
        assert!(note.as_str().is_some_and(|d| d.contains("2000")), "{note}");
    }
}

#[test]
fn seed_example_validates_the_request_format() {
    // The whole file, its deliberately bad third user included: that user is judged
    // (and rejected) on its own, the file is a well-formed request.
    assert_eq!(errors(&format(), &seed()), Vec::<String>::new());
}

#[test]
fn seed_example_fails_strict_only_for_its_deliberately_bad_user() {
    let v = strict();
    let mut seed = seed();
    // The platform's example ends with {"email": "some@email"}: no title and an email
    // without a dot in its domain, which the daemon rejects (codes 1 and 2).
    let errs = errors(&v, &seed);
    assert!(!errs.is_empty(), "the bad third user passed");
    assert!(
        errs.iter().all(|e| e.starts_with("/users/2")),
        "errors outside users[2]: {errs:?}"
    );
    assert!(errs.iter().any(|e| e.contains("title")), "{errs:?}");
    assert!(
        errs.iter().any(|e| e.starts_with("/users/2/email")),
        "{errs:?}"
    );
    seed["users"]
        .as_array_mut()
        .expect("users is an array")
        .truncate(2);
    assert_eq!(errors(&v, &seed), Vec::<String>::new());
}

/// (what, where as a JSON pointer, the value put there; None removes the key)
type Mutation = (&'static str, &'static str, Option<Value>);

/// A request with one full user, which passes both levels.
fn good() -> Value {
    json!({"token": "t", "users": [full_user()], "ignored_top_level_key": 1})
}

/// [`good`] with `mutation` applied to it.
fn mutated((what, pointer, value): &Mutation) -> Value {
    let mut doc = good();
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    match (doc.pointer_mut(parent), value.clone()) {
        (Some(Value::Object(o)), Some(v)) => drop(o.insert(key.to_owned(), v)),
        (Some(Value::Object(o)), None) => drop(o.remove(key)),
        (Some(Value::Array(a)), Some(v)) => a[key.parse::<usize>().expect("an index")] = v,
        _ => panic!("{what}: nothing at {parent}"),
    }
    doc
}

/// The unchanged request passes both levels, or the refusals below prove nothing.
#[test]
fn a_full_user_passes_both_levels() {
    assert_eq!(errors(&format(), &good()), Vec::<String>::new());
    assert_eq!(errors(&strict(), &good()), Vec::<String>::new());
}

#[test]
fn wrong_types_and_unknown_keys_are_refused_by_both_levels() {
    let (format, strict) = (format(), strict());
    let mutations: [Mutation; 17] = [
        ("users a string", "/users", Some(json!("x"))),
        ("users missing", "/users", None),
        ("token a number", "/token", Some(json!(5))),
        ("user not an object", "/users/0", Some(json!([1]))),
        ("email a number", "/users/0/email", Some(json!(5))),
        ("email null", "/users/0/email", Some(Value::Null)),
        (
            "card status \"1\"",
            "/users/0/discount_card/status",
            Some(json!("1")),
        ),
        (
            "discount \"3\"",
            "/users/0/discount_card/discount",
            Some(json!("3")),
        ),
        (
            "active \"yes\"",
            "/users/0/discount_card/active",
            Some(json!("yes")),
        ),
        ("unknown user key", "/users/0/status", Some(json!(1))),
        (
            "unknown card key",
            "/users/0/discount_card/extra",
            Some(json!(1)),
        ),
        (
            "card a string",
            "/users/0/discount_card",
            Some(json!("gold")),
        ),
        ("balance a string", "/users/0/balance", Some(json!("1.5"))),
        (
            "newsletter 1",
            "/users/0/newsletter_subscription",
            Some(json!(1)),
        ),
        (
            "newsletter \"yes\"",
            "/users/0/newsletter_subscription",
            Some(json!("yes")),
        ),
        (
            "card an array",
            "/users/0/discount_card",
            Some(json!([{"status": 1}])),
        ),
        ("manager_id 1.5", "/users/0/manager_id", Some(json!(1.5))),
    ];
    for mutation in &mutations {
        let doc = mutated(mutation);
        let what = mutation.0;
        assert!(!format.is_valid(&doc), "{what} passed the format: {doc}");
        assert!(!strict.is_valid(&doc), "{what} passed strict: {doc}");
    }
}

#[test]
fn value_rules_are_checked_by_strict_only() {
    let (format, strict) = (format(), strict());
    let mutations: [Mutation; 11] = [
        ("title missing", "/users/0/title", None),
        ("email missing", "/users/0/email", None),
        ("title blank", "/users/0/title", Some(json!(" \t"))),
        (
            "email without a dot",
            "/users/0/email",
            Some(json!("some@email")),
        ),
        ("phone 123", "/users/0/phone", Some(json!("123"))),
        (
            "card status 7",
            "/users/0/discount_card/status",
            Some(json!(7)),
        ),
        (
            "discount 100.5",
            "/users/0/discount_card/discount",
            Some(json!(100.5)),
        ),
        (
            "date_limit 2019-02-29",
            "/users/0/discount_card/date_limit",
            Some(json!("2019-02-29")),
        ),
        ("manager_id 0", "/users/0/manager_id", Some(json!(0))),
        (
            "currency UAHX",
            "/users/0/balance_currency",
            Some(json!("UAHX")),
        ),
        (
            "note 2001 characters",
            "/users/0/note",
            Some(json!("n".repeat(2001))),
        ),
    ];
    for mutation in &mutations {
        let doc = mutated(mutation);
        let what = mutation.0;
        assert_eq!(errors(&format, &doc), Vec::<String>::new(), "{what}");
        let errs = errors(&strict, &doc);
        assert!(!errs.is_empty(), "{what} passed strict: {doc}");
        assert!(
            errs.iter().all(|e| e.starts_with("/users/0")),
            "{what}: {errs:?}"
        );
    }
}

/// A user judged by the schema and by `userdrop check`, and whether they must agree.
struct Case {
    user: Value,
    /// `Some(reason)`: the daemon rejects it but the schema cannot say so.
    gap: Option<&'static str>,
}

fn with(field: &str, value: Value) -> Case {
    let mut user = json!({"title": "T"});
    if field.starts_with("discount_card.") {
        let key = field.trim_start_matches("discount_card.");
        user["discount_card"] = json!({ key: value });
    } else {
        user[field] = value;
    }
    Case { user, gap: None }
}

fn gap(mut case: Case, why: &'static str) -> Case {
    case.gap = Some(why);
    case
}

/// Values on both sides of every rule the schema expresses, and the known gaps.
fn cases() -> Vec<Case> {
    let long = |n: usize| "é".repeat(n);
    let mut cases = vec![
        with("title", json!(long(255))),
        with("title", json!(format!("  {}\n", long(255)))),
        with("title", json!(long(256))),
        with("title", json!(" ")),
        with("title", json!("")),
        with("title", json!(format!("a{}b", " ".repeat(254)))),
        with("title", json!(format!("a{}b", " ".repeat(253)))),
        with("title", Value::Null),
        with("note", json!(long(2000))),
        with("note", json!(long(2001))),
        with("note", json!("   ")),
        with("note", Value::Null),
        with("address", json!(format!("\u{3000}{}\u{3000}", long(1000)))),
        with("address", json!(long(1001))),
        with("phone", json!("+380631234567")),
        with("phone", json!(" +38 (063) 123-45.67 ")),
        with("phone", json!("+1234567")),
        with("phone", json!("+123456")),
        with("phone", json!("+123456789012345")),
        with("phone", json!("+1234567890123456")),
        with("phone", json!("380631234567")),
        with("phone", json!("+38063\t1234567")),
        with("phone", json!("+38063/1234567")),
        with("phone", json!("  ")),
        with("balance_currency", json!("uah")),
        with("balance_currency", json!(" UAH ")),
        with("balance_currency", json!("UA")),
        with("balance_currency", json!("UAHX")),
        with("balance_currency", json!("гри")),
        with("site_link", json!("https://shop.example.com/a b")),
        with("site_link", json!("HTTP://EXAMPLE.COM")),
        with("site_link", json!("http:example.com")),
        with("site_link", json!("ftp://example.com")),
        with("site_link", json!("example.com")),
        with("site_link", json!("http://")),
        with("site_link", json!("https:")),
        gap(
            with("site_link", json!("http://exa mple.com")),
            "a host with a space",
        ),
        with("customer_group_id", json!(1)),
        with("customer_group_id", json!(0)),
        with("customer_group_id", json!(-1)),
        with("manager_id", json!(18446744073709551615u64)),
        gap(
            with("manager_id", json!(1.0)),
            "1.0 equals 1 in JSON Schema",
        ),
        with("balance", json!(-0.5)),
        with("balance", json!(1e300)),
        with("discount_card.discount", json!(0)),
        with("discount_card.discount", json!(100)),
        with("discount_card.discount", json!(99.999)),
        with("discount_card.discount", json!(-0.001)),
        with("discount_card.discount", json!(100.001)),
        with("discount_card.status", json!(1)),
        with("discount_card.status", json!(3)),
        with("discount_card.status", json!(0)),
        with("discount_card.status", json!(4)),
        gap(
            with("discount_card.status", json!(2.0)),
            "2.0 equals 2 in JSON Schema",
        ),
        with("discount_card.date_limit", json!(" 2019-01-01 ")),
        with("discount_card.date_limit", json!("2019-1-01")),
        with("discount_card.date_limit", json!("2019-01-01T00:00:00")),
        with("discount_card.date_limit", json!(" ")),
        with("discount_card.active", Value::Null),
    ];
    for email in [
        "ivan@mail.net",
        " Ivan.Petrov+shop@Mail.Example.COM ",
        "a!#$%&'*+/=?^_`{|}~-b@x.co",
        "some@email",
        "a@b.c-d",
        "a@1.2.3.4",
        "a@b.c1",
        ".a@b.co",
        "a.@b.co",
        "a..b@b.co",
        "a b@b.co",
        "a@b@c.co",
        "a@-b.co",
        "a@b-.co",
        "a@b..co",
        "a@b_c.co",
        "é@b.co",
        "",
        "  ",
    ] {
        cases.push(with("email", json!(email)));
    }
    let label = |n: usize| "a".repeat(n);
    for email in [
        format!("{}@b.co", label(64)),
        format!("{}@b.co", label(65)),
        format!("a@{}.co", label(63)),
        format!("a@{}.co", label(64)),
        // 254 and 255 characters in all.
        format!("a@{}.{}.{}.{}", label(63), label(63), label(63), label(60)),
        format!("a@{}.{}.{}.{}", label(63), label(63), label(63), label(61)),
    ] {
        cases.push(with("email", json!(email)));
    }
    cases
}

#[test]
fn schema_agrees_with_the_daemon_user_by_user() {
    let (format, v) = (format(), strict());
    let cases = cases();
    // Every case gets its own email unless the email is what it tests, so that no
    // user is a duplicate of another.
    let users: Vec<Value> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut u = c.user.clone();
            if u.get("email").is_none() {
                u["email"] = json!(format!("user{i}@example.com"));
            }
            u
        })
        .collect();
    let env = Env::new();
    let file = env.inbox().join("cases.json");
    let request = json!({ "users": users });
    fs::write(&file, request.to_string()).expect("write the request");
    let out = userdrop()
        .arg("check")
        .arg("--db")
        .arg(env.db())
        .arg(&file)
        .output()
        .expect("userdrop check runs");
    let response: Value = serde_json::from_slice(&out.stdout).expect("check prints JSON");
    let log = response["response"]["log"]
        .as_array()
        .unwrap_or_else(|| panic!("no log in {response}"));
    assert_eq!(log.len(), users.len(), "{response}");
    let mut disagreements = Vec::new();
    let (mut accepted, mut rejected) = (0, 0);
    for ((case, user), entry) in cases.iter().zip(&users).zip(log) {
        let daemon_ok = entry["info"][0]["code"] == 0;
        let schema_ok = v.is_valid(&json!({ "users": [user] }));
        // The format is looser than strict, so it must never refuse a user the daemon
        // or the strict schema takes.
        if (daemon_ok || schema_ok) && !format.is_valid(&json!({ "users": [user] })) {
            disagreements.push(format!("{user}: refused by the request format"));
        }
        if daemon_ok {
            accepted += 1;
        } else {
            rejected += 1;
        }
        let expected = match case.gap {
            None => daemon_ok,
            // A known gap: the daemon must still reject it, the schema lets it pass.
            Some(_) => !daemon_ok && schema_ok,
        };
        if schema_ok != expected || (case.gap.is_some() && daemon_ok) {
            disagreements.push(format!(
                "{user}: daemon {} schema {} {:?}",
                entry["info"], schema_ok, case.gap
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "schema and daemon disagree:\n{}",
        disagreements.join("\n")
    );
    // The corpus must exercise both sides, or agreement proves nothing.
    assert!(accepted > 20 && rejected > 20, "{accepted} / {rejected}");
}

#[test]
fn date_limit_pattern_is_the_calendar() {
    let v = strict();
    let mut checked = 0;
    for year in [
        0, 1, 4, 100, 400, 1900, 1996, 2000, 2019, 2020, 2100, 2400, 9996, 9999,
    ] {
        for month in 0..=13 {
            for day in 0..=32 {
                let date = format!("{year:04}-{month:02}-{day:02}");
                let real = NaiveDate::parse_from_str(&date, "%Y-%m-%d").is_ok();
                let user = json!({"title": "T", "email": "a@b.co",
                                  "discount_card": {"date_limit": date}});
                let doc = json!({ "users": [user] });
                assert_eq!(v.is_valid(&doc), real, "{date}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 14 * 14 * 33);
}

#[test]
fn generated_commands_do_not_open_the_store() {
    let env = Env::new();
    for args in [
        &["schema"][..],
        &["schema", "--strict"],
        &["completions", "zsh"],
        &["man"],
    ] {
        userdrop()
            .current_dir(env.dir.path())
            .args(args)
            .assert()
            .success();
    }
    assert!(!env.db().exists(), "a store was created");
    assert!(!env.dir.path().join("data").exists(), "a store was created");
}

#[test]
fn completions_for_each_shell() {
    let bash = userdrop()
        .args(["completions", "bash"])
        .output()
        .expect("runs");
    assert!(bash.status.success());
    let bash = String::from_utf8(bash.stdout).expect("UTF-8");
    assert!(
        bash.contains("complete") && bash.contains("userdrop"),
        "{bash}"
    );
    for sub in ["import", "check", "export", "schema", "completions"] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    // Each shell spells an option its own way.
    for (shell, db) in [("zsh", "'--db=[The store"), ("fish", "-l db")] {
        let out = userdrop()
            .args(["completions", shell])
            .output()
            .expect("runs");
        assert!(out.status.success(), "{shell}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("import") && text.contains(db),
            "{shell}: {text}"
        );
    }
    userdrop().args(["completions", "tcsh"]).assert().code(2);
}

#[test]
fn man_page_is_roff() {
    let out = userdrop().arg("man").output().expect("runs");
    assert!(out.status.success());
    let page = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(
        page.lines().any(|l| l.starts_with(".TH userdrop 1")),
        "{page}"
    );
    assert!(
        page.contains(".SH NAME") && page.contains(".SH COMMANDS"),
        "{page}"
    );
    assert!(page.contains("import"), "{page}");
}
