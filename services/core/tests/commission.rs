//! §6 commission plans, given/when/then, through the whole engine.

mod common;

use common::*;
use payoff_core::{
    ledger::EntryKind,
    projection::{self, EntryStatus},
    time::Duration,
};

#[test]
fn ten_percent_of_an_80_dollar_order_is_8_dollars() {
    // given a 10% revenue share and a click on anna's link
    let program = one_campaign(campaign("c1").plan(cps_percent("rev", "0.10")));
    // when the visitor orders $80 a minute later
    let engine = run(
        program,
        [
            Ev::click("c1", t(0), "v1", "L-anna"),
            Ev::order("o1", t(60), "v1", "order-1", "80.00"),
        ],
    );
    // then anna accrues exactly $8.00
    let accruals = of_kind(&engine, EntryKind::Accrual);
    assert_eq!(accruals.len(), 1);
    assert_eq!(accruals[0].creator.as_str(), "anna");
    assert_eq!(accruals[0].amount.amount.to_string(), "8.00");
    assert_eq!(accruals[0].amount.currency.code(), "USD");
}

#[test]
fn tiered_rate_is_ten_percent_to_the_50th_order_and_15_from_the_51st() {
    // given 10% for orders 1–50 and 15% from the 51st
    let program =
        one_campaign(campaign("c1").plan(tiered_by_count("tier", &[(1, "0.10"), (51, "0.15")])));
    // when anna brings 51 orders of $100 in one month
    let engine = run(program, orders_via_link("L-anna", t(0), 51, "100.00"));
    // then the 50th earns $10 and the 51st $15
    let accruals = amounts(&engine, EntryKind::Accrual);
    assert_eq!(accruals.len(), 51);
    assert!(accruals[..50].iter().all(|a| *a == d("10.00")));
    assert_eq!(accruals[49], d("10.00"), "the 50th order earns 10%");
    assert_eq!(accruals[50], d("15.00"), "the 51st order earns 15%");
}

#[test]
fn milestones_pay_each_once_and_reaching_200_has_paid_900() {
    // given $100 at 50 sales, $300 at 100, $500 at 200
    let program = one_campaign(
        campaign("c1").plan(milestones("ms", &[(50, "100"), (100, "300"), (200, "500")])),
    );
    // when anna brings 49 orders
    let engine = run(
        program.clone(),
        orders_via_link("L-anna", t(0), 49, "20.00"),
    );
    // then no bonus yet
    assert!(of_kind(&engine, EntryKind::Bonus).is_empty());

    // when anna brings 200 orders
    let engine = run(program, orders_via_link("L-anna", t(0), 200, "20.00"));
    // then each milestone paid once, at the 50th, 100th and 200th order: $900 in all
    let bonuses = of_kind(&engine, EntryKind::Bonus);
    let paid_at: Vec<(&str, String)> = bonuses
        .iter()
        .map(|b| {
            (
                b.order.as_ref().map_or("", |o| o.as_str()),
                b.amount.amount.to_string(),
            )
        })
        .collect();
    assert_eq!(
        paid_at,
        vec![
            ("o50", "100".to_owned()),
            ("o100", "300".to_owned()),
            ("o200", "500".to_owned())
        ]
    );
    assert_eq!(sum_for(&engine, "anna", EntryKind::Bonus), d("900"));
}

#[test]
fn cpc_pays_up_to_the_cap_of_paid_clicks_per_period() {
    // given $0.50 per click, at most 3 paid clicks per creator per month
    let program = one_campaign(campaign("c1").plan(cpc("cpc", "0.50").cap_count(3)));
    // when 5 visitors click anna's link in November and one more in December
    let mut events: Vec<Ev> = (1..=5)
        .map(|i| Ev::click(&format!("c{i}"), t(i * 60), &format!("v{i}"), "L-anna"))
        .collect();
    events.push(Ev::click("c-dec", day(30), "v9", "L-anna"));
    let engine = run(program, events);
    // then 3 November clicks pay, the clicks over the cap pay nothing, December pays again
    let accruals = of_kind(&engine, EntryKind::Accrual);
    assert_eq!(accruals.len(), 4);
    assert_eq!(sum_for(&engine, "anna", EntryKind::Accrual), d("2.00"));
    assert_eq!(
        accruals
            .iter()
            .filter(|a| a.period.label() == "2026-11")
            .count(),
        3
    );
    // and all 6 clicks are unique, unflagged clicks for the KPIs
    assert_eq!(engine.counts.credits.get("click"), Some(&6));
}

