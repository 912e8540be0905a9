//! End-to-end: a daemon and a client (the real binaries) keep R's directory equal to E's.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::common::proxy::Proxy;
use crate::common::*;

/// What the default ignore rules keep out of R in these tests.
const IGNORED: &[&str] = &["node_modules", ".git"];

#[test]
fn a_tree_that_exists_before_the_daemon_starts_is_synced_by_once() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("README.md"), "hello\n");
    write(&e.join("src/lib.rs"), "pub fn f() {}\n");
    write(&e.join("src/deep/er/file.txt"), pseudo_random(300_000, 1));
    write(&e.join("node_modules/pkg/index.js"), "ignored");
    write(&e.join(".git/HEAD"), "ignored");
    std::fs::create_dir_all(e.join("empty/dir")).unwrap();
    write(&e.join("run.sh"), "#!/bin/sh\n");
    std::fs::set_permissions(e.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("src/lib.rs", e.join("link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", e.join("outside")).unwrap();

    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    let r = tmp.path().join("r/code");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());

    assert_same_tree(&e, &r, IGNORED);
    assert!(
        !r.join("node_modules").exists(),
        "ignored directories must not reach R"
    );
    assert_eq!(
        std::fs::read_link(r.join("outside")).unwrap().to_str(),
        Some("/etc/passwd")
    );
    assert!(r.join("empty/dir").is_dir());

    // A second --once with nothing new succeeds and downloads nothing.
    let proxy = Proxy::to_port(daemon.port);
    client.once_ok(&proxy.url());
    assert_eq!(
        proxy.downloads(),
        Vec::<String>::new(),
        "a no-op sync downloaded something"
    );
    let sent = proxy.bytes_to_client();
    assert!(sent < 16 << 10, "{sent} bytes reached R in a no-op sync");
}

