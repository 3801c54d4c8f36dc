//! The Slurm 22.05 product (`examples/products/slurm/22.05`), end to end.
//!
//! - `template_renders_slurm_conf_with_every_node` (always runs): the product's template and
//!   options go through both rendering phases as the API and the orchestrator run them; the
//!   rendered `slurm.conf` names every compute node with its own port.
//! - `slurm_cluster_on_real_mesos`: against a REAL Mesos master + agent with the Docker
//!   containerizer, `paas serve` registers the product through REST, launches size 2, waits for
//!   `ready` (printing the time from POST to ready), runs `srun -N 2 hostname` on the
//!   controller through its NodeAgent, checks one line per compute node, destroys the cluster
//!   and checks no container of it is left.
//! - `slurm_failures_are_clear_on_real_mesos`: a missing product image and a size the agent
//!   cannot hold each end with a reason that says why, and leave no container behind.
//!
//! Environment: `MESOS_MASTER` (unset: the real-Mesos tests print why and pass, or fail when
//! `CI` is set); `PAAS_NODE_IMAGE` (node image for `--node-image`, also where the product image
//! takes its `/paas` from) or `PAAS_BINARY`; `PAAS_SLURM_IMAGE` to use a ready product image
//! instead of building it (`deploy/images/build-product-images.sh slurm`, cached).
//!
//! Reading the NodeAgent secret: no API serves a cluster's NodeAgent secret, and there is no
//! API to run a command on a node, so the test stops `paas serve` (SIGTERM), reads the secret
//! from its store, and starts it again on the same data before it calls the NodeAgent.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use common::get;
use common::product::*;
use paas::domain::cluster::ClusterSpec;
use paas::domain::options::OptionsDoc;
use paas::domain::template::Renderer;
use paas::domain::{Cluster, ClusterId, Name, Timestamp};
use paas::orchestrator::facts::{cluster_facts, render_argv, render_files};
use serde_json::{Map, Value, json};

const PRODUCT: &str = "slurm";
const VERSION: &str = "22.05";
const P: Product = Product {
    name: PRODUCT,
    version: VERSION,
    description: "Slurm 22.05 cluster: one slurmctld, size slurmd",
    image_env: "PAAS_SLURM_IMAGE",
};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn product_dir() -> PathBuf {
    common::repo_root().join("examples/products/slurm/22.05")
}

fn read(file: &str) -> String {
    std::fs::read_to_string(product_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

// ----- both rendering phases, no Mesos ------------------------------------------------------

#[test]
fn template_renders_slurm_conf_with_every_node() {
    let doc = OptionsDoc::from_value(serde_json::from_str(&read("options.json")).unwrap()).unwrap();
    let opts = doc
        .resolve(&obj(json!({"size": 3, "cpus_per_node": 2})))
        .unwrap();
    let id = ClusterId::random();
    let ctx = json!({"opts": opts, "cluster_id": id.to_string(), "user": "alice",
                     "product": PRODUCT, "version": VERSION, "node_image": "paas-node:x"});
    let rendered = Renderer::spec()
        .render(&read("template.json"), &ctx)
        .unwrap();
    let spec = ClusterSpec::parse(&rendered).unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    let mut c = Cluster::new(
        id,
        "alice".into(),
        Name::parse(PRODUCT).unwrap(),
        Name::parse(VERSION).unwrap(),
        opts,
        spec,
        "secret".into(),
        Timestamp("t".into()),
    );
    let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["controller", "compute1", "compute2", "compute3"]);
    assert!(c.nodes.iter().all(|n| n.docker_image == "paas-slurm:22.05"));
    assert_eq!(c.nodes[0].port_names, ["slurmctld"]);
    assert_eq!(c.nodes[1].port_names, ["slurmd"]);
    // What the scheduler fills in at placement: every node on 127.0.0.1, its own ports.
    for (i, n) in c.nodes.iter_mut().enumerate() {
        n.address = Some("127.0.0.1".into());
        n.ports = n
            .port_names
            .iter()
            .map(|p| (p.clone(), 31000 + i as u16))
            .collect();
    }
    let facts = cluster_facts(&c);
    let r = Renderer::files();
    let svc = |name: &str| c.services.iter().find(|s| s.name.as_str() == name).unwrap();
    let files = render_files(&r, &facts, svc("slurm"), &c.nodes[2]).unwrap();
    let conf = files
        .iter()
        .find(|f| f.path == "/etc/slurm/slurm.conf")
        .unwrap();
    let conf = String::from_utf8(conf.content.clone()).unwrap();
    for line in [
        "SlurmctldHost=localhost(127.0.0.1)",
        "SlurmctldPort=31000",
        "NodeName=compute1 NodeAddr=127.0.0.1 Port=31001 CPUs=2 RealMemory=512 State=UNKNOWN",
        "NodeName=compute2 NodeAddr=127.0.0.1 Port=31002 CPUs=2 RealMemory=512 State=UNKNOWN",
        "NodeName=compute3 NodeAddr=127.0.0.1 Port=31003 CPUs=2 RealMemory=512 State=UNKNOWN",
        "PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        "ProctrackType=proctrack/linuxproc",
    ] {
        assert!(
            conf.lines().any(|l| l == line),
            "missing {line:?} in:\n{conf}"
        );
    }
    // One munge key, the same on every node.
    let key = |node: usize| {
        render_files(&r, &facts, svc("slurm"), &c.nodes[node])
            .unwrap()
            .into_iter()
            .find(|f| f.path == "/etc/paas/munge.key")
            .unwrap()
    };
    assert_eq!(key(0).content, key(3).content);
    assert!(key(0).content.len() >= 32, "munge wants 32 bytes or more");
    assert_eq!(key(0).mode, 0o400);
    // Each slurmd is started under its own node name; the ready check wants every node idle.
    let compute = svc("compute");
    let start = render_argv(
        &r,
        &facts,
        compute,
        &c.nodes[2],
        &compute.start.as_ref().unwrap().argv(),
    )
    .unwrap();
    assert_eq!(
        start,
        ["/usr/local/bin/paas-slurm-start", "compute", "compute2"]
    );
    assert_eq!(
        compute.ready.as_ref().unwrap().argv(),
        ["/usr/local/bin/paas-slurm-ready", "idle", "3"]
    );
    assert_eq!(svc("slurm").nodes.len(), 4);
    // Services are configured in template order: the files everywhere, then the controller.
    let order: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["slurm", "controller", "compute"]);
}

