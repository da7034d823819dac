use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};

use super::future::InFlight;

pin_project_lite::pin_project! {
    /// The response body of [`Budget`](super::Budget): the inner body, counted
    /// and timed to its last frame.
    #[derive(Debug)]
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
    }
}

impl<B: Body> ResponseBody<B> {
    pub(crate) fn new(inner: B, in_flight: Option<InFlight>) -> Self {
        // A body that is already over will not be polled: the request ends now.
        let in_flight = if inner.is_end_stream() { None } else { in_flight };
        Self { inner, in_flight }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let frame = match this.in_flight.as_mut() {
            // Code streaming the body still counts towards this request.
            Some(in_flight) => crate::scope::enter(&mut in_flight.scope, || inner.as_mut().poll_frame(cx)),
            None => inner.as_mut().poll_frame(cx),
        };
        let frame = ready!(frame);
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(in_flight), Some(data)) = (this.in_flight.as_mut(), frame.data_ref()) {
                    in_flight.body_bytes += data.remaining() as u64;
                }
                if inner.is_end_stream() {
                    *this.in_flight = None;
                }
            }
            // The end of the body, or an error that ends it: record the request.
            None | Some(Err(_)) => *this.in_flight = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
