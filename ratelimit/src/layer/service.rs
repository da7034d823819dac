use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::body::RateLimitBody;
use super::future::{Check, ResponseFuture};
use super::layer::{Config, RequestCost};
use crate::RateLimiter;
use crate::key::KeyExtractor;

/// The middleware made by [`RateLimitLayer`](super::RateLimitLayer).
///
/// Clones share one limiter.
#[derive(Debug, Clone)]
pub struct RateLimit<S, K, C> {
    pub(crate) inner: S,
    pub(crate) limiter: RateLimiter,
    pub(crate) key: K,
    pub(crate) cost: C,
    pub(crate) config: Arc<Config>,
}

impl<S, K, C> RateLimit<S, K, C> {
    /// The limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, K, C, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, K, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    K: KeyExtractor<ReqBody>,
    C: RequestCost<ReqBody>,
{
    type Response = Response<RateLimitBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The service polled ready is the one that will be called, after the check.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let key = self.key.extract(&request);
        let cost = NonZeroU32::new(self.cost.cost(&request)).unwrap_or(NonZeroU32::MIN);
        // Decided here, when the request is called, if no I/O is needed
        // (the in-memory store, a known blocked key): no future to box, no
        // limiter to clone. Otherwise the store is asked on the first poll.
        let check = key.map(|key| match self.limiter.check_n_at_once(&key, cost) {
            Ok(result) => Check::Decided(result),
            Err(now) => {
                let limiter = self.limiter.clone();
                Check::Waiting(Box::pin(async move { limiter.check_n_by_store(&key, cost, now).await }))
            }
        });
        ResponseFuture::new(check, inner, request, *self.config)
    }
}
