//! The Kafka side: one consumer in the attributor group, one transactional producer,
//! and the tasks of the partition numbers this instance owns.
//!
//! The loop, on one thread that owns the consumer and the transaction (every Kafka call
//! here blocks):
//! 1. serve the consumer's main queue (rebalances, errors) and the `programs` topic;
//! 2. drain each assigned input partition's own queue into its task's pending list (a
//!    queue per partition, so an input's end of partition is known and the merge need
//!    not wait for it), as far as the task has room for that input
//!    (`--max-held-events`): in a backlog the sparse inputs would otherwise be decoded
//!    far ahead of the clicks, until the merge had to go on without them;
//! 3. let every task, on the pool (`--threads`; a task on one thread at a time, tasks
//!    side by side), decode what is pending, merge and process, and send its credits,
//!    index records and dead letters into the open transaction;
//! 4. every `batch_records` records or `batch_interval`, append the changelog (tasks on
//!    the pool again), take the tasks' offsets, send them with the group metadata
//!    (`send_offsets_to_transaction`) and commit; while this thread waits for Kafka, the
//!    tasks take their turn on what the queues delivered since (their outputs go into
//!    the next transaction, begun as soon as this one is committed).
//!
//! On revocation the open transaction is committed first (inside the rebalance
//! callback), so no work of a revoked partition is ever left uncommitted; on assignment
//! each task's state is restored from its changelog partition before its first record.
//! A transaction that cannot be committed is aborted and the process stops: a restart
//! restores the committed state (crash-only), which is what exactly-once rests on anyway.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Range,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use payoff_adapters::{
    kafka as adapters,
    progress::{self, Progress},
    topology::{self, Topics},
};
use payoff_core::ids::TenantId;
use payoff_proto::{convert, v1};
use prost::Message as _;
use rayon::prelude::*;
use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, TopicPartitionList,
    consumer::base_consumer::PartitionQueue,
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance},
    error::KafkaError,
    message::{BorrowedMessage, Header, OwnedHeaders},
    producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer},
    statistics::Statistics,
};
use tokio_util::sync::CancellationToken;

use crate::{
    AttributorError, Config, metrics as m,
    task::{Output, Programs, RecordRef, Settings, Source, Task},
};

/// Most records taken from one partition queue per turn (keeps the merge fair).
const PER_QUEUE: usize = 2_000;
/// How long a task may merge nothing before its inputs' ends are looked up.
const END_CHECK_EVERY: Duration = Duration::from_millis(500);
/// How often the state size is measured (a scan of the state).
const STATE_EVERY: Duration = Duration::from_secs(15);

/// Readiness, as the health service reports it.
pub type Ready = tokio::sync::watch::Sender<bool>;

/// What the loop and the rebalance callbacks share.
struct Worker {
    producer: ThreadedProducer<DefaultProducerContext>,
    topics: Topics,
    brokers: String,
    settings: Settings,
    tasks: BTreeMap<i32, Lane>,
    programs: Programs,
    /// The threads the tasks run on (tasks are independent: each partition's on one).
    pool: rayon::ThreadPool,
    in_txn: bool,
    records: usize,
    opened: Instant,
    timeout: Duration,
    /// Set when the assignment changed (the loop re-splits partition queues).
    reassigned: bool,
    /// Why the loop must stop (set by a callback).
    failed: Option<AttributorError>,
    ready: Ready,
    /// Partitions of the input topics (tasks) and of `credits` (where markers go).
    sources: u32,
    credit_partitions: i32,
}

/// One task and what the loop holds for it between its turns on the pool.
struct Lane {
    task: Task,
    /// What the partition queues delivered since the task's last turn, in order.
    pending: Vec<Pending>,
    /// Records in `pending`, per input (indexed as [`Source::ALL`]).
    pending_of: [usize; 7],
    /// The keys and values of the pending records, one after another: one copy into a
    /// buffer kept from turn to turn, instead of two allocations per record made on this
    /// thread and freed on a task's.
    bytes: Vec<u8>,
    /// What the task's last turn asked to write.
    outputs: Vec<Output>,
    /// The open transaction's credits: event time and kind (latency and counts, at
    /// commit).
    credited: Vec<(i64, &'static str)>,
    /// Since when the task's merge has waited for an empty input.
    blocked: Option<Instant>,
    /// The task's progress, reused at every commit.
    progress: Vec<(TenantId, payoff_core::time::Timestamp)>,
}

impl Lane {
    fn new(task: Task) -> Self {
        Self {
            task,
            pending: Vec::new(),
            pending_of: [0; 7],
            bytes: Vec::new(),
            outputs: Vec::new(),
            credited: Vec::new(),
            blocked: None,
            progress: Vec::new(),
        }
    }
}

/// What a partition queue delivered: a record, or the end of an input (kept in order
/// with the records: an end before a record would be undone by it).
enum Pending {
    Record(Slot),
    End(Source),
}

/// A pending record whose key and value are ranges of its lane's `bytes`.
struct Slot {
    source: Source,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Range<usize>>,
    payload: Option<Range<usize>>,
}

impl Slot {
    /// Copies a message's key and value to the end of `bytes`.
    fn keep(source: Source, msg: &BorrowedMessage<'_>, bytes: &mut Vec<u8>) -> Self {
        let mut keep = |part: Option<&[u8]>| {
            part.map(|part| {
                let start = bytes.len();
                bytes.extend_from_slice(part);
                start..bytes.len()
            })
        };
        Self {
            source,
            offset: msg.offset(),
            timestamp: msg.timestamp().to_millis(),
            key: keep(msg.key()),
            payload: keep(msg.payload()),
        }
    }

