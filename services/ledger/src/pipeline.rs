//! The ledger's consumer: `credits` partitions in, ledger rows out.
//!
//! Exactly-once effect without Kafka offsets: the fold of a partition is deterministic
//! ([`crate::fold`]), every row it writes has a key derived from its cause, and the store
//! keeps, next to the rows, how many credits of the partition have been folded and
//! written (`fold_progress`). The consumer never commits offsets: on every assignment a
//! partition is read from its beginning, the fold is rebuilt in memory, and only what
//! comes after the stored progress is written. A crash between the rows and the progress
//! row writes the same rows again, which changes nothing.
//!
//! Restore time therefore grows with a partition's history (no snapshots yet; noted in
//! ARCHITECTURE.md).

use std::{
    collections::BTreeMap,
    sync::{Arc, RwLock, mpsc},
    time::{Duration, Instant},
};

use payoff_adapters::{
    kafka as adapters,
    progress::{self, Progress},
    topology::{self, Topics},
};
use payoff_core::{
    credit::CreditKind,
    ids::{CampaignId, CreatorId, TenantId},
    ledger::{EntryKind, LedgerFact},
};
use payoff_proto::{
    convert::{self, credit_from_proto, entry_to_proto},
    v1,
};
use prost::Message as _;
use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer},
    error::KafkaError,
    message::{BorrowedMessage, Headers as _},
};
use rust_decimal::prelude::ToPrimitive as _;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::{
    Config,
    error::LedgerError,
    fold::{Fold, Folded, Input, Programs},
    metrics as m,
    store::Store,
    tally::{Gauges, ProgressKey, Tally},
};

/// How often the KPI and leaderboard gauges are recomputed.
const GAUGE_INTERVAL: Duration = Duration::from_secs(2);

/// Most folded credits written in one batch.
const MAX_BATCH: usize = 2_000;

/// One change a watcher may see.
#[derive(Debug, Clone)]
pub struct Update {
    /// Tenant.
    pub tenant: TenantId,
    /// Campaign.
    pub campaign: CampaignId,
    /// Creator.
    pub creator: CreatorId,
    /// The event for the stream.
    pub event: v1::WatchEvent,
}

/// Every program version as published (tenant, version) → (program, publish time in ms),
/// for `Admin.GetProgram` and `Admin.ListPrograms`.
pub type Catalog = BTreeMap<(String, u64), (v1::Program, i64)>;

/// What the consumer shares with the query service.
#[derive(Clone)]
pub struct Shared {
    /// Every program version as published.
    pub catalog: Arc<RwLock<Catalog>>,
    /// The store.
    pub store: Store,
    /// Every tenant's programs.
    pub programs: Arc<RwLock<Programs>>,
    /// New entries, once stored.
    pub updates: broadcast::Sender<Arc<Update>>,
}

/// Partitions assigned or revoked, from the rebalance callback.
enum Change {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

struct Context {
    changes: std::sync::Mutex<mpsc::Sender<Change>>,
}

impl ClientContext for Context {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        adapters::log_client_error(&error, reason);
    }
}

impl ConsumerContext for Context {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions =
            |tpl: &TopicPartitionList| tpl.elements().iter().map(|e| e.partition()).collect();
        let change = match rebalance {
            Rebalance::Assign(tpl) => Change::Assigned(partitions(tpl)),
            Rebalance::Revoke(tpl) => Change::Revoked(partitions(tpl)),
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error");
                return;
            }
        };
        if let Ok(tx) = self.changes.lock() {
            let _ = tx.send(change);
        }
    }
}

/// One assigned partition.
struct Part {
    fold: Fold,
    /// Credits already stored by an earlier run.
    stored: u64,
    pending: Vec<Folded>,
    since: Instant,
    restored: bool,
    /// All-time totals of what the fold produced, for the KPI gauges.
    tally: Tally,
    /// Tier progress after each pending input that changed it (its seq, the key, the
    /// net orders and revenue then), announced on `Watch` once stored.
    tiers: Vec<(u64, ProgressKey, (i64, rust_decimal::Decimal))>,
}

fn kafka(op: &'static str) -> impl FnOnce(KafkaError) -> LedgerError {
    move |e| LedgerError::Kafka(format!("{op}: {e}"))
}

/// Reads the `programs` topic to its end, then follows it.
pub struct ProgramFeed {
    consumer: BaseConsumer<adapters::QuietEof>,
    catalog: Option<Arc<RwLock<Catalog>>>,
}

