//! End-to-end: what R's disk throws at the client. A path that cannot be written fails alone,
//! with a message naming it, is retried, and holds `--once` non-zero until it is fixed; a
//! file R's disk has no room for is not even downloaded; a symlink planted on R is never
//! written through (invariant 3, docs/ARCHITECTURE.md).

use crate::common::proxy::Proxy;
use crate::common::*;

#[test]
fn a_path_that_cannot_be_written_fails_alone_and_is_retried() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a/blocked.txt"), "E's content\n");
    write(&e.join("fine.txt"), "fine\n");
    write(&e.join("z/also-fine.txt"), "also fine\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    std::fs::create_dir_all(r.join("a")).unwrap();
    // A fifo where E has a file: zync never replaces special files it did not make.
    let fifo = r.join("a/blocked.txt");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0, "mkfifo");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);

    let out = client.once(&daemon.url());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "--once must fail while a path fails:\n{stderr}"
    );
    assert!(
        stderr.contains("a/blocked.txt") && stderr.contains("fifo"),
        "the error must name the path and what is in the way:\n{stderr}"
    );
    // The other changes were applied all the same.
    assert_eq!(
        std::fs::read_to_string(r.join("fine.txt")).unwrap(),
        "fine\n"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("z/also-fine.txt")).unwrap(),
        "also fine\n"
    );

    // Still failing on the next run: nothing was silently skipped or marked done.
    let again = client.once(&daemon.url());
    assert!(
        !again.status.success(),
        "the failing path must be retried, not forgotten"
    );

    std::fs::remove_file(&fifo).unwrap();
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, &[]);
}

#[test]
fn a_symlink_planted_in_a_parent_on_r_is_never_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("dir/f.txt"), "v1\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());

    // Someone on R swaps the directory for a link to a directory outside the root.
    let outside = tmp.path().join("outside");
    write(&outside.join("f.txt"), "outside, must stay\n");
    std::fs::remove_dir_all(r.join("dir")).unwrap();
    std::os::unix::fs::symlink(&outside, r.join("dir")).unwrap();

    write(&e.join("dir/f.txt"), "v2 from E\n");
    write(&e.join("dir/new.txt"), "new from E\n");
    once_until(&client, &daemon.url(), "E's v2 on R", || {
        std::fs::read_to_string(r.join("dir/f.txt")).is_ok_and(|s| s == "v2 from E\n")
            && !std::fs::symlink_metadata(r.join("dir"))
                .unwrap()
                .file_type()
                .is_symlink()
    });
    assert_eq!(
        std::fs::read_to_string(outside.join("f.txt")).unwrap(),
        "outside, must stay\n",
        "a write went through the planted symlink"
    );
    assert!(
        !outside.join("new.txt").exists(),
        "a new file was created through the symlink"
    );
    // The planted link itself is kept aside, not lost.
    let kept = conflict_copies(&r);
    assert_eq!(
        kept.len(),
        1,
        "the planted link must be kept as a conflict copy: {kept:?}"
    );
    assert!(std::fs::symlink_metadata(r.join(&kept[0]))
        .unwrap()
        .file_type()
        .is_symlink());
}

