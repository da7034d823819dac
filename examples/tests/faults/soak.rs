//! The soak: reads churning over 1,000,000 distinct cache keys from 100,000
//! client addresses (rate-limit keys), while the process's resident memory
//! is sampled every second.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::{Client, config};
use crate::harness::{cache_stats, get, rss_bytes, send_within, soak_duration};
use crate::load::slope;
use crate::redis_down::fields;

const CACHE_KEYS: u64 = 1_000_000;
const LIMITER_KEYS: u64 = 100_000;
/// Every `?fields=` selection of blueprints: 2^10 − 1.
const SELECTIONS: u64 = 1023;
const L1_BOUND: u64 = 8 * 1024 * 1024;
/// What the process may hold beyond the L1 bound: the in-memory rate
/// limiter's state for 100,000 keys (about 370 bytes a key in one measured
/// run: 27 MiB for the last 77,000 addresses, the L1 already full), moka's
/// own per-entry structures beyond what the weigher counts (key, value and
/// 64 bytes), SQLite's page cache (up to 2 MiB per connection, 8
/// connections) and the allocator's free lists under churn.
const OVERHEAD: u64 = 64 * 1024 * 1024;
const MIB: f64 = 1024.0 * 1024.0;

/// A set of numbers below a bound, shared by the load's tasks.
struct Seen(Vec<AtomicU64>);

impl Seen {
    fn new(bound: u64) -> Self {
        Self((0..bound.div_ceil(64)).map(|_| AtomicU64::new(0)).collect())
    }

    fn insert(&self, n: u64) {
        self.0[(n / 64) as usize].fetch_or(1 << (n % 64), Ordering::Relaxed);
    }

    fn len(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.load(Ordering::Relaxed).count_ones())).sum()
    }
}

#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    limited: AtomicU64,
    other_4xx: AtomicU64,
    server_errors: AtomicU64,
    /// Each 5xx (status 0: no answer within 10 s), for the message.
    errors: std::sync::Mutex<Vec<Slow>>,
    /// Requests answered (or not) after more than a second.
    slow: std::sync::Mutex<Vec<Slow>>,
}

/// A request that failed or took long: when it was sent (seconds into the
/// soak), how long it took, its path and its status.
#[derive(Debug, Clone)]
struct Slow {
    at: f64,
    took: f64,
    status: u16,
    path: String,
}

impl std::fmt::Display for Slow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "at {:.1} s: {} after {:.2} s: {}", self.at, self.status, self.took, self.path)
    }
}

