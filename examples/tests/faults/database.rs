//! PostgreSQL and PgBouncer restarted during writes, and a pool of five
//! connections facing 1,000 writers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brisk_testkit::require;

use crate::common::{Client, Reply, config};
use crate::harness::{self, get, is_problem, send_within};
use crate::load::{NO_ANSWER, Recorder, Summary, ms};

const HANG: Duration = Duration::from_secs(20);
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1));

/// A write's answer: its status, and whether a 503 came as problem+json.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    problem: bool,
    id: Option<i64>,
}

fn answer(reply: Option<Reply>) -> Answer {
    match reply {
        None => Answer { status: NO_ANSWER, problem: false, id: None },
        Some(reply) => {
            let id = (reply.status == 201).then(|| reply.json()["id"].as_i64()).flatten();
            Answer { status: reply.status.as_u16(), problem: is_problem(&reply, reply.status.as_u16()), id }
        }
    }
}

/// Rows written under idempotency keys starting with `prefix`: key → (id, name, description).
async fn rows(pg: &brisk_testkit::Postgres, prefix: &str) -> (usize, HashMap<String, (i64, String, String)>) {
    let db = pg.connect().await.expect("connect to the test database");
    let found = db
        .query(
            "SELECT idempotency_key, id, name, description FROM blueprints WHERE idempotency_key LIKE $1 ORDER BY id",
            &[&format!("{prefix}%")],
        )
        .await
        .expect("read the written rows");
    let count = found.len();
    let by_key = found.iter().map(|r| (r.get::<_, String>(0), (r.get(1), r.get(2), r.get(3)))).collect();
    (count, by_key)
}

/// Asserts each row holds exactly what its request sent (nothing half-written).
fn assert_whole(rows: &HashMap<String, (i64, String, String)>) {
    for (key, (_, name, description)) in rows {
        assert_eq!(name, &format!("bp {key}"), "row of {key}");
        assert_eq!(description, &format!("written under {key}"), "row of {key}");
    }
}

/// How long PgBouncer stays down in its restart.
const BOUNCER_DOWN: Duration = Duration::from_secs(2);

