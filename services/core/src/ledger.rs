//! The ledger fold (§6, §7): credits in, append-only entries out.
//!
//! One [`Book`] per (campaign, creator): the unit of ordering and of partitioning on the
//! `credits` topic. [`decide`] reads the book and the program in force at the credit's
//! event time and returns [`LedgerFact`]s; [`apply`] folds them in. Entries are never
//! changed: a refund is a reversal entry that refers to the accrual it corrects, with a
//! deterministic id, so processing a credit twice changes nothing.
//!
//! Choices where the spec is silent (documented here and in ARCHITECTURE.md):
//! - Tier progress counts each credited order once per creator credited (a split order
//!   counts for each of its creators); KPIs weight by share.
//! - A tiered rate's tier is chosen by the order's ordinal in the period (count basis) or
//!   the revenue credited before it (revenue basis); the whole order takes that rate.
//! - Caps count gross usage: a later refund does not free cap room.
//! - A base fee is earned with the creator's first credit of the period.
//! - A renewal pays under plans with `recurring_periods = N` when it falls 1..=N periods
//!   after the original order's period.

mod note;

use std::{collections::BTreeMap, sync::Arc};

use rust_decimal::Decimal;
use serde::Serialize;

use crate::{
    FastMap, FastSet,
    credit::{Credit, CreditKind},
    event::Engagement,
    ids::{CampaignId, CreatorId, DerivedId, EventId, LeadId, OrderId, PlanId, PostId, RecordId},
    kpi::{KpiDelta, KpiTotals},
    money::{Currency, Money, allocate},
    program::{Campaign, Plan, PlanKind, ProgramHistory, TierBasis},
    time::{Duration, Period, Timestamp},
};

pub use note::{Cause, InputKey, Note};

/// The kinds of ledger entry (§7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Commission for a credit.
    Accrual,
    /// A refund, cancel, chargeback or rejected lead, correcting an accrual.
    Reversal,
    /// A milestone bonus.
    Bonus,
    /// A milestone bonus whose threshold was lost during its hold.
    BonusReversal,
    /// A base fee (retainer) for a period.
    BaseFee,
    /// Money paid out (negative).
    Payout,
    /// A manual correction by the brand.
    ManualAdjustment,
}

impl EntryKind {
    /// Lower-case name (a bounded label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accrual => "accrual",
            Self::Reversal => "reversal",
            Self::Bonus => "bonus",
            Self::BonusReversal => "bonus_reversal",
            Self::BaseFee => "base_fee",
            Self::Payout => "payout",
            Self::ManualAdjustment => "manual_adjustment",
        }
    }

    /// Entries that earn money and carry a hold.
    pub fn is_earning(self) -> bool {
        matches!(
            self,
            Self::Accrual | Self::Bonus | Self::BaseFee | Self::ManualAdjustment
        )
    }

    /// Entries that correct an earlier entry.
    pub fn is_reversal(self) -> bool {
        matches!(self, Self::Reversal | Self::BonusReversal)
    }
}

/// One append-only ledger entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LedgerEntry {
    /// Deterministic id derived from its cause.
    pub id: DerivedId,
    /// Campaign.
    pub campaign: CampaignId,
    /// Creator.
    pub creator: CreatorId,
    /// Kind.
    pub kind: EntryKind,
    /// Signed amount: positive earns, negative reverses or pays out.
    pub amount: Money,
    /// Event time of the cause.
    pub occurred_at: Timestamp,
    /// Pending until this instant, approved after.
    pub hold_until: Timestamp,
    /// The event, credit or record that caused it.
    pub cause: Cause,
    /// The credit it belongs to, if any.
    pub credit: Option<DerivedId>,
    /// The entry it corrects (reversals).
    pub refers_to: Option<DerivedId>,
    /// The plan that priced it.
    pub plan: Option<PlanId>,
    /// The commission period.
    pub period: Period,
    /// The order, if any.
    pub order: Option<OrderId>,
    /// The lead, if any.
    pub lead: Option<LeadId>,
    /// Human note (rates, refund fraction, milestone).
    pub note: Note,
}

/// An input of the ledger for one (campaign, creator).
#[derive(Debug, Clone, PartialEq)]
pub enum LedgerInput {
    /// A credit from the attributor.
    Credit(Credit),
    /// An engagement snapshot of a post.
    Engagement {
        /// The event.
        event: EventId,
        /// Event time.
        at: Timestamp,
        /// Cumulative counters.
        engagement: Engagement,
    },
    /// A payout recorded through Admin.
    Payout {
        /// Record id (idempotency key).
        id: RecordId,
        /// Campaign paid for.
        campaign: CampaignId,
        /// Creator paid.
        creator: CreatorId,
        /// Amount paid (positive).
        amount: Money,
        /// When.
        at: Timestamp,
        /// Note.
        note: String,
    },
    /// A manual adjustment recorded through Admin.
    Manual {
        /// Record id (idempotency key).
        id: RecordId,
        /// Campaign.
        campaign: CampaignId,
        /// Creator.
        creator: CreatorId,
        /// Signed amount.
        amount: Money,
        /// When.
        at: Timestamp,
        /// Reason.
        note: String,
    },
}

