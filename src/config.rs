//! The configuration file (`--config FILE`, TOML) and where every effective setting
//! comes from.
//!
//! Precedence, highest first: a flag on the command line, its `USERDROP_*` environment
//! variable, the config file, the built-in default. clap already settles flag > env >
//! default and tells through `ArgMatches::value_source` which of them a value is; this
//! module slips the file in just above the default: a value clap took from its default
//! is replaced by the file's, when the file has one.
//!
//! Doing it after clap, on the parsed argument structs, keeps every command's code
//! unaware of the file: `run`, `import` and the rest read their usual fields.
//!
//! Relative paths in the file are taken from the working directory, as on the command
//! line. A key the file does not know, a value of the wrong type or out of range, is an
//! error naming the key and the file (exit code 2: the configuration given is wrong,
//! as with a bad flag).

use crate::messages::Lang;
use crate::options::{
    CheckArgs, Common, DeleteArgs, LogFormat, LogLevel, Processing, Rules, RunArgs,
};
use crate::retention::Age;
use crate::validate::Types;
use clap::ValueEnum;
use clap::parser::{ArgMatches, ValueSource};
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Where an effective value came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Flag => "flag",
            Source::Env => "env",
            Source::File => "file",
            Source::Default => "default",
        })
    }
}

/// One effective setting, for `userdrop config`. Values are shown, never tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub key: &'static str,
    pub value: String,
    pub source: Source,
}

#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {reason}")]
pub struct ConfigError {
    /// Which file: "config file" or "token file".
    pub what: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

/// The keys of the config file: one per flag that configures userdrop (not the
/// per-invocation ones such as `--once`, `--json` or `--format`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub watch: Option<PathBuf>,
    #[serde(default, deserialize_with = "at_least_one")]
    pub poll: Option<u64>,
    #[serde(default, deserialize_with = "at_least_one")]
    pub rescan: Option<u64>,
    pub settle: Option<u64>,
    pub archive: Option<PathBuf>,
    #[serde(default, deserialize_with = "age")]
    pub archive_after: Option<Age>,
    #[serde(default, deserialize_with = "age")]
    pub delete_after: Option<Age>,
    pub tokens: Option<Vec<String>>,
    pub token_file: Option<PathBuf>,
    pub max_file_size: Option<u64>,
    #[serde(default, deserialize_with = "value_enum")]
    pub lang: Option<Lang>,
    #[serde(default, deserialize_with = "value_enum")]
    pub types: Option<Types>,
    #[serde(default, deserialize_with = "at_least_one")]
    pub step_users: Option<u64>,
    pub metrics_file: Option<PathBuf>,
    pub db: Option<PathBuf>,
    pub store: Option<String>,
    pub instance: Option<String>,
    #[serde(default, deserialize_with = "at_least_one")]
    pub cache_mb: Option<u64>,
    #[serde(default, deserialize_with = "value_enum")]
    pub log_level: Option<LogLevel>,
    #[serde(default, deserialize_with = "value_enum")]
    pub log_format: Option<LogFormat>,
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be at least 1")),
        n => Ok(Some(n)),
    }
}

/// The same text the flag takes: `archive_after = "7d"`.
fn age<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Age>, D::Error> {
    String::deserialize(d)?
        .parse()
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// The same names the flag takes (`lang = "uk"`, `log_format = "json"`).
fn value_enum<'de, D: Deserializer<'de>, T: ValueEnum>(d: D) -> Result<Option<T>, D::Error> {
    let text = String::deserialize(d)?;
    T::from_str(&text, true).map(Some).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
            .collect();
        serde::de::Error::custom(format!("{text:?} is not one of: {}", names.join(", ")))
    })
}

impl FileConfig {
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let error = |reason: String| ConfigError {
            what: "config file",
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        FileConfig::parse(&text).map_err(error)
    }

    /// Parses the file's text. toml's message already names an unknown key and shows
    /// its line.
    pub fn parse(text: &str) -> Result<FileConfig, String> {
        toml::from_str(text).map_err(|e| {
            // serde says "field"; in a config file it is a key.
            e.to_string()
                .trim_end()
                .replace("unknown field", "unknown key")
        })
    }
}

/// Overlays the file on the values clap left at their default, and records where each
/// value came from.
struct Layer<'a> {
    matches: &'a ArgMatches,
    file: &'a FileConfig,
    entries: Vec<Entry>,
}

