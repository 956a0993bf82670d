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
//! | `u` email                   | a user: hash of data, binary record ([`record`]) |
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
//! [`SledStore::flush`] syncs the spool files written before it flushes sled. Keeping them
//! out of sled makes a big import write a third less through sled's log, and lets an
//! unchanged re-import leave the store's size alone. A file done in one step (most
//! files: up to `--step-users` users) keeps its log in sled instead, in the batch of
//! its outbox entry: a spool file would cost it an fsync of its own, where sled's
//! flush is shared by a whole group of files.

use super::spool::Spool;
use super::{
    FileRecord, Item, Progress, Result, Step, StoreError, StoreOptions, Totals, decode, encode,
};
use crate::messages::Message;
use crate::model::{Email, Meta, StoredUser, UserData};
use crate::version;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const USER: u8 = b'u';
const PROGRESS: u8 = b'p';
const OUTBOX: u8 = b'o';
const FILE: u8 = b'f';
const LOG: u8 = b'l';
/// The one key of the running totals (see [`Totals`]).
const TOTALS: &[u8] = b"t";
/// Present while a restore fills the store (see [`SledStore::begin_restore`]): a store
/// holding it is half a snapshot, and is refused until a restore finishes it.
const RESTORING: &[u8] = b"r";

/// Cheap to clone: clones share one open database (the daemon's control thread
/// reads through one).
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    spool: Arc<Spool>,
    /// None for a scratch store, which is never made durable.
    durable: Option<Arc<Durable>>,
    /// Held by every write of users, history or totals, and by a backup for as long
    /// as it reads them: sled's iterators see each batch whole or not at all, but a
    /// scan over many keys would see the batches committed while it runs, and a
    /// backup must be one moment of the store.
    gate: Arc<Mutex<()>>,
    /// Written since the last flush began: a flush with nothing to make durable
    /// costs nothing, which lets held steps (see [`Step::hold_below`]) skip it.
    dirty: Arc<AtomicBool>,
    /// The steps of the file in hand held back (see [`Step::hold_below`]).
    held: Arc<Mutex<Option<Held>>>,
}

/// Steps of one file committed to nobody yet: their users to write, and the
/// progress and spool length after them.
struct Held {
    path: PathBuf,
    writes: Vec<StoredUser>,
    log_entries: usize,
    progress: Progress,
    /// The spool file was created by a held step: its folder entry needs a sync.
    created: bool,
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

mod record;

/// The first byte of a format-1 user record that starts with the hash of its data
/// fields. (Format-1 records without it, JSON from the first versions, start with `[`;
/// format 2 writes [`record::BINARY`].)
const HASHED: u8 = 1;

/// A user record in the layout of format 2 (see [`record`]): the tag, xxh3-128 of the
/// data's JSON ([`super::data_hash`], the hash both engines compare), the fields. The
/// hash lets an unchanged re-import tell "nothing to do" without decoding the record.
fn encode_user(user: &StoredUser) -> Result<Vec<u8>> {
    Ok(record::encode(user, super::data_hash(&user.data)?))
}

/// A user record of either format: format 2's binary layout, or format 1's JSON
/// `[data, meta]` with or without the [`HASHED`] prefix. A store is not rewritten when
/// it moves to format 2 (see ARCHITECTURE.md, "Store layout"): its old records are
/// read as they are until their users are written again.
fn decode_user(k: &[u8], bytes: &[u8]) -> Result<StoredUser> {
    let json = match bytes.split_first() {
        Some((&record::BINARY, _)) => {
            return record::decode(bytes).map_err(|reason| StoreError::Corrupt {
                key: String::from_utf8_lossy(k).into_owned(),
                reason,
            });
        }
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
        match self.bytes.first() {
            Some(&record::BINARY | &HASHED) => record::hash(&self.bytes),
            _ => None,
        }
    }

    pub fn decode(&self) -> Result<StoredUser> {
        decode_user(&self.key, &self.bytes)
    }
}

/// sled's files, made durable by userdrop itself. sled 0.34's `flush()` writes its log
/// with `sync_file_range`, which on Linux makes neither a growing file's size nor its
/// new extents durable, and it never syncs its `conf` file, its blobs (values over
/// about 128 KiB) or its folder. After each sled flush, [`Durable::sync`] fsyncs the
/// log file (`db`), and, when their folders' entries changed since the last sync,
/// `conf`, every new blob, and the folders themselves.
struct Durable {
    dir: PathBuf,
    db: fs::File,
    folder: fs::File,
    seen: Mutex<Seen>,
}

/// The folders' change times at the last sync, and the blobs synced.
#[derive(Default)]
struct Seen {
    folder: Option<[i64; 4]>,
    blobs: Option<[i64; 4]>,
    blobs_synced: std::collections::HashSet<std::ffi::OsString>,
}

/// A folder's modification and change time: they move when an entry is added,
/// renamed or removed.
fn entries_stamp(meta: &fs::Metadata) -> [i64; 4] {
    use std::os::unix::fs::MetadataExt;
    [
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    ]
}

impl Durable {
    fn open(dir: &Path) -> io::Result<Durable> {
        // The store's own name in its parent: new when sled just made the folder.
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
        let parent = parent.unwrap_or(Path::new("."));
        if let Err(e) = fs::File::open(parent).and_then(|d| d.sync_all()) {
            tracing::debug!(folder = ?parent, "cannot sync the store's parent folder: {e}");
        }
        Ok(Durable {
            dir: dir.to_path_buf(),
            db: fs::File::open(dir.join("db"))?,
            folder: fs::File::open(dir)?,
            seen: Mutex::new(Seen::default()),
        })
    }

