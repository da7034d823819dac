//! brisk-budget: what the budget layer adds to a request, and what a route costs in memory.
//!
//! - `budget/overhead`: one request through a service that answers at once
//!   (call, response, body drained), bare and through `BudgetLayer` (a
//!   budgeted route with every kind of budget and metrics registered; the
//!   fallback route; with `Server-Timing`). The difference is the layer's cost.
//! - `budget/interleaved` (printed): the bare service and the budgeted and
//!   fallback routes in alternating rounds, the overhead taken per round (its
//!   median and range), so drift of the machine between criterion's
//!   sequential measurements does not land in the difference.
//! - `budget/memory` (printed, not timed): the bytes of histograms per route
//!   after 10,000 requests with latencies spread up to 1 s, 60 s and 1 h (the
//!   histograms' ceiling, so the last figure is the bound).
//!
//! `cargo bench -p brisk-benches --bench budget`
//!
//! For instruction counts, `BUDGET_LOOP=<variant>:<requests>` makes the bench
//! binary run that many requests of one variant (`bare`, `budgeted`,
//! `fallback`, `server-timing`, or `pass-through`: a layer that only wraps the
//! response future and body) through the same request loop and exit, so
//! callgrind can count them without criterion's own work:
//! `BUDGET_LOOP=budgeted:12000 valgrind --tool=callgrind <bench binary>`, run
//! for two request counts; the difference over the difference in requests is
//! the instructions per request.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::Duration;

use brisk_budget::{BudgetLayer, Budgets, Clock, ManualClock, MonotonicClock, RouteBudget, RouteTemplate, TokioClock};
use criterion::{Criterion, criterion_group};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use prometheus_client::registry::Registry;
use tower_service::Service;

/// Answers at once with a small body, optionally moving a manual clock first.
#[derive(Clone)]
struct Hello {
    clock: Option<(ManualClock, Duration)>,
}

impl Service<Request<Empty<&'static [u8]>>> for Hello {
    type Response = Response<Full<&'static [u8]>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Empty<&'static [u8]>>) -> Self::Future {
        if let Some((clock, by)) = &self.clock {
            clock.advance(*by);
        }
        let mut response = Response::new(Full::new(&b"{\"id\":7,\"name\":\"blueprint\"}"[..]));
        response.headers_mut().insert("x-cache", http::HeaderValue::from_static("HIT"));
        ready(Ok(response))
    }
}

fn request(template: Option<&RouteTemplate>) -> Request<Empty<&'static [u8]>> {
    let mut req = Request::get("/api/blueprints/7").body(Empty::new()).expect("a valid request");
    if let Some(t) = template {
        req.extensions_mut().insert(t.clone());
    }
    req
}

fn budgets() -> Budgets {
    Budgets::new().route(
        Method::GET,
        "/api/blueprints/{id}",
        RouteBudget::new()
            .p50(Duration::from_millis(30))
            .p95(Duration::from_millis(50))
            .p99(Duration::from_millis(100))
            .max_payload(20_000)
            .db_queries(1)
            .cache_required(true),
    )
}

/// The services of the overhead group: the bare one, and the layer's variants
/// (name, budgeted route, `Server-Timing`).
const VARIANTS: [(&str, &str, bool, bool); 3] = [
    ("budgeted", "BudgetLayer, budgeted route", true, false),
    ("fallback", "BudgetLayer, fallback route", false, false),
    ("server-timing", "BudgetLayer, budgeted route + Server-Timing", true, true),
];

/// A service through the layer, with the metrics registered (the registry is
/// returned so it lives as long as the service).
fn layered(server_timing: bool) -> (brisk_budget::Budget<Hello>, Registry) {
    let layer = BudgetLayer::builder(budgets()).server_timing(server_timing).build();
    let mut registry = Registry::default();
    layer.register(&mut registry);
    (tower_layer::Layer::layer(&layer, Hello { clock: None }), registry)
}

/// One request of the overhead group: call, await the response, drain the body.
async fn one_request<S, B>(svc: &mut S, template: Option<&RouteTemplate>)
where
    S: Service<Request<Empty<&'static [u8]>>, Response = Response<B>, Error = Infallible>,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let future = svc.call(request(template));
    let response = future.await.expect("infallible");
    black_box(response.into_body().collect().await.expect("infallible"));
}

