//! Round trips of events and programs through canonical proto3 JSON and
//! binary protobuf, asserting exact equality and the exact JSON form.

use std::collections::BTreeMap;

use payoff_proto::v1::{
    AttributionModel, Campaign, CommissionPlan, Context, Creator, Event, LineItem, Money, Order,
    PeriodKind, Program, ProgramSettings, PromoCode, TrackingLink, commission_plan, event,
};
use pbjson_types::{Duration, Timestamp};
use prost::Message;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// 2026-11-05T10:00:00Z.
const NOV_5_10H: i64 = 1_793_872_800;
/// 2026-11-01T00:00:00Z.
const NOV_1: i64 = 1_793_491_200;
const THIRTY_DAYS: i64 = 30 * 24 * 3600;

fn usd(amount: &str) -> Money {
    Money {
        amount: amount.to_owned(),
        currency: "USD".to_owned(),
    }
}

fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(Timestamp { seconds, nanos })
}

fn secs(seconds: i64) -> Option<Duration> {
    Some(Duration { seconds, nanos: 0 })
}

/// An order event as published by ingest: PII hashed, tenant stamped.
fn order_event() -> Event {
    Event {
        event_id: "evt-0001".to_owned(),
        occurred_at: at(NOV_5_10H, 250_000_000),
        customer_id: "cust-42".to_owned(),
        context: Some(Context {
            ip_hash: "9f2c".to_owned(),
            user_agent_hash: "77ab".to_owned(),
            ..Context::default()
        }),
        tenant_id: "acme".to_owned(),
        received_at: at(NOV_5_10H + 1, 0),
        payload: Some(event::Payload::Order(Order {
            visitor_id: "vis-7".to_owned(),
            order_id: "ord-1001".to_owned(),
            amount: Some(usd("80.00")),
            tax: Some(usd("6.40")),
            shipping: None,
            line_items: vec![LineItem {
                sku: "SKU-1".to_owned(),
                category: "shoes".to_owned(),
                quantity: 2,
                unit_price: "40.00".to_owned(),
            }],
            promo_codes: vec!["ANNA10".to_owned()],
            renewal_of: String::new(),
            first_order: Some(false),
            email_hash: "c0ffee".to_owned(),
            email: String::new(),
        })),
    }
}

/// The canonical proto3 JSON of [`order_event`]: lowerCamelCase names, default
/// values omitted, RFC 3339 timestamps, present optional fields kept even
/// when false.
const ORDER_EVENT_JSON: &str = r#"{
  "eventId": "evt-0001",
  "occurredAt": "2026-11-05T10:00:00.250+00:00",
  "customerId": "cust-42",
  "context": { "ipHash": "9f2c", "userAgentHash": "77ab" },
  "tenantId": "acme",
  "receivedAt": "2026-11-05T10:00:01+00:00",
  "order": {
    "visitorId": "vis-7",
    "orderId": "ord-1001",
    "amount": { "amount": "80.00", "currency": "USD" },
    "tax": { "amount": "6.40", "currency": "USD" },
    "lineItems": [
      { "sku": "SKU-1", "category": "shoes", "quantity": 2, "unitPrice": "40.00" }
    ],
    "promoCodes": ["ANNA10"],
    "firstOrder": false,
    "emailHash": "c0ffee"
  }
}"#;

fn program() -> Program {
    let tiered = commission_plan::Tiered {
        basis: commission_plan::tiered::Basis::Count.into(),
        tiers: vec![
            commission_plan::tiered::Tier {
                from: "1".to_owned(),
                rate: "0.10".to_owned(),
            },
            commission_plan::tiered::Tier {
                from: "51".to_owned(),
                rate: "0.15".to_owned(),
            },
        ],
    };
    let percent = commission_plan::CpsPercent {
        rate: "0.10".to_owned(),
        category_rates: BTreeMap::from([("shoes".to_owned(), "0.12".to_owned())]),
    };
    let milestones = commission_plan::MilestoneBonus {
        milestones: vec![commission_plan::milestone_bonus::Milestone {
            threshold: 50,
            bonus: Some(usd("100.00")),
        }],
    };
    Program {
        tenant_id: "acme".to_owned(),
        version: 3,
        effective_from: at(NOV_1, 0),
        campaigns: vec![Campaign {
            id: "fall-26".to_owned(),
            name: "Fall 2026".to_owned(),
            currency: "USD".to_owned(),
            model: AttributionModel::TimeDecay.into(),
            time_decay_half_life: secs(7 * 24 * 3600),
            lookback: secs(THIRTY_DAYS),
            code_precedence: Some(false),
            active_from: at(NOV_1, 0),
            active_until: None,
            period: PeriodKind::Month.into(),
            plans: vec![
                CommissionPlan {
                    id: "rev-share".to_owned(),
                    kind: Some(commission_plan::Kind::CpsPercent(percent)),
                    new_customer_only: true,
                    recurring_periods: Some(3),
                    cap_amount_per_period: Some(usd("5000.00")),
                    cap_count_per_period: Some(1000),
                    hold: secs(THIRTY_DAYS),
                },
                CommissionPlan {
                    id: "tiers".to_owned(),
                    kind: Some(commission_plan::Kind::Tiered(tiered)),
                    ..CommissionPlan::default()
                },
                CommissionPlan {
                    id: "bonus".to_owned(),
                    kind: Some(commission_plan::Kind::Milestone(milestones)),
                    ..CommissionPlan::default()
                },
            ],
        }],
        creators: vec![Creator {
            id: "anna".to_owned(),
            display_name: "Anna".to_owned(),
            customer_ids: vec!["cust-9".to_owned()],
            email_hashes: vec!["beef".to_owned()],
        }],
        links: vec![TrackingLink {
            code: "anna-fall".to_owned(),
            creator_id: "anna".to_owned(),
            campaign_id: "fall-26".to_owned(),
            landing_url: "https://shop.example/fall".to_owned(),
        }],
        promo_codes: vec![PromoCode {
            code: "ANNA10".to_owned(),
            creator_id: "anna".to_owned(),
            campaign_id: "fall-26".to_owned(),
        }],
        settings: Some(ProgramSettings {
            grace_period: secs(10),
            click_flood_limit_per_minute: Some(30),
            min_click_to_conversion: Some(Duration {
                seconds: 2,
                nanos: 500_000_000,
            }),
        }),
    }
}

