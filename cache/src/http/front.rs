//! The front of the layer's L1 reads: recent L1 hits, decoded, so that a
//! `GET` answered from L1 neither reads L1 again nor decodes the stored
//! response again.
//!
//! A slot holds one key's entry as [`TieredCache::l1_fresh`] read it, with
//! what [`TieredCache::l1_still_fresh`] needs to tell, without reading L1,
//! that the entry still answers: nothing changed in L1 for the key since,
//! and the entry is still fresh and valid by the same generation and
//! tombstone check as every read. So a slot never answers for longer, or
//! after an invalidation, where L1 would not have. It is the same data L1
//! holds, kept for at most [`Front::SLOTS`] keys (so at most that many
//! bodies are kept alive after L1 dropped them).
//!
//! [`TieredCache::l1_fresh`]: crate::TieredCache
//! [`TieredCache::l1_still_fresh`]: crate::TieredCache

use std::sync::Arc;

use bytes::Bytes;
use http::response::Parts;
use parking_lot::Mutex;

use super::layer::Config;
use super::record::{self, Record};
use crate::cache::{L1Read, L1Seen};

/// Recent L1 hits of one layer.
pub(crate) struct Front {
    slots: Box<[Mutex<Option<Held>>]>,
}

/// One key's entry as read from L1, decoded.
struct Held {
    hash: u64,
    key: Box<str>,
    seen: L1Seen,
    rec: Record,
    /// The status and headers of a `HIT` for the second they were built in.
    ready: Option<Ready>,
}

/// The status and headers of a fresh hit (its key shown), which change only
/// with the whole seconds of `Age` and of the TTL left.
struct Ready {
    age: u64,
    ttl: u64,
    parts: Parts,
}

/// A `HIT` response, in parts.
pub(crate) struct Answer {
    pub(crate) parts: Parts,
    pub(crate) body: Bytes,
}

impl Default for Front {
    fn default() -> Self {
        Self { slots: (0..Self::SLOTS).map(|_| Mutex::new(None)).collect() }
    }
}

impl Front {
    pub(crate) const SLOTS: usize = 128;

    fn slot(&self, hash: u64) -> &Mutex<Option<Held>> {
        // The high bits: the low ones choose L1's change stripes.
        &self.slots[((hash >> 40) as usize) % Self::SLOTS]
    }

    /// The decoded record of what `read` found under `key` (whose hash is
    /// `hash`), decoding only when the slot does not hold that same entry;
    /// the slot then holds it. `None` for bytes this version did not write.
    pub(crate) fn record(&self, key: &str, hash: u64, read: &L1Read) -> Option<Record> {
        let slot = self.slot(hash);
        if let Some(held) = slot.lock().as_mut()
            && held.hash == hash
            && *held.key == *key
            && Arc::ptr_eq(&held.seen.env, &read.seen.env)
        {
            // The same entry, read again: what was noted before this read
            // is as good, and newer.
            held.seen = read.seen.clone();
            return Some(held.rec.clone());
        }
        let rec = record::decode(read.hit.value())?;
        *slot.lock() = Some(Held { hash, key: key.into(), seen: read.seen.clone(), rec: rec.clone(), ready: None });
        Some(rec)
    }

    /// The response to a `GET` of `key` (its hash `hash`, no principal, no
    /// conditions) when the slot holds the key's entry, it still answers (see
    /// the module docs), and it does not vary. `None`: ask L1.
    pub(crate) fn answer(&self, cfg: &Config, key: &str, hash: u64) -> Option<Answer> {
        let mut slot = self.slot(hash).lock();
        let held = slot.as_mut()?;
        if held.hash != hash || *held.key != *key || !held.rec.vary.is_empty() {
            return None;
        }
        let now = cfg.cache.l1_still_fresh(key, hash, &held.seen)?;
        let env = &held.seen.env;
        // As `Hit::age` and `Hit::ttl_remaining` give them.
        let age = now.saturating_sub(env.written_at_ms()) / 1000;
        let ttl = env.fresh_until_ms().saturating_sub(now) / 1000;
        let parts = match &held.ready {
            Some(ready) if ready.age == age && ready.ttl == ttl => ready.parts.clone(),
            _ => {
                let parts = super::service::hit_parts(cfg, &held.rec, key, age, ttl);
                held.ready = Some(Ready { age, ttl, parts: parts.clone() });
                parts
            }
        };
        Some(Answer { parts, body: held.rec.body.clone() })
    }
}
