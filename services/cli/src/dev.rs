//! `payoff dev`: ingest, attribution and the ledger in one process, with a live summary.
//!
//! With no Kafka or Cassandra given, everything runs in memory: ingest publishes into the
//! core's engine (the same `decide`/`apply` the services call), and the `Ledger` queries
//! read the engine's ledger; nothing is durable, and it says so. With `--kafka-brokers`
//! and `--scylla-nodes` (or their environment variables) it runs the real services
//! in-process against them instead.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use anyhow::{Context, bail};
use payoff_core::{
    credit::CreditKind,
    engine::Engine,
    event::{Event, RawEvent},
    ids::{CampaignId, CreatorId, TenantId},
    kpi::{KpiDelta, KpiTotals},
    ledger::{EntryKind, LedgerEntry},
    program::ProgramHistory,
    projection::TierProgress,
    time::Timestamp,
};
use payoff_ingest::publisher::{PublishError, Publisher, Record};
use payoff_ledger::{
    fold::Programs,
    pipeline::{Shared, Update},
    store::{MemoryView, Store},
};
use payoff_proto::{
    convert::{credit_to_proto, entry_to_proto},
    v1,
};
use payoff_runtime::auth::{KeyStore, hash_secret};
use prost::Message as _;
use rust_decimal::Decimal;
use tokio_util::sync::CancellationToken;

/// The dev API keys (printed; this mode is for a laptop, never for production).
pub const DEV_INGEST_KEY: &str = "dev-ingest-secret";
/// A `read` key for dashboards and grpcurl.
pub const DEV_READ_KEY: &str = "dev-read-secret";

/// Options of `payoff dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// The program (canonical proto3 JSON).
    #[arg(long, default_value = "deploy/examples/program.json")]
    pub program: PathBuf,
    /// Kafka bootstrap servers: run the real services against them (with --scylla-nodes).
    #[arg(long, env = "PAYOFF_KAFKA_BROKERS", default_value = "")]
    pub kafka_brokers: String,
    /// CQL contact points: run the real services against them (with --kafka-brokers).
    #[arg(long, env = "PAYOFF_SCYLLA_NODES", default_value = "")]
    pub scylla_nodes: String,
    /// Prefix of the topic names (real mode).
    #[arg(long, env = "PAYOFF_TOPIC_PREFIX", default_value = "payoff.")]
    pub topic_prefix: String,
    /// Keyspace (real mode; created and migrated if missing).
    #[arg(long, env = "PAYOFF_KEYSPACE", default_value = "payoff")]
    pub keyspace: String,
    /// Partitions of the topics when they are created (real mode).
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Ingest's gRPC address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub ingest_listen: SocketAddr,
    /// The ledger's gRPC address (`payoff.v1.Ledger`).
    #[arg(long, default_value = "127.0.0.1:50053")]
    pub ledger_listen: SocketAddr,
    /// Prometheus /metrics address.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub metrics_listen: SocketAddr,
    /// How often the summary refreshes.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub refresh: Duration,
    /// Print the summary as plain lines instead of refreshing in place.
    #[arg(long)]
    pub plain: bool,
    /// Events per second the storefront simulator sends (`payoff loadgen`); 0 runs no
    /// simulator (send your own events to ingest).
    #[arg(long, default_value_t = 200)]
    pub simulate: u32,
    /// Seed of the simulator (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Starts the storefront simulator against `ingest` until `shutdown` (a day of traffic at
/// most), at `args.simulate` events per second.
fn simulate(
    args: &DevArgs,
    ingest: SocketAddr,
    shutdown: &CancellationToken,
) -> Option<tokio::task::JoinHandle<anyhow::Result<()>>> {
    if args.simulate == 0 {
        return None;
    }
    let load = crate::loadgen::LoadgenArgs {
        endpoint: format!("http://{ingest}"),
        api_key: DEV_INGEST_KEY.to_owned(),
        rate: args.simulate,
        duration: Some(Duration::from_secs(24 * 3_600)),
        events: None,
        seed: args.seed,
        start_time: None,
        clock_rate: None,
        concurrency: 8,
        batch: 1,
        timeout: Duration::from_secs(10),
        record: None,
        program: args.program.clone(),
    };
    let shutdown = shutdown.clone();
    Some(tokio::spawn(async move {
        crate::loadgen::run_until(&load, shutdown, |_| {})
            .await
            .map(|_| ())
    }))
}

