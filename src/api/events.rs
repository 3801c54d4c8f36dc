//! Live events: `GET /events` and `GET /clusters/{id}/events` with
//! `Accept: text/event-stream`, as server-sent events.
//!
//! What it owns: turning the store's announcements (commits and log appends) into events,
//! a bounded ring of recent events for `Last-Event-ID`, and the subscribers' channels. What
//! it does not own: who may see a cluster (the handlers decide a subscriber's [`Scope`] with
//! the same rule as `GET /clusters/{id}`).
//!
//! # Wire format
//! Each event is `id: <u64>`, `event: cluster|node|step|log|purged|reset` and one line of
//! JSON `data:`. Ids grow by one per event and start at the server's boot time in
//! microseconds, so an id from before a restart is older than the ring and is answered with
//! `reset` (reload, then follow). Every [`HEARTBEAT`] each subscriber gets `: keep-alive`.
//!
//! # Delivery
//! One task ([`Hub::spawn`]) reads the announcements, diffs each cluster against what it saw
//! last ([`diff`], pure; at most [`SEEN_MAX`] clusters are remembered, so memory does not
//! grow with the clusters stored) and publishes; publishing, the ring and registering a
//! subscriber share one lock, so a subscriber resuming from the ring neither misses nor
//! repeats an event. Each subscriber has a channel of [`SUBSCRIBER_BUFFER`] chunks (one per
//! commit), filled with `try_send`: a subscriber whose channel is full is dropped (its stream
//! ends), never waited for. No task runs per subscriber: a client that went away is
//! forgotten at the next event or heartbeat.
//!
//! Delivery is at least once around a per-cluster stream's start: a change committed while
//! the snapshot is read may arrive both in the snapshot and as a live event.
//!
//! An event is kept as values ([`Payload`]) and encoded once, the first time a stream takes
//! it: a commit that no open stream sees costs its diff, not its JSON (most commits, when
//! nobody watches; the ring still holds them for a stream that resumes later).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, header};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::body::{Body, Resp};
use super::error::ApiError;
use super::routes::BASE;
use crate::domain::cluster::Cluster;
use crate::domain::{ClusterId, ClusterStatus, NodeStatus};
use crate::registry::{Commit, LogAppended, Store};

/// How often an idle stream gets a comment line, so proxies and clients keep it open.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Recent events kept for `Last-Event-ID`; an older id gets `reset`.
pub const RING: usize = 4096;

/// Clusters the hub remembers (what it saw of each, to diff the next commit against): about
/// this many of those committed last. A cluster it no longer remembers is announced whole at
/// its next commit, as one seen for the first time; its log lines, until then, go to admins
/// and its own streams only (the owner is not known).
pub const SEEN_MAX: usize = 16_384;

/// Chunks a subscriber may leave unread before it is dropped as too slow. A chunk is one
/// commit's events (or a heartbeat), however many nodes changed.
pub const SUBSCRIBER_BUFFER: usize = 64;

/// The kinds of event, as named on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Cluster,
    Node,
    Step,
    Log,
    Purged,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster",
            Kind::Node => "node",
            Kind::Step => "step",
            Kind::Log => "log",
            Kind::Purged => "purged",
        }
    }
}

/// Which events a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every cluster's (an admin).
    All,
    /// The clusters of this owner (a user).
    Owner(String),
    /// One cluster's (its ownership checked before subscribing).
    Cluster(ClusterId),
}

impl Scope {
    fn sees(&self, e: &Event) -> bool {
        match self {
            Scope::All => true,
            Scope::Owner(user) => e.owner.as_deref() == Some(user.as_str()),
            Scope::Cluster(id) => e.cluster == *id,
        }
    }
}

/// One published event.
struct Event {
    id: u64,
    cluster: ClusterId,
    /// Unknown only for a log line or purge of a cluster not seen since boot: then only
    /// admins and that cluster's stream see it.
    owner: Option<Arc<str>>,
    kind: Kind,
    payload: Payload,
    /// The event on the wire, encoded by the first stream that takes it.
    frame: OnceLock<Bytes>,
}

impl Event {
    fn frame(&self) -> &Bytes {
        self.frame
            .get_or_init(|| Bytes::from(frame(self.id, self.kind.as_str(), &self.payload.data())))
    }
}

struct Subscriber {
    scope: Scope,
    tx: tokio::sync::mpsc::Sender<Bytes>,
}

