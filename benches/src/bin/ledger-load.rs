//! `ledger-load`: query latency of payoff-ledger under concurrent clients, and freshness
//! (an order acknowledged by ingest → its commission returned by a ledger query) at a
//! steady load, against the real Kafka and Cassandra (SPEC §10: ≤ 5 ms p99 for a
//! balance, ≤ 20 ms p99 for a page of 100 entries, ≤ 1 s p99 freshness).
//!
//! Run (with the local stack up: `deploy/local/stack up`, then
//! `eval "$(deploy/local/stack env)"`; the defaults take about 2½ minutes on 2 cores):
//!
//! ```text
//! cargo run --release -p payoff-benches --bin ledger-load
//! # only the query latency, a bigger history, 16 clients, 20 s per run
//! cargo run --release -p payoff-benches --bin ledger-load -- --phases queries \
//!     --visitors 10000 --concurrency 16 --duration 20s
//! # only the freshness, at the program's own grace (10 s) and at 200 ms, 100 orders/s
//! cargo run --release -p payoff-benches --bin ledger-load -- --phases freshness \
//!     --grace 10s,200ms --orders-per-sec 100
//! ```
//!
//! It prints progress on stderr and, at the end, a summary on stdout that starts with the
//! exact command line.
//!
//! Every service runs in this process on 127.0.0.1:0, each phase on its own topics (unique
//! prefix) and its own CQL keyspace (dropped at the end unless `--keep`):
//!
//! 1. **Queries.** A generated scenario (`payoff_tests::scenario`, the example program)
//!    is produced to the input topics; the attributor turns it into credits and the
//!    ledger folds them into Cassandra. Once every creator's balance equals the offline
//!    engine's (`payoff replay`), `--concurrency` clients, each on its own connection,
//!    call `Ledger.GetBalance` (as of now), then `Ledger.ListEntries` (pages of 100,
//!    walking each creator's pages), with a `read` key. Each query kind gets runs of
//!    `--duration`: every client as fast as it can (waiting for each answer: the
//!    throughput, latency at saturation), then all of them paced together at half that
//!    throughput, then at each `--rates` value (latency at a stated load, counted from
//!    the instant each request was due, less the 1 ms resolution of tokio's timer that
//!    wakes the paced clients). Latency is the client's, from request to decoded
//!    answer. The output gives the entries per creator: both queries need a creator's
//!    whole history (from the ledger's query cache while the creator's projection marks,
//!    read from Cassandra on every query, are unchanged). Then, at each `--rates` value,
//!    two floors under every query: the gRPC round trip alone
//!    (`grpc.health.v1.Health/Check` on the ledger) and one CQL read of a creator's
//!    projection marks, from this process.
//! 2. **Freshness**, once per `--grace` value: the example program with that grace period
//!    is published; ingest, the attributor and the ledger run in this process. Visitors
//!    click a creator's link and order `--click-lead` later (the program flags orders
//!    sooner than 3 s after their click as fraud); other visitors only click. Everything
//!    goes through `Ingest.Send`, one event per request, with event time = now, at
//!    `--orders-per-sec` orders and `--clicks-per-order` clicks per order, on many
//!    visitors so that every partition has traffic. For every order sent during the
//!    measured `--window` (after `--warmup`), freshness is the time from `Send`'s
//!    acknowledgement to the first `Ledger.ExplainOrder` answer that holds an accrual for
//!    the order. The query is issued as soon as a `Ledger.Watch` stream shows an accrual
//!    of the order (the ledger announces entries after writing them), and again every
//!    20 ms until the answer holds it; without a watch update it is polled from
//!    grace + 2 s on. Load continues at the same rate until every measured order is seen
//!    (the reorder buffer releases an order only when newer events arrive). A reader of
//!    `credits` (read_committed, like the ledger) splits the time: acknowledgement →
//!    the order's credit readable, and the rest (the ledger's part).
//!
//! Why freshness cannot beat the grace period: the attributor holds each event until its
//! partition's watermark (largest event time seen less the program's grace period)
//! passes it, then commits credits and progress markers once per transaction
//! (`--attributor-batch-interval`); the ledger folds a credit once every attributor
//! task's marker has passed it and writes every `--ledger-batch-interval`. So freshness
//! ≥ grace + up to one attributor batch + one ledger batch + the writes.
//!
//! All of it, load generator included, shares the machine with Kafka and Cassandra: the
//! figures are for this machine and say so in the output with the command line. Every
//! wait is bounded by a deadline.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use payoff_adapters::{
    cql::{self, CqlSettings, Replication},
    kafka::{self as adapters, StartFrom},
    progress, schema,
    topology::{self, Topics},
};
use payoff_core::{engine::Engine, time::Timestamp};
use payoff_ledger::config::humantime_duration;
use payoff_proto::{
    convert::to_timestamp,
    v1::{self, event::Payload, ingest_client::IngestClient, ledger_client::LedgerClient},
};
use payoff_runtime::auth::hash_secret;
use payoff_tests::scenario::{self, Options, Scenario};
use prost::Message as _;
use rdkafka::{
    Message as _, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer as _},
    message::Headers as _,
    producer::{FutureProducer, FutureRecord},
};
use rust_decimal::Decimal;
use scylla::statement::prepared::PreparedStatement;
use tokio::{sync::oneshot, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The allocator every payoff binary uses ([`payoff_runtime::Allocator`]).
#[global_allocator]
static ALLOCATOR: payoff_runtime::Allocator = payoff_runtime::Allocator;

const READ_KEY: &str = "ledger-load-read-secret";
const INGEST_KEY: &str = "ledger-load-ingest-secret";
/// Links of campaigns that pay a share of sales (an order on them books an accrual).
const SALES_LINKS: [&str; 6] = [
    "anna-spring",
    "ben-spring",
    "chloe-skin",
    "ben-skin",
    "emma-amb",
    "anna-amb",
];
const FOLD_DEADLINE: Duration = Duration::from_secs(300);
const PAGE: u32 = 100;
/// The resolution of tokio's timer: how late a paced tick may wake through no fault of
/// the ledger.
const TIMER_RESOLUTION: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    /// Query latency of GetBalance and ListEntries.
    Queries,
    /// Freshness: ingest acknowledgement → commission in a query.
    Freshness,
}

