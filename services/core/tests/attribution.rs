//! §5 attribution, given/when/then, through the whole engine.

mod common;

use common::*;
use payoff_core::{
    attribution::ConversionKey,
    credit::{CreditKind, Explanation, FraudReason, Rule},
    engine::Engine,
    ids::{CreatorId, OrderId},
    ledger::EntryKind,
    program::{Model, ProgramHistory},
    time::Duration,
};
use rust_decimal::Decimal;

/// Shares of the order credits of `order`: (creator, share), sorted by creator.
fn shares_of(engine: &Engine, order: &str) -> Vec<(String, Decimal)> {
    let mut shares: Vec<(String, Decimal)> = engine
        .credits
        .iter()
        .filter(|c| matches!(&c.kind, CreditKind::Order { order: o, .. } if o.as_str() == order))
        .map(|c| (c.creator.to_string(), c.kind.share()))
        .collect();
    shares.sort();
    shares
}

fn explanation(engine: &Engine, order: &str) -> Explanation {
    (*engine.explanations[&ConversionKey::Order(OrderId::new(order))]).clone()
}

/// Four creators, each with a link `L-<name>`, campaign `c1` with `model` and 10%.
fn four_creators(model: Model) -> payoff_core::program::Program {
    program()
        .campaign(campaign("c1").model(model).plan(cps_percent("rev", "0.10")))
        .creators(&["anna", "ben", "cleo", "dan"])
        .link("L-anna", "anna", "c1")
        .link("L-ben", "ben", "c1")
        .link("L-cleo", "cleo", "c1")
        .link("L-dan", "dan", "c1")
        .promo("ANNA10", "anna", "c1")
        .build()
}

/// Clicks by `v1` on the given links, one hour apart from `t(0)`, then an order of $100
/// one hour after the last.
fn journey(links: &[&str]) -> Vec<Ev> {
    let mut events: Vec<Ev> = links
        .iter()
        .enumerate()
        .map(|(i, link)| Ev::click(&format!("c{i}"), t(i as i64 * 3600), "v1", link))
        .collect();
    events.push(Ev::order(
        "o1",
        t(links.len() as i64 * 3600),
        "v1",
        "order-1",
        "100.00",
    ));
    events
}

#[test]
fn a_mapped_promo_code_takes_precedence_over_clicks() {
    // given a click on ben's link
    // when the order carries anna's code (in any case)
    let mut events = journey(&["L-ben"]);
    let order = events.pop().unwrap().code("anna10");
    events.push(order);
    let engine = run(four_creators(Model::LastClick), events);
    // then anna gets 100%, by the code rule
    assert_eq!(
        shares_of(&engine, "order-1"),
        vec![("anna".into(), Decimal::ONE)]
    );
    assert_eq!(
        explanation(&engine, "order-1").rule,
        Rule::PromoCode {
            code: "ANNA10".into()
        }
    );
}

#[test]
fn with_code_precedence_off_clicks_win_and_the_code_is_a_fallback() {
    let program = one_campaign(
        campaign("c1")
            .codes_after_clicks()
            .plan(cps_percent("rev", "0.10")),
    );
    let engine = run(
        program,
        [
            // given a click on ben's link, when the order carries anna's code: ben
            Ev::click("c1", t(0), "v1", "L-ben"),
            Ev::order("o1", t(60), "v1", "order-1", "100.00").code("ANNA10"),
            // given no click at all: the code still credits anna
            Ev::order("o2", t(120), "v2", "order-2", "100.00").code("ANNA10"),
        ],
    );
    assert_eq!(
        shares_of(&engine, "order-1"),
        vec![("ben".into(), Decimal::ONE)]
    );
    assert_eq!(
        shares_of(&engine, "order-2"),
        vec![("anna".into(), Decimal::ONE)]
    );
}

