//! A small given/when/then DSL for the core's integration tests.
//!
//! - [`program`] builds a [`Program`] (campaigns, creators, links, codes, plans) tersely;
//!   [`campaign`] and the plan helpers ([`cps_percent`], [`cpc`], ...) have the spec's
//!   defaults, and [`PlanExt`] adds the plan options.
//! - [`Ev`] builds a [`RawEvent`] and validates it through [`Event::validate`], so every
//!   event a test feeds the engine went through the §4 rules.
//! - Time is data: [`t`] is seconds after a fixed instant at the start of a month, [`day`]
//!   and [`days`] shift by whole days.
//!
//! Every test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::{collections::BTreeMap, sync::Arc};

use payoff_core::{
    engine::Engine,
    event::{
        AdjustmentKind, Event, RawAdjustment, RawClick, RawEngagement, RawEvent, RawLeadStatus,
        RawLineItem, RawMoney, RawOrder, RawPayload, RawSignup,
    },
    ids::{CampaignId, CreatorId, CustomerId, LinkCode, PlanId, PromoCode},
    ledger::{EntryKind, LedgerEntry},
    money::Currency,
    program::{
        Campaign, Creator, DEFAULT_HOLD, DEFAULT_LOOKBACK, Milestone, Model, Plan, PlanKind,
        Program, ProgramHistory, Target, Tier, TierBasis,
    },
    time::{Duration, PeriodKind, Timestamp},
};
use rust_decimal::Decimal;

/// 2026-11-02T00:00:00Z: a Monday near the start of a calendar month, so a test's month
/// has room on both sides.
pub const BASE: Timestamp = Timestamp(1_793_577_600_000);

/// `secs` seconds after [`BASE`].
pub fn t(secs: i64) -> Timestamp {
    BASE.plus(Duration::seconds(secs))
}

/// `n` days after [`BASE`].
pub fn day(n: i64) -> Timestamp {
    BASE.plus(Duration::days(n))
}

/// `n` days.
pub fn days(n: i64) -> Duration {
    Duration::days(n)
}

/// Parses a decimal literal (tests only).
pub fn d(text: &str) -> Decimal {
    text.parse().expect("decimal literal")
}

/// A currency by code (tests only).
pub fn currency(code: &str) -> Currency {
    Currency::parse("currency", code).expect("currency")
}

// ---------------------------------------------------------------------------------------
// Program
// ---------------------------------------------------------------------------------------

/// A program under construction.
pub struct ProgramBuilder(Program);

/// An empty program, version 1, in force since long before any test instant.
pub fn program() -> ProgramBuilder {
    ProgramBuilder(Program {
        version: 1,
        effective_from: Timestamp(0),
        ..Program::default()
    })
}

impl ProgramBuilder {
    /// Version number and the instant it comes into force.
    pub fn version(mut self, version: u64, effective_from: Timestamp) -> Self {
        self.0.version = version;
        self.0.effective_from = effective_from;
        self
    }

    /// Adds a campaign.
    pub fn campaign(mut self, campaign: Campaign) -> Self {
        self.0.campaigns.insert(campaign.id.clone(), campaign);
        self
    }

    /// Adds creators with no identity hints.
    pub fn creators(mut self, ids: &[&str]) -> Self {
        for id in ids {
            self.0
                .creators
                .insert(CreatorId::new(id), Creator::default());
        }
        self
    }

    /// Adds a creator whose own customer ids and email hashes are known.
    pub fn creator_with(mut self, id: &str, customers: &[&str], emails: &[&str]) -> Self {
        self.0.creators.insert(
            CreatorId::new(id),
            Creator {
                display_name: id.to_owned(),
                customer_ids: customers.iter().map(|c| CustomerId::new(c)).collect(),
                email_hashes: emails.iter().map(|e| Arc::from(*e)).collect(),
            },
        );
        self
    }

    /// Adds a tracking link `code` → creator + campaign.
    pub fn link(mut self, code: &str, creator: &str, campaign: &str) -> Self {
        self.0
            .links
            .insert(LinkCode::new(code), target(creator, campaign));
        self
    }

    /// Adds a promo code → creator + campaign.
    pub fn promo(mut self, code: &str, creator: &str, campaign: &str) -> Self {
        self.0.promo_codes.insert(
            PromoCode::parse("code", code).expect("promo code"),
            target(creator, campaign),
        );
        self
    }

    /// Changes the tenant-wide settings.
    pub fn settings(mut self, f: impl FnOnce(&mut payoff_core::program::Settings)) -> Self {
        f(&mut self.0.settings);
        self
    }

    /// The program, checked.
    pub fn build(self) -> Program {
        self.0.check().expect("test program is consistent");
        self.0
    }
}

