//! §7 ledger: reversals, clawbacks, net tier progress and milestone reversals.

mod common;

use common::*;
use payoff_core::{
    attribution::Skip,
    engine::Engine,
    ids::{CampaignId, CreatorId, RecordId},
    ledger::{EntryKind, LedgerInput},
    money::Money,
    program::ProgramHistory,
    projection::{self, EntryStatus},
    time::Duration,
};
use rust_decimal::Decimal;

/// One order of `amount` through anna's link at `t(60)`, then `refunds` (amount or whole).
fn order_then_refunds(
    program: payoff_core::program::Program,
    amount: &str,
    refunds: &[(Duration, Option<&str>)],
) -> Engine {
    let mut events = vec![
        Ev::click("c1", t(0), "v1", "L-anna"),
        Ev::order("o1", t(60), "v1", "order-1", amount),
    ];
    for (i, (after, part)) in refunds.iter().enumerate() {
        events.push(Ev::refund(
            &format!("r{i}"),
            t(60).plus(*after),
            "order-1",
            *part,
        ));
    }
    run(program, events)
}

fn ten_percent() -> payoff_core::program::Program {
    one_campaign(campaign("c1").plan(cps_percent("rev", "0.10")))
}

#[test]
fn a_partial_refund_reverses_the_same_fraction_exact_to_the_cent() {
    // given 10% of $99.99 = $10.00 (9.999 rounded half to even)
    // when a third of the order ($33.33) is refunded
    let engine = order_then_refunds(ten_percent(), "99.99", &[(days(1), Some("33.33"))]);
    // then a third of $10.00 is reversed: $3.33
    assert_eq!(amounts(&engine, EntryKind::Accrual), vec![d("10.00")]);
    assert_eq!(amounts(&engine, EntryKind::Reversal), vec![d("-3.33")]);
    // and a quarter of $80 → a quarter of $8.00
    let engine = order_then_refunds(ten_percent(), "80.00", &[(days(1), Some("20.00"))]);
    assert_eq!(amounts(&engine, EntryKind::Reversal), vec![d("-2.00")]);
}

#[test]
fn two_partial_refunds_then_the_rest_sum_exactly_to_the_accrual() {
    // given $9.00 accrued on a $90 order
    // when it is refunded $30, $30, then the rest
    let engine = order_then_refunds(
        ten_percent(),
        "90.00",
        &[
            (days(1), Some("30.00")),
            (days(2), Some("30.00")),
            (days(3), None),
        ],
    );
    // then the reversals add up to exactly the accrual
    assert_eq!(
        amounts(&engine, EntryKind::Reversal),
        vec![d("-3.00"), d("-3.00"), d("-3.00")]
    );
    assert_eq!(net_for(&engine, "anna"), Decimal::ZERO);
}

#[test]
fn refunding_an_order_in_three_thirds_reverses_all_of_it() {
    // given $9.00 accrued on a $90 order, tier progress 1
    // when it is refunded $30 three times (fractions that are not exact decimals)
    let engine = order_then_refunds(
        ten_percent(),
        "90.00",
        &[
            (days(1), Some("30.00")),
            (days(2), Some("30.00")),
            (days(3), Some("30.00")),
            (days(4), Some("1.00")),
        ],
    );
    // then all of it is reversed, the order no longer counts, and a further refund is
    // refused as already reversed
    assert_eq!(net_for(&engine, "anna"), Decimal::ZERO);
    let report = engine.report(day(3).plus(days(1)).minus(Duration(1)));
    assert_eq!(report.tier_progress[0].orders, 0);
    assert_eq!(report.tier_progress[0].revenue, Decimal::ZERO);
    assert_eq!(engine.counts.skipped.get(&Skip::AlreadyReversed), Some(&1));
    let kpis = &report.kpis[&CampaignId::new("c1")].total.totals;
    assert_eq!(
        (kpis.orders, kpis.revenue, kpis.cost),
        (d("0"), d("0"), d("0"))
    );
}

#[test]
fn a_full_refund_reverses_the_accrual_exactly() {
    // given 15% of $33.33 = $5.00 (4.9995 rounded)
    let program = one_campaign(campaign("c1").plan(cps_percent("rev", "0.15")));
    let engine = order_then_refunds(program, "33.33", &[(days(1), None)]);
    let accrual = of_kind(&engine, EntryKind::Accrual)[0].clone();
    assert_eq!(accrual.amount.amount, d("5.00"));
    let reversal = of_kind(&engine, EntryKind::Reversal)[0].clone();
    assert_eq!(reversal.amount.amount, d("-5.00"));
    assert_eq!(reversal.refers_to, Some(accrual.id));
    assert_eq!(
        projection::statuses(&engine.entries, day(2))[&accrual.id],
        EntryStatus::Reversed
    );
}

