//! The daemon as a child process on real temp folders: start-up order, partial
//! uploads, signals, and the store's lock.

mod common;

use common::{process, signal};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(dir: &Path, extra: &[&str]) -> Daemon {
        let child = process()
            .current_dir(dir)
            .args(["run", "--settle", "400"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the daemon");
        Daemon { child }
    }

    /// Sends SIGTERM and returns the exit code and how long the exit took.
    fn terminate(mut self) -> (Option<i32>, Duration) {
        let started = Instant::now();
        signal(&self.child, "-TERM");
        let status = self.child.wait().unwrap();
        (status.code(), started.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(path: &Path, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn setup() -> (TempDir, PathBuf) {
    common::thread_store();
    let dir = TempDir::new().unwrap();
    let inbox = dir.path().join("watch");
    fs::create_dir(&inbox).unwrap();
    (dir, inbox)
}

fn status_of(response: &Path) -> String {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(response).unwrap()).unwrap();
    v["status"].as_str().unwrap().to_owned()
}

/// The stored user `same@example.com` of the store in `dir`, as `get` prints it.
fn stored_same(dir: &Path) -> serde_json::Value {
    let get = process()
        .current_dir(dir)
        .args(["get", "same@example.com"])
        .output()
        .unwrap();
    serde_json::from_slice(&get.stdout).unwrap()
}

fn one_user(title: &str) -> String {
    format!(r#"{{"users":[{{"title":"{title}","email":"same@example.com"}}]}}"#)
}

#[test]
fn seed_request_gets_its_response_while_running_and_sigterm_exits_0() {
    let (dir, inbox) = setup();
    let daemon = Daemon::start(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(200));
    fs::copy(
        "tests/fixtures/seed-request.json",
        inbox.join("seed-request.json"),
    )
    .unwrap();
    let response = inbox.join("seed-request.response.json");
    assert!(wait_for(&response, Duration::from_secs(5)), "no response");
    assert_eq!(status_of(&response), "WARNING");
    let (code, took) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_big_group_of_waiting_files_is_answered_whole_and_in_order() {
    // 40 files waiting at start-up are answered as one group (one flush, one syncfs,
    // one folder sync): every one gets its own complete response, nothing is left
    // under a temporary name, and later files win.
    let (dir, inbox) = setup();
    for i in 0..40 {
        fs::write(
            inbox.join(format!("f{i:02}.json")),
            one_user(&format!("t{i:02}")),
        )
        .unwrap();
    }
    let out = process()
        .current_dir(dir.path())
        .args(["run", "--once"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut names: Vec<String> = fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 80, "{names:?}");
    for i in 0..40 {
        let response = inbox.join(format!("f{i:02}.response.json"));
        assert_eq!(status_of(&response), "OK", "f{i:02}");
    }
    assert_eq!(stored_same(dir.path())["title"], "t39");
}

#[test]
fn once_processes_waiting_files_in_name_order() {
    let (dir, inbox) = setup();
    // b is applied after a, so b's title wins.
    fs::write(inbox.join("b.json"), one_user("second")).unwrap();
    fs::write(inbox.join("a.json"), one_user("first")).unwrap();
    let out = process()
        .current_dir(dir.path())
        .args(["run", "--once"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let user = stored_same(dir.path());
    assert_eq!(user["title"], "second");
    assert_eq!(user["source_file"], "b.json");
}

#[test]
fn a_file_written_in_chunks_is_processed_once_ok() {
    let (dir, inbox) = setup();
    let _daemon = Daemon::start(dir.path(), &[]);
    let body = one_user("chunked");
    let path = inbox.join("slow.json");
    let (head, tail) = body.split_at(body.len() / 2);
    fs::write(&path, head).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let response = inbox.join("slow.response.json");
    assert!(!response.exists(), "answered a partial upload");
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, tail.as_bytes()).unwrap();
    drop(f);
    assert!(wait_for(&response, Duration::from_secs(5)));
    assert_eq!(status_of(&response), "OK");
}

#[test]
fn a_truncated_file_gets_error_only_after_settling() {
    let (dir, inbox) = setup();
    let _daemon = Daemon::start(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(100));
    let written = Instant::now();
    fs::write(inbox.join("cut.json"), r#"{"users":[{"title":"x""#).unwrap();
    let response = inbox.join("cut.response.json");
    assert!(wait_for(&response, Duration::from_secs(5)));
    assert!(
        written.elapsed() >= Duration::from_millis(400),
        "ERROR before the settle time"
    );
    assert_eq!(status_of(&response), "ERROR");
}

#[test]
fn a_second_process_on_the_same_store_exits_1_naming_it() {
    let (dir, _inbox) = setup();
    let daemon = Daemon::start(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let out = process()
        .current_dir(dir.path())
        .args(["run"])
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // sled's folder is locked; a PostgreSQL store is held by the instance.
    let named = if common::postgres() {
        err.contains("is already running on the store postgres://")
    } else {
        err.contains("data") && err.contains("in use")
    };
    assert!(named, "{err}");
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}

#[test]
fn a_missing_inbox_is_an_operational_failure() {
    common::thread_store();
    let dir = TempDir::new().unwrap();
    let out = process()
        .current_dir(dir.path())
        .args(["run", "--once"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("watch"));
}

#[test]
fn poll_mode_picks_up_files() {
    let (dir, inbox) = setup();
    let _daemon = Daemon::start(dir.path(), &["--poll", "30"]);
    std::thread::sleep(Duration::from_millis(100));
    fs::write(inbox.join("p.json"), one_user("polled")).unwrap();
    assert!(wait_for(
        &inbox.join("p.response.json"),
        Duration::from_secs(5)
    ));
}

#[test]
fn a_file_renamed_into_the_inbox_is_processed() {
    let (dir, inbox) = setup();
    let _daemon = Daemon::start(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(200));
    let outside = dir.path().join("staging.json");
    fs::write(&outside, one_user("moved")).unwrap();
    fs::rename(&outside, inbox.join("moved.json")).unwrap();
    assert!(wait_for(
        &inbox.join("moved.response.json"),
        Duration::from_secs(5)
    ));
}

#[test]
fn ignored_names_and_special_files_do_not_block_later_files() {
    let (dir, inbox) = setup();
    fs::create_dir(inbox.join("x.json")).unwrap();
    let fifo = inbox.join("fifo.json");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    fs::write(dir.path().join("target.json"), one_user("linked")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("target.json"), inbox.join("link.json")).unwrap();
    for name in ["u.json.part", "u.json.filepart", "u.json.tmp", ".u.json"] {
        fs::write(inbox.join(name), "{").unwrap();
    }
    let _daemon = Daemon::start(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(200));
    fs::write(inbox.join("z.json"), one_user("after")).unwrap();
    assert!(wait_for(
        &inbox.join("z.response.json"),
        Duration::from_secs(5)
    ));
    std::thread::sleep(Duration::from_millis(300));
    let mut names: Vec<String> = fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".response.json"))
        .collect();
    names.sort();
    assert_eq!(names, ["z.response.json"]);
}

#[test]
fn deleting_a_response_reprocesses_the_request() {
    let (dir, inbox) = setup();
    let _daemon = Daemon::start(dir.path(), &[]);
    std::thread::sleep(Duration::from_millis(100));
    fs::write(inbox.join("r.json"), one_user("again")).unwrap();
    let response = inbox.join("r.response.json");
    assert!(wait_for(&response, Duration::from_secs(5)));
    let first = fs::read_to_string(&response).unwrap();
    assert!(first.contains("added"), "{first}");
    fs::remove_file(&response).unwrap();
    assert!(wait_for(&response, Duration::from_secs(5)));
    let second = fs::read_to_string(&response).unwrap();
    assert!(second.contains("already up to date"), "{second}");
}

fn userdrop(dir: &Path, args: &[&str]) -> std::process::Output {
    process().current_dir(dir).args(args).output().unwrap()
}

#[test]
fn read_commands_answer_while_the_daemon_runs() {
    let (dir, inbox) = setup();
    let daemon = Daemon::start(dir.path(), &[]);
    fs::copy("tests/fixtures/seed-request.json", inbox.join("seed.json")).unwrap();
    assert!(wait_for(
        &inbox.join("seed.response.json"),
        Duration::from_secs(5)
    ));

    let get = userdrop(dir.path(), &["get", "IVAN@mail.net"]);
    assert_eq!(
        get.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    let user: serde_json::Value = serde_json::from_slice(&get.stdout).unwrap();
    assert_eq!(user["title"], "Ivanov Ivan");

    let absent = userdrop(dir.path(), &["get", "nobody@example.com"]);
    assert_eq!(absent.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&absent.stderr).contains("no user"));

    let export = userdrop(dir.path(), &["export"]);
    let users: serde_json::Value = serde_json::from_slice(&export.stdout).unwrap();
    assert_eq!(users["users"].as_array().unwrap().len(), 2);

    let stats = userdrop(dir.path(), &["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["users"], 2);
    assert_eq!(stats["files"]["WARNING"], 1);

    // A writer is still refused: one daemon per store.
    let import = userdrop(dir.path(), &["import", "watch/seed.json"]);
    assert_eq!(import.status.code(), Some(1));
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}

#[test]
fn sighup_rescans_and_does_not_stop_the_daemon() {
    let (dir, inbox) = setup();
    // A file waiting at the start is answered by the first scan (on both engines; the
    // control socket, bound just before it, is sled's only): the file written after
    // that scan waits for the (long) poll interval, or for SIGHUP.
    fs::write(inbox.join("first.json"), one_user("first")).unwrap();
    let mut daemon = Daemon::start(dir.path(), &["--poll", "100000"]);
    assert!(wait_for(
        &inbox.join("first.response.json"),
        Duration::from_secs(10)
    ));
    std::thread::sleep(Duration::from_millis(300));
    fs::write(inbox.join("h.json"), one_user("hup")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !inbox.join("h.response.json").exists(),
        "poll interval is long"
    );
    signal(&daemon.child, "-HUP");
    assert!(wait_for(
        &inbox.join("h.response.json"),
        Duration::from_secs(5)
    ));
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "SIGHUP stopped the daemon"
    );
}

#[test]
fn sigterm_mid_file_exits_0_and_the_file_resumes() {
    let (dir, inbox) = setup();
    let users: Vec<String> = (0..60_000)
        .map(|i| format!(r#"{{"title":"U{i}","email":"u{i}@example.com","city":"Kyiv"}}"#))
        .collect();
    fs::write(
        inbox.join("big.json"),
        format!(r#"{{"users":[{}]}}"#, users.join(",")),
    )
    .unwrap();
    let daemon = Daemon::start(dir.path(), &["--step-users", "500"]);
    std::thread::sleep(Duration::from_millis(700));
    let (code, took) = daemon.terminate();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let response = inbox.join("big.response.json");
    if response.exists() {
        // The machine was fast enough to finish; nothing to resume.
        return;
    }
    let out = userdrop(dir.path(), &["run", "--once", "--step-users", "500"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&fs::read(&response).unwrap()).unwrap();
    let log = v["response"]["log"].as_array().unwrap();
    assert_eq!(log.len(), 60_000);
    assert!(log.iter().all(|e| {
        e["info"][0]["message"]
            .as_str()
            .unwrap()
            .ends_with("added successfully")
    }));
}

#[test]
fn the_daemon_refuses_a_missing_or_wrong_token_and_applies_nothing() {
    let (dir, inbox) = setup();
    let mut child = process()
        .current_dir(dir.path())
        .env("USERDROP_TOKENS", "s3cret,0ther-t0ken")
        .args(["run", "--log-level", "debug"])
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.path().join("stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let user = r#"{"title":"T","email":"tok@example.com"}"#;
    fs::write(inbox.join("none.json"), format!(r#"{{"users":[{user}]}}"#)).unwrap();
    fs::write(
        inbox.join("wrong.json"),
        format!(r#"{{"token":"s3cre","users":[{user}]}}"#),
    )
    .unwrap();
    for name in ["none", "wrong"] {
        let response = inbox.join(format!("{name}.response.json"));
        assert!(wait_for(&response, Duration::from_secs(5)), "{name}");
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&response).unwrap()).unwrap();
        assert_eq!(v["status"], "ERROR");
        let message = v["response"]["message"].as_str().unwrap();
        assert!(message.starts_with("Authorization failed"), "{message}");
        assert!(!message.contains("s3cret"));
    }
    fs::write(
        inbox.join("right.json"),
        format!(r#"{{"token":"0ther-t0ken","users":[{user}]}}"#),
    )
    .unwrap();
    assert!(wait_for(
        &inbox.join("right.response.json"),
        Duration::from_secs(5)
    ));
    let stats = userdrop(dir.path(), &["stats", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(stats["users"], 1);
    assert_eq!(stats["files"]["ERROR"], 2);
    let _ = child.kill();
    let _ = child.wait();
    let log = fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(log.contains("authorization=true"), "{log}");
    assert!(
        !log.contains("s3cret") && !log.contains("0ther-t0ken"),
        "a token was logged"
    );
}

/// CPU ticks (user + system) the process has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The command name may hold spaces; the fields after it do not.
    let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn an_idle_daemon_uses_no_cpu_even_after_a_file() {
    // SPEC §4: between events nothing runs but the periodic rescan, and the daemon's
    // own reads of the inbox never wake it. Once, its own scan's OPEN event started
    // the next scan: 60 % of a core on an empty inbox.
    let (dir, inbox) = setup();
    let daemon = Daemon::start(dir.path(), &[]);
    let idle = |what: &str| {
        std::thread::sleep(Duration::from_millis(500));
        let before = cpu_ticks(daemon.child.id());
        std::thread::sleep(Duration::from_secs(3));
        let used = cpu_ticks(daemon.child.id()) - before;
        // 100 ticks a second: 30 ticks would be a tenth of a core, a wide margin
        // over a daemon that sleeps (0 or 1 tick) and far under a busy loop.
        assert!(used < 30, "{what}: {used} CPU ticks in 3 s while idle");
    };
    idle("empty inbox");
    fs::write(inbox.join("a.json"), one_user("A")).unwrap();
    assert!(wait_for(
        &inbox.join("a.response.json"),
        Duration::from_secs(10)
    ));
    idle("after a file");
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}

#[test]
fn once_waits_for_a_half_written_file_to_be_finished() {
    // SPEC §4: the settle rule holds in every mode. A cron'd `run --once` during an
    // SFTP upload once answered the half-written file ERROR at once, for good.
    let (dir, inbox) = setup();
    let path = inbox.join("upload.json");
    let whole = one_user("Late");
    let (head, rest) = whole.split_at(whole.len() / 2);
    fs::write(&path, head).unwrap();
    let once = process()
        .current_dir(dir.path())
        .args(["run", "--once", "--settle", "1500"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut file = fs::OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut file, rest.as_bytes()).unwrap();
    drop(file);
    let out = once.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(status_of(&inbox.join("upload.response.json")), "OK");
}

#[test]
fn a_closed_standard_output_ends_a_read_command_quietly() {
    // SPEC §6: `export | head -1` once printed "Broken pipe" and exited 1.
    let (dir, inbox) = setup();
    let users: Vec<String> = (0..5000)
        .map(|i| format!(r#"{{"title":"U{i}","email":"u{i}@example.com"}}"#))
        .collect();
    fs::write(
        inbox.join("many.json"),
        format!(r#"{{"users":[{}]}}"#, users.join(",")),
    )
    .unwrap();
    let import = process()
        .current_dir(dir.path())
        .args(["import", "watch/many.json"])
        .output()
        .unwrap();
    assert_eq!(import.status.code(), Some(0), "{import:?}");
    for args in [
        &["export", "--format", "ndjson"][..],
        &["man"],
        &["check", "watch/many.json", "watch/many.json"],
        &["backup", "-"],
    ] {
        let mut child = process()
            .current_dir(dir.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read one line, then close the pipe, as `head -1` does.
        let mut first = [0u8; 64];
        std::io::Read::read(child.stdout.as_mut().unwrap(), &mut first).unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

#[test]
fn a_polling_daemon_over_many_old_pairs_idles() {
    // Issue 11: `--poll` on an inbox of old request/response pairs rescanned every
    // pair at every tick. A tick now looks at the folder's times first.
    let (dir, inbox) = setup();
    for i in 0..10_000 {
        fs::write(inbox.join(format!("r{i}.json")), "{\"users\":[]}").unwrap();
        fs::write(inbox.join(format!("r{i}.response.json")), "{}").unwrap();
    }
    let daemon = Daemon::start(dir.path(), &["--poll", "100"]);
    std::thread::sleep(Duration::from_millis(1500));
    let before = cpu_ticks(daemon.child.id());
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(daemon.child.id()) - before;
    assert!(
        used < 30,
        "{used} CPU ticks in 3 s while idle over 10 000 pairs"
    );
    // And a new file is still seen at the next tick.
    fs::write(inbox.join("new.json"), one_user("New")).unwrap();
    assert!(wait_for(
        &inbox.join("new.response.json"),
        Duration::from_secs(5)
    ));
    let (code, _) = daemon.terminate();
    assert_eq!(code, Some(0));
}
