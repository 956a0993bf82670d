//! The PostgreSQL engine (`userdrop::pg`) on a real server, one cluster per test
//! (tests/common/pg.rs): every operation's contract, two daemons updating one email,
//! the instance lock, and a kill -9 of the server. These call the library directly;
//! the binary is not wired to PostgreSQL yet.

mod common;

use chrono::Utc;
use common::pg::Cluster;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use userdrop::messages::Message;
use userdrop::model::{Email, Meta, Status, StoredUser, UserData};
use userdrop::store::pg::{PgError, PgOptions, PgStore};
use userdrop::store::{Counts, FileRecord, Item, Progress, Restored, Step, Totals};

/// A cluster and a fresh database on it; `None` (skip) without PostgreSQL.
fn setup() -> Option<(Cluster, String)> {
    let cluster = Cluster::start()?;
    let url = cluster.database("shop");
    Some((cluster, url))
}

fn writer(url: &str, instance: &str) -> PgStore {
    PgStore::open(url, PgOptions::writer(instance)).expect("the store opens")
}

fn email(s: &str) -> Email {
    Email::parse(s).expect("a valid email")
}

fn data(email: &str, title: &str) -> UserData {
    serde_json::from_value(serde_json::json!({"title": title, "email": email})).expect("user data")
}

fn stored(data: UserData) -> StoredUser {
    let now = Utc::now();
    StoredUser {
        data,
        meta: Meta {
            created_at: now,
            updated_at: now,
            source_file: "test.json".into(),
        },
    }
}

fn user(email: &str, title: &str) -> StoredUser {
    stored(data(email, title))
}

fn progress(next_index: u64, log_len: u64, counts: Counts) -> Progress {
    Progress {
        hash: "h".into(),
        next_index,
        counts,
        log_len,
        identity: None,
        types: Default::default(),
    }
}

fn record(path: &Path, users: u64, counts: Counts, status: Status) -> FileRecord {
    FileRecord {
        path: path.to_path_buf(),
        hash: "h".into(),
        status,
        message: None,
        users,
        counts,
        finished_at: Utc::now(),
        log_len: 0,
        identity: None,
    }
}

fn added(users: &[StoredUser]) -> Vec<Vec<Message>> {
    users
        .iter()
        .map(|u| {
            vec![Message::Added {
                email: u.data.email.as_str().into(),
            }]
        })
        .collect()
}

fn counts(added: u64) -> Counts {
    Counts {
        added,
        ..Counts::default()
    }
}

/// A step that writes `users` and leaves the file in progress.
fn mid_step<'a>(path: &'a Path, users: Vec<StoredUser>, next: u64, log_len: u64) -> Step<'a> {
    Step {
        path,
        log: added(&users),
        progress: progress(next, log_len, counts(next)),
        writes: users,
        done: None,
        hold_below: 0,
    }
}

/// The last step of a file that writes `users`.
fn last_step<'a>(path: &'a Path, users: Vec<StoredUser>, total: u64, log_len: u64) -> Step<'a> {
    Step {
        path,
        log: added(&users),
        progress: progress(total, log_len, counts(total)),
        writes: users,
        done: Some(record(path, total, counts(total), Status::Ok)),
        hold_below: 0,
    }
}

