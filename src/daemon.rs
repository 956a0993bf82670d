//! The daemon loop of `run`: take the waiting requests of the inbox one at a time, in
//! name order, each once it is ready, until SIGINT or SIGTERM.
//!
//! When to scan is the `watch` module's business; this loop only decides, at each
//! scan, which waiting files are ready and applies them.

use crate::inbox;
use crate::process::{self, Settings};
use crate::request;
use crate::store::Store;
use crate::watch::Watch;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    pub inbox: PathBuf,
    /// Poll at this interval instead of using OS events.
    pub poll: Option<Duration>,
    /// Full rescan interval, in both modes.
    pub rescan: Duration,
    /// How long an unparsable file must stay unchanged before it is rejected.
    pub settle: Duration,
    /// Stop after the requests waiting at start-up.
    pub once: bool,
    /// The store's folder, for the start-up line.
    pub store: PathBuf,
    /// systemd, metrics and config reload (see `hooks`).
    pub hooks: crate::hooks::Hooks,
}

/// Whether a file is ready: it parses, or it stopped changing for the settle time.
#[derive(Default)]
struct Readiness {
    /// For each file that did not parse yet: its size and mtime, and since when.
    unsettled: HashMap<PathBuf, ((u64, Option<SystemTime>), Instant)>,
}

impl Readiness {
    fn ready(&mut self, path: &Path, settings: &Settings, settle: Duration) -> bool {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return false;
        };
        // Too large is judged by size alone, without reading.
        if meta.len() > settings.max_file_size {
            self.unsettled.remove(path);
            return true;
        }
        let seen = (meta.len(), meta.modified().ok());
        let now = Instant::now();
        // Unchanged since it last failed to parse: only the settle time can make it ready.
        if let Some((last, since)) = self.unsettled.get(path)
            && *last == seen
        {
            return now.duration_since(*since) >= settle;
        }
        // Complete JSON is ready even when its shape is wrong: that ERROR needs no wait.
        let parses = fs::read(path).is_ok_and(|bytes| {
            matches!(
                request::text(&bytes).and_then(request::envelope),
                Ok(_) | Err(crate::messages::Message::BadShape { .. })
            )
        });
        if parses {
            self.unsettled.remove(path);
            return true;
        }
        self.unsettled.insert(path.to_path_buf(), (seen, now));
        false
    }

    fn waiting_for_any(&self) -> bool {
        !self.unsettled.is_empty()
    }
}

/// Runs until a stop signal (or, with `once`, until the waiting files are done).
/// Returns whether every file processed was `OK`.
pub fn run(store: &Store, options: &DaemonOptions, settings: &Settings) -> Result<bool, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let hangup = Arc::new(AtomicBool::new(false));
    for (signal, flag) in [
        (signal_hook::consts::SIGINT, &stop),
        (signal_hook::consts::SIGTERM, &stop),
        (signal_hook::consts::SIGHUP, &hangup),
    ] {
        signal_hook::flag::register(signal, Arc::clone(flag))
            .map_err(|e| format!("cannot install the signal handler: {e}"))?;
    }
    // Owned, because SIGHUP may replace it (ops hook).
    let mut current = Settings {
        stop: Some(Arc::clone(&stop)),
        ..settings.clone()
    };
    let mut settle = options.settle;
    let mut watch = Watch::new(&options.inbox, options.poll, options.rescan)?;
    tracing::info!(
        inbox = %options.inbox.display(),
        store = %options.store.display(),
        mode = %watch.mode(),
        settle_ms = options.settle.as_millis() as u64,
        authorization = current.auth.is_on(),
        "userdrop started"
    );
    options.hooks.started(&options.inbox, Arc::clone(&stop));
    let mut readiness = Readiness::default();
    let mut unreadable = std::collections::HashSet::new();
    let mut all_ok = true;
    let mut scan = true;
    while !stop.load(Ordering::Relaxed) {
        if !scan {
            // Short waits keep a stop signal answered quickly; files waiting to
            // settle are looked at again soon even if nothing reports a change.
            let cap = Duration::from_millis(if readiness.waiting_for_any() { 50 } else { 200 });
            scan = watch.wait(cap) || readiness.waiting_for_any();
            if hangup.swap(false, Ordering::Relaxed) {
                options.hooks.reload(&mut current, &mut settle);
                tracing::info!("SIGHUP: rescanning the inbox");
                scan = true;
            }
            continue;
        }
        scan = false;
        readiness.unsettled.retain(|path, _| path.exists());
        let waiting = inbox::waiting(&options.inbox)
            .map_err(|e| format!("cannot read the inbox {}: {e}", options.inbox.display()))?;
        for file in waiting {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if unreadable.contains(&file) {
                continue;
            }
            // With --once, a file that is not ready yet is judged now: nothing will
            // wait for it to settle.
            if !options.once && !readiness.ready(&file, &current, settle) {
                continue;
            }
            let started = Instant::now();
            match process::apply_file(store, &file, &current) {
                Ok(record) => {
                    crate::cli::log_file(&record, started);
                    options.hooks.file_done(&record, started.elapsed());
                    all_ok &= record.status == crate::model::Status::Ok;
                }
                // The file vanished between the scan and the read: nothing to answer.
                Err(process::Error::Read { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                // One unreadable file must not stop the others; say so once.
                Err(e @ process::Error::Read { .. }) => {
                    if unreadable.insert(file.clone()) {
                        tracing::error!(file = %file.display(), "{e}");
                    }
                }
                Err(process::Error::Interrupted) => {
                    tracing::info!(file = %file.display(), "stopped mid-file; it resumes at the next start");
                    break;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        if options.once {
            break;
        }
    }
    options.hooks.stopping();
    store.flush().map_err(|e| e.to_string())?;
    Ok(all_ok)
}