pub async fn memory_stays_bounded() {
    let duration = soak_duration();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("soak.sqlite3");
    let l1_bound = L1_BOUND.to_string();
    let app = blueprint::App::start(config(&[
        ("SQLITE_PATH", db.to_str().expect("a UTF-8 path")),
        ("CACHE_L1_MAX_BYTES", l1_bound.as_str()),
        ("API_RATE_LIMIT", "1000/15m"),
    ]))
    .await
    .expect("starts");
    let client = Arc::new(Client { router: app.router() });
    assert_eq!(client.get("/api/blueprints/1").await.status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let keys = Arc::new(Seen::new(CACHE_KEYS));
    let peers = Arc::new(Seen::new(LIMITER_KEYS));
    let counts = Arc::new(Counts::default());
    let start_rss = rss_bytes();
    let started = Instant::now();
    // Warm-up: every client address once (on a cached read, or on a cold key
    // while the L1 fills), until every limiter key exists and the L1 has
    // begun to evict. Then the measured churn: random keys, random addresses.
    let next_peer = Arc::new(AtomicU64::new(0));
    let l1_full = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (client, stop, keys, peers, counts, next_peer, l1_full) = (
                client.clone(),
                stop.clone(),
                keys.clone(),
                peers.clone(),
                counts.clone(),
                next_peer.clone(),
                l1_full.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let first_visit = next_peer.fetch_add(1, Ordering::Relaxed);
                    let filling = !l1_full.load(Ordering::Relaxed);
                    let key = if filling || first_visit >= LIMITER_KEYS { fastrand::u64(0..CACHE_KEYS) } else { 0 };
                    let peer = if first_visit < LIMITER_KEYS { first_visit } else { fastrand::u64(0..LIMITER_KEYS) };
                    // 978 blueprints × 1,023 selections cover the million keys.
                    let (id, selection) = (key / SELECTIONS + 1, (key % SELECTIONS + 1) as u32);
                    let path = format!("/api/blueprints/{id}?fields={}", fields(selection));
                    let addr = IpAddr::V4(Ipv4Addr::new(10, (peer >> 16) as u8, (peer >> 8) as u8, peer as u8));
                    let sent = Instant::now();
                    let status = send_within(&client, get(&path, addr), Duration::from_secs(10))
                        .await
                        .map_or(0, |r| r.status.as_u16());
                    let took = sent.elapsed();
                    let slow = || Slow {
                        at: sent.duration_since(started).as_secs_f64(),
                        took: took.as_secs_f64(),
                        status,
                        path: path.clone(),
                    };
                    if took > Duration::from_secs(1) {
                        counts.slow.lock().expect("not poisoned").push(slow());
                    }
                    keys.insert(key);
                    peers.insert(peer);
                    let counter = match status {
                        200..=299 => &counts.ok,
                        429 => &counts.limited,
                        400..=499 => &counts.other_4xx,
                        _ => {
                            counts.errors.lock().expect("not poisoned").push(slow());
                            &counts.server_errors
                        }
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut next_report = Duration::from_secs(30);
    let mut churn_started: Option<Duration> = None;
    while churn_started.is_none_or(|at| started.elapsed() < at + duration) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push((started.elapsed().as_secs_f64(), rss_bytes() as f64));
        if !l1_full.load(Ordering::Relaxed) && cache_stats(&client).await["evictions"].as_u64().unwrap_or(0) > 0 {
            l1_full.store(true, Ordering::Relaxed);
            println!("  {:>4.0} s: the L1 is full and evicting", started.elapsed().as_secs_f64());
        }
        if churn_started.is_none()
            && l1_full.load(Ordering::Relaxed)
            && next_peer.load(Ordering::Relaxed) >= LIMITER_KEYS
        {
            churn_started = Some(started.elapsed());
            println!(
                "  {:>4.0} s: warm-up done (every client address seen, L1 full); RSS {:.1} MiB; churning for {:.0} s",
                started.elapsed().as_secs_f64(),
                rss_bytes() as f64 / MIB,
                duration.as_secs_f64()
            );
        }
        assert!(
            churn_started.is_some() || started.elapsed() < Duration::from_secs(600),
            "the warm-up did not end within 10 minutes"
        );
        if started.elapsed() >= next_report {
            next_report += Duration::from_secs(30);
            println!(
                "  {:>4.0} s: RSS {:.1} MiB, {} requests, {} distinct cache keys",
                started.elapsed().as_secs_f64(),
                samples.last().map_or(0.0, |s| s.1) / MIB,
                counts.ok.load(Ordering::Relaxed),
                keys.len()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        worker.await.expect("a soak worker panicked");
    }

    let end_rss = rss_bytes();
    let peak = samples.iter().map(|s| s.1).fold(start_rss as f64, f64::max);
    let churn_started = churn_started.expect("the loop ends after the churn").as_secs_f64();
    let half = duration.as_secs_f64() / 2.0;
    let last_half: Vec<(f64, f64)> = samples.iter().copied().filter(|s| s.0 >= churn_started + half).collect();
    let trend = slope(&last_half);
    let growth_last_half = trend * half;
    let bound = (start_rss + L1_BOUND + OVERHEAD) as f64;
    let stats = cache_stats(&client).await;
    let requests = counts.ok.load(Ordering::Relaxed)
        + counts.limited.load(Ordering::Relaxed)
        + counts.other_4xx.load(Ordering::Relaxed)
        + counts.server_errors.load(Ordering::Relaxed);
    println!(
        "soak: {:.0} s warm-up + {:.0} s churn: {requests} requests ({:.0}/s): 2xx {}, 429 {}, other 4xx {}, 5xx or no answer {}",
        churn_started,
        duration.as_secs_f64(),
        requests as f64 / started.elapsed().as_secs_f64(),
        counts.ok.load(Ordering::Relaxed),
        counts.limited.load(Ordering::Relaxed),
        counts.other_4xx.load(Ordering::Relaxed),
        counts.server_errors.load(Ordering::Relaxed)
    );
    println!(
        "  distinct cache keys {} of {CACHE_KEYS}, distinct limiter keys {} of {LIMITER_KEYS}",
        keys.len(),
        peers.len()
    );
    println!(
        "  L1: {} entries, {:.1} MiB weighed (bound {:.0} MiB), {} evictions, hit ratio {:.3}",
        stats["entries"],
        stats["bytes"].as_f64().unwrap_or(0.0) / MIB,
        L1_BOUND as f64 / MIB,
        stats["evictions"],
        stats["hit_ratio"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  RSS start {:.1} MiB, peak {:.1} MiB, end {:.1} MiB; bound start + L1 {:.0} MiB + overhead {:.0} MiB = {:.1} MiB",
        start_rss as f64 / MIB,
        peak / MIB,
        end_rss as f64 / MIB,
        L1_BOUND as f64 / MIB,
        OVERHEAD as f64 / MIB,
        bound / MIB
    );
    println!(
        "  trend over the churn's last half: {:+.2} MiB/min ({:+.1} MiB over {:.0} s)",
        trend * 60.0 / MIB,
        growth_last_half / MIB,
        half
    );

    let slow = counts.slow.lock().expect("not poisoned").clone();
    println!("  requests slower than 1 s: {}", slow.len());
    for s in slow.iter().take(20) {
        println!("    {s}");
    }
    let errors = counts.errors.lock().expect("not poisoned").clone();
    let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(errors.is_empty(), "5xx or unanswered (0) requests during the soak:\n{}", listed.join("\n"));
    assert!(
        stats["evictions"].as_u64().unwrap_or(0) > 0,
        "the L1 filled up and evicted (else the bound was not tested)"
    );
    assert!(stats["bytes"].as_u64().unwrap_or(u64::MAX) <= L1_BOUND, "L1 over its bound: {stats}");
    assert!(peak <= bound, "RSS peaked at {:.1} MiB, over the bound {:.1} MiB", peak / MIB, bound / MIB);
    // No growth trend: a line fitted to the last half's samples rises by
    // less than 4 MiB over that half (the noise of a churning heap).
    let allowed = 4.0 * MIB;
    assert!(
        growth_last_half <= allowed,
        "RSS grew {:.1} MiB over the churn's last half (allowed {:.1} MiB)",
        growth_last_half / MIB,
        allowed / MIB
    );
    app.shutdown().await;
}
