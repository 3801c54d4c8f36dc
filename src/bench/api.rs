//! `paas bench api`: `GET /clusters/{id}` of the real server against a bare hyper server
//! that answers the same bytes, driven by the same client ([`super::load`]) in the same run.
//! Both servers run as child processes of their own (`paas serve --master none`, and the
//! hidden `paas bench bare-server`), so they get the same runtime and the same CPUs, and
//! the client in this process is the same for both.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;

use super::child::{ChildProc, mb};
use super::load::{self, Load, Stop};
use super::{BenchError, RemoveDir, temp_dir};
use crate::api::routes::BASE;

/// The reference product of `examples/`, as the tests register it.
const REFERENCE: [(&str, &[u8]); 3] = [
    (
        "template",
        include_bytes!("../../examples/products/reference/minimal.json"),
    ),
    (
        "options",
        include_bytes!("../../examples/products/reference/options/size.json"),
    ),
    (
        "orquestrator",
        include_bytes!("../../examples/products/reference/orquestrators/minimal/fabfile.py"),
    ),
];

/// Its launch path.
pub const LAUNCH: &str = "/products/reference/1.0.0";

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes of the cluster served.
    pub size: usize,
    pub connections: usize,
    /// Length of each measurement.
    pub duration: Duration,
    /// Measurements of each server, alternating.
    pub rounds: usize,
}

/// Registers the reference product (all three parts) on the server at `addr`.
///
/// # Errors
/// [`BenchError::Setup`] when the server refuses.
pub async fn register_reference(addr: SocketAddr) -> Result<(), BenchError> {
    let product =
        br#"{"name":"reference","version":"1.0.0","description":"Reference product: minimal"}"#;
    expect_ok(
        addr,
        http::Method::POST,
        "/products",
        Bytes::from_static(product),
    )
    .await?;
    for (part, body) in REFERENCE {
        expect_ok(
            addr,
            http::Method::PUT,
            &format!("{LAUNCH}/{part}"),
            Bytes::from_static(body),
        )
        .await?;
    }
    Ok(())
}

/// One request to the API (`path` under its base); the body of a 2xx answer.
///
/// # Errors
/// [`BenchError::Setup`] for a failure or another status.
pub async fn expect_ok(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    body: Bytes,
) -> Result<Bytes, BenchError> {
    let what = format!("{method} {path}");
    match load::fetch(addr, method, &format!("{BASE}{path}"), body).await {
        Ok((status, body)) if status.is_success() => Ok(body),
        Ok((status, body)) => Err(BenchError::Setup(format!(
            "{what}: {status}: {}",
            String::from_utf8_lossy(&body)
        ))),
        Err(e) => Err(BenchError::Setup(format!("{what}: {e}"))),
    }
}

/// `http://host:port` → its socket address.
pub fn addr_of(url: &str) -> Result<SocketAddr, BenchError> {
    url.trim_start_matches("http://")
        .parse()
        .map_err(|_| BenchError::Setup(format!("not an http://ip:port address: {url}")))
}

/// Runs the benchmark and prints its numbers.
///
/// # Errors
/// [`BenchError`] when a server cannot be started or set up.
pub async fn run(o: Options) -> Result<(), BenchError> {
    let dir = temp_dir("api")?;
    let _cleanup = RemoveDir(Some(dir.clone()));
    let (real, url) = ChildProc::serve(
        &dir.join("data"),
        &["--master", "none"],
        Duration::from_secs(60),
    )?;
    let real_addr = addr_of(&url)?;
    register_reference(real_addr).await?;
    let launched = expect_ok(
        real_addr,
        http::Method::POST,
        LAUNCH,
        Bytes::from(format!(r#"{{"size": {}}}"#, o.size)),
    )
    .await?;
    let id = serde_json::from_slice::<serde_json::Value>(&launched)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .ok_or_else(|| BenchError::Setup("no id in the launch answer".into()))?;
    let path = format!("/clusters/{id}");
    let body = expect_ok(real_addr, http::Method::GET, &path, Bytes::new()).await?;
    let body_file = dir.join("cluster.json");
    std::fs::write(&body_file, &body)?;
    let body_arg = body_file.display().to_string();
    let mut bare = ChildProc::spawn(&["bench", "bare-server", "--body", &body_arg])?;
    let line = bare.wait_line("bare server on http://", Duration::from_secs(30))?;
    let bare_addr = addr_of(line.rsplit(' ').next().unwrap_or_default())?;
    println!(
        "api: GET {BASE}{path} ({} bytes, a {}-node reference cluster), {} connections, {} rounds of {:?} each; real server pid {}, bare hyper pid {}",
        body.len(),
        o.size,
        o.connections,
        o.rounds,
        o.duration,
        real.pid(),
        bare.pid()
    );
    let load = |addr| Load {
        addr,
        method: http::Method::GET,
        path: format!("{BASE}{path}"),
        body: Bytes::new(),
        connections: o.connections,
        stop: Stop::After(o.duration),
    };
    let (mut real_ok, mut bare_ok, mut real_s, mut bare_s) = (0, 0, 0.0, 0.0);
    for round in 1..=o.rounds.max(1) {
        for (name, addr, ok, secs) in [
            ("paas serve", real_addr, &mut real_ok, &mut real_s),
            ("bare hyper", bare_addr, &mut bare_ok, &mut bare_s),
        ] {
            let out = load::run(&load(addr)).await;
            *ok += out.ok;
            *secs += out.wall.as_secs_f64();
            println!(
                "  round {round}, {name}: {:.0} req/s ({} answers, {} failed{})",
                out.per_sec(),
                out.ok,
                out.failed,
                out.first_failure
                    .map(|f| format!(": {f}"))
                    .unwrap_or_default()
            );
        }
    }
    let (real_rate, bare_rate) = (real_ok as f64 / real_s, bare_ok as f64 / bare_s);
    println!(
        "  paas serve {real_rate:.0} req/s, bare hyper {bare_rate:.0} req/s: {:.0} % of bare hyper; RSS of paas serve {:.0} MB",
        100.0 * real_rate / bare_rate.max(1e-9),
        real.rss().map_or(0.0, mb)
    );
    Ok(())
}

/// `paas bench bare-server`: serves the bytes of `body` as `application/json` to every
/// request on a loopback port, printing "bare server on http://ADDR", until killed.
///
/// # Errors
/// The file cannot be read or the port bound.
pub async fn bare_server(body: &Path) -> Result<(), BenchError> {
    let body = Bytes::from(std::fs::read(body)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("bare server on http://{}", listener.local_addr()?);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |_req| {
                let body = body.clone();
                async move {
                    http::Response::builder()
                        .header(http::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(body))
                }
            });
            // A client that goes away ends its connection; nothing to report.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
