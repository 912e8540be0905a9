//! `zync-daemon`, machine E: indexes and watches directories, records each change with a
//! sequence number in SQLite, and serves changes and file content over WebSocket.
//!
//! [`run`] takes the listener and a shutdown future so tests can run a daemon in-process on
//! `127.0.0.1:0`; `main.rs` only parses flags and calls [`main_with_args`].
#![deny(missing_docs)]

mod admission;
mod budget;
mod cli;
mod cmd;
mod connection;
mod context;
mod handshake;
mod inbox;
mod indexed_file;
mod indexer;
mod link;
mod own;

mod refusal;
mod root;
mod server;
mod shared;
mod staging;
mod token;
mod tunnel;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

pub use budget::StagingLimits;
pub use cli::{beside, parse_roots, Args, Config};
pub use indexer::Status;
pub use own::OwnPaths;
pub use root::Root;
pub use shared::Limits;
pub use token::Auth;

use indexer::{IndexedRoot, Indexer};
use shared::{ServedRoot, Shared};

/// Validates the command line, binds the port and serves until SIGINT or SIGTERM.
///
/// # Errors
/// Bad arguments, a port in use, an unusable database, or a failing watcher.
pub fn main_with_args(args: Args) -> anyhow::Result<()> {
    let tunnel = tunnel::Tunnel::from_args(&args)?;
    let config = Config::from_args(&args)?;
    // Held until the daemon ends, taken before it listens: a second daemon on this database
    // would reset this one's connections and abort its upstream sessions at its start.
    let _lock = lock_database(&config.db)?;
    // Checked again by `run`; here too so that a staging area another user made first is
    // refused before anything listens (invariant 8).
    let staging = zync_db::staging_root(&config.db);
    zync_fs::make_private(&staging)
        .with_context(|| format!("cannot use the staging area {}", staging.display()))?;
    let runtime = zync_cli::runtime(None)?;
    runtime.block_on(async {
        let address = format!("{}:{}", args.host, args.port);
        let listener = TcpListener::bind(&address).await.with_context(|| {
            format!(
                "cannot listen on {address}; is another daemon running there? pick another --port"
            )
        })?;
        // The bound address, so `--port 0` tells which port it got (the tests rely on it).
        let bound = listener
            .local_addr()
            .context("cannot read the listening address")?;
        tracing::info!("listening on ws://{bound}");
        let tunnel = tunnel.map(|t| t.start(bound)).transpose()?;
        let result = run(config, listener, zync_cli::shutdown_signal("shutting down")).await;
        if let Some(tunnel) = tunnel {
            tunnel.stop().await;
        }
        result
    })
}

