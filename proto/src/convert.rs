//! Conversions between the wire contract and `payoff-core`'s domain types, at the edge.
//!
//! Events convert infallibly into [`RawEvent`] (text stays text); the core's
//! [`Event::validate`](payoff_core::event::Event::validate) then checks every rule and
//! names each broken field. Program config converts with [`program`], which names the
//! offending field (`campaigns[spring].plans[rev].cps_percent.rate`) on any error.
//!
//! Raw PII (`context.ip`, `context.user_agent`, `email`) is not carried over: the edge
//! hashes it first (see the ingest service) and fills the `*_hash` fields.
//!
//! Credits and ledger entries convert both ways, losslessly, for the services that
//! publish and read them ([`credit_to_proto`], [`credit_from_proto`], [`entry_to_proto`],
//! [`entry_from_proto`]): what the core produced, converted to proto and back, is equal
//! to what it was.
//!
//! # Layout
//!
//! - this module: timestamps, durations, events, program config and PII hashing;
//! - `credit`: credits and their explanations;
//! - `entry`: ledger entries, their causes and notes;
//! - `wire`: field-level helpers both share (money, decimals, ids, period labels).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use payoff_core::{
    Rejection, Violation,
    event::{
        AdjustmentKind, RawAdjustment, RawClick, RawEngagement, RawEvent, RawLeadStatus,
        RawLineItem, RawMoney, RawOrder, RawPayload, RawSignup,
    },
    ids::{CampaignId, CreatorId, CustomerId, LinkCode, PlanId, PromoCode},
    money::{Currency, Money, parse_decimal},
    program::{
        self, Campaign, Creator, Milestone, Model, Plan, PlanKind, Program, Settings, Target, Tier,
        TierBasis,
    },
    time::{Duration, PeriodKind, Timestamp},
};
use rust_decimal::Decimal;

use crate::v1;

mod borrowed;
mod credit;
mod entry;
mod wire;

pub use borrowed::{BorrowedEvent, borrowed_event};
pub use credit::{CreditEncoder, credit_from_proto, credit_to_proto, encode_credit};
pub use entry::{entry_from_proto, entry_status_to_proto, entry_to_proto};
pub use wire::{money, money_to_proto, period};

/// A protobuf timestamp as milliseconds since the epoch (sub-millisecond digits dropped).
pub fn timestamp(t: &pbjson_types::Timestamp) -> Timestamp {
    Timestamp::from_millis(
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos) / 1_000_000),
    )
}

/// A core timestamp as a protobuf timestamp.
pub fn to_timestamp(t: Timestamp) -> pbjson_types::Timestamp {
    let millis = t.millis();
    pbjson_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

/// A protobuf duration in milliseconds.
pub fn duration(d: &pbjson_types::Duration) -> Duration {
    Duration(
        d.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(d.nanos) / 1_000_000),
    )
}

/// A core duration as a protobuf duration.
pub fn to_duration(d: Duration) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: d.millis().div_euclid(1000),
        nanos: i32::try_from(d.millis().rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

fn raw_money(m: Option<&v1::Money>) -> Option<RawMoney<&str>> {
    m.map(|m| RawMoney {
        amount: m.amount.as_str(),
        currency: m.currency.as_str(),
    })
}

/// Borrows the decoded strings: validation copies each once, into the event.
impl<'a> From<&'a v1::Event> for RawEvent<&'a str> {
    fn from(e: &'a v1::Event) -> Self {
        let context = e.context.as_ref();
        Self {
            event_id: &e.event_id,
            occurred_at: e.occurred_at.as_ref().map(timestamp),
            customer_id: &e.customer_id,
            ip_hash: context.map_or("", |c| &c.ip_hash),
            user_agent_hash: context.map_or("", |c| &c.user_agent_hash),
            payload: e.payload.as_ref().map(raw_payload),
        }
    }
}

