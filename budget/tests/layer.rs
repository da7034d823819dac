//! The layer behind axum and bare tower services, with paused tokio time so every
//! latency is exact.
#![cfg(all(feature = "axum", feature = "prometheus"))]

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Path;
use axum::response::Response;
use axum::routing::get;
use brisk_budget::{BudgetLayer, BudgetReport, Budgets, RegressionPolicy, RouteBudget, RouteTemplate};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use tower::{Service, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn call<S, B>(svc: &mut S, method: Method, uri: &str) -> (StatusCode, http::HeaderMap, Bytes)
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let req = Request::builder().method(method).uri(uri).body(Body::empty()).unwrap();
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, bytes)
}

fn exposition(layer: &BudgetLayer) -> String {
    let mut registry = Registry::default();
    layer.register(&mut registry);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
    out
}

/// `GET /items/{ms}`: sleeps `ms`, records one query per 10 ms, returns `ms` bytes.
fn app(layer: BudgetLayer) -> Router {
    Router::new()
        .route(
            "/items/{ms}",
            get(|Path(n): Path<u64>| async move {
                for _ in 0..n / 10 {
                    brisk_budget::record("db_queries", 1);
                    tokio::time::sleep(ms(10)).await;
                }
                tokio::time::sleep(ms(n % 10)).await;
                ([("x-cache", if n <= 10 { "HIT" } else { "MISS" })], vec![b'x'; n as usize])
            }),
        )
        .route("/uncached", get(|| async { "no cache header" }))
        .layer(layer)
}

