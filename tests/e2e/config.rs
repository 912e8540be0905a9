//! End-to-end: the config files of the three binaries. Settings come from a file
//! when no flag gives them, a flag wins over the file, a broken or missing file stops the
//! program with the line at fault before it touches anything, the example files in docs/
//! work as documented, the systemd units start real binaries with real flags, and each
//! binary generates shell completions and man pages.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::common::*;

/// A daemon started with the arguments of a prepared command; killed on drop.
struct Running {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Running {
    fn start(mut cmd: Command, log: &Path) -> Running {
        let file = std::fs::File::create(log).expect("create the daemon log");
        cmd.args(["--port", "0"]).stdout(Stdio::null()).stderr(file);
        let mut child = cmd.spawn().expect("spawn zync-daemon");
        let mut port = None;
        wait_until("the daemon to listen", || {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "zync-daemon exited with {status}:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            port = listening_port(log);
            port.is_some()
        });
        Running {
            child,
            log: log.to_path_buf(),
            port: port.unwrap_or_default(),
        }
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command for binary `name` run in `cwd`, so that built-in defaults (`sync.db`) would land
/// there and never in the repository.
fn in_dir(name: &str, cwd: &Path) -> Command {
    std::fs::create_dir_all(cwd).expect("create the working directory");
    let mut cmd = command(name);
    cmd.current_dir(cwd);
    cmd
}

/// Copies the daemon's token to `to`, private as the client requires.
fn copy_token(from: &Path, to: &Path) {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).expect("create the token's directory");
    }
    std::fs::copy(from, to).expect("copy the token");
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        stderr(out)
    );
}

/// E's tree: `a.txt` and `debug.log` (which the daemon's config file ignores).
fn make_e(e: &Path, content: &str) {
    write(&e.join("a.txt"), content);
    write(&e.join("debug.log"), "noise\n");
}

#[test]
fn settings_come_from_the_config_files_when_no_flag_gives_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_e(&root.join("e"), "from E\n");
    // Relative paths in a config file are relative to the file's directory.
    let e_config = root.join("e-config/daemon.toml");
    write(
        &e_config,
        "host = \"127.0.0.1\"\ndirs = [\"code:../e\"]\ndb = \"state/sync.db\"\nignore = [\"*.log\"]\nlog-level = \"debug\"\n",
    );
    std::fs::create_dir_all(root.join("e-config/state")).unwrap();
    let mut cmd = in_dir("zync-daemon", &root.join("cwd"));
    cmd.arg("--config").arg(&e_config);
    let daemon = Running::start(cmd, &root.join("daemon.log"));
    // The daemon opens its database just after it starts listening.
    wait_until("the database at `db` from the daemon's config file", || {
        root.join("e-config/state/sync.db").is_file()
    });
    assert!(
        !root.join("cwd/sync.db").exists(),
        "the built-in default db was used"
    );

    copy_token(
        &root.join("e-config/state/zync.token"),
        &root.join("r-config/token"),
    );
    let r_config = root.join("r-config/client.toml");
    write(
        &r_config,
        format!(
            "server = \"{}\"\ndirs = [\"code:../r\"]\ndb = \"client.db\"\ntoken-file = \"token\"\n",
            daemon.url()
        ),
    );
    let mut client = in_dir("zync-client", &root.join("cwd"));
    client.arg("--config").arg(&r_config).arg("--once");
    let out = output_within_deadline(client);
    assert_ok(&out, "zync-client --once with its settings in client.toml");
    let r = root.join("r");
    assert_eq!(
        std::fs::read_to_string(r.join("a.txt")).unwrap_or_default(),
        "from E\n"
    );
    assert!(
        !r.join("debug.log").exists(),
        "the daemon's `ignore` from its file was not applied"
    );
    assert!(root.join("r-config/client.db").is_file(), "client `db`");
    wait_until("a DEBUG line: `log-level` from the daemon's file", || {
        daemon.log_text().contains(" DEBUG ")
    });
    assert!(!root.join("cwd/sync_client.db").exists());

    // zync-apply reads the daemon's file for its database.
    let mut apply = in_dir("zync-apply", &root.join("cwd"));
    apply.arg("--config").arg(&e_config).arg("list");
    let out = output_within_deadline(apply);
    assert_ok(&out, "zync-apply list with `db` from daemon.toml");
}

