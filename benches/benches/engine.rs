//! Engine throughput on a click-heavy mix: events per second on one core.
//!
//! Run: `cargo bench -p payoff-benches -- --warm-up-time 2 --measurement-time 10`

#![allow(missing_docs)]

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use payoff_benches::{MixConfig, events, program};
use payoff_core::engine::Engine;

/// The allocator every payoff binary uses ([`payoff_runtime::Allocator`]).
#[global_allocator]
static ALLOCATOR: payoff_runtime::Allocator = payoff_runtime::Allocator;

fn engine(c: &mut Criterion) {
    let config = MixConfig::default();
    let history = program(&config);
    // Built and validated once, outside the measured loop.
    let events = events(&config);
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(events.len() as u64));
    group.sample_size(10);
    group.bench_function("click_heavy_100k/without_outputs", |b| {
        b.iter_batched(
            || events.clone(),
            |events| {
                let mut engine = Engine::new(history.clone()).without_outputs();
                for e in events {
                    engine.push(e);
                }
                engine.finish();
                engine.counts.events
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("click_heavy_100k/with_outputs", |b| {
        b.iter_batched(
            || events.clone(),
            |events| {
                let mut engine = Engine::new(history.clone());
                for e in events {
                    engine.push(e);
                }
                engine.finish();
                engine.entries.len()
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

/// One time-decay weight: the `libm` path the models use against `rust_decimal`'s
/// `checked_powd`, which it replaced.
fn decay_weight(c: &mut Criterion) {
    use payoff_core::attribution::models;
    use rust_decimal::{Decimal, MathematicalOps};
    let (age, half_life) = (3 * 86_400_000 + 12_345_678, 7 * 86_400_000);
    let mut group = c.benchmark_group("decay_weight");
    group.bench_function("libm_exp2", |b| {
        b.iter(|| models::decay_weight(std::hint::black_box(age), half_life));
    });
    group.bench_function("decimal_powd", |b| {
        b.iter(|| {
            let exponent = -(Decimal::from(std::hint::black_box(age)) / Decimal::from(half_life));
            Decimal::TWO.checked_powd(exponent)
        });
    });
    group.finish();
}

/// Cloning and dropping an id, as the engine does about twenty times per click: the
/// `EcoString` the ids are now (inline up to 15 bytes) against the `Arc<str>` they were,
/// for a short id and a 36-byte one (a UUID, kept behind a reference count either way).
fn id_clone(c: &mut Criterion) {
    use payoff_core::ids::VisitorId;
    use std::sync::Arc;
    let mut group = c.benchmark_group("id_clone_drop");
    for (name, text) in [
        ("13_bytes", "visitor-12345"),
        ("36_bytes", "3f2504e0-4f89-41d3-9a0c-0305e82c3301"),
    ] {
        let arc: Arc<str> = Arc::from(text);
        let id = VisitorId::new(text);
        group.bench_function(format!("arc_str/{name}"), |b| {
            b.iter(|| drop(std::hint::black_box(arc.clone())));
        });
        group.bench_function(format!("id/{name}"), |b| {
            b.iter(|| drop(std::hint::black_box(id.clone())));
        });
    }
    group.finish();
}

criterion_group!(benches, engine, decay_weight, id_clone);
criterion_main!(benches);
