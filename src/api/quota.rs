//! Per-user quotas: how many clusters, nodes, cpus and MB of memory a user's clusters may
//! hold together, and the one check that a launch or an update stays within them.
//!
//! Quotas come from the token file (see [`super::auth`]); this module only counts and
//! compares. Every cluster that is not `destroyed` counts, whatever its state: a failed
//! cluster still holds its record and may hold tasks until destroyed.

use std::fmt;

pub use crate::domain::Usage;

/// Limits of one user; `None` = no limit on that resource.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quota {
    pub clusters: Option<u64>,
    pub nodes: Option<u64>,
    pub cpus: Option<f64>,
    /// MB, as node `mem` is.
    pub mem: Option<f64>,
}

/// A request that would take a user past one of their limits.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("quota: at most {limit} {what} for user {user} (has {has}, asks {asks})")]
pub struct QuotaExceeded {
    pub user: String,
    /// `clusters`, `nodes`, `cpus` or `mem MB`.
    pub what: &'static str,
    pub limit: Amount,
    pub has: Amount,
    pub asks: Amount,
}

/// A count or an amount, printed without a needless `.0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Amount(pub f64);

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.fract() == 0.0 && self.0.abs() < 1e15 {
            write!(f, "{}", self.0 as i64)
        } else {
            write!(f, "{}", (self.0 * 1000.0).round() / 1000.0)
        }
    }
}

impl Quota {
    /// Whether `user`, holding `has`, may take `asks` more. A request that asks nothing of a
    /// resource passes on it even if the user is already over (a lowered quota never blocks
    /// a scale-down).
    ///
    /// # Errors
    /// [`QuotaExceeded`] for the first limit passed, in the order clusters, nodes, cpus, mem.
    pub fn check(&self, user: &str, has: Usage, asks: Usage) -> Result<(), QuotaExceeded> {
        let rows = [
            (
                "clusters",
                self.clusters.map(|l| l as f64),
                has.clusters as f64,
                asks.clusters as f64,
            ),
            (
                "nodes",
                self.nodes.map(|l| l as f64),
                has.nodes as f64,
                asks.nodes as f64,
            ),
            ("cpus", self.cpus, has.cpus, asks.cpus),
            ("mem MB", self.mem, has.mem, asks.mem),
        ];
        for (what, limit, has, asks) in rows {
            // A tolerance for sums of fractional cpus (0.1 + 0.2 > 0.3 in floating point).
            if let Some(limit) = limit
                && asks > 0.0
                && has + asks > limit + 1e-9
            {
                return Err(QuotaExceeded {
                    user: user.to_owned(),
                    what,
                    limit: Amount(limit),
                    has: Amount(has),
                    asks: Amount(asks),
                });
            }
        }
        Ok(())
    }

    /// Parses one `key=value` column of the token file (`clusters`, `nodes`, `cpus`, `mem`).
    ///
    /// # Errors
    /// A message naming the bad key or value.
    pub fn set(&mut self, column: &str) -> Result<(), String> {
        let (key, value) = column
            .split_once('=')
            .ok_or_else(|| format!("expected key=value, got {column:?}"))?;
        let (key, value) = (key.trim(), value.trim());
        let count = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{key} must be a whole number, got {value:?}"))
        };
        let amount = || match value.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err(format!("{key} must be a number >= 0, got {value:?}")),
        };
        let slot_taken = |taken: bool| {
            if taken {
                Err(format!("{key} is given twice"))
            } else {
                Ok(())
            }
        };
        match key {
            "clusters" => {
                slot_taken(self.clusters.is_some())?;
                self.clusters = Some(count()?);
            }
            "nodes" => {
                slot_taken(self.nodes.is_some())?;
                self.nodes = Some(count()?);
            }
            "cpus" => {
                slot_taken(self.cpus.is_some())?;
                self.cpus = Some(amount()?);
            }
            "mem" => {
                slot_taken(self.mem.is_some())?;
                self.mem = Some(amount()?);
            }
            other => {
                return Err(format!(
                    "unknown quota {other:?} (expected clusters, nodes, cpus or mem)"
                ));
            }
        }
        Ok(())
    }

    /// Whether no limit is set.
    pub fn is_unlimited(&self) -> bool {
        *self == Quota::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(clusters: u64, nodes: u64, cpus: f64, mem: f64) -> Usage {
        Usage {
            clusters,
            nodes,
            cpus,
            mem,
        }
    }

    #[test]
    fn the_first_limit_passed_is_named() {
        let q = Quota {
            clusters: Some(2),
            nodes: Some(4),
            cpus: Some(2.0),
            mem: Some(1024.0),
        };
        assert!(
            q.check("alice", usage(1, 2, 1.0, 512.0), usage(1, 2, 1.0, 512.0))
                .is_ok(),
            "exactly at every limit"
        );
        let e = q
            .check("alice", usage(1, 3, 0.5, 10.0), usage(1, 2, 0.5, 10.0))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "quota: at most 4 nodes for user alice (has 3, asks 2)"
        );
        let e = q
            .check("alice", usage(2, 2, 0.5, 10.0), usage(1, 1, 0.5, 10.0))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "quota: at most 2 clusters for user alice (has 2, asks 1)"
        );
        let e = q
            .check("bob", usage(0, 0, 1.5, 0.0), usage(1, 1, 0.75, 10.0))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "quota: at most 2 cpus for user bob (has 1.5, asks 0.75)"
        );
        let e = q
            .check("bob", usage(0, 0, 0.0, 1000.0), usage(1, 1, 0.1, 64.0))
            .unwrap_err();
        assert_eq!(e.what, "mem MB");
    }

    #[test]
    fn asking_nothing_passes_even_when_over() {
        let q = Quota {
            nodes: Some(2),
            ..Quota::default()
        };
        assert!(
            q.check("a", usage(1, 5, 0.0, 0.0), Usage::default())
                .is_ok()
        );
        let after = usage(1, 3, 0.0, 0.0);
        assert_eq!(after.beyond(usage(1, 5, 0.0, 0.0)), Usage::default());
        assert!(
            Quota::default()
                .check("a", usage(99, 99, 99.0, 99.0), after)
                .is_ok()
        );
    }

    #[test]
    fn fractional_cpus_add_up_within_a_tolerance() {
        let q = Quota {
            cpus: Some(0.3),
            ..Quota::default()
        };
        assert!(
            q.check("a", usage(1, 1, 0.1, 0.0), usage(1, 1, 0.2, 0.0))
                .is_ok()
        );
    }

    #[test]
    fn columns_parse_and_bad_ones_are_named() {
        let mut q = Quota::default();
        for c in ["clusters=2", " nodes = 8", "cpus=4.5", "mem=8192"] {
            q.set(c).unwrap();
        }
        assert_eq!(
            q,
            Quota {
                clusters: Some(2),
                nodes: Some(8),
                cpus: Some(4.5),
                mem: Some(8192.0)
            }
        );
        for (bad, says) in [
            ("clusters=2", "given twice"),
            ("gpus=1", "unknown quota \"gpus\""),
            ("nodes", "key=value"),
        ] {
            assert!(q.set(bad).unwrap_err().contains(says), "{bad}");
        }
        let mut q = Quota::default();
        for (bad, says) in [
            ("nodes=-1", "whole number"),
            ("nodes=1.5", "whole number"),
            ("cpus=NaN", ">= 0"),
            ("mem=-5", ">= 0"),
        ] {
            assert!(q.set(bad).unwrap_err().contains(says), "{bad}");
        }
    }
}
