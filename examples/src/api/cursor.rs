//! Page cursors: opaque, tamper-evident, bound to one listing.
//!
//! This file depends on nothing else in the crate (only `base64` and
//! `xxhash-rust`): the cursor fuzz target in `fuzz/` compiles it as is.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const CURSOR_VERSION: u8 = 1;
/// Keys the cursor checksum. It makes a cursor tamper-evident (an edited or
/// made-up cursor is refused), not secret: the rows it points into are public.
const CURSOR_KEY: u64 = 0x6272_6973_6b2d_6375;

/// A page position: the last id of the previous page, bound to one listing.
pub(crate) fn encode_cursor(listing: &str, last_id: i64) -> String {
    let mut bytes = Vec::with_capacity(17);
    bytes.push(CURSOR_VERSION);
    bytes.extend_from_slice(&last_id.to_be_bytes());
    let check = checksum(listing, &bytes);
    bytes.extend_from_slice(&check.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The last id a cursor made by [`encode_cursor`] for `listing` carries.
pub(crate) fn decode_cursor(listing: &str, cursor: &str) -> Option<i64> {
    if cursor.len() > 64 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let (body, check) = (bytes.get(..9)?, bytes.get(9..)?);
    let check: [u8; 8] = check.try_into().ok()?;
    if body[0] != CURSOR_VERSION || u64::from_be_bytes(check) != checksum(listing, body) {
        return None;
    }
    let last_id = i64::from_be_bytes(body[1..9].try_into().ok()?);
    (last_id > 0).then_some(last_id)
}

fn checksum(listing: &str, body: &[u8]) -> u64 {
    let mut input = Vec::with_capacity(listing.len() + 1 + body.len());
    input.extend_from_slice(listing.as_bytes());
    input.push(0);
    input.extend_from_slice(body);
    xxhash_rust::xxh3::xxh3_64_with_seed(&input, CURSOR_KEY)
}
