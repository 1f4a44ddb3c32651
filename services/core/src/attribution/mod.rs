//! Attribution (§5): which creators earn each conversion.
//!
//! Shaped as `decide(&state, lookups, event) -> Vec<Fact>` and `apply(&mut state, &fact)`:
//! [`decide`] reads, never writes; every change to the state is a [`Fact`] that [`apply`]
//! folds in, so a service can persist facts and outputs in one transaction and a replay of
//! the facts rebuilds the state.
//!
//! Conversions and their corrections live in different partitions when streamed (an
//! adjustment names only its order), so the order/lead index is not part of
//! [`AttributionState`]: the caller looks up the [`ConversionRecord`] a decision needs and
//! passes it in, and folds [`Fact::Indexed`] / [`Fact::Refunded`] into its index.
//!
//! # Layout
//! - `models`: the five models as exact shares.
//! - `reorder`: the late-click reorder buffer.
//! - `changelog`: the state as keyed entries, for a service's changelog and restore.

pub mod changelog;
pub mod models;
pub mod reorder;

pub use changelog::{StateEntry, StateEntryRef, StateKey};

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    hash::BuildHasher,
    sync::Arc,
};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    FastMap,
    credit::{
        Candidate, Credit, CreditKind, Explanation, FraudCheck, FraudReason, Renewal, Rule, Share,
    },
    event::{Click, ClickTarget, Event, Order, Payload, Signup},
    ids::{
        CampaignId, CreatorId, CustomerId, DerivedId, EventId, LeadId, LinkCode, OrderId, VisitorId,
    },
    money::{Money, allocate},
    program::{CPC_UNIQUE_WINDOW, Program, ProgramHistory},
    time::{Duration, Timestamp},
};

/// Most touchpoints kept per visitor; older ones are dropped first.
pub const MAX_TOUCHES_PER_VISITOR: usize = 64;

/// How often (in event time) attribution state is swept for expired entries, by `Engine`
/// and by the attributor's tasks alike.
pub const EXPIRY_EVERY: Duration = Duration::hours(1);

/// A click remembered for later conversions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Touch {
    /// The click's event id.
    pub click: EventId,
    /// When it happened.
    pub at: Timestamp,
    /// Creator credited by the click.
    pub creator: CreatorId,
    /// Campaign of the click.
    pub campaign: CampaignId,
    /// Set when the click was flagged.
    pub fraud: Option<FraudReason>,
}

/// What the attributor remembers of one visitor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VisitorState {
    /// Recent clicks, oldest first.
    pub touches: VecDeque<Touch>,
    /// Last paid click per (creator, campaign, link), for CPC uniqueness.
    pub paid_clicks: Vec<(CreatorId, CampaignId, Option<LinkCode>, Timestamp)>,
    /// The visitor has ordered before.
    pub has_ordered: bool,
}

/// An order or a lead, as the index remembers it for its corrections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversionRecord {
    /// The conversion's event.
    pub event: EventId,
    /// When it happened.
    pub at: Timestamp,
    /// Program version that judged it.
    pub config_version: u64,
    /// Its credits (empty when unattributed): id and share.
    pub credits: Vec<(DerivedId, Share)>,
    /// Gross amount (orders).
    pub gross: Option<Money>,
    /// Fraction refunded so far.
    #[serde(with = "crate::money::decimal_str")]
    pub refunded: Decimal,
    /// The adjustment events applied so far: a resend is a duplicate even after the
    /// attributor's event-id window has forgotten it (§4: "however late").
    pub adjustments: Vec<EventId>,
}

/// Key of the conversion index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversionKey {
    /// An order.
    Order(OrderId),
    /// A lead.
    Lead(LeadId),
}

/// Per-partition attribution state (everything but the conversion index).
///
/// Its maps are keyed by the [`digest`] of an id rather than the id itself: a lookup then
/// compares 16 inline bytes instead of chasing each candidate key's heap text, and a
/// remembered id costs no allocation (the ledger remembers its inputs the same way).
#[derive(Debug, Clone, Default)]
pub struct AttributionState {
    seen: FastMap<Digest, Timestamp>,
    visitors: FastMap<Digest, VisitorState>,
    ip_minutes: FastMap<Digest, (i64, u32)>,
    /// Lower bounds of what [`AttributionState::expire`] looks at in each map, so that a
    /// sweep that would find nothing to forget does not walk every visitor.
    oldest: Oldest,
}

/// 128 bits that stand for an id in [`AttributionState`]'s maps.
pub type Digest = u128;

/// The 128-bit xxh3 of an id: as unique as the derived ids, which are the same hash.
pub fn digest(id: &str) -> Digest {
    xxhash_rust::xxh3::xxh3_128(id.as_bytes())
}

