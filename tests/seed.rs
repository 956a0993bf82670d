//! Acceptance: the platform's own example request, imported by the real binary.

use assert_cmd::Command;
use std::fs;
use tempfile::TempDir;

#[test]
fn seed_request_imports_with_warning_and_exit_3() {
    let dir = TempDir::new().unwrap();
    let request = dir.path().join("seed-request.json");
    fs::copy("tests/fixtures/seed-request.json", &request).unwrap();
    let db = dir.path().join("data");

    Command::cargo_bin("userdrop")
        .unwrap()
        .args(["import", "--db"])
        .arg(&db)
        .arg(&request)
        .assert()
        .code(3);

    let text = fs::read(dir.path().join("seed-request.response.json")).unwrap();
    let response: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(response["status"], "WARNING");
    let codes: Vec<Vec<u64>> = response["response"]["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            entry["info"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["code"].as_u64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(codes, vec![vec![0], vec![0], vec![1, 2]]);
    assert_eq!(
        response["response"]["log"][2]["info"][1]["message"],
        "The email field (some@email) is set incorrectly"
    );

    let out = Command::cargo_bin("userdrop")
        .unwrap()
        .args(["get", "--db"])
        .arg(&db)
        .arg("ivan@mail.net")
        .output()
        .unwrap();
    assert!(out.status.success());
    let user: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(user["title"], "Ivanov Ivan");
    assert_eq!(user["phone"], "+380631234567");
    assert_eq!(user["discount_card"]["date_limit"], "2019-01-01");
    assert_eq!(user["source_file"], "seed-request.json");
    // No temporary response file is left behind.
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty());
}
