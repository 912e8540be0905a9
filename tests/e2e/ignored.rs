//! End-to-end: what is ignored is never a secret. `zync-apply status` on E and
//! `zync-client --status` on R count, per directory, the paths E's daemon ignores by rule
//! (`--ignored` lists them), R's status also what R's own walk leaves out of
//! `--update-upstream`, and the counts follow E's disk while the daemon runs. That ignored
//! paths are really not synced is `sync.rs`
//! `files_named_like_ignored_directories_are_synced_and_the_directories_are_not`.

use std::path::Path;

use crate::common::*;
use serde_json::Value;

/// (pattern, source, count) of each rule in an `ignored` report, in its order.
fn rules(report: &Value) -> Vec<(String, String, u64)> {
    report["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("no rules in {report}"))
        .iter()
        .map(|r| {
            (
                r["pattern"].as_str().unwrap_or_default().to_string(),
                r["source"].as_str().unwrap_or_default().to_string(),
                r["count"].as_u64().unwrap_or_default(),
            )
        })
        .collect()
}

fn rule(pattern: &str, source: &str, count: u64) -> (String, String, u64) {
    (pattern.into(), source.into(), count)
}

/// The listed paths of an `ignored` report (a directory with a trailing `/`).
fn listed(report: &Value) -> Vec<String> {
    report["paths"]
        .as_array()
        .unwrap_or_else(|| panic!("no paths in {report}"))
        .iter()
        .map(|p| {
            let slash = if p["is_dir"] == true { "/" } else { "" };
            format!("{}{slash}", p["path"].as_str().unwrap_or_default())
        })
        .collect()
}

/// What `zync-apply status --json` says the daemon ignores in its first directory.
fn e_ignored(db: &Path, list: bool) -> Value {
    let mut args = vec!["status", "--json"];
    if list {
        args.push("--ignored");
    }
    let v = zync_apply_json(db, &args);
    v["dirs"][0]["ignored"].clone()
}

/// `zync-client --status [--ignored] [--json]`; any exit code (0 in sync, 1 not).
fn client_status(client: &ClientSpec, url: &str, extra: &[&str]) -> String {
    let mut cmd = client.command(url);
    cmd.arg("--status").args(extra);
    let out = output_within_deadline(cmd);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "zync-client --status {extra:?} failed ({}):\n{}\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn both_status_commands_say_what_is_ignored_by_which_rule_and_follow_e() {
    let tmp = tempfile::tempdir().unwrap();
    let e = tmp.path().join("e");
    write(&e.join("src/main.rs"), "fn main() {}\n");
    write(&e.join("build/out.o"), "object");
    write(&e.join("build/deep/more.o"), "object");
    // A build script named `build` is no directory: synced, not ignored.
    write(&e.join("tools/build"), "#!/bin/sh\n");
    for i in 0..30 {
        write(&e.join(format!("node_modules/pkg{i}/index.js")), "dep");
    }
    write(&e.join(".zyncignore"), "*.log\n");
    write(&e.join("b.log"), "log");
    write(&e.join("logs/a.log"), "log");
    // A name from E's disk with an escape sequence in it is shown, never obeyed.
    write(&e.join("evil\u{1b}[2J.log"), "log");
    let daemon = Daemon::start(tmp.path(), &[("code", &e)]);
    daemon.wait_scanned();

    // On E: counts by rule; an ignored directory is one path, whatever it holds.
    let report = e_ignored(&daemon.db, false);
    let want = vec![
        rule("*.log", ".zyncignore", 3),
        rule("build/", "built-in", 1),
        rule("node_modules/", "built-in", 1),
    ];
    assert_eq!(rules(&report), want, "{report}");
    assert_eq!(report["total"], 5, "{report}");
    assert!(report.get("paths").is_none(), "listed unasked: {report}");
    let text = zync_apply_ok(&daemon.db, &["status"]);
    assert!(
        text.contains(
            "code: 5 paths (rule `*.log` from .zyncignore: 3, rule `build/`: 1, rule `node_modules/`: 1)"
        ),
        "{text}"
    );
    // --ignored lists each path with its rule.
    let report = e_ignored(&daemon.db, true);
    assert_eq!(
        listed(&report),
        [
            "b.log",
            "build/",
            "evil\u{1b}[2J.log",
            "logs/a.log",
            "node_modules/"
        ],
        "{report}"
    );
    let text = zync_apply_ok(&daemon.db, &["status", "--ignored"]);
    for line in [
        "      build/  (rule `build/`)",
        "      node_modules/  (rule `node_modules/`)",
        "      logs/a.log  (rule `*.log` from .zyncignore)",
        "      evil^[[2J.log  (rule `*.log` from .zyncignore)",
    ] {
        assert!(text.contains(line), "{line:?} missing in:\n{text}");
    }
    assert!(
        !text.contains('\u{1b}'),
        "an escape reached the terminal:\n{text}"
    );
    assert!(
        !text.contains("tools/build") && !text.contains("index.js"),
        "{text}"
    );

    // On R: the same about E, from the daemon, plus what R's own walk leaves out of a push.
    let r = tmp.path().join("r/code");
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    assert!(
        r.join("tools/build").is_file(),
        "the build script is synced"
    );
    write(&r.join("notes.log"), "R's own log");
    write(&r.join("dist/app.js"), "R's bundle");
    let v = client.status_json(&daemon.url());
    let dir = &v["dirs"][0];
    assert_eq!(rules(&dir["ignored_on_e"]), want, "{v}");
    assert!(dir["ignored_on_e"].get("paths").is_none(), "{v}");
    assert_eq!(
        rules(&dir["ignored_on_r"]),
        [
            rule("*.log", ".zyncignore", 1),
            rule("dist/", "built-in", 1)
        ],
        "{v}"
    );
    let text = client_status(&client, &daemon.url(), &[]);
    assert!(
        text.contains(
            "code on E: 5 paths (rule `*.log` from .zyncignore: 3, rule `build/`: 1, rule `node_modules/`: 1)"
        ) && text.contains("code on R: 2 paths (rule `*.log` from .zyncignore: 1, rule `dist/`: 1)"),
        "{text}"
    );
    let text = client_status(&client, &daemon.url(), &["--ignored"]);
    for line in [
        "      node_modules/  (rule `node_modules/`)",
        "      evil^[[2J.log  (rule `*.log` from .zyncignore)",
        "      dist/  (rule `dist/`)",
        "      notes.log  (rule `*.log` from .zyncignore)",
    ] {
        assert!(text.contains(line), "{line:?} missing in:\n{text}");
    }
    assert!(
        !text.contains('\u{1b}'),
        "an escape reached the terminal:\n{text}"
    );
    let v: Value = serde_json::from_str(&client_status(
        &client,
        &daemon.url(),
        &["--ignored", "--json"],
    ))
    .expect("--status --ignored --json");
    assert_eq!(
        listed(&v["dirs"][0]["ignored_on_e"]),
        [
            "b.log",
            "build/",
            "evil\u{1b}[2J.log",
            "logs/a.log",
            "node_modules/"
        ],
        "{v}"
    );
    assert_eq!(v["dirs"][0]["ignored_on_e"]["more"], 0, "{v}");
    assert_eq!(
        listed(&v["dirs"][0]["ignored_on_r"]),
        ["dist/", "notes.log"],
        "{v}"
    );

    // E changes while the daemon runs: a deleted node_modules is no longer counted, a new
    // ignored directory is.
    std::fs::remove_dir_all(e.join("node_modules")).unwrap();
    write(&e.join("web/dist/bundle.js"), "bundle");
    let want = vec![
        rule("*.log", ".zyncignore", 3),
        rule("build/", "built-in", 1),
        rule("dist/", "built-in", 1),
    ];
    wait_until(
        "zync-apply status to follow E's node_modules and dist",
        || rules(&e_ignored(&daemon.db, false)) == want,
    );
    let v = client.status_json(&daemon.url());
    assert_eq!(rules(&v["dirs"][0]["ignored_on_e"]), want, "{v}");

    // A removed .zyncignore takes its rule with it: those paths are indexed now.
    std::fs::remove_file(e.join(".zyncignore")).unwrap();
    wait_until("the daemon to drop the .zyncignore's rule", || {
        rules(&e_ignored(&daemon.db, false))
            == [rule("build/", "built-in", 1), rule("dist/", "built-in", 1)]
    });
    daemon.wait_indexed(&["b.log", "logs/a.log"], &[]);
}
