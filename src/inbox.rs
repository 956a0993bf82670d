//! The inbox: which names are requests, and every system call that touches the folder.
//!
//! The uploader is not trusted (SPEC §4): between any two of our calls, any name in
//! the folder may become a symbolic link, a FIFO, a device, a folder, or a hard link to
//! a file elsewhere. So nothing here checks a path and then uses it. The folder is
//! opened once and held ([`Folder`]); every name is reached relative to that
//! descriptor, and every call is one that a swapped name cannot turn against us:
//!
//! - a request is opened with `O_NOFOLLOW | O_NONBLOCK` (a link fails, a FIFO does not
//!   block) and judged by `fstat` of the descriptor it gave;
//! - a response is written under a fresh random hidden name created with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW` (never an existing name, never through a link),
//!   and put in place with `renameat2(RENAME_NOREPLACE)`, which replaces nothing; a
//!   regular file already there (the same response written before a crash) is
//!   replaced by a plain `renameat`, which replaces the name, never writes through it;
//!   anything else there is an error about that one response;
//! - names are removed with `unlinkat`, which removes a link, not its target, and
//!   fails on a folder;
//! - retention moves a name into another held folder with `renameat2(RENAME_NOREPLACE)`
//!   (the name itself, never through a link, replacing nothing), and opens a child
//!   folder with `O_NOFOLLOW`.

use crate::model::Identity;
use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The longest file name most file systems allow, in bytes.
pub const NAME_MAX: usize = 255;

/// Whether a file name is a request's (SPEC §4): ends in `.json` in any letter case,
/// does not start with `.`, and is not a response. Temporary upload names
/// (`x.json.part`, `.x.json`) fail.
pub fn is_request_name(name: &OsStr) -> bool {
    let name = name.as_bytes();
    ends_with_ignoring_case(name, b".json")
        && name.len() > b".json".len()
        && !name.starts_with(b".")
        && !ends_with_ignoring_case(name, b".response.json")
}

fn ends_with_ignoring_case(name: &[u8], suffix: &[u8]) -> bool {
    name.len() >= suffix.len() && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// `NAME.json` (any case) → `NAME.response.json`; any other name gets `.response.json`
/// appended. Bytes, not str: a Unix file name need not be UTF-8.
pub fn response_name(request: &OsStr) -> OsString {
    let name = request.as_bytes();
    let stem = if ends_with_ignoring_case(name, b".json") {
        &name[..name.len() - b".json".len()]
    } else {
        name
    };
    let mut response = stem.to_vec();
    response.extend_from_slice(b".response.json");
    OsString::from_vec(response)
}

/// The response of the request at `path`, as a path.
pub fn response_path(request: &Path) -> PathBuf {
    request.with_file_name(response_name(request.file_name().unwrap_or_default()))
}

/// What is at a name, as `fstatat` without following a link saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Look {
    pub kind: Kind,
    pub identity: Identity,
    /// The inode's change time: moves on `chmod` too, which the identity ignores.
    pub changed: (i64, i64),
}

/// The kind of object at a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Other(&'static str),
}

impl Kind {
    fn of(mode: u32) -> Kind {
        match FileType::from_raw_mode(mode as _) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Other("folder"),
            FileType::Symlink => Kind::Other("symbolic link"),
            FileType::Fifo => Kind::Other("FIFO"),
            FileType::Socket => Kind::Other("socket"),
            FileType::CharacterDevice | FileType::BlockDevice => Kind::Other("device"),
            FileType::Unknown => Kind::Other("special file"),
        }
    }
}

/// The identity of an open file, from its metadata: the same values [`Folder::look`]
/// gives for its name.
pub fn identity_of(meta: &std::fs::Metadata) -> Identity {
    use std::os::unix::fs::MetadataExt;
    Identity {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime: meta.mtime(),
        mtime_ns: meta.mtime_nsec(),
    }
}

