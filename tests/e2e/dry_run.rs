//! End-to-end: `zync-client --dry-run` lists what `--once` or `--update-upstream` would do and
//! changes nothing: R's tree and the client's database files stay byte for byte, nothing is
//! acknowledged, downloaded or staged, and the real run afterwards still does all the work.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;

use crate::common::proxy::Proxy;
use crate::common::*;

/// Everything under `root`, hidden files included, by relative path: kind, mode, mtime and
/// content (a file's sha256, a link's target). The root itself is the entry `.`, so a root
/// that a dry run created, or removed, shows.
fn fingerprint(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let rel = path
            .strip_prefix(root)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let rel = if rel.is_empty() { ".".to_string() } else { rel };
        let what = if meta.file_type().is_symlink() {
            format!(
                "link -> {:?}",
                std::fs::read_link(&path).unwrap_or_default()
            )
        } else if meta.is_dir() {
            for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                stack.push(entry.path());
            }
            "dir".to_string()
        } else {
            format!("file {}", file_sha(&path))
        };
        let mode = meta.permissions().mode() & 0o7777;
        out.insert(
            rel,
            format!(
                "{what} mode {mode:o} mtime {}.{}",
                meta.mtime(),
                meta.mtime_nsec()
            ),
        );
    }
    out
}

/// R's trees and the client's state directory (database, `-wal`, `-shm`, lock, token).
fn everything_on_r(roots: &[&Path]) -> BTreeMap<String, BTreeMap<String, String>> {
    roots
        .iter()
        .map(|root| (root.display().to_string(), fingerprint(root)))
        .collect()
}

/// Fails showing what changed between two fingerprints.
fn assert_untouched(
    before: &BTreeMap<String, BTreeMap<String, String>>,
    after: &BTreeMap<String, BTreeMap<String, String>>,
    what: &str,
) {
    let mut diff = String::new();
    for (root, files) in before {
        let empty = BTreeMap::new();
        let now = after.get(root).unwrap_or(&empty);
        for (path, was) in files {
            match now.get(path) {
                None => diff.push_str(&format!("  gone: {root}/{path} ({was})\n")),
                Some(is) if is != was => {
                    diff.push_str(&format!("  changed: {root}/{path}: {was} -> {is}\n"))
                }
                _ => {}
            }
        }
        for (path, is) in now.iter().filter(|(p, _)| !files.contains_key(*p)) {
            diff.push_str(&format!("  new: {root}/{path} ({is})\n"));
        }
    }
    assert!(diff.is_empty(), "{what} changed R:\n{diff}");
}

/// `zync-client ARGS --dry-run` through `url`.
fn dry(client: &ClientSpec, url: &str, args: &[&str]) -> Output {
    let mut cmd = client.command(url);
    cmd.args(args).arg("--dry-run");
    output_within_deadline(cmd)
}

/// The operations the clients sent through `proxy`.
fn operations(proxy: &Proxy) -> Vec<String> {
    proxy
        .requests()
        .iter()
        .filter_map(|r| r["operation"].as_str().map(str::to_string))
        .collect()
}

/// What a dry run must never send: writes of any kind, and downloads.
const WRITES: &[&str] = &[
    "ACK_CHANGES",
    "GET_FILE",
    "GET_FILES",
    "GET_DELTA",
    "PREPARE_UPSTREAM",
    "UPSTREAM_FILE",
    "FINALIZE_UPSTREAM",
];

/// Fails unless `proxy` carried a handshake (and, with `read`, that request) but none of
/// [`WRITES`]: "nothing sent" cannot pass by going around the proxy.
fn assert_read_only(proxy: &Proxy, read: &str, what: &str) {
    let ops = operations(proxy);
    assert!(
        ops.iter().any(|op| op == "HELLO") && ops.iter().any(|op| op == read),
        "{what} did not send HELLO and {read} through the proxy: {ops:?}"
    );
    let sent: Vec<&String> = ops
        .iter()
        .filter(|op| WRITES.contains(&op.as_str()))
        .collect();
    assert!(sent.is_empty(), "{what} sent {sent:?} (all: {ops:?})");
}

