//! The NodeAgent gRPC server (`paas.nodeagent.v1.NodeAgent`) that each node's executor runs
//! for the orchestrator: put files, run commands, and supervise named long-running processes.
//!
//! Owns: the TLS identity (a fresh key and self-signed certificate per start; the
//! orchestrator pins its SHA-256, which the executor reports in TASK_RUNNING's `data`), the
//! secret check (an interceptor; every call, `Health` included), the processes it starts
//! (each the leader of its own process group) and their exit statuses. It does not own the
//! node's own command or anything Mesos: that is the supervisor's.
//!
//! # Who reaps whom
//! The executor is PID 1 of its container and reaps every orphan with `waitpid(-1)`, which
//! would steal the statuses of the agent's children. So the agent's children are registered in
//! an [`ExitBook`](super::exits::ExitBook) *under the same lock as their spawn*; the supervisor hands every status it
//! reaps for a pid it does not know to `ExitBook::deliver`, and the agent also reaps its own
//! pids on SIGCHLD (needed when it is not PID 1). Whichever reaps first delivers the status.
//! Tokio's process module is not used: its own reaping would race both.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use super::exits::ExitBook;
use super::process::{self, Pid};
use crate::proto::paas::nodeagent::v1 as pb;
use pb::node_agent_server::{NodeAgent, NodeAgentServer};

/// A command's time limit when the request names none.
pub const DEFAULT_RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest time limit a request may ask for.
pub const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(3600);
/// SIGTERM → SIGKILL grace of `StopService` when the request names none.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);
/// Collected output kept per stream by `RunCollected` (the tail).
pub const COLLECT_LIMIT: usize = 256 << 10;
/// Output kept per supervised service (the tail).
pub const SERVICE_TAIL: usize = 64 << 10;
/// Largest accepted message (a `PutFile` carries a whole rendered file).
pub const MAX_MESSAGE: usize = 24 << 20;
/// After a command exits, how long to keep reading output that a daemon it left behind may
/// hold open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(500);
/// Safety net for a SIGCHLD that was coalesced away.
const REAP_FALLBACK: Duration = Duration::from_secs(1);
/// A client that opens a connection and never finishes its TLS handshake is dropped after this.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The name in the agent's certificate. Clients pin the certificate itself, not a name, so it
/// only has to be the same on both sides (it is the SNI the orchestrator sends).
pub const CERT_NAME: &str = "paas-nodeagent";

