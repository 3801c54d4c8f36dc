//! `paas node-tool`: tiny commands for node images that hold nothing but `/paas` (the reference
//! product's image is `FROM scratch`: no shell, no curl). Hidden from `--help`.
//!
//! Both read a peers file rendered at configure time:
//!
//! ```text
//! name = node0
//! listen = 127.0.0.1:31000
//! peers = node0@127.0.0.1:31000,node1@127.0.0.1:31001
//! ```
//!
//! - `serve --config F`: answers every HTTP request on the `listen` port (all interfaces)
//!   with `200` and the node's name (one thread; each connection is a task with a timeout);
//! - `probe --config F`: asks every peer and exits 0 only if each answers with its own name,
//!   which proves the peers reach each other on their allocated ports.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a node-tool command failed; `paas` exits non-zero with this text.
#[derive(Debug, thiserror::Error)]
pub enum NodeToolError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Config { path: PathBuf, why: String },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{failed} of {total} peers unreachable: {details}")]
    Unreachable {
        failed: usize,
        total: usize,
        details: String,
    },
}

/// The subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum NodeTool {
    /// Serve the node's name over HTTP on the `listen` port of the peers file, and the peers
    /// file as it is now on disk at `GET /config` (to check what configure pushed).
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check that every peer of the peers file answers with its name.
    Probe {
        #[arg(long)]
        config: PathBuf,
        /// Per-peer connect and read timeout, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        timeout_ms: u64,
    },
}

impl NodeTool {
    /// Runs the command (blocking; `serve` does not return unless it cannot listen).
    ///
    /// # Errors
    /// [`NodeToolError`]: a bad peers file, a port in use, unreachable peers.
    pub fn run(self) -> Result<(), NodeToolError> {
        match self {
            NodeTool::Serve { config } => serve(&PeersFile::read(&config)?, config),
            NodeTool::Probe { config, timeout_ms } => {
                let peers = PeersFile::read(&config)?;
                let ok = probe(&peers, Duration::from_millis(timeout_ms))?;
                println!("{ok} of {ok} peers answered");
                Ok(())
            }
        }
    }
}

/// A parsed peers file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeersFile {
    pub name: String,
    pub listen: String,
    /// `(name, host:port)`.
    pub peers: Vec<(String, String)>,
}

impl PeersFile {
    /// # Errors
    /// [`NodeToolError::Read`] / [`NodeToolError::Config`].
    pub fn read(path: &Path) -> Result<Self, NodeToolError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeToolError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|why| NodeToolError::Config {
            path: path.to_owned(),
            why,
        })
    }

    /// # Errors
    /// A message naming the missing or malformed key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut name = None;
        let mut listen = None;
        let mut peers = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("line {line:?} is not key = value"))?;
            let v = v.trim();
            match k.trim() {
                "name" => name = Some(v.to_owned()),
                "listen" => listen = Some(v.to_owned()),
                "peers" => {
                    for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let (n, addr) = p
                            .split_once('@')
                            .ok_or_else(|| format!("peer {p:?} is not name@host:port"))?;
                        peers.push((n.to_owned(), addr.to_owned()));
                    }
                }
                other => return Err(format!("unknown key {other:?}")),
            }
        }
        Ok(Self {
            name: name.ok_or("missing `name`")?,
            listen: listen.ok_or("missing `listen`")?,
            peers,
        })
    }
}

/// How long one connection may take to send its request before it is answered anyway.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections served at once; more wait in the listen backlog. Each is a task, not a
/// thread, so idle connections cost a socket and a little memory, and cannot starve the rest.
const MAX_CONNECTIONS: usize = 512;

fn serve(p: &PeersFile, config: PathBuf) -> Result<(), NodeToolError> {
    let port: u16 = p
        .listen
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .ok_or_else(|| NodeToolError::Config {
            path: PathBuf::from("listen"),
            why: format!("{:?} has no port", p.listen),
        })?;
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener =
        TcpListener::bind(addr).map_err(|source| NodeToolError::Listen { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| NodeToolError::Listen { addr, source })?;
    println!("node-tool: {} serving on {addr}", p.name);
    // One thread: every connection is a task on a current-thread runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| NodeToolError::Listen { addr, source })?;
    let name: std::sync::Arc<str> = format!("{}\n", p.name).into();
    let config = std::sync::Arc::new(config);
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|source| NodeToolError::Listen { addr, source })?;
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return Ok(());
            };
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let (name, config) = (name.clone(), config.clone());
            tokio::spawn(async move {
                answer(conn, &name, &config).await;
                drop(slot);
            });
        }
    })
}