#[test]
fn clicks_outside_the_lookback_window_are_excluded() {
    // given a 7-day lookback
    let program = one_campaign(
        campaign("c1")
            .lookback(days(7))
            .plan(cps_percent("rev", "0.10")),
    );
    let engine = run(
        program,
        [
            Ev::click("c-anna", day(0), "v1", "L-anna"),
            Ev::click("c-ben", day(2), "v1", "L-ben"),
            // 8 days after anna's click, 6 after ben's: ben, though first-click would not care
            Ev::order("o1", day(8), "v1", "order-1", "100.00"),
            // a visitor whose only click is 8 days old: unattributed
            Ev::click("c-old", day(0), "v2", "L-anna"),
            Ev::order("o2", day(8), "v2", "order-2", "100.00"),
        ],
    );
    assert_eq!(
        shares_of(&engine, "order-1"),
        vec![("ben".into(), Decimal::ONE)]
    );
    assert!(shares_of(&engine, "order-2").is_empty());
    assert_eq!(engine.counts.unattributed, 1);
    let why = explanation(&engine, "order-2");
    assert_eq!(why.rule, Rule::Unattributed);
    assert_eq!(why.candidates.len(), 1);
    assert!(!why.candidates[0].eligible);
    assert_eq!(why.candidates[0].reason, Some("outside_lookback"));
    // exactly at the edge of the window still counts
    let program = one_campaign(campaign("c1").lookback(days(7)));
    let engine = run(
        program,
        [
            Ev::click("c1", day(0), "v1", "L-anna"),
            Ev::order("o1", day(7), "v1", "order-1", "100.00"),
        ],
    );
    assert_eq!(
        shares_of(&engine, "order-1"),
        vec![("anna".into(), Decimal::ONE)]
    );
}

#[test]
fn last_click_gives_everything_to_the_latest_click() {
    let engine = run(
        four_creators(Model::LastClick),
        journey(&["L-anna", "L-ben", "L-cleo"]),
    );
    assert_eq!(
        shares_of(&engine, "order-1"),
        vec![("cleo".into(), Decimal::ONE)]
    );
}

#[test]
fn first_click_gives_everything_to_the_earliest_click() {
    let engine = run(
        four_creators(Model::FirstClick),
        journey(&["L-anna", "L-ben", "L-cleo"]),
    );
    assert_eq!(
        shares_of(&engine, "order-1"),
        vec![("anna".into(), Decimal::ONE)]
    );
}

#[test]
fn linear_gives_equal_shares_summing_to_exactly_one() {
    let engine = run(
        four_creators(Model::Linear),
        journey(&["L-anna", "L-ben", "L-cleo"]),
    );
    let shares = shares_of(&engine, "order-1");
    assert_eq!(
        shares,
        vec![
            ("anna".into(), d("0.333333333333")),
            ("ben".into(), d("0.333333333333")),
            ("cleo".into(), d("0.333333333334")),
        ]
    );
    assert_eq!(shares.iter().map(|s| s.1).sum::<Decimal>(), Decimal::ONE);
}

#[test]
fn position_based_gives_40_40_20_and_aggregates_per_creator() {
    // 4 clicks: 40% first, 10% + 10% middle, 40% last
    let engine = run(
        four_creators(Model::PositionBased),
        journey(&["L-anna", "L-ben", "L-cleo", "L-dan"]),
    );
    assert_eq!(
        shares_of(&engine, "order-1"),
        vec![
            ("anna".into(), d("0.4")),
            ("ben".into(), d("0.1")),
            ("cleo".into(), d("0.1")),
            ("dan".into(), d("0.4")),
        ]
    );
    // the same creator first and last: 80%
    let engine = run(
        four_creators(Model::PositionBased),
        journey(&["L-anna", "L-ben", "L-cleo", "L-anna"]),
    );
    assert_eq!(
        shares_of(&engine, "order-1"),
        vec![
            ("anna".into(), d("0.8")),
            ("ben".into(), d("0.1")),
            ("cleo".into(), d("0.1")),
        ]
    );
    // two clicks: 50/50
    let engine = run(
        four_creators(Model::PositionBased),
        journey(&["L-anna", "L-ben"]),
    );
    assert_eq!(
        shares_of(&engine, "order-1"),
        vec![("anna".into(), d("0.5")), ("ben".into(), d("0.5"))]
    );
}

