//! The ingest service against the real Kafka: what is acknowledged is in the topics,
//! exactly as sent, keyed and co-partitioned as specified; bad items are never published;
//! shutdown loses nothing acknowledged; a broker that is down answers UNAVAILABLE within a
//! bounded time and acknowledges nothing; a client nobody here wrote (grpcurl) can send.
//!
//! Every wait is a poll with a deadline; nothing sleeps.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use payoff_adapters::{
    kafka::{self, StartFrom},
    topology::Topics,
};
use payoff_ingest::{Config, config::LogFormat};
use payoff_proto::v1::{
    self, event::Payload, event_result::Status as ItemStatus, ingest_client::IngestClient,
};
use payoff_runtime::auth::hash_secret;
use payoff_tests::fixture;
use prost::Message as _;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{Consumer, StreamConsumer},
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Code, metadata::MetadataValue};

const PARTITIONS: i32 = 4;
const KEY: &str = "acme-storefront-secret";
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);

fn config(dir: &tempfile::TempDir, brokers: &str, prefix: &str) -> Config {
    let keys = dir.path().join("keys.json");
    std::fs::write(
        &keys,
        format!(
            r#"{{"keys":[{{"id":"shop","tenant":"acme","role":"ingest","sha256":"{}"}}]}}"#,
            hash_secret(KEY)
        ),
    )
    .unwrap();
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        kafka_brokers: brokers.to_owned(),
        topic_prefix: prefix.to_owned(),
        api_keys: Some(keys),
        pii_secret: Some("pii".to_owned()),
        tls_cert: None,
        tls_key: None,
        max_batch: 500,
        max_message_bytes: 4 * 1024 * 1024,
        max_event_bytes: 64 * 1024,
        max_in_flight: 10_000,
        admit_timeout: Duration::from_secs(1),
        produce_timeout: Duration::from_secs(5),
        rate_per_key: 0,
        dedupe_cache: 10_000,
        drain_timeout: Duration::from_secs(15),
        log_format: LogFormat::Text,
        log: "warn".to_owned(),
    }
}

struct Running {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), payoff_ingest::IngestError>>,
}

async fn start(config: Config) -> Running {
    let shutdown = CancellationToken::new();
    let bound = payoff_ingest::bind(config, shutdown.clone())
        .await
        .expect("bind");
    let addr = bound.grpc_addr;
    let task = tokio::spawn(bound.serve());
    Running {
        addr,
        shutdown,
        task,
    }
}

async fn topics(brokers: &str) -> Topics {
    let topics = Topics::with_prefix(&format!("{}.", fixture::unique_name("ingest")));
    kafka::ensure_topics(
        brokers,
        &topics.specs(PARTITIONS, 1),
        Duration::from_secs(30),
    )
    .await
    .expect("create topics");
    topics
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {KEY}").parse().unwrap();
    r.metadata_mut().insert("authorization", value);
    r
}

fn now() -> pbjson_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    pbjson_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap(),
        nanos: 0,
    }
}

fn event(id: &str, payload: Payload) -> v1::Event {
    v1::Event {
        event_id: id.to_owned(),
        occurred_at: Some(now()),
        payload: Some(payload),
        ..Default::default()
    }
}

fn click(id: &str, visitor: &str) -> v1::Event {
    event(
        id,
        Payload::Click(v1::Click {
            visitor_id: visitor.into(),
            link_code: "anna-1".into(),
            ..Default::default()
        }),
    )
}

fn order(id: &str, visitor: &str, order_id: &str) -> v1::Event {
    let amount = Some(v1::Money {
        amount: "80.00".into(),
        currency: "USD".into(),
    });
    event(
        id,
        Payload::Order(v1::Order {
            visitor_id: visitor.into(),
            order_id: order_id.into(),
            amount,
            ..Default::default()
        }),
    )
}

fn signup(id: &str, visitor: &str, lead: &str) -> v1::Event {
    event(
        id,
        Payload::Signup(v1::Signup {
            visitor_id: visitor.into(),
            lead_id: lead.into(),
            ..Default::default()
        }),
    )
}

/// A record read back: topic, partition, key, decoded event.
#[derive(Debug, Clone)]
struct Read {
    topic: String,
    partition: i32,
    key: String,
    event: v1::Event,
}