/// Lower bounds (never above the true minimum) of the instants at which entries expire.
#[derive(Debug, Clone, Copy)]
struct Oldest {
    /// Of `seen`: the earliest event time.
    seen: Timestamp,
    /// Of `visitors`: the earliest touch, or paid click plus [`CPC_UNIQUE_WINDOW`].
    visitor: Timestamp,
    /// Of `ip_minutes`: the earliest minute.
    ip_minute: i64,
}

impl Default for Oldest {
    fn default() -> Self {
        Self {
            seen: Timestamp(i64::MAX),
            visitor: Timestamp(i64::MAX),
            ip_minute: i64::MAX,
        }
    }
}

/// Why an event produced no credit at all (reported, never silent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// No program version was in force at the event's time.
    NoProgram,
    /// The click's link code is not in the program.
    UnknownLink,
    /// The click names a creator or campaign not in the program.
    UnknownTarget,
    /// The campaign is not active at the event's time.
    CampaignInactive,
    /// A paid click for this link and visitor within 24 h already.
    NotUnique,
    /// The adjustment's order or the status's lead is unknown.
    UnknownConversion,
    /// The order is already fully refunded.
    AlreadyReversed,
}

/// A change the attributor decided: folded into the state by [`apply`] and, for
/// [`Fact::Credited`], emitted downstream.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "fact")]
pub enum Fact {
    /// A new event id was seen (dedupe).
    Seen {
        /// The id's digest (the state's key: computed once, when decided).
        event: Digest,
        /// Its time.
        at: Timestamp,
    },
    /// The event id was seen before: nothing else happens.
    Duplicate {
        /// Id.
        event: EventId,
    },
    /// A click counted against its IP's flood budget.
    IpClick {
        /// The IP hash's digest.
        ip: Digest,
        /// Minute index.
        minute: i64,
    },
    /// A click remembered for the visitor.
    Touched {
        /// The visitor's digest.
        visitor: Digest,
        /// The click.
        touch: Touch,
        /// Set when the click earned a CPC credit, to its link: the visitor's unique-click
        /// window for (creator, campaign, link) starts again at it. (Kept here, not read
        /// from the credit, so that the visitor is found once per click.)
        paid: Option<Option<LinkCode>>,
    },
    /// A credit emitted downstream.
    Credited(Credit),
    /// A conversion with no credit (still counted in KPIs).
    Unattributed {
        /// The conversion's event.
        event: EventId,
        /// The order or lead.
        key: ConversionKey,
        /// When.
        at: Timestamp,
        /// Net amount (orders).
        net: Option<Money>,
        /// The explanation.
        explanation: Arc<Explanation>,
    },
    /// An event that changed nothing, and why.
    Skipped {
        /// The event.
        event: EventId,
        /// Why.
        reason: Skip,
    },
    /// An event flagged as fraud.
    Flagged {
        /// The event.
        event: EventId,
        /// Why.
        reason: FraudReason,
    },
    /// A conversion entered into the index (its corrections will look it up).
    Indexed {
        /// The order or lead.
        key: ConversionKey,
        /// What to remember.
        record: ConversionRecord,
    },
    /// The refunded fraction of an indexed order grew.
    Refunded {
        /// The order.
        key: ConversionKey,
        /// The adjustment event.
        event: EventId,
        /// The new cumulative fraction.
        cumulative: Decimal,
    },
    /// The visitor has now ordered (for new-customer checks).
    Ordered {
        /// The visitor's digest.
        visitor: Digest,
    },
}

/// Looks up indexed conversions (the order-keyed index topic in production, a map here).
pub trait ConversionIndex {
    /// The record of a conversion, if indexed.
    fn get(&self, key: &ConversionKey) -> Option<&ConversionRecord>;
}

impl<S: BuildHasher> ConversionIndex for HashMap<ConversionKey, ConversionRecord, S> {
    fn get(&self, key: &ConversionKey) -> Option<&ConversionRecord> {
        HashMap::get(self, key)
    }
}

/// Folds an index fact into an in-memory index.
///
/// Inline: it is called with every fact and most are not index facts, which the caller
/// then skips without a call.
#[inline]
pub fn apply_index<S: BuildHasher>(
    index: &mut HashMap<ConversionKey, ConversionRecord, S>,
    fact: &Fact,
) {
    match fact {
        Fact::Indexed { key, record } => {
            index.entry(key.clone()).or_insert_with(|| record.clone());
        }
        Fact::Refunded {
            key,
            event,
            cumulative,
        } => {
            if let Some(r) = index.get_mut(key) {
                r.refunded = *cumulative;
                r.adjustments.push(event.clone());
            }
        }
        _ => {}
    }
}

