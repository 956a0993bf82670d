//! The sled store, behind a narrow API: read users, commit one bounded step of a file,
//! keep the outbox of responses not yet on disk, and the history of processed files.
//! No other module touches sled, so another engine could replace it here alone.
//!
//! Everything lives in sled's default tree under one-byte prefixes, because a sled
//! `Batch` is atomic only within one tree, and each step must be atomic together with
//! the file's progress:
//!
//! | key                         | value                                          |
//! |-----------------------------|------------------------------------------------|
//! | `u` email                   | a user: JSON `[data, meta]`                    |
//! | `p` path                    | [`Progress`] of a file being applied           |
//! | `l` path `\0` step (u32 BE) | the log entries of one step, JSON              |
//! | `o` path                    | outbox: a [`FileRecord`] whose response is due |
//! | `f` path                    | history: the [`FileRecord`] of the last run    |
//!
//! `path` is the request's canonical path, as bytes.

use crate::messages::Message;
use crate::model::{Email, Meta, Status, StoredUser, UserData};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const USER: u8 = b'u';
const PROGRESS: u8 = b'p';
const LOG: u8 = b'l';
const OUTBOX: u8 = b'o';
const FILE: u8 = b'f';

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store {0} is in use by another userdrop process; stop it, or give this command another --db"
    )]
    Locked(PathBuf),
    #[error("cannot open the store {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("store failure: {0}")]
    Sled(#[from] sled::Error),
    #[error("a record in the store cannot be read ({key}): {reason}")]
    Corrupt { key: String, reason: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// How the store is opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// sled's page cache; its own default of 1 GiB is too much for a small server.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Users added, updated, left unchanged and rejected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub added: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
}

impl Counts {
    pub fn applied(&self) -> u64 {
        self.added + self.updated + self.unchanged
    }
}

/// How far a file has been applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// xxh3-128 of the file's bytes, in hex: a different hash means a different file.
    pub hash: String,
    /// The first user not applied yet.
    pub next_index: u64,
    /// Steps committed so far; also the number of the next log chunk.
    pub steps: u32,
    pub counts: Counts,
}

/// What became of one file: the outbox entry until its response is on disk, and the
/// history afterwards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The request's canonical path; stored as bytes, since a Unix path need not be
    /// UTF-8.
    #[serde(with = "path_bytes")]
    pub path: PathBuf,
    pub hash: String,
    pub status: Status,
    /// For `ERROR`: what was wrong with the file.
    pub message: Option<Message>,
    pub users: u64,
    pub counts: Counts,
    pub finished_at: DateTime<Utc>,
}

mod path_bytes {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        path.as_os_str().as_bytes().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(PathBuf::from(OsString::from_vec(Vec::<u8>::deserialize(
            d,
        )?)))
    }
}

/// One bounded step of a file, committed atomically.
pub struct Step<'a> {
    pub path: &'a Path,
    /// Users to write; unchanged users are not here.
    pub writes: Vec<StoredUser>,
    /// The log entries of the users this step covers, in order.
    pub log: Vec<Vec<Message>>,
    /// The file's progress after this step.
    pub progress: Progress,
    /// On the last step: the file's outcome, which goes to the outbox and the history,
    /// and the progress record is removed.
    pub done: Option<FileRecord>,
}

/// Cheap to clone: clones share one open database (the daemon's control thread
/// reads through one).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
}

fn key(prefix: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len() + 1);
    k.push(prefix);
    k.extend_from_slice(rest);
    k
}

fn path_key(prefix: u8, path: &Path) -> Vec<u8> {
    key(prefix, path.as_os_str().as_bytes())
}

/// The prefix under which every log chunk of `path` lives.
fn log_prefix(path: &Path) -> Vec<u8> {
    let mut k = path_key(LOG, path);
    k.push(0);
    k
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        key: "(encoding)".into(),
        reason: e.to_string(),
    })
}

fn decode<'a, T: Deserialize<'a>>(k: &[u8], bytes: &'a [u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        reason: e.to_string(),
    })
}

fn decode_user(k: &[u8], bytes: &[u8]) -> Result<StoredUser> {
    let (data, meta): (UserData, Meta) = decode(k, bytes)?;
    Ok(StoredUser { data, meta })
}

fn open_sled(dir: &Path, options: &StoreOptions) -> Result<sled::Db> {
    sled::Config::new()
        .path(dir)
        .cache_capacity(options.cache_bytes)
        .open()
        .map_err(|e| match &e {
            sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                StoreError::Locked(dir.to_path_buf())
            }
            _ => StoreError::Open {
                path: dir.to_path_buf(),
                source: e,
            },
        })
}

