//! Kafka plumbing against the real broker: idempotent topic creation, transactional
//! producers, `read_committed` consumers, and consume → produce with the consumer's offsets
//! committed inside the producer's transaction.
//!
//! Every wait is a poll with a deadline; nothing sleeps.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use payoff_adapters::kafka::{self, StartFrom, TopicSpec};
use payoff_tests::fixture;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::time::Instant;

const PARTITIONS: i32 = 3;
const INIT_TIMEOUT: Duration = Duration::from_secs(30);
const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for any one phase of a test (consuming everything, a group join, …).
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

/// A record as the tests see it: partition, offset, key and value.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    partition: i32,
    offset: i64,
    key: String,
    value: String,
}

/// A record to write: partition, key and value.
type Record = (i32, String, String);

/// Sends `records` in one transaction and commits (or aborts) it, waiting for every
/// delivery report first so an abort really covers records that reached the broker.
async fn write_transaction(
    producer: &FutureProducer,
    topic: &str,
    records: &[Record],
    commit: bool,
) -> Result<()> {
    producer.begin_transaction().context("begin transaction")?;
    let mut deliveries = Vec::with_capacity(records.len());
    for (partition, key, value) in records {
        let record = FutureRecord::to(topic)
            .partition(*partition)
            .key(key)
            .payload(value);
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| e)
            .context("enqueue record")?;
        deliveries.push(delivery);
    }
    for delivery in deliveries {
        delivery
            .await
            .context("delivery future dropped")?
            .map_err(|(e, _)| e)
            .context("record not delivered")?;
    }
    if commit {
        producer
            .commit_transaction(TXN_TIMEOUT)
            .context("commit transaction")?;
    } else {
        producer
            .abort_transaction(TXN_TIMEOUT)
            .context("abort transaction")?;
    }
    Ok(())
}

/// Records `prefix-i` for `i` in `range`, spread round-robin over every partition so that
/// each partition holds some of every batch.
fn records(prefix: &str, range: std::ops::Range<usize>) -> Vec<Record> {
    range
        .map(|i| {
            (
                i as i32 % PARTITIONS,
                format!("key-{i}"),
                format!("{prefix}-{i}"),
            )
        })
        .collect()
}

/// Receives until `want` records arrived or the deadline passed.
async fn receive(consumer: &StreamConsumer, want: usize, deadline: Instant) -> Result<Vec<Seen>> {
    let mut seen = Vec::with_capacity(want);
    while seen.len() < want {
        let message = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(message) => message.context("receive")?,
            Err(_) => bail!(
                "received {} of {want} records before the deadline",
                seen.len()
            ),
        };
        let text =
            |bytes: Option<&[u8]>| String::from_utf8_lossy(bytes.unwrap_or_default()).into_owned();
        seen.push(Seen {
            partition: message.partition(),
            offset: message.offset(),
            key: text(message.key()),
            value: text(message.payload()),
        });
    }
    Ok(seen)
}

