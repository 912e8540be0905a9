//! End-to-end: another local user on E who can rename entries of the directory a served root
//! lies in (a shared project directory, a sticky one they own) swaps the root itself for a
//! symlink to a directory of their choice (the user's ~/.ssh, or one they can read), once or
//! back and forth (`renameat2(RENAME_EXCHANGE)`), while zync-daemon serves it and zync-apply
//! applies into it. Nothing is written there, nothing of it is indexed or reaches R, and the
//! real tree's files are never taken for deleted (invariants 3 and 8, docs/ARCHITECTURE.md);
//! each refusal names the root and says what to do. A served path through another user's
//! symlink is refused when the daemon starts.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;
use crate::race::{
    assert_untouched, c_path, exchange, outside, push, run_racing, snapshot, Swapper, RACE_DEADLINE,
};

/// Exchanges the entries `a` and `b` once (the other user's `renameat2(RENAME_EXCHANGE)`).
fn swap(a: &Path, b: &Path) {
    assert!(
        exchange(&c_path(a), &c_path(b)),
        "renameat2(RENAME_EXCHANGE) of {} and {} failed",
        a.display(),
        b.display()
    );
}

/// Whether the daemon's index ever held a row for `path` (live or deleted), in any directory.
fn ever_indexed(db: &Path, path: &str) -> bool {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|db| {
            db.query_row(
                "SELECT count(*) FROM entries WHERE path = ?1",
                [path],
                |row| row.get::<_, i64>(0),
            )
        })
        .is_ok_and(|n| n > 0)
}

/// Whether the daemon's index records `path` as deleted.
fn indexed_as_deleted(db: &Path, path: &str) -> bool {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|db| {
            db.query_row(
                "SELECT count(*) FROM entries WHERE path = ?1 AND deleted = 1",
                [path],
                |row| row.get::<_, i64>(0),
            )
        })
        .is_ok_and(|n| n > 0)
}

/// The `code` entry of `zync-apply status --json`.
fn code_status(db: &Path) -> Value {
    let status = zync_apply_json(db, &["status", "--json"]);
    status["dirs"]
        .as_array()
        .and_then(|dirs| dirs.iter().find(|d| d["name"] == "code").cloned())
        .unwrap_or_else(|| panic!("no dir 'code' in zync-apply status: {status}"))
}

/// E's root `shared/e` (in a directory the other user can rename entries of), served as
/// `code` and mirrored by a loop client on R; and the other user's directory of secrets with
/// a symlink to it, ready to be swapped in.
struct Served {
    _tmp: tempfile::TempDir,
    daemon: Daemon,
    _running: Running,
    e: PathBuf,
    r: PathBuf,
    /// The other user's directory, and their symlink to it.
    secrets: PathBuf,
    link: PathBuf,
    client_log: PathBuf,
}

/// The secrets the other directory holds: one named as a file of E's, one E does not have.
const SECRETS: [&str; 2] = ["a.txt", "id_ed25519"];

fn served() -> Served {
    let tmp = tempfile::tempdir().expect("tempdir");
    let top = tmp.path();
    let e = top.join("shared/e");
    write(&e.join("a.txt"), "E's a\n");
    write(&e.join("sub/b.txt"), "E's b\n");
    let state = top.join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let r = top.join("r");
    let client = ClientSpec::new(&top.join("client"), &daemon, &[("code", &r)]);
    let client_log = top.join("client.log");
    let running = client.spawn(&daemon.url(), &client_log);
    wait_same_tree(&e, &r, &[]);
    let (secrets, link) = outside(top, &SECRETS);
    Served {
        _tmp: tmp,
        daemon,
        _running: running,
        e,
        r,
        secrets,
        link,
        client_log,
    }
}

impl Served {
    /// The ends of both logs, for a failure.
    fn logs(&self) -> String {
        format!(
            "daemon log, last lines:\n{}\nclient log, last lines:\n{}",
            tail(&self.daemon.log_text(), 40),
            tail(
                &std::fs::read_to_string(&self.client_log).unwrap_or_default(),
                20
            )
        )
    }

    /// Fails if anything of the other directory was ever indexed or reached R, or if R lost
    /// E's files or the index took them for deleted.
    fn assert_nothing_leaked(&self) {
        for secret in ["id_ed25519", "later-secret"] {
            assert!(
                !ever_indexed(&self.daemon.db, secret),
                "the daemon indexed {secret} of the directory the root was swapped for:\n{}",
                self.logs()
            );
            assert!(
                !self.r.join(secret).exists(),
                "R received {secret} of the directory the root was swapped for"
            );
        }
        assert_eq!(
            std::fs::read_to_string(self.r.join("a.txt"))
                .ok()
                .as_deref(),
            Some("E's a\n"),
            "R's a.txt is not E's"
        );
        for path in ["a.txt", "sub", "sub/b.txt"] {
            assert!(
                !indexed_as_deleted(&self.daemon.db, path),
                "the daemon took E's {path} for deleted:\n{}",
                self.logs()
            );
            assert!(self.r.join(path).exists(), "R lost {path}");
        }
    }
}

