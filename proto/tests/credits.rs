//! Credits and ledger entries through `payoff.v1` and back: everything the core engine
//! produces for the example program and events (plus a payout and a manual adjustment)
//! converts to proto, encodes, decodes and converts back equal to the original; and
//! refused wire values name their field.

use std::collections::BTreeSet;
use std::path::PathBuf;

use payoff_core::{
    Rejection,
    credit::Credit,
    engine::Engine,
    event::{Event, RawEvent},
    ids::{PostId, RecordId, TenantId},
    ledger::{Cause, LedgerEntry, LedgerInput, Note},
    money::Money,
    program::ProgramHistory,
    projection::EntryStatus,
    time::{Period, PeriodKind, Timestamp},
};
use payoff_proto::{
    convert::{
        self, CreditEncoder, credit_from_proto, credit_to_proto, encode_credit, entry_from_proto,
        entry_to_proto,
    },
    v1,
};
use prost::Message;
use rust_decimal::Decimal;

/// The salt `payoff replay` hashes PII with by default.
const SALT: &[u8] = b"replay";

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
}

fn tenant() -> TenantId {
    TenantId::new("acme-beauty")
}

/// The example program history, read as `payoff replay` reads it.
fn programs() -> ProgramHistory {
    let text = std::fs::read_to_string(example("program.json")).unwrap();
    let versions = match serde_json::from_str(&text).unwrap() {
        serde_json::Value::Array(items) => items,
        one => vec![one],
    };
    let mut history = ProgramHistory::default();
    for v in versions {
        let proto: v1::Program = serde_json::from_value(v).unwrap();
        history.insert(convert::program(&proto).unwrap());
    }
    history
}

/// The example events, validated as `payoff replay` validates them.
fn events() -> Vec<Event> {
    let text = std::fs::read_to_string(example("events.jsonl")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut proto: v1::Event = serde_json::from_str(line).unwrap();
            convert::hash_pii(&mut proto, SALT);
            let now = proto
                .received_at
                .as_ref()
                .map_or(Timestamp::from_millis(i64::MAX / 2), convert::timestamp);
            Event::validate(&RawEvent::from(&proto), now).unwrap()
        })
        .collect()
}

/// The engine after the example, a payout and a manual adjustment.
fn engine() -> Engine {
    let programs = programs();
    let mut engine = Engine::new(programs.clone());
    let mut last = Timestamp::from_millis(0);
    for event in events() {
        last = last.max(event.occurred_at);
        engine.push(event);
    }
    engine.finish();
    let credit = engine
        .credits
        .iter()
        .find(|c| c.kind.name() == "order")
        .unwrap()
        .clone();
    let currency = programs.versions()[0].campaigns[&credit.campaign].currency;
    let at = Timestamp::from_millis(last.millis() + 1000);
    engine.ledger_input(&LedgerInput::Payout {
        id: RecordId::new("payout-1"),
        campaign: credit.campaign.clone(),
        creator: credit.creator.clone(),
        amount: Money::new(Decimal::new(1250, 2), currency),
        at,
        note: "November statement".to_owned(),
    });
    engine.ledger_input(&LedgerInput::Manual {
        id: RecordId::new("manual-1"),
        campaign: credit.campaign,
        creator: credit.creator,
        amount: Money::new(Decimal::new(-300, 2), currency),
        at,
        note: String::new(),
    });
    engine
}

