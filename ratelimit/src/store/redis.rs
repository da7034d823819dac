use std::borrow::Borrow;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{RedisError, Script};

use super::batch::{self, Batcher, Limits, Queued, Turn};
use super::{Store, StoreError, StoreErrorKind, StoreFuture, StoreRequest, sealed};
use crate::algorithm::Outcome;

const SOURCE: &str = include_str!("limiter.lua");

/// Kept for the script's SHA-1.
static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(SOURCE));

/// Counters in Redis (a single server or Redis Cluster), shared by every
/// instance of a fleet.
///
/// Every decision is **one** `EVALSHA` of one Lua script (sent again by
/// `EVAL` on `NOSCRIPT`), alone or shared with the decisions batched with it,
/// that reads Redis `TIME` and decides all of a request's policies
/// atomically. The policies' keys are `prefix{key}:policy`, one hash
/// tag, so the script runs on Redis Cluster. Every call is bounded by a
/// timeout (default 100 ms). Clones share one multiplexed connection.
///
/// **Batching** (on by default, [`RedisStoreBuilder::batch_decisions`]):
/// a decision that finds fewer than 2 of this store's script calls in flight
/// is sent at once, alone — no added delay when idle. Decisions that arrive
/// while both are in flight wait, and each call, when it returns, sends up to
/// 32 of them in its next call: one `EVALSHA` carrying all their keys and
/// arguments. Each decision in a batch is still atomic and all-or-nothing
/// across its own policies, independent of the others (decided in turn,
/// so a later one on the same key sees the earlier one's charge), and gets
/// its own answer; each still waits for one round trip, which the batch's
/// decisions share (a decision that queued first waits for a busy call to
/// return, as it would wait for its turn on the connection unbatched). On Redis Cluster a batch holds only decisions whose keys
/// hash to one slot. A batch that fails or times out fails each of its
/// decisions, and each limiter then applies its own policies' failure modes.
/// Every decision waits at most the timeout, time in the queue included.
/// Clones and every limiter using the store share its calls in flight.
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
    batcher: Option<Arc<Batcher>>,
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
        f.debug_struct("RedisStore")
            .field("connection", &kind)
            .field("timeout", &self.timeout)
            .field("batching", &self.batcher.is_some())
            .finish()
    }
}

/// Configures a [`RedisStore`].
#[must_use]
#[derive(Debug, Clone)]
pub struct RedisStoreBuilder {
    timeout: Duration,
    batching: Option<Limits>,
}

/// Script calls in flight at once per store, by default, while batching.
const MAX_IN_FLIGHT: NonZeroUsize = NonZeroUsize::new(2).expect("2 is not zero");
/// Decisions per batched call, by default.
const MAX_BATCH: NonZeroUsize = NonZeroUsize::new(32).expect("32 is not zero");
/// Batching's default limits.
const DEFAULT_BATCHING: Limits = Limits { max_in_flight: MAX_IN_FLIGHT, max_batch: MAX_BATCH };

impl RedisStore {
    /// A builder with a 100 ms timeout per call and batching on (2 calls in
    /// flight, up to 32 decisions per call).
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder { timeout: Duration::from_millis(100), batching: Some(DEFAULT_BATCHING) }
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

    /// Whether decisions waiting together share one script call (default:
    /// on). Off, every decision is its own call, with no bound on the calls
    /// in flight. See [`RedisStore`] for how batches form.
    pub fn batch_decisions(mut self, enabled: bool) -> Self {
        self.batching = enabled.then(|| self.limits());
        self
    }

    /// While batching: how many script calls may be in flight at once
    /// (default 2); a decision that finds them all busy waits for the next
    /// batch. Turns batching on.
    pub fn max_calls_in_flight(mut self, calls: NonZeroUsize) -> Self {
        self.batching = Some(Limits { max_in_flight: calls, ..self.limits() });
        self
    }

    /// While batching: how many decisions one script call may carry
    /// (default 32; at most 65,536, larger values are taken as that).
    /// Turns batching on.
    pub fn max_batch_size(mut self, decisions: NonZeroUsize) -> Self {
        let decisions = decisions.min(NonZeroUsize::new(1 << 16).expect("not zero"));
        self.batching = Some(Limits { max_batch: decisions, ..self.limits() });
        self
    }

    fn limits(&self) -> Limits {
        self.batching.unwrap_or(DEFAULT_BATCHING)
    }

    fn build(self, connection: Connection) -> RedisStore {
        let by_slot = matches!(connection, Connection::Cluster(_));
        RedisStore {
            connection,
            timeout: self.timeout,
            batcher: self.batching.map(|limits| Arc::new(Batcher::new(limits, by_slot))),
        }
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
        self.build(Connection::Single(manager))
    }

