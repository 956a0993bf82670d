//! Log lines as an uploader would try to forge them: a request name that holds a
//! newline followed by what looks like a log line of its own.

mod common;

use common::{Env, userdrop};
use std::fs;

const FORGED: &str = "evil\n2026-01-01T00:00:00Z  INFO forged.json";

/// The stderr of `run --once` on an inbox holding the forged name, in `format`.
fn stderr_of_once(format: &str) -> String {
    let env = Env::new();
    fs::write(
        env.inbox().join(FORGED),
        r#"{"users":[{"title":"t","email":"a@b.co"}]}"#,
    )
    .expect("the request");
    let out = userdrop()
        .current_dir(env.dir.path())
        .args(["run", "--once", "--db", "data", "--watch", "in"])
        .args(["--log-format", format])
        .output()
        .expect("run --once");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8(out.stderr).expect("UTF-8 logs")
}

#[test]
fn a_newline_in_a_file_name_does_not_start_a_log_line() {
    let stderr = stderr_of_once("text");
    for line in stderr.lines() {
        assert!(
            !line.starts_with("2026-01-01"),
            "forged line: {line}\n{stderr}"
        );
    }
    // The name is still there, escaped, on the line of the file it names.
    assert!(
        stderr.contains(r"evil\n2026-01-01T00:00:00Z  INFO forged.json"),
        "{stderr}"
    );
}

#[test]
fn json_logs_keep_their_own_escaping() {
    let stderr = stderr_of_once("json");
    let mut named = false;
    for line in stderr.lines() {
        let event: serde_json::Value = serde_json::from_str(line).expect("one JSON event a line");
        named |= event.to_string().contains(r"evil\n2026-01-01");
    }
    assert!(named, "{stderr}");
}
