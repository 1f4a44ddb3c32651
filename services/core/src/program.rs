//! Program configuration (§3, §6): campaigns, creators, links, promo codes and commission
//! plans, versioned and bound to event time.
//!
//! A [`ProgramHistory`] holds every version of a tenant's program; a conversion is judged
//! by the version in force at its `occurred_at` ([`ProgramHistory::at`]), never by the one
//! in force when it happens to be processed.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
};

use rust_decimal::Decimal;
use serde::Serialize;

use crate::{
    error::{Rejection, Violation},
    ids::{CampaignId, CreatorId, CustomerId, LinkCode, PlanId, PromoCode},
    money::Currency,
    time::{Duration, PeriodKind, Timestamp},
};

/// Default lookback window (§3).
pub const DEFAULT_LOOKBACK: Duration = Duration::days(30);
/// Default hold period (§6).
pub const DEFAULT_HOLD: Duration = Duration::days(30);
/// Default late-click grace period (§5.4).
pub const DEFAULT_GRACE: Duration = Duration::seconds(10);
/// Default half-life of the time-decay model.
pub const DEFAULT_HALF_LIFE: Duration = Duration::days(7);
/// A click and a conversion closer than this are flagged (§5.6).
pub const DEFAULT_MIN_CLICK_TO_CONVERSION: Duration = Duration::seconds(3);
/// More clicks than this per IP hash per minute are a flood (§5.6).
pub const DEFAULT_CLICK_FLOOD_PER_MINUTE: u32 = 30;
/// A click pays once per visitor per link per this window (§5).
pub const CPC_UNIQUE_WINDOW: Duration = Duration::hours(24);

/// Tenant-wide attribution settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// How long a late click may trail a conversion and still count (§5.4).
    pub grace: Duration,
    /// Clicks per IP hash per minute above which clicks are flagged as a flood.
    pub click_flood_per_minute: u32,
    /// Conversions closer than this to a click are not credited to that click.
    pub min_click_to_conversion: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            grace: DEFAULT_GRACE,
            click_flood_per_minute: DEFAULT_CLICK_FLOOD_PER_MINUTE,
            min_click_to_conversion: DEFAULT_MIN_CLICK_TO_CONVERSION,
        }
    }
}

/// How a conversion's credit is split among eligible clicks (§5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case", tag = "model")]
pub enum Model {
    /// 100% to the latest click.
    #[default]
    LastClick,
    /// 100% to the earliest click.
    FirstClick,
    /// Equal shares.
    Linear,
    /// 40% first, 40% last, 20% over the middle.
    PositionBased,
    /// Weight 2^(−age / half-life), normalised.
    TimeDecay {
        /// The half-life.
        half_life: Duration,
    },
}

impl Model {
    /// Lower-case name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::LastClick => "last_click",
            Self::FirstClick => "first_click",
            Self::Linear => "linear",
            Self::PositionBased => "position_based",
            Self::TimeDecay { .. } => "time_decay",
        }
    }
}

/// What counts toward a tiered rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TierBasis {
    /// The n-th credited order of the period.
    Count,
    /// Credited revenue of the period before this order.
    Revenue,
}

/// One tier: from this threshold on, this rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tier {
    /// Where the tier starts: the n-th order (count basis) or the revenue reached.
    pub from: Decimal,
    /// The rate, as a fraction (0.15 for 15%).
    pub rate: Decimal,
}

/// One milestone: a one-time bonus when the period's net order count reaches a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Milestone {
    /// Net credited orders in the period.
    pub threshold: u64,
    /// The bonus, in the campaign's currency.
    pub bonus: Decimal,
}

/// What a plan pays for (§6).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum PlanKind {
    /// A fixed amount per paid (unique, not flagged) click.
    Cpc {
        /// Amount per click.
        amount: Decimal,
    },
    /// A fixed amount per lead.
    Cpl {
        /// Amount per lead.
        amount: Decimal,
        /// Pay only once the lead is qualified.
        qualified_only: bool,
    },
    /// A fixed amount per order.
    CpsFlat {
        /// Amount per order.
        amount: Decimal,
    },
    /// A share of the order's net amount.
    CpsPercent {
        /// Default rate.
        rate: Decimal,
        /// Rates per line-item category, overriding the default.
        category_rates: BTreeMap<Arc<str>, Decimal>,
    },
    /// A marginal rate that depends on the period's progress so far.
    Tiered {
        /// Count or revenue.
        basis: TierBasis,
        /// Tiers in ascending `from` order; the first starts at 0 (or 1).
        tiers: Vec<Tier>,
    },
    /// One-time bonuses at order-count thresholds.
    Milestone {
        /// Milestones in ascending threshold order.
        milestones: Vec<Milestone>,
    },
    /// A fixed amount per creator per period, earned with the creator's first credit of the
    /// period (a hybrid deal's retainer).
    BaseFee {
        /// Amount per period.
        amount: Decimal,
    },
    /// Pay per engagement (from engagement deltas).
    Engagement {
        /// Per view.
        per_view: Decimal,
        /// Per like.
        per_like: Decimal,
        /// Per comment.
        per_comment: Decimal,
        /// Per share.
        per_share: Decimal,
        /// Nothing is paid for a post until its cumulative views reach this.
        minimum_views: u64,
    },
}

