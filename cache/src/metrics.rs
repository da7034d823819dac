//! Prometheus metrics through `prometheus-client`, read at scrape time.
//!
//! ```
//! use prometheus_client::registry::Registry;
//! use brisk_cache::TieredCache;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let cache = TieredCache::builder().build().unwrap();
//! let mut registry = Registry::default();
//! cache.register(&mut registry);
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("brisk_cache_requests_total{tier=\"l1\",result=\"miss\"} 0"));
//! # }
//! ```

use std::sync::Weak;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::breaker::BreakerState;
use crate::cache::TieredCache;
use crate::codec::Codec;
use crate::inner::Inner;

impl<C: Codec> TieredCache<C> {
    /// Registers the cache's metrics (`brisk_cache_*`). They are read from
    /// the cache at each scrape; the registry does not keep the cache alive.
    /// To register several caches in one registry, give each a
    /// `Registry::sub_registry_with_label`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(CacheCollector { inner: std::sync::Arc::downgrade(&self.inner) }));
    }
}

#[derive(Debug)]
struct CacheCollector {
    inner: Weak<Inner>,
}

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    labels: &[(&str, &str)],
    v: u64,
) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    let mut m = enc.encode_descriptor(name, help, None, c.metric_type())?;
    if labels.is_empty() { c.encode(m) } else { c.encode(m.encode_family(&labels.to_vec())?) }
}

impl Collector for CacheCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(inner) = self.inner.upgrade() else { return Ok(()) };
        let s = inner.stats();
        {
            let c = ConstCounter::new(0u64);
            let mut family =
                enc.encode_descriptor("brisk_cache_requests", "Cache reads by tier and result", None, c.metric_type())?;
            for (tier, result, v) in [
                ("l1", "hit", s.l1_hits),
                ("l1", "miss", s.l1_misses),
                ("l2", "hit", s.l2_hits),
                ("l2", "miss", s.l2_misses),
            ] {
                let labels = [("tier", tier), ("result", result)];
                ConstCounter::new(v).encode(family.encode_family(&labels)?)?;
            }
        }
        counter(&mut enc, "brisk_cache_loads", "Loader calls that returned a value", &[], s.loads)?;
        counter(&mut enc, "brisk_cache_load_errors", "Loader calls that failed", &[], s.load_errors)?;
        counter(
            &mut enc,
            "brisk_cache_load_timeouts",
            "Loader calls stopped by the hard timeout",
            &[],
            s.load_timeouts,
        )?;
        counter(&mut enc, "brisk_cache_stale_served", "Stale values served", &[], s.stale_served)?;
        counter(&mut enc, "brisk_cache_early_refreshes", "Background refreshes before expiry", &[], s.early_refreshes)?;
        counter(&mut enc, "brisk_cache_evictions", "L1 entries evicted for space", &[], s.evictions)?;
        {
            let c = ConstCounter::new(0u64);
            let mut family = enc.encode_descriptor(
                "brisk_cache_l2_errors",
                "Redis calls that gave no answer, by reason",
                None,
                c.metric_type(),
            )?;
            for (reason, v) in [("error", s.l2_errors), ("timeout", s.l2_timeouts), ("breaker_open", s.l2_rejected)] {
                ConstCounter::new(v).encode(family.encode_family(&[("reason", reason)])?)?;
            }
        }
        counter(&mut enc, "brisk_cache_corrupt", "Foreign or corrupt values found in Redis (deleted)", &[], s.corrupt)?;
        counter(
            &mut enc,
            "brisk_cache_fenced_fills",
            "Fills not written back after a concurrent invalidation",
            &[],
            s.fenced,
        )?;
        counter(&mut enc, "brisk_cache_oversized", "Values not cached for their size", &[], s.oversized)?;
        counter(&mut enc, "brisk_cache_invalidations", "Invalidations made by this instance", &[], s.invalidations)?;
        counter(
            &mut enc,
            "brisk_cache_bus_messages",
            "Invalidations received from other instances",
            &[],
            s.bus_messages,
        )?;
        counter(
            &mut enc,
            "brisk_cache_bus_flushes",
            "L1 flushes after a bus disconnect or a missed message",
            &[],
            s.bus_flushes,
        )?;
        counter(&mut enc, "brisk_cache_lease_acquired", "Distributed fill leases won", &[], s.lease_acquired)?;
        counter(
            &mut enc,
            "brisk_cache_lease_waits",
            "Loads that waited on another instance's lease",
            &[],
            s.lease_waits,
        )?;
        counter(
            &mut enc,
            "brisk_cache_cleanup_deleted_keys",
            "Keys removed by the background clean-up",
            &[],
            s.cleanup_deleted,
        )?;
        {
            let g = ConstGauge::new(i64::try_from(s.entries).unwrap_or(i64::MAX));
            g.encode(enc.encode_descriptor("brisk_cache_entries", "Entries in L1", None, g.metric_type())?)?;
            let g = ConstGauge::new(i64::try_from(s.bytes).unwrap_or(i64::MAX));
            g.encode(enc.encode_descriptor(
                "brisk_cache_size",
                "Size of L1, as weighed",
                Some(&Unit::Bytes),
                g.metric_type(),
            )?)?;
            let g = ConstGauge::new(i64::from(s.bus_connected));
            g.encode(enc.encode_descriptor(
                "brisk_cache_bus_connected",
                "1 while the invalidation bus is subscribed (or there is no Redis)",
                None,
                g.metric_type(),
            )?)?;
            let g = ConstGauge::new(0i64);
            let mut family = enc.encode_descriptor(
                "brisk_cache_breaker_state",
                "1 for the L2 circuit breaker's current state",
                None,
                g.metric_type(),
            )?;
            for state in [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen] {
                ConstGauge::new(i64::from(s.breaker == state))
                    .encode(family.encode_family(&[("state", state.as_str())])?)?;
            }
        }
        Ok(())
    }
}
