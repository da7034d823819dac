//! The example service's page cursors (`examples/src/api/cursor.rs`, compiled
//! here as is: it depends only on `base64` and `xxhash-rust`). An accepted
//! cursor is exactly the one the service would have written (no malleable
//! encodings), carries a positive id, and is bound to its listing; every
//! cursor the service writes decodes to its id.
#![no_main]

#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/src/api/cursor.rs"]
mod cursor;

use arbitrary::Arbitrary;
use cursor::{decode_cursor, encode_cursor};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    listing: String,
    other_listing: String,
    cursor: String,
    id: i64,
    tamper_at: u8,
    tamper_with: u8,
}

fuzz_target!(|input: Input| {
    // A cursor from the query string.
    if let Some(id) = decode_cursor(&input.listing, &input.cursor) {
        assert!(id > 0, "accepted a cursor with id {id}");
        assert_eq!(encode_cursor(&input.listing, id), input.cursor, "accepted a non-canonical cursor");
    }

    // A cursor the service wrote.
    let written = encode_cursor(&input.listing, input.id);
    assert!(written.len() <= 64, "cursor too long for the decoder: {written}");
    assert!(written.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "not URL-safe: {written}");
    let expected = (input.id > 0).then_some(input.id);
    assert_eq!(decode_cursor(&input.listing, &written), expected);
    if input.other_listing != input.listing {
        assert_eq!(decode_cursor(&input.other_listing, &written), None, "a cursor crossed listings");
    }
    // Any one-byte edit is refused.
    let mut edited = written.into_bytes();
    let at = usize::from(input.tamper_at) % edited.len();
    if edited[at] != input.tamper_with {
        edited[at] = input.tamper_with;
        if let Ok(edited) = String::from_utf8(edited) {
            assert_eq!(decode_cursor(&input.listing, &edited), None, "an edited cursor {edited:?} was accepted");
        }
    }
});