#[test]
fn a_dry_once_into_an_empty_r_lists_every_action_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("README.md"), "hello\n");
    write(&e.join("src/lib.rs"), "pub fn f() {}\n");
    write(&e.join(".hidden"), "dot\n");
    std::fs::create_dir_all(e.join("empty/dir")).unwrap();
    std::os::unix::fs::symlink("src/lib.rs", e.join("link")).unwrap();
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    // R's directory and the client's database do not exist yet; the state directory holds
    // only the token.
    let r = tmp.path().join("r/code");
    let state = tmp.path().join("client");
    let client = ClientSpec::new(&state, &daemon, &[("code", &r)]);
    let before = everything_on_r(&[&tmp.path().join("r"), &state]);

    let proxy = Proxy::to_port(daemon.port);
    let out = dry(&client, &proxy.url(), &["--once"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a dry run with nothing in the way exits 0:\n{}",
        stderr(&out)
    );
    let listed = stdout(&out);
    assert_listed(
        &listed,
        &[
            "would create directory code/src",
            "would download code/src/lib.rs (14 bytes, new)",
            "would download code/README.md (6 bytes, new)",
            "would download code/.hidden (4 bytes, new)",
            "would create directory code/empty/dir",
            "would create symlink code/link -> src/lib.rs",
        ],
    );
    assert!(
        listed
            .lines()
            .last()
            .is_some_and(|l| l.starts_with("dry run: 3 downloads (24 bytes), ")
                && l.ends_with("nothing was changed")),
        "no summary line:\n{listed}"
    );
    assert_read_only(&proxy, "GET_CHANGES", "a dry --once");
    assert_untouched(
        &before,
        &everything_on_r(&[&tmp.path().join("r"), &state]),
        "a dry --once",
    );
    assert!(!client.db.exists(), "the dry run created the database");

    // The JSON form lists the same, one object per action.
    let out = dry(&client, &proxy.url(), &["--once", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", stdout(&out)));
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["downloads"], 3, "{doc:#}");
    assert_eq!(doc["download_bytes"], 24, "{doc:#}");
    let readme = doc["actions"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["path"] == "README.md"))
        .unwrap_or_else(|| panic!("README.md not listed: {doc:#}"));
    assert_eq!(readme["action"], "download");
    assert_eq!(readme["dir"], "code");
    assert_eq!(readme["new"], true);
    assert_untouched(
        &before,
        &everything_on_r(&[&tmp.path().join("r"), &state]),
        "a dry --once --json",
    );

    // The real run still has everything to do.
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, &[]);
}

