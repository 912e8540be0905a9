//! End-to-end crash tests: `kill -9` of each program in the middle of its work.
//!
//! * the client during a large initial sync and during a stream of changes on E (invariants
//!   1 and 2, docs/ARCHITECTURE.md): R only ever holds versions E had, temp files of the
//!   killed run are gone once the next run has started, and R converges to E;
//! * the daemon while files change on E (invariant 6): nothing is missed after the restart;
//! * `zync-apply` in the middle of an apply (invariant 5): no E file is half-written, and a
//!   rerun completes the apply or `undo` restores E exactly.
//!
//! Kill moments come from a fixed-seed pseudo-random generator, so a failure can be replayed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::*;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// xorshift64*: deterministic pseudo-random numbers from a fixed seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    /// A pseudo-random delay in `lo_ms..hi_ms`: the moment of a kill, not a wait.
    fn delay(&mut self, lo_ms: u64, hi_ms: u64) -> Duration {
        Duration::from_millis(self.range(lo_ms, hi_ms))
    }
}

/// Every version of every path E ever had, as sha256s: what R may hold at that path.
#[derive(Clone, Default)]
struct Versions(Arc<Mutex<HashMap<String, HashSet<String>>>>);

impl Versions {
    fn record(&self, path: &str, data: &[u8]) {
        self.0
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .insert(sha256(data));
    }

    fn contains(&self, path: &str, sha: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .get(path)
            .is_some_and(|s| s.contains(sha))
    }
}

/// Writes a version of `rel` on E atomically (a temp file outside E, then a rename), after
/// recording it, so neither the daemon nor the test ever sees a half-written E file.
fn e_write(e: &Path, scratch: &Path, versions: &Versions, rel: &str, data: &[u8]) {
    versions.record(rel, data);
    let dest = e.join(rel);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let tmp = scratch.join(format!("w-{}", rel.replace('/', "_")));
    std::fs::write(&tmp, data).unwrap();
    std::fs::rename(&tmp, &dest).unwrap();
}

fn is_temp(name: &str) -> bool {
    name.starts_with(".zync-tmp-")
}

fn is_copy(name: &str) -> bool {
    name.contains(".zync-conflict-")
}

/// Regular files under `root` by relative path (no symlinks followed), with their sha256.
fn files(root: &Path) -> BTreeMap<String, String> {
    tree(root, &[])
        .into_iter()
        .filter_map(|(p, n)| match n {
            Node::File { sha256, .. } => Some((p, sha256)),
            _ => None,
        })
        .collect()
}

/// Fails unless every regular file on R (other than temp files and conflict copies, which
/// hold R's own content) holds a version E had at that path; returns the conflict copies.
fn check_only_e_versions(r: &Path, versions: &Versions, when: &str) -> Vec<String> {
    let mut copies = Vec::new();
    for (path, sha) in files(r) {
        let name = path.rsplit('/').next().unwrap_or(&path);
        if is_temp(name) {
            continue;
        }
        if is_copy(name) {
            copies.push(path);
            continue;
        }
        assert!(
            versions.contains(&path, &sha),
            "{when}: R's {path} has content (sha256 {sha}) that E never had"
        );
    }
    copies
}

/// E's and R's trees without temp files and conflict copies.
fn comparable(root: &Path) -> BTreeMap<String, Node> {
    tree(root, &[])
        .into_iter()
        .filter(|(p, _)| {
            let name = p.rsplit('/').next().unwrap_or(p);
            !is_temp(name) && !is_copy(name)
        })
        .collect()
}

