//! The command-line client: `paas products …` and `paas clusters …`, a thin layer over the
//! REST API (it never touches the store or Mesos, so it works against any `paas serve`).

mod bundle;
mod dry_run;
mod table;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Subcommand;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value, json};

/// Errors of the client; `main` prints them and exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{status}: {message}")]
    Api { status: u16, message: String },
    #[error("invalid server answer: {0}")]
    Decode(String),
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bad --opt {0:?}: expected key=value")]
    BadOpt(String),
    #[error("cluster {id} {status}: {reason}")]
    ClusterFailed {
        id: String,
        status: String,
        reason: String,
    },
    #[error("timed out after {0:?} waiting for the cluster (last status: {1})")]
    Timeout(Duration, String),
    #[error("the cluster would not fit; nothing was launched")]
    WouldNotFit,
    /// `clusters exec`: the command ended with this exit status (non-zero), which `paas`
    /// exits with.
    #[error("the command {0}")]
    CommandExit(i32, String),
}

#[derive(Subcommand)]
pub enum ProductsCmd {
    /// List every product version.
    List,
    /// Show a product's versions, or one version's details.
    Get {
        name: String,
        version: Option<String>,
    },
    /// Register a product version (admin).
    Create {
        name: String,
        version: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        logo_url: Option<String>,
    },
    /// Delete a product version (admin; refused while live clusters use it).
    Delete { name: String, version: String },
    /// Upload the cluster template (admin).
    PutTemplate {
        name: String,
        version: String,
        file: String,
    },
    /// Upload the options document (admin).
    PutOptions {
        name: String,
        version: String,
        file: String,
    },
    /// Upload the orchestration script (admin).
    PutOrchestrator {
        name: String,
        version: String,
        file: String,
    },
    /// Print one uploaded part: template, options or orchestrator.
    Part {
        name: String,
        version: String,
        part: String,
    },
    /// Register or update a product from its folder in one step (admin): `product.json`
    /// and the template, options and script it names; nothing changes if any file is bad.
    Push { dir: std::path::PathBuf },
    /// Download a product version as a folder (admin), into DIR (default NAME-VERSION).
    Pull {
        name: String,
        version: String,
        dir: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum ClustersCmd {
    /// List clusters (yours; admins see all).
    List {
        /// Only clusters in this status: registered, scheduling, scheduled, configuring,
        /// configured, ready, healing, updating, failed, destroying or destroyed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        product: Option<String>,
        /// Print at most this many clusters (default: every one, fetched a page at a time);
        /// when more remain, the cursor to continue with goes to stderr.
        #[arg(long)]
        limit: Option<std::num::NonZeroUsize>,
        /// Start after this cursor (the one a `--limit` listing printed).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show a cluster: status, nodes and services.
    Get { id: String },
    /// Launch a cluster of a product.
    Launch {
        name: String,
        version: String,
        /// An option, `key=value` (repeatable). Values are JSON when they parse as JSON
        /// (`size=3`, `debug=true`), else strings.
        #[arg(long = "opt", value_name = "KEY=VALUE")]
        opts: Vec<String>,
        /// Follow the status until the cluster is `ready` (exit 0) or `failed` (exit 1).
        #[arg(long)]
        wait: bool,
        /// With --wait: the status that counts as done.
        #[arg(long, default_value = "ready")]
        until: String,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Launch nothing: show where each node would go, or why it would not fit and what
        /// would (exit 1 when it would not fit).
        #[arg(long, conflicts_with = "wait")]
        dry_run: bool,
        /// Fail the cluster if it is not placed within this many seconds (the server's
        /// `--placement-timeout` otherwise).
        #[arg(long, value_name = "SECONDS")]
        placement_timeout: Option<u64>,
    },
    /// Change the number of nodes of a ready cluster (its `size` option). Refused (409)
    /// unless the cluster is ready: a change during another one is not queued.
    Scale {
        id: String,
        size: u64,
        /// Follow the status until the cluster is `ready` again (exit 0) or `failed` (exit 1).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Replace a node of a ready cluster with a new attempt (possibly on another agent).
    Replace {
        id: String,
        node: String,
        /// Follow the status until the cluster is `ready` again (exit 0) or `failed` (exit 1).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Restart a node's services in place (same task, same ports).
    Restart {
        id: String,
        node: String,
        /// Follow the status until the cluster is `ready` again (exit 0) or `failed` (exit 1).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Change options of a ready cluster (the others keep their values). Refused (409)
    /// unless the cluster is ready: a change during another one is not queued.
    Update {
        id: String,
        /// An option, `key=value` (repeatable), as for `launch`.
        #[arg(long = "opt", value_name = "KEY=VALUE", required = true)]
        opts: Vec<String>,
        /// Follow the status until the cluster is `ready` again (exit 0) or `failed` (exit 1).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Destroy a cluster.
    Delete {
        id: String,
        /// Follow the status until `destroyed`.
        #[arg(long)]
        wait: bool,
    },
    /// The cluster's status history.
    Events { id: String },
    /// Print the cluster's record and history, then every change as it happens (status,
    /// nodes, steps, orchestrator output), until it is purged or the stream ends.
    Watch { id: String },
    /// Run a command on a running node (`paas clusters exec ID NODE -- cmd args…`): its
    /// output streams here, and `paas` exits with its exit status (124 when it timed out,
    /// 128 + N when killed by signal N).
    Exec {
        id: String,
        node: String,
        /// Kill the command after this many seconds (1 to 3600).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// The command and its arguments (no shell).
        #[arg(last = true, required = true)]
        argv: Vec<String>,
    },
    /// The orchestrator's output for the cluster.
    Logs { id: String },
}

/// A REST client for one server.
pub struct Client {
    base: String,
    token: Option<String>,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    pub fn new(url: &str, token: Option<String>) -> Self {
        let base = format!("{}/bigdata/api/v1", url.trim_end_matches('/'));
        Self {
            base,
            token,
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(u16, Bytes), CliError> {
        self.send(method, path, body.map(|b| (b, "application/json")))
            .await
    }

    /// [`Client::call`] with a body of any media type.
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(Bytes, &str)>,
    ) -> Result<(u16, Bytes), CliError> {
        let resp = self.request(method, path, body, None).await?;
        let status = resp.status().as_u16();
        Ok((status, collect(resp).await?))
    }

    /// Sends a request; an error answer (4xx, 5xx) becomes the API's error. The body of a
    /// success is left to the caller, read whole or as a stream.
    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<(Bytes, &str)>,
        accept: Option<&str>,
    ) -> Result<http::Response<hyper::body::Incoming>, CliError> {
        let url = format!("{}{path}", self.base);
        let mut req = http::Request::builder().method(method).uri(&url);
        let mut bytes = Bytes::new();
        if let Some((b, ct)) = body {
            req = req.header("content-type", ct);
            bytes = b;
        }
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| CliError::Decode(e.to_string()))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|source| CliError::Connect { url, source })?;
        let status = resp.status().as_u16();
        if status >= 400 {
            return Err(api_error(status, &collect(resp).await?));
        }
        Ok(resp)
    }

    /// POSTs a JSON body and decodes the JSON answer.
    ///
    /// # Errors
    /// [`CliError`] for connection errors and error answers.
    pub async fn post_json(&self, path: &str, body: Value) -> Result<Value, CliError> {
        self.json("POST", path, Some(body)).await
    }

    /// GETs `path` and returns the answer's body as text (`/metrics`, say).
    ///
    /// # Errors
    /// [`CliError`] for connection errors and error answers.
    pub async fn get_text(&self, path: &str) -> Result<String, CliError> {
        let (_, body) = self.call("GET", path, None).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// PUTs raw bytes (a template, options document or script).
    ///
    /// # Errors
    /// [`CliError`] for connection errors and error answers.
    pub async fn put_raw(&self, path: &str, body: Vec<u8>) -> Result<(), CliError> {
        self.call("PUT", path, Some(Bytes::from(body)))
            .await
            .map(drop)
    }

    /// Opens `GET path` as a server-sent event stream.
    ///
    /// # Errors
    /// [`CliError`] for connection errors and error answers.
    pub async fn stream(&self, path: &str) -> Result<EventStream, CliError> {
        self.stream_call("GET", path, None).await
    }

    /// Sends a request whose answer is a server-sent event stream.
    ///
    /// # Errors
    /// [`CliError`] for connection errors and error answers.
    async fn stream_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<EventStream, CliError> {
        let body = body.map(|b| (Bytes::from(b.to_string()), "application/json"));
        let resp = self
            .request(method, path, body, Some("text/event-stream"))
            .await?;
        Ok(EventStream {
            body: resp.into_body(),
            buf: Vec::new(),
        })
    }

    async fn json(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        let (_, bytes) = self
            .call(method, path, body.map(|b| Bytes::from(b.to_string())))
            .await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| CliError::Decode(e.to_string()))
    }
}

/// An error answer as a [`CliError::Api`] with the API's message.
fn api_error(status: u16, bytes: &[u8]) -> CliError {
    let message = serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned());
    CliError::Api { status, message }
}

/// One server-sent event: its name and its JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    pub event: String,
    pub data: Value,
}

/// An open event stream (see [`Client::stream`]).
pub struct EventStream {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl EventStream {
    /// The next event; `None` when the stream ended or broke.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        loop {
            if let Some(e) = take_event(&mut self.buf) {
                return Some(e);
            }
            match self.body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                None | Some(Err(_)) => return None,
            }
        }
    }
}

/// Cuts the first complete event out of `buf`; comments (heartbeats) and events without
/// JSON data are skipped.
fn take_event(buf: &mut Vec<u8>) -> Option<StreamEvent> {
    loop {
        let end = buf.windows(2).position(|w| w == b"\n\n")?;
        let block: Vec<u8> = buf.drain(..end + 2).collect();
        let text = String::from_utf8_lossy(&block);
        let mut event = String::from("message");
        let mut data = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = serde_json::from_str(v).ok();
            }
        }
        if let Some(data) = data {
            return Some(StreamEvent { event, data });
        }
    }
}

