//! `POST /products/{n}/{v}?dry_run=true`: a launch explained before it happens. The options
//! are rendered and validated as for a launch (the same errors, quotas included); then the
//! core says where each node would go on the agents it last saw ([`Backend::plan`]); and
//! when the cluster would not fit, the smallest changes that would: fewer nodes, or less
//! memory or cpu per node. Nothing is stored and no offer is held.
//!
//! Which options change what is found out, not assumed: an integer or number option the
//! caller may set is tried at half its value, and the rendered cluster tells whether it
//! drives the number of nodes, their memory or their cpus. The largest value that fits is
//! then searched for ([`largest_fitting`]), each try a render and an evaluation.
//!
//! [`Backend::plan`]: super::Backend::plan

use http::StatusCode;
use serde::Serialize;
use serde_json::{Map, Value};

use super::auth::Principal;
use super::body::{Resp, json_response};
use super::clusters::{launch_error, quota_exceeded};
use super::error::ApiError;
use super::quota::Usage;
use super::{AppState, blocking};
use crate::domain::launch_request::{Fresh, LaunchError, LaunchRequest};
use crate::domain::placement::{Demand, Evaluation, Fit, Placement, largest_fitting};
use crate::domain::{Cluster, ClusterId, Timestamp};

/// Scale of the search over a number option: thousandths, Mesos' own precision.
const MILLI: f64 = 1000.0;

/// The answer: the cluster in brief, its placement, and what would make it fit.
#[derive(Debug, Serialize)]
struct Answer<'a> {
    dry_run: bool,
    /// `null` when placement was not evaluated (no scheduler, no offers seen).
    fits: Option<bool>,
    /// One paragraph for people, numbers with units.
    summary: String,
    cluster: Totals,
    #[serde(flatten)]
    placement: &'a Placement,
    /// Each alone would make the cluster fit; empty when it fits or nothing smaller does.
    changes: Vec<Change>,
}

/// What the rendered cluster asks for in all, without executors.
#[derive(Debug, Serialize)]
struct Totals {
    nodes: usize,
    cpus: f64,
    mem_mb: f64,
}

impl Totals {
    fn of(c: &Cluster) -> Self {
        Self {
            nodes: c.nodes.len(),
            cpus: round3(c.nodes.iter().map(|n| n.cpu).sum()),
            mem_mb: round3(c.nodes.iter().map(|n| n.mem).sum()),
        }
    }
}

/// What an option drives, as found by rendering it smaller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Effect {
    Nodes,
    Mem,
    Cpus,
}

/// One option set lower, with which the cluster would fit.
#[derive(Debug, Serialize)]
struct Change {
    option: String,
    from: Value,
    to: Value,
    effect: Effect,
    /// e.g. `size 3 instead of 5 (3 nodes)`.
    text: String,
}

/// Answers a dry run of `request` for `who`: 200 with the evaluation, or the error the same
/// launch would get.
pub(super) async fn answer(
    state: &AppState,
    who: &Principal,
    request: &LaunchRequest<'_>,
) -> Result<Resp, ApiError> {
    let probe = Probe { state, request };
    let cluster = probe.cluster(request.user_options).map_err(launch_error)?;
    check_quota(state, who, &cluster).await?;
    let placement = state.backend.plan(&Demand::of(&cluster));
    let changes = match &placement {
        Placement::Evaluated(e) if !e.fits() => cpu_bound(|| probe.changes(&cluster)),
        _ => Vec::new(),
    };
    let answer = Answer {
        dry_run: true,
        fits: match &placement {
            Placement::Evaluated(e) => Some(e.fits()),
            _ => None,
        },
        summary: summary(&cluster, &placement, &changes),
        cluster: Totals::of(&cluster),
        placement: &placement,
        changes,
    };
    Ok(json_response(StatusCode::OK, &answer))
}

