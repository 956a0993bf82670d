use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;
use userdrop::cli::{self, Cli, Command};
use userdrop::control::Query;
use userdrop::daemon::Signals;
use userdrop::options::LogFormat;

// sled allocates and frees many small, short-lived buffers per insert; under glibc's
// malloc a 1M-user import spent over a third of its time in the allocator and its
// resident memory kept growing from fragmentation (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // The daemon's signal handlers come before anything else it does, so that a
    // SIGTERM in its first milliseconds is a clean stop (SPEC §6); the other commands
    // give them back once the arguments say which command runs.
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            userdrop::logs::print_error(&format!("cannot install the signal handlers: {e}"));
            return ExitCode::from(cli::EXIT_FAILURE);
        }
    };
    // The store's folder and files are the owner's alone, whatever the caller's umask
    // (SPEC §6); the files meant for others (responses, metrics) set their own modes.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    // Parsed in two steps because the config file needs to know which values clap
    // took from their defaults (see `config`).
    let matches = Cli::command()
        .try_get_matches()
        .unwrap_or_else(|e| usage_error(e));
    if let Some(e) = cli::misplaced(&matches) {
        usage_error(e);
    }
    let mut args = Cli::from_arg_matches(&matches).unwrap_or_else(|e| usage_error(e));
    let signals = match &args.command {
        None | Some(Command::Run(_) | Command::Import(_)) => Some(signals),
        _ => {
            signals.release();
            None
        }
    };
    let (effective, reloader) = match cli::configure(&mut args, &matches) {
        Ok(configured) => configured,
        Err(e) => {
            userdrop::logs::print_error(&e);
            return ExitCode::from(cli::EXIT_USAGE);
        }
    };
    let common = args.common();
    userdrop::logs::init(
        common.log_level.directive(),
        common.log_format == LogFormat::Json,
    );
    match &args.command {
        None => cli::run(&args.run, reloader, signals.unwrap_or_else(Signals::none)),
        Some(Command::Run(run)) => cli::run(run, reloader, signals.unwrap_or_else(Signals::none)),
        Some(Command::Import(a)) => cli::import(a, signals.unwrap_or_else(Signals::none)),
        Some(Command::Check(a)) => cli::check(a),
        Some(Command::Get { email, common }) => cli::read(
            &Query::Get {
                email: email.clone(),
            },
            common,
        ),
        Some(Command::Export { format, common }) => {
            cli::read(&Query::Export { format: *format }, common)
        }
        Some(Command::Stats { json, common }) => cli::read(&Query::Stats { json: *json }, common),
        Some(Command::Delete(a)) => cli::delete(a),
        Some(Command::Backup(a)) => cli::backup(a),
        Some(Command::Restore(a)) => cli::restore(a),
        Some(Command::Schema { strict, types }) => cli::schema(*strict, *types),
        Some(Command::Completions { shell }) => cli::completions(*shell),
        Some(Command::Man) => cli::man(),
        Some(Command::Config { json, .. }) => cli::show_config(&effective, *json),
    }
}

/// Ends the process on a command line clap refuses, as clap would, except that in the
/// journal its message is at error priority: a wrong `ExecStart=` is then what
/// `journalctl -p err` shows. `--help` and `--version` are clap's own business.
fn usage_error(e: clap::Error) -> ! {
    if !e.use_stderr() || !userdrop::logs::journal() {
        e.exit()
    }
    userdrop::logs::print_error_lines(&e.render().to_string());
    std::process::exit(e.exit_code())
}
