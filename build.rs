//! Compiles our protobuf subsets into Rust without a system `protoc`: `protox` parses the
//! `.proto` files in pure Rust, and `tonic-prost-build` (prost underneath) generates the code,
//! one file per package in `OUT_DIR`, included by `src/proto.rs`.
//!
//! A gRPC service (like `paas/nodeagent.proto`) only needs its line in `PROTOS` and an
//! `include!` in `src/proto.rs`; client and server stubs are generated for any `service`.

/// Every proto compiled into the crate, relative to `PROTO_ROOT`.
const PROTOS: &[&str] = &[
    "mesos/v1/mesos.proto",
    "mesos/v1/scheduler/scheduler.proto",
    "mesos/v1/executor/executor.proto",
    "paas/nodeagent.proto",
];

/// The include root: imports are written as `mesos/v1/mesos.proto`, as in Apache Mesos.
const PROTO_ROOT: &str = "proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let files: Vec<String> = PROTOS.iter().map(|p| format!("{PROTO_ROOT}/{p}")).collect();
    // A parse error is reported with file, line and column; returning it fails the build.
    let descriptors = protox::compile(&files, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
