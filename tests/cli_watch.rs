//! `paas clusters watch` and `paas clusters launch --wait` on the event stream, against a
//! real server over HTTP.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Server, call, register_reference};

fn paas(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_paas"));
    cmd.args(args).env("PAAS_URL", url).env_remove("PAAS_TOKEN");
    cmd
}

#[tokio::test]
async fn watch_prints_the_history_then_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    register_reference(&s, &[]).await;
    let id = common::launch(&s, r#"{"size": 2}"#).await;

    let mut watch = paas(&s.url, &["clusters", "watch", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let out = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = || lines.recv_timeout(Duration::from_secs(10)).expect("a line");
    let first = next();
    assert!(first.starts_with("cluster  registered  size=2"), "{first}");
    let step = next();
    assert!(
        step.starts_with("step ") && step.contains(" registered"),
        "{step}"
    );

    common::destroy(&s, &id).await;
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.starts_with("step ") && l.contains(" destroyed"))
    {
        seen.push(next());
    }
    assert!(
        seen.iter().any(|l| l.starts_with("cluster  destroyed")),
        "{seen:#?}"
    );
    let _ = watch.kill();
    let _ = watch.wait();

    // An unknown cluster: the API's 404, exit 1.
    let out = paas(
        &s.url,
        &["clusters", "watch", "0b0d2e63-7c2a-4f4b-9a55-2d0f7c3b1a10"],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `--wait` follows the stream to the goal and prints each status once.
#[tokio::test]
async fn launch_wait_follows_the_stream_to_its_goal() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    register_reference(&s, &[]).await;
    let out = paas(
        &s.url,
        &[
            "clusters",
            "launch",
            "reference",
            "1.0.0",
            "--opt",
            "size=1",
            "--wait",
            "--until",
            "registered",
            "--timeout",
            "20",
        ],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("cluster ") && lines[0].ends_with(" registered"));
    assert_eq!(lines[1..], ["registered"], "{stdout}");

    // A goal never reached: the timeout, exit 1, with the last status.
    let id = lines[0].split_whitespace().nth(1).unwrap().to_owned();
    let r = call("GET", &s.api(&format!("/clusters/{id}")), "", &[]).await;
    assert_eq!(r.json()["status"], "registered");
    let out = paas(
        &s.url,
        &[
            "clusters",
            "launch",
            "reference",
            "1.0.0",
            "--opt",
            "size=1",
            "--wait",
            "--timeout",
            "2",
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("timed out after 2s waiting for the cluster (last status: registered)"),
        "{stderr}"
    );
}
