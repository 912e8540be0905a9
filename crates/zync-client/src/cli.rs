//! The client's command line (compatible with the original tool's flags) and its validation.
//! Settings may also come from a config file (`file.rs`).

mod file;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueHint};
use zync_fs::DirName;

use crate::connection::Credentials;
use crate::error::ClientError;
use crate::mapping::Mapping;

/// Exit codes, as documented in `--help` (`crate::error::exit`).
const AFTER_HELP: &str = "\
Exit codes of --once and --update-upstream (loop mode exits only on 2, 6 or 1):
  0  done: R holds what E had (--once), or the push was staged (--update-upstream)
  1  another error: R's database, a local file operation
  2  bad command line or config file
  3  --once: in sync, but edits made on R were kept as conflict copies (listed on stderr)
     (--dry-run: 3 and 4 say what the real run would end with; 0 otherwise)
  4  some paths could not be synced or sent; the others were
  5  the daemon could not be reached, or the connection was lost or stalled: try again
  6  refused: wrong token, a server that is not the daemon, an unsafe socket, or an
     incompatible version
--wait: 0 in sync, 7 timed out (what is outstanding is on stderr), else as --once
--status: 0 in sync, 1 not in sync (or the daemon unreachable), 2 bad command line";

/// Command line of `zync-client`.
#[derive(Debug, Parser)]
#[command(
    name = "zync-client",
    version,
    about = "Keep local directories in step with a zync daemon (runs on machine R)",
    after_help = AFTER_HELP,
    group(clap::ArgGroup::new("json_mode").args(["status", "update_upstream", "wait", "dry_run"]).multiple(true)),
    group(clap::ArgGroup::new("run_once").args(["once", "update_upstream"]))
)]
pub struct Args {
    /// Config file holding any of the settings below (keys are their long flags without `--`;
    /// see docs/client.example.toml). Flags given here win over it. Default: ~/.config/zync/client.toml ($XDG_CONFIG_HOME/zync/...), read if
    /// it exists.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Hidden: shell completions and man pages.
    #[command(flatten)]
    pub generate: zync_cli::Generate,
    /// Where the daemon is: `unix:PATH`, the Unix socket `zync-daemon --tunnel` opens on R
    /// (by default unix:~/.zync/zync.sock; only you can use it), or a WebSocket URL
    /// `ws://HOST:PORT` (a TCP port, open to every local user).
    #[arg(
        long,
        default_value = "ws://localhost:8000",
        value_name = "unix:PATH|ws://HOST:PORT",
        help_heading = zync_cli::SETTINGS
    )]
    pub server: String,
    /// SQLite database holding what this client has synced.
    #[arg(long, default_value = "sync_client.db", value_hint = ValueHint::FilePath, help_heading = zync_cli::SETTINGS)]
    pub db: PathBuf,
    /// Safety-net poll interval in seconds; changes normally arrive at once by notification.
    #[arg(long, default_value_t = 60, help_heading = zync_cli::SETTINGS)]
    pub interval: u64,
    /// Directory mappings, as REMOTE_NAME:LOCAL_PATH (one or more). Required, here or as
    /// `dirs` in the config file.
    #[arg(long, num_args = 1.., value_name = "NAME:LOCAL_PATH", value_parser = zync_cli::dir_spec, help_heading = zync_cli::SETTINGS)]
    pub dirs: Vec<String>,
    /// Sync once and exit: 0 when in sync, non-zero with the reason otherwise.
    #[arg(long)]
    pub once: bool,
    /// Send R's local changes (new, modified and deleted files) to E as one staged session,
    /// to be reviewed and applied there with zync-apply; then exit.
    #[arg(long, conflicts_with = "once")]
    pub update_upstream: bool,
    /// With --once or --update-upstream: list what the run would download, delete, keep as a
    /// conflict copy or send, and change nothing (no file, no database, no lock, nothing
    /// staged on E). Exit codes as the real run's where planning can tell (3: conflict copies
    /// would be kept; 4: paths could not be synced).
    #[arg(long, short = 'n', requires = "run_once")]
    pub dry_run: bool,
    /// Show the state of the sync and exit, changing nothing: whether the daemon answers,
    /// per directory R's sequence against E's, pending changes, failing paths and conflict
    /// copies. Exit code 0 when in sync, 1 when not (behind, failing, never synced, daemon
    /// unreachable).
    #[arg(long, conflicts_with_all = ["once", "update_upstream"])]
    pub status: bool,
    /// Wait until R holds every change E's index held when this command started (changes
    /// saved on E before it included), then exit 0: a barrier for scripts, `zync-client
    /// --wait && make`. Beside a running zync-client on the same database it only reads and
    /// waits for that client; with none running, it syncs once itself. Exit 7 on timeout,
    /// naming what is outstanding.
    #[arg(long, conflicts_with_all = ["once", "update_upstream", "status"])]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit 7); 0 waits for ever.
    #[arg(long, default_value_t = 120, value_name = "SECS", requires = "wait")]
    pub timeout: u64,
    /// With --status: list every ignored path with the rule that ignores it (E's, as the
    /// daemon reports them, at most 1000 per directory; and R's own, which --update-upstream
    /// never sends), not only the counts per rule.
    #[arg(long, requires = "status")]
    pub ignored: bool,
    /// With --status, --wait, --update-upstream or --dry-run: print one JSON document on
    /// stdout instead of text (shapes in the README; the push summary has session_id, files,
    /// bytes, conflicts, skipped, not_sent and changing, session_id null when nothing was
    /// sent).
    #[arg(long, requires = "json_mode")]
    pub json: bool,
    /// File holding the daemon's token (default: zync.token beside --db, if it exists).
    /// ZYNC_TOKEN overrides it.
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath, help_heading = zync_cli::SETTINGS)]
    pub token_file: Option<PathBuf>,
    /// Seconds of silence after which the connection counts as stalled (a hung tunnel) and is
    /// reopened; the client pings the daemon every third of it while idle.
    #[arg(long, default_value_t = 20, value_name = "SECS", help_heading = zync_cli::SETTINGS)]
    pub stall_timeout: u64,
    /// Log level: error, warn, info, debug or trace (or a tracing filter). Default
    /// info, or RUST_LOG when set; -v and -q step from the default.
    #[arg(long, value_name = "LEVEL", help_heading = zync_cli::SETTINGS)]
    pub log_level: Option<String>,
    /// -v / -q.
    #[command(flatten)]
    pub verbosity: zync_cli::logging::Verbosity,
}