/// Errors of the agent's own setup; request failures are gRPC statuses.
#[derive(Debug, thiserror::Error)]
pub enum NodeAgentError {
    #[error("cannot listen on {addr} for the NodeAgent")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("refusing to serve the NodeAgent without a cluster secret")]
    NoSecret,
    #[error("cannot make the NodeAgent's TLS certificate")]
    Certificate(#[source] rcgen::Error),
    #[error("cannot set up TLS for the NodeAgent")]
    Tls(#[source] tonic::transport::Error),
}

// ----- TLS identity -----------------------------------------------------------------------

/// The NodeAgent's TLS key and self-signed certificate, made fresh at every start: the key
/// never leaves the executor's memory, and the orchestrator trusts the certificate only
/// through its fingerprint, which reaches it via Mesos (TASK_RUNNING `data`), not the network
/// path it protects.
pub struct TlsIdentity {
    cert_pem: String,
    key_pem: String,
    sha256: String,
}

impl TlsIdentity {
    /// A new P-256 key and a certificate for [`CERT_NAME`].
    ///
    /// # Errors
    /// [`NodeAgentError::Certificate`] if the key or the certificate cannot be made.
    pub fn generate() -> Result<Self, NodeAgentError> {
        let certified = rcgen::generate_simple_self_signed(vec![CERT_NAME.to_owned()])
            .map_err(NodeAgentError::Certificate)?;
        Ok(Self {
            sha256: cert_sha256(certified.cert.der()),
            cert_pem: certified.cert.pem(),
            key_pem: certified.signing_key.serialize_pem(),
        })
    }

    /// The lowercase hex SHA-256 of the certificate (DER), as clients pin it.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

/// The lowercase hex SHA-256 of a DER certificate: the pin format shared with the
/// orchestrator's client (which computes it again on its side).
pub fn cert_sha256(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

// ----- authentication ---------------------------------------------------------------------

/// The interceptor that refuses calls without the cluster secret, as
/// `authorization: Bearer <secret>` or `x-paas-secret: <secret>`.
#[derive(Clone)]
pub struct SecretCheck {
    secret: Arc<[u8]>,
}

impl SecretCheck {
    pub fn new(secret: &str) -> Self {
        Self {
            secret: secret.as_bytes().into(),
        }
    }
}

impl tonic::service::Interceptor for SecretCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let m = req.metadata();
        let text = |k: &str| m.get(k).and_then(|v| v.to_str().ok());
        let presented = text("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| text("x-paas-secret"));
        match presented {
            None => Err(Status::unauthenticated("missing cluster secret")),
            Some(p) if !self.secret.is_empty() && constant_time_eq(p.as_bytes(), &self.secret) => {
                Ok(req)
            }
            Some(_) => Err(Status::unauthenticated("wrong cluster secret")),
        }
    }
}

/// Compares without an early exit on the first differing byte, so response timing does not
/// reveal how much of a guess was right. (The length is not secret: it is fixed per format.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

// ----- settings and handle ----------------------------------------------------------------

/// Who the agent is and what its commands inherit.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    pub cluster_id: String,
    pub node: String,
    /// The cluster secret every call must carry.
    pub secret: String,
    /// The base environment of every command and service (the node command's environment);
    /// a request's `env` goes on top.
    pub env: BTreeMap<String, String>,
    /// Where commands run when the request names no directory (the sandbox).
    pub working_dir: Option<PathBuf>,
}

/// A running NodeAgent server and the processes it supervises.
pub struct NodeAgentHandle {
    inner: Arc<Inner>,
    /// The server, commands and services.
    tracker: TaskTracker,
    stop: CancellationToken,
    /// The reaper outlives everything else: stopping processes needs their exits.
    reaper: tokio::task::JoinHandle<()>,
    reaper_stop: CancellationToken,
    local_addr: SocketAddr,
    /// The pin of this start's certificate, reported to the scheduler in TASK_RUNNING.
    cert_sha256: String,
}

impl NodeAgentHandle {
    /// Binds `addr` (e.g. `0.0.0.0:<agent port>`) and starts serving.
    ///
    /// # Errors
    /// [`NodeAgentError::Bind`] if the port cannot be had, [`NodeAgentError::NoSecret`] for an
    /// empty secret (anyone could then call).
    pub fn bind(
        addr: SocketAddr,
        settings: AgentSettings,
        exits: Arc<ExitBook>,
    ) -> Result<Self, NodeAgentError> {
        let bind = |source| NodeAgentError::Bind { addr, source };
        let std_listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        std_listener.set_nonblocking(true).map_err(bind)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(bind)?;
        Self::start(listener, settings, exits)
    }

    /// Starts serving on `listener` (tests pass one bound to port 0), over TLS with a fresh
    /// certificate (see [`NodeAgentHandle::cert_sha256`]).
    ///
    /// # Errors
    /// [`NodeAgentError::NoSecret`] for an empty secret, [`NodeAgentError::Certificate`] or
    /// [`NodeAgentError::Tls`] if the TLS identity cannot be made.
    pub fn start(
        listener: tokio::net::TcpListener,
        settings: AgentSettings,
        exits: Arc<ExitBook>,
    ) -> Result<Self, NodeAgentError> {
        if settings.secret.is_empty() {
            return Err(NodeAgentError::NoSecret);
        }
        // One crypto provider is compiled in (ring); installing it as the process default
        // keeps rustls from guessing. A second install fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let identity = TlsIdentity::generate()?;
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &identity.cert_pem,
                &identity.key_pem,
            ))
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        let mut server = tonic::transport::Server::builder()
            .tls_config(tls)
            .map_err(NodeAgentError::Tls)?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| NodeAgentError::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let check = SecretCheck::new(&settings.secret);
        let inner = Arc::new(Inner {
            settings,
            exits,
            services: tokio::sync::Mutex::new(BTreeMap::new()),
            tracker: tracker.clone(),
            stop: stop.clone(),
            started: Instant::now(),
        });
        let reaper_stop = CancellationToken::new();
        // Not on `tracker`: `shutdown` waits for that one while processes still exit.
        let reaper = tokio::spawn(reaper(inner.exits.clone(), reaper_stop.clone()));
        let svc = tonic::service::interceptor::InterceptedService::new(
            NodeAgentServer::new(Api(inner.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            check,
        );
        let stopped = stop.clone();
        info!(cluster_id = %inner.settings.cluster_id, node = %inner.settings.node, listen = %local_addr, cert_sha256 = %identity.sha256, "NodeAgent serving (TLS)");
        tracker.spawn(async move {
            let result = server
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    stopped.cancelled_owned(),
                )
                .await;
            if let Err(e) = result {
                warn!(error = %e, "NodeAgent server failed");
            }
        });
        Ok(Self {
            inner,
            tracker,
            stop,
            reaper,
            reaper_stop,
            local_addr,
            cert_sha256: identity.sha256,
        })
    }

    /// The SHA-256 of the agent's certificate (lowercase hex): what a client must pin.
    pub fn cert_sha256(&self) -> &str {
        &self.cert_sha256
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// SIGTERMs every supervised service now and SIGKILLs what is left after `grace`. Used
    /// when the node's task is killed: services must not outlive it.
    pub fn kill_services(&self, grace: Duration) {
        let inner = self.inner.clone();
        self.tracker.spawn(async move {
            inner.stop_all(grace).await;
        });
    }

    /// Stops serving, kills every supervised service and command (SIGKILL) and waits for the
    /// agent's tasks to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.inner.stop_all(Duration::ZERO).await;
        self.tracker.close();
        self.tracker.wait().await;
        self.reaper_stop.cancel();
        // A panicked reaper has nothing left to clean up.
        let _ = self.reaper.await;
    }
}

/// Reaps the agent's children on SIGCHLD, with a periodic fallback.
async fn reaper(exits: Arc<ExitBook>, stop: CancellationToken) {
    let mut sigchld = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %e, "cannot watch SIGCHLD; reaping by polling");
            None
        }
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                exits.reap_own();
                return;
            }
            _ = async {
                match sigchld.as_mut() {
                    Some(s) => { s.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
            () = tokio::time::sleep(REAP_FALLBACK) => {}
        }
        exits.reap_own();
    }
}

