//! Carrying out a change's [`Plan`] on R at once: parents made, paths cleared (R's edits kept
//! as conflict copies, invariant 4 (docs/ARCHITECTURE.md)), directories, symlinks, deletions,
//! attributes, and copies of content R already holds. A file that needs E's bytes comes back
//! as a [`Pending`] for `fetch`.

use std::io::ErrorKind;
use std::path::Path;

use zync_fs::{IfUnchanged, RelPath, Stat};

use crate::download::land::file::{Pending, Ready};
use crate::download::land::place::{self, Place};
use crate::download::look::Known;
use crate::download::plan::{Clear, Here, MakeDir, Plan, Removal, Step};
use crate::error::ClientError;
use crate::ledger::Record;

/// What is left of a change once its plan was carried out.
pub enum Outcome {
    /// Applied (or skipped): record this.
    Done(Record),
    /// The file's content must be downloaded into this.
    Fetch(Box<Pending>),
    /// The content was copied from a file on R: it is renamed in with its batch.
    Ready(Box<Ready>),
}

impl Place {
    /// Carries out `plan`, made from `here`. `known` learns the directories made and forgets
    /// those that something was moved or removed in.
    ///
    /// # Errors
    /// A problem with this one path.
    pub fn carry_out(
        &mut self,
        known: &mut Known,
        here: Here,
        plan: Plan,
    ) -> Result<Outcome, ClientError> {
        for MakeDir { rel, clear } in plan.parents {
            if let Some(clear) = clear {
                let before = here
                    .parents
                    .iter()
                    .find(|(parent, _)| *parent == rel)
                    .map_or(&Stat::Missing, |(_, local)| &local.stat);
                self.clear(known, &rel, clear, before)?;
            }
            let made = zync_fs::ensure_dir(self.root(), &rel, None)?;
            self.changed(known, &rel);
            known.insert_dir(rel.to_string());
            known.made_dirs(made);
        }
        let Here { rel, at, .. } = here;
        match plan.step {
            Step::Skip(why) => {
                tracing::warn!(dir = self.dir(), path = %rel, "skipped {why}");
                Ok(Outcome::Done(Record::Nothing))
            }
            Step::Blocked { at, what, wanted } => Err(ClientError::Blocked {
                path: at.to_path(self.root()).display().to_string(),
                reason: format!("a {what} stands where E has {wanted}; remove it"),
            }),
            Step::Forget => Ok(Outcome::Done(Record::Remove(rel.to_string()))),
            Step::Delete { partials, removal } => {
                // A partial download of a file E deleted will never be resumed.
                if partials {
                    zync_fs::remove_partials(self.root(), &rel);
                }
                self.remove(known, &rel, removal, &at.stat)?;
                Ok(Outcome::Done(Record::Remove(rel.to_string())))
            }
            Step::Same {
                mode,
                mtime_ns,
                record,
            } => {
                if let Some(mode) = mode {
                    zync_fs::set_mode_beneath(self.root(), &rel, mode)?;
                }
                if let Some(mtime_ns) = mtime_ns {
                    zync_fs::set_mtime_beneath(self.root(), &rel, mtime_ns)?;
                }
                // R's own write of this content (or link) may not be on disk yet: it is made
                // durable with the batch, before it is recorded.
                if record.kind == zync_proto::Kind::File {
                    self.keep_in_place(&rel);
                } else {
                    self.touch(&rel);
                }
                Ok(Outcome::Done(Record::Set(rel.to_string(), record)))
            }
            Step::Dir {
                clear,
                create,
                set_mode,
                record,
            } => {
                if let Some(clear) = clear {
                    self.clear(known, &rel, clear, &at.stat)?;
                }
                if create {
                    let made = zync_fs::ensure_dir(self.root(), &rel, Some(record.mode))?;
                    self.changed(known, &rel);
                    known.made_dirs(made);
                }
                if let Some(mode) = set_mode {
                    zync_fs::set_mode_beneath(self.root(), &rel, mode)?;
                    self.touch_dir(&rel);
                }
                // A directory R had already: R's own mkdir may not be on disk yet.
                self.touch(&rel);
                Ok(Outcome::Done(Record::Set(rel.to_string(), record)))
            }
            Step::Symlink { clear, record } => {
                // What the rename may replace: a file or link as synced, or nothing once
                // cleared. Anything else there now (an edit since the plan's look) is kept.
                let before = match clear {
                    Some(clear) => {
                        self.clear(known, &rel, clear, &at.stat)?;
                        Stat::Missing
                    }
                    None => at.stat,
                };
                let target = record.target.as_deref().unwrap_or_default();
                let mut before = before;
                let mut tries = 0;
                while !zync_fs::replace_with_symlink_if_unchanged(
                    self.root(),
                    &rel,
                    target,
                    &before,
                )? {
                    tries += 1;
                    if tries > place::KEEP_TRIES {
                        return Err(self.keeps_changing(&rel));
                    }
                    self.keep_what_stands(
                        &rel,
                        "this path changed on R while E's symlink was on its way",
                    )?;
                    before = Stat::Missing;
                }
                self.changed(known, &rel);
                Ok(Outcome::Done(Record::Set(rel.to_string(), record)))
            }
            Step::File {
                clear,
                copy_from,
                delta,
                partials,
                record,
            } => {
                // What stands at the path now; if it changes during the download (an editor
                // saving on R), that save is kept as a conflict copy before the rename.
                let before = match clear {
                    Some(clear) => {
                        // Cleared: anything there at the rename appeared since, and is kept.
                        self.clear(known, &rel, clear, &at.stat)?;
                        Stat::Missing
                    }
                    None => at.stat,
                };
                let mut pending = Pending::new(self.root(), rel, before, partials, record);
                if let Some(source) = copy_from {
                    match pending.copy_from(&source) {
                        Ok(ready) => return Ok(Outcome::Ready(ready)),
                        Err(e) => {
                            tracing::debug!(path = pending.path(), source = %source.display(), "local copy failed, downloading instead: {e}")
                        }
                    }
                }
                if delta {
                    // How is decided once the older version's checkpoints are known.
                    pending.want_delta();
                }
                Ok(Outcome::Fetch(Box::new(pending)))
            }
        }
    }

