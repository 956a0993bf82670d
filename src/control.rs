//! The read commands (`get`, `export`, `stats`) and the local channel that lets them,
//! and `check`, work while a daemon holds the store.
//!
//! sled locks its folder against other processes, so when `get` finds the store held
//! it asks the daemon instead, over a Unix socket inside the store folder
//! (`userdrop.sock`, mode 0600: only the store's owner may read through it).
//!
//! Protocol, one exchange per connection: the client writes one JSON line, a
//! [`Query`]; the daemon answers with one JSON line, a [`Reply`] header (exit code and
//! an optional note for stderr), then the command's stdout bytes until it closes.
//! `check` sends one file per exchange: after its query line come exactly the file's
//! `size` bytes, which the daemon keeps in a private folder of the store's while it
//! judges them (see [`CheckFile`]).
//!
//! A client that stalls must not hold up the others: each connection is served on a
//! thread of its own, up to [`CONNECTIONS_MAX`] at once (past that, a "busy" reply at
//! once, and the client asks again), with a deadline for the query and a timeout on
//! every write; the client too gives up on a daemon that does not answer.

use crate::cli::{EXIT_FAILURE, EXIT_OK, EXIT_REJECTED};
use crate::export::{self, Format};
use crate::messages::Lang;
use crate::model::{Email, Status};
use crate::process::{self, Auth, Settings};
use crate::response;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The name of the socket inside the store folder.
pub const SOCKET: &str = "userdrop.sock";

/// A read command.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Query {
    Get {
        email: String,
    },
    Export {
        format: Format,
    },
    Stats {
        json: bool,
    },
    /// Erase these users; prints `erased EMAIL` for each one that was stored.
    Delete {
        emails: Vec<String>,
    },
    /// A backup of the whole store (see `backup`), uncompressed.
    Backup,
    /// Followed on the connection by the file's bytes: see [`ask_check`].
    Check(CheckFile),
}

/// One file for `check` to judge, and the settings it is judged under: the client's,
/// those a local `check` would use, so that the answer is the one it would print.
#[derive(Clone, Serialize, Deserialize)]
pub struct CheckFile {
    /// The file as the client names it, for the messages only: it is never opened.
    pub name: String,
    /// How many bytes follow the query line.
    pub size: u64,
    pub tokens: Vec<String>,
    pub max_file_size: u64,
    pub lang: Lang,
}

impl fmt::Debug for CheckFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tokens never appear in logs (SPEC §5).
        f.debug_struct("CheckFile")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("tokens", &self.tokens.len())
            .field("max_file_size", &self.max_file_size)
            .field("lang", &self.lang)
            .finish()
    }
}

impl CheckFile {
    /// What `check` judges with, as the client's `Rules::settings` makes it.
    fn settings(&self) -> Settings {
        Settings {
            max_file_size: self.max_file_size,
            auth: Auth::new(self.tokens.iter().cloned()),
            lang: self.lang,
            ..Settings::default()
        }
    }
}

/// The header of an answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reply {
    pub exit: u8,
    /// A line for stderr, such as "no user with email …".
    pub note: Option<String>,
    /// The daemon was serving as many clients as it serves at once and did not read
    /// the query: asking again later may succeed. Written only when true, so that
    /// other replies keep the header older clients read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub busy: bool,
}

impl Reply {
    fn done(exit: u8, note: Option<String>) -> Reply {
        Reply {
            exit,
            note,
            busy: false,
        }
    }
}