// ----- the service ------------------------------------------------------------------------

struct Inner {
    settings: AgentSettings,
    exits: Arc<ExitBook>,
    /// Supervised services by name. An async lock: StartService may stop the previous process
    /// while holding it, so two starts of one name cannot interleave.
    services: tokio::sync::Mutex<BTreeMap<String, ServiceEntry>>,
    tracker: TaskTracker,
    stop: CancellationToken,
    started: Instant,
}

/// What a service was started with; a StartService with the same spec is a no-op.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ServiceSpec {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    working_dir: String,
}

struct ServiceEntry {
    spec: ServiceSpec,
    pid: Pid,
    /// `Some` once the process has ended.
    exit: watch::Receiver<Option<pb::Exit>>,
    tail: Arc<Mutex<Tail>>,
    starts: u32,
}

impl ServiceEntry {
    fn running(&self) -> bool {
        self.exit.borrow().is_none()
    }

    fn status(&self, name: &str) -> pb::ServiceStatus {
        let exit = self.exit.borrow().clone();
        pb::ServiceStatus {
            name: name.to_owned(),
            state: if exit.is_some() {
                pb::ServiceState::Exited
            } else {
                pb::ServiceState::Running
            } as i32,
            pid: self.pid,
            exit,
            output_tail: lock_tail(&self.tail).bytes(),
            starts: self.starts,
        }
    }
}

