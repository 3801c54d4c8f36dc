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

    /// Takes `amount` of scalar resource `name` (in thousandths, as Mesos counts), from as
    /// many offered entries as needed.
    ///
    /// # Errors
    /// [`Shortage`] if the offers hold less.
    pub fn scalar(&mut self, name: &str, amount: f64) -> Result<Vec<Resource>, Shortage> {
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
        let mut out = Vec::new();
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
        if left > 0 {
            return Err(Shortage {
                name: name.to_owned(),
                missing: format!("{}", from_milli(left)),
            });
        }
        Ok(out)
    }

    /// Takes exactly these port numbers out of the offered `ports` ranges.
    ///
    /// # Errors
    /// [`Shortage`] if a port is not offered (or already taken).
    pub fn ports(&mut self, ports: &[u16]) -> Result<Vec<Resource>, Shortage> {
        let mut out: Vec<Resource> = Vec::new();
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
            ranges.range = ranges
                .range
                .iter()
                .flat_map(|x| {
                    if x.begin <= p && p <= x.end {
                        let mut parts = Vec::new();
                        if x.begin < p {
                            parts.push(value::Range {
                                begin: x.begin,
                                end: p - 1,
                            });
                        }
                        if p < x.end {
                            parts.push(value::Range {
                                begin: p + 1,
                                end: x.end,
                            });
                        }
                        parts
                    } else {
                        vec![*x]
                    }
                })
                .collect();
            // One output entry per offered entry: same metadata, the taken ports as ranges.
            let mut template = r.clone();
            template.ranges = None;
            match out.iter_mut().find(|o| {
                let mut t = (*o).clone();
                t.ranges = None;
                t == template
            }) {
                Some(o) => o
                    .ranges
                    .get_or_insert_with(Default::default)
                    .range
                    .push(value::Range { begin: p, end: p }),
                None => {
                    template.ranges = Some(value::Ranges {
                        range: vec![value::Range { begin: p, end: p }],
                    });
                    out.push(template);
                }
            }
        }
        Ok(out)
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
}