#[test]
fn time_decay_halves_the_weight_every_half_life() {
    // given a one-day half-life; clicks two days and one day before the order
    let program = four_creators(Model::TimeDecay { half_life: days(1) });
    let engine = run(
        program,
        [
            Ev::click("c1", day(0), "v1", "L-anna"),
            Ev::click("c2", day(1), "v1", "L-ben"),
            Ev::order("o1", day(2), "v1", "order-1", "90.00"),
        ],
    );
    // then weights 1/4 and 1/2: shares 1/3 and 2/3
    let shares = shares_of(&engine, "order-1");
    assert_eq!(
        shares,
        vec![
            ("anna".into(), d("0.333333333333")),
            ("ben".into(), d("0.666666666667")),
        ]
    );
    // and the commission of $9.00 splits $3.00 / $6.00
    let parts: Vec<Decimal> = amounts(&engine, EntryKind::Accrual);
    assert_eq!(parts, vec![d("3.00"), d("6.00")]);
}

#[test]
fn split_commission_parts_sum_exactly_to_the_unsplit_amount() {
    // given a flat $1.00 per order and 10% of $100.01, split three ways
    let program = program()
        .campaign(
            campaign("c1")
                .model(Model::Linear)
                .plan(cps_flat("flat", "1.00"))
                .plan(cps_percent("rev", "0.10")),
        )
        .creators(&["anna", "ben", "cleo"])
        .link("L-anna", "anna", "c1")
        .link("L-ben", "ben", "c1")
        .link("L-cleo", "cleo", "c1")
        .build();
    let mut events = journey(&["L-anna", "L-ben", "L-cleo"]);
    events.pop();
    events.push(Ev::order("o1", t(3 * 3600), "v1", "order-1", "100.01"));
    let engine = run(program, events);
    let by_plan = |plan: &str| -> Vec<(String, Decimal)> {
        engine
            .entries
            .iter()
            .filter(|e| e.plan.as_ref().is_some_and(|p| p.as_str() == plan))
            .map(|e| (e.creator.to_string(), e.amount.amount))
            .collect()
    };
    // then the remainder goes to the last share
    assert_eq!(
        by_plan("flat"),
        vec![
            ("anna".into(), d("0.33")),
            ("ben".into(), d("0.33")),
            ("cleo".into(), d("0.34"))
        ]
    );
    // 10% of 100.01 is 10.001, rounded to 10.00 before the split
    let rev = by_plan("rev");
    assert_eq!(rev.iter().map(|r| r.1).sum::<Decimal>(), d("10.00"));
    assert_eq!(rev[2].1, d("3.34"));
}

#[test]
fn self_referral_is_flagged_and_earns_nothing() {
    let program = program()
        .campaign(campaign("c1").plan(cps_percent("rev", "0.10")))
        .creator_with("anna", &["cust-anna"], &["hash-anna"])
        .creators(&["ben"])
        .link("L-anna", "anna", "c1")
        .link("L-ben", "ben", "c1")
        .build();
    let engine = run(
        program,
        [
            // anna buys through her own link, by customer id
            Ev::click("c1", t(0), "v1", "L-anna"),
            Ev::order("o1", t(60), "v1", "order-1", "100.00").customer("cust-anna"),
            // and by email hash
            Ev::click("c2", t(100), "v2", "L-anna"),
            Ev::order("o2", t(160), "v2", "order-2", "100.00").email("hash-anna"),
            // anna buys through ben's link: not a self-referral for ben
            Ev::click("c3", t(200), "v3", "L-ben"),
            Ev::order("o3", t(260), "v3", "order-3", "100.00").customer("cust-anna"),
        ],
    );
    let flagged: Vec<(String, Option<FraudReason>)> = engine
        .credits
        .iter()
        .filter(|c| c.kind.name() == "order")
        .map(|c| (c.creator.to_string(), c.fraud))
        .collect();
    assert_eq!(
        flagged,
        vec![
            ("anna".into(), Some(FraudReason::SelfReferral)),
            ("anna".into(), Some(FraudReason::SelfReferral)),
            ("ben".into(), None),
        ]
    );
    assert_eq!(net_for(&engine, "anna"), Decimal::ZERO);
    assert_eq!(net_for(&engine, "ben"), d("10.00"));
    assert_eq!(
        engine.counts.flagged.get(&FraudReason::SelfReferral),
        Some(&2)
    );
    let why = explanation(&engine, "order-1");
    assert!(
        why.fraud_checks
            .iter()
            .any(|c| c.check == FraudReason::SelfReferral && !c.passed)
    );
}

