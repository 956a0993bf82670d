//! The daemon's control socket under clients that stall: one that never sends its
//! query, many at once, and a daemon that never answers.

mod common;

use common::{Env, process, signal, userdrop};
use std::fs;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Stdio};
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
        assert!(wait_for(&env.db().join("userdrop.sock")), "no socket");
        daemon
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
