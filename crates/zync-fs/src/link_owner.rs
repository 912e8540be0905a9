//! Who owns the symlinks on the way to a directory the user named (a client's mapping, a
//! daemon's served directory, zync-apply's `--dirs`): whoever owns a symlink can point it
//! anywhere, so a directory reached through another user's link is theirs to choose. The
//! client, the daemon and zync-apply refuse such a path at start (invariants 3 and 8,
//! docs/ARCHITECTURE.md); a pinned root ([`crate::pin_root`]) covers the time after.

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// More symlinks than the kernel follows on one path (40): a loop, which the caller's own
/// resolution then reports.
const MAX_LINKS: usize = 40;

/// This process's effective user id.
fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The first symlink met on the way to `path` (itself, a directory above it, or one that a
/// symlink on the way leads through) owned by a user other than this one or root, and its
/// owner. Such a link planted where the directory was not made yet (in a directory such as
/// /tmp), or behind a symlink of the user's own, would send what zync writes, or serves,
/// where its owner chooses. The kernel's `fs.protected_symlinks` refuses some such links, not
/// all, and is off on some machines. The way is followed as the kernel would, one component
/// at a time; a missing component ends it (what is made there is the user's).
pub fn others_symlink(path: &Path) -> Option<(PathBuf, u32)> {
    let me = effective_uid();
    let mut todo: VecDeque<PathBuf> = std::path::absolute(path)
        .ok()?
        .components()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut at = PathBuf::from("/");
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        match part.components().next() {
            Some(Component::RootDir) => at = PathBuf::from("/"),
            Some(Component::ParentDir) => {
                at.pop();
            }
            Some(Component::Normal(name)) => {
                let next = at.join(name);
                let Ok(meta) = std::fs::symlink_metadata(&next) else {
                    return None;
                };
                if !meta.file_type().is_symlink() {
                    at = next;
                    continue;
                }
                if meta.uid() != me && meta.uid() != 0 {
                    return Some((next, meta.uid()));
                }
                links += 1;
                let target = std::fs::read_link(&next).ok()?;
                if links > MAX_LINKS {
                    return None;
                }
                for c in target.components().rev() {
                    todo.push_front(PathBuf::from(c.as_os_str()));
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another user's symlink is found through it, below it and behind a symlink of one's
    /// own; one's own symlinks (absolute or relative) and a loop are not another user's.
    #[test]
    fn another_users_symlink_is_found_on_the_way_as_the_kernel_follows_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let theirs = dir.path().join("theirs");
        std::fs::create_dir_all(theirs.join("sub")).expect("mkdir");
        let link = dir.path().join("proj");
        std::os::unix::fs::symlink(&theirs, &link).expect("symlink");
        let mine = dir.path().join("mine");
        std::os::unix::fs::symlink(&theirs, &mine).expect("symlink");
        std::fs::create_dir(dir.path().join("real")).expect("mkdir");
        std::os::unix::fs::symlink("real", dir.path().join("rel")).expect("symlink");
        std::os::unix::fs::symlink("loop", dir.path().join("loop")).expect("symlink");
        for mine in [
            mine.clone(),
            mine.join("sub"),
            dir.path().join("rel/x"),
            dir.path().join("loop"),
            dir.path().join("missing/deeper"),
        ] {
            assert_eq!(others_symlink(&mine), None, "{}", mine.display());
        }
        if std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).is_err() {
            eprintln!("not root: cannot give the symlink to another user; skipped");
            return;
        }
        let mine_to_theirs = dir.path().join("mine-to-theirs");
        std::os::unix::fs::symlink(&link, &mine_to_theirs).expect("symlink");
        for through in [link.clone(), link.join("sub"), mine_to_theirs.join("sub")] {
            assert_eq!(
                others_symlink(&through),
                Some((link.clone(), 65534)),
                "{}",
                through.display()
            );
        }
    }
}
