//! Which paths zync leaves alone: built-in defaults, `--ignore` patterns and `.zyncignore` files
//! in gitignore syntax. Scanning and watching both ask `IgnoreRules`, so they agree exactly.

use crate::path::RelPath;
use crate::Dir;
use ::ignore::gitignore::{Gitignore, GitignoreBuilder};
use ::ignore::Match;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Ignored unless `--no-default-ignores` is given. A pattern ending in `/` matches directories
/// only: a build script named `build` or a file named `dist` is synced, a `build/` directory
/// is not. `.git` matches a file too (a worktree's or submodule's `.git` file points into a
/// repository elsewhere, and is as much the repository's own as the directory).
pub const DEFAULT_IGNORES: &[&str] = &[
    ".git",
    ".DS_Store",
    "__pycache__/",
    "*.pyc",
    "*.pyo",
    ".idea/",
    ".vscode/",
    "node_modules/",
    "build/",
    "dist/",
    "*.swp",
    "*.swo",
    "*~",
];

/// The name prefix of zync's own temp files; always ignored, even with no default ignores.
pub const TEMP_PREFIX: &str = ".zync-tmp-";

/// The per-directory ignore file.
pub const IGNORE_FILE: &str = ".zyncignore";

/// Why `rel`, pushed from R, is a control file: one that changes what E's daemon serves or
/// ignores (a `.zyncignore` at any depth: `!.git` in one would un-ignore E's repository), or
/// that E's tools run or obey (anything under a `.git` directory, and the config and hooks of
/// a bare repository named `*.git`). Such a
/// file is applied only with an explicit yes; `None` for an ordinary file. A name counts as
/// the one a file system on E may take it for ([`same_name_on_some_file_system`]): on vfat or a
/// Windows share `.GIT.` and `GIT~1` are `.git`, and on macOS `.g\u{200C}it` is.
pub fn control_reason(rel: &RelPath) -> Option<&'static str> {
    let mut parts = rel.as_str().split('/').peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        if same_name_on_some_file_system(part, ".git", "git~1") {
            return Some("it is inside .git, whose config and hooks run on E");
        }
        if is_bare_repository_name(part)
            && parts.peek().is_some_and(|next| {
                next.eq_ignore_ascii_case("hooks") || next.eq_ignore_ascii_case("config")
            })
        {
            return Some("it is the config or a hook of a bare repository, which git runs on E");
        }
        if last && same_name_on_some_file_system(part, IGNORE_FILE, "zyncig~1") {
            return Some("it is a .zyncignore: it changes what E's daemon serves and ignores");
        }
    }
    None
}

/// Whether `name` reads as a bare repository's (`project.git`): git runs the hooks in it when
/// E pushes to it, and obeys its config (`core.fsmonitor`, `core.hooksPath` name commands)
/// whenever it works in it.
fn is_bare_repository_name(name: &str) -> bool {
    let trimmed = name.trim_end_matches(['.', ' ']);
    trimmed.len() > 4
        && trimmed
            .get(trimmed.len() - 4..)
            .is_some_and(|end| end.eq_ignore_ascii_case(".git"))
}

/// Whether a file system of E may take `name` for `dotname` (`.git`), as git's own checks
/// of `.git` do (`is_ntfs_dotgit`, `is_hfs_dotgit`): case aside (macOS, Windows, ext4
/// casefold, vfat), HFS+ leaving out characters it ignores (zero-width joiners, direction
/// marks), NTFS and vfat dropping trailing dots and spaces and answering to the 8.3 short
/// name (`short`, `git~1`).
fn same_name_on_some_file_system(name: &str, dotname: &str, short: &str) -> bool {
    let kept: String = name
        .chars()
        .filter(|c| {
            !matches!(
                c,
                '\u{200C}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{206A}'..='\u{206F}'
                    | '\u{FEFF}'
            )
        })
        .collect();
    let trimmed = kept.trim_end_matches(['.', ' ']);
    trimmed.eq_ignore_ascii_case(dotname) || trimmed.eq_ignore_ascii_case(short)
}

/// One rule that ignores paths: its pattern as written and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IgnoreRule {
    /// The pattern as written (`build/`, `*.pyc`, `.zync-tmp-*`).
    pub pattern: String,
    /// Where the pattern comes from.
    pub source: RuleSource,
}