/// Waits until a session of `application_name` waits on a lock; its pid.
fn blocked_session(admin: &mut postgres::Client, application: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let row = admin
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                &[&application],
            )
            .expect("pg_stat_activity");
        if let Some(row) = row {
            return row.get(0);
        }
        assert!(Instant::now() < deadline, "{application} never blocked");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_writer_creates_the_versioned_schema_and_a_reader_creates_nothing() {
    let Some((cluster, url)) = setup() else {
        return;
    };
    let e = PgStore::open(&url, PgOptions::reader("east")).expect_err("no store yet");
    assert!(matches!(e, PgError::NoStore(_)), "{e}");
    let mut admin = cluster.client("shop");
    let made: bool = admin
        .query_one("SELECT to_regnamespace('userdrop') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!made, "a reader created the schema");

    drop(writer(&url, "east"));
    let version: i32 = admin
        .query_one("SELECT version FROM userdrop.format", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, userdrop::store::pg::SCHEMA_VERSION);
    // A second writer of another instance finds it made and checks it.
    let reader = PgStore::open(&url, PgOptions::reader("east")).expect("reader opens");
    assert_eq!(reader.user_count().unwrap(), 0);

    admin
        .batch_execute("UPDATE userdrop.format SET version = 99")
        .unwrap();
    let e = PgStore::open(&url, PgOptions::writer("west"))
        .expect_err("a future version is refused")
        .to_string();
    assert!(
        e.contains("format version 99") && e.contains("reads version 1"),
        "{e}"
    );
    assert!(
        e.contains("userdrop backup") && e.contains("userdrop restore"),
        "{e}"
    );
}

#[test]
fn steps_commit_users_progress_outbox_history_and_logs() {
    let Some((_cluster, url)) = setup() else {
        return;
    };
    let store = writer(&url, "east");
    let path = PathBuf::from("/srv/in/big.json");
    let first = vec![user("b@x.co", "B"), user("a@x.co", "A")];
    let len = store
        .commit_with(&[email("b@x.co"), email("a@x.co")], |locked| {
            assert!(locked.get(&email("a@x.co")).is_none());
            Ok::<_, PgError>(mid_step(&path, first.clone(), 2, 0))
        })
        .unwrap();
    assert_eq!(len, 1, "one log chunk committed");
    let p = store.progress(&path).unwrap().expect("progress stored");
    assert_eq!((p.next_index, p.log_len), (2, 1));
    assert_eq!(store.interrupted().unwrap(), vec![path.clone()]);
    assert!(store.outbox().unwrap().is_empty());
    let emails: Vec<String> = store
        .users()
        .map(|u| u.unwrap().data.email.as_str().to_owned())
        .collect();
    assert_eq!(emails, ["a@x.co", "b@x.co"], "sorted by email");
    assert_eq!(
        store.user(&email("a@x.co")).unwrap(),
        Some(first[1].clone())
    );

    let second = vec![user("c@x.co", "C")];
    let mut renamed = store.user(&email("a@x.co")).unwrap().unwrap();
    renamed.data.title = "A2".into();
    let len = store
        .commit_with(&[email("c@x.co"), email("a@x.co")], |locked| {
            let a = locked.get(&email("a@x.co")).expect("a is stored");
            assert_eq!(
                a.data_hash(),
                Some(userdrop::store::pg::data_hash(&first[1].data).unwrap())
            );
            assert_eq!(a.decode().unwrap(), first[1]);
            let mut writes = second.clone();
            writes.push(renamed.clone());
            Ok::<_, PgError>(last_step(&path, writes, 4, 1))
        })
        .unwrap();
    assert_eq!(len, 2);
    assert!(store.progress(&path).unwrap().is_none(), "progress gone");
    assert!(store.interrupted().unwrap().is_empty());
    let entry = store.outbox_entry(&path).unwrap().expect("in the outbox");
    assert_eq!(entry.log_len, 2);
    assert_eq!(store.outbox().unwrap(), vec![entry.clone()]);
    assert_eq!(store.files().unwrap(), vec![entry.clone()], "history");
    let chunks: Vec<Vec<Vec<Message>>> = store.log_chunks(&entry).map(|c| c.unwrap()).collect();
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0], added(&first), "the steps' logs in request order");
    assert_eq!(chunks[1].len(), 2);
    assert_eq!(
        store.user(&email("a@x.co")).unwrap().unwrap().data.title,
        "A2"
    );
    assert_eq!(store.user_count().unwrap(), 3);
    store.flush().unwrap();

    // Another instance's request of the same path is another request.
    let west = writer(&url, "west");
    assert!(west.outbox_entry(&path).unwrap().is_none());
    assert!(west.files().unwrap().is_empty());

    store.clear_outboxes([path.as_path()]).unwrap();
    assert!(store.outbox().unwrap().is_empty());
    assert_eq!(store.log_chunks(&entry).count(), 0, "logs cleared");
    assert_eq!(store.files().unwrap().len(), 1, "history kept");

    // A file that starts over forgets what an older run logged under its name.
    store
        .commit_with(&[], |_| Ok::<_, PgError>(mid_step(&path, vec![], 1, 0)))
        .unwrap();
    store.discard_progress(&path).unwrap();
    assert!(store.progress(&path).unwrap().is_none());
}

