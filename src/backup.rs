//! Backup and restore (SPEC §6): the whole store as one stream of JSON lines, taken at
//! one moment and loaded back into an empty store, so that a shop can move its
//! customer base to a new server, keep nightly copies, or cross a format version.
//!
//! A backup is a *logical* copy, not sled's files: it is readable, survives a change of
//! store layout or engine, and compresses well. Its lines, in order:
//!
//! ```text
//! {"backup":{"version":1,"store_format":1,"taken_at":"…","binary":"0.2.0"}}
//! {"user":[{data…},{"created_at":…,"updated_at":…,"source_file":…}]}   by email
//! {"file":{…the history record of one request path…, "instance":"east"}} by instance, path
//! {"totals":{…the counters that only rise…}}
//! {"end":{"users":N,"files":M}}
//! ```
//!
//! The `end` line makes a cut-off backup detectable: restore refuses a stream without
//! it, or whose counts differ. What is in flight (a file's progress, the outbox of
//! responses not yet written) is not in a backup: it belongs to the inbox of the
//! machine it was taken on. A file cut short at the moment of the backup is in it with
//! its committed steps' users and without its history record.
//!
//! A file name ending in `.gz` or `.zst` is compressed; restore recognises either by
//! its first bytes, so a compressed stream on standard input works too.

use crate::model::{Meta, StoredUser, UserData};
use crate::store::{FileRecord, Item, Restored, Store, StoreError, Totals};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// The backup format this binary writes and reads.
pub const VERSION: u32 = 1;

/// The first line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub version: u32,
    /// The format version of the store it was taken from (see `version`).
    pub store_format: u32,
    pub taken_at: DateTime<Utc>,
    /// The userdrop that took it.
    pub binary: String,
}

/// How much a backup holds: the `end` line, and what restore reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub users: u64,
    pub files: u64,
}

/// A history record, and on a PostgreSQL store the instance it is kept for (absent
/// in backups of sled, which has one).
#[derive(Debug, Serialize, Deserialize)]
struct FileLine {
    #[serde(flatten)]
    record: FileRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    instance: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Backup(Header),
    User(UserData, Meta),
    File(FileLine),
    Totals(Totals),
    End(Summary),
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(
        "line {line} of the backup cannot be read: {reason}; the backup is damaged or not a userdrop backup"
    )]
    Bad { line: u64, reason: String },
    #[error(
        "the backup is version {found}, written by a newer userdrop; this one reads version {VERSION}: restore it with the newer binary"
    )]
    Newer { found: u32 },
    #[error(
        "the backup is cut short: {0}; nothing of it is usable, take it again (the store is left marked, and the next restore starts over)"
    )]
    Truncated(String),
}

