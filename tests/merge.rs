//! The upsert and merge rules of SPEC §2, end to end: every test runs the built
//! `userdrop` binary on request files in a temporary folder and reads back the
//! response files, `get`, `export` and `stats`.

mod common;

use common::{Env, userdrop};
use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};

const EMAIL: &str = "ivan@mail.net";

/// What one `import` of one file gave.
struct Outcome {
    exit: i32,
    response: Value,
}

impl Outcome {
    fn status(&self) -> &str {
        self.response["status"].as_str().expect("a status")
    }

    fn log(&self) -> &Vec<Value> {
        self.response["response"]["log"]
            .as_array()
            .unwrap_or_else(|| panic!("no log array in {}", self.response))
    }

    /// `(code, message)` of every info of `log[i]`.
    fn infos(&self, i: usize) -> Vec<(u64, String)> {
        self.log()[i]["info"]
            .as_array()
            .expect("an info array")
            .iter()
            .map(|e| {
                (
                    e["code"].as_u64().expect("a code"),
                    e["message"].as_str().expect("a message").to_owned(),
                )
            })
            .collect()
    }

    /// The single success entry of `log[i]`, checked to be code 0.
    fn success(&self, i: usize) -> String {
        let infos = self.infos(i);
        assert_eq!(infos.len(), 1, "one success entry expected: {infos:?}");
        assert_eq!(infos[0].0, 0, "code 0 expected: {infos:?}");
        infos[0].1.clone()
    }
}

impl Env {
    fn write(&self, name: &str, request: &Value) -> PathBuf {
        let path = self.dir.path().join("in").join(name);
        fs::write(&path, serde_json::to_vec_pretty(request).unwrap()).unwrap();
        path
    }