#[test]
fn a_step_whose_transaction_fails_leaves_nothing() {
    let Some((cluster, url)) = setup() else {
        return;
    };
    let store = writer(&url, "east");
    let totals_before = store.totals().unwrap();
    // Another session holds the totals row: the last step blocks there, after it
    // wrote its users, log and outbox entry, and is then cut off.
    let mut holder = cluster.client("shop");
    let mut tx = holder.transaction().unwrap();
    tx.query("SELECT * FROM userdrop.totals FOR UPDATE", &[])
        .unwrap();
    let path = PathBuf::from("/srv/in/a.json");
    let committing = {
        let store = store.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            store.commit_with(&[email("a@x.co")], |_| {
                Ok::<_, PgError>(last_step(&path, vec![user("a@x.co", "A")], 1, 0))
            })
        })
    };
    let mut admin = cluster.admin();
    let pid = blocked_session(&mut admin, "userdrop east");
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    let e = committing.join().unwrap().expect_err("the step failed");
    assert!(matches!(e, PgError::Lost { .. }), "{e}");
    tx.rollback().unwrap();

    // The next operation connects again.
    assert!(store.user(&email("a@x.co")).unwrap().is_none(), "no user");
    assert!(
        store.outbox_entry(&path).unwrap().is_none(),
        "no outbox entry"
    );
    assert!(store.files().unwrap().is_empty(), "no history");
    assert!(store.progress(&path).unwrap().is_none());
    assert_eq!(store.totals().unwrap(), totals_before);
    let mut shop = cluster.client("shop");
    let logs: i64 = shop
        .query_one("SELECT count(*) FROM userdrop.logs", &[])
        .unwrap()
        .get(0);
    assert_eq!(logs, 0, "no log chunk");

    // A closure that fails writes nothing either, and its error comes back as it is.
    let e = store
        .commit_with(&[email("a@x.co")], |_| -> Result<Step<'_>, PgError> {
            Err(PgError::Unlocked("the closure's own".into()))
        })
        .expect_err("the closure's error");
    assert!(e.to_string().contains("the closure's own"));
    // A step that writes a user it did not lock is refused whole.
    let e = store
        .commit_with(&[email("a@x.co")], |_| {
            Ok::<_, PgError>(last_step(&path, vec![user("b@x.co", "B")], 1, 0))
        })
        .expect_err("refused");
    assert!(matches!(e, PgError::Unlocked(_)), "{e}");
    assert_eq!(store.user_count().unwrap(), 0);
    assert!(store.outbox().unwrap().is_empty());
}

#[test]
fn totals_only_rise_and_count_every_file_of_every_instance() {
    let Some((_cluster, url)) = setup() else {
        return;
    };
    let east = writer(&url, "east");
    let west = writer(&url, "west");
    let mut last = east.totals().unwrap();
    assert_eq!(last, Totals::default());
    for n in 0..6u64 {
        let store = if n % 2 == 0 { &east } else { &west };
        // The same request name every time: each run counts.
        let path = Path::new("/srv/in/nightly.json");
        let status = if n == 3 { Status::Error } else { Status::Ok };
        let email_n = format!("u{n}@x.co");
        let users = if status == Status::Error {
            vec![]
        } else {
            vec![user(&email_n, "U")]
        };
        let done = record(path, users.len() as u64, counts(users.len() as u64), status);
        store
            .commit_with(&[email(&email_n)], |_| {
                Ok::<_, PgError>(Step {
                    path,
                    log: added(&users),
                    progress: progress(1, 0, counts(1)),
                    writes: users.clone(),
                    done: Some(done.clone()),
                    hold_below: 0,
                })
            })
            .unwrap();
        let now = west.totals().unwrap();
        for (a, b) in now.files.iter().zip(last.files.iter()) {
            assert!(a >= b, "a file count fell: {now:?} after {last:?}");
        }
        assert!(now.users_applied >= last.users_applied);
        assert!(now.last_file >= last.last_file);
        last = now;
    }
    assert_eq!(last.files, [5, 0, 1]);
    assert_eq!(last.users_applied, 5);
    assert!(last.last_success.is_some());
}

/// A user's stored data with `change` applied: the merge a step makes.
fn merged(
    locked: &userdrop::store::pg::Locked,
    e: &Email,
    change: impl Fn(&mut UserData),
) -> StoredUser {
    let mut d = match locked.get(e) {
        Some(raw) => raw.decode().expect("decodes").data,
        None => data(e.as_str(), "T"),
    };
    change(&mut d);
    stored(d)
}