/// Where a new subscriber starts.
pub struct Start {
    /// Resume after this id (from `Last-Event-ID`, or a snapshot's mark); `None`: from now.
    pub after: Option<u64>,
    /// Sent first, whatever happens (a per-cluster stream's current record).
    pub head: Vec<u8>,
    /// Sent after `head` only when `after` is too old for the ring (a per-cluster stream's
    /// history, which the client would otherwise lose).
    pub on_reset: Vec<u8>,
}

/// The events hub: the ring, the subscribers and the id counter.
pub struct Hub {
    inner: Mutex<Inner>,
}

struct Inner {
    ring: VecDeque<Arc<Event>>,
    /// The newest id given (the boot base before any event).
    last: u64,
    /// The newest id that left the ring (the base before any did): a resume after an id
    /// older than this has missed events.
    evicted: u64,
    subscribers: Vec<Subscriber>,
    /// Set at shutdown: streams end, and new ones end at once.
    closed: bool,
}

impl Hub {
    /// A hub whose ids start after `base`.
    pub fn new(base: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                ring: VecDeque::with_capacity(RING),
                last: base,
                evicted: base,
                subscribers: Vec::new(),
                closed: false,
            }),
        }
    }

    /// A hub fed by `store`'s announcements from now on, and its task (on `tracker`, until
    /// `shutdown`, when every stream ends so that the server can drain its connections).
    pub fn spawn(
        store: &dyn Store,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Arc<Self> {
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        let hub = Arc::new(Self::new(base));
        let (mut commits, mut logs) = (store.subscribe(), store.subscribe_logs());
        let h = Arc::clone(&hub);
        tracker.spawn(async move {
            let mut seen = SeenClusters::default();
            let mut beat = tokio::time::interval(HEARTBEAT);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = beat.tick() => h.heartbeat(),
                    r = commits.recv() => match r {
                        Ok(Commit::Cluster(c)) => h.on_cluster(&mut seen, &c),
                        Ok(Commit::Purged(id)) => h.on_purged(&mut seen, id),
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "live events fell behind the store's commits; changes between are merged");
                        }
                        Err(RecvError::Closed) => break,
                    },
                    r = logs.recv() => match r {
                        Ok(log) => h.on_log(&seen, &log),
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "live events fell behind the log output; some lines are not streamed");
                        }
                        Err(RecvError::Closed) => break,
                    },
                }
            }
            h.close();
        });
        hub
    }

    /// The newest id given so far: a snapshot read after this call is at least this new.
    pub fn mark(&self) -> u64 {
        self.lock().last
    }

    /// A new stream for `scope` starting at `start`: the head, then either the ring's
    /// events after `start.after` or (too old) `reset` and `on_reset`, then live events.
    pub fn subscribe(&self, scope: Scope, start: Start) -> Body {
        let (tx, body) = Body::channel(SUBSCRIBER_BUFFER);
        let mut g = self.lock();
        if g.closed {
            return body;
        }
        let mut first = Vec::new();
        if let Some(after) = start.after {
            if after < g.evicted || after > g.last {
                first = frame_value(
                    g.last,
                    "reset",
                    &json!({"reason": "the events after this id are no longer kept (or are from before a restart): reload, then follow"}),
                );
                first.extend_from_slice(&start.head);
                first.extend_from_slice(&start.on_reset);
            } else {
                first.extend_from_slice(&start.head);
                for e in g.ring.iter().filter(|e| e.id > after && scope.sees(e)) {
                    first.extend_from_slice(e.frame());
                }
            }
        } else {
            first = start.head;
        }
        // invariant: a fresh channel has room for its first chunk.
        if !first.is_empty() && tx.try_send(Bytes::from(first)).is_err() {
            return body;
        }
        g.subscribers.push(Subscriber { scope, tx });
        body
    }

    /// How many streams are open (tests, metrics).
    pub fn subscribers(&self) -> usize {
        self.lock().subscribers.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn on_cluster(&self, seen: &mut SeenClusters, c: &Cluster) {
        let (now, events) = diff(seen.take(c.id), c);
        self.publish(c.id, Some(Arc::clone(&now.owner)), events);
        // A destroyed cluster changes no more (until it is purged): forget it.
        if c.status != ClusterStatus::Destroyed {
            seen.put(c.id, now);
        }
    }

    fn on_purged(&self, seen: &mut SeenClusters, id: ClusterId) {
        let owner = seen.take(id).map(|s| s.owner);
        self.publish(
            id,
            owner,
            vec![(Kind::Purged, Payload::Data(data(&json!({"cluster": id}))))],
        );
        // A purged cluster's own streams have nothing more to follow.
        self.lock()
            .subscribers
            .retain(|s| s.scope != Scope::Cluster(id));
    }

    fn on_log(&self, seen: &SeenClusters, log: &LogAppended) {
        let owner = seen.get(log.id).map(|s| Arc::clone(&s.owner));
        let text = String::from_utf8_lossy(&log.data);
        self.publish(
            log.id,
            owner,
            vec![(
                Kind::Log,
                Payload::Data(data(&json!({"cluster": log.id, "text": text}))),
            )],
        );
    }

    /// Gives each event of one commit the next id, keeps them in the ring and offers them,
    /// as one chunk, to every subscriber that sees them (a commit of a large cluster is
    /// one chunk, not one per node); a subscriber that cannot take it now, or went away,
    /// is dropped. The events are encoded only if some subscriber sees them.
    fn publish(&self, cluster: ClusterId, owner: Option<Arc<str>>, events: Vec<(Kind, Payload)>) {
        let mut g = self.lock();
        let mut new = Vec::with_capacity(events.len());
        for (kind, payload) in events {
            let id = g.last + 1;
            g.last = id;
            if g.ring.len() == RING
                && let Some(old) = g.ring.pop_front()
            {
                g.evicted = old.id;
            }
            let event = Arc::new(Event {
                id,
                cluster,
                owner: owner.clone(),
                kind,
                payload,
                frame: OnceLock::new(),
            });
            g.ring.push_back(Arc::clone(&event));
            new.push(event);
        }
        let Some(probe) = new.last() else {
            return;
        };
        if !g.subscribers.iter().any(|s| s.scope.sees(probe)) {
            // Kept in the ring for a stream that starts later; nobody to hand them to now.
            g.subscribers.retain(|s| !s.tx.is_closed());
            return;
        }
        let chunk = match new.as_slice() {
            [one] => one.frame().clone(),
            all => {
                let mut chunk = Vec::new();
                for e in all {
                    chunk.extend_from_slice(e.frame());
                }
                Bytes::from(chunk)
            }
        };
        g.subscribers.retain(|s| {
            if !s.scope.sees(probe) {
                return !s.tx.is_closed();
            }
            offer(s, chunk.clone())
        });
    }

    fn heartbeat(&self) {
        let beat = Bytes::from_static(b": keep-alive\n\n");
        self.lock().subscribers.retain(|s| offer(s, beat.clone()));
    }

    fn close(&self) {
        let mut g = self.lock();
        g.closed = true;
        g.subscribers.clear();
    }
}

