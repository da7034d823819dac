//! Redis killed (`SIGKILL`) and frozen (`SIGSTOP`) under load.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::http::Method;
use brisk_testkit::require;
use serde_json::json;

use crate::common::{Client, config};
use crate::harness::{self, cache_stats, get, metric, send_within};
use crate::load::{NO_ANSWER, Outcome, Recorder, Summary, ms};

/// brisk-cache's timeout of each Redis call, which the example keeps.
const CACHE_L2_TIMEOUT: Duration = Duration::from_millis(250);
/// Longer than any answer the service should take: past it a request counts as unanswered.
const HANG: Duration = Duration::from_secs(10);
/// Blueprint ids the load reads again and again (cached after the first read).
const HOT: std::ops::RangeInclusive<i64> = 1..=40;
/// Blueprint ids the load reads with a random `?fields=`: almost every read
/// is a key no tier holds, so it goes to the database.
const COLD: std::ops::RangeInclusive<i64> = 41..=1000;
/// Blueprint ids kept out of the load, for probing the shared tier.
const PROBES: std::ops::RangeInclusive<i64> = 1001..=1200;
const FIELDS: &[&str] =
    &["id", "name", "description", "category", "tags", "version", "owner_id", "owner", "created_at", "updated_at"];

fn vars<'a>(db: &'a str, redis: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("DATABASE_URL", db),
        ("REDIS_URL", redis),
        ("DB_POOL_SIZE", "8"),
        ("DEPLOY_DURATION", "0s"),
        // Load comes from a handful of addresses; the per-IP limit must not
        // be what answers it. Deploys keep their default, 10 per hour.
        ("API_RATE_LIMIT", "100000/1m"),
    ]
}

/// A `?fields=` selection from the bits of `mask` (1..=1023).
pub fn fields(mask: u32) -> String {
    FIELDS.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, f)| *f).collect::<Vec<_>>().join(",")
}

/// The mixed load: reads of hot (cached) keys, reads of cold keys, pages and
/// the stats summary (invalidated by the writes), and creates.
struct MixedLoad {
    clients: Vec<Arc<Client>>,
    token: String,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    writes: bool,
}

impl MixedLoad {
    fn start(self: Arc<Self>, workers: u8) -> Vec<tokio::task::JoinHandle<()>> {
        (0..workers)
            .map(|worker| {
                let load = self.clone();
                tokio::spawn(async move { load.worker(worker).await })
            })
            .collect()
    }

