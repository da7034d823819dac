//! The Redis tier: one multiplexed connection (single server or cluster),
//! every call under a timeout and behind the circuit breaker.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, RedisResult, Script, Value};

use crate::breaker::Breaker;
use crate::envelope::Envelope;
use crate::gens::Tombstone;
use crate::pattern::KeyPattern;
use crate::stats::{Counters, bump};

/// Where the shared tier lives.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Single(redis::Client),
    Cluster(Vec<String>),
}

#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Source {
    Single(ConnectionManager),
    Cluster { client: Box<ClusterClient>, conn: tokio::sync::OnceCell<ClusterConnection> },
}

/// Why a Redis call gave no answer. Never reaches the caller.
#[derive(Debug)]
pub(crate) enum Fault {
    Open,
    Timeout,
    Redis,
}

/// The result of trying to take the fill lease.
#[derive(Debug)]
pub(crate) enum Acquire {
    /// The value is already there.
    Value(Bytes),
    Acquired,
    Held,
}

/// Key names. Value keys are `{prefix}:{key}`; everything else starts with
/// `{`, so no value key (the prefix may not contain braces) is ever mistaken
/// for one, and the clean-up's `prefix:*` scans never touch them.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self { prefix: prefix.to_owned() }
    }

    pub(crate) fn value(&self, key: &str) -> String {
        let mut s = String::with_capacity(self.prefix.len() + 1 + key.len());
        s.push_str(&self.prefix);
        s.push(':');
        s.push_str(key);
        s
    }

    /// The user key of a value key.
    pub(crate) fn user_key<'a>(&self, value_key: &'a str) -> Option<&'a str> {
        value_key.strip_prefix(self.prefix.as_str())?.strip_prefix(':')
    }

    /// A lease key in the value key's hash slot, or `None` when no such key
    /// can be written (a value key without a hash tag but with a `}`).
    pub(crate) fn lease(&self, value_key: &str) -> Option<String> {
        let tag = match hash_tag(value_key) {
            Some(tag) => tag,
            None if value_key.contains('}') => return None,
            None => value_key,
        };
        Some(format!("{{{tag}}}:lease:{value_key}"))
    }

    /// Generation keys share one hash slot (`{prefix}`), so one script reads
    /// them all, on Redis Cluster too.
    pub(crate) fn namespace(&self) -> String {
        format!("{{{}}}:gen:ns", self.prefix)
    }

    pub(crate) fn pattern_epoch(&self) -> String {
        format!("{{{}}}:gen:pattern", self.prefix)
    }

    pub(crate) fn tombstones(&self) -> String {
        format!("{{{}}}:tombstones", self.prefix)
    }

    pub(crate) fn tag(&self, tag: &str) -> String {
        format!("{{{}}}:gen:tag:{tag}", self.prefix)
    }

    pub(crate) fn channel(&self) -> String {
        format!("{}:bus", self.prefix)
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Redis Cluster's hash tag: the text between the first `{` and the first
/// `}` after it, when not empty.
pub(crate) fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

struct Scripts {
    sync: Script,
    tombstone: Script,
    acquire: Script,
    fill: Script,
    release: Script,
}

const SYNC: &str = r"
local out = {redis.call('GET', KEYS[1]) or '0', redis.call('GET', KEYS[2]) or '0', redis.call('HGETALL', KEYS[3])}
for i = 4, #KEYS do out[#out + 1] = redis.call('GET', KEYS[i]) or '0' end
return out
";

const TOMBSTONE: &str = r"
local epoch = redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = now + tonumber(ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], string.format('%d:%d', epoch, expires))
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  local e = tonumber(string.match(all[i + 1], ':(%d+)$'))
  if e == nil or e <= now then redis.call('HDEL', KEYS[2], all[i]) end
end
return {epoch, string.format('%d', expires)}
";

const ACQUIRE: &str = r"
if ARGV[3] ~= '1' then
  local v = redis.call('GET', KEYS[1])
  if v then return {1, v} end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {3}
