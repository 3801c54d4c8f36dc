//! Resource arithmetic for the simulated agents: how much an agent has, how much is offered
//! or used, whether a launch fits. Quantities only: mesos-local has no reservations, no
//! disks, no revocable resources, so the metadata of a `Resource` (role, allocation info) is
//! not compared — only names and amounts.
//!
//! Scalars are kept in thousandths, as Mesos keeps 3 decimal digits: `0.1 + 0.2` must fit
//! into `0.3` exactly, as it does on a real master.

use std::collections::BTreeMap;
use std::fmt;

use crate::proto::mesos::v1 as mesos;

/// Why a `--local-resources` string is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "resource {item:?}: {why} (expected e.g. 'cpus:4;mem:8192;disk:20480;ports:[31000-32000]')"
)]
pub struct ResourceSpecError {
    item: String,
    why: &'static str,
}

/// A bag of quantities: scalars by name and range sets by name (`ports`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Quantities {
    /// Thousandths of the scalar, by resource name; never zero or negative.
    scalars: BTreeMap<String, i64>,
    /// Sorted, merged, inclusive ranges by resource name; never empty.
    ranges: BTreeMap<String, Vec<(u64, u64)>>,
}

fn milli(v: f64) -> i64 {
    (v * 1000.0).round() as i64
}

impl Quantities {
    /// Parses the agent `--resources` syntax: `name:value` items separated by `;`, where a
    /// value is a number or a list of ranges `[a-b,c-d]`.
    ///
    /// # Errors
    /// [`ResourceSpecError`] naming the item that does not parse.
    pub fn parse(spec: &str) -> Result<Self, ResourceSpecError> {
        let mut r = Quantities::default();
        for item in spec.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let err = |why| ResourceSpecError {
                item: item.to_owned(),
                why,
            };
            let (name, value) = item.split_once(':').ok_or_else(|| err("no ':'"))?;
            let name = name.trim();
            let value = value.trim();
            if name.is_empty() {
                return Err(err("empty name"));
            }
            if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
                for part in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let (a, b) = part
                        .split_once('-')
                        .ok_or_else(|| err("range without '-'"))?;
                    let a: u64 = a.trim().parse().map_err(|_| err("bad range bound"))?;
                    let b: u64 = b.trim().parse().map_err(|_| err("bad range bound"))?;
                    if a > b {
                        return Err(err("range begins after it ends"));
                    }
                    r.add_range(name, a, b);
                }
            } else {
                let v: f64 = value.parse().map_err(|_| err("not a number"))?;
                if !v.is_finite() || v < 0.0 {
                    return Err(err("not a non-negative number"));
                }
                r.add_scalar_milli(name, milli(v));
            }
        }
        Ok(r)
    }

    /// Sums protobuf resources by name (metadata ignored; SET and TEXT values ignored).
    pub fn from_proto(list: &[mesos::Resource]) -> Self {
        let mut r = Quantities::default();
        for res in list {
            if let Some(s) = &res.scalar {
                r.add_scalar_milli(&res.name, milli(s.value));
            }
            if let Some(rs) = &res.ranges {
                for x in &rs.range {
                    if x.begin <= x.end {
                        r.add_range(&res.name, x.begin, x.end);
                    }
                }
            }
        }
        r
    }

    /// Protobuf resources allocated to `role`, as a master puts them in an offer: unreserved
    /// (`role: "*"` in the pre-refinement format) with `allocation_info`.
    pub fn to_proto(&self, role: &str, refinement: bool) -> Vec<mesos::Resource> {
        let base = |name: &str, ty: mesos::value::Type| mesos::Resource {
            name: name.to_owned(),
            r#type: ty as i32,
            role: (!refinement).then(|| "*".to_owned()),
            allocation_info: Some(mesos::resource::AllocationInfo {
                role: Some(role.to_owned()),
            }),
            ..Default::default()
        };
        let mut out = Vec::new();
        for (name, v) in &self.scalars {
            let mut r = base(name, mesos::value::Type::Scalar);
            r.scalar = Some(mesos::value::Scalar {
                value: *v as f64 / 1000.0,
            });
            out.push(r);
        }
        for (name, rs) in &self.ranges {
            let mut r = base(name, mesos::value::Type::Ranges);
            r.ranges = Some(mesos::value::Ranges {
                range: rs
                    .iter()
                    .map(|&(begin, end)| mesos::value::Range { begin, end })
                    .collect(),
            });
            out.push(r);
        }
        out
    }

    /// The scalar `name` (0 when absent).
    pub fn scalar(&self, name: &str) -> f64 {
        self.scalars.get(name).copied().unwrap_or(0) as f64 / 1000.0
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.scalars.is_empty() && self.ranges.is_empty()
    }

    /// Whether a master would offer this: at least `MIN_CPUS` (0.01) cpus or `MIN_MEM`
    /// (32 MB) memory, as the hierarchical allocator requires.
    pub fn allocatable(&self) -> bool {
        self.scalars.get("cpus").copied().unwrap_or(0) >= 10
            || self.scalars.get("mem").copied().unwrap_or(0) >= 32_000
    }

    /// Whether every quantity of `other` fits in `self`.
    pub fn contains(&self, other: &Quantities) -> bool {
        other
            .scalars
            .iter()
            .all(|(n, v)| self.scalars.get(n).copied().unwrap_or(0) >= *v)
            && other.ranges.iter().all(|(n, rs)| {
                let mine = self.ranges.get(n).map(Vec::as_slice).unwrap_or(&[]);
                rs.iter()
                    .all(|&(a, b)| mine.iter().any(|&(x, y)| x <= a && b <= y))
            })
    }

    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Quantities) {
        for (n, v) in &other.scalars {
            self.add_scalar_milli(n, *v);
        }
        for (n, rs) in &other.ranges {
            for &(a, b) in rs {
                self.add_range(n, a, b);
            }
        }
    }

    /// Removes `other` from `self`, saturating at nothing (a bookkeeping slip must not
    /// panic the master; it shows up as a smaller offer).
    pub fn subtract(&mut self, other: &Quantities) {
        for (n, v) in &other.scalars {
            if let Some(mine) = self.scalars.get_mut(n) {
                *mine -= v;
                if *mine <= 0 {
                    self.scalars.remove(n);
                }
            }
        }
        for (n, rs) in &other.ranges {
            if let Some(mine) = self.ranges.get_mut(n) {
                for &(a, b) in rs {
                    *mine = remove_range(mine, a, b);
                }
                if mine.is_empty() {
                    self.ranges.remove(n);
                }
            }
        }
    }

    /// `self - other`, see [`Quantities::subtract`].
    pub fn minus(&self, other: &Quantities) -> Quantities {
        let mut r = self.clone();
        r.subtract(other);
        r
    }

    fn add_scalar_milli(&mut self, name: &str, v: i64) {
        if v <= 0 {
            return;
        }
        *self.scalars.entry(name.to_owned()).or_insert(0) += v;
    }

    fn add_range(&mut self, name: &str, a: u64, b: u64) {
        let rs = self.ranges.entry(name.to_owned()).or_default();
        rs.push((a, b));
        rs.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(rs.len());
        for &(x, y) in rs.iter() {
            match merged.last_mut() {
                Some(last) if x <= last.1.saturating_add(1) => last.1 = last.1.max(y),
                _ => merged.push((x, y)),
            }
        }
        *rs = merged;
    }
}

