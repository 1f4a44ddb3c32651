//! One task: everything the attributor does for one partition number, with no IO.
//!
//! Partition *p* of clicks, signups and orders (one visitor's events), of adjustments and
//! lead status (one order's or lead's corrections) and of the order index meet in task *p*
//! (co-partitioned topics). The task
//! - merges its event inputs by event time (the smallest head first, waiting for an input
//!   that is empty but not at its end), so no input runs ahead of the others;
//! - feeds each tenant's events through the core's reorder buffer and `decide`/`apply`,
//!   exactly as `Engine` does;
//! - sends each attributed conversion to the order index (keyed like its corrections, so
//!   it reaches the task that will see them) and holds a correction whose conversion is
//!   not indexed yet, until it is or until event time passes the wait;
//! - collects the changelog entries its facts changed, and knows, per input, the offset
//!   from which a restarted task must read again: the earliest event it still holds.
//!
//! Everything a task emits is an [`Output`]; the caller writes outputs, changelog and
//! offsets in one Kafka transaction.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::Arc,
};

use payoff_adapters::topology;
// The task's maps use the core's hasher (`FastMap`, `FastSet`): nothing observable
// iterates them in hash order except the changelog flush, whose order does not matter.
use payoff_core::{
    FastMap, FastSet,
    attribution::{
        self, AttributionState, ConversionKey, ConversionRecord, EXPIRY_EVERY, Fact, Skip,
        StateEntry, StateKey, reorder::ReorderBuffer,
    },
    event::{Event, Payload},
    ids::TenantId,
    program::{Program, ProgramHistory},
    time::{Duration, Timestamp},
};

use crate::codec::{self, ChangelogValue, ChangelogValueRef, DecodeError, Entry, IndexRecord};

/// The shares [`Settings::max_queued`] is split into by [`Task::room_for`]: one per event
/// input, and one never taken.
pub const HELD_SHARES: usize = Source::EVENTS.len() + 1;

/// The inputs of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Clicks, keyed by tenant + visitor.
    Clicks,
    /// Signups, keyed by tenant + visitor.
    Signups,
    /// Orders, keyed by tenant + visitor.
    Orders,
    /// Adjustments, keyed by tenant + order.
    Adjustments,
    /// Lead status, keyed by tenant + lead.
    LeadStatus,
    /// Engagement snapshots, keyed by tenant + campaign + creator: deduplicated and passed
    /// on to the ledger in event-time order with the credits (the progress markers cover
    /// them too).
    Engagement,
    /// The order index, keyed by tenant + order or lead.
    Index,
}

impl Source {
    /// The event inputs, merged by event time.
    pub const EVENTS: [Self; 6] = [
        Self::Clicks,
        Self::Signups,
        Self::Orders,
        Self::Adjustments,
        Self::LeadStatus,
        Self::Engagement,
    ];
    /// Every input.
    pub const ALL: [Self; 7] = [
        Self::Clicks,
        Self::Signups,
        Self::Orders,
        Self::Adjustments,
        Self::LeadStatus,
        Self::Engagement,
        Self::Index,
    ];

    /// The event input that `topic` is in `topics`, if any.
    pub fn of_topic(topics: &topology::Topics, topic: &str) -> Option<Self> {
        [
            (&topics.clicks, Self::Clicks),
            (&topics.signups, Self::Signups),
            (&topics.orders, Self::Orders),
            (&topics.adjustments, Self::Adjustments),
            (&topics.lead_status, Self::LeadStatus),
            (&topics.engagement, Self::Engagement),
        ]
        .into_iter()
        .find(|(t, _)| t.as_str() == topic)
        .map(|(_, source)| source)
    }

    /// Position in [`Source::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// A bounded label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Clicks => "clicks",
            Self::Signups => "signups",
            Self::Orders => "orders",
            Self::Adjustments => "adjustments",
            Self::LeadStatus => "lead_status",
            Self::Engagement => "engagement",
            Self::Index => "order_index",
        }
    }
}

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its input.
    pub source: Source,
    /// Its offset in the input partition.
    pub offset: i64,
    /// The record's timestamp (ms since the epoch), when it has one.
    pub timestamp: Option<i64>,
    /// Key bytes.
    pub key: Option<Vec<u8>>,
    /// Value bytes.
    pub payload: Option<Vec<u8>>,
}

impl Record {
    /// The record, borrowed (what [`Task::offer`] takes).
    pub fn borrowed(&self) -> RecordRef<'_> {
        RecordRef {
            source: self.source,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.as_deref(),
            payload: self.payload.as_deref(),
        }
    }
}

/// One consumed record, its bytes borrowed from wherever its caller keeps them (the
/// pipeline copies a turn's records into one buffer per task rather than two
/// allocations each). A task copies them only for what it keeps: a correction's raw
/// record, or a dead letter.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// Its input.
    pub source: Source,
    /// Its offset in the input partition.
    pub offset: i64,
    /// The record's timestamp (ms since the epoch), when it has one.
    pub timestamp: Option<i64>,
    /// Key bytes.
    pub key: Option<&'a [u8]>,
    /// Value bytes.
    pub payload: Option<&'a [u8]>,
}