#[test]
fn loop_mode_follows_every_kind_of_change_on_e() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("keep.txt"), "keep\n");
    write(&e.join("old/name.txt"), "rename me\n");
    write(&e.join("gone.txt"), "delete me\n");
    std::fs::create_dir_all(e.join("dir-to-remove/sub")).unwrap();
    write(&e.join("dir-to-remove/sub/f"), "x");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    let running = client.spawn(&daemon.url(), &tmp.path().join("client.log"));
    wait_same_tree(&e, &r, IGNORED);

    // Add, modify, delete.
    write(&e.join("new/file.txt"), "new\n");
    write(&e.join("keep.txt"), "keep, modified\n");
    std::fs::remove_file(e.join("gone.txt")).unwrap();
    wait_same_tree(&e, &r, IGNORED);

    // Rename a file and a directory; remove a directory tree; make an empty directory.
    std::fs::rename(e.join("old/name.txt"), e.join("old/renamed.txt")).unwrap();
    std::fs::rename(e.join("old"), e.join("moved")).unwrap();
    std::fs::remove_dir_all(e.join("dir-to-remove")).unwrap();
    std::fs::create_dir_all(e.join("fresh/empty")).unwrap();
    wait_same_tree(&e, &r, IGNORED);
    assert!(!r.join("dir-to-remove").exists());

    // chmod +x and symlinks, including retargeting one.
    std::fs::set_permissions(e.join("keep.txt"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("keep.txt", e.join("ln")).unwrap();
    wait_same_tree(&e, &r, IGNORED);
    std::fs::remove_file(e.join("ln")).unwrap();
    std::os::unix::fs::symlink("moved/renamed.txt", e.join("ln")).unwrap();
    wait_same_tree(&e, &r, IGNORED);

    // An editor's save: write a temp file, rename it over the original.
    write(&e.join(".keep.txt.swx"), "saved by an editor\n");
    std::fs::rename(e.join(".keep.txt.swx"), e.join("keep.txt")).unwrap();
    wait_same_tree(&e, &r, IGNORED);
    assert_eq!(
        std::fs::read_to_string(r.join("keep.txt")).unwrap(),
        "saved by an editor\n"
    );
    drop(running);
}

/// A daemon serving `e` as dir "code" and a client that synced it once into `tmp`/r, with R
/// then holding E's tree.
fn synced_once(tmp: &Path, e: &Path) -> (Daemon, ClientSpec, PathBuf) {
    let daemon = Daemon::start(tmp, &[("code", e)]);
    daemon.wait_scanned();
    let r = tmp.join("r");
    let client = ClientSpec::new(&tmp.join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    assert_same_tree(e, &r, &[]);
    (daemon, client, r)
}

/// Content R already has is copied on R, not downloaded: a file renamed or moved on
/// E, a whole directory renamed, and a copy of a file all arrive without their bytes crossing
/// the wire, and the files set aside during the page leave nothing behind.
#[test]
fn renamed_moved_and_copied_files_are_copied_on_r_not_downloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    const SIZE: usize = 400_000;
    write(&e.join("a/big.bin"), pseudo_random(SIZE, 7));
    write(&e.join("dir/one.txt"), pseudo_random(SIZE, 8));
    write(&e.join("dir/sub/two.txt"), pseudo_random(SIZE, 9));
    write(&e.join("src.txt"), pseudo_random(SIZE, 10));
    let (daemon, client, r) = synced_once(tmp.path(), &e);

    std::fs::create_dir_all(e.join("b")).unwrap();
    std::fs::rename(e.join("a/big.bin"), e.join("b/moved.bin")).unwrap();
    std::fs::rename(e.join("dir"), e.join("renamed-dir")).unwrap();
    std::fs::copy(e.join("src.txt"), e.join("copy.txt")).unwrap();
    // A sync that saw the deletions without the creations would have to download (a file set
    // aside lives only as long as its page): let the daemon record the whole rename first.
    daemon.wait_indexed(
        &[
            "b/moved.bin",
            "renamed-dir/one.txt",
            "renamed-dir/sub/two.txt",
            "copy.txt",
        ],
        &["a/big.bin", "dir/one.txt", "dir/sub/two.txt"],
    );
    // The copy as made, not a state seen before its bytes arrived.
    daemon.wait_indexed_as("copy.txt", &sha256(&pseudo_random(SIZE, 10)));
    let proxy = Proxy::to_port(daemon.port);
    let logs = once_until(&client, &proxy.url(), "R has E's renamed tree", || {
        same_tree(&e, &r, &[])
    });
    assert_same_tree(&e, &r, &[]);
    // R holds E's tree and asked for no content: the four files were copied on R.
    assert_eq!(
        proxy.downloads(),
        Vec::<String>::new(),
        "content R had was downloaded again:\n{logs}"
    );
    let sent = proxy.bytes_to_client();
    assert!(
        sent < SIZE as u64,
        "{sent} bytes crossed the wire for renames and a copy of {SIZE}-byte files"
    );
    assert_eq!(
        temp_files(&r),
        Vec::<String>::new(),
        "set-aside files left on R"
    );
}

/// A renamed tree bigger than a batch: every file is a local copy made while the page is
/// planned, and they go into place batch by batch. Nothing is downloaded again and
/// no copy is left behind.
#[test]
fn a_renamed_tree_of_many_files_is_copied_batch_by_batch_not_downloaded() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    const FILES: usize = 1_500;
    for i in 0..FILES {
        write(
            &e.join(format!("old/d{:02}/f{i:04}.txt", i % 25)),
            format!("file {i} {}", "z".repeat(i % 300)),
        );
    }
    let (daemon, client, r) = synced_once(tmp.path(), &e);

    std::fs::rename(e.join("old"), e.join("new")).unwrap();
    let proxy = Proxy::to_port(daemon.port);
    once_until(&client, &proxy.url(), "R has E's renamed tree", || {
        same_tree(&e, &r, &[])
    });
    assert_same_tree(&e, &r, &[]);
    // R holds E's renamed tree and asked for none of its content: every file was copied on R.
    assert_eq!(
        proxy.downloads(),
        Vec::<String>::new(),
        "content R had was downloaded again"
    );
    assert_eq!(temp_files(&r), Vec::<String>::new(), "temp files left on R");
}

