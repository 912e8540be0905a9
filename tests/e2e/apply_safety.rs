//! End-to-end: what keeps `zync-apply` safe around a session on E beyond applying it once
//! (invariant 5, docs/ARCHITECTURE.md): two runs on one session never interleave (the second
//! is refused at once, naming the first, and a killed holder leaves no lock behind); undo takes
//! away the directories the apply made, unless they hold something else; and `undo --force`
//! keeps E's newer edit as a conflict copy and says where.

use std::ffi::CStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

/// A daemon on E serving `code`, and a client on R that mirrored it once.
struct Pair {
    _tmp: tempfile::TempDir,
    e: PathBuf,
    r: PathBuf,
    daemon: Daemon,
    client: ClientSpec,
}

impl Pair {
    fn new(files: &[(&str, &[u8])]) -> Pair {
        let tmp = tempfile::tempdir().expect("tempdir");
        let top = tmp.path().to_path_buf();
        let e = top.join("e");
        std::fs::create_dir_all(&e).expect("mkdir e");
        for (path, data) in files {
            write(&e.join(path), data);
        }
        let state = top.join("state");
        std::fs::create_dir_all(&state).expect("mkdir state");
        let daemon = Daemon::start(&state, &[("code", &e)]);
        daemon.wait_scanned();
        let r = top.join("r");
        let client = ClientSpec::new(&top.join("client"), &daemon, &[("code", &r)]);
        client.once_ok(&daemon.url());
        assert_same_tree(&e, &r, &[]);
        Pair {
            _tmp: tmp,
            e,
            r,
            daemon,
            client,
        }
    }

    fn db(&self) -> &Path {
        &self.daemon.db
    }

    /// Pushes R's edits upstream; returns the session id.
    fn push(&self) -> String {
        let summary = self.client.push_json(&self.daemon.url());
        summary["session_id"]
            .as_str()
            .unwrap_or_else(|| panic!("the push sent no session: {summary}"))
            .to_string()
    }

    /// `<db>.staging/<id>/apply.lock`.
    fn lock_file(&self, id: &str) -> PathBuf {
        let mut name = self.db().file_name().expect("db name").to_os_string();
        name.push(".staging");
        self.db().with_file_name(name).join(id).join("apply.lock")
    }
}

/// `zync-apply ARGS` on the pair's database, run to its end within the deadline.
fn zync_apply_run(db: &Path, args: &[&str]) -> Output {
    output_within_deadline(zync_apply(db, args))
}

fn expect_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit code {code}, got {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout(out),
        stderr(out)
    );
}

// ---------------------------------------------------------------------------------------------
// A terminal for an interactive apply: it stops at its first question, holding the session,
// for as long as the test keeps the terminal open and does not answer.

/// A pseudo-terminal: the test keeps the master, a child gets the slave as its terminal.
struct Pty {
    master: File,
    slave: File,
}

fn open_pty() -> Pty {
    // SAFETY: plain libc calls on a descriptor this function owns; `name` is a NUL-terminated
    // buffer that ptsname_r fills.
    unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        let master = File::from_raw_fd(fd);
        assert_eq!(libc::grantpt(fd), 0, "grantpt");
        assert_eq!(libc::unlockpt(fd), 0, "unlockpt");
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
        let size = libc::winsize {
            ws_row: 24,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        libc::ioctl(fd, libc::TIOCSWINSZ, &size);
        let path = CStr::from_ptr(name.as_ptr())
            .to_str()
            .expect("pty name")
            .to_string();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
        Pty { master, slave }
    }
}

/// `zync-apply apply ID` with the pty as its stdin and stderr (so it asks), and what it draws
/// there collected in the returned buffer.
fn interactive_apply(db: &Path, id: &str, pty: &Pty) -> (Child, Arc<Mutex<Vec<u8>>>) {
    let mut cmd = zync_apply(db, &["apply", id]);
    cmd.env("TERM", "xterm")
        .stdin(Stdio::from(pty.slave.try_clone().expect("dup")))
        .stderr(Stdio::from(pty.slave.try_clone().expect("dup")))
        .stdout(Stdio::null());
    let child = cmd.spawn().expect("spawn the interactive apply");
    let drawn = Arc::new(Mutex::new(Vec::new()));
    let mut master = pty.master.try_clone().expect("dup");
    let sink = Arc::clone(&drawn);
    // Reads until the terminal goes away, so the child never blocks on a full terminal.
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().expect("buffer").extend_from_slice(&buf[..n]);
        }
    });
    (child, drawn)
}

// ---------------------------------------------------------------------------------------------
// 1. One run at a time.