/// What a task asks its caller to write, in the transaction of the records it consumed.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A credit for the `credits` topic.
    Credit {
        /// Tenant + campaign + creator.
        key: String,
        /// `payoff.v1.Credit`.
        payload: Vec<u8>,
        /// Event time of the credit (for the attribution-latency histogram).
        occurred_at: Timestamp,
        /// Credit kind (a bounded label).
        kind: &'static str,
    },
    /// A conversion for the order-index topic.
    Index {
        /// Tenant + order or lead (the key of its corrections).
        key: String,
        /// The encoded [`IndexRecord`].
        payload: Vec<u8>,
    },
    /// A changelog record for this task's partition (`None`: a tombstone).
    Changelog {
        /// The encoded [`ChangelogKey`](codec::ChangelogKey).
        key: Vec<u8>,
        /// The encoded [`ChangelogValue`].
        payload: Option<Vec<u8>>,
    },
    /// A ledger input that is not a credit, for the `credits` topic (with the
    /// `payoff-input` header).
    LedgerInput {
        /// Tenant + campaign + creator.
        key: String,
        /// The header's value (the kind).
        kind: &'static str,
        /// The record's value.
        payload: Vec<u8>,
    },
    /// A record that cannot be used, for the dead-letter topic.
    DeadLetter {
        /// Its input.
        source: Source,
        /// Its offset.
        offset: i64,
        /// Its key.
        key: Option<Vec<u8>>,
        /// Its value.
        payload: Option<Vec<u8>>,
        /// A bounded reason.
        reason: &'static str,
        /// The details.
        detail: String,
    },
}

/// Every tenant's program history, from the `programs` topic.
#[derive(Debug, Clone, Default)]
pub struct Programs {
    tenants: HashMap<TenantId, Arc<ProgramHistory>>,
}

impl Programs {
    /// Adds a version of a tenant's program.
    pub fn insert(&mut self, tenant: TenantId, program: Program) {
        let history = self.tenants.entry(tenant).or_default();
        Arc::make_mut(history).insert(program);
    }

    /// A tenant's history, if it has one.
    pub fn get(&self, tenant: &TenantId) -> Option<&ProgramHistory> {
        self.tenants.get(tenant).map(|h| &**h)
    }

    /// Number of tenants with a program.
    pub fn tenants(&self) -> usize {
        self.tenants.len()
    }
}

/// Tunables of a task.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long (in event time) a correction waits for its conversion to be indexed.
    pub correction_wait: Duration,
    /// How long (in wall-clock time, given with [`Task::set_clock`]) it waits at least:
    /// event time alone would let a correction give up while the task that attributes
    /// its conversion is merely behind (a backlog read after downtime).
    pub correction_wall_wait: Duration,
    /// Queued events beyond which the merge stops waiting for empty inputs. The
    /// pipeline gives each input at most a share of it ([`Task::room_for`]), so read-ahead
    /// alone never gets there.
    pub max_queued: usize,
    /// How long (wall clock after the newest record's timestamp) every input must have
    /// been quiet, at least, before the reorder buffer releases its tail; never less than
    /// the tenant's grace period.
    pub quiet_release: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            correction_wait: Duration::hours(24),
            correction_wall_wait: Duration(0),
            max_queued: 200_000,
            quiet_release: Duration(0),
        }
    }
}

/// The results an event can have, for metrics.
pub const RESULTS: [&str; 9] = [
    "credited",
    "unattributed",
    "duplicate",
    "skipped",
    "flagged",
    "waiting",
    "dead_lettered",
    "indexed",
    "passed_on",
];

/// Event types, for metrics (the order index is counted as its own type).
pub const TYPES: [&str; 7] = [
    "click",
    "signup",
    "order",
    "adjustment",
    "lead_status",
    "engagement",
    "order_index",
];

/// Counts by type and result since the last [`Task::take_stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// `counts[type][result]`, indexed as [`TYPES`] and [`RESULTS`].
    pub counts: [[u64; RESULTS.len()]; TYPES.len()],
}

impl Stats {
    fn add(&mut self, kind: usize, result: usize) {
        self.counts[kind][result] += 1;
    }

    /// Non-zero counts with their labels.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &'static str, u64)> + '_ {
        self.counts.iter().enumerate().flat_map(|(t, row)| {
            row.iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(move |(r, n)| (TYPES[t], RESULTS[r], *n))
        })
    }
}

fn type_index(payload: &Payload) -> usize {
    match payload {
        Payload::Click(_) => 0,
        Payload::Signup(_) => 1,
        Payload::Order(_) => 2,
        Payload::Adjustment(_) => 3,
        Payload::LeadStatus(_) => 4,
        Payload::Engagement(_) => 5,
    }
}

const CREDITED: usize = 0;
const UNATTRIBUTED: usize = 1;
const DUPLICATE: usize = 2;
const SKIPPED: usize = 3;
const FLAGGED: usize = 4;
const WAITING: usize = 5;
const DEAD_LETTERED: usize = 6;
const INDEXED: usize = 7;
/// An engagement snapshot passed on to the ledger.
const PASSED: usize = 8;
const INDEX_TYPE: usize = 6;

