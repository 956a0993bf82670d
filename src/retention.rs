//! Retention: how answered requests leave the inbox (SPEC §4).
//!
//! By default a request and its response stay in the inbox for ever. An inbox that a
//! nightly job writes to then grows by two files a night: scans and backups slow
//! down, and nobody can tell today's answers from last year's. With `--archive DIR
//! --archive-after AGE`, each request and its response are moved, once both are older
//! than AGE, into `DIR/YYYY-MM-DD/` (the day the response was written, in UTC like the
//! logs); with `--delete-after AGE` they are deleted. The store's history keeps the
//! record of each file either way.
//!
//! What makes this more than `find -mtime +7 -delete` is the daemon's own rule that a
//! request without a response is waiting. A clean-up that took a response away before
//! its request, and was cut short there (a crash, a power cut), would make the daemon
//! apply an old file again. So a pass works in two phases: every request first, then
//! an fsync of the inbox and of the day folders, and only then the responses, and
//! another fsync. A crash between the two leaves responses without a request; the
//! next pass cleans those orphans too (when they are older than AGE).
//!
//! The uploader is not trusted (SPEC §4): any name may become a link, a FIFO, a
//! folder or a hard link between two calls. Names are judged with `fstatat` without
//! following links; only a pair of regular files is touched; every call goes through
//! the held folders of [`Folder`] (`renameat2(RENAME_NOREPLACE)` into a day folder
//! opened `O_NOFOLLOW`, `unlinkat`, which removes a name, never its target), and an
//! object swapped in between the look and the move is put back. Nothing in the
//! archive is ever replaced: a name taken there (a nightly `users.json` archived
//! twice in one day) gets a free `users.N.json` beside `users.N.response.json`.
//!
//! A pass runs at start-up and at every periodic rescan, never per event: ages are
//! hours or days, so a finer clock would only cost wake-ups. The daemon's in-memory
//! state needs nothing from it: only pairs whose response exists are touched, and
//! such a request is neither waiting, settling nor in a group being answered.

use crate::inbox::{self, Folder, Kind, Look};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How old a request and its response must both be before they are cleaned up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Age(Duration);

const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];
const SYNTAX: &str = "a whole number and a unit: s, m, h or d (90s, 15m, 12h, 7d)";

impl Age {
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl FromStr for Age {
    type Err = String;

    fn from_str(text: &str) -> Result<Age, String> {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        let (number, unit) = text.split_at(digits);
        if number.is_empty() {
            return Err(format!("{text:?} is not a duration: give {SYNTAX}"));
        }
        let Some(&(_, seconds)) = UNITS
            .iter()
            .find(|(u, _)| unit.len() == 1 && unit.starts_with(*u))
        else {
            return Err(match unit {
                "" => format!("{text:?} has no unit: give {SYNTAX}"),
                _ if unit.starts_with(['.', ',']) => {
                    format!("{text:?} is not a whole number: give {SYNTAX}")
                }
                _ => format!("{text:?} has an unknown unit {unit:?}: give {SYNTAX}"),
            });
        };
        let count: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is too long a duration"))?;
        if count == 0 {
            return Err(format!(
                "{text:?} would clean up every answer at once: give at least 1s"
            ));
        }
        count
            .checked_mul(seconds)
            .map(|s| Age(Duration::from_secs(s)))
            .ok_or_else(|| format!("{text:?} is too long a duration"))
    }
}

/// For clap's `value_parser`.
pub fn parse_age(text: &str) -> Result<Age, String> {
    text.parse()
}

/// In the largest unit that says it exactly: `7d`, `36h`, `90s`.
impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let (unit, size) = UNITS
            .iter()
            .find(|(_, size)| secs.is_multiple_of(*size))
            .copied()
            .unwrap_or(('s', 1));
        write!(f, "{}{unit}", secs / size)
    }
}

/// What the settings ask for, once their combination is known to make sense.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Where pairs are moved; `None`: they are deleted.
    pub archive: Option<PathBuf>,
    pub after: Age,
}

