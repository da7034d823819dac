//! The connections checked out right now, so that one held too long is
//! reported while it is still held (a leak is never returned), not only when
//! it comes back.

use std::time::{Duration, Instant};

/// One checked-out connection.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) since: Instant,
    /// The span current at checkout.
    pub(crate) holder: tracing::Span,
    /// Already counted and warned about.
    pub(crate) reported: bool,
}

/// A slab of [`Held`]: O(1) checkout and return, keys reused.
#[derive(Debug, Default)]
pub(crate) struct HeldConnections {
    slots: Vec<Option<Held>>,
    free: Vec<usize>,
}

impl HeldConnections {
    pub(crate) fn insert(&mut self, held: Held) -> usize {
        match self.free.pop() {
            Some(key) => {
                self.slots[key] = Some(held);
                key
            }
            None => {
                self.slots.push(Some(held));
                self.slots.len() - 1
            }
        }
    }

    pub(crate) fn remove(&mut self, key: usize) -> Option<Held> {
        let held = self.slots.get_mut(key)?.take()?;
        self.free.push(key);
        Some(held)
    }

    /// Marks as reported, and returns, the connections held at least `limit`
    /// at `now` that were not reported yet.
    pub(crate) fn newly_overdue(&mut self, now: Instant, limit: Duration) -> Vec<(Duration, tracing::Span)> {
        self.slots
            .iter_mut()
            .flatten()
            .filter(|held| !held.reported && now.saturating_duration_since(held.since) >= limit)
            .map(|held| {
                held.reported = true;
                (now.saturating_duration_since(held.since), held.holder.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(since: Instant) -> Held {
        Held { since, holder: tracing::Span::none(), reported: false }
    }

    #[test]
    fn keys_are_reused_and_removal_is_exact() {
        let t0 = Instant::now();
        let mut slab = HeldConnections::default();
        let a = slab.insert(held(t0));
        let b = slab.insert(held(t0));
        assert_ne!(a, b);
        assert!(slab.remove(a).is_some());
        assert!(slab.remove(a).is_none(), "removed twice");
        let c = slab.insert(held(t0));
        assert_eq!(c, a, "the free key is reused");
        assert!(slab.remove(b).is_some());
        assert!(slab.remove(99).is_none());
    }

    #[test]
    fn an_overdue_connection_is_reported_once() {
        let t0 = Instant::now();
        let limit = Duration::from_secs(30);
        let mut slab = HeldConnections::default();
        slab.insert(held(t0));
        let young = slab.insert(held(t0 + Duration::from_secs(20)));
        assert!(slab.newly_overdue(t0 + Duration::from_secs(29), limit).is_empty());
        let overdue = slab.newly_overdue(t0 + Duration::from_secs(30), limit);
        assert_eq!(overdue.len(), 1);
        assert_eq!(overdue[0].0, limit);
        assert!(slab.newly_overdue(t0 + Duration::from_secs(40), limit).is_empty(), "reported again");
        assert_eq!(slab.newly_overdue(t0 + Duration::from_secs(50), limit).len(), 1);
        assert!(slab.remove(young).is_some_and(|held| held.reported));
    }
}