/// Load benchmark for payoff-ledger: query latency and freshness.
#[derive(Debug, Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "PAYOFF_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// CQL contact points, comma-separated host:port.
    #[arg(long, env = "PAYOFF_SCYLLA_NODES", default_value = "127.0.0.1:9042")]
    scylla_nodes: String,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Phases to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "queries,freshness"
    )]
    phases: Vec<Phase>,
    /// Queries: visitor journeys in the generated scenario (its history in the ledger).
    #[arg(long, default_value_t = 3_000)]
    visitors: usize,
    /// Queries: the scenario's seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Queries: concurrent clients, each on its own connection.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Queries: how long each load run lasts (per query kind: as fast as the clients
    /// can, then paced at half the rate they reached, then at each of --rates).
    #[arg(long, value_parser = humantime_duration, default_value = "10s")]
    duration: Duration,
    /// Queries: stated loads (requests/s, all clients together) to measure each query
    /// kind at, after the saturation and half-saturation runs; empty for none.
    #[arg(long, value_delimiter = ',', default_value = "100,400")]
    rates: Vec<f64>,
    /// Freshness: the program's grace period, one run per value (the example program's
    /// own is 10s).
    #[arg(long, value_parser = humantime_duration, value_delimiter = ',', default_value = "10s,200ms")]
    grace: Vec<Duration>,
    /// Freshness: orders per second sent through ingest.
    #[arg(long, default_value_t = 50.0)]
    orders_per_sec: f64,
    /// Freshness: clicks per order (one by the ordering visitor, the rest by visitors who
    /// only click).
    #[arg(long, default_value_t = 10)]
    clicks_per_order: usize,
    /// Freshness: time from a visitor's click to its order (at least the program's
    /// 3 s minimum, or the order is flagged as fraud).
    #[arg(long, value_parser = humantime_duration, default_value = "5s")]
    click_lead: Duration,
    /// Freshness: orders of the first this long are not measured (group joins, startup).
    #[arg(long, value_parser = humantime_duration, default_value = "5s")]
    warmup: Duration,
    /// Freshness: orders sent during this window (after the warmup) are measured.
    #[arg(long, value_parser = humantime_duration, default_value = "20s")]
    window: Duration,
    /// The attributor's --batch-interval (its default).
    #[arg(long, value_parser = humantime_duration, default_value = "100ms")]
    attributor_batch_interval: Duration,
    /// The ledger's --batch-interval (its default).
    #[arg(long, value_parser = humantime_duration, default_value = "20ms")]
    ledger_batch_interval: Duration,
    /// Keep the benchmark keyspaces (dropped by default; topics are always kept).
    #[arg(long)]
    keep: bool,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn with_key<T>(key: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {key}").parse().expect("ascii");
    request.metadata_mut().insert("authorization", value);
    request
}

/// The 1-minute load average (Linux), to tell a busy machine in the output.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One phase's topics, keyspace, API keys and in-process services.
struct Env {
    brokers: String,
    scylla_nodes: String,
    prefix: String,
    keyspace: String,
    keys: tempfile::NamedTempFile,
    session: scylla::client::session::Session,
    producer: FutureProducer,
    topics: Topics,
    stops: Vec<(
        &'static str,
        CancellationToken,
        JoinHandle<anyhow::Result<()>>,
    )>,
}

