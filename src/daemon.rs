//! The daemon loop of `run`: take the waiting requests of the inbox one at a time, in
//! name order, each once it is ready, until SIGINT or SIGTERM.
//!
//! When to scan is the `watch` module's business; this loop only decides, at each
//! scan, which waiting files are ready and applies them.

use crate::inbox::{Folder, Look};
use crate::model::Status;
use crate::notify::Heartbeat;
use crate::process::{self, Delivery, Request, Settings, Taken, Verify};
use crate::retention::Sweeper;
use crate::store::{FileRecord, Store};
use crate::watch::Watch;
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The flags the signal handlers set. Installed before anything else at start-up, so
/// that a SIGTERM in the first milliseconds is a stop like any other (SPEC §6).
#[derive(Clone, Debug)]
pub struct Signals {
    /// SIGINT or SIGTERM.
    pub stop: Arc<AtomicBool>,
    /// SIGHUP.
    pub hangup: Arc<AtomicBool>,
}

impl Signals {
    /// Installs the handlers; the first thing `main` does, before it knows which
    /// command runs: a SIGTERM even while the arguments are parsed is a clean stop.
    pub fn install() -> std::io::Result<Signals> {
        let signals = Signals {
            stop: Arc::new(AtomicBool::new(false)),
            hangup: Arc::new(AtomicBool::new(false)),
        };
        for (signal, flag) in Self::HANDLED {
            let flag = if flag { &signals.stop } else { &signals.hangup };
            signal_hook::flag::register(signal, Arc::clone(flag))?;
        }
        Ok(signals)
    }

    /// The signals handled, and whether each means "stop" (else "rescan").
    const HANDLED: [(i32, bool); 3] = [
        (signal_hook::consts::SIGINT, true),
        (signal_hook::consts::SIGTERM, true),
        (signal_hook::consts::SIGHUP, false),
    ];

    /// For the commands that are not the daemon: the signals do what they always do
    /// (Ctrl-C ends `export`). A stop that came while the arguments were parsed ends
    /// the process now, as it would have.
    pub fn release(self) {
        for (signal, _) in Self::HANDLED {
            // SAFETY: setting a signal's disposition back to the default touches no
            // memory of ours; signal-hook's handler, which it replaces, is only
            // reached through the kernel.
            unsafe {
                libc::signal(signal, libc::SIG_DFL);
            }
        }
        if self.stopped() {
            std::process::exit(128 + libc::SIGTERM);
        }
    }

