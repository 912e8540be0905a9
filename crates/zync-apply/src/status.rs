//! `zync-apply status`: the daemon's side of the sync, read from its database without
//! a network call and without writing: the directories it serves with their index size and
//! sequence, what each ignores (counted by rule; `--ignored` lists the paths: what is ignored
//! is never a secret), the clients (connected now or not, and how far each acknowledged), and
//! the upstream sessions waiting to be applied. Reads beside a running daemon (WAL,
//! read-only).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use serde::Serialize;
use zync_db::Index;
use zync_proto::IgnoredReport;

use crate::session::{self, local_time, SessionJson};

/// The whole report; `--json` prints it as is (README, "zync-apply status").
#[derive(Debug, Serialize)]
pub struct Report {
    /// The daemon database's path.
    pub db: String,
    /// Its index id (clients store it beside their sequences).
    pub index_id: String,
    /// The highest sequence number of any change.
    pub last_sequence: u64,
    /// The directories the daemon last served, by name.
    pub dirs: Vec<DirReport>,
    /// Every client that ever connected or acknowledged, by id.
    pub clients: Vec<ClientReport>,
    /// Sessions staged (or partly applied) and waiting for `zync-apply apply`.
    pub pending_sessions: Vec<SessionJson>,
}

/// One served directory.
#[derive(Debug, Serialize)]
pub struct DirReport {
    /// The dir name.
    pub name: String,
    /// Its path on E.
    pub path: String,
    /// Live (not deleted) entries in the index.
    pub entries: u64,
    /// The dir's last sequence number.
    pub sequence: u64,
    /// `available`, or `unavailable` when the daemon found the directory gone, emptied at
    /// once or unmounted and records nothing for it until it is back.
    pub state: &'static str,
    /// Why it is unavailable, and what to do; null when available.
    pub unavailable: Option<String>,
    /// What the daemon ignores in it (never indexed, never sent), counted by rule; `paths`
    /// lists them all under `--ignored`.
    pub ignored: IgnoredReport,
}

/// One client, as the daemon recorded it.
#[derive(Debug, Serialize)]
pub struct ClientReport {
    /// The client id (a UUID made with the client's database).
    pub client_id: String,
    /// Whether it has a connection open now.
    pub connected: bool,
    /// How many connections it has open.
    pub connections: u64,
    /// Its last HELLO or disconnect (seconds since the Unix epoch); null for a client only
    /// known by its acks (recorded by a daemon older than this one).
    pub last_seen_unix: Option<i64>,
    /// The version it announced.
    pub version: Option<String>,
    /// How far it acknowledged, per dir.
    pub acks: Vec<AckReport>,
}

/// One client's acknowledgement in one dir.
#[derive(Debug, Serialize)]
pub struct AckReport {
    /// The dir name.
    pub dir: String,
    /// The highest sequence it acknowledged.
    pub sequence: u64,
    /// When, seconds since the Unix epoch.
    pub at_unix: i64,
    /// How many sequence numbers the dir is ahead of it (0: caught up).
    pub behind: u64,
}

/// Opens the daemon's database read-only and gathers the report; `list_ignored` lists every
/// ignored path, not only the counts.
///
/// # Errors
///
/// No database at `db`, or it cannot be read.
pub fn gather(db: &Path, list_ignored: bool) -> anyhow::Result<Report> {
    if !db.exists() {
        bail!(
            "no database at {}; pass --db with the path given to zync-daemon --db (or set `db` in its config file)",
            db.display()
        );
    }
    let index = Index::open_read_only(db)
        .with_context(|| format!("cannot read the daemon database {}", db.display()))?;
    let read = || format!("cannot read the daemon database {}", db.display());
    let mut dirs = Vec::new();
    let mut sequences = BTreeMap::new();
    for zync_db::StoredRoot {
        dir: name, path, ..
    } in index.roots().with_context(read)?
    {
        let sequence = index.dir_last_seq(&name).with_context(read)?;
        sequences.insert(name.clone(), sequence);
        let unavailable = index.unavailable(&name).with_context(read)?;
        let ignored = ignored(&index, &name, list_ignored).with_context(read)?;
        dirs.push(DirReport {
            entries: index.live_count(&name).with_context(read)?,
            sequence,
            state: if unavailable.is_some() {
                "unavailable"
            } else {
                "available"
            },
            unavailable,
            ignored,
            name,
            path,
        });
    }
    let mut clients: BTreeMap<String, ClientReport> = BTreeMap::new();
    for c in index.clients().with_context(read)? {
        clients.insert(
            c.client_id.clone(),
            ClientReport {
                client_id: c.client_id,
                connected: c.connections > 0,
                connections: c.connections,
                last_seen_unix: Some(c.last_seen_unix),
                version: c.client_version,
                acks: Vec::new(),
            },
        );
    }
    for ack in index.acks().with_context(read)? {
        let dir_seq = sequences.get(&ack.dir).copied().unwrap_or(0);
        let client = clients
            .entry(ack.client_id.clone())
            .or_insert_with(|| ClientReport {
                client_id: ack.client_id.clone(),
                connected: false,
                connections: 0,
                last_seen_unix: None,
                version: None,
                acks: Vec::new(),
            });
        client.acks.push(AckReport {
            behind: dir_seq.saturating_sub(ack.seq),
            dir: ack.dir,
            sequence: ack.seq,
            at_unix: ack.at_unix,
        });
    }
    let pending_sessions = index
        .sessions(false)
        .context("cannot list the staged sessions")?
        .iter()
        .map(SessionJson::from)
        .collect();
    Ok(Report {
        db: db.display().to_string(),
        index_id: index.index_id().to_owned(),
        last_sequence: index.last_seq().with_context(read)?,
        dirs,
        clients: clients.into_values().collect(),
        pending_sessions,
    })
}