impl Layer<'_> {
    fn pick<T>(
        &mut self,
        key: &'static str,
        value: &mut T,
        from_file: Option<T>,
        show: impl Fn(&T) -> String,
    ) {
        let source = match self.matches.value_source(key) {
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => Source::Env,
            _ => match from_file {
                Some(v) => {
                    *value = v;
                    Source::File
                }
                None => Source::Default,
            },
        };
        let value = show(value);
        self.entries.push(Entry { key, value, source });
    }

    fn common(&mut self, c: &mut Common) {
        let f = self.file;
        self.pick("db", &mut c.db, f.db.clone(), |p| path(p));
        self.pick(
            "store",
            &mut c.store,
            f.store.clone().map(Some),
            |s| match s {
                Some(url) => crate::store::pg::redacted(url),
                None => "(none)".into(),
            },
        );
        self.pick(
            "instance",
            &mut c.instance,
            f.instance.clone().map(Some),
            |i| {
                i.clone()
                    .unwrap_or_else(|| format!("(host name: {})", crate::store::pg::host_name()))
            },
        );
        self.pick("cache_mb", &mut c.cache_mb, f.cache_mb, u64::to_string);
        self.pick("log_level", &mut c.log_level, f.log_level, name_of);
        self.pick("log_format", &mut c.log_format, f.log_format, name_of);
    }

    /// Adds `text` to the value of the entry picked last.
    fn note(&mut self, text: &str) {
        if let Some(entry) = self.entries.last_mut() {
            entry.value = format!("{} ({text})", entry.value);
        }
    }

    /// The token file, if one is given, read now (and again at each reload): its
    /// tokens are added to the others.
    fn token_file(&mut self, p: &mut Rules) -> Result<(), ConfigError> {
        let from_file = self.file.token_file.clone().map(Some);
        self.pick("token_file", &mut p.token_file, from_file, |f| {
            f.as_deref().map(path).unwrap_or_else(|| "(none)".into())
        });
        let Some(file) = &p.token_file else {
            return Ok(());
        };
        let tokens = read_token_file(file)?;
        self.note(&masked(&tokens));
        p.tokens.extend(tokens);
        Ok(())
    }

    fn rules(&mut self, r: &mut Rules) -> Result<(), ConfigError> {
        let f = self.file;
        self.pick("tokens", &mut r.tokens, f.tokens.clone(), |t| masked(t));
        self.token_file(r)?;
        self.pick(
            "max_file_size",
            &mut r.max_file_size,
            f.max_file_size,
            u64::to_string,
        );
        self.pick("lang", &mut r.lang, f.lang, name_of);
        self.pick("types", &mut r.types, f.types, name_of);
        Ok(())
    }

    fn processing(&mut self, p: &mut Processing) -> Result<(), ConfigError> {
        let f = self.file;
        self.rules(&mut p.rules)?;
        self.pick(
            "step_users",
            &mut p.step_users,
            f.step_users,
            u64::to_string,
        );
        self.pick(
            "metrics_file",
            &mut p.metrics_file,
            f.metrics_file.clone().map(Some),
            |p| p.as_deref().map(path).unwrap_or_else(|| "(none)".into()),
        );
        self.common(&mut p.common);
        Ok(())
    }

    fn run(&mut self, r: &mut RunArgs) -> Result<(), ConfigError> {
        let f = self.file;
        self.pick("watch", &mut r.watch, f.watch.clone(), |p| path(p));
        self.pick("poll", &mut r.poll, f.poll.map(Some), |p| match p {
            Some(ms) => ms.to_string(),
            None => "(inotify)".into(),
        });
        self.pick("rescan", &mut r.rescan, f.rescan, u64::to_string);
        self.pick("settle", &mut r.settle, f.settle, u64::to_string);
        self.retention(r);
        self.processing(&mut r.processing)
    }

    fn retention(&mut self, r: &mut RunArgs) {
        let f = self.file;
        let none = || "(none)".to_owned();
        self.pick(
            "archive",
            &mut r.archive,
            f.archive.clone().map(Some),
            |p| p.as_deref().map(path).unwrap_or_else(none),
        );
        let age = |a: &Option<Age>| a.map(|a| a.to_string()).unwrap_or_else(none);
        let (archive_after, delete_after) = (f.archive_after.map(Some), f.delete_after.map(Some));
        self.pick("archive_after", &mut r.archive_after, archive_after, age);
        self.pick("delete_after", &mut r.delete_after, delete_after, age);
    }
}

/// The largest token file read: it holds a few lines, and a path such as /dev/zero
/// given by mistake must fail rather than fill the memory.
const TOKEN_FILE_MAX: u64 = 1024 * 1024;

