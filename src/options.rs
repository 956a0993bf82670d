//! The options userdrop can be given on its command line (and, through `config`, in
//! its config file and environment): which ones each command takes, and their
//! defaults. `cli` parses them; `config` layers the file under them; neither the
//! daemon nor the pipeline sees clap.

use crate::messages::Lang;
use crate::process::{Auth, Settings};
use crate::retention::{self, Age};
use crate::store::{Postgres, Store, StoreError, StoreOptions};
use crate::validate::Types;
use clap::Args;
use std::path::PathBuf;

/// Options every command takes, before or after its name (SPEC §6): clap's global
/// arguments, whose value given on either side reaches the subcommand's matches.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// A TOML config file: a key for every option below (flags and USERDROP_*
    /// variables take precedence over it).
    #[arg(long, global = true, value_name = "FILE", env = "USERDROP_CONFIG")]
    pub config: Option<PathBuf>,
    /// The store's folder (created if missing; keep it outside the inbox).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "data",
        env = "USERDROP_DB"
    )]
    pub db: PathBuf,
    /// The store in PostgreSQL instead of sled in --db (SPEC §8):
    /// postgres://USER@HOST/DB, for several daemons on several hosts. --db then holds
    /// only this host's private copies of big requests.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "USERDROP_STORE",
        hide_env_values = true
    )]
    pub store: Option<String>,
    /// The name this host's requests are known by on a PostgreSQL store: one daemon
    /// per instance [default: the host name].
    #[arg(long, global = true, value_name = "NAME", env = "USERDROP_INSTANCE")]
    pub instance: Option<String>,
    /// sled's page cache, in MiB (at least 1).
    #[arg(
        long,
        global = true,
        value_name = "MIB",
        default_value_t = 64,
        value_parser = clap::value_parser!(u64).range(1..),
        env = "USERDROP_CACHE_MB"
    )]
    pub cache_mb: u64,
    /// Log level for stderr (overridden by RUST_LOG).
    #[arg(
        long,
        global = true,
        value_name = "LEVEL",
        value_enum,
        default_value_t = LogLevel::Info,
        env = "USERDROP_LOG_LEVEL"
    )]
    pub log_level: LogLevel,
    /// Log format for stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "USERDROP_LOG_FORMAT")]
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

/// What decides how a request is judged: who may send one, how large it may be, and
/// the language of the answer. `check` takes these and no more.
#[derive(Args, Debug, Clone)]
pub struct Rules {
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
    /// How field types are read: strict as SPEC §1's table, or lenient to take the
    /// forms PHP and ERP exports write ("3", 0/1, [], 31.12.2025, 00380...).
    #[arg(long, value_enum, default_value_t = Types::Strict, env = "USERDROP_TYPES")]
    pub types: Types,
}

/// Options of the commands that apply request files (`run`, `import`).
#[derive(Args, Debug, Clone)]
pub struct Processing {
    #[command(flatten)]
    pub rules: Rules,
    /// Users written per atomic step (a step also ends after 64 times as many were
    /// judged, for files mostly unchanged); bounds memory and what a crash can cut short.
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..), env = "USERDROP_STEP_USERS")]
    pub step_users: u64,
    /// Write Prometheus metrics (text format, for node_exporter's textfile collector)
    /// to this file after every processed file (run and import).
    #[arg(long, value_name = "PATH", env = "USERDROP_METRICS_FILE")]
    pub metrics_file: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
}

impl Rules {
    /// The settings of a command that judges files and applies nothing.
    pub fn settings(&self) -> Settings {
        Settings {
            max_file_size: self.max_file_size,
            auth: Auth::new(self.tokens.iter().cloned()),
            lang: self.lang,
            types: self.types,
            ..Settings::default()
        }
    }
}

impl Processing {
    pub fn settings(&self) -> Settings {
        Settings {
            step_users: usize::try_from(self.step_users).unwrap_or(usize::MAX),
            ..self.rules.settings()
        }
    }
}

