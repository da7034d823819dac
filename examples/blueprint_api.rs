//! The blueprint API service. Run from the repository root:
//!
//! ```text
//! cargo run --example blueprint_api
//! cargo run --example blueprint_api -- --help
//! ```
//!
//! With no configuration it listens on 127.0.0.1:3000 on an embedded SQLite
//! database; `--help` lists the environment variables that change that.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        None => {}
        Some("-h" | "--help") => {
            print!("{}", blueprint::HELP);
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("blueprint_api: unexpected argument {other:?}; configuration is by environment (see --help)");
            return ExitCode::from(2);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let config = match blueprint::Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("blueprint_api: {err}");
            return ExitCode::from(2);
        }
    };
    let bind = config.bind;
    let admin_from_env = config.admin_token.is_some();
    let app = match blueprint::App::start(config).await {
        Ok(app) => app,
        Err(err) => {
            eprintln!("blueprint_api: cannot start: {err}");
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(bind).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("blueprint_api: cannot listen on {bind} (set BIND to another address): {err}");
            return ExitCode::from(1);
        }
    };
    let addr = listener.local_addr().unwrap_or(bind);
    let token = app.demo_token();
    println!("blueprint API ({}) listening on http://{addr}", app.engine());
    println!("  dashboard:  http://{addr}/");
    println!("  try:        curl http://{addr}/api/blueprints?limit=5");
    println!("              curl http://{addr}/api/blueprints/1");
    println!("              curl http://{addr}/api/projects/stats/summary");
    println!("              curl http://{addr}/health/ready");
    println!("  operations: http://{addr}/metrics  http://{addr}/budget/report  http://{addr}/cache/stats");
    println!("  demo token: {token}");
    println!(
        "  write:      curl -X POST http://{addr}/api/blueprints -H 'Authorization: Bearer {token}' \
         -H 'Content-Type: application/json' -d '{{\"name\":\"My API\",\"category\":\"api\",\"tags\":[\"rust\"]}}'"
    );
    if !admin_from_env {
        println!("  admin token (generated; set ADMIN_TOKEN to choose one): {}", app.admin_token());
    }
    // With the peer address, so the API rate limit can count per client IP.
    let service = app.router().into_make_service_with_connect_info::<std::net::SocketAddr>();
    let served = axum::serve(listener, service).with_graceful_shutdown(shutdown_signal()).await;
    app.shutdown().await;
    if let Err(err) = served {
        eprintln!("blueprint_api: server error: {err}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

/// Resolves on SIGINT or SIGTERM, so in-flight requests drain before exit.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
