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
mod response_cache;
mod secret;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;

pub use crate::api::auth::Authenticated;
pub use crate::api::problem::{FieldError, Problem};
pub use crate::config::{Config, ConfigError, DatabaseConfig, HELP, RateLimit, RedisConfig};
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
        let mut registry = prometheus_client::registry::Registry::default();
        let pools = brisk_pool_metrics::PoolMetrics::new();
        pools.register(&mut registry);
        let db_pool = pools.pool("primary");
        let store: Arc<dyn Store> = match &config.database {
            DatabaseConfig::Sqlite { path } => Arc::new(
                SqliteStore::open(
                    path,
                    config.db_pool_size.get(),
                    config.db_pool_timeout,
                    config.seed_blueprints,
                    &db_pool,
                )
                .await?,
            ),
            DatabaseConfig::Postgres { url } => Arc::new(
                PostgresStore::connect(
                    url,
                    config.db_pool_size.get(),
                    config.db_pool_timeout,
                    config.seed_blueprints,
                    &db_pool,
                )
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

        // The response cache: L1 in process; L2, the bus and cross-instance
        // invalidation on Redis when configured.
        // The breaker probes a failed Redis every 2 s (brisk-cache's default
        // is 5 s), so the shared tier is back within seconds of Redis.
        let mut cache = brisk_cache::TieredCache::builder()
            .prefix("blueprint-api")
            .l1_max_bytes(config.cache_l1_max_bytes)
            .circuit_breaker(5, Duration::from_secs(2));
        match &config.redis {
            Some(RedisConfig::Single { url }) => {
                cache = cache.redis_url(url).map_err(|e| StartError::new("REDIS_URL", e))?;
            }
            Some(RedisConfig::Cluster { urls }) => cache = cache.redis_cluster(urls.iter().map(String::as_str)),
            None => {}
        }
        let cache = cache.build().map_err(|e| StartError::new("building the response cache", e))?;
        if config.redis.is_some()
            && tokio::time::timeout(Duration::from_secs(5), cache.wait_until_ready()).await.is_err()
        {
            tracing::warn!("the cache's invalidation bus is not subscribed yet; serving from Redis until it is");
        }
        cache.register(&mut registry);
        let cache = response_cache::ResponseCache::new(cache);

        // Rate limits: in memory, or shared on Redis.
        let limiter_store = match &config.redis {
            None => None,
            Some(redis_config) => {
                let builder = brisk_ratelimit::store::RedisStore::builder();
                let store = match redis_config {
                    RedisConfig::Single { url } => {
                        let client = redis::Client::open(url.as_str()).map_err(|e| StartError::new("REDIS_URL", e))?;
                        builder.connect(client).await
                    }
                    RedisConfig::Cluster { urls } => {
                        let client = redis::cluster::ClusterClient::new(urls.clone())
                            .map_err(|e| StartError::new("REDIS_CLUSTER_URLS", e))?;
                        builder.connect_cluster(client).await
                    }
                };
                match store {
                    Ok(store) => Some(store),
                    // Redis down at start must not keep the API down: each
                    // instance limits on its own until it restarts with Redis.
                    Err(err) => {
                        tracing::error!(error = %err, "rate limits cannot reach Redis; limiting in memory on this instance");
                        None
                    }
                }
            }
        };
        let limit = |prefix: &str, name: &str, rate: Option<RateLimit>| -> Result<_, StartError> {
            rate.map(|rate| api::limits::limiter(prefix, name, rate, limiter_store.clone()))
                .transpose()
                .map_err(|e| StartError::new(format!("building the {name} rate limiter"), e))
        };
        // Outside the cache's `blueprint-api:` namespace: the cache's clear and
        // pattern clean-ups remove every key under it, limits included.
        let limits = api::limits::Limits {
            api: limit("blueprint-api-rl:api:", "api", config.api_rate_limit)?,
            deploy: limit("blueprint-api-rl:deploy:", "deploy", config.deploy_rate_limit)?,
        };
        // Both limiters in one collector: each metric family once, the
        // limiters' series told apart by `limiter="<prefix>"`.
        brisk_ratelimit::RateLimiter::register_all(&mut registry, limits.api.iter().chain(&limits.deploy));

        // Budgets: per-route latency, payload, queries and cache use.
        let budgets = match &config.budgets_file {
            Some(path) => brisk_budget::Budgets::from_path(path)
                .map_err(|e| StartError::new(format!("reading BUDGETS_FILE {}", path.display()), e))?,
            None => brisk_budget::Budgets::new(),
        };
        let budget = brisk_budget::BudgetLayer::builder(budgets).warm_up(10).build();
        budget.register(&mut registry);

        let pgbouncer = match &config.pgbouncer_admin_url {
            Some(url) => {
                let collector = brisk_pool_metrics::pgbouncer::PgBouncerCollector::from_url(url)
                    .map_err(|e| StartError::new("PGBOUNCER_ADMIN_URL", e))?;
                collector.register(&mut registry);
                Some(collector)
            }
            None => None,
        };

        let deploys = deploy::DeployQueue::start(store.clone(), cache.clone(), config.deploy_duration);
        let state = api::AppState::new(api::Parts {
            store,
            tokens,
            deploys,
            redis,
            cache,
            budget,
            metrics: Arc::new(registry),
            pgbouncer,
            limits,
            admin_token: admin_token.clone(),
        });
        Ok(Self { state, demo_token, admin_token })
    }

    /// The service's router, ready for `axum::serve`. Serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()` so the API rate
    /// limit can count per client IP; without the peer address requests pass
    /// that limit.
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
