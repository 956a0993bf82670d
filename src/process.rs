//! One request file through the whole pipeline: read, parse, authorise, validate,
//! apply in bounded steps, flush, respond. Both `import` and the daemon call
//! [`apply_file`]; `check` calls [`check_file`], which shares every rule but writes
//! nothing.
//!
//! The order of durable effects is what makes a crash at any moment safe:
//! 1. each step commits its users, its log and the file's progress in one batch,
//!    and is flushed;
//! 2. the last step also puts the file's outcome in the outbox;
//! 3. the store is flushed, and only then is the response written (atomically);
//! 4. only then is the outbox entry cleared.
//!
//! A crash before 3 leaves progress (the file resumes) or an outbox entry (the
//! response is written from it); a crash after 3 rewrites the same response.

use crate::inbox::{self, Folder};
use crate::messages::{Lang, Message};
use crate::model::{Email, Identity, Meta, Status, StoredUser};
use crate::request::{self, Halt, Stop, Token, Unread};
use crate::response;
use crate::store::{self, Counts, FileRecord, Progress, Step, Store, StoreError};
use crate::validate::{Types, Validator, Verdict};
use chrono::Utc;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The tokens a request must carry, if any. Never printed.
#[derive(Clone, Default)]
pub struct Auth {
    tokens: Vec<String>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Auth({} token(s))", self.tokens.len())
    }
}

impl Auth {
    pub fn new(tokens: impl IntoIterator<Item = String>) -> Auth {
        Auth {
            tokens: tokens
                .into_iter()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
                .collect(),
        }
    }

    /// Whether requests must carry a token at all.
    pub fn is_on(&self) -> bool {
        !self.tokens.is_empty()
    }

    fn check(&self, token: &Token) -> Result<(), Message> {
        if !self.is_on() {
            return Ok(());
        }
        let given = match token {
            Token::Absent => return Err(Message::TokenMissing),
            Token::NotText => return Err(Message::TokenRejected),
            Token::Text(t) => t.as_bytes(),
        };
        // Every configured token is compared in full, so timing tells nothing about
        // which one came close.
        let accepted = self
            .tokens
            .iter()
            .fold(false, |found, t| found | same_bytes(t.as_bytes(), given));
        if accepted {
            Ok(())
        } else {
            Err(Message::TokenRejected)
        }
    }
}

/// Constant-time equality for equal lengths; a length mismatch is told at once.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// What processing a file needs to know.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Files larger than this are rejected without being read.
    pub max_file_size: u64,
    /// Users per atomic step: bounds memory and the work a crash can lose.
    pub step_users: usize,
    pub auth: Auth,
    pub lang: Lang,
    /// How field types are read; a file cut short keeps the mode it began under.
    pub types: Types,
    /// Set by a stop signal: a file in hand stops after the step being committed and
    /// resumes at the next start.
    pub stop: Option<Arc<AtomicBool>>,
    /// Told after each step how far the file in hand is (`import`'s progress bar).
    pub meter: Option<Arc<dyn Meter>>,
}

/// Watches a file's progress, step by step.
pub trait Meter: fmt::Debug + Send + Sync {
    /// `done` of the file's `total` users are judged (and, when applying, committed).
    fn advance(&self, done: u64, total: u64);
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_file_size: 512 * 1024 * 1024,
            step_users: 1_000,
            auth: Auth::default(),
            lang: Lang::En,
            types: Types::Strict,
            stop: None,
            meter: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write the response {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stopped by a signal; the file resumes at the next start")]
    Interrupted,
    #[error("{path} changed while it was being applied; nothing of the changed text was committed")]
    Changed { path: PathBuf },
    #[error("{path} is not a regular file (a link, folder, FIFO or device is never read)")]
    NotRegular { path: PathBuf },
    #[error(
        "{path} was replaced while it was applied; its response is not written, and a run on it now takes it as new"
    )]
    Replaced { path: PathBuf },
    /// `check` through the daemon that holds the store (see `control`) did not get an
    /// answer: what went wrong, in the daemon's words or the exchange's.
    #[error("{0}")]
    Daemon(String),
}

/// A request: the folder it is in (held open), its name there, and the key the store
/// knows it by. It is only ever opened through the folder (see `inbox`).
pub struct Request<'f> {
    /// None only when finishing a file cut short whose folder is gone: it is finished
    /// from its private copy, and its request is never opened.
    pub folder: Option<&'f Folder>,
    pub name: OsString,
    /// The folder's canonical path and the name: the key of its progress, outbox and
    /// history.
    pub path: PathBuf,
}

impl<'f> Request<'f> {
    pub fn new(folder: &'f Folder, name: &OsStr) -> Request<'f> {
        Request {
            folder: Some(folder),
            name: name.to_owned(),
            path: folder.join(name),
        }
    }
}

/// What became of a file taken from the inbox.
#[derive(Debug)]
// Short-lived, one at a time: boxing the record would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Taken {
    /// Judged (or found already judged) and committed; its response is due from
    /// [`deliver_all`].
    Ready(FileRecord),
    /// Not a complete JSON text yet, and the caller asked to wait for those.
    Incomplete,
}

