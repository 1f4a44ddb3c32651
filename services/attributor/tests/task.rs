//! The attributor's [`Task`] against the oracle, in memory (no Kafka).
//!
//! The example program and events (`deploy/examples`) go once through
//! `payoff_core::engine::Engine` and once through four tasks fed as Kafka would feed
//! them: each event in the partition of its ingest key ([`Topics::route`], with a fixed
//! FNV-1a partitioner written here), the order-index records the tasks emit appended to
//! the index partition of their key and read by the task that owns it, an input marked at
//! its end whenever a task has read all of it. The tasks must emit exactly the engine's
//! credits, each once:
//! - when each event is read as soon as it is produced (live);
//! - when all input is already written and one input is read far ahead of the others (the
//!   merge must wait for the others);
//! - across crashes at many points: the outputs since the last commit are lost, new tasks
//!   restore the compacted changelog and read again from the committed offsets, and no
//!   credit or index record is lost or doubled.
//!
//! A correction for an order that never comes, and records that cannot be decoded, go to
//! the dead letters with their reason, and the records after them are still processed.
//!
//! The streaming side cannot know that input ended, and its reorder buffers hold the
//! newest events until event time passes them. So each partition gets a "sentinel" click
//! a day after the last event, with an unknown link (it credits nothing), and the engine
//! gets the same clicks. A day is far enough to release everything, and well within the
//! state's retention, so the expiry sweep the sentinel triggers forgets nothing the
//! released events still need.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use payoff_adapters::topology::{Topics, key};
use payoff_attributor::{
    codec,
    task::{Output, Programs, Record, Settings, Source, Task},
};
use payoff_core::{
    attribution::ConversionKey,
    credit::Credit,
    engine::Engine,
    event::{Event, RawEvent},
    ids::TenantId,
    program::ProgramHistory,
    time::{Duration, Timestamp},
};
use payoff_proto::{convert, v1};
use prost::Message;

const TENANT: &str = "acme-beauty";
/// The tenant's PII salt (any fixed bytes: the engine and the tasks see the same hashes).
const SALT: &[u8] = b"acme-beauty-salt";
/// Partitions of every input topic, and so tasks.
const PARTITIONS: usize = 4;
/// How long after the last event the sentinels come.
const SENTINEL_AFTER: Duration = Duration::days(1);
/// A correction wait longer than the example's whole span, for tests in which one task
/// may run days of event time ahead of another (see `backlog_*`).
const LONG_WAIT: Duration = Duration::days(30);
/// More steps than any run here needs (a bound, so that a task that never settles fails
/// instead of hanging).
const MAX_STEPS: usize = 10_000;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/examples")
        .join(name)
}

/// The example program history, read as `payoff replay` reads it.
fn history() -> ProgramHistory {
    let text = std::fs::read_to_string(example("program.json")).unwrap();
    let versions = match serde_json::from_str(&text).unwrap() {
        serde_json::Value::Array(items) => items,
        one => vec![one],
    };
    let mut history = ProgramHistory::default();
    for v in versions {
        let proto: v1::Program = serde_json::from_value(v).unwrap();
        history.insert(convert::program(&proto).unwrap());
    }
    history
}

fn programs(history: &ProgramHistory) -> Programs {
    let mut programs = Programs::default();
    for version in history.versions() {
        programs.insert(TenantId::new(TENANT), (**version).clone());
    }
    programs
}

/// One event as ingest publishes it (protobuf, tenant set, PII hashed) and as it
/// validated it.
#[derive(Debug, Clone)]
struct Input {
    proto: v1::Event,
    event: Event,
}

/// An event from its proto3 JSON, through ingest's steps.
fn input(json: &str) -> Input {
    let mut proto: v1::Event = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
    proto.tenant_id = TENANT.to_owned();
    convert::hash_pii(&mut proto, SALT);
    let event = Event::validate(
        &RawEvent::from(&proto),
        Timestamp::from_millis(i64::MAX / 2),
    )
    .unwrap_or_else(|e| panic!("{json}: {e}"));
    Input { proto, event }
}

fn click(id: &str, at: &str, visitor: &str, link: &str) -> Input {
    input(&format!(
        r#"{{"eventId":"{id}","occurredAt":"{at}","click":{{"visitorId":"{visitor}","linkCode":"{link}"}}}}"#
    ))
}

fn order(id: &str, at: &str, visitor: &str, order: &str) -> Input {
    input(&format!(
        r#"{{"eventId":"{id}","occurredAt":"{at}","order":{{"visitorId":"{visitor}","orderId":"{order}","amount":{{"amount":"80.00","currency":"USD"}}}}}}"#
    ))
}

fn refund(id: &str, at: &str, order: &str) -> Input {
    input(&format!(
        r#"{{"eventId":"{id}","occurredAt":"{at}","adjustment":{{"orderId":"{order}","kind":"ADJUSTMENT_KIND_REFUND","reason":"returned"}}}}"#
    ))
}

/// The input a task reads an event from and its record key, as ingest routes it.
fn route(input: &Input) -> Option<(Source, String)> {
    let topics = Topics::default();
    let (topic, key) = topics.route(TENANT, &input.event);
    Some((Source::of_topic(&topics, topic)?, key))
}

/// The partition of a record key: FNV-1a, the same on every run (unlike std's hasher).
fn partition(key: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    usize::try_from(hash % PARTITIONS as u64).unwrap()
}

/// A consumed record of an event.
fn record(source: Source, offset: i64, key: &str, input: &Input) -> Record {
    Record {
        source,
        offset,
        timestamp: Some(input.event.occurred_at.millis()),
        key: Some(key.as_bytes().to_vec()),
        payload: Some(input.proto.encode_to_vec()),
    }
}

/// Credits sorted by id.
fn sorted(credits: &[Credit]) -> Vec<Credit> {
    let mut credits = credits.to_vec();
    credits.sort_by_key(|c| c.id.to_text());
    credits
}

fn kinds(credits: &[Credit]) -> BTreeMap<&'static str, usize> {
    let mut kinds = BTreeMap::new();
    for c in credits {
        *kinds.entry(c.kind.name()).or_default() += 1;
    }
    kinds
}

