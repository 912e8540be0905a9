//! A change's [`Plan`] told instead of carried out (`--once --dry-run`): every step that would
//! change R becomes an [`Action`] a user can read (one line each) or a script can parse. Pure,
//! like `plan`: steps that change nothing on disk (a deletion R already has, a record only)
//! say nothing.

use std::path::Path;

use serde::Serialize;
use zync_fs::{RelPath, Stat};
use zync_proto::{Change, Kind};

use crate::download::plan::{Clear, Here, Plan, Removal, Step};

/// One thing a sync would do at one path of a mapped directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// E's content would be downloaded to `path`.
    Download {
        /// The path, relative to the mapped directory.
        path: String,
        /// E's size in bytes.
        size: u64,
        /// Nothing stands at the path on R yet (else R's older file is replaced).
        new: bool,
        /// Asked for as a delta against R's older version.
        delta: bool,
    },
    /// E's content would be copied from a file R already holds (a rename or copy on E).
    Copy {
        /// The path.
        path: String,
        /// Its size.
        size: u64,
        /// The file on R holding the content, relative to the mapped directory when inside it.
        from: String,
    },
    /// A file or link (or, with `dir`, a directory) would be removed.
    Delete {
        /// The path.
        path: String,
        /// A directory: removed only when nothing but E's files are in it.
        dir: bool,
    },
    /// R's edit at `path` would be kept beside it as a conflict copy (invariant 4
    /// (docs/ARCHITECTURE.md)) before E's change lands.
    KeepConflictCopy {
        /// The path of R's edited file, link or directory.
        path: String,
        /// Why.
        why: &'static str,
    },
    /// A directory would be made.
    MakeDir {
        /// The path.
        path: String,
    },
    /// A symlink would be made at `path` (replacing what zync wrote there).
    Symlink {
        /// The path.
        path: String,
        /// Its target, as E has it.
        target: String,
    },
    /// R already has E's content or directory: its mode or mtime would be set.
    Attributes {
        /// The path.
        path: String,
        /// The new permission bits, in octal (`"0755"`), when they change.
        mode: Option<String>,
        /// The mtime would be set to E's.
        mtime: bool,
    },
    /// The path cannot be synced until the user acts (a real run fails it, exit code 4).
    Blocked {
        /// The path in the way.
        path: String,
        /// What is in the way and what to do.
        reason: String,
    },
    /// The change would be skipped, for this reason.
    Skip {
        /// The path.
        path: String,
        /// Why.
        why: &'static str,
    },
}

/// What `plan` would do for `change`, made from `here`, as actions in the order a real sync
/// takes them. `root` is the mapped directory (sources of copies are shown relative to it).
pub fn describe(change: &Change, here: &Here, plan: &Plan, root: &Path) -> Vec<Action> {
    let mut actions = Vec::new();
    for parent in &plan.parents {
        if let Some(clear) = &parent.clear {
            actions.push(cleared(&parent.rel, clear));
        }
        actions.push(Action::MakeDir {
            path: parent.rel.to_string(),
        });
    }
    let path = here.rel.to_string();
    match &plan.step {
        Step::Skip(why) => actions.push(Action::Skip { path, why }),
        Step::Blocked { at, what, wanted } => actions.push(Action::Blocked {
            path: at.to_string(),
            reason: format!("a {what} stands where E has {wanted}; remove it"),
        }),
        Step::Forget => {}
        Step::Delete { removal, .. } => match removal {
            Removal::Nothing => {}
            Removal::Remove | Removal::SetAside(_) => {
                actions.push(Action::Delete { path, dir: false })
            }
            Removal::RemoveDir => actions.push(Action::Delete { path, dir: true }),
            Removal::Keep(why) => actions.push(Action::KeepConflictCopy { path, why }),
        },
        Step::Same { mode, mtime_ns, .. } => {
            if mode.is_some() || mtime_ns.is_some() {
                actions.push(Action::Attributes {
                    path,
                    mode: mode.map(octal),
                    mtime: mtime_ns.is_some(),
                });
            }
        }
        Step::Dir {
            clear,
            create,
            set_mode,
            ..
        } => {
            if let Some(clear) = clear {
                actions.push(cleared(&here.rel, clear));
            }
            if *create {
                actions.push(Action::MakeDir { path: path.clone() });
            }
            if let Some(mode) = set_mode {
                actions.push(Action::Attributes {
                    path,
                    mode: Some(octal(*mode)),
                    mtime: false,
                });
            }
        }
        Step::Symlink { clear, record } => {
            if let Some(clear) = clear {
                actions.push(cleared(&here.rel, clear));
            }
            actions.push(Action::Symlink {
                path,
                target: record.target.clone().unwrap_or_default(),
            });
        }
        Step::File {
            clear,
            copy_from,
            delta,
            record,
            ..
        } => {
            if let Some(clear) = clear {
                actions.push(cleared(&here.rel, clear));
            }
            match copy_from {
                Some(source) => actions.push(Action::Copy {
                    path,
                    size: record.size,
                    from: source
                        .strip_prefix(root)
                        .unwrap_or(source)
                        .display()
                        .to_string(),
                }),
                None => actions.push(Action::Download {
                    path,
                    size: change.size,
                    new: !matches!(&here.at.stat, Stat::Entry(m) if m.kind == Kind::File),
                    delta: *delta,
                }),
            }
        }
    }
    actions
}

