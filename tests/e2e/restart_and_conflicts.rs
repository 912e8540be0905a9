//! End-to-end: big files, changes made while the daemon was down, R-side edits meeting E-side
//! changes (conflict copies), several clients, and a daemon database that was lost.

use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;

use crate::common::proxy::Proxy;
use crate::common::*;

const IGNORED: &[&str] = &["node_modules", ".git"];

/// Removes the daemon's database and its SQLite side files.
fn remove_db(db: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("cannot remove {}: {e}", path.display()),
        }
    }
}

#[test]
fn a_64_mib_file_syncs_intact_and_again_after_a_change_in_the_middle() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    let big = e.join("data/big.bin");
    write(&big, pseudo_random(64 << 20, 42));
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);

    client.once_ok(&daemon.url());
    let r_big = r.join("data/big.bin");
    assert_eq!(
        std::fs::metadata(&r_big).unwrap().len(),
        64 << 20,
        "size on R"
    );
    assert_eq!(
        file_sha(&r_big),
        file_sha(&big),
        "content on R after the first sync"
    );

    // Change a few bytes in the middle, in place (same size).
    let before = file_sha(&big);
    let file = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    file.write_at(b"zync was here", (32 << 20) + 12_345)
        .unwrap();
    file.sync_all().unwrap();
    drop(file);
    let after = file_sha(&big);
    assert_ne!(before, after);

    let proxy = Proxy::to_port(daemon.port);
    let logs = once_until(
        &client,
        &proxy.url(),
        "the changed 64 MiB file on R",
        || file_sha(&r_big) == after,
    );
    assert!(
        proxy.downloads().contains(&"code/data/big.bin".to_string()),
        "the changed file was not asked for ({:?}):\n{logs}",
        proxy.downloads()
    );
    assert_same_tree(&e, &r, IGNORED);
    assert!(conflict_copies(&r.join("data")).is_empty());
}

#[test]
fn changes_made_while_the_daemon_was_stopped_arrive_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("modify.txt"), "before\n");
    write(&e.join("delete.txt"), "delete me\n");
    write(&e.join("untouched.txt"), "leave me alone\n");
    write(&e.join("sub/untouched-too.txt"), pseudo_random(10_000, 3));
    write(&e.join("chmod.sh"), "#!/bin/sh\necho hi\n");
    std::fs::set_permissions(e.join("chmod.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, IGNORED);

    daemon.stop();
    write(&e.join("modify.txt"), "after, and longer\n");
    write(&e.join("added.txt"), "new while stopped\n");
    std::fs::remove_file(e.join("delete.txt")).unwrap();
    std::fs::create_dir_all(e.join("new-dir/empty")).unwrap();
    write(&e.join("new-dir/inside.txt"), "in a new directory\n");
    std::fs::set_permissions(e.join("chmod.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    daemon.restart();

    let proxy = Proxy::to_port(daemon.port);
    client.once_ok(&proxy.url());
    assert_same_tree(&e, &r, IGNORED);
    assert!(!r.join("delete.txt").exists());
    assert!(r.join("new-dir/empty").is_dir());
    assert_eq!(
        std::fs::metadata(r.join("chmod.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );

    // Exactly the changed and new files were asked for, the untouched ones not again.
    let mut downloaded = proxy.downloads();
    downloaded.sort();
    assert_eq!(
        downloaded,
        [
            "code/added.txt",
            "code/modify.txt",
            "code/new-dir/inside.txt"
        ],
        "what R asked the restarted daemon for"
    );
}

#[test]
fn an_edit_on_r_meeting_an_edit_on_e_is_kept_as_a_conflict_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("notes/f.txt"), "base\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, IGNORED);

    write(&r.join("notes/f.txt"), "R's edit\n");
    write(&e.join("notes/f.txt"), "E's edit, longer\n");
    let logs = once_until(&client, &daemon.url(), "E's edit at the path on R", || {
        std::fs::read_to_string(r.join("notes/f.txt"))
            .ok()
            .as_deref()
            == Some("E's edit, longer\n")
    });

    let copies = conflict_copies(&r.join("notes"));
    assert_eq!(copies.len(), 1, "expected one conflict copy: {copies:?}");
    let copy = &copies[0];
    assert!(
        copy.starts_with("f.zync-conflict-") && copy.ends_with(".txt"),
        "conflict copy name {copy:?} is not f.zync-conflict-*.txt"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("notes").join(copy)).unwrap(),
        "R's edit\n",
        "the conflict copy must hold R's version"
    );
    // The user is told: the client's status lists the copy.
    let status = client.status_json(&daemon.url());
    assert_eq!(
        status["dirs"][0]["conflict_copies"],
        serde_json::json!([format!("notes/{copy}")]),
        "--status --json does not list the conflict copy: {status:#}\n{logs}"
    );
    // E is unchanged by the conflict.
    assert_eq!(
        std::fs::read_to_string(e.join("notes/f.txt")).unwrap(),
        "E's edit, longer\n"
    );
    assert!(conflict_copies(&e.join("notes")).is_empty());
}

#[test]
fn a_file_deleted_on_e_but_edited_on_r_is_never_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("g.txt"), "base\n");
    write(&e.join("other.txt"), "other\n");
    // Stays: a root emptied at once is taken for a wiped one, and records no deletions.
    write(&e.join("keep.txt"), "keep\n");
    let mut daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, IGNORED);

    write(&r.join("g.txt"), "R's edit of g\n");
    // Delete on E while the daemon is down: its startup scan records the deletion before
    // --once syncs (the client waits for the scan), so one run must apply it.
    daemon.stop();
    std::fs::remove_file(e.join("g.txt")).unwrap();
    std::fs::remove_file(e.join("other.txt")).unwrap();
    daemon.restart();
    // In sync, and the exit code says an edit of R's was kept as a copy.
    let out = client.once_conflicts(&daemon.url());
    let log = stderr(&out);
    assert!(log.contains("kept as conflict copies"), "{log}");

    assert!(
        !r.join("other.txt").exists(),
        "the deletion was not applied:\n{log}"
    );
    let mut holders: Vec<String> = conflict_copies(&r);
    if r.join("g.txt").exists() {
        holders.push("g.txt".into());
    }
    let kept: Vec<&String> = holders
        .iter()
        .filter(|name| {
            std::fs::read_to_string(r.join(name)).ok().as_deref() == Some("R's edit of g\n")
        })
        .collect();
    assert_eq!(
        kept.len(),
        1,
        "R's edit must survive exactly once (in place or as a conflict copy); R has {holders:?}:\n{log}"
    );
}

#[test]
fn an_edit_on_r_of_a_file_e_did_not_change_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("h.txt"), "base\n");
    write(&e.join("other.txt"), "other\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, IGNORED);

    write(&r.join("h.txt"), "R's edit\n");
    client.once_ok(&daemon.url());
    assert_eq!(
        std::fs::read_to_string(r.join("h.txt")).unwrap(),
        "R's edit\n"
    );
    assert!(conflict_copies(&r).is_empty(), "{:?}", conflict_copies(&r));

    // A later sync that does apply something (another file changed on E) still leaves it.
    write(&e.join("other.txt"), "other, changed\n");
    once_until(&client, &daemon.url(), "other.txt changed on R", || {
        std::fs::read_to_string(r.join("other.txt")).ok().as_deref() == Some("other, changed\n")
    });
    assert_eq!(
        std::fs::read_to_string(r.join("h.txt")).unwrap(),
        "R's edit\n"
    );
    assert!(conflict_copies(&r).is_empty(), "{:?}", conflict_copies(&r));
}