/// A copy on E of content R holds in several files is made on R from one R has not edited:
/// the first holder by name was edited on R, so the copy comes from the next, and nothing is
/// downloaded; R's edit stays as it was.
#[test]
fn a_copy_on_r_comes_from_a_holder_r_has_not_edited() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    const SIZE: usize = 300_000;
    let content = pseudo_random(SIZE, 21);
    for name in ["a.bin", "b.bin", "c.bin"] {
        write(&e.join(name), &content);
    }
    let (daemon, client, r) = synced_once(tmp.path(), &e);

    // The same size, another content and mtime: only the look at the file tells.
    let edited = pseudo_random(SIZE, 22);
    write(&r.join("a.bin"), &edited);
    std::fs::copy(e.join("c.bin"), e.join("d.bin")).unwrap();
    // The copy as made, not the empty file the daemon may see before its bytes arrive (R
    // holds no empty file to copy, so that one would be downloaded).
    daemon.wait_indexed_as("d.bin", &sha256(&content));
    let proxy = Proxy::to_port(daemon.port);
    let logs = once_until(&client, &proxy.url(), "R has d.bin", || {
        std::fs::read(r.join("d.bin")).is_ok_and(|d| d == content)
    });
    assert_eq!(
        proxy.downloads(),
        Vec::<String>::new(),
        "content R held in b.bin and c.bin was downloaded:\n{logs}"
    );
    assert_eq!(std::fs::read(r.join("a.bin")).unwrap(), edited, "R's edit");
}

#[test]
fn files_named_like_ignored_directories_are_synced_and_the_directories_are_not() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    // ripgrep's ci/docker/*/build are build scripts; a `dist` file is a script too.
    for path in [
        "ci/docker/x86_64/build",
        "ci/docker/arm/build",
        "dist",
        "tools/node_modules",
    ] {
        write(&e.join(path), format!("#!/bin/sh\necho {path}\n"));
        std::fs::set_permissions(e.join(path), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    write(&e.join("build/out.o"), "object");
    write(&e.join("web/dist/app.js"), "bundle");
    write(&e.join("web/node_modules/pkg/index.js"), "dependency");
    write(&e.join("src/__pycache__/m.cpython-312.pyc"), "bytecode");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    let r = tmp.path().join("r/code");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    for path in [
        "ci/docker/x86_64/build",
        "ci/docker/arm/build",
        "dist",
        "tools/node_modules",
    ] {
        let got = std::fs::read(r.join(path)).unwrap_or_else(|e| panic!("{path} on R: {e}"));
        assert_eq!(got, std::fs::read(e.join(path)).unwrap(), "{path}");
        let mode = std::fs::metadata(r.join(path))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111, "{path} keeps its executable bits");
    }
    for dir in ["build", "web/dist", "web/node_modules", "src/__pycache__"] {
        assert!(
            !r.join(dir).exists(),
            "{dir} is an ignored directory, yet it is on R"
        );
    }
}

#[test]
fn deletions_and_renames_of_files_with_the_same_content_leave_no_temp_file_on_r() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    // Checkout-like: many files share content (licence headers, empty __init__.py, copies).
    for i in 0..40 {
        write(
            &e.join(format!("old/d{}/same{i}.txt", i % 4)),
            "shared content\n",
        );
        write(&e.join(format!("old/d{}/empty{i}.py", i % 4)), "");
        write(
            &e.join(format!("old/unique{i}.txt")),
            format!("unique {i}\n"),
        );
    }
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    let r = tmp.path().join("r/code");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, &[]);
    // Delete them all, and bring back some of each content elsewhere (a rename across
    // directories), so one sync sees deletions of repeated contents next to creations.
    std::fs::remove_dir_all(e.join("old")).unwrap();
    write(&e.join("new/a/same.txt"), "shared content\n");
    write(&e.join("new/b/__init__.py"), "");
    write(&e.join("new/c/unique7.txt"), "unique 7\n");
    daemon.wait_indexed(
        &["new/a/same.txt", "new/b/__init__.py", "new/c/unique7.txt"],
        &["old"],
    );
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, &[]);
    assert_eq!(temp_files(&r), Vec::<String>::new(), "temp files left on R");
}