impl Env {
    /// Topics, keyspace (migrated), keys file, and the program published.
    async fn new(args: &Args, name: &str, program: &v1::Program) -> anyhow::Result<Self> {
        let prefix = format!("bench-ledger-{}-{name}.", std::process::id());
        let topics = Topics::with_prefix(&prefix);
        adapters::ensure_topics(
            &args.brokers,
            &topics.specs(args.partitions, 1),
            Duration::from_secs(30),
        )
        .await
        .context("create topics")?;
        let keyspace = format!("bench_ledger_{}_{name}", std::process::id());
        let session = cql::connect(&CqlSettings::from_node_list(&args.scylla_nodes))
            .await
            .context("connect to Cassandra")?;
        cql::create_keyspace(&session, &keyspace, &Replication::Simple { factor: 1 }).await?;
        schema::migrate(&session, &keyspace).await?;
        let keys = tempfile::NamedTempFile::new()?;
        std::fs::write(
            keys.path(),
            format!(
                r#"{{"keys":[{{"id":"dash","tenant":"{t}","role":"read","sha256":"{r}"}},{{"id":"shop","tenant":"{t}","role":"ingest","sha256":"{i}"}}]}}"#,
                t = scenario::TENANT,
                r = hash_secret(READ_KEY),
                i = hash_secret(INGEST_KEY)
            ),
        )?;
        let mut config = adapters::base_config(&args.brokers, "ledger-load")?;
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .set("partitioner", topology::PARTITIONER);
        let producer: FutureProducer = config.create()?;
        let key = topology::key(&[scenario::TENANT, "1"]);
        producer
            .send(
                FutureRecord::to(&topics.programs)
                    .key(&key)
                    .payload(&program.encode_to_vec()),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .context("publish the program")?;
        Ok(Self {
            brokers: args.brokers.clone(),
            scylla_nodes: args.scylla_nodes.clone(),
            prefix,
            keyspace,
            keys,
            session,
            producer,
            topics,
            stops: Vec::new(),
        })
    }

    fn name(&self, what: &str) -> String {
        format!("{}{what}", self.prefix)
    }

    /// The attributor, in this process.
    fn start_attributor(&mut self, batch_interval: Duration) -> anyhow::Result<()> {
        let config = payoff_attributor::Config::try_parse_from([
            "payoff-attributor",
            "--kafka-brokers",
            &self.brokers,
            "--topic-prefix",
            &self.prefix,
            "--group-id",
            &self.name("attributor"),
            "--instance-id",
            &self.name("attributor-0"),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--batch-interval",
            &format!("{}ms", batch_interval.as_millis()),
            "--log-format",
            "text",
        ])?;
        let token = CancellationToken::new();
        let run = payoff_attributor::run(config, token.clone());
        let task = tokio::spawn(async move { run.await.map_err(anyhow::Error::from) });
        self.stops.push(("attributor", token, task));
        Ok(())
    }

    /// The ledger, in this process; its gRPC address.
    async fn start_ledger(&mut self, batch_interval: Duration) -> anyhow::Result<String> {
        let config = payoff_ledger::Config::try_parse_from([
            "payoff-ledger",
            "--kafka-brokers",
            &self.brokers,
            "--scylla-nodes",
            &self.scylla_nodes,
            "--keyspace",
            &self.keyspace,
            "--topic-prefix",
            &self.prefix,
            "--group-id",
            &self.name("ledger"),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--api-keys",
            &self.keys.path().display().to_string(),
            "--batch-interval",
            &format!("{}ms", batch_interval.as_millis()),
            "--log-format",
            "text",
        ])?;
        // `Bound::serve`'s future is not `Send` (the compiler cannot prove it for every
        // lifetime), so it cannot be `tokio::spawn`ed: the ledger gets its own thread and
        // runtime, as it would have its own process.
        let token = CancellationToken::new();
        let (bound_tx, bound_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let stop = token.clone();
        std::thread::Builder::new()
            .name("ledger".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = bound_tx.send(Err(anyhow::Error::from(e)));
                        return;
                    }
                };
                let result = runtime.block_on(async move {
                    let bound = match payoff_ledger::bind(config, stop).await {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = bound_tx.send(Err(anyhow::Error::from(e)));
                            return Ok(());
                        }
                    };
                    let _ = bound_tx.send(Ok(bound.grpc_addr));
                    bound.serve().await
                });
                let _ = done_tx.send(result.map_err(anyhow::Error::from));
            })?;
        let addr = format!("http://{}", bound_rx.await.context("ledger thread")??);
        let task = tokio::spawn(async move { done_rx.await.context("ledger thread")? });
        self.stops.push(("ledger", token, task));
        Ok(addr)
    }

    /// Ingest, in this process; its gRPC address.
    async fn start_ingest(&mut self) -> anyhow::Result<String> {
        let config = payoff_ingest::Config::try_parse_from([
            "payoff-ingest",
            "--kafka-brokers",
            &self.brokers,
            "--topic-prefix",
            &self.prefix,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--api-keys",
            &self.keys.path().display().to_string(),
            "--pii-secret",
            "ledger-load",
            "--rate-per-key",
            "0",
            "--log-format",
            "text",
        ])?;
        let token = CancellationToken::new();
        let bound = payoff_ingest::bind(config, token.clone()).await?;
        let addr = format!("http://{}", bound.grpc_addr);
        let task = tokio::spawn(async move { bound.serve().await.map_err(anyhow::Error::from) });
        self.stops.push(("ingest", token, task));
        Ok(addr)
    }

    /// Stops the services (ingest first, the ledger last) and drops the keyspace unless
    /// `keep`.
    async fn stop(mut self, keep: bool) -> anyhow::Result<()> {
        while let Some((name, token, task)) = self.stops.pop() {
            token.cancel();
            match tokio::time::timeout(Duration::from_secs(30), task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => eprintln!("  {name} stopped with an error: {e:#}"),
                Ok(Err(e)) => eprintln!("  {name} panicked: {e}"),
                Err(_) => eprintln!("  {name} did not stop within 30 s"),
            }
        }
        if !keep {
            self.session
                .query_unpaged(format!("DROP KEYSPACE IF EXISTS {}", self.keyspace), ())
                .await
                .context("drop keyspace")?;
        }
        Ok(())
    }
}

async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(addr.to_owned())?.connect().await?)
}

fn decimal(m: Option<&v1::Money>) -> Decimal {
    m.and_then(|m| m.amount.parse::<Decimal>().ok())
        .unwrap_or_default()
        .normalize()
}

type Balances = BTreeMap<(String, String), [Decimal; 5]>;

async fn balances(
    client: &mut LedgerClient<Channel>,
    creators: &[String],
    as_of: Timestamp,
) -> anyhow::Result<Balances> {
    let mut out = BTreeMap::new();
    for creator in creators {
        let b = client
            .get_balance(with_key(
                READ_KEY,
                v1::GetBalanceRequest {
                    creator_id: creator.clone(),
                    campaign_id: String::new(),
                    as_of: Some(to_timestamp(as_of)),
                },
            ))
            .await?
            .into_inner();
        for c in b.currencies {
            out.insert(
                (creator.clone(), c.currency.clone()),
                [
                    decimal(c.pending.as_ref()),
                    decimal(c.approved.as_ref()),
                    decimal(c.paid.as_ref()),
                    decimal(c.reversed.as_ref()),
                    decimal(c.available.as_ref()),
                ],
            );
        }
    }
    Ok(out)
}