/// The high watermark (end offset) of every partition of `topic`.
fn end_offsets(consumer: &StreamConsumer, topic: &str) -> Result<BTreeMap<i32, i64>> {
    (0..PARTITIONS)
        .map(|p| {
            let (_low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .with_context(|| format!("watermarks of {topic}/{p}"))?;
            Ok((p, high))
        })
        .collect()
}

/// The offsets `group` has committed for every partition of `topic` (-1 when none).
fn committed_offsets(consumer: &StreamConsumer, topic: &str) -> Result<BTreeMap<i32, i64>> {
    let mut wanted = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        wanted.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(wanted, Duration::from_secs(10))
        .context("fetch committed offsets")?;
    Ok(committed
        .elements()
        .iter()
        .map(|e| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
        .collect())
}

fn sorted_values(seen: &[Seen]) -> Vec<String> {
    let mut values: Vec<String> = seen.iter().map(|s| s.value.clone()).collect();
    values.sort();
    values
}

fn read_uncommitted_consumer(brokers: &str, topic: &str) -> Result<StreamConsumer> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", fixture::unique_name("payoff-it-uncommitted"))
        .set("isolation.level", "read_uncommitted")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("create read_uncommitted consumer")?;
    consumer.subscribe(&[topic]).context("subscribe")?;
    Ok(consumer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_topics_is_idempotent_and_applies_partitions_and_config() -> Result<()> {
    let brokers = fixture::kafka_brokers();
    let topic = fixture::unique_name("payoff-it-programs");
    let spec = [TopicSpec::new(&topic, PARTITIONS, 1).compacted()];

    kafka::ensure_topics(&brokers, &spec, Duration::from_secs(30)).await?;
    kafka::ensure_topics(&brokers, &spec, Duration::from_secs(30))
        .await
        .context("creating an existing topic must succeed")?;

    let admin = kafka::admin_client(&brokers)?;
    let resource = rdkafka::admin::ResourceSpecifier::Topic(&topic);
    let configs = admin
        .describe_configs([&resource], &rdkafka::admin::AdminOptions::new())
        .await
        .context("describe configs")?;
    let config = configs
        .into_iter()
        .next()
        .context("no config result")?
        .map_err(|code| anyhow::anyhow!("describe configs failed: {code}"))?;
    let policy = config.get("cleanup.policy").and_then(|e| e.value.clone());
    assert_eq!(policy.as_deref(), Some("compact"));

    let consumer = kafka::read_committed_consumer(&brokers, &topic, StartFrom::Earliest)?;
    let metadata = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .context("fetch metadata")?;
    let partitions = metadata
        .topics()
        .first()
        .context("topic missing")?
        .partitions();
    assert_eq!(partitions.len(), PARTITIONS as usize);
    assert!(
        partitions.iter().all(|p| p.leader() >= 0),
        "ensure_topics returned before every partition had a leader"
    );
    Ok(())
}

/// A fresh input and output topic, a consumer group name, and a transactional producer
/// writing to the input ("upstream").
struct Pipeline {
    brokers: String,
    input: String,
    output: String,
    group: String,
    upstream: FutureProducer,
}

impl Pipeline {
    async fn new() -> Result<Self> {
        let brokers = fixture::kafka_brokers();
        let input = fixture::unique_name("payoff-it-in");
        let output = fixture::unique_name("payoff-it-out");
        let group = fixture::unique_name("payoff-it-group");
        kafka::ensure_topics(
            &brokers,
            &[
                TopicSpec::new(&input, PARTITIONS, 1),
                TopicSpec::new(&output, PARTITIONS, 1),
            ],
            Duration::from_secs(30),
        )
        .await?;
        let upstream = kafka::transactional_future_producer(
            &brokers,
            &fixture::unique_name("payoff-it-upstream"),
            INIT_TIMEOUT,
        )?;
        Ok(Self {
            brokers,
            input,
            output,
            group,
            upstream,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_transform_produce_commits_offsets_with_output_and_hides_aborted_records()
-> Result<()> {
    let Pipeline {
        brokers,
        input,
        output,
        group,
        upstream,
    } = Pipeline::new().await?;

    // Given: two committed transactions around an aborted one on the input topic.
    let first = records("committed", 0..20);
    let aborted = records("aborted", 20..25);
    let second = records("committed", 25..35);
    write_transaction(&upstream, &input, &first, true).await?;
    write_transaction(&upstream, &input, &aborted, false).await?;
    write_transaction(&upstream, &input, &second, true).await?;
    let committed_input: Vec<Record> = first.iter().chain(&second).cloned().collect();

    // The aborted records did reach the log: a read_uncommitted reader sees all 35.
    let dirty = read_uncommitted_consumer(&brokers, &input)?;
    let all = receive(&dirty, 35, Instant::now() + PHASE_TIMEOUT).await?;
    assert_eq!(
        all.iter()
            .filter(|s| s.value.starts_with("aborted"))
            .count(),
        aborted.len()
    );

    // When: a read_committed member of `group` transforms every record it sees and
    // commits its output and its offsets in one transaction.
    let consumer = kafka::read_committed_consumer(&brokers, &group, StartFrom::Earliest)?;
    consumer.subscribe(&[&input]).context("subscribe")?;
    let seen = receive(
        &consumer,
        committed_input.len(),
        Instant::now() + PHASE_TIMEOUT,
    )
    .await?;

    // Every partition has committed records after the aborted ones, so having all of
    // them means the reader went past the aborted records in every partition.
    let mut expected: Vec<String> = committed_input.iter().map(|(_, _, v)| v.clone()).collect();
    expected.sort();
    assert_eq!(
        sorted_values(&seen),
        expected,
        "read_committed must see exactly the committed records"
    );

    let processor = kafka::transactional_future_producer(
        &brokers,
        &fixture::unique_name("payoff-it-processor"),
        INIT_TIMEOUT,
    )?;
    processor.begin_transaction().context("begin transaction")?;
    let mut deliveries = Vec::new();
    for record in &seen {
        let value = format!("credited:{}", record.value);
        let delivery = processor
            .send_result(FutureRecord::to(&output).key(&record.key).payload(&value))
            .map_err(|(e, _)| e)
            .context("enqueue output")?;
        deliveries.push(delivery);
    }
    for delivery in deliveries {
        delivery
            .await
            .context("delivery dropped")?
            .map_err(|(e, _)| e)
            .context("deliver output")?;
    }
    // The consumer's position is past the last record it returned (and past transaction
    // markers it skipped); that is what the group resumes from.
    let position = consumer.position().context("consumer position")?;
    let group_metadata = consumer
        .group_metadata()
        .context("consumer has no group metadata")?;
    processor
        .send_offsets_to_transaction(&position, &group_metadata, TXN_TIMEOUT)
        .context("send offsets to transaction")?;
    processor
        .commit_transaction(TXN_TIMEOUT)
        .context("commit transaction")?;

    // Then: the group's committed offsets are the end of every input partition. librdkafka's
    // position stops after the last record it returned, so it may sit just before the
    // trailing commit marker (a control record, never delivered); both are "the end".
    let ends = end_offsets(&consumer, &input)?;
    let next_after_seen: BTreeMap<i32, i64> = seen.iter().fold(BTreeMap::new(), |mut acc, s| {
        let next = acc.entry(s.partition).or_insert(0);
        *next = (*next).max(s.offset + 1);
        acc
    });
    let committed = committed_offsets(&consumer, &input)?;
    for p in 0..PARTITIONS {
        let (end, next) = (ends[&p], next_after_seen[&p]);
        let got = committed.get(&p).copied().unwrap_or(-1);
        assert!(
            got == end || (got == next && end == next + 1),
            "partition {p}: committed {got}, but the last record seen ends at {next} and the \
             partition at {end}"
        );
    }

    // A restarted member of the group resumes exactly there: with one new record per
    // partition appended, those are the first records read from the committed offsets.
    let resumed_markers: Vec<Record> = (0..PARTITIONS)
        .map(|p| (p, format!("after-{p}"), format!("after-{p}")))
        .collect();
    write_transaction(&upstream, &input, &resumed_markers, true).await?;
    let restarted = kafka::read_committed_consumer(
        &brokers,
        &fixture::unique_name("payoff-it-resume"),
        StartFrom::Earliest,
    )?;
    let mut from_committed = TopicPartitionList::new();
    for (p, offset) in &committed {
        from_committed
            .add_partition_offset(&input, *p, Offset::Offset(*offset))
            .context("resume offset")?;
    }
    restarted
        .assign(&from_committed)
        .context("assign at committed offsets")?;
    let resumed = receive(
        &restarted,
        resumed_markers.len(),
        Instant::now() + PHASE_TIMEOUT,
    )
    .await?;
    let mut expected_resumed: Vec<String> =
        resumed_markers.iter().map(|(_, _, v)| v.clone()).collect();
    expected_resumed.sort();
    assert_eq!(
        sorted_values(&resumed),
        expected_resumed,
        "the group did not resume at the end"
    );

    // …and a read_committed reader of the output sees every transformed record once.
    let out_reader = kafka::read_committed_consumer(
        &brokers,
        &fixture::unique_name("payoff-it-verify"),
        StartFrom::Earliest,
    )?;
    out_reader
        .subscribe(&[&output])
        .context("subscribe output")?;
    let out = receive(&out_reader, seen.len(), Instant::now() + PHASE_TIMEOUT).await?;
    let mut expected_out: Vec<String> = expected.iter().map(|v| format!("credited:{v}")).collect();
    expected_out.sort();
    assert_eq!(sorted_values(&out), expected_out);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_consume_produce_moves_no_offsets_and_publishes_nothing() -> Result<()> {
    let Pipeline {
        brokers,
        input,
        output,
        group,
        upstream,
    } = Pipeline::new().await?;
    let input_records = records("order", 0..12);
    write_transaction(&upstream, &input, &input_records, true).await?;

    // A processor consumes everything, produces, attaches offsets, then aborts.
    let consumer = kafka::read_committed_consumer(&brokers, &group, StartFrom::Earliest)?;
    consumer.subscribe(&[&input]).context("subscribe")?;
    let seen = receive(
        &consumer,
        input_records.len(),
        Instant::now() + PHASE_TIMEOUT,
    )
    .await?;
    let processor = kafka::transactional_future_producer(
        &brokers,
        &fixture::unique_name("payoff-it-processor"),
        INIT_TIMEOUT,
    )?;
    processor.begin_transaction().context("begin")?;
    for record in &seen {
        let value = format!("never:{}", record.value);
        processor
            .send(
                FutureRecord::to(&output).key(&record.key).payload(&value),
                Timeout::Never,
            )
            .await
            .map_err(|(e, _)| e)
            .context("deliver")?;
    }
    let position = consumer.position().context("position")?;
    let group_metadata = consumer.group_metadata().context("group metadata")?;
    processor
        .send_offsets_to_transaction(&position, &group_metadata, TXN_TIMEOUT)
        .context("send offsets")?;
    processor.abort_transaction(TXN_TIMEOUT).context("abort")?;

    // The group has no committed offset: a restarted member would reprocess everything.
    let committed = committed_offsets(&consumer, &input)?;
    for (p, offset) in &committed {
        assert!(
            *offset < 0,
            "partition {p}: an aborted transaction committed offset {offset}"
        );
    }

    // The output holds the aborted records but read_committed readers never see them.
    // Prove it without waiting for silence: commit one marker per partition after the
    // aborted records; a reader reaches each marker only after passing what precedes it.
    let markers: Vec<Record> = (0..PARTITIONS)
        .map(|p| (p, format!("marker-{p}"), format!("marker-{p}")))
        .collect();
    write_transaction(&upstream, &output, &markers, true).await?;
    let reader = kafka::read_committed_consumer(
        &brokers,
        &fixture::unique_name("payoff-it-verify"),
        StartFrom::Earliest,
    )?;
    reader.subscribe(&[&output]).context("subscribe output")?;
    let visible = receive(&reader, markers.len(), Instant::now() + PHASE_TIMEOUT).await?;
    let mut expected: Vec<String> = markers.iter().map(|(_, _, v)| v.clone()).collect();
    expected.sort();
    assert_eq!(
        sorted_values(&visible),
        expected,
        "read_committed returned aborted records"
    );

    let dirty = read_uncommitted_consumer(&brokers, &output)?;
    let all = receive(
        &dirty,
        seen.len() + markers.len(),
        Instant::now() + PHASE_TIMEOUT,
    )
    .await?;
    let aborted_seen = all.iter().filter(|s| s.value.starts_with("never:")).count();
    assert_eq!(
        aborted_seen,
        seen.len(),
        "the aborted records must be in the log"
    );
    Ok(())
}

/// `kafka::commit_transaction` on a producer that reports failed deliveries only (as the
/// attributor's does): records still in flight when it is called are delivered and
/// committed, so a read_committed consumer sees every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_transaction_commits_records_still_in_flight() -> Result<()> {
    let brokers = fixture::kafka_brokers();
    let topic = fixture::unique_name("payoff-it-commit");
    kafka::ensure_topics(
        &brokers,
        &[TopicSpec::new(&topic, PARTITIONS, 1)],
        Duration::from_secs(30),
    )
    .await?;
    let written = records("in-flight", 0..3_000);
    let (brokers2, topic2, to_write) = (brokers.clone(), topic.clone(), written.clone());
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut config = kafka::transactional_producer_config(
            &brokers2,
            &fixture::unique_name("payoff-it-commit-txn"),
            TXN_TIMEOUT,
        )?;
        config
            .set("linger.ms", "50")
            .set("delivery.report.only.error", "true");
        let producer: rdkafka::producer::ThreadedProducer<
            rdkafka::producer::DefaultProducerContext,
        > = config.create().context("create producer")?;
        producer
            .init_transactions(INIT_TIMEOUT)
            .context("init transactions")?;
        producer.begin_transaction().context("begin transaction")?;
        for (partition, key, value) in &to_write {
            producer
                .send(
                    rdkafka::producer::BaseRecord::to(&topic2)
                        .partition(*partition)
                        .key(key)
                        .payload(value),
                )
                .map_err(|(e, _)| e)
                .context("enqueue record")?;
        }
        kafka::commit_transaction(&producer, TXN_TIMEOUT).context("commit transaction")?;
        Ok(())
    })
    .await
    .context("producer thread")??;

    let group = fixture::unique_name("payoff-it-commit-group");
    let consumer = kafka::read_committed_consumer(&brokers, &group, StartFrom::Earliest)?;
    consumer.subscribe(&[&topic]).context("subscribe")?;
    let seen = receive(&consumer, written.len(), Instant::now() + PHASE_TIMEOUT).await?;
    let mut want: Vec<String> = written.into_iter().map(|(_, _, v)| v).collect();
    want.sort();
    assert_eq!(sorted_values(&seen), want);
    Ok(())
}
