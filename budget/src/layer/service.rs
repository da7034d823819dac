use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::{InFlight, ResponseFuture};
use super::{ResponseBody, RouteTemplate};
use crate::scope::{self, LazyScope};
use crate::state::{RouteState, Shared, method_label};

/// The service made by [`BudgetLayer`](super::BudgetLayer); see the [module docs](crate::layer).
///
/// Clones share the layer's measurements.
#[derive(Debug, Clone)]
pub struct Budget<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
    /// The route of the previous request: axum's `Router::layer` makes one
    /// service per route, so this saves the shared look-up on nearly every request.
    pub(crate) last: Option<Arc<RouteState>>,
}

impl<S> Budget<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

fn template<B>(req: &Request<B>) -> Option<&str> {
    if let Some(t) = req.extensions().get::<RouteTemplate>() {
        return Some(t.as_str());
    }
    #[cfg(feature = "axum")]
    if let Some(p) = req.extensions().get::<axum::extract::MatchedPath>() {
        return Some(p.as_str());
    }
    None
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Budget<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: http_body::Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let start = self.shared.clock.ticks();
        let template = template(&req).unwrap_or(&self.shared.config.fallback_route);
        let route = match &self.last {
            // The same route as the previous request: the common case. (The
            // label compares methods that share `_OTHER`.)
            Some(last)
                if (last.http_method.as_ref() == Some(req.method())
                    || std::ptr::eq(last.method, method_label(req.method())))
                    && *last.template == *template =>
            {
                last.clone()
            }
            _ => {
                let route = self.shared.route(method_label(req.method()), template);
                // Past `max_routes` the state is the fallback's: not this template's to cache.
                if *route.template == *template {
                    self.last = Some(route.clone());
                }
                route
            }
        };
        let mut scope = LazyScope::default();
        // The inner service's own code counts towards this request.
        let entered = scope::Entered::new(&mut scope);
        let inner = self.inner.call(req);
        drop(entered);
        ResponseFuture::new(inner, InFlight::new(route, start, scope))
    }
}
