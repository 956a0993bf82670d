//! The daemon's control socket under clients that stall: one that never sends its
//! query, many at once, and a daemon that never answers; and `check` through the
//! socket while the daemon holds the store.

mod common;

use common::{Env, process, signal, userdrop};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// A daemon on the `Env`'s store and inbox, with one user stored and its control
/// socket listening.
struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(env: &Env) -> Daemon {
        let child = process()
            .current_dir(env.dir.path())
            .args(["run", "--db", "data", "--watch", "in"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the daemon");
        let daemon = Daemon { child };
        fs::write(
            env.inbox().join("one.json"),
            r#"{"users":[{"title":"Ivan","email":"ivan@mail.net"}]}"#,
        )
        .expect("a request");
        assert!(
            wait_for(&env.inbox().join("one.response.json")),
            "no response"
        );
        // On PostgreSQL the read commands go to the database: no socket.
        assert!(
            env.store.is_some() || wait_for(&env.db().join("userdrop.sock")),
            "no socket"
        );
        daemon
    }

    /// SIGTERM, and waits for the exit: the store is free for a local command.
    fn stop(mut self) {
        signal(&self.child, "-TERM");
        let status = self.child.wait().expect("the daemon exits");
        assert_eq!(status.code(), Some(0), "the daemon's exit");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(path: &Path) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

/// Runs a read command against the daemon's store, killed after `limit`; returns
/// its output and how long it took.
fn read_command(env: &Env, args: &[&str], limit: Duration) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let out = userdrop()
        .current_dir(env.dir.path())
        .args(args)
        .args(["--db", "data"])
        .timeout(limit)
        .output()
        .expect("the command runs");
    (out, started.elapsed())
}

/// A client that connects and then never sends anything.
fn silent_client(env: &Env) -> UnixStream {
    UnixStream::connect(env.db().join("userdrop.sock")).expect("connect to the daemon")
}

#[test]
fn a_client_that_never_sends_does_not_hold_up_get() {
    if common::sled_only("the daemon's control socket: read commands go to PostgreSQL itself") {
        return;
    }
    let env = Env::new();
    let _daemon = Daemon::start(&env);
    let _silent = silent_client(&env);
    // Let the daemon take the silent connection first.
    std::thread::sleep(Duration::from_millis(100));
    let (out, took) = read_command(&env, &["get", "ivan@mail.net"], Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let user: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a user");
    assert_eq!(user["title"], "Ivan");
    // Served one connection after another, it waited out the silent client's 5 s.
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn forty_silent_clients_do_not_stop_stats() {
    if common::sled_only("the daemon's control socket: read commands go to PostgreSQL itself") {
        return;
    }
    let env = Env::new();
    let _daemon = Daemon::start(&env);
    let _silent: Vec<UnixStream> = (0..40).map(|_| silent_client(&env)).collect();
    std::thread::sleep(Duration::from_millis(100));
    // Past the 16 served at once, the daemon says "busy" and the client asks again
    // until the silent ones are cut off (5 s); one after another they took 200 s.
    let (out, took) = read_command(&env, &["stats", "--json"], Duration::from_secs(15));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats");
    assert_eq!(stats["users"], 1);
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_daemon_that_never_answers_does_not_hang_get() {
    if common::sled_only("the daemon's control socket: read commands go to PostgreSQL itself") {
        return;
    }
    let env = Env::new();
    let daemon = Daemon::start(&env);
    // Stopped, it still holds the store's lock and its socket still takes connections
    // (the kernel queues them), but nothing reads or answers.
    signal(&daemon.child, "-STOP");
    let (out, took) = read_command(&env, &["get", "ivan@mail.net"], Duration::from_secs(30));
    signal(&daemon.child, "-CONT");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no answer within 10 s"), "{stderr}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

// ---------------------------------------------------------------------------------
// check while the daemon runs

/// Request files outside the inbox (the daemon must never take them), against the
/// store `Daemon::start` leaves: ivan@mail.net titled "Ivan". Tokens are `right`.
fn write_checks(env: &Env) {
    let dir = env.dir.path().join("files");
    fs::create_dir_all(&dir).expect("a folder for the files");
    let files = [
        // "already up to date" and "added": both read the store.
        (
            "ok.json",
            r#"{"token":"right","users":[{"title":"Ivan","email":"ivan@mail.net"},{"title":"Olena","email":"olena@mail.net"}]}"#,
        ),
        // "updated" (the store's Ivan), one user rejected, one added.
        (
            "warn.json",
            r#"{"token":"right","users":[{"title":"Ivan Ivanov","email":" IVAN@mail.net"},{"email":"some@email"},{"title":"Petro","email":"petro@mail.net"}]}"#,
        ),
        (
            "error.json",
            r#"{"token":"wrong","users":[{"title":"Eve","email":"eve@mail.net"}]}"#,
        ),
    ];
    for (name, text) in files {
        fs::write(dir.join(name), text).expect("a request file");
    }
}

/// `userdrop check ARGS --db data`, from the `Env`'s folder.
fn check(env: &Env, args: &[&str]) -> Output {
    let (out, _) = read_command(env, &[&["check"], args].concat(), Duration::from_secs(30));
    out
}

/// The same stdout, stderr and exit code: what a local check printed.
fn assert_same(through_daemon: &Output, local: &Output, what: &str) {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert_eq!(
        text(&through_daemon.stdout),
        text(&local.stdout),
        "{what}: stdout"
    );
    assert_eq!(
        text(&through_daemon.stderr),
        text(&local.stderr),
        "{what}: stderr"
    );
    assert_eq!(
        through_daemon.status.code(),
        local.status.code(),
        "{what}: exit code"
    );
}

fn export(env: &Env) -> Vec<u8> {
    let (out, _) = read_command(
        env,
        &["export", "--format", "ndjson"],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    out.stdout
}

/// Every `*.response.json` under the `Env`'s folder.
fn responses(env: &Env) -> Vec<String> {
    let mut found = Vec::new();
    for dir in [env.inbox(), env.dir.path().join("files")] {
        for entry in fs::read_dir(&dir).expect("a folder").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".response.json") {
                found.push(name);
            }
        }
    }
    found.sort();
    found
}

/// The checks of `a_check_while_the_daemon_runs_prints_what_a_local_check_prints`.
const CHECKS: [&[&str]; 3] = [
    &["--token", "right", "files/ok.json"],
    &["--token", "right", "--lang", "uk", "files/warn.json"],
    &["--token", "right", "files/error.json"],
];

#[test]
fn a_check_while_the_daemon_runs_prints_what_a_local_check_prints() {
    let env = Env::new();
    write_checks(&env);
    let daemon = Daemon::start(&env);
    let before = export(&env);
    let through_daemon: Vec<Output> = CHECKS.iter().map(|args| check(&env, args)).collect();
    let codes: Vec<Option<i32>> = through_daemon.iter().map(|o| o.status.code()).collect();
    assert_eq!(codes, [Some(0), Some(3), Some(3)], "{through_daemon:?}");
    let ok = String::from_utf8_lossy(&through_daemon[0].stdout).into_owned();
    assert!(
        ok.contains("already up to date") && ok.contains("added"),
        "{ok}"
    );
    let warn = String::from_utf8_lossy(&through_daemon[1].stdout).into_owned();
    assert!(warn.contains("\"WARNING\""), "{warn}");
    let error = String::from_utf8_lossy(&through_daemon[2].stdout).into_owned();
    assert!(error.contains("Authorization failed"), "{error}");
    // Nothing applied, nothing written.
    assert_eq!(export(&env), before);
    assert_eq!(responses(&env), ["one.response.json"]);
    daemon.stop();
    for (args, daemon_said) in CHECKS.iter().zip(&through_daemon) {
        assert_same(daemon_said, &check(&env, args), &args.join(" "));
    }
    assert_eq!(export(&env), before);
    assert_eq!(responses(&env), ["one.response.json"]);
}

#[test]
fn several_files_in_one_check_while_the_daemon_runs() {
    let env = Env::new();
    write_checks(&env);
    std::os::unix::fs::symlink("ok.json", env.dir.path().join("files/link.json")).expect("a link");
    let args = [
        "--token",
        "right",
        "files/ok.json",
        "files/missing.json",
        "files/warn.json",
        "files/link.json",
        "files/error.json",
    ];
    let daemon = Daemon::start(&env);
    let through_daemon = check(&env, &args);
    // A file that cannot be read is an operational failure; the others are judged.
    assert_eq!(through_daemon.status.code(), Some(1), "{through_daemon:?}");
    let stdout = String::from_utf8_lossy(&through_daemon.stdout).into_owned();
    assert_eq!(stdout.matches("\"status\"").count(), 3, "{stdout}");
    let stderr = String::from_utf8_lossy(&through_daemon.stderr).into_owned();
    for line in [
        "files/ok.json: OK",
        "files/warn.json: WARNING",
        "files/error.json: ERROR",
    ] {
        assert!(stderr.contains(line), "{stderr}");
    }
    assert!(
        stderr.contains("link.json is not a regular file"),
        "{stderr}"
    );
    daemon.stop();
    assert_same(&through_daemon, &check(&env, &args), "several files");
    assert_eq!(responses(&env), ["one.response.json"]);
}

/// A client that sends a check's query promising 1 MB, then nothing.
fn stalled_check(env: &Env) -> UnixStream {
    let mut stream = silent_client(env);
    let query = r#"{"Check":{"name":"stalled.json","size":1000000,"tokens":[],"max_file_size":536870912,"lang":"en","step_users":1000}}"#;
    stream
        .write_all(format!("{query}\n").as_bytes())
        .expect("send the query");
    stream
}

/// The check folders in the store's folder.
fn check_folders(env: &Env) -> usize {
    fs::read_dir(env.db())
        .expect("the store's folder")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".check-"))
        .count()
}

#[test]
fn a_stalled_check_does_not_hold_up_a_check_a_get_or_the_daemon() {
    if common::sled_only("the daemon's control socket: read commands go to PostgreSQL itself") {
        return;
    }
    let env = Env::new();
    write_checks(&env);
    let _daemon = Daemon::start(&env);
    let mut stalled = stalled_check(&env);
    std::thread::sleep(Duration::from_millis(100));

    // Served one after another, each would wait out the stalled client's 5 s.
    let (out, took) = read_command(
        &env,
        &["check", "--token", "right", "files/ok.json"],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(took < Duration::from_secs(4), "check took {took:?}");
    assert_eq!(
        check_folders(&env),
        1,
        "the stalled check's bytes have a folder"
    );
    let (get, took) = read_command(&env, &["get", "ivan@mail.net"], Duration::from_secs(5));
    assert_eq!(get.status.code(), Some(0), "{get:?}");
    assert!(took < Duration::from_secs(4), "get took {took:?}");
    fs::write(
        env.inbox().join("two.json"),
        r#"{"users":[{"title":"Taras","email":"taras@mail.net"}]}"#,
    )
    .expect("a request");
    assert!(
        wait_for(&env.inbox().join("two.response.json")),
        "no response"
    );

    // Cut off after 5 s without a byte: its connection, slot and folder are freed.
    stalled
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("a timeout");
    let mut rest = Vec::new();
    let read = stalled.read_to_end(&mut rest);
    assert!(matches!(read, Ok(0)), "{read:?}");
    assert_eq!(
        check_folders(&env),
        0,
        "the stalled check's folder is removed"
    );
}

#[test]
fn a_check_of_a_file_over_the_size_limit_sends_nothing_to_the_daemon() {
    let env = Env::new();
    write_checks(&env);
    let args = [
        "--token",
        "right",
        "--max-file-size",
        "50",
        "files/warn.json",
    ];
    let daemon = Daemon::start(&env);
    // A stopped daemon answers nobody: the check is judged without an exchange.
    signal(&daemon.child, "-STOP");
    let (through_daemon, took) = read_command(
        &env,
        &[&["check"], &args[..]].concat(),
        Duration::from_secs(30),
    );
    signal(&daemon.child, "-CONT");
    assert_eq!(through_daemon.status.code(), Some(3), "{through_daemon:?}");
    let stdout = String::from_utf8_lossy(&through_daemon.stdout).into_owned();
    assert!(stdout.contains("The file is too large"), "{stdout}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    daemon.stop();
    assert_same(&through_daemon, &check(&env, &args), "over the size limit");
}
