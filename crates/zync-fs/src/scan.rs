//! Walking a synced root (or one subtree of it) to list every entry zync syncs, with the same
//! ignore rules the watcher uses. The daemon scans at start to find changes made while it was
//! down (invariant 6) and after a watcher overflow.

use crate::ignore::IgnoreRules;
use crate::meta::{lstat, EntryKind, Meta, Stat};
use crate::path::RelPath;
use ::ignore::WalkBuilder;
use std::path::{Path, PathBuf};

/// One entry found by [`scan`].
#[derive(Debug, Clone)]
pub struct ScanEntry {
    /// Where it is, relative to the root.
    pub path: RelPath,
    /// What it is.
    pub meta: Meta,
}

/// What [`scan`] found.
#[derive(Debug, Default)]
pub struct ScanResult {
    /// Entries in walk order: a parent always comes before its children.
    pub entries: Vec<ScanEntry>,
    /// Problems that did not stop the walk, such as an unreadable directory.
    pub errors: Vec<String>,
    /// Paths whose contents could not be read (an unreadable directory): entries below them
    /// are unknown, not deleted.
    pub unreadable: Vec<RelPath>,
    /// True when an error could not be tied to a path below the root: nothing missing from
    /// `entries` can then be taken as deleted.
    pub incomplete: bool,
}

impl ScanResult {
    /// Whether `path` was really seen to be absent: false when it lies in or below a path the
    /// walk could not read, or the walk was incomplete.
    pub fn covers(&self, path: &RelPath) -> bool {
        !self.incomplete
            && !self
                .unreadable
                .iter()
                .any(|u| path == u || path.starts_with(u))
    }

    fn record(&mut self, root: &Path, path: Option<&Path>, message: String) {
        match path.map(|p| relative(root, p)) {
            Some(Rel::Path(rel)) => self.unreadable.push(rel),
            _ => self.incomplete = true,
        }
        self.errors.push(message);
    }
}

/// The path an `ignore` walk error is about, when it names one.
fn error_path(e: &ignore::Error) -> Option<&Path> {
    match e {
        ignore::Error::WithPath { path, .. } => Some(path),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        _ => None,
    }
}

/// Walks `root` (or only the subtree `under`, which is itself included when it exists) without
/// following symlinks. Skips ignored paths and everything beneath an ignored directory, non-UTF-8
/// names (logged as a warning), unsupported file types (logged at debug) and entries that vanish
/// mid-walk. Never includes `root` itself. Parents come before their children; siblings are
/// sorted by name. An unreadable directory is reported in [`ScanResult::errors`], not fatal.
pub fn scan(root: &Path, rules: &IgnoreRules, under: Option<&RelPath>) -> ScanResult {
    let mut result = ScanResult::default();
    let start = match under {
        None => root.to_path_buf(),
        Some(under) => match start_under(root, rules, under, &mut result) {
            Some(start) => start,
            None => return result,
        },
    };
    let mut walker = WalkBuilder::new(&start);
    let filter_root = root.to_path_buf();
    let filter_rules = rules.clone();
    walker
        .standard_filters(false)
        .hidden(false)
        .follow_links(false)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry(move |entry| {
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            match relative(&filter_root, entry.path()) {
                Rel::Root => true,
                Rel::Path(rel) => !filter_rules.is_ignored(&rel, is_dir),
                Rel::Bad(why) => {
                    tracing::warn!("skipping {}: {why}", entry.path().display());
                    false
                }
            }
        });
    for item in walker.build() {
        let entry = match item {
            Ok(entry) => entry,
            Err(e) => {
                if e.io_error().is_some_and(crate::meta::is_missing) {
                    continue; // vanished mid-walk
                }
                tracing::warn!("scan of {}: {e}", root.display());
                result.record(root, error_path(&e), e.to_string());
                continue;
            }
        };
        if entry.depth() == 0 {
            continue; // root itself, or `under`, which start_under already added
        }
        let Rel::Path(rel) = relative(root, entry.path()) else {
            continue;
        };
        push_entry(&mut result, entry.path(), rel);
    }
    result
}

