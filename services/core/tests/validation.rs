//! §4 validation: each bad input names the exact field path and the rule it breaks.

mod common;

use common::*;
use payoff_core::{
    event::{Event, RawEvent, RawLeadStatus, RawMoney, RawPayload},
    time::Duration,
};

fn order_ev() -> Ev {
    Ev::order("e1", t(0), "v1", "order-1", "10.00")
}

fn with_order(f: impl FnOnce(&mut payoff_core::event::RawOrder)) -> RawEvent {
    let mut raw = order_ev().0;
    let Some(RawPayload::Order(o)) = &mut raw.payload else {
        unreachable!()
    };
    f(o);
    raw
}

fn money(amount: &str, currency: &str) -> Option<RawMoney> {
    Some(RawMoney {
        amount: amount.into(),
        currency: currency.into(),
    })
}

fn violations(raw: &RawEvent) -> Vec<(String, &'static str)> {
    match Event::validate(raw, t(0)) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .violations()
            .iter()
            .map(|v| (v.field.clone(), v.rule))
            .collect(),
    }
}

#[test]
fn each_bad_event_names_the_field_and_the_rule() {
    let long = "x".repeat(129);
    let cases: Vec<(&str, RawEvent, &str, &str)> = vec![
        (
            "empty event id",
            RawEvent {
                event_id: String::new(),
                ..order_ev().0
            },
            "event_id",
            "required",
        ),
        (
            "129-byte event id",
            RawEvent {
                event_id: long.clone(),
                ..order_ev().0
            },
            "event_id",
            "too_long",
        ),
        (
            "control char in event id",
            RawEvent {
                event_id: "e\u{7}1".into(),
                ..order_ev().0
            },
            "event_id",
            "control_character",
        ),
        (
            "newline in customer id",
            RawEvent {
                customer_id: "c\n1".into(),
                ..order_ev().0
            },
            "customer_id",
            "control_character",
        ),
        (
            "control char in the IP hash",
            RawEvent {
                ip_hash: "ab\ncd".into(),
                ..order_ev().0
            },
            "context.ip_hash",
            "control_character",
        ),
        (
            "129-byte user-agent hash",
            RawEvent {
                user_agent_hash: long.clone(),
                ..order_ev().0
            },
            "context.user_agent_hash",
            "too_long",
        ),
        (
            "missing occurred_at",
            RawEvent {
                occurred_at: None,
                ..order_ev().0
            },
            "occurred_at",
            "required",
        ),
        (
            "occurred_at 5 min + 1 ms ahead",
            RawEvent {
                occurred_at: Some(t(300).plus(Duration(1))),
                ..order_ev().0
            },
            "occurred_at",
            "in_future",
        ),
        (
            "occurred_at before 2000",
            RawEvent {
                occurred_at: Some(payoff_core::time::Timestamp(0)),
                ..order_ev().0
            },
            "occurred_at",
            "too_old",
        ),
        (
            "missing payload",
            RawEvent {
                payload: None,
                ..order_ev().0
            },
            "payload",
            "required",
        ),
        (
            "empty order id",
            with_order(|o| o.order_id.clear()),
            "order.order_id",
            "required",
        ),
        (
            "129-byte visitor id",
            with_order(|o| o.visitor_id = long.clone()),
            "order.visitor_id",
            "too_long",
        ),
        (
            "missing amount",
            with_order(|o| o.amount = None),
            "order.amount",
            "required",
        ),
        (
            "zero amount",
            with_order(|o| o.amount = money("0.00", "USD")),
            "order.amount.amount",
            "not_positive",
        ),
        (
            "negative amount",
            with_order(|o| o.amount = money("-5.00", "USD")),
            "order.amount.amount",
            "not_positive",
        ),
        (
            "USD with 3 decimals",
            with_order(|o| o.amount = money("10.001", "USD")),
            "order.amount.amount",
            "precision",
        ),
        (
            "JPY with a decimal",
            with_order(|o| o.amount = money("100.5", "JPY")),
            "order.amount.amount",
            "precision",
        ),
        (
            "KWD with 4 decimals",
            with_order(|o| o.amount = money("1.0001", "KWD")),
            "order.amount.amount",
            "precision",
        ),
        (
            "unknown currency",
            with_order(|o| o.amount = money("10.00", "XYZ")),
            "order.amount.currency",
            "unknown_currency",
        ),
        (
            "lower-case currency",
            with_order(|o| o.amount = money("10.00", "usd")),
            "order.amount.currency",
            "unknown_currency",
        ),
        (
            "currency without minor units",
            with_order(|o| o.amount = money("1", "XAU")),
            "order.amount.currency",
            "unknown_currency",
        ),
        (
            "exponent",
            with_order(|o| o.amount = money("1e3", "USD")),
            "order.amount.amount",
            "malformed_decimal",
        ),
        (
            "words",
            with_order(|o| o.amount = money("ten", "USD")),
            "order.amount.amount",
            "malformed_decimal",
        ),
        (
            "thousands separator",
            with_order(|o| o.amount = money("1,000.00", "USD")),
            "order.amount.amount",
            "malformed_decimal",
        ),
        (
            "padded",
            with_order(|o| o.amount = money(" 10.00", "USD")),
            "order.amount.amount",
            "malformed_decimal",
        ),
        (
            "two points",
            with_order(|o| o.amount = money("1.2.3", "USD")),
            "order.amount.amount",
            "malformed_decimal",
        ),
        (
            "empty amount",
            with_order(|o| o.amount = money("", "USD")),
            "order.amount.amount",
            "required",
        ),
        (
            "tax in another currency",
            with_order(|o| o.tax = money("1.00", "EUR")),
            "order.tax.currency",
            "currency_mismatch",
        ),
        (
            "tax above amount",
            with_order(|o| o.tax = money("11.00", "USD")),
            "order.amount",
            "less_than_extras",
        ),
        (
            "line item of zero quantity",
            order_ev().line("sku", "cat", 0, "5.00").0,
            "order.line_items[0].quantity",
            "not_positive",
        ),
        (
            "line item price with 3 decimals",
            order_ev().line("sku", "cat", 1, "5.005").0,
            "order.line_items[0].unit_price",
            "precision",
        ),
        (
            "negative line item price",
            order_ev().line("sku", "cat", 1, "-5.00").0,
            "order.line_items[0].unit_price",
            "negative",
        ),
        (
            "empty sku",
            order_ev().line("", "cat", 1, "5.00").0,
            "order.line_items[0].sku",
            "required",
        ),
        (
            "malformed price of the second line item",
            order_ev()
                .line("sku", "cat", 1, "5.00")
                .line("sku", "cat", 1, "five")
                .0,
            "order.line_items[1].unit_price",
            "malformed_decimal",
        ),
        (
            "line item category with a control character",
            order_ev().line("sku", "c\u{7}t", 1, "5.00").0,
            "order.line_items[0].category",
            "control_character",
        ),
        (
            "third promo code too long",
            with_order(|o| o.promo_codes = vec!["A".into(), "B".into(), long.clone()]),
            "order.promo_codes[2]",
            "too_long",
        ),
        (
            "order amount of zero",
            with_order(|o| o.amount = money("0", "USD")),
            "order.amount.amount",
            "not_positive",
        ),
        (
            "21 promo codes",
            with_order(|o| o.promo_codes = vec!["C".into(); 21]),
            "order.promo_codes",
            "too_many",
        ),
        (
            "empty promo code",
            with_order(|o| o.promo_codes = vec!["".into()]),
            "order.promo_codes[0]",
            "required",
        ),
        (
            "click with neither link nor creator",
            {
                let mut e = Ev::click("e1", t(0), "v1", "L");
                if let Some(RawPayload::Click(c)) = &mut e.0.payload {
                    c.link_code.clear();
                }
                e.0
            },
            "click.link_code",
            "required",
        ),
        (
            "click with link and creator",
            {
                let mut e = Ev::click("e1", t(0), "v1", "L");
                if let Some(RawPayload::Click(c)) = &mut e.0.payload {
                    c.creator_id = "anna".into();
                }
                e.0
            },
            "click.link_code",
            "exclusive",
        ),
        (
            "2049-byte utm_source",
            {
                let mut e = Ev::click("e1", t(0), "v1", "L");
                if let Some(RawPayload::Click(c)) = &mut e.0.payload {
                    c.utm_source = "u".repeat(2049);
                }
                e.0
            },
            "click.utm_source",
            "too_long",
        ),
        (
            "empty lead id",
            Ev::signup("e1", t(0), "v1", "").0,
            "signup.lead_id",
            "required",
        ),
        (
            "adjustment without kind",
            {
                let mut e = Ev::refund("e1", t(0), "order-1", None);
                if let Some(RawPayload::Adjustment(a)) = &mut e.0.payload {
                    a.kind = None;
                }
                e.0
            },
            "adjustment.kind",
            "required",
        ),
        (
            "zero partial refund",
            Ev::refund("e1", t(0), "order-1", Some("0.00")).0,
            "adjustment.amount.amount",
            "not_positive",
        ),
        (
            "refund with 3 decimals",
            Ev::refund("e1", t(0), "order-1", Some("1.001")).0,
            "adjustment.amount.amount",
            "precision",
        ),
        (
            "lead status without status",
            RawEvent {
                payload: Some(RawPayload::LeadStatus(RawLeadStatus {
                    lead_id: "l1".into(),
                    qualified: None,
                })),
                ..order_ev().0
            },
            "lead_status.status",
            "required",
        ),
        (
            "engagement without post",
            Ev::engagement("e1", t(0), "anna", "c1", "", [1, 0, 0, 0]).0,
            "engagement.post_id",
            "required",
        ),
    ];
    let mut failures = Vec::new();
    for (name, raw, field, rule) in &cases {
        let got = violations(raw);
        if got != vec![((*field).to_owned(), *rule)] {
            failures.push(format!("{name}: expected [{field}: {rule}], got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn valid_edge_cases_are_accepted() {
    let ok: Vec<(&str, RawEvent)> = vec![
        (
            "128-byte id",
            RawEvent {
                event_id: "x".repeat(128),
                ..order_ev().0
            },
        ),
        (
            "exactly 5 minutes ahead",
            RawEvent {
                occurred_at: Some(t(300)),
                ..order_ev().0
            },
        ),
        (
            "trailing zeros beyond USD precision",
            with_order(|o| o.amount = money("10.000", "USD")),
        ),
        (
            "JPY whole amount",
            with_order(|o| o.amount = money("1500", "JPY")),
        ),
        (
            "KWD with 3 decimals",
            with_order(|o| o.amount = money("1.001", "KWD")),
        ),
        ("zero tax", with_order(|o| o.tax = money("0.00", "USD"))),
        (
            "unicode id",
            RawEvent {
                event_id: "événement-1".into(),
                ..order_ev().0
            },
        ),
    ];
    for (name, raw) in ok {
        assert_eq!(violations(&raw), vec![], "{name}");
    }
}

#[test]
fn every_broken_rule_is_reported_at_once() {
    let raw = RawEvent {
        event_id: String::new(),
        occurred_at: None,
        ..with_order(|o| {
            o.order_id.clear();
            o.amount = money("1.001", "USD");
        })
    };
    assert_eq!(
        violations(&raw),
        vec![
            ("event_id".to_owned(), "required"),
            ("occurred_at".to_owned(), "required"),
            ("order.order_id".to_owned(), "required"),
            ("order.amount.amount".to_owned(), "precision"),
        ]
    );
}
