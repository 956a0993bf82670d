//! The store's format version (SPEC §6): recorded in every store, and a version this
//! binary does not know refused, naming both versions and the way to upgrade, with the
//! store left untouched.

mod common;

use common::{Env, userdrop};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn import(env: &Env) {
    let file = env.inbox().join("a.json");
    fs::write(
        &file,
        r#"{"users":[{"title":"A","email":"a@shop.example"}]}"#,
    )
    .unwrap();
    let out = userdrop()
        .arg("import")
        .arg(&file)
        .arg("--db")
        .arg(env.db())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every file under `dir` with its bytes, mode and modification time.
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32, i64, i64)> {
    let mut all = BTreeMap::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder).unwrap() {
            let entry = entry.unwrap();
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            let name = entry.path().display().to_string();
            if meta.is_dir() {
                folders.push(entry.path());
                all.insert(name, (Vec::new(), meta.mode(), 0, 0));
            } else {
                let bytes = fs::read(entry.path()).unwrap();
                all.insert(name, (bytes, meta.mode(), meta.mtime(), meta.mtime_nsec()));
            }
        }
    }
    all
}

#[test]
fn every_store_records_its_format_and_an_old_one_gains_it() {
    let env = Env::new();
    import(&env);
    let format = env.db().join("format");
    assert_eq!(fs::read_to_string(&format).unwrap(), "2\n");
    // A store made before versions were recorded is version 1, and version 1 is read
    // and moved to version 2 at its open.
    for older in [None, Some("1\n")] {
        match older {
            None => fs::remove_file(&format).unwrap(),
            Some(text) => fs::write(&format, text).unwrap(),
        }
        let out = userdrop()
            .args(["get", "a@shop.example", "--db"])
            .arg(env.db())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"title\": \"A\""));
        assert_eq!(fs::read_to_string(&format).unwrap(), "2\n");
    }
}

#[test]
fn a_store_from_the_future_is_refused_and_left_untouched() {
    let env = Env::new();
    import(&env);
    fs::write(env.db().join("format"), "3\n").unwrap();
    let before = snapshot(&env.db());
    let commands: [&[&str]; 4] = [
        &["get", "a@shop.example"],
        &["stats"],
        &["export"],
        &["run", "--once", "--watch"],
    ];
    for args in commands {
        let mut cmd = userdrop();
        cmd.args(args);
        if args[0] == "run" {
            cmd.arg(env.inbox());
        }
        let out = cmd.arg("--db").arg(env.db()).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains("format version 3")
                && said.contains("reads version 2")
                && said.contains("userdrop backup")
                && said.contains("userdrop restore"),
            "{args:?}: {said}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert_eq!(snapshot(&env.db()), before, "the store was touched");
}
