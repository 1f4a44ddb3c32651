//! The ledger's projections in ScyllaDB / Cassandra: what a folded credit writes, and
//! the reads the queries need.
//!
//! Every row has a key derived from what caused it (entry id, credit id, fact index), so
//! writing a row again writes the same values: a re-fold after a crash changes nothing.
//! Nothing is updated in place or deleted; status is derived at query time. Partitions
//! are bounded by month (entries, KPI deltas) or by (campaign, creator, period).

use std::{collections::BTreeSet, sync::Arc};

use futures::TryStreamExt as _;
use payoff_adapters::AdapterError;
use payoff_core::{
    credit::CreditKind,
    ids::TenantId,
    kpi::KpiDelta,
    ledger::{LedgerEntry, LedgerFact},
    time::{Period, PeriodKind, Timestamp},
};
use payoff_proto::{
    convert::{credit_to_proto, entry_from_proto, entry_to_proto},
    v1,
};
use prost::Message as _;
use rust_decimal::Decimal;
use scylla::{client::session::Session, statement::prepared::PreparedStatement};

use crate::{error::LedgerError, fold::Folded, metrics};

/// The month bucket ("YYYY-MM", UTC) of an instant.
pub fn month(at: Timestamp) -> String {
    Period::containing(PeriodKind::Month, at).label()
}

/// The ledger's reads, from ScyllaDB / Cassandra or from memory.
#[derive(Clone)]
pub enum Store {
    /// The CQL store (the service).
    Cql(Box<CqlStore>),
    /// An in-memory ledger (`payoff dev` without infrastructure).
    Memory(Arc<dyn MemoryView>),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cql(s) => s.fmt(f),
            Self::Memory(_) => f.write_str("Store::Memory"),
        }
    }
}

/// What the queries read, from a ledger kept in memory (no IO, so no errors).
pub trait MemoryView: Send + Sync {
    /// Every entry of a creator, in (time, id) order.
    fn creator_entries(&self, tenant: &str, creator: &str) -> Vec<LedgerEntry>;
    /// Every entry of a campaign, in (time, id) order.
    fn campaign_entries(&self, tenant: &str, campaign: &str) -> Vec<LedgerEntry>;
    /// The entries and credits of one order.
    fn order(&self, tenant: &str, order: &str) -> (Vec<LedgerEntry>, Vec<v1::Credit>);
    /// Net orders and revenue of a creator's tier progress in a period (by label).
    fn tier(&self, tenant: &str, campaign: &str, creator: &str, period: &str) -> (i64, Decimal);
    /// Every KPI delta of a campaign.
    fn kpi_deltas(&self, tenant: &str, campaign: &str) -> Vec<KpiDelta>;
}

impl Store {
    fn cql(&self) -> Result<&CqlStore, LedgerError> {
        match self {
            Self::Cql(s) => Ok(s),
            Self::Memory(_) => Err(LedgerError::Internal(
                "the in-memory ledger is written by its owner, not through the store".into(),
            )),
        }
    }

    /// See [`CqlStore::write`].
    pub async fn write(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        batch: &[Folded],
        folded: u64,
    ) -> Result<(), LedgerError> {
        self.cql()?
            .write(group, topic, partition, batch, folded)
            .await
    }