    /// The record, its bytes borrowed from `bytes`.
    fn record<'a>(&self, bytes: &'a [u8]) -> RecordRef<'a> {
        RecordRef {
            source: self.source,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.clone().map(|r| &bytes[r]),
            payload: self.payload.clone().map(|r| &bytes[r]),
        }
    }
}

/// The consumer's context: rebalances go through the worker.
struct Context {
    worker: Arc<Mutex<Worker>>,
    /// Per input partition: the application offset last seen in the statistics, and
    /// since when it has not moved (to report a partition that stopped delivering).
    progress: Mutex<BTreeMap<(String, i32), (i64, Instant)>>,
}

/// How long an assigned partition with lag may deliver nothing before it is reported.
const STALL_WARN: Duration = Duration::from_secs(30);

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        adapters::log_client_error(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        let mut progress = self
            .progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // Offsets are committed by the producer's transactions, which the
                // consumer's own `consumer_lag` does not see: the lag is what is readable
                // (up to the last stable offset) and not yet delivered to the loop.
                if *partition < 0 || p.app_offset < 0 || p.ls_offset < 0 {
                    continue;
                }
                let lag = (p.ls_offset - p.app_offset).max(0);
                metrics::gauge!(m::LAG, "topic" => topic.clone(), "partition" => partition.to_string())
                    .set(lag as f64);
                let key = (topic.clone(), *partition);
                let entry = progress
                    .entry(key)
                    .or_insert((p.app_offset, Instant::now()));
                if entry.0 != p.app_offset || lag == 0 {
                    *entry = (p.app_offset, Instant::now());
                } else if entry.1.elapsed() >= STALL_WARN {
                    tracing::warn!(
                        topic = %topic,
                        partition,
                        lag,
                        app_offset = p.app_offset,
                        next_offset = p.next_offset,
                        fetch_state = %p.fetch_state,
                        fetchq_cnt = p.fetchq_cnt,
                        ls_offset = p.ls_offset,
                        hi_offset = p.hi_offset,
                        stalled_secs = entry.1.elapsed().as_secs(),
                        "assigned partition delivers nothing while it has lag"
                    );
                }
            }
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let mut w = lock(&self.worker);
        let _ = w.ready.send(false);
        if consumer.assignment_lost() {
            // This instance was out of the group (session expired): another may own these
            // partitions now, so nothing of the open transaction may be committed.
            tracing::warn!("assignment lost; aborting the open transaction");
            if let Err(e) = w.abort() {
                w.failed.get_or_insert(e);
            }
        } else if let Err(e) = w.commit(consumer) {
            w.failed.get_or_insert(e);
        }
        let revoked: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        for p in revoked {
            // Records fetched and not yet offered go with it: their offsets are not
            // committed, so the next owner reads them again.
            w.tasks.remove(&p);
        }
        metrics::gauge!(m::TASKS).set(w.tasks.len() as f64);
        w.reassigned = true;
        tracing::info!(tasks = w.tasks.len(), "partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        // Nothing may be fetched before the loop has split the partitions' queues (the
        // restore below takes a while): a partition's end reported on the common queue
        // would not say which input ended.
        if let Err(e) = consumer.pause(tpl) {
            tracing::warn!(error = %e, "pausing the new assignment failed");
        }
        let mut w = lock(&self.worker);
        let _ = w.ready.send(false);
        let assigned: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        let new: Vec<i32> = assigned
            .into_iter()
            .filter(|p| !w.tasks.contains_key(p))
            .collect();
        match restore(&w.brokers, &w.topics.attributor_changelog, &new, w.settings) {
            Ok((tasks, _)) => {
                for task in tasks {
                    w.tasks.insert(task.partition(), Lane::new(task));
                }
            }
            Err(e) => {
                w.failed.get_or_insert(e);
                return;
            }
        }
        metrics::gauge!(m::TASKS).set(w.tasks.len() as f64);
        w.reassigned = true;
        let _ = w.ready.send(true);
        tracing::info!(
            tasks = w.tasks.len(),
            "partitions assigned and state restored"
        );
    }
}

fn lock(worker: &Mutex<Worker>) -> MutexGuard<'_, Worker> {
    // A panic while holding the lock leaves nothing half-written that a commit could
    // expose: outputs only become visible through a commit.
    worker
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn kafka(op: &'static str) -> impl FnOnce(KafkaError) -> AttributorError {
    move |e| AttributorError::Kafka(format!("{op}: {e}"))
}

/// The topic of an input.
fn topic_of(topics: &Topics, source: Source) -> &str {
    match source {
        Source::Clicks => &topics.clicks,
        Source::Signups => &topics.signups,
        Source::Orders => &topics.orders,
        Source::Adjustments => &topics.adjustments,
        Source::LeadStatus => &topics.lead_status,
        Source::Engagement => &topics.engagement,
        Source::Index => &topics.order_index,
    }
}

impl Worker {
    fn begin(&mut self) -> Result<(), AttributorError> {
        if !self.in_txn {
            self.producer
                .begin_transaction()
                .map_err(kafka("begin transaction"))?;
            self.in_txn = true;
            self.records = 0;
            self.opened = Instant::now();
        }
        Ok(())
    }

    /// Takes a record from an input partition's queue; its task decodes it on its next
    /// turn.
    fn offer(&mut self, source: Source, msg: &BorrowedMessage<'_>) -> Result<(), AttributorError> {
        self.begin()?;
        self.records += 1;
        let partition = msg.partition();
        match self.tasks.get_mut(&partition) {
            Some(lane) => {
                let slot = Slot::keep(source, msg, &mut lane.bytes);
                lane.pending.push(Pending::Record(slot));
                lane.pending_of[source.index()] += 1;
            }
            None => tracing::warn!(
                partition,
                "record for a partition this instance does not own"
            ),
        }
        Ok(())
    }

