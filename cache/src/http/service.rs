//! `Cache<S>`: the lookup, the fill, and the headers every response gets.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use parking_lot::Mutex;
use tower_service::Service;

use super::body::CacheBody;
use super::future::ResponseFuture;
use super::layer::Config;
use super::policy;
use super::record::{self, Record};
use super::request::{self, CacheRequest, vary_key};
use super::stats::Counters;
use crate::inner::L1Changes;
use crate::{EntryOptions, Hit, LoadError, Loaded, Tier};

/// Why a request was not looked up; the index into [`BYPASS_REASONS`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum Bypass {
    Method = 0,
    Condition,
    Authorization,
    Cookie,
    Range,
    NoStore,
    Key,
}

/// The `detail` of a bypass's `Cache-Status`.
pub(crate) const BYPASS_REASONS: [&str; 7] =
    ["method", "condition", "authorization", "cookie", "range", "no-store", "key"];

/// `Cache-Status` values of the bypasses, built once per layer.
pub(crate) fn bypass_statuses(name: &str) -> [HeaderValue; BYPASS_REASONS.len()] {
    std::array::from_fn(|i| {
        let fwd = if i == Bypass::Method as usize { "method" } else { "bypass" };
        HeaderValue::from_str(&format!("{name}; fwd={fwd}; detail={}", BYPASS_REASONS[i]))
            .expect("a token and ASCII words make a valid header value")
    })
}

pub(crate) static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
pub(crate) static X_CACHE_KEY: HeaderName = HeaderName::from_static("x-cache-key");
pub(crate) static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Caches the responses of the inner service in a
/// [`TieredCache`](crate::TieredCache). Made by [`CacheLayer`](super::CacheLayer);
/// clones share its cache and counters.
#[derive(Clone)]
pub struct Cache<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S: fmt::Debug> fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S> Cache<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, by value.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Cache<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Send + 'static,
{
    type Response = Response<CacheBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Self { inner, config: cfg } = self;
        let screen = screen(cfg, &req);
        let key = match &screen {
            Ok(screen) => keyed(cfg, &req, screen),
            Err(reason) => Err(*reason),
        };
        let key = match key {
            Ok(Keyed::Answer(response)) => return ResponseFuture::ready(response),
            Ok(Keyed::Key(key)) => key,
            Err(reason) => {
                Counters::bump(&cfg.counters.bypasses);
                tracing::trace!(reason = BYPASS_REASONS[reason as usize], "brisk-cache: bypass");
                let status = cfg.bypass_status[reason as usize].clone();
                return ResponseFuture::bypass(take_ready(inner).call(req), status);
            }
        };
        let Ok(screen) = screen else { unreachable!("a bypass returned above") };
        let plan = plan(cfg, &req, screen, key);
        ResponseFuture::cached(Box::pin(run(Arc::clone(cfg), take_ready(inner), req, plan)))
    }
}

/// An inner service whose calls a load's task can own: the bounds of
/// [`Cache`]'s `Service` impl, named once for the functions behind it.
trait Origin<Q, B>:
    Service<Request<Q>, Response = Response<B>, Future: Send + 'static, Error: Send + 'static> + Send + 'static
{
}

impl<S, Q, B> Origin<Q, B> for S where
    S: Service<Request<Q>, Response = Response<B>, Future: Send + 'static, Error: Send + 'static> + Send + 'static
{
}

/// A response body a load's task can own and read.
trait SendBody: Body<Data: Send, Error: Send + 'static> + Send + 'static {}

impl<B> SendBody for B where B: Body<Data: Send, Error: Send + 'static> + Send + 'static {}

/// The service that was polled ready, to handle this request; a clone takes its place.
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// What the checks before the key decided about a request that is looked up.
struct Screen {
    head: bool,
    revalidate: bool,
    principal: Option<String>,
}

/// What to do with a request that is looked up.
struct Plan {
    key: String,
    options: EntryOptions,
    head: bool,
    revalidate: bool,
    show_key: bool,
}

