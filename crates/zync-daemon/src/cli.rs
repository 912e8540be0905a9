//! The daemon's command line (kept compatible with the original tool's flags) and its
//! validation into a [`Config`]. Settings may also come from a config file (`file.rs`).

mod file;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Parser, ValueHint};
use zync_fs::DirName;

use crate::budget::StagingLimits;
use crate::own::OwnPaths;
use crate::root::Root;
use crate::token::Auth;

/// Command line of `zync-daemon`.
#[derive(Debug, Parser)]
#[command(
    name = "zync-daemon",
    version,
    about = "Index, watch and serve directories to zync clients (runs on machine E)"
)]
pub struct Args {
    /// Config file holding any of the settings below (keys are their long flags without `--`;
    /// see docs/daemon.example.toml). Flags given here win over it.
    /// Default: ~/.config/zync/daemon.toml ($XDG_CONFIG_HOME/zync/...), read if it exists.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Hidden: shell completions and man pages.
    #[command(flatten)]
    pub generate: zync_cli::Generate,
    /// Address to listen on. Keep it on loopback: clients reach it through an ssh tunnel.
    #[arg(long, default_value = "localhost", help_heading = zync_cli::SETTINGS)]
    pub host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8000, help_heading = zync_cli::SETTINGS)]
    pub port: u16,
    /// SQLite database holding the index.
    #[arg(long, default_value = "sync.db", value_hint = ValueHint::FilePath, help_heading = zync_cli::SETTINGS)]
    pub db: PathBuf,
    /// Directories to serve, as NAME:PATH (one or more). Required, here or as `dirs` in the
    /// config file.
    #[arg(long, num_args = 1.., value_name = "NAME:PATH", value_parser = zync_cli::dir_spec, help_heading = zync_cli::SETTINGS)]
    pub dirs: Vec<String>,
    /// Extra ignore pattern, gitignore syntax (repeatable).
    #[arg(long = "ignore", value_name = "PATTERN", help_heading = zync_cli::SETTINGS)]
    pub ignore: Vec<String>,
    /// Do not apply the built-in ignore list (.git, node_modules/, build/, ...).
    #[arg(long, help_heading = zync_cli::SETTINGS)]
    pub no_default_ignores: bool,
    /// File holding the access token (created with a random token when missing).
    /// Default: zync.token beside the database. ZYNC_TOKEN overrides it.
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath, help_heading = zync_cli::SETTINGS)]
    pub token_file: Option<PathBuf>,
    /// Accept clients without a token. Only for trusted, isolated setups.
    #[arg(long, help_heading = zync_cli::SETTINGS)]
    pub insecure_no_auth: bool,
    /// Seconds an authenticated client may stay silent before its connection is closed. The
    /// zync client pings at least once a minute while idle, so keep this above 60.
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..), help_heading = zync_cli::SETTINGS)]
    pub idle_timeout: u64,
    /// CPU priority of the daemon's indexing (its indexer, hashing and file-watching threads),
    /// as a nice value (0-19): the higher, the more indexing gives way to your own programs on
    /// E (a checkout or a build beside it is slowed less; zync catches up when they pause).
    /// Serving clients keeps the priority the daemon started with. 0 keeps that priority for
    /// indexing too, and so does a higher nice value the daemon was started with.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(i32).range(0..=19), help_heading = zync_cli::SETTINGS)]
    pub nice: i32,
    /// Bytes of content R may stage in one upstream session (4GiB, 512MiB, ...). A file that
    /// would pass it is refused; what the session staged before stays.
    #[arg(long, value_name = "SIZE", default_value = "4GiB", value_parser = zync_cli::units::parse_bytes, help_heading = zync_cli::SETTINGS)]
    pub max_session_bytes: u64,
    /// Bytes of content staged in all pending sessions together (received, staged or partly
    /// applied, not yet applied, dropped or expired): what R can take of E's disk.
    #[arg(long, value_name = "SIZE", default_value = "16GiB", value_parser = zync_cli::units::parse_bytes, help_heading = zync_cli::SETTINGS)]
    pub max_staged_bytes: u64,
    /// Files in one upstream session (writes and deletes).
    #[arg(long, value_name = "N", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..), help_heading = zync_cli::SETTINGS)]
    pub max_session_files: u64,
    /// Pending upstream sessions (received, staged or partly applied) one client may have
    /// waiting on E; a new push beyond them is refused until E's user applies or drops some.
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..), help_heading = zync_cli::SETTINGS)]
    pub max_pending_sessions: u64,
    /// Seconds an upload may wait for its next content frame (at most 1 MiB) before E drops it,
    /// gives its space back and closes the connection. Raise it for links slower than
    /// about 20 KiB/s.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..), help_heading = zync_cli::SETTINGS)]
    pub upload_stall_timeout: u64,
    /// Staged sessions nobody applied for this long (30d, 12h, ...) expire when the daemon
    /// starts (and with `zync-apply gc`): their staged files are removed; so do undone
    /// sessions this long after the apply they undid. Applied sessions lose the backups of what
    /// they replaced on E this long after the apply (they become settled: no more undo). Partly
    /// applied sessions are kept.
    #[arg(long, value_name = "AGE", default_value = "30d", value_parser = zync_cli::units::parse_duration, help_heading = zync_cli::SETTINGS)]
    pub staging_max_age: std::time::Duration,
    /// Log level: error, warn, info, debug or trace (or a tracing filter). Default
    /// info, or RUST_LOG when set; -v and -q step from the default.
    #[arg(long, value_name = "LEVEL", help_heading = zync_cli::SETTINGS)]
    pub log_level: Option<String>,
    /// -v / -q.
    #[command(flatten)]
    pub verbosity: zync_cli::logging::Verbosity,
    /// Open and keep open the reverse ssh tunnel to machine R (`ssh -N -R SOCKET:ADDR:PORT`),
    /// so R's client reaches this daemon through a Unix socket on R that only you can use
    /// (`--server unix:~/.zync/zync.sock`; see --tunnel-socket), or through a TCP port with
    /// --tunnel-remote-port. Restarted when it drops.
    #[arg(long, value_name = "[USER@]HOST", help_heading = zync_cli::SETTINGS)]
    pub tunnel: Option<String>,
    /// The Unix socket the tunnel opens on R (the default kind of forward): a path on R,
    /// relative to your home directory there unless absolute. Its directory is created mode
    /// 0700 when missing and must not be writable by other users. Default: ~/.zync/zync.sock
    /// (~/.zync is made mode 0700).
    #[arg(
        long,
        value_name = "PATH",
        requires = "tunnel",
        conflicts_with = "tunnel_remote_port",
        help_heading = zync_cli::SETTINGS
    )]
    pub tunnel_socket: Option<String>,
    /// Forward a TCP port on R's loopback instead of a Unix socket, and open this port. Any
    /// local user on R can connect to a TCP port, or take it while the tunnel is down.
    #[arg(long, value_name = "PORT", requires = "tunnel", value_parser = clap::value_parser!(u16).range(1..), help_heading = zync_cli::SETTINGS)]
    pub tunnel_remote_port: Option<u16>,
    /// The port of R's sshd (`ssh -p`).
    #[arg(long, value_name = "PORT", requires = "tunnel", value_parser = clap::value_parser!(u16).range(1..), help_heading = zync_cli::SETTINGS)]
    pub ssh_port: Option<u16>,
    /// An ssh_config option for the tunnel's ssh, as KEY=VALUE (`ssh -o`; repeatable), for
    /// example IdentityFile=~/.ssh/id_zync.
    #[arg(long = "ssh-option", value_name = "KEY=VALUE", requires = "tunnel", help_heading = zync_cli::SETTINGS)]
    pub ssh_options: Vec<String>,
    /// The ssh program the tunnel runs.
    #[arg(long, value_name = "PATH", env = "ZYNC_SSH", default_value = "ssh", help_heading = zync_cli::SETTINGS)]
    pub ssh_command: String,
}

