//! A generated, seeded scenario for pipeline tests: the example program
//! (`deploy/examples/program.json`: four campaigns, four models, links, promo codes) and
//! a stream of events in arrival order with everything the attributor must get right:
//! clicks on several campaigns, signups with lead status, orders (with promo codes,
//! line items, tax), full and partial refunds, resent duplicates, late clicks within the
//! grace period and after it, a click flood, and conversions too soon after their click.
//!
//! Lateness is built so that it means the same in one process as in partitioned
//! streaming: a click "late within grace" arrives right after the conversion it
//! precedes, long before anything a grace period newer; a click "late after grace"
//! arrives after a newer click of the same visitor (so the same partition has already
//! seen time move past the grace), never only after other visitors' events.
//!
//! [`Scenario::oracle`] runs the same events through the core's `Engine`: the credits a
//! streaming attributor must produce. The scenario ends with sentinel clicks far in the
//! future on many visitors (an unknown link: they credit nothing) so that every
//! partition's reorder buffer releases everything, as the engine's end of input does.

use std::path::PathBuf;

use payoff_adapters::topology::Topics;
use payoff_core::{
    credit::Credit,
    engine::Engine,
    event::{Event, RawEvent},
    program::ProgramHistory,
    time::Timestamp,
};
use payoff_proto::{convert, v1};
use serde_json::{Value, json};

/// The example program's tenant.
pub const TENANT: &str = "acme-beauty";
/// Salt the scenario hashes PII with (as ingest would).
pub const SALT: &[u8] = b"scenario-salt";

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// PRNG seed.
    pub seed: u64,
    /// Visitor journeys.
    pub visitors: usize,
    /// Sentinel visitors at the end (enough that every partition gets one).
    pub sentinels: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed: 7,
            visitors: 1_500,
            sentinels: 400,
        }
    }
}

/// A program and events in arrival order.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The program.
    pub program: v1::Program,
    /// Events in arrival order, tenant set and PII hashed (as ingest publishes them).
    pub events: Vec<v1::Event>,
}

