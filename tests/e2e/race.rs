//! End-to-end: another local user swaps a directory inside a synced root for a symlink to a
//! directory outside it, back and forth (`renameat2(RENAME_EXCHANGE)` in a tight loop), while
//! zync writes into that directory: zync-client syncing many files on R, and zync-apply
//! applying an upstream session on E. Nothing outside may ever be created, changed or removed
//! (invariants 3 and 8, docs/ARCHITECTURE.md); the run either succeeds or fails saying a
//! symlink was in the way.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

/// How long one racing run may take.
pub(crate) const RACE_DEADLINE: Duration = Duration::from_secs(180);

/// What an outside directory holds: every entry's kind, content hash, mode and mtime, and the
/// directory's own mode and mtime (a create or removal changes the latter).
pub(crate) fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let md = std::fs::symlink_metadata(dir).expect("stat the outside directory");
    out.insert(
        ".".to_string(),
        format!("dir {:o} {}.{}", md.mode(), md.mtime(), md.mtime_nsec()),
    );
    for entry in std::fs::read_dir(dir).expect("list the outside directory") {
        let entry = entry.expect("entry");
        let md = std::fs::symlink_metadata(entry.path()).expect("stat");
        let content = if md.is_file() {
            file_sha(&entry.path())
        } else {
            String::new()
        };
        out.insert(
            entry.file_name().to_string_lossy().into_owned(),
            format!(
                "{:?} {content} {:o} {}.{}",
                md.file_type(),
                md.mode(),
                md.mtime(),
                md.mtime_nsec()
            ),
        );
    }
    out
}

/// Fails with what differs between two snapshots of the outside directory.
pub(crate) fn assert_untouched(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) {
    let mut diff = Vec::new();
    for (name, was) in before {
        match after.get(name) {
            None => diff.push(format!("  removed {name} (was {was})")),
            Some(now) if now != was => diff.push(format!("  changed {name}: {was} -> {now}")),
            Some(_) => {}
        }
    }
    for (name, now) in after {
        if !before.contains_key(name) {
            diff.push(format!("  created {name} ({now})"));
        }
    }
    assert!(
        diff.is_empty(),
        "zync wrote outside its root, through the swapped symlink:\n{}",
        diff.join("\n")
    );
}

/// The other local user: swaps `a` and `b` (a directory in the root and a symlink to the
/// outside directory) with `renameat2(RENAME_EXCHANGE)` as fast as it can, on its own thread.
pub(crate) struct Swapper {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
    a: PathBuf,
    b: PathBuf,
}

pub(crate) fn exchange(a: &CString, b: &CString) -> bool {
    // SAFETY: both are valid NUL-terminated paths that outlive the call; renameat2 takes no
    // other memory.
    unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        ) == 0
    }
}

pub(crate) fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a test path")
}

impl Swapper {
    pub(crate) fn start(a: &Path, b: &Path) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let (ca, cb) = (c_path(a), c_path(b));
        assert!(
            exchange(&ca, &cb),
            "renameat2(RENAME_EXCHANGE) is not supported here"
        );
        assert!(exchange(&ca, &cb));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !flag.load(Ordering::Relaxed) {
                if exchange(&ca, &cb) {
                    swaps += 1;
                }
            }
            swaps
        });
        Swapper {
            stop,
            thread: Some(thread),
            a: a.to_path_buf(),
            b: b.to_path_buf(),
        }
    }

    /// Stops swapping and puts the real directory back at `a`; returns how many swaps were
    /// made.
    pub(crate) fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let swaps = self
            .thread
            .take()
            .map(|t| t.join().expect("the swapper panicked"))
            .unwrap_or(0);
        let a_is_dir = std::fs::symlink_metadata(&self.a).is_ok_and(|m| m.is_dir());
        if !a_is_dir {
            assert!(exchange(&c_path(&self.a), &c_path(&self.b)), "swap back");
        }
        assert!(
            std::fs::symlink_metadata(&self.a).is_ok_and(|m| m.is_dir()),
            "{} is not the real directory after the race",
            self.a.display()
        );
        swaps
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An outside directory with a few files of its own (some named like the files zync writes)
/// and a place for the attacker's symlink to it.
pub(crate) fn outside(top: &Path, names: &[&str]) -> (PathBuf, PathBuf) {
    let out = top.join("outside");
    std::fs::create_dir(&out).expect("mkdir outside");
    for name in names {
        write(&out.join(name), format!("the outside's own {name}\n"));
        std::fs::set_permissions(out.join(name), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let attacker = top.join("attacker");
    std::fs::create_dir(&attacker).expect("mkdir attacker");
    let link = attacker.join("link");
    std::os::unix::fs::symlink(&out, &link).expect("symlink");
    (out, link)
}

/// How long the swapper races a run; then it stops, so that a client that retries what failed
/// can finish.
const SWAP_FOR: Duration = Duration::from_secs(20);

/// Runs `cmd` to its end within [`RACE_DEADLINE`], with `swapper` racing it for the first
/// [`SWAP_FOR`]; returns the output and how many swaps were made.
pub(crate) fn run_racing(mut cmd: Command, swapper: Swapper) -> (Output, u64) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Drain the pipes while it runs: a long debug log would fill them and block it.
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out_pipe, &mut v);
        v
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err_pipe, &mut v);
        v
    });
    let start = Instant::now();
    let mut swapper = Some(swapper);
    let mut swaps = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > SWAP_FOR {
            if let Some(s) = swapper.take() {
                swaps = s.stop();
            }
        }
        if start.elapsed() > RACE_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not exit within {RACE_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if let Some(s) = swapper.take() {
        swaps = s.stop();
    }
    let output = Output {
        status,
        stdout: out_thread.join().expect("stdout reader"),
        stderr: err_thread.join().expect("stderr reader"),
    };
    (output, swaps)
}

