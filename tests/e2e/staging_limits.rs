//! End-to-end: staging on E is bounded against a hostile R holding the token (invariant 9,
//! docs/ARCHITECTURE.md; docs/PROTOCOL.md "Staging limits"). Each limit refuses with its value
//! and the flag that raises it and loses nothing staged before; an upload that stalls gives its
//! room back; the daemon's own files are never accepted as upstream paths; a push E stages
//! nothing of leaves nothing; a path sent twice keeps one staged file; a session left
//! unfinished leaves neither files nor rows; junk E's user drops, or leaves to expire, keeps
//! rows only for the newest few sessions; `zync-apply drop` and `gc` remove what they should
//! and nothing else; the backups applied pushes keep go after `--staging-max-age`, or at once
//! with `drop --discard-backups`, and E keeps what was applied.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::common::peer::{self, Peer, MAX_CHUNK};
use crate::common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Every session as `zync-apply list --all --json` shows it.
fn sessions(db: &Path) -> Vec<Value> {
    match zync_apply_json(db, &["list", "--all", "--json"]) {
        Value::Array(all) => all,
        other => panic!("list --json is not an array: {other}"),
    }
}

/// The session `id`, which must be listed.
fn session(db: &Path, id: &str) -> Value {
    sessions(db)
        .into_iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("session {id} is not listed"))
}

/// A served directory `code` at `<tmp>/e` with `files`, and a daemon with `extra` arguments
/// and its state in `<tmp>/state`.
fn daemon_with(tmp: &Path, files: &[(&str, &[u8])], extra: &[&str]) -> (PathBuf, Daemon) {
    let e = tmp.join("e");
    std::fs::create_dir_all(&e).expect("mkdir e");
    for (path, data) in files {
        write(&e.join(path), data);
    }
    let state = tmp.join("state");
    std::fs::create_dir_all(&state).expect("mkdir state");
    let daemon = Daemon::start_with(&state, &[("code", &e)], extra);
    daemon.wait_scanned();
    (e, daemon)
}

/// Asserts `reply` is an error with `code` whose message holds each of `says`.
fn refused(reply: &Value, code: &str, says: &[&str]) {
    assert_eq!(reply["status"], "error", "accepted: {reply}");
    assert_eq!(reply["code"], code, "wrong code: {reply}");
    let message = reply["message"].as_str().unwrap_or_default();
    for part in says {
        assert!(message.contains(part), "{message:?} does not say {part:?}");
    }
}

async fn finalize(peer: &mut Peer, session: &str) -> Value {
    peer.ok(json!({"operation": "FINALIZE_UPSTREAM", "session_id": session}))
        .await
}

// ---------------------------------------------------------------------------------------------
// 1. Each limit refuses with its value and flag; what was staged before stays appliable.

