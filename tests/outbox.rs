//! Crash safety of SPEC §2–§4, end to end: `USERDROP_FAULT` makes the real binary
//! abort at a chosen point, and a second run must finish the interrupted work without
//! applying anything twice. Also: `check` never changes the store.

mod common;

use common::{Env, userdrop};
use serde_json::{Value, json};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Output;

impl Env {
    fn write(&self, name: &str, request: &Value) -> PathBuf {
        let path = self.inbox().join(name);
        fs::write(&path, serde_json::to_vec_pretty(request).unwrap()).unwrap();
        path
    }

    fn run(&self, command: &str, args: &[&str], fault: Option<&str>) -> Output {
        let mut cmd = userdrop();
        // This Env's store, not the thread's latest: a test here may have two.
        cmd.envs(self.store_vars());
        cmd.arg(command).arg("--db").arg(self.db()).args(args);
        if let Some(fault) = fault {
            cmd.env("USERDROP_FAULT", fault);
        }
        cmd.output().expect("userdrop runs")
    }

    fn import(&self, files: &[&Path], extra: &[&str], fault: Option<&str>) -> Output {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        self.run("import", &args, fault)
    }

    fn get(&self, email: &str) -> Option<Value> {
        let out = self.run("get", &[email], None);
        match out.status.code() {
            Some(0) => Some(serde_json::from_slice(&out.stdout).expect("get prints JSON")),
            Some(1) => None,
            other => panic!("get exited with {other:?}"),
        }
    }

    fn export(&self, format: &str) -> String {
        let out = self.run("export", &["--format", format], None);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8(out.stdout).expect("UTF-8 export")
    }

    fn stats(&self) -> Value {
        let out = self.run("stats", &["--json"], None);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let all: Value = serde_json::from_slice(&out.stdout).expect("stats --json prints JSON");
        // The counts these tests are about; the other keys (timestamps) differ by run.
        serde_json::json!({"users": all["users"], "files": all["files"]})
    }

    /// The names in the request folder, sorted.
    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.inbox())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn response_of(request: &Path) -> Option<Value> {
    let name = request.file_name().unwrap().to_str().unwrap();
    let path = request.with_file_name(name.replace(".json", ".response.json"));
    let text = fs::read_to_string(path).ok()?;
    Some(serde_json::from_str(&text).expect("the response is JSON"))
}

