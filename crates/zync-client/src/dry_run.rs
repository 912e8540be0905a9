//! `--dry-run`: what `--once` or `--update-upstream` would do, listed and not done, as
//! `rsync -n` lists. `--once --dry-run` connects, authenticates, reads E's change pages and
//! takes every change through the same `look` and `plan` as a real sync, then tells the plan
//! (`download::preview`) instead of carrying it out; `--update-upstream --dry-run` collects
//! R's changes as a real push does and lists them without opening a session on E.
//!
//! Nothing is written on R: the client database is read without a trace
//! (`ClientState::open_untouched`; a missing one counts as empty and is not created), no
//! writer lock is taken (a dry run reads, so it runs beside a loop client), no temp file is
//! made or removed, no mapped directory created, and no ACK_CHANGES, GET_FILE or
//! PREPARE_UPSTREAM is sent.

use std::collections::HashSet;
use std::io::Write;

use anyhow::Context;
use serde::Serialize;
use zync_db::ClientState;
use zync_proto::{Change, GetChanges, Op, Reply, UpstreamAction};

use crate::cli::Config;
use crate::connection::Connection;
use crate::download::look::{self, Known, Look};
use crate::download::plan::{self, Removal, Step};
use crate::download::preview::{self, Action, Totals};
use crate::error::{exit, ClientError};
use crate::mapping::Mapping;
use crate::upstream::Outgoing;

/// The client id a dry run says hello with when R has no database yet (a dry run never
/// makes one, so it has no id of its own to give).
pub const DRY_RUN_CLIENT_ID: &str = zync_proto::DRY_RUN_ID;

/// R's state as a dry run reads it, and the id to say hello with.
fn open(config: &Config) -> anyhow::Result<(ClientState, String)> {
    if !config.db.exists() {
        // Nothing synced yet: an empty state, in memory, and no file made.
        return Ok((
            ClientState::open_in_memory()?,
            DRY_RUN_CLIENT_ID.to_string(),
        ));
    }
    let state = ClientState::open_untouched(&config.db)
        .with_context(|| format!("cannot read the client database {}", config.db.display()))?;
    let id = state.client_id().to_owned();
    Ok((state, id))
}

/// `--once --dry-run`: lists what a sync would do and returns the exit code the real run
/// would end with, as far as planning tells (`Totals::exit_code`).
///
/// # Errors
/// As `--once`: an unreachable daemon, a refused token, a directory the daemon does not
/// serve, an unreadable client database; and a failed write to stdout.
pub async fn once(config: &Config, json: bool) -> anyhow::Result<u8> {
    let (state, client_id) = open(config)?;
    let mut conn = crate::connect(config, &client_id).await?;
    crate::wait_for_scan(&mut conn).await?;
    let mut listing = Listing::new(std::io::stdout(), json);
    for mapping in &config.mappings {
        preview_dir(&mut conn, &state, mapping, &mut listing).await?;
    }
    conn.close().await;
    let totals = listing.finish()?;
    Ok(totals.exit_code())
}

