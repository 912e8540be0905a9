//! `zync-apply gc`: what the daemon does to the staging area at its start, on demand. Staged
//! sessions nobody touched for longer than the daemon's `--staging-max-age` (or
//! `--older-than`) expire: their staged files are removed and they are marked `expired`
//! (`zync_db::expire`, the daemon's own rule). Partly applied sessions are kept and named.
//! Directories in the staging area that no session owns are removed (`zync_db::leftover_dirs`).
//! E's directories are never touched.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use zync_cli::units::{format_bytes, format_duration};

use crate::session::{self, SessionJson};

/// The daemon's default `--staging-max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// What `gc --json` prints.
#[derive(Debug, Serialize)]
struct Report {
    older_than_secs: u64,
    expired: Vec<SessionJson>,
    kept_partial: Vec<SessionJson>,
    removed_dirs: Vec<String>,
}

/// Expires the staged sessions of the database `db` older than `max_age` and removes
/// leftover staging directories, printing what it removed.
///
/// # Errors
/// The database cannot be opened or read; the staging area cannot be listed; a directory that
/// should go could not be removed (after doing everything else).
pub fn gc(db: &Path, max_age: Duration, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let index = session::open_index(db)?;
    let expiry = zync_db::expire(&index, db, max_age, zync_db::now_unix())?;
    let mut failures: Vec<String> = expiry
        .failures
        .iter()
        .map(|(dir, e)| format!("  {}: {e}", dir.display()))
        .collect();
    let mut removed = Vec::new();
    for dir in zync_db::leftover_dirs(&index, db)? {
        match zync_db::remove_dir(&dir) {
            Ok(()) => removed.push(dir),
            Err(e) => failures.push(format!("  {}: {e}", dir.display())),
        }
    }
    let age = format_duration(max_age);
    if json {
        let report = Report {
            older_than_secs: max_age.as_secs(),
            expired: expiry.expired.iter().map(SessionJson::from).collect(),
            kept_partial: expiry.kept_partial.iter().map(SessionJson::from).collect(),
            removed_dirs: removed.iter().map(|d| d.display().to_string()).collect(),
        };
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        for s in &expiry.expired {
            writeln!(
                out,
                "expired session {} (staged {}, from {}): {}, {} removed",
                s.id,
                session::local_time(s.created_unix),
                s.client_id,
                session::count(s.files, "file"),
                format_bytes(s.bytes)
            )?;
        }
        for dir in &removed {
            writeln!(out, "removed {}: no session owns it", dir.display())?;
        }
        for s in &expiry.kept_partial {
            writeln!(
                out,
                "kept session {}: partly applied, staged {}, older than {age}; finish it with \
                 `zync-apply apply`, or `zync-apply undo` it and drop it",
                s.id,
                session::local_time(s.created_unix)
            )?;
        }
        writeln!(
            out,
            "gc: {} older than {age} expired, {} removed; E's directories were not touched",
            session::count(expiry.expired.len() as u64, "session"),
            session::count(removed.len() as u64, "leftover directory")
                .replace("directorys", "directories")
        )?;
    }
    if !failures.is_empty() {
        anyhow::bail!(
            "could not remove everything from the staging area:\n{}",
            failures.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::prompt::ScriptedPrompter;
    use crate::testkit::{write, Fixture};
    use zync_db::SessionStatus;

    const OLD: &str = "aaaa1111-2222-4333-8444-555566667777";
    const NEW: &str = "bbbb1111-2222-4333-8444-555566667777";
    const PART: &str = "cccc1111-2222-4333-8444-555566667777";
    const ORPHAN: &str = "dddd1111-2222-4333-8444-555566667777";

    /// Makes session `id` `days` days older, as the daemon's clock would have it.
    fn age(fx: &Fixture, id: &str, days: i64) {
        rusqlite::Connection::open(&fx.db)
            .expect("open db")
            .execute(
                "UPDATE upstream_sessions SET created_unix = created_unix - ?2 WHERE id = ?1",
                (id, days * 86_400),
            )
            .expect("age the session");
    }

    #[test]
    fn gc_expires_old_staged_sessions_removes_orphans_and_keeps_the_rest() {
        let fx = Fixture::new();
        fx.e_write("keep.txt", b"E\n");
        fx.stage(OLD, &[write("x.txt", b"x", None)]);
        fx.stage(NEW, &[write("y.txt", b"y", None)]);
        fx.stage(
            PART,
            &[
                write("p.txt", b"p", None),
                write("keep.txt", b"R\n", Some(b"base\n")),
            ],
        );
        let mut p = ScriptedPrompter::new([]);
        fx.run(&["apply", PART, "--non-interactive"], &mut p)
            .0
            .expect("apply");
        assert_eq!(fx.status(PART), SessionStatus::Partial);
        age(&fx, OLD, 40);
        age(&fx, PART, 40);
        let orphan = zync_db::staging_root(&fx.db).join(ORPHAN);
        std::fs::create_dir_all(&orphan).expect("orphan");
        let e_before = fx.e_tree();

        let (r, out) = fx.run(&["gc", "--older-than", "30d"], &mut p);
        r.expect("gc");
        assert!(out.contains(&format!("expired session {OLD}")), "{out}");
        assert!(
            out.contains(&format!("kept session {PART}: partly applied")),
            "{out}"
        );
        assert!(
            out.contains(&format!("removed {}", orphan.display())),
            "{out}"
        );
        assert_eq!(fx.status(OLD), SessionStatus::Expired);
        assert!(!fx.session_dir(OLD).exists());
        assert!(!orphan.exists());
        assert_eq!(fx.status(NEW), SessionStatus::Staged);
        assert!(fx.session_dir(NEW).exists());
        assert_eq!(fx.status(PART), SessionStatus::Partial);
        assert!(fx.session_dir(PART).exists(), "the backups undo needs went");
        assert_eq!(fx.e_tree(), e_before, "E changed");

        let (r, out) = fx.run(&["gc", "--older-than", "1d", "--json"], &mut p);
        r.expect("gc --json");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["expired"].as_array().map(Vec::len), Some(0), "{v}");
        assert_eq!(v["older_than_secs"], 86_400);
    }
}
