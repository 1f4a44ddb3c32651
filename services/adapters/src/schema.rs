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
pub const MIGRATIONS: &[Migration] = &[Migration {
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
}];

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