/// The daemon cannot watch a tree with a directory it may not read (the same happens when the
/// inotify watch limit is reached): it must say so, with the fix, and fall back to periodic
/// rescans instead of going blind.
#[test]
fn a_daemon_that_cannot_watch_falls_back_to_rescans() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // The daemon runs as nobody: it needs to reach its state and the served tree.
    let state = Daemon::state_for_nobody(tmp.path());
    let e = tmp.path().join("e");
    write(&e.join("seen.txt"), "v1\n");
    // An old mtime, so the daemon's second look at freshly written files cannot be what finds
    // the change below: only a rescan can.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(e.join("seen.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::fs::create_dir_all(e.join("locked/inner")).unwrap();
    std::fs::set_permissions(e.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();

    let daemon = Daemon::start_as_nobody(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let log = daemon.log_text();
    assert!(
        log.contains("cannot watch") && log.contains("max_user_watches"),
        "the daemon must say it cannot watch and how to fix it:\n{log}"
    );

    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    // The client talks to a server on its machine only if its own user or root holds it: the
    // daemon runs as nobody here, so a proxy of this test's user stands in for the tunnel.
    let proxy = Proxy::to_port(daemon.port);
    client.once_ok(&proxy.url());
    assert_eq!(std::fs::read_to_string(r.join("seen.txt")).unwrap(), "v1\n");

    // Without a watcher, the periodic rescan still finds a change (its mtime is old too).
    write(&e.join("seen.txt"), "v2, found by a rescan\n");
    std::fs::File::options()
        .write(true)
        .open(e.join("seen.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    once_until(
        &client,
        &proxy.url(),
        "the change found by a rescan",
        || {
            std::fs::read_to_string(r.join("seen.txt"))
                .is_ok_and(|s| s == "v2, found by a rescan\n")
        },
    );
    std::fs::set_permissions(e.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_big_file_whose_write_fails_midway_never_appears_on_r_and_is_retried() {
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    // Big enough to be written behind the socket in 1 MiB chunks.
    let big = pseudo_random(6 << 20, 7);
    write(&e.join("big.bin"), &big);
    write(&e.join("small.txt"), "small\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    std::fs::create_dir_all(&r).unwrap();
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);

    // R's disk refuses to grow any file past 2 MiB, as a full disk would refuse the rest.
    let mut cmd = client.command(&daemon.url());
    cmd.arg("--once");
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 2 << 20,
                rlim_max: 2 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = output_within_deadline(cmd);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "a failed write must fail --once:\n{err}"
    );
    assert!(
        err.contains("big.bin") && err.contains("too large"),
        "the error must name the file and the cause:\n{err}"
    );
    assert!(
        !r.join("big.bin").exists(),
        "a half-written file appeared on R"
    );
    let names: Vec<String> = std::fs::read_dir(&r)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(".zync-tmp")),
        "temp files left behind: {names:?}"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("small.txt")).unwrap(),
        "small\n"
    );

    // With room on the disk again, the next run brings it.
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, &[]);
}

#[test]
fn files_that_fit_one_by_one_but_not_together_are_not_all_downloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    // Each fits in 48 MiB with the 16 MiB kept spare, two together do, three do not.
    let names = ["a.bin", "b.bin", "c.bin"];
    for (seed, name) in names.iter().enumerate() {
        write(&e.join(name), pseudo_random(14 << 20, 20 + seed as u64));
    }
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let (r, copy, out) = r_copy_out(tmp.path());
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    let proxy = Proxy::to_port(daemon.port);
    let mut once = client.command(&proxy.url());
    once.arg("--once");

    let [(rc1, log1), (rc2, log2)] =
        twice_on_a_small_then_a_bigger_disk(&once, ["48m", "128m"], [&r, &copy, &out]);
    assert_ne!(rc1, 0, "--once must fail while a file has no room:\n{log1}");
    // Refused before it was asked for, with the two under way counted: a refusal when its
    // content arrives (the reservation) would not count them, and the third GET_FILE would
    // cross the proxy. (The bytes on the wire do not tell the two apart on loopback: the
    // client hangs up before much of an unwanted file has crossed.)
    assert!(
        log1.contains("no room for") && log1.contains("for the downloads under way before it"),
        "the error does not say why:\n{log1}"
    );
    let runs = proxy.downloads_per_connection();
    let first = runs.first().cloned().unwrap_or_default();
    assert_eq!(first.len(), 2, "two of the three fit: {runs:?}\n{log1}");
    assert_eq!(rc2, 0, "--once failed with room to spare:\n{log2}");
    let mut all = runs.concat();
    all.sort();
    assert_eq!(
        all,
        names.map(|n| format!("code/{n}")),
        "asked for: {runs:?}\n{log2}"
    );
    assert_same_tree(&e, &copy, &[]);
}

