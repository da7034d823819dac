//! The cache envelope decoder (`brisk_cache::envelope`): bytes read back from
//! Redis are hostile. Decoding never panics, the error says what the bytes
//! are, a decoded envelope keeps its invariants and re-encodes to itself, and
//! every envelope built from parts round-trips.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use brisk_cache::envelope::{Envelope, EnvelopeError, FORMAT_VERSION, MAGIC, Stamps};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Parts {
    written_at_ms: u64,
    fresh_until_ms: u64,
    stale_until_ms: u64,
    namespace: u64,
    pattern_epoch: u64,
    tags: Vec<(String, u64)>,
    payload: Vec<u8>,
    cut: u16,
}

fn decode_arbitrary(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    let ours = data.len() >= 3 && data[..2] == MAGIC;
    match Envelope::decode(bytes) {
        Ok(envelope) => {
            assert!(ours && data[2] == FORMAT_VERSION, "accepted bytes without the magic and version");
            assert!(envelope.stale_until_ms() >= envelope.fresh_until_ms(), "stale-until before fresh-until");
            assert!(data.ends_with(envelope.payload()), "the payload is not the tail of the input");
            let again = Envelope::decode(envelope.encode()).expect("a decoded envelope re-encodes to a valid one");
            assert_eq!(again, envelope, "decode(encode(decode(x))) != decode(x)");
        }
        Err(EnvelopeError::Foreign) => assert!(!ours, "an envelope with the magic bytes called foreign"),
        Err(EnvelopeError::Version(v)) => {
            assert!(ours && v == data[2] && v != FORMAT_VERSION, "wrong version reported: {v}");
        }
        Err(EnvelopeError::Corrupt) => assert!(ours && data[2] == FORMAT_VERSION, "corrupt reported for foreign bytes"),
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

fn round_trip(parts: Parts) {
    let stamps = Stamps { namespace: parts.namespace, pattern_epoch: parts.pattern_epoch, tags: parts.tags };
    let envelope = Envelope::new(
        parts.written_at_ms,
        parts.fresh_until_ms,
        parts.stale_until_ms,
        stamps,
        Bytes::from(parts.payload),
    );
    assert_eq!(envelope.stale_until_ms(), parts.stale_until_ms.max(parts.fresh_until_ms));
    let encoded = envelope.encode();
    assert_eq!(encoded[..2], MAGIC);
    assert_eq!(encoded[2], FORMAT_VERSION);
    assert_eq!(Envelope::decode(encoded.clone()).as_ref(), Ok(&envelope), "round trip");
    // A truncated envelope is refused, or (cut inside the payload) decodes to
    // the same header with a shorter payload: never to other metadata.
    let cut = usize::from(parts.cut).min(encoded.len());
    if let Ok(short) = Envelope::decode(encoded.slice(..encoded.len() - cut)) {
        assert_eq!(short.stamps(), envelope.stamps());
        assert_eq!(short.written_at_ms(), envelope.written_at_ms());
        assert_eq!(short.fresh_until_ms(), envelope.fresh_until_ms());
        assert_eq!(short.stale_until_ms(), envelope.stale_until_ms());
        assert_eq!(short.payload().len() + cut, envelope.payload().len());
    }
}

fuzz_target!(|data: &[u8]| {
    decode_arbitrary(data);
    if let Ok(parts) = Parts::arbitrary_take_rest(Unstructured::new(data)) {
        round_trip(parts);
    }
});
