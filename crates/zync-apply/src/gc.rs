//! `zync-apply gc`: what the daemon does to the staging area at its start, on demand. Staged
//! sessions nobody touched for longer than the daemon's `--staging-max-age` (or
//! `--older-than`) expire: their staged files are removed and they are marked `expired`
//! (`zync_db::expire`, the daemon's own rule). A session that an `apply` is working on right
//! now (it holds the session's lock, `lock.rs`) is left alone and named busy: it may still be
//! `staged` with a backup of E's first file already in its directory (an apply marks it
//! `partial` right before it changes E). Applied sessions whose apply ended longer ago than that age are settled: their
//! backups are removed and they are marked `settled` (what they applied stays on E; they can no
//! longer be undone), so that E's staging area does not keep a copy of every file every apply
//! replaced for good. Partly applied sessions are kept and named, with how to settle one
//! (`drop --discard-backups`). Directories in the staging area that no session owns are removed
//! (`zync_db::leftover_dirs`). E's directories are never touched.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use zync_cli::units::{format_bytes, format_duration};
use zync_db::SessionStatus;

use crate::lock::SessionLock;
use crate::session::{self, SessionJson};

/// The daemon's default `--staging-max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// What `gc --json` prints.
#[derive(Debug, Serialize)]
struct Report {
    older_than_secs: u64,
    expired: Vec<SessionJson>,
    settled: Vec<SessionJson>,
    busy: Vec<SessionJson>,
    kept_partial: Vec<SessionJson>,
    removed_dirs: Vec<String>,
}

