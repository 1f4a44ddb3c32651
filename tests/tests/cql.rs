//! CQL plumbing against the real store (Cassandra from `deploy/local`, or ScyllaDB):
//! keyspace creation, prepared writes and reads at QUORUM and LOCAL_QUORUM, exact values.

use anyhow::{Context, Result, ensure};
use payoff_adapters::cql::{self, CqlSettings, Durability, Replication};
use payoff_tests::fixture;
use scylla::client::session::Session;
use scylla::statement::Consistency;

/// Ledger-like rows: (tenant, seq) → (creator, commission in cents).
async fn write_and_read_back(session: &Session, keyspace: &str) -> Result<()> {
    session
        .query_unpaged(
            format!(
                "CREATE TABLE {keyspace}.ledger_entries (tenant text, seq bigint, creator text, \
                 cents bigint, PRIMARY KEY (tenant, seq))"
            ),
            (),
        )
        .await
        .context("create table")?;
    session
        .await_schema_agreement()
        .await
        .context("schema agreement")?;

    let mut insert = session
        .prepare(format!(
            "INSERT INTO {keyspace}.ledger_entries (tenant, seq, creator, cents) VALUES (?, ?, ?, ?)"
        ))
        .await
        .context("prepare insert")?;
    insert.set_consistency(Consistency::Quorum);
    let mut select = session
        .prepare(format!(
            "SELECT seq, creator, cents FROM {keyspace}.ledger_entries WHERE tenant = ?"
        ))
        .await
        .context("prepare select")?;
    select.set_consistency(Consistency::Quorum);

    let expected: Vec<(i64, String, i64)> = (0..10)
        .map(|i| (i, format!("creator-{}", i % 3), 1_000 + 7 * i))
        .collect();
    for (seq, creator, cents) in &expected {
        session
            .execute_unpaged(&insert, ("tenant-a", seq, creator, cents))
            .await
            .context("insert")?;
    }
    // Another tenant's row must not leak into tenant-a's partition.
    session
        .execute_unpaged(&insert, ("tenant-b", 0_i64, "creator-x", 5_i64))
        .await
        .context("insert other tenant")?;
    // Writing the same row again (a redelivery) leaves the same state.
    let (seq, creator, cents) = &expected[4];
    session
        .execute_unpaged(&insert, ("tenant-a", seq, creator, cents))
        .await
        .context("rewrite")?;

    let rows: Vec<(i64, String, i64)> = session
        .execute_unpaged(&select, ("tenant-a",))
        .await
        .context("select")?
        .into_rows_result()
        .context("select returned no rows result")?
        .rows::<(i64, String, i64)>()
        .context("row types")?
        .collect::<Result<_, _>>()
        .context("deserialize rows")?;
    assert_eq!(rows, expected);

    let other: Vec<(i64, String, i64)> = session
        .execute_unpaged(&select, ("tenant-b",))
        .await?
        .into_rows_result()?
        .rows::<(i64, String, i64)>()?
        .collect::<Result<_, _>>()?;
    assert_eq!(other, vec![(0, "creator-x".to_owned(), 5)]);
    Ok(())
}

async fn drop_keyspace(session: &Session, keyspace: &str) -> Result<()> {
    session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await
        .context("drop keyspace")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_prepared_writes_read_back_exactly() -> Result<()> {
    let settings = CqlSettings::new(fixture::cql_nodes());
    assert_eq!(settings.durability, Durability::Quorum);
    let session = cql::connect(&settings).await?;
    let keyspace = fixture::unique_name("payoff_it");
    cql::create_keyspace(&session, &keyspace, &Replication::Simple { factor: 1 }).await?;
    // Creating it again is a no-op, not an error.
    cql::create_keyspace(&session, &keyspace, &Replication::Simple { factor: 1 }).await?;

    let outcome = write_and_read_back(&session, &keyspace).await;
    let dropped = drop_keyspace(&session, &keyspace).await;
    outcome?;
    dropped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_quorum_session_defaults_apply_to_unconfigured_statements() -> Result<()> {
    let settings = CqlSettings::new(fixture::cql_nodes()).with_durability(Durability::LocalQuorum);
    let session = cql::connect(&settings).await?;
    let keyspace = fixture::unique_name("payoff_it");
    cql::create_keyspace(&session, &keyspace, &Replication::Simple { factor: 1 }).await?;

    let outcome = async {
        session
            .query_unpaged(
                format!("CREATE TABLE {keyspace}.kv (k text PRIMARY KEY, v int)"),
                (),
            )
            .await?;
        session.await_schema_agreement().await?;
        // No consistency on the statements: the session's LOCAL_QUORUM default applies.
        let insert = session
            .prepare(format!("INSERT INTO {keyspace}.kv (k, v) VALUES (?, ?)"))
            .await?;
        ensure!(
            insert.get_consistency().is_none(),
            "statement should inherit the session default"
        );
        session.execute_unpaged(&insert, ("answer", 42_i32)).await?;
        let select = session
            .prepare(format!("SELECT v FROM {keyspace}.kv WHERE k = ?"))
            .await?;
        let (v,): (i32,) = session
            .execute_unpaged(&select, ("answer",))
            .await?
            .into_rows_result()?
            .single_row::<(i32,)>()?;
        assert_eq!(v, 42);
        Ok(())
    }
    .await;
    let dropped = drop_keyspace(&session, &keyspace).await;
    outcome?;
    dropped
}
