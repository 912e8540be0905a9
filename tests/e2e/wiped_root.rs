//! End-to-end: a served directory on E that disappears, is emptied at once or is replaced by
//! another directory deletes nothing on R. The daemon marks it unavailable (both status
//! commands say so), serves the other directories as before, and when the directory is back
//! it is watched again and scanned against the index, which then decides, as at a restart.
//! Another directory at its path (`mv code code.old && mkdir code`, `rm -rf code && git clone
//! ... code`) is never taken for it: the daemon cannot tell that from another user's swap
//! (`swapped_root.rs`), and serves the new one once restarted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::*;

/// E with two served directories, R with a loop client that has synced both.
struct Setup {
    _tmp: tempfile::TempDir,
    daemon: Daemon,
    client: ClientSpec,
    _running: Running,
    e: PathBuf,
    r: PathBuf,
    e_other: PathBuf,
    r_other: PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e/code");
    let e_other = tmp.path().join("e/other");
    write(&e.join("a.txt"), "a\n");
    write(&e.join("sub/b.txt"), "b\n");
    write(&e.join("sub/deep/c.txt"), "c\n");
    write(&e_other.join("o.txt"), "o\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e), ("other", &e_other)]);
    daemon.wait_scanned();
    let r = tmp.path().join("r/code");
    let r_other = tmp.path().join("r/other");
    let client = ClientSpec::new(
        &tmp.path().join("client"),
        &daemon,
        &[("code", &r), ("other", &r_other)],
    );
    let running = client.spawn(&daemon.url(), &tmp.path().join("client.log"));
    wait_same_tree(&e, &r, &[]);
    wait_same_tree(&e_other, &r_other, &[]);
    Setup {
        _tmp: tmp,
        daemon,
        client,
        _running: running,
        e,
        r,
        e_other,
        r_other,
    }
}

/// The `code` entry of `zync-client --status --json`.
fn code_status(s: &Setup) -> Value {
    let v = s.client.status_json(&s.daemon.url());
    v["dirs"]
        .as_array()
        .and_then(|dirs| dirs.iter().find(|d| d["name"] == "code").cloned())
        .unwrap_or_else(|| panic!("no dir 'code' in the status: {v}"))
}

/// Waits until both status commands say `code` is unavailable, and returns the client's reason.
fn wait_unavailable(s: &Setup) -> String {
    let mut last = Value::Null;
    wait_until("--status to say that code is unavailable on E", || {
        last = code_status(s);
        last["state"] == "unavailable"
    });
    let why = last["unavailable"].as_str().unwrap_or_default().to_owned();
    assert!(why.contains("no deletions were recorded"), "{last}");
    let apply = zync_apply_json(&s.daemon.db, &["status", "--json"]);
    let dir = apply["dirs"]
        .as_array()
        .and_then(|dirs| dirs.iter().find(|d| d["name"] == "code").cloned())
        .unwrap_or_else(|| panic!("no dir 'code' in zync-apply status: {apply}"));
    assert_eq!(dir["state"], "unavailable", "{apply}");
    assert_eq!(dir["unavailable"].as_str(), Some(why.as_str()), "{apply}");
    why
}

/// The other directory is still served: a new file there reaches R.
fn other_still_syncs(s: &Setup) {
    write(&s.e_other.join("still.txt"), "still served\n");
    wait_same_tree(&s.e_other, &s.r_other, &[]);
}

/// Waits for `path` on R; a timeout shows the ends of both logs (the daemon's watch and scans
/// of a root coming back, the client's pulls).
fn wait_file(s: &Setup, path: &Path) {
    wait_until_else(
        &format!("{} to appear", path.display()),
        || path.exists(),
        || {
            let client =
                std::fs::read_to_string(s._tmp.path().join("client.log")).unwrap_or_default();
            format!(
                "daemon log, last lines:\n{}\nclient log, last lines:\n{}",
                tail(&s.daemon.log_text(), 60),
                tail(&client, 40)
            )
        },
    );
}

#[test]
fn a_root_moved_away_while_a_client_loops_deletes_nothing_on_r_and_syncs_again_when_back() {
    let s = setup();
    let before = tree(&s.r, &[]);
    let away = s.e.with_file_name("code.away");
    std::fs::rename(&s.e, &away).unwrap();
    let why = wait_unavailable(&s);
    assert!(why.contains("disappeared"), "{why}");
    other_still_syncs(&s);
    assert_eq!(tree(&s.r, &[]), before, "R lost files of a removed root");

    // Put back with one file fewer and one more: the scan against the index decides, as at
    // a restart; the new file arrives and the one E no longer has goes.
    std::fs::remove_file(away.join("sub/b.txt")).unwrap();
    write(&away.join("new.txt"), "new\n");
    std::fs::rename(&away, &s.e).unwrap();
    wait_file(&s, &s.r.join("new.txt"));
    wait_same_tree(&s.e, &s.r, &[]);
    wait_until("--status to say code is no longer unavailable", || {
        code_status(&s)["state"] != "unavailable"
    });
    // Watched again, not only rescanned once.
    write(&s.e.join("later.txt"), "later\n");
    wait_file(&s, &s.r.join("later.txt"));
}

/// Waits until the daemon says `code` is no longer the directory it started with, checks that
/// R kept everything it had and the other directory still syncs, then restarts the daemon,
/// which serves the directory there now: R mirrors it.
fn replaced_then_restarted(s: &mut Setup, before: &BTreeMap<String, Node>) {
    let why = wait_unavailable(s);
    assert!(why.contains("restart zync-daemon"), "{why}");
    other_still_syncs(s);
    write(&s.e.join("meanwhile.txt"), "written in the new directory\n");
    write(
        &s.e_other.join("again.txt"),
        "the other directory syncs on\n",
    );
    wait_same_tree(&s.e_other, &s.r_other, &[]);
    assert_eq!(tree(&s.r, &[]), *before, "R followed a replaced root");
    s.daemon.restart();
    wait_file(s, &s.r.join("meanwhile.txt"));
    wait_same_tree(&s.e, &s.r, &[]);
    // Watched, not only scanned once.
    write(&s.e.join("after.txt"), "after\n");
    wait_file(s, &s.r.join("after.txt"));
    wait_same_tree(&s.e, &s.r, &[]);
}

#[test]
fn a_replaced_root_is_not_served_until_the_daemon_restarts() {
    let mut s = setup();
    let before = tree(&s.r, &[]);
    let old = s.e.with_file_name("code.old");
    std::fs::rename(&s.e, &old).unwrap();
    std::fs::create_dir(&s.e).unwrap();
    write(&s.e.join("new"), "x\n");
    replaced_then_restarted(&mut s, &before);
    // The new directory is what E serves now (what the old one held is deleted as a real
    // change on E); the old one is no longer followed.
    write(&old.join("ghost.txt"), "written in the old directory\n");
    write(&s.e.join("last.txt"), "last\n");
    wait_file(&s, &s.r.join("last.txt"));
    assert!(!s.r.join("ghost.txt").exists() && !s.r.join("a.txt").exists());
    other_still_syncs(&s);
}

#[test]
fn a_root_emptied_at_once_deletes_nothing_on_r_until_a_file_left_in_it_says_it_is_meant() {
    let s = setup();
    let before = tree(&s.r, &[]);
    // As `find root -mindepth 1 -delete`, or a disk unmounted from under its mount point.
    for entry in std::fs::read_dir(&s.e).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
    let why = wait_unavailable(&s);
    assert!(why.contains("emptied at once"), "{why}");
    other_still_syncs(&s);
    assert_eq!(tree(&s.r, &[]), before, "R lost files of an emptied root");

    // A file left in it says the deletions are meant.
    write(&s.e.join(".keep"), "");
    wait_same_tree(&s.e, &s.r, &[]);
    assert_eq!(
        tree(&s.r, &[]).keys().collect::<Vec<_>>(),
        [".keep"],
        "R follows E"
    );
}

#[test]
fn a_root_removed_and_cloned_again_at_once_is_served_once_the_daemon_restarts() {
    use std::os::unix::fs::MetadataExt;
    let mut s = setup();
    let before = tree(&s.r, &[]);
    let old = std::fs::metadata(&s.e).unwrap().ino();
    // `rm -rf code && git clone ... code`: the new directory usually gets the old one's inode
    // number (its birth time tells them apart), and the daemon may never see the path empty
    // or gone.
    std::fs::remove_dir_all(&s.e).unwrap();
    write(&s.e.join("a.txt"), "a, cloned again\n");
    write(&s.e.join("sub/b.txt"), "b\n");
    write(&s.e.join("new.txt"), "new\n");
    let meta = std::fs::metadata(&s.e).unwrap();
    if meta.ino() == old && meta.created().is_err() {
        // No birth time to tell them apart: taken for the same directory, watched anew.
        wait_file(&s, &s.r.join("new.txt"));
        wait_same_tree(&s.e, &s.r, &[]);
        return;
    }
    replaced_then_restarted(&mut s, &before);
    other_still_syncs(&s);
}