/// Waits until R's tree equals E's (temp files and conflict copies aside).
fn wait_converged(e: &Path, r: &Path, what: &str) {
    let start = Instant::now();
    loop {
        let (te, tr) = (comparable(e), comparable(r));
        if te == tr {
            return;
        }
        if start.elapsed() > DEADLINE {
            let mut diff = String::new();
            for (k, v) in &te {
                match tr.get(k) {
                    None => diff.push_str(&format!("  missing on R: {k}\n")),
                    Some(w) if w != v => {
                        diff.push_str(&format!("  differs: {k}: E {v:?}, R {w:?}\n"))
                    }
                    _ => {}
                }
            }
            for k in tr.keys().filter(|k| !te.contains_key(*k)) {
                diff.push_str(&format!("  only on R: {k}\n"));
            }
            panic!("{what}: R did not converge to E within {DEADLINE:?}:\n{diff}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A writer thread changing files on E until stopped; returns how many changes it made.
struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<usize>>,
}

impl Writer {
    /// Rewrites, creates and deletes small files under `e` (paths `w/{n}.txt`, `n < paths`),
    /// and now and then rewrites `big` (a multi-MiB file), one change every `pause`.
    fn start(
        e: PathBuf,
        scratch: PathBuf,
        versions: Versions,
        seed: u64,
        paths: u64,
        big: Option<String>,
        pause: Duration,
    ) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut rng = Rng::new(seed);
            let mut n = 0usize;
            while !flag.load(Ordering::Relaxed) {
                n += 1;
                let pick = rng.range(0, 100);
                if let (Some(big), true) = (&big, pick < 3) {
                    let data = pseudo_random(3 << 20, seed ^ n as u64);
                    e_write(&e, &scratch, &versions, big, &data);
                } else {
                    let rel = format!("w/{}.txt", rng.range(0, paths));
                    if pick < 15 {
                        let _ = std::fs::remove_file(e.join(&rel));
                    } else {
                        let len = rng.range(1, 4000) as usize;
                        let mut data = format!("{rel} change {n}\n").into_bytes();
                        data.extend(pseudo_random(len, seed.wrapping_add(n as u64)));
                        e_write(&e, &scratch, &versions, &rel, &data);
                    }
                }
                std::thread::sleep(pause);
            }
            n
        });
        Writer {
            stop,
            handle: Some(handle),
        }
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().expect("writer thread")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// a. The client, killed during a large initial sync and during a stream of changes.

#[test]
fn client_killed_at_random_moments_only_ever_leaves_e_versions_and_converges() {
    client_kills(false);
}

/// R never edits anything here, so a conflict copy can only be the client's own download,
/// written (renamed into place) by a run killed before it recorded the file as synced: the
/// next run takes it for an edit on R when E has changed the file since.
#[test]
fn client_killed_at_random_moments_makes_no_conflict_copies_when_r_edits_nothing() {
    client_kills(true);
}

/// Part a: 15 kills, 7 in the initial sync and 8 while E changes. With `no_copies`, also
/// fails on any conflict copy.
fn client_kills(no_copies: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path();
    let (e, r, scratch) = (top.join("e"), top.join("r"), top.join("scratch"));
    std::fs::create_dir_all(&scratch).unwrap();
    let versions = Versions::default();
    for i in 0..2000 {
        let rel = format!("d{:02}/f{i:04}.txt", i % 40);
        let data = format!("small file {i}\n{}\n", "x".repeat(i % 300));
        e_write(&e, &scratch, &versions, &rel, data.as_bytes());
    }
    for i in 0..3 {
        let rel = format!("big/b{i}.bin");
        e_write(
            &e,
            &scratch,
            &versions,
            &rel,
            &pseudo_random((3 << 20) + i * 12_345, 100 + i as u64),
        );
    }
    let state = top.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let client = ClientSpec::new(&top.join("client"), &daemon, &[("code", &r)]);

    let mut rng = Rng::new(0x5eed_c11e);
    let mut writer = None;
    let mut leftover: BTreeSet<String> = BTreeSet::new();
    const KILLS: usize = 15;
    let mut last_run = None;
    for k in 0..=KILLS {
        let log = top.join(format!("client-{k}.log"));
        let mut running = client.spawn(&daemon.url(), &log);
        wait_until("the restarted client to connect", || {
            assert!(
                running.is_running(),
                "the client exited:\n{}",
                running.log_text()
            );
            running.log_text().contains("connected")
        });
        // The killed run's temp files are gone before the new run syncs anything.
        let still: Vec<&String> = leftover.iter().filter(|p| r.join(p).exists()).collect();
        assert!(
            still.is_empty(),
            "run {k}: temp files of the killed run are still on R after the restart: {still:?}"
        );
        if k == KILLS {
            last_run = Some(running);
            break;
        }
        // The first 7 kills fall in the initial sync. Then the sync is let finish, and E
        // starts changing under the client for the other 8.
        if k == 7 {
            wait_converged(&e, &r, "the initial sync, after 7 kills");
            assert!(
                files(&r).len() > 2000,
                "the initial sync was over before the kills"
            );
            writer = Some(Writer::start(
                e.clone(),
                scratch.clone(),
                versions.clone(),
                0xbeef,
                150,
                Some("big/b0.bin".into()),
                Duration::from_millis(4),
            ));
        }
        std::thread::sleep(rng.delay(30, 600));
        running.signal_and_wait(libc::SIGKILL);
        let when = format!("after kill {}", k + 1);
        check_only_e_versions(&r, &versions, &when);
        eprintln!(
            "{when}: R has {} files ({} from the writer)",
            files(&r).len(),
            files(&r).keys().filter(|p| p.starts_with("w/")).count()
        );
        leftover = temp_files(&r).into_iter().collect();
    }
    let changes = writer.take().map_or(0, Writer::finish);
    assert!(changes > 50, "the writer made only {changes} changes");
    wait_converged(&e, &r, "after the last restart");
    let mut last_run = last_run.expect("the last run");
    assert!(last_run.is_running(), "{}", last_run.log_text());
    // Conflict copies can only come from an interrupted write: R never edits here, so each
    // must hold a version E had of the file it was copied from.
    let copies = check_only_e_versions(&r, &versions, "at the end");
    for copy in &copies {
        let (dir, name) = copy.rsplit_once('/').unwrap_or(("", copy));
        let stem = name.split(".zync-conflict-").next().unwrap();
        let ext = name.rsplit_once('.').map(|(_, x)| x).unwrap_or("");
        let original = if dir.is_empty() {
            format!("{stem}.{ext}")
        } else {
            format!("{dir}/{stem}.{ext}")
        };
        let sha = sha256(&std::fs::read(r.join(copy)).unwrap());
        assert!(
            versions.contains(&original, &sha),
            "conflict copy {copy} holds content E never had at {original}"
        );
    }
    if !copies.is_empty() {
        eprintln!(
            "note: {} conflict copies of earlier E versions on R: {copies:?}",
            copies.len()
        );
    }
    assert!(
        !no_copies || copies.is_empty(),
        "R edited nothing, yet it has {} conflict copies: {copies:?}",
        copies.len()
    );
}

/// How many changes one GET_CHANGES page holds at most (`zync_proto::MAX_CHANGES_LIMIT`).
fn zync_page_size() -> u64 {
    5000
}

/// How many regular files under `dir` are not zync's temp files (names only, no hashing: it
/// is polled while a sync runs).
fn installed(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => installed(&entry.path()),
            Ok(t) if t.is_file() => usize::from(!is_temp(&entry.file_name().to_string_lossy())),
            _ => 0,
        })
        .sum()
}

