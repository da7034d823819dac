use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, Script};

use super::{Operation, Store, StoreError, StoreErrorKind, StoreFuture, StoreRequest, sealed};
use crate::algorithm::{Outcome, Params};

const SOURCE: &str = include_str!("limiter.lua");

/// Kept for the script's SHA-1.
static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// Counters in Redis (a single server or Redis Cluster), shared by every
/// instance of a fleet.
///
/// Every decision is **one** `EVALSHA` of one Lua script (sent again by
/// `EVAL` on `NOSCRIPT`) that reads Redis `TIME` and decides all of a request's
/// policies atomically. The policies' keys are `prefix{key}:policy`, one hash
/// tag, so the script runs on Redis Cluster. Every call is bounded by a
/// timeout (default 100 ms). Clones share one multiplexed connection.
///
/// ```no_run
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// use brisk_ratelimit::store::RedisStore;
/// use std::time::Duration;
///
/// let client = redis::Client::open("redis://127.0.0.1:6379")?;
/// let store = RedisStore::builder().timeout(Duration::from_millis(50)).connect(client).await?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    timeout: Duration,
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.connection {
            Connection::Single(_) => "single",
            Connection::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore").field("connection", &kind).field("timeout", &self.timeout).finish()
    }
}

/// Configures a [`RedisStore`].
#[must_use]
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    timeout: Duration,
}

impl RedisStore {
    /// A builder with a 100 ms timeout per call.
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder { timeout: Duration::from_millis(100) }
    }

    /// The script's SHA-1, as `SCRIPT EXISTS` and `EVALSHA` see it.
    pub fn script_hash() -> &'static str {
        SCRIPT.get_hash()
    }
}

impl RedisStoreBuilder {
    /// Bounds every call (connection, script, reload) to `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connects to one Redis with a reconnecting [`ConnectionManager`].
    pub async fn connect(self, client: redis::Client) -> Result<RedisStore, StoreError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let manager = ConnectionManager::new_with_config(client, config).await.map_err(convert)?;
        Ok(self.connection_manager(manager))
    }

    /// Connects to a Redis Cluster.
    pub async fn connect_cluster(self, client: redis::cluster::ClusterClient) -> Result<RedisStore, StoreError> {
        let connection = client.get_async_connection().await.map_err(convert)?;
        Ok(self.cluster_connection(connection))
    }

    /// Uses an existing connection manager (shared with the rest of the process).
    pub fn connection_manager(self, manager: ConnectionManager) -> RedisStore {
        RedisStore { connection: Connection::Single(manager), timeout: self.timeout }
    }

    /// Uses an existing cluster connection.
    pub fn cluster_connection(self, connection: ClusterConnection) -> RedisStore {
        RedisStore { connection: Connection::Cluster(connection), timeout: self.timeout }
    }
}

fn convert(e: RedisError) -> StoreError {
    let kind = if e.is_timeout() {
        StoreErrorKind::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreErrorKind::Connection
    } else {
        StoreErrorKind::Response
    };
    StoreError::new(kind, e.to_string(), Some(Box::new(e)))
}

/// Parses the script's reply, refusing anything malformed.
fn parse(reply: &[i64], policies: usize) -> Result<Vec<Outcome>, StoreError> {
    if reply.len() != 2 + 4 * policies {
        return Err(StoreError::new(
            StoreErrorKind::Response,
            format!("unexpected reply of {} values", reply.len()),
            None,
        ));
    }
    let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(reply[2..]
        .chunks_exact(4)
        .map(|c| Outcome {
            allowed: c[0] == 1,
            remaining: non_negative(c[1]),
            reset_after: non_negative(c[2]),
            retry_after: u64::try_from(c[3]).ok(),
        })
        .collect())
}

impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[allow(private_interfaces)] // the trait is sealed: these types never leave the crate
impl sealed::Backend for RedisStore {
    fn apply<'a>(&'a self, request: StoreRequest<'a>) -> StoreFuture<'a> {
        Box::pin(async move {
            let call = async {
                // EVALSHA; on NOSCRIPT (a restarted or flushed server), EVAL with
                // the source, which also caches the script on that node (on
                // Redis Cluster: the node that owns the keys' slot).
                match self.query(&command("EVALSHA", SCRIPT.get_hash().as_bytes(), &request)).await {
                    Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                        self.query(&command("EVAL", SOURCE.as_bytes(), &request)).await
                    }
                    reply => reply,
                }
            };
            let reply = match tokio::time::timeout(self.timeout, call).await {
                Err(_) => {
                    return Err(StoreError::new(
                        StoreErrorKind::Timeout,
                        format!("no answer within {:?}", self.timeout),
                        None,
                    ));
                }
                Ok(reply) => reply.map_err(convert)?,
            };
            parse(&reply, request.policies.len())
        })
    }
}

impl RedisStore {
    async fn query(&self, cmd: &redis::Cmd) -> Result<Vec<i64>, RedisError> {
        match &self.connection {
            Connection::Single(c) => cmd.query_async(&mut c.clone()).await,
            Connection::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }
}

/// The script call for `request`, built in one buffer: `EVALSHA sha n keys… op cost (algo a b)…`.
fn command(name: &str, script: &[u8], request: &StoreRequest<'_>) -> redis::Cmd {
    let policies = request.policies;
    let key_bytes = policies.iter().map(|p| request.key.len() + 1 + p.name.len()).sum::<usize>();
    let mut cmd =
        redis::Cmd::with_capacity(5 + 4 * policies.len(), script.len() + key_bytes + 24 * policies.len() + 32);
    cmd.arg(name).arg(script).arg(policies.len());
    let mut key = String::with_capacity(request.key.len() + 32);
    for policy in policies {
        key.clear();
        key.push_str(request.key.prefix);
        key.push('{');
        key.push_str(request.key.key);
        key.push_str("}:");
        key.push_str(&policy.name);
        cmd.arg(key.as_str());
    }
    let op = match request.op {
        Operation::Consume => 0,
        Operation::Peek => 1,
        Operation::Refund => 2,
    };
    cmd.arg(op).arg(request.cost);
    for params in request.params {
        let (algo, a, b) = match *params {
            Params::Gcra { t, burst, .. } => (1, t, burst),
            Params::FixedWindow { limit, window } => (2, limit, window),
            Params::SlidingWindow { limit, window } => (3, limit, window),
        };
        cmd.arg(algo).arg(a).arg(b);
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_replies_are_errors() {
        assert!(parse(&[1, 2, 3], 1).is_err());
        assert!(parse(&[1, 0], 0).is_ok());
        let o = parse(&[0, 5, 0, -3, -4, -1], 1).unwrap();
        assert_eq!(o[0], Outcome { allowed: false, remaining: 0, reset_after: 0, retry_after: None });
    }
}