/// The raw bytes of a correction (kept for the dead-letter topic) or of an engagement
/// snapshot (passed on to the ledger as it came).
#[derive(Debug, Clone)]
struct Raw {
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

/// Where an event held by the task came from.
#[derive(Debug, Clone)]
struct Held {
    source: Source,
    offset: i64,
    raw: Option<Raw>,
}

/// A decoded event waiting in an input queue.
#[derive(Debug)]
struct Queued {
    tenant: TenantId,
    event: Event,
    held: Held,
}

/// A correction waiting for its conversion.
#[derive(Debug)]
struct Waiting {
    seq: u64,
    /// Wall-clock time it began to wait.
    since: Timestamp,
    event: Event,
    held: Held,
}

/// What a task keeps for one tenant.
#[derive(Debug, Default)]
struct TenantState {
    /// Held events, each with where it came from.
    buffer: Option<ReorderBuffer<Held>>,
    attribution: AttributionState,
    index: FastMap<ConversionKey, ConversionRecord>,
    waiting: FastMap<ConversionKey, VecDeque<Waiting>>,
    /// Waiting corrections by event time, for the wait limit.
    waiting_by_time: BTreeSet<(Timestamp, u64, ConversionKey)>,
    next_expiry: Option<Timestamp>,
    /// The progress last reported ([`Task::progress`]).
    reported: Option<Timestamp>,
    /// The buffer's newest event time as last written to (or restored from) the changelog.
    persisted_newest: Option<Timestamp>,
    /// Event ids first seen since the last changelog flush (digest, event time): the next
    /// flush writes them as one batch record.
    pending_seen: Vec<(u128, Timestamp)>,
    /// The batch records in the changelog, by (newest event time, id): a sweep past the
    /// newest removes the record.
    seen_batches: BTreeSet<(Timestamp, u128)>,
    /// Seen ids restored from single records (written before batches): each gets its
    /// tombstone when it expires.
    single_seen: FastSet<u128>,
    /// Where the last expiry sweep cut, and where the changelog last heard of it.
    horizon: Option<Timestamp>,
    horizon_written: Option<Timestamp>,
    /// Entries changed since the last changelog flush.
    dirty: FastSet<Entry>,
    /// The encoded conversion record of index entries added since the last flush and not
    /// changed since ([`codec::conversion_bytes`]): the flush writes them as they are.
    index_bytes: FastMap<ConversionKey, Vec<u8>>,
}

/// What the task's parts share while one tenant's state is borrowed.
#[derive(Debug, Default)]
struct Book {
    /// Offsets of events still held, per input.
    held: [HeldOffsets; 7],
    /// Next offset to read, per input (last consumed + 1).
    next: [Option<i64>; 7],
    /// Events the reorder buffer released (a buffer reused for every push).
    released: Vec<(Event, Held)>,
    stats: Stats,
    seq: u64,
    facts: Vec<Fact>,
    /// Encodes credits (reusing an explanation's bytes across its conversion's credits).
    credits: payoff_proto::convert::CreditEncoder,
    /// Wall-clock time, as data (for the wall-clock part of the correction wait).
    now: Timestamp,
}

/// The offsets of one input's events still held (in the reorder buffer or waiting): taken
/// in offset order, let go in any order; the first is where a restarted task reads again.
#[derive(Debug, Default)]
struct HeldOffsets {
    /// In offset order, each with whether it was let go; the first was not.
    offsets: VecDeque<(i64, bool)>,
}

impl HeldOffsets {
    fn insert(&mut self, offset: i64) {
        match self.offsets.back() {
            // An offset at or before the last (read again): put in its place.
            Some(&(last, _)) if last >= offset => {
                match self.offsets.binary_search_by_key(&offset, |(o, _)| *o) {
                    Ok(at) => self.offsets[at].1 = false,
                    Err(at) => self.offsets.insert(at, (offset, false)),
                }
            }
            // Records come in offset order: appended.
            _ => self.offsets.push_back((offset, false)),
        }
    }

    fn remove(&mut self, offset: i64) {
        if let Ok(at) = self.offsets.binary_search_by_key(&offset, |(o, _)| *o) {
            self.offsets[at].1 = true;
        }
        while self.offsets.front().is_some_and(|(_, gone)| *gone) {
            self.offsets.pop_front();
        }
    }

    fn first(&self) -> Option<i64> {
        self.offsets.front().map(|(o, _)| *o)
    }
}

/// How often a quiet task's event time follows the wall clock.
const QUIET_EVERY: Duration = Duration::seconds(1);

/// One partition number's attribution.
#[derive(Debug)]
pub struct Task {
    partition: i32,
    settings: Settings,
    queues: [VecDeque<Queued>; 6],
    at_end: [bool; 6],
    /// The newest timestamp of an input record (ingest's clock when it wrote it).
    newest_record: Option<Timestamp>,
    /// When event time last followed the wall clock ([`Task::advance_quiet`]).
    quiet_advanced: Option<Timestamp>,
    tenants: FastMap<TenantId, TenantState>,
    book: Book,
}

impl Task {
    /// An empty task for a partition number.
    pub fn new(partition: i32, settings: Settings) -> Self {
        Self {
            partition,
            settings,
            queues: Default::default(),
            at_end: [false; 6],
            newest_record: None,
            quiet_advanced: None,
            tenants: FastMap::default(),
            book: Book::default(),
        }
    }

    /// The partition number.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The offset after the last record of `source` this task was offered (None before
    /// the first since its restore).
    pub fn next_offset(&self, source: Source) -> Option<i64> {
        self.book.next[source.index()]
    }

