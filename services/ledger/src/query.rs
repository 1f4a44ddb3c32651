//! The `Ledger` gRPC service (SPEC §8): every answer is derived from the stored rows and
//! the query's instant through the core's projections, so status is never stored.
//!
//! Scopes (§11): a `read` or `admin` key reads its tenant; a `creator` key only its own
//! creator; anything outside the caller's scope answers `NOT_FOUND`, like something that
//! does not exist.

use std::{collections::BTreeMap, pin::Pin, time::Instant};

use payoff_core::{
    Violation,
    ids::{CreatorId, DerivedId},
    kpi::{KpiTotals, Kpis},
    ledger::LedgerEntry,
    money::Money,
    projection::{self, KpiReport},
    time::{Period, Timestamp},
};
use payoff_proto::{
    convert::{
        entry_status_to_proto, entry_to_proto, money_to_proto, period, timestamp, to_timestamp,
    },
    v1::{self, ledger_server::Ledger},
};
use payoff_runtime::{
    ServiceError,
    auth::{KeyStore, Principal, Role},
};
use tokio_stream::{Stream, StreamExt as _, wrappers::BroadcastStream};
use tonic::{Request, Response, Status};

use crate::{metrics as m, pipeline::Shared};

/// A creator's tier progress in one campaign and period, from its net counters.
pub(crate) fn tier_to_proto(
    campaign: &payoff_core::program::Campaign,
    creator: &CreatorId,
    period: Period,
    orders: i64,
    revenue: rust_decimal::Decimal,
) -> v1::TierProgress {
    let p = projection::tier_progress(campaign, creator, period, orders, revenue);
    let text = |d: Option<rust_decimal::Decimal>| d.map(|d| d.to_string()).unwrap_or_default();
    v1::TierProgress {
        creator_id: creator.as_str().to_owned(),
        campaign_id: campaign.id.as_str().to_owned(),
        period: period.label(),
        count: u64::try_from(p.orders).unwrap_or_default(),
        revenue: Some(money_to_proto(Money::new(p.revenue, campaign.currency))),
        plans: vec![v1::PlanProgress {
            plan_id: String::new(),
            current_rate: text(p.current_rate),
            next_threshold: text(p.next_threshold),
            remaining: text(p.remaining),
            next_rate: String::new(),
            next_bonus: None,
        }],
    }
}

/// Default and largest page of `ListEntries`.
const PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

/// The `Ledger` service.
#[derive(Clone)]
pub struct LedgerService {
    shared: Shared,
    keys: KeyStore,
}

impl LedgerService {
    /// A service over the store and programs the consumer fills.
    pub fn new(shared: Shared, keys: KeyStore) -> Self {
        Self { shared, keys }
    }

    fn principal<T>(&self, request: &Request<T>) -> Result<Principal, ServiceError> {
        let principal = self.keys.authenticate(request.metadata())?;
        principal.require(&[Role::Read, Role::Creator, Role::Admin], "read the ledger")?;
        Ok(principal)
    }
}

/// The creator a request may see: for creator keys their own (an empty request means
/// "mine"; another creator is `NOT_FOUND`); for tenant keys what was asked.
fn creator_scope(principal: &Principal, asked: &str) -> Result<Option<String>, ServiceError> {
    match (&principal.creator, principal.role) {
        (Some(own), Role::Creator) if asked.is_empty() || asked == own.as_str() => {
            Ok(Some(own.as_str().to_owned()))
        }
        (_, Role::Creator) => Err(ServiceError::NotFound),
        _ if asked.is_empty() => Ok(None),
        _ => Ok(Some(asked.to_owned())),
    }
}

fn required(field: &str, value: Option<String>) -> Result<String, ServiceError> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| {
        ServiceError::Invalid(vec![Violation::new(
            field,
            "required",
            format!("{field} is required"),
        )])
    })
}

fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    )
}

/// Times one method, counting its failures.
async fn timed<T>(
    method: &'static str,
    f: impl Future<Output = Result<T, ServiceError>>,
) -> Result<Response<T>, Status> {
    let started = Instant::now();
    let result = f.await;
    metrics::histogram!(m::QUERY_DURATION, "method" => method)
        .record(started.elapsed().as_secs_f64());
    match result {
        Ok(v) => Ok(Response::new(v)),
        Err(e) => {
            metrics::counter!(m::QUERY_ERRORS, "method" => method, "code" => e.label())
                .increment(1);
            if matches!(e, ServiceError::Unavailable(_) | ServiceError::Internal(_)) {
                tracing::error!(method, error = %e, "query failed");
            }
            Err(e.into())
        }
    }
}

