//! What a ledger entry says about itself: its cause, its note and the idempotency key of
//! its input, as structured values.
//!
//! They are shown (and serialised) as text, but only built as text when someone reads
//! them: a click's accrual is priced a million times a second, and formatting its note
//! and cause on the way would cost more than pricing it.

use std::fmt;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::{
    ids::{DerivedId, EventId, PostId, RecordId},
    money::Money,
    time::Period,
};

/// What caused a ledger entry: the credit, engagement event or Admin record it was
/// decided for. Shown as that id's text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Cause {
    /// A credit from the attributor.
    Credit(DerivedId),
    /// An engagement event.
    Event(EventId),
    /// A payout or manual adjustment recorded through Admin.
    Record(RecordId),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Credit(id) => fmt::Display::fmt(id, f),
            Self::Event(id) => f.write_str(id.as_str()),
            Self::Record(id) => f.write_str(id.as_str()),
        }
    }
}

impl Serialize for Cause {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The human note of a ledger entry (rates, refund fraction, milestone), shown as text.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// `cpc {amount}`.
    Cpc {
        /// Amount per click.
        amount: Decimal,
    },
    /// `cpl {amount} × share {share}`.
    Cpl {
        /// Amount per lead.
        amount: Decimal,
        /// The creator's share of the lead.
        share: Decimal,
    },
    /// `cpl, lead qualified`.
    CplQualified,
    /// `flat {amount}`, then the share when split.
    Flat {
        /// Amount per order.
        amount: Decimal,
        /// The creator's share, when not the whole order.
        share: Option<Decimal>,
    },
    /// `{rate} of {net}`, then the share when split.
    Percent {
        /// The default rate.
        rate: Decimal,
        /// The order's net amount.
        net: Money,
        /// The creator's share, when not the whole order.
        share: Option<Decimal>,
    },
    /// `tier rate {rate} at {position}`, then the share when split.
    Tier {
        /// The rate of the tier reached.
        rate: Decimal,
        /// Where the order stands (ordinal or revenue before it).
        position: Decimal,
        /// The creator's share, when not the whole order.
        share: Option<Decimal>,
    },
    /// `milestone {threshold} orders in {period}`.
    Milestone {
        /// Orders reached.
        threshold: u64,
        /// The period.
        period: Period,
    },
    /// `base fee for {period}`.
    BaseFee {
        /// The period.
        period: Period,
    },
    /// `{kind}: {cumulative} of the order reversed`.
    Reversal {
        /// What happened (`refund`, `lead_rejected`, ...).
        kind: &'static str,
        /// Fraction reversed so far.
        cumulative: Decimal,
    },
    /// `milestone {threshold} no longer met before its hold ended`.
    MilestoneLost {
        /// The threshold no longer met.
        threshold: u64,
    },
    /// `post {post} at {views} views`.
    Post {
        /// The post.
        post: PostId,
        /// Its cumulative views.
        views: u64,
    },
    /// Free text (payouts and manual adjustments).
    Text(String),
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let share = match self {
            Self::Cpc { amount } => return write!(f, "cpc {amount}"),
            Self::Cpl { amount, share } => return write!(f, "cpl {amount} × share {share}"),
            Self::CplQualified => return f.write_str("cpl, lead qualified"),
            Self::Flat { amount, share } => {
                write!(f, "flat {amount}")?;
                share
            }
            Self::Percent { rate, net, share } => {
                write!(f, "{rate} of {net}")?;
                share
            }
            Self::Tier {
                rate,
                position,
                share,
            } => {
                write!(f, "tier rate {rate} at {position}")?;
                share
            }
            Self::Milestone { threshold, period } => {
                return write!(f, "milestone {threshold} orders in {}", period.label());
            }
            Self::BaseFee { period } => return write!(f, "base fee for {}", period.label()),
            Self::Reversal { kind, cumulative } => {
                return write!(f, "{kind}: {cumulative} of the order reversed");
            }
            Self::MilestoneLost { threshold } => {
                return write!(
                    f,
                    "milestone {threshold} no longer met before its hold ended"
                );
            }
            Self::Post { post, views } => return write!(f, "post {post} at {views} views"),
            Self::Text(text) => return f.write_str(text),
        };
        match share {
            Some(share) => write!(f, " × share {share}"),
            None => Ok(()),
        }
    }
}

