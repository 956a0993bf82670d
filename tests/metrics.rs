//! The metrics file on the real binary: `run --once` and `import` with
//! `--metrics-file`, the Prometheus text parsed here, and `stats` agreeing with it.

mod common;

use common::{Env, userdrop};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// A parsed Prometheus text exposition: samples by `name{labels}`, and the families
/// declared with `# TYPE`.
#[derive(Debug)]
struct Exposition {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        let mut helped = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP name text");
                assert!(!help.trim().is_empty(), "empty HELP for {name}");
                helped.insert(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(helped.contains(name), "TYPE before HELP for {name}");
                assert!(types.insert(name.to_owned(), kind.to_owned()).is_none());
            } else if line.starts_with('#') || line.is_empty() {
                panic!("unexpected line {line:?}");
            } else {
                let (key, value) = line.rsplit_once(' ').expect("a sample: name value");
                let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
                let name = key.split('{').next().unwrap_or(key);
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        name.strip_suffix(s)
                            .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
                    })
                    .unwrap_or(name);
                assert!(types.contains_key(family), "no TYPE for {line}");
                if types[family] == "counter" {
                    assert!(name.ends_with("_total"), "counter {name} without _total");
                }
                assert!(
                    samples.insert(key.to_owned(), value).is_none(),
                    "{key} twice"
                );
            }
        }
        Exposition { samples, types }
    }

    fn get(&self, key: &str) -> f64 {
        *self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key} in {:?}", self.samples.keys()))
    }

    /// The histogram's buckets in order of their bound, checked to be cumulative and to
    /// end with `+Inf` equal to `_count`.
    fn histogram(&self, name: &str) -> Vec<(f64, f64)> {
        assert_eq!(self.types.get(name).map(String::as_str), Some("histogram"));
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter_map(|(k, v)| {
                let le = k.strip_prefix(&prefix)?.strip_suffix("\"}")?;
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, *v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(buckets.len() > 3, "{buckets:?}");
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
        let last = buckets.last().copied().unwrap_or_default();
        assert_eq!(last, (f64::INFINITY, self.get(&format!("{name}_count"))));
        buckets
    }
}

impl Env {
    fn prom(&self) -> PathBuf {
        self.dir.path().join("textfile").join("userdrop.prom")
    }

    fn drop_file(&self, name: &str, text: &str) {
        fs::write(self.inbox().join(name), text).unwrap();
    }

    fn run_once(&self) -> i32 {
        let out = userdrop()
            .envs(self.store_vars())
            // A malformed file is answered once it has settled, in `--once` too.
            .args(["run", "--once", "--settle", "300", "--watch"])
            .arg(self.inbox())
            .arg("--db")
            .arg(self.db())
            .arg("--metrics-file")
            .arg(self.prom())
            .output()
            .unwrap();
        out.status.code().unwrap_or(-1)
    }

    fn metrics(&self) -> Exposition {
        Exposition::parse(&fs::read_to_string(self.prom()).unwrap())
    }

    fn stats(&self, json: bool) -> std::process::Output {
        let mut cmd = userdrop();
        cmd.envs(self.store_vars());
        cmd.arg("stats").arg("--db").arg(self.db());
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        out
    }

    fn stats_json(&self) -> Value {
        serde_json::from_slice(&self.stats(true).stdout).unwrap()
    }
}

fn users(list: Value) -> String {
    json!({ "users": list }).to_string()
}

fn three_files(env: &Env) {
    env.drop_file(
        "a-ok.json",
        &users(json!([
            {"title": "A", "email": "a@x.com"},
            {"title": "B", "email": "b@x.com"}
        ])),
    );
    env.drop_file(
        "b-warn.json",
        &users(json!([
            {"title": "C", "email": "c@x.com"},
            {"title": "D", "email": "not-an-email"},
            {"title": "A again", "email": "a@x.com"}
        ])),
    );
    env.drop_file("c-error.json", "{\"users\": [");
}

fn textfile_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn once_writes_the_figures_and_stats_agrees() {
    let env = Env::new();
    fs::create_dir(env.prom().parent().unwrap()).unwrap();
    three_files(&env);
    assert_eq!(env.run_once(), 3);

    let m = env.metrics();
    assert_eq!(m.get("userdrop_files_total{status=\"OK\"}"), 1.0);
    assert_eq!(m.get("userdrop_files_total{status=\"WARNING\"}"), 1.0);
    assert_eq!(m.get("userdrop_files_total{status=\"ERROR\"}"), 1.0);
    assert_eq!(m.get("userdrop_users_applied_total"), 4.0);
    assert_eq!(m.get("userdrop_users_rejected_total"), 1.0);
    assert_eq!(m.get("userdrop_users"), 3.0);
    assert_eq!(m.types["userdrop_users"], "gauge");
    let now = chrono::Utc::now().timestamp() as f64;
    let last_success = m.get("userdrop_last_success_timestamp_seconds");
    let last_file = m.get("userdrop_last_file_timestamp_seconds");
    assert!(
        now - 60.0 < last_success && last_success <= now + 1.0,
        "{last_success}"
    );
    // The ERROR file came last, in name order, and is no success.
    assert!(last_file >= last_success);
    let buckets = m.histogram("userdrop_file_duration_seconds");
    assert_eq!(buckets.last().map(|b| b.1), Some(3.0));
    assert!(m.get("userdrop_file_duration_seconds_sum") > 0.0);
    // Atomic replacement leaves nothing but the file itself.
    assert_eq!(
        textfile_names(env.prom().parent().unwrap()),
        ["userdrop.prom"]
    );

    let stats = env.stats_json();
    assert_eq!(stats["users"], 3);
    assert_eq!(stats["files"], json!({"OK": 1, "WARNING": 1, "ERROR": 1}));
    assert_eq!(stats["users_applied"], 4);
    assert_eq!(stats["users_rejected"], 1);
    assert_eq!(stats["last_success_unix"].as_f64(), Some(last_success));
    assert_eq!(stats["last_file_unix"].as_f64(), Some(last_file));

    let table = String::from_utf8(env.stats(false).stdout).unwrap();
    for line in [
        "users            3",
        "files OK         1",
        "files WARNING    1",
        "files ERROR      1",
        "users applied    4",
        "users rejected   1",
    ] {
        assert!(table.lines().any(|l| l == line), "{line:?} not in\n{table}");
    }
}

#[test]
fn counters_survive_a_restart_and_the_histogram_is_per_process() {
    let env = Env::new();
    fs::create_dir(env.prom().parent().unwrap()).unwrap();
    three_files(&env);
    assert_eq!(env.run_once(), 3);
    env.drop_file(
        "d-ok.json",
        &users(json!([{"title": "E", "email": "e@x.com"}])),
    );
    assert_eq!(env.run_once(), 0);
    let m = env.metrics();
    assert_eq!(m.get("userdrop_files_total{status=\"OK\"}"), 2.0);
    assert_eq!(m.get("userdrop_users_applied_total"), 5.0);
    assert_eq!(m.get("userdrop_users"), 4.0);
    assert_eq!(m.get("userdrop_file_duration_seconds_count"), 1.0);

    // A run with nothing to do still writes the file, from the store.
    fs::remove_file(env.prom()).unwrap();
    assert_eq!(env.run_once(), 0);
    let m = env.metrics();
    assert_eq!(m.get("userdrop_files_total{status=\"OK\"}"), 2.0);
    assert_eq!(m.get("userdrop_file_duration_seconds_count"), 0.0);
}

#[test]
fn import_writes_metrics_and_a_reprocessed_file_counts_every_time() {
    let env = Env::new();
    fs::create_dir(env.prom().parent().unwrap()).unwrap();
    three_files(&env);
    let file = env.inbox().join("a-ok.json");
    for _ in 0..2 {
        let out = userdrop()
            .arg("import")
            .arg("--db")
            .arg(env.db())
            .arg("--metrics-file")
            .arg(env.prom())
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
    }
    // SPEC §7: counters only rise; the same request applied twice counts twice.
    let m = env.metrics();
    assert_eq!(m.get("userdrop_files_total{status=\"OK\"}"), 2.0);
    assert_eq!(m.get("userdrop_users_applied_total"), 4.0);
    assert_eq!(m.get("userdrop_users"), 2.0);
    assert_eq!(env.stats_json()["files"]["OK"], 2);
}

#[test]
fn a_nightly_feed_under_one_name_counts_every_night() {
    // A nightly `users.json`: dropped, answered, the pair removed, dropped again the
    // next night. Once, history kept per path held ERROR at 1 after three failures,
    // dropped it to 0 when the fourth night succeeded, and users_applied stayed flat:
    // the README's alert rule never fired.
    let env = Env::new();
    fs::create_dir(env.prom().parent().unwrap()).unwrap();
    let nights = [
        "{\"users\": [",
        "{\"users\": [",
        "{\"users\": [",
        &users(json!([{"title": "A", "email": "a@x.com"}])),
        &users(json!([{"title": "A", "email": "a@x.com"}, {"title": "B", "email": "bad"}])),
    ]
    .map(str::to_owned);
    let counters = [
        "userdrop_files_total{status=\"OK\"}",
        "userdrop_files_total{status=\"WARNING\"}",
        "userdrop_files_total{status=\"ERROR\"}",
        "userdrop_users_applied_total",
        "userdrop_users_rejected_total",
    ];
    let mut before = vec![0.0; counters.len()];
    for (night, text) in nights.iter().enumerate() {
        env.drop_file("users.json", text);
        env.run_once();
        let m = env.metrics();
        let now: Vec<f64> = counters.iter().map(|c| m.get(c)).collect();
        for (i, name) in counters.iter().enumerate() {
            assert!(
                now[i] >= before[i],
                "night {night}: {name} went down: {before:?} -> {now:?}"
            );
        }
        before = now;
        fs::remove_file(env.inbox().join("users.json")).unwrap();
        fs::remove_file(env.inbox().join("users.response.json")).unwrap();
    }
    assert_eq!(before, [1.0, 1.0, 3.0, 2.0, 1.0]);
    let stats = env.stats_json();
    assert_eq!(stats["files"], json!({"OK": 1, "WARNING": 1, "ERROR": 3}));
}

#[test]
fn a_metrics_file_that_cannot_be_written_stops_the_start() {
    let env = Env::new();
    // The textfile folder does not exist: said at start-up, not after the first file.
    let out = userdrop()
        .args(["run", "--once", "--watch"])
        .arg(env.inbox())
        .arg("--db")
        .arg(env.db())
        .arg("--metrics-file")
        .arg(env.prom())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot write the metrics file"), "{stderr}");
}
