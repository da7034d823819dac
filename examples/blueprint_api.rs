//! The blueprint API service. Run from the repository root:
//!
//! ```text
//! cargo run --example blueprint_api
//! ```
//!
//! With no configuration it listens on 127.0.0.1:3000; `BIND` changes that.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
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
    let listener = match tokio::net::TcpListener::bind(config.bind).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("blueprint_api: cannot listen on {} (set BIND to another address): {err}", config.bind);
            return ExitCode::from(1);
        }
    };
    let addr = listener.local_addr().unwrap_or(config.bind);
    println!("blueprint API listening on http://{addr}");
    println!("  try: curl http://{addr}/health/live");
    let app = blueprint::app(&config);
    if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await {
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
