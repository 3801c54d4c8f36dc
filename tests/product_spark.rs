//! The Spark 4 standalone product (`examples/products/spark/4.x`), end to end.
//!
//! - `template_renders_spark_config_pointing_at_the_master` (always runs): the product's
//!   template and options go through both rendering phases as the API and the orchestrator run
//!   them; every node's `spark-defaults.conf` and every worker's command name the master.
//! - `spark_cluster_on_real_mesos`: against a REAL Mesos master + agent with the Docker
//!   containerizer, `paas serve` registers the product through REST, launches size 2, waits for
//!   `ready` (printing the time from POST to ready), checks the master's JSON status lists 2
//!   ALIVE workers, runs SparkPi (`spark-submit pi.py`, client mode) on the master through its
//!   NodeAgent, checks the printed estimate of pi, checks that a `spark-submit` with another
//!   `spark.authenticate.secret` is refused (RPC authentication is on), destroys the cluster
//!   and checks no container of it is left.
//! - `spark_scales_on_real_mesos`: size 1, `ready`; `PATCH {"options": {"size": 2}}` → `ready`
//!   at generation 2 (printing the time from PATCH to ready); the master's JSON status lists 2
//!   ALIVE workers. The new worker registers by itself: no file changed on the kept nodes
//!   (none names the workers), so no service was reloaded or restarted.
//!
//! Environment: `MESOS_MASTER` (unset: the real-Mesos test prints why and passes, or fails when
//! `CI` is set); `PAAS_NODE_IMAGE` (node image for `--node-image`, also where the product image
//! takes its `/paas` from) or `PAAS_BINARY`; `PAAS_SPARK_IMAGE` to use a ready product image
//! instead of building it (`deploy/images/build-product-images.sh spark`, cached).
//!
//! Commands run on the nodes through the API's exec route (`POST …/nodes/{node}/exec`), as a
//! user would with `paas clusters exec`.

mod common;

use std::time::Instant;

use common::get;
use common::product::*;
use paas::domain::template::Renderer;
use paas::orchestrator::facts::{cluster_facts, render_argv, render_files};
use serde_json::json;

const P: Product = Product {
    name: "spark",
    version: "4.x",
    description: "Spark 4 standalone cluster: one master, size workers",
    image_env: "PAAS_SPARK_IMAGE",
};

// ----- both rendering phases, no Mesos ------------------------------------------------------

#[test]
fn template_renders_spark_config_pointing_at_the_master() {
    // Placed on 127.0.0.1, node i's j-th port at 31000 + 10 i + j.
    let c = P.rendered_cluster(
        json!({"size": 3, "worker_cores": 2, "worker_memory": 1024}),
        |i, j| 31000 + 10 * i as u16 + j as u16,
    );
    let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["master", "worker1", "worker2", "worker3"]);
    assert!(c.nodes.iter().all(|n| n.docker_image == "paas-spark:4.x"));
    assert_eq!(c.nodes[0].port_names, ["master", "webui", "appui"]);
    assert_eq!(c.nodes[1].port_names, ["worker", "webui"]);
    assert_eq!(
        c.nodes[1].mem,
        1024.0 + 512.0,
        "worker memory plus the daemon's"
    );
    let facts = cluster_facts(&c);
    let r = Renderer::files();
    let svc = |name: &str| c.services.iter().find(|s| s.name.as_str() == name).unwrap();
    let file = |node: usize, path: &str| {
        let f = render_files(&r, &facts, &c.secrets, svc("spark"), &c.nodes[node]).unwrap();
        let f = f.into_iter().find(|f| f.path == path).unwrap();
        String::from_utf8(f.content).unwrap()
    };
    for node in 0..4 {
        let defaults = file(node, "/etc/spark/spark-defaults.conf");
        assert!(
            defaults
                .lines()
                .any(|l| l == "spark.master spark://127.0.0.1:31000"),
            "{defaults}"
        );
        assert!(defaults.lines().any(|l| l == "spark.executor.memory 512m"));
        // RPC authentication with the cluster's own random secret, on every node.
        let secret = &c.secrets["spark_auth"];
        assert_eq!(secret.len(), 64);
        assert!(defaults.lines().any(|l| l == "spark.authenticate true"));
        assert!(
            defaults
                .lines()
                .any(|l| l == format!("spark.authenticate.secret {secret}")),
            "{defaults}"
        );
    }
    let env = file(2, "/etc/spark/spark-env.sh");
    assert!(
        env.lines().any(|l| l == "SPARK_LOCAL_IP=127.0.0.1"),
        "{env}"
    );
    let argv = |svc_name: &str, node: usize, which: &str| {
        let s = svc(svc_name);
        let cmd = if which == "start" { &s.start } else { &s.ready };
        render_argv(&r, &facts, s, &c.nodes[node], &cmd.as_ref().unwrap().argv()).unwrap()
    };
    assert_eq!(
        argv("master", 0, "start")[1..],
        [
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            "31000",
            "--webui-port",
            "31001"
        ]
    );
    let w2 = argv("workers", 2, "start");
    assert_eq!(
        w2[1..],
        [
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            "127.0.0.1",
            "--port",
            "31020",
            "--webui-port",
            "31021",
            "--cores",
            "2",
            "--memory",
            "1024m",
            "--work-dir",
            "/var/lib/spark/work",
            "spark://127.0.0.1:31000"
        ]
    );
    assert_eq!(
        argv("workers", 3, "ready"),
        [
            "/usr/local/bin/paas-spark-ready",
            "http://127.0.0.1:31001/json/",
            "3"
        ]
    );
    let order: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["spark", "master", "workers"]);
}

