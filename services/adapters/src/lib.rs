//! Adapters between payoff and its infrastructure: Apache Kafka (through `rdkafka`) and
//! ScyllaDB or Apache Cassandra (through the `scylla` CQL driver).
//!
//! The ingest, attributor and ledger services build their clients here so that every one
//! of them gets the same durability settings (SPEC §10): producers are idempotent and
//! transactional with `acks=all`, consumers read only committed records and never commit
//! offsets on their own, and CQL statements run at `QUORUM` or `LOCAL_QUORUM`.
//!
//! What this crate must not do: hold business rules (they live in `payoff-core`), create
//! topics or keyspaces behind the caller's back, or retry on its own. It reports failures
//! as [`AdapterError`], which says whether a failure is worth retrying
//! ([`AdapterError::is_retryable`]); the caller decides.
//!
//! # Layout
//!
//! - [`kafka`]: client configuration, transactional producers, `read_committed`
//!   consumers and idempotent topic creation.
//! - [`cql`]: CQL sessions with a durable default consistency, and keyspace creation.
//! - [`error`]: the crate's one error type.
//! - [`topology`]: topic names, record keys and topic settings.
//! - [`progress`]: the attributor's progress markers on the `credits` topic.
//! - [`schema`]: the CQL schema as versioned migrations.

pub mod cql;
pub mod error;
pub mod kafka;
pub mod progress;
pub mod schema;
pub mod topology;

pub use error::{AdapterError, Result};
