//! The config file on the real binary: precedence flag > env > file > default, shown by
//! `userdrop config` and by what the commands do; errors; the shipped example; SIGHUP.

mod common;

use common::{Env, process, signal, userdrop};
use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Every variable `userdrop config` can report as a source, so that the tests see only
/// what they set.
const VARIABLES: &[&str] = &[
    "USERDROP_CONFIG",
    "USERDROP_WATCH",
    "USERDROP_POLL",
    "USERDROP_RESCAN",
    "USERDROP_SETTLE",
    "USERDROP_TOKENS",
    "USERDROP_TOKEN_FILE",
    "USERDROP_MAX_FILE_SIZE",
    "USERDROP_LANG",
    "USERDROP_STEP_USERS",
    "USERDROP_METRICS_FILE",
    "USERDROP_DB",
    "USERDROP_CACHE_MB",
    "USERDROP_LOG_LEVEL",
    "USERDROP_LOG_FORMAT",
];

fn clean() -> assert_cmd::Command {
    let mut cmd = userdrop();
    for v in VARIABLES {
        cmd.env_remove(v);
    }
    cmd
}

impl Env {
    fn config_file(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("userdrop.toml");
        fs::write(&path, text).unwrap();
        path
    }

    fn request(&self, name: &str, body: &Value) -> PathBuf {
        let path = self.inbox().join(name);
        fs::write(&path, serde_json::to_vec(body).unwrap()).unwrap();
        path
    }
}

/// `userdrop config --json` with these arguments and variables: `settings` by key.
fn effective(args: &[&str], vars: &[(&str, &str)]) -> Value {
    let mut cmd = clean();
    cmd.arg("config").arg("--json").args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("config --json prints JSON")
}

fn setting(v: &Value, key: &str) -> (String, String) {
    let s = &v["settings"][key];
    (
        s["value"].as_str().unwrap_or_default().to_owned(),
        s["source"].as_str().unwrap_or_default().to_owned(),
    )
}

fn pair(value: &str, source: &str) -> (String, String) {
    (value.to_owned(), source.to_owned())
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let env = Env::new();
    let file = env.config_file("settle = 500\nrescan = 7\nstep_users = 3\ncache_mb = 16\n");
    let file = file.to_str().unwrap();

    let from_file = effective(&["--config", file], &[]);
    assert_eq!(from_file["file"], file);
    assert_eq!(setting(&from_file, "settle"), pair("500", "file"));
    assert_eq!(setting(&from_file, "rescan"), pair("7", "file"));
    assert_eq!(setting(&from_file, "poll"), pair("(inotify)", "default"));
    assert_eq!(
        setting(&from_file, "max_file_size"),
        pair("536870912", "default")
    );

    let vars = [("USERDROP_SETTLE", "700"), ("USERDROP_CACHE_MB", "8")];
    let from_env = effective(&["--config", file], &vars);
    assert_eq!(setting(&from_env, "settle"), pair("700", "env"));
    assert_eq!(setting(&from_env, "cache_mb"), pair("8", "env"));
    assert_eq!(setting(&from_env, "rescan"), pair("7", "file"));

    let from_flag = effective(&["--config", file, "--settle", "900"], &vars);
    assert_eq!(setting(&from_flag, "settle"), pair("900", "flag"));
    assert_eq!(setting(&from_flag, "cache_mb"), pair("8", "env"));
    assert_eq!(setting(&from_flag, "step_users"), pair("3", "file"));

    // The config file itself may be named by a variable.
    let by_var = effective(&[], &[("USERDROP_CONFIG", file)]);
    assert_eq!(setting(&by_var, "rescan"), pair("7", "file"));
    let none = effective(&[], &[]);
    assert_eq!(none["file"], Value::Null);
    assert_eq!(setting(&none, "rescan"), pair("30", "default"));
}