#[tokio::test]
async fn each_staging_limit_refuses_naming_its_flag_and_keeps_what_was_staged() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (e, daemon) = daemon_with(
        tmp.path(),
        &[("keep.txt", b"on E\n")],
        &[
            "--max-session-files",
            "3",
            "--max-session-bytes",
            "3MiB",
            "--max-pending-sessions",
            "2",
            "--max-staged-bytes",
            "4MiB",
        ],
    );
    let db = daemon.db.clone();
    let (mut peer, _) = Peer::authenticated(&daemon, "limits-r").await;

    // Files per session: the fourth new path is refused, a path sent again is not new.
    let a = peer.prepare_upstream().await;
    for n in 1..=3 {
        peer.upload_ok(&a, &format!("f{n}.txt"), format!("file {n}\n").as_bytes())
            .await;
    }
    let reply = peer.upload(&a, "f4.txt", b"one too many\n").await;
    refused(
        &reply,
        "too_large",
        &[
            "E allows 3",
            "zync-daemon --max-session-files, or max-session-files in daemon.toml",
        ],
    );
    peer.upload_ok(&a, "f1.txt", b"file 1, again\n").await;
    let done = finalize(&mut peer, &a).await;
    assert_eq!(done["files"], 3, "{done}");

    // Bytes per session: 2 MiB fits, 2 MiB more would make 4 MiB of 3.
    let b = peer.prepare_upstream().await;
    let two = pseudo_random(2 << 20, 1);
    peer.upload_ok(&b, "big1.bin", &two).await;
    let reply = peer
        .upload(&b, "big2.bin", &pseudo_random(2 << 20, 2))
        .await;
    refused(
        &reply,
        "too_large",
        &[
            "would stage 4 MiB in one session; E allows 3 MiB",
            "--max-session-bytes",
        ],
    );
    peer.ping_ok().await;
    let done = finalize(&mut peer, &b).await;
    assert_eq!(
        (done["files"].as_u64(), done["bytes"].as_u64()),
        (Some(1), Some(2 << 20))
    );

    // Pending sessions per client: a third is refused before anything is sent.
    let id = peer.id();
    peer.send_json(&json!({"id": id, "operation": "PREPARE_UPSTREAM"}))
        .await;
    let reply = peer.recv_text().await;
    refused(
        &reply,
        "too_large",
        &[
            "already has 2 upstream sessions waiting on E; E allows 2",
            "--max-pending-sessions",
        ],
    );

    // Bytes staged in all pending sessions: another client's 2 MiB would pass 4 MiB.
    let (mut other, _) = Peer::authenticated(&daemon, "limits-other").await;
    let c = other.prepare_upstream().await;
    let reply = other
        .upload(&c, "big3.bin", &pseudo_random(2 << 20, 3))
        .await;
    refused(&reply, "too_large", &["4 MiB", "--max-staged-bytes"]);
    other.ping_ok().await;

    // Nothing staged before any refusal was lost, and it applies.
    assert_eq!(session(&db, &a)["files"], 3);
    assert_eq!(session(&db, &b)["status"], "staged");
    assert_eq!(names_in(&staging_root(&db).join(&b)).len(), 1);
    // Binary content the review cannot show: applied with --force.
    zync_apply_ok(&db, &["apply", &b, "--non-interactive", "--force"]);
    assert_eq!(std::fs::read(e.join("big1.bin")).expect("applied"), two);
    zync_apply_ok(&db, &["apply", &a, "--non-interactive"]);
    assert_eq!(
        std::fs::read(e.join("f1.txt")).expect("applied"),
        b"file 1, again\n"
    );
    assert!(!e.join("f4.txt").exists() && !e.join("big2.bin").exists());

    // Applied sessions wait no more: the client may push again.
    let d = peer.prepare_upstream().await;
    peer.upload_ok(&d, "later.txt", b"later\n").await;
}

/// The zync client stops at a limit, finalizes what E staged, says so and exits 1. The file
/// refused is named by E's refusal, which the client prints: made visible, on one line.
#[test]
fn a_client_push_cut_by_a_limit_stages_what_went_before_and_fails_clearly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_e, daemon) = daemon_with(
        tmp.path(),
        &[("keep.txt", b"on E\n")],
        &["--max-session-files", "2"],
    );
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    let refused = "c\u{1b}]0;owned\u{7}\r\nzync-client: in sync.txt";
    for name in ["a.txt", "b.txt", refused] {
        write(&r.join(name), format!("{name} from R\n"));
    }
    let mut cmd = client.command(&daemon.url());
    cmd.args(["--update-upstream", "--json"]);
    let out = output_within_deadline(cmd);
    assert_eq!(out.status.code(), Some(4), "stderr:\n{}", stderr(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("the summary is still printed");
    assert_eq!(summary["files"], 2, "{summary}");
    assert_eq!(summary["not_sent"], 1, "{summary}");
    let why = summary["refused"].as_str().unwrap_or_default();
    assert!(why.contains("--max-session-files"), "{summary}");
    assert!(
        stderr(&out).contains("E refused the push part way; 1 file(s) not sent"),
        "{}",
        stderr(&out)
    );
    assert_shown_visibly("the push", &stderr(&out), "zync-client: in sync");
    let id = summary["session_id"]
        .as_str()
        .expect("the staged part has a session");
    let listed = session(&daemon.db, id);
    assert_eq!(
        (listed["status"].as_str(), listed["files"].as_u64()),
        (Some("staged"), Some(2))
    );
}

// ---------------------------------------------------------------------------------------------
// 2. An upload that stalls after reserving its room gives it back within the deadline.

#[tokio::test]
async fn a_stalled_upload_is_dropped_and_its_room_given_back_within_the_deadline() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_e, daemon) = daemon_with(
        tmp.path(),
        &[],
        &["--upload-stall-timeout", "2", "--max-staged-bytes", "3MiB"],
    );
    let db = daemon.db.clone();
    let (mut staller, _) = Peer::authenticated(&daemon, "staller").await;
    let s = staller.prepare_upstream().await;
    staller
        .upload_ok(&s, "first.txt", b"staged before the stall\n")
        .await;
    // 2 MiB announced, 1 MiB sent, then nothing.
    let content = pseudo_random(2 << 20, 7);
    let id = staller.id();
    staller
        .send_json(&json!({
            "id": id, "operation": "UPSTREAM_FILE", "session_id": s, "dir": "code",
            "path": "stalled.bin", "action": "write", "mode": 0o644, "size": content.len(),
            "mtime_ns": 0, "sha256": sha256(&content),
        }))
        .await;
    let mut frame = id.to_be_bytes().to_vec();
    frame.extend_from_slice(&content[..MAX_CHUNK]);
    staller.send(Message::binary(frame)).await;
    let stalled_at = Instant::now();
    let session_dir = staging_root(&db).join(&s);
    wait_until("the stalled upload's temp file", || {
        names_in(&session_dir).len() == 2
    });

    // While it holds its 2 MiB, another client's 2 MiB does not fit in 3.
    let (mut other, _) = Peer::authenticated(&daemon, "other").await;
    let o = other.prepare_upstream().await;
    let reply = other
        .upload(&o, "needs-room.bin", &pseudo_random(2 << 20, 8))
        .await;
    refused(&reply, "too_large", &["--max-staged-bytes"]);

    // The staller is told why, then cut off; its session is aborted and its files removed.
    let reply = staller.recv_text().await;
    refused(
        &reply,
        "bad_request",
        &["stalled.bin", "--upload-stall-timeout"],
    );
    assert!(
        stalled_at.elapsed() < std::time::Duration::from_secs(15),
        "dropped after {:?}",
        stalled_at.elapsed()
    );
    wait_until("the stalled session to be aborted and removed", || {
        session(&db, &s)["status"] == "aborted" && !session_dir.exists()
    });

    // The room is back: the same upload fits now.
    other
        .upload_ok(&o, "needs-room.bin", &pseudo_random(2 << 20, 8))
        .await;
    assert_eq!(finalize(&mut other, &o).await["files"], 1);
}

