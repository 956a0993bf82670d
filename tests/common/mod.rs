//! What the integration test files share: the binary with a clean environment, and a
//! temporary folder holding a store and a request folder. Each test file adds its own
//! methods to `Env`.

// Each test file is its own crate and uses only part of this module.
#![allow(dead_code)]

use assert_cmd::Command;
use std::fs;
use std::path::PathBuf;
use tempfile::TempDir;

/// The built binary, with none of the variables that change its behaviour inherited.
pub fn userdrop() -> Command {
    let mut cmd = Command::cargo_bin("userdrop").expect("the userdrop binary");
    cmd.env_remove("USERDROP_TOKENS")
        .env_remove("USERDROP_FAULT")
        .env_remove("RUST_LOG");
    cmd
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