fn credit_round_trip(credit: &Credit) -> Credit {
    let bytes = credit_to_proto(&tenant(), credit).encode_to_vec();
    let (tenant_back, back) = credit_from_proto(&v1::Credit::decode(&*bytes).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", credit.id));
    assert_eq!(tenant_back, tenant());
    back
}

fn entry_round_trip(entry: &LedgerEntry, status: Option<EntryStatus>) -> LedgerEntry {
    let proto = entry_to_proto(&tenant(), entry, status);
    assert_eq!(
        proto.note,
        entry.note.to_string(),
        "the note reads as before"
    );
    let bytes = proto.encode_to_vec();
    let (tenant_back, back) = entry_from_proto(&v1::LedgerEntry::decode(&*bytes).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", entry.id));
    assert_eq!(tenant_back, tenant());
    back
}

#[test]
fn every_credit_of_the_example_survives_the_wire() {
    let engine = engine();
    let mut kinds = BTreeSet::new();
    for credit in &engine.credits {
        kinds.insert(credit.kind.name());
        assert_eq!(&credit_round_trip(credit), credit);
    }
    assert_eq!(
        kinds,
        BTreeSet::from(["click", "lead", "lead_status", "order", "reversal"]),
        "the example exercises every kind of credit"
    );
}

#[test]
fn the_direct_encoding_of_every_credit_of_the_example_is_proto_encoding() {
    let engine = engine();
    let mut kinds = BTreeSet::new();
    // One encoder for all, in order, as the attributor uses it: the credits of one
    // conversion share their explanation's bytes.
    let mut encoder = CreditEncoder::default();
    let mut shared = 0;
    for (i, credit) in engine.credits.iter().enumerate() {
        kinds.insert(credit.kind.name());
        let want = credit_to_proto(&tenant(), credit).encode_to_vec();
        assert_eq!(encoder.encode(&tenant(), credit), want, "{}", credit.id);
        assert_eq!(encode_credit(&tenant(), credit), want, "{}", credit.id);
        if let (Some(e), Some(previous)) = (
            &credit.explanation,
            i.checked_sub(1)
                .and_then(|p| engine.credits[p].explanation.as_ref()),
        ) {
            shared += usize::from(std::sync::Arc::ptr_eq(e, previous));
        }
    }
    assert_eq!(
        kinds,
        BTreeSet::from(["click", "lead", "lead_status", "order", "reversal"]),
        "the example has every kind of credit"
    );
    assert!(
        shared > 0,
        "the example has a conversion split between creators (a shared explanation)"
    );
}

#[test]
fn a_flagged_credit_encodes_as_proto() {
    let engine = engine();
    let mut encoder = CreditEncoder::default();
    for credit in engine.credits.iter().take(50) {
        let mut flagged = credit.clone();
        flagged.fraud = Some(payoff_core::credit::FraudReason::ClickFlood);
        assert_eq!(
            encoder.encode(&tenant(), &flagged),
            credit_to_proto(&tenant(), &flagged).encode_to_vec(),
            "{}",
            credit.id
        );
    }
}

proptest::proptest! {
    /// Click credits of any ids, time, version and link encode as prost encodes them.
    #[test]
    fn the_direct_encoding_of_any_click_credit_is_proto_encoding(
        ids in proptest::collection::vec("[a-zA-Z0-9_.:é-]{1,40}", 5),
        link in proptest::option::of("[a-z0-9-]{1,12}"),
        millis in -10_000_000_000_000i64..10_000_000_000_000,
        version in proptest::prop_oneof![proptest::strategy::Just(0u64), proptest::num::u64::ANY],
    ) {
        use payoff_core::{credit::CreditKind, ids::*};
        let credit = Credit {
            id: DerivedId::derive("crd", &[&ids[0]]),
            campaign: CampaignId::new(&ids[1]),
            creator: CreatorId::new(&ids[2]),
            occurred_at: Timestamp::from_millis(millis),
            cause: EventId::new(&ids[3]),
            config_version: version,
            fraud: None,
            kind: CreditKind::Click {
                visitor: VisitorId::new(&ids[4]),
                link: link.as_deref().map(LinkCode::new),
            },
            explanation: None,
        };
        let tenant = TenantId::new(&ids[0]);
        proptest::prop_assert_eq!(
            encode_credit(&tenant, &credit),
            credit_to_proto(&tenant, &credit).encode_to_vec()
        );
    }
}

#[test]
fn every_entry_of_the_example_survives_the_wire() {
    let engine = engine();
    let statuses = [
        None,
        Some(EntryStatus::Pending),
        Some(EntryStatus::Approved),
        Some(EntryStatus::Paid),
        Some(EntryStatus::Reversed),
        Some(EntryStatus::Posted),
    ];
    let mut causes = BTreeSet::new();
    for (i, entry) in engine.entries.iter().enumerate() {
        causes.insert(match entry.cause {
            Cause::Credit(_) => "credit",
            Cause::Event(_) => "event",
            Cause::Record(_) => "record",
        });
        let status = statuses[i % statuses.len()];
        assert_eq!(&entry_round_trip(entry, status), entry);
    }
    assert_eq!(causes, BTreeSet::from(["credit", "event", "record"]));
}

#[test]
fn derived_status_goes_on_the_wire_only() {
    let engine = engine();
    let entry = &engine.entries[0];
    let proto = entry_to_proto(&tenant(), entry, Some(EntryStatus::Posted));
    assert_eq!(proto.status(), v1::EntryStatus::Posted);
    let topic = entry_to_proto(&tenant(), entry, None);
    assert_eq!(topic.status(), v1::EntryStatus::Unspecified);
}

#[test]
fn every_kind_of_note_and_period_survives_the_wire() {
    let engine = engine();
    let usd = Money::new(Decimal::new(5900, 2), engine.entries[0].amount.currency);
    let at = Timestamp::from_millis(1_793_872_800_000);
    let d = Decimal::new;
    let periods = [PeriodKind::Month, PeriodKind::Week, PeriodKind::Lifetime]
        .map(|kind| Period::containing(kind, at));
    let mut notes = vec![
        Note::Cpc { amount: d(5, 2) },
        Note::Cpl {
            amount: d(100, 2),
            share: d(5, 1),
        },
        Note::CplQualified,
        Note::Flat {
            amount: d(3, 0),
            share: None,
        },
        Note::Flat {
            amount: d(3, 0),
            share: Some(d(1, 3)),
        },
        Note::Percent {
            rate: d(10, 2),
            net: usd,
            share: Some(d(333, 3)),
        },
        Note::Tier {
            rate: d(15, 2),
            position: d(51, 0),
            share: None,
        },
        Note::MilestoneLost { threshold: 20 },
        Note::Post {
            post: PostId::new("p1"),
            views: 42,
        },
        Note::Text("cpc 0.05".to_owned()),
        Note::Text(String::new()),
    ];
    for kind in ["refund", "cancel", "chargeback", "lead_rejected"] {
        notes.push(Note::Reversal {
            kind,
            cumulative: d(25, 2),
        });
    }
    for period in periods {
        notes.push(Note::Milestone {
            threshold: 5,
            period,
        });
        notes.push(Note::BaseFee { period });
    }
    for (i, note) in notes.into_iter().enumerate() {
        let mut entry = engine.entries[0].clone();
        entry.note = note;
        entry.period = periods[i % periods.len()];
        let back = entry_round_trip(&entry, None);
        assert_eq!(back, entry);
        assert_eq!(back.note.to_string(), entry.note.to_string());
    }
}

/// The first order credit of the example decided over clicks, as proto.
fn order_credit() -> v1::Credit {
    let engine = engine();
    let credit = engine
        .credits
        .iter()
        .find(|c| {
            c.kind.name() == "order"
                && c.explanation
                    .as_ref()
                    .is_some_and(|e| e.candidates.iter().any(|c| c.share.is_some()))
        })
        .unwrap();
    credit_to_proto(&tenant(), credit)
}

fn entry() -> v1::LedgerEntry {
    entry_to_proto(&tenant(), &engine().entries[0], None)
}

/// The one violation of a rejection: (field, rule).
fn refused(r: Result<impl std::fmt::Debug, Rejection>) -> (String, &'static str) {
    let e = r.unwrap_err();
    let [v] = e.violations() else {
        panic!("one violation expected: {e}")
    };
    (v.field.clone(), v.rule)
}

fn order_of(c: &mut v1::Credit) -> &mut v1::OrderCredit {
    match c.kind.as_mut() {
        Some(v1::credit::Kind::Order(o)) => o,
        _ => unreachable!(),
    }
}

#[test]
fn missing_credit_fields_are_named() {
    let mut c = order_credit();
    c.kind = None;
    assert_eq!(refused(credit_from_proto(&c)), ("kind".into(), "required"));

    let mut c = order_credit();
    c.occurred_at = None;
    assert_eq!(
        refused(credit_from_proto(&c)),
        ("occurred_at".into(), "required")
    );

    let mut c = order_credit();
    c.tenant_id.clear();
    assert_eq!(
        refused(credit_from_proto(&c)),
        ("tenant_id".into(), "required")
    );

    let mut c = order_credit();
    order_of(&mut c).net_amount = None;
    assert_eq!(
        refused(credit_from_proto(&c)),
        ("order.net_amount".into(), "required")
    );

    let mut c = order_credit();
    order_of(&mut c).all_shares.clear();
    assert_eq!(
        refused(credit_from_proto(&c)),
        ("order.all_shares".into(), "missing_share")
    );

    let mut c = order_credit();
    c.explanation.as_mut().unwrap().event_id.clear();
    assert_eq!(
        refused(credit_from_proto(&c)),
        ("explanation.event_id".into(), "required")
    );
}

#[test]
fn bad_credit_decimals_and_ids_are_named() {
    let mut c = order_credit();
    order_of(&mut c).all_shares[0].share = "0,5".into();
    assert_eq!(
        refused(credit_from_proto(&c)),
        ("order.all_shares[0].share".into(), "malformed_decimal")
    );

    let mut c = order_credit();
    order_of(&mut c).share = "0.25".into();
    assert_eq!(
        refused(credit_from_proto(&c)),
        ("order.share".into(), "inconsistent")
    );

    let mut c = order_credit();
    order_of(&mut c).gross_amount.as_mut().unwrap().amount = "1e3".into();
    assert_eq!(
        refused(credit_from_proto(&c)),
        ("order.gross_amount.amount".into(), "malformed_decimal")
    );

    let mut c = order_credit();
    order_of(&mut c).gross_amount.as_mut().unwrap().currency = "usd".into();
    assert_eq!(
        refused(credit_from_proto(&c)),
        ("order.gross_amount.currency".into(), "unknown_currency")
    );

    let mut c = order_credit();
    c.credit_id = "crd_123".into();
    assert_eq!(
        refused(credit_from_proto(&c)),
        ("credit_id".into(), "malformed_id")
    );

    let mut c = order_credit();
    c.explanation.as_mut().unwrap().candidates[0].share = "½".into();
    assert_eq!(
        refused(credit_from_proto(&c)),
        (
            "explanation.candidates[0].share".into(),
            "malformed_decimal"
        )
    );
}

#[test]
fn unknown_credit_enums_are_named() {
    let reversal = |kind: i32| v1::Credit {
        kind: Some(v1::credit::Kind::Reversal(v1::ReversalCredit {
            original_credit_id: order_credit().credit_id,
            order_id: "o-1".into(),
            kind,
            cumulative_fraction: "1".into(),
            amount: None,
        })),
        explanation: None,
        ..order_credit()
    };
    assert!(credit_from_proto(&reversal(v1::AdjustmentKind::Refund.into())).is_ok());
    for kind in [0, 99] {
        assert_eq!(
            refused(credit_from_proto(&reversal(kind))),
            ("reversal.kind".into(), "unknown_enum")
        );
    }

    let mut c = order_credit();
    c.fraud = Some(v1::FraudFlag {
        reason: 17,
        detail: String::new(),
    });
    assert_eq!(
        refused(credit_from_proto(&c)),
        ("fraud.reason".into(), "unknown_enum")
    );

    let mut c = order_credit();
    c.explanation.as_mut().unwrap().rule = 0;
    assert_eq!(
        refused(credit_from_proto(&c)),
        ("explanation.rule".into(), "unknown_enum")
    );

    let mut c = order_credit();
    c.explanation.as_mut().unwrap().candidates[0].reason = "bored".into();
    assert_eq!(
        refused(credit_from_proto(&c)),
        ("explanation.candidates[0].reason".into(), "unknown_enum")
    );

    let mut c = order_credit();
    c.explanation.as_mut().unwrap().fraud_checks[0].name = "conversion_too_fast".into();
    assert_eq!(
        refused(credit_from_proto(&c)),
        ("explanation.fraud_checks[0].name".into(), "unknown_enum")
    );
}

#[test]
fn refused_entry_fields_are_named() {
    let mut e = entry();
    e.amount = None;
    assert_eq!(refused(entry_from_proto(&e)), ("amount".into(), "required"));

    let mut e = entry();
    e.entry_id.clear();
    assert_eq!(
        refused(entry_from_proto(&e)),
        ("entry_id".into(), "required")
    );

    let mut e = entry();
    e.amount.as_mut().unwrap().amount = "12.3.4".into();
    assert_eq!(
        refused(entry_from_proto(&e)),
        ("amount.amount".into(), "malformed_decimal")
    );

    let mut e = entry();
    e.kind = 42;
    assert_eq!(
        refused(entry_from_proto(&e)),
        ("kind".into(), "unknown_enum")
    );

    let mut e = entry();
    e.cause_kind = 0;
    assert_eq!(
        refused(entry_from_proto(&e)),
        ("cause_kind".into(), "unknown_enum")
    );

    let mut e = entry();
    e.period = "November".into();
    assert_eq!(
        refused(entry_from_proto(&e)),
        ("period".into(), "malformed_period")
    );

    let mut e = entry();
    e.note_detail = Some(v1::EntryNote {
        kind: Some(v1::entry_note::Kind::Percent(v1::entry_note::PercentNote {
            rate: "0.10".into(),
            net: Some(v1::Money {
                amount: "ten".into(),
                currency: "USD".into(),
            }),
            share: String::new(),
        })),
    });
    assert_eq!(
        refused(entry_from_proto(&e)),
        ("note_detail.percent.net.amount".into(), "malformed_decimal")
    );

    let mut e = entry();
    e.note_detail = Some(v1::EntryNote {
        kind: Some(v1::entry_note::Kind::Reversal(
            v1::entry_note::ReversalNote {
                kind: "returned".into(),
                cumulative: "1".into(),
            },
        )),
    });
    assert_eq!(
        refused(entry_from_proto(&e)),
        ("note_detail.reversal.kind".into(), "unknown_enum")
    );
}

#[test]
fn every_rule_and_fraud_flag_survives_the_wire() {
    use payoff_core::{
        credit::{FraudReason, Rule},
        ids::{CampaignId, OrderId},
        time::Duration,
    };
    let engine = engine();
    let original = engine
        .credits
        .iter()
        .find(|c| c.kind.name() == "order")
        .unwrap();
    let rules = [
        Rule::PromoCode {
            code: "ANNA10".to_owned(),
        },
        Rule::Renewal {
            of: OrderId::new("o-1"),
        },
        Rule::Unattributed,
    ]
    .into_iter()
    .chain(
        [
            "last_click",
            "first_click",
            "linear",
            "position_based",
            "time_decay",
        ]
        .map(|model| Rule::Model {
            model,
            campaign: CampaignId::new("spring-glow"),
            lookback: Duration::days(30),
        }),
    );
    let fraud = [
        FraudReason::SelfReferral,
        FraudReason::ClickFlood,
        FraudReason::TooFast,
        FraudReason::DuplicateOrder,
    ];
    for (i, rule) in rules.enumerate() {
        let mut credit = original.clone();
        let mut explanation = (**credit.explanation.as_ref().unwrap()).clone();
        explanation.rule = rule;
        credit.explanation = Some(explanation.into());
        credit.fraud = fraud.get(i).copied();
        assert_eq!(credit_round_trip(&credit), credit);
        assert_eq!(
            encode_credit(&tenant(), &credit),
            credit_to_proto(&tenant(), &credit).encode_to_vec(),
            "the direct encoding of rule {i}"
        );
    }
}

#[test]
fn renewals_negative_fractions_and_uncategorised_amounts_encode_as_proto() {
    use payoff_core::{
        credit::{CreditKind, Renewal},
        ids::OrderId,
    };
    let engine = engine();
    let mut checked = 0;
    for credit in &engine.credits {
        let mut credit = credit.clone();
        match &mut credit.kind {
            CreditKind::Order {
                renewal,
                categories,
                ..
            } => {
                *renewal = Some(Renewal {
                    of: OrderId::new("o-first"),
                    original_at: Timestamp::from_millis(-1_500),
                });
                *categories = vec![
                    (None, Decimal::new(-1234, 2)),
                    (Some("skincare".into()), Decimal::ZERO),
                ]
                .into();
            }
            CreditKind::Reversal {
                cumulative_fraction,
                ..
            } => *cumulative_fraction = Decimal::new(-5, 1),
            _ => continue,
        }
        checked += 1;
        assert_eq!(
            encode_credit(&tenant(), &credit),
            credit_to_proto(&tenant(), &credit).encode_to_vec(),
            "{}",
            credit.id
        );
    }
    assert!(checked > 0, "the example has orders and reversals");
}