    /// Notes, in order with its records, that an input of a partition is read to its end.
    fn at_end(&mut self, partition: i32, source: Source) {
        if let Some(lane) = self.tasks.get_mut(&partition) {
            lane.pending.push(Pending::End(source));
        }
    }

    /// Gives every task a turn on the pool (take what was delivered, merge, process),
    /// then sends what they asked to write.
    fn pump(&mut self, max_idle: Duration) -> Result<(), AttributorError> {
        let now = Instant::now();
        let wall = payoff_core::time::Timestamp(wall_millis());
        let Self {
            tasks,
            programs,
            pool,
            ..
        } = self;
        let advanced = pool.install(|| turns(tasks, programs, now, wall, max_idle));
        self.send_turn(advanced)
    }

    /// Sends what the tasks' last turn asked to write, in a transaction opened for it
    /// when needed: the markers of moved watermarks (`advanced`) go out with the next
    /// commit, and outputs of held events released by time alone (no new record) open a
    /// transaction too.
    fn send_turn(&mut self, advanced: bool) -> Result<(), AttributorError> {
        if advanced || self.tasks.values().any(|lane| !lane.outputs.is_empty()) {
            self.begin()?;
        }
        self.send_outputs()
    }

    /// Sends every task's outputs (each task's in order, the tasks in parallel).
    fn send_outputs(&mut self) -> Result<(), AttributorError> {
        let Self {
            tasks,
            producer,
            topics,
            pool,
            ..
        } = self;
        let (producer, topics) = (&*producer, &*topics);
        pool.install(|| {
            tasks
                .par_iter_mut()
                .try_for_each(|(_, lane)| lane.send_outputs(producer, topics))
        })
    }

    /// Appends the changelog, sends the offsets and commits the open transaction.
    fn commit(&mut self, consumer: &BaseConsumer<Context>) -> Result<(), AttributorError> {
        self.commit_with(consumer, None)
    }

    /// [`Worker::commit`]. With `overlap` (the merge's longest idle wait, and how many
    /// records the queues delivered since the last turn), the tasks take their turn on
    /// those records while this thread waits for Kafka: they are decided during the
    /// commit and sent in the next transaction, which is begun here.
    fn commit_with(
        &mut self,
        consumer: &BaseConsumer<Context>,
        overlap: Option<(Duration, usize)>,
    ) -> Result<(), AttributorError> {
        if !self.in_txn {
            return Ok(());
        }
        let started = Instant::now();
        let mut advanced = false;
        let result = self.stage().and_then(|offsets| {
            let staged = started.elapsed();
            let Self {
                tasks,
                programs,
                pool,
                producer,
                timeout,
                ..
            } = self;
            let finish = || -> Result<(), AttributorError> {
                if offsets.count() > 0 {
                    let group = consumer.group_metadata().ok_or_else(|| {
                        AttributorError::Kafka("no consumer group metadata".into())
                    })?;
                    producer
                        .send_offsets_to_transaction(&offsets, &group, *timeout)
                        .map_err(kafka("send offsets to transaction"))?;
                }
                tracing::trace!(
                    staged_ms = staged.as_millis() as u64,
                    offsets_ms = started.elapsed().as_millis() as u64,
                    "offsets sent"
                );
                adapters::commit_transaction(producer, *timeout)
                    .map_err(kafka("commit transaction"))
            };
            let Some((max_idle, _)) = overlap else {
                return finish();
            };
            let (now, wall) = (Instant::now(), payoff_core::time::Timestamp(wall_millis()));
            pool.in_place_scope(|scope| {
                scope.spawn(|_| advanced = turns(tasks, programs, now, wall, max_idle));
                finish()
            })
        });
        self.in_txn = false;
        if let Err(e) = result {
            metrics::counter!(m::ABORTS).increment(1);
            if let Err(abort) = self.producer.abort_transaction(self.timeout) {
                tracing::error!(error = %abort, "abort transaction failed");
            }
            return Err(e);
        }
        tracing::debug!(
            records = self.records,
            open_ms = self.opened.elapsed().as_millis() as u64,
            commit_ms = started.elapsed().as_millis() as u64,
            "transaction committed"
        );
        metrics::counter!(m::COMMITS).increment(1);
        metrics::histogram!(m::COMMIT_DURATION).record(started.elapsed().as_secs_f64());
        let now = wall_millis();
        let latency = metrics::histogram!(m::ATTRIBUTION_LATENCY);
        // Credits by kind: a handful of kinds, counted here rather than looked up in the
        // registry once per credit.
        let mut kinds: Vec<(&'static str, u64)> = Vec::new();
        for lane in self.tasks.values_mut() {
            for (at, kind) in lane.credited.drain(..) {
                latency.record((now - at).max(0) as f64 / 1_000.0);
                match kinds.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, n)) => *n += 1,
                    None => kinds.push((kind, 1)),
                }
            }
        }
        for (kind, n) in kinds {
            metrics::counter!(m::CREDITS, "kind" => kind).increment(n);
        }
        // What the overlapped turn consumed and decided belongs to the next transaction.
        if let Some((_, drained)) = overlap {
            if drained > 0 {
                self.begin()?;
                self.records = drained;
            }
            self.send_turn(advanced)?;
        }
        Ok(())
    }

    /// The tasks' part of a commit (on the pool), then the offsets to commit: where each
    /// task's inputs stand now, before any record delivered since is offered.
    fn stage(&mut self) -> Result<TopicPartitionList, AttributorError> {
        let Self {
            tasks,
            producer,
            topics,
            pool,
            sources,
            credit_partitions,
            ..
        } = self;
        let (producer, topics, sources, credit_partitions) =
            (&*producer, &*topics, *sources, *credit_partitions);
        pool.install(|| {
            tasks.par_iter_mut().try_for_each(|(p, lane)| {
                lane.stage_commit(*p, producer, topics, sources, credit_partitions)
            })
        })?;
        let mut offsets = TopicPartitionList::new();
        for (p, lane) in &self.tasks {
            for (source, offset) in lane.task.offsets() {
                offsets
                    .add_partition_offset(
                        topic_of(&self.topics, source),
                        *p,
                        Offset::Offset(offset),
                    )
                    .map_err(kafka("offset list"))?;
            }
        }
        Ok(offsets)
    }

    /// Aborts the open transaction, if any.
    fn abort(&mut self) -> Result<(), AttributorError> {
        if !self.in_txn {
            return Ok(());
        }
        self.in_txn = false;
        for lane in self.tasks.values_mut() {
            lane.outputs.clear();
            lane.credited.clear();
        }
        metrics::counter!(m::ABORTS).increment(1);
        self.producer
            .abort_transaction(self.timeout)
            .map_err(kafka("abort transaction"))
    }
}