fn range(r: Option<&v1::TimeRange>) -> (Timestamp, Timestamp) {
    let start = r
        .and_then(|r| r.start.as_ref())
        .map_or(Timestamp(i64::MIN), timestamp);
    let end = r
        .and_then(|r| r.end.as_ref())
        .map_or(Timestamp(i64::MAX), timestamp);
    (start, end)
}

fn kpis_to_proto(
    report: &KpiReport,
    currency: Option<payoff_core::money::Currency>,
    unattributed: u64,
) -> v1::Kpis {
    let KpiTotals {
        clicks,
        views,
        likes,
        comments,
        shares,
        leads,
        qualified_leads,
        orders,
        returning_orders,
        revenue,
        cost,
    } = &report.totals;
    let Kpis {
        ctr,
        conversion_rate,
        epc,
        cpa,
        cpl,
        roas,
        roi,
        aov,
        rpm,
        repeat_rate,
        engagement_to_conversion,
    } = &report.kpis;
    let count = |d: &rust_decimal::Decimal| {
        use rust_decimal::prelude::ToPrimitive as _;
        d.round().to_u64().unwrap_or_default()
    };
    let text = |d: &Option<rust_decimal::Decimal>| d.map(|d| d.to_string());
    let money = |d: &rust_decimal::Decimal| currency.map(|c| money_to_proto(Money::new(*d, c)));
    v1::Kpis {
        views: *views,
        likes: *likes,
        comments: *comments,
        shares: *shares,
        clicks: *clicks,
        unique_clicks: *clicks,
        fraud_flagged: 0,
        credited_orders: count(orders),
        returning_customer_orders: count(returning_orders),
        unattributed_orders: unattributed,
        leads: count(leads),
        qualified_leads: count(qualified_leads),
        revenue: money(revenue),
        // Commission without bonuses and base fees is not a KPI counter of the core yet.
        commission: None,
        cost: money(cost),
        ctr: text(ctr),
        conversion_rate: text(conversion_rate),
        epc: text(epc),
        cpa: text(cpa),
        cpl: text(cpl),
        roas: text(roas),
        roi: text(roi),
        aov: text(aov),
        rpm: text(rpm),
        repeat_rate: text(repeat_rate),
        engagement_to_conversion: text(engagement_to_conversion),
    }
}

fn with_statuses(
    entries: &[LedgerEntry],
    tenant: &payoff_core::ids::TenantId,
    as_of: Timestamp,
) -> Vec<v1::LedgerEntry> {
    let statuses = projection::statuses(entries, as_of);
    entries
        .iter()
        .map(|e| with_status(e, tenant, &statuses))
        .collect()
}

