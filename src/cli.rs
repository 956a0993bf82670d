//! The command line (SPEC §6): argument definitions and one function per command.
//! Each function returns the process exit code.

use crate::config::{self, ConfigError, Effective, Reloader};
use crate::control::{self, Query};
use crate::daemon::{self, DaemonOptions};
use crate::export::Format;
use crate::hooks::{Hooks, Reload, Reloaded};
use crate::inbox;
use crate::messages::{Lang, Message};
use crate::metrics::Metrics;
use crate::model::Status;
use crate::options::{
    CheckArgs, Common, DeleteArgs, ImportArgs, Processing, RunArgs, SnapshotArgs,
};
use crate::process::{self, Settings};
use crate::response;
use crate::retention::{self, Retention};
use crate::store::{Store, StoreError};
use clap::{Parser, Subcommand};
use std::io::{self, BufWriter, IsTerminal, Read, Write};
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
    Check(CheckArgs),
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
    /// Erase these users from the store (the right to erasure); exit 1 if none was
    /// stored. Names the files in the inbox that still mention them.
    Delete(DeleteArgs),
    /// Write a consistent, full snapshot of the store (users with their meta, the
    /// file history, the counters) to FILE; works while the daemon runs.
    Backup(SnapshotArgs),
    /// Load a backup into an empty store.
    Restore(SnapshotArgs),
    /// Print a JSON Schema (draft 2020-12) of the request file, for editors and CI.
    ///
    /// By default only the request format: the known keys and each field's JSON type.
    Schema {
        /// Also every per-user value rule (mandatory title and email, patterns, ranges,
        /// lengths): a file that passes has no user rejected for them.
        #[arg(long)]
        strict: bool,
        /// The schema of the daemon's --types: lenient also takes the forms PHP and
        /// ERP exports write.
        #[arg(
            long,
            value_enum,
            default_value_t = crate::validate::Types::Strict,
            env = "USERDROP_TYPES"
        )]
        types: crate::validate::Types,
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

/// What to say when `db` holds no store (sled's log file `db`, which every store has):
/// the read commands never create one (SPEC §6), so a wrong folder is an operational
/// failure naming the path, not an empty store that answers "no user".
fn no_store(common: &Common) -> Option<String> {
    // A PostgreSQL store says so itself when it has no schema yet.
    if common.is_shared_store() {
        return None;
    }
    let db = common.db.as_path();
    match std::fs::metadata(db.join("db")) {
        Ok(meta) if meta.is_file() => None,
        // A store that is there but not this user's: not "no store".
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Some(format!(
            "cannot open the store {}: {e}{}",
            db.display(),
            crate::version::owner_hint(&e)
        )),
        _ => Some(format!(
            "there is no store at {}; give --db DIR (the daemon's store), or run this from the folder that holds its data/",
            db.display()
        )),
    }
}

/// The daemon's options also sit at the top level, for `userdrop --watch DIR` without
/// a command. Given before another command they would be silently ignored (only
/// [`Common`]'s are global), so they are refused, naming the command that takes them.
pub fn misplaced(matches: &clap::ArgMatches) -> Option<clap::Error> {
    let (name, _) = matches.subcommand()?;
    let mut cli = <Cli as clap::CommandFactory>::command();
    let flag = cli
        .get_arguments()
        .filter(|a| !a.is_global_set())
        .find(|a| {
            matches.value_source(a.get_id().as_str())
                == Some(clap::parser::ValueSource::CommandLine)
        })
        .and_then(|a| a.get_long().map(str::to_owned))?;
    Some(cli.error(
        clap::error::ErrorKind::ArgumentConflict,
        format!(
            "--{flag} is an option of the daemon (`userdrop run --{flag} ...`), not of `{name}`; only --db, --config, --cache-mb, --log-level and --log-format may come before a command's name"
        ),
    ))
}

