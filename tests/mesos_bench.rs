//! `paas bench mesos --rounds 1` against a REAL Apache Mesos 1.11 master and agent
//! (`../shared/realmesos`, Docker containerizer), as the other real-Mesos tests run:
//! `MESOS_MASTER` names the master and `PAAS_NODE_IMAGE` the node image (default
//! `paas-node:latest`). Without `MESOS_MASTER` the test says why it does not run; under
//! `CI=true` that is a failure, never a silent pass.
//!
//! It checks what the benchmark reports, never how fast: one round of each side finished,
//! every time is positive and below the benchmark's own timeout, and no container of
//! either framework (nor of the Docker floor) is left behind, and no framework of the run
//! is still registered at the master.

mod common;

use std::collections::HashMap;
use std::process::Command;

use serde_json::Value;

/// The body of a GET of the master's `path`.
fn http_get(master: &str, path: &str) -> String {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let url = format!("{}{path}", master.trim_end_matches('/'));
    rt.block_on(common::get(&url)).text()
}

/// The `key=value` fields of the benchmark's `result:` line.
fn result_line(stdout: &str) -> Option<HashMap<String, String>> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("result: "))?;
    Some(
        line.split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
    )
}

/// The names of every container (running or not) whose name starts with `prefix`.
fn containers_named(prefix: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

#[test]
fn one_round_reports_positive_times_and_leaves_no_container() {
    let Some(master) = common::mesos_master(
        "mesos_bench",
        "Run scripts/test.sh (it starts ../shared/realmesos) or export MESOS_MASTER=http://127.0.0.1:5050",
    ) else {
        return;
    };
    let image = std::env::var("PAAS_NODE_IMAGE").unwrap_or_else(|_| "paas-node:latest".into());
    let before = common::running_executors();
    let out = Command::new(env!("CARGO_BIN_EXE_paas"))
        .args([
            "bench",
            "mesos",
            "--rounds",
            "1",
            "--master",
            &master,
            "--image",
            &image,
            "--timeout",
            "120",
            "--long-lived-minimal",
        ])
        .env_remove("MESOS_MASTER")
        .output()
        .expect("run paas bench mesos");
    let stdout = common::stdout_of_success(&out, "paas bench mesos");
    eprintln!("{stdout}");
    let r = result_line(&stdout).unwrap_or_else(|| panic!("no result line:\n{stdout}"));
    assert_eq!(r["rounds"], "1", "{stdout}");
    for key in ["ours_ms", "minimal_ms", "long_lived_ms", "docker_ms"] {
        let ms: f64 = r[key].parse().unwrap_or_else(|_| panic!("{key}: {stdout}"));
        assert!(ms > 0.0 && ms < 120_000.0, "{key} = {ms}:\n{stdout}");
    }
    for key in [
        "ratio",
        "ratio_long_lived",
        "paired",
        "paired_high",
        "paired_long_lived",
    ] {
        let ratio: f64 = r[key].parse().unwrap_or_else(|_| panic!("{key}: {stdout}"));
        assert!(ratio.is_finite() && ratio > 0.0, "{key}: {stdout}");
    }
    assert_eq!(r["leftover_containers"], "0", "{stdout}");
    // Each side printed its round with its phases.
    for side in [
        "round 1 ours:",
        "round 1 minimal:",
        "round 1 minimal long-lived:",
        "round 1 docker:",
    ] {
        assert!(stdout.contains(side), "{side}:\n{stdout}");
    }
    assert!(stdout.contains("ACCEPT"), "{stdout}");
    assert!(stdout.contains("REVIVE answered"), "{stdout}");
    // The phase table has a column per side.
    assert!(
        stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == ["phase", "ours", "minimal", "long-lived"]),
        "{stdout}"
    );
    // Every framework of the run is gone from the master, the long-lived one too.
    let state = http_get(&master, "/master/frameworks");
    let active: Value = serde_json::from_str(&state).unwrap_or_else(|e| panic!("{e}: {state}"));
    let names: Vec<&str> = active["frameworks"]
        .as_array()
        .map(|f| f.iter().filter_map(|f| f["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        !names.iter().any(|n| n.starts_with("paas-bench-minimal")),
        "still registered: {names:?}"
    );
    // Nothing of the run still runs: no new executor container, no floor container.
    let after = common::running_executors();
    assert!(after.is_subset(&before), "left running: {after:?}");
    assert_eq!(containers_named("paas-bench-floor-"), Vec::<String>::new());
}
