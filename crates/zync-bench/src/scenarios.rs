//! The scenarios: fresh trees, no-op syncs, watched writes, save-to-R latency, large files and
//! edits in them, loop mode. Each starts both servers on the same source, puts a proxy in front
//! of each (bytes counted each way, optional delay), times the clients, measures the CPU time
//! and peak memory of both sides of each tool per run, and reduces runs to one `Row` of medians.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::meter::{self, Meter, Usage};
use crate::process::{rss_kib, Exit};
use crate::proxy::{Proxy, Traffic};
use crate::report::{fmt_duration, median, percentile, Row};
use crate::rsync::{self, RsyncDaemon};
use crate::workload;
use crate::zync::{self, Bins, Daemon};
use crate::Options;

/// What a scenario needs: the binaries, the options and a fresh directory of its own.
pub struct Ctx<'a> {
    pub bins: &'a Bins,
    pub opts: &'a Options,
    pub dir: &'a Path,
}

impl Ctx<'_> {
    fn pick<T>(&self, full: T, quick: T) -> T {
        if self.opts.quick {
            quick
        } else {
            full
        }
    }
    fn delay(&self) -> Duration {
        Duration::from_millis(self.opts.latency_ms)
    }
}

const MIB: u64 = 1 << 20;
const SEED: u64 = 0x5EED_2026;

/// Runs scenario `name` (one of `crate::SCENARIOS`).
///
/// # Errors
/// When a tool fails or a result differs from the source.
pub fn run(name: &str, ctx: &Ctx) -> Result<Row> {
    let row = run_in(name, ctx)?;
    if holds_big_files(name) {
        // A few big files: deleting them costs ext4 nothing worth noting, and gives their
        // gigabytes of page cache back to the scenarios after (kept, the next one's writes
        // paid the VM's host for fresh memory: an edit's client took 0.5-0.8 s of system time
        // instead of 0.2). Trees of small files stay until the benchmark ends ([`Keep::Tree`]).
        fs::remove_dir_all(ctx.dir)?;
    }
    Ok(row)
}

/// Whether scenario `name` works on a few big files, not on trees of many small ones.
fn holds_big_files(name: &str) -> bool {
    matches!(name, "big-file" | "edit-in-big")
}

/// [`run`], before any cleaning.
fn run_in(name: &str, ctx: &Ctx) -> Result<Row> {
    let src = ctx.dir.join("src");
    fs::create_dir_all(&src)?;
    let mut row = match name {
        "initial-small" => {
            workload::small_tree(&src, ctx.pick(10_000, 2_000), SEED)?;
            pair(ctx, &src, Mode::Fresh, Keep::Tree)?
        }
        "initial-shared" => {
            // Bigger than initial-small's tree: a repository with its vendored dependencies.
            // Files planned in a later page find the holders of their content that earlier
            // pages wrote, so most of the shared files are copies made on R.
            workload::shared_tree(&src, ctx.pick(40_000, 4_000), SEED)?;
            pair(ctx, &src, Mode::Fresh, Keep::Tree)?
        }
        "noop" => {
            workload::small_tree(&src, ctx.pick(10_000, 2_000), SEED)?;
            pair(ctx, &src, Mode::Noop, Keep::Tree)?
        }
        "big-file" => {
            workload::big_file(&src.join("big.bin"), ctx.pick(1024, 128) * MIB, SEED)?;
            pair(ctx, &src, Mode::Fresh, Keep::Nothing)?
        }
        "edit-in-big" => {
            workload::big_file(&src.join("big.bin"), ctx.pick(256, 64) * MIB, SEED)?;
            pair(ctx, &src, Mode::Edit, Keep::Nothing)?
        }
        "watched-burst" => watched_burst(ctx)?,
        "latency" => latency(ctx, &src)?,
        "soak" => soak(ctx, &src)?,
        "restart" => restart(ctx, &src)?,
        other => bail!("unknown scenario {other:?}"),
    };
    row.scenario = name.to_string();
    Ok(row)
}

#[derive(PartialEq, Clone, Copy)]
enum Mode {
    /// Timed sync into an empty destination.
    Fresh,
    /// Untimed first sync, then a timed second sync with nothing changed.
    Noop,
    /// Untimed first sync, 64 KiB changed in the middle of big.bin, timed second sync.
    Edit,
}

/// "user U + sys S" of one process, for the progress lines.
fn cpu(exit: &Exit) -> String {
    format!(
        "user {} + sys {}",
        fmt_duration(exit.user),
        fmt_duration(exit.sys)
    )
}