/// Where an ignore rule comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleSource {
    /// The built-in list ([`DEFAULT_IGNORES`]).
    BuiltIn,
    /// An `--ignore` pattern (or `ignore` in the config file).
    Flag,
    /// A `.zyncignore` file: its path below the root (`.zyncignore`, `sub/.zyncignore`).
    File(String),
    /// zync's own temp files ([`TEMP_PREFIX`]), ignored always.
    Zync,
}

impl RuleSource {
    /// A short name, as stored in the daemon's database and sent on the wire: `built-in`,
    /// `--ignore`, `zync`, or the `.zyncignore` file's path below the root.
    pub fn as_str(&self) -> &str {
        match self {
            RuleSource::BuiltIn => zync_proto::BUILT_IN,
            RuleSource::Flag => "--ignore",
            RuleSource::File(path) => path,
            RuleSource::Zync => "zync",
        }
    }
}

impl IgnoreRule {
    /// The rule in a sentence, for a refusal or a log line.
    fn sentence(&self) -> String {
        let pattern = &self.pattern;
        match &self.source {
            RuleSource::BuiltIn => format!("pattern `{pattern}` in the built-in ignore list"),
            RuleSource::Flag => format!("pattern `{pattern}` from --ignore"),
            RuleSource::File(file) => format!("pattern `{pattern}` in {file}"),
            RuleSource::Zync => {
                let prefix = pattern.trim_end_matches('*');
                format!("the name has zync's temp-file prefix {prefix}")
            }
        }
    }
}

/// A path that is ignored, with the rule that ignores it (see [`IgnoreRules::ignored_by`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The ignored path: for an ignored directory the directory itself, never what it holds.
    pub path: RelPath,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// The rule.
    pub rule: IgnoreRule,
}

/// Why ignore rules could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// An `--ignore` pattern is not valid gitignore syntax.
    #[error("invalid ignore pattern {pattern:?}: {message}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        message: String,
    },
}

/// The ignore rules of one synced root. Cheap to clone: clones share the cache of loaded
/// `.zyncignore` files, so [`IgnoreRules::reload`] on one affects all.
#[derive(Clone)]
pub struct IgnoreRules {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    /// Defaults plus `--ignore` patterns, matched relative to the root.
    global: Gitignore,
    /// Loaded `.zyncignore` files by directory ("" for the root); `None` when the directory has
    /// none (or a broken one).
    dirs: RwLock<HashMap<String, Option<Arc<Gitignore>>>>,
}

impl std::fmt::Debug for IgnoreRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IgnoreRules")
            .field("root", &self.inner.root)
            .field("global_patterns", &self.inner.global.len())
            .finish_non_exhaustive()
    }
}

/// A builder whose root is ".", so the library never strips anything: we always pass paths
/// relative to the directory a matcher belongs to.
fn builder() -> GitignoreBuilder {
    GitignoreBuilder::new(".")
}

