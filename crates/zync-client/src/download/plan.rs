//! Deciding what one change from E does on R. A [`Change`] and what R has around its path
//! ([`Here`], gathered beforehand by `look`) give a [`Plan`]: the parent directories to make,
//! then one [`Step`] (download, copy local content, delete, mkdir, symlink, keep R's edit as a
//! conflict copy, skip...). Pure: no I/O at all, so every case is tested on a table below;
//! `land` carries the plan out.

use std::collections::HashSet;
use std::path::PathBuf;
use zync_proto::Kind;

use zync_db::Synced;
use zync_fs::{Meta, RelPath, Stat};
use zync_proto::Change;

/// Files at least this big that R has an older version of are fetched as a delta.
pub const DELTA_MIN_SIZE: u64 = 256 << 10;

/// What stands at one path on R, and what zync last wrote there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// What `lstat` found.
    pub stat: Stat,
    /// For a file: its sha256 (the synced one when size and mtime still match).
    pub sha: Option<String>,
    /// For a file whose content is not the synced one: zync wrote it in a run that stopped
    /// before recording it.
    pub inflight: bool,
    /// What zync last recorded writing at the path (looked up only when something is there).
    pub synced: Option<Synced>,
}

impl Local {
    /// Nothing at the path.
    pub fn missing() -> Local {
        Local {
            stat: Stat::Missing,
            sha: None,
            inflight: false,
            synced: None,
        }
    }

    fn meta(&self) -> Option<&Meta> {
        match &self.stat {
            Stat::Entry(meta) => Some(meta),
            _ => None,
        }
    }

    fn is(&self, kind: Kind) -> bool {
        self.meta().is_some_and(|m| m.kind == kind)
    }

    /// True when what R has here is exactly what zync last wrote: replacing or removing it
    /// loses nothing.
    pub fn is_as_synced(&self) -> bool {
        let Some(meta) = self.meta() else {
            return false;
        };
        if meta.kind == Kind::File && self.inflight {
            return true;
        }
        let Some(synced) = &self.synced else {
            return false;
        };
        match meta.kind {
            Kind::File => synced.kind == Kind::File && synced.sha256 == self.sha,
            Kind::Symlink => synced.kind == Kind::Symlink && synced.target == meta.target,
            Kind::Dir => synced.kind == Kind::Dir,
        }
    }
}

/// Everything about R that planning one change reads.
#[derive(Debug, Clone)]
pub struct Here {
    /// The change's path, validated.
    pub rel: RelPath,
    /// For a change that writes: the ancestors not yet known to be directories, top down, with
    /// what stands at each. Below the first that is not a directory everything is missing.
    pub parents: Vec<(RelPath, Local)>,
    /// For a deletion: every parent is a real directory (no symlink, no file).
    pub parents_real: bool,
    /// What stands at the path.
    pub at: Local,
    /// The path's directory may hold partial downloads.
    pub partials: bool,
    /// For a file whose content R lacks at the path: a file on R that holds it.
    pub source: Option<PathBuf>,
    /// The umask new files and directories are masked with.
    pub umask: u32,
}

/// How to clear a path for an entry of another kind, or for E's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clear {
    /// Remove what zync wrote there (a file or link as synced).
    Remove,
    /// Remove the directory; one that holds files is kept as a conflict copy instead.
    RemoveDir,
    /// Keep R's version as a conflict copy (invariant 4 (docs/ARCHITECTURE.md)), saying why.
    Keep(&'static str),
}

