//! `zync-bench`: times zync's real binaries against an rsync daemon on the same generated data
//! and prints one table. Run with `cargo run --release -p zync-bench -- --quick`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Benchmark zync against rsync on deterministic workloads, both on 127.0.0.1.
#[derive(Parser, Debug)]
#[command(name = "zync-bench")]
struct Args {
    /// Smaller workloads and one run each, so it finishes in a minute or two.
    #[arg(long)]
    quick: bool,
    /// Delay added by the proxy in each direction, standing for a real tunnel.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Scenarios to run (default: all): initial-small big-file edit-in-big noop latency soak
    /// restart.
    #[arg(long, num_args = 1..)]
    scenario: Vec<String>,
    /// Runs per scenario; the table shows medians (default 3, or 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Directory holding zync-daemon and zync-client (default: build them with cargo).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let opts = zync_bench::Options {
        quick: args.quick,
        latency_ms: args.latency_ms,
        scenarios: args.scenario,
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1),
        bin_dir: args.bin_dir,
    };
    match zync_bench::run(&opts) {
        Ok(table) => {
            println!("{table}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("zync-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