/// The tokens of a token file. A file that cannot be read, or holds no token, is an
/// error: it was given to turn authorization on, and must not silently leave it off.
/// The reasons never quote the file's text.
pub fn read_token_file(file: &Path) -> Result<Vec<String>, ConfigError> {
    use std::io::Read;
    let error = |reason: String| ConfigError {
        what: "token file",
        path: file.to_path_buf(),
        reason,
    };
    let mut text = String::new();
    std::fs::File::open(file)
        .and_then(|f| f.take(TOKEN_FILE_MAX + 1).read_to_string(&mut text))
        .map_err(|e| error(format!("cannot be read: {e}")))?;
    if text.len() as u64 > TOKEN_FILE_MAX {
        return Err(error(format!(
            "is larger than {TOKEN_FILE_MAX} bytes; it holds one token a line"
        )));
    }
    let tokens = parse_tokens(&text);
    if tokens.is_empty() {
        return Err(error(
            "holds no token (one a line; blank lines and lines starting with # are ignored)".into(),
        ));
    }
    Ok(tokens)
}

/// One token a line, trimmed; blank lines and `#` comments skipped.
fn parse_tokens(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn name_of<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_owned())
        .unwrap_or_default()
}

/// How many tokens, never what they are.
pub fn masked(tokens: &[String]) -> String {
    match tokens.iter().filter(|t| !t.trim().is_empty()).count() {
        0 => "none (requests are not authorized)".to_owned(),
        1 => "1 token: ****".to_owned(),
        n => format!("{n} tokens: ****"),
    }
}

/// The effective configuration of one command.
#[derive(Clone, Debug)]
pub struct Effective {
    /// The config file read, if any.
    pub file: Option<PathBuf>,
    pub entries: Vec<Entry>,
}

fn load_for(common: &Common) -> Result<FileConfig, ConfigError> {
    match &common.config {
        Some(path) => FileConfig::load(path),
        None => Ok(FileConfig::default()),
    }
}

fn effective(common: &Common, entries: Vec<Entry>) -> Effective {
    Effective {
        file: common.config.clone(),
        entries,
    }
}

/// Applies the config file to the values of a command that takes only the common
/// options. `matches` are the command's own (the subcommand's, if one was given).
pub fn resolve_common(c: &mut Common, matches: &ArgMatches) -> Result<Effective, ConfigError> {
    let file = load_for(c)?;
    let mut layer = Layer {
        matches,
        file: &file,
        entries: Vec::new(),
    };
    layer.common(c);
    Ok(effective(c, layer.entries))
}

pub fn resolve_processing(
    p: &mut Processing,
    matches: &ArgMatches,
) -> Result<Effective, ConfigError> {
    let file = load_for(&p.common)?;
    let mut layer = Layer {
        matches,
        file: &file,
        entries: Vec::new(),
    };
    layer.processing(p)?;
    Ok(effective(&p.common, layer.entries))
}

/// `check`'s: the rules and the common options, no more.
pub fn resolve_check(c: &mut CheckArgs, matches: &ArgMatches) -> Result<Effective, ConfigError> {
    let file = load_for(&c.common)?;
    let mut layer = Layer {
        matches,
        file: &file,
        entries: Vec::new(),
    };
    layer.rules(&mut c.rules)?;
    layer.common(&mut c.common);
    Ok(effective(&c.common, layer.entries))
}

/// `delete`'s: the inbox it searches, and the common options.
pub fn resolve_delete(d: &mut DeleteArgs, matches: &ArgMatches) -> Result<Effective, ConfigError> {
    let file = load_for(&d.common)?;
    let mut layer = Layer {
        matches,
        file: &file,
        entries: Vec::new(),
    };
    layer.pick("watch", &mut d.watch, file.watch.clone(), |p| path(p));
    layer.pick(
        "archive",
        &mut d.archive,
        file.archive.clone().map(Some),
        |p| p.as_deref().map(path).unwrap_or_else(|| "(none)".into()),
    );
    layer.common(&mut d.common);
    Ok(effective(&d.common, layer.entries))
}

pub fn resolve_run(r: &mut RunArgs, matches: &ArgMatches) -> Result<Effective, ConfigError> {
    let file = load_for(&r.processing.common)?;
    let mut layer = Layer {
        matches,
        file: &file,
        entries: Vec::new(),
    };
    layer.run(r)?;
    Ok(effective(&r.processing.common, layer.entries))
}

/// What SIGHUP re-reads: the daemon's arguments as clap gave them (before the file),
/// and where each came from, so that a reload gives the file's new values the same
/// place in the precedence.
#[derive(Clone, Debug)]
pub struct Reloader {
    base: RunArgs,
    matches: ArgMatches,
}

/// The keys a reload cannot change in a running daemon: they are read once at start.
pub const RESTART_KEYS: &[&str] = &[
    "watch",
    "db",
    "store",
    "instance",
    "poll",
    "rescan",
    "cache_mb",
    "log_level",
    "log_format",
    "metrics_file",
    "archive",
    "archive_after",
    "delete_after",
];