fn screen<B>(cfg: &Config, req: &Request<B>) -> Result<Screen, Bypass> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => return Err(Bypass::Method),
    };
    let view = CacheRequest::new(req);
    if let Some(condition) = &cfg.condition
        && !condition(&view)
    {
        return Err(Bypass::Condition);
    }
    let headers = req.headers();
    if headers.is_empty() {
        // Nothing below can bypass or revalidate.
        return Ok(Screen { head, revalidate: false, principal: None });
    }
    if headers.contains_key(header::RANGE) {
        return Err(Bypass::Range);
    }
    let directives = policy::directives(headers);
    if directives.no_store {
        return Err(Bypass::NoStore);
    }
    let credentials = if headers.contains_key(header::AUTHORIZATION) {
        Some(Bypass::Authorization)
    } else if headers.contains_key(header::COOKIE) {
        Some(Bypass::Cookie)
    } else {
        None
    };
    let principal = match credentials {
        None => None,
        Some(reason) => match cfg.principal_fn.as_ref().and_then(|f| f(&view)) {
            Some(p) => Some(p),
            None => return Err(reason),
        },
    };
    Ok(Screen {
        head,
        revalidate: cfg.request_no_cache && policy::request_wants_revalidation(headers, &directives),
        principal,
    })
}

/// A request's key, or the response when the front holds a fresh hit for it.
// Matched at once: boxing the response would cost an allocation on every hit.
#[allow(clippy::large_enum_variant)]
enum Keyed<B: Body> {
    Answer(Response<CacheBody<B>>),
    Key(String),
}

fn keyed<Q, B: Body>(cfg: &Config, req: &Request<Q>, screen: &Screen) -> Result<Keyed<B>, Bypass> {
    // A `GET` the front may answer: a hit with its key shown and no
    // conditions to evaluate.
    let front = !screen.head
        && !screen.revalidate
        && screen.principal.is_none()
        && (req.headers().is_empty() || !req.headers().contains_key(header::IF_NONE_MATCH));
    let mut key = match &cfg.key_fn {
        Some(f) => {
            let key = f(&CacheRequest::new(req)).ok_or(Bypass::Key)?;
            if front && let Some(response) = answer(cfg, |front| front.answer_key(cfg, &key, L1Changes::hash(&key))) {
                return Ok(Keyed::Answer(response));
            }
            key
        }
        // The target is normalised once, for the front and for the key.
        None => match request::with_target(req.uri(), |target| {
            if front && let Some(response) = answer(cfg, |front| front.answer_get(cfg, target)) {
                return Keyed::Answer(response);
            }
            // Missed: the key is built, for the lookup that follows.
            Keyed::Key(request::get_key(&cfg.key_prefix, target))
        }) {
            Keyed::Key(key) => key,
            answered => return Ok(answered),
        },
    };
    if let Some(p) = &screen.principal {
        key.push_str("#principal:");
        key.push_str(p);
    }
    Ok(Keyed::Key(key))
}

/// A fresh `HIT` from the front, when `ask` finds one.
fn answer<B: Body>(
    cfg: &Config,
    ask: impl FnOnce(&super::front::Front) -> Option<super::front::Answer>,
) -> Option<Response<CacheBody<B>>> {
    let answer = ask(&cfg.front)?;
    cfg.cache.count_l1_hit();
    count(cfg, XCache::Hit, answer.parts.status);
    Some(Response::from_parts(answer.parts, CacheBody::full(answer.body)))
}

fn plan<B>(cfg: &Config, req: &Request<B>, screen: Screen, key: String) -> Plan {
    let view = CacheRequest::new(req);
    let mut options = EntryOptions::new(cfg.ttl_for(&view));
    if let Some(tags) = &cfg.tags_fn {
        options = options.tags(tags(&view));
    }
    Plan { key, options, head: screen.head, revalidate: screen.revalidate, show_key: screen.principal.is_none() }
}

/// A loader that ran told the cache not to store, or failed.
#[derive(Debug)]
struct NotStored;

