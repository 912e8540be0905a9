//! End-to-end: file modes. Everything zync creates for its own state (databases with their WAL and
//! SHM, the token, the staging area, apply's backups) is 0600 for files and 0700 for directories
//! whatever the umask (invariant 8, docs/ARCHITECTURE.md); modes from the other machine land
//! narrowed by the receiving side's umask, and that narrowing never reads as a local edit.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::common::proxy::Proxy;
use crate::common::*;

/// The permission bits (with setuid, setgid and sticky) of `path`, not following a symlink.
fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Fails with every path whose mode is not the expected one, each with both modes.
fn assert_modes(what: &str, expected: &[(PathBuf, u32)]) {
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(path, want)| mode(path) != *want)
        .map(|(path, want)| {
            format!(
                "  {}: expected {want:04o}, found {:04o}",
                path.display(),
                mode(path)
            )
        })
        .collect();
    assert!(wrong.is_empty(), "{what}:\n{}", wrong.join("\n"));
}

/// Every file and directory under `dir` (not `dir` itself), but for the names in `skip`
/// (the test's own files), with the mode zync's state must have: 0600 and 0700.
fn private_modes_under(dir: &Path, skip: &[&str]) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("read_dir").flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if skip.contains(&name.as_str()) {
                continue;
            }
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                out.push((entry.path(), 0o700));
                stack.push(entry.path());
            } else {
                out.push((entry.path(), 0o600));
            }
        }
    }
    out.sort();
    out
}

/// `path` with `suffix` appended (`sync.db` -> `sync.db-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    s.into()
}

/// Runs `cmd` under umask `mask`; it must succeed.
fn run_under(mut cmd: Command, mask: u32) -> Output {
    with_umask(&mut cmd, mask);
    run_ok(cmd)
}

/// `zync-client --once` under umask `mask`.
fn once(client: &ClientSpec, url: &str, mask: u32) -> Output {
    let mut cmd = client.command(url);
    cmd.arg("--once");
    run_under(cmd, mask)
}

/// `zync-client --update-upstream --json` under umask `mask`: the session id, if one was sent.
fn push(client: &ClientSpec, url: &str, mask: u32) -> Option<String> {
    let mut cmd = client.command(url);
    cmd.args(["--update-upstream", "--json"]);
    let out = run_under(cmd, mask);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the push summary is not JSON ({e}): {}", stdout(&out)));
    summary["session_id"].as_str().map(str::to_string)
}

/// `zync-apply --db DB apply ID --non-interactive` under umask `mask`.
fn apply(db: &Path, id: &str, mask: u32) {
    run_under(zync_apply(db, &["apply", id, "--non-interactive"]), mask);
}

/// A client in loop mode (so that its database's WAL and SHM exist); killed on drop.
struct Looping(Child);

impl Drop for Looping {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Everything zync creates, under one umask: the daemon's database, WAL, SHM, token and
/// staging area, the client's database, WAL and SHM, and zync-apply's backups. The state
/// directories are the user's: made here, 0755, and left so. On the way, a file R made 0777
/// lands on E as the umask of zync-apply allows.
fn state_is_private_under(mask: u32) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let top = tmp.path();
    let (e, r) = (top.join("e"), top.join("r"));
    let (state, client_state) = (top.join("state"), top.join("client"));
    for dir in [&e, &state, &client_state] {
        std::fs::create_dir(dir).expect("mkdir");
        chmod(dir, 0o755);
    }
    write(&e.join("f.txt"), "E's version\n");

    let daemon = Daemon::start_with_umask(&state, &[("code", &e)], mask);
    daemon.wait_scanned();
    let client = ClientSpec::new(&client_state, &daemon, &[("code", &r)]);
    once(&client, &daemon.url(), mask);
    assert_same_tree(&e, &r, &[]);

    // R edits the file and opens it to everyone; E's file is backed up when it is applied.
    write(&r.join("f.txt"), "R's version\n");
    chmod(&r.join("f.txt"), 0o777);
    let id = push(&client, &daemon.url(), mask).expect("the edit was sent");
    let session = with_suffix(&daemon.db, ".staging").join(&id);
    apply(&daemon.db, &id, mask);
    assert_eq!(
        std::fs::read(e.join("f.txt")).expect("read"),
        b"R's version\n",
        "zync-apply did not apply R's version"
    );
    // R's staged file and E's backup (whose metadata is in the database).
    let names: Vec<_> = std::fs::read_dir(&session)
        .expect("read the session directory")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    let backups = names.iter().filter(|n| n.starts_with("backup-")).count();
    assert!(
        backups >= 1 && names.len() > backups,
        "expected a staged file and a backup in {}, found {names:?}",
        session.display()
    );

    // The client in loop mode holds its database open: its WAL and SHM exist.
    let mut cmd = client.command(&daemon.url());
    with_umask(&mut cmd, mask);
    let log = std::fs::File::create(top.join("client.log")).expect("client log");
    let looping = Looping(
        cmd.stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn zync-client"),
    );
    let client_db = client_state.join("sync_client.db");
    wait_until("the client's WAL and SHM files", || {
        ["-wal", "-shm"]
            .iter()
            .all(|s| with_suffix(&client_db, s).exists())
    });
    assert!(
        ["-wal", "-shm"]
            .iter()
            .all(|s| with_suffix(&daemon.db, s).exists()),
        "the running daemon has no WAL or SHM beside {}",
        daemon.db.display()
    );

