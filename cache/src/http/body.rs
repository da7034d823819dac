//! The response body of [`Cache`](super::Cache): bytes from the cache, or the
//! inner service's body, possibly after a prefix the layer read while
//! deciding whether it could store it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body of a response that went through [`Cache`](super::Cache).
    /// Whatever the path, the client receives the same bytes the inner
    /// service produced.
    pub struct CacheBody<B: Body> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B: Body> {
        /// Bytes held in full (a cached body, or a small one read whole),
        /// with the trailers the inner body ended with.
        Full { data: Option<Bytes>, trailers: Option<HeaderMap> },
        /// The inner body, untouched.
        Inner { #[pin] body: B },
        /// What was read already, then the rest of the inner body.
        Resumed { prefix: Option<Bytes>, rest: Pin<Box<B>> },
        /// What was read before the inner body failed, then its error.
        Failed { prefix: Option<Bytes>, error: Option<B::Error> },
    }
}

impl<B: Body> CacheBody<B> {
    pub(crate) fn full(data: Bytes) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self { kind: Kind::Full { data, trailers: None } }
    }

    pub(crate) fn empty() -> Self {
        Self { kind: Kind::Full { data: None, trailers: None } }
    }

    pub(crate) fn with_trailers(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        let data = (!data.is_empty()).then_some(data);
        Self { kind: Kind::Full { data, trailers } }
    }

    pub(crate) fn inner(body: B) -> Self {
        Self { kind: Kind::Inner { body } }
    }

    pub(crate) fn resumed(prefix: Bytes, rest: Pin<Box<B>>) -> Self {
        let prefix = (!prefix.is_empty()).then_some(prefix);
        Self { kind: Kind::Resumed { prefix, rest } }
    }

    pub(crate) fn failed(prefix: Bytes, error: B::Error) -> Self {
        let prefix = (!prefix.is_empty()).then_some(prefix);
        Self { kind: Kind::Failed { prefix, error: Some(error) } }
    }
}

impl<B: Body> std::fmt::Debug for CacheBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Full { .. } => "full",
            Kind::Inner { .. } => "inner",
            Kind::Resumed { .. } => "resumed",
            Kind::Failed { .. } => "failed",
        };
        f.debug_struct("CacheBody").field("kind", &kind).finish()
    }
}

impl<B: Body> Body for CacheBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Full { data, trailers } => {
                if let Some(d) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(d))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            KindProj::Inner { body } => poll_bytes(body, cx),
            KindProj::Resumed { prefix, rest } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                poll_bytes(rest.as_mut(), cx)
            }
            KindProj::Failed { prefix, error } => {
                if let Some(p) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(p))));
                }
                Poll::Ready(error.take().map(Err))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data, trailers } => data.is_none() && trailers.is_none(),
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Resumed { prefix, rest } => prefix.is_none() && rest.is_end_stream(),
            Kind::Failed { prefix, error } => prefix.is_none() && error.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data, .. } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Inner { body } => body.size_hint(),
            Kind::Resumed { prefix, rest } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let inner = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(inner.lower().saturating_add(extra));
                if let Some(upper) = inner.upper() {
                    hint.set_upper(upper.saturating_add(extra));
                }
                hint
            }
            Kind::Failed { prefix, .. } => SizeHint::with_exact(prefix.as_ref().map_or(0, |p| p.len() as u64)),
        }
    }
}

/// A frame of the inner body, its data as `Bytes` (no copy when it already is).
fn poll_bytes<B: Body>(body: Pin<&mut B>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
    body.poll_frame(cx).map(|frame| frame.map(|r| r.map(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))))
}