impl PlanKind {
    /// Lower-case name (a bounded label).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Cpc { .. } => "cpc",
            Self::Cpl { .. } => "cpl",
            Self::CpsFlat { .. } => "cps_flat",
            Self::CpsPercent { .. } => "cps_percent",
            Self::Tiered { .. } => "tiered",
            Self::Milestone { .. } => "milestone",
            Self::BaseFee { .. } => "base_fee",
            Self::Engagement { .. } => "engagement",
        }
    }
}

/// A commission plan with its options (§6).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Unique within the campaign.
    pub id: PlanId,
    /// What it pays for.
    pub kind: PlanKind,
    /// Pay only for new customers.
    pub new_customer_only: bool,
    /// Renewals pay for this many periods after the original order; `None`: renewals
    /// do not pay.
    pub recurring_periods: Option<u32>,
    /// Most this plan pays one creator per period.
    pub cap_amount: Option<Decimal>,
    /// Most conversions this plan pays one creator per period (paid clicks for CPC).
    pub cap_count: Option<u64>,
    /// How long an accrual stays pending.
    pub hold: Duration,
}

/// A campaign (§3).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Campaign {
    /// Id.
    pub id: CampaignId,
    /// Display name.
    pub name: String,
    /// Currency of its plans and of the orders it credits.
    pub currency: Currency,
    /// Attribution model.
    pub model: Model,
    /// Lookback window.
    pub lookback: Duration,
    /// A mapped promo code beats clicks.
    pub code_precedence: bool,
    /// Active from (inclusive), if bounded.
    pub active_from: Option<Timestamp>,
    /// Active until (exclusive), if bounded.
    pub active_until: Option<Timestamp>,
    /// How time is cut into commission periods.
    pub period: PeriodKind,
    /// Commission plans.
    pub plans: Vec<Plan>,
}

impl Campaign {
    /// True when the campaign is active at `at`.
    pub fn is_active(&self, at: Timestamp) -> bool {
        self.active_from.is_none_or(|from| at >= from)
            && self.active_until.is_none_or(|until| at < until)
    }
}

/// A creator (§3).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Creator {
    /// Display name.
    pub display_name: String,
    /// The creator's own customer ids (self-referral detection).
    pub customer_ids: HashSet<CustomerId>,
    /// The creator's own email hashes (self-referral detection).
    pub email_hashes: HashSet<Arc<str>>,
}

/// Where a link or promo code sends credit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The creator.
    pub creator: CreatorId,
    /// The campaign.
    pub campaign: CampaignId,
}

/// One version of a tenant's program.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Program {
    /// Version number, increasing.
    pub version: u64,
    /// In force for events at or after this instant.
    pub effective_from: Timestamp,
    /// Tenant-wide settings.
    pub settings: Settings,
    /// Campaigns by id.
    pub campaigns: BTreeMap<CampaignId, Campaign>,
    /// Creators by id.
    pub creators: BTreeMap<CreatorId, Creator>,
    /// Tracking links by code.
    pub links: crate::FastMap<LinkCode, Target>,
    /// Promo codes (upper-cased) by code.
    pub promo_codes: crate::FastMap<PromoCode, Target>,
}

impl Program {
    /// Checks cross-references and plan sanity, naming every problem.
    pub fn check(&self) -> Result<(), Rejection> {
        let mut problems = Vec::new();
        let targets = self
            .links
            .iter()
            .map(|(code, t)| (format!("links[{code}]"), t))
            .chain(
                self.promo_codes
                    .iter()
                    .map(|(code, t)| (format!("promo_codes[{code}]"), t)),
            );
        for (field, target) in targets {
            if !self.creators.contains_key(&target.creator) {
                problems.push(Violation::new(
                    format!("{field}.creator_id"),
                    "unknown_creator",
                    format!("no creator {}", target.creator),
                ));
            }
            if !self.campaigns.contains_key(&target.campaign) {
                problems.push(Violation::new(
                    format!("{field}.campaign_id"),
                    "unknown_campaign",
                    format!("no campaign {}", target.campaign),
                ));
            }
        }
        for (id, campaign) in &self.campaigns {
            let field = format!("campaigns[{id}]");
            if campaign.lookback.millis() <= 0 {
                problems.push(Violation::new(
                    format!("{field}.lookback"),
                    "not_positive",
                    "must be positive",
                ));
            }
            if let Model::TimeDecay { half_life } = campaign.model
                && half_life.millis() <= 0
            {
                problems.push(Violation::new(
                    format!("{field}.time_decay_half_life"),
                    "not_positive",
                    "must be positive",
                ));
            }
            let mut plan_ids = HashSet::new();
            for plan in &campaign.plans {
                let field = format!("{field}.plans[{}]", plan.id);
                if !plan_ids.insert(&plan.id) {
                    problems.push(Violation::new(
                        field.clone(),
                        "duplicate",
                        "plan ids must be unique within a campaign",
                    ));
                }
                check_plan(&field, plan, campaign.currency, &mut problems);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Rejection::InvalidProgram(problems))
        }
    }
}