/// The median CPU time (user + system) of several runs of one process.
fn median_cpu(exits: &[Exit]) -> Option<Duration> {
    median(&exits.iter().map(|e| e.user + e.sys).collect::<Vec<_>>())
}

/// The median peak memory of several runs of one process.
fn median_rss(exits: &[Exit]) -> Option<u64> {
    median(&exits.iter().map(|e| e.max_rss_kib).collect::<Vec<_>>())
}

/// What happens to a run's destinations when the next run starts.
#[derive(PartialEq, Clone, Copy)]
enum Keep {
    /// Kept until the benchmark ends: on ext4, creating many files right after many were
    /// deleted is several times slower ("recently deleted" inodes are skipped one by one),
    /// which would time the file system, not the tools.
    Tree,
    /// Removed right before the same tool's next timed run: a big file's page cache is then
    /// reused at once instead of memory the VM has to fault in afresh. Removing both tools'
    /// copies together made whichever tool went second wait for memory the host had taken
    /// back meanwhile: 2-3x slower, turn by turn.
    Nothing,
}

/// The tools a write scenario times. rsync does not flush what it writes unless asked; zync
/// makes every file durable before it counts it as synced (invariants 1 and 2, docs/ARCHITECTURE.md), so
/// `rsync --fsync` is timed too: the same durability, side by side.
#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Zync,
    Rsync,
    RsyncFsync,
}

impl Tool {
    /// The prefix of this tool's destination directories.
    fn dst(self) -> &'static str {
        match self {
            Tool::Zync => "dst-zync",
            Tool::Rsync => "dst-rsync",
            Tool::RsyncFsync => "dst-rsync-fsync",
        }
    }
}

/// What one tool's timed runs gave.
#[derive(Default)]
struct Samples {
    times: Vec<Duration>,
    clients: Vec<Exit>,
    servers: Vec<Usage>,
    traffic: Vec<Traffic>,
}

impl Samples {
    fn push(&mut self, (time, exit): (Duration, Exit), traffic: Traffic, server: Usage) {
        if !server.reset && self.servers.iter().all(|u| u.reset) {
            eprintln!(
                "   (the kernel refused to reset the server's peak memory: its column shows the \
                 peak since it started)"
            );
        }
        self.times.push(time);
        self.clients.push(exit);
        self.traffic.push(traffic);
        self.servers.push(server);
    }

    /// "T (B bytes up + B down, client cpu ..., server cpu S)" of run `i`.
    fn line(&self, i: usize) -> String {
        format!(
            "{} ({} B up + {} B down, client cpu {}, server cpu {})",
            fmt_duration(self.times[i]),
            self.traffic[i].up,
            self.traffic[i].down,
            cpu(&self.clients[i]),
            fmt_duration(self.servers[i].cpu)
        )
    }

    /// Medians of the server's and the client's CPU time.
    fn cpu(&self) -> (Option<Duration>, Option<Duration>) {
        let servers: Vec<Duration> = self.servers.iter().map(|u| u.cpu).collect();
        (median(&servers), median_cpu(&self.clients))
    }

    /// Medians of the server's and the client's peak memory.
    fn rss(&self) -> (Option<u64>, Option<u64>) {
        let servers: Vec<u64> = self.servers.iter().map(|u| u.peak_kib).collect();
        (median(&servers), median_rss(&self.clients))
    }

    /// Medians of the bytes both ways and of the bytes from the client to the server.
    fn bytes(&self) -> (Option<u64>, Option<u64>) {
        let total: Vec<u64> = self.traffic.iter().map(|t| t.total()).collect();
        let up: Vec<u64> = self.traffic.iter().map(|t| t.up).collect();
        (median(&total), median(&up))
    }
}