/// Runs the daemon on `listener` until `shutdown` completes.
///
/// # Errors
/// An unusable database, ignore rules that do not parse, or a failing watcher or indexer.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    match &config.auth {
        Auth::Token { source, .. } => tracing::info!("clients must present the token from {source}"),
        Auth::Disabled => tracing::warn!(
            "--insecure-no-auth: any program that can reach this port can read the served directories"
        ),
    }
    let db_path = config.db.clone();
    // With the directory each root was pinned to: zync-apply writes into a root only while
    // its path leads there (invariant 3).
    let stored: Vec<zync_db::StoredRoot> = config
        .roots
        .iter()
        .map(|r| zync_db::StoredRoot {
            dir: r.name.to_string(),
            path: r.path.display().to_string(),
            identity: Some(zync_db::RootIdentity {
                dev: r.id.dev,
                ino: r.id.ino,
                born_ns: r.id.born_ns,
            }),
        })
        .collect();
    let max_age = config.staging.max_age;
    let index = tokio::task::spawn_blocking(move || -> anyhow::Result<zync_db::Index> {
        let mut index = zync_db::Index::open(&db_path)
            .with_context(|| format!("cannot open the daemon database {}", db_path.display()))?;
        // An older zync made the staging area under the default umask: R's staged content
        // and E's backups in it must not stay readable by other users; and one another user
        // made (first, in a shared directory) is theirs to fill: refused (invariant 8).
        let staging = zync_db::staging_root(&db_path);
        zync_fs::make_private(&staging)
            .with_context(|| format!("cannot use the staging area {}", staging.display()))?;
        index.set_roots(&stored)?;
        index.reset_connections()?;
        staging::abort_stale_sessions(&index, &db_path)?;
        staging::expire_sessions(&index, &db_path, max_age)?;
        Ok(index)
    })
    .await??;
    let index_id = index.index_id().to_string();
    let last_seq = index.last_seq()?;
    tracing::info!(index_id = %index_id, last_seq, db = %config.db.display(), "index opened");

    let mut indexed = Vec::new();
    let mut served = Vec::new();
    for root in &config.roots {
        let rules = zync_fs::IgnoreRules::new(&root.path, &config.ignores, config.default_ignores)
            .with_context(|| format!("bad ignore rules for {}", root.name))?;
        let rules = Arc::new(rules);
        indexed.push(IndexedRoot {
            root: root.clone(),
            rules: rules.clone(),
        });
        served.push(ServedRoot {
            name: root.name.clone(),
            path: root.path.clone(),
            rules,
        });
        tracing::info!(dir = %root.name, path = %root.path.display(), "serving");
    }

    let (status_tx, status_rx) = watch::channel(Status {
        last_seq,
        scanning: true,
        settled: 0,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = oneshot::channel();
    let indexer = Indexer::new(index, indexed, config.own.clone(), status_tx);
    let thread_stop = stop.clone();
    let nice = config.index_nice;
    let thread = std::thread::Builder::new()
        .name("zync-indexer".into())
        .spawn(move || {
            // First thing: the hashing pool and the watcher's thread are started from this
            // thread and take its priority. Serving stays at the daemon's own.
            match zync_cli::lower_priority(nice) {
                Ok(nice) => tracing::debug!("indexing at nice {nice}"),
                Err(e) => tracing::warn!(
                    "cannot lower indexing's CPU priority to nice {nice} (--nice): {e}"
                ),
            }
            let result = indexer.run(thread_stop);
            let _ = done_tx.send(result);
        })
        .context("cannot start the indexer thread")?;

    let shared = Arc::new(Shared {
        index_id,
        roots: served,
        db_path: config.db.clone(),
        auth: config.auth.clone(),
        limits: config.limits,
        status: status_rx,
        own: config.own.clone(),
        staging: config.staging,
        budget: budget::Budget::default(),
    });
    // The server stops on shutdown, or when the indexer fails (serving a stale index would hide
    // changes from clients).
    let (indexer_failed_tx, indexer_failed_rx) = oneshot::channel::<anyhow::Error>();
    let watch_indexer = async move {
        match done_rx.await {
            Ok(Err(e)) => {
                let _ = indexer_failed_tx.send(e);
            }
            Ok(Ok(())) => std::future::pending::<()>().await,
            // The thread ended without a word: it panicked.
            Err(_) => {
                let _ = indexer_failed_tx.send(anyhow::anyhow!("the indexer thread panicked"));
            }
        }
    };
    let stop_serving = async {
        tokio::select! {
            () = shutdown => {}
            () = watch_indexer => {}
        }
    };
    let giving_back = tokio::spawn(give_back_after_bursts());
    let served = server::serve(listener, shared, stop_serving).await;
    giving_back.abort();
    served?;
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    if let Ok(e) = indexer_failed_rx.await {
        return Err(e.context("the indexer failed"));
    }
    Ok(())
}

/// How often the daemon looks whether a burst of work has ended ([`give_back_after_bursts`]).
const GIVE_BACK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Gives what a burst of work freed (a startup scan, a sync of a big tree) back to the system
/// once the daemon is quiet again: it used less than a twentieth of a core over the last
/// [`GIVE_BACK_EVERY`] (what a busy daemon frees, it uses again). Runs at serving priority,
/// never on the niced indexer: the allocator's locks are held meanwhile, and serving would
/// wait behind indexing for them.
async fn give_back_after_bursts() {
    let mut give_back = zync_cli::GiveBack::default();
    let mut ticks = tokio::time::interval(GIVE_BACK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cpu = zync_cli::process_cpu();
    loop {
        ticks.tick().await;
        let now = zync_cli::process_cpu();
        let used = now.saturating_sub(cpu);
        cpu = now;
        if used > GIVE_BACK_EVERY / 20 {
            continue;
        }
        let given = tokio::task::spawn_blocking(move || {
            give_back.if_grown();
            give_back
        });
        give_back = match given.await {
            Ok(give_back) => give_back,
            Err(_) => return,
        };
    }
}

/// Takes the daemon's lock on its database (`<db>.lock`, an flock that ends with the process,
/// however it ends).
///
/// # Errors
/// Another zync-daemon holds it (named by its pid), or the lock file cannot be made.
fn lock_database(db: &std::path::Path) -> anyhow::Result<zync_fs::LockFile> {
    let path = zync_fs::lock::path_beside(db);
    // `zync-apply wait` reads the pid to tell a daemon that is not running from a busy one.
    let note = format!("pid {}", std::process::id());
    match zync_fs::try_lock(&path, note.as_bytes())
        .with_context(|| format!("cannot lock the daemon database with {}", path.display()))?
    {
        zync_fs::Locked::Held(lock) => Ok(lock),
        zync_fs::Locked::Busy(holder) => {
            let holder = zync_cli::visible::line(holder.trim()).into_owned();
            let who = if holder.is_empty() {
                "another zync-daemon".to_string()
            } else {
                format!("another zync-daemon ({holder})")
            };
            anyhow::bail!(
                "{who} is using the database {}; one daemon serves a database at a time: stop                  it first, or give this one another --db (its lock on {} ends with that process)",
                db.display(),
                path.display()
            )
        }
    }
}
