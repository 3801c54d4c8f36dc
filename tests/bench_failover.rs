//! `paas bench restart --master-local` end to end, small: a real child mesos-local (simulated
//! agents), a real child `paas serve --master <it>` that launches through its API, a real
//! SIGKILL, and a second `serve` on the same sled directory that subscribes again and
//! reconciles every task. It checks what the benchmark reports (every cluster ready again,
//! every task reconciled, nothing failed), never how fast.

mod common;

use std::process::Command;

#[test]
fn a_killed_framework_comes_back_with_every_task_reconciled() {
    let out = Command::new(env!("CARGO_BIN_EXE_paas"))
        .args(["bench", "restart", "--master-local", "--nodes", "200"])
        .output()
        .expect("run paas bench restart --master-local");
    let stdout = common::stdout_of_success(&out, "paas bench restart --master-local");
    assert!(
        stdout.contains("20 clusters × 10 nodes launched and ready"),
        "{stdout}"
    );
    assert!(stdout.contains("killed it (SIGKILL)"), "{stdout}");
    assert!(
        stdout.contains("every one of the 200 tasks reconciled after"),
        "{stdout}"
    );
    assert!(
        stdout.contains("then: 20 clusters ready, 200 nodes running"),
        "nothing lost or failed across the crash: {stdout}"
    );
}