/// What became of a response that was due.
#[derive(Debug)]
pub enum Delivery {
    /// Written beside its request, durably.
    Written,
    /// Not written: the request beside it is gone, or is another file than the one
    /// that was applied (SPEC §2). The outbox entry is dropped; a new request there is
    /// taken as new.
    Stale,
    /// Not written now (no space, permission, an object at its name); the outbox
    /// entry stays, and the next attempt writes it.
    Failed(Error),
}

/// The result of checking a file without applying it.
pub struct Checked {
    pub record: FileRecord,
    pub log: Vec<Vec<Message>>,
}

/// Applies the request at `request` to the store and writes its response beside it.
/// A file whose earlier run was cut short is finished, not applied again: its outbox
/// entry is delivered, or its progress resumed.
pub fn apply_file(store: &Store, request: &Path, settings: &Settings) -> Result<FileRecord, Error> {
    let (folder, name) = open_named(request)?;
    let request = Request::new(&folder, &name);
    // Twice at most: a file cut short and since replaced is first finished from its
    // copy (its response is not written: the request is another file now), then the
    // request there now is applied as new.
    for _ in 0..2 {
        let record = match take_file(store, &request, settings, false)? {
            Taken::Ready(record) => record,
            Taken::Incomplete => unreachable!("take_file defers only when asked to"),
        };
        let delivered = deliver_all(
            store,
            std::slice::from_ref(&record),
            settings.lang,
            Verify::Identity,
        )?;
        match delivered.into_iter().next() {
            Some(Delivery::Failed(e)) => return Err(e),
            Some(Delivery::Stale) => continue,
            _ => return Ok(record),
        }
    }
    Err(Error::Replaced { path: request.path })
}

/// The folder and name of a request named on the command line. The administrator's
/// own links in the folder's path are followed; the request itself is then opened
/// like any in the inbox, never through a link: `import /srv/inbox/*.json` must not
/// read a file an uploader linked there, nor write a response beside it.
fn open_named(request: &Path) -> Result<(Folder, OsString), Error> {
    inbox::open_parent(request).map_err(|source| Error::Read {
        path: request.to_path_buf(),
        source,
    })
}

/// The key the store knows the request at `path` (as given on the command line) by:
/// its folder's canonical path and its name.
pub fn request_key(path: &Path) -> Option<PathBuf> {
    open_named(path)
        .ok()
        .map(|(folder, name)| folder.join(&name))
}

/// Judges `request` and commits it, up to its outbox entry, without flushing or
/// writing its response: [`deliver_all`] does that for a group of files at once
/// (group commit), which is what makes many small files fast. With
/// `defer_incomplete`, a file that is not yet a complete JSON text (an upload in
/// progress) is left alone and reported [`Taken::Incomplete`].
pub fn take_file(
    store: &Store,
    request: &Request<'_>,
    settings: &Settings,
    defer_incomplete: bool,
) -> Result<Taken, Error> {
    if let Some(record) = store.outbox_entry(&request.path)? {
        return Ok(Taken::Ready(record));
    }
    let defer = defer_incomplete.then_some(Defer);
    match judge(store, request, settings, Mode::Apply, defer) {
        Ok(Some(checked)) => Ok(Taken::Ready(checked.record)),
        Ok(None) => Ok(Taken::Incomplete),
        Err(e) => {
            // Taken again from its start: the copy of the text that changed is dead.
            if matches!(e, Error::Changed { .. }) && store.progress(&request.path)?.is_none() {
                store.discard_copy(&request.path);
            }
            Err(e)
        }
    }
}

/// How sure [`deliver_all`] makes that the request beside a response is the one
/// that was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Its identity (device, inode, size, modification time): enough within one run.
    Identity,
    /// Its size and its content's hash: after a crash, when the time since is unknown
    /// and the device may have been renumbered. The same content uploaded again under
    /// the same name gets the response of the first upload, which describes it.
    SizeAndHash,
}

/// Makes the committed files durable with one flush, then writes the response of
/// each whose request is still the one applied (each synced, one sync per folder),
/// then clears the outbox entries of those written or stale. Returns one
/// [`Delivery`] per record, in order; `Err` only when the store cannot be flushed.
pub fn deliver_all(
    store: &Store,
    records: &[FileRecord],
    lang: Lang,
    verify: Verify,
) -> Result<Vec<Delivery>, Error> {
    if records.is_empty() {
        return Ok(Vec::new());
    }
    store.flush()?;
    fault_point("after-outbox");
    let mut outcomes: Vec<Option<Delivery>> = records.iter().map(|_| None).collect();
    let mut folders: Vec<&Path> = Vec::new();
    for record in records {
        let dir = record.path.parent().unwrap_or(Path::new("/"));
        if !folders.contains(&dir) {
            folders.push(dir);
        }
    }
    for dir in folders {
        let members: Vec<usize> = (0..records.len())
            .filter(|&i| records[i].path.parent().unwrap_or(Path::new("/")) == dir)
            .collect();
        match Folder::open(dir) {
            Ok(folder) => {
                let delivered = deliver_in(
                    store,
                    &folder,
                    members.iter().map(|&i| &records[i]),
                    lang,
                    verify,
                );
                for (i, outcome) in members.into_iter().zip(delivered) {
                    outcomes[i] = Some(outcome);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                for i in members {
                    outcomes[i] = Some(Delivery::Stale);
                }
            }
            Err(e) => {
                for i in members {
                    outcomes[i] = Some(Delivery::Failed(Error::Write {
                        path: inbox::response_path(&records[i].path),
                        source: io::Error::new(e.kind(), e.to_string()),
                    }));
                }
            }
        }
    }
    let outcomes: Vec<Delivery> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Delivery::Stale))
        .collect();
    for (record, outcome) in records.iter().zip(&outcomes) {
        if matches!(outcome, Delivery::Stale) {
            tracing::info!(
                file = %record.path.display(),
                "the request was removed or replaced since it was applied: its response is not written, and a request there now is taken as new"
            );
        }
    }
    let settled = records
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| !matches!(o, Delivery::Failed(_)))
        .map(|(r, _)| r.path.as_path());
    store.clear_outboxes(settled)?;
    Ok(outcomes)
}

