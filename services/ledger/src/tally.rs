//! Live KPI and leaderboard gauges from what an instance folds.
//!
//! Every partition's fold runs from the partition's beginning (see the pipeline), so a
//! [`Tally`] kept beside it holds the partition's all-time totals: the gauges an instance
//! exports are the sums over the partitions it holds, and a dashboard's `sum` over
//! instances is the whole. Counters would not do here: refunds lower the totals.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use payoff_core::{
    ids::{CampaignId, CreatorId, TenantId},
    kpi::KpiTotals,
    ledger::{EntryKind, LedgerFact},
    time::Period,
};
use rust_decimal::{Decimal, prelude::ToPrimitive as _};

use crate::metrics as m;

/// One partition's all-time KPI totals and net commission per creator.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    kpis: HashMap<(TenantId, CampaignId), KpiTotals>,
    commission: HashMap<(TenantId, String, CreatorId), Decimal>,
    /// Net orders and revenue per creator, campaign and period (tier progress).
    progress: HashMap<ProgressKey, (i64, Decimal)>,
}

/// Tenant, campaign, creator, period.
pub(crate) type ProgressKey = (TenantId, CampaignId, CreatorId, Period);

impl Tally {
    /// Adds the facts of one folded input.
    pub(crate) fn add(&mut self, tenant: &TenantId, facts: &[LedgerFact]) {
        for fact in facts {
            match fact {
                LedgerFact::Kpi(delta) => {
                    *self
                        .kpis
                        .entry((tenant.clone(), delta.campaign.clone()))
                        .or_default() += &delta.totals;
                }
                LedgerFact::Progress {
                    campaign,
                    creator,
                    period,
                    orders,
                    revenue,
                    ..
                } => {
                    let sum = self
                        .progress
                        .entry((tenant.clone(), campaign.clone(), creator.clone(), *period))
                        .or_default();
                    sum.0 += orders;
                    sum.1 += revenue;
                }
                LedgerFact::Entry(e) if e.kind != EntryKind::Payout => {
                    *self
                        .commission
                        .entry((
                            tenant.clone(),
                            e.amount.currency.code().to_owned(),
                            e.creator.clone(),
                        ))
                        .or_default() += e.amount.amount;
                }
                _ => {}
            }
        }
    }
}

impl Tally {
    /// The net orders and revenue of a tier key so far.
    pub(crate) fn progress(&self, key: &ProgressKey) -> (i64, Decimal) {
        self.progress.get(key).copied().unwrap_or_default()
    }
}

type CreatorKey = (TenantId, String, CreatorId);

/// Sets the gauges from the tallies of the partitions an instance holds, at most once per
/// `every`; series that no longer apply are set to 0 (the exporter cannot remove them).
#[derive(Debug)]
pub(crate) struct Gauges {
    every: Duration,
    last: Option<Instant>,
    campaigns: BTreeSet<(TenantId, CampaignId)>,
    top: BTreeSet<CreatorKey>,
}

impl Gauges {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            campaigns: BTreeSet::new(),
            top: BTreeSet::new(),
        }
    }

    /// Publishes unless it did within `every`.
    pub(crate) fn publish<'a>(&mut self, tallies: impl Iterator<Item = &'a Tally> + Clone) {
        if self.last.is_some_and(|at| at.elapsed() < self.every) {
            return;
        }
        self.last = Some(Instant::now());
        let (kpis, top) = totals(tallies);
        for ((tenant, campaign), t) in &kpis {
            let labels = [
                ("tenant", tenant.as_str().to_owned()),
                ("campaign", campaign.as_str().to_owned()),
            ];
            metrics::gauge!(m::CAMPAIGN_CLICKS, &labels).set(t.clicks as f64);
            metrics::gauge!(m::CAMPAIGN_ORDERS, &labels).set(float(t.orders));
            metrics::gauge!(m::CAMPAIGN_LEADS, &labels).set(float(t.leads));
            metrics::gauge!(m::CAMPAIGN_REVENUE, &labels).set(float(t.revenue));
            metrics::gauge!(m::CAMPAIGN_COST, &labels).set(float(t.cost));
        }
        for gone in self.campaigns.iter().filter(|k| !kpis.contains_key(*k)) {
            let labels = [
                ("tenant", gone.0.as_str().to_owned()),
                ("campaign", gone.1.as_str().to_owned()),
            ];
            for name in [
                m::CAMPAIGN_CLICKS,
                m::CAMPAIGN_ORDERS,
                m::CAMPAIGN_LEADS,
                m::CAMPAIGN_REVENUE,
                m::CAMPAIGN_COST,
            ] {
                metrics::gauge!(name, &labels).set(0.0);
            }
        }
        self.campaigns = kpis.into_keys().collect();
        for (key, amount) in &top {
            metrics::gauge!(m::TOP_CREATOR_COMMISSION, &creator_labels(key)).set(float(*amount));
        }
        for gone in self.top.iter().filter(|k| !top.contains_key(*k)) {
            metrics::gauge!(m::TOP_CREATOR_COMMISSION, &creator_labels(gone)).set(0.0);
        }
        self.top = top.into_keys().collect();
    }
}

