//! Which directory on E each dir name means: `--dirs NAME:PATH` when given, otherwise the
//! mapping zync-daemon recorded in its database, each root pinned to the directory the daemon
//! serves there (the one its path led to when the daemon started). zync-apply writes into a
//! root only while its path still leads to that directory: another user who can rename an
//! entry above it may have swapped it for a symlink to a directory of their choice since
//! (invariant 3, docs/ARCHITECTURE.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use zync_db::{Index, RootIdentity};
use zync_fs::{DirName, FsError, RootId};

/// Dir names and the directories on E they stand for.
#[derive(Debug, Clone, Default)]
pub struct Roots {
    map: BTreeMap<String, Mapped>,
}

/// One dir name's directory, and why nothing may be done in it, if so.
#[derive(Debug, Clone)]
struct Mapped {
    path: PathBuf,
    refused: Option<String>,
}

impl Roots {
    /// Parses `--dirs` when it is not empty (it then replaces the database's mapping), otherwise
    /// reads the mapping the daemon stored and pins each root to the directory the daemon
    /// serves there ([`zync_fs::pin_root_as`]): a root whose path leads elsewhere now, or one
    /// an older daemon recorded without saying which directory it was, is refused by
    /// [`Roots::get`].
    ///
    /// # Errors
    ///
    /// A malformed `NAME:PATH`, a repeated name, a PATH that is not a directory or lies
    /// through another user's symlink, or a database that knows no directories while `--dirs`
    /// is empty.
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
        let mut map = BTreeMap::new();
        for root in stored {
            let path = PathBuf::from(&root.path);
            let refused = match root.identity {
                None => Some(not_recorded(&root.dir, &path)),
                Some(id) => match zync_fs::pin_root_as(&path, pinned(id)) {
                    Err(FsError::RootReplaced { .. }) => Some(replaced(&root.dir, &path)),
                    // A root that is not there is reported by `get` when it is needed.
                    Ok(()) | Err(_) => None,
                },
            };
            map.insert(root.dir, Mapped { path, refused });
        }
        Ok(Roots { map })
    }

    /// Parses `NAME:PATH` arguments, and pins each directory: named by the user, it is the
    /// one written into for the whole run.
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
            if let Some((link, owner)) = zync_fs::others_symlink(Path::new(path)) {
                bail!(
                    "--dirs {spec:?}: {} is a symlink owned by another user (uid {owner}), who \
                     can point it anywhere you can write; zync-apply does not follow it. Name \
                     the directory it leads to if you trust it, or remove the link",
                    link.display()
                );
            }
            let meta = std::fs::metadata(path)
                .with_context(|| format!("--dirs {spec:?}: cannot use {path}"))?;
            if !meta.is_dir() {
                bail!("--dirs {spec:?}: {path} is not a directory; give the directory the daemon serves under that NAME");
            }
            zync_fs::pin_root(Path::new(path)).with_context(|| format!("--dirs {spec:?}"))?;
            let mapped = Mapped {
                path: PathBuf::from(path),
                refused: None,
            };
            if map.insert(name.as_str().to_string(), mapped).is_some() {
                bail!("--dirs names {name} twice; each directory needs its own NAME");
            }
        }
        Ok(Roots { map })
    }

    /// The directory for `dir`.
    ///
    /// # Errors
    ///
    /// `dir` is not mapped, its directory is gone, or it is refused: its path leads to another
    /// directory than the daemon serves, or the daemon did not say which one it serves.
    pub fn get(&self, dir: &str) -> anyhow::Result<&Path> {
        let Some(mapped) = self.map.get(dir) else {
            let known: Vec<&str> = self.map.keys().map(String::as_str).collect();
            bail!(
                "dir {dir:?} is not mapped (known: {}); pass --dirs {dir}:PATH",
                known.join(", ")
            );
        };
        if let Some(why) = &mapped.refused {
            bail!("{why}");
        }
        let root = mapped.path.as_path();
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

    /// Checks every dir of `dirs` before anything is done in any ([`Roots::get`]): a session
    /// is applied or undone into directories the daemon serves, or not at all.
    ///
    /// # Errors
    ///
    /// As [`Roots::get`], for the first dir at fault.
    pub fn check<'a>(&self, dirs: impl IntoIterator<Item = &'a str>) -> anyhow::Result<()> {
        for dir in dirs {
            self.get(dir)?;
        }
        Ok(())
    }

    /// When `err` says that a root's path led to another directory than the one pinned (it
    /// was swapped while zync-apply ran), what to tell the user.
    pub fn replaced_during_run(&self, err: &anyhow::Error) -> Option<String> {
        let path = err.chain().find_map(|e| {
            let fs = e.downcast_ref::<FsError>().or_else(|| {
                e.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<FsError>())
            });
            match fs {
                Some(FsError::RootReplaced { path }) => Some(path.clone()),
                _ => None,
            }
        })?;
        let dir = self
            .map
            .iter()
            .find(|(_, m)| m.path == path)
            .map_or("?", |(dir, _)| dir.as_str());
        Some(format!(
            "{} (found so while zync-apply ran, which stopped there)",
            replaced(dir, &path)
        ))
    }
}

/// The identity the database keeps, as zync-fs compares it.
fn pinned(id: RootIdentity) -> RootId {
    RootId {
        dev: id.dev,
        ino: id.ino,
        born_ns: id.born_ns,
    }
}

