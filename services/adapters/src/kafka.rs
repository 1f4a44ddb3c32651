//! Kafka clients with payoff's delivery guarantees built in.
//!
//! - Producers are idempotent and transactional (`enable.idempotence=true`, `acks=all`,
//!   a stable `transactional.id`), so a record and the consumer offsets that led to it
//!   become visible together or not at all (consume → produce with
//!   `send_offsets_to_transaction`).
//! - Consumers read with `isolation.level=read_committed` and never commit or store
//!   offsets on their own (`enable.auto.commit=false`, `enable.auto.offset.store=false`):
//!   offsets move only inside a producer transaction or when the caller says so.
//! - [`ensure_topics`] creates topics idempotently; payoff, not the deployment scripts,
//!   owns its topics.
//!
//! The transactional calls of `rdkafka` (`init_transactions`, `commit_transaction`, …)
//! block the calling thread up to their timeout; call them from a blocking context (e.g.
//! `tokio::task::spawn_blocking`) or from a multi-threaded runtime that can afford it.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{FutureProducer, Producer};

use crate::error::{AdapterError, Result};

/// Logs a librdkafka client error through tracing (a warning; the client retries on its
/// own), except the end of a partition: consumers that set `enable.partition.eof` asked
/// to hear about it, and it is no error. rdkafka's default context logs every one of
/// them at ERROR level.
pub fn log_client_error(error: &rdkafka::error::KafkaError, reason: &str) {
    let eof = matches!(error, rdkafka::error::KafkaError::PartitionEOF(_))
        || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
    if !eof {
        tracing::warn!(error = %error, reason, "kafka client error");
    }
}

/// A consumer context that logs client errors with [`log_client_error`]: for readers that
/// set `enable.partition.eof` (the end of a partition is no error).
#[derive(Debug, Clone, Copy, Default)]
pub struct QuietEof;

impl rdkafka::client::ClientContext for QuietEof {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        log_client_error(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// How long a transaction may stay open before the broker aborts it; also the upper bound
/// for the delivery of one record (`message.timeout.ms` must not exceed it).
pub const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a consumer group without a committed offset starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest retained record: what an event-sourced reader normally wants.
    Earliest,
    /// Only records produced after the group first joins.
    Latest,
}

impl StartFrom {
    fn as_config(self) -> &'static str {
        match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
        }
    }
}

/// A topic payoff needs, for [`ensure_topics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// The topic's name.
    pub name: String,
    /// Number of partitions; fixed once created, and co-partitioned topics must agree.
    pub partitions: i32,
    /// Replication factor (1 on a single-node development broker, 3 in production).
    pub replication: i32,
    /// Topic-level configuration, e.g. `("cleanup.policy", "compact")`.
    pub configs: Vec<(String, String)>,
}

impl TopicSpec {
    /// A topic with default (broker-side) configuration.
    pub fn new(name: impl Into<String>, partitions: i32, replication: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication,
            configs: Vec::new(),
        }
    }

    /// Adds one topic-level configuration entry.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.push((key.into(), value.into()));
        self
    }

    /// Makes the topic log-compacted (`cleanup.policy=compact`): the latest record per key
    /// is kept forever, as for versioned program configuration.
    pub fn compacted(self) -> Self {
        self.config("cleanup.policy", "compact")
    }

    fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            return Err(AdapterError::Config("topic name is empty".into()));
        }
        if self.partitions < 1 || self.replication < 1 {
            return Err(AdapterError::Config(format!(
                "topic {} needs at least 1 partition and replication 1, got {} and {}",
                self.name, self.partitions, self.replication
            )));
        }
        Ok(())
    }
}

/// The settings every payoff Kafka client shares: the bootstrap brokers and a client id
/// that shows up in broker logs and metrics.
pub fn base_config(brokers: &str, client_id: &str) -> Result<ClientConfig> {
    if brokers.trim().is_empty() {
        return Err(AdapterError::Config("kafka broker list is empty".into()));
    }
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("client.id", client_id);
    Ok(config)
}

