//! The kind of a synced path (file, directory, symlink): the one definition that the wire, the
//! index (as TEXT, with the `rusqlite` feature) and the file system (`zync_fs::Meta`) share.

/// What a path is. Spelled `"file"`, `"dir"` or `"symlink"` on the wire and in SQLite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (synced as a link, its target kept, never followed).
    Symlink,
}

impl Kind {
    /// Every kind, for exhaustive tests.
    pub const ALL: [Kind; 3] = [Kind::File, Kind::Dir, Kind::Symlink];

    /// The stored and wire spelling: `"file"`, `"dir"` or `"symlink"`.
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

#[cfg(feature = "rusqlite")]
mod sql {
    use super::Kind;
    use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

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
        fn unknown_stored_kind_is_an_error_not_a_panic() {
            let conn = rusqlite::Connection::open_in_memory().expect("open");
            let got: rusqlite::Result<Kind> = conn.query_row("SELECT 'fifo'", [], |r| r.get(0));
            let err = got.expect_err("'fifo' must not parse as a Kind");
            assert!(
                err.to_string().contains("fifo"),
                "error {err} should name the value"
            );
            for kind in Kind::ALL {
                let back: Kind = conn
                    .query_row("SELECT ?1", [kind], |r| r.get(0))
                    .expect("row");
                assert_eq!(back, kind);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_parse_and_json_agree() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind), "kind {kind:?}");
            let json = serde_json::to_string(&kind).expect("serialize");
            assert_eq!(
                json,
                format!("\"{}\"", kind.as_str()),
                "{kind:?} on the wire"
            );
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
}
