//! The two store engines side by side (issue 14): the same cases on sled (`--db`) and
//! on PostgreSQL (`--store`), in one run, on the real release binary:
//!
//! ```text
//! cargo bench --bench engines -- [--users 100000] [--files 2000] [--per-file 5]
//!                                [--runs 1] [--dir DIR] [--engines sled,pg]
//! ```
//!
//! - **import**: `userdrop import` of a generated file of `--users` users into an empty
//!   store (1 000 000 for docs/BENCHMARKS.md; the default is smaller, for a quick run);
//! - **unchanged**: the same file again;
//! - **small**: `--files` files of `--per-file` users each (10 000 for the doc), through
//!   the daemon: `userdrop run --once --watch inbox`, which applies the inbox and exits.
//!
//! The PostgreSQL server is a cluster of the bench's own, made with `initdb` in a temp
//! folder under `--dir` (the same disk as sled's folders), started with the settings of
//! [`PG_SETTINGS`] (`fsync` and `synchronous_commit` on), reached over its Unix socket,
//! and removed at the end. It runs as the `postgres` user when the bench runs as root.
//! Each case gets a new database. `pg_stat_statements` and `pg_stat_wal` are read after
//! each PostgreSQL case and printed: where the server's time went.

mod common;
#[path = "../examples/gen.rs"]
mod generator;
use common::{disk_usage, mib, wait_with_peak, write_request_file};

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The server's settings, printed with the figures. Durable as a production server
/// must be (`fsync`, `synchronous_commit`, `full_page_writes` on); memory and WAL sized
/// for a 1M-user import on a machine with 24 GiB, so that no checkpoint falls inside a
/// measurement (the WAL of a 1M import is a few GiB).
const PG_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "on"),
    ("wal_level", "replica"),
    ("shared_buffers", "1GB"),
    ("wal_buffers", "64MB"),
    ("max_wal_size", "8GB"),
    ("min_wal_size", "1GB"),
    ("checkpoint_timeout", "30min"),
    ("checkpoint_completion_target", "0.9"),
    ("work_mem", "16MB"),
    ("maintenance_work_mem", "256MB"),
    ("max_connections", "20"),
    ("listen_addresses", ""),
    ("shared_preload_libraries", "pg_stat_statements"),
    ("pg_stat_statements.track_utility", "on"),
    ("track_io_timing", "on"),
    ("track_wal_io_timing", "on"),
    ("log_min_messages", "warning"),
];

/// The superuser `initdb` makes; trust over the socket.
const PG_USER: &str = "userdrop";

fn bin() -> String {
    std::env::var("USERDROP_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_userdrop").into())
}

struct Opts {
    users: u64,
    files: u64,
    per_file: u64,
    runs: usize,
    dir: PathBuf,
    sled: bool,
    pg: bool,
}

fn main() {
    let mut opts = Opts {
        users: 100_000,
        files: 2_000,
        per_file: 5,
        runs: 1,
        dir: std::env::temp_dir(),
        sled: true,
        pg: true,
    };
    let mut args = std::env::args().skip(1);
    let number = |v: Option<String>, name: &str| -> u64 {
        v.and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {}
            "--users" => opts.users = number(args.next(), "--users"),
            "--files" => opts.files = number(args.next(), "--files"),
            "--per-file" => opts.per_file = number(args.next(), "--per-file"),
            "--runs" => opts.runs = number(args.next(), "--runs").max(1) as usize,
            "--dir" => opts.dir = PathBuf::from(args.next().expect("--dir needs a folder")),
            "--engines" => {
                let list = args.next().expect("--engines needs sled, pg or sled,pg");
                opts.sled = list.split(',').any(|e| e == "sled");
                opts.pg = list.split(',').any(|e| e == "pg");
            }
            other => panic!("unknown argument {other}"),
        }
    }
    println!(
        "# userdrop engines, {} (binary {})",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        bin()
    );
    let work = tempfile::tempdir_in(&opts.dir).expect("a work folder");
    let cluster = opts.pg.then(|| Cluster::start(&opts.dir));
    if let Some(c) = &cluster {
        println!("PostgreSQL: {} at {}", c.version(), c.socket().display());
        let settings: Vec<String> = PG_SETTINGS
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        println!("settings: {}", settings.join(" "));
    }
    big(&opts, work.path(), cluster.as_ref());
    small(&opts, work.path(), cluster.as_ref());
}

// ---- the engines as the binary's arguments ----

#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Sled,
    Pg,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Pg => "PostgreSQL",
        }
    }
}