// The `stat` fields' types differ between architectures; the casts are not no-ops
// everywhere.
#[allow(clippy::unnecessary_cast)]
fn look_of(stat: &rfs::Stat) -> Look {
    Look {
        kind: Kind::of(stat.st_mode as u32),
        identity: Identity {
            dev: stat.st_dev as u64,
            ino: stat.st_ino as u64,
            size: stat.st_size as u64,
            mtime: stat.st_mtime as i64,
            mtime_ns: stat.st_mtime_nsec as i64,
        },
        changed: (stat.st_ctime as i64, stat.st_ctime_nsec as i64),
    }
}

/// A request opened for reading, and what it was when opened.
pub struct Opened {
    pub file: File,
    pub identity: Identity,
}

/// What the inbox holds at a scan.
#[derive(Debug, Default)]
pub struct Scan {
    /// Requests without a response, in byte order of their names.
    pub waiting: Vec<OsString>,
    /// Requests whose response name would be longer than [`NAME_MAX`]: never taken.
    pub too_long: Vec<OsString>,
}

/// A folder held open: every name in it is reached through this descriptor.
#[derive(Debug)]
pub struct Folder {
    /// Canonical, as it was when opened: the prefix of the store's keys.
    path: PathBuf,
    fd: OwnedFd,
}

