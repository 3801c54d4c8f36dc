//! `paas bench mesos`: the reference product at size 10 on a REAL Mesos master and agent with
//! the Docker containerizer (the kit of `../shared/realmesos`), from the launch to every node
//! RUNNING, against what the agent allows. Each round runs, one after the other:
//!
//! - **ours**: `paas serve --master URL` in a child process (started once, subscribed, the
//!   reference product registered); one `POST` of a size-10 launch, timed until the API's
//!   event stream has shown every node `running`; then `DELETE` and a wait until its
//!   containers are gone.
//! - **minimal**: a Mesos v1 HTTP scheduler in this process that does nothing else:
//!   SUBSCRIBE, the first offers, one ACCEPT of the same ten tasks, ACKs, ten RUNNING; then
//!   KILL and TEARDOWN. Its tasks are built by the framework's own code (the same cluster
//!   record rendered from the same template, the same placement and `TaskInfo` builder,
//!   the same `ExecutorInfo`, image and resources), so only the framework differs. Timed
//!   from its SUBSCRIBE.
//! - **docker**: the agent's floor without Mesos: ten concurrent `docker run -d --network
//!   host IMAGE` of the node image, timed until every one has returned (the container
//!   started), then removed.
//!
//! The order of ours and minimal alternates from round to round. Per round it prints the
//! phases (from the child's log, the event stream, the scheduler's events and the Docker
//! containers' own `Created`/`StartedAt`), and at the end the medians and the ratio
//! ours / minimal. Nothing asserts a time.
//!
//! Clean-up, also on error and Ctrl-C (the [`Cleanup`] guard): the child is stopped, both
//! frameworks are torn down at the master, and every container of theirs (and of the
//! Docker floor) is removed; the temporary store goes with its directory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use prost::Message;
use serde_json::{Map, Value, json};

use super::api::{LAUNCH, addr_of, expect_ok, register_reference};
use super::child::{ChildProc, Usage};
use super::{BenchError, RemoveDir, temp_dir};
use crate::cli::{Client, EventStream};
use crate::domain::launch_request::{Caller, Fresh, LaunchRequest, Policy};
use crate::domain::options::OptionsDoc;
use crate::domain::template::Renderer;
use crate::domain::{Cluster, ClusterId, Name, Product, Timestamp};
use crate::proto::mesos::v1 as mesos;
use crate::proto::mesos::v1::scheduler::{Call, Event, call, event};
use crate::scheduler::SchedulerConfig;
use crate::scheduler::launch;
use crate::scheduler::offers::{self, ExecutorOverhead, OfferView};
use crate::scheduler::tasks::TaskTemplate;
use crate::scheduler::transport::{ContentType, Endpoint, StreamId, Transport};

const TEMPLATE: &str = include_str!("../../examples/products/reference/minimal.json");
const OPTIONS: &str = include_str!("../../examples/products/reference/options/size.json");
/// The name prefix of the Docker floor's containers (removed by name at the end).
const FLOOR_PREFIX: &str = "paas-bench-floor-";

/// The flags of `paas bench mesos`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The real Mesos master (e.g. the kit's `http://127.0.0.1:5050`).
    #[arg(long, env = "MESOS_MASTER")]
    pub master: Option<String>,
    /// The node image (`deploy/images/build-node-image.sh` prints it).
    #[arg(long, env = "PAAS_NODE_IMAGE", default_value = "paas-node:latest")]
    pub image: String,
    /// Rounds of each (ours, minimal, docker), alternating.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Nodes of the reference cluster.
    #[arg(long, default_value_t = 10)]
    pub size: usize,
    /// Skip the bare `docker run` floor.
    #[arg(long)]
    pub no_docker: bool,
    /// Give up on a round (launch or clean-up) after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

fn setup(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Setup(format!("{what}: {e}"))
}