/// Hands `chunk` to a subscriber without waiting; whether it stays subscribed.
fn offer(s: &Subscriber, chunk: Bytes) -> bool {
    match s.tx.try_send(chunk) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            tracing::debug!(scope = ?s.scope, "slow events subscriber dropped");
            false
        }
        Err(TrySendError::Closed(_)) => false,
    }
}

/// One event's `data`: compact JSON, which never contains a newline (one line on the wire).
pub type Data = Vec<u8>;

/// `v` as an event's [`Data`].
fn data(v: &impl Serialize) -> Data {
    // invariant: what events carry (ids, names, statuses, maps with string keys) always
    // serializes; an empty line would only make the client skip the event.
    serde_json::to_vec(v).unwrap_or_default()
}

/// One event on the wire.
fn frame(id: u64, event: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut out = Vec::with_capacity(data.len() + event.len() + 40);
    // invariant: writing into a Vec cannot fail.
    let _ = write!(out, "id: {id}\nevent: {event}\ndata: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    out
}

/// A frame whose data is the JSON value `v`.
fn frame_value(id: u64, event: &str, v: &Value) -> Vec<u8> {
    frame(id, event, &data(v))
}

/// The clusters the hub remembers: those committed last, at most [`SEEN_MAX`]. Two
/// generations: a cluster is put into the current one; when that holds half of
/// [`SEEN_MAX`], it becomes the previous one and the previous one is dropped. A cluster
/// committed again meanwhile moves back to the current one, so what is dropped is what
/// was not committed for a while.
#[derive(Default)]
struct SeenClusters {
    current: HashMap<ClusterId, Seen>,
    previous: HashMap<ClusterId, Seen>,
}

impl SeenClusters {
    fn take(&mut self, id: ClusterId) -> Option<Seen> {
        self.current
            .remove(&id)
            .or_else(|| self.previous.remove(&id))
    }

    fn get(&self, id: ClusterId) -> Option<&Seen> {
        self.current.get(&id).or_else(|| self.previous.get(&id))
    }

    fn put(&mut self, id: ClusterId, seen: Seen) {
        if self.current.len() >= SEEN_MAX / 2 {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(id, seen);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// What the hub remembers of a cluster, to tell what a commit changed: a few hundred bytes
/// for a small cluster (each node's name and what its event shows, in the cluster's order).
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    owner: Arc<str>,
    status: ClusterStatus,
    size: usize,
    steps: usize,
    nodes: Vec<Arc<NodeSeen>>,
}

/// A node as its events show it; shared by what the hub remembers and the node's event.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSeen {
    name: Box<str>,
    status: NodeStatus,
    host: Option<Box<str>>,
    ports: Box<[(Box<str>, u16)]>,
    message: Option<Box<str>>,
}

/// The events that `c` makes of what was seen before (`None`: not seen since boot), and
/// what is seen now. A cluster first seen announces itself, its nodes and its newest step
/// (older steps are in its history, which a per-cluster stream sends). What did not change
/// is moved from `before`, not copied: a commit of one node of a large cluster allocates
/// for that node only.
pub fn diff(before: Option<Seen>, c: &Cluster) -> (Seen, Vec<(Kind, Payload)>) {
    let mut out = Vec::new();
    let first = before.is_none();
    let (owner, old_nodes, cluster_changed, from) = match before {
        Some(b) => {
            let changed = b.status != c.status || b.size != c.nodes.len();
            let from = b.steps.min(c.history.len());
            (b.owner, b.nodes, changed, from)
        }
        None => (
            Arc::from(c.owner.as_str()),
            Vec::new(),
            true,
            c.history.len().saturating_sub(1),
        ),
    };
    if cluster_changed {
        out.push((
            Kind::Cluster,
            Payload::Cluster(Box::new(Summary::of(c, &owner))),
        ));
    }
    // Each node is looked for where the previous one was found, plus one: nodes keep their
    // order, so a search happens only around a node added or removed.
    let mut old: Vec<Option<Arc<NodeSeen>>> = old_nodes.into_iter().map(Some).collect();
    let mut next = 0;
    let mut nodes = Vec::with_capacity(c.nodes.len());
    let mut changed = Vec::new();
    for n in &c.nodes {
        let o = &n.observed;
        let named =
            |e: &Option<Arc<NodeSeen>>| e.as_ref().is_some_and(|s| *s.name == *n.name.as_str());
        let at = if old.get(next).is_some_and(named) {
            Some(next)
        } else {
            old.iter().position(named)
        };
        match at.and_then(|i| {
            next = i + 1;
            old[i].take()
        }) {
            Some(s) if s.is(o) => nodes.push(s),
            _ => {
                let s = Arc::new(NodeSeen::of(n.name.as_str(), o));
                changed.push(Arc::clone(&s));
                nodes.push(s);
            }
        }
    }
    // In name order.
    changed.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    for n in changed {
        out.push((Kind::Node, Payload::Node(c.id, n)));
    }
    if !first {
        // What is left of the old nodes is gone (in name order).
        let mut gone: Vec<Arc<NodeSeen>> = old.into_iter().flatten().collect();
        gone.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        for n in gone {
            out.push((Kind::Node, Payload::Removed(c.id, n)));
        }
    }
    for (at, h) in c.history.iter().enumerate().skip(from) {
        out.push((Kind::Step, Payload::Step(Box::new(Step::of(c.id, at, h)))));
    }
    let now = Seen {
        owner,
        status: c.status,
        size: c.nodes.len(),
        steps: c.history.len(),
        nodes,
    };
    (now, out)
}

impl NodeSeen {
    fn of(name: &str, o: &crate::domain::cluster::NodeObserved) -> Self {
        Self {
            name: name.into(),
            status: o.status,
            host: o.host.as_deref().map(Into::into),
            ports: o
                .ports
                .iter()
                .map(|(k, v)| (k.as_str().into(), *v))
                .collect(),
            message: o.message.as_deref().map(Into::into),
        }
    }

    /// Whether `o` shows what this saw.
    fn is(&self, o: &crate::domain::cluster::NodeObserved) -> bool {
        self.status == o.status
            && self.host.as_deref() == o.host.as_deref()
            && self
                .ports
                .iter()
                .map(|(k, v)| (&**k, *v))
                .eq(o.ports.iter().map(|(k, v)| (k.as_str(), *v)))
            && self.message.as_deref() == o.message.as_deref()
    }
}

/// What one event says, as values: encoded by [`Payload::data`] only when a stream takes
/// the event. Node payloads are shared with what the hub remembers of the cluster, so an
/// event of a changed node allocates nothing more.
#[derive(Debug, Clone)]
pub enum Payload {
    Cluster(Box<Summary>),
    Node(ClusterId, Arc<NodeSeen>),
    /// A node gone from its cluster.
    Removed(ClusterId, Arc<NodeSeen>),
    Step(Box<Step>),
    /// Already encoded (log lines and purges, which carry their data as it comes).
    Data(Data),
}

impl Payload {
    /// The event's `data`: compact JSON in the order the console and clients read.
    pub fn data(&self) -> Data {
        match self {
            Payload::Cluster(s) => data(s),
            Payload::Node(cluster, n) => data(&NodeEvent {
                cluster: *cluster,
                node: &n.name,
                status: n.status,
                host: n.host.as_deref(),
                ports: Ports(&n.ports),
                message: n.message.as_deref(),
            }),
            Payload::Removed(cluster, n) => {
                data(&json!({"cluster": cluster, "node": &*n.name, "status": "removed"}))
            }
            Payload::Step(s) => data(s),
            Payload::Data(d) => d.clone(),
        }
    }
}

/// What a `cluster` event shows of a cluster: the fields of a list item a console shows.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    id: ClusterId,
    #[serde(serialize_with = "shared_str")]
    owner: Arc<str>,
    product: String,
    version: String,
    status: ClusterStatus,
    size: usize,
    generation: u64,
    created_at: crate::domain::Timestamp,
    updated_at: crate::domain::Timestamp,
    url: ClusterUrl,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// A cluster's URL, written when its event is encoded.
#[derive(Debug, Clone, Copy)]
struct ClusterUrl(ClusterId);

impl Serialize for ClusterUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{BASE}/clusters/{}", self.0))
    }
}