    /// Flags no handler sets.
    pub fn none() -> Signals {
        Signals {
            stop: Arc::new(AtomicBool::new(false)),
            hangup: Arc::new(AtomicBool::new(false)),
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Every committed step of a file is a beat: a long file is progress too.
impl process::Meter for Heartbeat {
    fn advance(&self, _done: u64, _total: u64) {
        self.beat();
    }
}

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
    /// Clean-up of answered requests: at start-up and every `rescan`.
    pub retention: Option<Arc<crate::retention::Retention>>,
    /// systemd, metrics and config reload (see `hooks`).
    pub hooks: crate::hooks::Hooks,
    pub signals: Signals,
}

/// Whether a file is ready: it parses, or it stopped changing for the settle time.
/// Parsing is the first pass of processing itself ([`process::take_file`] defers an
/// incomplete file), so a ready file is read no more often than any other.
#[derive(Default)]
struct Readiness {
    /// For each file that did not parse yet: what it was, and since when.
    unsettled: HashMap<OsString, (Look, Instant)>,
}

/// How to take a waiting file now, if at all.
enum Take {
    /// Not now: unchanged since it last proved incomplete, and not settled yet.
    Later,
    /// Process it, leaving it for later if it turns out incomplete.
    Deferring,
    /// Process it and answer whatever it holds: it has settled (or is too large).
    Now,
}

impl Readiness {
    fn take(&self, seen: Look, name: &OsStr, settings: &Settings, settle: Duration) -> Take {
        // Too large is judged by size alone, without reading.
        if seen.identity.size > settings.max_file_size {
            return Take::Now;
        }
        match self.unsettled.get(name) {
            Some((last, since)) if last.identity == seen.identity => {
                if since.elapsed() >= settle {
                    Take::Now
                } else {
                    Take::Later
                }
            }
            _ => Take::Deferring,
        }
    }

    /// `name` was incomplete (or changing) when it looked like `seen`.
    fn incomplete(&mut self, name: &OsStr, seen: Look) {
        match self.unsettled.get(name) {
            Some((last, _)) if last.identity == seen.identity => {}
            _ => {
                self.unsettled
                    .insert(name.to_owned(), (seen, Instant::now()));
            }
        }
    }

    fn waiting_for_any(&self) -> bool {
        !self.unsettled.is_empty()
    }
}

/// Files that failed for a reason of their own (unreadable, a response that cannot be
/// written): tried again when they change, and at every periodic rescan, never in a
/// loop, and each failure is said once.
#[derive(Default)]
struct Failing {
    files: HashMap<OsString, (Look, Instant)>,
}

impl Failing {
    /// Whether `name`, as it looks now, should be tried again.
    fn due(&self, name: &OsStr, seen: &Look, rescan: Duration) -> bool {
        match self.files.get(name) {
            Some((last, since)) => last != seen || since.elapsed() >= rescan,
            None => true,
        }
    }

    /// Records a failure; true when it is new (or the file changed), worth a log line.
    fn failed(&mut self, name: &OsStr, seen: Look) -> bool {
        let new = self.files.get(name).is_none_or(|(last, _)| *last != seen);
        self.files.insert(name.to_owned(), (seen, Instant::now()));
        new
    }
}

/// Files committed but not yet answered: they share one flush and one folder sync.
/// Bounded so that the first of them is not kept waiting long.
#[derive(Default)]
struct Group {
    /// Each file's record, how it looked when taken, and when it was taken; the first
    /// one's is how long the group has waited.
    files: Vec<(FileRecord, Look, Instant)>,
}

const GROUP_FILES: usize = 256;
const GROUP_WAIT: Duration = Duration::from_millis(200);

impl Group {
    fn full(&self) -> bool {
        self.files.len() >= GROUP_FILES
            || self
                .files
                .first()
                .is_some_and(|(_, _, started)| started.elapsed() >= GROUP_WAIT)
    }

    /// Makes the group durable and writes its responses. Returns whether all were
    /// `OK`. `Err` only when the store fails: a response that cannot be written is
    /// that file's failure, logged, and tried again later.
    fn deliver(
        &mut self,
        store: &Store,
        settings: &Settings,
        hooks: &crate::hooks::Hooks,
        failing: &mut Failing,
    ) -> Result<bool, process::Error> {
        let files = std::mem::take(&mut self.files);
        let records: Vec<FileRecord> = files.iter().map(|(r, _, _)| r.clone()).collect();
        let delivered = process::deliver_all(store, &records, settings.lang, Verify::Identity)?;
        let mut all_ok = true;
        for ((record, seen, started), outcome) in files.iter().zip(delivered) {
            match outcome {
                Delivery::Written => {
                    process::log_processed(record, *started);
                    hooks.file_done(record, started.elapsed());
                    all_ok &= record.status == Status::Ok;
                }
                Delivery::Stale => {}
                Delivery::Failed(e) => {
                    let name = record.path.file_name().unwrap_or_default();
                    if failing.failed(name, *seen) {
                        tracing::error!(file = %record.path.display(), "{e}; it is tried again at the next rescan");
                    }
                    all_ok = false;
                }
            }
        }
        Ok(all_ok)
    }
}

/// The state of the loop between scans.
struct Loop<'a> {
    store: &'a Store,
    options: &'a DaemonOptions,
    folder: Folder,
    settings: Settings,
    settle: Duration,
    readiness: Readiness,
    failing: Failing,
    /// Requests whose response name would not fit: warned about once.
    too_long: HashSet<OsString>,
    all_ok: bool,
    /// A file changed under us: scan again shortly even if no event says so.
    retry: bool,
    /// The folder's entries stamp at the last scan, and when the last full one ran.
    scanned: Option<([i64; 4], Instant)>,
    retention: Option<Sweeper>,
    /// The last pause while the store was out of reach; `None` once it answers.
    outage: Option<Duration>,
    /// Waiting out an outage is the loop at work, not stuck: the watchdog is fed.
    heartbeat: Heartbeat,
}

const OUTAGE_FIRST: Duration = Duration::from_secs(1);
const OUTAGE_MAX: Duration = Duration::from_secs(30);

/// Runs until a stop signal (or, with `once`, until the waiting files are done).
/// Returns whether every file processed was `OK`.
pub fn run(store: &Store, options: &DaemonOptions, settings: &Settings) -> Result<bool, String> {
    let stop = &options.signals.stop;
    let folder = Folder::open(&options.inbox)
        .map_err(|e| format!("cannot open the inbox {}: {e}", options.inbox.display()))?;
    let mut watch = Watch::new(folder.path(), options.poll, options.rescan)?;
    let heartbeat = Heartbeat::default();
    heartbeat.beat();
    let mut state = Loop {
        store,
        options,
        folder,
        // Owned, because SIGHUP may replace it (ops hook).
        settings: Settings {
            stop: Some(Arc::clone(stop)),
            meter: Some(Arc::new(heartbeat.clone())),
            ..settings.clone()
        },
        settle: options.settle,
        readiness: Readiness::default(),
        failing: Failing::default(),
        too_long: HashSet::new(),
        all_ok: true,
        retry: false,
        scanned: None,
        retention: options.retention.clone().map(Sweeper::new),
        outage: None,
        heartbeat: heartbeat.clone(),
    };
    options
        .hooks
        .started(&options.inbox, Arc::clone(stop), heartbeat.clone());
    let started = Instant::now();
    let mut first_pass = true;
    let mut scan = true;
    // At start-up too, after the recovery and before the first scan: an inbox that
    // was down for a while is cleaned up at once, not a rescan later.
    state.clean_up_if_due();
    while !options.signals.stopped() {
        heartbeat.beat();
        if !scan {
            // Short waits keep a stop signal answered quickly; files waiting to
            // settle are looked at again soon even if nothing reports a change.
            let soon = state.readiness.waiting_for_any() || state.retry;
            let cap = Duration::from_millis(if soon { 50 } else { 200 });
            scan = watch.wait(cap) || soon;
            // A poll tick on a folder whose entries did not change since the last
            // scan finds nothing new: skip it (the periodic rescan still looks at
            // everything, for file systems whose folder times lag).
            if scan && !soon && options.poll.is_some() && state.unchanged_since_scan() {
                scan = false;
            }
            state.retry = false;
            // On the rescan's clock, not on events: ages are hours or days.
            state.clean_up_if_due();
            if options.signals.hangup.swap(false, Ordering::Relaxed) {
                options.hooks.reload(&mut state.settings, &mut state.settle);
                tracing::info!("SIGHUP: rescanning the inbox");
                scan = true;
            }
            continue;
        }
        scan = false;
        let waited = state.scan_once()?;
        if options.once && !waited {
            break;
        }
        if first_pass && !options.once && !options.signals.stopped() {
            first_pass = false;
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "initial scan done; watching the inbox"
            );
        }
        if options.once {
            // Files still settling: look again shortly.
            std::thread::sleep(Duration::from_millis(50));
            scan = true;
        }
    }
    options.hooks.stopping();
    store.flush().map_err(|e| e.to_string())?;
    tracing::info!(
        reason = if options.signals.stopped() {
            "signal"
        } else {
            "--once: nothing left waiting"
        },
        "userdrop stopped; the store is durable"
    );
    Ok(state.all_ok)
}

