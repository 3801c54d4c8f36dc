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
//! - `slurm_scales_on_real_mesos`: size 2, `ready`; `PATCH {"options": {"size": 3}}` →
//!   `ready` at generation 2 (printing the time from PATCH to ready); `sinfo` on the controller
//!   lists 3 compute nodes, all idle, and `srun -N 3` runs on all three (slurm.conf changed
//!   on the controller and on the kept compute nodes, so their daemons were restarted); then
//!   `{"size": 2}`: compute3 is drained and removed, and `sinfo` lists 2 compute nodes again.
//! - `slurm_failures_are_clear_on_real_mesos`: a missing product image and a size the agent
//!   cannot hold each end with a reason that says why, and leave no container behind.
//!
//! Environment: `MESOS_MASTER` (unset: the real-Mesos tests print why and pass, or fail when
//! `CI` is set); `PAAS_NODE_IMAGE` (node image for `--node-image`, also where the product image
//! takes its `/paas` from) or `PAAS_BINARY`; `PAAS_SLURM_IMAGE` to use a ready product image
//! instead of building it (`deploy/images/build-product-images.sh slurm`, cached).
//!
//! Commands run on the nodes through the API's exec route (`POST …/nodes/{node}/exec`), as a
//! user would with `paas clusters exec`.

mod common;

use std::collections::BTreeSet;
use std::time::Instant;

use common::get;
use common::product::*;
use paas::domain::template::Renderer;
use paas::orchestrator::facts::{cluster_facts, render_argv, render_files};
use serde_json::json;

const P: Product = Product {
    name: "slurm",
    version: "22.05",
    description: "Slurm 22.05 cluster: one slurmctld, size slurmd",
    image_env: "PAAS_SLURM_IMAGE",
};

// ----- both rendering phases, no Mesos ------------------------------------------------------

