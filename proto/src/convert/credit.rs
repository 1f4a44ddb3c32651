//! Credits (the `credits` topic) to and from `payoff.v1.Credit`, losslessly: a credit
//! converted to proto and back equals the original.
//!
//! Reading back fails at the first refused field, named by its proto path
//! (`order.all_shares[1].share`, `explanation.candidates[0].reason`).

use std::sync::Arc;

use payoff_core::{
    Rejection, Violation,
    credit::{
        Candidate, Credit, CreditKind, Explanation, FraudCheck, FraudReason, Renewal, Rule, Share,
    },
    event::AdjustmentKind,
    ids::{CampaignId, CreatorId, EventId, LeadId, LinkCode, OrderId, TenantId, VisitorId},
    money::{Money, decimal_text},
    program::Model,
};

use super::wire::{
    decimal, derived, known_name, money, money_to_proto, optional_decimal,
    optional_decimal_to_proto, optional_id, required, required_timestamp, unknown_enum,
};
use super::{duration, to_duration, to_timestamp};
use crate::v1::{self, credit::Kind};

/// Every fraud reason, for reading their names back.
const FRAUD_REASONS: [FraudReason; 4] = [
    FraudReason::SelfReferral,
    FraudReason::ClickFlood,
    FraudReason::TooFast,
    FraudReason::DuplicateOrder,
];

/// Why the attributor passes over a click (`Candidate::reason`) besides a fraud reason's
/// name: the names `attribution` gives, kept in step with it (the round trip of the
/// example in `tests/credits.rs` fails on a reason missing here).
const OTHER_CANDIDATE_REASONS: [&str; 4] = [
    "fraud",
    "unknown_campaign",
    "campaign_inactive",
    "outside_lookback",
];

/// Every model, with its wire value (`half_life` is not part of an explanation).
const MODELS: [(Model, v1::AttributionModel); 5] = [
    (Model::LastClick, v1::AttributionModel::LastClick),
    (Model::FirstClick, v1::AttributionModel::FirstClick),
    (Model::Linear, v1::AttributionModel::Linear),
    (Model::PositionBased, v1::AttributionModel::PositionBased),
    (
        Model::TimeDecay {
            half_life: payoff_core::time::Duration(0),
        },
        v1::AttributionModel::TimeDecay,
    ),
];

/// A credit of `tenant` as published on the `credits` topic.
pub fn credit_to_proto(tenant: &TenantId, credit: &Credit) -> v1::Credit {
    v1::Credit {
        credit_id: credit.id.to_text(),
        tenant_id: tenant.as_str().to_owned(),
        campaign_id: credit.campaign.as_str().to_owned(),
        creator_id: credit.creator.as_str().to_owned(),
        occurred_at: Some(to_timestamp(credit.occurred_at)),
        cause_event_id: credit.cause.as_str().to_owned(),
        config_version: credit.config_version,
        fraud: credit.fraud.map(|reason| v1::FraudFlag {
            reason: fraud_reason_to_proto(reason).into(),
            detail: String::new(),
        }),
        kind: Some(kind_to_proto(&credit.kind)),
        explanation: credit.explanation.as_deref().map(explanation_to_proto),
    }
}

/// A credit read from the wire, with its tenant. Refuses anything
/// [`credit_to_proto`] would not have written, naming the field.
pub fn credit_from_proto(p: &v1::Credit) -> Result<(TenantId, Credit), Rejection> {
    let tenant = TenantId::parse("tenant_id", &p.tenant_id)?;
    let campaign = CampaignId::parse("campaign_id", &p.campaign_id)?;
    let creator = CreatorId::parse("creator_id", &p.creator_id)?;
    let fraud = p
        .fraud
        .as_ref()
        .map(|f| fraud_reason("fraud.reason", f.reason))
        .transpose()?;
    let kind = match &p.kind {
        Some(kind) => kind_from_proto(kind, &campaign, &creator)?,
        None => {
            return Err(Violation::new(
                "kind",
                "required",
                "one of click, order, lead, reversal, lead_status",
            )
            .into());
        }
    };
    let explanation = p
        .explanation
        .as_ref()
        .map(|e| {
            explanation_from_proto(e)
                .map(Arc::new)
                .map_err(|v| v.under("explanation"))
        })
        .transpose()?;
    let credit = Credit {
        id: derived("credit_id", &p.credit_id)?,
        campaign,
        creator,
        occurred_at: required_timestamp("occurred_at", p.occurred_at.as_ref())?,
        cause: EventId::parse("cause_event_id", &p.cause_event_id)?,
        config_version: p.config_version,
        fraud,
        kind,
        explanation,
    };
    Ok((tenant, credit))
}

