//! Header values of small numbers (`Age`, `Content-Length`) as slices of one
//! static table: a response's copy of such a value then moves no reference
//! count when it is cloned or dropped, as one built at run time would.

use bytes::Bytes;
use http::HeaderValue;

/// Numbers below this come from the table.
const LIMIT: u64 = 10_000;

/// Every number below [`LIMIT`] written out, one after the other:
/// `0123456789101112…9999`.
static TABLE: [u8; table_len()] = table();

const fn digits(n: u64) -> usize {
    if n < 10 {
        1
    } else if n < 100 {
        2
    } else if n < 1_000 {
        3
    } else {
        4
    }
}

/// Where `n` starts in [`TABLE`] (`n < LIMIT`).
const fn offset(n: u64) -> usize {
    // All the numbers with fewer digits come first.
    match digits(n) {
        1 => n as usize,
        2 => 10 + (n as usize - 10) * 2,
        3 => 10 + 90 * 2 + (n as usize - 100) * 3,
        _ => 10 + 90 * 2 + 900 * 3 + (n as usize - 1_000) * 4,
    }
}

const fn table_len() -> usize {
    offset(LIMIT - 1) + digits(LIMIT - 1)
}

const fn table() -> [u8; table_len()] {
    let mut out = [0u8; table_len()];
    let mut n = 0;
    while n < LIMIT {
        let (at, len) = (offset(n), digits(n));
        let mut rest = n;
        let mut i = len;
        while i > 0 {
            i -= 1;
            out[at + i] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        n += 1;
    }
    out
}

/// `n` in decimal as a header value.
pub(crate) fn value(n: u64) -> HeaderValue {
    if n < LIMIT {
        let at = offset(n);
        let bytes = Bytes::from_static(&TABLE[at..at + digits(n)]);
        if let Ok(value) = HeaderValue::from_maybe_shared(bytes) {
            return value;
        }
    }
    HeaderValue::from(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_reads_as_itself() {
        for n in (0..LIMIT + 20).chain([99_999, 123_456_789, u64::MAX]) {
            assert_eq!(value(n).to_str().unwrap(), n.to_string(), "{n}");
        }
        assert_eq!(TABLE.len(), 38_890);
    }
}
