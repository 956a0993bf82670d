//! systemd's readiness protocol (`Type=notify`, `WatchdogSec=`), without libsystemd:
//! the protocol is one datagram per message to the Unix socket named in
//! `$NOTIFY_SOCKET` (a path, or with a leading `@` an abstract socket name).
//!
//! Outside systemd (`$NOTIFY_SOCKET` unset) every call does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When the daemon last showed that it is alive: its loop beats at every turn (at most
/// every 200 ms) and after every committed step of a file. The watchdog keep-alive
/// tells systemd all is well only while the beat is recent, so a daemon stuck in a
/// call gets restarted instead of reported healthy.
#[derive(Clone, Debug)]
pub struct Heartbeat {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            origin: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Heartbeat {
    pub fn beat(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// How long since the last beat.
    pub fn age(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The service manager, if one asked to be told.
#[derive(Clone)]
pub struct Systemd {
    socket: Option<Arc<(UnixDatagram, SocketAddr)>>,
}

fn address(name: &str) -> std::io::Result<SocketAddr> {
    match name.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes())
        }
        None => SocketAddr::from_pathname(name),
    }
}

impl Systemd {
    /// Reads `$NOTIFY_SOCKET`. A socket that cannot be used is logged and ignored:
    /// systemd will then time the start out, which says more than a refusal to run.
    pub fn from_env() -> Systemd {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Systemd { socket: None };
        };
        let name = name.to_string_lossy();
        let socket = address(&name).and_then(|addr| Ok((UnixDatagram::unbound()?, addr)));
        match socket {
            Ok(pair) => Systemd {
                socket: Some(Arc::new(pair)),
            },
            Err(e) => {
                tracing::warn!(
                    "NOTIFY_SOCKET={name} cannot be used: {e}; systemd is not told when the daemon is ready, and a Type=notify unit times out"
                );
                Systemd { socket: None }
            }
        }
    }

    /// Sends one message, such as `READY=1` or `STATUS=...`; lines are separated by
    /// `\n`. Failures are logged at debug level only: a manager that went away must
    /// not stop the daemon.
    pub fn send(&self, message: &str) {
        if let Some(pair) = &self.socket {
            let (socket, addr) = &**pair;
            if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
                tracing::debug!("sd_notify {message:?}: {e}");
            }
        }
    }

    /// The daemon is watching its inbox: `READY=1`, and from now on the watchdog
    /// keep-alive, if systemd asked for one.
    pub fn ready(&self, inbox: &Path, stop: Arc<AtomicBool>, heartbeat: Heartbeat) {
        if self.socket.is_none() {
            return;
        }
        self.send(&format!("READY=1\nSTATUS=watching {}", inbox.display(),));
        if let Some(interval) = watchdog_interval() {
            self.keep_alive(inbox.to_path_buf(), interval, stop, heartbeat);
        }
    }

    /// `WATCHDOG=1` every `interval` while the daemon is healthy: not stopping, and
    /// its inbox still answers. A hung mount then gets the service restarted. It runs
    /// on a thread of its own so that a long file (minutes for a million users) does
    /// not look like a hang: processing makes progress that the watchdog cannot see.
    fn keep_alive(
        &self,
        inbox: std::path::PathBuf,
        interval: Duration,
        stop: Arc<AtomicBool>,
        heartbeat: Heartbeat,
    ) {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // `interval` is half of WatchdogSec: a beat older than that whole
                    // time means the daemon is stuck.
                    let stuck = heartbeat.age() > interval * 2;
                    if stuck {
                        tracing::error!(
                            seconds = heartbeat.age().as_secs(),
                            "the daemon has made no progress; the watchdog keep-alive is withheld, so systemd restarts it"
                        );
                    } else if inbox.is_dir() {
                        me.send("WATCHDOG=1");
                    } else {
                        tracing::error!(inbox = %inbox.display(), "the inbox is gone; the watchdog keep-alive stops, so systemd restarts the daemon: check the inbox's mount");
                    }
                    std::thread::sleep(interval);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(
                "cannot start the watchdog thread: {e}; without its keep-alive systemd restarts the daemon"
            );
        }
    }

    pub fn status(&self, text: &str) {
        self.send(&format!("STATUS={text}"));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }
}

/// Half of `$WATCHDOG_USEC`, as systemd advises, when the watchdog is meant for this
/// process (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim() != std::process::id().to_string()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abstract_and_path_addresses() {
        use std::os::linux::net::SocketAddrExt;
        let a = address("@userdrop/notify").unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"userdrop/notify"[..]));
        let p = address("/run/systemd/notify").unwrap();
        assert_eq!(p.as_pathname(), Some(Path::new("/run/systemd/notify")));
    }
}
