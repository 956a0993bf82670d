//! The store: where users, the progress of files being applied, the outbox of
//! responses due and the history of processed files are kept. It is the pipeline's
//! one seam to its engines: every other module talks to [`Store`] and never learns
//! which engine is behind it.
//!
//! - [`embedded`]: sled in a local folder (`--db`), the default, for a shop with one
//!   server. One writer; a step is made durable by [`Store::flush`].
//! - [`pg`]: PostgreSQL (`--store postgres://…`, SPEC §8), one customer base fed by
//!   daemons on several hosts. Each step is one transaction, durable at its commit.
//!
//! Both keep the same records ([`Progress`], [`FileRecord`], [`Totals`]) and take the
//! same [`Step`]s. The one thing the pipeline must do differently for several writers,
//! merge a step's users with what is stored *while nobody else can change them*, is
//! what [`Store::commit_with`] is for: the engine hands the step's stored users to the
//! caller's merge (under row locks on PostgreSQL), then commits what it built.
//! Both engines keep their private copies of requests (and sled its log spool) in a
//! local folder, [`spool`].

mod embedded;
pub mod pg;
mod spool;

use crate::messages::Message;
use crate::model::{Email, Identity, Status, StoredUser, UserData};
use crate::validate::Types;
use crate::version;
use chrono::{DateTime, Utc};
use embedded::SledStore;
use pg::{PgError, PgOptions, PgStore};
use serde::{Deserialize, Serialize};
use spool::Spool;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store {0} is in use by another userdrop process; stop it, or give this command another --db"
    )]
    Locked(PathBuf),
    #[error("cannot open the store {path}: {source}{}", sled_hint(source))]
    Open { path: PathBuf, source: sled::Error },
    #[error(
        "the store failed: {0}; check the disk (free space, errors in dmesg), then start userdrop again: a file cut short resumes"
    )]
    Sled(#[from] sled::Error),
    #[error(
        "a record in the store cannot be read ({key}): {reason}; the store is damaged or was written by another version of userdrop"
    )]
    Corrupt { key: String, reason: String },
    #[error("the log spool {path} cannot be written or read: {source}")]
    Spool { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Format(#[from] crate::version::FormatError),
    #[error(
        "the store {0} holds a restore that did not finish; run the same `userdrop restore` again (it starts over), or remove the folder"
    )]
    RestoreUnfinished(PathBuf),
    #[error(
        "the store {0} is not empty: a backup is restored into an empty store only; give restore another --db, or remove this store first if it is a copy you no longer need"
    )]
    NotEmpty(PathBuf),
    #[error("cannot make the store {path} durable (fsync): {source}")]
    Durable { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Pg(PgError),
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        match e {
            // One unreadable record is one user's problem (code 3), on either engine.
            PgError::Corrupt { key, reason } => StoreError::Corrupt { key, reason },
            e => StoreError::Pg(e),
        }
    }
}

impl StoreError {
    /// The store could not be reached for a while (a PostgreSQL connection lost):
    /// the file in hand is cut short, and is taken again once the store is back.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Pg(PgError::Lost { .. } | PgError::Connect { .. })
        )
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

fn sled_hint(e: &sled::Error) -> &'static str {
    match e {
        sled::Error::Io(io) => version::owner_hint(io),
        _ => "",
    }
}

/// Makes the entry of `path` in its folder durable (a file created, renamed or
/// removed there): an fsync of the folder, `.` for a bare name.
pub fn sync_folder_of(path: &Path) -> io::Result<()> {
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::File::open(folder)?.sync_all()
}

/// How the store is opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The PostgreSQL store (`--store`), or `None` for sled in the folder given.
    pub postgres: Option<Postgres>,
    /// sled's page cache; its own default of 1 GiB is too much for a small server.
    pub cache_bytes: u64,
    /// Open a store that holds an unfinished restore: only `restore` does, to start
    /// it over.
    pub restoring: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            postgres: None,
            cache_bytes: 64 * 1024 * 1024,
            restoring: false,
        }
    }
}

