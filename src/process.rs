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

use crate::messages::{Lang, Message};
use crate::model::{Meta, Status, StoredUser};
use crate::request::{self, Halt, Stop, Token, Unread};
use crate::response;
use crate::store::{self, Counts, FileRecord, Progress, Step, Store, StoreError};
use crate::validate::{Validator, Verdict};
use chrono::Utc;
use std::fmt;
use std::fs;
use std::io::{self, Seek, SeekFrom};
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
}

/// What became of a file taken from the inbox.
#[derive(Debug)]
pub enum Taken {
    /// Judged (or found already judged) and committed; its response is due from
    /// [`deliver_all`].
    Ready(FileRecord),
    /// Not a complete JSON text yet, and the caller asked to wait for those.
    Incomplete,
}

/// The result of checking a file without applying it.
pub struct Checked {
    pub record: FileRecord,
    pub log: Vec<Vec<Message>>,
}

/// Applies `request` to the store and writes its response beside it. A file whose
/// earlier run was cut short is finished, not applied again: its outbox entry is
/// delivered, or its progress resumed.
pub fn apply_file(store: &Store, request: &Path, settings: &Settings) -> Result<FileRecord, Error> {
    match take_file(store, request, settings, false)? {
        Taken::Ready(record) => {
            deliver_all(store, std::slice::from_ref(&record), settings.lang)?;
            Ok(record)
        }
        Taken::Incomplete => unreachable!("take_file defers only when asked to"),
    }
}

/// Judges `request` and commits it, up to its outbox entry, without flushing or
/// writing its response: [`deliver_all`] does that for a group of files at once
/// (group commit), which is what makes many small files fast. With
/// `defer_incomplete`, a file that is not yet a complete JSON text (an upload in
/// progress) is left alone and reported [`Taken::Incomplete`].
pub fn take_file(
    store: &Store,
    request: &Path,
    settings: &Settings,
    defer_incomplete: bool,
) -> Result<Taken, Error> {
    let path = canonical(request)?;
    if let Some(record) = store.outbox_entry(&path)? {
        return Ok(Taken::Ready(record));
    }
    let defer = defer_incomplete.then_some(Defer);
    Ok(match judge(store, &path, settings, Mode::Apply, defer)? {
        Some(checked) => Taken::Ready(checked.record),
        None => Taken::Incomplete,
    })
}

/// The request's canonical path: the key of its progress, outbox and history.
fn canonical(request: &Path) -> Result<PathBuf, Error> {
    fs::canonicalize(request).map_err(|source| Error::Read {
        path: request.to_path_buf(),
        source,
    })
}

/// Makes the committed files durable with one flush, then writes their responses
/// (each synced, one sync per folder), then clears their outbox entries.
pub fn deliver_all(store: &Store, records: &[FileRecord], lang: Lang) -> Result<(), Error> {
    if records.is_empty() {
        return Ok(());
    }
    store.flush()?;
    fault_point("after-outbox");
    let mut staged = Vec::with_capacity(records.len());
    // A few files: an fsync each, which leaves other writers on the disk alone. A
    // big group: one syncfs for all of them.
    let sync = if records.len() >= SYNCFS_FROM {
        response::Sync::Later
    } else {
        response::Sync::EachFile
    };
    for record in records {
        let target = response::response_path(&record.path);
        let log = store
            .log_chunks(record)
            .map(|chunk| chunk.map_err(io::Error::other));
        let written = response::stage(&target, sync, |out| {
            response::write_json(out, record.status, record.message.as_ref(), log, lang)
        });
        match written {
            Ok(s) => staged.push(s),
            Err(source) => {
                // Put in place what is ready, so that one failure costs one file.
                let _ = response::publish(staged);
                return Err(Error::Write {
                    path: target,
                    source,
                });
            }
        }
    }
    response::publish(staged).map_err(|source| Error::Write {
        path: records[0].path.clone(),
        source,
    })?;
    store.clear_outboxes(records.iter().map(|r| r.path.as_path()))?;
    Ok(())
}

/// Judges `request` against the store as [`apply_file`] would, changing nothing.
pub fn check_file(store: &Store, request: &Path, settings: &Settings) -> Result<Checked, Error> {
    let path = canonical(request)?;
    judge(store, &path, settings, Mode::Check, None)?.ok_or_else(|| Error::Changed { path })
}