/// The in-memory pipeline: the core's engine behind a lock.
#[derive(Clone)]
pub struct MemoryPipeline {
    tenant: TenantId,
    engine: Arc<Mutex<Engine>>,
    updates: tokio::sync::broadcast::Sender<Arc<Update>>,
    /// Entries already announced on the watch.
    announced: Arc<Mutex<usize>>,
}

impl MemoryPipeline {
    /// A pipeline for one tenant's program.
    pub fn new(
        tenant: TenantId,
        programs: ProgramHistory,
        updates: tokio::sync::broadcast::Sender<Arc<Update>>,
    ) -> Self {
        Self {
            tenant,
            engine: Arc::new(Mutex::new(Engine::new(programs))),
            updates,
            announced: Arc::default(),
        }
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, Engine> {
        self.engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lets event time pass with no event (releases what the reorder buffer holds).
    pub fn advance(&self, now: Timestamp) {
        self.engine().advance(now);
        self.announce();
    }

    fn announce(&self) {
        let engine = self.engine();
        let mut announced = self
            .announced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for e in engine.entries.iter().skip(*announced) {
            let _ = self.updates.send(Arc::new(Update {
                tenant: self.tenant.clone(),
                campaign: e.campaign.clone(),
                creator: e.creator.clone(),
                event: v1::WatchEvent {
                    update: Some(v1::watch_event::Update::Entry(entry_to_proto(
                        &self.tenant,
                        e,
                        None,
                    ))),
                },
            }));
        }
        *announced = engine.entries.len();
    }

    /// Figures for the summary.
    pub fn summary(&self) -> Summary {
        let engine = self.engine();
        let mut per_campaign: BTreeMap<String, KpiTotals> = BTreeMap::new();
        let mut per_creator: BTreeMap<String, Decimal> = BTreeMap::new();
        for k in &engine.kpis {
            *per_campaign
                .entry(k.campaign.as_str().to_owned())
                .or_default() += &k.totals;
        }
        for e in &engine.entries {
            if e.kind != EntryKind::Payout {
                *per_creator
                    .entry(e.creator.as_str().to_owned())
                    .or_default() += e.amount.amount;
            }
        }
        let orders = engine
            .credits
            .iter()
            .filter(|c| matches!(c.kind, CreditKind::Order { .. }))
            .count();
        // Per creator and campaign, the latest period with activity (the engine holds
        // every period; the ledger is asked for the current one).
        let mut latest: BTreeMap<(CreatorId, CampaignId), TierProgress> = BTreeMap::new();
        for t in engine.tier_progress(wall()) {
            let key = (t.creator.clone(), t.campaign.clone());
            if latest.get(&key).is_none_or(|kept| kept.period < t.period) {
                latest.insert(key, t);
            }
        }
        let mut tiers = BTreeMap::new();
        for t in latest.into_values() {
            let rank = tier_rank(t.next_threshold.is_some(), t.orders, t.campaign.as_str());
            let text = tier_line(
                t.campaign.as_str(),
                t.orders,
                t.current_rate.map(|r| r.normalize().to_string()).as_deref(),
                t.next_threshold
                    .map(|r| r.normalize().to_string())
                    .as_deref(),
                t.remaining.map(|r| r.normalize().to_string()).as_deref(),
            );
            keep_best_tier(&mut tiers, t.creator.as_str(), rank, text);
        }
        Summary {
            tiers: tiers.into_iter().map(|(c, (_, t))| (c, t)).collect(),
            by_type: engine
                .counts
                .by_type
                .iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            credited_orders: orders as u64,
            per_campaign,
            per_creator,
            entries: engine.entries.len(),
        }
    }
}

/// What the summary shows.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Events received by type.
    pub by_type: BTreeMap<String, u64>,
    /// Order credits.
    pub credited_orders: u64,
    /// KPI counters per campaign.
    pub per_campaign: BTreeMap<String, KpiTotals>,
    /// Commission (net, without payouts) per creator.
    pub per_creator: BTreeMap<String, Decimal>,
    /// Ledger entries.
    pub entries: usize,
    /// Tier progress per creator: one line, picked among campaigns by [`keep_best_tier`]
    /// (a campaign with a next threshold first, then the most orders). In memory each
    /// campaign's latest period with activity; from the ledger, the current period.
    pub tiers: BTreeMap<String, String>,
}

/// How a creator's summary picks its one tier line among campaigns, alike whichever
/// pipeline runs: a campaign with a next tier first, then the most orders, then the first
/// campaign by id.
type TierRank = (bool, i64, std::cmp::Reverse<String>);

fn tier_rank(has_next: bool, orders: i64, campaign: &str) -> TierRank {
    (has_next, orders, std::cmp::Reverse(campaign.to_owned()))
}

/// Keeps `line` for `creator` when it ranks above the line kept so far.
fn keep_best_tier(
    tiers: &mut BTreeMap<String, (TierRank, String)>,
    creator: &str,
    rank: TierRank,
    line: String,
) {
    if tiers.get(creator).is_none_or(|(best, _)| *best < rank) {
        tiers.insert(creator.to_owned(), (rank, line));
    }
}

/// One line of tier progress: orders so far, the rate now, the next threshold.
fn tier_line(
    campaign: &str,
    orders: impl std::fmt::Display,
    rate: Option<&str>,
    next: Option<&str>,
    remaining: Option<&str>,
) -> String {
    let mut line = format!("{campaign}: {orders} orders");
    if let Some(rate) = rate.filter(|r| !r.is_empty()) {
        line.push_str(&format!(", rate {rate}"));
    }
    if let (Some(next), Some(remaining)) = (
        next.filter(|n| !n.is_empty()),
        remaining.filter(|r| !r.is_empty()),
    ) {
        line.push_str(&format!(", next tier at {next} ({remaining} to go)"));
    }
    line
}

impl Publisher for MemoryPipeline {
    async fn publish(&self, record: Record) -> Result<(), PublishError> {
        let proto = v1::Event::decode(record.payload.as_slice())
            .map_err(|e| PublishError::Sink(format!("decode: {e}")))?;
        let now = wall();
        let event: Event = Event::validate(&RawEvent::from(&proto), now)
            .map_err(|e| PublishError::Sink(format!("validate: {e}")))?;
        self.engine().push(event);
        self.announce();
        Ok(())
    }