fn kind_to_proto(kind: &CreditKind) -> Kind {
    match kind {
        CreditKind::Click { visitor, link } => Kind::Click(v1::ClickCredit {
            visitor_id: visitor.as_str().to_owned(),
            link_code: link
                .as_ref()
                .map(|l| l.as_str().to_owned())
                .unwrap_or_default(),
            // The attributor credits unique clicks only.
            unique: true,
        }),
        CreditKind::Lead {
            lead,
            index,
            shares,
            new_customer,
        } => Kind::Lead(v1::LeadCredit {
            lead_id: lead.as_str().to_owned(),
            share: decimal_text(shares[*index].share),
            all_shares: shares.iter().map(share_to_proto).collect(),
            new_customer: *new_customer,
        }),
        CreditKind::Order {
            order,
            index,
            shares,
            gross,
            net,
            categories,
            new_customer,
            renewal,
        } => Kind::Order(v1::OrderCredit {
            order_id: order.as_str().to_owned(),
            share: decimal_text(shares[*index].share),
            all_shares: shares.iter().map(share_to_proto).collect(),
            net_amount: Some(money_to_proto(*net)),
            gross_amount: Some(money_to_proto(*gross)),
            category_amounts: categories
                .iter()
                .map(|(category, amount)| v1::CategoryAmount {
                    category: category.as_deref().unwrap_or_default().to_owned(),
                    amount: Some(money_to_proto(Money::new(*amount, net.currency))),
                })
                .collect(),
            new_customer: *new_customer,
            renewal_of: renewal
                .as_ref()
                .map(|r| r.of.as_str().to_owned())
                .unwrap_or_default(),
            original_occurred_at: renewal.as_ref().map(|r| to_timestamp(r.original_at)),
        }),
        CreditKind::Reversal {
            original,
            order,
            kind,
            cumulative_fraction,
        } => Kind::Reversal(v1::ReversalCredit {
            original_credit_id: original.to_text(),
            order_id: order.as_str().to_owned(),
            kind: adjustment_kind_to_proto(*kind).into(),
            cumulative_fraction: decimal_text(*cumulative_fraction),
            amount: None,
        }),
        CreditKind::LeadStatus {
            original,
            lead,
            qualified,
        } => Kind::LeadStatus(v1::LeadStatusCredit {
            original_credit_id: original.to_text(),
            lead_id: lead.as_str().to_owned(),
            qualified: *qualified,
        }),
    }
}

fn kind_from_proto(
    kind: &Kind,
    campaign: &CampaignId,
    creator: &CreatorId,
) -> Result<CreditKind, Violation> {
    Ok(match kind {
        Kind::Click(c) => CreditKind::Click {
            visitor: VisitorId::parse("click.visitor_id", &c.visitor_id)?,
            link: optional_id("click.link_code", &c.link_code, LinkCode::parse)?,
        },
        Kind::Lead(l) => {
            let (index, shares) = shares_from_proto(&l.share, &l.all_shares, campaign, creator)
                .map_err(|v| v.under("lead"))?;
            CreditKind::Lead {
                lead: LeadId::parse("lead.lead_id", &l.lead_id)?,
                index,
                shares,
                new_customer: l.new_customer,
            }
        }
        Kind::Order(o) => order_from_proto(o, campaign, creator).map_err(|v| v.under("order"))?,
        Kind::Reversal(r) => CreditKind::Reversal {
            original: derived("reversal.original_credit_id", &r.original_credit_id)?,
            order: OrderId::parse("reversal.order_id", &r.order_id)?,
            kind: adjustment_kind("reversal.kind", r.kind)?,
            cumulative_fraction: decimal("reversal.cumulative_fraction", &r.cumulative_fraction)?,
        },
        Kind::LeadStatus(s) => CreditKind::LeadStatus {
            original: derived("lead_status.original_credit_id", &s.original_credit_id)?,
            lead: LeadId::parse("lead_status.lead_id", &s.lead_id)?,
            qualified: s.qualified,
        },
    })
}

