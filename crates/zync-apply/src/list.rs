//! `zync-apply list`: the sessions waiting to be applied (or all of them), one line each,
//! beginning with the full session id so it can be copied into `show` or `apply`.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::session::{self, SessionJson};

/// Lists pending sessions (every session with `all`) as text or JSON.
///
/// # Errors
///
/// The database cannot be opened or read, or `out` fails.
pub fn list(db: &Path, all: bool, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let index = session::open_index(db)?;
    let sessions = index
        .sessions(all)
        .context("cannot list the staged sessions")?;
    let mut control = Vec::with_capacity(sessions.len());
    for s in &sessions {
        let files = index
            .staged_files(&s.id)
            .with_context(|| format!("cannot read the files of session {}", s.id))?;
        control.push(session::control_files(&files));
    }
    if json {
        let rows: Vec<SessionJson> = sessions
            .iter()
            .zip(&control)
            .map(|(s, &n)| SessionJson {
                control_files: Some(n),
                ..SessionJson::from(s)
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)?;
    } else if sessions.is_empty() {
        if all {
            writeln!(out, "no sessions")?;
        } else {
            writeln!(
                out,
                "no pending sessions (`zync-apply list --all` shows applied and undone ones)"
            )?;
        }
    } else {
        for (s, &n) in sessions.iter().zip(&control) {
            // Marked, so a pushed .zyncignore is noticed before `apply` is run.
            let mark = match n {
                0 => String::new(),
                n => format!("  [{}]", session::count(n, "control file")),
            };
            writeln!(out, "{}{mark}", session::line(s))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::prompt::ScriptedPrompter;
    use crate::testkit::{write, Fixture};

    #[test]
    fn lines_begin_with_the_full_id_and_carry_status_and_counts() {
        let fx = Fixture::new();
        let mut p = ScriptedPrompter::new([]);
        let (r, out) = fx.run(&["list"], &mut p);
        r.expect("list");
        assert!(out.starts_with("no pending sessions"), "{out}");

        fx.e_write("c.txt", b"E\n");
        let a = "aaaa1111-2222-4333-8444-555566667777";
        let b = "bbbb1111-2222-4333-8444-555566667777";
        fx.stage(
            a,
            &[
                write("x.txt", b"x", None),
                write("c.txt", b"R\n", Some(b"base\n")),
            ],
        );
        fx.stage(b, &[write("y.txt", b"y", None)]);
        fx.run(&["apply", b, "--non-interactive"], &mut p)
            .0
            .expect("apply");
        let (r, out) = fx.run(&["list"], &mut p);
        r.expect("list");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "{out}");
        assert!(
            lines[0].starts_with(&format!("{a}  staged  2 files  1 conflict  ")),
            "{out}"
        );

        let (r, out) = fx.run(&["list", "--all"], &mut p);
        r.expect("list");
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{b}  applied  1 file  0 conflicts"))),
            "{out}"
        );

        let (r, out) = fx.run(&["list", "--all", "--json"], &mut p);
        r.expect("list");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let arr = v.as_array().expect("array");
        assert_eq!(arr.len(), 2);
        assert!(arr
            .iter()
            .any(|s| s["id"] == a && s["status"] == "staged" && s["conflicts"] == 1));
    }
}