/// The root swapped once for a symlink to the user's secrets, and a file made there
/// meanwhile: the daemon stops serving the directory and says so, indexes nothing of the
/// other one, sends R nothing of it and deletes nothing on R; swapped back, it is served again.
#[test]
fn the_daemon_never_serves_a_root_swapped_for_a_symlink_nor_takes_its_files_for_deleted() {
    let s = served();
    swap(&s.e, &s.link);
    write(&s.secrets.join("later-secret"), "made after the swap\n");
    let mut why = Value::Null;
    wait_until_else(
        "the daemon to stop serving code, or to index the other directory",
        || {
            let code = code_status(&s.daemon.db);
            why = code["unavailable"].clone();
            code["state"] == "unavailable"
                || ever_indexed(&s.daemon.db, "id_ed25519")
                || ever_indexed(&s.daemon.db, "later-secret")
        },
        || s.logs(),
    );
    s.assert_nothing_leaked();
    let why = why.as_str().unwrap_or_default().to_owned();
    assert!(
        why.contains(&s.e.display().to_string()) && why.contains("restart zync-daemon"),
        "the reason names neither the root nor what to do: {why}"
    );

    // Put back: served again, from the real directory only.
    swap(&s.e, &s.link);
    write(&s.e.join("after.txt"), "after\n");
    wait_until_else(
        "R to get a file written once the root is back",
        || s.r.join("after.txt").exists(),
        || s.logs(),
    );
    wait_same_tree(&s.e, &s.r, &[]);
    assert_eq!(code_status(&s.daemon.db)["state"], "available");
    s.assert_nothing_leaked();
}

/// The root swapped back and forth for a symlink to the user's secrets for seconds, while E's
/// user keeps writing in the real directory: nothing of the other directory is ever indexed
/// or reaches R, nothing of E's is taken for deleted, and once the swapping stops every file
/// written meanwhile reaches R.
#[test]
fn the_daemon_never_serves_a_root_swapped_back_and_forth_and_catches_up_after() {
    let s = served();
    // E's user writes through a handle of the real directory: its path leads elsewhere half
    // of the time.
    let real = std::fs::File::open(&s.e).expect("open E's root");
    let real_path = PathBuf::from(format!("/proc/self/fd/{}", real.as_raw_fd()));
    let swapper = Swapper::start(&s.e, &s.link);
    let racing = Instant::now();
    let mut written = 0;
    while racing.elapsed() < Duration::from_secs(5) {
        write(
            &real_path.join(format!("new/f{written:03}")),
            format!("E's new file {written}\n"),
        );
        written += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let swaps = swapper.stop();
    assert!(swaps > 100, "the swapper barely ran ({swaps} swaps)");
    s.assert_nothing_leaked();
    write(&s.e.join("next.txt"), "E's next save\n");
    wait_until_else(
        "R to get every file written during the swapping once it stopped",
        || {
            s.r.join("next.txt").exists()
                && (0..written).all(|i| s.r.join(format!("new/f{i:03}")).exists())
        },
        || s.logs(),
    );
    wait_same_tree(&s.e, &s.r, &[]);
    s.assert_nothing_leaked();
}

/// A session R pushed: E's `base.txt` edited, two files added (one in E's existing `d`) and
/// `d/old.txt` deleted. Returns the session id.
fn stage(daemon: &Daemon, client: &ClientSpec, r: &Path) -> String {
    client.once_ok(&daemon.url());
    write(&r.join("base.txt"), "R's edit\n");
    write(&r.join("new.txt"), "R's new file\n");
    write(&r.join("d/new.txt"), "R's new file in d\n");
    std::fs::remove_file(r.join("d/old.txt")).expect("rm");
    push(client, &daemon.url())
}

/// E's served root swapped for a symlink to another directory (holding files named as E's,
/// with E's content, so that an apply led there sees no conflict) after R pushed and before
/// zync-apply runs: zync-apply writes nothing there, nor in the real directory, and refuses
/// naming the root and what to do (exit 1); with the root back, the session applies.
#[test]
fn zync_apply_writes_nothing_through_a_served_root_swapped_for_a_symlink() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let top = tmp.path();
    let e = top.join("shared/e");
    write(&e.join("base.txt"), "base\n");
    write(&e.join("d/old.txt"), "old\n");
    let state = top.join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let r = top.join("r");
    let client = ClientSpec::new(&top.join("client"), &daemon, &[("code", &r)]);
    let id = stage(&daemon, &client, &r);

    let (out_dir, link) = outside(top, &[]);
    write(&out_dir.join("base.txt"), "base\n");
    write(&out_dir.join("d/old.txt"), "old\n");
    let before = snapshot(&out_dir);
    swap(&e, &link);
    let out = output_within_deadline(zync_apply(&daemon.db, &["apply", &id, "--non-interactive"]));
    assert_untouched(&before, &snapshot(&out_dir));
    assert!(
        out_dir.join("d/old.txt").exists(),
        "removed through the symlink"
    );
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "zync-apply did not refuse ({}):\nstdout:\n{}\nstderr:\n{err}",
        out.status,
        stdout(&out)
    );
    assert!(
        err.contains(&e.display().to_string())
            && err.contains("code")
            && err.contains("restart zync-daemon"),
        "the refusal names neither the root nor what to do:\n{err}"
    );
    // The real directory, now at the other user's path, is as it was.
    assert_eq!(
        std::fs::read_to_string(link.join("base.txt"))
            .ok()
            .as_deref(),
        Some("base\n")
    );
    assert!(link.join("d/old.txt").exists() && !link.join("new.txt").exists());

    // Put back: the session, still staged, applies into the real directory.
    swap(&e, &link);
    run_ok(zync_apply(&daemon.db, &["apply", &id, "--non-interactive"]));
    assert_eq!(
        std::fs::read_to_string(e.join("base.txt")).ok().as_deref(),
        Some("R's edit\n")
    );
    assert!(e.join("new.txt").exists() && e.join("d/new.txt").exists());
    assert!(!e.join("d/old.txt").exists());
    assert_untouched(&before, &snapshot(&out_dir));
}

