//! pymesos conformance: a scheduler nobody here wrote (the PyPI `pymesos` library, JSON
//! over its own HTTP client) subscribes to mesos-local, launches a task with OUR executor
//! (`paas executor`, process containerizer), and sees TASK_RUNNING then TASK_KILLED.
//!
//! The venv comes from `../shared/tools/pymesos-venv.sh`. If it cannot be built, the test
//! FAILS: CI must not pass without having run it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use paas::mesos_local::{self, ContainerizerMode, LocalConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn python() -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/pymesos-venv.sh");
    assert!(
        script.exists(),
        "{} is missing: the pymesos conformance test cannot run",
        script.display()
    );
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}):\n{}\n{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let py = stdout.lines().last().unwrap_or_default().trim().to_owned();
    assert!(
        PathBuf::from(&py).exists(),
        "the venv script printed no python path: {stdout}"
    );
    py
}

#[tokio::test(flavor = "multi_thread")]
async fn pymesos_scheduler_launches_our_executor() {
    let py = tokio::task::spawn_blocking(python).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = LocalConfig::new(dir.path());
    cfg.containerizer = ContainerizerMode::Process;
    cfg.executor_path = Some(env!("CARGO_BIN_EXE_paas").into());
    let shutdown = CancellationToken::new();
    let local = mesos_local::start(cfg, shutdown.clone(), &TaskTracker::new())
        .await
        .unwrap();
    let probe = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/pymesos_scheduler.py");
    let run = tokio::process::Command::new(&py)
        .arg(&probe)
        .arg(local.addr.to_string())
        .arg(env!("CARGO_BIN_EXE_paas"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("the pymesos scheduler finishes within 150 s")
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- pymesos stdout\n{stdout}");
    let snap = local.snapshot().await.unwrap();
    shutdown.cancel();
    assert!(
        out.status.success() && stdout.contains("RESULT OK"),
        "pymesos run failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("UPDATE pymesos-task TASK_RUNNING SOURCE_EXECUTOR True"),
        "{stdout}"
    );
    assert!(
        stdout.contains("UPDATE pymesos-task TASK_KILLED"),
        "{stdout}"
    );
    // pymesos tore the framework down on stop: nothing is left behind.
    assert!(snap.frameworks.is_empty(), "{snap:?}");
    assert!(snap.tasks.is_empty(), "{snap:?}");
}