/// KPI totals per campaign and the top creators per tenant and currency.
fn totals<'a>(
    tallies: impl Iterator<Item = &'a Tally> + Clone,
) -> (
    BTreeMap<(TenantId, CampaignId), KpiTotals>,
    BTreeMap<CreatorKey, Decimal>,
) {
    let mut kpis: BTreeMap<(TenantId, CampaignId), KpiTotals> = BTreeMap::new();
    let mut commission: HashMap<&CreatorKey, Decimal> = HashMap::new();
    for tally in tallies {
        for (key, t) in &tally.kpis {
            *kpis.entry(key.clone()).or_default() += t;
        }
        for (key, amount) in &tally.commission {
            *commission.entry(key).or_default() += *amount;
        }
    }
    let mut ranked: BTreeMap<(&TenantId, &str), Vec<(&CreatorKey, Decimal)>> = BTreeMap::new();
    for (key, amount) in commission {
        ranked
            .entry((&key.0, key.1.as_str()))
            .or_default()
            .push((key, amount));
    }
    let mut top = BTreeMap::new();
    for mut creators in ranked.into_values() {
        // Most commission first; ties by creator id, so the choice is stable.
        creators.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.2.cmp(&b.0.2)));
        for (key, amount) in creators.into_iter().take(m::TOP_CREATORS) {
            top.insert(key.clone(), amount);
        }
    }
    (kpis, top)
}

fn creator_labels(key: &CreatorKey) -> [(&'static str, String); 3] {
    [
        ("tenant", key.0.as_str().to_owned()),
        ("currency", key.1.clone()),
        ("creator", key.2.as_str().to_owned()),
    ]
}

fn float(d: Decimal) -> f64 {
    d.to_f64().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use payoff_core::{kpi::KpiDelta, time::Timestamp};

    use super::*;

    fn tenant() -> TenantId {
        TenantId::parse("tenant", "acme").unwrap()
    }

    fn kpi(campaign: &str, revenue: i64, cost: i64) -> LedgerFact {
        LedgerFact::Kpi(KpiDelta {
            at: Timestamp::from_millis(0),
            campaign: CampaignId::parse("campaign", campaign).unwrap(),
            creator: None,
            totals: KpiTotals {
                revenue: Decimal::from(revenue),
                cost: Decimal::from(cost),
                ..KpiTotals::default()
            },
        })
    }

    #[test]
    fn partitions_sum_and_refunds_lower_the_totals() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        a.add(&tenant(), &[kpi("spring", 100, 10)]);
        b.add(&tenant(), &[kpi("spring", 50, 5), kpi("fall", 20, 2)]);
        b.add(&tenant(), &[kpi("spring", -50, -5)]);
        let (kpis, _) = totals([&a, &b].into_iter());
        let spring = &kpis[&(tenant(), CampaignId::parse("campaign", "spring").unwrap())];
        assert_eq!(
            (spring.revenue, spring.cost),
            (Decimal::from(100), Decimal::from(10))
        );
        assert_eq!(kpis.len(), 2);
    }

    #[test]
    fn only_the_top_creators_of_each_tenant_and_currency_are_exported() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        for n in 0..15_i64 {
            let creator = CreatorId::parse("creator", &format!("c{n:02}")).unwrap();
            // Split over two partitions (two campaigns): the sums rank them.
            a.commission
                .insert((tenant(), "USD".into(), creator.clone()), Decimal::from(n));
            b.commission
                .insert((tenant(), "USD".into(), creator), Decimal::from(n));
        }
        let euro = CreatorId::parse("creator", "c00").unwrap();
        b.commission
            .insert((tenant(), "EUR".into(), euro), Decimal::from(1));
        let (_, top) = totals([&a, &b].into_iter());
        let usd: Vec<_> = top
            .iter()
            .filter(|(k, _)| k.1 == "USD")
            .map(|(k, v)| (k.2.as_str().to_owned(), *v))
            .collect();
        assert_eq!(usd.len(), m::TOP_CREATORS);
        assert_eq!(usd.first(), Some(&("c05".to_owned(), Decimal::from(10))));
        assert_eq!(usd.last(), Some(&("c14".to_owned(), Decimal::from(28))));
        assert_eq!(top.keys().filter(|k| k.1 == "EUR").count(), 1);
    }
}
