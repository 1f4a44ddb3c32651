//! KPIs (§9): additive counters per campaign, creator and time, and the exact ratios
//! computed from them.
//!
//! Counters are exact decimals in the campaign's currency. Shares weight conversions, so
//! an order split 50/50 counts half an order for each creator and one order in total.
//! A ratio whose denominator is zero is `None` (shown as absent), never infinity or zero.

use std::ops::AddAssign;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    ids::{CampaignId, CreatorId},
    time::Timestamp,
};

/// A change to the KPI counters of one campaign (and creator, when credited).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KpiDelta {
    /// When (event time of the cause).
    pub at: Timestamp,
    /// The campaign.
    pub campaign: CampaignId,
    /// The creator credited (`None` is kept for tenant-level counters).
    pub creator: Option<CreatorId>,
    /// The counters.
    pub totals: KpiTotals,
}

/// Additive KPI counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KpiTotals {
    /// Unique, unflagged clicks.
    pub clicks: u64,
    /// Views (engagement deltas).
    pub views: u64,
    /// Likes (engagement deltas).
    pub likes: u64,
    /// Comments (engagement deltas).
    pub comments: u64,
    /// Shares (engagement deltas).
    pub shares: u64,
    /// Credited leads.
    #[serde(with = "crate::money::decimal_str")]
    pub leads: Decimal,
    /// Credited leads that qualified.
    #[serde(with = "crate::money::decimal_str")]
    pub qualified_leads: Decimal,
    /// Credited orders, net of full refunds.
    #[serde(with = "crate::money::decimal_str")]
    pub orders: Decimal,
    /// Credited orders from returning customers.
    #[serde(with = "crate::money::decimal_str")]
    pub returning_orders: Decimal,
    /// Credited revenue (net amounts), net of refunds.
    #[serde(with = "crate::money::decimal_str")]
    pub revenue: Decimal,
    /// Cost: commission, bonuses, base fees and manual adjustments, net of reversals.
    #[serde(with = "crate::money::decimal_str")]
    pub cost: Decimal,
}

impl AddAssign<&KpiTotals> for KpiTotals {
    fn add_assign(&mut self, o: &KpiTotals) {
        self.clicks += o.clicks;
        self.views += o.views;
        self.likes += o.likes;
        self.comments += o.comments;
        self.shares += o.shares;
        self.leads += o.leads;
        self.qualified_leads += o.qualified_leads;
        self.orders += o.orders;
        self.returning_orders += o.returning_orders;
        self.revenue += o.revenue;
        self.cost += o.cost;
    }
}

/// The §9 ratios. `None` where the denominator is zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[allow(missing_docs)]
pub struct Kpis {
    #[serde(with = "rust_decimal::serde::str_option")]
    pub ctr: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub conversion_rate: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub epc: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub cpa: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub cpl: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub roas: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub roi: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub aov: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub rpm: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub repeat_rate: Option<Decimal>,
    #[serde(with = "rust_decimal::serde::str_option")]
    pub engagement_to_conversion: Option<Decimal>,
}

fn ratio(numerator: Decimal, denominator: Decimal) -> Option<Decimal> {
    if denominator.is_zero() {
        None
    } else {
        numerator.checked_div(denominator).map(|r| r.normalize())
    }
}

impl KpiTotals {
    /// The §9 formulas over these counters.
    pub fn kpis(&self) -> Kpis {
        let clicks = Decimal::from(self.clicks);
        let views = Decimal::from(self.views);
        let engagement = Decimal::from(self.likes + self.comments + self.shares);
        Kpis {
            ctr: ratio(clicks, views),
            conversion_rate: ratio(self.orders, clicks),
            epc: ratio(self.cost, clicks),
            cpa: ratio(self.cost, self.orders),
            cpl: ratio(self.cost, self.qualified_leads),
            roas: ratio(self.revenue, self.cost),
            roi: ratio(self.revenue - self.cost, self.cost),
            aov: ratio(self.revenue, self.orders),
            rpm: ratio(self.revenue * Decimal::ONE_THOUSAND, views),
            repeat_rate: ratio(self.returning_orders, self.orders),
            engagement_to_conversion: ratio(self.orders, engagement),
        }
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::dec;

    use super::*;

    /// The worked numbers of §9, exactly.
    #[test]
    fn worked_numbers_of_section_nine() {
        let t = KpiTotals {
            clicks: 100,
            orders: dec!(10),
            ..KpiTotals::default()
        };
        assert_eq!(t.kpis().conversion_rate, Some(dec!(0.1)));

        let t = KpiTotals {
            cost: dec!(500),
            revenue: dec!(2000),
            ..KpiTotals::default()
        };
        assert_eq!(t.kpis().roas, Some(dec!(4)));
        assert_eq!(t.kpis().roi, Some(dec!(3)), "ROI 300%");

        let t = KpiTotals {
            cost: dec!(500),
            orders: dec!(25),
            ..KpiTotals::default()
        };
        assert_eq!(t.kpis().cpa, Some(dec!(20)));

        let t = KpiTotals {
            revenue: dec!(2000),
            views: 100_000,
            ..KpiTotals::default()
        };
        assert_eq!(t.kpis().rpm, Some(dec!(20)));
    }

    #[test]
    fn zero_denominators_are_absent() {
        let k = KpiTotals::default().kpis();
        assert_eq!(k, Kpis::default());
    }
}