// ----- real Mesos -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spark_cluster_on_real_mesos() {
    let Some(mut r) = P.on_real_mesos().await else {
        return;
    };
    let s = &mut r.server;
    let (id, c) = P
        .launch_to_ready(s, json!({"size": 2, "image": r.image}))
        .await;

    // The master's JSON status, straight from its web UI port (host networking).
    let m = c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "master")
        .unwrap()
        .clone();
    let status = get(&format!(
        "http://{}:{}/json/",
        m["address"].as_str().unwrap(),
        m["ports"]["webui"]
    ))
    .await
    .json();
    let alive: Vec<String> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "ALIVE")
        .map(|w| format!("{}:{}", w["host"].as_str().unwrap_or("?"), w["port"]))
        .collect();
    eprintln!(
        "master {} {}: ALIVE workers {alive:?}",
        status["url"], status["status"]
    );
    assert_eq!(alive.len(), 2, "{status:#}");

    let t1 = Instant::now();
    let out = exec(
        s,
        &id,
        "master",
        &["spark-submit", "/usr/local/lib/paas-spark/pi.py", "10"],
    )
    .await;
    eprintln!(
        "$ spark-submit /usr/local/lib/paas-spark/pi.py 10   (on the master, through the exec route; {:.1?})\n{out}",
        t1.elapsed()
    );
    let pi: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("Pi is roughly "))
        .unwrap_or_else(|| panic!("no estimate in {out:?}"))
        .trim()
        .parse()
        .unwrap();
    assert!((3.0..3.3).contains(&pi), "pi = {pi}");

    // RPC authentication is on: a driver with another secret does not get in.
    let wrong = "spark-submit --conf spark.authenticate.secret=not-the-cluster-secret \
                 /usr/local/lib/paas-spark/pi.py 1 2>&1; echo exit=$?";
    let out = exec(s, &id, "master", &["timeout", "110", "sh", "-c", wrong]).await;
    let why: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("Exception:") || l.contains("uth"))
        .take(12)
        .collect();
    eprintln!(
        "$ spark-submit with a wrong secret\n{}\n…\n{}",
        why.join("\n"),
        tail(&out, 3)
    );
    assert!(!out.contains("Pi is roughly"), "{out}");
    assert!(!out.contains("exit=0"), "{out}");
    assert!(
        out.contains("SaslException"),
        "refused by authentication: {out}"
    );

    P.destroy_ready(s, &id, 3).await;
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The ALIVE workers in the master's JSON status, straight from its web UI port.
async fn alive_workers(c: &serde_json::Value) -> Vec<String> {
    let m = c["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "master")
        .unwrap();
    let status = get(&format!(
        "http://{}:{}/json/",
        m["address"].as_str().unwrap(),
        m["ports"]["webui"]
    ))
    .await
    .json();
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["state"] == "ALIVE")
        .map(|w| format!("{}:{}", w["host"].as_str().unwrap_or("?"), w["port"]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spark_scales_on_real_mesos() {
    let Some(mut r) = P.on_real_mesos().await else {
        return;
    };
    let s = &mut r.server;
    let (id, c) = P
        .launch_to_ready(s, json!({"size": 1, "image": r.image}))
        .await;
    let before = alive_workers(&c).await;
    eprintln!("size 1: ALIVE workers {before:?}");
    assert_eq!(before.len(), 1);

    let c = P.update_to_ready(s, &id, json!({"size": 2})).await;
    assert_eq!(c["generation"], 2, "{c:#}");
    let after = alive_workers(&c).await;
    eprintln!("size 2: ALIVE workers {after:?}");
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.contains(&before[0]),
        "the first worker stays: {after:?}"
    );
    let logs = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
    assert!(
        !logs.contains("files changed"),
        "no file of a kept node changed:\n{logs}"
    );

    P.destroy_ready(s, &id, 3).await;
}