impl AttributionState {
    /// Number of visitors remembered.
    pub fn visitors(&self) -> usize {
        self.visitors.len()
    }

    /// Number of event ids remembered for dedupe.
    pub fn seen_ids(&self) -> usize {
        self.seen.len()
    }

    /// A visitor's state, if remembered.
    pub fn visitor(&self, visitor: &VisitorId) -> Option<&VisitorState> {
        self.visitors.get(&digest(visitor.as_str()))
    }

    /// Forgets what is older than `before`: event ids, touches, paid-click windows, IP
    /// counters. Called as event time advances; `before` is the watermark less the
    /// retention ([`ProgramHistory::retention`]), so nothing still needed is dropped.
    pub fn expire(&mut self, before: Timestamp) {
        self.expire_tracked(before, |_| {});
    }

    /// [`AttributionState::expire`], telling `changed` the key of every entry it removed
    /// or shortened (a changelog writes their new value or a tombstone).
    pub fn expire_tracked(&mut self, before: Timestamp, mut changed: impl FnMut(StateKey)) {
        let oldest = &mut self.oldest;
        if oldest.seen < before {
            oldest.seen = Timestamp(i64::MAX);
            self.seen.retain(|digest, at| {
                let keep = *at >= before;
                if keep {
                    oldest.seen = oldest.seen.min(*at);
                } else {
                    changed(StateKey::Seen(*digest));
                }
                keep
            });
        }
        let minute = before.millis().div_euclid(60_000);
        if oldest.ip_minute < minute {
            oldest.ip_minute = i64::MAX;
            self.ip_minutes.retain(|digest, (m, _)| {
                let keep = *m >= minute;
                if keep {
                    oldest.ip_minute = oldest.ip_minute.min(*m);
                } else {
                    changed(StateKey::Ip(*digest));
                }
                keep
            });
        }
        if oldest.visitor < before {
            oldest.visitor = Timestamp(i64::MAX);
            self.visitors.retain(|digest, v| {
                let (touches, paid) = (v.touches.len(), v.paid_clicks.len());
                while v.touches.front().is_some_and(|t| t.at < before) {
                    v.touches.pop_front();
                }
                v.paid_clicks
                    .retain(|p| p.3.plus(CPC_UNIQUE_WINDOW) >= before);
                if let Some(earliest) = v.earliest() {
                    oldest.visitor = oldest.visitor.min(earliest);
                }
                if (touches, paid) != (v.touches.len(), v.paid_clicks.len()) {
                    changed(StateKey::Visitor(*digest));
                }
                !v.touches.is_empty() || !v.paid_clicks.is_empty() || v.has_ordered
            });
        }
    }
}

impl VisitorState {
    /// The earliest instant at which something of this visitor expires.
    fn earliest(&self) -> Option<Timestamp> {
        self.touches
            .iter()
            .map(|t| t.at)
            .chain(self.paid_clicks.iter().map(|p| p.3.plus(CPC_UNIQUE_WINDOW)))
            .min()
    }
}

/// Folds one fact into the state.
pub fn apply(state: &mut AttributionState, fact: &Fact) {
    match fact {
        Fact::Seen { event, at } => {
            state.seen.insert(*event, *at);
            state.oldest.seen = state.oldest.seen.min(*at);
        }
        Fact::IpClick { ip, minute } => {
            state.oldest.ip_minute = state.oldest.ip_minute.min(*minute);
            let entry = state.ip_minutes.entry(*ip).or_insert((*minute, 0));
            if entry.0 != *minute {
                *entry = (*minute, 0);
            }
            entry.1 += 1;
        }
        Fact::Touched {
            visitor,
            touch,
            paid,
        } => {
            state.oldest.visitor = state.oldest.visitor.min(touch.at);
            let v = state.visitors.entry(*visitor).or_default();
            let not_after = |t: &Touch| (t.at, &t.click) <= (touch.at, &touch.click);
            // Clicks mostly come in time order: then the new one goes last.
            if v.touches.back().is_none_or(not_after) {
                v.touches.push_back(touch.clone());
            } else {
                let at = v.touches.partition_point(not_after);
                v.touches.insert(at, touch.clone());
            }
            if v.touches.len() > MAX_TOUCHES_PER_VISITOR {
                v.touches.pop_front();
            }
            if let Some(link) = paid {
                // `oldest.visitor` is at most the touch's time, before the window's end.
                let (creator, campaign, at) = (&touch.creator, &touch.campaign, touch.at);
                match v
                    .paid_clicks
                    .iter_mut()
                    .find(|p| &p.0 == creator && &p.1 == campaign && &p.2 == link)
                {
                    Some(p) => p.3 = at,
                    None => {
                        v.paid_clicks
                            .push((creator.clone(), campaign.clone(), link.clone(), at));
                    }
                }
            }
        }
        Fact::Ordered { visitor } => {
            state.visitors.entry(*visitor).or_default().has_ordered = true;
        }
        Fact::Duplicate { .. }
        | Fact::Credited(_)
        | Fact::Unattributed { .. }
        | Fact::Skipped { .. }
        | Fact::Flagged { .. }
        | Fact::Indexed { .. }
        | Fact::Refunded { .. } => {}
    }
}