#[test]
fn template_renders_slurm_conf_with_every_node() {
    // Placed on 127.0.0.1, node i's one port at 31000 + i.
    let c = P.rendered_cluster(json!({"size": 3, "cpus_per_node": 2}), |i, _| {
        31000 + i as u16
    });
    let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["controller", "compute1", "compute2", "compute3"]);
    assert!(c.nodes.iter().all(|n| n.docker_image == "paas-slurm:22.05"));
    assert_eq!(c.nodes[0].port_names, ["slurmctld"]);
    assert_eq!(c.nodes[1].port_names, ["slurmd"]);
    let facts = cluster_facts(&c);
    let r = Renderer::files();
    let svc = |name: &str| c.services.iter().find(|s| s.name.as_str() == name).unwrap();
    // slurm.conf belongs to the daemon of each node (a change restarts it there), and is the
    // same on every node.
    let conf_of = |service: &str, node: usize| {
        let files = render_files(&r, &facts, &c.secrets, svc(service), &c.nodes[node]).unwrap();
        assert_eq!(files.len(), 1, "{service}: only slurm.conf");
        assert_eq!(files[0].path, "/etc/slurm/slurm.conf");
        assert_eq!(files[0].mode, 0o644);
        String::from_utf8(files[0].content.clone()).unwrap()
    };
    let conf = conf_of("compute", 2);
    assert_eq!(conf, conf_of("controller", 0));
    assert!(conf.starts_with("# slurm.conf of paas cluster"), "{conf}");
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
        render_files(&r, &facts, &c.secrets, svc("slurm"), &c.nodes[node])
            .unwrap()
            .into_iter()
            .find(|f| f.path == "/etc/paas/munge.key")
            .unwrap()
    };
    assert_eq!(key(0).content, key(3).content);
    assert!(key(0).content.len() >= 32, "munge wants 32 bytes or more");
    assert_eq!(key(0).mode, 0o400);
    // The key is the cluster's random secret, not something derived from public values
    // (cluster id, product, version, owner): another cluster has another key.
    let secret = &c.secrets["munge_key"];
    assert_eq!(key(0).content, format!("{secret}\n").into_bytes());
    let other = P.rendered_cluster(json!({"size": 3}), |i, _| 31000 + i as u16);
    assert_ne!(&other.secrets["munge_key"], secret);
    for public in [c.id.to_string(), c.owner.clone()] {
        assert!(!secret.contains(&public));
    }
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
    let Some(mut r) = P.on_real_mesos().await else {
        return;
    };
    let s = &mut r.server;
    let (id, _) = P
        .launch_to_ready(s, json!({"size": 2, "image": r.image}))
        .await;

    let sinfo = exec(s, &id, "controller", &["sinfo", "--Node", "--long"]).await;
    eprintln!("$ sinfo --Node --long   (on the controller, through the exec route)\n{sinfo}");
    let hostnames = exec(s, &id, "controller", &["srun", "-N", "2", "hostname"]).await;
    eprintln!("$ srun -N 2 hostname   (on the controller, through the exec route)\n{hostnames}");
    assert_eq!(
        hostnames.lines().filter(|l| !l.trim().is_empty()).count(),
        2,
        "one line per compute node: {hostnames:?}"
    );
    // Every node shares the host's network (and so its hostname): the node names tell the two
    // slurmd apart.
    let names = exec(
        s,
        &id,
        "controller",
        &["srun", "-N", "2", "-l", "printenv", "SLURMD_NODENAME"],
    )
    .await;
    eprintln!("$ srun -N 2 -l printenv SLURMD_NODENAME\n{names}");
    let names: BTreeSet<&str> = names
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(names, BTreeSet::from(["compute1", "compute2"]));

    P.destroy_ready(s, &id, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slurm_scales_on_real_mesos() {
    let Some(mut r) = P.on_real_mesos().await else {
        return;
    };
    let s = &mut r.server;
    let (id, _) = P
        .launch_to_ready(s, json!({"size": 2, "image": r.image}))
        .await;
    let before = exec(s, &id, "controller", &["sinfo", "--Node", "--noheader"]).await;
    eprintln!("$ sinfo --Node --noheader   (size 2)\n{before}");

    let c = P.update_to_ready(s, &id, json!({"size": 3})).await;
    assert_eq!(c["generation"], 2, "{c:#}");
    let logs = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
    for line in [
        "service controller on controller: files changed, restart done",
        "service compute on compute1: files changed, restart done",
        "service compute on compute2: files changed, restart done",
    ] {
        assert!(logs.contains(line), "missing {line:?} in:\n{logs}");
    }
    assert!(
        !logs.contains("on compute3: files changed"),
        "the new node is started, not restarted:\n{logs}"
    );
    let sinfo = exec(
        s,
        &id,
        "controller",
        &["sinfo", "--Node", "--noheader", "--format=%N %t"],
    )
    .await;
    eprintln!("$ sinfo --Node --noheader --format='%N %t'   (size 3)\n{sinfo}");
    let nodes: BTreeSet<(&str, &str)> = sinfo.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(
        nodes,
        BTreeSet::from([
            ("compute1", "idle"),
            ("compute2", "idle"),
            ("compute3", "idle")
        ]),
        "{sinfo}"
    );
    let names = exec(
        s,
        &id,
        "controller",
        &["srun", "-N", "3", "-l", "printenv", "SLURMD_NODENAME"],
    )
    .await;
    eprintln!("$ srun -N 3 -l printenv SLURMD_NODENAME\n{names}");
    let names: BTreeSet<&str> = names
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(names, BTreeSet::from(["compute1", "compute2", "compute3"]));

    // And back to 2: compute3 is drained (`stop-node compute3`) and killed; slurm.conf loses it.
    let c = P.update_to_ready(s, &id, json!({"size": 2})).await;
    assert_eq!(c["generation"], 3, "{c:#}");
    let logs = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
    assert!(
        logs.contains("slurm: compute3 leaves the cluster"),
        "the drain hook ran:\n{logs}"
    );
    let sinfo = exec(
        s,
        &id,
        "controller",
        &["sinfo", "--Node", "--noheader", "--format=%N %t"],
    )
    .await;
    eprintln!("$ sinfo --Node --noheader --format='%N %t'   (size 2 again)\n{sinfo}");
    let nodes: BTreeSet<(&str, &str)> = sinfo.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(
        nodes,
        BTreeSet::from([("compute1", "idle"), ("compute2", "idle")]),
        "{sinfo}"
    );

    P.destroy_ready(s, &id, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slurm_failures_are_clear_on_real_mesos() {
    // The oversized case runs the real image (its controller fits): build or find it first,
    // whatever order the tests run in.
    let Some(mut r) = P.on_real_mesos().await else {
        return;
    };
    let (s, image) = (&mut r.server, &r.image);

    // 1. A product image that does not exist (and cannot be pulled: no registry here).
    let missing = "paas-slurm:no-such-image";
    let t0 = Instant::now();
    let id = P.launch(s, json!({"size": 1, "image": missing})).await;
    s.track(&id);
    let c = wait(s, &id, t0, 300, |c| {
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
    destroy(s, &id).await;

    // 2. Compute nodes larger than the agent: the cluster waits and says what is short.
    let t0 = Instant::now();
    let id = P
        .launch(
            s,
            json!({"size": 2, "mem_per_node": 10_000_000, "image": image}),
        )
        .await;
    s.track(&id);
    let c = wait(s, &id, t0, 60, |c| {
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
    destroy(s, &id).await;
}