fn shared_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

impl Summary {
    fn of(c: &Cluster, owner: &Arc<str>) -> Self {
        Self {
            id: c.id,
            owner: Arc::clone(owner),
            product: c.product.as_str().to_owned(),
            version: c.version.as_str().to_owned(),
            status: c.status,
            size: c.nodes.len(),
            generation: c.generation,
            created_at: c.created_at.clone(),
            updated_at: c.updated_at.clone(),
            url: ClusterUrl(c.id),
            reason: c.reason.clone(),
        }
    }
}

/// A `step` event; `index` is the entry's place in the cluster's history.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    cluster: ClusterId,
    index: usize,
    at: crate::domain::Timestamp,
    status: ClusterStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

impl Step {
    fn of(cluster: ClusterId, index: usize, h: &crate::domain::cluster::HistoryEntry) -> Self {
        Self {
            cluster,
            index,
            at: h.at.clone(),
            status: h.status,
            message: h.message.clone(),
        }
    }
}

/// A `node` event on the wire.
#[derive(Serialize)]
struct NodeEvent<'a> {
    cluster: ClusterId,
    node: &'a str,
    status: NodeStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(skip_serializing_if = "Ports::is_empty")]
    ports: Ports<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// A node's ports (in name order, as its record keeps them) as a JSON object.