/// Gives every task its turn, side by side on the current pool; true when a quiet
/// partition's watermark moved in any of them.
fn turns(
    tasks: &mut BTreeMap<i32, Lane>,
    programs: &Programs,
    now: Instant,
    wall: payoff_core::time::Timestamp,
    max_idle: Duration,
) -> bool {
    tasks
        .par_iter_mut()
        .map(|(_, lane)| lane.turn(programs, now, wall, max_idle))
        .reduce(|| false, |a, b| a || b)
}

impl Lane {
    /// One turn of the task: offer what was delivered, merge and process. True when a
    /// quiet partition's watermark moved.
    fn turn(
        &mut self,
        programs: &Programs,
        now: Instant,
        wall: payoff_core::time::Timestamp,
        max_idle: Duration,
    ) -> bool {
        for pending in self.pending.drain(..) {
            match pending {
                Pending::Record(slot) => {
                    self.task
                        .offer(programs, slot.record(&self.bytes), &mut self.outputs);
                }
                Pending::End(source) => self.task.set_at_end(source, true),
            }
        }
        self.bytes.clear();
        self.pending_of = [0; 7];
        self.task.set_clock(wall, &mut self.outputs);
        let force = self
            .blocked
            .is_some_and(|since| now.duration_since(since) >= max_idle);
        let merged = self.task.pump(programs, force, &mut self.outputs);
        let advanced = self.task.advance_quiet(programs, wall, &mut self.outputs);
        // The idle clock runs only while the task can merge nothing at all: an input that
        // is merely slower than the others (a backlog fetched in turns) is waited for,
        // not overtaken.
        if merged > 0 || self.task.queued() == 0 {
            self.blocked = None;
        } else {
            self.blocked.get_or_insert(now);
        }
        advanced
    }

    fn send_outputs(&mut self, producer: &Kafka, topics: &Topics) -> Result<(), AttributorError> {
        for output in self.outputs.drain(..) {
            send(producer, topics, &mut self.credited, &output)?;
        }
        Ok(())
    }

    /// This task's part of a commit: its last outputs, its progress markers, its
    /// changelog and its counters.
    fn stage_commit(
        &mut self,
        p: i32,
        producer: &Kafka,
        topics: &Topics,
        sources: u32,
        credit_partitions: i32,
    ) -> Result<(), AttributorError> {
        self.send_outputs(producer, topics)?;
        self.progress.clear();
        self.task.progress(&mut self.progress);
        for (tenant, before) in &self.progress {
            let marker = Progress {
                tenant: tenant.as_str().to_owned(),
                source: u32::try_from(p).unwrap_or_default(),
                sources,
                before: before.millis(),
            }
            .encode();
            for partition in 0..credit_partitions {
                let record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&topics.credits)
                    .payload(marker.as_slice())
                    .partition(partition)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: progress::HEADER,
                        value: Some("1"),
                    }));
                produce(producer, record)?;
            }
        }
        self.task.flush_changelog(&mut self.outputs);
        for output in self.outputs.drain(..) {
            if let Output::Changelog { key, payload } = output {
                let mut record: BaseRecord<'_, [u8], [u8]> =
                    BaseRecord::to(&topics.attributor_changelog)
                        .key(key.as_slice())
                        .partition(p);
                if let Some(payload) = &payload {
                    record = record.payload(payload.as_slice());
                }
                produce(producer, record)?;
            }
        }
        let stats = self.task.take_stats();
        for (kind, result, n) in stats.iter() {
            metrics::counter!(m::RECORDS, "type" => kind, "result" => result).increment(n);
        }
        Ok(())
    }
}

/// The transactional producer.
type Kafka = ThreadedProducer<DefaultProducerContext>;

/// Sends one output into the open transaction.
fn send(
    producer: &Kafka,
    topics: &Topics,
    credited: &mut Vec<(i64, &'static str)>,
    output: &Output,
) -> Result<(), AttributorError> {
    let record = match output {
        Output::Credit {
            key,
            payload,
            occurred_at,
            kind,
        } => {
            credited.push((occurred_at.millis(), *kind));
            record(&topics.credits, Some(key.as_bytes()), Some(payload))
        }
        Output::Index { key, payload } => {
            record(&topics.order_index, Some(key.as_bytes()), Some(payload))
        }
        Output::LedgerInput { key, kind, payload } => {
            record(&topics.credits, Some(key.as_bytes()), Some(payload)).headers(
                OwnedHeaders::new().insert(Header {
                    key: topology::INPUT_HEADER,
                    value: Some(*kind),
                }),
            )
        }
        Output::Changelog { .. } => {
            unreachable!("changelog records are sent by the commit, with their partition")
        }
        Output::DeadLetter {
            source,
            offset,
            key,
            payload,
            reason,
            detail,
        } => {
            metrics::counter!(m::DEAD_LETTERS, "reason" => *reason).increment(1);
            tracing::warn!(source = source.name(), offset, reason, detail = %detail, "record dead-lettered");
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "payoff-reason",
                    value: Some(*reason),
                })
                .insert(Header {
                    key: "payoff-detail",
                    value: Some(detail.as_str()),
                })
                .insert(Header {
                    key: "payoff-source-topic",
                    value: Some(topic_of(topics, *source)),
                })
                .insert(Header {
                    key: "payoff-source-offset",
                    value: Some(&offset.to_string()),
                })
                .insert(Header {
                    key: "payoff-service",
                    value: Some("attributor"),
                });
            record(&topics.dead_letter, key.as_deref(), payload.as_deref()).headers(headers)
        }
    };
    produce(producer, record)
}