/// What to do at one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do and nothing to record: the change is unusable, for this reason.
    Skip(&'static str),
    /// Something zync does not sync (`what`) stands where E has `wanted`: the user must act.
    Blocked {
        /// Where it stands.
        at: RelPath,
        /// What it is ("fifo").
        what: &'static str,
        /// What E has there ("a directory").
        wanted: &'static str,
    },
    /// A deletion below something that is not a directory: nothing of E's can be there, record
    /// it only.
    Forget,
    /// E deleted the path: remove partial downloads of it (when `partials`), then this.
    Delete {
        /// The path's directory may hold partial downloads.
        partials: bool,
        /// What to do with what stands there.
        removal: Removal,
    },
    /// R already has E's content or link: set mode and mtime where they differ, then record.
    Same {
        /// The mode to set, when it differs.
        mode: Option<u32>,
        /// The mtime to set, when it differs.
        mtime_ns: Option<i64>,
        /// What to record.
        record: Synced,
    },
    /// Make the directory, or set its mode.
    Dir {
        /// What to clear first.
        clear: Option<Clear>,
        /// Create it (with `mode`).
        create: bool,
        /// The mode to set on the existing directory, when it differs.
        set_mode: Option<u32>,
        /// What to record.
        record: Synced,
    },
    /// Replace the path with a symlink.
    Symlink {
        /// What to clear first.
        clear: Option<Clear>,
        /// What to record (its target).
        record: Synced,
    },
    /// The file needs E's content: copied from a source on R when one holds it, else fetched.
    File {
        /// What to clear first.
        clear: Option<Clear>,
        /// A file on R with the content, tried first.
        copy_from: Option<PathBuf>,
        /// Ask for a delta against R's older version at the path.
        delta: bool,
        /// The path's directory may hold a partial download to resume.
        partials: bool,
        /// What to record (size, mode, mtime, sha256).
        record: Synced,
    },
}

/// What a deletion does with what stands at the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Nothing of E's is there.
    Nothing,
    /// Remove the file or link zync wrote.
    Remove,
    /// Set the file aside: this page wants its content (`sha256`) elsewhere (a rename on E).
    SetAside(String),
    /// Remove the directory, unless it holds files that did not come from E.
    RemoveDir,
    /// Keep R's edit as a conflict copy, saying why.
    Keep(&'static str),
}

/// What the parent directories of a path need before the step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MakeDir {
    /// The directory.
    pub rel: RelPath,
    /// What to clear first (a file or link in the way: nothing is written through a link,
    /// invariant 3 (docs/ARCHITECTURE.md)).
    pub clear: Option<Clear>,
}

/// A change's plan: parents first, then the step at the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Missing parent directories to make, top down.
    pub parents: Vec<MakeDir>,
    /// What to do at the path.
    pub step: Step,
}

/// Plans `change` against what R has (`here`); `wanted` are the contents this page's file
/// changes need, so a deleted file holding one is set aside for a local copy.
pub fn plan(change: &Change, here: &Here, wanted: &HashSet<String>) -> Plan {
    if change.deleted {
        return Plan {
            parents: Vec::new(),
            step: delete(change, here, wanted),
        };
    }
    let mut parents = Vec::new();
    for (rel, local) in &here.parents {
        match &local.stat {
            Stat::Entry(m) if m.kind == Kind::Dir => {}
            Stat::Unsupported(what) => {
                return Plan {
                    parents,
                    step: Step::Blocked {
                        at: rel.clone(),
                        what,
                        wanted: "a directory",
                    },
                };
            }
            Stat::Entry(_) => parents.push(MakeDir {
                rel: rel.clone(),
                clear: Some(clear(local)),
            }),
            Stat::Missing => parents.push(MakeDir {
                rel: rel.clone(),
                clear: None,
            }),
        }
    }
    let step = match change.kind {
        zync_proto::Kind::File => file(change, here),
        zync_proto::Kind::Dir => dir(change, here),
        zync_proto::Kind::Symlink => symlink(change, here),
    };
    Plan { parents, step }
}

/// Clears a path for another kind of entry: removes what zync wrote, keeps anything else.
fn clear(local: &Local) -> Clear {
    if local.is(Kind::Dir) {
        Clear::RemoveDir
    } else if local.is_as_synced() {
        Clear::Remove
    } else {
        Clear::Keep("E replaced this path, which was changed on R")
    }
}

fn blocked(here: &Here, wanted: &'static str) -> Option<Step> {
    match here.at.stat {
        Stat::Unsupported(what) => Some(Step::Blocked {
            at: here.rel.clone(),
            what,
            wanted,
        }),
        _ => None,
    }
}