#[test]
fn a_dry_once_over_a_local_edit_and_a_deletion_names_the_conflict_copy_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("notes.txt"), "first version\n");
    write(&e.join("plain.txt"), "plain\n");
    write(&e.join("gone.txt"), "delete me\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    let state = tmp.path().join("client");
    let client = ClientSpec::new(&state, &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());

    // R edits notes.txt; E edits it too, changes plain.txt, deletes gone.txt, adds a file.
    write(&r.join("notes.txt"), "R's own edit\n");
    write(&e.join("notes.txt"), "E's second version\n");
    write(&e.join("plain.txt"), "plain, changed on E\n");
    std::fs::remove_file(e.join("gone.txt")).unwrap();
    write(&e.join("new/file.txt"), "new\n");
    daemon.wait_indexed(&["new/file.txt"], &["gone.txt"]);
    let before = everything_on_r(&[&r, &state]);
    assert!(
        before[&state.display().to_string()]
            .keys()
            .any(|k| k == "sync_client.db"),
        "the fingerprint must cover the database: {before:?}"
    );

    let proxy = Proxy::to_port(daemon.port);
    let out = dry(&client, &proxy.url(), &["--once"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "a dry run that would keep a conflict copy exits 3, as the real run would:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let listed = stdout(&out);
    assert_listed(
        &listed,
        &[
            "would keep R's version of code/notes.txt as a conflict copy beside it: E changed this file, which was also changed on R",
            "would download code/notes.txt (19 bytes, changed)",
            "would download code/plain.txt (20 bytes, changed)",
            "would delete code/gone.txt",
            "would create directory code/new",
            "would download code/new/file.txt (4 bytes, new)",
        ],
    );
    assert_read_only(&proxy, "GET_CHANGES", "a dry --once");
    assert_untouched(&before, &everything_on_r(&[&r, &state]), "a dry --once");
    assert!(conflict_copies(&r).is_empty());

    // Nothing advanced: the real run makes the conflict copy and applies every change.
    client.once_conflicts(&daemon.url());
    assert_eq!(conflict_copies(&r).len(), 1, "{:?}", conflict_copies(&r));
    assert!(!r.join("gone.txt").exists());
    assert_eq!(
        std::fs::read_to_string(r.join("new/file.txt")).unwrap(),
        "new\n"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("plain.txt")).unwrap(),
        "plain, changed on E\n"
    );

    // In sync now: the dry run says there is nothing to do.
    let out = dry(&client, &daemon.url(), &["--once"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("dry run: nothing to do"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_dry_push_lists_the_sends_and_stages_nothing_on_e() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    write(&e.join("b.txt"), "b\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    let state = tmp.path().join("client");
    let client = ClientSpec::new(&state, &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());

    write(&r.join("a.txt"), "a, edited on R\n");
    write(&r.join("n.txt"), "new on R\n");
    std::fs::remove_file(r.join("b.txt")).unwrap();
    let before = everything_on_r(&[&r, &state]);
    let staged_before = names_in(&staging_root(&daemon.db));

    let proxy = Proxy::to_port(daemon.port);
    let out = dry(&client, &proxy.url(), &["--update-upstream"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = stdout(&out);
    assert_listed(
        &listed,
        &[
            "would send code/a.txt (15 bytes, changed on R)",
            "would send code/n.txt (9 bytes, new on R)",
            "would send the deletion of code/b.txt",
        ],
    );
    assert!(
        listed.contains("nothing was sent or staged"),
        "no summary:\n{listed}"
    );

    let out = dry(&client, &proxy.url(), &["--update-upstream", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}", stdout(&out)));
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["session_id"], serde_json::Value::Null);
    assert_eq!(doc["files"], 3, "{doc:#}");
    assert_eq!(doc["bytes"], 24, "{doc:#}");

    assert_read_only(&proxy, "AUTH", "a dry push");
    assert_eq!(
        names_in(&staging_root(&daemon.db)),
        staged_before,
        "a dry push staged something on E"
    );
    let sessions = zync_apply_json(&daemon.db, &["list", "--all", "--json"]);
    assert_eq!(sessions, serde_json::json!([]), "a dry push made a session");
    assert_untouched(&before, &everything_on_r(&[&r, &state]), "a dry push");

    // The real push still sends all three.
    let summary = client.push_json(&daemon.url());
    assert_eq!(summary["files"], 3, "{summary:#}");
}

#[test]
fn a_dry_run_beside_a_running_loop_client_is_not_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    let mut running = client.spawn(&daemon.url(), &tmp.path().join("loop.log"));
    wait_same_tree(&e, &r, &[]);
    write(&r.join("mine.txt"), "R's file\n");

    let out = dry(&client, &daemon.url(), &["--once"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a dry --once beside a loop client was refused:\n{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).trim_end().ends_with("nothing was changed"),
        "{}",
        stdout(&out)
    );
    let out = dry(&client, &daemon.url(), &["--update-upstream"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a dry push beside a loop client was refused:\n{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("would send code/mine.txt (9 bytes, new on R)"),
        "{}",
        stdout(&out)
    );
    assert!(running.is_running(), "the loop client stopped");
}

/// Fails unless each of `lines` is a whole line of `listed`.
fn assert_listed(listed: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            listed.lines().any(|l| l == *line),
            "missing {line:?} in:\n{listed}"
        );
    }
}