type Outcome<B, E> = (Result<Response<CacheBody<B>>, E>, &'static str);

/// Shared by a request and its loader. The loader takes the service and the
/// request; when it does not run (a hit, or another request's load) the
/// request gets them back.
struct Slot<S, Q, B: Body, E> {
    state: Mutex<SlotState<S, Q, B, E>>,
}

struct SlotState<S, Q, B: Body, E> {
    service: Option<S>,
    request: Option<Request<Q>>,
    /// The request's headers, kept by the loader that took it.
    headers: Option<HeaderMap>,
    /// The response of a load that was not stored, for its own request.
    outcome: Option<Outcome<B, E>>,
    ran: bool,
}

impl<S, Q, B: Body, E> Slot<S, Q, B, E> {
    fn new(service: S, request: Request<Q>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(SlotState {
                service: Some(service),
                request: Some(request),
                headers: None,
                outcome: None,
                ran: false,
            }),
        })
    }

    fn begin(&self) -> Option<(S, Request<Q>, HeaderMap)> {
        let mut st = self.state.lock();
        let (service, request) = (st.service.take()?, st.request.take()?);
        let headers = request.headers().clone();
        st.headers = Some(headers.clone());
        st.ran = true;
        Some((service, request, headers))
    }

    /// `f` of the request's headers, wherever they are now.
    fn with_headers<R>(&self, f: impl FnOnce(&HeaderMap) -> R) -> Option<R> {
        self.state.lock().request_headers().map(f)
    }

    fn finish(&self, outcome: Outcome<B, E>) {
        self.state.lock().outcome = Some(outcome);
    }

    fn take(&self) -> SlotState<S, Q, B, E> {
        let mut st = self.state.lock();
        SlotState {
            service: st.service.take(),
            request: st.request.take(),
            headers: st.headers.take(),
            outcome: st.outcome.take(),
            ran: st.ran,
        }
    }
}

impl<S, Q, B: Body, E> SlotState<S, Q, B, E> {
    /// The request's headers: in the request, or kept by the loader that
    /// took it.
    fn request_headers(&self) -> Option<&HeaderMap> {
        self.request.as_ref().map(Request::headers).or(self.headers.as_ref())
    }
}

/// The `X-Cache` value.
#[derive(Debug, Clone, Copy)]
enum XCache {
    Hit,
    Miss,
    Stale,
}

impl XCache {
    fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            XCache::Hit => "HIT",
            XCache::Miss => "MISS",
            XCache::Stale => "STALE",
        })
    }
}

/// The cache headers of one response.
struct Mark<'a> {
    x_cache: XCache,
    age: u64,
    status: String,
    key: Option<&'a str>,
}

fn apply<B>(cfg: &Config, response: &mut Response<B>, mark: Mark<'_>) {
    count(cfg, mark.x_cache, response.status());
    decorate(cfg, response.headers_mut(), mark);
}

/// Counts a response that was looked up.
fn count(cfg: &Config, x_cache: XCache, status: StatusCode) {
    let counters = &cfg.counters;
    Counters::bump(match x_cache {
        XCache::Hit => &counters.hits,
        XCache::Miss => &counters.misses,
        XCache::Stale => &counters.stale,
    });
    if status == StatusCode::NOT_MODIFIED {
        Counters::bump(&counters.not_modified);
    }
}

fn decorate(cfg: &Config, headers: &mut HeaderMap, mark: Mark<'_>) {
    headers.insert(X_CACHE.clone(), mark.x_cache.value());
    if cfg.expose_key
        && let Some(key) = mark.key
        // Visible ASCII only: `obs-text` is valid for `http` but not for every client.
        && key.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        && let Ok(value) = HeaderValue::from_str(key)
    {
        headers.insert(X_CACHE_KEY.clone(), value);
    }
    headers.insert(header::AGE, super::digits::value(mark.age));
    // From the `String`'s own buffer, not a copy.
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(mark.status)) {
        headers.append(CACHE_STATUS.clone(), value);
    }
}

/// A response from the inner service that was not stored.
fn pass_through<B: Body>(
    cfg: &Config,
    mut response: Response<CacheBody<B>>,
    fwd: &str,
    detail: &str,
    key: Option<&str>,
) -> Response<CacheBody<B>> {
    let status = format!("{}; fwd={fwd}; detail={detail}", cfg.name);
    let age = response.headers().get(header::AGE).and_then(|v| v.to_str().ok()?.parse().ok()).unwrap_or(0);
    apply(cfg, &mut response, Mark { x_cache: XCache::Miss, age, status, key });
    response
}

/// A response made from a stored one: `304` when the request's
/// `If-None-Match` matches, headers only for `HEAD`.
fn from_record<B: Body>(
    cfg: &Config,
    rec: Record,
    head: bool,
    conditions: &HeaderMap,
    mark: Mark<'_>,
) -> Response<CacheBody<B>> {
    let x_cache = mark.x_cache;
    let response = build(cfg, rec, head, conditions, mark);
    count(cfg, x_cache, response.status());
    response
}