fn target(creator: &str, campaign: &str) -> Target {
    Target {
        creator: CreatorId::new(creator),
        campaign: CampaignId::new(campaign),
    }
}

/// A USD campaign with the spec's defaults: last click, 30-day lookback, code precedence
/// on, monthly periods, always active, no plans.
pub fn campaign(id: &str) -> Campaign {
    Campaign {
        id: CampaignId::new(id),
        name: id.to_owned(),
        currency: currency("USD"),
        model: Model::LastClick,
        lookback: DEFAULT_LOOKBACK,
        code_precedence: true,
        active_from: None,
        active_until: None,
        period: PeriodKind::Month,
        plans: Vec::new(),
    }
}

/// Campaign options.
pub trait CampaignExt {
    /// Adds a plan.
    fn plan(self, plan: Plan) -> Self;
    /// Sets the model.
    fn model(self, model: Model) -> Self;
    /// Sets the lookback.
    fn lookback(self, lookback: Duration) -> Self;
    /// Turns code precedence off.
    fn codes_after_clicks(self) -> Self;
    /// Sets the currency.
    fn currency(self, code: &str) -> Self;
}

impl CampaignExt for Campaign {
    fn plan(mut self, plan: Plan) -> Self {
        self.plans.push(plan);
        self
    }
    fn model(mut self, model: Model) -> Self {
        self.model = model;
        self
    }
    fn lookback(mut self, lookback: Duration) -> Self {
        self.lookback = lookback;
        self
    }
    fn codes_after_clicks(mut self) -> Self {
        self.code_precedence = false;
        self
    }
    fn currency(mut self, code: &str) -> Self {
        self.currency = currency(code);
        self
    }
}

fn plan(id: &str, kind: PlanKind) -> Plan {
    Plan {
        id: PlanId::new(id),
        kind,
        new_customer_only: false,
        recurring_periods: None,
        cap_amount: None,
        cap_count: None,
        hold: DEFAULT_HOLD,
    }
}

/// Revenue share at `rate` (a fraction: "0.10" for 10%).
pub fn cps_percent(id: &str, rate: &str) -> Plan {
    plan(
        id,
        PlanKind::CpsPercent {
            rate: d(rate),
            category_rates: BTreeMap::new(),
        },
    )
}

/// Revenue share with per-category rates.
pub fn cps_by_category(id: &str, rate: &str, categories: &[(&str, &str)]) -> Plan {
    plan(
        id,
        PlanKind::CpsPercent {
            rate: d(rate),
            category_rates: categories
                .iter()
                .map(|(c, r)| (Arc::from(*c), d(r)))
                .collect(),
        },
    )
}

/// A fixed amount per order.
pub fn cps_flat(id: &str, amount: &str) -> Plan {
    plan(id, PlanKind::CpsFlat { amount: d(amount) })
}

/// A fixed amount per paid click.
pub fn cpc(id: &str, amount: &str) -> Plan {
    plan(id, PlanKind::Cpc { amount: d(amount) })
}

/// A fixed amount per lead.
pub fn cpl(id: &str, amount: &str, qualified_only: bool) -> Plan {
    plan(
        id,
        PlanKind::Cpl {
            amount: d(amount),
            qualified_only,
        },
    )
}

/// A marginal tiered rate by order count: `(from_nth_order, rate)`.
pub fn tiered_by_count(id: &str, tiers: &[(u64, &str)]) -> Plan {
    plan(
        id,
        PlanKind::Tiered {
            basis: TierBasis::Count,
            tiers: tiers
                .iter()
                .map(|(from, rate)| Tier {
                    from: Decimal::from(*from),
                    rate: d(rate),
                })
                .collect(),
        },
    )
}

/// Milestone bonuses: `(threshold, bonus)`.
pub fn milestones(id: &str, milestones: &[(u64, &str)]) -> Plan {
    plan(
        id,
        PlanKind::Milestone {
            milestones: milestones
                .iter()
                .map(|(threshold, bonus)| Milestone {
                    threshold: *threshold,
                    bonus: d(bonus),
                })
                .collect(),
        },
    )
}

/// A base fee per creator per period.
pub fn base_fee(id: &str, amount: &str) -> Plan {
    plan(id, PlanKind::BaseFee { amount: d(amount) })
}

/// Pay per engagement: per view, like, comment, share, and the minimum views.
pub fn engagement(id: &str, rates: [&str; 4], minimum_views: u64) -> Plan {
    plan(
        id,
        PlanKind::Engagement {
            per_view: d(rates[0]),
            per_like: d(rates[1]),
            per_comment: d(rates[2]),
            per_share: d(rates[3]),
            minimum_views,
        },
    )
}