    fn sync(&self) -> io::Result<()> {
        self.db.sync_all()?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let blobs_dir = self.dir.join("blobs");
        if let Ok(meta) = fs::metadata(&blobs_dir) {
            let stamp = entries_stamp(&meta);
            if seen.blobs != Some(stamp) {
                let mut present = std::collections::HashSet::new();
                for entry in fs::read_dir(&blobs_dir)? {
                    let name = entry?.file_name();
                    if !seen.blobs_synced.contains(&name) {
                        fs::File::open(blobs_dir.join(&name))?.sync_all()?;
                    }
                    present.insert(name);
                }
                fs::File::open(&blobs_dir)?.sync_all()?;
                seen.blobs_synced = present;
                seen.blobs = Some(stamp);
            }
        }
        let stamp = entries_stamp(&self.folder.metadata()?);
        if seen.folder != Some(stamp) {
            match fs::File::open(self.dir.join("conf")) {
                Ok(conf) => conf.sync_all()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.folder.sync_all()?;
            seen.folder = Some(stamp);
        }
        Ok(())
    }
}

/// The store's folder 0700 and its files 0600 (SPEC §6), whatever the umask of the
/// process that made them: a store made by an earlier version under umask 022 is
/// closed at its next open. Only the owner can do this; anyone else reads as before.
pub(super) fn restrict_permissions(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let restrict = |path: &Path, is_dir: bool| {
        let mode = if is_dir { 0o700 } else { 0o600 };
        if let Err(e) = fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
            tracing::debug!(path = ?path, "cannot restrict the permissions: {e}");
        }
    };
    restrict(dir, true);
    for sub in [dir.to_path_buf(), dir.join("blobs"), dir.join("spool")] {
        let Ok(entries) = fs::read_dir(&sub) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(kind) = entry.file_type() {
                if kind.is_dir() {
                    restrict(&entry.path(), true);
                } else if kind.is_file() {
                    restrict(&entry.path(), false);
                }
            }
        }
    }
}

/// Turns transparent huge pages off for this process, once, before the store's memory
/// grows. mimalloc asks for them, and with them a 2 MiB page is resident as soon as one
/// byte of it is touched: measured on a 200 000-user re-import (issue 13), peak RSS
/// 171-186 MiB with them, 132 MiB without, and the kernel's zeroing of fresh huge pages
/// (`clear_page_erms`, 13-17 % of the samples) went with them. Best effort: a kernel
/// without the call keeps them.
fn no_huge_pages() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: PR_SET_THP_DISABLE takes one integer argument and touches no memory
        // of ours.
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    });
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

