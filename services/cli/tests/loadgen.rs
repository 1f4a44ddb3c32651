//! `payoff loadgen` against an ingest in this process on 127.0.0.1:0 with its in-memory
//! publisher: every event sent is accepted (or answered as a resent duplicate), the
//! record holds exactly what was sent and reads with `payoff replay`'s reader, the same
//! seed and start time give the same record byte for byte (whatever the batching and
//! concurrency), and the replay of the record books commission.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result};
use payoff_cli::{
    input,
    loadgen::{self, Generator, LoadgenArgs, Summary, payload_type},
    replay,
};
use payoff_core::time::Timestamp;
use payoff_ingest::{Config, config::LogFormat, publisher::MemoryPublisher};
use payoff_proto::{convert, v1};
use payoff_runtime::auth::hash_secret;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

const KEY: &str = "loadgen-test-secret";
const START: &str = "2026-06-01T08:00:00Z";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn program_path() -> PathBuf {
    root().join("deploy/examples/program.json")
}

/// An ingest on loopback with the in-memory publisher, keyed for the example tenant.
struct Ingest {
    addr: SocketAddr,
    publisher: Arc<MemoryPublisher>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), payoff_ingest::IngestError>>,
    _dir: tempfile::TempDir,
}

impl Ingest {
    async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let keys = dir.path().join("keys.json");
        std::fs::write(
            &keys,
            format!(
                r#"{{"keys":[{{"id":"loadgen","tenant":"acme-beauty","role":"ingest","sha256":"{}"}}]}}"#,
                hash_secret(KEY)
            ),
        )?;
        let config = Config {
            listen: "127.0.0.1:0".parse()?,
            metrics_listen: "127.0.0.1:0".parse()?,
            kafka_brokers: String::new(),
            topic_prefix: "payoff.".to_owned(),
            api_keys: Some(keys),
            pii_secret: Some("loadgen-test-pii".to_owned()),
            tls_cert: None,
            tls_key: None,
            max_batch: 500,
            max_message_bytes: 4 * 1024 * 1024,
            max_event_bytes: 64 * 1024,
            max_in_flight: 10_000,
            admit_timeout: Duration::from_secs(5),
            produce_timeout: Duration::from_secs(5),
            rate_per_key: 0,
            dedupe_cache: 1_000_000,
            drain_timeout: Duration::from_secs(10),
            log_format: LogFormat::Text,
            log: "warn".to_owned(),
        };
        let shutdown = CancellationToken::new();
        let bound = payoff_ingest::bind(config, shutdown.clone()).await?;
        let addr = bound.grpc_addr;
        let publisher = Arc::new(MemoryPublisher::default());
        let task = tokio::spawn(bound.serve_with(publisher.clone()));
        Ok(Self {
            addr,
            publisher,
            shutdown,
            task,
            _dir: dir,
        })
    }

    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.task.await??;
        Ok(())
    }
}

fn args(addr: SocketAddr, events: u64, record: &Path) -> LoadgenArgs {
    LoadgenArgs {
        endpoint: format!("http://{addr}"),
        api_key: KEY.to_owned(),
        rate: 0,
        duration: None,
        events: Some(events),
        seed: Some(42),
        start_time: Some(START.to_owned()),
        // Five events per second of event time: 3,000 events span ten minutes, long
        // enough for orders, refunds and lead verdicts to follow their clicks.
        clock_rate: Some(5),
        concurrency: 8,
        batch: 1,
        timeout: Duration::from_secs(30),
        record: Some(record.to_owned()),
        program: program_path(),
    }
}

fn recorded(path: &Path) -> Result<Vec<v1::Event>> {
    std::fs::read_to_string(path)?
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not an event: {l}")))
        .collect()
}