struct Ports<'a>(&'a [(Box<str>, u16)]);

impl Ports<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for Ports<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (&**k, v)))
    }
}

/// Whether the client asked for an event stream.
pub fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// The `Last-Event-ID` header, if any.
///
/// # Errors
/// 400 `invalid_last_event_id` when it is not a decimal id.
pub fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    text.parse().map(Some).map_err(|_| {
        ApiError::bad_request(
            "invalid_last_event_id",
            format!("Last-Event-ID must be an event id (a decimal number), not {text:?}"),
        )
    })
}

/// `GET /events`: every change the caller may see, from now (or after `Last-Event-ID`).
pub(super) fn stream_all(hub: &Hub, scope: Scope, headers: &HeaderMap) -> Result<Resp, ApiError> {
    let start = Start {
        after: last_event_id(headers)?,
        head: Vec::new(),
        on_reset: Vec::new(),
    };
    Ok(sse_response(hub.subscribe(scope, start)))
}

/// A cluster's stream: its record and history as of `mark` (ids = `mark`), then what
/// follows. With `Last-Event-ID`, its record and then the ring after that id, or `reset`
/// and the history when the ring no longer has it.
pub(super) fn stream_cluster(
    hub: &Hub,
    c: &Cluster,
    mark: u64,
    last_event_id: Option<u64>,
) -> Resp {
    let summary = Payload::Cluster(Box::new(Summary::of(c, &Arc::from(c.owner.as_str()))));
    let head = frame(mark, Kind::Cluster.as_str(), &summary.data());
    let history: Vec<u8> = c
        .history
        .iter()
        .enumerate()
        .flat_map(|(i, h)| {
            let step = Payload::Step(Box::new(Step::of(c.id, i, h)));
            frame(mark, Kind::Step.as_str(), &step.data())
        })
        .collect();
    let start = match last_event_id {
        None => Start {
            after: Some(mark),
            head: [head, history].concat(),
            on_reset: Vec::new(),
        },
        Some(after) => Start {
            after: Some(after),
            head,
            on_reset: history,
        },
    };
    sse_response(hub.subscribe(Scope::Cluster(c.id), start))
}