fn remove_range(rs: &[(u64, u64)], a: u64, b: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(rs.len() + 1);
    for &(x, y) in rs {
        if y < a || x > b {
            out.push((x, y));
            continue;
        }
        if x < a {
            out.push((x, a - 1));
        }
        if y > b {
            out.push((b + 1, y));
        }
    }
    out
}

impl fmt::Display for Quantities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let s = if first { "" } else { "; " };
            first = false;
            f.write_str(s)
        };
        for (n, v) in &self.scalars {
            sep(f)?;
            write!(f, "{n}:{}", *v as f64 / 1000.0)?;
        }
        for (n, rs) in &self.ranges {
            sep(f)?;
            let parts: Vec<String> = rs.iter().map(|(a, b)| format!("{a}-{b}")).collect();
            write!(f, "{n}:[{}]", parts.join(","))?;
        }
        if first {
            f.write_str("{}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_agent_syntax() {
        let r = Quantities::parse("cpus:4;mem:8192; disk:20480;ports:[31000-32000]").unwrap();
        assert_eq!(r.scalar("cpus"), 4.0);
        assert_eq!(
            r.to_string(),
            "cpus:4; disk:20480; mem:8192; ports:[31000-32000]"
        );
        assert!(Quantities::parse("cpus").is_err());
        assert!(Quantities::parse("ports:[5-1]").is_err());
        assert!(Quantities::parse("cpus:-1").is_err());
    }

    #[test]
    fn arithmetic_keeps_three_decimals_and_splits_ranges() {
        let total = Quantities::parse("cpus:0.3;ports:[31000-31010]").unwrap();
        let a = Quantities::parse("cpus:0.1;ports:[31005-31005]").unwrap();
        let b = Quantities::parse("cpus:0.2;ports:[31000-31000,31010-31010]").unwrap();
        let mut both = a.clone();
        both.add(&b);
        assert!(total.contains(&both));
        let left = total.minus(&both);
        assert_eq!(left.to_string(), "ports:[31001-31004,31006-31009]");
        assert!(!left.contains(&a));
        let mut back = left.clone();
        back.add(&both);
        assert_eq!(back, total);
    }

    #[test]
    fn proto_round_trip_ignores_metadata() {
        let r = Quantities::parse("cpus:1.5;mem:64;ports:[1-2,4-4]").unwrap();
        let p = r.to_proto("web", false);
        assert!(p.iter().all(|x| x.role.as_deref() == Some("*")));
        assert_eq!(Quantities::from_proto(&p), r);
        assert!(!Quantities::parse("cpus:0.001").unwrap().is_empty());
        assert!(!Quantities::parse("cpus:0.001").unwrap().allocatable());
        assert!(Quantities::parse("mem:32").unwrap().allocatable());
    }
}
