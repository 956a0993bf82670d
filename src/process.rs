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
use crate::request::{self, Halt, Token};
use crate::response;
use crate::store::{Counts, FileRecord, Progress, Step, Store, StoreError};
use crate::validate::{Validator, Verdict};
use chrono::Utc;
use std::fmt;
use std::fs;
use std::io::{self, Read};
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
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_file_size: 512 * 1024 * 1024,
            step_users: 10_000,
            auth: Auth::default(),
            lang: Lang::En,
            stop: None,
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
    let path = fs::canonicalize(request).map_err(|source| Error::Read {
        path: request.to_path_buf(),
        source,
    })?;
    if let Some(record) = store.outbox_entry(&path)? {
        deliver(store, &record, settings.lang)?;
        return Ok(record);
    }
    let record = judge(store, &path, settings, Mode::Apply)?.record;
    store.flush()?;
    fault_point("after-outbox");
    deliver(store, &record, settings.lang)?;
    Ok(record)
}

/// Judges `request` against the store as [`apply_file`] would, changing nothing.
pub fn check_file(store: &Store, request: &Path, settings: &Settings) -> Result<Checked, Error> {
    let path = fs::canonicalize(request).map_err(|source| Error::Read {
        path: request.to_path_buf(),
        source,
    })?;
    judge(store, &path, settings, Mode::Check)
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
    for record in &pending {
        let folder_gone = record.path.parent().is_some_and(|dir| !dir.is_dir());
        if folder_gone {
            tracing::warn!(file = %record.path.display(), "the request's folder is gone; its response is dropped");
            store.clear_outbox(&record.path)?;
        } else {
            deliver(store, record, lang)?;
        }
    }
    Ok(pending.len())
}

/// Writes the response of a file in the outbox, then clears the entry.
fn deliver(store: &Store, record: &FileRecord, lang: Lang) -> Result<PathBuf, Error> {
    let target = response::response_path(&record.path);
    let log = store
        .log_chunks(&record.path)
        .map(|chunk| chunk.map_err(io::Error::other));
    response::write_atomic(&target, |out| {
        response::write_json(out, record.status, record.message.as_ref(), log, lang)
    })
    .map_err(|source| Error::Write {
        path: target.clone(),
        source,
    })?;
    store.clear_outbox(&record.path)?;
    Ok(target)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Apply,
    Check,
}

/// The shared core of apply and check. In `Apply` mode every step is committed and
/// the returned log is empty (it lives in the store); in `Check` mode nothing is
/// written and the log is returned.
fn judge(store: &Store, path: &Path, settings: &Settings, mode: Mode) -> Result<Checked, Error> {
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
    let too_large = |size| Message::TooLarge {
        size,
        limit: settings.max_file_size,
    };
    if meta.len() > settings.max_file_size {
        return reject(store, path, String::new(), too_large(meta.len()), mode);
    }
    // The limit holds even for a file that grows after the size check.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    fs::File::open(path)
        .and_then(|f| f.take(settings.max_file_size + 1).read_to_end(&mut bytes))
        .map_err(read_error)?;
    if bytes.len() as u64 > settings.max_file_size {
        return reject(
            store,
            path,
            String::new(),
            too_large(bytes.len() as u64),
            mode,
        );
    }
    let hash = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes));
    let parsed = request::text(&bytes).and_then(|text| Ok((text, request::envelope(text)?)));
    let (text, envelope) = match parsed {
        Ok(ok) => ok,
        Err(message) => return reject(store, path, hash, message, mode),
    };
    if let Err(message) = settings.auth.check(&envelope.token) {
        return reject(store, path, hash, message, mode);
    }

    let mut progress = Progress {
        hash: hash.clone(),
        next_index: 0,
        steps: 0,
        counts: Counts::default(),
    };
    if mode == Mode::Apply {
        match store.progress(path)? {
            Some(p) if p.hash == hash => {
                tracing::info!(file = %path.display(), from = p.next_index, "resuming an interrupted file");
                progress = p;
            }
            Some(_) => {
                tracing::info!(file = %path.display(), "the file changed since it was cut short; starting it over");
                store.discard_progress(path)?;
            }
            None => {}
        }
    }

    let source_file = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let now = Utc::now();
    let total = envelope.users;
    let start = progress.next_index;
    let step_users = settings.step_users.max(1);
    let mut validator = Validator::new();
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
    };

    let mut end_step = |writes: &mut Vec<StoredUser>,
                        log: &mut Vec<Vec<Message>>,
                        progress: &mut Progress,
                        last: bool|
     -> Result<(), Error> {
        progress.steps += 1;
        let finished = last.then(|| record(progress));
        match mode {
            Mode::Apply => {
                store.commit(Step {
                    path,
                    writes: std::mem::take(writes),
                    log: std::mem::take(log),
                    progress: progress.clone(),
                    done: finished.clone(),
                })?;
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
        done = finished;
        Ok(())
    };

    let walked = request::for_each_user(text, |index, element| {
        let verdict = validator.user(index, element);
        if index < start {
            return Ok(());
        }
        let entry = match apply_verdict(store, verdict, &source_file, now, &mut progress.counts) {
            Ok((entry, write)) => {
                writes.extend(write);
                entry
            }
            Err(e) => {
                failure = Some(e);
                return Err(Halt);
            }
        };
        log.push(entry);
        progress.next_index = index + 1;
        let last = index + 1 == total;
        if (log.len() >= step_users || last)
            && let Err(e) = end_step(&mut writes, &mut log, &mut progress, last)
        {
            failure = Some(e);
            return Err(Halt);
        }
        Ok(())
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if walked.is_err() {
        // `envelope` accepted this text, so the walk cannot fail on its own.
        let detail = "the request could not be read a second time".to_owned();
        return Err(Error::Read {
            path: path.to_path_buf(),
            source: io::Error::other(detail),
        });
    }
    if total == 0 || start >= total {
        end_step(&mut writes, &mut log, &mut progress, true)?;
    }
    let record = done.unwrap_or_else(|| record(&progress));
    Ok(Checked {
        record,
        log: checked_log,
    })
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
    let stored = match store.user(&patch.email) {
        Ok(stored) => stored,
        // One unreadable record must not stop the file: that user gets code 3.
        Err(StoreError::Corrupt { key, reason }) => {
            counts.rejected += 1;
            return Ok((vec![Message::CorruptRecord { key, reason }], None));
        }
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
                steps: 0,
                counts: Counts::default(),
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
    static FAULT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let fault = FAULT.get_or_init(|| std::env::var("USERDROP_FAULT").ok());
    if fault.as_deref() == Some(name) {
        std::process::abort();
    }
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