/// What the engine gives for the same events.
struct Oracle {
    /// Credits, sorted by id.
    credits: Vec<Credit>,
    /// Every attributed conversion (with or without credit): what the index must hold.
    conversions: BTreeSet<ConversionKey>,
}

fn oracle<'a>(history: &ProgramHistory, inputs: impl IntoIterator<Item = &'a Input>) -> Oracle {
    let mut engine = Engine::new(history.clone());
    for input in inputs {
        engine.push(input.event.clone());
    }
    engine.finish();
    Oracle {
        credits: sorted(&engine.credits),
        conversions: engine.explanations.keys().cloned().collect(),
    }
}

/// The example, its sentinels and the engine's answer.
struct Fixture {
    history: ProgramHistory,
    programs: Programs,
    /// The example events in file order, engagement included.
    events: Vec<Input>,
    /// One sentinel click per partition.
    sentinels: Vec<Input>,
    oracle: Oracle,
}

impl Fixture {
    fn load() -> Self {
        let history = history();
        let text = std::fs::read_to_string(example("events.jsonl")).unwrap();
        let events: Vec<Input> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(input)
            .collect();
        let last = events.iter().map(|e| e.event.occurred_at).max().unwrap();
        let sentinels = sentinels(last.plus(SENTINEL_AFTER));
        let oracle = oracle(&history, events.iter().chain(&sentinels));
        Self {
            programs: programs(&history),
            history,
            events,
            sentinels,
            oracle,
        }
    }

    /// Everything to produce, in order: the events, then the sentinels.
    fn inputs(&self) -> impl Iterator<Item = &Input> {
        self.events.iter().chain(&self.sentinels)
    }
}

/// A click at `at` with an unknown link for each partition.
fn sentinels(at: Timestamp) -> Vec<Input> {
    let mut by_partition = BTreeMap::new();
    for i in 0.. {
        if by_partition.len() == PARTITIONS {
            break;
        }
        let sentinel = click(
            &format!("sentinel-{i}"),
            &at.to_string(),
            &format!("sentinel-visitor-{i}"),
            "no-such-link",
        );
        let (_, key) = route(&sentinel).unwrap();
        by_partition.entry(partition(&key)).or_insert(sentinel);
    }
    by_partition.into_values().collect()
}

/// What survives a crash: the last transaction's offsets, changelog and outputs.
#[derive(Debug, Clone)]
struct Committed {
    /// Per input partition, where to read again.
    offsets: BTreeMap<(Source, usize), i64>,
    /// Each task's changelog partition, compacted: the latest value of each key.
    changelog: Vec<BTreeMap<Vec<u8>, Option<Vec<u8>>>>,
    credits: usize,
    dead_letters: usize,
    /// Length of each order-index partition.
    index: BTreeMap<usize, usize>,
}

/// Four tasks and their topics, driven as the pipeline drives them.
struct Cluster {
    programs: Programs,
    settings: Settings,
    tasks: Vec<Task>,
    /// Every partition of every input (order index included), with what was written.
    topics: BTreeMap<(Source, usize), Vec<Record>>,
    /// Next offset to read, per input partition.
    read: BTreeMap<(Source, usize), i64>,
    /// Credits written (decoded), committed or not.
    credits: Vec<Credit>,
    dead_letters: Vec<Output>,
    /// Engagement snapshots passed on to the ledger (key, event id), committed or not.
    passed_on: Vec<(String, String)>,
    committed: Committed,
    /// Counts by (type, result) over all tasks and restarts.
    stats: BTreeMap<(&'static str, &'static str), u64>,
    crashes: usize,
    /// Records read again after crashes.
    reread: usize,
    outputs: Vec<Output>,
}

impl Cluster {
    fn new(programs: &Programs, settings: Settings) -> Self {
        Self {
            programs: programs.clone(),
            settings,
            tasks: new_tasks(settings),
            topics: BTreeMap::new(),
            read: BTreeMap::new(),
            credits: Vec::new(),
            dead_letters: Vec::new(),
            passed_on: Vec::new(),
            committed: Committed {
                offsets: BTreeMap::new(),
                changelog: vec![BTreeMap::new(); PARTITIONS],
                credits: 0,
                dead_letters: 0,
                index: BTreeMap::new(),
            },
            stats: BTreeMap::new(),
            crashes: 0,
            reread: 0,
            outputs: Vec::new(),
        }
    }

    /// Writes an event to its input partition, as ingest does.
    fn produce(&mut self, input: &Input) {
        let Some((source, key)) = route(input) else {
            return;
        };
        let topic = self.topics.entry((source, partition(&key))).or_default();
        let offset = i64::try_from(topic.len()).unwrap();
        topic.push(record(source, offset, &key, input));
    }

    fn len(&self, source: Source, p: usize) -> usize {
        self.topics.get(&(source, p)).map_or(0, Vec::len)
    }

    /// Task `p` reads up to `max` records of one input, and learns whether it is now at
    /// the end of it. Returns the number read.
    fn deliver(&mut self, p: usize, source: Source, max: usize) -> usize {
        let from = usize::try_from(self.read.get(&(source, p)).copied().unwrap_or(0)).unwrap();
        let records: Vec<Record> = self
            .topics
            .get(&(source, p))
            .map(|t| t.iter().skip(from).take(max).cloned().collect())
            .unwrap_or_default();
        let n = records.len();
        for record in records {
            self.read.insert((source, p), record.offset + 1);
            self.tasks[p].offer(&self.programs, record.borrowed(), &mut self.outputs);
        }
        if from + n >= self.len(source, p) {
            self.tasks[p].set_at_end(source, true);
        }
        self.route_outputs(p);
        n
    }

    /// Task `p` merges and processes what it can.
    fn pump(&mut self, p: usize, force: bool) -> usize {
        self.tasks[p].pump(&self.programs, force, &mut self.outputs);
        self.route_outputs(p)
    }

