//! RecordIO decoding for the agent's event stream: `<decimal length>\n<payload>` repeated, with
//! no separator between records.
//!
//! Owns only the framing. HTTP chunk boundaries are unrelated to records (a record can span
//! chunks and a chunk can hold several records), so the decoder works on a growing buffer fed
//! with whatever bytes arrive. The scheduler needs the same decoder; the lead may move this to
//! a shared module later.

use bytes::{Buf, Bytes, BytesMut};

/// Longest accepted length header, in digits: `u64::MAX` has 20.
const MAX_HEADER_DIGITS: usize = 20;

/// Why a stream cannot be decoded any further. Mesos' own decoder enters a failed state on
/// these, and so does the caller: the stream is dropped and re-established.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordIoError {
    #[error("invalid RecordIO length header {0:?}")]
    InvalidHeader(String),
    #[error("RecordIO record of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: usize },
}

/// Incremental RecordIO decoder over a growing byte buffer.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    /// Guards memory: a corrupt header must not make us wait for (and buffer) gigabytes.
    max_record: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(64 * 1024 * 1024)
    }
}

impl Decoder {
    /// A decoder that refuses records longer than `max_record` bytes.
    pub fn new(max_record: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_record,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether bytes of an incomplete record are buffered (a stream ending now was truncated).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next complete record, or `None` when more bytes are needed.
    ///
    /// # Errors
    ///
    /// [`RecordIoError`] when the length header is not a decimal number or exceeds the limit;
    /// the decoder should then be discarded with its stream.
    pub fn next_record(&mut self) -> Result<Option<Bytes>, RecordIoError> {
        let Some(newline) = self.buf.iter().position(|&b| b == b'\n') else {
            if self.buf.len() > MAX_HEADER_DIGITS || !self.buf.iter().all(u8::is_ascii_digit) {
                return Err(self.invalid_header(self.buf.len()));
            }
            return Ok(None);
        };
        let header = &self.buf[..newline];
        if header.is_empty() || header.len() > MAX_HEADER_DIGITS {
            return Err(self.invalid_header(newline));
        }
        let len = std::str::from_utf8(header)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or_else(|| self.invalid_header(newline))?;
        let len_usize = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.max_record)
            .ok_or(RecordIoError::TooLarge {
                len,
                max: self.max_record,
            })?;
        if self.buf.len() - newline - 1 < len_usize {
            return Ok(None);
        }
        self.buf.advance(newline + 1);
        Ok(Some(self.buf.split_to(len_usize).freeze()))
    }

    fn invalid_header(&self, upto: usize) -> RecordIoError {
        let shown = &self.buf[..upto.min(MAX_HEADER_DIGITS + 1)];
        RecordIoError::InvalidHeader(String::from_utf8_lossy(shown).into_owned())
    }
}

/// Frames one record: `len + "\n" + payload`.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = format!("{}\n", payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(d: &mut Decoder) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Some(r) = d.next_record().unwrap() {
            out.push(r);
        }
        out
    }

    #[test]
    fn several_records_in_one_chunk() {
        let mut d = Decoder::default();
        d.push(b"5\nhello3\nabc0\n");
        assert_eq!(drain(&mut d), vec!["hello", "abc", ""]);
        assert!(!d.has_partial());
    }

    #[test]
    fn records_split_at_every_byte() {
        let mut stream = encode(b"{\"type\":\"HEARTBEAT\"}");
        stream.extend(encode(&[0u8; 300]));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for b in &stream {
            d.push(std::slice::from_ref(b));
            got.extend(drain(&mut d));
        }
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0][..], b"{\"type\":\"HEARTBEAT\"}");
        assert_eq!(got[1].len(), 300);
        assert!(!d.has_partial());
    }

    #[test]
    fn partial_header_waits() {
        let mut d = Decoder::default();
        d.push(b"12");
        assert_eq!(d.next_record(), Ok(None));
        assert!(d.has_partial());
    }

    #[test]
    fn garbage_header_is_an_error() {
        let mut d = Decoder::default();
        d.push(b"x1\nab");
        assert!(matches!(
            d.next_record(),
            Err(RecordIoError::InvalidHeader(_))
        ));
        let mut d = Decoder::default();
        d.push(b"\nab");
        assert!(matches!(
            d.next_record(),
            Err(RecordIoError::InvalidHeader(_))
        ));
        let mut d = Decoder::default();
        d.push(b"abc");
        assert!(matches!(
            d.next_record(),
            Err(RecordIoError::InvalidHeader(_))
        ));
        let mut d = Decoder::default();
        d.push(&[b'9'; 25]);
        assert!(matches!(
            d.next_record(),
            Err(RecordIoError::InvalidHeader(_))
        ));
    }

    #[test]
    fn oversized_record_is_refused_before_buffering() {
        let mut d = Decoder::new(10);
        d.push(b"11\n");
        assert_eq!(
            d.next_record(),
            Err(RecordIoError::TooLarge { len: 11, max: 10 })
        );
    }
}
