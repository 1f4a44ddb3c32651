//! Ledger entries to and from `payoff.v1.LedgerEntry`, losslessly: an entry converted
//! to proto and back equals the original.
//!
//! The entry's [`Note`] travels twice: as the text people read (`note`, what `payoff
//! replay` prints) and, for notes payoff priced, structured (`note_detail`), which is
//! what is read back; free text has no detail. Its [`Cause`] travels as the id's text
//! plus `cause_kind`. Reading back fails at the first refused field, named by its proto
//! path (`note_detail.percent.net.amount`).

use payoff_core::{
    Rejection, Violation,
    event::AdjustmentKind,
    ids::{CampaignId, CreatorId, EventId, LeadId, OrderId, PlanId, PostId, RecordId, TenantId},
    ledger::{Cause, EntryKind, LedgerEntry, Note},
    money::decimal_text,
    projection::EntryStatus,
};

use super::to_timestamp;
use super::wire::{
    decimal, derived, known_name, money, money_to_proto, optional_decimal,
    optional_decimal_to_proto, optional_derived, optional_id, period, required_timestamp,
    unknown_enum,
};
use crate::v1::{
    self,
    entry_note::{self, Kind as NoteKind},
};

/// What a reversal note says happened besides an adjustment kind.
const LEAD_REJECTED: &str = "lead_rejected";

/// An entry of `tenant` as published or stored, with its derived `status` when answering
/// a query (`None` on the Kafka topic).
pub fn entry_to_proto(
    tenant: &TenantId,
    entry: &LedgerEntry,
    status: Option<EntryStatus>,
) -> v1::LedgerEntry {
    let (cause_kind, cause) = match &entry.cause {
        Cause::Credit(id) => (v1::CauseKind::Credit, id.to_text()),
        Cause::Event(id) => (v1::CauseKind::Event, id.as_str().to_owned()),
        Cause::Record(id) => (v1::CauseKind::Record, id.as_str().to_owned()),
    };
    let text = |id: Option<&str>| id.unwrap_or_default().to_owned();
    v1::LedgerEntry {
        entry_id: entry.id.to_text(),
        tenant_id: tenant.as_str().to_owned(),
        campaign_id: entry.campaign.as_str().to_owned(),
        creator_id: entry.creator.as_str().to_owned(),
        kind: entry_kind_to_proto(entry.kind).into(),
        amount: Some(money_to_proto(entry.amount)),
        occurred_at: Some(to_timestamp(entry.occurred_at)),
        // No hold: absent, and read back as `occurred_at`.
        hold_until: (entry.hold_until != entry.occurred_at).then(|| to_timestamp(entry.hold_until)),
        cause,
        refers_to: entry.refers_to.map(|id| id.to_text()).unwrap_or_default(),
        plan_id: text(entry.plan.as_ref().map(PlanId::as_str)),
        period: entry.period.label(),
        order_id: text(entry.order.as_ref().map(OrderId::as_str)),
        lead_id: text(entry.lead.as_ref().map(LeadId::as_str)),
        note: entry.note.to_string(),
        status: status
            .map_or(v1::EntryStatus::Unspecified, entry_status_to_proto)
            .into(),
        cause_kind: cause_kind.into(),
        credit_id: entry.credit.map(|id| id.to_text()).unwrap_or_default(),
        note_detail: note_to_proto(&entry.note),
    }
}