#[test]
fn a_second_client_with_its_own_database_converges_too() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    write(&e.join("dir/b.bin"), pseudo_random(200_000, 9));
    std::os::unix::fs::symlink("a.txt", e.join("link")).unwrap();
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    let r1 = tmp.path().join("r1");
    let r2 = tmp.path().join("r2");
    let c1 = ClientSpec::new(&tmp.path().join("client1"), &daemon, &[("code", &r1)]);
    let c2 = ClientSpec::new(&tmp.path().join("client2"), &daemon, &[("code", &r2)]);
    assert_ne!(c1.db, c2.db);

    c1.once_ok(&daemon.url());
    c2.once_ok(&daemon.url());
    assert_same_tree(&e, &r1, IGNORED);
    assert_same_tree(&e, &r2, IGNORED);

    write(&e.join("a.txt"), "a, changed\n");
    write(&e.join("dir/c.txt"), "c\n");
    std::fs::remove_file(e.join("dir/b.bin")).unwrap();
    once_until(&c1, &daemon.url(), "client 1 to converge", || {
        same_tree(&e, &r1, IGNORED)
    });
    once_until(&c2, &daemon.url(), "client 2 to converge", || {
        same_tree(&e, &r2, IGNORED)
    });
    assert_same_tree(&e, &r1, IGNORED);
    assert_same_tree(&e, &r2, IGNORED);
}

#[test]
fn a_lost_daemon_database_makes_the_client_resync_without_downloading_unchanged_files() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("one.txt"), "one\n");
    write(&e.join("deep/two.bin"), pseudo_random(150_000, 5));
    write(&e.join("changed.txt"), "before\n");
    let mut daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, IGNORED);
    let index_id = |url: &str| client.status_json(url)["daemon"]["index_id"].clone();
    let old_id = index_id(&daemon.url());

    daemon.stop();
    remove_db(&daemon.db);
    // One file does change, so the check below can tell "downloaded nothing" from "logged nothing".
    write(&e.join("changed.txt"), "after\n");
    daemon.restart();
    daemon.wait_scanned();
    let new_id = index_id(&daemon.url());
    assert!(
        old_id.is_string() && new_id.is_string() && old_id != new_id,
        "index id {old_id} -> {new_id}"
    );

    let proxy = Proxy::to_port(daemon.port);
    let out = client.once_ok(&proxy.url());
    let log = stderr(&out);
    assert_same_tree(&e, &r, IGNORED);
    // It noticed the new index: it asked for the changes from the start.
    let since: Vec<serde_json::Value> = proxy
        .requests()
        .iter()
        .filter(|r| r["operation"] == "GET_CHANGES")
        .map(|r| r["since"].clone())
        .collect();
    assert_eq!(
        since.first(),
        Some(&serde_json::json!(0)),
        "the client did not start over on the new index (GET_CHANGES since {since:?}):\n{log}"
    );
    assert_eq!(
        proxy.downloads(),
        ["code/changed.txt"],
        "only the changed file may be downloaded again:\n{log}"
    );
    assert!(conflict_copies(&r).is_empty(), "{:?}", conflict_copies(&r));
}