/// Plan options.
pub trait PlanExt {
    /// Pays only for new customers.
    fn new_customer_only(self) -> Self;
    /// Renewals pay for `n` periods.
    fn recurring(self, n: u32) -> Self;
    /// Pays at most this much per creator per period.
    fn cap_amount(self, cap: &str) -> Self;
    /// Pays at most this many conversions per creator per period.
    fn cap_count(self, cap: u64) -> Self;
    /// Hold period.
    fn hold(self, hold: Duration) -> Self;
}

impl PlanExt for Plan {
    fn new_customer_only(mut self) -> Self {
        self.new_customer_only = true;
        self
    }
    fn recurring(mut self, n: u32) -> Self {
        self.recurring_periods = Some(n);
        self
    }
    fn cap_amount(mut self, cap: &str) -> Self {
        self.cap_amount = Some(d(cap));
        self
    }
    fn cap_count(mut self, cap: u64) -> Self {
        self.cap_count = Some(cap);
        self
    }
    fn hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }
}

/// The usual one-campaign program: campaign `c1` with `plans`, creators `anna` and `ben`,
/// links `L-anna` / `L-ben`, promo codes `ANNA10` / `BEN10`.
pub fn one_campaign(c: Campaign) -> Program {
    let id = c.id.as_str().to_owned();
    program()
        .campaign(c)
        .creators(&["anna", "ben", "cleo"])
        .link("L-anna", "anna", &id)
        .link("L-ben", "ben", &id)
        .link("L-cleo", "cleo", &id)
        .promo("ANNA10", "anna", &id)
        .promo("BEN10", "ben", &id)
        .build()
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

/// An event under construction: a [`RawEvent`] as a client would send it.
#[derive(Debug, Clone)]
pub struct Ev(pub RawEvent);

fn raw(id: &str, at: Timestamp, payload: RawPayload) -> RawEvent {
    RawEvent {
        event_id: id.to_owned(),
        occurred_at: Some(at),
        payload: Some(payload),
        ..RawEvent::default()
    }
}

fn usd(amount: &str) -> Option<RawMoney> {
    Some(RawMoney {
        amount: amount.to_owned(),
        currency: "USD".to_owned(),
    })
}

impl Ev {
    /// A click on tracking link `link` by `visitor`.
    pub fn click(id: &str, at: Timestamp, visitor: &str, link: &str) -> Self {
        Self(raw(
            id,
            at,
            RawPayload::Click(RawClick {
                visitor_id: visitor.to_owned(),
                link_code: link.to_owned(),
                ..RawClick::default()
            }),
        ))
    }

    /// A signup (lead) by `visitor`.
    pub fn signup(id: &str, at: Timestamp, visitor: &str, lead: &str) -> Self {
        Self(raw(
            id,
            at,
            RawPayload::Signup(RawSignup {
                visitor_id: visitor.to_owned(),
                lead_id: lead.to_owned(),
                ..RawSignup::default()
            }),
        ))
    }

    /// An order of `amount` USD by `visitor`.
    pub fn order(id: &str, at: Timestamp, visitor: &str, order: &str, amount: &str) -> Self {
        Self(raw(
            id,
            at,
            RawPayload::Order(RawOrder {
                visitor_id: visitor.to_owned(),
                order_id: order.to_owned(),
                amount: usd(amount),
                ..RawOrder::default()
            }),
        ))
    }

    /// A refund of `amount` USD of `order` (`None`: the whole order).
    pub fn refund(id: &str, at: Timestamp, order: &str, amount: Option<&str>) -> Self {
        Self(raw(
            id,
            at,
            RawPayload::Adjustment(RawAdjustment {
                order_id: order.to_owned(),
                kind: Some(AdjustmentKind::Refund),
                amount: amount.and_then(usd),
                reason: String::new(),
            }),
        ))
    }

    /// A lead qualified (`true`) or rejected.
    pub fn lead_status(id: &str, at: Timestamp, lead: &str, qualified: bool) -> Self {
        Self(raw(
            id,
            at,
            RawPayload::LeadStatus(RawLeadStatus {
                lead_id: lead.to_owned(),
                qualified: Some(qualified),
            }),
        ))
    }

    /// A cumulative engagement snapshot: views, likes, comments, shares.
    pub fn engagement(
        id: &str,
        at: Timestamp,
        creator: &str,
        campaign: &str,
        post: &str,
        counts: [u64; 4],
    ) -> Self {
        Self(raw(
            id,
            at,
            RawPayload::Engagement(RawEngagement {
                creator_id: creator.to_owned(),
                campaign_id: campaign.to_owned(),
                post_id: post.to_owned(),
                platform: "instagram".to_owned(),
                views: counts[0],
                likes: counts[1],
                comments: counts[2],
                shares: counts[3],
            }),
        ))
    }

    /// Sets the customer id.
    pub fn customer(mut self, customer: &str) -> Self {
        self.0.customer_id = customer.to_owned();
        self
    }

    /// Sets the IP hash.
    pub fn ip(mut self, ip_hash: &str) -> Self {
        self.0.ip_hash = ip_hash.to_owned();
        self
    }

    fn order_mut(&mut self) -> &mut RawOrder {
        match &mut self.0.payload {
            Some(RawPayload::Order(o)) => o,
            _ => panic!("not an order"),
        }
    }

    /// Adds promo codes (orders and signups).
    pub fn code(mut self, code: &str) -> Self {
        match &mut self.0.payload {
            Some(RawPayload::Order(o)) => o.promo_codes.push(code.to_owned()),
            Some(RawPayload::Signup(s)) => s.promo_code = code.to_owned(),
            _ => panic!("only orders and signups carry codes"),
        }
        self
    }

    /// Adds a line item (orders).
    pub fn line(mut self, sku: &str, category: &str, quantity: u32, unit_price: &str) -> Self {
        self.order_mut().line_items.push(RawLineItem {
            sku: sku.to_owned(),
            category: category.to_owned(),
            quantity,
            unit_price: unit_price.to_owned(),
        });
        self
    }

    /// Marks the order as the customer's first (or not).
    pub fn first_order(mut self, first: bool) -> Self {
        self.order_mut().first_order = Some(first);
        self
    }

    /// Marks the order as a renewal of `of`.
    pub fn renewal_of(mut self, of: &str) -> Self {
        self.order_mut().renewal_of = of.to_owned();
        self
    }

    /// Sets the buyer's email hash (orders and signups).
    pub fn email(mut self, hash: &str) -> Self {
        match &mut self.0.payload {
            Some(RawPayload::Order(o)) => o.email_hash = hash.to_owned(),
            Some(RawPayload::Signup(s)) => s.email_hash = hash.to_owned(),
            _ => panic!("only orders and signups carry an email hash"),
        }
        self
    }

    /// Sets the adjustment kind.
    pub fn kind(mut self, kind: AdjustmentKind) -> Self {
        match &mut self.0.payload {
            Some(RawPayload::Adjustment(a)) => a.kind = Some(kind),
            _ => panic!("not an adjustment"),
        }
        self
    }

    /// Validates the event (judged at its own `occurred_at`, so never "in the future").
    pub fn event(&self) -> Event {
        let now = self.0.occurred_at.unwrap_or(BASE);
        Event::validate(&self.0, now).expect("test event is valid")
    }
}

// ---------------------------------------------------------------------------------------
// When / then
// ---------------------------------------------------------------------------------------

/// Runs `events` (in the given arrival order) through a fresh engine and flushes it.
pub fn run(program: Program, events: impl IntoIterator<Item = Ev>) -> Engine {
    run_history(ProgramHistory::single(program), events)
}

/// Runs `events` under a program history.
pub fn run_history(history: ProgramHistory, events: impl IntoIterator<Item = Ev>) -> Engine {
    let mut engine = Engine::new(history);
    for e in events {
        engine.push(e.event());
    }
    engine.finish();
    engine
}

/// Entries of one kind, in order.
pub fn of_kind(engine: &Engine, kind: EntryKind) -> Vec<&LedgerEntry> {
    engine.entries.iter().filter(|e| e.kind == kind).collect()
}

/// The amounts of entries of one kind, in order.
pub fn amounts(engine: &Engine, kind: EntryKind) -> Vec<Decimal> {
    of_kind(engine, kind)
        .into_iter()
        .map(|e| e.amount.amount)
        .collect()
}

/// Sum of every entry of one creator.
pub fn net_for(engine: &Engine, creator: &str) -> Decimal {
    engine
        .entries
        .iter()
        .filter(|e| e.creator.as_str() == creator)
        .map(|e| e.amount.amount)
        .sum()
}

/// Sum of entries of one creator and kind.
pub fn sum_for(engine: &Engine, creator: &str, kind: EntryKind) -> Decimal {
    engine
        .entries
        .iter()
        .filter(|e| e.creator.as_str() == creator && e.kind == kind)
        .map(|e| e.amount.amount)
        .sum()
}

/// `n` orders by distinct visitors, each through anna's link a minute before, one hour
/// apart starting at `start`: ids `o1..=on`.
pub fn orders_via_link(link: &str, start: Timestamp, n: usize, amount: &str) -> Vec<Ev> {
    let mut events = Vec::with_capacity(2 * n);
    for i in 1..=n {
        let at = start.plus(Duration::hours(i as i64));
        let visitor = format!("v{i}");
        events.push(Ev::click(
            &format!("c{i}"),
            at.minus(Duration::minutes(1)),
            &visitor,
            link,
        ));
        events.push(Ev::order(
            &format!("e-o{i}"),
            at,
            &visitor,
            &format!("o{i}"),
            amount,
        ));
    }
    events
}