/// What the query phase measured.
struct QueryFigures {
    events: usize,
    entries: usize,
    per_creator: BTreeMap<String, usize>,
    fold_secs: f64,
    /// Per query kind: as fast as the clients can, then paced at half that rate, then at
    /// each stated rate; with how each run was driven.
    balance: Vec<(String, Run)>,
    page: Vec<(String, Run)>,
    /// The floors under them, at each stated rate: a gRPC round trip, a marks read.
    health: Vec<(String, Run)>,
    marks: Vec<(String, Run)>,
}

#[derive(Debug, Clone, Copy)]
enum Query {
    Balance,
    Page,
    /// `grpc.health.v1.Health/Check` on the ledger: the gRPC round trip alone (no key, no
    /// store), a floor under every query's latency.
    Health,
    /// One CQL read of a creator's projection marks, straight from this process: what
    /// each query asks Cassandra before it answers from the cache.
    Marks,
}

/// What the clients of a run talk to.
#[derive(Clone)]
struct Targets {
    /// The ledger's gRPC address.
    addr: String,
    /// A session and the marks read (the ledger's own statement) for [`Query::Marks`].
    marks: Arc<(scylla::client::session::Session, PreparedStatement)>,
}

/// One load run of one query kind.
struct Run {
    /// Latency in µs.
    latency: Histogram<u64>,
    requests: usize,
    per_sec: f64,
    errors: usize,
}

/// `clients` concurrent clients issue `query` for `duration`, each as fast as it can
/// (`rate` None: each waits for its answer, then asks again) or paced so that all of
/// them together ask `rate` times a second. Paced latency counts from the instant the
/// request was due, so a slow answer that delays the next request is not hidden.
async fn drive(
    targets: &Targets,
    query: Query,
    creators: &[String],
    clients: usize,
    duration: Duration,
    rate: Option<f64>,
) -> anyhow::Result<Run> {
    let mut tasks = Vec::new();
    let mut channels = Vec::new();
    for _ in 0..clients {
        channels.push(connect(&targets.addr).await?);
    }
    let start = Instant::now();
    let end = start + duration;
    for (c, channel) in channels.into_iter().enumerate() {
        let mut health = HealthClient::new(channel.clone());
        let mut client = LedgerClient::new(channel);
        let marks = targets.marks.clone();
        let creators = creators.to_vec();
        let mut ticker = rate.map(|r| {
            let period = Duration::from_secs_f64(clients as f64 / r);
            // Clients spread over one period.
            let first = tokio::time::Instant::now() + period.mul_f64(c as f64 / clients as f64);
            let mut t = tokio::time::interval_at(first, period);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            t
        });
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut errors = 0usize;
            let mut tokens: HashMap<String, String> = HashMap::new();
            let mut i = c;
            while Instant::now() < end {
                let creator = &creators[i % creators.len()];
                i += 1;
                let t0 = match ticker.as_mut() {
                    // tokio's timer wakes a tick up to its resolution (1 ms) after the
                    // instant asked for: that much lateness is the timer's, not the
                    // ledger's. Anything beyond it (a client behind its schedule because
                    // answers were slow) is charged from the instant the request was due.
                    Some(t) => {
                        let due = t.tick().await.into_std();
                        Instant::now().min(due + TIMER_RESOLUTION)
                    }
                    None => Instant::now(),
                };
                let ok = match query {
                    Query::Balance => client
                        .get_balance(with_key(
                            READ_KEY,
                            v1::GetBalanceRequest {
                                creator_id: creator.clone(),
                                campaign_id: String::new(),
                                as_of: None,
                            },
                        ))
                        .await
                        .map(|r| !r.into_inner().currencies.is_empty()),
                    Query::Page => {
                        let token = tokens.entry(creator.clone()).or_default();
                        client
                            .list_entries(with_key(
                                READ_KEY,
                                v1::ListEntriesRequest {
                                    creator_id: creator.clone(),
                                    campaign_id: String::new(),
                                    range: None,
                                    page_size: PAGE,
                                    page_token: token.clone(),
                                },
                            ))
                            .await
                            .map(|r| {
                                let page = r.into_inner();
                                *token = page.next_page_token;
                                !page.entries.is_empty()
                            })
                    }
                    Query::Health => health
                        .check(HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .map(|r| r.into_inner().status == ServingStatus::Serving as i32),
                    Query::Marks => {
                        let (session, statement) = &*marks;
                        Ok(session
                            .execute_unpaged(statement, (scenario::TENANT, "creator", creator))
                            .await
                            .is_ok_and(|r| {
                                r.into_rows_result().is_ok_and(|rows| rows.rows_num() > 0)
                            }))
                    }
                };
                let elapsed = t0.elapsed();
                match ok {
                    Ok(true) => h.record(micros(elapsed))?,
                    Ok(false) | Err(_) => errors += 1,
                }
            }
            anyhow::Ok((h, errors))
        }));
    }
    let mut latency = histogram();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await??;
        latency.add(&h)?;
        errors += e;
    }
    let secs = start.elapsed().as_secs_f64();
    let requests = usize::try_from(latency.len()).unwrap_or(usize::MAX);
    Ok(Run {
        latency,
        requests,
        per_sec: requests as f64 / secs,
        errors,
    })
}

/// After every event but the sentinels, so that holds are settled alike in both.
fn report_instant(scenario: &Scenario) -> Timestamp {
    let last = scenario
        .core_events()
        .iter()
        .filter(|e| !e.id.as_str().starts_with("sentinel-"))
        .map(|e| e.occurred_at)
        .max()
        .unwrap_or(Timestamp(0));
    last.plus(payoff_core::time::Duration::hours(24 * 400))
}