/// Configuration of an idempotent, transactional producer with `acks=all`.
///
/// `transactional_id` must be stable across restarts of the same logical producer (e.g.
/// derived from the service name and the input partition it owns): the broker uses it to
/// fence a zombie instance and to abort its unfinished transaction.
pub fn transactional_producer_config(
    brokers: &str,
    transactional_id: &str,
    transaction_timeout: Duration,
) -> Result<ClientConfig> {
    if transactional_id.is_empty() {
        return Err(AdapterError::Config("transactional.id is empty".into()));
    }
    let timeout_ms = transaction_timeout.as_millis().to_string();
    let mut config = base_config(brokers, transactional_id)?;
    config
        .set("transactional.id", transactional_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("transaction.timeout.ms", &timeout_ms)
        .set("message.timeout.ms", &timeout_ms);
    Ok(config)
}

/// Creates a transactional [`FutureProducer`] and registers its `transactional.id` with
/// the broker (`init_transactions`), fencing older instances with the same id.
///
/// Blocks up to `init_timeout`.
pub fn transactional_future_producer(
    brokers: &str,
    transactional_id: &str,
    init_timeout: Duration,
) -> Result<FutureProducer> {
    let producer: FutureProducer =
        transactional_producer_config(brokers, transactional_id, DEFAULT_TRANSACTION_TIMEOUT)?
            .create()
            .map_err(|e| AdapterError::kafka("create producer", e))?;
    producer
        .init_transactions(init_timeout)
        .map_err(|e| AdapterError::kafka("init transactions", e))?;
    Ok(producer)
}

/// Commits the producer's open transaction, first waiting for its records' delivery in
/// 1 ms steps.
///
/// rust-rdkafka's `commit_transaction` flushes first, and its flush waits for deliveries
/// in polls of up to 100 ms that only end early when a delivery report arrives. A producer
/// that asks for reports of failures only (`delivery.report.only.error`) gets none, so
/// every commit with records still in flight waited the whole 100 ms: at ten commits a
/// second, most of the attributor's time.
pub fn commit_transaction<C, Part, P>(
    producer: &P,
    timeout: Duration,
) -> rdkafka::error::KafkaResult<()>
where
    Part: rdkafka::producer::Partitioner,
    C: rdkafka::producer::ProducerContext<Part>,
    P: Producer<C, Part>,
{
    let deadline = std::time::Instant::now() + timeout;
    while producer.in_flight_count() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    producer.commit_transaction(deadline.saturating_duration_since(std::time::Instant::now()))
}

/// Configuration of a consumer that sees only committed records and never moves its
/// offsets by itself.
pub fn read_committed_consumer_config(
    brokers: &str,
    group_id: &str,
    start: StartFrom,
) -> Result<ClientConfig> {
    if group_id.is_empty() {
        return Err(AdapterError::Config("consumer group.id is empty".into()));
    }
    let mut config = base_config(brokers, group_id)?;
    config
        .set("group.id", group_id)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", start.as_config());
    Ok(config)
}

/// Creates a `read_committed` [`StreamConsumer`] in `group_id`; the caller subscribes or
/// assigns partitions.
pub fn read_committed_consumer(
    brokers: &str,
    group_id: &str,
    start: StartFrom,
) -> Result<StreamConsumer> {
    read_committed_consumer_config(brokers, group_id, start)?
        .create()
        .map_err(|e| AdapterError::kafka("create consumer", e))
}

/// Creates an admin client for topic management.
pub fn admin_client(brokers: &str) -> Result<AdminClient<DefaultClientContext>> {
    base_config(brokers, "payoff-admin")?
        .create()
        .map_err(|e| AdapterError::kafka("create admin client", e))
}

/// Creates the given topics, treating "already exists" as success, and waits up to
/// `timeout` for the controller to confirm, then up to `timeout` again for every topic to
/// appear, each partition with a leader, in the metadata the brokers serve: a broker can
/// answer a metadata request before it has learnt of a topic the controller just created.
///
/// An existing topic is left as it is: its partition count and configuration are not
/// compared with `topics`.
pub async fn ensure_topics(brokers: &str, topics: &[TopicSpec], timeout: Duration) -> Result<()> {
    for topic in topics {
        topic.validate()?;
    }
    let admin = admin_client(brokers)?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            t.configs.iter().fold(
                NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(t.replication),
                ),
                |nt, (k, v)| nt.set(k, v),
            )
        })
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = admin
        .create_topics(&new_topics, &options)
        .await
        .map_err(|e| AdapterError::kafka("create topics", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(AdapterError::TopicCreation { topic, code }),
        }
    }
    let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    let deadline = std::time::Instant::now() + timeout;
    tokio::task::spawn_blocking(move || await_led(&admin, &names, deadline, timeout))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