/// Runs the benchmark and prints its numbers; the last line is a `result:` summary a
/// program can read.
///
/// # Errors
/// [`BenchError`] when the master, Docker or the image is missing, a round does not finish
/// within `--timeout`, or something cannot be set up. Everything started is cleaned up.
pub async fn run(o: Options) -> Result<(), BenchError> {
    let master = o
        .master
        .clone()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            BenchError::Setup(
                "no Mesos master: pass --master URL or set MESOS_MASTER (the kit: ../shared/realmesos/start.sh prints it)".into(),
            )
        })?;
    let endpoint = Endpoint::parse(&master).map_err(|e| setup("--master", e))?;
    if o.size == 0 {
        return Err(BenchError::Setup("--size must be at least 1".into()));
    }
    docker_ok(&o.image)?;
    let timeout = Duration::from_secs(o.timeout.max(1));
    let dir = temp_dir("mesos")?;
    let mut cleanup = Cleanup {
        authority: endpoint.authority().to_owned(),
        child: None,
        frameworks: Vec::new(),
        removed: Vec::new(),
        done: false,
        _dir: RemoveDir(Some(dir.clone())),
    };

    // Ours: one server for every round, as a framework lives.
    let data = dir.join("data").display().to_string();
    let (child, url) = ChildProc::serve(
        std::path::Path::new(&data),
        &[
            "--master",
            &master,
            "--node-image",
            &o.image,
            "--allow-anonymous",
        ],
        Duration::from_secs(60),
    )?;
    let pid = child.pid();
    cleanup.child = Some(child);
    let addr = addr_of(&url)?;
    let fid = wait_subscribed(addr, timeout).await?;
    cleanup.frameworks.push(fid.clone());
    register_reference(addr).await?;
    let client = Client::new(&url, None);
    let minimal = MinimalSetup::new(&o, &master)?;
    println!(
        "mesos: the reference product, size {}, on the master at {master}; image {}; {} rounds; ours: `paas serve` pid {pid} (framework {fid})",
        o.size, o.image, o.rounds
    );
    if !o.no_docker {
        // Once unmeasured: the image's first start reads it from disk.
        docker_floor(&o.image, o.size, timeout).await?;
    }

    let (mut ours, mut mins, mut floors) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=o.rounds.max(1) {
        let load = load_average();
        let ours_first = round % 2 == 1;
        for which in if ours_first { [0, 1] } else { [1, 0] } {
            wait_agents_idle(&endpoint, timeout).await?;
            // The CPU each side's processes use in its round (the minimal scheduler runs in
            // this one, ours in the child), beside the agent and Docker on the same cores.
            let cpu = Cpu::now(cleanup.child.as_ref());
            if which == 0 {
                let r = ours_round(&client, addr, &mut cleanup, &o, &fid, timeout).await?;
                let used = cpu.since(cleanup.child.as_ref());
                println!("  round {round} ours:    {} {used}", r.line());
                ours.push(r.total);
            } else {
                let r = minimal_round(&minimal, &endpoint, &mut cleanup, timeout).await?;
                let used = cpu.since(cleanup.child.as_ref());
                println!("  round {round} minimal: {} {used}", r.line());
                mins.push(r.total);
            }
        }
        if !o.no_docker {
            let d = docker_floor(&o.image, o.size, timeout).await?;
            println!(
                "  round {round} docker:  {} concurrent `docker run -d` of the image: {:.3} s",
                o.size,
                d.as_secs_f64()
            );
            floors.push(d);
        }
        println!("  (load average before the round: {load})");
    }
    let left = cleanup.finish();
    let (mo, mm) = (median(&ours), median(&mins));
    let ratio = mo.as_secs_f64() / mm.as_secs_f64().max(1e-9);
    println!(
        "  medians: ours {:.3} s, minimal {:.3} s{}; ours / minimal = {ratio:.3} ({:+.1} %)",
        mo.as_secs_f64(),
        mm.as_secs_f64(),
        if floors.is_empty() {
            String::new()
        } else {
            format!(", docker {:.3} s", median(&floors).as_secs_f64())
        },
        (ratio - 1.0) * 100.0
    );
    println!(
        "result: rounds={} ours_ms={:.0} minimal_ms={:.0} docker_ms={:.0} ratio={ratio:.3} leftover_containers={left}",
        ours.len(),
        mo.as_secs_f64() * 1e3,
        mm.as_secs_f64() * 1e3,
        median(&floors).as_secs_f64() * 1e3
    );
    Ok(())
}

/// The median (the lower middle for an even count); zero for none.
fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or_default()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------------------------------
// Phases

/// CPU time of this process and of ours (the child `serve`) at one moment.
struct Cpu {
    bench: Option<Duration>,
    serve: Option<Duration>,
}

impl Cpu {
    fn now(serve: Option<&ChildProc>) -> Cpu {
        Cpu {
            bench: Usage::of_process().map(|u| u.cpu()),
            serve: serve.and_then(ChildProc::cpu_precise),
        }
    }

    /// `[CPU: this process X ms, ours Y ms]` since `self`.
    fn since(&self, serve: Option<&ChildProc>) -> String {
        let later = Cpu::now(serve);
        let ms = |a: Option<Duration>, b: Option<Duration>| {
            a.zip(b).map_or_else(
                || "?".to_owned(),
                |(a, b)| format!("{:.0} ms", b.saturating_sub(a).as_secs_f64() * 1e3),
            )
        };
        format!(
            "[CPU: this process {}, ours (serve) {}]",
            ms(self.bench, later.bench),
            ms(self.serve, later.serve)
        )
    }
}

/// One round's timeline, in offsets from its start.
struct Timed {
    total: Duration,
    /// `(what, offset)` in the order they are printed.
    phases: Vec<(String, Duration)>,
    /// The scheduler's CPU from the start to every task running: ours the child `serve`'s,
    /// the minimal one this process's.
    cpu: Option<Duration>,
}

