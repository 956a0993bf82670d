//! The command line (SPEC §6): argument definitions and one function per command.
//! Each function returns the process exit code.

use crate::config::{self, ConfigError, Effective, Reloader};
use crate::control::{self, Query};
use crate::daemon::{self, DaemonOptions};
use crate::export::Format;
use crate::hooks::{Hooks, Reload, Reloaded};
use crate::inbox;
use crate::messages::Lang;
use crate::metrics::Metrics;
use crate::model::Status;
use crate::process::{self, Auth, Settings};
use crate::response;
use crate::store::{Store, StoreError, StoreOptions};
use clap::{Args, Parser, Subcommand};
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every file was `OK`.
pub const EXIT_OK: u8 = 0;
/// An operational failure: the store is locked or unreadable, a file cannot be read,
/// the disk is full.
pub const EXIT_FAILURE: u8 = 1;
/// Some file was `WARNING` or `ERROR`.
pub const EXIT_REJECTED: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "userdrop",
    version,
    about = "Keep a shop's customer list in sync from users/import request files.",
    long_about = "Keep a shop's customer list in sync from users/import request files.\n\n\
        Drop a users/import request (JSON) into the inbox folder; userdrop validates every \
        user, upserts the valid ones into its store (keyed by email) and writes \
        NAME.response.json beside NAME.json, in the format of the platform's HTTP function.\n\n\
        Without a command, userdrop runs the daemon on ./watch with the store in ./data.",
    args_conflicts_with_subcommands = true,
    after_help = "Exit codes: 0 every file OK; 3 some file WARNING or ERROR; \
        1 operational failure (store locked or unreadable, inbox missing, disk full); 2 bad usage."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Watch the inbox and process every request dropped there (the default command).
    Run(RunArgs),
    /// Apply these request files now; write each response beside its file.
    Import(ImportArgs),
    /// Validate files against the store and print the would-be responses; change nothing.
    Check(ImportArgs),
    /// Print the stored user with this email as JSON; exit 1 if there is none.
    Get {
        /// The email, in any case; it is trimmed and lower-cased like on import.
        email: String,
        #[command(flatten)]
        common: Common,
    },
    /// Print every stored user, sorted by email.
    Export {
        /// json: a users/import request that re-imports to the same store;
        /// ndjson: one full record per line; csv: a spreadsheet.
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        #[command(flatten)]
        common: Common,
    },
    /// Count the stored users and the processed files by status.
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Print a JSON Schema (draft 2020-12) of the request file, for editors and CI.
    ///
    /// By default only the request format: the known keys and each field's JSON type.
    Schema {
        /// Also every per-user value rule (mandatory title and email, patterns, ranges,
        /// lengths): a file that passes has no user rejected for them.
        #[arg(long)]
        strict: bool,
    },
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
    /// Print the effective configuration: every setting, its value and where it comes
    /// from (flag, env, file or default). Tokens are counted, never shown.
    Config {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        run: RunArgs,
    },
}

/// Options every command takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// A TOML config file: a key for every option below (flags and USERDROP_*
    /// variables take precedence over it).
    #[arg(long, value_name = "FILE", env = "USERDROP_CONFIG")]
    pub config: Option<PathBuf>,
    /// The store's folder (created if missing; keep it outside the inbox).
    #[arg(long, value_name = "DIR", default_value = "data", env = "USERDROP_DB")]
    pub db: PathBuf,
    /// sled's page cache, in MiB (at least 1).
    #[arg(
        long,
        value_name = "MIB",
        default_value_t = 64,
        value_parser = clap::value_parser!(u64).range(1..),
        env = "USERDROP_CACHE_MB"
    )]
    pub cache_mb: u64,
    /// Log level for stderr (overridden by RUST_LOG).
    #[arg(
        long,
        value_name = "LEVEL",
        value_enum,
        default_value_t = LogLevel::Info,
        env = "USERDROP_LOG_LEVEL"
    )]
    pub log_level: LogLevel,
    /// Log format for stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "USERDROP_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// How much goes to stderr. A word that is not a level is refused (exit 2) rather