/// The last `cap` bytes of some output.
#[derive(Debug)]
struct Tail {
    buf: VecDeque<u8>,
    cap: usize,
    truncated: bool,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Self {
            buf: VecDeque::new(),
            cap,
            truncated: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend(data);
        if self.buf.len() > self.cap {
            let extra = self.buf.len() - self.cap;
            self.buf.drain(..extra);
            self.truncated = true;
        }
    }

    fn bytes(&self) -> Vec<u8> {
        self.buf.iter().copied().collect()
    }
}

fn lock_tail(t: &Mutex<Tail>) -> std::sync::MutexGuard<'_, Tail> {
    // Appends and reads cannot leave a tail inconsistent; a poisoned lock is still usable.
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Where a command's output goes.
enum Sink {
    /// To a `Run` caller, chunk by chunk. Sending waits when the caller reads slowly, which
    /// in turn pauses our reads of the pipes: backpressure reaches the command.
    Stream(mpsc::Sender<Result<pb::RunOutput, Status>>),
    /// Into tails for `RunCollected`.
    Collect { out: Tail, err: Tail },
}

impl Sink {
    /// `false` once nobody listens any more.
    async fn push(&mut self, stream: pb::OutputStream, data: &[u8]) -> bool {
        match self {
            Sink::Stream(tx) => {
                let item = pb::RunOutput {
                    item: Some(pb::run_output::Item::Chunk(pb::OutputChunk {
                        stream: stream as i32,
                        data: data.to_vec(),
                    })),
                };
                tx.send(Ok(item)).await.is_ok()
            }
            Sink::Collect { out, err } => {
                match stream {
                    pb::OutputStream::Stderr => err.push(data),
                    _ => out.push(data),
                }
                true
            }
        }
    }
}

/// A started child with its output pipes.
struct Spawned {
    pid: Pid,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    exited: oneshot::Receiver<i32>,
}

