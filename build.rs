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

/// Message fields generated as `Option<Box<_>>` instead of inline. prost lays a nested
/// message out inline, so an unused one still takes its full size: `DiskInfo` alone made
/// every `Resource` 984 bytes (280 without it), and a launch copies several resources per
/// task. None of these fields is set by this framework.
const BOXED: &[&str] = &[
    ".mesos.v1.Resource.disk",
    ".mesos.v1.TaskInfo.health_check",
    ".mesos.v1.TaskInfo.check",
    ".mesos.v1.TaskInfo.discovery",
    ".mesos.v1.ExecutorInfo.discovery",
];

/// The include root: imports are written as `mesos/v1/mesos.proto`, as in Apache Mesos.
const PROTO_ROOT: &str = "proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let files: Vec<String> = PROTOS.iter().map(|p| format!("{PROTO_ROOT}/{p}")).collect();
    // A parse error is reported with file, line and column; returning it fails the build.
    let mut compiler = protox::Compiler::new([PROTO_ROOT])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(&files)?;
    // mesos-local speaks Mesos' JSON by transcoding through prost-reflect, which needs the
    // descriptors at run time.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("mesos.fds.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let descriptors = compiler.file_descriptor_set();
    let mut builder = tonic_prost_build::configure();
    for field in BOXED {
        builder = builder.boxed(field);
    }
    builder
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