    async fn is_connected(&self) -> bool {
        true
    }

    async fn flush(&self, _timeout: Duration) -> Result<(), PublishError> {
        Ok(())
    }
}

impl MemoryView for MemoryPipeline {
    fn creator_entries(&self, tenant: &str, creator: &str) -> Vec<LedgerEntry> {
        self.entries(tenant, |e| e.creator.as_str() == creator)
    }

    fn campaign_entries(&self, tenant: &str, campaign: &str) -> Vec<LedgerEntry> {
        self.entries(tenant, |e| e.campaign.as_str() == campaign)
    }

    fn order(&self, tenant: &str, order: &str) -> (Vec<LedgerEntry>, Vec<v1::Credit>) {
        let entries = self.entries(tenant, |e| {
            e.order.as_ref().is_some_and(|o| o.as_str() == order)
        });
        if tenant != self.tenant.as_str() {
            return (entries, Vec::new());
        }
        let credits = self
            .engine()
            .credits
            .iter()
            .filter(|c| match &c.kind {
                CreditKind::Order { order: o, .. } | CreditKind::Reversal { order: o, .. } => {
                    o.as_str() == order
                }
                _ => false,
            })
            .map(|c| credit_to_proto(&self.tenant, c))
            .collect();
        (entries, credits)
    }

    fn tier(&self, tenant: &str, campaign: &str, creator: &str, period: &str) -> (i64, Decimal) {
        if tenant != self.tenant.as_str() {
            return (0, Decimal::ZERO);
        }
        self.engine()
            .progress
            .iter()
            .filter(|p| {
                p.campaign.as_str() == campaign
                    && p.creator.as_str() == creator
                    && p.period.label() == period
            })
            .fold((0, Decimal::ZERO), |(o, r), p| {
                (o + p.orders, r + p.revenue)
            })
    }

