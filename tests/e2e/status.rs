//! End-to-end: `zync-client --status` and `zync-apply status` tell the state of the
//! sync in one command, from R and from E, and change nothing while they look.

use std::path::Path;
use std::process::Output;

use crate::common::*;
use serde_json::Value;

/// `zync-client --status [--json]` for `client`, within the deadline.
fn client_status(client: &ClientSpec, url: &str, json: bool) -> Output {
    let mut cmd = client.command(url);
    cmd.arg("--status");
    if json {
        cmd.arg("--json");
    }
    output_within_deadline(cmd)
}

/// `--status --json`, parsed; fails the test unless the exit code is `code`.
fn status_json(client: &ClientSpec, url: &str, code: i32) -> Value {
    let out = client_status(client, url, true);
    assert_eq!(
        out.status.code(),
        Some(code),
        "zync-client --status --json: expected exit code {code}\nstdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("--status --json is not JSON ({e}):\n{}", stdout(&out)))
}

/// `zync-apply --db DB status --json`, parsed; must succeed.
fn apply_status(db: &Path) -> Value {
    zync_apply_json(db, &["status", "--json"])
}

#[test]
fn status_tells_never_synced_then_in_sync_then_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    write(&e.join("sub/b.txt"), "b\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let r = tmp.path().join("r/code");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);

    // Never synced: said so, exit 1, and nothing created (no database, no directory).
    let out = client_status(&client, &daemon.url(), false);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("never synced") && text.contains("reachable"),
        "{text}"
    );
    assert!(!client.db.exists(), "--status created the client database");
    assert!(!r.exists(), "--status created the local directory");
    let v = status_json(&client, &daemon.url(), 1);
    assert_eq!(v["client_id"], Value::Null, "{v}");
    assert_eq!(v["in_sync"], false, "{v}");
    assert_eq!(v["daemon"]["reachable"], true, "{v}");
    let dir = &v["dirs"][0];
    assert_eq!(dir["name"], "code", "{v}");
    assert_eq!(dir["state"], "never_synced", "{v}");
    assert_eq!(dir["root_exists"], false, "{v}");
    // a.txt, sub, sub/b.txt: everything is pending.
    assert!(dir["pending"].as_u64().is_some_and(|n| n >= 3), "{v}");

    // Synced: in sync, nothing pending, exit 0, in both forms.
    client.once_ok(&daemon.url());
    let v = status_json(&client, &daemon.url(), 0);
    let dir = &v["dirs"][0];
    assert_eq!(v["in_sync"], true, "{v}");
    assert_eq!(dir["state"], "in_sync", "{v}");
    assert_eq!(dir["pending"], 0, "{v}");
    assert_eq!(dir["client_sequence"], dir["daemon_sequence"], "{v}");
    assert!(v["client_id"].is_string(), "{v}");
    let synced_seq = dir["daemon_sequence"].as_u64().expect("daemon_sequence");
    let out = client_status(&client, &daemon.url(), false);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).trim_end().ends_with("in sync"),
        "{}",
        stdout(&out)
    );

    // E changes: behind, with the pending count, exit 1.
    write(&e.join("new.txt"), "new\n");
    wait_until("the daemon indexes new.txt", || {
        // Exit 0 until the daemon has it: read the JSON whatever the code.
        let out = client_status(&client, &daemon.url(), true);
        serde_json::from_str::<Value>(&stdout(&out)).is_ok_and(|v| {
            v["dirs"][0]["daemon_sequence"]
                .as_u64()
                .is_some_and(|s| s > synced_seq)
        })
    });
    let v = status_json(&client, &daemon.url(), 1);
    let dir = &v["dirs"][0];
    assert_eq!(dir["state"], "behind", "{v}");
    assert_eq!(dir["pending"], 1, "{v}");
    assert_eq!(dir["client_sequence"], synced_seq, "{v}");
}

#[test]
fn an_empty_directory_on_e_is_in_sync_after_one_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let (e, empty) = (tmp.path().join("e"), tmp.path().join("empty"));
    write(&e.join("a.txt"), "a\n");
    std::fs::create_dir_all(&empty).unwrap();
    let daemon = Daemon::start(tmp.path(), &[("code", &e), ("scratch", &empty)]);
    daemon.wait_scanned();
    let (r, r_empty) = (tmp.path().join("r/code"), tmp.path().join("r/scratch"));
    let client = ClientSpec::new(
        &tmp.path().join("client"),
        &daemon,
        &[("code", &r), ("scratch", &r_empty)],
    );
    client.once_ok(&daemon.url());
    let v = status_json(&client, &daemon.url(), 0);
    assert_eq!(v["in_sync"], true, "{v}");
    for dir in v["dirs"].as_array().unwrap() {
        assert_eq!(dir["state"], "in_sync", "{v}");
        assert_eq!(dir["pending"], 0, "{v}");
    }
    assert!(r_empty.is_dir(), "the empty directory exists on R");
}