#[test]
fn a_second_run_on_a_session_being_applied_is_refused_at_once_naming_the_first() {
    let p = Pair::new(&[("f.txt", b"base\n")]);
    let db = p.db();
    write(&p.r.join("f.txt"), "R's edit\n");
    write(&p.r.join("new/dir/g.txt"), "new on R\n");
    let id = p.push();
    let e_before = tree(&p.e, &[]);

    // The first apply asks about its first file, and waits: it holds the session.
    let pty = open_pty();
    let (mut first, drawn) = interactive_apply(db, &id, &pty);
    let holder = format!("\"pid\":{}", first.id());
    wait_until("the interactive apply to hold the session", || {
        std::fs::read_to_string(p.lock_file(&id)).is_ok_and(|t| t.contains(&holder))
    });
    wait_until("the interactive apply to ask its first question", || {
        String::from_utf8_lossy(&drawn.lock().expect("buffer")).contains("code/f.txt")
    });

    for args in [
        &["apply", &id, "--non-interactive", "--force"][..],
        &["undo", &id, "--force"],
    ] {
        let start = Instant::now();
        let out = zync_apply_run(db, args);
        expect_code(&out, 1, &format!("{args:?} beside a running apply"));
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{args:?} waited {:?} instead of being refused at once",
            start.elapsed()
        );
        let err = stderr(&out);
        assert!(
            err.contains(&format!("session {id} is busy"))
                && err.contains("`zync-apply apply`")
                && err.contains(&format!("pid {}", first.id())),
            "{args:?}: the refusal does not name the running apply:\n{err}"
        );
    }
    assert_eq!(tree(&p.e, &[]), e_before, "a refused run changed E");
    // show reads, and is not refused.
    let out = zync_apply_run(db, &["show", &id, "--json"]);
    expect_code(&out, 0, "show beside a running apply");
    assert!(stdout(&out).contains("\"staged\""), "{}", stdout(&out));

    // Killed, the first apply leaves no lock behind: the next run goes ahead at once.
    first.kill().expect("kill the interactive apply");
    first.wait().expect("reap");
    let out = zync_apply_run(db, &["apply", &id, "--non-interactive", "--force"]);
    expect_code(&out, 0, "apply after the holder was killed");
    assert_eq!(std::fs::read(p.e.join("f.txt")).expect("f"), b"R's edit\n");
    assert_eq!(
        std::fs::read(p.e.join("new/dir/g.txt")).expect("g"),
        b"new on R\n"
    );
    drop(pty);
}

// ---------------------------------------------------------------------------------------------
// 2. Undo takes away the directories the apply made.

#[test]
fn undo_removes_the_directories_apply_created_and_keeps_one_holding_other_files() {
    let p = Pair::new(&[("keep.txt", b"keep\n")]);
    let db = p.db();
    write(&p.r.join("new/deep/a.txt"), "new on R\n");
    write(&p.r.join("other/b.txt"), "also new on R\n");
    let id = p.push();
    let out = zync_apply_run(db, &["apply", &id, "--non-interactive"]);
    expect_code(&out, 0, "apply");
    assert!(p.e.join("new/deep/a.txt").is_file());
    // R records the applied files as synced (they are its own).
    once_until(&p.client, &p.daemon.url(), "R to take in the apply", || {
        same_tree(&p.e, &p.r, &[])
    });
    // E's user saves a file of their own in one of the new directories.
    write(&p.e.join("other/mine.txt"), "mine\n");
    p.daemon
        .wait_indexed(&["other/mine.txt", "new/deep/a.txt"], &[]);

    let out = zync_apply_run(db, &["undo", &id]);
    expect_code(&out, 0, "undo");
    assert!(
        !p.e.join("new").exists(),
        "the directories apply made are still on E:\n{}",
        stdout(&out)
    );
    assert!(!p.e.join("other/b.txt").exists());
    assert_eq!(
        std::fs::read(p.e.join("other/mine.txt")).expect("mine"),
        b"mine\n"
    );
    assert_eq!(
        std::fs::read(p.e.join("keep.txt")).expect("keep"),
        b"keep\n"
    );
    assert!(
        stdout(&out).contains("removed the empty directory code/new/deep"),
        "{}",
        stdout(&out)
    );

    // The daemon's index has them gone too: R, synced again, looks like E.
    p.daemon
        .wait_indexed(&["other/mine.txt"], &["new", "new/deep"]);
    once_until(&p.client, &p.daemon.url(), "R to look like E again", || {
        same_tree(&p.e, &p.r, &[])
    });
    assert!(!p.r.join("new").exists());
}

// ---------------------------------------------------------------------------------------------
// 3. undo --force keeps E's newer edit.

#[test]
fn undo_force_keeps_e_s_newer_edit_as_a_conflict_copy_and_says_where() {
    let p = Pair::new(&[("f.txt", b"base\n")]);
    let db = p.db();
    write(&p.r.join("f.txt"), "R's edit\n");
    let id = p.push();
    expect_code(
        &zync_apply_run(db, &["apply", &id, "--non-interactive"]),
        0,
        "apply",
    );
    assert_eq!(std::fs::read(p.e.join("f.txt")).expect("f"), b"R's edit\n");
    write(&p.e.join("f.txt"), "newer work on E\n");

    // Without --force the newer edit is left alone.
    let out = zync_apply_run(db, &["undo", &id]);
    expect_code(&out, 1, "undo over a newer edit");
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(p.e.join("f.txt")).expect("f"),
        b"newer work on E\n"
    );

    let out = zync_apply_run(db, &["undo", &id, "--force"]);
    expect_code(&out, 0, "undo --force");
    assert_eq!(std::fs::read(p.e.join("f.txt")).expect("f"), b"base\n");
    let copies = conflict_copies(&p.e);
    assert_eq!(copies.len(), 1, "{copies:?}\n{}", stdout(&out));
    assert_eq!(
        std::fs::read(p.e.join(&copies[0])).expect("copy"),
        b"newer work on E\n"
    );
    assert!(
        stdout(&out).contains(&format!(
            "kept E's newer version of code/f.txt as code/{}",
            copies[0]
        )),
        "undo --force does not say where E's edit went:\n{}",
        stdout(&out)
    );
}