/// Everything the daemon needs, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Served directories, none nested in another.
    pub roots: Vec<Root>,
    /// The index database.
    pub db: PathBuf,
    /// Extra ignore patterns.
    pub ignores: Vec<String>,
    /// Whether the built-in ignore list applies.
    pub default_ignores: bool,
    /// How clients authenticate.
    pub auth: Auth,
    /// Handshake and idle deadlines.
    pub limits: crate::shared::Limits,
    /// Files the daemon writes itself; never indexed, and refused from R, even if they sit in
    /// a root.
    pub own: OwnPaths,
    /// What R may stage.
    pub staging: StagingLimits,
    /// The nice value the indexing threads run at (`--nice`).
    pub index_nice: i32,
}

impl Config {
    /// Validates the command line: directories, names, token.
    ///
    /// # Errors
    /// Names what is wrong with which argument and how to fix it.
    pub fn from_args(args: &Args) -> anyhow::Result<Config> {
        let roots = parse_roots(&args.dirs)?;
        let token_file = args
            .token_file
            .clone()
            .unwrap_or_else(|| beside(&args.db, "zync.token"));
        let auth = if args.insecure_no_auth {
            Auth::Disabled
        } else {
            Auth::load_or_create(&token_file)?
        };
        let db = canonical_file(&args.db, "--db")?;
        let mut own = OwnPaths::default();
        for (suffix, what) in [
            ("", "zync-daemon's own database"),
            ("-wal", "zync-daemon's database journal (-wal)"),
            ("-shm", "zync-daemon's database shared memory (-shm)"),
            ("-journal", "zync-daemon's database journal (-journal)"),
            (".lock", "zync-daemon's database lock"),
        ] {
            own.add_file(PathBuf::from(format!("{}{suffix}", db.display())), what);
        }
        own.add_file(
            canonical_file(&token_file, "--token-file")?,
            "zync-daemon's token file",
        );
        own.add_dir(
            zync_db::staging_root(&db),
            "in zync-daemon's staging area (R's staged files and zync-apply's backups)",
        );
        let config = args
            .config
            .clone()
            .or_else(|| zync_cli::default_path(file::FILE_NAME));
        if let Some(config) = config.and_then(|c| canonical_file(&c, "--config").ok()) {
            own.add_file(config, "zync-daemon's config file");
        }
        Ok(Config {
            roots,
            db,
            ignores: args.ignore.clone(),
            default_ignores: !args.no_default_ignores,
            auth,
            limits: crate::shared::Limits {
                idle: std::time::Duration::from_secs(args.idle_timeout),
                ..crate::shared::Limits::default()
            },
            own,
            staging: StagingLimits {
                session_bytes: args.max_session_bytes,
                staged_bytes: args.max_staged_bytes,
                session_files: args.max_session_files,
                pending_sessions: args.max_pending_sessions,
                upload_stall: std::time::Duration::from_secs(args.upload_stall_timeout),
                max_age: args.staging_max_age,
            },
            index_nice: args.nice,
        })
    }
}