    /// See [`CqlStore::progress`].
    pub async fn progress(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<u64, LedgerError> {
        self.cql()?.progress(group, topic, partition).await
    }

    /// Every entry of a creator (all campaigns), in (time, id) order.
    pub async fn creator_entries(
        &self,
        tenant: &str,
        creator: &str,
    ) -> Result<Arc<Vec<LedgerEntry>>, LedgerError> {
        match self {
            Self::Cql(s) => s.entries(Scope::Creator, tenant, creator).await,
            Self::Memory(m) => Ok(Arc::new(m.creator_entries(tenant, creator))),
        }
    }

    /// Every entry of a campaign (all creators), in (time, id) order.
    pub async fn campaign_entries(
        &self,
        tenant: &str,
        campaign: &str,
    ) -> Result<Arc<Vec<LedgerEntry>>, LedgerError> {
        match self {
            Self::Cql(s) => s.entries(Scope::Campaign, tenant, campaign).await,
            Self::Memory(m) => Ok(Arc::new(m.campaign_entries(tenant, campaign))),
        }
    }

    /// The entries and credits of one order.
    pub async fn order(
        &self,
        tenant: &str,
        order: &str,
    ) -> Result<(Vec<LedgerEntry>, Vec<v1::Credit>), LedgerError> {
        match self {
            Self::Cql(s) => s.order(tenant, order).await,
            Self::Memory(m) => Ok(m.order(tenant, order)),
        }
    }

    /// Net orders and revenue of a creator's tier progress in a period.
    pub async fn tier(
        &self,
        tenant: &str,
        campaign: &str,
        creator: &str,
        period: &str,
    ) -> Result<(i64, Decimal), LedgerError> {
        match self {
            Self::Cql(s) => s.tier(tenant, campaign, creator, period).await,
            Self::Memory(m) => Ok(m.tier(tenant, campaign, creator, period)),
        }
    }

    /// Every KPI delta of a campaign.
    pub async fn kpi_deltas(
        &self,
        tenant: &str,
        campaign: &str,
    ) -> Result<Vec<KpiDelta>, LedgerError> {
        match self {
            Self::Cql(s) => s.kpi_deltas(tenant, campaign).await,
            Self::Memory(m) => Ok(m.kpi_deltas(tenant, campaign)),
        }
    }
}

/// Whose entries: a creator's (all campaigns) or a campaign's (all creators).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Scope {
    Creator,
    Campaign,
}

impl Scope {
    fn as_str(self) -> &'static str {
        match self {
            Self::Creator => "creator",
            Self::Campaign => "campaign",
        }
    }
}

/// For each partition of `credits`, the fold progress of the last batch that wrote an
/// entry of a creator or campaign, in partition order.
type Marks = Vec<(i32, i64)>;

/// The entries of one creator or campaign as read under `marks`.
#[derive(Debug)]
struct Cached {
    marks: Marks,
    entries: Arc<Vec<LedgerEntry>>,
}

#[derive(Debug, Clone)]
struct EntryWeight;

impl quick_cache::Weighter<(Scope, String, String), Arc<Cached>> for EntryWeight {
    fn weight(&self, _key: &(Scope, String, String), value: &Arc<Cached>) -> u64 {
        value.entries.len().max(1) as u64
    }
}

type EntryCache = quick_cache::sync::Cache<(Scope, String, String), Arc<Cached>, EntryWeight>;

/// The query cache: every entry of recently asked creators and campaigns, valid while
/// their projection marks are unchanged. A query reads the marks (one small partition),
/// then the entries only when the marks moved: the fold writes marks after the entries
/// they cover, so entries read after marks hold at least what the marks say.
#[derive(Clone)]
struct QueryCache(Option<Arc<EntryCache>>);

impl std::fmt::Debug for QueryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(c) => write!(f, "QueryCache({} entries)", c.weight()),
            None => f.write_str("QueryCache(off)"),
        }
    }
}

/// The prepared statements of one keyspace, and the query cache.
#[derive(Debug, Clone)]
pub struct CqlStore {
    session: Arc<Session>,
    cache: QueryCache,
    put_mark: PreparedStatement,
    get_marks: PreparedStatement,
    insert_by_creator: PreparedStatement,
    insert_by_campaign: PreparedStatement,
    insert_creator_month: PreparedStatement,
    insert_campaign_month: PreparedStatement,
    insert_order_entry: PreparedStatement,
    insert_order_credit: PreparedStatement,
    insert_tier_change: PreparedStatement,
    insert_kpi: PreparedStatement,
    put_progress: PreparedStatement,
    get_progress: PreparedStatement,
    creator_months: PreparedStatement,
    campaign_months: PreparedStatement,
    by_creator: PreparedStatement,
    by_campaign: PreparedStatement,
    order_entries: PreparedStatement,
    order_credits: PreparedStatement,
    tier_changes: PreparedStatement,
    kpis: PreparedStatement,
}

