//! A real PostgreSQL for the tests (issue 14): a cluster of the test's own, in a
//! temporary folder, made with Debian's `postgresql` binaries and never a system
//! service. The server listens on a Unix socket in that folder only
//! (`listen_addresses = ''`), runs with `fsync = on` (these are durability tests), and
//! is stopped and removed when the [`Cluster`] is dropped, a failed test included.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: the server then runs as
//! the `postgres` system user, which the Debian package creates on every machine it is
//! installed on, or as `nobody` where that user is missing (binaries from elsewhere).
//! A test run as an ordinary user runs the server as itself.
//!
//! The server is started as `postgres -D …`, a child of the test, rather than through
//! `pg_ctl start`: `pg_ctl` daemonizes it away from us, and after a kill -9 its
//! unreaped postmaster (in a container whose PID 1 may not reap) would keep its pid
//! "alive" in `postmaster.pid` and refuse the restart. As our child, it is reaped.
//!
//! `initdb` takes seconds on a busy machine, so it runs once: its result is kept as a
//! template under cargo's target folder and copied for each cluster.
//!
//! Without PostgreSQL binaries, [`Cluster::start`] prints why and returns `None` (the
//! test returns early), unless `USERDROP_PG_REQUIRED` is set (CI sets it): then a
//! missing PostgreSQL fails the test.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The superuser initdb creates; the tests connect as it (trust, over the socket).
pub const USER: &str = "userdrop";

/// The folder of `initdb` and `postgres`: `USERDROP_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (where Debian puts them, off the PATH), else
/// the PATH.
pub fn bin_dir() -> Option<PathBuf> {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("USERDROP_PG_BIN") {
        let dir = PathBuf::from(dir);
        return usable(&dir).then_some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            usable(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?).find(|d| usable(d))
}

/// Who the server runs as: `None` for the test's own user.
fn owner() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    for name in [c"postgres", c"nobody"] {
        // SAFETY: a valid C string; the record is copied out before any other call.
        let entry = unsafe { libc::getpwnam(name.as_ptr()) };
        if !entry.is_null() {
            // SAFETY: non-null, as getpwnam returned it.
            let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
            return Some((uid, gid));
        }
    }
    panic!(
        "tests run as root, and there is neither a postgres nor a nobody user to run PostgreSQL as"
    );
}

/// Runs `cmd` as the server's user.
fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = owner {
        // std drops the supplementary groups too when root changes uid.
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown(path: &Path, owner: Option<(u32, u32)>) {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown to the server's user");
    }
}

/// The initdb'ed data folder all clusters are copied from; made once.
fn template(bin: &Path, owner: Option<(u32, u32)>) -> PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    static MAKING: Mutex<()> = Mutex::new(());
    if let Some(t) = TEMPLATE.get() {
        return t.clone();
    }
    let _one = MAKING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = TEMPLATE.get() {
        return t.clone();
    }
    let key = xxhash_rust::xxh3::xxh3_64(bin.as_os_str().as_encoded_bytes());
    let uid = owner.map_or(u32::MAX, |o| o.0);
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let done = target.join(format!("pg-template-{key:016x}-{uid}"));
    if !done.join("PG_VERSION").is_file() {
        // initdb in a folder of the server's user, then moved into place whole: a run
        // cut short leaves no half template for the next one.
        let scratch = tempfile::tempdir_in(&target).expect("a folder for initdb");
        chown(scratch.path(), owner);
        let data = scratch.path().join("data");
        let out = as_owner(&mut Command::new(bin.join("initdb")), owner)
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--no-locale"])
            // The template's own files need not survive a power cut; the servers'
            // writes are synced (fsync = on).
            .arg("--no-sync")
            .current_dir(scratch.path())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let _ = fs::remove_dir_all(&done);
        fs::rename(&data, &done).expect("the template moved into place");
    }
    let _ = TEMPLATE.set(done.clone());
    done
}

/// Whether a missing PostgreSQL fails the tests instead of skipping them.
pub fn required() -> bool {
    std::env::var_os("USERDROP_PG_REQUIRED").is_some_and(|v| !v.is_empty())
}

