//! End-to-end: the upstream path, R -> E. `zync-client --update-upstream` pushes R's edits to the
//! daemon, which stages them beside its database; `zync-apply` lists, shows, applies and undoes
//! them on E (invariants 4 and 5, docs/ARCHITECTURE.md; docs/PROTOCOL.md "Upstream sessions"). The
//! last tests speak the protocol directly to check what the daemon refuses and how it cleans up a
//! session whose connection ended before FINALIZE_UPSTREAM.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::peer::{Peer, MAX_CHUNK};
use crate::common::proxy::Proxy;
use crate::common::*;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// Running the binaries.

/// Runs `cmd` to its end, killing it and failing after `limit`. With `piped_stdin` its stdin is
/// a pipe the test holds open (not a terminal, and never closed while it runs); otherwise
/// /dev/null.
fn run_within(mut cmd: Command, limit: Duration, piped_stdin: bool) -> Output {
    cmd.stdin(if piped_stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let shown = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
    let stdin = child.stdin.take();
    let start = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            drop(stdin);
            return child.wait_with_output().expect("collect output");
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect output");
            panic!(
                "{shown} did not exit within {limit:?}; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `zync-apply --db DB ARGS...` (no --dirs: the daemon recorded its mapping in the database).
fn zync_apply_out(db: &Path, args: &[&str]) -> Output {
    run_within(zync_apply(db, args), DEADLINE, false)
}

/// `zync-apply` that must exit with `code`; returns its stdout.
fn zync_apply_code(db: &Path, args: &[&str], code: i32) -> String {
    let out = zync_apply_out(db, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "zync-apply {args:?}: expected exit code {code}, got {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// `zync-apply show ID --json`.
fn show_json(db: &Path, id: &str) -> Value {
    let text = zync_apply_code(db, &["show", id, "--json"], 0);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("show --json is not JSON ({e}): {text}"))
}

/// The entry for `path` in a `show --json` document.
fn file_in<'a>(show: &'a Value, path: &str) -> &'a Value {
    show["files"]
        .as_array()
        .expect("show --json has files")
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} is not in the session: {show:#}"))
}

/// The paths of a `show --json` document's files.
fn paths_in(show: &Value) -> BTreeSet<String> {
    show["files"]
        .as_array()
        .expect("show --json has files")
        .iter()
        .map(|f| f["path"].as_str().expect("path").to_string())
        .collect()
}

/// `zync-apply list [--all] --json`.
fn list_json(db: &Path, all: bool) -> Vec<Value> {
    let mut args = vec!["list", "--json"];
    if all {
        args.push("--all");
    }
    let text = zync_apply_code(db, &args, 0);
    let value: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("list --json ({e}): {text}"));
    value.as_array().expect("list --json is an array").clone()
}

/// The session `id` as `list --all --json` shows it.
fn listed(db: &Path, id: &str) -> Option<Value> {
    list_json(db, true).into_iter().find(|s| s["id"] == id)
}

/// Pushes (`--update-upstream --json`) and returns the session id, which must be a UUID.
fn push_session(client: &ClientSpec, url: &str) -> String {
    let summary = client.push_json(url);
    let id = summary["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the push sent no session: {summary}"))
        .to_string();
    assert!(
        id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'),
        "the session id is not a UUID: {id:?}"
    );
    id
}

