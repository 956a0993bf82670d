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
//! | `u` email                   | a user: hash of data, JSON `[data, meta]`      |
//! | `p` path                    | [`Progress`] of a file being applied           |
//! | `o` path                    | outbox: a [`FileRecord`] whose response is due |
//! | `f` path                    | history: the [`FileRecord`] of the last run    |
//! | `l` path                    | the log of a one-step file in the outbox, JSON |
//!
//! `path` is the request's canonical path, as bytes.
//!
//! The log entries of a file being applied (one line of JSON per user) do not go
//! through sled: they are appended to a *spool* file, `spool/<xxh3 of path>.log` in the
//! store folder, and the progress and outbox records say how many of its bytes are
//! committed. A step appends its lines, then commits its batch with the new length; a
//! tail past the committed length (a step cut short) is cut off by the next append.
//! [`Store::flush`] syncs the spool files written before it flushes sled. Keeping them
//! out of sled makes a big import write a third less through sled's log, and lets an
//! unchanged re-import leave the store's size alone. A file done in one step (most
//! files: up to `--step-users` users) keeps its log in sled instead, in the batch of
//! its outbox entry: a spool file would cost it an fsync of its own, where sled's
//! flush is shared by a whole group of files.

use crate::messages::Message;
use crate::model::{Email, Meta, Status, StoredUser, UserData};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const USER: u8 = b'u';
const PROGRESS: u8 = b'p';
const OUTBOX: u8 = b'o';
const FILE: u8 = b'f';
const LOG: u8 = b'l';

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
    #[error("the log spool {path} cannot be written or read: {source}")]
    Spool { path: PathBuf, source: io::Error },
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
    pub counts: Counts,
    /// Bytes of the file's spool log that are committed.
    #[serde(default)]
    pub log_len: u64,
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
    /// Bytes of the file's spool log: its response's log entries.
    #[serde(default)]
    pub log_len: u64,
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
    spool: Arc<Spool>,
}

/// The folder of log spool files.
struct Spool {
    dir: PathBuf,
    pending: Mutex<Pending>,
}

/// Spool files waiting for the next flush.
#[derive(Default)]
struct Pending {
    /// Written since: synced before sled is flushed.
    unsynced: Vec<PathBuf>,
    /// No longer counted on by any record, but only once that removal is flushed: a
    /// crash before it brings the record back, and the record needs its spool.
    retired: Vec<PathBuf>,
}

impl Spool {
    fn path(&self, request: &Path) -> PathBuf {
        let id = xxhash_rust::xxh3::xxh3_128(request.as_os_str().as_bytes());
        self.dir.join(format!("{id:032x}.log"))
    }

    /// Appends `log` to the spool of `request` after its first `from` bytes (cutting
    /// off anything past them); returns the new length.
    fn append(&self, request: &Path, from: u64, log: &[Vec<Message>]) -> Result<u64> {
        let path = self.path(request);
        let io = |e: io::Error| StoreError::Spool {
            path: path.clone(),
            source: e,
        };
        let mut file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        file.set_len(from).map_err(io)?;
        file.seek(SeekFrom::Start(from)).map_err(io)?;
        let mut out = io::BufWriter::with_capacity(64 * 1024, &file);
        for entry in log {
            serde_json::to_writer(&mut out, entry).map_err(|e| io(io::Error::other(e)))?;
            out.write_all(b"\n").map_err(io)?;
        }
        out.flush().map_err(io)?;
        drop(out);
        let len = file.stream_position().map_err(io)?;
        let mut pending = self.pending();
        pending.retired.retain(|p| *p != path);
        if !pending.unsynced.contains(&path) {
            pending.unsynced.push(path);
        }
        Ok(len)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sync(&self) -> Result<()> {
        let unsynced = std::mem::take(&mut self.pending().unsynced);
        for path in unsynced {
            match fs::File::open(&path).and_then(|f| f.sync_data()) {
                Ok(()) => {}
                // Removed since (its file was answered or started over): nothing to keep.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Spool { path, source: e }),
            }
        }
        Ok(())
    }

    /// `request`'s spool goes once the removal of its last record is flushed.
    fn retire(&self, request: &Path) {
        let path = self.path(request);
        let mut pending = self.pending();
        if !pending.retired.contains(&path) {
            pending.retired.push(path);
        }
    }

    /// After a flush: removes the spool files retired before it.
    fn remove_retired(&self, retired: Vec<PathBuf>) {
        for path in retired {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Harmless: a leftover is cut to size when reused, removed at the next start.
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove a spool file")
                }
            }
        }
    }

    /// The committed log of `request`, in chunks of up to 1 000 users.
    fn read(
        &self,
        request: &Path,
        len: u64,
    ) -> impl Iterator<Item = Result<Vec<Vec<Message>>>> + use<> {
        let path = self.path(request);
        let mut lines = if len == 0 {
            None
        } else {
            Some(
                fs::File::open(&path)
                    .map(|f| io::BufReader::with_capacity(256 * 1024, f.take(len))),
            )
        };
        let mut line = Vec::new();
        std::iter::from_fn(move || {
            let reader = match lines.as_mut()? {
                Ok(reader) => reader,
                Err(_) => {
                    let e = lines.take().and_then(|r| r.err())?;
                    return Some(Err(StoreError::Spool {
                        path: path.clone(),
                        source: e,
                    }));
                }
            };
            let mut chunk = Vec::new();
            while chunk.len() < 1000 {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => break,
                    Ok(_) => match decode(path.as_os_str().as_bytes(), &line) {
                        Ok(entry) => chunk.push(entry),
                        Err(e) => {
                            lines = None;
                            return Some(Err(e));
                        }
                    },
                    Err(e) => {
                        lines = None;
                        return Some(Err(StoreError::Spool {
                            path: path.clone(),
                            source: e,
                        }));
                    }
                }
            }
            if chunk.is_empty() {
                lines = None;
                None
            } else {
                Some(Ok(chunk))
            }
        })
    }
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