/// A running PostgreSQL server of one test.
pub struct Cluster {
    dir: TempDir,
    bin: PathBuf,
    owner: Option<(u32, u32)>,
    postmaster: Option<Child>,
    /// The shared cluster of [`shared`]: in memory where it can be.
    fast: bool,
}

impl Cluster {
    /// A new cluster, started; `None` when PostgreSQL is not installed and not
    /// required (the reason printed once, past the test harness's capture).
    pub fn start() -> Option<Cluster> {
        let Some(bin) = bin_dir() else {
            let why =
                "PostgreSQL binaries not found (USERDROP_PG_BIN, /usr/lib/postgresql/*/bin, PATH)";
            assert!(
                !required(),
                "{why}, and USERDROP_PG_REQUIRED is set: install them (apt-get install -y postgresql)"
            );
            static SAID: OnceLock<()> = OnceLock::new();
            SAID.get_or_init(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED: the PostgreSQL tests: {why}; apt-get install -y postgresql runs them, USERDROP_PG_REQUIRED=1 makes this a failure"
                );
            });
            return None;
        };
        Some(Cluster::started(bin, false))
    }

    /// A new cluster of the binaries in `bin`, started.
    fn started(bin: PathBuf, fast: bool) -> Cluster {
        let owner = owner();
        let template = template(&bin, owner);
        let shm = Path::new("/dev/shm");
        let dir = if fast && shm.is_dir() {
            tempfile::Builder::new().prefix("pg-shared").tempdir_in(shm)
        } else {
            tempfile::Builder::new().prefix("pg").tempdir()
        }
        .expect("a folder");
        chown(dir.path(), owner);
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&template)
            .arg(dir.path().join("data"))
            .status()
            .expect("cp runs");
        assert!(copied.success(), "the template copied");
        fs::set_permissions(dir.path().join("data"), fs::Permissions::from_mode(0o700))
            .expect("data is 0700");
        let mut cluster = Cluster {
            dir,
            bin,
            owner,
            postmaster: None,
            fast,
        };
        cluster.restart();
        cluster
    }

    /// The folder of the server's socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A connection string for `db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "host={} port=5432 user={USER} dbname={db}",
            self.socket_dir().display()
        )
    }

    /// The same as a `postgres://` URL, the only form `--store` takes: the socket's
    /// folder is the host, percent-encoded.
    pub fn postgres_url(&self, db: &str) -> String {
        let host: String = self
            .socket_dir()
            .to_str()
            .expect("a UTF-8 temp folder")
            .chars()
            .map(|c| match c {
                c if c.is_ascii_alphanumeric() || "-._~".contains(c) => c.to_string(),
                c => format!("%{:02X}", c as u32),
            })
            .collect();
        format!("postgres://{USER}@{host}:5432/{db}")
    }

    /// A connection to the maintenance database, as the superuser.
    pub fn admin(&self) -> postgres::Client {
        self.client("postgres")
    }

    pub fn client(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(db), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {db}: {e}\n{}", self.log()))
    }

    /// A new, empty UTF8 database; its connection string.
    pub fn database(&self, name: &str) -> String {
        self.admin()
            .batch_execute(&format!("CREATE DATABASE \"{name}\" ENCODING 'UTF8'"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        self.url(name)
    }

    /// Drops the database `name`, its sessions ended first (`WITH (FORCE)`); best effort.
    pub fn drop_database(&self, name: &str) {
        if let Ok(mut admin) = postgres::Client::connect(&self.url("postgres"), postgres::NoTls) {
            let _ =
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
        }
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Starts the server (again, after [`Cluster::kill9`]) and waits until it takes
    /// connections; a server that was killed first recovers from its WAL.
    pub fn restart(&mut self) {
        assert!(self.postmaster.is_none(), "the server is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("the server log");
        chown(&self.dir.path().join("server.log"), self.owner);
        let mut cmd = Command::new(self.bin.join("postgres"));
        as_owner(&mut cmd, self.owner)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.socket_dir())
            .args(["-c", "listen_addresses="])
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
            .args(["-c", "full_page_writes=on"])
            .args([
                "-c",
                if self.fast {
                    "max_connections=100"
                } else {
                    "max_connections=40"
                },
            ])
            .args(["-c", "shared_buffers=32MB"])
            .args(["-c", "log_min_messages=warning"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            // Its own process group: a ^C of the test run is not sent to it as well.
            .process_group(0);
        let mut child = cmd.spawn().expect("postgres starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("postgres exited at start ({status}):\n{}", self.log());
            }
            match postgres::Client::connect(&self.url("postgres"), postgres::NoTls) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    let _ = child.kill();
                    panic!("postgres did not come up in 60 s: {e}\n{}", self.log());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        self.postmaster = Some(child);
    }

    /// kill -9 of the whole server, the postmaster and every backend, as a crash of
    /// its machine would end it (less the page cache); returns once all are gone.
    pub fn kill9(&mut self) {
        let Some(mut child) = self.postmaster.take() else {
            return;
        };
        let pid = child.id() as i32;
        // Stopped, it forks no new backend while they are counted. Each backend is a
        // session leader of its own (PostgreSQL setsid()s them), so a process group
        // signal would miss them.
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let backends = children_of(pid);
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        for &backend in &backends {
            // SAFETY: as above.
            unsafe { libc::kill(backend, libc::SIGKILL) };
        }
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(20);
        while backends.iter().any(|&p| alive(p)) {
            assert!(Instant::now() < deadline, "backends survived kill -9");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server at once (immediate shutdown: nothing is kept anyway).
    fn stop(&mut self) {
        let Some(child) = self.postmaster.as_mut() else {
            return;
        };
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                self.postmaster = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Running (not a zombie, which holds no shared memory and no socket).
fn alive(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s != "Z"))
}

fn children_of(parent: i32) -> Vec<i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            stat_fields(pid).is_some_and(|f| f.get(1).and_then(|p| p.parse().ok()) == Some(parent))
        })
        .collect()
}

/// The cluster the pipeline's tests share when they run on PostgreSQL
/// (`USERDROP_TEST_ENGINE=postgres`, see `super::Env`): one server per test binary,
/// started on first use, a database per test. Its server is never killed (a test that
/// kills the server starts a [`Cluster`] of its own), so its folder is in /dev/shm
/// where that exists: its fsyncs are cheap there, and the server runs as configured
/// as in production (`fsync = on`; userdrop warns of anything else on every command,
/// which tests of stderr would see). A static is never dropped: the server is stopped and its
/// folder removed when the test binary exits (atexit), a failed run included.
///
/// PostgreSQL is required here: a test asked to run on it does not pass without it.
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    static STOP: OnceLock<(i32, PathBuf)> = OnceLock::new();
    extern "C" fn stop_shared() {
        let Some(&(pid, ref dir)) = STOP.get() else {
            return;
        };
        // SAFETY: kill and waitpid have no memory preconditions; the postmaster is
        // our child, reaped here.
        unsafe {
            libc::kill(pid, libc::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut status = 0;
            while libc::waitpid(pid, &mut status, libc::WNOHANG) == 0 {
                if Instant::now() > deadline {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = fs::remove_dir_all(dir);
    }
    SHARED.get_or_init(|| {
        let bin = bin_dir().unwrap_or_else(|| {
            panic!(
                "USERDROP_TEST_ENGINE=postgres, but no PostgreSQL binaries (USERDROP_PG_BIN, /usr/lib/postgresql/*/bin, PATH): apt-get install -y postgresql"
            )
        });
        let cluster = Cluster::started(bin, true);
        let pid = cluster.postmaster.as_ref().expect("started").id() as i32;
        let _ = STOP.set((pid, cluster.dir.path().to_path_buf()));
        // SAFETY: registers a plain function with no captured state.
        unsafe { libc::atexit(stop_shared) };
        cluster
    })
}