#[test]
fn cpc_pays_once_per_visitor_per_link_per_24_hours() {
    let program = one_campaign(campaign("c1").plan(cpc("cpc", "0.50")));
    let engine = run(
        program,
        [
            // given a paid click
            Ev::click("c1", t(0), "v1", "L-anna"),
            // when the same visitor clicks the same link again within 24 h: not paid
            Ev::click("c2", t(3600), "v1", "L-anna"),
            Ev::click("c3", t(24 * 3600 - 1), "v1", "L-anna"),
            // another link of another creator: paid
            Ev::click("c4", t(7200), "v1", "L-ben"),
            // 24 h after the paid click: paid again
            Ev::click("c5", t(24 * 3600), "v1", "L-anna"),
        ],
    );
    let paid: Vec<String> = of_kind(&engine, EntryKind::Accrual)
        .iter()
        .map(|e| {
            format!(
                "{}@{}",
                e.creator,
                e.occurred_at.millis() / 1000 - BASE.0 / 1000
            )
        })
        .collect();
    assert_eq!(paid, vec!["anna@0", "ben@7200", "anna@86400"]);
    assert_eq!(
        engine
            .counts
            .skipped
            .get(&payoff_core::attribution::Skip::NotUnique),
        Some(&2)
    );
}

#[test]
fn cpl_pays_per_lead_and_a_rejected_lead_reverses() {
    let program = one_campaign(campaign("c1").plan(cpl("cpl", "5.00", false)));
    // given a lead through anna's link
    let engine = run(
        program,
        [
            Ev::click("c1", t(0), "v1", "L-anna"),
            Ev::signup("s1", t(60), "v1", "lead-1"),
            // when it is rejected
            Ev::lead_status("st1", t(3600), "lead-1", false),
        ],
    );
    // then $5 accrued at signup and is reversed, referring to the accrual
    let accrual = of_kind(&engine, EntryKind::Accrual)[0].clone();
    assert_eq!(accrual.amount.amount, d("5.00"));
    assert_eq!(accrual.occurred_at, t(60));
    let reversals = of_kind(&engine, EntryKind::Reversal);
    assert_eq!(reversals.len(), 1);
    assert_eq!(reversals[0].amount.amount, d("-5.00"));
    assert_eq!(reversals[0].refers_to, Some(accrual.id));
    assert_eq!(net_for(&engine, "anna"), d("0"));
}

#[test]
fn cpl_qualified_only_pays_at_qualification_and_not_for_a_rejected_lead() {
    let program = one_campaign(campaign("c1").plan(cpl("cpl", "12.00", true)));
    // given two leads through anna's link
    let signups = [
        Ev::click("c1", t(0), "v1", "L-anna"),
        Ev::signup("s1", t(60), "v1", "lead-1"),
        Ev::click("c2", t(100), "v2", "L-anna"),
        Ev::signup("s2", t(160), "v2", "lead-2"),
    ];
    // then nothing is paid at signup
    let engine = run(program.clone(), signups.clone());
    assert!(engine.entries.is_empty());

    // when one qualifies and the other is rejected
    let mut events = signups.to_vec();
    events.push(Ev::lead_status("st1", t(7200), "lead-1", true));
    events.push(Ev::lead_status("st2", t(7300), "lead-2", false));
    let engine = run(program, events);
    // then only the qualified lead pays, at qualification time, and nothing is reversed
    let accruals = of_kind(&engine, EntryKind::Accrual);
    assert_eq!(accruals.len(), 1);
    assert_eq!(accruals[0].amount.amount, d("12.00"));
    assert_eq!(accruals[0].occurred_at, t(7200));
    assert_eq!(
        accruals[0].lead.as_ref().map(|l| l.as_str()),
        Some("lead-1")
    );
    assert!(of_kind(&engine, EntryKind::Reversal).is_empty());
}