fn engines(opts: &Opts) -> Vec<Engine> {
    let mut out = vec![];
    if opts.sled {
        out.push(Engine::Sled);
    }
    if opts.pg {
        out.push(Engine::Pg);
    }
    out
}

/// The store arguments of one case: sled in `db`, or PostgreSQL database `name` with
/// its spool of copies in `db`.
fn store_args(engine: Engine, db: &Path, cluster: Option<&Cluster>, name: &str) -> Vec<String> {
    let mut args = vec!["--db".to_owned(), db.display().to_string()];
    if engine == Engine::Pg {
        let cluster = cluster.expect("a cluster");
        args.push("--store".into());
        cluster.database(name);
        args.push(cluster.store_url(name));
        args.push("--instance".into());
        args.push("bench".into());
    }
    args
}

// ---- timing the binary ----

fn settle_disk() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Runs the binary to completion; wall time and peak resident memory (KiB).
fn timed(args: &[String], cwd: &Path) -> (f64, u64) {
    settle_disk();
    let started = Instant::now();
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("USERDROP_TOKENS")
        .env_remove("USERDROP_STORE")
        .env_remove("USERDROP_INSTANCE")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(fs::File::create(cwd.join("userdrop.stderr")).expect("a log file"))
        .spawn()
        .expect("userdrop starts");
    let (status, peak) = wait_with_peak(&mut child);
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        matches!(status.code(), Some(0 | 3)),
        "userdrop {args:?} failed: {status:?}\n{}",
        fs::read_to_string(cwd.join("userdrop.stderr")).unwrap_or_default()
    );
    (elapsed, peak)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The size of what a case left: sled's folder, or the PostgreSQL database.
fn store_size(engine: Engine, db: &Path, cluster: Option<&Cluster>, name: &str) -> u64 {
    match engine {
        Engine::Sled => disk_usage(db),
        Engine::Pg => {
            let mut c = cluster.expect("a cluster").client(name);
            let size: i64 = c
                .query_one("SELECT pg_database_size(current_database())", &[])
                .expect("pg_database_size")
                .get(0);
            size as u64
        }
    }
}

// ---- the cases ----

/// One engine's figures: each case's seconds (median of the runs).
#[derive(Default)]
struct Figures {
    import: Vec<f64>,
    unchanged: Vec<f64>,
}

fn big(opts: &Opts, work: &Path, cluster: Option<&Cluster>) {
    let file = work.join("big.json");
    write_request_file(&file, 0, opts.users);
    let size = fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let users = opts.users as f64;
    println!(
        "\n## big file: {} users, {:.0} MB, {} run(s) per engine",
        opts.users,
        size as f64 / 1e6,
        opts.runs
    );
    let mut rows = vec![];
    for engine in engines(opts) {
        let mut f = Figures::default();
        let (mut rss, mut sizes) = ([vec![], vec![]], [vec![], vec![]]);
        for run in 0..opts.runs {
            let db = work.join(format!("{}-big{run}", engine.name()));
            let name = format!("big{run}");
            let mut args = vec!["import".to_owned()];
            args.extend(store_args(engine, &db, cluster, &name));
            args.push("big.json".into());
            for k in 0..2 {
                if let Some(c) = cluster.filter(|_| engine == Engine::Pg) {
                    c.reset_stats(&name);
                }
                let (t, peak) = timed(&args, work);
                let bytes = store_size(engine, &db, cluster, &name);
                let case = ["import", "unchanged"][k];
                println!(
                    "{} run {run} {case}: {t:.2} s, {:.0} users/s, peak RSS {:.0} MiB, store {:.0} MiB",
                    engine.name(),
                    users / t,
                    peak as f64 / 1024.0,
                    mib(bytes)
                );
                if let Some(c) = cluster.filter(|_| engine == Engine::Pg) {
                    c.print_stats(&name, t);
                }
                [&mut f.import, &mut f.unchanged][k].push(t);
                rss[k].push(peak as f64 / 1024.0);
                sizes[k].push(mib(bytes));
            }
            let _ = fs::remove_dir_all(&db);
        }
        rows.push((engine, f, rss, sizes));
    }
    println!("\n| case | engine | time | users/s | PG/sled | peak RSS | store after |");
    println!("|---|---|---|---|---|---|---|");
    for (k, case) in ["first import, empty store", "same file again, unchanged"]
        .iter()
        .enumerate()
    {
        let sled = rows
            .iter()
            .find(|r| r.0 == Engine::Sled)
            .map(|r| median([&r.1.import, &r.1.unchanged][k].clone()));
        for (engine, f, rss, sizes) in &rows {
            let t = median([&f.import, &f.unchanged][k].clone());
            let ratio = match (engine, sled) {
                (Engine::Pg, Some(s)) => format!("**{:.2}**", t / s),
                _ => String::new(),
            };
            println!(
                "| {case} | {} | {t:.2} s | {:.0} | {ratio} | {:.0} MiB | {:.0} MiB |",
                engine.name(),
                users / t,
                median(rss[k].clone()),
                median(sizes[k].clone())
            );
        }
    }
}

