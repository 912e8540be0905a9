//! `zync-daemon`: runs on machine E, indexes and watches directories and serves their changes.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    zync_cli::limit_malloc_arenas();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = zync_daemon::Args::command().get_matches_from(&argv);
    if let Some(code) = zync_cli::Generate::answer(&matches, zync_daemon::Args::command()) {
        return code;
    }
    let args = zync_daemon::Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // A bad config file is a usage error (exit 2), like a bad flag: restarting cannot fix it.
    let args = match args.with_config_file(&argv) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("zync-daemon: {}", zync_cli::one_line(&e));
            return ExitCode::from(2);
        }
    };
    if let Err(e) = zync_cli::logging::init(
        &args.verbosity.level(args.log_level.as_deref(), "info"),
        false,
    ) {
        eprintln!("zync-daemon: {}", zync_cli::one_line(&e));
        return ExitCode::from(2);
    }
    match zync_daemon::main_with_args(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zync-daemon: {}", zync_cli::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
