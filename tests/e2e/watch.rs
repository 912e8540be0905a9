//! End-to-end: what the daemon asks the kernel to watch. It must hear every change (invariant
//! 6, docs/ARCHITECTURE.md) and nothing else: a watch on opens would wake the daemon for every
//! file anything on E reads (an editor, a build, `grep -r`, the daemon serving R), and enough
//! of them at once overflow the kernel's queue into a full rescan.

use std::path::Path;

use crate::common::*;

const IN_ACCESS: u32 = 0x1;
const IN_MODIFY: u32 = 0x2;
const IN_ATTRIB: u32 = 0x4;
const IN_CLOSE_WRITE: u32 = 0x8;
const IN_CLOSE_NOWRITE: u32 = 0x10;
const IN_OPEN: u32 = 0x20;
const IN_MOVED_FROM: u32 = 0x40;
const IN_MOVED_TO: u32 = 0x80;
const IN_CREATE: u32 = 0x100;
const IN_DELETE: u32 = 0x200;

/// The event masks of every inotify watch process `pid` holds, from /proc/PID/fdinfo.
fn inotify_masks(pid: u32) -> Vec<u32> {
    let mut masks = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        if target != Path::new("anon_inode:inotify") {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap();
        for line in info.lines().filter(|l| l.starts_with("inotify ")) {
            let mask = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("mask:"))
                .unwrap_or_else(|| panic!("no mask in {line:?}"));
            masks.push(u32::from_str_radix(mask, 16).unwrap());
        }
    }
    masks
}

#[test]
fn the_daemon_watches_every_directory_for_changes_and_none_for_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    for dir in ["a", "a/b", "c"] {
        write(&e.join(dir).join("f.txt"), "x");
    }
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let mut masks = Vec::new();
    wait_until(
        "the daemon to watch the root and its three directories",
        || {
            masks = inotify_masks(daemon.pid());
            masks.len() >= 4
        },
    );
    assert_eq!(masks.len(), 4, "one watch per directory: {masks:x?}");
    let changes = IN_MODIFY
        | IN_ATTRIB
        | IN_CLOSE_WRITE
        | IN_MOVED_FROM
        | IN_MOVED_TO
        | IN_CREATE
        | IN_DELETE;
    for mask in masks {
        assert_eq!(
            mask & changes,
            changes,
            "a watch misses changes: mask {mask:#x}, wanted all of {changes:#x}"
        );
        assert_eq!(
            mask & (IN_ACCESS | IN_OPEN | IN_CLOSE_NOWRITE),
            0,
            "a watch wakes the daemon for reads: mask {mask:#x}"
        );
    }
    // And it still hears a change.
    write(&e.join("a/b/new.txt"), "new");
    wait_until("the daemon to index a file created after the scan", || {
        let db = rusqlite::Connection::open_with_flags(
            &daemon.db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        db.query_row(
            "SELECT count(*) FROM entries WHERE path = 'a/b/new.txt' AND deleted = 0",
            [],
            |row| row.get::<_, i64>(0),
        )
        .is_ok_and(|n| n == 1)
    });
}

/// Files written into a new directory while the watcher's thread lags behind the kernel (every
/// read it makes of the queue waits 20 ms here): notify reports the directory's creation as
/// it reads it, but watches the directory only after its read loop, so a scan of the directory
/// made in between missed the files written after it and before the watch, and no event ever
/// came for them. They must reach a running client all the same, with no barrier and no
/// rescan to help.
#[test]
fn files_written_into_a_new_directory_while_the_watcher_lags_all_reach_r() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("first.txt"), "first\n");
    let m = Mirror::start(tmp.path(), Daemon::start(tmp.path(), &[("code", &e)]), &e);
    let tid = thread_named(m.daemon.pid(), "notify-rs").expect("the daemon's inotify thread");
    let slowed = SlowedThread::start(tid, "read", 20_000);
    for d in 0..3 {
        for i in 0..150 {
            write(&e.join(format!("new{d}/f{i}.txt")), format!("{d} {i}\n"));
        }
    }
    drop(slowed);
    wait_same_tree(&e, &m.r, &[]);
}

/// A burst of fresh files is hashed while each is within its mtime tick, where the indexer
/// asks whether the root's file system keeps this machine's clock (`statfs`). It asks once
/// per batch of events: it asked for each file (300 `statfs` calls for 300 files), a system
/// call that walks the root's path, on E while E's user is still writing.
#[test]
fn a_burst_of_fresh_files_asks_the_file_system_kind_once_per_batch_not_per_file() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("dir/first.txt"), "first\n");
    let m = Mirror::start(tmp.path(), Daemon::start(tmp.path(), &[("code", &e)]), &e);
    const FILES: usize = 300;
    let calls = syscalls_of(m.daemon.pid(), &["statfs"], || {
        for i in 0..FILES {
            write(&e.join(format!("dir/f{i}.txt")), format!("{i}\n"));
        }
        wait_same_tree(&e, &m.r, &[]);
    });
    assert!(
        calls["statfs"] < 30,
        "{} statfs calls for {FILES} files: {calls:?}",
        calls["statfs"]
    );
}