/// Writes the response of every file left in the outbox by an interrupted run, but
/// for the requests in `except`, which the caller is about to finish itself (an
/// `import` re-run must deliver, not re-apply, the file it names).
pub fn replay_outbox(store: &Store, lang: Lang, except: &[PathBuf]) -> Result<usize, Error> {
    let pending: Vec<FileRecord> = store
        .outbox()?
        .into_iter()
        .filter(|r| !except.contains(&r.path))
        .collect();
    let (deliverable, orphans): (Vec<FileRecord>, Vec<FileRecord>) = pending
        .into_iter()
        .partition(|r| r.path.parent().is_none_or(|dir| dir.is_dir()));
    for record in &orphans {
        tracing::warn!(file = %record.path.display(), "the request's folder is gone; its response is dropped");
    }
    store.clear_outboxes(orphans.iter().map(|r| r.path.as_path()))?;
    deliver_all(store, &deliverable, lang)?;
    Ok(deliverable.len() + orphans.len())
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

/// The size and modification time of a file: if either moves, the file changed.
pub type Stamp = (u64, Option<std::time::SystemTime>);

pub fn stamp(meta: &fs::Metadata) -> Stamp {
    (meta.len(), meta.modified().ok())
}

/// The shared core of apply and check. In `Apply` mode every step is committed and
/// the returned log is empty (it lives in the store); in `Check` mode nothing is
/// written and the log is returned. `None` only with `defer`: the file is incomplete.
///
/// The file is read twice through one open descriptor, streamed both times: first to
/// check all of it (and hash it), then to apply its users. A file replaced by a rename
/// meanwhile is still the old one through that descriptor; one rewritten in place is
/// caught by its size and time, checked before each step is committed.
fn judge(
    store: &Store,
    path: &Path,
    settings: &Settings,
    mode: Mode,
    defer: Option<Defer>,
) -> Result<Option<Checked>, Error> {
    let read_error = |source| Error::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(read_error)?;
    if !meta.is_file() {
        // A FIFO would block forever and a device never ends: never open them.
        return Err(read_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
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
    if meta.len() > settings.max_file_size && prior.is_none() {
        return reject(store, path, String::new(), too_large(meta.len()), mode).map(Some);
    }
    let file = fs::File::open(path).map_err(read_error)?;
    let before = stamp(&file.metadata().map_err(read_error)?);
    let timer = std::time::Instant::now();
    let limit = match prior {
        Some(_) => settings.max_file_size.max(before.0),
        None => settings.max_file_size,
    };
    let mut source = request::Source::new(&file, limit).hashing();
    let checked = request::envelope(&mut source);
    let hash = source.hash();
    tracing::debug!(file = %path.display(), ms = timer.elapsed().as_millis() as u64, "first pass (syntax, shape, hash) done");
    pause_point("after-first-pass");
    let envelope = match checked {
        Ok(envelope) => envelope,
        Err(Unread::Io(e)) => return Err(read_error(e)),
        Err(Unread::Bad(Message::NotUtf8 { .. } | Message::BadJson { .. })) if defer.is_some() => {
            return Ok(None);
        }
        Err(Unread::Bad(message)) => return reject(store, path, hash, message, mode).map(Some),
    };
    let unchanged = || -> Result<(), Error> {
        if stamp(&file.metadata().map_err(read_error)?) == before {
            Ok(())
        } else {
            Err(Error::Changed {
                path: path.to_path_buf(),
            })
        }
    };
    unchanged()?;
    let resumed = match prior {
        Some(p) if p.hash == hash => Some(p),
        Some(_) => {
            tracing::info!(file = %path.display(), "the file changed since it was cut short; starting it over");
            store.discard_progress(path)?;
            None
        }
        None => None,
    };
    if resumed.is_none() {
        if before.0 > settings.max_file_size {
            return reject(store, path, hash, too_large(before.0), mode).map(Some);
        }
        if let Err(message) = settings.auth.check(&envelope.token) {
            return reject(store, path, hash, message, mode).map(Some);
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
        },
    };

    let source_file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let now = Utc::now();
    let total = envelope.users;
    let start = progress.next_index;
    let step_users = settings.step_users.max(1);
    let mut validator = Validator::for_users(total);
    let mut writes = Vec::new();
    let mut log: Vec<Vec<Message>> = Vec::new();
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
    };

    let mut end_step = |writes: &mut Vec<StoredUser>,
                        log: &mut Vec<Vec<Message>>,
                        progress: &mut Progress,
                        last: bool|
     -> Result<(), Error> {
        let mut finished = last.then(|| record(progress));
        match mode {
            Mode::Apply => {
                unchanged()?;
                progress.log_len = store.commit(Step {
                    path,
                    writes: std::mem::take(writes),
                    log: std::mem::take(log),
                    progress: progress.clone(),
                    done: finished.clone(),
                })?;
                if let Some(record) = &mut finished {
                    record.log_len = progress.log_len;
                }
                if !last {
                    // Each step is made durable on its own: a crash then loses at
                    // most the step in hand, and a resumed file redoes only that.
                    store.flush()?;
                    fault_point("after-step");
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
                writes.clear();
                checked_log.append(log);
            }
        }
        if let Some(meter) = &settings.meter {
            meter.advance(progress.next_index, total);
        }
        done = finished;
        Ok(())
    };

    (&file).seek(SeekFrom::Start(0)).map_err(read_error)?;
    let mut source = request::Source::new(&file, limit);
    // Reading and validating run on a thread of their own while this one looks users
    // up, merges and commits: on two cores the parse hides behind sled's work. The
    // bounded channel keeps memory to a few batches; dropping the receiver (a store
    // failure) stops the reader at its next send.
    let walked = std::thread::scope(|scope| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Vec<(u64, Verdict)>>(4);
        let reader = scope.spawn(move || {
            let mut batch = Vec::with_capacity(VERDICT_BATCH);
            let walked = request::for_each_user(&mut source, |index, element| {
                let verdict = validator.user(index, element);
                if index >= start {
                    batch.push((index, verdict));
                    if batch.len() >= VERDICT_BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(VERDICT_BATCH));
                        sender.send(full).map_err(|_| Halt)?;
                    }
                }
                Ok(())
            });
            if walked.is_ok() && !batch.is_empty() {
                // A closed channel means the applying side failed; it keeps the reason.
                let _ = sender.send(batch);
            }
            walked
        });
        'apply: for batch in receiver {
            for (index, verdict) in batch {
                let entry =
                    match apply_verdict(store, verdict, &source_file, now, &mut progress.counts) {
                        Ok((entry, write)) => {
                            writes.extend(write);
                            entry
                        }
                        Err(e) => {
                            failure = Some(e);
                            break 'apply;
                        }
                    };
                log.push(entry);
                progress.next_index = index + 1;
                let last = index + 1 == total;
                if (log.len() >= step_users || last)
                    && let Err(e) = end_step(&mut writes, &mut log, &mut progress, last)
                {
                    failure = Some(e);
                    break 'apply;
                }
            }
        }
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
        end_step(&mut writes, &mut log, &mut progress, true)?;
    }
    let record = done.unwrap_or_else(|| record(&progress));
    Ok(Some(Checked {
        record,
        log: checked_log,
    }))
}

