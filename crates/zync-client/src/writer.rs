//! One writer per client database. Two clients writing one database and one tree (a loop
//! client and a `--once` started beside it, or two loops) would remove each other's temp
//! files, record each other's half-finished downloads and race on every rename. So every run
//! that writes (loop, `--once`, `--update-upstream`) holds an exclusive lock on `<db>.lock` for
//! its whole life, taken before anything else is touched; `--status` reads and takes none.
//! The lock is a `zync_fs::try_lock` flock: it ends with its process, however that ends.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zync_fs::{LockFile, Locked};

use crate::error::ClientError;

/// Who holds the lock, as its note says.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    mode: String,
    started_unix: i64,
}

/// The lock file of the client database `db`: `<db>.lock` beside it.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    db.with_file_name(name)
}

/// Takes the writer lock of `db` for a run in `mode` (`loop`, `--once`, `--update-upstream`).
///
/// # Errors
///
/// [`ClientError::Busy`] naming the running client; an I/O error on the lock file.
pub fn acquire(db: &Path, mode: &str) -> Result<LockFile, ClientError> {
    let path = lock_path(db);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| ClientError::Io {
            what: "create",
            path: parent.display().to_string(),
            source,
        })?;
    }
    let holder = Holder {
        pid: std::process::id(),
        mode: mode.to_string(),
        started_unix: chrono::Local::now().timestamp(),
    };
    let note = serde_json::to_vec(&holder).unwrap_or_default();
    let locked = zync_fs::try_lock(&path, &note).map_err(|source| ClientError::Io {
        what: "lock",
        path: path.display().to_string(),
        source,
    })?;
    match locked {
        Locked::Held(lock) => Ok(lock),
        Locked::Busy(note) => {
            let who = match serde_json::from_str::<Holder>(&note) {
                Ok(h) => format!(
                    "another zync-client ({}, pid {}, started {})",
                    h.mode,
                    h.pid,
                    chrono::DateTime::from_timestamp(h.started_unix, 0)
                        .map(|t| t
                            .with_timezone(&chrono::Local)
                            .format("%Y-%m-%d %H:%M:%S")
                            .to_string())
                        .unwrap_or_else(|| format!("@{}", h.started_unix))
                ),
                Err(_) => "another zync-client".to_string(),
            };
            Err(ClientError::Busy(format!(
                "{who} is syncing with the database {}; one client writes a database at a time: \
                 stop it first, or use --status to see where it is (its lock on {} ends with \
                 that process)",
                db.display(),
                path.display()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_naming_the_first() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let db = tmp.path().join("state/sync_client.db");
        let first = acquire(&db, "loop").expect("first");
        let err = acquire(&db, "--once").expect_err("second").to_string();
        assert!(
            err.contains("another zync-client (loop, pid")
                && err.contains(&std::process::id().to_string())
                && err.contains("sync_client.db"),
            "{err}"
        );
        drop(first);
        acquire(&db, "--once").expect("free again");
        assert_eq!(lock_path(&db), tmp.path().join("state/sync_client.db.lock"));
    }
}