/// Answers `query` from `store`, writing what the command prints to `out`.
pub fn answer(store: &Store, query: &Query, out: &mut dyn Write) -> Result<Reply, String> {
    let ok = Reply::done(0, None);
    match query {
        Query::Get { email } => {
            let Some(email) = Email::parse(email) else {
                return Ok(Reply::done(
                    1,
                    Some(format!(
                        "{:?} is not a valid email, so no user has it",
                        email.trim()
                    )),
                ));
            };
            match store.user(&email).map_err(|e| e.to_string())? {
                Some(user) => {
                    let text =
                        serde_json::to_string_pretty(&user.flat()).map_err(|e| e.to_string())?;
                    writeln!(out, "{text}").map_err(|e| e.to_string())?;
                    Ok(ok)
                }
                None => Ok(Reply::done(1, Some(format!("no user with email {email}")))),
            }
        }
        Query::Export { format } => {
            export::export(store, *format, out).map_err(|e| e.to_string())?;
            Ok(ok)
        }
        Query::Stats { json } => {
            let history = crate::metrics::History::read(store).map_err(|e| e.to_string())?;
            let figures = history.figures();
            let written = if *json {
                writeln!(out, "{}", crate::metrics::stats_json(figures))
            } else {
                out.write_all(crate::metrics::stats_table(figures).as_bytes())
            };
            written.map_err(|e| e.to_string())?;
            Ok(ok)
        }
        Query::Delete { emails } => delete(store, emails, out),
        Query::Backup => {
            crate::backup::write(store, out).map_err(|e| e.to_string())?;
            Ok(ok)
        }
        // Its file comes on the connection, which only the socket's server has.
        Query::Check(_) => Err("check is answered only on the control socket".into()),
    }
}

/// `delete`: erases the users and says which were not stored.
fn delete(store: &Store, emails: &[String], out: &mut dyn Write) -> Result<Reply, String> {
    let (valid, invalid): (Vec<_>, Vec<_>) = emails
        .iter()
        .map(|e| Email::parse(e).ok_or(e))
        .partition(Result::is_ok);
    let valid: Vec<Email> = valid.into_iter().flatten().collect();
    let erased = store.delete(&valid).map_err(|e| e.to_string())?;
    for email in &erased {
        writeln!(out, "erased {email}").map_err(|e| e.to_string())?;
    }
    let mut absent: Vec<String> = valid
        .iter()
        .filter(|e| !erased.contains(e))
        .map(ToString::to_string)
        .collect();
    absent.dedup();
    absent.extend(
        invalid
            .into_iter()
            .filter_map(Result::err)
            .map(|e| format!("{:?} (not a valid email)", e.trim())),
    );
    let note = (!absent.is_empty()).then(|| format!("no user with email {}", absent.join(", ")));
    Ok(Reply::done(if erased.is_empty() { 1 } else { 0 }, note))
}

pub fn socket_path(db: &Path) -> PathBuf {
    db.join(SOCKET)
}

/// How many connections are served at once. Each holds a thread and, for `export`,
/// the whole answer in memory (for `check`, its file on disk and its log in memory);
/// a client past this many is told the daemon is busy.
const CONNECTIONS_MAX: usize = 16;

/// How long the daemon waits for a client's query, in all, and for each write of the
/// answer to make progress: a client that stalls loses its connection, not everyone's.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest query line read; a query is a few dozen bytes.
const QUERY_MAX: u64 = 64 * 1024;

/// Serves read queries on the store's socket from a background thread, for as long as
/// the process lives, each connection on a thread of its own. Call it only while
/// holding the store.
pub fn serve(store: Store, db: &Path) -> io::Result<()> {
    let path = socket_path(db);
    // We hold the store's lock, so a socket file left here is a dead daemon's, and so
    // is any check folder.
    let _ = std::fs::remove_file(&path);
    remove_stale_checks(db);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let db = db.to_path_buf();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || accept_all(&store, &db, &listener))?;
    Ok(())
}

fn accept_all(store: &Store, db: &Path, listener: &UnixListener) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => dispatch(store, db, stream, &active),
            Err(e) => tracing::warn!("control socket: {e}"),
        }
    }
}

/// Hands `stream` to a thread of its own, or answers "busy" at once when
/// [`CONNECTIONS_MAX`] are already being served.
fn dispatch(store: &Store, db: &Path, stream: UnixStream, active: &Arc<AtomicUsize>) {
    let Some(slot) = Slot::take(active) else {
        // The reply is a short line into an empty socket buffer, so it cannot block
        // this thread; the write timeout bounds it all the same.
        if let Err(e) = set_timeouts(&stream).and_then(|()| refuse_busy(stream)) {
            tracing::debug!("control connection: {e}");
        }
        return;
    };
    let store = store.clone();
    let db = db.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("control-client".into())
        .spawn(move || {
            let _slot = slot;
            if let Err(e) = serve_one(&store, &db, stream) {
                tracing::debug!("control connection: {e}");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("control socket: no thread for a client: {e}");
    }
}

/// One of the [`CONNECTIONS_MAX`] connections served at once, given back when
/// dropped, so that a client whose thread panics does not keep it.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(active: &Arc<AtomicUsize>) -> Option<Slot> {
        active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < CONNECTIONS_MAX).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(active)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn set_timeouts(stream: &UnixStream) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))
}