impl Inner {
    fn spawn<'a>(
        &self,
        argv: &[String],
        env: impl IntoIterator<Item = (&'a String, &'a String)>,
        working_dir: &str,
    ) -> Result<Spawned, String> {
        let (program, args) = argv.split_first().ok_or("empty argv")?;
        if program.is_empty() {
            return Err("empty program name".to_owned());
        }
        let mut all = self.settings.env.clone();
        all.extend(env.into_iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group, so a kill reaches whatever it forks too.
            .process_group(0);
        let dir = if working_dir.is_empty() {
            self.settings.working_dir.clone()
        } else {
            Some(PathBuf::from(working_dir))
        };
        if let Some(d) = dir {
            cmd.current_dir(d);
        }
        let (mut child, exited) = self
            .exits
            .spawn(&mut cmd)
            .map_err(|e| format!("cannot start {program:?}: {e}"))?;
        let pid = Pid::try_from(child.id()).map_err(|_| "pid out of range".to_owned())?;
        let wrap = |fd: Option<OwnedFd>| fd.and_then(|fd| pipe::Receiver::from_owned_fd(fd).ok());
        Ok(Spawned {
            pid,
            stdout: wrap(child.stdout.take().map(OwnedFd::from)),
            stderr: wrap(child.stderr.take().map(OwnedFd::from)),
            exited,
        })
    }

    /// Runs a command to its end, feeding its output to `sink`; when nobody listens any more,
    /// the command is killed.
    async fn execute(&self, req: &pb::RunRequest, sink: &mut Sink) -> pb::Exit {
        let timeout = match req.timeout_ms {
            0 => DEFAULT_RUN_TIMEOUT,
            ms => Duration::from_millis(u64::from(ms)).min(MAX_RUN_TIMEOUT),
        };
        let Spawned {
            pid,
            mut stdout,
            mut stderr,
            mut exited,
        } = match self.spawn(&req.argv, &req.env, &req.working_dir) {
            Ok(s) => s,
            Err(why) => return spawn_error(why),
        };
        debug!(pid, argv = ?req.argv, "command started");
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut status: Option<i32> = None;
        let mut drain_until: Option<tokio::time::Instant> = None;
        let mut timed_out = false;
        let mut killed = false;
        let (mut out_buf, mut err_buf) = (vec![0u8; 8192], vec![0u8; 8192]);
        let kill = |why: &str, killed: &mut bool| {
            if !*killed {
                debug!(pid, why, "killing command");
                let _ = process::signal_group(pid, libc::SIGKILL);
                *killed = true;
            }
        };
        loop {
            if status.is_some() && stdout.is_none() && stderr.is_none() {
                break;
            }
            tokio::select! {
                r = read_opt(&mut stdout, &mut out_buf) => match r {
                    Some(n) => if !killed && !sink.push(pb::OutputStream::Stdout, &out_buf[..n]).await { kill("caller gone", &mut killed) },
                    None => stdout = None,
                },
                r = read_opt(&mut stderr, &mut err_buf) => match r {
                    Some(n) => if !killed && !sink.push(pb::OutputStream::Stderr, &err_buf[..n]).await { kill("caller gone", &mut killed) },
                    None => stderr = None,
                },
                s = &mut exited, if status.is_none() => {
                    // A dropped sender means the book was torn down: treat as killed.
                    status = Some(s.unwrap_or(libc::SIGKILL));
                    drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
                }
                () = &mut deadline, if status.is_none() && !timed_out => {
                    timed_out = true;
                    kill("timeout", &mut killed);
                }
                () = self.stop.cancelled(), if status.is_none() && !killed => {
                    kill("agent stopping", &mut killed);
                }
                () = sleep_until_opt(drain_until) => break,
            }
        }
        let mut exit = exit_of(status.unwrap_or(libc::SIGKILL));
        exit.timed_out = timed_out;
        exit
    }

    async fn start_service(
        &self,
        req: pb::StartServiceRequest,
    ) -> Result<pb::ServiceStatus, Status> {
        let name = req.name.clone();
        if name.is_empty() || req.argv.first().is_none_or(String::is_empty) {
            return Err(Status::invalid_argument(
                "a service needs a name and an argv",
            ));
        }
        let spec = ServiceSpec {
            argv: req.argv,
            env: req.env.into_iter().collect(),
            working_dir: req.working_dir,
        };
        let mut services = self.services.lock().await;
        let mut starts = 0;
        if let Some(old) = services.get(&name) {
            starts = old.starts;
            if old.running() && old.spec == spec {
                return Ok(old.status(&name));
            }
            if old.running() {
                info!(service = %name, pid = old.pid, "service spec changed; replacing the process");
                stop_entry(old, DEFAULT_STOP_GRACE).await;
            }
        }
        let Spawned {
            pid,
            stdout,
            stderr,
            exited,
        } = self
            .spawn(&spec.argv, &spec.env, &spec.working_dir)
            .map_err(Status::failed_precondition)?;
        info!(cluster_id = %self.settings.cluster_id, node = %self.settings.node, service = %name, pid, argv = ?spec.argv, "service started");
        let tail = Arc::new(Mutex::new(Tail::new(SERVICE_TAIL)));
        let (exit_tx, exit_rx) = watch::channel(None);
        for pipe in [stdout, stderr].into_iter().flatten() {
            self.tracker.spawn(copy_output(pipe, tail.clone()));
        }
        let svc_name = name.clone();
        self.tracker.spawn(async move {
            let status = exited.await.unwrap_or(libc::SIGKILL);
            let exit = exit_of(status);
            info!(service = %svc_name, pid, exit = ?exit.how, "service ended");
            // Whatever it forked goes with it (the group outlives a leader that exited).
            let _ = process::signal_group(pid, libc::SIGKILL);
            let _ = exit_tx.send(Some(exit));
        });
        let entry = ServiceEntry {
            spec,
            pid,
            exit: exit_rx,
            tail,
            starts: starts + 1,
        };
        let status = entry.status(&name);
        services.insert(name, entry);
        Ok(status)
    }

    async fn stop_all(&self, grace: Duration) {
        let services = self.services.lock().await;
        let running: Vec<&ServiceEntry> = services.values().filter(|e| e.running()).collect();
        futures_util::future::join_all(running.into_iter().map(|e| stop_entry(e, grace))).await;
    }
}