impl LedgerInput {
    /// The (campaign, creator) book this input belongs to.
    pub fn key(&self) -> (&CampaignId, &CreatorId) {
        match self {
            Self::Credit(c) => (&c.campaign, &c.creator),
            Self::Engagement { engagement, .. } => (&engagement.campaign, &engagement.creator),
            Self::Payout {
                campaign, creator, ..
            }
            | Self::Manual {
                campaign, creator, ..
            } => (campaign, creator),
        }
    }

    /// Event time.
    pub fn at(&self) -> Timestamp {
        match self {
            Self::Credit(c) => c.occurred_at,
            Self::Engagement { at, .. } | Self::Payout { at, .. } | Self::Manual { at, .. } => *at,
        }
    }

    /// What makes this input unique in its book.
    pub fn idempotency_key(&self) -> InputKey {
        match self {
            Self::Credit(c) => InputKey::Credit(c.id),
            Self::Engagement { event, .. } => InputKey::Engagement(event.clone()),
            Self::Payout { id, .. } => InputKey::Payout(id.clone()),
            Self::Manual { id, .. } => InputKey::Manual(id.clone()),
        }
    }
}

/// One accrual of a credit, remembered for its reversals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accrual {
    /// The accrual entry.
    pub entry: DerivedId,
    /// Its plan.
    pub plan: PlanId,
    /// Its amount.
    #[serde(with = "crate::money::decimal_str")]
    pub amount: Decimal,
    /// How much of it has been reversed.
    #[serde(with = "crate::money::decimal_str")]
    pub reversed: Decimal,
}

/// What the book remembers of a lead or order credit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreditRecord {
    /// The order or lead.
    pub order: Option<OrderId>,
    /// The lead.
    pub lead: Option<LeadId>,
    /// Period of the conversion.
    pub period: Period,
    /// This creator's share.
    #[serde(with = "crate::money::decimal_str")]
    pub share: Decimal,
    /// Revenue credited to this creator.
    #[serde(with = "crate::money::decimal_str")]
    pub revenue: Decimal,
    /// Counted in tier progress (orders) and not yet fully reversed.
    pub counted: bool,
    /// Fraction reversed so far.
    #[serde(with = "crate::money::decimal_str")]
    pub reversed_fraction: Decimal,
    /// Accruals made for it.
    pub accruals: Vec<Accrual>,
    /// CPL plans waiting for the lead to qualify: plan and amount.
    pub awaiting_qualification: Vec<(PlanId, Decimal)>,
    /// A returning customer.
    pub returning: bool,
    /// The lead was qualified (counted once in the qualified-leads KPI).
    pub qualified: bool,
}

/// One milestone's state in a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MilestoneState {
    /// The bonus entry.
    pub entry: DerivedId,
    /// Its amount.
    #[serde(with = "crate::money::decimal_str")]
    pub amount: Decimal,
    /// End of its hold.
    pub hold_until: Timestamp,
    /// Paid and not reversed.
    pub active: bool,
    /// How many times it has been earned (a reversed milestone can be earned again).
    pub generation: u32,
}

/// Usage of a plan in a period (for caps).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Amount paid.
    #[serde(with = "crate::money::decimal_str")]
    pub amount: Decimal,
    /// Conversions paid.
    pub count: u64,
}

/// One period of a book.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PeriodBook {
    /// Net credited orders.
    pub orders: i64,
    /// Net credited revenue.
    #[serde(with = "crate::money::decimal_str")]
    pub revenue: Decimal,
    /// Plan usage for caps.
    pub usage: BTreeMap<PlanId, Usage>,
    /// The base fee was earned.
    pub base_fee: bool,
    /// Milestones by (plan, threshold).
    pub milestones: BTreeMap<(PlanId, u64), MilestoneState>,
}

/// Engagement seen and paid for one post.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PostState {
    /// Largest cumulative counters seen: views, likes, comments, shares.
    pub seen: [u64; 4],
    /// Amount paid so far per engagement plan.
    pub paid: BTreeMap<PlanId, Decimal>,
}

/// The state of one (campaign, creator).
#[derive(Debug, Clone, Default)]
pub struct Book {
    /// Digests of the idempotency keys processed ([`InputKey::digest`]).
    processed: FastSet<u128>,
    periods: BTreeMap<i64, PeriodBook>,
    credits: FastMap<DerivedId, CreditRecord>,
    posts: FastMap<PostId, PostState>,
}

impl Book {
    /// A period's book, if any activity.
    pub fn period(&self, index: i64) -> Option<&PeriodBook> {
        self.periods.get(&index)
    }

    /// A credit's record.
    pub fn credit(&self, id: &DerivedId) -> Option<&CreditRecord> {
        self.credits.get(id)
    }
}