async fn prepare(
    session: &Session,
    keyspace: &str,
    text: &str,
) -> Result<PreparedStatement, LedgerError> {
    session
        .prepare(text.replace("{ks}", keyspace))
        .await
        .map_err(|e| LedgerError::Store(AdapterError::CqlPrepare(Box::new(e))))
}

fn cql(op: &'static str) -> impl FnOnce(scylla::errors::ExecutionError) -> LedgerError {
    move |e| LedgerError::Store(AdapterError::cql(op, e))
}

fn rows(op: &'static str) -> impl Fn(String) -> LedgerError {
    move |e| LedgerError::Store(AdapterError::Config(format!("{op}: {e}")))
}

impl CqlStore {
    /// Prepares every statement against `keyspace` (migrated beforehand), without a
    /// query cache.
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self, LedgerError> {
        payoff_adapters::cql::validate_identifier(keyspace).map_err(LedgerError::Store)?;
        let prepare = |text: &'static str| prepare(&session, keyspace, text);
        Ok(Self {
            cache: QueryCache(None),
            put_mark: prepare("INSERT INTO {ks}.projection_marks (tenant, scope, id, source, mark) VALUES (?, ?, ?, ?, ?)").await?,
            get_marks: prepare("SELECT source, mark FROM {ks}.projection_marks WHERE tenant = ? AND scope = ? AND id = ?").await?,
            insert_by_creator: prepare("INSERT INTO {ks}.entries_by_creator (tenant, creator, month, occurred_at, entry_id, campaign, body) VALUES (?, ?, ?, ?, ?, ?, ?)").await?,
            insert_by_campaign: prepare("INSERT INTO {ks}.entries_by_campaign (tenant, campaign, month, occurred_at, entry_id, creator, body) VALUES (?, ?, ?, ?, ?, ?, ?)").await?,
            insert_creator_month: prepare("INSERT INTO {ks}.creator_months (tenant, creator, month) VALUES (?, ?, ?)").await?,
            insert_campaign_month: prepare("INSERT INTO {ks}.campaign_months (tenant, campaign, month) VALUES (?, ?, ?)").await?,
            insert_order_entry: prepare("INSERT INTO {ks}.order_entries (tenant, order_id, entry_id, body) VALUES (?, ?, ?, ?)").await?,
            insert_order_credit: prepare("INSERT INTO {ks}.order_credits (tenant, order_id, credit_id, body) VALUES (?, ?, ?, ?)").await?,
            insert_tier_change: prepare("INSERT INTO {ks}.tier_changes (tenant, campaign, creator, period, at, change_id, orders, revenue) VALUES (?, ?, ?, ?, ?, ?, ?, ?)").await?,
            insert_kpi: prepare("INSERT INTO {ks}.kpi_deltas (tenant, campaign, month, at, delta_id, body) VALUES (?, ?, ?, ?, ?, ?)").await?,
            put_progress: prepare("INSERT INTO {ks}.fold_progress (consumer_group, topic, partition, folded) VALUES (?, ?, ?, ?)").await?,
            get_progress: prepare("SELECT folded FROM {ks}.fold_progress WHERE consumer_group = ? AND topic = ? AND partition = ?").await?,
            creator_months: prepare("SELECT month FROM {ks}.creator_months WHERE tenant = ? AND creator = ?").await?,
            campaign_months: prepare("SELECT month FROM {ks}.campaign_months WHERE tenant = ? AND campaign = ?").await?,
            by_creator: prepare("SELECT body FROM {ks}.entries_by_creator WHERE tenant = ? AND creator = ? AND month = ?").await?,
            by_campaign: prepare("SELECT body FROM {ks}.entries_by_campaign WHERE tenant = ? AND campaign = ? AND month = ?").await?,
            order_entries: prepare("SELECT body FROM {ks}.order_entries WHERE tenant = ? AND order_id = ?").await?,
            order_credits: prepare("SELECT body FROM {ks}.order_credits WHERE tenant = ? AND order_id = ?").await?,
            tier_changes: prepare("SELECT orders, revenue FROM {ks}.tier_changes WHERE tenant = ? AND campaign = ? AND creator = ? AND period = ?").await?,
            kpis: prepare("SELECT body FROM {ks}.kpi_deltas WHERE tenant = ? AND campaign = ? AND month = ?").await?,
            session,
        })
    }

