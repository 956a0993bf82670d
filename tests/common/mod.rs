//! What the integration test files share: the binary with a clean environment, and a
//! temporary folder holding a store and a request folder. Each test file adds its own
//! methods to `Env`. `requests` holds the generated request files and the model of
//! the soak tests (crash.rs, powercut.rs).
//!
//! The engine: sled in `--db`, unless `USERDROP_TEST_ENGINE=postgres`. Then each
//! [`Env::new`] (or [`fresh_store`], for a test without an `Env`) creates a database
//! of its own on one PostgreSQL cluster shared by the test binary ([`pg::shared`]),
//! and every command [`userdrop`] and [`process`] build on that thread afterwards gets
//! `USERDROP_STORE=<its URL>` (the latest one still alive). A command for another store, or built on another
//! thread, takes the store's variables explicitly ([`Env::store_vars`], [`store_vars`]).
//! [`sled_only`] skips the few tests of sled's own files and of the control socket.

// Each test file is its own crate and uses only part of this module.
#![allow(dead_code)]

pub mod admin;
pub mod pg;
pub mod requests;

use assert_cmd::Command;
use std::cell::RefCell;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use tempfile::TempDir;

/// The variables that change the binary's behaviour; no test inherits them.
const CLEARED: [&str; 9] = [
    "USERDROP_STORE",
    "USERDROP_INSTANCE",
    "USERDROP_LANG",
    "USERDROP_TYPES",
    "USERDROP_TOKENS",
    "USERDROP_TOKEN_FILE",
    "USERDROP_FAULT",
    "USERDROP_PAUSE_MARK",
    "RUST_LOG",
];

/// The built binary, with none of the variables that change its behaviour inherited.
pub fn userdrop() -> Command {
    let mut cmd = Command::cargo_bin("userdrop").expect("the userdrop binary");
    for variable in CLEARED {
        cmd.env_remove(variable);
    }
    cmd.envs(store_vars(current_store().as_deref()));
    cmd
}

/// The same, as a plain process: for a child a test starts, signals and waits for.
/// Its stdin is closed.
pub fn process() -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("userdrop"));
    for variable in CLEARED {
        cmd.env_remove(variable);
    }
    cmd.envs(store_vars(current_store().as_deref()));
    cmd.stdin(std::process::Stdio::null());
    cmd
}

/// Whether the tests run on PostgreSQL (`USERDROP_TEST_ENGINE=postgres`) instead of
/// sled (unset, empty or `sled`).
pub fn postgres() -> bool {
    match std::env::var("USERDROP_TEST_ENGINE").as_deref() {
        Ok("postgres") => true,
        Ok("sled" | "") | Err(_) => false,
        Ok(other) => panic!("USERDROP_TEST_ENGINE={other}: sled or postgres"),
    }
}

thread_local! {
    /// The live databases made on this thread, the latest last: the commands built on
    /// it use the latest, and a helper's `Env` dropped again gives the test's back.
    static STORE: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// The connection string of the store the commands built on this thread use; `None`
/// on sled.
pub fn current_store() -> Option<String> {
    STORE.with(|s| s.borrow().last().cloned())
}

/// A test's database on the shared cluster, dropped with it.
pub struct Database {
    pub name: String,
    /// Its `postgres://` URL, as `--store` and `USERDROP_STORE` take it.
    pub url: String,
}

impl Drop for Database {
    fn drop(&mut self) {
        // At the thread's end (thread_store), the stack may be gone already.
        let _ = STORE.try_with(|s| s.borrow_mut().retain(|url| *url != self.url));
        pg::shared().drop_database(&self.name);
    }
}

/// On PostgreSQL, a new empty database, made the store of the commands built on this
/// thread from now on, until it is dropped. `None` on sled.
pub fn fresh_store() -> Option<Database> {
    if !postgres() {
        return None;
    }
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let cluster = pg::shared();
    cluster.database(&name);
    let url = cluster.postgres_url(&name);
    STORE.with(|s| s.borrow_mut().push(url.clone()));
    Some(Database { name, url })
}

thread_local! {
    /// The databases of [`thread_store`], dropped when the test's thread ends.
    static KEPT: RefCell<Vec<Database>> = const { RefCell::new(Vec::new()) };
}

/// [`fresh_store`] for a test without an `Env`: the database lives as long as the
/// test's thread; its URL (`None` on sled).
pub fn thread_store() -> Option<String> {
    let db = fresh_store()?;
    let url = db.url.clone();
    KEPT.with(|k| k.borrow_mut().push(db));
    Some(url)
}

/// The variables that point a command at `store` (none on sled).
pub fn store_vars(store: Option<&str>) -> Vec<(&'static str, String)> {
    store
        .map(|url| ("USERDROP_STORE", url.to_owned()))
        .into_iter()
        .collect()
}

/// True (skip: the test returns at once) when the tests run on PostgreSQL and the
/// test is about sled's own files or the daemon's control socket; says why, past the
/// test harness's capture.
pub fn sled_only(why: &str) -> bool {
    if !postgres() {
        return false;
    }
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let _ = writeln!(std::io::stderr(), "SKIPPED on PostgreSQL: {test}: {why}");
    true
}

/// Sends `signal` ("-TERM", "-HUP", ...) to a child that is still running.
pub fn signal(child: &std::process::Child, signal: &str) {
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill {signal} {pid}");
}

/// A temporary folder: the store in `data/` (on PostgreSQL, a database of its own and
/// `data/` only the local copies), request files in `in/`.
pub struct Env {
    pub dir: TempDir,
    /// The PostgreSQL store; `None` on sled.
    pub store: Option<Database>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("a temporary folder");
        fs::create_dir(dir.path().join("in")).expect("the request folder");
        Env {
            dir,
            store: fresh_store(),
        }
    }

    /// The variables that point a command at this store, for a test with two stores
    /// or a command built on another thread (none on sled).
    pub fn store_vars(&self) -> Vec<(&'static str, String)> {
        store_vars(self.store_url())
    }

    /// What an error about a missing store names it by: the `--db` folder on sled,
    /// the database (the end of the URL the message shows) on PostgreSQL.
    pub fn store_named(&self) -> String {
        match &self.store {
            None => self.db().display().to_string(),
            Some(db) => format!("/{}: ", db.name),
        }
    }

    /// The PostgreSQL store's URL; `None` on sled.
    pub fn store_url(&self) -> Option<&str> {
        self.store.as_ref().map(|s| s.url.as_str())
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn inbox(&self) -> PathBuf {
        self.dir.path().join("in")
    }
}
