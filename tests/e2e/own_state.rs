//! End-to-end: zync's own state beside `--db` (the staging area, the database and its `-wal`,
//! the token, the lock) is used only when zync's user made it. Another local user who can
//! create names in that directory (a sticky shared one, as /tmp is) and makes one of them
//! first is refused by name, and takes nothing over (invariant 8, docs/ARCHITECTURE.md).
//! "Another user" is uid 65534: files are made by the test and handed to it with chown,
//! which leaves them exactly as that user would have made them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::*;

const NOBODY: u32 = 65534;

fn require_root() {
    assert!(
        is_root(),
        "this test hands files to user nobody and must run as root (CI's .ci/run does)"
    );
}

/// A directory every user may create names in, sticky as /tmp is: where the adversary of
/// these tests plants their files.
fn shared_dir(tmp: &Path) -> PathBuf {
    let shared = tmp.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    shared
}

/// Hands `path` to user nobody, as if they had made it.
fn give_to_nobody(path: &Path) {
    std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
}

/// Runs zync-daemon on `db` serving `e` until it exits by itself, which it must.
fn daemon_exits(db: &Path, e: &Path) -> Output {
    let mut cmd = command("zync-daemon");
    no_user_config(&mut cmd);
    cmd.args(["--host", "127.0.0.1", "--port", "0", "--db"])
        .arg(db)
        .arg("--dirs")
        .arg(format!("code:{}", e.display()))
        .env_remove("ZYNC_TOKEN");
    output_within_deadline(cmd)
}

fn assert_refused_naming_nobody(out: &Output, path: &Path, what: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "{what} was not refused:\n{err}");
    assert!(
        err.contains(&path.display().to_string())
            && err.contains(&format!("belongs to another user, uid {NOBODY}"))
            && err.to_lowercase().contains("remove it"),
        "{what}: the refusal must name {} and its owner, and say what to do:\n{err}",
        path.display()
    );
}

/// Another user made `<db>.staging` before the daemon's first upload: the daemon refuses to
/// start on it rather than stage R's content (and keep E's backups) in their directory.
/// Once the area is the user's own but another user's directory is swapped in for a
/// session's, with a forged backup and metadata claiming mode 6777, `zync-apply undo` reads
/// nothing from it: E keeps what the apply left, and no setuid program appears in E.
#[test]
fn a_staging_area_or_session_directory_of_another_user_s_is_refused_and_undo_restores_nothing_from_it(
) {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("run.sh"), "#!/bin/sh\necho build\n");
    let shared = shared_dir(tmp.path());
    let db = shared.join("sync.db");
    let staging = shared.join("sync.db.staging");
    std::fs::create_dir(&staging).unwrap();
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o700)).unwrap();
    give_to_nobody(&staging);
    let out = daemon_exits(&db, &e);
    assert_refused_naming_nobody(&out, &staging, "another user's staging area");
    assert!(
        !stderr(&out).contains("listening on"),
        "the daemon listened before it refused the staging area:\n{}",
        stderr(&out)
    );

    // The area is the user's own from here on: a push, then an apply of it.
    std::fs::remove_dir(&staging).unwrap();
    let log = tmp.path().join("daemon.log");
    let daemon = Daemon::start_at(&db, &log, &[("code", &e)], &[]);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    write(&r.join("run.sh"), "#!/bin/sh\necho build --fast\n");
    let pushed = client.push_json(&daemon.url());
    let id = pushed["session_id"]
        .as_str()
        .expect("a session id")
        .to_string();
    run_ok(zync_apply(&db, &["apply", &id, "--non-interactive"]));
    assert_eq!(
        std::fs::read_to_string(e.join("run.sh")).unwrap(),
        "#!/bin/sh\necho build --fast\n"
    );
    let session = staging.join(&id);
    assert!(session.join("backup-1").is_file(), "no backup was made");

    // Another user's directory in its place (as one who owned the area could swap in).
    let planted = b"#!/bin/sh\necho a program of another user's\n";
    std::fs::rename(&session, staging.join("moved")).unwrap();
    std::fs::create_dir(&session).unwrap();
    write(&session.join("backup-1"), planted);
    write(
        &session.join("backup-1.json"),
        format!(
            r#"{{"mode":{},"mtime_ns":0,"sha256":"{}","size":{}}}"#,
            0o6777,
            sha256(planted),
            planted.len()
        ),
    );
    for p in [
        &session,
        &session.join("backup-1"),
        &session.join("backup-1.json"),
    ] {
        give_to_nobody(p);
    }
    let out = output_within_deadline(zync_apply(&db, &["undo", &id]));
    assert_refused_naming_nobody(&out, &session, "undo from another user's session directory");
    assert_eq!(
        std::fs::read_to_string(e.join("run.sh")).unwrap(),
        "#!/bin/sh\necho build --fast\n",
        "undo replaced E's file"
    );
    let mode = std::fs::metadata(e.join("run.sh")).unwrap().mode();
    assert_eq!(mode & 0o7000, 0, "E's file has mode {mode:o}");
}