#[test]
fn tokens_are_counted_never_shown() {
    let env = Env::new();
    let file = env.config_file("tokens = [\"file-secret-1\", \"file-secret-2\"]\n");
    let out = clean()
        .args(["config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 tokens: ****"), "{text}");
    assert!(!text.contains("file-secret"), "{text}");
    let v = effective(
        &["--config", file.to_str().unwrap()],
        &[("USERDROP_TOKENS", "env-secret")],
    );
    assert_eq!(setting(&v, "tokens"), pair("1 token: ****", "env"));
    assert!(!v.to_string().contains("secret"));
}

fn import(env: &Env, file: &Path, extra: &[&str], vars: &[(&str, &str)]) -> (i32, Value) {
    let mut cmd = clean();
    cmd.arg("import")
        .arg("--db")
        .arg(env.db())
        .args(extra)
        .arg(file);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let response = file.with_file_name(
        file.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .replace(".json", ".response.json"),
    );
    let body = fs::read(&response)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    fs::remove_file(&response).unwrap();
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&body).unwrap(),
    )
}

fn one_user(token: Option<&str>) -> Value {
    let users = json!([{"title": "Ivan", "email": "ivan@mail.net"}]);
    match token {
        Some(t) => json!({"token": t, "users": users}),
        None => json!({"users": users}),
    }
}

#[test]
fn a_token_from_the_file_is_enforced_and_env_overrides_it() {
    let env = Env::new();
    let config = env.config_file("tokens = [\"from-file\"]\n");
    let config = config.to_str().unwrap();
    let without = env.request("without.json", &one_user(None));
    let with = env.request("with.json", &one_user(Some("from-file")));

    let (code, r) = import(&env, &without, &["--config", config], &[]);
    assert_eq!((code, r["status"].as_str()), (3, Some("ERROR")));
    let message = r["response"]["message"].as_str().unwrap();
    assert!(message.starts_with("Authorization failed"), "{message}");

    let (code, r) = import(&env, &with, &["--config", config], &[]);
    assert_eq!((code, r["status"].as_str()), (0, Some("OK")), "{r}");

    // USERDROP_TOKENS outranks the file: the file's token is no longer accepted.
    let vars = [("USERDROP_TOKENS", "from-env")];
    let (_, r) = import(&env, &with, &["--config", config], &vars);
    assert_eq!(r["status"], "ERROR");
    // And a flag outranks the variable.
    let (_, r) = import(
        &env,
        &with,
        &["--config", config, "--token", "from-file"],
        &vars,
    );
    assert_eq!(r["status"], "OK");
}

#[test]
fn max_file_size_from_the_file_applies_unless_a_flag_says_otherwise() {
    let env = Env::new();
    let config = env.config_file("max_file_size = 10\n");
    let config = config.to_str().unwrap();
    let request = env.request("big.json", &one_user(None));
    let (_, r) = import(&env, &request, &["--config", config], &[]);
    assert_eq!(r["status"], "ERROR");
    let (_, r) = import(
        &env,
        &request,
        &["--config", config, "--max-file-size", "100000"],
        &[],
    );
    assert_eq!(r["status"], "OK");
}

#[test]
fn an_unknown_key_is_an_error_naming_the_key_and_the_file() {
    let env = Env::new();
    let config = env.config_file("settle = 100\nsetle = 200\n");
    for command in [&["config"][..], &["stats"], &["run", "--once"]] {
        let out = clean()
            .current_dir(env.dir.path())
            .args(command)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command:?}: {stderr}");
        assert!(stderr.contains("unknown key `setle`"), "{stderr}");
        assert!(stderr.contains(config.to_str().unwrap()), "{stderr}");
    }
    // A bad value is named too, and a missing file is an error, not an empty config.
    let config = env.config_file("lang = \"xx\"\n");
    let out = clean()
        .arg("config")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lang"));
    let out = clean()
        .args(["config", "--config", "/nonexistent/userdrop.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_example_file_parses_and_documents_every_key() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/userdrop.example.toml");
    let v = effective(&["--config", example.to_str().unwrap()], &[]);
    let text = fs::read_to_string(&example).unwrap();
    let settings = v["settings"].as_object().unwrap();
    assert!(settings.len() >= 13);
    for key in settings.keys() {
        assert!(
            text.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{key} ="))
            }),
            "the example does not show the key {key}"
        );
    }
    // The keys it sets are taken from it.
    assert_eq!(setting(&v, "watch").1, "file");
    assert_eq!(setting(&v, "db").1, "file");
    assert_eq!(setting(&v, "settle").1, "file");
}