fn refuse_busy(stream: UnixStream) -> io::Result<()> {
    let reply = Reply {
        exit: 1,
        note: Some(format!(
            "the daemon is busy: {CONNECTIONS_MAX} read commands are being answered; try again"
        )),
        busy: true,
    };
    write_reply(stream, &reply, &[])
}

fn serve_one(store: &Store, db: &Path, stream: UnixStream) -> io::Result<()> {
    set_timeouts(&stream)?;
    let (line, early) = read_query(&stream)?;
    let query: Query = serde_json::from_str(&line).map_err(io::Error::other)?;
    if let Query::Backup = query {
        return serve_backup(store, stream);
    }
    if let Query::Check(file) = &query {
        return serve_check(store, db, stream, &early, file);
    }
    // Answer into memory first: the header carries the exit code, known only at the end.
    let mut body = Vec::new();
    let reply = answer(store, &query, &mut body).unwrap_or_else(|e| Reply::done(1, Some(e)));
    write_reply(stream, &reply, &body)
}

/// A backup is the whole store: it is written to a file no one else can see (in the
/// store's private folder, gone when closed) before the header, so that memory stays
/// flat and the store's gate is held only for as long as the store is read, never
/// for as long as a slow client takes to read the answer.
fn serve_backup(store: &Store, stream: UnixStream) -> io::Result<()> {
    let mut file = store.scratch_file()?;
    let reply = {
        let mut out = io::BufWriter::new(&mut file);
        let reply = answer(store, &Query::Backup, &mut out);
        out.flush()?;
        reply.unwrap_or_else(|e| Reply::done(1, Some(e)))
    };
    io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
    let mut out = io::BufWriter::new(stream);
    serde_json::to_writer(&mut out, &reply)?;
    out.write_all(b"\n")?;
    if reply.exit == 0 {
        io::copy(&mut file, &mut out)?;
    }
    out.flush()
}

/// The query line, read within [`CLIENT_TIMEOUT`] in all: a read timeout alone would
/// let a client that sends a byte every few seconds keep its connection for hours.
/// Also what was read past the line: the start of a checked file's bytes.
fn read_query(stream: &UnixStream) -> io::Result<(String, Vec<u8>)> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let late = "the client sent no complete query in time";
    let mut reader = BufReader::new(
        Deadline {
            stream,
            deadline,
            late,
        }
        .take(QUERY_MAX),
    );
    let mut line = String::new();
    reader.read_line(&mut line)?;
    Ok((line, reader.buffer().to_vec()))
}

/// A stream whose every read must end by one instant, and make progress within
/// [`CLIENT_TIMEOUT`] even when that instant is far: a client given minutes for a big
/// file that sends nothing is still cut off at once.
struct Deadline<'s> {
    stream: &'s UnixStream,
    deadline: Instant,
    /// What the error says when the deadline has passed.
    late: &'static str,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, self.late));
        }
        self.stream
            .set_read_timeout(Some(left.min(CLIENT_TIMEOUT)))?;
        self.stream.read(buf)
    }
}

fn write_reply(stream: UnixStream, reply: &Reply, body: &[u8]) -> io::Result<()> {
    send_reply(stream, reply, |out| out.write_all(body))
}

/// The header, then what `body` writes, streamed: a check's response is not built in
/// memory a second time.
fn send_reply(
    stream: UnixStream,
    reply: &Reply,
    body: impl FnOnce(&mut io::BufWriter<UnixStream>) -> io::Result<()>,
) -> io::Result<()> {
    let mut out = io::BufWriter::new(stream);
    serde_json::to_writer(&mut out, reply)?;
    out.write_all(b"\n")?;
    body(&mut out)?;
    out.flush()
}

/// The prefix of the folders, in the store's folder, that hold files being checked.
const CHECK_PREFIX: &str = ".check-";