#[tokio::test(start_paused = true)]
async fn exact_percentiles_and_violations() {
    let budgets = Budgets::new().route(
        Method::GET,
        "/items/:ms",
        RouteBudget::new().p50(ms(10)).p95(ms(15)).p99(ms(40)).max_payload(40).db_queries(4).cache_required(true),
    );
    let layer = BudgetLayer::builder(budgets).min_samples(100).build();
    let mut svc = app(layer.clone());
    // 90 × 10 ms, 5 × 20 ms, 4 × 40 ms, 1 × 80 ms.
    let plan = [(10, 90), (20, 5), (40, 4), (80, 1)];
    for (latency, times) in plan {
        for _ in 0..times {
            let (status, _, body) = call(&mut svc, Method::GET, &format!("/items/{latency}")).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body.len() as u64, latency);
        }
    }
    let report = layer.report();
    let route = report.route("GET /items/{ms}").expect("the matched route, not raw paths");
    assert_eq!(report.routes.len(), 1);
    assert_eq!(route.count, 100);
    let latency = route.latency.unwrap();
    assert_eq!((latency.p50_us, latency.p95_us, latency.p99_us, latency.max_us), (10_000, 20_000, 40_000, 80_000));
    assert_eq!(route.payload_max_bytes, 80);
    assert_eq!(route.queries_max, 8);
    assert_eq!(route.cache.hit, 90);
    assert_eq!(route.cache.miss, 10);
    assert_eq!(route.cache.hit_share, Some(0.9));

    use brisk_budget::report::Outcome::{Fail, Pass};
    let outcome = |b: &str| route.check(b).unwrap().outcome;
    assert_eq!(outcome("p50"), Pass, "a p50 exactly at the limit passes");
    assert_eq!(outcome("p95"), Fail);
    assert_eq!(outcome("p99"), Pass);
    assert_eq!(outcome("max_payload"), Fail);
    assert_eq!(outcome("db_queries"), Fail);
    assert_eq!(outcome("cache_required"), Pass, "MISS is served through the cache");
    assert!(!report.passed());

    // Requests over each threshold: 10 over 10 ms and 15 ms, 1 over 40 ms; 5 bodies
    // over 40 bytes (the 80-byte one and... the 40-byte ones are not over); 1 with 8 queries > 4.
    let v = |b: &str| route.violations.get(b).copied().unwrap_or(0);
    assert_eq!((v("p50"), v("p95"), v("p99")), (10, 10, 1));
    assert_eq!(v("max_payload"), 1);
    assert_eq!(v("db_queries"), 1);
    assert_eq!(v("cache_required"), 0);

    let text = exposition(&layer);
    assert!(text.contains(r#"budget_violations_total{method="GET",route="/items/{ms}",budget="p95"} 10"#), "{text}");
    assert!(text.contains(r#"budget_violations_total{method="GET",route="/items/{ms}",budget="db_queries"} 1"#));
    assert!(text.contains(r#"http_server_requests_total{method="GET",route="/items/{ms}",status="200"} 100"#));
    assert!(text.contains(r#"http_server_request_duration_seconds_count{method="GET",route="/items/{ms}"} 100"#));
    assert!(text.contains(r#"http_server_active_requests{method="GET",route="/items/{ms}"} 0"#));

    let failures = report.check().unwrap_err();
    let lines = failures.failures();
    assert_eq!(lines.len(), 3, "{failures}");
    assert_eq!(lines[0], "GET /items/{ms}: p95: 20.000ms over 15.000ms");
    let panic = std::panic::catch_unwind(|| report.assert_within()).unwrap_err();
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("3 performance budget(s) not met"), "{message}");
}

#[tokio::test(start_paused = true)]
async fn cache_required_reads_x_cache() {
    let budgets = Budgets::new().route(Method::GET, "/items/{ms}", RouteBudget::new().cache_required(true)).route(
        Method::GET,
        "/uncached",
        RouteBudget::new().cache_required(true),
    );
    let layer = BudgetLayer::new(budgets);
    let mut svc = app(layer.clone());
    for uri in ["/items/5", "/items/20", "/uncached", "/uncached"] {
        call(&mut svc, Method::GET, uri).await;
    }
    let report = layer.report();
    let items = report.route("GET /items/{ms}").unwrap();
    assert_eq!((items.cache.hit, items.cache.miss), (1, 1));
    assert!(items.passed());
    let uncached = report.route("GET /uncached").unwrap();
    assert_eq!(uncached.cache.absent, 2);
    assert_eq!(uncached.cache.hit_share, Some(0.0));
    let check = uncached.check("cache_required").unwrap();
    assert_eq!(check.actual, Some(2));
    assert_eq!(check.outcome, brisk_budget::report::Outcome::Fail);
    assert_eq!(uncached.violations.get("cache_required"), Some(&2));

    // BYPASS breaks the budget too; STALE does not.
    let layer = BudgetLayer::new(Budgets::new().route(Method::GET, "/", RouteBudget::new().cache_required(true)));
    let mut svc =
        tower::ServiceBuilder::new().layer(layer.clone()).service(service_fn(|req: Request<Body>| async move {
            let verdict = req.headers().get("want").cloned().unwrap();
            Ok::<_, Infallible>(Response::builder().header("x-cache", verdict).body(Body::empty()).unwrap())
        }));
    for verdict in ["STALE", "BYPASS", "HIT"] {
        let mut req = Request::get("/").header("want", verdict).body(Body::empty()).unwrap();
        req.extensions_mut().insert(RouteTemplate::new("/"));
        svc.ready().await.unwrap().call(req).await.unwrap().into_body().collect().await.unwrap();
    }
    let report = layer.report();
    let route = report.route("GET /").unwrap();
    assert_eq!((route.cache.stale, route.cache.bypass, route.cache.hit), (1, 1, 1));
    assert_eq!(route.violations.get("cache_required"), Some(&1));
}

#[tokio::test(start_paused = true)]
async fn cardinality_stays_bounded_with_10_000_raw_paths() {
    // No router: every request falls back to one label.
    let layer = BudgetLayer::builder(Budgets::new()).fallback_route("other").build();
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::from("ok"))) }));
    for i in 0..10_000 {
        call(&mut svc, Method::GET, &format!("/raw/{i}/path?q={i}")).await;
    }
    let report = layer.report();
    assert_eq!(report.routes.len(), 1);
    assert_eq!(report.routes[0].route, "GET other");
    assert_eq!(report.routes[0].count, 10_000);
    let text = exposition(&layer);
    assert_eq!(text.lines().filter(|l| l.starts_with("http_server_requests_total{")).count(), 1, "{text}");
    assert!(!text.contains("/raw/"));

    // Behind axum: 10,000 ids are one template.
    let layer = BudgetLayer::new(Budgets::new());
    let mut svc = app(layer.clone());
    for i in 0..10_000 {
        call(&mut svc, Method::GET, &format!("/items/{}", i % 3)).await;
        call(&mut svc, Method::GET, &format!("/nowhere/{i}")).await;
    }
    let report = layer.report();
    let names: Vec<&str> = report.routes.iter().map(|r| r.route.as_str()).collect();
    assert_eq!(names, vec!["GET /items/{ms}", "GET unmatched"]);
    let text = exposition(&layer);
    let series = text.lines().filter(|l| l.starts_with("http_server_requests_total{")).count();
    assert_eq!(series, 2, "{text}");

    // Unknown methods share `_OTHER`; past `max_routes`, templates share the fallback.
    let layer = BudgetLayer::builder(Budgets::new()).max_routes(10).build();
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::empty())) }));
    for i in 0..100 {
        let method = Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
        let mut req = Request::builder().method(method).uri("/").body(Body::empty()).unwrap();
        req.extensions_mut().insert(RouteTemplate::new(format!("/t{i}")));
        svc.ready().await.unwrap().call(req).await.unwrap();
    }
    let report = layer.report();
    assert_eq!(report.routes.len(), 11, "10 routes and the fallback");
    assert!(report.routes.iter().all(|r| r.route.starts_with("_OTHER ")));
    assert_eq!(report.route("_OTHER unmatched").unwrap().count, 90);
}

