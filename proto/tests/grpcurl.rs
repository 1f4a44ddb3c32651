//! The JSON a grpcurl user would write parses into the expected messages.
//!
//! Besides the canonical form, the proto3 JSON mapping requires parsers to
//! accept the original snake_case field names, 64-bit integers as JSON
//! numbers, timestamps with any UTC offset, and enum numbers; grpcurl users
//! rely on all of these.

use payoff_proto::v1::{
    AdjustmentKind, Event, LeadQualification, PutProgramRequest, SendBatchRequest, SendRequest,
    Utm, commission_plan, event,
};

/// Body of `grpcurl -H "authorization: Bearer $KEY" -d @ host:port payoff.v1.Ingest/Send`.
const SEND_CLICK: &str = r#"{
  "event": {
    "eventId": "evt-1",
    "occurredAt": "2026-11-05T10:00:00Z",
    "context": { "ip": "203.0.113.7", "userAgent": "Mozilla/5.0" },
    "click": {
      "visitorId": "vis-7",
      "linkCode": "anna-fall",
      "utm": { "source": "instagram", "medium": "social" },
      "landingUrl": "https://shop.example/fall"
    }
  }
}"#;

/// The same request written with proto field names and a local offset.
const SEND_CLICK_SNAKE_CASE: &str = r#"{
  "event": {
    "event_id": "evt-1",
    "occurred_at": "2026-11-05T11:00:00+01:00",
    "context": { "ip": "203.0.113.7", "user_agent": "Mozilla/5.0" },
    "click": {
      "visitor_id": "vis-7",
      "link_code": "anna-fall",
      "utm": { "source": "instagram", "medium": "social" },
      "landing_url": "https://shop.example/fall"
    }
  }
}"#;

#[test]
fn send_click_parses_in_camel_and_snake_case() {
    let camel: SendRequest = serde_json::from_str(SEND_CLICK).expect("camelCase parses");
    let snake: SendRequest = serde_json::from_str(SEND_CLICK_SNAKE_CASE).expect("snake parses");
    assert_eq!(camel, snake);

    let event = camel.event.expect("event");
    assert_eq!(event.event_id, "evt-1");
    assert_eq!(
        event.occurred_at.expect("occurred_at").seconds,
        1_793_872_800
    );
    assert_eq!(event.context.expect("context").ip, "203.0.113.7");
    let Some(event::Payload::Click(click)) = event.payload else {
        panic!("expected a click, got {:?}", event.payload);
    };
    assert_eq!(click.link_code, "anna-fall");
    assert_eq!(
        click.utm,
        Some(Utm {
            source: "instagram".to_owned(),
            medium: "social".to_owned(),
            ..Utm::default()
        })
    );
}

#[test]
fn send_batch_parses_adjustments_engagement_and_lead_status() {
    let json = r#"{
      "events": [
        {
          "eventId": "evt-2",
          "occurredAt": "2026-11-20T08:30:00Z",
          "adjustment": {
            "orderId": "ord-1001",
            "kind": "ADJUSTMENT_KIND_REFUND",
            "amount": { "amount": "20.00", "currency": "USD" },
            "reason": "one pair returned"
          }
        },
        {
          "eventId": "evt-3",
          "occurredAt": "2026-11-20T09:00:00Z",
          "engagement": {
            "creatorId": "anna", "campaignId": "fall-26", "postId": "p-1",
            "platform": "instagram", "views": 120000, "likes": "5300", "comments": 41,
            "shares": 12
          }
        },
        {
          "eventId": "evt-4",
          "occurredAt": "2026-11-21T12:00:00.5Z",
          "leadStatus": { "leadId": "lead-9", "status": 1 }
        }
      ]
    }"#;
    let batch: SendBatchRequest = serde_json::from_str(json).expect("batch parses");
    let payloads: Vec<_> = batch.events.into_iter().map(|e| e.payload).collect();

    let Some(event::Payload::Adjustment(adjustment)) = &payloads[0] else {
        panic!("expected an adjustment, got {:?}", payloads[0]);
    };
    assert_eq!(adjustment.kind(), AdjustmentKind::Refund);
    assert_eq!(adjustment.amount.as_ref().expect("amount").amount, "20.00");

    let Some(event::Payload::Engagement(engagement)) = &payloads[1] else {
        panic!("expected engagement, got {:?}", payloads[1]);
    };
    assert_eq!(
        (
            engagement.views,
            engagement.likes,
            engagement.comments,
            engagement.shares
        ),
        (120_000, 5_300, 41, 12)
    );

    let Some(event::Payload::LeadStatus(status)) = &payloads[2] else {
        panic!("expected lead status, got {:?}", payloads[2]);
    };
    assert_eq!(status.status(), LeadQualification::Qualified);
}

#[test]
fn put_program_parses_as_an_admin_would_write_it() {
    let json = r#"{
      "program": {
        "effective_from": "2026-11-01T00:00:00Z",
        "campaigns": [{
          "id": "fall-26",
          "currency": "USD",
          "lookback": "604800s",
          "plans": [
            { "id": "cpc", "cpc": { "amount": { "amount": "0.25", "currency": "USD" },
                                    "max_paid_clicks_per_period": 10000 } },
            { "id": "fee", "base_fee": { "amount": { "amount": "500", "currency": "USD" } },
              "hold": "0s" }
          ]
        }],
        "promo_codes": [{ "code": "anna10", "creator_id": "anna", "campaign_id": "fall-26" }]
      }
    }"#;
    let request: PutProgramRequest = serde_json::from_str(json).expect("program parses");
    let program = request.program.expect("program");
    assert_eq!(program.version, 0, "version is assigned by the server");
    let campaign = &program.campaigns[0];
    assert_eq!(campaign.lookback.expect("lookback").seconds, 7 * 24 * 3600);
    assert_eq!(
        campaign.code_precedence, None,
        "absent means the default (on)"
    );
    let Some(commission_plan::Kind::Cpc(cpc)) = &campaign.plans[0].kind else {
        panic!("expected a CPC plan, got {:?}", campaign.plans[0].kind);
    };
    assert_eq!(cpc.max_paid_clicks_per_period, Some(10_000));
    assert_eq!(campaign.plans[1].hold.expect("hold").seconds, 0);
}

#[test]
fn mistakes_are_rejected_not_guessed() {
    let cases = [
        (
            "money as a float",
            r#"{"eventId":"e","order":{"amount":{"amount":80.5,"currency":"USD"}}}"#,
        ),
        ("misspelt field", r#"{"eventID":"e"}"#),
        ("unknown enum name", r#"{"adjustment":{"kind":"REFUND"}}"#),
        (
            "timestamp without offset",
            r#"{"occurredAt":"2026-11-05T10:00:00"}"#,
        ),
    ];
    for (what, json) in cases {
        assert!(
            serde_json::from_str::<Event>(json).is_err(),
            "{what} should be rejected: {json}"
        );
    }
}