impl Reloader {
    /// `base` must be the arguments before [`resolve_run`] changed them.
    pub fn new(base: RunArgs, matches: ArgMatches) -> Reloader {
        Reloader { base, matches }
    }

    pub fn file(&self) -> Option<&Path> {
        self.base.processing.common.config.as_deref()
    }

    /// Whether a reload has anything to read again: the config file, or a token file
    /// named by a flag or variable.
    pub fn has_files(&self) -> bool {
        self.file().is_some() || self.base.processing.rules.token_file.is_some()
    }

    /// Reads the config file again; returns the new arguments and the keys whose new
    /// value needs a restart to take effect (compared with `running`).
    pub fn reload(&self, running: &RunArgs) -> Result<(RunArgs, Vec<&'static str>), ConfigError> {
        let mut fresh = self.base.clone();
        resolve_run(&mut fresh, &self.matches)?;
        let before = restart_values(running);
        let ignored = restart_values(&fresh)
            .into_iter()
            .zip(before)
            .filter(|(new, old)| new != old)
            .map(|(new, _)| new.0)
            .collect();
        Ok((fresh, ignored))
    }
}

/// The values of [`RESTART_KEYS`], to tell which of them a reload changed.
fn restart_values(r: &RunArgs) -> Vec<(&'static str, String)> {
    let c = &r.processing.common;
    let values = [
        path(&r.watch),
        path(&c.db),
        format!("{:?}", c.store),
        format!("{:?}", c.instance),
        format!("{:?}", r.poll),
        r.rescan.to_string(),
        c.cache_mb.to_string(),
        name_of(&c.log_level),
        name_of(&c.log_format),
        format!("{:?}", r.processing.metrics_file),
        format!("{:?}", r.archive),
        format!("{:?}", r.archive_after),
        format!("{:?}", r.delete_after),
    ];
    RESTART_KEYS.iter().copied().zip(values).collect()
}

/// `userdrop config`: one line per key, `KEY  VALUE  (SOURCE)`.
pub fn render_text(effective: &Effective) -> String {
    let mut out = match &effective.file {
        Some(f) => format!("# config file: {}\n", f.display()),
        None => "# config file: none (give --config FILE or USERDROP_CONFIG)\n".to_owned(),
    };
    let width = effective
        .entries
        .iter()
        .map(|e| e.key.len())
        .max()
        .unwrap_or(0);
    for e in &effective.entries {
        out.push_str(&format!("{:width$}  {}  ({})\n", e.key, e.value, e.source));
    }
    out
}

/// `userdrop config --json`: `{"file": ..., "settings": {KEY: {"value", "source"}}}`.
pub fn render_json(effective: &Effective) -> serde_json::Value {
    let settings: serde_json::Map<String, serde_json::Value> = effective
        .entries
        .iter()
        .map(|e| {
            (
                e.key.to_owned(),
                serde_json::json!({"value": e.value, "source": e.source}),
            )
        })
        .collect();
    serde_json::json!({
        "file": effective.file.as_ref().map(|f| f.display().to_string()),
        "settings": settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = FileConfig::parse("watch = \"in\"\nwatchh = \"x\"\n").unwrap_err();
        assert!(e.contains("watchh"), "{e}");
        let e = FileConfig::parse("step_users = 0\n").unwrap_err();
        assert!(e.contains("at least 1"), "{e}");
        let e = FileConfig::parse("lang = \"xx\"\n").unwrap_err();
        assert!(e.contains("\"xx\" is not one of: en"), "{e}");
        let e = FileConfig::parse("settle = \"2s\"\n").unwrap_err();
        assert!(e.contains("settle"), "{e}");
    }

    #[test]
    fn tokens_are_never_shown() {
        let two = ["s3cret".to_owned(), "other".to_owned()];
        assert_eq!(masked(&two), "2 tokens: ****");
        assert!(masked(&[]).starts_with("none"));
    }

    #[test]
    fn a_token_file_holds_one_token_a_line() {
        let text = "# rotated 2026-05\n  first  \r\n\n\t# old one below\nsecond\n   \n";
        assert_eq!(parse_tokens(text), ["first", "second"]);
    }

    #[test]
    fn a_token_file_that_cannot_serve_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("a folder");
        let missing = dir.path().join("missing");
        let e = read_token_file(&missing).unwrap_err().to_string();
        assert!(e.starts_with("token file "), "{e}");
        assert!(e.contains(&missing.display().to_string()), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "# only a comment\n\n").expect("written");
        let e = read_token_file(&empty).unwrap_err().to_string();
        assert!(e.contains("holds no token"), "{e}");
        let e = read_token_file(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than"), "{e}");
    }
}