fn small(opts: &Opts, work: &Path, cluster: Option<&Cluster>) {
    let files = opts.files;
    println!(
        "\n## small files: {files} files of {} users, `run --once`, {} run(s) per engine",
        opts.per_file, opts.runs
    );
    let mut rows = vec![];
    // Every run's folder is kept until the end (see benches/targets.rs: ext4 is slow
    // to allocate inodes beside tens of thousands just deleted).
    let mut kept = vec![];
    for engine in engines(opts) {
        let mut times = vec![];
        for run in 0..opts.runs {
            let dir = tempfile::tempdir_in(work).expect("a folder");
            let inbox = dir.path().join("inbox");
            fs::create_dir(&inbox).expect("inbox");
            for f in 0..files {
                write_request_file(
                    &inbox.join(format!("f{f:06}.json")),
                    f * opts.per_file,
                    opts.per_file,
                );
            }
            let name = format!("small{run}");
            let mut args = vec!["run".to_owned(), "--once".into()];
            args.extend(["--watch".into(), "inbox".into()]);
            args.extend(store_args(engine, &dir.path().join("db"), cluster, &name));
            if let Some(c) = cluster.filter(|_| engine == Engine::Pg) {
                c.reset_stats(&name);
            }
            let (t, _) = timed(&args, dir.path());
            let answered = fs::read_dir(&inbox)
                .expect("inbox")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".response.json"))
                .count() as u64;
            assert_eq!(answered, files, "every file answered");
            println!(
                "{} run {run}: {t:.2} s, {:.0} files/s, {:.2} ms/file",
                engine.name(),
                files as f64 / t,
                t * 1000.0 / files as f64
            );
            if let Some(c) = cluster.filter(|_| engine == Engine::Pg) {
                c.print_stats(&name, t);
            }
            times.push(t);
            kept.push(dir);
        }
        rows.push((engine, median(times)));
    }
    let sled = rows.iter().find(|r| r.0 == Engine::Sled).map(|r| r.1);
    println!("\n| case | engine | time | files/s | ms/file | PG/sled |");
    println!("|---|---|---|---|---|---|");
    for (engine, t) in &rows {
        let ratio = match (engine, sled) {
            (Engine::Pg, Some(s)) => format!("**{:.2}**", t / s),
            _ => String::new(),
        };
        println!(
            "| {files} files × {} users, `run --once` | {} | {t:.2} s | {:.0} | {:.2} | {ratio} |",
            opts.per_file,
            engine.name(),
            files as f64 / t,
            t * 1000.0 / files as f64
        );
    }
}

// ---- the PostgreSQL cluster (the approach of tests/common/pg.rs) ----

fn pg_bin() -> PathBuf {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("USERDROP_PG_BIN") {
        return PathBuf::from(dir);
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
    versions
        .pop()
        .map(|(_, b)| b)
        .expect("PostgreSQL binaries (/usr/lib/postgresql/*/bin or USERDROP_PG_BIN)")
}

/// Who the server runs as: `None` for the bench's own user; `postgres` under root.
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
            return Some(unsafe { ((*entry).pw_uid, (*entry).pw_gid) });
        }
    }
    panic!("running as root, and there is no postgres or nobody user to run PostgreSQL as");
}

fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

struct Cluster {
    dir: tempfile::TempDir,
    postmaster: Child,
}