/// A PostgreSQL store, and who this process is on it.
#[derive(Clone, Debug)]
pub struct Postgres {
    /// A `postgres://` URL or a `key=value` connection string.
    pub url: String,
    /// The name this host's requests are known by (`--instance`).
    pub instance: String,
    /// Whether this process applies files (`run`, `import`): it creates the schema
    /// and holds the instance. Read commands and the administrator's commands do not.
    pub writer: bool,
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
    /// The request file this progress is of, as it was when its first step began.
    #[serde(default)]
    pub identity: Option<Identity>,
    /// How the file's users are judged: the rest of it keeps the mode its first steps
    /// had. Progress written before `--types` existed was strict.
    #[serde(default)]
    pub types: Types,
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
    /// The request file that was applied: its response is written only beside that
    /// file, never beside another one uploaded under the same name since (SPEC §2).
    #[serde(default)]
    pub identity: Option<Identity>,
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

/// One thing a snapshot of the store holds (see [`Store::snapshot`]).
pub enum Item<'a> {
    User(&'a StoredUser),
    /// A file's history, and on a shared store the instance it belongs to.
    File(&'a FileRecord, Option<&'a str>),
    Totals(&'a Totals),
}

/// What every file ever processed on this store adds up to: counters that only rise
/// (SPEC §7), however often a request name is used. Updated in the batch of each file's
/// last step, so a file counts exactly once, also across crashes and replays.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Files by status: OK, WARNING, ERROR.
    pub files: [u64; 3],
    pub users_applied: u64,
    pub users_rejected: u64,
    /// When the last file that applied users (`OK` or `WARNING`) was finished.
    pub last_success: Option<DateTime<Utc>>,
    /// When the last file of any status was finished.
    pub last_file: Option<DateTime<Utc>>,
}

impl Totals {
    /// Adds one processed file.
    pub fn add(&mut self, record: &FileRecord) {
        let slot = match record.status {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Error => 2,
        };
        self.files[slot] += 1;
        self.users_applied += record.counts.applied();
        self.users_rejected += record.counts.rejected;
        self.last_file = self.last_file.max(Some(record.finished_at));
        if record.status != Status::Error {
            self.last_success = self.last_success.max(Some(record.finished_at));
        }
    }
}

/// A step ends at `--step-users` valid users, or at this many times as many users
/// judged, whichever comes first; the sled engine holds write-light steps back on the
/// same bound ([`Step::hold_below`]). Every durable step costs a flush (two fsyncs),
/// which on a busy disk took 20 to 100 ms each (issue 13): an unchanged nightly
/// re-import paid a thousand of them for steps that wrote nothing but their progress.
/// A step of unchanged users is bounded all the same (its log lines, some 100 bytes
/// each, a few MB), and redoing one after a crash writes nothing.
pub const JUDGED_PER_STEP: usize = 64;

/// A history record read from a backup, and the instance it was kept for.
pub struct Restored {
    pub record: FileRecord,
    pub instance: Option<String>,
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
    /// The engine may hold a step that is not the last one back, uncommitted, while
    /// the users it holds to write stay below this many (and their log below 64
    /// times as many): steps that write little (an unchanged nightly export) then
    /// share one commit and one flush. A crash loses only held steps, which the file
    /// redoes as it resumes. 0 never holds.
    pub hold_below: usize,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        key: "(encoding)".into(),
        reason: e.to_string(),
    })
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(k: &[u8], bytes: &'a [u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(k).into_owned(),
        reason: e.to_string(),
    })
}

/// The hash a user record carries, on either engine: xxh3-128 of the data's JSON. A
/// caller compares it with the hash of the merged data to know "unchanged" without
/// decoding the stored record.
pub fn data_hash(data: &UserData) -> Result<u128> {
    Ok(xxhash_rust::xxh3::xxh3_128(&encode(data)?))
}

/// The store, on one engine or the other. Cheap to clone: clones share one open
/// database or connection.
#[derive(Clone)]
pub enum Store {
    Sled(SledStore),
    Pg(PgBacked),
}

/// A PostgreSQL store and the local folder of this host's private copies.
#[derive(Clone)]
pub struct PgBacked {
    pg: PgStore,
    spool: Arc<Spool>,
}

/// The stored users of a step, as the engine hands them to the merge.
pub enum Lookup<'a> {
    Sled(&'a SledStore),
    Pg(&'a pg::Locked),
}

impl<'a> Lookup<'a> {
    /// The stored record of `email`, if any.
    pub fn get(&self, email: &Email) -> Result<Option<Stored<'a>>> {
        match self {
            Lookup::Sled(s) => Ok(s.user_raw(email)?.map(Stored::Sled)),
            Lookup::Pg(locked) => Ok(locked.get(email).map(Stored::Pg)),
        }
    }
}

/// A stored user record, decoded only when needed.
pub enum Stored<'a> {
    Sled(embedded::RawUser),
    Pg(&'a pg::RawStored),
}

