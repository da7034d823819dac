//! A single Redis, and a Redis Cluster of three masters.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::Source;
use crate::docker::Container;
use crate::error::Error;
use crate::process::{Process, Spec, lost_port_race, wait_until_ready};
use crate::sources::{docker_engine, env_url, free_port, which};

const START_TIMEOUT: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 4;

/// A Redis server for one test. Dropping it stops the server (unless it came
/// from `REDIS_URL`, which is left as it was).
#[derive(Debug)]
pub struct Redis {
    url: String,
    source: Source,
    // Declared before the directory: the server stops before its files go.
    backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Debug)]
enum Backend {
    External,
    Container(#[allow(dead_code)] Container),
    Local(Process),
}

/// Starts (or finds) a single Redis server: `REDIS_URL`, then a container,
/// then `redis-server` on `PATH`.
///
/// # Errors
///
/// [`Error::is_unavailable`] when no source can provide one; otherwise the
/// reason a server that was found did not answer.
pub async fn redis() -> Result<Redis, Error> {
    if let Some(url) = env_url("REDIS_URL") {
        ping(&url).await.map_err(|e| Error::failed("redis", format!("REDIS_URL={url} does not answer PING: {e}")))?;
        return Ok(Redis { url, source: Source::Environment, backend: Backend::External, _dir: None });
    }
    let mut reasons = vec!["REDIS_URL is not set".to_owned()];
    if docker_engine().await {
        match crate::docker::redis_node(&[]).await {
            Ok((port, container)) => {
                let url = format!("redis://127.0.0.1:{port}");
                return Ok(Redis {
                    url,
                    source: Source::Container,
                    backend: Backend::Container(container),
                    _dir: None,
                });
            }
            Err(err) => reasons.push(format!("a Docker engine answers but the Redis container did not start ({err})")),
        }
    } else {
        reasons.push("no Docker engine answers".into());
    }
    let Some(binary) = which("redis-server") else {
        reasons.push("redis-server is not on PATH".into());
        return Err(Error::unavailable("redis", reasons.join("; ")));
    };
    let dir =
        tempfile::Builder::new().prefix("brisk-redis-").tempdir().map_err(|e| Error::failed("redis", e.to_string()))?;
    let (port, process) = start_local(&binary, dir.path(), &[]).await.map_err(|e| Error::failed("redis", e))?;
    Ok(Redis {
        url: format!("redis://127.0.0.1:{port}"),
        source: Source::LocalBinary,
        backend: Backend::Local(process),
        _dir: Some(dir),
    })
}

impl Redis {
    /// `redis://host:port` of the server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the server came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// A client for the server.
    ///
    /// # Panics
    ///
    /// Never for a URL this crate built; `REDIS_URL` was checked at start.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url.as_str()).expect("the server URL was checked when the server started")
    }

    fn local(&mut self, action: &str) -> Result<&mut Process, Error> {
        match &mut self.backend {
            Backend::Local(process) => Ok(process),
            _ => Err(Error::unsupported(
                "redis",
                format!("{action} needs a locally started server, this one is from the {}", self.source),
            )),
        }
    }

    /// Kills the server with `SIGKILL`, as a crash would. [`Redis::start`]
    /// brings it back on the same port.
    ///
    /// # Errors
    ///
    /// When the server was not started from a local binary.
    pub fn kill(&mut self) -> Result<(), Error> {
        self.local("kill")?.kill();
        Ok(())
    }

    /// Starts the server again on the same port after [`Redis::kill`], and
    /// waits until it answers. Its data is gone (it keeps none on disk).
    ///
    /// # Errors
    ///
    /// When the server was not started from a local binary, or did not come back.
    pub async fn start(&mut self) -> Result<(), Error> {
        let url = self.url.clone();
        let process = self.local("start")?;
        process.restart().map_err(|e| Error::failed("redis", e.to_string()))?;
        wait_until_ready(process, START_TIMEOUT, || ping(&url)).await.map_err(|e| Error::failed("redis", e))
    }

