//! `attributor-load`: events/s through payoff-attributor (input topics → credits, with
//! Kafka transactions, state changelog and the order index), compared in the same run and
//! on the same broker with a pass-through that consumes the same records and copies them
//! with the same transactional batching (consume → produce → send offsets → commit);
//! then the state's size per visitor, and the time to restore 1,000,000 visitors.
//!
//! Run (with the local stack up):
//! `cargo run --release -p payoff-benches --bin attributor-load -- --rounds 3`
//!
//! Both runs are timed from their first output record to their last (group joins and
//! startup excluded alike), by a read_committed reader of the output topic that is
//! fetching before the run starts, and also over the middle 80% of their output (from
//! the arrival of 10% of the records to that of 90%). Every loop is bounded by a record
//! count and a deadline. Each run's CPU (this process, every thread) per input event is
//! printed too: on a shared machine it swings less than events/s; so is the whole
//! machine's busy CPU per input event over each run's timed window (the broker's
//! included), and from it the highest ratio any attributor could reach here: the
//! pass-through's machine CPU per event plus attribution alone (the core's `decide` and
//! `apply`, timed on the same events in this process), on the cores the background
//! leaves. `--rounds N` repeats
//! both runs N times, alternating, each round on its own topics with the same input, and
//! prints the median ratio. The pass-through's consumer and the readers do not sit out
//! librdkafka's default one-second fetch backoff ([`FETCH_QUEUE_BACKOFF_MS`]).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use payoff_adapters::{
    kafka::{self as adapters, StartFrom},
    progress,
    topology::{self, Topics},
};
use payoff_attributor::{
    codec::{self, ChangelogKey, ChangelogValue, Entry},
    config::LogFormat,
    task::Settings,
};
use payoff_core::attribution::{StateEntry, StateKey};
use payoff_tests::scenario::{self, Options};
use prost::Message as _;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::Headers as _,
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
};
use tokio_util::sync::CancellationToken;

/// The allocator every payoff binary uses ([`payoff_runtime::Allocator`]).
#[global_allocator]
static ALLOCATOR: payoff_runtime::Allocator = payoff_runtime::Allocator;

/// Load generator for payoff-attributor, compared with a transactional pass-through.
#[derive(Debug, Parser)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long, env = "PAYOFF_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// Visitor journeys in the generated scenario (about 3.3 events each). At 100,000 the
    /// pass-through's run lasts under a second here, too short for a steady figure.
    #[arg(long, default_value_t = 300_000)]
    visitors: usize,
    /// Partitions of the benchmark topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Records per transaction (both runs).
    #[arg(long, default_value_t = 20_000)]
    batch: usize,
    /// Visitors in the restore measurement.
    #[arg(long, default_value_t = 1_000_000)]
    restore_visitors: usize,
    /// Records the pass-through writes per input record. The attributor writes about 2.2
    /// (credits, changelog, order index), so `--copies 2` shows what a transactional
    /// consume → produce of about the attributor's output volume reaches on this machine
    /// with no processing at all.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    copies: u16,
    /// Keep the run's topics (`bench-attr-<pid>-<round>.*`) instead of deleting them at the end
    /// (a round of 100,000 visitors leaves about 250 MB otherwise, and one at the default
    /// size about three times that).
    #[arg(long)]
    keep_topics: bool,
    /// The attributor's task threads (its `--threads`; 0: one per CPU).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Rounds of (pass-through, attributor), one after the other in this process, each on
    /// its own topics with the same input: the ratio is printed per round and as the
    /// median, which one noisy round on a shared machine does not move.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    rounds: u16,
    /// Write each run's arrival curve to this directory (`round-<n>-passthrough.tsv`,
    /// `round-<n>-attributor.tsv`: seconds after the run's first output record, and the
    /// output records read by then, one line per 16 records). Committed output arrives
    /// in bursts, one per transaction; the curve shows how much of a short run its
    /// first burst is.
    #[arg(long, value_name = "DIR")]
    arrivals: Option<std::path::PathBuf>,
}

const DEADLINE: Duration = Duration::from_secs(900);

/// `fetch.queue.backoff.ms` of the pass-through's consumer and of the readers: how long
/// librdkafka postpones a partition's next fetch once its local queue is over
/// `queued.min.messages`. At the default (1 s) a consumer that drains its queue faster
/// than that sits idle until the backoff ends: the pass-through stalled for about 0.75 s
/// whenever it had emptied its prefetch (after about 160,000 records at 100,000
/// visitors), which held it at a third of its rate and flattered every ratio measured
/// before (2026-12-02). The attributor is CPU-bound and its own setting made no
/// difference either way.
const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// CPU time this process has used (user + system, every thread, those ended included),
/// from `/proc/self/stat` in clock ticks of 10 ms (Linux's `USER_HZ` is 100); zero where
/// Linux does not tell.
fn process_cpu() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces) start at the state.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// Busy CPU time of the whole machine (every process, the broker included), from
/// `/proc/stat`; zero where Linux does not tell.
fn machine_busy() -> Duration {
    let ticks = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|stat| busy_ticks(&stat))
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// The busy clock ticks (10 ms, Linux's `USER_HZ`) of `/proc/stat`'s first line: user,
/// nice, system, irq, softirq and steal (guest time is within user; idle and iowait are
/// not busy).
fn busy_ticks(stat: &str) -> Option<u64> {
    let mut fields = stat.lines().next()?.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields.map(str::parse).collect::<Result<_, _>>().ok()?;
    [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|&i| values.get(i))
        .sum::<Option<u64>>()
}

