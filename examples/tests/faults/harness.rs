//! Running a fault scenario: the opt-in flag, one scenario at a time, and
//! what the scenarios read about the process and the service.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, header};

use crate::common::{Client, Reply};

/// The variable that turns the suite on.
pub const FLAG: &str = "BRISK_FAULTS";
/// How long the soak churns after its warm-up (`10m`, `90s`); two minutes when unset.
pub const SOAK_VAR: &str = "BRISK_SOAK";

/// Scenarios kill and freeze servers, load both cores and measure the
/// process's memory: they run one at a time, whatever the test harness does.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `scenario` on a two-worker runtime when [`FLAG`] is `1`; otherwise
/// says that it is skipped.
pub fn run<F: Future<Output = ()>>(name: &str, scenario: impl FnOnce() -> F) {
    if std::env::var(FLAG).as_deref() != Ok("1") {
        println!("skipped: fault scenario `{name}` runs only with {FLAG}=1");
        return;
    }
    // A scenario that failed poisons the lock; the next one still runs.
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    println!("== fault scenario `{name}`");
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a tokio runtime");
    // Servers are started by the scenario's own future, on this thread, so
    // they stop with it (brisk-testkit's parent-death signal).
    runtime.block_on(scenario());
}

/// The soak's length from [`SOAK_VAR`].
pub fn soak_duration() -> Duration {
    match std::env::var(SOAK_VAR) {
        Ok(text) => humantime::parse_duration(text.trim())
            .unwrap_or_else(|e| panic!("{SOAK_VAR}={text:?} is not a duration (e.g. 10m, 90s): {e}")),
        Err(_) => Duration::from_secs(120),
    }
}

/// This process's resident set (`VmRSS` of `/proc/self/status`), in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status is readable on Linux");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS in /proc/self/status");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS: <n> kB");
    kib * 1024
}

/// A request as a client at `peer` sends it (the API rate limit keys on
/// the peer address, as `blueprint_api` serves with `ConnectInfo`).
pub fn request(method: Method, path: &str, peer: IpAddr) -> axum::http::request::Builder {
    let mut builder = Request::builder().method(method).uri(path);
    builder
        .extensions_mut()
        .expect("a fresh builder has no error")
        .insert(ConnectInfo(std::net::SocketAddr::new(peer, 40_000)));
    builder
}

/// `POST /api/blueprints` as `token`, named after `key`, which is also its
/// `Idempotency-Key`.
pub fn create_blueprint(key: &str, token: &str, peer: IpAddr) -> Request<Body> {
    let body = serde_json::json!({
        "name": format!("bp {key}"),
        "description": format!("written under {key}"),
        "category": "api",
        "tags": ["fault", key],
    });
    request(Method::POST, "/api/blueprints", peer)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_string()))
        .expect("a valid request")
}

/// A GET as a client at `peer`.
pub fn get(path: &str, peer: IpAddr) -> Request<Body> {
    request(Method::GET, path, peer).body(Body::empty()).expect("a valid request")
}

/// Sends `request`, giving up after `limit`: `None` means the service did
/// not answer in time (a hang, as far as a client can tell).
pub async fn send_within(client: &Client, request: Request<Body>, limit: Duration) -> Option<Reply> {
    tokio::time::timeout(limit, client.send(request)).await.ok()
}

/// `/cache/stats` of an instance, as JSON.
pub async fn cache_stats(client: &Client) -> serde_json::Value {
    let reply = client.get("/cache/stats").await;
    assert_eq!(reply.status, 200, "/cache/stats: {}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

/// The value of the sample `series` (name and labels, as written) in an
/// instance's `/metrics`.
pub async fn metric(client: &Client, series: &str) -> Option<f64> {
    let reply = client.get("/metrics").await;
    assert_eq!(reply.status, 200, "/metrics answered {}", reply.status);
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Whether the reply is an RFC 9457 problem with this status.
pub fn is_problem(reply: &Reply, status: u16) -> bool {
    reply.status.as_u16() == status && reply.header("content-type") == Some("application/problem+json")
}