/// Writes the responses of `records`, all requests of `folder`.
fn deliver_in<'r>(
    store: &Store,
    folder: &Folder,
    records: impl Iterator<Item = &'r FileRecord>,
    lang: Lang,
    verify: Verify,
) -> Vec<Delivery> {
    let records: Vec<&FileRecord> = records.collect();
    // A few files: an fsync each, which leaves other writers on the disk alone. A
    // big group: one syncfs for all of them, where the file system is trusted with it.
    let sync = if records.len() >= SYNCFS_FROM {
        response::Sync::Later
    } else {
        response::Sync::EachFile
    };
    let mut outcomes: Vec<Option<Delivery>> = Vec::with_capacity(records.len());
    let mut staged = Vec::new();
    let mut staged_at = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let name = record.path.file_name().unwrap_or_default();
        let target = inbox::response_name(name);
        let write_error = |source| {
            Delivery::Failed(Error::Write {
                path: folder.join(&target),
                source,
            })
        };
        match belongs(folder, name, record, verify) {
            Ok(true) => {}
            Ok(false) => {
                outcomes.push(Some(Delivery::Stale));
                continue;
            }
            Err(e) => {
                outcomes.push(Some(write_error(e)));
                continue;
            }
        }
        let log = store
            .log_chunks(record)
            .map(|chunk| chunk.map_err(io::Error::other));
        match response::stage(folder, &target, sync, |out| {
            response::write_json(out, record.status, record.message.as_ref(), log, lang)
        }) {
            Ok(s) => {
                staged.push(s);
                staged_at.push(i);
                outcomes.push(None);
            }
            Err(e) => outcomes.push(Some(write_error(e))),
        }
    }
    for (i, result) in staged_at.into_iter().zip(response::publish(folder, staged)) {
        let name = records[i].path.file_name().unwrap_or_default();
        outcomes[i] = Some(match result {
            Ok(()) => Delivery::Written,
            Err(source) => Delivery::Failed(Error::Write {
                path: folder.join(&inbox::response_name(name)),
                source,
            }),
        });
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Delivery::Stale))
        .collect()
}

/// Whether the request at `name` is still the file `record` was made from.
fn belongs(folder: &Folder, name: &OsStr, record: &FileRecord, verify: Verify) -> io::Result<bool> {
    let look = match folder.look(name) {
        Ok(look) => look,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if look.kind != inbox::Kind::File {
        return Ok(false);
    }
    // Records of earlier versions carry no identity: a regular file there is enough.
    let Some(identity) = record.identity else {
        return Ok(true);
    };
    match verify {
        Verify::Identity => return Ok(look.identity == identity),
        // After a crash the device and inode numbers may have been renumbered (a
        // reboot, a FUSE remount) and the modification time moved (a FUSE file
        // system's write-back): the size and the content decide.
        Verify::SizeAndHash if look.identity.size != identity.size => return Ok(false),
        Verify::SizeAndHash if record.hash.is_empty() => return Ok(true),
        Verify::SizeAndHash => {}
    }
    let Some(opened) = folder.open_request(name)? else {
        return Ok(false);
    };
    let mut source = request::Source::new(&opened.file, u64::MAX).hashing();
    match io::copy(&mut source, &mut io::sink()) {
        // Not UTF-8 any more: certainly not the text that was applied.
        Err(_) if source.is_bad() => Ok(false),
        Err(e) => Err(e),
        Ok(_) => Ok(source.hash() == record.hash),
    }
}

/// Judges `request` against the store as [`apply_file`] would, changing nothing.
pub fn check_file(store: &Store, request: &Path, settings: &Settings) -> Result<Checked, Error> {
    let (folder, name) = open_named(request)?;
    let request = Request::new(&folder, &name);
    judge(store, &request, settings, Mode::Check, None)?
        .ok_or(Error::Changed { path: request.path })
}

/// The request at `request` opened as [`check_file`] opens it, with the same errors,
/// and its size: for a `check` that sends the file to the daemon holding the store.
pub fn open_to_check(request: &Path) -> Result<(fs::File, u64), Error> {
    let (folder, name) = open_named(request)?;
    let path = folder.join(&name);
    let opened = folder
        .open_request(&name)
        .map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?
        .ok_or(Error::NotRegular { path })?;
    Ok((opened.file, opened.identity.size))
}

/// Writes the response of every file left in the outbox by an interrupted run, but
/// for the requests in `except`, which the caller is about to finish itself (an
/// `import` re-run must deliver, not re-apply, the file it names). A response that
/// cannot be written is logged and stays due: it never stops the start.
pub fn replay_outbox(store: &Store, lang: Lang, except: &[PathBuf]) -> Result<usize, Error> {
    let pending: Vec<FileRecord> = store
        .outbox()?
        .into_iter()
        .filter(|r| !except.contains(&r.path))
        .collect();
    let delivered = deliver_all(store, &pending, lang, Verify::SizeAndHash)?;
    for (record, outcome) in pending.iter().zip(&delivered) {
        if let Delivery::Failed(e) = outcome {
            tracing::error!(file = %record.path.display(), "{e}; it is tried again at the next rescan");
        }
    }
    Ok(pending.len())
}

/// Finishes every file a stop or a crash cut short, from its private copy, whatever
/// became of its request since; its response is written only if the request beside it
/// is still the same file. Files cut short by an earlier version have no copy: they
/// resume when their request is taken again, as before.
pub fn finish_interrupted(
    store: &Store,
    settings: &Settings,
    except: &[PathBuf],
) -> Result<usize, Error> {
    let mut finished = Vec::new();
    for path in store.interrupted()? {
        if except.contains(&path) || store.open_copy(&path)?.is_none() {
            continue;
        }
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            continue;
        };
        // The folder may be gone: the copy is all that is needed.
        let folder = Folder::open(dir).ok();
        let request = Request {
            folder: folder.as_ref(),
            name: name.to_owned(),
            path: path.clone(),
        };
        match judge(store, &request, settings, Mode::Apply, None) {
            Ok(Some(checked)) => finished.push(checked.record),
            Ok(None) => {}
            // A stop: the file resumes at the next start, like any file cut short.
            Err(Error::Interrupted) => break,
            Err(e) => return Err(e),
        }
    }
    let delivered = deliver_all(store, &finished, settings.lang, Verify::SizeAndHash)?;
    for (record, outcome) in finished.iter().zip(&delivered) {
        if let Delivery::Failed(e) = outcome {
            tracing::error!(file = %record.path.display(), "{e}; it is tried again at the next rescan");
        }
    }
    Ok(finished.len())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Apply,
    Check,
}

