//! A pool's label sets, rendered once when the pool is registered, so that a
//! scrape writes each sample's labels in one piece instead of label by label.
//!
//! prometheus-client's text encoder writes a label set through four or five
//! small writes per label plus an escaping scan of each value; for the few
//! fixed label sets of a pool (`pool="…"`, with `state` or `reason`), the
//! rendered text is written as is. Any other encoder (the protobuf ones) gets
//! the same labels one by one.

use std::fmt::{self, Write};

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabel, EncodeLabelSet, LabelSetEncoder};

use crate::state::{ERROR_REASONS, TIMEOUT_REASONS};

/// The `state` label values, in [`PoolLabels`] order.
const STATES: [&str; 4] = ["idle", "used", "total", "waiting"];

/// Which of a pool's label sets a sample carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Set {
    /// `pool` only.
    Pool,
    /// `pool` and `state="idle"`.
    Idle,
    /// `pool` and `state="used"`.
    Used,
    /// `pool` and `state="total"`.
    Total,
    /// `pool` and `state="waiting"`.
    Waiting,
    /// `pool` and the `reason` of [`TIMEOUT_REASONS`]`[i]`.
    Timeout(usize),
    /// `pool` and the `reason` of [`ERROR_REASONS`]`[i]`.
    Error(usize),
}

impl Set {
    /// The position of the set in [`PoolLabels::rendered`], and its label
    /// besides `pool`.
    fn index_and_extra(self) -> (usize, Option<(&'static str, &'static str)>) {
        match self {
            Set::Pool => (0, None),
            Set::Idle => (1, Some(("state", STATES[0]))),
            Set::Used => (2, Some(("state", STATES[1]))),
            Set::Total => (3, Some(("state", STATES[2]))),
            Set::Waiting => (4, Some(("state", STATES[3]))),
            Set::Timeout(i) => (1 + STATES.len() + i, Some(("reason", TIMEOUT_REASONS[i]))),
            Set::Error(i) => (1 + STATES.len() + TIMEOUT_REASONS.len() + i, Some(("reason", ERROR_REASONS[i]))),
        }
    }

    /// Every set, in [`PoolLabels::rendered`] order.
    fn all() -> impl Iterator<Item = Set> {
        [Set::Pool, Set::Idle, Set::Used, Set::Total, Set::Waiting]
            .into_iter()
            .chain((0..TIMEOUT_REASONS.len()).map(Set::Timeout))
            .chain((0..ERROR_REASONS.len()).map(Set::Error))
    }
}

/// One pool's label sets, each rendered as OpenMetrics text
/// (`pool="primary",state="idle"`).
#[derive(Debug)]
pub(crate) struct PoolLabels {
    rendered: Box<[Box<str>]>,
}

impl PoolLabels {
    pub(crate) fn new(pool: &str) -> Self {
        let rendered = Set::all()
            .map(|set| {
                let mut text = String::from("pool=\"");
                escape_into(&mut text, pool);
                text.push('"');
                if let (_, Some((key, value))) = set.index_and_extra() {
                    // Keys and these values need no escaping.
                    text.push(',');
                    text.push_str(key);
                    text.push_str("=\"");
                    text.push_str(value);
                    text.push('"');
                }
                text.into_boxed_str()
            })
            .collect();
        Self { rendered }
    }

    /// The label set `set` of the pool called `pool`, to hand to
    /// `MetricEncoder::encode_family`; `text` says whether the encoder writes
    /// the text format (see [`writes_text`]).
    pub(crate) fn get<'a>(&'a self, pool: &'a str, set: Set, text: bool) -> Labels<'a> {
        let (index, extra) = set.index_and_extra();
        Labels { pool, extra, rendered: text.then(|| &*self.rendered[index]) }
    }
}

/// Escapes a label value as OpenMetrics (and prometheus-client's text
/// encoder) does: backslash, double quote and line feed.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// One sample's label set: `pool`, and `state` or `reason`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Labels<'a> {
    pool: &'a str,
    extra: Option<(&'static str, &'static str)>,
    /// The set as text, for an encoder of the text format.
    rendered: Option<&'a str>,
}

impl EncodeLabelSet for Labels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), fmt::Error> {
        if let Some(rendered) = self.rendered {
            // The text encoder writes a label key unchanged, straight into its
            // output, and adds nothing unless a value follows.
            return encoder.encode_label().encode_label_key()?.write_str(rendered);
        }
        ("pool", self.pool).encode(encoder.encode_label())?;
        if let Some(extra) = self.extra {
            extra.encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Whether `encoder` writes the OpenMetrics text format (prometheus-client's
/// `encoding::text`) rather than protobuf.
///
/// prometheus-client's API does not tell; its `Debug` output names the
/// variant (`DescriptorEncoder(Text(..))`). Should that output change, this
/// answers `false` and label sets are written label by label: slower, same
/// bytes.
pub(crate) fn writes_text(encoder: &DescriptorEncoder<'_>) -> bool {
    const TEXT: &[u8] = b"DescriptorEncoder(Text(";
    let mut start = Start { bytes: [0; TEXT.len()], len: 0 };
    // Stops with an error once the buffer is full: only the start is needed.
    let _ = write!(start, "{encoder:?}");
    start.bytes[..start.len] == *TEXT
}

/// The first bytes written to it; an error once full.
struct Start<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Write for Start<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let take = s.len().min(N - self.len);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if self.len == N { Err(fmt::Error) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_rendered_as_the_text_encoder_writes_them() {
        let labels = PoolLabels::new("a\"b\\c\nd é");
        assert_eq!(&*labels.rendered[0], r#"pool="a\"b\\c\nd é""#);
        assert_eq!(&*labels.rendered[1], r#"pool="a\"b\\c\nd é",state="idle""#);
        assert_eq!(&*labels.rendered[4], r#"pool="a\"b\\c\nd é",state="waiting""#);
        assert_eq!(&*labels.rendered[5], r#"pool="a\"b\\c\nd é",reason="wait""#);
        assert_eq!(&*labels.rendered[12], r#"pool="a\"b\\c\nd é",reason="cancelled""#);
        assert_eq!(labels.rendered.len(), Set::all().count());
        for (i, set) in Set::all().enumerate() {
            assert_eq!(set.index_and_extra().0, i, "{set:?} is out of place");
        }
    }

    #[test]
    fn the_start_of_a_long_output_is_kept() {
        let mut start = Start { bytes: [0; 4], len: 0 };
        let tail = "cdef";
        assert!(write!(start, "ab{tail}").is_err());
        assert_eq!(&start.bytes, b"abcd");
        let mut start = Start { bytes: [0; 4], len: 0 };
        assert!(write!(start, "ab").is_ok());
        assert_eq!(&start.bytes[..start.len], b"ab");
    }
}
