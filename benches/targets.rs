//! The performance targets of docs/BENCHMARKS.md, each with its floor measured in the
//! same run, on the real release binary and real folders:
//!
//! ```text
//! cargo bench --bench targets -- big      [--users 1000000] [--runs 3]   (import, unchanged
//!                                          re-imports, a nightly export with 1 % changed, the
//!                                          Python peer, store size; each against its floor)
//! cargo bench --bench targets -- small    [--files 10000] [--per-file 5] [--runs 3]
//! cargo bench --bench targets -- latency  [--files 500]
//! cargo bench --bench targets -- startup  [--pairs 100000] [--runs 3]
//! cargo bench --bench targets -- growth   [--users 1000000]
//! cargo bench --bench targets -- all      (every target with its defaults)
//! ```
//!
//! `--dir DIR` puts the work folders there (default: the system's temp folder). Timing
//! lives here, never in `cargo test`.

mod common;
#[path = "../examples/gen.rs"]
mod generator;
use common::{disk_usage, mib, wait_with_peak, write_request_file};

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// The same allocator as the product, so that the floor is not handicapped.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The binary measured: this build's, or `USERDROP_BENCH_BIN` (to measure an earlier
/// build against floors of the same run).
fn bin() -> String {
    std::env::var("USERDROP_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_userdrop").into())
}

struct Opts {
    target: String,
    users: u64,
    runs: usize,
    files: u64,
    per_file: u64,
    pairs: u64,
    dir: PathBuf,
}

fn main() {
    let mut opts = Opts {
        target: "all".into(),
        users: 1_000_000,
        runs: 3,
        files: 0,
        per_file: 5,
        pairs: 100_000,
        dir: std::env::temp_dir(),
    };
    let mut args = std::env::args().skip(1);
    let number = |v: Option<String>, name: &str| -> u64 {
        v.and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // `cargo bench` passes this to every bench binary.
            "--bench" => {}
            "--users" => opts.users = number(args.next(), "--users"),
            "--runs" => opts.runs = number(args.next(), "--runs").max(1) as usize,
            "--files" => opts.files = number(args.next(), "--files"),
            "--per-file" => opts.per_file = number(args.next(), "--per-file"),
            "--pairs" => opts.pairs = number(args.next(), "--pairs"),
            "--dir" => opts.dir = PathBuf::from(args.next().expect("--dir needs a folder")),
            t if !t.starts_with('-') => opts.target = t.to_owned(),
            other => panic!("unknown argument {other}"),
        }
    }
    println!(
        "# userdrop benchmarks, {} (binary {})",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        bin()
    );
    match opts.target.as_str() {
        "big" => big(&opts),
        "small" => small(&opts),
        "latency" => latency(&opts),
        "startup" => startup(&opts),
        "growth" => growth(&opts),
        "all" => {
            big(&opts);
            growth(&opts);
            small(&opts);
            latency(&opts);
            startup(&opts);
        }
        other => panic!("unknown target {other}: big, small, latency, startup, growth or all"),
    }
}