/// The status and headers of a fresh `HIT` for a `GET` of `key` without
/// conditions, `age` and `ttl` in whole seconds: those [`from_record`] gives it.
pub(crate) fn hit_parts(cfg: &Config, rec: &Record, key: &str, age: u64, ttl: u64) -> http::response::Parts {
    let mark = Mark { x_cache: XCache::Hit, age, status: fresh_status(cfg, ttl), key: Some(key) };
    build::<http_body_util::Empty<Bytes>>(cfg, rec.clone(), false, &HeaderMap::new(), mark).into_parts().0
}

/// [`from_record`] without counting.
fn build<B: Body>(
    cfg: &Config,
    rec: Record,
    head: bool,
    conditions: &HeaderMap,
    mark: Mark<'_>,
) -> Response<CacheBody<B>> {
    let not_modified = rec.status.is_success()
        && rec.headers.get(header::ETAG).is_some_and(|tag| policy::if_none_match(conditions, tag.as_bytes()));
    let mut response = if not_modified {
        let mut headers = HeaderMap::new();
        for name in
            [header::CACHE_CONTROL, header::CONTENT_LOCATION, header::DATE, header::ETAG, header::EXPIRES, header::VARY]
        {
            for value in rec.headers.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        let mut response = Response::new(CacheBody::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        *response.headers_mut() = headers;
        response
    } else {
        let len = rec.body.len();
        let mut response = Response::new(if head { CacheBody::empty() } else { CacheBody::full(rec.body) });
        *response.status_mut() = rec.status;
        *response.headers_mut() = rec.headers;
        if rec.status != StatusCode::NO_CONTENT {
            response.headers_mut().insert(header::CONTENT_LENGTH, super::digits::value(len as u64));
        }
        response
    };
    decorate(cfg, response.headers_mut(), mark);
    response
}

/// Only the request's `If-None-Match` headers (an empty map allocates nothing).
fn conditions(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for value in headers.get_all(header::IF_NONE_MATCH) {
        out.append(header::IF_NONE_MATCH, value.clone());
    }
    out
}

/// The inner service must answer in full: the cache answers the conditions.
fn strip_conditions(headers: &mut HeaderMap) {
    headers.remove(header::IF_NONE_MATCH);
    headers.remove(header::IF_MODIFIED_SINCE);
}

fn status_response<B: Body>(status: StatusCode) -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::empty());
    *response.status_mut() = status;
    response
}

fn hit_status(cfg: &Config, hit: &Hit<Bytes>) -> String {
    if hit.is_stale() {
        // Built by hand: `format!` costs more than the rest of a hit's headers.
        let mut out = String::with_capacity(cfg.name.len() + 48);
        out.push_str(&cfg.name);
        // Times of the cache's clock.
        let past = hit.read_at_ms.saturating_sub(hit.fresh_until_ms) / 1000;
        out.push_str("; hit; ttl=-");
        push_u64(&mut out, past);
        out.push_str("; detail=stale");
        out
    } else {
        fresh_status(cfg, hit.ttl_remaining().as_secs())
    }
}

/// The `Cache-Status` of a fresh hit with `ttl` seconds left.
fn fresh_status(cfg: &Config, ttl: u64) -> String {
    let mut out = String::with_capacity(cfg.name.len() + 32);
    out.push_str(&cfg.name);
    out.push_str("; hit; ttl=");
    push_u64(&mut out, ttl);
    out
}

/// Appends `n` in decimal.
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