/// `check FILE...`: it judges and applies nothing, so it takes no step size and
/// writes no metrics.
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Request files (users/import JSON).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub rules: Rules,
    #[command(flatten)]
    pub common: Common,
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
    /// Move each request and its response, once both are older than --archive-after,
    /// into DIR/YYYY-MM-DD/ (the day the response was written, UTC), the request
    /// first. DIR is created (0750) if missing; it must be outside the inbox and on
    /// its file system and mount.
    #[arg(long, value_name = "DIR", env = "USERDROP_ARCHIVE")]
    pub archive: Option<PathBuf>,
    /// How old a request and its response must both be before --archive moves them:
    /// a whole number and a unit, s, m, h or d (90s, 15m, 12h, 7d).
    #[arg(long, value_name = "DURATION", value_parser = retention::parse_age, env = "USERDROP_ARCHIVE_AFTER")]
    pub archive_after: Option<Age>,
    /// Delete each request and its response once both are older than this (90s, 15m,
    /// 12h, 7d), the request first; the store's history keeps their record. Not with
    /// --archive.
    #[arg(long, value_name = "DURATION", value_parser = retention::parse_age, env = "USERDROP_DELETE_AFTER")]
    pub delete_after: Option<Age>,
    #[command(flatten)]
    pub processing: Processing,
}

impl RunArgs {
    /// The retention the arguments ask for (`None`: off); `Err` is bad usage.
    pub fn retention(&self) -> Result<Option<retention::Policy>, String> {
        retention::Policy::from_settings(
            self.archive.as_deref(),
            self.archive_after,
            self.delete_after,
        )
    }
}

impl Common {
    /// The store as the read commands and the administrator's open it: on
    /// PostgreSQL, beside the daemons that write to it.
    pub fn open_store(&self) -> Result<Store, StoreError> {
        Store::open(&self.db, &self.store_options(false)?)
    }

    /// The store as `run` and `import` open it: on PostgreSQL, as the one process
    /// of this instance.
    pub fn open_store_to_apply(&self) -> Result<Store, StoreError> {
        Store::open(&self.db, &self.store_options(true)?)
    }

    /// The store as `restore` opens it: a restore that did not finish is started over.
    pub fn open_store_to_restore(&self) -> Result<Store, StoreError> {
        let options = StoreOptions {
            restoring: true,
            ..self.store_options(false)?
        };
        Store::open(&self.db, &options)
    }

    /// Whether the store is PostgreSQL's, shared by hosts: nothing of it is local.
    pub fn is_shared_store(&self) -> bool {
        self.store.is_some()
    }

    /// The store as messages name it: the folder, or the address without password.
    pub fn store_name(&self) -> String {
        match &self.store {
            Some(url) => crate::store::pg::redacted(url),
            None => self.db.display().to_string(),
        }
    }

    /// This host's instance name on a shared store.
    pub fn instance_name(&self) -> String {
        self.instance
            .clone()
            .unwrap_or_else(crate::store::pg::host_name)
    }

    fn store_options(&self, writer: bool) -> Result<StoreOptions, StoreError> {
        let postgres = match &self.store {
            None => None,
            Some(url) => Some(Postgres {
                url: store_url(url)?,
                instance: self.instance_name(),
                writer,
            }),
        };
        Ok(StoreOptions {
            postgres,
            cache_bytes: self.cache_mb.saturating_mul(1024 * 1024),
            ..StoreOptions::default()
        })
    }
}

/// `--store` takes PostgreSQL's connection URL; anything else is a mistake worth
/// naming (the sled store is `--db DIR`).
fn store_url(url: &str) -> Result<String, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(url.to_owned())
    } else {
        Err(StoreError::Pg(crate::store::pg::PgError::BadUrl {
            url: crate::store::pg::redacted(url),
            reason: "it must start with postgres:// (the sled store is chosen with --db DIR)"
                .into(),
        }))
    }
}

/// `delete EMAIL...`.
#[derive(Args, Debug, Clone)]
pub struct DeleteArgs {
    /// The emails of the users to erase, in any case (trimmed and lower-cased like on
    /// import).
    #[arg(required = true, value_name = "EMAIL")]
    pub emails: Vec<String>,
    /// The inbox, searched for request and response files that still mention them.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "watch",
        env = "USERDROP_WATCH"
    )]
    pub watch: PathBuf,
    /// The retention archive, searched too (its day folders).
    #[arg(long, value_name = "DIR", env = "USERDROP_ARCHIVE")]
    pub archive: Option<PathBuf>,
    /// Also remove each request that holds only these users, and its response (the
    /// request first); files that mention anyone else are only named.
    #[arg(long)]
    pub purge_files: bool,
    #[command(flatten)]
    pub common: Common,
}

/// `backup FILE` and `restore FILE`.
#[derive(Args, Debug, Clone)]
pub struct SnapshotArgs {
    /// The backup file (`-`: standard output or input). A name ending in `.gz` or
    /// `.zst` is compressed; restore recognises either by its content.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub common: Common,
}