    /// Marks whether an input has been read to its end (an empty input at its end does
    /// not hold the merge back).
    pub fn set_at_end(&mut self, source: Source, at_end: bool) {
        if let Some(flag) = self.at_end.get_mut(source.index()) {
            *flag = at_end;
        }
    }

    /// Takes one consumed record. Events are queued for [`Task::pump`]; order-index
    /// records are applied at once; records that cannot be used go to the dead letters.
    pub fn offer(&mut self, programs: &Programs, record: RecordRef<'_>, out: &mut Vec<Output>) {
        let i = record.source.index();
        self.book.next[i] = Some(record.offset + 1);
        if record.source == Source::Index {
            self.offer_index(programs, record, out);
            return;
        }
        self.at_end[i] = false;
        if let Some(ts) = record.timestamp
            && self.newest_record.is_none_or(|n| ts > n.millis())
        {
            self.newest_record = Some(Timestamp(ts));
        }
        let now = Timestamp(record.timestamp.unwrap_or(i64::MAX));
        match codec::event(record.payload, now) {
            Ok((tenant, event)) => {
                let raw = matches!(
                    record.source,
                    Source::Adjustments | Source::LeadStatus | Source::Engagement
                )
                .then(|| Raw {
                    key: record.key.map(<[u8]>::to_vec),
                    payload: record.payload.map(<[u8]>::to_vec),
                });
                self.book.held[i].insert(record.offset);
                self.queues[i].push_back(Queued {
                    tenant,
                    event,
                    held: Held {
                        source: record.source,
                        offset: record.offset,
                        raw,
                    },
                });
            }
            Err(e) => dead_letter(&mut self.book, record, &e, out),
        }
    }

    /// Sets the wall-clock time (time as data) and lets corrections that have waited
    /// long enough in both event time and wall-clock time go to the dead letters.
    pub fn set_clock(&mut self, now: Timestamp, out: &mut Vec<Output>) {
        self.book.now = now;
        let settings = self.settings;
        for state in self.tenants.values_mut() {
            if !state.waiting_by_time.is_empty() {
                time_out_waiting(state, settings, &mut self.book, out);
            }
        }
    }

    /// Processes queued events in event-time order for as long as no input that may
    /// still deliver an earlier event is empty (`force`: regardless). Returns how many
    /// it merged.
    pub fn pump(&mut self, programs: &Programs, force: bool, out: &mut Vec<Output>) -> usize {
        let mut merged = 0;
        loop {
            let queued: usize = self.queues.iter().map(VecDeque::len).sum();
            let mut best: Option<(usize, Timestamp)> = None;
            for (i, queue) in self.queues.iter().enumerate() {
                match queue.front() {
                    Some(q) if best.is_none_or(|(_, at)| q.event.occurred_at < at) => {
                        best = Some((i, q.event.occurred_at));
                    }
                    Some(_) => {}
                    None if !force && !self.at_end[i] && queued < self.settings.max_queued => {
                        return merged;
                    }
                    None => {}
                }
            }
            let Some((i, _)) = best else { return merged };
            let Some(q) = self.queues[i].pop_front() else {
                return merged;
            };
            self.push(programs, q, out);
            merged += 1;
        }
    }

    /// True when an input's queue is empty and not known to be at its end (the merge
    /// waits for it).
    pub fn waiting_for(&self, source: Source) -> bool {
        let i = source.index();
        i < self.queues.len() && self.queues[i].is_empty() && !self.at_end[i]
    }

    /// Tenants whose progress moved since the last call, each with the event time before
    /// which this task will emit no more of their credits (for the ledger's event-time
    /// order, see `payoff_adapters::progress`): the reorder buffer's watermark, or the
    /// oldest correction still waiting for its conversion if that is earlier. Events
    /// later than the grace period are the exception the marker allows.
    pub fn progress(&mut self, out: &mut Vec<(TenantId, Timestamp)>) {
        for (tenant, state) in &mut self.tenants {
            let Some(mut before) = state.buffer.as_ref().and_then(ReorderBuffer::watermark) else {
                continue;
            };
            if let Some((waiting, ..)) = state.waiting_by_time.first() {
                before = before.min(*waiting);
            }
            if state.reported.is_none_or(|r| before > r) {
                state.reported = Some(before);
                out.push((tenant.clone(), before));
            }
        }
    }

