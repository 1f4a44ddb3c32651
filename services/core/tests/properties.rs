//! Invariants of the whole engine over random, realistic scenarios (proptest).
//!
//! A scenario is one program (two campaigns, three creators, six links, promo codes, every
//! plan kind, random attribution models) and a timeline of clicks, signups, orders,
//! refunds, lead statuses and engagement snapshots over a few days, built as `RawEvent`s
//! and validated like any client input.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use payoff_core::{
    attribution::{self, AttributionState, ConversionKey, ConversionRecord, Fact},
    credit::CreditKind,
    engine::{Engine, Report},
    event::{Event, Payload, RawEvent},
    ids::{CampaignId, CreatorId},
    ledger::{self, Book, EntryKind, LedgerFact, LedgerInput},
    program::{Model, Program, ProgramHistory},
    time::{Duration, PeriodKind, Timestamp},
};
use proptest::prelude::*;
use rust_decimal::Decimal;

const GRACE: Duration = Duration::seconds(10);

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// One event of a scenario, before ids and times are attached.
#[derive(Debug, Clone)]
enum Spec {
    Click {
        visitor: u8,
        link: u8,
        ip: u8,
    },
    Signup {
        visitor: u8,
        lead: u8,
        code: Option<u8>,
    },
    Order {
        visitor: u8,
        order: u8,
        cents: u32,
        code: Option<u8>,
        renewal_of: Option<u8>,
        customer: Option<u8>,
        shoes: bool,
    },
    Refund {
        order: u8,
        cents: Option<u32>,
    },
    LeadStatus {
        lead: u8,
        qualified: bool,
    },
    Engagement {
        creator: u8,
        campaign: u8,
        post: u8,
        views: u32,
        likes: u32,
    },
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        10 => (0..8u8, 0..6u8, 0..3u8).prop_map(|(visitor, link, ip)| Spec::Click { visitor, link, ip }),
        2 => (0..8u8, 0..4u8, proptest::option::weighted(0.3, 0..4u8))
            .prop_map(|(visitor, lead, code)| Spec::Signup { visitor, lead, code }),
        5 => (
            0..8u8,
            0..8u8,
            100..30_000u32,
            proptest::option::weighted(0.2, 0..4u8),
            proptest::option::weighted(0.15, 0..8u8),
            proptest::option::weighted(0.3, 0..10u8),
            any::<bool>(),
        )
            .prop_map(|(visitor, order, cents, code, renewal_of, customer, shoes)| Spec::Order {
                visitor, order, cents, code, renewal_of, customer, shoes,
            }),
        2 => (0..8u8, proptest::option::weighted(0.6, 1..20_000u32))
            .prop_map(|(order, cents)| Spec::Refund { order, cents }),
        1 => (0..4u8, any::<bool>()).prop_map(|(lead, qualified)| Spec::LeadStatus { lead, qualified }),
        1 => (0..3u8, 0..2u8, 0..2u8, 0..2_000u32, 0..200u32)
            .prop_map(|(creator, campaign, post, views, likes)| Spec::Engagement { creator, campaign, post, views, likes }),
    ]
}

/// The gap to the previous event: mostly seconds, sometimes minutes, rarely days.
fn gap() -> impl Strategy<Value = Duration> {
    prop_oneof![
        5 => (0..6_000i64).prop_map(Duration),
        3 => (0..600_000i64).prop_map(Duration),
        1 => (0..2 * 86_400_000i64).prop_map(Duration),
    ]
}

fn model() -> impl Strategy<Value = Model> {
    prop_oneof![
        Just(Model::LastClick),
        Just(Model::FirstClick),
        Just(Model::Linear),
        Just(Model::PositionBased),
        (1..72i64).prop_map(|h| Model::TimeDecay {
            half_life: Duration::hours(h)
        }),
    ]
}

const CREATORS: [&str; 3] = ["anna", "ben", "cleo"];
const CAMPAIGNS: [&str; 2] = ["c1", "c2"];
const CODES: [&str; 4] = ["A1", "B2", "C1", "NOPE"];