fn order_from_proto(
    o: &v1::OrderCredit,
    campaign: &CampaignId,
    creator: &CreatorId,
) -> Result<CreditKind, Violation> {
    let (index, shares) = shares_from_proto(&o.share, &o.all_shares, campaign, creator)?;
    let net = money("net_amount", o.net_amount.as_ref())?;
    let categories = o
        .category_amounts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let field = format!("category_amounts[{i}]");
            let amount = money("amount", c.amount.as_ref()).map_err(|v| v.under(&field))?;
            if amount.currency != net.currency {
                return Err(Violation::new(
                    format!("{field}.amount.currency"),
                    "currency_mismatch",
                    format!("must be the net amount's currency {}", net.currency),
                ));
            }
            let category = (!c.category.is_empty()).then(|| Arc::<str>::from(c.category.as_str()));
            Ok((category, amount.amount))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let renewal = match (o.renewal_of.as_str(), o.original_occurred_at.as_ref()) {
        ("", None) => None,
        ("", Some(_)) => return Err(required("renewal_of")),
        (of, at) => Some(Renewal {
            of: OrderId::parse("renewal_of", of)?,
            original_at: required_timestamp("original_occurred_at", at)?,
        }),
    };
    Ok(CreditKind::Order {
        order: OrderId::parse("order_id", &o.order_id)?,
        index,
        shares,
        gross: money("gross_amount", o.gross_amount.as_ref())?,
        net,
        categories: categories.into(),
        new_customer: o.new_customer,
        renewal,
    })
}

fn share_to_proto(s: &Share) -> v1::Share {
    v1::Share {
        creator_id: s.creator.as_str().to_owned(),
        campaign_id: s.campaign.as_str().to_owned(),
        share: decimal_text(s.share),
    }
}