/// `n` requests of the overhead group, one after the other.
async fn requests<S, B>(svc: &mut S, template: Option<&RouteTemplate>, n: u64)
where
    S: Service<Request<Empty<&'static [u8]>>, Response = Response<B>, Error = Infallible>,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    for _ in 0..n {
        one_request(svc, template).await;
    }
}

/// The runtime every group runs its requests on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime")
}

/// A layer that wraps the response future and body and does nothing else:
/// what any layer that times requests to the end of the body pays for the
/// wrapping alone (the larger future and body moved through the runtime).
mod pass_through {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, ready};

    use http::Response;
    use http_body::{Body, Frame};
    use tower_service::Service;

    /// As much state as `BudgetLayer` carries per request (48 bytes).
    type State = Option<(std::sync::Arc<()>, std::time::Instant, [u64; 3])>;

    #[derive(Clone)]
    pub(crate) struct PassThrough<S>(pub(crate) S);

    impl<S, R, B> Service<R> for PassThrough<S>
    where
        S: Service<R, Response = Response<B>>,
        S::Future: Unpin,
    {
        type Response = Response<WrappedBody<B>>;
        type Error = S::Error;
        type Future = WrappedFuture<S::Future>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
            self.0.poll_ready(cx)
        }

        fn call(&mut self, req: R) -> Self::Future {
            WrappedFuture { inner: self.0.call(req), state: None }
        }
    }

    // Both are `Unpin` here (a ready future, a full body), so no pin projection.
    pub(crate) struct WrappedFuture<F> {
        inner: F,
        state: State,
    }

    impl<F, B, E> Future for WrappedFuture<F>
    where
        F: Future<Output = Result<Response<B>, E>> + Unpin,
    {
        type Output = Result<Response<WrappedBody<B>>, E>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let response = ready!(Pin::new(&mut self.inner).poll(cx))?;
            let state = self.state.take();
            Poll::Ready(Ok(response.map(|inner| WrappedBody { inner, state })))
        }
    }

    pub(crate) struct WrappedBody<B> {
        inner: B,
        state: State,
    }

    impl<B: Body + Unpin> Body for WrappedBody<B> {
        type Data = B::Data;
        type Error = B::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
            let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
            if frame.is_none() {
                self.state = None;
            }
            Poll::Ready(frame)
        }
    }
}

/// `BUDGET_LOOP=<variant>:<requests>`: runs the requests and returns `true`.
fn counting_loop() -> bool {
    let Ok(spec) = std::env::var("BUDGET_LOOP") else {
        return false;
    };
    let (variant, count) = spec.split_once(':').expect("BUDGET_LOOP=<variant>:<requests>");
    let n: u64 = count.parse().expect("a number of requests");
    let template = RouteTemplate::new("/api/blueprints/{id}");
    runtime().block_on(async {
        match variant {
            "bare" => requests(&mut Hello { clock: None }, Some(&template), n).await,
            "pass-through" => {
                requests(&mut pass_through::PassThrough(Hello { clock: None }), Some(&template), n).await;
            }
            _ => {
                let (_, _, matched, server_timing) = VARIANTS
                    .iter()
                    .copied()
                    .find(|v| v.0 == variant)
                    .expect("bare, pass-through, budgeted, fallback or server-timing");
                let (mut svc, _registry) = layered(server_timing);
                requests(&mut svc, matched.then_some(&template), n).await;
            }
        }
    });
    true
}

fn overhead(c: &mut Criterion) {
    let rt = runtime();
    let template = RouteTemplate::new("/api/blueprints/{id}");
    let mut group = c.benchmark_group("budget/overhead");

    let mut bare = Hello { clock: None };
    group.bench_function("bare service", |b| {
        b.to_async(&rt).iter(|| {
            let future = bare.call(request(Some(&template)));
            async move {
                let response = future.await.expect("infallible");
                black_box(response.into_body().collect().await.expect("infallible"))
            }
        })
    });

    for (_, name, matched, server_timing) in VARIANTS {
        let (mut svc, _registry) = layered(server_timing);
        let template = matched.then(|| template.clone());
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let future = svc.call(request(template.as_ref()));
                async move {
                    let response = future.await.expect("infallible");
                    black_box(response.into_body().collect().await.expect("infallible"))
                }
            })
        });
    }
    group.finish();
}