/// The highest ratio any attributor could reach against a pass-through that ran at
/// `pass_rate` events/s using `pass_us` µs of the machine's CPU per event (background
/// taken off): whatever else it does, an attributor consumes every input and writes at
/// least one record per input in transactions, as the pass-through does, and attributes
/// every event (`alone_us` µs); with every core the background leaves it, it reaches at
/// most `(cores - background) / (pass_us + alone_us)` events/s.
fn ratio_bound(cores: f64, background: f64, pass_us: f64, alone_us: f64, pass_rate: f64) -> f64 {
    (cores - background) / ((pass_us + alone_us) * 1e-6) / pass_rate
}

/// On-CPU time per event of attribution alone, the least work the attributor must do per
/// event on top of what the pass-through does: the core's reorder buffer, `decide` and
/// `apply` of the attribution state and order index, and the expiry sweep, for the
/// scenario's events in one thread, with nothing decoded, encoded, written or kept (no
/// ledger either, which is the ledger's work). The least of `runs`.
fn attribution_alone(scenario: &scenario::Scenario, runs: usize) -> Duration {
    use payoff_core::attribution::{self, AttributionState, EXPIRY_EVERY, reorder::ReorderBuffer};
    let programs = scenario.programs();
    let events = scenario.core_events();
    let mut least = Duration::MAX;
    for _ in 0..runs {
        let batch = events.clone();
        let started = payoff_benches::thread_cpu_ns().unwrap_or(0);
        let mut buffer = ReorderBuffer::new(programs.grace());
        let mut state = AttributionState::default();
        let mut index = payoff_core::FastMap::default();
        let (mut released, mut facts) = (Vec::new(), Vec::new());
        let mut next_expiry = None;
        let mut credits = 0usize;
        let mut process = |released: &mut Vec<(payoff_core::event::Event, ())>| {
            for (event, ()) in released.drain(..) {
                let due = next_expiry.get_or_insert(event.occurred_at.plus(EXPIRY_EVERY));
                if event.occurred_at >= *due {
                    *due = event.occurred_at.plus(EXPIRY_EVERY);
                    state.expire(event.occurred_at.minus(programs.retention()));
                }
                attribution::decide_into(&state, &index, &programs, &event, &mut facts);
                for fact in facts.drain(..) {
                    attribution::apply(&mut state, &fact);
                    attribution::apply_index(&mut index, &fact);
                    credits += usize::from(matches!(fact, attribution::Fact::Credited(_)));
                }
            }
        };
        for event in batch {
            buffer.push(event, (), &mut released);
            process(&mut released);
        }
        buffer.flush(&mut released);
        process(&mut released);
        drop((state, index));
        least = least.min(
            Duration::from_nanos(
                payoff_benches::thread_cpu_ns()
                    .unwrap_or(0)
                    .saturating_sub(started),
            ) / u32::try_from(events.len().max(1)).unwrap_or(1),
        );
        assert!(credits > 0, "attribution alone gave no credit");
    }
    least
}

const INTERVAL: Duration = Duration::from_millis(100);

fn producer(
    brokers: &str,
    extra: &[(&str, &str)],
) -> anyhow::Result<ThreadedProducer<DefaultProducerContext>> {
    let mut config = adapters::base_config(brokers, "attributor-load")?;
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "2000000")
        .set("partitioner", topology::PARTITIONER);
    for (k, v) in extra {
        config.set(*k, *v);
    }
    Ok(config.create()?)
}