// ---------------------------------------------------------------------------------------------
// 3. The daemon's own files are refused as upstream paths, under any name.

#[tokio::test]
async fn the_daemons_own_files_inside_a_served_root_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let e = tmp.path().join("e");
    std::fs::create_dir_all(e.join("state")).expect("mkdir");
    std::os::unix::fs::symlink(e.join("state"), e.join("alias")).expect("symlink");
    write(&e.join("daemon.toml"), "log-level = \"debug\"\n");
    let config = e.join("daemon.toml").display().to_string();
    let mut daemon = Daemon::start_at(
        &e.join("state/sync.db"),
        &tmp.path().join("daemon.log"),
        &[("code", &e)],
        &["--config", &config],
    );
    daemon.wait_scanned();
    let db_before = std::fs::read(&daemon.db).expect("db");
    let (mut peer, _) = Peer::authenticated(&daemon, "hostile-r").await;
    let s = peer.prepare_upstream().await;
    let evil = b"not a database\n";
    for (path, what) in [
        ("state/sync.db", "zync-daemon's own database"),
        ("state/sync.db-wal", "database journal"),
        ("state/sync.db-shm", "shared memory"),
        ("state/zync.token", "token file"),
        ("state/sync.db.staging/x/file-000001", "staging area"),
        ("alias/sync.db", "zync-daemon's own database"),
        ("daemon.toml", "config file"),
    ] {
        let reply = peer.upload(&s, path, evil).await;
        refused(
            &reply,
            "invalid_path",
            &[path, what, "never accepted from R"],
        );
    }
    let id = peer.id();
    peer.send_json(&json!({
        "id": id, "operation": "UPSTREAM_FILE", "session_id": s, "dir": "code",
        "path": "state/sync.db", "action": "delete",
    }))
    .await;
    refused(&peer.recv_text().await, "invalid_path", &["own database"]);
    peer.upload_ok(&s, "fine.txt", b"an ordinary file\n").await;
    let done = finalize(&mut peer, &s).await;
    assert_eq!(done["files"], 1, "{done}");
    let show = zync_apply_json(&daemon.db, &["show", &s, "--json"]);
    assert_eq!(show["files"].as_array().map(Vec::len), Some(1), "{show}");
    daemon.stop();
    assert_ne!(std::fs::read(&daemon.db).expect("db"), evil);
    assert!(db_before.starts_with(b"SQLite format 3"));
}

// ---------------------------------------------------------------------------------------------
// 4. A push E stages nothing of leaves nothing; a path sent twice keeps one staged file.

