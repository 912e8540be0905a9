//! Walking a synced root (or one subtree of it) to list every entry zync syncs, with the same
//! ignore rules the watcher uses. The daemon scans at start to find changes made while it was
//! down (invariant 6) and after a watcher overflow.
//!
//! The walk reads sibling directories in parallel on the caller's rayon pool (the global one
//! unless the caller runs it inside `ThreadPool::install`), and stats each entry relative to its
//! open directory rather than by its full path: at daemon start over 100,000 unchanged files,
//! path lookups and the generic walker's bookkeeping were most of the scan. The
//! result does not depend on the number of threads.
//!
//! Each directory below the root is opened from the root's handle without following any
//! symlink on the way ([`Dir::subdir`]: `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`), and
//! its entries are stat'ed relative to that handle: another user who can write in the tree and
//! swaps a directory for a symlink to elsewhere while the walk goes on makes it skip that
//! directory, never list the other one as the tree's (its files' sizes and hashes would reach
//! the other machine as the tree's). A directory replaced by another real one is listed as it
//! is now.

use crate::beneath::Dir;
use crate::ignore::{IgnoreRules, Ignored};
use crate::meta::{is_missing, Meta, Stat};
use crate::path::RelPath;
use rayon::prelude::*;
use std::io;
use std::path::Path;
use zync_proto::Kind;

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
    /// The paths the walk skipped because a rule ignores them, sorted by path, each with its
    /// rule. An ignored directory is one path: the walk never enters it.
    pub ignored: Vec<Ignored>,
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

    /// Records a problem with `at` (`None`: the root itself, so the whole walk is incomplete).
    fn record(&mut self, at: Option<RelPath>, message: String) {
        match at {
            Some(rel) => self.unreadable.push(rel),
            None => self.incomplete = true,
        }
        self.errors.push(message);
    }
}

/// Walks `root` (or only the subtree `under`, which is itself included when it exists) without
/// following symlinks. Skips ignored paths (listed in [`ScanResult::ignored`]) and everything
/// beneath an ignored directory (not listed), non-UTF-8
/// names (logged as a warning), unsupported file types (logged at debug) and entries that vanish
/// mid-walk. Never includes `root` itself. Parents come before their children; siblings are
/// sorted by name. An unreadable directory is reported in [`ScanResult::errors`], not fatal.
pub fn scan(root: &Path, rules: &IgnoreRules, under: Option<&RelPath>) -> ScanResult {
    // The root is the user's choice: it may be a symlink.
    match Dir::open_root(root) {
        Ok(base) => scan_dir(&base, rules, under),
        Err(crate::FsError::Io { source, .. }) if is_missing(&source) => ScanResult::default(),
        Err(e) => {
            let mut result = ScanResult::default();
            result.record(None, e.to_string());
            result
        }
    }
}

/// As [`scan`], from the root's handle `base`, which the caller opened (and checked to be
/// the directory it serves, [`Dir::identity`]): what is walked is what was checked.
pub fn scan_dir(base: &Dir, rules: &IgnoreRules, under: Option<&RelPath>) -> ScanResult {
    let mut result = ScanResult::default();
    if let Some(under) = under {
        if !start_under(base, rules, under, &mut result) {
            return result;
        }
    }
    let listing = list_tree(rules, base, under);
    result.entries.extend(listing.entries);
    result.ignored.extend(listing.ignored);
    result.ignored.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    for (at, message) in listing.problems {
        result.record(at, message);
    }
    result
}

/// For a scan of `under`: adds `under` itself; true when it is a directory to walk. It is
/// looked at through its parent, opened from the root's handle `base` without following a
/// symlink: a symlinked ancestor means there is nothing there to scan.
fn start_under(base: &Dir, rules: &IgnoreRules, under: &RelPath, result: &mut ScanResult) -> bool {
    let opened;
    let parent = match under.parent() {
        None => base,
        Some(parent) => match base.subdir(&parent) {
            Ok(dir) => {
                opened = dir;
                &opened
            }
            Err(crate::FsError::Io { source, .. }) if is_missing(&source) => return false,
            Err(crate::FsError::SymlinkInPath { .. } | crate::FsError::NotADirectory { .. }) => {
                return false
            }
            Err(e) => {
                result.record(Some(parent), e.to_string());
                return false;
            }
        },
    };
    let meta = match parent.lstat(under.file_name()) {
        Ok(Stat::Entry(meta)) => meta,
        Ok(_) => return false,
        Err(e) => {
            let path = parent.path_of(under.file_name());
            result.record(
                Some(under.clone()),
                format!("cannot inspect {}: {e}", path.display()),
            );
            return false;
        }
    };
    let is_dir = meta.kind == Kind::Dir;
    if let Some(ignored) = rules.ignored_by(under, is_dir) {
        // Ignored with an ancestor: that ancestor is the ignored path, not this one.
        if ignored.path == *under {
            result.ignored.push(ignored);
        }
        return false;
    }
    result.entries.push(ScanEntry {
        path: under.clone(),
        meta,
    });
    is_dir
}

