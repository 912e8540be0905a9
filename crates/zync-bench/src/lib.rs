//! zync-bench: zync against rsync on the same generated data, in the same run, with ratios.
//! Not a test: it asserts nothing about timings; it prints one table of medians.

pub mod meter;
pub mod process;
pub mod proxy;
pub mod report;
pub mod rsync;
pub mod scenarios;
pub mod workload;
pub mod zync;

use std::path::PathBuf;

use anyhow::{bail, Result};

/// What to run; see `zync-bench --help`.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub latency_ms: u64,
    pub scenarios: Vec<String>,
    pub runs: usize,
    pub bin_dir: Option<PathBuf>,
}

/// Every scenario, in the order the table lists them.
pub const SCENARIOS: [&str; 9] = [
    "initial-small",
    "initial-shared",
    "big-file",
    "edit-in-big",
    "noop",
    "watched-burst",
    "latency",
    "soak",
    "restart",
];

/// Runs the chosen scenarios and returns the table.
///
/// # Errors
/// When rsync is missing, an unknown scenario is named, or a tool fails.
pub fn run(opts: &Options) -> Result<String> {
    for s in &opts.scenarios {
        if !SCENARIOS.contains(&s.as_str()) {
            bail!("unknown scenario {s:?}; known: {}", SCENARIOS.join(" "));
        }
    }
    let rsync_version = rsync::check()?;
    let bins = zync::locate(opts.bin_dir.as_deref())?;
    let work = tempfile::Builder::new().prefix("zync-bench-").tempdir()?;
    eprintln!("{rsync_version}; work dir {}", work.path().display());
    let mut rows = Vec::new();
    for name in SCENARIOS {
        if opts.scenarios.is_empty() || opts.scenarios.iter().any(|s| s == name) {
            eprintln!("== {name}");
            let dir = work.path().join(name);
            std::fs::create_dir_all(&dir)?;
            let row = scenarios::run(
                name,
                &scenarios::Ctx {
                    bins: &bins,
                    opts,
                    dir: &dir,
                },
            )?;
            // Trees of small files are deleted when the whole benchmark ends (`work` goes
            // then), not after their scenario: on ext4, creating files for minutes after many
            // were deleted is several times slower, for both tools, which made the scenario
            // after a small-file one time the file system. Big files go at once
            // (`scenarios::run`).
            rows.push(row);
        }
    }
    Ok(format!(
        "zync vs rsync ({}; {} run(s) each; proxy delay {} ms each way)\n\n{}\n\
         CPU time, peak memory and bytes from R to E (medians; per timed run, each side of each tool)\n\n{}",
        if opts.quick {
            "quick sizes"
        } else {
            "full sizes"
        },
        opts.runs,
        opts.latency_ms,
        report::format_table(&rows),
        report::format_costs(&rows)
    ))
}
