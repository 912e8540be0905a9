//! End-to-end: what the binaries show a person. A large sync draws an indicatif bar
//! on a terminal (run under a pseudo-terminal with util-linux `script`) and prints plain
//! periodic lines without escape codes otherwise; `--update-upstream --json` prints one JSON
//! object; `zync-apply show --diff` colours and pages only on a terminal.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const FILES: usize = 300;

/// A tree of `FILES` files of 64 KiB (19 MiB): large enough for progress, quick on loopback.
fn make_tree(root: &Path) {
    for i in 0..FILES {
        write(
            &root.join(format!("d{}/f{i}.bin", i % 10)),
            pseudo_random(64 << 10, i as u64),
        );
    }
}

/// The daemon's state directory under `tmp`.
fn state_dir(tmp: &Path) -> std::path::PathBuf {
    let dir = tmp.join("ds");
    std::fs::create_dir_all(&dir).expect("daemon state dir");
    dir
}

/// Single-quotes `s` for `sh -c`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `cmd` on a pseudo-terminal of 20 rows and 100 columns (`script -q -e -c`), and returns
/// everything written to the terminal (stdout and stderr together) and the exit status.
fn under_pty(cmd: &Command) -> Output {
    let mut line = String::from("stty rows 20 cols 100; exec");
    line.push(' ');
    line.push_str(&quote(&cmd.get_program().to_string_lossy()));
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(&arg.to_string_lossy()));
    }
    let mut script = Command::new("script");
    script.args(["-q", "-e", "-c", &line, "/dev/null"]);
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => script.env(key, v),
            None => script.env_remove(key),
        };
    }
    script.env("TERM", "xterm").env_remove("NO_COLOR");
    if let Some(dir) = cmd.get_current_dir() {
        script.current_dir(dir);
    }
    // The terminal's output goes to a file: a pipe nobody reads until the end would fill up.
    let log = tempfile::NamedTempFile::new().expect("terminal log");
    let file = log.reopen().expect("reopen terminal log");
    let mut child = script
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn script");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{script:?} did not exit within {DEADLINE:?}; terminal:\n{}",
                String::from_utf8_lossy(&std::fs::read(log.path()).unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(log.path()).expect("read terminal log"),
        stderr: Vec::new(),
    }
}

fn has_script() -> bool {
    Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_large_sync_draws_a_bar_on_a_terminal_that_never_tears_log_lines() {
    assert!(
        has_script(),
        "this test needs `script` from util-linux (apt-get install util-linux)"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let e = tmp.path().join("e");
    let r = tmp.path().join("r");
    make_tree(&e);
    let daemon = Daemon::start(&state_dir(tmp.path()), &[("docs", &e)]);
    daemon.wait_scanned();
    let client = ClientSpec::new(&tmp.path().join("cs"), &daemon, &[("docs", &r)]);
    let mut cmd = client.command(&daemon.url());
    cmd.arg("--once");
    let out = under_pty(&cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "zync-client --once failed:\n{text}");
    assert_same_tree(&e, &r, &[]);
    let bar = format!("/{FILES} files");
    assert!(
        text.contains("synced ") && text.contains(&bar),
        "expected a bar with `synced N{bar}` on the terminal, found:\n{text}"
    );
    assert!(
        text.contains("\x1b[2K"),
        "expected indicatif's line clearing (ESC[2K) on the terminal, found:\n{text:?}"
    );
    // Every log line is written with the bar lifted: no log line shares a terminal line with
    // the bar (what is left after the last carriage return is what the line shows).
    for line in text.lines() {
        let shown = line.rsplit('\r').next().unwrap_or(line);
        assert!(
            !(shown.contains(&bar) && (shown.contains("DEBUG") || shown.contains("INFO"))),
            "a log line and the bar tore each other: {shown:?}"
        );
    }
    // The bar disappears at the end: its last frame is cleared, nothing of it is left after.
    let last_bar = text.rfind(&bar).expect("a bar frame");
    assert!(
        text[last_bar..].contains("\x1b[2K"),
        "the last bar frame was not cleared: {:?}",
        &text[last_bar..]
    );
}

#[test]
fn without_a_terminal_a_large_sync_logs_plain_progress_lines() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let e = tmp.path().join("e");
    let r = tmp.path().join("r");
    make_tree(&e);
    let daemon = Daemon::start(&state_dir(tmp.path()), &[("docs", &e)]);
    daemon.wait_scanned();
    let client = ClientSpec::new(&tmp.path().join("cs"), &daemon, &[("docs", &r)]);
    let mut cmd = client.command(&daemon.url());
    cmd.arg("--once").env("ZYNC_PROGRESS_SECS", "0.005");
    let out = output_within_deadline(cmd);
    let err = stderr(&out);
    assert!(out.status.success(), "zync-client --once failed:\n{err}");
    assert_same_tree(&e, &r, &[]);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(&format!("/{FILES} files, ")) && l.contains("synced "))
        .collect();
    assert!(
        !lines.is_empty(),
        "expected lines like `synced 120/{FILES} files, 7.5 MiB, 40.0 MiB/s`, found:\n{err}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.contains("iB/s") || l.contains("B/s")),
        "{lines:#?}"
    );
    assert!(
        !err.contains('\x1b'),
        "escape codes in output that is not a terminal:\n{err:?}"
    );
}

