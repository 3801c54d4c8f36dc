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
//! Two more sides on demand:
//! - **long-lived minimal** (`--long-lived-minimal`): the minimal scheduler with ours'
//!   lifetime: subscribed once (suppressed, a week's `failover_timeout`), then per round
//!   REVIVE, the same launch, SUPPRESS and the kills; timed from its REVIVE.
//! - **ours-2** (`--second-store-dir DIR`): a second `paas serve` with its store in `DIR`
//!   (a tmpfs, say): the same framework beside ours, which also shows how far two identical
//!   sides differ in one run.
//!
//! Each side goes first in turn from round to round. Per round it prints the phases (from
//! the child's log, the event stream, the scheduler's events and the Docker containers' own
//! `Created`/`StartedAt`), and at the end each phase's median per side, the medians and the
//! ratio ours / minimal, and the ratios of the rounds one by one (ours' time over the other
//! side's in the same round) with their mean and a 95 % bootstrap interval of it: single
//! rounds spread by more than the 5 % asked, and pairing them by round keeps a slow spell
//! of the machine out of the comparison. Nothing asserts a time.
//!
//! Clean-up, also on error and Ctrl-C (the [`Cleanup`] guard): ours' children are stopped,
//! every framework of the run is torn down at the master, and every container of theirs
//! (and of the Docker floor) is removed; the temporary stores go with their directories.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use prost::Message;
use serde_json::{Map, Value, json};