    /// Writes the outputs of task `p`: credits to the credits topic, index records to the
    /// partition of their key, dead letters aside. Returns how many there were.
    fn route_outputs(&mut self, p: usize) -> usize {
        for (kind, result, n) in self.tasks[p].take_stats().iter() {
            *self.stats.entry((kind, result)).or_default() += n;
        }
        let n = self.outputs.len();
        for output in std::mem::take(&mut self.outputs) {
            match output {
                Output::Credit {
                    key: record_key,
                    payload,
                    occurred_at,
                    kind,
                } => {
                    let proto = v1::Credit::decode(&*payload).unwrap();
                    let (tenant, credit) = convert::credit_from_proto(&proto).unwrap();
                    assert_eq!(tenant.as_str(), TENANT);
                    assert_eq!(
                        record_key,
                        key(&[TENANT, credit.campaign.as_str(), credit.creator.as_str()])
                    );
                    assert_eq!(occurred_at, credit.occurred_at);
                    assert_eq!(kind, credit.kind.name());
                    self.credits.push(credit);
                }
                Output::Index {
                    key: record_key,
                    payload,
                } => {
                    let topic = self
                        .topics
                        .entry((Source::Index, partition(&record_key)))
                        .or_default();
                    topic.push(Record {
                        source: Source::Index,
                        offset: i64::try_from(topic.len()).unwrap(),
                        timestamp: None,
                        key: Some(record_key.into_bytes()),
                        payload: Some(payload),
                    });
                }
                Output::Changelog { .. } => {
                    panic!("task {p} wrote a changelog record outside flush_changelog")
                }
                dead @ Output::DeadLetter { .. } => self.dead_letters.push(dead),
                Output::LedgerInput {
                    key: record_key,
                    kind,
                    payload,
                } => {
                    assert_eq!(kind, "engagement");
                    let event = v1::Event::decode(&*payload).unwrap();
                    let Some(v1::event::Payload::Engagement(e)) = &event.payload else {
                        panic!("not an engagement event: {event:?}");
                    };
                    assert_eq!(record_key, key(&[TENANT, &e.campaign_id, &e.creator_id]));
                    self.passed_on.push((record_key, event.event_id));
                }
            }
        }
        n
    }

    /// Every task reads up to `batch` records of each input and pumps. True when anything
    /// was read or written.
    fn step(&mut self, batch: usize) -> bool {
        let mut moved = 0;
        for p in 0..PARTITIONS {
            for source in Source::ALL {
                moved += self.deliver(p, source, batch);
            }
            moved += self.pump(p, false);
        }
        moved > 0
    }

    /// Steps until nothing moves (index records reach their tasks, and so on).
    fn settle(&mut self, batch: usize) {
        for _ in 0..MAX_STEPS {
            if !self.step(batch) {
                return;
            }
        }
        panic!("the tasks did not settle in {MAX_STEPS} steps");
    }

    /// One transaction: each task's changelog since the last commit and its offsets.
    fn commit(&mut self) {
        for (p, task) in self.tasks.iter_mut().enumerate() {
            let mut out = Vec::new();
            task.flush_changelog(&mut out);
            for output in out {
                let Output::Changelog { key, payload } = output else {
                    panic!("flush_changelog gave {output:?}");
                };
                self.committed.changelog[p].insert(key, payload);
            }
            for (source, offset) in task.offsets() {
                let before = self.committed.offsets.insert((source, p), offset);
                assert!(
                    before.is_none_or(|b| b <= offset),
                    "task {p} moved its {source:?} offset back from {before:?} to {offset}"
                );
            }
        }
        self.committed.credits = self.credits.len();
        self.committed.dead_letters = self.dead_letters.len();
        self.committed.index = (0..PARTITIONS)
            .map(|p| (p, self.len(Source::Index, p)))
            .collect();
    }

    /// Every task dies: what was written since the last commit is aborted, new tasks
    /// restore the changelog and read again from the committed offsets.
    fn crash(&mut self) {
        self.crashes += 1;
        let c = &self.committed;
        self.credits.truncate(c.credits);
        self.dead_letters.truncate(c.dead_letters);
        for p in 0..PARTITIONS {
            if let Some(topic) = self.topics.get_mut(&(Source::Index, p)) {
                topic.truncate(c.index.get(&p).copied().unwrap_or(0));
            }
        }
        self.tasks = new_tasks(self.settings);
        for (p, log) in c.changelog.iter().enumerate() {
            for (key, value) in log {
                self.tasks[p].restore(Some(key), value.as_deref()).unwrap();
            }
        }
        for (input, next) in &self.read {
            let from = c.offsets.get(input).copied().unwrap_or(0);
            self.reread += usize::try_from(next - from).unwrap();
        }
        self.read = c.offsets.clone();
    }

    fn stat(&self, result: &str) -> u64 {
        self.stats
            .iter()
            .filter(|((_, r), _)| *r == result)
            .map(|(_, n)| n)
            .sum()
    }

    /// Nothing is left anywhere but the sentinels in the reorder buffers: every task has
    /// read and processed all of its input, and commits (so restarts) past all of it.
    fn assert_drained(&self) {
        for (p, task) in self.tasks.iter().enumerate() {
            assert_eq!(task.queued(), 0, "task {p} has queued events");
            for (source, offset) in task.offsets() {
                let len = i64::try_from(self.len(source, p)).unwrap();
                // The sentinel is the newest click and stays in its reorder buffer.
                let end = if source == Source::Clicks {
                    len - 1
                } else {
                    len
                };
                assert_eq!(offset, end, "task {p} still holds {source:?} from {offset}");
            }
        }
    }