/// The validated settings.
pub struct Config {
    /// The daemon's URL.
    pub server: String,
    /// The client database.
    pub db: PathBuf,
    /// Poll interval.
    pub interval: Duration,
    /// Directory mappings.
    pub mappings: Vec<Mapping>,
    /// The token and where it came from.
    pub credentials: Credentials,
    /// Silence after which a connection counts as stalled.
    pub stall_timeout: Duration,
}

impl Config {
    /// The daemon's names of the mapped directories, in `--dirs` order.
    pub fn dir_names(&self) -> Vec<String> {
        self.mappings.iter().map(|m| m.name.to_string()).collect()
    }

    /// Validates the command line; creates missing local directories.
    ///
    /// # Errors
    /// A malformed mapping, a duplicate name, nested directories, or an unreadable token file.
    pub fn from_args(args: &Args) -> Result<Config, ClientError> {
        if args.interval == 0 {
            return Err(ClientError::Config(
                "--interval must be at least 1 second".into(),
            ));
        }
        if args.stall_timeout < 3 {
            return Err(ClientError::Config(
                "--stall-timeout must be at least 3 seconds".into(),
            ));
        }
        // A mistyped --server is a usage error, told before anything is created.
        crate::transport::Server::parse(&args.server)
            .map_err(|e| e.into_client_error(&args.server))?;
        // A dry run changes nothing: a missing local directory is listed as to be made.
        let mut mappings = parse_mappings_with(&args.dirs, !args.dry_run)?;
        let credentials = credentials(args.token_file.as_deref(), &args.db)?;
        // The client's own files must never be synced over or sent upstream (a --db inside a
        // mapped directory is legal, if unwise).
        let mut own = Vec::new();
        if let Some(db) = canonical_file(&args.db) {
            for suffix in ["", "-wal", "-shm", "-journal", ".lock"] {
                own.push(PathBuf::from(format!("{}{suffix}", db.display())));
            }
        }
        let token_file = args
            .token_file
            .clone()
            .unwrap_or_else(|| beside_db(&args.db));
        own.extend(canonical_file(&token_file));
        for mapping in &mut mappings {
            mapping.own = own
                .iter()
                .filter(|p| p.starts_with(&mapping.root))
                .cloned()
                .collect();
        }
        Ok(Config {
            server: args.server.clone(),
            db: args.db.clone(),
            interval: Duration::from_secs(args.interval),
            mappings,
            credentials,
            stall_timeout: Duration::from_secs(args.stall_timeout),
        })
    }
}