/// From this many files in a group, their responses' data is synced with one
/// `syncfs` instead of an fsync each.
const SYNCFS_FROM: usize = 8;

/// Verdicts handed from the reading thread to the applying one at a time.
const VERDICT_BATCH: usize = 512;

/// Asks [`judge`] to leave a file that is not a complete JSON text yet.
#[derive(Clone, Copy)]
struct Defer;

/// Files up to this size are copied into memory to be applied; larger ones into the
/// store's spool (a reflink where the file system can).
const MEMORY_COPY: u64 = 16 * 1024 * 1024;

/// What a file is read from, twice. Applying reads a private copy taken once, so that
/// the uploader, who may rewrite the request in place at any moment, cannot change
/// what is applied between the passes or between the steps (SPEC §2: `ERROR` never
/// with users applied); `check` reads the request's own descriptor.
enum Input {
    Memory(Vec<u8>),
    /// A copy in the store's spool, which a file cut short is finished from.
    Copy(fs::File),
    Direct(fs::File),
}

impl Input {
    fn reader(&self) -> io::Result<Box<dyn io::Read + Send + '_>> {
        Ok(match self {
            Input::Memory(bytes) => Box::new(&bytes[..]),
            Input::Copy(file) | Input::Direct(file) => {
                let mut file = file;
                file.seek(SeekFrom::Start(0))?;
                Box::new(file)
            }
        })
    }
}

/// The request's own descriptor and what it was when opened. While nothing of the
/// file is committed, a change to it means the uploader is still at work, and the
/// file is taken again as it is now; once a step is committed, the file is finished
/// from its copy.
struct Watched {
    file: fs::File,
    identity: Identity,
}

impl Watched {
    fn unchanged(&self, path: &Path) -> Result<(), Error> {
        let meta = self.file.metadata().map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if inbox::identity_of(&meta) == self.identity {
            Ok(())
        } else {
            Err(Error::Changed {
                path: path.to_path_buf(),
            })
        }
    }
}

/// A file opened to be judged.
struct Opening {
    input: Input,
    watched: Option<Watched>,
    identity: Option<Identity>,
    /// Its size when opened.
    size: u64,
}

/// Copies the request into memory or into the store (`Apply`), or keeps its
/// descriptor (`Check`).
fn take_private(
    store: &Store,
    path: &Path,
    file: &fs::File,
    size: u64,
    limit: u64,
    mode: Mode,
) -> Result<Input, Error> {
    let read_error = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    if mode == Mode::Check {
        return file.try_clone().map(Input::Direct).map_err(read_error);
    }
    // One byte past the limit is enough to tell that the file is too large.
    let bounded = || file.take(limit.saturating_add(1));
    if size <= MEMORY_COPY {
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        bounded().read_to_end(&mut bytes).map_err(read_error)?;
        return Ok(Input::Memory(bytes));
    }
    let mut copy = store.new_copy(path)?;
    // A reflink where the file systems allow it; else an in-kernel copy.
    if rustix::fs::ioctl_ficlone(&copy, file).is_err() {
        io::copy(&mut bounded(), &mut copy).map_err(read_error)?;
    }
    Ok(Input::Copy(copy))
}

