//! brisk-budget: what the budget layer adds to a request, and what a route costs in memory.
//!
//! - `budget/overhead`: one request through a service that answers at once
//!   (call, response, body drained), bare and through `BudgetLayer` (a
//!   budgeted route with every kind of budget and metrics registered; the
//!   fallback route; with `Server-Timing`). The difference is the layer's cost.
//! - `budget/memory` (printed, not timed): the bytes of histograms per route
//!   after 10,000 requests with latencies spread up to 1 s, 60 s and 1 h (the
//!   histograms' ceiling, so the last figure is the bound).
//!
//! `cargo bench -p brisk-benches --bench budget`

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::Duration;

use brisk_budget::{BudgetLayer, Budgets, ManualClock, RouteBudget, RouteTemplate};
use criterion::{Criterion, criterion_group, criterion_main};
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

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
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

    let variants: [(&str, bool, bool); 3] = [
        ("BudgetLayer, budgeted route", true, false),
        ("BudgetLayer, fallback route", false, false),
        ("BudgetLayer, budgeted route + Server-Timing", true, true),
    ];
    for (name, matched, server_timing) in variants {
        let layer = BudgetLayer::builder(budgets()).server_timing(server_timing).build();
        let mut registry = Registry::default();
        layer.register(&mut registry);
        let mut svc = tower_layer::Layer::layer(&layer, Hello { clock: None });
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

/// Not a timing: prints the histogram memory of one route.
fn memory(_: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
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

criterion_group!(benches, overhead, memory);
criterion_main!(benches);