/// Decides what an event (released by the reorder buffer) changes. Reads only.
pub fn decide(
    state: &AttributionState,
    index: &impl ConversionIndex,
    programs: &ProgramHistory,
    event: &Event,
) -> Vec<Fact> {
    // Seen, IpClick, Touched, Credited and a little room: no regrowth on the hot path.
    let mut facts = Vec::with_capacity(6);
    decide_into(state, index, programs, event, &mut facts);
    facts
}

/// [`decide`], appending the facts to `facts` (a buffer the caller reuses, so that the
/// hot path allocates nothing for them).
pub fn decide_into(
    state: &AttributionState,
    index: &impl ConversionIndex,
    programs: &ProgramHistory,
    event: &Event,
    facts: &mut Vec<Fact>,
) {
    let start = facts.len();
    let duplicate = |facts: &mut Vec<Fact>| {
        facts.truncate(start);
        facts.push(Fact::Duplicate {
            event: event.id.clone(),
        });
    };
    let id = digest(event.id.as_str());
    if state.seen.contains_key(&id) {
        duplicate(facts);
        return;
    }
    facts.push(Fact::Seen {
        event: id,
        at: event.occurred_at,
    });
    let Some(program) = programs.at(event.occurred_at) else {
        facts.push(Fact::Skipped {
            event: event.id.clone(),
            reason: Skip::NoProgram,
        });
        return;
    };
    match &event.payload {
        Payload::Click(click) => decide_click(state, program, event, click, facts),
        Payload::Signup(signup) => decide_signup(state, index, program, event, signup, facts),
        Payload::Order(order) => decide_order(state, index, program, event, order, facts),
        Payload::Adjustment(adj) => {
            let key = ConversionKey::Order(adj.order.clone());
            let Some(record) = index.get(&key) else {
                facts.push(Fact::Skipped {
                    event: event.id.clone(),
                    reason: Skip::UnknownConversion,
                });
                return;
            };
            if record.adjustments.contains(&event.id) {
                duplicate(facts);
                return;
            }
            if record.refunded >= Decimal::ONE {
                facts.push(Fact::Skipped {
                    event: event.id.clone(),
                    reason: Skip::AlreadyReversed,
                });
                return;
            }
            let increment = match (adj.amount, record.gross) {
                (Some(amount), Some(gross))
                    if amount.currency == gross.currency && !gross.is_zero() =>
                {
                    amount.amount / gross.amount
                }
                _ => Decimal::ONE,
            };
            let mut cumulative = (record.refunded + increment).min(Decimal::ONE);
            // Refunds are whole minor units, so the fraction times the gross, rounded to the
            // minor unit, is exactly the amount refunded so far. Once that reaches the gross
            // the order is fully refunded, even when the fraction (a sum of inexact quotients
            // such as three thirds) falls a hair short of one.
            if let Some(gross) = record.gross
                && gross.currency.round(cumulative * gross.amount) >= gross.amount
            {
                cumulative = Decimal::ONE;
            }
            for (original, share) in &record.credits {
                facts.push(Fact::Credited(Credit {
                    id: DerivedId::derive("rev", &[original.text().as_str(), event.id.as_str()]),
                    campaign: share.campaign.clone(),
                    creator: share.creator.clone(),
                    occurred_at: event.occurred_at,
                    cause: event.id.clone(),
                    config_version: record.config_version,
                    fraud: None,
                    kind: CreditKind::Reversal {
                        original: *original,
                        order: adj.order.clone(),
                        kind: adj.kind,
                        cumulative_fraction: cumulative,
                    },
                    explanation: None,
                }));
            }
            facts.push(Fact::Refunded {
                key,
                event: event.id.clone(),
                cumulative,
            });
        }
        Payload::LeadStatus(status) => {
            let Some(record) = index.get(&ConversionKey::Lead(status.lead.clone())) else {
                facts.push(Fact::Skipped {
                    event: event.id.clone(),
                    reason: Skip::UnknownConversion,
                });
                return;
            };
            for (original, share) in &record.credits {
                facts.push(Fact::Credited(Credit {
                    id: DerivedId::derive("lst", &[original.text().as_str(), event.id.as_str()]),
                    campaign: share.campaign.clone(),
                    creator: share.creator.clone(),
                    occurred_at: event.occurred_at,
                    cause: event.id.clone(),
                    config_version: record.config_version,
                    fraud: None,
                    kind: CreditKind::LeadStatus {
                        original: *original,
                        lead: status.lead.clone(),
                        qualified: status.qualified,
                    },
                    explanation: None,
                }));
            }
        }
        // Engagement goes straight to the ledger; the attributor only dedupes it.
        Payload::Engagement(_) => {}
    }
}

