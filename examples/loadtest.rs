//! Load test for the blueprint API: stages like a k6 profile (ramp, sustain,
//! spike, ramp-down), a mix of cached reads, writes and deploys, a progress
//! bar, a k6-style summary, and a non-zero exit when a budget fails.
//!
//! ```text
//! cargo run --example blueprint_api            # in one terminal (prints a demo token)
//! cargo run --release --example loadtest -- --token bp_1_… --clients 100
//! cargo run --release --example loadtest -- --help
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use serde::Deserialize;

const HELP: &str = "\
loadtest: drive the blueprint API and check its performance budgets

USAGE:
    cargo run --release --example loadtest -- [OPTIONS]

OPTIONS:
    --url <URL>           the service                       [default: http://127.0.0.1:3000]
    --token <TOKEN>       a bearer token (printed by blueprint_api at start);
                          without it the mix is reads only
    --clients <N>         virtual users while sustaining    [default: 50]
    --spike <N>           virtual users at the spike        [default: 2 × clients]
    --ramp <DURATION>     ramp from 0 to --clients          [default: 10s]
    --sustain <DURATION>  hold --clients                    [default: 30s]
    --spike-for <DURATION> hold --spike                     [default: 10s]
    --ramp-down <DURATION> ramp down to 0                   [default: 5s]
    --mix <R,W,D>         percent of reads, writes, deploys [default: 90,9,1]
    --think <DURATION>    pause of each user between requests [default: 0ms]
    --budgets <FILE>      budgets to check                  [default: examples/performance-budgets.yml]
    --max-error-rate <F>  failed share that fails the run   [default: 0.01]
    --compare-bare <PATH> instead of the stages: closed-loop throughput of
                          GET <PATH> on the service against a bare axum
                          handler returning the same bytes (its own process),
                          in alternating rounds of the same run
    --duration <DURATION> length of one --compare-bare round [default: 5s]
    --rounds <N>          --compare-bare rounds per side     [default: 3]
    --min-ratio <F>       --compare-bare: least service/bare throughput
                          that passes                       [default: 0.85]
    -h, --help            this text

Reads go to blueprints by id (a hot set, as real traffic does), blueprint and
project pages, projects by id and the stats summary; writes replace a
blueprint and patch a project the token's user owns; deploys queue a job
(429 from the deploy limiter is counted as limited, not failed).

Exit status: 0 when every budget holds and the failed share is within
--max-error-rate; 1 when not; 2 on bad arguments or an unreachable service.
";

#[derive(Debug, Clone)]
struct Options {
    url: String,
    token: Option<String>,
    clients: usize,
    spike: usize,
    ramp: Duration,
    sustain: Duration,
    spike_for: Duration,
    ramp_down: Duration,
    mix: [u32; 3],
    think: Duration,
    budgets: Option<PathBuf>,
    max_error_rate: f64,
    compare_bare: Option<String>,
    duration: Duration,
    rounds: usize,
    min_ratio: f64,
}

fn parse_args() -> Result<Option<Options>, String> {
    let mut options = Options {
        url: "http://127.0.0.1:3000".into(),
        token: None,
        clients: 50,
        spike: 0,
        ramp: Duration::from_secs(10),
        sustain: Duration::from_secs(30),
        spike_for: Duration::from_secs(10),
        ramp_down: Duration::from_secs(5),
        mix: [90, 9, 1],
        think: Duration::ZERO,
        budgets: ["examples/performance-budgets.yml", concat!(env!("CARGO_MANIFEST_DIR"), "/performance-budgets.yml")]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file()),
        max_error_rate: 0.01,
        compare_bare: None,
        duration: Duration::from_secs(5),
        rounds: 3,
        min_ratio: 0.85,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let duration = |v: &str| humantime::parse_duration(v).map_err(|e| format!("{flag} {v:?}: {e}"));
        let count = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag} {v:?}: {e}"));
        match flag.as_str() {
            "--url" => options.url = value.trim_end_matches('/').to_owned(),
            "--token" => options.token = Some(value),
            "--clients" => options.clients = count(&value)?.max(1),
            "--spike" => options.spike = count(&value)?,
            "--ramp" => options.ramp = duration(&value)?,
            "--sustain" => options.sustain = duration(&value)?,
            "--spike-for" => options.spike_for = duration(&value)?,
            "--ramp-down" => options.ramp_down = duration(&value)?,
            "--think" => options.think = duration(&value)?,
            "--budgets" => options.budgets = Some(PathBuf::from(value)),
            "--compare-bare" => {
                if !value.starts_with('/') {
                    return Err(format!("--compare-bare {value:?}: a path such as /api/blueprints/1"));
                }
                options.compare_bare = Some(value);
            }
            "--duration" => options.duration = duration(&value)?,
            "--rounds" => options.rounds = count(&value)?.max(1),
            "--min-ratio" => options.min_ratio = value.parse().map_err(|e| format!("{flag} {value:?}: {e}"))?,
            "--max-error-rate" => {
                options.max_error_rate = value.parse().map_err(|e| format!("{flag} {value:?}: {e}"))?;
            }
            "--mix" => {
                let parts: Vec<u32> = value
                    .split(',')
                    .map(|p| p.trim().parse::<u32>())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("--mix {value:?}: {e}"))?;
                match parts.as_slice() {
                    [r, w, d] if r + w + d > 0 => options.mix = [*r, *w, *d],
                    _ => return Err(format!("--mix {value:?}: three percentages, e.g. 90,9,1")),
                }
            }
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    if options.spike == 0 {
        options.spike = options.clients * 2;
    }
    if options.token.is_none() && options.mix[1] + options.mix[2] > 0 {
        eprintln!("loadtest: no --token: running reads only");
        options.mix = [100, 0, 0];
    }
    Ok(Some(options))
}