/// Makes `r` (where a namespace mounts R's small disk), `copy` (what it held at the end) and
/// `out` (the runs' exit codes and output) under `top`.
fn r_copy_out(
    top: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let dirs = (top.join("r"), top.join("copy"), top.join("out"));
    for dir in [&dirs.0, &dirs.1, &dirs.2] {
        std::fs::create_dir_all(dir).unwrap();
    }
    dirs
}

/// Runs `client` (a `zync-client --once` command) twice in a mount namespace of its own, where
/// `r` is a tmpfs of `sizes[0]` (`8m`, say) the first time and `sizes[1]` the second, then
/// copies what `r` holds to `copy`; the runs' output goes to `out`. `unshare --user
/// --map-root-user` needs no privileges where user namespaces are allowed (and none are needed
/// as root). Returns the two runs' exit codes and output.
fn twice_on_a_small_then_a_bigger_disk(
    client: &std::process::Command,
    sizes: [&str; 2],
    [r, copy, out]: [&std::path::Path; 3],
) -> [(i32, String); 2] {
    let script = r#"
        mount -t tmpfs -o size="$ZT_SMALL" zync-test "$ZT_R" || exit 97
        "$@" >"$ZT_OUT/1.log" 2>&1; echo $? >"$ZT_OUT/1.rc"
        mount -o remount,size="$ZT_BIG" zync-test "$ZT_R" || exit 98
        "$@" >"$ZT_OUT/2.log" 2>&1; echo $? >"$ZT_OUT/2.rc"
        cp -a "$ZT_R/." "$ZT_COPY/"
    "#;
    let mut cmd = namespaced(script, client);
    cmd.env("ZT_SMALL", sizes[0])
        .env("ZT_BIG", sizes[1])
        .env("ZT_R", r)
        .env("ZT_OUT", out)
        .env("ZT_COPY", copy);
    let ran = output_within_deadline(cmd);
    assert!(
        ran.status.success(),
        "this test runs the client on a small tmpfs in a namespace of its own, which needs \
         `unshare` (util-linux) and user namespaces, or root ({}):\n{}",
        ran.status,
        stderr(&ran)
    );
    [1, 2].map(|n| {
        let rc = std::fs::read_to_string(out.join(format!("{n}.rc"))).expect("exit code");
        let log = std::fs::read_to_string(out.join(format!("{n}.log"))).expect("log");
        (rc.trim().parse().expect("a number"), log)
    })
}

#[test]
fn a_file_r_has_no_room_for_fails_alone_without_being_downloaded_and_syncs_once_there_is() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    let big = pseudo_random(16 << 20, 11);
    write(&e.join("data/big.bin"), &big);
    write(&e.join("small.txt"), "fits anywhere\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let proxy = Proxy::to_port(daemon.port);
    let (r, copy, out) = r_copy_out(tmp.path());
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    let mut once = client.command(&proxy.url());
    once.arg("--once");

    let [(rc1, log1), (rc2, log2)] =
        twice_on_a_small_then_a_bigger_disk(&once, ["8m", "64m"], [&r, &copy, &out]);
    // 8 MiB: the big file fails alone, with a message that says why and what to do...
    assert_ne!(rc1, 0, "--once must fail while a file has no room:\n{log1}");
    assert!(
        log1.contains("no room for") && log1.contains("free some space there"),
        "{log1}"
    );
    assert!(log1.contains("data/big.bin"), "{log1}");
    let runs = proxy.downloads_per_connection();
    assert_eq!(
        runs.first().cloned().unwrap_or_default(),
        ["code/small.txt"],
        "the first run asked for: {runs:?}\n{log1}"
    );
    // ... and is retried once there is room.
    assert_eq!(rc2, 0, "--once failed with room to spare:\n{log2}");
    assert_eq!(
        runs[1..].concat(),
        ["code/data/big.bin"],
        "the second run asked for: {runs:?}\n{log2}"
    );
    assert_same_tree(&e, &copy, &[]);
    // It crossed the network once, for the run that had room: the first never asked for it.
    let sent = proxy.bytes_to_client();
    assert!(sent < 24 << 20, "{sent} bytes sent for a 16 MiB file");
}