#[test]
fn a_flag_wins_over_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_e(&root.join("e-file"), "E dir from the file\n");
    make_e(&root.join("e-flag"), "E dir from the flag\n");
    let e_config = root.join("daemon.toml");
    write(
        &e_config,
        format!(
            "host = \"127.0.0.1\"\ndirs = [\"code:{}\"]\ndb = \"file.db\"\n",
            root.join("e-file").display()
        ),
    );
    let mut cmd = in_dir("zync-daemon", &root.join("cwd"));
    cmd.arg("--config")
        .arg(&e_config)
        .arg("--db")
        .arg(root.join("flag.db"))
        .arg("--dirs")
        .arg(format!("code:{}", root.join("e-flag").display()));
    let daemon = Running::start(cmd, &root.join("daemon.log"));
    wait_until("the database at --db", || root.join("flag.db").is_file());
    assert!(!root.join("file.db").exists(), "the file's db was used");

    // The client's file names a dead server, a wrong token and another directory: only the
    // flags can make this run succeed.
    write(&root.join("wrong.token"), "not-the-token\n");
    std::fs::set_permissions(
        root.join("wrong.token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    copy_token(&root.join("zync.token"), &root.join("right.token"));
    let r_config = root.join("client.toml");
    write(
        &r_config,
        "server = \"ws://127.0.0.1:1\"\ndirs = [\"code:r-file\"]\ndb = \"client.db\"\ntoken-file = \"wrong.token\"\n",
    );
    let mut client = in_dir("zync-client", &root.join("cwd"));
    client
        .arg("--config")
        .arg(&r_config)
        .args(["--once", "--server", &daemon.url(), "--token-file"])
        .arg(root.join("right.token"))
        .arg("--dirs")
        .arg(format!("code:{}", root.join("r-flag").display()));
    let out = output_within_deadline(client);
    assert_ok(&out, "zync-client with flags over a wrong client.toml");
    assert_eq!(
        std::fs::read_to_string(root.join("r-flag/a.txt")).unwrap_or_default(),
        "E dir from the flag\n",
        "the daemon's --dirs or the client's --dirs did not win"
    );
    assert!(
        root.join("r-flag/debug.log").exists(),
        "nothing ignores *.log here"
    );
    assert!(!root.join("r-file").exists(), "the file's dirs were used");
}

/// Runs `cmd`, expecting exit code 2 and every one of `expected` in its stderr.
fn refused(cmd: Command, expected: &[&str]) -> String {
    let out = output_within_deadline(cmd);
    let log = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit code 2, got {}:\n{log}",
        out.status
    );
    for word in expected {
        assert!(log.contains(word), "stderr lacks {word:?}:\n{log}");
    }
    log
}

#[test]
fn a_broken_config_file_names_its_line_and_nothing_is_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let e = root.join("e");
    make_e(&e, "x\n");
    let cwd = root.join("cwd");

    // An unknown key (a typo) on line 3 of the daemon's file.
    let bad = root.join("daemon.toml");
    write(
        &bad,
        "# E\nhost = \"127.0.0.1\"\nprot = 8001\ndirs = [\"code:e\"]\n",
    );
    let mut cmd = in_dir("zync-daemon", &cwd);
    cmd.arg("--config").arg(&bad).args(["--port", "0"]);
    let log = refused(
        cmd,
        &[
            &format!("{}:3:1", bad.display()),
            "unknown key `prot`",
            "3 | prot = 8001",
            "fix line 3",
        ],
    );
    assert!(!log.contains("listening on"), "{log}");

    // A value of the wrong type on line 2 of the client's file.
    let bad = root.join("client.toml");
    write(
        &bad,
        "dirs = [\"code:r\"]\ninterval = \"often\"\ntoken-file = \"t\"\n",
    );
    let mut cmd = in_dir("zync-client", &cwd);
    cmd.arg("--config").arg(&bad).arg("--once");
    refused(
        cmd,
        &[
            &format!("{}:2:12", bad.display()),
            "invalid value 'often' for '--interval",
            "interval = \"often\"",
        ],
    );

    // A `dirs` entry that is not NAME:PATH, on line 2 of a daemon file: exit 2 at its line,
    // so a service manager does not restart the daemon on it over and over.
    let bad = root.join("daemon-dirs.toml");
    write(&bad, "port = 0\ndirs = [\"code\"]\n");
    let mut cmd = in_dir("zync-daemon", &cwd);
    cmd.arg("--config").arg(&bad);
    let log = refused(
        cmd,
        &[
            &format!("{}:2:8", bad.display()),
            "\"code\" is not NAME:PATH",
            "fix line 2",
        ],
    );
    assert!(!log.contains("listening on"), "{log}");

    // Not TOML at all, read by zync-apply.
    let bad = root.join("broken.toml");
    write(&bad, "db = \"sync.db\"\ndirs = [\"code:e\"\n[oops\n");
    let mut cmd = in_dir("zync-apply", &cwd);
    cmd.arg("--config").arg(&bad).arg("list");
    refused(cmd, &[&bad.display().to_string(), "fix line"]);

    let mut left: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            "broken.toml",
            "client.toml",
            "cwd",
            "daemon-dirs.toml",
            "daemon.toml",
            "e"
        ],
        "something was created (a database, a token, R's directory)"
    );
    assert!(
        std::fs::read_dir(&cwd).unwrap().next().is_none(),
        "something was created in the working directory"
    );
}

