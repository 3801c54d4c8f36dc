//! Prometheus metrics: counters and gauges with labels, rendered in the text format.
//!
//! One [`Metrics`] value is shared (by `Arc`) by every module that counts something; there
//! is no global registry. Label sets are small and bounded (HTTP status classes, task
//! states), so a map behind one mutex is cheaper than it looks and far simpler than
//! per-series atomics.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Mutex, PoisonError};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

struct Family {
    help: &'static str,
    kind: Kind,
    /// Rendered label set (`{a="b"}` or empty) → value.
    series: BTreeMap<String, f64>,
}

/// A set of metric families.
#[derive(Default)]
pub struct Metrics {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds 1 to a counter.
    pub fn inc(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)]) {
        self.add(name, help, labels, 1.0);
    }

    /// Adds `by` to a counter.
    pub fn add(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], by: f64) {
        self.with(name, help, Kind::Counter, labels, |v| *v += by);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, help: &'static str, labels: &[(&str, &str)], value: f64) {
        self.with(name, help, Kind::Gauge, labels, |v| *v = value);
    }

    /// Removes every series of a gauge family (before re-setting all of them).
    pub fn clear(&self, name: &'static str) {
        if let Some(f) = self
            .families
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(name)
        {
            f.series.clear();
        }
    }

    fn with(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&str, &str)],
        f: impl FnOnce(&mut f64),
    ) {
        let key = render_labels(labels);
        let mut g = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let fam = g.entry(name).or_insert_with(|| Family {
            help,
            kind,
            series: BTreeMap::new(),
        });
        f(fam.series.entry(key).or_insert(0.0));
    }

    /// The current value of one series (tests and health checks).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let g = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        g.get(name)
            .and_then(|f| f.series.get(&render_labels(labels)))
            .copied()
            .unwrap_or(0.0)
    }

    /// Everything in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let g = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        for (name, fam) in g.iter() {
            let kind = if fam.kind == Kind::Counter {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", fam.help);
            for (labels, v) in &fam.series {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        }
        out
    }
}

/// `{k="v",…}` with the values escaped, built in one buffer (it runs on every request).
fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let size: usize = labels.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    let mut out = String::with_capacity(size + 2);
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        for ch in v.chars() {
            match ch {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let m = Metrics::new();
        m.inc("paas_offers_received_total", "Offers received.", &[]);
        m.inc("paas_offers_received_total", "Offers received.", &[]);
        m.inc(
            "paas_task_updates_total",
            "Updates.",
            &[("state", "TASK_RUNNING")],
        );
        m.set(
            "paas_clusters",
            "Clusters by status.",
            &[("status", "ready")],
            3.0,
        );
        let text = m.render();
        assert!(
            text.contains(
                "# TYPE paas_offers_received_total counter\npaas_offers_received_total 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("paas_task_updates_total{state=\"TASK_RUNNING\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE paas_clusters gauge\npaas_clusters{status=\"ready\"} 3\n"),
            "{text}"
        );
        assert_eq!(m.get("paas_offers_received_total", &[]), 2.0);
        m.clear("paas_clusters");
        assert!(!m.render().contains("status=\"ready\""));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.inc("x", "h", &[("k", "a\"b\\c\nd")]);
        assert!(m.render().contains(r#"x{k="a\"b\\c\nd"} 1"#));
    }
}