fn file(change: &Change, here: &Here) -> Step {
    let Some(sha) = change
        .sha256
        .as_deref()
        .filter(|s| zync_fs::is_sha256_hex(s))
    else {
        return Step::Skip("a file change without a valid sha256");
    };
    if let Some(step) = blocked(here, "a file") {
        return step;
    }
    // E's mode as R's user would have created the file (a 0666 file lands 0644 under umask
    // 022). The state records the mode written, so the file reads as unedited.
    let mode = zync_fs::mask_with(change.mode, here.umask);
    let record = Synced {
        kind: Kind::File,
        size: change.size,
        mtime_ns: change.mtime_ns,
        mode,
        sha256: Some(sha.to_string()),
        target: None,
    };
    let at = &here.at;
    let clear = match at.meta() {
        None => None,
        Some(meta) if meta.kind == Kind::File => {
            if at.sha.as_deref() == Some(sha) {
                // R already has this content: fix the attributes, download nothing.
                return Step::Same {
                    mode: (meta.mode & 0o777 != mode).then_some(mode),
                    mtime_ns: (meta.mtime_ns != change.mtime_ns).then_some(change.mtime_ns),
                    record,
                };
            }
            (!at.is_as_synced()).then_some(Clear::Keep(
                "E changed this file, which was also changed on R",
            ))
        }
        Some(_) => Some(clear(at)),
    };
    // R's older version stays in place until the new one is renamed over it: a delta against
    // it costs its signature and the changed bytes instead of the whole file.
    let delta = clear.is_none()
        && at
            .meta()
            .is_some_and(|m| m.kind == Kind::File && m.size >= DELTA_MIN_SIZE)
        && !here.partials;
    Step::File {
        clear,
        copy_from: here.source.clone(),
        delta,
        partials: here.partials,
        record,
    }
}

fn dir(change: &Change, here: &Here) -> Step {
    if let Some(step) = blocked(here, "a directory") {
        return step;
    }
    // Masked as a file's mode is (a 0777 directory on E is not world-writable on R), and
    // always the owner's to enter and write, or nothing could be synced into it.
    let mode = zync_fs::mask_with(change.mode, here.umask) | 0o700;
    let record = Synced {
        kind: Kind::Dir,
        size: 0,
        mtime_ns: change.mtime_ns,
        mode,
        sha256: None,
        target: None,
    };
    match here.at.meta() {
        Some(meta) if meta.kind == Kind::Dir => Step::Dir {
            clear: None,
            create: false,
            set_mode: (meta.mode & 0o777 != mode).then_some(mode),
            record,
        },
        Some(_) => Step::Dir {
            clear: Some(clear(&here.at)),
            create: true,
            set_mode: None,
            record,
        },
        None => Step::Dir {
            clear: None,
            create: true,
            set_mode: None,
            record,
        },
    }
}

fn symlink(change: &Change, here: &Here) -> Step {
    let Some(target) = change.target.as_deref() else {
        return Step::Skip("a symlink change without a target");
    };
    if let Some(step) = blocked(here, "a symlink") {
        return step;
    }
    let record = Synced {
        kind: Kind::Symlink,
        size: change.size,
        mtime_ns: change.mtime_ns,
        mode: 0,
        sha256: None,
        target: Some(target.to_string()),
    };
    let at = &here.at;
    let clear = match at.meta() {
        Some(meta) if meta.target.as_deref() == Some(target) => {
            return Step::Same {
                mode: None,
                mtime_ns: None,
                record,
            }
        }
        Some(meta) if meta.kind == Kind::Dir => Some(clear(at)),
        // A rename over a file or link replaces it; keep it first if R changed it.
        Some(_) => (!at.is_as_synced()).then_some(Clear::Keep(
            "E changed this path, which was also changed on R",
        )),
        None => None,
    };
    Step::Symlink { clear, record }
}

