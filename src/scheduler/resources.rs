//! Cutting launch resources out of offered `Resource`s, keeping every field of the offered
//! entries (role, allocation info, reservations, disk info …) so that Mesos finds the
//! launch contained in the offer. Only quantities change.
//!
//! A launch writes each piece straight as the bytes prost would encode for that `Resource`
//! ([`OfferedResources::encode_scalar`], [`OfferedResources::encode_ports`]); the tests also
//! build it as a `Resource` (`scalar_into`, `ports_into`, the reference the bytes are held
//! to). Both draw the same pieces by the same rules.

use prost::Message;
use prost::encoding::{double, uint64};

use crate::proto::mesos::v1::{Resource, value};

use super::wire::delimited;

/// Field numbers of `Resource` and of the values its quantities are, in mesos.proto.
mod tag {
    pub const RESOURCE_NAME: u32 = 1;
    pub const RESOURCE_TYPE: u32 = 2;
    pub const RESOURCE_SCALAR: u32 = 3;
    pub const RESOURCE_RANGES: u32 = 4;
    pub const SCALAR_VALUE: u32 = 1;
    pub const RANGES_RANGE: u32 = 1;
    pub const RANGE_BEGIN: u32 = 1;
    pub const RANGE_END: u32 = 2;
}

/// The resources of the offers of one ACCEPT, drawn down as tasks are cut out of it.
pub struct OfferedResources {
    resources: Vec<Resource>,
    /// Per entry of `resources`, its fields other than the quantities, encoded once: every
    /// piece cut from the entry carries them unchanged.
    encoded: Vec<EntryBytes>,
}

/// An offered entry as prost encodes it with neither `scalar` nor `ranges`. prost writes
/// fields in ascending number, so its `name` and `type` (1, 2) come before where the
/// quantities (3, 4) go and all the other fields (5 and up) after.
struct EntryBytes {
    bytes: Vec<u8>,
    /// Where the fields after the quantities start.
    split: usize,
}

impl EntryBytes {
    fn new(r: &mut Resource) -> Self {
        let scalar = r.scalar.take();
        let ranges = r.ranges.take();
        let bytes = r.encode_to_vec();
        r.scalar = scalar;
        r.ranges = ranges;
        // Both are required fields, which prost writes even when empty or zero.
        let split = prost::encoding::string::encoded_len(tag::RESOURCE_NAME, &r.name)
            + prost::encoding::int32::encoded_len(tag::RESOURCE_TYPE, &r.r#type);
        Self { bytes, split }
    }

    /// Writes, as field `field`, the entry with these quantities: what prost writes for a
    /// clone of the entry given them.
    fn encode(
        &self,
        buf: &mut Vec<u8>,
        field: u32,
        scalar: Option<f64>,
        ranges: Option<impl Iterator<Item = value::Range>>,
    ) {
        delimited(buf, field, |buf| {
            buf.extend_from_slice(&self.bytes[..self.split]);
            if let Some(value) = scalar {
                delimited(buf, tag::RESOURCE_SCALAR, |buf| {
                    double::encode(tag::SCALAR_VALUE, &value, buf)
                });
            }
            if let Some(ranges) = ranges {
                delimited(buf, tag::RESOURCE_RANGES, |buf| {
                    for r in ranges {
                        delimited(buf, tag::RANGES_RANGE, |buf| {
                            uint64::encode(tag::RANGE_BEGIN, &r.begin, buf);
                            uint64::encode(tag::RANGE_END, &r.end, buf);
                        });
                    }
                });
            }
            buf.extend_from_slice(&self.bytes[self.split..]);
        });
    }
}

/// The offers held less than asked; a bug in the plan (it checked the sums), never expected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("offers hold less {name} than the plan needs ({missing} short)")]
pub struct Shortage {
    pub name: String,
    pub missing: String,
}

impl OfferedResources {
    pub fn new(mut resources: Vec<Resource>) -> Self {
        let encoded = resources.iter_mut().map(EntryBytes::new).collect();
        Self { resources, encoded }
    }

    /// What is left of the offers, for tests.
    #[cfg(test)]
    pub fn left(&self) -> &[Resource] {
        &self.resources
    }

    /// [`scalar_into`](Self::scalar_into) into a vector of its own, for tests.
    #[cfg(test)]
    pub fn scalar(&mut self, name: &str, amount: f64) -> Result<Vec<Resource>, Shortage> {
        let mut out = Vec::new();
        self.scalar_into(&mut out, name, amount)?;
        Ok(out)
    }