/// Small files go to the daemon a few hundred per GET_FILES; a daemon that advertised
/// GET_FILES and answers it `unknown_operation` is asked one GET_FILE per file instead, and the
/// sync still ends with R equal to E.
#[test]
fn small_files_are_asked_for_together_and_one_by_one_from_a_daemon_that_refuses_that() {
    const FILES: usize = 600;
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    for i in 0..FILES {
        write(
            &e.join(format!("d{}/f{i:04}.txt", i % 4)),
            format!("file {i}\n"),
        );
    }
    write(&e.join("big.bin"), pseudo_random(600 << 10, 5));
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let ops = |proxy: &Proxy| -> Vec<String> {
        proxy
            .requests()
            .iter()
            .filter_map(|r| r["operation"].as_str().map(str::to_string))
            .filter(|op| op.starts_with("GET_FILE"))
            .collect()
    };

    let proxy = Proxy::to_port(daemon.port);
    let r = tmp.path().join("r/code");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&proxy.url());
    assert_same_tree(&e, &r, &[]);
    let asked = ops(&proxy);
    // 600 files in requests of at most 256, and the big one alone.
    let together = asked.iter().filter(|op| *op == "GET_FILES").count();
    assert!(
        (3..=10).contains(&together) && asked.iter().filter(|op| *op == "GET_FILE").count() == 1,
        "expected the small files in a few GET_FILES and big.bin by GET_FILE: {together} \
         GET_FILES, {} GET_FILE",
        asked.len() - together
    );
    let mut downloads = proxy.downloads();
    downloads.sort();
    assert_eq!(
        downloads.len(),
        FILES + 1,
        "each file asked for once: {downloads:?}"
    );

    let proxy = Proxy::to_port(daemon.port);
    proxy.hide_get_files();
    let r = tmp.path().join("r2/code");
    let client = ClientSpec::new(&tmp.path().join("client2"), &daemon, &[("code", &r)]);
    client.once_ok(&proxy.url());
    assert_same_tree(&e, &r, &[]);
    let asked = ops(&proxy);
    let count = |name: &str| asked.iter().filter(|op| *op == name).count();
    // Those sent before the first refusal arrived (pipelined), then none.
    let (refused, single) = (count("GET_FILEZ"), count("GET_FILE"));
    assert!(
        (1..=3).contains(&refused) && single == FILES + 1,
        "expected a few refused GET_FILES, then every file by GET_FILE: {refused} refused, \
         {single} GET_FILE"
    );
}

/// Serving a download costs E no flush and few system calls per file: the client's
/// acknowledgements and its presence are records for the status commands, written without a
/// flush of the database each, and its directories are written only when they change; a
/// GET_FILES (as GET_FILE) checks each open file with one `fstat` and reads it with `pread`.
#[test]
fn serving_a_download_flushes_nothing_on_e_and_costs_few_calls_per_file() {
    const FILES: usize = 300;
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("first.txt"), "first\n");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();
    let r = tmp.path().join("r/code");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    // The client and its directories are known from a first sync.
    client.once_ok(&daemon.url());
    for i in 0..FILES {
        write(
            &e.join(format!("d{}/f{i:04}.txt", i % 3)),
            format!("file {i}\n"),
        );
    }
    // Every file, not only the last one written: a directory scanned as new picks up files
    // written after others whose events are still on their way (the last file could be
    // indexed before the one before it, and the download then missed a few).
    let all: Vec<String> = (0..FILES)
        .map(|i| format!("d{}/f{i:04}.txt", i % 3))
        .collect();
    daemon.wait_indexed(&all.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
    let names = [
        "fsync",
        "fdatasync",
        "syncfs",
        "statx",
        "fstat",
        "newfstatat",
        "lseek",
        "fcntl",
    ];
    let calls = syscalls_of(daemon.pid(), &names, || {
        client.once_ok(&daemon.url());
    });
    assert_same_tree(&e, &r, &[]);
    let flushes = calls["fsync"] + calls["fdatasync"] + calls["syncfs"];
    assert_eq!(flushes, 0, "E flushed while serving a download: {calls:?}");
    let files = FILES as u64;
    // One fstat per file served, of the descriptor opened; no second stat of the path (it was
    // a statx per file). The indexer may still look at a few of the files just written (a file
    // hashed within its mtime's tick is hashed again later): 83 such calls were seen.
    assert!(
        calls["fstat"] <= files + 50,
        "expected one fstat per file served ({files}): {calls:?}"
    );
    let by_path = calls["statx"] + calls["newfstatat"];
    assert!(
        by_path <= files / 2,
        "a stat of the path per file served ({files}), found {by_path}: {calls:?}"
    );
    assert!(calls["lseek"] <= 10, "a seek per file served: {calls:?}");
}