/// The slowest a client may send a file for checking, in bytes a second: the receive's
/// deadline grows with the size at this rate, so that a big file has the time it needs
/// and a client that trickles its bytes still loses its connection.
const SEND_RATE_MIN: u64 = 1024 * 1024;

/// Free space left on the store's file system past a file kept for checking: a check
/// must not take the room the daemon's own writes need.
const ROOM_KEPT: u64 = 64 * 1024 * 1024;

/// Why a file sent for checking was not judged.
enum Unreceived {
    /// The daemon could not keep it: the client is told why.
    Here(String),
    /// The client did not send it all in time, or went away: nobody to tell.
    There(io::Error),
}

/// `check` of the file sent after the query: kept in a private folder of the store's,
/// judged there like a local check (reading the store while files are being applied;
/// a check writes nothing), removed, and answered with the would-be response.
fn serve_check(
    store: &Store,
    db: &Path,
    stream: UnixStream,
    early: &[u8],
    file: &CheckFile,
) -> io::Result<()> {
    let received = match receive(db, &stream, early, file.size) {
        Ok(received) => received,
        Err(Unreceived::Here(note)) => {
            return write_reply(stream, &Reply::done(EXIT_FAILURE, Some(note)), &[]);
        }
        Err(Unreceived::There(e)) => return Err(e),
    };
    let settings = file.settings();
    let checked = process::check_file(store, &received.path, &settings);
    // Gone before the answer is sent: a client slow to read it holds no disk space.
    drop(received);
    let checked = match checked {
        Ok(checked) => checked,
        Err(e) => {
            let note = Some(renamed(e, &file.name).to_string());
            return write_reply(stream, &Reply::done(EXIT_FAILURE, note), &[]);
        }
    };
    let record = &checked.record;
    let exit = match record.status {
        Status::Ok => EXIT_OK,
        Status::Warning | Status::Error => EXIT_REJECTED,
    };
    // The line a local check prints on stderr after the response.
    let note = format!("{}: {}", file.name, record.status);
    send_reply(stream, &Reply::done(exit, Some(note)), |out| {
        let log = std::iter::once(Ok(checked.log));
        response::write_json(
            out,
            record.status,
            record.message.as_ref(),
            log,
            settings.lang,
        )
    })
}

/// An error about the kept copy, told of the file the client named.
fn renamed(e: process::Error, name: &str) -> process::Error {
    match e {
        process::Error::Read { source, .. } => process::Error::Read {
            path: PathBuf::from(name),
            source,
        },
        other => other,
    }
}

/// A checked file's bytes, kept while they are judged; the folder that holds them is
/// removed when this is dropped, on every path out of [`serve_check`].
struct Received {
    _folder: tempfile::TempDir,
    path: PathBuf,
}

/// Receives `size` bytes (the first of them in `early`, read with the query) into a
/// folder of the store's that is created for them alone, mode 0700, under a name
/// nobody can predict. The bytes go to disk as they come: memory holds a buffer.
fn receive(
    db: &Path,
    stream: &UnixStream,
    early: &[u8],
    size: u64,
) -> Result<Received, Unreceived> {
    room_for(db, size).map_err(Unreceived::Here)?;
    let here = |e: io::Error| {
        Unreceived::Here(format!(
            "the daemon cannot keep the file to check in {}: {e}",
            db.display()
        ))
    };
    let folder = tempfile::Builder::new()
        .prefix(CHECK_PREFIX)
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(db)
        .map_err(here)?;
    let path = folder.path().join("request.json");
    let mut kept = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(here)?;
    let deadline = Instant::now() + send_time(size);
    let late = "the client did not send its file in time";
    let mut from = early
        .chain(Deadline {
            stream,
            deadline,
            late,
        })
        .take(size);
    copy_in(&mut from, &mut kept, size, &here)?;
    Ok(Received {
        _folder: folder,
        path,
    })
}

