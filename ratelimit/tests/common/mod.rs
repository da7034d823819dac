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