/// `  (text)` when `v` is a string, else nothing.
fn aside(v: &Value) -> String {
    v.as_str().map(|t| format!("  ({t})")).unwrap_or_default()
}

/// One line for a person to read, for an event of `paas clusters watch`.
pub fn render_event(e: &StreamEvent) -> String {
    let d = &e.data;
    match e.event.as_str() {
        "cluster" => format!(
            "cluster  {}  size={} generation={}{}",
            s(&d["status"]),
            s(&d["size"]),
            s(&d["generation"]),
            aside(&d["reason"])
        ),
        "node" => format!(
            "node     {} {}{}{}",
            s(&d["node"]),
            s(&d["status"]),
            d["host"]
                .as_str()
                .map(|h| format!(" on {h}"))
                .unwrap_or_default(),
            aside(&d["message"])
        ),
        "step" => format!(
            "step     {} {}{}",
            s(&d["at"]),
            s(&d["status"]),
            aside(&d["message"])
        ),
        "log" => d["text"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('\n')
            .to_owned(),
        other => format!("{other:<8} {d}"),
    }
}

/// The whole body of an answer.
async fn collect(resp: http::Response<hyper::body::Incoming>) -> Result<Bytes, CliError> {
    Ok(resp
        .into_body()
        .collect()
        .await
        .map_err(|e| CliError::Decode(e.to_string()))?
        .to_bytes())
}

fn read(path: &str) -> Result<Bytes, CliError> {
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|source| CliError::File {
            path: path.to_owned(),
            source,
        })
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// Runs a `products` command, printing to stdout.
///
/// # Errors
/// [`CliError`] for connection, API and file errors.
pub async fn products(c: &Client, cmd: ProductsCmd) -> Result<(), CliError> {
    match cmd {
        ProductsCmd::List => {
            let v = c.json("GET", "/products", None).await?;
            let rows: Vec<Vec<String>> = v["products"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let parts: Vec<&str> = ["template", "options", "orchestrator"]
                        .into_iter()
                        .filter(|k| p["parts"][k] == true)
                        .collect();
                    vec![
                        s(&p["name"]),
                        s(&p["version"]),
                        parts.join(","),
                        s(&p["description"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(&["NAME", "VERSION", "PARTS", "DESCRIPTION"], &rows)
            );
        }
        ProductsCmd::Get {
            name,
            version: None,
        } => println!(
            "{}",
            pretty(&c.json("GET", &format!("/products/{name}"), None).await?)
        ),
        ProductsCmd::Get {
            name,
            version: Some(v),
        } => println!(
            "{}",
            pretty(
                &c.json("GET", &format!("/products/{name}/{v}"), None)
                    .await?
            )
        ),
        ProductsCmd::Create {
            name,
            version,
            description,
            logo_url,
        } => {
            let mut body = json!({"name": name, "version": version, "description": description});
            if let Some(u) = logo_url {
                body["logo_url"] = json!(u);
            }
            println!(
                "{}",
                pretty(&c.json("POST", "/products", Some(body)).await?)
            );
        }
        ProductsCmd::Delete { name, version } => {
            c.call("DELETE", &format!("/products/{name}/{version}"), None)
                .await?;
            println!("deleted {name}/{version}");
        }
        ProductsCmd::Push { dir } => bundle::push(c, &dir).await?,
        ProductsCmd::Pull { name, version, dir } => bundle::pull(c, &name, &version, dir).await?,
        ProductsCmd::PutTemplate {
            name,
            version,
            file,
        } => put(c, &name, &version, "template", &file).await?,
        ProductsCmd::PutOptions {
            name,
            version,
            file,
        } => put(c, &name, &version, "options", &file).await?,
        ProductsCmd::PutOrchestrator {
            name,
            version,
            file,
        } => put(c, &name, &version, "orquestrator", &file).await?,
        ProductsCmd::Part {
            name,
            version,
            part,
        } => {
            let (_, bytes) = c
                .call("GET", &format!("/products/{name}/{version}/{part}"), None)
                .await?;
            std::io::stdout()
                .write_all(&bytes)
                .map_err(|source| CliError::File {
                    path: "stdout".into(),
                    source,
                })?;
        }
    }
    Ok(())
}

async fn put(
    c: &Client,
    name: &str,
    version: &str,
    part: &str,
    file: &str,
) -> Result<(), CliError> {
    c.call(
        "PUT",
        &format!("/products/{name}/{version}/{part}"),
        Some(read(file)?),
    )
    .await?;
    println!("uploaded {part} of {name}/{version}");
    Ok(())
}

/// Parses `--opt key=value` pairs into a launch body.
///
/// # Errors
/// [`CliError::BadOpt`] for a pair without `=` or with an empty key.
pub fn parse_opts(opts: &[String]) -> Result<Map<String, Value>, CliError> {
    opts.iter()
        .map(|o| {
            let (k, v) = o
                .split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| CliError::BadOpt(o.clone()))?;
            let value = serde_json::from_str::<Value>(v)
                .ok()
                .filter(|x| !x.is_object() && !x.is_array() || v.starts_with(['{', '[']))
                .unwrap_or_else(|| json!(v));
            Ok((k.to_owned(), value))
        })
        .collect()
}

/// Runs a `clusters` command, printing to stdout.
///
/// # Errors
/// [`CliError`]; with `--wait`, also a failed cluster or a timeout.
pub async fn clusters(c: &Client, cmd: ClustersCmd) -> Result<(), CliError> {
    match cmd {
        ClustersCmd::List {
            status,
            product,
            limit,
            cursor,
        } => {
            let mut filters = Vec::new();
            if let Some(s) = status {
                filters.push(format!("status={s}"));
            }
            if let Some(p) = product {
                filters.push(format!("product={p}"));
            }
            let (clusters, more) = list_clusters(c, &filters, limit, cursor).await?;
            let rows: Vec<Vec<String>> = clusters
                .iter()
                .map(|c| {
                    vec![
                        s(&c["id"]),
                        format!("{}/{}", s(&c["product"]), s(&c["version"])),
                        s(&c["owner"]),
                        s(&c["status"]),
                        c["nodes"].as_array().map_or(0, Vec::len).to_string(),
                        s(&c["created_at"]),
                    ]
                })
                .collect();
            print!(
                "{}",
                table::render(
                    &["ID", "PRODUCT", "OWNER", "STATUS", "NODES", "CREATED"],
                    &rows
                )
            );
            if let Some(next) = more {
                eprintln!("more clusters follow: add --cursor {next}");
            }
        }
        ClustersCmd::Get { id } => print!(
            "{}",
            describe(&c.json("GET", &format!("/clusters/{id}"), None).await?)
        ),
        ClustersCmd::Launch {
            name,
            version,
            opts,
            wait,
            until,
            timeout,
            dry_run,
            placement_timeout,
        } => {
            let body = Value::Object(parse_opts(&opts)?);
            let path = format!("/products/{name}/{version}");
            if dry_run {
                let v = c
                    .json("POST", &format!("{path}?dry_run=true"), Some(body))
                    .await?;
                print!("{}", dry_run::render(&v));
                return if dry_run::does_not_fit(&v) {
                    Err(CliError::WouldNotFit)
                } else {
                    Ok(())
                };
            }
            let path = match placement_timeout {
                Some(t) => format!("{path}?placement_timeout_s={t}"),
                None => path,
            };
            let v = c.json("POST", &path, Some(body)).await?;
            let id = s(&v["id"]);
            println!("cluster {id} {}", s(&v["status"]));
            if wait {
                let goal = Goal {
                    status: &until,
                    generation: 0,
                };
                follow(c, &id, goal, Duration::from_secs(timeout)).await?;
            }
        }
        ClustersCmd::Scale {
            id,
            size,
            wait,
            timeout,
        } => {
            let changes = json!({"size": size})
                .as_object()
                .cloned()
                .unwrap_or_default();
            change(c, &id, changes, wait.then(|| Duration::from_secs(timeout))).await?;
        }
        ClustersCmd::Update {
            id,
            opts,
            wait,
            timeout,
        } => {
            let changes = parse_opts(&opts)?;
            change(c, &id, changes, wait.then(|| Duration::from_secs(timeout))).await?;
        }
        ClustersCmd::Replace {
            id,
            node,
            wait,
            timeout,
        } => {
            node_action(
                c,
                &id,
                &node,
                "replace",
                wait.then(|| Duration::from_secs(timeout)),
            )
            .await?
        }
        ClustersCmd::Restart {
            id,
            node,
            wait,
            timeout,
        } => {
            node_action(
                c,
                &id,
                &node,
                "restart",
                wait.then(|| Duration::from_secs(timeout)),
            )
            .await?
        }
        ClustersCmd::Delete { id, wait } => {
            let v = c.json("DELETE", &format!("/clusters/{id}"), None).await?;
            println!("cluster {id} {}", s(&v["status"]));
            if wait {
                let goal = Goal {
                    status: "destroyed",
                    generation: 0,
                };
                follow(c, &id, goal, Duration::from_secs(300)).await?;
            }
        }
        ClustersCmd::Events { id } => {
            let v = c
                .json("GET", &format!("/clusters/{id}/events"), None)
                .await?;
            let rows: Vec<Vec<String>> = v["events"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| vec![s(&e["at"]), s(&e["status"]), s(&e["message"])])
                .collect();
            print!("{}", table::render(&["AT", "STATUS", "MESSAGE"], &rows));
        }
        ClustersCmd::Watch { id } => {
            let mut events = c.stream(&format!("/clusters/{id}/events")).await?;
            let mut out = std::io::stdout();
            while let Some(e) = events.next().await {
                // A closed stdout (a pipe into `head`) ends the watch.
                if writeln!(out, "{}", render_event(&e)).is_err() || e.event == "purged" {
                    break;
                }
                let _ = out.flush();
            }
        }
        ClustersCmd::Exec {
            id,
            node,
            timeout,
            argv,
        } => exec(c, &id, &node, timeout, argv).await?,
        ClustersCmd::Logs { id } => {
            let (_, bytes) = c.call("GET", &format!("/clusters/{id}/logs"), None).await?;
            std::io::stdout()
                .write_all(&bytes)
                .map_err(|source| CliError::File {
                    path: "stdout".into(),
                    source,
                })?;
        }
    }
    Ok(())
}

/// `clusters exec`: streams the command's output to stdout and stderr; `Ok` only when it
/// exited 0.
async fn exec(
    c: &Client,
    id: &str,
    node: &str,
    timeout: u64,
    argv: Vec<String>,
) -> Result<(), CliError> {
    let body = json!({"argv": argv, "timeout_s": timeout});
    let path = format!("/clusters/{id}/nodes/{node}/exec");
    let mut events = c.stream_call("POST", &path, Some(body)).await?;
    while let Some(e) = events.next().await {
        let text = e.data["text"].as_str().unwrap_or_default();
        match e.event.as_str() {
            "stdout" => {
                let mut out = std::io::stdout();
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            }
            "stderr" => {
                let _ = std::io::stderr().write_all(text.as_bytes());
            }
            "exit" => return exit_of(&e.data),
            _ => {}
        }
    }
    Err(CliError::Decode(
        "the output stream ended without the command's exit status".into(),
    ))
}

/// The `exit` event of an exec stream as the CLI's outcome.
fn exit_of(d: &Value) -> Result<(), CliError> {
    let code = |c: i64| i32::try_from(c).unwrap_or(1);
    match (d["code"].as_i64(), d["signal"].as_i64()) {
        (Some(0), _) => Ok(()),
        (Some(c), _) => Err(CliError::CommandExit(
            code(c),
            format!("exited with status {c}"),
        )),
        (None, Some(s)) => Err(CliError::CommandExit(
            128 + code(s),
            format!("was killed by signal {s}"),
        )),
        _ if d["timed_out"] == true => Err(CliError::CommandExit(124, "timed out".into())),
        _ => Err(CliError::CommandExit(
            1,
            format!("could not run: {}", s(&d["error"])),
        )),
    }
}

/// Largest page the server serves (`GET /clusters?limit=`).
const MAX_PAGE: usize = 1000;

/// `GET /clusters` with `filters` (`key=value`), page after page from `cursor`: every
/// cluster, or the first `limit`. Also the cursor to continue with when `limit` stopped it
/// before the end.
///
/// # Errors
/// [`CliError`] of any page; [`CliError::Decode`] for an answer without a `clusters` list.
async fn list_clusters(
    c: &Client,
    filters: &[String],
    limit: Option<std::num::NonZeroUsize>,
    mut cursor: Option<String>,
) -> Result<(Vec<Value>, Option<String>), CliError> {
    let mut out = Vec::new();
    loop {
        let want = limit.map_or(MAX_PAGE, |l| (l.get() - out.len()).min(MAX_PAGE));
        if want == 0 {
            return Ok((out, cursor));
        }
        let mut q = filters.to_vec();
        q.push(format!("limit={want}"));
        if let Some(k) = &cursor {
            q.push(format!("cursor={k}"));
        }
        let mut v = c
            .json("GET", &format!("/clusters?{}", q.join("&")), None)
            .await?;
        let Value::Array(page) = v["clusters"].take() else {
            return Err(CliError::Decode(
                "no \"clusters\" list in the answer".into(),
            ));
        };
        out.extend(page);
        cursor = v["next"].as_str().map(str::to_owned);
        if cursor.is_none() {
            return Ok((out, None));
        }
    }
}

/// The body of `PATCH /clusters/{id}`.
fn update_body(changes: Map<String, Value>) -> Value {
    json!({"options": changes})
}

/// `scale` and `update`: PATCHes the options and, with a timeout, follows the cluster until
/// it is `ready` at the new generation.
async fn change(
    c: &Client,
    id: &str,
    changes: Map<String, Value>,
    wait: Option<Duration>,
) -> Result<(), CliError> {
    let (status, bytes) = c
        .call(
            "PATCH",
            &format!("/clusters/{id}"),
            Some(Bytes::from(update_body(changes).to_string())),
        )
        .await?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| CliError::Decode(e.to_string()))?;
    let generation = v["generation"].as_u64().unwrap_or(0);
    if status == 200 {
        // Nothing to change: the cluster is as asked, and nothing to wait for.
        println!(
            "cluster {id} {}: nothing to change (generation {generation})",
            s(&v["status"])
        );
        return Ok(());
    }
    println!("cluster {id} {} (generation {generation})", s(&v["status"]));
    if let Some(timeout) = wait {
        let goal = Goal {
            status: "ready",
            generation,
        };
        follow(c, id, goal, timeout).await?;
    }
    Ok(())
}

/// `POST /clusters/{id}/nodes/{node}/{verb}` (`replace` or `restart`), then, with a wait,
/// follows the cluster until it is `ready` at the new generation.
async fn node_action(
    c: &Client,
    id: &str,
    node: &str,
    verb: &str,
    wait: Option<Duration>,
) -> Result<(), CliError> {
    let v = c
        .json("POST", &format!("/clusters/{id}/nodes/{node}/{verb}"), None)
        .await?;
    let generation = v["generation"].as_u64().unwrap_or(0);
    println!(
        "cluster {id} {}: {verb} {node} (generation {generation})",
        s(&v["status"])
    );
    if let Some(timeout) = wait {
        let goal = Goal {
            status: "ready",
            generation,
        };
        follow(c, id, goal, timeout).await?;
    }
    Ok(())
}

/// What `--wait` waits for.
#[derive(Debug, Clone, Copy)]
struct Goal<'a> {
    status: &'a str,
    /// The status counts only at this generation or later (0: any), so that an update is
    /// not taken as done by the `ready` it started from. Its progress is shown from the
    /// latest `updating` on.
    generation: u64,
}

/// Follows the cluster until the goal, `failed` or the timeout, showing the status history
/// on one line that updates in place (on a terminal; one line per change otherwise). Every
/// other status (`healing` and `updating` too) is progress. It follows the cluster's event
/// stream, and polls the record instead when the stream cannot be opened or breaks.
async fn follow(c: &Client, id: &str, goal: Goal<'_>, timeout: Duration) -> Result<(), CliError> {
    let mut progress = Progress::new(goal, id);
    let deadline = tokio::time::Instant::now() + timeout;
    let streamed = tokio::time::timeout_at(deadline, follow_stream(c, id, &mut progress)).await;
    match streamed {
        Ok(Some(outcome)) => outcome,
        Ok(None) => follow_polling(c, &mut progress, timeout).await,
        Err(_) => Err(progress.timed_out(timeout)),
    }
}

/// Follows the event stream: `None` if it could not be opened or ended before the goal.
async fn follow_stream(
    c: &Client,
    id: &str,
    progress: &mut Progress<'_>,
) -> Option<Result<(), CliError>> {
    let mut events = c.stream(&format!("/clusters/{id}/events")).await.ok()?;
    while let Some(e) = events.next().await {
        match e.event.as_str() {
            "step" => {
                let at = e.data["index"]
                    .as_u64()
                    .and_then(|i| usize::try_from(i).ok());
                let at = at.unwrap_or(progress.all.len()).min(progress.all.len());
                progress.all.truncate(at);
                progress.all.push(s(&e.data["status"]));
            }
            "cluster" => {
                progress.status = s(&e.data["status"]);
                progress.generation = e.data["generation"].as_u64().unwrap_or(0);
                progress.reason = s(&e.data["reason"]);
            }
            _ => continue,
        }
        if let Some(done) = progress.show() {
            return Some(done);
        }
    }
    None
}

/// Polls the cluster's record every half second.
async fn follow_polling(
    c: &Client,
    progress: &mut Progress<'_>,
    timeout: Duration,
) -> Result<(), CliError> {
    loop {
        let v = c
            .json("GET", &format!("/clusters/{}", progress.id), None)
            .await?;
        progress.all = v["history"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| s(&h["status"]))
            .collect();
        progress.status = s(&v["status"]);
        progress.generation = v["generation"].as_u64().unwrap_or(0);
        progress.reason = s(&v["reason"]);
        if let Some(done) = progress.show() {
            return done;
        }
        if progress.start.elapsed() > timeout {
            return Err(progress.timed_out(timeout));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What `--wait` knows of the cluster, from the stream or the record, and what it showed.
struct Progress<'a> {
    goal: Goal<'a>,
    id: &'a str,
    tty: bool,
    start: Instant,
    /// Every status of the history, in order.
    all: Vec<String>,
    status: String,
    generation: u64,
    reason: String,
    shown: Vec<String>,
    /// Where the shown part of the history starts (an update shows its own steps only).
    from: Option<usize>,
}

impl<'a> Progress<'a> {
    fn new(goal: Goal<'a>, id: &'a str) -> Self {
        Self {
            goal,
            id,
            tty: std::io::stdout().is_terminal(),
            start: Instant::now(),
            all: Vec::new(),
            status: String::new(),
            generation: 0,
            reason: String::new(),
            shown: Vec::new(),
            from: None,
        }
    }

    /// Shows what changed; the outcome once the goal, `failed` or `destroyed` is reached.
    /// Nothing until the history has caught up with the status (a stream sends the status
    /// first, then the history entries that led to it).
    fn show(&mut self) -> Option<Result<(), CliError>> {
        if self.all.last() != Some(&self.status) {
            return None;
        }
        let (all, goal) = (&self.all, self.goal);
        let from = *self.from.get_or_insert_with(|| {
            if goal.generation > 1 {
                all.iter().rposition(|st| st == "updating").unwrap_or(0)
            } else {
                0
            }
        });
        let history: Vec<String> = self.all.iter().skip(from).cloned().collect();
        if history != self.shown {
            let line = history.join(" → ");
            if self.tty {
                print!("\r\x1b[2K{line} ({:.0?})", self.start.elapsed());
            } else {
                for st in history.iter().skip(self.shown.len()) {
                    println!("{st}");
                }
            }
            let _ = std::io::stdout().flush();
            self.shown = history;
        }
        let until = goal.status;
        let done = self.status == until && self.generation >= goal.generation;
        let failed =
            self.status == "failed" || (self.status == "destroyed" && until != "destroyed");
        if !(done || failed) {
            return None;
        }
        if self.tty {
            println!();
        }
        if failed {
            return Some(Err(CliError::ClusterFailed {
                id: self.id.to_owned(),
                status: self.status.clone(),
                reason: self.reason.clone(),
            }));
        }
        Some(Ok(()))
    }

    fn timed_out(&self, timeout: Duration) -> CliError {
        if self.tty {
            println!();
        }
        CliError::Timeout(timeout, self.status.clone())
    }
}

/// A cluster as text: a header, the nodes table and the services table.
pub fn describe(c: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "cluster   {}\nproduct   {}/{}\nowner     {}\nstatus    {}\n",
        s(&c["id"]),
        s(&c["product"]),
        s(&c["version"]),
        s(&c["owner"]),
        s(&c["status"])
    ));
    if let Some(r) = c["reason"].as_str() {
        out.push_str(&format!("reason    {r}\n"));
    }
    if let Some(g) = c["generation"].as_u64() {
        out.push_str(&format!("generation {g}\n"));
    }
    out.push_str(&format!("created   {}\n\n", s(&c["created_at"])));
    let nodes: Vec<Vec<String>> = c["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let ports: Vec<String> = n["ports"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let services = n["services"]
                .as_array()
                .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            vec![
                s(&n["name"]),
                s(&n["status"]),
                s(&n["address"]),
                s(&n["cpu"]),
                s(&n["mem"]),
                ports.join(","),
                services,
                s(&n["task_id"]),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &[
            "NODE", "STATUS", "ADDRESS", "CPU", "MEM", "PORTS", "SERVICES", "TASK",
        ],
        &nodes,
    ));
    let services: Vec<Vec<String>> = c["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|sv| {
            vec![
                s(&sv["name"]),
                sv["nodes"]
                    .as_array()
                    .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    if !services.is_empty() {
        out.push('\n');
        out.push_str(&table::render(&["SERVICE", "NODES"], &services));
    }
    out
}

/// A JSON value as plain text: strings unquoted, null as `-`.
fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(x) => x.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opts_parse_as_json_or_strings() {
        let got = parse_opts(&[
            "size=3".into(),
            "name=spark".into(),
            "debug=true".into(),
            "ratio=0.5".into(),
            "list=[1,2]".into(),
            "empty=".into(),
        ])
        .unwrap();
        assert_eq!(
            Value::Object(got),
            json!({"size": 3, "name": "spark", "debug": true, "ratio": 0.5, "list": [1, 2], "empty": ""})
        );
        assert!(parse_opts(&["novalue".into()]).is_err());
        assert!(parse_opts(&["=1".into()]).is_err());
    }

    #[derive(clap::Parser)]
    struct Args {
        #[command(subcommand)]
        cmd: ClustersCmd,
    }

    fn args(argv: &[&str]) -> Result<ClustersCmd, clap::Error> {
        use clap::Parser;
        Args::try_parse_from(std::iter::once("clusters").chain(argv.iter().copied())).map(|a| a.cmd)
    }

    #[test]
    fn scale_and_update_arguments() {
        let scale = args(&["scale", "abc", "5", "--wait"]).unwrap();
        assert!(
            matches!(&scale, ClustersCmd::Scale { id, size: 5, wait: true, timeout: 600 } if id == "abc"),
            "scale"
        );
        let ClustersCmd::Scale { size, .. } = args(&["scale", "abc", "2"]).unwrap() else {
            panic!("scale")
        };
        assert_eq!(
            update_body(json!({"size": size}).as_object().unwrap().clone()),
            json!({"options": {"size": 2}})
        );
        for bad in [
            &["scale", "abc"][..],
            &["scale", "abc", "many"],
            &["scale", "abc", "-1"],
            &["update", "abc"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
        let ClustersCmd::Update {
            id,
            opts,
            wait,
            timeout,
        } = args(&[
            "update",
            "abc",
            "--opt",
            "size=3",
            "--opt",
            "mem=128",
            "--timeout",
            "60",
        ])
        .unwrap()
        else {
            panic!("update")
        };
        assert_eq!((id.as_str(), wait, timeout), ("abc", false, 60));
        assert_eq!(
            update_body(parse_opts(&opts).unwrap()),
            json!({"options": {"size": 3, "mem": 128}})
        );
    }

    #[test]
    fn describe_shows_nodes_and_services() {
        let c = json!({
            "id": "abc", "product": "reference", "version": "1.0.0", "owner": "alice", "status": "scheduled", "created_at": "t",
            "nodes": [{"name": "node0", "status": "running", "address": "127.0.0.1", "cpu": 0.1, "mem": 64.0, "ports": {"http": 31000}, "services": ["head"], "task_id": "abc.node0.1"}],
            "services": [{"name": "head", "nodes": ["node0"]}]
        });
        let text = describe(&c);
        assert!(text.contains("status    scheduled"), "{text}");
        let node_line = text.lines().find(|l| l.starts_with("node0")).unwrap();
        for want in ["running", "127.0.0.1", "http=31000", "head", "abc.node0.1"] {
            assert!(node_line.contains(want), "{node_line}");
        }
        assert!(
            text.lines()
                .any(|l| l.starts_with("head") && l.contains("node0")),
            "{text}"
        );
    }
}
