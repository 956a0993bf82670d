//! `--lang en|uk|ru` (SPEC §3) through the built binary: `import`, `check` and the
//! daemon answer in the chosen language, and only the texts change.

mod common;

use common::{Env, userdrop};
use serde_json::{Value, json};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Long enough for a loaded 2-core machine, short enough that a hung daemon fails the
/// test instead of the whole run.
const DAEMON_LIMIT: Duration = Duration::from_secs(60);

/// Valid, bad phone, no email, a duplicate of the first (differently written), and an
/// email of the wrong type: one user for each kind of entry the task names.
fn mixed_request() -> Value {
    json!({"users": [
        {"title": "Ivanov Ivan", "email": "ivan@mail.net", "phone": "+380631234567"},
        {"title": "Petrenko Petro", "email": "petro@mail.net", "phone": "12345"},
        {"title": "No Email"},
        {"title": "Again", "email": " IVAN@mail.net "},
        {"title": "Numeric", "email": 42},
    ]})
}

/// A file whose second line breaks JSON at column 22 (a trailing comma in an object).
const BAD_JSON: &[u8] = b"{\"users\": [\n  {\"email\": \"a@b.co\",}\n]}";

impl Env {
    /// Writes a request file into the inbox.
    fn request(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.inbox().join(name);
        fs::write(&path, bytes).expect("write the request");
        path
    }