    /// Freezes the server with `SIGSTOP`: connections stay open, nothing is
    /// answered — a hung server. [`Redis::thaw`] resumes it.
    ///
    /// # Errors
    ///
    /// When the server was not started from a local binary.
    pub fn freeze(&mut self) -> Result<(), Error> {
        self.local("freeze")?.signal(Signal::SIGSTOP).map_err(|e| Error::failed("redis", e.to_string()))
    }

    /// Resumes a server frozen by [`Redis::freeze`].
    ///
    /// # Errors
    ///
    /// When the server was not started from a local binary.
    pub fn thaw(&mut self) -> Result<(), Error> {
        self.local("thaw")?.signal(Signal::SIGCONT).map_err(|e| Error::failed("redis", e.to_string()))
    }
}

/// A Redis Cluster of three masters (no replicas), all 16384 slots covered
/// and `cluster_state:ok` on every node. Dropping it stops the nodes (unless
/// they came from `REDIS_CLUSTER_URLS`).
#[derive(Debug)]
pub struct RedisCluster {
    urls: Vec<String>,
    source: Source,
    _nodes: Vec<Backend>,
    _dir: Option<tempfile::TempDir>,
}

/// Starts (or finds) a Redis Cluster of three masters: `REDIS_CLUSTER_URLS`,
/// then containers, then `redis-server` on `PATH`.
///
/// # Errors
///
/// [`Error::is_unavailable`] when no source can provide one; otherwise the
/// reason the cluster did not form.
pub async fn redis_cluster() -> Result<RedisCluster, Error> {
    const SERVICE: &str = "redis cluster";
    if let Some(list) = env_url("REDIS_CLUSTER_URLS") {
        let urls: Vec<String> = list.split(',').map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect();
        for url in &urls {
            ping(url).await.map_err(|e| {
                Error::failed(SERVICE, format!("{url} (from REDIS_CLUSTER_URLS) does not answer PING: {e}"))
            })?;
        }
        return Ok(RedisCluster { urls, source: Source::Environment, _nodes: Vec::new(), _dir: None });
    }
    let mut reasons = vec!["REDIS_CLUSTER_URLS is not set".to_owned()];
    if docker_engine().await {
        match docker_cluster().await {
            Ok(cluster) => return Ok(cluster),
            Err(err) => {
                reasons.push(format!("a Docker engine answers but the cluster containers did not start ({err})"))
            }
        }
    } else {
        reasons.push("no Docker engine answers".into());
    }
    let Some(binary) = which("redis-server") else {
        reasons.push("redis-server is not on PATH".into());
        return Err(Error::unavailable(SERVICE, reasons.join("; ")));
    };
    let dir = tempfile::Builder::new()
        .prefix("brisk-redis-cluster-")
        .tempdir()
        .map_err(|e| Error::failed(SERVICE, e.to_string()))?;
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..3 {
        let node_dir = dir.path().join(format!("node{i}"));
        std::fs::create_dir(&node_dir).map_err(|e| Error::failed(SERVICE, e.to_string()))?;
        let bus = free_port().map_err(|e| Error::failed(SERVICE, e.to_string()))?;
        let extra = cluster_args(bus);
        let (port, process) = start_local(&binary, &node_dir, &extra).await.map_err(|e| Error::failed(SERVICE, e))?;
        addrs.push((port, bus));
        nodes.push(Backend::Local(process));
    }
    form_cluster(&addrs).await.map_err(|e| Error::failed(SERVICE, e))?;
    Ok(RedisCluster {
        urls: addrs.iter().map(|(port, _)| format!("redis://127.0.0.1:{port}")).collect(),
        source: Source::LocalBinary,
        _nodes: nodes,
        _dir: Some(dir),
    })
}

async fn docker_cluster() -> Result<RedisCluster, String> {
    let mut nodes = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let bus = free_port().map_err(|e| e.to_string())?;
        let (port, container) = crate::docker::redis_node(&cluster_args(bus)).await?;
        addrs.push((port, bus));
        nodes.push(Backend::Container(container));
    }
    form_cluster(&addrs).await?;
    Ok(RedisCluster {
        urls: addrs.iter().map(|(port, _)| format!("redis://127.0.0.1:{port}")).collect(),
        source: Source::Container,
        _nodes: nodes,
        _dir: None,
    })
}