/// Two campaigns with every plan kind; `c1` pays a plain 10% (`rev`) for the split check.
fn scenario_program(m1: Model, m2: Model, c2_code_precedence: bool) -> Program {
    let mut c2 = campaign("c2")
        .model(m2)
        .plan(tiered_by_count("tier", &[(1, "0.05"), (3, "0.08")]))
        .plan(cpl("qual", "1.00", true))
        .plan(cpl("lead", "0.25", false))
        .plan(engagement("ppe", ["0.001", "0.01", "0", "0"], 100))
        .plan(cps_flat("flat", "2.00").cap_count(3).hold(days(1)));
    c2.period = PeriodKind::Week;
    if !c2_code_precedence {
        c2 = c2.codes_after_clicks();
    }
    let mut p = program()
        .campaign(
            campaign("c1")
                .model(m1)
                .plan(cps_percent("rev", "0.10"))
                .plan(cps_by_category("cat", "0", &[("shoes", "0.05")]).cap_amount("20"))
                .plan(cpc("cpc", "0.05").cap_count(5))
                .plan(milestones("ms", &[(3, "5.00"), (6, "10.00")]).hold(days(2)))
                .plan(base_fee("fee", "1.00"))
                .plan(cps_flat("newc", "0.50").new_customer_only().recurring(2)),
        )
        .campaign(c2)
        .creators(&["anna", "ben"])
        .creator_with("cleo", &["cust-9"], &[]);
    for (i, creator) in CREATORS.iter().enumerate() {
        for campaign in CAMPAIGNS {
            p = p.link(&format!("L{i}{campaign}"), creator, campaign);
        }
    }
    p.promo("A1", "anna", "c1")
        .promo("b2", "ben", "c2")
        .promo("C1", "cleo", "c1")
        .build()
}

