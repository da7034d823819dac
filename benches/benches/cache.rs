//! brisk-cache: L1 hit, L2 hit next to a raw redis-rs GET of the same bytes
//! (with the Redis command count per hit), and pattern clean-up of many keys
//! next to KEYS + DEL, with the worst latency a concurrent PING saw and the
//! longest any one command ran inside Redis (SLOWLOG).
//!
//! ```sh
//! cargo bench -p brisk-benches --bench cache -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Redis comes from brisk-testkit (`REDIS_URL`, a container, or
//! `redis-server` on PATH); without one, only the L1 bench runs. The
//! clean-up report uses `BRISK_BENCH_CLEANUP_KEYS` keys (default 1,000,000).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use brisk_cache::{EntryOptions, TieredCache};
use bytes::Bytes;
use criterion::{Criterion, criterion_group};
use tokio::runtime::Runtime;

const VALUE: usize = 1024;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a tokio runtime")
}

fn l1_hit(c: &mut Criterion) {
    let rt = runtime();
    let cache = rt.block_on(async {
        let cache = TieredCache::builder().build().expect("an L1-only cache");
        cache.set_bytes("key", Bytes::from(vec![7u8; VALUE]), &EntryOptions::new(Duration::from_secs(300))).await;
        cache
    });
    let mut group = c.benchmark_group("cache_l1_hit_1KiB");
    group.bench_function("brisk_get_bytes", |b| {
        b.to_async(&rt).iter(|| async { black_box(cache.get_bytes(black_box("key")).await) })
    });
    group.finish();
}

struct RedisBench {
    _server: brisk_testkit::Redis,
    url: String,
}

fn redis_server(rt: &Runtime) -> Option<RedisBench> {
    match rt.block_on(brisk_testkit::redis()) {
        Ok(server) => Some(RedisBench { url: server.url().to_owned(), _server: server }),
        Err(e) => {
            eprintln!("cache bench: no Redis ({e}); only the L1 bench runs");
            None
        }
    }
}

/// Commands Redis ran, by name, leaving out `skip`.
async fn command_breakdown(conn: &mut redis::aio::ConnectionManager, skip: &[&str]) -> Vec<(String, u64)> {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.expect("INFO");
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok()?;
            (!skip.iter().any(|s| name.starts_with(s))).then(|| (name.to_owned(), calls))
        })
        .collect()
}

async fn all_commands(conn: &mut redis::aio::ConnectionManager) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.expect("INFO");
    info.lines()
        .filter(|l| !l.starts_with("cmdstat_info:") && !l.starts_with("cmdstat_ping:"))
        .filter_map(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

fn l2_hit(c: &mut Criterion) {
    let rt = runtime();
    let Some(server) = redis_server(&rt) else { return };
    let (cache, mut raw) = rt.block_on(async {
        // L1 takes nothing: every read is an L2 hit.
        let cache = TieredCache::builder()
            .prefix("bench")
            .l1_max_entry_bytes(0)
            .redis_url(&server.url)
            .expect("a Redis URL")
            .build()
            .expect("a cache");
        cache.wait_until_ready().await;
        cache.set_bytes("key", Bytes::from(vec![7u8; VALUE]), &EntryOptions::new(Duration::from_secs(3600))).await;
        let client = redis::Client::open(server.url.as_str()).expect("a Redis URL");
        let mut raw = redis::aio::ConnectionManager::new(client).await.expect("a connection");
        let _: () = redis::cmd("SET").arg("raw:key").arg(vec![7u8; VALUE]).query_async(&mut raw).await.expect("SET");
        // Warm: the first read learns the generations.
        assert!(cache.get_bytes("key").await.is_some());
        (cache, raw)
    });
    rt.block_on(async {
        let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut raw).await.expect("RESETSTAT");
        let before = all_commands(&mut raw).await;
        for _ in 0..10_000 {
            assert!(cache.get_bytes("key").await.is_some());
        }
        let after = all_commands(&mut raw).await;
        eprintln!(
            "cache bench: L2 hit sends {:.3} Redis commands ({} commands for 10000 hits, INFO commandstats; the bus keep-alive PING excluded)",
            (after - before) as f64 / 10_000.0,
            after - before
        );
    });
    rt.block_on(async {
        // Side by side in time as well: rounds of 200 brisk hits and 200 raw
        // GETs, alternating, so that a change in the machine's load between
        // criterion's two measurements cannot pass for a difference.
        let mut ratios = Vec::with_capacity(30);
        let (mut brisk_total, mut raw_total) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..30 {
            let t = Instant::now();
            for _ in 0..200 {
                black_box(cache.get_bytes(black_box("key")).await);
            }
            let brisk = t.elapsed();
            let t = Instant::now();
            for _ in 0..200 {
                let v: Option<Bytes> =
                    redis::cmd("GET").arg(black_box("raw:key")).query_async(&mut raw).await.expect("GET");
                black_box(v);
            }
            let plain = t.elapsed();
            ratios.push(brisk.as_secs_f64() / plain.as_secs_f64());
            brisk_total += brisk;
            raw_total += plain;
        }
        ratios.sort_by(f64::total_cmp);
        eprintln!(
            "cache bench: L2 hit vs raw GET, 30 alternating rounds of 200: brisk {:?}, raw {:?} per read; ratio median {:.2} (rounds {:.2}–{:.2})",
            brisk_total / 6000,
            raw_total / 6000,
            ratios[15],
            ratios[0],
            ratios[29]
        );
    });
    let mut group = c.benchmark_group("cache_l2_hit_1KiB");
    group.bench_function("brisk_get_bytes", |b| {
        b.to_async(&rt).iter(|| async { black_box(cache.get_bytes(black_box("key")).await) })
    });
    let conn = raw.clone();
    group.bench_function("redis_rs_get", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = conn.clone();
            async move {
                let v: Option<Bytes> =
                    redis::cmd("GET").arg(black_box("raw:key")).query_async(&mut conn).await.expect("GET");
                black_box(v)
            }
        })
    });
    group.finish();
}