/// Something the walk could not read: the path at fault (`None` for the root itself) and
/// the message.
type Problem = (Option<RelPath>, String);

/// Everything below one directory, in walk order, and what could not be read there.
#[derive(Default)]
struct Listing {
    entries: Vec<ScanEntry>,
    problems: Vec<Problem>,
    ignored: Vec<Ignored>,
}

/// A directory to list: its path below the root (`None` for the root) and its slot in the
/// listing.
type ToList = (Option<RelPath>, usize);

/// One listed directory: its children sorted by name, and for each child that is a directory,
/// in the same order, where its own listing is kept.
#[derive(Default)]
struct Listed {
    children: Vec<ScanEntry>,
    subdirs: Vec<usize>,
}

/// Lists the directory at `dir` (whose path below the root is `rel`, `None` for the root) and
/// everything below it. One depth at a time, all directories of a depth in parallel; then the
/// listings are put together in walk order. Neither step recurses, so the depth of a tree is
/// no risk to the threads' stacks.
fn list_tree(rules: &IgnoreRules, base: &Dir, rel: Option<&RelPath>) -> Listing {
    let mut problems = Vec::new();
    let mut ignored = Vec::new();
    let mut listed: Vec<Listed> = vec![Listed::default()];
    // The directories of the current depth.
    let mut frontier: Vec<ToList> = vec![(rel.cloned(), 0)];
    let mut total = 0usize;
    while !frontier.is_empty() {
        let lists: Vec<(Vec<ScanEntry>, Vec<Problem>, Vec<Ignored>)> = frontier
            .par_iter()
            .map(|(rel, _)| {
                let mut problems = Vec::new();
                let mut skipped = Vec::new();
                let children = list_dir(rules, base, rel.as_ref(), &mut problems, &mut skipped);
                (children, problems, skipped)
            })
            .collect();
        let mut next = Vec::new();
        for ((_, slot), (children, found, skipped)) in frontier.into_iter().zip(lists) {
            problems.extend(found);
            ignored.extend(skipped);
            total += children.len();
            let mut subdirs = Vec::new();
            for child in children.iter().filter(|c| c.meta.kind == Kind::Dir) {
                let sub = listed.len();
                listed.push(Listed::default());
                subdirs.push(sub);
                next.push((Some(child.path.clone()), sub));
            }
            listed[slot] = Listed { children, subdirs };
        }
        frontier = next;
    }
    // Depth first, each directory's listing right after its own entry.
    let mut entries = Vec::with_capacity(total);
    let take = |listed: &mut Vec<Listed>, slot: usize| {
        let l = std::mem::take(&mut listed[slot]);
        (l.children.into_iter(), l.subdirs.into_iter())
    };
    let mut stack = vec![take(&mut listed, 0)];
    while let Some((children, subdirs)) = stack.last_mut() {
        let Some(child) = children.next() else {
            stack.pop();
            continue;
        };
        let sub = (child.meta.kind == Kind::Dir)
            .then(|| subdirs.next())
            .flatten();
        entries.push(child);
        if let Some(sub) = sub {
            stack.push(take(&mut listed, sub));
        }
    }
    Listing {
        entries,
        problems,
        ignored,
    }
}

