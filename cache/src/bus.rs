//! The invalidation bus: Redis pub/sub, one channel per cache prefix.
//!
//! Every message carries its sender's id and a per-sender sequence number.
//! A receiver that sees a sender skip a number (a publish that timed out
//! and was lost), or whose subscription drops, may have missed
//! invalidations: it flushes its L1 and forgets the generations it knew.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::inner::Inner;

/// Bus message format version.
const BUS_VERSION: u8 = 1;
/// How often the subscriber checks its connection with a `PING`.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Senders remembered for gap detection; past this, the table restarts.
const MAX_SENDERS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Event {
    Key(String),
    Tag(String, u64),
    Namespace(u64),
    Pattern { pattern: String, epoch: u64, expires_ms: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Message {
    pub(crate) origin: u64,
    pub(crate) seq: u64,
    pub(crate) event: Event,
}

impl Message {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![BUS_VERSION];
        // Encoding integers and strings into memory cannot fail.
        out.extend(postcard::to_allocvec(self).unwrap_or_default());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        if version != BUS_VERSION {
            return None;
        }
        postcard::from_bytes(rest).ok()
    }
}

/// Per-sender sequence tracking.
#[derive(Debug, Default)]
pub(crate) struct Sequences {
    last: HashMap<u64, u64>,
}

impl Sequences {
    /// Records `seq` from `origin`; false when numbers were skipped.
    pub(crate) fn observe(&mut self, origin: u64, seq: u64) -> bool {
        if self.last.len() >= MAX_SENDERS && !self.last.contains_key(&origin) {
            self.last.clear();
        }
        match self.last.insert(origin, seq) {
            Some(prev) => seq == prev.wrapping_add(1),
            None => true,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.last.clear();
    }
}

/// The subscriber: runs until the cache is dropped.
pub(crate) async fn run(inner: Weak<Inner>, clients: Vec<redis::Client>, channel: String, timeout: Duration) {
    let mut attempt: u32 = 0;
    let mut node = 0usize;
    let mut sequences = Sequences::default();
    loop {
        if clients.is_empty() {
            return;
        }
        let client = &clients[node % clients.len()];
        let connected = async {
            let mut pubsub = tokio::time::timeout(timeout, client.get_async_pubsub()).await.ok()?.ok()?;
            tokio::time::timeout(timeout, pubsub.subscribe(&channel)).await.ok()?.ok()?;
            Some(pubsub)
        }
        .await;
        let Some(pubsub) = connected else {
            if inner.upgrade().is_none() {
                return;
            }
            node += 1;
            attempt = attempt.saturating_add(1);
            let backoff = Duration::from_millis((50u64 << attempt.min(5)).min(2_000));
            tokio::time::sleep(backoff + Duration::from_millis(fastrand::u64(0..50))).await;
            continue;
        };
        attempt = 0;
        // Anything published while we were away is lost: start clean.
        sequences.reset();
        match inner.upgrade() {
            Some(i) => i.bus_up(),
            None => return,
        }
        let (mut sink, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let reason = loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break "subscription closed" };
                    let Some(inner) = inner.upgrade() else { return };
                    match Message::decode(msg.get_payload_bytes()) {
                        Some(m) if m.origin == inner.instance => {}
                        Some(m) => {
                            if !sequences.observe(m.origin, m.seq) {
                                inner.flush_local("a bus message was missed");
                            }
                            inner.apply_remote(m.event).await;
                        }
                        None => tracing::debug!("brisk-cache: ignoring a bus message this build cannot read"),
                    }
                }
                _ = ping.tick() => {
                    if inner.upgrade().is_none() {
                        return;
                    }
                    match tokio::time::timeout(timeout, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        _ => break "ping failed",
                    }
                }
            }
        };
        match inner.upgrade() {
            Some(i) => {
                tracing::warn!(reason, "brisk-cache: invalidation bus lost, L1 flushed, reconnecting");
                i.bus_down();
            }
            None => return,
        }
        node += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_foreign_ones_are_ignored() {
        let m = Message { origin: 7, seq: 3, event: Event::Tag("blueprints".into(), 9) };
        assert_eq!(Message::decode(&m.encode()), Some(m));
        assert_eq!(Message::decode(b""), None);
        assert_eq!(Message::decode(b"\x02abc"), None);
        assert_eq!(Message::decode(b"\x01\xff\xff\xff"), None);
    }

    #[test]
    fn a_skipped_sequence_number_is_a_gap() {
        let mut s = Sequences::default();
        assert!(s.observe(1, 10), "first message from a sender");
        assert!(s.observe(1, 11));
        assert!(s.observe(2, 1));
        assert!(!s.observe(1, 13), "12 was missed");
        assert!(s.observe(1, 14));
    }
}