/// A connection without a response timeout: KEYS on many keys outlasts any.
async fn unbounded_connection(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).expect("a Redis URL");
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    client.get_multiplexed_async_connection_with_config(&config).await.expect("a connection")
}

/// What a concurrent watcher saw while some work ran.
struct Watched {
    /// The work's duration.
    took: Duration,
    /// The slowest PING sent from another connection, as its client saw it
    /// (Redis's time plus this machine's scheduling of both processes).
    worst_ping: Duration,
    /// The longest any one command ran inside Redis (SLOWLOG, all commands
    /// logged during the work), and its name: how long Redis was blocked.
    longest_command: (Duration, String),
    /// The 99th percentile of the work's commands inside Redis, and how
    /// many they were.
    p99: Duration,
    commands: usize,
}

impl std::fmt::Display for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?}, slowest concurrent PING {:?}, longest command inside Redis {:?} ({}), 99th percentile of its {} commands {:?}",
            self.took, self.worst_ping, self.longest_command.0, self.longest_command.1, self.commands, self.p99
        )
    }
}

/// Runs `work` while another connection PINGs in a loop, with Redis logging
/// every command's execution time.
async fn with_ping_watch<F: std::future::Future<Output = ()>>(url: &str, work: F) -> Watched {
    let mut ping =
        redis::Client::open(url).and_then(|c| c.get_connection()).expect("a blocking connection for the PING watcher");
    let mut admin = unbounded_connection(url).await;
    for (name, value) in [("slowlog-log-slower-than", "0"), ("slowlog-max-len", "10000000")] {
        let _: () =
            redis::cmd("CONFIG").arg("SET").arg(name).arg(value).query_async(&mut admin).await.expect("CONFIG SET");
    }
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query_async(&mut admin).await.expect("SLOWLOG RESET");
    // The watcher is an OS thread of its own with a blocking connection, so
    // that what it sees is Redis's delay, not its turn on the runtime.
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let watcher = std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        while !stop2.load(Ordering::Relaxed) {
            let t = Instant::now();
            let _: String = redis::cmd("PING").query(&mut ping).expect("PING");
            worst = worst.max(t.elapsed());
        }
        worst
    });
    let start = Instant::now();
    work.await;
    let took = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let worst_ping = watcher.join().expect("the PING thread");
    // Each entry: id, time, microseconds, arguments, client address, name.
    let log: Vec<Vec<redis::Value>> =
        redis::cmd("SLOWLOG").arg("GET").arg(-1).query_async(&mut admin).await.expect("SLOWLOG GET");
    let mut commands: Vec<(Duration, String)> = log
        .iter()
        .filter_map(|entry| match (entry.get(2), entry.get(3)) {
            (Some(redis::Value::Int(micros)), Some(redis::Value::Array(args))) => {
                let name = match args.first() {
                    Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).to_uppercase(),
                    _ => "?".to_owned(),
                };
                Some((Duration::from_micros(u64::try_from(*micros).unwrap_or(0)), name))
            }
            _ => None,
        })
        .collect();
    commands.sort_by_key(|(d, _)| *d);
    let longest_command = commands.last().cloned().unwrap_or_default();
    // The work's own commands (the watcher's PINGs left out), at the 99th
    // percentile: what most of its commands cost, apart from the odd one
    // this machine's scheduler stretched.
    let work: Vec<Duration> = commands.iter().filter(|(_, n)| n != "PING").map(|(d, _)| *d).collect();
    let p99 = work.get((work.len() * 99 / 100).min(work.len().saturating_sub(1))).copied().unwrap_or_default();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg("10000")
        .query_async(&mut admin)
        .await
        .expect("CONFIG SET");
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query_async(&mut admin).await.expect("SLOWLOG RESET");
    Watched { took, worst_ping, longest_command, p99, commands: work.len() }
}

