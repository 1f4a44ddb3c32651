//! Credits: what the attributor decides and emits (the `credits` topic), and the
//! explanation of each decision (§5.5).

use std::sync::Arc;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    event::AdjustmentKind,
    ids::{CampaignId, CreatorId, DerivedId, EventId, LeadId, LinkCode, OrderId, VisitorId},
    money::Money,
    time::{Duration, Timestamp},
};

/// Why an event or a credit earns nothing (§5.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FraudReason {
    /// The buyer is the credited creator.
    SelfReferral,
    /// Too many clicks from one IP hash in one minute.
    ClickFlood,
    /// The conversion followed its click too quickly.
    TooFast,
    /// The order id was already seen under another event id.
    DuplicateOrder,
}

impl FraudReason {
    /// Lower-case name (a bounded label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SelfReferral => "self_referral",
            Self::ClickFlood => "click_flood",
            Self::TooFast => "too_fast",
            Self::DuplicateOrder => "duplicate_order",
        }
    }
}

/// One creator's share of a conversion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    /// The creator.
    pub creator: CreatorId,
    /// The campaign.
    pub campaign: CampaignId,
    /// The share, an exact decimal; a conversion's shares sum to exactly one.
    #[serde(with = "crate::money::decimal_str")]
    pub share: Decimal,
}

/// The renewed order, for recurring plans.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Renewal {
    /// The original order.
    pub of: OrderId,
    /// When the original order happened.
    pub original_at: Timestamp,
}

/// What a credit is for.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum CreditKind {
    /// A unique, unflagged click (CPC plans and click KPIs).
    Click {
        /// The visitor.
        visitor: VisitorId,
        /// The link, when the click came through one.
        link: Option<LinkCode>,
    },
    /// A lead.
    Lead {
        /// The lead.
        lead: LeadId,
        /// Index of this credit in `shares`.
        index: usize,
        /// Every share of the lead, sorted by (campaign, creator).
        shares: Arc<[Share]>,
        /// A new customer.
        new_customer: bool,
    },
    /// An order.
    Order {
        /// The order.
        order: OrderId,
        /// Index of this credit in `shares`.
        index: usize,
        /// Every share of the order, sorted by (campaign, creator).
        shares: Arc<[Share]>,
        /// The order's amount as paid.
        gross: Money,
        /// The commissionable amount (§6).
        net: Money,
        /// Net amount per line-item category, when line items were given (sums to `net`).
        categories: Arc<[(Option<Arc<str>>, Decimal)]>,
        /// A new customer.
        new_customer: bool,
        /// The renewed order, for renewals.
        renewal: Option<Renewal>,
    },
    /// A refund, cancel or chargeback of an order credit.
    Reversal {
        /// The order credit it reverses.
        original: DerivedId,
        /// The order.
        order: OrderId,
        /// What happened.
        kind: AdjustmentKind,
        /// Fraction of the order refunded so far, this one included (1 = all of it).
        #[serde(with = "crate::money::decimal_str")]
        cumulative_fraction: Decimal,
    },
    /// A lead qualified or rejected.
    LeadStatus {
        /// The lead credit it concerns.
        original: DerivedId,
        /// The lead.
        lead: LeadId,
        /// Qualified, or rejected.
        qualified: bool,
    },
}

impl CreditKind {
    /// This credit's share of its conversion (1 for clicks and corrections).
    pub fn share(&self) -> Decimal {
        match self {
            Self::Lead { index, shares, .. } | Self::Order { index, shares, .. } => {
                shares[*index].share
            }
            _ => Decimal::ONE,
        }
    }

    /// Lower-case name (a bounded label).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Click { .. } => "click",
            Self::Lead { .. } => "lead",
            Self::Order { .. } => "order",
            Self::Reversal { .. } => "reversal",
            Self::LeadStatus { .. } => "lead_status",
        }
    }
}

/// An attributed conversion (or its correction) for one (campaign, creator): the record
/// on the `credits` topic, keyed by tenant + campaign + creator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Credit {
    /// Deterministic id derived from the cause.
    pub id: DerivedId,
    /// Campaign credited.
    pub campaign: CampaignId,
    /// Creator credited.
    pub creator: CreatorId,
    /// Event time of the cause.
    pub occurred_at: Timestamp,
    /// The event that caused it.
    pub cause: EventId,
    /// Program version that judged it (for a correction: the version that judged the
    /// conversion it corrects, which also prices the correction).
    pub config_version: u64,
    /// Set when the credit earns nothing because of fraud.
    pub fraud: Option<FraudReason>,
    /// What it is for.
    pub kind: CreditKind,
    /// Why (conversions only).
    pub explanation: Option<Arc<Explanation>>,
}

/// The rule that decided a conversion (§5.5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum Rule {
    /// A promo code mapped to a creator.
    PromoCode {
        /// The code.
        code: String,
    },
    /// The campaign's model over eligible clicks.
    Model {
        /// Model name.
        model: &'static str,
        /// Campaign whose model decided.
        campaign: CampaignId,
        /// Its lookback window.
        lookback: Duration,
    },
    /// The same credit as the order it renews.
    Renewal {
        /// The renewed order.
        of: OrderId,
    },
    /// No eligible click and no code.
    Unattributed,
}

/// A click considered for a conversion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// The click's event id.
    pub click: EventId,
    /// Creator of the click.
    pub creator: CreatorId,
    /// Campaign of the click.
    pub campaign: CampaignId,
    /// When it happened.
    pub at: Timestamp,
    /// Whether it took part in the split.
    pub eligible: bool,
    /// Why not, when not (`outside_lookback`, `click_flood`, `too_fast`, `campaign_inactive`).
    pub reason: Option<&'static str>,
    /// Its share of the credit, when eligible.
    #[serde(with = "rust_decimal::serde::str_option")]
    pub share: Option<Decimal>,
}

/// One fraud check applied to a conversion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FraudCheck {
    /// The check.
    pub check: FraudReason,
    /// Whether the conversion passed.
    pub passed: bool,
    /// What was found.
    pub detail: String,
}

/// Why a conversion was credited as it was (§5.5).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The conversion's event.
    pub event: EventId,
    /// The rule that decided.
    pub rule: Rule,
    /// Clicks considered.
    pub candidates: Vec<Candidate>,
    /// Fraud checks applied.
    pub fraud_checks: Vec<FraudCheck>,
    /// Program version in force at the conversion's event time.
    pub config_version: u64,
}
