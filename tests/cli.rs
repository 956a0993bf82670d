//! The command line as a user meets it (SPEC §6): options before or after the
//! command's name, read commands that never create a store, request names in any
//! letter case, and the help and man page telling the truth about each command.

mod common;

use common::{Env, userdrop};
use serde_json::Value;
use std::fs;
use std::path::Path;

fn one_user_request(email: &str) -> String {
    format!(r#"{{"users":[{{"title":"A","email":"{email}"}}]}}"#)
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_store_and_config_options_go_before_or_after_the_command() {
    let env = Env::new();
    let file = env.inbox().join("a.json");
    fs::write(&file, one_user_request("a@shop.example")).unwrap();
    let db = env.db();
    let imported = userdrop()
        .arg("--db")
        .arg(&db)
        .arg("import")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(imported.status.code(), Some(0), "{}", stderr_of(&imported));

    let before = userdrop()
        .arg("--db")
        .arg(&db)
        .args(["get", "a@shop.example"])
        .output()
        .unwrap();
    assert_eq!(before.status.code(), Some(0), "{}", stderr_of(&before));
    let after = userdrop()
        .args(["get", "a@shop.example", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(after.status.code(), Some(0), "{}", stderr_of(&after));
    assert_eq!(before.stdout, after.stdout);

    // The config file before the command, naming the store.
    let config = env.dir.path().join("userdrop.toml");
    fs::write(&config, format!("db = {:?}\n", db.display().to_string())).unwrap();
    let stats = userdrop()
        .current_dir(env.dir.path().join("in"))
        .arg("--config")
        .arg(&config)
        .args(["stats", "--json"])
        .output()
        .unwrap();
    assert_eq!(stats.status.code(), Some(0), "{}", stderr_of(&stats));
    let figures: Value = serde_json::from_slice(&stats.stdout).expect("stats --json");
    assert_eq!(figures["users"], 1, "{figures}");
}

#[test]
fn a_daemon_option_before_another_command_is_refused_naming_both() {
    for (args, command) in [
        (&["--watch", "w", "stats"][..], "stats"),
        (&["--once", "get", "a@shop.example"], "get"),
        (&["--settle", "10", "export"], "export"),
    ] {
        let out = userdrop().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let said = stderr_of(&out);
        assert!(
            said.contains(args[0])
                && said.contains("userdrop run")
                && said.contains(&format!("`{command}`")),
            "{args:?}: {said}"
        );
    }
}

/// Every entry of `dir`, for a test that nothing was created there.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn read_commands_in_the_wrong_folder_say_so_and_create_nothing() {
    let env = Env::new();
    let here = env.dir.path().join("elsewhere");
    fs::create_dir(&here).unwrap();
    for args in [
        &["get", "a@shop.example"][..],
        &["stats"],
        &["export", "--format", "ndjson"],
    ] {
        let out = userdrop().current_dir(&here).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let said = stderr_of(&out);
        // On PostgreSQL the folder does not choose the store: the missing one is named.
        let named = match env.store {
            None => said.contains("no store at data") && said.contains("--db"),
            Some(_) => said.contains(&env.store_named()),
        };
        assert!(named, "{args:?}: {said}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert!(entries(&here).is_empty(), "{:?}", entries(&here));

    // check judges against an empty store and creates none either.
    let file = here.join("a.json");
    fs::write(&file, one_user_request("a@shop.example")).unwrap();
    let out = userdrop()
        .current_dir(&here)
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(entries(&here), ["a.json"]);
}

#[test]
fn a_request_named_in_capitals_is_answered() {
    let env = Env::new();
    fs::write(
        env.inbox().join("EXPORT.JSON"),
        one_user_request("caps@shop.example"),
    )
    .unwrap();
    let out = userdrop()
        .arg("run")
        .arg("--once")
        .arg("--watch")
        .arg(env.inbox())
        .arg("--db")
        .arg(env.db())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let response = fs::read_to_string(env.inbox().join("EXPORT.response.json"))
        .expect("EXPORT.JSON is answered as EXPORT.response.json");
    let response: Value = serde_json::from_str(&response).unwrap();
    assert_eq!(response["status"], "OK");
}

#[test]
fn the_man_page_documents_every_command_in_itself() {
    let out = userdrop().arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8(out.stdout).expect("roff is UTF-8");
    // No reference to a page that is not installed.
    assert!(
        !page.contains("userdrop\\-run(1)"),
        "userdrop-run(1) is not a page"
    );
    assert!(!page.contains("(1)\n"), "a reference to another page");
    for command in [
        "run",
        "import",
        "check",
        "get",
        "export",
        "stats",
        "schema",
        "completions",
        "man",
        "config",
    ] {
        assert!(
            page.contains(&format!(".SS {command}\n")),
            "no subsection for {command}"
        );
    }
    assert!(page.contains("EXIT STATUS"));
}

#[test]
fn check_lists_only_the_options_that_change_what_it_prints() {
    let out = userdrop().args(["check", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for applies in ["--token", "--max-file-size", "--lang", "--db"] {
        assert!(help.contains(applies), "check --help lacks {applies}");
    }
    // check applies nothing and writes no file.
    for irrelevant in ["--step-users", "--metrics-file"] {
        assert!(
            !help.contains(irrelevant),
            "check --help lists {irrelevant}"
        );
    }
}

/// The README's config table: key → default, as written.
fn readme_defaults() -> Vec<(String, String)> {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let table = readme
        .split("| key | flag | variable | default |")
        .nth(1)
        .expect("the README's config table");
    table
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let key = cells.get(1)?.trim_matches('`').to_owned();
            let default = cells.get(4)?.trim_matches('`').to_owned();
            Some((key, default))
        })
        .collect()
}

#[test]
fn the_readme_gives_the_defaults_the_binary_uses() {
    let dir = tempfile::tempdir().unwrap();
    let out = userdrop()
        .current_dir(dir.path())
        .args(["config", "--json"])
        .env_remove("USERDROP_CONFIG")
        .output()
        .unwrap();
    let effective: Value = serde_json::from_slice(&out.stdout).expect("config --json");
    let rows = readme_defaults();
    assert!(rows.len() >= 16, "{rows:?}");
    for (key, default) in rows {
        let Some(value) = effective["settings"][&key]["value"].as_str() else {
            panic!("the README documents {key}, which `config` does not show");
        };
        let value = match value {
            "(none)" => "none",
            "(inotify)" => "inotify",
            v if v.starts_with("none (") => "none",
            v if v.starts_with("(host name: ") => "host name",
            v => v,
        };
        assert_eq!(value, default, "the README's default of {key}");
    }
}

#[test]
fn the_walkthrough_files_are_in_the_checkout() {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let walkthrough = readme
        .split("## 60 seconds")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the walkthrough");
    for word in walkthrough.split_whitespace() {
        if let Some(path) = word.strip_prefix("tests/fixtures/") {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(path.trim_end_matches(['`', ',', '.']));
            assert!(path.is_file(), "{} is not in the checkout", path.display());
        }
        assert!(!word.contains("../shared"), "the walkthrough uses {word}");
    }
    // `import` writes its response beside the file: never a fixture in the checkout.
    for line in walkthrough.lines().filter(|l| l.contains(" import ")) {
        assert!(!line.contains("import tests/"), "{line}");
    }
}
