//! `zync-apply show`: a session's files with their action, size, state and whether they
//! conflict with E's files as they are now (not only as they were at staging), optionally with
//! unified diffs.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use zync_db::{is_conflict, FileState, StagedFile};
use zync_fs::RelPath;

use crate::probe;
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
    /// Decided again against E now; `None` when E's directory is not known.
    conflict: Option<bool>,
    conflict_at_staging: bool,
    sha256: Option<String>,
    base_sha256: Option<String>,
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
        let (conflict, text) = check(&roots, f, diff, &session_dir);
        rows.push(FileJson {
            dir: f.dir.clone(),
            path: f.path.clone(),
            action: f.action.as_str(),
            size: f.size,
            state: f.state.as_str(),
            conflict,
            conflict_at_staging: f.conflict,
            sha256: f.sha256.clone(),
            base_sha256: f.base_sha256.clone(),
            diff: text,
        });
    }
    if json {
        let doc = ShowJson {
            session: SessionJson::from(&session),
            files: rows,
        };
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "{}", session::line(&session))?;
    if rows.is_empty() {
        writeln!(out, "  (no files)")?;
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
        writeln!(
            out,
            "  {:<6}  {}/{}{size}  {}{flag}",
            r.action, r.dir, r.path, r.state
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

/// Whether `f` conflicts with E now (for files still staged; settled files report their
/// staging-time flag), and its diff when asked for.
fn check(
    roots: &Roots,
    f: &StagedFile,
    diff: bool,
    session_dir: &Path,
) -> (Option<bool>, Option<String>) {
    let name = format!("{}/{}", f.dir, f.path);
    let (root, rel) = match (roots.get(&f.dir), RelPath::parse(&f.path)) {
        (Ok(root), Ok(rel)) => (root, rel),
        (Err(e), _) => return (None, diff.then(|| format!("{name}: {e:#}\n"))),
        (_, Err(e)) => return (None, diff.then(|| format!("{name}: {e}\n"))),
    };
    let conflict = if f.state == FileState::Staged {
        match probe::probe(root, &rel) {
            Ok(current) => Some(is_conflict(
                f.action,
                f.base_sha256.as_deref(),
                f.sha256.as_deref(),
                current.on_e(),
            )),
            Err(_) => None,
        }
    } else {
        Some(f.conflict)
    };
    let text = diff.then(|| probe::diff(root, &rel, f, session_dir));
    (conflict, text)
}

#[cfg(test)]
mod tests {
    use crate::prompt::ScriptedPrompter;
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
}