async fn query_phase(args: &Args) -> anyhow::Result<QueryFigures> {
    eprintln!("queries: generating {} visitor journeys", args.visitors);
    let scenario = scenario::generate(Options {
        seed: args.seed,
        visitors: args.visitors,
        sentinels: 100,
    });
    let mut engine = Engine::new(scenario.programs());
    for e in scenario.core_events() {
        engine.push(e);
    }
    engine.finish();
    let report = engine.report(report_instant(&scenario));
    let want: Balances = report
        .balances
        .iter()
        .map(|b| {
            (
                (b.creator.as_str().to_owned(), b.currency.code().to_owned()),
                [
                    b.pending.amount.normalize(),
                    b.approved.amount.normalize(),
                    b.paid.amount.normalize(),
                    b.reversed.amount.normalize(),
                    b.available.amount.normalize(),
                ],
            )
        })
        .collect();
    let mut per_creator: BTreeMap<String, usize> = BTreeMap::new();
    for e in &report.entries {
        *per_creator
            .entry(e.entry.creator.as_str().to_owned())
            .or_default() += 1;
    }
    let creators: Vec<String> = want
        .keys()
        .map(|(c, _)| c.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();

    let mut env = Env::new(args, "queries", &scenario.program).await?;
    let records: Vec<(String, String, Vec<u8>)> = scenario
        .records(&env.topics)
        .into_iter()
        .map(|(t, k, e)| (t, k, e.encode_to_vec()))
        .collect();
    let events = records.len();
    eprintln!(
        "queries: producing {events} events; the engine books {} entries for {} creators",
        report.entries.len(),
        creators.len()
    );
    let mut deliveries = Vec::with_capacity(records.len());
    for (topic, key, payload) in &records {
        deliveries.push(
            env.producer
                .send_result(FutureRecord::to(topic).key(key).payload(payload))
                .map_err(|(e, _)| e)?,
        );
    }
    for d in deliveries {
        d.await
            .context("delivery dropped")?
            .map_err(|(e, _)| e)
            .context("not delivered")?;
    }
    let started = Instant::now();
    let addr = env.start_ledger(args.ledger_batch_interval).await?;
    env.start_attributor(args.attributor_batch_interval)?;
    let mut client = LedgerClient::new(connect(&addr).await?);
    let mut last_report = Instant::now();
    loop {
        let got = balances(&mut client, &creators, report.as_of).await?;
        if got == want {
            break;
        }
        if started.elapsed() > FOLD_DEADLINE {
            bail!(
                "the ledger's balances differ from the engine's after {} s: {} of {} (creator, currency) equal",
                FOLD_DEADLINE.as_secs(),
                want.iter().filter(|(k, v)| got.get(*k) == Some(*v)).count(),
                want.len()
            );
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "  folding: {} of {} balances equal the engine's",
                want.iter().filter(|(k, v)| got.get(*k) == Some(*v)).count(),
                want.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let fold_secs = started.elapsed().as_secs_f64();
    eprintln!("queries: folded; every balance equals the engine's ({fold_secs:.1} s)");
    let marks_session = cql::connect(&CqlSettings::from_node_list(&args.scylla_nodes))
        .await
        .context("connect to Cassandra")?;
    let marks_read = marks_session
        .prepare(format!(
            "SELECT source, mark FROM {}.projection_marks WHERE tenant = ? AND scope = ? AND id = ?",
            env.keyspace
        ))
        .await
        .context("prepare the marks read")?;
    let targets = Targets {
        addr,
        marks: Arc::new((marks_session, marks_read)),
    };
    let mut figures = Vec::new();
    // The queries: as fast as the clients can, then paced at half that rate, then at each
    // stated rate. The floors (what any answer costs before the query's own work): at the
    // stated rates only.
    for query in [Query::Balance, Query::Page, Query::Health, Query::Marks] {
        let mut runs = Vec::new();
        let mut paced: Vec<(String, f64)> = args
            .rates
            .iter()
            .map(|&rate| (format!("paced at {rate:.0}/s"), rate))
            .collect();
        if matches!(query, Query::Balance | Query::Page) {
            // Warm up connections and caches a little, unmeasured.
            drive(
                &targets,
                query,
                &creators,
                args.concurrency,
                Duration::from_secs(1),
                None,
            )
            .await?;
            eprintln!(
                "queries: {query:?}, {} clients as fast as they can, {} s",
                args.concurrency,
                args.duration.as_secs_f64()
            );
            let max = drive(
                &targets,
                query,
                &creators,
                args.concurrency,
                args.duration,
                None,
            )
            .await?;
            paced.insert(0, ("paced at half that".to_owned(), max.per_sec / 2.0));
            runs.push(("as fast as they can".to_owned(), max));
        }
        for (how, rate) in paced {
            eprintln!(
                "queries: {query:?}, {} clients {how} ({rate:.0} requests/s in all), {} s",
                args.concurrency,
                args.duration.as_secs_f64()
            );
            let run = drive(
                &targets,
                query,
                &creators,
                args.concurrency,
                args.duration,
                Some(rate),
            )
            .await?;
            runs.push((how, run));
        }
        figures.push(runs);
    }
    let marks = figures.pop().context("marks figures")?;
    let health = figures.pop().context("health figures")?;
    let page = figures.pop().context("page figures")?;
    let balance = figures.pop().context("balance figures")?;
    env.stop(args.keep).await?;
    Ok(QueryFigures {
        events,
        entries: report.entries.len(),
        per_creator,
        fold_secs,
        balance,
        page,
        health,
        marks,
    })
}

/// What one freshness run measured.
struct FreshnessFigures {
    grace: Duration,
    orders_per_sec: f64,
    clicks_per_sec: f64,
    measured: usize,
    freshness: Histogram<u64>,
    ack: Histogram<u64>,
    /// Acknowledgement → the order's credit readable in `credits`.
    to_credit: Histogram<u64>,
    missing: usize,
    by_watch: usize,
    send_errors: usize,
}

fn timestamp_now() -> pbjson_types::Timestamp {
    let ms = now_millis();
    pbjson_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn click(id: String, visitor: String, link: &str) -> v1::Event {
    v1::Event {
        event_id: id,
        occurred_at: Some(timestamp_now()),
        payload: Some(Payload::Click(v1::Click {
            visitor_id: visitor,
            link_code: link.to_owned(),
            utm: Some(v1::Utm {
                source: "instagram".into(),
                ..Default::default()
            }),
            landing_url: "https://shop.example/spring".into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn order(n: usize, visitor: String) -> (String, v1::Event) {
    let order_id = format!("order-{n:08}");
    let cents = 1_500 + (n * 7_919) % 30_000;
    let amount = format!("{}.{:02}", cents / 100, cents % 100);
    let event = v1::Event {
        event_id: format!("ord-{n:08}"),
        occurred_at: Some(timestamp_now()),
        payload: Some(Payload::Order(v1::Order {
            visitor_id: visitor,
            order_id: order_id.clone(),
            amount: Some(v1::Money {
                amount: amount.clone(),
                currency: "USD".into(),
            }),
            line_items: vec![v1::LineItem {
                sku: "sku-1".into(),
                category: "skincare".into(),
                quantity: 1,
                unit_price: amount,
            }],
            email: format!("buyer{n}@mail.example"),
            ..Default::default()
        })),
        ..Default::default()
    };
    (order_id, event)
}

/// Sends one event; whether ingest accepted it.
async fn send(mut client: IngestClient<Channel>, event: v1::Event) -> bool {
    client
        .send(with_key(INGEST_KEY, v1::SendRequest { event: Some(event) }))
        .await
        .is_ok_and(|r| {
            r.into_inner()
                .result
                .is_some_and(|r| r.status() == v1::event_result::Status::Accepted)
        })
}

fn has_accrual(explanation: &v1::OrderExplanation) -> bool {
    explanation
        .entries
        .iter()
        .any(|e| e.kind() == v1::EntryKind::Accrual)
}

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;
/// When each order event's first credit became readable in `credits`, by event id.
type Credited = Arc<Mutex<HashMap<String, Instant>>>;

/// Reads `credits` (read_committed, as the ledger does) from its beginning until `stop`,
/// noting when each order's first credit became readable.
fn read_credits(
    brokers: &str,
    topic: &str,
    partitions: i32,
    credited: &Credited,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut config = adapters::read_committed_consumer_config(
        brokers,
        &format!("reader-{topic}"),
        StartFrom::Earliest,
    )?;
    config.set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer = config.create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                if m.headers()
                    .is_some_and(|h| h.iter().any(|h| h.key == progress::HEADER))
                {
                    continue;
                }
                let Ok(credit) = v1::Credit::decode(m.payload().unwrap_or_default()) else {
                    continue;
                };
                if matches!(credit.kind, Some(v1::credit::Kind::Order(_)))
                    && let Ok(mut c) = credited.lock()
                {
                    c.entry(credit.cause_event_id).or_insert_with(Instant::now);
                }
            }
            Some(Err(e)) => bail!("reading {topic}: {e}"),
            None => {}
        }
    }
    Ok(())
}

/// What one measured order took.
struct Measured {
    /// Send → acknowledgement.
    ack: Duration,
    /// Acknowledgement → an ExplainOrder answer with the accrual.
    freshness: Duration,
    /// Acknowledgement → its credit readable in `credits` (when the reader saw it).
    credited: Option<Duration>,
    /// The query was prompted by the watch (not by polling).
    by_watch: bool,
}

/// One measured order: sent, acknowledged, then queried until its accrual is returned;
/// None when it was not accepted or not seen before the deadline.
async fn measure_order(
    ingest: IngestClient<Channel>,
    mut ledger: LedgerClient<Channel>,
    order_id: String,
    event: v1::Event,
    notified: oneshot::Receiver<()>,
    grace: Duration,
    credited: Credited,
) -> Option<Measured> {
    let event_id = event.event_id.clone();
    let t0 = Instant::now();
    if !send(ingest, event).await {
        return None;
    }
    let acked = Instant::now();
    let deadline = acked + grace + Duration::from_secs(60);
    let by_watch = tokio::time::timeout(grace + Duration::from_secs(2), notified)
        .await
        .is_ok_and(|r| r.is_ok());
    loop {
        let answer = ledger
            .explain_order(with_key(
                READ_KEY,
                v1::ExplainOrderRequest {
                    order_id: order_id.clone(),
                },
            ))
            .await;
        if answer.is_ok_and(|a| has_accrual(a.get_ref())) {
            let freshness = acked.elapsed();
            let credited = credited
                .lock()
                .ok()
                .and_then(|c| c.get(&event_id).copied())
                .map(|at| at.saturating_duration_since(acked));
            return Some(Measured {
                ack: acked - t0,
                freshness,
                credited,
                by_watch,
            });
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(if by_watch {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(100)
        })
        .await;
    }
}

async fn freshness_phase(args: &Args, grace: Duration) -> anyhow::Result<FreshnessFigures> {
    let mut program = scenario::example_program();
    let settings = program.settings.get_or_insert_with(Default::default);
    settings.grace_period = Some(pbjson_types::Duration {
        seconds: i64::try_from(grace.as_secs())?,
        nanos: i32::try_from(grace.subsec_nanos())?,
    });
    let name = format!("fresh{}ms", grace.as_millis());
    let mut env = Env::new(args, &name, &program).await?;
    let ledger_addr = env.start_ledger(args.ledger_batch_interval).await?;
    env.start_attributor(args.attributor_batch_interval)?;
    let ingest_addr = env.start_ingest().await?;
    let credited: Credited = Arc::new(Mutex::new(HashMap::new()));
    let stop_reader = Arc::new(AtomicBool::new(false));
    let reader = {
        let (brokers, topic, partitions) = (
            args.brokers.clone(),
            env.topics.credits.clone(),
            args.partitions,
        );
        let (credited, stop) = (credited.clone(), stop_reader.clone());
        tokio::task::spawn_blocking(move || {
            read_credits(&brokers, &topic, partitions, &credited, &stop)
        })
    };
    let ingest = IngestClient::new(connect(&ingest_addr).await?);
    let ledger_channel = connect(&ledger_addr).await?;

    // The watch: an accrual of a waited-for order wakes its waiter.
    let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
    let mut stream = LedgerClient::new(ledger_channel.clone())
        .watch(with_key(READ_KEY, v1::WatchRequest::default()))
        .await?
        .into_inner();
    let watcher = {
        let waiters = waiters.clone();
        tokio::spawn(async move {
            while let Ok(Some(event)) = stream.message().await {
                if let Some(v1::watch_event::Update::Entry(e)) = event.update
                    && e.kind() == v1::EntryKind::Accrual
                    && !e.order_id.is_empty()
                    && let Some(tx) = waiters.lock().ok().and_then(|mut w| w.remove(&e.order_id))
                {
                    let _ = tx.send(());
                }
            }
        })
    };

    let period = Duration::from_secs_f64(1.0 / args.orders_per_sec);
    let lead =
        usize::try_from((args.click_lead.as_secs_f64() * args.orders_per_sec).ceil() as u64)?;
    let browse = args.clicks_per_order.saturating_sub(1);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let send_errors = Arc::new(AtomicUsize::new(0));
    let pending = Arc::new(AtomicUsize::new(0));
    let mut measured = tokio::task::JoinSet::new();
    let mut sent_orders = 0usize;
    let mut sent_clicks = 0usize;
    let started = Instant::now();
    let mut orders_started: Option<Instant> = None;
    let hard_deadline =
        started + args.click_lead + args.warmup + args.window + grace * 3 + Duration::from_secs(90);
    let mut last_report = Instant::now();
    eprintln!(
        "freshness (grace {} ms): {} orders/s, {} clicks/order, click → order {} s; measuring orders of {} s after {} s of warmup",
        grace.as_millis(),
        args.orders_per_sec,
        args.clicks_per_order,
        args.click_lead.as_secs_f64(),
        args.window.as_secs_f64(),
        args.warmup.as_secs_f64()
    );
    let spawn_send = |event: v1::Event| {
        let (client, errors) = (ingest.clone(), send_errors.clone());
        tokio::spawn(async move {
            if !send(client, event).await {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    };
    let mut n = 0usize;
    loop {
        ticker.tick().await;
        let now = Instant::now();
        let window_over = orders_started.is_some_and(|s| now > s + args.warmup + args.window);
        if window_over && pending.load(Ordering::Relaxed) == 0 {
            break;
        }
        if now > hard_deadline {
            eprintln!(
                "  deadline: {} measured orders not seen yet",
                pending.load(Ordering::Relaxed)
            );
            break;
        }
        // The visitor who orders later clicks now.
        let link = SALES_LINKS[n % SALES_LINKS.len()];
        spawn_send(click(format!("clk-{n:08}"), format!("buyer-{n:08}"), link));
        sent_clicks += 1;
        for j in 0..browse {
            let link = SALES_LINKS[(n + j) % SALES_LINKS.len()];
            spawn_send(click(
                format!("clk-{n:08}-{j}"),
                format!("browser-{n:08}-{j}"),
                link,
            ));
            sent_clicks += 1;
        }
        if n >= lead {
            let o = n - lead;
            let (order_id, event) = order(o, format!("buyer-{o:08}"));
            let s = *orders_started.get_or_insert(now);
            sent_orders += 1;
            let in_window = now >= s + args.warmup && now <= s + args.warmup + args.window;
            if in_window {
                let (tx, rx) = oneshot::channel();
                if let Ok(mut w) = waiters.lock() {
                    w.insert(order_id.clone(), tx);
                }
                pending.fetch_add(1, Ordering::Relaxed);
                let (ingest, ledger, pending, credited) = (
                    ingest.clone(),
                    LedgerClient::new(ledger_channel.clone()),
                    pending.clone(),
                    credited.clone(),
                );
                measured.spawn(async move {
                    let r =
                        measure_order(ingest, ledger, order_id, event, rx, grace, credited).await;
                    pending.fetch_sub(1, Ordering::Relaxed);
                    r
                });
            } else {
                spawn_send(event);
            }
        }
        n += 1;
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "  {:.0} s: {sent_orders} orders, {sent_clicks} clicks sent; {} measured orders waiting",
                started.elapsed().as_secs_f64(),
                pending.load(Ordering::Relaxed)
            );
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut freshness = histogram();
    let mut ack = histogram();
    let mut to_credit = histogram();
    let mut missing = 0;
    let mut by_watch = 0;
    let mut count = 0;
    while let Some(r) = measured.join_next().await {
        count += 1;
        match r? {
            Some(m) => {
                ack.record(micros(m.ack))?;
                freshness.record(micros(m.freshness))?;
                if let Some(c) = m.credited {
                    to_credit.record(micros(c))?;
                }
                by_watch += usize::from(m.by_watch);
            }
            None => missing += 1,
        }
    }
    watcher.abort();
    stop_reader.store(true, Ordering::Relaxed);
    reader.await??;
    env.stop(args.keep).await?;
    Ok(FreshnessFigures {
        grace,
        orders_per_sec: sent_orders as f64 / (elapsed - args.click_lead.as_secs_f64()).max(1e-3),
        clicks_per_sec: sent_clicks as f64 / elapsed,
        measured: count,
        freshness,
        ack,
        to_credit,
        missing,
        by_watch,
        send_errors: send_errors.load(Ordering::Relaxed),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    payoff_runtime::telemetry::init_logging(payoff_runtime::telemetry::LogFormat::Text, "warn");
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let load_before = load_average();
    let queries = if args.phases.contains(&Phase::Queries) {
        Some(query_phase(&args).await?)
    } else {
        None
    };
    let mut freshness = Vec::new();
    if args.phases.contains(&Phase::Freshness) {
        for grace in &args.grace {
            freshness.push(freshness_phase(&args, *grace).await?);
        }
    }

    println!("ledger-load: {command}");
    if let (Some(before), Some(after)) = (load_before, load_average()) {
        println!(
            "  machine load average (1 min): {before:.2} before, {after:.2} after (besides Kafka, Cassandra and this run, anything else on the machine competes for the cores)"
        );
    }
    println!(
        "  one process (ingest, attributor, ledger, clients) on {} cores with Kafka and Cassandra (single node, QUORUM); {} partitions; attributor batch {} ms, ledger batch {} ms",
        std::thread::available_parallelism().map_or(0, usize::from),
        args.partitions,
        args.attributor_batch_interval.as_millis(),
        args.ledger_batch_interval.as_millis()
    );
    if let Some(q) = &queries {
        let per: Vec<String> = q
            .per_creator
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        println!(
            "  queries: scenario of {} visitors (seed {}): {} events → {} entries (per creator: {}); folded and equal to the engine in {:.1} s",
            args.visitors,
            args.seed,
            q.events,
            q.entries,
            per.join(", "),
            q.fold_secs
        );
        for (name, target, runs) in [
            ("GetBalance (as of now)", Some(5.0), &q.balance),
            ("ListEntries (page of 100)", Some(20.0), &q.page),
            (
                "floor: grpc.health.v1 Check (the gRPC round trip, no key, no store)",
                None,
                &q.health,
            ),
            (
                "floor: one CQL read of a creator's projection marks (each query's first step)",
                None,
                &q.marks,
            ),
        ] {
            match target {
                Some(target) => println!("    {name}, target p99 ≤ {target} ms:"),
                None => println!("    {name}:"),
            }
            for (how, run) in runs {
                let h = &run.latency;
                let p99 = ms(h, 0.99);
                println!(
                    "      {} clients {how:<20} {:>6.0} requests/s: p50 {:>7.2} ms, p99 {:>7.2} ms, max {:>7.2} ms ({} requests in {:.0} s, {} errors): {}",
                    args.concurrency,
                    run.per_sec,
                    ms(h, 0.5),
                    p99,
                    h.max() as f64 / 1000.0,
                    run.requests,
                    args.duration.as_secs_f64(),
                    run.errors,
                    match target {
                        Some(t) if p99 <= t => "met",
                        Some(_) => "NOT met",
                        None => "floor",
                    }
                );
            }
        }
        println!(
            "    (each query reads the creator's projection marks from Cassandra; while they are unchanged the ledger's cache holds every entry, else it reads them all; the sum or page is computed in memory)"
        );
    }
    for f in &freshness {
        let p99 = ms(&f.freshness, 0.99) / 1000.0;
        println!(
            "  freshness, grace {} ms: {:.0} orders/s and {:.0} clicks/s through Ingest.Send; {} orders measured ({} via the watch, {} never seen, {} sends failed)",
            f.grace.as_millis(),
            f.orders_per_sec,
            f.clicks_per_sec,
            f.measured,
            f.by_watch,
            f.missing,
            f.send_errors
        );
        println!(
            "    ack → accrual returned by ExplainOrder: p50 {:.3} s, p99 {:.3} s, max {:.3} s; ingest ack p50 {:.1} ms, p99 {:.1} ms; target p99 ≤ 1 s: {}",
            ms(&f.freshness, 0.5) / 1000.0,
            p99,
            f.freshness.max() as f64 / 1_000_000.0,
            ms(&f.ack, 0.5),
            ms(&f.ack, 0.99),
            if f.freshness.is_empty() {
                "no measurement"
            } else if p99 <= 1.0 {
                "met"
            } else {
                "NOT met"
            }
        );
        println!(
            "    of which ack → its credit readable in `credits` (read_committed): p50 {:.3} s, p99 {:.3} s ({} orders)",
            ms(&f.to_credit, 0.5) / 1000.0,
            ms(&f.to_credit, 0.99) / 1000.0,
            f.to_credit.len()
        );
        println!(
            "    floor: the reorder buffer holds an order until the partition's event time passes it by the grace ({} ms), then up to one attributor transaction ({} ms) and one ledger batch ({} ms) plus the Kafka and Cassandra writes",
            f.grace.as_millis(),
            args.attributor_batch_interval.as_millis(),
            args.ledger_batch_interval.as_millis()
        );
    }
    Ok(())
}
