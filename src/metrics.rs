//! The figures of `userdrop stats` and of the Prometheus metrics file
//! (`--metrics-file`, for node_exporter's textfile collector).
//!
//! The counters come from the store's history, not from the process: they survive
//! restarts, a `--once` or `import` run reports the same totals as the daemon, and
//! `stats` shows exactly what the metrics file says. The history keeps the last run of
//! each request file (by path), so a file processed again after its response was
//! deleted counts once, under its latest outcome; in that rare case a counter can go
//! down, which Prometheus reads as a counter reset.
//!
//! The store is read in full once, when a process starts; after that each processed
//! file updates the figures in memory, so writing the metrics costs nothing that grows
//! with the store. Only the processing-time histogram is the process's own: the store
//! keeps no durations.

use crate::model::Status;
use crate::store::{FileRecord, Store, StoreError};
use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

const STATUSES: [Status; 3] = [Status::Ok, Status::Warning, Status::Error];

fn slot(status: Status) -> usize {
    match status {
        Status::Ok => 0,
        Status::Warning => 1,
        Status::Error => 2,
    }
}

/// The figures `stats` prints and the metrics file carries.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Figures {
    /// Users in the store.
    pub users: u64,
    /// Request files by the status of their last run: OK, WARNING, ERROR.
    pub files: [u64; 3],
    /// Users added, updated or found unchanged, over the last run of every file.
    pub users_applied: u64,
    /// Users rejected, over the last run of every file.
    pub users_rejected: u64,
    /// When the last file that applied users (`OK` or `WARNING`) was finished.
    pub last_success: Option<DateTime<Utc>>,
    /// When the last file of any status was finished.
    pub last_file: Option<DateTime<Utc>>,
}

/// What the last run of one file contributes to the figures.
#[derive(Clone, Debug, PartialEq)]
struct Outcome {
    status: Status,
    applied: u64,
    rejected: u64,
    added: u64,
    finished_at: DateTime<Utc>,
}

impl Outcome {
    fn of(record: &FileRecord) -> Outcome {
        Outcome {
            status: record.status,
            applied: record.counts.applied(),
            rejected: record.counts.rejected,
            added: record.counts.added,
            finished_at: record.finished_at,
        }
    }
}

/// The store's history of files, kept current in memory.
#[derive(Clone, Debug, Default)]
pub struct History {
    figures: Figures,
    files: HashMap<PathBuf, Outcome>,
}

impl History {
    /// Reads the whole history and counts the users: once per process.
    pub fn read(store: &Store) -> Result<History, StoreError> {
        let mut history = History {
            figures: Figures {
                users: store.user_count()?,
                ..Figures::default()
            },
            files: HashMap::new(),
        };
        for record in store.files() {
            history.add(&record?);
        }
        Ok(history)
    }

    pub fn figures(&self) -> &Figures {
        &self.figures
    }

    fn add(&mut self, record: &FileRecord) {
        let new = Outcome::of(record);
        let f = &mut self.figures;
        f.files[slot(new.status)] += 1;
        f.users_applied += new.applied;
        f.users_rejected += new.rejected;
        f.last_file = f.last_file.max(Some(new.finished_at));
        if new.status != Status::Error {
            f.last_success = f.last_success.max(Some(new.finished_at));
        }
        self.files.insert(record.path.clone(), new);
    }

    /// A file was just processed: its record replaces the file's earlier run.
    pub fn record(&mut self, record: &FileRecord) {
        let new = Outcome::of(record);
        let old = self.files.get(&record.path).cloned();
        if old.as_ref() == Some(&new) {
            // The outcome of a run cut short and delivered now: the history and the
            // user count read at start-up already hold it.
            return;
        }
        self.figures.users += new.added;
        let Some(old) = old else {
            self.add(record);
            return;
        };
        let f = &mut self.figures;
        f.files[slot(old.status)] = f.files[slot(old.status)].saturating_sub(1);
        f.users_applied = f.users_applied.saturating_sub(old.applied);
        f.users_rejected = f.users_rejected.saturating_sub(old.rejected);
        self.add(record);
        if old.status != Status::Error && self.figures.last_success == Some(old.finished_at) {
            // The run that was the last success is gone from the history.
            self.figures.last_success = self
                .files
                .values()
                .filter(|o| o.status != Status::Error)
                .map(|o| o.finished_at)
                .max();
        }
    }
}

