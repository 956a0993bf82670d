//! The systemd unit shipped in `docs/`: systemd accepts it, and it agrees with the
//! example config it is installed with (README, "Install on a server"). A unit that
//! names an inbox the config does not use would start fine and then fail on the first
//! response with a read-only file system.

use assert_cmd::cargo::cargo_bin;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn docs(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name)
}

fn unit() -> String {
    fs::read_to_string(docs("userdrop.service")).expect("docs/userdrop.service")
}

/// Every value of `key=` in the unit, in order.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .collect()
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    // verify insists that ExecStart's program exists: point it at the built binary,
    // the only line changed.
    let text = unit();
    let exec = values(&text, "ExecStart");
    assert_eq!(exec.len(), 1, "one ExecStart");
    let program = exec[0].split_whitespace().next().expect("a program");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("userdrop.service");
    let binary = cargo_bin("userdrop");
    fs::write(
        &copy,
        text.replacen(program, binary.to_str().expect("a UTF-8 path"), 1),
    )
    .unwrap();

    let out = match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("systemd-analyze is not installed: skipped (apt-get install systemd)");
            return;
        }
        Err(e) => panic!("cannot run systemd-analyze: {e}"),
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // verify exits 0 on warnings about the unit itself; the README promises silence.
    let about_unit: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("userdrop.service"))
        .collect();
    assert!(about_unit.is_empty(), "{about_unit:#?}");
}

#[test]
fn the_unit_and_the_example_config_agree() {
    let text = unit();
    let example = fs::read_to_string(docs("userdrop.example.toml")).unwrap();
    let config: toml::Table = toml::from_str(&example).expect("the example parses");
    let writable: Vec<&str> = values(&text, "ReadWritePaths")
        .into_iter()
        .map(|p| p.trim_start_matches('-'))
        .collect();

    let watch = config["watch"].as_str().expect("watch");
    assert!(writable.contains(&watch), "{watch} not in {writable:?}");

    // The metrics file is commented out in the example until step 8 turns it on.
    let metrics = example
        .lines()
        .find_map(|l| l.strip_prefix("# metrics_file = "))
        .expect("a commented metrics_file line");
    let metrics: String = toml::from_str::<toml::Value>(metrics)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| metrics.trim_matches('"').to_owned());
    let folder = Path::new(&metrics).parent().unwrap().to_str().unwrap();
    assert!(writable.contains(&folder), "{folder} not in {writable:?}");

    // The store lives in the StateDirectory= that systemd creates for the daemon.
    let state = values(&text, "StateDirectory");
    assert_eq!(state.len(), 1);
    let db = config["db"].as_str().expect("db");
    assert!(
        db.starts_with(&format!("/var/lib/{}/", state[0])),
        "db {db} is outside /var/lib/{}",
        state[0]
    );

    // ExecStart reads the config where README step 3 installs it.
    let configuration = values(&text, "ConfigurationDirectory");
    assert_eq!(configuration.len(), 1);
    let exec = values(&text, "ExecStart")[0];
    let wanted = format!("--config /etc/{}/userdrop.toml", configuration[0]);
    assert!(exec.ends_with(&wanted), "{exec}");
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.contains(&format!(
            "docs/userdrop.example.toml /etc/{}/userdrop.toml",
            configuration[0]
        )),
        "README step 3 installs the config elsewhere"
    );
}
