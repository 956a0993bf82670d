//! The store's format version: which layout of keys and records a store holds, so that
//! a binary never reads (or, worse, writes) a store laid out by a version it does not
//! know (SPEC §6).
//!
//! It is kept in a small text file, `format` in the store folder, rather than in sled:
//! it must be read before sled opens the store, because opening already writes (sled
//! recovers its log and rewrites `conf`), and a store refused must be left untouched.
//! A store without the file was made before versions were recorded; its layout is
//! version 1, and the file is written the first time it is opened.
//!
//! Version 2 writes users in a compact binary record and reads version 1's JSON
//! records as they are, so a store of version 1 is moved to version 2 at its open by
//! writing the file alone (see `store::embedded`): nothing is rewritten, and from then
//! on a binary that reads only version 1 refuses it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The format this binary writes.
pub const CURRENT: u32 = 2;

/// The oldest format this binary still opens (and moves to [`CURRENT`]).
const OLDEST: u32 = 1;

/// The file's name in the store folder.
const FILE: &str = "format";

/// Why a store's format cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error(
        "the store {path} is in format version {found}, which this userdrop ({binary}) does not know: it reads version {CURRENT} (and older ones from {OLDEST}). Run the userdrop that wrote it, or move the store: `userdrop backup FILE` with that binary, then `userdrop restore FILE` with this one into an empty --db"
    )]
    Unknown {
        path: PathBuf,
        found: u32,
        binary: &'static str,
    },
    #[error(
        "the store's format file {path} holds {text:?}, not a version number; it was not written by userdrop"
    )]
    Unreadable { path: PathBuf, text: String },
    #[error(
        "cannot read the store's format file {path}: {source}{}",
        owner_hint(source)
    )]
    Io { path: PathBuf, source: io::Error },
}

/// For a permission error: who may open a store (its folder is 0700).
pub fn owner_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            "; the store is its owner's alone (0700): run this as the user the daemon runs as (`sudo -u userdrop userdrop ...`)"
        }
        _ => "",
    }
}

/// What a store folder says of its format, read without writing anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    /// No file: a new store, or one made before versions were recorded (version 1).
    Nothing,
    /// An older version this binary reads, to be recorded as [`CURRENT`] once open.
    Older(u32),
    Current,
}

/// Reads the store's format; a version this binary does not know is an error.
pub fn check(dir: &Path) -> Result<Recorded, FormatError> {
    let path = dir.join(FILE);
    let text = match read_small(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recorded::Nothing),
        Err(source) => return Err(FormatError::Io { path, source }),
    };
    let found: u32 = match text.trim().parse() {
        Ok(n) => n,
        Err(_) => {
            let text: String = text.chars().take(40).collect();
            return Err(FormatError::Unreadable { path, text });
        }
    };
    if found == CURRENT {
        Ok(Recorded::Current)
    } else if (OLDEST..CURRENT).contains(&found) {
        Ok(Recorded::Older(found))
    } else {
        Err(FormatError::Unknown {
            path: dir.to_path_buf(),
            found,
            binary: env!("CARGO_PKG_VERSION"),
        })
    }
}

/// The start of the file at `path`, which must be a regular file: a link is not
/// followed and a FIFO does not block (it is refused), and a huge file is not read
/// whole.
fn read_small(path: &Path) -> io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::other(
                "it is a symbolic link, which userdrop does not follow; put the file itself there",
            ),
            _ => e,
        })?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(
            "it is not a regular file; userdrop writes it as one",
        ));
    }
    let mut bytes = Vec::new();
    file.take(64).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Records [`CURRENT`] in the store folder, durably: written under a temporary name,
/// synced, renamed into place, and the folder synced.
pub fn record(dir: &Path) -> io::Result<()> {
    let temp = dir.join(".format.tmp");
    let mut file = fs::File::create(&temp)?;
    writeln!(file, "{CURRENT}")?;
    file.sync_all()?;
    fs::rename(&temp, dir.join(FILE))?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_is_recorded_and_then_current() {
        let dir = tempfile::tempdir().expect("a folder");
        assert_eq!(check(dir.path()).expect("no file"), Recorded::Nothing);
        record(dir.path()).expect("recorded");
        assert_eq!(check(dir.path()).expect("read"), Recorded::Current);
        assert_eq!(
            fs::read_to_string(dir.path().join(FILE)).expect("read"),
            "2\n"
        );
    }

    #[test]
    fn an_older_version_is_read() {
        let dir = tempfile::tempdir().expect("a folder");
        fs::write(dir.path().join(FILE), "1\n").expect("written");
        assert_eq!(check(dir.path()).expect("read"), Recorded::Older(1));
        fs::write(dir.path().join(FILE), "0\n").expect("written");
        assert!(check(dir.path()).is_err(), "no version 0 was ever written");
    }

    #[test]
    fn a_future_or_garbled_version_is_refused_naming_it() {
        let dir = tempfile::tempdir().expect("a folder");
        fs::write(dir.path().join(FILE), "7\n").expect("written");
        let e = check(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("format version 7") && e.contains("reads version 2"),
            "{e}"
        );
        assert!(
            e.contains("userdrop backup") && e.contains("userdrop restore"),
            "{e}"
        );
        fs::write(dir.path().join(FILE), "seven").expect("written");
        let e = check(dir.path()).unwrap_err().to_string();
        assert!(e.contains("\"seven\""), "{e}");
    }
}