/// Opens what `request` is judged from: the private copy of a file cut short, or the
/// request itself, copied. `Err(Ok(size))`: the request is too large to read.
fn open_input(
    store: &Store,
    request: &Request<'_>,
    prior: Option<&Progress>,
    settings: &Settings,
    mode: Mode,
) -> Result<Result<Opening, u64>, Error> {
    let path = &request.path;
    if let Some(progress) = prior
        && let Some(copy) = store.open_copy(path)?
    {
        let size = copy.metadata().map(|m| m.len()).unwrap_or(0);
        return Ok(Ok(Opening {
            input: Input::Copy(copy),
            watched: None,
            identity: progress.identity,
            size,
        }));
    }
    let not_found = || io::Error::new(io::ErrorKind::NotFound, "its folder is gone");
    let folder = request.folder.ok_or_else(|| Error::Read {
        path: path.clone(),
        source: not_found(),
    })?;
    let opened = folder
        .open_request(&request.name)
        .map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?
        .ok_or_else(|| Error::NotRegular { path: path.clone() })?;
    let size = opened.identity.size;
    if size > settings.max_file_size && prior.is_none() {
        return Ok(Err(size));
    }
    let limit = settings.max_file_size.max(size);
    let input = take_private(store, path, &opened.file, size, limit, mode)?;
    let watched = Watched {
        file: opened.file,
        identity: opened.identity,
    };
    // Changed while it was copied: the copy may hold two versions' bytes.
    if mode == Mode::Apply
        && let Err(e) = watched.unchanged(path)
    {
        store.discard_copy(path);
        return Err(e);
    }
    Ok(Ok(Opening {
        input,
        identity: Some(watched.identity),
        watched: Some(watched),
        size,
    }))
}

