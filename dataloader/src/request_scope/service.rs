use std::task::{Context, Poll};

use http::Request;
use tower_service::Service;

/// Middleware that inserts fresh loaders into each request's extensions; see
/// [`RequestLoadersLayer`](super::RequestLoadersLayer).
#[derive(Clone)]
pub struct RequestLoaders<S, F> {
    inner: S,
    factory: F,
}

impl<S, F> RequestLoaders<S, F> {
    /// Wraps `inner`, calling `factory` for every request.
    pub fn new(inner: S, factory: F) -> Self {
        RequestLoaders { inner, factory }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: std::fmt::Debug, F> std::fmt::Debug for RequestLoaders<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestLoaders").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S, F, T, B> Service<Request<B>> for RequestLoaders<S, F>
where
    S: Service<Request<B>>,
    F: Fn() -> T,
    T: Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        req.extensions_mut().insert((self.factory)());
        self.inner.call(req)
    }
}