#[test]
fn a_click_flood_from_one_ip_is_flagged_and_earns_nothing() {
    // given at most 3 clicks per IP hash per minute
    let program = program()
        .campaign(
            campaign("c1")
                .plan(cpc("cpc", "0.10"))
                .plan(cps_percent("rev", "0.10")),
        )
        .creators(&["anna"])
        .link("L-anna", "anna", "c1")
        .settings(|s| s.click_flood_per_minute = 3)
        .build();
    // when 5 visitors click from one IP within a minute, and the 4th orders
    let mut events: Vec<Ev> = (1..=5)
        .map(|i| Ev::click(&format!("c{i}"), t(i * 5), &format!("v{i}"), "L-anna").ip("ip-1"))
        .collect();
    events.push(Ev::order("o4", t(600), "v4", "order-4", "100.00"));
    // and the next minute, the same IP clicks again
    events.push(Ev::click("c6", t(65), "v6", "L-anna").ip("ip-1"));
    let engine = run(program, events);
    // then clicks 4 and 5 are flagged, pay nothing, and the order is unattributed
    assert_eq!(
        engine.counts.flagged.get(&FraudReason::ClickFlood),
        Some(&2)
    );
    assert_eq!(
        amounts(&engine, EntryKind::Accrual).len(),
        4,
        "3 + 1 paid clicks"
    );
    assert!(shares_of(&engine, "order-4").is_empty());
    let why = explanation(&engine, "order-4");
    assert_eq!(why.candidates[0].reason, Some("click_flood"));
}

#[test]
fn a_conversion_within_3_seconds_of_its_click_is_not_credited_to_it() {
    let program = one_campaign(campaign("c1").plan(cps_percent("rev", "0.10")));
    let engine = run(
        program,
        [
            Ev::click("c1", t(0), "v1", "L-anna"),
            Ev::order("o1", t(0).plus(Duration(2_999)), "v1", "order-1", "100.00"),
            Ev::click("c2", t(100), "v2", "L-anna"),
            Ev::order("o2", t(103), "v2", "order-2", "100.00"),
        ],
    );
    assert!(shares_of(&engine, "order-1").is_empty());
    let why = explanation(&engine, "order-1");
    assert_eq!(why.candidates[0].reason, Some("too_fast"));
    assert!(
        why.fraud_checks
            .iter()
            .any(|c| c.check == FraudReason::TooFast && !c.passed)
    );
    // 3 seconds exactly is fine
    assert_eq!(
        shares_of(&engine, "order-2"),
        vec![("anna".into(), Decimal::ONE)]
    );
}

#[test]
fn a_duplicate_order_id_is_flagged_and_earns_once() {
    let program = one_campaign(campaign("c1").plan(cps_percent("rev", "0.10")));
    let engine = run(
        program,
        [
            Ev::click("c1", t(0), "v1", "L-anna"),
            Ev::order("o1", t(60), "v1", "order-1", "100.00"),
            // the same order id under another event id
            Ev::order("o1-again", t(120), "v1", "order-1", "100.00"),
        ],
    );
    assert_eq!(
        engine.counts.flagged.get(&FraudReason::DuplicateOrder),
        Some(&1)
    );
    assert_eq!(amounts(&engine, EntryKind::Accrual), vec![d("10.00")]);
}