#[tokio::test(start_paused = true)]
async fn red_histograms_count_warm_up_requests_and_survive_a_reset() {
    let layer = BudgetLayer::builder(Budgets::new()).warm_up(2).build();
    let mut svc = app(layer.clone());
    for _ in 0..3 {
        call(&mut svc, Method::GET, "/items/1").await;
    }
    assert_eq!(layer.report().route("GET /items/{ms}").unwrap().count, 1, "two were warm-up");
    layer.reset();
    assert_eq!(layer.report().route("GET /items/{ms}").unwrap().count, 0);
    let text = exposition(&layer);
    assert!(
        text.contains(r#"http_server_request_duration_seconds_count{method="GET",route="/items/{ms}"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_server_request_duration_seconds_bucket{le="0.005",method="GET",route="/items/{ms}"} 3"#)
    );
    assert!(text.contains(r#"http_server_response_body_size_bytes_sum{method="GET",route="/items/{ms}"} 3.0"#));
    assert!(text.contains(r#"http_server_response_body_size_bytes_count{method="GET",route="/items/{ms}"} 3"#));
}

#[tokio::test(start_paused = true)]
async fn exposition_parses_as_openmetrics_and_buckets_hold_every_threshold() {
    let budgets = Budgets::from_yaml_str(
        "api_endpoints:\n  GET /items/:ms: {p50: 30ms, p95: 110ms, p99: 333ms, max_payload: 20KiB}\n",
    )
    .unwrap();
    let layer = BudgetLayer::new(budgets);
    let buckets = layer.duration_buckets();
    for edge in [0.03, 0.11, 0.333, 0.005, 10.0] {
        assert!(buckets.contains(&edge), "{edge} in {buckets:?}");
    }
    let mut svc = app(layer.clone());
    call(&mut svc, Method::GET, "/items/20").await;
    call(&mut svc, Method::GET, "/items/120").await;
    call(&mut svc, Method::POST, "/items/1").await; // 405 from axum, same route
    let text = exposition(&layer);
    assert!(
        text.contains(r#"http_server_request_duration_seconds_bucket{le="0.11",method="GET",route="/items/{ms}"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"http_server_response_body_size_bytes_bucket{le="20480.0","#), "{text}");
    assert!(text.contains(r#"status="405""#), "{text}");

    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&text).expect("valid OpenMetrics");
    for family in [
        "http_server_request_duration_seconds",
        "http_server_requests",
        "http_server_active_requests",
        "http_server_response_body_size_bytes",
        "budget_violations",
    ] {
        assert!(parsed.families.contains_key(family), "{family} missing: {:?}", parsed.families.keys());
    }
}

pin_project_lite::pin_project! {
    /// A body that sends its one frame after a delay, recording a query first.
    struct SlowBody {
        #[pin]
        sleep: tokio::time::Sleep,
        done: bool,
    }
}

impl http_body::Body for SlowBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        std::task::ready!(this.sleep.poll(cx));
        *this.done = true;
        brisk_budget::record("db_queries", 1);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"streamed")))))
    }
}

use std::future::Future as _;

#[tokio::test(start_paused = true)]
async fn latency_runs_to_the_end_of_the_body_and_counters_follow_the_stream() {
    let layer = BudgetLayer::builder(Budgets::new()).server_timing(true).build();
    let mut svc = tower::ServiceBuilder::new().layer(layer.clone()).service(service_fn(|_req: Request<Body>| async {
        brisk_budget::record("db_queries", 2);
        tokio::time::sleep(ms(10)).await;
        Ok::<_, Infallible>(Response::new(SlowBody { sleep: tokio::time::sleep(ms(30)), done: false }))
    }));
    let res = svc.ready().await.unwrap().call(Request::new(Body::empty())).await.unwrap();
    assert_eq!(res.headers()["server-timing"], r#"app;dur=10.000, db_queries;desc="2""#);
    // The head arrived at 10 ms; nothing is recorded until the body ends.
    assert_eq!(layer.report().routes.first().map_or(0, |r| r.count), 0);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"streamed");
    let report = layer.report();
    let route = &report.routes[0];
    assert_eq!(route.latency.unwrap().max_us, 40_000, "10 ms handler + 30 ms body");
    assert_eq!(route.payload_max_bytes, 8);
    assert_eq!(route.queries_max, 3, "the query recorded while streaming counts");

    // A body dropped half-way still ends the request.
    let res = svc.ready().await.unwrap().call(Request::new(Body::empty())).await.unwrap();
    tokio::time::sleep(ms(5)).await;
    drop(res);
    let report = layer.report();
    assert_eq!(report.routes[0].count, 2);
    assert_eq!(report.routes[0].latency.unwrap().p50_us, 15_000);
    assert!(exposition(&layer).contains(r#"http_server_active_requests{method="GET",route="unmatched"} 0"#));
}

#[tokio::test(start_paused = true)]
async fn server_timing_names_budgets_already_broken() {
    let budgets =
        Budgets::new().route(Method::GET, "/items/{ms}", RouteBudget::new().db_queries(1).cache_required(true));
    let layer = BudgetLayer::builder(budgets).server_timing(true).build();
    let mut svc = app(layer.clone());
    let (_, headers, _) = call(&mut svc, Method::GET, "/items/30").await;
    assert_eq!(headers["server-timing"], r#"app;dur=30.000, db_queries;desc="3", budget;desc="db_queries""#);
    let (_, headers, _) = call(&mut svc, Method::GET, "/items/0").await;
    assert_eq!(headers["server-timing"], "app;dur=0.000");
}

#[tokio::test(start_paused = true)]
async fn inner_errors_are_counted() {
    let layer = BudgetLayer::new(Budgets::new());
    let mut svc = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|_req: Request<Body>| async { Err::<Response<Body>, _>(std::io::Error::other("down")) }));
    let err = svc.ready().await.unwrap().call(Request::new(Body::empty())).await.unwrap_err();
    assert_eq!(err.to_string(), "down");
    assert_eq!(layer.report().routes[0].errors, 1);
    assert!(exposition(&layer).contains(r#"status="error"} 1"#));
}

#[tokio::test(start_paused = true)]
async fn warm_up_and_min_samples_keep_budget_tests_honest() {
    let budgets = Budgets::new().route(Method::GET, "/items/{ms}", RouteBudget::new().p95(ms(25)));
    let layer = BudgetLayer::builder(budgets).warm_up(3).min_samples(10).build();
    let mut svc = app(layer.clone());
    // A cold start: three slow requests, not judged.
    for _ in 0..3 {
        call(&mut svc, Method::GET, "/items/300").await;
    }
    for _ in 0..9 {
        call(&mut svc, Method::GET, "/items/20").await;
    }
    let report = layer.report();
    let route = report.route("GET /items/{ms}").unwrap();
    assert_eq!((route.count, route.warm_up_skipped), (9, 3));
    assert_eq!(route.check("p95").unwrap().outcome, brisk_budget::report::Outcome::InsufficientSamples);
    assert!(report.check().unwrap_err().to_string().contains("insufficient samples"));
    call(&mut svc, Method::GET, "/items/20").await;
    layer.report().assert_within();
    assert!(route.violations.is_empty(), "warm-up requests are not violations");

    // A budgeted route never requested is reported, and not as passed.
    let layer = BudgetLayer::new(Budgets::new().route(Method::GET, "/never", RouteBudget::new().p95(ms(1))));
    let report = layer.report();
    assert_eq!(report.routes.len(), 1);
    assert!(!report.passed());
}

#[tokio::test(start_paused = true)]
async fn reports_round_trip_and_catch_regressions() {
    let budgets = Budgets::new().route(Method::GET, "/items/{ms}", RouteBudget::new().p95(ms(100)).db_queries(5));
    let run = |latency: u64| {
        let budgets = budgets.clone();
        async move {
            let layer = BudgetLayer::new(budgets);
            let mut svc = app(layer.clone());
            for _ in 0..100 {
                call(&mut svc, Method::GET, &format!("/items/{latency}")).await;
            }
            layer.report()
        }
    };
    let baseline = run(20).await;
    let saved = baseline.to_json();
    let baseline = BudgetReport::from_json(&saved).unwrap();
    assert_eq!(BudgetReport::from_json(&saved).unwrap(), baseline);
    assert!(BudgetReport::from_json("{}").is_err());

    let same = run(20).await;
    same.assert_no_regression(&baseline, &RegressionPolicy::default());

    // 20 ms → 40 ms: within the 100 ms budget, but a regression of the p50/p95/p99
    // and one more query per request.
    let slower = run(40).await;
    slower.assert_within();
    let regressions = slower.compare(&baseline, &RegressionPolicy::default().latency_increase(0.5));
    assert_eq!(regressions.compared, vec!["GET /items/{ms}".to_owned()]);
    let measures: Vec<&str> = regressions.regressions.iter().map(|r| r.measure.as_str()).collect();
    assert_eq!(measures, vec!["p50", "p95", "p99", "max_payload", "db_queries"]);
    assert_eq!(regressions.regressions[1].to_string(), "GET /items/{ms}: p95 went from 20000 to 40000 (+100.0%)");
    // Within a generous policy nothing regressed.
    let lenient = RegressionPolicy::default().latency_increase(1.0).payload_increase(1.0).counter_increase(2);
    assert!(slower.compare(&baseline, &lenient).passed());
    // Too few samples: skipped, not judged.
    let strict = RegressionPolicy::default().min_samples(1000);
    assert_eq!(slower.compare(&baseline, &strict).skipped.len(), 1);
}

#[cfg(feature = "junit")]
#[tokio::test(start_paused = true)]
async fn junit_lists_each_budget() {
    let budgets = Budgets::new().route(Method::GET, "/items/{ms}", RouteBudget::new().p95(ms(15)).db_queries(5));
    let layer = BudgetLayer::new(budgets);
    let mut svc = app(layer.clone());
    call(&mut svc, Method::GET, "/items/20").await;
    let xml = layer.report().to_junit();
    assert!(
        xml.contains(r#"<testsuite name="performance budgets" tests="2" skipped="0" errors="0" failures="1""#),
        "{xml}"
    );
    assert!(xml.contains(r#"<testcase name="p95" classname="GET /items/{ms}""#), "{xml}");
    assert!(xml.contains("p95: 20.000ms over 15.000ms"), "{xml}");
}

#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn warnings_are_rate_limited_per_route_and_budget() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let budgets = Budgets::new().route(Method::GET, "/items/{ms}", RouteBudget::new().max_payload(1));
    let layer = BudgetLayer::builder(budgets).warn_interval(Duration::from_secs(10)).build();
    let mut svc = app(layer.clone());
    for _ in 0..5 {
        call(&mut svc, Method::GET, "/items/5").await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    call(&mut svc, Method::GET, "/items/5").await;

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("performance budget exceeded")).collect();
    assert_eq!(warnings.len(), 2, "{text}");
    assert!(warnings[0].contains("suppressed=0"), "{}", warnings[0]);
    assert!(warnings[1].contains("suppressed=4"), "{}", warnings[1]);
    assert!(warnings[1].contains("budget=max_payload"), "{}", warnings[1]);
    assert!(warnings[1].contains("body of 5 bytes, over 1"), "{}", warnings[1]);
    assert_eq!(layer.report().routes[0].violations.get("max_payload"), Some(&6));
}

#[tokio::test(start_paused = true)]
async fn the_window_forgets_what_the_run_remembers() {
    let layer = BudgetLayer::builder(Budgets::new()).window(Duration::from_secs(60), 6).build();
    let mut svc = app(layer.clone());
    for _ in 0..10 {
        call(&mut svc, Method::GET, "/items/80").await;
    }
    tokio::time::sleep(Duration::from_secs(70)).await;
    for _ in 0..10 {
        call(&mut svc, Method::GET, "/items/10").await;
    }
    let report = layer.report();
    let route = report.route("GET /items/{ms}").unwrap();
    let run = route.latency.unwrap();
    assert_eq!((run.count, run.p50_us, run.max_us), (20, 10_000, 80_000));
    let window = route.window.unwrap();
    assert_eq!(window.count, 10, "the slow requests left the 60 s window");
    assert_eq!(window.max_us, 9_984, "10 ms at the window's 2 significant figures, rounded down");

    // With 2 significant figures the whole-run histogram rounds too, and takes less memory.
    let coarse = BudgetLayer::builder(Budgets::new()).significant_figures(2).build();
    let mut svc = app(coarse.clone());
    call(&mut svc, Method::GET, "/items/80").await;
    assert!(
        coarse.histogram_bytes() < layer.histogram_bytes() / 3,
        "{} vs {}",
        coarse.histogram_bytes(),
        layer.histogram_bytes()
    );
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_is_recorded_and_leaves_no_active_request() {
    let layer = BudgetLayer::new(Budgets::new());
    let mut svc = tower::ServiceBuilder::new().layer(layer.clone()).service(service_fn(|_req: Request<Body>| async {
        std::future::pending::<()>().await;
        Ok::<_, Infallible>(Response::new(Body::empty()))
    }));
    let future = svc.ready().await.unwrap().call(Request::new(Body::empty()));
    assert!(exposition(&layer).contains(r#"http_server_active_requests{method="GET",route="unmatched"} 1"#));
    let timed_out = tokio::time::timeout(ms(20), future).await;
    assert!(timed_out.is_err());
    let report = layer.report();
    assert_eq!((report.routes[0].count, report.routes[0].errors), (1, 1));
    assert_eq!(report.routes[0].latency.unwrap().max_us, 20_000);
    assert!(exposition(&layer).contains(r#"http_server_active_requests{method="GET",route="unmatched"} 0"#));
}

#[tokio::test(start_paused = true)]
async fn cache_misses_can_be_made_to_break_the_budget_once_warm() {
    let budgets = Budgets::new().route(Method::GET, "/items/{ms}", RouteBudget::new().cache_required(true));
    let layer = BudgetLayer::builder(budgets).warm_up(1).cache_misses_break_budget(true).build();
    let mut svc = app(layer.clone());
    // The warm-up miss is not judged; the later miss is.
    for uri in ["/items/20", "/items/5", "/items/20", "/items/5"] {
        call(&mut svc, Method::GET, uri).await;
    }
    let report = layer.report();
    let route = report.route("GET /items/{ms}").unwrap();
    assert_eq!((route.cache.hit, route.cache.miss), (2, 1));
    assert_eq!(route.violations.get("cache_required"), Some(&1));
    let check = route.check("cache_required").unwrap();
    assert_eq!((check.actual, check.outcome), (Some(1), brisk_budget::report::Outcome::Fail));
}

#[tokio::test(start_paused = true)]
async fn an_injected_clock_times_requests_and_tokio_clock_follows_paused_time() {
    // A manual clock moves only when told: paused tokio time moving does not count.
    let clock = brisk_budget::ManualClock::new();
    let layer = BudgetLayer::builder(Budgets::new()).clock(clock.clone()).build();
    let mut svc = tower::ServiceBuilder::new().layer(layer.clone()).service(service_fn(move |_req: Request<Body>| {
        let clock = clock.clone();
        async move {
            clock.advance(ms(7));
            tokio::time::sleep(ms(50)).await;
            Ok::<_, Infallible>(Response::new(Body::from("x")))
        }
    }));
    call(&mut svc, Method::GET, "/").await;
    assert_eq!(layer.report().routes[0].latency.unwrap().max_us, 7_000);

    // `TokioClock` given explicitly times as the default does.
    let layer = BudgetLayer::builder(Budgets::new()).clock(brisk_budget::TokioClock).build();
    let mut svc = tower::ServiceBuilder::new().layer(layer.clone()).service(service_fn(|_req: Request<Body>| async {
        tokio::time::sleep(ms(12)).await;
        Ok::<_, Infallible>(Response::new(Body::from("x")))
    }));
    call(&mut svc, Method::GET, "/").await;
    assert_eq!(layer.report().routes[0].latency.unwrap().max_us, 12_000);
}

#[tokio::test(start_paused = true)]
async fn requests_are_counted_by_status_and_survive_a_reset() {
    let layer = BudgetLayer::new(Budgets::new());
    // One route (the fallback) answering with the status its path names.
    let mut svc =
        tower::ServiceBuilder::new().layer(layer.clone()).service(service_fn(|req: Request<Body>| async move {
            let status = req.uri().path().trim_start_matches('/').parse::<u16>().unwrap();
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(response)
        }));
    // The route's first status, then others, then the first again.
    for path in ["/200", "/404", "/503", "/404", "/200"] {
        call(&mut svc, Method::GET, path).await;
    }
    layer.reset();
    call(&mut svc, Method::GET, "/200").await;
    let text = exposition(&layer);
    let series = |status: &str| {
        let prefix = format!(r#"http_server_requests_total{{method="GET",route="unmatched",status="{status}"}} "#);
        text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map(str::to_owned)
    };
    assert_eq!(series("200").as_deref(), Some("3"), "{text}");
    assert_eq!(series("404").as_deref(), Some("2"), "{text}");
    assert_eq!(series("503").as_deref(), Some("1"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("http_server_requests_total{")).count(), 3, "{text}");
    assert_eq!(text.matches("# TYPE http_server_requests counter").count(), 1, "{text}");
    assert!(text.contains(r#"http_server_active_requests{method="GET",route="unmatched"} 0"#), "{text}");
    assert_eq!(layer.report().routes[0].count, 1, "the report starts again after the reset");
    // A layer that has seen no request writes no RED family.
    let idle = exposition(&BudgetLayer::new(Budgets::new()));
    assert!(!idle.contains("http_server_"), "{idle}");
}

/// Built where tokio's time runs, the layer times requests by the monotonic
/// clock: a handler that sleeps 25 ms of real time takes at least that long.
#[tokio::test]
async fn running_time_is_timed_by_the_default_clock() {
    let layer = BudgetLayer::new(Budgets::new());
    let mut svc = app(layer.clone());
    let started = std::time::Instant::now();
    call(&mut svc, Method::GET, "/items/25").await;
    let elapsed = started.elapsed();
    let report = layer.report();
    let latency = report.route("GET /items/{ms}").unwrap().latency.unwrap();
    assert!(latency.max_us >= 25_000, "{latency:?}");
    // The histogram keeps 3 significant figures.
    assert!(latency.max_us as u128 <= elapsed.as_micros() * 1_001 / 1_000 + 1, "{latency:?} against {elapsed:?}");
}