/// The first byte of a user record that starts with the hash of its data fields.
/// (Records without it, JSON from the first versions, start with `[`.)
const HASHED: u8 = 1;

/// A user record: [`HASHED`], xxh3-128 of the data's JSON (16 bytes, little end
/// first), then JSON `[data, meta]`. The hash lets an unchanged re-import tell
/// "nothing to do" without decoding the record.
fn encode_user(user: &StoredUser) -> Result<Vec<u8>> {
    let data = encode(&user.data)?;
    let meta = encode(&user.meta)?;
    let mut v = Vec::with_capacity(20 + data.len() + meta.len());
    v.push(HASHED);
    v.extend_from_slice(&xxhash_rust::xxh3::xxh3_128(&data).to_le_bytes());
    v.push(b'[');
    v.extend_from_slice(&data);
    v.push(b',');
    v.extend_from_slice(&meta);
    v.push(b']');
    Ok(v)
}

/// The hash a record written from `data` carries.
pub fn data_hash(data: &UserData) -> Result<u128> {
    Ok(xxhash_rust::xxh3::xxh3_128(&encode(data)?))
}

fn decode_user(k: &[u8], bytes: &[u8]) -> Result<StoredUser> {
    let json = match bytes.split_first() {
        Some((&HASHED, rest)) if rest.len() > 16 => &rest[16..],
        _ => bytes,
    };
    let (data, meta): (UserData, Meta) = decode(k, json)?;
    Ok(StoredUser { data, meta })
}

/// A user record as sled holds it, decoded only when needed.
pub struct RawUser {
    key: Vec<u8>,
    bytes: sled::IVec,
}

impl RawUser {
    /// The hash of the data fields, for records that carry one.
    pub fn data_hash(&self) -> Option<u128> {
        match self.bytes.split_first() {
            Some((&HASHED, rest)) => rest
                .get(..16)
                .and_then(|h| <[u8; 16]>::try_from(h).ok())
                .map(u128::from_le_bytes),
            _ => None,
        }
    }

