//! `ingest-load`: events/s through payoff-ingest into Kafka (acks=all), compared in the
//! same run and on the same broker with Kafka's own `ProducerPerformance` at the same
//! record size and acks; then acknowledgement latency at half the maximum rate.
//!
//! Run (with the local stack up):
//! `cargo run --release -p payoff-benches --bin ingest-load -- --events 200000`
//!
//! It creates its own topics (unique names), starts ingest in this process on
//! 127.0.0.1:0, drives it with concurrent gRPC batch clients, then runs
//! `org.apache.kafka.tools.ProducerPerformance` from the stack's Kafka jars. Every loop is
//! bounded by an event count; nothing runs open-ended.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use payoff_adapters::{kafka, topology::Topics};
use payoff_ingest::{Config, config::LogFormat};
use payoff_proto::v1::{self, event::Payload, ingest_client::IngestClient};
use payoff_runtime::auth::hash_secret;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::{metadata::MetadataValue, transport::Channel};

/// The allocator every payoff binary uses ([`payoff_runtime::Allocator`]).
#[global_allocator]
static ALLOCATOR: payoff_runtime::Allocator = payoff_runtime::Allocator;

const KEY: &str = "ingest-load-secret";

/// Load generator for payoff-ingest, compared with Kafka's ProducerPerformance.
#[derive(Debug, Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "PAYOFF_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Events to send at full speed (and records for ProducerPerformance).
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events per batch request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Concurrent client streams.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// Events sent in the half-rate latency phase.
    #[arg(long, default_value_t = 50_000)]
    latency_events: usize,
    /// Events per request in the latency phase.
    #[arg(long, default_value_t = 50)]
    latency_batch: usize,
    /// Folder of the Kafka jars (default: the local stack's cache).
    #[arg(long)]
    kafka_lib: Option<PathBuf>,
}

fn now() -> pbjson_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(0),
        nanos: 0,
    }
}