/// Expires the staged sessions of the database `db` older than `max_age`, settles the applied
/// ones whose apply ended longer ago than that, and removes leftover staging directories,
/// printing what it removed.
///
/// # Errors
/// The database cannot be opened or read; the staging area cannot be listed; a directory that
/// should go could not be removed (after doing everything else).
pub fn gc(db: &Path, max_age: Duration, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let index = session::open_index(db)?;
    let expiry = zync_db::expire(&index, db, max_age, zync_db::now_unix(), |dir| {
        SessionLock::try_dir(dir, "gc")
    })?;
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
            settled: expiry.settled.iter().map(SessionJson::from).collect(),
            busy: expiry.busy.iter().map(SessionJson::from).collect(),
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
        for s in &expiry.settled {
            writeln!(
                out,
                "settled session {} (applied {}, from {}): its backups were removed; what it \
                 applied stays on E, and it can no longer be undone",
                s.id,
                session::local_time(s.applied_unix.unwrap_or(s.created_unix)),
                zync_cli::visible::line(&s.client_id)
            )?;
        }
        for dir in &removed {
            writeln!(out, "removed {}: no session owns it", dir.display())?;
        }
        for s in &expiry.busy {
            let what = if s.status == SessionStatus::Applied {
                format!(
                    "applied {}, older than {age}; a run holds its lock (an undo), so a later gc \
                     removes its backups if it is still applied then",
                    session::local_time(s.applied_unix.unwrap_or(s.created_unix))
                )
            } else {
                format!(
                    "staged {}, older than {age}; a run holds its lock (an apply at its \
                     prompt), so a later gc expires it if it is still untouched then",
                    session::local_time(s.created_unix)
                )
            };
            writeln!(out, "kept session {}: busy, {what}", s.id)?;
        }
        for s in &expiry.kept_partial {
            writeln!(
                out,
                "kept session {}: partly applied, staged {}, older than {age}; finish it with \
                 `zync-apply apply`, or `zync-apply undo` it and drop it, or keep what it \
                 applied and give up undo with `zync-apply drop {} --discard-backups` (removes \
                 its backups and the files still staged, without applying them)",
                s.id,
                session::local_time(s.created_unix),
                s.id
            )?;
        }
        writeln!(
            out,
            "gc: {} older than {age} expired, {} busy, {} settled (backups removed), {} removed; \
             E's directories were not touched",
            session::count(expiry.expired.len() as u64, "session"),
            expiry.busy.len(),
            expiry.settled.len(),
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
    use std::collections::VecDeque;
    use std::path::PathBuf;

    use crate::lock::SessionLock;
    use crate::outcome::Outcome;
    use crate::prompt::{title, Choice, Prompter, Question, ScriptedPrompter};
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
            out.contains(&format!("kept session {PART}: partly applied"))
                && out.contains(&format!("zync-apply drop {PART} --discard-backups")),
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

    /// Makes session `id`'s apply `days` days older.
    fn age_apply(fx: &Fixture, id: &str, days: i64) {
        rusqlite::Connection::open(&fx.db)
            .expect("open db")
            .execute(
                "UPDATE upstream_sessions SET applied_unix = applied_unix - ?2 WHERE id = ?1",
                (id, days * 86_400),
            )
            .expect("age the apply");
    }

    #[test]
    fn gc_removes_the_backups_of_sessions_applied_longer_ago_than_the_age_and_keeps_e() {
        let fx = Fixture::new();
        fx.e_write("big.bin", b"E's original\n");
        // Two one-byte edits of E's file from R, each applied: each keeps a whole backup.
        fx.stage(OLD, &[write("big.bin", b"R1\n", Some(b"E's original\n"))]);
        let mut p = ScriptedPrompter::new([]);
        fx.run(&["apply", OLD, "--non-interactive"], &mut p)
            .0
            .expect("apply");
        fx.stage(NEW, &[write("big.bin", b"R2\n", Some(b"R1\n"))]);
        fx.run(&["apply", NEW, "--non-interactive"], &mut p)
            .0
            .expect("apply");
        // Pushed long ago but applied yesterday: its backups are young.
        fx.stage(PART, &[write("p.txt", b"p\n", None)]);
        age(&fx, PART, 40);
        fx.run(&["apply", PART, "--non-interactive"], &mut p)
            .0
            .expect("apply");
        age_apply(&fx, PART, 1);
        age_apply(&fx, OLD, 40);
        age(&fx, OLD, 40);
        let new_backup = fx.file(NEW, "big.bin").backup_name.expect("a backup");
        let e_before = fx.e_tree();

        let (r, out) = fx.run(&["gc", "--older-than", "30d"], &mut p);
        r.expect("gc");
        assert!(
            out.contains(&format!("settled session {OLD} (applied "))
                && out.contains("can no longer be undone")
                && out.contains("0 busy, 1 settled"),
            "{out}"
        );
        assert_eq!(fx.status(OLD), SessionStatus::Settled);
        assert!(!fx.session_dir(OLD).exists(), "the old backups stay");
        for id in [NEW, PART] {
            assert_eq!(fx.status(id), SessionStatus::Applied, "{id}");
        }
        assert!(
            fx.session_dir(NEW).join(new_backup).exists(),
            "the backup of a recent apply went"
        );
        assert!(fx.session_dir(PART).exists());
        assert_eq!(fx.e_tree(), e_before, "E changed");

        let (r, out) = fx.run(&["gc", "--older-than", "30d", "--json"], &mut p);
        r.expect("gc --json");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["settled"].as_array().map(Vec::len), Some(0), "{v}");
        // The recent apply can still be undone; the settled one cannot.
        let (r, out) = fx.run(&["undo", NEW], &mut p);
        assert_eq!(r.expect("undo"), Outcome::Done, "{out}");
        assert_eq!(fx.e_read("big.bin").as_deref(), Some(&b"R1\n"[..]));
        let (r, _) = fx.run(&["undo", OLD], &mut p);
        assert!(format!("{:#}", r.expect_err("settled")).contains("cannot be undone"));
    }

    /// What [`GcAtPrompt`] saw when gc ran at its second question.
    #[derive(Debug)]
    struct SeenAtPrompt {
        gc: String,
        status: SessionStatus,
        backup: Option<Vec<u8>>,
    }

    /// An interactive user who answers from a script and, at the first question (nothing
    /// changed on E yet, the run holding the session's lock) and at the second (the first file
    /// already applied and backed up), runs `zync-apply gc` from another terminal.
    struct GcAtPrompt<'a> {
        fx: &'a Fixture,
        id: &'a str,
        answers: VecDeque<Choice>,
        asked: usize,
        seen: Vec<SeenAtPrompt>,
    }

    impl Prompter for GcAtPrompt<'_> {
        fn is_interactive(&self) -> bool {
            true
        }

        fn choose(&mut self, q: &Question<'_>, _: &[Choice]) -> anyhow::Result<Choice> {
            self.asked += 1;
            if self.asked <= 2 {
                let mut out = Vec::new();
                let r = super::gc(&self.fx.db, super::DEFAULT_MAX_AGE, false, &mut out);
                let backup =
                    self.fx.file(self.id, "a.txt").backup_name.and_then(|name| {
                        std::fs::read(self.fx.session_dir(self.id).join(name)).ok()
                    });
                self.seen.push(SeenAtPrompt {
                    gc: format!("{}{r:?}", String::from_utf8_lossy(&out)),
                    status: self.fx.status(self.id),
                    backup,
                });
            }
            self.answers
                .pop_front()
                .ok_or_else(|| anyhow::anyhow!("no answer left for {}", title(q)))
        }

        fn show(&mut self, _: &str) {}
    }

    #[test]
    fn gc_during_an_interactive_apply_keeps_the_session_and_the_backups_undo_needs() {
        const ID: &str = "eeee1111-2222-4333-8444-555566667777";
        let fx = Fixture::new();
        fx.e_write("a.txt", b"E's original\n");
        fx.stage(
            ID,
            &[
                write("a.txt", b"R\n", Some(b"E's original\n")),
                write("b.txt", b"b\n", None),
            ],
        );
        age(&fx, ID, 40);
        let mut user = GcAtPrompt {
            fx: &fx,
            id: ID,
            answers: [Choice::Apply, Choice::Quit].into(),
            asked: 0,
            seen: Vec::new(),
        };
        let (r, out) = fx.run(&["apply", ID], &mut user);
        r.expect("apply");
        let [first, second] = &user.seen[..] else {
            panic!("gc ran at the first two questions: {:?}", user.seen);
        };
        // Nothing changed on E yet: the session is still staged, and only the run's lock
        // keeps gc from expiring it.
        assert_eq!(first.status, SessionStatus::Staged, "{first:?}");
        assert!(
            first.gc.contains(&format!("kept session {ID}: busy")) && first.gc.contains("Ok(())"),
            "{first:?}"
        );
        // The first file replaced: the session says so, and its backup is kept.
        assert_eq!(
            second.status,
            SessionStatus::Partial,
            "an apply that changed E leaves its session partial: {second:?}"
        );
        assert_eq!(
            second.backup.as_deref(),
            Some(&b"E's original\n"[..]),
            "gc removed the backup of the file the apply had replaced: {second:?}"
        );
        assert!(second.gc.contains("Ok(())"), "{second:?}");
        assert_eq!(fx.e_read("a.txt").as_deref(), Some(&b"R\n"[..]), "{out}");
        assert_eq!(fx.status(ID), SessionStatus::Partial, "{out}");

        // The backup is still there for undo: E's original comes back.
        let mut p = ScriptedPrompter::new([]);
        let (r, out) = fx.run(&["undo", ID], &mut p);
        assert_eq!(r.expect("undo"), Outcome::Done, "{out}");
        assert_eq!(fx.e_read("a.txt").as_deref(), Some(&b"E's original\n"[..]));
    }

    #[test]
    fn gc_leaves_a_locked_session_with_its_backups_and_expires_it_once_free() {
        let fx = Fixture::new();
        fx.stage(OLD, &[write("x.txt", b"x", None)]);
        age(&fx, OLD, 40);
        // As an apply holds it, with a backup of E's file already in the directory.
        let backup: PathBuf = fx.session_dir(OLD).join("backup-000001");
        std::fs::write(&backup, b"E's original").expect("backup");
        let held = SessionLock::acquire(&fx.db, OLD, "apply").expect("hold");
        let mut p = ScriptedPrompter::new([]);

        let (r, out) = fx.run(&["gc", "--older-than", "30d", "--json"], &mut p);
        r.expect("gc");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["expired"].as_array().map(Vec::len), Some(0), "{v}");
        assert_eq!(v["busy"][0]["id"], OLD, "{v}");
        assert_eq!(fx.status(OLD), SessionStatus::Staged);
        assert_eq!(
            std::fs::read(&backup).ok().as_deref(),
            Some(&b"E's original"[..]),
            "the held session's backup was removed"
        );

        // Once the apply is over (here: without touching the session), gc expires it.
        drop(held);
        let (r, out) = fx.run(&["gc", "--older-than", "30d"], &mut p);
        r.expect("gc once free");
        assert!(out.contains(&format!("expired session {OLD}")), "{out}");
        assert!(
            out.contains("1 session older than 30d expired, 0 busy"),
            "{out}"
        );
        assert_eq!(fx.status(OLD), SessionStatus::Expired);
        assert!(!fx.session_dir(OLD).exists());
        // An apply that comes after finds it expired, and the lock it takes changes nothing.
        let (r, _) = fx.run(&["apply", OLD, "--non-interactive"], &mut p);
        let err = format!("{:#}", r.expect_err("expired"));
        assert!(err.contains("is expired"), "{err}");
    }
}
