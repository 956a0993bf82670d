//! Power loss under LazyFS (SPEC §2 "durable"; issue 10, item 5 and "How to test it").
//!
//! LazyFS is a FUSE file system with its own page cache: on `lazyfs::clear-cache` it
//! drops every write that was not fsynced, as a power cut would. (Its metadata
//! operations — create, rename, unlink — go straight to the folder underneath, so
//! after a cut names are as they were and only file contents not fsynced are lost.)
//! The store and the inbox are put on LazyFS, in two layouts: both on one mount, and
//! each on its own mount. Each round starts `userdrop run`, drops a stream of request
//! files (small overlapping ones and some of over 1 000 users, which take several
//! steps), SIGKILLs the daemon at a random moment (often just after a response
//! appeared), clears every mount's cache, and looks at what survived:
//!
//! - every response that exists parses, and every user it answers with code 0 is in
//!   the store with that request's data or a later version of it (the versions are
//!   known at the end, replayed from the final responses in the order applied);
//! - the store opens (`export` exits 0), and the next start does not fail.
//!
//! At the end `run --once` finishes the work and one more cut follows (a clean exit
//! must have left everything durable too); then every request has exactly one
//! response, the inbox holds no stray file, every response equals the one a clean run
//! of the same files writes, and the export equals the model replayed from the
//! responses (each file applied once, in name order, which is also the order the
//! files were dropped in).
//!
//! Not run by default: it needs root, `/dev/fuse`, `fusermount3` and a LazyFS binary
//! built with ../shared/lazyfs/offline-build.patch (its `mknod` lets the daemon bind
//! its control socket inside the store):
//!
//! ```sh
//! USERDROP_LAZYFS=/work/lazyfs-build/lazyfs/build/lazyfs \
//!   cargo test --release --test powercut -- --ignored --nocapture --test-threads=1
//! ```
//!
//! `USERDROP_POWERCUT_ROUNDS` (20 by default) cuts per layout; the seed is printed and
//! `USERDROP_POWERCUT_SEED=N` replays the same data and choices (the timing of a kill
//! relative to the daemon's work cannot be replayed exactly).

mod common;

use common::process;
use common::requests::{Model, Rng, big_file, normalise, seed_from_env, small_file};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Size of each mount's cache. LazyFS allocates it up front; when it fills (with
/// `apply_eviction=false`) writes go straight through and would hide losses, so the
/// usage is checked before every cut.
const CACHE_SIZE: &str = "512mb";
/// Emails shared by the small files, so that files overlap.
const POOL: u64 = 60;
/// Emails the big files draw contiguous ranges from (they overlap too).
const BULK: usize = 4000;
/// Users in a big file: over the daemon's default step of 1 000, so 2 or 3 steps.
const BIG_MIN: usize = 1100;
const BIG_MAX: usize = 2500;
/// Longest time a daemon runs before the kill, and the most files dropped meanwhile.
const MAX_RUN_MS: u64 = 2500;
const MAX_DROPS: usize = 12;
/// Settle time given to the daemon (no request here is incomplete JSON; it is short
/// so that a kill never lands while a file waits for it).
const SETTLE_MS: &str = "100";

fn seed() -> u64 {
    seed_from_env("USERDROP_POWERCUT_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5EED_C0DE)
    })
}

fn rounds() -> usize {
    std::env::var("USERDROP_POWERCUT_ROUNDS")
        .ok()
        .map(|r| {
            r.trim()
                .parse()
                .expect("USERDROP_POWERCUT_ROUNDS is a number")
        })
        .unwrap_or(20)
}

// ---------------------------------------------------------------------------------
// Request files (the users come from tests/common/requests.rs)