/// A read_committed consumer of `partitions` of `topic` from their beginning, outside any
/// group's assignment, that reports the end of each partition.
fn reader(
    brokers: &str,
    client: &str,
    topic: &str,
    partitions: &[i32],
) -> Result<BaseConsumer<adapters::QuietEof>, AttributorError> {
    let mut config =
        adapters::read_committed_consumer_config(brokers, client, adapters::StartFrom::Earliest)
            .map_err(|e| AttributorError::Kafka(e.to_string()))?;
    config
        .set("enable.partition.eof", "true")
        // The end of a partition is known when a fetch comes back empty: do not let the
        // broker hold that fetch.
        .set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer<adapters::QuietEof> = config
        .create_with_context(adapters::QuietEof)
        .map_err(kafka("reader"))?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(kafka("reader assignment"))?;
    }
    consumer.assign(&tpl).map_err(kafka("reader assign"))?;
    Ok(consumer)
}

/// Restores the tasks of `partitions` from `changelog` (each read to its end,
/// read_committed, all at once); returns them with the number of records read. Public
/// for the restore benchmark.
pub fn restore(
    brokers: &str,
    changelog: &str,
    partitions: &[i32],
    settings: Settings,
) -> Result<(Vec<Task>, u64), AttributorError> {
    let started = Instant::now();
    let mut tasks: BTreeMap<i32, Task> = partitions
        .iter()
        .map(|p| (*p, Task::new(*p, settings)))
        .collect();
    if tasks.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let partitions_read: Vec<i32> = tasks.keys().copied().collect();
    let consumer = reader(
        brokers,
        "payoff-attributor-restore",
        changelog,
        &partitions_read,
    )?;
    // The end is the log end offset, not the first end of partition a read_committed
    // consumer reports: that one is the last stable offset, which stays behind a
    // committed transaction until the coordinator has written its markers (commit returns
    // before that) or behind a crashed owner's open one until it times out. Stopping
    // there would restore the state without the previous owner's last transaction while
    // the committed input offsets are past it.
    let mut ends = BTreeMap::new();
    for p in &partitions_read {
        let (_, high) = consumer
            .fetch_watermarks(changelog, *p, Duration::from_secs(30))
            .map_err(kafka("changelog end"))?;
        ends.insert(*p, high);
    }
    let reached = |consumer: &BaseConsumer<adapters::QuietEof>, p: i32| -> bool {
        let end = ends.get(&p).copied().unwrap_or_default();
        end == 0
            || consumer.position().is_ok_and(|tpl| {
                tpl.find_partition(changelog, p)
                    .is_some_and(|e| matches!(e.offset(), Offset::Offset(at) if at >= end))
            })
    };
    let mut records = 0u64;
    let mut ended = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while ended.len() < tasks.len() {
        if Instant::now() > deadline {
            return Err(AttributorError::Kafka(format!(
                "restoring partitions {partitions:?} did not reach the end of the changelog in 10 minutes"
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                records += 1;
                let p = msg.partition();
                ended.remove(&p);
                let Some(task) = tasks.get_mut(&p) else {
                    continue;
                };
                if let Err(e) = task.restore(msg.key(), msg.payload()) {
                    return Err(AttributorError::Kafka(format!(
                        "changelog partition {p} offset {}: {e}",
                        msg.offset()
                    )));
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if reached(&consumer, p) {
                    ended.insert(p);
                }
            }
            Some(Err(e)) => return Err(AttributorError::Kafka(format!("restore: {e}"))),
            None => {
                // Markers written without a new record to deliver move the position too.
                for p in &partitions_read {
                    if !ended.contains(p) && reached(&consumer, *p) {
                        ended.insert(*p);
                    }
                }
            }
        }
    }
    let took = started.elapsed();
    let tasks: Vec<Task> = tasks.into_values().collect();
    metrics::histogram!(m::RESTORE_DURATION).record(took.as_secs_f64());
    metrics::counter!(m::RESTORED).increment(records);
    tracing::info!(
        partitions = ?partitions,
        records,
        took_ms = took.as_millis() as u64,
        visitors = tasks.iter().map(Task::visitors).sum::<usize>(),
        "state restored"
    );
    Ok((tasks, records))
}

/// A record with an optional key and value.
fn record<'a>(
    topic: &'a str,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
) -> BaseRecord<'a, [u8], [u8]> {
    let mut record = BaseRecord::to(topic);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(payload) = payload {
        record = record.payload(payload);
    }
    record
}

fn produce(
    producer: &ThreadedProducer<DefaultProducerContext>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> Result<(), AttributorError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((
                KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                r,
            )) => {
                record = r;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(AttributorError::Kafka(format!("produce: {e}"))),
        }
    }
}

fn wall_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Reads the `programs` topic to its end, then keeps following it.
struct ProgramFeed {
    consumer: BaseConsumer<adapters::QuietEof>,
}