/// E's and R's versions of one text file differ on every one of their 100 lines.
fn stage_a_long_diff(tmp: &Path) -> (Daemon, String) {
    let e = tmp.join("e");
    let r = tmp.join("r");
    let text = |tag: &str| -> String { (0..100).map(|i| format!("{tag} line {i}\n")).collect() };
    write(&e.join("notes.txt"), text("E"));
    let daemon = Daemon::start(&state_dir(tmp), &[("docs", &e)]);
    daemon.wait_scanned();
    let client = ClientSpec::new(&tmp.join("cs"), &daemon, &[("docs", &r)]);
    client.once_ok(&daemon.url());
    write(&r.join("notes.txt"), text("R"));
    let mut cmd = client.command(&daemon.url());
    cmd.args(["--update-upstream", "--json"]);
    let out = output_within_deadline(cmd);
    assert!(
        out.status.success(),
        "--update-upstream --json failed:\n{}",
        stderr(&out)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--update-upstream --json printed no JSON ({e}):\n{}",
            stdout(&out)
        )
    });
    assert_eq!(summary["files"], 1, "{summary}");
    assert_eq!(summary["conflicts"], 0, "{summary}");
    let id = summary["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no session_id in {summary}"))
        .to_string();
    (daemon, id)
}

fn show_diff(db: &Path, id: &str, marker: &Path, extra: &[&str]) -> Command {
    let mut cmd = zync_apply(db, &["show", id, "--diff"]);
    cmd.args(extra).env(
        "PAGER",
        format!("touch {}; cat", quote(&marker.to_string_lossy())),
    );
    cmd
}

#[test]
fn show_diff_is_paged_and_coloured_on_a_terminal_and_plain_into_a_pipe() {
    assert!(
        has_script(),
        "this test needs `script` from util-linux (apt-get install util-linux)"
    );
    let tmp = tempfile::tempdir().expect("tempdir");
    let (daemon, id) = stage_a_long_diff(tmp.path());
    let marker = tmp.path().join("pager-ran");

    // Into a pipe: no pager, no colour, even with 200 diff lines.
    let out = output_within_deadline(show_diff(&daemon.db, &id, &marker, &[]));
    let text = stdout(&out);
    assert!(out.status.success(), "show failed:\n{}", stderr(&out));
    assert!(
        text.contains("-E line 7\n") && text.contains("+R line 7\n"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "colour into a pipe: {text:?}");
    assert!(!marker.exists(), "the pager ran although stdout was a pipe");

    // --color always colours a pipe too, and still does not page it.
    let out = output_within_deadline(show_diff(&daemon.db, &id, &marker, &["--color", "always"]));
    let text = stdout(&out);
    assert!(
        text.contains("\x1b[31m-E line 7\x1b[0m") && text.contains("\x1b[32m+R line 7\x1b[0m"),
        "expected red and green diff lines, found {text:?}"
    );
    assert!(!marker.exists(), "the pager ran although stdout was a pipe");

    // On a terminal of 20 rows: paged, coloured.
    let out = under_pty(&show_diff(&daemon.db, &id, &marker, &[]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "show on a terminal failed:\n{text}");
    assert!(
        marker.exists(),
        "the pager did not run for 200 lines on 20 rows:\n{text}"
    );
    assert!(text.contains("\x1b[36m@@"), "no cyan hunk header: {text:?}");

    // --color never on a terminal: paged, plain.
    std::fs::remove_file(&marker).expect("remove marker");
    let out = under_pty(&show_diff(&daemon.db, &id, &marker, &["--color", "never"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(marker.exists(), "the pager did not run:\n{text}");
    assert!(
        text.contains("-E line 7") && !text.contains("\x1b[31m"),
        "--color never coloured: {text:?}"
    );
}