/// One stage: the number of users moves linearly from the previous stage's
/// target to this one's over `duration`.
#[derive(Debug, Clone, Copy)]
struct Stage {
    name: &'static str,
    duration: Duration,
    target: usize,
}

fn stages(o: &Options) -> Vec<Stage> {
    vec![
        Stage { name: "ramp", duration: o.ramp, target: o.clients },
        Stage { name: "sustain", duration: o.sustain, target: o.clients },
        Stage { name: "spike-up", duration: Duration::from_millis(500).min(o.spike_for), target: o.spike },
        Stage { name: "spike", duration: o.spike_for, target: o.spike },
        Stage { name: "ramp-down", duration: o.ramp_down, target: 0 },
    ]
}

/// Users wanted `elapsed` into the run, and the stage's name; `None` once over.
fn target_at(stages: &[Stage], elapsed: Duration) -> Option<(usize, &'static str)> {
    let mut start = Duration::ZERO;
    let mut from = 0_usize;
    for stage in stages {
        let end = start + stage.duration;
        if elapsed < end {
            let progress = (elapsed - start).as_secs_f64() / stage.duration.as_secs_f64().max(1e-9);
            let users = from as f64 + (stage.target as f64 - from as f64) * progress;
            return Some((users.round().max(if stage.target > 0 { 1.0 } else { 0.0 }) as usize, stage.name));
        }
        start = end;
        from = stage.target;
    }
    None
}

/// What the budgets file says about one route.
#[derive(Debug, Clone, Default, Deserialize)]
struct Budget {
    p50: Option<String>,
    p95: Option<String>,
    p99: Option<String>,
    max_payload: Option<serde_json::Value>,
    #[allow(dead_code)]
    db_queries: Option<u64>,
    cache_required: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct BudgetsFile {
    api_endpoints: BTreeMap<String, Budget>,
}

fn load_budgets(path: &PathBuf) -> Result<BTreeMap<String, Budget>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: BudgetsFile = serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    // `:id` and `{id}` name the same route.
    Ok(file
        .api_endpoints
        .into_iter()
        .map(|(route, budget)| {
            let route = route.split('/').map(|seg| match seg.strip_prefix(':') {
                Some(name) => format!("{{{name}}}"),
                None => seg.to_owned(),
            });
            (route.collect::<Vec<_>>().join("/"), budget)
        })
        .collect())
}

