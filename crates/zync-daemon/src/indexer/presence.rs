//! Whether a served directory is still the one being indexed. A deleted root, an unmounted
//! disk (its mount point left empty) or a root emptied all at once must never become "delete
//! everything on R"; a root whose path leads to another directory than the one the daemon
//! pinned at start (moved or replaced, or a directory above it swapped for a symlink by
//! another user) is never read, served or taken for deleted.

use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use zync_fs::RootId;

/// What is at a root's path now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// Nothing, or something that is not a directory (or cannot be read).
    Gone,
    /// A directory that holds no entry at all, ignored ones included.
    Empty(RootId),
    /// A directory with something in it.
    Full(RootId),
}

impl Look {
    /// Looks at `path`: one open, and one read of the directory's first entry through that
    /// descriptor, so what is judged empty is the directory whose identity is taken. zync's
    /// own temp files (a barrier's cookie, an interrupted apply's) do not make it full.
    pub(crate) fn at(path: &Path) -> Look {
        // Following symlinks: another user's symlink swapped in for the root is looked at as
        // the directory it leads to, which is then not the pinned one.
        let Ok(fd) = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            return Look::Gone;
        };
        let Ok(id) = RootId::of_fd(fd.as_fd()) else {
            return Look::Gone;
        };
        let Ok(mut entries) = rustix::fs::Dir::read_from(&fd) else {
            return Look::Gone;
        };
        let ours = |name: &[u8]| name.starts_with(zync_fs::TEMP_PREFIX.as_bytes());
        loop {
            match entries.read() {
                None => return Look::Empty(id),
                Some(Err(_)) => return Look::Gone,
                Some(Ok(entry)) => {
                    let name = entry.file_name().to_bytes();
                    if name != b"." && name != b".." && !ours(name) {
                        return Look::Full(id);
                    }
                }
            }
        }
    }

    /// The identity of the directory looked at, if one was there.
    pub(crate) fn id(self) -> Option<RootId> {
        match self {
            Look::Gone => None,
            Look::Empty(id) | Look::Full(id) => Some(id),
        }
    }
}

/// Why a served directory is unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// The path is gone, or not a directory.
    Missing,
    /// The directory is empty while the index holds entries for it. `other_device`: it is
    /// not on the device it was on (an unmounted disk leaves its empty mount point).
    Emptied {
        /// The empty directory is on another device than the indexed one.
        other_device: bool,
    },
    /// The path leads to another directory than the one pinned when the daemon started.
    Replaced,
}

/// What to do about a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Index it as usual.
    Fine,
    /// The pinned directory stands at the path, but the watcher follows another one (or
    /// none): watch it again and scan it against the index, as at a restart.
    Rewatch,
    /// Record nothing for it until it is back.
    Unavailable(Why),
}

/// The rule. `pinned` is the directory the daemon serves at the root's path; `watched` the
/// one the watcher follows (None when nothing is watched); `indexed` tells whether the index
/// holds live entries for the root, asked only of an empty directory. Another directory than
/// the pinned one is never the root, whatever it holds: the daemon cannot tell the user's
/// `mv proj proj.old && mkdir proj` from another user's swap, and only a restart makes it
/// serve the new one. An empty root the index knows nothing of is fine (a new, empty served
/// directory); an empty root whose index has entries is unavailable: deleting every file of
/// a served directory at once looks exactly like an unmounted disk or a wiped directory, and
/// a user who means it leaves one file in it.
pub(crate) fn judge(look: Look, pinned: RootId, watched: Option<RootId>, indexed: bool) -> Verdict {
    match look {
        Look::Gone => Verdict::Unavailable(Why::Missing),
        // An unmounted disk's empty mount point says more than "another directory".
        Look::Empty(id) if indexed && id.dev != pinned.dev => {
            Verdict::Unavailable(Why::Emptied { other_device: true })
        }
        Look::Empty(id) | Look::Full(id) if id != pinned => Verdict::Unavailable(Why::Replaced),
        Look::Empty(_) if indexed => Verdict::Unavailable(Why::Emptied {
            other_device: false,
        }),
        Look::Empty(id) | Look::Full(id) if watched.is_some_and(|w| w != id) => Verdict::Rewatch,
        Look::Empty(_) | Look::Full(_) => Verdict::Fine,
    }
}

