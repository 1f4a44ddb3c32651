//! Projections (§8): balances, entry status, tier progress and KPIs, derived from the
//! append-only entries and facts at a query instant. Nothing here is stored state: status
//! is a function of the entries and the instant, so no job ever rewrites a row.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::{
    ids::{CampaignId, CreatorId, DerivedId},
    kpi::{KpiDelta, KpiTotals, Kpis},
    ledger::{EntryKind, LedgerEntry},
    money::{Currency, Money},
    program::{Campaign, PlanKind, TierBasis},
    time::{Period, Timestamp},
};

/// The derived status of an entry (§7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryStatus {
    /// Earning, still on hold.
    Pending,
    /// Earning, hold ended, not yet covered by a payout.
    Approved,
    /// Covered by payouts.
    Paid,
    /// Fully reversed.
    Reversed,
    /// A correction, payout or adjustment: it has no lifecycle of its own.
    Posted,
}

/// A creator's balance in one currency (§8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    /// The creator.
    pub creator: CreatorId,
    /// The currency.
    pub currency: Currency,
    /// Earned, still on hold (net of its reversals).
    pub pending: Money,
    /// Earned, hold ended (net of its reversals).
    pub approved: Money,
    /// Paid out.
    pub paid: Money,
    /// Reversed so far (refunds, cancels, chargebacks, lost milestones), as a positive sum.
    pub reversed: Money,
    /// `approved − paid`: what can be paid now. Negative after a clawback.
    pub available: Money,
}

/// Balances per (creator, currency) at `as_of`, from the entries of any set of creators.
/// Only entries that occurred at or before `as_of` count.
pub fn balances<'a>(
    entries: impl IntoIterator<Item = &'a LedgerEntry>,
    as_of: Timestamp,
) -> Vec<Balance> {
    let entries: Vec<&LedgerEntry> = entries
        .into_iter()
        .filter(|e| e.occurred_at <= as_of)
        .collect();
    let hold_of: BTreeMap<DerivedId, Timestamp> = entries
        .iter()
        .filter(|e| e.kind.is_earning())
        .map(|e| (e.id, e.hold_until))
        .collect();
    let mut sums: BTreeMap<(CreatorId, Currency), [Decimal; 4]> = BTreeMap::new();
    for e in entries {
        let s = sums
            .entry((e.creator.clone(), e.amount.currency))
            .or_default();
        let amount = e.amount.amount;
        let pending = |hold: Timestamp| as_of < hold;
        match e.kind {
            EntryKind::Payout => s[2] -= amount,
            EntryKind::ManualAdjustment => s[1] += amount,
            k if k.is_earning() => s[usize::from(!pending(e.hold_until))] += amount,
            _ => {
                let hold = e
                    .refers_to
                    .and_then(|r| hold_of.get(&r).copied())
                    .unwrap_or(e.hold_until);
                s[usize::from(!pending(hold))] += amount;
                s[3] -= amount;
            }
        }
    }
    sums.into_iter()
        .map(
            |((creator, currency), [pending, approved, paid, reversed])| Balance {
                creator,
                currency,
                pending: Money::new(pending, currency),
                approved: Money::new(approved, currency),
                paid: Money::new(paid, currency),
                reversed: Money::new(reversed, currency),
                available: Money::new(approved - paid, currency),
            },
        )
        .collect()
}

/// The status of every entry at `as_of`: earnings are pending until their hold ends, then
/// approved; payouts cover approved earnings oldest hold first; a fully reversed earning
/// is reversed.
pub fn statuses(entries: &[LedgerEntry], as_of: Timestamp) -> BTreeMap<DerivedId, EntryStatus> {
    let mut reversed: BTreeMap<DerivedId, Decimal> = BTreeMap::new();
    let mut paid: BTreeMap<(CreatorId, CampaignId), Decimal> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.occurred_at <= as_of) {
        if let (true, Some(r)) = (e.kind.is_reversal(), e.refers_to) {
            *reversed.entry(r).or_default() -= e.amount.amount;
        }
        if e.kind == EntryKind::Payout {
            *paid
                .entry((e.creator.clone(), e.campaign.clone()))
                .or_default() -= e.amount.amount;
        }
    }
    let mut earnings: Vec<&LedgerEntry> = entries
        .iter()
        .filter(|e| e.occurred_at <= as_of && e.kind.is_earning())
        .collect();
    earnings.sort_by_key(|e| (e.hold_until, e.id));
    let mut out = BTreeMap::new();
    for e in earnings {
        let net = e.amount.amount - reversed.get(&e.id).copied().unwrap_or_default();
        let status = if net <= Decimal::ZERO && e.amount.amount > Decimal::ZERO {
            EntryStatus::Reversed
        } else if as_of < e.hold_until {
            EntryStatus::Pending
        } else {
            let budget = paid
                .entry((e.creator.clone(), e.campaign.clone()))
                .or_default();
            if *budget >= net {
                *budget -= net;
                EntryStatus::Paid
            } else {
                EntryStatus::Approved
            }
        };
        out.insert(e.id, status);
    }
    for e in entries
        .iter()
        .filter(|e| e.occurred_at <= as_of && !e.kind.is_earning())
    {
        out.insert(e.id, EntryStatus::Posted);
    }
    out
}

