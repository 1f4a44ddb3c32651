//! The `payoff` command line, as a library so that tests drive it in-process.
//!
//! Commands:
//! - `dev`: ingest, attribution and the ledger in one process (in memory by default),
//!   with a live summary.
//!
//! - `replay`: runs the whole pipeline (validation, attribution, commission, ledger,
//!   projections, KPIs) offline over a program file and an event log, with the same
//!   `payoff-core` the services run, and writes the ledger, balances, tier progress and
//!   KPIs as JSON in a stable order; `--diff` compares payouts under another program.
//!
//! - `loadgen`: a simulated storefront (seeded, realistic funnel) sending events to any
//!   ingest endpoint at a fixed rate or as fast as possible, with progress, a summary of
//!   rate, errors and latency, and a record of what was sent for `replay`.
//!
//! - `ledger rebuild`: rebuilds the ledger's projections from the `credits` topic.
//!
//! - `migrate`: creates the Kafka topics (checking co-partitioned partition counts) and
//!   applies the CQL schema migrations; safe to run again.
//!
//! What it must not do: hold rules of its own; replay never talks to Kafka or the store.
//!
//! # Layout
//! - `input`: reading program and event files (canonical proto3 JSON), with line-numbered
//!   errors.
//! - `replay`: the replay and what-if commands.
//! - `migrate`: topics and schema.

pub mod dev;
pub mod input;
pub mod ledger;
pub mod loadgen;
pub mod migrate;
pub mod replay;
