//! `POST /clusters/{id}/nodes/{node}/exec`: runs a command on a running node through its
//! NodeAgent and streams the output back as server-sent events.
//!
//! What it owns: the request's validation, who may run what (the owner or an admin, unless
//! the product switched exec off), and the wire format. What it does not own: reaching the
//! node, which the core does ([`super::Backend::exec`]); the api never imports the
//! orchestrator.
//!
//! # Wire format (`text/event-stream`)
//! `event: stdout` / `event: stderr` with `data: {"text": "..."}` (output as it comes, lossy
//! UTF-8), then exactly one `event: exit` with `data: {"code": n}`, `{"signal": n}`,
//! `{"timed_out": true}` or `{"error": "..."}` (the command could not be run). The stream
//! ends after `exit`.
//!
//! # Switching it off
//! A product's template may say `"exec": false` at its top level: its clusters refuse exec
//! with 403 `exec_disabled`.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Principal;
use super::body::{Body, Resp, json_body, object};
use super::clusters::own_cluster;
use super::error::ApiError;
use crate::domain::{ClusterId, Name, NodeStatus};

/// Most arguments in `argv`.
pub const MAX_ARGS: usize = 256;
/// Most bytes of `argv`, all arguments together.
pub const MAX_ARGV_BYTES: usize = 64 * 1024;
/// Default and largest `timeout_s`.
pub const DEFAULT_TIMEOUT_S: u64 = 30;
pub const MAX_TIMEOUT_S: u64 = 3600;
/// Output chunks waiting for a slow client: the command's output waits (it is the
/// caller's own command), so this bounds memory, not speed.
const OUTPUT_BUFFER: usize = 64;

/// Where a node's agent listens and how to prove who we are to it.
#[derive(Debug, Clone)]
pub struct ExecTarget {
    pub host: String,
    pub port: u16,
    /// The cluster's NodeAgent secret.
    pub secret: String,
    /// The pin of the agent's TLS certificate.
    pub cert_sha256: String,
}

/// How a command run by exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEnd {
    Code(i32),
    Signal(i32),
    TimedOut,
    /// It could not be run (agent unreachable, no such binary…).
    Failed(String),
}

/// Where the core sends output: `(true, bytes)` for stdout, `(false, bytes)` for stderr.
pub type ExecOutput = tokio::sync::mpsc::Sender<(bool, Vec<u8>)>;

/// A validated exec request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    pub timeout: Duration,
}