impl Loop<'_> {
    /// A retention pass, if retention is on and the rescan interval has passed since
    /// the last one (or none ran yet).
    fn clean_up_if_due(&mut self) {
        if let Some(sweeper) = &mut self.retention
            && sweeper.due(self.options.rescan)
        {
            sweeper.pass(&self.folder, &self.options.signals.stop);
        }
    }

    /// Whether the folder's entries are as the last scan saw them, and that scan is
    /// younger than the rescan interval.
    fn unchanged_since_scan(&self) -> bool {
        match (self.scanned, self.folder.entries_stamp()) {
            (Some((stamp, at)), Ok(now)) => stamp == now && at.elapsed() < self.options.rescan,
            _ => false,
        }
    }

    /// One scan: every waiting file that is ready is applied, and the responses are
    /// written in groups. Returns whether some file is still waiting to settle.
    fn scan_once(&mut self) -> Result<bool, String> {
        // Taken before the listing: a change during the scan makes the next tick scan.
        let stamp = self.folder.entries_stamp().ok();
        let scan = self.folder.scan().map_err(|e| {
            format!(
                "cannot read the inbox {}: {e}",
                self.options.inbox.display()
            )
        })?;
        for name in scan.too_long {
            if self.too_long.insert(name.clone()) {
                tracing::warn!(
                    file = %self.folder.join(&name).display(),
                    "not taken: its response name would be longer than 255 bytes; rename the request"
                );
            }
        }
        let waiting: HashSet<&OsString> = scan.waiting.iter().collect();
        self.readiness
            .unsettled
            .retain(|name, _| waiting.contains(name));
        self.failing.files.retain(|name, _| waiting.contains(name));
        let mut group = Group::default();
        for name in &scan.waiting {
            if self.options.signals.stopped() {
                break;
            }
            self.take(name, &mut group)?;
            if group.full() {
                self.deliver(&mut group)?;
            }
        }
        self.deliver(&mut group)?;
        // Only a scan that left nothing to retry may let the next ticks be skipped.
        self.scanned = match stamp {
            Some(stamp) if self.failing.files.is_empty() => Some((stamp, Instant::now())),
            _ => None,
        };
        Ok(self.readiness.waiting_for_any())
    }

    fn deliver(&mut self, group: &mut Group) -> Result<(), String> {
        let hooks = &self.options.hooks;
        let answered = !group.files.is_empty();
        match group.deliver(self.store, &self.settings, hooks, &mut self.failing) {
            Ok(all_ok) => {
                self.all_ok &= all_ok;
                if answered {
                    // The store answers again: the next outage starts at 1 s.
                    self.outage = None;
                }
                Ok(())
            }
            // Committed, not answered: the outbox keeps them, and the next scan that
            // finds the store back writes their responses.
            Err(process::Error::Store(e)) if e.is_transient() => {
                self.wait_out(&e);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The store is out of reach (a PostgreSQL connection lost): the file in hand is
    /// cut short like a crash would cut it, and is taken again after a pause that
    /// doubles while the outage lasts (1 s up to 30 s), from its stored progress.
    fn wait_out(&mut self, e: &crate::store::StoreError) {
        let pause = match self.outage {
            None => OUTAGE_FIRST,
            Some(last) => (last * 2).min(OUTAGE_MAX),
        };
        self.outage = Some(pause);
        tracing::warn!(
            retry_in_s = pause.as_secs(),
            "{e}; trying again in {} s",
            pause.as_secs()
        );
        let until = Instant::now() + pause;
        while Instant::now() < until && !self.options.signals.stopped() {
            self.heartbeat.beat();
            std::thread::sleep(Duration::from_millis(100));
        }
        self.retry = true;
    }

    /// Takes one waiting file, if it is ready, into `group`.
    fn take(&mut self, name: &OsStr, group: &mut Group) -> Result<(), String> {
        let Ok(seen) = self.folder.look(name) else {
            return Ok(());
        };
        if !self.failing.due(name, &seen, self.options.rescan) {
            return Ok(());
        }
        // The settle rule holds in every mode (SPEC §4): `--once` too waits for a
        // file that does not parse yet, until it has been unchanged for the settle time.
        let defer = match self.readiness.take(seen, name, &self.settings, self.settle) {
            Take::Later => return Ok(()),
            Take::Deferring => true,
            Take::Now => false,
        };
        let started = Instant::now();
        let request = Request::new(&self.folder, name);
        match process::take_file(self.store, &request, &self.settings, defer) {
            Ok(Taken::Ready(record)) => {
                self.outage = None;
                self.readiness.unsettled.remove(name);
                group.files.push((record, seen, started));
            }
            Ok(Taken::Incomplete) => self.readiness.incomplete(name, seen),
            // Gone, or not a regular file any more, between the scan and the open:
            // nothing to answer.
            Err(process::Error::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(process::Error::NotRegular { path }) => {
                tracing::debug!(file = %path.display(), "not a regular file; ignored");
            }
            // One unreadable file must not stop the others; say so once.
            Err(e @ process::Error::Read { .. }) => {
                if self.failing.failed(name, seen) {
                    tracing::error!(file = %request.path.display(), "{e}; it is tried again when it changes and at every rescan");
                }
            }
            // Rewritten while it was read: take it again at once, as it is now.
            // Nothing of it was committed. The usual cause is a writer still
            // finishing a complete document (an SFTP `put` under the final name),
            // so waiting out the settle time would only delay the answer; a
            // file still being written is then simply incomplete and deferred.
            Err(e @ process::Error::Changed { .. }) => {
                tracing::info!("{e}; taking it again");
                self.readiness.unsettled.remove(name);
                self.retry = true;
            }
            Err(process::Error::Interrupted) => {
                tracing::info!(file = %request.path.display(), "stopped mid-file; it resumes at the next start");
            }
            Err(process::Error::Store(e)) if e.is_transient() => {
                self.deliver(group)?;
                self.wait_out(&e);
            }
            Err(e) => {
                self.deliver(group)?;
                return Err(e.to_string());
            }
        }
        Ok(())
    }
}
