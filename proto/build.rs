//! Generates the payoff.v1 Rust code: prost messages, tonic clients and
//! servers, pbjson serde impls (proto3 JSON mapping) and a file descriptor set
//! for gRPC reflection.
//!
//! Uses the `protoc` shipped by `protoc-bin-vendored`, never one installed on
//! the machine, and passes its path to prost-build directly (no environment
//! mutation).

use std::error::Error;
use std::path::PathBuf;

/// The `.proto` files of payoff.v1, relative to the crate root.
const PROTOS: &[&str] = &[
    "payoff/v1/common.proto",
    "payoff/v1/events.proto",
    "payoff/v1/program.proto",
    "payoff/v1/credits.proto",
    "payoff/v1/ledger.proto",
    "payoff/v1/ingest.proto",
    "payoff/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("payoff_descriptor.bin");

    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    println!("cargo:rerun-if-changed=build.rs");

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    let includes = [root, protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(&descriptor_path)
        // Well-known types come from pbjson-types, which carries their
        // canonical JSON forms (RFC 3339 timestamps, "1.5s" durations).
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        // Maps as BTreeMap: encoding order is then deterministic, so the
        // same message always encodes to the same bytes (rebuilds from Kafka
        // must be byte for byte identical).
        .btree_map(".")
        .compile_with_config(config, &protos, &includes)?;

    let descriptor_set = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptor_set)?
        .btree_map(["."])
        .build(&[".payoff.v1"])?;
    Ok(())
}