/// Removes sled's unfinished snapshot files (see [`Store::open`]); returns how many.
fn remove_unfinished_snapshots(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.as_bytes();
        if name.starts_with(b"snap.") && name.ends_with(b".generating") {
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::warn!(file = %entry.path().display(), "removed an unfinished sled snapshot left by an interrupted run");
                    removed += 1;
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove an unfinished sled snapshot")
                }
            }
        }
    }
    removed
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. Fails at once with
    /// [`StoreError::Locked`] when another process holds it.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Store> {
        match open_sled(dir, options) {
            // sled 0.34 writes a snapshot as `snap.N.generating`, then renames it to
            // `snap.N`; but on open it reads the highest `snap.*` name, which sorts the
            // unfinished `.generating` file first. A process killed mid-snapshot (SIGKILL,
            // OOM, power) so leaves a store sled refuses to open ("empty/corrupt snapshot
            // file found"). The unfinished file was never committed (the previous
            // snapshot and the log are intact, since old snapshots are removed only after
            // the rename), so removing it is safe; we only get here holding the lock.
            Err(StoreError::Open {
                source: sled::Error::Corruption { .. },
                ..
            }) if remove_unfinished_snapshots(dir) > 0 => open_sled(dir, options),
            other => other,
        }
        .map(|db| Store { db })
    }

    pub fn user(&self, email: &Email) -> Result<Option<StoredUser>> {
        let k = key(USER, email.as_str().as_bytes());
        self.db.get(&k)?.map(|v| decode_user(&k, &v)).transpose()
    }

    /// Every user, sorted by email.
    pub fn users(&self) -> impl Iterator<Item = Result<StoredUser>> + '_ {
        self.db.scan_prefix([USER]).map(|item| {
            let (k, v) = item?;
            decode_user(&k, &v)
        })
    }

    pub fn user_count(&self) -> Result<u64> {
        let mut n = 0;
        for item in self.db.scan_prefix([USER]).keys() {
            item?;
            n += 1;
        }
        Ok(n)
    }

    pub fn progress(&self, path: &Path) -> Result<Option<Progress>> {
        let k = path_key(PROGRESS, path);
        self.db.get(&k)?.map(|v| decode(&k, &v)).transpose()
    }

    /// Forgets a file's partial progress (its content changed): it starts over.
    pub fn discard_progress(&self, path: &Path) -> Result<()> {
        self.remove_with_log(path_key(PROGRESS, path), path)
    }

    /// Removes `key` and every log chunk of `path`, atomically.
    fn remove_with_log(&self, key: Vec<u8>, path: &Path) -> Result<()> {
        let mut batch = sled::Batch::default();
        self.remove_with_log_into(&mut batch, key, path)?;
        self.db.apply_batch(batch)?;
        Ok(())
    }

    fn remove_with_log_into(
        &self,
        batch: &mut sled::Batch,
        key: Vec<u8>,
        path: &Path,
    ) -> Result<()> {
        batch.remove(key);
        for k in self.db.scan_prefix(log_prefix(path)).keys() {
            batch.remove(k?);
        }
        Ok(())
    }

    /// Commits one step atomically: its users, its log entries and the file's
    /// progress, and on the last step the outbox entry and the history record.
    /// Not durable until [`Store::flush`].
    pub fn commit(&self, step: Step<'_>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for user in &step.writes {
            batch.insert(
                key(USER, user.data.email.as_str().as_bytes()),
                encode(&(&user.data, &user.meta))?,
            );
        }
        if !step.log.is_empty() {
            let mut k = log_prefix(step.path);
            k.extend_from_slice(&step.progress.steps.saturating_sub(1).to_be_bytes());
            batch.insert(k, encode(&step.log)?);
        }
        match &step.done {
            None => batch.insert(path_key(PROGRESS, step.path), encode(&step.progress)?),
            Some(record) => {
                let value = encode(record)?;
                batch.remove(path_key(PROGRESS, step.path));
                batch.insert(path_key(OUTBOX, step.path), value.clone());
                batch.insert(path_key(FILE, step.path), value);
            }
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// Makes everything committed so far durable.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    /// Files whose response is due: committed, but not yet known to be on disk.
    pub fn outbox(&self) -> Result<Vec<FileRecord>> {
        self.db
            .scan_prefix([OUTBOX])
            .map(|item| {
                let (k, v) = item?;
                decode(&k, &v)
            })
            .collect()
    }

    pub fn outbox_entry(&self, path: &Path) -> Result<Option<FileRecord>> {
        let k = path_key(OUTBOX, path);
        self.db.get(&k)?.map(|v| decode(&k, &v)).transpose()
    }

    /// The log entries of a file in the outbox, step by step, in request order.
    pub fn log_chunks(&self, path: &Path) -> impl Iterator<Item = Result<Vec<Vec<Message>>>> + '_ {
        self.db.scan_prefix(log_prefix(path)).map(|item| {
            let (k, v) = item?;
            decode(&k, &v)
        })
    }

    /// The response of `path` is durably on disk: drop its outbox entry and log.
    pub fn clear_outbox(&self, path: &Path) -> Result<()> {
        self.clear_outboxes([path])
    }

    /// [`Store::clear_outbox`] for many files in one batch.
    pub fn clear_outboxes<'p>(&self, paths: impl IntoIterator<Item = &'p Path>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for path in paths {
            self.remove_with_log_into(&mut batch, path_key(OUTBOX, path), path)?;
        }
        self.db.apply_batch(batch)?;
        Ok(())
    }

    /// The last outcome of every file processed, by path.
    pub fn files(&self) -> impl Iterator<Item = Result<FileRecord>> + '_ {
        self.db.scan_prefix([FILE]).map(|item| {
            let (k, v) = item?;
            decode(&k, &v)
        })
    }
}
