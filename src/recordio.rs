//! RecordIO framing of the Mesos v1 event streams (`docs/recordio.md`, `stout/recordio.hpp`).
//!
//! A stream is `*(record-size LF record-data)`: an ASCII decimal length, a newline, then exactly
//! that many payload bytes, with **no separator** before the next length. HTTP chunk boundaries
//! are unrelated to records (proxies may re-chunk), so [`Decoder`] works on a growing buffer:
//! feed it whatever bytes arrive with [`Decoder::push`], then drain complete records with
//! [`Decoder::next_record`].
//!
//! This module owns only the framing. It does not know what a payload is (protobuf or JSON
//! `Event`), nor where the bytes come from; `transport` feeds it from the HTTP body.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The default cap on one record's payload. A Mesos event is at most a few MiB (a large OFFERS
/// batch); anything bigger means a corrupt stream, and buffering it would only exhaust memory.
pub const DEFAULT_MAX_RECORD_SIZE: usize = 64 * 1024 * 1024;

/// Longest accepted length header, in digits. `u64::MAX` has 20 digits; a longer run of bytes
/// without a newline cannot be a valid header, and bounding it keeps a garbage stream from
/// growing the buffer while we wait for a newline that never comes.
const MAX_HEADER_DIGITS: usize = 20;

/// Why a RecordIO stream cannot be decoded any further.
///
/// Every variant is fatal for the stream: like Mesos' own decoder, [`Decoder`] stays failed
/// afterwards, and the caller must drop the connection and resubscribe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIoError {
    /// The length header holds something other than ASCII digits, is empty, or is too long.
    #[error("invalid RecordIO length header {header:?}")]
    InvalidHeader {
        /// The offending header bytes (lossy UTF-8, at most a few dozen characters).
        header: String,
    },
    /// The announced payload is larger than the configured maximum.
    #[error("RecordIO record of {len} bytes exceeds the {max} byte limit")]
    TooLarge {
        /// Announced length (saturated at `u64::MAX` if the digits overflow).
        len: u64,
        /// The decoder's limit.
        max: usize,
    },
    /// The stream ended in the middle of a record.
    #[error("RecordIO stream ended inside a record ({buffered} bytes pending)")]
    Truncated {
        /// Bytes buffered when the stream ended.
        buffered: usize,
    },
    /// An earlier call already failed; the decoder does not resynchronise.
    #[error("RecordIO stream already failed: {0}")]
    Failed(Box<RecordIoError>),
}

/// Incremental RecordIO decoder over a growing buffer.
///
/// Not thread-safe by design: one decoder belongs to one stream reader.
#[derive(Debug)]
pub struct Decoder {
    /// Bytes received but not yet returned as records. Always starts at a record header.
    buf: BytesMut,
    /// Payload size guard, see [`DEFAULT_MAX_RECORD_SIZE`].
    max_record: usize,
    /// Set on the first error; a RecordIO stream cannot be resynchronised, because a payload
    /// may contain anything, including digits followed by a newline.
    failed: Option<RecordIoError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with the [`DEFAULT_MAX_RECORD_SIZE`] guard.
    pub fn new() -> Self {
        Self::with_max_record_size(DEFAULT_MAX_RECORD_SIZE)
    }