fn raw_payload(p: &v1::event::Payload) -> RawPayload<&str> {
    use v1::event::Payload as P;
    match p {
        P::Click(c) => {
            let utm = c.utm.as_ref();
            let utm = |field: fn(&v1::Utm) -> &String| utm.map_or("", |u| field(u).as_str());
            RawPayload::Click(RawClick {
                visitor_id: &c.visitor_id,
                link_code: &c.link_code,
                creator_id: &c.creator_id,
                campaign_id: &c.campaign_id,
                utm_source: utm(|u| &u.source),
                utm_medium: utm(|u| &u.medium),
                utm_campaign: utm(|u| &u.campaign),
                utm_content: utm(|u| &u.content),
                utm_term: utm(|u| &u.term),
                landing_url: &c.landing_url,
                referrer: &c.referrer,
            })
        }
        P::Signup(s) => RawPayload::Signup(RawSignup {
            visitor_id: &s.visitor_id,
            lead_id: &s.lead_id,
            email_hash: &s.email_hash,
            promo_code: &s.promo_code,
        }),
        P::Order(o) => RawPayload::Order(RawOrder {
            visitor_id: &o.visitor_id,
            order_id: &o.order_id,
            amount: raw_money(o.amount.as_ref()),
            tax: raw_money(o.tax.as_ref()),
            shipping: raw_money(o.shipping.as_ref()),
            line_items: o
                .line_items
                .iter()
                .map(|l| RawLineItem {
                    sku: l.sku.as_str(),
                    category: l.category.as_str(),
                    quantity: l.quantity,
                    unit_price: l.unit_price.as_str(),
                })
                .collect(),
            promo_codes: o.promo_codes.iter().map(String::as_str).collect(),
            renewal_of: &o.renewal_of,
            first_order: o.first_order,
            email_hash: &o.email_hash,
        }),
        P::Adjustment(a) => RawPayload::Adjustment(RawAdjustment {
            order_id: &a.order_id,
            kind: adjustment_kind(a.kind),
            amount: raw_money(a.amount.as_ref()),
            reason: &a.reason,
        }),
        P::LeadStatus(l) => RawPayload::LeadStatus(RawLeadStatus {
            lead_id: &l.lead_id,
            qualified: qualification(l.status),
        }),
        P::Engagement(e) => RawPayload::Engagement(RawEngagement {
            creator_id: &e.creator_id,
            campaign_id: &e.campaign_id,
            post_id: &e.post_id,
            platform: &e.platform,
            views: e.views,
            likes: e.likes,
            comments: e.comments,
            shares: e.shares,
        }),
    }
}

/// An adjustment kind's number; `None` when unspecified or unknown.
fn adjustment_kind(number: i32) -> Option<AdjustmentKind> {
    match v1::AdjustmentKind::try_from(number) {
        Ok(v1::AdjustmentKind::Refund) => Some(AdjustmentKind::Refund),
        Ok(v1::AdjustmentKind::Cancel) => Some(AdjustmentKind::Cancel),
        Ok(v1::AdjustmentKind::Chargeback) => Some(AdjustmentKind::Chargeback),
        _ => None,
    }
}

/// A lead qualification's number: `Some(true)` for qualified, `None` when unspecified or
/// unknown.
fn qualification(number: i32) -> Option<bool> {
    match v1::LeadQualification::try_from(number) {
        Ok(v1::LeadQualification::Qualified) => Some(true),
        Ok(v1::LeadQualification::Rejected) => Some(false),
        _ => None,
    }
}

/// Collects violations while converting a program.
#[derive(Default)]
struct Problems(Vec<Violation>);

impl Problems {
    fn take<T>(&mut self, r: Result<T, Violation>) -> Option<T> {
        r.map_err(|e| self.0.push(e)).ok()
    }

    /// An amount in the campaign's currency (zero allowed), or `default` when absent.
    fn amount(
        &mut self,
        field: &str,
        m: &Option<v1::Money>,
        currency: Currency,
        required: bool,
    ) -> Decimal {
        let Some(m) = m else {
            if required {
                self.0
                    .push(Violation::new(field, "required", "must be given"));
            }
            return Decimal::ZERO;
        };
        if m.currency != currency.code() {
            self.0.push(Violation::new(
                format!("{field}.currency"),
                "currency_mismatch",
                format!("must be the campaign currency {currency}"),
            ));
            return Decimal::ZERO;
        }
        self.take(Money::parse_positive(
            &format!("{field}.amount"),
            &m.amount,
            currency,
            true,
        ))
        .map_or(Decimal::ZERO, |m| m.amount)
    }

