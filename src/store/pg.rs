//! The PostgreSQL engine (SPEC §8, issue 14): the operations [`super::Store`] offers,
//! with the same types, on a database that several daemons on several hosts share. It
//! exists because a shop that outgrows one host needs one customer base fed by many
//! daemons, and should get the database engine it would choose anyway rather than a
//! home-made replication layer. Chosen with `--store postgres://…`; only `store`
//! knows it is here.
//!
//! Everything lives in the schema `userdrop`, created and migrated by userdrop itself:
//!
//! | table       | key                      | holds                                         |
//! |-------------|--------------------------|-----------------------------------------------|
//! | `format`    | one row                  | the schema's version; `restoring` mark        |
//! | `users`     | email (`COLLATE "C"`)    | data and meta as `json`, hash of the data     |
//! | `progress`  | (instance, path `bytea`) | [`Progress`] of a file being applied          |
//! | `outbox`    | (instance, path)         | [`FileRecord`] whose response is due          |
//! | `files`     | (instance, path)         | history: the [`FileRecord`] of the last run   |
//! | `logs`      | (instance, path, seq)    | the log entries of one committed step         |
//! | `totals`    | one row                  | [`Totals`] of the whole store                 |
//! | `instances` | instance                 | who holds the instance (for the refusal text) |
//!
//! Users are shared by every instance; a request is known by (instance, path), since
//! two hosts may well both have `/srv/inbox/nightly.json`. Records are `json`, not
//! `jsonb`: `jsonb` stores numbers as `numeric`, which turns a balance written `1e5`
//! into `100000`, and SPEC §1 keeps it exactly as written; `json` keeps the text and
//! still lets an operator query `data->>'city'`.
//!
//! **A step is one transaction.** [`PgStore::commit_with`] takes the emails of the step,
//! locks their rows (`SELECT … ORDER BY email FOR UPDATE`: one order for everyone, so
//! two steps never wait for each other in a circle), hands the locked records to a
//! closure that merges and builds the [`Step`], then writes the users, the step's log
//! chunk, the progress, and on the last step the outbox entry, the history record and
//! the totals, and commits. The merge thus reads what every other daemon committed
//! before it, and nobody can commit over it until it is done: no lost update. An email
//! absent at the lock has no row to lock; its insert is `ON CONFLICT DO NOTHING`, and
//! if another daemon inserted it meanwhile the transaction is rolled back and the
//! closure runs again on the new state (so it must be repeatable: build the step from
//! its inputs, do not consume them). Deadlock and serialization failures retry the
//! same way. Totals are locked last, after every user, for the same ordering reason.
//!
//! **Bulk.** A step is a fixed number of round trips whatever its size: the lock is one
//! `= ANY($1)` query, the writes are one `UPDATE … FROM unnest(…)` and one
//! `INSERT … SELECT FROM unnest(…)`, and statements are prepared once per connection.
//!
//! **Durable.** Commits are asynchronous (`synchronous_commit = off` for userdrop's
//! sessions): a step is visible to every daemon when its commit returns, and durable
//! once [`PgStore::flush`] returns, which commits one marker transaction with
//! `synchronous_commit = on` and so waits for the WAL flush (and the synchronous
//! standbys, where configured) that covers every commit before it. That is sled's
//! contract too (commit, then flush), and the pipeline writes no response before the
//! flush; a daemon answering a group of small files pays one WAL flush for all of
//! them, not one per file. A server crash before the flush loses those commits whole,
//! as a crash of the daemon would lose the steps in hand. A server with `fsync = off`
//! cannot keep the promise; connecting to one logs a warning.
//!
//! **One daemon per instance.** A writer takes a session-level advisory lock on the
//! instance name (`pg_try_advisory_lock`), which PostgreSQL releases when the session
//! ends, however it ends. A second daemon with the same instance is refused at once,
//! naming both processes, unless the holder is a process of this host that is gone
//! (its session outlives it inside a statement): that session is ended and the lock
//! waited for, up to [`STALE_HOLDER_WAIT`]. (Session locks
//! need a direct connection or session pooling, not a transaction-pooling proxy.)
//!
//! **A lost connection** is a crash of the file in hand: the operation returns
//! [`PgError::Lost`], the server has rolled the open transaction back, and the next
//! operation connects again (taking the instance lock again). A `COMMIT` whose answer
//! was lost may or may not have happened; the caller resumes from the stored progress
//! either way, which is what makes that safe.

use super::{FileRecord, Item, Progress, Step, Totals};
use crate::messages::Message;
use crate::model::{Email, Meta, StoredUser, UserData};
use postgres::error::SqlState;
use postgres::{Client, Config, IsolationLevel, NoTls, Statement};
use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The schema version this binary creates, reads and writes (SPEC §6). Its own
/// number, apart from the sled format's: the two layouts change for different reasons.
pub const SCHEMA_VERSION: i32 = 1;

/// How often a step is tried when other daemons keep changing its users under it.
const ATTEMPTS: u32 = 20;

/// Rows fetched per round trip by the readers that walk a whole table.
const PAGE: i64 = 1000;

/// The advisory lock that serialises schema creation and migration: two daemons
/// starting at once on a new database must not both create the tables.
const SCHEMA_LOCK: i64 = 0x7573_6572_6472_6f70; // "userdrop"

const SCHEMA: &str = r#"
CREATE SCHEMA IF NOT EXISTS userdrop;
CREATE TABLE userdrop.format (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version integer NOT NULL,
    restoring boolean NOT NULL DEFAULT false
);
CREATE TABLE userdrop.users (
    email text COLLATE "C" PRIMARY KEY,
    data json NOT NULL,
    meta json NOT NULL,
    data_hash bytea NOT NULL
);
CREATE TABLE userdrop.progress (
    instance text NOT NULL,
    path bytea NOT NULL,
    record json NOT NULL,
    PRIMARY KEY (instance, path)
);
CREATE TABLE userdrop.outbox (
    instance text NOT NULL,
    path bytea NOT NULL,
    record json NOT NULL,
    PRIMARY KEY (instance, path)
);
CREATE TABLE userdrop.files (
    instance text NOT NULL,
    path bytea NOT NULL,
    record json NOT NULL,
    PRIMARY KEY (instance, path)
);
CREATE TABLE userdrop.logs (
    instance text NOT NULL,
    path bytea NOT NULL,
    seq bigint NOT NULL,
    entries json NOT NULL,
    PRIMARY KEY (instance, path, seq)
);
CREATE TABLE userdrop.totals (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    record json NOT NULL
);
CREATE TABLE userdrop.instances (
    instance text PRIMARY KEY,
    holder text NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
);
"#;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("--store {url:?} is not a PostgreSQL connection string: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "--instance {0:?} is not an instance name: give 1 to 64 letters, digits, '.', '-' or '_' (the host name is the default)"
    )]
    BadInstance(String),
    #[error("cannot connect to the store {store}: {reason}")]
    Connect { store: String, reason: String },
    #[error(
        "the connection to the store {store} was lost: {reason}; the file in hand is cut short and resumes from its progress once the store is back"
    )]
    Lost { store: String, reason: String },
    #[error("the store {store} failed: {reason}")]
    Db { store: String, reason: String },
    #[error(
        "the instance {instance:?} is already running on the store {store} ({holder}); this process ({this}) stops: stop the other one, or give this one another --instance"
    )]
    InstanceBusy {
        store: String,
        instance: String,
        holder: String,
        this: String,
    },
    #[error(
        "there is no userdrop store in {0}: start the daemon or `userdrop import` on it first to create one"
    )]
    NoStore(String),
    #[error(
        "the store {store} is in format version {found}, which this userdrop ({binary}) does not know: it reads version {SCHEMA_VERSION}. Run the userdrop that wrote it, or move the store: `userdrop backup FILE` with that binary, then `userdrop restore FILE` with this one into an empty store"
    )]
    Version {
        store: String,
        found: i32,
        binary: &'static str,
    },
    #[error(
        "the database of the store {store} has the encoding {encoding}; userdrop needs UTF8 (create the database WITH ENCODING 'UTF8')"
    )]
    Encoding { store: String, encoding: String },
    #[error(
        "a record in the store cannot be read ({key}): {reason}; the store is damaged or was written by another version of userdrop"
    )]
    Corrupt { key: String, reason: String },
    #[error(
        "the store {0} holds a restore that did not finish; run the same `userdrop restore` again (it starts over)"
    )]
    RestoreUnfinished(String),
    #[error(
        "the store {0} is not empty: a backup is restored into an empty store only; give restore another store"
    )]
    NotEmpty(String),
    #[error("a step writes the user {0}, whose row it did not lock: a bug in userdrop")]
    Unlocked(String),
    #[error(
        "a step on the store {store} could not be committed in {ATTEMPTS} attempts: other daemons kept changing its users"
    )]
    Contended { store: String },
}