impl RedisCluster {
    /// `redis://host:port` of each master.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Where the nodes came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// A cluster client that knows every node.
    ///
    /// # Panics
    ///
    /// Never for URLs this crate built; `REDIS_CLUSTER_URLS` was checked at start.
    pub fn client(&self) -> redis::cluster::ClusterClient {
        redis::cluster::ClusterClient::new(self.urls.clone())
            .expect("the node URLs were checked when the cluster started")
    }
}

fn cluster_args(bus_port: u16) -> Vec<String> {
    [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-port",
        &bus_port.to_string(),
        "--cluster-node-timeout",
        "2000",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Starts `redis-server` on a free port, trying other ports when another
/// process takes one first.
async fn start_local(binary: &Path, dir: &Path, extra: &[String]) -> Result<(u16, Process), String> {
    let mut last = String::new();
    for _ in 0..START_ATTEMPTS {
        let port = free_port().map_err(|e| e.to_string())?;
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            &dir.to_string_lossy(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend_from_slice(extra);
        let spec = Spec {
            program: binary.to_path_buf(),
            args,
            user: None,
            log: dir.join("redis.log"),
            stop_signal: Signal::SIGTERM,
        };
        let mut process = Process::spawn(spec).map_err(|e| format!("{} could not be run: {e}", binary.display()))?;
        let url = format!("redis://127.0.0.1:{port}");
        match wait_until_ready(&mut process, START_TIMEOUT, || ping(&url)).await {
            Ok(()) => return Ok((port, process)),
            Err(err) if lost_port_race(&err) => last = err,
            Err(err) => return Err(err),
        }
    }
    Err(last)
}

pub(crate) async fn ping(url: &str) -> Result<(), String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
    let reply: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| e.to_string())?;
    if reply == "PONG" { Ok(()) } else { Err(format!("PING answered {reply:?}")) }
}

/// Gives each node a third of the slots and introduces them to each other,
/// as `redis-cli --cluster create --cluster-replicas 0` does, then waits for
/// every node to report the cluster healthy.
async fn form_cluster(nodes: &[(u16, u16)]) -> Result<(), String> {
    const SLOTS: u32 = 16384;
    // redis-rs answers "timed out" after 500 ms by default; a busy machine
    // (a CI run, parallel builds) can take longer to assign 5,000 slots.
    let patient = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    let mut conns = Vec::new();
    for (port, _) in nodes {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
        conns.push(client.get_multiplexed_async_connection_with_config(&patient).await.map_err(|e| e.to_string())?);
    }
    let count = u32::try_from(nodes.len()).map_err(|e| e.to_string())?;
    for (i, conn) in (0u32..).zip(conns.iter_mut()) {
        let first = SLOTS * i / count;
        let last = SLOTS * (i + 1) / count - 1;
        let run = |cmd: redis::Cmd, conn: &mut redis::aio::MultiplexedConnection| {
            let mut conn = conn.clone();
            async move { cmd.query_async::<()>(&mut conn).await.map_err(|e| e.to_string()) }
        };
        run(redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(i + 1).clone(), conn).await?;
        run(redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(first).arg(last).clone(), conn).await?;
    }
    for (port, bus) in &nodes[1..] {
        redis::cmd("CLUSTER")
            .arg("MEET")
            .arg("127.0.0.1")
            .arg(*port)
            .arg(*bus)
            .query_async::<()>(&mut conns[0])
            .await
            .map_err(|e| e.to_string())?;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut healthy = true;
        let mut last = String::new();
        for conn in &mut conns {
            // A node too busy to answer now is asked again until the deadline.
            let info: String = match redis::cmd("CLUSTER").arg("INFO").query_async(conn).await {
                Ok(info) => info,
                Err(e) => e.to_string(),
            };
            let ok = info.contains("cluster_state:ok")
                && info.contains(&format!("cluster_known_nodes:{}", nodes.len()))
                && info.contains("cluster_slots_ok:16384");
            if !ok {
                healthy = false;
                last = info;
            }
        }
        if healthy {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("the cluster did not become healthy within 30 s; CLUSTER INFO:\n{last}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
