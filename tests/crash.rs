//! Acceptance for SPEC §2 and §4 under `kill -9`: a stream of request files waits in
//! the inbox, the daemon is started and SIGKILLed at random moments over and over, and
//! a final `run --once` finishes the work. Afterwards every request has exactly one
//! response, no temporary file is left, every response is identical to the one a clean
//! run of the same files writes, and the store equals a model replayed from the
//! responses (each file applied exactly once, in name order).
//!
//! The randomness comes from a seeded xorshift generator; the seed is printed and can
//! be replayed with `USERDROP_CRASH_SEED=N`. `soak` (ignored) does the same with
//! `USERDROP_SOAK_KILLS` kills (1000 by default):
//! `USERDROP_SOAK_KILLS=1000 cargo test --release --test crash -- --ignored --nocapture soak`.

mod common;

use common::process;
use common::requests::{Model, Rng, big_file, seed_from_env, small_file};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Users per atomic step: the big files take several steps, so kills land mid-file.
const STEP_USERS: &str = "500";
/// Users in each of the two big files of a round.
const BIG_FILE_USERS: usize = 3000;
/// Emails shared by the small files, so that files overlap.
const POOL: u64 = 40;
/// Longest time the daemon runs before it is killed.
const MAX_SLEEP_MS: u64 = 400;

fn seed() -> u64 {
    seed_from_env("USERDROP_CRASH_SEED").unwrap_or(0x5EED_0C0F_FEE0_2024)
}

// ---------------------------------------------------------------------------------
// Request files (the users come from tests/common/requests.rs)

/// One round of 12 request files, named `PREFIXf000.json`…: small files with
/// overlapping emails, two big files, an exact copy of the file before it (so some
/// users are already up to date) and one file rejected whole.
fn round(rng: &mut Rng, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..12 {
        let name = format!("{prefix}f{i:03}.json");
        let tag = format!("{prefix}{i}");
        let body = match i {
            3 => serde_json::to_vec(&big_file(rng, 0..BIG_FILE_USERS, POOL, &tag)).unwrap(),
            8 => {
                let first = BIG_FILE_USERS / 2;
                let users = first..first + BIG_FILE_USERS;
                serde_json::to_vec_pretty(&big_file(rng, users, POOL, &tag)).unwrap()
            }
            6 => files[5].1.clone(),
            10 => br#"{"users": "not an array"}"#.to_vec(),
            _ => serde_json::to_vec_pretty(&small_file(rng, &tag, 15..41, POOL)).unwrap(),
        };
        files.push((name, body));
    }
    files
}

// ---------------------------------------------------------------------------------
// The binary

/// A working folder with an inbox `watch/` and a store `data/`.
struct Site {
    dir: PathBuf,
    /// The PostgreSQL store of the site (USERDROP_TEST_ENGINE=postgres); `None` on sled.
    store: Option<String>,
}

impl Site {
    fn new(root: &Path, name: &str) -> Site {
        let dir = root.join(name);
        fs::create_dir_all(dir.join("watch")).unwrap();
        Site {
            dir,
            store: common::thread_store(),
        }
    }

    fn inbox(&self) -> PathBuf {
        self.dir.join("watch")
    }