fn unix(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// `stats --json`. `users` and `files` are the keys scripts had before the others.
pub fn stats_json(f: &Figures) -> serde_json::Value {
    serde_json::json!({
        "users": f.users,
        "files": {"OK": f.files[0], "WARNING": f.files[1], "ERROR": f.files[2]},
        "users_applied": f.users_applied,
        "users_rejected": f.users_rejected,
        "last_success_unix": f.last_success.map(unix),
        "last_file_unix": f.last_file.map(unix),
    })
}

/// `stats`: the same figures as a table.
pub fn stats_table(f: &Figures) -> String {
    let when = |t: Option<DateTime<Utc>>| match t {
        Some(t) => format!(
            "{} ({})",
            t.to_rfc3339_opts(SecondsFormat::Millis, true),
            unix(t)
        ),
        None => "never".to_owned(),
    };
    let mut text = format!("users            {}\n", f.users);
    for status in STATUSES {
        let _ = writeln!(
            text,
            "files {:<10} {}",
            status.as_str(),
            f.files[slot(status)]
        );
    }
    let _ = writeln!(text, "users applied    {}", f.users_applied);
    let _ = writeln!(text, "users rejected   {}", f.users_rejected);
    let _ = writeln!(text, "last success     {}", when(f.last_success));
    let _ = writeln!(text, "last file        {}", when(f.last_file));
    text
}

/// Upper bounds of the processing-time buckets, in seconds: from a small file on a
/// fast disk to a million-user file.
const BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

#[derive(Clone, Debug, Default)]
struct Histogram {
    /// Cumulative: `counts[i]` files took at most `BUCKETS[i]`.
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        for (bound, count) in BUCKETS.iter().zip(&mut self.counts) {
            if secs <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// The metrics file of one process.
pub struct Metrics {
    path: PathBuf,
    history: History,
    durations: Histogram,
    started: SystemTime,
}

impl Metrics {
    /// Reads the store's history and writes the file a first time, so that it exists
    /// from the start.
    pub fn open(path: &Path, store: &Store) -> Result<Metrics, String> {
        let history = History::read(store).map_err(|e| e.to_string())?;
        let metrics = Metrics {
            path: path.to_path_buf(),
            history,
            durations: Histogram::default(),
            started: SystemTime::now(),
        };
        metrics
            .write()
            .map_err(|e| format!("cannot write the metrics file {}: {e}", path.display()))?;
        Ok(metrics)
    }

    /// A file was processed: count it and rewrite the metrics file. A failure to write
    /// is logged, never fatal: monitoring must not stop the import.
    pub fn file_done(&mut self, record: &FileRecord, took: Duration) {
        self.history.record(record);
        self.durations.observe(took);
        if let Err(e) = self.write() {
            tracing::warn!(file = %self.path.display(), "cannot write the metrics file: {e}");
        }
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let f = self.history.figures();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let files: Vec<(String, f64)> = STATUSES
            .iter()
            .map(|s| {
                (
                    format!("{{status=\"{}\"}}", s.as_str()),
                    f.files[slot(*s)] as f64,
                )
            })
            .collect();
        family(
            "userdrop_files_total",
            "counter",
            "Request files processed, by the status of their last run (from the store's history).",
            &files,
        );
        family(
            "userdrop_users_applied_total",
            "counter",
            "Users added, updated or found unchanged, over the last run of every file.",
            &[(String::new(), f.users_applied as f64)],
        );
        family(
            "userdrop_users_rejected_total",
            "counter",
            "Users rejected, over the last run of every file.",
            &[(String::new(), f.users_rejected as f64)],
        );
        family(
            "userdrop_users",
            "gauge",
            "Users in the store.",
            &[(String::new(), f.users as f64)],
        );
        family(
            "userdrop_last_success_timestamp_seconds",
            "gauge",
            "Unix time the last file that applied users (OK or WARNING) was finished; 0 if none.",
            &[(String::new(), f.last_success.map_or(0.0, unix))],
        );
        family(
            "userdrop_last_file_timestamp_seconds",
            "gauge",
            "Unix time the last file of any status was finished; 0 if none.",
            &[(String::new(), f.last_file.map_or(0.0, unix))],
        );
        let started = self
            .started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_millis() as f64 / 1000.0);
        family(
            "userdrop_process_start_time_seconds",
            "gauge",
            "Unix time the process writing this file started.",
            &[(String::new(), started)],
        );
        let h = &self.durations;
        let mut samples: Vec<(String, f64)> = BUCKETS
            .iter()
            .zip(h.counts)
            .map(|(bound, n)| (format!("_bucket{{le=\"{bound}\"}}"), n as f64))
            .collect();
        samples.push(("_bucket{le=\"+Inf\"}".into(), h.count as f64));
        samples.push(("_sum".into(), h.sum));
        samples.push(("_count".into(), h.count as f64));
        family(
            "userdrop_file_duration_seconds",
            "histogram",
            "Time to process one request file, for the files this process handled since it started.",
            &samples,
        );
        out
    }

    /// Replaces the file atomically: a hidden temporary name in the same folder (which
    /// the textfile collector ignores, as it reads only `*.prom`), then a rename, so
    /// that a scrape never sees half a file. No fsync: after a crash the next start
    /// writes the file again.
    fn write(&self) -> io::Result<()> {
        if self.path.file_name().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path names no file",
            ));
        }
        // Through the folder, like a response: a fresh temporary name created by us
        // alone, then put in place.
        let (folder, name) = crate::inbox::open_parent(&self.path)?;
        let (mut file, temp) = folder.create_temp()?;
        let result = (|| {
            file.write_all(self.render().as_bytes())?;
            // node_exporter runs as another user: the figures are not secret.
            file.set_permissions(fs::Permissions::from_mode(0o644))?;
            folder.place(&temp, &name)
        })();
        if result.is_err() {
            let _ = folder.remove(&temp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Counts;

    fn record(path: &str, status: Status, added: u64, rejected: u64, at: i64) -> FileRecord {
        FileRecord {
            path: PathBuf::from(path),
            hash: String::new(),
            status,
            message: None,
            users: added + rejected,
            counts: Counts {
                added,
                rejected,
                ..Counts::default()
            },
            finished_at: DateTime::from_timestamp(at, 0).unwrap_or_default(),
            log_len: 0,
            identity: None,
        }
    }

    #[test]
    fn a_file_run_again_replaces_its_earlier_run() {
        let mut h = History::default();
        h.record(&record("/a.json", Status::Ok, 2, 0, 100));
        h.record(&record("/b.json", Status::Warning, 1, 1, 200));
        let again = record("/b.json", Status::Error, 0, 0, 300);
        h.record(&again);
        h.record(&again);
        let f = h.figures();
        assert_eq!(f.files, [1, 0, 1]);
        assert_eq!((f.users, f.users_applied, f.users_rejected), (3, 2, 0));
        assert_eq!(f.last_success.map(|t| t.timestamp()), Some(100));
        assert_eq!(f.last_file.map(|t| t.timestamp()), Some(300));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(700));
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[7], 2);
        assert_eq!(h.count, 2);
    }
}
