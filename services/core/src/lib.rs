//! payoff-core: the pure rules engine of payoff.
//!
//! Everything that decides who earns credit and what they are owed lives here, as
//! synchronous, deterministic functions: validation (§4), attribution (§5), commission
//! (§6), the ledger fold (§7), projections (§8) and KPIs (§9). Time comes in as data.
//!
//! What this crate must not do: IO of any kind, read a clock, use randomness, spawn
//! tasks, or depend on tokio, tonic, rdkafka or scylla. Services are thin adapters around
//! it, and `payoff replay` runs it offline, so the streaming pipeline and the replay
//! always agree.
//!
//! The shape follows esrs: `decide(&state, input) -> facts` reads only, `apply(&mut
//! state, &fact)` folds a fact in. A service persists facts and outputs in one
//! transaction; replaying the facts rebuilds the state.
//!
//! # Layout
//! - [`ids`], [`money`], [`time`]: value types, deterministic derived ids, exact money.
//! - [`event`]: the events and their validation.
//! - [`program`]: versioned program configuration bound to event time.
//! - [`attribution`]: who earns a conversion; the late-click reorder buffer.
//! - [`credit`]: the attributor's output and its explanation.
//! - [`ledger`]: commission plans and the append-only ledger fold.
//! - [`projection`], [`kpi`]: balances, status, tier progress, KPIs, as-of.
//! - [`engine`]: all of the above chained, for replay and as the test oracle.

pub mod attribution;
pub mod credit;
pub mod engine;
pub mod error;
pub mod event;
pub mod ids;
pub mod kpi;
pub mod ledger;
pub mod money;
pub mod program;
pub mod projection;
pub mod time;

pub use error::{Rejection, Violation};

/// The hasher of the core's maps (state, and the program's link and promo-code lookups)
/// and of the services' maps beside them: foldhash, seeded per map, several times faster
/// than SipHash on the short string ids every event carries. Nothing observable iterates
/// these maps, so the seed never changes an output.
pub type FastHash = foldhash::fast::RandomState;
/// A `HashMap` with [`FastHash`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastHash>;
/// A `HashSet` with [`FastHash`].
pub type FastSet<T> = std::collections::HashSet<T, FastHash>;
