//! End-to-end regression tests for the fixes in "Fixes from review" (0f93b10): the client's
//! and the daemon's own files inside synced directories, a served directory reached through a
//! symlink, upstream paths E ignores, a daemon index restored from a backup, and an edit saved
//! on R while E's version of the same file downloads.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::peer::Peer;
use crate::common::proxy::Proxy;
use crate::common::*;
use serde_json::{json, Value};

const SQLITE_SIDE_FILES: [&str; 4] = ["", "-wal", "-shm", "-journal"];

/// `path` with `suffix` appended to its file name (`sync.db` + `-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

/// Every session the daemon's database holds (`zync-apply list --all --json`).
fn all_sessions(db: &Path) -> Vec<Value> {
    let text = zync_apply_ok(db, &["list", "--all", "--json"]);
    let value: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("list --json ({e}): {text}"));
    value.as_array().expect("list --json is an array").clone()
}

/// The daemon's GET_LAST_SEQUENCE answer: (last_sequence, scanning), over a raw connection.
fn last_sequence(daemon: &Daemon) -> (u64, bool) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let (mut peer, _) = Peer::authenticated(daemon, "regressions").await;
        let last = peer.ok(json!({"operation": "GET_LAST_SEQUENCE"})).await;
        (
            last["last_sequence"]
                .as_u64()
                .unwrap_or_else(|| panic!("no last_sequence: {last}")),
            last["scanning"].as_bool().unwrap_or(false),
        )
    })
}

/// The daemon's index id, as its handshake's welcome gives it to a client.
fn index_id(daemon: &Daemon) -> String {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let (_, welcome) = Peer::authenticated(daemon, "regressions").await;
        welcome["index_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no index_id in the welcome: {welcome}"))
            .to_string()
    })
}

// ---------------------------------------------------------------------------------------------
// 1. The client's own database and token inside a mapped directory.

#[test]
fn the_clients_own_database_and_token_inside_a_mapped_directory_are_never_sent_nor_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    write(&e.join("sub/b.txt"), "b\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();

    // The client's database and token live inside R's mapped directory.
    let r = tmp.path().join("r");
    std::fs::create_dir_all(&r).unwrap();
    let token_file = r.join("client.token");
    std::fs::copy(&daemon.token_file, &token_file).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let client = ClientSpec {
        db: r.join("sync_client.db"),
        token_file,
        dirs: vec![("code".to_string(), r.clone())],
    };
    let own: Vec<&str> = vec![
        "sync_client.db",
        "sync_client.db-wal",
        "sync_client.db-shm",
        "sync_client.db-journal",
        "sync_client.db.lock",
        "client.token",
    ];

    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, &own);

    let summary = client.push_json(&daemon.url());
    assert!(
        summary["session_id"].is_null() && summary["files"] == 0,
        "R changed nothing but its own database and token, yet --update-upstream sent a \
         session: {summary}"
    );
    let sessions = all_sessions(&daemon.db);
    assert!(
        sessions.is_empty(),
        "the daemon holds sessions, so the client's own files went upstream: {sessions:#?}"
    );

    // A file on E at the path of the client's database must not be written over it.
    let before = std::fs::read(&client.db).unwrap();
    assert!(before.starts_with(b"SQLite format 3\0"));
    let (seq_before, _) = last_sequence(&daemon);
    write(
        &e.join("sync_client.db"),
        "E's file that happens to share the client's database name\n",
    );
    // The client has passed E's file once it records a sequence past the one before it.
    let mut logs = String::new();
    wait_until("the client to catch up past E's sync_client.db", || {
        let out = client.once_ok(&daemon.url());
        logs.push_str(&stderr(&out));
        let status = client.status_json(&daemon.url());
        status["dirs"][0]["client_sequence"].as_u64() > Some(seq_before)
    });
    let after = std::fs::read(&client.db).unwrap();
    assert!(
        after.starts_with(b"SQLite format 3\0"),
        "the client's database was overwritten by E's file:\n{logs}"
    );
    // The client still works with its database, and still has nothing to send.
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, &own);
    let summary = client.push_json(&daemon.url());
    assert!(
        summary["session_id"].is_null() && summary["files"] == 0,
        "nothing to send, yet: {summary}"
    );
    assert!(all_sessions(&daemon.db).is_empty());
}