fn check_all_acknowledged(summary: &Summary, n: u64) {
    assert_eq!(summary.sent, n, "{summary}");
    assert_eq!(summary.errors(), 0, "{summary}");
    assert_eq!(summary.ok(), n, "{summary}");
    assert!(summary.latency.requests > 0, "{summary}");
    assert!(summary.latency.max >= summary.latency.p50, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_sends_what_it_records_and_replay_books_it() -> Result<()> {
    const N: u64 = 3_000;
    let ingest = Ingest::start().await?;
    let dir = tempfile::tempdir()?;
    let first = dir.path().join("first.jsonl");
    let summary = loadgen::run(&args(ingest.addr, N, &first), |_| {}).await?;
    check_all_acknowledged(&summary, N);
    assert_eq!(summary.seed, 42);
    assert!(!summary.interrupted);

    // The record: exactly N lines, every one a valid event for replay's reader.
    let events = recorded(&first)?;
    assert_eq!(events.len() as u64, N);
    let parsed: Vec<_> = input::Events::open(&first, b"salt")?
        .0
        .collect::<Result<_>>()
        .context("replay's reader takes the record")?;
    assert_eq!(parsed.len() as u64, N);

    // Ingest published every distinct event, and only those. A resend in flight at the
    // same time as its original may be published twice (ingest remembers an id once
    // published; the attributor is the authority on duplicates), never more.
    let unique: BTreeSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    let published: Vec<v1::Event> = ingest
        .publisher
        .records()
        .iter()
        .map(|r| v1::Event::decode(r.payload.as_slice()))
        .collect::<Result<_, _>>()?;
    let published_ids: BTreeSet<&str> = published.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(published_ids, unique);
    assert_eq!(summary.accepted, published.len() as u64);
    assert!(summary.duplicates + summary.accepted == N);
    assert_eq!(
        unique.len() as u64 + summary.generated.resent,
        N,
        "every repeated id is a deliberate resend"
    );
    assert!(published.iter().all(|e| e.tenant_id == "acme-beauty"));

    // Events by type add up to what was sent; the funnel has every kind of event.
    let mut by_type: BTreeMap<&'static str, u64> = BTreeMap::new();
    for e in &events {
        *by_type.entry(payload_type(e)).or_default() += 1;
    }
    assert_eq!(by_type, summary.generated.by_type);
    for kind in ["click", "order", "signup", "engagement"] {
        assert!(
            by_type.get(kind).copied().unwrap_or(0) > 0,
            "no {kind}: {by_type:?}"
        );
    }

    // Event times follow the event clock from --start-time (late clicks a little before).
    let start = Timestamp::parse_rfc3339(START).context("start")?;
    let end = start.millis() + (N as i64 * 1_000) / 5;
    for e in &events {
        let at = convert::timestamp(e.occurred_at.as_ref().context("occurredAt")?).millis();
        assert!(
            (start.millis() - 60_000..=end).contains(&at),
            "{} at {at}",
            e.event_id
        );
    }

    // The same seed and start time: the same file, byte for byte, whatever the batching
    // and concurrency.
    let second = dir.path().join("second.jsonl");
    let mut batched = args(ingest.addr, N, &second);
    batched.batch = 25;
    batched.concurrency = 3;
    let again = loadgen::run(&batched, |_| {}).await?;
    assert_eq!(again.sent, N);
    assert_eq!(again.errors(), 0, "{again}");
    assert_eq!(
        again.duplicates, N,
        "every event was already sent by the first run: {again}"
    );
    assert!(
        std::fs::read(&first)? == std::fs::read(&second)?,
        "same seed and start time, same record"
    );

    // Another seed: other ids.
    let third = dir.path().join("third.jsonl");
    let mut other = args(ingest.addr, 100, &third);
    other.seed = Some(43);
    let other_summary = loadgen::run(&other, |_| {}).await?;
    check_all_acknowledged(&other_summary, 100);
    assert_eq!(other_summary.accepted, 100 - other_summary.generated.resent);
    let other_ids: BTreeSet<String> = recorded(&third)?.into_iter().map(|e| e.event_id).collect();
    assert!(other_ids.iter().all(|id| !unique.contains(id.as_str())));

    // Replay of the record books commission: credits for orders and clicks, ledger
    // entries, balances.
    let programs = input::programs(&[program_path()])?;
    let (engine, last) = replay::run_engine(programs, &first, b"replay", true)?;
    let orders = engine
        .credits
        .iter()
        .filter(|c| c.kind.name() == "order")
        .count();
    assert!(orders > 0, "no order credits");
    assert!(!engine.entries.is_empty(), "no ledger entries");
    let report = engine.report(last);
    assert!(!report.balances.is_empty());
    assert!(report.counts.duplicates > 0, "{:?}", report.counts);

    // And `payoff replay` itself runs on the record.
    let out = dir.path().join("ledger.json");
    replay::run(&replay::ReplayArgs {
        programs: vec![program_path()],
        events: first.clone(),
        as_of: None,
        diff: None,
        out: Some(out.clone()),
        salt: "replay".to_owned(),
        quiet: true,
    })?;
    let ledger: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    assert!(
        ledger["entries"].as_array().is_some_and(|e| !e.is_empty()),
        "replay prints ledger entries"
    );

    ingest.stop().await
}

/// A fixed rate paces the requests; the event clock follows --rate, so event times are
/// the schedule's wall clock from --start-time. The last batch is due 1.475 s after the
/// start, so the once-a-second progress report comes at least once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_rate_event_time_follows_the_schedule() -> Result<()> {
    let ingest = Ingest::start().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("paced.jsonl");
    let mut paced = args(ingest.addr, 600, &path);
    paced.rate = 400;
    paced.clock_rate = None;
    paced.batch = 10;
    let mut reports = Vec::new();
    let summary = loadgen::run(&paced, |p| reports.push(p.to_string())).await?;
    check_all_acknowledged(&summary, 600);
    assert!(
        reports
            .first()
            .is_some_and(|r| r.contains("sent ") && r.contains("events/s")),
        "{reports:?}"
    );
    let start = Timestamp::parse_rfc3339(START).context("start")?.millis();
    let events = recorded(&path)?;
    // Event i happens at start + i / 400 s: the first at the start, the last at
    // 599 / 400 s (a late click or a resend carries an earlier time).
    let first = convert::timestamp(events[0].occurred_at.as_ref().context("time")?);
    assert_eq!(first.millis(), start);
    let latest = events
        .iter()
        .filter_map(|e| e.occurred_at.as_ref())
        .map(|t| convert::timestamp(t).millis())
        .max()
        .context("events")?;
    assert!(
        (start + 590 * 1_000 / 400..=start + 599 * 1_000 / 400).contains(&latest),
        "{latest}"
    );
    ingest.stop().await
}

/// Wrong arguments are all named at once; an unreachable endpoint fails before sending.
#[tokio::test]
async fn bad_arguments_and_no_endpoint_fail_clearly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("none.jsonl");
    let mut bad = args("127.0.0.1:1".parse()?, 10, &path);
    bad.batch = 0;
    bad.start_time = Some("yesterday".to_owned());
    bad.endpoint = "https://example.invalid".to_owned();
    let error = format!("{:#}", loadgen::run(&bad, |_| {}).await.unwrap_err());
    for part in ["--batch", "--start-time", "--endpoint"] {
        assert!(error.contains(part), "{error}");
    }
    let unreachable = args("127.0.0.1:1".parse()?, 10, &path);
    let error = format!(
        "{:#}",
        loadgen::run(&unreachable, |_| {}).await.unwrap_err()
    );
    assert!(error.contains("cannot connect"), "{error}");
    Ok(())
}

