//! Glob patterns over cache keys, for pattern invalidation.
//!
//! ```
//! use brisk_cache::KeyPattern;
//!
//! let p = KeyPattern::new("cache:*/blueprints*").unwrap();
//! assert!(p.matches("cache:GET/api/blueprints?page=2"));
//! assert!(!p.matches("cache:GET/api/projects"));
//! ```
//!
//! `*` matches any run of characters (also none, also `/`), `?` exactly one
//! character; every other character, `[`, `]` and `\` included, matches
//! itself. Matching is done by [`wildmatch`] (linear time, no backtracking
//! blow-up). It is Redis' glob for patterns made of `*`, `?` and literals,
//! with one difference made on purpose: `?` is one character, not one byte.
//! Redis' character classes are not supported — they would make the
//! physical clean-up (Redis `SCAN MATCH`) and the request-path check
//! disagree; the clean-up sends a pattern that is a superset of this one and
//! filters what it gets with this matcher, so both always agree.

use wildmatch::WildMatch;

use crate::error::Error;

/// Longest accepted pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;

/// A compiled key pattern.
#[derive(Debug, Clone)]
pub struct KeyPattern {
    source: String,
    matcher: WildMatch,
}

impl PartialEq for KeyPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for KeyPattern {}

impl KeyPattern {
    /// Compiles a pattern.
    ///
    /// # Errors
    ///
    /// When the pattern is empty or longer than [`MAX_PATTERN_LEN`].
    pub fn new(pattern: &str) -> Result<Self, Error> {
        if pattern.is_empty() {
            return Err(Error::InvalidPattern { pattern: pattern.into(), reason: "empty" });
        }
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(Error::InvalidPattern { pattern: pattern.into(), reason: "longer than 1024 bytes" });
        }
        Ok(Self { source: pattern.to_owned(), matcher: WildMatch::new(pattern) })
    }

    /// Whether `key` matches.
    pub fn matches(&self, key: &str) -> bool {
        self.matcher.matches(key)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// A Redis `SCAN MATCH` pattern for `prefix` followed by a key matching
    /// this pattern: `prefix` escaped, `?` widened to `*` (Redis counts bytes).
    /// What it returns must still be filtered with [`KeyPattern::matches`].
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn redis_scan_pattern(&self, prefix: &str) -> String {
        let mut out = String::with_capacity(prefix.len() + self.source.len() + 8);
        escape_into(&mut out, prefix);
        for c in self.source.chars() {
            match c {
                '*' | '?' => out.push('*'),
                '[' | ']' | '\\' => {
                    out.push('\\');
                    out.push(c);
                }
                c => out.push(c),
            }
        }
        out
    }
}

/// Escapes Redis glob metacharacters.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) fn escape_into(out: &mut String, literal: &str) {
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The textbook definition, for comparison.
    fn reference(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => (0..=s.len()).any(|i| reference(rest, &s[i..])),
            Some(('?', rest)) => !s.is_empty() && reference(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && reference(rest, &s[1..]),
        }
    }

    proptest! {
        #[test]
        fn agrees_with_the_definition(p in "[ab*?/\\[é]{1,8}", s in "[ab/\\[é]{0,10}") {
            let pat = KeyPattern::new(&p).unwrap();
            let pc: Vec<char> = p.chars().collect();
            let sc: Vec<char> = s.chars().collect();
            prop_assert_eq!(pat.matches(&s), reference(&pc, &sc));
        }

        #[test]
        fn the_scan_pattern_is_a_superset(p in "[ab*?:]{1,8}", s in "[ab:]{0,10}") {
            // With ASCII keys, Redis' glob on the scan pattern must accept
            // everything the matcher accepts.
            let pat = KeyPattern::new(&p).unwrap();
            let wide = KeyPattern::new(&pat.redis_scan_pattern("pre:")).unwrap();
            if pat.matches(&s) {
                let full = format!("pre:{s}");
                prop_assert!(wide.matches(&full));
            }
        }
    }

    #[test]
    fn route_shaped_patterns() {
        let p = KeyPattern::new("cache:*/blueprints*").unwrap();
        assert!(p.matches("cache:GET/api/blueprints"));
        assert!(p.matches("cache:/blueprints"));
        assert!(!p.matches("cache:GET/api/blueprint"));
        assert!(!p.matches("other:GET/api/blueprints"));
        assert!(KeyPattern::new("").is_err());
        assert!(KeyPattern::new(&"*".repeat(2000)).is_err());
    }

    #[test]
    fn scan_pattern_escapes_the_prefix_and_metacharacters() {
        let p = KeyPattern::new("a[1]?*").unwrap();
        assert_eq!(p.redis_scan_pattern("p*x:"), "p\\*x:a\\[1\\]**");
    }
}