    // All checked at once, so that a failure lists every path that is wrong.
    let mut expected = vec![
        (state.clone(), 0o755),
        (client_state.clone(), 0o755),
        // R's 0777 file, applied on E as zync-apply's umask allows.
        (e.join("f.txt"), 0o777 & !mask),
    ];
    for file in [
        daemon.db.clone(),
        with_suffix(&daemon.db, "-wal"),
        with_suffix(&daemon.db, "-shm"),
        daemon.token_file.clone(),
        client_db.clone(),
        with_suffix(&client_db, "-wal"),
        with_suffix(&client_db, "-shm"),
    ] {
        expected.push((file, 0o600));
    }
    // Whatever else zync made in the state directories is private too (the staging area, its
    // session directory, R's staged file, the backup and its metadata); the log and the copy
    // of the token are the test's own.
    expected.extend(private_modes_under(&state, &["daemon.log"]));
    expected.extend(private_modes_under(&client_state, &["client.token"]));
    assert_modes(&format!("zync's state under umask {mask:03o}"), &expected);
    drop(looping);
}

#[test]
fn state_files_are_private_under_umask_022() {
    state_is_private_under(0o022);
}

#[test]
fn state_files_are_private_under_umask_000() {
    state_is_private_under(0o000);
}

#[test]
fn modes_from_e_are_masked_on_r_and_the_masking_is_no_local_edit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let top = tmp.path();
    let e = top.join("e");
    write(&e.join("open/shared.txt"), "shared\n");
    write(&e.join("run.sh"), "#!/bin/sh\n");
    write(&e.join("suid"), "setuid\n");
    chmod(&e.join("open/shared.txt"), 0o666);
    chmod(&e.join("open"), 0o777);
    chmod(&e.join("run.sh"), 0o755);
    chmod(&e.join("suid"), 0o4755);
    let state = top.join("state");
    std::fs::create_dir(&state).expect("mkdir");
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();

    for (mask, name) in [(0o022, "r022"), (0o027, "r027")] {
        let r = top.join(name);
        let client = ClientSpec::new(
            &top.join(format!("client-{name}")),
            &daemon,
            &[("code", &r)],
        );
        once(&client, &daemon.url(), mask);
        let expected = [
            (r.join("open"), 0o777 & !mask),
            (r.join("open/shared.txt"), 0o666 & !mask),
            (r.join("run.sh"), 0o755 & !mask),
            (r.join("suid"), 0o755 & !mask),
        ];
        assert_modes(&format!("E's modes on R under umask {mask:03o}"), &expected);

        // The next run finds R as it left it: nothing downloaded again, no conflict copy,
        // nothing to send upstream.
        let proxy = Proxy::to_port(daemon.port);
        once(&client, &proxy.url(), mask);
        assert_eq!(
            proxy.downloads(),
            Vec::<String>::new(),
            "a second run under umask {mask:03o} downloaded again"
        );
        for dir in [r.clone(), r.join("open")] {
            assert_eq!(conflict_copies(&dir), Vec::<String>::new(), "in {dir:?}");
        }
        assert_eq!(
            push(&client, &daemon.url(), mask),
            None,
            "the masked modes were taken for R's edits under umask {mask:03o}"
        );
        assert_modes(
            &format!("R after a second run, umask {mask:03o}"),
            &expected,
        );
    }
}

#[test]
fn modes_from_r_are_masked_by_the_umask_of_zync_apply_on_e() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let top = tmp.path();
    let e = top.join("e");
    write(&e.join("tool.sh"), "#!/bin/sh\necho E\n");
    chmod(&e.join("tool.sh"), 0o644);
    let state = top.join("state");
    std::fs::create_dir(&state).expect("mkdir");
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let r = top.join("r");
    let client = ClientSpec::new(&top.join("client"), &daemon, &[("code", &r)]);
    once(&client, &daemon.url(), 0o022);

    // R: an edit made executable by everyone, and a new file everyone may write.
    write(&r.join("tool.sh"), "#!/bin/sh\necho R\n");
    chmod(&r.join("tool.sh"), 0o777);
    write(&r.join("new.txt"), "new on R\n");
    chmod(&r.join("new.txt"), 0o666);
    let id = push(&client, &daemon.url(), 0o022).expect("R's changes were sent");
    apply(&daemon.db, &id, 0o022);
    assert_eq!(
        std::fs::read(e.join("tool.sh")).expect("read"),
        b"#!/bin/sh\necho R\n"
    );
    assert_modes(
        "R's modes applied on E under umask 022",
        &[(e.join("tool.sh"), 0o755), (e.join("new.txt"), 0o644)],
    );

    // E's modes now come back to R: R's files follow them, and nothing is sent again.
    wait_until("E's modes back on R", || {
        once(&client, &daemon.url(), 0o022);
        mode(&r.join("tool.sh")) == 0o755 && mode(&r.join("new.txt")) == 0o644
    });
    assert_eq!(push(&client, &daemon.url(), 0o022), None, "sent again");
    assert_same_tree(&e, &r, &[]);
}