/// SIGTERM, then SIGKILL after `grace`; returns once the process has exited.
async fn stop_entry(e: &ServiceEntry, grace: Duration) {
    let mut exit = e.exit.clone();
    if exit.borrow().is_some() {
        return;
    }
    let sig = if grace.is_zero() {
        libc::SIGKILL
    } else {
        libc::SIGTERM
    };
    let _ = process::signal_group(e.pid, sig);
    let ended = async {
        // An error means the sender is gone, i.e. the watcher task ended: nothing to wait for.
        let _ = exit.wait_for(Option::is_some).await;
    };
    if tokio::time::timeout(grace, ended).await.is_err() {
        warn!(pid = e.pid, "service ignored SIGTERM; SIGKILL");
        let _ = process::signal_group(e.pid, libc::SIGKILL);
        let _ = exit.wait_for(Option::is_some).await;
    }
}

/// Copies a service's output into its tail and to the executor's stderr (the sandbox log).
async fn copy_output(mut pipe: pipe::Receiver, tail: Arc<Mutex<Tail>>) {
    let mut buf = vec![0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                lock_tail(&tail).push(&buf[..n]);
                let _ =
                    tokio::io::AsyncWriteExt::write_all(&mut tokio::io::stderr(), &buf[..n]).await;
            }
        }
    }
}

