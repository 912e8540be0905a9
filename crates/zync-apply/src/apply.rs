//! `zync-apply apply`: puts a staged session's files on E. Each file's conflict is decided
//! again against E's current content and mode (E may have changed since staging); a mode E's
//! user set since R's base stays when R did not change the mode; a conflicting file
//! only replaces E's version with the user's say-so (an interactive choice made after seeing
//! the diff, or `--force`), and whatever is replaced is backed up first (invariant
//! 5, docs/ARCHITECTURE.md). Each change is recorded in the daemon's index at once so it flows to R.
//!
//! A run may be killed at any moment, so each file goes through durable steps in this order:
//! back up E's file (fsynced), record the intent ([`FileState::Applying`] naming the backup,
//! committed), replace E's file atomically, record it in the index, mark it Applied. The next
//! `apply` or `undo` resolves a file left in the intent state (`recover.rs`).

use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use zync_db::{is_conflict, Action, FileState, Index, SessionStatus, StagedFile};
use zync_fs::RelPath;

use crate::crashpoint::{self, Step};
use crate::created_dirs;
use crate::fileops::{self, encode_copy};
use crate::lock::SessionLock;
use crate::outcome::Outcome;
use crate::probe::{self, Current};
use crate::prompt::{Choice, Prompter, Question};
use crate::recover;
use crate::roots::Roots;
use crate::session;

/// How `apply` runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Conflicting files may replace E's version.
    pub force: bool,
    /// Do not ask about each file.
    pub non_interactive: bool,
}

/// What an apply did, by `dir/path`.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Files now on E with R's content (or deleted on E).
    pub applied: Vec<String>,
    /// Files the user chose to leave alone.
    pub skipped: Vec<String>,
    /// Files whose R version went beside E's as a conflict copy: (file, copy).
    pub kept_both: Vec<(String, String)>,
    /// Conflicting files left staged by a non-interactive run without `--force`, with why
    /// their mode conflicts when it does.
    pub conflicts_left: Vec<(String, Option<String>)>,
    /// Control files (a `.zyncignore`, anything in `.git`) left staged by a non-interactive
    /// run without `--force`, with the reason.
    pub control_left: Vec<(String, &'static str)>,
    /// Files whose content the review cannot show (binary, or too large to diff) left staged
    /// by a non-interactive run without `--force`: (file, why, where R's content is staged).
    pub unshown_left: Vec<(String, &'static str, String)>,
    /// Files left staged because the user quit.
    pub left_staged: Vec<String>,
    /// Files that could not be applied (they stay staged), with the reason.
    pub failed: Vec<(String, String)>,
    /// Why the run stopped before the end: a root's path was found leading to another
    /// directory than the one the daemon serves (the files not reached are in `left_staged`).
    pub stopped: Option<String>,
}

/// Applies session `id` (or unique prefix) from the database `db`.
///
/// # Errors
///
/// An unknown or unappliable session, no usable directory mapping, a prompt needed while
/// `prompter` cannot ask, a database failure, or files that could not be applied (after the
/// others were).
pub fn apply(
    db: &Path,
    id: &str,
    dirs: &[String],
    opts: ApplyOptions,
    prompter: &mut dyn Prompter,
    out: &mut dyn Write,
) -> anyhow::Result<Outcome> {
    let report = apply_report(db, id, dirs, opts, prompter, out)?;
    if let Some(why) = report.stopped {
        bail!("{why}");
    }
    if !report.failed.is_empty() {
        let lines: Vec<String> = report
            .failed
            .iter()
            // R chose the paths inside these messages: never a line of their own.
            .map(|(f, e)| format!("  {}", zync_cli::visible::line(&format!("{f}: {e}"))))
            .collect();
        bail!(
            "{} could not be applied and stay staged:\n{}",
            session::count(report.failed.len() as u64, "file"),
            lines.join("\n")
        );
    }
    if !report.conflicts_left.is_empty()
        || !report.control_left.is_empty()
        || !report.unshown_left.is_empty()
    {
        return Ok(Outcome::ConflictsLeft);
    }
    Ok(Outcome::Done)
}

/// Like [`apply`], returning what happened to each file instead of judging it.
///
/// # Errors
///
/// As [`apply`], except for files that could not be applied: they are in
/// [`ApplyReport::failed`].
pub fn apply_report(
    db: &Path,
    id: &str,
    dirs: &[String],
    opts: ApplyOptions,
    prompter: &mut dyn Prompter,
    out: &mut dyn Write,
) -> anyhow::Result<ApplyReport> {
    let mut index = session::open_index(db)?;
    let session = session::find(&index, id)?;
    check_appliable(&session)?;
    // One run at a time on a session; then read it again, as the run before may have changed it.
    let _lock = SessionLock::acquire(db, &session.id, "apply")?;
    let session = session::find(&index, &session.id)?;
    check_appliable(&session)?;
    // A run killed in the middle left intent records: finish or roll back each first.
    recover::resolve_session(&mut index, db, &session.id, dirs, out)?;
    let files: Vec<StagedFile> = index
        .staged_files(&session.id)
        .context("cannot read the session's files")?
        .into_iter()
        .filter(|f| f.state == FileState::Staged)
        .collect();
    let mut report = ApplyReport::default();
    if files.is_empty() {
        writeln!(out, "session {}: nothing left to apply", session.id)?;
        index.set_session_status(&session.id, SessionStatus::Applied)?;
        return Ok(report);
    }
    let roots = Roots::resolve(dirs, &index)?;
    // Every directory the session writes into is the one the daemon serves, or nothing is
    // written at all (invariant 3).
    roots.check(files.iter().map(|f| f.dir.as_str()))?;
    // Refuse before touching anything rather than hang on a prompt nobody can answer.
    if !opts.non_interactive && !prompter.is_interactive() {
        bail!(
            "apply asks about each file, but stdin is not a terminal; pass --non-interactive to \
             apply the files without conflicts (conflicts stay staged), and add --force to \
             apply conflicting files too"
        );
    }
    let session_dir = zync_db::session_dir(db, &session.id);
    let mut run = Run {
        index: &mut index,
        session_dir: &session_dir,
        opts,
        auto: false,
        quit: false,
    };
    // A bar would fight the prompts: only runs that ask nothing show progress.
    let progress = if opts.non_interactive {
        zync_cli::progress::Progress::start_if_large(
            "applied",
            files.len() as u64,
            files.iter().map(|f| f.size).sum(),
        )
    } else {
        zync_cli::progress::Progress::hidden()
    };
    for file in &files {
        let name = session::file_name(file);
        if run.quit {
            report.left_staged.push(name);
            continue;
        }
        if let Err(e) = run.one(file, &roots, prompter, &mut report) {
            // Database failures leave E and the index out of step: stop at once.
            if e.downcast_ref::<zync_db::DbError>().is_some() || crashpoint::is_crash(&e) {
                return Err(e.context(format!("while applying {name}")));
            }
            // A root swapped for a symlink meanwhile: nothing more is written anywhere; the
            // rest stays staged for a run once it is back.
            if let Some(why) = roots.replaced_during_run(&e) {
                tracing::warn!("{name}: {e:#}");
                report.left_staged.push(name);
                report.stopped = Some(format!("{why}; the files not applied stay staged"));
                run.quit = true;
                continue;
            }
            tracing::warn!("{name}: {e:#}");
            report.failed.push((name, format!("{e:#}")));
        }
        progress.files(1);
        progress.bytes(file.size);
    }
    progress.finish();
    let left = index
        .staged_files(&session.id)?
        .iter()
        .filter(|f| matches!(f.state, FileState::Staged | FileState::Applying))
        .count();
    let status = if left == 0 {
        SessionStatus::Applied
    } else {
        SessionStatus::Partial
    };
    index.set_session_status(&session.id, status)?;
    summarize(out, &session.id, status, &report)?;
    Ok(report)
}

/// Refuses a session that is not waiting to be applied.
fn check_appliable(session: &zync_db::Session) -> anyhow::Result<()> {
    match session.status {
        SessionStatus::Staged | SessionStatus::Partial => Ok(()),
        SessionStatus::Receiving => bail!(
            "session {} is still being received from {}; wait for zync-client to finish",
            session.id,
            zync_cli::visible::line(&session.client_id)
        ),
        other => bail!(
            "session {} is {}; there is nothing to apply (see `zync-apply list`)",
            session.id,
            other.as_str()
        ),
    }
}

/// The state of one apply run.
struct Run<'a> {
    index: &'a mut Index,
    session_dir: &'a Path,
    opts: ApplyOptions,
    /// The user chose "apply all remaining non-conflicting files".
    auto: bool,
    /// The user chose to quit.
    quit: bool,
}

