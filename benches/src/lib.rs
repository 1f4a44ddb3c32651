//! payoff-benches: a deterministic generator of realistic, click-heavy event mixes, and
//! the criterion benchmarks that push them through the core's [`Engine`].
//!
//! The generator is seeded and self-contained (a SplitMix64 PRNG, no clock, no OS
//! randomness), so a given [`MixConfig`] always yields the same events: benchmark runs are
//! comparable, and a load generator can reuse it to replay the same traffic.
//!
//! The default mix is 90% clicks, 8% signups and 2% orders, 5% of the orders refunded a
//! little later, spread over many visitors, creators and two campaigns.
//!
//! What this crate must not do: be a dependency of any service.
//!
//! [`Engine`]: payoff_core::engine::Engine

use std::collections::{BTreeMap, VecDeque};

use payoff_core::{
    event::{
        AdjustmentKind, Event, RawAdjustment, RawClick, RawEvent, RawMoney, RawOrder, RawPayload,
        RawSignup,
    },
    ids::{CampaignId, CreatorId, LinkCode, PlanId, PromoCode},
    money::Currency,
    program::{
        Campaign, Creator, DEFAULT_HOLD, DEFAULT_LOOKBACK, Milestone, Model, Plan, PlanKind,
        Program, ProgramHistory, Target,
    },
    time::{Duration, PeriodKind, Timestamp},
};
use rust_decimal::Decimal;

/// A small, fast, seedable PRNG (SplitMix64): enough for workload shapes, not for secrets.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        // Lemire's multiply-shift: unbiased enough for workload shapes.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// The shape of a generated workload.
#[derive(Debug, Clone)]
pub struct MixConfig {
    /// Seed of the PRNG.
    pub seed: u64,
    /// Events to generate (refunds included).
    pub events: usize,
    /// Distinct visitors.
    pub visitors: u64,
    /// Distinct creators (each has a link and a promo code in every campaign).
    pub creators: u64,
    /// Campaigns.
    pub campaigns: u64,
    /// Clicks, per mille of events.
    pub clicks_per_mille: u64,
    /// Signups, per mille of events (orders are the rest).
    pub signups_per_mille: u64,
    /// Orders later refunded, per mille of orders.
    pub refunds_per_mille_of_orders: u64,
    /// Largest gap between two consecutive events, in milliseconds.
    pub max_gap_ms: u64,
    /// Time of the first event.
    pub start: Timestamp,
}

impl Default for MixConfig {
    /// 90% clicks, 8% signups, 2% orders, 5% of orders refunded; 100k events over about a
    /// day, from 50k visitors to 200 creators in 2 campaigns.
    fn default() -> Self {
        Self {
            seed: 0x5EED_CAFE,
            events: 100_000,
            visitors: 50_000,
            creators: 200,
            campaigns: 2,
            clicks_per_mille: 900,
            signups_per_mille: 80,
            refunds_per_mille_of_orders: 50,
            max_gap_ms: 1_700,
            // 2026-11-02T00:00:00Z
            start: Timestamp(1_793_577_600_000),
        }
    }
}

fn usd() -> Currency {
    Currency::parse("currency", "USD").expect("USD is a currency")
}

fn plan(id: &str, kind: PlanKind) -> Plan {
    Plan {
        id: PlanId::new(id),
        kind,
        new_customer_only: false,
        recurring_periods: None,
        cap_amount: None,
        cap_count: None,
        hold: DEFAULT_HOLD,
    }
}