#[test]
fn a_reversal_after_payout_is_a_clawback_linked_to_its_accrual() {
    // given $10 accrued with a 30-day hold, approved and paid out
    let program = ten_percent();
    let mut engine = Engine::new(ProgramHistory::single(program));
    engine.push(Ev::click("c1", t(0), "v1", "L-anna").event());
    engine.push(Ev::order("o1", t(60), "v1", "order-1", "100.00").event());
    engine.advance(day(31));
    let usd = currency("USD");
    engine.ledger_input(&LedgerInput::Payout {
        id: RecordId::new("payout-nov"),
        campaign: CampaignId::new("c1"),
        creator: CreatorId::new("anna"),
        amount: Money::new(d("10.00"), usd),
        at: day(31),
        note: "November statement".into(),
    });
    let accrual = of_kind(&engine, EntryKind::Accrual)[0].clone();
    assert_eq!(
        projection::statuses(&engine.entries, day(32))[&accrual.id],
        EntryStatus::Paid
    );
    let b = &projection::balances(&engine.entries, day(32))[0];
    assert_eq!(b.available.amount, Decimal::ZERO);
    // when the order is refunded after the payout
    engine.push(Ev::refund("r1", day(35), "order-1", None).event());
    engine.finish();
    // then the reversal refers to its accrual and to the refund, and the balance goes
    // negative: a clawback carried into the next statement
    let reversal = of_kind(&engine, EntryKind::Reversal)[0].clone();
    assert_eq!(reversal.amount.amount, d("-10.00"));
    assert_eq!(reversal.refers_to, Some(accrual.id));
    assert_eq!(reversal.order.as_ref().map(|o| o.as_str()), Some("order-1"));
    assert_eq!(reversal.occurred_at, day(35));
    let b = &projection::balances(&engine.entries, day(36))[0];
    assert_eq!(b.paid.amount, d("10.00"));
    assert_eq!(b.reversed.amount, d("10.00"));
    assert_eq!(b.approved.amount, Decimal::ZERO);
    assert_eq!(b.available.amount, d("-10.00"));
    // as of before the refund, the balance is as it stood
    let before = &projection::balances(&engine.entries, day(34))[0];
    assert_eq!(before.available.amount, Decimal::ZERO);
}

#[test]
fn tier_progress_counts_net_orders_after_refunds() {
    // given 10% for orders 1–2 and 15% from the 3rd
    let program =
        one_campaign(campaign("c1").plan(tiered_by_count("tier", &[(1, "0.10"), (3, "0.15")])));
    let mut events = orders_via_link("L-anna", t(0), 2, "100.00");
    // when the 2nd order is refunded, then a third order comes
    events.push(Ev::refund("r2", t(3 * 3600), "o2", None));
    events.push(Ev::click("c3", t(4 * 3600), "v3", "L-anna"));
    events.push(Ev::order("e-o3", t(4 * 3600 + 60), "v3", "o3", "100.00"));
    let engine = run(program, events);
    // then the third order is only the 2nd net order: 10%
    assert_eq!(
        amounts(&engine, EntryKind::Accrual),
        vec![d("10.00"), d("10.00"), d("10.00")]
    );
    let progress = &engine.report(day(1)).tier_progress[0];
    assert_eq!(progress.orders, 2);
    assert_eq!(progress.revenue, d("200.00"));
    // the next order is the 3rd: it would earn 15%, the last tier
    assert_eq!(progress.current_rate, Some(d("0.15")));
    assert_eq!(progress.next_threshold, None);
}

#[test]
fn a_milestone_lost_before_its_hold_ends_is_reversed_and_can_be_earned_again() {
    // given $50 at 3 orders, 30-day hold
    let program = one_campaign(campaign("c1").plan(milestones("ms", &[(3, "50.00")])));
    let mut events = orders_via_link("L-anna", t(0), 3, "100.00");
    // when an order is refunded on day 5 (count back to 2), then a 4th order comes
    events.push(Ev::refund("r1", day(5), "o1", None));
    events.push(Ev::click("c4", day(6), "v4", "L-anna"));
    events.push(Ev::order(
        "e-o4",
        day(6).plus(Duration::minutes(1)),
        "v4",
        "o4",
        "100.00",
    ));
    let engine = run(program, events);
    // then the bonus is reversed, referring to it, then earned again once
    let bonuses = of_kind(&engine, EntryKind::Bonus);
    assert_eq!(bonuses.len(), 2);
    assert_ne!(bonuses[0].id, bonuses[1].id);
    let lost = of_kind(&engine, EntryKind::BonusReversal);
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].amount.amount, d("-50.00"));
    assert_eq!(lost[0].refers_to, Some(bonuses[0].id));
    assert_eq!(sum_for(&engine, "anna", EntryKind::Bonus), d("100.00"));
    assert_eq!(net_for(&engine, "anna"), d("50.00"));
}