#[test]
fn a_repeated_event_id_has_no_effect() {
    let program = one_campaign(
        campaign("c1")
            .plan(cpc("cpc", "0.10"))
            .plan(cps_percent("rev", "0.10")),
    );
    let once = [
        Ev::click("c1", t(0), "v1", "L-anna"),
        Ev::order("o1", t(60), "v1", "order-1", "100.00"),
        Ev::refund("r1", t(3600), "order-1", Some("50.00")),
        Ev::engagement("e1", t(4000), "anna", "c1", "p1", [10, 1, 0, 0]),
    ];
    let baseline = run(program.clone(), once.clone());
    // when every event is sent again right away, and once more two days later
    let mut engine = Engine::new(ProgramHistory::single(program));
    for e in once.iter().chain(once.iter()) {
        engine.push(e.event());
    }
    engine.advance(day(2));
    for e in &once {
        engine.push(e.event());
    }
    engine.finish();
    // then nothing changes but the duplicate count
    assert_eq!(engine.counts.duplicates, 8);
    assert_eq!(engine.entries, baseline.entries);
    assert_eq!(engine.credits, baseline.credits);
    assert_eq!(engine.kpis, baseline.kpis);
}

#[test]
fn a_late_click_within_the_grace_period_still_counts() {
    let program = one_campaign(campaign("c1").plan(cps_percent("rev", "0.10")));
    let mut engine = Engine::new(ProgramHistory::single(program));
    // given an order at t=100 read before its click
    engine.push(Ev::order("o1", t(100), "v1", "order-1", "100.00").event());
    // when event time reaches t=109 (within the default 10 s grace) and the click arrives
    engine.advance(t(109));
    engine.push(Ev::click("c1", t(90), "v1", "L-anna").event());
    engine.finish();
    // then the order is credited to the click
    assert_eq!(
        shares_of(&engine, "order-1"),
        vec![("anna".into(), Decimal::ONE)]
    );
}

#[test]
fn a_click_later_than_the_grace_period_does_not_count() {
    let program = one_campaign(campaign("c1").plan(cps_percent("rev", "0.10")));
    let mut engine = Engine::new(ProgramHistory::single(program));
    engine.push(Ev::order("o1", t(100), "v1", "order-1", "100.00").event());
    // when event time passes t=110 (grace over) before the click arrives
    engine.advance(t(110));
    engine.push(Ev::click("c1", t(90), "v1", "L-anna").event());
    engine.finish();
    // then the order stays unattributed
    assert!(shares_of(&engine, "order-1").is_empty());
    assert_eq!(engine.counts.unattributed, 1);
}