/// The entries directly in `dir` that zync syncs and does not ignore, sorted by name; the
/// ignored ones go to `ignored`.
fn list_dir(
    rules: &IgnoreRules,
    base: &Dir,
    rel: Option<&RelPath>,
    problems: &mut Vec<Problem>,
    ignored: &mut Vec<Ignored>,
) -> Vec<ScanEntry> {
    let opened;
    let handle = match rel {
        None => base,
        // Never through a symlink, at any depth.
        Some(rel) => match base.subdir(rel) {
            Ok(dir) => {
                opened = dir;
                &opened
            }
            // Gone since its parent was listed: so is what it held. (Not ENOTDIR or ELOOP: a
            // directory that was a symlink for an instant, swapped back since, says that.)
            Err(crate::FsError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Vec::new()
            }
            // Made a symlink or something else since its parent was listed: what it held is
            // not known, so not taken for deleted (the change that made it so brings a look).
            Err(
                crate::FsError::SymlinkInPath { path } | crate::FsError::NotADirectory { path },
            ) => {
                problems.push((
                    Some(rel.clone()),
                    format!(
                        "{} changed while it was scanned (it is no longer a directory); it is \
                         looked at again with the next change there",
                        path.display()
                    ),
                ));
                return Vec::new();
            }
            Err(e) => {
                problems.push((
                    Some(rel.clone()),
                    format!("{e}; it is looked at again with the next change there"),
                ));
                return Vec::new();
            }
        },
    };
    let dir = handle.path();
    let names = match handle.entries() {
        Ok(names) => names,
        Err(e) if is_missing(&e) => return Vec::new(),
        Err(e) => {
            problems.push((rel.cloned(), format!("cannot read {}: {e}", dir.display())));
            return Vec::new();
        }
    };
    let mut children = Vec::new();
    for (name, kind) in names {
        let child = match name.to_str() {
            None => Err("not valid UTF-8".to_string()),
            Some(name) => match rel {
                None => RelPath::parse(name),
                Some(rel) => rel.join(name),
            }
            .map_err(|e| e.to_string()),
        };
        let child = match child {
            Ok(child) => child,
            Err(why) => {
                tracing::warn!("skipping {}: {why}", dir.join(&name).display());
                continue;
            }
        };
        // The type from the directory listing (no stat): enough for the ignore rules, and an
        // ignored entry is never stat'ed. The walk only lists directories that are not
        // ignored, so only the child itself is matched.
        let is_dir = kind == Some(Kind::Dir);
        if let Some(skipped) = rules.ignored_in_kept_dir(&child, is_dir) {
            ignored.push(skipped);
            continue;
        }
        // Relative to the open directory (`fstatat`): no lookup of the full path.
        match handle.lstat(&name) {
            Ok(Stat::Entry(meta)) => children.push(ScanEntry { path: child, meta }),
            Ok(Stat::Missing) => {}
            Ok(Stat::Unsupported(what)) => {
                tracing::debug!(
                    "skipping {}: unsupported file type ({what})",
                    dir.join(&name).display()
                );
            }
            Err(e) => problems.push((
                Some(child),
                format!("cannot inspect {}: {e}", dir.join(&name).display()),
            )),
        }
    }
    // Siblings share their parent's prefix, so whole paths sort as their names do.
    children.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    children
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// Another user who can write in the tree swaps its directory `d` and a symlink to a
    /// directory of theirs, again and again, while the tree is scanned: the scan never lists
    /// their file as the tree's `d/f` (its size and hash would go to the other machine).
    #[test]
    fn a_directory_swapped_for_a_symlink_mid_scan_never_lists_what_it_leads_to() {
        let bait = crate::testkit::Bait::new(b"edited here", b"theirs, outside the tree");
        let crate::Stat::Entry(theirs) = &bait.seen else {
            panic!("their file is not there");
        };
        let rules = IgnoreRules::new(&bait.root, &[], false).expect("rules");
        let d = bait.root.join("d");
        let f = RelPath::parse("d/f").expect("path");
        let ((leaked, ours, lost), swaps) = crate::testkit::exchanging(&d, &bait.link, || {
            let (mut leaked, mut ours, mut lost) = (0, 0, 0);
            for _ in 0..30_000 {
                let result = scan(&bait.root, &rules, None);
                let mut saw_d_as_dir = false;
                let mut saw_f = false;
                for entry in &result.entries {
                    saw_d_as_dir |= entry.path.as_str() == "d" && entry.meta.kind == Kind::Dir;
                    if entry.meta.kind != Kind::File {
                        continue;
                    }
                    if (entry.meta.device, entry.meta.inode) == (theirs.device, theirs.inode) {
                        leaked += 1;
                    } else {
                        saw_f |= entry.path == f;
                        ours += 1;
                    }
                }
                // `d` listed as a directory without its file, and the walk claiming to have
                // looked there: the file would be taken for deleted.
                if saw_d_as_dir && !saw_f && result.covers(&f) {
                    lost += 1;
                }
            }
            (leaked, ours, lost)
        });
        assert_eq!(
            leaked, 0,
            "their file was listed {leaked} times ({swaps} swaps)"
        );
        assert_eq!(
            lost, 0,
            "the tree's d/f was taken for deleted {lost} times ({swaps} swaps)"
        );
        assert!(ours > 0 && swaps > 0, "{ours} files of ours, {swaps} swaps");
    }

    /// A directory replaced by another real one while the tree is scanned (a checkout
    /// replacing a directory, say) is listed as it is now: one of the two files is always
    /// found, never neither while the walk claims to have looked there.
    #[test]
    fn a_directory_replaced_by_another_mid_scan_is_listed_as_it_is_now() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d")).expect("mkdir");
        std::fs::write(root.join("d/one"), b"1").expect("write");
        let other = tmp.path().join("other");
        std::fs::create_dir(&other).expect("mkdir");
        std::fs::write(other.join("two"), b"2").expect("write");
        let rules = IgnoreRules::new(&root, &[], false).expect("rules");
        let (one, two) = (
            RelPath::parse("d/one").expect("path"),
            RelPath::parse("d/two").expect("path"),
        );
        let (lost, swaps) = crate::testkit::exchanging(&root.join("d"), &other, || {
            let mut lost = 0;
            for _ in 0..10_000 {
                let result = scan(&root, &rules, None);
                let found = result
                    .entries
                    .iter()
                    .any(|e| e.path == one || e.path == two);
                if !found && result.covers(&one) {
                    lost += 1;
                }
            }
            lost
        });
        assert_eq!(
            lost, 0,
            "d's file was taken for deleted {lost} times ({swaps} swaps)"
        );
        assert!(swaps > 0, "nothing was swapped");
    }

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
        assert_eq!((c.meta.kind, c.meta.size), (Kind::File, 9));
        assert_eq!(result.entries[0].meta.kind, Kind::Dir);
    }

    #[test]
    fn ignored_paths_are_listed_once_with_their_rule_and_never_entered() {
        let tmp = tree();
        let r = tmp.path();
        fs::write(r.join("build"), "#!/bin/sh\n").expect("a build script, not a directory");
        fs::create_dir_all(r.join("a/build/deep")).expect("mkdir");
        fs::write(r.join("a/build/deep/o.o"), "o").expect("write");
        fs::write(r.join("a").join(crate::IGNORE_FILE), "*.txt\n").expect("write");
        let rules = IgnoreRules::new(r, &["logs/".to_string()], true).expect("rules");
        let result = scan(r, &rules, None);
        let ignored: Vec<(&str, bool, &str, &str)> = result
            .ignored
            .iter()
            .map(|i| {
                (
                    i.path.as_str(),
                    i.is_dir,
                    i.rule.pattern.as_str(),
                    i.rule.source.as_str(),
                )
            })
            .collect();
        assert_eq!(
            ignored,
            vec![
                (".zync-tmp-123", false, ".zync-tmp-*", "zync"),
                ("a/b/c.txt", false, "*.txt", "a/.zyncignore"),
                ("a/build", true, "build/", "built-in"),
                ("a/one.txt", false, "*.txt", "a/.zyncignore"),
                ("logs", true, "logs/", "--ignore"),
                ("node_modules", true, "node_modules/", "built-in"),
                ("top.pyc", false, "*.pyc", "built-in"),
            ]
        );
        assert!(
            paths(&result).contains(&"build"),
            "a file named build is synced: {:?}",
            paths(&result)
        );
        // A subtree scan lists what it skips below it, and `under` itself when ignored.
        let a = RelPath::parse("a").expect("rel");
        let sub = scan(r, &rules, Some(&a));
        let below: Vec<&str> = sub.ignored.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(below, vec!["a/b/c.txt", "a/build", "a/one.txt"]);
        let nm = RelPath::parse("node_modules").expect("rel");
        let itself = scan(r, &rules, Some(&nm));
        assert_eq!(itself.ignored.len(), 1);
        assert_eq!(itself.ignored[0].path, nm);
        let inside = RelPath::parse("node_modules/x").expect("rel");
        assert!(
            scan(r, &rules, Some(&inside)).ignored.is_empty(),
            "below an ignored directory nothing is listed apart"
        );
    }

    #[test]
    fn symlinks_are_listed_not_followed_and_fifos_skipped() {
        let tmp = tree();
        let r = tmp.path();
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join("secret"), b"s").expect("write");
        symlink(outside.path(), r.join("link")).expect("symlink");
        crate::testkit::fifo(&r.join("fifo"));
        let rules = IgnoreRules::new(r, &[], true).expect("rules");
        let result = scan(r, &rules, None);
        let link = result
            .entries
            .iter()
            .find(|e| e.path.as_str() == "link")
            .expect("link listed");
        assert_eq!(link.meta.kind, Kind::Symlink);
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
        assert_eq!(result.entries[0].meta.kind, Kind::Symlink);
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

    #[test]
    fn the_walk_records_what_lstat_records() {
        let tmp = tree();
        let r = tmp.path();
        fs::set_permissions(r.join("a/one.txt"), fs::Permissions::from_mode(0o4751))
            .expect("chmod");
        fs::set_permissions(r.join("z"), fs::Permissions::from_mode(0o700)).expect("chmod");
        symlink("../a/b/c.txt", r.join("z/link")).expect("symlink");
        symlink("dangling", r.join("a/b/broken")).expect("symlink");
        let rules = IgnoreRules::new(r, &[], true).expect("rules");
        let result = scan(r, &rules, None);
        assert!(result.errors.is_empty(), "errors: {:?}", result.errors);
        assert_eq!(result.entries.len(), 10, "{:?}", paths(&result));
        for entry in &result.entries {
            let want = match crate::lstat(&entry.path.to_path(r)).expect("lstat") {
                Stat::Entry(meta) => meta,
                other => panic!("{}: {other:?}", entry.path),
            };
            assert_eq!(entry.meta, want, "{}", entry.path);
        }
    }

    /// A tree wide and deep enough that several threads really share the walk.
    fn wide_tree() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().expect("tempdir");
        for i in 0..40 {
            let d = tmp.path().join(format!("d{i:02}/sub{}", i % 3));
            fs::create_dir_all(&d).expect("mkdir");
            for j in 0..(i % 7) {
                fs::write(d.join(format!("f{j}")), format!("{i}/{j}")).expect("write");
            }
            fs::write(tmp.path().join(format!("d{i:02}/n.txt")), "n").expect("write");
            fs::create_dir(d.join("build")).expect("mkdir");
            fs::write(d.join("build/ignored"), "x").expect("write");
        }
        tmp
    }

    fn scan_in_pool(threads: usize, root: &Path, under: Option<&RelPath>) -> Vec<ScanEntry> {
        let rules = IgnoreRules::new(root, &[], true).expect("rules");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        let result = pool.install(|| scan(root, &rules, under));
        assert!(result.errors.is_empty(), "errors: {:?}", result.errors);
        result.entries
    }

    #[test]
    fn parallel_and_serial_walks_list_the_same_entries_in_the_same_order() {
        let tmp = wide_tree();
        let serial = scan_in_pool(1, tmp.path(), None);
        assert_eq!(serial.len(), 40 * 3 + (0..40).map(|i| i % 7).sum::<usize>());
        let mut sorted: Vec<&str> = serial.iter().map(|e| e.path.as_str()).collect();
        sorted.sort_by(|a, b| a.split('/').cmp(b.split('/')));
        assert_eq!(
            serial.iter().map(|e| e.path.as_str()).collect::<Vec<_>>(),
            sorted,
            "walk order: parents first, siblings by name"
        );
        let parallel = scan_in_pool(4, tmp.path(), None);
        let key = |v: &[ScanEntry]| -> Vec<(String, Meta)> {
            v.iter()
                .map(|e| (e.path.as_str().to_string(), e.meta.clone()))
                .collect()
        };
        assert_eq!(key(&parallel), key(&serial));
        let under = RelPath::parse("d13").expect("rel");
        assert_eq!(
            key(&scan_in_pool(4, tmp.path(), Some(&under))),
            key(&scan_in_pool(1, tmp.path(), Some(&under)))
        );
    }

    #[test]
    fn a_deep_tree_is_walked_whole_in_order() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let depth = 120;
        let deepest = tmp.path().join(vec!["d"; depth].join("/"));
        fs::create_dir_all(&deepest).expect("mkdir");
        fs::write(deepest.join("f"), "f").expect("write");
        fs::write(tmp.path().join("d/g"), "g").expect("write");
        let result = scan_in_pool(2, tmp.path(), None);
        assert_eq!(result.len(), depth + 2);
        let got: Vec<&str> = result.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(got[0], "d");
        assert_eq!(got[1], "d/d", "a directory's listing follows its own entry");
        assert_eq!(got[depth], format!("{}/f", vec!["d"; depth].join("/")));
        assert_eq!(got[depth + 1], "d/g", "siblings by name: d/d before d/g");
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
