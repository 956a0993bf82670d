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

use crate::inbox::Folder;
use crate::messages::{Lang, Message};
use crate::model::Status;
use serde::Serialize;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, Write};

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
/// it; when it is not, the response keeps the daemon's group. Both calls act on the
/// descriptor of the file userdrop itself created, never on a name.
fn share_with_folder(file: &File, folder: &Folder) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let group = folder.group()?;
    if file.metadata()?.gid() != group
        && let Err(e) = std::os::unix::fs::fchown(file, None, Some(group))
    {
        tracing::debug!(group, "a response keeps the daemon's group: {e}");
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o640))
}

/// A response complete under its temporary name, not yet in place.
#[derive(Debug)]
pub struct Staged {
    file: File,
    temp: OsString,
    target: OsString,
    /// Its data is already durable (fsynced by [`stage`]).
    synced: bool,
}

/// How a staged response's data is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sync {
    /// fsync of the file itself, at once.
    EachFile,
    /// By [`publish`], for the whole group at once: one `syncfs` instead of an fsync
    /// per file (which dominated 10 000 small files) where the file system is trusted
    /// with it, else an fsync each.
    Later,
}

/// Writes a response under a fresh temporary name in `folder` (syncing it now, or
/// leaving that to [`publish`]); [`publish`] puts it in place as `target`. Splitting
/// the steps lets a group of responses share one sync of their data and of the folder.
pub fn stage(
    folder: &Folder,
    target: &OsStr,
    sync: Sync,
    fill: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> io::Result<Staged> {
    let (file, temp) = folder.create_temp()?;
    let result = (|| {
        share_with_folder(&file, folder)?;
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
            file,
            temp,
            target: target.to_owned(),
            synced: sync == Sync::EachFile,
        }),
        Err(e) => {
            // Leave no stray temporary file behind; the error is what matters.
            let _ = folder.remove(&temp);
            Err(e)
        }
    }
}

/// Makes the data of the responses staged in `folder` durable, puts each in place,
/// then syncs the folder once so that the renames survive a power cut. Returns one
/// result per response, in order: a response that cannot be put in place costs that
/// response alone. `Ok` means its data and its name are durable.
pub fn publish(folder: &Folder, staged: Vec<Staged>) -> Vec<io::Result<()>> {
    let shared = if staged.iter().any(|s| !s.synced) {
        folder.sync_filesystem()
    } else {
        Ok(true)
    };
    let mut results: Vec<io::Result<()>> = staged
        .iter()
        .map(|s| match &shared {
            _ if s.synced => Ok(()),
            Ok(true) => Ok(()),
            Ok(false) => s.file.sync_all(),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        })
        .collect();
    for (s, result) in staged.iter().zip(results.iter_mut()) {
        match result {
            Ok(()) => *result = folder.place(&s.temp, &s.target),
            Err(_) => {
                let _ = folder.remove(&s.temp);
            }
        }
    }
    if results.iter().any(|r| r.is_ok())
        && let Err(e) = folder.sync()
    {
        for result in results.iter_mut().filter(|r| r.is_ok()) {
            *result = Err(io::Error::new(
                e.kind(),
                format!("cannot sync the folder: {e}"),
            ));
        }
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_response_takes_the_folder_group_and_mode_0640() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        // Only root may give the folder a group it is not in; as root this shows the
        // response follows the folder rather than the process.
        let group = 4242;
        let is_root = std::os::unix::fs::chown(dir.path(), None, Some(group)).is_ok();
        let target = dir.path().join("a.response.json");
        let folder = Folder::open(dir.path()).unwrap();
        let staged = stage(
            &folder,
            OsStr::new("a.response.json"),
            Sync::EachFile,
            |out| out.write_all(b"{}"),
        )
        .unwrap();
        for result in publish(&folder, vec![staged]) {
            result.unwrap();
        }
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