fn sse_response(body: Body) -> Resp {
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies such as nginx would otherwise buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Timestamp;
    use crate::domain::lifecycle::ClusterEvent;

    fn cluster() -> Cluster {
        let node = json!({"docker_image": "i", "cpu": 1, "mem": 64});
        Cluster::sample(
            json!({"a": node, "b": node}),
            Timestamp("2026-12-01T12:00:00.000Z".into()),
        )
    }

    fn kinds(events: &[(Kind, Payload)]) -> Vec<Kind> {
        events.iter().map(|(k, _)| *k).collect()
    }

    /// The events' data, parsed.
    fn values(events: &[(Kind, Payload)]) -> Vec<Value> {
        events
            .iter()
            .map(|(_, d)| serde_json::from_slice(&d.data()).unwrap())
            .collect()
    }

    #[test]
    fn a_new_cluster_announces_itself_its_nodes_and_its_step() {
        let c = cluster();
        let (_, events) = diff(None, &c);
        assert_eq!(
            kinds(&events),
            [Kind::Cluster, Kind::Node, Kind::Node, Kind::Step]
        );
        assert_eq!(values(&events)[0]["status"], "registered");
        assert_eq!(values(&events)[0]["size"], 2);
        assert_eq!(values(&events)[1]["node"], "a");
        assert_eq!(values(&events)[3]["index"], 0);
    }

    #[test]
    fn only_what_changed_is_announced() {
        let mut c = cluster();
        let (seen, _) = diff(None, &c);
        let (same, none) = diff(Some(seen.clone()), &c);
        assert!(none.is_empty(), "{none:?}");
        assert_eq!(same, seen);

        c.nodes[1].observed.status = NodeStatus::Running;
        c.nodes[1].observed.host = Some("h1".into());
        let (seen, events) = diff(Some(seen.clone()), &c);
        assert_eq!(kinds(&events), [Kind::Node]);
        assert_eq!(values(&events)[0]["node"], "b");
        assert_eq!(values(&events)[0]["host"], "h1");

        c.apply(
            ClusterEvent::DestroyRequested,
            Some("bye".into()),
            Timestamp("2026-12-01T12:00:01.000Z".into()),
        )
        .unwrap();
        let (_, events) = diff(Some(seen.clone()), &c);
        assert_eq!(kinds(&events), [Kind::Cluster, Kind::Step]);
        assert_eq!(values(&events)[1]["message"], "bye");
        assert_eq!(values(&events)[1]["index"], 1);
    }

    /// The wire form is the one the console and clients read: these fields in this order.
    #[test]
    fn event_data_is_compact_json_with_its_fields_in_order() {
        let mut c = cluster();
        c.nodes[0].observed.host = Some("h".into());
        c.nodes[0].observed.ports.insert("http".into(), 31000);
        c.reason = Some("why".into());
        let (_, events) = diff(None, &c);
        let text: Vec<String> = events
            .iter()
            .map(|(_, d)| String::from_utf8(d.data()).unwrap())
            .collect();
        let summary = json!({
            "id": c.id, "owner": c.owner, "product": c.product, "version": c.version,
            "status": c.status, "size": 2, "generation": c.generation,
            "created_at": c.created_at, "updated_at": c.updated_at,
            "url": format!("{BASE}/clusters/{}", c.id), "reason": "why",
        });
        assert_eq!(text[0], summary.to_string());
        let node = json!({"cluster": c.id, "node": "a", "status": "queued", "host": "h", "ports": {"http": 31000}});
        assert_eq!(text[1], node.to_string());
        let bare = json!({"cluster": c.id, "node": "b", "status": "queued"});
        assert_eq!(text[2], bare.to_string());
        let h = &c.history[0];
        let step = json!({"cluster": c.id, "index": 0, "at": h.at, "status": h.status});
        assert_eq!(text[3], step.to_string());
        assert!(text.iter().all(|t| !t.contains('\n')));
    }

    #[test]
    fn a_removed_node_is_announced() {
        let mut c = cluster();
        let (seen, _) = diff(None, &c);
        c.nodes.pop();
        let (_, events) = diff(Some(seen.clone()), &c);
        assert_eq!(kinds(&events), [Kind::Cluster, Kind::Node]);
        assert_eq!(values(&events)[1]["status"], "removed");
    }

    #[test]
    fn nodes_are_matched_by_name_whatever_their_order() {
        let node = json!({"docker_image": "i", "cpu": 1, "mem": 64});
        let mut c = Cluster::sample(
            json!({"a": node, "b": node, "c": node, "d": node}),
            Timestamp("2026-12-01T12:00:00.000Z".into()),
        );
        let (seen, _) = diff(None, &c);
        // The same nodes in another order: nothing changed.
        c.nodes.reverse();
        let (seen, none) = diff(Some(seen), &c);
        assert!(none.is_empty(), "{none:?}");
        // `b` removed, `e` added (as `a` renamed), `d` changed.
        c.nodes.retain(|n| n.name.as_str() != "b");
        let mut e = c
            .nodes
            .iter()
            .find(|n| n.name.as_str() == "a")
            .unwrap()
            .clone();
        e.name = "e".parse().unwrap();
        c.nodes.push(e);
        let d = c.nodes.iter_mut().find(|n| n.name.as_str() == "d").unwrap();
        d.observed.ports.insert("http".into(), 31000);
        let (_, events) = diff(Some(seen), &c);
        let named: Vec<(Value, Value)> = values(&events)
            .into_iter()
            .map(|v| (v["node"].clone(), v["status"].clone()))
            .collect();
        assert_eq!(
            named,
            [
                (json!("d"), json!("queued")),
                (json!("e"), json!("queued")),
                (json!("b"), json!("removed")),
            ]
        );
        assert_eq!(values(&events)[0]["ports"], json!({"http": 31000}));
    }

    #[test]
    fn the_hub_remembers_the_clusters_committed_last_and_announces_a_forgotten_one_whole() {
        let hub = Hub::new(0);
        let mut seen = SeenClusters::default();
        let first = cluster();
        hub.on_cluster(&mut seen, &first);
        let kept = cluster();
        for i in 0..SEEN_MAX {
            // `kept` is committed again now and then; `first` never.
            if i % 1000 == 0 {
                hub.on_cluster(&mut seen, &kept);
            }
            let mut c = cluster();
            c.id = ClusterId::generate();
            hub.on_cluster(&mut seen, &c);
            assert!(seen.len() <= SEEN_MAX);
        }
        assert!(seen.get(kept.id).is_some());
        assert!(seen.get(first.id).is_none());
        // Forgotten: its next commit announces it as new (itself, its nodes, its step).
        let (_, events) = diff(seen.take(first.id), &first);
        assert_eq!(
            kinds(&events),
            [Kind::Cluster, Kind::Node, Kind::Node, Kind::Step]
        );
    }

    fn read_all(body: Body) -> String {
        let Body::Stream(mut rx) = body else {
            panic!("a stream")
        };
        let mut out = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            out.extend_from_slice(&chunk);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn resume_replays_the_ring_or_says_reset() {
        let hub = Hub::new(100);
        let c = cluster();
        let mut seen = SeenClusters::default();
        hub.on_cluster(&mut seen, &c);
        // Four events: 101..=104.
        assert_eq!(hub.mark(), 104);
        let from = |after| {
            read_all(hub.subscribe(
                Scope::All,
                Start {
                    after: Some(after),
                    head: Vec::new(),
                    on_reset: Vec::new(),
                },
            ))
        };
        let text = from(102);
        assert!(text.starts_with("id: 103\nevent: node\n"), "{text}");
        assert!(text.contains("id: 104\nevent: step\n"), "{text}");
        assert!(!text.contains("id: 102"), "{text}");
        assert!(from(99).contains("event: reset"));
        assert!(from(105).contains("event: reset"), "an id from the future");
        assert_eq!(from(104), "");
    }

    /// Events nobody watches are kept unencoded; a stream that resumes later gets the very
    /// bytes a stream watching at the time got.
    #[test]
    fn an_event_is_encoded_when_a_stream_takes_it_and_reads_the_same_live_or_replayed() {
        let mut c = cluster();
        c.nodes[0].observed.host = Some("h".into());
        c.nodes[0].observed.ports.insert("http".into(), 31000);
        c.reason = Some("why".into());
        let from_start = Start {
            after: None,
            head: Vec::new(),
            on_reset: Vec::new(),
        };

        let watched = Hub::new(0);
        let live = watched.subscribe(Scope::All, from_start);
        watched.on_cluster(&mut SeenClusters::default(), &c);
        let live = read_all(live);

        let unwatched = Hub::new(0);
        let elsewhere = unwatched.subscribe(
            Scope::Owner("somebody else".into()),
            Start {
                after: None,
                head: Vec::new(),
                on_reset: Vec::new(),
            },
        );
        unwatched.on_cluster(&mut SeenClusters::default(), &c);
        let encoded = |hub: &Hub| {
            let g = hub.lock();
            g.ring.iter().filter(|e| e.frame.get().is_some()).count()
        };
        assert_eq!(unwatched.lock().ring.len(), 4);
        assert_eq!(encoded(&unwatched), 0, "nobody sees these events yet");
        assert_eq!(read_all(elsewhere), "");
        let replayed = read_all(unwatched.subscribe(
            Scope::All,
            Start {
                after: Some(0),
                head: Vec::new(),
                on_reset: Vec::new(),
            },
        ));
        assert_eq!(encoded(&unwatched), 4);
        assert!(live.starts_with("id: 1\nevent: cluster\ndata: {"), "{live}");
        assert_eq!(replayed, live);
    }

    #[test]
    fn a_user_sees_only_their_own_clusters() {
        let hub = Hub::new(0);
        let mine = hub.subscribe(
            Scope::Owner("alice".into()),
            Start {
                after: None,
                head: Vec::new(),
                on_reset: Vec::new(),
            },
        );
        let theirs = hub.subscribe(
            Scope::Owner("bob".into()),
            Start {
                after: None,
                head: Vec::new(),
                on_reset: Vec::new(),
            },
        );
        hub.on_cluster(&mut SeenClusters::default(), &cluster());
        assert!(read_all(mine).contains("event: cluster"));
        assert_eq!(read_all(theirs), "");
    }

    #[test]
    fn log_output_goes_to_the_owner_of_a_cluster_seen_and_else_to_admins_only() {
        let hub = Hub::new(0);
        let none = || Start {
            after: None,
            head: Vec::new(),
            on_reset: Vec::new(),
        };
        let (alice, admin) = (
            hub.subscribe(Scope::Owner("alice".into()), none()),
            hub.subscribe(Scope::All, none()),
        );
        let (c, unseen) = (cluster(), ClusterId::generate());
        let mut seen = SeenClusters::default();
        hub.on_cluster(&mut seen, &c);
        for id in [c.id, unseen] {
            let data = bytes::Bytes::from_static(b"step 1 done\n");
            hub.on_log(&seen, &LogAppended { id, data });
        }
        let mine = read_all(alice);
        assert!(
            mine.contains(&format!(
                "event: log\ndata: {{\"cluster\":\"{}\",\"text\":\"step 1 done\\n\"}}",
                c.id
            )),
            "{mine}"
        );
        assert!(!mine.contains(&unseen.to_string()), "{mine}");
        assert!(read_all(admin).contains(&unseen.to_string()));
    }

    #[test]
    fn a_full_subscriber_is_dropped_and_others_are_not() {
        let hub = Hub::new(0);
        let none = || Start {
            after: None,
            head: Vec::new(),
            on_reset: Vec::new(),
        };
        let slow = hub.subscribe(Scope::All, none());
        let Body::Stream(mut fast) = hub.subscribe(Scope::All, none()) else {
            panic!()
        };
        let id = ClusterId::generate();
        for _ in 0..SUBSCRIBER_BUFFER + 1 {
            hub.publish(
                id,
                None,
                vec![(
                    Kind::Log,
                    Payload::Data(data(&json!({"cluster": id, "text": "x"}))),
                )],
            );
            assert!(fast.try_recv().is_ok());
        }
        assert_eq!(hub.subscribers(), 1, "the slow one is gone");
        drop(fast);
        hub.heartbeat();
        assert_eq!(hub.subscribers(), 0, "a client that went away is forgotten");
        let Body::Stream(mut slow) = slow else {
            panic!()
        };
        let mut n = 0;
        while slow.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, SUBSCRIBER_BUFFER);
        assert!(slow.is_closed() || slow.try_recv().is_err());
    }
}