/// The error a user reads: what happened, what zync did, and what to do.
pub(crate) fn message(why: Why, name: &str, path: &Path) -> String {
    if why == Why::Replaced {
        return format!(
            "served directory {name} ({}) is no longer the directory zync-daemon started with: \
             it was moved or replaced, or a directory above it was swapped for a symlink (by \
             another user?); nothing is read from it or served, no deletions were recorded and \
             R keeps its files. Put the directory back and syncing resumes; if you moved or \
             replaced it yourself, restart zync-daemon to serve the one there now",
            path.display()
        );
    }
    let what = match why {
        Why::Missing => "disappeared (it is gone or not a directory)".to_string(),
        Why::Emptied { other_device: true } => {
            "is empty and on another device than before (an unmounted disk?)".to_string()
        }
        Why::Emptied {
            other_device: false,
        } => "was emptied at once".to_string(),
        Why::Replaced => String::new(),
    };
    format!(
        "served directory {name} ({}) {what}; no deletions were recorded and R keeps its \
         files; put it back (or remount it) and syncing resumes; to really empty it, leave \
         one file in it (touch {}/.keep)",
        path.display(),
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn id(dev: u64, ino: u64) -> RootId {
        RootId {
            dev,
            ino,
            born_ns: None,
        }
    }

    const A: RootId = id(1, 10);

    const fn born_later(of: RootId) -> RootId {
        RootId {
            born_ns: Some(1_796_000_000_000_000_000),
            ..of
        }
    }

    #[test]
    fn every_look_meets_the_pinned_directory_and_every_watch() {
        use Verdict::*;
        let replaced = Unavailable(Why::Replaced);
        let cases = [
            // (what is there, watched, index has entries, verdict); A is pinned.
            (Look::Gone, Some(A), true, Unavailable(Why::Missing)),
            (Look::Gone, None, false, Unavailable(Why::Missing)),
            (Look::Full(A), Some(A), true, Fine),
            (Look::Full(A), None, true, Fine),
            // Another directory at the path (a symlink swapped in, or one made there), with
            // or without content, watched or not: never the root.
            (Look::Full(id(1, 11)), Some(A), true, replaced),
            (Look::Full(id(1, 11)), Some(id(1, 11)), true, replaced),
            (Look::Full(id(1, 11)), None, false, replaced),
            (Look::Full(id(2, 10)), Some(A), true, replaced),
            (Look::Empty(id(1, 11)), Some(A), false, replaced),
            // The old inode number given to a directory made since.
            (Look::Full(born_later(A)), Some(A), true, replaced),
            (Look::Empty(born_later(A)), Some(A), false, replaced),
            (Look::Empty(born_later(A)), Some(A), true, replaced),
            // The pinned directory back while the watcher follows another one.
            (Look::Full(A), Some(id(1, 11)), true, Rewatch),
            (
                Look::Empty(A),
                Some(A),
                true,
                Unavailable(Why::Emptied {
                    other_device: false,
                }),
            ),
            // An unmounted disk's empty mount point.
            (
                Look::Empty(id(2, 1)),
                Some(A),
                true,
                Unavailable(Why::Emptied { other_device: true }),
            ),
            (Look::Empty(A), Some(A), false, Fine),
            (Look::Empty(A), None, false, Fine),
        ];
        for (look, watched, indexed, want) in cases {
            assert_eq!(
                judge(look, A, watched, indexed),
                want,
                "{look:?} watched {watched:?} indexed {indexed}"
            );
        }
    }

    /// The message for a replaced root names it and says what happened and what to do.
    #[test]
    fn a_replaced_root_is_explained() {
        let said = message(Why::Replaced, "code", Path::new("/srv/code"));
        for part in [
            "code (/srv/code)",
            "swapped for a symlink",
            "no deletions were recorded",
            "restart zync-daemon",
        ] {
            assert!(said.contains(part), "{part:?} missing: {said}");
        }
    }

    #[test]
    fn looking_tells_gone_empty_and_full_apart() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        assert_eq!(Look::at(&root), Look::Gone);
        std::fs::write(&root, "a file").unwrap();
        assert_eq!(Look::at(&root), Look::Gone);
        std::fs::remove_file(&root).unwrap();
        std::fs::create_dir(&root).unwrap();
        assert!(matches!(Look::at(&root), Look::Empty(_)));
        // A barrier's cookie or an interrupted write's temp file is not the user's content:
        // a root wiped while one is there is still emptied.
        std::fs::write(root.join(".zync-tmp-cookie-1-2"), "").unwrap();
        std::fs::write(root.join(".zync-tmp-0123"), "partial").unwrap();
        assert!(matches!(Look::at(&root), Look::Empty(_)));
        std::fs::write(root.join(".hidden"), "").unwrap();
        assert!(matches!(Look::at(&root), Look::Full(_)));
        // A symlink at the path is looked at as the directory it leads to.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        assert_eq!(
            Look::at(&link),
            Look::Empty(RootId::of(&elsewhere).unwrap())
        );
    }
}