    /// `userdrop import --db DATA [extra] FILE`: the exit code and the parsed response.
    fn import(&self, path: &Path, extra: &[&str]) -> (i32, Value) {
        let out = userdrop()
            .envs(self.store_vars())
            .current_dir(self.dir.path())
            .arg("import")
            .arg("--db")
            .arg(self.db())
            .args(extra)
            .arg(path)
            .timeout(DAEMON_LIMIT)
            .output()
            .expect("run userdrop import");
        let exit = out.status.code().unwrap_or_else(|| {
            panic!(
                "import ended by a signal: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (exit, read_response(path))
    }

    /// `userdrop run --watch IN --db DATA --once [extra]` as a child process, waited
    /// for with a time limit; its exit code.
    fn run_once(&self, extra: &[&str]) -> i32 {
        let out = userdrop()
            .envs(self.store_vars())
            .current_dir(self.dir.path())
            .arg("run")
            .arg("--watch")
            .arg(self.inbox())
            .arg("--db")
            .arg(self.db())
            .args(["--once", "--settle", "400"])
            .args(extra)
            .timeout(DAEMON_LIMIT)
            .output()
            .expect("run the daemon");
        out.status.code().unwrap_or_else(|| {
            panic!(
                "the daemon did not exit by itself within {DAEMON_LIMIT:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Whether `userdrop get EMAIL` finds the user.
    fn has_user(&self, email: &str) -> bool {
        let out = userdrop()
            .envs(self.store_vars())
            .current_dir(self.dir.path())
            .args(["get", "--db"])
            .arg(self.db())
            .arg(email)
            .timeout(DAEMON_LIMIT)
            .output()
            .expect("run userdrop get");
        match out.status.code() {
            Some(0) => true,
            Some(1) => false,
            other => panic!("get exited with {other:?}"),
        }
    }
}

fn response_path(request: &Path) -> PathBuf {
    let name = request
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a UTF-8 file name");
    let stem = name.strip_suffix(".json").expect("a .json request");
    request.with_file_name(format!("{stem}.response.json"))
}

fn read_response(request: &Path) -> Value {
    let path = response_path(request);
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("no response {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The response with every `message` text replaced by null: what must not depend on
/// the language.
fn skeleton(response: &Value) -> Value {
    match response {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if k == "message" {
                        assert!(v.is_string(), "message is not a string: {v}");
                        Value::Null
                    } else {
                        skeleton(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(skeleton).collect()),
        other => other.clone(),
    }
}

/// `item` of every `info` entry, log entry by log entry.
fn per_entry<T>(response: &Value, item: impl Fn(&Value) -> T) -> Vec<Vec<T>> {
    response["response"]["log"]
        .as_array()
        .unwrap_or_else(|| panic!("no log array: {response}"))
        .iter()
        .map(|entry| {
            entry["info"]
                .as_array()
                .unwrap_or_else(|| panic!("no info array: {entry}"))
                .iter()
                .map(&item)
                .collect()
        })
        .collect()
}

/// The message texts of each log entry.
fn texts(response: &Value) -> Vec<Vec<String>> {
    per_entry(response, |e| {
        e["message"].as_str().expect("a message").to_owned()
    })
}

fn codes(response: &Value) -> Vec<Vec<u64>> {
    per_entry(response, |e| e["code"].as_u64().expect("a numeric code"))
}

/// `response.message` of an `ERROR` response, after checking its shape.
fn error_message(response: &Value) -> &str {
    assert_eq!(response["status"], "ERROR", "{response}");
    assert_eq!(response["response"]["log"], json!([]), "{response}");
    response["response"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no response.message: {response}"))
}

/// Imports the mixed request in `lang` into a fresh store.
fn import_mixed(lang: &str) -> (i32, Value) {
    let env = Env::new();
    let path = env.request("mixed.json", mixed_request().to_string().as_bytes());
    env.import(&path, &["--lang", lang])
}

const MIXED_EN: [&str; 5] = [
    "User ivan@mail.net added successfully",
    "The phone field (12345) is set incorrectly: expected + and 7 to 15 digits, with the country code",
    "Mandatory field email is missing",
    "The email ivan@mail.net is given more than once in this file; it was first given by user 0",
    "The email field must be a string, not a number",
];

const MIXED_UK: [&str; 5] = [
    "Користувача ivan@mail.net успішно додано",
    "Поле phone (12345) заповнено неправильно: очікується + і від 7 до 15 цифр разом із кодом країни",
    "Відсутнє обов'язкове поле email",
    "Email ivan@mail.net вказано в цьому файлі більше одного разу; уперше — у користувача 0",
    "Поле email має бути рядком, а не числом",
];

const MIXED_RU: [&str; 5] = [
    "Пользователь ivan@mail.net успешно добавлен",
    "Поле phone (12345) заполнено неверно: ожидается + и от 7 до 15 цифр вместе с кодом страны",
    "Отсутствует обязательное поле email",
    "Email ivan@mail.net указан в этом файле более одного раза; впервые — у пользователя 0",
    "Поле email должно быть строкой, а не числом",
];

fn one_each(texts: &[&str]) -> Vec<Vec<String>> {
    texts.iter().map(|t| vec![(*t).to_owned()]).collect()
}

#[test]
fn import_without_lang_and_with_lang_en_is_english() {
    let env = Env::new();
    let path = env.request("mixed.json", mixed_request().to_string().as_bytes());
    let (exit, default) = env.import(&path, &[]);
    assert_eq!(exit, 3);
    assert_eq!(default["status"], "WARNING");
    assert_eq!(texts(&default), one_each(&MIXED_EN));
    let (exit, en) = import_mixed("en");
    assert_eq!(exit, 3);
    assert_eq!(texts(&en), one_each(&MIXED_EN));
}

/// `import --lang LANG` of the mixed request gives `expected`, with the same exit
/// code, codes and structure as in English.
fn assert_import_translates(lang: &str, expected: &[&str]) {
    let (en_exit, en) = import_mixed("en");
    let (exit, translated) = import_mixed(lang);
    assert_eq!(exit, en_exit);
    assert_eq!(translated["status"], "WARNING");
    assert_eq!(
        codes(&translated),
        [vec![0], vec![2], vec![1], vec![2], vec![2]]
    );
    assert_eq!(skeleton(&translated), skeleton(&en));
    assert_eq!(texts(&translated), one_each(expected));
}

#[test]
fn import_in_uk_translates_every_text_and_keeps_codes_and_structure() {
    assert_import_translates("uk", &MIXED_UK);
}

#[test]
fn import_in_ru_translates_every_text_and_keeps_codes_and_structure() {
    assert_import_translates("ru", &MIXED_RU);
}

/// The language is a property of the response, not of the store: the same store
/// answers later files in other languages, including for unchanged and updated users.
#[test]
fn unchanged_and_updated_users_in_uk_and_ru() {
    let env = Env::new();
    let first = env.request("first.json", mixed_request().to_string().as_bytes());
    assert_eq!(env.import(&first, &["--lang", "en"]).0, 3);

    let same = json!({"users": [
        {"title": "Ivanov Ivan", "email": "ivan@mail.net", "phone": "+380631234567"},
    ]});
    let same = env.request("same.json", same.to_string().as_bytes());
    let (exit, uk) = env.import(&same, &["--lang", "uk"]);
    assert_eq!((exit, uk["status"].as_str()), (0, Some("OK")), "{uk}");
    assert_eq!(
        texts(&uk),
        one_each(&["Дані користувача ivan@mail.net уже актуальні, нічого не змінено"])
    );

    let moved =
        json!({"users": [{"title": "Ivanov Ivan", "email": "ivan@mail.net", "city": "Kyiv"}]});
    let moved = env.request("moved.json", moved.to_string().as_bytes());
    let (exit, ru) = env.import(&moved, &["--lang", "ru"]);
    assert_eq!((exit, ru["status"].as_str()), (0, Some("OK")), "{ru}");
    assert_eq!(
        texts(&ru),
        one_each(&["Пользователь ivan@mail.net успешно обновлен"])
    );
}

#[test]
fn daemon_once_answers_in_uk() {
    let env = Env::new();
    let mixed = env.request("mixed.json", mixed_request().to_string().as_bytes());
    let bad = env.request("bad.json", BAD_JSON);
    assert_eq!(
        env.run_once(&["--lang", "uk"]),
        3,
        "--once with a WARNING file"
    );
    let response = read_response(&mixed);
    assert_eq!(response["status"], "WARNING");
    assert_eq!(texts(&response), one_each(&MIXED_UK));
    assert_eq!(skeleton(&response), skeleton(&import_mixed("en").1));
    assert_eq!(
        error_message(&read_response(&bad)),
        "Некоректний JSON у рядку 2, стовпці 22: ключ має бути рядком"
    );
    // The language changed the words only: the valid user is stored.
    assert!(env.has_user("ivan@mail.net"));
    assert!(!env.has_user("petro@mail.net"));
}

#[test]
fn daemon_once_answers_in_ru() {
    let env = Env::new();
    let mixed = env.request("mixed.json", mixed_request().to_string().as_bytes());
    assert_eq!(env.run_once(&["--lang", "ru"]), 3);
    let response = read_response(&mixed);
    assert_eq!(response["status"], "WARNING");
    assert_eq!(texts(&response), one_each(&MIXED_RU));
}

#[test]
fn bad_json_in_uk_names_line_and_column() {
    let env = Env::new();
    let path = env.request("bad.json", BAD_JSON);
    let (exit, en) = env.import(&path, &[]);
    assert_eq!(exit, 3);
    assert_eq!(
        error_message(&en),
        "Invalid JSON at line 2, column 22: key must be a string"
    );
    let (exit, uk) = env.import(&path, &["--lang", "uk"]);
    assert_eq!(exit, 3);
    assert_eq!(
        error_message(&uk),
        "Некоректний JSON у рядку 2, стовпці 22: ключ має бути рядком"
    );
    assert_eq!(skeleton(&uk), skeleton(&en));
    let (exit, ru) = env.import(&path, &["--lang", "ru"]);
    assert_eq!(exit, 3);
    assert_eq!(
        error_message(&ru),
        "Некорректный JSON в строке 2, столбце 22: ключ должен быть строкой"
    );
}

#[test]
fn a_request_of_the_wrong_shape_is_explained_in_uk_and_ru() {
    let env = Env::new();
    let path = env.request("shape.json", br#"{"users": {"email": "a@b.co"}}"#);
    let (_, en) = env.import(&path, &[]);
    assert_eq!(
        error_message(&en),
        "The request is not a users/import request (line 1, column 11): \
         invalid type: map, expected \"users\" to be an array"
    );
    let (_, uk) = env.import(&path, &["--lang", "uk"]);
    assert_eq!(
        error_message(&uk),
        "Це не запит users/import (рядок 1, стовпець 11): \
         недопустимий тип: об'єкт; очікувалося: `users` має бути масивом"
    );
    let (_, ru) = env.import(&path, &["--lang", "ru"]);
    assert_eq!(
        error_message(&ru),
        "Это не запрос users/import (строка 1, столбец 11): \
         недопустимый тип: объект; ожидалось: `users` должен быть массивом"
    );
}

#[test]
fn not_utf8_in_ru_names_line_and_column() {
    let env = Env::new();
    let path = env.request(
        "latin1.json",
        b"{\"users\": [\n  {\"title\": \"Caf\xe9\"}\n]}",
    );
    let (exit, ru) = env.import(&path, &["--lang", "ru"]);
    assert_eq!(exit, 3);
    let message = error_message(&ru);
    assert!(
        message.starts_with(
            "Файл не является корректным текстом в кодировке UTF-8: недопустимый байт в строке 2, столбце "
        ),
        "{message}"
    );
}

#[test]
fn wrong_and_missing_token_in_ru_begin_with_authorization_failed() {
    let env = Env::new();
    let wrong = json!({"token": "guess", "users": [{"title": "T", "email": "t@mail.net"}]});
    let wrong = env.request("wrong.json", wrong.to_string().as_bytes());
    let (exit, ru) = env.import(&wrong, &["--lang", "ru", "--token", "s3cret"]);
    assert_eq!(exit, 3);
    let message = error_message(&ru);
    assert!(message.starts_with("Authorization failed"), "{message}");
    assert_eq!(message, "Authorization failed: токен не принят");
    assert!(!message.contains("s3cret") && !message.contains("guess"));

    let missing = json!({"users": [{"title": "T", "email": "t@mail.net"}]});
    let missing = env.request("missing.json", missing.to_string().as_bytes());
    let (exit, uk) = env.import(&missing, &["--lang", "uk", "--token", "s3cret"]);
    assert_eq!(exit, 3);
    assert_eq!(
        error_message(&uk),
        "Authorization failed: у запиті немає токена"
    );
    assert!(
        !env.has_user("t@mail.net"),
        "a rejected file applies nothing"
    );
}

#[test]
fn too_large_in_uk_and_ru_keeps_the_flag_name_and_counts_bytes() {
    let env = Env::new();
    // Padded to a size whose noun form differs from the limit's: 1022 байти, 1001 байт.
    let mut body = mixed_request().to_string().into_bytes();
    assert!(body.len() < 1022);
    body.resize(1022, b' ');
    let path = env.request("big.json", &body);
    let (exit, uk) = env.import(&path, &["--lang", "uk", "--max-file-size", "1001"]);
    assert_eq!(exit, 3);
    assert_eq!(
        error_message(&uk),
        "Файл завеликий: 1022 байти, обмеження — 1001 байт (--max-file-size)"
    );
    let (exit, ru) = env.import(&path, &["--lang", "ru", "--max-file-size", "1001"]);
    assert_eq!(exit, 3);
    assert_eq!(
        error_message(&ru),
        "Файл слишком большой: 1022 байта, ограничение — 1001 байт (--max-file-size)"
    );
}

#[test]
fn check_prints_responses_in_the_chosen_language() {
    let env = Env::new();
    let path = env.request("mixed.json", mixed_request().to_string().as_bytes());
    let out = userdrop()
        .current_dir(env.dir.path())
        .args(["check", "--lang", "ru", "--db"])
        .arg(env.db())
        .arg(&path)
        .timeout(DAEMON_LIMIT)
        .output()
        .expect("run userdrop check");
    assert_eq!(out.status.code(), Some(3));
    let printed: Value = serde_json::from_slice(&out.stdout).expect("check prints JSON");
    assert_eq!(texts(&printed), one_each(&MIXED_RU));
    assert!(!response_path(&path).exists(), "check writes no file");
}

#[test]
fn help_lists_the_languages_and_others_are_refused() {
    let out = userdrop()
        .arg("--help")
        .output()
        .expect("run userdrop --help");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).expect("UTF-8 help");
    assert!(help.contains("--lang <LANG>"), "{help}");
    for line in [
        "- en: English",
        "- uk: Ukrainian (українська)",
        "- ru: Russian (русский)",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
    for command in ["import", "check", "run"] {
        let out = userdrop()
            .args([command, "-h"])
            .output()
            .expect("run userdrop COMMAND -h");
        let help = String::from_utf8(out.stdout).expect("UTF-8 help");
        let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("[possible values: en, uk, ru]"),
            "{command}: {help}"
        );
    }
    let env = Env::new();
    let path = env.request("mixed.json", mixed_request().to_string().as_bytes());
    let out = userdrop()
        .current_dir(env.dir.path())
        .args(["import", "--lang", "de", "--db"])
        .arg(env.db())
        .arg(&path)
        .output()
        .expect("run userdrop import --lang de");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown language is bad usage"
    );
    assert!(!response_path(&path).exists());
}