#[test]
fn a_push_whose_files_are_all_ignored_on_e_makes_no_session() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_e, daemon) = daemon_with(
        tmp.path(),
        &[("keep.txt", b"on E\n")],
        &["--ignore", "*.log"],
    );
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    write(&r.join("a.log"), "R's log\n");
    write(&r.join("b.log"), "R's other log\n");
    let mut cmd = client.command(&daemon.url());
    cmd.arg("--update-upstream");
    let text = stdout(&run_ok(cmd));
    assert!(
        text.contains("nothing was staged: all 2 changed file(s) are refused by E")
            && text.contains("`*.log` from --ignore"),
        "{text}"
    );
    assert!(!text.contains("session "), "a session was named: {text}");
    let summary = client.push_json(&daemon.url());
    assert_eq!(
        (summary["session_id"].is_null(), summary["skipped"].as_u64()),
        (true, Some(2))
    );
    assert!(
        sessions(&daemon.db).is_empty(),
        "{:?}",
        sessions(&daemon.db)
    );
    assert!(names_in(&staging_root(&daemon.db)).is_empty());
}

#[tokio::test]
async fn an_empty_session_and_a_re_sent_path_leave_nothing_extra_staged() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_e, daemon) = daemon_with(tmp.path(), &[], &[]);
    let db = daemon.db.clone();
    let (mut peer, _) = Peer::authenticated(&daemon, "resender").await;

    let empty = peer.prepare_upstream().await;
    let done = finalize(&mut peer, &empty).await;
    assert_eq!(done["files"], 0, "{done}");
    assert!(sessions(&db).is_empty(), "an empty session was kept");

    let s = peer.prepare_upstream().await;
    let first = pseudo_random(MAX_CHUNK + 10, 1);
    peer.upload_ok(&s, "a.bin", &first).await;
    let second = b"the second version\n";
    peer.upload_ok(&s, "a.bin", second).await;
    let dir = staging_root(&db).join(&s);
    let staged = names_in(&dir);
    assert_eq!(staged.len(), 1, "staged files: {staged:?}");
    let only = dir.join(staged.iter().next().expect("one"));
    assert_eq!(std::fs::read(only).expect("staged"), second);
    let done = finalize(&mut peer, &s).await;
    assert_eq!(
        (done["files"].as_u64(), done["bytes"].as_u64()),
        (Some(1), Some(second.len() as u64))
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Abandoned sessions leave nothing: not their files, not their rows in E's database; and
// sessions dropped or expired leave their rows only while among the newest few.

/// Rows of `upstream_files` in the daemon's database at `db` belonging to one of `sessions`.
fn file_rows(db: &Path, sessions: &[&str]) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db read-only");
    sessions
        .iter()
        .map(|id| {
            conn.query_row(
                "SELECT count(*) FROM upstream_files WHERE session_id = ?1",
                [id],
                |row| row.get::<_, i64>(0),
            )
            .expect("count rows")
        })
        .sum()
}

/// Opens a session on `peer` and stages `deletes` deletes of long paths that exist nowhere
/// (accepted: a delete carries no content); returns the session.
async fn abandon_deletes(peer: &mut Peer, round: usize, deletes: usize) -> String {
    let s = peer.prepare_upstream().await;
    let long = format!("{}/{}", "d".repeat(200), "e".repeat(200));
    for k in 0..deletes {
        peer.ok(json!({
            "operation": "UPSTREAM_FILE", "session_id": s, "dir": "code",
            "path": format!("{long}/{round}-{k}"), "action": "delete",
        }))
        .await;
    }
    s
}

