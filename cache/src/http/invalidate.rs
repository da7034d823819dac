//! `InvalidateLayer`: a successful write invalidates the entries it changed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Method, Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::request::CacheRequest;
use crate::{Codec, KeyPattern, TieredCache};

/// What a write invalidates: tags and key patterns (see [`KeyPattern`]).
///
/// ```
/// use brisk_cache::http::Targets;
///
/// let t = Targets::new().tag("blueprints").pattern("cache:GET/api/blueprints*");
/// assert!(!t.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct Targets {
    tags: Vec<String>,
    patterns: Vec<String>,
}

impl Targets {
    /// Nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds a key pattern, e.g. `cache:GET/api/blueprints*`.
    pub fn pattern(mut self, pattern: impl Into<String>) -> Self {
        self.patterns.push(pattern.into());
        self
    }

    /// Whether there is nothing to invalidate.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.patterns.is_empty()
    }

    /// The tags.
    pub fn tag_list(&self) -> &[String] {
        &self.tags
    }

    /// The patterns.
    pub fn pattern_list(&self) -> &[String] {
        &self.patterns
    }

    fn extend(&mut self, other: &Targets) {
        for t in &other.tags {
            if !self.tags.contains(t) {
                self.tags.push(t.clone());
            }
        }
        for p in &other.patterns {
            if !self.patterns.contains(p) {
                self.patterns.push(p.clone());
            }
        }
    }
}

type TargetsFn = dyn Fn(&CacheRequest<'_>) -> Targets + Send + Sync;

/// After a `POST`, `PUT`, `PATCH` or `DELETE` whose response is a success
/// (2xx), invalidates the tags and patterns configured for its route — in
/// every instance when the cache has Redis — before the response is
/// returned, so the client's next read misses. A failed write (any other
/// status, or an error of the inner service) invalidates nothing. An
/// invalidation that cannot reach Redis is logged; the response is unchanged.
///
/// Clones of this layer share one cache.
///
/// ```
/// use brisk_cache::TieredCache;
/// use brisk_cache::http::{InvalidateLayer, Targets};
///
/// let cache = TieredCache::builder().build().unwrap();
/// let layer = InvalidateLayer::new(&cache)
///     // Route templates (axum's `MatchedPath`) or paths, as globs.
///     .route("/api/blueprints*", Targets::new().tag("blueprints"))
///     // Or computed from the request.
///     .targets_fn(|req| match req.route() {
///         "/api/projects/{id}" => Targets::new().tag(format!("project:{}", req.path())),
///         _ => Targets::new(),
///     });
/// # let _ = layer;
/// ```
#[derive(Clone)]
#[must_use]
pub struct InvalidateLayer {
    config: Arc<Config>,
}

#[derive(Clone)]
struct Config {
    cache: TieredCache,
    routes: Vec<(KeyPattern, Targets)>,
    targets_fn: Option<Arc<TargetsFn>>,
}

impl fmt::Debug for InvalidateLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidateLayer")
            .field("routes", &self.config.routes)
            .field("targets_fn", &self.config.targets_fn.is_some())
            .finish_non_exhaustive()
    }
}

impl InvalidateLayer {
    /// Invalidates in `cache` (its clones share it).
    pub fn new<C: Codec>(cache: &TieredCache<C>) -> Self {
        Self {
            config: Arc::new(Config {
                cache: TieredCache::from_parts(Arc::clone(&cache.inner), crate::PostcardCodec),
                routes: Vec::new(),
                targets_fn: None,
            }),
        }
    }

    /// Writes on routes matching `route` (a glob over
    /// [`CacheRequest::route`], e.g. `/api/blueprints*`) invalidate `targets`.
    ///
    /// # Panics
    ///
    /// When `route` is empty or longer than [`MAX_PATTERN_LEN`](crate::MAX_PATTERN_LEN).
    pub fn route(mut self, route: &str, targets: Targets) -> Self {
        let pattern = KeyPattern::new(route).expect("a route glob is non-empty and at most 1024 bytes");
        Arc::make_mut(&mut self.config).routes.push((pattern, targets));
        self
    }

    /// Targets computed from the write request, added to the routes' ones.
    pub fn targets_fn(mut self, f: impl Fn(&CacheRequest<'_>) -> Targets + Send + Sync + 'static) -> Self {
        Arc::make_mut(&mut self.config).targets_fn = Some(Arc::new(f));
        self
    }
}

impl Config {
    fn targets<B>(&self, req: &Request<B>) -> Targets {
        let view = CacheRequest::new(req);
        let mut targets = self.targets_fn.as_ref().map(|f| f(&view)).unwrap_or_default();
        let route = view.route();
        for (pattern, t) in &self.routes {
            if pattern.matches(route) {
                targets.extend(t);
            }
        }
        targets
    }
}

impl<S> Layer<S> for InvalidateLayer {
    type Service = Invalidate<S>;

    fn layer(&self, inner: S) -> Invalidate<S> {
        Invalidate { inner, config: Arc::clone(&self.config) }
    }
}

/// Invalidates cache entries after successful writes. Made by [`InvalidateLayer`].
#[derive(Clone)]
pub struct Invalidate<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for Invalidate<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invalidate").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Invalidate<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = InvalidateFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let write = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH | Method::DELETE);
        let targets = if write { self.config.targets(&req) } else { Targets::new() };
        let pending = (!targets.is_empty()).then(|| (self.config.cache.clone(), targets));
        InvalidateFuture { future: self.inner.call(req), pending, running: None, response: None }
    }
}

type Running = Pin<Box<dyn Future<Output = ()> + Send>>;

pin_project! {
    /// The response future of [`Invalidate`].
    pub struct InvalidateFuture<F, B> {
        #[pin]
        future: F,
        pending: Option<(TieredCache, Targets)>,
        running: Option<Running>,
        response: Option<Response<B>>,
    }
}

impl<F, B> fmt::Debug for InvalidateFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidateFuture")
            .field("targets", &self.pending.as_ref().map(|(_, t)| t))
            .field("invalidating", &self.running.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for InvalidateFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(running) = this.running {
            ready!(running.as_mut().poll(cx));
            *this.running = None;
            return Poll::Ready(Ok(this.response.take().expect("the response waits while invalidating")));
        }
        let response = ready!(this.future.poll(cx))?;
        match this.pending.take() {
            Some((cache, targets)) if response.status().is_success() => {
                let mut running: Running = Box::pin(invalidate(cache, targets));
                if running.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Ok(response));
                }
                *this.running = Some(running);
                *this.response = Some(response);
                Poll::Pending
            }
            _ => Poll::Ready(Ok(response)),
        }
    }
}

async fn invalidate(cache: TieredCache, targets: Targets) {
    for tag in &targets.tags {
        if let Err(err) = cache.invalidate_tag(tag).await {
            tracing::warn!(tag, error = %err, "brisk-cache: invalidation after a write did not reach every instance");
        }
    }
    for pattern in &targets.patterns {
        if let Err(err) = cache.invalidate_pattern(pattern).await {
            tracing::warn!(pattern, error = %err, "brisk-cache: invalidation after a write did not reach every instance");
        }
    }
}