/// Runs `f`, which may render a template dozens of times, telling a multi-threaded runtime
/// to move its other tasks off this worker meanwhile (the renders borrow the request, so
/// they cannot go to the blocking pool). On a current-thread runtime it just runs.
fn cpu_bound<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The launch's quota check, read-only: what `who` holds now plus this cluster.
async fn check_quota(state: &AppState, who: &Principal, c: &Cluster) -> Result<(), ApiError> {
    let Some(quota) = state.auth.quota(&who.user).copied() else {
        return Ok(());
    };
    let user = who.user.clone();
    let has = blocking(state, move |s| Ok(s.usage(&user))).await?;
    quota
        .check(&who.user, has, Usage::of(c))
        .map_err(|e| quota_exceeded(e.to_string()))
}

/// Renders a launch with other option values and evaluates it.
struct Probe<'a, 'r> {
    state: &'a AppState,
    request: &'a LaunchRequest<'r>,
}

impl Probe<'_, '_> {
    /// The cluster the launch would make with `options` (never stored: no secrets made).
    fn cluster(&self, options: &Map<String, Value>) -> Result<Cluster, LaunchError> {
        let request = LaunchRequest {
            user_options: options,
            ..*self.request
        };
        request.cluster(
            &self.state.renderer,
            Fresh {
                id: ClusterId::generate(),
                secret: String::new(),
                make_secret: String::new,
                now: Timestamp::now(),
            },
        )
    }

    /// The cluster with `key` set to `value`, if it renders.
    fn with(&self, key: &str, value: Value) -> Option<Cluster> {
        let mut options = self.request.user_options.clone();
        options.insert(key.to_owned(), value);
        self.cluster(&options).ok()
    }

    fn fits(&self, c: &Cluster) -> bool {
        matches!(self.state.backend.plan(&Demand::of(c)), Placement::Evaluated(e) if e.fits())
    }

    /// For each option that drives the nodes, their memory or their cpus, the largest
    /// value below the asked one with which the cluster fits.
    fn changes(&self, base: &Cluster) -> Vec<Change> {
        let mut out: Vec<Change> = base
            .options
            .iter()
            .filter_map(|(key, value)| self.change(base, key, value))
            .collect();
        out.sort_by_key(|c| c.effect as u8);
        out
    }

    fn change(&self, base: &Cluster, key: &str, value: &Value) -> Option<Change> {
        let number = Number::of(self.request.options.example(key)?, value)?;
        let effect = effect(base, &self.with(key, number.half()?)?)?;
        let (lo, hi) = number.search_range()?;
        let found = largest_fitting(lo, hi, |v| {
            self.with(key, number.at(v)).is_some_and(|c| self.fits(&c))
        })?;
        let to = number.at(found);
        let fitted = self.with(key, to.clone())?;
        Some(Change {
            text: change_text(key, value, &to, effect, &fitted),
            option: key.to_owned(),
            from: value.clone(),
            to,
            effect,
        })
    }
}

/// An option's numeric value, searched in whole units (integers) or thousandths (numbers).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Number {
    Integer(i64),
    Real(f64),
}

impl Number {
    /// `v`, searched as the option's type (fixed by its `example` in the options document):
    /// `cpu: 2` is searched in thousandths when the document's `cpu` is `0.1`.
    fn of(example: &Value, v: &Value) -> Option<Self> {
        match (example, v) {
            (Value::Number(e), Value::Number(n)) if e.is_i64() || e.is_u64() => {
                n.as_i64().map(Self::Integer)
            }
            (Value::Number(_), Value::Number(n)) => {
                n.as_f64().filter(|f| f.is_finite()).map(Self::Real)
            }
            _ => None,
        }
    }

    /// Half the value (rounded down), when smaller and still positive: the probe.
    fn half(self) -> Option<Value> {
        match self {
            Self::Integer(i) if i >= 2 => Some(Value::from(i / 2)),
            Self::Real(f) if f >= 2.0 / MILLI => {
                Some(Value::from(((f / 2.0) * MILLI).floor() / MILLI))
            }
            _ => None,
        }
    }