/// than read as a filter that silently matches nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    #[value(alias = "warning")]
    Warn,
    Info,
    Debug,
    Trace,
    Off,
}

impl LogLevel {
    /// The directive for `tracing`'s filter.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
            LogLevel::Off => "off",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Options of the commands that process request files.
#[derive(Args, Debug, Clone)]
pub struct Processing {
    /// A token requests must carry (repeatable). With none, `token` is optional and ignored.
    #[arg(
        long = "token",
        value_name = "T",
        env = "USERDROP_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub tokens: Vec<String>,
    /// A file of tokens, one a line (blank lines and lines starting with # are
    /// ignored), added to --token: it keeps them out of the process list. Read at
    /// start and again on SIGHUP.
    #[arg(long, value_name = "PATH", env = "USERDROP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Files larger than this are rejected with ERROR without being read.
    #[arg(long, value_name = "BYTES", default_value_t = 512 * 1024 * 1024, env = "USERDROP_MAX_FILE_SIZE")]
    pub max_file_size: u64,
    /// Language of the response messages.
    #[arg(long, value_enum, default_value_t = Lang::En, env = "USERDROP_LANG")]
    pub lang: Lang,
    /// Users applied per atomic step; bounds memory and what a crash can cut short.
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..), env = "USERDROP_STEP_USERS")]
    pub step_users: u64,
    /// Write Prometheus metrics (text format, for node_exporter's textfile collector)
    /// to this file after every processed file (run and import).
    #[arg(long, value_name = "PATH", env = "USERDROP_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

impl Processing {
    pub fn settings(&self) -> Settings {
        Settings {
            max_file_size: self.max_file_size,
            step_users: usize::try_from(self.step_users).unwrap_or(usize::MAX),
            auth: Auth::new(self.tokens.iter().cloned()),
            lang: self.lang,
            stop: None,
            meter: None,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    /// Request files (users/import JSON).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub processing: Processing,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The inbox folder.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "watch",
        env = "USERDROP_WATCH"
    )]
    pub watch: PathBuf,
    /// Process the requests waiting in the inbox, then exit.
    #[arg(long)]
    pub once: bool,
    /// Poll the inbox every MS milliseconds instead of using inotify events (for
    /// NFS/SMB/FUSE mounts, where events do not arrive).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..), env = "USERDROP_POLL")]
    pub poll: Option<u64>,
    /// Full rescan of the inbox every SECS seconds, in both modes, so that no file is
    /// missed after an event-queue overflow.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..), env = "USERDROP_RESCAN")]
    pub rescan: u64,
    /// How long a file that does not parse must stay unchanged before it gets ERROR,
    /// in milliseconds (a partial upload is waited for until then).
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 2000,
        env = "USERDROP_SETTLE"
    )]
    pub settle: u64,
    #[command(flatten)]
    pub processing: Processing,
}

impl Common {
    pub fn open_store(&self) -> Result<Store, crate::store::StoreError> {
        let options = StoreOptions {
            cache_bytes: self.cache_mb.saturating_mul(1024 * 1024),
        };
        Store::open(&self.db, &options)
    }
}

/// What to say when `db` holds no store (sled's log file `db`, which every store has):
/// the read commands never create one (SPEC §6), so a wrong folder is an operational
/// failure naming the path, not an empty store that answers "no user".
fn no_store(db: &Path) -> Option<String> {
    (!db.join("db").is_file()).then(|| {
        format!(
            "there is no store at {}; give --db DIR (the daemon's store), or run this from the folder that holds its data/",
            db.display()
        )
    })
}