fn workdir(opts: &Opts) -> tempfile::TempDir {
    tempfile::tempdir_in(&opts.dir).expect("a work folder")
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Writes back every dirty page first, so that a measurement does not pay for the
/// previous one's writes (on this VM, 10 000-file runs slowed each other by 2x).
fn settle_disk() {
    // SAFETY: sync takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Runs the binary to completion; wall time and peak resident memory (KiB).
fn timed(args: &[&str], cwd: &Path) -> (Duration, u64) {
    settle_disk();
    let started = Instant::now();
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("USERDROP_TOKENS")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("userdrop starts");
    // The kernel's own peak (`ru_maxrss` from wait4) would count this bench's memory
    // too: the child is spawned with vfork, and exec keeps the parent's high-water
    // mark. The child's VmHWM in /proc is its own, and never goes down; sampled every
    // 5 ms, it misses at most the last 5 ms of growth.
    let (status, peak) = wait_with_peak(&mut child);
    let elapsed = started.elapsed();
    assert!(
        matches!(status.code(), Some(0 | 3)),
        "userdrop {args:?} failed: {status:?}"
    );
    (elapsed, peak)
}

// ---- the floors of the big file: typed parse + sled, nothing else ----

#[derive(Deserialize, Serialize)]
struct FloorRequest {
    #[allow(dead_code)]
    token: Option<String>,
    users: Vec<FloorUser>,
}

#[derive(Deserialize, Serialize)]
struct FloorUser {
    title: String,
    email: String,
    phone: String,
    country: String,
    city: String,
    address: String,
    discount_card: FloorCard,
    customer_group_id: u64,
    balance: f64,
    balance_currency: String,
    manager_id: u64,
    company: String,
    newsletter_subscription: bool,
}

#[derive(Deserialize, Serialize)]
struct FloorCard {
    discount: f64,
    active: bool,
    date_limit: String,
    status: u8,
}

/// What the floors of one run measured.
struct Floors {
    /// Typed parse from a slice, seconds.
    parse: f64,
    /// Individual inserts into an empty tree and one flush, seconds.
    insert: f64,
    /// The re-import: typed parse + one `get` per user + a byte compare, seconds.
    reimport: f64,
    /// The insert floor's sled folder after its flush, bytes.
    size: u64,
}

fn open_floor_db(dir: &Path) -> sled::Db {
    // The product's own cache size, so both pay the same for a small cache.
    sled::Config::new()
        .path(dir)
        .cache_capacity(64 * 1024 * 1024)
        .open()
        .expect("open sled")
}

fn parse_floor(file: &Path) -> (FloorRequest, f64) {
    let bytes = fs::read(file).expect("read the request");
    let t = Instant::now();
    let request: FloorRequest = serde_json::from_slice(&bytes).expect("parse the request");
    (request, t.elapsed().as_secs_f64())
}

/// The insert floor of `file`, then the re-import floor of the same file against the
/// store it made (reopened, so that its cache starts cold, as a new process's does).
fn floor_big(file: &Path, work: &Path) -> Floors {
    settle_disk();
    let (request, parse) = parse_floor(file);
    let dir = work.join("floor-db");
    let _ = fs::remove_dir_all(&dir);
    let db = open_floor_db(&dir);
    let t = Instant::now();
    for user in &request.users {
        let value = serde_json::to_vec(user).expect("encode");
        db.insert(user.email.as_bytes(), value).expect("insert");
    }
    db.flush().expect("flush");
    let insert = t.elapsed().as_secs_f64();
    drop((db, request));
    let size = disk_usage(&dir);
    settle_disk();
    let db = open_floor_db(&dir);
    let t = Instant::now();
    let (request, _) = parse_floor(file);
    let mut same = 0u64;
    for user in &request.users {
        let value = serde_json::to_vec(user).expect("encode");
        let stored = db.get(user.email.as_bytes()).expect("get");
        same += u64::from(stored.is_some_and(|s| *s == value[..]));
    }
    let reimport = t.elapsed().as_secs_f64();
    assert_eq!(
        same,
        request.users.len() as u64,
        "the floor found every user"
    );
    drop(db);
    let _ = fs::remove_dir_all(&dir);
    Floors {
        parse,
        insert,
        reimport,
        size,
    }
}

/// The Python peer (benches/peer.py: stdlib json + sqlite, one transaction) on an
/// empty database; seconds.
fn peer(file: &Path, work: &Path) -> Option<f64> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer.py");
    let db = work.join("peer.sqlite");
    let _ = fs::remove_file(&db);
    settle_disk();
    let t = Instant::now();
    let status = Command::new("python3")
        .arg(script)
        .arg(file)
        .arg(&db)
        .status();
    let elapsed = t.elapsed().as_secs_f64();
    let _ = fs::remove_file(&db);
    match status {
        Ok(s) if s.success() => Some(elapsed),
        other => {
            println!("(the Python peer did not run: {other:?})");
            None
        }
    }
}

/// One run of the four imports of [`big`]: seconds and peak RSS (KiB) of each, and the
/// store's size after each of the first three.
struct Imports {
    times: [f64; 4],
    rss: [f64; 4],
    sizes: [u64; 3],
}

const IMPORTS: [&str; 4] = [
    "`userdrop import`, empty store",
    "same file again, unchanged",
    "same file a third time, unchanged",
    "nightly export: 1 % of the users changed",
];

fn imports(work: &Path, run: usize) -> Imports {
    let db = work.join(format!("db{run}"));
    let db_arg = db.to_str().expect("a UTF-8 temp path");
    let mut out = Imports {
        times: [0.0; 4],
        rss: [0.0; 4],
        sizes: [0; 3],
    };
    for (i, file) in ["big.json", "big.json", "big.json", "nightly.json"]
        .iter()
        .enumerate()
    {
        let (t, rss) = timed(&["import", "--db", db_arg, file], work);
        out.times[i] = t.as_secs_f64();
        out.rss[i] = rss as f64 / 1024.0;
        if let Some(size) = out.sizes.get_mut(i) {
            *size = disk_usage(&db);
        }
    }
    let _ = fs::remove_dir_all(&db);
    out
}

fn big(opts: &Opts) {
    let work = workdir(opts);
    let file = work.path().join("big.json");
    write_request_file(&file, 0, opts.users);
    let nightly = work.path().join("nightly.json");
    let change = generator::Change {
        percent: 1.0,
        seed: 7,
    };
    let mut out = BufWriter::new(fs::File::create(&nightly).expect("create a request"));
    generator::write_request_changed(&mut out, 0, opts.users, change).expect("write");
    out.flush().expect("write a request");
    drop(out);
    let size = fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let users = opts.users as f64;
    println!(
        "\n## big file: {} users, {:.0} MB, median of {} runs",
        opts.users,
        size as f64 / 1e6,
        opts.runs
    );
    let mut floors = Vec::new();
    let mut runs = Vec::new();
    for run in 0..opts.runs {
        let f = floor_big(&file, work.path());
        let i = imports(work.path(), run);
        println!(
            "run {run}: floors: insert {:.2} s (parse {:.2} + sled {:.2}), re-import {:.2} s; \
             userdrop: import {:.2} s ({:.2}), unchanged {:.2} s ({:.2}), again {:.2} s, \
             nightly {:.2} s ({:.2}); store {:.0} / {:.0} / {:.0} MiB, floor's {:.0} MiB",
            f.parse + f.insert,
            f.parse,
            f.insert,
            f.reimport,
            i.times[0],
            i.times[0] / (f.parse + f.insert),
            i.times[1],
            i.times[1] / f.reimport,
            i.times[2],
            i.times[3],
            i.times[3] / f.reimport,
            mib(i.sizes[0]),
            mib(i.sizes[1]),
            mib(i.sizes[2]),
            mib(f.size)
        );
        floors.push(f);
        runs.push(i);
    }
    let peer = peer(&file, work.path());
    report_big(&floors, &runs, peer, users);
}

/// The medians of [`big`]'s runs; each ratio is the median of the runs' own ratios.
fn report_big(floors: &[Floors], runs: &[Imports], peer: Option<f64>, users: f64) {
    let of = |f: &dyn Fn(&Floors, &Imports) -> f64| {
        median(floors.iter().zip(runs).map(|(a, b)| f(a, b)).collect())
    };
    let insert = of(&|f, _| f.parse + f.insert);
    let reimport = of(&|f, _| f.reimport);
    println!("| case | time | users/s | floor | ratio to floor (target) | peak RSS |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| insert floor: typed parse from a slice ({:.2} s) + sled inserts, one flush ({:.2} s) | {insert:.2} s | {:.0} | | 1.00 | |",
        of(&|f, _| f.parse),
        of(&|f, _| f.insert),
        users / insert
    );
    println!(
        "| re-import floor: typed parse + one sled get per user + byte compare | {reimport:.2} s | {:.0} | | 1.00 | |",
        users / reimport
    );
    for (k, label) in IMPORTS.iter().enumerate() {
        let t = of(&|_, i| i.times[k]);
        let (floor, ratio, target) = match k {
            0 => (
                "insert",
                of(&|f, i| i.times[0] / (f.parse + f.insert)),
                "≤ 1.25",
            ),
            3 => ("re-import", of(&|f, i| i.times[3] / f.reimport), "≤ 1.4"),
            _ => ("re-import", of(&|f, i| i.times[k] / f.reimport), "≤ 1.25"),
        };
        println!(
            "| {label} | {t:.2} s | {:.0} | {floor} | **{ratio:.2}** ({target}) | {:.0} MiB |",
            users / t,
            of(&|_, i| i.rss[k])
        );
    }
    let floor_size = of(&|f, _| f.size as f64);
    println!(
        "\nstore on disk: after the first import {:.0} MiB = **{:.2}** × the insert floor's sled folder ({:.0} MiB; target ≤ 1.1); after two unchanged re-imports {:.0} → {:.0} MiB (target: no growth)",
        of(&|_, i| mib(i.sizes[0])),
        of(&|f, i| i.sizes[0] as f64 / f.size as f64),
        floor_size / (1024.0 * 1024.0),
        of(&|_, i| mib(i.sizes[1])),
        of(&|_, i| mib(i.sizes[2])),
    );
    if let Some(peer) = peer {
        let first = of(&|_, i| i.times[0]);
        println!(
            "Python peer (benches/peer.py: json + sqlite, one transaction), first import: {peer:.2} s = {:.0} users/s; userdrop is **{:.2}** × faster (target ≥ 5)",
            users / peer,
            peer / first
        );
    }
}

fn growth(opts: &Opts) {
    let work = workdir(opts);
    let file = work.path().join("big.json");
    write_request_file(&file, 0, opts.users);
    let db = work.path().join("db");
    let db_arg = db.to_str().expect("a UTF-8 temp path");
    println!("\n## store growth: {} users", opts.users);
    println!("| after | store on disk |");
    println!("|---|---|");
    for label in [
        "first import",
        "second import (unchanged)",
        "third import (unchanged)",
    ] {
        let (t, _) = timed(&["import", "--db", db_arg, "big.json"], work.path());
        println!(
            "| {label} ({:.1} s) | {:.0} MiB |",
            t.as_secs_f64(),
            mib(disk_usage(&db))
        );
    }
}

// ---- many small files ----

fn small(opts: &Opts) {
    let files = if opts.files == 0 { 10_000 } else { opts.files };
    println!(
        "\n## many small files: {files} files of {} users, `run --once`, median of {} runs",
        opts.per_file, opts.runs
    );
    let (mut times, mut floors) = (vec![], vec![]);
    // Every run's folder is kept until the end: ext4 allocates inodes slowly next to
    // tens of thousands just deleted (`recently_deleted`), which made each run pay
    // for the last one's clean-up (up to 2x).
    let mut kept = Vec::new();
    for run in 0..opts.runs {
        let work = workdir(opts);
        let inbox = work.path().join("inbox");
        fs::create_dir(&inbox).expect("inbox");
        for f in 0..files {
            write_request_file(
                &inbox.join(format!("f{f:06}.json")),
                f * opts.per_file,
                opts.per_file,
            );
        }
        floors.push(floor_small(&inbox, work.path()));
        let (t, _) = timed(
            &["run", "--once", "--watch", "inbox", "--db", "db"],
            work.path(),
        );
        let answered = fs::read_dir(&inbox)
            .expect("inbox")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".response.json"))
            .count() as u64;
        assert_eq!(answered, files, "every file answered");
        times.push(t.as_secs_f64());
        println!(
            "run {run}: {:.2} s, {:.0} files/s",
            t.as_secs_f64(),
            files as f64 / t.as_secs_f64()
        );
        kept.push(work);
    }
    drop(kept);
    let (t, floor) = (median(times), median(floors));
    println!("| case | time | files/s | ratio to floor |");
    println!("|---|---|---|---|");
    println!(
        "| floor: read + typed parse of every file, sled inserts, one flush, one small file written per request, one syncfs | {floor:.2} s | {:.0} | 1.00 |",
        files as f64 / floor
    );
    println!(
        "| `userdrop run --once` | {t:.2} s | {:.0} | {:.2} |",
        files as f64 / t,
        t / floor
    );
}