impl ProgramFeed {
    /// A reader of the programs topic from its beginning.
    pub fn new(brokers: &str, topic: &str) -> Result<Self, LedgerError> {
        let mut config: ClientConfig = adapters::read_committed_consumer_config(
            brokers,
            "payoff-ledger-programs",
            adapters::StartFrom::Earliest,
        )
        .map_err(|e| LedgerError::Kafka(e.to_string()))?;
        config
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "10");
        let consumer: BaseConsumer<adapters::QuietEof> = config
            .create_with_context(adapters::QuietEof)
            .map_err(kafka("programs reader"))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(kafka("programs assignment"))?;
        consumer.assign(&tpl).map_err(kafka("programs assign"))?;
        Ok(Self {
            consumer,
            catalog: None,
        })
    }

    /// Also keeps every version as published in `catalog`.
    #[must_use]
    pub fn with_catalog(mut self, catalog: Arc<RwLock<Catalog>>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Applies what is available; with `to_end`, until the end of the topic.
    pub async fn poll(
        &self,
        programs: &RwLock<Programs>,
        to_end: bool,
    ) -> Result<usize, LedgerError> {
        let mut n = 0;
        loop {
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(msg)) => {
                    n += 1;
                    match program_of(&msg) {
                        Ok((tenant, program)) => {
                            tracing::info!(tenant = %tenant, version = program.version, "program version loaded");
                            if let (Some(catalog), Some(payload)) = (&self.catalog, msg.payload())
                                && let Ok(mut proto) = v1::Program::decode(payload)
                                && let Ok(mut catalog) = catalog.write()
                            {
                                proto.tenant_id = tenant.as_str().to_owned();
                                let at = msg.timestamp().to_millis().unwrap_or_default();
                                catalog.insert(
                                    (tenant.as_str().to_owned(), program.version),
                                    (proto, at),
                                );
                            }
                            if let Ok(mut p) = programs.write() {
                                p.insert(tenant, program);
                            }
                        }
                        Err(e) => {
                            tracing::error!(offset = msg.offset(), error = %e, "program version unusable; skipped")
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => return Ok(n),
                Some(Err(e)) => return Err(LedgerError::Kafka(format!("programs: {e}"))),
                None if !to_end => return Ok(n),
                None => tokio::time::sleep(Duration::from_millis(10)).await,
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

/// Consumes `credits` until `shutdown`, writing what it folds.
pub async fn run(
    config: &Config,
    shared: &Shared,
    shutdown: &CancellationToken,
    ready: &tokio::sync::watch::Sender<bool>,
) -> Result<(), LedgerError> {
    let topics = Topics::with_prefix(&config.topic_prefix);
    let feed = ProgramFeed::new(&config.kafka_brokers, &topics.programs)?
        .with_catalog(shared.catalog.clone());
    let loaded = feed.poll(&shared.programs, true).await?;
    tracing::info!(versions = loaded, "programs loaded");

    let (tx, changes) = mpsc::channel();
    let mut consumer_config: ClientConfig = adapters::read_committed_consumer_config(
        &config.kafka_brokers,
        &config.group_id,
        adapters::StartFrom::Earliest,
    )
    .map_err(|e| LedgerError::Kafka(e.to_string()))?;
    consumer_config
        .set(
            "session.timeout.ms",
            config.session_timeout.as_millis().to_string(),
        )
        .set("fetch.wait.max.ms", "20")
        .set("client.id", "payoff-ledger");
    let consumer: StreamConsumer<Context> = consumer_config
        .create_with_context(Context {
            changes: std::sync::Mutex::new(tx),
        })
        .map_err(kafka("consumer"))?;
    consumer
        .subscribe(&[&topics.credits])
        .map_err(kafka("subscribe"))?;
    let _ = ready.send(true);
    tracing::info!(group = %config.group_id, topic = %topics.credits, "ledger consuming");

    let mut parts: BTreeMap<i32, Part> = BTreeMap::new();
    let mut tick = tokio::time::interval(config.batch_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    let mut gauges = Gauges::new(GAUGE_INTERVAL);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            _ = tick.tick() => {
                apply_changes(&changes, &mut parts);
                feed.poll(&shared.programs, false).await?;
                flush(config, shared, &topics.credits, &mut parts).await?;
                gauges.publish(parts.values().map(|p| &p.tally));
            }
            msg = consumer.recv() => {
                let msg = msg.map_err(kafka("consume"))?;
                apply_changes(&changes, &mut parts);
                let p = msg.partition();
                if let std::collections::btree_map::Entry::Vacant(slot) = parts.entry(p) {
                    let stored = shared.store.progress(&config.group_id, &topics.credits, p).await?;
                    tracing::info!(partition = p, stored, "partition assigned; re-folding from its beginning");
                    slot.insert(Part { fold: Fold::new(), stored, pending: Vec::new(), since: Instant::now(), restored: false, tally: Tally::default(), tiers: Vec::new() });
                }
                offer(&feed, shared, &msg, &mut parts, &mut out).await?;
                if parts.get(&p).is_some_and(|part| part.pending.len() >= MAX_BATCH) {
                    flush(config, shared, &topics.credits, &mut parts).await?;
                }
            }
        }
    }
    flush(config, shared, &topics.credits, &mut parts).await?;
    consumer.unsubscribe();
    tracing::info!("ledger stopped consuming");
    Ok(())
}

fn apply_changes(changes: &mpsc::Receiver<Change>, parts: &mut BTreeMap<i32, Part>) {
    while let Ok(change) = changes.try_recv() {
        let (Change::Assigned(ps) | Change::Revoked(ps)) = change;
        for p in ps {
            // Assigned or revoked, the next record of the partition starts a fresh fold
            // (the consumer reads it from its beginning, having committed nothing).
            parts.remove(&p);
        }
    }
}

async fn offer(
    feed: &ProgramFeed,
    shared: &Shared,
    msg: &rdkafka::message::BorrowedMessage<'_>,
    parts: &mut BTreeMap<i32, Part>,
    out: &mut Vec<Folded>,
) -> Result<(), LedgerError> {
    let p = msg.partition();
    let Some(part) = parts.get_mut(&p) else {
        return Ok(());
    };
    let payload = msg.payload().unwrap_or_default();
    let kind = record_kind(msg);
    if let RecordKind::Input(kind) = &kind {
        match crate::admin::record_of(kind, msg.key(), payload) {
            Ok((tenant, input)) => {
                let programs = read(&shared.programs);
                part.fold
                    .input(&programs, tenant, Input::Record(input), out);
            }
            Err(e) => {
                tracing::error!(partition = p, offset = msg.offset(), error = %e, "ledger input unusable; skipped")
            }
        }
    } else if kind == RecordKind::Marker {
        match Progress::decode(payload) {
            Ok(marker) => {
                let programs = read(&shared.programs);
                part.fold.progress(&programs, &marker, out);
            }
            Err(e) => {
                tracing::error!(partition = p, offset = msg.offset(), error = %e, "progress marker unusable; skipped")
            }
        }
    } else {
        let decoded = v1::Credit::decode(payload)
            .map_err(|e| e.to_string())
            .and_then(|c| credit_from_proto(&c).map_err(|e| e.to_string()));
        match decoded {
            Ok((tenant, credit)) => {
                let known = |programs: &RwLock<Programs>| {
                    knows(&read(programs), &tenant, credit.config_version)
                };
                if !known(&shared.programs) {
                    // The attributor judged it under a version this instance has not read
                    // yet: read the programs topic to its end first.
                    feed.poll(&shared.programs, true).await?;
                    if !known(&shared.programs) {
                        return Err(LedgerError::Internal(format!(
                            "credit {} needs program version {} of tenant {tenant}, which the programs topic does not hold",
                            credit.id.to_text(),
                            credit.config_version
                        )));
                    }
                }
                let programs = read(&shared.programs);
                part.fold.credit(&programs, tenant, credit, out);
            }
            Err(e) => {
                metrics::counter!(m::CREDITS, "kind" => "unknown", "result" => "undecodable")
                    .increment(1);
                tracing::error!(partition = p, offset = msg.offset(), error = %e, "credit unusable; skipped");
            }
        }
    }
    for f in out.drain(..) {
        let result = match (&f.skipped, f.late) {
            (Some(_), _) => "skipped",
            (None, true) => "late",
            (None, false) => "folded",
        };
        if let Some(reason) = &f.skipped {
            tracing::warn!(cause = %f.input.cause(), reason = %reason, "ledger input skipped");
        }
        part.tally.add(&f.tenant, &f.facts);
        if f.seq >= part.stored {
            metrics::counter!(m::CREDITS, "kind" => f.input.name(), "result" => result)
                .increment(1);
            if !part.restored {
                part.restored = true;
                metrics::histogram!(m::RESTORE_DURATION).record(part.since.elapsed().as_secs_f64());
                tracing::info!(
                    partition = p,
                    refolded = part.stored,
                    secs = part.since.elapsed().as_secs_f64(),
                    "partition caught up with the store"
                );
            }
            for fact in &f.facts {
                if let LedgerFact::Progress {
                    campaign,
                    creator,
                    period,
                    ..
                } = fact
                {
                    let key = (f.tenant.clone(), campaign.clone(), creator.clone(), *period);
                    let sums = part.tally.progress(&key);
                    part.tiers.push((f.seq, key, sums));
                }
            }
            part.pending.push(f);
        }
    }
    metrics::gauge!(m::HELD).set(parts.values().map(|p| p.fold.held()).sum::<usize>() as f64);
    Ok(())
}

/// What a record of `credits` is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// An attributor progress marker.
    Marker,
    /// A payout or manual adjustment from `Admin` (the header's kind).
    Input(String),
    /// A credit.
    Credit,
}

/// Classifies a record of `credits` by its headers.
pub(crate) fn record_kind(msg: &impl Message) -> RecordKind {
    let Some(headers) = msg.headers() else {
        return RecordKind::Credit;
    };
    for h in headers.iter() {
        if h.key == progress::HEADER {
            return RecordKind::Marker;
        }
        if h.key == crate::admin::INPUT_HEADER {
            return RecordKind::Input(
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            );
        }
    }
    RecordKind::Credit
}

/// Whether `programs` holds `version` (or a later one) of `tenant`'s program.
fn knows(programs: &Programs, tenant: &TenantId, version: u64) -> bool {
    programs
        .get(tenant)
        .and_then(|h| h.versions().iter().map(|v| v.version).max())
        .is_some_and(|v| v >= version)
}

fn read(programs: &RwLock<Programs>) -> std::sync::RwLockReadGuard<'_, Programs> {
    programs
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn flush(
    config: &Config,
    shared: &Shared,
    topic: &str,
    parts: &mut BTreeMap<i32, Part>,
) -> Result<(), LedgerError> {
    for (p, part) in parts.iter_mut() {
        let Some(last) = part.pending.last() else {
            continue;
        };
        let folded = last.seq + 1;
        let started = Instant::now();
        shared
            .store
            .write(&config.group_id, topic, *p, &part.pending, folded)
            .await?;
        metrics::histogram!(m::WRITE_DURATION).record(started.elapsed().as_secs_f64());
        let now = wall_millis();
        let mut tiers = std::mem::take(&mut part.tiers).into_iter().peekable();
        for f in part.pending.drain(..) {
            observe(shared, &f, now);
            while let Some((_, key, sums)) = tiers.next_if(|(seq, ..)| *seq == f.seq) {
                announce_tier(shared, key, sums);
            }
        }
        part.stored = folded;
    }
    Ok(())
}

/// Metrics and watch updates of one stored credit.
fn observe(shared: &Shared, f: &Folded, now: i64) {
    let credit = f.input.credit();
    if let Some(c) = credit
        && matches!(c.kind, CreditKind::Order { .. })
    {
        metrics::histogram!(m::FRESHNESS)
            .record((now - c.occurred_at.millis()).max(0) as f64 / 1_000.0);
    }
    if let Some(c) = credit
        && let CreditKind::Order { net, .. } = &c.kind
        && f.skipped.is_none()
    {
        let revenue = net.amount * c.kind.share();
        metrics::counter!(m::REVENUE, "tenant" => f.tenant.as_str().to_owned(), "currency" => net.currency.code().to_owned())
            .increment(hundredths(revenue));
    }
    for fact in &f.facts {
        let LedgerFact::Entry(e) = fact else { continue };
        metrics::counter!(m::ENTRIES, "kind" => e.kind.as_str()).increment(1);
        if e.kind != EntryKind::Payout && e.amount.amount.is_sign_positive() {
            metrics::counter!(m::COMMISSION, "tenant" => f.tenant.as_str().to_owned(), "currency" => e.amount.currency.code().to_owned(), "direction" => "earned")
                .increment(hundredths(e.amount.amount));
        } else if e.kind != EntryKind::Payout {
            metrics::counter!(m::COMMISSION, "tenant" => f.tenant.as_str().to_owned(), "currency" => e.amount.currency.code().to_owned(), "direction" => "reversed")
                .increment(hundredths(-e.amount.amount));
        }
        let _ = shared.updates.send(Arc::new(Update {
            tenant: f.tenant.clone(),
            campaign: e.campaign.clone(),
            creator: e.creator.clone(),
            event: v1::WatchEvent {
                update: Some(v1::watch_event::Update::Entry(entry_to_proto(
                    &f.tenant, e, None,
                ))),
            },
        }));
    }
}

/// Sends a creator's new tier progress to `Watch` subscribers.
fn announce_tier(
    shared: &Shared,
    (tenant, campaign, creator, period): ProgressKey,
    (orders, revenue): (i64, rust_decimal::Decimal),
) {
    let config = {
        let programs = read(&shared.programs);
        programs.get(&tenant).and_then(|history| {
            history
                .at(payoff_core::time::Timestamp(wall_millis()))
                .or(history.versions().last())
                .and_then(|p| p.campaigns.get(&campaign).cloned())
        })
    };
    let Some(config) = config else { return };
    let progress = crate::query::tier_to_proto(&config, &creator, period, orders, revenue);
    let _ = shared.updates.send(Arc::new(Update {
        tenant,
        campaign,
        creator,
        event: v1::WatchEvent {
            update: Some(v1::watch_event::Update::TierProgress(progress)),
        },
    }));
}

/// An amount in hundredths of its unit, for a counter.
fn hundredths(amount: rust_decimal::Decimal) -> u64 {
    (amount * rust_decimal::Decimal::ONE_HUNDRED)
        .round()
        .to_u64()
        .unwrap_or_default()
}

fn wall_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
