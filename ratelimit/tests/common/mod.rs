//! Helpers shared by the Redis-backed test files.

/// `EVALSHA` calls Redis has counted so far (`INFO commandstats`).
pub(crate) async fn evalsha_calls(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(con).await.unwrap();
    info.lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| l.split(['=', ',']).nth(1))
        .map(|n| n.parse().unwrap())
        .unwrap_or(0)
}

/// A current-thread runtime and a Redis, for a property test driving async
/// code; none when there is no Redis (the test is skipped, or fails where
/// Redis is required).
pub(crate) fn runtime_with_redis() -> Option<(tokio::runtime::Runtime, brisk_testkit::Redis)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    match rt.block_on(brisk_testkit::redis()) {
        Ok(redis) => Some((rt, redis)),
        Err(err) => {
            brisk_testkit::skip_or_fail(&err);
            None
        }
    }
}
