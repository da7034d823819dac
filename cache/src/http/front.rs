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
//! A `GET` with a default key finds its slot by the hash of its target (the
//! URI's path and query, see [`request::with_target`]) and compares the
//! target with the stored key, so a hit builds no key.
//!
//! [`TieredCache::l1_fresh`]: crate::TieredCache
//! [`TieredCache::l1_still_fresh`]: crate::TieredCache

use std::sync::Arc;

use bytes::Bytes;
use http::response::Parts;
use parking_lot::Mutex;

use super::layer::Config;
use super::record::{self, Record};
use super::request;
use crate::cache::{L1Read, L1Seen};

/// Recent L1 hits of one layer.
pub(crate) struct Front {
    slots: Box<[Mutex<Option<Held>>]>,
}

/// One key's entry as read from L1, decoded.
struct Held {
    /// The key's [`Front::slot_hash`].
    slot_hash: u64,
    /// The key's hash for L1's change counts.
    hash: u64,
    key: Box<str>,
    /// Where the key's target starts when it is a default key of a `GET`
    /// (see [`request::with_target`]); 0 otherwise (no target starts there).
    target_at: usize,
    seen: L1Seen,
    rec: Record,
    /// The status and headers of a `HIT` for the second they were built in.
    ready: Option<Ready>,
}

impl Held {
    /// Whether this is the default key of a `GET` with `target`.
    fn is_target(&self, target: &str) -> bool {
        self.target_at != 0 && self.key.get(self.target_at..) == Some(target)
    }
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

    /// The hash that chooses `key`'s slot, and where its target starts
    /// (see [`Held::target_at`]). For a default key of a `GET`, the hash of
    /// its target alone, which a lookup hashes straight from the request's
    /// URI; for any other key, the key's hash for L1's change counts
    /// (`hash`).
    fn slot_hash(cfg: &Config, key: &str, hash: u64) -> (u64, usize) {
        match cfg.key_fn {
            None => match request::get_key_target_at(key, &cfg.key_prefix) {
                Some(at) => (target_hash(&key[at..]), at),
                None => (hash, 0),
            },
            Some(_) => (hash, 0),
        }
    }

    fn slot(&self, slot_hash: u64) -> &Mutex<Option<Held>> {
        // The high bits: the low ones choose L1's change stripes.
        &self.slots[((slot_hash >> 40) as usize) % Self::SLOTS]
    }

    /// The decoded record of what `read` found under `key` (whose hash is
    /// `hash`), decoding only when the slot does not hold that same entry;
    /// the slot then holds it. `None` for bytes this version did not write.
    pub(crate) fn record(&self, cfg: &Config, key: &str, hash: u64, read: &L1Read) -> Option<Record> {
        let (slot_hash, target_at) = Self::slot_hash(cfg, key, hash);
        let slot = self.slot(slot_hash);
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
        *slot.lock() = Some(Held {
            slot_hash,
            hash,
            key: key.into(),
            target_at,
            seen: read.seen.clone(),
            rec: rec.clone(),
            ready: None,
        });
        Some(rec)
    }

    /// The response to a `GET` without credentials or conditions whose
    /// default key has `target` (see [`request::with_target`]), when the
    /// front can answer it. The key is compared, never built.
    pub(crate) fn answer_get(&self, cfg: &Config, target: &str) -> Option<Answer> {
        self.answer(cfg, target_hash(target), |held| held.is_target(target))
    }

    /// The response to a `GET` of `key` (its hash `hash`; no principal, no
    /// conditions) when the front can answer it.
    pub(crate) fn answer_key(&self, cfg: &Config, key: &str, hash: u64) -> Option<Answer> {
        self.answer(cfg, Self::slot_hash(cfg, key, hash).0, |held| *held.key == *key)
    }

    /// The response when the slot of `slot_hash` holds the entry of the key
    /// `is_key` accepts, it still answers (see the module docs), and it does
    /// not vary. `None`: ask L1.
    fn answer(&self, cfg: &Config, slot_hash: u64, is_key: impl FnOnce(&Held) -> bool) -> Option<Answer> {
        let mut slot = self.slot(slot_hash).lock();
        let held = slot.as_mut()?;
        if held.slot_hash != slot_hash || !is_key(held) || !held.rec.vary.is_empty() {
            return None;
        }
        let now = cfg.cache.l1_still_fresh(&held.key, held.hash, &held.seen)?;
        let env = &held.seen.env;
        // As `Hit::age` and `Hit::ttl_remaining` give them.
        let age = now.saturating_sub(env.written_at_ms()) / 1000;
        let ttl = env.fresh_until_ms().saturating_sub(now) / 1000;
        let parts = match &held.ready {
            Some(ready) if ready.age == age && ready.ttl == ttl => ready.parts.clone(),
            _ => {
                let parts = super::service::hit_parts(cfg, &held.rec, &held.key, age, ttl);
                held.ready = Some(Ready { age, ttl, parts: parts.clone() });
                parts
            }
        };
        Some(Answer { parts, body: held.rec.body.clone() })
    }
}

/// The slot hash of a default key's target.
fn target_hash(target: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(target.as_bytes())
}