#[test]
fn a_config_file_named_with_config_must_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let e = root.join("e");
    make_e(&e, "x\n");
    let missing = root.join("nowhere/zync.toml");
    let missing_text = missing.display().to_string();
    let daemon_dirs = format!("code:{}", e.display());
    let client_dirs = format!("code:{}", root.join("r").display());
    let cases = [
        ("zync-daemon", vec!["--port", "0", "--dirs", &daemon_dirs]),
        ("zync-client", vec!["--once", "--dirs", &client_dirs]),
        ("zync-apply", vec!["list"]),
    ];
    for (name, args) in cases {
        let mut cmd = in_dir(name, &root.join("cwd"));
        cmd.arg("--config").arg(&missing).args(args);
        refused(cmd, &[&missing_text, "no such file", "--config"]);
    }
    assert!(!root.join("r").exists(), "the client created R's directory");
    assert!(std::fs::read_dir(root.join("cwd"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn the_default_config_file_is_read_and_dirs_are_required_after_merging() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let xdg = root.join("xdg");
    let cwd = root.join("cwd");

    // No --dirs and no config file: the error says both ways to give them.
    let mut cmd = in_dir("zync-daemon", &cwd);
    cmd.env("XDG_CONFIG_HOME", &xdg).args(["--port", "0"]);
    let expected = xdg.join("zync/daemon.toml").display().to_string();
    refused(cmd, &["--dirs", "set dirs = ", &expected]);
    let mut cmd = in_dir("zync-client", &cwd);
    cmd.env("XDG_CONFIG_HOME", &xdg).arg("--once");
    let expected = xdg.join("zync/client.toml").display().to_string();
    refused(cmd, &["--dirs", "set dirs = ", &expected]);

    // The same files, now present at the default place, are used without --config.
    make_e(&root.join("e"), "default file\n");
    write(
        &xdg.join("zync/daemon.toml"),
        format!(
            "host = \"127.0.0.1\"\ndirs = [\"code:{}\"]\ndb = \"{}\"\n",
            root.join("e").display(),
            root.join("sync.db").display()
        ),
    );
    let mut cmd = in_dir("zync-daemon", &cwd);
    cmd.env("XDG_CONFIG_HOME", &xdg);
    let daemon = Running::start(cmd, &root.join("daemon.log"));
    wait_until("the database at `db` from the default file", || {
        root.join("sync.db").is_file()
    });
    copy_token(&root.join("zync.token"), &xdg.join("zync/zync.token"));
    write(
        &xdg.join("zync/client.toml"),
        format!(
            "server = \"{}\"\ndirs = [\"code:{}\"]\ndb = \"client.db\"\ntoken-file = \"zync.token\"\n",
            daemon.url(),
            root.join("r").display()
        ),
    );
    let mut cmd = in_dir("zync-client", &cwd);
    cmd.env("XDG_CONFIG_HOME", &xdg).arg("--once");
    assert_ok(
        &output_within_deadline(cmd),
        "zync-client with ~/.config/zync/client.toml",
    );
    assert_eq!(
        std::fs::read_to_string(root.join("r/a.txt")).unwrap_or_default(),
        "default file\n"
    );

    // zync-apply finds the daemon's database through the daemon's default file; with no
    // config file it would look for ./sync.db, which is not there.
    let mut cmd = in_dir("zync-apply", &cwd);
    cmd.env("XDG_CONFIG_HOME", &xdg).arg("list");
    assert_ok(&output_within_deadline(cmd), "zync-apply list");
    let mut cmd = in_dir("zync-apply", &cwd);
    cmd.args(["--config", "/dev/null", "list"]);
    let out = output_within_deadline(cmd);
    assert!(
        !out.status.success() && stderr(&out).contains("no database at sync.db"),
        "zync-apply found a database without the config file:\n{}",
        stderr(&out)
    );
}

/// The example files in docs/, used as the README says: copied, with only the directories
/// they name created. Flags move the daemon to a free loopback port.
#[test]
fn the_example_config_files_work_as_documented() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");

    // Machine E: a home with the directories daemon.example.toml serves.
    let home_e = root.join("home-e");
    make_e(&home_e.join("project"), "code\n");
    write(&home_e.join("documents/notes.md"), "notes\n");
    std::fs::create_dir_all(home_e.join(".local/share/zync")).unwrap();
    let mut cmd = in_dir("zync-daemon", &root.join("cwd"));
    cmd.env("HOME", &home_e)
        .arg("--config")
        .arg(docs.join("daemon.example.toml"))
        .args(["--host", "127.0.0.1"]);
    let daemon = Running::start(cmd, &root.join("daemon.log"));

    // Machine R: the token where client.example.toml expects it.
    let home_r = root.join("home-r");
    std::fs::create_dir_all(home_r.join(".local/share/zync")).unwrap();
    copy_token(
        &home_e.join(".local/share/zync/zync.token"),
        &home_r.join(".config/zync/zync.token"),
    );
    let mut cmd = in_dir("zync-client", &root.join("cwd"));
    cmd.env("HOME", &home_r)
        .arg("--config")
        .arg(docs.join("client.example.toml"))
        .args(["--once", "--server", &daemon.url()]);
    assert_ok(&output_within_deadline(cmd), "zync-client with the example");
    assert_eq!(
        std::fs::read_to_string(home_r.join("project/a.txt")).unwrap_or_default(),
        "code\n"
    );
    assert_eq!(
        std::fs::read_to_string(home_r.join("docs/notes.md")).unwrap_or_default(),
        "notes\n"
    );
    assert!(
        !home_r.join("project/debug.log").exists(),
        "the example's ignore = [\"*.log\", ...] was not applied"
    );
    assert!(home_r.join(".local/share/zync/sync_client.db").is_file());
}

/// The binary names each systemd unit in docs/systemd starts, and the flags it passes, are
/// real: each flag appears in that binary's `--help`.
#[test]
fn the_systemd_units_start_real_binaries_with_real_flags() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/systemd");
    for unit in ["zync-daemon.service", "zync-client.service"] {
        let text = std::fs::read_to_string(dir.join(unit)).expect("read the unit");
        let exec = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .unwrap_or_else(|| panic!("{unit}: no ExecStart"));
        let mut words = exec.split_whitespace();
        let program = words.next().unwrap_or_default();
        let name = program.rsplit('/').next().unwrap_or_default();
        assert_eq!(format!("{name}.service"), unit, "{unit} starts {program}");
        let out = output_within_deadline({
            let mut cmd = command(name);
            cmd.arg("--help");
            cmd
        });
        let help = stdout(&out);
        let flags: Vec<&str> = words.filter(|w| w.starts_with("--")).collect();
        assert!(flags.contains(&"--config"), "{unit}: {exec}");
        for flag in flags {
            assert!(help.contains(flag), "{unit}: {flag} is not a {name} flag");
        }
        for line in ["Restart=on-failure", "WantedBy=default.target"] {
            assert!(text.contains(line), "{unit} lacks {line}");
        }
    }
}