fn messages(response: &Value) -> Vec<String> {
    response["response"]["log"]
        .as_array()
        .unwrap_or_else(|| panic!("no log in {response}"))
        .iter()
        .map(|entry| {
            let infos = entry["info"].as_array().expect("an info array");
            infos
                .iter()
                .map(|i| format!("{} {}", i["code"], i["message"].as_str().unwrap()))
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

fn users(range: std::ops::Range<usize>, city: &str) -> Vec<Value> {
    range
        .map(|i| json!({"title": format!("User {i}"), "email": format!("u{i:02}@x.com"), "city": city}))
        .collect()
}

fn added(email: &str) -> String {
    format!("0 User {email} added successfully")
}

/// The process was killed by a signal (abort), not a normal exit.
/// The log of users `u{i}` in `range`, each added.
fn added_all(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| added(&format!("u{i:02}@x.com"))).collect()
}

fn assert_aborted(out: &Output) {
    assert!(
        out.status.code().is_none() && out.status.signal().is_some(),
        "expected an abnormal death, got {:?}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every ndjson line with its timestamps removed (they differ between two stores).
fn without_timestamps(ndjson: &str) -> Vec<Value> {
    ndjson
        .lines()
        .map(|line| {
            let mut v: Value = serde_json::from_str(line).expect("an ndjson line");
            let map = v.as_object_mut().unwrap();
            map.remove("created_at");
            map.remove("updated_at");
            v
        })
        .collect()
}

/// Crashes `a.json` (3 users) right after its outcome reached the outbox and returns
/// the request path and each user's `updated_at` as stored.
fn crash_after_outbox(env: &Env) -> (PathBuf, Vec<Value>) {
    let a = env.write("a.json", &json!({"users": users(0..3, "Kyiv")}));
    let out = env.import(&[&a], &[], Some("after-outbox"));
    assert_aborted(&out);
    assert_eq!(
        response_of(&a),
        None,
        "a response appeared before the crash"
    );
    assert_eq!(env.listing(), ["a.json"], "stray files after the crash");
    // The store was flushed before the crash: the users are durable.
    let stamps = (0..3)
        .map(|i| {
            let email = format!("u{i:02}@x.com");
            let user = env
                .get(&email)
                .unwrap_or_else(|| panic!("{email} lost by the crash"));
            user["updated_at"].clone()
        })
        .collect();
    (a, stamps)
}

fn assert_first_file_delivered(env: &Env, a: &Path, stamps: &[Value]) {
    let response = response_of(a).expect("the held-back response of a.json");
    assert_eq!(response["status"], "OK");
    assert_eq!(
        messages(&response),
        ["u00@x.com", "u01@x.com", "u02@x.com"].map(added)
    );
    for (i, stamp) in stamps.iter().enumerate() {
        let user = env.get(&format!("u{i:02}@x.com")).unwrap();
        assert_eq!(&user["updated_at"], stamp, "user {i} was written again");
        assert_eq!(user["source_file"], "a.json");
    }
    let ndjson = env.export("ndjson");
    for i in 0..3 {
        let needle = format!("\"u{i:02}@x.com\"");
        assert_eq!(ndjson.matches(&needle).count(), 1, "{ndjson}");
    }
}

#[test]
fn after_outbox_crash_is_delivered_by_the_next_import_of_another_file() {
    let env = Env::new();
    let (a, stamps) = crash_after_outbox(&env);

    let b = env.write("b.json", &json!({"users": users(3..5, "Lviv")}));
    let out = env.import(&[&b], &[], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_first_file_delivered(&env, &a, &stamps);
    let b_response = response_of(&b).expect("b's response");
    assert_eq!(messages(&b_response), ["u03@x.com", "u04@x.com"].map(added));
    assert_eq!(
        env.stats(),
        json!({"users": 5, "files": {"OK": 2, "WARNING": 0, "ERROR": 0}})
    );
    assert_eq!(
        env.listing(),
        ["a.json", "a.response.json", "b.json", "b.response.json"]
    );
}

#[test]
fn after_outbox_crash_is_delivered_by_reimporting_the_same_file() {
    let env = Env::new();
    let (a, stamps) = crash_after_outbox(&env);

    let out = env.import(&[&a], &[], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // The response is the one the crashed run would have written: "added", not
    // "already up to date" (which would mean the file was applied a second time).
    assert_first_file_delivered(&env, &a, &stamps);
    assert_eq!(
        env.stats(),
        json!({"users": 3, "files": {"OK": 1, "WARNING": 0, "ERROR": 0}})
    );
    assert_eq!(env.listing(), ["a.json", "a.response.json"]);
}

/// 25 users with a rejected one and an in-file duplicate on either side of a step
/// boundary, so that a resumed run must still know what came before it.
fn big_request(city: &str) -> Value {
    let mut list = users(0..25, city);
    list[5] = json!({"title": "Bad", "email": "not an email", "city": city});
    list[15] = json!({"title": "Dup", "email": "U02@x.com", "city": city});
    json!({"users": list})
}

#[test]
fn after_step_crash_resumes_and_answers_as_a_clean_run() {
    let env = Env::new();
    let big = env.write("big.json", &big_request("Kyiv"));
    let out = env.import(&[&big], &["--step-users", "10"], Some("after-step"));
    assert_aborted(&out);
    assert_eq!(
        response_of(&big),
        None,
        "a response appeared before the crash"
    );
    assert_eq!(env.listing(), ["big.json"], "stray files after the crash");

    let out = env.import(&[&big], &["--step-users", "10"], None);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let response = response_of(&big).expect("the response after the rerun");
    assert_eq!(response["status"], "WARNING");
    let log = messages(&response);
    assert_eq!(log.len(), 25, "{log:#?}");
    for (i, line) in log.iter().enumerate() {
        match i {
            5 => assert!(line.starts_with("2 "), "{i}: {line}"),
            15 => assert!(
                line.starts_with("2 ") && line.contains("user 2"),
                "{i}: {line}"
            ),
            _ => assert_eq!(line, &added(&format!("u{i:02}@x.com")), "log[{i}]"),
        }
    }

    // A clean run of the same file into a fresh store gives the same response and
    // the same users.
    let clean = Env::new();
    let clean_big = clean.write("big.json", &big_request("Kyiv"));
    let out = clean.import(&[&clean_big], &["--step-users", "10"], None);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(response_of(&clean_big).unwrap(), response);
    assert_eq!(env.export("json"), clean.export("json"));
    assert_eq!(
        without_timestamps(&env.export("ndjson")),
        without_timestamps(&clean.export("ndjson"))
    );
    assert_eq!(env.stats(), clean.stats());
    assert_eq!(
        env.stats(),
        json!({"users": 23, "files": {"OK": 0, "WARNING": 1, "ERROR": 0}})
    );
}

#[test]
fn after_step_crash_keeps_the_committed_step() {
    // SPEC §2: each step is atomic together with the file's progress, so that a
    // crash resumes the file where it stopped. After a crash right after the first
    // step's commit, that step (users 0..10) must be in the store, the rest not.
    let env = Env::new();
    let big = env.write("big.json", &json!({"users": users(0..25, "Kyiv")}));
    let out = env.import(&[&big], &["--step-users", "10"], Some("after-step"));
    assert_aborted(&out);
    let stored: Vec<bool> = (0..25)
        .map(|i| env.get(&format!("u{i:02}@x.com")).is_some())
        .collect();
    let expected: Vec<bool> = (0..25).map(|i| i < 10).collect();
    assert_eq!(
        stored, expected,
        "which users survived a crash after the first committed step"
    );
}

#[test]
fn a_file_changed_after_a_crash_is_finished_from_its_copy_then_taken_as_new() {
    // SPEC §2: the store never keeps part of a file without it being finished. The
    // first content is finished from the private copy taken when it was applied (no
    // response: the request beside it is another file now), then the new content is
    // a new request, answered as such.
    let env = Env::new();
    let big = env.write("big.json", &json!({"users": users(0..25, "Kyiv")}));
    let out = env.import(&[&big], &["--step-users", "10"], Some("after-step"));
    assert_aborted(&out);
    assert!(
        env.get("u00@x.com").is_some(),
        "the first step was committed"
    );

    // New content under the same name: another city for everyone and one user more.
    env.write("big.json", &json!({"users": users(0..26, "Lviv")}));
    let out = env.import(&[&big], &["--step-users", "10"], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let response = response_of(&big).expect("the response after the rerun");
    assert_eq!(response["status"], "OK");
    let log = messages(&response);
    assert_eq!(log.len(), 26, "{log:#?}");
    for (i, line) in log.iter().enumerate() {
        let email = format!("u{i:02}@x.com");
        let expected = if i < 25 {
            format!("0 User {email} updated successfully")
        } else {
            added(&email)
        };
        assert_eq!(line, &expected, "log[{i}]");
    }
    for i in 0..26 {
        let user = env.get(&format!("u{i:02}@x.com")).expect("stored");
        assert_eq!(user["city"], "Lviv", "user {i}");
    }
    // Both texts were applied whole: two files processed.
    assert_eq!(
        env.stats(),
        json!({"users": 26, "files": {"OK": 2, "WARNING": 0, "ERROR": 0}})
    );
}

#[test]
fn check_changes_nothing() {
    let env = Env::new();
    let seed = env.write("seed.json", &json!({"users": users(0..3, "Kyiv")}));
    assert_eq!(env.import(&[&seed], &[], None).status.code(), Some(0));
    let before = env.export("ndjson");
    let stats_before = env.stats();

    let probe = env.write(
        "probe.json",
        &json!({"users": [
            {"title": "User 0", "email": "u00@x.com", "city": "Kyiv"},
            {"title": "User 1", "email": "u01@x.com", "city": "Odesa"},
            {"title": "Newcomer", "email": "new@x.com"},
            {"title": "Broken", "email": "broken"},
            {"title": "User 2", "email": "u02@x.com", "discount_card": null, "phone": null}
        ]}),
    );
    let out = env.run("check", &[probe.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let response: Value =
        serde_json::from_slice(&out.stdout).expect("check prints a response JSON");
    assert_eq!(response["status"], "WARNING");
    let log = messages(&response);
    assert_eq!(log.len(), 5, "{log:#?}");
    assert_eq!(
        log[0],
        "0 User u00@x.com is already up to date, nothing changed"
    );
    assert_eq!(log[1], "0 User u01@x.com updated successfully");
    assert_eq!(log[2], added("new@x.com"));
    assert!(log[3].starts_with("2 "), "{}", log[3]);
    assert_eq!(
        log[4],
        "0 User u02@x.com is already up to date, nothing changed"
    );

    assert_eq!(env.export("ndjson"), before, "check changed the store");
    assert_eq!(env.stats(), stats_before, "check recorded a file");
    assert_eq!(env.get("new@x.com"), None);
    assert_eq!(
        env.listing(),
        ["probe.json", "seed.json", "seed.response.json"],
        "check wrote a file"
    );

    // And the real import then does what check announced.
    let out = env.import(&[&probe], &[], None);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(response_of(&probe).unwrap(), response);
}

#[test]
fn a_snapshot_left_unfinished_by_a_kill_does_not_lock_the_store_out() {
    // sled 0.34 names a snapshot `snap.N.generating` while writing it and reads the
    // highest `snap.*` name on open, so a kill in the middle of a snapshot left a store
    // that refused to open ("empty/corrupt snapshot file found"); the crash soak hit
    // it. Plant such a file, empty and with a name sorting after every real snapshot.
    if common::sled_only("plants a file among sled's own") {
        return;
    }
    let env = Env::new();
    let a = env.write("a.json", &json!({"users": users(0..5, "Kyiv")}));
    assert_eq!(env.import(&[&a], &[], None).status.code(), Some(0));
    let unfinished = env.db().join("snap.FFFFFFFFFFFFFFFF.generating");
    fs::write(&unfinished, b"").unwrap();

    assert_eq!(env.stats()["users"], 5, "the store opens with every user");
    assert!(!unfinished.exists(), "the unfinished snapshot is removed");
    let b = env.write("b.json", &json!({"users": users(5..7, "Lviv")}));
    assert_eq!(env.import(&[&b], &[], None).status.code(), Some(0));
    assert_eq!(env.stats()["users"], 7, "and it keeps working");
}

/// The log spool files in the store (private copies of requests are `.req`).
fn spool_files(env: &Env) -> usize {
    spool_entries(env, ".log")
}

/// The log spool files a file of several steps cut short or held back keeps: one on
/// sled, none on PostgreSQL (its log is in the database).
fn spooled_logs(env: &Env) -> usize {
    usize::from(env.store.is_none())
}

/// The engine's spool folder: `spool/` on sled, the instance's `spool/pg-…/` on
/// PostgreSQL.
fn spool_dir(env: &Env) -> PathBuf {
    let spool = env.db().join("spool");
    if env.store.is_none() {
        return spool;
    }
    fs::read_dir(&spool)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("pg-"))
        .unwrap_or(spool)
}

fn spool_entries(env: &Env, suffix: &str) -> usize {
    fs::read_dir(spool_dir(env))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_file())
                .filter(|e| e.file_name().to_string_lossy().ends_with(suffix))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn the_log_spool_lives_until_the_response_is_durable_and_no_longer() {
    // A file of several steps keeps its log entries in a spool file beside sled until
    // its response is written; a one-step file keeps them in sled.
    let env = Env::new();
    let a = env.write("a.json", &json!({"users": users(0..5, "Kyiv")}));
    let out = env.import(&[&a], &["--step-users", "2"], Some("after-outbox"));
    assert_aborted(&out);
    assert_eq!(
        spool_files(&env),
        spooled_logs(&env),
        "the held-back response needs its spool"
    );
    let b = env.write("b.json", &json!({"users": users(5..7, "Lviv")}));
    assert_eq!(env.import(&[&b], &[], None).status.code(), Some(0));
    let response = response_of(&a).expect("the held-back response of a.json");
    assert_eq!(messages(&response), added_all(0..5));
    assert_eq!(spool_files(&env), 0, "spool files outlived their responses");

    // A spool no record counts on (a crash between the two) goes at the next start
    // (on PostgreSQL, a copy, at the next start of a writer).
    if env.store.is_none() {
        fs::write(spool_dir(&env).join("0123.log"), b"{}\n").unwrap();
        env.stats();
    } else {
        fs::write(spool_dir(&env).join("0123.req"), b"{}\n").unwrap();
        let c = env.write("c.json", &json!({"users": users(7..8, "Lviv")}));
        assert_eq!(env.import(&[&c], &[], None).status.code(), Some(0));
    }
    assert_eq!(spool_entries(&env, ""), 0, "an orphan spool file was kept");
}

#[test]
fn a_file_cut_short_and_then_removed_is_finished_from_its_copy() {
    // A file cut short keeps its progress, spooled log and private copy for the
    // resume; once it is removed it is finished from the copy at the next start (no
    // response: its request is gone), so the store never holds part of a file, and
    // nothing of it is left in the spool.
    for command in ["import", "run"] {
        let env = Env::new();
        let a = env.write("a.json", &json!({"users": users(0..5, "Kyiv")}));
        let out = env.import(&[&a], &["--step-users", "2"], Some("after-step"));
        assert_aborted(&out);
        assert_eq!(
            spool_files(&env),
            spooled_logs(&env),
            "the cut file's log is spooled"
        );
        assert_eq!(spool_entries(&env, ".req"), 1, "the cut file is copied");
        fs::remove_file(&a).unwrap();

        let b = env.write("b.json", &json!({"users": users(5..6, "Lviv")}));
        let out = match command {
            "import" => env.import(&[&b], &[], None),
            _ => {
                let inbox = env.inbox();
                env.run("run", &["--once", "--watch", inbox.to_str().unwrap()], None)
            }
        };
        assert_eq!(out.status.code(), Some(0), "{command}: {out:?}");
        assert!(response_of(&b).is_some(), "{command}: b.json answered");
        assert_eq!(
            spool_entries(&env, ""),
            0,
            "{command}: the spool outlived its file"
        );
        assert!(
            env.get("u04@x.com").is_some(),
            "{command}: finished from the copy"
        );
        assert!(
            response_of(&a).is_none(),
            "{command}: no response for a removed request"
        );

        // The same request dropped again is a new request, answered whole.
        let a = env.write("a.json", &json!({"users": users(0..5, "Kyiv")}));
        let out = env.import(&[&a], &["--step-users", "2"], None);
        assert_eq!(out.status.code(), Some(0), "{command}: {out:?}");
        let log = messages(&response_of(&a).expect("a.json answered"));
        assert_eq!(log.len(), 5, "{command}: {log:#?}");
        assert_eq!(
            log[4], "0 User u04@x.com is already up to date, nothing changed",
            "{command}"
        );
        assert_eq!(spool_files(&env), 0, "{command}");
    }
}

#[test]
fn a_file_cut_short_is_finished_under_the_settings_it_was_accepted_with() {
    // Between the stop and the resume the admin rotated the token and lowered the
    // size limit. Rejecting the resumed file would leave its first steps applied
    // under an ERROR response that says nothing was.
    let env = Env::new();
    let mut request = json!({"token": "old", "users": users(0..5, "Kyiv")});
    let a = env.write("a.json", &request);
    let out = env.import(
        &[&a],
        &["--step-users", "2", "--token", "old"],
        Some("after-step"),
    );
    assert_aborted(&out);
    assert!(
        env.get("u00@x.com").is_some(),
        "the first step was committed"
    );

    let tight = [
        "--step-users",
        "2",
        "--token",
        "new",
        "--max-file-size",
        "100",
    ];
    let out = env.import(&[&a], &tight, None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let response = response_of(&a).expect("the resumed file's response");
    assert_eq!(messages(&response), added_all(0..5));

    // A new file, or the same name with new content, meets today's settings.
    fs::remove_file(env.inbox().join("a.response.json")).unwrap();
    request["users"] = json!(users(5..7, "Lviv"));
    let a = env.write("a.json", &request);
    let out = env.import(&[&a], &tight, None);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let response = response_of(&a).unwrap();
    assert_eq!(response["status"], "ERROR");
    let message = response["response"]["message"].as_str().unwrap();
    assert!(
        message.contains("100"),
        "too large for the new limit: {message}"
    );
    fs::remove_file(env.inbox().join("a.response.json")).unwrap();
    let out = env.import(&[&a], &["--token", "new"], None);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let response = response_of(&a).unwrap();
    assert_eq!(response["status"], "ERROR");
    let message = response["response"]["message"].as_str().unwrap();
    assert!(message.starts_with("Authorization failed"), "{message}");
    assert!(env.get("u05@x.com").is_none());
}

#[test]
fn ctrl_c_during_import_says_what_is_committed_and_the_rerun_finishes_it() {
    // Issue 11: a Ctrl-C during `import` once killed it without a word on what was
    // committed or how to finish.
    let env = Env::new();
    let big = env.write("big.json", &json!({"users": users(0..25, "Kyiv")}));
    let mark = env.dir.path().join("paused");
    let child = common::process()
        .args(["import", "--step-users", "10", "--db"])
        .arg(env.db())
        .arg(&big)
        .env("USERDROP_FAULT", "pause-after-step")
        .env("USERDROP_PAUSE_MARK", &mark)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !mark.exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "never paused"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    common::signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the first 10 users of") && stderr.contains("run the same import again"),
        "{stderr}"
    );
    assert!(response_of(&big).is_none());
    let out = env.import(&[&big], &["--step-users", "10"], None);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        messages(&response_of(&big).expect("the response")),
        added_all(0..25)
    );
}