fn pair(ctx: &Ctx, src: &Path, mode: Mode, keep: Keep) -> Result<Row> {
    let (bins, dir, delay) = (ctx.bins, ctx.dir, ctx.delay());
    let zstate = dir.join("zync-state");
    let mut zd = Daemon::start(bins, &zstate, src)?;
    eprintln!(
        "   zync daemon startup scan: {}{}",
        fmt_duration(zd.scan_time),
        hashed_note(zd.hashed)
    );
    let rd = RsyncDaemon::start(&dir.join("rsync-state"), src)?;
    let mut zp = Proxy::start(zd.addr, delay)?;
    let rp = Proxy::start(rd.addr, delay)?;
    // A no-op sync writes nothing: flushing cannot change rsync's time there.
    let tools: &[Tool] = if mode == Mode::Noop {
        &[Tool::Zync, Tool::Rsync]
    } else {
        &[Tool::Zync, Tool::Rsync, Tool::RsyncFsync]
    };
    let (mut z, mut r, mut rf) = (Samples::default(), Samples::default(), Samples::default());
    for run in 0..ctx.opts.runs {
        let dst = |tool: Tool| dir.join(format!("{}-{run}", tool.dst()));
        let zdb = dir.join(format!("client-{run}.db"));
        for &tool in tools {
            fs::create_dir_all(dst(tool))?;
        }
        if mode != Mode::Fresh {
            zync::sync_once(bins, zp.port, &zd.token, &zdb, &dst(Tool::Zync))?;
            rsync::sync(rp.port, &dst(Tool::Rsync), false)?;
            if tools.contains(&Tool::RsyncFsync) {
                rsync::sync(rp.port, &dst(Tool::RsyncFsync), false)?;
            }
        }
        if mode == Mode::Edit {
            workload::edit_middle(&src.join("big.bin"), 64 * 1024, SEED + 1 + run as u64)?;
            // Restart so the daemon's index surely holds the edit before the timed sync (its
            // startup scan re-hashes a file whose size or mtime changed); not timed.
            zd.stop()?;
            zd = Daemon::start(bins, &zstate, src)?;
            zp = Proxy::start(zd.addr, delay)?;
        }
        // Rotate which tool goes first, so none always meets a warmer or busier machine.
        for turn in 0..tools.len() {
            let tool = tools[(run + turn) % tools.len()];
            if run > 0 && keep == Keep::Nothing {
                // Each tool's last copy goes right before its own run, which reuses that page
                // cache at once: freed a run earlier, the host may have taken it back by then.
                fs::remove_dir_all(dir.join(format!("{}-{}", tool.dst(), run - 1)))?;
            }
            settle_disk();
            match tool {
                Tool::Zync => {
                    zp.take_bytes();
                    let meter = Meter::start(zd.pid());
                    let done = zync::sync_once(bins, zp.port, &zd.token, &zdb, &dst(tool))?;
                    z.push(done, zp.take_bytes(), meter.finish());
                }
                Tool::Rsync | Tool::RsyncFsync => {
                    rp.take_bytes();
                    let meter = Meter::start(rd.pid());
                    let done = rsync::sync(rp.port, &dst(tool), tool == Tool::RsyncFsync)?;
                    let (bytes, server) = (rp.take_bytes(), meter.finish());
                    if tool == Tool::Rsync { &mut r } else { &mut rf }.push(done, bytes, server);
                }
            }
        }
        let fsynced = if rf.times.len() > run {
            format!(", rsync --fsync {}", fmt_duration(rf.times[run]))
        } else {
            String::new()
        };
        eprintln!(
            "   run {}: zync {}, rsync {}{fsynced}",
            run + 1,
            z.line(run),
            r.line(run),
        );
        if run + 1 == ctx.opts.runs {
            for &tool in tools {
                same_tree(src, &dst(tool))
                    .with_context(|| format!("{}'s copy differs from the source", tool.dst()))?;
            }
        }
    }
    zd.stop()?;
    rd.stop()?;
    let ((z_wire, z_up), (r_wire, r_up)) = (z.bytes(), r.bytes());
    Ok(Row {
        zync: median(&z.times),
        rsync: median(&r.times),
        rsync_fsync: median(&rf.times),
        best: (z.times.iter().min().copied(), r.times.iter().min().copied()),
        zync_rss: z.rss(),
        rsync_rss: r.rss(),
        zync_cpu: z.cpu(),
        rsync_cpu: r.cpu(),
        wire: (z_wire, r_wire),
        up: (z_up, r_up),
        ..Row::default()
    })
}

/// Writes out all dirty data (`sync(2)`) before a timed run, so that no tool pays for the
/// writeback of what the workload generator or the other tool wrote before it.
fn settle_disk() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// Checks that every file under `src` is under `dst` with the same bytes.
fn same_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(src.join(&rel))? {
            let entry = entry?;
            let rel = rel.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                stack.push(rel);
            } else if fs::read(src.join(&rel))?
                != fs::read(dst.join(&rel)).with_context(|| format!("missing {}", rel.display()))?
            {
                bail!("{} differs", rel.display());
            }
        }
    }
    Ok(())
}