/// Content, mode and mtime of every file under `root`: what "byte for byte" compares.
fn files_with_mtime(root: &Path) -> BTreeMap<String, (Node, i64)> {
    tree(root, &[])
        .into_iter()
        .filter(|(_, node)| matches!(node, Node::File { .. }))
        .map(|(path, node)| {
            let meta = std::fs::symlink_metadata(root.join(&path)).expect("stat");
            (
                path,
                (node, meta.mtime() * 1_000_000_000 + meta.mtime_nsec()),
            )
        })
        .collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// A daemon on E with one directory `code`, and a client mapping it on R, synced once.

struct Pair {
    _tmp: tempfile::TempDir,
    /// The temp dir holding everything below.
    top: PathBuf,
    e: PathBuf,
    r: PathBuf,
    daemon: Daemon,
    client: ClientSpec,
}

impl Pair {
    /// Writes `files` on E, starts the daemon, and mirrors E on R with `--once`.
    fn new(files: &[(&str, &[u8])]) -> Pair {
        Pair::with_daemon_args(files, &[])
    }

    /// [`Pair::new`] with `extra` on the daemon's command line.
    fn with_daemon_args(files: &[(&str, &[u8])], extra: &[&str]) -> Pair {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().to_path_buf();
        let e = top.join("e");
        std::fs::create_dir_all(&e).unwrap();
        for (path, data) in files {
            write(&e.join(path), data);
        }
        let state = top.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let daemon = Daemon::start_with(&state, &[("code", &e)], extra);
        daemon.wait_scanned();
        let r = top.join("r");
        let client = ClientSpec::new(&top.join("client"), &daemon, &[("code", &r)]);
        client.once_ok(&daemon.url());
        assert_same_tree(&e, &r, &[]);
        Pair {
            _tmp: tmp,
            top,
            e,
            r,
            daemon,
            client,
        }
    }

    fn url(&self) -> String {
        self.daemon.url()
    }

    fn db(&self) -> &Path {
        &self.daemon.db
    }

    fn push_session(&self) -> String {
        push_session(&self.client, &self.url())
    }

    fn session_dir(&self, id: &str) -> PathBuf {
        staging_root(self.db()).join(id)
    }
}

// ---------------------------------------------------------------------------------------------
// 1. The round trip.

#[test]
fn round_trip_r_edits_are_staged_reviewed_applied_and_come_back_without_downloads() {
    let p = Pair::new(&[
        ("notes.txt", b"line one\nline two\nline three\n"),
        ("keep.txt", b"unchanged\n"),
        ("gone.txt", b"delete me on R\n"),
        ("sub/inner.txt", b"inner\n"),
    ]);
    let (e, r, db) = (&p.e, &p.r, p.db());
    // R: modify, add (at the top and in a new subdirectory), delete.
    write(
        &r.join("notes.txt"),
        "line one\nline 2, edited on R\nline three\n",
    );
    write(&r.join("added.txt"), "added on R\n");
    write(&r.join("newdir/deeper/new.txt"), "new in a new directory\n");
    std::fs::remove_file(r.join("gone.txt")).unwrap();
    let e_before = tree(e, &[]);

    let id = p.push_session();
    // Staged, not applied: E is untouched so far.
    assert_eq!(tree(e, &[]), e_before, "pushing changed E before any apply");

    // list: one line, beginning with the id, status staged.
    let list = zync_apply_code(db, &["list"], 0);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 1, "list:\n{list}");
    assert!(
        lines[0].starts_with(&id) && lines[0].contains("staged"),
        "list line for {id}:\n{list}"
    );
    assert!(
        lines[0].contains("4 files") && lines[0].contains("0 conflicts"),
        "{list}"
    );

    // show --json: exactly R's four changes, none a conflict.
    let show = show_json(db, &id);
    let expected: BTreeSet<String> = [
        "notes.txt",
        "added.txt",
        "newdir/deeper/new.txt",
        "gone.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(paths_in(&show), expected, "{show:#}");
    assert_eq!(file_in(&show, "gone.txt")["action"], "delete", "{show:#}");
    for path in ["notes.txt", "added.txt", "newdir/deeper/new.txt"] {
        assert_eq!(file_in(&show, path)["action"], "write", "{path}: {show:#}");
    }
    for path in &expected {
        let f = file_in(&show, path);
        assert_eq!(f["conflict"], false, "{path}: {show:#}");
        assert_eq!(f["state"], "staged", "{path}: {show:#}");
    }

    // show --diff: a unified diff hunk of the modified file with its old and new lines.
    let diff = zync_apply_code(db, &["show", &id, "--diff"], 0);
    assert!(diff.contains("@@ -1,3 +1,3 @@"), "no hunk header:\n{diff}");
    assert!(
        diff.contains("\n-line two\n") && diff.contains("\n+line 2, edited on R\n"),
        "the hunk lacks the old and new lines:\n{diff}"
    );
    assert!(diff.contains("+added on R"), "{diff}");
    assert!(diff.contains("-delete me on R"), "{diff}");

    // apply: E now has R's versions.
    zync_apply_code(db, &["apply", &id, "--non-interactive"], 0);
    assert_eq!(
        read(&e.join("notes.txt")),
        b"line one\nline 2, edited on R\nline three\n"
    );
    assert_eq!(read(&e.join("added.txt")), b"added on R\n");
    assert_eq!(
        read(&e.join("newdir/deeper/new.txt")),
        b"new in a new directory\n"
    );
    assert!(!e.join("gone.txt").exists(), "gone.txt is still on E");
    assert_eq!(read(&e.join("keep.txt")), b"unchanged\n");
    assert_same_tree(e, r, &[]);
    assert_eq!(
        listed(db, &id).expect("session listed")["status"],
        "applied"
    );

    // The client takes E's new state back without downloading what it already has.
    let before = p.client.status_json(&p.url());
    let proxy = Proxy::to_port(p.daemon.port);
    let out = p.client.once_ok(&proxy.url());
    let log = stderr(&out);
    let after = p.client.status_json(&p.url());
    assert!(
        after["dirs"][0]["client_sequence"].as_u64()
            > before["dirs"][0]["client_sequence"].as_u64()
            && after["in_sync"] == true,
        "the client took none of E's changes after the apply:\nbefore {before}\nafter {after}\n{log}"
    );
    let fetched = proxy.downloads();
    for path in ["notes.txt", "added.txt", "newdir/deeper/new.txt"] {
        assert!(
            !fetched.iter().any(|f| f == &format!("code/{path}")),
            "{path} was downloaded again although R has it (downloads: {fetched:?}):\n{log}"
        );
    }
    let copies: Vec<String> = tree(r, &[])
        .into_keys()
        .filter(|k| k.contains(".zync-conflict-"))
        .collect();
    assert!(copies.is_empty(), "conflict copies on R: {copies:?}\n{log}");
    assert_same_tree(e, r, &[]);

    // Nothing left to send, and no new session.
    let summary = p.client.push_json(&p.url());
    assert!(
        summary["session_id"].is_null() && summary["files"] == 0,
        "a second push sent something: {summary}"
    );
    let list = zync_apply_code(db, &["list"], 0);
    assert!(
        list.starts_with("no pending sessions"),
        "list after everything was applied:\n{list}"
    );
    let all = list_json(db, true);
    assert_eq!(all.len(), 1, "sessions: {all:#?}");
    assert_eq!(all[0]["id"], id.as_str());
}

// ---------------------------------------------------------------------------------------------
// 2. The three-way conflict rule, end to end.

/// What one side does to a row's file after the first sync.
#[derive(Debug, Clone, Copy)]
enum Change {
    Keep,
    Write(&'static str),
    Delete,
    MakeDir,
}

struct Row {
    name: &'static str,
    path: &'static str,
    /// E's content before R first syncs (None: the file does not exist yet).
    initial: Option<&'static str>,
    e: Change,
    r: Change,
    conflict: bool,
}

fn do_change(root: &Path, path: &str, change: Change) {
    let p = root.join(path);
    match change {
        Change::Keep => {}
        Change::Write(text) => write(&p, text),
        Change::Delete => std::fs::remove_file(&p).unwrap(),
        Change::MakeDir => {
            if p.exists() {
                std::fs::remove_file(&p).unwrap();
            }
            std::fs::create_dir_all(p.join("inside")).unwrap();
        }
    }
}

#[test]
fn three_way_conflict_flags_follow_the_documented_rule() {
    use Change::*;
    let rows = [
        Row {
            name: "E unchanged + R modified",
            path: "r1.txt",
            initial: Some("base 1\n"),
            e: Keep,
            r: Write("R's edit of row 1\n"),
            conflict: false,
        },
        Row {
            name: "E changed + R modified",
            path: "r2.txt",
            initial: Some("base 2\n"),
            e: Write("E's edit of row 2\n"),
            r: Write("R's edit of row 2, longer\n"),
            conflict: true,
        },
        Row {
            name: "E changed to the same content as R",
            path: "r3.txt",
            initial: Some("base 3\n"),
            e: Write("the same edit on both sides\n"),
            r: Write("the same edit on both sides\n"),
            conflict: false,
        },
        Row {
            name: "R deleted + E unchanged",
            path: "r4.txt",
            initial: Some("base 4\n"),
            e: Keep,
            r: Delete,
            conflict: false,
        },
        Row {
            name: "R deleted + E changed",
            path: "r5.txt",
            initial: Some("base 5\n"),
            e: Write("E's edit of row 5\n"),
            r: Delete,
            conflict: true,
        },
        Row {
            name: "new on both sides, equal content",
            path: "r6.txt",
            initial: None,
            e: Write("new on both, equal\n"),
            r: Write("new on both, equal\n"),
            conflict: false,
        },
        Row {
            name: "new on both sides, different content",
            path: "r7.txt",
            initial: None,
            e: Write("new on E\n"),
            r: Write("new on R, different\n"),
            conflict: true,
        },
        // Further cells of the table in docs/PROTOCOL.md.
        Row {
            name: "new on R only",
            path: "r8.txt",
            initial: None,
            e: Keep,
            r: Write("only on R\n"),
            conflict: false,
        },
        Row {
            name: "E deleted + R modified",
            path: "r9.txt",
            initial: Some("base 9\n"),
            e: Delete,
            r: Write("R's edit of row 9\n"),
            conflict: true,
        },
        Row {
            name: "deleted on both sides",
            path: "r10.txt",
            initial: Some("base 10\n"),
            e: Delete,
            r: Delete,
            conflict: false,
        },
        Row {
            name: "E replaced the file by a directory + R modified",
            path: "r11.txt",
            initial: Some("base 11\n"),
            e: MakeDir,
            r: Write("R's edit of row 11\n"),
            conflict: true,
        },
    ];
    let initial: Vec<(&str, &[u8])> = rows
        .iter()
        .filter_map(|row| row.initial.map(|t| (row.path, t.as_bytes())))
        .collect();
    let p = Pair::new(&initial);
    for row in &rows {
        do_change(&p.e, row.path, row.e);
        do_change(&p.r, row.path, row.r);
    }
    let id = p.push_session();
    let show = show_json(p.db(), &id);
    let mut wanted_conflicts = 0;
    for row in &rows {
        let f = file_in(&show, row.path);
        assert_eq!(
            f["conflict_at_staging"], row.conflict,
            "row {:?}: the daemon's conflict flag at staging: {f:#}",
            row.name
        );
        assert_eq!(
            f["conflict"], row.conflict,
            "row {:?}: zync-apply show's conflict check: {f:#}",
            row.name
        );
        let action = if matches!(row.r, Delete) {
            "delete"
        } else {
            "write"
        };
        assert_eq!(f["action"], action, "row {:?}: {f:#}", row.name);
        wanted_conflicts += u64::from(row.conflict);
    }
    assert_eq!(
        paths_in(&show).len(),
        rows.len(),
        "the session has other files than the rows: {show:#}"
    );
    let session = listed(p.db(), &id).expect("the session is listed");
    assert_eq!(session["conflicts"], wanted_conflicts, "{session:#}");
    assert_eq!(session["files"], rows.len() as u64, "{session:#}");
}

// ---------------------------------------------------------------------------------------------
// 3. Conflicts, and binary content the review cannot show, stay staged without --force;
// --force applies them; undo restores E exactly.

#[test]
fn conflicts_stay_staged_until_forced_and_undo_restores_e_byte_for_byte() {
    let big_old = pseudo_random(300_000, 11);
    let p = Pair::new(&[
        ("mod.bin", &big_old),
        ("conf.txt", b"base of the conflict\n"),
        ("del.txt", b"deleted on R\n"),
        ("keep.txt", b"not in the session\n"),
    ]);
    let (e, r, db) = (&p.e, &p.r, p.db());
    std::fs::set_permissions(e.join("del.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // R syncs that mode before it deletes the file: a deletion of a file whose mode E changed
    // since R's base is a conflict of its own (a_mode_changed_on_both_sides_...).
    wait_until("del.txt's mode on R", || {
        p.client.once_ok(&p.url());
        std::fs::metadata(r.join("del.txt")).is_ok_and(|m| m.mode() & 0o777 == 0o600)
    });

    write(&r.join("mod.bin"), pseudo_random(123_457, 12));
    write(&r.join("conf.txt"), "R's side of the conflict\n");
    std::fs::remove_file(r.join("del.txt")).unwrap();
    write(&r.join("added.txt"), "new on R\n");
    // E edits the same file before the push.
    write(&e.join("conf.txt"), "E's side of the conflict\n");

    let id = p.push_session();
    let show = show_json(db, &id);
    assert_eq!(file_in(&show, "conf.txt")["conflict"], true, "{show:#}");
    for path in ["mod.bin", "del.txt", "added.txt"] {
        assert_eq!(file_in(&show, path)["conflict"], false, "{path}: {show:#}");
    }
    assert!(
        file_in(&show, "mod.bin")["not_shown"]
            .as_str()
            .is_some_and(|why| why.contains("binary")),
        "{show:#}"
    );

    let e_before = files_with_mtime(e);

    // Without --force: exit 3, the conflict and the binary file stay staged and E's versions
    // untouched; the rest is applied.
    let out = zync_apply_code(db, &["apply", &id, "--non-interactive"], 3);
    assert!(
        out.contains("not shown, left staged: code/mod.bin"),
        "{out}"
    );
    assert_eq!(
        files_with_mtime(e).get("conf.txt"),
        e_before.get("conf.txt"),
        "E's conflicting file was touched"
    );
    assert_eq!(read(&e.join("conf.txt")), b"E's side of the conflict\n");
    let show = show_json(db, &id);
    for path in ["conf.txt", "mod.bin"] {
        assert_eq!(file_in(&show, path)["state"], "staged", "{path}: {show:#}");
    }
    for path in ["del.txt", "added.txt"] {
        assert_eq!(file_in(&show, path)["state"], "applied", "{path}: {show:#}");
    }
    assert_eq!(read(&e.join("mod.bin")), big_old);
    assert!(!e.join("del.txt").exists());
    assert_eq!(read(&e.join("added.txt")), b"new on R\n");
    assert_eq!(listed(db, &id).expect("listed")["status"], "partial");

    // --force: R's version replaces E's.
    zync_apply_code(db, &["apply", &id, "--force", "--non-interactive"], 0);
    assert_eq!(read(&e.join("conf.txt")), b"R's side of the conflict\n");
    assert_eq!(read(&e.join("mod.bin")), pseudo_random(123_457, 12));
    assert_eq!(listed(db, &id).expect("listed")["status"], "applied");

    // undo: every file of the session as it was, byte for byte (content, mode, mtime), the
    // deleted one back and the added one gone.
    let out = zync_apply_code(db, &["undo", &id], 0);
    let e_after = files_with_mtime(e);
    if e_after != e_before {
        let mut diff = String::new();
        for (k, v) in &e_before {
            match e_after.get(k) {
                None => diff.push_str(&format!("  missing after undo: {k}\n")),
                Some(w) if w != v => {
                    diff.push_str(&format!("  differs: {k}: before {v:?}, after {w:?}\n"))
                }
                _ => {}
            }
        }
        for k in e_after.keys().filter(|k| !e_before.contains_key(*k)) {
            diff.push_str(&format!("  left after undo: {k}\n"));
        }
        panic!("undo did not restore E:\n{diff}undo said:\n{out}");
    }
    assert_eq!(read(&e.join("mod.bin")), big_old);
    assert_eq!(listed(db, &id).expect("listed")["status"], "undone");
}

// ---------------------------------------------------------------------------------------------
// 4. A conflict that appears after staging.

#[test]
fn apply_does_not_overwrite_a_file_that_changed_on_e_after_staging() {
    let p = Pair::new(&[("f.txt", b"base\n"), ("other.txt", b"other\n")]);
    let db = p.db();
    write(&p.r.join("f.txt"), "R's edit\n");
    let id = p.push_session();
    let show = show_json(db, &id);
    assert_eq!(file_in(&show, "f.txt")["conflict_at_staging"], false);

    write(&p.e.join("f.txt"), "E's edit after the push\n");
    let show = show_json(db, &id);
    assert_eq!(
        file_in(&show, "f.txt")["conflict"],
        true,
        "show does not see the new conflict: {show:#}"
    );
    let before = files_with_mtime(&p.e);
    zync_apply_code(db, &["apply", &id, "--non-interactive"], 3);
    assert_eq!(read(&p.e.join("f.txt")), b"E's edit after the push\n");
    assert_eq!(files_with_mtime(&p.e), before, "E changed");
    assert_eq!(file_in(&show_json(db, &id), "f.txt")["state"], "staged");
}

// ---------------------------------------------------------------------------------------------
// 4b. A mode is part of a file's version: decided three-way as content is (invariant 5).

/// The permission bits (with setuid, setgid and sticky) of `path`.
fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// R edits a script it synced and pushes the edit; E's user then makes the script executable.
/// `show` says E's mode stays, and `apply --non-interactive` (no --force) lands R's content
/// with the script still executable: R did not change the mode, so E's change is not undone.
/// The mode then comes back to R, and nothing is sent again.
#[test]
fn a_chmod_on_e_after_the_push_survives_r_s_edit_of_the_content() {
    let p = Pair::new(&[("deploy.sh", b"#!/bin/sh\necho deploy\n")]);
    let (e, r, db) = (p.e.join("deploy.sh"), p.r.join("deploy.sh"), p.db());
    let base = mode_of(&e);
    assert_eq!(base & 0o111, 0, "the script starts not executable");
    let executable = base | 0o111;

    write(&r, "#!/bin/sh\necho deploy --verbose\n");
    let id = p.push_session();
    chmod(&e, executable);

    let show = show_json(db, &id);
    let file = file_in(&show, "deploy.sh");
    assert_eq!(
        (
            &file["conflict"],
            &file["mode_decision"],
            &file["mode_on_e"],
            &file["mode_change"]
        ),
        (
            &json!(false),
            &json!("keep_e"),
            &json!(format!("{executable:04o}")),
            &json!(false)
        ),
        "show must say that E's mode stays: {show:#}"
    );
    let out = zync_apply_code(db, &["apply", &id, "--non-interactive"], 0);
    assert_eq!(read(&e), b"#!/bin/sh\necho deploy --verbose\n", "{out}");
    assert_eq!(
        mode_of(&e),
        executable,
        "apply undid E's chmod without a conflict or --force:\n{out}"
    );

    wait_until("E's mode back on R", || {
        p.client.once_ok(&p.url());
        mode_of(&r) & 0o111 == 0o111
    });
    assert_eq!(
        p.client.push_json(&p.url())["session_id"],
        Value::Null,
        "sent again"
    );
}

/// E and R both changed a mode since R's base: R a chmod only (its content unchanged) and a
/// deletion, E a chmod of each after the push, and of a third file before it (flagged when
/// staged). Each is a conflict like one of content: left staged by a non-interactive run,
/// E untouched; applied with --force, with backups that undo restores E's modes from.
#[test]
fn a_mode_changed_on_both_sides_is_a_conflict_for_a_chmod_and_a_deletion() {
    let p = Pair::new(&[
        ("key.sh", b"secret\n"),
        ("run.sh", b"#!/bin/sh\n"),
        ("old.sh", b"old\n"),
    ]);
    let (e, r, db) = (&p.e, &p.r, p.db());
    chmod(&r.join("key.sh"), 0o600);
    chmod(&r.join("run.sh"), 0o700);
    std::fs::remove_file(r.join("old.sh")).expect("rm on R");
    chmod(&e.join("run.sh"), 0o755);
    let summary = p.client.push_json(&p.url());
    let id = summary["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("nothing sent: {summary}"))
        .to_string();
    assert_eq!(
        summary["conflicts"], 1,
        "run.sh is one when staged: {summary}"
    );
    chmod(&e.join("key.sh"), 0o755);
    chmod(&e.join("old.sh"), 0o755);

    let show = show_json(db, &id);
    for path in ["key.sh", "run.sh", "old.sh"] {
        let file = file_in(&show, path);
        assert_eq!(
            (&file["conflict"], &file["mode_decision"]),
            (&json!(true), &json!("conflict")),
            "{path}: {show:#}"
        );
        assert!(
            file["mode_conflict"]
                .as_str()
                .is_some_and(|why| why.contains("E changed the mode since R's base")),
            "{path}: {show:#}"
        );
    }
    assert_eq!(file_in(&show, "run.sh")["conflict_at_staging"], true);
    let text = zync_apply_code(db, &["show", &id], 0);
    assert!(
        text.lines().filter(|l| l.contains("MODE CONFLICT")).count() == 3,
        "{text}"
    );

    let before = files_with_mtime(e);
    let out = zync_apply_code(db, &["apply", &id, "--non-interactive"], 3);
    assert!(
        out.contains("conflict, left staged: code/key.sh (mode: "),
        "{out}"
    );
    assert_eq!(files_with_mtime(e), before, "E changed:\n{out}");
    for path in ["key.sh", "run.sh", "old.sh"] {
        assert_eq!(mode_of(&e.join(path)), 0o755, "{path}: {out}");
    }

    let out = zync_apply_code(db, &["apply", &id, "--non-interactive", "--force"], 0);
    assert_eq!(mode_of(&e.join("key.sh")), 0o600, "{out}");
    assert_eq!(mode_of(&e.join("run.sh")), 0o700, "{out}");
    assert!(!e.join("old.sh").exists(), "{out}");
    let out = zync_apply_code(db, &["undo", &id], 0);
    assert_eq!(
        files_with_mtime(e),
        before,
        "undo did not restore E:\n{out}"
    );
}

/// An older client sends no base mode: the daemon takes E's mode when the file is staged for
/// it, so a chmod made on E after the push is still never undone silently (a write of R's
/// content keeps it, a deletion becomes a conflict).
#[tokio::test]
async fn without_a_base_mode_from_r_a_chmod_on_e_after_the_push_is_still_kept() {
    let p = Pair::new(&[("tool.sh", b"echo E\n"), ("old.sh", b"old\n")]);
    let (e, db) = (&p.e, p.db().to_path_buf());
    let base = mode_of(&e.join("tool.sh"));
    let mut peer = hello(&p.daemon).await;
    let id = peer.prepare_upstream().await;
    let content = b"echo R\n";
    let request = peer.id();
    peer.send_json(&json!({
        "id": request, "operation": "UPSTREAM_FILE", "session_id": id, "dir": "code",
        "path": "tool.sh", "action": "write", "mode": base, "size": content.len(),
        "mtime_ns": 1_700_000_000_000_000_000i64, "sha256": sha256(content),
        "base_sha256": sha256(b"echo E\n"),
    }))
    .await;
    let mut frame = request.to_be_bytes().to_vec();
    frame.extend_from_slice(content);
    peer.send(tokio_tungstenite::tungstenite::Message::binary(frame))
        .await;
    let reply = peer.recv_text().await;
    assert_eq!(
        (&reply["status"], &reply["conflict"]),
        (&json!("ok"), &json!(false)),
        "{reply}"
    );
    let reply = peer
        .ok(json!({
            "operation": "UPSTREAM_FILE", "session_id": id, "dir": "code", "path": "old.sh",
            "action": "delete", "base_sha256": sha256(b"old\n"),
        }))
        .await;
    assert_eq!(reply["conflict"], false, "{reply}");
    peer.ok(json!({"operation": "FINALIZE_UPSTREAM", "session_id": id}))
        .await;
    drop(peer);
    chmod(&e.join("tool.sh"), base | 0o111);
    chmod(&e.join("old.sh"), 0o700);

    let out = zync_apply_code(&db, &["apply", &id, "--non-interactive"], 3);
    assert_eq!(read(&e.join("tool.sh")), b"echo R\n", "{out}");
    assert_eq!(mode_of(&e.join("tool.sh")), base | 0o111, "{out}");
    assert!(
        out.contains("conflict, left staged: code/old.sh (mode: "),
        "{out}"
    );
    assert_eq!(read(&e.join("old.sh")), b"old\n");
}

// ---------------------------------------------------------------------------------------------
// 7. An interactive apply with stdin not a terminal refuses at once.

/// Flushes (`fsync`, `fdatasync`, `syncfs`) that `pid` makes while `during` runs, counted by
/// `strace -c` attached to all its threads.
fn flushes_of(pid: u32, during: impl FnOnce()) -> u64 {
    syscalls_of(pid, &["fsync", "fdatasync", "syncfs"], during)
        .values()
        .sum()
}

/// The staged files of a push, and their rows, are made durable together when the session is
/// finalized: a push of many files costs E a handful of flushes, not one or two per file. The
/// session is complete and reviewable afterwards.
#[test]
fn a_push_of_many_files_is_flushed_at_finalize_not_file_by_file() {
    const FILES: usize = 120;
    let originals: Vec<(String, Vec<u8>)> = (0..FILES)
        .map(|i| {
            (
                format!("d{}/f{i:03}.txt", i % 4),
                format!("E {i}\n").into_bytes(),
            )
        })
        .collect();
    let files: Vec<(&str, &[u8])> = originals
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    let p = Pair::new(&files);
    for (path, _) in &originals {
        write(&p.r.join(path), format!("R's edit of {path}\n"));
    }
    let mut id = String::new();
    let flushes = flushes_of(p.daemon.pid(), || id = p.push_session());
    assert!(
        flushes <= 40,
        "the daemon flushed {flushes} times for a push of {FILES} files (once or twice per \
         file?)"
    );
    let session = listed(p.db(), &id).unwrap_or_else(|| panic!("{id} is not listed"));
    assert_eq!(session["status"], "staged", "{session}");
    assert_eq!(session["files"], FILES, "{session}");
}

#[test]
fn interactive_apply_without_a_terminal_refuses_quickly_and_changes_nothing() {
    let p = Pair::new(&[("f.txt", b"base\n")]);
    let db = p.db();
    write(&p.r.join("f.txt"), "R's edit\n");
    write(&p.r.join("new.txt"), "new\n");
    let id = p.push_session();
    let before = files_with_mtime(&p.e);

    let start = Instant::now();
    let out = run_within(
        zync_apply(db, &["apply", &id]),
        Duration::from_secs(10),
        true,
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        !out.status.success(),
        "interactive apply without a terminal succeeded:\n{}",
        stdout(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("--non-interactive") && err.contains("--force"),
        "the refusal does not name --non-interactive and --force:\n{err}"
    );
    assert_eq!(files_with_mtime(&p.e), before, "E changed");
    let show = show_json(db, &id);
    for path in ["f.txt", "new.txt"] {
        assert_eq!(file_in(&show, path)["state"], "staged", "{show:#}");
    }
    assert_eq!(listed(db, &id).expect("listed")["status"], "staged");
}

// ---------------------------------------------------------------------------------------------
// The protocol, spoken directly.

/// Connects and completes the handshake.
async fn hello(daemon: &Daemon) -> Peer {
    Peer::authenticated(daemon, "upstream-test").await.0
}

fn expect_error(reply: &Value, code: &str, what: &str) {
    assert_eq!(reply["status"], "error", "{what} was accepted: {reply}");
    assert_eq!(reply["code"], code, "{what}: wrong error code: {reply}");
}

// 5. A session whose connection ends before FINALIZE_UPSTREAM is aborted and cleaned up.

#[tokio::test]
async fn a_session_left_unfinished_is_aborted_and_its_staged_files_removed() {
    let p = Pair::new(&[("a.txt", b"on E\n")]);
    let db = p.db().to_path_buf();
    let e_before = files_with_mtime(&p.e);

    // Twice: once dropping the TCP connection, once closing the WebSocket properly.
    for clean_close in [false, true] {
        let how = if clean_close {
            "a WebSocket close"
        } else {
            "a dropped TCP connection"
        };
        let mut peer = hello(&p.daemon).await;
        let id = peer.prepare_upstream().await;
        let content = pseudo_random(MAX_CHUNK + 1000, 5);
        let reply = peer.upload_ok(&id, "a.txt", &content).await;
        assert_eq!(
            reply["conflict"], true,
            "E's a.txt differs and R had no base"
        );
        let dir = p.session_dir(&id);
        assert_eq!(
            names_in(&dir).len(),
            1,
            "{how}: the upload is not staged in {}",
            dir.display()
        );
        let session = listed(&db, &id).expect("the open session is listed with --all");
        assert_eq!(session["status"], "receiving", "{how}: {session:#}");
        assert!(
            !list_json(&db, false).iter().any(|s| s["id"] == id.as_str()),
            "{how}: a receiving session is listed as pending"
        );
        // apply refuses a session still being received.
        let out = zync_apply_out(&db, &["apply", &id, "--non-interactive", "--force"]);
        assert!(
            !out.status.success(),
            "{how}: apply of a receiving session succeeded"
        );

        if clean_close {
            peer.ws.close(None).await.expect("close");
        }
        drop(peer);

        wait_until(&format!("{how}: the session to be aborted"), || {
            listed(&db, &id).is_some_and(|s| s["status"] == "aborted") && !dir.exists()
        });
        let text = zync_apply_code(&db, &["list", "--all"], 0);
        let line = text
            .lines()
            .find(|l| l.starts_with(&id))
            .unwrap_or_else(|| panic!("{how}: {id} not in list --all:\n{text}"));
        assert!(line.contains("aborted"), "{how}: {line}");
        assert_eq!(files_with_mtime(&p.e), e_before, "{how}: E changed");
    }
    assert!(
        list_json(&db, false).is_empty(),
        "aborted sessions are pending"
    );
}

// 6. Bad paths and bad content are refused; the connection and the session carry on.

#[tokio::test]
async fn bad_paths_and_bad_checksums_are_refused_and_nothing_escapes() {
    let p = Pair::new(&[("a.txt", b"on E\n")]);
    let db = p.db().to_path_buf();
    let outside_before = tree(&p.top, &["state"]);
    let etc_x_existed = Path::new("/etc/x").exists();

    let mut peer = hello(&p.daemon).await;
    let id = peer.prepare_upstream().await;
    let evil = b"written through a bad path\n";
    for path in ["../escape.txt", "/etc/x", "a/../../b"] {
        let reply = peer
            .upload_with(&id, path, evil, evil.len() as u64, &sha256(evil))
            .await;
        expect_error(&reply, "invalid_path", path);
        // The refused upload's content frame is dropped silently: the next reply is PING's.
        peer.ok(json!({"operation": "PING"})).await;
    }

    // Content that does not match its sha256, then content shorter than announced.
    let content = b"what R really sent\n";
    let reply = peer
        .upload_with(
            &id,
            "mismatch.txt",
            content,
            content.len() as u64,
            &sha256(b"what R announced!!\n"),
        )
        .await;
    expect_error(&reply, "checksum_mismatch", "a wrong sha256");
    let reply = peer
        .upload_with(
            &id,
            "short.txt",
            content,
            content.len() as u64 + 10,
            &sha256(content),
        )
        .await;
    expect_error(&reply, "checksum_mismatch", "content shorter than its size");
    peer.ok(json!({"operation": "PING"})).await;

    // The session still works.
    let good = b"a valid file\n";
    let reply = peer.upload_ok(&id, "sub/good.txt", good).await;
    assert_eq!(reply["path"], "sub/good.txt", "{reply}");
    assert_eq!(reply["conflict"], false, "{reply}");
    let done = peer
        .ok(json!({"operation": "FINALIZE_UPSTREAM", "session_id": id}))
        .await;
    assert_eq!(done["files"], 1, "{done}");
    assert_eq!(done["bytes"], good.len() as u64, "{done}");
    assert_eq!(done["conflicts"], 0, "{done}");

    // Only the valid file is staged, in its session's directory and nowhere else.
    let show = show_json(&db, &id);
    let staged: BTreeSet<String> = ["sub/good.txt".to_string()].into();
    assert_eq!(paths_in(&show), staged, "{show:#}");
    let session_dir = p.session_dir(&id);
    let in_session = names_in(&session_dir);
    assert_eq!(in_session.len(), 1, "staged files: {in_session:?}");
    let only = session_dir.join(in_session.iter().next().unwrap());
    assert_eq!(read(&only), good);
    assert_eq!(
        names_in(&staging_root(&db)),
        [id.clone()].into(),
        "the staging area holds more than the session's directory"
    );
    for stray in ["escape.txt", "b", "x"] {
        for dir in [p.top.join("state"), staging_root(&db), p.top.clone()] {
            assert!(
                !dir.join(stray).exists(),
                "{} was written",
                dir.join(stray).display()
            );
        }
    }
    assert_eq!(
        tree(&p.top, &["state"]),
        outside_before,
        "something was written outside the staging area"
    );
    assert_eq!(Path::new("/etc/x").exists(), etc_x_existed, "/etc/x");
    assert_eq!(listed(&db, &id).expect("listed")["status"], "staged");
}

// 7. E's disk without room for an upload: refused at once, and nothing is left taking room.

#[test]
fn an_upload_e_has_no_room_for_is_refused_before_it_is_sent_and_leaves_nothing_staged() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "on E\n");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let db = state.join("sync.db");
    // The staging area is a 32 MiB disk of its own, which only the daemon sees.
    let daemon = Daemon::start_with_tmpfs(&state, &[("code", &e)], &staging_root(&db), "32m");
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    let e_before = files_with_mtime(&e);
    write(&r.join("big.bin"), pseudo_random(64 << 20, 5));
    write(&r.join("fits.bin"), pseudo_random(4 << 20, 6));

    let proxy = crate::common::proxy::Proxy::to_port(daemon.port);
    let mut cmd = client.command(&proxy.url());
    cmd.arg("--update-upstream");
    let out = run_within(cmd, DEADLINE, false);
    let err = stderr(&out);
    assert!(!out.status.success(), "the push must fail:\n{err}");
    assert!(
        err.contains("cannot stage big.bin on E")
            && err.contains("no room for")
            && err.contains("free some space there"),
        "the error must name the file, the cause and what to do:\n{err}"
    );
    // The client stopped sending once it was refused, instead of sending all 64 MiB.
    let sent = proxy.bytes_to_daemon();
    assert!(
        sent < 16 << 20,
        "{sent} bytes sent for a refused 64 MiB file"
    );
    wait_until("the failed push's session to be aborted", || {
        let all = list_json(&db, true);
        !all.is_empty() && all.iter().all(|s| s["status"] == "aborted")
    });
    assert_eq!(files_with_mtime(&e), e_before, "E changed");

    // Without the file that cannot fit, the next push stages what does: the refused upload
    // left nothing behind that takes room (4 MiB and 16 MiB to spare fit in 32 MiB).
    std::fs::remove_file(r.join("big.bin")).unwrap();
    let id = push_session(&client, &daemon.url());
    let session = listed(&db, &id).expect("the new session is listed");
    assert_eq!(session["status"], "staged", "{session}");
    assert_eq!(session["files"], 1, "{session}");
}

// 8. A file R changes while it is pushed.

/// The paths staged in the session a push's JSON `summary` names.
fn staged_paths(p: &Pair, summary: &Value) -> BTreeSet<String> {
    let id = summary["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the push staged no session: {summary}"));
    paths_in(&show_json(p.db(), id))
}

/// Runs `zync-client --update-upstream --json` through `proxy` (300 ms each way, so that R has
/// hashed its changes long before it sends them), runs `meanwhile` (with the proxy and the
/// push's thread) once the push's session is open on E, and returns the run's output.
fn push_changing_meanwhile(
    p: &Pair,
    meanwhile: impl FnOnce(&Proxy, &std::thread::JoinHandle<Output>),
) -> Output {
    let proxy = Proxy::to_port(p.daemon.port);
    proxy.delay(Duration::from_millis(300));
    let mut cmd = p.client.command(&proxy.url());
    cmd.args(["--update-upstream", "--json"]);
    let push = std::thread::spawn(move || output_within_deadline(cmd));
    wait_until("the push to open its session on E", || {
        proxy
            .requests()
            .iter()
            .any(|r| r["operation"] == "PREPARE_UPSTREAM")
    });
    // R hashed its files before it opened the session; the content goes out after E's answer
    // comes back through the proxy, 300 ms from now.
    meanwhile(&proxy, &push);
    push.join().expect("the push's thread")
}

#[test]
fn a_file_changed_on_r_while_it_is_pushed_is_sent_again_as_it_is_now() {
    let p = Pair::new(&[("a.txt", b"E's version\n"), ("b.txt", b"E's b\n")]);
    write(&p.r.join("a.txt"), "R's first edit\n");
    write(&p.r.join("b.txt"), "R's edit of b\n");
    write(&p.r.join("c.txt"), "new on R, gone before it is sent\n");
    let out = push_changing_meanwhile(&p, |_, _| {
        // Other bytes than were hashed (the client sends as many as it announced).
        write(
            &p.r.join("a.txt"),
            "R's second edit, after the push began\n",
        );
        // Gone: E never had it, nothing to send any more.
        std::fs::remove_file(p.r.join("c.txt")).unwrap();
    });
    let (log, summary) = (stderr(&out), stdout(&out));
    assert!(out.status.success(), "the push failed:\n{log}\n{summary}");
    let summary: Value = serde_json::from_str(&summary).expect("the summary is JSON");
    assert_eq!(summary["changing"], 0, "{summary}\n{log}");
    assert_eq!(
        summary["files"], 2,
        "a.txt as it is now and b.txt: {summary}\n{log}"
    );
    assert!(
        log.contains("a.txt") && log.contains("sending it again as it is now"),
        "the log does not say a.txt was sent again:\n{log}"
    );
    assert_eq!(
        staged_paths(&p, &summary),
        BTreeSet::from(["a.txt".to_string(), "b.txt".to_string()])
    );
    let id = summary["session_id"]
        .as_str()
        .expect("a session")
        .to_string();
    zync_apply_code(p.db(), &["apply", &id, "--non-interactive"], 0);
    assert_eq!(
        read(&p.e.join("a.txt")),
        b"R's second edit, after the push began\n"
    );
    assert_eq!(read(&p.e.join("b.txt")), b"R's edit of b\n");
    assert!(!p.e.join("c.txt").exists(), "c.txt reached E");
}

#[test]
fn a_file_that_keeps_changing_while_it_is_pushed_is_left_out_and_the_push_says_so() {
    let p = Pair::new(&[("b.txt", b"E's b\n")]);
    let versions = [pseudo_random(32 << 20, 1), pseudo_random(32 << 20, 2)];
    write(&p.r.join("busy.bin"), &versions[0]);
    write(&p.r.join("b.txt"), "R's edit of b\n");
    let out = push_changing_meanwhile(&p, |proxy, push| {
        // About 2.6 s per upload of busy.bin: R reads most of it long after its request.
        proxy.delay(Duration::from_millis(5));
        let (busy, deadline) = (p.r.join("busy.bin"), Instant::now() + DEADLINE);
        let mut rewritten = 0;
        while !push.is_finished() && Instant::now() < deadline {
            let asked = proxy
                .requests()
                .iter()
                .filter(|r| r["operation"] == "UPSTREAM_FILE" && r["path"] == "busy.bin")
                .count();
            // Each time R starts sending busy.bin, it becomes the other version in place, so
            // R's read ends in other bytes than it hashed, every time.
            if asked > rewritten {
                rewritten = asked;
                use std::io::Write;
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&busy)
                    .and_then(|mut f| f.write_all(&versions[rewritten % 2]))
                    .unwrap();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let (log, summary) = (stderr(&out), stdout(&out));
    // Partly sent: a script must notice.
    assert_eq!(out.status.code(), Some(4), "{log}\n{summary}");
    assert!(
        log.contains("busy.bin")
            && log.contains("it changed on R while it was sent, 3 time(s)")
            && log.contains("push again once they are quiet"),
        "the push does not say busy.bin was left out and what to do:\n{log}"
    );
    let summary: Value = serde_json::from_str(&summary).expect("the summary is JSON");
    assert_eq!(
        (summary["changing"].clone(), summary["files"].clone()),
        (json!(1), json!(1)),
        "{summary}"
    );
    assert_eq!(
        staged_paths(&p, &summary),
        BTreeSet::from(["b.txt".to_string()])
    );
}

#[test]
fn a_directory_swapped_for_a_symlink_during_a_push_is_never_read_through() {
    let p = Pair::new(&[("sub/x.txt", b"E's x\n"), ("b.txt", b"E's b\n")]);
    write(&p.r.join("sub/x.txt"), "R's edit of x\n");
    write(&p.r.join("b.txt"), "R's edit of b\n");
    // Another user's trap: a file of the same name outside the root, readable by R's user.
    let outside = p.top.join("outside");
    write(&outside.join("x.txt"), "SECRET of R's user\n");
    let out = push_changing_meanwhile(&p, |_, _| {
        // R hashed sub/x.txt; before it is read to be sent, sub becomes a symlink.
        std::fs::rename(p.r.join("sub"), p.r.join("sub.moved")).unwrap();
        std::os::unix::fs::symlink(&outside, p.r.join("sub")).unwrap();
    });
    let (log, summary) = (stderr(&out), stdout(&out));
    assert_eq!(out.status.code(), Some(4), "{log}\n{summary}");
    assert!(
        log.contains("sub/x.txt") && log.contains("never reads through"),
        "the push does not say why sub/x.txt was not sent:\n{log}"
    );
    let summary: Value = serde_json::from_str(&summary).expect("the summary is JSON");
    assert_eq!(summary["changing"], 1, "{summary}");
    assert_eq!(
        staged_paths(&p, &summary),
        BTreeSet::from(["b.txt".to_string()])
    );
    // Nothing from outside the root reached E, staged or otherwise.
    let secret = sha256(b"SECRET of R's user\n");
    let staged = tree(&staging_root(p.db()), &[]);
    assert!(
        !staged
            .values()
            .any(|n| matches!(n, Node::File { sha256, .. } if *sha256 == secret)),
        "outside content staged on E: {staged:?}"
    );
}

/// Names that another user made in R's tree reach the terminal only made visible: a push and
/// `--status` log what they skip and what they send (here at the harness's debug level), and
/// a name of control characters would otherwise retitle the window, draw over what was
/// printed, or add a line of its own ("zync-client: in sync") to the log. E's daemon log gets
/// the pushed name made visible too.
#[test]
fn names_made_on_r_reach_the_logs_only_made_visible() {
    use std::os::unix::ffi::OsStrExt;
    let p = Pair::new(&[("a.txt", b"a\n")]);
    let lies = LIES;
    // Not UTF-8 (the \xff): the scan skips it, and says so.
    let skipped = [b"skip".as_slice(), lies.as_bytes(), b"\xff"].concat();
    write(&p.r.join(std::ffi::OsStr::from_bytes(&skipped)), "x\n");
    // A valid name: pushed, and named in the client's and the daemon's logs.
    write(&p.r.join(format!("sent{lies}")), "y\n");
    let mut push = p.client.command(&p.url());
    push.arg("--update-upstream");
    let pushed = run_within(push, DEADLINE, false);
    let mut status = p.client.command(&p.url());
    status.arg("--status");
    let status = run_within(status, DEADLINE, false);
    let daemon_log = p.daemon.log_text();
    for (what, out) in [
        (
            "the push",
            format!("{}{}", stdout(&pushed), stderr(&pushed)),
        ),
        (
            "--status",
            format!("{}{}", stdout(&status), stderr(&status)),
        ),
        ("the daemon's log", daemon_log),
    ] {
        assert_shown_visibly(what, &out, "zync-client: in sync");
    }
    assert!(pushed.status.success(), "{}", stderr(&pushed));
    let shown = stderr(&pushed);
    assert!(
        shown.contains("skip^[]0;owned^G^M^[[2K<U+009B>2J^Jzync-client: in sync"),
        "the skipped name should be shown, made visible: {shown}"
    );
}

/// A name made to drive a terminal and forge a line of the client's own.
const LIES: &str = "\u{1b}]0;owned\u{7}\r\u{1b}[2K\u{9b}2J\nzync-client: in sync";

/// E's refusal of a file R pushed quotes its name, and the push's summary quotes that refusal:
/// printed made visible, like the logs.
#[test]
fn e_s_refusal_of_a_name_made_on_r_is_printed_made_visible() {
    let p = Pair::with_daemon_args(&[("a.txt", b"a\n")], &["--ignore", "sent*"]);
    write(&p.r.join(format!("sent{LIES}")), "y\n");
    let mut push = p.client.command(&p.url());
    push.arg("--update-upstream");
    let pushed = run_within(push, DEADLINE, false);
    let summary = stdout(&pushed);
    assert_shown_visibly(
        "the push",
        &format!("{summary}{}", stderr(&pushed)),
        "zync-client: in sync",
    );
    assert!(
        summary.contains(
            "refused by E (sent^[]0;owned^G^M^[[2K<U+009B>2J^Jzync-client: in sync is ignored on E"
        ),
        "the summary should quote E's refusal, made visible: {summary}"
    );
}