impl Policy {
    /// The policy of `--archive`, `--archive-after` and `--delete-after` (or their
    /// keys); `Ok(None)` when retention is off. `Err` is bad usage (exit 2).
    pub fn from_settings(
        archive: Option<&Path>,
        archive_after: Option<Age>,
        delete_after: Option<Age>,
    ) -> Result<Option<Policy>, String> {
        match (archive, archive_after, delete_after) {
            (None, None, None) => Ok(None),
            (Some(_), _, Some(_)) => Err(
                "--archive and --delete-after (keys archive, delete_after) cannot be used together: a request is either moved to the archive or deleted".into(),
            ),
            (Some(dir), Some(after), None) => Ok(Some(Policy {
                archive: Some(dir.to_path_buf()),
                after,
            })),
            (Some(dir), None, None) => Err(format!(
                "--archive {} needs --archive-after DURATION (key archive_after): how old a request and its response must be before they are moved, e.g. 7d",
                dir.display()
            )),
            (None, Some(_), _) => Err(
                "--archive-after needs --archive DIR (key archive): the folder answered requests are moved to; to delete them instead, give --delete-after".into(),
            ),
            (None, None, Some(after)) => Ok(Some(Policy {
                archive: None,
                after,
            })),
        }
    }
}

/// Why retention cannot start.
#[derive(Debug)]
pub enum OpenError {
    /// The folder given cannot serve (the inbox or in it; another file system): exit 2.
    Usage(String),
    /// The folder cannot be created or opened: exit 1, like a missing inbox.
    Failure(String),
}

/// Retention as the daemon runs it: the age, and the archive folder held open.
#[derive(Debug)]
pub struct Retention {
    after: Age,
    /// `None`: pairs are deleted.
    archive: Option<Folder>,
}

/// Mode of an archive folder userdrop creates: the daemon's group may read the old
/// answers (the daemon's umask, 077, would make it 0700).
const ARCHIVE_MODE: u32 = 0o750;

impl Retention {
    /// Opens the archive folder of `policy` (creating it, not its parents, if
    /// missing), and checks that it can take the inbox's files: outside the inbox,
    /// and on its mount, since a rename cannot cross file systems.
    pub fn open(policy: &Policy, inbox_dir: &Path) -> Result<Retention, OpenError> {
        let Some(dir) = &policy.archive else {
            return Ok(Retention {
                after: policy.after,
                archive: None,
            });
        };
        let failure = |e: io::Error| {
            OpenError::Failure(format!(
                "cannot open the archive folder {}: {e}",
                dir.display()
            ))
        };
        let inbox = Folder::open(inbox_dir).map_err(|e| {
            OpenError::Failure(format!(
                "cannot open the inbox {}: {e}",
                inbox_dir.display()
            ))
        })?;
        // Judged before anything is created, so that a refused folder is not left
        // behind: a missing folder by its parent.
        let target = resolved(dir).map_err(failure)?;
        refuse_inside(inbox.path(), &target, dir)?;
        let nearest = match target.parent() {
            Some(parent) if !target.exists() => parent,
            _ => &target,
        };
        refuse_other_mount(&inbox, &Folder::open(nearest).map_err(failure)?, dir)?;
        create_missing(dir).map_err(failure)?;
        let archive = Folder::open(dir).map_err(failure)?;
        // Again, as opened: a link or a mount may have changed what the path is.
        refuse_inside(inbox.path(), archive.path(), dir)?;
        refuse_other_mount(&inbox, &archive, dir)?;
        Ok(Retention {
            after: policy.after,
            archive: Some(archive),
        })
    }

    /// Where pairs go: the archive folder, or `None` when they are deleted.
    pub fn archive(&self) -> Option<&Path> {
        self.archive.as_ref().map(Folder::path)
    }
}

/// For the start-up line: `archive to /srv/archive after 7d`, `delete after 30d`.
impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.archive() {
            Some(dir) => write!(f, "archive to {} after {}", dir.display(), self.after),
            None => write!(f, "delete after {}", self.after),
        }
    }
}

