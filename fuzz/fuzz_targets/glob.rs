//! The pattern-invalidation glob (`brisk_cache::KeyPattern`). Checks, for
//! arbitrary patterns, keys and key prefixes: compilation accepts exactly
//! the documented patterns; matching agrees with the textbook definition of
//! `*` / `?` (by characters); the Redis `SCAN MATCH` pattern sent for the
//! physical clean-up matches (by Redis' byte-wise glob) every key the matcher
//! matches, and never a key outside the cache's prefix.
#![no_main]

use arbitrary::Arbitrary;
use brisk_cache::fuzzing::redis_scan_pattern;
use brisk_cache::{KeyPattern, MAX_PATTERN_LEN};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    pattern: String,
    key: String,
    prefix: String,
}

/// `*`, `?` and literals over characters, by dynamic programming.
fn reference(pattern: &[char], key: &[char]) -> bool {
    // row[j]: pattern[..i] matches key[..j].
    let mut row = vec![false; key.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; key.len() + 1];
        if p == '*' {
            let mut any = false;
            for j in 0..=key.len() {
                any |= row[j];
                next[j] = any;
            }
        } else {
            for j in 1..=key.len() {
                next[j] = row[j - 1] && (p == '?' || p == key[j - 1]);
            }
        }
        row = next;
    }
    row[key.len()]
}

enum Token {
    Star,
    Byte,
    Literal(u8),
}

/// Redis' glob (`stringmatchlen`) for what the scan pattern may contain:
/// `*`, `?` (one byte), `\x` (a literal x) and literals. An unescaped `[` or
/// `]` would start a character class: the scan pattern must never hold one.
fn redis_glob(pattern: &[u8], key: &[u8]) -> bool {
    let mut tokens = Vec::new();
    let mut bytes = pattern.iter();
    while let Some(&b) = bytes.next() {
        tokens.push(match b {
            b'*' => Token::Star,
            b'?' => Token::Byte,
            b'\\' => Token::Literal(*bytes.next().expect("a lone trailing backslash in the scan pattern")),
            b'[' | b']' => {
                panic!("unescaped {:?} in the scan pattern {:?}", b as char, String::from_utf8_lossy(pattern))
            }
            b => Token::Literal(b),
        });
    }
    let mut row = vec![false; key.len() + 1];
    row[0] = true;
    for token in &tokens {
        let mut next = vec![false; key.len() + 1];
        match token {
            Token::Star => {
                let mut any = false;
                for j in 0..=key.len() {
                    any |= row[j];
                    next[j] = any;
                }
            }
            Token::Byte => (1..=key.len()).for_each(|j| next[j] = row[j - 1]),
            Token::Literal(c) => (1..=key.len()).for_each(|j| next[j] = row[j - 1] && key[j - 1] == *c),
        }
        row = next;
    }
    row[key.len()]
}

fuzz_target!(|input: Input| {
    let Input { pattern, key, prefix } = input;
    let compiled = match KeyPattern::new(&pattern) {
        Ok(compiled) => compiled,
        Err(_) => {
            assert!(pattern.is_empty() || pattern.len() > MAX_PATTERN_LEN, "refused a valid pattern {pattern:?}");
            return;
        }
    };
    assert!(!pattern.is_empty() && pattern.len() <= MAX_PATTERN_LEN, "accepted an invalid pattern");
    assert_eq!(compiled.as_str(), pattern);
    let matched = compiled.matches(&key);
    if !pattern.contains(['*', '?']) {
        assert_eq!(matched, key == pattern, "a literal pattern matches only itself");
    }
    if pattern.chars().all(|c| c == '*') {
        assert!(matched, "`*` matches every key");
    }
    // The DP references are quadratic: keep them to inputs of a realistic size.
    if pattern.len() > 128 || key.len() > 512 || prefix.len() > 64 {
        return;
    }
    let pc: Vec<char> = pattern.chars().collect();
    let kc: Vec<char> = key.chars().collect();
    assert_eq!(matched, reference(&pc, &kc), "pattern {pattern:?} on key {key:?}");

    let scan = redis_scan_pattern(&compiled, &prefix);
    let full = format!("{prefix}{key}");
    if matched {
        assert!(redis_glob(scan.as_bytes(), full.as_bytes()), "scan pattern {scan:?} misses {full:?}");
    }
    // Whatever the scan pattern matches lies under the prefix.
    if redis_glob(scan.as_bytes(), key.as_bytes()) {
        assert!(key.starts_with(&prefix), "scan pattern {scan:?} matches {key:?}, outside prefix {prefix:?}");
    }
});
