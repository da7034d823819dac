//! The blueprint API: an axum service shaped like a production API platform
//! (blueprints, projects, deploys), built on the brisk crates as a user would
//! build it.
//!
//! Run it with `cargo run --example blueprint_api` from the repository root:
//! with no configuration it runs on an embedded SQLite database, seeded with
//! users, 1,200 blueprints and 300 projects. [`Config`] lists the
//! environment variables that change that (PostgreSQL, Redis, budgets…).
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = blueprint::Config::from_env()?;
//! let app = blueprint::App::start(config).await?;
//! println!("demo token: {}", app.demo_token());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app.router()).await?;
//! # Ok(())
//! # }
//! ```

mod api;
mod config;
mod deploy;
mod redis_probe;
mod secret;
pub mod store;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;

pub use crate::api::auth::Authenticated;
pub use crate::api::problem::{FieldError, Problem};
pub use crate::config::{Config, ConfigError, DatabaseConfig, HELP, RedisConfig};
pub use crate::store::StartError;
use crate::store::{Deploy, PostgresStore, SqliteStore, Store};

/// The running service: its database, token table and deploy worker.
#[derive(Debug)]
pub struct App {
    state: api::AppState,
    demo_token: String,
    admin_token: String,
}

impl App {
    /// Opens the database (migrating and seeding it), loads the users'
    /// tokens and starts the deploy worker.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached or prepared, or Redis is
    /// configured with a URL the client refuses.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let store: Arc<dyn Store> = match &config.database {
            DatabaseConfig::Sqlite { path } => Arc::new(
                SqliteStore::open(path, config.db_pool_size.get(), config.db_pool_timeout, config.seed_blueprints)
                    .await?,
            ),
            DatabaseConfig::Postgres { url } => Arc::new(
                PostgresStore::connect(url, config.db_pool_size.get(), config.db_pool_timeout, config.seed_blueprints)
                    .await?,
            ),
        };
        let users = store.user_tokens().await.map_err(|e| StartError::new("loading the users' tokens", e))?;
        let tokens = api::auth::Tokens::new(users);
        let demo_token = tokens
            .token_of(1)
            .ok_or_else(|| StartError::new("loading the users' tokens", "the database has no user with id 1"))?;
        let admin_token = match &config.admin_token {
            Some(token) => token.clone(),
            None => secret::random_hex(24).map_err(|e| StartError::new("generating ADMIN_TOKEN", e))?,
        };
        let redis = config
            .redis
            .as_ref()
            .map(redis_probe::RedisProbe::new)
            .transpose()
            .map_err(|e| StartError::new("configuring the Redis client", e))?;
        let deploys = deploy::DeployQueue::start(store.clone(), config.deploy_duration);
        let state = api::AppState::new(store, tokens, deploys, redis);
        Ok(Self { state, demo_token, admin_token })
    }

    /// The service's router, ready for `axum::serve`.
    pub fn router(&self) -> Router {
        api::router(self.state.clone())
    }

    /// A bearer token of a seeded user (user 1), for trying the write routes.
    pub fn demo_token(&self) -> &str {
        &self.demo_token
    }

    /// The bearer token of a seeded user, when `user` exists.
    pub fn token_of(&self, user: i64) -> Option<String> {
        self.state.tokens().token_of(user)
    }

    /// The admin bearer token (`ADMIN_TOKEN`, or the one generated at start).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn engine(&self) -> &'static str {
        self.state.store().engine()
    }

    /// Every change of a deploy job's state on this instance, as it happens.
    pub fn deploy_events(&self) -> tokio::sync::broadcast::Receiver<Deploy> {
        self.state.deploys().subscribe()
    }

    /// Stops taking deploy jobs and waits for the running ones to end. Call
    /// after the server has drained its requests.
    pub async fn shutdown(&self) {
        self.state.deploys().shutdown().await;
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