    pub fn decode(&self) -> Result<StoredUser> {
        decode_user(&self.key, &self.bytes)
    }
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
        let db = match open_sled(dir, options) {
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
        }?;
        let dir_spool = dir.join("spool");
        fs::create_dir_all(&dir_spool).map_err(|e| StoreError::Spool {
            path: dir_spool.clone(),
            source: e,
        })?;
        let store = Store {
            db,
            spool: Arc::new(Spool {
                dir: dir_spool,
                pending: Mutex::new(Pending::default()),
            }),
        };
        store.remove_orphan_spools()?;
        Ok(store)
    }

    /// The request paths that records under `prefix` (progress, outbox) are kept for:
    /// their keys are the prefix and the path's bytes.
    fn request_paths(&self, prefix: u8) -> impl Iterator<Item = Result<PathBuf>> + '_ {
        self.db.scan_prefix([prefix]).keys().map(|k| {
            let k = k?;
            Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&k[1..])))
        })
    }

    /// Removes spool files that no progress or outbox record counts on: left by a
    /// crash between clearing a record and removing its spool.
    fn remove_orphan_spools(&self) -> Result<()> {
        let mut live = std::collections::HashSet::new();
        for prefix in [PROGRESS, OUTBOX] {
            for path in self.request_paths(prefix) {
                live.insert(self.spool.path(&path?));
            }
        }
        let Ok(entries) = fs::read_dir(&self.spool.dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            if !live.contains(&entry.path()) {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    pub fn user(&self, email: &Email) -> Result<Option<StoredUser>> {
        self.user_raw(email)?.map(|raw| raw.decode()).transpose()
    }

    pub fn user_raw(&self, email: &Email) -> Result<Option<RawUser>> {
        let key = key(USER, email.as_str().as_bytes());
        Ok(self.db.get(&key)?.map(|bytes| RawUser { key, bytes }))
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
        self.db.remove(path_key(PROGRESS, path))?;
        self.spool.retire(path);
        Ok(())
    }

    /// Forgets the progress (and the spooled log) of files that were cut short and
    /// have since been removed: nobody will resume them, and a big file's spool is
    /// as large as its response. Durable on return. A file that comes back later
    /// starts over, which applies nothing twice: the users of its committed steps are
    /// found already stored and merged again.
    pub fn forget_vanished(&self) -> Result<Vec<PathBuf>> {
        let mut gone = Vec::new();
        for path in self.request_paths(PROGRESS) {
            let path = path?;
            if matches!(fs::symlink_metadata(&path), Err(e) if e.kind() == io::ErrorKind::NotFound)
            {
                gone.push(path);
            }
        }
        for path in &gone {
            self.discard_progress(path)?;
        }
        if !gone.is_empty() {
            self.flush()?;
        }
        Ok(gone)
    }

    /// Commits one step atomically: its users, the file's progress (with its log
    /// entries appended to the spool first), and on the last step the outbox entry and
    /// the history record. Not durable until [`Store::flush`]. Returns the committed
    /// length of the file's spool log.
    pub fn commit(&self, step: Step<'_>) -> Result<u64> {
        let mut log_len = step.progress.log_len;
        let mut batch = sled::Batch::default();
        let one_step = step.done.is_some() && log_len == 0;
        if one_step {
            if !step.log.is_empty() {
                batch.insert(path_key(LOG, step.path), encode(&step.log)?);
            }
        } else if !step.log.is_empty() {
            log_len = self.spool.append(step.path, log_len, &step.log)?;
        }
        for user in &step.writes {
            batch.insert(
                key(USER, user.data.email.as_str().as_bytes()),
                encode_user(user)?,
            );
        }
        match &step.done {
            None => {
                let progress = Progress {
                    log_len,
                    ..step.progress
                };
                batch.insert(path_key(PROGRESS, step.path), encode(&progress)?)
            }
            Some(record) => {
                let value = encode(&FileRecord {
                    log_len,
                    ..record.clone()
                })?;
                batch.remove(path_key(PROGRESS, step.path));
                batch.insert(path_key(OUTBOX, step.path), value.clone());
                batch.insert(path_key(FILE, step.path), value);
            }
        }
        self.db.apply_batch(batch)?;
        Ok(log_len)
    }

    /// Makes everything committed so far durable.
    pub fn flush(&self) -> Result<()> {
        // The spool first: a flushed record must never count bytes a power cut lost.
        self.spool.sync()?;
        let retired = std::mem::take(&mut self.spool.pending().retired);
        self.db.flush()?;
        self.spool.remove_retired(retired);
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

    /// The log entries of a file in the outbox, in chunks, in request order.
    pub fn log_chunks(
        &self,
        record: &FileRecord,
    ) -> Box<dyn Iterator<Item = Result<Vec<Vec<Message>>>>> {
        if record.log_len > 0 {
            return Box::new(self.spool.read(&record.path, record.log_len));
        }
        let k = path_key(LOG, &record.path);
        let inline = self
            .db
            .get(&k)
            .map_err(StoreError::from)
            .and_then(|v| v.map(|v| decode(&k, &v)).transpose());
        Box::new(inline.transpose().into_iter())
    }

    /// The responses of `paths` are durably on disk: drop their outbox entries and
    /// logs, in one batch.
    pub fn clear_outboxes<'p>(&self, paths: impl IntoIterator<Item = &'p Path>) -> Result<()> {
        let paths: Vec<&Path> = paths.into_iter().collect();
        let mut batch = sled::Batch::default();
        for path in &paths {
            batch.remove(path_key(OUTBOX, path));
            batch.remove(path_key(LOG, path));
        }
        self.db.apply_batch(batch)?;
        for path in paths {
            self.spool.retire(path);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_records_carry_the_hash_of_their_data_and_old_records_still_read() {
        let record = br#"[{"title":"T","email":"a@b.co"},{"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","source_file":"a.json"}]"#;
        let old = RawUser {
            key: b"ua@b.co".to_vec(),
            bytes: sled::IVec::from(&record[..]),
        };
        assert_eq!(old.data_hash(), None, "a record from before the hash");
        let user = old.decode().unwrap();
        assert_eq!(user.data.title, "T");

        let new = RawUser {
            key: b"ua@b.co".to_vec(),
            bytes: sled::IVec::from(encode_user(&user).unwrap()),
        };
        assert_eq!(new.data_hash(), Some(data_hash(&user.data).unwrap()));
        assert_eq!(new.decode().unwrap(), user);
        let mut other = user.data.clone();
        other.title = "U".into();
        assert_ne!(new.data_hash(), Some(data_hash(&other).unwrap()));
    }
}
