//! Whether a served directory is still the one being indexed. A deleted root, an unmounted
//! disk (its mount point left empty) or a root emptied all at once must never become "delete
//! everything on R"; a root replaced by another directory must never be watched blind.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::SystemTime;

/// Which directory the watcher follows at a root's path: device, inode and birth time. ext4
/// and tmpfs give a freed inode number to the next directory made beside it, so a root removed
/// and made again (`rm -rf code && git clone ... code`) often has the old device and inode; its
/// birth time, where the file system keeps one, tells the two apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    dev: u64,
    ino: u64,
    born: Option<SystemTime>,
}

impl Identity {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            born: meta.created().ok(),
        }
    }
}

/// What is at a root's path now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// Nothing, or something that is not a directory (or cannot be read).
    Gone,
    /// A directory that holds no entry at all, ignored ones included.
    Empty(Identity),
    /// A directory with something in it.
    Full(Identity),
}

impl Look {
    /// Looks at `path`: one `stat`, and one read of the directory's first entry. zync's own
    /// temp files (a barrier's cookie, an interrupted apply's) do not make it full.
    pub(crate) fn at(path: &Path) -> Look {
        let Ok(meta) = std::fs::metadata(path) else {
            return Look::Gone;
        };
        if !meta.is_dir() {
            return Look::Gone;
        }
        let id = Identity::of(&meta);
        let ours = |name: &std::ffi::OsStr| {
            name.as_encoded_bytes()
                .starts_with(zync_fs::TEMP_PREFIX.as_bytes())
        };
        let empty = |mut entries: std::fs::ReadDir| {
            !entries.any(|e| e.map_or(true, |e| !ours(&e.file_name())))
        };
        match std::fs::read_dir(path).map(empty) {
            Ok(true) => Look::Empty(id),
            Ok(false) => Look::Full(id),
            Err(_) => Look::Gone,
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
}

/// What to do about a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Index it as usual.
    Fine,
    /// Another directory with content stands at the path: watch it and scan it against the
    /// index, as at a restart.
    Replaced,
    /// Record nothing for it until it is back.
    Unavailable(Why),
}

/// The rule. `watched` is the directory the watcher follows (None when nothing is watched);
/// `indexed` tells whether the index holds live entries for the root, asked only of an empty
/// directory. An empty root the index knows nothing of is fine (a new, empty served
/// directory); an empty root whose index has entries is unavailable: deleting every file of
/// a served directory at once looks exactly like an unmounted disk or a wiped directory, and
/// a user who means it leaves one file in it.
pub(crate) fn judge(look: Look, watched: Option<Identity>, indexed: bool) -> Verdict {
    match look {
        Look::Gone => Verdict::Unavailable(Why::Missing),
        Look::Empty(id) if indexed => Verdict::Unavailable(Why::Emptied {
            other_device: watched.is_some_and(|w| w.dev != id.dev),
        }),
        Look::Empty(id) | Look::Full(id) if watched.is_some_and(|w| w != id) => Verdict::Replaced,
        Look::Empty(_) | Look::Full(_) => Verdict::Fine,
    }
}

/// The error a user reads: what happened, what zync did, and what to do.
pub(crate) fn message(why: Why, name: &str, path: &Path) -> String {
    let what = match why {
        Why::Missing => "disappeared (it is gone or not a directory)".to_string(),
        Why::Emptied { other_device: true } => {
            "is empty and on another device than before (an unmounted disk?)".to_string()
        }
        Why::Emptied {
            other_device: false,
        } => "was emptied at once".to_string(),
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

    const fn id(dev: u64, ino: u64) -> Identity {
        Identity {
            dev,
            ino,
            born: None,
        }
    }

    const A: Identity = id(1, 10);

    fn born_later(of: Identity) -> Identity {
        Identity {
            born: Some(SystemTime::now()),
            ..of
        }
    }

    #[test]
    fn every_look_meets_every_watch() {
        use Verdict::*;
        let cases = [
            // (what is there, watched, index has entries, verdict)
            (Look::Gone, Some(A), true, Unavailable(Why::Missing)),
            (Look::Gone, None, false, Unavailable(Why::Missing)),
            (Look::Full(A), Some(A), true, Fine),
            (Look::Full(A), None, true, Fine),
            (Look::Full(id(1, 11)), Some(A), true, Replaced),
            (Look::Full(id(2, 10)), Some(A), true, Replaced),
            // The old inode number given to a directory made since.
            (Look::Full(born_later(A)), Some(A), true, Replaced),
            (Look::Empty(born_later(A)), Some(A), false, Replaced),
            (
                Look::Empty(A),
                Some(A),
                true,
                Unavailable(Why::Emptied {
                    other_device: false,
                }),
            ),
            (
                Look::Empty(id(2, 1)),
                Some(A),
                true,
                Unavailable(Why::Emptied { other_device: true }),
            ),
            (Look::Empty(A), Some(A), false, Fine),
            (Look::Empty(id(1, 11)), Some(A), false, Replaced),
            (Look::Empty(A), None, false, Fine),
        ];
        for (look, watched, indexed, want) in cases {
            assert_eq!(
                judge(look, watched, indexed),
                want,
                "{look:?} watched {watched:?} indexed {indexed}"
            );
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
    }
}