/// Plans every change E has for `mapping` beyond R's stored sequence, page by page, and
/// lists what each would do.
async fn preview_dir(
    conn: &mut Connection,
    state: &ClientState,
    mapping: &Mapping,
    listing: &mut Listing<impl Write>,
) -> anyhow::Result<()> {
    let name = mapping.name.as_str();
    // From where a real sync would start (`sync::sync_dir`).
    let mut since = match state.dir_state(name)? {
        Some(s) if s.index_id == conn.hello.index_id => s.last_seq,
        _ => 0,
    };
    let look = Look {
        root: &mapping.root,
        dir: name,
        state,
        umask: zync_fs::umask(),
    };
    let mut imagined = Imagined::default();
    let mut resynced = false;
    loop {
        let get = Op::GetChanges(GetChanges {
            dir: name.to_string(),
            since,
            limit: Some(zync_proto::MAX_CHANGES_LIMIT),
        });
        let page = match conn.call(get).await? {
            Reply::GetChanges(page) => page,
            other => {
                return Err(
                    ClientError::Protocol(format!("expected GET_CHANGES, got {other:?}")).into(),
                )
            }
        };
        let Some(last) = page.changes.last().map(|c| c.seq) else {
            // A daemon index restored from a backup: the real sync compares everything again.
            if page.last_sequence < since && !resynced {
                since = 0;
                resynced = true;
                continue;
            }
            return Ok(());
        };
        let wanted: HashSet<String> = page
            .changes
            .iter()
            .filter(|c| !c.deleted && c.kind == zync_proto::Kind::File)
            .filter_map(|c| c.sha256.clone())
            .collect();
        let snapshot = state.read_snapshot()?;
        for change in &page.changes {
            for action in preview(&look, &mut imagined, mapping, change, &wanted) {
                listing.add(name, action)?;
            }
        }
        drop(snapshot);
        // A real sync removes the page's set-aside files once the page is planned.
        imagined.known.stash.clear();
        if !page.more {
            return Ok(());
        }
        since = last;
    }
}

/// What a dry run pretends it did, so that the later changes of the run are planned as the
/// real sync would plan them.
#[derive(Default)]
struct Imagined {
    /// As a real sync's: directories made count as seen, files set aside as sources.
    known: Known,
    /// Directories the run would have made: a later change naming one makes it no more.
    made: HashSet<String>,
}

/// One change through `look` and `plan`, told; `imagined` learns what the real sync would
/// have left behind.
fn preview(
    look: &Look<'_>,
    imagined: &mut Imagined,
    mapping: &Mapping,
    change: &Change,
    wanted: &HashSet<String>,
) -> Vec<Action> {
    let Some(rel) = look::parse(change, &mapping.root, look.dir, &mapping.own) else {
        return Vec::new();
    };
    let Imagined { known, made } = imagined;
    let here = match look.here(known, change, rel.clone()) {
        Ok(here) => here,
        Err(e) => {
            return vec![Action::Blocked {
                path: rel.to_string(),
                reason: e.to_string(),
            }]
        }
    };
    let plan = plan::plan(change, &here, wanted);
    let mut actions = preview::describe(change, &here, &plan, &mapping.root);
    actions.retain(|a| !matches!(a, Action::MakeDir { path } if made.contains(path)));
    for parent in &plan.parents {
        known.insert_dir(parent.rel.to_string());
        made.insert(parent.rel.to_string());
    }
    match &plan.step {
        Step::Dir { create: true, .. } => {
            known.insert_dir(here.rel.to_string());
            made.insert(here.rel.to_string());
        }
        Step::Delete {
            removal: Removal::SetAside(sha),
            ..
        } => {
            // Left where it is: a later copy names the file it would come from.
            known
                .stash
                .entry(sha.clone())
                .or_insert_with(|| here.rel.to_path(&mapping.root));
        }
        _ => {}
    }
    actions
}

/// Where a dry run's actions go: a line each on the way (text), or one JSON document at the
/// end (`--json`); with the totals.
struct Listing<W: Write> {
    out: std::io::BufWriter<W>,
    json: bool,
    entries: Vec<Entry>,
    totals: Totals,
}

/// One action of the JSON listing, with the directory it is in.
#[derive(Serialize)]
struct Entry {
    dir: String,
    #[serde(flatten)]
    action: Action,
}

/// `--once --dry-run --json`.
#[derive(Serialize)]
struct OnceJson<'a> {
    dry_run: bool,
    #[serde(flatten)]
    totals: &'a Totals,
    actions: &'a [Entry],
}

impl<W: Write> Listing<W> {
    fn new(out: W, json: bool) -> Self {
        Listing {
            out: std::io::BufWriter::new(out),
            json,
            entries: Vec::new(),
            totals: Totals::default(),
        }
    }