impl Timed {
    fn line(&self) -> String {
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(what, at)| format!("{what} +{}", ms(*at)))
            .collect();
        let cpu = self.cpu.map_or_else(
            || "?".to_owned(),
            |c| format!("{:.1} ms", c.as_secs_f64() * 1e3),
        );
        format!(
            "{:.3} s to all RUNNING  [{}] [scheduler CPU to all RUNNING: {cpu}]",
            self.total.as_secs_f64(),
            phases.join(", ")
        )
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// `at` as an offset from `start` (zero if earlier).
fn since(start: SystemTime, at: SystemTime) -> Duration {
    at.duration_since(start).unwrap_or_default()
}

/// The first and last of `times` as phases `what first` / `what last` (one when equal).
fn spread(phases: &mut Vec<(String, Duration)>, what: &str, mut times: Vec<Duration>) {
    times.sort();
    match (times.first(), times.last()) {
        (Some(a), Some(b)) if a == b => phases.push((what.to_owned(), *a)),
        (Some(a), Some(b)) => {
            phases.push((format!("{what} first"), *a));
            phases.push((format!("{what} last"), *b));
        }
        _ => {}
    }
}

/// The agent's side: when the round's containers were created and started, by Docker's
/// own clock.
fn container_phases(
    start: SystemTime,
    containers: &[Container],
    phases: &mut Vec<(String, Duration)>,
) {
    spread(
        phases,
        "container created",
        containers
            .iter()
            .filter_map(|c| c.created)
            .map(|t| since(start, t))
            .collect(),
    );
    spread(
        phases,
        "container started",
        containers
            .iter()
            .filter_map(|c| c.started)
            .map(|t| since(start, t))
            .collect(),
    );
}

// ---------------------------------------------------------------------------------------
// Ours

/// Waits until the child's scheduler is subscribed and reconciled; its framework id.
async fn wait_subscribed(
    addr: std::net::SocketAddr,
    within: Duration,
) -> Result<String, BenchError> {
    let deadline = Instant::now() + within;
    loop {
        let body = expect_ok(addr, http::Method::GET, "/health", Bytes::new()).await;
        let h: Value = body
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        if let Some(fid) = h["mesos"]["framework_id"].as_str()
            && h["mesos"]["subscribed"] == true
            && h["mesos"]["reconciling"] == false
        {
            return Ok(fid.to_owned());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "`paas serve` did not subscribe to the master within {within:?}: {h}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next event of `events` before `deadline`, or why there is none.
async fn next_event(
    events: &mut EventStream,
    deadline: Instant,
    what: &str,
) -> Result<crate::cli::StreamEvent, BenchError> {
    match tokio::time::timeout_at(deadline.into(), events.next()).await {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(BenchError::Setup(format!(
            "the event stream ended while {what}"
        ))),
        Err(_) => Err(BenchError::Setup(format!("timed out while {what}"))),
    }
}

async fn ours_round(
    client: &Client,
    addr: std::net::SocketAddr,
    cleanup: &mut Cleanup,
    o: &Options,
    fid: &str,
    timeout: Duration,
) -> Result<Timed, BenchError> {
    // Opened first: every commit of the launch reaches it.
    let mut events = client
        .stream("/events")
        .await
        .map_err(|e| setup("GET /events", e))?;
    if let Some(c) = cleanup.child.as_mut() {
        c.take_lines();
    }
    let deadline = Instant::now() + timeout;
    let serve_cpu = cleanup.child.as_ref().and_then(ChildProc::cpu_precise);
    let wall = SystemTime::now();
    let start = Instant::now();
    let answer = client
        .post_json(LAUNCH, json!({"size": o.size}))
        .await
        .map_err(|e| setup("the launch POST", e))?;
    let answered = start.elapsed();
    let id = answer["id"]
        .as_str()
        .ok_or_else(|| BenchError::Setup(format!("no id in the launch answer {answer}")))?
        .to_owned();
    let mut staging = Vec::new();
    let mut running: BTreeMap<String, Duration> = BTreeMap::new();
    while running.len() < o.size {
        let e = next_event(&mut events, deadline, "waiting for every node to run").await?;
        if e.data["cluster"].as_str().or(e.data["id"].as_str()) != Some(id.as_str()) {
            continue;
        }
        match (e.event.as_str(), e.data["status"].as_str()) {
            ("node", Some("staging")) => staging.push(start.elapsed()),
            ("node", Some("running")) => {
                let node = e.data["node"].as_str().unwrap_or_default().to_owned();
                running.entry(node).or_insert_with(|| start.elapsed());
            }
            ("cluster", Some("failed")) => {
                return Err(BenchError::Setup(format!("the cluster failed: {}", e.data)));
            }
            _ => {}
        }
    }
    let total = start.elapsed();
    let serve_cpu = serve_cpu
        .zip(cleanup.child.as_ref().and_then(ChildProc::cpu_precise))
        .map(|(a, b)| b.saturating_sub(a));

    let mut phases = vec![("POST answered".to_owned(), answered)];
    let lines = cleanup
        .child
        .as_mut()
        .map(ChildProc::take_lines)
        .unwrap_or_default();
    // The scheduler's own log: when it revived offers and when it sent the ACCEPT.
    let logged = |needle: &str, of_cluster: bool| -> Vec<Duration> {
        lines
            .iter()
            .filter(|l| l.contains(needle) && (!of_cluster || l.contains(&id)))
            .filter_map(|l| log_time(l))
            .map(|t| since(wall, t))
            .collect()
    };
    spread(&mut phases, "REVIVE", logged("revived offers", false));
    spread(&mut phases, "ACCEPT", logged("launching", true));
    spread(&mut phases, "staging", staging);
    let containers = containers_of(&[fid.to_owned()])?;
    let task_prefix = id.clone();
    let mine: Vec<Container> = containers
        .into_iter()
        .filter(|c| c.executor_id.contains(&task_prefix))
        .collect();
    container_phases(wall, &mine, &mut phases);
    spread(&mut phases, "RUNNING", running.values().copied().collect());

    // Destroy, and wait until it is and its containers are gone.
    expect_ok(
        addr,
        http::Method::DELETE,
        &format!("/clusters/{id}"),
        Bytes::new(),
    )
    .await?;
    loop {
        let body = expect_ok(
            addr,
            http::Method::GET,
            &format!("/clusters/{id}"),
            Bytes::new(),
        )
        .await?;
        let c: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if c["status"] == "destroyed" {
            break;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "cluster {id} not destroyed within {timeout:?} ({})",
                c["status"]
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ids: BTreeSet<String> = mine.iter().map(|c| c.id.clone()).collect();
    wait_gone(&[fid.to_owned()], |c| ids.contains(&c.id), deadline).await?;
    Ok(Timed {
        total,
        phases,
        cpu: serve_cpu,
    })
}

/// The time at the start of a `tracing` log line (`2026-12-02T11:20:33.123456Z  INFO …`).
fn log_time(line: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(line.split_whitespace().next()?).ok()
}

// ---------------------------------------------------------------------------------------
// Minimal

/// What every minimal round launches: the reference cluster as the API would record it.
struct MinimalSetup {
    product: Product,
    options: OptionsDoc,
    size: usize,
    image: String,
    executor: ExecutorOverhead,
    tpl: TaskTemplate,
    user: String,
}

impl MinimalSetup {
    fn new(o: &Options, master: &str) -> Result<Self, BenchError> {
        // `paas serve`'s own settings for the executor and the kills.
        let cfg = SchedulerConfig::new(master);
        let options = serde_json::from_str::<Value>(OPTIONS)
            .map_err(|e| setup("the reference options", e))
            .and_then(|v| {
                OptionsDoc::from_value(v).map_err(|e| setup("the reference options", e))
            })?;
        let now = Timestamp::now();
        let name = |s: &str| Name::parse(s).map_err(|e| setup("a product name", e));
        Ok(Self {
            product: Product::new(name("reference")?, name("1.0.0")?, now),
            options,
            size: o.size,
            image: o.image.clone(),
            executor: cfg.executor,
            tpl: TaskTemplate {
                kill_grace: cfg.kill_grace,
            },
            user: cfg.user,
        })
    }

    /// A fresh cluster record, rendered as `POST /products/reference/1.0.0` renders it.
    fn cluster(&self) -> Result<Cluster, BenchError> {
        let mut user = Map::new();
        user.insert("size".into(), json!(self.size));
        let request = LaunchRequest {
            product: &self.product,
            template: TEMPLATE,
            options: &self.options,
            user_options: &user,
            owner: "bench",
            node_image: &self.image,
            policy: Policy {
                caller: Caller::Admin,
                volume_roots: &[],
            },
        };
        let fresh = Fresh {
            id: ClusterId::generate(),
            secret: uuid::Uuid::new_v4().simple().to_string(),
            make_secret: || uuid::Uuid::new_v4().simple().to_string(),
            now: Timestamp::now(),
        };
        request
            .cluster(&Renderer::spec(), fresh)
            .map_err(|e| setup("rendering the reference cluster", e))
    }
}

/// A minimal scheduler's connection: the stream and what its calls need.
struct MinimalSession {
    transport: Transport,
    leader: Endpoint,
    stream_id: StreamId,
    framework_id: Option<mesos::FrameworkId>,
}

impl MinimalSession {
    async fn send(&self, ty: call::Type, fill: impl FnOnce(&mut Call)) -> Result<(), BenchError> {
        let mut c = Call {
            framework_id: self.framework_id.clone(),
            r#type: Some(ty as i32),
            ..Default::default()
        };
        fill(&mut c);
        self.send_encoded(ty, Bytes::from(c.encode_to_vec())).await
    }

    /// Sends a call of type `ty` that is already encoded.
    async fn send_encoded(&self, ty: call::Type, body: Bytes) -> Result<(), BenchError> {
        self.transport
            .call(&self.leader, &self.stream_id, body, ContentType::Protobuf)
            .await
            .map_err(|e| setup(&format!("the minimal scheduler's {}", ty.as_str_name()), e))
    }
}

async fn minimal_round(
    m: &MinimalSetup,
    master: &Endpoint,
    cleanup: &mut Cleanup,
    timeout: Duration,
) -> Result<Timed, BenchError> {
    use mesos::framework_info::{Capability, capability};
    let mut cluster = m.cluster()?;
    let deadline = Instant::now() + timeout;
    let wall = SystemTime::now();
    let start = Instant::now();
    let cpu_start = Usage::of_process();
    let mut cpu = None;
    let transport = Transport::default();
    let info = mesos::FrameworkInfo {
        user: m.user.clone(),
        name: "paas-bench-minimal".into(),
        failover_timeout: Some(0.0),
        checkpoint: Some(true),
        roles: vec!["*".into()],
        capabilities: vec![Capability {
            r#type: Some(capability::Type::MultiRole as i32),
        }],
        ..Default::default()
    };
    let subscribe = Call {
        r#type: Some(call::Type::Subscribe as i32),
        subscribe: Some(call::Subscribe {
            framework_info: info,
            ..Default::default()
        }),
        ..Default::default()
    };
    let sub = transport
        .subscribe(
            master,
            Bytes::from(subscribe.encode_to_vec()),
            ContentType::Protobuf,
        )
        .await
        .map_err(|e| setup("the minimal scheduler's SUBSCRIBE", e))?;
    let mut records = sub.records;
    let mut s = MinimalSession {
        transport,
        leader: sub.leader,
        stream_id: sub.stream_id,
        framework_id: None,
    };
    let mut phases = Vec::new();
    let mut launched: HashMap<String, Option<mesos::AgentId>> = HashMap::new();
    let mut running: BTreeMap<String, Duration> = BTreeMap::new();
    let mut ended: BTreeSet<String> = BTreeSet::new();
    let mut total = None;
    let mut killed = false;
    loop {
        let bytes = match tokio::time::timeout_at(deadline.into(), records.next_record()).await {
            Err(_) => {
                return Err(BenchError::Setup(format!(
                    "the minimal scheduler timed out ({} of {} running, {} ended)",
                    running.len(),
                    m.size,
                    ended.len()
                )));
            }
            Ok(None) => {
                return Err(BenchError::Setup(
                    "the master closed the minimal scheduler's stream".into(),
                ));
            }
            Ok(Some(Err(e))) => return Err(setup("the minimal scheduler's stream", e)),
            Ok(Some(Ok(b))) => b,
        };
        let ev = Event::decode(bytes).map_err(|e| setup("an event of the master", e))?;
        match ev.r#type.and_then(|t| event::Type::try_from(t).ok()) {
            Some(event::Type::Subscribed) => {
                if let Some(sub) = ev.subscribed {
                    phases.push(("SUBSCRIBED".to_owned(), start.elapsed()));
                    cleanup.frameworks.push(sub.framework_id.value.clone());
                    s.framework_id = Some(sub.framework_id);
                }
            }
            Some(event::Type::Offers) => {
                let offers = ev.offers.map(|o| o.offers).unwrap_or_default();
                let ids: Vec<String> = offers.iter().map(|o| o.id.value.clone()).collect();
                if !launched.is_empty() || ids.is_empty() {
                    decline(&s, ids, 5.0).await?;
                    continue;
                }
                phases.push(("offers".to_owned(), start.elapsed()));
                let views: Vec<OfferView> = offers.iter().map(OfferView::from_offer).collect();
                let plan = offers::evaluate_gangs(
                    &views,
                    &launch::gangs(std::slice::from_ref(&cluster)),
                    &m.executor,
                );
                if plan.accepts.is_empty() {
                    // Not all of it fits yet (resources still being freed): wait for more.
                    decline(&s, ids, 1.0).await?;
                    continue;
                }
                // Recorded in memory only: no store, that is the point.
                let now = Timestamp::now();
                for placed in launch::placements(&plan.accepts, &offers).values() {
                    launch::record_placements(&mut cluster, placed, &now);
                }
                let recorded: HashMap<ClusterId, Cluster> =
                    [(cluster.id, cluster.clone())].into_iter().collect();
                for a in launch::accepts(plan.accepts, &offers, &recorded, &m.tpl) {
                    if !a.unbuilt.is_empty() {
                        return Err(BenchError::Setup(format!(
                            "{} tasks could not be built: {}",
                            a.unbuilt.len(),
                            a.unbuilt[0].error
                        )));
                    }
                    for l in &a.tasks {
                        let agent = mesos::AgentId {
                            value: a.agent_id.clone(),
                        };
                        launched.insert(l.task_id.to_string(), Some(agent));
                    }
                    let framework_id = s.framework_id.clone().ok_or_else(|| {
                        BenchError::Setup("offers before the framework was subscribed".into())
                    })?;
                    let accept = a.encode_call(framework_id, 5.0);
                    s.send_encoded(call::Type::Accept, Bytes::from(accept))
                        .await?;
                }
                phases.push(("ACCEPT answered".to_owned(), start.elapsed()));
                decline(&s, plan.declines, 5.0).await?;
            }
            Some(event::Type::Update) => {
                let Some(u) = ev.update else { continue };
                let st = u.status;
                let state =
                    mesos::TaskState::try_from(st.state).unwrap_or(mesos::TaskState::TaskUnknown);
                let task = st.task_id.value.clone();
                if let (Some(uuid), Some(agent)) = (st.uuid.clone(), st.agent_id.clone()) {
                    let ack = call::Acknowledge {
                        agent_id: agent,
                        task_id: st.task_id.clone(),
                        uuid,
                    };
                    s.send(call::Type::Acknowledge, |c| c.acknowledge = Some(ack))
                        .await?;
                }
                if state == mesos::TaskState::TaskRunning {
                    running
                        .entry(task.clone())
                        .or_insert_with(|| start.elapsed());
                } else if state.is_terminal() {
                    if !killed {
                        return Err(BenchError::Setup(format!(
                            "task {task} ended before every task ran: {} {}",
                            state.as_str_name(),
                            st.message.unwrap_or_default()
                        )));
                    }
                    ended.insert(task);
                }
                if total.is_none() && running.len() >= m.size {
                    total = Some(start.elapsed());
                    cpu = cpu_start
                        .zip(Usage::of_process())
                        .map(|(a, b)| b.since(&a).cpu());
                    for (t, agent) in &launched {
                        let kill = call::Kill {
                            task_id: mesos::TaskId { value: t.clone() },
                            agent_id: agent.clone(),
                            kill_policy: None,
                        };
                        s.send(call::Type::Kill, |c| c.kill = Some(kill)).await?;
                    }
                    killed = true;
                }
                if killed && ended.len() >= launched.len() {
                    break;
                }
            }
            Some(event::Type::Error) => {
                let msg = ev.error.map(|e| e.message).unwrap_or_default();
                return Err(BenchError::Setup(format!(
                    "the master refused the minimal scheduler: {msg}"
                )));
            }
            _ => {}
        }
    }
    let fid = s
        .framework_id
        .as_ref()
        .map(|f| f.value.clone())
        .unwrap_or_default();
    let containers = containers_of(std::slice::from_ref(&fid))?;
    s.send(call::Type::Teardown, |_| {}).await?;
    cleanup.torn_down(&fid);
    drop(records);
    let mut phases_out = Vec::new();
    // In time order: the call-side phases, the agent's, then the RUNNINGs.
    phases_out.append(&mut phases);
    container_phases(wall, &containers, &mut phases_out);
    spread(
        &mut phases_out,
        "RUNNING",
        running.values().copied().collect(),
    );
    wait_gone(std::slice::from_ref(&fid), |_| true, deadline).await?;
    Ok(Timed {
        total: total.unwrap_or_default(),
        phases: phases_out,
        cpu,
    })
}

async fn decline(s: &MinimalSession, ids: Vec<String>, refuse: f64) -> Result<(), BenchError> {
    if ids.is_empty() {
        return Ok(());
    }
    let decline = call::Decline {
        offer_ids: ids
            .into_iter()
            .map(|value| mesos::OfferId { value })
            .collect(),
        filters: Some(mesos::Filters {
            refuse_seconds: Some(refuse),
        }),
    };
    s.send(call::Type::Decline, |c| c.decline = Some(decline))
        .await
}

// ---------------------------------------------------------------------------------------
// The master and the agent

/// Waits until no agent of the master has resources in use: the last round's executors are
/// gone and their resources are back, so each round gets the whole agent in its first offer.
async fn wait_agents_idle(master: &Endpoint, within: Duration) -> Result<(), BenchError> {
    let deadline = Instant::now() + within;
    let addr = master.authority().to_owned();
    loop {
        let a = addr.clone();
        let body =
            tokio::task::spawn_blocking(move || http_blocking(&a, "GET", "/master/slaves", ""))
                .await
                .map_err(|e| setup("GET /master/slaves", e))?;
        let used = body
            .ok()
            .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
            .and_then(|v| {
                v["slaves"].as_array().map(|s| {
                    s.iter()
                        .map(|a| a["used_resources"]["cpus"].as_f64().unwrap_or(0.0))
                        .sum::<f64>()
                })
            });
        match used {
            Some(u) if u < 1e-6 => return Ok(()),
            _ if Instant::now() > deadline => {
                return Err(BenchError::Setup(format!(
                    "the agents still have resources in use after {within:?} (cpus in use: {used:?})"
                )));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// One HTTP/1.1 request without a runtime (it also runs from `Drop`): the status and body.
fn http_blocking(
    authority: &str,
    method: &str,
    path: &str,
    form: &str,
) -> std::io::Result<(u16, String)> {
    use std::net::ToSocketAddrs;
    let addr = authority
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("no address for {authority}")))?;
    let mut tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        tcp,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    )?;
    let mut text = String::new();
    tcp.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // The master answers with a length or chunks; a chunked JSON body is cut to its braces.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a <= b => &body[a..=b],
        _ => body,
    };
    Ok((status, body.to_owned()))
}

/// One Docker container of a framework's executors.
#[derive(Debug, Clone)]
struct Container {
    id: String,
    running: bool,
    executor_id: String,
    created: Option<SystemTime>,
    started: Option<SystemTime>,
}

fn docker(args: &[&str]) -> Result<String, BenchError> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| setup("running docker", e))?;
    if !out.status.success() {
        return Err(BenchError::Setup(format!(
            "docker {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Docker answers and has `image`.
fn docker_ok(image: &str) -> Result<(), BenchError> {
    docker(&["version", "--format", "{{.Server.Version}}"])
        .map_err(|e| BenchError::Setup(format!("no Docker daemon: {e}")))?;
    docker(&["image", "inspect", "--format", "{{.Id}}", image]).map_err(|_| {
        BenchError::Setup(format!(
            "no image {image}: build it with deploy/images/build-node-image.sh and pass it as --image or PAAS_NODE_IMAGE"
        ))
    })?;
    Ok(())
}

/// Every container (running or not) of the kit's executors (`mesos-*`) that belongs to one
/// of `frameworks`.
fn containers_of(frameworks: &[String]) -> Result<Vec<Container>, BenchError> {
    let ids = docker(&["ps", "-aq", "--filter", "name=^mesos-"])?;
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec![
        "inspect",
        "--format",
        "{{.Id}}|{{.State.Running}}|{{.Created}}|{{.State.StartedAt}}|{{range .Config.Env}}{{.}}|{{end}}",
    ];
    args.extend(ids);
    // A container removed meanwhile makes `docker inspect` fail for it alone; read the rest.
    let out = Command::new("docker")
        .args(&args)
        .output()
        .map_err(|e| setup("running docker", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter_map(|l| parse_container(l, frameworks))
        .collect())
}

fn parse_container(line: &str, frameworks: &[String]) -> Option<Container> {
    let mut f = line.split('|');
    let id = f.next()?.to_owned();
    let running = f.next()? == "true";
    let created = humantime::parse_rfc3339(f.next()?).ok();
    let started = humantime::parse_rfc3339(f.next()?).ok();
    let env: Vec<&str> = f.collect();
    let var = |k: &str| {
        env.iter()
            .find_map(|e| e.strip_prefix(k))
            .map(str::to_owned)
    };
    let framework = var("MESOS_FRAMEWORK_ID=")?;
    if !frameworks.contains(&framework) {
        return None;
    }
    Some(Container {
        id,
        running,
        executor_id: var("MESOS_EXECUTOR_ID=").unwrap_or_default(),
        created,
        started,
    })
}

/// Waits until no container of `frameworks` chosen by `which` runs.
async fn wait_gone(
    frameworks: &[String],
    which: impl Fn(&Container) -> bool,
    deadline: Instant,
) -> Result<(), BenchError> {
    loop {
        let left = containers_of(frameworks)?
            .into_iter()
            .filter(|c| c.running && which(c))
            .count();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "{left} executor containers still run"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `n` concurrent `docker run -d --network host IMAGE` (each returns once its container has
/// started), timed; then removed.
async fn docker_floor(image: &str, n: usize, within: Duration) -> Result<Duration, BenchError> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let names: Vec<String> = (0..n).map(|i| format!("{FLOOR_PREFIX}{tag}-{i}")).collect();
    let start = Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    for name in &names {
        let mut cmd = tokio::process::Command::new("docker");
        cmd.args(["run", "-d", "--network", "host", "--name", name, image])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        runs.spawn(async move { cmd.output().await });
    }
    let mut failure = None;
    let timed = tokio::time::timeout(within, async {
        while let Some(r) = runs.join_next().await {
            match r {
                Ok(Ok(out)) if out.status.success() => {}
                Ok(Ok(out)) => {
                    failure.get_or_insert(String::from_utf8_lossy(&out.stderr).trim().to_owned());
                }
                Ok(Err(e)) => {
                    failure.get_or_insert(e.to_string());
                }
                Err(e) => {
                    failure.get_or_insert(e.to_string());
                }
            }
        }
    })
    .await;
    let took = start.elapsed();
    remove_floor_containers();
    match (timed, failure) {
        (Err(_), _) => Err(BenchError::Setup(format!(
            "`docker run` did not return within {within:?}"
        ))),
        (Ok(()), Some(f)) => Err(BenchError::Setup(format!("docker run: {f}"))),
        (Ok(()), None) => Ok(took),
    }
}

/// Removes every container of the Docker floor (named [`FLOOR_PREFIX`]…).
fn remove_floor_containers() {
    let Ok(ids) = docker(&["ps", "-aq", "--filter", &format!("name=^{FLOOR_PREFIX}")]) else {
        return;
    };
    let ids: Vec<&str> = ids.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        let _ = docker(&args);
    }
}

// ---------------------------------------------------------------------------------------
// Clean-up

/// Everything the run started that outlives a process: dropped (at the end, on an error or
/// on Ctrl-C) it stops the child, tears both frameworks down at the master and removes their
/// containers, then the temporary directory.
struct Cleanup {
    /// The master's `host:port`.
    authority: String,
    child: Option<ChildProc>,
    /// Frameworks not yet torn down.
    frameworks: Vec<String>,
    /// Frameworks torn down, whose containers are removed at the end all the same.
    removed: Vec<String>,
    done: bool,
    /// Dropped last: the child's store is in it.
    _dir: RemoveDir,
}

impl Cleanup {
    fn torn_down(&mut self, fid: &str) {
        self.frameworks.retain(|f| f != fid);
        self.removed.push(fid.to_owned());
    }

    /// Cleans up now; the number of containers it could not remove.
    fn finish(&mut self) -> usize {
        self.done = true;
        drop(self.child.take());
        let all: Vec<String> = self
            .frameworks
            .iter()
            .chain(&self.removed)
            .cloned()
            .collect();
        for fid in std::mem::take(&mut self.frameworks) {
            if let Err(e) = http_blocking(
                &self.authority,
                "POST",
                "/master/teardown",
                &format!("frameworkId={fid}"),
            ) {
                eprintln!("mesos bench: could not tear down framework {fid}: {e}");
            }
        }
        // Torn down, the agent stops the executors; what is left is removed by force.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline
            && containers_of(&all).is_ok_and(|c| c.iter().any(|c| c.running))
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        let ids: Vec<String> = containers_of(&all)
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            let _ = docker(&args);
        }
        remove_floor_containers();
        containers_of(&all).map_or(0, |c| c.len())
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.done {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_container_of_ours_and_skips_others() {
        let fw = vec!["fw-1".to_owned()];
        let line = "abc|true|2026-12-02T11:00:00.123456789Z|2026-12-02T11:00:00.5Z|PATH=/bin|MESOS_FRAMEWORK_ID=fw-1|MESOS_EXECUTOR_ID=c.node0.1|";
        let c = parse_container(line, &fw).unwrap();
        assert_eq!(c.id, "abc");
        assert!(c.running);
        assert_eq!(c.executor_id, "c.node0.1");
        let (a, b) = (c.created.unwrap(), c.started.unwrap());
        assert_eq!(
            b.duration_since(a).unwrap(),
            Duration::from_nanos(376_543_211)
        );
        assert!(parse_container(&line.replace("fw-1", "fw-2"), &fw).is_none());
        assert!(parse_container("abc|false|x|y|PATH=/bin|", &fw).is_none());
    }

    #[test]
    fn reads_the_time_of_a_log_line() {
        let t =
            log_time("2026-12-02T11:20:33.250000Z  INFO paas::scheduler::driver: revived offers")
                .unwrap();
        let u = log_time("2026-12-02T11:20:33Z  INFO x").unwrap();
        assert_eq!(t.duration_since(u).unwrap(), Duration::from_millis(250));
        assert!(log_time("not a time").is_none());
    }

    #[test]
    fn medians_and_spreads() {
        let d = Duration::from_millis;
        assert_eq!(median(&[d(3), d(1), d(2)]), d(2));
        assert_eq!(median(&[d(4), d(1), d(2), d(3)]), d(2));
        assert_eq!(median(&[]), Duration::ZERO);
        let mut p = Vec::new();
        spread(&mut p, "x", vec![d(5), d(1)]);
        spread(&mut p, "y", vec![d(7)]);
        spread(&mut p, "z", vec![]);
        let names: Vec<&str> = p.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x first", "x last", "y"]);
    }

    #[test]
    fn the_minimal_cluster_is_the_reference_at_the_asked_size() {
        let o = Options {
            master: None,
            image: "img:1".into(),
            rounds: 1,
            size: 10,
            no_docker: true,
            timeout: 1,
        };
        let m = MinimalSetup::new(&o, "http://127.0.0.1:5050").unwrap();
        let c = m.cluster().unwrap();
        assert_eq!(c.nodes.len(), 10);
        assert!(c.nodes.iter().all(|n| n.docker_image == "img:1"));
        assert_eq!(launch::gangs(&[c]).len(), 1);
    }
}
