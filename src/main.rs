//! `paas`: the Big Data PaaS binary. `serve` runs the REST API and the framework in one
//! process; `executor` is what the Mesos agent runs inside every node container.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use paas::api::{self, AppState, Auth, Backend, Readiness};
use paas::domain::placement::{Demand, Placement};
use paas::domain::template::Renderer;
use paas::executor::nodetool::NodeTool;
use paas::metrics::Metrics;
use paas::orchestrator::{Orchestrator, OrchestratorConfig};
use paas::registry::{SledStore, Store, StoreOptions};
use paas::scheduler::{Scheduler, SchedulerConfig};

/// With `--features dhat-heap`, every allocation goes through dhat, which profiles `serve`.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[derive(Parser)]
#[command(
    name = "paas",
    version,
    about = "Big Data PaaS: a native Apache Mesos framework with a REST façade"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the REST API and the Mesos framework.
    Serve(Box<ServeArgs>),
    /// Manage products (a client of the REST API).
    Products {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: paas::cli::ProductsCmd,
    },
    /// Launch, inspect and destroy clusters (a client of the REST API).
    Clusters {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: paas::cli::ClustersCmd,
    },
    /// Benchmarks of the hot paths; they print numbers.
    Bench {
        #[command(subcommand)]
        cmd: paas::bench::BenchCmd,
    },
    /// Run as the Mesos executor of one node (started by the Mesos agent inside the node's
    /// container; configured by the MESOS_* environment the agent sets).
    Executor {
        /// Ignored; the agent may pass arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        _rest: Vec<String>,
    },
    /// Helpers for node images that hold nothing but `/paas` (used by product templates).
    #[command(hide = true)]
    NodeTool {
        #[command(subcommand)]
        tool: NodeTool,
    },
}

#[derive(clap::Args)]
struct ClientArgs {
    /// The paas server.
    #[arg(
        long,
        env = "PAAS_URL",
        default_value = "http://127.0.0.1:5000",
        global = true
    )]
    url: String,
    /// Bearer token (see `serve --tokens`).
    #[arg(long, env = "PAAS_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
}

