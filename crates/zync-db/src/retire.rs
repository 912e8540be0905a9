//! What bounds the staging area and empties it: the sums the daemon's staging limits check
//! (bytes waiting across pending sessions, pending sessions of one client), a re-sent path
//! replacing its earlier staged file, and the ends of a session's life that remove its staged
//! files without touching E's directories: expiry of sessions left staged too long (at a
//! daemon start, and `zync-apply gc`), `zync-apply drop`, and directories in the staging area
//! that no live session owns; the end of an applied session's backups (settling: by expiry
//! once the apply is old enough, or `zync-apply drop --discard-backups`); and the rows ended
//! sessions would leave behind (aborted ones keep none of their files; expired, dropped and
//! settled ones keep theirs only while among the newest few of their status). The daemon and
//! zync-apply both call these, so the rules live once, here (invariant 9
//! (docs/ARCHITECTURE.md): staging is bounded; invariant 5: the backups are kept, for undo,
//! until their time is up or the user gives undo up).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::OptionalExtension;

use crate::error::{Context, Result};
use crate::sessions::FILE_COLUMNS;
use crate::sql::{u64_from_sql, u64_to_sql};
use crate::{session_dir, staging_root, FileState, Index, Session, SessionStatus, StagedFile};

/// How many aborted sessions keep their row (without their files) for `zync-apply list --all`:
/// enough to see what became of the last pushes that failed, few enough that abandoned
/// sessions cannot grow E's database ([`Index::abort_session`]).
pub const ABORTED_KEPT: u64 = 20;

/// How many sessions of each other ended status (expired, dropped, settled) keep their rows,
/// files and all, for `zync-apply list --all` and `show`: the newest to have ended (by
/// `ended_seq`, the order they ended in, not when R pushed them). Older ones are deleted, rows
/// and all ([`Index::forget_ended`]), at each end and at each daemon start.
///
/// Why a bound at all: limits count only pending sessions, so a hostile R could push
/// `--max-pending-sessions` sessions of `--max-session-files` deletes of long paths (accepted:
/// a delete carries no content), have E's user drop them as junk (or let them expire), and
/// do it again: every round would stay in the database for good (invariant 9
/// (docs/ARCHITECTURE.md): staging is bounded so that R cannot exhaust E).
///
/// Why per status, and why 10: R can fill two of these statuses (expired by waiting, dropped
/// by E's user's reaction to its junk), but not settled, which only an apply by E's user
/// reaches; a bound of its own per status keeps a flood of R's junk from pushing out the
/// record of what was applied to E, or a batch of expiries from pushing out the user's recent
/// drops. 10 each keeps the last few of each for a person to look at, while what R can make E
/// keep after its sessions ended, 20 sessions' files, stays near the 16 pending sessions the
/// daemon's default limits already let it keep. Aborted sessions keep no files at all and only
/// [`ABORTED_KEPT`] rows.
pub const ENDED_KEPT: u64 = 10;

/// The statuses [`ENDED_KEPT`] bounds, each on its own.
const KEPT_ENDED: [SessionStatus; 3] = [
    SessionStatus::Expired,
    SessionStatus::Dropped,
    SessionStatus::Settled,
];

/// `ended_seq = ...`: the next number in the order sessions end, for an UPDATE of the
/// session that ends now.
const NEXT_ENDED_SEQ: &str =
    "ended_seq = (SELECT coalesce(max(ended_seq), 0) + 1 FROM upstream_sessions)";

/// Ended sessions of status `?1` but for the newest `?2` to have ended: by `ended_seq` (set
/// when they ended), then, for what an older version ended without one (they count as
/// older, since in SQLite NULL sorts last in descending order), when their apply ended or
/// they were created.
const ENDED_BEYOND_KEPT: &str = "SELECT id FROM upstream_sessions WHERE status = ?1 AND id NOT IN (
         SELECT id FROM upstream_sessions WHERE status = ?1
         ORDER BY ended_seq DESC, coalesce(applied_unix, created_unix) DESC, created_unix DESC,
             id DESC
         LIMIT ?2)";

/// `?1, ?2, ?3`: the pending statuses as SQL parameters.
const PENDING_IN: &str = "(?1, ?2, ?3)";

/// What each staged path counts against `--max-staged-bytes` besides its content: its rows in
/// the index and its entry in the staging area. Deletions and empty files hold no content, but
/// a client pushing a hundred thousand of them with 4 KiB paths grew E's database without
/// bound when only content counted.
pub const STAGED_RECORD_BYTES: u64 = 1024;

/// What staging `path` counts against `--max-staged-bytes` besides its content.
pub fn staged_record_bytes(path: &str) -> u64 {
    STAGED_RECORD_BYTES.saturating_add(path.len() as u64)
}