/// Answers one connection: the peers file for `GET /config`, else the node's name.
async fn answer(mut conn: tokio::net::TcpStream, name: &str, config: &Path) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Read what came so the peer is not reset; only `GET /config` is told apart.
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(REQUEST_TIMEOUT, conn.read(&mut buf))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let body = if buf[..n].starts_with(b"GET /config ") {
        tokio::fs::read_to_string(config)
            .await
            .unwrap_or_else(|e| format!("{e}\n"))
    } else {
        name.to_owned()
    };
    let resp = format!(
        "HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, conn.write_all(resp.as_bytes())).await;
}

/// Asks every peer; returns how many answered correctly.
fn probe(p: &PeersFile, timeout: Duration) -> Result<usize, NodeToolError> {
    let failures: Vec<String> = p
        .peers
        .iter()
        .filter_map(|(name, addr)| {
            ask(name, addr, timeout)
                .err()
                .map(|e| format!("{name}@{addr}: {e}"))
        })
        .collect();
    if failures.is_empty() {
        Ok(p.peers.len())
    } else {
        Err(NodeToolError::Unreachable {
            failed: failures.len(),
            total: p.peers.len(),
            details: failures.join("; "),
        })
    }
}

fn ask(name: &str, addr: &str, timeout: Duration) -> Result<(), String> {
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let mut s = TcpStream::connect_timeout(&sock, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let (head, body) = resp.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    if !head.starts_with("HTTP/1.0 200") {
        return Err(format!("answered {:?}", head.lines().next().unwrap_or("")));
    }
    if body.trim() != name {
        return Err(format!("answered as {:?}", body.trim()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_peers_files() {
        let p = PeersFile::parse(
            "# hi\nname = node0\nlisten = 127.0.0.1:31000\npeers = node0@127.0.0.1:31000, node1@127.0.0.1:31001,\n",
        )
        .unwrap();
        assert_eq!(p.name, "node0");
        assert_eq!(p.peers.len(), 2);
        assert_eq!(p.peers[1], ("node1".into(), "127.0.0.1:31001".into()));
        assert!(
            PeersFile::parse("listen = x:1")
                .unwrap_err()
                .contains("name")
        );
        assert!(PeersFile::parse("name = a\nlisten = x:1\npeers = bad").is_err());
    }

    #[test]
    fn serve_and_probe_over_loopback() {
        // Pick a free port, then serve on it from a thread.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let me = PeersFile {
            name: "node0".into(),
            listen: format!("127.0.0.1:{port}"),
            peers: vec![("node0".into(), format!("127.0.0.1:{port}"))],
        };
        let served = me.clone();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("peers.conf");
        std::fs::write(&file, "name = node0\n").unwrap();
        let config = file.clone();
        std::thread::spawn(move || serve(&served, config));
        let t = Duration::from_millis(500);
        let mut ok = Err(NodeToolError::Config {
            path: "x".into(),
            why: "not tried".into(),
        });
        for _ in 0..50 {
            ok = probe(&me, t);
            if ok.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(ok.unwrap(), 1);
        // `GET /config` reads the file as it is now, not as it was at start.
        std::fs::write(&file, "name = node0\n# pushed again\n").unwrap();
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.write_all(b"GET /config HTTP/1.0\r\n\r\n").unwrap();
        let mut resp = String::new();
        conn.read_to_string(&mut resp).unwrap();
        assert!(
            resp.ends_with("\r\n\r\nname = node0\n# pushed again\n"),
            "{resp:?}"
        );
        // Many idle connections (a slow or hostile client) do not stop it from answering:
        // each waits out its own timeout on the one thread.
        let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
        let before = threads();
        let idle: Vec<TcpStream> = (0..300)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        // Accepted in order: once the probe is answered, all 300 are held by the server.
        assert_eq!(probe(&me, Duration::from_secs(5)).unwrap(), 1);
        let during = threads();
        assert!(
            during < before + 150,
            "no thread per connection: {before} threads before, {during} with 300 idle connections"
        );
        drop(idle);
        let wrong = PeersFile {
            peers: vec![("node9".into(), format!("127.0.0.1:{port}"))],
            ..me
        };
        let err = probe(&wrong, t).unwrap_err().to_string();
        assert!(err.contains("answered as \"node0\""), "{err}");
    }
}
