//! What the daemon loop tells the outside world and asks of it, behind four calls so
//! that the loop itself stays about files: systemd's notifications, the metrics file,
//! and reloading the config file on SIGHUP.

use crate::metrics::Metrics;
use crate::notify::{Heartbeat, Systemd};
use crate::process::Settings;
use crate::store::FileRecord;
use std::fmt;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Said at start-up and after a reload that leaves no token: the daemon is open to
/// anyone who can write to the inbox, and this is how to close it.
pub const NO_TOKEN: &str = "no token configured: requests are accepted without authorization; give --token, --token-file or USERDROP_TOKENS (or tokens in the config file) to require one";

/// What a reload of the config file may change in a running daemon.
pub struct Reloaded {
    pub settings: Settings,
    pub settle: Duration,
}

pub type Reload = Arc<dyn Fn() -> Result<Reloaded, String> + Send + Sync>;

#[derive(Clone)]
pub struct Hooks {
    pub systemd: Systemd,
    pub metrics: Option<Arc<Mutex<Metrics>>>,
    pub reload: Option<Reload>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            systemd: Systemd::from_env(),
            metrics: None,
            reload: None,
        }
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("metrics", &self.metrics.is_some())
            .field("reload", &self.reload.is_some())
            .finish()
    }
}

impl Hooks {
    /// The daemon is watching its inbox.
    pub fn started(&self, inbox: &Path, stop: Arc<AtomicBool>, heartbeat: Heartbeat) {
        self.systemd.ready(inbox, stop, heartbeat);
    }

    /// A file was processed.
    pub fn file_done(&self, record: &FileRecord, took: Duration) {
        if let Some(metrics) = &self.metrics {
            // A panic elsewhere cannot leave the figures half-updated: each update is
            // a few additions, so a poisoned lock is still usable.
            let mut metrics = metrics.lock().unwrap_or_else(|p| p.into_inner());
            metrics.file_done(record, took);
        }
    }

    /// SIGHUP: reads the config file again. On an error the daemon goes on with what
    /// it had, and says why.
    pub fn reload(&self, settings: &mut Settings, settle: &mut Duration) {
        let Some(reload) = &self.reload else {
            return;
        };
        match reload() {
            Ok(new) => {
                *settings = Settings {
                    stop: settings.stop.clone(),
                    meter: settings.meter.clone(),
                    ..new.settings
                };
                *settle = new.settle;
                tracing::info!(
                    authorization = settings.auth.is_on(),
                    max_file_size = settings.max_file_size,
                    settle_ms = settle.as_millis() as u64,
                    "SIGHUP: configuration reloaded"
                );
                if !settings.auth.is_on() {
                    tracing::warn!("{NO_TOKEN}");
                }
                self.systemd.status("configuration reloaded; watching");
            }
            Err(e) => {
                tracing::error!(
                    "SIGHUP: {e}; keeping the configuration in effect: fix it and send SIGHUP again"
                );
                self.systemd
                    .status("configuration reload failed; see the log");
            }
        }
    }

    /// The daemon stops taking files.
    pub fn stopping(&self) {
        self.systemd.stopping();
    }
}