#[test]
fn status_lists_failing_paths_and_conflict_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a/blocked.txt"), "E's content\n");
    write(&e.join("fine.txt"), "fine\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    std::fs::create_dir_all(r.join("a")).unwrap();
    // A fifo where E has a file: the path fails (local_faults.rs).
    let fifo = r.join("a/blocked.txt");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0, "mkfifo");
    let copy = "notes.zync-conflict-20240101T000000.txt";
    write(&r.join(copy), "R's edit\n");
    // Ignored directories are not walked.
    write(&r.join("node_modules").join(copy), "ignored\n");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    assert!(
        !client.once(&daemon.url()).status.success(),
        "the fifo must fail"
    );

    let v = status_json(&client, &daemon.url(), 1);
    let dir = &v["dirs"][0];
    assert_eq!(dir["state"], "failing", "{v}");
    assert_eq!(dir["failing"][0]["path"], "a/blocked.txt", "{v}");
    assert!(
        dir["failing"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("fifo")),
        "{v}"
    );
    assert!(
        dir["failing"][0]["attempts"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{v}"
    );
    assert_eq!(dir["conflict_copies"], serde_json::json!([copy]), "{v}");

    let out = client_status(&client, &daemon.url(), false);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for expected in ["a/blocked.txt", "fifo", copy, "NOT IN SYNC"] {
        assert!(text.contains(expected), "{expected:?} missing in:\n{text}");
    }

    // Once the path applies, its failure is forgotten: the dir is failing no more.
    std::fs::remove_file(&fifo).unwrap();
    client.once_ok(&daemon.url());
    let v = client.status_json(&daemon.url());
    let dir = &v["dirs"][0];
    assert_eq!(dir["failing"], serde_json::json!([]), "{v}");
    assert_ne!(dir["state"], "failing", "{v}");
}

#[test]
fn status_with_the_daemon_down_says_unreachable_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    let mut daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    let url = daemon.url();
    daemon.stop();

    let out = client_status(&client, &url, false);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unreachable daemon is an answer, exit 1:\n{text}\n{}",
        stderr(&out)
    );
    assert!(text.contains("UNREACHABLE"), "{text}");
    let v = status_json(&client, &url, 1);
    assert_eq!(v["daemon"]["reachable"], false, "{v}");
    assert!(v["daemon"]["error"].is_string(), "{v}");
    // What R knows is still shown.
    assert!(v["dirs"][0]["client_sequence"].as_u64().is_some(), "{v}");
    assert_eq!(v["dirs"][0]["state"], "unknown", "{v}");

    // A client that never ran: nothing is created, not even its directory.
    let fresh = ClientSpec {
        db: tmp.path().join("fresh/sync_client.db"),
        token_file: client.token_file.clone(),
        dirs: vec![("code".into(), tmp.path().join("fresh/code"))],
    };
    let v = status_json(&fresh, &url, 1);
    assert_eq!(v["dirs"][0]["state"], "never_synced", "{v}");
    assert!(
        !tmp.path().join("fresh").exists(),
        "--status created files for a client that never ran"
    );
}

#[test]
fn apply_status_shows_dirs_the_connected_client_its_acks_and_a_staged_session() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    write(&e.join("b.txt"), "b\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);

    let v = apply_status(&daemon.db);
    assert_eq!(v["dirs"][0]["name"], "code", "{v}");
    assert_eq!(v["dirs"][0]["entries"], 2, "{v}");
    assert_eq!(v["clients"], serde_json::json!([]), "{v}");
    let seq = v["dirs"][0]["sequence"].as_u64().expect("sequence");

    let mut running = client.spawn(&daemon.url(), &tmp.path().join("client.log"));
    let mut v = Value::Null;
    wait_until(
        "zync-apply status shows the client connected and caught up",
        || {
            v = apply_status(&daemon.db);
            let c = &v["clients"][0];
            c["connected"] == true && c["acks"][0]["sequence"] == seq
        },
    );
    let c = &v["clients"][0];
    assert_eq!(c["acks"][0]["dir"], "code", "{v}");
    assert_eq!(c["acks"][0]["behind"], 0, "{v}");
    let text = zync_apply_ok(&daemon.db, &["status"]);
    let id = c["client_id"].as_str().expect("client_id");
    assert!(
        text.lines()
            .any(|l| l.starts_with(id) && l.contains("yes") && l.contains("code")),
        "{text}"
    );
    // Its version and the dirs it mirrors reached E (in AUTH, once E proved itself).
    assert_eq!(c["version"], env!("CARGO_PKG_VERSION"), "{v}");
    let mirrored: String = rusqlite::Connection::open(&daemon.db)
        .expect("daemon db")
        .query_row(
            "SELECT value FROM meta WHERE key = ?1",
            [format!("client_dirs:{id}")],
            |row| row.get(0),
        )
        .expect("the client's dirs are recorded");
    assert_eq!(mirrored, "code");

    // Gone when it disconnects.
    running.signal_and_wait(libc::SIGTERM);
    wait_until("zync-apply status shows the client disconnected", || {
        apply_status(&daemon.db)["clients"][0]["connected"] == false
    });

    // An edit on R pushed upstream is listed as pending.
    write(&r.join("a.txt"), "R's edit\n");
    let mut cmd = client.command(&daemon.url());
    cmd.arg("--update-upstream");
    let out = output_within_deadline(cmd);
    assert!(out.status.success(), "--update-upstream: {}", stderr(&out));
    let v = apply_status(&daemon.db);
    let sessions = v["pending_sessions"].as_array().expect("pending_sessions");
    assert_eq!(sessions.len(), 1, "{v}");
    assert_eq!(sessions[0]["status"], "staged", "{v}");
    assert_eq!(sessions[0]["files"], 1, "{v}");
    assert_eq!(sessions[0]["client_id"], id, "{v}");
}
