//! What reads return and what writes take.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tier {
    /// This process' memory.
    L1,
    /// Redis.
    L2,
    /// The loader, just now (a miss in both tiers).
    Loader,
}

impl Tier {
    /// `l1`, `l2` or `loader`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::L1 => "l1",
            Tier::L2 => "l2",
            Tier::Loader => "loader",
        }
    }
}

/// A value read from the cache, with what an HTTP cache needs to describe it
/// (`Age`, `X-Cache`, `Cache-Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit<V> {
    pub(crate) value: V,
    pub(crate) tier: Tier,
    pub(crate) stale: bool,
    pub(crate) written_at_ms: u64,
    pub(crate) fresh_until_ms: u64,
    pub(crate) read_at_ms: u64,
}

impl<V> Hit<V> {
    /// The value.
    pub fn value(&self) -> &V {
        &self.value
    }

    /// The value, by value.
    pub fn into_value(self) -> V {
        self.value
    }

    /// Which tier answered.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// Whether the value is past its TTL, served within its stale grace
    /// (the loader failed or was slower than the soft timeout).
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// When the value was written.
    pub fn written_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.written_at_ms)
    }

    /// When the value stops being fresh.
    pub fn fresh_until(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.fresh_until_ms)
    }

    /// How old the value was when it was read (for an HTTP `Age` header).
    pub fn age(&self) -> Duration {
        Duration::from_millis(self.read_at_ms.saturating_sub(self.written_at_ms))
    }

    /// How long the value stays fresh after it was read (zero when stale).
    pub fn ttl_remaining(&self) -> Duration {
        Duration::from_millis(self.fresh_until_ms.saturating_sub(self.read_at_ms))
    }

    pub(crate) fn map<U>(self, f: impl FnOnce(V) -> U) -> Hit<U> {
        Hit {
            value: f(self.value),
            tier: self.tier,
            stale: self.stale,
            written_at_ms: self.written_at_ms,
            fresh_until_ms: self.fresh_until_ms,
            read_at_ms: self.read_at_ms,
        }
    }
}

/// How an entry is written: TTL, tags, stale grace.
///
/// ```
/// use std::time::Duration;
/// use brisk_cache::EntryOptions;
///
/// let options = EntryOptions::new(Duration::from_secs(60))
///     .tag("blueprints")
///     .stale_grace(Duration::from_secs(30));
/// assert_eq!(options.tag_list(), ["blueprints"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct EntryOptions {
    pub(crate) ttl: Duration,
    pub(crate) tags: Vec<String>,
    pub(crate) stale_grace: Option<Duration>,
}

impl EntryOptions {
    /// Fresh for `ttl` (jittered down by the cache's jitter, capped for L1).
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, tags: Vec::new(), stale_grace: None }
    }

    /// Adds a tag: `invalidate_tag(tag)` makes the entry a miss everywhere.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        let tag = tag.into();
        if !self.tags.contains(&tag) {
            self.tags.push(tag);
        }
        self
    }

    /// Adds tags.
    pub fn tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        for tag in tags {
            self = self.tag(tag);
        }
        self
    }

    /// How long after its TTL the entry may still be served by `get_or_load`
    /// when the loader fails or is slower than the soft timeout. Overrides the
    /// cache's default.
    pub fn stale_grace(mut self, grace: Duration) -> Self {
        self.stale_grace = Some(grace);
        self
    }

    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The tags.
    pub fn tag_list(&self) -> &[String] {
        &self.tags
    }
}

/// What a bytes loader returns: the value, and whether to cache it.
#[derive(Debug, Clone)]
#[must_use]
pub struct Loaded {
    pub(crate) value: Bytes,
    pub(crate) store: bool,
    pub(crate) ttl: Option<Duration>,
}

impl Loaded {
    /// Cache the value with the call's options.
    pub fn cache(value: Bytes) -> Self {
        Self { value, store: true, ttl: None }
    }

    /// Cache the value with another TTL than the call's (e.g. from `s-maxage`).
    pub fn cache_for(value: Bytes, ttl: Duration) -> Self {
        Self { value, store: true, ttl: Some(ttl) }
    }

    /// Return the value to this caller only: it is not stored, and callers
    /// that waited on this load run their own loader (they may see another
    /// answer, e.g. a private response).
    pub fn pass(value: Bytes) -> Self {
        Self { value, store: false, ttl: None }
    }
}
