//! `payoff`: the command line of payoff. Thin: parses arguments and calls the library.

use clap::{Parser, Subcommand};
use payoff_cli::replay;

/// payoff: real-time conversion tracking and commission ledger for performance-based
/// influencer marketing.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole pipeline offline over an event log and print the ledger, balances,
    /// tier progress and KPIs as JSON (or, with --diff, the per-creator payout difference
    /// under another program).
    ///
    /// Example: payoff replay --program deploy/examples/program.json --events
    /// deploy/examples/events.jsonl
    Replay(replay::ReplayArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Replay(args) => replay::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("payoff: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
