use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response};
use http_body::Body;

use super::ResponseBody;
use crate::scope::{self, LazyScope};
use crate::state::{CacheStatus, Finished, RouteState};

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// One request on its way through the layer. Dropping it records the request:
/// at the end of the response body, or earlier when the request fails, is
/// cancelled or its body is dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    route: Arc<RouteState>,
    /// The clock's ticks at the call.
    start: u64,
    pub(crate) scope: LazyScope,
    status: Option<u16>,
    cache: CacheStatus,
    pub(crate) body_bytes: u64,
}

impl InFlight {
    pub(crate) fn new(route: Arc<RouteState>, start: u64, scope: LazyScope) -> Self {
        #[cfg(feature = "prometheus")]
        route.metrics.start();
        Self { route, start, scope, status: None, cache: CacheStatus::Absent, body_bytes: 0 }
    }

    /// What the layer knows when the response head is ready.
    fn head<B>(&mut self, response: &mut Response<B>) {
        self.status = Some(response.status().as_u16());
        self.cache = CacheStatus::from_header(x_cache(response.headers()));
        if self.route.config.server_timing {
            let value = self.server_timing(response);
            // The header takes the string's buffer as it is, without a copy.
            if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(value)) {
                response.headers_mut().append(SERVER_TIMING, value);
            }
        }
    }

    /// `app;dur=12.500, db_queries;desc="2", budget;desc="db_queries cache_required"`.
    fn server_timing<B>(&self, response: &Response<B>) -> String {
        let now = self.route.clock.ticks();
        let elapsed = Duration::from_nanos(now.saturating_sub(self.start));
        let mut value = String::with_capacity(64);
        value.push_str("app;dur=");
        push_millis(&mut value, elapsed);
        if let Some(scope) = self.scope.get() {
            let mut counters = scope.counters();
            counters.sort();
            for (name, count) in &counters {
                if is_token(name) {
                    let _ = write!(value, ", {name};desc=\"{count}\"");
                }
            }
        }
        if let Some(budget) = &self.route.budget {
            // The body's size is known here only from its `Content-Length`.
            let body_bytes = match budget.max_payload_limit() {
                Some(_) => response
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0),
                None => 0,
            };
            let so_far = Finished {
                latency: elapsed,
                at: now,
                status: self.status,
                body_bytes,
                cache: self.cache,
                scope: self.scope.get(),
            };
            let broken = self.route.broken(&so_far);
            if !broken.is_empty() {
                let names: Vec<&str> = broken.iter().map(|(b, _)| b.as_str()).filter(|b| is_token(b)).collect();
                let _ = write!(value, ", budget;desc=\"{}\"", names.join(" "));
            }
        }
        value
    }
}

/// Appends `elapsed` in milliseconds with three decimals (`12.500`), rounded
/// to the microsecond, without going through floating-point formatting.
fn push_millis(out: &mut String, elapsed: std::time::Duration) {
    let micros = u64::try_from((elapsed.as_nanos() + 500) / 1000).unwrap_or(u64::MAX);
    push_u64(out, micros / 1000);
    let fraction = micros % 1000;
    out.push('.');
    for digit in [fraction / 100, fraction / 10 % 10, fraction % 10] {
        out.push(char::from(b'0' + digit as u8));
    }
}

/// Appends the decimal digits of `n`.
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        out.push(char::from(digit));
    }
}

/// The `X-Cache` header. A response carries few headers: comparing each name
/// with `x-cache` costs less than hashing it for a look-up.
#[inline]
fn x_cache(headers: &http::HeaderMap) -> Option<&HeaderValue> {
    if headers.keys_len() > 8 {
        return headers.get(X_CACHE);
    }
    headers.iter().find(|(name, _)| name.as_str().as_bytes() == b"x-cache").map(|(_, value)| value)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let at = self.route.clock.ticks();
        let done = Finished {
            latency: Duration::from_nanos(at.saturating_sub(self.start)),
            at,
            status: self.status,
            body_bytes: self.body_bytes,
            cache: self.cache,
            scope: self.scope.get(),
        };
        self.route.finish(&done);
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Budget`](super::Budget).
    #[derive(Debug)]
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F: Future> ResponseFuture<F> {
    pub(crate) fn new(inner: F, in_flight: InFlight) -> Self {
        Self { inner, in_flight: Some(in_flight) }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(in_flight) = this.in_flight.as_mut() else {
            // Polled again after it completed: whatever the inner future does.
            return this.inner.poll(cx).map_ok(|response| response.map(|body| ResponseBody::new(body, None)));
        };
        // The handler's code counts towards this request's scope.
        let entered = scope::Entered::new(&mut in_flight.scope);
        let result = this.inner.poll(cx);
        drop(entered);
        match result {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(mut response)) => {
                in_flight.head(&mut response);
                let in_flight = this.in_flight.take();
                Poll::Ready(Ok(response.map(|body| ResponseBody::new(body, in_flight))))
            }
            Poll::Ready(Err(error)) => {
                // Dropping the in-flight record records the failed request.
                *this.in_flight = None;
                Poll::Ready(Err(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::push_millis;

    #[test]
    fn milliseconds_with_three_decimals_rounded_to_the_microsecond() {
        let millis = |nanos: u64| {
            let mut out = String::new();
            push_millis(&mut out, Duration::from_nanos(nanos));
            out
        };
        assert_eq!(millis(0), "0.000");
        assert_eq!(millis(499), "0.000");
        assert_eq!(millis(500), "0.001");
        assert_eq!(millis(12_500_000), "12.500");
        assert_eq!(millis(12_345_678), "12.346");
        assert_eq!(millis(1_000_000), "1.000");
        assert_eq!(millis(3_600_000_000_000), "3600000.000");
        assert_eq!(millis(u64::MAX), "18446744073709.552");
    }
}