/// What the daemon recorded that `dir` ignores: counts by rule, and every path when `list`.
fn ignored(index: &Index, dir: &str, list: bool) -> zync_db::Result<IgnoredReport> {
    let mut report = IgnoredReport::from_counts(index.ignored_counts(dir)?);
    if list {
        report.paths = Some(index.ignored_paths(dir, usize::MAX)?);
    }
    Ok(report)
}

/// `zync-apply status [--json] [--ignored]`.
///
/// # Errors
///
/// The database cannot be read, or `out` fails.
pub fn status(
    db: &Path,
    json: bool,
    list_ignored: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let report = gather(db, list_ignored)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        render(&report, out)?;
    }
    Ok(())
}

/// The human-readable report.
///
/// # Errors
///
/// Writing to `out` failed.
pub fn render(r: &Report, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "index    {}  (id {}, last sequence {})",
        r.db, r.index_id, r.last_sequence
    )?;
    writeln!(out)?;
    table(
        out,
        &["DIR", "STATE", "ENTRIES", "SEQ", "PATH"],
        r.dirs
            .iter()
            .map(|d| {
                vec![
                    d.name.clone(),
                    d.state.to_owned(),
                    d.entries.to_string(),
                    d.sequence.to_string(),
                    d.path.clone(),
                ]
            })
            .collect(),
    )?;
    for d in &r.dirs {
        if let Some(why) = &d.unavailable {
            writeln!(out, "  {}", zync_cli::visible::line(why))?;
        }
    }
    if !r.dirs.is_empty() {
        writeln!(out)?;
        writeln!(out, "ignored (never indexed, never sent to R):")?;
    }
    for d in &r.dirs {
        // Paths and rule sources are names from E's disk: shown as they are.
        let summary = d.ignored.summary();
        writeln!(out, "  {}: {}", d.name, zync_cli::visible::line(&summary))?;
        for p in d.ignored.paths.iter().flatten() {
            writeln!(out, "      {}", zync_cli::visible::line(&p.line()))?;
        }
    }
    writeln!(out)?;
    if r.clients.is_empty() {
        writeln!(out, "no client has connected yet")?;
    } else {
        table(
            out,
            &["CLIENT", "CONNECTED", "LAST SEEN", "ACKED"],
            r.clients
                .iter()
                .map(|c| {
                    let connected = match c.connections {
                        0 => "no".to_owned(),
                        1 => "yes".to_owned(),
                        n => format!("yes ({n})"),
                    };
                    let acks: Vec<String> = c
                        .acks
                        .iter()
                        .map(|a| match a.behind {
                            0 => format!("{} {}", a.dir, a.sequence),
                            n => format!("{} {} ({n} behind)", a.dir, a.sequence),
                        })
                        .collect();
                    vec![
                        zync_cli::visible::line(&c.client_id).into_owned(),
                        connected,
                        c.last_seen_unix.map_or("-".into(), local_time),
                        if acks.is_empty() {
                            "-".into()
                        } else {
                            acks.join(", ")
                        },
                    ]
                })
                .collect(),
        )?;
    }
    writeln!(out)?;
    if r.pending_sessions.is_empty() {
        writeln!(out, "no pending upstream sessions")?;
    } else {
        writeln!(
            out,
            "pending upstream sessions (review with `zync-apply show ID`, apply with `zync-apply apply ID`):"
        )?;
        for s in &r.pending_sessions {
            writeln!(
                out,
                "  {}  {}  {}  {}  {}  from {}",
                s.id,
                s.status,
                session::count(s.files, "file"),
                session::count(s.conflicts, "conflict"),
                s.created,
                zync_cli::visible::line(&s.client_id)
            )?;
        }
    }
    Ok(())
}

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table(out: &mut dyn Write, header: &[&str], rows: Vec<Vec<String>>) -> std::io::Result<()> {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::prompt::ScriptedPrompter;
    use crate::testkit::{write, Fixture};

    #[test]
    fn status_reports_dirs_clients_and_pending_sessions_without_writing() {
        let fx = Fixture::new();
        let mut p = ScriptedPrompter::new([]);
        let a = "aaaa1111-2222-4333-8444-555566667777";
        fx.stage(a, &[write("x.txt", b"x", None)]);
        let before = std::fs::read(&fx.db).expect("read db");

        let (r, out) = fx.run(&["status"], &mut p);
        r.expect("status");
        assert!(out.contains("DIR"), "{out}");
        assert!(
            out.contains(&format!("  {a}  staged  1 file  0 conflicts")),
            "{out}"
        );
        assert!(out.contains("no client has connected yet"), "{out}");

        let (r, out) = fx.run(&["status", "--json"], &mut p);
        r.expect("status --json");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["pending_sessions"][0]["id"], a, "{v}");
        assert!(v["dirs"].as_array().is_some_and(|d| !d.is_empty()), "{v}");
        assert!(v["clients"].as_array().is_some(), "{v}");
        assert_eq!(
            std::fs::read(&fx.db).expect("read db"),
            before,
            "status wrote to the database"
        );
    }

    #[test]
    fn status_counts_what_each_dir_ignores_by_rule_and_lists_it_on_request() {
        let fx = Fixture::new();
        let mut p = ScriptedPrompter::new([]);
        let ig = |path: &str, is_dir, pattern: &str, source: &str| zync_proto::IgnoredPath {
            path: path.into(),
            is_dir,
            pattern: pattern.into(),
            source: source.into(),
        };
        let mut index = fx.index();
        let mut w = index.writer().expect("writer");
        w.replace_ignored(
            "docs",
            None,
            &[
                ig("build", true, "build/", "built-in"),
                ig("proj/a.pyc", false, "*.pyc", "proj/.zyncignore"),
                ig("proj/b\u{7}.pyc", false, "*.pyc", "proj/.zyncignore"),
            ],
        )
        .expect("record");
        w.commit().expect("commit");
        drop(index);

        let (r, out) = fx.run(&["status"], &mut p);
        r.expect("status");
        assert!(
            out.contains(
                "  docs: 3 paths (rule `*.pyc` from proj/.zyncignore: 2, rule `build/`: 1)"
            ),
            "{out}"
        );
        assert!(
            !out.contains("proj/a.pyc"),
            "listed without --ignored: {out}"
        );

        let (r, out) = fx.run(&["status", "--ignored"], &mut p);
        r.expect("status --ignored");
        for line in [
            "      build/  (rule `build/`)",
            "      proj/a.pyc  (rule `*.pyc` from proj/.zyncignore)",
            "      proj/b^G.pyc  (rule `*.pyc` from proj/.zyncignore)",
        ] {
            assert!(out.contains(line), "{line:?} missing in:\n{out}");
        }
        assert!(
            !out.contains('\u{7}'),
            "a control character reached the terminal"
        );

        let (r, out) = fx.run(&["status", "--json"], &mut p);
        r.expect("status --json");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let ignored = &v["dirs"][0]["ignored"];
        assert_eq!(ignored["total"], 3, "{v}");
        assert_eq!(ignored["rules"][0]["pattern"], "*.pyc", "{v}");
        assert_eq!(ignored["rules"][0]["source"], "proj/.zyncignore", "{v}");
        assert_eq!(ignored["rules"][0]["count"], 2, "{v}");
        assert!(ignored.get("paths").is_none(), "{v}");
        let (r, out) = fx.run(&["status", "--json", "--ignored"], &mut p);
        r.expect("status --json --ignored");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        assert_eq!(v["dirs"][0]["ignored"]["paths"][0]["path"], "build", "{v}");
        assert_eq!(v["dirs"][0]["ignored"]["paths"][0]["is_dir"], true, "{v}");
    }

    #[test]
    fn a_missing_database_is_an_error_that_says_what_to_pass() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("nope.db");
        let mut out = Vec::new();
        let err = super::status(&db, false, false, &mut out).expect_err("no database");
        assert!(format!("{err:#}").contains("--db"), "{err:#}");
        assert!(!db.exists(), "status created {}", db.display());
    }
}
