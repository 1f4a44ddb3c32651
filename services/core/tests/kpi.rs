//! §9 KPIs: the worked numbers, end to end through the engine and `campaign_kpis`.

mod common;

use common::*;
use payoff_core::{
    engine::Engine,
    ids::{CampaignId, CreatorId},
    projection::{self, KpiReport},
    time::Duration,
};

fn kpis(engine: &Engine) -> (std::collections::BTreeMap<CreatorId, KpiReport>, KpiReport) {
    projection::campaign_kpis(&engine.kpis, &CampaignId::new("c1"), day(0), day(28))
}

/// `clicks` unique visitors click anna's link; the first `orders` of them order `amount`.
fn funnel(clicks: usize, orders: usize, amount: &str) -> Vec<Ev> {
    let mut events = Vec::new();
    for i in 0..clicks {
        let at = t(i as i64 * 60);
        events.push(Ev::click(&format!("c{i}"), at, &format!("v{i}"), "L-anna"));
        if i < orders {
            events.push(Ev::order(
                &format!("o{i}"),
                at.plus(Duration::seconds(30)),
                &format!("v{i}"),
                &format!("order-{i}"),
                amount,
            ));
        }
    }
    events
}

#[test]
fn hundred_clicks_and_ten_orders_is_a_ten_percent_conversion_rate() {
    let program = one_campaign(campaign("c1").plan(cps_percent("rev", "0.10")));
    let engine = run(program, funnel(100, 10, "50.00"));
    let (per_creator, total) = kpis(&engine);
    assert_eq!(total.totals.clicks, 100);
    assert_eq!(total.totals.orders, d("10"));
    assert_eq!(total.kpis.conversion_rate, Some(d("0.1")));
    assert_eq!(
        per_creator[&CreatorId::new("anna")].kpis.conversion_rate,
        Some(d("0.1"))
    );
    // EPC: $50 of commission over 100 clicks
    assert_eq!(total.kpis.epc, Some(d("0.5")));
}

#[test]
fn cost_500_revenue_2000_gives_roas_4_roi_300_percent_cpa_20_and_rpm_20() {
    // given 25% revenue share; 250 unique clicks; 25 orders of $80; 100,000 views
    let program = one_campaign(campaign("c1").plan(cps_percent("rev", "0.25")));
    let mut events = funnel(250, 25, "80.00");
    events.push(Ev::engagement(
        "post-views",
        day(1),
        "anna",
        "c1",
        "post-1",
        [100_000, 0, 0, 0],
    ));
    let engine = run(program, events);
    let (_, total) = kpis(&engine);
    // then cost $500 and revenue $2,000
    assert_eq!(total.totals.cost, d("500"));
    assert_eq!(total.totals.revenue, d("2000"));
    assert_eq!(total.kpis.roas, Some(d("4")));
    assert_eq!(total.kpis.roi, Some(d("3")), "ROI 300%");
    assert_eq!(total.kpis.cpa, Some(d("20")));
    assert_eq!(total.kpis.rpm, Some(d("20")));
    assert_eq!(total.kpis.aov, Some(d("80")));
    assert_eq!(total.kpis.conversion_rate, Some(d("0.1")));
}

#[test]
fn refunds_take_orders_revenue_and_cost_out_of_the_kpis() {
    let program = one_campaign(campaign("c1").plan(cps_percent("rev", "0.10")));
    let mut events = funnel(10, 2, "100.00");
    events.push(Ev::refund("r0", day(1), "order-0", None));
    events.push(Ev::refund("r1", day(1), "order-1", Some("40.00")));
    let engine = run(program, events);
    let (_, total) = kpis(&engine);
    assert_eq!(
        total.totals.orders,
        d("1"),
        "the fully refunded order no longer counts"
    );
    assert_eq!(total.totals.revenue, d("60.00"));
    assert_eq!(total.totals.cost, d("6.00"));
}

#[test]
fn a_lead_qualified_twice_counts_once_in_cost_per_lead() {
    let program = one_campaign(campaign("c1").plan(cpl("cpl", "20.00", true)));
    let engine = run(
        program,
        [
            Ev::click("c1", t(0), "v1", "L-anna"),
            Ev::signup("s1", t(60), "v1", "lead-1"),
            Ev::lead_status("q1", t(3600), "lead-1", true),
            Ev::lead_status("q2", t(7200), "lead-1", true),
        ],
    );
    let (_, total) = kpis(&engine);
    assert_eq!(total.totals.qualified_leads, d("1"));
    assert_eq!(total.totals.cost, d("20.00"));
    assert_eq!(total.kpis.cpl, Some(d("20")));
}

#[test]
fn unattributed_conversions_are_still_counted_for_the_tenant() {
    let program = one_campaign(campaign("c1").plan(cps_percent("rev", "0.10")));
    let mut events = funnel(3, 1, "50.00");
    // An order and a lead of visitors who never clicked: nobody earns them.
    events.push(Ev::order("o-x", t(400), "stranger", "order-x", "20.00"));
    events.push(Ev::signup("s-x", t(401), "stranger-2", "lead-x"));
    let engine = run(program, events);
    let report = engine.report(t(1000));
    assert_eq!(report.unattributed.orders, 1);
    assert_eq!(report.unattributed.leads, 1);
    assert_eq!(report.unattributed.revenue[&currency("USD")], d("20.00"));
    // Campaign KPIs hold only credited conversions.
    assert_eq!(kpis(&engine).1.totals.orders, d("1"));
    // As of before it, not yet.
    assert_eq!(engine.report(t(399)).unattributed.orders, 0);
}