#[test]
fn two_daemons_updating_one_email_lose_no_update() {
    let Some((_cluster, url)) = setup() else {
        return;
    };
    let east = writer(&url, "east");
    let west = writer(&url, "west");
    let shared = email("shared@x.co");
    // Stored already: its row is what the steps lock (a new email is the next test).
    east.commit(last_step(
        Path::new("/srv/east/0.json"),
        vec![user("shared@x.co", "S")],
        1,
        0,
    ))
    .unwrap();

    // West's merge must wait for east's step and see its city.
    let (started, wait) = std::sync::mpsc::channel();
    let first = {
        let east = east.clone();
        let shared = shared.clone();
        std::thread::spawn(move || {
            let path = Path::new("/srv/east/1.json");
            east.commit_with(std::slice::from_ref(&shared), |locked| {
                let u = merged(locked, &shared, |d| d.city = Some("Kyiv".into()));
                let _ = started.send(());
                std::thread::sleep(Duration::from_millis(300));
                Ok::<_, PgError>(last_step(path, vec![u], 1, 0))
            })
        })
    };
    wait.recv().unwrap();
    let path = Path::new("/srv/west/1.json");
    let mut seen_city = None;
    west.commit_with(std::slice::from_ref(&shared), |locked| {
        let u = merged(locked, &shared, |d| d.note = Some("west".into()));
        seen_city = u.data.city.clone();
        Ok::<_, PgError>(last_step(path, vec![u], 1, 0))
    })
    .unwrap();
    first.join().unwrap().unwrap();
    assert_eq!(
        seen_city.as_deref(),
        Some("Kyiv"),
        "west merged over east's commit"
    );
    let both = west.user(&shared).unwrap().unwrap().data;
    assert_eq!(both.city.as_deref(), Some("Kyiv"));
    assert_eq!(both.note.as_deref(), Some("west"));

    // Many steps at once, each a read-modify-write of one counter both change, and
    // of a field each changes alone.
    const STEPS: u64 = 60;
    let run = |store: PgStore, side: &'static str| {
        let shared = shared.clone();
        std::thread::spawn(move || {
            let path = PathBuf::from(format!("/srv/{side}/many.json"));
            for i in 0..STEPS {
                store
                    .commit_with(std::slice::from_ref(&shared), |locked| {
                        let u = merged(locked, &shared, |d| {
                            d.customer_group_id = Some(d.customer_group_id.unwrap_or(0) + 1);
                            let mine = Some(format!("{side} {i}"));
                            if side == "east" {
                                d.city = mine;
                            } else {
                                d.note = mine;
                            }
                        });
                        Ok::<_, PgError>(mid_step(&path, vec![u], i + 1, i))
                    })
                    .expect("step committed");
            }
        })
    };
    let a = run(east.clone(), "east");
    let b = run(west.clone(), "west");
    a.join().unwrap();
    b.join().unwrap();
    let end = east.user(&shared).unwrap().unwrap().data;
    assert_eq!(end.customer_group_id, Some(2 * STEPS), "an update was lost");
    assert_eq!(end.city, Some(format!("east {}", STEPS - 1)));
    assert_eq!(end.note, Some(format!("west {}", STEPS - 1)));
}

#[test]
fn a_new_email_inserted_by_two_daemons_at_once_keeps_both_changes() {
    let Some((_cluster, url)) = setup() else {
        return;
    };
    let east = writer(&url, "east");
    let west = writer(&url, "west");
    let fresh = email("new@x.co");
    let both_read = Arc::new(Barrier::new(2));
    let calls = Arc::new(AtomicUsize::new(0));
    let run = |store: PgStore, side: &'static str| {
        let (fresh, both_read, calls) = (fresh.clone(), both_read.clone(), calls.clone());
        std::thread::spawn(move || {
            let path = PathBuf::from(format!("/srv/{side}/new.json"));
            let mut mine = 0;
            store
                .commit_with(std::slice::from_ref(&fresh), |locked| {
                    mine += 1;
                    calls.fetch_add(1, Ordering::SeqCst);
                    if mine == 1 {
                        assert!(locked.get(&fresh).is_none());
                        // Both have seen it absent: neither holds a row lock.
                        both_read.wait();
                    }
                    let u = merged(locked, &fresh, |d| {
                        if side == "east" {
                            d.city = Some("Kyiv".into());
                        } else {
                            d.note = Some("west".into());
                        }
                    });
                    Ok::<_, PgError>(last_step(&path, vec![u], 1, 0))
                })
                .expect("committed");
        })
    };
    let a = run(east.clone(), "east");
    let b = run(west, "west");
    a.join().unwrap();
    b.join().unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3, "the loser merged again");
    let end = east.user(&fresh).unwrap().unwrap().data;
    assert_eq!(end.city.as_deref(), Some("Kyiv"));
    assert_eq!(end.note.as_deref(), Some("west"));
}