/// All shares of a conversion and the index of the credited (campaign, creator) among
/// them; `share` must be that one's share.
fn shares_from_proto(
    share: &str,
    all: &[v1::Share],
    campaign: &CampaignId,
    creator: &CreatorId,
) -> Result<(usize, Arc<[Share]>), Violation> {
    let shares = all
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let share = || -> Result<Share, Violation> {
                Ok(Share {
                    creator: CreatorId::parse("creator_id", &s.creator_id)?,
                    campaign: CampaignId::parse("campaign_id", &s.campaign_id)?,
                    share: decimal("share", &s.share)?,
                })
            };
            share().map_err(|v| v.under(&format!("all_shares[{i}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let index = shares
        .iter()
        .position(|s| &s.campaign == campaign && &s.creator == creator)
        .ok_or_else(|| {
            Violation::new(
                "all_shares",
                "missing_share",
                format!("has no share of campaign {campaign} for creator {creator}"),
            )
        })?;
    if decimal("share", share)? != shares[index].share {
        return Err(Violation::new(
            "share",
            "inconsistent",
            format!(
                "{share:?} differs from the credited share {} in all_shares[{index}]",
                shares[index].share
            ),
        ));
    }
    Ok((index, shares.into()))
}

fn explanation_to_proto(e: &Explanation) -> v1::Explanation {
    let mut out = v1::Explanation {
        event_id: e.event.as_str().to_owned(),
        candidates: e.candidates.iter().map(candidate_to_proto).collect(),
        fraud_checks: e
            .fraud_checks
            .iter()
            .map(|c| v1::FraudCheck {
                name: c.check.as_str().to_owned(),
                passed: c.passed,
                detail: c.detail.clone(),
            })
            .collect(),
        config_version: e.config_version,
        ..Default::default()
    };
    match &e.rule {
        Rule::PromoCode { code } => {
            out.set_rule(v1::AttributionRule::PromoCode);
            out.promo_code.clone_from(code);
        }
        Rule::Model {
            model,
            campaign,
            lookback,
        } => {
            out.set_rule(v1::AttributionRule::Model);
            let wire = MODELS.iter().find(|(m, _)| m.name() == *model);
            out.set_model(wire.map_or(v1::AttributionModel::Unspecified, |(_, w)| *w));
            out.model_campaign_id = campaign.as_str().to_owned();
            out.lookback = Some(to_duration(*lookback));
        }
        Rule::Renewal { of } => {
            out.set_rule(v1::AttributionRule::Renewal);
            out.renewal_of = of.as_str().to_owned();
        }
        Rule::Unattributed => out.set_rule(v1::AttributionRule::Unattributed),
    }
    out
}

fn explanation_from_proto(e: &v1::Explanation) -> Result<Explanation, Violation> {
    let rule = match v1::AttributionRule::try_from(e.rule) {
        Ok(v1::AttributionRule::PromoCode) => Rule::PromoCode {
            code: e.promo_code.clone(),
        },
        Ok(v1::AttributionRule::Model) => Rule::Model {
            model: MODELS
                .iter()
                .find(|(_, w)| i32::from(*w) == e.model)
                .map(|(m, _)| m.name())
                .ok_or_else(|| unknown_enum("model", e.model, "an attribution model"))?,
            campaign: CampaignId::parse("model_campaign_id", &e.model_campaign_id)?,
            lookback: e
                .lookback
                .as_ref()
                .map(duration)
                .ok_or_else(|| required("lookback"))?,
        },
        Ok(v1::AttributionRule::Renewal) => Rule::Renewal {
            of: OrderId::parse("renewal_of", &e.renewal_of)?,
        },
        Ok(v1::AttributionRule::Unattributed) => Rule::Unattributed,
        Ok(v1::AttributionRule::Unspecified) | Err(_) => {
            return Err(unknown_enum("rule", e.rule, "an attribution rule"));
        }
    };
    let candidates = e
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| candidate_from_proto(c).map_err(|v| v.under(&format!("candidates[{i}]"))))
        .collect::<Result<_, _>>()?;
    let fraud_checks = e
        .fraud_checks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let check = FRAUD_REASONS
                .into_iter()
                .find(|r| r.as_str() == c.name)
                .ok_or_else(|| {
                    unknown_enum(
                        &format!("fraud_checks[{i}].name"),
                        format!("{:?}", c.name),
                        "a fraud check",
                    )
                })?;
            Ok(FraudCheck {
                check,
                passed: c.passed,
                detail: c.detail.clone(),
            })
        })
        .collect::<Result<_, Violation>>()?;
    Ok(Explanation {
        event: EventId::parse("event_id", &e.event_id)?,
        rule,
        candidates,
        fraud_checks,
        config_version: e.config_version,
    })
}

fn candidate_to_proto(c: &Candidate) -> v1::Candidate {
    v1::Candidate {
        click_event_id: c.click.as_str().to_owned(),
        creator_id: c.creator.as_str().to_owned(),
        campaign_id: c.campaign.as_str().to_owned(),
        occurred_at: Some(to_timestamp(c.at)),
        eligible: c.eligible,
        reason: c.reason.unwrap_or_default().to_owned(),
        share: optional_decimal_to_proto(c.share),
    }
}

