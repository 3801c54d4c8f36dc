//! `paas bench launches --quota` end to end: a real `paas serve --master none` child with a
//! token file, real HTTP on loopback, a real sled store. The user's quota is exactly the
//! number of launches, so every launch runs the quota check against what the user already
//! holds, and the last one fits only if the store's running sum counted each cluster and
//! node once. It checks what the benchmark reports, never how fast.

mod common;

use std::process::Command;

#[test]
fn every_launch_fits_a_quota_of_exactly_that_many() {
    let out = Command::new(env!("CARGO_BIN_EXE_paas"))
        .args([
            "bench",
            "launches",
            "--count",
            "300",
            "--connections",
            "8",
            "--size",
            "2",
            "--quota",
        ])
        .output()
        .expect("run paas bench launches");
    let stdout = common::stdout_of_success(&out, "paas bench launches");
    assert!(
        stdout.contains("as user bench, whose quota is 300 clusters and 600 nodes"),
        "{stdout}"
    );
    assert!(
        stdout.contains("300 launched in") && stdout.contains("(0 failed)"),
        "every launch within the quota: {stdout}"
    );
    // The listing and /metrics after the launches are read with the same token.
    assert!(stdout.contains("GET /clusters:"), "{stdout}");
    assert!(stdout.contains("GET /metrics:"), "{stdout}");
}
