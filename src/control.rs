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

use crate::export::{self, Format};
use crate::model::Email;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The name of the socket inside the store folder.
pub const SOCKET: &str = "userdrop.sock";

/// A read command.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Query {
    Get { email: String },
    Export { format: Format },
    Stats { json: bool },
}

/// The header of an answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reply {
    pub exit: u8,
    /// A line for stderr, such as "no user with email …".
    pub note: Option<String>,
}

/// Answers `query` from `store`, writing what the command prints to `out`.
pub fn answer(store: &Store, query: &Query, out: &mut dyn Write) -> Result<Reply, String> {
    let ok = Reply {
        exit: 0,
        note: None,
    };
    match query {
        Query::Get { email } => {
            let Some(email) = Email::parse(email) else {
                return Ok(Reply {
                    exit: 1,
                    note: Some(format!(
                        "{:?} is not a valid email, so no user has it",
                        email.trim()
                    )),
                });
            };
            match store.user(&email).map_err(|e| e.to_string())? {
                Some(user) => {
                    let text =
                        serde_json::to_string_pretty(&user.flat()).map_err(|e| e.to_string())?;
                    writeln!(out, "{text}").map_err(|e| e.to_string())?;
                    Ok(ok)
                }
                None => Ok(Reply {
                    exit: 1,
                    note: Some(format!("no user with email {email}")),
                }),
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
    }
}

pub fn socket_path(db: &Path) -> PathBuf {
    db.join(SOCKET)
}

/// Serves read queries on the store's socket from a background thread, for as long as
/// the process lives. Call it only while holding the store.
pub fn serve(store: Store, db: &Path) -> io::Result<()> {
    let path = socket_path(db);
    // We hold the store's lock, so a socket file left here is a dead daemon's.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        if let Err(e) = serve_one(&store, stream) {
                            tracing::debug!("control connection: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("control socket: {e}"),
                }
            }
        })?;
    Ok(())
}

fn serve_one(store: &Store, stream: UnixStream) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(stream.try_clone()?.take(64 * 1024)).read_line(&mut line)?;
    let query: Query = serde_json::from_str(&line).map_err(io::Error::other)?;
    // Answer into memory first: the header carries the exit code, known only at the end.
    let mut body = Vec::new();
    let reply = answer(store, &query, &mut body).unwrap_or_else(|e| Reply {
        exit: 1,
        note: Some(e),
    });
    let mut out = io::BufWriter::new(stream);
    serde_json::to_writer(&mut out, &reply)?;
    out.write_all(b"\n")?;
    out.write_all(&body)?;
    out.flush()
}

/// Asks the daemon holding the store in `db`; the command's output goes to `out`.
pub fn ask(db: &Path, query: &Query, out: &mut dyn Write) -> io::Result<Reply> {
    let mut stream = UnixStream::connect(socket_path(db))?;
    serde_json::to_writer(&mut stream, query)?;
    stream.write_all(b"\n")?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header)?;
    let reply: Reply = serde_json::from_str(&header).map_err(io::Error::other)?;
    io::copy(&mut reader, out)?;
    Ok(reply)
}
