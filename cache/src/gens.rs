//! The generations this process knows, and the checks made against them.
//!
//! Redis holds the authoritative counters (`INCR`); this is the local copy,
//! kept fresh by the invalidation bus. Counters only grow, so every update is
//! a `max`, and an update from the bus can never be undone by an older read.

use std::collections::HashMap;

use parking_lot::RwLock;

use crate::envelope::Stamps;
use crate::pattern::KeyPattern;

/// A pattern invalidation: entries written under an older pattern epoch
/// whose key matches are misses until `expires_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tombstone {
    pub(crate) pattern: KeyPattern,
    pub(crate) epoch: u64,
    pub(crate) expires_ms: u64,
}

#[derive(Debug, Default)]
struct Known {
    /// False after a flush: nothing below may be relied on until re-read.
    synced: bool,
    namespace: u64,
    pattern_epoch: u64,
    tags: HashMap<String, u64>,
    tombstones: Vec<Tombstone>,
}

/// The outcome of checking an entry's stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    Valid,
    Invalid,
    /// Something needed is not known here (or is behind the entry): re-read
    /// the generations from Redis and check again.
    Unknown,
}

#[derive(Debug)]
pub(crate) struct Generations {
    /// Without Redis this copy is the authority: unknown tags are at 0.
    authoritative: bool,
    known: RwLock<Known>,
}

impl Generations {
    pub(crate) fn new(authoritative: bool) -> Self {
        Self { authoritative, known: RwLock::new(Known { synced: authoritative, ..Known::default() }) }
    }

    /// The stamps a write made now would carry, if everything is known.
    pub(crate) fn stamps_for(&self, tags: &[String]) -> Option<Stamps> {
        let known = self.known.read();
        if !known.synced {
            return None;
        }
        let mut out = Vec::with_capacity(tags.len());
        for tag in tags {
            match known.tags.get(tag) {
                Some(g) => out.push((tag.clone(), *g)),
                None if self.authoritative => out.push((tag.clone(), 0)),
                None => return None,
            }
        }
        Some(Stamps { namespace: known.namespace, pattern_epoch: known.pattern_epoch, tags: out })
    }

    /// Checks an entry written under `stamps` for `key`.
    pub(crate) fn check(&self, key: &str, stamps: &Stamps, now_ms: u64) -> Check {
        let known = self.known.read();
        if !known.synced {
            return Check::Unknown;
        }
        if stamps.namespace != known.namespace {
            return if stamps.namespace > known.namespace { Check::Unknown } else { Check::Invalid };
        }
        if stamps.pattern_epoch > known.pattern_epoch {
            return Check::Unknown;
        }
        for (tag, generation) in &stamps.tags {
            match known.tags.get(tag) {
                Some(k) if k == generation => {}
                Some(k) if k > generation => return Check::Invalid,
                Some(_) => return Check::Unknown,
                None if self.authoritative => {
                    if *generation != 0 {
                        return Check::Invalid;
                    }
                }
                None => return Check::Unknown,
            }
        }
        if stamps.pattern_epoch < known.pattern_epoch {
            for t in &known.tombstones {
                if t.epoch > stamps.pattern_epoch && t.expires_ms > now_ms && t.pattern.matches(key) {
                    return Check::Invalid;
                }
            }
        }
        Check::Valid
    }

    /// Tags among `tags` whose generation is not known here, or all of them
    /// when nothing is known.
    pub(crate) fn needs_sync(&self, tags: &[String]) -> bool {
        let known = self.known.read();
        !known.synced || (!self.authoritative && tags.iter().any(|t| !known.tags.contains_key(t)))
    }

    /// Merges generations read from Redis.
    pub(crate) fn merge_sync(
        &self,
        namespace: u64,
        pattern_epoch: u64,
        tags: &[(String, u64)],
        tombstones: Vec<Tombstone>,
        now_ms: u64,
    ) {
        let mut known = self.known.write();
        known.synced = true;
        known.namespace = known.namespace.max(namespace);
        known.pattern_epoch = known.pattern_epoch.max(pattern_epoch);
        for (tag, g) in tags {
            let slot = known.tags.entry(tag.clone()).or_insert(0);
            *slot = (*slot).max(*g);
        }
        for t in tombstones {
            Self::add_tombstone(&mut known, t, now_ms);
        }
    }

    pub(crate) fn apply_namespace(&self, generation: u64) {
        let mut known = self.known.write();
        known.namespace = known.namespace.max(generation);
    }