/// The token file's default place: `zync.token` beside the database.
fn beside_db(db: &Path) -> PathBuf {
    match db.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join("zync.token"),
        _ => PathBuf::from("zync.token"),
    }
}

/// `path` with its directory resolved, as the canonical roots spell it. A directory not made
/// yet (the database's, made when the lock is taken) is resolved from its nearest existing
/// ancestor, which may be a root: the database a first run makes in `ROOT/.zync/` is inside
/// it. None when no ancestor resolves.
fn canonical_file(path: &Path) -> Option<PathBuf> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name()?;
    for existing in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        if let Ok(resolved) = std::fs::canonicalize(existing) {
            let missing = dir.strip_prefix(existing).ok()?;
            return Some(resolved.join(missing).join(name));
        }
    }
    Some(std::fs::canonicalize(".").ok()?.join(dir).join(name))
}

pub(crate) fn credentials(
    token_file: Option<&Path>,
    db: &Path,
) -> Result<Credentials, ClientError> {
    if let Some(token) = std::env::var("ZYNC_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
    {
        return Ok(Credentials {
            token: Some(token.trim().to_string()),
            source: "ZYNC_TOKEN".into(),
        });
    }
    let (path, explicit) = match token_file {
        Some(p) => (p.to_path_buf(), true),
        None => (beside_db(db), false),
    };
    if !explicit && !path.exists() {
        return Ok(Credentials {
            token: None,
            source: format!("ZYNC_TOKEN is unset and {} does not exist", path.display()),
        });
    }
    let token = zync_fs::read_token_file(&path).map_err(|e| ClientError::Config(e.to_string()))?;
    Ok(Credentials {
        token: Some(token),
        source: path.display().to_string(),
    })
}

/// Parses `NAME:LOCAL_PATH` mappings, creating missing directories.
///
/// # Errors
/// A malformed spec, a duplicate name, nested directories, or a path that is not a directory.
pub fn parse_mappings(specs: &[String]) -> Result<Vec<Mapping>, ClientError> {
    parse_mappings_with(specs, true)
}

/// As [`parse_mappings`]; without `create`, a missing local directory is kept as given (made
/// absolute) instead of created, so `--status` changes nothing.
pub(crate) fn parse_mappings_with(
    specs: &[String],
    create: bool,
) -> Result<Vec<Mapping>, ClientError> {
    let mut mappings: Vec<Mapping> = Vec::new();
    for spec in specs {
        let bad = |why: String| ClientError::Config(format!("--dirs {spec:?}: {why}"));
        let (name, path) = spec.split_once(':').ok_or_else(|| {
            bad("not NAME:LOCAL_PATH; write it as, for example, code:/srv/project".into())
        })?;
        let name = DirName::parse(name).map_err(|e| bad(e.to_string()))?;
        if path.is_empty() {
            return Err(bad("the LOCAL_PATH is empty".into()));
        }
        if !create && !Path::new(path).exists() {
            let root = std::path::absolute(path)
                .map_err(|e| bad(format!("cannot resolve {path}: {e}")))?;
            mappings.push(Mapping {
                name,
                root,
                own: Vec::new(),
            });
            continue;
        }
        if let Some((link, owner)) = zync_fs::others_symlink(Path::new(path)) {
            return Err(bad(format!(
                "{} is a symlink owned by another user (uid {owner}), who can point it anywhere \
                 you can write; zync-client does not follow it. Map the directory it leads to \
                 if you trust it, or remove the link",
                link.display()
            )));
        }
        if create {
            std::fs::create_dir_all(path).map_err(|e| bad(format!("cannot create {path}: {e}")))?;
        }
        let root =
            std::fs::canonicalize(path).map_err(|e| bad(format!("cannot resolve {path}: {e}")))?;
        if !root.is_dir() {
            return Err(bad(format!(
                "{path} is not a directory; map NAME to a directory (it is created when missing)"
            )));
        }
        if create {
            // Writes go into this directory, and only while its path leads to it.
            zync_fs::pin_root(&root).map_err(|e| bad(e.to_string()))?;
        }
        for other in &mappings {
            if other.name == name {
                return Err(bad(format!("the name {name} is mapped twice")));
            }
            if root.starts_with(&other.root) || other.root.starts_with(&root) {
                return Err(bad(format!(
                    "{} and {} are nested; map separate directories",
                    root.display(),
                    other.root.display()
                )));
            }
        }
        mappings.push(Mapping {
            name,
            root,
            own: Vec::new(),
        });
    }
    Ok(mappings)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another user plants a symlink where the mapped directory will be made (in /tmp, say):
    /// refused, through it or below it, and nothing is made where it leads; a symlink of
    /// one's own is the user's choice.
    #[test]
    fn a_mapped_path_through_another_users_symlink_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let theirs = dir.path().join("theirs");
        std::fs::create_dir(&theirs).expect("mkdir");
        let link = dir.path().join("proj");
        std::os::unix::fs::symlink(&theirs, &link).expect("symlink");
        if std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).is_err() {
            eprintln!("not root: cannot give the symlink to another user; skipped");
            return;
        }
        for spec in [
            format!("a:{}", link.display()),
            format!("a:{}", link.join("sub").display()),
        ] {
            let e = parse_mappings(std::slice::from_ref(&spec)).expect_err(&spec);
            assert!(
                e.to_string().contains("owned by another user (uid 65534)"),
                "{e}"
            );
        }
        assert!(!theirs.join("sub").exists());
        // Behind a symlink of the user's own, theirs still counts.
        let mine_to_theirs = dir.path().join("mine-to-theirs");
        std::os::unix::fs::symlink(&link, &mine_to_theirs).expect("symlink");
        let spec = format!("a:{}", mine_to_theirs.join("proj").display());
        let e = parse_mappings(std::slice::from_ref(&spec)).expect_err(&spec);
        assert!(e.to_string().contains("uid 65534"), "{e}");
        assert!(!theirs.join("proj").exists());
        let mine = dir.path().join("mine");
        std::os::unix::fs::symlink(&theirs, &mine).expect("symlink");
        assert!(parse_mappings(&[format!("a:{}", mine.display())]).is_ok());
        // A relative symlink of one's own is followed from where it stands.
        std::fs::create_dir(dir.path().join("real")).expect("mkdir");
        std::os::unix::fs::symlink("real", dir.path().join("rel")).expect("symlink");
        assert!(parse_mappings(&[format!("a:{}", dir.path().join("rel/x").display())]).is_ok());
    }

    #[test]
    fn creates_missing_directories_and_refuses_bad_specs() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("new/a");
        let m = parse_mappings(&[format!("a:{}", a.display())]).unwrap();
        assert!(a.is_dir());
        assert_eq!(m[0].name.as_str(), "a");

        let cases = [
            (vec!["plain".to_string()], "NAME:LOCAL_PATH"),
            (
                vec![
                    format!("a:{}", a.display()),
                    format!("a:{}", dir.path().join("b").display()),
                ],
                "twice",
            ),
            (
                vec![
                    format!("a:{}", a.display()),
                    format!("b:{}", a.join("x").display()),
                ],
                "nested",
            ),
            (vec![format!("x/y:{}", a.display())], "x/y"),
        ];
        for (specs, expected) in cases {
            let err = parse_mappings(&specs)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains(expected),
                "{specs:?}: expected {expected:?} in {err:?}"
            );
        }
    }

    /// A database whose directory a first run has yet to make inside a root is still known
    /// to be in that root, spelled as the canonical root is.
    #[test]
    fn a_database_in_a_directory_not_made_yet_resolves_from_its_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("r");
        std::fs::create_dir(&root).expect("mkdir");
        std::os::unix::fs::symlink(&root, dir.path().join("link")).expect("symlink");
        let db = dir.path().join("link/.zync/state/sync_client.db");
        let canonical = std::fs::canonicalize(&root).expect("canonical");
        assert_eq!(
            canonical_file(&db),
            Some(canonical.join(".zync/state/sync_client.db"))
        );
        assert_eq!(canonical_file(&root.join("db")), Some(canonical.join("db")));
    }
}