    /// Keeps up to `entries` ledger entries of recently asked creators and campaigns in
    /// memory (0: none), each valid while its projection marks are unchanged.
    #[must_use]
    pub fn with_cache(mut self, entries: u64) -> Self {
        self.cache = QueryCache((entries > 0).then(|| {
            let items = usize::try_from(entries / 100).unwrap_or(usize::MAX).max(16);
            Arc::new(EntryCache::with_weighter(items, entries, EntryWeight))
        }));
        self
    }

    /// Writes every row a batch of folded credits produced (concurrently; each write is
    /// idempotent), then the projection marks of the creators and campaigns whose entries
    /// it wrote, then records `folded` as the partition's fold progress.
    pub async fn write(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        batch: &[Folded],
        folded: u64,
    ) -> Result<(), LedgerError> {
        let mut writes = Vec::new();
        for f in batch {
            self.rows_of(f, &mut writes)?;
        }
        self.execute_all(&writes, "write ledger row").await?;
        let folded = i64::try_from(folded).unwrap_or(i64::MAX);
        let touched: BTreeSet<(&str, Scope, &str)> = batch
            .iter()
            .flat_map(|f| {
                f.facts.iter().filter_map(move |fact| match fact {
                    LedgerFact::Entry(e) => Some([
                        (f.tenant.as_str(), Scope::Creator, e.creator.as_str()),
                        (f.tenant.as_str(), Scope::Campaign, e.campaign.as_str()),
                    ]),
                    _ => None,
                })
            })
            .flatten()
            .collect();
        let marks: Vec<_> = touched
            .into_iter()
            .map(|(tenant, scope, id)| {
                (
                    &self.put_mark,
                    Row::Mark(
                        tenant.to_owned(),
                        scope.as_str().to_owned(),
                        id.to_owned(),
                        partition,
                        folded,
                    ),
                )
            })
            .collect();
        self.execute_all(&marks, "write projection mark").await?;
        self.session
            .execute_unpaged(&self.put_progress, (group, topic, partition, folded))
            .await
            .map_err(cql("write fold progress"))?;
        Ok(())
    }

    /// Runs idempotent writes, at most 64 in flight; returns once all are done.
    async fn execute_all(
        &self,
        writes: &[(&PreparedStatement, Row)],
        op: &'static str,
    ) -> Result<(), LedgerError> {
        use futures::StreamExt as _;
        for chunk in writes.chunks(64) {
            let mut pending = futures::stream::FuturesUnordered::new();
            for (statement, values) in chunk {
                pending.push(self.session.execute_unpaged(statement, values));
            }
            while let Some(result) = pending.next().await {
                result.map_err(cql(op))?;
            }
        }
        Ok(())
    }