    fn kpi_deltas(&self, tenant: &str, campaign: &str) -> Vec<KpiDelta> {
        if tenant != self.tenant.as_str() {
            return Vec::new();
        }
        self.engine()
            .kpis
            .iter()
            .filter(|k| k.campaign.as_str() == campaign)
            .cloned()
            .collect()
    }
}

impl MemoryPipeline {
    fn entries(&self, tenant: &str, keep: impl Fn(&LedgerEntry) -> bool) -> Vec<LedgerEntry> {
        if tenant != self.tenant.as_str() {
            return Vec::new();
        }
        let mut out: Vec<LedgerEntry> = self
            .engine()
            .entries
            .iter()
            .filter(|e| keep(e))
            .cloned()
            .collect();
        out.sort_by_key(|e| (e.occurred_at, e.id));
        out
    }
}

fn wall() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    )
}

/// A running in-memory `payoff dev`: its addresses and pipeline.
pub struct Running {
    /// Ingest's gRPC address.
    pub ingest: SocketAddr,
    /// The ledger's gRPC address.
    pub ledger: SocketAddr,
    /// Ingest's /metrics address.
    pub metrics: SocketAddr,
    /// The pipeline (for the summary).
    pub pipeline: MemoryPipeline,
    /// The tenant of the program.
    pub tenant: TenantId,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _keys: tempfile::TempDir,
}

impl Running {
    /// Waits for every part to stop (after `shutdown`).
    pub async fn join(self) -> anyhow::Result<()> {
        for t in self.tasks {
            t.await.context("a part of payoff dev panicked")??;
        }
        Ok(())
    }
}

/// Starts ingest and the ledger in memory, on the given addresses (port 0 works).
pub async fn start_memory(args: &DevArgs, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let text = std::fs::read_to_string(&args.program)
        .with_context(|| format!("cannot read the program {}", args.program.display()))?;
    let proto: v1::Program = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a payoff.v1.Program", args.program.display()))?;
    let program = payoff_proto::convert::program(&proto)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.program.display()))?;
    let tenant = TenantId::parse("tenant_id", &proto.tenant_id)
        .map_err(|v| anyhow::anyhow!("{}: {v}", args.program.display()))?;

    let keys_dir = tempfile::tempdir()?;
    let keys_path = keys_dir.path().join("api-keys.json");
    std::fs::write(
        &keys_path,
        serde_json::json!({"keys": [
            {"id": "dev-storefront", "tenant": tenant.as_str(), "role": "ingest", "sha256": hash_secret(DEV_INGEST_KEY)},
            {"id": "dev-dashboard", "tenant": tenant.as_str(), "role": "read", "sha256": hash_secret(DEV_READ_KEY)},
        ]})
        .to_string(),
    )?;

    let (updates, _) = tokio::sync::broadcast::channel(4_096);
    let pipeline = MemoryPipeline::new(
        tenant.clone(),
        ProgramHistory::single(program.clone()),
        updates.clone(),
    );

    let ingest_config = <payoff_ingest::Config as clap::Parser>::try_parse_from([
        "payoff-ingest".to_owned(),
        "--listen".into(),
        args.ingest_listen.to_string(),
        "--metrics-listen".into(),
        args.metrics_listen.to_string(),
        "--api-keys".into(),
        keys_path.display().to_string(),
        "--pii-secret".into(),
        "payoff-dev-only-secret".into(),
    ])?;
    let ingest = payoff_ingest::bind(ingest_config, shutdown.clone()).await?;
    let ingest_addr = ingest.grpc_addr;
    let metrics_addr = ingest.metrics_addr;
    let publisher = Arc::new(pipeline.clone());
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(async move {
        ingest
            .serve_with(publisher)
            .await
            .map_err(anyhow::Error::from)
    }));

    let mut programs = Programs::default();
    programs.insert(tenant.clone(), program);
    let mut catalog = BTreeMap::new();
    catalog.insert(
        (tenant.as_str().to_owned(), proto.version),
        (proto.clone(), wall().millis()),
    );
    let shared = Shared {
        catalog: Arc::new(RwLock::new(catalog)),
        store: Store::Memory(Arc::new(pipeline.clone())),
        programs: Arc::new(RwLock::new(programs)),
        updates,
    };
    let listener = tokio::net::TcpListener::bind(args.ledger_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.ledger_listen))?;
    let ledger_addr = listener.local_addr()?;
    let keys = KeyStore::load(&keys_path)?;
    {
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            payoff_ledger::serve_queries(listener, shared, keys, shutdown)
                .await
                .map_err(anyhow::Error::from)
        }));
    }
    // Event time passes with the wall clock: the reorder buffer releases what it holds.
    {
        let pipeline = pipeline.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    _ = tick.tick() => pipeline.advance(wall()),
                }
            }
        }));
    }
    Ok(Running {
        ingest: ingest_addr,
        ledger: ledger_addr,
        metrics: metrics_addr,
        pipeline,
        tenant,
        tasks,
        _keys: keys_dir,
    })
}