";

const FILL: &str = r"
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// What [`L2::sync`] read.
#[derive(Debug)]
pub(crate) struct Synced {
    pub(crate) namespace: u64,
    pub(crate) pattern_epoch: u64,
    pub(crate) tags: Vec<(String, u64)>,
    pub(crate) tombstones: Vec<Tombstone>,
}

pub(crate) struct L2 {
    source: Source,
    pub(crate) target: Target,
    pub(crate) keys: Keys,
    timeout: Duration,
    pub(crate) breaker: Breaker,
    scripts: Scripts,
}

impl std::fmt::Debug for L2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2").field("target", &self.target).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

/// Clean-up batch size (`SCAN … COUNT`).
const SCAN_COUNT: usize = 250;

impl L2 {
    pub(crate) fn new(
        target: Target,
        prefix: &str,
        timeout: Duration,
        breaker: Breaker,
    ) -> Result<Self, redis::RedisError> {
        let source = match &target {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(timeout))
                    .set_connection_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                Source::Single(ConnectionManager::new_lazy_with_config(client.clone(), config)?)
            }
            Target::Cluster(urls) => {
                let client = ClusterClientBuilder::new(urls.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(1)
                    .build()?;
                Source::Cluster { client: Box::new(client), conn: tokio::sync::OnceCell::new() }
            }
        };
        Ok(Self {
            source,
            target,
            keys: Keys::new(prefix),
            timeout,
            breaker,
            scripts: Scripts {
                sync: Script::new(SYNC),
                tombstone: Script::new(TOMBSTONE),
                acquire: Script::new(ACQUIRE),
                fill: Script::new(FILL),
                release: Script::new(RELEASE),
            },
        })
    }

    async fn conn(&self) -> RedisResult<Conn> {
        match &self.source {
            Source::Single(c) => Ok(Conn::Single(c.clone())),
            Source::Cluster { client, conn } => {
                let c = conn.get_or_try_init(|| client.get_async_connection()).await?;
                Ok(Conn::Cluster(c.clone()))
            }
        }
    }

    /// Runs one Redis operation under the breaker and the timeout.
    pub(crate) async fn call<T, F, Fut>(&self, counters: &Counters, now_ms: u64, op: F) -> Result<T, Fault>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if !self.breaker.allow(now_ms) {
            bump(&counters.l2_rejected);
            return Err(Fault::Open);
        }
        let run = async {
            let conn = self.conn().await?;
            op(conn).await
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(v)) => {
                self.breaker.success();
                Ok(v)
            }
            Ok(Err(e)) => {
                bump(&counters.l2_errors);
                if self.breaker.failure(now_ms) {
                    tracing::warn!(error = %e, "brisk-cache: Redis failing, circuit breaker open");
                } else {
                    tracing::debug!(error = %e, "brisk-cache: Redis call failed");
                }
                Err(Fault::Redis)
            }
            Err(_) => {
                bump(&counters.l2_timeouts);
                if self.breaker.failure(now_ms) {
                    tracing::warn!(timeout = ?self.timeout, "brisk-cache: Redis timing out, circuit breaker open");
                }
                Err(Fault::Timeout)
            }
        }
    }

    pub(crate) async fn get(&self, c: &Counters, now: u64, key: &str) -> Result<Option<Bytes>, Fault> {
        let k = self.keys.value(key);
        self.call(c, now, |mut conn| async move { redis::cmd("GET").arg(&k).query_async(&mut conn).await }).await
    }

    pub(crate) async fn set(&self, c: &Counters, now: u64, key: &str, value: &[u8], px: u64) -> Result<(), Fault> {
        let k = self.keys.value(key);
        self.call(c, now, |mut conn| async move {
            redis::cmd("SET").arg(&k).arg(value).arg("PX").arg(px.max(1)).query_async::<()>(&mut conn).await
        })
        .await
    }

    pub(crate) async fn delete(&self, c: &Counters, now: u64, key: &str) -> Result<(), Fault> {
        let k = self.keys.value(key);
        self.call(c, now, |mut conn| async move { redis::cmd("UNLINK").arg(&k).query_async::<()>(&mut conn).await })
            .await
    }

    pub(crate) async fn incr(&self, c: &Counters, now: u64, key: String) -> Result<u64, Fault> {
        self.call(c, now, |mut conn| async move { redis::cmd("INCR").arg(&key).query_async(&mut conn).await }).await
    }

    pub(crate) async fn publish(&self, c: &Counters, now: u64, message: Vec<u8>) -> Result<(), Fault> {
        let channel = self.keys.channel();
        self.call(c, now, |mut conn| async move {
            redis::cmd("PUBLISH").arg(&channel).arg(message).query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Reads the namespace generation, the pattern epoch, the tombstones and
    /// the given tags' generations in one script call.
    pub(crate) async fn sync(&self, c: &Counters, now: u64, tags: &[String]) -> Result<Synced, Fault> {
        let mut inv = self.scripts.sync.prepare_invoke();
        inv.key(self.keys.namespace()).key(self.keys.pattern_epoch()).key(self.keys.tombstones());
        for t in tags {
            inv.key(self.keys.tag(t));
        }
        let raw: Vec<Value> = self.call(c, now, |mut conn| async move { inv.invoke_async(&mut conn).await }).await?;
        parse_sync(raw, tags).ok_or_else(|| {
            bump(&c.corrupt);
            Fault::Redis
        })
    }

    pub(crate) async fn tombstone(
        &self,
        c: &Counters,
        now: u64,
        pattern: &KeyPattern,
        ttl_ms: u64,
    ) -> Result<(u64, u64), Fault> {
        let mut inv = self.scripts.tombstone.prepare_invoke();
        inv.key(self.keys.pattern_epoch()).key(self.keys.tombstones()).arg(pattern.as_str()).arg(ttl_ms);
        let (epoch, expires): (u64, String) =
            self.call(c, now, |mut conn| async move { inv.invoke_async(&mut conn).await }).await?;
        Ok((epoch, expires.parse().unwrap_or(now.saturating_add(ttl_ms))))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn acquire(
        &self,
        c: &Counters,
        now: u64,
        value_key: &str,
        lease_key: &str,
        token: &str,
        ttl_ms: u64,
        ignore_value: bool,
    ) -> Result<Acquire, Fault> {
        let mut inv = self.scripts.acquire.prepare_invoke();
        inv.key(value_key).key(lease_key).arg(token).arg(ttl_ms.max(1)).arg(if ignore_value { "1" } else { "0" });
        let raw: Vec<Value> = self.call(c, now, |mut conn| async move { inv.invoke_async(&mut conn).await }).await?;
        match raw.as_slice() {
            [Value::Int(1), Value::BulkString(v)] => Ok(Acquire::Value(Bytes::copy_from_slice(v))),
            [Value::Int(2)] => Ok(Acquire::Acquired),
            [Value::Int(3)] => Ok(Acquire::Held),
            _ => Err(Fault::Redis),
        }
    }

    /// Writes the value if the lease still holds `token` (fencing), and
    /// releases the lease. Returns whether it was written.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn fill_with_lease(
        &self,
        c: &Counters,
        now: u64,
        value_key: &str,
        lease_key: &str,
        token: &str,
        value: &[u8],
        px: u64,
    ) -> Result<bool, Fault> {
        let mut inv = self.scripts.fill.prepare_invoke();
        inv.key(value_key).key(lease_key).arg(token).arg(value).arg(px.max(1));
        let n: i64 = self.call(c, now, |mut conn| async move { inv.invoke_async(&mut conn).await }).await?;
        Ok(n == 1)
    }

    pub(crate) async fn release(&self, c: &Counters, now: u64, lease_key: &str, token: &str) -> Result<(), Fault> {
        let mut inv = self.scripts.release.prepare_invoke();
        inv.key(lease_key).arg(token);
        self.call(c, now, |mut conn| async move { inv.invoke_async::<i64>(&mut conn).await }).await.map(|_| ())
    }

    /// Removes every value key matching `scan_pattern` whose user key passes
    /// `filter`: `SCAN … MATCH … COUNT 250` on each master, `UNLINK` per
    /// batch. Each call has the timeout, but not the breaker: the clean-up
    /// runs off the request path and stops at the first failure.
    pub(crate) async fn cleanup(
        &self,
        c: &Counters,
        scan_pattern: &str,
        filter: &(dyn Fn(&str) -> bool + Send + Sync),
        outdated: Option<&(dyn Fn(&Envelope) -> bool + Send + Sync)>,
    ) -> RedisResult<u64> {
        let conn = tokio::time::timeout(self.timeout, self.conn()).await.map_err(timeout_error)??;
        let nodes: Vec<Option<(String, u16)>> = match &conn {
            Conn::Single(_) => vec![None],
            Conn::Cluster(cc) => masters(cc.clone(), self.timeout).await?.into_iter().map(Some).collect(),
        };
        let mut deleted = 0u64;
        for node in nodes {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(scan_pattern).arg("COUNT").arg(SCAN_COUNT);
                let (next, keys): (u64, Vec<String>) = match (&conn, &node) {
                    (Conn::Cluster(cc), Some((host, port))) => {
                        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        });
                        let mut cc = cc.clone();
                        let v = tokio::time::timeout(self.timeout, cc.route_command(scan, routing))
                            .await
                            .map_err(timeout_error)??;
                        redis::from_redis_value(v)?
                    }
                    _ => {
                        let mut conn = conn.clone();
                        tokio::time::timeout(self.timeout, scan.query_async(&mut conn))
                            .await
                            .map_err(timeout_error)??
                    }
                };
                let mut batch: Vec<&String> =
                    keys.iter().filter(|k| self.keys.user_key(k).is_some_and(filter)).collect();
                if let Some(outdated) = outdated
                    && !batch.is_empty()
                {
                    // Only entries written before the invalidation go: a
                    // value written since is current and stays.
                    let mut conn = conn.clone();
                    let values: Vec<Option<Bytes>> =
                        tokio::time::timeout(self.timeout, redis::cmd("MGET").arg(&batch).query_async(&mut conn))
                            .await
                            .map_err(timeout_error)??;
                    batch = batch
                        .into_iter()
                        .zip(values)
                        .filter_map(|(k, v)| match Envelope::decode(v?) {
                            Ok(env) => outdated(&env).then_some(k),
                            Err(_) => Some(k),
                        })
                        .collect();
                }
                if !batch.is_empty() {
                    let mut conn = conn.clone();
                    let n: u64 =
                        tokio::time::timeout(self.timeout, redis::cmd("UNLINK").arg(&batch).query_async(&mut conn))
                            .await
                            .map_err(timeout_error)??;
                    deleted += n;
                    c.cleanup_deleted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(deleted)
    }

    /// Node URLs for the bus subscriber, in the order to try them.
    pub(crate) fn bus_clients(&self) -> Vec<redis::Client> {
        match &self.target {
            Target::Single(c) => vec![c.clone()],
            Target::Cluster(urls) => urls.iter().filter_map(|u| redis::Client::open(u.as_str()).ok()).collect(),
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }
}

fn timeout_error(_: tokio::time::error::Elapsed) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "timed out"))
}