/// Why nothing is written into `dir`'s `path`, which leads to another directory than the one
/// the daemon serves, and what to do.
fn replaced(dir: &str, path: &Path) -> String {
    format!(
        "{}, the directory zync-daemon serves as {dir}, is not the directory the daemon \
         started with: it was moved or replaced since, or a directory above it was swapped for a \
         symlink (by another user?). zync-apply writes nothing there. Put the directory back and \
         run zync-apply again; if you moved or replaced it yourself, restart zync-daemon so that \
         it serves the one there now, then run zync-apply again",
        path.display()
    )
}

/// Why nothing is written into a root an older daemon recorded, and what to do.
fn not_recorded(dir: &str, path: &Path) -> String {
    format!(
        "zync-daemon has not recorded which directory it serves as {dir} ({}): it was started \
         by an older zync, and zync-apply writes only into the directory the daemon serves. \
         Restart zync-daemon, then run zync-apply again (or name the directory yourself with \
         --dirs {dir}:PATH)",
        path.display()
    )
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

    /// The daemon's root swapped for a symlink to another directory: refused, naming the root
    /// and what to do, and every open of it refused meanwhile (the pin holds for the run);
    /// put back, it is used again.
    #[test]
    fn a_root_whose_path_leads_elsewhere_than_the_daemon_serves_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("e");
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::create_dir(&theirs).expect("mkdir");
        let mut index = Index::open(&tmp.path().join("db")).expect("open");
        index
            .set_roots(&[crate::testkit::served("docs", &root)])
            .expect("set roots");
        std::fs::rename(&root, tmp.path().join("e.real")).expect("rename");
        std::os::unix::fs::symlink(&theirs, &root).expect("symlink");
        let roots = Roots::resolve(&[], &index).expect("resolve");
        let err = format!("{:#}", roots.get("docs").expect_err("swapped"));
        for part in [
            &format!(
                "{}, the directory zync-daemon serves as docs",
                root.display()
            ),
            "swapped for a symlink",
            "writes nothing there",
            "restart zync-daemon",
        ] {
            assert!(err.contains(part), "{part:?} missing: {err}");
        }
        assert!(roots.check(["docs"]).is_err());
        assert!(matches!(
            zync_fs::Dir::open_root(&root),
            Err(FsError::RootReplaced { .. })
        ));
        std::fs::remove_file(&root).expect("rm");
        std::fs::rename(tmp.path().join("e.real"), &root).expect("rename back");
        let roots = Roots::resolve(&[], &index).expect("resolve");
        assert_eq!(roots.get("docs").expect("back"), root);
        assert!(roots.check(["docs"]).is_ok());
    }

    /// A root an older daemon recorded says nothing of which directory it was: refused until
    /// the daemon restarts, unless the user names the directory.
    #[test]
    fn a_root_recorded_by_an_older_daemon_is_refused_until_the_daemon_restarts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut index = Index::open(&tmp.path().join("db")).expect("open");
        let p = tmp.path().display().to_string();
        index
            .set_roots(&[zync_db::StoredRoot {
                dir: "docs".into(),
                path: p.clone(),
                identity: None,
            }])
            .expect("set roots");
        let roots = Roots::resolve(&[], &index).expect("resolve");
        let err = format!("{:#}", roots.get("docs").expect_err("unpinned"));
        assert!(
            err.contains("Restart zync-daemon") && err.contains("--dirs docs:PATH"),
            "{err}"
        );
        let roots = Roots::resolve(&[format!("docs:{p}")], &index).expect("named");
        assert_eq!(roots.get("docs").expect("docs"), tmp.path());
    }

    /// A `--dirs` path through another user's symlink is refused, naming the link.
    #[test]
    fn a_dirs_path_through_another_users_symlink_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).expect("mkdir");
        let link = tmp.path().join("proj");
        std::os::unix::fs::symlink(&theirs, &link).expect("symlink");
        if std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).is_err() {
            eprintln!("not root: cannot give the symlink to another user; skipped");
            return;
        }
        let err = Roots::parse(&[format!("docs:{}", link.display())]).expect_err("theirs");
        let err = format!("{err:#}");
        assert!(
            err.contains(&link.display().to_string()) && err.contains("uid 65534"),
            "{err}"
        );
    }

    /// Only an error that says a root's path led elsewhere stops a run; it is told whether
    /// zync-fs's error is in the chain or wrapped in an I/O error.
    #[test]
    fn a_root_replaced_during_a_run_is_told_from_other_errors() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let roots = Roots::parse(&[format!("docs:{}", tmp.path().display())]).expect("parse");
        let replaced = || FsError::RootReplaced {
            path: tmp.path().to_path_buf(),
        };
        for e in [
            anyhow::Error::new(replaced())
                .context("cannot inspect E's directories")
                .context("while applying docs/f"),
            anyhow::Error::new(std::io::Error::other(replaced())).context("cannot write"),
        ] {
            let said = roots.replaced_during_run(&e).expect("told");
            assert!(
                said.contains("serves as docs") && said.contains("while zync-apply ran"),
                "{said}"
            );
        }
        for e in [
            anyhow::anyhow!("disk full"),
            anyhow::Error::new(FsError::SymlinkInPath {
                path: tmp.path().join("d"),
            }),
        ] {
            assert_eq!(roots.replaced_during_run(&e), None, "{e:#}");
        }
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