impl Index {
    /// What every pending session ([`SessionStatus::PENDING`]) holds on E: the sizes of its
    /// writes, and [`staged_record_bytes`] for each of its paths, writes and deletions alike.
    /// What the daemon's `--max-staged-bytes` bounds.
    ///
    /// # Errors
    /// An SQLite failure.
    pub fn pending_bytes(&self) -> Result<u64> {
        let [a, b, c] = pending();
        self.conn()
            .query_row(
                &format!(
                    "SELECT coalesce(sum(
                         CASE WHEN f.action = 'write' THEN f.size ELSE 0 END
                         + {STAGED_RECORD_BYTES} + length(CAST(f.path AS BLOB))), 0)
                     FROM upstream_files AS f
                     JOIN upstream_sessions AS s ON s.id = f.session_id
                     WHERE s.status IN {PENDING_IN}"
                ),
                (a, b, c),
                |row| row.get::<_, i64>(0),
            )
            .map(u64_from_sql)
            .with_ctx(|| "adding up the staged bytes of the pending sessions".to_owned())
    }

    /// How many pending sessions ([`SessionStatus::PENDING`]) client `client_id` has: what the
    /// daemon's `--max-pending-sessions` bounds.
    ///
    /// # Errors
    /// An SQLite failure.
    pub fn pending_sessions_of(&self, client_id: &str) -> Result<u64> {
        let [a, b, c] = pending();
        self.conn()
            .query_row(
                &format!(
                    "SELECT count(*) FROM upstream_sessions
                     WHERE client_id = ?4 AND status IN {PENDING_IN}"
                ),
                (a, b, c, client_id),
                |row| row.get::<_, i64>(0),
            )
            .map(u64_from_sql)
            .with_ctx(|| format!("counting the pending sessions of client {client_id}"))
    }

    /// Records session `id` of client `client_id` as [`Index::create_session`] does, unless the
    /// client has `max_pending` pending sessions already: then nothing is recorded and the
    /// count is returned. The count and the insert are one write transaction, so connections
    /// of one client racing to open sessions cannot all pass the limit together (invariant 9:
    /// eight such connections left eight sessions where one was allowed).
    ///
    /// # Errors
    /// As [`Index::create_session`].
    pub fn create_session_within(
        &self,
        id: &str,
        client_id: &str,
        max_pending: u64,
    ) -> Result<Option<u64>> {
        let context = || format!("creating an upstream session of client {client_id}");
        // IMMEDIATE: the write lock is taken before the count, not at the insert.
        let tx = rusqlite::Transaction::new_unchecked(
            self.conn(),
            rusqlite::TransactionBehavior::Immediate,
        )
        .with_ctx(context)?;
        let pending = self.pending_sessions_of(client_id)?;
        if pending >= max_pending {
            return Ok(Some(pending));
        }
        self.create_session(id, client_id)?;
        tx.commit().with_ctx(context)?;
        Ok(None)
    }

    /// As [`Index::add_staged_file`], returning the row it replaced: the same dir and path sent
    /// again in one session replaces the earlier version, whose staged file the caller then
    /// removes.
    ///
    /// # Errors
    /// As [`Index::add_staged_file`].
    pub fn replace_staged_file(&self, file: &StagedFile) -> Result<Option<StagedFile>> {
        let context = || {
            format!(
                "staging {}/{} in the upstream session {}",
                file.dir, file.path, file.session_id
            )
        };
        // IMMEDIATE: a deferred transaction that reads and then writes fails at once with
        // SQLITE_BUSY (no busy wait) when the indexer committed in between.
        let tx = rusqlite::Transaction::new_unchecked(
            self.conn(),
            rusqlite::TransactionBehavior::Immediate,
        )
        .with_ctx(context)?;
        let old = tx
            .query_row(
                &format!(
                    "SELECT {FILE_COLUMNS} FROM upstream_files
                     WHERE session_id = ?1 AND dir = ?2 AND path = ?3"
                ),
                (&file.session_id, &file.dir, &file.path),
                crate::sessions::file_from_row,
            )
            .optional()
            .with_ctx(context)?;
        self.add_staged_file(file)?;
        tx.commit().with_ctx(context)?;
        Ok(old)
    }

    /// Removes a session's rows (it and its files) for good: a session finalized with nothing
    /// staged leaves no trace.
    ///
    /// # Errors
    /// An SQLite failure.
    pub fn delete_session(&self, id: &str) -> Result<()> {
        self.conn()
            .execute("DELETE FROM upstream_sessions WHERE id = ?1", [id])
            .with_ctx(|| format!("deleting the empty upstream session {id}"))?;
        Ok(())
    }

    /// Aborts session `id` if it is still [`SessionStatus::Receiving`] (R left before
    /// FINALIZE_UPSTREAM, or a daemon stopped mid-upload) and forgets what it held: its files'
    /// rows are deleted, and the session keeps a row, with no files, for `zync-apply list
    /// --all` only while it is among the newest [`ABORTED_KEPT`] aborted sessions
    /// ([`Index::forget_aborted`]). A hostile R can open sessions and send thousands of
    /// accepted deletes without ever finalizing; limits count only pending sessions, so
    /// without this each round would stay in the database for good (invariant 9
    /// (docs/ARCHITECTURE.md): staging is bounded). Returns whether the session was aborted
    /// (its staged files are the caller's to remove); one that moved on meanwhile is left alone.
    ///
    /// # Errors
    /// An SQLite failure (nothing is changed then).
    pub fn abort_session(&self, id: &str) -> Result<bool> {
        let context = || format!("aborting the upstream session {id}");
        // IMMEDIATE: the indexer may commit between a deferred transaction's read and write.
        let tx = rusqlite::Transaction::new_unchecked(
            self.conn(),
            rusqlite::TransactionBehavior::Immediate,
        )
        .with_ctx(context)?;
        let aborted = self.move_session(id, &[SessionStatus::Receiving], SessionStatus::Aborted)?;
        if aborted {
            self.forget_aborted()?;
        }
        tx.commit().with_ctx(context)?;
        Ok(aborted)
    }

    /// Deletes what aborted sessions left in the database: the rows of their files, and the
    /// sessions themselves but for the newest [`ABORTED_KEPT`]. [`Index::abort_session`] calls
    /// it for each session it aborts; the daemon calls it at its start, for the aborted
    /// sessions older versions kept in full. Returns how many session rows and file rows went.
    ///
    /// # Errors
    /// An SQLite failure.
    pub fn forget_aborted(&self) -> Result<(u64, u64)> {
        let context = || "deleting what the aborted upstream sessions left".to_owned();
        let sessions = self
            .conn()
            .execute(
                "DELETE FROM upstream_sessions WHERE status = ?1 AND id NOT IN (
                     SELECT id FROM upstream_sessions WHERE status = ?1
                     ORDER BY created_unix DESC, id LIMIT ?2)",
                (SessionStatus::Aborted, u64_to_sql(ABORTED_KEPT)),
            )
            .with_ctx(context)?;
        // The files of the sessions deleted went with them (ON DELETE CASCADE); those of the
        // sessions kept go here.
        let files = self
            .conn()
            .execute(
                "DELETE FROM upstream_files WHERE session_id IN (
                     SELECT id FROM upstream_sessions WHERE status = ?1)",
                [SessionStatus::Aborted],
            )
            .with_ctx(context)?;
        Ok((sessions as u64, files as u64))
    }

    /// Deletes the expired, dropped and settled sessions, files and all, but for the newest
    /// [`ENDED_KEPT`] of each status. The ends of a session ([`expire`], [`drop_session`],
    /// [`settle_session`]) do it for the status they reach, in the transaction that reaches it;
    /// the daemon calls this at its start, for what older versions kept of every session that
    /// ever ended. Sessions that have not ended (undo needs an applied session's rows, the
    /// others still wait for E's user) and aborted ones ([`Index::forget_aborted`]) are not
    /// touched. Their directories should be gone already; one that is not is litter for
    /// `zync-apply gc` ([`leftover_dirs`]: no session owns it). Returns how many session rows
    /// and file rows went.
    ///
    /// # Errors
    /// An SQLite failure (nothing is deleted then).
    pub fn forget_ended(&self) -> Result<(u64, u64)> {
        let context = || "deleting what the ended upstream sessions left".to_owned();
        let tx = rusqlite::Transaction::new_unchecked(
            self.conn(),
            rusqlite::TransactionBehavior::Immediate,
        )
        .with_ctx(context)?;
        let mut gone = (0, 0);
        for status in KEPT_ENDED {
            let (sessions, files) = self.forget_ended_of(status)?;
            gone = (gone.0 + sessions, gone.1 + files);
        }
        tx.commit().with_ctx(context)?;
        Ok(gone)
    }

    /// [`Index::forget_ended`] for one status, in the caller's transaction.
    fn forget_ended_of(&self, status: SessionStatus) -> Result<(u64, u64)> {
        let context = || {
            format!("deleting the {status} upstream sessions older than the newest {ENDED_KEPT}")
        };
        let params = (status, u64_to_sql(ENDED_KEPT));
        // The files first, to count them (ON DELETE CASCADE would delete them unseen).
        let files = self
            .conn()
            .execute(
                &format!("DELETE FROM upstream_files WHERE session_id IN ({ENDED_BEYOND_KEPT})"),
                params,
            )
            .with_ctx(context)?;
        let sessions = self
            .conn()
            .execute(
                &format!("DELETE FROM upstream_sessions WHERE id IN ({ENDED_BEYOND_KEPT})"),
                params,
            )
            .with_ctx(context)?;
        Ok((sessions as u64, files as u64))
    }

    /// Runs `end`, which moves session `id` to the ended status `to` (compare and set,
    /// returning whether it did), and when it did deletes the sessions of that status beyond
    /// the newest [`ENDED_KEPT`], in one transaction: a crash leaves either the session as it
    /// was, or it ended with the older ones forgotten.
    fn end_session(
        &self,
        id: &str,
        to: SessionStatus,
        end: impl FnOnce() -> Result<bool>,
    ) -> Result<bool> {
        let context = || format!("marking the upstream session {id} {to}");
        // IMMEDIATE: the indexer may commit between a deferred transaction's read and write.
        let tx = rusqlite::Transaction::new_unchecked(
            self.conn(),
            rusqlite::TransactionBehavior::Immediate,
        )
        .with_ctx(context)?;
        let ended = end()?;
        if ended {
            self.forget_ended_of(to)?;
        }
        tx.commit().with_ctx(context)?;
        Ok(ended)
    }

    /// Sets a session's status to `to` only if it is one of `from` now (compare and set), so
    /// that a session another process moved on meanwhile (an apply that began) is left alone.
    /// A session that ends ([`SessionStatus::ENDED`]) takes the next number in the order
    /// sessions end (`ended_seq`). Returns whether it changed.
    ///
    /// # Errors
    /// An SQLite failure.
    pub fn move_session(
        &self,
        id: &str,
        from: &[SessionStatus],
        to: SessionStatus,
    ) -> Result<bool> {
        let sql = if SessionStatus::ENDED.contains(&to) {
            format!(
                "UPDATE upstream_sessions SET status = ?3, {NEXT_ENDED_SEQ}
                 WHERE id = ?1 AND status = ?2"
            )
        } else {
            "UPDATE upstream_sessions SET status = ?3 WHERE id = ?1 AND status = ?2".to_owned()
        };
        let mut changed = 0;
        for status in from {
            changed += self
                .conn()
                .execute(&sql, (id, status, to))
                .with_ctx(|| format!("marking the upstream session {id} {to}"))?;
            if changed > 0 {
                break;
            }
        }
        Ok(changed > 0)
    }

    /// Staged sessions ([`SessionStatus::Staged`]: nothing applied) created before
    /// `cutoff_unix`, oldest first.
    fn staged_before(&self, cutoff_unix: i64) -> Result<Vec<Session>> {
        let mut found: Vec<Session> = self
            .sessions_with_status(SessionStatus::Staged)?
            .into_iter()
            .filter(|s| s.created_unix < cutoff_unix)
            .collect();
        found.reverse();
        Ok(found)
    }

    /// Undone sessions ([`SessionStatus::Undone`]) whose apply (the one undone) ended before
    /// `cutoff_unix`, oldest first; one without that time counts from its creation.
    fn undone_before(&self, cutoff_unix: i64) -> Result<Vec<Session>> {
        let mut found: Vec<Session> = self
            .sessions_with_status(SessionStatus::Undone)?
            .into_iter()
            .filter(|s| s.applied_unix.unwrap_or(s.created_unix) < cutoff_unix)
            .collect();
        found.sort_by_key(|s| s.applied_unix.unwrap_or(s.created_unix));
        Ok(found)
    }

    /// Applied sessions ([`SessionStatus::Applied`]) whose apply ended before `cutoff_unix`,
    /// oldest apply first. A session without that time (none should be: the upgrade that added
    /// it gave applied sessions its own) counts from its creation, the earliest it can have
    /// been applied.
    fn applied_before(&self, cutoff_unix: i64) -> Result<Vec<Session>> {
        let mut found: Vec<Session> = self
            .sessions_with_status(SessionStatus::Applied)?
            .into_iter()
            .filter(|s| s.applied_unix.unwrap_or(s.created_unix) < cutoff_unix)
            .collect();
        found.sort_by_key(|s| s.applied_unix.unwrap_or(s.created_unix));
        Ok(found)
    }

    /// Marks session `id` [`SessionStatus::Settled`] if it is one of `from` now and no file of
    /// it is [`FileState::Applying`] (compare and set, in one statement): an intent record
    /// names a backup that the next `apply` or `undo` needs to learn how far a killed run got.
    /// Returns whether it changed.
    fn settle_row(&self, id: &str, from: &[SessionStatus]) -> Result<bool> {
        for status in from {
            let changed = self
                .conn()
                .execute(
                    &format!(
                        "UPDATE upstream_sessions SET status = ?3, {NEXT_ENDED_SEQ}
                         WHERE id = ?1 AND status = ?2 AND NOT EXISTS (
                             SELECT 1 FROM upstream_files WHERE session_id = ?1 AND state = ?4)"
                    ),
                    (id, status, SessionStatus::Settled, FileState::Applying),
                )
                .with_ctx(|| format!("marking the upstream session {id} settled"))?;
            if changed > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// How many files of session `id` are in `state`.
    fn files_in_state(&self, id: &str, state: FileState) -> Result<u64> {
        self.conn()
            .query_row(
                "SELECT count(*) FROM upstream_files WHERE session_id = ?1 AND state = ?2",
                (id, state),
                |row| row.get::<_, i64>(0),
            )
            .map(u64_from_sql)
            .with_ctx(|| format!("counting the {state} files of the upstream session {id}"))
    }
}

fn pending() -> [SessionStatus; 3] {
    [
        SessionStatus::Receiving,
        SessionStatus::Staged,
        SessionStatus::Partial,
    ]
}

/// What [`expire`] did.
#[derive(Debug, Default)]
pub struct Expiry {
    /// Sessions now [`SessionStatus::Expired`], their staged files removed.
    pub expired: Vec<Session>,
    /// Applied sessions whose apply ended longer than the age ago, now
    /// [`SessionStatus::Settled`]: their directories, with the backups of what they replaced
    /// on E, removed; their changes stay on E, and they can no longer be undone.
    pub settled: Vec<Session>,
    /// Sessions old enough to expire or settle whose lock someone holds (an `apply` waiting at
    /// its prompt, having already replaced E's files and kept their backups here; an `undo`
    /// restoring from them): left as they are, for a later run once they are free (if still
    /// in the same state).
    pub busy: Vec<Session>,
    /// Partly applied sessions older than the age: neither expired nor settled (besides the
    /// backups `zync-apply undo` needs, their directories hold staged files still waiting for
    /// E's user), only reported. `zync-apply drop --discard-backups` settles one
    /// ([`settle_session`]).
    pub kept_partial: Vec<Session>,
    /// Directories whose lock could not be taken (those sessions are left as they are), or that
    /// could not be removed (those sessions are expired or settled all the same), with why.
    pub failures: Vec<(PathBuf, std::io::Error)>,
}

/// Expires the sessions of the database at `db` that were staged more than `max_age` before
/// `now_unix` and never touched since ([`SessionStatus::Staged`]): each is marked
/// [`SessionStatus::Expired`], then its directory in the staging area is removed. Then settles
/// the sessions whose apply ended more than `max_age` before `now_unix`
/// ([`SessionStatus::Applied`], by [`Session::applied_unix`]): each is marked
/// [`SessionStatus::Settled`], then its directory, which holds the backups `undo` would need,
/// is removed, so that every apply (each keeping a whole copy of every E file it replaced)
/// does not grow the staging area for good. Undone sessions whose undone apply ended more than
/// `max_age` before `now_unix` expire too (E is back as it was; their directories hold what R
/// sent, which the pending limits no longer count). Sessions still receiving, partly applied
/// or already ended are left alone; partly applied ones older than the age are returned in
/// [`Expiry::kept_partial`] so the caller can say so. Nothing in E's directories is touched.
/// Each session that expires or settles is the newest of its status, and in the same
/// transaction the sessions of that status beyond the newest [`ENDED_KEPT`] are deleted, rows
/// and all ([`Index::forget_ended`]): the sessions returned may no longer be in the database.
///
/// A `zync-apply apply` backs up E's first file into the session's directory while the session
/// is still `staged` (it marks it `partial` right before it changes E); only the run's lock on
/// the session ([`crate::SESSION_LOCK_FILE`]) says that the directory is in use. So each session is locked
/// first, with `lock` (given the session's directory, which it creates when missing, as
/// `apply` does; `Ok(None)`: someone holds the lock), and the guard it returns is held while
/// the session is marked and its directory removed. A busy session is left alone
/// ([`Expiry::busy`]); an `apply` that takes the lock after expiry let go of it reads the
/// session again and refuses it as expired. This crate takes no locks itself: zync-fs does
/// (`zync_fs::try_lock_in`), and the two crates do not depend on each other.
///
/// # Errors
/// An SQLite failure (a directory that cannot be locked or removed is reported in
/// [`Expiry::failures`] instead).
pub fn expire<G>(
    index: &Index,
    db: &Path,
    max_age: Duration,
    now_unix: i64,
    mut lock: impl FnMut(&Path) -> std::io::Result<Option<G>>,
) -> Result<Expiry> {
    let age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
    let cutoff = now_unix.saturating_sub(age);
    let mut expiry = Expiry::default();
    let staged = index.staged_before(cutoff)?;
    let expired = SessionStatus::Expired;
    expiry.expired = retire_each(db, staged, expired, &mut lock, &mut expiry, |s| {
        index.end_session(&s.id, expired, || {
            index.move_session(&s.id, &[SessionStatus::Staged], expired)
        })
    })?;
    // Undone: E is back as it was, and the directory holds only what R sent (and the backups
    // the undo restored from), up to a session's whole budget, which pending limits no
    // longer count. Aged from the apply that was undone.
    let undone = index.undone_before(cutoff)?;
    let undone = retire_each(db, undone, expired, &mut lock, &mut expiry, |s| {
        index.end_session(&s.id, expired, || {
            index.move_session(&s.id, &[SessionStatus::Undone], expired)
        })
    })?;
    expiry.expired.extend(undone);
    // An `undo` restoring from the backups holds the lock.
    let applied = index.applied_before(cutoff)?;
    let settled = SessionStatus::Settled;
    expiry.settled = retire_each(db, applied, settled, &mut lock, &mut expiry, |s| {
        index.end_session(&s.id, settled, || {
            index.settle_row(&s.id, &[SessionStatus::Applied])
        })
    })?;
    let mut partial: Vec<Session> = index
        .sessions_with_status(SessionStatus::Partial)?
        .into_iter()
        .filter(|s| s.created_unix < cutoff)
        .collect();
    partial.reverse();
    expiry.kept_partial = partial;
    Ok(expiry)
}

/// Retires each of `sessions` for [`expire`]: takes its lock (a busy one, or one whose lock
/// fails, is noted in `expiry` and left as it is), marks it with `mark` (compare and set:
/// false when another process moved it on meanwhile, then it is left alone), then removes its
/// directory. Returns the sessions marked, now of status `to`.
fn retire_each<G>(
    db: &Path,
    sessions: Vec<Session>,
    to: SessionStatus,
    lock: &mut impl FnMut(&Path) -> std::io::Result<Option<G>>,
    expiry: &mut Expiry,
    mark: impl Fn(&Session) -> Result<bool>,
) -> Result<Vec<Session>> {
    let mut retired = Vec::new();
    for session in sessions {
        let dir = session_dir(db, &session.id);
        let _guard = match lock(&dir) {
            Ok(Some(guard)) => guard,
            Ok(None) => {
                expiry.busy.push(session);
                continue;
            }
            Err(e) => {
                expiry.failures.push((dir, e));
                continue;
            }
        };
        if !mark(&session)? {
            continue;
        }
        if let Err(e) = remove_dir(&dir) {
            expiry.failures.push((dir, e));
        }
        retired.push(Session {
            status: to,
            ..session
        });
    }
    Ok(retired)
}

/// Why [`drop_session`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undroppable {
    /// Still being received from R.
    Receiving,
    /// Some files were applied: its directory holds the backups `undo` needs. Only
    /// [`settle_session`] removes them, when the user gives undo up.
    Applied(SessionStatus),
    /// Already ended (aborted, expired, dropped or settled): nothing is staged.
    Ended(SessionStatus),
}

