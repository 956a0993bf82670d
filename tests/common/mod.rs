//! What the integration test files share: the binary with a clean environment, and a
//! temporary folder holding a store and a request folder. Each test file adds its own
//! methods to `Env`. `requests` holds the generated request files and the model of
//! the soak tests (crash.rs, powercut.rs).

// Each test file is its own crate and uses only part of this module.
#![allow(dead_code)]

pub mod admin;
pub mod pg;
pub mod requests;

use assert_cmd::Command;
use std::fs;
use std::path::PathBuf;
use tempfile::TempDir;

/// The variables that change the binary's behaviour; no test inherits them.
const CLEARED: [&str; 7] = [
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
    cmd
}

/// The same, as a plain process: for a child a test starts, signals and waits for.
/// Its stdin is closed.
pub fn process() -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("userdrop"));
    for variable in CLEARED {
        cmd.env_remove(variable);
    }
    cmd.stdin(std::process::Stdio::null());
    cmd
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

/// A temporary folder: the store in `data/`, request files in `in/`.
pub struct Env {
    pub dir: TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("a temporary folder");
        fs::create_dir(dir.path().join("in")).expect("the request folder");
        Env { dir }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn inbox(&self) -> PathBuf {
        self.dir.path().join("in")
    }
}
