//! The Debian package's recipe (`[package.metadata.deb]` in Cargo.toml, the files in
//! `docs/debian/`), checked without building it: `cargo deb` and a root container are
//! for the release check in the README ("Install on a server"), not for `cargo test`.
//!
//! The man page and the shell completions are committed (cargo-deb packs files, it
//! runs no program), so a change to the command line must regenerate them:
//!
//! ```sh
//! USERDROP_BLESS=1 cargo test --test package
//! ```

use assert_cmd::cargo::cargo_bin;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn tree(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    fs::read_to_string(tree(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn manifest() -> toml::Table {
    toml::from_str(&read("Cargo.toml")).expect("Cargo.toml parses")
}

/// `[package.metadata.deb]`.
fn deb() -> toml::Table {
    manifest()["package"]["metadata"]["deb"]
        .as_table()
        .expect("[package.metadata.deb]")
        .clone()
}

/// The assets as (source, destination, mode).
fn assets() -> Vec<(String, String, String)> {
    deb()["assets"]
        .as_array()
        .expect("assets")
        .iter()
        .map(|a| {
            let a = a.as_array().expect("an asset is [source, dest, mode]");
            let s = |i: usize| a[i].as_str().expect("a string").to_owned();
            (s(0), s(1), s(2))
        })
        .collect()
}

/// The installed path of the asset taken from `source` (a destination ending in `/` is
/// a folder: the file keeps its name).
fn installed(source: &str) -> String {
    let (_, dest, _) = assets()
        .into_iter()
        .find(|(s, _, _)| s == source)
        .unwrap_or_else(|| panic!("no asset from {source}"));
    match dest.strip_suffix('/') {
        Some(dir) => format!(
            "/{dir}/{}",
            Path::new(source).file_name().unwrap().display()
        ),
        None => format!("/{dest}"),
    }
}

/// A unit's directives, comments and blank lines left out.
fn directives(unit: &str) -> Vec<&str> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .collect()
}

/// Every value of `key=` in a unit.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    directives(unit)
        .into_iter()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn every_file_the_package_takes_is_in_the_tree() {
    for (source, dest, mode) in assets() {
        assert!(
            !dest.starts_with('/'),
            "{dest}: cargo-deb wants it relative"
        );
        assert!(
            u32::from_str_radix(&mode, 8).is_ok_and(|m| m <= 0o7777),
            "{source}: mode {mode}"
        );
        if source.starts_with("target/release/") {
            // Built by `cargo deb`: it must be one of the crate's binaries.
            assert_eq!(source, "target/release/userdrop");
            continue;
        }
        assert!(tree(&source).is_file(), "asset {source} is not in the tree");
    }
    let deb = deb();
    let license = deb["license-file"].as_array().expect("license-file")[0]
        .as_str()
        .unwrap();
    assert!(tree(license).is_file(), "{license}");
    for license in ["docs/LICENSE-MIT", "docs/LICENSE-APACHE"] {
        assert!(tree(license).is_file(), "{license}");
    }
    let manifest = manifest();
    assert_eq!(
        manifest["package"]["license"].as_str(),
        Some("MIT OR Apache-2.0")
    );

    // cargo-deb's systemd support: the files it finds by name, and the maintainer
    // scripts it puts debhelper's snippets in (it refuses a script without the token).
    let scripts = deb["maintainer-scripts"].as_str().unwrap();
    let units = deb["systemd-units"]["unit-scripts"].as_str().unwrap();
    for file in ["userdrop.service", "userdrop.sysusers", "userdrop.tmpfile"] {
        assert!(tree(units).join(file).is_file(), "{units}{file}");
    }
    for script in ["postinst", "postrm"] {
        let path = tree(scripts).join(script);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("#!/bin/sh\n"), "{script}");
        assert_eq!(text.matches("#DEBHELPER#").count(), 1, "{script}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
        }
        let check = Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(
            check.status.success(),
            "sh -n {script}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
}

#[test]
fn the_package_unit_is_the_manual_one_with_the_package_binary() {
    let manual = read("docs/userdrop.service");
    let package = read(&format!(
        "{}userdrop.service",
        deb()["systemd-units"]["unit-scripts"].as_str().unwrap()
    ));
    let binary = installed("target/release/userdrop");
    assert_eq!(binary, "/usr/bin/userdrop");

    let exec = values(&package, "ExecStart");
    assert_eq!(exec.len(), 1);
    let program = exec[0].split_whitespace().next().unwrap();
    assert_eq!(program, binary, "the package unit runs another binary");
    // The manual install's binary (README, step 1) is where the other unit looks.
    assert!(
        manual.contains("ExecStart=/usr/local/bin/userdrop "),
        "docs/userdrop.service"
    );
    // From [Unit] on, comments included: the header alone says where each is installed.
    let body = |unit: &str| unit[unit.find("[Unit]").expect("a [Unit] section")..].to_owned();
    let wanted = body(&manual).replacen(
        "ExecStart=/usr/local/bin/userdrop ",
        "ExecStart=/usr/bin/userdrop ",
        1,
    );
    assert!(
        body(&package) == wanted,
        "docs/debian/userdrop.service differs from docs/userdrop.service below its header \
         in more than ExecStart's binary: change both"
    );

    // The unit reads the config where the package puts it.
    let config = installed("docs/userdrop.example.toml");
    assert!(
        exec[0].ends_with(&format!("--config {config}")),
        "{} reads another config than {config}",
        exec[0]
    );
    let readme = read("README.md");
    let version = env!("CARGO_PKG_VERSION");
    let file = format!("apt install ./userdrop_{version}_amd64.deb");
    assert!(
        readme.contains(&file),
        "the README's install command is not `{file}`"
    );
    assert_eq!(
        deb()["revision"].as_str(),
        Some(""),
        "the file name has no revision"
    );
    let changelog = read("docs/debian/changelog");
    assert!(
        changelog.starts_with(&format!("userdrop ({version}) ")),
        "docs/debian/changelog's first entry is not version {version}"
    );
}

#[test]
fn the_users_and_folders_are_the_ones_the_unit_and_the_config_name() {
    let unit = read("docs/debian/userdrop.service");
    let sysusers = read("docs/debian/userdrop.sysusers");
    let tmpfiles = read("docs/debian/userdrop.tmpfile");
    let example: toml::Table = toml::from_str(&read("docs/userdrop.example.toml")).unwrap();
    let entries = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect()
    };

    let user = values(&unit, "User")[0];
    let group = values(&unit, "Group")[0];
    let upload = values(&unit, "SupplementaryGroups")[0];
    let users = entries(&sysusers);
    let has = |kind: &str, name: &str| users.iter().any(|e| e[0] == kind && e[1] == name);
    assert!(has("u", user), "sysusers makes no user {user}");
    // `u` makes the group of the same name.
    assert_eq!(user, group);
    assert!(has("g", upload), "sysusers makes no group {upload}");
    assert!(
        users
            .iter()
            .any(|e| e[0] == "m" && e[1] == user && e[2] == upload),
        "{user} is not a member of {upload}"
    );

    let dirs = entries(&tmpfiles);
    let dir = |path: &str| -> Vec<String> {
        dirs.iter()
            .find(|e| e[1] == path)
            .unwrap_or_else(|| panic!("tmpfiles.d makes no {path}"))
            .clone()
    };
    let watch = example["watch"].as_str().unwrap();
    assert_eq!(dir(watch)[..5], ["d", watch, "2770", user, upload]);
    // The chroot above it: root's, not group-writable (sshd refuses it otherwise).
    let chroot = Path::new(watch).parent().unwrap().to_str().unwrap();
    assert_eq!(dir(chroot)[..5], ["d", chroot, "0755", "root", "root"]);
    let state = format!("/var/lib/{}", values(&unit, "StateDirectory")[0]);
    assert_eq!(dir(&state)[..5], ["d", &state, "0700", user, group]);
    assert_eq!(values(&unit, "StateDirectoryMode"), ["0700"]);
    let db = example["db"].as_str().unwrap();
    assert!(
        db.starts_with(&format!("{state}/")),
        "db {db} is outside {state}"
    );

    // postinst gives the config the daemon's group, and postrm purge removes what
    // tmpfiles.d made.
    let config = installed("docs/userdrop.example.toml");
    let postinst = read("docs/debian/postinst");
    assert!(postinst.contains(&format!("statoverride root {group} 0640 {config}")));
    let postrm = read("docs/debian/postrm");
    let removed = postrm
        .lines()
        .find_map(|l| l.trim().strip_prefix("rm -rf "))
        .expect("postrm removes folders");
    let removed: Vec<&str> = removed.split_whitespace().collect();
    for path in [state.as_str(), watch, "/etc/userdrop"] {
        assert!(removed.contains(&path), "purge leaves {path}");
    }
}

/// The committed copy of `userdrop ARGS`' output, or with USERDROP_BLESS=1 its rewrite.
fn generated(rel: &str, args: &[&str]) {
    let out = Command::new(cargo_bin("userdrop"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "userdrop {args:?}");
    let path = tree(rel);
    if std::env::var_os("USERDROP_BLESS").is_some() {
        fs::write(&path, &out.stdout).unwrap();
        return;
    }
    let committed = fs::read(&path).unwrap_or_default();
    assert!(
        committed == out.stdout,
        "{rel} is not the output of `userdrop {}`: regenerate it with \
         `USERDROP_BLESS=1 cargo test --test package`",
        args.join(" ")
    );
}

#[test]
fn the_committed_man_page_and_completions_are_current() {
    let pages = [
        ("docs/debian/userdrop.1", &["man"][..]),
        (
            "docs/debian/completions/userdrop.bash",
            &["completions", "bash"],
        ),
        ("docs/debian/completions/_userdrop", &["completions", "zsh"]),
        (
            "docs/debian/completions/userdrop.fish",
            &["completions", "fish"],
        ),
    ];
    for (rel, args) in pages {
        generated(rel, args);
    }
    // Where Debian's man, bash-completion, zsh and fish look for them.
    assert_eq!(
        installed("docs/debian/userdrop.1"),
        "/usr/share/man/man1/userdrop.1"
    );
    assert_eq!(
        installed("docs/debian/completions/userdrop.bash"),
        "/usr/share/bash-completion/completions/userdrop"
    );
    assert_eq!(
        installed("docs/debian/completions/_userdrop"),
        "/usr/share/zsh/vendor-completions/_userdrop"
    );
    assert_eq!(
        installed("docs/debian/completions/userdrop.fish"),
        "/usr/share/fish/vendor_completions.d/userdrop.fish"
    );
}
