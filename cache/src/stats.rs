//! Counters, and the snapshot users read.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::breaker::BreakerState;
use crate::hit::Tier;

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) l1_hits: AtomicU64,
    pub(crate) l1_misses: AtomicU64,
    pub(crate) l2_hits: AtomicU64,
    pub(crate) l2_misses: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) load_errors: AtomicU64,
    pub(crate) load_timeouts: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) early_refreshes: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) l2_errors: AtomicU64,
    pub(crate) l2_timeouts: AtomicU64,
    pub(crate) l2_rejected: AtomicU64,
    pub(crate) corrupt: AtomicU64,
    pub(crate) fenced: AtomicU64,
    pub(crate) oversized: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) bus_messages: AtomicU64,
    pub(crate) bus_flushes: AtomicU64,
    pub(crate) lease_acquired: AtomicU64,
    pub(crate) lease_waits: AtomicU64,
    pub(crate) cleanup_deleted: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn hit(&self, tier: Tier) {
        match tier {
            Tier::L1 => bump(&self.l1_hits),
            Tier::L2 => {
                bump(&self.l1_misses);
                bump(&self.l2_hits);
            }
            Tier::Loader => {}
        }
    }

    pub(crate) fn miss(&self, l2_asked: bool) {
        bump(&self.l1_misses);
        if l2_asked {
            bump(&self.l2_misses);
        }
    }
}

/// A snapshot of the cache's counters and gauges. Counters count since the
/// cache was built; clones of a cache share them.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads answered by L1.
    pub l1_hits: u64,
    /// Reads L1 could not answer.
    pub l1_misses: u64,
    /// Reads answered by L2.
    pub l2_hits: u64,
    /// Reads L2 was asked and could not answer.
    pub l2_misses: u64,
    /// Loader calls that returned a value.
    pub loads: u64,
    /// Loader calls that failed.
    pub load_errors: u64,
    /// Loader calls stopped by the hard timeout.
    pub load_timeouts: u64,
    /// Stale values served (loader error or soft timeout).
    pub stale_served: u64,
    /// Background refreshes started before expiry.
    pub early_refreshes: u64,
    /// Entries in L1 (approximate).
    pub entries: u64,
    /// Bytes in L1, as weighed (approximate).
    pub bytes: u64,
    /// L1 entries evicted for space.
    pub evictions: u64,
    /// Redis calls that failed.
    pub l2_errors: u64,
    /// Redis calls that timed out.
    pub l2_timeouts: u64,
    /// Redis calls not made because the breaker was open.
    pub l2_rejected: u64,
    /// L2 values that were foreign or corrupt (deleted, treated as misses).
    pub corrupt: u64,
    /// Fills not written back because an invalidation happened while they ran.
    pub fenced: u64,
    /// Values not cached because they exceed the size cap.
    pub oversized: u64,
    /// Invalidations made through this instance.
    pub invalidations: u64,
    /// Invalidation messages received from other instances.
    pub bus_messages: u64,
    /// L1 flushes because the bus disconnected or a message was missed.
    pub bus_flushes: u64,
    /// Whether the invalidation bus is subscribed (always true without Redis).
    pub bus_connected: bool,
    /// Distributed leases won.
    pub lease_acquired: u64,
    /// Loads that waited on another instance's lease instead of loading.
    pub lease_waits: u64,
    /// Keys removed by the background clean-up.
    pub cleanup_deleted: u64,
    /// The L2 circuit breaker (closed without Redis).
    pub breaker: BreakerState,
}

impl CacheStats {
    /// Hits over reads, both tiers, in `0.0..=1.0` (0 with no reads).
    pub fn hit_ratio(&self) -> f64 {
        let hits = self.l1_hits + self.l2_hits;
        let reads = self.l1_hits + self.l1_misses;
        if reads == 0 { 0.0 } else { hits as f64 / reads as f64 }
    }

    pub(crate) fn from_counters(c: &Counters) -> Self {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Self {
            l1_hits: r(&c.l1_hits),
            l1_misses: r(&c.l1_misses),
            l2_hits: r(&c.l2_hits),
            l2_misses: r(&c.l2_misses),
            loads: r(&c.loads),
            load_errors: r(&c.load_errors),
            load_timeouts: r(&c.load_timeouts),
            stale_served: r(&c.stale_served),
            early_refreshes: r(&c.early_refreshes),
            entries: 0,
            bytes: 0,
            evictions: r(&c.evictions),
            l2_errors: r(&c.l2_errors),
            l2_timeouts: r(&c.l2_timeouts),
            l2_rejected: r(&c.l2_rejected),
            corrupt: r(&c.corrupt),
            fenced: r(&c.fenced),
            oversized: r(&c.oversized),
            invalidations: r(&c.invalidations),
            bus_messages: r(&c.bus_messages),
            bus_flushes: r(&c.bus_flushes),
            bus_connected: true,
            lease_acquired: r(&c.lease_acquired),
            lease_waits: r(&c.lease_waits),
            cleanup_deleted: r(&c.cleanup_deleted),
            breaker: BreakerState::Closed,
        }
    }
}