fn check_plan(field: &str, plan: &Plan, currency: Currency, problems: &mut Vec<Violation>) {
    let mut amount = |name: &str, value: Decimal| {
        if value.is_sign_negative() {
            problems.push(Violation::new(
                format!("{field}.{name}"),
                "negative",
                "must not be negative",
            ));
        } else if value.normalize().scale() > currency.minor_units() {
            problems.push(Violation::new(
                format!("{field}.{name}"),
                "precision",
                format!("more fraction digits than {currency} allows"),
            ));
        }
    };
    match &plan.kind {
        PlanKind::Cpc { amount: a }
        | PlanKind::Cpl { amount: a, .. }
        | PlanKind::CpsFlat { amount: a }
        | PlanKind::BaseFee { amount: a } => amount("amount", *a),
        PlanKind::Milestone { milestones } => {
            for m in milestones {
                amount("milestones.bonus", m.bonus);
            }
            if !milestones
                .windows(2)
                .all(|w| w[0].threshold < w[1].threshold)
            {
                problems.push(Violation::new(
                    format!("{field}.milestones"),
                    "unordered",
                    "thresholds must be strictly ascending",
                ));
            }
        }
        PlanKind::Tiered { tiers, .. } => {
            if tiers.is_empty() {
                problems.push(Violation::new(
                    format!("{field}.tiers"),
                    "required",
                    "at least one tier",
                ));
            }
            if !tiers.windows(2).all(|w| w[0].from < w[1].from) {
                problems.push(Violation::new(
                    format!("{field}.tiers"),
                    "unordered",
                    "tiers must be strictly ascending",
                ));
            }
            if tiers.iter().any(|t| t.rate.is_sign_negative()) {
                problems.push(Violation::new(
                    format!("{field}.tiers"),
                    "negative",
                    "rates must not be negative",
                ));
            }
        }
        PlanKind::CpsPercent {
            rate,
            category_rates,
        } => {
            if rate.is_sign_negative() || category_rates.values().any(|r| r.is_sign_negative()) {
                problems.push(Violation::new(
                    format!("{field}.rate"),
                    "negative",
                    "rates must not be negative",
                ));
            }
        }
        PlanKind::Engagement {
            per_view,
            per_like,
            per_comment,
            per_share,
            ..
        } => {
            for r in [per_view, per_like, per_comment, per_share] {
                if r.is_sign_negative() {
                    problems.push(Violation::new(
                        format!("{field}.engagement"),
                        "negative",
                        "rates must not be negative",
                    ));
                }
            }
        }
    }
    if plan.hold.millis() < 0 {
        problems.push(Violation::new(
            format!("{field}.hold"),
            "negative",
            "must not be negative",
        ));
    }
}

/// Every version of one tenant's program, ordered by `effective_from`.
#[derive(Debug, Clone, Default)]
pub struct ProgramHistory {
    versions: Vec<Arc<Program>>,
}

impl ProgramHistory {
    /// A history with one version.
    pub fn single(program: Program) -> Self {
        let mut h = Self::default();
        h.insert(program);
        h
    }

    /// Adds a version (a later version with the same `effective_from` wins).
    pub fn insert(&mut self, program: Program) {
        let key = (program.effective_from, program.version);
        let at = self
            .versions
            .partition_point(|p| (p.effective_from, p.version) <= key);
        self.versions.insert(at, Arc::new(program));
    }

    /// The version in force at `at`, if any.
    pub fn at(&self, at: Timestamp) -> Option<&Arc<Program>> {
        let idx = self.versions.partition_point(|p| p.effective_from <= at);
        idx.checked_sub(1).map(|i| &self.versions[i])
    }

    /// The version numbered `version`, if known.
    pub fn version(&self, version: u64) -> Option<&Arc<Program>> {
        self.versions.iter().rev().find(|p| p.version == version)
    }

    /// The longest lookback of any campaign in any version, plus the largest grace: how
    /// long attribution state must be kept.
    pub fn retention(&self) -> Duration {
        let lookback = self
            .versions
            .iter()
            .flat_map(|p| p.campaigns.values().map(|c| c.lookback))
            .max()
            .unwrap_or(DEFAULT_LOOKBACK);
        let grace = self
            .versions
            .iter()
            .map(|p| p.settings.grace)
            .max()
            .unwrap_or(DEFAULT_GRACE);
        Duration(lookback.millis().max(DEFAULT_LOOKBACK.millis()) + grace.millis())
    }

    /// The grace period of the newest version (the reorder buffer's).
    pub fn grace(&self) -> Duration {
        self.versions
            .last()
            .map_or(DEFAULT_GRACE, |p| p.settings.grace)
    }

    /// All versions, oldest first.
    pub fn versions(&self) -> &[Arc<Program>] {
        &self.versions
    }
}