async fn read_opt(p: &mut Option<pipe::Receiver>, buf: &mut [u8]) -> Option<usize> {
    match p {
        Some(p) => match p.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn exit_of(status: i32) -> pb::Exit {
    let how = match process::Exit::from_wait_status(status) {
        process::Exit::Code(c) => pb::exit::How::Code(c),
        process::Exit::Signal(s) => pb::exit::How::Signal(s),
    };
    pb::Exit {
        how: Some(how),
        timed_out: false,
    }
}

fn spawn_error(why: String) -> pb::Exit {
    pb::Exit {
        how: Some(pb::exit::How::SpawnError(why)),
        timed_out: false,
    }
}

/// Checks a `PutFile` path: absolute, normal components only.
fn file_path(p: &str) -> Result<PathBuf, Status> {
    let path = Path::new(p);
    let ok = path.is_absolute()
        && path.components().count() > 1
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if ok {
        Ok(path.to_owned())
    } else {
        Err(Status::invalid_argument(format!(
            "path {p:?} must be absolute, without '..'"
        )))
    }
}

/// Writes `content` to `path` through a temporary file and a rename, so a reader never sees
/// half a file and a repeated call leaves the same result.
///
/// The parent directories are walked one component at a time from `/` with `O_NOFOLLOW`
/// (created when missing), so a symlink anywhere above the file is refused instead of
/// followed: a job on the node cannot redirect a pushed file outside the directory the
/// orchestrator named. The file itself is replaced by the rename, never written through.
fn write_file(path: &Path, mode: u32, content: &[u8]) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("no file name"))?;
    let parents: Vec<&std::ffi::OsStr> = path
        .parent()
        .ok_or_else(|| io::Error::other("no parent directory"))?
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let mut dir = open_dir_nofollow(None, std::ffi::OsStr::new("/"))?;
    let mut walked = PathBuf::from("/");
    for part in parents {
        walked.push(part);
        let c = cstr(part.as_bytes())?;
        // SAFETY: `dir` is an open directory descriptor and `c` a NUL-terminated name.
        let made = unsafe { libc::mkdirat(dir_fd(&dir), c.as_ptr(), 0o755) };
        if made != 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
        }
        dir = open_dir_nofollow(Some(&dir), part).map_err(|e| {
            if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) {
                io::Error::other(format!(
                    "{} is a symlink or not a directory; refusing to write through it",
                    walked.display()
                ))
            } else {
                e
            }
        })?;
    }
    let tmp = format!(
        ".{}.paas-{}",
        name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    );
    let tmp_c = cstr(tmp.as_bytes())?;
    let name_c = cstr(name.as_bytes())?;
    // SAFETY: as above; O_EXCL|O_NOFOLLOW make a new regular file or fail.
    let fd = unsafe {
        libc::openat(
            dir_fd(&dir),
            tmp_c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let mut file =
        std::fs::File::from(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    let result = (|| {
        io::Write::write_all(&mut file, content)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        // SAFETY: both names are NUL-terminated and relative to the same open directory.
        let renamed =
            unsafe { libc::renameat(dir_fd(&dir), tmp_c.as_ptr(), dir_fd(&dir), name_c.as_ptr()) };
        if renamed == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    })();
    if result.is_err() {
        // SAFETY: as above.
        unsafe { libc::unlinkat(dir_fd(&dir), tmp_c.as_ptr(), 0) };
    }
    result
}

fn dir_fd(dir: &OwnedFd) -> libc::c_int {
    std::os::fd::AsRawFd::as_raw_fd(dir)
}

fn cstr(bytes: &[u8]) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(bytes).map_err(|_| io::Error::other("NUL byte in path"))
}

/// Opens directory `name` under `parent` (or the absolute `name`) without following a
/// symlink in its last component.
fn open_dir_nofollow(parent: Option<&OwnedFd>, name: &std::ffi::OsStr) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = cstr(name.as_bytes())?;
    let at = parent.map_or(libc::AT_FDCWD, dir_fd);
    // SAFETY: `at` is AT_FDCWD or an open directory, `c` NUL-terminated.
    let fd = unsafe {
        libc::openat(
            at,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// The tonic service over [`Inner`].
struct Api(Arc<Inner>);

type RunStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::RunOutput, Status>> + Send>>;

#[tonic::async_trait]
impl NodeAgent for Api {
    async fn put_file(
        &self,
        req: Request<pb::PutFileRequest>,
    ) -> Result<Response<pb::PutFileResponse>, Status> {
        let req = req.into_inner();
        let path = file_path(&req.path)?;
        let mode = if req.mode == 0 {
            0o644
        } else {
            req.mode & 0o7777
        };
        let size = req.content.len() as u64;
        let p = path.clone();
        tokio::task::spawn_blocking(move || write_file(&p, mode, &req.content))
            .await
            .map_err(|e| Status::internal(format!("write task failed: {e}")))?
            .map_err(|e| {
                Status::failed_precondition(format!("cannot write {}: {e}", path.display()))
            })?;
        debug!(path = %path.display(), size, mode, "file written");
        Ok(Response::new(pb::PutFileResponse { size }))
    }

    type RunStream = RunStream;

    async fn run(&self, req: Request<pb::RunRequest>) -> Result<Response<RunStream>, Status> {
        let req = req.into_inner();
        let (tx, rx) = mpsc::channel::<Result<pb::RunOutput, Status>>(32);
        let inner = self.0.clone();
        self.0.tracker.spawn(async move {
            let mut sink = Sink::Stream(tx.clone());
            let exit = inner.execute(&req, &mut sink).await;
            // The caller may be gone; then there is nobody to tell.
            let _ = tx
                .send(Ok(pb::RunOutput {
                    item: Some(pb::run_output::Item::Exit(exit)),
                }))
                .await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn run_collected(
        &self,
        req: Request<pb::RunRequest>,
    ) -> Result<Response<pb::RunResult>, Status> {
        let req = req.into_inner();
        let mut sink = Sink::Collect {
            out: Tail::new(COLLECT_LIMIT),
            err: Tail::new(COLLECT_LIMIT),
        };
        let exit = self.0.execute(&req, &mut sink).await;
        let Sink::Collect { out, err } = sink else {
            return Err(Status::internal("collect sink changed kind"));
        };
        Ok(Response::new(pb::RunResult {
            exit: Some(exit),
            truncated: out.truncated || err.truncated,
            stdout: out.bytes(),
            stderr: err.bytes(),
        }))
    }

    async fn start_service(
        &self,
        req: Request<pb::StartServiceRequest>,
    ) -> Result<Response<pb::ServiceStatus>, Status> {
        self.0
            .start_service(req.into_inner())
            .await
            .map(Response::new)
    }

    async fn stop_service(
        &self,
        req: Request<pb::StopServiceRequest>,
    ) -> Result<Response<pb::ServiceStatus>, Status> {
        let req = req.into_inner();
        let grace = match req.grace_ms {
            0 => DEFAULT_STOP_GRACE,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let services = self.0.services.lock().await;
        match services.get(&req.name) {
            None => Ok(Response::new(unknown_service(&req.name))),
            Some(e) => {
                stop_entry(e, grace).await;
                info!(service = %req.name, pid = e.pid, "service stopped");
                Ok(Response::new(e.status(&req.name)))
            }
        }
    }

    async fn inspect_service(
        &self,
        req: Request<pb::InspectServiceRequest>,
    ) -> Result<Response<pb::ServiceStatus>, Status> {
        let name = req.into_inner().name;
        let services = self.0.services.lock().await;
        Ok(Response::new(match services.get(&name) {
            None => unknown_service(&name),
            Some(e) => e.status(&name),
        }))
    }

    async fn health(
        &self,
        _: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let services = self.0.services.lock().await;
        let running = services.values().filter(|e| e.running()).count();
        Ok(Response::new(pb::HealthResponse {
            cluster_id: self.0.settings.cluster_id.clone(),
            node: self.0.settings.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            services_running: u32::try_from(running).unwrap_or(u32::MAX),
        }))
    }
}

fn unknown_service(name: &str) -> pb::ServiceStatus {
    pb::ServiceStatus {
        name: name.to_owned(),
        state: pb::ServiceState::Unknown as i32,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn secret_check() {
        let mut check = SecretCheck::new("s3cret");
        let req = |k: &'static str, v: &str| {
            let mut r = Request::new(());
            r.metadata_mut().insert(k, v.parse().unwrap());
            r
        };
        assert!(check.call(req("authorization", "Bearer s3cret")).is_ok());
        assert!(check.call(req("x-paas-secret", "s3cret")).is_ok());
        let e = check.call(Request::new(())).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("missing"));
        for bad in [
            req("authorization", "Bearer s3creT"),
            req("authorization", "s3cret"),
            req("x-paas-secret", "s3cre"),
        ] {
            assert_eq!(
                check.call(bad).unwrap_err().code(),
                tonic::Code::Unauthenticated
            );
        }
        let mut empty = SecretCheck::new("");
        assert!(empty.call(req("x-paas-secret", "")).is_err());
    }

    #[test]
    fn paths_must_be_absolute_and_plain() {
        assert!(file_path("/etc/x.conf").is_ok());
        for bad in ["etc/x", "/", "/a/../b", ""] {
            assert!(file_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn put_file_refuses_a_symlinked_parent_and_writes_nothing_outside() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let inside = root.path().join("etc");
        std::os::unix::fs::symlink(outside.path(), &inside).unwrap();
        let err = write_file(&inside.join("evil.conf"), 0o644, b"x").unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        // A symlink deeper down, below a real directory, is refused too.
        std::fs::create_dir(root.path().join("real")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("real/link")).unwrap();
        let deep = root.path().join("real/link/sub/evil.conf");
        assert!(write_file(&deep, 0o644, b"x").is_err());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);

        // Plain directories are made as needed; a symlinked *file* is replaced, not followed.
        let target = outside.path().join("target");
        std::fs::write(&target, "old").unwrap();
        let file = root.path().join("real/new/dir/f.conf");
        write_file(&file, 0o640, b"hello").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"hello");
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        let link = root.path().join("real/file-link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write_file(&link, 0o644, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old");
        assert_eq!(std::fs::read(&link).unwrap(), b"new");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut t = Tail::new(4);
        t.push(b"abc");
        assert!(!t.truncated);
        t.push(b"def");
        assert_eq!(t.bytes(), b"cdef");
        assert!(t.truncated);
    }
}