/// For a scan of `under`: adds `under` itself and returns the directory to walk, or `None` when
/// there is nothing (more) to walk. `under` counts as existing only when every ancestor is a real
/// directory, so a symlinked parent is never followed.
fn start_under(
    root: &Path,
    rules: &IgnoreRules,
    under: &RelPath,
    result: &mut ScanResult,
) -> Option<PathBuf> {
    for ancestor in under.ancestors() {
        match lstat(&ancestor.to_path(root)) {
            Ok(Stat::Entry(m)) if m.kind == EntryKind::Dir => {}
            Ok(_) => return None,
            Err(e) => {
                let path = ancestor.to_path(root);
                result.record(
                    root,
                    Some(&path),
                    format!("cannot inspect {}: {e}", path.display()),
                );
                return None;
            }
        }
    }
    let path = under.to_path(root);
    let meta = match lstat(&path) {
        Ok(Stat::Entry(meta)) => meta,
        Ok(_) => return None,
        Err(e) => {
            result.record(
                root,
                Some(&path),
                format!("cannot inspect {}: {e}", path.display()),
            );
            return None;
        }
    };
    let is_dir = meta.kind == EntryKind::Dir;
    if rules.is_ignored(under, is_dir) {
        return None;
    }
    result.entries.push(ScanEntry {
        path: under.clone(),
        meta,
    });
    is_dir.then_some(path)
}

/// `lstat`s one walked entry and records it if zync syncs its kind.
fn push_entry(result: &mut ScanResult, path: &Path, rel: RelPath) {
    match lstat(path) {
        Ok(Stat::Entry(meta)) => result.entries.push(ScanEntry { path: rel, meta }),
        Ok(Stat::Missing) => {}
        Ok(Stat::Unsupported(what)) => {
            tracing::debug!(
                "skipping {}: unsupported file type ({what})",
                path.display()
            );
        }
        Err(e) => {
            result
                .errors
                .push(format!("cannot inspect {}: {e}", path.display()));
            result.unreadable.push(rel);
        }
    }
}

enum Rel {
    Root,
    Path(RelPath),
    Bad(String),
}