/// Waits (at most 60 s) until readiness, polled since `since`, has said 503 and then 200.
async fn ready_again(readiness: &Mutex<Vec<(Duration, u16)>>, since: Duration) {
    let waited = Instant::now();
    loop {
        {
            let seen = readiness.lock().expect("not poisoned");
            let down = seen.iter().position(|(at, s)| *at >= since && *s == 503);
            if down.is_some_and(|d| seen[d..].iter().any(|(_, s)| *s == 200)) {
                return;
            }
        }
        assert!(waited.elapsed() < Duration::from_secs(60), "readiness did not go 503 and back to 200 within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writers create blueprints (each under its own idempotency key) through
/// PgBouncer while PostgreSQL restarts, then while PgBouncer restarts.
pub async fn restarts_lose_no_write() {
    let mut pg = require!(brisk_testkit::postgres().await);
    let mut bouncer = require!(brisk_testkit::pgbouncer(&pg).await);
    let url = bouncer.url();
    let app = blueprint::App::start(config(&[
        ("DATABASE_URL", url.as_str()),
        ("DB_POOL_SIZE", "5"),
        ("DB_POOL_TIMEOUT", "1s"),
        ("API_RATE_LIMIT", "off"),
    ]))
    .await
    .expect("starts");
    let client = Arc::new(Client { router: app.router() });
    let token = app.demo_token().to_owned();

    let recorder = Arc::new(Recorder::new());
    let stop = Arc::new(AtomicBool::new(false));
    let answers: Arc<Mutex<Vec<(String, Answer)>>> = Arc::default();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (client, token, recorder, stop, answers) =
            (client.clone(), token.clone(), recorder.clone(), stop.clone(), answers.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = format!("rw-{worker}-{n}");
                let started = Instant::now();
                let reply = send_within(&client, harness::create_blueprint(&key, &token, PEER), HANG).await;
                let answer = answer(reply);
                recorder.record("write", answer.status, started);
                answers.lock().expect("not poisoned").push((key, answer));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // Readiness, polled as a load balancer would.
    let readiness: Arc<Mutex<Vec<(Duration, u16)>>> = Arc::default();
    {
        let (client, recorder, stop, readiness) = (client.clone(), recorder.clone(), stop.clone(), readiness.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let at = recorder.elapsed();
                let status = send_within(&client, get("/health/ready", PEER), HANG)
                    .await
                    .map_or(NO_ANSWER, |r| r.status.as_u16());
                readiness.lock().expect("not poisoned").push((at, status));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(5)).await;
    let pg_restart = recorder.elapsed();
    pg.restart().await.expect("restart PostgreSQL");
    let pg_back = recorder.elapsed();
    println!("PostgreSQL restarted: {:.1} s → {:.1} s", pg_restart.as_secs_f64(), pg_back.as_secs_f64());
    ready_again(&readiness, pg_restart).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bouncer_restart = recorder.elapsed();
    // Down for 2 s: a restart quicker than the 100 ms readiness poll could go
    // unseen (the pool reconnects on its next checkout).
    bouncer.stop().expect("stop PgBouncer");
    tokio::time::sleep(BOUNCER_DOWN).await;
    bouncer.start().await.expect("start PgBouncer");
    let bouncer_back = recorder.elapsed();
    println!("PgBouncer restarted: {:.1} s → {:.1} s", bouncer_restart.as_secs_f64(), bouncer_back.as_secs_f64());
    ready_again(&readiness, bouncer_restart).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a task panicked");
    }

    // Readiness went 503 during each fault and 200 after it.
    let readiness = readiness.lock().expect("not poisoned").clone();
    for (fault, from, next) in [
        ("PostgreSQL restart", pg_restart, bouncer_restart),
        ("PgBouncer restart", bouncer_restart, recorder.elapsed()),
    ] {
        let window: Vec<&(Duration, u16)> = readiness.iter().filter(|(at, _)| *at >= from && *at < next).collect();
        let first_down = window.iter().find(|(_, s)| *s == 503).map(|(at, _)| *at);
        let down = first_down.unwrap_or_else(|| panic!("readiness never said 503 during the {fault}: {window:?}"));
        let up = window
            .iter()
            .find(|(at, s)| *at > down && *s == 200)
            .map(|(at, _)| *at)
            .unwrap_or_else(|| panic!("readiness did not return to 200 after the {fault}"));
        println!(
            "readiness during the {fault}: 503 from {:.1} s, 200 again at {:.1} s ({:.1} s after the fault began)",
            down.as_secs_f64(),
            up.as_secs_f64(),
            (up - from).as_secs_f64()
        );
        assert!(window.iter().all(|(_, s)| *s == 200 || *s == 503), "readiness answered {window:?}");
    }

    let answers = answers.lock().expect("not poisoned").clone();
    let summary = Summary::of(&recorder.select(|_| true));
    println!("writes: {summary}");
    for (key, answer) in &answers {
        let ok = answer.status == 201 && answer.id.is_some() || answer.status == 503 && answer.problem;
        assert!(ok, "write {key} answered {answer:?}: neither 201 nor a problem+json 503");
    }
    assert!(answers.iter().any(|(_, a)| a.status == 503), "the faults were felt: some writes answered 503");

    let acknowledged: HashMap<&str, i64> = answers.iter().filter_map(|(key, a)| Some((key.as_str(), a.id?))).collect();
    let refused: Vec<&str> = answers.iter().filter(|(_, a)| a.status == 503).map(|(k, _)| k.as_str()).collect();
    let (count, written) = rows(&pg, "rw-").await;
    assert_eq!(count, written.len(), "one row per idempotency key");
    assert_whole(&written);
    for (key, id) in &acknowledged {
        assert_eq!(written.get(*key).map(|r| r.0), Some(*id), "the 201 of {key} is in the database");
    }
    let committed_refused: Vec<&str> = refused.iter().copied().filter(|k| written.contains_key(*k)).collect();
    println!(
        "rows {} = 201s {} + writes answered 503 whose commit had happened {} (the reply was lost with the connection)",
        count,
        acknowledged.len(),
        committed_refused.len()
    );
    assert_eq!(count, acknowledged.len() + committed_refused.len(), "no row without a request behind it");

    // Clients retry a 503 with the same key: a create that had committed
    // answers with its row, one that had not is made now. Afterwards every
    // write is acknowledged exactly once and the rows equal the 201s.
    let mut replayed_existing = 0;
    let mut all_acknowledged: HashMap<String, i64> =
        acknowledged.iter().map(|(k, id)| ((*k).to_owned(), *id)).collect();
    for key in &refused {
        let reply = client.send(harness::create_blueprint(key, &token, PEER)).await;
        assert_eq!(reply.status, 201, "retry of {key}: {}", String::from_utf8_lossy(&reply.body));
        let id = reply.json()["id"].as_i64().expect("an id");
        if let Some((existing, _, _)) = written.get(*key) {
            assert_eq!(id, *existing, "the retry of {key} answers with the row its first attempt committed");
            replayed_existing += 1;
        }
        all_acknowledged.insert((*key).to_owned(), id);
    }
    let (count, written) = rows(&pg, "rw-").await;
    assert_whole(&written);
    let distinct_ids: HashSet<i64> = written.values().map(|r| r.0).collect();
    println!(
        "after retrying the {} 503s with their keys: rows {count}, acknowledged writes {}, retries answered with an existing row {replayed_existing}",
        refused.len(),
        all_acknowledged.len()
    );
    assert_eq!(count, all_acknowledged.len(), "rows equal the acknowledged writes");
    assert_eq!(distinct_ids.len(), count);
    for (key, id) in &all_acknowledged {
        assert_eq!(written.get(key).map(|r| r.0), Some(*id), "{key}");
    }
    app.shutdown().await;
}

/// One wave of `writers` concurrent creates; returns each answer with its latency.
async fn wave(client: &Arc<Client>, token: &str, prefix: &str, writers: usize) -> Vec<(Answer, Duration, bool)> {
    let tasks: Vec<_> = (0..writers)
        .map(|i| {
            let (client, token, key) = (client.clone(), token.to_owned(), format!("{prefix}{i}"));
            tokio::spawn(async move {
                let started = Instant::now();
                let reply = send_within(&client, harness::create_blueprint(&key, &token, PEER), HANG).await;
                let retry_after = reply.as_ref().is_some_and(|r| r.header("retry-after").is_some());
                (answer(reply), started.elapsed(), retry_after)
            })
        })
        .collect();
    let mut out = Vec::with_capacity(writers);
    for task in tasks {
        out.push(task.await.expect("a writer panicked"));
    }
    out
}

fn print_wave(name: &str, answers: &[(Answer, Duration, bool)]) -> BTreeMap<u16, usize> {
    let mut by_status = BTreeMap::new();
    for (a, _, _) in answers {
        *by_status.entry(a.status).or_insert(0) += 1;
    }
    let slowest = |status: u16| {
        answers.iter().filter(|(a, _, _)| a.status == status).map(|(_, d, _)| *d).max().unwrap_or_default()
    };
    println!("  {name}: {by_status:?}; slowest 201 {:.0} ms, slowest 503 {:.0} ms", ms(slowest(201)), ms(slowest(503)));
    by_status
}

/// 1,000 concurrent writers on a pool of 5 with a 500 ms wait: first while a
/// lock keeps the five connections busy for 1.5 s, then free-running.
pub async fn pool_exhaustion() {
    const WAIT: Duration = Duration::from_millis(500);
    const HOLD: Duration = Duration::from_millis(1500);
    /// Handling and scheduling 1,000 in-process requests on two cores.
    const SLACK: Duration = Duration::from_secs(1);

    let pg = require!(brisk_testkit::postgres().await);
    let url = pg.url();
    let app = blueprint::App::start(config(&[
        ("DATABASE_URL", url.as_str()),
        ("DB_POOL_SIZE", "5"),
        ("DB_POOL_TIMEOUT", "500ms"),
        ("API_RATE_LIMIT", "off"),
    ]))
    .await
    .expect("starts");
    let client = Arc::new(Client { router: app.router() });
    let token = app.demo_token().to_owned();

    // Wave 1: the five connections block on a table lock; the others wait for one.
    let locker = pg.connect().await.expect("connect");
    locker.batch_execute("BEGIN; LOCK TABLE blueprints IN SHARE ROW EXCLUSIVE MODE").await.expect("lock");
    let release = tokio::spawn(async move {
        tokio::time::sleep(HOLD).await;
        locker.batch_execute("COMMIT").await.expect("unlock");
    });
    let held = wave(&client, &token, "px1-", 1000).await;
    release.await.expect("the lock was released");
    // Wave 2: nothing held.
    let free = wave(&client, &token, "px2-", 1000).await;

    println!("1,000 writers, pool of 5, wait timeout {} ms:", WAIT.as_millis());
    let held_status = print_wave("connections held 1.5 s by a lock", &held);
    let free_status = print_wave("free-running", &free);
    for (name, answers, ok_bound) in [("held", &held, HOLD + SLACK), ("free", &free, WAIT + SLACK)] {
        for (answer, latency, retry_after) in answers.iter() {
            match answer.status {
                201 => assert!(*latency <= ok_bound, "{name}: a 201 took {latency:?}"),
                503 => {
                    assert!(answer.problem && *retry_after, "{name}: a 503 without problem+json and Retry-After");
                    assert!(*latency <= WAIT + SLACK, "{name}: a 503 took {latency:?}, over the wait timeout + slack");
                }
                other => panic!("{name}: a writer got {other} (0 = no answer within {HANG:?})"),
            }
        }
    }
    assert!(held_status.get(&503).copied().unwrap_or(0) > 0, "the pool was exhausted: some writers got 503");
    assert!(held_status.get(&201).copied().unwrap_or(0) > 0, "the writers holding connections committed");

    let created = held_status.get(&201).copied().unwrap_or(0) + free_status.get(&201).copied().unwrap_or(0);
    let (count, written) = rows(&pg, "px").await;
    assert_whole(&written);
    println!("  rows {count}, 201s {created}");
    assert_eq!(count, created, "a 503 from the pool wait wrote nothing; every 201 is one row");
    app.shutdown().await;
}

/// The idempotency key behind "rows equal acknowledged writes", on SQLite:
/// a repeat answers with the first blueprint, another user's key is theirs,
/// a malformed key is a 400.
pub async fn idempotency_key_makes_one_row() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let db = dir.path().join("idempotency.sqlite3");
    let app =
        blueprint::App::start(config(&[("SQLITE_PATH", db.to_str().expect("a UTF-8 path"))])).await.expect("starts");
    let client = Client { router: app.router() };
    let (one, two) = (app.demo_token().to_owned(), app.token_of(2).expect("seeded user 2"));
    let first = client.send(harness::create_blueprint("k-1", &one, PEER)).await;
    assert_eq!(first.status, 201, "{}", String::from_utf8_lossy(&first.body));
    let again = client.send(harness::create_blueprint("k-1", &one, PEER)).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.json()["id"], first.json()["id"], "a repeat answers with the first blueprint");
    assert_eq!(again.header("location"), first.header("location"));
    let theirs = client.send(harness::create_blueprint("k-1", &two, PEER)).await;
    assert_eq!(theirs.status, 201);
    assert_ne!(theirs.json()["id"], first.json()["id"], "keys are per user");
    let fresh = client.send(harness::create_blueprint("k-2", &one, PEER)).await;
    assert_ne!(fresh.json()["id"], first.json()["id"]);
    let stats = client.get("/api/projects/stats/summary").await.json();
    assert_eq!(stats["blueprints_total"], 1203, "three blueprints made by four creates");
    for bad in ["", "with space", &"x".repeat(129)] {
        let mut request = harness::create_blueprint("k-3", &one, PEER);
        request.headers_mut().insert("idempotency-key", bad.parse().expect("a header value"));
        assert!(is_problem(&client.send(request).await, 400), "Idempotency-Key {bad:?}");
    }
    app.shutdown().await;
}