    fn add(&mut self, dir: &str, action: Action) -> std::io::Result<()> {
        self.totals.add(&action);
        if self.json {
            self.entries.push(Entry {
                dir: dir.to_string(),
                action,
            });
            Ok(())
        } else {
            writeln!(self.out, "{}", action.line(dir))
        }
    }

    fn finish(mut self) -> std::io::Result<Totals> {
        if self.json {
            let doc = OnceJson {
                dry_run: true,
                totals: &self.totals,
                actions: &self.entries,
            };
            serde_json::to_writer_pretty(&mut self.out, &doc)?;
            writeln!(self.out)?;
        } else {
            writeln!(self.out, "{}", self.totals.summary())?;
        }
        self.out.flush()?;
        Ok(self.totals)
    }
}

/// `--update-upstream --dry-run`: lists what a push would send. Like the real push it
/// connects and authenticates when there is something to send (so an unreachable daemon or a
/// wrong token fails the same way), but it opens no session: E stages nothing.
///
/// # Errors
/// As `--update-upstream`, before anything is sent.
pub async fn upstream(config: &Config, json: bool) -> anyhow::Result<u8> {
    let (state, client_id) = open(config)?;
    let mut changes = Vec::new();
    for mapping in &config.mappings {
        changes.extend(crate::upstream::collect(&state, mapping)?);
    }
    if !changes.is_empty() {
        let conn = crate::connect(config, &client_id).await?;
        conn.close().await;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout());
    write_sends(&mut out, &changes, json)?;
    out.flush()?;
    Ok(exit::OK)
}

/// One change a push would send.
#[derive(Debug, Serialize)]
struct Send<'a> {
    dir: &'a str,
    path: String,
    action: UpstreamAction,
    /// Bytes (0 for a delete).
    size: u64,
    /// R's permission bits, in octal (writes).
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
    /// New on R: E never had it as R last synced.
    new: bool,
}

/// `--update-upstream --dry-run --json`: the fields of the push summary a dry run knows.
#[derive(Debug, Serialize)]
struct PushPreview<'a> {
    dry_run: bool,
    session_id: Option<String>,
    files: u64,
    bytes: u64,
    sends: Vec<Send<'a>>,
}