/// The daemon as a child process, with a config file that SIGHUP reloads.
#[test]
fn sighup_reloads_tokens_from_the_file() {
    let env = Env::new();
    let config = env.config_file("tokens = [\"old\"]\nsettle = 300\n");
    let mut cmd = process();
    for v in VARIABLES {
        cmd.env_remove(v);
    }
    let mut child = cmd
        .args(["run", "--watch"])
        .arg(env.inbox())
        .arg("--db")
        .arg(env.db())
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let respond = |name: &str, token: &str| -> Value {
        env.request(name, &one_user(Some(token)));
        let response = env.inbox().join(name.replace(".json", ".response.json"));
        let started = Instant::now();
        while !response.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no {response:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        serde_json::from_slice(&fs::read(&response).unwrap()).unwrap()
    };
    assert_eq!(respond("a.json", "new")["status"], "ERROR");
    env.config_file("tokens = [\"new\"]\nsettle = 300\n");
    signal(&child, "-HUP");
    // The reload happens at the daemon's next wake-up (within 200 ms).
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(respond("b.json", "new")["status"], "OK");
    assert_eq!(respond("c.json", "old")["status"], "ERROR");

    // A file that no longer parses keeps the configuration in effect.
    env.config_file("tokens = [\"new\"]\nnot_a_key = 1\n");
    signal(&child, "-HUP");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(respond("d.json", "new")["status"], "OK");

    signal(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

impl Env {
    fn token_file(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("tokens");
        fs::write(&path, text).unwrap();
        path
    }
}

#[test]
fn a_token_file_adds_its_tokens_and_is_counted_never_shown() {
    let env = Env::new();
    let tokens = env.token_file("# rotation\n  file-secret-1\n\nfile-secret-2\n");
    let tokens = tokens.to_str().unwrap();
    let with = env.request("with.json", &one_user(Some("file-secret-2")));
    let flagged = env.request("flagged.json", &one_user(Some("flag-secret")));
    let without = env.request("without.json", &one_user(None));

    let args = ["--token-file", tokens, "--token", "flag-secret"];
    let (code, r) = import(&env, &with, &args, &[]);
    assert_eq!((code, r["status"].as_str()), (0, Some("OK")), "{r}");
    let (code, r) = import(&env, &flagged, &args, &[]);
    assert_eq!((code, r["status"].as_str()), (0, Some("OK")), "{r}");
    let (_, r) = import(&env, &without, &args, &[]);
    assert_eq!(r["status"], "ERROR");

    // The variable and the config key name it too.
    let vars = [("USERDROP_TOKEN_FILE", tokens)];
    let (_, r) = import(&env, &with, &[], &vars);
    assert_eq!(r["status"], "OK");
    let config = env.config_file(&format!("token_file = {tokens:?}\n"));
    let config = config.to_str().unwrap();
    let (_, r) = import(&env, &without, &["--config", config], &[]);
    assert_eq!(r["status"], "ERROR");

    let v = effective(&["--config", config, "--token", "flag-secret"], &[]);
    assert_eq!(
        setting(&v, "token_file"),
        pair(&format!("{tokens} (2 tokens: ****)"), "file")
    );
    assert_eq!(setting(&v, "tokens"), pair("1 token: ****", "flag"));
    assert!(!v.to_string().contains("secret-"), "{v}");
    assert_eq!(
        setting(&effective(&[], &[]), "token_file"),
        pair("(none)", "default")
    );
}

#[test]
fn a_token_file_that_cannot_be_read_or_is_empty_is_a_usage_error_naming_it() {
    let env = Env::new();
    let request = env.request("r.json", &one_user(None));
    let missing = env.dir.path().join("no-such-tokens");
    let empty = env.token_file("# none yet\n\n");
    for file in [&missing, &empty] {
        for command in [&["import"][..], &["run", "--once"], &["config"]] {
            let out = clean()
                .current_dir(env.dir.path())
                .args(command)
                .arg("--token-file")
                .arg(file)
                .arg("--db")
                .arg(env.db())
                .args(if command[0] == "import" {
                    vec![request.as_os_str()]
                } else {
                    vec![]
                })
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command:?}: {stderr}");
            assert!(
                stderr.contains(&format!("token file {}", file.display())),
                "{stderr}"
            );
        }
    }
    assert!(!env.db().exists(), "nothing was opened");
}

/// The command line of a running process, as `ps` shows it to every local user.
fn cmdline(pid: u32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

#[test]
fn a_daemon_takes_tokens_from_the_file_out_of_ps_and_rereads_it_on_sighup() {
    let env = Env::new();
    let tokens = env.token_file("first-secret\n");
    let log = env.dir.path().join("daemon.log");
    let mut cmd = process();
    for v in VARIABLES {
        cmd.env_remove(v);
    }
    let mut child = cmd
        .args(["run", "--settle", "300", "--watch"])
        .arg(env.inbox())
        .arg("--db")
        .arg(env.db())
        .arg("--token-file")
        .arg(&tokens)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let respond = |name: &str, token: Option<&str>| -> Value {
        env.request(name, &one_user(token));
        let response = env.inbox().join(name.replace(".json", ".response.json"));
        let started = Instant::now();
        while !response.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no {response:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        serde_json::from_slice(&fs::read(&response).unwrap()).unwrap()
    };
    assert_eq!(respond("a.json", Some("first-secret"))["status"], "OK");
    let refused = respond("b.json", None);
    assert_eq!(refused["status"], "ERROR");
    assert!(
        refused["response"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Authorization failed")
    );
    let argv = cmdline(child.id());
    assert!(argv.contains("--token-file"), "{argv}");
    assert!(!argv.contains("secret"), "{argv}");

    // SIGHUP reads the file again: the new token in, the old one out.
    env.token_file("second-secret\n");
    signal(&child, "-HUP");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(respond("c.json", Some("second-secret"))["status"], "OK");
    assert_eq!(respond("d.json", Some("first-secret"))["status"], "ERROR");
    // A file gone at a reload keeps the tokens in effect.
    fs::remove_file(&tokens).unwrap();
    signal(&child, "-HUP");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(respond("e.json", Some("second-secret"))["status"], "OK");

    signal(&child, "-TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let logged = fs::read_to_string(&log).unwrap();
    assert!(logged.contains("token file"), "{logged}");
    assert!(!logged.contains("secret"), "{logged}");
}

#[test]
fn an_unknown_log_level_or_a_zero_cache_is_a_usage_error() {
    // SPEC §6: exit 2. A typo in the level once turned every log line off while
    // `config` called it fine; `--cache-mb 0` panicked inside sled (exit 101).
    let env = Env::new();
    let db = env.db();
    let db = db.to_str().unwrap();
    for args in [
        &["stats", "--log-level", "verbose", "--db", db][..],
        &["stats", "--log-level", "notice", "--db", db],
        &["stats", "--cache-mb", "0", "--db", db],
    ] {
        let out = clean().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    for text in ["log_level = \"verbose\"\n", "cache_mb = 0\n"] {
        let config = env.config_file(text);
        let out = clean()
            .args(["stats", "--db", db, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}: {out:?}");
    }
    // `warning` is the word syslog and journald use: taken as `warn`.
    let v = effective(&["--log-level", "warning"], &[]);
    assert_eq!(setting(&v, "log_level"), pair("warn", "flag"));
}