    fn db(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn command(&self, sub: &str) -> Command {
        let mut cmd = process();
        cmd.current_dir(&self.dir)
            .arg(sub)
            .arg("--db")
            .arg(self.db())
            .envs(common::store_vars(self.store.as_deref()));
        cmd
    }

    fn daemon(&self, stderr: &Path) -> Child {
        self.command("run")
            .arg("--watch")
            .arg(self.inbox())
            // The file rejected whole (wrong shape) waits for the settle time; keep it
            // well below the time between kills so the daemon answers it too.
            .args(["--step-users", STEP_USERS, "--settle", "100"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(stderr).unwrap())
            .spawn()
            .expect("start the daemon")
    }

    fn once(&self) -> Output {
        self.command("run")
            .arg("--watch")
            .arg(self.inbox())
            .args(["--step-users", STEP_USERS, "--once"])
            .output()
            .expect("run --once")
    }

    fn export(&self, format: &str) -> Vec<u8> {
        let out = self
            .command("export")
            .args(["--format", format])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "export --format {format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn add(&self, files: &[(String, Vec<u8>)]) {
        for (name, body) in files {
            // Written under an ignored name and renamed: the daemon is down anyway,
            // but a half-written file must never be what it finds.
            let hidden = self.inbox().join(format!(".{name}.upload"));
            fs::write(&hidden, body).unwrap();
            fs::rename(&hidden, self.inbox().join(name)).unwrap();
        }
    }

    fn response_path(&self, request: &str) -> PathBuf {
        let stem = request.strip_suffix(".json").unwrap();
        self.inbox().join(format!("{stem}.response.json"))
    }

    fn all_answered(&self, requests: &[String]) -> bool {
        requests.iter().all(|r| self.response_path(r).exists())
    }
}

// ---------------------------------------------------------------------------------
// The kill loop and the checks

#[derive(Default)]
struct Figures {
    kills: usize,
    /// Kills that found at least one request still without its response.
    kills_with_work: usize,
    /// Starts that exited on their own before the kill.
    early_exits: usize,
    /// Starts that exited non-zero with an error mentioning the store.
    reopen_failures: Vec<String>,
    panics: Vec<String>,
    rounds: usize,
    /// Starts that resumed a file cut short mid-way (from the daemon's log).
    resumed: usize,
    /// Starts that wrote responses a killed run held back (from the daemon's log).
    replayed: usize,
    /// The loop stopped at this start because the store kept failing to open.
    stopped_at: Option<usize>,
}

struct Outcome {
    files: usize,
    missing_responses: Vec<String>,
    bad_responses: Vec<String>,
    stray_files: Vec<String>,
    /// Responses that differ from the clean run's: a file applied twice or in part.
    differing_responses: Vec<String>,
    /// Model users absent from the store or with other data (lost updates).
    lost: Vec<String>,
    /// Store users the model does not have (applied though never answered code 0).
    extra: Vec<String>,
    wrong_source: Vec<String>,
    model: Model,
}

impl Outcome {
    fn problems(&self) -> usize {
        self.missing_responses.len()
            + self.bad_responses.len()
            + self.stray_files.len()
            + self.differing_responses.len()
            + self.lost.len()
            + self.extra.len()
            + self.wrong_source.len()
    }

    fn report(&self, seed: u64) -> String {
        let mut text = format!("seed {seed}: {} problem(s)\n", self.problems());
        let sections: [(&str, &Vec<String>); 7] = [
            ("requests without a response", &self.missing_responses),
            ("responses that do not parse", &self.bad_responses),
            ("stray files in the inbox", &self.stray_files),
            (
                "responses that differ from a clean run",
                &self.differing_responses,
            ),
            ("users lost or with wrong data", &self.lost),
            ("users in the store the model lacks", &self.extra),
            ("users with a wrong source_file", &self.wrong_source),
        ];
        for (what, items) in sections {
            if !items.is_empty() {
                text.push_str(&format!("{what} ({}):\n", items.len()));
                for item in items.iter().take(20) {
                    text.push_str(&format!("  {item}\n"));
                }
            }
        }
        text
    }
}

fn kill_loop(site: &Site, rng: &mut Rng, kills: usize, refill: bool) -> (Vec<String>, Figures) {
    let mut requests: Vec<String> = Vec::new();
    let mut figures = Figures::default();
    let log = site.dir.join("daemon.stderr");
    let started = Instant::now();
    let mut consecutive_failures = 0;
    for kill in 0..kills {
        if consecutive_failures >= 10 {
            // The store no longer opens: more starts would only repeat that.
            figures.stopped_at = Some(kill);
            break;
        }
        if requests.is_empty() || (refill && site.all_answered(&requests)) {
            let files = round(rng, &format!("r{:04}-", figures.rounds));
            figures.rounds += 1;
            site.add(&files);
            requests.extend(files.into_iter().map(|(name, _)| name));
        }
        let mut child = site.daemon(&log);
        std::thread::sleep(Duration::from_millis(rng.below(MAX_SLEEP_MS + 1)));
        match child.try_wait().unwrap() {
            None => {
                // SIGKILL, as `kill -9` would.
                child.kill().unwrap();
                child.wait().unwrap();
                figures.kills += 1;
                consecutive_failures = 0;
                if !site.all_answered(&requests) {
                    figures.kills_with_work += 1;
                }
            }
            Some(status) => {
                figures.early_exits += 1;
                let err = fs::read_to_string(&log).unwrap_or_default();
                if !status.success() && (err.contains("store") || err.contains("data")) {
                    figures.reopen_failures.push(format!(
                        "start {kill} (after {} kills): {status}: {}",
                        figures.kills,
                        err.trim()
                    ));
                    consecutive_failures += 1;
                } else {
                    consecutive_failures = 0;
                }
            }
        }
        let err = fs::read_to_string(&log).unwrap_or_default();
        if err.contains("resuming an interrupted file") {
            figures.resumed += 1;
        }
        if err.contains("held back") {
            figures.replayed += 1;
        }
        if err.contains("panicked") {
            figures.panics.push(format!("start {kill}: {}", err.trim()));
        }
        if kills >= 100 && (kill + 1) % 100 == 0 {
            println!(
                "  {} starts, {} rounds, {:.0?}",
                kill + 1,
                figures.rounds,
                started.elapsed()
            );
        }
    }
    (requests, figures)
}

fn read_json(path: &Path) -> Result<Value, String> {
    let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every file under `dir` that is neither one of `requests` nor its response.
fn strays(site: &Site, requests: &[String]) -> Vec<String> {
    let mut expected: std::collections::HashSet<PathBuf> =
        requests.iter().map(|r| site.inbox().join(r)).collect();
    expected.extend(requests.iter().map(|r| site.response_path(r)));
    let mut found = Vec::new();
    let mut folders = vec![site.inbox()];
    while let Some(folder) = folders.pop() {
        for entry in fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if !expected.contains(&path) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// First difference between two responses, for the report.
fn first_difference(clean: &Value, crashed: &Value) -> String {
    if clean["status"] != crashed["status"] {
        return format!(
            "status: clean {} vs crashed {}",
            clean["status"], crashed["status"]
        );
    }
    let empty = Vec::new();
    let a = clean["response"]["log"].as_array().unwrap_or(&empty);
    let b = crashed["response"]["log"].as_array().unwrap_or(&empty);
    if a.len() != b.len() {
        return format!("log length: clean {} vs crashed {}", a.len(), b.len());
    }
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if x != y {
            return format!("log[{i}]: clean {x} vs crashed {y}");
        }
    }
    format!("clean {clean} vs crashed {crashed}")
}

fn check(root: &Path, site: &Site, requests: &[String]) -> Outcome {
    let mut outcome = Outcome {
        files: requests.len(),
        missing_responses: Vec::new(),
        bad_responses: Vec::new(),
        stray_files: strays(site, requests),
        differing_responses: Vec::new(),
        lost: Vec::new(),
        extra: Vec::new(),
        wrong_source: Vec::new(),
        model: Model::default(),
    };

    // A clean run of the same files in a fresh inbox and store.
    let clean = Site::new(root, "clean");
    for name in requests {
        fs::copy(site.inbox().join(name), clean.inbox().join(name)).unwrap();
    }
    let out = clean.once();
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "clean run --once: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    for name in requests {
        let response = site.response_path(name);
        if !response.exists() {
            outcome.missing_responses.push(name.clone());
            continue;
        }
        let crashed = match read_json(&response) {
            Ok(v) => v,
            Err(e) => {
                outcome.bad_responses.push(e);
                continue;
            }
        };
        let expected = read_json(&clean.response_path(name)).expect("the clean run's response");
        if crashed != expected {
            outcome
                .differing_responses
                .push(format!("{name}: {}", first_difference(&expected, &crashed)));
        }
        let request = read_json(&site.inbox().join(name)).unwrap_or(Value::Null);
        outcome.model.apply_response(name, &request, &crashed);
    }

    let export: Value = serde_json::from_slice(&site.export("json")).expect("export json");
    let mut stored: BTreeMap<String, Value> = BTreeMap::new();
    for user in export["users"].as_array().expect("export has users") {
        stored.insert(user["email"].as_str().unwrap().to_owned(), user.clone());
    }
    for (email, data) in &outcome.model.users {
        match stored.get(email) {
            None => outcome
                .lost
                .push(format!("{email}: missing from the store")),
            Some(actual) => {
                let actual = actual.as_object().unwrap();
                let keys: std::collections::BTreeSet<&String> =
                    data.keys().chain(actual.keys()).collect();
                for key in keys {
                    if data.get(key) != actual.get(key) {
                        outcome.lost.push(format!(
                            "{email}.{key}: expected {:?}, store has {:?}",
                            data.get(key),
                            actual.get(key)
                        ));
                    }
                }
            }
        }
    }
    for email in stored.keys() {
        if !outcome.model.users.contains_key(email) {
            outcome.extra.push(email.clone());
        }
    }

    let ndjson = site.export("ndjson");
    for line in ndjson.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let record: Value = serde_json::from_slice(line).expect("ndjson line");
        let email = record["email"].as_str().unwrap();
        let expected = outcome.model.source.get(email).map(String::as_str);
        if record["source_file"].as_str() != expected {
            outcome.wrong_source.push(format!(
                "{email}: expected {expected:?}, store has {}",
                record["source_file"]
            ));
        }
    }
    outcome
}

/// The whole scenario: start and kill the daemon `starts` times, finish with
/// `run --once`, check. `Err` when that last run fails (the store did not reopen).
/// When anything is wrong the working folder is kept and its path printed.
fn scenario(starts: usize, refill: bool) -> (u64, Figures, Result<Outcome, String>) {
    let seed = seed();
    println!("crash seed = {seed} (replay with USERDROP_CRASH_SEED={seed})");
    let mut rng = Rng::new(seed);
    let root = TempDir::new().unwrap();
    let site = Site::new(root.path(), "site");
    let (requests, figures) = kill_loop(&site, &mut rng, starts, refill);

    let out = site.once();
    let err = String::from_utf8_lossy(&out.stderr);
    let result = if err.contains("panicked") || !matches!(out.status.code(), Some(0 | 3)) {
        Err(format!(
            "seed {seed}: run --once after the kills exited {:?}:\n{err}",
            out.status
        ))
    } else {
        Ok(check(root.path(), &site, &requests))
    };
    let bad = result.as_ref().map_or(true, |o| o.problems() > 0)
        || !figures.reopen_failures.is_empty()
        || !figures.panics.is_empty();
    if bad {
        println!("kept for inspection: {}", root.keep().display());
    }
    (seed, figures, result)
}

#[test]
fn sigkill_at_random_moments_loses_and_doubles_nothing() {
    let started = Instant::now();
    let (seed, figures, outcome) = scenario(8, true);
    let outcome = outcome.unwrap_or_else(|e| panic!("{e}"));
    println!(
        "kills {}, with work pending {}, resumed mid-file {}, responses replayed {}, files {}, took {:.1?}",
        figures.kills,
        figures.kills_with_work,
        figures.resumed,
        figures.replayed,
        outcome.files,
        started.elapsed()
    );
    assert!(
        figures.reopen_failures.is_empty(),
        "seed {seed}: the store failed to reopen after a kill:\n{}",
        figures.reopen_failures.join("\n")
    );
    assert!(
        figures.panics.is_empty(),
        "seed {seed}: the daemon panicked:\n{}",
        figures.panics.join("\n")
    );
    assert_eq!(outcome.problems(), 0, "{}", outcome.report(seed));
    // The data exercise every path: adds, updates, unchanged users, rejections.
    let m = &outcome.model;
    assert!(
        m.added > 0 && m.updated > 0 && m.unchanged > 0 && m.rejected > 0,
        "seed {seed}: added {} updated {} unchanged {} rejected {}",
        m.added,
        m.updated,
        m.unchanged,
        m.rejected
    );
    assert_eq!(m.error_files, figures.rounds, "one ERROR file per round");
}

#[test]
#[ignore = "long: USERDROP_SOAK_KILLS kills (1000 by default); run with --release"]
fn soak() {
    let kills: usize = std::env::var("USERDROP_SOAK_KILLS")
        .ok()
        .map(|k| k.trim().parse().expect("USERDROP_SOAK_KILLS is a number"))
        .unwrap_or(1000);
    let started = Instant::now();
    let (seed, figures, result) = scenario(kills, true);
    println!("soak, seed {seed}, {:.1?}", started.elapsed());
    println!(
        "  store failed to reopen: {} time(s){}; panics: {}",
        figures.reopen_failures.len(),
        match figures.stopped_at {
            Some(start) => format!(" (gave up at start {start})"),
            None => String::new(),
        },
        figures.panics.len()
    );
    for failure in figures.reopen_failures.iter().take(3) {
        println!("    {failure}");
    }
    for panic in figures.panics.iter().take(3) {
        println!("    {panic}");
    }
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            println!(
                "  kills: {}, early exits: {}, rounds: {}; the final run --once failed",
                figures.kills, figures.early_exits, figures.rounds
            );
            panic!("{e}");
        }
    };
    println!(
        "  kills: {} ({} with a request still unanswered), early exits: {}",
        figures.kills, figures.kills_with_work, figures.early_exits
    );
    println!(
        "  restarts that resumed a file mid-way: {}, that replayed held-back responses: {}",
        figures.resumed, figures.replayed
    );
    println!(
        "  files: {} in {} rounds; users added {}, updated {}, unchanged {}, rejected {}",
        outcome.files,
        figures.rounds,
        outcome.model.added,
        outcome.model.updated,
        outcome.model.unchanged,
        outcome.model.rejected
    );
    println!(
        "  lost: {} missing responses, {} users lost or wrong",
        outcome.missing_responses.len(),
        outcome.lost.len()
    );
    println!(
        "  doubled: {} responses differing from a clean run, {} extra users, {} wrong source_file",
        outcome.differing_responses.len(),
        outcome.extra.len(),
        outcome.wrong_source.len()
    );
    println!(
        "  stray files: {}, unparsable responses: {}",
        outcome.stray_files.len(),
        outcome.bad_responses.len()
    );
    assert!(figures.reopen_failures.is_empty() && figures.panics.is_empty());
    assert_eq!(outcome.problems(), 0, "{}", outcome.report(seed));
}
