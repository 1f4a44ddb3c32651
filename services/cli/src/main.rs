//! `payoff`: the command line of payoff. Thin: parses arguments and calls the library.

use clap::{Parser, Subcommand};
use payoff_cli::{dev, ledger, loadgen, migrate, replay};

/// The allocator every payoff binary uses ([`payoff_runtime::Allocator`]).
#[global_allocator]
static ALLOCATOR: payoff_runtime::Allocator = payoff_runtime::Allocator;

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
    /// Run ingest, attribution and the ledger in one process with a live summary. With no
    /// Kafka or Cassandra given, everything is in memory (nothing is durable).
    ///
    /// Example: payoff dev
    Dev(dev::DevArgs),
    /// Run the whole pipeline offline over an event log and print the ledger, balances,
    /// tier progress and KPIs as JSON (or, with --diff, the per-creator payout difference
    /// under another program).
    ///
    /// Example: payoff replay --program deploy/examples/program.json --events
    /// deploy/examples/events.jsonl
    Replay(replay::ReplayArgs),
    /// Create payoff's Kafka topics and apply the CQL schema migrations (safe to run
    /// again; checks that co-partitioned topics agree on their partition count).
    ///
    /// Example: payoff migrate --kafka-brokers 127.0.0.1:9092 --scylla-nodes 127.0.0.1:9042
    Migrate(migrate::MigrateArgs),
    /// Simulate a storefront: send a realistic, seeded stream of events to ingest at a
    /// fixed rate or as fast as possible; report progress, then the achieved rate, errors
    /// by status and latency percentiles; --record writes what was sent for replay.
    ///
    /// Example: payoff loadgen --api-key dev-ingest-key --rate 500 --duration 30s --record
    /// sent.jsonl
    Loadgen(loadgen::LoadgenArgs),
    /// Operate the ledger's projections.
    #[command(subcommand)]
    Ledger(LedgerCommand),
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// Rebuild the projections from the `credits` topic (every partition from its
    /// beginning, folded as the ledger folds it). Rows are keyed by their cause: into the
    /// live keyspace nothing right changes; into a new keyspace the same rows appear.
    ///
    /// Example: payoff ledger rebuild --keyspace payoff_rebuilt
    Rebuild(ledger::RebuildArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Replay(args) => replay::run(args),
        Command::Dev(args) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(dev::run(args))),
        Command::Migrate(args) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(migrate::run(args))),
        Command::Loadgen(args) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(loadgen::command(args))),
        Command::Ledger(LedgerCommand::Rebuild(args)) => tokio::runtime::Runtime::new()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(ledger::rebuild(args))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("payoff: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