    /// The search steps below the value: `1..=v-1` units or thousandths.
    fn search_range(self) -> Option<(u64, u64)> {
        let top = match self {
            Self::Integer(i) => u64::try_from(i).ok()?,
            Self::Real(f) => (f * MILLI).ceil() as u64,
        };
        (top >= 2).then(|| (1, top - 1))
    }

    /// The option value at search step `v`.
    fn at(self, v: u64) -> Value {
        match self {
            Self::Integer(_) => Value::from(v),
            Self::Real(_) => Value::from(v as f64 / MILLI),
        }
    }
}

/// What setting an option lower did to the rendered cluster: fewer nodes, or as many
/// nodes with less memory or fewer cpus. `None` when it did neither.
fn effect(base: &Cluster, lower: &Cluster) -> Option<Effect> {
    let (b, l) = (Totals::of(base), Totals::of(lower));
    if l.nodes < b.nodes {
        Some(Effect::Nodes)
    } else if l.nodes != b.nodes {
        None
    } else if l.mem_mb < b.mem_mb {
        Some(Effect::Mem)
    } else if l.cpus < b.cpus {
        Some(Effect::Cpus)
    } else {
        None
    }
}

/// `size 3 instead of 5 (3 nodes)`, `mem 960 instead of 4096 (960 MB mem per node at
/// most)`, `cpu 0.45 instead of 2 (0.45 cpus per node at most)`.
fn change_text(key: &str, from: &Value, to: &Value, effect: Effect, c: &Cluster) -> String {
    let max =
        |f: fn(&crate::domain::Node) -> f64| round3(c.nodes.iter().map(f).fold(0.0, f64::max));
    let what = match effect {
        Effect::Nodes => format!(
            "{} node{}",
            c.nodes.len(),
            if c.nodes.len() == 1 { "" } else { "s" }
        ),
        Effect::Mem => format!("{} MB mem per node at most", max(|n| n.mem)),
        Effect::Cpus => format!("{} cpus per node at most", max(|n| n.cpu)),
    };
    format!("{key} {to} instead of {from} ({what})")
}

/// One paragraph for people.
fn summary(c: &Cluster, placement: &Placement, changes: &[Change]) -> String {
    let t = Totals::of(c);
    let asks = format!(
        "{} node{} asking {} cpus and {} MB mem in all",
        t.nodes,
        if t.nodes == 1 { "" } else { "s" },
        t.cpus,
        t.mem_mb
    );
    match placement {
        Placement::NoScheduler => format!(
            "valid: {asks}. Placement not evaluated: no scheduler places clusters on this \
             server (--master none)."
        ),
        Placement::NoOffers => format!(
            "valid: {asks}. Placement not evaluated: the scheduler has seen no offers yet \
             (not subscribed, or no agent registered)."
        ),
        Placement::Evaluated(e) if e.fits() => format!(
            "fits: {asks}, on {} of the {} agents seen (offers as of {}).",
            e.agents_used(),
            e.agents,
            e.seen_at
        ),
        Placement::Evaluated(e) => does_not_fit(&asks, e, changes),
    }
}

fn does_not_fit(asks: &str, e: &Evaluation, changes: &[Change]) -> String {
    let short = e.short();
    let first_why = e.nodes.iter().find_map(|n| match &n.fit {
        Fit::None { why, .. } => Some(format!("{}: {why}", n.node)),
        Fit::Agent { .. } => None,
    });
    let mut out = format!(
        "does not fit: {asks}; {short} of {} node{} would find no room on the {} agent{} seen \
         (offers as of {}), and a cluster is placed whole or not at all.",
        e.nodes.len(),
        if e.nodes.len() == 1 { "" } else { "s" },
        e.agents,
        if e.agents == 1 { "" } else { "s" },
        e.seen_at
    );
    if let Some(why) = first_why {
        out.push_str(&format!(" First: {why}."));
    }
    if changes.is_empty() {
        out.push_str(" No smaller value of its options would fit either.");
    } else {
        let texts: Vec<&str> = changes.iter().map(|c| c.text.as_str()).collect();
        out.push_str(&format!(" It would fit with {}.", texts.join(", or ")));
    }
    out
}