fn candidate_from_proto(c: &v1::Candidate) -> Result<Candidate, Violation> {
    let reason = if c.reason.is_empty() {
        None
    } else {
        let names: Vec<&'static str> = FRAUD_REASONS
            .iter()
            .map(|r| r.as_str())
            .chain(OTHER_CANDIDATE_REASONS)
            .collect();
        Some(known_name(
            "reason",
            &c.reason,
            &names,
            "a candidate reason",
        )?)
    };
    Ok(Candidate {
        click: EventId::parse("click_event_id", &c.click_event_id)?,
        creator: CreatorId::parse("creator_id", &c.creator_id)?,
        campaign: CampaignId::parse("campaign_id", &c.campaign_id)?,
        at: required_timestamp("occurred_at", c.occurred_at.as_ref())?,
        eligible: c.eligible,
        reason,
        share: optional_decimal("share", &c.share)?,
    })
}

fn fraud_reason_to_proto(r: FraudReason) -> v1::FraudReason {
    match r {
        FraudReason::SelfReferral => v1::FraudReason::SelfReferral,
        FraudReason::ClickFlood => v1::FraudReason::ClickFlood,
        FraudReason::TooFast => v1::FraudReason::ConversionTooFast,
        FraudReason::DuplicateOrder => v1::FraudReason::DuplicateOrder,
    }
}

fn fraud_reason(field: &str, value: i32) -> Result<FraudReason, Violation> {
    FRAUD_REASONS
        .into_iter()
        .find(|r| i32::from(fraud_reason_to_proto(*r)) == value)
        .ok_or_else(|| unknown_enum(field, value, "a fraud reason"))
}

fn adjustment_kind_to_proto(k: AdjustmentKind) -> v1::AdjustmentKind {
    match k {
        AdjustmentKind::Refund => v1::AdjustmentKind::Refund,
        AdjustmentKind::Cancel => v1::AdjustmentKind::Cancel,
        AdjustmentKind::Chargeback => v1::AdjustmentKind::Chargeback,
    }
}

fn adjustment_kind(field: &str, value: i32) -> Result<AdjustmentKind, Violation> {
    match v1::AdjustmentKind::try_from(value) {
        Ok(v1::AdjustmentKind::Refund) => Ok(AdjustmentKind::Refund),
        Ok(v1::AdjustmentKind::Cancel) => Ok(AdjustmentKind::Cancel),
        Ok(v1::AdjustmentKind::Chargeback) => Ok(AdjustmentKind::Chargeback),
        Ok(v1::AdjustmentKind::Unspecified) | Err(_) => {
            Err(unknown_enum(field, value, "an adjustment kind"))
        }
    }
}

/// A credit encoded as `payoff.v1.Credit`: the same bytes as encoding
/// [`credit_to_proto`] (see [`CreditEncoder`]).
pub fn encode_credit(tenant: &TenantId, credit: &Credit) -> Vec<u8> {
    CreditEncoder::default().encode(tenant, credit)
}

/// Encodes credits as `payoff.v1.Credit`, the same bytes as encoding [`credit_to_proto`],
/// written straight from the credit instead of through an owned message of copied
/// strings (the attributor's hot path).
///
/// The credits of one conversion (one per credited creator) share its explanation, the
/// largest part of each: the encoder keeps the last explanation's bytes and reuses them
/// while the next credit carries the same one.
#[derive(Debug, Default)]
pub struct CreditEncoder {
    /// The explanation last encoded (held, so its address cannot be reused) and its bytes.
    last: Option<(Arc<Explanation>, Vec<u8>)>,
}

impl CreditEncoder {
    /// The encoded credit of `tenant`.
    pub fn encode(&mut self, tenant: &TenantId, credit: &Credit) -> Vec<u8> {
        let explanation = match &credit.explanation {
            None => None,
            Some(explanation) => {
                let cached = self
                    .last
                    .as_ref()
                    .is_some_and(|(last, _)| Arc::ptr_eq(last, explanation));
                if !cached {
                    let bytes = wire::explanation(explanation);
                    self.last = Some((Arc::clone(explanation), bytes));
                }
                self.last.as_ref().map(|(_, bytes)| bytes.as_slice())
            }
        };
        wire::encode(tenant, credit, explanation)
    }
}