pub type Result<T> = std::result::Result<T, PgError>;

/// How the store is opened.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// The name this daemon's requests are known by (SPEC §8 `--instance`).
    pub instance: String,
    /// Create the schema when the database has none: writers do, read commands never
    /// create a store (SPEC §6).
    pub create: bool,
    /// Take the instance's lock: the daemon and `import` do; read commands, `delete`,
    /// `backup` and `restore` work beside a running daemon.
    pub lock_instance: bool,
    /// Open a store that holds an unfinished restore: only `restore` does, to start
    /// it over.
    pub restoring: bool,
}

impl PgOptions {
    /// A writer of `instance`: creates the schema and takes the instance lock.
    pub fn writer(instance: &str) -> PgOptions {
        PgOptions {
            instance: instance.to_owned(),
            create: true,
            lock_instance: true,
            restoring: false,
        }
    }

    /// A reader: no schema created, no lock taken.
    pub fn reader(instance: &str) -> PgOptions {
        PgOptions {
            instance: instance.to_owned(),
            create: false,
            lock_instance: false,
            restoring: false,
        }
    }
}

/// One open connection and the statements prepared on it.
struct Conn {
    client: Client,
    st: Statements,
    /// The other statements, prepared on first use: a small file runs a few of
    /// them (its progress, its outbox entry, its log), and each unprepared one would
    /// cost a round trip more.
    cached: HashMap<String, Statement>,
}

impl Conn {
    fn cached(&mut self, sql: &str) -> std::result::Result<Statement, postgres::Error> {
        if let Some(statement) = self.cached.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.cached.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

/// The statements of the hot path, prepared once per connection: an unprepared
/// query costs a second round trip.
struct Statements {
    lock_users: Statement,
    update_users: Statement,
    insert_users: Statement,
    upsert_users: Statement,
    delete_logs: Statement,
    put_log: Statement,
    put_progress: Statement,
    delete_progress: Statement,
    /// A file's last step: its progress removed, its outbox entry and history record
    /// written, in one statement (one round trip, not three).
    finish: Statement,
    lock_totals: Statement,
    put_totals: Statement,
}

impl Statements {
    fn prepare(client: &mut Client) -> std::result::Result<Statements, postgres::Error> {
        let record = |table: &str| {
            format!(
                "INSERT INTO userdrop.{table} (instance, path, record) VALUES ($1, $2, $3::text::json) \
                 ON CONFLICT (instance, path) DO UPDATE SET record = EXCLUDED.record"
            )
        };
        Ok(Statements {
            lock_users: client.prepare(
                "SELECT email, data::text, meta::text, data_hash FROM userdrop.users \
                 WHERE email = ANY($1::text[]) ORDER BY email FOR UPDATE",
            )?,
            update_users: client.prepare(
                "UPDATE userdrop.users u SET data = v.data::json, meta = v.meta::json, data_hash = v.hash \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) AS v(email, data, meta, hash) \
                 WHERE u.email = v.email",
            )?,
            insert_users: client.prepare(
                "INSERT INTO userdrop.users (email, data, meta, data_hash) \
                 SELECT email, data::json, meta::json, hash \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) AS v(email, data, meta, hash) \
                 ORDER BY email ON CONFLICT (email) DO NOTHING RETURNING email",
            )?,
            upsert_users: client.prepare(
                "INSERT INTO userdrop.users (email, data, meta, data_hash) \
                 SELECT email, data::json, meta::json, hash \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) AS v(email, data, meta, hash) \
                 ORDER BY email ON CONFLICT (email) DO UPDATE \
                 SET data = EXCLUDED.data, meta = EXCLUDED.meta, data_hash = EXCLUDED.data_hash",
            )?,
            delete_logs: client
                .prepare("DELETE FROM userdrop.logs WHERE instance = $1 AND path = $2")?,
            put_log: client.prepare(
                "INSERT INTO userdrop.logs (instance, path, seq, entries) VALUES ($1, $2, $3, $4::text::json) \
                 ON CONFLICT (instance, path, seq) DO UPDATE SET entries = EXCLUDED.entries",
            )?,
            put_progress: client.prepare(&record("progress"))?,
            delete_progress: client
                .prepare("DELETE FROM userdrop.progress WHERE instance = $1 AND path = $2")?,
            finish: client.prepare(
                "WITH gone AS (DELETE FROM userdrop.progress WHERE instance = $1 AND path = $2), \
                 due AS (INSERT INTO userdrop.outbox (instance, path, record) \
                 VALUES ($1, $2, $3::text::json) \
                 ON CONFLICT (instance, path) DO UPDATE SET record = EXCLUDED.record) \
                 INSERT INTO userdrop.files (instance, path, record) VALUES ($1, $2, $3::text::json) \
                 ON CONFLICT (instance, path) DO UPDATE SET record = EXCLUDED.record",
            )?,
            lock_totals: client
                .prepare("SELECT record::text FROM userdrop.totals FOR UPDATE")?,
            put_totals: client.prepare(
                "INSERT INTO userdrop.totals (only_row, record) VALUES (true, $1::text::json) \
                 ON CONFLICT (only_row) DO UPDATE SET record = EXCLUDED.record",
            )?,
        })
    }
}

/// A stored user as the lock read it, decoded only when needed (like sled's
/// `RawUser`): an unchanged re-import is told from the hash alone.
pub struct RawStored {
    email: String,
    data: String,
    meta: String,
    hash: Option<u128>,
}

impl RawStored {
    /// The hash of the data fields ([`data_hash`] of them when written).
    pub fn data_hash(&self) -> Option<u128> {
        self.hash
    }

    pub fn decode(&self) -> Result<StoredUser> {
        let corrupt = |e: serde_json::Error| PgError::Corrupt {
            key: format!("users/{}", self.email),
            reason: e.to_string(),
        };
        let data: UserData = serde_json::from_str(&self.data).map_err(corrupt)?;
        let meta: Meta = serde_json::from_str(&self.meta).map_err(corrupt)?;
        Ok(StoredUser { data, meta })
    }
}

/// A row of `SELECT email, data::text, meta::text, data_hash`.
fn raw_stored(row: &postgres::Row) -> std::result::Result<RawStored, postgres::Error> {
    let hash: Vec<u8> = row.try_get(3)?;
    Ok(RawStored {
        email: row.try_get(0)?,
        data: row.try_get(1)?,
        meta: row.try_get(2)?,
        hash: <[u8; 16]>::try_from(hash.as_slice())
            .ok()
            .map(u128::from_le_bytes),
    })
}

/// The stored users of a step, locked until its transaction ends.
pub struct Locked {
    users: HashMap<String, RawStored>,
}

impl Locked {
    /// The stored record of `email`, if the step asked for it and it exists.
    pub fn get(&self, email: &Email) -> Option<&RawStored> {
        self.users.get(email.as_str())
    }
}

/// The hash a user record carries: xxh3-128 of the data's JSON. The engine's own, so
/// that a change of sled's record encoding cannot make stored hashes lie; a caller
/// compares it with `data_hash` of the merged data to know "unchanged" undecoded.
pub fn data_hash(data: &UserData) -> Result<u128> {
    super::data_hash(data).map_err(|e| PgError::Corrupt {
        key: "(encoding)".into(),
        reason: e.to_string(),
    })
}

/// Cheap to clone: clones share one connection, as clones of the sled store share
/// one open database. A snapshot opens a connection of its own.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("store", &self.inner.name)
            .field("instance", &self.inner.options.instance)
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: Config,
    /// The store as messages name it: never the password.
    name: String,
    options: PgOptions,
    /// Who this process is, as the instance lock's refusal names it.
    me: String,
    conn: Mutex<Option<Conn>>,
    /// Statements sent by commits: the bulk promise is tested on it.
    round_trips: AtomicU64,
    /// Committed since the last [`PgStore::flush`]: commits are asynchronous, and
    /// a flush with nothing to make durable costs no round trip.
    dirty: std::sync::atomic::AtomicBool,
}

/// Why an attempt at a step failed.
enum Fail<E> {
    /// The closure's own error: returned as it is.
    Build(E),
    Pg(postgres::Error),
    Store(PgError),
    /// A new user was inserted by another daemon meanwhile: try again.
    Conflict,
}

impl<E> From<postgres::Error> for Fail<E> {
    fn from(e: postgres::Error) -> Self {
        Fail::Pg(e)
    }
}

impl<E> From<PgError> for Fail<E> {
    fn from(e: PgError) -> Self {
        Fail::Store(e)
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| PgError::Corrupt {
        key: "(encoding)".into(),
        reason: e.to_string(),
    })
}

fn decode<T: serde::de::DeserializeOwned>(key: impl FnOnce() -> String, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| PgError::Corrupt {
        key: key(),
        reason: e.to_string(),
    })
}