#[test]
fn every_binary_generates_completions_and_man_pages() {
    let tmp = tempfile::tempdir().unwrap();
    // A broken default config file must not stop the generation.
    let xdg = tmp.path().join("xdg");
    write(&xdg.join("zync/daemon.toml"), "not toml\n");
    write(&xdg.join("zync/client.toml"), "not toml\n");
    let cases = [
        ("zync-daemon", &["--dirs", "--token-file", "--config"][..]),
        (
            "zync-client",
            &["--dirs", "--stall-timeout", "--config"][..],
        ),
        ("zync-apply", &["--non-interactive", "--config"][..]),
    ];
    for (name, flags) in cases {
        for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
            let mut cmd = command(name);
            cmd.env("XDG_CONFIG_HOME", &xdg)
                .args(["--generate-completions", shell]);
            let out = output_within_deadline(cmd);
            assert_ok(&out, &format!("{name} --generate-completions {shell}"));
            let script = stdout(&out);
            assert!(script.contains(name), "{name} {shell}:\n{script}");
            for flag in flags {
                // fish names long options without their dashes.
                let bare = flag.trim_start_matches('-');
                assert!(
                    script.contains(flag) || (shell == "fish" && script.contains(bare)),
                    "{name} {shell}: {flag} missing:\n{script}"
                );
            }
        }
        let man = tmp.path().join(name).join("man1");
        let mut cmd = command(name);
        cmd.env("XDG_CONFIG_HOME", &xdg)
            .arg("--generate-man")
            .arg(&man);
        let out = output_within_deadline(cmd);
        assert_ok(&out, &format!("{name} --generate-man"));
        let page_path = man.join(format!("{name}.1"));
        assert!(
            stdout(&out).contains(&page_path.display().to_string()),
            "{name}: the written page is not listed:\n{}",
            stdout(&out)
        );
        let page = std::fs::read_to_string(&page_path).expect("the man page");
        assert!(page.contains(&format!(".TH {name}")), "{name}:\n{page}");
        for flag in flags.iter().filter(|f| **f != "--non-interactive") {
            let escaped = flag.replace('-', "\\-");
            assert!(page.contains(&escaped), "{name}: {flag} missing:\n{page}");
        }
    }
    // zync-apply's subcommands get their own pages.
    let apply_page = tmp.path().join("zync-apply/man1/zync-apply-apply.1");
    let page = std::fs::read_to_string(&apply_page).expect("zync-apply-apply.1");
    assert!(page.contains("\\-\\-non\\-interactive"), "{page}");
}

