//! `ResponseFuture`: the inner service's future on a bypass, the response
//! of a hit answered at once, the cache's lookup otherwise.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::{HeaderValue, Response, header};
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::CacheBody;
use super::service::{CACHE_STATUS, X_CACHE};

type Lookup<B, E> = Pin<Box<dyn Future<Output = Result<Response<CacheBody<B>>, E>> + Send>>;

pin_project! {
    /// The response future of [`Cache`](super::Cache).
    pub struct ResponseFuture<F, B: Body, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B: Body, E> {
        Bypass { #[pin] future: F, status: Option<HeaderValue> },
        Cached { future: Lookup<B, E> },
        Ready { response: Option<Response<CacheBody<B>>> },
    }
}

impl<F, B: Body, E> ResponseFuture<F, B, E> {
    pub(crate) fn bypass(future: F, status: HeaderValue) -> Self {
        Self { kind: Kind::Bypass { future, status: Some(status) } }
    }

    pub(crate) fn cached(future: Lookup<B, E>) -> Self {
        Self { kind: Kind::Cached { future } }
    }

    /// A response made without waiting (a hit answered from the front).
    pub(crate) fn ready(response: Response<CacheBody<B>>) -> Self {
        Self { kind: Kind::Ready { response: Some(response) } }
    }
}

impl<F, B: Body, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Bypass { .. } => "bypass",
            Kind::Cached { .. } => "cached",
            Kind::Ready { .. } => "ready",
        };
        f.debug_struct("ResponseFuture").field("kind", &kind).finish()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<CacheBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Bypass { future, status } => {
                let mut response = ready!(future.poll(cx))?.map(CacheBody::inner);
                let headers = response.headers_mut();
                headers.insert(X_CACHE.clone(), HeaderValue::from_static("BYPASS"));
                if !headers.contains_key(header::AGE) {
                    headers.insert(header::AGE, HeaderValue::from_static("0"));
                }
                if let Some(status) = status.take() {
                    headers.append(CACHE_STATUS.clone(), status);
                }
                Poll::Ready(Ok(response))
            }
            KindProj::Cached { future } => future.as_mut().poll(cx),
            KindProj::Ready { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => panic!("`ResponseFuture` polled after completion"),
            },
        }
    }
}