/// Renders the summary (one screen).
pub fn render(s: &Summary, elapsed: Duration, previous: &Summary, mode: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let secs = elapsed.as_secs_f64().max(0.001);
    let _ = writeln!(out, "payoff dev: {mode} ({:.0} s)", elapsed.as_secs_f64());
    let _ = writeln!(out, "events by type: total (+ since the last refresh)");
    for (t, n) in &s.by_type {
        let before = previous.by_type.get(t).copied().unwrap_or_default();
        let _ = writeln!(out, "  {t:<12} {n:>10} (+{})", n.saturating_sub(before));
    }
    let _ = writeln!(
        out,
        "credited orders: {}   ledger entries: {}   ({:.1} events/s; credits follow events by the grace period)",
        s.credited_orders,
        s.entries,
        s.by_type.values().sum::<u64>() as f64 / secs
    );
    let _ = writeln!(out, "campaign                 revenue        cost     ROAS");
    for (c, t) in &s.per_campaign {
        let roas = t
            .kpis()
            .roas
            .map_or_else(|| "-".to_owned(), |r| format!("{:.2}", r));
        let _ = writeln!(
            out,
            "  {c:<20} {:>10} {:>10} {roas:>8}",
            t.revenue.round_dp(2),
            t.cost.round_dp(2)
        );
    }
    let mut top: Vec<(&String, &Decimal)> = s.per_creator.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let _ = writeln!(out, "top creators by commission:");
    for (c, amount) in top.into_iter().take(5) {
        let tier = s.tiers.get(c).map(String::as_str).unwrap_or_default();
        let _ = writeln!(out, "  {c:<20} {:>10}   {tier}", amount.round_dp(2));
    }
    out
}

/// Where the summary's figures come from.
#[derive(Clone)]
pub enum Source {
    /// The in-memory engine.
    Memory(MemoryPipeline),
    /// The running ledger, through its queries (real mode).
    Ledger {
        /// The ledger's address.
        addr: SocketAddr,
        /// The program (campaigns and creators to ask about).
        program: v1::Program,
    },
}

impl Source {
    /// The figures now.
    pub async fn summary(&self) -> anyhow::Result<Summary> {
        match self {
            Self::Memory(p) => Ok(p.summary()),
            Self::Ledger { addr, program } => ledger_summary(*addr, program).await,
        }
    }
}

/// Events accepted by ingest, by type, from this process's metrics.
fn ingest_counts() -> BTreeMap<String, u64> {
    let text = payoff_runtime::telemetry::metrics_handle().render();
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("payoff_ingest_events_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if !labels.contains("result=\"accepted\"") {
            continue;
        }
        let kind = labels
            .split("type=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("unknown");
        *out.entry(kind.to_owned()).or_default() += value.parse::<f64>().unwrap_or(0.0) as u64;
    }
    out
}