fn bytes_of(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => {
            let s = s.trim();
            let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
            let n: f64 = digits.parse().ok()?;
            let factor = match unit.trim().to_ascii_uppercase().as_str() {
                "" | "B" => 1.0,
                "KB" => 1000.0,
                "KIB" => 1024.0,
                "MB" => 1_000_000.0,
                "MIB" => 1_048_576.0,
                _ => return None,
            };
            Some((n * factor) as u64)
        }
        _ => None,
    }
}

/// Numbers of one route.
struct RouteStats {
    latency_us: Histogram<u64>,
    count: u64,
    failed: u64,
    limited: u64,
    hits: u64,
    misses: u64,
    no_cache_header: u64,
    max_payload: u64,
}

impl RouteStats {
    fn new() -> Self {
        Self {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"),
            count: 0,
            failed: 0,
            limited: 0,
            hits: 0,
            misses: 0,
            no_cache_header: 0,
            max_payload: 0,
        }
    }
}

#[derive(Default)]
struct Shared {
    routes: Mutex<BTreeMap<&'static str, RouteStats>>,
    requests: AtomicU64,
    failures: AtomicU64,
    active: AtomicUsize,
    pool_used_max: AtomicUsize,
    pool_max: AtomicUsize,
    stop: AtomicBool,
    first_errors: Mutex<Vec<String>>,
}

/// What the load test writes to: one blueprint and one project of the token's user.
#[derive(Debug, Clone, Default)]
struct Fixtures {
    blueprint: Option<i64>,
    project: Option<i64>,
}

struct Outcome {
    route: &'static str,
    status: Option<u16>,
    elapsed: Duration,
    cache: Option<bool>,
    bytes: u64,
    error: Option<String>,
}

async fn send(route: &'static str, request: reqwest::RequestBuilder) -> Outcome {
    let started = Instant::now();
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            // HIT or STALE: served by the cache; MISS: filled it; anything
            // else (absent, BYPASS): not cached.
            let cache = match response.headers().get("x-cache").and_then(|v| v.to_str().ok()) {
                Some(v) if v.starts_with("HIT") || v.starts_with("STALE") => Some(true),
                Some(v) if v.starts_with("MISS") => Some(false),
                _ => None,
            };
            let body = response.bytes().await;
            let elapsed = started.elapsed();
            match body {
                Ok(body) => {
                    Outcome { route, status: Some(status), elapsed, cache, bytes: body.len() as u64, error: None }
                }
                Err(err) => Outcome { route, status: None, elapsed, cache, bytes: 0, error: Some(err.to_string()) },
            }
        }
        Err(err) => Outcome {
            route,
            status: None,
            elapsed: started.elapsed(),
            cache: None,
            bytes: 0,
            error: Some(err.to_string()),
        },
    }
}

