//! Cutting launch resources out of offered `Resource`s, keeping every field of the offered
//! entries (role, allocation info, reservations, disk info …) so that Mesos finds the
//! launch contained in the offer. Only quantities change.

use crate::proto::mesos::v1::{Resource, value};

/// The resources of the offers of one ACCEPT, drawn down as tasks are cut out of it.
pub struct OfferedResources {
    resources: Vec<Resource>,
}

/// The offers held less than asked; a bug in the plan (it checked the sums), never expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("offers hold less {name} than the plan needs ({missing} short)")]
pub struct Shortage {
    pub name: String,
    pub missing: String,
}

impl OfferedResources {
    pub fn new(resources: Vec<Resource>) -> Self {
        Self { resources }
    }

    /// [`scalar_into`](Self::scalar_into) into a vector of its own, for tests.
    #[cfg(test)]
    pub fn scalar(&mut self, name: &str, amount: f64) -> Result<Vec<Resource>, Shortage> {
        let mut out = Vec::new();
        self.scalar_into(&mut out, name, amount)?;
        Ok(out)
    }

    /// Takes `amount` of scalar resource `name` (in thousandths, as Mesos counts), from as
    /// many offered entries as needed, appending the pieces to `out` (a task's few pieces
    /// are collected in one vector, not moved from one to another).
    ///
    /// # Errors
    /// [`Shortage`] if the offers hold less; then neither the offers nor `out` change.
    pub fn scalar_into(
        &mut self,
        out: &mut Vec<Resource>,
        name: &str,
        amount: f64,
    ) -> Result<(), Shortage> {
        let mut left = milli(amount);
        let available: u64 = self
            .resources
            .iter()
            .filter(|r| r.name == name)
            .filter_map(|r| r.scalar.map(|s| milli(s.value)))
            .sum();
        if available < left {
            // All or nothing: a refused draw leaves the offers as they were.
            return Err(Shortage {
                name: name.to_owned(),
                missing: format!("{}", from_milli(left - available)),
            });
        }
        for r in self.resources.iter_mut().filter(|r| r.name == name) {
            if left == 0 {
                break;
            }
            let Some(s) = r.scalar.as_mut() else { continue };
            let have = milli(s.value);
            let take = have.min(left);
            if take == 0 {
                continue;
            }
            s.value = from_milli(have - take);
            left -= take;
            let mut piece = r.clone();
            piece.scalar = Some(value::Scalar {
                value: from_milli(take),
            });
            out.push(piece);
        }
        // invariant: `available` covered `left`, so every thousandth was taken above.
        debug_assert_eq!(left, 0);
        Ok(())
    }

    /// [`ports_into`](Self::ports_into) into a vector of its own, for tests.
    #[cfg(test)]
    pub fn ports(&mut self, ports: &[u16]) -> Result<Vec<Resource>, Shortage> {
        let mut out = Vec::new();
        self.ports_into(&mut out, ports)?;
        Ok(out)
    }

    /// Takes exactly these port numbers out of the offered `ports` ranges, appending to
    /// `out` one entry per offered entry the ports come from, with its metadata and the
    /// taken ports as ranges.
    ///
    /// # Errors
    /// [`Shortage`] if a port is not offered (or already taken); the ports before it are
    /// then taken and in `out`.
    pub fn ports_into(&mut self, out: &mut Vec<Resource>, ports: &[u16]) -> Result<(), Shortage> {
        // (offered entry, its piece in `out`) for the entries this call took from.
        let mut pieces: Vec<(usize, usize)> = Vec::new();
        for &port in ports {
            let p = u64::from(port);
            let idx = self
                .resources
                .iter()
                .position(|r| {
                    r.name == "ports"
                        && r.ranges
                            .as_ref()
                            .is_some_and(|rs| rs.range.iter().any(|x| x.begin <= p && p <= x.end))
                })
                .ok_or_else(|| Shortage {
                    name: "ports".into(),
                    missing: port.to_string(),
                })?;
            let r = &mut self.resources[idx];
            // invariant: `position` above matched an entry with ranges containing p.
            let ranges = r.ranges.get_or_insert_with(Default::default);
            if let Some(at) = ranges.range.iter().position(|x| x.begin <= p && p <= x.end) {
                let x = ranges.range[at];
                match (x.begin < p, p < x.end) {
                    (false, false) => {
                        ranges.range.remove(at);
                    }
                    (true, false) => ranges.range[at].end = p - 1,
                    (false, true) => ranges.range[at].begin = p + 1,
                    (true, true) => {
                        ranges.range[at].end = p - 1;
                        ranges.range.insert(
                            at + 1,
                            value::Range {
                                begin: p + 1,
                                end: x.end,
                            },
                        );
                    }
                }
            }
            let taken = value::Range { begin: p, end: p };
            match pieces.iter().find(|(from, _)| *from == idx) {
                Some(&(_, at)) => out[at]
                    .ranges
                    .get_or_insert_with(Default::default)
                    .range
                    .push(taken),
                None => {
                    // The entry's metadata without copying its remaining ranges.
                    let left = r.ranges.take();
                    let piece = Resource {
                        ranges: Some(value::Ranges { range: vec![taken] }),
                        ..r.clone()
                    };
                    r.ranges = left;
                    pieces.push((idx, out.len()));
                    out.push(piece);
                }
            }
        }
        Ok(())
    }
}

