//! End-to-end: a served directory on E that disappears, is emptied at once or is replaced by
//! another directory deletes nothing on R. The daemon marks it unavailable (both status
//! commands say so), serves the other directories as before, and when the directory is back
//! it is watched again and scanned against the index, which then decides, as at a restart.

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
fn a_root_removed_while_a_client_loops_deletes_nothing_on_r_and_syncs_again_when_back() {
    let s = setup();
    let before = tree(&s.r, &[]);
    std::fs::remove_dir_all(&s.e).unwrap();
    let why = wait_unavailable(&s);
    assert!(why.contains("disappeared"), "{why}");
    other_still_syncs(&s);
    assert_eq!(tree(&s.r, &[]), before, "R lost files of a removed root");

    // Put back (a re-clone with one file fewer and one more): the scan against the index
    // decides, as at a restart; the new file arrives and the one E no longer has goes.
    write(&s.e.join("a.txt"), "a\n");
    write(&s.e.join("sub/b.txt"), "b\n");
    write(&s.e.join("new.txt"), "new\n");
    wait_file(&s, &s.r.join("new.txt"));
    wait_same_tree(&s.e, &s.r, &[]);
    wait_until("--status to say code is no longer unavailable", || {
        code_status(&s)["state"] != "unavailable"
    });
    // Watched again, not only rescanned once.
    write(&s.e.join("later.txt"), "later\n");
    wait_file(&s, &s.r.join("later.txt"));
}

#[test]
fn a_replaced_root_is_noticed_watched_again_and_its_new_files_reach_r() {
    let s = setup();
    let old = s.e.with_file_name("code.old");
    std::fs::rename(&s.e, &old).unwrap();
    std::fs::create_dir(&s.e).unwrap();
    write(&s.e.join("new"), "x\n");
    wait_file(&s, &s.r.join("new"));
    // The new directory is what E serves now: the scan against the index decides, so R
    // mirrors it (what the old one held is deleted as a real change on E).
    wait_same_tree(&s.e, &s.r, &[]);
    // The old directory is no longer followed; the new one is.
    write(&old.join("ghost.txt"), "written in the old directory\n");
    write(&s.e.join("after.txt"), "after\n");
    wait_file(&s, &s.r.join("after.txt"));
    wait_same_tree(&s.e, &s.r, &[]);
    assert!(!s.r.join("ghost.txt").exists());
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
fn a_root_removed_and_cloned_again_at_once_is_watched_and_its_files_reach_r() {
    let s = setup();
    // `rm -rf code && git clone ... code`: the new directory usually gets the old one's inode
    // number, and the daemon may never see the path empty or gone.
    std::fs::remove_dir_all(&s.e).unwrap();
    write(&s.e.join("a.txt"), "a, cloned again\n");
    write(&s.e.join("sub/b.txt"), "b\n");
    write(&s.e.join("new.txt"), "new\n");
    wait_file(&s, &s.r.join("new.txt"));
    wait_same_tree(&s.e, &s.r, &[]);
    // The new directory is watched, not only scanned once.
    write(&s.e.join("later.txt"), "later\n");
    wait_file(&s, &s.r.join("later.txt"));
    wait_same_tree(&s.e, &s.r, &[]);
    other_still_syncs(&s);
}