/// Another user planted `zync.token` (mode 0600, theirs) beside the daemon's database before
/// its first start: they would know the token. The daemon refuses it instead of serving
/// whoever holds it; the client refuses a token file of another user's too.
#[test]
fn a_token_file_another_user_planted_is_refused_by_the_daemon_and_the_client() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("secret.txt"), "root-only secret\n");
    let shared = shared_dir(tmp.path());
    let db = shared.join("sync.db");
    let token = shared.join("zync.token");
    write(&token, format!("{}\n", "0123456789abcdef".repeat(4)));
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    give_to_nobody(&token);
    let out = daemon_exits(&db, &e);
    assert_refused_naming_nobody(&out, &token, "another user's token file");
    assert!(!db.exists(), "the daemon went on to make its database");

    // The daemon makes its own; a client whose token file is another user's refuses it.
    std::fs::remove_file(&token).unwrap();
    let log = tmp.path().join("daemon.log");
    let daemon = Daemon::start_at(&db, &log, &[("code", &e)], &[]);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    give_to_nobody(&client.token_file);
    let out = client.once(&daemon.url());
    assert_refused_naming_nobody(&out, &client.token_file, "the client's token file");
    assert!(!r.join("secret.txt").exists(), "the client synced anyway");
}

/// Another user planted a regular `sync_client.db-wal` of theirs beside the client's
/// database: SQLite would replay it into the database on open, and the client would run on
/// state they wrote (a forged "synced" row let E's change overwrite R's local edit with no
/// conflict copy). The client, and its `--status`, refuse it by name and touch nothing; once
/// it is gone, R's edit is kept as it must be.
#[test]
fn a_wal_file_another_user_planted_beside_the_client_database_is_refused() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("notes.txt"), "v1 from E\n");
    let state = tmp.path().join("daemon");
    std::fs::create_dir(&state).unwrap();
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let shared = shared_dir(tmp.path());
    let r = tmp.path().join("r");
    let mut client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.db = shared.join("sync_client.db");
    client.once_ok(&daemon.url());
    write(&r.join("notes.txt"), "my local edit on R\n");

    let wal = shared.join("sync_client.db-wal");
    assert!(!wal.exists(), "the client left its -wal behind");
    write(&wal, b"a write-ahead log of another user's".as_slice());
    give_to_nobody(&wal);
    write(&e.join("notes.txt"), "v2 from E\n");
    daemon.wait_indexed_as("notes.txt", &sha256(b"v2 from E\n"));
    let out = client.once(&daemon.url());
    assert_refused_naming_nobody(&out, &wal, "another user's -wal file");
    assert_eq!(
        std::fs::read_to_string(r.join("notes.txt")).unwrap(),
        "my local edit on R\n"
    );
    let mut status = client.command(&daemon.url());
    status.arg("--status");
    let out = output_within_deadline(status);
    assert_refused_naming_nobody(&out, &wal, "--status beside another user's -wal file");
    assert_eq!(
        std::fs::read(&wal).unwrap(),
        b"a write-ahead log of another user's",
        "their file was changed"
    );

    std::fs::remove_file(&wal).unwrap();
    client.once_conflicts(&daemon.url());
    assert_eq!(
        std::fs::read_to_string(r.join("notes.txt")).unwrap(),
        "v2 from E\n"
    );
    let copies = conflict_copies(&r);
    assert_eq!(copies.len(), 1, "R's edit must be kept: {copies:?}");
}

/// Another user made `<db>.lock` beside the client's database first: the client is refused
/// naming its owner and what to do, not told that a client of their invention holds it.
#[test]
fn a_lock_file_another_user_made_first_is_refused_naming_its_owner() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "hello\n");
    let state = tmp.path().join("daemon");
    std::fs::create_dir(&state).unwrap();
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let shared = shared_dir(tmp.path());
    let r = tmp.path().join("r");
    let mut client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.db = shared.join("sync_client.db");
    let lock = shared.join("sync_client.db.lock");
    write(&lock, r#"{"pid": 1, "mode": "loop", "started_unix": 0}"#);
    give_to_nobody(&lock);
    let out = client.once(&daemon.url());
    assert_refused_naming_nobody(&out, &lock, "another user's lock file");
    assert!(
        !stderr(&out).contains("another zync-client"),
        "the forged holder was believed:\n{}",
        stderr(&out)
    );
    std::fs::remove_file(&lock).unwrap();
    client.once_ok(&daemon.url());
    assert_eq!(std::fs::read_to_string(r.join("a.txt")).unwrap(), "hello\n");
}