impl ProgramFeed {
    fn new(brokers: &str, topic: &str) -> Result<Self, AttributorError> {
        let consumer = reader(brokers, "payoff-attributor-programs", topic, &[0])?;
        Ok(Self { consumer })
    }

    /// Applies what is available; with `to_end`, waits until the end of the topic.
    fn poll(
        &self,
        programs: &mut Programs,
        to_end: bool,
        shutdown: &CancellationToken,
    ) -> Result<usize, AttributorError> {
        let mut n = 0;
        loop {
            if shutdown.is_cancelled() {
                return Ok(n);
            }
            let wait = if to_end {
                Duration::from_millis(200)
            } else {
                Duration::ZERO
            };
            match self.consumer.poll(wait) {
                Some(Ok(msg)) => {
                    n += 1;
                    match program_of(&msg) {
                        Ok((tenant, program)) => {
                            tracing::info!(tenant = %tenant, version = program.version, "program version loaded");
                            programs.insert(tenant, program);
                        }
                        Err(e) => {
                            tracing::error!(offset = msg.offset(), error = %e, "program version unusable; skipped")
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(n),
                Some(Err(e)) => return Err(AttributorError::Kafka(format!("programs: {e}"))),
                None if !to_end => return Ok(n),
                None => {}
            }
        }
    }
}

fn program_of(
    msg: &BorrowedMessage<'_>,
) -> Result<(TenantId, payoff_core::program::Program), String> {
    let payload = msg.payload().ok_or("no value")?;
    let proto = v1::Program::decode(payload).map_err(|e| e.to_string())?;
    let from_key = msg
        .key()
        .and_then(|k| std::str::from_utf8(k).ok())
        .and_then(|k| k.split(topology::KEY_SEPARATOR).next())
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let tenant = from_key.unwrap_or_else(|| proto.tenant_id.clone());
    let tenant = TenantId::parse("tenant", &tenant).map_err(|v| format!("{v:?}"))?;
    let program = convert::program(&proto).map_err(|e| e.to_string())?;
    Ok((tenant, program))
}

/// Marks the inputs of partition `p` whose position is at the end of the partition.
fn mark_ends(
    consumer: &BaseConsumer<Context>,
    names: &BTreeMap<String, Source>,
    p: i32,
    w: &mut Worker,
) {
    let Some(task) = w.tasks.get(&p).map(|lane| &lane.task) else {
        return;
    };
    // Where this task's reading of each input stands: after the last record it was
    // offered since its restore, else the committed offset it resumes from. The
    // consumer's own position is not used: right after a reassignment it can still say
    // where the previous assignment had fetched to (ahead of the committed offset), which
    // would declare an input at its end before its records are read again, and the merge
    // would then decide orders before the clicks they need.
    let mut unread = TopicPartitionList::new();
    for (topic, source) in names {
        if *source != Source::Index && task.next_offset(*source).is_none() {
            let _ = unread.add_partition(topic, p);
        }
    }
    let committed = if unread.count() > 0 {
        match consumer.committed_offsets(unread, Duration::from_secs(5)) {
            Ok(tpl) => Some(tpl),
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "committed offsets unknown; inputs not checked for their end");
                return;
            }
        }
    } else {
        None
    };
    let mut ends = Vec::new();
    for (topic, source) in names {
        if *source == Source::Index {
            continue;
        }
        let Ok((low, high)) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) else {
            continue;
        };
        let next = task.next_offset(*source).or_else(|| {
            committed.as_ref().and_then(|tpl| {
                tpl.find_partition(topic, p)
                    .and_then(|e| e.offset().to_raw())
                    .filter(|o| *o >= 0)
            })
        });
        // Nothing committed yet: an input is at its end only when it is empty.
        let at_end = next.map_or(low >= high, |n| n >= high);
        if at_end {
            ends.push(*source);
        }
    }
    if let Some(task) = w.tasks.get_mut(&p).map(|lane| &mut lane.task) {
        for source in ends {
            task.set_at_end(source, true);
        }
    }
}

/// Moves what each assigned input partition's queue holds (at most [`PER_QUEUE`] records
/// each) to its task's pending list; returns how many records.
fn drain(
    queues: &[(Source, i32, PartitionQueue<Context>)],
    w: &mut Worker,
) -> Result<usize, AttributorError> {
    let mut got = 0;
    for (source, partition, queue) in queues {
        // An input its task holds enough of stays in librdkafka's queue (compact, and
        // fetching pauses when it is full) until the merge has used some: the merge
        // waits only for inputs that hold nothing, and those always have room.
        let room = w.tasks.get(partition).map_or(PER_QUEUE, |lane| {
            lane.task
                .room_for(*source)
                .saturating_sub(lane.pending_of[source.index()])
        });
        for _ in 0..PER_QUEUE.min(room) {
            match queue.poll(Duration::ZERO) {
                Some(Ok(msg)) => {
                    got += 1;
                    w.offer(*source, &msg)?;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    w.at_end(*partition, *source);
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "partition queue error");
                    break;
                }
                None => break,
            }
        }
    }
    Ok(got)
}

/// How long a task's merge may wait before the wait is logged (once per this period).
const STUCK_WARN: Duration = Duration::from_secs(10);