/// The canonical proto3 JSON of [`program`]: enums as strings, 64-bit
/// integers as strings, durations as seconds with an "s" suffix.
const PROGRAM_JSON: &str = r#"{
  "tenantId": "acme",
  "version": "3",
  "effectiveFrom": "2026-11-01T00:00:00+00:00",
  "campaigns": [{
    "id": "fall-26",
    "name": "Fall 2026",
    "currency": "USD",
    "model": "ATTRIBUTION_MODEL_TIME_DECAY",
    "timeDecayHalfLife": "604800s",
    "lookback": "2592000s",
    "codePrecedence": false,
    "activeFrom": "2026-11-01T00:00:00+00:00",
    "period": "PERIOD_KIND_MONTH",
    "plans": [
      {
        "id": "rev-share",
        "cpsPercent": { "rate": "0.10", "categoryRates": { "shoes": "0.12" } },
        "newCustomerOnly": true,
        "recurringPeriods": 3,
        "capAmountPerPeriod": { "amount": "5000.00", "currency": "USD" },
        "capCountPerPeriod": "1000",
        "hold": "2592000s"
      },
      {
        "id": "tiers",
        "tiered": {
          "basis": "BASIS_COUNT",
          "tiers": [{ "from": "1", "rate": "0.10" }, { "from": "51", "rate": "0.15" }]
        }
      },
      {
        "id": "bonus",
        "milestone": {
          "milestones": [{ "threshold": "50", "bonus": { "amount": "100.00", "currency": "USD" } }]
        }
      }
    ]
  }],
  "creators": [{
    "id": "anna",
    "displayName": "Anna",
    "customerIds": ["cust-9"],
    "emailHashes": ["beef"]
  }],
  "links": [{
    "code": "anna-fall",
    "creatorId": "anna",
    "campaignId": "fall-26",
    "landingUrl": "https://shop.example/fall"
  }],
  "promoCodes": [{ "code": "ANNA10", "creatorId": "anna", "campaignId": "fall-26" }],
  "settings": {
    "gracePeriod": "10s",
    "clickFloodLimitPerMinute": 30,
    "minClickToConversion": "2.500s"
  }
}"#;

/// Asserts that `value` serialises to exactly `canonical`, that `canonical`
/// parses back to `value`, and that JSON and binary round trips are lossless.
fn assert_round_trips<M>(value: &M, canonical: &str)
where
    M: Message + Default + PartialEq + std::fmt::Debug + Serialize + DeserializeOwned,
{
    let expected: Value = serde_json::from_str(canonical).expect("literal is valid JSON");
    assert_eq!(serde_json::to_value(value).expect("serialise"), expected);

    let parsed: M = serde_json::from_str(canonical).expect("canonical JSON parses");
    assert_eq!(&parsed, value);

    let text = serde_json::to_string(value).expect("serialise");
    let from_text: M = serde_json::from_str(&text).expect("own JSON parses");
    assert_eq!(&from_text, value);

    let bytes = value.encode_to_vec();
    let decoded = M::decode(bytes.as_slice()).expect("binary decodes");
    assert_eq!(&decoded, value);
    assert_eq!(decoded.encode_to_vec(), bytes, "encoding is deterministic");
}

#[test]
fn order_event_round_trips_through_json_and_binary() {
    assert_round_trips(&order_event(), ORDER_EVENT_JSON);
}

#[test]
fn program_round_trips_through_json_and_binary() {
    assert_round_trips(&program(), PROGRAM_JSON);
}

#[test]
fn enum_fields_have_typed_accessors() {
    let program = program();
    let campaign = &program.campaigns[0];
    assert_eq!(campaign.model(), AttributionModel::TimeDecay);
    assert_eq!(
        AttributionModel::TimeDecay.as_str_name(),
        "ATTRIBUTION_MODEL_TIME_DECAY"
    );
    assert_eq!(
        Campaign::default().model(),
        AttributionModel::Unspecified,
        "unset means the documented default (last click), decided by the core"
    );
}

#[test]
fn file_descriptor_set_names_the_services() {
    let set = payoff_proto::FILE_DESCRIPTOR_SET;
    assert!(!set.is_empty());
    let text = String::from_utf8_lossy(set);
    for name in [
        "payoff.v1",
        "Ingest",
        "Ledger",
        "Admin",
        "google/protobuf/timestamp.proto",
    ] {
        assert!(text.contains(name), "descriptor set lacks {name}");
    }
}