/// A delta is kept in a spool file while the file is rebuilt beside R's older version, so it
/// needs room for itself and the rebuilt file. When R's disk has room for the file but not for
/// its delta too (here E rewrote all 16 MiB of it, so the delta is as big as the file), the
/// client asks for the whole file instead: before, the delta filled the disk and the rebuild
/// then failed for want of room, every run.
#[test]
fn a_delta_r_has_no_room_to_keep_gives_way_to_the_whole_file() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("big.bin"), pseudo_random(16 << 20, 21));
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let (r, copy, out) = r_copy_out(tmp.path());
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    let mut once = client.command(&daemon.url());
    once.arg("--once");
    // 56 MiB: after the first sync about 40 MiB are free. The whole file needs 16 and the 16
    // to spare that every download leaves; its delta as well needs 48.
    // It waits for `go` (the test's edit on E) for at most a minute.
    let script = r#"
        mount -t tmpfs -o size=56m zync-test "$ZT_R" || exit 97
        "$@" >"$ZT_OUT/1.log" 2>&1; echo $? >"$ZT_OUT/1.rc"
        n=0; while [ ! -e "$ZT_OUT/go" ]; do n=$((n + 1)); [ $n -gt 1200 ] && exit 96; sleep 0.05; done
        "$@" >"$ZT_OUT/2.log" 2>&1; echo $? >"$ZT_OUT/2.rc"
        cp -a "$ZT_R/." "$ZT_COPY/"
    "#;
    let mut cmd = namespaced(script, &once);
    cmd.env("ZT_R", &r)
        .env("ZT_OUT", &out)
        .env("ZT_COPY", &copy)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    /// Kills the namespace's shell if the test fails before it ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut running = Killed(cmd.spawn().expect("unshare (util-linux)"));
    let rc = |n: u32| {
        std::fs::read_to_string(out.join(format!("{n}.rc")))
            .ok()
            .and_then(|rc| rc.trim().parse::<i32>().ok())
    };
    let log = |n: u32| std::fs::read_to_string(out.join(format!("{n}.log"))).unwrap_or_default();
    wait_until("the first sync on the small disk", || {
        rc(1).is_some() || running.0.try_wait().ok().flatten().is_some()
    });
    assert!(
        rc(1).is_some(),
        "this test runs the client on a small tmpfs in a namespace of its own, which needs \
         `unshare` (util-linux) and user namespaces, or root"
    );
    assert_eq!(rc(1), Some(0), "the first sync failed:\n{}", log(1));
    // E rewrites every byte: R's older version has nothing in common with it.
    let new = pseudo_random(16 << 20, 22);
    write(&e.join("big.bin"), &new);
    daemon.wait_indexed_as("big.bin", &sha256(&new));
    std::fs::write(out.join("go"), "").unwrap();
    wait_until("the second sync", || {
        running.0.try_wait().ok().flatten().is_some()
    });
    let status = running.0.wait().expect("the namespace's shell");
    let log2 = log(2);
    assert!(
        status.success(),
        "the namespace's shell failed ({status}):\n{log2}"
    );
    assert_eq!(rc(2), Some(0), "the second sync failed:\n{log2}");
    assert!(
        log2.contains("delta refused (no room for") && log2.contains("downloading whole"),
        "the client should have given up the delta for the whole file, for want of room:\n{log2}"
    );
    assert_same_tree(&e, &copy, &[]);
}