/// Runs `cmd` to its end within [`RACE_DEADLINE`].
fn run(cmd: Command) -> Output {
    output_within(cmd, RACE_DEADLINE)
}

/// A run that failed must say what failed: its errors name files in the swapped directory
/// (a symlink in the way, or a temp file gone with the directory it was made in).
fn assert_clear(what: &str, out: &Output, swapped: &Path) {
    if !out.status.success() {
        let err = stderr(out);
        assert!(
            err.contains(&swapped.display().to_string()),
            "{what} failed without naming {} ({}):\n{}",
            swapped.display(),
            out.status,
            err.lines().rev().take(30).collect::<Vec<_>>().join("\n")
        );
    }
}

const FILES: usize = 3000;

#[test]
fn a_directory_swapped_for_a_symlink_during_a_sync_is_never_written_through() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let top = tmp.path();
    let e = top.join("e");
    for i in 0..FILES {
        write(&e.join(format!("d/f{i:04}")), format!("E's file {i}\n"));
    }
    std::fs::set_permissions(e.join("d"), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    write(&e.join("top.txt"), "top\n");
    let state = top.join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();

    // R already has its copy of d (empty): that is the directory being swapped.
    let r = top.join("r");
    std::fs::create_dir_all(r.join("d")).expect("mkdir");
    let (out_dir, link) = outside(top, &["f0000", "f0001", "top.txt"]);
    let before = snapshot(&out_dir);
    let client = ClientSpec::new(&top.join("client"), &daemon, &[("code", &r)]);

    let swapper = Swapper::start(&r.join("d"), &link);
    let mut cmd = client.command(&daemon.url());
    cmd.arg("--once");
    let (out, swaps) = run_racing(cmd, swapper);
    assert!(swaps > 0, "the swapper never ran");

    assert_untouched(&before, &snapshot(&out_dir));
    assert_clear("zync-client --once", &out, &r.join("d"));
    // With the swapping over, the next run brings E's d to R's (R may also keep conflict
    // copies of what it saw there while the symlink was in place).
    let next = client.once(&daemon.url());
    assert!(
        matches!(next.status.code(), Some(0 | 3)),
        "the run after the race failed ({}):\n{}",
        next.status,
        stderr(&next)
    );
    // Every file of E's d is now in R's d with E's content, except one the attacker carried
    // off. When the client finds the symlink where R's d was, it keeps that as R's edit (a
    // conflict copy) and makes d anew; from then on the swapper exchanges the new d with the
    // old one, which is now at the attacker's path. A file written into whichever was R's d
    // at that instant and then swapped out has left R's tree by the attacker's hand, as if
    // deleted on R: the client rightly does not bring it back. It must then be there, whole.
    let carried_off = top.join("attacker/link");
    let carried_off = std::fs::symlink_metadata(&carried_off)
        .is_ok_and(|m| m.is_dir())
        .then_some(carried_off);
    for i in 0..FILES {
        let name = format!("f{i:04}");
        let want = file_sha(&e.join("d").join(&name));
        let on_r = r.join("d").join(&name);
        if on_r.exists() {
            assert_eq!(
                file_sha(&on_r),
                want,
                "R's d/{name} is not E's after the race"
            );
            continue;
        }
        let took = carried_off.as_ref().map(|dir| dir.join(&name));
        assert!(
            took.as_ref().is_some_and(|t| file_sha(t) == want),
            "d/{name} is neither in R's d nor whole in the directory the attacker carried \
             off ({:?}):\n{}",
            carried_off,
            stderr(&next)
        );
    }
    assert_untouched(&before, &snapshot(&out_dir));
}