impl Stored<'_> {
    /// The hash of its data fields ([`data_hash`]), for records that carry one.
    pub fn data_hash(&self) -> Option<u128> {
        match self {
            Stored::Sled(raw) => raw.data_hash(),
            Stored::Pg(raw) => raw.data_hash(),
        }
    }

    pub fn decode(&self) -> Result<StoredUser> {
        match self {
            Stored::Sled(raw) => raw.decode(),
            Stored::Pg(raw) => Ok(raw.decode()?),
        }
    }
}

/// A PostgreSQL error made the closure's: what [`PgStore::commit_with`] needs.
enum Through<E> {
    Build(E),
    Pg(PgError),
}

impl<E> From<PgError> for Through<E> {
    fn from(e: PgError) -> Self {
        Through::Pg(e)
    }
}

impl Store {
    /// Opens the store: sled in `dir` (created if needed; fails at once with
    /// [`StoreError::Locked`] when another process holds it), or the PostgreSQL
    /// store of `options`, with `dir` as this host's folder of private copies.
    pub fn open(dir: &Path, options: &StoreOptions) -> Result<Store> {
        let Some(postgres) = &options.postgres else {
            return SledStore::open(dir, options).map(Store::Sled);
        };
        let mut pg_options = if postgres.writer {
            PgOptions::writer(&postgres.instance)
        } else {
            PgOptions::reader(&postgres.instance)
        };
        pg_options.restoring = options.restoring;
        // `restore` goes into an empty store, and an empty database is one: it
        // creates the schema as a writer would (it takes no instance lock).
        pg_options.create |= options.restoring;
        let pg = PgStore::open(&postgres.url, pg_options)?;
        let spool = if postgres.writer {
            // Per instance: two daemons of one host may share a --db folder, and each
            // removes the copies its own records no longer count on.
            let spool_dir = dir.join("spool").join(instance_folder(&postgres.instance));
            fs::create_dir_all(&spool_dir).map_err(|e| StoreError::Spool {
                path: spool_dir.clone(),
                source: e,
            })?;
            // The folder and its spool folders (this instance's among them) 0700.
            embedded::restrict_permissions(dir);
            let spool = Spool::made(spool_dir);
            let mut live = pg.interrupted()?;
            live.extend(pg.outbox()?.into_iter().map(|r| r.path));
            spool.remove_orphans(live);
            spool
        } else {
            // Readers make no copies; a backup's scratch file goes to the temp folder.
            Spool::new(std::env::temp_dir())
        };
        Ok(Store::Pg(PgBacked {
            pg,
            spool: Arc::new(spool),
        }))
    }

    /// An empty store in memory, gone when dropped: what `check` judges against when
    /// there is no store yet, so that it never creates one (SPEC §6).
    pub fn scratch() -> Result<Store> {
        SledStore::scratch().map(Store::Sled)
    }