async fn ledger_summary(addr: SocketAddr, program: &v1::Program) -> anyhow::Result<Summary> {
    use payoff_proto::v1::ledger_client::LedgerClient;
    let mut client = LedgerClient::connect(format!("http://{addr}")).await?;
    fn key<T>(m: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        if let Ok(v) = format!("Bearer {DEV_READ_KEY}").parse() {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }
    let decimal = |m: Option<&v1::Money>| {
        m.and_then(|m| m.amount.parse::<Decimal>().ok())
            .unwrap_or_default()
    };
    let mut summary = Summary {
        by_type: ingest_counts(),
        ..Summary::default()
    };
    let mut tiers = BTreeMap::new();
    for c in &program.campaigns {
        let kpis = client
            .get_campaign_kpis(key(v1::GetCampaignKpisRequest {
                campaign_id: c.id.clone(),
                range: None,
                creator_id: String::new(),
            }))
            .await?
            .into_inner();
        let Some(total) = kpis.total else { continue };
        summary.credited_orders += total.credited_orders;
        let totals = KpiTotals {
            revenue: decimal(total.revenue.as_ref()),
            cost: decimal(total.cost.as_ref()),
            orders: Decimal::from(total.credited_orders),
            clicks: total.unique_clicks,
            ..KpiTotals::default()
        };
        summary.per_campaign.insert(c.id.clone(), totals);
    }
    for creator in &program.creators {
        let b = client
            .get_balance(key(v1::GetBalanceRequest {
                creator_id: creator.id.clone(),
                campaign_id: String::new(),
                as_of: None,
            }))
            .await?
            .into_inner();
        let earned: Decimal = b
            .currencies
            .iter()
            .map(|c| decimal(c.pending.as_ref()) + decimal(c.approved.as_ref()))
            .sum();
        summary.per_creator.insert(creator.id.clone(), earned);
        for c in &program.campaigns {
            let Ok(progress) = client
                .get_tier_progress(key(v1::GetTierProgressRequest {
                    creator_id: creator.id.clone(),
                    campaign_id: c.id.clone(),
                    period: String::new(),
                }))
                .await
            else {
                continue;
            };
            let p = progress.into_inner();
            let plan = p
                .plans
                .iter()
                .find(|plan| !plan.next_threshold.is_empty())
                .or(p.plans.first());
            if p.count == 0 && plan.is_none() {
                continue;
            }
            let line = tier_line(
                &c.id,
                p.count,
                plan.map(|p| p.current_rate.as_str()),
                plan.map(|p| p.next_threshold.as_str()),
                plan.map(|p| p.remaining.as_str()),
            );
            let has_next = plan.is_some_and(|p| !p.next_threshold.is_empty());
            let orders = i64::try_from(p.count).unwrap_or(i64::MAX);
            keep_best_tier(
                &mut tiers,
                &creator.id,
                tier_rank(has_next, orders, &c.id),
                line,
            );
        }
    }
    summary.tiers = tiers.into_iter().map(|(c, (_, t))| (c, t)).collect();
    Ok(summary)
}

/// A running `payoff dev` against Kafka and Cassandra.
pub struct RunningReal {
    /// Ingest's gRPC address.
    pub ingest: SocketAddr,
    /// The ledger's gRPC address.
    pub ledger: SocketAddr,
    /// Ingest's /metrics address.
    pub metrics: SocketAddr,
    /// The program.
    pub program: v1::Program,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _keys: tempfile::TempDir,
}

impl RunningReal {
    /// Waits for every service to stop (after `shutdown`).
    pub async fn join(self) -> anyhow::Result<()> {
        for t in self.tasks {
            t.await.context("a service of payoff dev panicked")??;
        }
        Ok(())
    }
}

fn dev_keys(tenant: &TenantId) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("api-keys.json");
    std::fs::write(
        &path,
        serde_json::json!({"keys": [
            {"id": "dev-storefront", "tenant": tenant.as_str(), "role": "ingest", "sha256": hash_secret(DEV_INGEST_KEY)},
            {"id": "dev-dashboard", "tenant": tenant.as_str(), "role": "read", "sha256": hash_secret(DEV_READ_KEY)},
        ]})
        .to_string(),
    )?;
    Ok((dir, path))
}