fn with_status(
    e: &LedgerEntry,
    tenant: &payoff_core::ids::TenantId,
    statuses: &BTreeMap<DerivedId, projection::EntryStatus>,
) -> v1::LedgerEntry {
    let mut p = entry_to_proto(tenant, e, statuses.get(&e.id).copied());
    if p.status == 0 {
        p.status = entry_status_to_proto(projection::EntryStatus::Posted).into();
    }
    p
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Ledger for LedgerService {
    async fn get_balance(
        &self,
        request: Request<v1::GetBalanceRequest>,
    ) -> Result<Response<v1::Balance>, Status> {
        timed("get_balance", async {
            let principal = self.principal(&request)?;
            let req = request.get_ref();
            let creator = required("creator_id", creator_scope(&principal, &req.creator_id)?)?;
            let as_of = req.as_of.as_ref().map_or_else(now, timestamp);
            let entries = self
                .shared
                .store
                .creator_entries(principal.tenant.as_str(), &creator)
                .await?;
            let entries: Vec<&LedgerEntry> = entries
                .iter()
                .filter(|e| req.campaign_id.is_empty() || e.campaign.as_str() == req.campaign_id)
                .collect();
            let currencies = projection::balances(entries, as_of)
                .into_iter()
                .map(|b| v1::CurrencyBalance {
                    currency: b.currency.code().to_owned(),
                    pending: Some(money_to_proto(b.pending)),
                    approved: Some(money_to_proto(b.approved)),
                    paid: Some(money_to_proto(b.paid)),
                    reversed: Some(money_to_proto(b.reversed)),
                    available: Some(money_to_proto(b.available)),
                })
                .collect();
            Ok(v1::Balance {
                creator_id: creator,
                as_of: Some(to_timestamp(as_of)),
                currencies,
            })
        })
        .await
    }

    async fn list_entries(
        &self,
        request: Request<v1::ListEntriesRequest>,
    ) -> Result<Response<v1::ListEntriesResponse>, Status> {
        timed("list_entries", async {
            let principal = self.principal(&request)?;
            let req = request.get_ref();
            let creator = creator_scope(&principal, &req.creator_id)?;
            let tenant = principal.tenant.as_str();
            let campaign = req.campaign_id.as_str();
            let all = match (&creator, campaign) {
                (Some(c), _) => self.shared.store.creator_entries(tenant, c).await?,
                (None, "") => {
                    return Err(ServiceError::Invalid(vec![Violation::new(
                        "creator_id",
                        "required",
                        "creator_id or campaign_id is required",
                    )]));
                }
                (None, _) => self.shared.store.campaign_entries(tenant, campaign).await?,
            };
            let (start, end) = range(req.range.as_ref());
            let as_of = now();
            // Statuses need the whole history (a reversal, a payout); only the page is
            // converted.
            let statuses = projection::statuses(&all, as_of);
            let entries: Vec<&LedgerEntry> = all
                .iter()
                .filter(|e| {
                    (creator.is_none() || campaign.is_empty() || e.campaign.as_str() == campaign)
                        && e.occurred_at >= start
                        && e.occurred_at < end
                })
                .collect();
            let from = if req.page_token.is_empty() {
                0
            } else {
                req.page_token.parse::<usize>().map_err(|_| {
                    ServiceError::Invalid(vec![Violation::new(
                        "page_token",
                        "malformed",
                        "not a token this service issued",
                    )])
                })?
            };
            let size = match req.page_size as usize {
                0 => PAGE,
                n => n.min(MAX_PAGE),
            };
            let page: Vec<v1::LedgerEntry> = entries
                .iter()
                .skip(from)
                .take(size)
                .map(|e| with_status(e, &principal.tenant, &statuses))
                .collect();
            let next = from + page.len();
            Ok(v1::ListEntriesResponse {
                entries: page,
                next_page_token: if next < entries.len() {
                    next.to_string()
                } else {
                    String::new()
                },
            })
        })
        .await
    }

    async fn get_tier_progress(
        &self,
        request: Request<v1::GetTierProgressRequest>,
    ) -> Result<Response<v1::TierProgress>, Status> {
        timed("get_tier_progress", async {
            let principal = self.principal(&request)?;
            let req = request.get_ref();
            let creator = required("creator_id", creator_scope(&principal, &req.creator_id)?)?;
            let campaign_id = required("campaign_id", Some(req.campaign_id.clone()))?;
            let at = now();
            let campaign = {
                let programs = self
                    .shared
                    .programs
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let history = programs
                    .get(&principal.tenant)
                    .ok_or(ServiceError::NotFound)?;
                let program = history
                    .at(at)
                    .or(history.versions().last())
                    .ok_or(ServiceError::NotFound)?;
                program
                    .campaigns
                    .values()
                    .find(|c| c.id.as_str() == campaign_id)
                    .cloned()
                    .ok_or(ServiceError::NotFound)?
            };
            let period: Period = if req.period.is_empty() {
                Period::containing(campaign.period, at)
            } else {
                period("period", &req.period).map_err(|v| ServiceError::Invalid(vec![v]))?
            };
            let (orders, revenue) = self
                .shared
                .store
                .tier(
                    principal.tenant.as_str(),
                    &campaign_id,
                    &creator,
                    &period.label(),
                )
                .await?;
            let creator_id = CreatorId::parse("creator_id", &creator)
                .map_err(|v| ServiceError::Invalid(vec![v]))?;
            Ok(tier_to_proto(
                &campaign,
                &creator_id,
                period,
                orders,
                revenue,
            ))
        })
        .await
    }

    async fn get_campaign_kpis(
        &self,
        request: Request<v1::GetCampaignKpisRequest>,
    ) -> Result<Response<v1::CampaignKpis>, Status> {
        timed("get_campaign_kpis", async {
            let principal = self.principal(&request)?;
            let req = request.get_ref();
            let campaign_id = required("campaign_id", Some(req.campaign_id.clone()))?;
            let only = creator_scope(&principal, &req.creator_id)?;
            let currency = {
                let programs = self
                    .shared
                    .programs
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let history = programs
                    .get(&principal.tenant)
                    .ok_or(ServiceError::NotFound)?;
                let program = history.versions().last().ok_or(ServiceError::NotFound)?;
                program
                    .campaigns
                    .values()
                    .find(|c| c.id.as_str() == campaign_id)
                    .map(|c| c.currency)
                    .ok_or(ServiceError::NotFound)?
            };
            let deltas = self
                .shared
                .store
                .kpi_deltas(principal.tenant.as_str(), &campaign_id)
                .await?;
            let (start, end) = range(req.range.as_ref());
            let campaign = payoff_core::ids::CampaignId::parse("campaign_id", &campaign_id)
                .map_err(|v| ServiceError::Invalid(vec![v]))?;
            let (per, total) = projection::campaign_kpis(&deltas, &campaign, start, end);
            let creators = per
                .iter()
                .filter(|(c, _)| only.as_deref().is_none_or(|o| o == c.as_str()))
                .map(|(c, r)| v1::CreatorKpis {
                    creator_id: c.as_str().to_owned(),
                    kpis: Some(kpis_to_proto(r, Some(currency), 0)),
                })
                .collect();
            let tenant_wide = principal.role != Role::Creator;
            Ok(v1::CampaignKpis {
                campaign_id,
                range: req.range,
                currency: currency.code().to_owned(),
                total: tenant_wide.then(|| kpis_to_proto(&total, Some(currency), 0)),
                creators,
            })
        })
        .await
    }

    async fn explain_order(
        &self,
        request: Request<v1::ExplainOrderRequest>,
    ) -> Result<Response<v1::OrderExplanation>, Status> {
        timed("explain_order", async {
            let principal = self.principal(&request)?;
            let req = request.get_ref();
            let order = required("order_id", Some(req.order_id.clone()))?;
            let (mut entries, mut credits) = self
                .shared
                .store
                .order(principal.tenant.as_str(), &order)
                .await?;
            let own = creator_scope(&principal, "")?;
            if let Some(own) = &own {
                entries.retain(|e| e.creator.as_str() == own);
                credits.retain(|c| &c.creator_id == own);
            }
            if entries.is_empty() && credits.is_empty() {
                return Err(ServiceError::NotFound);
            }
            let mut explanation = credits.iter().find_map(|c| c.explanation.clone());
            if let (Some(own), Some(x)) = (&own, explanation.as_mut()) {
                for candidate in &mut x.candidates {
                    if &candidate.creator_id != own {
                        candidate.creator_id.clear();
                    }
                }
            }
            credits.sort_by(|a, b| a.credit_id.cmp(&b.credit_id));
            Ok(v1::OrderExplanation {
                order_id: order,
                explanation,
                credits,
                entries: with_statuses(&entries, &principal.tenant, now()),
            })
        })
        .await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let principal = self.principal(&request).map_err(Status::from)?;
        let req = request.into_inner();
        let creator = creator_scope(&principal, &req.creator_id).map_err(Status::from)?;
        let campaign = req.campaign_id;
        let tenant = principal.tenant.clone();
        let gauge = WatchGauge::new();
        let stream = BroadcastStream::new(self.shared.updates.subscribe()).filter_map(move |item| {
            let _gauge = &gauge;
            match item {
                Ok(u) if u.tenant == tenant
                    && creator.as_deref().is_none_or(|c| c == u.creator.as_str())
                    && (campaign.is_empty() || campaign == u.campaign.as_str()) =>
                {
                    Some(Ok(u.event.clone()))
                }
                Ok(_) => None,
                Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => Some(Err(
                    Status::resource_exhausted(format!("watcher fell {n} updates behind; reconnect and list entries to catch up")),
                )),
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Counts open watch streams while alive.
struct WatchGauge;

impl WatchGauge {
    fn new() -> Self {
        metrics::gauge!(m::WATCHERS).increment(1.0);
        Self
    }
}

impl Drop for WatchGauge {
    fn drop(&mut self) {
        metrics::gauge!(m::WATCHERS).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use payoff_core::ids::TenantId;

    fn principal(role: Role, creator: Option<&str>) -> Principal {
        Principal {
            key_id: "k".into(),
            tenant: TenantId::parse("t", "acme").unwrap(),
            role,
            creator: creator.map(|c| CreatorId::parse("c", c).unwrap()),
        }
    }

    #[test]
    fn creator_keys_see_only_their_creator() {
        let me = principal(Role::Creator, Some("ana"));
        assert_eq!(creator_scope(&me, "").unwrap().as_deref(), Some("ana"));
        assert_eq!(creator_scope(&me, "ana").unwrap().as_deref(), Some("ana"));
        assert!(matches!(
            creator_scope(&me, "bob"),
            Err(ServiceError::NotFound)
        ));
        let reader = principal(Role::Read, None);
        assert_eq!(
            creator_scope(&reader, "bob").unwrap().as_deref(),
            Some("bob")
        );
        assert_eq!(creator_scope(&reader, "").unwrap(), None);
    }
}
