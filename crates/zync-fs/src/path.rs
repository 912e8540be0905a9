//! `RelPath`, a validated path relative to a synced root, and `PathError`, why a path or a dir
//! name was rejected. Every path from the network or a database is parsed into a `RelPath` once
//! (invariant 3, docs/ARCHITECTURE.md), so nothing inside zync can name a file outside its root.

use std::fmt;
use std::path::{Path, PathBuf};

pub use crate::dir_name::DirName;

/// Longest accepted relative path, in bytes (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest accepted path component, in bytes (Linux `NAME_MAX`).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Longest accepted dir name, in characters.
pub const MAX_DIR_NAME_CHARS: usize = 64;

/// Why a path or dir name was rejected. Each message names the input and the rule it broke.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PathError {
    /// The path is the empty string.
    #[error("path is empty; a path must name a file or directory inside the synced directory")]
    Empty,
    /// The path contains a NUL byte.
    #[error("path {} contains a NUL byte; paths cannot contain NUL", shown(.path))]
    Nul {
        /// The offending path.
        path: String,
    },
    /// The path contains a backslash.
    #[error("path {} contains a backslash; paths use '/' as the only separator", shown(.path))]
    Backslash {
        /// The offending path.
        path: String,
    },
    /// The path starts with `/`.
    #[error(
        "path {} is absolute; paths must be relative to the synced directory",
        shown(.path)
    )]
    Absolute {
        /// The offending path.
        path: String,
    },
    /// The path ends with `/`.
    #[error("path {} ends with '/'; paths must not have a trailing slash", shown(.path))]
    TrailingSlash {
        /// The offending path.
        path: String,
    },
    /// The path has an empty component (`a//b`).
    #[error("path {} has an empty component (\"//\"); components must not be empty", shown(.path))]
    EmptyComponent {
        /// The offending path.
        path: String,
    },
    /// The path has a `.` component.
    #[error("path {} has a \".\" component; paths must be normalised", shown(.path))]
    Dot {
        /// The offending path.
        path: String,
    },
    /// The path has a `..` component.
    #[error(
        "path {} has a \"..\" component; paths must stay inside the synced directory",
        shown(.path)
    )]
    DotDot {
        /// The offending path.
        path: String,
    },
    /// The path is longer than [`MAX_PATH_BYTES`].
    #[error("path {} is {len} bytes long; the limit is {MAX_PATH_BYTES} bytes", shown(.path))]
    TooLong {
        /// The offending path.
        path: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A component is longer than [`MAX_COMPONENT_BYTES`].
    #[error(
        "path {} has a component of {len} bytes; the limit is {MAX_COMPONENT_BYTES} bytes",
        shown(.path)
    )]
    ComponentTooLong {
        /// The offending path.
        path: String,
        /// The length of the long component in bytes.
        len: usize,
    },
    /// An OS path is not valid UTF-8 (shown lossily).
    #[error("path {} is not valid UTF-8; zync only syncs UTF-8 names", shown(.path))]
    NotUtf8 {
        /// The offending path, converted lossily.
        path: String,
    },
    /// A dir name is empty or longer than [`MAX_DIR_NAME_CHARS`].
    #[error(
        "dir name {} is {len} characters long; it must be 1 to {MAX_DIR_NAME_CHARS} characters",
        shown(.name)
    )]
    DirNameLength {
        /// The offending name.
        name: String,
        /// Its length in characters.
        len: usize,
    },
    /// A dir name has a character outside `[A-Za-z0-9._-]`.
    #[error(
        "dir name {} contains {ch:?}; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed",
        shown(.name)
    )]
    DirNameChar {
        /// The offending name.
        name: String,
        /// The first character not allowed.
        ch: char,
    },
    /// A dir name is `.` or `..`.
    #[error("dir name {} is not allowed; it must not be \".\" or \"..\"", shown(.name))]
    DirNameDots {
        /// The offending name.
        name: String,
    },
}

/// Quotes an input for an error message, cutting very long inputs so messages stay readable.
fn shown(s: &str) -> String {
    const KEEP: usize = 80;
    if s.len() <= KEEP {
        return format!("{s:?}");
    }
    let mut end = KEEP;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}...", &s[..end])
}

/// A validated path relative to a synced root: non-empty, `/`-separated, no leading or trailing
/// `/`, no empty, `.` or `..` component, no NUL or backslash, at most 4096 bytes in total and
/// 255 bytes per component.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct RelPath(String);

