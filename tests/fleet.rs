//! SPEC §8 through the real binary on a real PostgreSQL (tests/common/pg.rs): two
//! daemons of two instances feeding one store at once (issue 14, acceptance 2), the
//! kill -9 loop of tests/crash.rs on PostgreSQL, a kill -9 of the server itself
//! mid-file, the instance lock, and `backup` of a sled store restored into
//! PostgreSQL and back.
//!
//! Without PostgreSQL the tests return early (unless `USERDROP_PG_REQUIRED` is set).
//! The seed of the generated files is printed; `USERDROP_FLEET_SEED=N` replays it.

mod common;

use common::pg::{Cluster, USER};
use common::requests::{Model, Rng, big_file, normalise, seed_from_env, small_file};
use common::{process, signal};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

fn seed() -> u64 {
    let seed = seed_from_env("USERDROP_FLEET_SEED").unwrap_or(0xF1EE_7000_2024_0014);
    println!("fleet seed = {seed} (replay with USERDROP_FLEET_SEED={seed})");
    seed
}

/// `--store` for database `db` of `cluster`: `postgres://USER@HOST/DB` with the
/// socket folder as the (percent-encoded) host.
fn store_url(cluster: &Cluster, db: &str) -> String {
    let host = cluster
        .socket_dir()
        .to_str()
        .expect("a UTF-8 socket folder")
        .replace('/', "%2F");
    format!("postgres://{USER}@{host}/{db}")
}

// ---------------------------------------------------------------------------------
// One host: an inbox `watch/`, a local folder `data/` (the sled store, or the spool
// of a PostgreSQL one), and the store it talks to.

struct Site {
    dir: PathBuf,
    /// `--store` and `--instance`; `None` for sled in `data/`.
    pg: Option<(String, String)>,
}

impl Site {
    fn new(root: &Path, name: &str, pg: Option<(&str, &str)>) -> Site {
        let dir = root.join(name);
        fs::create_dir_all(dir.join("watch")).unwrap();
        Site {
            dir,
            pg: pg.map(|(url, instance)| (url.to_owned(), instance.to_owned())),
        }
    }

    fn inbox(&self) -> PathBuf {
        self.dir.join("watch")
    }

    fn db(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("daemon.stderr")
    }

    fn command(&self, sub: &str) -> Command {
        let mut cmd = process();
        cmd.current_dir(&self.dir)
            .arg(sub)
            .arg("--db")
            .arg(self.db());
        if let Some((url, instance)) = &self.pg {
            cmd.arg("--store").arg(url).arg("--instance").arg(instance);
        }
        cmd
    }