/// Logs a task whose merge has waited long for inputs that are empty and not known to
/// be at their end, with each input's position and end (the diagnosis of a stall).
fn warn_if_stuck(
    consumer: &BaseConsumer<Context>,
    names: &BTreeMap<String, Source>,
    p: i32,
    w: &mut Worker,
    warned: &mut BTreeMap<i32, Instant>,
) {
    let Some(since) = w.tasks.get(&p).and_then(|lane| lane.blocked) else {
        return;
    };
    if since.elapsed() < STUCK_WARN || warned.get(&p).is_some_and(|t| t.elapsed() < STUCK_WARN) {
        return;
    }
    warned.insert(p, Instant::now());
    let Some(task) = w.tasks.get(&p).map(|lane| &lane.task) else {
        return;
    };
    let positions = consumer.position().ok();
    let mut inputs = Vec::new();
    for (topic, source) in names {
        if *source == Source::Index || !task.waiting_for(*source) {
            continue;
        }
        let position = positions.as_ref().and_then(|tpl| {
            tpl.elements()
                .iter()
                .find(|e| e.topic() == topic && e.partition() == p)
                .map(|e| format!("{:?}", e.offset()))
        });
        let end = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .map(|(_, high)| high)
            .ok();
        inputs.push(format!(
            "{}: position {position:?}, end {end:?}",
            source.name()
        ));
    }
    tracing::warn!(
        partition = p,
        blocked_secs = since.elapsed().as_secs(),
        queued = task.queued(),
        waiting_for = %inputs.join("; "),
        "task merge blocked on empty inputs not known to be at their end"
    );
}

