//! The daemon loop of `run`: take the waiting requests of the inbox one at a time, in
//! name order, each once it is ready, until SIGINT or SIGTERM.
//!
//! When to scan is the `watch` module's business; this loop only decides, at each
//! scan, which waiting files are ready and applies them.

use crate::inbox;
use crate::model::Status;
use crate::process::{self, Settings, Stamp, Taken};
use crate::store::{FileRecord, Store};
use crate::watch::Watch;
use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

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
/// Parsing is the first pass of processing itself ([`process::take_file`] defers an
/// incomplete file), so a ready file is read no more often than any other.
#[derive(Default)]
struct Readiness {
    /// For each file that did not parse yet: its size and mtime, and since when.
    unsettled: HashMap<PathBuf, (Stamp, Instant)>,
}

/// The stamp of the file at `path`, not following a link.
fn stamp(path: &Path) -> Option<Stamp> {
    fs::symlink_metadata(path)
        .ok()
        .map(|meta| process::stamp(&meta))
}

/// How to take a waiting file now, if at all.
enum Take {
    /// Not now: unchanged since it last proved incomplete, and not settled yet.
    Later,
    /// Process it, leaving it for later if it turns out incomplete.
    Deferring(Stamp),
    /// Process it and answer whatever it holds: it has settled (or is too large).
    Now,
}

impl Readiness {
    fn take(&self, path: &Path, settings: &Settings, settle: Duration) -> Take {
        let Some(seen) = stamp(path) else {
            return Take::Later;
        };
        // Too large is judged by size alone, without reading.
        if seen.0 > settings.max_file_size {
            return Take::Now;
        }
        match self.unsettled.get(path) {
            Some((last, since)) if *last == seen => {
                if since.elapsed() >= settle {
                    Take::Now
                } else {
                    Take::Later
                }
            }
            _ => Take::Deferring(seen),
        }
    }

    /// `path` was incomplete (or changing) when it looked like `seen`.
    fn incomplete(&mut self, path: &Path, seen: Stamp) {
        match self.unsettled.get(path) {
            Some((last, _)) if *last == seen => {}
            _ => {
                self.unsettled
                    .insert(path.to_path_buf(), (seen, Instant::now()));
            }
        }
    }

    fn waiting_for_any(&self) -> bool {
        !self.unsettled.is_empty()
    }
}

/// Files committed but not yet answered: they share one flush and one folder sync.
/// Bounded so that the first of them is not kept waiting long.
#[derive(Default)]
struct Group {
    /// Each file's record and when it was taken; the first one's is how long the
    /// group has waited.
    files: Vec<(FileRecord, Instant)>,
}

const GROUP_FILES: usize = 256;
const GROUP_WAIT: Duration = Duration::from_millis(200);

impl Group {
    fn full(&self) -> bool {
        self.files.len() >= GROUP_FILES
            || self
                .files
                .first()
                .is_some_and(|(_, started)| started.elapsed() >= GROUP_WAIT)
    }

    /// Makes the group durable and writes its responses. Returns whether all were `OK`.
    fn deliver(
        &mut self,
        store: &Store,
        settings: &Settings,
        hooks: &crate::hooks::Hooks,
    ) -> Result<bool, String> {
        let files = std::mem::take(&mut self.files);
        let records: Vec<FileRecord> = files.iter().map(|(r, _)| r.clone()).collect();
        process::deliver_all(store, &records, settings.lang).map_err(|e| e.to_string())?;
        let mut all_ok = true;
        for (record, started) in &files {
            crate::cli::log_file(record, *started);
            hooks.file_done(record, started.elapsed());
            all_ok &= record.status == Status::Ok;
        }
        Ok(all_ok)
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
    // A file changed under us: scan again shortly even if no event says so.
    let mut retry = false;
    let mut first_pass = true;
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if !scan {
            // Short waits keep a stop signal answered quickly; files waiting to
            // settle are looked at again soon even if nothing reports a change.
            let soon = readiness.waiting_for_any() || retry;
            let cap = Duration::from_millis(if soon { 50 } else { 200 });
            scan = watch.wait(cap) || soon;
            retry = false;
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
        let mut group = Group::default();
        for file in waiting {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if unreadable.contains(&file) {
                continue;
            }
            // With --once, a file that is not ready yet is judged now: nothing will
            // wait for it to settle.
            let (defer, seen) = match readiness.take(&file, &current, settle) {
                _ if options.once => (false, None),
                Take::Later => continue,
                Take::Deferring(seen) => (true, Some(seen)),
                Take::Now => (false, None),
            };
            let started = Instant::now();
            match process::take_file(store, &file, &current, defer) {
                Ok(Taken::Ready(record)) => {
                    readiness.unsettled.remove(&file);
                    group.files.push((record, started));
                }
                Ok(Taken::Incomplete) => {
                    if let Some(seen) = seen {
                        readiness.incomplete(&file, seen);
                    }
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
                // Rewritten while it was read: take it again at once, as it is now.
                // Nothing of it was committed. The usual cause is a writer still
                // finishing a complete document (an SFTP `put` under the final name),
                // so waiting out the settle time would only delay the answer; a
                // file still being written is then simply incomplete and deferred.
                Err(e @ process::Error::Changed { .. }) => {
                    tracing::info!("{e}; taking it again");
                    readiness.unsettled.remove(&file);
                    retry = true;
                }
                Err(process::Error::Interrupted) => {
                    tracing::info!(file = %file.display(), "stopped mid-file; it resumes at the next start");
                    break;
                }
                Err(e) => {
                    group.deliver(store, &current, &options.hooks)?;
                    return Err(e.to_string());
                }
            }
            if group.full() {
                all_ok &= group.deliver(store, &current, &options.hooks)?;
            }
        }
        all_ok &= group.deliver(store, &current, &options.hooks)?;
        if options.once {
            break;
        }
        if first_pass {
            first_pass = false;
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "initial scan done; watching the inbox"
            );
        }
    }
    options.hooks.stopping();
    store.flush().map_err(|e| e.to_string())?;
    Ok(all_ok)
}
