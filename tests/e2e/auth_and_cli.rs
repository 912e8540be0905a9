//! End-to-end: the token check from the client's side (tests/trust.rs plays the adversaries), an unreachable daemon, command-line
//! refusals of both binaries, and how the token is stored and kept out of logs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Starts a daemon with its state in `dir/daemon`.
fn start_daemon(dir: &Path, e: &Path) -> Daemon {
    let state = dir.join("daemon");
    std::fs::create_dir_all(&state).unwrap();
    Daemon::start(&state, &[("code", e)])
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut rd| rd.next().is_none())
}

/// A client command with no `--token-file` and no token beside its database.
fn client_without_token(state: &Path, url: &str, r: &Path) -> Command {
    std::fs::create_dir_all(state).unwrap();
    let mut cmd = command("zync-client");
    cmd.args(["--server", url, "--log-level", "warn", "--once", "--db"])
        .arg(state.join("sync_client.db"))
        .arg("--dirs")
        .arg(format!("code:{}", r.display()));
    cmd
}

#[test]
fn a_missing_token_is_refused_with_a_hint_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("secret.txt"), "only with the token\n");
    let daemon = start_daemon(tmp.path(), &e);
    let r = tmp.path().join("r");
    let out = client_without_token(&tmp.path().join("client"), &daemon.url(), &r)
        .output()
        .unwrap();
    let log = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(6),
        "a client without a token: expected exit code 6 (refused):\n{log}"
    );
    assert!(
        log.contains("token") && (log.contains("--token-file") || log.contains("ZYNC_TOKEN")),
        "stderr does not say what to do about the token:\n{log}"
    );
    assert!(is_empty_dir(&r), "R was written to without a token");
}

#[test]
fn a_wrong_token_is_refused_with_a_hint_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("secret.txt"), "only with the token\n");
    let daemon = start_daemon(tmp.path(), &e);
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    std::fs::write(&client.token_file, "0123456789abcdef-not-the-token\n").unwrap();
    let out = client.once(&daemon.url());
    let log = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(6),
        "a client with a wrong token: expected exit code 6 (refused):\n{log}"
    );
    assert!(
        log.contains("token") && log.contains("copy the daemon's token file"),
        "stderr does not say what to do about the token:\n{log}"
    );
    assert!(is_empty_dir(&r), "R was written to with a wrong token");
}

#[test]
fn once_against_a_port_where_nothing_listens_fails_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    // A port that was free a moment ago and that nothing listens on now.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    std::fs::create_dir_all(tmp.path().join("client")).unwrap();
    let token = tmp.path().join("client/client.token");
    std::fs::write(&token, "some-token\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = command("zync-client");
    cmd.args([
        "--server",
        &format!("ws://127.0.0.1:{port}"),
        "--log-level",
        "warn",
        "--once",
        "--db",
    ])
    .arg(tmp.path().join("client/sync_client.db"))
    .arg("--token-file")
    .arg(&token)
    .arg("--dirs")
    .arg(format!("code:{}", tmp.path().join("r").display()));
    let out = output_within_deadline(cmd);
    let log = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(5),
        "--once with no daemon: expected exit code 5 (unreachable):\n{log}"
    );
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line reason, got:\n{log}");
    assert!(
        lines[0].contains("cannot reach the daemon") && lines[0].contains(&port.to_string()),
        "the reason does not say the daemon cannot be reached:\n{log}"
    );
}

/// Runs the daemon with `dirs` (already formatted NAME:PATH) and expects a refusal naming
/// `expected`, with no database made.
fn daemon_refuses(dirs: &[String], expected: &[&str]) {
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("sync.db");
    let mut cmd = command("zync-daemon");
    cmd.args(["--host", "127.0.0.1", "--port", "0", "--db"])
        .arg(&db)
        .arg("--dirs")
        .args(dirs);
    let out = output_within_deadline(cmd);
    let log = stderr(&out);
    assert!(
        !out.status.success(),
        "the daemon accepted {dirs:?}:\n{log}"
    );
    for word in expected {
        assert!(
            log.contains(word),
            "{dirs:?}: the refusal does not mention {word:?}:\n{log}"
        );
    }
    assert!(
        !log.contains("listening on"),
        "{dirs:?}: the daemon listened before refusing:\n{log}"
    );
    assert!(!db.exists(), "{dirs:?}: a database was created");
}

#[test]
fn the_daemon_refuses_bad_directory_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    std::fs::create_dir_all(a.join("inner")).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    write(&tmp.path().join("plain-file"), "x");
    let spec = |name: &str, path: &Path| format!("{name}:{}", path.display());

    daemon_refuses(
        &[spec("outer", &a), spec("inner", &a.join("inner"))],
        &["nested"],
    );
    daemon_refuses(
        &[spec("inner", &a.join("inner")), spec("outer", &a)],
        &["nested"],
    );
    daemon_refuses(&[spec("same", &a), spec("same", &b)], &["same", "twice"]);
    daemon_refuses(
        &[spec("gone", &tmp.path().join("missing"))],
        &["missing", "create it"],
    );
    daemon_refuses(
        &[spec("file", &tmp.path().join("plain-file"))],
        &["plain-file", "not a directory"],
    );
    daemon_refuses(&[spec("a/b", &a)], &["a/b", "only A-Z"]);
    daemon_refuses(&[a.display().to_string()], &["NAME:PATH"]);
}