/// `dir` made absolute and canonical as far as it exists: a missing last component
/// is joined to its parent's canonical path.
fn resolved(dir: &Path) -> io::Result<PathBuf> {
    match std::fs::canonicalize(dir) {
        Ok(path) => Ok(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
            let name = dir.file_name().ok_or(e)?;
            Ok(std::fs::canonicalize(parent.unwrap_or(Path::new(".")))?.join(name))
        }
        Err(e) => Err(e),
    }
}

fn refuse_inside(inbox: &Path, archive: &Path, given: &Path) -> Result<(), OpenError> {
    if archive.starts_with(inbox) {
        return Err(OpenError::Usage(format!(
            "the archive folder {} is the inbox or inside it, where the uploader could reach what is archived; give a folder outside {}",
            given.display(),
            inbox.display()
        )));
    }
    Ok(())
}

/// A rename cannot cross file systems, and copying instead would give up the one
/// atomic step that keeps a request from being in both places or neither.
fn refuse_other_mount(inbox: &Folder, archive: &Folder, given: &Path) -> Result<(), OpenError> {
    let same = inbox.same_mount(archive).map_err(|e| {
        OpenError::Failure(format!(
            "cannot open the archive folder {}: {e}",
            given.display()
        ))
    })?;
    if same {
        return Ok(());
    }
    Err(OpenError::Usage(format!(
        "the archive folder {} is on another file system (or mount) than the inbox {}: a request cannot be moved there in one step; give a folder on the inbox's file system, or --delete-after",
        given.display(),
        inbox.path().display()
    )))
}

