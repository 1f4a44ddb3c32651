//! The ledger's fold against the offline engine (what `payoff replay` runs): however the
//! attributor tasks' credits interleave in a `credits` partition, the fold releases them
//! in the engine's order and books exactly the engine's entries.

use payoff_adapters::progress::Progress;
use payoff_core::{
    engine::Engine,
    ids::TenantId,
    ledger::{LedgerEntry, LedgerFact},
};
use payoff_ledger::fold::{Fold, Folded, Programs};
use payoff_proto::convert;
use payoff_tests::scenario::{self, Options, Scenario};
use proptest::prelude::*;

const SOURCES: u32 = 4;

fn engine_of(scenario: &Scenario) -> Engine {
    let mut engine = Engine::new(scenario.programs());
    for e in scenario.core_events() {
        engine.push(e);
    }
    engine.finish();
    engine
}

fn programs_of(scenario: &Scenario) -> Programs {
    let mut programs = Programs::default();
    programs.insert(tenant(), convert::program(&scenario.program).unwrap());
    programs
}

fn tenant() -> TenantId {
    TenantId::parse("tenant", scenario::TENANT).unwrap()
}

fn entries(folded: &[Folded]) -> Vec<LedgerEntry> {
    let mut out: Vec<LedgerEntry> = folded
        .iter()
        .flat_map(|f| f.facts.iter())
        .filter_map(|fact| match fact {
            LedgerFact::Entry(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    out.sort_by_key(|e| (e.occurred_at, e.id));
    out
}

/// Feeds the engine's credits as `SOURCES` attributor tasks would: each task's credits
/// in the engine's order, each followed by its progress marker; the tasks interleaved by
/// `turns` (which task goes next), then each task's final marker.
fn feed(scenario: &Scenario, engine: &Engine, assign: &[u8], turns: &[u8]) -> Vec<Folded> {
    let programs = programs_of(scenario);
    let mut queues: Vec<std::collections::VecDeque<_>> = vec![Default::default(); SOURCES as usize];
    for (i, credit) in engine.credits.iter().enumerate() {
        let source =
            assign.get(i % assign.len().max(1)).copied().unwrap_or(0) as usize % SOURCES as usize;
        queues[source].push_back(credit.clone());
    }
    let marker = |source: u32, before: i64| Progress {
        tenant: scenario::TENANT.into(),
        source,
        sources: SOURCES,
        before,
    };
    let mut fold = Fold::new();
    let mut out = Vec::new();
    let mut turn = turns.iter().cycle();
    while queues.iter().any(|q| !q.is_empty()) {
        let pick = *turn.next().unwrap_or(&0) as usize % SOURCES as usize;
        let source = (0..SOURCES as usize)
            .map(|k| (pick + k) % SOURCES as usize)
            .find(|s| !queues[*s].is_empty())
            .unwrap();
        let credit = queues[source].pop_front().unwrap();
        let at = credit.occurred_at.millis();
        fold.credit(&programs, tenant(), credit, &mut out);
        fold.progress(&programs, &marker(source as u32, at), &mut out);
    }
    for s in 0..SOURCES {
        fold.progress(&programs, &marker(s, i64::MAX), &mut out);
    }
    assert_eq!(
        fold.held(),
        0,
        "everything is released once every task is done"
    );
    out
}

#[test]
fn a_generated_scenario_books_the_engines_entries() {
    let scenario = scenario::generate(Options {
        seed: 11,
        visitors: 300,
        sentinels: 0,
    });
    let engine = engine_of(&scenario);
    assert!(
        engine.entries.len() > 100,
        "the scenario books something: {}",
        engine.entries.len()
    );
    let folded = feed(
        &scenario,
        &engine,
        &[0, 1, 2, 3, 1, 1, 0],
        &[3, 2, 2, 1, 0, 0, 0, 3],
    );
    let mut want = engine.entries.clone();
    want.sort_by_key(|e| (e.occurred_at, e.id));
    assert_eq!(entries(&folded), want);
    let seqs: Vec<u64> = folded.iter().map(|f| f.seq).collect();
    assert_eq!(
        seqs,
        (0..folded.len() as u64).collect::<Vec<_>>(),
        "sequence numbers are dense"
    );
    let skipped = folded.iter().filter(|f| f.skipped.is_some()).count() as u64;
    assert_eq!(
        skipped,
        engine.counts.ledger_skipped.values().sum::<u64>(),
        "the engine skips the same credits"
    );
    // The scenario's click that arrives after the grace period: folded on arrival, as the
    // engine does; nothing else is late.
    let late: Vec<&str> = folded
        .iter()
        .filter(|f| f.late)
        .map(|f| f.input.name())
        .collect();
    assert!(
        late.iter().all(|k| *k == "click") && late.len() <= 2,
        "late: {late:?}"
    );
}

#[test]
fn credits_are_held_until_every_task_has_passed_them() {
    let scenario = scenario::generate(Options {
        seed: 3,
        visitors: 40,
        sentinels: 0,
    });
    let engine = engine_of(&scenario);
    let programs = programs_of(&scenario);
    let mut fold = Fold::new();
    let mut out = Vec::new();
    let first = engine.credits[0].clone();
    let at = first.occurred_at.millis();
    fold.credit(&programs, tenant(), first, &mut out);
    for s in 0..SOURCES - 1 {
        fold.progress(
            &programs,
            &Progress {
                tenant: scenario::TENANT.into(),
                source: s,
                sources: SOURCES,
                before: at + 1,
            },
            &mut out,
        );
    }
    assert!(out.is_empty(), "one task has not reported yet");
    let last = Progress {
        tenant: scenario::TENANT.into(),
        source: SOURCES - 1,
        sources: SOURCES,
        before: at,
    };
    fold.progress(&programs, &last, &mut out);
    assert!(
        out.is_empty(),
        "a marker at the credit's own time does not pass it"
    );
    fold.progress(
        &programs,
        &Progress {
            before: at + 1,
            ..last
        },
        &mut out,
    );
    assert_eq!(out.len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any split of the credits over the tasks, any interleaving: the same entries.
    #[test]
    fn any_interleaving_books_the_same_entries(
        assign in proptest::collection::vec(any::<u8>(), 1..16),
        turns in proptest::collection::vec(any::<u8>(), 1..16),
    ) {
        let scenario = scenario::generate(Options { seed: 5, visitors: 120, sentinels: 0 });
        let engine = engine_of(&scenario);
        let folded = feed(&scenario, &engine, &assign, &turns);
        let mut want = engine.entries.clone();
        want.sort_by_key(|e| (e.occurred_at, e.id));
        prop_assert_eq!(entries(&folded), want);
    }
}
