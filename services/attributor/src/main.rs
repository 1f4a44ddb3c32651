//! `payoff-attributor`: parses configuration, starts telemetry, runs the service.

use clap::Parser;
use payoff_attributor::{AttributorError, Config, config::LogFormat};
use payoff_runtime::telemetry;

/// The allocator every payoff binary uses ([`payoff_runtime::Allocator`]).
#[global_allocator]
static ALLOCATOR: payoff_runtime::Allocator = payoff_runtime::Allocator;

/// Exit code for a bad configuration (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let format = match config.log_format {
        LogFormat::Json => telemetry::LogFormat::Json,
        LogFormat::Text => telemetry::LogFormat::Text,
    };
    telemetry::init_logging(format, &config.log);
    let shutdown = payoff_runtime::shutdown::on_signal();
    let drain = config.drain_timeout;
    let run = payoff_attributor::run(config, shutdown.clone());
    tokio::pin!(run);
    let result = tokio::select! {
        r = &mut run => r,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(drain).await;
        } => Err(AttributorError::Thread("drain timeout passed; exiting with the transaction open (it will be aborted)".into())),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e @ AttributorError::Config(_)) => {
            eprintln!("payoff-attributor: {e}");
            std::process::ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            tracing::error!(error = %e, "attributor failed");
            eprintln!("payoff-attributor: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