impl Serialize for Note {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What makes a ledger input unique in its book: an input whose key was processed
/// changes nothing. Shown as `crd_…` (a credit's id), `engagement:{event}`,
/// `payout:{record}` or `manual:{record}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InputKey {
    /// A credit, by its id.
    Credit(DerivedId),
    /// An engagement snapshot, by its event.
    Engagement(EventId),
    /// A payout, by its record.
    Payout(RecordId),
    /// A manual adjustment, by its record.
    Manual(RecordId),
}

impl InputKey {
    /// 128 bits that identify the key, as the book remembers it: a credit id's own hash
    /// (already an xxh3 of its cause), else the xxh3 of the key's text.
    pub(crate) fn digest(&self) -> u128 {
        let text = |prefix: &str, id: &str| {
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(prefix.as_bytes());
            h.update(id.as_bytes());
            h.digest128()
        };
        match self {
            Self::Credit(id) => id.digest(),
            Self::Engagement(event) => text("engagement:", event.as_str()),
            Self::Payout(id) => text("payout:", id.as_str()),
            Self::Manual(id) => text("manual:", id.as_str()),
        }
    }
}

impl fmt::Display for InputKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Credit(id) => fmt::Display::fmt(id, f),
            Self::Engagement(event) => write!(f, "engagement:{event}"),
            Self::Payout(id) => write!(f, "payout:{id}"),
            Self::Manual(id) => write!(f, "manual:{id}"),
        }
    }
}

impl Serialize for InputKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        money::Currency,
        time::{PeriodKind, Timestamp},
    };

    #[test]
    fn notes_read_as_they_always_did() {
        let usd = Currency::parse("c", "USD").unwrap();
        let nov = Period::containing(PeriodKind::Month, Timestamp(1_793_577_600_000));
        let d = |n: i64, scale: u32| Decimal::new(n, scale);
        let cases = [
            (Note::Cpc { amount: d(5, 2) }, "cpc 0.05"),
            (
                Note::Cpl {
                    amount: d(100, 2),
                    share: d(5, 1),
                },
                "cpl 1.00 × share 0.5",
            ),
            (Note::CplQualified, "cpl, lead qualified"),
            (
                Note::Flat {
                    amount: d(3, 0),
                    share: None,
                },
                "flat 3",
            ),
            (
                Note::Percent {
                    rate: d(10, 2),
                    net: Money::new(d(5900, 2), usd),
                    share: Some(d(333, 3)),
                },
                "0.10 of 59.00 USD × share 0.333",
            ),
            (
                Note::Tier {
                    rate: d(15, 2),
                    position: d(51, 0),
                    share: None,
                },
                "tier rate 0.15 at 51",
            ),
            (
                Note::Milestone {
                    threshold: 5,
                    period: nov,
                },
                "milestone 5 orders in 2026-11",
            ),
            (Note::BaseFee { period: nov }, "base fee for 2026-11"),
            (
                Note::Reversal {
                    kind: "refund",
                    cumulative: d(25, 2),
                },
                "refund: 0.25 of the order reversed",
            ),
            (
                Note::MilestoneLost { threshold: 20 },
                "milestone 20 no longer met before its hold ended",
            ),
            (
                Note::Post {
                    post: PostId::new("p1"),
                    views: 42,
                },
                "post p1 at 42 views",
            ),
            (Note::Text("November".to_owned()), "November"),
        ];
        for (note, text) in cases {
            assert_eq!(note.to_string(), text);
            assert_eq!(serde_json::to_string(&note).unwrap(), format!("{text:?}"));
        }
    }

    #[test]
    fn causes_and_keys_read_as_ids() {
        let id = DerivedId::derive("crd", &["e1"]);
        assert_eq!(Cause::Credit(id).to_string(), id.to_text());
        assert_eq!(Cause::Event(EventId::new("e1")).to_string(), "e1");
        assert_eq!(InputKey::Credit(id).to_string(), id.to_text());
        assert_eq!(
            InputKey::Engagement(EventId::new("e1")).to_string(),
            "engagement:e1"
        );
        assert_eq!(
            InputKey::Payout(RecordId::new("r1")).to_string(),
            "payout:r1"
        );
        assert_eq!(
            InputKey::Manual(RecordId::new("r1")).digest(),
            xxhash_rust::xxh3::xxh3_128(b"manual:r1")
        );
    }
}
