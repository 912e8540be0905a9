//! `zync-client`: runs on machine R and keeps local directories in step with the daemon on E.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    zync_cli::limit_malloc_arenas();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = zync_client::Args::command().get_matches_from(&argv);
    if let Some(code) = zync_cli::Generate::answer(&matches, zync_client::Args::command()) {
        return code;
    }
    let args = zync_client::Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // A bad config file is a usage error (exit 2), like a bad flag: restarting cannot fix it.
    let args = match args.with_config_file(&argv) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("zync-client: {}", zync_cli::one_line(&e));
            return ExitCode::from(2);
        }
    };
    if let Err(e) = zync_cli::logging::init(
        &args.verbosity.level(args.log_level.as_deref(), "info"),
        false,
    ) {
        eprintln!("zync-client: {}", zync_cli::one_line(&e));
        return ExitCode::from(2);
    }
    if args.status {
        return zync_client::status::main(&args);
    }
    match zync_client::main_with_args(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("zync-client: {}", zync_cli::one_line(&e));
            ExitCode::from(zync_client::error::exit_code(&e))
        }
    }
}