fn record(shared: &Shared, outcome: Outcome) {
    let limited = outcome.status == Some(429);
    let failed = match outcome.status {
        None => true,
        Some(429) => false,
        Some(s) => s >= 400,
    };
    shared.requests.fetch_add(1, Ordering::Relaxed);
    if failed {
        shared.failures.fetch_add(1, Ordering::Relaxed);
        let mut errors = shared.first_errors.lock();
        if errors.len() < 5 {
            errors.push(format!(
                "{}: {}",
                outcome.route,
                outcome.error.unwrap_or_else(|| format!("HTTP {}", outcome.status.unwrap_or(0)))
            ));
        }
    }
    let mut routes = shared.routes.lock();
    let stats = routes.entry(outcome.route).or_insert_with(RouteStats::new);
    stats.count += 1;
    stats.failed += u64::from(failed);
    stats.limited += u64::from(limited);
    if !failed && !limited {
        let micros = u64::try_from(outcome.elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
        stats.latency_us.saturating_record(micros);
        stats.max_payload = stats.max_payload.max(outcome.bytes);
        match outcome.cache {
            Some(true) => stats.hits += 1,
            Some(false) => stats.misses += 1,
            None => stats.no_cache_header += 1,
        }
    }
}

/// One request of the mix.
async fn one_request(client: &reqwest::Client, o: &Options, fixtures: &Fixtures, rng: &mut fastrand::Rng) -> Outcome {
    let base = &o.url;
    let total = o.mix.iter().sum::<u32>().max(1);
    let pick = rng.u32(0..total);
    let auth = o.token.as_deref().map(|t| format!("Bearer {t}")).unwrap_or_default();
    if pick < o.mix[0] {
        // Reads: a hot set of blueprints takes most traffic, as in production.
        let roll = rng.u32(0..100);
        if roll < 60 {
            let id = if rng.u32(0..100) < 80 { rng.i64(1..=100) } else { rng.i64(1..=1200) };
            send("GET /api/blueprints/{id}", client.get(format!("{base}/api/blueprints/{id}"))).await
        } else if roll < 75 {
            send("GET /api/blueprints", client.get(format!("{base}/api/blueprints?limit=20"))).await
        } else if roll < 85 {
            let id = rng.i64(1..=300);
            send("GET /api/projects/{id}", client.get(format!("{base}/api/projects/{id}"))).await
        } else if roll < 92 {
            send("GET /api/projects", client.get(format!("{base}/api/projects?limit=20"))).await
        } else {
            send("GET /api/projects/stats/summary", client.get(format!("{base}/api/projects/stats/summary"))).await
        }
    } else if pick < o.mix[0] + o.mix[1] {
        if rng.bool()
            && let Some(id) = fixtures.project
        {
            let region = ["eu-west-1", "us-east-1", "us-west-2"][rng.usize(0..3)];
            let body = format!(r#"{{"region":"{region}"}}"#);
            let request = client
                .patch(format!("{base}/api/projects/{id}"))
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(body);
            return send("PATCH /api/projects/{id}", request).await;
        }
        let id = fixtures.blueprint.unwrap_or(1);
        let body = format!(
            r#"{{"name":"Load test blueprint {}","description":"written by the load test","category":"api","tags":["load-test"]}}"#,
            rng.u32(..)
        );
        let request = client
            .put(format!("{base}/api/blueprints/{id}"))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(body);
        send("PUT /api/blueprints/{id}", request).await
    } else {
        let body = format!(r#"{{"project_id":{}}}"#, fixtures.project.unwrap_or(1));
        let request = client
            .post(format!("{base}/api/deploy"))
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(body);
        send("POST /api/deploy", request).await
    }
}

/// Creates the blueprint and project the writes and deploys use.
async fn prepare(client: &reqwest::Client, o: &Options) -> Result<Fixtures, String> {
    let Some(token) = &o.token else { return Ok(Fixtures::default()) };
    let auth = format!("Bearer {token}");
    let created = client
        .post(format!("{}/api/blueprints", o.url))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(r#"{"name":"Load test blueprint","category":"api","tags":["load-test"]}"#)
        .send()
        .await
        .map_err(|e| format!("POST /api/blueprints: {e}"))?;
    if created.status() != 201 {
        return Err(format!("POST /api/blueprints answered {} (is the token right?)", created.status()));
    }
    let blueprint: serde_json::Value = created.json_value().await?;
    let blueprint_id = blueprint["id"].as_i64().ok_or("POST /api/blueprints returned no id")?;
    let name = format!("load-test-{}", fastrand::u32(..));
    let created = client
        .post(format!("{}/api/projects", o.url))
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(format!(r#"{{"name":"{name}","blueprint_id":{blueprint_id},"region":"eu-west-1"}}"#))
        .send()
        .await
        .map_err(|e| format!("POST /api/projects: {e}"))?;
    if created.status() != 201 {
        return Err(format!("POST /api/projects answered {}", created.status()));
    }
    let project: serde_json::Value = created.json_value().await?;
    Ok(Fixtures { blueprint: Some(blueprint_id), project: project["id"].as_i64() })
}

trait JsonValue {
    async fn json_value(self) -> Result<serde_json::Value, String>;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Result<serde_json::Value, String> {
        let bytes = self.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}

/// Samples the service's pool usage while the test runs.
async fn watch_pool(client: reqwest::Client, url: String, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        if let Ok(response) = client.get(format!("{url}/dashboard/stats")).send().await
            && let Ok(stats) = response.json_value().await
        {
            let pool = &stats["database"]["pool"];
            if let (Some(size), Some(available), Some(max)) =
                (pool["size"].as_u64(), pool["available"].as_u64(), pool["max_size"].as_u64())
            {
                shared.pool_used_max.fetch_max(size.saturating_sub(available) as usize, Ordering::Relaxed);
                shared.pool_max.store(max as usize, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn ms(us: u64) -> String {
    let ms = us as f64 / 1000.0;
    if ms < 10.0 { format!("{ms:.2}ms") } else { format!("{ms:.1}ms") }
}

#[tokio::main]
async fn main() -> ExitCode {
    // The bare server of --compare-bare: this same program, in its own process.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve-bare") {
        return match args.get(2) {
            Some(file) => serve_bare(file).await,
            None => ExitCode::from(2),
        };
    }
    let options = match parse_args() {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("loadtest: {err}");
            return ExitCode::from(2);
        }
    };
    let budgets = match &options.budgets {
        Some(path) => match load_budgets(path) {
            Ok(budgets) => budgets,
            Err(err) => {
                eprintln!("loadtest: budgets: {err}");
                return ExitCode::from(2);
            }
        },
        None => BTreeMap::new(),
    };
    let client = match reqwest::Client::builder()
        .pool_max_idle_per_host(options.spike.max(options.clients))
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            eprintln!("loadtest: HTTP client: {err}");
            return ExitCode::from(2);
        }
    };
    match client.get(format!("{}/health/ready", options.url)).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => {
            eprintln!("loadtest: {}/health/ready answered {}", options.url, r.status());
            return ExitCode::from(2);
        }
        Err(err) => {
            eprintln!("loadtest: cannot reach {}: {err}", options.url);
            return ExitCode::from(2);
        }
    }
    if let Some(path) = options.compare_bare.clone() {
        return compare_bare(&client, &options, &path).await;
    }
    let fixtures = match prepare(&client, &options).await {
        Ok(fixtures) => Arc::new(fixtures),
        Err(err) => {
            eprintln!("loadtest: preparing: {err}");
            return ExitCode::from(2);
        }
    };

    let stages = Arc::new(stages(&options));
    let total: Duration = stages.iter().map(|s| s.duration).sum();
    let shared = Arc::new(Shared::default());
    let options = Arc::new(options);
    let started = Instant::now();
    let max_users = options.spike.max(options.clients);
    let mut users = Vec::with_capacity(max_users);
    for user in 0..max_users {
        let (client, options, fixtures, shared, stages) =
            (client.clone(), options.clone(), fixtures.clone(), shared.clone(), stages.clone());
        users.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(user as u64 + 1);
            loop {
                let Some((target, _)) = target_at(&stages, started.elapsed()) else { return };
                if user >= target {
                    // Not this user's turn at the current stage.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                shared.active.fetch_add(1, Ordering::Relaxed);
                let outcome = one_request(&client, &options, &fixtures, &mut rng).await;
                shared.active.fetch_sub(1, Ordering::Relaxed);
                record(&shared, outcome);
                if !options.think.is_zero() {
                    tokio::time::sleep(options.think).await;
                }
            }
        }));
    }
    let sampler = tokio::spawn(watch_pool(client.clone(), options.url.clone(), shared.clone()));

    let bar = ProgressBar::new(total.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {percent:>3}% {msg}")
            .expect("a valid progress template"),
    );
    let mut last = (Instant::now(), 0_u64);
    while let Some((target, stage)) = target_at(&stages, started.elapsed()) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let done = shared.requests.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / last.0.elapsed().as_secs_f64().max(1e-3);
        last = (Instant::now(), done);
        bar.set_position(started.elapsed().as_millis().min(total.as_millis()) as u64);
        bar.set_message(format!(
            "{stage:<9} {target:>4} VUs  {rate:>8.0} req/s  {done} reqs  {} failed",
            shared.failures.load(Ordering::Relaxed)
        ));
    }
    for user in users {
        let _ = user.await;
    }
    shared.stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    bar.finish_and_clear();
    let elapsed = started.elapsed();

    summarize(&options, &stages, &shared, &budgets, elapsed)
}

fn summarize(
    options: &Options,
    stages: &[Stage],
    shared: &Shared,
    budgets: &BTreeMap<String, Budget>,
    elapsed: Duration,
) -> ExitCode {
    let routes = shared.routes.lock();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let (mut count, mut failed, mut limited, mut hits, mut misses) = (0, 0, 0, 0, 0);
    for stats in routes.values() {
        all.add(&stats.latency_us).expect("same bounds");
        count += stats.count;
        failed += stats.failed;
        limited += stats.limited;
        hits += stats.hits;
        misses += stats.misses;
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let plan: Vec<String> = stages
        .iter()
        .filter(|s| !s.duration.is_zero())
        .map(|s| format!("{} {} → {}", s.name, humantime::format_duration(s.duration), s.target))
        .collect();
    println!();
    println!("     scenarios..............: {} (url {})", plan.join(", "), options.url);
    println!(
        "     mix....................: reads {}%, writes {}%, deploys {}%",
        options.mix[0], options.mix[1], options.mix[2]
    );
    println!("     http_reqs..............: {count:<8} {:.1}/s", count as f64 / secs);
    let failed_rate = if count == 0 { 0.0 } else { failed as f64 / count as f64 };
    println!("     http_req_failed........: {:.2}%   {failed} of {count}", failed_rate * 100.0);
    println!("     rate_limited (429).....: {limited}");
    if !all.is_empty() {
        println!(
            "     http_req_duration......: avg={} min={} p(50)={} p(95)={} p(99)={} max={}",
            ms(all.mean() as u64),
            ms(all.min()),
            ms(all.value_at_quantile(0.50)),
            ms(all.value_at_quantile(0.95)),
            ms(all.value_at_quantile(0.99)),
            ms(all.max())
        );
    }
    if hits + misses > 0 {
        println!(
            "     cache_hit_ratio........: {:.2}%  {hits} hits, {misses} misses (X-Cache)",
            hits as f64 * 100.0 / (hits + misses) as f64
        );
    } else {
        println!("     cache_hit_ratio........: n/a (no X-Cache headers: the response cache is not enabled)");
    }
    let pool_max = shared.pool_max.load(Ordering::Relaxed);
    if pool_max > 0 {
        println!(
            "     db_connections_used....: {} at most, of a pool of {pool_max} (sampled every 250 ms)",
            shared.pool_used_max.load(Ordering::Relaxed)
        );
    }
    println!();
    println!(
        "     {:<2} {:<34} {:>8} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "", "route", "count", "fail", "429", "p50", "p95", "p99", "max body", "hit"
    );
    let mut violations = Vec::new();
    for (route, stats) in routes.iter() {
        let h = &stats.latency_us;
        let (p50, p95, p99) = (h.value_at_quantile(0.50), h.value_at_quantile(0.95), h.value_at_quantile(0.99));
        let mut ok = true;
        if let Some(budget) = budgets.get(*route)
            && !h.is_empty()
        {
            for (name, limit, value) in
                [("p50", &budget.p50, p50), ("p95", &budget.p95, p95), ("p99", &budget.p99, p99)]
            {
                if let Some(limit) = limit.as_deref().and_then(|l| humantime::parse_duration(l).ok())
                    && value > limit.as_micros() as u64
                {
                    ok = false;
                    violations.push(format!(
                        "{route}: {name} {} > budget {}",
                        ms(value),
                        humantime::format_duration(limit)
                    ));
                }
            }
            if let Some(limit) = budget.max_payload.as_ref().and_then(bytes_of)
                && stats.max_payload > limit
            {
                ok = false;
                violations.push(format!("{route}: body {} B > budget {limit} B", stats.max_payload));
            }
            // As brisk-budget judges it: every response went through the cache.
            if budget.cache_required == Some(true) && stats.no_cache_header > 0 {
                ok = false;
                violations
                    .push(format!("{route}: cache required, {} responses without X-Cache", stats.no_cache_header));
            }
        }
        let hit = if stats.hits + stats.misses > 0 {
            format!("{:.1}%", stats.hits as f64 * 100.0 / (stats.hits + stats.misses) as f64)
        } else {
            "-".to_owned()
        };
        let mark = if !budgets.contains_key(*route) {
            " "
        } else if ok {
            "✓"
        } else {
            "✗"
        };
        let show = |v: u64| if !h.is_empty() { ms(v) } else { "-".to_owned() };
        println!(
            "     {mark:<2} {route:<34} {:>8} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {hit:>7}",
            stats.count,
            stats.failed,
            stats.limited,
            show(p50),
            show(p95),
            show(p99),
            stats.max_payload
        );
    }
    println!();
    let errors = shared.first_errors.lock();
    for error in errors.iter() {
        println!("     first failures: {error}");
    }
    let mut pass = violations.is_empty();
    for violation in &violations {
        println!("     ✗ budget: {violation}");
    }
    if failed_rate > options.max_error_rate {
        pass = false;
        println!(
            "     ✗ failed share {:.2}% > --max-error-rate {:.2}%",
            failed_rate * 100.0,
            options.max_error_rate * 100.0
        );
    }
    if count == 0 {
        pass = false;
        println!("     ✗ no request completed");
    }
    if pass {
        println!("     ✓ every budget met");
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Serves the bytes of `file` as `application/json` on every path: the bare
/// axum handler the service is compared with.
async fn serve_bare(file: &str) -> ExitCode {
    let body = match std::fs::read(file) {
        Ok(body) => bytes::Bytes::from(body),
        Err(err) => {
            eprintln!("loadtest --serve-bare: {file}: {err}");
            return ExitCode::from(2);
        }
    };
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], body) }
    });
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("loadtest --serve-bare: {err}");
            return ExitCode::from(2);
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("{addr}"),
        Err(_) => return ExitCode::from(2),
    }
    match axum::serve(listener, app).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

/// Requests completed (2xx), failed, and cache hits seen in `duration` by
/// `clients` users each sending one request after the other to `url`.
async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    clients: usize,
    duration: Duration,
) -> (u64, u64, u64, Histogram<u64>) {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (client, url) = (client.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
            let (mut ok, mut failed, mut hits) = (0_u64, 0_u64, 0_u64);
            while Instant::now() < deadline {
                let outcome = send("GET", client.get(&url)).await;
                match outcome.status {
                    Some(status) if (200..300).contains(&status) => {
                        ok += 1;
                        hits += u64::from(outcome.cache == Some(true));
                        histogram
                            .saturating_record(u64::try_from(outcome.elapsed.as_micros()).unwrap_or(u64::MAX).max(1));
                    }
                    _ => failed += 1,
                }
            }
            (ok, failed, hits, histogram)
        }));
    }
    let mut total = (0, 0, 0, Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"));
    for task in tasks {
        if let Ok((ok, failed, hits, histogram)) = task.await {
            total.0 += ok;
            total.1 += failed;
            total.2 += hits;
            total.3.add(&histogram).expect("same bounds");
        }
    }
    total
}

