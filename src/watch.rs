//! When to look at the inbox again: OS events (inotify through `notify`) by default,
//! a fixed polling interval with `--poll`, and in both modes a full rescan every
//! `--rescan` seconds, because an event queue can overflow and network mounts may
//! deliver no events at all. Every event only means "scan now": the folder is flat
//! and a scan is one `read_dir`, so coalescing events into a flag is cheaper and
//! simpler than tracking what each one says.

use notify::{RecursiveMode, Watcher};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

/// An event that says something was opened or read, nothing more. A file closed
/// after writing (an upload finished) is not one of them.
fn is_only_a_read(event: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    matches!(
        event.kind,
        EventKind::Access(
            AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
        )
    ) && !event.need_rescan()
}

pub struct Watch {
    /// Kept alive for as long as events are wanted.
    _watcher: Option<notify::RecommendedWatcher>,
    events: Option<Receiver<()>>,
    /// In poll mode, the interval between scans.
    poll: Option<Duration>,
    rescan: Duration,
    last_scan: Instant,
}

impl Watch {
    /// Starts watching `dir`; with `poll`, no OS events are used at all.
    pub fn new(dir: &Path, poll: Option<Duration>, rescan: Duration) -> Result<Watch, String> {
        let (watcher, events) = match poll {
            Some(_) => (None, None),
            None => {
                // Capacity 1 and try_send: a burst of events collapses into one wake-up.
                let (tx, rx): (SyncSender<()>, Receiver<()>) = mpsc::sync_channel(1);
                let mut watcher =
                    notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                        // Errors and overflow (`Rescan` flag) are answered the same
                        // way as any event: by a full scan. Opening or reading a name
                        // changes nothing in the folder, and the scan itself opens it:
                        // answering those would make every scan start the next one.
                        if !event.as_ref().is_ok_and(is_only_a_read) {
                            let _ = tx.try_send(());
                        }
                    })
                    .map_err(|e| format!("cannot watch {}: {e}; try --poll MS", dir.display()))?;
                watcher
                    .watch(dir, RecursiveMode::NonRecursive)
                    .map_err(|e| format!("cannot watch {}: {e}; try --poll MS", dir.display()))?;
                (Some(watcher), Some(rx))
            }
        };
        Ok(Watch {
            _watcher: watcher,
            events,
            poll,
            rescan,
            last_scan: Instant::now(),
        })
    }

    /// Waits at most `cap`; true when the inbox should be scanned now.
    pub fn wait(&mut self, cap: Duration) -> bool {
        let interval = self.poll.unwrap_or(self.rescan);
        let due = self.last_scan + interval;
        let now = Instant::now();
        if now >= due {
            self.last_scan = now;
            return true;
        }
        let timeout = cap.min(due - now);
        let woke = match &self.events {
            Some(rx) => match rx.recv_timeout(timeout) {
                Ok(()) => true,
                Err(RecvTimeoutError::Timeout) => false,
                // The watcher is gone; polling at the rescan interval still works.
                Err(RecvTimeoutError::Disconnected) => {
                    self.events = None;
                    false
                }
            },
            None => {
                std::thread::sleep(timeout);
                false
            }
        };
        if woke || Instant::now() >= due {
            self.last_scan = Instant::now();
            return true;
        }
        false
    }
}

/// What `Watch::new(_, poll, _)` watches with, for the start line.
pub fn mode(poll: Option<Duration>) -> String {
    match poll {
        Some(p) => format!("poll every {} ms", p.as_millis()),
        None => "inotify".to_owned(),
    }
}
