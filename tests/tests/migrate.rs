//! `payoff migrate` against the real Kafka and Cassandra: creates the topics with the
//! asked partition counts and the schema, is safe to run again, and refuses topics whose
//! partition counts would break co-partitioning.

use std::time::Duration;

use anyhow::Result;
use payoff_adapters::{
    cql::{self, CqlSettings},
    kafka,
    topology::Topics,
};
use payoff_cli::migrate::{self, MigrateArgs};
use payoff_tests::fixture;

fn args(prefix: &str, keyspace: &str, partitions: i32) -> MigrateArgs {
    MigrateArgs {
        kafka_brokers: Some(fixture::kafka_brokers()),
        scylla_nodes: Some(fixture::cql_nodes().join(",")),
        topic_prefix: prefix.to_owned(),
        partitions,
        replication: 1,
        keyspace: keyspace.to_owned(),
        cql_replication: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_topics_and_schema_and_is_idempotent() -> Result<()> {
    let prefix = format!("{}.", fixture::unique_name("migrate"));
    let keyspace = fixture::unique_name("ks");
    migrate::run(&args(&prefix, &keyspace, 3)).await?;
    migrate::run(&args(&prefix, &keyspace, 3)).await?;

    let topics = Topics::with_prefix(&prefix);
    let brokers = fixture::kafka_brokers();
    let counts = tokio::task::spawn_blocking(move || {
        kafka::partition_counts(
            &brokers,
            &[
                &topics.clicks,
                &topics.orders,
                &topics.signups,
                &topics.credits,
                &topics.programs,
            ],
            Duration::from_secs(10),
        )
    })
    .await??;
    let partitions: Vec<Option<i32>> = counts.into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        partitions,
        vec![Some(3), Some(3), Some(3), Some(3), Some(1)]
    );

    let session = cql::connect(&CqlSettings::new(fixture::cql_nodes())).await?;
    let rows = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?",
            (keyspace.as_str(),),
        )
        .await?
        .into_rows_result()?;
    let mut tables: Vec<String> = rows
        .rows::<(String,)>()?
        .map(|r| r.map(|(t,)| t))
        .collect::<Result<_, _>>()?;
    tables.sort();
    // Every table a migration creates, plus the migrations' own record.
    let mut want: Vec<String> = payoff_adapters::schema::MIGRATIONS
        .iter()
        .flat_map(|m| m.statements.iter())
        .filter_map(|st| st.split("CREATE TABLE IF NOT EXISTS {ks}.").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .chain(["schema_migrations".to_owned()])
        .collect();
    want.sort();
    assert!(
        want.contains(&"entries_by_creator".to_owned()) && want.len() > 5,
        "{want:?}"
    );
    assert_eq!(tables, want);
    let rows = session
        .query_unpaged(
            format!("SELECT version FROM {keyspace}.schema_migrations"),
            (),
        )
        .await?
        .into_rows_result()?;
    assert_eq!(
        rows.rows_num(),
        payoff_adapters::schema::MIGRATIONS.len(),
        "each migration recorded once"
    );

    // Another partition count for the same topics would break co-partitioning: refused.
    let err = migrate::run(&args(&prefix, &keyspace, 5))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("has 3 partitions, 5 wanted"),
        "{err:#}"
    );
    session
        .query_unpaged(format!("DROP KEYSPACE {keyspace}"), ())
        .await?;
    Ok(())
}