#[test]
fn hybrid_base_fee_is_paid_once_per_creator_per_period() {
    // given a $200 retainer on top of 10%
    let program = one_campaign(
        campaign("c1")
            .plan(base_fee("fee", "200.00"))
            .plan(cps_percent("rev", "0.10")),
    );
    let mut events = orders_via_link("L-anna", t(0), 3, "100.00");
    // ben's first credit of November, anna's first of December
    events.push(Ev::click("cb", t(9000), "vb", "L-ben"));
    events.push(Ev::order("ob", t(9100), "vb", "order-b", "50.00"));
    events.push(Ev::click("cd", day(31), "vd", "L-anna"));
    events.push(Ev::order(
        "od",
        day(31).plus(Duration::minutes(5)),
        "vd",
        "order-d",
        "100.00",
    ));
    let engine = run(program, events);
    // then one fee per creator and month, with the other plans on top
    let fees: Vec<(String, String)> = of_kind(&engine, EntryKind::BaseFee)
        .iter()
        .map(|e| (e.creator.to_string(), e.period.label()))
        .collect();
    assert_eq!(
        fees,
        vec![
            ("anna".to_owned(), "2026-11".to_owned()),
            ("ben".to_owned(), "2026-11".to_owned()),
            ("anna".to_owned(), "2026-12".to_owned())
        ]
    );
    assert_eq!(sum_for(&engine, "anna", EntryKind::BaseFee), d("400.00"));
    assert_eq!(sum_for(&engine, "anna", EntryKind::Accrual), d("40.00"));
}

#[test]
fn new_customer_only_plans_skip_returning_customers() {
    let program = one_campaign(
        campaign("c1")
            .plan(cps_percent("new", "0.20").new_customer_only())
            .plan(cps_flat("any", "1.00")),
    );
    let engine = run(
        program,
        [
            Ev::click("c1", t(0), "v1", "L-anna"),
            // first order of the visitor: new customer
            Ev::order("o1", t(60), "v1", "order-1", "50.00"),
            // second order of the same visitor: returning
            Ev::order("o2", t(3600), "v1", "order-2", "50.00"),
            // the storefront says this one is not a first order
            Ev::click("c3", t(4000), "v3", "L-anna"),
            Ev::order("o3", t(4100), "v3", "order-3", "50.00").first_order(false),
        ],
    );
    let by_plan: Vec<(String, String, String)> = of_kind(&engine, EntryKind::Accrual)
        .iter()
        .map(|e| {
            (
                e.order.as_ref().unwrap().to_string(),
                e.plan.as_ref().unwrap().to_string(),
                e.amount.amount.to_string(),
            )
        })
        .collect();
    assert_eq!(
        by_plan,
        vec![
            ("order-1".into(), "new".into(), "10.00".into()),
            ("order-1".into(), "any".into(), "1.00".into()),
            ("order-2".into(), "any".into(), "1.00".into()),
            ("order-3".into(), "any".into(), "1.00".into()),
        ]
    );
}