/// Reads every topic of `topics` from the beginning until `expected` records arrived.
async fn read_back(brokers: &str, topics: &[&str], expected: usize) -> Result<Vec<Read>> {
    let consumer: StreamConsumer = kafka::read_committed_consumer(
        brokers,
        &fixture::unique_name("reader"),
        StartFrom::Earliest,
    )?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        for p in 0..PARTITIONS {
            assignment.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut out = Vec::new();
    while out.len() < expected {
        let message = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(m) => m?,
            Err(_) => bail!(
                "read {} of {expected} records before the deadline",
                out.len()
            ),
        };
        let event =
            v1::Event::decode(message.payload().unwrap_or_default()).context("decode event")?;
        let key = String::from_utf8(message.key().unwrap_or_default().to_vec())?;
        out.push(Read {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            key,
            event,
        });
    }
    // Nothing more than expected: a short bounded poll must come back empty.
    if let Ok(Ok(extra)) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await {
        bail!("an unexpected extra record on {}", extra.topic());
    }
    Ok(out)
}

/// Ingest running against the real Kafka, on fresh topics.
struct OnKafka {
    brokers: String,
    topics: Topics,
    svc: Running,
    _dir: tempfile::TempDir,
}

impl OnKafka {
    async fn start() -> Result<Self> {
        let brokers = fixture::kafka_brokers();
        let topics = topics(&brokers).await;
        let dir = tempfile::tempdir()?;
        let prefix = topics.clicks.trim_end_matches("clicks").to_owned();
        let svc = start(config(&dir, &brokers, &prefix)).await;
        Ok(Self {
            brokers,
            topics,
            svc,
            _dir: dir,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_are_in_their_topics_as_sent_and_co_partitioned() -> Result<()> {
    let OnKafka {
        brokers,
        topics,
        svc,
        _dir,
    } = OnKafka::start().await?;
    let mut client = IngestClient::connect(format!("http://{}", svc.addr)).await?;

    let mut events = Vec::new();
    for v in 0..20 {
        let visitor = format!("visitor-{v}");
        events.push(click(&format!("c-{v}"), &visitor));
        events.push(signup(&format!("s-{v}"), &visitor, &format!("lead-{v}")));
        events.push(order(&format!("o-{v}"), &visitor, &format!("order-{v}")));
    }
    events.push(event(
        "adj-1",
        Payload::Adjustment(v1::Adjustment {
            order_id: "order-3".into(),
            kind: v1::AdjustmentKind::Refund.into(),
            ..Default::default()
        }),
    ));
    events.push(event(
        "ls-1",
        Payload::LeadStatus(v1::LeadStatus {
            lead_id: "lead-4".into(),
            status: v1::LeadQualification::Qualified.into(),
        }),
    ));
    events.push(event(
        "eng-1",
        Payload::Engagement(v1::Engagement {
            creator_id: "anna".into(),
            campaign_id: "spring".into(),
            post_id: "p1".into(),
            views: 1000,
            ..Default::default()
        }),
    ));
    let bad = v1::Event {
        event_id: String::new(),
        ..click("ignored", "visitor-x")
    };
    events.push(bad);
    let sent: BTreeMap<String, v1::Event> = events
        .iter()
        .filter(|e| !e.event_id.is_empty())
        .map(|e| (e.event_id.clone(), e.clone()))
        .collect();

    let results = client
        .send_batch(request(v1::SendBatchRequest { events }))
        .await?
        .into_inner()
        .results;
    assert_eq!(
        results
            .iter()
            .filter(|r| r.status() == ItemStatus::Accepted)
            .count(),
        63
    );
    assert_eq!(results.last().unwrap().status(), ItemStatus::Rejected);

    let all = [
        &topics.clicks,
        &topics.signups,
        &topics.orders,
        &topics.adjustments,
        &topics.lead_status,
        &topics.engagement,
    ]
    .map(String::as_str);
    let read = read_back(&brokers, &all, 63).await?;

    let mut partition_of: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for r in &read {
        let original = sent
            .get(&r.event.event_id)
            .with_context(|| format!("unexpected event {}", r.event.event_id))?;
        // Exactly as sent, plus the tenant and receive time that ingest sets.
        let mut expected = original.clone();
        expected.tenant_id = "acme".into();
        expected.received_at = r.event.received_at;
        assert_eq!(
            r.event, expected,
            "event {} changed on the way",
            r.event.event_id
        );
        assert!(r.event.received_at.is_some());
        let (want_topic, want_key) = match r.event.payload.as_ref().unwrap() {
            Payload::Click(c) => (&topics.clicks, format!("acme\u{1f}{}", c.visitor_id)),
            Payload::Signup(s) => (&topics.signups, format!("acme\u{1f}{}", s.visitor_id)),
            Payload::Order(o) => (&topics.orders, format!("acme\u{1f}{}", o.visitor_id)),
            Payload::Adjustment(a) => (&topics.adjustments, format!("acme\u{1f}{}", a.order_id)),
            Payload::LeadStatus(l) => (&topics.lead_status, format!("acme\u{1f}{}", l.lead_id)),
            Payload::Engagement(e) => (
                &topics.engagement,
                format!("acme\u{1f}{}\u{1f}{}", e.campaign_id, e.creator_id),
            ),
        };
        assert_eq!(&r.topic, want_topic);
        assert_eq!(r.key, want_key);
        if let Some(Payload::Click(_) | Payload::Signup(_) | Payload::Order(_)) = &r.event.payload {
            partition_of
                .entry(r.key.clone())
                .or_default()
                .insert(r.partition);
        }
    }
    // One visitor's clicks, signups and orders share a partition number across topics.
    assert_eq!(partition_of.len(), 20);
    for (key, partitions) in &partition_of {
        assert_eq!(
            partitions.len(),
            1,
            "visitor {key} is spread over partitions {partitions:?}"
        );
    }
    let used: BTreeSet<i32> = partition_of.values().flatten().copied().collect();
    assert!(
        used.len() > 1,
        "20 visitors should spread over more than one of {PARTITIONS} partitions"
    );

    svc.shutdown.cancel();
    svc.task.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_loses_nothing_that_was_acknowledged() -> Result<()> {
    let OnKafka {
        brokers,
        topics,
        svc,
        _dir,
    } = OnKafka::start().await?;
    let mut client = IngestClient::connect(format!("http://{}", svc.addr)).await?;
    let mut acknowledged = 0;
    for batch in 0..5 {
        let events = (0..100)
            .map(|i| click(&format!("b{batch}-{i}"), &format!("v{i}")))
            .collect();
        let results = client
            .send_batch(request(v1::SendBatchRequest { events }))
            .await?
            .into_inner()
            .results;
        acknowledged += results
            .iter()
            .filter(|r| r.status() == ItemStatus::Accepted)
            .count();
    }
    svc.shutdown.cancel();
    svc.task.await??;
    assert_eq!(acknowledged, 500);
    let read = read_back(&brokers, &[&topics.clicks], acknowledged).await?;
    let ids: BTreeSet<String> = read.into_iter().map(|r| r.event.event_id).collect();
    assert_eq!(ids.len(), 500, "every acknowledged event exactly once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_answers_unavailable_and_acknowledges_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // Nothing listens on port 1 of loopback.
    let mut cfg = config(&dir, "127.0.0.1:1", "down.");
    cfg.produce_timeout = Duration::from_secs(2);
    cfg.drain_timeout = Duration::from_secs(5);
    let svc = start(cfg).await;
    let mut client = IngestClient::connect(format!("http://{}", svc.addr)).await?;
    let started = Instant::now();
    let status = client
        .send(request(v1::SendRequest {
            event: Some(click("c-down", "v1")),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a bounded answer, not a hang"
    );
    svc.shutdown.cancel();
    svc.task.await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_sends_an_event_that_lands_in_kafka() -> Result<()> {
    let OnKafka {
        brokers,
        topics,
        svc,
        _dir,
    } = OnKafka::start().await?;
    let body = r#"{"event":{"eventId":"grpcurl-1","occurredAt":"2026-01-05T10:00:00Z","order":{"visitorId":"v-9","orderId":"A-9","amount":{"amount":"80.00","currency":"USD"}}}}"#;
    let output = tokio::process::Command::new(fixture::grpcurl())
        .args([
            "-plaintext",
            "-H",
            &format!("authorization: Bearer {KEY}"),
            "-d",
            body,
            &svc.addr.to_string(),
            "payoff.v1.Ingest/Send",
        ])
        .output()
        .await
        .context("run grpcurl")?;
    assert!(
        output.status.success(),
        "grpcurl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    assert_eq!(answer["result"]["eventId"], "grpcurl-1");
    assert_eq!(answer["result"]["status"], "STATUS_ACCEPTED");
    let read = read_back(&brokers, &[&topics.orders], 1).await?;
    assert_eq!(read[0].event.event_id, "grpcurl-1");
    let Some(Payload::Order(o)) = &read[0].event.payload else {
        bail!("not an order")
    };
    assert_eq!(o.amount.as_ref().unwrap().amount, "80.00");

    // And grpcurl sees the gRPC health service through reflection.
    let health = tokio::process::Command::new(fixture::grpcurl())
        .args(["-plaintext", &svc.addr.to_string(), "list"])
        .output()
        .await?;
    let services = String::from_utf8_lossy(&health.stdout);
    assert!(
        services.contains("payoff.v1.Ingest") && services.contains("grpc.health.v1.Health"),
        "{services}"
    );
    svc.shutdown.cancel();
    svc.task.await??;
    Ok(())
}
