//! What the tests of the admin's commands (admin.rs, attack_admin.rs) share: a daemon
//! on the test's inbox (`in/`) and store, and a command run against a given store.

use super::{Env, process, signal, userdrop};
use std::fs;
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// A daemon on `env`'s inbox and store, stopped and reaped when dropped.
pub struct Daemon(pub Child);

impl Daemon {
    pub fn start(env: &Env) -> Daemon {
        // A stopped daemon's socket stays behind; this one's is waited for.
        let socket = env.db().join("userdrop.sock");
        let _ = fs::remove_file(&socket);
        let child = process()
            .envs(env.store_vars())
            .current_dir(env.dir.path())
            .args(["run", "--watch", "in", "--db", "data", "--settle", "300"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the daemon starts");
        assert!(
            wait_until(|| socket.exists()),
            "the daemon never opened its socket"
        );
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        signal(&self.0, "-TERM");
        let _ = self.0.wait();
    }
}

/// Polls `done` until it holds, for up to 20 s; whether it did.
pub fn wait_until(mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `userdrop ARGS --db DB`, in the test's folder.
pub fn run(env: &Env, db: &Path, args: &[&str]) -> Output {
    userdrop()
        .current_dir(env.dir.path())
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .expect("userdrop runs")
}