fn create_missing(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(ARCHIVE_MODE).create(dir) {
        Ok(()) => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(ARCHIVE_MODE))?;
            tracing::info!(archive = %dir.display(), "created the archive folder (mode 0750)");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// At most this many pairs are cleaned up in one pass, so that switching retention on
/// for a years-old inbox does not stall the daemon; the rest go at the next passes.
const PASS_LIMIT: usize = 10_000;

/// Retention's state in the running daemon: when it last ran, and which failures it
/// has said (each is said once, and again only when its reason changes).
pub struct Sweeper {
    rules: std::sync::Arc<Retention>,
    last: Option<Instant>,
    said: HashMap<OsString, String>,
}

/// A response due for clean-up, with the requests it answers.
struct Due {
    /// Usually one; more when names differ only in the case of `.json` (`a.json` and
    /// `a.JSON` share `a.response.json`), none for an orphan response.
    requests: Vec<(OsString, Look)>,
    response: OsString,
    response_look: Look,
    /// `a` of `a.json` and `a.response.json`: archived names keep it.
    stem: Vec<u8>,
    /// The response's day, `YYYY-MM-DD` in UTC: its day folder.
    day: String,
}

/// What became of one pass.
#[derive(Default)]
struct Tally {
    pairs: usize,
    orphans: usize,
    /// The day folders that received something.
    days: std::collections::BTreeSet<String>,
}

impl Sweeper {
    pub fn new(rules: std::sync::Arc<Retention>) -> Sweeper {
        Sweeper {
            rules,
            last: None,
            said: HashMap::new(),
        }
    }

    /// Whether a pass is due: the first one, or `every` after the last.
    pub fn due(&self, every: Duration) -> bool {
        self.last.is_none_or(|at| at.elapsed() >= every)
    }

    /// One pass over `inbox`. Never fails: every problem is a warning naming the
    /// file, and the file is tried again at the next pass. A stop signal ends it
    /// early, at a point a crash could also have left.
    pub fn pass(&mut self, inbox: &Folder, stop: &AtomicBool) {
        self.last = Some(Instant::now());
        let Some(cutoff) = cutoff(self.rules.after) else {
            return;
        };
        let mut due = match plan(inbox, cutoff) {
            Ok(due) => due,
            Err(e) => {
                self.say(inbox.path(), OsStr::new(""), &e);
                return;
            }
        };
        due.truncate(PASS_LIMIT);
        let mut failed = HashSet::new();
        let tally = self.clean(inbox, due, stop, &mut failed);
        self.said.retain(|name, _| failed.contains(name));
        self.report(&tally);
    }

    /// The two phases: requests, sync, responses, sync.
    fn clean(
        &mut self,
        inbox: &Folder,
        due: Vec<Due>,
        stop: &AtomicBool,
        failed: &mut HashSet<OsString>,
    ) -> Tally {
        let mut tally = Tally::default();
        let mut days: BTreeMap<String, Folder> = BTreeMap::new();
        let mut ready = Vec::new();
        for item in due {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match self.requests_away(inbox, &item, &mut days) {
                Ok(slot) => ready.push((item, slot)),
                Err((name, e)) => self.failed(inbox, &name, &e, failed),
            }
        }
        // Without this, a crash could keep a request whose response is gone.
        if !self.synced(inbox, &days, failed) {
            return tally;
        }
        crate::process::fault_point("retention-between-phases");
        for (item, slot) in ready {
            match self.response_away(inbox, &item, slot, &days) {
                Ok(()) if item.requests.is_empty() => tally.orphans += 1,
                Ok(()) => tally.pairs += 1,
                Err(e) => {
                    self.failed(inbox, &item.response, &e, failed);
                    continue;
                }
            }
            tally.days.insert(item.day);
        }
        self.synced(inbox, &days, failed);
        tally
    }

    /// Phase 1 for one item: its requests deleted, or moved into its day folder under
    /// names free for them and its response. Returns the slot (`N` of `stem.N.json`).
    fn requests_away(
        &self,
        inbox: &Folder,
        item: &Due,
        days: &mut BTreeMap<String, Folder>,
    ) -> Result<u32, (OsString, io::Error)> {
        let Some(archive) = &self.rules.archive else {
            for (name, _) in &item.requests {
                inbox.remove(name).map_err(|e| (name.clone(), e))?;
            }
            return Ok(0);
        };
        let day = day_folder(archive, &item.day, days).map_err(|e| (item.response.clone(), e))?;
        if item.requests.is_empty() {
            return Ok(0);
        }
        let mut suffixes: Vec<&[u8]> = item
            .requests
            .iter()
            .map(|(n, _)| request_suffix(n))
            .collect();
        suffixes.push(RESPONSE_SUFFIX);
        let mut from = 0;
        loop {
            let slot = free_slot(day, &item.stem, &suffixes, from)
                .map_err(|e| (item.response.clone(), e))?;
            let mut moved = 0;
            for (name, look) in &item.requests {
                let target = archived(&item.stem, slot, request_suffix(name));
                match move_checked(inbox, name, look, day, &target) {
                    Ok(()) => moved += 1,
                    // Taken meanwhile (another daemon sharing the archive): nothing
                    // is moved yet, so the next free slot serves as well.
                    Err(e) if moved == 0 && e.kind() == io::ErrorKind::AlreadyExists => break,
                    Err(e) => return Err((name.clone(), e)),
                }
            }
            if moved == item.requests.len() {
                return Ok(slot);
            }
            from = slot + 1;
        }
    }

    /// Phase 2 for one item whose requests are gone: its response deleted, or moved
    /// beside them (or, if that name was taken meanwhile, to the next free one).
    fn response_away(
        &self,
        inbox: &Folder,
        item: &Due,
        slot: u32,
        days: &BTreeMap<String, Folder>,
    ) -> io::Result<()> {
        let Some(_) = &self.rules.archive else {
            return inbox.remove(&item.response);
        };
        let day = days
            .get(&item.day)
            .ok_or_else(|| io::Error::other("its day folder was not opened"))?;
        let free = |from| free_slot(day, &item.stem, &[RESPONSE_SUFFIX], from);
        let mut slot = if item.requests.is_empty() {
            free(0)?
        } else {
            slot
        };
        loop {
            let target = archived(&item.stem, slot, RESPONSE_SUFFIX);
            match move_checked(inbox, &item.response, &item.response_look, day, &target) {
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    slot = free(slot + 1)?;
                }
                done => return done,
            }
        }
    }

    /// Syncs the inbox and the day folders; false (and said) if one failed.
    fn synced(
        &mut self,
        inbox: &Folder,
        days: &BTreeMap<String, Folder>,
        failed: &mut HashSet<OsString>,
    ) -> bool {
        let mut ok = true;
        for folder in std::iter::once(inbox).chain(days.values()) {
            if let Err(e) = folder.sync() {
                let e = io::Error::new(
                    e.kind(),
                    format!("cannot sync the folder ({e}); the responses stay until the next pass"),
                );
                self.failed(folder, OsStr::new(""), &e, failed);
                ok = false;
            }
        }
        ok
    }

    fn failed(
        &mut self,
        folder: &Folder,
        name: &OsStr,
        e: &io::Error,
        failed: &mut HashSet<OsString>,
    ) {
        let key = folder.join(name).into_os_string();
        failed.insert(key.clone());
        self.say(folder.path(), name, e);
    }

    /// Warns about `name` in `folder`, unless the same was said at the last failure.
    fn say(&mut self, folder: &Path, name: &OsStr, e: &io::Error) {
        let file = folder.join(name);
        let reason = e.to_string();
        if self.said.get(file.as_os_str()) == Some(&reason) {
            return;
        }
        let what = if self.rules.archive.is_some() {
            "archived"
        } else {
            "deleted"
        };
        tracing::warn!(file = %file.display(), "retention: not {what}: {reason}; tried again at the next pass");
        self.said.insert(file.into_os_string(), reason);
    }

    fn report(&self, tally: &Tally) {
        if tally.pairs + tally.orphans == 0 {
            return;
        }
        let after = self.rules.after.to_string();
        match self.rules.archive() {
            Some(archive) => tracing::info!(
                pairs = tally.pairs,
                orphan_responses = tally.orphans,
                archive = %archive.display(),
                days = %Vec::from_iter(tally.days.iter().map(String::as_str)).join(","),
                "retention: moved requests and responses older than {after} to the archive"
            ),
            None => tracing::info!(
                pairs = tally.pairs,
                orphan_responses = tally.orphans,
                "retention: deleted requests and responses older than {after}"
            ),
        }
    }
}

