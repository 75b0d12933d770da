//! The `matchmaker` binary: a shim over the library (parse, telemetry,
//! dispatch, exit code) so that everything else is testable.

use clap::Parser;
use matchmaker::{Cli, LogFormat};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    matchmaker::init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.log_format == LogFormat::Json;
    let result = runtime.block_on(cli.command.run());
    // A scoring task abandoned by a hard stop must not delay the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let message = e.to_string().replace('\n', " ");
            if json {
                eprintln!(
                    "{}",
                    serde_json::json!({"level": "ERROR", "message": "exiting", "error": message})
                );
            } else {
                eprintln!("error: {message}");
            }
            ExitCode::FAILURE
        }
    }
}
