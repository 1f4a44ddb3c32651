//! `payoff migrate`: creates payoff's Kafka topics and applies the CQL schema migrations.
//! Safe to run any number of times; refuses to go on when an existing topic has another
//! partition count than co-partitioning needs.

use std::time::Duration;

use anyhow::{Context, bail};
use payoff_adapters::{
    cql::{self, CqlSettings, Replication},
    kafka,
    schema::{self, Applied},
    topology::Topics,
};

/// Options of `payoff migrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "PAYOFF_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// CQL contact points (ScyllaDB or Cassandra), comma-separated host:port.
    #[arg(long, env = "PAYOFF_SCYLLA_NODES")]
    pub scylla_nodes: Option<String>,
    /// Prefix of every topic name.
    #[arg(long, env = "PAYOFF_TOPIC_PREFIX", default_value = "payoff.")]
    pub topic_prefix: String,
    /// Partitions of the event and credit topics (fixed once created; more partitions
    /// allow more attributor and ledger instances).
    #[arg(long, default_value_t = 12)]
    pub partitions: i32,
    /// Replication factor of the topics (3 in production; 1 on a single local broker).
    #[arg(long, default_value_t = 1)]
    pub replication: i32,
    /// Keyspace.
    #[arg(long, env = "PAYOFF_KEYSPACE", default_value = "payoff")]
    pub keyspace: String,
    /// Keyspace replication factor (SimpleStrategy; 3 in production).
    #[arg(long, default_value_t = 1)]
    pub cql_replication: u32,
}

/// Runs `payoff migrate`, printing what it does.
pub async fn run(args: &MigrateArgs) -> anyhow::Result<()> {
    if args.kafka_brokers.is_none() && args.scylla_nodes.is_none() {
        bail!(
            "nothing to migrate: give --kafka-brokers and/or --scylla-nodes (or PAYOFF_KAFKA_BROKERS / PAYOFF_SCYLLA_NODES)"
        );
    }
    if args.replication < 3 || args.cql_replication < 3 {
        eprintln!(
            "payoff migrate: note: replication below 3 does not survive the loss of a broker or node; use 3 in production"
        );
    }
    if let Some(brokers) = &args.kafka_brokers {
        let topics = Topics::with_prefix(&args.topic_prefix);
        let specs = topics.specs(args.partitions, args.replication);
        kafka::ensure_topics(brokers, &specs, Duration::from_secs(30))
            .await
            .context("create topics")?;
        let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
        let brokers = brokers.clone();
        let counts = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            kafka::partition_counts(&brokers, &refs, Duration::from_secs(10))
        })
        .await??;
        for spec in &specs {
            let found = counts
                .iter()
                .find(|(n, _)| n == &spec.name)
                .and_then(|(_, c)| *c);
            match found {
                Some(n) if n == spec.partitions => {
                    println!("topic {} ({n} partitions): ok", spec.name)
                }
                Some(n) => bail!(
                    "topic {} has {n} partitions, {} wanted: co-partitioned topics must agree; recreate it or pass --partitions {n}",
                    spec.name,
                    spec.partitions
                ),
                None => bail!("topic {} does not exist after creation", spec.name),
            }
        }
    }
    if let Some(nodes) = &args.scylla_nodes {
        let session = cql::connect(&CqlSettings::from_node_list(nodes))
            .await
            .context("connect to CQL")?;
        cql::create_keyspace(
            &session,
            &args.keyspace,
            &Replication::Simple {
                factor: args.cql_replication,
            },
        )
        .await
        .context("create keyspace")?;
        println!("keyspace {}: ok", args.keyspace);
        for applied in schema::migrate(&session, &args.keyspace)
            .await
            .context("apply migrations")?
        {
            match applied {
                Applied::Now(v, name) => println!("migration {v} ({name}): applied"),
                Applied::Before(v, name) => println!("migration {v} ({name}): already applied"),
            }
        }
    }
    Ok(())
}