/// Runs the loop until `shutdown`, then commits, leaves the group and returns.
pub fn run_blocking(
    config: &Config,
    shutdown: &CancellationToken,
    ready: Ready,
) -> Result<(), AttributorError> {
    let topics = Topics::with_prefix(&config.topic_prefix);
    let mut names = BTreeMap::new();
    for (source, name) in [
        (Source::Clicks, &topics.clicks),
        (Source::Signups, &topics.signups),
        (Source::Orders, &topics.orders),
        (Source::Adjustments, &topics.adjustments),
        (Source::LeadStatus, &topics.lead_status),
        (Source::Engagement, &topics.engagement),
        (Source::Index, &topics.order_index),
    ] {
        names.insert(name.clone(), source);
    }

    let mut producer_config = adapters::transactional_producer_config(
        &config.kafka_brokers,
        &format!("payoff-attributor-{}", config.instance_id),
        config.transaction_timeout,
    )
    .map_err(|e| AttributorError::Kafka(e.to_string()))?;
    producer_config
        .set("partitioner", topology::PARTITIONER)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("compression.type", "lz4")
        // A transaction begun right after a commit may be answered "concurrent
        // transactions" while the markers are written; retry in milliseconds, not 100.
        .set("retry.backoff.ms", "5")
        // A failed delivery fails the commit anyway; reports of successful ones would
        // only cost the polling thread an event per record.
        .set("delivery.report.only.error", "true")
        .set("retry.backoff.max.ms", "100");
    let producer: ThreadedProducer<DefaultProducerContext> =
        producer_config.create().map_err(kafka("producer"))?;
    producer
        .init_transactions(config.transaction_timeout)
        .map_err(kafka("init transactions"))?;

    let counts = adapters::partition_counts(
        &config.kafka_brokers,
        &[&topics.clicks, &topics.credits],
        Duration::from_secs(30),
    )
    .map_err(|e| AttributorError::Kafka(e.to_string()))?;
    let count = |i: usize| {
        counts[i].1.ok_or_else(|| {
            AttributorError::Kafka(format!(
                "topic {} does not exist (run payoff migrate)",
                counts[i].0
            ))
        })
    };
    let (sources, credit_partitions) = (count(0)?, count(1)?);

    let feed = ProgramFeed::new(&config.kafka_brokers, &topics.programs)?;
    let mut programs = Programs::default();
    let loaded = feed.poll(&mut programs, true, shutdown)?;
    tracing::info!(
        versions = loaded,
        tenants = programs.tenants(),
        "programs loaded"
    );

    let millis =
        |d: Duration| payoff_core::time::Duration(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let settings = Settings {
        correction_wait: millis(config.correction_wait),
        correction_wall_wait: millis(config.correction_wall_wait),
        quiet_release: millis(config.quiet_release),
        max_queued: config.max_held_events,
    };
    let threads = if config.threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        config.threads
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("payoff-task-{i}"))
        .build()
        .map_err(|e| AttributorError::Thread(format!("task threads: {e}")))?;
    let worker = Arc::new(Mutex::new(Worker {
        producer,
        topics: topics.clone(),
        brokers: config.kafka_brokers.clone(),
        settings,
        tasks: BTreeMap::new(),
        programs,
        in_txn: false,
        records: 0,
        opened: Instant::now(),
        timeout: config.transaction_timeout,
        reassigned: false,
        failed: None,
        ready,
        sources: u32::try_from(sources).unwrap_or_default(),
        credit_partitions,
        pool,
    }));

    let mut consumer_config: ClientConfig = adapters::read_committed_consumer_config(
        &config.kafka_brokers,
        &config.group_id,
        adapters::StartFrom::Earliest,
    )
    .map_err(|e| AttributorError::Kafka(e.to_string()))?;
    consumer_config
        .set("enable.partition.eof", "true")
        .set("partition.assignment.strategy", "range")
        // The merge waits for an empty input until its end is known, which takes an
        // empty fetch: keep the broker from holding those long.
        .set("fetch.wait.max.ms", "50")
        .set("statistics.interval.ms", "5000")
        .set(
            "session.timeout.ms",
            config.session_timeout.as_millis().to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            (config.session_timeout.as_millis() / 5)
                .clamp(100, 3_000)
                .to_string(),
        )
        .set(
            "client.id",
            format!("payoff-attributor-{}", config.instance_id),
        );
    // librdkafka's own debug contexts (e.g. "consumer,fetch,cgrp"), for diagnosing.
    if let Ok(contexts) = std::env::var("PAYOFF_KAFKA_DEBUG")
        && !contexts.is_empty()
    {
        consumer_config.set("debug", contexts);
    }
    let consumer: Arc<BaseConsumer<Context>> = Arc::new(
        consumer_config
            .create_with_context(Context {
                progress: Mutex::default(),
                worker: worker.clone(),
            })
            .map_err(kafka("consumer"))?,
    );
    let inputs: Vec<&str> = names.keys().map(String::as_str).collect();
    consumer.subscribe(&inputs).map_err(kafka("subscribe"))?;
    tracing::info!(group = %config.group_id, instance = %config.instance_id, "attributor consuming");

    let mut queues: Vec<(Source, i32, PartitionQueue<Context>)> = Vec::new();
    let mut idle = false;
    // None: measure at once, so the gauges exist from the start.
    let mut state_measured: Option<Instant> = None;
    let mut loop_stats = (0usize, 0usize, 0usize);
    let mut warned: BTreeMap<i32, Instant> = BTreeMap::new();
    let mut end_checked = Instant::now();
    let mut loop_stats_at = Instant::now();
    let result = loop {
        if shutdown.is_cancelled() {
            break Ok(());
        }
        // 1. The main queue: rebalances (their callbacks lock the worker), errors, and
        //    records of partitions whose queue is not split yet.
        let wait = if idle {
            Duration::from_millis(20)
        } else {
            Duration::ZERO
        };
        if let Some(polled) = consumer.poll(wait) {
            match polled {
                Ok(msg) => {
                    let source = names.get(msg.topic()).copied();
                    let mut w = lock(&worker);
                    if let Some(source) = source
                        && let Err(e) = w.offer(source, &msg)
                    {
                        break Err(e);
                    }
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    // An end reported before the queues were split: find out which inputs
                    // of partition p are at their end, so the merge does not wait for them.
                    let mut w = lock(&worker);
                    mark_ends(&consumer, &names, p, &mut w);
                }
                Err(e) => tracing::warn!(error = %e, "consumer error"),
            }
        }
        let mut w = lock(&worker);
        if let Some(e) = w.failed.take() {
            break Err(e);
        }
        if w.reassigned {
            w.reassigned = false;
            queues.clear();
            let assignment = consumer.assignment().map_err(kafka("assignment"));
            let assignment = match assignment {
                Ok(a) => a,
                Err(e) => break Err(e),
            };
            for e in assignment.elements() {
                if let (Some(source), Some(queue)) = (
                    names.get(e.topic()).copied(),
                    consumer.split_partition_queue(e.topic(), e.partition()),
                ) {
                    queues.push((source, e.partition(), queue));
                }
            }
            if let Err(e) = consumer.resume(&assignment) {
                break Err(AttributorError::Kafka(format!("resume: {e}")));
            }
        }
        // Program versions published since.
        {
            let Worker { programs, .. } = &mut *w;
            if let Err(e) = feed.poll(programs, false, shutdown) {
                break Err(e);
            }
        }
        // 2. Each partition's own queue.
        let got = match drain(&queues, &mut w) {
            Ok(got) => got,
            Err(e) => break Err(e),
        };
        // 3. Merge and process.
        if let Err(e) = w.pump(config.max_idle) {
            break Err(e);
        }
        // A task that could merge nothing for a while: ask which inputs are at their
        // end (a partition's end is not always reported again after a reassignment).
        if end_checked.elapsed() >= END_CHECK_EVERY {
            end_checked = Instant::now();
            let stuck: Vec<i32> = w
                .tasks
                .iter()
                .filter(|(_, lane)| {
                    lane.blocked
                        .is_some_and(|since| since.elapsed() >= END_CHECK_EVERY)
                })
                .map(|(p, _)| *p)
                .collect();
            for p in stuck {
                mark_ends(&consumer, &names, p, &mut w);
                warn_if_stuck(&consumer, &names, p, &mut w, &mut warned);
            }
        }
        // 4. Commit when due.
        let due = w.in_txn
            && (w.records >= config.batch_records || w.opened.elapsed() >= config.batch_interval);
        if due {
            // What the queues delivered since is decided while the transaction commits.
            let drained = match drain(&queues, &mut w) {
                Ok(drained) => drained,
                Err(e) => break Err(e),
            };
            if let Err(e) = w.commit_with(&consumer, Some((config.max_idle, drained))) {
                break Err(e);
            }
        }
        if state_measured.is_none_or(|at| at.elapsed() >= STATE_EVERY) {
            state_measured = Some(Instant::now());
            let visitors: usize = w.tasks.values().map(|l| l.task.visitors()).sum();
            let bytes: usize = w.tasks.values().map(|l| l.task.state_bytes()).sum();
            metrics::gauge!(m::STATE_VISITORS).set(visitors as f64);
            metrics::gauge!(m::STATE_BYTES).set(bytes as f64);
        }
        idle = got == 0;
        loop_stats.0 += 1;
        loop_stats.1 += got;
        if idle {
            loop_stats.2 += 1;
        }
        if loop_stats_at.elapsed() >= Duration::from_secs(1) {
            let blocked: usize = w.tasks.values().map(|l| l.task.queued()).sum();
            tracing::trace!(
                iterations = loop_stats.0,
                records = loop_stats.1,
                idle = loop_stats.2,
                queued = blocked,
                "loop"
            );
            loop_stats = (0, 0, 0);
            loop_stats_at = Instant::now();
        }
    };
    // Shutdown: finish the open transaction, then leave the group (the revocation
    // callback commits nothing more) and flush.
    let finished = {
        let mut w = lock(&worker);
        let _ = w.ready.send(false);
        if result.is_ok() {
            w.commit(&consumer)
        } else {
            w.abort()
        }
    };
    drop(queues);
    consumer.unsubscribe();
    // Serve the revocation the unsubscribe triggers.
    let _ = consumer.poll(Duration::from_millis(100));
    tracing::info!("attributor stopped");
    result.and(finished)
}
