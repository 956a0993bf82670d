//! Log lines (SPEC §6, README "Logs"): as an uploader would try to forge them (a
//! request name that holds a newline followed by what looks like a log line of its
//! own); one line per processed file with its level and fields, in text and JSON;
//! journald priorities when stderr is the journal's stream; the start and stop lines.

mod common;

use common::{Env, userdrop};
use serde_json::{Value, json};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

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

// ---------------------------------------------------------------------------------
// One line per processed file, its level and its fields (SPEC §6, README "Logs")
// ---------------------------------------------------------------------------------

const TOKEN: &str = "s3cret-token";

/// An inbox with one file of each kind: `OK`, `WARNING` (one bad user of two),
/// `ERROR` for a wrong token, `ERROR` for JSON cut short.
fn four_kinds(env: &Env) {
    let user = |n: &str| format!(r#"{{"title":"T","email":"{n}@shop.example"}}"#);
    let files = [
        (
            "ok.json",
            format!(r#"{{"token":"{TOKEN}","users":[{}]}}"#, user("ok")),
        ),
        (
            "warning.json",
            format!(
                r#"{{"token":"{TOKEN}","users":[{},{{"title":"T","email":"not-an-email"}}]}}"#,
                user("w")
            ),
        ),
        (
            "token.json",
            format!(r#"{{"token":"wrong-token","users":[{}]}}"#, user("t")),
        ),
        ("broken.json", format!(r#"{{"token":"{TOKEN}","users":["#)),
    ];
    for (name, text) in files {
        fs::write(env.inbox().join(name), text).expect("the request");
    }
}

/// What `JOURNAL_STREAM` says in a run.
#[derive(Clone, Copy)]
enum Stream {
    Unset,
    /// The device and inode of the file that stderr is, as systemd sets it.
    Stderr,
    /// Those of another file: a variable inherited by a redirected process.
    Elsewhere,
}

/// `userdrop run --once ARGS` on `env`'s inbox, its stderr to a file: its exit code
/// and its logs.
fn once(env: &Env, args: &[&str], stream: Stream) -> (Option<i32>, String) {
    let log = env.dir.path().join("stderr.log");
    let stderr = fs::File::create(&log).expect("the log file");
    let mut cmd = common::process();
    cmd.current_dir(env.dir.path())
        .args([
            "run", "--once", "--db", "data", "--watch", "in", "--settle", "100",
        ])
        .args(["--token", TOKEN])
        .args(args)
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(stderr);
    let named = match stream {
        Stream::Unset => None,
        Stream::Stderr => Some(log.clone()),
        Stream::Elsewhere => Some(env.inbox()),
    };
    if let Some(file) = named {
        let meta = fs::metadata(file).expect("stat");
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    let status = cmd.status().expect("run --once");
    let logs = fs::read_to_string(&log).expect("UTF-8 logs");
    assert!(!logs.contains(TOKEN), "a token was logged:\n{logs}");
    (status.code(), logs)
}

/// Every line of `stderr` as a JSON object.
fn events(stderr: &str) -> Vec<Value> {
    stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// The one event with `message` among `events` whose `file` ends in `/name`.
fn line_for<'a>(events: &'a [Value], message: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == message)
        .filter(|e| {
            e["file"]
                .as_str()
                .is_some_and(|f| f.ends_with(&format!("/{name}")))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {message:?} line for {name}: {events:#?}"
    );
    found[0]
}

/// The one line of `stderr` that names `name`.
fn text_line<'a>(stderr: &'a str, name: &str) -> &'a str {
    let found: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(&format!("/{name}\"")) || l.contains(&format!("/{name} ")))
        .collect();
    assert_eq!(found.len(), 1, "one line for {name}:\n{stderr}");
    found[0]
}

/// Whether `line` holds an RFC 3339 date and time (`2026-05-01T10:00`).
fn has_timestamp(line: &str) -> bool {
    let b = line.as_bytes();
    let shape = b"dddd-dd-ddTdd:";
    b.windows(shape.len()).any(|w| {
        w.iter().zip(shape).all(|(c, s)| match s {
            b'd' => c.is_ascii_digit(),
            _ => c == s,
        })
    })
}

#[test]
fn json_lines_carry_the_level_the_counts_and_for_an_error_its_reason() {
    let env = Env::new();
    four_kinds(&env);
    let (code, stderr) = once(&env, &["--log-format", "json"], Stream::Unset);
    assert_eq!(code, Some(3), "{stderr}");
    let events = events(&stderr);
    for event in &events {
        assert!(event["timestamp"].is_string(), "{event}");
        assert!(
            event["level"].is_string() && event["message"].is_string(),
            "{event}"
        );
    }
    let ok = line_for(&events, "processed", "ok.json");
    assert_eq!(ok["level"], "INFO", "{ok}");
    assert_eq!(ok["status"], "OK", "{ok}");
    assert_eq!(
        (&ok["applied"], &ok["rejected"]),
        (&json!(1), &json!(0)),
        "{ok}"
    );
    assert!(ok["ms"].is_u64() && ok.get("reason").is_none(), "{ok}");

    let warning = line_for(&events, "processed", "warning.json");
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert_eq!(warning["status"], "WARNING", "{warning}");
    assert_eq!(
        (&warning["applied"], &warning["rejected"]),
        (&json!(1), &json!(1))
    );
    assert!(warning["ms"].is_u64(), "{warning}");
    // A user's problems stay in the response: they quote the user's email.
    assert!(!stderr.contains("not-an-email"), "{stderr}");

    for (name, reason) in [
        ("token.json", "Authorization failed"),
        ("broken.json", "Invalid JSON at line 1"),
    ] {
        let error = line_for(&events, "processed", name);
        assert_eq!(error["level"], "WARN", "{error}");
        assert_eq!(error["status"], "ERROR", "{error}");
        assert_eq!(
            (&error["applied"], &error["rejected"]),
            (&json!(0), &json!(0))
        );
        assert!(error["ms"].is_u64(), "{error}");
        let said = error["reason"].as_str().unwrap_or_default();
        assert!(said.starts_with(reason), "{error}");
    }
    assert!(!stderr.contains("wrong-token"), "{stderr}");
}

#[test]
fn text_lines_carry_the_level_word_the_counts_and_for_an_error_its_reason() {
    let env = Env::new();
    four_kinds(&env);
    let (code, stderr) = once(&env, &[], Stream::Unset);
    assert_eq!(code, Some(3), "{stderr}");
    for line in stderr.lines() {
        assert!(has_timestamp(line), "{line}");
    }
    let ok = text_line(&stderr, "ok.json");
    for part in [
        " INFO ",
        " processed ",
        " status=OK ",
        " applied=1 ",
        " rejected=0 ",
        " ms=",
    ] {
        assert!(ok.contains(part), "{part:?} in {ok}");
    }
    assert!(!ok.contains("reason="), "{ok}");
    let warning = text_line(&stderr, "warning.json");
    for part in [
        " WARN ",
        " status=WARNING ",
        " applied=1 ",
        " rejected=1 ",
        " ms=",
    ] {
        assert!(warning.contains(part), "{part:?} in {warning}");
    }
    assert!(!stderr.contains("not-an-email"), "{stderr}");
    // Quoted, so that `key=value` readers know where a reason with spaces ends.
    for (name, reason) in [
        ("token.json", " reason=\"Authorization failed"),
        ("broken.json", " reason=\"Invalid JSON at line 1"),
    ] {
        let error = text_line(&stderr, name);
        for part in [
            " WARN ",
            " status=ERROR ",
            " applied=0 ",
            " rejected=0 ",
            reason,
        ] {
            assert!(error.contains(part), "{part:?} in {error}");
        }
        assert!(error.ends_with('"'), "{error}");
    }
}

#[test]
fn log_level_warning_keeps_the_warnings_only() {
    // tests/config.rs: `warning` is taken as `warn`, and an unknown word is exit 2;
    // this is what the level does to the lines.
    let env = Env::new();
    four_kinds(&env);
    let (code, stderr) = once(&env, &["--log-level", "warning"], Stream::Unset);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(!stderr.contains(" INFO "), "{stderr}");
    assert!(!stderr.contains("ok.json"), "{stderr}");
    for name in ["warning.json", "token.json", "broken.json"] {
        assert!(text_line(&stderr, name).contains(" WARN "), "{stderr}");
    }
}

// ---------------------------------------------------------------------------------
// journald priorities (SPEC §6: under systemd lines carry journald priorities)
// ---------------------------------------------------------------------------------

/// The priority a journal line begins with, and the rest.
fn priority(line: &str) -> (u8, &str) {
    let rest = line
        .strip_prefix('<')
        .unwrap_or_else(|| panic!("no priority: {line}"));
    match rest.as_bytes() {
        [digit @ b'0'..=b'7', b'>', ..] => (digit - b'0', &rest[2..]),
        _ => panic!("no priority: {line}"),
    }
}

/// The same inbox, with `JOURNAL_STREAM` naming another file than stderr: a child
/// of a systemd service inherits the variable, and with its stderr redirected `<4>`
/// would be noise in the file (systemd.exec(5): compare device and inode).
fn assert_plain_when_the_stream_is_elsewhere(env: &Env, format: &str) {
    for name in ["ok", "warning", "token", "broken"] {
        fs::remove_file(env.inbox().join(format!("{name}.response.json")))
            .expect("a response to take back");
    }
    let (code, stderr) = once(env, &["--log-format", format], Stream::Elsewhere);
    assert_eq!(code, Some(3), "{stderr}");
    for line in stderr.lines() {
        assert!(!line.starts_with('<') && has_timestamp(line), "{line}");
    }
}

#[test]
fn on_the_journal_stream_text_lines_begin_with_their_priority_and_no_timestamp() {
    let env = Env::new();
    four_kinds(&env);
    let (code, stderr) = once(&env, &[], Stream::Stderr);
    assert_eq!(code, Some(3), "{stderr}");
    for line in stderr.lines() {
        let (priority, rest) = priority(line);
        let word = match priority {
            3 => "ERROR ",
            4 => "WARN ",
            6 => "INFO ",
            7 => "DEBUG ",
            _ => panic!("priority {priority}: {line}"),
        };
        // journald stamps the entry; the level word stays for `journalctl -o cat`.
        assert!(rest.starts_with(word), "{line}");
        assert!(!has_timestamp(line) && !line.contains('\x1b'), "{line}");
    }
    assert!(
        text_line(&stderr, "ok.json").starts_with("<6>INFO "),
        "{stderr}"
    );
    for name in ["warning.json", "token.json", "broken.json"] {
        assert!(text_line(&stderr, name).starts_with("<4>WARN "), "{stderr}");
    }
    let started = stderr.lines().next().unwrap_or_default();
    assert!(
        started.starts_with("<6>INFO ") && started.contains("userdrop started"),
        "{stderr}"
    );
    assert_plain_when_the_stream_is_elsewhere(&env, "text");
}

#[test]
fn on_the_journal_stream_json_lines_are_a_priority_then_an_object() {
    // journald strips the prefix: the entry's message is the object alone.
    let env = Env::new();
    four_kinds(&env);
    let (code, stderr) = once(&env, &["--log-format", "json"], Stream::Stderr);
    assert_eq!(code, Some(3), "{stderr}");
    let mut objects = Vec::new();
    for line in stderr.lines() {
        let (priority, rest) = priority(line);
        let event: Value = serde_json::from_str(rest).unwrap_or_else(|e| panic!("{e}: {line}"));
        let level = match priority {
            3 => "ERROR",
            4 => "WARN",
            6 => "INFO",
            _ => panic!("priority {priority}: {line}"),
        };
        assert_eq!(event["level"], level, "{line}");
        assert!(event.get("timestamp").is_none(), "{line}");
        objects.push(event);
    }
    assert_eq!(line_for(&objects, "processed", "ok.json")["level"], "INFO");
    let error = line_for(&objects, "processed", "token.json");
    assert_eq!(error["level"], "WARN");
    assert!(error["reason"].is_string(), "{error}");
    assert_plain_when_the_stream_is_elsewhere(&env, "json");
}

#[test]
fn in_the_journal_an_error_said_outside_tracing_is_priority_3() {
    let env = Env::new();
    let log = env.dir.path().join("stderr.log");
    for (args, exit) in [
        // The inbox is missing: the reason a unit fails to start.
        (&["run", "--db", "data", "--watch", "missing"][..], 1),
        // A wrong ExecStart= line.
        (&["run", "--no-such-flag"][..], 2),
    ] {
        let stderr = fs::File::create(&log).expect("the log file");
        let meta = fs::metadata(&log).expect("stat");
        let status = common::process()
            .current_dir(env.dir.path())
            .args(args)
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
            .stdout(Stdio::null())
            .stderr(stderr)
            .status()
            .expect("userdrop runs");
        assert_eq!(status.code(), Some(exit), "{args:?}");
        let logs = fs::read_to_string(&log).expect("UTF-8 logs");
        assert!(!logs.is_empty(), "{args:?}");
        for line in logs.lines() {
            assert!(line.starts_with("<3>"), "{args:?}: {logs}");
        }
    }
    let logs = fs::read_to_string(&log).expect("UTF-8 logs");
    assert!(logs.contains("--no-such-flag"), "{logs}");
}

// ---------------------------------------------------------------------------------
// Start and stop (SPEC §6)
// ---------------------------------------------------------------------------------

#[test]
fn once_on_an_empty_inbox_logs_a_start_and_a_stop_and_never_watching() {
    let env = Env::new();
    for (poll, mode) in [(None, "inotify"), (Some("50"), "poll every 50 ms")] {
        let mut args = vec!["--log-format", "json"];
        if let Some(ms) = poll {
            args.extend(["--poll", ms]);
        }
        let (code, stderr) = once(&env, &args, Stream::Unset);
        assert_eq!(code, Some(0), "{stderr}");
        let events = events(&stderr);
        let first = events.first().expect("a start line");
        assert_eq!(first["message"], "userdrop started", "{stderr}");
        assert_eq!(first["version"], env!("CARGO_PKG_VERSION"), "{first}");
        assert_eq!(first["inbox"], "in", "{first}");
        assert_eq!(first["store"], "data", "{first}");
        assert_eq!(first["mode"], mode, "{first}");
        let last = events.last().expect("a stop line");
        assert_eq!(
            last["message"], "userdrop stopped; the store is durable",
            "{stderr}"
        );
        assert!(
            last["reason"]
                .as_str()
                .is_some_and(|r| r.contains("--once")),
            "{last}"
        );
        assert!(!stderr.contains("watching"), "{stderr}");
    }
}

/// Waits until `mark` exists (the daemon paused there), at most 20 s.
fn wait_for_mark(mark: &std::path::Path) {
    let started = Instant::now();
    while !mark.exists() {
        assert!(started.elapsed() < Duration::from_secs(20), "never paused");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A daemon on `env` that pauses after each step of ten users, marking `mark`; its
/// stderr to `log`.
fn pausing_daemon(env: &Env, mark: &std::path::Path, log: &std::path::Path) -> Child {
    common::process()
        .current_dir(env.dir.path())
        .args(["run", "--db", "data", "--watch", "in", "--step-users", "10"])
        .env("USERDROP_FAULT", "pause-after-step")
        .env("USERDROP_PAUSE_MARK", mark)
        .stdout(Stdio::null())
        .stderr(fs::File::create(log).expect("the log file"))
        .spawn()
        .expect("the daemon")
}

#[test]
fn a_stop_during_start_up_logs_the_start_and_the_stop_and_never_watching() {
    let env = Env::new();
    let users: Vec<Value> = (0..25)
        .map(|i| json!({"title": "T", "email": format!("u{i:02}@shop.example")}))
        .collect();
    fs::write(
        env.inbox().join("big.json"),
        json!({ "users": users }).to_string(),
    )
    .expect("the request");
    // A first daemon stopped after the first step leaves the file cut short...
    let (mark, log) = (
        env.dir.path().join("paused-1"),
        env.dir.path().join("1.log"),
    );
    let mut first = pausing_daemon(&env, &mark, &log);
    wait_for_mark(&mark);
    common::signal(&first, "-TERM");
    assert_eq!(first.wait().expect("the first daemon").code(), Some(0));
    let logs = fs::read_to_string(&log).expect("UTF-8 logs");
    assert!(logs.contains("stopped mid-file"), "{logs}");

    // ...so that the next one finishes it during its start-up, where it is stopped.
    let (mark, log) = (
        env.dir.path().join("paused-2"),
        env.dir.path().join("2.log"),
    );
    let mut second = pausing_daemon(&env, &mark, &log);
    wait_for_mark(&mark);
    common::signal(&second, "-TERM");
    assert_eq!(second.wait().expect("the second daemon").code(), Some(0));
    let logs = fs::read_to_string(&log).expect("UTF-8 logs");
    let lines: Vec<&str> = logs.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.contains("userdrop started")),
        "{logs}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("userdrop stopped")
                && l.contains("reason=\"signal during start-up\"")),
        "{logs}"
    );
    assert!(!logs.contains("watching"), "{logs}");
    assert!(!env.inbox().join("big.response.json").exists(), "{logs}");
}