    /// [`encode_scalar`](Self::encode_scalar), each piece built as a `Resource` and
    /// appended to `out`: the reference the encoded pieces are held to.
    ///
    /// # Errors
    /// [`Shortage`] if the offers hold less; then neither the offers nor `out` change.
    #[cfg(test)]
    pub fn scalar_into(
        &mut self,
        out: &mut Vec<Resource>,
        name: &str,
        amount: f64,
    ) -> Result<(), Shortage> {
        self.draw_scalar(name, amount, |entry, _, take| {
            let mut piece = entry.clone();
            piece.scalar = Some(value::Scalar { value: take });
            out.push(piece);
        })
    }

    /// Takes `amount` of scalar resource `name` (in thousandths, as Mesos counts), from as
    /// many offered entries as needed, writing each piece to `buf` as repeated field `field`
    /// of the enclosing message.
    ///
    /// # Errors
    /// [`Shortage`] if the offers hold less; then neither the offers nor `buf` change.
    pub fn encode_scalar(
        &mut self,
        buf: &mut Vec<u8>,
        field: u32,
        name: &str,
        amount: f64,
    ) -> Result<(), Shortage> {
        self.draw_scalar(name, amount, |entry, encoded, take| {
            let ranges = entry.ranges.as_ref().map(|r| r.range.iter().copied());
            encoded.encode(buf, field, Some(take), ranges);
        })
    }

    /// Takes `amount` of scalar `name` as [`encode_scalar`](Self::encode_scalar) documents,
    /// handing each piece to `piece` as the entry it comes from (already drawn down) and
    /// the amount taken.
    fn draw_scalar(
        &mut self,
        name: &str,
        amount: f64,
        mut piece: impl FnMut(&Resource, &EntryBytes, f64),
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
        for (r, encoded) in self.resources.iter_mut().zip(&self.encoded) {
            if left == 0 {
                break;
            }
            if r.name != name {
                continue;
            }
            let Some(s) = r.scalar.as_mut() else { continue };
            let have = milli(s.value);
            let take = have.min(left);
            if take == 0 {
                continue;
            }
            s.value = from_milli(have - take);
            left -= take;
            piece(r, encoded, from_milli(take));
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
    #[cfg(test)]
    pub fn ports_into(&mut self, out: &mut Vec<Resource>, ports: &[u16]) -> Result<(), Shortage> {
        // (offered entry, its piece in `out`) for the entries this call took from.
        let mut pieces: Vec<(usize, usize)> = Vec::new();
        self.draw_ports(ports, |idx, r, taken| {
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
        })
    }

    /// Takes exactly these port numbers out of the offered `ports` ranges, writing to `buf`,
    /// as repeated field `field` of the enclosing message, one piece per offered entry the
    /// ports come from, with its metadata and the taken ports as ranges.
    ///
    /// # Errors
    /// [`Shortage`] if a port is not offered (or already taken); the ports before it are
    /// then taken, and `buf` is unchanged.
    pub fn encode_ports(
        &mut self,
        buf: &mut Vec<u8>,
        field: u32,
        ports: &[u16],
    ) -> Result<(), Shortage> {
        if ports.is_empty() {
            return Ok(());
        }
        // (offered entry, taken port): a piece's length needs all of its ports.
        let mut taken: Vec<(usize, value::Range)> = Vec::with_capacity(ports.len());
        self.draw_ports(ports, |idx, _, range| taken.push((idx, range)))?;
        // One piece per entry, in the order they were first taken from, as `ports_into`.
        for (i, &(idx, _)) in taken.iter().enumerate() {
            if taken[..i].iter().any(|&(from, _)| from == idx) {
                continue;
            }
            let ranges = taken[i..]
                .iter()
                .filter(move |&&(from, _)| from == idx)
                .map(|&(_, range)| range);
            let entry = &self.resources[idx];
            let scalar = entry.scalar.map(|s| s.value);
            self.encoded[idx].encode(buf, field, scalar, Some(ranges));
        }
        Ok(())
    }

    /// Takes each of `ports` out of the first offered `ports` entry holding it, handing
    /// `taken` the entry's index, the entry (already drawn down) and the port as a range.
    fn draw_ports(
        &mut self,
        ports: &[u16],
        mut taken: impl FnMut(usize, &mut Resource, value::Range),
    ) -> Result<(), Shortage> {
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
            taken(idx, r, value::Range { begin: p, end: p });
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