/// Starts ingest, the attributor and the ledger in this process against Kafka and
/// Cassandra: creates the topics and the schema if needed and publishes the program.
pub async fn start_real(
    args: &DevArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<RunningReal> {
    use payoff_adapters::topology::{self, Topics};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let text = std::fs::read_to_string(&args.program)
        .with_context(|| format!("cannot read the program {}", args.program.display()))?;
    let mut proto: v1::Program = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a payoff.v1.Program", args.program.display()))?;
    payoff_proto::convert::program(&proto)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.program.display()))?;
    let tenant = TenantId::parse("tenant_id", &proto.tenant_id)
        .map_err(|v| anyhow::anyhow!("{}: {v}", args.program.display()))?;
    if proto.version == 0 {
        proto.version = 1;
    }
    crate::migrate::run(&crate::migrate::MigrateArgs {
        kafka_brokers: Some(args.kafka_brokers.clone()),
        scylla_nodes: Some(args.scylla_nodes.clone()),
        topic_prefix: args.topic_prefix.clone(),
        partitions: args.partitions,
        replication: 1,
        keyspace: args.keyspace.clone(),
        cql_replication: 1,
    })
    .await?;
    let topics = Topics::with_prefix(&args.topic_prefix);
    let mut config = payoff_adapters::kafka::base_config(&args.kafka_brokers, "payoff-dev")?;
    config.set("enable.idempotence", "true").set("acks", "all");
    let producer: FutureProducer = config.create()?;
    let key = topology::key(&[tenant.as_str(), &proto.version.to_string()]);
    let payload = proto.encode_to_vec();
    producer
        .send(
            FutureRecord::to(&topics.programs)
                .key(&key)
                .payload(&payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .context("publish the program")?;
    let (keys_dir, keys_path) = dev_keys(&tenant)?;
    let keys = keys_path.display().to_string();
    let mut tasks = Vec::new();

    let ingest = payoff_ingest::bind(
        <payoff_ingest::Config as clap::Parser>::try_parse_from([
            "payoff-ingest",
            "--listen",
            &args.ingest_listen.to_string(),
            "--metrics-listen",
            &args.metrics_listen.to_string(),
            "--api-keys",
            &keys,
            "--pii-secret",
            "payoff-dev-only-secret",
            "--kafka-brokers",
            &args.kafka_brokers,
            "--topic-prefix",
            &args.topic_prefix,
        ])?,
        shutdown.clone(),
    )
    .await?;
    let (ingest_addr, metrics_addr) = (ingest.grpc_addr, ingest.metrics_addr);
    tasks.push(tokio::spawn(async move {
        ingest.serve().await.map_err(anyhow::Error::from)
    }));

    let attributor = <payoff_attributor::Config as clap::Parser>::try_parse_from([
        "payoff-attributor",
        "--kafka-brokers",
        &args.kafka_brokers,
        "--topic-prefix",
        &args.topic_prefix,
        "--group-id",
        &format!("{}dev-attributor", args.topic_prefix),
        "--instance-id",
        &format!("{}dev-0", args.topic_prefix),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ])?;
    {
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            payoff_attributor::run(attributor, shutdown)
                .await
                .map_err(anyhow::Error::from)
        }));
    }
    let ledger = payoff_ledger::bind(
        <payoff_ledger::Config as clap::Parser>::try_parse_from([
            "payoff-ledger",
            "--kafka-brokers",
            &args.kafka_brokers,
            "--scylla-nodes",
            &args.scylla_nodes,
            "--keyspace",
            &args.keyspace,
            "--topic-prefix",
            &args.topic_prefix,
            "--group-id",
            &format!("{}dev-ledger", args.topic_prefix),
            "--listen",
            &args.ledger_listen.to_string(),
            "--metrics-listen",
            "127.0.0.1:0",
            "--api-keys",
            &keys,
        ])?,
        shutdown.clone(),
    )
    .await?;
    let ledger_addr = ledger.grpc_addr;
    tasks.push(tokio::spawn(async move {
        ledger.serve().await.map_err(anyhow::Error::from)
    }));
    Ok(RunningReal {
        ingest: ingest_addr,
        ledger: ledger_addr,
        metrics: metrics_addr,
        program: proto,
        tasks,
        _keys: keys_dir,
    })
}