async fn run<S, Q, B>(
    cfg: Arc<Config>,
    inner: S,
    req: Request<Q>,
    plan: Plan,
) -> Result<Response<CacheBody<B>>, S::Error>
where
    S: Origin<Q, B>,
    Q: Send + 'static,
    B: SendBody,
{
    let conditions = conditions(req.headers());
    if plan.head {
        head(&cfg, inner, req, &plan, &conditions).await
    } else if plan.revalidate {
        revalidate(&cfg, inner, req, &plan, &conditions).await
    } else {
        // The fast path: a fresh, valid entry in this process's L1 answers
        // without the loader's bookkeeping. Anything else (a miss, L2, stale,
        // an early refresh due) goes through `get_or_load_bytes`.
        let mut start = None;
        let hash = L1Changes::hash(&plan.key);
        if let Some(read) = cfg.cache.l1_fresh(&plan.key, hash).await
            && let Some(rec) = cfg.front.record(&cfg, &plan.key, hash, &read)
        {
            let hit = &read.hit;
            if record::vary_matches(req.headers(), &rec.vary) {
                if !read.refresh {
                    cfg.cache.count_l1_hit();
                    let key = plan.show_key.then_some(plan.key.as_str());
                    let mark =
                        Mark { x_cache: XCache::Hit, age: hit.age().as_secs(), status: hit_status(&cfg, hit), key };
                    return Ok(from_record(&cfg, rec, false, &conditions, mark));
                }
            } else {
                // The entry varies and this request has other values: the
                // base key's read counts as the L1 hit it is, and the
                // variant is looked up directly, so an early refresh of the
                // base key never takes this request from it.
                cfg.cache.count_l1_hit();
                let names: Vec<String> = rec.vary.iter().map(|(n, _)| n.clone()).collect();
                start = Some(vary_key(&plan.key, &record::vary_values(req.headers(), &names)));
            }
        }
        lookup(&cfg, inner, req, &plan, &conditions, start).await
    }
}

/// `HEAD`: answered from the `GET` entry; a miss goes to the inner service
/// and is not stored (it has no body).
async fn head<S, Q, B>(
    cfg: &Config,
    mut inner: S,
    req: Request<Q>,
    plan: &Plan,
    conditions: &HeaderMap,
) -> Result<Response<CacheBody<B>>, S::Error>
where
    S: Service<Request<Q>, Response = Response<B>>,
    B: Body,
{
    let key = plan.show_key.then_some(plan.key.as_str());
    let mut found = read(cfg, &plan.key).await;
    if let Some((_, rec)) = &found
        && !record::vary_matches(req.headers(), &rec.vary)
    {
        let names: Vec<String> = rec.vary.iter().map(|(n, _)| n.clone()).collect();
        let variant = vary_key(&plan.key, &record::vary_values(req.headers(), &names));
        found = read(cfg, &variant).await.filter(|(_, rec)| record::vary_matches(req.headers(), &rec.vary));
    }
    match found {
        Some((hit, rec)) => {
            let mark = Mark { x_cache: XCache::Hit, age: hit.age().as_secs(), status: hit_status(cfg, &hit), key };
            Ok(from_record(cfg, rec, true, conditions, mark))
        }
        None => {
            let response = inner.call(req).await?.map(CacheBody::inner);
            Ok(pass_through(cfg, response, "uri-miss", "head", key))
        }
    }
}

async fn read(cfg: &Config, key: &str) -> Option<(Hit<Bytes>, Record)> {
    let hit = cfg.cache.get_bytes(key).await?;
    let rec = record::decode(hit.value())?;
    Some((hit, rec))
}

/// `Cache-Control: no-cache` in the request: the inner service answers, and
/// its response replaces the entry.
async fn revalidate<S, Q, B>(
    cfg: &Config,
    mut inner: S,
    mut req: Request<Q>,
    plan: &Plan,
    conditions: &HeaderMap,
) -> Result<Response<CacheBody<B>>, S::Error>
where
    S: Service<Request<Q>, Response = Response<B>>,
    B: Body,
{
    let key = plan.show_key.then_some(plan.key.as_str());
    let headers = req.headers().clone();
    strip_conditions(req.headers_mut());
    let response = inner.call(req).await?;
    match fill(cfg, response, &headers, plan.options.ttl).await {
        Fill::Store(bytes, ttl) => {
            let mut options = plan.options.clone();
            options.ttl = ttl;
            cfg.cache.set_bytes(&plan.key, bytes.clone(), &options).await;
            Counters::bump(&cfg.counters.stored);
            let rec = record::decode(&bytes).expect("a record this layer just encoded decodes");
            let status = format!("{}; fwd=request; stored", cfg.name);
            Ok(from_record(cfg, rec, false, conditions, Mark { x_cache: XCache::Miss, age: 0, status, key }))
        }
        Fill::Pass { response, reason, .. } => Ok(pass_through(cfg, response, "request", reason, key)),
    }
}

