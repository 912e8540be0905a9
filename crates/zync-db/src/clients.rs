//! What the daemon knows of its clients, for `zync-apply status` only: how far each has
//! acknowledged each directory, and its connections (presence).

use crate::error::{Context, Result};
use crate::sql::{seq_from_sql, seq_to_sql, unix_now};
use crate::Index;

/// How far a client has told the daemon it got in one dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The client's id.
    pub client_id: String,
    /// The dir name.
    pub dir: String,
    /// The highest sequence the client has acknowledged.
    pub seq: u64,
    /// When it last acknowledged, seconds since the Unix epoch.
    pub at_unix: i64,
}

/// What the daemon knows of one client's connections (for `zync-apply status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// The client's id, as sent in HELLO.
    pub client_id: String,
    /// How many handshaken connections it has open now (0: not connected).
    pub connections: u64,
    /// Its first HELLO, seconds since the Unix epoch.
    pub first_seen_unix: i64,
    /// Its last HELLO or disconnect, seconds since the Unix epoch.
    pub last_seen_unix: i64,
    /// The version it announced in its last HELLO.
    pub client_version: Option<String>,
}

impl Index {
    /// Records that `client_id` has applied dir up to `seq`. Keeps the highest seq ever
    /// acknowledged (a late, lower ack does not move it back) and sets the time to now.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn record_ack(&self, client_id: &str, dir: &str, seq: u64) -> Result<()> {
        let now = unix_now();
        self.without_waiting(|conn| {
            conn.prepare_cached(
                "INSERT INTO acks (client_id, dir, seq, at_unix) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (client_id, dir)
                 DO UPDATE SET seq = max(seq, excluded.seq), at_unix = excluded.at_unix",
            )
            .and_then(|mut stmt| stmt.execute((client_id, dir, seq_to_sql(seq), now)))
            .with_ctx(|| format!("recording the ack of {client_id} for {dir} at {seq}"))
        })?;
        Ok(())
    }

    /// Every client's last ack per dir, by client id then dir.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn acks(&self) -> Result<Vec<Ack>> {
        let mut stmt = self
            .conn()
            .prepare_cached("SELECT client_id, dir, seq, at_unix FROM acks ORDER BY client_id, dir")
            .ctx("reading the acks")?;
        let rows = stmt
            .query_map([], |row| {
                Ok(Ack {
                    client_id: row.get(0)?,
                    dir: row.get(1)?,
                    seq: seq_from_sql(row.get(2)?),
                    at_unix: row.get(3)?,
                })
            })
            .ctx("reading the acks")?;
        rows.collect::<rusqlite::Result<_>>()
            .ctx("reading the acks")
    }

    /// Records a HELLO from `client_id`: one more open connection, seen now.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn client_connected(&self, client_id: &str, version: Option<&str>) -> Result<()> {
        self.without_waiting(|conn| {
            conn.execute(
                "INSERT INTO clients (client_id, connections, first_seen_unix, last_seen_unix,
                     client_version) VALUES (?1, 1, ?2, ?2, ?3)
                 ON CONFLICT (client_id) DO UPDATE SET connections = connections + 1,
                     last_seen_unix = excluded.last_seen_unix,
                     client_version = excluded.client_version",
                (client_id, unix_now(), version),
            )
            .with_ctx(|| format!("recording that {client_id} connected"))
        })?;
        Ok(())
    }

    /// Forgets the clients seen least recently beyond the newest `keep` (with their acks and
    /// the directories they named): any holder of the token may say HELLO under ever new
    /// client ids, and each used to leave its rows for good. A client connected now, or with
    /// sessions waiting for review, is never forgotten. Returns how many were.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn forget_old_clients(&self, keep: u64) -> Result<usize> {
        let known: i64 = self
            .conn()
            .query_row("SELECT count(*) FROM clients", [], |row| row.get(0))
            .ctx("counting the known clients")?;
        if u64::try_from(known).unwrap_or(0) <= keep {
            return Ok(0);
        }
        let pending = crate::SessionStatus::PENDING
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        // Chosen inside the write transaction: a client that connects meanwhile (on another
        // of the daemon's connections) is not forgotten.
        let forgotten = self.without_waiting(|conn| {
            let tx = rusqlite::Transaction::new_unchecked(
                conn,
                rusqlite::TransactionBehavior::Immediate,
            )
            .ctx("forgetting old clients")?;
            let forgotten: Vec<String> = {
                let mut stmt = tx
                    .prepare(&format!(
                        "SELECT client_id FROM clients
                         WHERE connections = 0 AND client_id NOT IN
                             (SELECT client_id FROM upstream_sessions WHERE status IN ({pending}))
                         ORDER BY last_seen_unix DESC, client_id
                         LIMIT -1 OFFSET ?1"
                    ))
                    .ctx("finding the clients to forget")?;
                let rows = stmt
                    .query_map([i64::try_from(keep).unwrap_or(i64::MAX)], |row| row.get(0))
                    .ctx("finding the clients to forget")?;
                rows.collect::<rusqlite::Result<_>>()
                    .ctx("finding the clients to forget")?
            };
            for id in &forgotten {
                tx.execute("DELETE FROM clients WHERE client_id = ?1", [id])
                    .and_then(|_| tx.execute("DELETE FROM acks WHERE client_id = ?1", [id]))
                    .and_then(|_| {
                        tx.execute(
                            "DELETE FROM meta WHERE key = ?1",
                            [format!("{}{id}", crate::barrier::CLIENT_DIRS_PREFIX)],
                        )
                    })
                    .with_ctx(|| format!("forgetting client {id}"))?;
            }
            tx.commit().ctx("forgetting old clients")?;
            Ok(forgotten)
        })?;
        Ok(forgotten.len())
    }

    /// Records that one of `client_id`'s connections ended (never below 0 connections).
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn client_disconnected(&self, client_id: &str) -> Result<()> {
        self.without_waiting(|conn| {
            conn.execute(
                "UPDATE clients SET connections = max(connections - 1, 0), last_seen_unix = ?2
                 WHERE client_id = ?1",
                (client_id, unix_now()),
            )
            .with_ctx(|| format!("recording that {client_id} disconnected"))
        })?;
        Ok(())
    }

    /// Marks every client disconnected: at daemon start no connection is open, whatever a
    /// killed daemon left recorded.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn reset_connections(&self) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE clients SET connections = 0 WHERE connections != 0",
                [],
            )
            .ctx("marking every client disconnected")?;
        Ok(())
    }

    /// Every client that ever said HELLO, by client id.
    ///
    /// # Errors
    ///
    /// An SQLite failure.
    pub fn clients(&self) -> Result<Vec<ClientRecord>> {
        let mut stmt = self
            .conn()
            .prepare_cached(
                "SELECT client_id, connections, first_seen_unix, last_seen_unix, client_version
                 FROM clients ORDER BY client_id",
            )
            .ctx("reading the clients")?;
        let rows = stmt
            .query_map([], |row| {
                Ok(ClientRecord {
                    client_id: row.get(0)?,
                    connections: seq_from_sql(row.get(1)?),
                    first_seen_unix: row.get(2)?,
                    last_seen_unix: row.get(3)?,
                    client_version: row.get(4)?,
                })
            })
            .ctx("reading the clients")?;
        rows.collect::<rusqlite::Result<_>>()
            .ctx("reading the clients")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synchronous(index: &Index) -> i64 {
        index
            .conn()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .expect("pragma")
    }

    /// Clients said HELLO under 20 ids, one after another: beyond the newest 5, those gone
    /// are forgotten with their acks and directories; one connected now and one with a session
    /// waiting for review are kept however old.
    #[test]
    fn clients_beyond_the_newest_are_forgotten_unless_connected_or_waiting() {
        let index = Index::open_in_memory().expect("index");
        for n in 0..20 {
            let id = format!("r-{n:02}");
            index.client_connected(&id, None).expect("connected");
            index.record_ack(&id, "code", 7).expect("ack");
            index
                .set_client_dirs(&id, &["code".to_string()])
                .expect("dirs");
            if n != 1 {
                index.client_disconnected(&id).expect("gone");
            }
            index
                .conn()
                .execute(
                    "UPDATE clients SET last_seen_unix = ?2 WHERE client_id = ?1",
                    (&id, 1_000 + n),
                )
                .expect("seen");
        }
        index.create_session("s-1", "r-02").expect("session");
        assert_eq!(index.forget_old_clients(5).expect("forget"), 13);
        let kept: Vec<String> = index
            .clients()
            .expect("clients")
            .into_iter()
            .map(|c| c.client_id)
            .collect();
        assert_eq!(
            kept,
            ["r-01", "r-02", "r-15", "r-16", "r-17", "r-18", "r-19"]
        );
        let acked: Vec<String> = index
            .acks()
            .expect("acks")
            .into_iter()
            .map(|a| a.client_id)
            .collect();
        assert_eq!(acked, kept);
        assert_eq!(index.client_dirs("r-03").expect("dirs"), None);
        assert!(index.client_dirs("r-19").expect("dirs").is_some());
        assert_eq!(
            index.forget_old_clients(5).expect("again"),
            0,
            "nothing more to forget"
        );
    }

    #[test]
    fn acks_and_presence_leave_the_handle_committing_as_it_did() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = Index::open(&dir.path().join("sync.db")).expect("index");
        index.client_connected("c1", None).expect("hello");
        index.record_ack("c1", "docs", 3).expect("ack");
        index.client_disconnected("c1").expect("bye");
        assert_eq!(synchronous(&index), 2, "FULL again after the status writes");
        index.set_commits_wait(false).expect("normal");
        index.record_ack("c1", "docs", 4).expect("ack");
        assert_eq!(
            synchronous(&index),
            1,
            "an upstream session's NORMAL is kept"
        );
        let acks = index.acks().expect("acks");
        assert_eq!((acks.len(), acks[0].seq), (1, 4));
    }

    #[test]
    fn clients_count_their_connections_and_a_restart_zeroes_them() {
        let index = Index::open_in_memory().expect("index");
        index.client_connected("c1", Some("0.1.0")).expect("hello");
        index
            .client_connected("c1", Some("0.1.0"))
            .expect("second connection");
        index.client_connected("c2", None).expect("hello");
        index.client_disconnected("c1").expect("bye");
        index.client_disconnected("c2").expect("bye");
        index
            .client_disconnected("c2")
            .expect("a second bye stays at 0");
        index
            .client_disconnected("never-seen")
            .expect("unknown is a no-op");
        let got: Vec<(String, u64)> = index
            .clients()
            .expect("clients")
            .into_iter()
            .map(|c| (c.client_id, c.connections))
            .collect();
        assert_eq!(got, vec![("c1".to_owned(), 1), ("c2".to_owned(), 0)]);
        index.reset_connections().expect("reset");
        let clients = index.clients().expect("clients");
        assert!(
            clients.iter().all(|c| c.connections == 0),
            "after a reset: {clients:?}"
        );
        assert_eq!(clients[0].client_version.as_deref(), Some("0.1.0"));
        assert!(clients[0].last_seen_unix >= clients[0].first_seen_unix);
    }

    #[test]
    fn acks_keep_the_highest_seq() {
        let index = Index::open_in_memory().expect("open");
        index.record_ack("client-1", "docs", 10).expect("ack");
        index.record_ack("client-1", "docs", 4).expect("late ack");
        index.record_ack("client-1", "pics", 3).expect("ack");
        index.record_ack("client-0", "docs", 12).expect("ack");
        let acks = index.acks().expect("acks");
        let got: Vec<(&str, &str, u64)> = acks
            .iter()
            .map(|a| (a.client_id.as_str(), a.dir.as_str(), a.seq))
            .collect();
        assert_eq!(
            got,
            [
                ("client-0", "docs", 12),
                ("client-1", "docs", 10),
                ("client-1", "pics", 3)
            ]
        );
        assert!(
            acks.iter().all(|a| a.at_unix > 1_600_000_000),
            "at is now: {acks:?}"
        );
        index.record_ack("client-1", "docs", 11).expect("ack");
        assert_eq!(index.acks().expect("acks")[1].seq, 11);
    }
}