#[tokio::test]
async fn abandoned_sessions_leave_no_rows_in_the_database_and_nothing_staged() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (e, mut daemon) = daemon_with(tmp.path(), &[("keep.txt", b"on E\n")], &[]);
    let db = daemon.db.clone();
    let staging = staging_root(&db);
    let e_before = tree(&e, &[]);

    // A hostile R's loop: open a session, send hundreds of deletes, leave; again and again.
    let mut hostile = Vec::new();
    for round in 0..4 {
        let (mut peer, _) = Peer::authenticated(&daemon, "hostile-r").await;
        let s = abandon_deletes(&mut peer, round, 300).await;
        assert_eq!(file_rows(&db, &[s.as_str()]), 300, "round {round}: staged");
        drop(peer);
        wait_until(&format!("round {round}: the session to be aborted"), || {
            session(&db, &s)["status"] == "aborted"
        });
        hostile.push(s);
    }
    assert_eq!(
        file_rows(&db, &hostile.iter().map(String::as_str).collect::<Vec<_>>()),
        0,
        "the abandoned sessions' rows stay in E's database"
    );

    // An honest push cut off before FINALIZE_UPSTREAM: nothing of it stays staged either.
    let (mut honest, _) = Peer::authenticated(&daemon, "honest-r").await;
    let h = honest.prepare_upstream().await;
    honest.upload_ok(&h, "new.txt", b"R's new file\n").await;
    assert!(staging.join(&h).exists(), "the upload is staged");
    drop(honest);
    wait_until("the honest session to be aborted", || {
        session(&db, &h)["status"] == "aborted" && !staging.join(&h).exists()
    });
    assert_eq!(session(&db, &h)["files"], 0, "{}", session(&db, &h));
    assert_eq!(file_rows(&db, &[h.as_str()]), 0);
    assert!(
        zync_apply_json(&db, &["list", "--json"])
            .as_array()
            .is_some_and(Vec::is_empty),
        "an aborted session is pending"
    );
    assert!(names_in(&staging).is_empty(), "{:?}", names_in(&staging));

    // A daemon killed mid-upload leaves a session receiving, rows and all: the next start
    // aborts it and deletes them. A staged session is not touched.
    let (mut peer, _) = Peer::authenticated(&daemon, "hostile-r").await;
    let staged = abandon_deletes(&mut peer, 10, 200).await;
    assert_eq!(finalize(&mut peer, &staged).await["files"], 200);
    let killed = abandon_deletes(&mut peer, 11, 200).await;
    daemon.kill();
    drop(peer);
    assert_eq!(
        file_rows(&db, &[killed.as_str()]),
        200,
        "before the restart"
    );
    let state = tmp.path().join("state");
    let mut again = Daemon::start_with(&state, &[("code", &e)], &[]);
    again.wait_scanned();
    assert_eq!(session(&db, &killed)["status"], "aborted");
    assert_eq!(
        file_rows(&db, &[killed.as_str()]),
        0,
        "the start kept the rows of the session it aborted"
    );
    assert!(!staging.join(&killed).exists());
    assert_eq!(session(&db, &staged)["status"], "staged");
    assert_eq!(
        file_rows(&db, &[staged.as_str()]),
        200,
        "a staged session lost rows"
    );

    // An older zync left its aborted sessions' rows in full: the next start deletes them.
    again.stop();
    rusqlite::Connection::open(&db)
        .expect("open db")
        .execute(
            "UPDATE upstream_sessions SET status = 'aborted' WHERE id = ?1",
            [&staged],
        )
        .expect("abort the old way");
    std::fs::remove_dir_all(staging.join(&staged)).expect("an older zync removed its files");
    let third = Daemon::start_with(&state, &[("code", &e)], &[]);
    third.wait_scanned();
    assert_eq!(
        file_rows(&db, &[staged.as_str()]),
        0,
        "the start kept the rows of a session an older zync aborted"
    );
    assert!(names_in(&staging).is_empty(), "{:?}", names_in(&staging));
    assert_eq!(tree(&e, &[]), e_before, "E changed");
}

/// How many sessions of each ended status (dropped, expired, settled) keep their rows:
/// `zync_db::ENDED_KEPT` (this crate does not link zync-db).
const ENDED_KEPT: usize = 10;

/// Rows of `upstream_files` in the daemon's database at `db`, of every session.
fn all_file_rows(db: &Path) -> usize {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db read-only");
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM upstream_files", [], |row| row.get(0))
        .expect("count rows");
    usize::try_from(rows).expect("a count")
}