async fn populate(conn: &mut redis::aio::ConnectionManager, prefix: &str, n: usize) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("SET").arg(format!("{prefix}:k{i}")).arg("v").ignore();
        if (i + 1) % 10_000 == 0 || i + 1 == n {
            let _: () = pipe.query_async(conn).await.expect("pipelined SETs");
            pipe = redis::pipe();
        }
    }
}

fn cleanup_report() {
    let rt = runtime();
    let Some(server) = redis_server(&rt) else { return };
    let n: usize = std::env::var("BRISK_BENCH_CLEANUP_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    rt.block_on(async {
        let client = redis::Client::open(server.url.as_str()).expect("a Redis URL");
        let mut conn = redis::aio::ConnectionManager::new(client).await.expect("a connection");

        // The request path: commands sent by invalidate_pattern, whatever the
        // key count. The clean-up it starts in the background (SCAN, UNLINK)
        // and the bus keep-alive (PING) are left out; the scripts are loaded
        // once before measuring.
        let skip = ["info", "ping", "config", "scan", "unlink", "script"];
        for keys in [1_000, n] {
            let prefix = format!("req{keys}");
            populate(&mut conn, &prefix, keys).await;
            let cache = TieredCache::builder()
                .prefix(prefix.as_str())
                .redis_url(&server.url)
                .expect("URL")
                .build()
                .expect("cache");
            cache.wait_until_ready().await;
            cache.invalidate_pattern("warm-up-no-match*").await.expect("invalidate");
            let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(&mut conn).await.expect("RESETSTAT");
            let t = Instant::now();
            cache.invalidate_pattern("k*").await.expect("invalidate");
            let took = t.elapsed();
            let sent = command_breakdown(&mut conn, &skip).await;
            let total: u64 = sent.iter().map(|(_, c)| c).sum();
            eprintln!(
                "cache bench: invalidate_pattern with {keys} keys: {total} Redis commands on the request path {sent:?}, {took:?}"
            );
            // Let its background clean-up finish before the next phase.
            while cache.stats().cleanup_deleted < keys as u64 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }

        // The noise floor: the slowest PING with nothing else running.
        let idle = with_ping_watch(&server.url, tokio::time::sleep(Duration::from_secs(2))).await;
        eprintln!("cache bench: 2 s with no clean-up running (the noise floor): {idle}");

        // The clean-up: SCAN COUNT 250 + UNLINK per batch.
        populate(&mut conn, "clean", n).await;
        let cache = TieredCache::builder().prefix("clean").redis_url(&server.url).expect("URL").build().expect("cache");
        cache.wait_until_ready().await;
        let watched = with_ping_watch(&server.url, async {
            let removed = cache.remove_matching("k*").await.expect("clean-up");
            assert_eq!(removed, n as u64);
        })
        .await;
        eprintln!("cache bench: SCAN+UNLINK clean-up of {n} keys: {watched}");

        // The background clean-up invalidate_pattern starts: SCAN, MGET,
        // then UNLINK of the entries written before the invalidation.
        let old = brisk_cache::envelope::Envelope::new(
            1,
            2,
            3,
            brisk_cache::envelope::Stamps::default(),
            Bytes::from(vec![7u8; 64]),
        )
        .encode();
        let mut pipe = redis::pipe();
        for i in 0..n {
            pipe.cmd("SET").arg(format!("bg:k{i}")).arg(old.as_ref()).ignore();
            if (i + 1) % 10_000 == 0 || i + 1 == n {
                let _: () = pipe.query_async(&mut conn).await.expect("pipelined SETs");
                pipe = redis::pipe();
            }
        }
        let cache = TieredCache::builder().prefix("bg").redis_url(&server.url).expect("URL").build().expect("cache");
        cache.wait_until_ready().await;
        let watched = with_ping_watch(&server.url, async {
            cache.invalidate_pattern("k*").await.expect("invalidate");
            while cache.stats().cleanup_deleted < n as u64 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        eprintln!(
            "cache bench: invalidate_pattern's background clean-up (SCAN+MGET+UNLINK) of {n} keys: {watched}"
        );

        // The same with KEYS + DEL (what brisk never sends).
        populate(&mut conn, "keys", n).await;
        let url = server.url.clone();
        let watched = with_ping_watch(&server.url, async move {
            let mut c = unbounded_connection(&url).await;
            let keys: Vec<String> = redis::cmd("KEYS").arg("keys:k*").query_async(&mut c).await.expect("KEYS");
            for chunk in keys.chunks(10_000) {
                let _: u64 = redis::cmd("DEL").arg(chunk).query_async(&mut c).await.expect("DEL");
            }
        })
        .await;
        eprintln!("cache bench: KEYS+DEL clean-up of {n} keys: {watched}");
    });
}

criterion_group!(benches, l1_hit, l2_hit);

fn main() {
    // The clean-up report takes a while (it writes 4 × N keys): skip it with
    // BRISK_BENCH_SKIP_CLEANUP=1.
    let listing = std::env::args().any(|a| a == "--list");
    if !listing && std::env::var_os("BRISK_BENCH_SKIP_CLEANUP").is_none() {
        cleanup_report();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