    /// Whether this store is shared with other hosts' daemons (PostgreSQL): read
    /// commands reach it directly, never through a local daemon's socket.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Pg(_))
    }

    pub fn user(&self, email: &Email) -> Result<Option<StoredUser>> {
        match self {
            Store::Sled(s) => s.user(email),
            Store::Pg(p) => Ok(p.pg.user(email)?),
        }
    }

    /// Every user, sorted by email (bytewise).
    pub fn users(&self) -> Box<dyn Iterator<Item = Result<StoredUser>> + '_> {
        match self {
            Store::Sled(s) => Box::new(s.users()),
            Store::Pg(p) => Box::new(p.pg.users().map(|r| r.map_err(StoreError::from))),
        }
    }

    pub fn user_count(&self) -> Result<u64> {
        match self {
            Store::Sled(s) => s.user_count(),
            Store::Pg(p) => Ok(p.pg.user_count()?),
        }
    }

    pub fn progress(&self, path: &Path) -> Result<Option<Progress>> {
        match self {
            Store::Sled(s) => s.progress(path),
            Store::Pg(p) => Ok(p.pg.progress(path)?),
        }
    }

    /// Forgets a file's partial progress (its content changed): it starts over.
    pub fn discard_progress(&self, path: &Path) -> Result<()> {
        match self {
            Store::Sled(s) => s.discard_progress(path),
            Store::Pg(p) => {
                p.pg.discard_progress(path)?;
                p.spool.retire(path);
                Ok(())
            }
        }
    }

    /// Forgets the progress of files that were cut short and have since been
    /// removed. Durable on return.
    pub fn forget_vanished(&self) -> Result<Vec<PathBuf>> {
        match self {
            Store::Sled(s) => s.forget_vanished(),
            Store::Pg(p) => {
                let gone = p.pg.forget_vanished()?;
                for path in &gone {
                    p.spool.retire(path);
                }
                self.flush()?;
                Ok(gone)
            }
        }
    }

    /// Commits one step as it is, without reading stored users: a step that writes
    /// none (a file rejected whole).
    pub fn commit(&self, step: Step<'_>) -> Result<u64> {
        match self {
            Store::Sled(s) => s.commit(step),
            Store::Pg(p) => {
                p.spool.sync()?;
                Ok(p.pg.commit(step)?)
            }
        }
    }

    /// Commits one step of a file: hands the stored records of `emails` to `build`,
    /// which merges and returns the step (writing only users among `emails`), and
    /// commits it atomically with the file's progress. On PostgreSQL the records are
    /// locked until the commit, and `build` may run again when another daemon got in
    /// first, so it must build from its inputs each time. Durable at the next
    /// [`Store::flush`]. Returns the file's committed log length.
    pub fn commit_with<'p, E: From<StoreError>>(
        &self,
        emails: &[Email],
        mut build: impl FnMut(&Lookup<'_>) -> std::result::Result<Step<'p>, E>,
    ) -> std::result::Result<u64, E> {
        match self {
            Store::Sled(s) => {
                let step = build(&Lookup::Sled(s))?;
                Ok(s.commit(step)?)
            }
            Store::Pg(p) => {
                // The copy a step counts on is on disk before the step is.
                p.spool.sync()?;
                p.pg.commit_with(emails, |locked| {
                    build(&Lookup::Pg(locked)).map_err(Through::Build)
                })
                .map_err(|e| match e {
                    Through::Build(e) => e,
                    Through::Pg(e) => E::from(StoreError::from(e)),
                })
            }
        }
    }

    /// Hands the stored records of `emails` to `read`, locking nothing and writing
    /// nothing: what `check` judges a step against.
    pub fn peek_with<T>(&self, emails: &[Email], read: impl FnOnce(&Lookup<'_>) -> T) -> Result<T> {
        match self {
            Store::Sled(s) => Ok(read(&Lookup::Sled(s))),
            Store::Pg(p) => Ok(read(&Lookup::Pg(&p.pg.peek(emails)?))),
        }
    }

    /// Makes everything committed so far durable: on stable storage, as after a power
    /// cut (SPEC §2).
    pub fn flush(&self) -> Result<()> {
        match self {
            Store::Sled(s) => s.flush(),
            Store::Pg(p) => {
                // Copies before the commits that count on them are made durable; files
                // no record counts on any more only after.
                p.spool.sync()?;
                p.pg.flush()?;
                p.spool.remove_retired(p.spool.take_retired());
                Ok(())
            }
        }
    }

    fn spool(&self) -> &Spool {
        match self {
            Store::Sled(s) => s.spool(),
            Store::Pg(p) => &p.spool,
        }
    }

    /// A new private copy of `request`, empty, for a file applied in several steps:
    /// its steps are applied from it, and a file cut short is finished from it, so
    /// that what the uploader does to the request meanwhile cannot change what is
    /// applied (SPEC §2). Synced before any step that counts on it is durable.
    pub fn new_copy(&self, request: &Path) -> Result<fs::File> {
        self.spool().new_copy(request)
    }

    /// The private copy of `request` is no longer needed (the file was rejected, or is
    /// taken again from its start): it goes after the next flush.
    pub fn discard_copy(&self, request: &Path) {
        self.spool().discard_copy(request)
    }

    /// The private copy of `request`, if one was made.
    pub fn open_copy(&self, request: &Path) -> Result<Option<fs::File>> {
        self.spool().open_copy(request)
    }

    /// A file in the store's private folder that no other process can open, gone when
    /// closed: room for an answer too big for memory (a backup served to a client).
    pub fn scratch_file(&self) -> io::Result<fs::File> {
        self.spool().scratch_file()
    }

    /// The requests (of this instance) cut short mid-way: their progress is stored.
    pub fn interrupted(&self) -> Result<Vec<PathBuf>> {
        match self {
            Store::Sled(s) => s.interrupted(),
            Store::Pg(p) => Ok(p.pg.interrupted()?),
        }
    }

    /// Files whose response is due: committed, but not yet known to be on disk.
    pub fn outbox(&self) -> Result<Vec<FileRecord>> {
        match self {
            Store::Sled(s) => s.outbox(),
            Store::Pg(p) => Ok(p.pg.outbox()?),
        }
    }

    pub fn outbox_entry(&self, path: &Path) -> Result<Option<FileRecord>> {
        match self {
            Store::Sled(s) => s.outbox_entry(path),
            Store::Pg(p) => Ok(p.pg.outbox_entry(path)?),
        }
    }

    /// The log entries of a file in the outbox, in chunks, in request order.
    pub fn log_chunks(
        &self,
        record: &FileRecord,
    ) -> Box<dyn Iterator<Item = Result<Vec<Vec<Message>>>> + '_> {
        match self {
            Store::Sled(s) => s.log_chunks(record),
            Store::Pg(p) => Box::new(p.pg.log_chunks(record).map(|r| r.map_err(StoreError::from))),
        }
    }

    /// The responses of `paths` are durably on disk: drop their outbox entries and
    /// logs.
    pub fn clear_outboxes<'p>(&self, paths: impl IntoIterator<Item = &'p Path>) -> Result<()> {
        match self {
            Store::Sled(s) => s.clear_outboxes(paths),
            Store::Pg(p) => {
                let paths: Vec<&Path> = paths.into_iter().collect();
                p.pg.clear_outboxes(paths.iter().copied())?;
                for path in paths {
                    p.spool.retire(path);
                }
                Ok(())
            }
        }
    }

    /// The running totals of every file processed on this store.
    pub fn totals(&self) -> Result<Totals> {
        match self {
            Store::Sled(s) => s.totals(),
            Store::Pg(p) => Ok(p.pg.totals()?),
        }
    }

    /// Erases these users (the right to erasure); returns those that were stored.
    /// Durable on return.
    pub fn delete(&self, emails: &[Email]) -> Result<Vec<Email>> {
        match self {
            Store::Sled(s) => s.delete(emails),
            Store::Pg(p) => Ok(p.pg.delete(emails)?),
        }
    }

    /// Hands every user (by email), every file's history and the totals to `each`,
    /// all of one moment.
    pub fn snapshot<E: From<StoreError>>(
        &self,
        mut each: impl FnMut(Item<'_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        match self {
            Store::Sled(s) => s.snapshot(each),
            Store::Pg(p) => {
                p.pg.snapshot(|item| each(item).map_err(Through::Build))
                    .map_err(|e| match e {
                        Through::Build(e) => e,
                        Through::Pg(e) => E::from(StoreError::from(e)),
                    })
            }
        }
    }

    /// Marks the store as being restored into: it must hold nothing, or a restore
    /// that did not finish, which is cleared to start over. Durable on return.
    pub fn begin_restore(&self, dir: &Path) -> Result<()> {
        match self {
            Store::Sled(s) => s.begin_restore(dir),
            Store::Pg(p) => Ok(p.pg.begin_restore()?),
        }
    }

    /// Writes restored users and history records, as they are. A record's instance
    /// places it on PostgreSQL (none: the restoring instance); sled keeps history by
    /// path alone, so of two instances' records for one path the later stays.
    pub fn restore_batch(&self, users: &[StoredUser], files: &[Restored]) -> Result<()> {
        match self {
            Store::Sled(s) => {
                let files: Vec<&FileRecord> = files.iter().map(|r| &r.record).collect();
                s.restore_batch(users, &files)
            }
            Store::Pg(p) => Ok(p.pg.restore_batch(users, files)?),
        }
    }

    /// Ends a restore, durably.
    pub fn finish_restore(&self, totals: &Totals) -> Result<()> {
        match self {
            Store::Sled(s) => s.finish_restore(totals),
            Store::Pg(p) => Ok(p.pg.finish_restore(totals)?),
        }
    }

    /// The last outcome of every file processed, by path.
    pub fn files(&self) -> Box<dyn Iterator<Item = Result<FileRecord>> + '_> {
        match self {
            Store::Sled(s) => Box::new(s.files()),
            Store::Pg(p) => match p.pg.files() {
                Ok(files) => Box::new(files.into_iter().map(Ok)),
                Err(e) => Box::new(std::iter::once(Err(e.into()))),
            },
        }
    }
}

/// An instance's folder name: its name, with anything but letters, digits, `-` and
/// `_` replaced, and a hash of the exact name so that two names never share one.
fn instance_folder(instance: &str) -> String {
    let plain: String = instance
        .chars()
        .take(64)
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    let hash = xxhash_rust::xxh3::xxh3_64(instance.as_bytes());
    format!("pg-{plain}-{:08x}", hash as u32)
}