/// Copies `size` bytes from the client into `kept`, telling the client's failures
/// (which `io::copy` would mix with ours) from a write here that failed (`here`).
fn copy_in(
    from: &mut impl Read,
    kept: &mut fs::File,
    size: u64,
    here: &dyn Fn(io::Error) -> Unreceived,
) -> Result<(), Unreceived> {
    let mut buffer = vec![0; 64 * 1024];
    let mut got = 0;
    while got < size {
        let n = match from.read(&mut buffer) {
            Ok(0) => {
                let short = format!("the client sent {got} of its {size} bytes");
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, short);
                return Err(Unreceived::There(e));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Unreceived::There(e)),
        };
        kept.write_all(&buffer[..n]).map_err(here)?;
        got += n as u64;
    }
    Ok(())
}

/// How long a client has to send `size` bytes for checking.
fn send_time(size: u64) -> Duration {
    CLIENT_TIMEOUT + Duration::from_secs(size / SEND_RATE_MIN)
}

/// Refuses a file that would leave less than [`ROOM_KEPT`] free in the store's file
/// system. Checks at once may each pass and then share the room: what is kept is a
/// margin, not a reservation.
fn room_for(db: &Path, size: u64) -> Result<(), String> {
    // Unknown: the writes will tell.
    let Ok(stat) = rustix::fs::statvfs(db) else {
        return Ok(());
    };
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    if size.saturating_add(ROOM_KEPT) <= free {
        return Ok(());
    }
    Err(format!(
        "the daemon does not take a {size}-byte file to check: {} has {free} bytes free, and keeps {ROOM_KEPT} for the store",
        db.display()
    ))
}

/// Removes the check folders of a daemon killed while it judged them.
fn remove_stale_checks(db: &Path) {
    let Ok(entries) = fs::read_dir(db) else {
        return;
    };
    for entry in entries.flatten() {
        let named = entry
            .file_name()
            .as_bytes()
            .starts_with(CHECK_PREFIX.as_bytes());
        // Not following a link: only a folder a daemon made there is removed.
        if named
            && entry.file_type().is_ok_and(|t| t.is_dir())
            && let Err(e) = fs::remove_dir_all(entry.path())
        {
            tracing::warn!(folder = %entry.path().display(), "cannot remove a stale check folder: {e}");
        }
    }
}

impl Query {
    /// How long a client waits for each read of the answer. The daemon builds the
    /// whole answer before it sends the header, so an export of a big store takes
    /// longer to begin than a lookup; past this, the daemon is taken for wedged.
    fn patience(&self) -> Duration {
        match self {
            Query::Get { .. } | Query::Stats { .. } => Duration::from_secs(10),
            Query::Export { .. } | Query::Backup => Duration::from_secs(300),
            Query::Delete { .. } => Duration::from_secs(60),
            // The file is judged whole before the header: that too grows with its size.
            Query::Check(file) => Duration::from_secs(5) + send_time(file.size),
        }
    }
}

/// How long a client asks again while the daemon says it is busy.
const BUSY_PATIENCE: Duration = Duration::from_secs(10);

/// Asks the daemon holding the store in `db`; the command's output goes to `out`.
/// A busy daemon is asked again, more slowly each time, for up to [`BUSY_PATIENCE`]:
/// a burst of clients (or stalled ones, each cut off after [`CLIENT_TIMEOUT`]) delays
/// a command rather than failing it.
pub fn ask(db: &Path, query: &Query, out: &mut dyn Write) -> io::Result<Reply> {
    let (reply, mut rest) = ask_patiently(db, query, None)?;
    io::copy(&mut rest, out).map_err(|e| no_answer(e, query.patience()))?;
    Ok(reply)
}

/// Asks the daemon holding the store in `db` to check `file`, whose `check.size`
/// bytes are sent after the query (again if the daemon was busy): the header, and
/// the would-be response to read. The caller copies it, so that a failure to write
/// it out is told apart from a daemon that stopped answering.
pub fn ask_check(db: &Path, check: CheckFile, file: &fs::File) -> io::Result<(Reply, Answer)> {
    let upload = Upload {
        file,
        size: check.size,
    };
    let query = Query::Check(check);
    let (reply, rest) = ask_patiently(db, &query, Some(&upload))?;
    let patience = query.patience();
    Ok((reply, Answer { rest, patience }))
}

/// What the daemon sends after its header.
pub struct Answer {
    rest: BufReader<UnixStream>,
    patience: Duration,
}

impl Read for Answer {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.rest.read(buf).map_err(|e| no_answer(e, self.patience))
    }
}

