//! The right to erasure (`userdrop delete EMAIL...`, SPEC §6): the users go from the
//! store, and the admin is told where the person still is. Request files in the inbox
//! (and, with retention, the archive) hold the address, and so do their responses
//! ("User … added successfully"); userdrop never rewrites a file it did not write, so
//! it names them, and with `--purge-files` removes the whole pairs whose request holds
//! no one else.
//!
//! A request is removed before its response (SPEC §4: a response removed alone makes
//! the daemon apply its request again, which would store the person again), and each
//! removal is synced before the next.
//!
//! The search reads every `.json` file directly in the inbox (never in its sub-folders:
//! they are the uploader's, and one swapped for a link would lead the search, and a
//! removal, outside the inbox) and one folder deep in the archive (its day folders),
//! without following links, and matches the address in any letter case. An address written with JSON escapes (`\u0040`) is not found;
//! no producer seen writes one.

use crate::inbox;
use crate::model::Email;
use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where erased people are still mentioned, and what `--purge-files` removed.
#[derive(Debug, Default)]
pub struct Mentions {
    /// Files that still hold one of the addresses, by path.
    pub remaining: Vec<PathBuf>,
    /// Files removed by `--purge-files`, in the order removed.
    pub removed: Vec<PathBuf>,
}

/// Finds the `.json` files directly in `inbox`, and in the day folders of `archive`,
/// that mention any of `emails`; with `purge`, removes each request that holds only
/// them, then its response.
pub fn find(
    inbox: &Path,
    archive: Option<&Path>,
    emails: &[Email],
    purge: bool,
) -> io::Result<Mentions> {
    let needles: Vec<Vec<u8>> = emails
        .iter()
        .map(|e| e.as_str().as_bytes().to_ascii_lowercase())
        .collect();
    let mut mentions = Mentions::default();
    if needles.is_empty() {
        return Ok(mentions);
    }
    let mut files = json_files(inbox, false)?;
    if let Some(archive) = archive {
        files.extend(json_files(archive, true)?);
    }
    let mut found = Vec::new();
    for file in files {
        if mentions_any(&file, &needles)? {
            found.push(file);
        }
    }
    found.sort();
    let erased: HashSet<&str> = emails.iter().map(Email::as_str).collect();
    let mut gone: HashSet<PathBuf> = HashSet::new();
    if purge {
        for request in found.iter().filter(|f| is_request(f)) {
            if holds_only(request, &erased) {
                let response = inbox::response_path(request);
                remove_synced(request)?;
                mentions.removed.push(request.clone());
                gone.insert(request.clone());
                if found.contains(&response) {
                    remove_synced(&response)?;
                    mentions.removed.push(response.clone());
                    gone.insert(response);
                }
            }
        }
    }
    mentions.remaining = found.into_iter().filter(|f| !gone.contains(f)).collect();
    Ok(mentions)
}

fn is_request(path: &Path) -> bool {
    path.file_name().is_some_and(inbox::is_request_name)
}

/// The `.json` files directly in `folder`, and with `days` in its sub-folders (the
/// archive's days).
fn json_files(folder: &Path, days: bool) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let entries = match fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() && days {
            for inner in fs::read_dir(entry.path())? {
                let inner = inner?;
                if inner.file_type()?.is_file() && is_json(&inner.path()) {
                    files.push(inner.path());
                }
            }
        } else if kind.is_file() && is_json(&entry.path()) {
            files.push(entry.path());
        }
    }
    Ok(files)
}

fn is_json(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// Opens a file the uploader may have swapped for a link or a FIFO since it was
/// listed: no link is followed, no open blocks, and only a regular file is read.
fn open_regular(path: &Path) -> io::Result<Option<fs::File>> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    match file {
        Ok(f) if f.metadata()?.is_file() => Ok(Some(f)),
        Ok(_) => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the file holds one of `needles` (lower-case), in any letter case.
fn mentions_any(path: &Path, needles: &[Vec<u8>]) -> io::Result<bool> {
    let Some(mut file) = open_regular(path)? else {
        return Ok(false);
    };
    let longest = needles.iter().map(Vec::len).max().unwrap_or(0);
    let mut window: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            return Ok(false);
        }
        window.extend(chunk[..n].iter().map(u8::to_ascii_lowercase));
        if needles
            .iter()
            .any(|needle| window.windows(needle.len()).any(|w| w == needle.as_slice()))
        {
            return Ok(true);
        }
        // Keep the tail an address could straddle.
        let keep = window.len().min(longest.saturating_sub(1));
        window.drain(..window.len() - keep);
    }
}

/// Whether every user of the request at `path` is one of `erased`: it then holds no
/// one else, and removing it loses no one's data. A file that does not parse as a
/// request holds no one provably, and is kept.
fn holds_only(path: &Path, erased: &HashSet<&str>) -> bool {
    #[derive(serde::Deserialize)]
    struct Request {
        users: Vec<User>,
    }
    #[derive(serde::Deserialize)]
    struct User {
        email: Option<String>,
    }
    let Ok(Some(file)) = open_regular(path) else {
        return false;
    };
    let Ok(request) = serde_json::from_reader::<_, Request>(io::BufReader::new(file)) else {
        return false;
    };
    !request.users.is_empty()
        && request.users.iter().all(|u| {
            u.email
                .as_deref()
                .and_then(Email::parse)
                .is_some_and(|e| erased.contains(e.as_str()))
        })
}

fn remove_synced(path: &Path) -> io::Result<()> {
    fs::remove_file(path)?;
    crate::store::sync_folder_of(path)
}