    fn import_path(&self, path: &Path) -> Outcome {
        let out = userdrop()
            .envs(self.store_vars())
            .arg("import")
            .arg("--db")
            .arg(self.db())
            .arg(path)
            .output()
            .expect("userdrop runs");
        let exit = out.status.code().expect("an exit code");
        let name = path.file_name().unwrap().to_str().unwrap();
        let response_path = path.with_file_name(name.replace(".json", ".response.json"));
        let text = fs::read_to_string(&response_path).unwrap_or_else(|e| {
            panic!(
                "no response {} (exit {exit}, stderr {}): {e}",
                response_path.display(),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let response = serde_json::from_str(&text).expect("the response is JSON");
        Outcome { exit, response }
    }

    /// Imports `users` as the request file `name`.
    fn import(&self, name: &str, users: Vec<Value>) -> Outcome {
        let path = self.write(name, &json!({"token": "t", "users": users}));
        self.import_path(&path)
    }

    fn get(&self, email: &str) -> Option<Value> {
        let out = userdrop()
            .envs(self.store_vars())
            .arg("get")
            .arg("--db")
            .arg(self.db())
            .arg(email)
            .output()
            .expect("userdrop runs");
        match out.status.code() {
            Some(0) => Some(serde_json::from_slice(&out.stdout).expect("get prints JSON")),
            Some(1) => None,
            other => panic!("get exited with {other:?}"),
        }
    }

    fn user(&self, email: &str) -> Value {
        self.get(email)
            .unwrap_or_else(|| panic!("{email} is not stored"))
    }

    fn export_json(&self) -> Value {
        let out = userdrop()
            .envs(self.store_vars())
            .arg("export")
            .arg("--db")
            .arg(self.db())
            .output()
            .expect("userdrop runs");
        assert_eq!(out.status.code(), Some(0));
        serde_json::from_slice(&out.stdout).expect("export prints JSON")
    }

    fn stats(&self) -> Value {
        let out = userdrop()
            .envs(self.store_vars())
            .arg("stats")
            .arg("--db")
            .arg(self.db())
            .arg("--json")
            .output()
            .expect("userdrop runs");
        assert_eq!(out.status.code(), Some(0));
        let all: Value = serde_json::from_slice(&out.stdout).expect("stats --json prints JSON");
        // The counts these tests are about; the other keys (timestamps) differ by run.
        serde_json::json!({"users": all["users"], "files": all["files"]})
    }
}

fn full_user() -> Value {
    json!({
        "title": "Ivanov Ivan",
        "email": EMAIL,
        "phone": "+380631234567",
        "country": "Ukraine",
        "city": "Kyiv",
        "address": "Khreschatyk St, 22",
        "discount_card": {"discount": 3, "active": true, "date_limit": "2019-01-01", "status": 1},
        "customer_group_id": 7,
        "balance": 10.5,
        "balance_currency": "uah",
        "manager_id": 2,
        "site_link": "https://shop.example.com/",
        "company": "Roga i Kopyta",
        "role": "buyer",
        "newsletter_subscription": true,
        "note": "VIP"
    })
}

/// The user's fields without the store's own bookkeeping.
fn data(user: &Value) -> Value {
    let mut user = user.clone();
    let map = user.as_object_mut().unwrap();
    for key in ["created_at", "updated_at", "source_file"] {
        map.remove(key);
    }
    user
}

#[test]
fn add_then_update() {
    let env = Env::new();
    let first = env.import("a.json", vec![json!({"title": "Ivan", "email": EMAIL})]);
    assert_eq!((first.exit, first.status()), (0, "OK"));
    assert_eq!(first.success(0), format!("User {EMAIL} added successfully"));
    assert_eq!(env.user(EMAIL)["title"], "Ivan");

    let second = env.import(
        "b.json",
        vec![json!({"title": "Ivan Ivanov", "email": " IVAN@Mail.net ", "city": "Lviv"})],
    );
    assert_eq!((second.exit, second.status()), (0, "OK"));
    assert_eq!(
        second.success(0),
        format!("User {EMAIL} updated successfully")
    );
    let user = env.user(EMAIL);
    assert_eq!(
        data(&user),
        json!({"title": "Ivan Ivanov", "email": EMAIL, "city": "Lviv"})
    );
    assert_eq!(user["source_file"], "b.json");
    assert_eq!(env.stats()["users"], 1);
}

#[test]
fn absent_fields_keep_their_stored_values() {
    let env = Env::new();
    env.import("a.json", vec![full_user()]);
    let before = env.user(EMAIL);
    let out = env.import(
        "b.json",
        vec![json!({"title": "Ivanov Ivan", "email": EMAIL, "city": "Odesa", "note": "   "})],
    );
    assert_eq!(out.success(0), format!("User {EMAIL} updated successfully"));
    let mut expected = data(&before);
    expected["city"] = json!("Odesa");
    // A blank string counts as absent: the note is kept.
    assert_eq!(data(&env.user(EMAIL)), expected);
    assert_eq!(expected["note"], "VIP");
    assert_eq!(expected["balance_currency"], "UAH");
}

#[test]
fn null_clears_a_field() {
    let env = Env::new();
    env.import("a.json", vec![full_user()]);
    let before = env.user(EMAIL);
    let out = env.import(
        "b.json",
        vec![json!({
            "title": "Ivanov Ivan", "email": EMAIL,
            "phone": null, "balance": null, "newsletter_subscription": null, "manager_id": null
        })],
    );
    assert_eq!((out.exit, out.status()), (0, "OK"));
    assert_eq!(out.success(0), format!("User {EMAIL} updated successfully"));
    let mut expected = data(&before);
    for key in ["phone", "balance", "newsletter_subscription", "manager_id"] {
        expected.as_object_mut().unwrap().remove(key);
    }
    let after = data(&env.user(EMAIL));
    assert_eq!(after, expected);
    for key in ["phone", "balance", "newsletter_subscription", "manager_id"] {
        assert!(after.get(key).is_none(), "{key} still stored: {after}");
    }
}

#[test]
fn null_title_or_email_is_code_1_and_writes_nothing() {
    let env = Env::new();
    env.import("a.json", vec![full_user()]);
    let before = env.user(EMAIL);
    let out = env.import(
        "b.json",
        vec![
            json!({"title": null, "email": EMAIL, "city": "Odesa"}),
            json!({"title": "Somebody", "email": null, "city": "Odesa"}),
            json!({"title": null, "email": "new@mail.net", "city": "Odesa"}),
        ],
    );
    assert_eq!((out.exit, out.status()), (3, "WARNING"));
    for i in 0..3 {
        let infos = out.infos(i);
        assert!(
            infos.iter().any(|(code, _)| *code == 1),
            "log[{i}] has no code 1: {infos:?}"
        );
        assert!(
            infos.iter().all(|(code, _)| *code != 0),
            "log[{i}] reports success: {infos:?}"
        );
    }
    assert!(out.infos(0).iter().any(|(_, m)| m.contains("title")));
    assert!(out.infos(1).iter().any(|(_, m)| m.contains("email")));
    // Nothing of any of them was written.
    assert_eq!(env.user(EMAIL), before);
    assert_eq!(env.get("new@mail.net"), None);
    assert_eq!(env.stats()["users"], 1);
}

#[test]
fn discount_card_merges_field_by_field() {
    let env = Env::new();
    env.import("a.json", vec![full_user()]);
    let out = env.import(
        "b.json",
        vec![json!({"title": "Ivanov Ivan", "email": EMAIL, "discount_card": {"active": false}})],
    );
    assert_eq!(out.success(0), format!("User {EMAIL} updated successfully"));
    assert_eq!(
        env.user(EMAIL)["discount_card"],
        json!({"discount": 3, "active": false, "date_limit": "2019-01-01", "status": 1})
    );

    // A null inside the card clears that field only.
    env.import(
        "c.json",
        vec![json!({"title": "Ivanov Ivan", "email": EMAIL,
                    "discount_card": {"date_limit": null, "status": 2}})],
    );
    assert_eq!(
        env.user(EMAIL)["discount_card"],
        json!({"discount": 3, "active": false, "status": 2})
    );
    // Other fields untouched by the card updates.
    assert_eq!(env.user(EMAIL)["city"], "Kyiv");
}

#[test]
fn null_discount_card_removes_the_card() {
    let env = Env::new();
    env.import("a.json", vec![full_user()]);
    let out = env.import(
        "b.json",
        vec![json!({"title": "Ivanov Ivan", "email": EMAIL, "discount_card": null})],
    );
    assert_eq!(out.success(0), format!("User {EMAIL} updated successfully"));
    let user = env.user(EMAIL);
    assert!(user.get("discount_card").is_none(), "card kept: {user}");
    assert_eq!(user["phone"], "+380631234567");
}

#[test]
fn clearing_every_card_field_removes_the_card() {
    let env = Env::new();
    env.import("a.json", vec![full_user()]);
    let out = env.import(
        "b.json",
        vec![
            json!({"title": "Ivanov Ivan", "email": EMAIL, "discount_card":
            {"discount": null, "active": null, "date_limit": null, "status": null}}),
        ],
    );
    assert_eq!(out.success(0), format!("User {EMAIL} updated successfully"));
    let user = env.user(EMAIL);
    assert!(
        user.get("discount_card").is_none(),
        "empty card kept: {user}"
    );
    let export = env.export_json();
    assert!(
        export["users"][0].get("discount_card").is_none(),
        "empty card exported: {export}"
    );

    // Clearing the fields one at a time gets there too.
    env.import(
        "c.json",
        vec![json!({"title": "Ivanov Ivan", "email": EMAIL, "discount_card": {"active": true}})],
    );
    assert_eq!(env.user(EMAIL)["discount_card"], json!({"active": true}));
    env.import(
        "d.json",
        vec![json!({"title": "Ivanov Ivan", "email": EMAIL, "discount_card": {"active": null}})],
    );
    let user = env.user(EMAIL);
    assert!(
        user.get("discount_card").is_none(),
        "empty card kept: {user}"
    );
}

#[test]
fn unchanged_user_is_reported_and_not_rewritten() {
    let env = Env::new();
    env.import("a.json", vec![full_user()]);
    let before = env.user(EMAIL);
    std::thread::sleep(std::time::Duration::from_millis(20));

    // The same data, written differently: case, spaces, phone separators, currency case.
    let mut same = full_user();
    same["email"] = json!("  Ivan@MAIL.net");
    same["phone"] = json!("+38 (063) 123-45-67");
    same["city"] = json!("  Kyiv  ");
    same["balance_currency"] = json!("UAH");
    same["discount_card"] = json!({"status": 1});
    let out = env.import("other-name.json", vec![same]);
    assert_eq!((out.exit, out.status()), (0, "OK"));
    assert_eq!(
        out.success(0),
        format!("User {EMAIL} is already up to date, nothing changed")
    );
    let after = env.user(EMAIL);
    assert_eq!(after, before, "an unchanged user was rewritten");
    assert_eq!(after["source_file"], "a.json");
    assert_eq!(after["updated_at"], before["updated_at"]);
}

#[test]
fn update_keeps_created_at_and_moves_updated_at_and_source_file() {
    let env = Env::new();
    env.import("a.json", vec![full_user()]);
    let before = env.user(EMAIL);
    assert_eq!(before["created_at"], before["updated_at"]);
    assert_eq!(before["source_file"], "a.json");
    std::thread::sleep(std::time::Duration::from_millis(20));

    env.import(
        "b.json",
        vec![json!({"title": "Ivanov Ivan", "email": EMAIL, "role": "owner"})],
    );
    let after = env.user(EMAIL);
    assert_eq!(after["created_at"], before["created_at"]);
    assert_ne!(after["updated_at"], before["updated_at"]);
    assert_eq!(after["source_file"], "b.json");
    let created = timestamp(&after["created_at"]);
    let old = timestamp(&before["updated_at"]);
    let new = timestamp(&after["updated_at"]);
    assert!(new > old, "updated_at did not move forward: {old} -> {new}");
    assert!(created <= new);
}

/// An RFC 3339 timestamp in UTC.
fn timestamp(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    let s = v.as_str().expect("a timestamp string");
    let t = chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    assert_eq!(t.offset().local_minus_utc(), 0, "not UTC: {s}");
    t
}

#[test]
fn stats_counts_users_and_files_by_status() {
    let env = Env::new();
    // SPEC §6: a read command never creates a store; a missing one is exit 1 naming it.
    let missing = userdrop()
        .args(["stats", "--json", "--db"])
        .arg(env.db())
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1), "{missing:?}");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains(&env.store_named()), "{stderr}");
    for read in [&["get", "a@x.com"][..], &["export"]] {
        let out = userdrop()
            .args(read)
            .arg("--db")
            .arg(env.db())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{read:?}: {out:?}");
    }
    assert!(!env.db().exists(), "a read command created the store");
    // `check` judges against an empty store then, and creates none either.
    let probe = env.write(
        "probe.json",
        &json!({"users": [{"title": "A", "email": "a@x.com"}]}),
    );
    let out = userdrop()
        .args(["check", "--db"])
        .arg(env.db())
        .arg(&probe)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("added successfully"));
    assert!(!env.db().exists(), "check created the store");
    fs::remove_file(&probe).unwrap();

    let ok = env.import(
        "ok.json",
        vec![
            json!({"title": "A", "email": "a@x.com"}),
            json!({"title": "B", "email": "b@x.com"}),
        ],
    );
    assert_eq!(ok.status(), "OK");
    let warn = env.import(
        "warn.json",
        vec![
            json!({"title": "C", "email": "c@x.com"}),
            json!({"title": "D", "email": "not-an-email"}),
            json!({"title": "A again", "email": "a@x.com"}),
        ],
    );
    assert_eq!((warn.exit, warn.status()), (3, "WARNING"));
    assert_eq!(warn.success(2), "User a@x.com updated successfully");
    let bad = env.write("bad.json", &json!({"users": "nope"}));
    let err = env.import_path(&bad);
    assert_eq!((err.exit, err.status()), (3, "ERROR"));
    assert_eq!(
        env.stats(),
        json!({"users": 3, "files": {"OK": 1, "WARNING": 1, "ERROR": 1}})
    );

    // The same file imported again counts again (SPEC §7: counters only rise).
    let again = env.import_path(&env.dir.path().join("in").join("ok.json"));
    assert_eq!(again.status(), "OK");
    assert_eq!(
        env.stats(),
        json!({"users": 3, "files": {"OK": 2, "WARNING": 1, "ERROR": 1}})
    );
}
