//! A request rewritten in place while it is being applied (SPEC §2: never half a
//! file). userdrop reads a file twice through one descriptor; a rewrite in place is
//! caught by its size and time before anything is committed. `USERDROP_FAULT=
//! pause-after-first-pass` holds the process for a second between the two passes, so
//! the test can rewrite the file at a known moment.

mod common;

use common::{Env, process, signal, userdrop};
use serde_json::{Value, json};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn request(emails: &[&str]) -> Vec<u8> {
    let users: Vec<Value> = emails
        .iter()
        .map(|e| json!({"title": "T", "email": e}))
        .collect();
    serde_json::to_vec_pretty(&json!({ "users": users })).unwrap()
}

/// Truncates and rewrites `path` through the same inode, as an SFTP re-upload does.
fn rewrite_in_place(path: &Path, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

/// The file a paused process creates when its pause begins.
fn pause_mark(env: &Env) -> std::path::PathBuf {
    env.dir.path().join("paused")
}

/// Waits until the process paused (see `USERDROP_PAUSE_MARK`), at most 20 s.
fn wait_for_pause(env: &Env) {
    let mark = pause_mark(env);
    let started = Instant::now();
    while !mark.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the process never paused"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    fs::remove_file(mark).unwrap();
}

/// A daemon on `env`'s inbox with `args`, pausing at `fault` (see `wait_for_pause`).
fn paused_daemon(env: &Env, args: &[&str], fault: &str) -> std::process::Child {
    let daemon = process()
        .arg("run")
        .args(args)
        .arg("--watch")
        .arg(env.inbox())
        .arg("--db")
        .arg(env.db())
        .env("USERDROP_FAULT", fault)
        .env("USERDROP_PAUSE_MARK", pause_mark(env))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    daemon
}

/// Puts `a.json` in the inbox as an SFTP client that uploads under a hidden name
/// and renames does; returns its path.
fn upload(env: &Env, bytes: &[u8]) -> std::path::PathBuf {
    let hidden = env.inbox().join(".a.json.part");
    let a = env.inbox().join("a.json");
    fs::write(&hidden, bytes).unwrap();
    fs::rename(&hidden, &a).unwrap();
    a
}

/// Waits up to `limit` for `a.json`'s response, then stops the daemon, which must
/// exit 0; returns the response's path, asserting it exists.
fn answered_then_stopped(
    env: &Env,
    mut daemon: std::process::Child,
    limit: Duration,
) -> std::path::PathBuf {
    let response = env.inbox().join("a.response.json");
    let started = Instant::now();
    while !response.exists() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
    }
    // A pause after a step of the answered text ends too before the stop.
    std::thread::sleep(Duration::from_millis(200));
    signal(&daemon, "-TERM");
    let status = daemon.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(response.exists(), "no response within {limit:?}");
    response
}

fn stored(env: &Env, email: &str) -> bool {
    let out = userdrop()
        .args(["get", "--db"])
        .arg(env.db())
        .arg(email)
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => true,
        Some(1) => false,
        other => panic!("get exited with {other:?}: {out:?}"),
    }
}

fn messages(response: &Path) -> Vec<String> {
    let v: Value = serde_json::from_slice(&fs::read(response).unwrap()).unwrap();
    v["response"]["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["info"][0]["message"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn import_of_a_file_rewritten_in_place_applies_nothing_and_says_so() {
    let env = Env::new();
    let a = env.inbox().join("a.json");
    fs::write(&a, request(&["old1@x.com", "old2@x.com", "old3@x.com"])).unwrap();
    let child = process()
        .args(["import", "--db"])
        .arg(env.db())
        .arg(&a)
        .env("USERDROP_FAULT", "pause-after-first-pass")
        .env("USERDROP_PAUSE_MARK", pause_mark(&env))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_pause(&env);
    rewrite_in_place(&a, &request(&["new1@x.com", "new2@x.com"]));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("changed while it was being applied"),
        "{stderr}"
    );
    assert!(!env.inbox().join("a.response.json").exists());
    for email in ["old1@x.com", "old2@x.com", "old3@x.com", "new1@x.com"] {
        assert!(!stored(&env, email), "{email} was applied");
    }

    // Run again on the file as it now is: applied whole.
    let out = userdrop()
        .args(["import", "--db"])
        .arg(env.db())
        .arg(&a)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        messages(&env.inbox().join("a.response.json")),
        [
            "User new1@x.com added successfully",
            "User new2@x.com added successfully"
        ]
    );
}