/// Wire encoding of a credit and its explanation, field by field in tag order as prost
/// writes them (proto3: fields at their default value are left out, messages that are
/// present are written even when empty), with no owned message in between.
mod wire {
    use prost::{
        Message,
        encoding::{WireType, encode_key, encode_varint, encoded_len_varint},
    };

    use payoff_core::{
        credit::{Candidate, Rule, Share},
        money::{DecimalText, Money},
        time::{Duration, Timestamp},
    };

    use super::{
        Credit, CreditKind, Explanation, MODELS, TenantId, adjustment_kind_to_proto,
        fraud_reason_to_proto, v1,
    };
    use crate::convert::{to_duration, to_timestamp};

    fn put_str(buf: &mut Vec<u8>, tag: u32, s: &str) {
        put_text(buf, tag, s.as_bytes());
    }

    /// A string field from bytes known to be UTF-8 (ASCII text the core wrote), without
    /// checking them again.
    fn put_text(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
        if !bytes.is_empty() {
            encode_key(tag, WireType::LengthDelimited, buf);
            encode_varint(bytes.len() as u64, buf);
            buf.extend_from_slice(bytes);
        }
    }

    fn put_bool(buf: &mut Vec<u8>, tag: u32, b: bool) {
        if b {
            encode_key(tag, WireType::Varint, buf);
            buf.push(1);
        }
    }

    fn put_u64(buf: &mut Vec<u8>, tag: u32, v: u64) {
        if v != 0 {
            encode_key(tag, WireType::Varint, buf);
            encode_varint(v, buf);
        }
    }

    /// An enum value (int32: a negative one is ten bytes, as prost writes it).
    fn put_enum(buf: &mut Vec<u8>, tag: u32, v: i32) {
        if v != 0 {
            encode_key(tag, WireType::Varint, buf);
            encode_varint(i64::from(v) as u64, buf);
        }
    }

    /// A present message: its body is written in place after a one-byte length, which
    /// is widened (the body moved) in the rare case it is 128 bytes or more.
    fn put_message(buf: &mut Vec<u8>, tag: u32, body: impl FnOnce(&mut Vec<u8>)) {
        encode_key(tag, WireType::LengthDelimited, buf);
        let at = buf.len();
        buf.push(0);
        body(buf);
        let len = buf.len() - at - 1;
        if len < 0x80 {
            buf[at] = len as u8;
        } else {
            let mut prefix = Vec::with_capacity(encoded_len_varint(len as u64));
            encode_varint(len as u64, &mut prefix);
            buf.splice(at..=at, prefix);
        }
    }

    fn put_timestamp(buf: &mut Vec<u8>, tag: u32, t: Timestamp) {
        let t = to_timestamp(t);
        put_message(buf, tag, |buf| t.encode_raw(buf));
    }

    fn put_duration(buf: &mut Vec<u8>, tag: u32, d: Duration) {
        let d = to_duration(d);
        put_message(buf, tag, |buf| d.encode_raw(buf));
    }

    fn put_decimal(buf: &mut Vec<u8>, tag: u32, d: rust_decimal::Decimal) {
        put_text(buf, tag, DecimalText::new(d).as_bytes());
    }

    /// `payoff.v1.Money`: amount = 1, currency = 2.
    fn put_money(buf: &mut Vec<u8>, tag: u32, m: Money) {
        put_message(buf, tag, |buf| {
            put_decimal(buf, 1, m.amount);
            put_text(buf, 2, m.currency.code_bytes());
        });
    }

    /// `payoff.v1.Share`: creator_id = 1, campaign_id = 2, share = 3.
    fn put_share(buf: &mut Vec<u8>, tag: u32, s: &Share) {
        put_message(buf, tag, |buf| {
            put_str(buf, 1, s.creator.as_str());
            put_str(buf, 2, s.campaign.as_str());
            put_decimal(buf, 3, s.share);
        });
    }