/// The shared core of apply and check. In `Apply` mode every step is committed and
/// the returned log is empty (it lives in the store); in `Check` mode nothing is
/// written and the log is returned. `None` only with `defer`: the file is incomplete.
///
/// The file is read twice, streamed both times, from its private copy (see
/// [`Input`]): first to check all of it (and hash it), then to apply its users.
fn judge(
    store: &Store,
    request: &Request<'_>,
    settings: &Settings,
    mode: Mode,
    defer: Option<Defer>,
) -> Result<Option<Checked>, Error> {
    let path = request.path.as_path();
    let read_error = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    // A file cut short was accepted under the settings of its first step: if it
    // resumes (same content), it is finished under them, whatever the size limit and
    // tokens are now. Rejecting it would leave its committed steps applied with an
    // ERROR response saying nothing was.
    let prior = match mode {
        Mode::Apply => store.progress(path)?,
        Mode::Check => None,
    };
    let too_large = |size: u64| Message::TooLarge {
        size,
        limit: settings.max_file_size,
    };
    let opening = match open_input(store, request, prior.as_ref(), settings, mode)? {
        Ok(opening) => opening,
        Err(size) => {
            let identity = request
                .folder
                .and_then(|f| f.look(&request.name).ok())
                .map(|l| l.identity);
            return reject(store, path, String::new(), identity, too_large(size), mode).map(Some);
        }
    };
    let Opening {
        input,
        watched,
        identity,
        size,
    } = opening;
    let timer = std::time::Instant::now();
    let limit = match prior {
        Some(_) => settings.max_file_size.max(size),
        None => settings.max_file_size,
    };
    let mapped = match &input {
        // A copy that cannot be mapped is read through the stream, as before.
        Input::Copy(copy) => request::Mapped::new(copy).ok().flatten(),
        Input::Memory(_) | Input::Direct(_) => None,
    };
    let release = |offset: usize| {
        if let Some(m) = &mapped {
            m.release(offset);
        }
    };
    let text = match (&input, &mapped) {
        (Input::Memory(bytes), _) => Some(request::Text {
            bytes,
            release: &release,
        }),
        (_, Some(m)) => Some(request::Text {
            bytes: m.bytes(),
            release: &release,
        }),
        _ => None,
    };
    let (checked, hash) = match text.as_ref().and_then(|t| request::envelope_in(t, limit)) {
        Some((envelope, hash)) => (Ok(envelope), hash),
        // A bad text (or one read from the request itself): the streaming reader, whose
        // messages say where and why.
        None => {
            let mut source =
                request::Source::new(input.reader().map_err(read_error)?, limit).hashing();
            let checked = request::envelope(&mut source);
            (checked, source.hash())
        }
    };
    tracing::debug!(file = %path.display(), ms = timer.elapsed().as_millis() as u64, "first pass (syntax, shape, hash) done");
    pause_point("after-first-pass");
    let envelope = match checked {
        Ok(envelope) => envelope,
        Err(Unread::Io(e)) => return Err(read_error(e)),
        Err(Unread::Bad(Message::NotUtf8 { .. } | Message::BadJson { .. })) if defer.is_some() => {
            store.discard_copy(path);
            return Ok(None);
        }
        Err(Unread::Bad(message)) => {
            return reject(store, path, hash, identity, message, mode).map(Some);
        }
    };
    // Whether any step of this file is committed: from then on it is finished from
    // its copy, whatever happens to the request.
    let mut committed = prior.is_some();
    let unchanged = |committed: bool| -> Result<(), Error> {
        match &watched {
            Some(w) if !committed && mode == Mode::Apply => w.unchanged(path),
            _ => Ok(()),
        }
    };
    unchanged(committed)?;
    let resumed = match prior {
        Some(p) if p.hash == hash => Some(p),
        Some(_) => {
            tracing::info!(file = %path.display(), "the file changed since it was cut short; starting it over");
            store.discard_progress(path)?;
            committed = false;
            None
        }
        None => None,
    };
    if resumed.is_none() {
        if size > settings.max_file_size {
            return reject(store, path, hash, identity, too_large(size), mode).map(Some);
        }
        if let Err(message) = settings.auth.check(&envelope.token) {
            return reject(store, path, hash, identity, message, mode).map(Some);
        }
    }

    let mut progress = match resumed {
        Some(p) => {
            tracing::info!(file = %path.display(), from = p.next_index, "resuming an interrupted file");
            p
        }
        None => Progress {
            hash: hash.clone(),
            next_index: 0,
            counts: Counts::default(),
            log_len: 0,
            identity,
            types: settings.types,
        },
    };
    let step_users = settings.step_users.max(1);
    let steps = envelope
        .users
        .saturating_sub(progress.next_index)
        .div_ceil(step_users as u64);
    // A file applied in several steps may be cut short after one: it must be
    // finishable from a durable copy.
    if mode == Mode::Apply
        && steps > 1
        && let Input::Memory(bytes) = &input
    {
        // Steps are still read from memory; the copy is for finishing it after a crash.
        let mut copy = store.new_copy(path)?;
        copy.write_all(bytes).map_err(read_error)?;
    }

    let source_file = request.name.to_string_lossy().into_owned();
    let now = Utc::now();
    let total = envelope.users;
    let start = progress.next_index;
    // The mode the file began under, not the one configured now: its response must
    // be the one it would have had without the interruption.
    let mut validator = Validator::for_users(total, progress.types);
    let mut checked_log = Vec::new();
    let mut failure = None;
    let mut done = None;

    let record = |progress: &Progress| FileRecord {
        path: path.to_path_buf(),
        hash: hash.clone(),
        status: if progress.counts.rejected > 0 {
            Status::Warning
        } else {
            Status::Ok
        },
        message: None,
        users: total,
        counts: progress.counts,
        finished_at: Utc::now(),
        log_len: progress.log_len,
        identity,
    };

    let spans = Spans::default();
    // One step: its users merged with what is stored (inside the engine's commit, so
    // that on a shared store nobody changes them in between), then committed.
    let mut end_step = |pending: &mut Vec<Judged>,
                        progress: &mut Progress,
                        next_index: u64,
                        last: bool|
     -> Result<(), Error> {
        let emails: Vec<Email> = pending.iter().filter_map(Judged::email).cloned().collect();
        let before = progress.clone();
        let merge = |lookup: &store::Lookup<'_>| -> Result<(Step<'_>, Progress), Error> {
            let mut after = Progress {
                next_index,
                ..before.clone()
            };
            let mut writes = Vec::new();
            let mut log = Vec::with_capacity(pending.len());
            for judged in pending.iter() {
                let (entry, write) =
                    apply_verdict(lookup, judged, &source_file, now, &mut after.counts)?;
                writes.extend(write);
                log.push(entry);
            }
            let step = Step {
                path,
                writes,
                log,
                progress: after.clone(),
                done: last.then(|| record(&after)),
                hold_below: if last { 0 } else { step_users },
            };
            Ok((step, after))
        };
        let mut finished = None;
        match mode {
            Mode::Apply => {
                unchanged(committed)?;
                committed = true;
                let t = std::time::Instant::now();
                let mut after = None;
                let log_len = store.commit_with(&emails, |lookup| {
                    let (step, progress) = merge(lookup)?;
                    finished.clone_from(&step.done);
                    after = Some(progress);
                    Ok::<_, Error>(step)
                })?;
                if let Some(after) = after {
                    *progress = after;
                }
                progress.log_len = log_len;
                if let Some(record) = &mut finished {
                    record.log_len = log_len;
                }
                spans.commit.set(spans.commit.get() + t.elapsed());
                if !last {
                    let t = std::time::Instant::now();
                    // Each step is made durable on its own: a crash then loses at
                    // most the step in hand, and a resumed file redoes only that.
                    store.flush()?;
                    spans.flush.set(spans.flush.get() + t.elapsed());
                    fault_point("after-step");
                    pause_point("after-step");
                    if settings
                        .stop
                        .as_ref()
                        .is_some_and(|s| s.load(Ordering::Relaxed))
                    {
                        return Err(Error::Interrupted);
                    }
                }
            }
            Mode::Check => {
                let (mut step, after) = store.peek_with(&emails, merge)??;
                *progress = after;
                finished = step.done.take();
                checked_log.append(&mut step.log);
            }
        }
        pending.clear();
        if let Some(meter) = &settings.meter {
            meter.advance(progress.next_index, total);
        }
        done = finished;
        Ok(())
    };

    let mut source = request::Source::new(input.reader().map_err(read_error)?, limit);
    // Reading and validating run on a thread of their own while this one looks users
    // up, merges and commits: on two cores the parse hides behind sled's work. The
    // bounded channel keeps memory to a few batches; dropping the receiver (a store
    // failure) stops the reader at its next send.
    let walked = std::thread::scope(|scope| {
        let (sender, receiver) =
            std::sync::mpsc::sync_channel::<Vec<(u64, Verdict, Option<u128>)>>(4);
        let reader = scope.spawn(move || {
            let mut batch = Vec::with_capacity(VERDICT_BATCH);
            // Which side of the pipeline waits for the other, for the debug log.
            let mut reader_waited = std::time::Duration::ZERO;
            let on_user = |index: u64, element: request::Element<'_>| {
                let verdict = validator.user(index, element);
                if index >= start {
                    // Hashed here, off the applying thread, which is the slower side.
                    let fresh = match &verdict {
                        Verdict::Valid(patch) => store::data_hash(&patch.clone().merge(None)).ok(),
                        Verdict::Rejected(_) => None,
                    };
                    batch.push((index, verdict, fresh));
                    if batch.len() >= VERDICT_BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(VERDICT_BATCH));
                        let t = std::time::Instant::now();
                        sender.send(full).map_err(|_| Halt)?;
                        reader_waited += t.elapsed();
                    }
                }
                Ok(())
            };
            let walked = match &text {
                Some(text) => request::for_each_user_in(text, on_user),
                None => request::for_each_user(&mut source, on_user),
            };
            if walked.is_ok() && !batch.is_empty() {
                // A closed channel means the applying side failed; it keeps the reason.
                let _ = sender.send(batch);
            }
            tracing::debug!(
                ms = reader_waited.as_millis() as u64,
                "reader waited for the applying thread"
            );
            walked
        });
        let mut applier_waited = std::time::Duration::ZERO;
        let mut next = || {
            let t = std::time::Instant::now();
            let batch = receiver.recv().ok();
            applier_waited += t.elapsed();
            batch
        };
        // The users of the step in hand, judged, and how many of them are valid.
        let mut pending: Vec<Judged> = Vec::new();
        let mut valid = 0;
        'apply: while let Some(batch) = next() {
            for (index, verdict, fresh) in batch {
                valid += usize::from(matches!(verdict, Verdict::Valid(_)));
                pending.push(Judged { verdict, fresh });
                let last = index + 1 == total;
                // A step holds at most `step_users` users to write (what PostgreSQL
                // locks at once), or 64 times as many judged.
                if valid >= step_users
                    || pending.len() >= step_users * store::JUDGED_PER_STEP
                    || last
                {
                    valid = 0;
                    if let Err(e) = end_step(&mut pending, &mut progress, index + 1, last) {
                        failure = Some(e);
                        break 'apply;
                    }
                }
            }
        }
        // Closed before the join: a reader blocked on a full channel (this side
        // stopped: a store failure, or SIGTERM between steps) then gets its error.
        drop(receiver);
        tracing::debug!(
            waited_ms = applier_waited.as_millis() as u64,
            commit_ms = spans.commit.get().as_millis() as u64,
            flush_ms = spans.flush.get().as_millis() as u64,
            "applying thread: waited for verdicts, committed steps, flushed them"
        );
        reader.join()
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let walked = walked
        .map_err(|_| read_error(io::Error::other("the request reader stopped unexpectedly")))?;
    tracing::debug!(file = %path.display(), ms = timer.elapsed().as_millis() as u64, "second pass (validate, merge, commit) done");
    match walked {
        Ok(()) => {}
        Err(Stop::Unread(Unread::Io(e))) => return Err(read_error(e)),
        // The first pass accepted this text: it changed in between.
        Err(_) => {
            return Err(Error::Changed {
                path: path.to_path_buf(),
            });
        }
    }
    if total == 0 || start >= total {
        let next_index = progress.next_index;
        end_step(&mut Vec::new(), &mut progress, next_index, true)?;
    }
    let record = done.unwrap_or_else(|| record(&progress));
    Ok(Some(Checked {
        record,
        log: checked_log,
    }))
}