/// The next request: mostly small files, some big ones, now and then an exact copy of
/// the file before (its users are already up to date) or a file rejected whole.
fn next_request(rng: &mut Rng, seq: usize, previous: Option<&[u8]>) -> (String, Vec<u8>, Kind) {
    let name = format!("r{seq:06}.json");
    let tag = format!("t{seq}");
    let roll = rng.below(100);
    let (body, kind) = match (roll, previous) {
        (0..=19, _) => {
            let count = BIG_MIN + rng.below((BIG_MAX - BIG_MIN + 1) as u64) as usize;
            let first = rng.below((BULK - count) as u64) as usize;
            let big = big_file(rng, first..first + count, POOL, &tag);
            (serde_json::to_vec(&big).unwrap(), Kind::Big)
        }
        (20..=24, Some(previous)) => (previous.to_vec(), Kind::Copy),
        (25..=27, _) => (br#"{"users": "not an array"}"#.to_vec(), Kind::Error),
        _ => (
            serde_json::to_vec_pretty(&small_file(rng, &tag, 5..41, POOL)).unwrap(),
            Kind::Small,
        ),
    };
    (name, body, kind)
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Small,
    Big,
    Copy,
    Error,
}

// ---------------------------------------------------------------------------------
// LazyFS mounts

fn is_mounted(mnt: &Path) -> bool {
    let wanted = mnt.to_string_lossy();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(&*wanted))
}

/// One LazyFS mount with its own config, fault FIFO, backing folder and mount point.
/// Dropping it unmounts (`fusermount3 -u`) and reaps the LazyFS process.
struct LazyFs {
    name: String,
    /// The folder underneath, where LazyFS keeps what is durable.
    root: PathBuf,
    mnt: PathBuf,
    fifo: PathBuf,
    log: PathBuf,
    /// Read end of `fifo_path_completed`, held open for the mount's whole life:
    /// LazyFS opens it once, at start, and acknowledges each clear-cache there.
    done: Option<fs::File>,
    child: Option<Child>,
}

impl LazyFs {
    fn mount(binary: &Path, dir: &Path, name: &str) -> LazyFs {
        let base = dir.join(name);
        let root = base.join("root");
        let mnt = base.join("mnt");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&mnt).unwrap();
        let fifo = base.join("faults.fifo");
        let done_path = base.join("done.fifo");
        let log = base.join("lazyfs.log");
        let config = base.join("config.toml");
        fs::write(
            &config,
            format!(
                "[faults]\nfifo_path=\"{}\"\nfifo_path_completed=\"{}\"\n\
                 [cache]\napply_eviction=false\n\
                 [cache.simple]\ncustom_size=\"{CACHE_SIZE}\"\nblocks_per_page=1\n\
                 [filesystem]\nlog_all_operations=false\nlogfile=\"{}\"\n",
                fifo.display(),
                done_path.display(),
                log.display()
            ),
        )
        .unwrap();
        let out = fs::File::create(base.join("lazyfs.out")).unwrap();
        // The command LazyFS's own scripts/mount-lazyfs.sh runs, in the foreground so
        // that the process is ours to reap.
        let child = Command::new(binary)
            .arg(&mnt)
            .arg("--config-path")
            .arg(&config)
            .args(["-o", "allow_other", "-o", "modules=subdir", "-o"])
            .arg(format!("subdir={}", root.display()))
            .arg("-f")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let mut lazy = LazyFs {
            name: name.to_owned(),
            root,
            mnt,
            fifo,
            log,
            done: None,
            child: Some(child),
        };
        let started = Instant::now();
        loop {
            if let Some(status) = lazy.child.as_mut().unwrap().try_wait().unwrap() {
                let out = fs::read_to_string(base.join("lazyfs.out")).unwrap_or_default();
                panic!("LazyFS ({name}) exited at start-up with {status}:\n{out}");
            }
            if lazy.done.is_none() && done_path.exists() {
                // Read and write, non-blocking: the open never waits, and reads never
                // see end-of-file between acknowledgements.
                lazy.done = Some(
                    fs::OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(&done_path)
                        .unwrap(),
                );
            }
            if lazy.done.is_some() && is_mounted(&lazy.mnt) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "LazyFS ({name}) did not mount {} within 20 s",
                lazy.mnt.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        lazy
    }