#[test]
fn the_daemon_takes_a_file_rewritten_in_place_again_and_answers_its_new_content() {
    let env = Env::new();
    // A settle time far beyond the wait below: the rewritten file must be taken again
    // because it changed, not because it settled.
    let daemon = paused_daemon(&env, &["--settle", "600000"], "pause-after-first-pass");
    let a = upload(&env, &request(&["old1@x.com", "old2@x.com", "old3@x.com"]));
    wait_for_pause(&env);
    rewrite_in_place(&a, &request(&["new1@x.com", "new2@x.com"]));

    let response = answered_then_stopped(&env, daemon, Duration::from_secs(15));
    assert_eq!(
        messages(&response),
        [
            "User new1@x.com added successfully",
            "User new2@x.com added successfully"
        ]
    );
    for email in ["old1@x.com", "old2@x.com", "old3@x.com"] {
        assert!(
            !stored(&env, email),
            "{email} of the old content was applied"
        );
    }
}

/// Every user of `emails` stored, or none: never a part (SPEC §2).
fn stored_count(env: &Env, emails: &[String]) -> usize {
    emails.iter().filter(|e| stored(env, e)).count()
}

fn five() -> Vec<String> {
    (0..5).map(|i| format!("old{i}@x.com")).collect()
}

#[test]
fn import_of_a_file_rewritten_as_garbage_after_its_first_step_never_answers_error_over_part_of_it()
{
    // A 5-user file in steps of 2: the first step is committed, then (during the
    // pause) the uploader rewrites the request in place as malformed JSON. Once,
    // the old code stopped there, leaving 2 of the 5 users applied with no response,
    // and the next run answered ERROR over them. Now the first text is finished from
    // the private copy taken before its first step; the request there now is a new
    // one, and its ERROR is true of it: nothing of it was applied.
    let env = Env::new();
    let a = env.inbox().join("a.json");
    let emails = five();
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    fs::write(&a, request(&refs)).unwrap();
    let child = process()
        .args(["import", "--step-users", "2", "--db"])
        .arg(env.db())
        .arg(&a)
        .env("USERDROP_FAULT", "pause-after-step")
        .env("USERDROP_PAUSE_MARK", pause_mark(&env))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_pause(&env);
    rewrite_in_place(&a, b"{\"users\": [ {\"title\": \"broken");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stored_count(&env, &emails),
        5,
        "the first text is applied whole, never in part: {stderr}"
    );
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let v: Value =
        serde_json::from_slice(&fs::read(env.inbox().join("a.response.json")).unwrap()).unwrap();
    assert_eq!(v["status"], "ERROR", "{v}");
    assert_eq!(v["response"]["log"], json!([]));
}

#[test]
fn the_daemon_finishes_a_file_rewritten_after_its_first_step_and_answers_the_new_text() {
    let env = Env::new();
    let args = ["--settle", "300", "--step-users", "2"];
    let daemon = paused_daemon(&env, &args, "pause-after-step");
    let emails = five();
    let refs: Vec<&str> = emails.iter().map(String::as_str).collect();
    let a = upload(&env, &request(&refs));
    wait_for_pause(&env);
    rewrite_in_place(&a, &request(&["new1@x.com"]));

    let response = answered_then_stopped(&env, daemon, Duration::from_secs(20));
    assert_eq!(messages(&response), ["User new1@x.com added successfully"]);
    assert_eq!(stored_count(&env, &emails), 5, "the first text whole");
}