/// Files written on E while zync's loop client watches, timed from the first write until R
/// holds every one of them; against writing the same files beside an idle rsync daemon and
/// then running rsync once over the whole tree (a base tree the first sync already brought).
/// Both times include the writing: indexing that slows E's writer counts against zync.
/// How long zync's daemon and loop client must have used no CPU before a watched-burst turn
/// starts (longer than the daemon's two seconds before it rehashes fresh files), and the most
/// that is waited for it.
const IDLE_QUIET: Duration = Duration::from_millis(2_500);
const IDLE_LIMIT: Duration = Duration::from_secs(20);

fn watched_burst(ctx: &Ctx) -> Result<Row> {
    let (bins, dir, delay) = (ctx.bins, ctx.dir, ctx.delay());
    let (base, burst) = (ctx.pick(5_000, 1_000), ctx.pick(5_000, 2_000));
    let (zsrc, rsrc) = (dir.join("src-zync"), dir.join("src-rsync"));
    let (zdst, rdst) = (dir.join("dst-zync"), dir.join("dst-rsync"));
    for d in [&zsrc, &rsrc, &zdst, &rdst] {
        fs::create_dir_all(d)?;
    }
    workload::small_tree(&zsrc, base, SEED)?;
    workload::small_tree(&rsrc, base, SEED)?;
    let zd = Daemon::start(bins, &dir.join("zync-state"), &zsrc)?;
    let rd = RsyncDaemon::start(&dir.join("rsync-state"), &rsrc)?;
    let (zp, rp) = (Proxy::start(zd.addr, delay)?, Proxy::start(rd.addr, delay)?);
    let client = zync::start_loop(bins, zp.port, &zd.token, &dir.join("client.db"), &zdst)?;
    rsync::sync(rp.port, &rdst, false)?;
    let mut z = Samples::default();
    let mut r = Samples::default();
    let mut zclient: Vec<Usage> = Vec::new();
    let result = (|| -> Result<()> {
        // The loop client's first sync of the base tree, untimed.
        wait_for_files(&zsrc, &zdst, 0..base, Duration::from_secs(300))?;
        for run in 0..ctx.opts.runs {
            let sub = format!("burst-{run}");
            let seed = SEED + 100 + run as u64;
            for turn in 0..2 {
                settle_disk();
                // zync's daemon rehashes the burst's files two seconds after it hashed them
                // (they were fresh): not in rsync's turn, nor in zync's next one.
                meter::wait_idle(&[zd.pid(), client.pid()], IDLE_QUIET, IDLE_LIMIT);
                if (run + turn) % 2 == 0 {
                    zp.take_bytes();
                    let (meter, cmeter) = (Meter::start(zd.pid()), Meter::start(client.pid()));
                    let start = Instant::now();
                    workload::small_tree(&zsrc.join(&sub), burst, seed)?;
                    let wrote = start.elapsed();
                    wait_for_files(
                        &zsrc.join(&sub),
                        &zdst.join(&sub),
                        0..burst,
                        Duration::from_secs(300),
                    )?;
                    let took = start.elapsed();
                    let cusage = meter_exit(cmeter.finish());
                    z.push((took, cusage.0), zp.take_bytes(), meter.finish());
                    zclient.push(cusage.1);
                    eprintln!("   run {}: zync wrote in {}", run + 1, fmt_duration(wrote));
                } else {
                    rp.take_bytes();
                    let meter = Meter::start(rd.pid());
                    let start = Instant::now();
                    workload::small_tree(&rsrc.join(&sub), burst, seed)?;
                    let wrote = start.elapsed();
                    let (_, exit) = rsync::sync(rp.port, &rdst, false)?;
                    r.push((start.elapsed(), exit), rp.take_bytes(), meter.finish());
                    eprintln!("   run {}: rsync wrote in {}", run + 1, fmt_duration(wrote));
                }
            }
            eprintln!(
                "   run {}: zync {}, rsync {}",
                run + 1,
                z.line(run),
                r.line(run)
            );
        }
        Ok(())
    })();
    client.stop()?;
    zd.stop()?;
    rd.stop()?;
    result?;
    same_tree(&zsrc, &zdst).context("zync's copy differs from the source")?;
    same_tree(&rsrc, &rdst).context("rsync's copy differs from the source")?;
    let ((z_wire, z_up), (r_wire, r_up)) = (z.bytes(), r.bytes());
    let client_rss = median(&zclient.iter().map(|u| u.peak_kib).collect::<Vec<_>>());
    Ok(Row {
        zync: median(&z.times),
        rsync: median(&r.times),
        best: (z.times.iter().min().copied(), r.times.iter().min().copied()),
        zync_rss: (z.rss().0, client_rss),
        rsync_rss: r.rss(),
        zync_cpu: z.cpu(),
        rsync_cpu: r.cpu(),
        wire: (z_wire, r_wire),
        up: (z_up, r_up),
        ..Row::default()
    })
}