/// Where a click sends credit, as the program's own ids (so that later comparisons of
/// them are pointer comparisons).
struct Resolved<'a> {
    creator: &'a CreatorId,
    campaign: &'a CampaignId,
    link: Option<&'a LinkCode>,
}

fn resolve_click<'a>(program: &'a Program, click: &Click) -> Result<Resolved<'a>, Skip> {
    match &click.target {
        ClickTarget::Link(code) => {
            let (link, target) = program.links.get_key_value(code).ok_or(Skip::UnknownLink)?;
            Ok(Resolved {
                creator: &target.creator,
                campaign: &target.campaign,
                link: Some(link),
            })
        }
        ClickTarget::Direct { creator, campaign } => {
            match (
                program.creators.get_key_value(creator),
                program.campaigns.get_key_value(campaign),
            ) {
                (Some((creator, _)), Some((campaign, _))) => Ok(Resolved {
                    creator,
                    campaign,
                    link: None,
                }),
                _ => Err(Skip::UnknownTarget),
            }
        }
    }
}

fn decide_click(
    state: &AttributionState,
    program: &Program,
    event: &Event,
    click: &Click,
    facts: &mut Vec<Fact>,
) {
    let target = match resolve_click(program, click) {
        Ok(t) => t,
        Err(reason) => {
            facts.push(Fact::Skipped {
                event: event.id.clone(),
                reason,
            });
            return;
        }
    };
    let mut fraud = None;
    if let Some(ip) = event.ip_hash {
        let minute = event.occurred_at.millis().div_euclid(60_000);
        let used = state
            .ip_minutes
            .get(&ip)
            .filter(|(m, _)| *m == minute)
            .map_or(0, |(_, n)| *n);
        if used >= program.settings.click_flood_per_minute {
            fraud = Some(FraudReason::ClickFlood);
        }
        facts.push(Fact::IpClick { ip, minute });
    }
    let visitor = digest(click.visitor.as_str());
    let touch = Touch {
        click: event.id.clone(),
        at: event.occurred_at,
        creator: target.creator.clone(),
        campaign: target.campaign.clone(),
        fraud,
    };
    let outcome = click_outcome(state, program, event, &target, visitor, fraud);
    facts.push(Fact::Touched {
        visitor,
        touch,
        paid: outcome.as_ref().ok().map(|_| target.link.cloned()),
    });
    facts.push(match outcome {
        Err(Unpaid::Flagged(reason)) => Fact::Flagged {
            event: event.id.clone(),
            reason,
        },
        Err(Unpaid::Skipped(reason)) => Fact::Skipped {
            event: event.id.clone(),
            reason,
        },
        Ok(campaign) => Fact::Credited(Credit {
            id: DerivedId::derive(
                "crd",
                &[
                    event.id.as_str(),
                    campaign.as_str(),
                    target.creator.as_str(),
                ],
            ),
            campaign: campaign.clone(),
            creator: target.creator.clone(),
            occurred_at: event.occurred_at,
            cause: event.id.clone(),
            config_version: program.version,
            fraud: None,
            kind: CreditKind::Click {
                visitor: click.visitor.clone(),
                link: target.link.cloned(),
            },
            explanation: None,
        }),
    });
}

/// Why a click earns no CPC credit.
enum Unpaid {
    Flagged(FraudReason),
    Skipped(Skip),
}

/// Whether a resolved click earns a CPC credit: its campaign, or why not.
fn click_outcome<'p>(
    state: &AttributionState,
    program: &'p Program,
    event: &Event,
    target: &Resolved<'_>,
    visitor: Digest,
    fraud: Option<FraudReason>,
) -> Result<&'p CampaignId, Unpaid> {
    if let Some(reason) = fraud {
        return Err(Unpaid::Flagged(reason));
    }
    let campaign = program
        .campaigns
        .get(target.campaign)
        .filter(|c| c.is_active(event.occurred_at))
        .ok_or(Unpaid::Skipped(Skip::CampaignInactive))?;
    let link = target.link;
    let recent = state.visitors.get(&visitor).is_some_and(|v| {
        v.paid_clicks.iter().any(|(cr, ca, l, at)| {
            cr == target.creator
                && ca == &campaign.id
                && l.as_ref() == link
                && event.occurred_at < at.plus(CPC_UNIQUE_WINDOW)
        })
    });
    if recent {
        return Err(Unpaid::Skipped(Skip::NotUnique));
    }
    Ok(&campaign.id)
}

