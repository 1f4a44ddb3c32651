//! `payoff replay`: the whole pipeline offline, and the what-if diff.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use payoff_core::{
    engine::{Engine, Report},
    ids::CreatorId,
    money::Currency,
    program::ProgramHistory,
    time::Timestamp,
};
use rust_decimal::Decimal;
use serde::Serialize;

use crate::input;

/// Options of `payoff replay`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    /// Program file(s): canonical proto3 JSON of payoff.v1.Program, one object or an
    /// array of versions. Repeat the flag for more files.
    #[arg(long = "program", required = true, value_name = "P.json")]
    pub programs: Vec<PathBuf>,
    /// Event log: one payoff.v1.Event per line (canonical proto3 JSON).
    #[arg(long, value_name = "E.jsonl")]
    pub events: PathBuf,
    /// Report the ledger as it stood at this instant (RFC 3339). Default: the last event's
    /// time.
    #[arg(long, value_name = "RFC3339")]
    pub as_of: Option<String>,
    /// What-if: also run this program over the same events and print, per creator and
    /// currency, the payout difference instead of the report.
    #[arg(long, value_name = "OTHER.json")]
    pub diff: Option<PathBuf>,
    /// Write the JSON here instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Salt for hashing raw IPs and user agents found in the events (as ingest would).
    #[arg(long, default_value = "replay", env = "PAYOFF_PII_SALT")]
    pub salt: String,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Feeds every event of `path` through an engine for `programs`. Stops at the first bad
/// line with its number, field and rule.
pub fn run_engine(
    programs: ProgramHistory,
    path: &Path,
    salt: &[u8],
    quiet: bool,
) -> anyhow::Result<(Engine, Timestamp)> {
    let (events, size) = input::Events::open(path, salt)?;
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(size)
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} replay {bar:30} {bytes}/{total_bytes} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut engine = Engine::new(programs);
    let mut last = Timestamp::from_millis(0);
    let mut events = events;
    let mut count = 0u64;
    while let Some(event) = events.next() {
        let event = event.with_context(|| format!("{}", path.display()))?;
        last = last.max(event.occurred_at);
        engine.push(event);
        count += 1;
        if count.is_multiple_of(4096) {
            bar.set_position(events.bytes);
            bar.set_message(format!("{count} events"));
        }
    }
    engine.finish();
    bar.finish_and_clear();
    Ok((engine, last))
}

/// One creator's payout under two programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayoutDiff {
    /// Creator.
    pub creator: CreatorId,
    /// Currency.
    pub currency: Currency,
    /// Earned (pending + approved) under the base program.
    pub base: Decimal,
    /// Earned under the other program.
    pub what_if: Decimal,
    /// `what_if − base`.
    pub difference: Decimal,
}

/// Per-creator earnings difference between two reports.
pub fn diff(base: &Report, other: &Report) -> Vec<PayoutDiff> {
    let mut rows: BTreeMap<(CreatorId, Currency), (Decimal, Decimal)> = BTreeMap::new();
    for b in &base.balances {
        rows.entry((b.creator.clone(), b.currency)).or_default().0 +=
            b.pending.amount + b.approved.amount;
    }
    for b in &other.balances {
        rows.entry((b.creator.clone(), b.currency)).or_default().1 +=
            b.pending.amount + b.approved.amount;
    }
    rows.into_iter()
        .map(|((creator, currency), (base, what_if))| PayoutDiff {
            creator,
            currency,
            base,
            what_if,
            difference: what_if - base,
        })
        .collect()
}

/// Runs `payoff replay`.
pub fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let programs = input::programs(&args.programs)?;
    let as_of = args
        .as_of
        .as_deref()
        .map(|t| {
            Timestamp::parse_rfc3339(t)
                .with_context(|| format!("--as-of {t:?} is not an RFC 3339 instant"))
        })
        .transpose()?;
    let salt = args.salt.as_bytes();
    let (engine, last) = run_engine(programs, &args.events, salt, args.quiet)?;
    let as_of = as_of.unwrap_or(last);
    let report = engine.report(as_of);
    let json = match &args.diff {
        None => serde_json::to_string_pretty(&report)?,
        Some(other) => {
            let other_programs = input::programs(&[other])?;
            let (other_engine, _) = run_engine(other_programs, &args.events, salt, args.quiet)?;
            serde_json::to_string_pretty(&diff(&report, &other_engine.report(as_of)))?
        }
    };
    match &args.out {
        Some(path) => std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{json}")?;
        }
    }
    Ok(())
}