    pub(crate) fn apply_tag(&self, tag: &str, generation: u64) {
        let mut known = self.known.write();
        match known.tags.get_mut(tag) {
            Some(g) => *g = (*g).max(generation),
            // Unknown tags are read from Redis when first needed; recording
            // this one is still right (it is the newest value).
            None => {
                known.tags.insert(tag.to_owned(), generation);
            }
        }
    }

    pub(crate) fn apply_tombstone(&self, tombstone: Tombstone, now_ms: u64) {
        let mut known = self.known.write();
        known.pattern_epoch = known.pattern_epoch.max(tombstone.epoch);
        Self::add_tombstone(&mut known, tombstone, now_ms);
    }

    /// Local-only mode: the next generation of a tag, namespace or pattern.
    pub(crate) fn bump_local_tag(&self, tag: &str) -> u64 {
        let mut known = self.known.write();
        let g = known.tags.entry(tag.to_owned()).or_insert(0);
        *g += 1;
        *g
    }

    pub(crate) fn bump_local_namespace(&self) -> u64 {
        let mut known = self.known.write();
        known.namespace += 1;
        known.namespace
    }

    pub(crate) fn bump_local_pattern(&self, pattern: KeyPattern, expires_ms: u64, now_ms: u64) -> u64 {
        let mut known = self.known.write();
        known.pattern_epoch += 1;
        let epoch = known.pattern_epoch;
        Self::add_tombstone(&mut known, Tombstone { pattern, epoch, expires_ms }, now_ms);
        epoch
    }

    /// Forgets everything (after the bus dropped or a message was missed).
    pub(crate) fn forget(&self) {
        if self.authoritative {
            return;
        }
        let mut known = self.known.write();
        *known = Known::default();
    }

    fn add_tombstone(known: &mut Known, t: Tombstone, now_ms: u64) {
        known.tombstones.retain(|old| old.expires_ms > now_ms);
        match known.tombstones.iter_mut().find(|old| old.pattern == t.pattern) {
            Some(old) if old.epoch >= t.epoch => {}
            Some(old) => *old = t,
            None => known.tombstones.push(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[(&str, u64)]) -> Vec<(String, u64)> {
        list.iter().map(|(t, g)| ((*t).to_owned(), *g)).collect()
    }

    #[test]
    fn local_generations_invalidate_by_tag_namespace_and_pattern() {
        let g = Generations::new(true);
        let s = g.stamps_for(&["a".into(), "b".into()]).unwrap();
        assert_eq!(g.check("k", &s, 0), Check::Valid);
        g.bump_local_tag("b");
        assert_eq!(g.check("k", &s, 0), Check::Invalid);
        let s = g.stamps_for(&["a".into()]).unwrap();
        g.bump_local_pattern(KeyPattern::new("k*").unwrap(), 100, 0);
        assert_eq!(g.check("other", &s, 50), Check::Valid, "pattern does not match");
        assert_eq!(g.check("key", &s, 50), Check::Invalid);
        assert_eq!(g.check("key", &s, 100), Check::Valid, "tombstone expired");
        let s = g.stamps_for(&[]).unwrap();
        g.bump_local_namespace();
        assert_eq!(g.check("x", &s, 0), Check::Invalid);
    }

    #[test]
    fn shared_generations_need_a_sync_and_only_move_forward() {
        let g = Generations::new(false);
        assert!(g.stamps_for(&[]).is_none());
        assert!(g.needs_sync(&[]));
        g.merge_sync(3, 1, &tags(&[("a", 5)]), vec![], 0);
        assert!(!g.needs_sync(&["a".into()]));
        assert!(g.needs_sync(&["b".into()]));
        let s = g.stamps_for(&["a".into()]).unwrap();
        assert_eq!(s.tags, tags(&[("a", 5)]));
        // An older read does not undo a newer bus message.
        g.apply_tag("a", 7);
        g.merge_sync(3, 1, &tags(&[("a", 6)]), vec![], 0);
        assert_eq!(g.check("k", &s, 0), Check::Invalid);
        // An entry from an instance that knows more is not trusted blindly.
        let ahead = Stamps { namespace: 4, pattern_epoch: 1, tags: vec![] };
        assert_eq!(g.check("k", &ahead, 0), Check::Unknown);
        g.forget();
        assert_eq!(g.check("k", &s, 0), Check::Unknown);
    }
}