fn milli(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        (v * 1000.0).round() as u64
    } else {
        0
    }
}

fn from_milli(m: u64) -> f64 {
    m as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mesos::v1::resource::AllocationInfo;

    fn scalar(name: &str, v: f64) -> Resource {
        Resource {
            name: name.into(),
            r#type: value::Type::Scalar as i32,
            scalar: Some(value::Scalar { value: v }),
            allocation_info: Some(AllocationInfo {
                role: Some("*".into()),
            }),
            ..Default::default()
        }
    }

    fn ports(ranges: &[(u64, u64)]) -> Resource {
        Resource {
            name: "ports".into(),
            r#type: value::Type::Ranges as i32,
            ranges: Some(value::Ranges {
                range: ranges
                    .iter()
                    .map(|&(b, e)| value::Range { begin: b, end: e })
                    .collect(),
            }),
            allocation_info: Some(AllocationInfo {
                role: Some("*".into()),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn scalars_keep_metadata_and_span_entries() {
        let mut offered = OfferedResources::new(vec![
            scalar("cpus", 0.5),
            scalar("mem", 100.0),
            scalar("cpus", 1.0),
        ]);
        let got = offered.scalar("cpus", 0.8).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].scalar.unwrap().value, 0.5);
        assert!((got[1].scalar.unwrap().value - 0.3).abs() < 1e-9);
        assert_eq!(
            got[0].allocation_info,
            Some(AllocationInfo {
                role: Some("*".into())
            })
        );
        assert!(offered.scalar("cpus", 0.701).is_err());
        assert_eq!(offered.scalar("cpus", 0.7).unwrap().len(), 1);
        assert!(offered.scalar("gpus", 1.0).is_err());
        assert!(offered.scalar("gpus", 0.0).unwrap().is_empty());
    }

    #[test]
    fn ports_are_cut_out_of_ranges() {
        let mut offered = OfferedResources::new(vec![ports(&[(31000, 31002), (32000, 32000)])]);
        let got = offered.ports(&[31000, 32000, 31002]).unwrap();
        assert_eq!(got.len(), 1);
        let taken: Vec<(u64, u64)> = got[0]
            .ranges
            .as_ref()
            .unwrap()
            .range
            .iter()
            .map(|r| (r.begin, r.end))
            .collect();
        assert_eq!(taken, [(31000, 31000), (32000, 32000), (31002, 31002)]);
        assert!(offered.ports(&[31000]).is_err(), "a port is taken once");
        assert_eq!(offered.ports(&[31001]).unwrap().len(), 1);
        assert!(offered.ports(&[40000]).is_err());
    }

    #[test]
    fn a_task_collects_its_pieces_in_one_vector() {
        let mut offered = OfferedResources::new(vec![
            scalar("cpus", 1.0),
            ports(&[(31000, 31004)]),
            ports(&[(32000, 32001)]),
        ]);
        let mut out = Vec::new();
        offered.scalar_into(&mut out, "cpus", 0.25).unwrap();
        offered
            .ports_into(&mut out, &[31002, 32001, 31000])
            .unwrap();
        let names: Vec<&str> = out.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            ["cpus", "ports", "ports"],
            "one piece per offered entry"
        );
        let ranges = |r: &Resource| -> Vec<(u64, u64)> {
            r.ranges
                .as_ref()
                .unwrap()
                .range
                .iter()
                .map(|x| (x.begin, x.end))
                .collect()
        };
        assert_eq!(ranges(&out[1]), [(31002, 31002), (31000, 31000)]);
        assert_eq!(ranges(&out[2]), [(32001, 32001)]);
        // What is left: the first range cut at both ends and in the middle.
        assert_eq!(
            ranges(&offered.resources[1]),
            [(31001, 31001), (31003, 31004)]
        );
        assert_eq!(ranges(&offered.resources[2]), [(32000, 32000)]);
        // A refused draw changes nothing.
        let before = out.len();
        assert!(offered.scalar_into(&mut out, "cpus", 0.8).is_err());
        assert_eq!(out.len(), before);
        assert!((offered.resources[0].scalar.unwrap().value - 0.75).abs() < 1e-9);
    }
}