/// The modification time, as `(seconds, nanoseconds)` since the epoch, that a file
/// must not be younger than; `None` before `after` has passed since the epoch.
fn cutoff(after: Age) -> Option<(i64, i64)> {
    let then = SystemTime::now().checked_sub(after.duration())?;
    let since = then.duration_since(UNIX_EPOCH).ok()?;
    Some((
        i64::try_from(since.as_secs()).ok()?,
        i64::from(since.subsec_nanos()),
    ))
}

const RESPONSE_SUFFIX: &[u8] = b".response.json";

/// Whether `name` is a name the daemon writes responses under: `STEM.response.json`
/// where `STEM.json` is a request's name.
fn is_response_name(name: &OsStr) -> bool {
    let Some(stem) = name.as_bytes().strip_suffix(RESPONSE_SUFFIX) else {
        return false;
    };
    let mut request = stem.to_vec();
    request.extend_from_slice(b".json");
    inbox::is_request_name(OsStr::from_bytes(&request))
}

/// `.json` as the request's name spells it (`.JSON` too).
fn request_suffix(name: &OsStr) -> &[u8] {
    let name = name.as_bytes();
    &name[name.len().saturating_sub(b".json".len())..]
}

/// What is due in the inbox: each response older than `cutoff` whose requests (if
/// any are left) are all regular files older than `cutoff` too. A name holding
/// anything else leaves its whole pair alone.
fn plan(inbox: &Folder, cutoff: (i64, i64)) -> io::Result<Vec<Due>> {
    let names = inbox.names()?;
    let present: HashSet<&OsStr> = names.iter().map(OsString::as_os_str).collect();
    let mut claims: BTreeMap<OsString, Vec<OsString>> = BTreeMap::new();
    for name in names.iter().filter(|n| inbox::is_request_name(n)) {
        claims
            .entry(inbox::response_name(name))
            .or_default()
            .push(name.clone());
    }
    let mut due = Vec::new();
    for (response, requests) in &claims {
        if present.contains(response.as_os_str()) {
            due.extend(judge(inbox, response, requests, cutoff));
        }
    }
    for name in &names {
        if is_response_name(name) && !claims.contains_key(name) {
            due.extend(judge(inbox, name, &[], cutoff));
        }
    }
    Ok(due)
}