/// An entry read from the wire, with its tenant (`status` is derived, so dropped).
/// Refuses anything [`entry_to_proto`] would not have written, naming the field.
pub fn entry_from_proto(p: &v1::LedgerEntry) -> Result<(TenantId, LedgerEntry), Rejection> {
    let tenant = TenantId::parse("tenant_id", &p.tenant_id)?;
    let occurred_at = required_timestamp("occurred_at", p.occurred_at.as_ref())?;
    let cause = match v1::CauseKind::try_from(p.cause_kind) {
        Ok(v1::CauseKind::Credit) => Cause::Credit(derived("cause", &p.cause)?),
        Ok(v1::CauseKind::Event) => Cause::Event(EventId::parse("cause", &p.cause)?),
        Ok(v1::CauseKind::Record) => Cause::Record(RecordId::parse("cause", &p.cause)?),
        Ok(v1::CauseKind::Unspecified) | Err(_) => {
            return Err(unknown_enum("cause_kind", p.cause_kind, "a cause kind").into());
        }
    };
    let note = match &p.note_detail {
        Some(detail) => note_from_proto(detail).map_err(|v| v.under("note_detail"))?,
        None => Note::Text(p.note.clone()),
    };
    let entry = LedgerEntry {
        id: derived("entry_id", &p.entry_id)?,
        campaign: CampaignId::parse("campaign_id", &p.campaign_id)?,
        creator: CreatorId::parse("creator_id", &p.creator_id)?,
        kind: entry_kind("kind", p.kind)?,
        amount: money("amount", p.amount.as_ref())?,
        occurred_at,
        hold_until: p.hold_until.as_ref().map_or(occurred_at, super::timestamp),
        cause,
        credit: optional_derived("credit_id", &p.credit_id)?,
        refers_to: optional_derived("refers_to", &p.refers_to)?,
        plan: optional_id("plan_id", &p.plan_id, PlanId::parse)?,
        period: period("period", &p.period)?,
        order: optional_id("order_id", &p.order_id, OrderId::parse)?,
        lead: optional_id("lead_id", &p.lead_id, LeadId::parse)?,
        note,
    };
    Ok((tenant, entry))
}

/// The structured form of a priced note; `None` for free text.
fn note_to_proto(note: &Note) -> Option<v1::EntryNote> {
    let kind = match note {
        Note::Cpc { amount } => NoteKind::Cpc(entry_note::CpcNote {
            amount: decimal_text(*amount),
        }),
        Note::Cpl { amount, share } => NoteKind::Cpl(entry_note::CplNote {
            amount: decimal_text(*amount),
            share: decimal_text(*share),
        }),
        Note::CplQualified => NoteKind::CplQualified(entry_note::CplQualifiedNote {}),
        Note::Flat { amount, share } => NoteKind::Flat(entry_note::FlatNote {
            amount: decimal_text(*amount),
            share: optional_decimal_to_proto(*share),
        }),
        Note::Percent { rate, net, share } => NoteKind::Percent(entry_note::PercentNote {
            rate: decimal_text(*rate),
            net: Some(money_to_proto(*net)),
            share: optional_decimal_to_proto(*share),
        }),
        Note::Tier {
            rate,
            position,
            share,
        } => NoteKind::Tier(entry_note::TierNote {
            rate: decimal_text(*rate),
            position: position.to_string(),
            share: optional_decimal_to_proto(*share),
        }),
        Note::Milestone { threshold, period } => NoteKind::Milestone(entry_note::MilestoneNote {
            threshold: *threshold,
            period: period.label(),
        }),
        Note::BaseFee { period } => NoteKind::BaseFee(entry_note::BaseFeeNote {
            period: period.label(),
        }),
        Note::Reversal { kind, cumulative } => NoteKind::Reversal(entry_note::ReversalNote {
            kind: (*kind).to_owned(),
            cumulative: cumulative.to_string(),
        }),
        Note::MilestoneLost { threshold } => {
            NoteKind::MilestoneLost(entry_note::MilestoneLostNote {
                threshold: *threshold,
            })
        }
        Note::Post { post, views } => NoteKind::Post(entry_note::PostNote {
            post_id: post.as_str().to_owned(),
            views: *views,
        }),
        Note::Text(_) => return None,
    };
    Some(v1::EntryNote { kind: Some(kind) })
}