fn send(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// When a run's output records arrived, as its reader saw them.
struct Arrivals {
    /// One record in [`SAMPLE_EVERY`] and the last: seconds after the first record, and
    /// how many records had arrived.
    samples: Vec<(f64, usize)>,
    /// The machine's busy CPU time from the first record to the last.
    machine: Duration,
}

/// The reader notes the arrival of one record in this many.
const SAMPLE_EVERY: usize = 16;

impl Arrivals {
    /// Writes the samples as `seconds<TAB>records` lines.
    fn write(&self, path: &std::path::Path) -> anyhow::Result<()> {
        use std::fmt::Write as _;
        let mut text = String::from("seconds\trecords\n");
        for (t, n) in &self.samples {
            writeln!(text, "{t:.4}\t{n}")?;
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// Seconds from the first record to the last.
    fn secs(&self) -> f64 {
        self.samples.last().map_or(0.0, |(t, _)| *t)
    }

    /// Records per second over the middle of the run: from the arrival of the first 10%
    /// of the records to the arrival of 90%. Timing from the first record leaves the
    /// work of the first transaction (and whatever the reader found waiting when it
    /// first fetched) out of the time but not out of the count, which flatters a shorter
    /// run most; the middle 80% begins and ends at transactions' bursts alike.
    fn middle_rate(&self) -> Option<f64> {
        let total = self.samples.last()?.1;
        let at = |tenths: usize| self.samples.iter().find(|(_, n)| n * 10 >= total * tenths);
        let ((t10, n10), (t90, n90)) = (at(1)?, at(9)?);
        (t90 > t10).then(|| (n90 - n10) as f64 / (t90 - t10))
    }
}

/// A `read_committed` reader of a run's (new, empty) output topic, ready before the run
/// starts: connected to the partitions' leader and fetching from offset 0. A reader that
/// first fetched after the run had committed a few transactions would count their
/// records at its first arrival without their time, flattering whichever run starts
/// committing sooner (the pass-through, which has no state to restore).
struct Reader {
    consumer: BaseConsumer,
    topic: String,
}

impl Reader {
    fn ready(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<Self> {
        let mut config = adapters::read_committed_consumer_config(
            brokers,
            &format!("reader-{topic}"),
            StartFrom::Earliest,
        )?;
        config.set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
        let consumer: BaseConsumer = config.create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            // A watermark query is a round trip to the partition's leader: the connection
            // the fetches use is open once it answers.
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(30))
                .with_context(|| format!("{topic}[{p}]: watermarks"))?;
            if high > low {
                bail!("{topic}[{p}] holds {} records before its run", high - low);
            }
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
        }
        consumer.assign(&tpl)?;
        // The first poll sends the first fetches.
        if let Some(m) = consumer.poll(Duration::from_millis(50)) {
            bail!(
                "{topic}: a record before its run: {:?}",
                m.map(|m| m.offset())
            );
        }
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
        })
    }

    /// Reads until `want` records; returns when they arrived.
    fn read(self, want: usize) -> anyhow::Result<Arrivals> {
        let Self { consumer, topic } = self;
        let deadline = Instant::now() + DEADLINE;
        let mut first = None;
        let mut busy_at_first = Duration::ZERO;
        let mut n = 0usize;
        let mut samples = Vec::with_capacity(want / SAMPLE_EVERY + 1);
        let mut last_report = Instant::now();
        while n < want {
            if Instant::now() > deadline {
                bail!("{topic}: {n} of {want} records before the deadline");
            }
            match consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    // The attributor's progress markers (for the ledger) are not credits.
                    if m.headers()
                        .is_some_and(|h| h.iter().any(|h| h.key == progress::HEADER))
                    {
                        continue;
                    }
                    n += 1;
                    let now = Instant::now();
                    let first = *first.get_or_insert_with(|| {
                        busy_at_first = machine_busy();
                        now
                    });
                    if n.is_multiple_of(SAMPLE_EVERY) || n == want {
                        samples.push(((now - first).as_secs_f64(), n));
                    }
                }
                Some(Err(e)) => bail!("reading {topic}: {e}"),
                None => {}
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                last_report = Instant::now();
                eprintln!("  {topic}: {n}/{want}");
            }
        }
        Ok(Arrivals {
            samples,
            machine: machine_busy().saturating_sub(busy_at_first),
        })
    }
}

/// Consume the input topics, copy every record `copies` times to `out` in transactions
/// of `batch` records or 100 ms, with the consumed offsets; until `want` input records
/// are copied.
fn pass_through(
    brokers: &str,
    inputs: &[String],
    out: &str,
    group: &str,
    batch: usize,
    want: usize,
    copies: usize,
) -> anyhow::Result<()> {
    let config = adapters::transactional_producer_config(
        brokers,
        &format!("{group}-txn"),
        Duration::from_secs(30),
    )?;
    let mut config = config;
    config
        .set("partitioner", topology::PARTITIONER)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "lz4")
        .set("retry.backoff.ms", "5")
        .set("delivery.report.only.error", "true");
    let producer: ThreadedProducer<DefaultProducerContext> = config.create()?;
    producer.init_transactions(Duration::from_secs(30))?;
    let mut cconfig =
        adapters::read_committed_consumer_config(brokers, group, StartFrom::Earliest)?;
    cconfig.set("partition.assignment.strategy", "range");
    cconfig.set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS);
    let consumer: BaseConsumer = cconfig.create()?;
    let topics: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let deadline = Instant::now() + DEADLINE;
    let mut copied = 0usize;
    let mut in_txn = false;
    let mut opened = Instant::now();
    let mut n = 0usize;
    let mut offsets: HashMap<(String, i32), i64> = HashMap::new();
    while copied < want {
        if Instant::now() > deadline {
            bail!("pass-through: {copied} of {want} before the deadline");
        }
        if let Some(m) = consumer.poll(Duration::from_millis(10)) {
            let m = m?;
            if !in_txn {
                producer.begin_transaction()?;
                in_txn = true;
                opened = Instant::now();
                n = 0;
            }
            for _ in 0..copies {
                let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(out);
                if let Some(k) = m.key() {
                    record = record.key(k);
                }
                if let Some(p) = m.payload() {
                    record = record.payload(p);
                }
                send(&producer, record)?;
            }
            offsets.insert((m.topic().to_owned(), m.partition()), m.offset() + 1);
            n += 1;
            copied += 1;
        }
        if in_txn && (n >= batch || opened.elapsed() >= INTERVAL || copied >= want) {
            let mut tpl = TopicPartitionList::new();
            for ((t, p), o) in &offsets {
                tpl.add_partition_offset(t, *p, Offset::Offset(*o))?;
            }
            let group = consumer.group_metadata().context("group metadata")?;
            producer.send_offsets_to_transaction(&tpl, &group, Duration::from_secs(30))?;
            adapters::commit_transaction(&producer, Duration::from_secs(30))?;
            in_txn = false;
        }
    }
    Ok(())
}