/// The masters' addresses, from `CLUSTER SLOTS`.
async fn masters(mut cc: ClusterConnection, timeout: Duration) -> RedisResult<Vec<(String, u16)>> {
    let v = tokio::time::timeout(
        timeout,
        cc.route_command(
            redis::cmd("CLUSTER").arg("SLOTS").clone(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        ),
    )
    .await
    .map_err(timeout_error)??;
    let mut out: Vec<(String, u16)> = Vec::new();
    if let Value::Array(ranges) = v {
        for range in ranges {
            let Value::Array(parts) = range else { continue };
            let Some(Value::Array(master)) = parts.get(2) else { continue };
            let host = match master.first() {
                Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
                Some(Value::SimpleString(h)) => h.clone(),
                _ => continue,
            };
            let Some(Value::Int(port)) = master.get(1) else { continue };
            let Ok(port) = u16::try_from(*port) else { continue };
            if !out.contains(&(host.clone(), port)) {
                out.push((host, port));
            }
        }
    }
    if out.is_empty() {
        return Err(redis::RedisError::from((redis::ErrorKind::Parse, "CLUSTER SLOTS listed no master")));
    }
    Ok(out)
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn parse_sync(raw: Vec<Value>, tags: &[String]) -> Option<Synced> {
    if raw.len() != 3 + tags.len() {
        return None;
    }
    let namespace = as_u64(&raw[0])?;
    let pattern_epoch = as_u64(&raw[1])?;
    let mut tombstones = Vec::new();
    let flat: Vec<Value> = match &raw[2] {
        Value::Array(a) => a.clone(),
        Value::Map(m) => m.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect(),
        _ => return None,
    };
    for pair in flat.chunks(2) {
        let [k, v] = pair else { return None };
        // Entries that do not parse are skipped: a tombstone this build
        // cannot read must not make every read fail.
        let (Some(pattern), Some(value)) = (as_string(k), as_string(v)) else { continue };
        let Some((epoch, expires)) = value.split_once(':') else { continue };
        let (Ok(epoch), Ok(expires_ms)) = (epoch.parse(), expires.parse()) else { continue };
        let Ok(pattern) = KeyPattern::new(&pattern) else { continue };
        tombstones.push(Tombstone { pattern, epoch, expires_ms });
    }
    let mut out_tags = Vec::with_capacity(tags.len());
    for (tag, v) in tags.iter().zip(&raw[3..]) {
        out_tags.push((tag.clone(), as_u64(v)?));
    }
    Some(Synced { namespace, pattern_epoch, tags: out_tags, tombstones })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::Slot;

    #[test]
    fn lease_keys_share_the_value_key_slot() {
        let keys = Keys::new("brisk");
        for user in ["plain", "GET /api/blueprints?x=1", "with{tag}inside", "a{b", "é/ü"] {
            let v = keys.value(user);
            let l = keys.lease(&v).expect("a lease key");
            assert_eq!(Slot::for_key(&v), Slot::for_key(&l), "{v} / {l}");
            assert!(l.starts_with('{'));
        }
        assert_eq!(keys.lease("brisk:a}b"), None);
        assert_eq!(keys.lease("brisk:{}empty"), None);
    }

    #[test]
    fn generation_keys_share_one_slot() {
        let keys = Keys::new("brisk");
        let slot = Slot::for_key(keys.namespace());
        for k in [keys.pattern_epoch(), keys.tombstones(), keys.tag("blueprints"), keys.tag("x{y}")] {
            assert_eq!(Slot::for_key(&k), slot, "{k}");
        }
    }

    #[test]
    fn sync_replies_that_do_not_parse_are_refused() {
        let tags = vec!["t".to_owned()];
        assert!(parse_sync(vec![Value::Int(1)], &tags).is_none());
        let ok = vec![
            Value::BulkString(b"3".to_vec()),
            Value::BulkString(b"0".to_vec()),
            Value::Array(vec![
                Value::BulkString(b"a*".to_vec()),
                Value::BulkString(b"2:99".to_vec()),
                Value::BulkString(b"b*".to_vec()),
                Value::BulkString(b"garbage".to_vec()),
            ]),
            Value::BulkString(b"7".to_vec()),
        ];
        let s = parse_sync(ok, &tags).unwrap();
        assert_eq!((s.namespace, s.pattern_epoch), (3, 0));
        assert_eq!(s.tags, vec![("t".to_owned(), 7)]);
        assert_eq!(s.tombstones.len(), 1);
    }
}