fn judge(
    inbox: &Folder,
    response: &OsStr,
    requests: &[OsString],
    cutoff: (i64, i64),
) -> Option<Due> {
    let old = |name: &OsStr| {
        inbox.look(name).ok().filter(|look| {
            look.kind == Kind::File && (look.identity.mtime, look.identity.mtime_ns) <= cutoff
        })
    };
    let response_look = old(response)?;
    let requests = requests
        .iter()
        .map(|name| old(name).map(|look| (name.clone(), look)))
        .collect::<Option<Vec<_>>>()?;
    let stem = response.as_bytes().strip_suffix(RESPONSE_SUFFIX)?.to_vec();
    Some(Due {
        requests,
        response: response.to_owned(),
        day: day_of(&response_look),
        response_look,
        stem,
    })
}

/// The UTC day of a file's modification time, like the logs' timestamps.
fn day_of(look: &Look) -> String {
    let nanos = u32::try_from(look.identity.mtime_ns).unwrap_or(0);
    chrono::DateTime::from_timestamp(look.identity.mtime, nanos)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "1970-01-01".to_owned())
}

/// The day folder `day` of the archive, created (with the archive's own mode) and
/// opened once per pass.
fn day_folder<'d>(
    archive: &Folder,
    day: &str,
    days: &'d mut BTreeMap<String, Folder>,
) -> io::Result<&'d Folder> {
    if !days.contains_key(day) {
        let folder = archive
            .mode()
            .and_then(|mode| archive.child(OsStr::new(day), mode))
            .map_err(|e| {
                let path = archive.join(OsStr::new(day));
                io::Error::new(e.kind(), format!("its day folder {}: {e}", path.display()))
            })?;
        days.insert(day.to_owned(), folder);
    }
    days.get(day)
        .ok_or_else(|| io::Error::other("its day folder was not opened"))
}

/// `stem.json`, then `stem.1.json`, `stem.2.json`...: the name of slot `slot`.
fn archived(stem: &[u8], slot: u32, suffix: &[u8]) -> OsString {
    let mut name = stem.to_vec();
    if slot > 0 {
        name.extend_from_slice(format!(".{slot}").as_bytes());
    }
    name.extend_from_slice(suffix);
    OsString::from_vec(name)
}

/// Slots tried before a pair is given up on for this pass.
const SLOTS: u32 = 10_000;

/// The first slot from `from` at which `stem` with each of `suffixes` is free in `day`.
fn free_slot(day: &Folder, stem: &[u8], suffixes: &[&[u8]], from: u32) -> io::Result<u32> {
    'slots: for slot in from..SLOTS {
        for suffix in suffixes {
            if !is_free(day, &archived(stem, slot, suffix))? {
                continue 'slots;
            }
        }
        return Ok(slot);
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "no free name in {} after {SLOTS} tries",
            day.path().display()
        ),
    ))
}

