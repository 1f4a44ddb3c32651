//! Rebuilding the projections from Kafka: every `credits` partition is read from its
//! beginning to its end, folded exactly as the running ledger folds it, and every row is
//! written (again). Rows are keyed by their cause, so into the live keyspace a rebuild
//! changes nothing, and into an empty keyspace it gives the same rows the ledger wrote.

use std::{sync::Arc, sync::RwLock, time::Duration};

use payoff_adapters::{
    cql::{self, CqlSettings},
    kafka as adapters,
    progress::Progress,
    topology::Topics,
};
use payoff_proto::{convert::credit_from_proto, v1};
use prost::Message as _;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
    error::KafkaError,
};

use crate::{
    error::LedgerError,
    fold::{Fold, Input, Programs},
    pipeline::{ProgramFeed, RecordKind, record_kind},
    store::{CqlStore, Store},
};

/// Rows are written in batches of this many folded credits.
const BATCH: usize = 2_000;

/// What to rebuild.
#[derive(Debug, Clone)]
pub struct Rebuild {
    /// Kafka bootstrap servers.
    pub kafka_brokers: String,
    /// CQL contact points (comma-separated).
    pub scylla_nodes: String,
    /// Keyspace (migrated).
    pub keyspace: String,
    /// Prefix of the topic names.
    pub topic_prefix: String,
    /// The ledger's consumer group (whose fold progress is recorded).
    pub group_id: String,
}

/// What a rebuild did, per partition: (partition, credits folded, ledger entries).
pub type RebuildReport = Vec<(i32, u64, u64)>;

/// Rebuilds every partition; `progress` is called after each batch with (partition,
/// credits folded so far).
pub async fn rebuild(
    what: &Rebuild,
    mut progress: impl FnMut(i32, u64),
) -> Result<RebuildReport, LedgerError> {
    let session = cql::connect(&CqlSettings::from_node_list(&what.scylla_nodes))
        .await
        .map_err(LedgerError::Store)?;
    let store = Store::Cql(Box::new(
        CqlStore::new(Arc::new(session), &what.keyspace).await?,
    ));
    let topics = Topics::with_prefix(&what.topic_prefix);
    let programs = RwLock::new(Programs::default());
    ProgramFeed::new(&what.kafka_brokers, &topics.programs)?
        .poll(&programs, true)
        .await?;
    let counts = adapters::partition_counts(
        &what.kafka_brokers,
        &[&topics.credits],
        Duration::from_secs(30),
    )
    .map_err(|e| LedgerError::Kafka(e.to_string()))?;
    let partitions = counts
        .first()
        .and_then(|(_, n)| *n)
        .ok_or_else(|| LedgerError::Kafka(format!("topic {} does not exist", topics.credits)))?;
    let mut report = Vec::new();
    for p in 0..partitions {
        let mut config: ClientConfig = adapters::read_committed_consumer_config(
            &what.kafka_brokers,
            "payoff-ledger-rebuild",
            adapters::StartFrom::Earliest,
        )
        .map_err(|e| LedgerError::Kafka(e.to_string()))?;
        config.set("enable.partition.eof", "true");
        let consumer: StreamConsumer<adapters::QuietEof> = config
            .create_with_context(adapters::QuietEof)
            .map_err(|e| LedgerError::Kafka(format!("rebuild reader: {e}")))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topics.credits, p, Offset::Beginning)
            .map_err(|e| LedgerError::Kafka(e.to_string()))?;
        consumer
            .assign(&tpl)
            .map_err(|e| LedgerError::Kafka(e.to_string()))?;
        let mut fold = Fold::new();
        let mut out = Vec::new();
        let mut batch = Vec::new();
        let mut entries = 0u64;
        loop {
            let msg = match consumer.recv().await {
                Ok(msg) => msg,
                Err(KafkaError::PartitionEOF(_)) => break,
                Err(e) => return Err(LedgerError::Kafka(format!("rebuild: {e}"))),
            };
            let payload = msg.payload().unwrap_or_default();
            {
                let programs = programs
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match record_kind(&msg) {
                    RecordKind::Marker => {
                        if let Ok(marker) = Progress::decode(payload) {
                            fold.progress(&programs, &marker, &mut out);
                        }
                    }
                    RecordKind::Input(kind) => {
                        match crate::admin::record_of(&kind, msg.key(), payload) {
                            Ok((tenant, input)) => {
                                fold.input(&programs, tenant, Input::Record(input), &mut out)
                            }
                            Err(e) => {
                                tracing::error!(partition = p, offset = msg.offset(), error = %e, "ledger input unusable; skipped")
                            }
                        }
                    }
                    RecordKind::Credit => match v1::Credit::decode(payload)
                        .map_err(|e| e.to_string())
                        .and_then(|c| credit_from_proto(&c).map_err(|e| e.to_string()))
                    {
                        Ok((tenant, credit)) => fold.credit(&programs, tenant, credit, &mut out),
                        Err(e) => {
                            tracing::error!(partition = p, offset = msg.offset(), error = %e, "credit unusable; skipped")
                        }
                    },
                }
            }
            batch.append(&mut out);
            if batch.len() >= BATCH {
                entries += write(&store, what, &topics.credits, p, &mut batch).await?;
                progress(p, fold.folded());
            }
        }
        entries += write(&store, what, &topics.credits, p, &mut batch).await?;
        progress(p, fold.folded());
        if fold.held() > 0 {
            tracing::warn!(
                partition = p,
                held = fold.held(),
                "credits still held at the end of the partition (an attributor task has not passed them yet)"
            );
        }
        report.push((p, fold.folded(), entries));
    }
    Ok(report)
}

async fn write(
    store: &Store,
    what: &Rebuild,
    topic: &str,
    partition: i32,
    batch: &mut Vec<crate::fold::Folded>,
) -> Result<u64, LedgerError> {
    let Some(last) = batch.last() else {
        return Ok(0);
    };
    let folded = last.seq + 1;
    store
        .write(&what.group_id, topic, partition, batch, folded)
        .await?;
    let entries = batch
        .iter()
        .flat_map(|f| &f.facts)
        .filter(|f| matches!(f, payoff_core::ledger::LedgerFact::Entry(_)))
        .count() as u64;
    batch.clear();
    Ok(entries)
}