use super::api::{LAUNCH, addr_of, expect_ok, register_reference};
use super::child::{ChildProc, Usage};
use super::provision::percentile;
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
use crate::scheduler::transport::{ContentType, Endpoint, RecordStream, StreamId, Transport};

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
    /// Also run a third side each round: a minimal scheduler subscribed once for the whole
    /// run (a week's `failover_timeout`, as ours), which REVIVEs, launches, SUPPRESSes and
    /// kills each round, timed from its REVIVE: the minimal one with ours' lifetime.
    #[arg(long)]
    pub long_lived_minimal: bool,
    /// Also run a second `paas serve` with its store under this directory (e.g. a tmpfs,
    /// `/dev/shm`) as a fourth side, "ours-2": the same framework side by side with
    /// another disk.
    #[arg(long)]
    pub second_store_dir: Option<std::path::PathBuf>,
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
        children: Vec::new(),
        frameworks: Vec::new(),
        removed: Vec::new(),
        done: false,
        _dir: RemoveDir(Some(dir.clone())),
    };

    // Ours: one server for every round, as a framework lives (and a second one on another
    // store when asked).
    let mut ours_sides =
        vec![Ours::start(&o, &master, &dir.join("data"), &mut cleanup, timeout).await?];
    let _second_dir = match &o.second_store_dir {
        Some(parent) => {
            let d = parent.join(format!(
                "paas-bench-mesos-{}",
                uuid::Uuid::new_v4().simple()
            ));
            std::fs::create_dir_all(&d).map_err(|e| setup("--second-store-dir", e))?;
            let keep = RemoveDir(Some(d.clone()));
            ours_sides
                .push(Ours::start(&o, &master, &d.join("data"), &mut cleanup, timeout).await?);
            Some(keep)
        }
        None => None,
    };
    let minimal = MinimalSetup::new(&o, &master)?;
    println!(
        "mesos: the reference product, size {}, on the master at {master}; image {}; {} rounds",
        o.size, o.image, o.rounds
    );
    for (i, side) in ours_sides.iter().enumerate() {
        println!(
            "  {}: `paas serve` pid {} (framework {}), store in {}",
            OURS[i],
            cleanup.children[i].pid(),
            side.fid,
            side.data.display()
        );
    }
    if !o.no_docker {
        // Once unmeasured: the image's first start reads it from disk.
        docker_floor(&o.image, o.size, timeout).await?;
    }

    let mut long_lived = if o.long_lived_minimal {
        let fw = minimal_subscribe(&minimal, &endpoint, true, Instant::now() + timeout).await?;
        cleanup.frameworks.push(fw.id());
        println!("  long-lived minimal scheduler: framework {}", fw.id());
        Some(fw)
    } else {
        None
    };
    let mut sides = vec![0, 1];
    if long_lived.is_some() {
        sides.push(2);
    }
    if ours_sides.len() > 1 {
        sides.push(3);
    }
    // Each side's totals, and every phase's offsets over the rounds:
    // [ours, minimal, long-lived minimal, ours-2].
    let mut totals: [Vec<Duration>; 4] = Default::default();
    let mut by_phase: [PhaseTimes; 4] = Default::default();
    let mut floors = Vec::new();
    for round in 1..=o.rounds.max(1) {
        let load = load_average();
        // Each side goes first in turn.
        let mut order = sides.to_vec();
        order.rotate_left((round - 1) % sides.len());
        for which in order {
            wait_agents_idle(&endpoint, timeout).await?;
            // The CPU each side's processes use in its round (the minimal schedulers run in
            // this one, ours in the child), beside the agent and Docker on the same cores.
            let cpu = Cpu::now(&cleanup.children);
            let (name, r) = match (which, long_lived.as_mut()) {
                (0 | 3, _) => {
                    let i = usize::from(which == 3);
                    let child = &mut cleanup.children[i];
                    let r = ours_round(&ours_sides[i], child, &o, timeout).await?;
                    (if i == 0 { "ours:    " } else { "ours-2:  " }, r)
                }
                (1, _) | (_, None) => (
                    "minimal: ",
                    minimal_round(&minimal, &endpoint, &mut cleanup, timeout).await?,
                ),
                (_, Some(fw)) => (
                    "minimal long-lived: ",
                    long_lived_round(&minimal, fw, timeout).await?,
                ),
            };
            let used = cpu.since(&cleanup.children);
            println!("  round {round} {name}{} {used}", r.line());
            by_phase[which].add(&r);
            totals[which].push(r.total);
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
    drop(long_lived);
    println!(
        "  medians of each phase over the rounds (ms after the POST / the SUBSCRIBE / the REVIVE):"
    );
    let names = ["ours", "minimal", "long-lived", "ours-2"];
    let columns: Vec<(&str, &PhaseTimes)> =
        sides.iter().map(|&i| (names[i], &by_phase[i])).collect();
    for line in phase_table(&columns) {
        println!("    {line}");
    }
    let [ours, mins, lived, second] = &totals;
    let (mo, mm) = (median(ours), median(mins));
    let ratio = mo.as_secs_f64() / mm.as_secs_f64().max(1e-9);
    println!(
        "  medians: ours {:.3} s, minimal {:.3} s{}; ours / minimal = {ratio:.3} ({:+.1} %); by the means {:.3}",
        mo.as_secs_f64(),
        mm.as_secs_f64(),
        if floors.is_empty() {
            String::new()
        } else {
            format!(", docker {:.3} s", median(&floors).as_secs_f64())
        },
        (ratio - 1.0) * 100.0,
        mean(ours) / mean(mins).max(1e-9)
    );
    // Side by side round by round: each round's ratio, so that a slow spell of the machine
    // weighs on both sides of it alike.
    let mut extra_fields = String::new();
    for (name, key, other) in [
        ("minimal", "paired", mins),
        ("long-lived", "paired_long_lived", lived),
        ("ours-2", "paired_ours2", second),
    ] {
        if let Some(p) = PairedRatio::of(ours, other) {
            println!(
                "  per round, ours / {name}: mean {:.3}, 95 % interval {:.3}–{:.3} (bootstrap over {} rounds)",
                p.mean, p.low, p.high, p.rounds
            );
            extra_fields.push_str(&format!(" {key}={:.3} {key}_high={:.3}", p.mean, p.high));
        }
    }
    let second_label = format!(
        "ours-2 (store in {})",
        o.second_store_dir
            .as_deref()
            .unwrap_or(std::path::Path::new("?"))
            .display()
    );
    for (label, short, key, times) in [
        (
            "long-lived minimal (its REVIVE to all RUNNING)",
            "long-lived",
            "long_lived",
            lived,
        ),
        (second_label.as_str(), "ours-2", "ours2", second),
    ] {
        if times.is_empty() {
            continue;
        }
        let m = median(times);
        let r = mo.as_secs_f64() / m.as_secs_f64().max(1e-9);
        println!(
            "  {label} {:.3} s; ours / {short} = {r:.3} ({:+.1} %); by the means {:.3}; {short} / minimal = {:.3}",
            m.as_secs_f64(),
            (r - 1.0) * 100.0,
            mean(ours) / mean(times).max(1e-9),
            m.as_secs_f64() / mm.as_secs_f64().max(1e-9)
        );
        extra_fields.push_str(&format!(
            " {key}_ms={:.0} ratio_{key}={r:.3}",
            m.as_secs_f64() * 1e3
        ));
    }
    println!(
        "result: rounds={} ours_ms={:.0} minimal_ms={:.0} docker_ms={:.0} ratio={ratio:.3}{extra_fields} leftover_containers={left}",
        ours.len(),
        mo.as_secs_f64() * 1e3,
        mm.as_secs_f64() * 1e3,
        median(&floors).as_secs_f64() * 1e3
    );
    Ok(())
}

/// The ratios `a / b` of the rounds' times, round by round: their mean and a 95 % bootstrap
/// interval of that mean.
#[derive(Debug, Clone, Copy, PartialEq)]
struct PairedRatio {
    rounds: usize,
    mean: f64,
    low: f64,
    high: f64,
}

impl PairedRatio {
    /// Resamples drawn for the interval.
    const RESAMPLES: usize = 4000;

    /// `None` without a round of both sides. The resampling uses a fixed seed: the same
    /// rounds give the same interval.
    fn of(a: &[Duration], b: &[Duration]) -> Option<Self> {
        let ratios: Vec<f64> = a
            .iter()
            .zip(b)
            .filter(|(_, b)| !b.is_zero())
            .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
            .collect();
        if ratios.is_empty() {
            return None;
        }
        let n = ratios.len();
        let mean = ratios.iter().sum::<f64>() / n as f64;
        // splitmix64: enough to draw indices, and no dependency for it.
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut draw = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ratios[usize::try_from((z ^ (z >> 31)) % n as u64).unwrap_or(0)]
        };
        let mut means: Vec<f64> = (0..Self::RESAMPLES)
            .map(|_| (0..n).map(|_| draw()).sum::<f64>() / n as f64)
            .collect();
        means.sort_by(f64::total_cmp);
        Some(Self {
            rounds: n,
            mean,
            low: percentile(&means, 0.025),
            high: percentile(&means, 0.975),
        })
    }
}

