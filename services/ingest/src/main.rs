//! `payoff-ingest`: parses configuration, starts telemetry, runs the service.

use clap::Parser;
use payoff_ingest::{Config, IngestError, config::LogFormat};
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
    match payoff_ingest::run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e @ IngestError::Config(_)) => {
            eprintln!("payoff-ingest: {e}");
            std::process::ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            tracing::error!(error = %e, "ingest failed");
            eprintln!("payoff-ingest: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