    /// The credited share (2) and all shares (3) of an order or lead credit.
    fn put_shares(buf: &mut Vec<u8>, shares: &[Share], index: usize) {
        put_decimal(buf, 2, shares[index].share);
        for share in shares {
            put_share(buf, 3, share);
        }
    }

    /// The kind (oneof): click = 10, order = 11, lead = 12, reversal = 13, lead_status = 14.
    fn put_kind(buf: &mut Vec<u8>, kind: &CreditKind) {
        match kind {
            // ClickCredit: visitor_id = 1, link_code = 2, unique = 3 (always true: the
            // attributor credits unique clicks only).
            CreditKind::Click { visitor, link } => put_message(buf, 10, |buf| {
                put_str(buf, 1, visitor.as_str());
                put_str(buf, 2, link.as_ref().map_or("", |l| l.as_str()));
                put_bool(buf, 3, true);
            }),
            // OrderCredit: order_id = 1, share = 2, all_shares = 3, net_amount = 4,
            // gross_amount = 5, category_amounts = 6, new_customer = 7, renewal_of = 8,
            // original_occurred_at = 9.
            CreditKind::Order {
                order,
                index,
                shares,
                gross,
                net,
                categories,
                new_customer,
                renewal,
            } => put_message(buf, 11, |buf| {
                put_str(buf, 1, order.as_str());
                put_shares(buf, shares, *index);
                put_money(buf, 4, *net);
                put_money(buf, 5, *gross);
                for (category, amount) in categories.iter() {
                    // CategoryAmount: category = 1, amount = 2.
                    put_message(buf, 6, |buf| {
                        put_str(buf, 1, category.as_deref().unwrap_or_default());
                        put_money(buf, 2, Money::new(*amount, net.currency));
                    });
                }
                put_bool(buf, 7, *new_customer);
                if let Some(renewal) = renewal {
                    put_str(buf, 8, renewal.of.as_str());
                    put_timestamp(buf, 9, renewal.original_at);
                }
            }),
            // LeadCredit: lead_id = 1, share = 2, all_shares = 3, new_customer = 4.
            CreditKind::Lead {
                lead,
                index,
                shares,
                new_customer,
            } => put_message(buf, 12, |buf| {
                put_str(buf, 1, lead.as_str());
                put_shares(buf, shares, *index);
                put_bool(buf, 4, *new_customer);
            }),
            // ReversalCredit: original_credit_id = 1, order_id = 2, kind = 3,
            // cumulative_fraction = 4, amount = 5 (never set here).
            CreditKind::Reversal {
                original,
                order,
                kind,
                cumulative_fraction,
            } => put_message(buf, 13, |buf| {
                put_text(buf, 1, original.text().as_bytes());
                put_str(buf, 2, order.as_str());
                put_enum(buf, 3, adjustment_kind_to_proto(*kind).into());
                put_decimal(buf, 4, *cumulative_fraction);
            }),
            // LeadStatusCredit: original_credit_id = 1, lead_id = 2, qualified = 3.
            CreditKind::LeadStatus {
                original,
                lead,
                qualified,
            } => put_message(buf, 14, |buf| {
                put_text(buf, 1, original.text().as_bytes());
                put_str(buf, 2, lead.as_str());
                put_bool(buf, 3, *qualified);
            }),
        }
    }

    /// `payoff.v1.Candidate`: click_event_id = 1, creator_id = 2, campaign_id = 3,
    /// occurred_at = 4, eligible = 5, reason = 6, share = 7.
    fn put_candidate(buf: &mut Vec<u8>, tag: u32, c: &Candidate) {
        put_message(buf, tag, |buf| {
            put_str(buf, 1, c.click.as_str());
            put_str(buf, 2, c.creator.as_str());
            put_str(buf, 3, c.campaign.as_str());
            put_timestamp(buf, 4, c.at);
            put_bool(buf, 5, c.eligible);
            put_str(buf, 6, c.reason.unwrap_or_default());
            if let Some(share) = c.share {
                put_decimal(buf, 7, share);
            }
        });
    }