/// The mean in seconds; zero for none.
fn mean(v: &[Duration]) -> f64 {
    v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len().max(1) as f64
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

/// CPU time of this process and of ours (the child `serve`s, together) at one moment.
struct Cpu {
    bench: Option<Duration>,
    serve: Option<Duration>,
}

impl Cpu {
    fn now(serve: &[ChildProc]) -> Cpu {
        Cpu {
            bench: Usage::of_process().map(|u| u.cpu()),
            serve: serve.iter().map(ChildProc::cpu_precise).sum(),
        }
    }

    /// `[CPU: this process X ms, ours Y ms]` since `self`.
    fn since(&self, serve: &[ChildProc]) -> String {
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

/// Each phase's offsets over the rounds of one side, in the order the phases first came.
#[derive(Default)]
struct PhaseTimes(Vec<(String, Vec<Duration>)>);

impl PhaseTimes {
    fn add(&mut self, r: &Timed) {
        let total = ("all RUNNING".to_owned(), r.total);
        for (what, at) in r.phases.iter().chain(std::iter::once(&total)) {
            match self.0.iter_mut().find(|(w, _)| w == what) {
                Some((_, v)) => v.push(*at),
                None => self.0.push((what.clone(), vec![*at])),
            }
        }
    }

    fn median_of(&self, what: &str) -> Option<Duration> {
        self.0
            .iter()
            .find(|(w, _)| w == what)
            .map(|(_, v)| median(v))
    }
}

/// One line per phase: its median on each side (`-` where a side has no such phase), the
/// first side's phases first in their order, then the others' own.
fn phase_table(sides: &[(&str, &PhaseTimes)]) -> Vec<String> {
    let mut names: Vec<&str> = Vec::new();
    for (_, side) in sides {
        for (w, _) in &side.0 {
            if !names.contains(&w.as_str()) {
                names.push(w);
            }
        }
    }
    let cell = |d: Option<Duration>| {
        d.map_or_else(
            || "-".to_owned(),
            |d| format!("{:.1}", d.as_secs_f64() * 1e3),
        )
    };
    let mut head = format!("{:<24}", "phase");
    for (name, _) in sides {
        head.push_str(&format!(" {name:>10}"));
    }
    let mut lines = vec![head];
    for w in names {
        let mut line = format!("{w:<24}");
        for (_, side) in sides {
            line.push_str(&format!(" {:>10}", cell(side.median_of(w))));
        }
        lines.push(line);
    }
    lines
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

/// The names of ours' sides, by their order of start.
const OURS: [&str; 2] = ["ours", "ours-2"];

/// One of ours' servers: the child `paas serve` (in [`Cleanup::children`]), subscribed, the
/// reference product registered.
struct Ours {
    client: Client,
    addr: std::net::SocketAddr,
    fid: String,
    data: std::path::PathBuf,
}

impl Ours {
    async fn start(
        o: &Options,
        master: &str,
        data: &std::path::Path,
        cleanup: &mut Cleanup,
        timeout: Duration,
    ) -> Result<Self, BenchError> {
        let (child, url) = ChildProc::serve(
            data,
            &[
                "--master",
                master,
                "--node-image",
                &o.image,
                "--allow-anonymous",
            ],
            Duration::from_secs(60),
        )?;
        cleanup.children.push(child);
        let addr = addr_of(&url)?;
        let fid = wait_subscribed(addr, timeout).await?;
        cleanup.frameworks.push(fid.clone());
        register_reference(addr).await?;
        Ok(Self {
            client: Client::new(&url, None),
            addr,
            fid,
            data: data.to_owned(),
        })
    }
}

async fn ours_round(
    ours: &Ours,
    child: &mut ChildProc,
    o: &Options,
    timeout: Duration,
) -> Result<Timed, BenchError> {
    let (client, addr, fid) = (&ours.client, ours.addr, ours.fid.as_str());
    // Opened first: every commit of the launch reaches it.
    let mut events = client
        .stream("/events")
        .await
        .map_err(|e| setup("GET /events", e))?;
    child.take_lines();
    let deadline = Instant::now() + timeout;
    let serve_cpu = child.cpu_precise();
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
        .zip(child.cpu_precise())
        .map(|(a, b)| b.saturating_sub(a));

    let mut phases = vec![("POST answered".to_owned(), answered)];
    let lines = child.take_lines();
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
    framework_id: mesos::FrameworkId,
}

impl MinimalSession {
    async fn send(&self, ty: call::Type, fill: impl FnOnce(&mut Call)) -> Result<(), BenchError> {
        let mut c = Call {
            framework_id: Some(self.framework_id.clone()),
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

/// A minimal scheduler subscribed at the master: its calls and its event stream.
struct MinimalFramework {
    s: MinimalSession,
    records: RecordStream,
}

impl MinimalFramework {
    fn id(&self) -> String {
        self.s.framework_id.value.clone()
    }
}

/// SUBSCRIBEs a minimal scheduler and waits for SUBSCRIBED. A `long_lived` one asks the
/// master to keep it for a week across a lost connection, as `paas serve` does; the other
/// one goes with its connection (`failover_timeout` 0).
async fn minimal_subscribe(
    m: &MinimalSetup,
    master: &Endpoint,
    long_lived: bool,
    deadline: Instant,
) -> Result<MinimalFramework, BenchError> {
    use mesos::framework_info::{Capability, capability};
    let info = mesos::FrameworkInfo {
        user: m.user.clone(),
        name: if long_lived {
            "paas-bench-minimal-long-lived"
        } else {
            "paas-bench-minimal"
        }
        .into(),
        failover_timeout: Some(if long_lived { 7.0 * 86_400.0 } else { 0.0 }),
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
            // The long-lived one gets no offer before its first round's REVIVE: it would
            // hold the agent while the other sides run.
            suppressed_roles: if long_lived {
                vec!["*".into()]
            } else {
                Vec::new()
            },
        }),
        ..Default::default()
    };
    let transport = Transport::default();
    let sub = transport
        .subscribe(
            master,
            Bytes::from(subscribe.encode_to_vec()),
            ContentType::Protobuf,
        )
        .await
        .map_err(|e| setup("the minimal scheduler's SUBSCRIBE", e))?;
    let mut records = sub.records;
    loop {
        let ev = next_record(&mut records, deadline, "waiting for SUBSCRIBED").await?;
        match ev.r#type.and_then(|t| event::Type::try_from(t).ok()) {
            Some(event::Type::Subscribed) => {
                if let Some(subscribed) = ev.subscribed {
                    return Ok(MinimalFramework {
                        s: MinimalSession {
                            transport,
                            leader: sub.leader,
                            stream_id: sub.stream_id,
                            framework_id: subscribed.framework_id,
                        },
                        records,
                    });
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
}

/// The next event on a minimal scheduler's stream, by `deadline`.
async fn next_record(
    records: &mut RecordStream,
    deadline: Instant,
    what: &str,
) -> Result<Event, BenchError> {
    let bytes = match tokio::time::timeout_at(deadline.into(), records.next_record()).await {
        Err(_) => return Err(BenchError::Setup(format!("timed out while {what}"))),
        Ok(None) => {
            return Err(BenchError::Setup(
                "the master closed the minimal scheduler's stream".into(),
            ));
        }
        Ok(Some(Err(e))) => return Err(setup("the minimal scheduler's stream", e)),
        Ok(Some(Ok(b))) => b,
    };
    Event::decode(bytes).map_err(|e| setup("an event of the master", e))
}

/// What one launch of a minimal scheduler saw, as offsets from its round's start.
struct MinimalLaunch {
    /// To every task RUNNING.
    total: Duration,
    /// This process's CPU from the round's start to every task RUNNING.
    cpu: Option<Duration>,
    running: Vec<Duration>,
}

/// One launch of `cluster` by a subscribed minimal scheduler: at the first offers one ACCEPT
/// of its tasks, ACKs, every task RUNNING; then SUPPRESS (so it holds no offer once done)
/// and a KILL of every task, until every one has ended. Other offers are declined.
async fn minimal_launch(
    m: &MinimalSetup,
    fw: &mut MinimalFramework,
    mut cluster: Cluster,
    (start, cpu_start): (Instant, Option<Usage>),
    deadline: Instant,
    phases: &mut Vec<(String, Duration)>,
) -> Result<MinimalLaunch, BenchError> {
    let s = &fw.s;
    let mut launched: HashMap<String, Option<mesos::AgentId>> = HashMap::new();
    let mut running: BTreeMap<String, Duration> = BTreeMap::new();
    let mut ended: BTreeSet<String> = BTreeSet::new();
    let mut done: Option<(Duration, Option<Duration>)> = None;
    loop {
        let what = format!(
            "the minimal scheduler waited ({} of {} running, {} ended)",
            running.len(),
            m.size,
            ended.len()
        );
        let ev = next_record(&mut fw.records, deadline, &what).await?;
        match ev.r#type.and_then(|t| event::Type::try_from(t).ok()) {
            Some(event::Type::Offers) => {
                let offers = ev.offers.map(|o| o.offers).unwrap_or_default();
                let ids: Vec<String> = offers.iter().map(|o| o.id.value.clone()).collect();
                if !launched.is_empty() || ids.is_empty() {
                    decline(s, ids, 5.0).await?;
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
                    decline(s, ids, 1.0).await?;
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
                    let accept = a.encode_call(s.framework_id.clone(), 5.0);
                    s.send_encoded(call::Type::Accept, Bytes::from(accept))
                        .await?;
                }
                phases.push(("ACCEPT answered".to_owned(), start.elapsed()));
                decline(s, plan.declines, 5.0).await?;
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
                if !launched.contains_key(&task) {
                    // An earlier round's task, ended late: not this round's.
                    continue;
                }
                if state == mesos::TaskState::TaskRunning {
                    running
                        .entry(task.clone())
                        .or_insert_with(|| start.elapsed());
                } else if state.is_terminal() {
                    if done.is_none() {
                        return Err(BenchError::Setup(format!(
                            "task {task} ended before every task ran: {} {}",
                            state.as_str_name(),
                            st.message.unwrap_or_default()
                        )));
                    }
                    ended.insert(task);
                }
                if done.is_none() && running.len() >= m.size {
                    let cpu = cpu_start
                        .zip(Usage::of_process())
                        .map(|(a, b)| b.since(&a).cpu());
                    done = Some((start.elapsed(), cpu));
                    s.send(call::Type::Suppress, |c| {
                        c.suppress = Some(call::Suppress::default());
                    })
                    .await?;
                    for (t, agent) in &launched {
                        let kill = call::Kill {
                            task_id: mesos::TaskId { value: t.clone() },
                            agent_id: agent.clone(),
                            kill_policy: None,
                        };
                        s.send(call::Type::Kill, |c| c.kill = Some(kill)).await?;
                    }
                }
                if done.is_some() && ended.len() >= launched.len() {
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
    let (total, cpu) = done.unwrap_or_default();
    Ok(MinimalLaunch {
        total,
        cpu,
        running: running.into_values().collect(),
    })
}

/// A round of a fresh minimal scheduler: SUBSCRIBE, one launch, TEARDOWN; timed from the
/// SUBSCRIBE.
async fn minimal_round(
    m: &MinimalSetup,
    master: &Endpoint,
    cleanup: &mut Cleanup,
    timeout: Duration,
) -> Result<Timed, BenchError> {
    let cluster = m.cluster()?;
    let deadline = Instant::now() + timeout;
    let wall = SystemTime::now();
    let start = Instant::now();
    let cpu_start = Usage::of_process();
    let mut fw = minimal_subscribe(m, master, false, deadline).await?;
    cleanup.frameworks.push(fw.id());
    let mut phases = vec![("SUBSCRIBED".to_owned(), start.elapsed())];
    let launch = minimal_launch(
        m,
        &mut fw,
        cluster,
        (start, cpu_start),
        deadline,
        &mut phases,
    )
    .await?;
    let fid = fw.id();
    let containers = containers_of(std::slice::from_ref(&fid))?;
    fw.s.send(call::Type::Teardown, |_| {}).await?;
    cleanup.torn_down(&fid);
    drop(fw);
    container_phases(wall, &containers, &mut phases);
    spread(&mut phases, "RUNNING", launch.running);
    wait_gone(std::slice::from_ref(&fid), |_| true, deadline).await?;
    Ok(Timed {
        total: launch.total,
        phases,
        cpu: launch.cpu,
    })
}

/// A round of the long-lived minimal scheduler (subscribed once, like ours): REVIVE, one
/// launch (which ends with SUPPRESS); timed from the REVIVE.
async fn long_lived_round(
    m: &MinimalSetup,
    fw: &mut MinimalFramework,
    timeout: Duration,
) -> Result<Timed, BenchError> {
    let cluster = m.cluster()?;
    let id = cluster.id.to_string();
    let deadline = Instant::now() + timeout;
    let wall = SystemTime::now();
    let start = Instant::now();
    let cpu_start = Usage::of_process();
    fw.s.send(call::Type::Revive, |c| {
        c.revive = Some(call::Revive::default())
    })
    .await?;
    let mut phases = vec![("REVIVE answered".to_owned(), start.elapsed())];
    let launch = minimal_launch(m, fw, cluster, (start, cpu_start), deadline, &mut phases).await?;
    let fid = [fw.id()];
    let mine: Vec<Container> = containers_of(&fid)?
        .into_iter()
        .filter(|c| c.executor_id.contains(&id))
        .collect();
    container_phases(wall, &mine, &mut phases);
    spread(&mut phases, "RUNNING", launch.running);
    let ids: BTreeSet<String> = mine.iter().map(|c| c.id.clone()).collect();
    wait_gone(&fid, |c| ids.contains(&c.id), deadline).await?;
    Ok(Timed {
        total: launch.total,
        phases,
        cpu: launch.cpu,
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
    /// Ours' servers.
    children: Vec<ChildProc>,
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
        self.children.clear();
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
    fn paired_ratios_have_their_mean_inside_a_bootstrap_interval() {
        let d = Duration::from_millis;
        assert_eq!(PairedRatio::of(&[], &[]), None);
        assert_eq!(PairedRatio::of(&[d(5)], &[Duration::ZERO]), None);
        // Every round exactly 10 % slower: a point interval.
        let a: Vec<Duration> = (1..=20).map(|i| d(1100 * i)).collect();
        let b: Vec<Duration> = (1..=20).map(|i| d(1000 * i)).collect();
        let p = PairedRatio::of(&a, &b).unwrap();
        assert_eq!(p.rounds, 20);
        assert!(
            (p.mean - 1.1).abs() < 1e-9 && (p.high - p.low).abs() < 1e-9,
            "{p:?}"
        );
        // Noisy rounds around 1.0: the interval holds the mean and is not empty, and the
        // same rounds give the same interval.
        let a: Vec<Duration> = [950, 1050, 990, 1010, 900, 1100, 1000, 1000]
            .into_iter()
            .map(d)
            .collect();
        let b = vec![d(1000); 8];
        let p = PairedRatio::of(&a, &b).unwrap();
        assert!((p.mean - 1.0).abs() < 1e-9, "{p:?}");
        assert!(p.low < p.mean && p.mean < p.high, "{p:?}");
        assert!(p.low > 0.95 && p.high < 1.05, "{p:?}");
        assert_eq!(PairedRatio::of(&a, &b), Some(p));
        // Rounds only count where both sides ran.
        assert_eq!(PairedRatio::of(&a[..3], &b).unwrap().rounds, 3);
    }

    #[test]
    fn the_phase_table_has_each_side_median_per_phase() {
        let d = Duration::from_millis;
        let timed = |phases: &[(&str, u64)], total| Timed {
            total: d(total),
            phases: phases
                .iter()
                .map(|(w, t)| ((*w).to_owned(), d(*t)))
                .collect(),
            cpu: None,
        };
        let (mut ours, mut minimal) = (PhaseTimes::default(), PhaseTimes::default());
        ours.add(&timed(&[("ACCEPT", 3), ("container created", 500)], 900));
        ours.add(&timed(&[("ACCEPT", 5), ("container created", 520)], 950));
        ours.add(&timed(&[("ACCEPT", 4), ("container created", 510)], 1000));
        minimal.add(&timed(&[("offers", 6), ("container created", 490)], 880));
        let t = phase_table(&[("ours", &ours), ("minimal", &minimal)]);
        assert_eq!(t.len(), 5, "{t:#?}");
        let cols = |i: usize| t[i].split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(cols(1), "ACCEPT 4.0 -");
        assert_eq!(cols(2), "container created 510.0 490.0");
        assert_eq!(cols(3), "all RUNNING 950.0 880.0");
        assert_eq!(cols(4), "offers - 6.0");
    }

    #[test]
    fn the_minimal_cluster_is_the_reference_at_the_asked_size() {
        let o = Options {
            master: None,
            image: "img:1".into(),
            rounds: 1,
            size: 10,
            no_docker: true,
            long_lived_minimal: false,
            second_store_dir: None,
            timeout: 1,
        };
        let m = MinimalSetup::new(&o, "http://127.0.0.1:5050").unwrap();
        let c = m.cluster().unwrap();
        assert_eq!(c.nodes.len(), 10);
        assert!(c.nodes.iter().all(|n| n.docker_image == "img:1"));
        assert_eq!(launch::gangs(&[c]).len(), 1);
    }
}