impl Run<'_> {
    /// Marks the session `partial` before the first intent of a run that changes E (a no-op
    /// after it). A `staged` session's directory is removed whole by `drop` and by expiry, as
    /// nothing of it was applied; a run killed before its end, which sets the status, would
    /// otherwise leave the backups `undo` needs in a session that says `staged`.
    fn changing_e(&self, file: &StagedFile) -> anyhow::Result<()> {
        self.index.move_session(
            &file.session_id,
            &[SessionStatus::Staged],
            SessionStatus::Partial,
        )?;
        Ok(())
    }

    fn one(
        &mut self,
        file: &StagedFile,
        roots: &Roots,
        prompter: &mut dyn Prompter,
        report: &mut ApplyReport,
    ) -> anyhow::Result<()> {
        let name = session::file_name(file);
        let root = roots.get(&file.dir)?;
        let rel = RelPath::parse(&file.path)?;
        let current = probe::probe(root, &rel)?;
        let question = Question {
            file,
            conflict: is_conflict(
                file.action,
                file.base_sha256.as_deref(),
                file.sha256.as_deref(),
                current.on_e(),
            ),
            mode_conflict: probe::mode_conflict(file, &current),
            mode_change: probe::mode_change(file, &current),
            control: zync_fs::control_reason(&rel),
            unshown: probe::unshown(file, &current, self.session_dir).map(probe::Unshown::why),
        };
        let choice = if self.opts.non_interactive {
            // A conflict, a control file or content the review cannot show needs a yes;
            // without a person, --force is it.
            if question.conflicts() && !self.opts.force {
                report
                    .conflicts_left
                    .push((name, question.mode_conflict.clone()));
                return Ok(());
            }
            if let Some(why) = question.control.filter(|_| !self.opts.force) {
                report.control_left.push((name, why));
                return Ok(());
            }
            if let Some(why) = question.unshown.filter(|_| !self.opts.force) {
                report
                    .unshown_left
                    .push((name, why, self.staged_copy(file)));
                return Ok(());
            }
            Choice::Apply
        } else if self.auto
            && !question.conflicts()
            && question.control.is_none()
            && question.unshown.is_none()
        {
            Choice::Apply
        } else {
            self.ask(&question, &current, root, &rel, prompter)?
        };
        match choice {
            Choice::Apply | Choice::ApplyAllNonConflicting => {
                self.auto |= choice == Choice::ApplyAllNonConflicting;
                self.apply_file(file, root, &rel, &current)?;
                report.applied.push(name);
            }
            Choice::KeepBoth => {
                let copy = self.keep_both(file, root, &rel)?;
                report.kept_both.push((name, copy));
            }
            Choice::Skip => {
                self.index.set_file_state(
                    &file.session_id,
                    &file.dir,
                    &file.path,
                    FileState::Skipped,
                    None,
                    current.is_file(),
                )?;
                report.skipped.push(name);
            }
            Choice::Quit => {
                self.quit = true;
                report.left_staged.push(name);
            }
            Choice::ShowDiff => unreachable!("ask() shows diffs itself"),
        }
        Ok(())
    }

    fn ask(
        &self,
        question: &Question<'_>,
        current: &Current,
        root: &Path,
        rel: &RelPath,
        prompter: &mut dyn Prompter,
    ) -> anyhow::Result<Choice> {
        let (file, conflict) = (question.file, question.conflicts());
        // A conflicting file is shown with its diff before the question, so choosing "apply"
        // here is the user's say-so (invariant 5); E's version is backed up either way.
        let mut options = vec![Choice::Apply];
        if !conflict {
            options.push(Choice::ApplyAllNonConflicting);
        }
        // Keeping both only makes sense when there are two files to keep.
        if file.action == Action::Write && current.is_file() {
            options.push(Choice::KeepBoth);
        }
        options.extend([Choice::Skip, Choice::ShowDiff, Choice::Quit]);
        let diff = || probe::diff(root, rel, file, self.session_dir);
        let name = session::file_name(file);
        // What needs a yes is seen before the question, with the diff.
        let mut warnings = Vec::new();
        if question.conflict {
            warnings.push(format!(
                "{name} changed on E since R's version was based on it; applying replaces E's \
                 version (it is backed up for `zync-apply undo`)"
            ));
        }
        if let Some(why) = &question.mode_conflict {
            warnings.push(format!(
                "{name}'s mode conflicts: {why}; applying replaces E's mode with R's change \
                 (E's file is backed up for `zync-apply undo`)"
            ));
        }
        if let Some(why) = question.control {
            // This file changes E itself.
            warnings.push(format!(
                "{name} is a control file: {why}. Apply it only if you expected R to change it"
            ));
        }
        if let Some(why) = question.unshown {
            warnings.push(format!(
                "{name}'s content cannot be shown here ({why}). Apply it only if you know what \
                 R sent: its staged copy is {}",
                self.staged_copy(file)
            ));
        }
        if !warnings.is_empty() {
            prompter.show(&format!("{}:\n{}", warnings.join(".\n"), diff()));
        }
        loop {
            match prompter.choose(question, &options)? {
                Choice::ShowDiff => prompter.show(&diff()),
                other if options.contains(&other) => return Ok(other),
                other => bail!("{other:?} was not one of the choices offered"),
            }
        }
    }

    /// Puts R's version of `file` on E, backing up E's file first.
    fn apply_file(
        &mut self,
        file: &StagedFile,
        root: &Path,
        rel: &RelPath,
        current: &Current,
    ) -> anyhow::Result<()> {
        if let Current::Other(what) = current {
            bail!(
                "E has {what} at {}; zync-apply only replaces regular files: move it away and \
                 apply again",
                rel.to_path(root).display()
            );
        }
        match file.action {
            Action::Write => {
                let (staged, sha) = self.verified_staged(file)?;
                let backup = self.backup_if_file(root, rel, current)?;
                crashpoint::reached(Step::BackedUp)?;
                // The parents about to be made are recorded before they are, so undo (or the
                // roll-back of a killed run) can remove them again.
                created_dirs::record(self.index, file, &created_dirs::missing_parents(root, rel))?;
                self.mark(file, FileState::Applying, backup.as_ref(), current)?;
                crashpoint::reached(Step::Intent)?;
                // E's file must still be what was backed up when the rename happens: an edit
                // saved on E during a long copy is never overwritten unseen (invariant 5).
                let written = fileops::ensure_parents(root, rel).and_then(|new_dirs| {
                    fileops::replace_if_unchanged(
                        root,
                        rel,
                        &staged,
                        &sha,
                        // E's own mode when R did not change the mode since its base
                        // (invariant 5), else R's as E's user would have created the file:
                        // a 0777 file from R lands 0755 under umask 022.
                        probe::mode_on_e(file, current),
                        file.mtime_ns,
                        current,
                        || {
                            anyhow!(
                                "{rel} changed on E while the apply was copying R's version; \
                                 nothing was replaced: run apply again"
                            )
                        },
                    )?;
                    Ok(new_dirs)
                });
                let new_dirs = match written {
                    Ok(d) => d,
                    Err(e) => {
                        return Err(self.failed(file, root, rel, Some(&sha), backup.as_ref(), e))
                    }
                };
                // Only differs from the planned ones when E changed in between.
                created_dirs::record(self.index, file, &new_dirs)?;
                crashpoint::reached(Step::Written)?;
                fileops::index_file(self.index, &file.dir, root, rel, &sha, &new_dirs)?;
                crashpoint::reached(Step::Indexed)?;
                self.mark(file, FileState::Applied, backup.as_ref(), current)?;
                crashpoint::reached(Step::Marked)
            }
            Action::Delete => {
                let backup = self.backup_if_file(root, rel, current)?;
                crashpoint::reached(Step::BackedUp)?;
                // Only a file on E is touched; with nothing there only the index changes.
                if backup.is_some() {
                    self.mark(file, FileState::Applying, backup.as_ref(), current)?;
                    crashpoint::reached(Step::Intent)?;
                    let removed = fileops::remove_if_unchanged(root, rel, current, || {
                        anyhow!(
                            "{rel} changed on E while the apply was removing it; nothing was \
                             removed: run apply again"
                        )
                    });
                    if let Err(e) = removed {
                        return Err(self.failed(file, root, rel, None, backup.as_ref(), e));
                    }
                    crashpoint::reached(Step::Written)?;
                }
                fileops::index_removed(self.index, &file.dir, rel)?;
                crashpoint::reached(Step::Indexed)?;
                self.mark(file, FileState::Applied, backup.as_ref(), current)?;
                crashpoint::reached(Step::Marked)
            }
        }
    }

    /// A change that failed after its intent was recorded. If E's file was replaced (or
    /// removed) all the same, and only making that durable failed, the intent and the backup
    /// stay, so a rerun completes it and `undo` can restore E; otherwise it is abandoned.
    fn failed(
        &mut self,
        file: &StagedFile,
        root: &Path,
        rel: &RelPath,
        sha: Option<&str>,
        backup: Option<&fileops::Backup>,
        error: anyhow::Error,
    ) -> anyhow::Error {
        let replaced = match probe::probe(root, rel) {
            Ok(Current::File { sha256, .. }) => sha == Some(sha256.as_str()),
            Ok(Current::Missing) => sha.is_none(),
            _ => false,
        };
        if replaced {
            return error.context(format!(
                "{rel} was replaced on E but not confirmed durable; its backup is kept: run \
                 apply again to finish, or undo"
            ));
        }
        self.abandon(file, root, backup, error)
    }

    /// Takes back the intent of a change that failed before E's file was replaced: the file
    /// is staged again (the database first, so it never names a missing backup), then the
    /// backup goes. Returns `error`, or the database failure if un-recording failed.
    fn abandon(
        &mut self,
        file: &StagedFile,
        root: &Path,
        backup: Option<&fileops::Backup>,
        error: anyhow::Error,
    ) -> anyhow::Error {
        if let Err(db) = self.index.set_file_state(
            &file.session_id,
            &file.dir,
            &file.path,
            FileState::Staged,
            None,
            false,
        ) {
            return anyhow::Error::new(db).context(format!("after: {error:#}"));
        }
        if let Some(b) = backup {
            b.discard();
        }
        // Parents made for the file go again while empty; a failure here is not the news.
        if let Err(e) = created_dirs::roll_back(self.index, file, root) {
            tracing::warn!("{}: {e:#}", session::file_name(file));
        }
        error
    }

    /// Writes R's version beside E's file as a conflict copy; E's file is untouched.
    fn keep_both(
        &mut self,
        file: &StagedFile,
        root: &Path,
        rel: &RelPath,
    ) -> anyhow::Result<String> {
        let (staged, sha) = self.verified_staged(file)?;
        let stamp = chrono::Local::now().format("%Y%m%dT%H%M%S").to_string();
        let copy = zync_fs::free_conflict_name(root, rel, &stamp);
        let encoded = encode_copy(&copy);
        self.changing_e(file)?;
        // The intent names the copy, so a killed run's copy is found and recorded.
        self.index.set_file_state(
            &file.session_id,
            &file.dir,
            &file.path,
            FileState::Applying,
            Some(&encoded),
            true,
        )?;
        crashpoint::reached(Step::Intent)?;
        let written = fileops::ensure_parents(root, &copy).and_then(|new_dirs| {
            let mode = zync_fs::mask_mode(file.mode);
            fileops::write_new(root, &copy, &staged, &sha, mode, file.mtime_ns)?;
            Ok(new_dirs)
        });
        let new_dirs = match written {
            Ok(d) => d,
            Err(e) => return Err(self.abandon(file, root, None, e)),
        };
        crashpoint::reached(Step::Written)?;
        fileops::index_file(self.index, &file.dir, root, &copy, &sha, &new_dirs)?;
        crashpoint::reached(Step::Indexed)?;
        self.index.set_file_state(
            &file.session_id,
            &file.dir,
            &file.path,
            FileState::KeptBoth,
            Some(&encoded),
            true,
        )?;
        crashpoint::reached(Step::Marked)?;
        Ok(format!("{}/{copy}", file.dir))
    }

    /// Where R's content for `file` is staged on E, for a person to look at (with `xxd`, say)
    /// when the review cannot show it.
    fn staged_copy(&self, file: &StagedFile) -> String {
        match probe::session_file(self.session_dir, file.staged_name.as_deref(), "staged") {
            Ok(path) => zync_cli::visible::line(&path.display().to_string()).into_owned(),
            Err(e) => zync_cli::visible::line(&format!("unknown ({e:#})")).into_owned(),
        }
    }

    /// The staged file holding R's content, checked against its recorded sha256 before
    /// anything on E is touched.
    fn verified_staged(&self, file: &StagedFile) -> anyhow::Result<(std::path::PathBuf, String)> {
        let Some(sha) = file.sha256.clone() else {
            bail!("the database has no sha256 for this write; ask R to push it again");
        };
        let staged = probe::session_file(self.session_dir, file.staged_name.as_deref(), "staged")?;
        let (actual, _) = zync_fs::hash_file(&staged)
            .with_context(|| format!("cannot read the staged content {}", staged.display()))?;
        if !actual.eq_ignore_ascii_case(&sha) {
            bail!(
                "the staged content {} has sha256 {actual}, but R sent {sha}: the staging area is \
                 damaged, so this file was not applied; ask R to push it again",
                staged.display()
            );
        }
        Ok((staged, sha))
    }

    /// Backs up E's file when there is one, making sure it is still the content the conflict
    /// was decided on.
    fn backup_if_file(
        &self,
        root: &Path,
        rel: &RelPath,
        current: &Current,
    ) -> anyhow::Result<Option<fileops::Backup>> {
        let Current::File { sha256, .. } = current else {
            return Ok(None);
        };
        let backup = fileops::backup(root, rel, self.session_dir)?;
        if &backup.meta.sha256 != sha256 {
            backup.discard();
            bail!("E's file changed while it was being applied; run apply again");
        }
        Ok(Some(backup))
    }

    fn mark(
        &self,
        file: &StagedFile,
        state: FileState,
        backup: Option<&fileops::Backup>,
        current: &Current,
    ) -> anyhow::Result<()> {
        if state == FileState::Applying {
            self.changing_e(file)?;
        }
        // What the backup holds, in the database before the database names the backup: undo
        // trusts this record, not a file in the staging area (invariants 5 and 8).
        if let Some(backup) = backup {
            fileops::record_backup(self.index, file, backup)?;
        }
        self.index.set_file_state(
            &file.session_id,
            &file.dir,
            &file.path,
            state,
            backup.map(|b| b.name.as_str()),
            current.is_file(),
        )?;
        Ok(())
    }
}

