//! Opening the daemon's database, finding a session by id or unique prefix, and describing a
//! session in one line (text) or one object (JSON).

use std::path::Path;

use anyhow::{bail, Context};
use chrono::TimeZone;
use serde::Serialize;
use zync_cli::visible;
use zync_db::{Index, Session, StagedFile};

/// Opens the daemon's index, refusing to create a new database where none is.
///
/// # Errors
///
/// No file at `db`, or it is not a zync index.
pub fn open_index(db: &Path) -> anyhow::Result<Index> {
    if !db.exists() {
        bail!(
            "no database at {}; pass --db with the path given to zync-daemon --db (or set `db` in its config file)",
            db.display()
        );
    }
    Index::open(db).with_context(|| format!("cannot open the daemon database {}", db.display()))
}

/// The session whose id is `id` or starts with it.
///
/// # Errors
///
/// No session matches (the message suggests `zync-apply list --all` and says that the oldest
/// ended sessions are forgotten), or several do (the message lists them).
pub fn find(index: &Index, id: &str) -> anyhow::Result<Session> {
    if id.is_empty() {
        bail!("the session id is empty; see `zync-apply list --all`");
    }
    let mut found = index
        .find_sessions(id)
        .with_context(|| format!("cannot look up session {id:?}"))?;
    if let Some(exact) = found.iter().position(|s| s.id == id) {
        return Ok(found.swap_remove(exact));
    }
    match found.len() {
        0 => bail!(
            "no session matches {id:?}; see `zync-apply list --all`: of the sessions that \
             ended, the database keeps the newest {} expired, dropped and settled ones each, \
             with their files, and the newest {} aborted ones; older ones are forgotten",
            zync_db::ENDED_KEPT,
            zync_db::ABORTED_KEPT
        ),
        1 => Ok(found.swap_remove(0)),
        _ => {
            let list: Vec<String> = found
                .iter()
                .map(|s| format!("  {}  {}", s.id, s.status.as_str()))
                .collect();
            bail!(
                "session prefix {id:?} is ambiguous; it matches:\n{}\ngive more of the id",
                list.join("\n")
            )
        }
    }
}

/// `created_unix` in local time, `YYYY-MM-DD HH:MM:SS`.
pub fn local_time(unix: i64) -> String {
    match chrono::Local.timestamp_opt(unix, 0).single() {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
        None => format!("@{unix}"),
    }
}

/// `n` followed by `word`, pluralised with an `s` unless `n` is 1.
pub fn count(n: u64, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// One line describing a session; it begins with the full id. The client id came from R and
/// is shown with its hidden characters made visible.
pub fn line(s: &Session) -> String {
    format!(
        "{}  {}  {}  {}  {}  from {}",
        s.id,
        s.status.as_str(),
        count(s.files, "file"),
        count(s.conflicts, "conflict"),
        local_time(s.created_unix),
        visible::line(&s.client_id)
    )
}

/// How many of `files` are control files (see [`zync_fs::control_reason`]).
pub fn control_files(files: &[StagedFile]) -> u64 {
    files
        .iter()
        .filter(|f| {
            zync_fs::RelPath::parse(&f.path)
                .ok()
                .and_then(|rel| zync_fs::control_reason(&rel))
                .is_some()
        })
        .count() as u64
}

/// `dir/path` of a staged file as shown to a person: R chose the path, so a carriage return
/// or an escape sequence in it is made visible rather than printed.
pub fn file_name(f: &StagedFile) -> String {
    visible::line(&format!("{}/{}", f.dir, f.path)).into_owned()
}

/// A session as JSON.
#[derive(Debug, Serialize)]
pub struct SessionJson {
    /// The full id.
    pub id: String,
    /// The client that pushed it.
    pub client_id: String,
    /// Seconds since the Unix epoch.
    pub created_unix: i64,
    /// `created_unix` in local time.
    pub created: String,
    /// Status, as stored (`staged`, `partial`, ...).
    pub status: String,
    /// Number of files.
    pub files: u64,
    /// Number of files flagged as conflicts when staged.
    pub conflicts: u64,
    /// Bytes of content.
    pub bytes: u64,
    /// When an apply run last ended on it (it became `partial` or `applied`), seconds since
    /// the Unix epoch; null if none did. An `applied` session's backups are removed (it is
    /// `settled`) once this is older than the daemon's `--staging-max-age`.
    pub applied_unix: Option<i64>,
    /// Files that change what E serves or runs (`.zyncignore`, anything in `.git`); each is
    /// applied only with an explicit yes. Given by `list` and `show`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_files: Option<u64>,
}

impl From<&Session> for SessionJson {
    fn from(s: &Session) -> Self {
        SessionJson {
            id: s.id.clone(),
            client_id: s.client_id.clone(),
            created_unix: s.created_unix,
            created: local_time(s.created_unix),
            status: s.status.as_str().to_string(),
            files: s.files,
            conflicts: s.conflicts,
            bytes: s.bytes,
            applied_unix: s.applied_unix,
            control_files: None,
        }
    }
}
