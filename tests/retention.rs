//! Retention (SPEC §4): `--archive DIR --archive-after AGE` and `--delete-after AGE`,
//! the real binary on temporary folders. What matters is that a clean-up never makes
//! the daemon apply an old file again: the store's totals and users' `updated_at` must
//! not move, and no response may change.
//!
//! Files are made old by setting their modification time to a fixed day in 2023
//! rather than by waiting, except in the one test that shows the daemon's own clock
//! at work. Every wait is a poll up to a deadline, and every child is killed when its
//! guard is dropped.

mod common;

use common::{Env, process, signal};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a wait may take before it fails: long, for a debug build on a busy
/// machine; a passing test waits only as long as the daemon takes.
const DEADLINE: Duration = Duration::from_secs(20);
/// 2023-11-14T22:13:20Z.
const LONG_AGO: u64 = 1_700_000_000;
const LONG_AGO_DAY: &str = "2023-11-14";

fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sets the modification time of `path` (not following a link) to [`LONG_AGO`].
fn age(path: &Path) {
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(UNIX_EPOCH + Duration::from_secs(LONG_AGO))
        .unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn one_user(email: &str, title: &str) -> String {
    format!(r#"{{"users":[{{"title":"{title}","email":"{email}"}}]}}"#)
}

/// Drops a request the way a careful uploader does: a hidden name, then a rename.
fn drop_request(inbox: &Path, name: &str, body: &str) {
    let temp = inbox.join(format!(".{name}.part"));
    fs::write(&temp, body).unwrap();
    fs::rename(&temp, inbox.join(name)).unwrap();
}

/// `NAME.json` (any case) → `NAME.response.json`.
fn response_of(name: &str) -> String {
    format!("{}.response.json", &name[..name.len() - ".json".len()])
}

/// The binary on `env`'s store and inbox.
fn userdrop(env: &Env, args: &[&str]) -> std::process::Command {
    let mut cmd = process();
    cmd.current_dir(env.dir.path())
        .args(args)
        .arg("--db")
        .arg(env.db());
    cmd
}

fn run_once(env: &Env, extra: &[&str]) -> Output {
    let mut cmd = userdrop(env, &["run", "--once"]);
    cmd.arg("--watch")
        .arg(env.inbox())
        .args(extra)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `stats --json`: processed files by status, users applied.
fn totals(env: &Env) -> serde_json::Value {
    let out = userdrop(env, &["stats", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::json!({"files": v["files"], "applied": v["users_applied"]})
}

fn updated_at(env: &Env, email: &str) -> String {
    let out = userdrop(env, &["get", email]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["updated_at"].as_str().unwrap().to_owned()
}

/// The day folder a response written at `mtime` goes to (UTC, like the logs).
fn day_of(path: &Path) -> String {
    let mtime = fs::symlink_metadata(path).unwrap().mtime();
    chrono::DateTime::from_timestamp(mtime, 0)
        .unwrap()
        .format("%Y-%m-%d")
        .to_string()
}

/// Requests answered by a `run --once`, then made old.
fn answered_long_ago(env: &Env, requests: &[(&str, String)]) {
    for (name, body) in requests {
        drop_request(&env.inbox(), name, body);
    }
    let out = run_once(env, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for (name, _) in requests {
        age(&env.inbox().join(name));
        age(&env.inbox().join(response_of(name)));
    }
}

/// A running daemon; killed when dropped. Its stderr goes to a file.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(env: &Env, extra: &[&str]) -> Daemon {
        let log = env.dir.path().join("daemon.log");
        let child = userdrop(env, &["run", "--rescan", "1"])
            .arg("--watch")
            .arg(env.inbox())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the daemon");
        Daemon { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `done`, failing with the log if it does not come.
    fn wait(&mut self, what: &str, done: impl FnMut() -> bool) {
        let ok = until(DEADLINE, done);
        assert!(ok, "{what}: not within {DEADLINE:?}; log:\n{}", self.log());
    }

    /// Drops a request and returns its response's text once it is there.
    fn answer(&mut self, env: &Env, name: &str, body: &str) -> String {
        drop_request(&env.inbox(), name, body);
        let response = env.inbox().join(response_of(name));
        self.wait(&format!("the response of {name}"), || response.is_file());
        fs::read_to_string(&response).unwrap()
    }

    /// SIGTERM: exit 0 within 10 s (SPEC §6).
    fn stop(mut self) -> String {
        signal(&self.child, "-TERM");
        let mut status = None;
        until(Duration::from_secs(10), || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        let log = self.log();
        assert_eq!(status.and_then(|s| s.code()), Some(0), "log:\n{log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn answered_pairs_are_archived_by_day_and_never_applied_again() {
    let env = Env::new();
    let archive = env.dir.path().join("archive");
    let arch = archive.to_str().unwrap();
    let mut daemon = Daemon::start(&env, &["--archive", arch, "--archive-after", "2s"]);
    // On the daemon's own clock: 2 s after its response, the pair goes.
    let first = daemon.answer(&env, "users.json", &one_user("a@example.com", "A"));
    let day = day_of(&env.inbox().join("users.response.json"));
    let archived = archive.join(&day);
    daemon.wait("users.json archived", || {
        names(&archived) == ["users.json", "users.response.json"]
    });
    assert!(names(&env.inbox()).is_empty(), "{:?}", names(&env.inbox()));
    let stamp = updated_at(&env, "a@example.com");
    // The same name again is a new request: answered, then archived beside the first
    // under a name free for both.
    let second = daemon.answer(&env, "users.json", &one_user("b@example.com", "B"));
    age(&env.inbox().join("users.json"));
    age(&env.inbox().join("users.response.json"));
    let old_day = archive.join(LONG_AGO_DAY);
    daemon.wait("the second users.json archived", || {
        names(&old_day) == ["users.json", "users.response.json"]
    });
    let third = daemon.answer(&env, "users.json", &one_user("c@example.com", "C"));
    age(&env.inbox().join("users.json"));
    age(&env.inbox().join("users.response.json"));
    daemon.wait("the third users.json archived under a free name", || {
        names(&old_day).len() == 4
    });
    let log = daemon.stop();
    assert_eq!(
        names(&old_day),
        [
            "users.1.json",
            "users.1.response.json",
            "users.json",
            "users.response.json"
        ]
    );
    assert!(names(&env.inbox()).is_empty(), "{:?}", names(&env.inbox()));
    for (dir, name, response) in [
        (&archived, "users.response.json", &first),
        (&old_day, "users.response.json", &second),
        (&old_day, "users.1.response.json", &third),
    ] {
        assert_eq!(&fs::read_to_string(dir.join(name)).unwrap(), response);
    }
    let b = fs::read_to_string(old_day.join("users.json")).unwrap();
    assert!(b.contains("b@example.com"), "{b}");
    // Nothing applied twice: three files, three users, a@ untouched since its file.
    assert_eq!(
        totals(&env),
        serde_json::json!({"files": {"OK": 3, "WARNING": 0, "ERROR": 0}, "applied": 3})
    );
    assert_eq!(updated_at(&env, "a@example.com"), stamp);
    assert!(log.contains("retention: moved"), "{log}");
    assert!(!log.contains("WARN userdrop::retention"), "{log}");
}

#[test]
fn delete_after_removes_answered_pairs_and_never_a_waiting_request() {
    let env = Env::new();
    // A request that is not complete yet stays waiting for the whole test: it is
    // only rejected once unchanged for a minute.
    let mut daemon = Daemon::start(&env, &["--delete-after", "1h", "--settle", "60000"]);
    drop_request(&env.inbox(), "partial.json", r#"{"users": ["#);
    age(&env.inbox().join("partial.json"));
    daemon.answer(&env, "a.json", &one_user("a@example.com", "A"));
    let young = daemon.answer(&env, "young.json", &one_user("y@example.com", "Y"));
    age(&env.inbox().join("a.json"));
    age(&env.inbox().join("a.response.json"));
    daemon.wait("a.json deleted", || !env.inbox().join("a.json").exists());
    daemon.wait("a.response.json deleted", || {
        !env.inbox().join("a.response.json").exists()
    });
    let stamp = updated_at(&env, "a@example.com");
    // The pass that deleted a.json saw the young pair and the waiting file, and left
    // them. A new a.json is a new request.
    daemon.answer(&env, "a.json", &one_user("a@example.com", "A again"));
    let log = daemon.stop();
    assert_eq!(
        names(&env.inbox()),
        [
            "a.json",
            "a.response.json",
            "partial.json",
            "young.json",
            "young.response.json"
        ],
        "log:\n{log}"
    );
    assert_eq!(
        fs::read_to_string(env.inbox().join("young.response.json")).unwrap(),
        young
    );
    assert_eq!(
        totals(&env),
        serde_json::json!({"files": {"OK": 3, "WARNING": 0, "ERROR": 0}, "applied": 3})
    );
    assert_ne!(updated_at(&env, "a@example.com"), stamp);
    assert!(log.contains("retention: deleted"), "{log}");
}

#[test]
fn run_once_archives_old_pairs_into_a_folder_it_creates() {
    let env = Env::new();
    answered_long_ago(
        &env,
        &[
            ("a.json", one_user("a@example.com", "A")),
            ("EXPORT.JSON", one_user("e@example.com", "E")),
        ],
    );
    let before = totals(&env);
    let stamp = updated_at(&env, "a@example.com");
    let archive = env.dir.path().join("archive");
    let arch = archive.to_str().unwrap();
    let out = run_once(&env, &["--archive", arch, "--archive-after", "1s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(names(&env.inbox()).is_empty(), "{:?}", names(&env.inbox()));
    assert_eq!(names(&archive), [LONG_AGO_DAY]);
    assert_eq!(
        names(&archive.join(LONG_AGO_DAY)),
        [
            "EXPORT.JSON",
            "EXPORT.response.json",
            "a.json",
            "a.response.json"
        ]
    );
    let mode = fs::metadata(&archive).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o750);
    // Again: nothing to do, and nothing was applied again.
    let out = run_once(&env, &["--archive", arch, "--archive-after", "1s"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains("retention: moved"), "{}", text(&out));
    assert_eq!(totals(&env), before);
    assert_eq!(updated_at(&env, "a@example.com"), stamp);
}

/// A symbolic link, a FIFO and a folder at request and response names, and a
/// request whose response name holds a link: none of them is moved or followed.
#[test]
fn links_fifos_folders_young_pairs_and_waiting_requests_are_left_alone() {
    let env = Env::new();
    answered_long_ago(&env, &[("old.json", one_user("o@example.com", "O"))]);
    drop_request(&env.inbox(), "young.json", &one_user("y@example.com", "Y"));
    let out = run_once(&env, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let inbox = env.inbox();
    let outside = env.dir.path().join("outside.json");
    fs::write(&outside, one_user("x@example.com", "precious")).unwrap();
    age(&outside);
    symlink(&outside, inbox.join("link.json")).unwrap();
    fs::write(inbox.join("link.response.json"), "{}").unwrap();
    symlink(&outside, inbox.join("gone.response.json")).unwrap();
    fs::create_dir(inbox.join("dir.json")).unwrap();
    fs::write(inbox.join("dir.response.json"), "{}").unwrap();
    let fifo = std::process::Command::new("mkfifo")
        .arg(inbox.join("fifo.json"))
        .status()
        .unwrap();
    assert!(fifo.success());
    fs::write(inbox.join("fifo.response.json"), "{}").unwrap();
    fs::write(inbox.join("linked.json"), one_user("l@example.com", "L")).unwrap();
    symlink(&outside, inbox.join("linked.response.json")).unwrap();
    // Not linked.response.json: that would reach through the link.
    for name in ["link", "dir", "fifo"] {
        age(&inbox.join(format!("{name}.response.json")));
    }
    age(&inbox.join("linked.json"));
    let before = names(&inbox);
    let archive = env.dir.path().join("archive");
    let out = run_once(
        &env,
        &[
            "--archive",
            archive.to_str().unwrap(),
            "--archive-after",
            "1h",
        ],
    );
    // linked.json is waiting, and its response cannot be written over the link.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(
        names(&archive.join(LONG_AGO_DAY)),
        ["old.json", "old.response.json"]
    );
    let mut left = before.clone();
    left.retain(|n| !n.starts_with("old."));
    assert_eq!(names(&inbox), left);
    assert_eq!(
        fs::read_to_string(&outside).unwrap(),
        one_user("x@example.com", "precious")
    );
    assert_eq!(
        fs::symlink_metadata(&outside).unwrap().mtime(),
        LONG_AGO as i64
    );
    for link in ["link.json", "gone.response.json", "linked.response.json"] {
        let meta = fs::symlink_metadata(inbox.join(link)).unwrap();
        assert!(meta.file_type().is_symlink(), "{link}");
    }
}

#[test]
fn an_orphan_response_older_than_the_age_is_cleaned_up() {
    let env = Env::new();
    let inbox = env.inbox();
    for name in ["gone.response.json", ".hidden.response.json", "notes.txt"] {
        fs::write(inbox.join(name), "{}").unwrap();
        age(&inbox.join(name));
    }
    fs::write(inbox.join("fresh.response.json"), "{}").unwrap();
    let out = run_once(&env, &["--delete-after", "1h"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        names(&inbox),
        [".hidden.response.json", "fresh.response.json", "notes.txt"]
    );
    assert!(text(&out).contains("orphan_responses=1"), "{}", text(&out));
}

/// The point of the order: killed after the requests went and before their
/// responses did, the next pass finishes the job and nothing is applied again.
#[test]
fn a_crash_between_requests_and_responses_is_finished_by_the_next_pass() {
    let env = Env::new();
    answered_long_ago(
        &env,
        &[
            ("a.json", one_user("a@example.com", "A")),
            ("b.json", one_user("b@example.com", "B")),
        ],
    );
    let before = totals(&env);
    let archive = env.dir.path().join("archive");
    let args = [
        "--archive",
        archive.to_str().unwrap(),
        "--archive-after",
        "1h",
    ];
    let mut cmd = userdrop(&env, &["run", "--once"]);
    let out = cmd
        .arg("--watch")
        .arg(env.inbox())
        .args(args)
        .env("USERDROP_FAULT", "retention-between-phases")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), None, "aborted: {}", text(&out));
    assert_eq!(names(&env.inbox()), ["a.response.json", "b.response.json"]);
    let day = archive.join(LONG_AGO_DAY);
    assert_eq!(names(&day), ["a.json", "b.json"]);
    let out = run_once(&env, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(names(&env.inbox()).is_empty(), "{:?}", names(&env.inbox()));
    assert_eq!(
        names(&day),
        ["a.json", "a.response.json", "b.json", "b.response.json"]
    );
    assert_eq!(totals(&env), before);
}

fn refused(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> String {
    let mut cmd = userdrop(env, &["run", "--once"]);
    cmd.arg("--watch").arg(env.inbox()).args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
    text(&out)
}

#[test]
fn bad_retention_settings_are_usage_errors() {
    let env = Env::new();
    let arch = env.dir.path().join("archive");
    let arch = arch.to_str().unwrap();
    let inside = env.inbox().join("archive");
    for (args, says) in [
        (vec!["--archive", arch], "needs --archive-after"),
        (vec!["--archive-after", "7d"], "needs --archive DIR"),
        (
            vec![
                "--archive",
                arch,
                "--archive-after",
                "7d",
                "--delete-after",
                "7d",
            ],
            "cannot be used together",
        ),
        (vec!["--delete-after", "0s"], "at least 1s"),
        (vec!["--delete-after", "7w"], "unknown unit \"w\""),
        (vec!["--archive-after", "90", "--archive", arch], "no unit"),
        (vec!["--delete-after", "soon"], "not a duration"),
        (
            vec![
                "--archive",
                env.inbox().to_str().unwrap(),
                "--archive-after",
                "1d",
            ],
            "the inbox or inside it",
        ),
        (
            vec![
                "--archive",
                inside.to_str().unwrap(),
                "--archive-after",
                "1d",
            ],
            "the inbox or inside it",
        ),
    ] {
        let stderr = refused(&env, &args, &[]);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert!(!inside.exists(), "a refused archive folder is not created");
    let stderr = refused(&env, &[], &[("USERDROP_ARCHIVE", arch)]);
    assert!(stderr.contains("needs --archive-after"), "{stderr}");
    let config = env.dir.path().join("userdrop.toml");
    fs::write(&config, "delete_after = \"0d\"\n").unwrap();
    let stderr = refused(&env, &["--config", config.to_str().unwrap()], &[]);
    assert!(
        stderr.contains("delete_after") && stderr.contains("at least 1s"),
        "{stderr}"
    );
    // None of it touched the store or created the archive.
    assert!(!env.db().exists() && !Path::new(arch).exists());
}

#[test]
fn an_archive_on_another_file_system_is_refused_at_start() {
    let env = Env::new();
    let shm = Path::new("/dev/shm");
    let other = |p: &Path| fs::metadata(p).map(|m| m.dev());
    if !matches!((other(shm), other(env.dir.path())), (Ok(a), Ok(b)) if a != b) {
        eprintln!("skipped: no /dev/shm on another file system than the temporary folder");
        return;
    }
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let arch = shm.join(format!(
        "userdrop-test-{}-{}",
        std::process::id(),
        stamp.as_nanos()
    ));
    let stderr = refused(
        &env,
        &["--archive", arch.to_str().unwrap(), "--archive-after", "1d"],
        &[],
    );
    assert!(stderr.contains("another file system"), "{stderr}");
    assert!(!arch.exists(), "a refused archive folder is not created");
}

#[test]
fn config_shows_the_retention_keys_and_a_missing_parent_is_a_failure() {
    let env = Env::new();
    let config = env.dir.path().join("userdrop.toml");
    fs::write(&config, "archive = \"old\"\narchive_after = \"36h\"\n").unwrap();
    let out = userdrop(
        &env,
        &["config", "--json", "--config", config.to_str().unwrap()],
    )
    .env("USERDROP_DELETE_AFTER", "120s")
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let setting = |k: &str| {
        let s = &v["settings"][k];
        (
            s["value"].as_str().unwrap().to_owned(),
            s["source"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(setting("archive"), ("old".into(), "file".into()));
    assert_eq!(setting("archive_after"), ("36h".into(), "file".into()));
    assert_eq!(setting("delete_after"), ("2m".into(), "env".into()));
    let missing = env.dir.path().join("no/such/archive");
    let out = run_once(
        &env,
        &[
            "--archive",
            missing.to_str().unwrap(),
            "--archive-after",
            "1d",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("cannot open the archive folder"),
        "{}",
        text(&out)
    );
}

/// A link where the day folder would be is never followed: the pair stays, the
/// failure is a warning naming the folder, and the run goes on to answer its files.
#[test]
fn a_failure_is_a_warning_and_never_follows_a_link_in_the_archive() {
    let env = Env::new();
    answered_long_ago(&env, &[("a.json", one_user("a@example.com", "A"))]);
    let archive = env.dir.path().join("archive");
    let elsewhere = env.dir.path().join("elsewhere");
    fs::create_dir_all(&archive).unwrap();
    fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, archive.join(LONG_AGO_DAY)).unwrap();
    drop_request(&env.inbox(), "b.json", &one_user("b@example.com", "B"));
    let args = [
        "--archive",
        archive.to_str().unwrap(),
        "--archive-after",
        "1h",
    ];
    let out = run_once(&env, &args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = text(&out);
    assert!(
        stderr.contains("WARN")
            && stderr.contains(&format!(
                "its day folder {}",
                archive.join(LONG_AGO_DAY).display()
            )),
        "{stderr}"
    );
    assert!(names(&elsewhere).is_empty(), "{:?}", names(&elsewhere));
    assert_eq!(
        names(&env.inbox()),
        ["a.json", "a.response.json", "b.json", "b.response.json"]
    );
}