    /// `run` on the inbox, stderr appended to `daemon.stderr`.
    fn daemon(&self, step_users: &str) -> Child {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        self.command("run")
            .arg("--watch")
            .arg(self.inbox())
            .args(["--step-users", step_users, "--settle", "100"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the daemon")
    }

    fn once(&self, step_users: &str) -> Output {
        self.command("run")
            .arg("--watch")
            .arg(self.inbox())
            .args(["--step-users", step_users, "--settle", "100", "--once"])
            .output()
            .expect("run --once")
    }

    /// A command that must succeed (exit 0); its stdout.
    fn read(&self, args: &[&str]) -> Vec<u8> {
        let out = self.command(args[0]).args(&args[1..]).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?} on {}: {}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn export(&self, format: &str) -> Vec<u8> {
        self.read(&["export", "--format", format])
    }

    fn add(&self, files: &[(String, Vec<u8>)]) {
        for (name, body) in files {
            // Written under an ignored name and renamed: never half a file.
            let hidden = self.inbox().join(format!(".{name}.upload"));
            fs::write(&hidden, body).unwrap();
            fs::rename(&hidden, self.inbox().join(name)).unwrap();
        }
    }

    fn response_path(&self, request: &str) -> PathBuf {
        let stem = request.strip_suffix(".json").unwrap();
        self.inbox().join(format!("{stem}.response.json"))
    }

    fn response(&self, request: &str) -> Value {
        read_json(&self.response_path(request))
    }

    fn request(&self, request: &str) -> Value {
        read_json(&self.inbox().join(request))
    }

    fn all_answered(&self, requests: &[String]) -> bool {
        requests.iter().all(|r| self.response_path(r).exists())
    }

    fn daemon_log(&self) -> String {
        fs::read_to_string(self.log()).unwrap_or_default()
    }
}

fn read_json(path: &Path) -> Value {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Waits until `check` holds; panics with `what` (and the logs) after `secs`.
fn wait_until(secs: u64, what: &str, logs: &[&Site], mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        if Instant::now() > deadline {
            let logs: Vec<String> = logs.iter().map(|s| s.daemon_log()).collect();
            panic!(
                "{what} not within {secs} s; daemon logs:\n{}",
                logs.join("\n---\n")
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// SIGTERM, then the exit status (within 15 s).
fn stop(child: &mut Child) -> ExitStatus {
    signal(child, "-TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the daemon did not stop within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The users of an ndjson export by email: the data, and the record's
/// `source_file`/`updated_at`.
fn ndjson_users(bytes: &[u8]) -> BTreeMap<String, (Map<String, Value>, String, String)> {
    let mut users = BTreeMap::new();
    for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Value::Object(mut record) = serde_json::from_slice(line).expect("an ndjson line")
        else {
            panic!("an ndjson line that is not an object");
        };
        let source = record.remove("source_file").expect("source_file");
        let updated = record.remove("updated_at").expect("updated_at");
        record.remove("created_at").expect("created_at");
        let email = record["email"].as_str().unwrap().to_owned();
        let source = source.as_str().unwrap().to_owned();
        let updated = updated.as_str().unwrap().to_owned();
        assert!(
            users
                .insert(email.clone(), (record, source, updated))
                .is_none(),
            "{email} exported twice"
        );
    }
    users
}

/// Everything in which `site`'s store differs from `model` (data and source_file).
fn differences(model: &Model, site: &Site) -> Vec<String> {
    let stored = ndjson_users(&site.export("ndjson"));
    let mut problems = Vec::new();
    for (email, data) in &model.users {
        match stored.get(email) {
            None => problems.push(format!("{email}: missing from the store")),
            Some((actual, source, _)) => {
                if actual != data {
                    problems.push(format!("{email}: model {data:?}, store {actual:?}"));
                }
                if model.source.get(email) != Some(source) {
                    problems.push(format!(
                        "{email}: source_file {source}, model {:?}",
                        model.source.get(email)
                    ));
                }
            }
        }
    }
    for email in stored.keys() {
        if !model.users.contains_key(email) {
            problems.push(format!("{email}: in the store, not in the model"));
        }
    }
    problems
}

/// The files of tests/crash.rs's round: small overlapping files, two big files, an
/// exact copy of the file before it, one file rejected whole.
fn round(rng: &mut Rng, prefix: &str, big_users: usize) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..10 {
        let name = format!("{prefix}f{i:03}.json");
        let tag = format!("{prefix}{i}");
        let body = match i {
            2 => serde_json::to_vec(&big_file(rng, 0..big_users, 40, &tag)).unwrap(),
            7 => {
                let users = big_users / 2..big_users / 2 + big_users;
                serde_json::to_vec_pretty(&big_file(rng, users, 40, &tag)).unwrap()
            }
            5 => files[4].1.clone(),
            8 => br#"{"users": "not an array"}"#.to_vec(),
            _ => serde_json::to_vec_pretty(&small_file(rng, &tag, 15..41, 40)).unwrap(),
        };
        files.push((name, body));
    }
    files
}

/// Each request's response on `site` equals a clean `run --once` of the same files
/// on a fresh sled store (the same file, the same response, on either engine).
fn same_responses_as_clean_sled(root: &Path, site: &Site, requests: &[String], step: &str) {
    let clean = Site::new(root, "clean-sled", None);
    for name in requests {
        fs::copy(site.inbox().join(name), clean.inbox().join(name)).unwrap();
    }
    let out = clean.once(step);
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "the clean run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in requests {
        assert_eq!(
            site.response(name),
            clean.response(name),
            "{name}: the response differs from a clean run on sled"
        );
    }
}

// ---------------------------------------------------------------------------------
// 1. Two daemons, one store (issue 14, acceptance 2)

/// One applied (code 0) change of a user: the file, the user as requested, the message.
#[derive(Clone, Debug)]
struct Change {
    file: String,
    user: Value,
    message: String,
}

/// `record` with `user` merged in (SPEC §2), by the model's own merge.
fn merged(email: &str, record: Option<&Map<String, Value>>, user: &Value) -> Map<String, Value> {
    let mut model = Model::default();
    if let Some(record) = record {
        model.users.insert(email.to_owned(), record.clone());
    }
    model.merge("", email.to_owned(), user, "").clone()
}

/// Whether some interleaving of `east` and `west` (each in its own order) explains
/// every message (added only when absent, "nothing changed" exactly when the merge
/// changes nothing) and ends in `end` with `source` the last file that changed it.
fn explained(
    email: &str,
    east: &[Change],
    west: &[Change],
    record: Option<&Map<String, Value>>,
    source: Option<&str>,
    end: (&Map<String, Value>, &str),
) -> bool {
    if east.is_empty() && west.is_empty() {
        return record == Some(end.0) && source == Some(end.1);
    }
    let step = |change: &Change, east: &[Change], west: &[Change]| {
        let next = merged(email, record, &change.user);
        let fits = if record.is_none() {
            change.message.ends_with("added successfully")
        } else if Some(&next) == record {
            change.message.ends_with("nothing changed")
        } else {
            change.message.ends_with("updated successfully")
        };
        let changed = record != Some(&next);
        let source = if changed {
            Some(change.file.as_str())
        } else {
            source
        };
        fits && explained(email, east, west, Some(&next), source, end)
    };
    (!east.is_empty() && step(&east[0], &east[1..], west))
        || (!west.is_empty() && step(&west[0], east, &west[1..]))
}

/// Files per daemon, and emails they share.
const FLEET_FILES: usize = 8;
const FLEET_POOL: u64 = 30;

#[test]
fn two_daemons_on_one_store_lose_no_update() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = store_url(&cluster, "shop");
    cluster.database("shop");
    let root = TempDir::new().unwrap();
    let sides = ["east", "west"];
    let sites: Vec<Site> = sides
        .iter()
        .map(|side| Site::new(root.path(), side, Some((&url, side))))
        .collect();

    // Every file sets `city` of every user to a value of its own: the field both
    // daemons change for the same users.
    let mut rng = Rng::new(seed());
    let mut names: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    let mut batches = Vec::new();
    for (s, side) in sides.iter().enumerate() {
        let mut files = Vec::new();
        for i in 0..FLEET_FILES {
            let name = format!("{side}-f{i:02}.json");
            let mut request = small_file(&mut rng, &format!("{side}{i}"), 20..41, FLEET_POOL);
            for user in request["users"].as_array_mut().unwrap() {
                user["city"] = json!(format!("{side} {i}"));
            }
            files.push((name.clone(), serde_json::to_vec_pretty(&request).unwrap()));
            names[s].push(name);
        }
        batches.push(files);
    }

    // Small steps: many transactions of each daemon interleave on the same rows. The
    // files arrive once both daemons watch: one slow to start (a busy machine) would
    // otherwise find the other done, and nothing would interleave.
    let mut daemons: Vec<Child> = sites.iter().map(|s| s.daemon("3")).collect();
    wait_until(50, "both daemons watching", &[&sites[0], &sites[1]], || {
        sites
            .iter()
            .all(|s| s.daemon_log().contains("watching the inbox"))
    });
    for (site, files) in sites.iter().zip(&batches) {
        site.add(files);
    }
    wait_until(50, "every response", &[&sites[0], &sites[1]], || {
        sites.iter().zip(&names).all(|(s, n)| s.all_answered(n))
    });
    for (daemon, site) in daemons.iter_mut().zip(&sites) {
        let status = stop(daemon);
        assert!(status.success(), "{status}: {}", site.daemon_log());
        assert!(
            !site.daemon_log().contains("panicked"),
            "{}",
            site.daemon_log()
        );
    }

    // Every response: its status agrees with its log, and the changes it reports.
    let mut changes: BTreeMap<String, [Vec<Change>; 2]> = BTreeMap::new();
    let (mut code0, mut rejected) = (0u64, 0u64);
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for (s, site) in sites.iter().enumerate() {
        for name in &names[s] {
            let request = site.request(name);
            let response = site.response(name);
            let status = response["status"].as_str().unwrap().to_owned();
            *statuses.entry(status.clone()).or_default() += 1;
            let users = request["users"].as_array().unwrap();
            let log = response["response"]["log"].as_array().unwrap();
            assert_eq!(log.len(), users.len(), "{name}: one log entry per user");
            let mut all_ok = true;
            let mut seen = BTreeSet::new();
            for (user, entry) in users.iter().zip(log) {
                let info = entry["info"].as_array().unwrap();
                let email = normalise("email", user["email"].as_str().unwrap());
                if !(info.len() == 1 && info[0]["code"] == 0) {
                    all_ok = false;
                    rejected += 1;
                    assert!(
                        info.iter().all(|i| i["code"] != 0),
                        "{name}: success beside a problem: {entry}"
                    );
                    continue;
                }
                code0 += 1;
                let message = info[0]["message"].as_str().unwrap().to_owned();
                assert!(
                    message.contains(&email),
                    "{name}: {message:?} does not name {email}"
                );
                assert!(seen.insert(email.clone()), "{name}: {email} applied twice");
                changes.entry(email).or_default()[s].push(Change {
                    file: name.clone(),
                    user: user.clone(),
                    message,
                });
            }
            let expected = if all_ok { "OK" } else { "WARNING" };
            assert_eq!(status, expected, "{name}: {response}");
        }
    }

    // The final state: for each user, an interleaving of east's and west's changes,
    // each daemon's in its files' order, explains every message and the stored user;
    // the last committed change (source_file) wins the field both change.
    let stored = ndjson_users(&sites[0].export("ndjson"));
    let mut problems = Vec::new();
    let mut shared = 0;
    for (email, [east, west]) in &changes {
        if !east.is_empty() && !west.is_empty() {
            shared += 1;
        }
        let Some((data, source, _updated)) = stored.get(email) else {
            problems.push(format!("{email}: applied, and missing from the store"));
            continue;
        };
        let (side, index) = source
            .strip_suffix(".json")
            .and_then(|s| s.split_once("-f"))
            .unwrap_or_else(|| panic!("{email}: source_file {source}"));
        let index: usize = index.parse().unwrap();
        if data.get("city") != Some(&json!(format!("{side} {index}"))) {
            problems.push(format!(
                "{email}: city {:?}, but {source} committed last: an update was lost",
                data.get("city")
            ));
        }
        if !explained(email, east, west, None, None, (data, source)) {
            problems.push(format!(
                "{email}: no order of east's {:?} and west's {:?} gives the stored {data:?} from {source}",
                east.iter()
                    .map(|c| (&c.file, &c.message))
                    .collect::<Vec<_>>(),
                west.iter()
                    .map(|c| (&c.file, &c.message))
                    .collect::<Vec<_>>()
            ));
        }
    }
    for email in stored.keys() {
        if !changes.contains_key(email) {
            problems.push(format!("{email}: stored, but no response applied it"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        shared >= 10,
        "only {shared} emails were changed by both daemons"
    );

    // The users whose last change came from each daemon: both won some.
    let winners: BTreeSet<&str> = stored
        .values()
        .map(|(_, source, _)| source.split('-').next().unwrap())
        .collect();
    assert_eq!(winners.len(), 2, "one daemon's changes always came last");

    // stats counts every file of both instances.
    let stats = String::from_utf8(sites[1].read(&["stats"])).unwrap();
    let figure = |label: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} in\n{stats}"))
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{label:?} in\n{stats}"))
    };
    for status in ["OK", "WARNING", "ERROR"] {
        let expected = statuses.get(status).copied().unwrap_or(0);
        assert_eq!(
            figure(&format!("files {status} ")),
            expected,
            "files {status}:\n{stats}"
        );
    }
    assert_eq!(figure("users "), stored.len() as u64, "{stats}");
    assert_eq!(figure("users applied "), code0, "{stats}");
    assert_eq!(figure("users rejected "), rejected, "{stats}");
}

// ---------------------------------------------------------------------------------
// 2. kill -9 of the daemon, over and over, on PostgreSQL

#[test]
fn sigkill_of_the_daemon_on_postgres_loses_and_doubles_nothing() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = store_url(&cluster, "shop");
    cluster.database("shop");
    let root = TempDir::new().unwrap();
    let site = Site::new(root.path(), "site", Some((&url, "east")));
    let mut rng = Rng::new(seed());
    let files = round(&mut rng, "r0-", 2000);
    let requests: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    site.add(&files);

    let (mut kills, mut with_work, mut refused) = (0, 0, Vec::new());
    for start in 0..8 {
        let mut child = site.daemon("250");
        std::thread::sleep(Duration::from_millis(150 + rng.below(600)));
        match child.try_wait().unwrap() {
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                if !site.all_answered(&requests) {
                    with_work += 1;
                }
            }
            Some(status) => refused.push(format!("start {start}: {status}")),
        }
    }
    let out = site.once("250");
    let log = site.daemon_log();
    assert!(
        refused.is_empty(),
        "a restart after kill -9 exited on its own: {refused:?}\n{log}"
    );
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "run --once after the kills: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!log.contains("panicked"), "{log}");
    println!(
        "kills {kills}, with work pending {with_work}, resumed mid-file {}",
        log.matches("resuming an interrupted file").count()
    );
    assert!(with_work > 0, "no kill landed while work was pending");

    // Exactly one response each, no stray file, the responses of a clean run.
    let mut expected: BTreeSet<String> = requests.iter().cloned().collect();
    expected.extend(requests.iter().map(|r| {
        site.response_path(r)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned()
    }));
    let found: BTreeSet<String> = fs::read_dir(site.inbox())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        found, expected,
        "the inbox holds requests and responses only"
    );
    same_responses_as_clean_sled(root.path(), &site, &requests, "250");

    let mut model = Model::default();
    for name in &requests {
        model.apply_response(name, &site.request(name), &site.response(name));
    }
    let problems = differences(&model, &site);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(model.added > 0 && model.updated > 0 && model.unchanged > 0 && model.rejected > 0);
    assert_eq!(model.error_files, 1);
}

// ---------------------------------------------------------------------------------
// 3. kill -9 of the PostgreSQL server mid-file

#[test]
fn a_killed_server_mid_file_is_waited_out_and_the_file_resumes() {
    let Some(mut cluster) = Cluster::start() else {
        return;
    };
    let url = store_url(&cluster, "shop");
    cluster.database("shop");
    let root = TempDir::new().unwrap();
    let site = Site::new(root.path(), "site", Some((&url, "east")));
    let mut rng = Rng::new(seed());
    let files = vec![
        (
            "a-small.json".to_owned(),
            serde_json::to_vec(&small_file(&mut rng, "s", 20..30, 40)).unwrap(),
        ),
        (
            "b-big.json".to_owned(),
            serde_json::to_vec(&big_file(&mut rng, 0..8000, 40, "big")).unwrap(),
        ),
    ];
    let requests: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    site.add(&files);
    let mut daemon = site.daemon("100");

    // Mid-file: some steps of the big file committed, its response not written.
    let mut observer = cluster.client("shop");
    wait_until(40, "the big file under way", &[&site], || {
        let users: i64 = observer
            .query_one("SELECT count(*) FROM userdrop.users", &[])
            .map(|r| r.get(0))
            .unwrap_or(0);
        users > 300
    });
    drop(observer);
    cluster.kill9();
    assert!(
        !site.response_path("b-big.json").exists(),
        "the big file was done before the server was killed; make it bigger"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon exited while the store was gone:\n{}",
        site.daemon_log()
    );
    cluster.restart();
    wait_until(55, "both responses", &[&site], || {
        site.all_answered(&requests)
    });
    let status = stop(&mut daemon);
    let log = site.daemon_log();
    assert!(status.success(), "{status}:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("was lost") || log.contains("cannot connect"),
        "the log does not say the store was lost:\n{log}"
    );
    assert!(
        log.contains("trying again in"),
        "the log does not say it retried:\n{log}"
    );

    same_responses_as_clean_sled(root.path(), &site, &requests, "100");
    let mut model = Model::default();
    for name in &requests {
        model.apply_response(name, &site.request(name), &site.response(name));
    }
    let problems = differences(&model, &site);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let stats = String::from_utf8(site.read(&["stats"])).unwrap();
    assert!(
        stats
            .lines()
            .any(|l| l.split_whitespace().eq(["files", "WARNING", "2"])),
        "{stats}"
    );
}

// ---------------------------------------------------------------------------------
// 4. One process per instance

fn assert_refused(out: &Output, holder: &Child, what: &str, took: Duration) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{what}: {err}");
    assert!(took < Duration::from_secs(10), "{what} took {took:?}");
    assert!(
        err.contains("\"east\" is already running"),
        "{what} does not name the instance: {err}"
    );
    let holder_pid = format!("pid {}", holder.id());
    assert!(
        err.contains(&holder_pid),
        "{what} does not name the holder: {err}"
    );
    assert!(
        err.matches(", pid ").count() >= 2,
        "{what} does not name both processes: {err}"
    );
}

#[test]
fn a_second_process_of_a_running_instance_fails_at_once_naming_both() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = store_url(&cluster, "shop");
    cluster.database("shop");
    let root = TempDir::new().unwrap();
    let first = Site::new(root.path(), "first", Some((&url, "east")));
    let second = Site::new(root.path(), "second", Some((&url, "east")));
    let other = Site::new(root.path(), "other", Some((&url, "west")));
    let file = br#"{"users": [{"title": "A", "email": "a@x.co"}]}"#.to_vec();
    first.add(&[("one.json".into(), file.clone())]);
    let mut daemon = first.daemon("100");
    wait_until(30, "the first daemon's response", &[&first], || {
        first.response_path("one.json").exists()
    });

