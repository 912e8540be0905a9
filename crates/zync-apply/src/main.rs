//! `zync-apply`: run on machine E to review and apply changes pushed upstream from R.
//! Exit codes: 0 done, 1 error, 2 bad command line, 3 conflicts left staged (see `--help`).

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    let matches = zync_apply::Cli::command().get_matches();
    let cli = zync_apply::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let cli = match cli.with_config_file(&matches) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("zync-apply: {e:#}");
            return ExitCode::from(2);
        }
    };
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