fn note_from_proto(detail: &v1::EntryNote) -> Result<Note, Violation> {
    let Some(kind) = &detail.kind else {
        return Err(Violation::new(
            "kind",
            "required",
            "one of cpc, cpl, cpl_qualified, flat, percent, tier, milestone, base_fee, \
             reversal, milestone_lost, post",
        ));
    };
    Ok(match kind {
        NoteKind::Cpc(n) => Note::Cpc {
            amount: decimal("cpc.amount", &n.amount)?,
        },
        NoteKind::Cpl(n) => Note::Cpl {
            amount: decimal("cpl.amount", &n.amount)?,
            share: decimal("cpl.share", &n.share)?,
        },
        NoteKind::CplQualified(_) => Note::CplQualified,
        NoteKind::Flat(n) => Note::Flat {
            amount: decimal("flat.amount", &n.amount)?,
            share: optional_decimal("flat.share", &n.share)?,
        },
        NoteKind::Percent(n) => Note::Percent {
            rate: decimal("percent.rate", &n.rate)?,
            net: money("percent.net", n.net.as_ref())?,
            share: optional_decimal("percent.share", &n.share)?,
        },
        NoteKind::Tier(n) => Note::Tier {
            rate: decimal("tier.rate", &n.rate)?,
            position: decimal("tier.position", &n.position)?,
            share: optional_decimal("tier.share", &n.share)?,
        },
        NoteKind::Milestone(n) => Note::Milestone {
            threshold: n.threshold,
            period: period("milestone.period", &n.period)?,
        },
        NoteKind::BaseFee(n) => Note::BaseFee {
            period: period("base_fee.period", &n.period)?,
        },
        NoteKind::Reversal(n) => Note::Reversal {
            kind: known_name(
                "reversal.kind",
                &n.kind,
                &[
                    AdjustmentKind::Refund.as_str(),
                    AdjustmentKind::Cancel.as_str(),
                    AdjustmentKind::Chargeback.as_str(),
                    LEAD_REJECTED,
                ],
                "a reversal kind",
            )?,
            cumulative: decimal("reversal.cumulative", &n.cumulative)?,
        },
        NoteKind::MilestoneLost(n) => Note::MilestoneLost {
            threshold: n.threshold,
        },
        NoteKind::Post(n) => Note::Post {
            post: PostId::parse("post.post_id", &n.post_id)?,
            views: n.views,
        },
    })
}

fn entry_kind_to_proto(k: EntryKind) -> v1::EntryKind {
    match k {
        EntryKind::Accrual => v1::EntryKind::Accrual,
        EntryKind::Reversal => v1::EntryKind::Reversal,
        EntryKind::Bonus => v1::EntryKind::Bonus,
        EntryKind::BonusReversal => v1::EntryKind::BonusReversal,
        EntryKind::BaseFee => v1::EntryKind::BaseFee,
        EntryKind::Payout => v1::EntryKind::Payout,
        EntryKind::ManualAdjustment => v1::EntryKind::ManualAdjustment,
    }
}

fn entry_kind(field: &str, value: i32) -> Result<EntryKind, Violation> {
    Ok(match v1::EntryKind::try_from(value) {
        Ok(v1::EntryKind::Accrual) => EntryKind::Accrual,
        Ok(v1::EntryKind::Reversal) => EntryKind::Reversal,
        Ok(v1::EntryKind::Bonus) => EntryKind::Bonus,
        Ok(v1::EntryKind::BonusReversal) => EntryKind::BonusReversal,
        Ok(v1::EntryKind::BaseFee) => EntryKind::BaseFee,
        Ok(v1::EntryKind::Payout) => EntryKind::Payout,
        Ok(v1::EntryKind::ManualAdjustment) => EntryKind::ManualAdjustment,
        Ok(v1::EntryKind::Unspecified) | Err(_) => {
            return Err(unknown_enum(field, value, "an entry kind"));
        }
    })
}

/// An entry status as its proto enum.
pub fn entry_status_to_proto(s: EntryStatus) -> v1::EntryStatus {
    match s {
        EntryStatus::Pending => v1::EntryStatus::Pending,
        EntryStatus::Approved => v1::EntryStatus::Approved,
        EntryStatus::Paid => v1::EntryStatus::Paid,
        EntryStatus::Reversed => v1::EntryStatus::Reversed,
        EntryStatus::Posted => v1::EntryStatus::Posted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_without_detail_is_free_text() {
        assert_eq!(note_to_proto(&Note::Text("November".to_owned())), None);
    }

    #[test]
    fn missing_note_kind_is_named() {
        let e = note_from_proto(&v1::EntryNote { kind: None }).unwrap_err();
        assert_eq!((e.field.as_str(), e.rule), ("kind", "required"));
    }
}
