//! The admin's commands on a store (SPEC §6): `backup` and `restore`, also while the
//! daemon runs, and `delete`, offline and through the daemon.

mod common;

use common::admin::{Daemon, run, wait_until};
use common::{Env, userdrop};
use std::fs;
use std::path::Path;
use std::time::Duration;

fn user(email: &str, city: &str) -> String {
    format!(r#"{{"title":"T {email}","email":"{email}","city":"{city}","balance":-1250.75}}"#)
}

/// A store with history: two OK files (one updating the other's users), a WARNING
/// and an ERROR, applied by `import` so that each user has its meta.
fn fill(env: &Env) {
    let files = [
        (
            "a.json",
            format!(
                r#"{{"users":[{},{}]}}"#,
                user("a@shop.example", "Kyiv"),
                user("b@shop.example", "Lviv")
            ),
        ),
        (
            "b.json",
            format!(
                r#"{{"users":[{},{}]}}"#,
                user("b@shop.example", "Odesa"),
                user("c@shop.example", "Dnipro")
            ),
        ),
        (
            "warn.json",
            format!(
                r#"{{"users":[{},{{"title":"","email":"bad"}}]}}"#,
                user("d@shop.example", "Kyiv")
            ),
        ),
        ("error.json", "{\"users\": [".to_owned()),
    ];
    for (name, body) in files {
        let path = env.inbox().join(name);
        fs::write(&path, body).unwrap();
        let out = run(env, &env.db(), &["import", path.to_str().unwrap()]);
        assert!(matches!(out.status.code(), Some(0 | 3)), "{out:?}");
    }
}

/// What every read command prints of a store.
fn reads(env: &Env, db: &Path) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for args in [
        &["get", "a@shop.example"][..],
        &["get", "b@shop.example"],
        &["export"],
        &["export", "--format", "ndjson"],
        &["export", "--format", "csv"],
        &["stats"],
        &["stats", "--json"],
    ] {
        let out = run(env, db, args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        all.push(out.stdout);
    }
    all
}

#[test]
fn a_backup_taken_while_the_daemon_runs_restores_to_the_same_store() {
    let env = Env::new();
    fill(&env);
    let before = reads(&env, &env.db());
    for name in ["store.backup", "store.backup.gz", "store.backup.zst"] {
        let file = env.dir.path().join(name);
        {
            let _daemon = Daemon::start(&env);
            let out = run(&env, &env.db(), &["backup", file.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(0), "{out:?}");
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(said.contains("backed up 4 users and 4 files"), "{said}");
        }
        let restored = env.dir.path().join(format!("restored-{name}"));
        let out = run(&env, &restored, &["restore", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert_eq!(reads(&env, &restored), before, "restored from {name}");
    }
    let raw = fs::read(env.dir.path().join("store.backup.zst")).unwrap();
    assert!(
        raw.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]),
        "zstd by the name"
    );
    let raw = fs::read(env.dir.path().join("store.backup.gz")).unwrap();
    assert!(raw.starts_with(&[0x1f, 0x8b]), "gzip by the name");
}

#[test]
fn a_backup_on_standard_output_restores_from_standard_input() {
    let env = Env::new();
    fill(&env);
    let out = run(&env, &env.db(), &["backup", "-"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let restored = env.dir.path().join("restored");
    let back = userdrop()
        .args(["restore", "-", "--db"])
        .arg(&restored)
        .write_stdin(out.stdout)
        .output()
        .unwrap();
    assert_eq!(back.status.code(), Some(0), "{back:?}");
    assert_eq!(reads(&env, &restored), reads(&env, &env.db()));
}

#[test]
fn restore_refuses_a_store_that_is_not_empty_and_a_backup_cut_short() {
    let env = Env::new();
    fill(&env);
    let file = env.dir.path().join("b.backup");
    assert_eq!(
        run(&env, &env.db(), &["backup", file.to_str().unwrap()])
            .status
            .code(),
        Some(0)
    );
    let out = run(&env, &env.db(), &["restore", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{out:?}"
    );

    // Cut short: the end line is missing. The store stays marked, every command
    // refuses it, and a restore of a whole backup starts over.
    let text = fs::read_to_string(&file).unwrap();
    let cut: String = text.lines().take(3).map(|l| format!("{l}\n")).collect();
    let short = env.dir.path().join("short.backup");
    fs::write(&short, cut).unwrap();
    let restored = env.dir.path().join("restored");
    let out = run(&env, &restored, &["restore", short.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cut short"),
        "{out:?}"
    );
    let out = run(&env, &restored, &["stats"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("restore that did not finish"),
        "{out:?}"
    );
    let out = run(&env, &restored, &["restore", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(reads(&env, &restored), reads(&env, &env.db()));
}

fn exported(env: &Env) -> String {
    String::from_utf8(run(env, &env.db(), &["export", "--format", "ndjson"]).stdout).unwrap()
}

fn check_erased(env: &Env, email: &str) {
    assert_eq!(run(env, &env.db(), &["get", email]).status.code(), Some(1));
    assert!(!exported(env).contains(email));
    let out = run(env, &env.db(), &["backup", "-"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(email));
}

#[test]
fn delete_erases_offline_and_names_the_files_that_still_mention_them() {
    let env = Env::new();
    fill(&env);
    let out = run(
        &env,
        &env.db(),
        &[
            "delete",
            "A@Shop.example",
            "nobody@shop.example",
            "--watch",
            "in",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("erased a@shop.example"), "{printed}");
    assert!(
        printed.contains("still mentioned in in/a.json"),
        "{printed}"
    );
    assert!(
        printed.contains("still mentioned in in/a.response.json"),
        "{printed}"
    );
    assert!(!printed.contains("b.json"), "{printed}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no user with email nobody@shop.example")
    );
    check_erased(&env, "a@shop.example");
    assert!(exported(&env).contains("b@shop.example"));
    // Nobody left to erase: exit 1.
    let again = run(
        &env,
        &env.db(),
        &["delete", "a@shop.example", "--watch", "in"],
    );
    assert_eq!(again.status.code(), Some(1));
}

#[test]
fn delete_through_the_daemon_and_purge_the_pairs_that_hold_no_one_else() {
    let env = Env::new();
    fill(&env);
    let alone = env.inbox().join("d-only.json");
    fs::write(
        &alone,
        format!(r#"{{"users":[{}]}}"#, user("d@shop.example", "Rivne")),
    )
    .unwrap();
    let _daemon = Daemon::start(&env);
    let response = env.inbox().join("d-only.response.json");
    assert!(wait_until(|| response.exists()));
    let out = run(
        &env,
        &env.db(),
        &["delete", "d@shop.example", "--watch", "in", "--purge-files"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let printed = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(
        lines,
        [
            "erased d@shop.example",
            "removed in/d-only.json",
            "removed in/d-only.response.json",
            "still mentioned in in/warn.json",
            "still mentioned in in/warn.response.json",
        ]
    );
    assert!(!alone.exists() && !response.exists());
    // Through the daemon, which still holds the store.
    check_erased(&env, "d@shop.example");
    // The request went first, so nothing was applied again.
    std::thread::sleep(Duration::from_millis(600));
    check_erased(&env, "d@shop.example");
}