/// Runs `payoff dev` until Ctrl-C.
pub async fn run(args: &DevArgs) -> anyhow::Result<()> {
    let real = !args.kafka_brokers.trim().is_empty() || !args.scylla_nodes.trim().is_empty();
    if real && (args.kafka_brokers.trim().is_empty() || args.scylla_nodes.trim().is_empty()) {
        bail!("give both --kafka-brokers and --scylla-nodes (or neither, for the in-memory mode)");
    }
    let shutdown = payoff_runtime::shutdown::on_signal();
    if real {
        let running = start_real(args, shutdown.clone()).await?;
        eprintln!(
            "payoff dev: ingest, attributor and ledger against Kafka {} and Cassandra {} (keyspace {})",
            args.kafka_brokers, args.scylla_nodes, args.keyspace
        );
        announce(running.ingest, running.ledger, running.metrics);
        let source = Source::Ledger {
            addr: running.ledger,
            program: running.program.clone(),
        };
        let simulator = simulate(args, running.ingest, &shutdown);
        show(args, &source, &shutdown, "Kafka + Cassandra").await;
        eprintln!("payoff dev: stopping");
        if let Some(simulator) = simulator {
            simulator.await.context("the simulator panicked")??;
        }
        return running.join().await;
    }
    let running = start_memory(args, shutdown.clone()).await?;
    eprintln!(
        "payoff dev: everything in memory; nothing is durable (give --kafka-brokers and --scylla-nodes for the real services)"
    );
    announce(running.ingest, running.ledger, running.metrics);
    let simulator = simulate(args, running.ingest, &shutdown);
    show(
        args,
        &Source::Memory(running.pipeline.clone()),
        &shutdown,
        "in memory, nothing is durable",
    )
    .await;
    eprintln!("payoff dev: stopping");
    if let Some(simulator) = simulator {
        simulator.await.context("the simulator panicked")??;
    }
    running.join().await
}

fn announce(ingest: SocketAddr, ledger: SocketAddr, metrics: SocketAddr) {
    eprintln!("  ingest  gRPC  {ingest}  (key: {DEV_INGEST_KEY})");
    eprintln!("  ledger  gRPC  {ledger}  (key: {DEV_READ_KEY})");
    eprintln!("  metrics       http://{metrics}/metrics");
    eprintln!(
        "  try: grpcurl -plaintext -H 'authorization: Bearer {DEV_READ_KEY}' -d '{{\"creator_id\":\"anna\"}}' {ledger} payoff.v1.Ledger/GetBalance"
    );
}

/// Draws the summary every `--refresh` until `shutdown`.
async fn show(args: &DevArgs, source: &Source, shutdown: &CancellationToken, mode: &str) {
    let started = std::time::Instant::now();
    let mut previous = Summary::default();
    let mut tick = tokio::time::interval(args.refresh);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let now = match source.summary().await {
                    Ok(now) => now,
                    Err(e) => {
                        eprintln!("payoff dev: summary unavailable: {e:#}");
                        continue;
                    }
                };
                let screen = render(&now, started.elapsed(), &previous, mode);
                if args.plain {
                    println!("{screen}");
                } else {
                    // Clear the screen and draw from the top: a summary that refreshes in place.
                    print!("\x1b[2J\x1b[H{screen}");
                }
                previous = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Both pipelines offer their campaigns in their own order; the line kept must not
    /// depend on it.
    #[test]
    fn the_tier_line_kept_does_not_depend_on_the_order_offered() {
        let offers = [
            (tier_rank(false, 9, "summer"), "summer: 9 orders"),
            (tier_rank(true, 2, "spring"), "spring: 2 orders, next tier"),
            (tier_rank(true, 5, "skin"), "skin: 5 orders, next tier"),
            (
                tier_rank(true, 5, "ambassador"),
                "ambassador: 5 orders, next tier",
            ),
        ];
        let mut kept = BTreeSet::new();
        for rotation in 0..offers.len() {
            for reverse in [false, true] {
                let mut order: Vec<_> = offers
                    .iter()
                    .cycle()
                    .skip(rotation)
                    .take(offers.len())
                    .collect();
                if reverse {
                    order.reverse();
                }
                let mut tiers = BTreeMap::new();
                for (rank, line) in order {
                    keep_best_tier(&mut tiers, "anna", rank.clone(), (*line).to_owned());
                }
                kept.insert(tiers.remove("anna").map(|(_, line)| line));
            }
        }
        // A next tier beats more orders; equal ranks go to the first campaign by id.
        assert_eq!(
            kept,
            BTreeSet::from([Some("ambassador: 5 orders, next tier".to_owned())])
        );
    }
}