/// A big download is flushed to R's disk while it arrives, not all at the end: a disk with a
/// write cache of its own (a VM's) writes only when flushed, and a 1 GiB file's final `fsync`
/// then waited 1.5 s for all of it. The loop client's flushes of its temp file are counted by
/// strace (`-y` names each descriptor's file).
#[test]
fn a_big_download_is_flushed_while_it_arrives() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("first.txt"), "first\n");
    let m = Mirror::start(tmp.path(), Daemon::start(tmp.path(), &[("code", &e)]), &e);
    // 160 MiB: past two of the 64 MiB windows after which a flush is asked for.
    let big = pseudo_random(160 << 20, 7);
    let trace = strace_during(m.running.pid(), &["-y", "-e", "trace=fdatasync"], || {
        write(&e.join("big.bin"), &big);
        wait_same_tree(&e, &m.r, &[]);
    });
    let of_temp = trace
        .lines()
        .filter(|l| l.contains("fdatasync(") && l.contains(".zync-tmp-"))
        .count();
    assert!(
        of_temp >= 1,
        "the temp file was not flushed while it was written:\n{trace}"
    );
}

/// glibc's malloc arenas of `pid` made with mmap (the main one grows with brk): each is a
/// 64 MiB-aligned reservation, one mapping or a writable one followed by an inaccessible one,
/// 64 MiB in all.
fn mmapped_arenas(pid: u32) -> usize {
    const HEAP: u64 = 64 << 20;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let anon: Vec<(u64, u64)> = maps
        .lines()
        .filter(|l| l.split_whitespace().count() == 5)
        .filter_map(|l| {
            let (start, end) = l.split_whitespace().next()?.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            Some((start, u64::from_str_radix(end, 16).ok()?))
        })
        .collect();
    anon.iter()
        .enumerate()
        .filter(|(i, (start, end))| {
            let whole = match anon.get(i + 1) {
                Some((next, next_end)) if next == end => next_end - start,
                _ => end - start,
            };
            start % HEAP == 0 && (whole == HEAP || end - start == HEAP)
        })
        .count()
}

/// The daemon and the client cap glibc's malloc arenas (zync_cli::limit_malloc_arenas): by
/// default every thread that allocates may get one, and each keeps what was freed in it, the
/// 1 MiB chunk buffers of a big transfer among it.
#[test]
fn the_daemon_and_the_client_keep_at_most_two_malloc_arenas() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    for i in 0..40 {
        write(
            &e.join(format!("d{}/f{i}.bin", i % 4)),
            pseudo_random(256 << 10, i),
        );
    }
    write(&e.join("big.bin"), pseudo_random(24 << 20, 99));
    let m = Mirror::start(tmp.path(), Daemon::start(tmp.path(), &[("code", &e)]), &e);
    write(&e.join("later.bin"), pseudo_random(8 << 20, 100));
    wait_same_tree(&e, &m.r, &[]);
    for (who, pid) in [("daemon", m.daemon.pid()), ("client", m.running.pid())] {
        let arenas = mmapped_arenas(pid);
        assert!(
            arenas <= 1,
            "the {who} has {arenas} malloc arenas besides the main one (at most 1 expected)"
        );
    }
}