/// `zync-client --update-upstream --json`: the session id it pushed.
pub(crate) fn push(client: &ClientSpec, url: &str) -> String {
    let mut cmd = client.command(url);
    cmd.args(["--update-upstream", "--json"]);
    let out = run(cmd);
    assert!(
        out.status.success(),
        "push failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the push summary is not JSON ({e}): {}", stdout(&out)));
    summary["session_id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no session was pushed: {}", stdout(&out)))
}

#[test]
fn a_directory_swapped_for_a_symlink_during_an_apply_is_never_written_through() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let top = tmp.path();
    let e = top.join("e");
    write(&e.join("d/base.txt"), "base\n");
    let state = top.join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    let mut daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let r = top.join("r");
    let client = ClientSpec::new(&top.join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, &[]);

    // R adds many files to d and pushes them upstream.
    const NEW: usize = 1500;
    for i in 0..NEW {
        write(&r.join(format!("d/n{i:04}")), format!("R's new file {i}\n"));
    }
    let id = push(&client, &daemon.url());
    // zync-apply needs only the database; a daemon rescanning E on every swap would only
    // slow the race down.
    daemon.stop();

    let (out_dir, link) = outside(top, &["n0000", "n0001", "base.txt"]);
    let before = snapshot(&out_dir);
    let swapper = Swapper::start(&e.join("d"), &link);
    let mut cmd = command("zync-apply");
    cmd.arg("--db")
        .arg(&daemon.db)
        .args(["apply", &id, "--non-interactive"]);
    let (out, swaps) = run_racing(cmd, swapper);
    assert!(swaps > 0, "the swapper never ran");

    assert_untouched(&before, &snapshot(&out_dir));
    if out.status.code() == Some(3) {
        // A file looked at while `d` was the symlink is a conflict (E's version is not the one
        // R's change was made against): it stays staged, and the run ends with exit 3. Seen
        // once in a full e2e run.
        let said = stdout(&out);
        assert!(
            said.contains("conflict, left staged: code/d/"),
            "exit 3 without a conflict in d:\n{said}"
        );
    } else {
        assert_clear("zync-apply apply", &out, &e.join("d"));
    }
    // Whatever was applied is in E's real directory, and nothing else is there.
    for entry in std::fs::read_dir(e.join("d")).expect("list E's d") {
        let name = entry.expect("entry").file_name();
        let name = name.to_string_lossy();
        let data = std::fs::read(e.join("d").join(&*name)).expect("read");
        if name == "base.txt" {
            assert_eq!(data, b"base\n");
        } else if let Some(i) = name.strip_prefix('n') {
            let i: usize = i.parse().expect("a file the test made");
            assert_eq!(data, format!("R's new file {i}\n").as_bytes(), "{name}");
        } else {
            assert!(name.starts_with(".zync-tmp-"), "unexpected {name} in E's d");
        }
    }
}