/// Drops `session` of the database at `db`: marks it [`SessionStatus::Dropped`], then
/// removes its directory in the staging area (its staged files). Only a session whose staged
/// files nothing else needs may go: [`SessionStatus::Staged`] (nothing applied) or
/// [`SessionStatus::Undone`] (E is back as it was). Nothing in E's directories is touched.
/// In the transaction that marks it, the dropped sessions beyond the newest [`ENDED_KEPT`] are
/// deleted, rows and all ([`Index::forget_ended`]): this one, the newest, keeps its files for
/// `zync-apply list --all` and `show`.
///
/// # Errors
/// `Ok(Err(why))` when the session may not be dropped (or another process moved it on
/// meanwhile); an SQLite failure; the directory could not be removed (the session is dropped
/// all the same; running drop again removes what is left).
pub fn drop_session(
    index: &Index,
    db: &Path,
    session: &Session,
) -> Result<std::result::Result<std::io::Result<()>, Undroppable>> {
    let why = match session.status {
        SessionStatus::Staged | SessionStatus::Undone => None,
        SessionStatus::Receiving => Some(Undroppable::Receiving),
        s @ (SessionStatus::Partial | SessionStatus::Applied) => Some(Undroppable::Applied(s)),
        s @ (SessionStatus::Aborted
        | SessionStatus::Expired
        | SessionStatus::Dropped
        | SessionStatus::Settled) => Some(Undroppable::Ended(s)),
    };
    if let Some(why) = why {
        return Ok(Err(why));
    }
    let from = [SessionStatus::Staged, SessionStatus::Undone];
    let dropped = index.end_session(&session.id, SessionStatus::Dropped, || {
        index.move_session(&session.id, &from, SessionStatus::Dropped)
    })?;
    if !dropped {
        let now = index
            .session(&session.id)?
            .map_or(SessionStatus::Dropped, |s| s.status);
        return Ok(Err(match now {
            SessionStatus::Receiving => Undroppable::Receiving,
            SessionStatus::Partial | SessionStatus::Applied => Undroppable::Applied(now),
            other => Undroppable::Ended(other),
        }));
    }
    Ok(Ok(remove_dir(&session_dir(db, &session.id))))
}

