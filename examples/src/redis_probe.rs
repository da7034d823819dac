//! Readiness check of the configured Redis (one server or a cluster).

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use tokio::sync::Mutex;

use crate::config::RedisConfig;

/// How long a readiness `PING` may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Pings Redis over one kept connection, reconnecting after a failure.
pub(crate) enum RedisProbe {
    Single { client: redis::Client, connection: Mutex<Option<MultiplexedConnection>> },
    Cluster { client: ClusterClient, connection: Mutex<Option<ClusterConnection>> },
}

impl std::fmt::Debug for RedisProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single { .. } => "RedisProbe::Single",
            Self::Cluster { .. } => "RedisProbe::Cluster",
        })
    }
}

impl RedisProbe {
    pub(crate) fn new(config: &RedisConfig) -> Result<Self, redis::RedisError> {
        Ok(match config {
            RedisConfig::Single { url } => {
                Self::Single { client: redis::Client::open(url.as_str())?, connection: Mutex::new(None) }
            }
            RedisConfig::Cluster { urls } => {
                Self::Cluster { client: ClusterClient::new(urls.clone())?, connection: Mutex::new(None) }
            }
        })
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Single { .. } => "single",
            Self::Cluster { .. } => "cluster",
        }
    }

    /// `PING`, within [`PING_TIMEOUT`].
    pub(crate) async fn ping(&self) -> Result<(), String> {
        match tokio::time::timeout(PING_TIMEOUT, self.ping_inner()).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {PING_TIMEOUT:?}")),
        }
    }

    async fn ping_inner(&self) -> Result<(), redis::RedisError> {
        match self {
            Self::Single { client, connection } => {
                let mut slot = connection.lock().await;
                if slot.is_none() {
                    *slot = Some(client.get_multiplexed_async_connection().await?);
                }
                let result = ping_on(slot.as_mut().expect("set above")).await;
                if result.is_err() {
                    *slot = None;
                }
                result
            }
            Self::Cluster { client, connection } => {
                let mut slot = connection.lock().await;
                if slot.is_none() {
                    *slot = Some(client.get_async_connection().await?);
                }
                let result = ping_on(slot.as_mut().expect("set above")).await;
                if result.is_err() {
                    *slot = None;
                }
                result
            }
        }
    }
}

async fn ping_on(connection: &mut impl ConnectionLike) -> Result<(), redis::RedisError> {
    let reply: String = redis::cmd("PING").query_async(connection).await?;
    if reply == "PONG" {
        Ok(())
    } else {
        Err(redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "unexpected PING reply", reply)))
    }
}