/// E's served root swapped back and forth for a symlink to another directory while
/// zync-apply runs again and again on a session of 1,500 new files: none lands there, each
/// run either applies what it can while the root is in place or stops naming it, and once
/// the swapping stops a last run applies the rest into the real directory.
#[test]
fn zync_apply_writes_nothing_through_a_served_root_swapped_back_and_forth_while_it_runs() {
    const NEW: usize = 1500;
    let tmp = tempfile::tempdir().expect("tempdir");
    let top = tmp.path();
    let e = top.join("shared/e");
    write(&e.join("base.txt"), "base\n");
    let state = top.join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    let mut daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let r = top.join("r");
    let client = ClientSpec::new(&top.join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    for i in 0..NEW {
        write(&r.join(format!("n{i:04}")), format!("R's new file {i}\n"));
    }
    let id = push(&client, &daemon.url());
    // zync-apply needs only the database; a daemon rescanning E on every swap would only
    // slow the race down.
    daemon.stop();

    let (out_dir, link) = outside(top, &["n0000", "n0001", "base.txt"]);
    let before = snapshot(&out_dir);
    let apply = || zync_apply(&daemon.db, &["apply", &id, "--non-interactive"]);
    let racing = Instant::now();
    let mut runs = 0;
    let mut swaps = 0;
    let mut done = false;
    while !done && racing.elapsed() < Duration::from_secs(10) {
        let (out, n) = run_racing(apply(), Swapper::start(&e, &link));
        swaps += n;
        runs += 1;
        assert_untouched(&before, &snapshot(&out_dir));
        if out.status.success() {
            done = true;
            continue;
        }
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&e.display().to_string()) && err.contains("restart zync-daemon"),
            "run {runs} failed without naming the root and what to do:\n{err}"
        );
    }
    assert!(swaps > 0, "the swapper never ran");
    eprintln!("{runs} runs raced {swaps} swaps; the session was applied while racing: {done}");
    if !done {
        let out = output_within(apply(), RACE_DEADLINE);
        assert!(
            out.status.success(),
            "the run after the swapping failed ({}):\n{}",
            out.status,
            stderr(&out)
        );
    }
    assert_untouched(&before, &snapshot(&out_dir));
    for i in 0..NEW {
        assert_eq!(
            std::fs::read_to_string(e.join(format!("n{i:04}"))).ok(),
            Some(format!("R's new file {i}\n")),
            "n{i:04} in E's real directory after {runs} runs"
        );
    }
}

/// A served path through a symlink another user owns (planted in /tmp before the directory was
/// made, say), or through a directory below it: the daemon does not start, names the link and
/// its owner, and makes nothing (no database, no token).
#[test]
fn the_daemon_refuses_a_served_path_through_another_users_symlink() {
    if !is_root() {
        eprintln!("not root: cannot give a symlink to another user; skipped");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let theirs = tmp.path().join("theirs");
    write(&theirs.join("sub/f"), "theirs\n");
    let link = tmp.path().join("proj");
    std::os::unix::fs::symlink(&theirs, &link).expect("symlink");
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).expect("lchown");
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    for served in [link.clone(), link.join("sub")] {
        let mut cmd = command("zync-daemon");
        cmd.args(["--host", "127.0.0.1", "--port", "0", "--db"])
            .arg(state.join("sync.db"))
            .arg("--dirs")
            .arg(format!("code:{}", served.display()));
        let out = output_within(cmd, Duration::from_secs(15));
        let err = stderr(&out);
        assert!(
            !out.status.success(),
            "the daemon served {}",
            served.display()
        );
        assert!(
            err.contains(&link.display().to_string()) && err.contains("uid 65534"),
            "the refusal names neither the link nor its owner:\n{err}"
        );
        assert!(
            names_in(&state).is_empty(),
            "the daemon made {:?}",
            names_in(&state)
        );
    }
}
