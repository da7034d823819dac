//! Configuration from the environment.
//!
//! Every setting has a default, so `cargo run --example blueprint_api` needs
//! none. A variable that is set to a value that cannot be used stops start-up
//! with a [`ConfigError`] naming it.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

/// The text printed by `blueprint_api --help`.
pub const HELP: &str = "\
blueprint_api: the brisk blueprint API service

USAGE:
    cargo run --example blueprint_api [-- --help]

With no configuration it runs on an embedded SQLite database (created and
seeded on first start) and prints its address, a demo bearer token and the
URLs to try. Everything else is set through environment variables:

    BIND                 address to listen on            [default: 127.0.0.1:3000]
    DATABASE_URL         postgres://user:pass@host:port/db; PostgreSQL directly or
                         through PgBouncer (transaction mode is fine). Migrations
                         run at start. Unset: SQLite.
    PGBOUNCER_ADMIN_URL  postgres://user@host:port/pgbouncer: PgBouncer's admin
                         console, read for /metrics (SHOW POOLS, SHOW STATS)
    SQLITE_PATH          the SQLite database file         [default: <temp dir>/brisk-blueprint-api/blueprints.sqlite3]
    DB_POOL_SIZE         database connections at most      [default: 16 PostgreSQL, 8 SQLite]
    DB_POOL_TIMEOUT      longest wait for a connection     [default: 5s]
    REDIS_URL            redis://host:port; adds the shared cache tier, the
                         shared limiter and cross-instance invalidation
    REDIS_CLUSTER_URLS   comma-separated redis:// URLs of a Redis Cluster
                         (instead of REDIS_URL)
    CACHE_L1_MAX_BYTES   bytes the in-process response cache may hold
                                                       [default: 67108864 (64 MiB)]
    BUDGETS_FILE         performance budgets (YAML)        [default: examples/performance-budgets.yml when present]
    ADMIN_TOKEN          bearer token for /cache/* admin routes (at least 16
                         characters)                       [default: random, printed at start]
    API_RATE_LIMIT       requests per client IP, N/period or off [default: 1000/15m]
    DEPLOY_RATE_LIMIT    deploys per user, N/period or off [default: 10/1h]
    DEPLOY_DURATION      how long a simulated deploy runs  [default: 2s]
    SEED_BLUEPRINTS      blueprints seeded into an empty database [default: 1200]
    RUST_LOG             log filter                        [default: info]
";

/// Where the data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseConfig {
    /// The embedded default: a SQLite file.
    Sqlite {
        /// The database file; created with its directory when missing.
        path: PathBuf,
    },
    /// PostgreSQL, directly or through PgBouncer.
    Postgres {
        /// The connection URL (`postgres://…`).
        url: String,
    },
}

/// Which Redis deployment to use, when any.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisConfig {
    /// One Redis server.
    Single {
        /// Its URL (`redis://…`).
        url: String,
    },
    /// A Redis Cluster, by the URLs of some of its nodes.
    Cluster {
        /// Node URLs.
        urls: Vec<String>,
    },
}

/// A number of requests per period (`1000/15m`), as `API_RATE_LIMIT` and
/// `DEPLOY_RATE_LIMIT` write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per period.
    pub limit: NonZeroU32,
    /// The period.
    pub period: Duration,
}

impl RateLimit {
    fn parse(variable: &'static str, value: &str) -> Result<Option<Self>, ConfigError> {
        if value.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let (limit, period) = value
            .split_once('/')
            .ok_or_else(|| ConfigError::new(variable, value, "expected <requests>/<period> (e.g. 1000/15m) or off"))?;
        let limit: NonZeroU32 =
            limit.trim().parse().map_err(|e| ConfigError::new(variable, value, format!("requests: {e}")))?;
        let period = humantime::parse_duration(period.trim())
            .map_err(|e| ConfigError::new(variable, value, format!("period: {e}")))?;
        if period < Duration::from_secs(1) {
            return Err(ConfigError::new(variable, value, "the period must be at least 1s"));
        }
        Ok(Some(Self { limit, period }))
    }
}

/// What the service runs with. Every field has a default, so the service
/// starts with no configuration at all.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// `BIND`: the address to listen on; `127.0.0.1:3000` by default.
    pub bind: SocketAddr,
    /// `DATABASE_URL` / `SQLITE_PATH`.
    pub database: DatabaseConfig,
    /// `PGBOUNCER_ADMIN_URL`: PgBouncer's admin console, for its gauges in `/metrics`.
    pub pgbouncer_admin_url: Option<String>,
    /// `DB_POOL_SIZE`: the most database connections the pool opens.
    pub db_pool_size: NonZeroUsize,
    /// `DB_POOL_TIMEOUT`: the longest a request waits for a connection.
    pub db_pool_timeout: Duration,
    /// `REDIS_URL` or `REDIS_CLUSTER_URLS`.
    pub redis: Option<RedisConfig>,
    /// `CACHE_L1_MAX_BYTES`: the most bytes the in-process (L1) response
    /// cache holds, as brisk-cache weighs its entries.
    pub cache_l1_max_bytes: u64,
    /// `BUDGETS_FILE`: the performance budgets, when any.
    pub budgets_file: Option<PathBuf>,
    /// `ADMIN_TOKEN`: the admin bearer token; `None` means "generate one at start".
    pub admin_token: Option<String>,
    /// `API_RATE_LIMIT`: requests per client IP; `None` when `off`.
    pub api_rate_limit: Option<RateLimit>,
    /// `DEPLOY_RATE_LIMIT`: deploys per user; `None` when `off`.
    pub deploy_rate_limit: Option<RateLimit>,
    /// `DEPLOY_DURATION`: how long a simulated deploy job runs.
    pub deploy_duration: Duration,
    /// `SEED_BLUEPRINTS`: how many blueprints an empty database is seeded with.
    pub seed_blueprints: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 3000)),
            database: DatabaseConfig::Sqlite { path: default_sqlite_path() },
            pgbouncer_admin_url: None,
            db_pool_size: NonZeroUsize::new(8).expect("8 is not zero"),
            db_pool_timeout: Duration::from_secs(5),
            redis: None,
            cache_l1_max_bytes: 64 * 1024 * 1024,
            budgets_file: default_budgets_file(),
            admin_token: None,
            api_rate_limit: Some(RateLimit {
                limit: NonZeroU32::new(1000).expect("1000 is not zero"),
                period: Duration::from_secs(15 * 60),
            }),
            deploy_rate_limit: Some(RateLimit {
                limit: NonZeroU32::new(10).expect("10 is not zero"),
                period: Duration::from_secs(3600),
            }),
            deploy_duration: Duration::from_secs(2),
            seed_blueprints: 1200,
        }
    }
}

fn default_sqlite_path() -> PathBuf {
    std::env::temp_dir().join("brisk-blueprint-api").join("blueprints.sqlite3")
}

/// `examples/performance-budgets.yml`, found from the repository root (where
/// `cargo run --example` is usually typed) or from `examples/` itself.
fn default_budgets_file() -> Option<PathBuf> {
    let beside_manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("performance-budgets.yml");
    [PathBuf::from("examples/performance-budgets.yml"), beside_manifest].into_iter().find(|path| path.is_file())
}

/// A configuration value that could not be used, naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?} is not valid: {reason}")]
pub struct ConfigError {
    variable: &'static str,
    value: String,
    reason: String,
}

impl ConfigError {
    /// The environment variable at fault.
    pub fn variable(&self) -> &'static str {
        self.variable
    }

    fn new(variable: &'static str, value: &str, reason: impl std::fmt::Display) -> Self {
        Self { variable, value: value.to_owned(), reason: reason.to_string() }
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    ///
    /// When a variable is set to a value that cannot be used; the error names it.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    /// A variable set to an empty string counts as unset.
    ///
    /// # Errors
    ///
    /// As [`Config::from_env`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut config = Self::default();
        if let Some(value) = get("BIND") {
            config.bind = value.parse().map_err(|e| ConfigError::new("BIND", &value, e))?;
        }
        if let Some(value) = get("DATABASE_URL") {
            value
                .parse::<tokio_postgres::Config>()
                .map_err(|e| ConfigError::new("DATABASE_URL", &redact(&value), e))?;
            if !(value.starts_with("postgres://") || value.starts_with("postgresql://")) {
                return Err(ConfigError::new(
                    "DATABASE_URL",
                    &redact(&value),
                    "expected a postgres:// or postgresql:// URL",
                ));
            }
            config.database = DatabaseConfig::Postgres { url: value };
            config.db_pool_size = NonZeroUsize::new(16).expect("16 is not zero");
        } else if let Some(value) = get("SQLITE_PATH") {
            config.database = DatabaseConfig::Sqlite { path: PathBuf::from(value) };
        }
        if let Some(value) = get("PGBOUNCER_ADMIN_URL") {
            value
                .parse::<tokio_postgres::Config>()
                .map_err(|e| ConfigError::new("PGBOUNCER_ADMIN_URL", &redact(&value), e))?;
            config.pgbouncer_admin_url = Some(value);
        }
        if let Some(value) = get("DB_POOL_SIZE") {
            config.db_pool_size = parse_pool_size("DB_POOL_SIZE", &value)?;
        }
        if let Some(value) = get("DB_POOL_TIMEOUT") {
            config.db_pool_timeout = parse_duration("DB_POOL_TIMEOUT", &value)?;
            if config.db_pool_timeout.is_zero() {
                return Err(ConfigError::new("DB_POOL_TIMEOUT", &value, "must be longer than zero"));
            }
        }
        match (get("REDIS_URL"), get("REDIS_CLUSTER_URLS")) {
            (Some(_), Some(value)) => {
                return Err(ConfigError::new(
                    "REDIS_CLUSTER_URLS",
                    &value,
                    "set REDIS_URL or REDIS_CLUSTER_URLS, not both",
                ));
            }
            (Some(value), None) => {
                check_redis_url("REDIS_URL", &value)?;
                config.redis = Some(RedisConfig::Single { url: value });
            }
            (None, Some(value)) => {
                let urls: Vec<String> =
                    value.split(',').map(str::trim).filter(|u| !u.is_empty()).map(str::to_owned).collect();
                if urls.is_empty() {
                    return Err(ConfigError::new("REDIS_CLUSTER_URLS", &value, "no URL in the list"));
                }
                for url in &urls {
                    check_redis_url("REDIS_CLUSTER_URLS", url)?;
                }
                config.redis = Some(RedisConfig::Cluster { urls });
            }
            (None, None) => {}
        }
        if let Some(value) = get("CACHE_L1_MAX_BYTES") {
            config.cache_l1_max_bytes =
                value.parse::<u64>().map_err(|e| ConfigError::new("CACHE_L1_MAX_BYTES", &value, e)).and_then(|n| {
                    if n >= 1024 { Ok(n) } else { Err(ConfigError::new("CACHE_L1_MAX_BYTES", &value, "at least 1024")) }
                })?;
        }
        if let Some(value) = get("BUDGETS_FILE") {
            let path = PathBuf::from(&value);
            if !path.is_file() {
                return Err(ConfigError::new("BUDGETS_FILE", &value, "no such file"));
            }
            config.budgets_file = Some(path);
        }
        if let Some(value) = get("ADMIN_TOKEN") {
            if value.len() < 16 {
                return Err(ConfigError::new("ADMIN_TOKEN", "<redacted>", "must be at least 16 characters"));
            }
            config.admin_token = Some(value);
        }
        if let Some(value) = get("API_RATE_LIMIT") {
            config.api_rate_limit = RateLimit::parse("API_RATE_LIMIT", &value)?;
        }
        if let Some(value) = get("DEPLOY_RATE_LIMIT") {
            config.deploy_rate_limit = RateLimit::parse("DEPLOY_RATE_LIMIT", &value)?;
        }
        if let Some(value) = get("DEPLOY_DURATION") {
            config.deploy_duration = parse_duration("DEPLOY_DURATION", &value)?;
        }
        if let Some(value) = get("SEED_BLUEPRINTS") {
            config.seed_blueprints =
                value.parse::<usize>().map_err(|e| ConfigError::new("SEED_BLUEPRINTS", &value, e)).and_then(|n| {
                    if n <= 100_000 {
                        Ok(n)
                    } else {
                        Err(ConfigError::new("SEED_BLUEPRINTS", &value, "at most 100000"))
                    }
                })?;
        }
        Ok(config)
    }
}

fn parse_pool_size(variable: &'static str, value: &str) -> Result<NonZeroUsize, ConfigError> {
    let size: NonZeroUsize = value.parse().map_err(|e| ConfigError::new(variable, value, e))?;
    if size.get() > 1024 {
        return Err(ConfigError::new(variable, value, "at most 1024"));
    }
    Ok(size)
}

fn parse_duration(variable: &'static str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|e| ConfigError::new(variable, value, format!("{e} (e.g. 500ms, 5s)")))
}

fn check_redis_url(variable: &'static str, value: &str) -> Result<(), ConfigError> {
    redis::parse_redis_url(value)
        .filter(|url| matches!(url.scheme(), "redis" | "rediss"))
        .map(|_| ())
        .ok_or_else(|| ConfigError::new(variable, &redact(value), "expected a redis:// URL"))
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_need_no_environment() {
        let config = Config::from_lookup(|_| None).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:3000");
        assert!(matches!(config.database, DatabaseConfig::Sqlite { .. }));
        assert!(config.redis.is_none());
    }

    #[test]
    fn a_bad_bind_address_names_the_variable() {
        let err = with(&[("BIND", "localhost:port")]).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("BIND=\"localhost:port\" is not valid"), "{text}");
    }

    #[test]
    fn each_bad_value_names_its_variable() {
        for (variable, value) in [
            ("DATABASE_URL", "mysql://x@y/z"),
            ("DATABASE_URL", "postgres://u:p@h:notaport/db"),
            ("DB_POOL_SIZE", "0"),
            ("PGBOUNCER_ADMIN_URL", "postgres://x@h:port/pgbouncer"),
            ("DB_POOL_SIZE", "many"),
            ("DB_POOL_TIMEOUT", "soon"),
            ("REDIS_URL", "http://localhost"),
            ("REDIS_CLUSTER_URLS", " , "),
            ("BUDGETS_FILE", "/no/such/budgets.yml"),
            ("ADMIN_TOKEN", "short"),
            ("DEPLOY_DURATION", "2 parsecs"),
            ("SEED_BLUEPRINTS", "lots"),
            ("CACHE_L1_MAX_BYTES", "12"),
            ("CACHE_L1_MAX_BYTES", "64MiB"),
            ("API_RATE_LIMIT", "1000"),
            ("API_RATE_LIMIT", "0/15m"),
            ("DEPLOY_RATE_LIMIT", "10/fortnight"),
            ("DEPLOY_RATE_LIMIT", "10/100ms"),
        ] {
            let err = with(&[(variable, value)]).unwrap_err();
            assert_eq!(err.variable(), variable, "{err}");
            assert!(err.to_string().starts_with(variable), "{err}");
        }
    }

    #[test]
    fn passwords_never_reach_the_message() {
        let err = with(&[("DATABASE_URL", "postgres://app:s3cret@db:notaport/x")]).unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let err = with(&[("ADMIN_TOKEN", "tiny-secret")]).unwrap_err();
        assert!(!err.to_string().contains("tiny-secret"), "{err}");
    }

    #[test]
    fn good_values_are_taken() {
        let config = with(&[
            ("DATABASE_URL", "postgres://app:pw@127.0.0.1:6432/blueprints"),
            ("REDIS_CLUSTER_URLS", "redis://127.0.0.1:7000, redis://127.0.0.1:7001"),
            ("DB_POOL_SIZE", "25"),
            ("DB_POOL_TIMEOUT", "750ms"),
            ("ADMIN_TOKEN", "0123456789abcdef"),
            ("API_RATE_LIMIT", "off"),
            ("DEPLOY_RATE_LIMIT", "3/10m"),
        ])
        .unwrap();
        assert!(matches!(config.database, DatabaseConfig::Postgres { .. }));
        assert_eq!(config.db_pool_size.get(), 25);
        assert_eq!(config.db_pool_timeout, Duration::from_millis(750));
        assert_eq!(
            config.redis,
            Some(RedisConfig::Cluster { urls: vec!["redis://127.0.0.1:7000".into(), "redis://127.0.0.1:7001".into()] })
        );
        assert_eq!(config.admin_token.as_deref(), Some("0123456789abcdef"));
        assert_eq!(config.api_rate_limit, None);
        assert_eq!(
            config.deploy_rate_limit,
            Some(RateLimit { limit: NonZeroU32::new(3).unwrap(), period: Duration::from_secs(600) })
        );
    }
}
