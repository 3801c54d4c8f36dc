//! `paas`: the Big Data PaaS binary. `serve` runs the REST API and the framework in one
//! process; `executor` is what the Mesos agent runs inside every node container.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use paas::api::{self, AppState, Auth};
use paas::domain::template::Renderer;
use paas::metrics::Metrics;
use paas::registry::{SledStore, Store};

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
    Serve(ServeArgs),
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
    /// Mesos master URL, e.g. http://127.0.0.1:5050. Stored for the scheduler.
    #[arg(long, env = "MESOS_MASTER")]
    master: Option<String>,
    /// Token file: one `token,user,role` line per token, role `admin` or `user`. Without it
    /// every request is the anonymous admin, which is only allowed on a loopback address.
    #[arg(long, env = "PAAS_TOKENS")]
    tokens: Option<PathBuf>,
    /// Allow anonymous admin access on a non-loopback address (no token file). Dangerous:
    /// anyone who can reach the port can upload scripts that the framework executes.
    #[arg(long, env = "PAAS_ALLOW_ANONYMOUS")]
    allow_anonymous: bool,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "PAAS_MAX_BODY", default_value_t = api::DEFAULT_MAX_BODY)]
    max_body: usize,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => rt.block_on(serve(args)),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let auth = match &args.tokens {
        Some(path) => Auth::from_file(path)?,
        None if args.listen.ip().is_loopback() || args.allow_anonymous => {
            if !args.listen.ip().is_loopback() {
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
        SledStore::open(&args.data)
            .with_context(|| format!("opening the store in {}", args.data.display()))?,
    );
    if let Some(master) = &args.master {
        store.set_meta("mesos_master", master)?;
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    let state = Arc::new(AppState {
        store: store.clone(),
        backend: Arc::new(api::StoreOnly),
        auth,
        metrics: Arc::new(Metrics::new()),
        max_body: args.max_body,
        renderer: Renderer::spec(),
    });
    let shutdown = CancellationToken::new();
    tokio::spawn(signal_shutdown(shutdown.clone()));
    // Tests start the server on port 0 and read the real address from this line.
    tracing::info!(listen = %local, data = %args.data.display(), "paas serving on http://{local}{}", api::routes::BASE);
    api::serve(listener, state, shutdown).await?;
    store.flush()?;
    tracing::info!("store flushed; bye");
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