/// What clearing `rel` for another entry does.
fn cleared(rel: &RelPath, clear: &Clear) -> Action {
    let path = rel.to_string();
    match clear {
        Clear::Remove => Action::Delete { path, dir: false },
        // A directory holding files of R's own is kept as a conflict copy instead.
        Clear::RemoveDir => Action::Delete { path, dir: true },
        Clear::Keep(why) => Action::KeepConflictCopy { path, why },
    }
}

fn octal(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

impl Action {
    /// The action as one line of text, `dir/path` naming the path; everything that came from
    /// E or from R's disk made visible (`zync_cli::visible::line`), so a hostile name cannot
    /// move the cursor or hide a line.
    pub fn line(&self, dir: &str) -> String {
        let at = |path: &str| zync_cli::visible::line(&format!("{dir}/{path}")).into_owned();
        let size = |n: u64| zync_cli::units::format_bytes(n);
        match self {
            Action::Download {
                path,
                size: n,
                new,
                delta,
            } => format!(
                "would download {} ({}, {}{})",
                at(path),
                size(*n),
                if *new { "new" } else { "changed" },
                if *delta { ", as a delta" } else { "" }
            ),
            Action::Copy {
                path,
                size: n,
                from,
            } => format!(
                "would copy {} from {} ({}, already on R: no download)",
                at(path),
                at(from),
                size(*n)
            ),
            Action::Delete { path, dir: false } => format!("would delete {}", at(path)),
            Action::Delete { path, dir: true } => format!(
                "would delete directory {} (kept if it holds files that did not come from E)",
                at(path)
            ),
            Action::KeepConflictCopy { path, why } => format!(
                "would keep R's version of {} as a conflict copy beside it: {why}",
                at(path)
            ),
            Action::MakeDir { path } => format!("would create directory {}", at(path)),
            Action::Symlink { path, target } => format!(
                "would create symlink {} -> {}",
                at(path),
                zync_cli::visible::line(target)
            ),
            Action::Attributes { path, mode, mtime } => match (mode, mtime) {
                (Some(mode), true) => {
                    format!(
                        "would change mode of {} to {mode} and set its mtime",
                        at(path)
                    )
                }
                (Some(mode), false) => format!("would change mode of {} to {mode}", at(path)),
                (None, _) => format!("would set the mtime of {}", at(path)),
            },
            Action::Blocked { path, reason } => format!(
                "cannot sync {}: {}",
                at(path),
                zync_cli::visible::line(reason)
            ),
            Action::Skip { path, why } => format!("would skip {}: {why}", at(path)),
        }
    }
}

/// How many actions of each kind a dry run listed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Files that would be downloaded.
    pub downloads: u64,
    /// Their bytes.
    pub download_bytes: u64,
    /// Files that would be copied from content R has.
    pub copies: u64,
    /// Files, links and directories that would be removed.
    pub deletions: u64,
    /// R's edits that would be kept as conflict copies.
    pub conflict_copies: u64,
    /// Directories that would be made.
    pub dirs: u64,
    /// Symlinks that would be made.
    pub symlinks: u64,
    /// Paths whose mode or mtime would be set.
    pub attributes: u64,
    /// Paths that cannot be synced.
    pub blocked: u64,
    /// Changes that would be skipped.
    pub skipped: u64,
}

impl Totals {
    /// Counts `action`.
    pub fn add(&mut self, action: &Action) {
        match action {
            Action::Download { size, .. } => {
                self.downloads += 1;
                self.download_bytes += size;
            }
            Action::Copy { .. } => self.copies += 1,
            Action::Delete { .. } => self.deletions += 1,
            Action::KeepConflictCopy { .. } => self.conflict_copies += 1,
            Action::MakeDir { .. } => self.dirs += 1,
            Action::Symlink { .. } => self.symlinks += 1,
            Action::Attributes { .. } => self.attributes += 1,
            Action::Blocked { .. } => self.blocked += 1,
            Action::Skip { .. } => self.skipped += 1,
        }
    }