impl IgnoreRules {
    /// Rules for `root`: the defaults when `use_defaults`, plus `extra` (`--ignore` patterns in
    /// gitignore syntax, relative to the root). `.zyncignore` files are loaded lazily.
    ///
    /// # Errors
    ///
    /// [`IgnoreError::Pattern`] naming the first invalid pattern.
    pub fn new(
        root: &Path,
        extra: &[String],
        use_defaults: bool,
    ) -> Result<IgnoreRules, IgnoreError> {
        let mut b = builder();
        let defaults: &[&str] = if use_defaults { DEFAULT_IGNORES } else { &[] };
        let patterns = defaults
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str));
        for pattern in patterns {
            b.add_line(None, pattern)
                .map_err(|e| IgnoreError::Pattern {
                    pattern: pattern.to_string(),
                    message: e.to_string(),
                })?;
        }
        let global = b.build().map_err(|e| IgnoreError::Pattern {
            pattern: extra.join(", "),
            message: e.to_string(),
        })?;
        Ok(IgnoreRules {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                global,
                dirs: RwLock::new(HashMap::new()),
            }),
        })
    }

    /// The root these rules belong to.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// True when `rel` or any of its ancestors is ignored. `is_dir` says whether `rel` itself is
    /// a directory (for patterns ending in `/`); ancestors are directories.
    ///
    /// Gitignore semantics: a `.zyncignore` in a directory applies to paths below it; deeper
    /// files override shallower ones, which override the global rules; `!pattern` whitelists.
    /// Names starting with [`TEMP_PREFIX`] are always ignored.
    pub fn is_ignored(&self, rel: &RelPath, is_dir: bool) -> bool {
        self.ignoring_rule(rel, is_dir).is_some()
    }

    /// The decision of [`IgnoreRules::is_ignored`] for `rel` in a directory known not to be
    /// ignored (`is_ignored(parent, true)` was false): only `rel` itself is matched, not its
    /// ancestors again, so that a batch of files in one directory checks the directory once.
    pub fn is_ignored_in_kept_dir(&self, rel: &RelPath, is_dir: bool) -> bool {
        self.ignoring_itself(rel.as_str(), is_dir).is_some()
    }

    /// The rule that ignores `rel`, for a person (``pattern `*.log` from --ignore``,
    /// ``pattern `build` in the built-in ignore list``, ``pattern `x` in sub/.zyncignore``),
    /// naming the ancestor it matched when that is not `rel` itself; `None` when `rel` is not
    /// ignored. The same decision as [`IgnoreRules::is_ignored`].
    pub fn ignoring_rule(&self, rel: &RelPath, is_dir: bool) -> Option<String> {
        let found = self.ignored_by(rel, is_dir)?;
        let rule = found.rule.sentence();
        Some(if found.path == *rel {
            rule
        } else {
            format!("{rule}, which matches its directory {}", found.path)
        })
    }

    /// Which path ignores `rel` and by which rule: `rel` itself, or its highest ignored
    /// ancestor (everything below an ignored directory is ignored with it, and is never
    /// counted apart: a `node_modules` is one ignored path however many files it holds).
    /// `None` when `rel` is not ignored. The same decision as [`IgnoreRules::is_ignored`].
    pub fn ignored_by(&self, rel: &RelPath, is_dir: bool) -> Option<Ignored> {
        // As in git, nothing below an ignored directory can be re-included, so check each
        // ancestor (as a directory) from the top before the path itself.
        let s = rel.as_str();
        let ends = s.match_indices('/').map(|(i, _)| (i, true));
        ends.chain(std::iter::once((s.len(), is_dir)))
            .find_map(|(end, dir)| {
                let here = &s[..end];
                let rule = self.ignoring_itself(here, dir)?;
                let path = if end == s.len() {
                    rel.clone()
                } else {
                    RelPath::parse(here).ok()?
                };
                Some(Ignored {
                    path,
                    is_dir: dir,
                    rule,
                })
            })
    }

    /// [`IgnoreRules::ignored_by`] for `rel` in a directory known not to be ignored (one a walk
    /// descends into): only `rel` itself is matched, not each of its ancestors again. A walk
    /// of a deep tree otherwise spends more on the rules than on listing it.
    pub fn ignored_in_kept_dir(&self, rel: &RelPath, is_dir: bool) -> Option<Ignored> {
        let rule = self.ignoring_itself(rel.as_str(), is_dir)?;
        Some(Ignored {
            path: rel.clone(),
            is_dir,
            rule,
        })
    }

    /// The rule that ignores `path` itself (not its ancestors): zync's own temp files, then
    /// the user's rules.
    fn ignoring_itself(&self, path: &str, is_dir: bool) -> Option<IgnoreRule> {
        let name = path.rsplit('/').next().unwrap_or(path);
        if name.starts_with(TEMP_PREFIX) {
            return Some(IgnoreRule {
                pattern: format!("{TEMP_PREFIX}*"),
                source: RuleSource::Zync,
            });
        }
        self.ignored_here(path, is_dir)
    }

    /// The rule that ignores `path` itself (not its ancestors), if one does: the deepest
    /// matcher with an opinion decides.
    fn ignored_here(&self, path: &str, is_dir: bool) -> Option<IgnoreRule> {
        // Directories that may hold a .zyncignore applying to `path`: its proper ancestors and
        // the root, deepest first.
        let mut dir_ends: Vec<usize> = path.match_indices('/').map(|(i, _)| i).collect();
        dir_ends.reverse();
        dir_ends.push(0);
        for end in dir_ends {
            let dir = &path[..end];
            let Some(gi) = self.dir_rules(dir) else {
                continue;
            };
            let below = if end == 0 { path } else { &path[end + 1..] };
            match gi.matched(below, is_dir) {
                Match::Ignore(glob) => {
                    let file = if dir.is_empty() {
                        IGNORE_FILE.to_string()
                    } else {
                        format!("{dir}/{IGNORE_FILE}")
                    };
                    return Some(IgnoreRule {
                        pattern: glob.original().to_string(),
                        source: RuleSource::File(file),
                    });
                }
                Match::Whitelist(_) => return None,
                Match::None => {}
            }
        }
        match self.inner.global.matched(path, is_dir) {
            Match::Ignore(glob) => Some(IgnoreRule {
                pattern: glob.original().to_string(),
                source: if DEFAULT_IGNORES.contains(&glob.original()) {
                    RuleSource::BuiltIn
                } else {
                    RuleSource::Flag
                },
            }),
            _ => None,
        }
    }

    /// The parsed `.zyncignore` of directory `dir` ("" for the root), loading it on first use.
    fn dir_rules(&self, dir: &str) -> Option<Arc<Gitignore>> {
        {
            let cache = self.inner.dirs.read().unwrap_or_else(|e| e.into_inner());
            if let Some(found) = cache.get(dir) {
                return found.clone();
            }
        }
        let loaded = self.load(dir).map(Arc::new);
        let mut cache = self.inner.dirs.write().unwrap_or_else(|e| e.into_inner());
        cache.entry(dir.to_string()).or_insert(loaded).clone()
    }

    fn load(&self, dir: &str) -> Option<Gitignore> {
        let file = self.inner.root.join(dir).join(IGNORE_FILE);
        let text = match read_ignore_file(&self.inner.root, dir) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return None,
            Err(why) => {
                tracing::warn!("{}: {why}; ignoring it", file.display());
                return None;
            }
        };
        let Ok(text) = String::from_utf8(text) else {
            tracing::warn!("{} is not valid UTF-8; ignoring it", file.display());
            return None;
        };
        let mut b = builder();
        for (n, line) in text.lines().enumerate() {
            if let Err(e) = b.add_line(Some(file.clone()), line) {
                tracing::warn!("{}:{}: {e}; ignoring the whole file", file.display(), n + 1);
                return None;
            }
        }
        match b.build() {
            Ok(gi) if gi.is_empty() => None,
            Ok(gi) => Some(gi),
            Err(e) => {
                tracing::warn!("{}: {e}; ignoring the whole file", file.display());
                None
            }
        }
    }

    /// Forgets cached `.zyncignore` files, so the next check reads them again. Call after one
    /// changed.
    pub fn reload(&self) {
        self.inner
            .dirs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// The most a `.zyncignore` may hold: rules are a few lines; anything bigger is not one.
const MAX_IGNORE_FILE: u64 = 1 << 20;

/// The bytes of the `.zyncignore` of `dir` ("" for the root) below `root`, or `None` when it
/// has none. Read through the root's directory handles ([`Dir`]): never through a symlink, in
/// a parent or the file itself (another user who can write in the tree would otherwise have
/// zync read rules from anywhere, or read /dev/zero until memory runs out), never blocking on
/// a FIFO, and never more than [`MAX_IGNORE_FILE`] bytes.
///
/// # Errors
/// Why it was not read, for a warning: not a regular file, too big, unreadable.
fn read_ignore_file(root: &Path, dir: &str) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    let rel = if dir.is_empty() {
        None
    } else {
        Some(RelPath::parse(dir).map_err(|e| e.to_string())?)
    };
    let parent = match Dir::open_dir(root, rel.as_ref()) {
        Ok(parent) => parent,
        // A directory that is not there (yet: a path R pushes into a new directory is checked
        // before E has it) holds no rules.
        Err(crate::FsError::NotADirectory { .. }) => return Ok(None),
        Err(crate::FsError::Io { source, .. }) if crate::meta::is_missing(&source) => {
            return Ok(None)
        }
        Err(e) => return Err(e.to_string()),
    };
    let opened = match parent.open_file_to_read(IGNORE_FILE) {
        Ok(Some(opened)) => opened,
        Ok(None) => {
            // Most directories have none: only something else standing there is worth a
            // warning.
            return match parent.lstat(IGNORE_FILE) {
                Ok(crate::Stat::Missing) | Err(_) => Ok(None),
                Ok(_) => Err(
                    "not a regular file (a symlink, a FIFO, ...): zync reads only a plain file"
                        .into(),
                ),
            };
        }
        Err(e) if crate::meta::is_missing(&e) => return Ok(None),
        Err(e) => return Err(format!("cannot read it ({e})")),
    };
    if opened.size > MAX_IGNORE_FILE {
        return Err(format!(
            "{} bytes, more than the {MAX_IGNORE_FILE} a .zyncignore may have",
            opened.size
        ));
    }
    let mut bytes = Vec::new();
    opened
        .file
        .take(MAX_IGNORE_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it ({e})"))?;
    if bytes.len() as u64 > MAX_IGNORE_FILE {
        return Err(format!(
            "more than the {MAX_IGNORE_FILE} bytes a .zyncignore may have"
        ));
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).expect("valid test path")
    }

    fn check(rules: &IgnoreRules, cases: &[(&str, bool, bool)]) {
        for &(path, is_dir, want) in cases {
            let path = rel(path);
            assert_eq!(
                rules.is_ignored(&path, is_dir),
                want,
                "is_ignored({path:?}, is_dir={is_dir}): expected {want}"
            );
            // A walk that reached the path's directory asks only about the path itself.
            let kept_dir = path.parent().is_none_or(|p| !rules.is_ignored(&p, true));
            if kept_dir {
                assert_eq!(
                    rules.ignored_in_kept_dir(&path, is_dir),
                    rules.ignored_by(&path, is_dir),
                    "{path:?} (is_dir={is_dir}) in a directory that is not ignored"
                );
            }
        }
    }

    /// Another user who can write in the tree replaces a `.zyncignore` with a symlink (to
    /// rules elsewhere, or to /dev/zero), a FIFO, or a file too big to be one: none is read
    /// through, none blocks, none grows memory; a plain one still works.
    #[test]
    fn only_a_regular_zyncignore_of_a_sane_size_is_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let outside = tmp.path().join("their-rules");
        fs::write(&outside, "*.rs\n").expect("write");
        for d in ["linked", "zero", "fifo", "huge", "plain"] {
            fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::os::unix::fs::symlink(&outside, root.join("linked").join(IGNORE_FILE))
            .expect("symlink");
        std::os::unix::fs::symlink("/dev/zero", root.join("zero").join(IGNORE_FILE))
            .expect("symlink");
        let fifo =
            std::ffi::CString::new(root.join("fifo").join(IGNORE_FILE).to_str().expect("utf-8"))
                .expect("path");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0, "mkfifo");
        let mut huge = "*.rs\n".to_string();
        huge.push_str(&"# padding\n".repeat(200_000));
        fs::write(root.join("huge").join(IGNORE_FILE), huge).expect("write");
        fs::write(root.join("plain").join(IGNORE_FILE), "*.rs\n").expect("write");

        let rules = IgnoreRules::new(&root, &[], false).expect("rules");
        let (done, answers) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let asked: Vec<bool> = ["linked", "zero", "fifo", "huge", "plain"]
                .iter()
                .map(|d| rules.is_ignored(&rel(&format!("{d}/main.rs")), false))
                .collect();
            let _ = done.send(asked);
        });
        let asked = answers
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("reading the .zyncignore files blocked or never ended");
        assert_eq!(asked, [false, false, false, false, true]);
    }

    /// A directory without a `.zyncignore` (nearly all of them) has no rules, and nothing to
    /// warn about; one where something else stands in its place is worth a warning.
    #[test]
    fn a_missing_zyncignore_is_no_rules_and_no_complaint() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        fs::create_dir_all(root.join("sub/deeper")).expect("mkdir");
        for dir in ["", "sub", "sub/deeper"] {
            assert_eq!(read_ignore_file(root, dir), Ok(None), "{dir:?}");
        }
        fs::create_dir(root.join("sub").join(IGNORE_FILE)).expect("mkdir");
        assert!(read_ignore_file(root, "sub").is_err());
        // Nor does a directory that is not there, or a file where it would be.
        fs::write(root.join("file"), "x").expect("write");
        for dir in ["new", "new/deeper", "file", "file/below"] {
            assert_eq!(read_ignore_file(root, dir), Ok(None), "{dir:?}");
        }
    }

    #[test]
    fn defaults() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let rules = IgnoreRules::new(tmp.path(), &[], true).expect("rules");
        check(
            &rules,
            &[
                (".git", true, true),
                (".git/config", false, true),
                ("src/node_modules/x/y.js", false, true),
                ("a/b.pyc", false, true),
                ("notes.txt~", false, true),
                ("build", true, true),
                ("build/out.o", false, true),
                ("ci/docker/x86_64/build", false, false),
                ("build", false, false),
                ("dist", false, false),
                ("dist", true, true),
                ("web/dist/app.js", false, true),
                ("node_modules", false, false),
                (".git", false, true),
                ("sub/.git", false, true),
                ("src/main.rs", false, false),
                ("builder", true, false),
                (".gitignore", false, false),
                (IGNORE_FILE, false, false),
            ],
        );
        let none = IgnoreRules::new(tmp.path(), &[], false).expect("rules");
        check(
            &none,
            &[(".git/config", false, false), ("a.pyc", false, false)],
        );
    }

    #[test]
    fn temp_prefix_always_ignored() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let rules = IgnoreRules::new(tmp.path(), &["!*".to_string()], false).expect("rules");
        check(
            &rules,
            &[
                (".zync-tmp-abc", false, true),
                ("d/.zync-tmp-abc", false, true),
                (".zync-tmp-dir/x", false, true),
                ("d/.zync-tm", false, false),
            ],
        );
    }

    #[test]
    fn extra_patterns_and_dir_only_patterns() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let extra = vec![
            "*.log".to_string(),
            "logs/".to_string(),
            "/top.txt".to_string(),
        ];
        let rules = IgnoreRules::new(tmp.path(), &extra, false).expect("rules");
        check(
            &rules,
            &[
                ("a.log", false, true),
                ("deep/er/a.log", false, true),
                ("logs", true, true),
                ("logs", false, false),
                ("logs/today.txt", false, true),
                ("x/logs/today.txt", false, true),
                ("top.txt", false, true),
                ("sub/top.txt", false, false),
            ],
        );
    }

    #[test]
    fn invalid_pattern_is_named() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err =
            IgnoreRules::new(tmp.path(), &["a[z-a]".to_string()], false).expect_err("invalid");
        let msg = err.to_string();
        assert!(
            msg.contains("\"a[z-a]\""),
            "message does not name the pattern: {msg}"
        );
    }

    #[test]
    fn nested_zyncignore_overrides() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        fs::create_dir_all(root.join("a/b")).expect("mkdir");
        fs::write(root.join(IGNORE_FILE), "*.tmp\nsecret/\n").expect("write");
        fs::write(root.join("a").join(IGNORE_FILE), "!keep.tmp\n/local.txt\n").expect("write");
        fs::write(root.join("a/b").join(IGNORE_FILE), "keep.tmp\n!*.pyc\n").expect("write");
        let rules = IgnoreRules::new(root, &[], true).expect("rules");
        check(
            &rules,
            &[
                ("x.tmp", false, true),
                ("keep.tmp", false, true),
                ("a/keep.tmp", false, false),
                ("a/other.tmp", false, true),
                ("a/b/keep.tmp", false, true),
                ("a/b/c.pyc", false, false),
                ("a/c.pyc", false, true),
                ("a/local.txt", false, true),
                ("a/b/local.txt", false, false),
                ("local.txt", false, false),
                ("a/secret/x", false, true),
            ],
        );
    }

    #[test]
    fn ignored_ancestor_cannot_be_reincluded() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        fs::create_dir_all(root.join("node_modules/pkg")).expect("mkdir");
        fs::write(root.join("node_modules/pkg").join(IGNORE_FILE), "!*\n").expect("write");
        let rules = IgnoreRules::new(root, &["!keep.js".to_string()], true).expect("rules");
        check(&rules, &[("node_modules/pkg/keep.js", false, true)]);
    }

    #[test]
    fn broken_file_is_skipped_and_reload_rereads() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        fs::write(root.join(IGNORE_FILE), "*.a\nbad[z-a]\n").expect("write");
        let rules = IgnoreRules::new(root, &[], false).expect("rules");
        check(&rules, &[("x.a", false, false)]);
        fs::write(root.join(IGNORE_FILE), "*.a\n").expect("write");
        check(&rules, &[("x.a", false, false)]); // still cached
        rules.clone().reload();
        check(&rules, &[("x.a", false, true)]);
    }

    #[test]
    fn the_ignoring_rule_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub").join(IGNORE_FILE), "*.tmp\n").unwrap();
        let rules = IgnoreRules::new(dir.path(), &["*.log".to_string()], true).unwrap();
        let rule = |p: &str| rules.ignoring_rule(&rel(p), false);
        assert_eq!(
            rule("a.log").as_deref(),
            Some("pattern `*.log` from --ignore")
        );
        assert_eq!(
            rule("build/out.o").as_deref(),
            Some("pattern `build/` in the built-in ignore list, which matches its directory build")
        );
        assert_eq!(
            rule("sub/x.tmp").as_deref(),
            Some("pattern `*.tmp` in sub/.zyncignore")
        );
        assert!(rule("x/.zync-tmp-1").is_some_and(|r| r.contains(TEMP_PREFIX)));
        assert_eq!(rule("a.txt"), None);
    }

    #[test]
    fn ignored_by_names_the_highest_ignored_path_and_where_its_rule_comes_from() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        fs::create_dir_all(root.join("proj")).expect("mkdir");
        fs::write(root.join("proj").join(IGNORE_FILE), "*.tmp\n").expect("write");
        let rules = IgnoreRules::new(root, &["*.log".to_string()], true).expect("rules");
        let by = |p: &str, is_dir: bool| {
            rules.ignored_by(&rel(p), is_dir).map(|i| {
                (
                    i.path.as_str().to_string(),
                    i.is_dir,
                    i.rule.pattern,
                    i.rule.source.as_str().to_string(),
                )
            })
        };
        let want = |p: &str, d: bool, pat: &str, src: &str| {
            Some((p.to_string(), d, pat.to_string(), src.to_string()))
        };
        assert_eq!(
            by("node_modules/a/b.js", false),
            want("node_modules", true, "node_modules/", "built-in")
        );
        assert_eq!(
            by("x/build", true),
            want("x/build", true, "build/", "built-in")
        );
        assert_eq!(by("x/build", false), None, "a file named build");
        assert_eq!(
            by("a.log", false),
            want("a.log", false, "*.log", "--ignore")
        );
        assert_eq!(
            by("proj/x.tmp", false),
            want("proj/x.tmp", false, "*.tmp", "proj/.zyncignore")
        );
        assert_eq!(
            by("build/.zync-tmp-1", false),
            want("build", true, "build/", "built-in"),
            "the highest ignored path wins"
        );
        assert_eq!(
            by("d/.zync-tmp-1/x", false),
            want("d/.zync-tmp-1", true, ".zync-tmp-*", "zync")
        );
        assert_eq!(by("proj/main.rs", false), None);
    }

    #[test]
    fn is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<IgnoreRules>();
    }

    #[test]
    fn control_files_are_ignore_files_anything_in_git_and_a_bare_repository_s_config_and_hooks() {
        for (path, control) in [
            (".zyncignore", true),
            ("src/.zyncignore", true),
            (".git/config", true),
            ("sub/.git/hooks/pre-commit", true),
            (".git", true),
            ("src/main.rs", false),
            (".zyncignore.bak", false),
            (".zyncignore/x", false),
            (".gitignore", false),
            // A bare repository's config and hooks; the rest of it is content.
            ("a.git/config", true),
            ("mirrors/project.GIT/hooks/post-receive", true),
            ("project.git./config", true),
            ("project.git/objects/ab/cdef", false),
            ("project.git/description", false),
            ("a.git", false),
            (".git.bak/config", false),
            // The same names on a file system that ignores case.
            (".GIT/config", true),
            ("sub/.Git/hooks/post-checkout", true),
            ("src/.ZyncIgnore", true),
            // What vfat, NTFS and HFS+ take for .git and .zyncignore.
            (".git./hooks/post-checkout", true),
            (".git /config", true),
            ("GIT~1/hooks/post-checkout", true),
            (".g\u{200C}it/config", true),
            ("sub/ZYNCIG~1", true),
            (".gitx/config", false),
            ("git/config", false),
        ] {
            let rel = RelPath::parse(path).expect("valid");
            assert_eq!(control_reason(&rel).is_some(), control, "{path}");
        }
    }
}