/// Writes a backup of `store` to `out`, all of one moment (see [`Store::snapshot`]).
pub fn write(store: &Store, out: &mut dyn Write) -> Result<Summary, BackupError> {
    let header = Header {
        version: VERSION,
        store_format: crate::version::CURRENT,
        taken_at: Utc::now(),
        binary: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let mut summary = Summary::default();
    put(out, &Line::Backup(header))?;
    store.snapshot(|item| -> Result<(), BackupError> {
        let line = match item {
            Item::User(user) => {
                summary.users += 1;
                Line::User(user.data.clone(), user.meta.clone())
            }
            Item::File(file, instance) => {
                summary.files += 1;
                Line::File(FileLine {
                    record: file.clone(),
                    instance: instance.map(str::to_owned),
                })
            }
            Item::Totals(totals) => Line::Totals(totals.clone()),
        };
        put(out, &line)
    })?;
    put(out, &Line::End(summary))?;
    out.flush()?;
    Ok(summary)
}

fn put(out: &mut dyn Write, line: &Line) -> Result<(), BackupError> {
    serde_json::to_writer(&mut *out, line).map_err(io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// How many records go into one sled batch during a restore.
const BATCH: usize = 5_000;

/// The longest line read: a user is a few kilobytes; a longer line is damage.
const LINE_MAX: u64 = 16 * 1024 * 1024;

/// Loads the backup `input` (plain, gzip or zstd) into `store`, which must be empty
/// or hold a restore that did not finish (`dir` names it in messages). The store is
/// marked for the whole restore, so that a restore cut short is never taken for a
/// whole store.
pub fn restore(store: &Store, dir: &Path, input: Box<dyn Read>) -> Result<Summary, BackupError> {
    let mut lines = Lines::new(decompressed(input)?);
    // A newer backup may have a header this one cannot read; its version is read first.
    if let Some(found) = lines.newer_header()? {
        return Err(BackupError::Newer { found });
    }
    match lines.next()? {
        Some(Line::Backup(_)) => {}
        Some(_) => return Err(lines.bad("the first line is not a backup header".into())),
        None => return Err(BackupError::Truncated("it is empty".into())),
    }
    store.begin_restore(dir)?;
    let mut users = Vec::with_capacity(BATCH);
    let mut files = Vec::new();
    let mut count = Summary::default();
    let mut totals = Totals::default();
    // A backup lists users by email and files by path, each once: a line out of that
    // order (a duplicate, after an edit) would make the store hold fewer than it says.
    let mut last_email: Option<crate::model::Email> = None;
    let mut last_path: Option<(String, Vec<u8>)> = None;
    let end = loop {
        match lines.next()? {
            Some(Line::User(data, meta)) => {
                if last_email.as_ref().is_some_and(|e| e >= &data.email) {
                    return Err(lines.bad(format!(
                        "the user {} comes again or out of order (users are listed once each, by email)",
                        data.email
                    )));
                }
                last_email = Some(data.email.clone());
                count.users += 1;
                users.push(StoredUser { data, meta });
            }
            Some(Line::File(FileLine { record, instance })) => {
                // In the store's order: by instance, then a path's bytes (not its
                // components).
                let key = (
                    instance.clone().unwrap_or_default(),
                    record.path.as_os_str().as_encoded_bytes().to_vec(),
                );
                if last_path.as_ref().is_some_and(|last| *last >= key) {
                    return Err(lines.bad(format!(
                        "the file {} comes again or out of order (files are listed once each, by instance and path)",
                        record.path.display()
                    )));
                }
                last_path = Some(key);
                count.files += 1;
                files.push(Restored { record, instance });
            }
            Some(Line::Totals(t)) => totals = t,
            Some(Line::End(end)) => break end,
            Some(Line::Backup(_)) => return Err(lines.bad("a second header".into())),
            None => return Err(BackupError::Truncated("it has no end line".into())),
        }
        if users.len() + files.len() >= BATCH {
            store.restore_batch(&users, &files)?;
            users.clear();
            files.clear();
        }
    };
    if end != count {
        return Err(BackupError::Truncated(format!(
            "its end line counts {} users and {} files, but it holds {} and {}",
            end.users, end.files, count.users, count.files
        )));
    }
    if lines.next()?.is_some() {
        return Err(lines.bad("lines after the end line".into()));
    }
    store.restore_batch(&users, &files)?;
    store.finish_restore(&totals)?;
    Ok(count)
}

/// The backup's lines, one JSON document each.
struct Lines {
    input: Box<dyn BufRead>,
    number: u64,
    text: String,
}

impl Lines {
    fn new(input: Box<dyn BufRead>) -> Lines {
        Lines {
            input,
            number: 0,
            text: String::new(),
        }
    }

    /// The version of a header newer than this binary reads, looking at the first
    /// line without taking it.
    fn newer_header(&mut self) -> Result<Option<u32>, BackupError> {
        #[derive(Deserialize)]
        struct Loose {
            backup: LooseHeader,
        }
        #[derive(Deserialize)]
        struct LooseHeader {
            version: u32,
        }
        let start = self.input.fill_buf().map_err(|e| Self::damaged(1, e))?;
        let first = start.split(|&b| b == b'\n').next().unwrap_or_default();
        Ok(serde_json::from_slice::<Loose>(first)
            .ok()
            .map(|h| h.backup.version)
            .filter(|&v| v > VERSION))
    }

    fn next(&mut self) -> Result<Option<Line>, BackupError> {
        self.text.clear();
        self.number += 1;
        let read = (&mut self.input)
            .take(LINE_MAX)
            .read_line(&mut self.text)
            .map_err(|e| Self::damaged(self.number, e))?;
        if read == 0 {
            return Ok(None);
        }
        if !self.text.ends_with('\n') {
            return Err(BackupError::Truncated(format!(
                "line {} ends without a newline",
                self.number
            )));
        }
        serde_json::from_str(&self.text)
            .map(Some)
            .map_err(|e| self.bad(e.to_string()))
    }

    /// A read that failed: for a compressed backup, mostly a damaged or cut stream.
    fn damaged(line: u64, e: io::Error) -> BackupError {
        let bad = |reason| BackupError::Bad { line, reason };
        match e.kind() {
            io::ErrorKind::InvalidData if e.get_ref().is_none() => {
                bad("it is not UTF-8 text".into())
            }
            io::ErrorKind::UnexpectedEof => {
                BackupError::Truncated(format!("its compressed stream ends in line {line} ({e})"))
            }
            io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::Other => {
                bad(format!("its compressed stream is damaged ({e})"))
            }
            _ => BackupError::Io(e),
        }
    }

    fn bad(&self, reason: String) -> BackupError {
        BackupError::Bad {
            line: self.number,
            reason,
        }
    }
}

/// How a backup file is compressed, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn for_name(path: &Path) -> Compression {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("gz") => Compression::Gzip,
            Some(e) if e.eq_ignore_ascii_case("zst") => Compression::Zstd,
            _ => Compression::None,
        }
    }
}

/// `out`, compressed as asked; [`Compressed::finish`] writes the compressor's end.
pub enum Compressed<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::Encoder<'static, W>),
}