    /// A decoder refusing records whose payload is larger than `max` bytes.
    pub fn with_max_record_size(max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_record: max,
            failed: None,
        }
    }

    /// Appends received bytes (one HTTP chunk, or any part of one).
    pub fn push(&mut self, bytes: &[u8]) {
        // Once failed, nothing will be decoded again; do not let the buffer grow.
        if self.failed.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Number of bytes buffered but not yet returned as records.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Returns the next complete record, or `None` until more bytes are pushed.
    ///
    /// Call it in a loop after each [`push`](Self::push): one chunk may complete several
    /// records. The returned [`Bytes`] shares the receive buffer (no copy).
    ///
    /// # Errors
    /// [`RecordIoError::InvalidHeader`] or [`RecordIoError::TooLarge`] for a corrupt stream,
    /// detected as soon as the offending header bytes arrive (before the payload is buffered);
    /// [`RecordIoError::Failed`] on every call after that.
    pub fn next_record(&mut self) -> Result<Option<Bytes>, RecordIoError> {
        if let Some(e) = &self.failed {
            return Err(RecordIoError::Failed(Box::new(e.clone())));
        }
        match self.parse_header() {
            Ok(None) => Ok(None),
            Ok(Some((header_len, len))) => {
                let total = header_len + len;
                if self.buf.len() < total {
                    // Grow once to the full record instead of doubling per chunk.
                    self.buf.reserve(total - self.buf.len());
                    return Ok(None);
                }
                self.buf.advance(header_len);
                Ok(Some(self.buf.split_to(len).freeze()))
            }
            Err(e) => {
                self.buf = BytesMut::new();
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Checks that the stream ended on a record boundary. Call it when the body ends.
    ///
    /// # Errors
    /// [`RecordIoError::Truncated`] if part of a record is still buffered, or the stored
    /// error if the decoder had already failed.
    pub fn finish(&self) -> Result<(), RecordIoError> {
        if let Some(e) = &self.failed {
            return Err(RecordIoError::Failed(Box::new(e.clone())));
        }
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(RecordIoError::Truncated {
                buffered: self.buf.len(),
            })
        }
    }

    /// Parses the header at the front of the buffer: `Some((header bytes incl. LF, payload
    /// length))`, or `None` while the header is still incomplete. Validates every digit as it
    /// arrives so a corrupt stream is rejected without waiting for a newline.
    fn parse_header(&self) -> Result<Option<(usize, usize)>, RecordIoError> {
        let mut len: u64 = 0;
        for (i, &b) in self.buf.iter().enumerate() {
            match b {
                b'\n' if i == 0 => return Err(self.invalid_header(i + 1)),
                b'\n' => {
                    // `len <= max_record` was checked for every digit, so it fits a usize.
                    let len = usize::try_from(len).map_err(|_| self.too_large(len))?;
                    return Ok(Some((i + 1, len)));
                }
                b'0'..=b'9' if i < MAX_HEADER_DIGITS => {
                    len = len
                        .checked_mul(10)
                        .and_then(|l| l.checked_add(u64::from(b - b'0')))
                        .unwrap_or(u64::MAX);
                    // Reject as soon as the digits so far already exceed the limit: more digits
                    // can only make it larger.
                    if len > self.max_record as u64 {
                        return Err(self.too_large(len));
                    }
                }
                _ => return Err(self.invalid_header(i + 1)),
            }
        }
        Ok(None)
    }

    fn invalid_header(&self, upto: usize) -> RecordIoError {
        let shown = &self.buf[..upto.min(self.buf.len()).min(MAX_HEADER_DIGITS + 1)];
        RecordIoError::InvalidHeader {
            header: String::from_utf8_lossy(shown).into_owned(),
        }
    }

    fn too_large(&self, len: u64) -> RecordIoError {
        RecordIoError::TooLarge {
            len,
            max: self.max_record,
        }
    }
}

/// Frames one payload as a RecordIO record: `<len>\n<payload>`.
pub fn encode(payload: &[u8]) -> Bytes {
    let header = payload.len().to_string();
    let mut out = BytesMut::with_capacity(header.len() + 1 + payload.len());
    out.put_slice(header.as_bytes());
    out.put_u8(b'\n');
    out.put_slice(payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(d: &mut Decoder) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(r) = d.next_record().expect("valid stream") {
            out.push(r);
        }
        out
    }

    fn stream(records: &[&[u8]]) -> Vec<u8> {
        records.iter().flat_map(|r| encode(r).to_vec()).collect()
    }

    const RECORDS: [&[u8]; 5] = [
        br#"{"type":"HEARTBEAT"}"#,
        b"",
        b"x",
        b"123\n456\n", // digits and newlines inside a payload must not confuse the framing
        b"\x00\xff\n\n0\n",
    ];

    #[test]
    fn encode_matches_the_mesos_grammar() {
        assert_eq!(&encode(b"")[..], b"0\n");
        assert_eq!(&encode(b"abc")[..], b"3\nabc");
        assert_eq!(
            &stream(&[br#"{"type":"HEARTBEAT"}"#, b"{}"])[..],
            b"20\n{\"type\":\"HEARTBEAT\"}2\n{}"
        );
    }

    #[test]
    fn one_chunk_with_many_records() {
        let mut d = Decoder::new();
        d.push(&stream(&RECORDS));
        assert_eq!(drain(&mut d), RECORDS.to_vec());
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let wire = stream(&RECORDS);
        for cut in 0..=wire.len() {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                d.push(part);
                got.extend(drain(&mut d));
            }
            assert_eq!(got, RECORDS.to_vec(), "cut at {cut}");
            assert_eq!(d.finish(), Ok(()), "cut at {cut}");
        }
    }

    #[test]
    fn byte_by_byte_and_every_two_cuts() {
        let wire = stream(&RECORDS[..4]);
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b));
            got.extend(drain(&mut d));
        }
        assert_eq!(got, RECORDS[..4].to_vec());
        for i in 0..=wire.len() {
            for j in i..=wire.len() {
                let mut d = Decoder::new();
                let mut got = Vec::new();
                for part in [&wire[..i], &wire[i..j], &wire[j..]] {
                    d.push(part);
                    got.extend(drain(&mut d));
                }
                assert_eq!(got, RECORDS[..4].to_vec(), "cuts at {i},{j}");
            }
        }
    }

    #[test]
    fn incomplete_record_waits_then_truncates_at_end() {
        let mut d = Decoder::new();
        d.push(b"5\nhel");
        assert_eq!(d.next_record(), Ok(None));
        assert_eq!(d.finish(), Err(RecordIoError::Truncated { buffered: 5 }));
        d.push(b"lo");
        assert_eq!(d.next_record(), Ok(Some(Bytes::from_static(b"hello"))));
        d.push(b"12");
        assert_eq!(d.next_record(), Ok(None));
        assert_eq!(d.finish(), Err(RecordIoError::Truncated { buffered: 2 }));
    }

    #[test]
    fn bad_headers_fail_the_stream() {
        let cases: [(&[u8], &str); 8] = [
            (b"\n", "\n"),
            (b"abc\n", "a"),
            (b"-1\n", "-"),
            (b"+1\nx", "+"),
            (b" 1\nx", " "),
            (b"1 \nx", "1 "),
            (b"2\r\nxy", "2\r"),
            (b"000000000000000000001\nx", "000000000000000000001"), // 21 digits
        ];
        for (wire, shown) in cases {
            let mut d = Decoder::new();
            d.push(wire);
            let want = RecordIoError::InvalidHeader {
                header: shown.to_owned(),
            };
            assert_eq!(d.next_record(), Err(want.clone()), "{wire:?}");
            // Sticky: the stream cannot be resynchronised, even with valid data after it.
            d.push(&encode(b"ok"));
            assert_eq!(
                d.next_record(),
                Err(RecordIoError::Failed(Box::new(want.clone())))
            );
            assert_eq!(d.buffered(), 0, "a failed decoder buffers nothing");
            assert!(d.finish().is_err());
        }
    }

    #[test]
    fn a_bad_header_after_a_good_record_is_caught_after_draining_it() {
        let mut d = Decoder::new();
        d.push(b"2\nokX\n");
        assert_eq!(d.next_record(), Ok(Some(Bytes::from_static(b"ok"))));
        assert!(matches!(
            d.next_record(),
            Err(RecordIoError::InvalidHeader { .. })
        ));
    }

    #[test]
    fn bad_header_is_detected_before_the_newline_arrives() {
        let mut d = Decoder::new();
        d.push(b"1x");
        assert!(matches!(
            d.next_record(),
            Err(RecordIoError::InvalidHeader { .. })
        ));
    }

    #[test]
    fn oversize_records_are_refused_before_buffering() {
        let mut d = Decoder::with_max_record_size(10);
        d.push(b"10\n0123456789");
        assert_eq!(d.next_record(), Ok(Some(Bytes::from_static(b"0123456789"))));
        // "11" is refused as soon as the second digit arrives, without a newline.
        d.push(b"11");
        assert_eq!(
            d.next_record(),
            Err(RecordIoError::TooLarge { len: 11, max: 10 })
        );

        let mut d = Decoder::new();
        d.push(b"99999999999999999999\n"); // 20 digits: valid syntax, absurd size
        assert!(matches!(
            d.next_record(),
            Err(RecordIoError::TooLarge { max, .. }) if max == DEFAULT_MAX_RECORD_SIZE
        ));

        let mut d = Decoder::new();
        d.push(format!("{}\n", DEFAULT_MAX_RECORD_SIZE + 1).as_bytes());
        assert!(matches!(
            d.next_record(),
            Err(RecordIoError::TooLarge { len, .. }) if len == DEFAULT_MAX_RECORD_SIZE as u64 + 1
        ));
    }

    #[test]
    fn zero_length_records_are_accepted_like_mesos_does() {
        let mut d = Decoder::new();
        d.push(b"0\n0\n1\na");
        assert_eq!(
            drain(&mut d),
            vec![Bytes::new(), Bytes::new(), Bytes::from_static(b"a")]
        );
    }

    #[test]
    fn leading_zeros_are_digits() {
        let mut d = Decoder::new();
        d.push(b"003\nabc");
        assert_eq!(drain(&mut d), vec![Bytes::from_static(b"abc")]);
    }
}