#[test]
fn a_conversion_is_judged_by_the_config_version_in_force_at_its_event_time() {
    // given v1 pays 10%; v2, in force from day 10, pays 20% and moves anna's link to ben
    let v1 = one_campaign(campaign("c1").plan(cps_percent("rev", "0.10")));
    let v2 = program()
        .version(2, day(10))
        .campaign(campaign("c1").plan(cps_percent("rev", "0.20")))
        .creators(&["anna", "ben", "cleo"])
        .link("L-anna", "ben", "c1")
        .build();
    let mut history = ProgramHistory::single(v1);
    history.insert(v2);
    // when an order of day 5 is processed with both versions known, and another on day 12
    let engine = run_history(
        history,
        [
            Ev::click("c1", day(5), "v1", "L-anna"),
            Ev::order(
                "o1",
                day(5).plus(Duration::minutes(1)),
                "v1",
                "order-1",
                "100.00",
            ),
            Ev::click("c2", day(12), "v2", "L-anna"),
            Ev::order(
                "o2",
                day(12).plus(Duration::minutes(1)),
                "v2",
                "order-2",
                "100.00",
            ),
            // and the first order is refunded under v2
            Ev::refund("r1", day(13), "order-1", None),
        ],
    );
    // then the day-5 order is anna's at 10% (v1) and the day-12 order ben's at 20% (v2)
    assert_eq!(
        shares_of(&engine, "order-1"),
        vec![("anna".into(), Decimal::ONE)]
    );
    assert_eq!(
        shares_of(&engine, "order-2"),
        vec![("ben".into(), Decimal::ONE)]
    );
    assert_eq!(explanation(&engine, "order-1").config_version, 1);
    assert_eq!(explanation(&engine, "order-2").config_version, 2);
    assert_eq!(
        amounts(&engine, EntryKind::Accrual),
        vec![d("10.00"), d("20.00")]
    );
    // and the refund reverses what v1 accrued, not what v2 would pay
    assert_eq!(amounts(&engine, EntryKind::Reversal), vec![d("-10.00")]);
}

#[test]
fn the_explanation_records_candidates_rule_fraud_checks_and_config_version() {
    let program = one_campaign(
        campaign("c1")
            .lookback(days(7))
            .plan(cps_percent("rev", "0.10")),
    );
    let engine = run(
        program,
        [
            Ev::click("c-old", day(0), "v1", "L-ben"),
            Ev::click("c-anna", day(8), "v1", "L-anna"),
            Ev::click("c-cleo", day(9), "v1", "L-cleo"),
            Ev::order("o1", day(9).plus(Duration(1000)), "v1", "order-1", "100.00"),
        ],
    );
    let why = explanation(&engine, "order-1");
    assert_eq!(why.config_version, 1);
    assert_eq!(why.event.as_str(), "o1");
    assert_eq!(
        why.rule,
        Rule::Model {
            model: "last_click",
            campaign: payoff_core::ids::CampaignId::new("c1"),
            lookback: days(7),
        }
    );
    let candidates: Vec<(&str, bool, Option<&str>, Option<Decimal>)> = why
        .candidates
        .iter()
        .map(|c| (c.click.as_str(), c.eligible, c.reason, c.share))
        .collect();
    assert_eq!(
        candidates,
        vec![
            ("c-old", false, Some("outside_lookback"), None),
            ("c-anna", true, None, Some(Decimal::ONE)),
            ("c-cleo", false, Some("too_fast"), None),
        ]
    );
    let checks: Vec<(FraudReason, bool)> = why
        .fraud_checks
        .iter()
        .map(|c| (c.check, c.passed))
        .collect();
    assert_eq!(
        checks,
        vec![
            (FraudReason::SelfReferral, true),
            (FraudReason::TooFast, false)
        ]
    );
    // the too-fast click is excluded, so anna (the latest eligible click) earns it
    assert_eq!(
        shares_of(&engine, "order-1"),
        vec![("anna".into(), Decimal::ONE)]
    );
    assert_eq!(
        engine
            .credits
            .iter()
            .find(|c| c.kind.name() == "order")
            .map(|c| c.creator.clone()),
        Some(CreatorId::new("anna"))
    );
}

/// A jump in event time (a quiet shop, then a busy day weeks later) releases the events
/// held before it: they are decided with everything their lookback needs, not with the
/// state already expired up to the new watermark.
#[test]
fn events_released_by_a_jump_in_time_still_see_their_clicks() {
    let engine = run(
        four_creators(Model::LastClick),
        [
            Ev::click("c0", t(0), "v1", "L-ben"),
            Ev::order("o1", t(2 * 3600), "v1", "order-1", "100.00"),
            // 48 days later: the click and the order are released by this event.
            Ev::click("c9", t(48 * 86_400), "v2", "L-anna"),
        ],
    );
    assert_eq!(
        shares_of(&engine, "order-1"),
        [("ben".to_owned(), Decimal::ONE)]
    );
}
