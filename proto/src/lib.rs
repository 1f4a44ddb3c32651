//! The API contract of payoff: protobuf package `payoff.v1`, compiled to Rust.
//!
//! This crate holds what travels between processes and nothing else: the
//! events storefronts send, the program config admins publish, the credits the
//! attributor emits, the ledger entries the ledger stores, and the gRPC
//! services (`Ingest`, `Ledger`, `Admin`) with their tonic clients and
//! servers. It must not hold rules: validation, attribution, commission and
//! KPI formulas live in `payoff-core`, and services convert these generated
//! types into domain types where a request enters (`TryFrom`, with errors
//! naming the field).
//!
//! # Layout
//!
//! - `proto/payoff/v1/*.proto`: the source of truth, every message and field
//!   documented; the comments become the rustdoc of [`v1`].
//! - [`v1`]: generated prost messages, tonic clients
//!   ([`v1::ingest_client`], [`v1::ledger_client`], [`v1::admin_client`]) and
//!   servers ([`v1::ingest_server`], [`v1::ledger_server`],
//!   [`v1::admin_server`]), plus serde impls following the canonical proto3
//!   JSON mapping (camelCase names, enums as strings, RFC 3339 timestamps,
//!   `"2592000s"` durations, 64-bit integers as strings).
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for gRPC reflection.
//! - [`convert`]: conversions to and from `payoff-core`'s domain types at the edge
//!   (events and programs in; credits and ledger entries both ways, losslessly).
//!
//! # Conventions
//!
//! - Money is [`v1::Money`]: a decimal string plus an ISO 4217 code, never a
//!   float. Rates, shares and KPI ratios are decimal strings too.
//! - Timestamps and durations are [`pbjson_types::Timestamp`] and
//!   [`pbjson_types::Duration`] (same layout as `prost_types`, plus serde).
//! - An empty string means "absent" for optional identifiers; proto3
//!   `optional` is used only where a zero value is meaningful.
//! - The tenant is never taken from a message body: services take it from the
//!   caller's credentials.
//!
//! # Example
//!
//! ```
//! use payoff_proto::v1::{Event, event::Payload};
//!
//! let json = r#"{
//!   "eventId": "evt-1",
//!   "occurredAt": "2026-11-05T10:00:00Z",
//!   "click": { "visitorId": "v-1", "linkCode": "ANNA10" }
//! }"#;
//! let event: Event = serde_json::from_str(json).unwrap();
//! assert!(matches!(event.payload, Some(Payload::Click(_))));
//! ```

/// Generated code of protobuf package `payoff.v1`.
///
/// Messages are prost structs; each `oneof` is an enum in a module named after
/// its message (e.g. [`v1::event::Payload`]); enums are `i32`-backed Rust enums
/// whose variants drop the proto prefix (`ADJUSTMENT_KIND_REFUND` is
/// [`v1::AdjustmentKind::Refund`]); message fields of enum type are stored as
/// `i32` with typed getters and setters (e.g. `adjustment.kind()`).
//
// Only clippy is silenced here (generated code is not ours to restyle).
// `missing_docs` stays on on purpose: every message, field, enum value and RPC
// is documented in the `.proto` files, and a new undocumented one warns.
#[allow(clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/payoff.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/payoff.v1.serde.rs"));
}

/// Encoded `google.protobuf.FileDescriptorSet` of `payoff.v1` and its imports,
/// for gRPC server reflection (`tonic-reflection`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/payoff_descriptor.bin"));

pub mod convert;
