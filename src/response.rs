//! Building a response in the format of the platform's `users/import` function, and
//! putting it on disk atomically.
//!
//! The log is streamed, one line per user, so a million-user response never sits in
//! memory whole:
//!
//! ```text
//! {"status":"WARNING","response":{"log":[
//! {"info":[{"code":0,"message":"User ivan@mail.net added successfully"}]},
//! {"info":[{"code":1,"message":"Mandatory field title is missing"}, ...]}
//! ]}}
//! ```

use crate::messages::{Lang, Message};
use crate::model::Status;
use serde::Serialize;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// `NAME.json` → `NAME.response.json`; any other name gets `.response.json` appended.
pub fn response_path(request: &Path) -> PathBuf {
    // Bytes, not str: a Unix file name need not be UTF-8, and its response must sit
    // beside it under the same stem.
    let name = request.file_name().unwrap_or_default().as_bytes();
    let stem = name.strip_suffix(b".json").unwrap_or(name);
    let mut response = stem.to_vec();
    response.extend_from_slice(b".response.json");
    request.with_file_name(OsString::from_vec(response))
}

/// The hidden name a file (a response, the metrics) is written under before it is
/// renamed into place.
pub fn temp_path(response: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(response.file_name().unwrap_or_default());
    name.push(".tmp");
    response.with_file_name(name)
}

#[derive(Serialize)]
struct Info<'a> {
    code: u8,
    message: &'a str,
}

#[derive(Serialize)]
struct Entry<'a> {
    info: Vec<Info<'a>>,
}

/// Writes a whole response: `status`, then for `ERROR` the file-level `message`, or
/// for the others one log entry per user, in request order.
pub fn write_json<W: Write>(
    out: &mut W,
    status: Status,
    message: Option<&Message>,
    log: impl Iterator<Item = io::Result<Vec<Vec<Message>>>>,
    lang: Lang,
) -> io::Result<()> {
    write!(
        out,
        "{{\"status\":\"{}\",\"response\":{{\"log\":[",
        status.as_str()
    )?;
    let mut first = true;
    for chunk in log {
        for user in chunk? {
            let texts: Vec<String> = user.iter().map(|m| m.text(lang)).collect();
            let entry = Entry {
                info: user
                    .iter()
                    .zip(&texts)
                    .map(|(m, text)| Info {
                        code: m.code().into(),
                        message: text,
                    })
                    .collect(),
            };
            out.write_all(if first { b"\n" } else { b",\n" })?;
            first = false;
            serde_json::to_writer(&mut *out, &entry)?;
        }
    }
    if !first {
        out.write_all(b"\n")?;
    }
    out.write_all(b"]")?;
    if let Some(m) = message {
        out.write_all(b",\"message\":")?;
        serde_json::to_writer(&mut *out, &m.text(lang))?;
    }
    out.write_all(b"}}\n")?;
    Ok(())
}

/// A response is for whoever dropped the request: it takes the group of its folder
/// (the inbox's upload group) and mode 0640, so that group can read it but not change
/// it, whatever the daemon's umask. Taking the group needs the daemon's user to be in
/// it; when it is not, the response keeps the daemon's group.
fn share_with_folder(file: &File, target: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let group = fs::metadata(folder(target))?.gid();
    if file.metadata()?.gid() != group
        && let Err(e) = std::os::unix::fs::fchown(file, None, Some(group))
    {
        tracing::debug!(group, "a response keeps the daemon's group: {e}");
    }
    file.set_permissions(fs::Permissions::from_mode(0o640))
}

/// A response complete under its temporary name, not yet in place.
#[derive(Debug)]
pub struct Staged {
    temp: PathBuf,
    target: PathBuf,
    /// Its data is already durable (fsynced by [`stage`]).
    synced: bool,
}

/// How a staged response's data is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// fsync of the file itself, at once.
    EachFile,
    /// By [`publish`], for the whole group at once: one `syncfs` per folder instead of
    /// an fsync per file, which dominated 10 000 small files.
    Later,
}