#[test]
fn a_milestone_lost_after_its_hold_ended_is_kept() {
    // given $50 at 3 orders with a 7-day hold
    let program =
        one_campaign(campaign("c1").plan(milestones("ms", &[(3, "50.00")]).hold(days(7))));
    let mut events = orders_via_link("L-anna", t(0), 3, "100.00");
    // when an order is refunded on day 20
    events.push(Ev::refund("r1", day(20), "o1", None));
    let engine = run(program, events);
    // then the bonus stands
    assert_eq!(amounts(&engine, EntryKind::Bonus), vec![d("50.00")]);
    assert!(of_kind(&engine, EntryKind::BonusReversal).is_empty());
    assert_eq!(engine.report(day(21)).tier_progress[0].orders, 2);
}

#[test]
fn marginal_tier_rates_are_never_re_rated_on_refund() {
    // given 10% for orders 1–2, 20% from the 3rd
    let program =
        one_campaign(campaign("c1").plan(tiered_by_count("tier", &[(1, "0.10"), (3, "0.20")])));
    let mut events = orders_via_link("L-anna", t(0), 3, "100.00");
    // when the first order is refunded, then the third
    events.push(Ev::refund("r1", day(1), "o1", None));
    events.push(Ev::refund("r3", day(2), "o3", None));
    let engine = run(program, events);
    // then each refund reverses its own accrual at the rate it was accrued
    assert_eq!(
        amounts(&engine, EntryKind::Accrual),
        vec![d("10.00"), d("10.00"), d("20.00")]
    );
    assert_eq!(
        amounts(&engine, EntryKind::Reversal),
        vec![d("-10.00"), d("-20.00")]
    );
    assert_eq!(net_for(&engine, "anna"), d("10.00"));
}

#[test]
fn a_lead_rejected_twice_is_reversed_and_counted_once() {
    let program = one_campaign(campaign("c1").plan(cpl("cpl", "5.00", false)));
    let engine = run(
        program,
        [
            Ev::click("c1", t(0), "v1", "L-anna"),
            Ev::signup("s1", t(60), "v1", "lead-1"),
            Ev::lead_status("st1", t(3600), "lead-1", false),
            Ev::lead_status("st2", t(7200), "lead-1", false),
        ],
    );
    assert_eq!(amounts(&engine, EntryKind::Reversal), vec![d("-5.00")]);
    let kpis = &engine.report(day(1)).kpis[&CampaignId::new("c1")]
        .total
        .totals;
    assert_eq!(kpis.leads, Decimal::ZERO);
}

#[test]
fn a_refund_after_the_campaign_left_the_program_still_reverses() {
    // given v1 with campaign c1 at 10%; v2, from day 10, no longer has c1
    let v1 = ten_percent();
    let v2 = program()
        .version(2, day(10))
        .campaign(campaign("c2").plan(cps_percent("rev", "0.10")))
        .creators(&["anna"])
        .build();
    let mut history = ProgramHistory::single(v1);
    history.insert(v2);
    // when a day-5 order is refunded on day 12
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
            Ev::refund("r1", day(12), "order-1", None),
        ],
    );
    // then the correction is judged by the version that priced the order: it reverses
    assert_eq!(amounts(&engine, EntryKind::Accrual), vec![d("10.00")]);
    assert_eq!(amounts(&engine, EntryKind::Reversal), vec![d("-10.00")]);
    assert!(engine.counts.ledger_skipped.is_empty());
    let reversal = engine.credits.iter().find(|c| c.kind.name() == "reversal");
    assert_eq!(reversal.map(|c| c.config_version), Some(1));
}

#[test]
fn a_refund_resent_after_the_dedupe_window_has_no_effect() {
    let mut engine = Engine::new(ProgramHistory::single(ten_percent()));
    // given $10 accrued and half of the order refunded
    engine.push(Ev::click("c1", t(0), "v1", "L-anna").event());
    engine.push(Ev::order("o1", t(60), "v1", "order-1", "100.00").event());
    engine.push(Ev::refund("r1", day(1), "order-1", Some("50.00")).event());
    // when event time moves on past the attributor's retention (other traffic goes on)
    // and r1 is sent again
    engine.push(Ev::click("c2", day(45), "v2", "L-ben").event());
    engine.advance(day(45).plus(Duration::minutes(1)));
    engine.push(Ev::refund("r1", day(1), "order-1", Some("50.00")).event());
    // and then the rest is refunded
    engine.push(Ev::refund("r2", day(46), "order-1", None).event());
    engine.finish();
    // then the resent refund changed nothing, and the rest reverses the other half
    assert_eq!(
        amounts(&engine, EntryKind::Reversal),
        vec![d("-5.00"), d("-5.00")]
    );
    assert_eq!(net_for(&engine, "anna"), Decimal::ZERO);
    assert_eq!(engine.counts.duplicates, 1);
}