    /// Queued events not yet merged.
    pub fn queued(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Queued events of one input not yet merged (0 for the order index, which is not
    /// queued).
    pub fn queued_of(&self, source: Source) -> usize {
        self.queues.get(source.index()).map_or(0, VecDeque::len)
    }

    /// The most events of one input the task should be given before the merge has used
    /// some: a share of [`Settings::max_queued`] ([`HELD_SHARES`] of them, one per event
    /// input and one never taken), so that inputs read ahead never hold so much together
    /// that the merge goes on without an empty one.
    pub fn room_for(&self, source: Source) -> usize {
        (self.settings.max_queued / HELD_SHARES).saturating_sub(self.queued_of(source))
    }

    fn push(&mut self, programs: &Programs, q: Queued, out: &mut Vec<Output>) {
        let history = programs.get(&q.tenant);
        let state = self.tenants.entry(q.tenant.clone()).or_default();
        let restored = state.persisted_newest;
        let buffer = state.buffer.get_or_insert_with(|| {
            let mut buffer = ReorderBuffer::new(
                history.map_or_else(|| ProgramHistory::default().grace(), |h| h.grace()),
            );
            // A restored task starts where its predecessor's watermark was: a click that
            // was late for it is late here too (nothing is held yet, so nothing moves).
            if let Some(newest) = restored {
                buffer.advance(newest, &mut Vec::new());
            }
            buffer
        });
        let mut released = std::mem::take(&mut self.book.released);
        buffer.push(q.event, q.held, &mut released);
        let empty = ProgramHistory::default();
        let history = history.unwrap_or(&empty);
        process_released(
            &q.tenant,
            state,
            history,
            &mut released,
            &mut self.book,
            out,
        );
        self.book.released = released;
        let settings = self.settings;
        time_out_waiting(state, settings, &mut self.book, out);
    }

    /// Lets event time follow the wall clock `now` (time as data) while the task is
    /// quiet: every input read to its end and nothing new for the grace period (and at
    /// least [`Settings::quiet_release`]) after the newest record's timestamp. A click
    /// arrives at most the grace after what it precedes, so what the reorder buffers hold
    /// is released and their watermarks move to `now` less the grace, as the end of input
    /// does in replay: a quiet storefront's last conversions are not held until its next
    /// event, and the progress markers let the ledger fold them. At most once a second;
    /// true when a watermark moved (markers to send).
    pub fn advance_quiet(
        &mut self,
        programs: &Programs,
        now: Timestamp,
        out: &mut Vec<Output>,
    ) -> bool {
        let Some(newest) = self.newest_record else {
            return false;
        };
        if !self.at_end.iter().all(|end| *end)
            || self.queued() > 0
            || self
                .quiet_advanced
                .is_some_and(|at| now.millis() < at.millis().saturating_add(QUIET_EVERY.millis()))
        {
            return false;
        }
        let empty = ProgramHistory::default();
        let settings = self.settings;
        let mut released = std::mem::take(&mut self.book.released);
        let mut moved = false;
        for (tenant, state) in &mut self.tenants {
            let history = programs.get(tenant).unwrap_or(&empty);
            let quiet = history
                .grace()
                .millis()
                .max(settings.quiet_release.millis());
            let Some(buffer) = state.buffer.as_mut() else {
                continue;
            };
            if now.millis() < newest.millis().saturating_add(quiet)
                || buffer
                    .watermark()
                    .is_some_and(|w| w >= now.minus(history.grace()))
            {
                continue;
            }
            buffer.advance(now, &mut released);
            moved = true;
            process_released(tenant, state, history, &mut released, &mut self.book, out);
            time_out_waiting(state, settings, &mut self.book, out);
        }
        self.book.released = released;
        if moved {
            self.quiet_advanced = Some(now);
        }
        moved
    }

    fn offer_index(&mut self, programs: &Programs, record: RecordRef<'_>, out: &mut Vec<Output>) {
        let (index, bytes) = match codec::index_and_bytes_from(record.payload) {
            Ok(decoded) => decoded,
            Err(e) => {
                dead_letter(&mut self.book, record, &e, out);
                return;
            }
        };
        self.book.stats.add(INDEX_TYPE, INDEXED);
        let IndexRecord {
            tenant,
            key,
            record: conversion,
        } = index;
        let state = self.tenants.entry(tenant.clone()).or_default();
        if !state.index.contains_key(&key) {
            state.index.insert(key.clone(), conversion);
            state.index_bytes.insert(key.clone(), bytes.to_vec());
            state.dirty.insert(Entry::Index(key.clone()));
        }
        let Some(waiting) = state.waiting.remove(&key) else {
            return;
        };
        let empty = ProgramHistory::default();
        let history = programs.get(&tenant).unwrap_or(&empty);
        for w in waiting {
            state
                .waiting_by_time
                .remove(&(w.event.occurred_at, w.seq, key.clone()));
            process(
                &tenant,
                state,
                history,
                w.event,
                w.held,
                &mut self.book,
                out,
            );
        }
    }

    /// Appends a changelog record for every entry changed since the last call.
    pub fn flush_changelog(&mut self, out: &mut Vec<Output>) {
        for (tenant, state) in &mut self.tenants {
            let newest = state.buffer.as_ref().and_then(ReorderBuffer::newest);
            if newest.is_some() && newest != state.persisted_newest {
                state.persisted_newest = newest;
                out.push(Output::Changelog {
                    key: codec::changelog_key_of(tenant, &Entry::Watermark),
                    payload: newest.map(|t| codec::changelog_value(&ChangelogValue::Watermark(t))),
                });
            }
            // The sweep's cut before the batch: what the batch holds outlived it.
            if let Some(horizon) = state.horizon
                && state.horizon_written != Some(horizon)
            {
                state.horizon_written = Some(horizon);
                out.push(Output::Changelog {
                    key: codec::changelog_key_of(tenant, &Entry::SeenHorizon),
                    payload: Some(codec::changelog_value(&ChangelogValue::SeenHorizon(
                        horizon,
                    ))),
                });
            }
            if !state.pending_seen.is_empty() {
                let batch = std::mem::take(&mut state.pending_seen);
                let newest = batch.iter().map(|(_, at)| *at).max();
                let payload = codec::changelog_value(&ChangelogValue::SeenBatch(batch));
                let id = xxhash_rust::xxh3::xxh3_128(&payload);
                if let Some(newest) = newest {
                    state.seen_batches.insert((newest, id));
                    out.push(Output::Changelog {
                        key: codec::changelog_key_of(tenant, &Entry::SeenBatch { newest, id }),
                        payload: Some(payload),
                    });
                }
            }
            // No key below is one of those above: a batch swept away was written by an
            // earlier flush.
            for entry in state.dirty.drain() {
                let payload = match &entry {
                    Entry::State(k) => state
                        .attribution
                        .entry_ref(*k)
                        .map(|v| codec::changelog_value_ref(ChangelogValueRef::State(v))),
                    Entry::Index(k) => match state.index_bytes.remove(k) {
                        Some(bytes) => Some(codec::changelog_index_value(&bytes)),
                        None => state
                            .index
                            .get(k)
                            .map(|r| codec::changelog_value_ref(ChangelogValueRef::Index(r))),
                    },
                    // Only ever dirty to be removed.
                    Entry::Watermark | Entry::SeenBatch { .. } | Entry::SeenHorizon => None,
                };
                out.push(Output::Changelog {
                    key: codec::changelog_key_of(tenant, &entry),
                    payload,
                });
            }
            // Every key with bytes was dirty; none is left.
            debug_assert!(state.index_bytes.is_empty());
        }
    }

    /// Folds one changelog record back in (restore, before any input is processed).
    pub fn restore(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), DecodeError> {
        let (key, value) = codec::changelog_from(key, value)?;
        let state = self.tenants.entry(key.tenant).or_default();
        match (key.entry, value) {
            (Entry::State(k), Some(ChangelogValue::State(v))) => {
                if let StateKey::Seen(d) = k {
                    state.single_seen.insert(d);
                }
                state.attribution.restore(k, Some(v));
            }
            (Entry::State(k), None) => {
                if let StateKey::Seen(d) = k {
                    state.single_seen.remove(&d);
                }
                state.attribution.restore(k, None);
            }
            (Entry::SeenBatch { newest, id }, Some(ChangelogValue::SeenBatch(batch))) => {
                for (d, at) in batch {
                    state
                        .attribution
                        .restore(StateKey::Seen(d), Some(StateEntry::Seen(at)));
                }
                state.seen_batches.insert((newest, id));
            }
            (Entry::SeenBatch { newest, id }, None) => {
                state.seen_batches.remove(&(newest, id));
            }
            // The task swept here: sweep what is restored so far alike.
            (Entry::SeenHorizon, Some(ChangelogValue::SeenHorizon(horizon))) => {
                state.attribution.expire(horizon);
                state.horizon = Some(horizon);
                state.horizon_written = Some(horizon);
            }
            (Entry::SeenHorizon, None) => {}
            (Entry::Index(k), Some(ChangelogValue::Index(r))) => {
                state.index.insert(k, r);
            }
            (Entry::Index(k), None) => {
                state.index.remove(&k);
            }
            (Entry::Watermark, Some(ChangelogValue::Watermark(t))) => {
                state.persisted_newest = Some(t);
            }
            (Entry::Watermark, None) => {}
            (entry, Some(_)) => {
                return Err(DecodeError::Undecodable {
                    what: "changelog record",
                    detail: format!("value does not match key {entry:?}"),
                });
            }
        }
        Ok(())
    }

    /// Where a restarted task must read each input again: the earliest offset of an
    /// event still held (in the reorder buffer or waiting), else the next offset.
    pub fn offsets(&self) -> Vec<(Source, i64)> {
        Source::ALL
            .iter()
            .filter_map(|s| {
                let i = s.index();
                let next = self.book.next[i]?;
                let held = self.book.held[i].first();
                Some((*s, held.map_or(next, |h| h.min(next))))
            })
            .collect()
    }

    /// Counts since the last call.
    pub fn take_stats(&mut self) -> Stats {
        std::mem::take(&mut self.book.stats)
    }

    /// Visitors remembered, over all tenants.
    pub fn visitors(&self) -> usize {
        self.tenants
            .values()
            .map(|s| s.attribution.visitors())
            .sum()
    }

    /// Changelog bytes of the whole state (an encoding of every entry; a scan). Seen ids
    /// count as the batches they are written in: their share of the batch values, and the
    /// keys of the batches kept.
    pub fn state_bytes(&self) -> usize {
        let mut bytes = 0;
        for (tenant, s) in &self.tenants {
            let mut seen = Vec::new();
            for k in s.attribution.keys() {
                if let (StateKey::Seen(d), Some(StateEntry::Seen(at))) = (k, s.attribution.entry(k))
                {
                    seen.push((d, at));
                    continue;
                }
                bytes += codec::changelog_key_of(tenant, &Entry::State(k)).len();
                if let Some(v) = s.attribution.entry(k) {
                    bytes += codec::changelog_value(&ChangelogValue::State(v)).len();
                }
            }
            if !seen.is_empty() {
                bytes += codec::changelog_value(&ChangelogValue::SeenBatch(seen)).len();
            }
            if let Some(&(newest, id)) = s.seen_batches.first() {
                let key = codec::changelog_key_of(tenant, &Entry::SeenBatch { newest, id });
                bytes += key.len() * s.seen_batches.len();
            }
            for (k, r) in &s.index {
                bytes += codec::changelog_key_of(tenant, &Entry::Index(k.clone())).len();
                bytes += codec::changelog_value_ref(ChangelogValueRef::Index(r)).len();
            }
        }
        bytes
    }
}

/// Processes events the reorder buffer released, in order, with their held records.
fn process_released(
    tenant: &TenantId,
    state: &mut TenantState,
    history: &ProgramHistory,
    released: &mut Vec<(Event, Held)>,
    book: &mut Book,
    out: &mut Vec<Output>,
) {
    for (event, held) in released.drain(..) {
        expire(state, history, event.occurred_at);
        process(tenant, state, history, event, held, book, out);
    }
}

fn dead_letter(book: &mut Book, record: RecordRef<'_>, error: &DecodeError, out: &mut Vec<Output>) {
    let kind = match record.source {
        Source::Index => INDEX_TYPE,
        s => s.index(),
    };
    book.stats.add(kind, DEAD_LETTERED);
    out.push(Output::DeadLetter {
        source: record.source,
        offset: record.offset,
        key: record.key.map(<[u8]>::to_vec),
        payload: record.payload.map(<[u8]>::to_vec),
        reason: error.reason(),
        detail: error.to_string(),
    });
}

fn expire(state: &mut TenantState, history: &ProgramHistory, at: Timestamp) {
    let due = state.next_expiry.get_or_insert(at.plus(EXPIRY_EVERY));
    if at < *due {
        return;
    }
    *due = at.plus(EXPIRY_EVERY);
    // From the time of the event being decided, as `Engine` does.
    let before = at.minus(history.retention());
    let TenantState {
        attribution,
        pending_seen,
        seen_batches,
        single_seen,
        horizon,
        dirty,
        ..
    } = state;
    attribution.expire_tracked(before, |k| {
        // A seen id of a batch goes with its batch (and the horizon says it went).
        if let StateKey::Seen(d) = k
            && !single_seen.remove(&d)
        {
            return;
        }
        dirty.insert(Entry::State(k));
    });
    pending_seen.retain(|(_, at)| *at >= before);
    while let Some(&(newest, id)) = seen_batches.first()
        && newest < before
    {
        seen_batches.pop_first();
        dirty.insert(Entry::SeenBatch { newest, id });
    }
    *horizon = Some(before);
}

/// Notes for the changelog what applying `fact` changed: a seen id joins this
/// transaction's batch; any other key is written as it stands at the flush.
fn note_change(state: &mut TenantState, fact: &Fact) {
    match (fact, StateKey::changed_by(fact)) {
        (Fact::Seen { at, .. }, Some(StateKey::Seen(d))) => state.pending_seen.push((d, *at)),
        (_, Some(k)) => {
            state.dirty.insert(Entry::State(k));
        }
        (_, None) => {}
    }
}

/// Decides and applies one released event, as `Engine::process` does; a correction whose
/// conversion is not indexed yet waits instead.
fn process(
    tenant: &TenantId,
    state: &mut TenantState,
    history: &ProgramHistory,
    event: Event,
    held: Held,
    book: &mut Book,
    out: &mut Vec<Output>,
) {
    let kind = type_index(&event.payload);
    let correction = match &event.payload {
        Payload::Adjustment(a) => Some(ConversionKey::Order(a.order.clone())),
        Payload::LeadStatus(l) => Some(ConversionKey::Lead(l.lead.clone())),
        _ => None,
    };
    if let Some(key) = &correction
        && let Some(queue) = state.waiting.get_mut(key)
    {
        // Corrections of one conversion are decided in order: behind those waiting.
        book.seq += 1;
        state
            .waiting_by_time
            .insert((event.occurred_at, book.seq, key.clone()));
        queue.push_back(Waiting {
            seq: book.seq,
            since: book.now,
            event,
            held,
        });
        book.stats.add(kind, WAITING);
        return;
    }
    let mut facts = std::mem::take(&mut book.facts);
    facts.clear();
    attribution::decide_into(
        &state.attribution,
        &state.index,
        history,
        &event,
        &mut facts,
    );
    let unknown = facts.iter().any(|f| {
        matches!(
            f,
            Fact::Skipped {
                reason: Skip::UnknownConversion,
                ..
            }
        )
    });
    if let (Some(key), true) = (correction, unknown) {
        book.seq += 1;
        state
            .waiting_by_time
            .insert((event.occurred_at, book.seq, key.clone()));
        state.waiting.entry(key).or_default().push_back(Waiting {
            seq: book.seq,
            since: book.now,
            event,
            held,
        });
        book.stats.add(kind, WAITING);
        book.facts = facts;
        return;
    }
    book.held[held.source.index()].remove(held.offset);
    let mut result = None;
    for fact in &facts {
        attribution::apply(&mut state.attribution, fact);
        note_change(state, fact);
        match fact {
            Fact::Indexed { key, record } => {
                let text = match key {
                    ConversionKey::Order(o) => o.as_str(),
                    ConversionKey::Lead(l) => l.as_str(),
                };
                // Encoded once, for the order index and this task's changelog.
                let bytes = codec::conversion_bytes(record);
                out.push(Output::Index {
                    key: topology::key(&[tenant.as_str(), text]),
                    payload: codec::index_of_bytes(tenant, key, &bytes),
                });
                if !state.index.contains_key(key) {
                    state.index_bytes.insert(key.clone(), bytes);
                }
                index_fact(state, fact, key);
            }
            Fact::Refunded { key, .. } => {
                // Changed: the flush encodes it as it now stands.
                state.index_bytes.remove(key);
                index_fact(state, fact, key);
            }
            Fact::Credited(credit) => {
                out.push(Output::Credit {
                    key: topology::key(&[
                        tenant.as_str(),
                        credit.campaign.as_str(),
                        credit.creator.as_str(),
                    ]),
                    payload: codec::credit(&mut book.credits, tenant, credit),
                    occurred_at: credit.occurred_at,
                    kind: credit.kind.name(),
                });
                result = Some(CREDITED);
            }
            Fact::Duplicate { .. } => result = result.or(Some(DUPLICATE)),
            Fact::Unattributed { .. } => result = result.or(Some(UNATTRIBUTED)),
            Fact::Flagged { .. } => result = result.or(Some(FLAGGED)),
            Fact::Skipped { .. } => result = result.or(Some(SKIPPED)),
            _ => {}
        }
    }
    if let Payload::Engagement(e) = &event.payload
        && result != Some(DUPLICATE)
        && let Some(raw) = &held.raw
    {
        out.push(Output::LedgerInput {
            key: topology::key(&[tenant.as_str(), e.campaign.as_str(), e.creator.as_str()]),
            kind: topology::ENGAGEMENT_INPUT,
            payload: raw.payload.clone().unwrap_or_default(),
        });
        result = result.or(Some(PASSED));
    }
    book.stats.add(kind, result.unwrap_or(SKIPPED));
    facts.clear();
    book.facts = facts;
}

fn index_fact(state: &mut TenantState, fact: &Fact, key: &ConversionKey) {
    attribution::apply_index(&mut state.index, fact);
    state.dirty.insert(Entry::Index(key.clone()));
}

/// Corrections that waited longer (in event time) than the limit go to the dead letters;
/// their ids are remembered, so a re-read after a restart is a duplicate.
fn time_out_waiting(
    state: &mut TenantState,
    settings: Settings,
    book: &mut Book,
    out: &mut Vec<Output>,
) {
    let Some(watermark) = state.buffer.as_ref().and_then(ReorderBuffer::watermark) else {
        return;
    };
    while let Some((at, seq, key)) = state.waiting_by_time.first().cloned() {
        if at.plus(settings.correction_wait) > watermark {
            return;
        }
        let waited_since = state
            .waiting
            .get(&key)
            .and_then(|q| q.iter().find(|w| w.seq == seq))
            .map(|w| w.since);
        if waited_since.is_some_and(|since| since.plus(settings.correction_wall_wait) > book.now) {
            // The oldest has not waited long enough on the wall clock; nor have the rest.
            return;
        }
        state.waiting_by_time.pop_first();
        let Some(queue) = state.waiting.get_mut(&key) else {
            continue;
        };
        let Some(pos) = queue.iter().position(|w| w.seq == seq) else {
            continue;
        };
        let Some(w) = queue.remove(pos) else { continue };
        if queue.is_empty() {
            state.waiting.remove(&key);
        }
        let seen = Fact::Seen {
            event: attribution::digest(w.event.id.as_str()),
            at: w.event.occurred_at,
        };
        attribution::apply(&mut state.attribution, &seen);
        note_change(state, &seen);
        book.held[w.held.source.index()].remove(w.held.offset);
        book.stats.add(type_index(&w.event.payload), DEAD_LETTERED);
        let raw = w.held.raw.unwrap_or(Raw {
            key: None,
            payload: None,
        });
        let what = match &key {
            ConversionKey::Order(o) => format!("order {o}"),
            ConversionKey::Lead(l) => format!("lead {l}"),
        };
        out.push(Output::DeadLetter {
            source: w.held.source,
            offset: w.held.offset,
            key: raw.key,
            payload: raw.payload,
            reason: "unknown_conversion",
            detail: format!(
                "{what} was not attributed within {} of event time",
                humantime::format_duration(std::time::Duration::from_millis(
                    u64::try_from(settings.correction_wait.millis()).unwrap_or(0)
                ))
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::HeldOffsets;

    proptest! {
        /// Held offsets answer as the set of offsets taken and not let go, whatever the
        /// order of taking (mostly ascending, as records come) and letting go.
        #[test]
        fn held_offsets_are_the_set_of_offsets_not_let_go(
            ops in prop::collection::vec((any::<bool>(), 0..6i64, any::<bool>()), 0..200)
        ) {
            let (mut held, mut set) = (HeldOffsets::default(), BTreeSet::new());
            let mut next = 0;
            for (take, step, in_order) in ops {
                if take {
                    let offset = if in_order { next + step } else { step * 7 % 40 };
                    next = next.max(offset + 1);
                    held.insert(offset);
                    set.insert(offset);
                } else {
                    let offset = set.iter().nth(step as usize).copied().unwrap_or(step);
                    held.remove(offset);
                    set.remove(&offset);
                }
                prop_assert_eq!(held.first(), set.first().copied());
            }
        }
    }
}
