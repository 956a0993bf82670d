//! The figures of `userdrop stats` and of the Prometheus metrics file
//! (`--metrics-file`, for node_exporter's textfile collector).
//!
//! The counters come from the store's running totals (`store::Totals`), not from the
//! process: they survive restarts, a `--once` or `import` run reports the same totals
//! as the daemon, and `stats` shows exactly what the metrics file says. The totals are
//! updated in the batch that commits each file's outcome, so a file counts once each
//! time it is processed and the counters only rise (SPEC §7).
//!
//! The store is read once, when a process starts (the users are counted); after that each processed
//! file updates the figures in memory, so writing the metrics costs nothing that grows
//! with the store. Only the processing-time histogram is the process's own: the store
//! keeps no durations.

use crate::model::Status;
use crate::store::{FileRecord, Store, StoreError, Totals};
use chrono::{DateTime, SecondsFormat, Utc};
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
    /// Every file processed over the store's life: counters that only rise.
    pub totals: Totals,
}

/// The store's totals and user count, kept current in memory.
#[derive(Clone, Debug)]
pub struct History {
    figures: Figures,
    /// When the totals were read: a file finished before is in them already (a
    /// response a crash held back, delivered now).
    read_at: DateTime<Utc>,
}

impl History {
    /// Reads the totals and counts the users: once per process.
    pub fn read(store: &Store) -> Result<History, StoreError> {
        let read_at = Utc::now();
        Ok(History {
            figures: Figures {
                users: store.user_count()?,
                totals: store.totals()?,
            },
            read_at,
        })
    }

    pub fn figures(&self) -> &Figures {
        &self.figures
    }

    /// A file was just processed: it adds to every counter, as it did to the store's
    /// totals in the batch that committed it.
    pub fn record(&mut self, record: &FileRecord) {
        if record.finished_at < self.read_at {
            return;
        }
        self.figures.users += record.counts.added;
        self.figures.totals.add(record);
    }
}

fn unix(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// `stats --json`. `users` and `files` are the keys scripts had before the others.
pub fn stats_json(f: &Figures) -> serde_json::Value {
    serde_json::json!({
        "users": f.users,
        "files": {"OK": f.totals.files[0], "WARNING": f.totals.files[1], "ERROR": f.totals.files[2]},
        "users_applied": f.totals.users_applied,
        "users_rejected": f.totals.users_rejected,
        "last_success_unix": f.totals.last_success.map(unix),
        "last_file_unix": f.totals.last_file.map(unix),
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
            f.totals.files[slot(status)]
        );
    }
    let _ = writeln!(text, "users applied    {}", f.totals.users_applied);
    let _ = writeln!(text, "users rejected   {}", f.totals.users_rejected);
    let _ = writeln!(text, "last success     {}", when(f.totals.last_success));
    let _ = writeln!(text, "last file        {}", when(f.totals.last_file));
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
            tracing::warn!(file = %self.path.display(), "cannot write the metrics file: {e}; it is written again after the next file");
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
                    f.totals.files[slot(*s)] as f64,
                )
            })
            .collect();
        family(
            "userdrop_files_total",
            "counter",
            "Request files processed over the store's life, by status (from the store's totals).",
            &files,
        );
        family(
            "userdrop_users_applied_total",
            "counter",
            "Users added, updated or found unchanged, over every file processed.",
            &[(String::new(), f.totals.users_applied as f64)],
        );
        family(
            "userdrop_users_rejected_total",
            "counter",
            "Users rejected, over every file processed.",
            &[(String::new(), f.totals.users_rejected as f64)],
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
            &[(String::new(), f.totals.last_success.map_or(0.0, unix))],
        );
        family(
            "userdrop_last_file_timestamp_seconds",
            "gauge",
            "Unix time the last file of any status was finished; 0 if none.",
            &[(String::new(), f.totals.last_file.map_or(0.0, unix))],
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
    fn a_name_used_every_night_counts_every_night_and_counters_only_rise() {
        let mut h = History {
            figures: Figures::default(),
            read_at: DateTime::from_timestamp(50, 0).unwrap_or_default(),
        };
        // Delivered now, committed before the totals were read: already in them.
        h.record(&record("/old.json", Status::Ok, 9, 0, 10));
        let nights = [
            (Status::Error, 0, 0, 100),
            (Status::Error, 0, 0, 200),
            (Status::Warning, 1, 1, 300),
            (Status::Ok, 2, 0, 400),
        ];
        let mut before = h.figures().clone();
        for (status, added, rejected, at) in nights {
            h.record(&record("/users.json", status, added, rejected, at));
            let f = h.figures();
            for i in 0..3 {
                assert!(f.totals.files[i] >= before.totals.files[i], "{f:?}");
            }
            assert!(f.totals.users_applied >= before.totals.users_applied);
            before = f.clone();
        }
        let f = h.figures();
        assert_eq!(f.totals.files, [1, 1, 2]);
        assert_eq!(
            (f.users, f.totals.users_applied, f.totals.users_rejected),
            (3, 3, 1)
        );
        assert_eq!(f.totals.last_success.map(|t| t.timestamp()), Some(400));
        assert_eq!(f.totals.last_file.map(|t| t.timestamp()), Some(400));
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