/// A change the ledger decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "fact")]
pub enum LedgerFact {
    /// The input was processed (idempotency).
    Processed {
        /// Its idempotency key.
        key: InputKey,
    },
    /// A new entry.
    Entry(LedgerEntry),
    /// A credit remembered for its corrections.
    CreditRecorded {
        /// The credit.
        credit: DerivedId,
        /// What to remember.
        record: CreditRecord,
    },
    /// A credit's reversed fraction grew.
    CreditReversed {
        /// The credit.
        credit: DerivedId,
        /// New cumulative fraction.
        #[serde(with = "crate::money::decimal_str")]
        fraction: Decimal,
        /// Still counted in tier progress.
        counted: bool,
    },
    /// A lead's CPL plans awaiting qualification were settled.
    LeadSettled {
        /// The lead credit.
        credit: DerivedId,
    },
    /// Tier progress changed.
    Progress {
        /// When.
        at: Timestamp,
        /// Campaign.
        campaign: CampaignId,
        /// Creator.
        creator: CreatorId,
        /// Period.
        period: Period,
        /// Change in net orders.
        orders: i64,
        /// Change in net revenue.
        #[serde(with = "crate::money::decimal_str")]
        revenue: Decimal,
    },
    /// A milestone's state changed.
    Milestone {
        /// Period.
        period: Period,
        /// Plan and threshold.
        plan: PlanId,
        /// Threshold.
        threshold: u64,
        /// New state.
        state: MilestoneState,
    },
    /// A post's engagement counters advanced.
    PostSeen {
        /// Post.
        post: PostId,
        /// New state.
        state: PostState,
    },
    /// KPI counters changed.
    Kpi(KpiDelta),
}

/// Why the ledger could not use an input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerSkip {
    /// No program version in force at the input's time.
    #[error("no program in force at {0}")]
    NoProgram(Timestamp),
    /// The campaign is not in the program.
    #[error("campaign {0} is not in the program")]
    UnknownCampaign(CampaignId),
    /// A payout or adjustment in another currency than the campaign's.
    #[error("amount in {found}, campaign pays in {expected}")]
    CurrencyMismatch {
        /// Campaign currency.
        expected: Currency,
        /// Given currency.
        found: Currency,
    },
}

struct Ctx<'a> {
    campaign: &'a Campaign,
    /// The cause of the input's entries.
    cause: Cause,
    /// For a credit, its id as text: what the ids of its entries are derived from.
    cause_text: &'a str,
    creator: &'a CreatorId,
    currency: Currency,
    facts: &'a mut Vec<LedgerFact>,
    kpi: KpiTotals,
    /// Usage added by this decision (decide reads, so it tracks its own additions).
    usage: Added<'a>,
}

/// Plan usage added by one decision, per (period, plan). A decision rarely caps more than
/// one plan, so the first is kept inline (no allocation for a click).
#[derive(Default)]
struct Added<'a> {
    first: Option<(i64, &'a PlanId, Usage)>,
    more: Vec<(i64, &'a PlanId, Usage)>,
}

impl<'a> Added<'a> {
    /// The usage added for (`period`, `plan`), starting at zero.
    fn entry(&mut self, period: i64, plan: &'a PlanId) -> &mut Usage {
        let matches = |e: &(i64, &PlanId, Usage)| e.0 == period && e.1 == plan;
        if self.first.as_ref().is_none_or(matches) {
            return &mut self
                .first
                .get_or_insert_with(|| (period, plan, Usage::default()))
                .2;
        }
        let at = match self.more.iter().position(matches) {
            Some(at) => at,
            None => {
                self.more.push((period, plan, Usage::default()));
                self.more.len() - 1
            }
        };
        &mut self.more[at].2
    }
}

impl<'a> Ctx<'a> {
    fn money(&self, amount: Decimal) -> Money {
        Money::new(amount, self.currency)
    }

    #[allow(clippy::too_many_arguments)]
    fn entry(
        &mut self,
        id: DerivedId,
        kind: EntryKind,
        amount: Decimal,
        at: Timestamp,
        hold: Duration,
        credit: Option<DerivedId>,
        refers_to: Option<DerivedId>,
        plan: Option<&PlanId>,
        period: Period,
        order: Option<&OrderId>,
        lead: Option<&LeadId>,
        note: Note,
    ) {
        if kind != EntryKind::Payout {
            self.kpi.cost += amount;
        }
        self.facts.push(LedgerFact::Entry(LedgerEntry {
            id,
            campaign: self.campaign.id.clone(),
            creator: self.creator.clone(),
            kind,
            amount: self.money(amount),
            occurred_at: at,
            hold_until: at.plus(hold),
            cause: self.cause.clone(),
            credit,
            refers_to,
            plan: plan.cloned(),
            period,
            order: order.cloned(),
            lead: lead.cloned(),
            note,
        }));
    }

    /// Applies the plan's caps to `amount` given usage so far, and records the usage.
    fn capped(&mut self, book: &Book, period: Period, plan: &'a Plan, amount: Decimal) -> Decimal {
        let base = book
            .periods
            .get(&period.index)
            .and_then(|p| p.usage.get(&plan.id))
            .cloned()
            .unwrap_or_default();
        let added = self.usage.entry(period.index, &plan.id);
        let used_count = base.count + added.count;
        let used_amount = base.amount + added.amount;
        if plan.cap_count.is_some_and(|cap| used_count >= cap) {
            return Decimal::ZERO;
        }
        let amount = match plan.cap_amount {
            Some(cap) => amount.min((cap - used_amount).max(Decimal::ZERO)),
            None => amount,
        };
        added.count += 1;
        added.amount += amount;
        amount
    }

    /// Books an accrual of `amount` under `plan`, within the plan's caps: returns the
    /// accrual to remember for its reversals, or `None` when the caps left nothing.
    #[allow(clippy::too_many_arguments)]
    fn accrue(
        &mut self,
        book: &Book,
        plan: &'a Plan,
        amount: Decimal,
        at: Timestamp,
        period: Period,
        id: DerivedId,
        of: AccrualOf<'_>,
        note: Note,
    ) -> Option<Accrual> {
        let paid = self.capped(book, period, plan, amount);
        if paid.is_zero() {
            return None;
        }
        self.entry(
            id,
            EntryKind::Accrual,
            paid,
            at,
            plan.hold,
            of.credit,
            None,
            Some(&plan.id),
            period,
            of.order,
            of.lead,
            note,
        );
        Some(Accrual {
            entry: id,
            plan: plan.id.clone(),
            amount: paid,
            reversed: Decimal::ZERO,
        })
    }
}

/// What an accrual belongs to: its credit, order or lead.
#[derive(Clone, Copy, Default)]
struct AccrualOf<'c> {
    credit: Option<DerivedId>,
    order: Option<&'c OrderId>,
    lead: Option<&'c LeadId>,
}