    /// Every attributed conversion went to the order index exactly once, keyed like its
    /// corrections, in the partition of its key.
    fn assert_index(&self, conversions: &BTreeSet<ConversionKey>) {
        let mut keys = Vec::new();
        for p in 0..PARTITIONS {
            for (i, r) in self
                .topics
                .get(&(Source::Index, p))
                .into_iter()
                .flatten()
                .enumerate()
            {
                assert_eq!(r.offset, i64::try_from(i).unwrap());
                let index = codec::index_from(r.payload.as_deref()).unwrap();
                assert_eq!(index.tenant.as_str(), TENANT);
                let id = match &index.key {
                    ConversionKey::Order(o) => o.as_str(),
                    ConversionKey::Lead(l) => l.as_str(),
                };
                let want = key(&[TENANT, id]);
                assert_eq!(r.key.as_deref(), Some(want.as_bytes()));
                assert_eq!(partition(&want), p);
                keys.push(index.key);
            }
        }
        let unique: BTreeSet<ConversionKey> = keys.iter().cloned().collect();
        assert_eq!(keys.len(), unique.len(), "a conversion was indexed twice");
        assert_eq!(&unique, conversions);
    }
}

fn new_tasks(settings: Settings) -> Vec<Task> {
    (0..PARTITIONS)
        .map(|p| Task::new(i32::try_from(p).unwrap(), settings))
        .collect()
}

/// The same credits, each once.
fn assert_same_credits(got: &[Credit], want: &[Credit]) {
    let got = sorted(got);
    let ids = |credits: &[Credit]| credits.iter().map(|c| c.id.to_text()).collect::<Vec<_>>();
    assert_eq!(ids(&got), ids(want), "credit ids differ");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w, "credit {}", w.id.to_text());
    }
}

/// What every run must end with: the engine's credits, each conversion indexed once,
/// nothing held, no dead letters.
fn assert_matches_oracle(cluster: &Cluster, f: &Fixture) {
    assert_same_credits(&cluster.credits, &f.oracle.credits);
    // Every engagement snapshot reaches the ledger (a repeated event id once).
    let want: BTreeSet<String> = f
        .inputs()
        .filter(|i| matches!(i.event.payload, payoff_core::event::Payload::Engagement(_)))
        .map(|i| i.event.id.as_str().to_owned())
        .collect();
    let got: BTreeSet<String> = cluster.passed_on.iter().map(|(_, id)| id.clone()).collect();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    cluster.assert_index(&f.oracle.conversions);
    cluster.assert_drained();
    assert!(
        cluster.dead_letters.is_empty(),
        "dead letters: {:?}",
        cluster.dead_letters
    );
}

fn settings(correction_wait: Duration) -> Settings {
    Settings {
        correction_wait,
        ..Settings::default()
    }
}

#[test]
fn the_oracle_credits_every_kind_and_engagement_changes_nothing() {
    let f = Fixture::load();
    let kinds = kinds(&f.oracle.credits);
    assert!(f.oracle.credits.len() > 100, "{kinds:?}");
    for kind in ["click", "order", "lead", "reversal", "lead_status"] {
        assert!(
            kinds.get(kind).is_some_and(|n| *n > 0),
            "no {kind}: {kinds:?}"
        );
    }
    // Engagement is passed on to the ledger: the engine's credits must not depend on it.
    let engagement =
        |i: &&Input| matches!(i.event.payload, payoff_core::event::Payload::Engagement(_));
    let without = oracle(&f.history, f.inputs().filter(|i| !engagement(i)));
    assert!(f.events.iter().any(|i| engagement(&i)));
    assert_eq!(without.credits, f.oracle.credits);
    // Every partition has clicks, orders and corrections to merge.
    let mut cluster = Cluster::new(&f.programs, Settings::default());
    for input in f.inputs() {
        cluster.produce(input);
    }
    for p in 0..PARTITIONS {
        for source in [Source::Clicks, Source::Orders, Source::Signups] {
            assert!(
                cluster.len(source, p) > 0,
                "partition {p} has no {source:?}"
            );
        }
    }
}

#[test]
fn live_partitioned_tasks_give_the_engines_credits() {
    let f = Fixture::load();
    let mut cluster = Cluster::new(&f.programs, Settings::default());
    for input in f.inputs() {
        cluster.produce(input);
        cluster.settle(usize::MAX);
    }
    assert_matches_oracle(&cluster, &f);
}

#[test]
fn backlog_read_in_small_batches_gives_the_engines_credits() {
    let f = Fixture::load();
    let mut cluster = Cluster::new(&f.programs, settings(LONG_WAIT));
    for input in f.inputs() {
        cluster.produce(input);
    }
    cluster.settle(3);
    assert_matches_oracle(&cluster, &f);
    assert!(
        cluster.stat("waiting") > 0,
        "no correction waited for its order"
    );
}

/// A correction's event-time wait runs on its own task's clock, while its index record
/// comes from another task, which may be far behind in event time when the input is a
/// backlog (a first start, a restart after downtime). Here task 0 reads all of its
/// partitions before task 1 reads any: with the event-time wait alone, task 0 would
/// dead-letter refunds and lead statuses whose orders and signups task 1 has not
/// attributed yet (12 credits short with a day's wait). The wall-clock part of the wait
/// (the clock here never moves) keeps them waiting until their conversions arrive.
#[test]
fn backlog_read_whole_partitions_at_a_time_gives_the_engines_credits() {
    let f = Fixture::load();
    let settings = Settings {
        correction_wall_wait: Duration::hours(1),
        ..Settings::default()
    };
    let mut cluster = Cluster::new(&f.programs, settings);
    for input in f.inputs() {
        cluster.produce(input);
    }
    cluster.settle(usize::MAX);
    assert_matches_oracle(&cluster, &f);
}

#[test]
fn an_input_read_far_ahead_waits_for_the_others() {
    let f = Fixture::load();
    let mut cluster = Cluster::new(&f.programs, settings(LONG_WAIT));
    for input in f.inputs() {
        cluster.produce(input);
    }
    // Every click first: nothing may be decided before the other inputs are read.
    for p in 0..PARTITIONS {
        let clicks = cluster.deliver(p, Source::Clicks, usize::MAX);
        assert_eq!(clicks, cluster.len(Source::Clicks, p));
        assert_eq!(
            cluster.pump(p, false),
            0,
            "task {p} decided before the merge"
        );
        let task = &cluster.tasks[p];
        assert_eq!(task.queued(), clicks);
        assert!(task.waiting_for(Source::Orders));
        assert!(!task.waiting_for(Source::Clicks));
    }
    assert!(cluster.stats.is_empty(), "{:?}", cluster.stats);
    assert!(cluster.credits.is_empty());
    // Then the rest, a few records of each input at a time.
    cluster.settle(2);
    assert_matches_oracle(&cluster, &f);
}

