//! `zync-client`: runs on machine R and keeps local directories in step with the daemon on E.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = zync_client::Args::parse();
    if let Err(e) = zync_client::init_logging(&args.log_level) {
        eprintln!("zync-client: {e:#}");
        return ExitCode::from(2);
    }
    match zync_client::main_with_args(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zync-client: {e:#}");
            ExitCode::FAILURE
        }
    }
}