fn io_error(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

impl Folder {
    /// Opens the folder at `path` (the administrator's, so its own links are followed).
    pub fn open(path: &Path) -> io::Result<Folder> {
        let path = std::fs::canonicalize(path)?;
        let fd = rfs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_error)?;
        Ok(Folder { path, fd })
    }

    /// The folder's canonical path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this folder: for keys and messages, never for opening.
    pub fn join(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// The folder's group: responses take it, so that the uploaders can read them.
    pub fn group(&self) -> io::Result<u32> {
        Ok(rfs::fstat(&self.fd).map_err(io_error)?.st_gid)
    }

    /// The folder's modification and change times: they move when a name in it is
    /// created, renamed or removed.
    pub fn entries_stamp(&self) -> io::Result<[i64; 4]> {
        let stat = rfs::fstat(&self.fd).map_err(io_error)?;
        #[allow(clippy::unnecessary_cast)]
        Ok([
            stat.st_mtime as i64,
            stat.st_mtime_nsec as i64,
            stat.st_ctime as i64,
            stat.st_ctime_nsec as i64,
        ])
    }

    /// Every name in the folder, `.` and `..` aside.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        let dir = rfs::Dir::read_from(&self.fd).map_err(io_error)?;
        let mut names = Vec::new();
        for entry in dir {
            let entry = entry.map_err(io_error)?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        }
        Ok(names)
    }

    /// What is at `name`, not following a link.
    pub fn look(&self, name: &OsStr) -> io::Result<Look> {
        rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)
            .map(|s| look_of(&s))
            .map_err(io_error)
    }

    /// Opens the request at `name`; `Ok(None)` when what is there is not a regular
    /// file (a link, FIFO, device or folder: ignored, never read, never opened).
    ///
    /// The name is first opened `O_PATH | O_NOFOLLOW`, which reaches the inode without
    /// opening it (no driver's open runs for a device, no FIFO blocks) and holds on to
    /// it: `fstat` of that descriptor judges it, and only a regular file is then opened
    /// for reading, through the descriptor (`/proc/self/fd`), so a name swapped in
    /// between cannot be what is read.
    pub fn open_request(&self, name: &OsStr) -> io::Result<Option<Opened>> {
        let path_flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let held = rfs::openat(&self.fd, name, path_flags, Mode::empty()).map_err(io_error)?;
        if look_of(&rfs::fstat(&held).map_err(io_error)?).kind != Kind::File {
            return Ok(None);
        }
        let read_flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let reopened = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&held));
        let fd = match rfs::open(reopened.as_str(), read_flags, Mode::empty()) {
            Ok(fd) => fd,
            // No /proc: the name is opened again, without following a link and
            // without blocking, and what was opened is judged again below.
            Err(rustix::io::Errno::NOENT) if !Path::new("/proc/self/fd").exists() => {
                match rfs::openat(&self.fd, name, read_flags | OFlags::NOFOLLOW, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::LOOP) => return Ok(None),
                    Err(e) => return Err(io_error(e)),
                }
            }
            Err(e) => return Err(io_error(e)),
        };
        let look = look_of(&rfs::fstat(&fd).map_err(io_error)?);
        if look.kind != Kind::File {
            return Ok(None);
        }
        Ok(Some(Opened {
            file: File::from(fd),
            identity: look.identity,
        }))
    }

    /// A new file under a hidden name nobody can predict, created by us alone.
    /// Returns it (mode 0600 until the caller says otherwise) and its name.
    pub fn create_temp(&self) -> io::Result<(File, OsString)> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        for _ in 0..16 {
            let name = temp_name()?;
            match rfs::openat(&self.fd, &name, flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => return Ok((File::from(fd), name)),
                // Taken (by a planted object, or a stale temp): draw another.
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(io_error(e)),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "no free temporary name after 16 tries",
        ))
    }

    /// Puts the finished file at `temp` in place as `target`. Replaces only a regular
    /// file (a response written before a crash); anything else at `target` is left
    /// alone and reported. On failure `temp` is removed.
    pub fn place(&self, temp: &OsStr, target: &OsStr) -> io::Result<()> {
        let placed = self.place_new(temp, target).or_else(|e| {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
            match self.look(target)?.kind {
                Kind::File => rfs::renameat(&self.fd, temp, &self.fd, target).map_err(io_error),
                Kind::Other(kind) => Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "a {kind} is at its name; remove it so that the response can be written"
                    ),
                )),
            }
        });
        if placed.is_err() {
            let _ = self.remove(temp);
        }
        placed
    }

    /// `renameat2(RENAME_NOREPLACE)`, or where the file system lacks the flag, a hard
    /// link (which never replaces either) and the removal of the temporary name.
    fn place_new(&self, temp: &OsStr, target: &OsStr) -> io::Result<()> {
        self.move_to(temp, self, target)
    }

    /// Moves the name `name` (the object itself: a link stays a link, nothing is
    /// followed) to `target` in `to`, replacing nothing: `AlreadyExists` if `target`
    /// is taken. Both folders must be on one mount (`CrossesDevices` otherwise).
    pub fn move_to(&self, name: &OsStr, to: &Folder, target: &OsStr) -> io::Result<()> {
        match rfs::renameat_with(&self.fd, name, &to.fd, target, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                rfs::linkat(&self.fd, name, &to.fd, target, AtFlags::empty()).map_err(io_error)?;
                self.remove(name)
            }
            Err(e) => Err(io_error(e)),
        }
    }

    /// The folder `name` in this one, created with `mode` if missing (whatever the
    /// umask), and opened without following a link: a link or a file there is an error.
    pub fn child(&self, name: &OsStr, mode: u32) -> io::Result<Folder> {
        let created = match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => true,
            Err(rustix::io::Errno::EXIST) => false,
            Err(e) => return Err(io_error(e)),
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rfs::openat(&self.fd, name, flags, Mode::empty()).map_err(io_error)?;
        if created {
            rfs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(io_error)?;
        }
        Ok(Folder {
            path: self.path.join(name),
            fd,
        })
    }

    /// The folder's permission bits (with set-group-ID and sticky).
    pub fn mode(&self) -> io::Result<u32> {
        Ok(rfs::fstat(&self.fd).map_err(io_error)?.st_mode as u32 & 0o7777)
    }

    /// Whether a name can be renamed from this folder into `other`: the same mount
    /// (Linux refuses a rename across two mounts even of one file system) and the same
    /// device (a btrfs subvolume is a device of its own). Where the kernel cannot tell
    /// the mount, the device decides.
    #[allow(clippy::unnecessary_cast)]
    pub fn same_mount(&self, other: &Folder) -> io::Result<bool> {
        let mount = |fd: &OwnedFd| -> io::Result<(u64, Option<u64>)> {
            let dev = rfs::fstat(fd).map_err(io_error)?.st_dev as u64;
            let mnt = rfs::statx(fd, "", AtFlags::EMPTY_PATH, rfs::StatxFlags::MNT_ID)
                .ok()
                .filter(|s| s.stx_mask & rfs::StatxFlags::MNT_ID.bits() != 0)
                .map(|s| s.stx_mnt_id);
            Ok((dev, mnt))
        };
        let ((dev, mnt), (other_dev, other_mnt)) = (mount(&self.fd)?, mount(&other.fd)?);
        Ok(dev == other_dev && (mnt.is_none() || other_mnt.is_none() || mnt == other_mnt))
    }

    /// Removes the name (a link itself, never its target; never a folder).
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        rfs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(io_error)
    }

    /// Makes the folder's entries (names created, renamed, removed) durable.
    pub fn sync(&self) -> io::Result<()> {
        rfs::fsync(&self.fd).map_err(io_error)
    }

    /// Writes back every dirty file of this folder's file system at once, where that
    /// is known to reach the disk: `Ok(false)` where it is not (FUSE, network and
    /// unknown file systems), and the caller must fsync each file itself.
    pub fn sync_filesystem(&self) -> io::Result<bool> {
        if !syncfs_is_trusted(&self.fd) {
            return Ok(false);
        }
        rfs::syncfs(&self.fd).map_err(io_error)?;
        Ok(true)
    }

    /// The requests waiting for a response, in byte order of their names. A name with
    /// a regular file at its response name is done; any other object there does not
    /// count as a response (the request is taken, and writing its response fails and is
    /// reported).
    pub fn scan(&self) -> io::Result<Scan> {
        let mut scan = Scan::default();
        for name in self.names()? {
            if !is_request_name(&name) {
                continue;
            }
            if !matches!(self.look(&name), Ok(look) if look.kind == Kind::File) {
                continue;
            }
            let response = response_name(&name);
            if response.len() > NAME_MAX {
                scan.too_long.push(name);
                continue;
            }
            if matches!(self.look(&response), Ok(look) if look.kind == Kind::File) {
                continue;
            }
            scan.waiting.push(name);
        }
        scan.waiting.sort();
        Ok(scan)
    }

    /// Removes the temporary files of responses whose writing a crash cut short (this
    /// version's random names and the fixed names of earlier versions). Their
    /// responses are written again from the store's outbox.
    pub fn remove_stale_temps(&self) -> io::Result<usize> {
        let mut removed = 0;
        for name in self.names()? {
            if is_temp_name(&name) && self.remove(&name).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

const TEMP_PREFIX: &[u8] = b".userdrop-";
const TEMP_SUFFIX: &[u8] = b".tmp";

/// `.userdrop-<32 random hex digits>.tmp`: hidden, not a request's name, short enough
/// for any request, and not guessable by the uploader.
fn temp_name() -> io::Result<OsString> {
    let mut random = [0u8; 16];
    let mut filled = 0;
    while filled < random.len() {
        filled +=
            rustix::rand::getrandom(&mut random[filled..], rustix::rand::GetRandomFlags::empty())
                .map_err(io_error)?;
    }
    let mut name = TEMP_PREFIX.to_vec();
    for b in random {
        name.extend_from_slice(format!("{b:02x}").as_bytes());
    }
    name.extend_from_slice(TEMP_SUFFIX);
    Ok(OsString::from_vec(name))
}

fn is_temp_name(name: &OsStr) -> bool {
    let name = name.as_bytes();
    (name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX))
        // Earlier versions: `.NAME.response.json.tmp`.
        || (name.starts_with(b".") && name.ends_with(b".response.json.tmp"))
}

/// Whether `syncfs` on this file system is known to write its files back. On FUSE it
/// may not reach the file system's own cache at all, and network file systems differ;
/// only local disk file systems are trusted with it.
#[allow(clippy::unnecessary_cast)]
fn syncfs_is_trusted(fd: &OwnedFd) -> bool {
    const TRUSTED: [i64; 6] = [
        0xEF53,      // ext2, ext3, ext4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0xF2F5_2010, // f2fs
        0x2FC1_2FC1, // zfs
    ];
    rfs::fstatfs(fd).is_ok_and(|s| TRUSTED.contains(&(s.f_type as i64)))
}

/// Opens the request at `path` (for `import` and `check`): the file is found through
/// its folder like every request in the inbox.
pub fn open_parent(path: &Path) -> io::Result<(Folder, OsString)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?
        .to_owned();
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    Ok((Folder::open(parent.unwrap_or(Path::new(".")))?, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_names() {
        for yes in [
            "a.json",
            "seed-request.json",
            "x.y.json",
            "EXPORT.JSON",
            "b.Json",
        ] {
            assert!(is_request_name(OsStr::new(yes)), "{yes}");
        }
        for no in [
            "a.response.json",
            "a.RESPONSE.JSON",
            ".a.json",
            "a.json.part",
            "a.json.filepart",
            "a.json.tmp",
            ".json",
            "a.JSON.txt",
        ] {
            assert!(!is_request_name(OsStr::new(no)), "{no}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(response_name(OsStr::new("a.json")), "a.response.json");
        assert_eq!(
            response_name(OsStr::new("EXPORT.JSON")),
            "EXPORT.response.json"
        );
        assert_eq!(response_name(OsStr::new("b.txt")), "b.txt.response.json");
        assert_eq!(
            response_path(Path::new("w/a.json")),
            Path::new("w/a.response.json")
        );
        let temp = temp_name().unwrap();
        assert!(is_temp_name(&temp) && !is_request_name(&temp));
        assert_ne!(temp, temp_name().unwrap());
    }

    #[test]
    fn a_request_behind_a_link_or_a_fifo_is_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.json");
        std::fs::write(&outside, "{}").unwrap();
        let inbox = dir.path().join("in");
        std::fs::create_dir(&inbox).unwrap();
        std::os::unix::fs::symlink(&outside, inbox.join("link.json")).unwrap();
        rfs::mknodat(
            rustix::fs::CWD,
            inbox.join("fifo.json"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        std::fs::create_dir(inbox.join("dir.json")).unwrap();
        std::fs::write(inbox.join("real.json"), "{}").unwrap();
        let folder = Folder::open(&inbox).unwrap();
        for name in ["link.json", "fifo.json", "dir.json"] {
            assert!(
                folder.open_request(OsStr::new(name)).unwrap().is_none(),
                "{name}"
            );
        }
        assert!(
            folder
                .open_request(OsStr::new("real.json"))
                .unwrap()
                .is_some()
        );
        assert_eq!(folder.scan().unwrap().waiting, ["real.json"]);
    }

    #[test]
    fn placing_never_writes_through_a_link_and_never_replaces_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let inbox = dir.path().join("in");
        std::fs::create_dir(&inbox).unwrap();
        std::os::unix::fs::symlink(&victim, inbox.join("a.response.json")).unwrap();
        std::fs::create_dir(inbox.join("b.response.json")).unwrap();
        let folder = Folder::open(&inbox).unwrap();
        for (target, ok) in [("a.response.json", false), ("b.response.json", false)] {
            let (mut file, temp) = folder.create_temp().unwrap();
            io::Write::write_all(&mut file, b"{}").unwrap();
            assert_eq!(
                folder.place(&temp, OsStr::new(target)).is_ok(),
                ok,
                "{target}"
            );
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(inbox.join("b.response.json").is_dir());
        // A regular file there is an earlier copy of the response: replaced.
        std::fs::write(inbox.join("c.response.json"), "old").unwrap();
        let (mut file, temp) = folder.create_temp().unwrap();
        io::Write::write_all(&mut file, b"new").unwrap();
        folder.place(&temp, OsStr::new("c.response.json")).unwrap();
        assert_eq!(
            std::fs::read(inbox.join("c.response.json")).unwrap(),
            b"new"
        );
        // No temporary file is left behind by any of it.
        let left: Vec<_> = folder
            .names()
            .unwrap()
            .into_iter()
            .filter(|n| is_temp_name(n))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