/// A realistic click: visitor, link, UTM fields, landing URL, hashed context.
fn click(i: usize) -> v1::Event {
    v1::Event {
        event_id: format!("load-{i:010}"),
        occurred_at: Some(now()),
        context: Some(v1::Context {
            ip_hash: format!("{:064x}", i % 5000),
            ..Default::default()
        }),
        payload: Some(Payload::Click(v1::Click {
            visitor_id: format!("visitor-{:08}", i % 100_000),
            link_code: format!("creator-{}-spring", i % 200),
            utm: Some(v1::Utm {
                source: "instagram".into(),
                medium: "social".into(),
                campaign: "spring".into(),
                ..Default::default()
            }),
            landing_url: "https://shop.example/spring".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn request<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    let value: MetadataValue<_> = format!("Bearer {KEY}").parse().expect("ascii");
    r.metadata_mut().insert("authorization", value);
    r
}

async fn send_all(
    client: IngestClient<Channel>,
    batches: Vec<Vec<v1::Event>>,
) -> anyhow::Result<usize> {
    let mut client = client;
    let mut accepted = 0;
    for events in batches {
        let results = client
            .send_batch(request(v1::SendBatchRequest { events }))
            .await?
            .into_inner()
            .results;
        accepted += results
            .iter()
            .filter(|r| r.status() == v1::event_result::Status::Accepted)
            .count();
    }
    Ok(accepted)
}

fn kafka_lib(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(lib) = &args.kafka_lib {
        return Ok(lib.clone());
    }
    let cache = PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/payoff");
    let entry = std::fs::read_dir(&cache)
        .with_context(|| format!("no {}: run deploy/local/stack up", cache.display()))?
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("kafka-"))
        .context("no Kafka jars in ~/.cache/payoff: run deploy/local/stack up")?;
    Ok(entry.path().join("lib"))
}

/// Runs ProducerPerformance and returns (records/s, its summary line).
fn producer_performance(
    args: &Args,
    topic: &str,
    record_size: usize,
) -> anyhow::Result<(f64, String)> {
    let lib = kafka_lib(args)?;
    let output = std::process::Command::new("java")
        .args([
            "-Xmx512m",
            "-cp",
            &format!("{}/*", lib.display()),
            "org.apache.kafka.tools.ProducerPerformance",
        ])
        .args([
            "--topic",
            topic,
            "--num-records",
            &args.events.to_string(),
            "--record-size",
            &record_size.to_string(),
            "--throughput",
            "-1",
        ])
        .args([
            "--producer-props",
            &format!("bootstrap.servers={}", args.brokers),
            "acks=all",
            "enable.idempotence=true",
            "linger.ms=5",
            "compression.type=lz4",
        ])
        .output()
        .context("run java ProducerPerformance")?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!(
            "ProducerPerformance failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.contains("records sent"))
        .context("no summary line")?
        .to_owned();
    let rate = summary
        .split(',')
        .nth(1)
        .and_then(|part| part.trim().split(' ').next())
        .and_then(|n| n.parse::<f64>().ok())
        .context("cannot read records/sec")?;
    Ok((rate, summary))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let prefix = format!("bench{}.", std::process::id());
    let topics = Topics::with_prefix(&prefix);
    kafka::ensure_topics(
        &args.brokers,
        &topics.specs(args.partitions, 1),
        Duration::from_secs(30),
    )
    .await?;
    let perf_topic = format!("{prefix}producer-performance");
    kafka::ensure_topics(
        &args.brokers,
        &[kafka::TopicSpec::new(&perf_topic, args.partitions, 1)],
        Duration::from_secs(30),
    )
    .await?;

    let dir = tempfile::tempdir()?;
    let keys = dir.path().join("keys.json");
    std::fs::write(
        &keys,
        format!(
            r#"{{"keys":[{{"id":"load","tenant":"acme","role":"ingest","sha256":"{}"}}]}}"#,
            hash_secret(KEY)
        ),
    )?;
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        metrics_listen: "127.0.0.1:0".parse()?,
        kafka_brokers: args.brokers.clone(),
        topic_prefix: prefix.clone(),
        api_keys: Some(keys),
        pii_secret: Some("bench".into()),
        tls_cert: None,
        tls_key: None,
        max_batch: args.batch.max(args.latency_batch),
        max_message_bytes: 16 * 1024 * 1024,
        max_event_bytes: 64 * 1024,
        max_in_flight: args.batch.max(args.latency_batch) * args.concurrency * 2,
        admit_timeout: Duration::from_secs(10),
        produce_timeout: Duration::from_secs(30),
        rate_per_key: 0,
        dedupe_cache: args.events + args.latency_events,
        drain_timeout: Duration::from_secs(60),
        log_format: LogFormat::Text,
        log: "warn".into(),
    };
    let shutdown = CancellationToken::new();
    let bound = payoff_ingest::bind(config, shutdown.clone()).await?;
    let addr = bound.grpc_addr;
    let server = tokio::spawn(bound.serve());
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;

    // The record ingest writes: the event plus tenant and receive time.
    let mut sample = click(0);
    sample.tenant_id = "acme".into();
    sample.received_at = Some(now());
    let record_size = sample.encoded_len();

    // Warm up (connections, topic metadata).
    send_all(
        IngestClient::new(channel.clone()),
        vec![(0..args.batch).map(|i| click(usize::MAX / 2 + i)).collect()],
    )
    .await?;

    // Full speed.
    let all: Vec<v1::Event> = (0..args.events).map(click).collect();
    let mut per_client: Vec<Vec<Vec<v1::Event>>> = vec![Vec::new(); args.concurrency];
    for (i, chunk) in all.chunks(args.batch).enumerate() {
        per_client[i % args.concurrency].push(chunk.to_vec());
    }
    eprintln!(
        "ingest-load: {} events of {record_size} bytes, batches of {}, {} clients",
        args.events, args.batch, args.concurrency
    );
    let started = Instant::now();
    let tasks: Vec<_> = per_client
        .into_iter()
        .map(|b| tokio::spawn(send_all(IngestClient::new(channel.clone()), b)))
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await??;
    }
    let elapsed = started.elapsed();
    if accepted != args.events {
        bail!("only {accepted} of {} events accepted", args.events);
    }
    let ingest_rate = args.events as f64 / elapsed.as_secs_f64();

    // Half the maximum rate: paced requests, acknowledgement latency per request.
    let target = ingest_rate / 2.0;
    let interval = Duration::from_secs_f64(args.latency_batch as f64 / target);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let client = IngestClient::new(channel.clone());
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let latency_started = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    for (n, chunk) in (0..args.latency_events)
        .map(|i| click(args.events + i))
        .collect::<Vec<_>>()
        .chunks(args.latency_batch)
        .enumerate()
    {
        ticker.tick().await;
        let mut c = client.clone();
        let events = chunk.to_vec();
        in_flight.spawn(async move {
            let t0 = Instant::now();
            c.send_batch(request(v1::SendBatchRequest { events }))
                .await
                .map(|_| t0.elapsed())
        });
        if n % 64 == 63 {
            while let Some(done) = in_flight.try_join_next() {
                histogram.record(u64::try_from(done??.as_micros()).unwrap_or(u64::MAX))?;
            }
        }
    }
    while let Some(done) = in_flight.join_next().await {
        histogram.record(u64::try_from(done??.as_micros()).unwrap_or(u64::MAX))?;
    }
    let achieved = args.latency_events as f64 / latency_started.elapsed().as_secs_f64();
    drop(client);

    shutdown.cancel();
    server.await??;

    let latency_batch = args.latency_batch;
    let (kafka_rate, summary) = tokio::task::spawn_blocking({
        let topic = perf_topic.clone();
        move || producer_performance(&args, &topic, record_size)
    })
    .await??;

    println!("record size: {record_size} bytes, acks=all, idempotent, lz4, linger 5 ms");
    println!(
        "ingest (gRPC batches → Kafka): {ingest_rate:.0} events/s over {accepted} events in {:.2} s",
        elapsed.as_secs_f64()
    );
    println!("ProducerPerformance (same broker): {kafka_rate:.0} records/s  [{summary}]");
    println!(
        "ratio ingest / ProducerPerformance: {:.2}",
        ingest_rate / kafka_rate
    );
    println!(
        "at half the maximum rate ({achieved:.0} events/s, requests of {} events): ack latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latency_batch,
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0
    );
    Ok(())
}