/// `GET`: the entry, or one load of it however many requests miss at once.
async fn lookup<S, Q, B>(
    cfg: &Arc<Config>,
    inner: S,
    req: Request<Q>,
    plan: &Plan,
    conditions: &HeaderMap,
    start: Option<String>,
) -> Result<Response<CacheBody<B>>, S::Error>
where
    S: Origin<Q, B>,
    Q: Send + 'static,
    B: SendBody,
{
    let shown = plan.show_key.then_some(plan.key.as_str());
    let first = start.is_some();
    let mut fwd = if first { "vary-miss" } else { "uri-miss" };
    let mut variant_key: Option<String> = start;
    let mut inner = inner;
    let mut req = req;
    // The base key, then (when the stored response varies on headers this
    // request has other values of) the variant's key. `start`: the caller
    // already knows the variant's key.
    for variant in [false, true] {
        if first && !variant {
            continue;
        }
        let key = variant_key.as_deref().unwrap_or(&plan.key);
        let slot = Slot::new(inner, req);
        let loader = {
            let (cfg, slot, ttl) = (Arc::clone(cfg), Arc::clone(&slot), plan.options.ttl);
            move || load(cfg, slot, ttl)
        };
        let result = cfg.cache.get_or_load_bytes(key, &plan.options, loader).await;
        let shown_key = if variant { plan.show_key.then_some(key) } else { shown };
        // A fresh entry from the cache that this request's headers match is
        // answered without taking the service and the request back from the
        // slot: an early refresh the read started in the background takes
        // them from there to reload the entry.
        let mut rec = result.as_ref().ok().and_then(|hit| record::decode(hit.value()));
        if let Ok(hit) = &result
            && !matches!(hit.tier(), Tier::Loader)
            && !hit.is_stale()
            && let Some(rec) =
                rec.take_if(|rec| slot.with_headers(|headers| record::vary_matches(headers, &rec.vary)) == Some(true))
        {
            let mark =
                Mark { x_cache: XCache::Hit, age: hit.age().as_secs(), status: hit_status(cfg, hit), key: shown_key };
            return Ok(from_record(cfg, rec, false, conditions, mark));
        }
        let st = slot.take();
        let hit = match result {
            Ok(hit) => hit,
            Err(err) => {
                if let Some((response, reason)) = st.outcome {
                    return Ok(pass_through(cfg, response?, fwd, reason, shown_key));
                }
                return match (st.service, st.request) {
                    (Some(mut service), Some(request)) => {
                        let response = service.call(request).await?.map(CacheBody::inner);
                        Ok(pass_through(cfg, response, fwd, "load-failed", shown_key))
                    }
                    _ => {
                        let status = match err {
                            LoadError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                            _ => StatusCode::INTERNAL_SERVER_ERROR,
                        };
                        Ok(pass_through(cfg, status_response(status), fwd, "load-failed", shown_key))
                    }
                };
            }
        };
        if !hit.is_stale()
            && let Some((response, reason)) = st.outcome
        {
            return Ok(pass_through(cfg, response?, fwd, reason, shown_key));
        }
        let request_headers = st.request_headers().expect("the loader keeps the headers of the request it takes");
        match rec {
            Some(rec) if record::vary_matches(request_headers, &rec.vary) => {
                let (x_cache, status) = match (hit.tier(), hit.is_stale(), st.ran) {
                    (_, true, _) => (XCache::Stale, hit_status(cfg, &hit)),
                    (Tier::Loader, false, true) => {
                        Counters::bump(&cfg.counters.stored);
                        (XCache::Miss, format!("{}; fwd={fwd}; stored", cfg.name))
                    }
                    (Tier::Loader, false, false) => (XCache::Miss, format!("{}; fwd={fwd}; collapsed", cfg.name)),
                    _ => (XCache::Hit, hit_status(cfg, &hit)),
                };
                let age = if matches!(hit.tier(), Tier::Loader) { 0 } else { hit.age().as_secs() };
                return Ok(from_record(cfg, rec, false, conditions, Mark { x_cache, age, status, key: shown_key }));
            }
            Some(rec) if !variant && st.request.is_some() && st.service.is_some() => {
                let names: Vec<String> = rec.vary.iter().map(|(n, _)| n.clone()).collect();
                variant_key = Some(vary_key(&plan.key, &record::vary_values(request_headers, &names)));
                fwd = "vary-miss";
                inner = st.service.expect("checked above");
                req = st.request.expect("checked above");
            }
            other => {
                if other.is_none() {
                    // Not a record this version wrote (a rolling deploy): drop it.
                    let _ = cfg.cache.delete(key).await;
                }
                return match (st.service, st.request) {
                    (Some(mut service), Some(request)) => {
                        let response = service.call(request).await?.map(CacheBody::inner);
                        Ok(pass_through(cfg, response, fwd, "unusable-entry", shown_key))
                    }
                    // An early refresh took this request to reload the entry.
                    _ => Ok(pass_through(
                        cfg,
                        status_response(StatusCode::SERVICE_UNAVAILABLE),
                        fwd,
                        "unusable-entry",
                        shown_key,
                    )),
                };
            }
        }
    }
    unreachable!("the second pass returns")
}