fn delete(change: &Change, here: &Here, wanted: &HashSet<String>) -> Step {
    // A parent that is not a real directory means nothing of E's can be below it.
    if !here.parents_real {
        return Step::Forget;
    }
    let at = &here.at;
    let removal = match at.meta() {
        None => Removal::Nothing,
        Some(meta) if meta.kind == Kind::Dir => {
            if change.kind == zync_proto::Kind::Dir {
                Removal::RemoveDir
            } else {
                Removal::Nothing
            }
        }
        Some(meta) if at.is_as_synced() => match &at.sha {
            Some(sha) if meta.kind == Kind::File && wanted.contains(sha) => {
                Removal::SetAside(sha.clone())
            }
            _ => Removal::Remove,
        },
        Some(_) => Removal::Keep("E deleted this file, which was changed on R"),
    };
    Step::Delete {
        partials: here.partials,
        removal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const NEW: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const EDIT: &str = "3333333333333333333333333333333333333333333333333333333333333333";

    fn rel(path: &str) -> RelPath {
        RelPath::parse(path).expect("a valid test path")
    }

    fn meta(kind: Kind, size: u64, target: Option<&str>) -> Meta {
        Meta {
            kind,
            size,
            mtime_ns: 5,
            mode: if kind == Kind::Dir { 0o755 } else { 0o644 },
            inode: 1,
            device: 1,
            target: target.map(str::to_string),
        }
    }

    fn synced_file(sha: &str, size: u64) -> Synced {
        Synced {
            kind: Kind::File,
            size,
            mtime_ns: 5,
            mode: 0o644,
            sha256: Some(sha.to_string()),
            target: None,
        }
    }

    /// A file on R with content `sha`; zync last wrote `synced` there.
    fn file_at(sha: &str, size: u64, synced: Option<&str>) -> Local {
        Local {
            stat: Stat::Entry(meta(Kind::File, size, None)),
            sha: Some(sha.to_string()),
            inflight: false,
            synced: synced.map(|s| synced_file(s, size)),
        }
    }

    fn dir_at(synced: bool) -> Local {
        Local {
            stat: Stat::Entry(meta(Kind::Dir, 0, None)),
            sha: None,
            inflight: false,
            synced: synced.then_some(Synced {
                kind: Kind::Dir,
                size: 0,
                mtime_ns: 5,
                mode: 0o755,
                sha256: None,
                target: None,
            }),
        }
    }

    fn link_at(target: &str, synced: bool) -> Local {
        Local {
            stat: Stat::Entry(meta(Kind::Symlink, target.len() as u64, Some(target))),
            sha: None,
            inflight: false,
            synced: synced.then(|| Synced {
                kind: Kind::Symlink,
                size: target.len() as u64,
                mtime_ns: 5,
                mode: 0,
                sha256: None,
                target: Some(target.to_string()),
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

    fn change(path: &str, kind: zync_proto::Kind) -> Change {
        Change {
            seq: 1,
            path: path.to_string(),
            kind,
            deleted: false,
            size: 0,
            mtime_ns: 9,
            mode: if kind == zync_proto::Kind::Dir {
                0o777
            } else {
                0o666
            },
            sha256: None,
            target: None,
        }
    }

    fn new_file(path: &str, sha: &str, size: u64) -> Change {
        Change {
            sha256: Some(sha.to_string()),
            size,
            ..change(path, zync_proto::Kind::File)
        }
    }

    fn deleted(path: &str, kind: zync_proto::Kind) -> Change {
        Change {
            deleted: true,
            ..change(path, kind)
        }
    }

    fn link(path: &str, target: &str) -> Change {
        Change {
            target: Some(target.to_string()),
            size: target.len() as u64,
            ..change(path, zync_proto::Kind::Symlink)
        }
    }

    /// E's file as R records it: 0666 masked by umask 022.
    fn record(sha: &str, size: u64) -> Synced {
        Synced {
            mtime_ns: 9,
            ..synced_file(sha, size)
        }
    }

    fn fetch(clear: Option<Clear>, sha: &str, size: u64) -> Step {
        fetch_with(clear, None, false, false, sha, size)
    }

    fn fetch_with(
        clear: Option<Clear>,
        copy_from: Option<PathBuf>,
        delta: bool,
        partials: bool,
        sha: &str,
        size: u64,
    ) -> Step {
        Step::File {
            clear,
            copy_from,
            delta,
            partials,
            record: record(sha, size),
        }
    }

    fn dir_record() -> Synced {
        Synced {
            kind: Kind::Dir,
            size: 0,
            mtime_ns: 9,
            mode: 0o755,
            sha256: None,
            target: None,
        }
    }

    fn link_record(target: &str) -> Synced {
        Synced {
            kind: Kind::Symlink,
            size: target.len() as u64,
            mtime_ns: 9,
            mode: 0,
            sha256: None,
            target: Some(target.to_string()),
        }
    }

    const EDITED: &str = "E changed this file, which was also changed on R";
    const REPLACED: &str = "E replaced this path, which was changed on R";

    #[test]
    fn every_kind_of_change_meets_every_kind_of_local_state() {
        let big = DELTA_MIN_SIZE;
        let mut renamed = here("b.txt", Local::missing());
        renamed.source = Some(PathBuf::from("/r/a.txt"));
        let mut resumable = here("a.txt", file_at(OLD, big, Some(OLD)));
        resumable.partials = true;
        let mut inflight = file_at(EDIT, 3, Some(OLD));
        inflight.inflight = true;
        let wanted: HashSet<String> = [OLD.to_string()].into();
        let none = HashSet::new();
        #[rustfmt::skip]
        let cases: Vec<(&str, Change, Here, &HashSet<String>, Step)> = vec![
            ("a new file is fetched",
             new_file("a.txt", NEW, 3), here("a.txt", Local::missing()), &none,
             fetch(None, NEW, 3)),
            ("a changed file R did not edit is fetched over it",
             new_file("a.txt", NEW, 3), here("a.txt", file_at(OLD, 3, Some(OLD))), &none,
             fetch(None, NEW, 3)),
            ("a big changed file is fetched as a delta",
             new_file("a.txt", NEW, big), here("a.txt", file_at(OLD, big, Some(OLD))), &none,
             fetch_with(None, None, true, false, NEW, big)),
            ("a partial download is resumed rather than a delta asked for",
             new_file("a.txt", NEW, big), resumable, &none,
             fetch_with(None, None, false, true, NEW, big)),
            ("a file R edited is kept as a conflict copy first",
             new_file("a.txt", NEW, 3), here("a.txt", file_at(EDIT, 3, Some(OLD))), &none,
             fetch(Some(Clear::Keep(EDITED)), NEW, 3)),
            ("a file zync never recorded is R's own",
             new_file("a.txt", NEW, 3), here("a.txt", file_at(EDIT, 3, None)), &none,
             fetch(Some(Clear::Keep(EDITED)), NEW, 3)),
            ("zync's own unrecorded write is no edit",
             new_file("a.txt", NEW, 3), here("a.txt", inflight), &none,
             fetch(None, NEW, 3)),
            ("an unchanged file only gets E's mode and mtime",
             new_file("a.txt", OLD, 3), here("a.txt", file_at(OLD, 3, Some(OLD))), &none,
             Step::Same { mode: None, mtime_ns: Some(9), record: record(OLD, 3) }),
            ("content R has elsewhere is copied (a rename on E)",
             new_file("b.txt", NEW, 3), renamed, &none,
             fetch_with(None, Some(PathBuf::from("/r/a.txt")), false, false, NEW, 3)),
            ("a deleted file is removed",
             deleted("a.txt", zync_proto::Kind::File), here("a.txt", file_at(OLD, 3, Some(OLD))), &none,
             Step::Delete { partials: false, removal: Removal::Remove }),
            ("a deleted file whose content the page wants is set aside",
             deleted("a.txt", zync_proto::Kind::File), here("a.txt", file_at(OLD, 3, Some(OLD))), &wanted,
             Step::Delete { partials: false, removal: Removal::SetAside(OLD.to_string()) }),
            ("a deleted file R edited is kept",
             deleted("a.txt", zync_proto::Kind::File), here("a.txt", file_at(EDIT, 3, Some(OLD))), &wanted,
             Step::Delete { partials: false, removal: Removal::Keep("E deleted this file, which was changed on R") }),
            ("a deletion R already has",
             deleted("a.txt", zync_proto::Kind::File), here("a.txt", Local::missing()), &none,
             Step::Delete { partials: false, removal: Removal::Nothing }),
            ("a deleted directory is removed if empty",
             deleted("d", zync_proto::Kind::Dir), here("d", dir_at(true)), &none,
             Step::Delete { partials: false, removal: Removal::RemoveDir }),
            ("a deleted file does not remove a directory R has there",
             deleted("d", zync_proto::Kind::File), here("d", dir_at(true)), &none,
             Step::Delete { partials: false, removal: Removal::Nothing }),
            ("a deletion below a link or file is only recorded",
             deleted("l/a.txt", zync_proto::Kind::File), Here { parents_real: false, ..here("l/a.txt", Local::missing()) }, &none,
             Step::Forget),
            ("file to directory: zync's file is removed",
             change("a", zync_proto::Kind::Dir), here("a", file_at(OLD, 3, Some(OLD))), &none,
             Step::Dir { clear: Some(Clear::Remove), create: true, set_mode: None, record: dir_record() }),
            ("file to directory: R's edited file is kept",
             change("a", zync_proto::Kind::Dir), here("a", file_at(EDIT, 3, Some(OLD))), &none,
             Step::Dir { clear: Some(Clear::Keep(REPLACED)), create: true, set_mode: None, record: dir_record() }),
            ("directory to file: the directory goes unless it holds files",
             new_file("a", NEW, 3), here("a", dir_at(true)), &none,
             fetch(Some(Clear::RemoveDir), NEW, 3)),
            ("file to symlink: zync's file is replaced",
             link("a", "t"), here("a", file_at(OLD, 3, Some(OLD))), &none,
             Step::Symlink { clear: None, record: link_record("t") }),
            ("file to symlink: R's edited file is kept",
             link("a", "t"), here("a", file_at(EDIT, 3, Some(OLD))), &none,
             Step::Symlink { clear: Some(Clear::Keep("E changed this path, which was also changed on R")), record: link_record("t") }),
            ("directory to symlink",
             link("a", "t"), here("a", dir_at(true)), &none,
             Step::Symlink { clear: Some(Clear::RemoveDir), record: link_record("t") }),
            ("symlink to file: zync's link is removed",
             new_file("a", NEW, 3), here("a", link_at("t", true)), &none,
             fetch(Some(Clear::Remove), NEW, 3)),
            ("symlink to directory: R's own link is kept",
             change("a", zync_proto::Kind::Dir), here("a", link_at("t", false)), &none,
             Step::Dir { clear: Some(Clear::Keep(REPLACED)), create: true, set_mode: None, record: dir_record() }),
            ("an unchanged symlink is only recorded",
             link("a", "t"), here("a", link_at("t", true)), &none,
             Step::Same { mode: None, mtime_ns: None, record: link_record("t") }),
            ("an existing directory gets E's mode, masked and owner-writable",
             change("d", zync_proto::Kind::Dir), here("d", Local { stat: Stat::Entry(Meta { mode: 0o700, ..meta(Kind::Dir, 0, None) }), ..dir_at(true) }), &none,
             Step::Dir { clear: None, create: false, set_mode: Some(0o755), record: dir_record() }),
            ("a fifo in the way blocks",
             new_file("a", NEW, 3), here("a", Local { stat: Stat::Unsupported("fifo"), ..Local::missing() }), &none,
             Step::Blocked { at: rel("a"), what: "fifo", wanted: "a file" }),
            ("a file change without a valid sha256 is skipped",
             new_file("a", "nope", 3), here("a", Local::missing()), &none,
             Step::Skip("a file change without a valid sha256")),
            ("a symlink change without a target is skipped",
             change("a", zync_proto::Kind::Symlink), here("a", Local::missing()), &none,
             Step::Skip("a symlink change without a target")),
        ];
        for (what, change, here, wanted, expected) in cases {
            let found = plan(&change, &here, wanted).step;
            assert_eq!(
                found, expected,
                "{what}\nexpected: {expected:?}\nfound: {found:?}"
            );
        }
    }

    #[test]
    fn parents_in_the_way_are_cleared_and_made_top_down() {
        let mut h = here("a/b/c.txt", Local::missing());
        h.parents = vec![
            (rel("a"), file_at(OLD, 3, Some(OLD))),
            (rel("a/b"), Local::missing()),
        ];
        let p = plan(&new_file("a/b/c.txt", NEW, 3), &h, &HashSet::new());
        let expected = vec![
            MakeDir {
                rel: rel("a"),
                clear: Some(Clear::Remove),
            },
            MakeDir {
                rel: rel("a/b"),
                clear: None,
            },
        ];
        assert_eq!(p.parents, expected, "found {:?}", p.parents);
        assert_eq!(p.step, fetch(None, NEW, 3));

        h.parents = vec![(rel("a"), link_at("/elsewhere", false))];
        let p = plan(&new_file("a/b/c.txt", NEW, 3), &h, &HashSet::new());
        assert_eq!(
            p.parents,
            vec![MakeDir {
                rel: rel("a"),
                clear: Some(Clear::Keep(REPLACED)),
            }],
            "a link of R's own in a parent is kept aside, never written through"
        );

        h.parents = vec![
            (rel("a"), dir_at(true)),
            (
                rel("a/b"),
                Local {
                    stat: Stat::Unsupported("socket"),
                    ..Local::missing()
                },
            ),
        ];
        let p = plan(&new_file("a/b/c.txt", NEW, 3), &h, &HashSet::new());
        assert_eq!(p.parents, Vec::new());
        assert_eq!(
            p.step,
            Step::Blocked {
                at: rel("a/b"),
                what: "socket",
                wanted: "a directory"
            }
        );
    }
}