#[test]
fn the_client_refuses_a_dirs_mapping_without_a_colon() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("sync_client.db");
    let mut cmd = command("zync-client");
    cmd.args(["--server", "ws://127.0.0.1:9", "--once", "--db"])
        .arg(&db)
        .arg("--dirs")
        .arg(tmp.path().join("r"));
    let out = output_within_deadline(cmd);
    let log = stderr(&out);
    assert!(
        !out.status.success(),
        "the client accepted --dirs without a colon:\n{log}"
    );
    assert!(
        log.contains("NAME:LOCAL_PATH"),
        "the refusal does not say what --dirs should look like:\n{log}"
    );
    assert!(
        !log.contains("cannot reach"),
        "the client tried to connect before validating --dirs:\n{log}"
    );
    assert!(!db.exists(), "a client database was created");
}

#[test]
fn the_token_file_is_private_and_the_token_never_reaches_the_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    let daemon = start_daemon(tmp.path(), &e);
    let meta = std::fs::metadata(&daemon.token_file).unwrap();
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "the token file's mode is {:o}",
        meta.permissions().mode() & 0o777
    );
    let token = std::fs::read_to_string(&daemon.token_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(token.len() >= 32, "token too short: {} bytes", token.len());

    // Exercise the paths that might log it: a good client, a wrong token, a missing one.
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    let good = client.once_ok(&daemon.url());
    let bad = ClientSpec::new(
        &tmp.path().join("bad"),
        &daemon,
        &[("code", &tmp.path().join("r2"))],
    );
    std::fs::write(&bad.token_file, format!("{}x\n", &token[..token.len() - 1])).unwrap();
    assert!(!bad.once(&daemon.url()).status.success());
    let none = client_without_token(
        &tmp.path().join("none"),
        &daemon.url(),
        &tmp.path().join("r3"),
    )
    .output()
    .unwrap();
    assert!(!none.status.success());

    let log = daemon.log_text();
    assert!(
        log.contains("a.txt") || log.contains("client connected"),
        "empty daemon log?\n{log}"
    );
    assert!(
        !log.contains(&token),
        "the daemon log contains the token:\n{log}"
    );
    assert!(
        !stderr(&good).contains(&token),
        "the client's debug log contains the token"
    );
}

#[test]
fn v_q_and_rust_log_set_how_much_is_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    let daemon = start_daemon(tmp.path(), &e);
    daemon.wait_scanned();
    let r = tmp.path().join("r");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    // The spec passes --log-level debug: -q beats it (warn and worse only).
    let mut quiet = client.command(&daemon.url());
    quiet.args(["--once", "-q"]);
    let out = run_ok(quiet);
    let log = stderr(&out);
    assert!(
        !log.contains("DEBUG") && !log.contains("INFO"),
        "-q still logged:\n{log}"
    );
    // No --log-level: RUST_LOG decides.
    let plain = |extra: &[&str]| {
        let mut cmd = command("zync-client");
        cmd.args(["--server", &daemon.url(), "--once", "--db"])
            .arg(&client.db)
            .arg("--token-file")
            .arg(&client.token_file)
            .arg("--dirs")
            .arg(format!("code:{}", r.display()))
            .args(extra);
        cmd
    };
    let mut traced = plain(&[]);
    traced.env("RUST_LOG", "debug");
    let log = stderr(&run_ok(traced));
    assert!(
        log.contains("DEBUG"),
        "RUST_LOG=debug gave no debug line:\n{log}"
    );
    // -v beats RUST_LOG.
    let mut loud = plain(&["-v"]);
    loud.env("RUST_LOG", "error");
    let log = stderr(&run_ok(loud));
    assert!(log.contains("DEBUG"), "-v gave no debug line:\n{log}");
    // zync-apply takes them too.
    let out = run_ok(zync_apply(&daemon.db, &["-q", "list"]));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn a_second_daemon_on_the_same_database_is_refused_and_the_first_serves_on() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("a.txt"), "a\n");
    let daemon = start_daemon(tmp.path(), &e);
    daemon.wait_scanned();
    let client = ClientSpec::new(
        &tmp.path().join("client"),
        &daemon,
        &[("code", &tmp.path().join("r"))],
    );
    // A loop client stays connected while the second daemon starts: that one, had it opened
    // the database, would have reset the first one's connections at its start.
    let _looping = client.spawn(&daemon.url(), &tmp.path().join("loop.log"));
    wait_until("the first sync", || tmp.path().join("r/a.txt").exists());

    let mut second = command("zync-daemon");
    second
        .args(["--host", "127.0.0.1", "--port", "0", "--db"])
        .arg(&daemon.db)
        .arg("--token-file")
        .arg(&daemon.token_file)
        .arg("--dirs")
        .arg(format!("code:{}", e.display()));
    let out = output_within_deadline(second);
    let log = stderr(&out);
    assert!(!out.status.success(), "a second daemon started:\n{log}");
    assert!(
        log.contains("another zync-daemon (pid ")
            && log.contains(&daemon.db.display().to_string())
            && log.contains("--db"),
        "the refusal does not name the running daemon, the database and what to do:\n{log}"
    );
    assert!(
        !log.contains("listening on"),
        "it listened before refusing:\n{log}"
    );

    // The first daemon and its client carry on.
    write(&e.join("b.txt"), "b\n");
    wait_until("a change after the refusal", || {
        tmp.path().join("r/b.txt").exists()
    });
}