impl Cli {
    pub fn common(&self) -> &Common {
        match &self.command {
            None => &self.run.processing.common,
            Some(Command::Run(a) | Command::Config { run: a, .. }) => &a.processing.common,
            Some(Command::Import(a) | Command::Check(a)) => &a.processing.common,
            Some(
                Command::Get { common, .. }
                | Command::Export { common, .. }
                | Command::Stats { common, .. },
            ) => common,
            // They take no options and never open the store: the defaults only set
            // up logging.
            Some(Command::Schema { .. } | Command::Completions { .. } | Command::Man) => {
                &self.run.processing.common
            }
        }
    }
}

/// Bad usage, including a config file that is wrong (unknown key, bad value).
pub const EXIT_USAGE: u8 = 2;

/// Applies the config file to the parsed arguments (see `config`): `matches` are
/// those `args` were parsed from. Returns the effective configuration and, for the
/// daemon, what SIGHUP needs to read the file again.
pub fn configure(
    args: &mut Cli,
    matches: &clap::ArgMatches,
) -> Result<(Effective, Option<Reloader>), ConfigError> {
    // The default command's options sit at the top level, a subcommand's under it.
    let own = matches.subcommand().map_or(matches, |(_, m)| m);
    match &mut args.command {
        None => daemon_config(&mut args.run, own),
        Some(Command::Run(run)) => daemon_config(run, own),
        Some(Command::Config { run, .. }) => Ok((config::resolve_run(run, own)?, None)),
        Some(Command::Import(a) | Command::Check(a)) => {
            Ok((config::resolve_processing(&mut a.processing, own)?, None))
        }
        Some(
            Command::Get { common, .. }
            | Command::Export { common, .. }
            | Command::Stats { common, .. },
        ) => Ok((config::resolve_common(common, own)?, None)),
        // They take no options and never open the store: nothing to configure.
        Some(Command::Schema { .. } | Command::Completions { .. } | Command::Man) => Ok((
            Effective {
                file: None,
                entries: Vec::new(),
            },
            None,
        )),
    }
}

fn daemon_config(
    run: &mut RunArgs,
    own: &clap::ArgMatches,
) -> Result<(Effective, Option<Reloader>), ConfigError> {
    let reloader = Reloader::new(run.clone(), own.clone());
    Ok((config::resolve_run(run, own)?, Some(reloader)))
}

/// `config`: the effective configuration.
pub fn show_config(effective: &Effective, json: bool) -> ExitCode {
    let text = if json {
        format!("{}\n", config::render_json(effective))
    } else {
        config::render_text(effective)
    };
    match io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => fail(&e),
    }
}

/// Prints an operational error the way every command does.
pub fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    crate::logs::print_error(error);
    ExitCode::from(EXIT_FAILURE)
}

fn exit_for(statuses: impl IntoIterator<Item = Status>) -> ExitCode {
    let rejected = statuses.into_iter().any(|s| s != Status::Ok);
    ExitCode::from(if rejected { EXIT_REJECTED } else { EXIT_OK })
}