/// Polls the cluster's metadata until every topic in `names` exists and each of its
/// partitions has a leader, or `deadline` passes.
fn await_led(
    admin: &AdminClient<DefaultClientContext>,
    names: &[String],
    deadline: std::time::Instant,
    timeout: Duration,
) -> Result<()> {
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let metadata = admin
            .inner()
            .fetch_metadata(None, left.max(Duration::from_millis(100)))
            .map_err(|e| AdapterError::kafka("fetch metadata", e))?;
        let led = |name: &String| {
            metadata.topics().iter().any(|t| {
                t.name() == name
                    && t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions()
                        .iter()
                        .all(|p| p.error().is_none() && p.leader() >= 0)
            })
        };
        match names.iter().find(|n| !led(n)) {
            None => return Ok(()),
            Some(missing) if std::time::Instant::now() >= deadline => {
                return Err(AdapterError::TopicNotVisible {
                    topic: missing.clone(),
                    after: timeout,
                });
            }
            Some(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The partition count of each named topic (`None` when it does not exist), from the
/// cluster's metadata. Blocks up to `timeout` per topic: call it from a blocking context.
pub fn partition_counts(
    brokers: &str,
    topics: &[&str],
    timeout: Duration,
) -> Result<Vec<(String, Option<i32>)>> {
    let admin = admin_client(brokers)?;
    let mut out = Vec::with_capacity(topics.len());
    for topic in topics {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| AdapterError::kafka("fetch metadata", e))?;
        let count = metadata
            .topics()
            .iter()
            .find(|t| t.name() == *topic && t.error().is_none())
            .map(|t| i32::try_from(t.partitions().len()).unwrap_or(i32::MAX))
            .filter(|n| *n > 0);
        out.push(((*topic).to_owned(), count));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// Counts the events logged through it.
    struct Count(Arc<AtomicUsize>);

    impl tracing::Subscriber for Count {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, _: &tracing::Event<'_>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn the_end_of_a_partition_is_not_logged_and_other_client_errors_are() {
        use rdkafka::error::KafkaError;
        let logged = Arc::new(AtomicUsize::new(0));
        tracing::subscriber::with_default(Count(logged.clone()), || {
            log_client_error(&KafkaError::PartitionEOF(3), "end");
            log_client_error(
                &KafkaError::Global(RDKafkaErrorCode::PartitionEOF),
                "end, as a global error",
            );
            assert_eq!(logged.load(Ordering::SeqCst), 0);
            log_client_error(
                &KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
                "down",
            );
            assert_eq!(logged.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn producer_config_is_idempotent_and_transactional() {
        let config =
            transactional_producer_config("127.0.0.1:9092", "ingest-0", Duration::from_secs(30))
                .unwrap();
        assert_eq!(config.get("transactional.id"), Some("ingest-0"));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("transaction.timeout.ms"), Some("30000"));
        assert_eq!(config.get("message.timeout.ms"), Some("30000"));
    }

    #[test]
    fn consumer_config_reads_committed_and_never_auto_commits() {
        let config =
            read_committed_consumer_config("127.0.0.1:9092", "ledger", StartFrom::Earliest)
                .unwrap();
        assert_eq!(config.get("isolation.level"), Some("read_committed"));
        assert_eq!(config.get("enable.auto.commit"), Some("false"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(config.get("auto.offset.reset"), Some("earliest"));
    }

    #[test]
    fn empty_settings_are_config_errors() {
        assert!(matches!(
            base_config(" ", "x"),
            Err(AdapterError::Config(_))
        ));
        assert!(matches!(
            transactional_producer_config("b:9092", "", DEFAULT_TRANSACTION_TIMEOUT),
            Err(AdapterError::Config(_))
        ));
        assert!(matches!(
            read_committed_consumer_config("b:9092", "", StartFrom::Latest),
            Err(AdapterError::Config(_))
        ));
    }

    #[test]
    fn topic_spec_builds_compacted_topics_and_rejects_nonsense() {
        let spec = TopicSpec::new("programs", 1, 3).compacted();
        assert_eq!(
            spec.configs,
            vec![("cleanup.policy".to_owned(), "compact".to_owned())]
        );
        assert!(spec.validate().is_ok());
        assert!(TopicSpec::new("clicks", 0, 1).validate().is_err());
        assert!(TopicSpec::new("", 1, 1).validate().is_err());
    }
}