/// Decides what an input changes in one (campaign, creator) book. Reads only.
pub fn decide(
    book: &Book,
    programs: &ProgramHistory,
    input: &LedgerInput,
) -> Result<Vec<LedgerFact>, LedgerSkip> {
    let mut facts = Vec::new();
    decide_into(book, programs, input, &mut facts)?;
    Ok(facts)
}

/// [`decide`], appending the facts to `facts` (a buffer the caller reuses, so that the
/// hot path allocates nothing for them). On a skip, `facts` is left as it was.
pub fn decide_into(
    book: &Book,
    programs: &ProgramHistory,
    input: &LedgerInput,
    facts: &mut Vec<LedgerFact>,
) -> Result<(), LedgerSkip> {
    match input {
        LedgerInput::Credit(credit) => decide_with(book, programs, Input::Credit(credit), facts),
        other => decide_with(book, programs, Input::Other(other), facts),
    }
}

/// [`decide_into`] for a credit the caller keeps ([`LedgerInput::Credit`] without moving
/// the credit into an input).
pub fn decide_credit_into(
    book: &Book,
    programs: &ProgramHistory,
    credit: &Credit,
    facts: &mut Vec<LedgerFact>,
) -> Result<(), LedgerSkip> {
    decide_with(book, programs, Input::Credit(credit), facts)
}