    /// A per-unit rate given as money: campaign currency, any precision (a view may pay
    /// a tenth of a cent), not negative. Zero when absent.
    fn unit_rate(&mut self, field: &str, m: &Option<v1::Money>, currency: Currency) -> Decimal {
        let Some(m) = m else { return Decimal::ZERO };
        if m.currency != currency.code() {
            self.0.push(Violation::new(
                format!("{field}.currency"),
                "currency_mismatch",
                format!("must be the campaign currency {currency}"),
            ));
            return Decimal::ZERO;
        }
        self.rate(&format!("{field}.amount"), &m.amount)
    }

    fn rate(&mut self, field: &str, text: &str) -> Decimal {
        match self.take(parse_decimal(field, text)) {
            Some(r) if r.is_sign_negative() => {
                self.0
                    .push(Violation::new(field, "negative", "must not be negative"));
                Decimal::ZERO
            }
            Some(r) => r,
            None => Decimal::ZERO,
        }
    }
}

/// Converts one program version, checking every field and cross-reference.
pub fn program(p: &v1::Program) -> Result<Program, Rejection> {
    let mut problems = Problems::default();
    let settings = p.settings.unwrap_or_default();
    let defaults = Settings::default();
    let settings = Settings {
        grace: settings
            .grace_period
            .as_ref()
            .map_or(defaults.grace, duration),
        click_flood_per_minute: settings
            .click_flood_limit_per_minute
            .unwrap_or(defaults.click_flood_per_minute),
        min_click_to_conversion: settings
            .min_click_to_conversion
            .as_ref()
            .map_or(defaults.min_click_to_conversion, duration),
    };
    let mut campaigns = BTreeMap::new();
    for (i, c) in p.campaigns.iter().enumerate() {
        if let Some(campaign) = campaign(&mut problems, &format!("campaigns[{i}]"), c) {
            if campaigns.contains_key(&campaign.id) {
                problems.0.push(Violation::new(
                    format!("campaigns[{i}].id"),
                    "duplicate",
                    format!("campaign {} is defined twice", campaign.id),
                ));
            }
            campaigns.insert(campaign.id.clone(), campaign);
        }
    }
    let mut creators = BTreeMap::new();
    for (i, c) in p.creators.iter().enumerate() {
        let field = format!("creators[{i}]");
        let Some(id) = problems.take(CreatorId::parse(&format!("{field}.id"), &c.id)) else {
            continue;
        };
        let customer_ids: HashSet<CustomerId> = c
            .customer_ids
            .iter()
            .enumerate()
            .filter_map(|(j, id)| {
                problems.take(CustomerId::parse(&format!("{field}.customer_ids[{j}]"), id))
            })
            .collect();
        let email_hashes = c
            .email_hashes
            .iter()
            .map(|h| Arc::<str>::from(h.as_str()))
            .collect();
        creators.insert(
            id,
            Creator {
                display_name: c.display_name.clone(),
                customer_ids,
                email_hashes,
            },
        );
    }
    let target =
        |problems: &mut Problems, field: &str, creator: &str, campaign: &str| -> Option<Target> {
            let creator = problems.take(CreatorId::parse(&format!("{field}.creator_id"), creator));
            let campaign =
                problems.take(CampaignId::parse(&format!("{field}.campaign_id"), campaign));
            Some(Target {
                creator: creator?,
                campaign: campaign?,
            })
        };
    let mut links = payoff_core::FastMap::default();
    for (i, l) in p.links.iter().enumerate() {
        let field = format!("links[{i}]");
        let code = problems.take(LinkCode::parse(&format!("{field}.code"), &l.code));
        if let (Some(code), Some(t)) = (
            code,
            target(&mut problems, &field, &l.creator_id, &l.campaign_id),
        ) {
            links.insert(code, t);
        }
    }
    let mut promo_codes = payoff_core::FastMap::default();
    for (i, c) in p.promo_codes.iter().enumerate() {
        let field = format!("promo_codes[{i}]");
        let code = problems.take(PromoCode::parse(&format!("{field}.code"), &c.code));
        if let (Some(code), Some(t)) = (
            code,
            target(&mut problems, &field, &c.creator_id, &c.campaign_id),
        ) {
            promo_codes.insert(code, t);
        }
    }
    let effective_from = p
        .effective_from
        .as_ref()
        .map_or(Timestamp::from_millis(0), timestamp);
    let program = Program {
        version: p.version,
        effective_from,
        settings,
        campaigns,
        creators,
        links,
        promo_codes,
    };
    if let Err(Rejection::InvalidProgram(more) | Rejection::Invalid(more)) = program.check() {
        problems.0.extend(more);
    }
    if problems.0.is_empty() {
        Ok(program)
    } else {
        Err(Rejection::InvalidProgram(problems.0))
    }
}