/// Why [`settle_session`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsettleable {
    /// Not [`SessionStatus::Applied`] or [`SessionStatus::Partial`] (now): nothing of it is on
    /// E (staged, undone: [`drop_session`] takes those), it is still being received, or it
    /// already ended.
    Status(SessionStatus),
    /// This many of its files are [`FileState::Applying`]: an apply was killed while changing
    /// them, and only their backups tell the next `apply` or `undo` how far it got.
    Interrupted(u64),
}

/// Settles `session` of the database at `db`, giving its undo up: marks it
/// [`SessionStatus::Settled`], then removes its directory in the staging area: the backups of
/// the E files it replaced or deleted, and, for a partly applied session, the staged files it
/// never applied (they are not applied by this, and can no longer be). What it applied stays
/// on E; nothing in E's directories is touched. Only an applied or partly applied session
/// without interrupted files may be settled. The caller holds the session's lock
/// ([`crate::SESSION_LOCK_FILE`]). In the transaction that marks it, the settled sessions
/// beyond the newest [`ENDED_KEPT`] are deleted, rows and all ([`Index::forget_ended`]).
///
/// # Errors
/// `Ok(Err(why))` when the session may not be settled (or another process moved it on
/// meanwhile); an SQLite failure; the directory could not be removed (the session is settled
/// all the same; `zync-apply gc` removes what is left, [`leftover_dirs`]).
pub fn settle_session(
    index: &Index,
    db: &Path,
    session: &Session,
) -> Result<std::result::Result<std::io::Result<()>, Unsettleable>> {
    let from = [SessionStatus::Applied, SessionStatus::Partial];
    if !from.contains(&session.status) {
        return Ok(Err(Unsettleable::Status(session.status)));
    }
    let settled = index.end_session(&session.id, SessionStatus::Settled, || {
        index.settle_row(&session.id, &from)
    })?;
    if !settled {
        let interrupted = index.files_in_state(&session.id, FileState::Applying)?;
        let now = index
            .session(&session.id)?
            .map_or(SessionStatus::Dropped, |s| s.status);
        return Ok(Err(if interrupted > 0 && from.contains(&now) {
            Unsettleable::Interrupted(interrupted)
        } else {
            Unsettleable::Status(now)
        }));
    }
    Ok(Ok(remove_dir(&session_dir(db, &session.id))))
}