#[test]
fn recurring_renewals_pay_for_n_periods_only() {
    // given 10% on renewals for 2 periods, and a flat fee that does not recur
    let program = one_campaign(
        campaign("c1")
            .plan(cps_percent("sub", "0.10").recurring(2))
            .plan(cps_flat("once", "3.00")),
    );
    let engine = run(
        program,
        [
            Ev::click("c1", t(0), "v1", "L-anna"),
            Ev::order("o1", t(60), "v1", "sub-nov", "30.00"),
            // renewals in December, January, February (no clicks needed)
            Ev::order("o2", day(33), "v1", "sub-dec", "30.00").renewal_of("sub-nov"),
            Ev::order("o3", day(64), "v1", "sub-jan", "30.00").renewal_of("sub-nov"),
            Ev::order("o4", day(95), "v1", "sub-feb", "30.00").renewal_of("sub-nov"),
        ],
    );
    let paid: Vec<(String, String)> = of_kind(&engine, EntryKind::Accrual)
        .iter()
        .map(|e| {
            (
                e.order.as_ref().unwrap().to_string(),
                e.plan.as_ref().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        paid,
        vec![
            ("sub-nov".into(), "sub".into()),
            ("sub-nov".into(), "once".into()),
            ("sub-dec".into(), "sub".into()),
            ("sub-jan".into(), "sub".into()),
        ]
    );
    // and every renewal is credited to anna, by the renewal rule
    assert_eq!(engine.counts.credits.get("order"), Some(&4));
}

#[test]
fn per_category_rates_override_the_default_rate() {
    // given 10% by default, 20% on shoes
    let program =
        one_campaign(campaign("c1").plan(cps_by_category("rev", "0.10", &[("shoes", "0.20")])));
    // when an order has $60 of shoes and $40 of hats
    let engine = run(
        program,
        [
            Ev::click("c1", t(0), "v1", "L-anna"),
            Ev::order("o1", t(60), "v1", "order-1", "100.00")
                .line("sku-1", "shoes", 2, "30.00")
                .line("sku-2", "hats", 1, "40.00"),
        ],
    );
    // then 20% of 60 + 10% of 40 = $16
    assert_eq!(amounts(&engine, EntryKind::Accrual), vec![d("16.00")]);
}

#[test]
fn cap_amount_limits_what_a_plan_pays_per_creator_per_period() {
    // given 10%, at most $25 per creator per month
    let program = one_campaign(campaign("c1").plan(cps_percent("rev", "0.10").cap_amount("25")));
    let mut events = orders_via_link("L-anna", t(0), 4, "100.00");
    events.push(Ev::click("cd", day(31), "vd", "L-anna"));
    events.push(Ev::order(
        "od",
        day(31).plus(Duration::minutes(5)),
        "vd",
        "order-d",
        "100.00",
    ));
    let engine = run(program, events);
    // then $10, $10, $5, nothing; and $10 again in December
    assert_eq!(
        amounts(&engine, EntryKind::Accrual),
        vec![d("10.00"), d("10.00"), d("5.00"), d("10.00")]
    );
}

#[test]
fn an_accrual_is_pending_during_its_hold_then_approved() {
    // given a 10% plan with a 14-day hold
    let program = one_campaign(campaign("c1").plan(cps_percent("rev", "0.10").hold(days(14))));
    let engine = run(
        program,
        [
            Ev::click("c1", t(0), "v1", "L-anna"),
            Ev::order("o1", t(60), "v1", "order-1", "80.00"),
        ],
    );
    let accrual = &engine.entries[0];
    assert_eq!(accrual.hold_until, t(60).plus(days(14)));
    // then pending the day after
    let during = t(60).plus(days(1));
    assert_eq!(
        projection::statuses(&engine.entries, during)[&accrual.id],
        EntryStatus::Pending
    );
    let b = &projection::balances(&engine.entries, during)[0];
    assert_eq!((b.pending.amount, b.approved.amount), (d("8.00"), d("0")));
    // and approved from the end of the hold
    let after = accrual.hold_until;
    assert_eq!(
        projection::statuses(&engine.entries, after)[&accrual.id],
        EntryStatus::Approved
    );
    let b = &projection::balances(&engine.entries, after)[0];
    assert_eq!((b.pending.amount, b.approved.amount), (d("0"), d("8.00")));
    assert_eq!(b.available.amount, d("8.00"));
    // and before the order, there is nothing at all
    assert!(projection::balances(&engine.entries, t(59)).is_empty());
}

#[test]
fn engagement_pays_deltas_of_cumulative_counters_above_minimum_views() {
    // given $0.01 per view, $0.10 per like, $0.25 per comment, $0.50 per share, from 1,000 views
    let program = one_campaign(campaign("c1").plan(engagement(
        "ppe",
        ["0.01", "0.10", "0.25", "0.50"],
        1000,
    )));
    let engine = run(
        program,
        [
            // below the minimum: nothing
            Ev::engagement("e1", t(0), "anna", "c1", "post-1", [500, 10, 2, 1]),
            // above: everything so far, 15 + 3 + 1 + 1
            Ev::engagement("e2", t(3600), "anna", "c1", "post-1", [1500, 30, 4, 2]),
            // a stale view counter never lowers what was seen; 10 more likes pay $1
            Ev::engagement("e3", t(7200), "anna", "c1", "post-1", [1400, 40, 4, 2]),
            // the same counters again: nothing
            Ev::engagement("e4", t(9000), "anna", "c1", "post-1", [1500, 40, 4, 2]),
        ],
    );
    assert_eq!(
        amounts(&engine, EntryKind::Accrual),
        vec![d("20.00"), d("1.00")]
    );
    // and the KPIs count each view once
    let (_, total) = projection::campaign_kpis(
        &engine.kpis,
        &payoff_core::ids::CampaignId::new("c1"),
        t(0),
        t(10_000),
    );
    assert_eq!((total.totals.views, total.totals.likes), (1500, 40));
}
