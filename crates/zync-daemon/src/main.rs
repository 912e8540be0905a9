//! `zync-daemon`: runs on machine E, indexes and watches directories and serves their changes.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = zync_daemon::Args::parse();
    if let Err(e) = zync_daemon::init_logging(&args.log_level) {
        eprintln!("zync-daemon: {e:#}");
        return ExitCode::from(2);
    }
    match zync_daemon::main_with_args(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zync-daemon: {e:#}");
            ExitCode::FAILURE
        }
    }
}
