//! The dashboard page in headless Chromium (Debian's `chromium`): the page
//! loads, polls `/dashboard/stats`, and draws its charts and route table.
//!
//! Without a Chromium binary the test says so and is skipped, except when `CI`
//! is set, where it fails (CI installs `chromium`). `CHROMIUM` names another binary.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::config;

fn chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_renders_its_charts_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        let message = "no chromium on PATH (apt-get install chromium, or set CHROMIUM)";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("SKIPPED the_dashboard_renders_its_charts_in_headless_chromium: {message}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite3");
    let app = blueprint::App::start(config(&[("SQLITE_PATH", db.to_str().unwrap())])).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    // Some traffic, so there is a hit ratio and route latencies to draw.
    let client = common::Client { router: app.router() };
    for _ in 0..30 {
        client.get("/api/blueprints/1").await;
        client.get("/api/blueprints?limit=5").await;
    }

    let screenshot = dir.path().join("dashboard.png");
    let run = |args: Vec<String>| {
        let chromium = chromium.clone();
        let profile = dir.path().join("chromium-profile");
        tokio::task::spawn_blocking(move || {
            Command::new(chromium)
                .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"])
                // No network but the page's: no first-run, sync, component or
                // background requests, each of which a closed network refuses.
                .args(["--no-first-run", "--disable-background-networking", "--disable-component-update"])
                .args(["--disable-sync", "--disable-quic"])
                .arg(format!("--user-data-dir={}", profile.display()))
                .args(["--window-size=1280,900", "--virtual-time-budget=6000"])
                .args(args)
                .output()
        })
    };
    let url = format!("http://{addr}/");
    let dom = run(vec!["--dump-dom".into(), url.clone()]).await.unwrap().expect("chromium runs");
    assert!(dom.status.success(), "chromium failed: {}", String::from_utf8_lossy(&dom.stderr));
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    assert!(dom.contains("data-rendered=\"true\""), "the page never rendered stats:\n{dom}");
    for chart in ["hit-chart", "pool-chart", "denial-chart"] {
        let at = dom.find(&format!("id=\"{chart}\"")).unwrap_or_else(|| panic!("{chart} missing"));
        let tag = &dom[at..at + dom[at..].find('>').unwrap()];
        assert!(tag.contains("data-points=\""), "{chart} drew nothing: {tag}");
    }
    assert!(dom.contains("GET /api/blueprints/{id}"), "the route table lists the routes");
    assert!(dom.contains("<span id=\"status\" class=\"ok\">live</span>"), "the page is live");
    assert!(!dom.contains("id=\"hit-ratio\">–<"), "a hit ratio is shown");

    let shot = run(vec![format!("--screenshot={}", screenshot.display()), url]).await.unwrap().expect("chromium runs");
    assert!(shot.status.success(), "chromium failed: {}", String::from_utf8_lossy(&shot.stderr));
    let png = std::fs::read(&screenshot).expect("a screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is a PNG");
    assert!(png.len() > 20_000, "a rendered page, not a blank one ({} bytes)", png.len());
    server.abort();
}
