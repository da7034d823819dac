//! The envelope every cached value is stored in, in both tiers.
//!
//! ```
//! use bytes::Bytes;
//! use brisk_cache::envelope::{Envelope, Stamps};
//!
//! let envelope = Envelope::new(1_000, 61_000, 91_000, Stamps::default(), Bytes::from_static(b"value"));
//! let decoded = Envelope::decode(envelope.encode()).unwrap();
//! assert_eq!(decoded, envelope);
//! assert!(Envelope::decode(Bytes::from_static(b"not ours")).is_err());
//! ```
//!
//! Layout (format version 1):
//!
//! | bytes | content |
//! | --- | --- |
//! | 2 | magic `0xB7 0xCA` — foreign values are rejected, not misread |
//! | 1 | format version — a rolling deploy never misreads a newer format |
//! | … | header, postcard: write time, fresh-until, stale-until (ms since the Unix epoch), generation stamps |
//! | rest | the value's bytes, as given (zero-copy on read) |

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// The two magic bytes every envelope starts with.
pub const MAGIC: [u8; 2] = [0xB7, 0xCA];
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// The generations an entry was written under. A read is a miss when any of
/// them has moved since (see the crate docs, "Invalidation").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamps {
    /// The namespace generation (moved by `clear()`).
    pub namespace: u64,
    /// The pattern epoch: tombstones newer than it apply to this entry.
    pub pattern_epoch: u64,
    /// Each tag with its generation.
    pub tags: Vec<(String, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    written_at_ms: u64,
    fresh_until_ms: u64,
    stale_until_ms: u64,
    stamps: Stamps,
}

/// A cached value with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    header: Header,
    payload: Bytes,
}

/// Why bytes are not an envelope this crate can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Too short or without the magic bytes: not written by this crate.
    #[error("not a brisk-cache envelope")]
    Foreign,
    /// Written by a format version this build does not read.
    #[error("unsupported envelope format version {0}")]
    Version(u8),
    /// The header does not decode or is inconsistent.
    #[error("corrupt envelope header")]
    Corrupt,
}

impl Envelope {
    /// An envelope. `stale_until_ms` below `fresh_until_ms` is raised to it.
    pub fn new(written_at_ms: u64, fresh_until_ms: u64, stale_until_ms: u64, stamps: Stamps, payload: Bytes) -> Self {
        Self {
            header: Header {
                written_at_ms,
                fresh_until_ms,
                stale_until_ms: stale_until_ms.max(fresh_until_ms),
                stamps,
            },
            payload,
        }
    }

    /// When the value was written (ms since the Unix epoch).
    pub fn written_at_ms(&self) -> u64 {
        self.header.written_at_ms
    }

    /// Until when the value is fresh (ms since the Unix epoch).
    pub fn fresh_until_ms(&self) -> u64 {
        self.header.fresh_until_ms
    }

    /// Until when the value may be served stale (ms since the Unix epoch).
    pub fn stale_until_ms(&self) -> u64 {
        self.header.stale_until_ms
    }

    /// The generations the value was written under.
    pub fn stamps(&self) -> &Stamps {
        &self.header.stamps
    }

    /// The value's bytes.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Encodes the envelope.
    pub fn encode(&self) -> Bytes {
        // Header serialisation into memory cannot fail: every field is a
        // plain integer or string.
        let header = postcard::to_allocvec(&self.header).unwrap_or_default();
        let mut out = BytesMut::with_capacity(3 + header.len() + self.payload.len());
        out.put_slice(&MAGIC);
        out.put_u8(FORMAT_VERSION);
        out.put_slice(&header);
        out.put_slice(&self.payload);
        out.freeze()
    }

    /// Decodes an envelope; the payload shares `bytes`' memory.
    ///
    /// # Errors
    ///
    /// When the bytes were not written by this crate, by another format
    /// version, or are corrupt.
    pub fn decode(bytes: Bytes) -> Result<Self, EnvelopeError> {
        if bytes.len() < 3 || bytes[..2] != MAGIC {
            return Err(EnvelopeError::Foreign);
        }
        if bytes[2] != FORMAT_VERSION {
            return Err(EnvelopeError::Version(bytes[2]));
        }
        let (header, rest) = postcard::take_from_bytes::<Header>(&bytes[3..]).map_err(|_| EnvelopeError::Corrupt)?;
        if header.stale_until_ms < header.fresh_until_ms {
            return Err(EnvelopeError::Corrupt);
        }
        let offset = bytes.len() - rest.len();
        Ok(Self { header, payload: bytes.slice(offset..) })
    }

    /// The encoded size in bytes.
    pub(crate) fn weight_hint(&self) -> usize {
        self.payload.len() + 32 + self.header.stamps.tags.iter().map(|(t, _)| t.len() + 10).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stamps() -> impl Strategy<Value = Stamps> {
        (any::<u64>(), any::<u64>(), proptest::collection::vec((".{0,12}", any::<u64>()), 0..5))
            .prop_map(|(namespace, pattern_epoch, tags)| Stamps { namespace, pattern_epoch, tags })
    }

    proptest! {
        #[test]
        fn round_trips(written in any::<u64>(), fresh in any::<u64>(), grace in any::<u32>(), stamps in stamps(),
                       payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            let e = Envelope::new(written, fresh, fresh.saturating_add(u64::from(grace)), stamps, Bytes::from(payload));
            let decoded = Envelope::decode(e.encode());
            prop_assert_eq!(decoded, Ok(e));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Envelope::decode(Bytes::from(bytes));
        }

        #[test]
        fn truncated_envelopes_are_rejected_or_shorter(payload in proptest::collection::vec(any::<u8>(), 0..64), cut in 0usize..40) {
            let e = Envelope::new(1, 2, 3, Stamps { namespace: 1, pattern_epoch: 2, tags: vec![("t".into(), 3)] }, Bytes::from(payload));
            let encoded = e.encode();
            let cut = cut.min(encoded.len());
            if let Ok(d) = Envelope::decode(encoded.slice(..encoded.len() - cut)) {
                prop_assert_eq!(d.payload().len() + cut, e.payload().len());
            }
        }
    }

    #[test]
    fn foreign_and_future_versions_are_refused() {
        assert_eq!(Envelope::decode(Bytes::from_static(b"")), Err(EnvelopeError::Foreign));
        assert_eq!(Envelope::decode(Bytes::from_static(b"{\"json\":1}")), Err(EnvelopeError::Foreign));
        assert_eq!(Envelope::decode(Bytes::from_static(&[0xB7, 0xCA, 9, 0])), Err(EnvelopeError::Version(9)));
        assert_eq!(Envelope::decode(Bytes::from_static(&[0xB7, 0xCA, 1, 0xff])), Err(EnvelopeError::Corrupt));
    }
}