fn to_raw(i: usize, at: Timestamp, spec: &Spec) -> Ev {
    let id = format!("e{i}");
    match spec {
        Spec::Click { visitor, link, ip } => {
            let link = format!("L{}{}", link / 2, CAMPAIGNS[usize::from(link % 2)]);
            Ev::click(&id, at, &format!("v{visitor}"), &link).ip(&format!("ip{ip}"))
        }
        Spec::Signup {
            visitor,
            lead,
            code,
        } => {
            let e = Ev::signup(&id, at, &format!("v{visitor}"), &format!("l{lead}"));
            match code {
                Some(c) => e.code(CODES[usize::from(*c)]),
                None => e,
            }
        }
        Spec::Order {
            visitor,
            order,
            cents,
            code,
            renewal_of,
            customer,
            shoes,
        } => {
            let amount = Decimal::new(i64::from(*cents), 2).to_string();
            let mut e = Ev::order(
                &id,
                at,
                &format!("v{visitor}"),
                &format!("o{order}"),
                &amount,
            );
            if let Some(c) = code {
                e = e.code(CODES[usize::from(*c)]);
            }
            if let Some(r) = renewal_of {
                e = e.renewal_of(&format!("o{r}"));
            }
            if let Some(c) = customer {
                e = e.customer(&format!("cust-{c}"));
            }
            if *shoes {
                let half = Decimal::new(i64::from(*cents / 2), 2).to_string();
                e = e.line("s1", "shoes", 1, &half).line("h1", "hats", 1, &half);
            }
            e
        }
        Spec::Refund { order, cents } => {
            let amount = cents.map(|c| Decimal::new(i64::from(c), 2).to_string());
            Ev::refund(&id, at, &format!("o{order}"), amount.as_deref())
        }
        Spec::LeadStatus { lead, qualified } => {
            Ev::lead_status(&id, at, &format!("l{lead}"), *qualified)
        }
        Spec::Engagement {
            creator,
            campaign,
            post,
            views,
            likes,
        } => Ev::engagement(
            &id,
            at,
            CREATORS[usize::from(*creator)],
            CAMPAIGNS[usize::from(*campaign)],
            &format!("p{post}"),
            [u64::from(*views), u64::from(*likes), 0, 0],
        ),
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    program: Program,
    /// Validated events, in event-time order.
    events: Vec<Event>,
}

impl Scenario {
    fn history(&self) -> ProgramHistory {
        ProgramHistory::single(self.program.clone())
    }

    /// Well after everything: every hold has ended.
    fn as_of(&self) -> Timestamp {
        self.events
            .last()
            .map_or(BASE, |e| e.occurred_at)
            .plus(days(60))
    }

    fn run(&self, arrivals: impl IntoIterator<Item = Event>) -> Engine {
        let mut engine = Engine::new(self.history());
        for e in arrivals {
            engine.push(e);
        }
        engine.finish();
        engine
    }
}

fn scenario(max_events: usize) -> impl Strategy<Value = Scenario> {
    (
        model(),
        model(),
        any::<bool>(),
        proptest::collection::vec((gap(), spec()), 1..max_events),
    )
        .prop_map(|(m1, m2, precedence, specs)| {
            let program = scenario_program(m1, m2, precedence);
            let mut at = BASE;
            let events = specs
                .iter()
                .enumerate()
                .map(|(i, (gap, spec))| {
                    at = at.plus(*gap);
                    let raw: RawEvent = to_raw(i, at, spec).0;
                    Event::validate(&raw, at).expect("generated events are valid")
                })
                .collect();
            Scenario { program, events }
        })
}

/// A scenario and an arrival order in which every event arrives within the grace period
/// of the latest event time seen so far: each event is delayed by less than the grace.
fn scenario_with_jittered_arrivals() -> impl Strategy<Value = (Scenario, Vec<usize>)> {
    scenario(40)
        .prop_flat_map(|s| {
            let n = s.events.len();
            (Just(s), proptest::collection::vec(0..GRACE.millis(), n))
        })
        .prop_map(|(s, jitter)| {
            let mut order: Vec<usize> = (0..s.events.len()).collect();
            order.sort_by_key(|&i| (s.events[i].occurred_at.millis() + jitter[i], jitter[i], i));
            (s, order)
        })
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn json(report: &Report) -> String {
    serde_json::to_string(report).expect("report serialises")
}

/// The report without the input counters (which count every event received).
fn outputs(report: &Report) -> serde_json::Value {
    let mut v = serde_json::to_value(report).expect("report serialises");
    v.as_object_mut().expect("object").remove("counts");
    v
}

/// The attributor's and ledger's state for the fact-log check, fed in release order.
#[derive(Default)]
struct Pipeline {
    attribution: AttributionState,
    index: HashMap<ConversionKey, ConversionRecord>,
    books: HashMap<(CampaignId, CreatorId), Book>,
}

#[derive(Debug, Clone, PartialEq)]
enum Logged {
    Attribution(Fact),
    Ledger((CampaignId, CreatorId), LedgerFact),
}

impl Pipeline {
    /// Decides and applies one event; returns the facts, in order.
    fn step(&mut self, programs: &ProgramHistory, event: &Event) -> Vec<Logged> {
        let facts = attribution::decide(&self.attribution, &self.index, programs, event);
        for f in &facts {
            attribution::apply(&mut self.attribution, f);
            attribution::apply_index(&mut self.index, f);
        }
        let mut inputs = Vec::new();
        if let Payload::Engagement(engagement) = &event.payload
            && !matches!(facts.first(), Some(Fact::Duplicate { .. }))
        {
            inputs.push(LedgerInput::Engagement {
                event: event.id.clone(),
                at: event.occurred_at,
                engagement: engagement.clone(),
            });
        }
        for f in &facts {
            if let Fact::Credited(c) = f {
                inputs.push(LedgerInput::Credit(c.clone()));
            }
        }
        let mut log: Vec<Logged> = facts.into_iter().map(Logged::Attribution).collect();
        for input in inputs {
            let (campaign, creator) = input.key();
            let key = (campaign.clone(), creator.clone());
            let book = self.books.entry(key.clone()).or_default();
            let Ok(facts) = ledger::decide(book, programs, &input) else {
                continue;
            };
            for f in &facts {
                ledger::apply(book, f);
            }
            log.extend(facts.into_iter().map(|f| Logged::Ledger(key.clone(), f)));
        }
        log
    }

    /// A fresh state rebuilt from a fact log alone.
    fn replay(log: &[Logged]) -> Self {
        let mut p = Self::default();
        for fact in log {
            match fact {
                Logged::Attribution(f) => {
                    attribution::apply(&mut p.attribution, f);
                    attribution::apply_index(&mut p.index, f);
                }
                Logged::Ledger(key, f) => ledger::apply(p.books.entry(key.clone()).or_default(), f),
            }
        }
        p
    }
}

/// Events in the reorder buffer's release order: time, type rank, id.
fn release_order(events: &[Event]) -> Vec<Event> {
    let mut sorted = events.to_vec();
    sorted.sort_by(|a, b| {
        (a.occurred_at, a.payload.rank(), &a.id).cmp(&(b.occurred_at, b.payload.rank(), &b.id))
    });
    sorted
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Same input, same output: two runs serialise to the same report, byte for byte,
    /// whatever the arrival order (here: a random one, late events included).
    #[test]
    fn same_input_gives_the_same_report(
        s in scenario(60),
        seed in proptest::collection::vec(any::<u32>(), 60),
    ) {
        let mut arrivals: Vec<Event> = s.events.clone();
        // a deterministic shuffle from the seed
        for i in (1..arrivals.len()).rev() {
            arrivals.swap(i, seed[i] as usize % (i + 1));
        }
        let a = s.run(arrivals.clone());
        let b = s.run(arrivals);
        prop_assert_eq!(json(&a.report(s.as_of())), json(&b.report(s.as_of())));
    }

    /// Any arrival order that keeps every event within the grace period of the latest
    /// event time seen gives the same credits, entries and report.
    #[test]
    fn arrival_order_within_grace_does_not_matter((s, order) in scenario_with_jittered_arrivals()) {
        let in_time = s.run(s.events.iter().cloned());
        let jittered = s.run(order.iter().map(|&i| s.events[i].clone()));
        prop_assert_eq!(&in_time.credits, &jittered.credits);
        prop_assert_eq!(&in_time.entries, &jittered.entries);
        prop_assert_eq!(json(&in_time.report(s.as_of())), json(&jittered.report(s.as_of())));
    }

    /// Re-sending any subset of events, at any later point, changes nothing but the
    /// duplicate count.
    #[test]
    fn duplicates_have_no_effect(
        s in scenario(50),
        resend in proptest::collection::vec((any::<proptest::sample::Index>(), any::<proptest::sample::Index>()), 0..20),
    ) {
        let once = s.run(s.events.iter().cloned());
        // each re-send: which event, and how many events later it arrives
        let n = s.events.len();
        let mut arrivals: Vec<(usize, usize, Event)> = s.events.iter().cloned().enumerate().map(|(i, e)| (i, 0, e)).collect();
        for (k, (which, delay)) in resend.iter().enumerate() {
            let i = which.index(n);
            let at = i + delay.index(n - i);
            arrivals.push((at, k + 1, s.events[i].clone()));
        }
        arrivals.sort_by_key(|(at, k, _)| (*at, *k));
        let again = s.run(arrivals.into_iter().map(|(_, _, e)| e));
        prop_assert_eq!(again.counts.duplicates, resend.len() as u64);
        prop_assert_eq!(&once.credits, &again.credits);
        prop_assert_eq!(&once.entries, &again.entries);
        prop_assert_eq!(outputs(&once.report(s.as_of())), outputs(&again.report(s.as_of())));
    }

    /// An order's accruals and the reversals of its full refund add up to exactly zero,
    /// whatever partial refunds came before.
    #[test]
    fn accrual_plus_full_refund_is_zero_per_order(s in scenario(50)) {
        let end = s.events.last().map_or(BASE, |e| e.occurred_at).plus(Duration::hours(1));
        let mut events = s.events.clone();
        for o in 0..8 {
            events.push(Ev::refund(&format!("full-{o}"), end, &format!("o{o}"), None).event());
        }
        let engine = s.run(events);
        let mut per_order: BTreeMap<String, Decimal> = BTreeMap::new();
        for e in &engine.entries {
            if let (Some(order), EntryKind::Accrual | EntryKind::Reversal) = (&e.order, e.kind) {
                *per_order.entry(order.to_string()).or_default() += e.amount.amount;
            }
        }
        for (order, net) in per_order {
            prop_assert_eq!(net, Decimal::ZERO, "order {}", order);
        }
        // and every credited order is out of tier progress
        for p in engine.report(end.plus(days(1))).tier_progress {
            prop_assert_eq!(p.orders, 0);
            prop_assert_eq!(p.revenue, Decimal::ZERO);
        }
    }

    /// Shares of a conversion sum to exactly one, and the parts of a split commission sum
    /// exactly to the unsplit amount.
    #[test]
    fn split_parts_sum_to_the_whole(s in scenario(60)) {
        let engine = s.run(s.events.iter().cloned());
        let mut shares: BTreeMap<String, Decimal> = BTreeMap::new();
        let mut unsplit: BTreeMap<String, Decimal> = BTreeMap::new();
        let mut flagged = std::collections::BTreeSet::new();
        for c in &engine.credits {
            let (key, net) = match &c.kind {
                // a split across campaigns pays each campaign's share under its own plans:
                // the whole is checked where every share is in `c1`
                CreditKind::Order { order, net, renewal, shares, .. } => (
                    format!("order {order}"),
                    (renewal.is_none() && shares.iter().all(|s| s.campaign.as_str() == "c1"))
                        .then_some(*net),
                ),
                CreditKind::Lead { lead, .. } => (format!("lead {lead}"), None),
                _ => continue,
            };
            *shares.entry(key.clone()).or_default() += c.kind.share();
            if c.fraud.is_some() {
                flagged.insert(key.clone());
            }
            if let Some(net) = net {
                unsplit.insert(key, net.currency.round(net.amount * Decimal::new(10, 2)));
            }
        }
        for (key, total) in &shares {
            prop_assert_eq!(*total, Decimal::ONE, "{}", key);
        }
        let mut paid: BTreeMap<String, Decimal> = BTreeMap::new();
        for e in engine.entries.iter().filter(|e| {
            e.kind == EntryKind::Accrual && e.plan.as_ref().is_some_and(|p| p.as_str() == "rev")
        }) {
            *paid.entry(format!("order {}", e.order.as_ref().expect("order"))).or_default() += e.amount.amount;
        }
        for (key, whole) in unsplit {
            if flagged.contains(&key) {
                continue;
            }
            prop_assert_eq!(paid.get(&key).copied().unwrap_or_default(), whole, "{}", key);
        }
    }

    /// Replaying the recorded facts of a prefix into a fresh state rebuilds a state that
    /// decides the rest exactly as the live one does.
    #[test]
    fn a_state_rebuilt_from_its_fact_log_decides_like_the_live_one(
        s in scenario(50),
        split in any::<proptest::sample::Index>(),
    ) {
        let programs = s.history();
        let events = release_order(&s.events);
        let k = split.index(events.len() + 1);
        let mut live = Pipeline::default();
        let mut log = Vec::new();
        for e in &events[..k] {
            log.extend(live.step(&programs, e));
        }
        let mut rebuilt = Pipeline::replay(&log);
        for e in &events[k..] {
            prop_assert_eq!(live.step(&programs, e), rebuilt.step(&programs, e));
        }
    }

    /// The report as of the time of event k equals a run over only the events up to then,
    /// and feeding the engine in two calls equals feeding it in one.
    #[test]
    fn the_report_as_of_a_past_instant_equals_a_run_up_to_it(
        s in scenario(50),
        split in any::<proptest::sample::Index>(),
    ) {
        let k = split.index(s.events.len());
        let as_of = s.events[k].occurred_at;
        let all = s.run(s.events.iter().cloned());
        let prefix = s.run(s.events.iter().filter(|e| e.occurred_at <= as_of).cloned());
        prop_assert_eq!(outputs(&all.report(as_of)), outputs(&prefix.report(as_of)));

        let mut two_calls = Engine::new(s.history());
        for e in &s.events[..k] {
            two_calls.push(e.clone());
        }
        for e in &s.events[k..] {
            two_calls.push(e.clone());
        }
        two_calls.finish();
        prop_assert_eq!(json(&all.report(s.as_of())), json(&two_calls.report(s.as_of())));
    }
}