/// A file sent after the query, read by position so that it can be sent again.
struct Upload<'f> {
    file: &'f fs::File,
    size: u64,
}

impl Upload<'_> {
    /// Sends the file. The outer error: it could not be read, or it shrank, and the
    /// exchange is abandoned. The inner one: the daemon stopped reading, which a
    /// refusal does (busy, no room); its reply may still be there.
    fn send(&self, stream: &mut UnixStream) -> io::Result<io::Result<()>> {
        let mut buffer = vec![0; 64 * 1024];
        let mut sent = 0;
        while sent < self.size {
            let left = usize::try_from(self.size - sent).unwrap_or(usize::MAX);
            let chunk = &mut buffer[..left.min(64 * 1024)];
            let n = match self.file.read_at(chunk, sent) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the file shrank while it was sent: {sent} of {} bytes",
                            self.size
                        ),
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Err(e) = stream.write_all(&chunk[..n]) {
                return Ok(Err(e));
            }
            sent += n as u64;
        }
        Ok(Ok(()))
    }
}

/// [`ask_once`] again while the daemon says it is busy, for up to [`BUSY_PATIENCE`].
fn ask_patiently(
    db: &Path,
    query: &Query,
    upload: Option<&Upload<'_>>,
) -> io::Result<(Reply, BufReader<UnixStream>)> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let (reply, rest) = ask_once(db, query, upload)?;
        if !reply.busy || started.elapsed() + pause > BUSY_PATIENCE {
            return Ok((reply, rest));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// One exchange: the reply's header, and the reader holding what follows it.
fn ask_once(
    db: &Path,
    query: &Query,
    upload: Option<&Upload<'_>>,
) -> io::Result<(Reply, BufReader<UnixStream>)> {
    let patience = query.patience();
    let mut stream = UnixStream::connect(socket_path(db))?;
    stream.set_read_timeout(Some(patience))?;
    stream.set_write_timeout(Some(patience))?;
    let mut line = serde_json::to_vec(query)?;
    line.push(b'\n');
    // A busy daemon answers without reading the query and may close first, failing
    // this write; its reply is still there to be read.
    let mut sent = stream.write_all(&line);
    if let (Ok(()), Some(upload)) = (&sent, upload) {
        sent = upload.send(&mut stream)?;
    }
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    match reader.read_line(&mut header) {
        Ok(_) if !header.is_empty() => {}
        Ok(_) => return Err(sent.err().unwrap_or_else(closed_early)),
        Err(e) => return Err(no_answer(e, patience)),
    }
    let reply = serde_json::from_str(&header).map_err(io::Error::other)?;
    Ok((reply, reader))
}

fn closed_early() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the daemon closed the connection without an answer",
    )
}

/// A timeout said in words rather than as "Resource temporarily unavailable".
fn no_answer(e: io::Error, patience: Duration) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {} s", patience.as_secs()),
        ),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let active = Arc::new(AtomicUsize::new(0));
        let mut held: Vec<Slot> = (0..CONNECTIONS_MAX)
            .map(|_| Slot::take(&active).expect("a free slot"))
            .collect();
        assert!(Slot::take(&active).is_none());
        held.pop();
        assert!(Slot::take(&active).is_some());
        drop(held);
        assert_eq!(active.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_check_query_never_shows_its_tokens() {
        let query = Query::Check(CheckFile {
            name: "a.json".into(),
            size: 3,
            tokens: vec!["s3cret".into()],
            max_file_size: 10,
            lang: Lang::Uk,
        });
        assert!(!format!("{query:?}").contains("s3cret"));
        let line = serde_json::to_string(&query).expect("json");
        assert!(line.contains(r#""lang":"uk""#), "{line}");
        let back: Query = serde_json::from_str(&line).expect("read");
        assert!(matches!(back, Query::Check(f) if f.tokens == ["s3cret"] && f.lang == Lang::Uk));
    }

    #[test]
    fn the_header_is_unchanged_unless_busy() {
        let done = serde_json::to_string(&Reply::done(0, None)).expect("json");
        assert_eq!(done, r#"{"exit":0,"note":null}"#);
        let old: Reply = serde_json::from_str(r#"{"exit":1,"note":"x"}"#).expect("read");
        assert!(!old.busy);
    }
}