impl ExecRequest {
    /// Parses `{"argv": [...], "timeout_s": n}`.
    ///
    /// # Errors
    /// 400 `invalid_exec` naming what is wrong.
    pub fn parse(body: Value) -> Result<Self, ApiError> {
        let bad = |m: String| ApiError::bad_request("invalid_exec", m);
        let shape = r#"an exec request is {"argv": ["cmd", "arg", ...], "timeout_s": 30}"#;
        let mut body = object(body, "an exec request")?;
        if let Some(k) = body.keys().find(|k| *k != "argv" && *k != "timeout_s") {
            return Err(bad(format!("unknown key {k:?}: {shape}")));
        }
        let Some(Value::Array(items)) = body.remove("argv") else {
            return Err(bad(format!(
                "\"argv\" must be an array of strings: {shape}"
            )));
        };
        if items.is_empty() || items.len() > MAX_ARGS {
            return Err(bad(format!(
                "\"argv\" must hold 1 to {MAX_ARGS} strings, not {}",
                items.len()
            )));
        }
        let argv = items
            .into_iter()
            .map(|v| match v {
                Value::String(s) if !s.contains('\0') => Ok(s),
                other => Err(bad(format!(
                    "every argument must be a string without NUL bytes, not {other}"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if argv[0].is_empty() {
            return Err(bad("\"argv\"[0], the command, is empty".into()));
        }
        let bytes: usize = argv.iter().map(String::len).sum();
        if bytes > MAX_ARGV_BYTES {
            return Err(bad(format!(
                "\"argv\" is {bytes} bytes; at most {MAX_ARGV_BYTES}"
            )));
        }
        let timeout_s = match body.remove("timeout_s") {
            None => DEFAULT_TIMEOUT_S,
            Some(v) => v
                .as_u64()
                .filter(|t| (1..=MAX_TIMEOUT_S).contains(t))
                .ok_or_else(|| {
                    bad(format!(
                        "\"timeout_s\" must be a whole number of seconds from 1 to {MAX_TIMEOUT_S}, not {v}"
                    ))
                })?,
        };
        Ok(Self {
            argv,
            timeout: Duration::from_secs(timeout_s),
        })
    }
}

/// `POST /clusters/{id}/nodes/{node}/exec`.
pub(super) async fn exec(
    state: &AppState,
    who: &Principal,
    id: ClusterId,
    node: Name,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let request = ExecRequest::parse(json_body(state, req).await?)?;
    let c = own_cluster(state, who, id).await?;
    if c.extra.get("exec") == Some(&Value::Bool(false)) {
        return Err(ApiError::Refused {
            code: "exec_disabled",
            message: format!(
                "the product {}/{} does not allow exec on its nodes",
                c.product, c.version
            ),
        });
    }
    let Some(n) = c.nodes.iter().find(|n| n.name == node) else {
        return Err(ApiError::NotFound(format!(
            "cluster {id} has no node {node}"
        )));
    };
    let o = &n.observed;
    let target = match (&o.address, o.agent_port, &o.agent_cert_sha256) {
        (Some(host), Some(port), Some(pin)) if o.status == NodeStatus::Running => ExecTarget {
            host: host.clone(),
            port,
            secret: c.secret.clone(),
            cert_sha256: pin.clone(),
        },
        _ => {
            return Err(ApiError::Conflict {
                message: format!(
                    "node {node} of cluster {id} is {}; exec needs a running node",
                    o.status
                ),
                details: Some(json!({"status": o.status})),
            });
        }
    };
    tracing::info!(cluster_id = %id, node = %node, user = %who.user, argv0 = %request.argv[0], "exec");
    let (tx, body) = Body::channel(OUTPUT_BUFFER);
    let (out, mut output) = tokio::sync::mpsc::channel(OUTPUT_BUFFER);
    let run = state
        .backend
        .exec(target, request.argv, request.timeout, out);
    // Ends with the command, or as soon as the client goes away (dropping the call, which
    // kills the command on the node).
    tokio::spawn(async move {
        tokio::pin!(run);
        let mut end = None;
        loop {
            tokio::select! {
                e = &mut run, if end.is_none() => end = Some(e),
                item = output.recv() => match item {
                    Some((stdout, data)) => {
                        let name = if stdout { "stdout" } else { "stderr" };
                        let text = String::from_utf8_lossy(&data);
                        if tx.send(frame(name, &json!({"text": text}))).await.is_err() {
                            return;
                        }
                    }
                    None => break,
                },
            }
        }
        let end = match end {
            Some(e) => e,
            None => run.await,
        };
        let _ = tx.send(frame("exit", &exit_data(&end))).await;
    });
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

fn frame(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

fn exit_data(end: &ExecEnd) -> Value {
    match end {
        ExecEnd::Code(c) => json!({"code": c}),
        ExecEnd::Signal(s) => json!({"signal": s}),
        ExecEnd::TimedOut => json!({"timed_out": true}),
        ExecEnd::Failed(why) => json!({"error": why}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_argv_and_a_timeout() {
        let r = ExecRequest::parse(json!({"argv": ["echo", "hi"], "timeout_s": 5})).unwrap();
        assert_eq!(r.argv, ["echo", "hi"]);
        assert_eq!(r.timeout, Duration::from_secs(5));
        let r = ExecRequest::parse(json!({"argv": ["true"]})).unwrap();
        assert_eq!(r.timeout, Duration::from_secs(DEFAULT_TIMEOUT_S));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let long = vec!["x"; MAX_ARGS + 1];
        let big = vec!["x".repeat(1024); 65];
        for (body, says) in [
            (json!({"argv": []}), "1 to 256 strings, not 0"),
            (json!({"argv": long}), "not 257"),
            (json!({"argv": big}), "at most 65536"),
            (json!({"argv": "ls"}), "must be an array of strings"),
            (json!({}), "must be an array of strings"),
            (json!({"argv": ["ls", 1]}), "must be a string"),
            (json!({"argv": ["a\u{0}b"]}), "without NUL"),
            (json!({"argv": [""]}), "the command, is empty"),
            (
                json!({"argv": ["ls"], "timeout_s": 0}),
                "from 1 to 3600, not 0",
            ),
            (json!({"argv": ["ls"], "timeout_s": 3601}), "not 3601"),
            (json!({"argv": ["ls"], "timeout_s": "5"}), "not \"5\""),
            (json!({"argv": ["ls"], "cwd": "/"}), "unknown key \"cwd\""),
            (json!(["ls"]), "must be a JSON object"),
        ] {
            let e = ExecRequest::parse(body.clone()).unwrap_err();
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST, "{body}");
            assert!(e.to_string().contains(says), "{body}: {e}");
        }
    }
}