fn path_bytes(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

fn path_from(bytes: Vec<u8>) -> PathBuf {
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

fn hash_bytes(hash: u128) -> Vec<u8> {
    hash.to_le_bytes().to_vec()
}

/// What went wrong, in the server's words: the client's own text for a server error
/// is only "db error", with the message in its source.
fn why(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(hint) = db.hint() {
                text.push_str(&format!(" ({hint})"));
            }
            text
        }
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// How long a writer waits for the instance of a process that is gone.
const STALE_HOLDER_WAIT: Duration = Duration::from_secs(15);

/// Whether `holder` (as [`whoami`] wrote it) names a process of this host that no
/// longer exists. Anything else (another host, a live process, a text it cannot
/// read) is a holder to respect. A pid reused since reads as alive: a refusal, the
/// safe side.
fn holder_is_gone(holder: &str) -> bool {
    let Some((rest, pid)) = holder.rsplit_once(", pid ") else {
        return false;
    };
    let Some((_, host)) = rest.rsplit_once(" on host ") else {
        return false;
    };
    let Ok(pid) = pid.trim().parse::<i32>() else {
        return false;
    };
    if host != host_name() || pid <= 0 || pid as u32 == std::process::id() {
        return false;
    }
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    // Signal 0 asks only whether the process exists.
    matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// The host name, as the kernel has it: the default instance name, and what the
/// instance lock records of its holder.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The advisory lock key of an instance name.
fn instance_key(instance: &str) -> i64 {
    let mut bytes = b"userdrop instance\0".to_vec();
    bytes.extend_from_slice(instance.as_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes) as i64
}

/// A connection string as messages and `userdrop config` show it: any password in
/// it replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // A key=value string: drop the password's value.
        return url
            .split_whitespace()
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once("password=") {
        Some((before, after)) => {
            let end = after.find('&').map(|i| &after[i..]).unwrap_or("");
            format!("{before}password=***{end}")
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// This process, as another one's refusal names it.
fn whoami(instance: &str) -> String {
    let host = host_name();
    format!(
        "instance {instance:?} on host {host}, pid {}",
        std::process::id()
    )
}

impl PgStore {
    /// Connects to the store at `url` (a `postgres://` URL or a `key=value` string),
    /// creating or checking its schema and taking the instance lock as `options` say.
    pub fn open(url: &str, options: PgOptions) -> Result<PgStore> {
        let mut config: Config = url.parse().map_err(|e: postgres::Error| PgError::BadUrl {
            url: url.to_owned(),
            reason: why(&e),
        })?;
        // libpq's variable, which the Rust client does not read itself: a password
        // kept out of the URL, the config file and the process list.
        if config.get_password().is_none()
            && let Some(password) = std::env::var_os("PGPASSWORD")
        {
            config.password(password.as_encoded_bytes());
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        let name = &options.instance;
        if name.is_empty() || name.len() > 64 || !name.chars().all(valid) {
            return Err(PgError::BadInstance(name.clone()));
        }
        let me = whoami(&options.instance);
        config
            // The server keeps 63 bytes of it (and says so in a notice otherwise).
            .application_name(
                &format!("userdrop {}", options.instance)[..(9 + options.instance.len()).min(63)],
            )
            .connect_timeout(Duration::from_secs(10))
            // A dead peer on a TCP connection must show, not hang a step for hours.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        let store = PgStore {
            inner: Arc::new(Inner {
                name: redacted(url),
                config,
                options,
                me,
                conn: Mutex::new(None),
                round_trips: AtomicU64::new(0),
                dirty: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        drop(store.conn()?);
        Ok(store)
    }

    /// The store as messages name it.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn instance(&self) -> &str {
        &self.inner.options.instance
    }

    /// Statements the commits of this store sent so far (each one a round trip).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    fn lost(&self, reason: impl ToString) -> PgError {
        PgError::Lost {
            store: self.inner.name.clone(),
            reason: reason.to_string(),
        }
    }

    /// What a failed statement means: a connection gone is [`PgError::Lost`] and
    /// forgets the connection (the next operation makes a new one); anything else is
    /// the store's error.
    fn failure(&self, slot: &mut Option<Conn>, e: postgres::Error) -> PgError {
        let code = e.code().map(|c| c.code().to_owned()).unwrap_or_default();
        let gone = e.is_closed()
            || slot.as_ref().is_none_or(|c| c.client.is_closed())
            || code.starts_with("08")
            || code.starts_with("57P");
        if gone {
            *slot = None;
            self.lost(why(&e))
        } else {
            PgError::Db {
                store: self.inner.name.clone(),
                reason: why(&e),
            }
        }
    }

    /// The connection, made anew when there is none.
    fn conn(&self) -> Result<MutexGuard<'_, Option<Conn>>> {
        // The mutex guards no invariant of its own: a panic while it was held leaves
        // at worst a connection mid-transaction, which the next statement's failure
        // replaces.
        let mut guard = self.inner.conn.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = Some(self.connect(true)?);
        }
        Ok(guard)
    }

    /// A new session: settings checked, schema created or checked, instance locked.
    fn connect(&self, main: bool) -> Result<Conn> {
        let inner = &self.inner;
        let mut client = inner.config.connect(NoTls).map_err(|e| PgError::Connect {
            store: inner.name.clone(),
            reason: why(&e),
        })?;
        let db = |e: postgres::Error| PgError::Db {
            store: inner.name.clone(),
            reason: why(&e),
        };
        // Commits are asynchronous (visible at once, on disk within the server's
        // wal_writer_delay), and `flush` makes all of them durable with one
        // synchronous commit: a group of files then shares one WAL flush, as it shares
        // one sled flush. No response is written before that flush (SPEC §2).
        client
            .batch_execute("SET synchronous_commit TO off")
            .map_err(db)?;
        // A daemon that dies (kill -9, its host lost) must not leave a session that
        // holds its instance and its rows for hours: the server looks for the client
        // while a statement runs (PostgreSQL 14 and later), and probes an idle TCP
        // peer after 30 s.
        client
            .batch_execute(
                "SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; \
                 SET tcp_keepalives_count = 3",
            )
            .map_err(db)?;
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .and_then(|r| r.try_get(0))
            .map_err(db)?;
        if version >= 140_000 {
            client
                .batch_execute("SET client_connection_check_interval = '1s'")
                .map_err(db)?;
        }
        let row = client
            .query_one(
                "SELECT current_setting('server_encoding'), current_setting('fsync')",
                &[],
            )
            .map_err(db)?;
        let encoding: String = row.try_get(0).map_err(db)?;
        let fsync: String = row.try_get(1).map_err(db)?;
        if encoding != "UTF8" {
            return Err(PgError::Encoding {
                store: inner.name.clone(),
                encoding,
            });
        }
        if main && fsync != "on" {
            tracing::warn!(store = %inner.name, "the PostgreSQL server runs with fsync = off: a power cut may lose files already answered");
        }
        self.schema(&mut client)?;
        if main && inner.options.lock_instance {
            self.lock_instance(&mut client)?;
        }
        let st = Statements::prepare(&mut client).map_err(db)?;
        Ok(Conn {
            client,
            st,
            cached: HashMap::new(),
        })
    }

    /// Creates the schema if the options allow and there is none; checks its version.
    fn schema(&self, client: &mut Client) -> Result<()> {
        let inner = &self.inner;
        let db = |e: postgres::Error| PgError::Db {
            store: inner.name.clone(),
            reason: why(&e),
        };
        let mut tx = client.transaction().map_err(db)?;
        if inner.options.create {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .map_err(db)?;
        }
        let exists: bool = tx
            .query_one("SELECT to_regclass('userdrop.format') IS NOT NULL", &[])
            .and_then(|r| r.try_get(0))
            .map_err(db)?;
        if !exists {
            if !inner.options.create {
                return Err(PgError::NoStore(inner.name.clone()));
            }
            tx.batch_execute(SCHEMA).map_err(db)?;
            let totals = encode(&Totals::default())?;
            tx.execute(
                "INSERT INTO userdrop.format (version) VALUES ($1)",
                &[&SCHEMA_VERSION],
            )
            .map_err(db)?;
            tx.execute(
                "INSERT INTO userdrop.totals (record) VALUES ($1::text::json)",
                &[&totals],
            )
            .map_err(db)?;
            tracing::info!(store = %inner.name, version = SCHEMA_VERSION, "created the userdrop schema");
        } else {
            let row = tx
                .query_one("SELECT version, restoring FROM userdrop.format", &[])
                .map_err(db)?;
            let found: i32 = row.try_get(0).map_err(db)?;
            let restoring: bool = row.try_get(1).map_err(db)?;
            // Migrations from older versions go here, inside this transaction and
            // under the schema lock, when there are any.
            if found != SCHEMA_VERSION {
                return Err(PgError::Version {
                    store: inner.name.clone(),
                    found,
                    binary: env!("CARGO_PKG_VERSION"),
                });
            }
            if restoring && !inner.options.restoring {
                return Err(PgError::RestoreUnfinished(inner.name.clone()));
            }
        }
        tx.commit().map_err(db)
    }

    fn lock_instance(&self, client: &mut Client) -> Result<()> {
        let inner = &self.inner;
        let db = |e: postgres::Error| PgError::Db {
            store: inner.name.clone(),
            reason: why(&e),
        };
        let instance = &inner.options.instance;
        let key = instance_key(instance);
        // A holder that is a process of this host that is gone (a daemon killed a
        // moment ago) still has its session until the server notices: end it, and
        // wait a little for the lock rather than refuse a restart.
        let deadline = std::time::Instant::now() + STALE_HOLDER_WAIT;
        let mut said = false;
        loop {
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .and_then(|r| r.try_get(0))
                .map_err(db)?;
            if got {
                break;
            }
            let holder: Option<String> = client
                .query_opt(
                    "SELECT holder FROM userdrop.instances WHERE instance = $1",
                    &[instance],
                )
                .and_then(|r| r.map(|r| r.try_get(0)).transpose())
                .map_err(db)?;
            let gone = holder.as_deref().is_some_and(holder_is_gone);
            if !gone || std::time::Instant::now() >= deadline {
                let since: Option<String> = client
                    .query_opt(
                        "SELECT since::text FROM userdrop.instances WHERE instance = $1",
                        &[instance],
                    )
                    .and_then(|r| r.map(|r| r.try_get(0)).transpose())
                    .map_err(db)?;
                let holder = match (holder, since) {
                    (Some(h), Some(since)) => format!("{h}, since {since}"),
                    (Some(h), None) => h,
                    (None, _) => "another session".into(),
                };
                return Err(PgError::InstanceBusy {
                    store: inner.name.clone(),
                    instance: instance.clone(),
                    holder,
                    this: inner.me.clone(),
                });
            }
            if !said {
                tracing::info!(store = %inner.name, instance = %instance, "the previous process of this instance on this host is gone; ending its session on the server");
                said = true;
            }
            // Allowed for a session of the same role (or pg_signal_backend); where it
            // is not, the server ends it itself once it notices the client is gone.
            let [high, low] = [(key as u64 >> 32) as u32, key as u64 as u32];
            let _ = client.execute(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 \
                 AND l.objid = $2 AND l.objsubid = 1 AND l.pid <> pg_backend_pid()",
                &[&high, &low],
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        client
            .execute(
                "INSERT INTO userdrop.instances (instance, holder) VALUES ($1, $2) \
                 ON CONFLICT (instance) DO UPDATE SET holder = EXCLUDED.holder, since = now()",
                &[instance, &inner.me],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Runs `f` on the connection; a failure is classified by [`PgStore::failure`].
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Conn) -> std::result::Result<T, Fail<std::convert::Infallible>>,
    ) -> Result<T> {
        let mut guard = self.conn()?;
        let Some(conn) = guard.as_mut() else {
            return Err(self.lost("no connection"));
        };
        self.inner.dirty.store(true, Ordering::SeqCst);
        match f(conn) {
            Ok(v) => Ok(v),
            Err(Fail::Pg(e)) => Err(self.failure(&mut guard, e)),
            Err(Fail::Store(e)) => Err(e),
            Err(Fail::Conflict) => Err(PgError::Contended {
                store: self.inner.name.clone(),
            }),
            Err(Fail::Build(never)) => match never {},
        }
    }

    pub fn user(&self, email: &Email) -> Result<Option<StoredUser>> {
        self.user_raw(email)?.map(|raw| raw.decode()).transpose()
    }

    pub fn user_raw(&self, email: &Email) -> Result<Option<RawStored>> {
        self.with(|c| {
            let row = c.client.query_opt(
                "SELECT data::text, meta::text, data_hash FROM userdrop.users WHERE email = $1",
                &[&email.as_str()],
            )?;
            let Some(row) = row else { return Ok(None) };
            let hash: Vec<u8> = row.try_get(2)?;
            Ok(Some(RawStored {
                email: email.as_str().to_owned(),
                data: row.try_get(0)?,
                meta: row.try_get(1)?,
                hash: <[u8; 16]>::try_from(hash.as_slice())
                    .ok()
                    .map(u128::from_le_bytes),
            }))
        })
    }

    /// The stored records of `emails`, read in one statement and locked by nothing:
    /// what `check` judges a file against.
    pub fn peek(&self, emails: &[Email]) -> Result<Locked> {
        let keys: Vec<&str> = emails.iter().map(Email::as_str).collect();
        let rows = self.with(|c| {
            Ok(c.client.query(
                "SELECT email, data::text, meta::text, data_hash FROM userdrop.users \
                 WHERE email = ANY($1::text[])",
                &[&keys],
            )?)
        })?;
        let mut users = HashMap::new();
        for row in rows {
            let raw = raw_stored(&row).map_err(|e| self.db(e))?;
            users.insert(raw.email.clone(), raw);
        }
        Ok(Locked { users })
    }

    /// Every user, sorted by email (byte order, as sled's keys), a page at a time:
    /// not one moment of the store (see [`PgStore::snapshot`] for that).
    pub fn users(&self) -> impl Iterator<Item = Result<StoredUser>> + '_ {
        let mut after = Some(String::new());
        let mut page: std::vec::IntoIter<Result<StoredUser>> = Vec::new().into_iter();
        std::iter::from_fn(move || {
            loop {
                if let Some(next) = page.next() {
                    return Some(next);
                }
                let from = after.take()?;
                let rows = self.with(|c| {
                    Ok(c.client.query(
                        "SELECT email, data::text, meta::text FROM userdrop.users \
                         WHERE email > $1 ORDER BY email LIMIT $2",
                        &[&from, &PAGE],
                    )?)
                });
                let rows = match rows {
                    Ok(rows) => rows,
                    Err(e) => return Some(Err(e)),
                };
                let full = rows.len() as i64 == PAGE;
                let mut users = Vec::with_capacity(rows.len());
                for row in rows {
                    let raw = (|| -> std::result::Result<RawStored, postgres::Error> {
                        Ok(RawStored {
                            email: row.try_get(0)?,
                            data: row.try_get(1)?,
                            meta: row.try_get(2)?,
                            hash: None,
                        })
                    })();
                    match raw {
                        Ok(raw) => {
                            if full {
                                after = Some(raw.email.clone());
                            }
                            users.push(raw.decode());
                        }
                        Err(e) => users.push(Err(PgError::Db {
                            store: self.inner.name.clone(),
                            reason: why(&e),
                        })),
                    }
                }
                if users.is_empty() {
                    return None;
                }
                page = users.into_iter();
            }
        })
    }

    pub fn user_count(&self) -> Result<u64> {
        self.with(|c| {
            let n: i64 = c
                .client
                .query_one("SELECT count(*) FROM userdrop.users", &[])?
                .try_get(0)?;
            Ok(n.max(0) as u64)
        })
    }

    fn record_of<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
        path: &Path,
    ) -> Result<Option<T>> {
        let sql =
            format!("SELECT record::text FROM userdrop.{table} WHERE instance = $1 AND path = $2");
        let text: Option<String> = self.with(|c| {
            let statement = c.cached(&sql)?;
            Ok(c.client
                .query_opt(&statement, &[&self.instance(), &path_bytes(path)])?
                .map(|r| r.try_get(0))
                .transpose()?)
        })?;
        text.map(|t| decode(|| format!("{table}/{}", path.display()), &t))
            .transpose()
    }

    fn records_of<T: serde::de::DeserializeOwned>(&self, table: &str) -> Result<Vec<T>> {
        let sql = format!(
            "SELECT path, record::text FROM userdrop.{table} WHERE instance = $1 ORDER BY path"
        );
        let rows = self.with(|c| Ok(c.client.query(&sql, &[&self.instance()])?))?;
        rows.into_iter()
            .map(|row| {
                let path: Vec<u8> = row.try_get(0).map_err(|e| self.db(e))?;
                let text: String = row.try_get(1).map_err(|e| self.db(e))?;
                decode(
                    || format!("{table}/{}", String::from_utf8_lossy(&path)),
                    &text,
                )
            })
            .collect()
    }

    fn db(&self, e: postgres::Error) -> PgError {
        PgError::Db {
            store: self.inner.name.clone(),
            reason: why(&e),
        }
    }

    pub fn progress(&self, path: &Path) -> Result<Option<Progress>> {
        self.record_of("progress", path)
    }

    /// Forgets a file's partial progress and its logged steps: it starts over.
    pub fn discard_progress(&self, path: &Path) -> Result<()> {
        self.with(|c| {
            let mut tx = c.client.transaction()?;
            tx.execute(
                &c.st.delete_progress,
                &[&self.instance(), &path_bytes(path)],
            )?;
            tx.execute(&c.st.delete_logs, &[&self.instance(), &path_bytes(path)])?;
            tx.commit()?;
            Ok(())
        })
    }

    /// The requests of this instance cut short mid-way.
    pub fn interrupted(&self) -> Result<Vec<PathBuf>> {
        let rows = self.with(|c| {
            Ok(c.client.query(
                "SELECT path FROM userdrop.progress WHERE instance = $1 ORDER BY path",
                &[&self.instance()],
            )?)
        })?;
        rows.into_iter()
            .map(|r| r.try_get(0).map(path_from).map_err(|e| self.db(e)))
            .collect()
    }

    /// Forgets the progress of this instance's files that were cut short and have
    /// since been removed (as [`crate::store::Store::forget_vanished`]).
    pub fn forget_vanished(&self) -> Result<Vec<PathBuf>> {
        let mut gone = Vec::new();
        for path in self.interrupted()? {
            if matches!(std::fs::symlink_metadata(&path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
            {
                self.discard_progress(&path)?;
                gone.push(path);
            }
        }
        Ok(gone)
    }

    /// Commits `step` as it is, in one transaction, without reading the stored users:
    /// what `store::Store::commit` does for the single writer of a sled store. Two
    /// daemons must use [`PgStore::commit_with`], or one may write over the other's
    /// update. Returns the number of log chunks of the file committed.
    pub fn commit(&self, step: Step<'_>) -> Result<u64> {
        // A deadlock retries the step, so each attempt gets its own copy.
        self.commit_inner(None, |_| {
            Ok::<_, PgError>(Step {
                path: step.path,
                writes: step.writes.clone(),
                log: step.log.clone(),
                progress: step.progress.clone(),
                done: step.done.clone(),
                hold_below: 0,
            })
        })
    }

    /// Commits one step of a file in one transaction: locks the stored users of
    /// `emails` (`SELECT … FOR UPDATE`), hands them to `build`, which merges and
    /// returns the step (every user it writes must be among `emails`), then writes
    /// the step's users, its log chunk and the file's progress, and on the last step
    /// the outbox entry, the history record and the totals. Visible to every session on
    /// return; durable at the next [`PgStore::flush`].
    ///
    /// `build` may run more than once: when another daemon inserts one of the step's
    /// new users meanwhile, or on a deadlock, the transaction is rolled back and
    /// `build` is called again on what is stored then. It must build the step from
    /// its own inputs each time (counts from the progress before the step, not
    /// accumulated across calls). Returns the number of log chunks of the file
    /// committed (the `log_len` of its progress and record).
    pub fn commit_with<'p, E: From<PgError>>(
        &self,
        emails: &[Email],
        build: impl FnMut(&Locked) -> std::result::Result<Step<'p>, E>,
    ) -> std::result::Result<u64, E> {
        self.commit_inner(Some(emails), build)
    }

    fn commit_inner<'p, E: From<PgError>>(
        &self,
        emails: Option<&[Email]>,
        mut build: impl FnMut(&Locked) -> std::result::Result<Step<'p>, E>,
    ) -> std::result::Result<u64, E> {
        for _ in 0..ATTEMPTS {
            let mut guard = self.conn()?;
            let Some(conn) = guard.as_mut() else {
                return Err(self.lost("no connection").into());
            };
            match self.attempt(conn, emails, &mut build) {
                Ok(len) => return Ok(len),
                Err(Fail::Build(e)) => return Err(e),
                Err(Fail::Store(e)) => return Err(e.into()),
                Err(Fail::Conflict) => continue,
                Err(Fail::Pg(e))
                    if matches!(
                        e.code(),
                        Some(&SqlState::T_R_DEADLOCK_DETECTED)
                            | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
                    ) =>
                {
                    continue;
                }
                Err(Fail::Pg(e)) => return Err(self.failure(&mut guard, e).into()),
            }
        }
        Err(PgError::Contended {
            store: self.inner.name.clone(),
        }
        .into())
    }

    fn attempt<'p, E>(
        &self,
        conn: &mut Conn,
        emails: Option<&[Email]>,
        build: &mut impl FnMut(&Locked) -> std::result::Result<Step<'p>, E>,
    ) -> std::result::Result<u64, Fail<E>> {
        let instance = self.instance();
        let trips = &self.inner.round_trips;
        let count = |n: u64| trips.fetch_add(n, Ordering::Relaxed);
        let st = &conn.st;
        self.inner.dirty.store(true, Ordering::SeqCst);
        let mut tx = conn.client.transaction()?;
        count(1);
        let mut locked = Locked {
            users: HashMap::new(),
        };
        if let Some(emails) = emails {
            let keys: Vec<&str> = emails.iter().map(Email::as_str).collect();
            count(1);
            for row in tx.query(&st.lock_users, &[&keys])? {
                let raw = raw_stored(&row)?;
                locked.users.insert(raw.email.clone(), raw);
            }
        }
        let step = build(&locked).map_err(Fail::Build)?;
        let path = path_bytes(step.path);

        // The users: those that exist are updated (their rows are ours), the new ones
        // inserted unless another daemon got there first. The last write of an email
        // wins, as in a sled batch.
        let mut seen = HashSet::new();
        let mut writes = Vec::with_capacity(step.writes.len());
        for user in step.writes.iter().rev() {
            if seen.insert(user.data.email.as_str()) {
                writes.push(user);
            }
        }
        let mut columns = [Columns::default(), Columns::default()];
        for user in writes {
            let email = user.data.email.as_str();
            let new = emails.is_some() && !locked.users.contains_key(email);
            if let Some(asked) = emails
                && !asked.iter().any(|e| e.as_str() == email)
            {
                return Err(Fail::Store(PgError::Unlocked(email.to_owned())));
            }
            columns[usize::from(new)].push(user)?;
        }
        let [old, new] = columns;
        if !old.is_empty() {
            let statement = if emails.is_some() {
                &st.update_users
            } else {
                &st.upsert_users
            };
            count(1);
            tx.execute(statement, &old.params())?;
        }
        if !new.is_empty() {
            count(1);
            let inserted = tx.query(&st.insert_users, &new.params())?;
            if inserted.len() != new.len() {
                tx.rollback()?;
                return Err(Fail::Conflict);
            }
        }

        let mut log_len = step.progress.log_len;
        if log_len == 0 {
            // A first step: anything logged under this path before is of an older run.
            count(1);
            tx.execute(&st.delete_logs, &[&instance, &path])?;
        }
        if !step.log.is_empty() {
            let entries = encode(&step.log)?;
            let seq = i64::try_from(log_len).unwrap_or(i64::MAX);
            count(1);
            tx.execute(&st.put_log, &[&instance, &path, &seq, &entries])?;
            log_len += 1;
        }
        match &step.done {
            None => {
                let progress = encode(&Progress {
                    log_len,
                    ..step.progress.clone()
                })?;
                count(1);
                tx.execute(&st.put_progress, &[&instance, &path, &progress])?;
            }
            Some(record) => {
                let value = encode(&FileRecord {
                    log_len,
                    ..record.clone()
                })?;
                count(2);
                tx.execute(&st.finish, &[&instance, &path, &value])?;
                // Locked last, after every user: the one row all daemons' last steps
                // share.
                let text: Option<String> = tx
                    .query_opt(&st.lock_totals, &[])?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                let mut totals: Totals = match text {
                    Some(t) => decode(|| "totals".into(), &t)?,
                    None => Totals::default(),
                };
                totals.add(record);
                count(1);
                tx.execute(&st.put_totals, &[&encode(&totals)?])?;
            }
        }
        count(1);
        tx.commit()?;
        Ok(log_len)
    }

    /// Makes every commit so far durable: a transaction that commits with
    /// `synchronous_commit = on` returns once the WAL up to its commit record is
    /// flushed (and, where configured, on the synchronous standbys), and the WAL is
    /// one sequence: every earlier commit, of this session or another, is in it.
    /// The marker must write WAL of its own: PostgreSQL does not wait for the flush of
    /// a transaction that wrote none (`SELECT txid_current()` alone was tried: its
    /// commit returned at once, and a server killed after it lost the commits before
    /// it). It rewrites the one row of `format` as it is.
    pub fn flush(&self) -> Result<()> {
        if !self.inner.dirty.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let flushed = self.with(|c| {
            c.client.batch_execute(
                "BEGIN; SET LOCAL synchronous_commit TO on; \
                 UPDATE userdrop.format SET version = version; COMMIT",
            )?;
            Ok(())
        });
        if flushed.is_err() {
            // Whatever was committed is still to be made durable, on the next try.
            self.inner.dirty.store(true, Ordering::SeqCst);
        }
        flushed
    }

    /// Files of this instance whose response is due.
    pub fn outbox(&self) -> Result<Vec<FileRecord>> {
        self.records_of("outbox")
    }

    pub fn outbox_entry(&self, path: &Path) -> Result<Option<FileRecord>> {
        self.record_of("outbox", path)
    }

    /// The log entries of a file in the outbox, a step's chunk at a time, in request
    /// order.
    pub fn log_chunks(
        &self,
        record: &FileRecord,
    ) -> Box<dyn Iterator<Item = Result<Vec<Vec<Message>>>> + '_> {
        let path = record.path.clone();
        let mut next: Option<i64> = Some(-1);
        Box::new(std::iter::from_fn(move || {
            let after = next.take()?;
            let row = self.with(|c| {
                let statement = c.cached(
                    "SELECT seq, entries::text FROM userdrop.logs \
                     WHERE instance = $1 AND path = $2 AND seq > $3 ORDER BY seq LIMIT 1",
                )?;
                Ok(c.client
                    .query_opt(&statement, &[&self.instance(), &path_bytes(&path), &after])?)
            });
            let row = match row {
                Ok(row) => row?,
                Err(e) => return Some(Err(e)),
            };
            let chunk = (|| {
                let seq: i64 = row.try_get(0).map_err(|e| self.db(e))?;
                let text: String = row.try_get(1).map_err(|e| self.db(e))?;
                next = Some(seq);
                decode(|| format!("logs/{}/{seq}", path.display()), &text)
            })();
            Some(chunk)
        }))
    }

    /// The responses of `paths` are durably on disk: drop their outbox entries and
    /// logs, in one transaction.
    pub fn clear_outboxes<'p>(&self, paths: impl IntoIterator<Item = &'p Path>) -> Result<()> {
        let paths: Vec<&[u8]> = paths.into_iter().map(path_bytes).collect();
        self.with(|c| {
            let mut tx = c.client.transaction()?;
            tx.execute(
                "DELETE FROM userdrop.outbox WHERE instance = $1 AND path = ANY($2::bytea[])",
                &[&self.instance(), &paths],
            )?;
            tx.execute(
                "DELETE FROM userdrop.logs WHERE instance = $1 AND path = ANY($2::bytea[])",
                &[&self.instance(), &paths],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// The running totals of every file processed on this store, by any instance.
    pub fn totals(&self) -> Result<Totals> {
        let text: Option<String> = self.with(|c| {
            Ok(c.client
                .query_opt("SELECT record::text FROM userdrop.totals", &[])?
                .map(|r| r.try_get(0))
                .transpose()?)
        })?;
        match text {
            Some(t) => decode(|| "totals".into(), &t),
            None => Ok(Totals::default()),
        }
    }

    /// The last outcome of every file this instance processed, by path.
    pub fn files(&self) -> Result<Vec<FileRecord>> {
        self.records_of("files")
    }

    /// Erases these users (the right to erasure); returns those that were stored, in
    /// the order asked. Durable on return.
    pub fn delete(&self, emails: &[Email]) -> Result<Vec<Email>> {
        let keys: Vec<&str> = emails.iter().map(Email::as_str).collect();
        let rows = self.with(|c| {
            Ok(c.client.query(
                "DELETE FROM userdrop.users WHERE email = ANY($1::text[]) RETURNING email",
                &[&keys],
            )?)
        })?;
        let mut gone = HashSet::new();
        for row in rows {
            gone.insert(row.try_get::<_, String>(0).map_err(|e| self.db(e))?);
        }
        let mut erased: Vec<Email> = Vec::new();
        for email in emails {
            if gone.contains(email.as_str()) && !erased.contains(email) {
                erased.push(email.clone());
            }
        }
        self.flush()?;
        Ok(erased)
    }

    /// Hands every user (by email), this instance's history (by path) and the totals
    /// to `each`, all of one moment: a `REPEATABLE READ` transaction on a connection
    /// of its own, so the daemon's steps go on while it runs and none shows in it.
    pub fn snapshot<E: From<PgError>>(
        &self,
        mut each: impl FnMut(Item<'_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let mut conn = self.connect(false)?;
        let db = |e: postgres::Error| self.db(e);
        let mut tx = conn
            .client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(db)?;
        let users = tx
            .bind(
                "SELECT email, data::text, meta::text FROM userdrop.users ORDER BY email",
                &[],
            )
            .map_err(db)?;
        loop {
            let rows = tx.query_portal(&users, PAGE as i32).map_err(db)?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let raw = RawStored {
                    email: row.try_get(0).map_err(db)?,
                    data: row.try_get(1).map_err(db)?,
                    meta: row.try_get(2).map_err(db)?,
                    hash: None,
                };
                each(Item::User(&raw.decode()?))?;
            }
        }
        let files = tx
            .bind(
                // Every instance's: the backup is the whole store.
                "SELECT path, record::text, instance FROM userdrop.files ORDER BY instance, path",
                &[],
            )
            .map_err(db)?;
        loop {
            let rows = tx.query_portal(&files, PAGE as i32).map_err(db)?;
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let path: Vec<u8> = row.try_get(0).map_err(db)?;
                let text: String = row.try_get(1).map_err(db)?;
                let record: FileRecord = decode(
                    || format!("files/{}", String::from_utf8_lossy(&path)),
                    &text,
                )?;
                let instance: String = row.try_get(2).map_err(db)?;
                each(Item::File(&record, Some(&instance)))?;
            }
        }
        let text: Option<String> = tx
            .query_opt("SELECT record::text FROM userdrop.totals", &[])
            .and_then(|r| r.map(|r| r.try_get(0)).transpose())
            .map_err(db)?;
        let totals = match text {
            Some(t) => decode(|| "totals".into(), &t)?,
            None => Totals::default(),
        };
        each(Item::Totals(&totals))?;
        tx.commit().map_err(db)?;
        Ok(())
    }

    /// Marks the store as being restored into: it must hold nothing (no user, no
    /// file of any instance, no totals), or a restore that did not finish, which is
    /// cleared to start over. One transaction.
    pub fn begin_restore(&self) -> Result<()> {
        let name = self.inner.name.clone();
        self.with(|c| {
            let mut tx = c.client.transaction()?;
            let restoring: bool = tx
                .query_one("SELECT restoring FROM userdrop.format FOR UPDATE", &[])?
                .try_get(0)?;
            let totals = encode(&Totals::default())?;
            if restoring {
                tx.batch_execute(
                    "TRUNCATE userdrop.users, userdrop.progress, userdrop.outbox, userdrop.files, userdrop.logs",
                )?;
                tx.execute(&c.st.put_totals, &[&totals])?;
            } else {
                let busy: bool = tx
                    .query_one(
                        "SELECT EXISTS (SELECT 1 FROM userdrop.users) \
                         OR EXISTS (SELECT 1 FROM userdrop.progress) \
                         OR EXISTS (SELECT 1 FROM userdrop.outbox) \
                         OR EXISTS (SELECT 1 FROM userdrop.files) \
                         OR EXISTS (SELECT 1 FROM userdrop.logs)",
                        &[],
                    )?
                    .try_get(0)?;
                let text: Option<String> = tx
                    .query_opt("SELECT record::text FROM userdrop.totals", &[])?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                let counted = match text {
                    Some(t) => decode::<Totals>(|| "totals".into(), &t)? != Totals::default(),
                    None => false,
                };
                if busy || counted {
                    return Err(Fail::Store(PgError::NotEmpty(name)));
                }
            }
            tx.execute("UPDATE userdrop.format SET restoring = true", &[])?;
            tx.commit()?;
            Ok(())
        })?;
        self.flush()
    }

    /// Writes restored users and this instance's history records, as they are, in
    /// one transaction.
    pub fn restore_batch(&self, users: &[StoredUser], files: &[super::Restored]) -> Result<()> {
        let mut columns = Columns::default();
        let mut seen = HashSet::new();
        for user in users.iter().rev() {
            if seen.insert(user.data.email.as_str()) {
                columns.push(user)?;
            }
        }
        let mut instances: Vec<&str> = Vec::new();
        let mut paths: Vec<&[u8]> = Vec::new();
        let mut records: Vec<String> = Vec::new();
        for file in files {
            instances.push(file.instance.as_deref().unwrap_or(self.instance()));
            paths.push(path_bytes(&file.record.path));
            records.push(encode(&file.record)?);
        }
        self.with(|c| {
            let mut tx = c.client.transaction()?;
            if !columns.is_empty() {
                tx.execute(&c.st.upsert_users, &columns.params())?;
            }
            if !paths.is_empty() {
                tx.execute(
                    "INSERT INTO userdrop.files (instance, path, record) \
                     SELECT instance, path, record::json \
                     FROM unnest($1::text[], $2::bytea[], $3::text[]) AS v(instance, path, record) \
                     ON CONFLICT (instance, path) DO UPDATE SET record = EXCLUDED.record",
                    &[&instances, &paths, &records],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Ends a restore: the totals written and the mark removed in one transaction,
    /// so that the store is whole the moment it is no longer marked.
    pub fn finish_restore(&self, totals: &Totals) -> Result<()> {
        let totals = encode(totals)?;
        self.with(|c| {
            let mut tx = c.client.transaction()?;
            tx.execute(&c.st.put_totals, &[&totals])?;
            tx.execute("UPDATE userdrop.format SET restoring = false", &[])?;
            tx.commit()?;
            Ok(())
        })?;
        self.flush()
    }
}

/// Users as the four arrays the bulk statements `unnest`.
#[derive(Default)]
struct Columns {
    emails: Vec<String>,
    data: Vec<String>,
    meta: Vec<String>,
    hashes: Vec<Vec<u8>>,
}

impl Columns {
    fn push(&mut self, user: &StoredUser) -> Result<()> {
        let data = encode(&user.data)?;
        // The same bytes [`data_hash`] hashes, without encoding the data twice.
        self.hashes
            .push(hash_bytes(xxhash_rust::xxh3::xxh3_128(data.as_bytes())));
        self.emails.push(user.data.email.as_str().to_owned());
        self.data.push(data);
        self.meta.push(encode(&user.meta)?);
        Ok(())
    }

    fn len(&self) -> usize {
        self.emails.len()
    }

    fn is_empty(&self) -> bool {
        self.emails.is_empty()
    }

    fn params(&self) -> [&(dyn postgres::types::ToSql + Sync); 4] {
        [&self.emails, &self.data, &self.meta, &self.hashes]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_is_never_shown() {
        for (url, shown) in [
            (
                "postgres://shop:s3cret@db.example.com:5433/shop",
                "postgres://shop:***@db.example.com:5433/shop",
            ),
            (
                "postgres://shop@db.example.com/shop?password=s3cret&sslmode=disable",
                "postgres://shop@db.example.com/shop?password=***&sslmode=disable",
            ),
            (
                "postgresql://userdrop@%2Fvar%2Frun%2Fpostgresql/shop",
                "postgresql://userdrop@%2Fvar%2Frun%2Fpostgresql/shop",
            ),
            (
                "host=/tmp user=shop password=s3cret dbname=shop",
                "host=/tmp user=shop password=*** dbname=shop",
            ),
        ] {
            assert_eq!(redacted(url), shown);
            assert!(!redacted(url).contains("s3cret"));
        }
    }

    #[test]
    fn an_instance_name_is_checked_before_any_connection() {
        for bad in ["", "a b", "east'; --", "ümlaut", &"x".repeat(65)] {
            let e = PgStore::open("postgres://nobody@127.0.0.1:1/none", PgOptions::reader(bad))
                .expect_err(bad);
            assert!(matches!(e, PgError::BadInstance(_)), "{bad:?}: {e}");
        }
        let e = PgStore::open(
            "postgres://nobody@127.0.0.1:1/none",
            PgOptions::reader("east-1.b_2"),
        )
        .expect_err("nothing listens on port 1");
        assert!(matches!(e, PgError::Connect { .. }), "{e}");
    }

    #[test]
    fn only_a_process_of_this_host_that_is_gone_is_a_stale_holder() {
        let host = host_name();
        // pid_max is at most 2^22: this one cannot exist.
        let gone = format!("instance \"east\" on host {host}, pid 99999999");
        assert!(holder_is_gone(&gone));
        let alive = format!(
            "instance \"east\" on host {host}, pid {}",
            std::process::id()
        );
        assert!(!holder_is_gone(&alive), "this very process");
        let init = format!("instance \"east\" on host {host}, pid 1");
        assert!(!holder_is_gone(&init), "a live process");
        assert!(!holder_is_gone(
            "instance \"east\" on host elsewhere.example, pid 99999999"
        ));
        assert!(!holder_is_gone("another session"));
    }
}