    async fn worker(&self, worker: u8) {
        let peer = IpAddr::V4(Ipv4Addr::new(10, 1, worker, 1));
        let mut n: u64 = 0;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let client = &self.clients[(n as usize + usize::from(worker)) % self.clients.len()];
            let roll = fastrand::u32(0..100);
            let (kind, request) = match roll {
                0..60 => ("cached read", get(&format!("/api/blueprints/{}", fastrand::i64(HOT)), peer)),
                60..80 => {
                    let path =
                        format!("/api/blueprints/{}?fields={}", fastrand::i64(COLD), fields(fastrand::u32(1..1024)));
                    ("uncached read", get(&path, peer))
                }
                80..85 => ("page read", get("/api/blueprints?limit=20", peer)),
                85..90 => ("page read", get("/api/projects/stats/summary", peer)),
                _ if self.writes => {
                    let key = format!("mixed-{worker}-{n}");
                    ("write", harness::create_blueprint(&key, &self.token, peer))
                }
                _ => ("cached read", get(&format!("/api/blueprints/{}", fastrand::i64(HOT)), peer)),
            };
            let started = Instant::now();
            let status = send_within(client, request, HANG).await.map_or(NO_ANSWER, |r| r.status.as_u16());
            self.recorder.record(kind, status, started);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn print_phases(recorder: &Recorder, phases: &[(&str, Duration, Duration)], kinds: &[&str]) {
    for (phase, from, to) in phases {
        for kind in kinds {
            let outcomes = recorder.select(|o: &Outcome| o.kind == *kind && o.at >= *from && o.at < *to);
            println!("  {phase:<22} {kind:<14} {}", Summary::of(&outcomes));
        }
    }
}

async fn sleep_until(recorder: &Recorder, at: Duration) {
    tokio::time::sleep(at.saturating_sub(recorder.elapsed())).await;
}

/// Redis is killed 20 s into a 60 s mixed load on two instances and started
/// again 10 s later.
pub async fn killed_during_mixed_load() {
    const KILL_AT: Duration = Duration::from_secs(20);
    const RESTART_AT: Duration = Duration::from_secs(30);
    const END_AT: Duration = Duration::from_secs(60);

    let pg = require!(brisk_testkit::postgres().await);
    let mut redis = require!(brisk_testkit::redis().await);
    let (db_url, redis_url) = (pg.url(), redis.url().to_owned());
    let vars = vars(&db_url, &redis_url);
    let a = blueprint::App::start(config(&vars)).await.expect("instance a starts");
    let b = blueprint::App::start(config(&vars)).await.expect("instance b starts");
    let (ca, cb) = (Arc::new(Client { router: a.router() }), Arc::new(Client { router: b.router() }));

    // The deploy limit's user gets a project now; it deploys only while Redis is down.
    let limited_user = 5;
    let limited_token = a.token_of(limited_user).expect("seeded user 5");
    let project = ca
        .call(
            Method::POST,
            "/api/projects",
            Some(&limited_token),
            Some(r#"{"name":"fault-deploys","blueprint_id":1,"region":"eu-west-1"}"#),
        )
        .await;
    assert_eq!(project.status, 201, "{}", String::from_utf8_lossy(&project.body));
    let deploy_body = json!({ "project_id": project.json()["id"] }).to_string();

    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(MixedLoad {
        clients: vec![ca.clone(), cb.clone()],
        token: a.demo_token().to_owned(),
        recorder: recorder.clone(),
        stop: stop.clone(),
        writes: true,
    });
    let workers = load.start(8);

    // A key the load never reads, cached in A's L1.
    let marker = "/api/projects/7";
    assert_eq!(ca.get(marker).await.header("x-cache"), Some("MISS"));
    assert_eq!(ca.get(marker).await.header("x-cache"), Some("HIT"));

    sleep_until(&recorder, KILL_AT).await;
    let flushes_before =
        [cache_stats(&ca).await["bus_flushes"].as_u64(), cache_stats(&cb).await["bus_flushes"].as_u64()];
    redis.kill().expect("kill Redis (a locally started redis-server is needed)");
    let killed_at = recorder.elapsed();
    println!("Redis killed at {:.1} s", killed_at.as_secs_f64());

    // Each instance hears its bus drop and flushes its L1.
    let mut flushed_after = Vec::new();
    for (client, before) in [&ca, &cb].into_iter().zip(flushes_before) {
        let waited = Instant::now();
        loop {
            let stats = cache_stats(client).await;
            if stats["bus_flushes"].as_u64() > before && stats["bus_connected"] == false {
                flushed_after.push(waited.elapsed());
                break;
            }
            assert!(waited.elapsed() < Duration::from_secs(10), "the L1 was not flushed within 10 s: {stats}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!(
        "L1 flushed on the bus drop: instance a after {:.0} ms, b after {:.0} ms",
        ms(flushed_after[0]),
        ms(flushed_after[1])
    );
    let marker_read = ca.get(marker).await;
    assert_eq!(marker_read.status, 200);
    assert_eq!(marker_read.header("x-cache"), Some("MISS"), "the marker left A's L1 with the flush");

    // The deploy limit falls back to a limit in this process (OnStoreError::Local):
    // the user's 10 per hour, neither refused outright (fail closed) nor unlimited (fail open).
    let mut deploys = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..12 {
        let reply = ca.call(Method::POST, "/api/deploy", Some(&limited_token), Some(&deploy_body)).await;
        *deploys.entry(reply.status.as_u16()).or_default() += 1;
    }
    println!("deploys by one user while Redis is down: {deploys:?} (limit 10 per hour, local fallback)");
    assert_eq!(deploys, [(202, 10), (429, 2)].into_iter().collect(), "the deploy limit's local fallback");

    sleep_until(&recorder, RESTART_AT).await;
    redis.start().await.expect("start Redis again");
    let back_at = recorder.elapsed();
    println!("Redis answering again at {:.1} s", back_at.as_secs_f64());

    // The shared tier is used again once B reads from L2 what A just loaded.
    let mut probes = PROBES;
    let l2_back = loop {
        let id = probes.next().expect("probe keys left");
        let path = format!("/api/blueprints/{id}?fields=id,name");
        let l2_hits_before = cache_stats(&cb).await["l2_hits"].as_u64().expect("l2_hits");
        assert_eq!(ca.get(&path).await.status, 200);
        let on_b = cb.get(&path).await;
        assert_eq!(on_b.status, 200);
        let l2_hits = cache_stats(&cb).await["l2_hits"].as_u64().expect("l2_hits");
        if on_b.header("x-cache") == Some("HIT") && l2_hits > l2_hits_before {
            break recorder.elapsed() - back_at;
        }
        assert!(recorder.elapsed() - back_at < Duration::from_secs(30), "L2 not used again 30 s after Redis returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("L2 used again {:.2} s after Redis returned (bound 5 s)", l2_back.as_secs_f64());

    sleep_until(&recorder, END_AT).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("a load worker panicked");
    }

    let kinds = ["cached read", "uncached read", "page read", "write"];
    print_phases(
        &recorder,
        &[
            ("before the kill", Duration::ZERO, killed_at),
            ("Redis down", killed_at, back_at),
            ("after Redis returned", back_at, END_AT + HANG),
        ],
        &kinds,
    );
    for (name, client) in [("a", &ca), ("b", &cb)] {
        let stats = cache_stats(client).await;
        println!(
            "  instance {name}: l1_hits {} l2_hits {} loads {} l2_errors {} bus_flushes {} bus_connected {}",
            stats["l1_hits"],
            stats["l2_hits"],
            stats["loads"],
            stats["l2_errors"],
            stats["bus_flushes"],
            stats["bus_connected"]
        );
    }
    for kind in kinds {
        let summary = Summary::of(&recorder.select(|o: &Outcome| o.kind == kind));
        assert!(summary.requests > 0, "no {kind} was sent");
        assert_eq!(summary.server_errors(), 0, "{kind}: {summary}");
        assert!(summary.by_status.keys().all(|s| (200..300).contains(s)), "{kind}: {summary}");
    }
    assert!(l2_back <= Duration::from_secs(5), "L2 used again only {l2_back:?} after Redis returned");
    a.shutdown().await;
    b.shutdown().await;
}

/// Redis frozen for 15 s of a 40 s load: nothing hangs, reads stay within
/// the L2 timeout plus the origin's time, and the L2 breaker opens.
pub async fn frozen() {
    const FREEZE_AT: Duration = Duration::from_secs(10);
    const THAW_AT: Duration = Duration::from_secs(25);
    const END_AT: Duration = Duration::from_secs(40);

    let pg = require!(brisk_testkit::postgres().await);
    let mut redis = require!(brisk_testkit::redis().await);
    let (db_url, redis_url) = (pg.url(), redis.url().to_owned());
    let app = blueprint::App::start(config(&vars(&db_url, &redis_url))).await.expect("starts");
    let client = Arc::new(Client { router: app.router() });

    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(MixedLoad {
        clients: vec![client.clone()],
        token: app.demo_token().to_owned(),
        recorder: recorder.clone(),
        stop: stop.clone(),
        writes: true,
    });
    let workers = load.start(8);

    sleep_until(&recorder, FREEZE_AT).await;
    let open = "brisk_cache_breaker_state{state=\"open\"}";
    assert_eq!(metric(&client, open).await, Some(0.0), "the breaker is closed before the freeze");
    redis.freeze().expect("freeze Redis (a locally started redis-server is needed)");
    let frozen_at = recorder.elapsed();
    println!("Redis frozen at {:.1} s", frozen_at.as_secs_f64());

    let waited = Instant::now();
    while metric(&client, open).await != Some(1.0) {
        assert!(waited.elapsed() < Duration::from_secs(10), "the L2 breaker did not open within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let breaker_opened = waited.elapsed();
    println!("L2 breaker open {:.0} ms after the freeze", ms(breaker_opened));

    let started = Instant::now();
    let ready = send_within(&client, get("/health/ready", IpAddr::V4(Ipv4Addr::LOCALHOST)), HANG)
        .await
        .expect("readiness answers while Redis is frozen");
    let ready_took = started.elapsed();
    println!("readiness while frozen: {} in {:.0} ms", ready.status, ms(ready_took));
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["checks"]["redis"]["status"], "down");

    sleep_until(&recorder, THAW_AT).await;
    redis.thaw().expect("thaw Redis");
    let thawed_at = recorder.elapsed();
    let waited = Instant::now();
    while metric(&client, "brisk_cache_breaker_state{state=\"closed\"}").await != Some(1.0) {
        assert!(waited.elapsed() < Duration::from_secs(20), "the L2 breaker did not close within 20 s of the thaw");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let breaker_closed = waited.elapsed();
    println!("L2 breaker closed {:.2} s after the thaw", breaker_closed.as_secs_f64());
    let waited = Instant::now();
    while client.get("/health/ready").await.status != 200 {
        assert!(waited.elapsed() < Duration::from_secs(20), "readiness did not recover within 20 s of the thaw");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("readiness 200 again {:.2} s after the thaw", waited.elapsed().as_secs_f64());

    sleep_until(&recorder, END_AT).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("a load worker panicked");
    }

    let kinds = ["cached read", "uncached read", "page read", "write"];
    print_phases(
        &recorder,
        &[
            ("before the freeze", Duration::ZERO, frozen_at),
            ("Redis frozen", frozen_at, thawed_at),
            ("after the thaw", thawed_at, END_AT + HANG),
        ],
        &kinds,
    );
    let failed = metric(&client, "brisk_cache_l2_errors_total{reason=\"error\"}").await.unwrap_or(0.0);
    let timeouts = metric(&client, "brisk_cache_l2_errors_total{reason=\"timeout\"}").await.unwrap_or(0.0);
    let rejected = metric(&client, "brisk_cache_l2_errors_total{reason=\"breaker_open\"}").await.unwrap_or(0.0);
    println!("  L2 calls failed: {failed}, timed out: {timeouts}, not made (breaker open): {rejected}");

    // The origin's time: cold reads (one database round trip or two) before the freeze.
    let origin = Summary::of(
        &recorder.select(|o: &Outcome| o.kind == "uncached read" && o.at >= Duration::from_secs(2) && o.at < frozen_at),
    );
    let reads_frozen =
        Summary::of(&recorder.select(|o: &Outcome| o.kind.ends_with("read") && o.at >= frozen_at && o.at < thawed_at));
    let bound = CACHE_L2_TIMEOUT + origin.p99;
    println!(
        "reads while frozen: p99 {:.1} ms, max {:.1} ms; bound: L2 timeout {:.0} ms + origin p99 {:.1} ms = {:.1} ms",
        ms(reads_frozen.p99),
        ms(reads_frozen.max),
        ms(CACHE_L2_TIMEOUT),
        ms(origin.p99),
        ms(bound)
    );
    for kind in kinds {
        let summary = Summary::of(&recorder.select(|o: &Outcome| o.kind == kind));
        assert_eq!(summary.server_errors(), 0, "{kind}: {summary}");
    }
    assert!(reads_frozen.requests > 0);
    assert!(reads_frozen.p99 <= bound, "reads while frozen: p99 {:?} over {bound:?}", reads_frozen.p99);
    assert!(failed + timeouts >= 1.0, "calls to the frozen Redis failed");
    assert!(rejected >= 1.0, "the open breaker stopped calls to the frozen Redis");
    app.shutdown().await;
}