    /// Removes the files of this page set aside for local copies that no copy needed. Their
    /// deletion is recorded at the next checkpoint; a crash before it leaves only a temp file.
    pub fn clear_stash(&mut self, known: &mut Known) {
        for (_, stashed) in known.stash.drain() {
            // Set-aside files sit at the top of the root under a temp name.
            let Some(name) = stashed
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| RelPath::parse(n).ok())
            else {
                continue;
            };
            if let Err(e) = place::remove_file(self.root(), &name) {
                tracing::debug!(path = %stashed.display(), "cannot remove a set-aside file: {e}");
            }
        }
    }

    /// The entry `rel` changed: flushed before it is recorded, and no longer known as a
    /// directory.
    fn changed(&mut self, known: &mut Known, rel: &RelPath) {
        known.forget_dirs(rel);
        self.touch(rel);
    }

    /// Clears `rel` for an entry of another kind or for E's version; `before` is what the plan
    /// saw there.
    fn clear(
        &mut self,
        known: &mut Known,
        rel: &RelPath,
        clear: Clear,
        before: &Stat,
    ) -> Result<(), ClientError> {
        let path = rel.to_path(self.root());
        match clear {
            Clear::RemoveDir => match place::remove_dir(self.root(), rel) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => {
                    self.keep_local(rel, "E replaced this directory, which holds files on R")?
                }
                Err(source) => return Err(io_error("remove", &path, source)),
            },
            Clear::Remove => self.remove_as_seen(
                rel,
                before,
                "this path changed on R while E's change to it was being applied",
            )?,
            Clear::Keep(why) => self.keep_local(rel, why)?,
        }
        self.changed(known, rel);
        Ok(())
    }

    /// What a deletion does to what stands at `rel`; `before` is what the plan saw there.
    fn remove(
        &mut self,
        known: &mut Known,
        rel: &RelPath,
        removal: Removal,
        before: &Stat,
    ) -> Result<(), ClientError> {
        let path = rel.to_path(self.root());
        match removal {
            // Gone from R already: R's own removal may not be on disk yet.
            Removal::Nothing => self.touch(rel),
            Removal::RemoveDir => {
                // zync's own leftovers (partial downloads) must not keep the directory.
                remove_own_temp_files(self.root(), rel);
                match place::remove_dir(self.root(), rel) {
                    Ok(()) => self.changed(known, rel),
                    Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => tracing::info!(
                        dir = self.dir(),
                        path = %rel,
                        "E deleted this directory; kept on R because it holds files that did not come from E"
                    ),
                    Err(e) if e.kind() == ErrorKind::NotFound => self.touch(rel),
                    Err(source) => return Err(io_error("remove", &path, source)),
                }
            }
            // One set-aside file per content is all a copy needs; a second deleted file with
            // the same content is removed, never set aside over the first (which would then
            // be forgotten, and left in R's root).
            Removal::SetAside(sha)
                if !known.stash.contains_key(&sha)
                    && self.set_aside(known, rel, &sha, before)? => {}
            Removal::SetAside(_) | Removal::Remove => {
                self.remove_as_seen(rel, before, DELETED_BUT_CHANGED)?;
                self.changed(known, rel);
            }
            Removal::Keep(why) => {
                self.keep_local(rel, why)?;
                known.forget_dirs(rel);
            }
        }
        Ok(())
    }

    /// Removes the file or link at `rel` if it is still `before`, looked at through the
    /// handle the unlink goes through (a look by path can be led elsewhere by a directory
    /// swapped for a symlink); an edit made on R since is kept as a conflict copy (`why`)
    /// instead (invariant 4).
    fn remove_as_seen(
        &mut self,
        rel: &RelPath,
        before: &Stat,
        why: &str,
    ) -> Result<(), ClientError> {
        let found = place::remove_file_if_unchanged(self.root(), rel, before)
            .map_err(|source| io_error("remove", &rel.to_path(self.root()), source))?;
        if found == IfUnchanged::Changed {
            self.keep_local(rel, why)?;
        }
        Ok(())
    }

    /// Sets a file that E deleted aside under a temp name, as the source for a later copy of
    /// the same content in this page, if it is still `before`. False when it could not be
    /// moved (then remove it); an edit made on R since is kept as a conflict copy instead.
    fn set_aside(
        &mut self,
        known: &mut Known,
        rel: &RelPath,
        sha: &str,
        before: &Stat,
    ) -> Result<bool, ClientError> {
        let name = format!(
            "{}stash-{}-{}",
            zync_fs::TEMP_PREFIX,
            known.stash.len(),
            &sha[..sha.len().min(16)]
        );
        let Ok(to) = RelPath::parse(&name) else {
            return Ok(false);
        };
        match place::rename_if_unchanged(self.root(), rel, &to, before) {
            Ok(IfUnchanged::Done) => {
                known.stash.insert(sha.to_string(), to.to_path(self.root()));
                self.changed(known, rel);
                Ok(true)
            }
            Ok(IfUnchanged::Gone) => Ok(true),
            Ok(IfUnchanged::Changed) => {
                self.keep_local(rel, DELETED_BUT_CHANGED)?;
                self.changed(known, rel);
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }
}

/// Why R's file was kept when E deleted it.
const DELETED_BUT_CHANGED: &str = "E deleted this file, which was changed on R";

fn io_error(what: &'static str, path: &Path, source: std::io::Error) -> ClientError {
    ClientError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Removes zync's temp files (partial downloads included) directly inside `root/rel`, through
/// that directory's handle.
fn remove_own_temp_files(root: &Path, rel: &RelPath) {
    let Ok(dir) = zync_fs::Dir::open_dir(root, Some(rel)) else {
        return;
    };
    let Ok(entries) = dir.entries() else {
        return;
    };
    for (name, kind) in entries {
        let is_temp = name
            .as_encoded_bytes()
            .starts_with(zync_fs::TEMP_PREFIX.as_bytes());
        if is_temp && kind == Some(zync_proto::Kind::File) {
            let _ = dir.unlink(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::download::plan::Local;
    use zync_db::Synced;

    const SYNCED: &[u8] = b"as synced\n";

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).expect("valid test path")
    }

    /// What the planner gathered about R's `f`, as zync last wrote it.
    fn as_synced(root: &Path) -> Local {
        let sha = zync_fs::hash_bytes(SYNCED);
        Local {
            stat: zync_fs::lstat(&root.join("f")).expect("lstat"),
            sha: Some(sha.clone()),
            inflight: false,
            synced: Some(Synced {
                kind: zync_proto::Kind::File,
                size: SYNCED.len() as u64,
                mtime_ns: 0,
                mode: 0o644,
                sha256: Some(sha),
                target: None,
            }),
        }
    }

    fn here(path: &str, parents: Vec<(RelPath, Local)>, at: Local) -> Here {
        Here {
            rel: rel(path),
            parents,
            parents_real: true,
            at,
            partials: false,
            source: None,
            umask: 0o022,
        }
    }

    fn link_record() -> Synced {
        Synced {
            kind: zync_proto::Kind::Symlink,
            size: 1,
            mtime_ns: 0,
            mode: 0,
            sha256: None,
            target: Some("t".to_string()),
        }
    }

    /// Each plan that removes or replaces R's `f` as zync wrote it, as the planner makes it
    /// from a look at `f` (`synced`).
    fn plans(synced: impl Fn() -> Local) -> Vec<(&'static str, Here, Plan)> {
        let delete = |removal| Plan {
            parents: Vec::new(),
            step: Step::Delete {
                partials: false,
                removal,
            },
        };
        vec![
            (
                "E deleted f",
                here("f", Vec::new(), synced()),
                delete(Removal::Remove),
            ),
            (
                "E renamed f: set aside for the copy",
                here("f", Vec::new(), synced()),
                delete(Removal::SetAside(zync_fs::hash_bytes(SYNCED))),
            ),
            (
                "E replaced f with a symlink",
                here("f", Vec::new(), synced()),
                Plan {
                    parents: Vec::new(),
                    step: Step::Symlink {
                        clear: None,
                        record: link_record(),
                    },
                },
            ),
            (
                "E made f a directory holding a symlink",
                here("f/l", vec![(rel("f"), synced())], Local::missing()),
                Plan {
                    parents: vec![MakeDir {
                        rel: rel("f"),
                        clear: Some(Clear::Remove),
                    }],
                    step: Step::Symlink {
                        clear: None,
                        record: link_record(),
                    },
                },
            ),
        ]
    }

    /// R's `f` edited after the plan's look meets each plan that would remove or replace it:
    /// the edit is kept as a conflict copy, never lost (invariant 4). A file still as the plan
    /// saw it goes without a copy.
    #[test]
    fn a_file_edited_on_r_after_the_plan_looked_is_kept_not_lost() {
        const EDIT: &[u8] = b"edited on R after the look\n";
        for edited in [false, true] {
            for case in 0..plans(Local::missing).len() {
                let tmp = tempfile::tempdir().expect("tempdir");
                let root = tmp.path();
                std::fs::write(root.join("f"), SYNCED).expect("write");
                let (what, here, plan) = plans(|| as_synced(root)).swap_remove(case);
                if edited {
                    std::fs::write(root.join("f"), EDIT).expect("edit");
                }
                let mut place = Place::new(root, "d");
                let mut known = Known::default();
                place
                    .carry_out(&mut known, here, plan)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                place.clear_stash(&mut known);
                let conflicts = place.take_conflicts();
                let kept: Vec<Vec<u8>> = conflicts
                    .iter()
                    .map(|c| std::fs::read(root.join(c)).expect("read the copy"))
                    .collect();
                if edited {
                    assert_eq!(kept, vec![EDIT.to_vec()], "{what}: the edit must be kept");
                } else {
                    assert!(
                        kept.is_empty(),
                        "{what}: nothing to keep, kept {conflicts:?}"
                    );
                }
                assert!(
                    std::fs::read(root.join("f")).map_or(true, |c| c != SYNCED && c != EDIT),
                    "{what}: R's file is still at f"
                );
            }
        }
    }

    /// What a plan records without writing anything of its own is flushed with the batch
    /// before it is recorded (invariant 2): a file R already had (R's own write of it may not
    /// be on disk yet) and its directory entry, a symlink's or directory's entry, a directory
    /// whose mode was set, the directory of a path R removed already.
    #[test]
    fn what_is_recorded_as_it_stands_on_r_is_flushed_before_the_record() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/b")).expect("mkdir");
        std::fs::write(root.join("a/f"), SYNCED).expect("write");
        std::os::unix::fs::symlink("t", root.join("a/l")).expect("symlink");
        let record = |kind, mode| Synced {
            kind,
            size: 0,
            mtime_ns: 0,
            mode,
            sha256: None,
            target: None,
        };
        let same = |mtime_ns, record| Step::Same {
            mode: None,
            mtime_ns,
            record,
        };
        let dir = |set_mode| Step::Dir {
            clear: None,
            create: false,
            set_mode,
            record: record(zync_proto::Kind::Dir, 0o700),
        };
        let gone = || Step::Delete {
            partials: false,
            removal: Removal::Nothing,
        };
        let cases = [
            (
                "a/f",
                same(Some(1_000_000_000), record(zync_proto::Kind::File, 0o644)),
                vec!["a/f"],
                vec!["a"],
            ),
            ("a/l", same(None, link_record()), vec![], vec!["a"]),
            // R's own mkdir, and the mode set on it.
            ("a/b", dir(None), vec![], vec!["a"]),
            ("a/b", dir(Some(0o700)), vec![], vec!["a", "a/b"]),
            // R's own removal of what E deleted too.
            ("a/gone", gone(), vec![], vec!["a"]),
        ];
        let mut place = Place::new(root, "d");
        let mut known = Known::default();
        for (path, step, in_place, touched) in cases {
            let plan = Plan {
                parents: Vec::new(),
                step,
            };
            place
                .carry_out(&mut known, here(path, Vec::new(), Local::missing()), plan)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            let flushed: Vec<String> = place
                .take_in_place()
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(
                flushed, in_place,
                "{path}: the files flushed where they stand"
            );
            let flushed = place.take_touched();
            for dir in touched {
                assert!(
                    flushed.contains(&root.join(dir)),
                    "{path}: {dir} is flushed, only {flushed:?} are"
                );
            }
        }
    }

    /// A symlink planned where R had nothing never replaces a file that appeared since.
    #[test]
    fn a_symlink_planned_over_nothing_keeps_what_appeared_since() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let here = here("f", Vec::new(), Local::missing());
        std::fs::write(root.join("f"), b"appeared on R").expect("write");
        let mut place = Place::new(root, "d");
        let plan = Plan {
            parents: Vec::new(),
            step: Step::Symlink {
                clear: None,
                record: link_record(),
            },
        };
        place
            .carry_out(&mut Known::default(), here, plan)
            .expect("carry out");
        let conflicts = place.take_conflicts();
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert_eq!(
            std::fs::read(root.join(&conflicts[0])).expect("read the copy"),
            b"appeared on R"
        );
        assert_eq!(
            std::fs::read_link(root.join("f")).expect("link"),
            Path::new("t")
        );
    }
}