/// `path`'s directory joined with `name` (the current directory for a bare file name).
pub fn beside(path: &Path, name: &str) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(name),
        _ => PathBuf::from(name),
    }
}

/// The file's path with its directory resolved (symlinks, `..`), so it compares equal to the
/// paths the watcher reports under the canonical roots. The file itself need not exist yet.
fn canonical_file(path: &Path, flag: &str) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{flag} {} does not name a file", path.display()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(dir).with_context(|| {
        format!(
            "{flag} {}: its directory {} does not exist; create it first",
            path.display(),
            dir.display()
        )
    })?;
    Ok(dir.join(name))
}

/// Parses `NAME:PATH` arguments: each path must be an existing directory reached through no
/// symlink of another user's, names unique, and no root may contain another (one file would
/// then have two names). Pins each root ([`Root::pin`]).
pub fn parse_roots(specs: &[String]) -> anyhow::Result<Vec<Root>> {
    let mut roots: Vec<Root> = Vec::new();
    for spec in specs {
        let Some((name, path)) = spec.split_once(':') else {
            bail!(
                "--dirs {spec:?} is not NAME:PATH; write it as, for example, code:/home/me/project"
            );
        };
        let name = DirName::parse(name).with_context(|| format!("--dirs {spec:?}"))?;
        if path.is_empty() {
            bail!("--dirs {spec:?} has an empty PATH; write it as NAME:/path/to/dir");
        }
        if let Some((link, owner)) = zync_fs::others_symlink(Path::new(path)) {
            bail!(
                "--dirs {spec:?}: {} is a symlink owned by another user (uid {owner}), who can \
                 point it anywhere you can read; zync-daemon does not follow it. Serve the \
                 directory it leads to if you trust it, or remove the link",
                link.display()
            );
        }
        let meta = std::fs::metadata(path).with_context(|| {
            format!("--dirs {spec:?}: cannot use {path}; create it or fix the path")
        })?;
        if !meta.is_dir() {
            bail!("--dirs {spec:?}: {path} is not a directory; serve a directory, not a file");
        }
        let path = std::fs::canonicalize(path)
            .with_context(|| format!("--dirs {spec:?}: cannot resolve {path}"))?;
        for other in &roots {
            if other.name == name {
                bail!("--dirs names {name} twice; each directory needs its own NAME");
            }
            if path.starts_with(&other.path) || other.path.starts_with(&path) {
                bail!(
                    "--dirs {name}:{} and {}:{} are nested; serve only the outer one, or two separate directories",
                    path.display(),
                    other.name,
                    other.path.display()
                );
            }
        }
        // Served from now on only while the path leads to this directory.
        let root = Root::pin(name, path).with_context(|| format!("--dirs {spec:?}"))?;
        roots.push(root);
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, path: &Path) -> String {
        format!("{name}:{}", path.display())
    }

    #[test]
    fn accepts_distinct_directories() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let roots = parse_roots(&[spec("a", a.path()), spec("b", b.path())]).unwrap();
        assert_eq!(roots.len(), 2);
        assert_eq!(roots[0].path, a.path().canonicalize().unwrap());
    }

    #[test]
    fn refuses_bad_specs_with_a_reason() {
        let a = tempfile::tempdir().unwrap();
        std::fs::create_dir(a.path().join("inner")).unwrap();
        std::fs::write(a.path().join("file"), "x").unwrap();
        let cases = [
            (vec!["nocolon".to_string()], "NAME:PATH"),
            (
                vec![spec("a", a.path()), spec("a", &a.path().join("inner"))],
                "twice",
            ),
            (
                vec![spec("a", a.path()), spec("b", &a.path().join("inner"))],
                "nested",
            ),
            (
                vec![spec("b", &a.path().join("inner")), spec("a", a.path())],
                "nested",
            ),
            (vec![spec("a", &a.path().join("missing"))], "create it"),
            (vec![spec("a", &a.path().join("file"))], "not a directory"),
            (vec![spec("../x", a.path())], "../x"),
        ];
        for (specs, expected) in cases {
            let err = format!("{:#}", parse_roots(&specs).unwrap_err());
            assert!(
                err.contains(expected),
                "{specs:?}: expected {expected:?} in {err:?}"
            );
        }
    }

    /// Each root is pinned to the directory its path led to: the same directory opens, one
    /// swapped in at its path is refused.
    #[test]
    fn each_root_is_pinned_to_the_directory_it_led_to() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        std::fs::create_dir(&a).unwrap();
        let roots = parse_roots(&[spec("a", &a)]).unwrap();
        assert_eq!(roots[0].id, zync_fs::RootId::of(&a).unwrap());
        assert!(zync_fs::Dir::open_root(&roots[0].path).is_ok());
        std::fs::rename(&a, tmp.path().join("a.old")).unwrap();
        std::fs::create_dir(&a).unwrap();
        assert!(matches!(
            zync_fs::Dir::open_root(&roots[0].path),
            Err(zync_fs::FsError::RootReplaced { .. })
        ));
    }

    /// Another user plants a symlink where the served directory was to be (in /tmp, say):
    /// refused, through it or below it, naming the link and its owner; a symlink of one's own
    /// is the user's choice.
    #[test]
    fn a_served_path_through_another_users_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir_all(theirs.join("sub")).unwrap();
        let mine = tmp.path().join("mine");
        std::os::unix::fs::symlink(&theirs, &mine).unwrap();
        assert!(parse_roots(&[spec("a", &mine)]).is_ok());
        let link = tmp.path().join("proj");
        std::os::unix::fs::symlink(&theirs, &link).unwrap();
        if std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).is_err() {
            eprintln!("not root: cannot give the symlink to another user; skipped");
            return;
        }
        for served in [link.clone(), link.join("sub")] {
            let err = format!("{:#}", parse_roots(&[spec("a", &served)]).unwrap_err());
            assert!(
                err.contains(&link.display().to_string()) && err.contains("uid 65534"),
                "{err}"
            );
        }
    }

    #[test]
    fn beside_puts_files_next_to_the_database() {
        assert_eq!(
            beside(Path::new("sync.db"), "zync.token"),
            PathBuf::from("zync.token")
        );
        assert_eq!(
            beside(Path::new("/x/y/sync.db"), "t"),
            PathBuf::from("/x/y/t")
        );
    }
}