    second.add(&[("two.json".into(), file.clone())]);
    let started = Instant::now();
    let mut run = second.command("run");
    let out = run.arg("--watch").arg(second.inbox()).output().unwrap();
    assert_refused(&out, &daemon, "a second run", started.elapsed());
    let started = Instant::now();
    let out = second
        .command("import")
        .arg(second.inbox().join("two.json"))
        .output()
        .unwrap();
    assert_refused(&out, &daemon, "an import", started.elapsed());
    assert!(
        !second.response_path("two.json").exists(),
        "a refused process answered a file"
    );

    // Another instance works beside it, and reads work from anywhere.
    other.add(&[("three.json".into(), file.clone())]);
    let request = other.inbox().join("three.json");
    other.read(&["import", request.to_str().unwrap()]);
    assert_eq!(other.response("three.json")["status"], "OK");
    let stats = String::from_utf8(second.read(&["stats"])).unwrap();
    assert!(
        stats
            .lines()
            .any(|l| l.split_whitespace().eq(["files", "OK", "2"])),
        "{stats}"
    );

    // Once the first stops, the instance is free.
    let status = stop(&mut daemon);
    assert!(status.success(), "{status}: {}", first.daemon_log());
    let request = second.inbox().join("two.json");
    second.read(&["import", request.to_str().unwrap()]);
    assert_eq!(second.response("two.json")["status"], "OK");
}