/// The sequence the client stored for `dir`, read beside the running client (WAL).
fn stored_sequence(client_db: &Path, dir: &str) -> u64 {
    if !client_db.exists() {
        return 0;
    }
    let db = rusqlite::Connection::open_with_flags(
        client_db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    db.query_row("SELECT last_seq FROM dirs WHERE dir = ?1", [dir], |row| {
        row.get::<_, i64>(0)
    })
    .map_or(0, |s| s as u64)
}

/// The files the daemon's index holds for `dir` up to sequence `upto`: path and sha256.
fn indexed_files_upto(daemon_db: &Path, dir: &str, upto: u64) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open_with_flags(
        daemon_db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = db
        .prepare(
            "SELECT path, sha256 FROM entries
             WHERE dir = ?1 AND kind = 'file' AND deleted = 0 AND seq <= ?2",
        )
        .unwrap();
    stmt.query_map((dir, upto as i64), |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Invariant 2 across pages: a sync of more changes than one GET_CHANGES page holds downloads
/// the next page while the last one is installed. Killed at random moments, the client must
/// never have stored a sequence past a change that is not on R: every file the index numbers
/// at or below the stored sequence is on R with E's content. And the runs converge with no
/// conflict copy.
#[test]
fn client_killed_during_a_sync_of_many_pages_never_stores_a_sequence_past_what_r_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path();
    let (e, r) = (top.join("e"), top.join("r"));
    // Well over two pages of changes (a page holds at most 5000).
    const FILES: usize = 12_000;
    for i in 0..FILES {
        write(
            &e.join(format!("m{:02}/f{i:05}.txt", i % 60)),
            format!("file {i}\n{}", "y".repeat(2000 + i % 4000)),
        );
    }
    let state = top.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let client = ClientSpec::new(&top.join("client"), &daemon, &[("code", &r)]);
    let expected: HashMap<String, String> = files(&e).into_iter().collect();
    let mut rng = Rng::new(0x9a6e_5eed);
    let mut stored_before = 0;
    let mut held_before = 0;
    let mut kills_mid_sync = 0;
    let mut past_a_page = false;
    for k in 0..20 {
        let log = top.join(format!("client-{k}.log"));
        let mut running = client.spawn(&daemon.url(), &log);
        // Each run is killed a moment after it got further than the one before: the kills
        // fall all along the sync, however fast the machine.
        wait_until("the restarted client to install more files", || {
            assert!(
                running.is_running(),
                "the client exited:\n{}",
                running.log_text()
            );
            installed(&r) > held_before
        });
        std::thread::sleep(rng.delay(0, 40));
        running.signal_and_wait(libc::SIGKILL);
        let stored = stored_sequence(&client.db, "code");
        assert!(
            stored >= stored_before,
            "kill {k}: the stored sequence went back from {stored_before} to {stored}"
        );
        stored_before = stored;
        let held: BTreeMap<String, String> = files(&r)
            .into_iter()
            .filter(|(p, _)| !is_temp(p.rsplit('/').next().unwrap_or(p)))
            .collect();
        for (path, sha) in indexed_files_upto(&daemon.db, "code", stored) {
            assert_eq!(
                held.get(&path),
                Some(&sha),
                "kill {k}: the client stored sequence {stored}, but R does not hold E's {path} \
                 that the index numbers at or below it"
            );
        }
        for (path, sha) in &held {
            assert_eq!(
                expected.get(path),
                Some(sha),
                "kill {k}: R's {path} is not E's"
            );
        }
        eprintln!(
            "kill {k}: R has {} of {FILES} files, stored sequence {stored}",
            held.len()
        );
        held_before = held.len();
        if held.len() == FILES {
            break;
        }
        kills_mid_sync += 1;
        past_a_page |= stored > zync_page_size();
    }
    assert!(
        kills_mid_sync >= 3 && past_a_page,
        "{kills_mid_sync} kills fell inside the sync, past_a_page {past_a_page}: the sync was \
         not cut where pages meet"
    );
    let _last = client.spawn(&daemon.url(), &top.join("client-last.log"));
    wait_converged(&e, &r, "after the last restart");
    let copies: Vec<String> = files(&r)
        .into_keys()
        .filter(|p| is_copy(p.rsplit('/').next().unwrap_or(p)))
        .collect();
    assert!(
        copies.is_empty(),
        "R edited nothing, yet it has conflict copies: {copies:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// b. The daemon, killed while files change on E.

#[test]
fn daemon_killed_while_e_changes_misses_nothing_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path();
    let (e, r, scratch) = (top.join("e"), top.join("r"), top.join("scratch"));
    std::fs::create_dir_all(&scratch).unwrap();
    let versions = Versions::default();
    for i in 0..200 {
        e_write(
            &e,
            &scratch,
            &versions,
            &format!("w/{i}.txt"),
            format!("first {i}\n").as_bytes(),
        );
    }
    let state = top.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mut daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let client = ClientSpec::new(&top.join("client"), &daemon, &[("code", &r)]);
    let mut running = client.spawn(&daemon.url(), &top.join("client.log"));
    wait_converged(&e, &r, "the first sync");

    let mut rng = Rng::new(0xdae_0001);
    let writer = Writer::start(
        e.clone(),
        scratch.clone(),
        versions.clone(),
        0xfeed,
        300,
        None,
        Duration::from_millis(3),
    );
    for kill in 1..=4 {
        std::thread::sleep(rng.delay(100, 500));
        daemon.kill();
        // The writer keeps going while the daemon is down.
        std::thread::sleep(rng.delay(50, 300));
        daemon.restart();
        assert!(running.is_running(), "kill {kill}: the client gave up");
    }
    std::thread::sleep(rng.delay(100, 300));
    let changes = writer.finish();
    assert!(changes > 100, "the writer made only {changes} changes");
    wait_converged(&e, &r, "after the last daemon restart");
    check_only_e_versions(&r, &versions, "at the end");
    assert!(running.is_running(), "{}", running.log_text());
}

// ---------------------------------------------------------------------------------------------
// c. zync-apply, killed in the middle of an apply.

/// Pushes R's changes upstream; returns the session id.
fn push(client: &ClientSpec, url: &str) -> String {
    let mut cmd = client.command(url);
    cmd.arg("--update-upstream");
    let out = output_within(cmd, Duration::from_secs(150));
    assert!(
        out.status.success(),
        "--update-upstream failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    let out = stdout(&out);
    out.lines()
        .find_map(|l| l.strip_prefix("session "))
        .map(|id| id.trim().to_string())
        .unwrap_or_else(|| panic!("no `session <id>` line:\n{out}"))
}

#[test]
fn apply_killed_mid_way_is_completed_by_a_rerun_or_undone_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path();
    let (e, r) = (top.join("e"), top.join("r"));
    for i in 0..300 {
        write(
            &e.join(format!("s{:02}/f{i:03}.txt", i % 10)),
            format!("E's original {i}\n"),
        );
    }
    for i in 0..3 {
        write(
            &e.join(format!("big/b{i}.bin")),
            pseudo_random(4 << 20, 7 + i),
        );
    }
    write(&e.join("gone/on-r.txt"), "deleted on R\n");
    let state = top.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let client = ClientSpec::new(&top.join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, &[]);

    // R's versions: every file edited, one deleted, a few new in a new directory.
    for i in 0..300 {
        write(
            &r.join(format!("s{:02}/f{i:03}.txt", i % 10)),
            format!("R's edit of {i}, longer than E's\n"),
        );
    }
    for i in 0..3 {
        write(
            &r.join(format!("big/b{i}.bin")),
            pseudo_random((4 << 20) + 99, 70 + i),
        );
    }
    std::fs::remove_file(r.join("gone/on-r.txt")).unwrap();
    for i in 0..5 {
        write(&r.join(format!("new/n{i}.txt")), format!("new on R {i}\n"));
    }
    let original = files(&e);
    let original_tree = tree(&e, &[]);
    // E exactly as before the apply. Undo removes the files an apply created but not the
    // directories it made for them (undo.rs has no record of those): the empty `new/` may stay.
    let assert_original = |when: &str| {
        let now = tree(&e, &[]);
        let mut diff = String::new();
        for (k, v) in &original_tree {
            match now.get(k) {
                None => diff.push_str(&format!("  missing: {k}\n")),
                Some(w) if w != v => diff.push_str(&format!("  differs: {k}: {v:?} -> {w:?}\n")),
                _ => {}
            }
        }
        for (k, v) in now.iter().filter(|(k, _)| !original_tree.contains_key(*k)) {
            if !(k == "new" && *v == Node::Dir) {
                diff.push_str(&format!("  added: {k} {v:?}\n"));
            }
        }
        assert!(
            diff.is_empty(),
            "{when}: E is not as before the apply:\n{diff}"
        );
    };
    let theirs = files(&r);
    let total = original.len() + 5;

    // Every E file is E's original or R's version, and nothing else is on E.
    let check_whole = |when: &str| -> usize {
        let now = files(&e);
        let mut applied = 0;
        for (path, sha) in &now {
            let name = path.rsplit('/').next().unwrap();
            // A write killed before its rename leaves its temp file (the daemon ignores it);
            // the rerun or undo removes it (checked below).
            if is_temp(name) {
                continue;
            }
            let ours = original.get(path) == Some(sha);
            let r_version = theirs.get(path) == Some(sha);
            assert!(
                ours || r_version,
                "{when}: E's {path} is neither E's original nor R's version (half-written?)"
            );
            applied += usize::from(r_version && !ours);
        }
        applied += usize::from(!now.contains_key("gone/on-r.txt"));
        applied
    };

    let db = daemon.db.clone();
    let mut rng = Rng::new(0x0a99_11e5);
    // Calibration: how long a whole apply takes here, then undo it.
    let id = push(&client, &daemon.url());
    let start = Instant::now();
    run_ok(zync_apply(
        &db,
        &["apply", &id, "--non-interactive", "--force"],
    ));
    let whole = start.elapsed();
    assert_eq!(files(&e), theirs, "a whole apply puts R's versions on E");
    run_ok(zync_apply(&db, &["undo", &id]));
    assert_original("undo of the first apply");

    let mut mid_way = 0;
    // How many small files hold R's version now (cheap: no big files read).
    let small_applied = || {
        (0..300)
            .filter(|i| {
                std::fs::read(e.join(format!("s{:02}/f{i:03}.txt", i % 10)))
                    .is_ok_and(|d| d.starts_with(b"R's edit"))
            })
            .count()
    };
    const ROUNDS: usize = 4;
    for round in 0..ROUNDS {
        let id = push(&client, &daemon.url());
        let mut child: Child = zync_apply(&db, &["apply", &id, "--non-interactive", "--force"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn zync-apply");
        // Round 0: a pseudo-random moment early on, while the big files (first in path
        // order) are being written. Later rounds: once a pseudo-random number of the small
        // files went through, plus a pseudo-random few milliseconds.
        let moment = if round == 0 {
            let d = rng.delay(20, 150);
            std::thread::sleep(d);
            format!("{d:?} after the start")
        } else {
            let target = rng.range(5, 250) as usize;
            wait_until("the apply to get going", || {
                small_applied() >= target || child.try_wait().expect("try_wait").is_some()
            });
            std::thread::sleep(rng.delay(0, 15));
            format!("once {target} small files were applied")
        };
        let finished_alone = child.try_wait().expect("try_wait");
        let _ = child.kill();
        let status = child.wait().unwrap();
        let when = format!("round {round}, killed {moment} ({status})");
        assert!(
            finished_alone.is_none(),
            "{when}: the apply ended by itself before the kill"
        );
        let applied = check_whole(&when);
        if applied > 0 && applied < total {
            mid_way += 1;
        }
        eprintln!("{when}: {applied} of {total} changes were on E");
        if round % 2 == 0 {
            // A rerun completes it; then undo (with the backups the killed run made) restores
            // E's originals.
            let out = stdout(&run_ok(zync_apply(
                &db,
                &["apply", &id, "--non-interactive", "--force"],
            )));
            assert_eq!(
                files(&e),
                theirs,
                "{when}: the rerun did not complete:\n{out}"
            );
            run_ok(zync_apply(&db, &["undo", &id]));
        } else {
            let out = stdout(&run_ok(zync_apply(&db, &["undo", &id])));
            assert!(out.contains("restored"), "{when}: undo said:\n{out}");
        }
        assert_original(&when);
        let temps = temp_files(&e);
        assert!(temps.is_empty(), "{when}: temp files left on E: {temps:?}");
    }
    assert!(
        mid_way >= ROUNDS - 1,
        "only {mid_way} of {ROUNDS} kills fell in the middle of an apply (a whole apply took {whole:?})"
    );
}