#[derive(Parser)]
struct ServeArgs {
    /// Address the REST API listens on.
    #[arg(long, env = "PAAS_LISTEN", default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// Directory of the sled database (created if missing). Everything is stored here:
    /// products, clusters, the framework id.
    #[arg(long, env = "PAAS_DATA", default_value = "./paas-data")]
    data: PathBuf,
    /// Mesos master URL, e.g. http://127.0.0.1:5050 (a non-leading master redirects us to
    /// the leader). Without it an embedded mesos-local (master + agents, on this machine
    /// only) is started; `none` records clusters without launching them.
    #[arg(long, env = "MESOS_MASTER")]
    master: Option<String>,
    #[command(flatten)]
    local: paas::mesos_local::LocalArgs,
    /// Docker image of the nodes: it must contain `paas` with entrypoint `paas executor`.
    /// Templates refer to it as `{{node_image}}`. Build it with deploy/images/build-node-image.sh.
    #[arg(long, env = "PAAS_NODE_IMAGE", default_value = "paas-node:latest")]
    node_image: String,
    /// A host directory node volumes may mount (repeatable). A template volume whose
    /// `host_path` is not inside one of these is refused at launch (403); without any, no
    /// host volume is allowed. Must be absolute.
    #[arg(long, value_parser = absolute_dir)]
    volume_root: Vec<PathBuf>,
    /// Mesos role the framework subscribes with.
    #[arg(long, env = "PAAS_ROLE", default_value = "*")]
    role: String,
    /// Unix user the node executors run as on the agents.
    #[arg(long, env = "PAAS_MESOS_USER", default_value = "root")]
    mesos_user: String,
    /// The framework's principal at the master (`FrameworkInfo.principal`); with
    /// --secret-file, every scheduler call authenticates as it (HTTP basic auth), as a master
    /// with --authenticate_http_frameworks requires.
    #[arg(long, env = "PAAS_MESOS_PRINCIPAL")]
    principal: Option<String>,
    /// File holding the principal's secret (the whole file, less a trailing newline).
    #[arg(long, env = "PAAS_MESOS_SECRET_FILE", requires = "principal")]
    secret_file: Option<PathBuf>,
    /// Token file: one `token,user,role` line per token, role `admin` or `user`. Without it
    /// every request is the anonymous admin, which is only allowed on a loopback address.
    #[arg(long, env = "PAAS_TOKENS")]
    tokens: Option<PathBuf>,
    /// Allow anonymous admin access without a token file on a non-loopback address, or
    /// against a real Mesos (`--master URL`). Dangerous: anyone who reaches the port, a job
    /// in a cluster node included, can upload scripts that the framework executes.
    #[arg(long, env = "PAAS_ALLOW_ANONYMOUS")]
    allow_anonymous: bool,
    /// Time a client has to send a request's headers, and then its body (408 after it).
    #[arg(long, env = "PAAS_BODY_TIMEOUT", default_value = "30s")]
    body_timeout: humantime::Duration,
    /// Open connections allowed per client IP address (0 = no cap); one more is answered
    /// 429 and closed.
    #[arg(long, env = "PAAS_MAX_CONNS_PER_CLIENT", default_value_t = api::DEFAULT_MAX_CONNS_PER_CLIENT)]
    max_conns_per_client: usize,
    /// How long destroyed clusters (their record, events and logs) are kept before purging.
    #[arg(long, env = "PAAS_RETENTION", default_value = "7d")]
    retention: humantime::Duration,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "PAAS_MAX_BODY", default_value_t = api::DEFAULT_MAX_BODY)]
    max_body: usize,
    /// Memory of the store's page cache, in MiB (sled's cache). Records beyond it are read
    /// from disk; the store keeps no other per-cluster state in memory.
    #[arg(long, env = "PAAS_STORE_CACHE_MB", default_value_t = StoreOptions::DEFAULT_CACHE_BYTES >> 20,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    store_cache_mb: u64,
    /// Microseconds a flush of the store waits, when other writes wait too, for more writes
    /// to share it (fewer fsyncs per launch under load, for that much more latency); 0
    /// flushes at once. A lone write is never delayed.
    #[arg(long, env = "PAAS_COMMIT_DELAY_US",
          default_value_t = StoreOptions::DEFAULT_COMMIT_DELAY.as_micros() as u64,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    commit_delay_us: u64,
    /// How long a service's `ready` check may keep failing before its cluster fails.
    #[arg(long, env = "PAAS_READY_TIMEOUT", default_value = "2m")]
    ready_timeout: humantime::Duration,
    /// Time limit of the orchestration script's `start`.
    #[arg(long, env = "PAAS_SCRIPT_TIMEOUT", default_value = "10m")]
    script_timeout: humantime::Duration,
    /// How long a launch may wait to be placed before it fails with the reason it could
    /// not be (a launch may choose its own: `?placement_timeout_s=`). Counted from the
    /// launch, so a restart keeps it.
    #[arg(long, env = "PAAS_PLACEMENT_TIMEOUT",
          default_value_t = paas::scheduler::DEFAULT_PLACEMENT_TIMEOUT.into())]
    placement_timeout: humantime::Duration,
}

