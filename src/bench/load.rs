//! A small HTTP/1.1 load generator: N keep-alive connections, each sending one request after
//! another, for a duration or until a number of requests is reached. The same loop drives
//! every server a benchmark compares, so their numbers differ only by the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// What to send, and until when.
#[derive(Debug, Clone)]
pub struct Load {
    pub addr: SocketAddr,
    pub method: http::Method,
    /// Path and query, e.g. `/bigdata/api/v1/clusters/<id>`.
    pub path: String,
    /// Sent as `application/json` when not empty.
    pub body: Bytes,
    pub connections: usize,
    pub stop: Stop,
}

/// When a [`Load`] ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    After(Duration),
    /// After this many requests in all.
    Count(u64),
}

/// What a [`Load`] measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Answers with a 2xx status.
    pub ok: u64,
    /// Other answers, and failed requests.
    pub failed: u64,
    /// The first failure, for the report.
    pub first_failure: Option<String>,
    /// Body bytes of the 2xx answers.
    pub bytes: u64,
    pub wall: Duration,
}

impl Outcome {
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// Runs `load` and returns what it measured.
pub async fn run(load: &Load) -> Outcome {
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = match load.stop {
        Stop::After(d) => Some(start + d),
        Stop::Count(_) => None,
    };
    let limit = match load.stop {
        Stop::Count(n) => n,
        Stop::After(_) => u64::MAX,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..load.connections.max(1) {
        let load = load.clone();
        let issued = issued.clone();
        tasks.spawn(async move { connection(&load, &issued, limit, deadline).await });
    }
    let mut out = Outcome::default();
    while let Some(r) = tasks.join_next().await {
        let one = r.unwrap_or_else(|e| Outcome {
            failed: 1,
            first_failure: Some(format!("load task: {e}")),
            ..Outcome::default()
        });
        out.ok += one.ok;
        out.failed += one.failed;
        out.bytes += one.bytes;
        if out.first_failure.is_none() {
            out.first_failure = one.first_failure;
        }
    }
    out.wall = start.elapsed();
    out
}

/// One connection's loop; reconnects after a failed request.
async fn connection(
    load: &Load,
    issued: &AtomicU64,
    limit: u64,
    deadline: Option<Instant>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut sender = None;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d)
            || issued.fetch_add(1, Ordering::Relaxed) >= limit
        {
            return out;
        }
        let fail = |out: &mut Outcome, why: String| {
            out.failed += 1;
            out.first_failure.get_or_insert(why);
        };
        if sender.is_none() {
            match handshake(load.addr).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    fail(&mut out, e);
                    // A refused connection would otherwise spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let req = match request(load.addr, &load.method, &load.path, load.body.clone()) {
            Ok(r) => r,
            Err(e) => {
                fail(&mut out, e);
                return out;
            }
        };
        let answer = exchange(s, req);
        match answer.await {
            Ok((status, body)) if status.is_success() => {
                out.ok += 1;
                out.bytes += body.len() as u64;
            }
            Ok((status, body)) => fail(
                &mut out,
                format!("{status}: {}", String::from_utf8_lossy(&body)),
            ),
            Err(e) => {
                fail(&mut out, e);
                sender = None;
            }
        }
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn handshake(addr: SocketAddr) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    // Ends with the connection, when the sender is dropped or the server closes it.
    tokio::spawn(conn);
    Ok(sender)
}

/// One request on a fresh connection: its status and body.
///
/// # Errors
/// The connection or the exchange failed (as text, for the report).
pub async fn fetch(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    body: Bytes,
) -> Result<(http::StatusCode, Bytes), String> {
    let mut sender = handshake(addr).await?;
    exchange(&mut sender, request(addr, &method, path, body)?).await
}

/// The bearer token every request of this process sends, once set (a benchmark against a
/// server with a token file sets it before its first request); none by default.
static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Makes every later request of this process send `Authorization: Bearer <token>`.
///
/// # Errors
/// When a token is already set.
pub fn use_token(token: &str) -> Result<(), String> {
    TOKEN
        .set(token.to_owned())
        .map_err(|_| "a bearer token is already set".to_owned())
}

/// A request to `addr`; a body is sent as JSON.
fn request(
    addr: SocketAddr,
    method: &http::Method,
    path: &str,
    body: Bytes,
) -> Result<http::Request<Full<Bytes>>, String> {
    let mut req = http::Request::builder()
        .method(method.clone())
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    if !body.is_empty() {
        req = req.header(http::header::CONTENT_TYPE, "application/json");
    }
    if let Some(token) = TOKEN.get() {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    req.body(Full::new(body)).map_err(|e| e.to_string())
}

/// Sends `req` on the connection and reads the whole answer.
async fn exchange(
    sender: &mut Sender,
    req: http::Request<Full<Bytes>>,
) -> Result<(http::StatusCode, Bytes), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}