fn relative(root: &Path, path: &Path) -> Rel {
    match path.strip_prefix(root) {
        Ok(p) if p.as_os_str().is_empty() => Rel::Root,
        Ok(p) => match RelPath::from_path(p) {
            Ok(rel) => Rel::Path(rel),
            Err(e) => Rel::Bad(e.to_string()),
        },
        Err(_) => Rel::Bad("outside the root".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn paths(result: &ScanResult) -> Vec<&str> {
        result.entries.iter().map(|e| e.path.as_str()).collect()
    }

    fn tree() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().expect("tempdir");
        let r = tmp.path();
        for d in ["a/b", "node_modules/x", "logs", "z"] {
            fs::create_dir_all(r.join(d)).expect("mkdir");
        }
        for f in [
            "a/b/c.txt",
            "a/one.txt",
            "node_modules/x/i.js",
            "logs/l.txt",
            "top.pyc",
            "z/k",
        ] {
            fs::write(r.join(f), f).expect("write");
        }
        fs::write(r.join(".zync-tmp-123"), b"partial").expect("write");
        tmp
    }

    #[test]
    fn lists_tree_with_ignores_parents_first() {
        let tmp = tree();
        let rules = IgnoreRules::new(tmp.path(), &["logs/".to_string()], true).expect("rules");
        let result = scan(tmp.path(), &rules, None);
        assert!(result.errors.is_empty(), "errors: {:?}", result.errors);
        assert_eq!(
            paths(&result),
            vec!["a", "a/b", "a/b/c.txt", "a/one.txt", "z", "z/k"]
        );
        let c = &result.entries[2];
        assert_eq!((c.meta.kind, c.meta.size), (EntryKind::File, 9));
        assert_eq!(result.entries[0].meta.kind, EntryKind::Dir);
    }

    #[test]
    fn symlinks_are_listed_not_followed_and_fifos_skipped() {
        let tmp = tree();
        let r = tmp.path();
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join("secret"), b"s").expect("write");
        symlink(outside.path(), r.join("link")).expect("symlink");
        let c = std::ffi::CString::new(r.join("fifo").as_os_str().as_encoded_bytes()).expect("c");
        // SAFETY: c is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let rules = IgnoreRules::new(r, &[], true).expect("rules");
        let result = scan(r, &rules, None);
        let link = result
            .entries
            .iter()
            .find(|e| e.path.as_str() == "link")
            .expect("link listed");
        assert_eq!(link.meta.kind, EntryKind::Symlink);
        assert_eq!(link.meta.target.as_deref(), outside.path().to_str());
        let all = paths(&result);
        assert!(
            !all.iter().any(|p| p.starts_with("link/")),
            "followed the link: {all:?}"
        );
        assert!(!all.contains(&"fifo"), "fifo listed: {all:?}");
    }

    #[test]
    fn under_limits_the_walk_and_includes_itself() {
        let tmp = tree();
        let r = tmp.path();
        let rules = IgnoreRules::new(r, &[], true).expect("rules");
        let under = RelPath::parse("a").expect("rel");
        assert_eq!(
            paths(&scan(r, &rules, Some(&under))),
            vec!["a", "a/b", "a/b/c.txt", "a/one.txt"]
        );
        let file = RelPath::parse("a/one.txt").expect("rel");
        assert_eq!(paths(&scan(r, &rules, Some(&file))), vec!["a/one.txt"]);
        let gone = RelPath::parse("a/nope").expect("rel");
        assert!(scan(r, &rules, Some(&gone)).entries.is_empty());
        let ignored = RelPath::parse("node_modules").expect("rel");
        assert!(scan(r, &rules, Some(&ignored)).entries.is_empty());
        let below_ignored = RelPath::parse("node_modules/x").expect("rel");
        assert!(scan(r, &rules, Some(&below_ignored)).entries.is_empty());
    }

    #[test]
    fn under_does_not_follow_a_symlinked_parent() {
        let tmp = tree();
        let r = tmp.path();
        symlink(r.join("a"), r.join("alias")).expect("symlink");
        let rules = IgnoreRules::new(r, &[], true).expect("rules");
        let under = RelPath::parse("alias/b").expect("rel");
        let result = scan(r, &rules, Some(&under));
        assert!(
            result.entries.is_empty(),
            "walked through a symlink: {:?}",
            paths(&result)
        );
        let link = RelPath::parse("alias").expect("rel");
        let result = scan(r, &rules, Some(&link));
        assert_eq!(paths(&result), vec!["alias"]);
        assert_eq!(result.entries[0].meta.kind, EntryKind::Symlink);
    }

    #[test]
    fn root_may_be_a_symlink() {
        let tmp = tree();
        let holder = tempfile::tempdir().expect("tempdir");
        let link = holder.path().join("root-link");
        symlink(tmp.path(), &link).expect("symlink");
        let rules = IgnoreRules::new(&link, &[], true).expect("rules");
        let result = scan(&link, &rules, None);
        assert_eq!(
            paths(&result),
            vec![
                "a",
                "a/b",
                "a/b/c.txt",
                "a/one.txt",
                "logs",
                "logs/l.txt",
                "z",
                "z/k"
            ]
        );
        let under = RelPath::parse("a/b").expect("rel");
        assert_eq!(
            paths(&scan(&link, &rules, Some(&under))),
            vec!["a/b", "a/b/c.txt"]
        );
    }

    /// Permissions do not stop root, so as root this test re-runs itself in a child process
    /// that first drops to user `nobody` (65534).
    #[test]
    fn unreadable_directory_is_an_error_not_fatal() {
        const CHILD: &str = "ZYNC_FS_TEST_AS_NOBODY";
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } == 0 {
            if std::env::var_os(CHILD).is_none() {
                let exe = std::env::current_exe().expect("current_exe");
                let out = std::process::Command::new(exe)
                    .args([
                        "--exact",
                        "scan::tests::unreadable_directory_is_an_error_not_fatal",
                    ])
                    .env(CHILD, "1")
                    .output()
                    .expect("re-run as nobody");
                assert!(
                    out.status.success(),
                    "the test failed as user nobody:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                return;
            }
            // SAFETY: plain syscalls; this child process runs only this test.
            let dropped = unsafe { libc::setgid(65534) == 0 && libc::setuid(65534) == 0 };
            assert!(dropped, "cannot drop to user nobody");
        }
        let tmp = tree();
        let r = tmp.path();
        let locked = r.join("a/b");
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).expect("chmod");
        assert!(fs::read_dir(&locked).is_err(), "permissions not enforced");
        let rules = IgnoreRules::new(r, &[], true).expect("rules");
        let result = scan(r, &rules, None);
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(result.errors.len(), 1, "errors: {:?}", result.errors);
        assert_eq!(
            paths(&result),
            vec!["a", "a/b", "a/one.txt", "logs", "logs/l.txt", "z", "z/k"]
        );
        // What lies below the unreadable directory is unknown, not deleted; the rest is known.
        let below = RelPath::parse("a/b/deep.txt").expect("path");
        assert!(!result.incomplete);
        assert!(
            !result.covers(&below),
            "unreadable: {:?}",
            result.unreadable
        );
        assert!(result.covers(&RelPath::parse("a/gone.txt").expect("path")));
        assert!(result.covers(&RelPath::parse("a/bc").expect("path")));
    }
}
