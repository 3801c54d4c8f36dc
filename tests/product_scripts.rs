//! The products' orchestration scripts (`examples/products/<name>/<version>/orchestrate.py`),
//! without Mesos.
//!
//! - `scripts_carry_the_current_shared_part`: a product uploads its script alone, so the part
//!   the scripts share (`examples/products/orchestrate_common.py`: reading the cluster record,
//!   dispatching the action, finding a service's nodes) cannot be imported; each script carries
//!   a copy between two marker lines, which must equal the file. `UPDATE_SHARED=1` rewrites
//!   the copies instead.
//! - `scripts_summarise_their_cluster`: each script runs as the orchestrator runs it (the one
//!   file in a private directory, `CLUSTER_JSON` beside it) on the cluster its template renders:
//!   `start` prints the summary, `stop` says so, an unknown action exits 2.

mod common;

use std::time::Duration;

use common::product::Product;
use paas::orchestrator::controller::cluster_json;
use paas::orchestrator::script::{ScriptRun, run};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SHARED: &str = "examples/products/orchestrate_common.py";
const BEGIN: &str =
    "# ----- begin examples/products/orchestrate_common.py (a copy: edit it there) -----\n";
const END: &str = "# ----- end examples/products/orchestrate_common.py -----\n";

/// Each product with a script, the options it launches with, and lines of its summary.
fn products() -> [(Product, Value, &'static [&'static str]); 2] {
    let product = |name, version| Product {
        name,
        version,
        description: "",
        image_env: "",
    };
    [
        (
            product("slurm", "22.05"),
            json!({"size": 2}),
            &[
                "  slurmctld: controller on 127.0.0.1:31000 (SlurmctldPort)",
                "  slurmd:    compute1 on 127.0.0.1:31010 (CPUs=1 RealMemory=512)",
                "  slurmd:    compute2 on 127.0.0.1:31020 (CPUs=1 RealMemory=512)",
                "  partition main: compute1,compute2 (default)",
            ],
        ),
        (
            product("spark", "4.x"),
            json!({"size": 2}),
            &[
                "  master:  spark://127.0.0.1:31000  web UI http://127.0.0.1:31001/  application UI port 31002",
                "  worker:  worker1 on 127.0.0.1:31010  web UI http://127.0.0.1:31011/ (cores=1 memory=768m)",
                "  worker:  worker2 on 127.0.0.1:31020  web UI http://127.0.0.1:31021/ (cores=1 memory=768m)",
            ],
        ),
    ]
}

#[test]
fn scripts_carry_the_current_shared_part() {
    let shared = std::fs::read_to_string(common::repo_root().join(SHARED)).unwrap();
    let update = std::env::var_os("UPDATE_SHARED").is_some();
    for (p, _, _) in products() {
        let path = p.dir().join("orchestrate.py");
        let script = p.read("orchestrate.py");
        let (Some(begin), Some(end)) = (script.find(BEGIN), script.find(END)) else {
            panic!(
                "{} lacks the marker lines {BEGIN:?} … {END:?}",
                path.display()
            );
        };
        let copy = &script[begin + BEGIN.len()..end];
        if copy == shared {
            continue;
        }
        if update {
            let fresh = format!(
                "{}{shared}{}",
                &script[..begin + BEGIN.len()],
                &script[end..]
            );
            std::fs::write(&path, fresh).unwrap();
            eprintln!("rewrote the copy of {SHARED} in {}", path.display());
        } else {
            panic!(
                "the copy of {SHARED} in {} differs from it; edit {SHARED}, then run \
                 UPDATE_SHARED=1 cargo test --test product_scripts",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn scripts_summarise_their_cluster() {
    for (p, opts, lines) in products() {
        let c = p.rendered_cluster(opts, |i, j| 31000 + 10 * i as u16 + j as u16);
        let script = p.read("orchestrate.py");
        let go = async |action: &str| {
            let dir = tempfile::tempdir().unwrap();
            let mut out = Vec::new();
            let r = run(
                ScriptRun {
                    script: script.as_bytes(),
                    action,
                    cluster_json: &cluster_json(&c),
                    env: vec![("CLUSTER_ID".into(), c.id.to_string())],
                    timeout: Duration::from_secs(30),
                    work_dir: dir.path(),
                },
                &CancellationToken::new(),
                |chunk| {
                    out.extend(chunk);
                    async {}
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{} {action}: {e}", p.name));
            (r.ended, String::from_utf8(out).unwrap())
        };

        let (ended, out) = go("start").await;
        assert!(ended.success(), "{} start {ended:?}:\n{out}", p.name);
        let first = format!(
            "{} cluster {} ({} {}) of alice",
            p.name, c.id, p.name, p.version
        );
        assert!(out.starts_with(&first), "{}:\n{out}", p.name);
        assert!(
            out.contains(&format!("{} cluster configured", p.name)),
            "{out}"
        );
        for line in lines {
            assert!(
                out.lines().any(|l| l == *line),
                "{line:?} missing from:\n{out}"
            );
        }

        let (ended, out) = go("stop").await;
        assert!(ended.success(), "{} stop {ended:?}:\n{out}", p.name);
        assert_eq!(out, format!("{} cluster {} stopping\n", p.name, c.id));

        let (ended, out) = go("restart").await;
        assert_eq!(
            ended,
            paas::orchestrator::client::Ended::Code(2),
            "{}:\n{out}",
            p.name
        );
        assert_eq!(out, "unknown action 'restart' (start, stop, stop-node)\n");

        let last = &c.nodes.last().unwrap().name;
        let (ended, out) = go(&format!("stop-node {last}")).await;
        assert!(ended.success(), "{} stop-node {ended:?}:\n{out}", p.name);
        assert!(
            out.starts_with(&format!("{}: {last} leaves the cluster", p.name)),
            "{out}"
        );
        let (ended, out) = go("stop-node").await;
        assert_eq!(ended, paas::orchestrator::client::Ended::Code(2), "{out}");
        assert!(out.contains("wrong arguments"), "{out}");
    }
}