    /// The exit code the real run would end with, as far as planning can tell:
    /// [`crate::exit::PARTIAL`] when a path cannot be synced, [`crate::exit::CONFLICTS`] when
    /// R's edits would be kept as conflict copies, else [`crate::exit::OK`].
    pub fn exit_code(&self) -> u8 {
        if self.blocked > 0 {
            crate::exit::PARTIAL
        } else if self.conflict_copies > 0 {
            crate::exit::CONFLICTS
        } else {
            crate::exit::OK
        }
    }

    /// The closing line of a dry run's listing.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let bytes = zync_cli::units::format_bytes(self.download_bytes);
        if self.downloads > 0 {
            let n = self.downloads;
            parts.push(format!(
                "{n} {} ({bytes})",
                if n == 1 { "download" } else { "downloads" }
            ));
        }
        let mut count = |n: u64, one: &str, many: &str| {
            if n > 0 {
                parts.push(format!("{n} {}", if n == 1 { one } else { many }));
            }
        };
        count(self.copies, "local copy", "local copies");
        count(self.deletions, "deletion", "deletions");
        count(self.conflict_copies, "conflict copy", "conflict copies");
        count(self.dirs, "new directory", "new directories");
        count(self.symlinks, "symlink", "symlinks");
        count(
            self.attributes,
            "mode or mtime change",
            "mode or mtime changes",
        );
        count(
            self.blocked,
            "path that cannot be synced",
            "paths that cannot be synced",
        );
        count(self.skipped, "skipped change", "skipped changes");
        if parts.is_empty() {
            return "dry run: nothing to do, R holds what E has; nothing was changed".into();
        }
        format!("dry run: {}; nothing was changed", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::path::PathBuf;

    use zync_db::Synced;
    use zync_fs::Meta;

    use crate::download::plan::{self, Local};

    const OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const NEW: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const EDIT: &str = "3333333333333333333333333333333333333333333333333333333333333333";

    fn rel(path: &str) -> RelPath {
        RelPath::parse(path).expect("a valid test path")
    }

    fn file_at(sha: &str, synced: Option<&str>) -> Local {
        Local {
            stat: Stat::Entry(Meta {
                kind: Kind::File,
                size: 3,
                mtime_ns: 5,
                mode: 0o644,
                inode: 1,
                device: 1,
                target: None,
            }),
            sha: Some(sha.to_string()),
            inflight: false,
            synced: synced.map(|s| Synced {
                kind: Kind::File,
                size: 3,
                mtime_ns: 5,
                mode: 0o644,
                sha256: Some(s.to_string()),
                target: None,
            }),
        }
    }

    fn here(path: &str, at: Local) -> Here {
        Here {
            rel: rel(path),
            parents: Vec::new(),
            parents_real: true,
            at,
            partials: false,
            source: None,
            umask: 0o022,
        }
    }

    fn change(path: &str, kind: Kind, sha: Option<&str>) -> Change {
        Change {
            seq: 1,
            path: path.to_string(),
            kind,
            deleted: false,
            size: 3,
            mtime_ns: 9,
            mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
            sha256: sha.map(str::to_string),
            target: (kind == Kind::Symlink).then(|| "../t\x1b[2K".to_string()),
        }
    }

    /// Plans `change` against `here` as a real sync would, and describes it.
    fn told(change: &Change, here: &Here) -> Vec<Action> {
        let plan = plan::plan(change, here, &HashSet::new());
        describe(change, here, &plan, Path::new("/r"))
    }

    #[test]
    fn every_plan_is_told_as_what_it_would_do_to_r() {
        let download = |path: &str, new| Action::Download {
            path: path.into(),
            size: 3,
            new,
            delta: false,
        };
        let mut renamed = here("b.txt", Local::missing());
        renamed.source = Some(PathBuf::from("/r/old/a.txt"));
        let mut deep = here("a/b/c.txt", Local::missing());
        deep.parents = vec![
            (rel("a"), file_at(EDIT, Some(OLD))),
            (rel("a/b"), Local::missing()),
        ];
        let deleted = |path: &str| Change {
            deleted: true,
            ..change(path, Kind::File, None)
        };
        #[rustfmt::skip]
        let cases: Vec<(&str, Change, Here, Vec<Action>)> = vec![
            ("a new file is downloaded",
             change("a.txt", Kind::File, Some(NEW)), here("a.txt", Local::missing()),
             vec![download("a.txt", true)]),
            ("a changed file is downloaded over R's unedited one",
             change("a.txt", Kind::File, Some(NEW)), here("a.txt", file_at(OLD, Some(OLD))),
             vec![download("a.txt", false)]),
            ("R's edit is kept as a conflict copy first",
             change("a.txt", Kind::File, Some(NEW)), here("a.txt", file_at(EDIT, Some(OLD))),
             vec![Action::KeepConflictCopy { path: "a.txt".into(), why: "E changed this file, which was also changed on R" },
                  download("a.txt", false)]),
            ("content R has elsewhere is copied",
             change("b.txt", Kind::File, Some(NEW)), renamed,
             vec![Action::Copy { path: "b.txt".into(), size: 3, from: "old/a.txt".into() }]),
            ("unchanged content only gets E's mtime",
             change("a.txt", Kind::File, Some(OLD)), here("a.txt", file_at(OLD, Some(OLD))),
             vec![Action::Attributes { path: "a.txt".into(), mode: None, mtime: true }]),
            ("a deleted file is removed",
             deleted("a.txt"), here("a.txt", file_at(OLD, Some(OLD))),
             vec![Action::Delete { path: "a.txt".into(), dir: false }]),
            ("a deleted file R edited is kept",
             deleted("a.txt"), here("a.txt", file_at(EDIT, Some(OLD))),
             vec![Action::KeepConflictCopy { path: "a.txt".into(), why: "E deleted this file, which was changed on R" }]),
            ("a deletion R already has says nothing",
             deleted("a.txt"), here("a.txt", Local::missing()),
             vec![]),
            ("a new directory is made",
             change("d", Kind::Dir, None), here("d", Local::missing()),
             vec![Action::MakeDir { path: "d".into() }]),
            ("a new symlink is made, its target as E has it",
             change("l", Kind::Symlink, None), here("l", Local::missing()),
             vec![Action::Symlink { path: "l".into(), target: "../t\x1b[2K".into() }]),
            ("parents in the way are kept, then made, top down",
             change("a/b/c.txt", Kind::File, Some(NEW)), deep,
             vec![Action::KeepConflictCopy { path: "a".into(), why: "E replaced this path, which was changed on R" },
                  Action::MakeDir { path: "a".into() },
                  Action::MakeDir { path: "a/b".into() },
                  download("a/b/c.txt", true)]),
            ("a fifo in the way blocks",
             change("a", Kind::File, Some(NEW)), here("a", Local { stat: Stat::Unsupported("fifo"), ..Local::missing() }),
             vec![Action::Blocked { path: "a".into(), reason: "a fifo stands where E has a file; remove it".into() }]),
            ("a change without a valid sha256 is skipped",
             change("a", Kind::File, Some("nope")), here("a", Local::missing()),
             vec![Action::Skip { path: "a".into(), why: "a file change without a valid sha256" }]),
        ];
        for (what, change, here, expected) in cases {
            let found = told(&change, &here);
            assert_eq!(
                found, expected,
                "{what}\nexpected: {expected:?}\nfound: {found:?}"
            );
        }
    }

    #[test]
    fn lines_show_hostile_names_visibly_and_totals_decide_the_exit_code() {
        let hostile = Action::Symlink {
            path: "evil\r\x1b[2Kname".into(),
            target: "t\nx".into(),
        };
        let line = hostile.line("code");
        assert!(
            !line.chars().any(|c| c.is_control()),
            "a control character reached the terminal: {line:?}"
        );
        assert!(line.starts_with("would create symlink code/evil"), "{line}");

        let mut totals = Totals::default();
        assert_eq!(totals.exit_code(), crate::exit::OK);
        assert!(
            totals.summary().contains("nothing to do"),
            "{}",
            totals.summary()
        );
        totals.add(&Action::Download {
            path: "a".into(),
            size: 2048,
            new: true,
            delta: false,
        });
        totals.add(&Action::KeepConflictCopy {
            path: "b".into(),
            why: "x",
        });
        assert_eq!(totals.exit_code(), crate::exit::CONFLICTS);
        let summary = totals.summary();
        assert!(
            summary.contains("1 download")
                && summary.contains("1 conflict copy")
                && summary.contains("2 KiB"),
            "{summary}"
        );
        totals.add(&Action::Blocked {
            path: "c".into(),
            reason: "x".into(),
        });
        assert_eq!(totals.exit_code(), crate::exit::PARTIAL);
    }
}