fn campaign(problems: &mut Problems, field: &str, c: &v1::Campaign) -> Option<Campaign> {
    let id = problems.take(CampaignId::parse(&format!("{field}.id"), &c.id));
    let currency = problems.take(Currency::parse(&format!("{field}.currency"), &c.currency))?;
    let model = match v1::AttributionModel::try_from(c.model) {
        Ok(v1::AttributionModel::Unspecified | v1::AttributionModel::LastClick) => Model::LastClick,
        Ok(v1::AttributionModel::FirstClick) => Model::FirstClick,
        Ok(v1::AttributionModel::Linear) => Model::Linear,
        Ok(v1::AttributionModel::PositionBased) => Model::PositionBased,
        Ok(v1::AttributionModel::TimeDecay) => Model::TimeDecay {
            half_life: c
                .time_decay_half_life
                .as_ref()
                .map_or(program::DEFAULT_HALF_LIFE, duration),
        },
        Err(_) => {
            problems.0.push(Violation::new(
                format!("{field}.model"),
                "unknown_enum",
                format!("{} is not an attribution model", c.model),
            ));
            Model::LastClick
        }
    };
    let period = match v1::PeriodKind::try_from(c.period) {
        Ok(v1::PeriodKind::Unspecified | v1::PeriodKind::Month) => PeriodKind::Month,
        Ok(v1::PeriodKind::Week) => PeriodKind::Week,
        Ok(v1::PeriodKind::Lifetime) => PeriodKind::Lifetime,
        Err(_) => {
            problems.0.push(Violation::new(
                format!("{field}.period"),
                "unknown_enum",
                format!("{} is not a period kind", c.period),
            ));
            PeriodKind::Month
        }
    };
    let plans = c
        .plans
        .iter()
        .enumerate()
        .filter_map(|(i, p)| plan(problems, &format!("{field}.plans[{i}]"), p, currency))
        .collect();
    Some(Campaign {
        id: id?,
        name: c.name.clone(),
        currency,
        model,
        lookback: c
            .lookback
            .as_ref()
            .map_or(program::DEFAULT_LOOKBACK, duration),
        code_precedence: c.code_precedence.unwrap_or(true),
        active_from: c.active_from.as_ref().map(timestamp),
        active_until: c.active_until.as_ref().map(timestamp),
        period,
        plans,
    })
}