#[tokio::test]
async fn dropped_and_expired_junk_keeps_the_rows_of_the_newest_few_sessions_only() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (e, mut daemon) = daemon_with(tmp.path(), &[("keep.txt", b"on E\n")], &[]);
    let db = daemon.db.clone();
    let e_before = tree(&e, &[]);
    let deletes = 100;
    let bound = ENDED_KEPT * deletes;

    // A hostile R's loop: push a hundred deletes of long paths that exist nowhere, which E's
    // user sees as junk and drops; again and again, each round freeing its pending slot.
    let (mut peer, _) = Peer::authenticated(&daemon, "hostile-r").await;
    let mut dropped = Vec::new();
    for round in 0..ENDED_KEPT + 3 {
        let s = abandon_deletes(&mut peer, round, deletes).await;
        assert_eq!(finalize(&mut peer, &s).await["files"], deletes);
        let out = zync_apply_ok(&db, &["drop", &s]);
        assert!(out.contains(&format!("dropped session {s}")), "{out}");
        dropped.push(s);
        let rows = all_file_rows(&db);
        assert!(
            rows <= bound,
            "after {} dropped sessions, {rows} rows of upstream_files stay in E's database \
             (at most {bound})",
            round + 1
        );
    }
    // The newest dropped keep their files, for `list --all` and `show`; the oldest are
    // forgotten, and `show` says so.
    let newest = dropped.last().expect("dropped");
    assert_eq!(session(&db, newest)["status"], "dropped");
    assert_eq!(session(&db, newest)["files"], deletes);
    let shown = zync_apply_json(&db, &["show", newest, "--json"]);
    assert_eq!(shown["files"].as_array().map(Vec::len), Some(deletes));
    let out = output_within_deadline(zync_apply(&db, &["show", &dropped[0]]));
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("no session matches") && stderr(&out).contains("forgotten"),
        "{}",
        stderr(&out)
    );

    // Pushes left staged past --staging-max-age: the next start expires them all, and keeps
    // the rows of the newest few.
    let mut left = Vec::new();
    for round in 100..100 + ENDED_KEPT + 3 {
        let s = abandon_deletes(&mut peer, round, deletes).await;
        assert_eq!(finalize(&mut peer, &s).await["files"], deletes);
        age(&db, &s, 3);
        left.push(s);
    }
    drop(peer);
    daemon.stop();
    let state = tmp.path().join("state");
    let mut again = Daemon::start_with(&state, &[("code", &e)], &["--staging-max-age", "2d"]);
    again.wait_scanned();
    // Pushed within a second or two, these sessions have no order of their own: one expiry
    // ends them in the order it finds them, and the last ENDED_KEPT to end keep their files.
    let listed = sessions(&db);
    assert!(
        listed.iter().all(|s| s["status"] != "staged"),
        "a session was not expired"
    );
    let expired: Vec<&Value> = listed.iter().filter(|s| s["status"] == "expired").collect();
    assert_eq!(expired.len(), ENDED_KEPT, "{listed:?}");
    assert!(expired.iter().all(|s| s["files"] == deletes), "{expired:?}");
    let newest = expired[0]["id"].as_str().expect("id").to_owned();
    let newest = &newest;
    let rows = all_file_rows(&db);
    assert!(
        rows <= 2 * bound,
        "{rows} rows of upstream_files stay after the start expired {} sessions (at most {})",
        left.len(),
        2 * bound
    );

    // An older zync kept every row of every session it ended: the next start deletes those
    // beyond the newest few.
    again.stop();
    let conn = rusqlite::Connection::open(&db).expect("open db");
    for (n, id) in (0i64..).zip(&left) {
        // Back as an older zync left them (it did not record the order they ended in).
        conn.execute(
            "INSERT INTO upstream_sessions (id, client_id, created_unix, status)
             VALUES (?1, 'hostile-r', ?2, 'dropped')",
            rusqlite::params![format!("{id:.8}-0000-4000-8000-00000000{n:04}"), n],
        )
        .expect("an old session");
    }
    conn.execute(
        "INSERT INTO upstream_files
             (session_id, dir, path, action, mode, size, mtime_ns, conflict, state)
         SELECT s.id, 'code', 'old/' || f.path, 'delete', 420, 0, 0, 0, 'staged'
         FROM upstream_sessions AS s JOIN upstream_files AS f
             ON f.session_id = ?1 WHERE s.status = 'dropped' AND s.created_unix < 1000",
        [newest],
    )
    .expect("their files");
    drop(conn);
    assert!(all_file_rows(&db) > 2 * bound, "the older zync's rows");
    let third = Daemon::start_with(&state, &[("code", &e)], &[]);
    third.wait_scanned();
    let rows = all_file_rows(&db);
    assert!(
        rows <= 2 * bound,
        "{rows} rows of upstream_files stay after a start (at most {})",
        2 * bound
    );
    assert!(names_in(&staging_root(&db)).is_empty());
    assert_eq!(tree(&e, &[]), e_before, "E changed");
}

// ---------------------------------------------------------------------------------------------
// 6. drop and gc (and expiry at a daemon start) remove what they should and nothing else.

/// Makes session `id` `days` days older in the daemon's database.
fn age(db: &Path, id: &str, days: i64) {
    let conn = rusqlite::Connection::open(db).expect("open db");
    conn.execute(
        "UPDATE upstream_sessions SET created_unix = created_unix - ?2 WHERE id = ?1",
        rusqlite::params![id, days * 86_400],
    )
    .expect("age the session");
}

