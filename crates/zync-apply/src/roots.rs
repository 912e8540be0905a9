//! Which directory on E each dir name means: `--dirs NAME:PATH` when given, otherwise the
//! mapping zync-daemon recorded in its database.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use zync_db::Index;
use zync_fs::DirName;

/// Dir names and the directories on E they stand for.
#[derive(Debug, Clone, Default)]
pub struct Roots {
    map: BTreeMap<String, PathBuf>,
}

impl Roots {
    /// Parses `--dirs` when it is not empty (it then replaces the database's mapping), otherwise
    /// reads the mapping the daemon stored.
    ///
    /// # Errors
    ///
    /// A malformed `NAME:PATH`, a repeated name, a PATH that is not a directory, or a database
    /// that knows no directories while `--dirs` is empty.
    pub fn resolve(dirs: &[String], index: &Index) -> anyhow::Result<Roots> {
        if !dirs.is_empty() {
            return Roots::parse(dirs);
        }
        let stored = index
            .roots()
            .context("cannot read the directory mapping from the database")?;
        if stored.is_empty() {
            bail!(
                "the database knows no directories; pass --dirs NAME:PATH as given to zync-daemon"
            );
        }
        Ok(Roots {
            map: stored
                .into_iter()
                .map(|r| (r.dir, PathBuf::from(r.path)))
                .collect(),
        })
    }

    /// Parses `NAME:PATH` arguments.
    ///
    /// # Errors
    ///
    /// Names the argument at fault and how to write it.
    pub fn parse(dirs: &[String]) -> anyhow::Result<Roots> {
        let mut map = BTreeMap::new();
        for spec in dirs {
            let Some((name, path)) = spec.split_once(':') else {
                bail!("--dirs {spec:?} is not NAME:PATH; write it as, for example, docs:/home/me/documents");
            };
            let name = DirName::parse(name).with_context(|| format!("--dirs {spec:?}"))?;
            if path.is_empty() {
                bail!("--dirs {spec:?} has an empty PATH; write it as NAME:/path/to/dir");
            }
            let meta = std::fs::metadata(path)
                .with_context(|| format!("--dirs {spec:?}: cannot use {path}"))?;
            if !meta.is_dir() {
                bail!("--dirs {spec:?}: {path} is not a directory; give the directory the daemon serves under that NAME");
            }
            if map
                .insert(name.as_str().to_string(), PathBuf::from(path))
                .is_some()
            {
                bail!("--dirs names {name} twice; each directory needs its own NAME");
            }
        }
        Ok(Roots { map })
    }

    /// The directory for `dir`.
    ///
    /// # Errors
    ///
    /// `dir` is not mapped, or its directory is gone.
    pub fn get(&self, dir: &str) -> anyhow::Result<&Path> {
        let Some(root) = self.map.get(dir) else {
            let known: Vec<&str> = self.map.keys().map(String::as_str).collect();
            bail!(
                "dir {dir:?} is not mapped (known: {}); pass --dirs {dir}:PATH",
                known.join(", ")
            );
        };
        match std::fs::metadata(root) {
            Ok(md) if md.is_dir() => Ok(root),
            Ok(_) => bail!(
                "the directory for {dir}, {}, is not a directory; pass --dirs {dir}:PATH with the directory the daemon serves",
                root.display()
            ),
            Err(e) => Err(e).with_context(|| {
                format!(
                    "cannot use the directory for {dir}, {}; pass --dirs {dir}:PATH",
                    root.display()
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let p = tmp.path().display().to_string();
        let roots = Roots::parse(&[format!("docs:{p}")]).expect("parse");
        assert_eq!(roots.get("docs").expect("docs"), tmp.path());
        let err = roots.get("code").expect_err("unmapped");
        assert!(format!("{err:#}").contains("--dirs code:PATH"), "{err:#}");
        for bad in [
            "docs".to_string(),
            format!("../x:{p}"),
            "docs:".to_string(),
            format!("docs:{p}/missing"),
        ] {
            assert!(
                Roots::parse(std::slice::from_ref(&bad)).is_err(),
                "{bad} accepted"
            );
        }
        assert!(Roots::parse(&[format!("a:{p}"), format!("a:{p}")]).is_err());
    }

    #[test]
    fn falls_back_to_the_database_and_says_how_to_fix_an_empty_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut index = Index::open(&tmp.path().join("db")).expect("open");
        let err = Roots::resolve(&[], &index).expect_err("no roots");
        assert!(
            format!("{err:#}").contains("pass --dirs NAME:PATH"),
            "{err:#}"
        );
        let p = tmp.path().display().to_string();
        index
            .set_roots(&[crate::testkit::served("docs", tmp.path())])
            .expect("set roots");
        let roots = Roots::resolve(&[], &index).expect("resolve");
        assert_eq!(roots.get("docs").expect("docs"), tmp.path());
        // --dirs replaces the stored mapping.
        let roots = Roots::resolve(&[format!("code:{p}")], &index).expect("resolve");
        assert!(roots.get("docs").is_err());
    }
}