/// The loader: calls the inner service, stores the response when it may.
async fn load<S, Q, B>(cfg: Arc<Config>, slot: Arc<Slot<S, Q, B, S::Error>>, ttl: Duration) -> Result<Loaded, NotStored>
where
    S: Service<Request<Q>, Response = Response<B>>,
    B: Body,
{
    let Some((mut service, mut request, headers)) = slot.begin() else {
        return Err(NotStored);
    };
    strip_conditions(request.headers_mut());
    match service.call(request).await {
        Err(e) => {
            slot.finish((Err(e), "error"));
            Err(NotStored)
        }
        Ok(response) => match fill(&cfg, response, &headers, ttl).await {
            Fill::Store(bytes, ttl) => Ok(Loaded::cache_for(bytes, ttl)),
            Fill::Pass { response, reason, error } => {
                slot.finish((Ok(response), reason));
                // An error lets a stale entry be served instead.
                if error { Err(NotStored) } else { Ok(Loaded::pass(Bytes::new())) }
            }
        },
    }
}

// Built once per load and matched at once: boxing the response would cost
// an allocation on every pass-through for nothing.
#[allow(clippy::large_enum_variant)]
enum Fill<B: Body> {
    Store(Bytes, Duration),
    Pass { response: Response<CacheBody<B>>, reason: &'static str, error: bool },
}

/// Reads the response for storage, if it may be stored and its body fits;
/// otherwise hands it on with the same bytes.
async fn fill<B: Body>(cfg: &Config, response: Response<B>, request_headers: &HeaderMap, ttl: Duration) -> Fill<B> {
    let (parts, body) = response.into_parts();
    let pass = |parts, body, reason, error| Fill::Pass { response: Response::from_parts(parts, body), reason, error };
    if !cfg.statuses.contains(&parts.status.as_u16()) {
        let error = parts.status.is_server_error();
        return pass(parts, CacheBody::inner(body), "status", error);
    }
    let directives = policy::directives(&parts.headers);
    if let Some(reason) = policy::unstorable_reason(&parts.headers, &directives) {
        return pass(parts, CacheBody::inner(body), reason, false);
    }
    let mut ttl = ttl;
    if cfg.ttl_from_response
        && let Some(t) = policy::response_ttl(&directives)
    {
        ttl = t;
    }
    if ttl.is_zero() {
        return pass(parts, CacheBody::inner(body), "ttl-zero", false);
    }
    let max = cfg.max_body_bytes;
    if body.size_hint().lower() > max as u64 {
        return pass(parts, CacheBody::inner(body), "too-large", false);
    }
    let mut body = Box::pin(body);
    let mut buf = BytesMut::with_capacity(body.size_hint().exact().map_or(0, |n| n.min(max as u64) as usize));
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    let over = buf.len().saturating_add(bytes::Buf::remaining(&data)) > max;
                    buf.put(data);
                    if over {
                        return pass(parts, CacheBody::resumed(buf.freeze(), body), "too-large", false);
                    }
                }
                Err(frame) => {
                    // Trailers cannot be stored; the client still gets them.
                    let trailers = frame.into_trailers().ok();
                    return pass(parts, CacheBody::with_trailers(buf.freeze(), trailers), "trailers", false);
                }
            },
            Some(Err(e)) => return pass(parts, CacheBody::failed(buf.freeze(), e), "body-error", true),
        }
    }
    let names = policy::vary_names(&parts.headers).unwrap_or_default();
    let vary = record::vary_values(request_headers, &names);
    Fill::Store(record::encode(&parts, &vary, &buf), ttl)
}

#[cfg(test)]
mod tests {
    use super::push_u64;

    #[test]
    fn push_u64_writes_decimal() {
        for n in [0, 7, 10, 300, 86_400, u64::MAX] {
            let mut s = String::from("ttl=");
            push_u64(&mut s, n);
            assert_eq!(s, format!("ttl={n}"));
        }
    }
}