/// Directories in the staging area of the database at `db` that no live session owns: named
/// like a session id (a UUID) and either unknown to the index or belonging to a session that
/// ended ([`SessionStatus::ENDED`]) whose files should be gone. Anything else there is left
/// alone. A missing staging area has none.
///
/// # Errors
/// An SQLite failure; the staging area exists but cannot be listed.
pub fn leftover_dirs(index: &Index, db: &Path) -> std::result::Result<Vec<PathBuf>, LeftoverError> {
    let root = staging_root(db);
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(LeftoverError::List { path: root, source }),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| LeftoverError::List {
            path: root.clone(),
            source,
        })?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if !looks_like_session_id(&name) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let owned = index
            .session(&name)?
            .is_some_and(|s| !SessionStatus::ENDED.contains(&s.status));
        if !owned {
            found.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

/// Why [`leftover_dirs`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LeftoverError {
    /// The index could not be read.
    #[error(transparent)]
    Db(#[from] crate::DbError),
    /// The staging area could not be listed.
    #[error("cannot list the staging area {}: {source}", path.display())]
    List {
        /// The staging area.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Whether `name` has the shape of a session id the daemon makes: a UUID,
/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in hex digits.
pub fn looks_like_session_id(name: &str) -> bool {
    let groups: Vec<&str> = name.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Removes a directory and everything in it; one already gone is fine.
pub fn remove_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Seconds since the Unix epoch now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::fixtures::*;
    use crate::FileState;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    fn uuid(n: u8) -> String {
        format!("{n:08x}-0000-4000-8000-000000000000")
    }

    /// A session `id` of `client` created `days` days before NOW, in `status`, with one staged
    /// write of `size` bytes whose file exists in its directory.
    fn session(
        index: &Index,
        db: &Path,
        id: &str,
        client: &str,
        days: i64,
        status: SessionStatus,
        size: u64,
    ) {
        index.create_session(id, client).expect("create");
        index
            .conn()
            .execute(
                "UPDATE upstream_sessions SET created_unix = ?2 WHERE id = ?1",
                (id, NOW - days * DAY),
            )
            .expect("created");
        index
            .add_staged_file(&staged(id, "docs", "a.txt", size, false))
            .expect("file");
        if status != SessionStatus::Receiving {
            index.set_session_status(id, status).expect("status");
        }
        // Applied (partly or wholly) as long ago as it was created.
        index
            .conn()
            .execute(
                "UPDATE upstream_sessions SET applied_unix = ?2
                 WHERE id = ?1 AND applied_unix IS NOT NULL",
                (id, NOW - days * DAY),
            )
            .expect("applied");
        let dir = session_dir(db, id);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(format!("{size}.new")), b"x").expect("staged file");
    }

    /// Two connections of one client open sessions at once against a limit of one (another
    /// daemon connection holds its write transaction while this one asks): one session is
    /// recorded, the other refused with the count.
    #[test]
    fn sessions_opened_at_once_by_one_client_stay_within_its_limit() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = tmp.path().join("sync.db");
        let index = Index::open(&db).expect("open");
        let (held, holding) = std::sync::mpsc::channel();
        let other = std::thread::spawn({
            let db = db.clone();
            move || {
                let index = Index::open(&db).expect("open");
                index
                    .conn()
                    .execute_batch("BEGIN IMMEDIATE")
                    .expect("begin");
                // Its count said none was pending; its insert is on its way.
                index.create_session("first", "r").expect("create");
                held.send(()).expect("send");
                // The other connection's insert is not committed yet while this one asks.
                std::thread::sleep(std::time::Duration::from_millis(300));
                index.conn().execute_batch("COMMIT").expect("commit");
            }
        });
        holding
            .recv()
            .expect("the other connection holds its transaction");
        let second = index.create_session_within("second", "r", 1);
        other.join().expect("thread");
        assert_eq!(second.expect("second"), Some(1));
        assert_eq!(index.pending_sessions_of("r").expect("count"), 1);
    }

    #[test]
    fn pending_bytes_and_sessions_count_only_what_still_waits() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = tmp.path().join("sync.db");
        let index = Index::open(&db).expect("open");
        assert_eq!(index.pending_bytes().expect("bytes"), 0);
        for (n, status, size) in [
            (1, SessionStatus::Receiving, 10),
            (2, SessionStatus::Staged, 200),
            (3, SessionStatus::Partial, 3_000),
            (4, SessionStatus::Applied, 40_000),
            (5, SessionStatus::Aborted, 500_000),
            (6, SessionStatus::Undone, 6_000_000),
            (7, SessionStatus::Expired, 70_000_000),
            (8, SessionStatus::Dropped, 800_000_000),
            (9, SessionStatus::Settled, 900_000_000),
        ] {
            session(&index, &db, &uuid(n), "r", 0, status, size);
        }
        index
            .add_staged_file(&deleted(&uuid(2), "docs", "gone.txt"))
            .expect("delete");
        assert_eq!(
            index.pending_bytes().expect("bytes"),
            3_210 + 3 * staged_record_bytes("a.txt") + staged_record_bytes("gone.txt"),
            "the content of receiving, staged and partial writes, and a record for each of \
             their paths, the deletion's too"
        );
        assert_eq!(index.pending_sessions_of("r").expect("count"), 3);
        assert_eq!(index.pending_sessions_of("other").expect("count"), 0);
    }

    #[test]
    fn a_re_sent_path_replaces_its_row_and_hands_back_the_old_one() {
        let index = Index::open_in_memory().expect("open");
        index.create_session("s1", "r").expect("create");
        let first = staged("s1", "docs", "a.txt", 10, false);
        assert_eq!(index.replace_staged_file(&first).expect("first"), None);
        let second = StagedFile {
            staged_name: Some("file-000002".into()),
            ..staged("s1", "docs", "a.txt", 20, true)
        };
        assert_eq!(
            index.replace_staged_file(&second).expect("second"),
            Some(first)
        );
        assert_eq!(index.staged_files("s1").expect("files"), [second]);
        let s = index.session("s1").expect("session").expect("exists");
        assert_eq!((s.files, s.bytes), (1, 20));
    }

    #[test]
    fn expiry_takes_untouched_staged_and_undone_sessions_older_than_the_age() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = tmp.path().join("sync.db");
        let index = Index::open(&db).expect("open");
        let cases = [
            (1, 31, SessionStatus::Staged, true),
            (2, 29, SessionStatus::Staged, false),
            (3, 40, SessionStatus::Partial, false),
            (4, 40, SessionStatus::Applied, false),
            (5, 40, SessionStatus::Undone, true),
            (6, 40, SessionStatus::Receiving, false),
            (7, 40, SessionStatus::Undone, false),
        ];
        for (n, days, status, _) in cases {
            session(&index, &db, &uuid(n), "r", days, status, u64::from(n));
        }
        // Pushed long ago, applied yesterday: its backups are young.
        set_applied(&index, &uuid(4), Some(NOW - DAY));
        // Pushed long ago, applied (then undone) yesterday: aged from that apply. The other
        // undone one was applied 35 days ago.
        set_applied(&index, &uuid(7), Some(NOW - DAY));
        set_applied(&index, &uuid(5), Some(NOW - 35 * DAY));
        let expiry =
            expire(&index, &db, Duration::from_secs(30 * DAY as u64), NOW, free).expect("expire");
        let expired: Vec<&str> = expiry.expired.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(expired, [uuid(1), uuid(5)]);
        assert!(expiry.settled.is_empty(), "{:?}", expiry.settled);
        assert!(expiry.failures.is_empty(), "{:?}", expiry.failures);
        let kept: Vec<&str> = expiry.kept_partial.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(
            kept,
            [uuid(3)],
            "the partly applied session is only reported"
        );
        for (n, _, status, gone) in cases {
            let id = uuid(n);
            let now = index.session(&id).expect("session").expect("kept").status;
            if gone {
                assert_eq!(now, SessionStatus::Expired, "{id}");
                assert!(!session_dir(&db, &id).exists(), "{id}: files left");
            } else {
                assert_eq!(now, status, "{id} changed");
                assert!(session_dir(&db, &id).exists(), "{id}: files removed");
            }
        }
        let again =
            expire(&index, &db, Duration::from_secs(30 * DAY as u64), NOW, free).expect("again");
        assert!(again.expired.is_empty(), "expiry is not repeated");
    }

    /// Sets when session `id`'s apply ended (`None`: never recorded).
    fn set_applied(index: &Index, id: &str, at: Option<i64>) {
        index
            .conn()
            .execute(
                "UPDATE upstream_sessions SET applied_unix = ?2 WHERE id = ?1",
                (id, at),
            )
            .expect("applied_unix");
    }

    #[test]
    fn expiry_settles_applied_sessions_whose_apply_ended_longer_ago_than_the_age() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = tmp.path().join("sync.db");
        let index = Index::open(&db).expect("open");
        let max_age = Duration::from_secs(30 * DAY as u64);
        // (n, days since created and applied, status, backups reclaimed)
        let cases = [
            (1, 31, SessionStatus::Applied, true),
            (2, 40, SessionStatus::Applied, false), // applied yesterday (below)
            (3, 40, SessionStatus::Applied, false), // its lock is held (below)
            (4, 50, SessionStatus::Applied, true),  // no apply time: counted from creation
            (5, 40, SessionStatus::Partial, false),
            (6, 29, SessionStatus::Applied, false),
        ];
        for (n, days, status, _) in cases {
            session(&index, &db, &uuid(n), "r", days, status, u64::from(n));
            // The backup of what its apply replaced on E.
            std::fs::write(session_dir(&db, &uuid(n)).join("backup-1"), b"E's original")
                .expect("backup");
        }
        set_applied(&index, &uuid(2), Some(NOW - DAY));
        set_applied(&index, &uuid(4), None);
        let held = session_dir(&db, &uuid(3));
        let expiry = expire(&index, &db, max_age, NOW, |dir| {
            Ok((dir != held).then_some(()))
        })
        .expect("expire");
        let ids = |list: &[Session]| list.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
        assert_eq!(
            ids(&expiry.settled),
            [uuid(4), uuid(1)],
            "the oldest apply first"
        );
        assert!(expiry
            .settled
            .iter()
            .all(|s| s.status == SessionStatus::Settled));
        assert_eq!(ids(&expiry.busy), [uuid(3)], "the held session is busy");
        assert_eq!(ids(&expiry.kept_partial), [uuid(5)]);
        assert!(expiry.expired.is_empty() && expiry.failures.is_empty());
        for (n, _, status, reclaimed) in cases {
            let id = uuid(n);
            let now = index.session(&id).expect("session").expect("kept").status;
            let backup = session_dir(&db, &id).join("backup-1");
            if reclaimed {
                assert_eq!(now, SessionStatus::Settled, "{id}");
                assert!(!session_dir(&db, &id).exists(), "{id}: backups left");
            } else {
                assert_eq!(now, status, "{id} changed");
                assert!(backup.exists(), "{id}: its backup was removed");
            }
        }
        // Settled is an end: nothing to drop, the directory is litter if it comes back.
        let settled = index.session(&uuid(1)).expect("session").expect("kept");
        assert_eq!(
            drop_session(&index, &db, &settled)
                .expect("db")
                .expect_err("refused"),
            Undroppable::Ended(SessionStatus::Settled)
        );

        // Once the undo (or whatever held it) is over, the next run takes it.
        let expiry = expire(&index, &db, max_age, NOW, free).expect("once free");
        assert_eq!(ids(&expiry.settled), [uuid(3)]);
        assert!(!session_dir(&db, &uuid(3)).exists());
        assert_eq!(
            index
                .session(&uuid(2))
                .expect("session")
                .expect("kept")
                .status,
            SessionStatus::Applied,
            "an apply younger than the age keeps its backups"
        );
    }

    #[test]
    fn settle_takes_applied_and_partial_sessions_and_refuses_the_others() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = tmp.path().join("sync.db");
        let index = Index::open(&db).expect("open");
        let cases = [
            (1, SessionStatus::Applied, None),
            (2, SessionStatus::Partial, None),
            (
                3,
                SessionStatus::Staged,
                Some(Unsettleable::Status(SessionStatus::Staged)),
            ),
            (
                4,
                SessionStatus::Undone,
                Some(Unsettleable::Status(SessionStatus::Undone)),
            ),
            (
                5,
                SessionStatus::Receiving,
                Some(Unsettleable::Status(SessionStatus::Receiving)),
            ),
            (
                6,
                SessionStatus::Dropped,
                Some(Unsettleable::Status(SessionStatus::Dropped)),
            ),
            (
                7,
                SessionStatus::Partial,
                Some(Unsettleable::Interrupted(1)),
            ),
        ];
        for (n, status, _) in &cases {
            session(&index, &db, &uuid(*n), "r", 0, *status, 1);
        }
        // A killed apply left an intent record naming its backup.
        index
            .add_staged_file(&StagedFile {
                state: FileState::Applying,
                backup_name: Some("backup-1".into()),
                ..staged(&uuid(7), "docs", "b.txt", 2, false)
            })
            .expect("intent");
        for (n, status, refusal) in cases {
            let id = uuid(n);
            let s = index.session(&id).expect("session").expect("exists");
            let result = settle_session(&index, &db, &s).expect("db");
            let now = index.session(&id).expect("session").expect("exists");
            match refusal {
                None => {
                    result.expect("settleable").expect("removed");
                    assert_eq!(now.status, SessionStatus::Settled, "{id}");
                    assert!(!session_dir(&db, &id).exists(), "{id}: files left");
                    assert_eq!(
                        (now.files, now.bytes),
                        (s.files, s.bytes),
                        "{id}: the rows stay, for the record"
                    );
                }
                Some(why) => {
                    assert_eq!(result.expect_err("refused"), why, "{id}");
                    assert_eq!(now.status, status, "{id} changed");
                    assert!(session_dir(&db, &id).exists(), "{id}: files removed");
                }
            }
        }
        // Settled sessions are neither pending nor live: their directories are litter.
        assert_eq!(
            index.pending_sessions_of("r").expect("count"),
            3,
            "staged, receiving and the interrupted partial one"
        );
        std::fs::create_dir_all(session_dir(&db, &uuid(1))).expect("left behind");
        assert!(leftover_dirs(&index, &db)
            .expect("leftovers")
            .contains(&session_dir(&db, &uuid(1))));
    }

    /// A lock that is always free: the guard is nothing.
    fn free(_: &Path) -> std::io::Result<Option<()>> {
        Ok(Some(()))
    }

    #[test]
    fn expiry_leaves_a_session_whose_lock_is_held_and_takes_it_once_free() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = tmp.path().join("sync.db");
        let index = Index::open(&db).expect("open");
        for n in 1..=3 {
            session(
                &index,
                &db,
                &uuid(n),
                "r",
                40,
                SessionStatus::Staged,
                u64::from(n),
            );
        }
        let max_age = Duration::from_secs(30 * DAY as u64);
        // Session 1 is held (an apply at its prompt), session 2's lock cannot be taken.
        let (held, broken) = (session_dir(&db, &uuid(1)), session_dir(&db, &uuid(2)));
        let mut asked = Vec::new();
        let expiry = expire(&index, &db, max_age, NOW, |dir| {
            asked.push(dir.to_path_buf());
            if dir == held {
                Ok(None)
            } else if dir == broken {
                Err(std::io::Error::other("the lock file is a symlink"))
            } else {
                // The guard is held while the directory goes: it is still there now.
                assert!(
                    dir.exists(),
                    "{} removed before it was locked",
                    dir.display()
                );
                Ok(Some(()))
            }
        })
        .expect("expire");
        assert_eq!(
            asked.len(),
            3,
            "every old session is locked first: {asked:?}"
        );
        let ids = |list: &[Session]| list.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&expiry.expired), [uuid(3)]);
        assert_eq!(
            ids(&expiry.busy),
            [uuid(1)],
            "the held session is reported busy"
        );
        let failed: Vec<&PathBuf> = expiry.failures.iter().map(|(d, _)| d).collect();
        assert_eq!(failed, [&broken]);
        for n in [1, 2] {
            let id = uuid(n);
            let now = index.session(&id).expect("session").expect("kept").status;
            assert_eq!(now, SessionStatus::Staged, "{id}");
            assert!(
                session_dir(&db, &id).join(format!("{n}.new")).exists(),
                "{id}: its files were removed"
            );
        }
        assert!(!session_dir(&db, &uuid(3)).exists());

        let expiry = expire(&index, &db, max_age, NOW, free).expect("once free");
        assert_eq!(ids(&expiry.expired), [uuid(2), uuid(1)]);
        assert!(expiry.busy.is_empty() && expiry.failures.is_empty());
        for n in [1, 2] {
            assert!(!session_dir(&db, &uuid(n)).exists());
        }
    }

    /// Rows in `upstream_files`, for session `id` or (`None`) in all.
    fn file_rows(index: &Index, id: Option<&str>) -> i64 {
        index
            .conn()
            .query_row(
                "SELECT count(*) FROM upstream_files WHERE ?1 IS NULL OR session_id = ?1",
                [id],
                |row| row.get(0),
            )
            .expect("count")
    }

    #[test]
    fn an_aborted_session_leaves_no_files_rows_and_only_the_newest_keep_their_row() {
        let index = Index::open_in_memory().expect("open");
        // One round of a hostile R: a session, hundreds of deletes of long paths, no finalize.
        let round = |n: u8, created: i64| {
            let id = uuid(n);
            index.create_session(&id, "hostile-r").expect("create");
            index
                .conn()
                .execute(
                    "UPDATE upstream_sessions SET created_unix = ?2 WHERE id = ?1",
                    (&id, created),
                )
                .expect("created");
            for k in 0..300 {
                let path = format!("{}/{k}", "x".repeat(200));
                index
                    .add_staged_file(&deleted(&id, "docs", &path))
                    .expect("delete");
            }
            id
        };
        session_rows_stay_bounded(&index, &round);

        // A session no longer receiving is not aborted, and keeps its files.
        let staged = round(200, NOW);
        index
            .set_session_status(&staged, SessionStatus::Staged)
            .expect("staged");
        assert!(!index.abort_session(&staged).expect("abort"));
        assert_eq!(file_rows(&index, Some(&staged)), 300);
        assert!(!index.abort_session("no-such-session").expect("abort"));

        // Sessions an older version aborted kept every row: forgotten in one go.
        let old: Vec<String> = (201..=203).map(|n| round(n, NOW + 1_000)).collect();
        for id in &old {
            index
                .set_session_status(id, SessionStatus::Aborted)
                .expect("aborted the old way");
        }
        let (sessions, files) = index.forget_aborted().expect("forget");
        assert_eq!(
            (sessions, files),
            (3, 900),
            "the 3 newest stay, without files; as many older ones go with theirs"
        );
        assert_eq!(
            file_rows(&index, None),
            300,
            "only the staged session's files"
        );
        assert_eq!(index.forget_aborted().expect("again"), (0, 0));
    }

    /// Rounds of sessions aborted one after the other keep no file rows, and at most
    /// [`ABORTED_KEPT`] session rows: the newest.
    fn session_rows_stay_bounded(index: &Index, round: &dyn Fn(u8, i64) -> String) {
        let rounds = u8::try_from(ABORTED_KEPT).expect("small") + 5;
        let mut ids = Vec::new();
        for n in 1..=rounds {
            let id = round(n, NOW + i64::from(n));
            assert!(index.abort_session(&id).expect("abort"), "{id}");
            let s = index.session(&id).expect("session").expect("kept");
            assert_eq!((s.status, s.files), (SessionStatus::Aborted, 0), "{id}");
            ids.push(id);
        }
        assert_eq!(file_rows(index, None), 0, "rows of aborted sessions remain");
        let aborted = index
            .sessions_with_status(SessionStatus::Aborted)
            .expect("aborted");
        let newest: Vec<&String> = ids.iter().rev().take(aborted.len()).collect();
        assert_eq!(aborted.len() as u64, ABORTED_KEPT);
        assert_eq!(
            aborted.iter().map(|s| &s.id).collect::<Vec<_>>(),
            newest,
            "the newest are kept"
        );
    }

    #[test]
    fn drop_takes_staged_and_undone_sessions_and_refuses_the_others() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = tmp.path().join("sync.db");
        let index = Index::open(&db).expect("open");
        let cases = [
            (1, SessionStatus::Staged, None),
            (2, SessionStatus::Undone, None),
            (3, SessionStatus::Receiving, Some(Undroppable::Receiving)),
            (
                4,
                SessionStatus::Partial,
                Some(Undroppable::Applied(SessionStatus::Partial)),
            ),
            (
                5,
                SessionStatus::Applied,
                Some(Undroppable::Applied(SessionStatus::Applied)),
            ),
            (
                6,
                SessionStatus::Aborted,
                Some(Undroppable::Ended(SessionStatus::Aborted)),
            ),
        ];
        for (n, status, _) in &cases {
            session(&index, &db, &uuid(*n), "r", 0, *status, 1);
        }
        for (n, status, refusal) in cases {
            let id = uuid(n);
            let s = index.session(&id).expect("session").expect("exists");
            let result = drop_session(&index, &db, &s).expect("db");
            let now = index.session(&id).expect("session").expect("exists").status;
            match refusal {
                None => {
                    result.expect("droppable").expect("removed");
                    assert_eq!(now, SessionStatus::Dropped, "{id}");
                    assert!(!session_dir(&db, &id).exists(), "{id}: files left");
                }
                Some(why) => {
                    assert_eq!(result.expect_err("refused"), why, "{id}");
                    assert_eq!(now, status, "{id} changed");
                    assert!(session_dir(&db, &id).exists(), "{id}: files removed");
                }
            }
        }
        let files = index.staged_files(&uuid(1)).expect("files");
        assert_eq!(
            files[0].state,
            FileState::Staged,
            "the rows stay, for the record"
        );
    }

    #[test]
    fn leftover_dirs_are_session_shaped_and_owned_by_no_live_session() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = tmp.path().join("sync.db");
        let index = Index::open(&db).expect("open");
        assert!(leftover_dirs(&index, &db).expect("none").is_empty());
        session(&index, &db, &uuid(1), "r", 0, SessionStatus::Staged, 1);
        session(&index, &db, &uuid(2), "r", 0, SessionStatus::Aborted, 1);
        session(&index, &db, &uuid(3), "r", 0, SessionStatus::Applied, 1);
        let root = staging_root(&db);
        std::fs::create_dir_all(root.join(uuid(4))).expect("orphan");
        std::fs::create_dir_all(root.join("not-a-session")).expect("other dir");
        std::fs::write(root.join(uuid(5)), b"a file").expect("a file");
        let found = leftover_dirs(&index, &db).expect("found");
        assert_eq!(found, [root.join(uuid(2)), root.join(uuid(4))]);
        assert!(looks_like_session_id(
            "9d2e4f6a-1b3c-4d5e-8f70-a1b2c3d4e5f6"
        ));
        for bad in [
            "",
            "9d2e4f6a-1b3c-4d5e-8f70",
            "9d2e4f6a-1b3c-4d5e-8f70-a1b2c3d4e5fg",
            "x",
        ] {
            assert!(!looks_like_session_id(bad), "{bad}");
        }
    }

    /// Deletes of long paths a hostile R adds to each of its sessions, besides the one write
    /// [`session`] stages: every session here has [`ROWS`] file rows.
    const JUNK: u64 = 40;
    const ROWS: u64 = JUNK + 1;

    /// As [`session`] (created `secs` seconds before NOW, and applied as long ago when `status`
    /// is applied or partial), holding [`ROWS`] files.
    fn junk_session(index: &Index, db: &Path, n: u8, secs: i64, status: SessionStatus) -> String {
        let id = uuid(n);
        session(index, db, &id, "hostile-r", 0, status, u64::from(n));
        index
            .conn()
            .execute(
                "UPDATE upstream_sessions SET created_unix = ?2,
                     applied_unix = CASE WHEN applied_unix IS NULL THEN NULL ELSE ?2 END
                 WHERE id = ?1",
                (&id, NOW - secs),
            )
            .expect("created");
        for k in 0..JUNK {
            let path = format!("{}/{n}-{k}", "x".repeat(300));
            index
                .add_staged_file(&deleted(&id, "docs", &path))
                .expect("delete");
        }
        id
    }

    /// Rows in `upstream_files` of the sessions now in `status`.
    fn file_rows_of(index: &Index, status: SessionStatus) -> u64 {
        index
            .conn()
            .query_row(
                "SELECT count(*) FROM upstream_files AS f
                 JOIN upstream_sessions AS s ON s.id = f.session_id WHERE s.status = ?1",
                [status],
                |row| row.get::<_, i64>(0),
            )
            .map(u64_from_sql)
            .expect("count")
    }

    /// Sessions of every live status, with their files: nothing that ends others may touch
    /// them (undo needs an applied session's rows; the others still wait for E's user).
    const LIVE: [(u8, SessionStatus); 5] = [
        (200, SessionStatus::Receiving),
        (201, SessionStatus::Staged),
        (202, SessionStatus::Partial),
        (203, SessionStatus::Applied),
        (204, SessionStatus::Undone),
    ];

    fn live_sessions(index: &Index, db: &Path) {
        for (n, status) in LIVE {
            junk_session(index, db, n, 0, status);
        }
    }

    fn assert_live_untouched(index: &Index) {
        for (n, status) in LIVE {
            let s = index.session(&uuid(n)).expect("session").expect("kept");
            assert_eq!((s.status, s.files), (status, ROWS), "{}", uuid(n));
        }
    }

    /// Of `ids`, ended in this order, the last [`ENDED_KEPT`] keep every row, and the others
    /// are gone, rows and all.
    fn only_the_newest_kept(index: &Index, ids: &[String], status: SessionStatus) {
        let kept = usize::try_from(ENDED_KEPT).expect("small");
        let (forgotten, newest) = ids.split_at(ids.len() - kept);
        for id in newest {
            let s = index.session(id).expect("session").expect("kept");
            assert_eq!((s.status, s.files), (status, ROWS), "{id}");
            assert_eq!(index.staged_files(id).expect("files").len() as u64, ROWS);
        }
        for id in forgotten {
            assert!(
                index.session(id).expect("session").is_none(),
                "{status} {id} is older than the newest {kept} and still there"
            );
            assert!(index.staged_files(id).expect("files").is_empty(), "{id}");
        }
    }

    #[test]
    fn dropped_expired_and_settled_sessions_keep_their_files_only_among_the_newest_of_each() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = tmp.path().join("sync.db");
        let index = Index::open(&db).expect("open");
        live_sessions(&index, &db);
        let rounds = u8::try_from(ENDED_KEPT).expect("small") + 3;
        let bound = ENDED_KEPT * ROWS;

        // A hostile R pushes junk again and again; E's user drops each push.
        let mut dropped = Vec::new();
        for r in 0..rounds {
            let id = junk_session(&index, &db, 1 + r, 0, SessionStatus::Staged);
            let s = index.session(&id).expect("session").expect("exists");
            drop_session(&index, &db, &s)
                .expect("db")
                .expect("droppable")
                .expect("removed");
            dropped.push(id);
            let rows = file_rows_of(&index, SessionStatus::Dropped);
            assert!(
                rows <= bound,
                "after {} drops, {rows} rows of dropped sessions are left (at most {bound})",
                r + 1
            );
        }
        only_the_newest_kept(&index, &dropped, SessionStatus::Dropped);

        // E's user gives the undo of applied pushes up, one after the other.
        let mut settled = Vec::new();
        for r in 0..rounds {
            let id = junk_session(&index, &db, 50 + r, 0, SessionStatus::Applied);
            let s = index.session(&id).expect("session").expect("exists");
            settle_session(&index, &db, &s)
                .expect("db")
                .expect("settleable")
                .expect("removed");
            settled.push(id);
            let rows = file_rows_of(&index, SessionStatus::Settled);
            assert!(
                rows <= bound,
                "after {} settles, {rows} rows of settled sessions are left (at most {bound})",
                r + 1
            );
        }
        only_the_newest_kept(&index, &settled, SessionStatus::Settled);

        // Pushes left staged, and applies, older than the age: one expiry ends them all,
        // oldest first.
        let mut expired = Vec::new();
        let mut old_applies = Vec::new();
        for r in 0..rounds {
            let age = 40 * DAY - i64::from(r);
            expired.push(junk_session(
                &index,
                &db,
                100 + r,
                age,
                SessionStatus::Staged,
            ));
            old_applies.push(junk_session(
                &index,
                &db,
                150 + r,
                age,
                SessionStatus::Applied,
            ));
        }
        let expiry =
            expire(&index, &db, Duration::from_secs(30 * DAY as u64), NOW, free).expect("expire");
        assert_eq!(
            (expiry.expired.len(), expiry.settled.len()),
            (expired.len(), old_applies.len()),
            "every one is reported, forgotten or not"
        );
        assert!(expiry.failures.is_empty() && expiry.busy.is_empty());
        for status in [SessionStatus::Expired, SessionStatus::Settled] {
            let rows = file_rows_of(&index, status);
            assert!(rows <= bound, "{rows} rows of {status} sessions left");
        }
        only_the_newest_kept(&index, &expired, SessionStatus::Expired);
        // The settles by expiry came after those by drop: they are the newest settled.
        let all_settled = [settled, old_applies].concat();
        only_the_newest_kept(&index, &all_settled, SessionStatus::Settled);
        assert_live_untouched(&index);

        // A directory left for a forgotten session is litter; a live one's is not.
        std::fs::create_dir_all(session_dir(&db, &dropped[0])).expect("left behind");
        let leftovers = leftover_dirs(&index, &db).expect("leftovers");
        assert!(leftovers.contains(&session_dir(&db, &dropped[0])));
        for (n, _) in LIVE {
            assert!(!leftovers.contains(&session_dir(&db, &uuid(n))));
        }
    }

    #[test]
    fn forgetting_ended_sessions_deletes_what_older_versions_kept_and_keeps_the_newest() {
        let tmp = tempfile::tempdir().expect("tmp");
        let db = tmp.path().join("sync.db");
        let index = Index::open(&db).expect("open");
        live_sessions(&index, &db);
        let rounds = u8::try_from(ENDED_KEPT).expect("small") + 3;
        let ended = [
            (0, SessionStatus::Dropped, SessionStatus::Staged),
            (50, SessionStatus::Expired, SessionStatus::Staged),
            (100, SessionStatus::Settled, SessionStatus::Applied),
        ];
        // An older version ended them (in order of creation), keeping every row.
        let mut ids = Vec::new();
        for (base, end, from) in ended {
            let list: Vec<String> = (0..rounds)
                .map(|r| junk_session(&index, &db, base + r, i64::from(rounds - r), from))
                .collect();
            for id in &list {
                index
                    .conn()
                    .execute(
                        "UPDATE upstream_sessions SET status = ?2 WHERE id = ?1",
                        (id, end),
                    )
                    .expect("ended the old way");
                remove_dir(&session_dir(&db, id)).expect("its files went");
            }
            ids.push((end, list));
        }
        // And an aborted one: forget_aborted's, not this.
        let aborted = junk_session(&index, &db, 250, 0, SessionStatus::Receiving);
        index
            .conn()
            .execute(
                "UPDATE upstream_sessions SET status = 'aborted' WHERE id = ?1",
                [&aborted],
            )
            .expect("aborted the old way");

        let (sessions, files) = index.forget_ended().expect("forget");
        assert_eq!(
            (sessions, files),
            (3 * 3, 3 * 3 * ROWS),
            "three sessions of each ended status, older than the newest kept, go with their files"
        );
        for (end, list) in &ids {
            only_the_newest_kept(&index, list, *end);
        }
        assert_eq!(file_rows(&index, Some(&aborted)), ROWS as i64);
        assert_live_untouched(&index);
        assert_eq!(index.forget_ended().expect("again"), (0, 0));

        // One more drop by this version: the newest, kept; the oldest the older version kept
        // goes.
        let (_, old_dropped) = &ids[0];
        let id = junk_session(&index, &db, 251, 100 * DAY, SessionStatus::Staged);
        let s = index.session(&id).expect("session").expect("exists");
        drop_session(&index, &db, &s)
            .expect("db")
            .expect("droppable")
            .expect("removed");
        let now_dropped = [old_dropped.as_slice(), &[id]].concat();
        only_the_newest_kept(&index, &now_dropped, SessionStatus::Dropped);
    }
}
