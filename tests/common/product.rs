//! Shared by the product end-to-end tests (`tests/product_*.rs`): rendering a product's
//! cluster without Mesos, the real-Mesos harness, registration and launch through REST, and
//! the NodeAgent workaround for running proof commands on a node.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use paas::domain::launch_request::{Caller, Fresh, LaunchRequest, Policy};
use paas::domain::options::OptionsDoc;
use paas::domain::template::Renderer;
use paas::domain::{Cluster, ClusterId, Timestamp};
use serde_json::Value;
#[allow(unused_imports)]
use serde_json::json;
use tokio::sync::{Mutex, MutexGuard};

use super::{JSON, Server, call, get};

/// The real-Mesos tests of a product share one agent, so they run one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// One product under test.
pub struct Product {
    pub name: &'static str,
    pub version: &'static str,
    pub description: &'static str,
    /// Env variable naming a prebuilt image of the product.
    pub image_env: &'static str,
}

impl Product {
    pub fn dir(&self) -> PathBuf {
        super::repo_root().join(format!("examples/products/{}/{}", self.name, self.version))
    }

    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    /// The cluster the API records when `opts` are launched (options resolved, template
    /// rendered and parsed), then placed as the scheduler places it: every node on 127.0.0.1,
    /// its `nth` port at `port(node index, nth)`.
    pub fn rendered_cluster(&self, opts: Value, port: impl Fn(usize, usize) -> u16) -> Cluster {
        let doc = OptionsDoc::from_value(serde_json::from_str(&self.read("options.json")).unwrap())
            .unwrap();
        let product: paas::domain::Product = serde_json::from_value(json!({
            "name": self.name, "version": self.version, "description": "",
            "created_at": "t", "updated_at": "t",
            "parts": {"template": true, "options": true, "orchestrator": true}
        }))
        .unwrap();
        let template = self.read("template.json");
        let request = LaunchRequest {
            product: &product,
            template: &template,
            options: &doc,
            user_options: opts.as_object().expect("options are an object"),
            owner: "alice",
            node_image: "paas-node:x",
            policy: Policy {
                caller: Caller::Admin,
                volume_roots: &[],
            },
        };
        let fresh = Fresh {
            id: ClusterId::generate(),
            secret: "secret".into(),
            make_secret: || {
                format!(
                    "{:032x}{:032x}",
                    rand::random::<u128>(),
                    rand::random::<u128>()
                )
            },
            now: Timestamp("t".into()),
        };
        let mut c = request
            .cluster(&Renderer::spec(), fresh)
            .unwrap_or_else(|e| panic!("{e}: {:?}", std::error::Error::source(&e)));
        for (i, n) in c.nodes.iter_mut().enumerate() {
            n.observed.address = Some("127.0.0.1".into());
            n.observed.ports = n
                .port_names
                .iter()
                .enumerate()
                .map(|(j, p)| (p.clone(), port(i, j)))
                .collect();
        }
        c
    }

    /// Everything a real-Mesos test of the product needs before it launches: the master, the
    /// product image, this binary's turn on the agent, and `paas serve` with the product
    /// registered. `None` (with the reason printed, or a failure under `CI`) when it cannot
    /// run here.
    pub async fn on_real_mesos(&self) -> Option<RealMesos> {
        let master = self.master()?;
        let image = self.product_image()?;
        let turn = ONE_AT_A_TIME.lock().await;
        let data = tempfile::tempdir().expect("tempdir");
        let server = Harness::new(serve(data.path(), &master));
        self.register(&server).await;
        Some(RealMesos {
            server,
            master,
            image,
            _data: data,
            _turn: turn,
        })
    }

    /// Launches `opts` and waits until the cluster is `ready`, printing the time from POST to
    /// ready and the script's summary, which must say `<name> cluster configured`.
    pub async fn launch_to_ready(&self, s: &mut Harness, opts: Value) -> (String, Value) {
        let size = opts["size"].clone();
        let t0 = Instant::now();
        let id = self.launch(s, opts).await;
        s.track(&id);
        let c = wait(s, &id, t0, 600, settled).await;
        let to_ready = t0.elapsed();
        let logs = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
        assert_eq!(c["status"], "ready", "{c:#}\nlogs:\n{logs}");
        eprintln!("{} size {size}: POST → ready in {to_ready:.1?}", self.name);
        eprintln!("--- /logs of {id}:\n{logs}---");
        assert!(
            logs.contains(&format!("{} cluster configured", self.name)),
            "{logs}"
        );
        (id, c)
    }

