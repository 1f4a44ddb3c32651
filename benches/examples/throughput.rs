//! Engine throughput in events per second of wall time and of on-CPU time (from
//! `/proc/self/schedstat`, so a busy machine does not hide the engine's own cost).
//!
//! Run: `cargo run --release -p payoff-benches --example throughput [batches] [both|without|with]`
//! (the second argument picks the runs without outputs, with them, or both; both by
//! default).

use std::time::Instant;

use payoff_benches::{MixConfig, events, program};
use payoff_core::engine::Engine;

/// The allocator every payoff binary uses ([`payoff_runtime::Allocator`]).
#[global_allocator]
static ALLOCATOR: payoff_runtime::Allocator = payoff_runtime::Allocator;

/// Nanoseconds this thread has spent on a CPU, where Linux tells.
fn main() {
    let batches: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let which = std::env::args().nth(2).unwrap_or_else(|| "both".to_owned());
    let runs: &[bool] = match which.as_str() {
        "without" => &[false],
        "with" => &[true],
        "both" => &[false, true],
        other => {
            eprintln!("throughput: unknown runs {other:?}: want both, without or with");
            std::process::exit(2);
        }
    };
    let config = MixConfig::default();
    let history = program(&config);
    let events = events(&config);
    for &keep_outputs in runs {
        let mut wall = 0.0;
        let mut cpu = 0u64;
        for _ in 0..batches {
            let batch = events.clone();
            let (t0, c0) = (Instant::now(), payoff_benches::thread_cpu_ns());
            let mut engine = Engine::new(history.clone());
            if !keep_outputs {
                engine = engine.without_outputs();
            }
            for e in batch {
                engine.push(e);
            }
            engine.finish();
            drop(engine);
            wall += t0.elapsed().as_secs_f64();
            cpu += payoff_benches::thread_cpu_ns()
                .zip(c0)
                .map_or(0, |(c1, c0)| c1 - c0);
        }
        let n = f64::from(batches) * events.len() as f64;
        println!(
            "outputs={keep_outputs}: {:.0} events/s wall, {:.0} events/s on-CPU",
            n / wall,
            n / (cpu as f64 / 1e9)
        );
    }
}