/// One round's two runs: the pass-through, then the attributor, on the round's topics.
struct Round {
    prefix: String,
    topics: Topics,
    passthrough: String,
    events: usize,
    pass: Run,
    attr: Run,
}

/// One run's timings.
struct Run {
    /// Input events per second, from the first output record to the last.
    rate: f64,
    secs: f64,
    /// Input events per second over the middle 80% of the output.
    middle: Option<f64>,
    /// This process's CPU over the run.
    cpu: Duration,
    /// The machine's busy CPU time from the first output record to the last.
    machine: Duration,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.attr.rate / self.pass.rate
    }

    fn middle_ratio(&self) -> Option<f64> {
        Some(self.attr.middle? / self.pass.middle?)
    }

    /// The round's topics (the restore's is the run's own).
    fn topic_names(&self, args: &Args) -> Vec<String> {
        let mut names: Vec<String> = self
            .topics
            .specs(args.partitions, 1)
            .into_iter()
            .map(|t| t.name)
            .collect();
        names.push(self.passthrough.clone());
        names
    }
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Produces the scenario to the round's own input topics, then times the pass-through
/// and the attributor on them.
async fn run_round(
    args: &Args,
    scenario: &scenario::Scenario,
    want_credits: usize,
    round: u16,
) -> anyhow::Result<Round> {
    let prefix = format!("bench-attr-{}-{round}.", std::process::id());
    let topics = Topics::with_prefix(&prefix);
    adapters::ensure_topics(
        &args.brokers,
        &topics.specs(args.partitions, 1),
        Duration::from_secs(30),
    )
    .await?;
    let passthrough = format!("{prefix}passthrough");
    adapters::ensure_topics(
        &args.brokers,
        &[adapters::TopicSpec::new(&passthrough, args.partitions, 1)],
        Duration::from_secs(30),
    )
    .await?;
    let records: Vec<(String, String, Vec<u8>)> = scenario
        .records(&topics)
        .into_iter()
        .map(|(t, k, e)| (t, k, e.encode_to_vec()))
        .collect();
    let events = records.len();
    let bytes: usize = records.iter().map(|r| r.2.len()).sum();
    eprintln!(
        "{events} events ({} bytes each on average), {want_credits} credits expected",
        bytes / events.max(1)
    );

    let p = producer(&args.brokers, &[])?;
    let key = topology::key(&[scenario::TENANT, "1"]);
    let program = scenario.program.encode_to_vec();
    send(
        &p,
        BaseRecord::to(&topics.programs)
            .key(key.as_bytes())
            .payload(&program),
    )?;
    let started = Instant::now();
    for (topic, key, payload) in &records {
        send(
            &p,
            BaseRecord::to(topic)
                .key(key.as_bytes())
                .payload(payload.as_slice()),
        )?;
    }
    p.flush(Duration::from_secs(120))?;
    eprintln!("produced in {:.1} s", started.elapsed().as_secs_f64());

    // Pass-through.
    let inputs = vec![
        topics.clicks.clone(),
        topics.signups.clone(),
        topics.orders.clone(),
        topics.adjustments.clone(),
        topics.lead_status.clone(),
        topics.engagement.clone(),
    ];
    eprintln!(
        "pass-through: consume → transactional produce of {events} records, {} times each",
        args.copies
    );
    let copies = usize::from(args.copies);
    let (brokers, out, group, batch) = (
        args.brokers.clone(),
        passthrough.clone(),
        format!("{prefix}passthrough"),
        args.batch,
    );
    let reader = Reader::ready(&args.brokers, &passthrough, args.partitions)?;
    let pass_cpu_start = process_cpu();
    let copier = std::thread::spawn(move || {
        pass_through(&brokers, &inputs, &out, &group, batch, events, copies)
    });
    let pass = reader.read(events * copies)?;
    copier
        .join()
        .map_err(|_| anyhow::anyhow!("pass-through panicked"))??;
    if let Some(dir) = &args.arrivals {
        pass.write(&dir.join(format!("round-{}-passthrough.tsv", round + 1)))?;
    }
    let pass = Run {
        rate: events as f64 / pass.secs(),
        secs: pass.secs(),
        middle: pass.middle_rate().map(|r| r / copies as f64),
        cpu: process_cpu() - pass_cpu_start,
        machine: pass.machine,
    };

    // The attributor, in this process.
    eprintln!("attributor: {events} events → {want_credits} credits");
    let shutdown = CancellationToken::new();
    let config = payoff_attributor::Config {
        kafka_brokers: args.brokers.clone(),
        topic_prefix: prefix.clone(),
        group_id: format!("{prefix}attributor"),
        instance_id: "bench-0".into(),
        listen: "127.0.0.1:0".parse()?,
        metrics_listen: "127.0.0.1:0".parse()?,
        batch_records: args.batch,
        batch_interval: INTERVAL,
        transaction_timeout: Duration::from_secs(30),
        session_timeout: Duration::from_secs(45),
        correction_wait: Duration::from_secs(3650 * 86_400),
        correction_wall_wait: Duration::from_secs(3600),
        max_idle: Duration::from_secs(2),
        quiet_release: Duration::ZERO,
        max_held_events: 200_000,
        threads: args.threads,
        drain_timeout: Duration::from_secs(20),
        log_format: LogFormat::Text,
        log: "warn".into(), // logging is set up in main (RUST_LOG)
    };
    let (brokers, credits_topic, partitions) = (
        args.brokers.clone(),
        topics.credits.clone(),
        args.partitions,
    );
    let reader =
        tokio::task::spawn_blocking(move || Reader::ready(&brokers, &credits_topic, partitions))
            .await??;
    let attr_cpu_start = process_cpu();
    let running = tokio::spawn(payoff_attributor::run(config, shutdown.clone()));
    let attr = tokio::task::spawn_blocking(move || reader.read(want_credits)).await??;
    shutdown.cancel();
    running.await??;
    if let Some(dir) = &args.arrivals {
        attr.write(&dir.join(format!("round-{}-attributor.tsv", round + 1)))?;
    }
    // Credits per input event are taken as even over the run.
    let attr = Run {
        rate: events as f64 / attr.secs(),
        secs: attr.secs(),
        middle: attr
            .middle_rate()
            .map(|r| r * events as f64 / want_credits as f64),
        cpu: process_cpu() - attr_cpu_start,
        machine: attr.machine,
    };
    if args.rounds > 1 {
        eprintln!(
            "round {}: pass-through {:.0}, attributor {:.0} events/s, ratio {:.2}",
            round + 1,
            pass.rate,
            attr.rate,
            attr.rate / pass.rate
        );
    }
    Ok(Round {
        prefix,
        topics,
        passthrough,
        events,
        pass,
        attr,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    payoff_runtime::telemetry::init_logging(payoff_runtime::telemetry::LogFormat::Text, "warn");
    if let Some(dir) = &args.arrivals {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    eprintln!("generating {} visitor journeys", args.visitors);
    let scenario = scenario::generate(Options {
        seed: 42,
        visitors: args.visitors,
        sentinels: 100,
    });
    let want_credits = scenario.oracle().len();
    let alone = attribution_alone(&scenario, 3);
    eprintln!(
        "attribution alone: {:.2} µs per event on-CPU",
        alone.as_secs_f64() * 1e6
    );
    // What the machine does with neither run (the broker idling, Cassandra if it is up):
    // taken off the cores a run has, and off its CPU per event, in the bound below.
    let busy_before = machine_busy();
    let quiet_started = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let background =
        (machine_busy() - busy_before).as_secs_f64() / quiet_started.elapsed().as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    eprintln!("background: {background:.2} of {cores} cores busy with nothing running");
    let mut rounds: Vec<Round> = Vec::new();
    for r in 0..args.rounds {
        if args.rounds > 1 {
            eprintln!("round {} of {}", r + 1, args.rounds);
        }
        let round = run_round(&args, &scenario, want_credits, r).await;
        // Topics of rounds that ran are deleted even when a later round fails.
        match round {
            Ok(round) => rounds.push(round),
            Err(e) => {
                if !args.keep_topics {
                    for round in &rounds {
                        delete_topics(&args.brokers, &round.topic_names(&args)).await?;
                    }
                }
                return Err(e);
            }
        }
    }
    let Some(last) = rounds.last() else {
        bail!("no round ran");
    };
    let (prefix, topics, passthrough, events) = (
        last.prefix.clone(),
        last.topics.clone(),
        last.passthrough.clone(),
        last.events,
    );

    // What the attributor wrote, per topic, against the pass-through's one record per
    // input.
    let mut outputs = Vec::new();
    for topic in [
        &topics.credits,
        &topics.attributor_changelog,
        &topics.order_index,
        &topics.dead_letter,
        &passthrough,
    ] {
        let (brokers, topic, partitions) = (args.brokers.clone(), topic.clone(), args.partitions);
        let changelog = topic == topics.attributor_changelog;
        let w =
            tokio::task::spawn_blocking(move || written(&brokers, &topic, partitions, changelog))
                .await??;
        outputs.push(w);
    }

    // State size, from the changelog (latest record per key, as compaction keeps).
    let (brokers, changelog, partitions) = (
        args.brokers.clone(),
        topics.attributor_changelog.clone(),
        args.partitions,
    );
    let latest =
        tokio::task::spawn_blocking(move || latest_changelog(&brokers, &changelog, partitions))
            .await??;
    let mut visitors = 0usize;
    let mut visitor_bytes = 0usize;
    let mut all_bytes = 0usize;
    let mut samples: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (k, v) in &latest {
        let Some(v) = v else { continue };
        all_bytes += k.len() + v.len();
        if let Ok((
            ChangelogKey {
                entry: Entry::State(StateKey::Visitor(_)),
                ..
            },
            _,
        )) = codec::changelog_from(Some(k), Some(v))
        {
            visitors += 1;
            visitor_bytes += k.len() + v.len();
            if samples.len() < 10_000 {
                samples.push((k.clone(), v.clone()));
            }
        }
    }

    // Restore of `restore_visitors` visitors like those just measured.
    let restore_topic = format!("{prefix}restore-changelog");
    adapters::ensure_topics(
        &args.brokers,
        &[adapters::TopicSpec::new(&restore_topic, args.partitions, 1).compacted()],
        Duration::from_secs(30),
    )
    .await?;
    eprintln!(
        "writing {} visitors to {restore_topic}",
        args.restore_visitors
    );
    let txn = producer(&args.brokers, &[])?;
    for i in 0..args.restore_visitors {
        let (k, v) = &samples[i % samples.len().max(1)];
        let (key, value) = codec::changelog_from(Some(k), Some(v))?;
        let key = ChangelogKey {
            tenant: key.tenant,
            entry: Entry::State(StateKey::Visitor(u128::try_from(i).unwrap_or_default() + 1)),
        };
        let value = value.unwrap_or(ChangelogValue::State(StateEntry::Seen(
            payoff_core::time::Timestamp(0),
        )));
        let key = codec::changelog_key(&key);
        let value = codec::changelog_value(&value);
        let partition = i32::try_from(i % usize::try_from(args.partitions)?)?;
        send(
            &txn,
            BaseRecord::to(&restore_topic)
                .key(key.as_slice())
                .payload(value.as_slice())
                .partition(partition),
        )?;
    }
    txn.flush(Duration::from_secs(300))?;
    let restore_started = Instant::now();
    let all: Vec<i32> = (0..args.partitions).collect();
    let (tasks, _) = payoff_attributor::pipeline::restore(
        &args.brokers,
        &restore_topic,
        &all,
        Settings::default(),
    )?;
    let restored: usize = tasks.iter().map(|t| t.visitors()).sum();
    let restore_secs = restore_started.elapsed().as_secs_f64();

    println!(
        "attributor-load: {events} events, {want_credits} credits, {} partitions, transactions of up to {} records or 100 ms, {} task threads",
        args.partitions,
        args.batch,
        if args.threads == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            args.threads
        }
    );
    // CPU per event: steadier than events/s on a shared machine, which slows both the
    // processor and the broker it waits for (the broker's CPU is not counted).
    let micros = |cpu: Duration| cpu.as_secs_f64() * 1e6 / events as f64;
    for (i, round) in rounds.iter().enumerate() {
        if rounds.len() > 1 {
            println!("  round {} of {}:", i + 1, rounds.len());
        }
        let (pass, attr) = (&round.pass, &round.attr);
        println!(
            "  pass-through (consume → transactional produce): {:>10.0} events/s ({:.2} s, {} record(s) written per input)",
            pass.rate, pass.secs, args.copies
        );
        println!(
            "  attributor (events → credits, exactly once):    {:>10.0} events/s ({:.2} s)",
            attr.rate, attr.secs
        );
        println!(
            "  ratio attributor / pass-through:                {:.2}",
            round.ratio()
        );
        if let (Some(pass_middle), Some(attr_middle), Some(ratio)) =
            (pass.middle, attr.middle, round.middle_ratio())
        {
            println!(
                "  over the middle 80% of each run's output: pass-through {pass_middle:.0}, attributor {attr_middle:.0} events/s, ratio {ratio:.2}"
            );
        }
        println!(
            "  this process's CPU per input event (whole phase, readers included): pass-through {:.1} µs, attributor {:.1} µs",
            micros(pass.cpu),
            micros(attr.cpu)
        );
        // The machine's CPU per event beyond the background, over the timed window.
        let own = |run: &Run| {
            (run.machine.as_secs_f64() - background * run.secs).max(0.0) * 1e6 / events as f64
        };
        println!(
            "  the machine's CPU per input event (every process, the broker's included; background taken off): pass-through {:.1} µs ({:.2} of {cores} cores busy), attributor {:.1} µs ({:.2} cores busy)",
            own(pass),
            pass.machine.as_secs_f64() / pass.secs,
            own(attr),
            attr.machine.as_secs_f64() / attr.secs,
        );
        let alone = alone.as_secs_f64() * 1e6;
        let bound = ratio_bound(cores, background, own(pass), alone, pass.rate);
        println!(
            "  the most any attributor could reach here: ratio {bound:.2} (the pass-through's machine CPU per event plus attribution alone, {alone:.2} µs, on {:.2} cores)",
            cores - background
        );
    }
    if rounds.len() > 1 {
        let ratios =
            |f: fn(&Round) -> Option<f64>| -> Vec<f64> { rounds.iter().filter_map(f).collect() };
        let first_to_last = ratios(|r| Some(r.ratio()));
        let middle = ratios(Round::middle_ratio);
        let (lo, hi) = first_to_last
            .iter()
            .fold((f64::INFINITY, 0.0_f64), |(lo, hi), r| {
                (lo.min(*r), hi.max(*r))
            });
        println!(
            "  median over {} rounds: ratio {:.2} (from {lo:.2} to {hi:.2}), middle 80% {}",
            rounds.len(),
            median(first_to_last).unwrap_or(f64::NAN),
            median(middle).map_or_else(|| "n/a".to_owned(), |m| format!("{m:.2}"))
        );
    }
    let per = |w: &Written| {
        format!(
            "{:.2} records, {:.0} bytes",
            w.records as f64 / events as f64,
            w.bytes as f64 / events as f64
        )
    };
    let attributor_records: usize = outputs[..4].iter().map(|w| w.records).sum();
    if rounds.len() > 1 {
        println!("  the last round's output and state:");
    }
    println!(
        "  written per input event: attributor {:.2} records (credits: {}; state changelog: {}; order index: {}; dead letters: {}; plus {:.3} progress markers); pass-through: {}",
        attributor_records as f64 / events as f64,
        per(&outputs[0]),
        per(&outputs[1]),
        per(&outputs[2]),
        per(&outputs[3]),
        outputs[0].markers as f64 / events as f64,
        per(&outputs[4])
    );
    for (kind, (records, bytes)) in &outputs[1].kinds {
        println!(
            "    {kind}: {:.3} records, {:.0} bytes per input event",
            *records as f64 / events as f64,
            *bytes as f64 / events as f64
        );
    }
    println!(
        "  state: {visitors} visitors, {:.0} bytes per visitor entry, {:.0} bytes of all state per visitor (changelog encoding, key + value)",
        visitor_bytes as f64 / visitors.max(1) as f64,
        all_bytes as f64 / visitors.max(1) as f64
    );
    println!(
        "  restore: {restored} visitors in {restore_secs:.2} s ({} partitions, one consumer, as on assignment)",
        args.partitions
    );
    if !args.keep_topics {
        let mut names: Vec<String> = rounds.iter().flat_map(|r| r.topic_names(&args)).collect();
        names.push(restore_topic);
        delete_topics(&args.brokers, &names).await?;
    }
    Ok(())
}

/// Deletes the run's topics, so that runs one after another measure the same broker.
async fn delete_topics(brokers: &str, names: &[String]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        adapters::base_config(brokers, "attributor-load-admin")?.create()?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.delete_topics(&names, &options).await? {
        if let Err((topic, code)) = result {
            eprintln!("could not delete topic {topic}: {code}");
        }
    }
    eprintln!("deleted the run's {} topics", names.len());
    Ok(())
}

/// The latest value per key of a changelog topic.
fn latest_changelog(
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<HashMap<Vec<u8>, Option<Vec<u8>>>> {
    let mut latest = HashMap::new();
    read_all(brokers, topic, partitions, |m| {
        latest.insert(
            (m.partition(), m.key().unwrap_or_default().to_vec()),
            m.payload().map(<[u8]>::to_vec),
        );
    })?;
    Ok(latest.into_iter().map(|((_, k), v)| (k, v)).collect())
}

/// What a run wrote to one topic: committed records (progress markers apart) and their
/// bytes (key + value).
#[derive(Debug, Default, Clone)]
struct Written {
    records: usize,
    bytes: usize,
    markers: usize,
    /// Records and bytes by what they hold (the changelog only).
    kinds: std::collections::BTreeMap<&'static str, (usize, usize)>,
}

/// What `topic` holds; by kind too when it is the attributor's `changelog`.
fn written(
    brokers: &str,
    topic: &str,
    partitions: i32,
    changelog: bool,
) -> anyhow::Result<Written> {
    let mut w = Written::default();
    read_all(brokers, topic, partitions, |m| {
        if m.headers()
            .is_some_and(|h| h.iter().any(|h| h.key == progress::HEADER))
        {
            w.markers += 1;
        } else {
            w.records += 1;
            w.bytes += m.key_len() + m.payload_len();
            if changelog && let Some(key) = m.key() {
                let kind = w
                    .kinds
                    .entry(payoff_benches::changelog_label(key, m.payload().is_none()))
                    .or_default();
                kind.0 += 1;
                kind.1 += m.key_len() + m.payload_len();
            }
        }
    })?;
    Ok(w)
}

/// Reads every committed record of `topic` (read_committed, from the beginning to the
/// end of each partition), calling `each`.
fn read_all(
    brokers: &str,
    topic: &str,
    partitions: i32,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> anyhow::Result<()> {
    let mut config = adapters::read_committed_consumer_config(
        brokers,
        &format!("reader-{topic}"),
        StartFrom::Earliest,
    )?;
    config.set("enable.partition.eof", "true");
    let consumer: BaseConsumer<payoff_adapters::kafka::QuietEof> =
        config.create_with_context(payoff_adapters::kafka::QuietEof)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut ended = std::collections::HashSet::new();
    let deadline = Instant::now() + DEADLINE;
    while ended.len() < usize::try_from(partitions)? {
        if Instant::now() > deadline {
            bail!("{topic}: not read to its end before the deadline");
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                ended.remove(&(m.partition()));
                each(&m);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                ended.insert(p);
            }
            Some(Err(e)) => bail!("{topic}: {e}"),
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Transactions deliver records in bursts: 100 records at once every 0.1 s is 1,000
    /// records/s, which the middle of the run shows, while timing from the first record
    /// (its burst counted, its time not) says more.
    #[test]
    fn the_middle_rate_of_bursts_is_their_mean_rate() {
        let mut samples = Vec::new();
        let mut n = 0;
        for burst in 0..50 {
            for i in 0..100 {
                n += 1;
                samples.push((f64::from(burst) * 0.1 + f64::from(i) * 1e-6, n));
            }
        }
        let run = Arrivals {
            samples,
            machine: Duration::ZERO,
        };
        let middle = run.middle_rate().unwrap();
        assert!((middle - 1_000.0).abs() < 1.0, "{middle}");
        let first_to_last = 5_000.0 / run.secs();
        assert!(first_to_last > 1_015.0, "{first_to_last}");
    }

    /// A stall in the middle of a run counts in full.
    #[test]
    fn a_stall_in_the_middle_counts() {
        let samples = (1..=100)
            .map(|n| {
                (
                    f64::from(n) * 0.01 + if n > 50 { 1.0 } else { 0.0 },
                    n as usize,
                )
            })
            .collect();
        let middle = Arrivals {
            samples,
            machine: Duration::ZERO,
        }
        .middle_rate()
        .unwrap();
        // 80 records from t = 0.10 to t = 1.90.
        assert!((middle - 80.0 / 1.8).abs() < 1e-9, "{middle}");
    }

    #[test]
    fn the_median_of_rounds_is_the_middle_one_or_the_mean_of_two() {
        assert_eq!(median(vec![0.9, 0.3, 0.5]), Some(0.5));
        assert_eq!(median(vec![0.8, 0.2, 0.6, 0.4]), Some(0.5));
        assert_eq!(median(vec![0.7]), Some(0.7));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn busy_ticks_leave_out_idle_and_iowait() {
        let stat = "cpu  100 2 30 5000 70 4 6 8 0 0\ncpu0 50 1 15 2500 35 2 3 4 0 0\n";
        assert_eq!(busy_ticks(stat), Some(100 + 2 + 30 + 4 + 6 + 8));
        assert_eq!(busy_ticks("intr 1 2 3\n"), None);
        assert_eq!(busy_ticks("cpu 1 2 3\n"), None);
    }

    #[test]
    fn the_bound_is_the_share_of_pass_through_work_when_it_filled_the_machine() {
        // A pass-through that kept both cores busy at 500k events/s used 4 µs per event;
        // with 1 µs of attribution per event on top, the bound is 4 / 5.
        let bound = ratio_bound(2.0, 0.0, 4.0, 1.0, 500_000.0);
        assert!((bound - 0.8).abs() < 1e-9, "{bound}");
        // One that left half a core idle leaves that half to the attributor.
        let bound = ratio_bound(2.0, 0.0, 3.0, 1.0, 500_000.0);
        assert!((bound - 1.0).abs() < 1e-9, "{bound}");
    }

    #[test]
    fn no_middle_without_records() {
        assert!(
            Arrivals {
                machine: Duration::ZERO,
                samples: Vec::new()
            }
            .middle_rate()
            .is_none()
        );
        assert!(
            Arrivals {
                machine: Duration::ZERO,
                samples: vec![(0.0, 1)]
            }
            .middle_rate()
            .is_none()
        );
    }
}