/// The log entry for one judged user and, when it changes the store, the record to
/// write.
fn apply_verdict(
    store: &Store,
    verdict: Verdict,
    source_file: &str,
    now: chrono::DateTime<Utc>,
    counts: &mut Counts,
) -> Result<(Vec<Message>, Option<StoredUser>), Error> {
    let patch = match verdict {
        Verdict::Rejected(problems) => {
            counts.rejected += 1;
            return Ok((problems, None));
        }
        Verdict::Valid(patch) => patch,
    };
    let email = patch.email.to_string();
    // One unreadable record must not stop the file: that user gets code 3.
    let corrupt = |counts: &mut Counts, key, reason| {
        counts.rejected += 1;
        Ok((vec![Message::CorruptRecord { key, reason }], None))
    };
    let stored = match store.user_raw(&patch.email) {
        Ok(Some(raw)) => {
            // A record written from exactly these fields is what merging them into
            // it gives back: unchanged, known from its hash without decoding it.
            if let Some(hash) = raw.data_hash() {
                let fresh = patch.clone().merge(None);
                if store::data_hash(&fresh)? == hash {
                    counts.unchanged += 1;
                    return Ok((vec![Message::Unchanged { email }], None));
                }
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
    let data = patch.merge(stored.as_ref().map(|s| &s.data));
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
    };
    if mode == Mode::Apply {
        if store.progress(path)?.is_some() {
            store.discard_progress(path)?;
        }
        store.commit(Step {
            path,
            writes: Vec::new(),
            log: Vec::new(),
            progress: Progress {
                hash,
                next_index: 0,
                counts: Counts::default(),
                log_len: 0,
            },
            done: Some(record.clone()),
        })?;
    }
    Ok(Checked {
        record,
        log: Vec::new(),
    })
}

/// Crash injection for the tests: with `USERDROP_FAULT=<point>` in the environment
/// the process aborts at that point, as a `kill -9` would stop it there.
fn fault_point(name: &str) {
    if fault() == Some(name) {
        std::process::abort();
    }
}

/// For the tests: with `USERDROP_FAULT=pause-<point>` the process waits a second at
/// that point, a window in which a test can change the file being processed.
fn pause_point(name: &str) {
    if fault().and_then(|f| f.strip_prefix("pause-")) == Some(name) {
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
