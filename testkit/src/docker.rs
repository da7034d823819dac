//! Servers in containers, through testcontainers, when a Docker engine answers.
//!
//! Containers use the host's network so that servers bind 127.0.0.1 only,
//! exactly as the local binaries do, and so that cluster nodes and PgBouncer
//! reach each other by the addresses tests use (a Linux engine is assumed).

use std::fmt;

use testcontainers_modules::testcontainers::core::WaitFor;
use testcontainers_modules::testcontainers::runners::AsyncRunner;
use testcontainers_modules::testcontainers::{GenericImage, ImageExt};

use crate::sources::free_port;

/// A running container; dropping it removes the container.
pub(crate) struct Container {
    _handle: Box<dyn std::any::Any + Send + Sync>,
    id: String,
}

impl fmt::Debug for Container {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Container").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Container {
    fn new<I: testcontainers_modules::testcontainers::Image + 'static>(
        handle: testcontainers_modules::testcontainers::ContainerAsync<I>,
    ) -> Self {
        let id = handle.id().to_owned();
        Self { _handle: Box::new(handle), id }
    }
}

/// A Redis server (a cluster node when `extra` says so) on a free loopback port.
pub(crate) async fn redis_node(extra: &[String]) -> Result<(u16, Container), String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let mut cmd: Vec<String> =
        ["redis-server", "--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
    cmd.extend_from_slice(extra);
    let container = testcontainers_modules::redis::Redis::default()
        .with_network("host")
        .with_cmd(cmd)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    Ok((port, Container::new(container)))
}

/// PostgreSQL (user and password `postgres`) on a free loopback port.
pub(crate) async fn postgres() -> Result<(u16, Container), String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let cmd = [
        "postgres",
        "-p",
        &port.to_string(),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "fsync=off",
        "-c",
        "max_connections=300",
    ]
    .map(str::to_owned);
    let container = testcontainers_modules::postgres::Postgres::default()
        .with_network("host")
        .with_cmd(cmd)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    Ok((port, Container::new(container)))
}

/// PgBouncer running the given configuration and user list.
pub(crate) async fn pgbouncer(ini: String, userlist: String) -> Result<Container, String> {
    let container = GenericImage::new("edoburu/pgbouncer", "latest")
        .with_wait_for(WaitFor::message_on_stderr("process up"))
        .with_network("host")
        .with_copy_to("/etc/pgbouncer/pgbouncer.ini", ini.into_bytes())
        .with_copy_to("/etc/pgbouncer/userlist.txt", userlist.into_bytes())
        .with_cmd(["pgbouncer", "/etc/pgbouncer/pgbouncer.ini"])
        .start()
        .await
        .map_err(|e| e.to_string())?;
    Ok(Container::new(container))
}