    fn rows_of<'a>(
        &'a self,
        f: &Folded,
        out: &mut Vec<(&'a PreparedStatement, Row)>,
    ) -> Result<(), LedgerError> {
        let tenant = f.tenant.as_str().to_owned();
        let credit_id = f.input.cause();
        if let Some(credit) = f.input.credit()
            && let CreditKind::Order { order, .. } | CreditKind::Reversal { order, .. } =
                &credit.kind
        {
            out.push((
                &self.insert_order_credit,
                Row::OrderCredit(
                    tenant.clone(),
                    order.as_str().to_owned(),
                    credit_id.clone(),
                    credit_to_proto(&f.tenant, credit).encode_to_vec(),
                ),
            ));
        }
        for (i, fact) in f.facts.iter().enumerate() {
            match fact {
                LedgerFact::Entry(e) => self.entry_rows(&f.tenant, e, out),
                LedgerFact::Progress {
                    at,
                    campaign,
                    creator,
                    period,
                    orders,
                    revenue,
                } => out.push((
                    &self.insert_tier_change,
                    Row::Tier(
                        tenant.clone(),
                        campaign.as_str().to_owned(),
                        creator.as_str().to_owned(),
                        period.label(),
                        at.millis(),
                        format!("{credit_id}/{i}"),
                        *orders,
                        revenue.to_string(),
                    ),
                )),
                LedgerFact::Kpi(k) => {
                    let body = serde_json::to_string(k)
                        .map_err(|e| LedgerError::Internal(format!("kpi delta: {e}")))?;
                    out.push((
                        &self.insert_campaign_month,
                        Row::Month(tenant.clone(), k.campaign.as_str().to_owned(), month(k.at)),
                    ));
                    out.push((
                        &self.insert_kpi,
                        Row::Kpi(
                            tenant.clone(),
                            k.campaign.as_str().to_owned(),
                            month(k.at),
                            k.at.millis(),
                            format!("{credit_id}/{i}"),
                            body,
                        ),
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn entry_rows<'a>(
        &'a self,
        tenant: &TenantId,
        e: &LedgerEntry,
        out: &mut Vec<(&'a PreparedStatement, Row)>,
    ) {
        let body = entry_to_proto(tenant, e, None).encode_to_vec();
        let t = tenant.as_str().to_owned();
        let (creator, campaign, m, id) = (
            e.creator.as_str().to_owned(),
            e.campaign.as_str().to_owned(),
            month(e.occurred_at),
            e.id.to_text(),
        );
        out.push((
            &self.insert_creator_month,
            Row::Month(t.clone(), creator.clone(), m.clone()),
        ));
        out.push((
            &self.insert_campaign_month,
            Row::Month(t.clone(), campaign.clone(), m.clone()),
        ));
        out.push((
            &self.insert_by_creator,
            Row::Entry(
                t.clone(),
                creator.clone(),
                m.clone(),
                e.occurred_at.millis(),
                id.clone(),
                campaign.clone(),
                body.clone(),
            ),
        ));
        out.push((
            &self.insert_by_campaign,
            Row::Entry(
                t.clone(),
                campaign,
                m,
                e.occurred_at.millis(),
                id.clone(),
                creator,
                body.clone(),
            ),
        ));
        if let Some(order) = &e.order {
            out.push((
                &self.insert_order_entry,
                Row::OrderEntry(t, order.as_str().to_owned(), id, body),
            ));
        }
    }

    /// Credits of a partition already folded and stored (0 when none).
    pub async fn progress(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<u64, LedgerError> {
        let result = self
            .session
            .execute_unpaged(&self.get_progress, (group, topic, partition))
            .await
            .map_err(cql("read fold progress"))?
            .into_rows_result()
            .map_err(|e| rows("fold progress")(e.to_string()))?;
        let folded = result
            .maybe_first_row::<(i64,)>()
            .map_err(|e| rows("fold progress")(e.to_string()))?
            .map_or(0, |(n,)| u64::try_from(n).unwrap_or_default());
        Ok(folded)
    }

    async fn strings(
        &self,
        statement: &PreparedStatement,
        values: (&str, &str),
        op: &'static str,
    ) -> Result<Vec<String>, LedgerError> {
        self.session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(|e| rows(op)(e.to_string()))?
            .rows_stream::<(String,)>()
            .map_err(|e| rows(op)(e.to_string()))?
            .map_ok(|(s,)| s)
            .try_collect()
            .await
            .map_err(|e| rows(op)(e.to_string()))
    }

    async fn bodies<V: scylla::serialize::row::SerializeRow + Send + Sync>(
        &self,
        statement: &PreparedStatement,
        values: V,
        op: &'static str,
    ) -> Result<Vec<Vec<u8>>, LedgerError> {
        self.session
            .execute_iter(statement.clone(), values)
            .await
            .map_err(|e| rows(op)(e.to_string()))?
            .rows_stream::<(Vec<u8>,)>()
            .map_err(|e| rows(op)(e.to_string()))?
            .map_ok(|(b,)| b)
            .try_collect()
            .await
            .map_err(|e| rows(op)(e.to_string()))
    }

    /// The projection marks of a creator or campaign.
    async fn marks(&self, scope: Scope, tenant: &str, id: &str) -> Result<Marks, LedgerError> {
        let op = "projection marks";
        let result = self
            .session
            .execute_unpaged(&self.get_marks, (tenant, scope.as_str(), id))
            .await
            .map_err(cql(op))?
            .into_rows_result()
            .map_err(|e| rows(op)(e.to_string()))?;
        let mut marks: Marks = result
            .rows::<(i32, i64)>()
            .map_err(|e| rows(op)(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| rows(op)(e.to_string()))?;
        marks.sort_unstable();
        Ok(marks)
    }

    /// Every entry of a creator (all campaigns) or campaign (all creators), in (time, id)
    /// order: from the cache while the marks are unchanged, else from the store.
    async fn entries(
        &self,
        scope: Scope,
        tenant: &str,
        id: &str,
    ) -> Result<Arc<Vec<LedgerEntry>>, LedgerError> {
        let Some(cache) = &self.cache.0 else {
            return Ok(Arc::new(self.read_entries(scope, tenant, id).await?));
        };
        let marks = self.marks(scope, tenant, id).await?;
        let key = (scope, tenant.to_owned(), id.to_owned());
        if let Some(hit) = cache.get(&key)
            && hit.marks == marks
        {
            ::metrics::counter!(metrics::QUERY_CACHE, "result" => "hit").increment(1);
            return Ok(hit.entries.clone());
        }
        ::metrics::counter!(metrics::QUERY_CACHE, "result" => "miss").increment(1);
        let entries = Arc::new(self.read_entries(scope, tenant, id).await?);
        // Without marks (entries older than them, or none) nothing says when they change.
        if !marks.is_empty() {
            cache.insert(
                key,
                Arc::new(Cached {
                    marks,
                    entries: entries.clone(),
                }),
            );
        }
        Ok(entries)
    }

    /// Every entry of a creator or campaign, read from the store month by month.
    async fn read_entries(
        &self,
        scope: Scope,
        tenant: &str,
        id: &str,
    ) -> Result<Vec<LedgerEntry>, LedgerError> {
        let (months, by_month, op) = match scope {
            Scope::Creator => (&self.creator_months, &self.by_creator, "entries by creator"),
            Scope::Campaign => (
                &self.campaign_months,
                &self.by_campaign,
                "entries by campaign",
            ),
        };
        let mut months = self.strings(months, (tenant, id), "entry months").await?;
        months.sort();
        let mut out = Vec::new();
        for m in months {
            for body in self.bodies(by_month, (tenant, id, m.as_str()), op).await? {
                out.push(decode_entry(&body)?);
            }
        }
        out.sort_by_key(|e| (e.occurred_at, e.id));
        Ok(out)
    }

    /// The entries and credits of one order.
    pub async fn order(
        &self,
        tenant: &str,
        order: &str,
    ) -> Result<(Vec<LedgerEntry>, Vec<v1::Credit>), LedgerError> {
        let mut entries = Vec::new();
        for body in self
            .bodies(&self.order_entries, (tenant, order), "order entries")
            .await?
        {
            entries.push(decode_entry(&body)?);
        }
        entries.sort_by_key(|e| (e.occurred_at, e.id));
        let mut credits = Vec::new();
        for body in self
            .bodies(&self.order_credits, (tenant, order), "order credits")
            .await?
        {
            credits.push(
                v1::Credit::decode(body.as_slice())
                    .map_err(|e| LedgerError::Internal(format!("stored credit: {e}")))?,
            );
        }
        Ok((entries, credits))
    }

    /// Net orders and revenue of a creator's tier progress in a period.
    pub async fn tier(
        &self,
        tenant: &str,
        campaign: &str,
        creator: &str,
        period: &str,
    ) -> Result<(i64, Decimal), LedgerError> {
        let op = "tier changes";
        let changes: Vec<(i64, String)> = self
            .session
            .execute_iter(
                self.tier_changes.clone(),
                (tenant, campaign, creator, period),
            )
            .await
            .map_err(|e| rows(op)(e.to_string()))?
            .rows_stream::<(i64, String)>()
            .map_err(|e| rows(op)(e.to_string()))?
            .try_collect()
            .await
            .map_err(|e| rows(op)(e.to_string()))?;
        let mut orders = 0;
        let mut revenue = Decimal::ZERO;
        for (o, r) in changes {
            orders += o;
            revenue += r
                .parse::<Decimal>()
                .map_err(|e| LedgerError::Internal(format!("stored revenue {r:?}: {e}")))?;
        }
        Ok((orders, revenue))
    }

    /// Every KPI delta of a campaign.
    pub async fn kpi_deltas(
        &self,
        tenant: &str,
        campaign: &str,
    ) -> Result<Vec<KpiDelta>, LedgerError> {
        let mut months = self
            .strings(&self.campaign_months, (tenant, campaign), "campaign months")
            .await?;
        months.sort();
        let mut out = Vec::new();
        for m in months {
            let op = "kpi deltas";
            let bodies: Vec<String> = self
                .session
                .execute_iter(self.kpis.clone(), (tenant, campaign, m.as_str()))
                .await
                .map_err(|e| rows(op)(e.to_string()))?
                .rows_stream::<(String,)>()
                .map_err(|e| rows(op)(e.to_string()))?
                .map_ok(|(s,)| s)
                .try_collect()
                .await
                .map_err(|e| rows(op)(e.to_string()))?;
            for body in bodies {
                out.push(
                    serde_json::from_str(&body)
                        .map_err(|e| LedgerError::Internal(format!("stored kpi delta: {e}")))?,
                );
            }
        }
        Ok(out)
    }
}

fn decode_entry(body: &[u8]) -> Result<LedgerEntry, LedgerError> {
    let proto = v1::LedgerEntry::decode(body)
        .map_err(|e| LedgerError::Internal(format!("stored entry: {e}")))?;
    entry_from_proto(&proto)
        .map(|(_, e)| e)
        .map_err(|e| LedgerError::Internal(format!("stored entry: {e}")))
}

/// The values of one write.
#[derive(Debug)]
enum Row {
    Month(String, String, String),
    Entry(String, String, String, i64, String, String, Vec<u8>),
    OrderEntry(String, String, String, Vec<u8>),
    OrderCredit(String, String, String, Vec<u8>),
    Tier(String, String, String, String, i64, String, i64, String),
    Kpi(String, String, String, i64, String, String),
    Mark(String, String, String, i32, i64),
}

impl scylla::serialize::row::SerializeRow for Row {
    fn serialize(
        &self,
        ctx: &scylla::serialize::row::RowSerializationContext<'_>,
        writer: &mut scylla::serialize::writers::RowWriter<'_>,
    ) -> Result<(), scylla::serialize::SerializationError> {
        match self {
            Self::Month(a, b, c) => (a, b, c).serialize(ctx, writer),
            Self::Entry(a, b, c, d, e, f, g) => (a, b, c, d, e, f, g).serialize(ctx, writer),
            Self::OrderEntry(a, b, c, d) | Self::OrderCredit(a, b, c, d) => {
                (a, b, c, d).serialize(ctx, writer)
            }
            Self::Tier(a, b, c, d, e, f, g, h) => (a, b, c, d, e, f, g, h).serialize(ctx, writer),
            Self::Kpi(a, b, c, d, e, f) => (a, b, c, d, e, f).serialize(ctx, writer),
            Self::Mark(a, b, c, d, e) => (a, b, c, d, e).serialize(ctx, writer),
        }
    }

    fn is_empty(&self) -> bool {
        false
    }
}