impl Cli {
    pub fn common(&self) -> &Common {
        match &self.command {
            None => &self.run.processing.common,
            Some(Command::Run(a) | Command::Config { run: a, .. }) => &a.processing.common,
            Some(Command::Import(a)) => &a.processing.common,
            Some(Command::Check(a)) => &a.common,
            Some(Command::Delete(a)) => &a.common,
            Some(Command::Backup(a) | Command::Restore(a)) => &a.common,
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
        Some(Command::Import(a)) => Ok((config::resolve_processing(&mut a.processing, own)?, None)),
        Some(Command::Check(a)) => Ok((config::resolve_check(a, own)?, None)),
        Some(Command::Delete(a)) => Ok((config::resolve_delete(a, own)?, None)),
        Some(Command::Backup(a) | Command::Restore(a)) => {
            Ok((config::resolve_common(&mut a.common, own)?, None))
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

/// Prints a usage error found after parsing (a combination of settings) like clap's.
fn usage(error: &dyn std::fmt::Display) -> ExitCode {
    crate::logs::print_error(error);
    ExitCode::from(EXIT_USAGE)
}

/// Opens what the retention settings ask for, or says why not (exit 2 or 1).
fn open_retention(args: &RunArgs) -> Result<Option<Arc<Retention>>, ExitCode> {
    let Some(policy) = args.retention().map_err(|e| usage(&e))? else {
        return Ok(None);
    };
    match Retention::open(&policy, &args.watch) {
        Ok(opened) => Ok(Some(Arc::new(opened))),
        Err(retention::OpenError::Usage(e)) => Err(usage(&e)),
        Err(retention::OpenError::Failure(e)) => Err(fail(&e)),
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
    let store = match args.processing.common.open_store_to_apply() {
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
            // `check | head` has what it wanted (SPEC §6: a closed output ends quietly).
            Err(process::Error::Write { path, source })
                if path.as_os_str() == "(stdout)" && source.kind() == io::ErrorKind::BrokenPipe =>
            {
                return ExitCode::from(EXIT_OK);
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
pub fn check(args: &CheckArgs) -> ExitCode {
    let settings = args.rules.settings();
    let common = &args.common;
    // No store yet: judged against an empty one, and none is created.
    let opened = match no_store(common) {
        Some(_) => Store::scratch().map(Some).map_err(|e| e.to_string()),
        None => match common.open_store() {
            Ok(store) => Ok(Some(store)),
            // A daemon holds the store: it judges what it is sent (SPEC §6).
            Err(StoreError::Locked(_)) => Ok(None),
            Err(StoreError::Pg(crate::store::pg::PgError::NoStore(_))) => {
                Store::scratch().map(Some).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        },
    };
    let store = match opened {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    for_each_file(&args.files, |file| {
        let Some(store) = &store else {
            return check_by_daemon(&common.db, &args.rules, file, &mut out);
        };
        let checked = process::check_file(store, file, &settings)?;
        let r = &checked.record;
        let (status, message) = (r.status, r.message.as_ref());
        print_checked(&mut out, file, status, message, checked.log, settings.lang)
    })
}

/// Prints a would-be response on stdout and the file's status on stderr.
fn print_checked(
    out: &mut impl Write,
    file: &Path,
    status: Status,
    message: Option<&Message>,
    log: Vec<Vec<Message>>,
    lang: Lang,
) -> Result<Status, process::Error> {
    let log = std::iter::once(Ok(log));
    response::write_json(out, status, message, log, lang)
        .and_then(|()| out.flush())
        .map_err(stdout_error)?;
    eprintln!("{}: {status}", file.display());
    Ok(status)
}

fn stdout_error(source: io::Error) -> process::Error {
    process::Error::Write {
        path: PathBuf::from("(stdout)"),
        source,
    }
}

/// `check` of one file by the daemon that holds the store: the file is opened here,
/// as a local check opens it, and its bytes are sent over the store's socket to be
/// judged under this command's settings. A file over the size limit is judged here,
/// as the daemon would, without sending it.
fn check_by_daemon(
    db: &Path,
    p: &crate::options::Rules,
    file: &Path,
    out: &mut impl Write,
) -> Result<Status, process::Error> {
    let (opened, size) = process::open_to_check(file)?;
    if size > p.max_file_size {
        let limit = p.max_file_size;
        let too_large = Message::TooLarge { size, limit };
        return print_checked(
            out,
            file,
            Status::Error,
            Some(&too_large),
            Vec::new(),
            p.lang,
        );
    }
    let sent = control::CheckFile {
        name: file.display().to_string(),
        size,
        tokens: p.tokens.clone(),
        max_file_size: p.max_file_size,
        lang: p.lang,
    };
    let no_answer = |e: io::Error| {
        process::Error::Daemon(format!(
            "cannot check {}: the store {} is held by another process, and checking through its control socket failed ({e}); is a userdrop daemon running on it?",
            file.display(),
            db.display()
        ))
    };
    let (reply, mut answer) = control::ask_check(db, sent, &opened).map_err(no_answer)?;
    let note = reply
        .note
        .unwrap_or_else(|| format!("the daemon answered with exit code {}", reply.exit));
    let status = match reply.exit {
        EXIT_OK => Status::Ok,
        // The response and the note say which; the exit code only needs "not OK".
        EXIT_REJECTED => Status::Warning,
        _ => return Err(process::Error::Daemon(note)),
    };
    // Read whole before any of it is printed: the daemon's writes then never wait on
    // a slow reader of stdout (`| less`), which would cut the answer short.
    let mut body = Vec::new();
    answer.read_to_end(&mut body).map_err(no_answer)?;
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        let cut = io::Error::other("its answer was cut short");
        return Err(no_answer(cut));
    }
    out.write_all(&body)
        .and_then(|()| out.flush())
        .map_err(stdout_error)?;
    eprintln!("{note}");
    Ok(status)
}

/// `get`, `export` and `stats`: from the store, or from the daemon that holds it.
pub fn read(query: &Query, common: &Common) -> ExitCode {
    let stdout = Stdout::default();
    let mut out = BufWriter::new(stdout.clone());
    let reply = ask_store(query, common, &mut out);
    let flushed = out.flush();
    if stdout.closed() {
        // `| head` has what it wanted (SPEC §6: a closed output ends quietly).
        return ExitCode::from(EXIT_OK);
    }
    if let Err(e) = flushed {
        return fail(&e);
    }
    ExitCode::from(said(reply))
}

/// Answers `query` from the store, or, when a daemon holds it, through the daemon.
/// A missing store is an error: the read commands never create one.
fn ask_store(
    query: &Query,
    common: &Common,
    out: &mut dyn Write,
) -> Result<control::Reply, String> {
    if let Some(missing) = no_store(common) {
        return Err(missing);
    }
    match common.open_store() {
        Ok(store) => control::answer(&store, query, out),
        Err(StoreError::Locked(dir)) => control::ask(&common.db, query, out).map_err(|e| {
            format!(
                "the store {} is held by another process and its control socket did not answer ({e}); is a userdrop daemon running on it?",
                dir.display()
            )
        }),
        Err(e) => Err(e.to_string()),
    }
}

/// Prints a reply's note, or the error; the exit code.
fn said(reply: Result<control::Reply, String>) -> u8 {
    match reply {
        Ok(reply) => {
            if let Some(note) = reply.note {
                eprintln!("userdrop: {note}");
            }
            reply.exit
        }
        Err(e) => {
            eprintln!("userdrop: error: {e}");
            EXIT_FAILURE
        }
    }
}

/// `delete EMAIL...`: erases the users, through the daemon if it holds the store,
/// then names (or with `--purge-files` removes) the files that still mention them.
pub fn delete(args: &DeleteArgs) -> ExitCode {
    let query = Query::Delete {
        emails: args.emails.clone(),
    };
    let mut out = io::stdout().lock();
    let code = said(ask_store(&query, &args.common, &mut out));
    if code == EXIT_FAILURE && no_store(&args.common).is_some() {
        return ExitCode::from(code);
    }
    let emails: Vec<crate::model::Email> = args
        .emails
        .iter()
        .filter_map(|e| crate::model::Email::parse(e))
        .collect();
    let mentions = match crate::erase::find(
        &args.watch,
        args.archive.as_deref(),
        &emails,
        args.purge_files,
    ) {
        Ok(m) => m,
        Err(e) => {
            return fail(&format!(
                "cannot search the inbox {} for files that mention them: {e}",
                args.watch.display()
            ));
        }
    };
    for path in &mentions.removed {
        let _ = writeln!(out, "removed {}", path.display());
    }
    if !mentions.removed.is_empty() {
        erase_again(&args.common, &emails);
    }
    for path in &mentions.remaining {
        let _ = writeln!(out, "still mentioned in {}", path.display());
    }
    if !mentions.remaining.is_empty() {
        eprintln!(
            "userdrop: {} file(s) still hold these addresses; remove each request before its response (a response removed alone makes the daemon apply its request again){}",
            mentions.remaining.len(),
            if args.purge_files {
                ""
            } else {
                ", or run again with --purge-files to remove the pairs that hold no one else"
            }
        );
    }
    ExitCode::from(code)
}

/// After `--purge-files`: a daemon that was applying one of the removed requests may
/// have stored a person again after the first erasure (its step read the store
/// before). The request is gone now, so nothing can bring them back once more;
/// erase again, and say so if it found anyone.
fn erase_again(common: &Common, emails: &[crate::model::Email]) {
    let query = Query::Delete {
        emails: emails.iter().map(ToString::to_string).collect(),
    };
    let mut printed = Vec::new();
    if ask_store(&query, common, &mut printed).is_err() {
        return;
    }
    for line in String::from_utf8_lossy(&printed).lines() {
        if let Some(email) = line.strip_prefix("erased ") {
            eprintln!(
                "userdrop: {email} was stored again by a file being applied while it was erased; erased again"
            );
        }
    }
}

/// `backup FILE|-`: from the store, or through the daemon that holds it; a file is
/// written under a temporary name and put in place only when whole and synced.
pub fn backup(args: &SnapshotArgs) -> ExitCode {
    let to_stdout = args.file.as_os_str() == "-";
    let how = match to_stdout {
        true => crate::backup::Compression::None,
        false => crate::backup::Compression::for_name(&args.file),
    };
    let mut target = match to_stdout {
        true => None,
        false => match crate::backup::Target::create(&args.file) {
            Ok(t) => Some(t),
            Err(e) => {
                return fail(&format!(
                    "cannot write the backup {}: {e}",
                    args.file.display()
                ));
            }
        },
    };
    let stdout = Stdout::default();
    let sink: Box<dyn Write + '_> = match &mut target {
        Some(t) => Box::new(t.file()),
        None => Box::new(stdout.clone()),
    };
    let written = take_backup(args, sink, how);
    if stdout.closed() {
        return ExitCode::from(EXIT_OK);
    }
    let committed = match (written, target) {
        (Ok(summary), Some(t)) => t.commit().map(|()| summary).map_err(|e| {
            format!(
                "cannot put the backup in place at {} ({e}); the file there, if any, is as it was",
                args.file.display()
            )
        }),
        (Ok(summary), None) => Ok(summary),
        (Err(e), Some(t)) => {
            t.abandon();
            Err(e)
        }
        (Err(e), None) => Err(e),
    };
    match committed {
        Ok(summary) => {
            eprintln!(
                "userdrop: backed up {} users and {} files to {}",
                summary.users,
                summary.files,
                if to_stdout {
                    "standard output".into()
                } else {
                    args.file.display().to_string()
                }
            );
            ExitCode::from(EXIT_OK)
        }
        Err(e) => fail(&e),
    }
}

/// Writes the backup, compressed as asked, and checks that it ended whole: what the
/// daemon sent must end with the `end` line, whose counts are the summary.
fn take_backup(
    args: &SnapshotArgs,
    sink: Box<dyn Write + '_>,
    how: crate::backup::Compression,
) -> Result<crate::backup::Summary, String> {
    let compressed =
        crate::backup::Compressed::new(BufWriter::new(sink), how).map_err(|e| e.to_string())?;
    let mut out = crate::backup::Tail::new(compressed);
    let reply = ask_store(&Query::Backup, &args.common, &mut out)?;
    if reply.exit != EXIT_OK {
        return Err(reply.note.unwrap_or_else(|| "the backup failed".into()));
    }
    let summary = out
        .summary()
        .ok_or("the backup was cut short: it has no end line")?;
    out.into_inner()
        .finish()
        .and_then(|mut w| w.flush())
        .map_err(|e| e.to_string())?;
    Ok(summary)
}

/// `restore FILE|-`: a backup into an empty store (or one a restore left unfinished).
pub fn restore(args: &SnapshotArgs) -> ExitCode {
    let input: Box<dyn io::Read> = if args.file.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        match std::fs::File::open(&args.file) {
            Ok(f) => Box::new(f),
            Err(e) => {
                return fail(&format!(
                    "cannot read the backup {}: {e}",
                    args.file.display()
                ));
            }
        }
    };
    let store = match args.common.open_store_to_restore() {
        Ok(s) => s,
        Err(StoreError::Locked(dir)) => {
            return fail(&format!(
                "the store {} is held by a running userdrop; a restore needs the store to itself: stop the daemon, restore, then start it again",
                dir.display()
            ));
        }
        Err(e) => return fail(&e),
    };
    match crate::backup::restore(&store, &args.common.db, input) {
        Ok(summary) => {
            eprintln!(
                "userdrop: restored {} users and {} files into {}",
                summary.users,
                summary.files,
                args.common.store_name()
            );
            ExitCode::from(EXIT_OK)
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
    if let Err(e) = args.retention() {
        return usage(&e);
    }
    if !args.watch.is_dir() {
        return fail(&format!(
            "the inbox {} is not a folder; create it or give --watch DIR",
            args.watch.display()
        ));
    }
    let retention = match open_retention(args) {
        Ok(retention) => retention,
        Err(code) => return code,
    };
    let store = match args.processing.common.open_store_to_apply() {
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
        store = args.processing.common.store_name(),
        mode = crate::watch::mode(args.poll.map(Duration::from_millis)),
        settle_ms = args.settle,
        authorization = settings.auth.is_on(),
        retention = retention
            .as_ref()
            .map_or("off".to_owned(), |r| r.to_string()),
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
    // A PostgreSQL store is read from any host directly: no local socket to serve.
    if !store.is_shared()
        && let Err(e) = control::serve(store.clone(), &args.processing.common.db)
    {
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
        retention,
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

/// `schema [--strict] [--types T]`: the request's JSON Schema.
pub fn schema(strict: bool, types: crate::validate::Types) -> ExitCode {
    let level = if strict {
        crate::schema::Level::Strict
    } else {
        crate::schema::Level::Format
    };
    let mut text = Vec::new();
    let made =
        serde_json::to_writer_pretty(&mut text, &crate::schema::request_schema(level, types));
    print(made.map(|()| text).map_err(io::Error::from))
}

/// `completions SHELL`
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut text = Vec::new();
    let mut cli = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cli, "userdrop", &mut text);
    print(Ok(text))
}

/// `man`: userdrop(1), one page for every command. clap_mangen's own page lists the
/// commands as `userdrop-run(1)` and so on, pages that do not exist; here each
/// command gets a subsection with its usage, its description and its own options
/// (the global ones are listed once, at the top).
pub fn man() -> ExitCode {
    print(render_man())
}

fn render_man() -> io::Result<Vec<u8>> {
    let mut cli = <Cli as clap::CommandFactory>::command();
    cli.build();
    let mut text = Vec::new();
    let page = clap_mangen::Man::new(cli.clone());
    page.render_title(&mut text)?;
    page.render_name_section(&mut text)?;
    page.render_synopsis_section(&mut text)?;
    page.render_description_section(&mut text)?;
    page.render_options_section(&mut text)?;
    roff::Roff::new()
        .control("SH", ["COMMANDS"])
        .text([roff::roman(
            "Every command takes --db, --config, --cache-mb, --log-level and --log-format (above), before or after its name. The options above the daemon's own (--watch and the rest) belong to run, the default command. `userdrop COMMAND --help` shows each command's options too.",
        )])
        .to_writer(&mut text)?;
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        render_command(sub, &mut text)?;
    }
    // The after-help text is the exit codes: the section man pages give them under.
    let mut extra = Vec::new();
    page.render_extra_section(&mut extra)?;
    let extra = String::from_utf8_lossy(&extra).replacen(".SH EXTRA", ".SH \"EXIT STATUS\"", 1);
    text.extend_from_slice(extra.as_bytes());
    page.render_version_section(&mut text)?;
    Ok(text)
}

/// One command's subsection: usage, description, and its options but the global ones.
fn render_command(sub: &clap::Command, text: &mut Vec<u8>) -> io::Result<()> {
    let own: Vec<clap::Arg> = sub
        .get_arguments()
        .filter(|a| !a.is_global_set() && a.get_id() != "help")
        .cloned()
        .collect();
    let usage = clap::Command::new("userdrop")
        .bin_name(format!("userdrop {}", sub.get_name()))
        .disable_help_flag(true)
        .args(own.clone())
        .render_usage()
        .to_string();
    let about = sub
        .get_long_about()
        .or_else(|| sub.get_about())
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut roff = roff::Roff::new();
    roff.control("SS", [sub.get_name()]);
    roff.text([roff::bold(usage.trim_start_matches("Usage: "))]);
    for paragraph in about.split("\n\n") {
        roff.control("PP", []).text([roff::roman(paragraph)]);
    }
    roff.to_writer(text)?;
    if own.iter().any(|a| !a.is_positional()) {
        let options = clap::Command::new("userdrop")
            .disable_help_flag(true)
            .args(own);
        let mut rendered = Vec::new();
        clap_mangen::Man::new(options).render_options_section(&mut rendered)?;
        // Its heading would start a section of its own; under a command it is a paragraph.
        let rendered =
            String::from_utf8_lossy(&rendered).replacen(".SH OPTIONS", ".PP\nOptions:", 1);
        text.extend_from_slice(rendered.as_bytes());
    }
    Ok(())
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