fn write_sends(out: &mut impl Write, changes: &[Outgoing], json: bool) -> std::io::Result<()> {
    let sends: Vec<Send<'_>> = changes
        .iter()
        .map(|c| Send {
            dir: &c.dir,
            path: c.path.to_string(),
            action: c.action,
            size: c.size,
            mode: (c.action == UpstreamAction::Write).then(|| format!("{:04o}", c.mode)),
            new: c.base_sha256.is_none(),
        })
        .collect();
    let bytes: u64 = sends.iter().map(|s| s.size).sum();
    if json {
        let doc = PushPreview {
            dry_run: true,
            session_id: None,
            files: sends.len() as u64,
            bytes,
            sends,
        };
        serde_json::to_writer_pretty(&mut *out, &doc)?;
        return writeln!(out);
    }
    if changes.is_empty() {
        return writeln!(
            out,
            "dry run: nothing to send: R has no changes against what it last synced"
        );
    }
    for (send, change) in sends.iter().zip(changes) {
        let at = zync_cli::visible::line(&format!("{}/{}", send.dir, send.path)).into_owned();
        let size = zync_cli::units::format_bytes(send.size);
        match send.action {
            UpstreamAction::Delete => writeln!(out, "would send the deletion of {at}")?,
            UpstreamAction::Write if send.new => {
                writeln!(out, "would send {at} ({size}, new on R)")?
            }
            UpstreamAction::Write if change.base_sha256 == change.sha256 => writeln!(
                out,
                "would send {at} ({size}, mode changed to {})",
                send.mode.as_deref().unwrap_or("?")
            )?,
            UpstreamAction::Write => writeln!(out, "would send {at} ({size}, changed on R)")?,
        }
    }
    let deletes = sends
        .iter()
        .filter(|s| s.action == UpstreamAction::Delete)
        .count();
    writeln!(
        out,
        "dry run: would send {} file(s) ({}) and {deletes} deletion(s) to E as one session for review; nothing was sent or staged (E flags conflicts, and refuses paths it ignores, only when the push is real)",
        sends.len() - deletes,
        zync_cli::units::format_bytes(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use zync_fs::RelPath;

    fn outgoing(path: &str, action: UpstreamAction, base: Option<&str>, sha: &str) -> Outgoing {
        Outgoing {
            dir: "code".into(),
            path: RelPath::parse(path).expect("path"),
            action,
            mode: 0o644,
            size: if action == UpstreamAction::Write {
                5
            } else {
                0
            },
            mtime_ns: 1,
            sha256: (action == UpstreamAction::Write).then(|| sha.to_string()),
            base_sha256: base.map(str::to_string),
            base_mode: base.map(|_| 0o644),
        }
    }

    fn text(changes: &[Outgoing], json: bool) -> String {
        let mut out = Vec::new();
        write_sends(&mut out, changes, json).expect("write");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn a_push_preview_lists_each_send_visibly_and_as_json() {
        let changes = vec![
            outgoing("new\x1b[2K.txt", UpstreamAction::Write, None, "aa"),
            outgoing("edited.txt", UpstreamAction::Write, Some("bb"), "aa"),
            outgoing("chmod.sh", UpstreamAction::Write, Some("aa"), "aa"),
            outgoing("gone.txt", UpstreamAction::Delete, Some("cc"), ""),
        ];
        let listed = text(&changes, false);
        let lines: Vec<&str> = listed.lines().collect();
        assert_eq!(
            lines[..4],
            [
                "would send code/new^[[2K.txt (5 bytes, new on R)",
                "would send code/edited.txt (5 bytes, changed on R)",
                "would send code/chmod.sh (5 bytes, mode changed to 0644)",
                "would send the deletion of code/gone.txt",
            ],
            "{listed}"
        );
        assert!(
            lines[4].starts_with("dry run: would send 3 file(s) (15 bytes) and 1 deletion(s)"),
            "{listed}"
        );

        let doc: serde_json::Value = serde_json::from_str(&text(&changes, true)).expect("JSON");
        assert_eq!(doc["dry_run"], true);
        assert_eq!(doc["session_id"], serde_json::Value::Null);
        assert_eq!(doc["files"], 4);
        assert_eq!(doc["bytes"], 15);
        assert_eq!(doc["sends"][3]["action"], "delete", "{doc}");
        assert_eq!(doc["sends"][0]["new"], true);

        assert!(text(&[], false).contains("nothing to send"));
    }

    #[test]
    fn a_sync_listing_streams_lines_or_prints_one_json_document() {
        let download = || Action::Download {
            path: "a\r.txt".into(),
            size: 3,
            new: true,
            delta: false,
        };
        let mut out = Vec::new();
        let mut listing = Listing::new(&mut out, false);
        listing.add("code", download()).expect("add");
        let totals = listing.finish().expect("finish");
        assert_eq!(totals.downloads, 1);
        let listed = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            listed.lines().next(),
            Some("would download code/a^M.txt (3 bytes, new)"),
            "{listed}"
        );

        let mut out = Vec::new();
        let mut listing = Listing::new(&mut out, true);
        listing.add("code", download()).expect("add");
        listing.finish().expect("finish");
        let doc: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(doc["dry_run"], true);
        assert_eq!(doc["downloads"], 1);
        assert_eq!(doc["actions"][0]["action"], "download");
        assert_eq!(doc["actions"][0]["dir"], "code");
        assert_eq!(
            doc["actions"][0]["path"], "a\r.txt",
            "JSON keeps the name as it is"
        );
    }
}
