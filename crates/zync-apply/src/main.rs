//! `zync-apply`: run on machine E to review and apply changes pushed upstream from R.
//! Exit codes: 0 done, 1 error, 2 bad command line, 3 conflicts left staged (see `--help`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = zync_apply::Cli::parse();
    if let Err(e) = zync_apply::init_logging(&cli.log_level) {
        eprintln!("zync-apply: {e:#}");
        return ExitCode::from(2);
    }
    match zync_apply::run(&cli) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) if zync_apply::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zync-apply: {e:#}");
            ExitCode::FAILURE
        }
    }
}