impl Cluster {
    fn start(under: &Path) -> Cluster {
        let bin = pg_bin();
        let owner = owner();
        let dir = tempfile::Builder::new()
            .prefix("pg")
            .tempdir_in(under)
            .expect("a folder for the cluster");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data = dir.path().join("data");
        let out = as_owner(&mut Command::new(bin.join("initdb")), owner)
            .arg("-D")
            .arg(&data)
            .args(["-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-locale"])
            .current_dir(dir.path())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).expect("data is 0700");
        let log = fs::File::create(dir.path().join("server.log")).expect("the server log");
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path().join("server.log"), Some(uid), Some(gid))
                .expect("chown");
        }
        let mut cmd = Command::new(bin.join("postgres"));
        as_owner(&mut cmd, owner)
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path());
        for (k, v) in PG_SETTINGS {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0);
        let mut postmaster = cmd.spawn().expect("postgres starts");
        let url = format!(
            "host={} port=5432 user={PG_USER} dbname=postgres",
            dir.path().display()
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = postmaster.try_wait() {
                panic!(
                    "postgres exited at start ({status}):\n{}",
                    fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
                );
            }
            match postgres::Client::connect(&url, postgres::NoTls) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => {
                    let _ = postmaster.kill();
                    panic!("postgres did not come up in 60 s: {e}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let cluster = Cluster { dir, postmaster };
        cluster
            .client("postgres")
            .batch_execute("CREATE EXTENSION pg_stat_statements")
            .expect("pg_stat_statements");
        cluster
    }

    fn socket(&self) -> &Path {
        self.dir.path()
    }

    fn url(&self, db: &str) -> String {
        format!(
            "host={} port=5432 user={PG_USER} dbname={db}",
            self.socket().display()
        )
    }

    /// What `--store` takes: a `postgres://` address, the socket's folder as the host
    /// (percent-encoded).
    fn store_url(&self, db: &str) -> String {
        let host = self.socket().display().to_string().replace('/', "%2F");
        format!("postgres://{PG_USER}@{host}/{db}")
    }

    fn client(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(db), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {db}: {e}"))
    }

    /// The database `name`, made when missing; its connection string.
    fn database(&self, name: &str) -> String {
        let mut c = self.client("postgres");
        let exists = c
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .expect("pg_database")
            .is_some();
        if !exists {
            c.batch_execute(&format!("CREATE DATABASE \"{name}\" ENCODING 'UTF8'"))
                .expect("CREATE DATABASE");
        }
        self.url(name)
    }

    fn version(&self) -> String {
        self.client("postgres")
            .query_one("SELECT version()", &[])
            .expect("version()")
            .get(0)
    }

    /// Starts a measurement: a checkpoint (so that none is due inside it), then the
    /// statement and WAL counters set to zero.
    fn reset_stats(&self, _db: &str) {
        let mut c = self.client("postgres");
        c.batch_execute(
            "CHECKPOINT; SELECT pg_stat_statements_reset(); SELECT pg_stat_reset_shared('wal');",
        )
        .expect("reset the statistics");
    }

    /// Where the server's time went since [`Cluster::reset_stats`]: the statements
    /// of database `db` by total time, and the WAL written and flushed.
    fn print_stats(&self, db: &str, wall: f64) {
        let mut c = self.client("postgres");
        let rows = c
            .query(
                "SELECT s.calls, s.total_exec_time, s.rows, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 90) \
                 FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid \
                 WHERE d.datname = $1 AND s.query NOT LIKE 'CREATE %' ORDER BY s.total_exec_time DESC LIMIT 8",
                &[&db],
            )
            .expect("pg_stat_statements");
        let total: f64 = rows.iter().map(|r| r.get::<_, f64>(1)).sum();
        println!(
            "  server time in statements: {:.2} s of {wall:.2} s wall; top statements:",
            total / 1000.0
        );
        for r in &rows {
            let (calls, ms, n, q): (i64, f64, i64, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3));
            println!(
                "    {:>8.2} s {calls:>7} calls {:>8.3} ms/call {n:>8} rows  {q}",
                ms / 1000.0,
                ms / calls.max(1) as f64
            );
        }
        let wal = c
            .query_one(
                "SELECT wal_records, wal_bytes::float8, wal_write, wal_sync, wal_write_time, wal_sync_time FROM pg_stat_wal",
                &[],
            )
            .expect("pg_stat_wal");
        let (records, bytes, writes, syncs, wt, st): (i64, f64, i64, i64, f64, f64) = (
            wal.get(0),
            wal.get(1),
            wal.get(2),
            wal.get(3),
            wal.get(4),
            wal.get(5),
        );
        println!(
            "  WAL: {records} records, {:.0} MiB, {writes} writes ({:.2} s), {syncs} fsyncs ({:.2} s, {:.2} ms each)",
            bytes / (1024.0 * 1024.0),
            wt / 1000.0,
            st / 1000.0,
            st / syncs.max(1) as f64
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Immediate shutdown: nothing in it is kept.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.postmaster.id() as i32, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.postmaster.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.postmaster.kill();
        let _ = self.postmaster.wait();
    }
}
