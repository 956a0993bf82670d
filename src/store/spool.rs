//! The store's local folder of files beside the engine: the log *spool* of a file being
//! applied (`<xxh3 of path>.log`, one JSON line per user; the sled engine's) and the
//! *private copies* of requests (`<xxh3 of path>.req`, both engines'). It exists
//! because neither belongs in the engine: a copy is as large as its request, and a
//! big file's log is as large as its response. Files written here are synced before
//! anything durable counts on them ([`Spool::sync`]), and removed only after the
//! removal of the record that counted on them is durable ([`Spool::retire`]).

use super::{Result, StoreError, decode};
use crate::messages::Message;
use chrono::Utc;
use std::fs;
use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The folder of log spool files.
pub(super) struct Spool {
    pub(super) dir: PathBuf,
    pending: Mutex<Pending>,
}

/// Spool files waiting for the next flush.
#[derive(Default)]
struct Pending {
    /// Written since: synced before sled is flushed.
    unsynced: Vec<PathBuf>,
    /// A spool file was created since: the spool folder's entries must be synced too,
    /// or a power cut could keep a record that counts on a file whose name was lost.
    created: bool,
    /// No longer counted on by any record, but only once that removal is flushed: a
    /// crash before it brings the record back, and the record needs its spool.
    retired: Vec<PathBuf>,
}

impl Spool {
    pub(super) fn new(dir: PathBuf) -> Spool {
        Spool {
            dir,
            pending: Mutex::new(Pending::default()),
        }
    }

    /// The folder `dir`, perhaps just made: its own entry is synced by the first
    /// sync, with the first file written in it.
    pub(super) fn made(dir: PathBuf) -> Spool {
        Spool {
            dir,
            pending: Mutex::new(Pending {
                created: true,
                ..Pending::default()
            }),
        }
    }

    pub(super) fn path(&self, request: &Path) -> PathBuf {
        self.named(request, "log")
    }

    /// The private copy of a request applied in several steps (see [`Store::new_copy`]).
    pub(super) fn copy_path(&self, request: &Path) -> PathBuf {
        self.named(request, "req")
    }

    fn named(&self, request: &Path, extension: &str) -> PathBuf {
        let id = xxhash_rust::xxh3::xxh3_128(request.as_os_str().as_bytes());
        self.dir.join(format!("{id:032x}.{extension}"))
    }

    /// `path` is written and must be synced by the next flush.
    pub(super) fn written(&self, path: PathBuf, created: bool) {
        let mut pending = self.pending();
        pending.retired.retain(|p| *p != path);
        pending.created |= created;
        if !pending.unsynced.contains(&path) {
            pending.unsynced.push(path);
        }
    }

    /// Appends `log` to the spool of `request` after its first `from` bytes (cutting
    /// off anything past them); returns the new length.
    /// Appends `log` to the spool of `request` after its first `from` bytes (cutting
    /// off anything past them). Returns the new length and whether the file was
    /// created; it is synced only once [`Spool::written`] says a record is to count
    /// on it (a step held back has none yet).
    pub(super) fn append(
        &self,
        request: &Path,
        from: u64,
        log: &[Vec<Message>],
    ) -> Result<(u64, bool)> {
        let path = self.path(request);
        let io = |e: io::Error| StoreError::Spool {
            path: path.clone(),
            source: e,
        };
        let created = from == 0 && !path.exists();
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
        Ok((len, created))
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn sync(&self) -> Result<()> {
        let (unsynced, created) = {
            let mut pending = self.pending();
            (
                std::mem::take(&mut pending.unsynced),
                std::mem::take(&mut pending.created),
            )
        };
        if created {
            fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::Spool {
                    path: self.dir.clone(),
                    source: e,
                })?;
        }
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

    /// `request`'s spool and private copy go once the removal of its last record is
    /// flushed.
    pub(super) fn retire(&self, request: &Path) {
        let mut pending = self.pending();
        for path in [self.path(request), self.copy_path(request)] {
            if !pending.retired.contains(&path) {
                pending.retired.push(path);
            }
        }
    }

    /// After a flush: removes the spool files retired before it.
    pub(super) fn remove_retired(&self, retired: Vec<PathBuf>) {
        for path in retired {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                // Harmless: a leftover is cut to size when reused, removed at the next start.
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove a spool file; harmless: the next start removes it")
                }
            }
        }
    }

    /// The committed log of `request`, in chunks of up to 1 000 users.
    pub(super) fn read(
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

    /// Takes the files retired so far: to remove once the removal of their records
    /// is durable.
    pub(super) fn take_retired(&self) -> Vec<PathBuf> {
        std::mem::take(&mut self.pending().retired)
    }

    /// Whether anything written waits for a sync.
    pub(super) fn unsynced(&self) -> bool {
        let pending = self.pending();
        pending.created || !pending.unsynced.is_empty()
    }

    /// A new private copy of `request`, empty (see `Store::new_copy`).
    pub(super) fn new_copy(&self, request: &Path) -> Result<fs::File> {
        let path = self.copy_path(request);
        let created = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path);
        let file = created.map_err(|e| StoreError::Spool {
            path: path.clone(),
            source: e,
        })?;
        self.written(path, true);
        Ok(file)
    }

    pub(super) fn discard_copy(&self, request: &Path) {
        if self.copy_path(request).exists() {
            self.retire(request);
        }
    }

    pub(super) fn open_copy(&self, request: &Path) -> Result<Option<fs::File>> {
        let path = self.copy_path(request);
        match fs::File::open(&path) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Spool { path, source: e }),
        }
    }

    /// Removes the files of requests not in `live` (no record counts on them): left
    /// by a crash between clearing a record and removing its files.
    pub(super) fn remove_orphans(&self, live: impl IntoIterator<Item = PathBuf>) {
        let mut keep = std::collections::HashSet::new();
        for request in live {
            keep.insert(self.path(&request));
            keep.insert(self.copy_path(&request));
        }
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            if !keep.contains(&entry.path()) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// A file in this folder that no other process can open, gone when closed.
    pub(super) fn scratch_file(&self) -> io::Result<fs::File> {
        use rustix::fs::{Mode, OFlags};
        let mode = Mode::from_raw_mode(0o600);
        match rustix::fs::open(
            &self.dir,
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            mode,
        ) {
            Ok(fd) => Ok(fs::File::from(fd)),
            // A file system without O_TMPFILE: a named file, removed at once.
            Err(_) => {
                let path = self.dir.join(format!(
                    ".scratch-{}-{}.tmp",
                    std::process::id(),
                    Utc::now().timestamp_nanos_opt().unwrap_or_default()
                ));
                let file = fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)?;
                fs::remove_file(&path)?;
                Ok(file)
            }
        }
    }
}