fn is_free(day: &Folder, name: &OsStr) -> io::Result<bool> {
    match day.look(name) {
        Ok(_) => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// Moves `name` to `target` in `day` if it is still the regular file `seen`; an
/// object swapped in since the look is put back, since it is the uploader's.
fn move_checked(
    inbox: &Folder,
    name: &OsStr,
    seen: &Look,
    day: &Folder,
    target: &OsStr,
) -> io::Result<()> {
    inbox.move_to(name, day, target).map_err(|e| {
        if e.kind() == io::ErrorKind::CrossesDevices {
            io::Error::new(
                e.kind(),
                format!("{e}: the archive is on another file system than the inbox"),
            )
        } else {
            e
        }
    })?;
    let now = day.look(target)?;
    if now.kind == Kind::File && now.identity == seen.identity {
        return Ok(());
    }
    match day.move_to(target, inbox, name) {
        Ok(()) => Err(io::Error::other(
            "it was replaced while it was being moved; the new one is left in the inbox",
        )),
        Err(e) => Err(io::Error::other(format!(
            "it was replaced while it was being moved, and the new one could not be put back ({e}); it is at {}",
            day.join(target).display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::sync::Arc;

    #[test]
    fn ages_parse_and_show_in_their_largest_exact_unit() {
        for (text, secs, shown) in [
            ("90s", 90, "90s"),
            ("15m", 900, "15m"),
            ("12h", 43_200, "12h"),
            ("7d", 604_800, "7d"),
            ("120s", 120, "2m"),
            ("36h", 129_600, "36h"),
        ] {
            let age: Age = text.parse().unwrap();
            assert_eq!(age.duration(), Duration::from_secs(secs), "{text}");
            assert_eq!(age.to_string(), shown, "{text}");
        }
        for (bad, says) in [
            ("0s", "at least 1s"),
            ("0d", "at least 1s"),
            ("5x", "unknown unit \"x\""),
            ("7D", "unknown unit"),
            ("90", "no unit"),
            ("", "not a duration"),
            ("d", "not a duration"),
            (" 7d", "not a duration"),
            ("7d ", "unknown unit"),
            ("-1d", "not a duration"),
            ("1.5h", "not a whole number"),
            ("99999999999999999999d", "too long"),
            ("999999999999999999d", "too long"),
        ] {
            let e = bad.parse::<Age>().unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn only_sensible_combinations_make_a_policy() {
        let day: Age = "1d".parse().unwrap();
        let dir = Path::new("/srv/archive");
        let policy = |a, aa, da| Policy::from_settings(a, aa, da);
        assert_eq!(policy(None, None, None), Ok(None));
        assert_eq!(
            policy(Some(dir), Some(day), None)
                .unwrap()
                .unwrap()
                .archive
                .as_deref(),
            Some(dir)
        );
        assert_eq!(
            policy(None, None, Some(day)).unwrap().unwrap().archive,
            None
        );
        for (a, aa, da, says) in [
            (Some(dir), None, None, "needs --archive-after"),
            (None, Some(day), None, "needs --archive DIR"),
            (None, Some(day), Some(day), "needs --archive DIR"),
            (Some(dir), Some(day), Some(day), "cannot be used together"),
            (Some(dir), None, Some(day), "cannot be used together"),
        ] {
            let e = policy(a, aa, da).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }

    #[test]
    fn response_names_and_archived_names() {
        for yes in [
            "a.response.json",
            "EXPORT.response.json",
            "x.y.response.json",
        ] {
            assert!(is_response_name(OsStr::new(yes)), "{yes}");
        }
        for no in [
            "a.json",
            ".a.response.json",
            "a.RESPONSE.JSON",
            ".response.json",
            "a.response.response.json",
            "a.response.json.tmp",
        ] {
            assert!(!is_response_name(OsStr::new(no)), "{no}");
        }
        assert_eq!(archived(b"users", 0, b".json"), "users.json");
        assert_eq!(archived(b"users", 2, b".JSON"), "users.2.JSON");
        assert_eq!(
            inbox::response_name(&archived(b"users", 2, b".JSON")),
            archived(b"users", 2, RESPONSE_SUFFIX)
        );
        assert_eq!(request_suffix(OsStr::new("EXPORT.JSON")), b".JSON");
    }

    /// 2023-11-14T22:13:20Z: old, and one fixed day, so no test straddles midnight.
    fn long_ago() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn age(path: &Path) {
        let file = fs::File::options().write(true).open(path).unwrap();
        file.set_modified(long_ago()).unwrap();
    }

    fn old_file(path: &Path) {
        fs::write(path, "{}").unwrap();
        age(path);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_plan_takes_old_pairs_and_orphans_of_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let inbox_dir = dir.path().join("in");
        fs::create_dir(&inbox_dir).unwrap();
        let at = |name: &str| inbox_dir.join(name);
        for name in ["old.json", "old.response.json", "orphan.response.json"] {
            old_file(&at(name));
        }
        // Young, waiting, behind a link, a folder, a hidden or foreign name: kept.
        old_file(&at("young.json"));
        fs::write(at("young.response.json"), "{}").unwrap();
        old_file(&at("waiting.json"));
        old_file(&dir.path().join("outside"));
        std::os::unix::fs::symlink(dir.path().join("outside"), at("link.json")).unwrap();
        old_file(&at("link.response.json"));
        std::os::unix::fs::symlink(dir.path().join("outside"), at("l2.response.json")).unwrap();
        fs::create_dir(at("d.response.json")).unwrap();
        old_file(&at(".hidden.response.json"));
        old_file(&at("notes.txt"));
        let inbox = Folder::open(&inbox_dir).unwrap();
        let plan = plan(&inbox, cutoff("1h".parse().unwrap()).unwrap()).unwrap();
        let due: Vec<(String, usize)> = plan
            .iter()
            .map(|d| (d.response.to_string_lossy().into_owned(), d.requests.len()))
            .collect();
        assert_eq!(
            due,
            [
                ("old.response.json".into(), 1),
                ("orphan.response.json".into(), 0)
            ]
        );
    }

    fn sweeper(archive: &Path) -> Sweeper {
        let policy = Policy {
            archive: Some(archive.to_path_buf()),
            after: "1h".parse().unwrap(),
        };
        let rules = Retention::open(&policy, archive.parent().unwrap().join("in").as_path());
        Sweeper::new(Arc::new(rules.unwrap()))
    }

    #[test]
    fn requests_that_share_a_response_go_together_and_taken_names_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let inbox_dir = dir.path().join("in");
        fs::create_dir(&inbox_dir).unwrap();
        let mut sweeper = sweeper(&dir.path().join("archive"));
        let inbox = Folder::open(&inbox_dir).unwrap();
        let stop = AtomicBool::new(false);
        for round in 0..2 {
            for name in [
                "a.json",
                "a.JSON",
                "a.response.json",
                "b.json",
                "b.response.json",
            ] {
                old_file(&inbox_dir.join(name));
            }
            fs::write(inbox_dir.join("a.response.json"), format!("{round}")).unwrap();
            age(&inbox_dir.join("a.response.json"));
            sweeper.pass(&inbox, &stop);
        }
        assert!(names(&inbox_dir).is_empty(), "{:?}", names(&inbox_dir));
        let archive = dir.path().join("archive");
        assert_eq!(names(&archive), ["2023-11-14"]);
        let day = archive.join("2023-11-14");
        assert_eq!(
            names(&day),
            [
                "a.1.JSON",
                "a.1.json",
                "a.1.response.json",
                "a.JSON",
                "a.json",
                "a.response.json",
                "b.1.json",
                "b.1.response.json",
                "b.json",
                "b.response.json"
            ]
        );
        assert_eq!(
            fs::read_to_string(day.join("a.response.json")).unwrap(),
            "0"
        );
        assert_eq!(
            fs::read_to_string(day.join("a.1.response.json")).unwrap(),
            "1"
        );
    }

    #[test]
    fn a_file_swapped_in_after_the_look_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let (inbox_dir, day_dir) = (dir.path().join("in"), dir.path().join("day"));
        fs::create_dir(&inbox_dir).unwrap();
        fs::create_dir(&day_dir).unwrap();
        old_file(&inbox_dir.join("a.json"));
        let inbox = Folder::open(&inbox_dir).unwrap();
        let day = Folder::open(&day_dir).unwrap();
        let seen = inbox.look(OsStr::new("a.json")).unwrap();
        // The uploader replaces it by a new upload between the look and the move.
        fs::write(inbox_dir.join("new"), "new upload").unwrap();
        fs::rename(inbox_dir.join("new"), inbox_dir.join("a.json")).unwrap();
        let name = OsStr::new("a.json");
        let e = move_checked(&inbox, name, &seen, &day, name).unwrap_err();
        assert!(e.to_string().contains("replaced"), "{e}");
        assert_eq!(
            fs::read_to_string(inbox_dir.join("a.json")).unwrap(),
            "new upload"
        );
        assert!(names(&day_dir).is_empty());
        // A taken name in the day folder is never replaced.
        fs::write(day_dir.join("a.json"), "archived before").unwrap();
        let seen = inbox.look(name).unwrap();
        let e = move_checked(&inbox, name, &seen, &day, name).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            fs::read_to_string(day_dir.join("a.json")).unwrap(),
            "archived before"
        );
    }
}