    fn command(&self, command: &str) -> Result<(), String> {
        let started = Instant::now();
        let mut fifo = loop {
            match fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.fifo)
            {
                Ok(f) => break f,
                Err(e) if started.elapsed() > Duration::from_secs(10) => {
                    return Err(format!("{}: open {}: {e}", self.name, self.fifo.display()));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        fifo.write_all(format!("{command}\n").as_bytes())
            .map_err(|e| format!("{}: write {command}: {e}", self.name))
    }

    /// The power cut: drops every write not fsynced, then waits for LazyFS to say so.
    fn clear_cache(&mut self) -> Result<(), String> {
        self.command("lazyfs::clear-cache")?;
        let done = self.done.as_mut().unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&got).contains("finished::clear-cache") {
            match done.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if started.elapsed() > Duration::from_secs(30) {
                        return Err(format!(
                            "{}: no clear-cache acknowledgement in 30 s",
                            self.name
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(format!("{}: read the acknowledgement: {e}", self.name)),
            }
        }
        Ok(())
    }

    /// The cache's usage in percent of its pages, as LazyFS logs it. Commands are read
    /// in chunks, so this waits for the answer before anything else is sent.
    fn cache_usage(&self) -> Option<f64> {
        let count = |text: &str| text.matches("cache usage").count();
        let before = count(&fs::read_to_string(&self.log).unwrap_or_default());
        self.command("lazyfs::display-cache-usage").ok()?;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            if count(&text) > before {
                let line = text.lines().rfind(|l| l.contains("cache usage"))?;
                let tail = line.rsplit(" is ").next()?;
                return tail.trim().trim_end_matches('%').trim().parse().ok();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        for _ in 0..50 {
            if !is_mounted(&self.mnt) {
                break;
            }
            let unmounted = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if unmounted {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if is_mounted(&self.mnt) {
            eprintln!(
                "{}: busy; lazy unmount of {}",
                self.name,
                self.mnt.display()
            );
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mnt)
                .status();
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---------------------------------------------------------------------------------
// The rig: mounts, inbox, store

#[derive(Clone, Copy, PartialEq, Debug)]
enum Layout {
    /// The store and the inbox on one mount.
    OneMount,
    /// The store and the inbox each on its own mount.
    TwoMounts,
}

struct Rig {
    // Fields drop in this order: the mounts go before their folder.
    mounts: Vec<LazyFs>,
    root: Option<TempDir>,
    dir: PathBuf,
    inbox: PathBuf,
    /// The inbox as the folder under its mount holds it.
    inbox_backing: PathBuf,
    db: PathBuf,
    logs: PathBuf,
}

impl Rig {
    fn new(binary: &Path, layout: Layout) -> Rig {
        let root = TempDir::new().unwrap();
        let dir = root.path().to_path_buf();
        let logs = dir.join("logs");
        fs::create_dir(&logs).unwrap();
        let mut rig = Rig {
            mounts: Vec::new(),
            root: Some(root),
            dir: dir.clone(),
            inbox: PathBuf::new(),
            inbox_backing: PathBuf::new(),
            db: PathBuf::new(),
            logs,
        };
        match layout {
            Layout::OneMount => {
                rig.mounts.push(LazyFs::mount(binary, &dir, "both"));
                let mnt = rig.mounts[0].mnt.clone();
                rig.inbox = mnt.join("inbox");
                rig.inbox_backing = rig.mounts[0].root.join("inbox");
                rig.db = mnt.join("data");
            }
            Layout::TwoMounts => {
                rig.mounts.push(LazyFs::mount(binary, &dir, "store"));
                rig.mounts.push(LazyFs::mount(binary, &dir, "inbox"));
                rig.db = rig.mounts[0].mnt.join("data");
                rig.inbox = rig.mounts[1].mnt.join("inbox");
                rig.inbox_backing = rig.mounts[1].root.join("inbox");
            }
        }
        fs::create_dir(&rig.inbox).unwrap();
        // The inbox's own entry in its parent must survive the first cut. (LazyFS
        // passes metadata through; this is for the record.)
        fs::File::open(rig.inbox.parent().unwrap())
            .and_then(|d| d.sync_all())
            .unwrap();
        rig
    }

    fn command(&self, sub: &str) -> Command {
        let mut cmd = process();
        cmd.current_dir(&self.dir)
            .arg(sub)
            .arg("--db")
            .arg(&self.db);
        cmd
    }

    fn daemon(&self, stderr: &Path) -> Daemon {
        let child = self
            .command("run")
            .arg("--watch")
            .arg(&self.inbox)
            .args(["--settle", SETTLE_MS])
            .stdout(Stdio::null())
            .stderr(fs::File::create(stderr).unwrap())
            .spawn()
            .expect("start the daemon");
        Daemon { child }
    }

    fn once(&self, stderr: &Path) -> Result<std::process::ExitStatus, String> {
        let mut child = self
            .command("run")
            .arg("--watch")
            .arg(&self.inbox)
            .args(["--settle", SETTLE_MS, "--once"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(stderr).unwrap())
            .spawn()
            .expect("start run --once");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Ok(status);
            }
            if started.elapsed() > Duration::from_secs(300) {
                let _ = child.kill();
                let _ = child.wait();
                return Err("run --once did not finish in 300 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `export --format FORMAT`: its output, or why the store did not open.
    fn export(&self, format: &str) -> Result<Vec<u8>, String> {
        let out = self
            .command("export")
            .args(["--format", format])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        if out.status.code() == Some(0) {
            Ok(out.stdout)
        } else {
            Err(format!(
                "export --format {format} exited {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn drop_file(&self, name: &str, body: &[u8]) {
        // An uploader that makes its upload durable before it shows it: written under
        // an ignored name, fsynced, renamed into place. The file is written in the
        // folder under the mount and renamed through the mount (so that the daemon's
        // inotify watch sees it). Written through LazyFS instead, even fsynced, its
        // mtime would change at the cut — LazyFS reports the time of the write until
        // then and the time of the fsync's write-back after — and the daemon would
        // rightly take it for a new request ("removed or replaced since it was
        // applied") and apply it again. A disk file system keeps the mtime an fsync
        // made durable. Request data is then never what a cut takes; only userdrop's
        // own writes are.
        let hidden = format!(".{name}.upload");
        let mut file = fs::File::create(self.inbox_backing.join(&hidden)).unwrap();
        file.write_all(body).unwrap();
        file.sync_all().unwrap();
        drop(file);
        fs::rename(self.inbox.join(&hidden), self.inbox.join(name)).unwrap();
    }

    fn count_responses(&self) -> usize {
        fs::read_dir(&self.inbox)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        !name.starts_with('.') && name.ends_with(".response.json")
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    fn cut(&mut self, figures: &mut Figures) -> Result<(), String> {
        for mount in &mut self.mounts {
            if let Some(usage) = mount.cache_usage() {
                figures.max_cache_usage = figures.max_cache_usage.max(usage);
            }
            mount.clear_cache()?;
        }
        Ok(())
    }
}

struct Daemon {
    child: Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn response_path(inbox: &Path, request: &str) -> PathBuf {
    let stem = request.strip_suffix(".json").unwrap();
    inbox.join(format!("{stem}.response.json"))
}

// ---------------------------------------------------------------------------------
// The model (tests/common/requests.rs), and what a power cut may leave of it

/// Keys sorted whatever serde_json's map order is, so that equal records hash equal.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (k, v) in sorted {
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push(':');
                canonical(v, out);
                out.push(',');
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for v in items {
                canonical(v, out);
                out.push(',');
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn digest(value: &Value) -> u64 {
    let mut text = String::new();
    canonical(value, &mut text);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    hasher.finish()
}

fn bytes_digest(bytes: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// The normalised emails a response answers with a single code 0.
fn applied_emails(request: &Value, response: &Value) -> Vec<String> {
    if response["status"] == "ERROR" {
        return Vec::new();
    }
    let empty = Vec::new();
    let users = request["users"].as_array().unwrap_or(&empty);
    let log = response["response"]["log"].as_array().unwrap_or(&empty);
    users
        .iter()
        .zip(log)
        .filter(|(_, entry)| {
            let info = entry["info"].as_array();
            info.is_some_and(|i| i.len() == 1 && i[0]["code"] == 0)
        })
        .filter_map(|(user, _)| user["email"].as_str().map(|e| normalise("email", e)))
        .collect()
}

/// Per user, the digest of its record after each file that answered it code 0, with
/// that file's index.
type Versions = HashMap<String, Vec<(usize, u64)>>;

impl Model {
    /// `Err` when the response does not fit its request (one log entry per user).
    fn apply(
        &mut self,
        versions: &mut Versions,
        index: usize,
        name: &str,
        request: &Value,
        response: &Value,
    ) -> Result<(), String> {
        if response["status"] == "ERROR" {
            self.error_files += 1;
            return Ok(());
        }
        let users = request["users"].as_array().ok_or("request without users")?;
        let log = response["response"]["log"]
            .as_array()
            .ok_or("response without a log")?;
        if users.len() != log.len() {
            return Err(format!("{} users, {} log entries", users.len(), log.len()));
        }
        for (user, entry) in users.iter().zip(log) {
            let info = entry["info"].as_array().ok_or("log entry without info")?;
            if !(info.len() == 1 && info[0]["code"] == 0) {
                self.rejected += 1;
                continue;
            }
            let message = info[0]["message"].as_str().unwrap_or("");
            let email = normalise("email", user["email"].as_str().unwrap_or(""));
            let stored = self.merge(name, email.clone(), user, message);
            let version = digest(&Value::Object(stored.clone()));
            versions.entry(email).or_default().push((index, version));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Figures and violations

#[derive(Default)]
struct Figures {
    rounds: usize,
    starts: usize,
    kills: usize,
    kills_after_a_response: usize,
    kills_with_work: usize,
    requests: usize,
    big_requests: usize,
    responses_at_cuts: usize,
    users_checked: usize,
    sled_conf_warnings: usize,
    max_cache_usage: f64,
    final_users: usize,
    violations: BTreeMap<&'static str, Vec<String>>,
}

impl Figures {
    fn violation(&mut self, kind: &'static str, what: String) {
        self.violations.entry(kind).or_default().push(what);
    }

    fn total(&self) -> usize {
        self.violations.values().map(Vec::len).sum()
    }

    fn report(&self, layout: Layout, seed: u64, took: Duration) -> String {
        let mut text = format!(
            "powercut {layout:?}, seed {seed} (USERDROP_POWERCUT_SEED={seed}), {took:.1?}\n"
        );
        text.push_str(&format!(
            "  rounds (power cuts with the daemon killed): {}, daemon starts: {}, kills: {} \
             ({} just after a response appeared, {} with a request unanswered)\n",
            self.rounds, self.starts, self.kills, self.kills_after_a_response, self.kills_with_work
        ));
        text.push_str(&format!(
            "  requests: {} ({} of {BIG_MIN}-{BIG_MAX} users); responses checked at cuts: {}, \
             code-0 users checked: {}\n",
            self.requests, self.big_requests, self.responses_at_cuts, self.users_checked
        ));
        text.push_str(&format!(
            "  final store: {} users; sled 'empty/corrupt configuration' warnings: {}; \
             largest LazyFS cache usage: {:.1}%\n",
            self.final_users, self.sled_conf_warnings, self.max_cache_usage
        ));
        text.push_str(&format!("  violations: {}\n", self.total()));
        for (kind, items) in &self.violations {
            text.push_str(&format!("    {kind}: {}\n", items.len()));
            for item in items.iter().take(5) {
                text.push_str(&format!("      {item}\n"));
            }
        }
        text
    }
}

/// What existed just after one cut.
struct Cut {
    round: usize,
    /// Index and digest of the bytes of every response that existed and parsed.
    responses: Vec<(usize, u64)>,
    /// Email → digest of the record; `None` when the store did not open.
    store: Option<HashMap<String, u64>>,
}

fn read_export(json: &[u8]) -> Result<BTreeMap<String, Value>, String> {
    let export: Value = serde_json::from_slice(json).map_err(|e| format!("export json: {e}"))?;
    let users = export["users"].as_array().ok_or("export without users")?;
    Ok(users
        .iter()
        .map(|u| (u["email"].as_str().unwrap_or("").to_owned(), u.clone()))
        .collect())
}

fn scan_log(path: &Path, figures: &mut Figures, what: &str) {
    let text = fs::read_to_string(path).unwrap_or_default();
    if text.contains("panicked") {
        let line = text.lines().find(|l| l.contains("panicked")).unwrap_or("");
        figures.violation("panic", format!("{what}: {line}"));
    }
    figures.sled_conf_warnings += text.matches("empty/corrupt configuration").count();
}

// ---------------------------------------------------------------------------------
// The scenario

fn scenario(layout: Layout) {
    let Some(binary) = std::env::var_os("USERDROP_LAZYFS").map(PathBuf::from) else {
        println!(
            "powercut: skipped — set USERDROP_LAZYFS to a LazyFS binary built with \
             ../shared/lazyfs/offline-build.patch (needs root, /dev/fuse, fusermount3)"
        );
        return;
    };
    if !binary.is_file() {
        println!(
            "powercut: skipped — USERDROP_LAZYFS={} is not a file",
            binary.display()
        );
        return;
    }
    let rounds = rounds();
    let seed = seed();
    let salt = match layout {
        Layout::OneMount => 1,
        Layout::TwoMounts => 2,
    };
    println!("powercut {layout:?}: seed {seed}, {rounds} rounds");
    let mut rng = Rng::new(seed ^ salt);
    let started = Instant::now();
    let mut figures = Figures::default();
    let mut rig = Rig::new(&binary, layout);

    let mut requests: Vec<(String, Vec<u8>, Kind)> = Vec::new();
    let mut cuts: Vec<Cut> = Vec::new();
    let mut broken: BTreeSet<String> = BTreeSet::new();
    let mut failed_starts = 0;

    for round in 0..rounds {
        let stderr = rig.logs.join(format!("round{round:03}.stderr"));
        let mut daemon = rig.daemon(&stderr);
        figures.starts += 1;
        let t0 = Instant::now();
        // Kill times spread over the daemon's start-up and its work, weighted towards
        // the first few hundred milliseconds, when the burst below is being applied.
        let run_for = Duration::from_millis(if rng.chance(50) {
            20 + rng.below(600)
        } else {
            20 + rng.below(MAX_RUN_MS)
        });
        // Half the rounds cut just after a response appears: the moment it must be
        // durable together with the users it reports.
        let after_response = rng.chance(50);
        let min_wait = Duration::from_millis(rng.below(1000));
        let base = rig.count_responses();
        // A burst of files at once (so that some wait while another is applied), then
        // a stream.
        let burst = rng.below(5) as usize;
        let drops = burst + 1 + rng.below(MAX_DROPS as u64) as usize;
        let mut dropped = 0;
        let mut next_drop = t0;
        let mut saw_response = false;
        let mut exited = None;
        loop {
            let now = Instant::now();
            if dropped < drops && now >= next_drop {
                let previous = requests.last().map(|(_, b, _)| b.as_slice());
                let (name, body, kind) = next_request(&mut rng, requests.len(), previous);
                rig.drop_file(&name, &body);
                requests.push((name, body, kind));
                dropped += 1;
                if dropped > burst {
                    next_drop = now + Duration::from_millis(20 + rng.below(300));
                }
            }
            if let Some(status) = daemon.child.try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            if after_response && now - t0 >= min_wait && rig.count_responses() > base {
                std::thread::sleep(Duration::from_millis(rng.below(20)));
                saw_response = true;
                break;
            }
            let limit = if after_response {
                Duration::from_secs(4)
            } else {
                run_for
            };
            if now - t0 >= limit {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let killed_after = t0.elapsed();
        match exited {
            Some(status) => {
                let err = fs::read_to_string(&stderr).unwrap_or_default();
                figures.violation(
                    "restart failed (daemon exited by itself)",
                    format!(
                        "round {round}: {status}: {}",
                        err.trim().lines().last().unwrap_or("")
                    ),
                );
                failed_starts += 1;
            }
            None => {
                // SIGKILL, as kill -9 would; reaped before the cut, so every write it
                // made has reached LazyFS.
                daemon.child.kill().unwrap();
                daemon.child.wait().unwrap();
                figures.kills += 1;
                failed_starts = 0;
                if saw_response {
                    figures.kills_after_a_response += 1;
                }
            }
        }
        drop(daemon);
        scan_log(&stderr, &mut figures, &format!("round {round}"));
        rig.cut(&mut figures)
            .unwrap_or_else(|e| panic!("the power cut failed: {e}"));
        figures.rounds += 1;

        // What survived the cut.
        let mut present = Vec::new();
        let mut answered = 0;
        let mut missing_now = 0;
        let store = match rig.export("json").and_then(|j| read_export(&j)) {
            Ok(users) => Some(users),
            Err(e) => {
                figures.violation(
                    "store did not open after a cut",
                    format!("round {round}: {e}"),
                );
                None
            }
        };
        for (index, (name, body, _)) in requests.iter().enumerate() {
            let path = response_path(&rig.inbox, name);
            let Ok(bytes) = fs::read(&path) else { continue };
            answered += 1;
            let response: Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => {
                    if broken.insert(name.clone()) {
                        figures.violation(
                            "response unreadable after a cut",
                            format!("round {round}: {name}: {} bytes: {e}", bytes.len()),
                        );
                    }
                    continue;
                }
            };
            present.push((index, bytes_digest(&bytes)));
            let request: Value = serde_json::from_slice(body).unwrap();
            if let Some(store) = &store {
                missing_now += applied_emails(&request, &response)
                    .iter()
                    .filter(|e| !store.contains_key(*e))
                    .count();
            }
        }
        if answered < requests.len() {
            figures.kills_with_work += 1;
        }
        println!(
            "  round {round:3}: killed after {:4} ms{}, {} dropped, {answered}/{} answered, \
             store {}, code-0 users missing now {missing_now}{}",
            killed_after.as_millis(),
            if saw_response {
                " (a response had appeared)"
            } else {
                ""
            },
            dropped,
            requests.len(),
            store
                .as_ref()
                .map_or("did not open".to_owned(), |s| format!("{} users", s.len())),
            if exited.is_some() {
                ", daemon had exited"
            } else {
                ""
            }
        );
        cuts.push(Cut {
            round,
            responses: present,
            store: store.map(|s| s.iter().map(|(k, v)| (k.clone(), digest(v))).collect()),
        });
        if failed_starts >= 3 {
            figures.violation(
                "store wedged",
                format!("round {round}: 3 starts in a row failed"),
            );
            break;
        }
    }

    // The end: finish the work, cut once more, and check everything.
    let stderr = rig.logs.join("final.stderr");
    let wedged = figures.violations.contains_key("store wedged");
    let finished = if wedged {
        Err("store wedged".to_owned())
    } else {
        rig.once(&stderr)
    };
    scan_log(&stderr, &mut figures, "final run --once");
    match &finished {
        Ok(status) if matches!(status.code(), Some(0 | 3)) => {}
        Ok(status) => {
            let err = fs::read_to_string(&stderr).unwrap_or_default();
            figures.violation(
                "final run --once failed",
                format!("{status}: {}", err.trim().lines().last().unwrap_or("")),
            );
        }
        Err(e) => figures.violation("final run --once failed", e.clone()),
    }
    rig.cut(&mut figures)
        .unwrap_or_else(|e| panic!("the power cut failed: {e}"));
    figures.requests = requests.len();
    figures.big_requests = requests.iter().filter(|r| r.2 == Kind::Big).count();

    final_check(&rig, &requests, &cuts, &mut broken, &mut figures);

    let report = figures.report(layout, seed, started.elapsed());
    println!("{report}");
    if figures.total() > 0 {
        // Unmount first; keep the backing folders and logs for inspection.
        rig.mounts.clear();
        let kept = rig.root.take().unwrap().keep();
        println!("kept for inspection: {}", kept.display());
        panic!("{report}");
    }
    assert!(
        figures.max_cache_usage < 100.0,
        "a LazyFS cache filled up (writes then pass through): raise CACHE_SIZE"
    );
}

fn final_check(
    rig: &Rig,
    requests: &[(String, Vec<u8>, Kind)],
    cuts: &[Cut],
    broken: &mut BTreeSet<String>,
    figures: &mut Figures,
) {
    // Responses: one per request, parsed, equal to a clean run's.
    let clean = TempDir::new().unwrap();
    let clean_inbox = clean.path().join("watch");
    fs::create_dir(&clean_inbox).unwrap();
    for (name, body, _) in requests {
        fs::write(clean_inbox.join(name), body).unwrap();
    }
    let out = process()
        .current_dir(clean.path())
        .args(["run", "--watch"])
        .arg(&clean_inbox)
        .arg("--db")
        .arg(clean.path().join("data"))
        .args(["--settle", SETTLE_MS, "--once"])
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "the clean run --once (no LazyFS): {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let mut finals: Vec<Option<(Value, u64)>> = Vec::new();
    let mut model = Model::default();
    let mut versions = Versions::new();
    for (index, (name, body, _)) in requests.iter().enumerate() {
        let path = response_path(&rig.inbox, name);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                figures.violation(
                    "request without a response at the end",
                    format!("{name}: {e}"),
                );
                finals.push(None);
                continue;
            }
        };
        let response: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                if broken.insert(name.clone()) {
                    figures.violation(
                        "response unreadable after a cut",
                        format!("end: {name}: {} bytes: {e}", bytes.len()),
                    );
                }
                finals.push(None);
                continue;
            }
        };
        let expected: Value = serde_json::from_slice(
            &fs::read(response_path(&clean_inbox, name)).expect("the clean run's response"),
        )
        .unwrap();
        if response != expected {
            figures.violation(
                "response differs from a clean run (applied twice or in part)",
                format!(
                    "{name}: status {} vs clean {}",
                    response["status"], expected["status"]
                ),
            );
        }
        let request: Value = serde_json::from_slice(body).unwrap();
        if let Err(e) = model.apply(&mut versions, index, name, &request, &response) {
            figures.violation("response does not fit its request", format!("{name}: {e}"));
        }
        finals.push(Some((response, bytes_digest(&bytes))));
    }

    // No stray file: only the requests and their responses are left in the inbox.
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for (name, _, _) in requests {
        expected.insert(name.clone());
        expected.insert(
            response_path(Path::new(""), name)
                .to_string_lossy()
                .into_owned(),
        );
    }
    for entry in fs::read_dir(&rig.inbox).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !expected.contains(&name) {
            figures.violation("stray file in the inbox", name);
        }
    }

    // Each cut: every code-0 user of every response that existed was in the store with
    // that file's version of it or a later one.
    for cut in cuts {
        let Some(store) = &cut.store else { continue };
        for &(index, bytes) in &cut.responses {
            let name = &requests[index].0;
            let Some((response, final_bytes)) = &finals[index] else {
                continue;
            };
            figures.responses_at_cuts += 1;
            if *final_bytes != bytes {
                figures.violation(
                    "response changed after it had appeared",
                    format!("round {}: {name}", cut.round),
                );
            }
            let request: Value = serde_json::from_slice(&requests[index].1).unwrap();
            for email in applied_emails(&request, response) {
                figures.users_checked += 1;
                let versions = versions.get(&email).map(Vec::as_slice).unwrap_or(&[]);
                match store.get(&email) {
                    None => figures.violation(
                        "code-0 user missing from the store after a cut",
                        format!("round {}: {name}: {email}", cut.round),
                    ),
                    Some(stored) => {
                        let at_or_after = versions.iter().any(|&(i, v)| i >= index && v == *stored);
                        if !at_or_after {
                            let older = versions.iter().any(|&(i, v)| i < index && v == *stored);
                            figures.violation(
                                "code-0 user with older or other data after a cut",
                                format!(
                                    "round {}: {name}: {email} ({})",
                                    cut.round,
                                    if older {
                                        "an older version"
                                    } else {
                                        "no version any file gave"
                                    }
                                ),
                            );
                        }
                    }
                }
            }
        }
    }

    // The store now equals the model.
    let stored = match rig.export("json").and_then(|j| read_export(&j)) {
        Ok(s) => s,
        Err(e) => {
            figures.violation("store did not open after a cut", format!("end: {e}"));
            return;
        }
    };
    figures.final_users = stored.len();
    for (email, data) in &model.users {
        match stored.get(email) {
            None => figures.violation("final store: user lost", email.clone()),
            Some(actual) => {
                if digest(actual) != digest(&Value::Object(data.clone())) {
                    figures.violation(
                        "final store: user with wrong data",
                        format!(
                            "{email}: expected {}, store has {actual}",
                            Value::Object(data.clone())
                        ),
                    );
                }
            }
        }
    }
    for email in stored.keys() {
        if !model.users.contains_key(email) {
            figures.violation("final store: user no response applied", email.clone());
        }
    }
    match rig.export("ndjson") {
        Ok(ndjson) => {
            for line in ndjson.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let Ok(record) = serde_json::from_slice::<Value>(line) else {
                    figures.violation(
                        "final store: bad ndjson line",
                        String::from_utf8_lossy(line).into(),
                    );
                    continue;
                };
                let email = record["email"].as_str().unwrap_or("");
                let expected = model.source.get(email).map(String::as_str);
                if record["source_file"].as_str() != expected {
                    figures.violation(
                        "final store: wrong source_file",
                        format!(
                            "{email}: expected {expected:?}, store has {}",
                            record["source_file"]
                        ),
                    );
                }
            }
        }
        Err(e) => figures.violation("store did not open after a cut", format!("end: {e}")),
    }
    println!(
        "  model: added {}, updated {}, unchanged {}, rejected {}, files rejected whole {}",
        model.added, model.updated, model.unchanged, model.rejected, model.error_files
    );
}

#[test]
#[ignore = "needs root, /dev/fuse and USERDROP_LAZYFS; run with --release --nocapture"]
fn power_cut_store_and_inbox_on_one_mount() {
    scenario(Layout::OneMount);
}

#[test]
#[ignore = "needs root, /dev/fuse and USERDROP_LAZYFS; run with --release --nocapture"]
fn power_cut_store_and_inbox_on_separate_mounts() {
    scenario(Layout::TwoMounts);
}