/// Writes a response under its temporary name (syncing it now, or leaving that to
/// [`publish`]); [`publish`] puts it in place. Splitting the steps lets a group of
/// responses share one sync of their data and one of each folder.
pub fn stage(
    target: &Path,
    sync: Sync,
    fill: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> io::Result<Staged> {
    let temp = temp_path(target);
    let result = (|| {
        let file = File::create(&temp)?;
        share_with_folder(&file, target)?;
        let mut out = BufWriter::with_capacity(64 * 1024, &file);
        fill(&mut out)?;
        out.flush()?;
        drop(out);
        match sync {
            Sync::EachFile => file.sync_all(),
            Sync::Later => Ok(()),
        }
    })();
    match result {
        Ok(()) => Ok(Staged {
            temp,
            target: target.to_path_buf(),
            synced: sync == Sync::EachFile,
        }),
        Err(e) => {
            // Leave no stray temporary file behind; the error is what matters.
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

/// The folder a response is written in.
fn folder(target: &Path) -> &Path {
    target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The distinct folders of `staged`, in order of first appearance.
fn folders<'a>(staged: impl IntoIterator<Item = &'a Staged>) -> Vec<&'a Path> {
    let mut folders: Vec<&Path> = Vec::new();
    for s in staged {
        let dir = folder(&s.target);
        if !folders.contains(&dir) {
            folders.push(dir);
        }
    }
    folders
}

/// `syncfs` on the filesystem of `dir`: writes back everything dirty there.
fn sync_filesystem(dir: &Path) -> io::Result<()> {
    let folder = File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `folder` keeps open.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&folder)) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes the data of responses not yet synced durable (one `syncfs` per folder),
/// renames every response into place, then syncs each folder once, so the renames
/// survive a power cut. If the data cannot be made durable, nothing is put in place.
pub fn publish(staged: Vec<Staged>) -> io::Result<()> {
    let unsynced = folders(staged.iter().filter(|s| !s.synced));
    if let Err(e) = unsynced.into_iter().try_for_each(sync_filesystem) {
        for s in staged {
            let _ = fs::remove_file(&s.temp);
        }
        return Err(e);
    }
    let mut first_error = None;
    let mut renamed = Vec::with_capacity(staged.len());
    for s in &staged {
        match fs::rename(&s.temp, &s.target) {
            Ok(()) => renamed.push(s),
            Err(e) => {
                let _ = fs::remove_file(&s.temp);
                first_error.get_or_insert(e);
            }
        }
    }
    for dir in folders(renamed) {
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            response_path(Path::new("w/a.json")),
            Path::new("w/a.response.json")
        );
        assert_eq!(
            response_path(Path::new("b.txt")),
            Path::new("b.txt.response.json")
        );
        assert_eq!(
            temp_path(Path::new("w/a.response.json")),
            Path::new("w/.a.response.json.tmp")
        );
    }

    #[test]
    fn a_response_takes_the_folder_group_and_mode_0640() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        // Only root may give the folder a group it is not in; as root this shows the
        // response follows the folder rather than the process.
        let group = 4242;
        let is_root = std::os::unix::fs::chown(dir.path(), None, Some(group)).is_ok();
        let target = dir.path().join("a.response.json");
        publish(vec![
            stage(&target, Sync::EachFile, |out| out.write_all(b"{}")).unwrap(),
        ])
        .unwrap();
        let meta = fs::metadata(&target).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(meta.gid(), fs::metadata(dir.path()).unwrap().gid());
        if is_root {
            assert_eq!(meta.gid(), group);
        }
    }

    #[test]
    fn shapes() {
        let mut out = Vec::new();
        let log = vec![Ok(vec![
            vec![Message::Added {
                email: "a@b.co".into(),
            }],
            vec![
                Message::Missing {
                    field: "title".into(),
                },
                Message::Unhandled { detail: "x".into() },
            ],
        ])];
        write_json(&mut out, Status::Warning, None, log.into_iter(), Lang::En).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["status"], "WARNING");
        assert_eq!(v["response"]["log"][1]["info"][1]["code"], 3);
        let mut out = Vec::new();
        let msg = Message::TokenMissing;
        write_json(
            &mut out,
            Status::Error,
            Some(&msg),
            std::iter::empty(),
            Lang::En,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["response"]["log"], serde_json::json!([]));
        assert!(
            v["response"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Authorization failed")
        );
    }
}