async fn compare_bare(client: &reqwest::Client, options: &Options, path: &str) -> ExitCode {
    let url = format!("{}{path}", options.url);
    // Twice: the second answer comes from the cache when the service caches it.
    let mut body = None;
    for _ in 0..2 {
        match client.get(&url).send().await {
            Ok(response) if response.status().is_success() => body = response.bytes().await.ok(),
            Ok(response) => {
                eprintln!("loadtest: GET {url} answered {}", response.status());
                return ExitCode::from(2);
            }
            Err(err) => {
                eprintln!("loadtest: GET {url}: {err}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(body) = body else {
        eprintln!("loadtest: GET {url}: no body");
        return ExitCode::from(2);
    };
    let file = std::env::temp_dir().join(format!("brisk-loadtest-bare-{}.json", std::process::id()));
    if let Err(err) = std::fs::write(&file, &body) {
        eprintln!("loadtest: {}: {err}", file.display());
        return ExitCode::from(2);
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            eprintln!("loadtest: {err}");
            return ExitCode::from(2);
        }
    };
    let mut child = match std::process::Command::new(exe)
        .arg("--serve-bare")
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => {
            eprintln!("loadtest: starting the bare server: {err}");
            return ExitCode::from(2);
        }
    };
    let mut line = String::new();
    if let Some(stdout) = child.stdout.take() {
        use std::io::BufRead;
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    }
    let bare_url = format!("http://{}{path}", line.trim());
    let clients = options.clients;
    println!("     comparing GET {path} ({} bytes): service {} vs bare axum {}", body.len(), options.url, line.trim());
    println!(
        "     {clients} clients, {} rounds of {} per side, alternating",
        options.rounds,
        humantime::format_duration(options.duration)
    );
    let (mut service, mut bare) = ((0_u64, 0_u64, 0_u64), (0_u64, 0_u64));
    let mut service_latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let mut bare_latency = service_latency.clone();
    for round in 1..=options.rounds {
        let (ok, failed, hits, latency) = closed_loop(client, &url, clients, options.duration).await;
        service = (service.0 + ok, service.1 + failed, service.2 + hits);
        service_latency.add(&latency).expect("same bounds");
        let (b_ok, b_failed, _, b_latency) = closed_loop(client, &bare_url, clients, options.duration).await;
        bare = (bare.0 + b_ok, bare.1 + b_failed);
        bare_latency.add(&b_latency).expect("same bounds");
        let secs = options.duration.as_secs_f64();
        println!(
            "     round {round}: service {:>9.0} req/s   bare {:>9.0} req/s",
            ok as f64 / secs,
            b_ok as f64 / secs
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&file);
    let secs = options.duration.as_secs_f64() * options.rounds as f64;
    let ratio = if bare.0 == 0 { 0.0 } else { service.0 as f64 / bare.0 as f64 };
    println!();
    println!(
        "     service..: {:>9.0} req/s  p50={} p99={}  failed {}  X-Cache HIT {:.1}%",
        service.0 as f64 / secs,
        ms(service_latency.value_at_quantile(0.5)),
        ms(service_latency.value_at_quantile(0.99)),
        service.1,
        if service.0 == 0 { 0.0 } else { service.2 as f64 * 100.0 / service.0 as f64 }
    );
    println!(
        "     bare.....: {:>9.0} req/s  p50={} p99={}  failed {}",
        bare.0 as f64 / secs,
        ms(bare_latency.value_at_quantile(0.5)),
        ms(bare_latency.value_at_quantile(0.99)),
        bare.1
    );
    println!("     ratio....: {:.1}% of bare (needs {:.0}%)", ratio * 100.0, options.min_ratio * 100.0);
    if ratio >= options.min_ratio && service.1 == 0 && bare.1 == 0 {
        println!("     ✓ within the throughput budget");
        ExitCode::SUCCESS
    } else {
        println!("     ✗ below the throughput budget or requests failed");
        ExitCode::from(1)
    }
}
