//! `zync-apply`: run on machine E to review and apply changes pushed upstream from R.
//! Exit codes: 0 done, 1 error, 2 bad command line, 3 files left staged for a say-so
//! (conflicts, control files, content not shown; see `--help`).

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    let matches = match zync_apply::Cli::command().try_get_matches() {
        Ok(matches) => matches,
        // The hidden generation flags stand alone, without the otherwise required subcommand.
        Err(e) if e.kind() == ErrorKind::MissingSubcommand => {
            let relaxed = zync_apply::Cli::command()
                .subcommand_required(false)
                .get_matches();
            return zync_cli::Generate::answer(&relaxed, zync_apply::Cli::command())
                .unwrap_or_else(|| e.exit());
        }
        Err(e) => e.exit(),
    };
    if let Some(code) = zync_cli::Generate::answer(&matches, zync_apply::Cli::command()) {
        return code;
    }
    let cli = zync_apply::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let cli = match cli.with_config_file(&matches) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("zync-apply: {}", zync_cli::one_line(&e));
            return ExitCode::from(2);
        }
    };
    if let Err(e) =
        zync_cli::logging::init(&cli.verbosity.level(cli.log_level.as_deref(), "warn"), true)
    {
        eprintln!("zync-apply: {}", zync_cli::one_line(&e));
        return ExitCode::from(2);
    }
    match zync_apply::run(&cli) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) if zync_apply::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // Error messages may quote paths and ids that R chose: one_line makes them visible.
            eprintln!("zync-apply: {}", zync_cli::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