fn main() -> anyhow::Result<()> {
    paas::memory::tune();
    let cli = Cli::parse();
    // Written to ./dhat-heap.json when dropped, at the end of `main`: `serve` must end by
    // SIGTERM or Ctrl-C (a clean shutdown), not be killed.
    #[cfg(feature = "dhat-heap")]
    let _profiler = matches!(cli.command, Command::Serve(_)).then(dhat::Profiler::new_heap);
    if matches!(
        cli.command,
        Command::Products { .. } | Command::Clusters { .. }
    ) {
        // A client piped into `head` should stop quietly when the pipe closes, like any
        // other command-line tool, instead of panicking on a failed print.
        // SAFETY: restoring the default disposition of one signal before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // A server's log lines go out in batches from a writer thread (see `paas::logging`); a
    // command-line run writes each line itself.
    let (log_writer, _log_thread) = match cli.command {
        Command::Serve(_) => {
            let (w, t) = paas::logging::Batched::start()?;
            (Some(w), Some(t))
        }
        _ => (None, None),
    };
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match log_writer {
        Some(w) => subscriber.with_writer(w).init(),
        None => subscriber.with_writer(std::io::stderr).init(),
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => rt.block_on(serve(*args)),
        Command::Executor { .. } => rt.block_on(executor()),
        Command::NodeTool { tool } => Ok(tool.run()?),
        Command::Bench { cmd } => Ok(rt.block_on(paas::bench::run(cmd))?),
        Command::Products { client, cmd } => {
            let c = paas::cli::Client::new(&client.url, client.token);
            rt.block_on(paas::cli::products(&c, cmd)).map_err(cli_exit)
        }
        Command::Clusters { client, cmd } => {
            let c = paas::cli::Client::new(&client.url, client.token);
            rt.block_on(paas::cli::clusters(&c, cmd)).map_err(cli_exit)
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Read before anything starts, so a bad secret file changes nothing.
    let credentials = framework_credentials(&args)?;
    // A real Mesos runs other people's jobs on hosts that reach this port (node containers
    // use the host network): anonymous admin there needs an explicit yes.
    let real_master = args.master.as_deref().filter(|m| *m != "none");
    let auth = match &args.tokens {
        Some(path) => Auth::from_file(path)?,
        None if real_master.is_some() && !args.allow_anonymous => bail!(
            "refusing to serve without --tokens against a real Mesos master ({}): every job \
             in a cluster node could call this API as admin. Pass --tokens FILE, or \
             --allow-anonymous to accept that",
            real_master.unwrap_or_default()
        ),
        None if args.listen.ip().is_loopback() || args.allow_anonymous => {
            if args.listen.ip().is_loopback() {
                tracing::warn!(listen = %args.listen, "no --tokens: every request from this machine is the anonymous admin (loopback Host and Origin only)");
            } else {
                tracing::warn!(listen = %args.listen, "anonymous admin access on a non-loopback address (--allow-anonymous)");
            }
            Auth::Anonymous
        }
        None => bail!(
            "refusing to serve {} without --tokens: anonymous admin access is only allowed on loopback (pass --allow-anonymous to override)",
            args.listen
        ),
    };
    let store: Arc<dyn Store> = Arc::new(
        SledStore::open_with(
            &args.data,
            StoreOptions {
                cache_bytes: args.store_cache_mb << 20,
                commit_delay: std::time::Duration::from_micros(args.commit_delay_us),
            },
        )
        .with_context(|| format!("opening the store in {}", args.data.display()))?,
    );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let master = match args.master.as_deref() {
        Some("none") => None,
        Some(m) => Some(m.to_owned()),
        None => {
            let cfg = args.local.config(&args.data)?;
            let local = paas::mesos_local::start(cfg, shutdown.clone(), &tracker).await?;
            Some(local.master_url)
        }
    };
    let scheduler = master.as_ref().map(|master| {
        let mut cfg = SchedulerConfig::new(master.clone());
        cfg.role = args.role.clone();
        cfg.user = args.mesos_user.clone();
        cfg.webui_url = Some(format!("http://{local}{}/health", api::routes::BASE));
        cfg.credentials = credentials.clone();
        cfg.placement_timeout = args.placement_timeout.into();
        Scheduler::spawn(
            cfg,
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
            &tracker,
        )
    });
    // Scripts run on this host: a wildcard listen address is reached over loopback.
    let api_host = if local.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], local.port()))
    } else {
        local
    };
    let mut orch_cfg = OrchestratorConfig::new(format!("http://{api_host}{}", api::routes::BASE));
    orch_cfg.ready_timeout = args.ready_timeout.into();
    orch_cfg.script_timeout = args.script_timeout.into();
    // Scripts run in `<data>/scripts`, which this process owns while it holds the store's
    // lock: what a `kill -9` of an earlier run left there (scripts, their directories) goes.
    orch_cfg.work_dir = args.data.join("scripts");
    std::fs::create_dir_all(&orch_cfg.work_dir)
        .with_context(|| format!("creating {}", orch_cfg.work_dir.display()))?;
    let recovered = paas::orchestrator::script::recover(&orch_cfg.work_dir).await;
    if recovered != Default::default() {
        tracing::info!(
            scripts_killed = recovered.scripts,
            dirs_removed = recovered.dirs,
            "recovery: removed what an earlier run's scripts left"
        );
    }
    Orchestrator::spawn(
        orch_cfg,
        store.clone(),
        metrics.clone(),
        shutdown.clone(),
        &tracker,
    );
    let state = Arc::new(AppState {
        store: store.clone(),
        backend: Arc::new(Framework { scheduler }),
        auth,
        metrics,
        max_body: args.max_body,
        renderer: Renderer::spec(),
        node_image: args.node_image.clone(),
        limits: api::Limits {
            body_timeout: args.body_timeout.into(),
            max_conns_per_client: args.max_conns_per_client,
            anonymous_hosts: if args.listen.ip().is_loopback() {
                api::HostPolicy::Loopback
            } else {
                api::HostPolicy::IpLiterals
            },
        },
        volume_roots: args.volume_root.clone(),
        views: api::views::Views::spawn(store.as_ref(), shutdown.clone(), &tracker),
        events: api::events::Hub::spawn(store.as_ref(), shutdown.clone(), &tracker),
        launch_parts: api::PartsCache::default(),
    });
    api::retention::spawn(
        store.clone(),
        args.retention.into(),
        shutdown.clone(),
        &tracker,
    );
    paas::memory::spawn_trimmer(paas::memory::TRIM_PERIOD, shutdown.clone(), &tracker);
    tokio::spawn(signal_shutdown(shutdown.clone()));
    // Tests start the server on port 0 and read the real address from this line.
    tracing::info!(listen = %local, data = %args.data.display(), "paas serving on http://{local}{}", api::routes::BASE);
    api::serve(listener, state, shutdown).await?;
    tracker.close();
    tracker.wait().await;
    store.flush()?;
    tracing::info!("store flushed; bye");
    Ok(())
}