/// The log entry for one judged user and, when it changes the store, the record to
/// write.
/// Where the applying thread's time went, for the debug log (issue 13's profile).
#[derive(Default)]
struct Spans {
    commit: std::cell::Cell<std::time::Duration>,
    flush: std::cell::Cell<std::time::Duration>,
}

/// A user's verdict and, when valid, the hash of the record its fields alone make.
struct Judged {
    verdict: Verdict,
    fresh: Option<u128>,
}

impl Judged {
    /// The email of a valid user: the record its step must read.
    fn email(&self) -> Option<&Email> {
        match &self.verdict {
            Verdict::Valid(patch) => Some(&patch.email),
            Verdict::Rejected(_) => None,
        }
    }
}

/// The log entry for one judged user and, when it changes the store, the record to
/// write. Reads `judged` without consuming it: a step's merge may run again (another
/// daemon changed one of its users first).
fn apply_verdict(
    lookup: &store::Lookup<'_>,
    Judged { verdict, fresh }: &Judged,
    source_file: &str,
    now: chrono::DateTime<Utc>,
    counts: &mut Counts,
) -> Result<(Vec<Message>, Option<StoredUser>), Error> {
    let patch = match verdict {
        Verdict::Rejected(problems) => {
            counts.rejected += 1;
            return Ok((problems.clone(), None));
        }
        Verdict::Valid(patch) => patch,
    };
    let email = patch.email.to_string();
    // One unreadable record must not stop the file: that user gets code 3.
    let corrupt = |counts: &mut Counts, key, reason| {
        counts.rejected += 1;
        Ok((vec![Message::CorruptRecord { key, reason }], None))
    };
    let stored = match lookup.get(&patch.email) {
        Ok(Some(raw)) => {
            // A record written from exactly these fields is what merging them into
            // it gives back: unchanged, known from its hash without decoding it.
            if let (Some(hash), Some(fresh)) = (raw.data_hash(), fresh)
                && *fresh == hash
            {
                counts.unchanged += 1;
                return Ok((vec![Message::Unchanged { email }], None));
            }
            match raw.decode() {
                Ok(old) => Some(old),
                Err(StoreError::Corrupt { key, reason }) => return corrupt(counts, key, reason),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None) => None,
        Err(StoreError::Corrupt { key, reason }) => return corrupt(counts, key, reason),
        Err(e) => return Err(e.into()),
    };
    let data = patch.clone().merge(stored.as_ref().map(|s| &s.data));
    let (message, write) = match stored {
        Some(old) if old.data == data => {
            counts.unchanged += 1;
            (Message::Unchanged { email }, None)
        }
        Some(old) => {
            counts.updated += 1;
            let meta = Meta {
                created_at: old.meta.created_at,
                updated_at: now,
                source_file: source_file.to_owned(),
            };
            (Message::Updated { email }, Some(StoredUser { data, meta }))
        }
        None => {
            counts.added += 1;
            let meta = Meta {
                created_at: now,
                updated_at: now,
                source_file: source_file.to_owned(),
            };
            (Message::Added { email }, Some(StoredUser { data, meta }))
        }
    };
    Ok((vec![message], write))
}

/// A whole-file `ERROR`: nothing applied; in `Apply` mode the outcome goes to the
/// outbox like any other.
fn reject(
    store: &Store,
    path: &Path,
    hash: String,
    identity: Option<Identity>,
    message: Message,
    mode: Mode,
) -> Result<Checked, Error> {
    let record = FileRecord {
        path: path.to_path_buf(),
        hash: hash.clone(),
        status: Status::Error,
        message: Some(message),
        users: 0,
        counts: Counts::default(),
        finished_at: Utc::now(),
        log_len: 0,
        identity,
    };
    if mode == Mode::Apply {
        if store.progress(path)?.is_some() {
            store.discard_progress(path)?;
        }
        store.discard_copy(path);
        store.commit(Step {
            path,
            writes: Vec::new(),
            log: Vec::new(),
            progress: Progress {
                hash,
                next_index: 0,
                counts: Counts::default(),
                log_len: 0,
                identity,
                // No user of a rejected file is judged.
                types: Types::default(),
            },
            done: Some(record.clone()),
            hold_below: 0,
        })?;
    }
    Ok(Checked {
        record,
        log: Vec::new(),
    })
}

/// One line per processed file (SPEC §6): `OK` at `info`, `WARNING` and `ERROR` at
/// `warn`, and for `ERROR` the reason. Its message and field names (`file`, `status`,
/// `applied`, `rejected`, `ms`, `reason`) are what README's "Logs" promises. `file`
/// and `reason` are recorded as strings, which the text format quotes: both may hold
/// spaces, and `key=value` readers need to know where a value ends. A `WARNING`'s
/// per-user problems are left to the response: they quote the users' emails.
pub fn log_processed(record: &FileRecord, started: std::time::Instant) {
    let ms = started.elapsed().as_millis() as u64;
    let file = record.path.display().to_string();
    let file = file.as_str();
    // One word, unquoted, as `status=OK` has always read.
    let status = tracing::field::display(record.status);
    let (applied, rejected) = (record.counts.applied(), record.counts.rejected);
    match (record.status, &record.message) {
        (Status::Ok, _) => {
            tracing::info!(file, status, applied, rejected, ms, "processed")
        }
        (_, Some(reason)) => {
            let reason = reason.text(Lang::En);
            let reason = reason.as_str();
            tracing::warn!(file, status, applied, rejected, ms, reason, "processed")
        }
        (_, None) => {
            tracing::warn!(file, status, applied, rejected, ms, "processed")
        }
    }
}

/// Crash injection for the tests: with `USERDROP_FAULT=<point>` in the environment
/// the process aborts at that point, as a `kill -9` would stop it there.
pub(crate) fn fault_point(name: &str) {
    if fault() == Some(name) {
        std::process::abort();
    }
}

/// For the tests: with `USERDROP_FAULT=pause-<point>` the process waits a second at
/// that point, a window in which a test can change the file being processed.
/// With `USERDROP_PAUSE_MARK=PATH` too, the file PATH is created when the pause
/// begins, so that the test acts inside the window rather than after a guessed delay.
fn pause_point(name: &str) {
    if fault().and_then(|f| f.strip_prefix("pause-")) == Some(name) {
        if let Some(mark) = std::env::var_os("USERDROP_PAUSE_MARK") {
            let _ = fs::write(mark, name);
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn fault() -> Option<&'static str> {
    static FAULT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    FAULT
        .get_or_init(|| std::env::var("USERDROP_FAULT").ok())
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let auth = Auth::new(["s3cret".to_owned(), "other".to_owned()]);
        assert!(auth.check(&Token::Text("other".into())).is_ok());
        assert_eq!(
            auth.check(&Token::Text("s3cre".into())),
            Err(Message::TokenRejected)
        );
        assert_eq!(auth.check(&Token::Absent), Err(Message::TokenMissing));
        assert_eq!(auth.check(&Token::NotText), Err(Message::TokenRejected));
        assert!(Auth::default().check(&Token::Absent).is_ok());
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