/// The client's database, lock and token in a state directory inside R's mapped directory
/// (`r/.zync/`): E putting a tree below the database's path, then making `.zync` a file, moves
/// none of them (no conflict copy of the state directory, no fresh database); those paths are
/// skipped, the rest syncs, and the next run goes on from where the last one was.
#[test]
fn paths_from_e_over_the_clients_own_state_directory_leave_it_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    write(&e.join("sub/b.txt"), "b\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let proxy = Proxy::to_port(daemon.port);

    let r = tmp.path().join("r");
    let state = r.join(".zync");
    std::fs::create_dir_all(&state).unwrap();
    let token_file = state.join("client.token");
    std::fs::copy(&daemon.token_file, &token_file).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let client = ClientSpec {
        db: state.join("sync_client.db"),
        token_file: token_file.clone(),
        dirs: vec![("code".to_string(), r.clone())],
    };
    client.once_ok(&proxy.url());
    assert_same_tree(&e, &r, &[".zync"]);
    let token = std::fs::read(&token_file).unwrap();
    let lock = with_suffix(&client.db, ".lock");
    let in_place = |when: &str, logs: &str| {
        let db = std::fs::read(&client.db).unwrap_or_default();
        assert!(
            db.starts_with(b"SQLite format 3\0"),
            "{when}: the client's database is no longer at {}:\n{}",
            client.db.display(),
            tail(logs, 40)
        );
        assert!(lock.is_file(), "{when}: the lock file moved");
        assert_eq!(
            std::fs::read(&token_file).ok().as_ref(),
            Some(&token),
            "{when}: the token file moved"
        );
        let copies = [conflict_copies(&r), conflict_copies(&state)].concat();
        assert!(copies.is_empty(), "{when}: conflict copies {copies:?}");
    };
    in_place("after the first run", "");

    // Each step ends with a file beside the state directory, which must arrive.
    let steps: [(&str, &dyn Fn(), &str); 2] = [
        (
            "a file below the database's path",
            &|| write(&e.join(".zync/sync_client.db/x"), "x\n"),
            "c.txt",
        ),
        (
            "`.zync` a file",
            &|| {
                std::fs::remove_dir_all(e.join(".zync")).unwrap();
                write(
                    &e.join(".zync"),
                    "E's file named like R's state directory\n",
                );
            },
            "d.txt",
        ),
    ];
    for (what, make, beside) in steps {
        make();
        write(&e.join(beside), "beside\n");
        let logs = once_until(&client, &proxy.url(), what, || {
            let status = client.status_json(&proxy.url());
            r.join(beside).is_file()
                && status["dirs"][0]["client_sequence"] == status["dirs"][0]["daemon_sequence"]
        });
        in_place(what, &logs);
        assert_same_tree(&e, &r, &[".zync"]);
    }

    // The next run resumes: only E's new file is downloaded.
    proxy.reset_counts();
    write(&e.join("f.txt"), "f\n");
    once_until(&client, &proxy.url(), "f.txt on R", || {
        r.join("f.txt").is_file()
    });
    assert_eq!(proxy.downloads(), ["code/f.txt"]);
    in_place("at the end", "");
}

// ---------------------------------------------------------------------------------------------
// 2. The daemon's database, token and staging area inside the served directory.