// ----- real Mesos -------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slurm_cluster_on_real_mesos() {
    let Some(master) = P.master() else { return };
    let Some(image) = P.product_image() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let mut s = Harness::new(serve(data.path(), &master));
    P.register(&s).await;

    let t0 = Instant::now();
    let id = P.launch(&s, json!({"size": 2, "image": image})).await;
    s.track(&id);
    let c = wait(&s, &id, t0, 600, settled).await;
    let to_ready = t0.elapsed();
    let logs = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
    assert_eq!(c["status"], "ready", "{c:#}\nlogs:\n{logs}");
    eprintln!("slurm size 2: POST → ready in {to_ready:.1?}");
    eprintln!("--- /logs of {id}:\n{logs}---");
    assert!(logs.contains("slurm cluster configured"), "{logs}");

    let secret = secret_via_store(&mut s, &master, &id).await;
    let c = wait(&s, &id, t0, 60, |c| c["status"] == "ready").await;
    let ctl = agent(&c, "controller", &secret);
    let sinfo = run(&ctl, &["sinfo", "--Node", "--long"]).await;
    eprintln!("$ sinfo --Node --long   (on the controller, through its NodeAgent)\n{sinfo}");
    let hostnames = run(&ctl, &["srun", "-N", "2", "hostname"]).await;
    eprintln!("$ srun -N 2 hostname   (on the controller, through its NodeAgent)\n{hostnames}");
    assert_eq!(
        hostnames.lines().filter(|l| !l.trim().is_empty()).count(),
        2,
        "one line per compute node: {hostnames:?}"
    );
    // Every node shares the host's network (and so its hostname): the node names tell the two
    // slurmd apart.
    let names = run(
        &ctl,
        &["srun", "-N", "2", "-l", "printenv", "SLURMD_NODENAME"],
    )
    .await;
    eprintln!("$ srun -N 2 -l printenv SLURMD_NODENAME\n{names}");
    let names: BTreeSet<&str> = names
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(names, BTreeSet::from(["compute1", "compute2"]));

    let running = containers_of(&id);
    assert_eq!(running.len(), 3, "one container per node: {running:?}");
    destroy(&s, &id).await;
    let logs = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
    assert!(
        logs.contains(&format!("slurm cluster {id} stopping")),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slurm_failures_are_clear_on_real_mesos() {
    let Some(master) = P.master() else { return };
    // The oversized case runs the real image (its controller fits): build or find it first,
    // whatever order the tests run in.
    let Some(image) = P.product_image() else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().await;
    let data = tempfile::tempdir().unwrap();
    let mut s = Harness::new(serve(data.path(), &master));
    P.register(&s).await;

    // 1. A product image that does not exist (and cannot be pulled: no registry here).
    let missing = "paas-slurm:no-such-image";
    let t0 = Instant::now();
    let id = P.launch(&s, json!({"size": 1, "image": missing})).await;
    s.track(&id);
    let c = wait(&s, &id, t0, 300, |c| {
        settled(c)
            || c["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no-such-image"))
    })
    .await;
    let reason = c["reason"].as_str().unwrap_or_default().to_owned();
    eprintln!("missing image: {} — {reason}", c["status"]);
    assert_ne!(c["status"], "ready", "{c:#}");
    assert!(
        reason.contains(missing),
        "the reason names the image: {c:#}"
    );
    destroy(&s, &id).await;

    // 2. Compute nodes larger than the agent: the cluster waits and says what is short.
    let t0 = Instant::now();
    let id = P
        .launch(
            &s,
            json!({"size": 2, "mem_per_node": 10_000_000, "image": image}),
        )
        .await;
    s.track(&id);
    let c = wait(&s, &id, t0, 60, |c| {
        c["reason"]
            .as_str()
            .is_some_and(|r| r.contains("do not fit") && r.contains("mem"))
    })
    .await;
    eprintln!(
        "too big: {} — {}",
        c["status"],
        c["reason"].as_str().unwrap_or_default()
    );
    assert!(
        matches!(c["status"].as_str(), Some("registered" | "scheduling")),
        "{c:#}"
    );
    // Placement is per node, not all or nothing: the controller fits and runs meanwhile.
    eprintln!("running meanwhile: {:?}", containers_of(&id));
    destroy(&s, &id).await;
}