    /// Uses an existing cluster connection.
    pub fn cluster_connection(self, connection: ClusterConnection) -> RedisStore {
        self.build(Connection::Cluster(connection))
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
    Ok(outcomes(&reply[2..]))
}

/// Each policy's four values, in order.
pub(super) fn outcomes(values: &[i64]) -> Vec<Outcome> {
    let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
    values
        .chunks_exact(4)
        .map(|c| Outcome {
            allowed: c[0] == 1,
            remaining: non_negative(c[1]),
            reset_after: non_negative(c[2]),
            retry_after: u64::try_from(c[3]).ok(),
        })
        .collect()
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
            let Some(batcher) = &self.batcher else {
                return self.call(&request).await;
            };
            match batcher.enter(&request) {
                Turn::Send => {
                    // Hands the call slot on when this call ends, or when
                    // its caller stops waiting, so queued decisions still go.
                    let _slot = CallSlot::new(self);
                    self.call(&request).await
                }
                Turn::Wait(answer) => match tokio::time::timeout(self.timeout, answer).await {
                    Err(_) => Err(self.timed_out()),
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err(StoreError::new(
                        StoreErrorKind::Connection,
                        "the batched call was dropped (runtime shutting down)",
                        None,
                    )),
                },
            }
        })
    }
}

/// A script call slot of the batcher, held by a call (through a borrowed
/// store for a caller's own call, an owned one for a task's batches); on
/// drop, handed on to the decisions waiting, or freed.
struct CallSlot<S: Borrow<RedisStore>> {
    store: S,
    /// False once `next_batch` freed the slot.
    held: bool,
}

impl<S: Borrow<RedisStore>> CallSlot<S> {
    fn new(store: S) -> Self {
        CallSlot { store, held: true }
    }

    /// `next_batch` freed the slot: nothing to hand on.
    fn freed(&mut self) {
        self.held = false;
    }
}

impl<S: Borrow<RedisStore>> Drop for CallSlot<S> {
    fn drop(&mut self) {
        let store = self.store.borrow();
        let Some(batcher) = &store.batcher else { return };
        if !self.held {
            return;
        }
        let batch = batcher.next_batch();
        if batch.is_empty() {
            return;
        }
        // The decisions waiting go out from a task of their own: their call
        // does not hold up this caller's answer, nor depend on it still waiting.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(store.clone().send_batches(batch));
            }
            Err(_) => {
                // No runtime to send them from: their callers see the call dropped.
                drop(batch);
                let mut next = batcher.next_batch();
                while !next.is_empty() {
                    drop(next);
                    next = batcher.next_batch();
                }
            }
        }
    }
}

impl RedisStore {
    /// One decision, one script call: EVALSHA; on NOSCRIPT (a restarted or
    /// flushed server), EVAL with the source, which also caches the script on
    /// that node (on Redis Cluster: the node that owns the keys' slot).
    async fn call(&self, request: &StoreRequest<'_>) -> Result<Vec<Outcome>, StoreError> {
        let reply = self.eval(|name, script| command(name, script, request)).await?;
        parse(&reply, request.policies.len())
    }

    /// Sends `batch`, then the batches that queued meanwhile, holding one
    /// call slot: taken over before the task first runs, so a task dropped
    /// unpolled (a runtime shutting down) still hands it on.
    fn send_batches(self, mut batch: Vec<Queued>) -> impl Future<Output = ()> + Send + 'static {
        let mut slot = CallSlot::new(self);
        async move {
            loop {
                let store = &slot.store;
                let uniform = batch::Uniform::of(&batch);
                let result = store.eval(|name, script| batch::command(name, script, &batch, uniform)).await;
                match result.and_then(|reply| batch::parse(&reply, &batch, uniform)) {
                    Ok(outcomes) => {
                        for (queued, outcomes) in batch.into_iter().zip(outcomes) {
                            queued.answer(Ok(outcomes));
                        }
                    }
                    Err(e) => {
                        for queued in batch {
                            queued.answer(Err(batch::copy_error(&e)));
                        }
                    }
                }
                batch = match &store.batcher {
                    Some(batcher) => batcher.next_batch(),
                    None => Vec::new(),
                };
                if batch.is_empty() {
                    slot.freed();
                    return;
                }
            }
        }
    }

    /// The script call `build` makes, by SHA and again with the source on
    /// NOSCRIPT, within the timeout.
    async fn eval(&self, build: impl Fn(&str, &[u8]) -> redis::Cmd) -> Result<Vec<i64>, StoreError> {
        let call = async {
            match self.query(&build("EVALSHA", SCRIPT.get_hash().as_bytes())).await {
                Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                    self.query(&build("EVAL", SOURCE.as_bytes())).await
                }
                reply => reply,
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(self.timed_out()),
            Ok(reply) => reply.map_err(convert),
        }
    }

    fn timed_out(&self) -> StoreError {
        StoreError::new(StoreErrorKind::Timeout, format!("no answer within {:?}", self.timeout), None)
    }

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
    cmd.arg(batch::operation(request.op)).arg(request.cost);
    for params in request.params {
        let (algo, a, b) = batch::encode(params);
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