/// Produces every input, one at a time, read live; commits after every `commit_every`
/// inputs and crashes after every `crash_every` (losing what followed the commit).
fn live_with_crashes(f: &Fixture, commit_every: usize, crash_every: usize) -> Cluster {
    let mut cluster = Cluster::new(&f.programs, Settings::default());
    for (i, input) in f.inputs().enumerate() {
        cluster.produce(input);
        cluster.settle(usize::MAX);
        if (i + 1) % commit_every == 0 {
            cluster.commit();
        }
        if (i + 1) % crash_every == 0 {
            cluster.crash();
            cluster.settle(usize::MAX);
        }
    }
    cluster
}

#[test]
fn a_crash_half_way_loses_and_doubles_nothing() {
    let f = Fixture::load();
    let half = f.events.len() / 2;
    let mut cluster = Cluster::new(&f.programs, Settings::default());
    let mut lost = 0;
    for (i, input) in f.inputs().enumerate() {
        cluster.produce(input);
        cluster.settle(usize::MAX);
        // The commit; what the next 20 events produce is never committed.
        if i + 1 == half {
            cluster.commit();
        }
        if i + 1 == half + 20 {
            lost = cluster.credits.len() - cluster.committed.credits;
            cluster.crash();
            cluster.settle(usize::MAX);
        }
    }
    assert!(lost > 0, "the crash lost no credit, so it proves nothing");
    assert_matches_oracle(&cluster, &f);
}

#[test]
fn crashes_at_many_points_lose_and_double_nothing() {
    let f = Fixture::load();
    for (commit_every, crash_every) in [(1, 13), (7, 31), (20, 45), (50, 50)] {
        let cluster = live_with_crashes(&f, commit_every, crash_every);
        assert!(cluster.crashes >= 8, "{commit_every}/{crash_every}");
        assert_matches_oracle(&cluster, &f);
    }
}

#[test]
fn backlog_crashes_while_corrections_wait_lose_and_double_nothing() {
    let f = Fixture::load();
    let mut waited = 0;
    let mut reread = 0;
    for (commit_every, crash_every) in [(1, 2), (1, 3), (2, 5), (3, 7), (4, 4)] {
        let mut cluster = Cluster::new(&f.programs, settings(LONG_WAIT));
        for input in f.inputs() {
            cluster.produce(input);
        }
        let mut round = 0;
        while cluster.step(3) {
            round += 1;
            assert!(round < MAX_STEPS, "no end in {MAX_STEPS} rounds");
            if round % commit_every == 0 {
                cluster.commit();
            }
            if round % crash_every == 0 {
                cluster.crash();
            }
        }
        assert!(cluster.crashes >= 3, "{commit_every}/{crash_every}");
        assert_matches_oracle(&cluster, &f);
        waited += cluster.stat("waiting");
        reread += cluster.reread;
    }
    // Corrections really waited, and restarts really read records again.
    assert!(waited > 0);
    assert!(reread > 0);
}

/// The dead letters of `out`, as (input, offset, reason).
fn dead_letters(out: &[Output]) -> Vec<(Source, i64, &'static str)> {
    out.iter()
        .filter_map(|o| match o {
            Output::DeadLetter {
                source,
                offset,
                reason,
                ..
            } => Some((*source, *offset, *reason)),
            _ => None,
        })
        .collect()
}