/// The generator alone: a long stream has the whole funnel in plausible proportions,
/// resends are exact copies of earlier events, every event is valid, and the same seed
/// gives the same stream.
#[test]
fn the_funnel_has_every_kind_of_event() -> Result<()> {
    let program = loadgen::load_program(&program_path())?;
    let start = Timestamp::parse_rfc3339(START).context("start")?;
    let mut generator = Generator::new(&program, 7, start, 20)?;
    let events: Vec<v1::Event> = generator.by_ref().take(40_000).collect();
    let generated = generator.generated().clone();
    for kind in [
        "click",
        "order",
        "signup",
        "lead_status",
        "adjustment",
        "engagement",
    ] {
        assert!(
            generated.by_type.get(kind).copied().unwrap_or(0) > 0,
            "no {kind}: {generated:?}"
        );
    }
    assert!(generated.resent > 0 && generated.late_in_grace > 0 && generated.late_after_grace > 0);
    let clicks = generated.by_type["click"] as f64;
    let orders = generated.by_type["order"] as f64;
    let refunds = generated.by_type["adjustment"] as f64;
    assert!(clicks > orders * 5.0, "{generated:?}");
    assert!(refunds < orders * 0.15, "{generated:?}");

    let mut seen: BTreeMap<&str, &v1::Event> = BTreeMap::new();
    let mut resends = 0;
    for e in &events {
        if let Some(first) = seen.get(e.event_id.as_str()) {
            assert_eq!(*first, e, "a resend is the same event");
            resends += 1;
        } else {
            seen.insert(&e.event_id, e);
        }
    }
    assert_eq!(resends, generated.resent);

    // Every event is valid as ingest judges it (at the time of the last slot).
    let now = Timestamp::from_millis(start.millis() + 40_000 * 1_000 / 20);
    for e in &events {
        let mut e = e.clone();
        e.tenant_id = "acme-beauty".to_owned();
        convert::hash_pii(&mut e, b"salt");
        payoff_core::event::Event::validate(&payoff_core::event::RawEvent::from(&e), now)
            .map_err(|r| anyhow::anyhow!("{}: {r}", e.event_id))?;
    }

    let again: Vec<v1::Event> = Generator::new(&program, 7, start, 20)?
        .take(40_000)
        .collect();
    assert!(again == events, "same seed, same stream");
    Ok(())
}
