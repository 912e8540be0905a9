//! The barrier behind `zync-apply wait` and `zync-client --wait` (docs/ARCHITECTURE.md,
//! "Barriers"): a waiter takes a ticket, the daemon's indexer answers every ticket it has
//! seen once it has taken in what the watcher reported before it (the index then holds every
//! change made on E before the waiter asked), and the waiter compares what the clients
//! acknowledged with each directory's sequence at that point.
//!
//! Tickets are two counters in `meta` (`settle_requested`, `settled`), so `zync-apply` on E
//! asks through the database without a connection, and a daemon of any schema version
//! answers. Each client's directories (sent in its HELLO) are kept in `meta` too, under
//! `client_dirs:ID`, so a waiter knows which directories a client mirrors.

use rusqlite::OptionalExtension;

use crate::error::{Context, Result};
use crate::Index;

/// The `meta` key of the last ticket handed out.
const REQUESTED: &str = "settle_requested";
/// The `meta` key of the last ticket the daemon answered.
const SETTLED: &str = "settled";
/// The `meta` key prefix of a client's directories.
pub(crate) const CLIENT_DIRS_PREFIX: &str = "client_dirs:";

impl Index {
    /// Takes the next ticket: the daemon answers it ([`Index::settled`] reaches it) once its
    /// index holds every change made on E before now.
    ///
    /// # Errors
    ///
    /// An SQLite failure (a read-only database among them).
    pub fn request_settle(&self) -> Result<u64> {
        // One statement, so two waiters never get the same ticket.
        let value: String = self
            .conn()
            .query_row(
                "INSERT INTO meta (key, value) VALUES (?1, '1')
                 ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1
                 RETURNING value",
                [REQUESTED],
                |row| row.get(0),
            )
            .ctx("asking the daemon to settle its index")?;
        Ok(value.parse().unwrap_or(0))
    }

    /// The last ticket handed out (0: none yet).
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn settle_requested(&self) -> Result<u64> {
        self.counter(REQUESTED)
    }

    /// The last ticket the daemon answered (0: none yet).
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn settled(&self) -> Result<u64> {
        self.counter(SETTLED)
    }

    /// Records that every ticket up to `ticket` is answered; never moves the answer back.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn mark_settled(&self, ticket: u64) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value
                 WHERE CAST(value AS INTEGER) < CAST(excluded.value AS INTEGER)",
                (SETTLED, ticket.to_string()),
            )
            .ctx("recording that the index settled")?;
        Ok(())
    }

    /// Records the directories `client_id` mirrors, as its HELLO said.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn set_client_dirs(&self, client_id: &str, dirs: &[String]) -> Result<()> {
        // A client says the same at every connection: a write (a flush of the database)
        // only when it changed.
        if self.client_dirs(client_id)?.as_deref() == Some(dirs) {
            return Ok(());
        }
        self.conn()
            .execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (format!("{CLIENT_DIRS_PREFIX}{client_id}"), dirs.join("\n")),
            )
            .with_ctx(|| format!("recording the directories of {client_id}"))?;
        Ok(())
    }

    /// The directories `client_id` said it mirrors, or `None` when it never said (a client
    /// older than this daemon).
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn client_dirs(&self, client_id: &str) -> Result<Option<Vec<String>>> {
        let value: Option<String> = self
            .conn()
            .query_row(
                "SELECT value FROM meta WHERE key = ?1",
                [format!("{CLIENT_DIRS_PREFIX}{client_id}")],
                |row| row.get(0),
            )
            .optional()
            .with_ctx(|| format!("reading the directories of {client_id}"))?;
        Ok(value.map(|v| {
            v.split('\n')
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect()
        }))
    }

    fn counter(&self, key: &str) -> Result<u64> {
        let value: Option<String> = self
            .conn()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |row| {
                row.get(0)
            })
            .optional()
            .with_ctx(|| format!("reading the setting {key}"))?;
        Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_rise_and_the_answer_never_moves_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("index.db");
        let index = Index::open(&path).expect("open");
        assert_eq!(index.settle_requested().expect("requested"), 0);
        assert_eq!(index.settled().expect("settled"), 0);
        let other = Index::open(&path).expect("a second connection, as zync-apply's");
        assert_eq!(other.request_settle().expect("ticket"), 1);
        assert_eq!(index.request_settle().expect("ticket"), 2);
        assert_eq!(index.settle_requested().expect("requested"), 2);
        index.mark_settled(2).expect("settle");
        index.mark_settled(1).expect("a late, lower answer");
        assert_eq!(other.settled().expect("settled"), 2);
        assert_eq!(other.request_settle().expect("ticket"), 3);
    }

    #[test]
    fn a_clients_dirs_are_kept_and_replaced() {
        let index = Index::open_in_memory().expect("open");
        assert_eq!(index.client_dirs("c1").expect("dirs"), None);
        index
            .set_client_dirs("c1", &["docs".to_string(), "code".to_string()])
            .expect("set");
        index.set_client_dirs("c2", &[]).expect("set");
        assert_eq!(
            index.client_dirs("c1").expect("dirs"),
            Some(vec!["docs".to_string(), "code".to_string()])
        );
        assert_eq!(index.client_dirs("c2").expect("dirs"), Some(vec![]));
        index
            .set_client_dirs("c1", &["docs".to_string()])
            .expect("replace");
        assert_eq!(
            index.client_dirs("c1").expect("dirs"),
            Some(vec!["docs".to_string()])
        );
        // The same again (every connection says it) writes nothing.
        let before = index.conn().total_changes();
        index
            .set_client_dirs("c1", &["docs".to_string()])
            .expect("same");
        index.set_client_dirs("c2", &[]).expect("same");
        assert_eq!(index.conn().total_changes(), before);
    }
}