fn credit_kinds(out: &[Output]) -> Vec<&'static str> {
    out.iter()
        .filter_map(|o| match o {
            Output::Credit { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
}

fn offset(task: &Task, source: Source) -> Option<i64> {
    task.offsets()
        .into_iter()
        .find(|(s, _)| *s == source)
        .map(|(_, o)| o)
}

/// Offers one event record, and marks its input read to the end.
fn offer(task: &mut Task, programs: &Programs, record: Record, out: &mut Vec<Output>) {
    let source = record.source;
    task.offer(programs, record.borrowed(), out);
    task.set_at_end(source, true);
}

fn visitor_key(visitor: &str) -> String {
    key(&[TENANT, visitor])
}

#[test]
fn a_correction_for_an_order_that_never_comes_goes_to_the_dead_letters() {
    let programs = programs(&history());
    let wait = Duration::minutes(1);
    let mut task = Task::new(0, settings(wait));
    for source in Source::EVENTS {
        task.set_at_end(source, true);
    }
    let mut out = Vec::new();

    // Given a refund of an order that is never attributed,
    let never = refund("adj-never", "2026-11-02T10:00:00Z", "order-never");
    let never_key = key(&[TENANT, "order-never"]);
    let never_record = record(Source::Adjustments, 0, &never_key, &never);
    offer(&mut task, &programs, never_record.clone(), &mut out);
    // when event time passes it but not the wait, it waits (and is held for a restart);
    let first = click(
        "click-1",
        "2026-11-02T10:00:30Z",
        "visitor-x",
        "anna-spring",
    );
    offer(
        &mut task,
        &programs,
        record(Source::Clicks, 0, &visitor_key("visitor-x"), &first),
        &mut out,
    );
    task.pump(&programs, false, &mut out);
    assert_eq!(out, Vec::new());
    assert_eq!(offset(&task, Source::Adjustments), Some(0));

    // and once event time passes the wait, it goes to the dead letters as it came.
    let buy = order("order-1", "2026-11-02T10:02:00Z", "visitor-x", "order-x");
    offer(
        &mut task,
        &programs,
        record(Source::Orders, 0, &visitor_key("visitor-x"), &buy),
        &mut out,
    );
    task.pump(&programs, false, &mut out);
    assert_eq!(
        dead_letters(&out),
        vec![(Source::Adjustments, 0, "unknown_conversion")]
    );
    let Some(Output::DeadLetter {
        key: dead_key,
        payload,
        detail,
        ..
    }) = out.iter().find(|o| matches!(o, Output::DeadLetter { .. }))
    else {
        unreachable!()
    };
    assert_eq!(dead_key, &never_record.key);
    assert_eq!(payload, &never_record.payload);
    assert!(detail.contains("order-never"), "{detail}");
    assert_eq!(offset(&task, Source::Adjustments), Some(1));

    // Processing goes on: a later event releases the order, which is credited.
    out.clear();
    let later = click(
        "click-2",
        "2026-11-02T10:05:00Z",
        "visitor-y",
        "no-such-link",
    );
    offer(
        &mut task,
        &programs,
        record(Source::Clicks, 1, &visitor_key("visitor-y"), &later),
        &mut out,
    );
    task.pump(&programs, false, &mut out);
    assert_eq!(credit_kinds(&out), vec!["order"]);
    assert!(out.iter().any(|o| matches!(o, Output::Index { .. })));
    assert_eq!(dead_letters(&out), Vec::new());

    // A restart that reads the refund again remembers it was dead-lettered.
    let mut changelog = Vec::new();
    task.flush_changelog(&mut changelog);
    let mut restarted = Task::new(0, settings(wait));
    for output in &changelog {
        let Output::Changelog { key, payload } = output else {
            unreachable!()
        };
        restarted.restore(Some(key), payload.as_deref()).unwrap();
    }
    for source in Source::EVENTS {
        restarted.set_at_end(source, true);
    }
    out.clear();
    offer(&mut restarted, &programs, never_record, &mut out);
    let much_later = click(
        "click-3",
        "2026-11-02T11:00:00Z",
        "visitor-y",
        "no-such-link",
    );
    offer(
        &mut restarted,
        &programs,
        record(Source::Clicks, 2, &visitor_key("visitor-y"), &much_later),
        &mut out,
    );
    restarted.pump(&programs, false, &mut out);
    assert_eq!(out, Vec::new());
    assert!(
        restarted
            .take_stats()
            .iter()
            .any(|(kind, result, n)| (kind, result, n) == ("adjustment", "duplicate", 1))
    );
    assert_eq!(offset(&restarted, Source::Adjustments), Some(1));
}

#[test]
fn records_that_cannot_be_used_go_to_the_dead_letters_and_the_rest_goes_on() {
    let programs = programs(&history());
    let mut task = Task::new(0, Settings::default());
    let visitor = visitor_key("visitor-x");
    let touch = click(
        "click-1",
        "2026-11-02T10:00:00Z",
        "visitor-x",
        "anna-spring",
    );
    let buy = order("order-1", "2026-11-02T10:02:00Z", "visitor-x", "order-x");
    let end = click(
        "click-2",
        "2026-11-02T10:05:00Z",
        "visitor-y",
        "no-such-link",
    );
    let mut no_tenant = buy.proto.clone();
    no_tenant.tenant_id.clear();
    let mut no_id = touch.proto.clone();
    no_id.event_id.clear();
    let raw = |source, offset, payload: Option<Vec<u8>>| Record {
        source,
        offset,
        timestamp: Some(touch.event.occurred_at.millis()),
        key: Some(visitor.as_bytes().to_vec()),
        payload,
    };
    let records = [
        raw(Source::Clicks, 0, Some(vec![0xff, 0xff, 0xff])),
        raw(Source::Clicks, 1, None),
        raw(Source::Clicks, 2, Some(no_id.encode_to_vec())),
        record(Source::Clicks, 3, &visitor, &touch),
        raw(Source::Orders, 0, Some(no_tenant.encode_to_vec())),
        record(Source::Orders, 1, &visitor, &buy),
        raw(Source::Index, 0, Some(vec![0xff, 0xff, 0xff])),
        record(Source::Clicks, 4, &visitor_key("visitor-y"), &end),
    ];
    let mut out = Vec::new();
    for r in &records {
        task.offer(&programs, r.borrowed(), &mut out);
    }
    for source in Source::EVENTS {
        task.set_at_end(source, true);
    }
    task.pump(&programs, false, &mut out);

    let mut dead = dead_letters(&out);
    dead.sort();
    assert_eq!(
        dead,
        vec![
            (Source::Clicks, 0, "undecodable"),
            (Source::Clicks, 1, "empty"),
            (Source::Clicks, 2, "invalid"),
            (Source::Orders, 0, "no_tenant"),
            (Source::Index, 0, "undecodable"),
        ]
    );
    // Each dead letter carries its record as it came.
    for o in &out {
        if let Output::DeadLetter {
            source,
            offset,
            key,
            payload,
            ..
        } = o
        {
            let r = records
                .iter()
                .find(|r| (r.source, r.offset) == (*source, *offset))
                .unwrap();
            assert_eq!((key, payload), (&r.key, &r.payload));
        }
    }
    // The records after them were processed: the order is credited to its click.
    assert_eq!(credit_kinds(&out), vec!["click", "order"]);
    assert_eq!(offset(&task, Source::Clicks), Some(4));
    assert_eq!(offset(&task, Source::Orders), Some(2));
    assert_eq!(offset(&task, Source::Index), Some(1));
}

/// Folds every changelog record of `outputs` into a new task, as a restart does.
fn restored(p: i32, settings: Settings, outputs: &[Output]) -> Task {
    let mut task = Task::new(p, settings);
    for output in outputs {
        let Output::Changelog { key, payload } = output else {
            panic!("not a changelog record: {output:?}");
        };
        task.restore(Some(key), payload.as_deref()).unwrap();
    }
    task
}

#[test]
fn a_restart_reads_a_waiting_correction_again_and_what_followed_it_is_a_duplicate() {
    let programs = programs(&history());
    let settings = Settings::default();

    // Task 1 attributes the remote order; its index record reaches task 0 only later.
    let mut remote = Task::new(1, settings);
    for source in Source::EVENTS {
        remote.set_at_end(source, true);
    }
    let mut out = Vec::new();
    for (source, offset, visitor, input) in [
        (
            Source::Clicks,
            0,
            "visitor-r",
            click(
                "click-r",
                "2026-11-02T09:00:00Z",
                "visitor-r",
                "anna-spring",
            ),
        ),
        (
            Source::Orders,
            0,
            "visitor-r",
            order(
                "order-r",
                "2026-11-02T09:02:00Z",
                "visitor-r",
                "order-remote",
            ),
        ),
        (
            Source::Clicks,
            1,
            "visitor-s",
            click(
                "click-s",
                "2026-11-02T09:10:00Z",
                "visitor-s",
                "no-such-link",
            ),
        ),
    ] {
        offer(
            &mut remote,
            &programs,
            record(source, offset, &visitor_key(visitor), &input),
            &mut out,
        );
    }
    remote.pump(&programs, false, &mut out);
    let index = out
        .iter()
        .find_map(|o| match o {
            Output::Index { key, payload } => Some(Record {
                source: Source::Index,
                offset: 0,
                timestamp: None,
                key: Some(key.as_bytes().to_vec()),
                payload: Some(payload.clone()),
            }),
            _ => None,
        })
        .unwrap();

    // Task 0: a local order, then a refund of the remote order (it waits) and one of the
    // local order (decided, after the waiting one in its input).
    let records = [
        record(
            Source::Clicks,
            0,
            &visitor_key("visitor-a"),
            &click(
                "click-a",
                "2026-11-02T10:00:00Z",
                "visitor-a",
                "anna-spring",
            ),
        ),
        record(
            Source::Orders,
            0,
            &visitor_key("visitor-a"),
            &order(
                "order-a",
                "2026-11-02T10:02:00Z",
                "visitor-a",
                "order-local",
            ),
        ),
        record(
            Source::Adjustments,
            0,
            &key(&[TENANT, "order-remote"]),
            &refund("refund-remote", "2026-11-02T11:00:00Z", "order-remote"),
        ),
        record(
            Source::Adjustments,
            1,
            &key(&[TENANT, "order-local"]),
            &refund("refund-local", "2026-11-02T11:30:00Z", "order-local"),
        ),
        record(
            Source::Clicks,
            1,
            &visitor_key("visitor-b"),
            &click(
                "click-b",
                "2026-11-02T12:00:00Z",
                "visitor-b",
                "no-such-link",
            ),
        ),
    ];
    let mut task = Task::new(0, settings);
    for source in Source::EVENTS {
        task.set_at_end(source, true);
    }
    let mut out = Vec::new();
    for r in records.iter().cloned() {
        offer(&mut task, &programs, r, &mut out);
    }
    task.pump(&programs, false, &mut out);
    assert_eq!(credit_kinds(&out), vec!["click", "order", "reversal"]);
    // The commit: the waiting refund and the newest click are still held.
    let committed: BTreeMap<Source, i64> = task.offsets().into_iter().collect();
    assert_eq!(committed[&Source::Adjustments], 0);
    assert_eq!(committed[&Source::Clicks], 1);
    let mut changelog = Vec::new();
    task.flush_changelog(&mut changelog);
    drop(task);

    // The restart reads again from the committed offsets: the local refund was decided
    // already, and the remote one waits again.
    let mut task = restored(0, settings, &changelog);
    for source in Source::EVENTS {
        task.set_at_end(source, true);
    }
    let mut out = Vec::new();
    for r in records.iter().filter(|r| r.offset >= committed[&r.source]) {
        offer(&mut task, &programs, r.clone(), &mut out);
    }
    task.pump(&programs, false, &mut out);
    assert_eq!(out, Vec::new());
    let stats: Vec<_> = task.take_stats().iter().collect();
    assert!(stats.contains(&("adjustment", "duplicate", 1)), "{stats:?}");
    assert!(stats.contains(&("adjustment", "waiting", 1)), "{stats:?}");
    assert_eq!(offset(&task, Source::Adjustments), Some(0));

    // The remote order's index record arrives: the waiting refund is decided, once.
    task.offer(&programs, index.borrowed(), &mut out);
    assert_eq!(credit_kinds(&out), vec!["reversal"]);
    assert_eq!(offset(&task, Source::Adjustments), Some(2));
}

/// A task restored from its predecessor's changelog judges lateness as the predecessor
/// did: an order that arrives behind the watermark the predecessor had reached is decided
/// at once, so a click that arrives after it (later than the grace) does not take it.
/// Without the watermark in the changelog the restored task would start from nothing,
/// hold the order, and let the late click sort before it.
#[test]
fn a_restored_task_keeps_its_predecessors_watermark() {
    let f = Fixture::load();
    let settings = Settings::default();
    let offer =
        |task: &mut Task, source: Source, offset: i64, input: &Input, out: &mut Vec<Output>| {
            let (_, key) = route(input).unwrap();
            task.offer(
                &f.programs,
                record(source, offset, &key, input).borrowed(),
                out,
            );
            task.pump(&f.programs, true, out);
        };
    let mut out = Vec::new();
    // The predecessor: a click of anna's at 10:00, then another visitor at 10:10 moves
    // the watermark to 10:09:50 (grace 10 s).
    let mut first = Task::new(0, settings);
    offer(
        &mut first,
        Source::Clicks,
        0,
        &click("c1", "2026-11-02T10:00:00Z", "v", "anna-spring"),
        &mut out,
    );
    offer(
        &mut first,
        Source::Clicks,
        1,
        &click("c9", "2026-11-02T10:10:00Z", "w", "chloe-skin"),
        &mut out,
    );
    let mut changelog = Vec::new();
    first.flush_changelog(&mut changelog);
    // The successor restores, then reads the order (10:05) and a click of ben's (10:04:30)
    // that arrives after it: both behind the watermark, taken as they come.
    let mut second = Task::new(0, settings);
    for output in &changelog {
        let Output::Changelog { key, payload } = output else {
            panic!("not a changelog record: {output:?}");
        };
        second.restore(Some(key), payload.as_deref()).unwrap();
    }
    out.clear();
    offer(
        &mut second,
        Source::Orders,
        0,
        &order("o1", "2026-11-02T10:05:00Z", "v", "order-v"),
        &mut out,
    );
    offer(
        &mut second,
        Source::Clicks,
        2,
        &click("c2", "2026-11-02T10:04:30Z", "v", "ben-spring"),
        &mut out,
    );
    offer(
        &mut second,
        Source::Clicks,
        3,
        &click("c10", "2026-11-02T11:00:00Z", "x", "chloe-skin"),
        &mut out,
    );
    let credited: Vec<String> = out
        .iter()
        .filter_map(|o| match o {
            Output::Credit {
                payload,
                kind: "order",
                ..
            } => {
                let proto = v1::Credit::decode(payload.as_slice()).unwrap();
                Some(proto.creator_id)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        credited,
        ["anna"],
        "the order's last click before it arrived late"
    );
}

/// The seen ids of a transaction go to the changelog as one batch record, not one record
/// each. A restore forgets what the task had forgotten: an id that expired while the rest
/// of its batch is still kept (the restore sweeps where the task swept) and the ids of a
/// batch removed whole, while an old id sent again after the sweep is remembered. Either
/// way, the restored task and the task it replaces judge every id alike.
#[test]
fn seen_ids_are_written_in_batches_and_restored_exactly_across_expiry() {
    let f = Fixture::load();
    let settings = Settings::default();
    let retention = f.history.retention();
    let t0 = Timestamp(1_793_613_600_000); // 2026-11-02T10:00:00Z
    let at = |offset: Duration| t0.plus(offset).to_string();
    let offer = |task: &mut Task, offset: i64, input: &Input, out: &mut Vec<Output>| {
        let (source, key) = route(input).unwrap();
        task.offer(
            &f.programs,
            record(source, offset, &key, input).borrowed(),
            out,
        );
        task.pump(&f.programs, true, out);
    };
    let changelog = |task: &mut Task, log: &mut Vec<Output>| {
        let start = log.len();
        task.flush_changelog(log);
        log[start..]
            .iter()
            .map(|o| match o {
                Output::Changelog { key, payload } => {
                    codec::changelog_from(Some(key), payload.as_deref()).unwrap()
                }
                other => panic!("not a changelog record: {other:?}"),
            })
            .collect::<Vec<_>>()
    };
    // a and d are decided in one transaction (f releases d), b in the next; c's sweep
    // (released by e) cuts at t0 + 2 h: a and b expire, d and f stay.
    let a = click("a", &at(Duration(0)), "va", "anna-spring");
    let d = click("d", &at(Duration::hours(3)), "vd", "ben-spring");
    let f_ = click("f", &at(Duration::hours(4)), "vf", "chloe-skin");
    let b = click("b", &at(Duration::hours(1)), "vb", "chloe-skin");
    let past = Duration(retention.0 + Duration::hours(2).0);
    let c = click("c", &at(past), "vc", "anna-spring");
    let e = click("e", &at(Duration(past.0 + 60_000)), "ve", "ben-spring");

    let mut task = Task::new(0, settings);
    let mut out = Vec::new();
    let mut log = Vec::new();
    offer(&mut task, 0, &a, &mut out);
    offer(&mut task, 1, &d, &mut out);
    offer(&mut task, 2, &f_, &mut out);
    let first = changelog(&mut task, &mut log);
    let batches: Vec<_> = first
        .iter()
        .filter_map(|(k, v)| match (&k.entry, v) {
            (codec::Entry::SeenBatch { .. }, Some(codec::ChangelogValue::SeenBatch(ids))) => {
                Some(ids.len())
            }
            _ => None,
        })
        .collect();
    let singles = first
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.entry,
                codec::Entry::State(payoff_core::attribution::StateKey::Seen(_))
            )
        })
        .count();
    assert_eq!(
        (batches, singles),
        (vec![2], 0),
        "two seen ids, one record: {first:?}"
    );
    offer(&mut task, 3, &b, &mut out);
    changelog(&mut task, &mut log);
    offer(&mut task, 4, &c, &mut out);
    offer(&mut task, 5, &e, &mut out);
    let swept = changelog(&mut task, &mut log);
    assert!(
        swept
            .iter()
            .any(|(k, v)| matches!(k.entry, codec::Entry::SeenBatch { .. }) && v.is_none()),
        "b's batch is removed whole: {swept:?}"
    );
    // b, sent again after the sweep, is new and remembered from now on.
    offer(&mut task, 6, &b, &mut out);
    changelog(&mut task, &mut log);
    task.take_stats();

    // The changelog as written, and as compaction leaves it (the latest record per key,
    // where it stood; removed keys gone).
    let compacted: Vec<Output> = {
        let mut latest = BTreeMap::new();
        for (i, o) in log.iter().enumerate() {
            let Output::Changelog { key, .. } = o else {
                unreachable!()
            };
            latest.insert(key.clone(), i);
        }
        let keep: BTreeSet<usize> = latest.into_values().collect();
        log.iter()
            .enumerate()
            .filter(|(i, o)| {
                keep.contains(i)
                    && matches!(
                        o,
                        Output::Changelog {
                            payload: Some(_),
                            ..
                        }
                    )
            })
            .map(|(_, o)| o.clone())
            .collect()
    };
    let judged = |task: &mut Task| {
        let mut out = Vec::new();
        for (offset, input) in [(7, &a), (8, &b), (9, &d), (10, &f_), (11, &c)] {
            offer(task, offset, input, &mut out);
        }
        let mut stats: Vec<_> = task.take_stats().iter().collect();
        stats.sort_unstable();
        (stats, credit_kinds(&out))
    };
    let mut from_log = restored(0, settings, &log);
    let mut from_compacted = restored(0, settings, &compacted);
    let want = judged(&mut task);
    // b (sent again), d, f and c are remembered; a expired from a batch that stays.
    assert!(want.0.contains(&("click", "duplicate", 4)), "{want:?}");
    assert_eq!(
        judged(&mut from_log),
        want,
        "restored from the changelog as written"
    );
    assert_eq!(
        judged(&mut from_compacted),
        want,
        "restored from the compacted changelog"
    );
}
