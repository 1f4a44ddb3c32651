//! `payoff ledger rebuild`: rebuilds the ledger's projections in Cassandra / ScyllaDB from
//! the `credits` topic (the source of truth), with the same fold the ledger runs.

use anyhow::bail;

/// Options of `payoff ledger rebuild`.
#[derive(Debug, Clone, clap::Args)]
pub struct RebuildArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "PAYOFF_KAFKA_BROKERS", default_value = "")]
    pub kafka_brokers: String,
    /// CQL contact points (ScyllaDB or Cassandra), comma-separated host:port.
    #[arg(long, env = "PAYOFF_SCYLLA_NODES", default_value = "")]
    pub scylla_nodes: String,
    /// Keyspace to write (run `payoff migrate` for it first). Rebuilding into the live
    /// keyspace changes nothing that is right; into a new one it gives the same rows.
    #[arg(long, env = "PAYOFF_KEYSPACE", default_value = "payoff")]
    pub keyspace: String,
    /// Prefix of every topic name.
    #[arg(long, env = "PAYOFF_TOPIC_PREFIX", default_value = "payoff.")]
    pub topic_prefix: String,
    /// The ledger's consumer group, whose fold progress the rebuild records.
    #[arg(long, env = "PAYOFF_LEDGER_GROUP", default_value = "payoff-ledger")]
    pub group_id: String,
}

/// Runs `payoff ledger rebuild`, printing progress per partition.
pub async fn rebuild(args: &RebuildArgs) -> anyhow::Result<()> {
    if args.kafka_brokers.trim().is_empty() || args.scylla_nodes.trim().is_empty() {
        bail!(
            "give --kafka-brokers and --scylla-nodes (or PAYOFF_KAFKA_BROKERS / PAYOFF_SCYLLA_NODES)"
        );
    }
    let what = payoff_ledger::rebuild::Rebuild {
        kafka_brokers: args.kafka_brokers.clone(),
        scylla_nodes: args.scylla_nodes.clone(),
        keyspace: args.keyspace.clone(),
        topic_prefix: args.topic_prefix.clone(),
        group_id: args.group_id.clone(),
    };
    let report = payoff_ledger::rebuild::rebuild(&what, |p, n| {
        eprintln!("payoff ledger rebuild: partition {p}: {n} credits folded");
    })
    .await?;
    let (credits, entries) = report
        .iter()
        .fold((0, 0), |(c, e), (_, pc, pe)| (c + pc, e + pe));
    println!(
        "rebuilt {} partitions into keyspace {}: {credits} credits, {entries} ledger entries",
        report.len(),
        args.keyspace
    );
    Ok(())
}