/// A conversion being attributed: what orders and signups have in common.
struct Conversion<'a> {
    visitor: &'a VisitorId,
    key: ConversionKey,
    codes: &'a [crate::ids::PromoCode],
    customer: Option<&'a CustomerId>,
    email_hash: Option<&'a str>,
}

/// The outcome of attribution: the rule and the shares (sorted by campaign, creator).
struct Attribution {
    rule: Rule,
    shares: Vec<Share>,
    candidates: Vec<Candidate>,
}

fn attribute(
    state: &AttributionState,
    program: &Program,
    event: &Event,
    conv: &Conversion<'_>,
) -> Attribution {
    let at = event.occurred_at;
    let mut fallback_code = None;
    for code in conv.codes {
        let Some(target) = program.promo_codes.get(code) else {
            continue;
        };
        let Some(campaign) = program
            .campaigns
            .get(&target.campaign)
            .filter(|c| c.is_active(at))
        else {
            continue;
        };
        if campaign.code_precedence {
            let share = Share {
                creator: target.creator.clone(),
                campaign: target.campaign.clone(),
                share: Decimal::ONE,
            };
            return Attribution {
                rule: Rule::PromoCode {
                    code: code.to_string(),
                },
                shares: vec![share],
                candidates: Vec::new(),
            };
        }
        fallback_code.get_or_insert((code, target));
    }
    let touches = state
        .visitors
        .get(&digest(conv.visitor.as_str()))
        .map(|v| &v.touches);
    let mut candidates = Vec::new();
    let mut eligible: Vec<usize> = Vec::new();
    for touch in touches.into_iter().flatten() {
        if touch.at > at {
            continue;
        }
        let campaign = program.campaigns.get(&touch.campaign);
        let reason = match campaign {
            _ if touch.fraud.is_some() => Some(touch.fraud.map_or("fraud", FraudReason::as_str)),
            None => Some("unknown_campaign"),
            Some(c) if !c.is_active(at) => Some("campaign_inactive"),
            Some(c) if at.since(touch.at) > c.lookback => Some("outside_lookback"),
            Some(_) if at.since(touch.at) < program.settings.min_click_to_conversion => {
                Some(FraudReason::TooFast.as_str())
            }
            Some(_) => None,
        };
        if reason.is_none() {
            eligible.push(candidates.len());
        }
        candidates.push(Candidate {
            click: touch.click.clone(),
            creator: touch.creator.clone(),
            campaign: touch.campaign.clone(),
            at: touch.at,
            eligible: reason.is_none(),
            reason,
            share: None,
        });
    }
    let Some(&last) = eligible.last() else {
        if let Some((code, target)) = fallback_code {
            let share = Share {
                creator: target.creator.clone(),
                campaign: target.campaign.clone(),
                share: Decimal::ONE,
            };
            return Attribution {
                rule: Rule::PromoCode {
                    code: code.to_string(),
                },
                shares: vec![share],
                candidates,
            };
        }
        return Attribution {
            rule: Rule::Unattributed,
            shares: Vec::new(),
            candidates,
        };
    };
    let deciding = &program.campaigns[&candidates[last].campaign];
    let times: Vec<Timestamp> = eligible.iter().map(|&i| candidates[i].at).collect();
    let split = models::split(deciding.model, &times, at);
    let mut per_target: BTreeMap<(CampaignId, CreatorId), Decimal> = BTreeMap::new();
    for (&i, share) in eligible.iter().zip(&split) {
        candidates[i].share = Some(*share);
        if !share.is_zero() {
            *per_target
                .entry((
                    candidates[i].campaign.clone(),
                    candidates[i].creator.clone(),
                ))
                .or_default() += share;
        }
    }
    let shares = per_target
        .into_iter()
        .map(|((campaign, creator), share)| Share {
            creator,
            campaign,
            share,
        })
        .collect();
    Attribution {
        rule: Rule::Model {
            model: deciding.model.name(),
            campaign: deciding.id.clone(),
            lookback: deciding.lookback,
        },
        shares,
        candidates,
    }
}

fn self_referral(program: &Program, conv: &Conversion<'_>, creator: &CreatorId) -> bool {
    program.creators.get(creator).is_some_and(|c| {
        conv.customer.is_some_and(|id| c.customer_ids.contains(id))
            || conv.email_hash.is_some_and(|h| c.email_hashes.contains(h))
    })
}