#[test]
fn a_second_daemon_of_one_instance_is_refused_naming_both() {
    let Some((_cluster, url)) = setup() else {
        return;
    };
    let first = writer(&url, "east");
    let e = PgStore::open(&url, PgOptions::writer("east")).expect_err("refused");
    assert!(matches!(e, PgError::InstanceBusy { .. }), "{e}");
    let text = e.to_string();
    let pid = format!("pid {}", std::process::id());
    assert!(text.contains("\"east\" is already running"), "{text}");
    assert_eq!(text.matches(&pid).count(), 2, "both named: {text}");
    assert!(text.contains(first.name()), "{text}");

    // Other instances, and readers of this one, are not held up.
    let _west = writer(&url, "west");
    let reader = PgStore::open(&url, PgOptions::reader("east")).expect("a reader opens");
    assert_eq!(reader.user_count().unwrap(), 0);

    // The lock goes with the session, however it ends.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match PgStore::open(&url, PgOptions::writer("east")) {
            Ok(_) => break,
            Err(PgError::InstanceBusy { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_snapshot_is_one_moment_while_another_connection_commits() {
    let Some((_cluster, url)) = setup() else {
        return;
    };
    let store = writer(&url, "east");
    let path = Path::new("/srv/in/base.json");
    let base: Vec<StoredUser> = (0..2500)
        .map(|i| user(&format!("u{i:05}@x.co"), "U"))
        .collect();
    store
        .commit(mid_step(path, base[..1200].to_vec(), 1200, 0))
        .unwrap();
    store
        .commit(last_step(path, base[1200..].to_vec(), 2500, 1))
        .unwrap();
    let before = store.totals().unwrap();

    let writer = store.clone();
    let mut users = Vec::new();
    let mut files = Vec::new();
    let mut totals = None;
    let mut committed = false;
    store
        .snapshot(|item| -> Result<(), PgError> {
            match item {
                Item::User(u) => {
                    if !committed {
                        // Mid-scan: a new user, an update of one not read yet, an
                        // erasure, another file and its totals.
                        committed = true;
                        let later = Path::new("/srv/in/later.json");
                        let mut changed = base[2000].clone();
                        changed.data.title = "changed".into();
                        writer
                            .commit(last_step(later, vec![user("a@x.co", "A"), changed], 2, 0))
                            .unwrap();
                        writer.delete(&[email("u02400@x.co")]).unwrap();
                    }
                    users.push(u.clone());
                }
                Item::File(f, _) => files.push(f.clone()),
                Item::Totals(t) => totals = Some(t.clone()),
            }
            Ok(())
        })
        .unwrap();
    assert!(committed);
    assert_eq!(users, base, "the users of the moment the snapshot began");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, path);
    assert_eq!(totals, Some(before));
    assert_eq!(store.user_count().unwrap(), 2500, "+1 added, -1 erased");
    assert_eq!(store.files().unwrap().len(), 2);
}

#[test]
fn delete_erases_the_stored_users_and_says_which() {
    let Some((_cluster, url)) = setup() else {
        return;
    };
    let store = writer(&url, "east");
    let path = Path::new("/srv/in/a.json");
    store
        .commit(last_step(
            path,
            vec![
                user("a@x.co", "A"),
                user("b@x.co", "B"),
                user("c@x.co", "C"),
            ],
            3,
            0,
        ))
        .unwrap();
    let erased = store
        .delete(&[
            email("c@x.co"),
            email("none@x.co"),
            email("a@x.co"),
            email("c@x.co"),
        ])
        .unwrap();
    assert_eq!(erased, vec![email("c@x.co"), email("a@x.co")]);
    assert_eq!(store.user_count().unwrap(), 1);
    assert!(store.user(&email("a@x.co")).unwrap().is_none());
    assert!(store.delete(&[email("a@x.co")]).unwrap().is_empty());
    // A reader may erase (the right to erasure works beside the daemon).
    let reader = PgStore::open(&url, PgOptions::reader("admin")).unwrap();
    assert_eq!(
        reader.delete(&[email("b@x.co")]).unwrap(),
        vec![email("b@x.co")]
    );
}

#[test]
fn a_restore_goes_into_an_empty_store_only_and_starts_over_when_cut_short() {
    let Some((cluster, url)) = setup() else {
        return;
    };
    let full = writer(&url, "east");
    full.commit(last_step(
        Path::new("/a.json"),
        vec![user("a@x.co", "A")],
        1,
        0,
    ))
    .unwrap();
    let e = full.begin_restore().expect_err("not empty");
    assert!(matches!(e, PgError::NotEmpty(_)), "{e}");

    let mut snapshot = (Vec::new(), Vec::new(), None);
    full.snapshot(|item| -> Result<(), PgError> {
        match item {
            Item::User(u) => snapshot.0.push(u.clone()),
            Item::File(f, instance) => snapshot.1.push(Restored {
                record: f.clone(),
                instance: instance.map(str::to_owned),
            }),
            Item::Totals(t) => snapshot.2 = Some(t.clone()),
        }
        Ok(())
    })
    .unwrap();
    let (users, files, totals) = (snapshot.0, snapshot.1, snapshot.2.unwrap());

    let empty = cluster.database("copy");
    let restoring = PgOptions {
        restoring: true,
        ..PgOptions::writer("east")
    };
    let target = PgStore::open(&empty, restoring.clone()).unwrap();
    target.begin_restore().unwrap();
    target.restore_batch(&users, &[]).unwrap();
    drop(target);
    // Cut short: refused until a restore starts it over.
    let e =
        PgStore::open(&empty, PgOptions::reader("east")).expect_err("half a restore is refused");
    assert!(matches!(e, PgError::RestoreUnfinished(_)), "{e}");

    let target = PgStore::open(&empty, restoring).unwrap();
    target
        .restore_batch(&[user("stale@x.co", "S")], &[])
        .unwrap();
    target.begin_restore().unwrap();
    assert_eq!(target.user_count().unwrap(), 0, "started over");
    target.restore_batch(&users, &files).unwrap();
    target.finish_restore(&totals).unwrap();
    drop(target);

    let back = writer(&empty, "east");
    let again: Vec<StoredUser> = back.users().map(|u| u.unwrap()).collect();
    assert_eq!(again, users);
    let records: Vec<FileRecord> = files.into_iter().map(|f| f.record).collect();
    assert_eq!(back.files().unwrap(), records);
    assert_eq!(back.totals().unwrap(), totals);
}

#[test]
fn a_killed_server_keeps_the_committed_steps_and_not_the_one_in_flight() {
    let Some((mut cluster, url)) = setup() else {
        return;
    };
    let store = writer(&url, "east");
    let big = PathBuf::from("/srv/in/big.json");
    store
        .commit(mid_step(&big, vec![user("a@x.co", "A")], 1, 0))
        .unwrap();
    let done = PathBuf::from("/srv/in/small.json");
    store
        .commit(last_step(&done, vec![user("b@x.co", "B")], 1, 0))
        .unwrap();
    // Commits are asynchronous; the flush makes both durable (as the pipeline does
    // before it writes a response).
    store.flush().unwrap();
    let totals = store.totals().unwrap();

    // The next step is held mid-transaction (at the totals row) when the server dies.
    let mut holder = cluster.client("shop");
    let mut tx = holder.transaction().unwrap();
    tx.query("SELECT * FROM userdrop.totals FOR UPDATE", &[])
        .unwrap();
    let committing = {
        let store = store.clone();
        let big = big.clone();
        std::thread::spawn(move || {
            store.commit_with(&[email("c@x.co"), email("a@x.co")], |_| {
                let mut a = user("a@x.co", "A changed");
                a.meta.source_file = "big.json".into();
                Ok::<_, PgError>(last_step(&big, vec![user("c@x.co", "C"), a], 3, 1))
            })
        })
    };
    let mut admin = cluster.admin();
    blocked_session(&mut admin, "userdrop east");
    cluster.kill9();
    let e = committing.join().unwrap().expect_err("the step failed");
    assert!(matches!(e, PgError::Lost { .. }), "{e}");
    drop(tx);
    drop(holder);
    drop(admin);
    assert!(
        matches!(store.user_count(), Err(PgError::Connect { .. })),
        "no server, no store"
    );

    cluster.restart();
    // The same store object connects again, and takes its instance lock again.
    let present: Vec<String> = store
        .users()
        .map(|u| u.unwrap().data.email.to_string())
        .collect();
    assert_eq!(store.user_count().unwrap(), 2, "{present:?}");
    assert_eq!(
        store.user(&email("a@x.co")).unwrap().unwrap().data.title,
        "A"
    );
    assert!(store.user(&email("c@x.co")).unwrap().is_none());
    let p = store
        .progress(&big)
        .unwrap()
        .expect("the committed step's progress");
    assert_eq!((p.next_index, p.log_len), (1, 1));
    assert!(store.outbox_entry(&big).unwrap().is_none());
    assert!(store.outbox_entry(&done).unwrap().is_some());
    assert_eq!(store.totals().unwrap(), totals);
    assert!(
        matches!(
            PgStore::open(&url, PgOptions::writer("east")),
            Err(PgError::InstanceBusy { .. })
        ),
        "the reconnected store holds its instance again"
    );

    // The file resumes from its progress.
    store
        .commit_with(&[email("c@x.co")], |_| {
            Ok::<_, PgError>(last_step(&big, vec![user("c@x.co", "C")], 2, p.log_len))
        })
        .unwrap();
    let entry = store.outbox_entry(&big).unwrap().unwrap();
    assert_eq!(store.log_chunks(&entry).count(), 2);
}

#[test]
fn a_thousand_user_step_is_a_few_round_trips() {
    let Some((_cluster, url)) = setup() else {
        return;
    };
    let store = writer(&url, "east");
    let path = Path::new("/srv/in/bulk.json");
    let users: Vec<StoredUser> = (0..1000)
        .map(|i| user(&format!("u{i:04}@x.co"), "U"))
        .collect();
    let emails: Vec<Email> = users.iter().map(|u| u.data.email.clone()).collect();
    let before = store.round_trips();
    store
        .commit_with(&emails, |_| {
            Ok::<_, PgError>(mid_step(path, users.clone(), 1000, 0))
        })
        .unwrap();
    let inserting = store.round_trips() - before;
    assert!(inserting <= 8, "{inserting} statements for 1000 new users");

    let before = store.round_trips();
    store
        .commit_with(&emails, |locked| {
            let writes = emails
                .iter()
                .map(|e| merged(locked, e, |d| d.city = Some("Lviv".into())))
                .collect();
            Ok::<_, PgError>(last_step(path, writes, 2000, 1))
        })
        .unwrap();
    let updating = store.round_trips() - before;
    assert!(updating <= 10, "{updating} statements for 1000 updates");
    assert_eq!(store.user_count().unwrap(), 1000);
    assert!(
        store
            .users()
            .all(|u| u.unwrap().data.city.as_deref() == Some("Lviv"))
    );
}

#[test]
fn numbers_keep_the_digits_they_were_written_with() {
    let Some((cluster, url)) = setup() else {
        return;
    };
    let store = writer(&url, "east");
    let exact: UserData = serde_json::from_str(
        r#"{"title":"B","email":"b@x.co","balance":1e5,"discount_card":{"discount":-0.0}}"#,
    )
    .unwrap();
    let before = serde_json::to_string(&exact).unwrap();
    store
        .commit(last_step(Path::new("/b.json"), vec![stored(exact)], 1, 0))
        .unwrap();
    let back = store.user(&email("b@x.co")).unwrap().unwrap().data;
    assert_eq!(serde_json::to_string(&back).unwrap(), before);
    // Why the records are json and not jsonb: jsonb would have rewritten it.
    let rewritten: String = cluster
        .client("shop")
        .query_one("SELECT '{\"balance\":1e5}'::jsonb::text", &[])
        .unwrap()
        .get(0);
    assert_ne!(rewritten, r#"{"balance":1e5}"#, "{rewritten}");
}