#[test]
fn drop_gc_and_expiry_remove_staged_sessions_and_nothing_else() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (e, daemon) = daemon_with(tmp.path(), &[("keep.txt", b"on E\n")], &[]);
    let db = daemon.db.clone();
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    let push = |name: &str| {
        write(&r.join(name), format!("{name} from R\n"));
        let summary = client.push_json(&daemon.url());
        summary["session_id"]
            .as_str()
            .expect("a session")
            .to_string()
    };
    let dropped = push("one.txt");
    let applied = push("two.txt");
    let old = push("three.txt");
    let at_start = push("four.txt");
    let e_before = tree(&e, &[]);

    // drop: that session's files go, the others and E stay.
    let out = zync_apply_ok(&db, &["drop", &dropped]);
    assert!(out.contains(&format!("dropped session {dropped}")), "{out}");
    assert_eq!(session(&db, &dropped)["status"], "dropped");
    let staging = staging_root(&db);
    assert!(!staging.join(&dropped).exists());
    for other in [&applied, &old, &at_start] {
        assert_eq!(session(&db, other)["status"], "staged");
        assert!(staging.join(other).exists());
    }
    assert_eq!(tree(&e, &[]), e_before, "drop touched E");

    // An applied session is refused, pointing to undo.
    zync_apply_ok(&db, &["apply", &applied, "--non-interactive"]);
    let e_applied = tree(&e, &[]);
    let out = output_within_deadline(zync_apply(&db, &["drop", &applied]));
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("zync-apply undo"), "{}", stderr(&out));
    assert!(staging.join(&applied).exists(), "the backups went");

    // gc: the old staged session expires, a directory no session owns goes, nothing else.
    age(&db, &old, 40);
    let orphan = staging.join("0badc0de-0000-4000-8000-000000000000");
    std::fs::create_dir_all(&orphan).expect("orphan");
    write(&orphan.join("file-000001"), "litter");
    let report = zync_apply_json(&db, &["gc", "--older-than", "30d", "--json"]);
    let expired: Vec<&str> = report["expired"]
        .as_array()
        .expect("expired")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(expired, [old.as_str()], "{report}");
    assert_eq!(
        report["removed_dirs"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert!(!orphan.exists() && !staging.join(&old).exists());
    assert_eq!(session(&db, &old)["status"], "expired");
    assert_eq!(session(&db, &applied)["status"], "applied");
    assert!(staging.join(&applied).exists() && staging.join(&at_start).exists());
    assert_eq!(tree(&e, &[]), e_applied, "gc touched E");

    // The daemon expires at its start what is older than its --staging-max-age.
    age(&db, &at_start, 3);
    drop(daemon);
    let again = Daemon::start_with(
        &tmp.path().join("state"),
        &[("code", &e)],
        &["--staging-max-age", "2d"],
    );
    again.wait_scanned();
    assert_eq!(session(&db, &at_start)["status"], "expired");
    assert!(!staging.join(&at_start).exists());
    assert_eq!(session(&db, &applied)["status"], "applied");
    assert_eq!(tree(&e, &[]), e_applied, "expiry touched E");
}

// ---------------------------------------------------------------------------------------------
// 7. The backups of applied pushes do not stay for good (invariants 5 and 9).

/// Makes session `id`'s apply `days` days older in the daemon's database.
fn age_apply(db: &Path, id: &str, days: i64) {
    let conn = rusqlite::Connection::open(db).expect("open db");
    conn.execute(
        "UPDATE upstream_sessions SET applied_unix = applied_unix - ?2 WHERE id = ?1",
        rusqlite::params![id, days * 86_400],
    )
    .expect("age the apply");
}

/// Bytes in the regular files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("list").flatten() {
        let meta = entry.metadata().expect("stat");
        if meta.is_dir() {
            total += bytes_under(&entry.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

#[test]
fn backups_of_applied_one_byte_edits_are_reclaimed_by_drop_gc_and_expiry_at_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let (e, daemon) = daemon_with(tmp.path(), &[("big.bin", &big)], &[]);
    let db = daemon.db.clone();
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    // A hostile R flips one byte of E's big file, three times; E's user applies each push, and
    // each apply keeps a whole copy of the file it replaced.
    let mut pushed = Vec::new();
    for round in 0..3 {
        let mut edited = std::fs::read(r.join("big.bin")).expect("R's copy");
        edited[round] ^= 0xff;
        write(&r.join("big.bin"), &edited);
        let summary = client.push_json(&daemon.url());
        let id = summary["session_id"]
            .as_str()
            .expect("a session")
            .to_string();
        zync_apply_ok(&db, &["apply", &id, "--non-interactive", "--force"]);
        client.once_ok(&daemon.url());
        pushed.push(id);
    }
    let staging = staging_root(&db);
    let four_mib = big.len() as u64;
    assert!(
        bytes_under(&staging) >= 3 * four_mib,
        "three backups of the big file: {} bytes staged",
        bytes_under(&staging)
    );
    let e_applied = tree(&e, &[]);

    // drop --discard-backups: the first push's backups go at once; E keeps what it applied.
    let out = zync_apply_ok(&db, &["drop", &pushed[0], "--discard-backups"]);
    assert!(
        out.contains(&format!("settled session {}", pushed[0])),
        "{out}"
    );
    assert_eq!(session(&db, &pushed[0])["status"], "settled");
    assert!(!staging.join(&pushed[0]).exists());
    let out = output_within_deadline(zync_apply(&db, &["undo", &pushed[0]]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot be undone"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tree(&e, &[]), e_applied, "drop or undo touched E");

    // gc: an apply older than --older-than loses its backups; a recent one keeps them.
    age_apply(&db, &pushed[1], 40);
    let report = zync_apply_json(&db, &["gc", "--older-than", "30d", "--json"]);
    let settled: Vec<&str> = report["settled"]
        .as_array()
        .expect("settled")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(settled, [pushed[1].as_str()], "{report}");
    assert!(!staging.join(&pushed[1]).exists());
    assert_eq!(session(&db, &pushed[2])["status"], "applied");
    assert!(staging.join(&pushed[2]).exists());

    // The daemon does the same at its start, by its --staging-max-age.
    age_apply(&db, &pushed[2], 3);
    drop(daemon);
    let again = Daemon::start_with(
        &tmp.path().join("state"),
        &[("code", &e)],
        &["--staging-max-age", "2d"],
    );
    again.wait_scanned();
    assert_eq!(session(&db, &pushed[2])["status"], "settled");
    assert!(
        bytes_under(&staging) < four_mib,
        "backups left: {} bytes staged",
        bytes_under(&staging)
    );
    assert_eq!(tree(&e, &[]), e_applied, "settling touched E");
}

// ---------------------------------------------------------------------------------------------
// 8. What R says about itself stays small on E (invariant 9): a version or a session
//    description of megabytes, sent at every connection or session, would grow E's database
//    and log without bound while staging nothing.

#[tokio::test]
async fn a_long_client_version_or_session_description_is_refused_and_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_e, daemon) = daemon_with(tmp.path(), &[("a.txt", b"a\n")], &[]);
    let db = tmp.path().join("state/sync.db");
    let huge = "v".repeat(1 << 20);

    // AUTH with a proof that verifies, and a version of 1 MiB.
    let mut ws = peer::upgrade(&daemon).await;
    let (client_nonce, challenge) = peer::hello(&mut ws, "talkative").await;
    assert_eq!(challenge["status"], "ok", "{challenge}");
    let daemon_nonce =
        zync_proto::Nonce::from_hex(challenge["daemon_nonce"].as_str().unwrap_or_default())
            .expect("daemon nonce");
    let token = peer::token_of(&daemon);
    let proof = zync_proto::proof(
        &token,
        zync_proto::Role::Client,
        &client_nonce,
        &daemon_nonce,
        "talkative",
    );
    let reply = peer::exchange(
        &mut ws,
        json!({"id": 2, "operation": "AUTH", "client_proof": proof, "client_version": huge}),
    )
    .await;
    refused(
        &reply,
        "bad_request",
        &["client_version must be 1 to 64 bytes"],
    );
    let status = zync_apply_json(&db, &["status", "--json"]);
    assert!(
        !status.to_string().contains("talkative"),
        "the refused client was recorded: {}",
        &status.to_string()[..200.min(status.to_string().len())]
    );

    // A session described in 1 MiB: refused before anything is opened; a short one is fine.
    let (mut peer, _) = Peer::authenticated(&daemon, "describes").await;
    let reply = peer
        .call(json!({"operation": "PREPARE_UPSTREAM", "description": huge}))
        .await;
    refused(
        &reply,
        "bad_request",
        &["description must be 1 to 256 bytes"],
    );
    let reply = peer
        .call(json!({"operation": "PREPARE_UPSTREAM", "description": "gpu-box"}))
        .await;
    assert_eq!(reply["status"], "ok", "{reply}");

    let log = daemon.log_text();
    assert!(
        !log.contains(&"v".repeat(1000)),
        "R's megabyte reached E's log ({} bytes of log)",
        log.len()
    );
}