/// The name and nice value of each thread of process `pid` (/proc/PID/task/TID/comm, and field
/// 19 of its stat).
fn thread_nice_values(pid: u32) -> Vec<(String, i32)> {
    let mut values = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the threads") {
        let dir = task.expect("a thread").path();
        let stat = std::fs::read_to_string(dir.join("stat")).expect("read a thread's stat");
        let name = std::fs::read_to_string(dir.join("comm")).expect("read a thread's name");
        // After the command name in parentheses: state is field 3, nice field 19.
        let after = stat.rsplit_once(')').expect("stat has a command name").1;
        let nice = after.split_whitespace().nth(16).expect("a nice field");
        values.push((name.trim().to_string(), nice.parse().expect("a number")));
    }
    values
}

/// Whether thread `name` is one of the daemon's indexing threads: the indexer, its hashing
/// pool and notify's watcher thread.
fn indexing(name: &str) -> bool {
    name == "zync-indexer" || name.starts_with("zync-hash") || name.starts_with("notify-rs")
}

#[test]
fn the_daemon_indexes_below_the_users_own_programs_and_serves_at_its_own_priority() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    make_e(&root.join("e"), "from E\n");
    let dirs = format!("code:{}", root.join("e").display());
    let start = |extra: &[&str], wrap: Option<&[&str]>, name: &str| {
        let mut cmd = match wrap {
            Some(prefix) => {
                let mut cmd = Command::new(prefix[0]);
                cmd.args(&prefix[1..]).arg(bin_dir().join("zync-daemon"));
                cmd
            }
            None => command("zync-daemon"),
        };
        cmd.current_dir(root)
            .args(["--host", "127.0.0.1", "--dirs", &dirs, "--db"])
            .arg(root.join(format!("{name}.db")))
            .args(extra);
        let daemon = Running::start(cmd, &root.join(format!("{name}.log")));
        // The hashing pool starts with the first scan, which hashes E's files.
        let mut values = Vec::new();
        wait_until("the indexer's threads to start", || {
            values = thread_nice_values(daemon.child.id());
            values.iter().any(|(n, _)| n == "zync-indexer")
                && values.iter().any(|(n, _)| n.starts_with("zync-hash"))
                && values.iter().any(|(n, _)| n.starts_with("notify-rs"))
        });
        (daemon, values)
    };
    // By default the indexing threads run at nice 10 (they all start from the indexer's,
    // which lowered its priority first); the runtime's threads, which serve R, do not.
    let (daemon, values) = start(&[], None, "default");
    for (name, nice) in &values {
        let want = if indexing(name) { 10 } else { 0 };
        assert_eq!(*nice, want, "thread {name}: {values:?}");
    }
    assert!(
        values.iter().any(|(n, _)| n.starts_with("tokio")),
        "no runtime thread: {values:?}"
    );
    drop(daemon);

    let (daemon, values) = start(&["--nice", "0"], None, "zero");
    assert!(values.iter().all(|(_, n)| *n == 0), "--nice 0: {values:?}");
    drop(daemon);

    // Started lower than asked (under `nice -n 15`), every thread stays there.
    let (_daemon, values) = start(&[], Some(&["nice", "-n", "15"]), "lower");
    assert!(
        values.iter().all(|(_, n)| *n == 15),
        "under nice 15: {values:?}"
    );
}