/// The framework's credentials from `--principal` and `--secret-file`. A principal alone is
/// refused: a master that authenticates frameworks needs the secret, and one that does not
/// has no use for a principal we cannot prove.
fn framework_credentials(
    args: &ServeArgs,
) -> anyhow::Result<Option<paas::scheduler::transport::Credentials>> {
    let (Some(principal), Some(path)) = (&args.principal, &args.secret_file) else {
        if args.principal.is_some() {
            bail!("--principal needs --secret-file (the principal's secret)");
        }
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the framework secret from {}", path.display()))?;
    let secret = text.strip_suffix('\n').unwrap_or(&text);
    let secret = secret.strip_suffix('\r').unwrap_or(secret);
    Ok(Some(
        paas::scheduler::transport::Credentials::new(principal, secret)
            .with_context(|| format!("the framework secret in {}", path.display()))?,
    ))
}

/// Client errors are for people: print the message alone and exit 1.
fn cli_exit(e: paas::cli::CliError) -> anyhow::Error {
    eprintln!("error: {e}");
    // `clusters exec` exits with the command's own status.
    if let paas::cli::CliError::CommandExit(code, _) = e {
        std::process::exit(code);
    }
    std::process::exit(1);
}

async fn executor() -> anyhow::Result<()> {
    let cfg = paas::executor::ExecutorConfig::from_env()?;
    // The executor is PID 1 in its container: SIGTERM from `docker stop` must end it cleanly.
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    paas::executor::run(cfg, shutdown).await?;
    Ok(())
}

/// Cancels `token` on SIGTERM or Ctrl-C.
async fn signal_shutdown(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
    token.cancel();
}

/// The api's view of the core: the scheduler when there is a master.
struct Framework {
    scheduler: Option<Scheduler>,
}

impl Backend for Framework {
    fn exec(
        &self,
        target: api::exec::ExecTarget,
        argv: Vec<String>,
        timeout: std::time::Duration,
        out: api::exec::ExecOutput,
    ) -> futures_util::future::BoxFuture<'static, api::exec::ExecEnd> {
        use api::exec::ExecEnd;
        use paas::orchestrator::client::{Ended, NodeClient};
        Box::pin(async move {
            let client = match NodeClient::new(
                &target.host,
                target.port,
                &target.secret,
                Some(&target.cert_sha256),
            ) {
                Ok(c) => c,
                Err(e) => return ExecEnd::Failed(e.to_string()),
            };
            match client.run_streaming(&argv, timeout, &out).await {
                Ok(Ended::Code(c)) => ExecEnd::Code(c),
                Ok(Ended::Signal(s)) => ExecEnd::Signal(s),
                Ok(Ended::TimedOut) => ExecEnd::TimedOut,
                Ok(Ended::NotStarted(why)) => ExecEnd::Failed(why),
                Err(e) => ExecEnd::Failed(e.to_string()),
            }
        })
    }

    fn readiness(&self) -> Readiness {
        match &self.scheduler {
            None => api::StoreOnly.readiness(),
            Some(s) => {
                let st = s.status();
                let detail = match (st.subscribed, st.reconciling) {
                    (true, false) => "subscribed to mesos".to_owned(),
                    (true, true) => "subscribed; reconciling tasks".to_owned(),
                    (false, _) => format!(
                        "not subscribed to mesos: {}",
                        st.last_error.as_deref().unwrap_or("connecting")
                    ),
                };
                Readiness {
                    ready: st.subscribed,
                    detail,
                    mesos: serde_json::to_value(&st).ok(),
                }
            }
        }
    }

    fn plan(&self, demands: &[Demand]) -> Placement {
        match &self.scheduler {
            None => api::StoreOnly.plan(demands),
            Some(s) => s.plan(demands),
        }
    }
}

/// `--volume-root`: an absolute path (checked lexically; the agents' file systems are not ours
/// to look at).
fn absolute_dir(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(format!("{s:?} is not an absolute path"))
    }
}