impl RelPath {
    /// Parses and validates a relative path.
    ///
    /// # Errors
    ///
    /// A [`PathError`] naming the first rule `s` breaks.
    pub fn parse(s: &str) -> Result<RelPath, PathError> {
        let err_path = || s.to_string();
        if s.is_empty() {
            return Err(PathError::Empty);
        }
        if s.contains('\0') {
            return Err(PathError::Nul { path: err_path() });
        }
        if s.contains('\\') {
            return Err(PathError::Backslash { path: err_path() });
        }
        if s.starts_with('/') {
            return Err(PathError::Absolute { path: err_path() });
        }
        if s.ends_with('/') {
            return Err(PathError::TrailingSlash { path: err_path() });
        }
        for component in s.split('/') {
            match component {
                "" => return Err(PathError::EmptyComponent { path: err_path() }),
                "." => return Err(PathError::Dot { path: err_path() }),
                ".." => return Err(PathError::DotDot { path: err_path() }),
                c if c.len() > MAX_COMPONENT_BYTES => {
                    return Err(PathError::ComponentTooLong {
                        path: err_path(),
                        len: c.len(),
                    })
                }
                _ => {}
            }
        }
        if s.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong {
                path: err_path(),
                len: s.len(),
            });
        }
        Ok(RelPath(s.to_string()))
    }

    /// Converts an OS path relative to a root (as produced by `strip_prefix`).
    ///
    /// # Errors
    ///
    /// [`PathError::NotUtf8`] for a non-UTF-8 path, otherwise as [`RelPath::parse`].
    pub fn from_path(p: &Path) -> Result<RelPath, PathError> {
        match p.to_str() {
            Some(s) => RelPath::parse(s),
            None => Err(PathError::NotUtf8 {
                path: p.to_string_lossy().into_owned(),
            }),
        }
    }

    /// The path as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path under `root`.
    pub fn to_path(&self, root: &Path) -> PathBuf {
        root.join(&self.0)
    }

    /// The parent path, or `None` for a single component.
    pub fn parent(&self) -> Option<RelPath> {
        self.0.rfind('/').map(|i| RelPath(self.0[..i].to_string()))
    }

    /// The last component.
    pub fn file_name(&self) -> &str {
        match self.0.rfind('/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    /// Appends `name` (normally one component) and validates the result.
    ///
    /// # Errors
    ///
    /// As [`RelPath::parse`] on the joined path.
    pub fn join(&self, name: &str) -> Result<RelPath, PathError> {
        RelPath::parse(&format!("{}/{}", self.0, name))
    }

    /// The number of components.
    pub fn depth(&self) -> usize {
        self.0.bytes().filter(|&b| b == b'/').count() + 1
    }

    /// The proper ancestors, shallowest first: `a/b/c` gives `[a, a/b]`.
    pub fn ancestors(&self) -> Vec<RelPath> {
        self.0
            .match_indices('/')
            .map(|(i, _)| RelPath(self.0[..i].to_string()))
            .collect()
    }

    /// Whether `prefix` is this path or one of its ancestors, compared by component:
    /// `a/bc` does not start with `a/b`.
    pub fn starts_with(&self, prefix: &RelPath) -> bool {
        match self.0.strip_prefix(prefix.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;

    fn rel(s: &str) -> RelPath {
        RelPath::parse(s).expect("valid test path")
    }

    #[test]
    fn accepts_valid_paths() {
        let long_component = "c".repeat(255);
        let long_path = format!("{}/{}", "d".repeat(255), "e".repeat(3840));
        let near_limit = vec!["x".repeat(200); 20].join("/"); // 4019 bytes
        for s in [
            "a",
            "a/b/c",
            ".hidden",
            "...",
            "..x",
            "x..",
            "a b/ünïcödé ✓",
            "a:b*?",
            long_component.as_str(),
            near_limit.as_str(),
        ] {
            let p = RelPath::parse(s);
            assert_eq!(
                p.as_ref().map(RelPath::as_str),
                Ok(s),
                "expected {s:?} to be accepted"
            );
        }
        assert!(matches!(
            RelPath::parse(&long_path),
            Err(PathError::ComponentTooLong { len: 3840, .. })
        ));
    }

    #[test]
    fn rejects_each_rule() {
        let long_component = "c".repeat(256);
        let too_long = vec!["x".repeat(200); 21].join("/"); // 4220 bytes
        type Check = fn(&PathError) -> bool;
        let cases: Vec<(&str, Check)> = vec![
            ("", |e| matches!(e, PathError::Empty)),
            ("a\0b", |e| matches!(e, PathError::Nul { .. })),
            ("a\\b", |e| matches!(e, PathError::Backslash { .. })),
            ("/a", |e| matches!(e, PathError::Absolute { .. })),
            ("/", |e| matches!(e, PathError::Absolute { .. })),
            ("a/", |e| matches!(e, PathError::TrailingSlash { .. })),
            ("a//b", |e| matches!(e, PathError::EmptyComponent { .. })),
            (".", |e| matches!(e, PathError::Dot { .. })),
            ("a/./b", |e| matches!(e, PathError::Dot { .. })),
            ("..", |e| matches!(e, PathError::DotDot { .. })),
            ("../x", |e| matches!(e, PathError::DotDot { .. })),
            ("a/../b", |e| matches!(e, PathError::DotDot { .. })),
            ("a/..", |e| matches!(e, PathError::DotDot { .. })),
            (long_component.as_str(), |e| {
                matches!(e, PathError::ComponentTooLong { len: 256, .. })
            }),
            (too_long.as_str(), |e| {
                matches!(e, PathError::TooLong { len: 4220, .. })
            }),
        ];
        for (input, check) in cases {
            match RelPath::parse(input) {
                Ok(p) => panic!("expected {input:?} to be rejected, got {p:?}"),
                Err(e) => assert!(check(&e), "wrong error for {input:?}: {e:?}"),
            }
        }
    }

    #[test]
    fn messages_name_input_and_rule() {
        let e = RelPath::parse("../x").expect_err("must reject");
        assert_eq!(
            e.to_string(),
            "path \"../x\" has a \"..\" component; paths must stay inside the synced directory"
        );
        let long = "y".repeat(5000);
        let msg = RelPath::parse(&long).expect_err("must reject").to_string();
        assert!(
            msg.len() < 300,
            "message not shortened: {} bytes",
            msg.len()
        );
    }

    #[test]
    fn from_path_rejects_non_utf8() {
        let p = Path::new(OsStr::from_bytes(b"a/\xff"));
        assert!(matches!(
            RelPath::from_path(p),
            Err(PathError::NotUtf8 { .. })
        ));
        assert_eq!(RelPath::from_path(Path::new("a/b")), Ok(rel("a/b")));
        assert!(RelPath::from_path(Path::new("/etc")).is_err());
    }

    #[test]
    fn accessors() {
        let p = rel("a/b/c.txt");
        assert_eq!(p.to_path(Path::new("/r")), PathBuf::from("/r/a/b/c.txt"));
        assert_eq!(p.parent(), Some(rel("a/b")));
        assert_eq!(rel("a").parent(), None);
        assert_eq!(p.file_name(), "c.txt");
        assert_eq!(rel("a").file_name(), "a");
        assert_eq!(p.depth(), 3);
        assert_eq!(p.ancestors(), vec![rel("a"), rel("a/b")]);
        assert!(rel("a").ancestors().is_empty());
        assert_eq!(rel("a").join("b"), Ok(rel("a/b")));
        assert!(rel("a").join("..").is_err());
        assert!(rel("a").join("").is_err());
        assert_eq!(p.to_string(), "a/b/c.txt");
    }

    #[test]
    fn starts_with_is_component_wise() {
        assert!(rel("a/b/c").starts_with(&rel("a/b")));
        assert!(rel("a/b").starts_with(&rel("a/b")));
        assert!(rel("a/b").starts_with(&rel("a")));
        assert!(!rel("a/bc").starts_with(&rel("a/b")));
        assert!(!rel("a").starts_with(&rel("a/b")));
        assert!(!rel("b/a").starts_with(&rel("a")));
    }

    proptest! {
        #[test]
        fn parsed_paths_are_safe(s in "[a./\\\\\0-]{0,12}|\\PC{0,40}") {
            if let Ok(p) = RelPath::parse(&s) {
                prop_assert!(p.as_str().split('/').all(|c| c != ".." && c != "." && !c.is_empty()));
                prop_assert!(!p.as_str().starts_with('/'));
                prop_assert!(!Path::new(p.as_str()).is_absolute());
                prop_assert_eq!(p.as_str(), s.as_str());
                prop_assert_eq!(RelPath::parse(p.as_str()), Ok(p.clone()));
                prop_assert_eq!(RelPath::from_path(Path::new(p.as_str())), Ok(p));
            }
        }

        #[test]
        fn dotdot_and_absolute_are_rejected(a in "\\PC{0,20}", b in "\\PC{0,20}") {
            let dotdot = format!("{a}/../{b}");
            prop_assert!(RelPath::parse(&dotdot).is_err(), "accepted {:?}", dotdot);
            let absolute = format!("/{a}");
            prop_assert!(RelPath::parse(&absolute).is_err(), "accepted {:?}", absolute);
        }

        #[test]
        fn ancestors_are_prefixes(parts in proptest::collection::vec("[a-z.]{1,4}", 1..6)) {
            let s = parts.join("/");
            if let Ok(p) = RelPath::parse(&s) {
                let ancestors = p.ancestors();
                prop_assert_eq!(ancestors.len(), p.depth() - 1);
                for (i, a) in ancestors.iter().enumerate() {
                    prop_assert!(p.starts_with(a));
                    prop_assert_eq!(a.depth(), i + 1);
                }
                prop_assert_eq!(p.parent(), ancestors.last().cloned());
            }
        }
    }
}