fn summarize(
    out: &mut dyn Write,
    id: &str,
    status: SessionStatus,
    r: &ApplyReport,
) -> anyhow::Result<()> {
    for (f, copy) in &r.kept_both {
        // Named after R's path: made visible, as `f` is.
        let copy = zync_cli::visible::line(copy);
        writeln!(out, "kept both: {f} (R's version is {copy})")?;
    }
    for (f, mode) in &r.conflicts_left {
        match mode {
            Some(why) => writeln!(out, "conflict, left staged: {f} (mode: {why})")?,
            None => writeln!(out, "conflict, left staged: {f}")?,
        }
    }
    for (f, why) in &r.control_left {
        writeln!(out, "control file, left staged: {f} ({why})")?;
    }
    for (f, why, copy) in &r.unshown_left {
        writeln!(
            out,
            "not shown, left staged: {f} ({why}; R's content is staged in {copy})"
        )?;
    }
    for (f, e) in &r.failed {
        // One line: the error may quote R's path, which may hold a newline.
        writeln!(
            out,
            "failed, left staged: {f}: {}",
            zync_cli::visible::line(e)
        )?;
    }
    let left = r.conflicts_left.len()
        + r.control_left.len()
        + r.unshown_left.len()
        + r.left_staged.len()
        + r.failed.len();
    writeln!(
        out,
        "session {id}: {} applied, {} skipped, {} kept both, {} left staged; session is now {}",
        r.applied.len(),
        r.skipped.len(),
        r.kept_both.len(),
        left,
        status.as_str()
    )?;
    if !r.conflicts_left.is_empty() || !r.control_left.is_empty() {
        writeln!(
            out,
            "review them with `zync-apply show {id} --diff`, then apply interactively or with \
             --force"
        )?;
    }
    if !r.unshown_left.is_empty() {
        writeln!(
            out,
            "the review cannot show the content of files not shown: look at their staged copies \
             yourself, then run `zync-apply apply {id}` (it asks about each) or add --force"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fileops::decode_copy;
    use crate::prompt::ScriptedPrompter;
    use crate::testkit::{delete, exists, sha, write, Fixture};
    use std::os::unix::fs::symlink;

    const ID: &str = "0b6c1d2e-0000-4000-8000-000000000001";

    fn no_prompts() -> ScriptedPrompter {
        ScriptedPrompter::new([])
    }

    fn e_mode(fx: &Fixture, path: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(fx.root.join(path))
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }

    fn e_chmod(fx: &Fixture, path: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(fx.root.join(path), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
    }

    /// A mode is part of a file's version (invariant 5): E's user made a script executable
    /// after R synced it at 0644; R changed its content only. R's content lands and the
    /// script stays executable, without a conflict; where only R changed the mode, R's comes.
    #[test]
    fn a_mode_set_on_e_stays_when_r_changes_only_the_content() {
        let fx = Fixture::new();
        fx.e_write("deploy.sh", b"echo deploy\n");
        e_chmod(&fx, "deploy.sh", 0o644);
        fx.e_write("run.sh", b"echo run\n");
        e_chmod(&fx, "run.sh", 0o644);
        fx.stage(
            ID,
            &[
                write("deploy.sh", b"echo deploy -v\n", Some(b"echo deploy\n")).base_mode(0o644),
                write("run.sh", b"echo run\n", Some(b"echo run\n"))
                    .base_mode(0o644)
                    .mode(0o700),
            ],
        );
        e_chmod(&fx, "deploy.sh", 0o755);
        let (r, out) = fx.run(&["show", ID], &mut no_prompts());
        r.expect("show");
        let line = out.lines().find(|l| l.contains("deploy.sh")).unwrap_or("");
        assert!(
            line.contains("keeps E's mode 0755") && !line.contains("conflict"),
            "{out}"
        );
        let (r, out) = fx.run(&["apply", ID, "--non-interactive"], &mut no_prompts());
        assert_eq!(r.expect("apply"), Outcome::Done, "{out}");
        assert_eq!(
            fx.e_read("deploy.sh").as_deref(),
            Some(&b"echo deploy -v\n"[..])
        );
        assert_eq!(
            e_mode(&fx, "deploy.sh"),
            0o755,
            "E's chmod was undone: {out}"
        );
        assert_eq!(
            e_mode(&fx, "run.sh"),
            0o700,
            "R's chmod was not applied: {out}"
        );
    }

    /// E and R both changed the mode since R's base, differently (R's a chmod only): a
    /// conflict like one of content. Shown as such, left staged by a non-interactive run,
    /// asked about interactively, and applied with --force keeping a backup that undo
    /// restores E's mode from. A deletion of a file whose mode changed on E is one too.
    #[test]
    fn a_mode_changed_on_both_sides_needs_a_yes_and_is_backed_up() {
        let fx = Fixture::new();
        fx.e_write("key.sh", b"secret\n");
        fx.e_write("old.sh", b"old\n");
        e_chmod(&fx, "key.sh", 0o644);
        e_chmod(&fx, "old.sh", 0o644);
        fx.stage(
            ID,
            &[
                write("key.sh", b"secret\n", Some(b"secret\n"))
                    .base_mode(0o644)
                    .mode(0o600),
                delete("old.sh", Some(b"old\n")).base_mode(0o644),
            ],
        );
        e_chmod(&fx, "key.sh", 0o755);
        e_chmod(&fx, "old.sh", 0o755);

        let (r, out) = fx.run(&["show", ID], &mut no_prompts());
        r.expect("show");
        for (path, what) in [("key.sh", "R's is 0600"), ("old.sh", "R deletes the file")] {
            let line = out.lines().find(|l| l.contains(path)).unwrap_or("");
            assert!(
                line.contains("  conflict")
                    && line.contains(
                        "MODE CONFLICT: E changed the mode since R's base (0644 -> 0755)"
                    )
                    && line.contains(what),
                "{path}: {out}"
            );
        }
        let (r, out) = fx.run(&["show", ID, "--json"], &mut no_prompts());
        r.expect("show");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let key = &v["files"][0];
        assert_eq!(
            (&key["conflict"], &key["mode_decision"], &key["base_mode"]),
            (
                &serde_json::json!(true),
                &serde_json::json!("conflict"),
                &serde_json::json!("0644")
            ),
            "{out}"
        );

        let (r, out) = fx.run(&["apply", ID, "--non-interactive"], &mut no_prompts());
        assert_eq!(r.expect("apply"), Outcome::ConflictsLeft, "{out}");
        assert!(
            out.contains("conflict, left staged: docs/key.sh (mode: E changed the mode"),
            "{out}"
        );
        assert_eq!(e_mode(&fx, "key.sh"), 0o755);
        assert_eq!(fx.e_read("old.sh").as_deref(), Some(&b"old\n"[..]));

        let mut p = ScriptedPrompter::new([Choice::Skip, Choice::Skip]);
        let (r, _) = fx.run(&["apply", ID], &mut p);
        r.expect("apply");
        assert!(
            p.asked
                .iter()
                .all(|t| t.contains("[MODE CONFLICT: E changed the mode")),
            "{:?}",
            p.asked
        );
        assert!(
            p.shown
                .first()
                .is_some_and(|s| s.contains("mode conflicts")),
            "{:?}",
            p.shown
        );
        assert_eq!(e_mode(&fx, "key.sh"), 0o755);

        let id = "0b6c1d2e-0000-4000-8000-000000000002";
        fx.stage(
            id,
            &[write("key.sh", b"secret\n", Some(b"secret\n"))
                .base_mode(0o644)
                .mode(0o600)],
        );
        let (r, out) = fx.run(
            &["apply", id, "--non-interactive", "--force"],
            &mut no_prompts(),
        );
        assert_eq!(r.expect("apply"), Outcome::Done, "{out}");
        assert_eq!(e_mode(&fx, "key.sh"), 0o600);
        let f = fx.file(id, "key.sh");
        let backup = fx
            .session_dir(id)
            .join(f.backup_name.as_deref().expect("a backup"));
        let meta = crate::fileops::backup_meta(&fx.index(), &f, &backup).expect("backup meta");
        assert_eq!(meta.mode & 0o7777, 0o755, "the backup keeps E's mode");
        let (r, out) = fx.run(&["undo", id], &mut no_prompts());
        r.expect("undo");
        assert_eq!(e_mode(&fx, "key.sh"), 0o755, "{out}");
    }

    #[test]
    fn non_interactive_applies_clean_files_and_leaves_conflicts_staged() {
        let fx = Fixture::new();
        fx.e_write("clean.txt", b"base\n");
        fx.e_write("conflict.txt", b"changed on E\n");
        fx.stage(
            ID,
            &[
                write("clean.txt", b"from R\n", Some(b"base\n")),
                write("conflict.txt", b"R's edit\n", Some(b"base\n")),
                write("new/dir/file.txt", b"brand new\n", None),
            ],
        );
        let (r, out) = fx.run(&["apply", ID, "--non-interactive"], &mut no_prompts());
        let outcome = r.expect("apply");
        assert_eq!(outcome, Outcome::ConflictsLeft, "output: {out}");
        assert_eq!(outcome.exit_code(), 3);
        assert!(
            out.contains("conflict, left staged: docs/conflict.txt"),
            "{out}"
        );
        assert_eq!(fx.e_read("clean.txt").as_deref(), Some(&b"from R\n"[..]));
        assert_eq!(
            fx.e_read("new/dir/file.txt").as_deref(),
            Some(&b"brand new\n"[..])
        );
        assert_eq!(
            fx.e_read("conflict.txt").as_deref(),
            Some(&b"changed on E\n"[..])
        );
        assert_eq!(fx.state(ID, "clean.txt"), FileState::Applied);
        assert_eq!(fx.state(ID, "conflict.txt"), FileState::Staged);
        assert_eq!(fx.status(ID), SessionStatus::Partial);
        // Recorded in the daemon's index at once, new parent directories included.
        assert_eq!(fx.indexed("clean.txt"), Some(sha(b"from R\n")));
        assert_eq!(fx.indexed("new/dir/file.txt"), Some(sha(b"brand new\n")));
        assert!(fx.index().get("docs", "new/dir").expect("get").is_some());
        // The file that existed was backed up; the new one was not.
        let clean = fx.file(ID, "clean.txt");
        assert!(clean.e_existed);
        let backup = fx
            .session_dir(ID)
            .join(clean.backup_name.expect("backup name"));
        assert_eq!(std::fs::read(backup).expect("backup"), b"base\n");
        let new = fx.file(ID, "new/dir/file.txt");
        assert_eq!((new.e_existed, new.backup_name), (false, None));
    }

    #[test]
    fn force_applies_conflicts_and_backs_up_e() {
        let fx = Fixture::new();
        fx.e_write("conflict.txt", b"changed on E\n");
        fx.stage(ID, &[write("conflict.txt", b"R's edit\n", Some(b"base\n"))]);
        assert!(fx.file(ID, "conflict.txt").conflict);
        let (r, out) = fx.run(
            &["apply", ID, "--force", "--non-interactive"],
            &mut no_prompts(),
        );
        assert_eq!(r.expect("apply"), Outcome::Done, "{out}");
        assert_eq!(
            fx.e_read("conflict.txt").as_deref(),
            Some(&b"R's edit\n"[..])
        );
        let f = fx.file(ID, "conflict.txt");
        assert_eq!(f.state, FileState::Applied);
        let backup = fx.session_dir(ID).join(f.backup_name.expect("backup name"));
        assert_eq!(std::fs::read(backup).expect("backup"), b"changed on E\n");
        assert_eq!(fx.status(ID), SessionStatus::Applied);
    }

    #[test]
    fn a_change_on_e_after_staging_is_caught_at_apply_time() {
        let fx = Fixture::new();
        fx.e_write("f.txt", b"base\n");
        fx.stage(ID, &[write("f.txt", b"R\n", Some(b"base\n"))]);
        assert!(!fx.file(ID, "f.txt").conflict, "no conflict at staging");
        fx.e_write("f.txt", b"edited on E later\n");
        let (r, out) = fx.run(&["apply", ID, "--non-interactive"], &mut no_prompts());
        assert_eq!(r.expect("apply"), Outcome::ConflictsLeft, "{out}");
        assert_eq!(
            fx.e_read("f.txt").as_deref(),
            Some(&b"edited on E later\n"[..])
        );
        assert_eq!(fx.state(ID, "f.txt"), FileState::Staged);
    }

    #[test]
    fn staged_content_not_matching_its_sha256_is_refused() {
        let fx = Fixture::new();
        fx.e_write("f.txt", b"E's content\n");
        fx.e_write("other.txt", b"base\n");
        fx.stage(
            ID,
            &[
                write("f.txt", b"R's content\n", Some(b"E's content\n")),
                write("other.txt", b"fine\n", Some(b"base\n")),
            ],
        );
        let staged = fx
            .session_dir(ID)
            .join(fx.file(ID, "f.txt").staged_name.expect("staged name"));
        std::fs::write(&staged, b"corrupted in staging\n").expect("corrupt");
        let (r, out) = fx.run(&["apply", ID, "--non-interactive"], &mut no_prompts());
        let err = format!("{:#}", r.expect_err("must fail"));
        assert!(
            err.contains("docs/f.txt") && err.contains("sha256"),
            "{err}"
        );
        assert!(out.contains("failed, left staged: docs/f.txt"), "{out}");
        assert_eq!(fx.e_read("f.txt").as_deref(), Some(&b"E's content\n"[..]));
        assert_eq!(fx.state(ID, "f.txt"), FileState::Staged);
        // The other file still went through.
        assert_eq!(fx.e_read("other.txt").as_deref(), Some(&b"fine\n"[..]));
        assert_eq!(fx.status(ID), SessionStatus::Partial);
    }

    /// E's root swapped for a symlink to another directory (holding E's file as R's change
    /// was based on it) after staging: nothing is written there or in the real one, the
    /// session stays staged, and it applies once the root is back.
    #[test]
    fn a_root_swapped_for_a_symlink_is_never_applied_into() {
        let fx = Fixture::new();
        fx.e_write("f.txt", b"base\n");
        fx.stage(
            ID,
            &[
                write("f.txt", b"R's edit\n", Some(b"base\n")),
                write("d/new.txt", b"R's new file\n", None),
            ],
        );
        let theirs = tempfile::tempdir().expect("tempdir");
        std::fs::write(theirs.path().join("f.txt"), b"base\n").expect("write");
        fx.swap_root_for(theirs.path());
        let (r, out) = fx.run(
            &["apply", ID, "--force", "--non-interactive"],
            &mut no_prompts(),
        );
        let err = format!("{:#}", r.expect_err("refused"));
        assert!(err.contains("restart zync-daemon"), "{err}\n{out}");
        let names: Vec<_> = std::fs::read_dir(theirs.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["f.txt"], "written through the symlink");
        assert_eq!(
            std::fs::read(theirs.path().join("f.txt")).expect("read"),
            b"base\n"
        );
        assert_eq!(fx.status(ID), SessionStatus::Staged);
        fx.put_root_back();
        assert_eq!(fx.e_read("f.txt").as_deref(), Some(&b"base\n"[..]));
        let (r, out) = fx.run(&["apply", ID, "--non-interactive"], &mut no_prompts());
        assert_eq!(r.expect("apply"), Outcome::Done, "{out}");
        assert_eq!(fx.e_read("f.txt").as_deref(), Some(&b"R's edit\n"[..]));
        assert_eq!(
            fx.e_read("d/new.txt").as_deref(),
            Some(&b"R's new file\n"[..])
        );
    }

    #[test]
    fn a_symlinked_parent_on_e_is_not_followed() {
        let fx = Fixture::new();
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("f.txt"), b"outside\n").expect("write");
        symlink(outside.path(), fx.root.join("link")).expect("symlink");
        fx.stage(
            ID,
            &[
                write("link/f.txt", b"R\n", None),
                write("link/sub/g.txt", b"R\n", None),
                delete("link/h.txt", None),
            ],
        );
        std::fs::write(outside.path().join("h.txt"), b"keep me\n").expect("write");
        let (r, out) = fx.run(
            &["apply", ID, "--force", "--non-interactive"],
            &mut no_prompts(),
        );
        let err = format!("{:#}", r.expect_err("must refuse"));
        assert!(err.contains("symlink"), "{err}\n{out}");
        assert_eq!(
            std::fs::read(outside.path().join("f.txt")).expect("read"),
            b"outside\n"
        );
        assert_eq!(
            std::fs::read(outside.path().join("h.txt")).expect("read"),
            b"keep me\n"
        );
        assert!(
            !outside.path().join("sub").exists(),
            "created a dir outside"
        );
        for p in ["link/f.txt", "link/sub/g.txt", "link/h.txt"] {
            assert_eq!(fx.state(ID, p), FileState::Staged, "{p}");
        }
    }

    #[test]
    fn interactive_skip_leaves_e_untouched() {
        let fx = Fixture::new();
        fx.e_write("f.txt", b"base\n");
        fx.stage(ID, &[write("f.txt", b"R\n", Some(b"base\n"))]);
        let mut p = ScriptedPrompter::new([Choice::ShowDiff, Choice::Skip]);
        let (r, out) = fx.run(&["apply", ID], &mut p);
        assert_eq!(r.expect("apply"), Outcome::Done, "{out}");
        assert_eq!(p.asked.len(), 2, "asked: {:?}", p.asked);
        assert!(
            p.shown.iter().any(|s| s.contains("+R")),
            "shown: {:?}",
            p.shown
        );
        assert_eq!(fx.e_read("f.txt").as_deref(), Some(&b"base\n"[..]));
        assert_eq!(fx.state(ID, "f.txt"), FileState::Skipped);
        assert_eq!(fx.status(ID), SessionStatus::Applied);
    }

    #[test]
    fn interactive_conflict_shows_the_diff_before_the_user_chooses_apply() {
        let fx = Fixture::new();
        fx.e_write("f.txt", b"E edit\n");
        fx.stage(ID, &[write("f.txt", b"R edit\n", Some(b"base\n"))]);
        let mut p = ScriptedPrompter::new([Choice::Apply]);
        let (r, out) = fx.run(&["apply", ID], &mut p);
        assert_eq!(r.expect("apply"), Outcome::Done, "{out}");
        assert!(
            p.shown
                .first()
                .is_some_and(|s| s.contains("-E edit") && s.contains("+R edit")),
            "the diff must be shown before the question: {:?}",
            p.shown
        );
        assert_eq!(fx.e_read("f.txt").as_deref(), Some(&b"R edit\n"[..]));
        let mut p = ScriptedPrompter::new([]);
        let (r, out) = fx.run(&["undo", ID], &mut p);
        r.expect("undo");
        assert_eq!(
            fx.e_read("f.txt").as_deref(),
            Some(&b"E edit\n"[..]),
            "{out}"
        );
    }

    /// R chose these names: what apply and undo say about the copies and directories they
    /// made for them reaches E's terminal made visible (invariant 9).
    #[test]
    fn names_r_chose_are_reported_made_visible_by_keep_both_and_undo() {
        let fx = Fixture::new();
        let evil = "d\u{1b}]0;x\u{7}/f\r\u{1b}[2K.txt";
        fx.e_write(evil, b"E edit\n");
        fx.stage(
            ID,
            &[
                write(evil, b"R edit\n", Some(b"base\n")),
                write("n\u{1b}[31m/new.txt", b"new\n", None),
            ],
        );
        let mut p = ScriptedPrompter::new([Choice::KeepBoth, Choice::Apply]);
        let (r, out) = fx.run(&["apply", ID], &mut p);
        assert_eq!(r.expect("apply"), Outcome::Done, "{out}");
        assert!(out.contains("kept both"), "{out}");
        let (r, undone) = fx.run(&["undo", ID], &mut ScriptedPrompter::new([]));
        r.expect("undo");
        assert!(undone.contains("removed the empty directory"), "{undone}");
        for text in [&out, &undone] {
            assert!(
                !text.contains(['\u{1b}', '\u{7}', '\r']),
                "a name R chose reached the terminal raw: {text:?}"
            );
        }
    }

    #[test]
    fn keep_both_puts_r_beside_e() {
        let fx = Fixture::new();
        fx.e_write("d/f.txt", b"E edit\n");
        fx.stage(ID, &[write("d/f.txt", b"R edit\n", Some(b"base\n"))]);
        let mut p = ScriptedPrompter::new([Choice::KeepBoth]);
        let (r, out) = fx.run(&["apply", ID], &mut p);
        assert_eq!(r.expect("apply"), Outcome::Done, "{out}");
        assert_eq!(fx.e_read("d/f.txt").as_deref(), Some(&b"E edit\n"[..]));
        let copies: Vec<String> = std::fs::read_dir(fx.root.join("d"))
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| zync_fs::is_conflict_copy(n))
            .collect();
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert!(copies[0].starts_with("f.zync-conflict-") && copies[0].ends_with(".txt"));
        let copy = format!("d/{}", copies[0]);
        assert_eq!(fx.e_read(&copy).as_deref(), Some(&b"R edit\n"[..]));
        assert_eq!(fx.indexed(&copy), Some(sha(b"R edit\n")));
        let f = fx.file(ID, "d/f.txt");
        assert_eq!(f.state, FileState::KeptBoth);
        assert_eq!(f.backup_name.as_deref().and_then(decode_copy), Some(copy));
    }

    /// Content the review cannot show (binary, or too large to diff) is held back as a
    /// control file is: a non-interactive run leaves it staged and says why, an interactive
    /// one warns before asking and "apply all" does not cover it, --force applies it.
    #[test]
    fn content_that_cannot_be_shown_waits_for_a_yes() {
        let fx = Fixture::new();
        let big = vec![b'x'; 4 * 1024 * 1024 + 1];
        fx.e_write("same.bin", b"\0same");
        let id = "n0tsh0wn-1";
        fx.stage(
            id,
            &[
                write("tool.bin", b"\x7fELF\0\0\x01", None),
                crate::testkit::Spec {
                    path: "big.txt",
                    content: Some(&big),
                    base: None,
                    mode: 0o644,
                    base_mode: None,
                },
                // Unchanged binary content and a deletion add no bytes the review hides.
                write("same.bin", b"\0same", Some(b"\0same")),
                write("ok.txt", b"fine\n", None),
            ],
        );
        let (r, out) = fx.run(&["apply", id, "--non-interactive"], &mut no_prompts());
        assert_eq!(r.expect("apply"), Outcome::ConflictsLeft, "{out}");
        assert!(
            out.contains("not shown, left staged: docs/tool.bin (binary content")
                && out.contains("not shown, left staged: docs/big.txt (over 4 MiB"),
            "{out}"
        );
        assert!(out.contains("--force"), "{out}");
        assert_eq!(fx.e_read("tool.bin"), None);
        assert_eq!(fx.e_read("big.txt"), None);
        assert_eq!(fx.e_read("ok.txt").as_deref(), Some(&b"fine\n"[..]));
        assert_eq!(fx.state(id, "same.bin"), FileState::Applied);
        assert_eq!(fx.state(id, "tool.bin"), FileState::Staged);

        // Interactively: warned first, and "apply all" does not cover it.
        fx.stage(
            id.replace("-1", "-2").as_str(),
            &[
                write("a.txt", b"a\n", None),
                write("tool2.bin", b"\x7fELF\0\0\x02", None),
            ],
        );
        let mut p = ScriptedPrompter::new([Choice::ApplyAllNonConflicting, Choice::Skip]);
        let (r, _) = fx.run(&["apply", "n0tsh0wn-2"], &mut p);
        r.expect("apply");
        assert_eq!(p.asked.len(), 2, "{:?}", p.asked);
        assert!(
            p.asked[1].contains("[NOT SHOWN: binary content"),
            "{:?}",
            p.asked
        );
        assert!(
            p.shown
                .iter()
                .any(|s| s.contains("docs/tool2.bin") && s.contains("cannot be shown")),
            "{:?}",
            p.shown
        );
        assert_eq!(fx.e_read("tool2.bin"), None);

        let (r, out) = fx.run(
            &["apply", id, "--non-interactive", "--force"],
            &mut no_prompts(),
        );
        assert_eq!(r.expect("apply"), Outcome::Done, "{out}");
        assert_eq!(
            fx.e_read("tool.bin").as_deref(),
            Some(&b"\x7fELF\0\0\x01"[..])
        );
        assert_eq!(fx.e_read("big.txt").map(|b| b.len()), Some(big.len()));
    }

    #[test]
    fn control_files_need_a_yes_even_without_a_conflict() {
        let fx = Fixture::new();
        fx.e_write(".zyncignore", b"*.log\n");
        let id = "c0ntr01-1";
        fx.stage(
            id,
            &[
                write(".zyncignore", b"*.log\n!.git\n", Some(b"*.log\n")),
                write("sub/.zyncignore", b"!secret\n", None),
                write("ok.txt", b"fine\n", None),
            ],
        );
        let mut p = no_prompts();
        let (r, out) = fx.run(&["list"], &mut p);
        r.expect("list");
        assert!(out.contains("[2 control files]"), "{out}");
        let (r, out) = fx.run(&["apply", id, "--non-interactive"], &mut p);
        assert_eq!(r.expect("apply"), Outcome::ConflictsLeft, "{out}");
        assert!(
            out.contains("control file, left staged: docs/.zyncignore (it is a .zyncignore")
                && out.contains("control file, left staged: docs/sub/.zyncignore"),
            "{out}"
        );
        assert_eq!(fx.e_read(".zyncignore").as_deref(), Some(&b"*.log\n"[..]));
        assert_eq!(fx.e_read("sub/.zyncignore"), None);
        assert_eq!(fx.e_read("ok.txt").as_deref(), Some(&b"fine\n"[..]));
        assert_eq!(fx.state(id, ".zyncignore"), FileState::Staged);
        assert_eq!(fx.status(id), SessionStatus::Partial);

        // Interactively: the warning and diff come first, and "apply all" does not cover it.
        let mut p = ScriptedPrompter::new([Choice::Skip, Choice::Apply]);
        let (r, _) = fx.run(&["apply", id], &mut p);
        r.expect("apply");
        assert!(
            p.asked[0].contains("[CONTROL FILE: it is a .zyncignore"),
            "{:?}",
            p.asked
        );
        assert!(
            p.shown[0].contains("is a control file") && p.shown[0].contains("+!.git"),
            "{:?}",
            p.shown
        );
        assert_eq!(fx.e_read(".zyncignore").as_deref(), Some(&b"*.log\n"[..]));
        assert_eq!(
            fx.e_read("sub/.zyncignore").as_deref(),
            Some(&b"!secret\n"[..])
        );

        // --force is the yes of a non-interactive run.
        let id2 = "c0ntr01-2";
        fx.stage(id2, &[write(".git/config", b"[core]\n", None)]);
        let (r, out) = fx.run(&["apply", id2, "--non-interactive"], &mut no_prompts());
        assert_eq!(r.expect("apply"), Outcome::ConflictsLeft, "{out}");
        assert!(out.contains("inside .git"), "{out}");
        let (r, out) = fx.run(
            &["apply", id2, "--non-interactive", "--force"],
            &mut no_prompts(),
        );
        assert_eq!(r.expect("apply"), Outcome::Done, "{out}");
        assert_eq!(fx.e_read(".git/config").as_deref(), Some(&b"[core]\n"[..]));
    }

    #[test]
    fn quit_stops_and_leaves_the_rest_staged() {
        let fx = Fixture::new();
        fx.stage(
            ID,
            &[
                write("a.txt", b"a\n", None),
                write("b.txt", b"b\n", None),
                write("c.txt", b"c\n", None),
            ],
        );
        let mut p = ScriptedPrompter::new([Choice::Apply, Choice::Quit]);
        let (r, out) = fx.run(&["apply", ID], &mut p);
        assert_eq!(r.expect("apply"), Outcome::Done, "{out}");
        assert_eq!(p.asked.len(), 2);
        assert_eq!(fx.e_read("a.txt").as_deref(), Some(&b"a\n"[..]));
        assert_eq!(fx.e_read("b.txt"), None);
        assert_eq!(fx.e_read("c.txt"), None);
        assert_eq!(fx.state(ID, "b.txt"), FileState::Staged);
        assert_eq!(fx.state(ID, "c.txt"), FileState::Staged);
        assert_eq!(fx.status(ID), SessionStatus::Partial);
        assert!(
            out.contains("1 applied") && out.contains("2 left staged"),
            "{out}"
        );
    }

    #[test]
    fn apply_all_non_conflicting_stops_asking_except_for_conflicts() {
        let fx = Fixture::new();
        fx.e_write("c.txt", b"E edit\n");
        fx.stage(
            ID,
            &[
                write("a.txt", b"a\n", None),
                write("b.txt", b"b\n", None),
                write("c.txt", b"R edit\n", Some(b"base\n")),
                delete("d.txt", None),
            ],
        );
        let mut p = ScriptedPrompter::new([Choice::ApplyAllNonConflicting, Choice::Skip]);
        let (r, out) = fx.run(&["apply", ID], &mut p);
        assert_eq!(r.expect("apply"), Outcome::Done, "{out}");
        assert_eq!(p.asked.len(), 2, "asked: {:?}", p.asked);
        assert!(p.asked[1].contains("c.txt") && p.asked[1].contains("CONFLICT"));
        assert_eq!(fx.e_read("b.txt").as_deref(), Some(&b"b\n"[..]));
        assert_eq!(fx.state(ID, "d.txt"), FileState::Applied);
        assert_eq!(fx.state(ID, "c.txt"), FileState::Skipped);
    }

    #[test]
    fn without_a_terminal_an_interactive_apply_fails_before_changing_anything() {
        let fx = Fixture::new();
        fx.stage(ID, &[write("a.txt", b"a\n", None)]);
        let mut p = ScriptedPrompter::new([Choice::Apply]);
        p.interactive = false;
        let (r, _) = fx.run(&["apply", ID], &mut p);
        let err = format!("{:#}", r.expect_err("must fail"));
        assert!(
            err.contains("--non-interactive") && err.contains("--force"),
            "{err}"
        );
        assert!(p.asked.is_empty());
        assert_eq!(fx.e_read("a.txt"), None);
        assert_eq!(fx.state(ID, "a.txt"), FileState::Staged);
        assert_eq!(fx.status(ID), SessionStatus::Staged);
    }

    #[test]
    fn delete_backs_up_removes_and_tombstones() {
        let fx = Fixture::new();
        fx.e_write("gone.txt", b"base\n");
        let mut index = fx.index();
        let mut w = index.writer().expect("writer");
        w.upsert(
            "docs",
            "gone.txt",
            &zync_db::EntryMeta {
                kind: zync_proto::Kind::File,
                size: 5,
                mtime_ns: 0,
                mode: 0o644,
                inode: 1,
                sha256: Some(sha(b"base\n")),
                target: None,
            },
        )
        .expect("upsert");
        w.commit().expect("commit");
        fx.stage(ID, &[delete("gone.txt", Some(b"base\n"))]);
        let (r, out) = fx.run(&["apply", ID, "--non-interactive"], &mut no_prompts());
        assert_eq!(r.expect("apply"), Outcome::Done, "{out}");
        assert!(!exists(&fx.root.join("gone.txt")));
        assert!(fx.tombstoned("gone.txt"));
        let f = fx.file(ID, "gone.txt");
        let backup = fx.session_dir(ID).join(f.backup_name.expect("backup"));
        assert_eq!(std::fs::read(backup).expect("read"), b"base\n");
    }
}