impl<W: Write> Compressed<W> {
    pub fn new(out: W, how: Compression) -> io::Result<Compressed<W>> {
        Ok(match how {
            Compression::None => Compressed::Plain(out),
            Compression::Gzip => Compressed::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::default(),
            )),
            // Level 3, zstd's default: about gzip's ratio at several times its speed.
            Compression::Zstd => Compressed::Zstd(zstd::Encoder::new(out, 3)?),
        })
    }

    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressed::Plain(w) => Ok(w),
            Compressed::Gzip(e) => e.finish(),
            Compressed::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Compressed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressed::Plain(w) => w.write(buf),
            Compressed::Gzip(e) => e.write(buf),
            Compressed::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressed::Plain(w) => w.flush(),
            Compressed::Gzip(e) => e.flush(),
            Compressed::Zstd(e) => e.flush(),
        }
    }
}

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// `input` decompressed, recognised by its first bytes.
fn decompressed(input: Box<dyn Read>) -> io::Result<Box<dyn BufRead>> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let start = input.fill_buf()?;
    Ok(if start.starts_with(GZIP_MAGIC) {
        Box::new(BufReader::new(flate2::bufread::MultiGzDecoder::new(input)))
    } else if start.starts_with(ZSTD_MAGIC) {
        Box::new(BufReader::new(zstd::Decoder::with_buffer(input)?))
    } else {
        Box::new(input)
    })
}

/// A backup file being written: an unnamed file in the target's folder (`O_TMPFILE`),
/// given a temporary name beside the target and renamed into place only when whole
/// and synced, so that a backup cut short never replaces the last good one, and a
/// backup killed (`kill -9`) leaves nothing behind. On a file system without unnamed
/// files, the temporary name is taken at once instead.
pub struct Target {
    path: PathBuf,
    temp: PathBuf,
    file: std::fs::File,
    /// Whether `temp` exists yet (false until [`Target::commit`] for an unnamed file).
    named: bool,
}

impl Target {
    pub fn create(path: &Path) -> io::Result<Target> {
        use std::os::unix::fs::OpenOptionsExt;
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "the backup needs a file name")
        })?;
        if path.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "it is a folder; give the backup a file name in it",
            ));
        }
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.tmp", std::process::id()));
        let temp = path.with_file_name(temp_name);
        let folder = folder_of(path);
        let unnamed = rustix::fs::open(
            folder,
            rustix::fs::OFlags::TMPFILE | rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(0o600),
        );
        let (file, named) = match unnamed {
            Ok(fd) => (std::fs::File::from(fd), false),
            Err(e) if e == rustix::io::Errno::NOENT || e == rustix::io::Errno::NOTDIR => {
                return Err(e.into());
            }
            Err(_) => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&temp)?;
                (file, true)
            }
        };
        Ok(Target {
            path: path.to_path_buf(),
            temp,
            file,
            named,
        })
    }

    pub fn file(&mut self) -> &mut std::fs::File {
        &mut self.file
    }

    /// Syncs the file, names it, renames it into place and syncs its folder; on
    /// failure, nothing is left but what was there before.
    pub fn commit(mut self) -> io::Result<()> {
        let done = self.put_in_place();
        if done.is_err() {
            self.abandon();
        }
        done
    }

    fn put_in_place(&mut self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        self.file.sync_all()?;
        if !self.named {
            // The descriptor's own link in /proc: linking an unnamed file by its
            // descriptor (AT_EMPTY_PATH) would need CAP_DAC_READ_SEARCH.
            let own = format!("/proc/self/fd/{}", self.file.as_raw_fd());
            rustix::fs::linkat(
                rustix::fs::CWD,
                own.as_str(),
                rustix::fs::CWD,
                &self.temp,
                rustix::fs::AtFlags::SYMLINK_FOLLOW,
            )?;
            self.named = true;
        }
        std::fs::rename(&self.temp, &self.path)?;
        self.named = false;
        crate::store::sync_folder_of(&self.path)
    }

    /// Removes the temporary file of a backup that failed.
    pub fn abandon(self) {
        if self.named {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

fn folder_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A writer that passes everything on and keeps the last line, so that whoever
/// streams a backup can tell it ended whole and what it holds.
pub struct Tail<W: Write> {
    inner: W,
    last: Vec<u8>,
}

impl<W: Write> Tail<W> {
    pub fn new(inner: W) -> Tail<W> {
        Tail {
            inner,
            last: Vec::new(),
        }
    }

    /// The counts of the `end` line, if the stream ended with one.
    pub fn summary(&self) -> Option<Summary> {
        let text = self.last.strip_suffix(b"\n")?;
        let start = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        match serde_json::from_slice(&text[start..]) {
            Ok(Line::End(summary)) => Some(summary),
            _ => None,
        }
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for Tail<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.last.extend_from_slice(&buf[..n]);
        // An end line is short; keep enough for it and the newline before it.
        if self.last.len() > 8192 {
            self.last.drain(..self.last.len() - 4096);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