// ---------------------------------------------------------------------------------
// 5. backup of a sled store → PostgreSQL → sled

#[test]
fn a_sled_backup_restores_into_postgres_and_back() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let root = TempDir::new().unwrap();
    let sled = Site::new(root.path(), "sled", None);
    let mut rng = Rng::new(seed());
    let files = round(&mut rng, "b-", 300);
    sled.add(&files);
    let out = sled.once("100");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let first = root.path().join("sled.backup");
    sled.read(&["backup", first.to_str().unwrap()]);
    let url = store_url(&cluster, "copy");
    cluster.database("copy");
    let pg = Site::new(root.path(), "pg", Some((&url, "east")));
    pg.read(&["restore", first.to_str().unwrap()]);
    let second = root.path().join("pg.backup");
    pg.read(&["backup", second.to_str().unwrap()]);
    let back = Site::new(root.path(), "back", None);
    back.read(&["restore", second.to_str().unwrap()]);

    let reads: [&[&str]; 4] = [
        &["export", "--format", "json"],
        &["export", "--format", "ndjson"],
        &["export", "--format", "csv"],
        &["stats"],
    ];
    for args in reads {
        let original = sled.read(args);
        assert!(original.len() > 100, "{args:?} printed almost nothing");
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert_eq!(
            text(&pg.read(args)),
            text(&original),
            "{args:?}: PostgreSQL differs from sled"
        );
        assert_eq!(
            text(&back.read(args)),
            text(&original),
            "{args:?}: sled restored from PostgreSQL differs"
        );
    }
    // A restore goes into an empty store only.
    let out = pg
        .command("restore")
        .arg(&first)
        .output()
        .expect("restore runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------
// 6. A restart after kill -9 while the killed daemon's step waited for a row lock

#[test]
fn a_daemon_killed_while_its_step_waits_for_a_row_lock_restarts() {
    let Some(cluster) = Cluster::start() else {
        return;
    };
    let url = store_url(&cluster, "shop");
    cluster.database("shop");
    let root = TempDir::new().unwrap();
    let seed = Site::new(root.path(), "seed", Some((&url, "seed")));
    seed.add(&[(
        "a.json".into(),
        br#"{"users": [{"title": "A", "email": "a@x.co"}]}"#.to_vec(),
    )]);
    assert_eq!(seed.once("100").status.code(), Some(0));

    // Another daemon's step holds a@x.co's row while east's step wants it.
    let mut holder = cluster.client("shop");
    let mut tx = holder.transaction().unwrap();
    tx.query(
        "SELECT email FROM userdrop.users WHERE email = 'a@x.co' FOR UPDATE",
        &[],
    )
    .unwrap();
    let site = Site::new(root.path(), "east", Some((&url, "east")));
    site.add(&[(
        "b.json".into(),
        br#"{"users": [{"title": "A", "email": "a@x.co", "city": "Kyiv"}]}"#.to_vec(),
    )]);
    let mut daemon = site.daemon("100");
    let mut admin = cluster.admin();
    wait_until(30, "east's step waiting for the row", &[&site], || {
        admin
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'userdrop east' AND wait_event_type = 'Lock'",
                &[],
            )
            .unwrap()
            .is_some()
    });
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    // The process is gone, so the instance is not running: a restart must work
    // (it may wait for the dead session, not refuse).
    let mut restarted = site.daemon("100");
    std::thread::sleep(Duration::from_millis(1500));
    let early = restarted.try_wait().unwrap();
    tx.rollback().unwrap();
    assert!(
        early.is_none(),
        "the restart after kill -9 exited {early:?}:\n{}",
        site.daemon_log()
    );
    wait_until(30, "b.json's response", &[&site], || {
        site.response_path("b.json").exists()
    });
    assert!(stop(&mut restarted).success());
    assert_eq!(site.response("b.json")["status"], "OK");
}
