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
        let Some(in_flight) = this.in_flight.as_mut() else {
            return inner.poll_frame(cx);
        };
        // Code streaming the body still counts towards this request.
        let entered = crate::scope::Entered::new(&mut in_flight.scope);
        let frame = inner.as_mut().poll_frame(cx);
        drop(entered);
        let frame = ready!(frame);
        let ended = match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    in_flight.body_bytes += data.remaining() as u64;
                }
                inner.is_end_stream()
            }
            // The end of the body, or an error that ends it.
            None | Some(Err(_)) => true,
        };
        if ended {
            // Dropping the in-flight record records the request.
            *this.in_flight = None;
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