#[test]
fn the_daemons_database_token_and_staging_area_inside_e_never_reach_a_client() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    write(&e.join("notes/n.txt"), "n\n");
    let daemon = Daemon::start_at(
        &e.join("sync.db"),
        &tmp.path().join("daemon.log"),
        &[("code", &e)],
        &[],
    );
    daemon.wait_scanned();
    let own = [
        "sync.db",
        "sync.db-wal",
        "sync.db-shm",
        "sync.db-journal",
        "sync.db.lock",
        "zync.token",
        "sync.db.staging",
    ];

    let r1 = tmp.path().join("r1");
    let c1 = ClientSpec::new(&tmp.path().join("client1"), &daemon, &[("code", &r1)]);
    c1.once_ok(&daemon.url());
    assert_same_tree(&e, &r1, &own);

    // R1 pushes an edit: the daemon stages it in sync.db.staging/<id>/, inside E.
    write(&r1.join("a.txt"), "R1's edit of a\n");
    let summary = c1.push_json(&daemon.url());
    let id = summary["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("R1's edit was not sent: {summary}"));
    let staged = e.join("sync.db.staging").join(id);
    assert!(
        staged.is_dir(),
        "no staging directory {} for the session: {summary}",
        staged.display()
    );

    // A change on E after the push: once R2 has it, the daemon has also indexed everything it
    // saw before it (the staged files included, were they indexed at all).
    write(&e.join("after-push.txt"), "after the push\n");
    let r2 = tmp.path().join("r2");
    let c2 = ClientSpec::new(&tmp.path().join("client2"), &daemon, &[("code", &r2)]);
    let logs = once_until(&c2, &daemon.url(), "after-push.txt on R2", || {
        r2.join("after-push.txt").exists()
    });

    let received: Vec<String> = tree(&r2, &[])
        .into_keys()
        .filter(|p| {
            p.starts_with("sync.db") || p == "zync.token" || p.starts_with("sync.db.staging")
        })
        .collect();
    assert!(
        received.is_empty(),
        "a second client received the daemon's own files: {received:?}\n{logs}"
    );
    assert_same_tree(&e, &r2, &own);
    assert_eq!(
        std::fs::read_to_string(r2.join("a.txt")).unwrap(),
        "a\n",
        "the staged edit is not E's until applied"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A served directory reached through a symlink, with --db through the same symlink.

#[test]
fn a_database_given_through_a_symlinked_root_is_not_indexed_and_the_sequence_stays_still() {
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    write(&real.join("a.txt"), "a\n");
    write(&real.join("dir/b.txt"), "b\n");
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let daemon = Daemon::start_at(
        &link.join("sync.db"),
        &tmp.path().join("daemon.log"),
        &[("code", &link)],
        &[],
    );
    daemon.wait_scanned();
    assert!(
        real.join("sync.db").exists(),
        "the database is not in the real dir"
    );

    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    // Not once_ok: with the bug the run may fail on a database file that changes as it is sent,
    // and what R received says more.
    let out = client.once(&daemon.url());
    let expected: BTreeSet<String> = ["a.txt", "dir", "dir/b.txt"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let got: BTreeSet<String> = tree(&r, &[]).into_keys().collect();
    assert_eq!(
        got,
        expected,
        "R must receive only the real files, not the daemon's database or token:\n{}",
        stderr(&out)
    );
    assert!(
        out.status.success(),
        "zync-client --once failed:\n{}",
        stderr(&out)
    );

    // Nothing changes on E: the daemon's sequence must not move. With its own database
    // indexed, every index commit is a change to index, and the sequence climbs for ever.
    let (first, scanning) = last_sequence(&daemon);
    assert!(!scanning);
    let mut seen = vec![first];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(250));
        seen.push(last_sequence(&daemon).0);
    }
    assert!(
        seen.iter().all(|&s| s == first),
        "the daemon's sequence moved while nothing changed on E: {seen:?}"
    );
    let proxy = Proxy::to_port(daemon.port);
    let out = client.once_ok(&proxy.url());
    let got: BTreeSet<String> = tree(&r, &[]).into_keys().collect();
    assert_eq!(got, expected, "{}", stderr(&out));
    assert_eq!(
        proxy.downloads(),
        Vec::<String>::new(),
        "a sync with nothing changed on E downloaded something"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Upstream with a path E ignores.

#[test]
fn update_upstream_skips_a_path_e_ignores_and_sends_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("x.txt"), "x\n");
    let daemon = Daemon::start_with(tmp.path(), &[("code", &e)], &["--ignore", "*.log"]);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, &[]);

    write(&r.join("x.txt"), "x, edited on R\n");
    write(&r.join("run.log"), "a log E ignores\n");
    let summary = client.push_json(&daemon.url());
    let id = summary["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no session was sent: {summary}"))
        .to_string();
    assert_eq!(
        summary["files"], 1,
        "the session must hold 1 file: {summary}"
    );
    assert_eq!(
        summary["skipped"], 1,
        "1 file must be left unsent: {summary}"
    );
    let text = zync_apply_ok(&daemon.db, &["show", &id, "--json"]);
    let show: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let paths: Vec<&str> = show["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files in {show:#}"))
        .iter()
        .map(|f| f["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["x.txt"], "{show:#}");

    // When E ignores every changed path, nothing is staged: no empty session to review.
    std::fs::remove_file(r.join("run.log")).unwrap();
    // Apply it: the applied file enters the index at once, so this --once records it on R.
    zync_apply_ok(&daemon.db, &["apply", &id, "--non-interactive"]);
    client.once_ok(&daemon.url());
    write(&r.join("only.log"), "another log E ignores\n");
    let summary = client.push_json(&daemon.url());
    assert!(
        summary["session_id"].is_null() && summary["files"] == 0,
        "nothing may be sent: {summary}"
    );
    let pending = zync_apply_ok(&daemon.db, &["list", "--json"]);
    let pending: Value = serde_json::from_str(&pending).expect("list --json");
    let ids: Vec<&str> = pending
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert!(
        ids.is_empty(),
        "no session may be pending (the first one was applied): {pending:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. The daemon's index restored from a backup, under the same index id.

#[test]
fn a_daemon_index_restored_from_a_backup_does_not_make_the_client_skip_new_files() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    let mut daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, &[]);
    let first_id = index_id(&daemon);

    // The backup.
    daemon.stop();
    let backup = tmp.path().join("backup");
    std::fs::create_dir_all(&backup).unwrap();
    for suffix in SQLITE_SIDE_FILES {
        let from = with_suffix(&daemon.db, suffix);
        if from.exists() {
            std::fs::copy(&from, with_suffix(&backup.join("sync.db"), suffix)).unwrap();
        }
    }
    daemon.restart();
    daemon.wait_scanned();
    let (backed_up_seq, _) = last_sequence(&daemon);

    // Life goes on after the backup: b and c appear, and some short-lived files come and go,
    // so the client stores a sequence well ahead of the backup's.
    write(&e.join("b.txt"), "b\n");
    write(&e.join("c.txt"), "c\n");
    once_until(&client, &daemon.url(), "b.txt and c.txt on R", || {
        r.join("b.txt").exists() && r.join("c.txt").exists()
    });
    for i in 0..4 {
        let name = format!("tmp-{i}.txt");
        write(&e.join(&name), format!("short-lived {i}\n"));
        once_until(&client, &daemon.url(), &format!("{name} on R"), || {
            r.join(&name).exists()
        });
        std::fs::remove_file(e.join(&name)).unwrap();
        once_until(&client, &daemon.url(), &format!("{name} gone on R"), || {
            !r.join(&name).exists()
        });
    }
    assert_same_tree(&e, &r, &[]);
    let (client_seq, _) = last_sequence(&daemon);

    // The index goes back to the backup.
    daemon.stop();
    for suffix in SQLITE_SIDE_FILES {
        let saved = with_suffix(&backup.join("sync.db"), suffix);
        let live = with_suffix(&daemon.db, suffix);
        if saved.exists() {
            std::fs::copy(&saved, &live).unwrap();
        } else if live.exists() {
            std::fs::remove_file(&live).unwrap();
        }
    }
    daemon.restart();
    daemon.wait_scanned();
    assert_eq!(
        index_id(&daemon),
        first_id,
        "the restored index must keep its id"
    );
    let (restored_seq, _) = last_sequence(&daemon);
    assert!(
        restored_seq < client_seq,
        "the scenario needs the restored sequence ({restored_seq}, backup at {backed_up_seq}) \
         behind the client's ({client_seq})"
    );

    write(&e.join("0new.txt"), "new after the restore\n");
    let logs = once_until(&client, &daemon.url(), "0new.txt on R", || {
        r.join("0new.txt").exists()
    });
    assert_eq!(
        std::fs::read_to_string(r.join("0new.txt")).unwrap(),
        "new after the restore\n",
        "{logs}"
    );
    assert_same_tree(&e, &r, &[]);
    assert!(conflict_copies(&r).is_empty(), "{:?}", conflict_copies(&r));
}

// ---------------------------------------------------------------------------------------------
// 6. An edit saved on R while E's version of the same file downloads.

/// A `zync-client --once` in the background; killed on drop.
struct Background {
    child: Child,
    log: PathBuf,
}

impl Background {
    fn start(client: &ClientSpec, url: &str, log: &Path) -> Background {
        let file = std::fs::File::create(log).expect("client log");
        let child = client
            .command(url)
            .arg("--once")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn zync-client --once");
        Background {
            child,
            log: log.to_path_buf(),
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let mut status = None;
        wait_until("the background zync-client --once to exit", || {
            status = self.exited();
            status.is_some()
        });
        status.expect("exited")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where R's edit with `sha` survives: `big.bin` or a `big.zync-conflict-*.bin` copy.
fn holders_of(r: &Path, sha: &str) -> Vec<String> {
    let mut names = conflict_copies(r);
    names.push("big.bin".into());
    names
        .into_iter()
        .filter(|n| n == "big.bin" || (n.starts_with("big.zync-conflict-") && n.ends_with(".bin")))
        .filter(|n| file_sha(&r.join(n)) == sha)
        .collect()
}

#[test]
fn an_edit_saved_on_r_while_e_s_version_downloads_is_never_lost() {
    const SIZE: usize = 192 << 20;
    const ATTEMPTS: usize = 5;
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    let big = e.join("big.bin");
    write(&big, pseudo_random(SIZE, 7));
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    let r_big = r.join("big.bin");
    assert_eq!(file_sha(&r_big), file_sha(&big), "the first sync");

    let mut missed = Vec::new();
    for attempt in 0..ATTEMPTS {
        // Change E's file in the middle and wait until the daemon has indexed the change.
        let (before_seq, _) = last_sequence(&daemon);
        let file = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
        file.write_at(
            format!("E's change #{attempt}").as_bytes(),
            (SIZE as u64 / 2) + attempt as u64 * 4096,
        )
        .unwrap();
        file.sync_all().unwrap();
        drop(file);
        wait_until("the daemon to index E's change", || {
            let (seq, scanning) = last_sequence(&daemon);
            seq > before_seq && !scanning
        });

        // Download it in the background; save an edit on R as soon as the download shows.
        let edit = format!("R's edit saved during download attempt #{attempt}\n");
        let edit_sha = sha256(edit.as_bytes());
        let mut bg = Background::start(
            &client,
            &daemon.url(),
            &tmp.path().join(format!("client-{attempt}.log")),
        );
        let start = Instant::now();
        let mut seen = None;
        while bg.exited().is_none() && start.elapsed() < DEADLINE {
            if let Some(name) = temp_files(&r).into_iter().next() {
                seen = Some(name);
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut during = false;
        if let Some(temp) = &seen {
            // Editor-style save: write a new file, rename it over the original.
            let swap = r.join(format!("big.bin.save-{attempt}"));
            std::fs::write(&swap, &edit).unwrap();
            std::fs::rename(&swap, &r_big).unwrap();
            // Still there: the rename happened before the download was committed.
            during = r.join(temp).exists();
        }
        let status = bg.wait();
        let log = bg.log_text();
        // In sync; 3 when R's edit was kept as a conflict copy.
        assert!(
            matches!(status.code(), Some(0 | 3)),
            "zync-client --once failed ({status}):\n{log}"
        );

        if seen.is_some() {
            // Whenever it was saved, R's edit must survive, once.
            let holders = holders_of(&r, &edit_sha);
            assert_eq!(
                holders.len(),
                1,
                "R's edit saved during the download (attempt {attempt}, before the commit: \
                 {during}) is lost or duplicated; R has {:?} and big.bin is {}:\n{log}",
                conflict_copies(&r),
                if file_sha(&r_big) == file_sha(&big) {
                    "E's version"
                } else {
                    "neither E's version nor R's edit"
                }
            );
            if during {
                assert_eq!(
                    file_sha(&r_big),
                    file_sha(&big),
                    "E's version belongs at big.bin, R's edit in a conflict copy:\n{log}"
                );
                eprintln!("the download was caught in progress on attempt {attempt}; {missed:?}");
                return;
            }
        }
        missed.push(format!(
            "attempt {attempt}: temp file seen {seen:?}, edit before the commit {during}"
        ));
    }
    panic!(
        "the download of big.bin was never caught in progress in {ATTEMPTS} attempts, so the \
         race was not exercised:\n{}",
        missed.join("\n")
    );
}