/// Emits the credits of an attributed conversion (or its unattributed record) and the
/// index entry. `make_kind` builds each credit's kind from its index and all shares.
fn emit_conversion(
    program: &Program,
    event: &Event,
    conv: &Conversion<'_>,
    attribution: Attribution,
    gross: Option<Money>,
    net: Option<Money>,
    facts: &mut Vec<Fact>,
    make_kind: impl Fn(usize, &Arc<[Share]>) -> CreditKind,
) {
    let mut fraud_checks = Vec::new();
    let mut flagged = Vec::with_capacity(attribution.shares.len());
    for share in &attribution.shares {
        let is_self = self_referral(program, conv, &share.creator);
        fraud_checks.push(FraudCheck {
            check: FraudReason::SelfReferral,
            passed: !is_self,
            detail: self_referral_detail(is_self, &share.creator),
        });
        flagged.push(is_self);
    }
    let too_fast = attribution
        .candidates
        .iter()
        .filter(|c| c.reason == Some(FraudReason::TooFast.as_str()))
        .count();
    fraud_checks.push(FraudCheck {
        check: FraudReason::TooFast,
        passed: too_fast == 0,
        detail: too_fast_detail(
            too_fast,
            program.settings.min_click_to_conversion.millis() / 1000,
        ),
    });
    let explanation = Arc::new(Explanation {
        event: event.id.clone(),
        rule: attribution.rule,
        candidates: attribution.candidates,
        fraud_checks,
        config_version: program.version,
    });
    if attribution.shares.is_empty() {
        facts.push(Fact::Unattributed {
            event: event.id.clone(),
            key: conv.key.clone(),
            at: event.occurred_at,
            net,
            explanation,
        });
        facts.push(Fact::Indexed {
            key: conv.key.clone(),
            record: ConversionRecord {
                event: event.id.clone(),
                at: event.occurred_at,
                config_version: program.version,
                credits: Vec::new(),
                gross,
                refunded: Decimal::ZERO,
                adjustments: Vec::new(),
            },
        });
        return;
    }
    let shares: Arc<[Share]> = attribution.shares.into();
    let mut index_credits = Vec::with_capacity(shares.len());
    for (i, share) in shares.iter().enumerate() {
        let id = DerivedId::derive(
            "crd",
            &[
                event.id.as_str(),
                share.campaign.as_str(),
                share.creator.as_str(),
            ],
        );
        let fraud = flagged[i].then_some(FraudReason::SelfReferral);
        if let Some(reason) = fraud {
            facts.push(Fact::Flagged {
                event: event.id.clone(),
                reason,
            });
        }
        facts.push(Fact::Credited(Credit {
            id,
            campaign: share.campaign.clone(),
            creator: share.creator.clone(),
            occurred_at: event.occurred_at,
            cause: event.id.clone(),
            config_version: program.version,
            fraud,
            kind: make_kind(i, &shares),
            explanation: Some(explanation.clone()),
        }));
        index_credits.push((id, share.clone()));
    }
    facts.push(Fact::Indexed {
        key: conv.key.clone(),
        record: ConversionRecord {
            event: event.id.clone(),
            at: event.occurred_at,
            config_version: program.version,
            credits: index_credits,
            gross,
            refunded: Decimal::ZERO,
            adjustments: Vec::new(),
        },
    });
}

/// The self-referral check's detail: `buyer is [not ]creator C`. Written by appending
/// rather than with `format!`, whose machinery cost more than the rest of the check (it
/// runs for every share of every conversion).
fn self_referral_detail(is_self: bool, creator: &CreatorId) -> String {
    let head = if is_self {
        "buyer is creator "
    } else {
        "buyer is not creator "
    };
    let mut detail = String::with_capacity(head.len() + creator.as_str().len());
    detail.push_str(head);
    detail.push_str(creator.as_str());
    detail
}

/// The too-fast check's detail: `N click(s) within S s of the conversion`, appended as
/// [`self_referral_detail`] is.
fn too_fast_detail(clicks: usize, seconds: i64) -> String {
    let (mut clicks_text, mut seconds_text) = (itoa::Buffer::new(), itoa::Buffer::new());
    let (clicks_text, seconds_text) = (clicks_text.format(clicks), seconds_text.format(seconds));
    let mut detail = String::with_capacity(40 + clicks_text.len() + seconds_text.len());
    detail.push_str(clicks_text);
    detail.push_str(" click(s) within ");
    detail.push_str(seconds_text);
    detail.push_str(" s of the conversion");
    detail
}

fn is_new_customer(
    state: &AttributionState,
    visitor: &VisitorId,
    first_order: Option<bool>,
) -> bool {
    first_order.unwrap_or_else(|| {
        !state
            .visitors
            .get(&digest(visitor.as_str()))
            .is_some_and(|v| v.has_ordered)
    })
}