/// The least work any design must do for the small files: read and parse each, insert
/// its users, flush once, write one answer file per request and make them durable.
fn floor_small(inbox: &Path, work: &Path) -> f64 {
    let out = work.join("floor-out");
    fs::create_dir_all(&out).expect("floor folder");
    let db = sled::Config::new()
        .path(work.join("floor-db"))
        .cache_capacity(64 * 1024 * 1024)
        .open()
        .expect("open sled");
    let mut names: Vec<PathBuf> = fs::read_dir(inbox)
        .expect("inbox")
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    settle_disk();
    let t = Instant::now();
    for path in &names {
        let bytes = fs::read(path).expect("read");
        let request: FloorRequest = serde_json::from_slice(&bytes).expect("parse");
        for user in &request.users {
            let value = serde_json::to_vec(user).expect("encode");
            db.insert(user.email.as_bytes(), value).expect("insert");
        }
    }
    db.flush().expect("flush");
    for path in &names {
        let name = path.file_name().expect("a name");
        fs::write(out.join(name), b"{\"status\":\"OK\"}\n").expect("write");
    }
    let dir = fs::File::open(&out).expect("open the folder");
    // SAFETY: syncfs on a descriptor we own and keep open for the call.
    unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) };
    t.elapsed().as_secs_f64()
}