/// A loop client's usage over a run as the `Exit` a timed client gives (CPU in `user`), and
/// as itself (for its peak).
fn meter_exit(usage: Usage) -> (Exit, Usage) {
    let exit = Exit {
        success: true,
        max_rss_kib: usage.peak_kib,
        user: usage.cpu,
        sys: Duration::ZERO,
    };
    (exit, usage)
}

/// Waits until `dst` holds each file `files` of the small tree under `src`, as big as E's.
/// Files arrive in any order; one that arrived stays, so the wait moves on from the first
/// one missing. It looks at sizes only: zync renames a file into place once it is whole, and
/// the caller compares the trees' bytes once the timing is over. Reading both sides' files
/// here would spend, on the cores zync is using, CPU that rsync's side of the run does not
/// pay for (the bytes of every file, twice, while R is still receiving).
fn wait_for_files(
    src: &Path,
    dst: &Path,
    files: std::ops::Range<usize>,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for i in files {
        let rel = workload::source_path(i);
        let want = fs::symlink_metadata(src.join(&rel))?.len();
        while fs::symlink_metadata(dst.join(&rel)).ok().map(|m| m.len()) != Some(want) {
            if Instant::now() > deadline {
                bail!("{} did not reach R within {timeout:?}", rel.display());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

/// Loop-mode client; a save on E timed until R holds the new content.
fn latency(ctx: &Ctx, src: &Path) -> Result<Row> {
    let (bins, dir) = (ctx.bins, ctx.dir);
    workload::small_tree(src, 200, SEED)?;
    fs::create_dir_all(src.join("lat"))?;
    let zd = Daemon::start(bins, &dir.join("zync-state"), src)?;
    let zp = Proxy::start(zd.addr, ctx.delay())?;
    let dst = dir.join("dst-zync");
    let client = zync::start_loop(bins, zp.port, &zd.token, &dir.join("client.db"), &dst)?;
    let result = (|| -> Result<Vec<Duration>> {
        fs::write(src.join("lat/ready.txt"), "ready")?;
        wait_for_content(
            &dst.join("lat/ready.txt"),
            b"ready",
            Duration::from_secs(120),
        )?;
        let mut times = vec![];
        for i in 0..ctx.pick(50, 20) {
            let content = format!("save {i}\n{}", "fn edit() {}\n".repeat(i % 50 + 1));
            let start = Instant::now();
            fs::write(src.join("lat/edit.rs"), &content)?;
            wait_for_content(
                &dst.join("lat/edit.rs"),
                content.as_bytes(),
                Duration::from_secs(30),
            )?;
            times.push(start.elapsed());
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(times)
    })();
    let cexit = client.stop()?;
    let dexit = zd.stop()?;
    let times = result?;
    let (p50, p95) = (
        percentile(&times, 50).unwrap(),
        percentile(&times, 95).unwrap(),
    );
    Ok(Row {
        zync: Some(p50),
        zync_note: Some(format!(
            "p50 {}, p95 {} ({} saves)",
            fmt_duration(p50),
            fmt_duration(p95),
            times.len()
        )),
        rsync_note: Some("n/a (no watch mode)".into()),
        zync_rss: (Some(dexit.max_rss_kib), Some(cexit.max_rss_kib)),
        zync_cpu: (Some(dexit.user + dexit.sys), Some(cexit.user + cexit.sys)),
        ..Row::default()
    })
}

/// Loop mode through many rounds of changes (memory must not grow). Each round
/// writes a directory of new files and removes the last round's; R must hold exactly the
/// round's files before the next round starts. The daemon's and the client's resident memory
/// are read after the first round and after the last: a leak per change shows as growth.
fn soak(ctx: &Ctx, src: &Path) -> Result<Row> {
    let (bins, dir) = (ctx.bins, ctx.dir);
    let (rounds, files) = (ctx.pick(40, 8), ctx.pick(500, 200));
    workload::small_tree(src, 200, SEED)?;
    let zd = Daemon::start(bins, &dir.join("zync-state"), src)?;
    let zp = Proxy::start(zd.addr, ctx.delay())?;
    let dst = dir.join("dst-zync");
    let client = zync::start_loop(bins, zp.port, &zd.token, &dir.join("client.db"), &dst)?;
    let (daemon_pid, client_pid) = (zd.pid(), client.pid());
    let rss = || (rss_kib(daemon_pid), rss_kib(client_pid));
    // (daemon, client) resident sets after the first round and after the last.
    type Rss = (Option<u64>, Option<u64>);
    let result = (|| -> Result<(Rss, Rss)> {
        let mut first = (None, None);
        for round in 0..rounds {
            let here = src.join(format!("churn/r{round}"));
            fs::create_dir_all(&here)?;
            for i in 0..files {
                fs::write(
                    here.join(format!("f{i}.rs")),
                    format!(
                        "// round {round} file {i}\n{}",
                        "let x = 1;\n".repeat(i % 40)
                    ),
                )?;
            }
            if round > 0 {
                fs::remove_dir_all(src.join(format!("churn/r{}", round - 1)))?;
            }
            // The round's files, in any order (the daemon numbers a burst as it reads it).
            for i in 0..files {
                let name = format!("f{i}.rs");
                let want = fs::read(here.join(&name))?;
                let there = dst.join(format!("churn/r{round}")).join(&name);
                wait_for_content(&there, &want, Duration::from_secs(120))?;
            }
            if round > 0 {
                let gone = dst.join(format!("churn/r{}", round - 1));
                let deadline = Instant::now() + Duration::from_secs(120);
                while gone.exists() {
                    if Instant::now() > deadline {
                        bail!("{} was not removed on R within 120 s", gone.display());
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            if round == 0 {
                first = rss();
            }
            if (round + 1) % 10 == 0 {
                let (d, c) = rss();
                eprintln!(
                    "   after round {}: RSS daemon {}, client {}",
                    round + 1,
                    mib(d),
                    mib(c)
                );
            }
        }
        Ok((first, rss()))
    })();
    let cexit = client.stop()?;
    let dexit = zd.stop()?;
    let (first, last) = result?;
    Ok(Row {
        zync_note: Some(format!(
            "{} files in {rounds} rounds; RSS after the first → last: daemon {} → {}, client {} → {}",
            rounds * files,
            mib(first.0),
            mib(last.0),
            mib(first.1),
            mib(last.1)
        )),
        rsync_note: Some("n/a (no watch mode)".into()),
        zync_rss: (Some(dexit.max_rss_kib), Some(cexit.max_rss_kib)),
        zync_cpu: (Some(dexit.user + dexit.sys), Some(cexit.user + cexit.sys)),
        ..Row::default()
    })
}

/// KiB as "12.3M", or "?" when unknown.
fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".into(), |k| format!("{:.1}M", k as f64 / 1024.0))
}

fn wait_for_content(path: &Path, want: &[u8], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while fs::read(path).ok().as_deref() != Some(want) {
        if Instant::now() > deadline {
            bail!(
                "{} did not get the saved content within {timeout:?}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// ", N files hashed" when the daemon said (a restart over an unchanged tree should hash none).
fn hashed_note(hashed: Option<u64>) -> String {
    hashed.map_or_else(String::new, |n| format!(", {n} files hashed"))
}

/// Daemon restart over an unchanged tree: time until "startup scan complete".
fn restart(ctx: &Ctx, src: &Path) -> Result<Row> {
    let n = ctx.pick(100_000, 20_000);
    eprintln!("   generating {n} files...");
    workload::small_tree(src, n, SEED)?;
    let state = ctx.dir.join("zync-state");
    let first = Daemon::start(ctx.bins, &state, src)?;
    eprintln!(
        "   first scan (indexing, not timed): {}{}",
        fmt_duration(first.scan_time),
        hashed_note(first.hashed)
    );
    let mut exits = vec![first.stop()?];
    let mut times = vec![];
    for run in 0..ctx.opts.runs {
        let d = Daemon::start(ctx.bins, &state, src)?;
        eprintln!(
            "   run {}: {}{}",
            run + 1,
            fmt_duration(d.scan_time),
            hashed_note(d.hashed)
        );
        times.push(d.scan_time);
        exits.push(d.stop()?);
    }
    Ok(Row {
        zync: median(&times),
        rsync_note: Some("n/a (no daemon index)".into()),
        zync_rss: (median_rss(&exits[1..]), None),
        zync_cpu: (median_cpu(&exits[1..]), None),
        ..Row::default()
    })
}
