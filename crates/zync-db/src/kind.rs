//! The kind of a synced path (file, directory, symlink) and how it is stored as TEXT.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// What a path is. Stored as the TEXT `'file'`, `'dir'` or `'symlink'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (its target is kept, never followed).
    Symlink,
}

impl Kind {
    /// The stored (and wire) spelling: `"file"`, `"dir"` or `"symlink"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
        }
    }

    /// Parses the spelling [`Kind::as_str`] gives; anything else (including other cases) is
    /// `None`.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "file" => Some(Kind::File),
            "dir" => Some(Kind::Dir),
            "symlink" => Some(Kind::Symlink),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ToSql for Kind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for Kind {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        Kind::parse(text).ok_or_else(|| {
            FromSqlError::Other(
                format!("unknown kind {text:?} (expected file, dir or symlink)").into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_and_parse_round_trip() {
        for kind in [Kind::File, Kind::Dir, Kind::Symlink] {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind), "kind {kind:?}");
        }
        assert_eq!(Kind::File.as_str(), "file");
        assert_eq!(Kind::Dir.as_str(), "dir");
        assert_eq!(Kind::Symlink.as_str(), "symlink");
    }

    #[test]
    fn parse_rejects_other_spellings() {
        for s in ["", "File", "DIR", "link", "symlink ", "directory"] {
            assert_eq!(Kind::parse(s), None, "parse({s:?})");
        }
    }

    #[test]
    fn unknown_stored_kind_is_an_error_not_a_panic() {
        let conn = rusqlite::Connection::open_in_memory().expect("open");
        let got: rusqlite::Result<Kind> = conn.query_row("SELECT 'fifo'", [], |r| r.get(0));
        let err = got.expect_err("'fifo' must not parse as a Kind");
        assert!(
            err.to_string().contains("fifo"),
            "error {err} should name the value"
        );
        let ok: Kind = conn
            .query_row("SELECT ?1", [Kind::Symlink], |r| r.get(0))
            .expect("row");
        assert_eq!(ok, Kind::Symlink);
    }
}