/// Tier progress of one creator in one campaign and period (§8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierProgress {
    /// Campaign.
    pub campaign: CampaignId,
    /// Creator.
    pub creator: CreatorId,
    /// Period.
    pub period: Period,
    /// Net credited orders.
    pub orders: i64,
    /// Net credited revenue.
    #[serde(with = "crate::money::decimal_str")]
    pub revenue: Decimal,
    /// Rate the next order would earn under the campaign's tiered plan, if any.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub current_rate: Option<Decimal>,
    /// The next tier or milestone threshold, if any.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub next_threshold: Option<Decimal>,
    /// How far away it is (orders or revenue).
    #[serde(with = "rust_decimal::serde::str_option")]
    pub remaining: Option<Decimal>,
}

/// Tier progress from the net counters of a period and the campaign's plans.
pub fn tier_progress(
    campaign: &Campaign,
    creator: &CreatorId,
    period: Period,
    orders: i64,
    revenue: Decimal,
) -> TierProgress {
    let mut current_rate = None;
    let mut next: Option<(Decimal, Decimal)> = None;
    let mut consider = |threshold: Decimal, position: Decimal| {
        if threshold > position && next.is_none_or(|(t, p)| threshold - position < t - p) {
            next = Some((threshold, position));
        }
    };
    for plan in &campaign.plans {
        match &plan.kind {
            PlanKind::Tiered { basis, tiers } => {
                let position = match basis {
                    TierBasis::Count => Decimal::from(orders + 1),
                    TierBasis::Revenue => revenue,
                };
                current_rate = tiers
                    .iter()
                    .rev()
                    .find(|t| t.from <= position)
                    .or(tiers.first())
                    .map(|t| t.rate);
                let done = match basis {
                    TierBasis::Count => Decimal::from(orders),
                    TierBasis::Revenue => revenue,
                };
                for t in tiers {
                    // A count tier "from 51" is reached by the 51st order: 50 done is 1 away.
                    let threshold = if *basis == TierBasis::Count {
                        t.from - Decimal::ONE
                    } else {
                        t.from
                    };
                    consider(threshold, done);
                }
            }
            PlanKind::Milestone { milestones } => {
                for m in milestones {
                    consider(Decimal::from(m.threshold), Decimal::from(orders));
                }
            }
            _ => {}
        }
    }
    TierProgress {
        campaign: campaign.id.clone(),
        creator: creator.clone(),
        period,
        orders,
        revenue,
        current_rate,
        next_threshold: next.map(|(t, _)| t),
        remaining: next.map(|(t, p)| t - p),
    }
}

/// KPI counters and ratios for one scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KpiReport {
    /// The counters.
    pub totals: KpiTotals,
    /// The ratios.
    pub kpis: Kpis,
}

/// Campaign KPIs over `[from, to)`: per creator and in total (§8, §9).
pub fn campaign_kpis<'a>(
    deltas: impl IntoIterator<Item = &'a KpiDelta>,
    campaign: &CampaignId,
    from: Timestamp,
    to: Timestamp,
) -> (BTreeMap<CreatorId, KpiReport>, KpiReport) {
    let mut per: BTreeMap<CreatorId, KpiTotals> = BTreeMap::new();
    let mut total = KpiTotals::default();
    for d in deltas
        .into_iter()
        .filter(|d| &d.campaign == campaign && d.at >= from && d.at < to)
    {
        total += &d.totals;
        if let Some(c) = &d.creator {
            *per.entry(c.clone()).or_default() += &d.totals;
        }
    }
    let per = per
        .into_iter()
        .map(|(c, t)| {
            (
                c,
                KpiReport {
                    kpis: t.kpis(),
                    totals: t,
                },
            )
        })
        .collect();
    (
        per,
        KpiReport {
            kpis: total.kpis(),
            totals: total,
        },
    )
}