/// `budget/interleaved` (printed): the bare service and the budgeted and
/// fallback routes timed in alternating rounds, each round's difference to
/// the bare service taken within the round. Criterion measures each service
/// over its own seconds, one after the other, so machine drift between them
/// lands in the difference; here it is shared by both sides of each round.
fn interleaved(_: &mut Criterion) {
    const ROUNDS: usize = 40;
    const REQUESTS: u32 = 20_000;
    let rt = runtime();
    let template = RouteTemplate::new("/api/blueprints/{id}");
    let (mut budgeted, _budgeted_registry) = layered(false);
    let (mut fallback, _fallback_registry) = layered(false);
    let mut bare = Hello { clock: None };
    let n = u64::from(REQUESTS);
    // Each round's time for REQUESTS requests: bare, budgeted, fallback.
    let rounds = brisk_benches::alternating_rounds(
        ROUNDS,
        1,
        &mut [
            &mut |_| rt.block_on(requests(&mut bare, Some(&template), n)),
            &mut |_| rt.block_on(requests(&mut budgeted, Some(&template), n)),
            &mut |_| rt.block_on(requests(&mut fallback, None, n)),
        ],
    );
    // Per request, in nanoseconds.
    let rounds: Vec<[f64; 3]> = rounds.iter().map(|r| r.map(|t| t / f64::from(REQUESTS))).collect();
    let (bare_ns, _, _) = brisk_benches::median_range(rounds.iter().map(|r| r[0]).collect());
    for (i, name) in [(1, "budgeted route"), (2, "fallback route")] {
        let (over, low, high) = brisk_benches::median_range(rounds.iter().map(|r| r[i] - r[0]).collect());
        println!(
            "budget/interleaved: {name}: +{over:.0} ns over the bare service (median of {ROUNDS} rounds of {REQUESTS} requests each; rounds {low:.0} to {high:.0} ns; bare service median {bare_ns:.0} ns)"
        );
    }
}

/// Not a timing: prints the histogram memory of one route.
fn memory(_: &mut Criterion) {
    let rt = runtime();
    let cases = [(1, 3), (60, 3), (3600, 3), (1, 2), (3600, 2)];
    for (max_secs, figures) in cases {
        let max = Duration::from_secs(max_secs);
        let clock = ManualClock::new();
        let layer = BudgetLayer::builder(budgets()).clock(clock.clone()).significant_figures(figures).build();
        let template = RouteTemplate::new("/api/blueprints/{id}");
        rt.block_on(async {
            // 10,000 latencies spread geometrically from 100 µs to `max`.
            let steps = 10_000u32;
            let ratio = (max.as_secs_f64() / 100e-6).powf(1.0 / f64::from(steps - 1));
            for i in 0..steps {
                let latency = Duration::from_secs_f64(100e-6 * ratio.powi(i as i32));
                let mut svc = tower_layer::Layer::layer(&layer, Hello { clock: Some((clock.clone(), latency)) });
                let response = svc.call(request(Some(&template))).await.expect("infallible");
                black_box(response.into_body().collect().await.expect("infallible"));
            }
        });
        let report = layer.report();
        println!(
            "budget/memory: latencies up to {max:?}, {figures} significant figures: {} bytes of histograms for 1 route ({} samples)",
            layer.histogram_bytes(),
            report.routes[0].count
        );
    }
}

/// `budget/clock`: one read of each clock the layer can use (it reads its
/// clock twice per request): `MonotonicClock` (the default where tokio's time
/// runs), `TokioClock` (where it is paused), and `std::time::Instant::now()`.
fn clock(c: &mut Criterion) {
    let mut group = c.benchmark_group("budget/clock");
    group.bench_function("monotonic_clock", |b| b.iter(|| black_box(MonotonicClock.now())));
    group.bench_function("tokio_clock", |b| b.iter(|| black_box(TokioClock.now())));
    group.bench_function("std_instant_now", |b| b.iter(|| black_box(std::time::Instant::now())));
    group.finish();
}

criterion_group!(benches, overhead, interleaved, memory, clock);

fn main() {
    if counting_loop() {
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