/// The program the mix runs under: every campaign pays per click (capped), per lead,
/// 10% of sales and milestone bonuses; campaigns alternate last-click and linear models.
pub fn program(config: &MixConfig) -> ProgramHistory {
    let mut program = Program {
        version: 1,
        effective_from: Timestamp(0),
        ..Program::default()
    };
    for c in 0..config.campaigns {
        let id = CampaignId::new(&format!("campaign-{c}"));
        let plans = vec![
            Plan {
                cap_count: Some(1_000),
                ..plan(
                    "cpc",
                    PlanKind::Cpc {
                        amount: Decimal::new(5, 2),
                    },
                )
            },
            plan(
                "cpl",
                PlanKind::Cpl {
                    amount: Decimal::new(100, 2),
                    qualified_only: false,
                },
            ),
            plan(
                "rev",
                PlanKind::CpsPercent {
                    rate: Decimal::new(10, 2),
                    category_rates: BTreeMap::new(),
                },
            ),
            plan(
                "ms",
                PlanKind::Milestone {
                    milestones: vec![
                        Milestone {
                            threshold: 5,
                            bonus: Decimal::new(10, 0),
                        },
                        Milestone {
                            threshold: 20,
                            bonus: Decimal::new(50, 0),
                        },
                    ],
                },
            ),
        ];
        program.campaigns.insert(
            id.clone(),
            Campaign {
                id: id.clone(),
                name: id.to_string(),
                currency: usd(),
                model: if c % 2 == 0 {
                    Model::LastClick
                } else {
                    Model::Linear
                },
                lookback: DEFAULT_LOOKBACK,
                code_precedence: true,
                active_from: None,
                active_until: None,
                period: PeriodKind::Month,
                plans,
            },
        );
        for k in 0..config.creators {
            let target = Target {
                creator: CreatorId::new(&format!("creator-{k}")),
                campaign: id.clone(),
            };
            program
                .links
                .insert(LinkCode::new(&link(k, c)), target.clone());
            program.promo_codes.insert(
                PromoCode::parse("code", &format!("CODE{k}X{c}")).expect("valid code"),
                target,
            );
        }
    }
    for k in 0..config.creators {
        program.creators.insert(
            CreatorId::new(&format!("creator-{k}")),
            Creator {
                display_name: format!("Creator {k}"),
                ..Creator::default()
            },
        );
    }
    program.check().expect("the bench program is consistent");
    ProgramHistory::single(program)
}

fn link(creator: u64, campaign: u64) -> String {
    format!("l{creator}-{campaign}")
}

/// The raw events of the mix, in arrival order (which is event-time order here).
pub fn raw_events(config: &MixConfig) -> Vec<RawEvent> {
    let mut rng = SplitMix64::new(config.seed);
    let mut out = Vec::with_capacity(config.events);
    let mut at = config.start;
    let mut orders = 0u64;
    let mut leads = 0u64;
    // refunds due: (index of the event after which it is sent, order id)
    let mut refunds: VecDeque<(usize, u64)> = VecDeque::new();
    let money = |cents: u64| RawMoney {
        amount: Decimal::new(i64::try_from(cents).unwrap_or(i64::MAX), 2).to_string(),
        currency: "USD".to_owned(),
    };
    while out.len() < config.events {
        let i = out.len();
        at = at.plus(Duration(
            i64::try_from(rng.below(config.max_gap_ms + 1)).unwrap_or(0),
        ));
        let visitor = rng.below(config.visitors);
        let event_id = format!("ev-{i}");
        let payload = if refunds.front().is_some_and(|(due, _)| *due <= i) {
            let (_, order) = refunds.pop_front().unwrap_or_default();
            let partial = rng.chance(500);
            RawPayload::Adjustment(RawAdjustment {
                order_id: format!("order-{order}"),
                kind: Some(AdjustmentKind::Refund),
                amount: partial.then(|| money(500)),
                reason: "returned".to_owned(),
            })
        } else {
            let roll = rng.below(1000);
            if roll < config.clicks_per_mille {
                let creator = rng.below(config.creators);
                let campaign = rng.below(config.campaigns);
                RawPayload::Click(RawClick {
                    visitor_id: format!("visitor-{visitor}"),
                    link_code: link(creator, campaign),
                    utm_source: "instagram".to_owned(),
                    ..RawClick::default()
                })
            } else if roll < config.clicks_per_mille + config.signups_per_mille {
                leads += 1;
                RawPayload::Signup(RawSignup {
                    visitor_id: format!("visitor-{visitor}"),
                    lead_id: format!("lead-{leads}"),
                    ..RawSignup::default()
                })
            } else {
                orders += 1;
                if rng.chance(config.refunds_per_mille_of_orders) {
                    refunds.push_back((
                        i + 1 + usize::try_from(rng.below(5_000)).unwrap_or(0),
                        orders,
                    ));
                }
                let promo_codes = if rng.chance(100) {
                    vec![format!(
                        "code{}x{}",
                        rng.below(config.creators),
                        rng.below(config.campaigns)
                    )]
                } else {
                    Vec::new()
                };
                RawPayload::Order(RawOrder {
                    visitor_id: format!("visitor-{visitor}"),
                    order_id: format!("order-{orders}"),
                    amount: Some(money(1_000 + rng.below(20_000))),
                    promo_codes,
                    ..RawOrder::default()
                })
            }
        };
        out.push(RawEvent {
            event_id,
            occurred_at: Some(at),
            customer_id: String::new(),
            ip_hash: format!("ip-{}", visitor % 10_007),
            user_agent_hash: String::new(),
            payload: Some(payload),
        });
    }
    out
}

