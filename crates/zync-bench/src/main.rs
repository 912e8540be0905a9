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
    /// Scenarios to run (default: all).
    #[arg(long, num_args = 1.., value_parser = clap::builder::PossibleValuesParser::new(zync_bench::SCENARIOS))]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_is_accepted_and_listed_and_an_unknown_one_is_refused() {
        for name in zync_bench::SCENARIOS {
            let args = Args::try_parse_from(["zync-bench", "--scenario", name]);
            assert!(args.is_ok(), "{name} refused");
        }
        let help = <Args as clap::CommandFactory>::command()
            .render_help()
            .to_string();
        for name in zync_bench::SCENARIOS {
            assert!(help.contains(name), "--help does not list {name}:\n{help}");
        }
        let err = Args::try_parse_from(["zync-bench", "--scenario", "nope"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("invalid value 'nope'"), "{err}");
    }
}
