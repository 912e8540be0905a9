//! `DirName`, the validated NAME in `--dirs NAME:PATH`: how client and daemon refer to a synced
//! directory on the wire and in their databases.

use crate::path::{PathError, MAX_DIR_NAME_CHARS};
use std::fmt;

/// The NAME in `--dirs NAME:PATH`: 1 to 64 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct DirName(String);

impl DirName {
    /// Parses and validates a dir name.
    ///
    /// # Errors
    ///
    /// A [`PathError`] naming the rule `s` breaks.
    pub fn parse(s: &str) -> Result<DirName, PathError> {
        let len = s.chars().count();
        if len == 0 || len > MAX_DIR_NAME_CHARS {
            return Err(PathError::DirNameLength {
                name: s.to_string(),
                len,
            });
        }
        if let Some(ch) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(PathError::DirNameChar {
                name: s.to_string(),
                ch,
            });
        }
        if s == "." || s == ".." {
            return Err(PathError::DirNameDots {
                name: s.to_string(),
            });
        }
        Ok(DirName(s.to_string()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DirName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names() {
        for ok in ["docs", "a", "A-b_c.d", "..x", &"n".repeat(64)] {
            assert_eq!(
                DirName::parse(ok).map(|d| d.to_string()),
                Ok(ok.to_string())
            );
        }
        assert!(matches!(
            DirName::parse(""),
            Err(PathError::DirNameLength { len: 0, .. })
        ));
        assert!(matches!(
            DirName::parse(&"n".repeat(65)),
            Err(PathError::DirNameLength { len: 65, .. })
        ));
        for (bad, ch) in [("a/b", '/'), ("a:b", ':'), ("a b", ' '), ("é", 'é')] {
            assert_eq!(
                DirName::parse(bad),
                Err(PathError::DirNameChar {
                    name: bad.to_string(),
                    ch
                })
            );
        }
        assert!(matches!(
            DirName::parse("."),
            Err(PathError::DirNameDots { .. })
        ));
        assert!(matches!(
            DirName::parse(".."),
            Err(PathError::DirNameDots { .. })
        ));
    }
}