fn plan(
    problems: &mut Problems,
    field: &str,
    p: &v1::CommissionPlan,
    currency: Currency,
) -> Option<Plan> {
    use v1::commission_plan::Kind as K;
    let id = problems.take(PlanId::parse(&format!("{field}.id"), &p.id));
    let kind = match &p.kind {
        None => {
            problems.0.push(Violation::new(
                format!("{field}.kind"),
                "required",
                "one of cpc, cpl, cps_flat, cps_percent, tiered, milestone, base_fee, engagement",
            ));
            return None;
        }
        Some(K::Cpc(c)) => PlanKind::Cpc {
            amount: problems.amount(&format!("{field}.cpc.amount"), &c.amount, currency, true),
        },
        Some(K::Cpl(c)) => PlanKind::Cpl {
            amount: problems.amount(&format!("{field}.cpl.amount"), &c.amount, currency, true),
            qualified_only: c.qualified_only,
        },
        Some(K::CpsFlat(c)) => PlanKind::CpsFlat {
            amount: problems.amount(
                &format!("{field}.cps_flat.amount"),
                &c.amount,
                currency,
                true,
            ),
        },
        Some(K::CpsPercent(c)) => PlanKind::CpsPercent {
            rate: problems.rate(&format!("{field}.cps_percent.rate"), &c.rate),
            category_rates: c
                .category_rates
                .iter()
                .map(|(cat, r)| {
                    (
                        Arc::<str>::from(cat.as_str()),
                        problems.rate(&format!("{field}.cps_percent.category_rates[{cat}]"), r),
                    )
                })
                .collect(),
        },
        Some(K::Tiered(t)) => PlanKind::Tiered {
            basis: match v1::commission_plan::tiered::Basis::try_from(t.basis) {
                Ok(v1::commission_plan::tiered::Basis::Revenue) => TierBasis::Revenue,
                _ => TierBasis::Count,
            },
            tiers: t
                .tiers
                .iter()
                .enumerate()
                .map(|(i, tier)| Tier {
                    from: problems.rate(
                        &format!("{field}.tiered.tiers[{i}].from"),
                        if tier.from.is_empty() {
                            "0"
                        } else {
                            &tier.from
                        },
                    ),
                    rate: problems.rate(&format!("{field}.tiered.tiers[{i}].rate"), &tier.rate),
                })
                .collect(),
        },
        Some(K::Milestone(m)) => PlanKind::Milestone {
            milestones: m
                .milestones
                .iter()
                .enumerate()
                .map(|(i, m)| Milestone {
                    threshold: m.threshold,
                    bonus: problems.amount(
                        &format!("{field}.milestone.milestones[{i}].bonus"),
                        &m.bonus,
                        currency,
                        true,
                    ),
                })
                .collect(),
        },
        Some(K::BaseFee(b)) => PlanKind::BaseFee {
            amount: problems.amount(
                &format!("{field}.base_fee.amount"),
                &b.amount,
                currency,
                true,
            ),
        },
        Some(K::Engagement(e)) => PlanKind::Engagement {
            per_view: problems.unit_rate(
                &format!("{field}.engagement.per_view"),
                &e.per_view,
                currency,
            ),
            per_like: problems.unit_rate(
                &format!("{field}.engagement.per_like"),
                &e.per_like,
                currency,
            ),
            per_comment: problems.unit_rate(
                &format!("{field}.engagement.per_comment"),
                &e.per_comment,
                currency,
            ),
            per_share: problems.unit_rate(
                &format!("{field}.engagement.per_share"),
                &e.per_share,
                currency,
            ),
            minimum_views: e.minimum_views,
        },
    };
    let cap_amount = p.cap_amount_per_period.as_ref().map(|_| {
        problems.amount(
            &format!("{field}.cap_amount_per_period"),
            &p.cap_amount_per_period,
            currency,
            true,
        )
    });
    let cap_count = match (&p.kind, p.cap_count_per_period) {
        (Some(K::Cpc(c)), cap) => c.max_paid_clicks_per_period.or(cap),
        (_, cap) => cap,
    };
    Some(Plan {
        id: id?,
        kind,
        new_customer_only: p.new_customer_only,
        recurring_periods: p.recurring_periods,
        cap_amount,
        cap_count,
        hold: p.hold.as_ref().map_or(program::DEFAULT_HOLD, duration),
    })
}

/// Replaces raw PII in an event with hashes, in place (§4, §11): `context.ip` and
/// `context.user_agent` become SHA-256 of the per-tenant `salt` and the value; a raw
/// `email` becomes the unsalted SHA-256 of the trimmed, lower-cased address (the form
/// `Creator.email_hashes` uses, so self-referral checks can match). Raw fields are
/// cleared, so nothing raw is ever published.
pub fn hash_pii(event: &mut v1::Event, salt: &[u8]) {
    use sha2::{Digest, Sha256};
    let salted = |value: &str| {
        let mut h = Sha256::new();
        h.update((salt.len() as u64).to_le_bytes());
        h.update(salt);
        h.update(value.as_bytes());
        hex::encode(h.finalize())
    };
    if let Some(context) = event.context.as_mut() {
        if !context.ip.is_empty() {
            context.ip_hash = salted(&std::mem::take(&mut context.ip));
        }
        if !context.user_agent.is_empty() {
            context.user_agent_hash = salted(&std::mem::take(&mut context.user_agent));
        }
    }
    let (email, hash) = match event.payload.as_mut() {
        Some(v1::event::Payload::Signup(s)) => (&mut s.email, &mut s.email_hash),
        Some(v1::event::Payload::Order(o)) => (&mut o.email, &mut o.email_hash),
        _ => return,
    };
    if !email.is_empty() {
        *hash = email_hash(&std::mem::take(email));
    }
}

/// The canonical email hash: lower-case hex SHA-256 of the trimmed, lower-cased address.
pub fn email_hash(email: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(email.trim().to_lowercase().as_bytes()))
}