/// Another local user on R puts files into the directories zync-client makes for a fresh tree,
/// at the names E's files will take, as soon as each directory appears (the client does not
/// look at paths in a directory it just made: its rename into place must refuse to replace
/// them). Whatever that user wrote survives, at its name or as a conflict copy beside it
/// (invariant 4, docs/ARCHITECTURE.md), and a second run leaves E's tree in place.
#[test]
fn files_another_user_puts_into_directories_zync_just_made_are_never_replaced() {
    const DIRS: usize = 40;
    const FILES: usize = 50;
    let tmp = tempfile::tempdir().expect("tempdir");
    let e = tmp.path().join("e");
    for d in 0..DIRS {
        for f in 0..FILES {
            write(
                &e.join(format!("d{d:02}/f{f:02}.txt")),
                format!("E's d{d:02}/f{f:02}\n"),
            );
        }
    }
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    std::fs::create_dir(&r).expect("mkdir r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);

    // The other user: every fifth name of each directory, created (never replaced) as soon as
    // the directory is there.
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (stop, r) = (stop.clone(), r.clone());
        std::thread::spawn(move || {
            let mut planted = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) && planted.len() < DIRS * FILES / 5 {
                for d in 0..DIRS {
                    let dir = r.join(format!("d{d:02}"));
                    if !dir.is_dir() {
                        continue;
                    }
                    for f in (0..FILES).step_by(5) {
                        let name = format!("d{d:02}/f{f:02}.txt");
                        if planted.contains_key(&name) {
                            continue;
                        }
                        let text = format!("the other user's {name}\n");
                        let made = std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .open(r.join(&name))
                            .and_then(|mut file| {
                                std::io::Write::write_all(&mut file, text.as_bytes())
                            });
                        match made {
                            Ok(()) => {
                                planted.insert(name, text);
                            }
                            // E's file got there first: nothing of the other user's to keep.
                            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                                planted.insert(name, String::new());
                            }
                            Err(_) => {}
                        }
                    }
                }
            }
            planted
        })
    };
    let first = client.once(&daemon.url());
    stop.store(true, Ordering::Relaxed);
    let planted = racer.join().expect("the other user's thread panicked");
    let won: Vec<(&String, &String)> = planted.iter().filter(|(_, t)| !t.is_empty()).collect();
    eprintln!(
        "the other user planted {} of {} files first (first run: {})",
        won.len(),
        planted.len(),
        first.status
    );

    for (name, text) in &won {
        let path = r.join(name);
        let dir = path.parent().expect("a parent");
        let base = path
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .to_string();
        let stem = base.trim_end_matches(".txt");
        let kept = std::fs::read_to_string(&path).is_ok_and(|t| &t == *text)
            || conflict_copies(dir)
                .iter()
                .filter(|c| c.starts_with(stem))
                .any(|c| std::fs::read_to_string(dir.join(c)).is_ok_and(|t| &t == *text));
        assert!(
            kept,
            "the other user's {name} was replaced: {name} holds {:?}, conflict copies {:?}",
            std::fs::read_to_string(&path),
            conflict_copies(dir)
        );
    }
    // A second run puts E's version wherever the other user's file still stands.
    let second = client.once(&daemon.url());
    assert!(
        matches!(second.status.code(), Some(0 | 3)),
        "the second run failed:\n{}",
        stderr(&second)
    );
    for d in 0..DIRS {
        for f in 0..FILES {
            let name = format!("d{d:02}/f{f:02}.txt");
            assert_eq!(
                std::fs::read_to_string(r.join(&name)).ok(),
                Some(format!("E's d{d:02}/f{f:02}\n")),
                "{name} after the second run"
            );
        }
    }
}

/// Another user who can rename entries of the directory R's root lies in (a shared project
/// directory, or a sticky one they own) swaps the root itself for a symlink to a directory of
/// theirs, back and forth, while a loop client brings E's new files: none lands in theirs
/// (the client pinned its root when it started), and once the swapping stops R gets them all.
#[test]
fn a_mapped_root_swapped_for_a_symlink_while_the_client_runs_is_never_written_through() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let top = tmp.path();
    let e = top.join("e");
    write(&e.join("first.txt"), "E's first file\n");
    let state = top.join("state");
    std::fs::create_dir_all(&state).expect("mkdir");
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let r = top.join("shared").join("r");
    std::fs::create_dir_all(&r).expect("mkdir");
    let (out_dir, link) = outside(top, &["first.txt"]);
    let before = snapshot(&out_dir);
    let client = ClientSpec::new(&top.join("client"), &daemon, &[("code", &r)]);
    let mut running = client.spawn(&daemon.url(), &top.join("client.log"));
    wait_until("R has E's first file", || r.join("first.txt").exists());

    const NEW: usize = 300;
    let swapper = Swapper::start(&r, &link);
    for i in 0..NEW {
        write(
            &e.join(format!("new/f{i:03}")),
            format!("E's new file {i}\n"),
        );
    }
    // The race: the client hears of the new files and writes them while the root is swapped.
    let racing = Instant::now();
    while racing.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let swaps = swapper.stop();
    assert!(swaps > 100, "the swapper barely ran ({swaps} swaps)");
    assert_untouched(&before, &snapshot(&out_dir));
    // The next save on E starts a round, which retries what failed.
    write(&e.join("next.txt"), "E's next save\n");
    wait_until_else(
        "R has all of E's new files once the swapping stopped",
        || r.join("next.txt").exists() && (0..NEW).all(|i| r.join(format!("new/f{i:03}")).exists()),
        || tail(&running.log_text(), 30),
    );
    assert!(
        running.is_running(),
        "the client stopped:\n{}",
        tail(&running.log_text(), 30)
    );
    assert_untouched(&before, &snapshot(&out_dir));
}