// ---- latency of one small file in a running daemon ----

struct Daemon {
    child: Child,
}

impl Daemon {
    /// Starts `run` and waits until its initial scan is done.
    fn start(work: &Path, extra: &[&str]) -> (Daemon, Duration) {
        let started = Instant::now();
        let mut child = Command::new(bin())
            .args(["run", "--watch", "inbox", "--db", "db"])
            .args(extra)
            .current_dir(work)
            .env_remove("USERDROP_TOKENS")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("userdrop starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("watching") => break,
                Some(Ok(_)) => {}
                _ => panic!("the daemon stopped before watching"),
            }
        }
        let ready = started.elapsed();
        // Keep draining its log so that it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        (Daemon { child }, ready)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn latency(opts: &Opts) {
    let files = if opts.files == 0 { 500 } else { opts.files };
    let work = workdir(opts);
    let inbox = work.path().join("inbox");
    fs::create_dir(&inbox).expect("inbox");
    let (daemon, _) = Daemon::start(work.path(), &[]);
    let mut samples = Vec::new();
    let mut floor = Vec::new();
    for i in 0..files {
        let hidden = inbox.join(format!(".l{i:04}.json"));
        write_request_file(&hidden, 10_000_000 + i, 1);
        let target = inbox.join(format!("l{i:04}.json"));
        let response = inbox.join(format!("l{i:04}.response.json"));
        let t = Instant::now();
        fs::rename(&hidden, &target).expect("rename into the inbox");
        while !response.exists() {
            assert!(t.elapsed() < Duration::from_secs(10), "no response for {i}");
            std::thread::sleep(Duration::from_micros(100));
        }
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
        floor.push(durable_write(work.path(), i) * 1000.0);
    }
    drop(daemon);
    samples.sort_by(f64::total_cmp);
    floor.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    let (f50, f99) = (percentile(&floor, 0.5), percentile(&floor, 0.99));
    println!("\n## latency: {files} one-user files renamed into a running daemon's inbox");
    println!("| case | median | p99 | max | ratio (median) |");
    println!("|---|---|---|---|---|");
    println!(
        "| floor: write a small file, fsync, rename, fsync the folder | {f50:.2} ms | {f99:.2} ms | {:.2} ms | 1.00 |",
        floor.last().copied().unwrap_or(0.0)
    );
    println!(
        "| rename → response present | {p50:.2} ms | {p99:.2} ms | {:.2} ms | {:.1} |",
        samples.last().copied().unwrap_or(0.0),
        p50 / f50
    );
}