/// Removes sled's unfinished snapshot files (see [`SledStore::open`]); returns how many.
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
                    tracing::warn!(file = %entry.path().display(), error = %e, "cannot remove an unfinished sled snapshot; remove it while the daemon is stopped")
                }
            }
        }
    }
    removed
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir`. Fails at once with
    /// [`StoreError::Locked`] when another process holds it.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<SledStore> {
        no_huge_pages();
        // Before sled, which writes as it opens: a store refused is left as it was.
        let recorded = version::check(dir)?;
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
        if !options.restoring && db.contains_key(RESTORING)? {
            return Err(StoreError::RestoreUnfinished(dir.to_path_buf()));
        }
        restrict_permissions(dir);
        let dir_spool = dir.join("spool");
        fs::create_dir_all(&dir_spool).map_err(|e| StoreError::Spool {
            path: dir_spool.clone(),
            source: e,
        })?;
        let durable = Durable::open(dir).map_err(|e| StoreError::Durable {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let store = SledStore {
            db,
            spool: Arc::new(Spool::made(dir_spool)),
            durable: Some(Arc::new(durable)),
            gate: Arc::default(),
            dirty: Arc::new(AtomicBool::new(true)),
            held: Arc::default(),
        };
        store.remove_orphan_spools()?;
        store.start_totals()?;
        // What sled wrote at open (its `conf` is never synced by sled itself) and the
        // folders just created are made durable before anything counts on them.
        store.flush()?;
        // A store of an older version is read as it is (format 1's records decode
        // beside format 2's): recording the new version is all its move takes, and
        // it comes after the open succeeded, so a store that cannot open stays as
        // the older binary left it.
        if recorded != version::Recorded::Current {
            if let version::Recorded::Older(found) = recorded {
                tracing::info!(store = %dir.display(), from = found, to = version::CURRENT, "store format moved to the current version; its records are read as they are");
            }
            version::record(dir).map_err(|e| StoreError::Durable {
                path: dir.to_path_buf(),
                source: e,
            })?;
        }
        Ok(store)
    }

    /// An empty store in memory, gone when dropped: what `check` judges against when
    /// there is no store yet, so that it never creates one (SPEC §6).
    pub fn scratch() -> Result<SledStore> {
        let db = sled::Config::new().temporary(true).open()?;
        Ok(SledStore {
            db,
            spool: Arc::new(Spool::new(std::env::temp_dir())),
            durable: None,
            gate: Arc::default(),
            dirty: Arc::new(AtomicBool::new(true)),
            held: Arc::default(),
        })
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
        let mut live = Vec::new();
        for prefix in [PROGRESS, OUTBOX] {
            for path in self.request_paths(prefix) {
                live.push(path?);
            }
        }
        self.spool.remove_orphans(live);
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
        {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            if held.as_ref().is_some_and(|h| h.path == path) {
                *held = None;
            }
        }
        self.write().remove(path_key(PROGRESS, path))?;
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
    /// the history record. Not durable until [`SledStore::flush`]. Returns the committed
    /// length of the file's spool log.
    pub fn commit(&self, step: Step<'_>) -> Result<u64> {
        let _gate = self.gate();
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut log_len = step.progress.log_len;
        // Held steps go on only with the next step of the same run of their file: one
        // that starts from anything else (a resume from the stored progress, a file
        // rejected, another file) finds them dropped, and redoes them if it must.
        if held
            .as_ref()
            .is_some_and(|h| h.path != step.path || h.progress.log_len != log_len)
        {
            *held = None;
        }
        let one_step = step.done.is_some() && log_len == 0;
        let mut created = false;
        if !one_step && !step.log.is_empty() {
            (log_len, created) = self.spool.append(step.path, log_len, &step.log)?;
        }
        let (mut writes, log_entries) = match held.take() {
            Some(h) => {
                created |= h.created;
                (h.writes, h.log_entries)
            }
            None => (Vec::new(), 0),
        };
        writes.extend(step.writes);
        let log_entries = log_entries + step.log.len();
        if step.done.is_none()
            && writes.len() < step.hold_below
            && log_entries < step.hold_below.saturating_mul(super::JUDGED_PER_STEP)
        {
            *held = Some(Held {
                path: step.path.to_path_buf(),
                writes,
                log_entries,
                progress: Progress {
                    log_len,
                    ..step.progress
                },
                created,
            });
            return Ok(log_len);
        }
        let mut batch = sled::Batch::default();
        if one_step {
            if !step.log.is_empty() {
                batch.insert(path_key(LOG, step.path), encode(&step.log)?);
            }
        } else if log_len > 0 {
            self.spool.written(self.spool.path(step.path), created);
        }
        for user in &writes {
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
                // One writer applies files to a store, so reading the totals here and
                // writing them in the batch cannot lose another's count.
                let mut totals = self.totals()?;
                totals.add(record);
                batch.insert(TOTALS, encode(&totals)?);
                batch.remove(path_key(PROGRESS, step.path));
                batch.insert(path_key(OUTBOX, step.path), value.clone());
                batch.insert(path_key(FILE, step.path), value);
            }
        }
        self.write().apply_batch(batch)?;
        Ok(log_len)
    }

    /// The database, about to be written: the next flush has work to do.
    fn write(&self) -> &sled::Db {
        self.dirty.store(true, Ordering::SeqCst);
        &self.db
    }

    /// Makes everything committed so far durable: on stable storage, as after a power
    /// cut (SPEC §2). sled's own `flush()` ends in `sync_file_range`, which leaves a
    /// growing file's size and extents, and sled's other files, unsynced; [`Durable`]
    /// fsyncs them.
    pub fn flush(&self) -> Result<()> {
        if !self.dirty.swap(false, Ordering::SeqCst) && !self.spool.unsynced() {
            // Nothing written since the last flush began (held steps only): nothing
            // to make durable, and no record removed whose files could go.
            return Ok(());
        }
        // The spool first: a flushed record must never count bytes a power cut lost.
        self.spool.sync()?;
        let retired = self.spool.take_retired();
        self.db.flush()?;
        if let Some(durable) = &self.durable {
            durable.sync().map_err(|e| StoreError::Durable {
                path: durable.dir.clone(),
                source: e,
            })?;
        }
        self.spool.remove_retired(retired);
        Ok(())
    }

    /// A new private copy of `request`, empty, for a file applied in several steps:
    /// its steps are applied from it, and a file cut short is finished from it, so
    /// that what the uploader does to the request meanwhile cannot change what is
    /// applied (SPEC §2). Synced by the next [`SledStore::flush`], before any step that
    /// counts on it is durable.
    pub fn new_copy(&self, request: &Path) -> Result<fs::File> {
        self.spool.new_copy(request)
    }

    /// The private copy of `request` is no longer needed (the file was rejected, or is
    /// taken again from its start): it goes after the next flush.
    pub fn discard_copy(&self, request: &Path) {
        self.spool.discard_copy(request)
    }

    /// The requests cut short mid-way: their progress is stored.
    pub fn interrupted(&self) -> Result<Vec<PathBuf>> {
        self.request_paths(PROGRESS).collect()
    }

    /// The private copy of `request`, if one was made.
    pub fn open_copy(&self, request: &Path) -> Result<Option<fs::File>> {
        self.spool.open_copy(request)
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
        self.write().apply_batch(batch)?;
        for path in paths {
            self.spool.retire(path);
        }
        Ok(())
    }

    /// The running totals of every file processed on this store.
    pub fn totals(&self) -> Result<Totals> {
        match self.db.get(TOTALS)? {
            Some(v) => decode(TOTALS, &v),
            None => Ok(Totals::default()),
        }
    }

    /// A store of an earlier version has a history but no totals: they start as the
    /// sum of the history (the last run of each request path), once.
    fn start_totals(&self) -> Result<()> {
        if self.db.get(TOTALS)?.is_some() {
            return Ok(());
        }
        let mut totals = Totals::default();
        for record in self.files() {
            totals.add(&record?);
        }
        if totals != Totals::default() {
            self.write().insert(TOTALS, encode(&totals)?)?;
        }
        Ok(())
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, ()> {
        // The gate guards no data of its own: a panic while it was held leaves
        // nothing half-done that the next holder could see.
        self.gate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A file in the store's private folder that no other process can open, gone when
    /// closed: room for an answer too big for memory (a backup served to a client).
    pub fn scratch_file(&self) -> io::Result<fs::File> {
        self.spool.scratch_file()
    }

    pub(super) fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Erases these users (the right to erasure); returns those that were stored.
    /// Durable on return. A file being applied at the same moment may store one of
    /// them again: its step read the user before the erasure and writes after it.
    pub fn delete(&self, emails: &[Email]) -> Result<Vec<Email>> {
        let erased = {
            let _gate = self.gate();
            let mut batch = sled::Batch::default();
            let mut erased = Vec::new();
            for email in emails {
                let k = key(USER, email.as_str().as_bytes());
                if self.db.contains_key(&k)? && !erased.contains(email) {
                    batch.remove(k);
                    erased.push(email.clone());
                }
            }
            self.write().apply_batch(batch)?;
            erased
        };
        if !erased.is_empty() {
            self.flush()?;
        }
        Ok(erased)
    }

    /// Hands every user (by email), every file's history (by path) and the totals to
    /// `each`, all of one moment: no step is committed while it runs.
    pub fn snapshot<E: From<StoreError>>(
        &self,
        mut each: impl FnMut(Item<'_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let _gate = self.gate();
        for user in self.users() {
            each(Item::User(&user?))?;
        }
        for file in self.files() {
            each(Item::File(&file?, None))?;
        }
        each(Item::Totals(&self.totals()?))
    }

    /// Marks the store as being restored into: it must hold nothing, or a restore
    /// that did not finish, which is cleared to start over. Durable on return.
    pub fn begin_restore(&self, dir: &Path) -> Result<()> {
        if self.db.contains_key(RESTORING)? {
            self.write().clear()?;
        } else if self.db.iter().next().is_some() {
            return Err(StoreError::NotEmpty(dir.to_path_buf()));
        }
        self.write().insert(RESTORING, &[])?;
        self.flush()
    }

    /// Writes restored users and history records, as they are, in one batch.
    pub fn restore_batch(&self, users: &[StoredUser], files: &[&FileRecord]) -> Result<()> {
        let mut batch = sled::Batch::default();
        for user in users {
            batch.insert(
                key(USER, user.data.email.as_str().as_bytes()),
                encode_user(user)?,
            );
        }
        for file in files {
            batch.insert(path_key(FILE, &file.path), encode(file)?);
        }
        self.write().apply_batch(batch)?;
        Ok(())
    }

    /// Ends a restore: the totals, then the mark removed, durably, in that order, so
    /// that a store is never taken for whole before all of it is on disk.
    pub fn finish_restore(&self, totals: &Totals) -> Result<()> {
        if totals != &Totals::default() {
            self.write().insert(TOTALS, encode(totals)?)?;
        }
        self.flush()?;
        self.write().remove(RESTORING)?;
        self.flush()
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
    use crate::store::data_hash;

    fn raw(bytes: &[u8]) -> RawUser {
        RawUser {
            key: b"ua@b.co".to_vec(),
            bytes: sled::IVec::from(bytes),
        }
    }

    #[test]
    fn user_records_carry_the_hash_of_their_data_and_old_records_still_read() {
        let json = br#"[{"title":"T","email":"a@b.co"},{"created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z","source_file":"a.json"}]"#;
        let old = raw(json);
        assert_eq!(old.data_hash(), None, "a record from before the hash");
        let user = old.decode().unwrap();
        assert_eq!(user.data.title, "T");

        // Format 1 with its hash: the prefix byte, the hash, the JSON.
        let hash = data_hash(&user.data).unwrap();
        let mut hashed = vec![HASHED];
        hashed.extend_from_slice(&hash.to_le_bytes());
        hashed.extend_from_slice(json);
        let hashed = raw(&hashed);
        assert_eq!(hashed.data_hash(), Some(hash));
        assert_eq!(hashed.decode().unwrap(), user);

        let new = raw(&encode_user(&user).unwrap());
        assert_eq!(new.bytes[0], record::BINARY);
        assert_eq!(new.data_hash(), Some(hash));
        assert_eq!(new.decode().unwrap(), user);
        let mut other = user.data.clone();
        other.title = "U".into();
        assert_ne!(new.data_hash(), Some(data_hash(&other).unwrap()));
    }

    #[test]
    fn binary_records_keep_every_field_exactly() {
        let json = r#"[{"title":"Ünïcode \"q\"","email":"x.y+z@shop.example","phone":"+4915112345678","country":"DE","city":"Köln","address":"","discount_card":{"discount":12.50,"active":false,"date_limit":"2027-02-28","status":2},"customer_group_id":18446744073709551615,"balance":-0.1000000000000000000001e-3,"balance_currency":"EUR","manager_id":1,"site_link":"https://shop.example/a?b=c","company":"ACME","role":"","newsletter_subscription":true,"note":"line\nbreak"},{"created_at":"1969-12-31T23:59:59.123456789Z","updated_at":"2026-01-01T00:00:00Z","source_file":"a b.json"}]"#.as_bytes();
        let user = raw(json).decode().unwrap();
        let bytes = encode_user(&user).unwrap();
        let back = raw(&bytes).decode().unwrap();
        assert_eq!(back, user);
        let balance = back.data.balance.as_ref().map(|n| n.as_str());
        assert_eq!(balance, Some("-0.1000000000000000000001e-3"));
        assert_eq!(encode(&back.data).unwrap(), encode(&user.data).unwrap());
        assert!(bytes.len() < json.len(), "{} bytes", bytes.len());

        // A damaged record is refused, whatever was cut or flipped, never a panic.
        for end in 0..bytes.len() {
            assert!(raw(&bytes[..end]).decode().is_err(), "cut at {end}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(raw(&longer).decode().is_err());
        for i in record::HEAD..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0xff;
            let _ = raw(&flipped).decode();
        }
    }
}