/// Rounds to thousandths, so sums of node amounts print as people wrote them.
fn round3(v: f64) -> f64 {
    (v * MILLI).round() / MILLI
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster of `n` nodes of `cpu` and `mem`.
    fn cluster(n: usize, cpu: f64, mem: f64) -> Cluster {
        let nodes: Map<String, Value> = (0..n)
            .map(|i| {
                (
                    format!("n{i}"),
                    serde_json::json!({"docker_image": "i", "cpu": cpu, "mem": mem}),
                )
            })
            .collect();
        let spec = crate::domain::cluster::ClusterSpec::parse(
            &serde_json::json!({ "nodes": nodes }).to_string(),
        )
        .unwrap();
        Cluster::new(
            ClusterId::generate(),
            "u".into(),
            crate::domain::Name::parse("p").unwrap(),
            crate::domain::Name::parse("1").unwrap(),
            Map::new(),
            spec,
            String::new(),
            Timestamp::now(),
        )
    }

    #[test]
    fn an_option_set_lower_shows_what_it_drives() {
        let base = cluster(3, 0.1, 64.0);
        assert_eq!(effect(&base, &cluster(2, 0.1, 64.0)), Some(Effect::Nodes));
        assert_eq!(effect(&base, &cluster(3, 0.1, 32.0)), Some(Effect::Mem));
        assert_eq!(effect(&base, &cluster(3, 0.05, 64.0)), Some(Effect::Cpus));
        // Unchanged, or more nodes: it drives none of them.
        assert_eq!(effect(&base, &cluster(3, 0.1, 64.0)), None);
        assert_eq!(effect(&base, &cluster(4, 0.01, 1.0)), None);
    }

    #[test]
    fn a_change_reads_with_units() {
        let c = cluster(2, 0.45, 480.0);
        let t = |e| change_text("x", &Value::from(9), &Value::from(2), e, &c);
        assert_eq!(t(Effect::Nodes), "x 2 instead of 9 (2 nodes)");
        assert_eq!(
            t(Effect::Mem),
            "x 2 instead of 9 (480 MB mem per node at most)"
        );
        assert_eq!(
            t(Effect::Cpus),
            "x 2 instead of 9 (0.45 cpus per node at most)"
        );
    }

    #[test]
    fn numbers_probe_at_half_and_search_below_the_value() {
        let int = |v: Value| Number::of(&Value::from(2), &v);
        let real = |v: Value| Number::of(&Value::from(0.1), &v);
        let n = int(Value::from(5)).unwrap();
        assert_eq!(n.half(), Some(Value::from(2)));
        assert_eq!(n.search_range(), Some((1, 4)));
        assert_eq!(n.at(3), Value::from(3));
        let r = real(Value::from(0.5)).unwrap();
        assert_eq!(r.half(), Some(Value::from(0.25)));
        assert_eq!(r.search_range(), Some((1, 499)));
        assert_eq!(r.at(450), Value::from(0.45));
        // A whole value of a number option is searched in thousandths too.
        assert_eq!(
            real(Value::from(2)).unwrap().search_range(),
            Some((1, 1999))
        );
        // Nothing below: no probe, no search.
        assert_eq!(int(Value::from(1)).unwrap().half(), None);
        assert_eq!(int(Value::from(1)).unwrap().search_range(), None);
        assert_eq!(int(Value::from(-3)).unwrap().search_range(), None);
        assert_eq!(real(Value::from(0.001)).unwrap().half(), None);
        // Not numbers: not searched.
        assert_eq!(int(Value::from("5")), None);
        assert_eq!(Number::of(&Value::from("x"), &Value::from(5)), None);
    }
}
