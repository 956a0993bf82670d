//! The read commands (`get`, `export`, `stats`) and the local channel that lets them
//! work while a daemon holds the store.
//!
//! sled locks its folder against other processes, so when `get` finds the store held
//! it asks the daemon instead, over a Unix socket inside the store folder
//! (`userdrop.sock`, mode 0600: only the store's owner may read through it).
//!
//! Protocol, one exchange per connection: the client writes one JSON line, a
//! [`Query`]; the daemon answers with one JSON line, a [`Reply`] header (exit code and
//! an optional note for stderr), then the command's stdout bytes until it closes.
//!
//! A client that stalls must not hold up the others: each connection is served on a
//! thread of its own, up to [`CONNECTIONS_MAX`] at once (past that, a "busy" reply at
//! once, and the client asks again), with a deadline for the query and a timeout on
//! every write; the client too gives up on a daemon that does not answer.

use crate::export::{self, Format};
use crate::model::Email;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
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
/// the whole answer in memory; a client past this many is told the daemon is busy.
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
    // We hold the store's lock, so a socket file left here is a dead daemon's.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || accept_all(&store, &listener))?;
    Ok(())
}

fn accept_all(store: &Store, listener: &UnixListener) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => dispatch(store, stream, &active),
            Err(e) => tracing::warn!("control socket: {e}"),
        }
    }
}

/// Hands `stream` to a thread of its own, or answers "busy" at once when
/// [`CONNECTIONS_MAX`] are already being served.
fn dispatch(store: &Store, stream: UnixStream, active: &Arc<AtomicUsize>) {
    let Some(slot) = Slot::take(active) else {
        // The reply is a short line into an empty socket buffer, so it cannot block
        // this thread; the write timeout bounds it all the same.
        if let Err(e) = set_timeouts(&stream).and_then(|()| refuse_busy(stream)) {
            tracing::debug!("control connection: {e}");
        }
        return;
    };
    let store = store.clone();
    let spawned = std::thread::Builder::new()
        .name("control-client".into())
        .spawn(move || {
            let _slot = slot;
            if let Err(e) = serve_one(&store, stream) {
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

fn serve_one(store: &Store, stream: UnixStream) -> io::Result<()> {
    set_timeouts(&stream)?;
    let line = read_query(&stream)?;
    let query: Query = serde_json::from_str(&line).map_err(io::Error::other)?;
    if let Query::Backup = query {
        return serve_backup(store, stream);
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
fn read_query(stream: &UnixStream) -> io::Result<String> {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut reader = BufReader::new(Deadline { stream, deadline }.take(QUERY_MAX));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    Ok(line)
}

/// A stream whose every read must end by one instant.
struct Deadline<'s> {
    stream: &'s UnixStream,
    deadline: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client sent no complete query in time",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

fn write_reply(stream: UnixStream, reply: &Reply, body: &[u8]) -> io::Result<()> {
    let mut out = io::BufWriter::new(stream);
    serde_json::to_writer(&mut out, reply)?;
    out.write_all(b"\n")?;
    out.write_all(body)?;
    out.flush()
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
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        let (reply, mut rest) = ask_once(db, query)?;
        if !reply.busy || started.elapsed() + pause > BUSY_PATIENCE {
            io::copy(&mut rest, out).map_err(|e| no_answer(e, query.patience()))?;
            return Ok(reply);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// One exchange: the reply's header, and the reader holding what follows it.
fn ask_once(db: &Path, query: &Query) -> io::Result<(Reply, BufReader<UnixStream>)> {
    let patience = query.patience();
    let mut stream = UnixStream::connect(socket_path(db))?;
    stream.set_read_timeout(Some(patience))?;
    stream.set_write_timeout(Some(patience))?;
    let mut line = serde_json::to_vec(query)?;
    line.push(b'\n');
    // A busy daemon answers without reading the query and may close first, failing
    // this write; its reply is still there to be read.
    let sent = stream.write_all(&line);
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
    fn the_header_is_unchanged_unless_busy() {
        let done = serde_json::to_string(&Reply::done(0, None)).expect("json");
        assert_eq!(done, r#"{"exit":0,"note":null}"#);
        let old: Reply = serde_json::from_str(r#"{"exit":1,"note":"x"}"#).expect("read");
        assert!(!old.busy);
    }
}