    /// The body of `payoff.v1.Explanation`: rule = 1, promo_code = 2, model = 3,
    /// lookback = 4, candidates = 5, fraud_checks = 6, config_version = 7, event_id = 8,
    /// model_campaign_id = 9, renewal_of = 10.
    pub(super) fn explanation(e: &Explanation) -> Vec<u8> {
        let mut buf = Vec::with_capacity(64 + 96 * e.candidates.len());
        let buf = &mut buf;
        let (rule, promo_code, model, lookback, model_campaign, renewal_of) = match &e.rule {
            Rule::PromoCode { code } => (
                v1::AttributionRule::PromoCode,
                code.as_str(),
                v1::AttributionModel::Unspecified,
                None,
                "",
                "",
            ),
            Rule::Model {
                model,
                campaign,
                lookback,
            } => (
                v1::AttributionRule::Model,
                "",
                MODELS
                    .iter()
                    .find(|(m, _)| m.name() == *model)
                    .map_or(v1::AttributionModel::Unspecified, |(_, w)| *w),
                Some(*lookback),
                campaign.as_str(),
                "",
            ),
            Rule::Renewal { of } => (
                v1::AttributionRule::Renewal,
                "",
                v1::AttributionModel::Unspecified,
                None,
                "",
                of.as_str(),
            ),
            Rule::Unattributed => (
                v1::AttributionRule::Unattributed,
                "",
                v1::AttributionModel::Unspecified,
                None,
                "",
                "",
            ),
        };
        put_enum(buf, 1, rule.into());
        put_str(buf, 2, promo_code);
        put_enum(buf, 3, model.into());
        if let Some(lookback) = lookback {
            put_duration(buf, 4, lookback);
        }
        for c in &e.candidates {
            put_candidate(buf, 5, c);
        }
        // FraudCheck: name = 1, passed = 2, detail = 3.
        for c in &e.fraud_checks {
            put_message(buf, 6, |buf| {
                put_str(buf, 1, c.check.as_str());
                put_bool(buf, 2, c.passed);
                put_str(buf, 3, &c.detail);
            });
        }
        put_u64(buf, 7, e.config_version);
        put_str(buf, 8, e.event.as_str());
        put_str(buf, 9, model_campaign);
        put_str(buf, 10, renewal_of);
        std::mem::take(buf)
    }

    /// `credit` of `tenant`, with its explanation already encoded: credit_id = 1,
    /// tenant_id = 2, campaign_id = 3, creator_id = 4, occurred_at = 5,
    /// cause_event_id = 6, config_version = 7, fraud = 8, the kind (10-14),
    /// explanation = 20.
    pub(super) fn encode(
        tenant: &TenantId,
        credit: &Credit,
        explanation: Option<&[u8]>,
    ) -> Vec<u8> {
        let mut buf = Vec::with_capacity(192 + explanation.map_or(0, |e| e.len() + 3));
        let buf = &mut buf;
        put_text(buf, 1, credit.id.text().as_bytes());
        put_str(buf, 2, tenant.as_str());
        put_str(buf, 3, credit.campaign.as_str());
        put_str(buf, 4, credit.creator.as_str());
        put_timestamp(buf, 5, credit.occurred_at);
        put_str(buf, 6, credit.cause.as_str());
        put_u64(buf, 7, credit.config_version);
        if let Some(reason) = credit.fraud {
            // FraudFlag: reason = 1, detail = 2 (never set here).
            put_message(buf, 8, |buf| {
                put_enum(buf, 1, fraud_reason_to_proto(reason).into());
            });
        }
        put_kind(buf, &credit.kind);
        if let Some(explanation) = explanation {
            encode_key(20, WireType::LengthDelimited, buf);
            encode_varint(explanation.len() as u64, buf);
            buf.extend_from_slice(explanation);
        }
        std::mem::take(buf)
    }
}