/// One durable small-file write, the way a response is written; seconds.
fn durable_write(work: &Path, i: u64) -> f64 {
    let dir = work.join("floor-latency");
    fs::create_dir_all(&dir).expect("floor folder");
    let t = Instant::now();
    let tmp = dir.join(".x.tmp");
    let mut f = fs::File::create(&tmp).expect("create");
    f.write_all(format!("{{\"n\":{i}}}\n").as_bytes())
        .expect("write");
    f.sync_all().expect("fsync");
    fs::rename(&tmp, dir.join("x.json")).expect("rename");
    fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .expect("fsync the folder");
    t.elapsed().as_secs_f64()
}

// ---- start-up with a long history in the inbox ----

fn startup(opts: &Opts) {
    let work = workdir(opts);
    let inbox = work.path().join("inbox");
    fs::create_dir(&inbox).expect("inbox");
    for i in 0..opts.pairs {
        fs::write(inbox.join(format!("h{i:06}.json")), b"{\"users\":[]}\n").expect("write");
        fs::write(
            inbox.join(format!("h{i:06}.response.json")),
            b"{\"status\":\"OK\"}\n",
        )
        .expect("write");
    }
    // The store exists, as it would on a server that processed this history.
    timed(&["stats", "--db", "db"], work.path());
    let (mut times, mut floors) = (vec![], vec![]);
    for _ in 0..opts.runs {
        let t = Instant::now();
        let names = fs::read_dir(&inbox).expect("inbox").count();
        floors.push(t.elapsed().as_secs_f64());
        assert_eq!(names as u64, 2 * opts.pairs);
        let (daemon, ready) = Daemon::start(work.path(), &[]);
        times.push(ready.as_secs_f64());
        drop(daemon);
    }
    let (t, floor) = (median(times), median(floors));
    println!(
        "\n## start-up: {} request/response pairs in the inbox, median of {} runs",
        opts.pairs, opts.runs
    );
    println!("| case | time | ratio to floor |");
    println!("|---|---|---|");
    println!(
        "| floor: list the inbox once | {:.0} ms | 1.00 |",
        floor * 1000.0
    );
    println!(
        "| process start → initial scan done, watching | {:.0} ms | {:.1} |",
        t * 1000.0,
        t / floor
    );
}