fn decide_signup(
    state: &AttributionState,
    index: &impl ConversionIndex,
    program: &Program,
    event: &Event,
    signup: &Signup,
    facts: &mut Vec<Fact>,
) {
    let key = ConversionKey::Lead(signup.lead.clone());
    if index.get(&key).is_some() {
        facts.push(Fact::Skipped {
            event: event.id.clone(),
            reason: Skip::AlreadyReversed,
        });
        return;
    }
    let codes = signup.promo_code.as_slice();
    let conv = Conversion {
        visitor: &signup.visitor,
        key,
        codes,
        customer: event.customer.as_ref(),
        email_hash: signup.email_hash.as_deref(),
    };
    let attribution = attribute(state, program, event, &conv);
    let new_customer = is_new_customer(state, &signup.visitor, None);
    emit_conversion(
        program,
        event,
        &conv,
        attribution,
        None,
        None,
        facts,
        |index, shares| CreditKind::Lead {
            lead: signup.lead.clone(),
            index,
            shares: shares.clone(),
            new_customer,
        },
    );
}

/// Net amount per category, allocated from the order's net amount in proportion to the
/// line totals (so the parts sum exactly to the net amount).
fn categories(order: &Order, net: Money) -> Arc<[(Option<Arc<str>>, Decimal)]> {
    let mut totals: BTreeMap<Option<Arc<str>>, Decimal> = BTreeMap::new();
    for item in &order.line_items {
        *totals
            .entry(item.category.as_deref().map(Arc::from))
            .or_default() += item.unit_price * Decimal::from(item.quantity);
    }
    let sum: Decimal = totals.values().sum();
    if totals.is_empty() || sum.is_zero() {
        return Arc::from(vec![(None, net.amount)]);
    }
    let weights: Vec<Decimal> = totals.values().map(|t| t / sum).collect();
    let parts = allocate(net.amount, &weights, net.currency);
    totals.into_keys().zip(parts).collect::<Vec<_>>().into()
}

fn decide_order(
    state: &AttributionState,
    index: &impl ConversionIndex,
    program: &Program,
    event: &Event,
    order: &Order,
    facts: &mut Vec<Fact>,
) {
    let key = ConversionKey::Order(order.order.clone());
    if index.get(&key).is_some() {
        facts.push(Fact::Flagged {
            event: event.id.clone(),
            reason: FraudReason::DuplicateOrder,
        });
        return;
    }
    let net = order.net_amount();
    let conv = Conversion {
        visitor: &order.visitor,
        key,
        codes: &order.promo_codes,
        customer: event.customer.as_ref(),
        email_hash: order.email_hash.as_deref(),
    };
    let original = order.renewal_of.as_ref().and_then(|of| {
        index
            .get(&ConversionKey::Order(of.clone()))
            .map(|r| (of, r))
    });
    let (attribution, renewal) = match original {
        Some((of, record)) if !record.credits.is_empty() => (
            Attribution {
                rule: Rule::Renewal { of: of.clone() },
                shares: record.credits.iter().map(|(_, s)| s.clone()).collect(),
                candidates: Vec::new(),
            },
            Some(Renewal {
                of: of.clone(),
                original_at: record.at,
            }),
        ),
        _ => (attribute(state, program, event, &conv), None),
    };
    let new_customer =
        renewal.is_none() && is_new_customer(state, &order.visitor, order.first_order);
    let cats = categories(order, net);
    emit_conversion(
        program,
        event,
        &conv,
        attribution,
        Some(order.amount),
        Some(net),
        facts,
        |index, shares| CreditKind::Order {
            order: order.order.clone(),
            index,
            shares: shares.clone(),
            gross: order.amount,
            net,
            categories: cats.clone(),
            new_customer,
            renewal: renewal.clone(),
        },
    );
    facts.push(Fact::Ordered {
        visitor: digest(order.visitor.as_str()),
    });
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The appended details read exactly as the `format!` they replaced: explanations
        /// already written and replayed must not change by a byte.
        #[test]
        fn fraud_check_details_read_as_they_were_formatted(
            creator in "[a-zA-Z0-9_-]{1,40}",
            is_self: bool,
            clicks in 0usize..10_000,
            seconds in 0i64..1_000_000,
        ) {
            let id = CreatorId::new(&creator);
            let formatted = if is_self {
                format!("buyer is creator {id}")
            } else {
                format!("buyer is not creator {id}")
            };
            prop_assert_eq!(self_referral_detail(is_self, &id), formatted);
            prop_assert_eq!(
                too_fast_detail(clicks, seconds),
                format!("{clicks} click(s) within {seconds} s of the conversion")
            );
        }
    }
}