    /// `PATCH /clusters/{id}` with `{"options": changes}` (202 with a new generation), then
    /// waits until the cluster is `ready` at that generation, printing the time from PATCH to
    /// ready; returns the record.
    pub async fn update_to_ready(&self, s: &Server, id: &str, changes: Value) -> Value {
        let t0 = Instant::now();
        let r = call(
            "PATCH",
            &s.api(&format!("/clusters/{id}")),
            json!({ "options": changes }).to_string(),
            &[JSON],
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text());
        let generation = r.json()["generation"].as_u64().expect("generation");
        let c = wait(s, id, t0, 600, |c| {
            c["status"] == "failed" || (c["status"] == "ready" && c["generation"] == generation)
        })
        .await;
        let logs = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
        assert_eq!(c["status"], "ready", "{c:#}\nlogs:\n{logs}");
        eprintln!(
            "{} {changes}: PATCH → ready (generation {generation}) in {:.1?}",
            self.name,
            t0.elapsed()
        );
        eprintln!("--- /logs of {id}:\n{logs}---");
        c
    }

    /// Checks that each of the cluster's `nodes` runs in its own container, destroys the
    /// cluster (no container of it may be left) and checks the script's `stop` ran.
    pub async fn destroy_ready(&self, s: &Server, id: &str, nodes: usize) {
        let running = containers_of(id);
        assert_eq!(running.len(), nodes, "one container per node: {running:?}");
        destroy(s, id).await;
        let logs = get(&s.api(&format!("/clusters/{id}/logs"))).await.text();
        assert!(
            logs.contains(&format!("{} cluster {id} stopping", self.name)),
            "{logs}"
        );
    }

    pub fn master(&self) -> Option<String> {
        super::mesos_master(
            &format!("product_{}", self.name),
            "These tests need a real Mesos master + agent with the Docker containerizer and room \
             for a product cluster, e.g.\n  \
             MESOS_RESOURCES='cpus:8;mem:16384;disk:20480;ports:[31000-32000]' ../shared/realmesos/start.sh\n  \
             PAAS_NODE_IMAGE=$(deploy/images/build-node-image.sh) MESOS_MASTER=http://127.0.0.1:5050 \
             cargo test --test product_<name> -- --nocapture",
        )
    }

    pub fn skip(&self, why: &str) {
        let why = format!("SKIPPED product_{}: {why}", self.name);
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("{why}");
    }

    /// The product image to launch: `$<image_env>`, else the one
    /// `build-product-images.sh <name>` prints (it rebuilds only what changed; its `/paas` comes
    /// from `$PAAS_BINARY` or the node image `$PAAS_NODE_IMAGE`).
    pub fn product_image(&self) -> Option<String> {
        if let Ok(i) = std::env::var(self.image_env) {
            return Some(i);
        }
        if std::env::var_os("PAAS_BINARY").is_none()
            && std::env::var_os("PAAS_NODE_IMAGE").is_none()
        {
            self.skip(&format!(
                "set PAAS_NODE_IMAGE (or PAAS_BINARY) so the {} image can be built with the \
                  current paas, or {} to use a built one",
                self.name, self.image_env
            ));
            return None;
        }
        let started = Instant::now();
        let out = Command::new(super::repo_root().join("deploy/images/build-product-images.sh"))
            .arg(self.name)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run build-product-images.sh");
        assert!(
            out.status.success(),
            "build-product-images.sh {} failed",
            self.name
        );
        let image = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        eprintln!(
            "product image {image} (build-product-images.sh took {:.1?})",
            started.elapsed()
        );
        Some(image)
    }