/// The mix as validated events, ready to feed an engine.
///
/// # Panics
/// Never for the configurations above: every generated event is valid.
pub fn events(config: &MixConfig) -> Vec<Event> {
    raw_events(config)
        .iter()
        .map(|raw| {
            let now = raw.occurred_at.unwrap_or(config.start);
            Event::validate(raw, now).expect("generated events are valid")
        })
        .collect()
}

/// Nanoseconds the calling thread has spent on a CPU, where Linux tells
/// (`/proc/thread-self/schedstat`): the benchmarks' steadier measure than wall time on a
/// shared machine.
pub fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// What an attributor changelog record holds (its key, and whether it is a tombstone),
/// as a label for the benchmarks' breakdown of what the attributor writes.
pub fn changelog_label(key: &[u8], tombstone: bool) -> &'static str {
    use payoff_attributor::codec::{self, Entry};
    use payoff_core::attribution::StateKey;
    if tombstone {
        return "changelog: tombstones";
    }
    match codec::changelog_from(Some(key), None).map(|(k, _)| k.entry) {
        Ok(Entry::State(StateKey::Visitor(_))) => "changelog: visitors",
        Ok(Entry::State(StateKey::Ip(_))) => "changelog: ip counters",
        Ok(Entry::State(StateKey::Seen(_))) => "changelog: seen ids (single)",
        Ok(Entry::Index(_)) => "changelog: order index",
        Ok(Entry::SeenBatch { .. }) => "changelog: seen id batches",
        Ok(Entry::Watermark) => "changelog: watermarks",
        Ok(Entry::SeenHorizon) => "changelog: seen horizons",
        Err(_) => "changelog: undecodable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelog_records_are_labelled_by_what_they_hold() {
        use payoff_attributor::codec::{self, ChangelogKey, Entry};
        use payoff_core::{attribution::StateKey, ids::TenantId};
        let key = |entry| {
            codec::changelog_key(&ChangelogKey {
                tenant: TenantId::new("t"),
                entry,
            })
        };
        let visitor = key(Entry::State(StateKey::Visitor(7)));
        assert_eq!(changelog_label(&visitor, false), "changelog: visitors");
        assert_eq!(changelog_label(&visitor, true), "changelog: tombstones");
        assert_eq!(
            changelog_label(&key(Entry::State(StateKey::Ip(3))), false),
            "changelog: ip counters"
        );
        assert_eq!(
            changelog_label(&key(Entry::Watermark), false),
            "changelog: watermarks"
        );
        assert_eq!(changelog_label(b"", false), "changelog: undecodable");
    }

    #[test]
    fn the_mix_is_deterministic_and_click_heavy() {
        let config = MixConfig {
            events: 20_000,
            ..MixConfig::default()
        };
        let a = raw_events(&config);
        assert_eq!(a, raw_events(&config));
        let clicks = a
            .iter()
            .filter(|e| matches!(e.payload, Some(RawPayload::Click(_))))
            .count();
        let orders = a
            .iter()
            .filter(|e| matches!(e.payload, Some(RawPayload::Order(_))))
            .count();
        let refunds = a
            .iter()
            .filter(|e| matches!(e.payload, Some(RawPayload::Adjustment(_))))
            .count();
        assert!((17_600..18_400).contains(&clicks), "{clicks} clicks");
        assert!((300..500).contains(&orders), "{orders} orders");
        assert!(refunds > 0 && refunds < orders / 10, "{refunds} refunds");
        assert_eq!(events(&config).len(), 20_000);
    }
}