/// SplitMix64: small, seeded, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// `deploy/examples/program.json`.
pub fn example_program() -> v1::Program {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/program.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Seconds from the scenario's start as RFC 3339.
fn at(sec: i64) -> String {
    let start = Timestamp::parse_rfc3339("2026-11-02T09:00:00Z")
        .unwrap_or_else(|| unreachable!("a valid instant"));
    Timestamp(start.millis() + sec * 1_000).to_string()
}

/// One event with its time (seconds) before arrival ordering.
struct Timed {
    sec: i64,
    /// Position tiebreak (creation order).
    n: usize,
    json: Value,
}

/// Generates a scenario.
pub fn generate(options: Options) -> Scenario {
    let program = example_program();
    let links: Vec<String> = program.links.iter().map(|l| l.code.clone()).collect();
    let codes: Vec<String> = program.promo_codes.iter().map(|c| c.code.clone()).collect();
    let mut rng = Rng(options.seed);
    let mut timed: Vec<Timed> = Vec::new();
    // Arrival-order insertions: (after event id, event) placed right after that event.
    let mut after: Vec<(String, Value)> = Vec::new();
    let mut next_id = 0usize;
    let mut id = |prefix: &str| {
        next_id += 1;
        format!("{prefix}-{next_id:06}")
    };
    let mut n = 0usize;
    let mut push = |timed: &mut Vec<Timed>, sec: i64, json: Value| {
        n += 1;
        timed.push(Timed { sec, n, json });
    };
    let day = 86_400;
    let span = 6 * day;
    for v in 0..options.visitors {
        let visitor = format!("visitor-{v:05}");
        let ip = format!("198.51.100.{}", v % 250);
        let start = rng.below(span as u64) as i64;
        let clicks = 1 + rng.below(3) as i64;
        let mut sec = start;
        let mut last_click = start;
        for _ in 0..clicks {
            let e = json!({
                "eventId": id("clk"),
                "occurredAt": at(sec),
                "context": {"ip": ip, "userAgent": "Mozilla/5.0"},
                "click": {"visitorId": visitor, "linkCode": rng.pick(&links),
                          "utm": {"source": "instagram"}},
            });
            push(&mut timed, sec, e);
            last_click = sec;
            sec += 60 + rng.below(6 * 3_600) as i64;
        }
        let roll = rng.below(100);
        if roll < 35 {
            // An order: mostly well after the last click; a few too soon (fraud).
            let too_fast = rng.chance(3);
            let order_sec = if too_fast {
                last_click + 1
            } else {
                last_click + 120 + rng.below(2 * day as u64) as i64
            };
            let order = format!("order-{v:05}");
            let cents = 1_500 + rng.below(30_000);
            let amount = format!("{}.{:02}", cents / 100, cents % 100);
            let mut o = json!({
                "visitorId": visitor,
                "orderId": order,
                "amount": {"amount": amount, "currency": "USD"},
                "lineItems": [{"sku": "sku-1", "category": if rng.chance(20) {"gift-cards"} else {"skincare"},
                               "quantity": 1, "unitPrice": amount}],
                "email": format!("user{v}@mail.example"),
            });
            if rng.chance(15) {
                o["promoCodes"] = json!([rng.pick(&codes).to_lowercase()]);
            }
            let order_id = id("ord");
            push(
                &mut timed,
                order_sec,
                json!({"eventId": order_id, "occurredAt": at(order_sec),
                       "customerId": format!("cust-{v:05}"), "order": o}),
            );
            if rng.chance(8) && !too_fast {
                // Late within grace: a click 30 s before the order, arriving right after it.
                after.push((
                    order_id.clone(),
                    json!({"eventId": id("late"), "occurredAt": at(order_sec - 30),
                           "context": {"ip": ip}, "click": {"visitorId": visitor, "linkCode": rng.pick(&links)}}),
                ));
            } else if rng.chance(8) && !too_fast {
                // Late after grace: a click 60 s before the order that arrives only after a
                // click of the same visitor 10 minutes after the order.
                let newer = id("clk");
                let newer_sec = order_sec + 600;
                push(
                    &mut timed,
                    newer_sec,
                    json!({"eventId": newer, "occurredAt": at(newer_sec),
                           "context": {"ip": ip}, "click": {"visitorId": visitor, "linkCode": rng.pick(&links)}}),
                );
                after.push((
                    newer,
                    json!({"eventId": id("toolate"), "occurredAt": at(order_sec - 60),
                           "context": {"ip": ip}, "click": {"visitorId": visitor, "linkCode": rng.pick(&links)}}),
                ));
            }
            if rng.chance(12) {
                // Refunds: one full, or one or two partial.
                let refund_sec = order_sec + 3_600 + rng.below(3 * day as u64) as i64;
                if rng.chance(50) {
                    push(
                        &mut timed,
                        refund_sec,
                        json!({"eventId": id("adj"), "occurredAt": at(refund_sec),
                               "adjustment": {"orderId": order, "kind": "ADJUSTMENT_KIND_REFUND"}}),
                    );
                } else {
                    let part = cents / 3;
                    for k in 0..(1 + rng.below(2) as i64) {
                        let s = refund_sec + k * 3_600;
                        push(
                            &mut timed,
                            s,
                            json!({"eventId": id("adj"), "occurredAt": at(s),
                                   "adjustment": {"orderId": order, "kind": "ADJUSTMENT_KIND_REFUND",
                                                  "amount": {"amount": format!("{}.{:02}", part / 100, part % 100), "currency": "USD"}}}),
                        );
                    }
                }
            }
        } else if roll < 47 {
            let lead = format!("lead-{v:05}");
            let s = last_click + 300 + rng.below(day as u64) as i64;
            push(
                &mut timed,
                s,
                json!({"eventId": id("sig"), "occurredAt": at(s),
                       "signup": {"visitorId": visitor, "leadId": lead, "email": format!("lead{v}@mail.example")}}),
            );
            if rng.chance(70) {
                let status = if rng.chance(70) {
                    "LEAD_QUALIFICATION_QUALIFIED"
                } else {
                    "LEAD_QUALIFICATION_REJECTED"
                };
                let s2 = s + day;
                push(
                    &mut timed,
                    s2,
                    json!({"eventId": id("lst"), "occurredAt": at(s2),
                           "leadStatus": {"leadId": lead, "status": status}}),
                );
            }
        }
    }
    // A click flood: one visitor, one IP, 40 clicks in a minute.
    let flood_sec = span / 2;
    for k in 0..40 {
        push(
            &mut timed,
            flood_sec + k,
            json!({"eventId": id("flood"), "occurredAt": at(flood_sec + k),
                   "context": {"ip": "203.0.113.66"},
                   "click": {"visitorId": "visitor-bot", "linkCode": links[0]}}),
        );
    }
    timed.sort_by_key(|t| (t.sec, t.n));
    let mut arrival: Vec<Value> = Vec::with_capacity(timed.len() * 11 / 10);
    let mut after: std::collections::HashMap<String, Vec<Value>> =
        after
            .into_iter()
            .fold(std::collections::HashMap::new(), |mut m, (a, e)| {
                m.entry(a).or_insert_with(Vec::new).push(e);
                m
            });
    for t in timed {
        let event_id = t.json["eventId"].as_str().unwrap_or_default().to_owned();
        arrival.push(t.json);
        arrival.extend(after.remove(&event_id).unwrap_or_default());
    }
    // Resent duplicates: 3% of events again, a little later in arrival.
    let mut with_dups = Vec::with_capacity(arrival.len() * 103 / 100);
    let mut resend: Vec<(usize, Value)> = Vec::new();
    for (i, e) in arrival.into_iter().enumerate() {
        if rng.chance(3) {
            resend.push((i + 1 + rng.below(50) as usize, e.clone()));
        }
        with_dups.push(e);
        while let Some(pos) = resend.iter().position(|(due, _)| *due <= i) {
            with_dups.push(resend.swap_remove(pos).1);
        }
    }
    with_dups.extend(resend.into_iter().map(|(_, e)| e));
    // Sentinels: far in the future, an unknown link.
    let end = span + 10 * day;
    for s in 0..options.sentinels {
        with_dups.push(json!({"eventId": format!("sentinel-{s}"), "occurredAt": at(end),
                              "click": {"visitorId": format!("sentinel-{s}"), "linkCode": "no-such-link"}}));
    }
    let events = with_dups
        .into_iter()
        .map(|j| {
            let mut e: v1::Event = serde_json::from_value(j.clone()).unwrap_or_else(|err| {
                panic!("generated event {j} is not a payoff.v1.Event: {err}")
            });
            e.tenant_id = TENANT.to_owned();
            convert::hash_pii(&mut e, SALT);
            e
        })
        .collect();
    Scenario { program, events }
}

impl Scenario {
    /// The program history.
    pub fn programs(&self) -> ProgramHistory {
        let program = convert::program(&self.program)
            .unwrap_or_else(|e| panic!("the example program is invalid: {e}"));
        ProgramHistory::single(program)
    }

    /// The validated core events, in arrival order.
    pub fn core_events(&self) -> Vec<Event> {
        self.events
            .iter()
            .map(|e| {
                Event::validate(&RawEvent::from(e), Timestamp(i64::MAX))
                    .unwrap_or_else(|r| panic!("generated event {} is invalid: {r}", e.event_id))
            })
            .collect()
    }

    /// The credits the core's engine gives for these events, sorted by id.
    pub fn oracle(&self) -> Vec<Credit> {
        let mut engine = Engine::new(self.programs());
        for e in self.core_events() {
            engine.push(e);
        }
        engine.finish();
        let mut credits = engine.credits;
        credits.sort_by_key(|c| c.id);
        credits
    }

    /// Each event's topic and key, as ingest publishes it.
    pub fn records(&self, topics: &Topics) -> Vec<(String, String, v1::Event)> {
        self.core_events()
            .iter()
            .zip(&self.events)
            .map(|(core, proto)| {
                let (topic, key) = topics.route(TENANT, core);
                (topic.to_owned(), key, proto.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scenario_exercises_what_it_claims() {
        let s = generate(Options::default());
        let credits = s.oracle();
        let kinds = |name: &str| credits.iter().filter(|c| c.kind.name() == name).count();
        for kind in ["click", "order", "lead", "reversal", "lead_status"] {
            assert!(
                kinds(kind) > 0,
                "no {kind} credits in {} credits",
                credits.len()
            );
        }
        let mut engine = Engine::new(s.programs());
        for e in s.core_events() {
            engine.push(e);
        }
        engine.finish();
        let counts = &engine.counts;
        assert!(counts.duplicates > 0, "{counts:?}");
        assert!(!counts.flagged.is_empty(), "{counts:?}");
        assert_eq!(
            generate(Options::default()).events,
            s.events,
            "seeded: same events"
        );
    }
}