    /// Registers the product from its folder as the README does: `paas products push DIR`
    /// (one bundle: `product.json`, template, options and script).
    pub async fn register(&self, s: &Server) {
        let out = Command::new(env!("CARGO_BIN_EXE_paas"))
            .args(["products", "push"])
            .arg(self.dir())
            .env("PAAS_URL", &s.url)
            .env_remove("PAAS_TOKEN")
            .output()
            .expect("run paas products push");
        assert!(
            out.status.success(),
            "paas products push: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = get(&s.api(&format!("/products/{}/{}", self.name, self.version))).await;
        assert_eq!(r.json()["description"], self.description, "product.json");
        assert_eq!(
            r.json()["parts"],
            json!({"template": true, "options": true, "orchestrator": true})
        );
    }

    pub async fn launch(&self, s: &Server, opts: Value) -> String {
        let r = call(
            "POST",
            &s.api(&format!("/products/{}/{}", self.name, self.version)),
            opts.to_string(),
            &[JSON],
        )
        .await;
        assert_eq!(r.status, 202, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_owned()
    }
}

/// See [`Product::on_real_mesos`]. Fields drop in order: the server (with the clusters of a
/// failed test) before its data, and the turn on the agent last.
pub struct RealMesos {
    pub server: Harness,
    pub master: String,
    /// The product image to launch.
    pub image: String,
    _data: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

pub fn node_image() -> String {
    std::env::var("PAAS_NODE_IMAGE").unwrap_or_else(|_| "paas-node:latest".into())
}

/// `paas serve` against `master`, with nodes of the node image and a ready timeout long
/// enough for the products' daemons.
pub fn serve(data: &Path, master: &str) -> Server {
    Server::start(
        data,
        &[
            "--master",
            master,
            "--node-image",
            &node_image(),
            "--ready-timeout",
            "4m",
        ],
    )
}

/// `paas serve` and the clusters a test launched: when the test fails, its clusters are
/// destroyed (before the server is killed) so no container outlives it.
pub struct Harness {
    server: Server,
    launched: Vec<String>,
}

impl Harness {
    pub fn new(server: Server) -> Self {
        Self {
            server,
            launched: Vec::new(),
        }
    }

    pub fn track(&mut self, id: &str) {
        self.launched.push(id.to_owned());
    }
}

impl std::ops::Deref for Harness {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl std::ops::DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for id in &self.launched {
            let url = self.server.api(&format!("/clusters/{id}"));
            let _ = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-X", "DELETE", &url])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.launched.iter().any(|id| !containers_of(id).is_empty())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Polls the cluster until `done` holds, printing each status change with its time since
/// `t0`; panics with the record and logs after `secs`.
pub async fn wait(
    s: &Server,
    id: &str,
    t0: Instant,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    loop {
        let c = get(&s.api(&format!("/clusters/{id}"))).await.json();
        let seen = format!(
            "{} {}",
            c["status"].as_str().unwrap_or_default(),
            c["reason"].as_str().unwrap_or_default()
        );
        if seen != last {
            eprintln!("[{:>6.1?}] cluster {id}: {seen}", t0.elapsed());
            last = seen;
        }
        if done(&c) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "cluster {id} stuck: {c:#}\nlogs:\n{}",
            get(&s.api(&format!("/clusters/{id}/logs"))).await.text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn settled(c: &Value) -> bool {
    matches!(c["status"].as_str(), Some("ready" | "failed"))
}

/// Destroys the cluster, then waits until no Docker container of it runs.
pub async fn destroy(s: &Server, id: &str) {
    let r = call("DELETE", &s.api(&format!("/clusters/{id}")), "", &[]).await;
    assert_eq!(r.status, 202, "{}", r.text());
    let t0 = Instant::now();
    wait(s, id, t0, 120, |c| c["status"] == "destroyed").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = containers_of(id);
        if left.is_empty() {
            eprintln!(
                "cluster {id} destroyed; no container of it left ({:.1?})",
                t0.elapsed()
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "containers of destroyed cluster {id} still run: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Executor ids (`<cluster>.<node>.<attempt>`) of the running Docker containers of `cluster`.
pub fn containers_of(cluster: &str) -> BTreeSet<String> {
    super::running_executors()
        .into_iter()
        .filter(|e| e.starts_with(cluster))
        .collect()
}

/// Runs `argv` on `node` of cluster `id` through the API's exec route (as `paas clusters
/// exec` does); its stdout, once it exited 0.
pub async fn exec(s: &Server, id: &str, node: &str, argv: &[&str]) -> String {
    let url = s.api(&format!("/clusters/{id}/nodes/{node}/exec"));
    let body = serde_json::json!({"argv": argv, "timeout_s": 120}).to_string();
    let mut out = super::sse::Sse::request("POST", &url, &[JSON], body).await;
    if out.status != 200 {
        let status = out.status;
        panic!("{argv:?}: {status} {}", out.text().await);
    }
    let events = out.drain(Duration::from_secs(130)).await;
    let text = |stream: &str| -> String {
        events
            .iter()
            .filter(|e| e.event == stream)
            .filter_map(|e| e.data["text"].as_str())
            .collect()
    };
    let (stdout, stderr) = (text("stdout"), text("stderr"));
    let exit = events.last().filter(|e| e.event == "exit").map(|e| &e.data);
    assert_eq!(
        exit,
        Some(&serde_json::json!({"code": 0})),
        "{argv:?}: stdout {stdout:?} stderr {stderr:?}"
    );
    stdout
}