/// `import FILE...`. A stop signal (Ctrl-C) ends it after the step in hand, saying
/// what is committed and how to finish.
pub fn import(args: &ImportArgs, signals: daemon::Signals) -> ExitCode {
    let mut settings = args.processing.settings();
    settings.stop = Some(Arc::clone(&signals.stop));
    // A bar only for a person watching: logs and scripts get the one line per file.
    let bar = io::stderr().is_terminal().then(Bar::new);
    if let Some(bar) = &bar {
        settings.meter = Some(Arc::new(bar.clone()));
    }
    let store = match args.processing.common.open_store() {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let named: Vec<PathBuf> = args
        .files
        .iter()
        .filter_map(|f| process::request_key(f))
        .collect();
    if let Err(e) = process::replay_outbox(&store, settings.lang, &named) {
        return fail(&e);
    }
    if let Err(e) = process::finish_interrupted(&store, &settings, &named) {
        return fail(&e);
    }
    if let Err(e) = forget_vanished(&store) {
        return fail(&e);
    }
    let mut metrics = match open_metrics(&args.processing, &store) {
        Ok(m) => m,
        Err(e) => return fail(&e),
    };
    let code = for_each_file(&args.files, |file| {
        let started = Instant::now();
        if let Some(bar) = &bar {
            bar.start(file);
        }
        let applied = process::apply_file(&store, file, &settings);
        if let Some(bar) = &bar {
            bar.0.finish_and_clear();
        }
        if let Err(process::Error::Interrupted) = &applied {
            say_where_it_stopped(&store, file);
        }
        let record = applied?;
        process::log_processed(&record, started);
        if let Some(m) = &mut metrics {
            m.file_done(&record, started.elapsed());
        }
        Ok(record.status)
    });
    // Makes the last outbox clearing durable, which lets the spool files go.
    if let Err(e) = store.flush() {
        tracing::warn!(
            "{e}; the responses written stand, and the next start finishes this clean-up"
        );
    }
    code
}

/// After a stop mid-file: what of `file` is committed, and how to finish it.
fn say_where_it_stopped(store: &Store, file: &Path) {
    let done = process::request_key(file)
        .and_then(|path| store.progress(&path).ok().flatten())
        .map_or(0, |p| p.next_index);
    eprintln!(
        "userdrop: stopped by a signal: the first {done} users of {} are applied and durable; run the same import again to finish it (nothing is applied twice)",
        file.display()
    );
}

/// `import`'s progress bar on a terminal, moved on by each committed step.
#[derive(Clone, Debug)]
struct Bar(indicatif::ProgressBar);

impl Bar {
    fn new() -> Bar {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        let style = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {human_pos}/{human_len} users, {eta} left",
        )
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        Bar(bar)
    }

    fn start(&self, file: &Path) {
        self.0.reset();
        self.0.set_length(0);
        self.0.set_message(
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
}

impl process::Meter for Bar {
    fn advance(&self, done: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
    }
}

/// Runs `one` on every file, going on past failures; the exit code of SPEC §6:
/// 1 if any file failed operationally, else 3 if any was not `OK`, else 0.
fn for_each_file(
    files: &[PathBuf],
    mut one: impl FnMut(&Path) -> Result<Status, process::Error>,
) -> ExitCode {
    let mut statuses = Vec::new();
    let mut failed = false;
    for file in files {
        match one(file) {
            Ok(status) => statuses.push(status),
            // Said by the command, with what is committed; the other files wait.
            Err(process::Error::Interrupted) => {
                failed = true;
                break;
            }
            Err(e) => {
                eprintln!("userdrop: error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_FAILURE)
    } else {
        exit_for(statuses)
    }
}

/// `check FILE...`: the would-be responses on stdout, one JSON document per file.
pub fn check(args: &ImportArgs) -> ExitCode {
    let settings = args.processing.settings();
    let common = &args.processing.common;
    // No store yet: judged against an empty one, and none is created.
    let opened = match no_store(&common.db) {
        Some(_) => Store::scratch().map_err(|e| e.to_string()),
        None => common.open_store().map_err(|e| e.to_string()),
    };
    let store = match opened {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for_each_file(&args.files, |file| {
        let checked = process::check_file(&store, file, &settings)?;
        let r = &checked.record;
        let log = std::iter::once(Ok(checked.log));
        response::write_json(&mut out, r.status, r.message.as_ref(), log, settings.lang)
            .and_then(|()| out.flush())
            .map_err(|source| process::Error::Write {
                path: PathBuf::from("(stdout)"),
                source,
            })?;
        eprintln!("{}: {}", file.display(), r.status);
        Ok(r.status)
    })
}

/// `get`, `export` and `stats`: from the store, or from the daemon that holds it.
pub fn read(query: &Query, common: &Common) -> ExitCode {
    let stdout = Stdout::default();
    let mut out = BufWriter::new(stdout.clone());
    if let Some(missing) = no_store(&common.db) {
        return fail(&missing);
    }
    let reply = match common.open_store() {
        Ok(store) => control::answer(&store, query, &mut out),
        Err(StoreError::Locked(dir)) => control::ask(&common.db, query, &mut out).map_err(|e| {
            format!(
                "the store {} is held by another process and its control socket did not answer ({e}); is a userdrop daemon running on it?",
                dir.display()
            )
        }),
        Err(e) => Err(e.to_string()),
    };
    let flushed = out.flush();
    if stdout.closed() {
        // `| head` has what it wanted (SPEC §6: a closed output ends quietly).
        return ExitCode::from(EXIT_OK);
    }
    if let Err(e) = flushed {
        return fail(&e);
    }
    match reply {
        Ok(reply) => {
            if let Some(note) = reply.note {
                eprintln!("userdrop: {note}");
            }
            ExitCode::from(reply.exit)
        }
        Err(e) => fail(&e),
    }
}

/// Standard output that remembers whether its reader went away (`| head`): a
/// command then ends quietly, and the error that stopped it is not an error.
#[derive(Clone, Default)]
struct Stdout {
    closed: Arc<std::sync::atomic::AtomicBool>,
}

impl Stdout {
    fn closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn watch<T>(&self, result: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &result
            && e.kind() == io::ErrorKind::BrokenPipe
        {
            self.closed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.watch(io::stdout().lock().write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.watch(io::stdout().lock().flush())
    }
}

/// `run`: the daemon on the inbox. `reloader` reads the config file again on SIGHUP;
/// `signals` were installed first thing at start-up.
pub fn run(args: &RunArgs, reloader: Option<Reloader>, signals: daemon::Signals) -> ExitCode {
    let settings = args.processing.settings();
    if !args.watch.is_dir() {
        return fail(&format!(
            "the inbox {} is not a folder; create it or give --watch DIR",
            args.watch.display()
        ));
    }
    let store = match args.processing.common.open_store() {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    // A stop during start-up stops a file being finished after its step in hand, too.
    let startup_settings = Settings {
        stop: Some(Arc::clone(&signals.stop)),
        ..settings.clone()
    };
    // Before the start-up work, which may finish a file cut short (minutes for a
    // million users): the log says at once which daemon this is and how it is set up.
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        inbox = args.watch.display().to_string(),
        store = args.processing.common.db.display().to_string(),
        mode = crate::watch::mode(args.poll.map(Duration::from_millis)),
        settle_ms = args.settle,
        authorization = settings.auth.is_on(),
        "userdrop started"
    );
    if let Err(e) = startup(&store, &args.watch, &startup_settings) {
        return fail(&e);
    }
    if signals.stopped() {
        if let Err(e) = store.flush() {
            return fail(&e);
        }
        tracing::info!(
            reason = "signal during start-up",
            "userdrop stopped; the store is durable"
        );
        return ExitCode::from(EXIT_OK);
    }
    if let Err(e) = control::serve(store.clone(), &args.processing.common.db) {
        return fail(&format!(
            "cannot open the control socket in {}: {e}",
            args.processing.common.db.display()
        ));
    }
    let metrics = match open_metrics(&args.processing, &store) {
        Ok(m) => m,
        Err(e) => return fail(&e),
    };
    let options = DaemonOptions {
        inbox: args.watch.clone(),
        poll: args.poll.map(Duration::from_millis),
        rescan: Duration::from_secs(args.rescan),
        settle: Duration::from_millis(args.settle),
        once: args.once,
        signals,
        hooks: Hooks {
            metrics: metrics.map(|m| Arc::new(Mutex::new(m))),
            // Without a config file or a token file, SIGHUP only rescans.
            reload: reloader
                .filter(Reloader::has_files)
                .map(|r| reload_with(r, args.clone())),
            ..Hooks::default()
        },
    };
    match daemon::run(&store, &options, &settings) {
        // The daemon's exit code speaks of its own health; with --once it also tells
        // whether every file was OK, like `import`.
        Ok(all_ok) if args.once && !all_ok => ExitCode::from(EXIT_REJECTED),
        Ok(_) => ExitCode::from(EXIT_OK),
        Err(e) => fail(&e),
    }
}

/// The metrics file, if one is configured; written once at once, so that a wrong
/// path is told at start-up rather than after the first file.
fn open_metrics(p: &Processing, store: &Store) -> Result<Option<Metrics>, String> {
    p.metrics_file
        .as_deref()
        .map(|path| Metrics::open(path, store))
        .transpose()
}

/// SIGHUP's reload: the config file read again, compared with what the daemon started
/// with (`started`) to tell which changes need a restart.
fn reload_with(reloader: Reloader, started: RunArgs) -> Reload {
    Arc::new(move || {
        let file = reloader.file().map(|f| f.display().to_string());
        let (fresh, ignored) = reloader.reload(&started).map_err(|e| e.to_string())?;
        if !ignored.is_empty() {
            tracing::warn!(
                config = %file.as_deref().unwrap_or_default(),
                keys = %ignored.join(", "),
                "these keys changed but take effect only at a restart; restart the daemon to apply them"
            );
        }
        Ok(Reloaded {
            settings: fresh.processing.settings(),
            settle: Duration::from_millis(fresh.settle),
        })
    })
}

/// What every daemon start does before taking files: say how it is set up, clean up
/// after a crash, and deliver the responses a crash held back.
pub fn startup(store: &Store, inbox_dir: &Path, settings: &Settings) -> Result<(), String> {
    if !settings.auth.is_on() {
        tracing::warn!("{}", crate::hooks::NO_TOKEN);
    }
    let folder = inbox::Folder::open(inbox_dir)
        .map_err(|e| format!("cannot open the inbox {}: {e}", inbox_dir.display()))?;
    folder
        .remove_stale_temps()
        .map_err(|e| format!("cannot read the inbox {}: {e}", inbox_dir.display()))?;
    let replayed = process::replay_outbox(store, settings.lang, &[]).map_err(|e| e.to_string())?;
    if replayed > 0 {
        tracing::info!(replayed, "wrote the responses an interrupted run held back");
    }
    let finished = process::finish_interrupted(store, settings, &[]).map_err(|e| e.to_string())?;
    if finished > 0 {
        tracing::info!(finished, "finished the files an interrupted run cut short");
    }
    forget_vanished(store)
}

/// Drops the progress of files cut short by a stop and removed before they resumed.
fn forget_vanished(store: &Store) -> Result<(), String> {
    for path in store.forget_vanished().map_err(|e| e.to_string())? {
        tracing::info!(file = %path.display(), "forgot the progress of a file cut short and since removed");
    }
    Ok(())
}

/// `schema [--strict]`: the request's JSON Schema.
pub fn schema(strict: bool) -> ExitCode {
    let level = if strict {
        crate::schema::Level::Strict
    } else {
        crate::schema::Level::Format
    };
    let mut text = Vec::new();
    let made = serde_json::to_writer_pretty(&mut text, &crate::schema::request_schema(level));
    print(made.map(|()| text).map_err(io::Error::from))
}

/// `completions SHELL`
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut text = Vec::new();
    let mut cli = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cli, "userdrop", &mut text);
    print(Ok(text))
}

/// `man`: userdrop(1).
pub fn man() -> ExitCode {
    let mut text = Vec::new();
    let man = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command());
    print(man.render(&mut text).map(|()| text))
}

/// Prints generated text whole, or says why not; a closed pipe is an error like any
/// other rather than a panic.
fn print(text: io::Result<Vec<u8>>) -> ExitCode {
    let mut out = io::stdout().lock();
    let written = text.and_then(|mut text| {
        if !text.ends_with(b"\n") {
            text.push(b'\n');
        }
        out.write_all(&text)?;
        out.flush()
    });
    match written {
        Ok(()) => ExitCode::from(EXIT_OK),
        // `| head` has what it wanted.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::from(EXIT_OK),
        Err(e) => fail(&e),
    }
}