/// A ledger input, borrowed: a credit on its own, or any [`LedgerInput`].
#[derive(Clone, Copy)]
enum Input<'a> {
    Credit(&'a Credit),
    Other(&'a LedgerInput),
}

fn decide_with(
    book: &Book,
    programs: &ProgramHistory,
    input: Input<'_>,
    facts: &mut Vec<LedgerFact>,
) -> Result<(), LedgerSkip> {
    let key = match input {
        Input::Credit(c) => InputKey::Credit(c.id),
        Input::Other(i) => i.idempotency_key(),
    };
    if book.processed.contains(&key.digest()) {
        return Ok(());
    }
    let (at, (campaign_id, creator)) = match input {
        Input::Credit(c) => (c.occurred_at, (&c.campaign, &c.creator)),
        Input::Other(i) => (i.at(), i.key()),
    };
    // Corrections are priced by the program that priced the original (the version their
    // credit carries), even when a later version no longer has the campaign.
    let credit = match input {
        Input::Credit(c) | Input::Other(LedgerInput::Credit(c)) => Some(c),
        Input::Other(_) => None,
    };
    let program = match credit {
        Some(Credit {
            kind: CreditKind::Reversal { .. } | CreditKind::LeadStatus { .. },
            config_version,
            ..
        }) => programs
            .version(*config_version)
            .or_else(|| programs.at(at)),
        _ => programs.at(at),
    }
    .ok_or(LedgerSkip::NoProgram(at))?;
    let campaign = program
        .campaigns
        .get(campaign_id)
        .ok_or_else(|| LedgerSkip::UnknownCampaign(campaign_id.clone()))?;
    let (cause, text) = match input {
        Input::Credit(c) | Input::Other(LedgerInput::Credit(c)) => {
            (Cause::Credit(c.id), Some(c.id.text()))
        }
        Input::Other(LedgerInput::Engagement { event, .. }) => (Cause::Event(event.clone()), None),
        Input::Other(LedgerInput::Payout { id, .. } | LedgerInput::Manual { id, .. }) => {
            (Cause::Record(id.clone()), None)
        }
    };
    let start = facts.len();
    facts.push(LedgerFact::Processed { key });
    let mut ctx = Ctx {
        campaign,
        cause,
        cause_text: text.as_ref().map_or("", |t| t.as_str()),
        creator,
        currency: campaign.currency,
        facts,
        kpi: KpiTotals::default(),
        usage: Added::default(),
    };
    let period = Period::containing(campaign.period, at);
    match input {
        Input::Credit(credit) | Input::Other(LedgerInput::Credit(credit)) => {
            decide_credit(book, &mut ctx, credit, period);
        }
        Input::Other(LedgerInput::Engagement {
            event,
            at,
            engagement,
        }) => decide_engagement(book, &mut ctx, event, *at, engagement, period),
        Input::Other(
            input @ (LedgerInput::Payout {
                id,
                amount,
                at,
                note,
                ..
            }
            | LedgerInput::Manual {
                id,
                amount,
                at,
                note,
                ..
            }),
        ) => {
            if amount.currency != ctx.currency {
                ctx.facts.truncate(start);
                return Err(LedgerSkip::CurrencyMismatch {
                    expected: ctx.currency,
                    found: amount.currency,
                });
            }
            let (kind, prefix, signed) = match input {
                LedgerInput::Payout { .. } => (EntryKind::Payout, "pay", -amount.amount),
                _ => (EntryKind::ManualAdjustment, "adj", amount.amount),
            };
            let entry_id = DerivedId::derive(
                prefix,
                &[campaign.id.as_str(), creator.as_str(), id.as_str()],
            );
            ctx.entry(
                entry_id,
                kind,
                ctx.currency.round(signed),
                *at,
                Duration(0),
                None,
                None,
                None,
                period,
                None,
                None,
                Note::Text(note.clone()),
            );
        }
    }
    let Ctx { facts, kpi, .. } = ctx;
    if kpi != KpiTotals::default() {
        facts.push(LedgerFact::Kpi(KpiDelta {
            at,
            campaign: campaign_id.clone(),
            creator: Some(creator.clone()),
            totals: kpi,
        }));
    }
    Ok(())
}

fn plan_applies(plan: &Plan, new_customer: bool, renewal_periods: Option<i64>) -> bool {
    if plan.new_customer_only && !new_customer {
        return false;
    }
    match (renewal_periods, plan.recurring_periods) {
        (None, _) => true,
        (Some(k), Some(n)) => k >= 1 && k <= i64::from(n),
        (Some(_), None) => false,
    }
}

fn base_fee(book: &Book, ctx: &mut Ctx<'_>, credit: &Credit, period: Period) {
    if book.periods.get(&period.index).is_some_and(|p| p.base_fee) {
        return;
    }
    let campaign = ctx.campaign;
    for plan in &campaign.plans {
        let PlanKind::BaseFee { amount } = plan.kind else {
            continue;
        };
        let id = DerivedId::derive(
            "fee",
            &[
                ctx.campaign.id.as_str(),
                ctx.creator.as_str(),
                plan.id.as_str(),
                &period.label(),
            ],
        );
        ctx.entry(
            id,
            EntryKind::BaseFee,
            amount,
            credit.occurred_at,
            plan.hold,
            Some(credit.id),
            None,
            Some(&plan.id),
            period,
            None,
            None,
            Note::BaseFee { period },
        );
    }
}

fn tier_rate(tiers: &[crate::program::Tier], position: Decimal) -> Decimal {
    tiers
        .iter()
        .rev()
        .find(|t| t.from <= position)
        .or(tiers.first())
        .map_or(Decimal::ZERO, |t| t.rate)
}

fn decide_credit(book: &Book, ctx: &mut Ctx<'_>, credit: &Credit, period: Period) {
    if credit.fraud.is_some() {
        return;
    }
    let at = credit.occurred_at;
    let cause = ctx.cause_text;
    match &credit.kind {
        CreditKind::Click { .. } => {
            ctx.kpi.clicks += 1;
            base_fee(book, ctx, credit, period);
            for plan in &ctx.campaign.plans {
                let PlanKind::Cpc { amount } = plan.kind else {
                    continue;
                };
                let id = DerivedId::derive("acc", &[cause, plan.id.as_str()]);
                let of = AccrualOf {
                    credit: Some(credit.id),
                    ..AccrualOf::default()
                };
                ctx.accrue(book, plan, amount, at, period, id, of, Note::Cpc { amount });
            }
        }
        CreditKind::Lead {
            lead,
            index,
            shares,
            new_customer,
        } => {
            let share = shares[*index].share;
            ctx.kpi.leads += share;
            base_fee(book, ctx, credit, period);
            let weights: Vec<Decimal> = shares.iter().map(|s| s.share).collect();
            let mut record = CreditRecord {
                order: None,
                lead: Some(lead.clone()),
                period,
                share,
                revenue: Decimal::ZERO,
                counted: false,
                reversed_fraction: Decimal::ZERO,
                accruals: Vec::new(),
                awaiting_qualification: Vec::new(),
                returning: !new_customer,
                qualified: false,
            };
            for plan in &ctx.campaign.plans {
                let PlanKind::Cpl {
                    amount,
                    qualified_only,
                } = plan.kind
                else {
                    continue;
                };
                if !plan_applies(plan, *new_customer, None) {
                    continue;
                }
                let part = allocate(amount, &weights, ctx.currency)[*index];
                if qualified_only {
                    record.awaiting_qualification.push((plan.id.clone(), part));
                    continue;
                }
                let id = DerivedId::derive("acc", &[cause, plan.id.as_str()]);
                let of = AccrualOf {
                    credit: Some(credit.id),
                    lead: Some(lead),
                    ..AccrualOf::default()
                };
                if let Some(accrual) = ctx.accrue(
                    book,
                    plan,
                    part,
                    at,
                    period,
                    id,
                    of,
                    Note::Cpl { amount, share },
                ) {
                    record.accruals.push(accrual);
                }
            }
            ctx.facts.push(LedgerFact::CreditRecorded {
                credit: credit.id,
                record,
            });
        }
        CreditKind::Order {
            order,
            index,
            shares,
            net,
            categories,
            new_customer,
            renewal,
            ..
        } => {
            decide_order(
                book,
                ctx,
                credit,
                period,
                order,
                *index,
                shares,
                *net,
                categories,
                *new_customer,
                renewal.as_ref(),
            );
        }
        CreditKind::Reversal {
            original,
            order,
            kind,
            cumulative_fraction,
        } => {
            decide_reversal(
                book,
                ctx,
                credit,
                original,
                Some(order),
                kind.as_str(),
                *cumulative_fraction,
            );
        }
        CreditKind::LeadStatus {
            original,
            lead,
            qualified,
        } => {
            let Some(record) = book.credits.get(original) else {
                return;
            };
            // A rejected lead stays rejected; a status repeated under a new event id
            // changes nothing (it must not count the lead twice in the KPIs).
            if record.reversed_fraction >= Decimal::ONE || (*qualified && record.qualified) {
                return;
            }
            if *qualified {
                ctx.kpi.qualified_leads += record.share;
                let mut updated = record.clone();
                updated.qualified = true;
                for (plan_id, part) in &record.awaiting_qualification {
                    let Some(plan) = ctx.campaign.plans.iter().find(|p| &p.id == plan_id) else {
                        continue;
                    };
                    let id =
                        DerivedId::derive("acc", &[original.text().as_str(), plan_id.as_str()]);
                    let of = AccrualOf {
                        credit: Some(*original),
                        lead: Some(lead),
                        ..AccrualOf::default()
                    };
                    if let Some(accrual) =
                        ctx.accrue(book, plan, *part, at, period, id, of, Note::CplQualified)
                    {
                        updated.accruals.push(accrual);
                    }
                }
                updated.awaiting_qualification.clear();
                ctx.facts.push(LedgerFact::CreditRecorded {
                    credit: *original,
                    record: updated,
                });
            } else {
                ctx.kpi.leads -= record.share;
                if record.qualified {
                    ctx.kpi.qualified_leads -= record.share;
                }
                decide_reversal(
                    book,
                    ctx,
                    credit,
                    original,
                    None,
                    "lead_rejected",
                    Decimal::ONE,
                );
            }
            ctx.facts
                .push(LedgerFact::LeadSettled { credit: *original });
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn decide_order(
    book: &Book,
    ctx: &mut Ctx<'_>,
    credit: &Credit,
    period: Period,
    order: &OrderId,
    index: usize,
    shares: &Arc<[crate::credit::Share]>,
    net: Money,
    categories: &[(Option<Arc<str>>, Decimal)],
    new_customer: bool,
    renewal: Option<&crate::credit::Renewal>,
) {
    let at = credit.occurred_at;
    let cause = ctx.cause_text;
    let share = shares[index].share;
    let weights: Vec<Decimal> = shares.iter().map(|s| s.share).collect();
    let same_currency = net.currency == ctx.currency;
    let revenue = if same_currency {
        allocate(ctx.currency.round(net.amount), &weights, ctx.currency)[index]
    } else {
        Decimal::ZERO
    };
    let before = book.periods.get(&period.index).cloned().unwrap_or_default();
    let ordinal = Decimal::from(before.orders + 1);
    let renewal_periods =
        renewal.map(|r| period.index - Period::containing(period.kind, r.original_at).index);

    ctx.kpi.orders += share;
    ctx.kpi.revenue += revenue;
    if !new_customer {
        ctx.kpi.returning_orders += share;
    }
    base_fee(book, ctx, credit, period);

    let mut accruals = Vec::new();
    let campaign = ctx.campaign;
    let plans = &campaign.plans;
    for plan in plans {
        if !plan_applies(plan, new_customer, renewal_periods) {
            continue;
        }
        let split_share = (share != Decimal::ONE).then_some(share);
        let (unsplit, note) = match &plan.kind {
            PlanKind::CpsFlat { amount } => (
                *amount,
                Note::Flat {
                    amount: *amount,
                    share: split_share,
                },
            ),
            PlanKind::CpsPercent {
                rate,
                category_rates,
            } if same_currency => {
                let raw: Decimal = categories
                    .iter()
                    .map(|(cat, amount)| {
                        amount
                            * cat
                                .as_ref()
                                .and_then(|c| category_rates.get(c))
                                .unwrap_or(rate)
                    })
                    .sum();
                (
                    ctx.currency.round(raw),
                    Note::Percent {
                        rate: *rate,
                        net,
                        share: split_share,
                    },
                )
            }
            PlanKind::Tiered { basis, tiers } if same_currency => {
                let position = match basis {
                    TierBasis::Count => ordinal,
                    TierBasis::Revenue => before.revenue,
                };
                let rate = tier_rate(tiers, position);
                (
                    ctx.currency.round(net.amount * rate),
                    Note::Tier {
                        rate,
                        position,
                        share: split_share,
                    },
                )
            }
            _ => continue,
        };
        let part = allocate(unsplit, &weights, ctx.currency)[index];
        let id = DerivedId::derive("acc", &[cause, plan.id.as_str()]);
        let of = AccrualOf {
            credit: Some(credit.id),
            order: Some(order),
            ..AccrualOf::default()
        };
        if let Some(accrual) = ctx.accrue(book, plan, part, at, period, id, of, note) {
            accruals.push(accrual);
        }
    }

    let after_orders = before.orders + 1;
    ctx.facts.push(LedgerFact::Progress {
        at,
        campaign: ctx.campaign.id.clone(),
        creator: ctx.creator.clone(),
        period,
        orders: 1,
        revenue,
    });
    for plan in plans {
        let PlanKind::Milestone { milestones } = &plan.kind else {
            continue;
        };
        for m in milestones {
            let state = before.milestones.get(&(plan.id.clone(), m.threshold));
            if after_orders < i64::try_from(m.threshold).unwrap_or(i64::MAX)
                || state.is_some_and(|s| s.active)
            {
                continue;
            }
            let generation = state.map_or(0, |s| s.generation + 1);
            let id = DerivedId::derive(
                "bon",
                &[
                    ctx.campaign.id.as_str(),
                    ctx.creator.as_str(),
                    plan.id.as_str(),
                    &period.label(),
                    &m.threshold.to_string(),
                    &generation.to_string(),
                ],
            );
            ctx.entry(
                id,
                EntryKind::Bonus,
                m.bonus,
                at,
                plan.hold,
                Some(credit.id),
                None,
                Some(&plan.id),
                period,
                Some(order),
                None,
                Note::Milestone {
                    threshold: m.threshold,
                    period,
                },
            );
            let state = MilestoneState {
                entry: id,
                amount: m.bonus,
                hold_until: at.plus(plan.hold),
                active: true,
                generation,
            };
            ctx.facts.push(LedgerFact::Milestone {
                period,
                plan: plan.id.clone(),
                threshold: m.threshold,
                state,
            });
        }
    }
    let record = CreditRecord {
        order: Some(order.clone()),
        lead: None,
        period,
        share,
        revenue,
        counted: true,
        reversed_fraction: Decimal::ZERO,
        accruals,
        awaiting_qualification: Vec::new(),
        returning: !new_customer,
        qualified: false,
    };
    ctx.facts.push(LedgerFact::CreditRecorded {
        credit: credit.id,
        record,
    });
}

fn decide_reversal(
    book: &Book,
    ctx: &mut Ctx<'_>,
    credit: &Credit,
    original: &DerivedId,
    order: Option<&OrderId>,
    kind: &'static str,
    cumulative: Decimal,
) {
    let Some(record) = book.credits.get(original) else {
        return;
    };
    if cumulative <= record.reversed_fraction {
        return;
    }
    let at = credit.occurred_at;
    let order = record.order.as_ref().or(order);
    for accrual in &record.accruals {
        let target = if cumulative >= Decimal::ONE {
            accrual.amount
        } else {
            ctx.currency.round(accrual.amount * cumulative)
        };
        let delta = target - accrual.reversed;
        if delta.is_zero() {
            continue;
        }
        let id = DerivedId::derive(
            "rvs",
            &[accrual.entry.text().as_str(), credit.cause.as_str()],
        );
        ctx.entry(
            id,
            EntryKind::Reversal,
            -delta,
            at,
            Duration(0),
            Some(*original),
            Some(accrual.entry),
            Some(&accrual.plan),
            record.period,
            order,
            record.lead.as_ref(),
            Note::Reversal { kind, cumulative },
        );
    }
    let revenue_delta = ctx.currency.round(record.revenue * cumulative)
        - ctx
            .currency
            .round(record.revenue * record.reversed_fraction);
    let uncount = record.counted && cumulative >= Decimal::ONE;
    ctx.kpi.revenue -= revenue_delta;
    if uncount {
        ctx.kpi.orders -= record.share;
        if record.returning {
            ctx.kpi.returning_orders -= record.share;
        }
    }
    if record.order.is_some() {
        ctx.facts.push(LedgerFact::Progress {
            at,
            campaign: ctx.campaign.id.clone(),
            creator: ctx.creator.clone(),
            period: record.period,
            orders: -i64::from(uncount),
            revenue: -revenue_delta,
        });
    }
    ctx.facts.push(LedgerFact::CreditReversed {
        credit: *original,
        fraction: cumulative,
        counted: record.counted && !uncount,
    });
    if !uncount {
        return;
    }
    // Milestones of that period whose threshold is no longer met, still on hold, are reversed.
    let Some(pb) = book.periods.get(&record.period.index) else {
        return;
    };
    let orders_after = pb.orders - 1;
    for ((plan, threshold), state) in &pb.milestones {
        if !state.active
            || orders_after >= i64::try_from(*threshold).unwrap_or(i64::MAX)
            || at >= state.hold_until
        {
            continue;
        }
        let id = DerivedId::derive("bnr", &[state.entry.text().as_str(), credit.cause.as_str()]);
        ctx.entry(
            id,
            EntryKind::BonusReversal,
            -state.amount,
            at,
            Duration(0),
            None,
            Some(state.entry),
            Some(plan),
            record.period,
            order,
            None,
            Note::MilestoneLost {
                threshold: *threshold,
            },
        );
        let new_state = MilestoneState {
            active: false,
            ..state.clone()
        };
        ctx.facts.push(LedgerFact::Milestone {
            period: record.period,
            plan: plan.clone(),
            threshold: *threshold,
            state: new_state,
        });
    }
}

fn decide_engagement(
    book: &Book,
    ctx: &mut Ctx<'_>,
    event: &EventId,
    at: Timestamp,
    e: &Engagement,
    period: Period,
) {
    let old = book.posts.get(&e.post).cloned().unwrap_or_default();
    let now = [e.views, e.likes, e.comments, e.shares];
    let seen: [u64; 4] = std::array::from_fn(|i| old.seen[i].max(now[i]));
    let delta: [u64; 4] = std::array::from_fn(|i| seen[i] - old.seen[i]);
    ctx.kpi.views += delta[0];
    ctx.kpi.likes += delta[1];
    ctx.kpi.comments += delta[2];
    ctx.kpi.shares += delta[3];
    let mut state = PostState {
        seen,
        paid: old.paid.clone(),
    };
    let campaign = ctx.campaign;
    let plans = &campaign.plans;
    for plan in plans {
        let PlanKind::Engagement {
            per_view,
            per_like,
            per_comment,
            per_share,
            minimum_views,
        } = plan.kind
        else {
            continue;
        };
        if seen[0] < minimum_views {
            continue;
        }
        let rates = [per_view, per_like, per_comment, per_share];
        let due = ctx.currency.round(
            seen.iter()
                .zip(rates)
                .map(|(n, r)| Decimal::from(*n) * r)
                .sum(),
        );
        let paid_before = old.paid.get(&plan.id).copied().unwrap_or_default();
        let owed = due - paid_before;
        if owed <= Decimal::ZERO {
            continue;
        }
        let id = DerivedId::derive("eng", &[event.as_str(), plan.id.as_str()]);
        let note = Note::Post {
            post: e.post.clone(),
            views: seen[0],
        };
        if let Some(accrual) =
            ctx.accrue(book, plan, owed, at, period, id, AccrualOf::default(), note)
        {
            state
                .paid
                .insert(plan.id.clone(), paid_before + accrual.amount);
        }
    }
    if state != old {
        ctx.facts.push(LedgerFact::PostSeen {
            post: e.post.clone(),
            state,
        });
    }
}

/// Folds one fact into the book.
pub fn apply(book: &mut Book, fact: &LedgerFact) {
    match fact {
        LedgerFact::Processed { key } => {
            book.processed.insert(key.digest());
        }
        LedgerFact::Entry(e) => {
            let Some(plan) = &e.plan else { return };
            let pb = book.periods.entry(e.period.index).or_default();
            match e.kind {
                EntryKind::Accrual => {
                    if !pb.usage.contains_key(plan) {
                        pb.usage.insert(plan.clone(), Usage::default());
                    }
                    if let Some(usage) = pb.usage.get_mut(plan) {
                        usage.count += 1;
                        usage.amount += e.amount.amount;
                    }
                }
                EntryKind::BaseFee => pb.base_fee = true,
                EntryKind::Reversal => {
                    if let Some(accrual) = e
                        .credit
                        .and_then(|c| book.credits.get_mut(&c))
                        .and_then(|r| r.accruals.iter_mut().find(|a| Some(a.entry) == e.refers_to))
                    {
                        accrual.reversed -= e.amount.amount;
                    }
                }
                _ => {}
            }
        }
        LedgerFact::CreditRecorded { credit, record } => {
            book.credits.insert(*credit, record.clone());
        }
        LedgerFact::CreditReversed {
            credit,
            fraction,
            counted,
        } => {
            if let Some(r) = book.credits.get_mut(credit) {
                r.reversed_fraction = *fraction;
                r.counted = *counted;
            }
        }
        LedgerFact::LeadSettled { credit } => {
            if let Some(r) = book.credits.get_mut(credit) {
                r.awaiting_qualification.clear();
            }
        }
        LedgerFact::Progress {
            period,
            orders,
            revenue,
            ..
        } => {
            let pb = book.periods.entry(period.index).or_default();
            pb.orders += orders;
            pb.revenue += revenue;
        }
        LedgerFact::Milestone {
            period,
            plan,
            threshold,
            state,
        } => {
            book.periods
                .entry(period.index)
                .or_default()
                .milestones
                .insert((plan.clone(), *threshold), state.clone());
        }
        LedgerFact::PostSeen { post, state } => {
            book.posts.insert(post.clone(), state.clone());
        }
        LedgerFact::Kpi(_) => {}
    }
}
