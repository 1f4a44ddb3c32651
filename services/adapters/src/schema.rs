//! The CQL schema as versioned migrations, applied in order and recorded in
//! `<keyspace>.schema_migrations`, so `payoff migrate` is safe to run any number of times
//! and an upgrade applies only what is new.
//!
//! Partition keys keep partitions bounded: ledger entries are bucketed per tenant, creator
//! and month.

use scylla::client::session::Session;

use crate::{
    cql::validate_identifier,
    error::{AdapterError, Result},
};

/// One schema migration: its version, a name, and its CQL (`{ks}` stands for the keyspace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Version, strictly increasing.
    pub version: i32,
    /// What it does.
    pub name: &'static str,
    /// Statements, run in order; each idempotent (`IF NOT EXISTS`).
    pub statements: &'static [&'static str],
}

/// Every migration, oldest first.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "ledger entries by creator and month, consumer offsets",
        statements: &[
            "CREATE TABLE IF NOT EXISTS {ks}.ledger_entries (
            tenant text, creator text, month text,
            occurred_at timestamp, entry_id text,
            campaign text, kind text, amount decimal, currency text, hold_until timestamp,
            cause text, credit text, refers_to text, plan text, period text,
            order_id text, lead_id text, note text,
            PRIMARY KEY ((tenant, creator, month), occurred_at, entry_id)
        ) WITH CLUSTERING ORDER BY (occurred_at ASC, entry_id ASC)",
            "CREATE TABLE IF NOT EXISTS {ks}.consumer_offsets (
            consumer_group text, topic text, partition int, next_offset bigint,
            PRIMARY KEY ((consumer_group, topic), partition)
        )",
        ],
    },
    Migration {
        version: 2,
        name: "ledger projections: entries by creator, campaign and order as protobuf, tier changes, KPI deltas, fold progress",
        statements: &[
            // Entries as `payoff.v1.LedgerEntry` bytes (lossless), keyed for each query.
            // Times are milliseconds since the epoch; months are "YYYY-MM" (UTC).
            "CREATE TABLE IF NOT EXISTS {ks}.entries_by_creator (
            tenant text, creator text, month text, occurred_at bigint, entry_id text,
            campaign text, body blob,
            PRIMARY KEY ((tenant, creator, month), occurred_at, entry_id)
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.entries_by_campaign (
            tenant text, campaign text, month text, occurred_at bigint, entry_id text,
            creator text, body blob,
            PRIMARY KEY ((tenant, campaign, month), occurred_at, entry_id)
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.creator_months (
            tenant text, creator text, month text,
            PRIMARY KEY ((tenant, creator), month)
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.campaign_months (
            tenant text, campaign text, month text,
            PRIMARY KEY ((tenant, campaign), month)
        )",
            "CREATE TABLE IF NOT EXISTS {ks}.order_entries (
            tenant text, order_id text, entry_id text, body blob,
            PRIMARY KEY ((tenant, order_id), entry_id)
        )",
            // Credits as `payoff.v1.Credit` bytes, with their explanation.
            "CREATE TABLE IF NOT EXISTS {ks}.order_credits (
            tenant text, order_id text, credit_id text, body blob,
            PRIMARY KEY ((tenant, order_id), credit_id)
        )",
            // Net order and revenue changes of tier progress (revenue as a decimal string).
            "CREATE TABLE IF NOT EXISTS {ks}.tier_changes (
            tenant text, campaign text, creator text, period text, at bigint,
            change_id text, orders bigint, revenue text,
            PRIMARY KEY ((tenant, campaign, creator, period), at, change_id)
        )",
            // KPI counter changes as JSON (exact decimal strings).
            "CREATE TABLE IF NOT EXISTS {ks}.kpi_deltas (
            tenant text, campaign text, month text, at bigint, delta_id text, body text,
            PRIMARY KEY ((tenant, campaign, month), at, delta_id)
        )",
            // How many credits of a partition have been folded and stored: the fold is
            // deterministic, so a restart re-folds and stores only what comes after.
            "CREATE TABLE IF NOT EXISTS {ks}.fold_progress (
            consumer_group text, topic text, partition int, folded bigint,
            PRIMARY KEY ((consumer_group, topic), partition)
        )",
        ],
    },
    Migration {
        version: 3,
        name: "projection marks: the fold batch that last wrote a creator's or campaign's entries, per credits partition",
        statements: &[
            // Read before a creator's (or campaign's) entries: while the marks are unchanged
            // the ledger's query cache holds every entry; they are written after the entries.
            "CREATE TABLE IF NOT EXISTS {ks}.projection_marks (
            tenant text, scope text, id text, source int, mark bigint,
            PRIMARY KEY ((tenant, scope, id), source)
        )",
        ],
    },
];

/// What [`migrate`] did with one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Applied now.
    Now(i32, &'static str),
    /// Already applied earlier.
    Before(i32, &'static str),
}

/// Applies every migration not yet recorded in `keyspace` (which must exist).
pub async fn migrate(session: &Session, keyspace: &str) -> Result<Vec<Applied>> {
    validate_identifier(keyspace)?;
    let run = |cql: String, op: &'static str| async move {
        session
            .query_unpaged(cql, ())
            .await
            .map_err(|e| AdapterError::cql(op, e))?;
        session
            .await_schema_agreement()
            .await
            .map_err(|e| AdapterError::cql(op, scylla::errors::ExecutionError::from(e)))?;
        Ok::<_, AdapterError>(())
    };
    run(
        format!("CREATE TABLE IF NOT EXISTS {keyspace}.schema_migrations (version int PRIMARY KEY, name text, applied_at timestamp)"),
        "create schema_migrations",
    )
    .await?;
    let rows = session
        .query_unpaged(
            format!("SELECT version FROM {keyspace}.schema_migrations"),
            (),
        )
        .await
        .map_err(|e| AdapterError::cql("read schema_migrations", e))?
        .into_rows_result()
        .map_err(|e| AdapterError::Config(format!("schema_migrations: {e}")))?;
    let done: Vec<i32> = rows
        .rows::<(i32,)>()
        .map_err(|e| AdapterError::Config(format!("schema_migrations: {e}")))?
        .filter_map(|r| r.ok().map(|(v,)| v))
        .collect();
    let mut out = Vec::new();
    for m in MIGRATIONS {
        if done.contains(&m.version) {
            out.push(Applied::Before(m.version, m.name));
            continue;
        }
        for statement in m.statements {
            run(statement.replace("{ks}", keyspace), "apply migration").await?;
        }
        session
            .query_unpaged(
                format!("INSERT INTO {keyspace}.schema_migrations (version, name, applied_at) VALUES (?, ?, toTimestamp(now()))"),
                (m.version, m.name),
            )
            .await
            .map_err(|e| AdapterError::cql("record migration", e))?;
        out.push(Applied::Now(m.version, m.name));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].version < w[1].version));
        assert!(
            MIGRATIONS
                .iter()
                .all(|m| m.statements.iter().all(|s| s.contains("IF NOT EXISTS")))
        );
    }
}
