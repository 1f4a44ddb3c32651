//! Where accepted events go: Kafka in production, memory in development and unit tests.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use payoff_adapters::{kafka::base_config, topology::PARTITIONER};
use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    producer::{FutureProducer, FutureRecord, Producer},
    util::Timeout,
};

use crate::metrics;

/// One record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Key (tenant + visitor, order, lead, or campaign + creator).
    pub key: String,
    /// The encoded `payoff.v1.Event`.
    pub payload: Vec<u8>,
}

/// Why a record was not published. Always an infrastructure failure.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Kafka did not acknowledge in time, or refused.
    #[error("kafka did not acknowledge: {0}")]
    Kafka(String),
    /// The producer's local queue is full (Kafka slow or down).
    #[error("producer queue is full")]
    QueueFull,
    /// Another sink (the in-memory pipeline of `payoff dev`) could not take the record.
    #[error("sink refused the record: {0}")]
    Sink(String),
}

/// Publishes records and answers only once they are durable.
pub trait Publisher: Send + Sync + 'static {
    /// Publishes one record; resolves when the sink acknowledged it.
    fn publish(&self, record: Record) -> impl Future<Output = Result<(), PublishError>> + Send;
    /// Whether the sink is reachable now (for health).
    fn is_connected(&self) -> impl Future<Output = bool> + Send;
    /// Sends everything queued, waiting up to `timeout`.
    fn flush(&self, timeout: Duration) -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// Kafka through an idempotent producer with `acks=all`.
#[derive(Clone)]
pub struct KafkaPublisher {
    producer: FutureProducer,
    produce_timeout: Duration,
}

impl KafkaPublisher {
    /// An idempotent `acks=all` producer; a record not acknowledged within
    /// `produce_timeout` fails.
    pub fn new(
        brokers: &str,
        produce_timeout: Duration,
    ) -> Result<Self, payoff_adapters::AdapterError> {
        let mut config = base_config(brokers, "payoff-ingest")?;
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("partitioner", PARTITIONER)
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "200000")
            .set(
                "message.timeout.ms",
                produce_timeout.as_millis().to_string(),
            )
            .set(
                "request.timeout.ms",
                produce_timeout.as_millis().clamp(1000, 30_000).to_string(),
            );
        let producer = config
            .create()
            .map_err(|e| payoff_adapters::AdapterError::kafka("create producer", e))?;
        Ok(Self {
            producer,
            produce_timeout,
        })
    }
}

impl Publisher for KafkaPublisher {
    async fn publish(&self, record: Record) -> Result<(), PublishError> {
        let started = Instant::now();
        let future = self
            .producer
            .send_result(
                FutureRecord::to(&record.topic)
                    .key(&record.key)
                    .payload(&record.payload),
            )
            .map_err(|(e, _)| match e {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => {
                    PublishError::QueueFull
                }
                other => PublishError::Kafka(other.to_string()),
            })?;
        let outcome =
            tokio::time::timeout(self.produce_timeout + Duration::from_millis(500), future).await;
        ::metrics::histogram!(metrics::PRODUCE_DURATION).record(started.elapsed().as_secs_f64());
        match outcome {
            Err(_) => Err(PublishError::Kafka("timed out".to_owned())),
            Ok(Err(_cancelled)) => Err(PublishError::Kafka(
                "producer dropped the record".to_owned(),
            )),
            Ok(Ok(Err((e, _)))) => Err(PublishError::Kafka(e.to_string())),
            Ok(Ok(Ok(_))) => Ok(()),
        }
    }

    async fn is_connected(&self) -> bool {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }

    async fn flush(&self, timeout: Duration) -> Result<(), PublishError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)))
            .await
            .map_err(|e| PublishError::Kafka(e.to_string()))?
            .map_err(|e| PublishError::Kafka(e.to_string()))
    }
}

/// Keeps records in memory (development and unit tests: nothing is durable).
#[derive(Debug, Clone, Default)]
pub struct MemoryPublisher {
    records: Arc<Mutex<Vec<Record>>>,
}

impl MemoryPublisher {
    /// Everything published so far.
    pub fn records(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Publisher for MemoryPublisher {
    async fn publish(&self, record: Record) -> Result<(), PublishError> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(record);
        Ok(())
    }

    async fn is_connected(&self) -> bool {
        true
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), PublishError> {
        Ok(())
    }
}
