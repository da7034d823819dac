//! PostgreSQL with a fresh database, and PgBouncer in front of it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::User;

use crate::Source;
use crate::docker::Container;
use crate::error::Error;
use crate::process::{Process, Spec, give_to, lost_port_race, wait_until_ready};
use crate::sources::{docker_engine, env_url, free_port, postgres_bindir, unprivileged_user, which};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const START_ATTEMPTS: usize = 4;

/// A PostgreSQL server with a database made for this test. Dropping it stops
/// the server; on a server from `DATABASE_URL`, it drops the database instead.
#[derive(Debug)]
pub struct Postgres {
    conn: ConnInfo,
    database: String,
    source: Source,
    backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

#[derive(Debug, Clone)]
struct ConnInfo {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    /// The database to connect to for administration (create and drop).
    admin_database: String,
}

impl ConnInfo {
    fn url(&self, database: &str) -> String {
        let auth = match &self.password {
            Some(password) => format!("{}:{}", encode(&self.user), encode(password)),
            None => encode(&self.user),
        };
        format!("postgres://{auth}@{}:{}/{}", self.host, self.port, encode(database))
    }
}

/// Percent-encodes what a URL's user, password or path segment cannot hold.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[derive(Debug)]
enum Backend {
    External,
    Container(#[allow(dead_code)] Container),
    Local(Process),
}

/// Starts (or finds) PostgreSQL and creates a fresh database on it:
/// `DATABASE_URL`, then a container, then the server binaries (`initdb`,
/// `postgres`).
///
/// # Errors
///
/// [`Error::is_unavailable`] when no source can provide one; otherwise the
/// reason a server that was found did not start or refused the database.
pub async fn postgres() -> Result<Postgres, Error> {
    const SERVICE: &str = "postgres";
    if let Some(url) = env_url("DATABASE_URL") {
        let conn = conn_info_from_url(&url).map_err(|e| Error::failed(SERVICE, format!("DATABASE_URL: {e}")))?;
        return Postgres::with_fresh_database(conn, Source::Environment, Backend::External, None).await;
    }
    let mut reasons = vec!["DATABASE_URL is not set".to_owned()];
    if docker_engine().await {
        match crate::docker::postgres().await {
            Ok((port, container)) => {
                let conn = ConnInfo {
                    host: "127.0.0.1".into(),
                    port,
                    user: "postgres".into(),
                    password: Some("postgres".into()),
                    admin_database: "postgres".into(),
                };
                return Postgres::with_fresh_database(conn, Source::Container, Backend::Container(container), None)
                    .await;
            }
            Err(err) => {
                reasons.push(format!("a Docker engine answers but the PostgreSQL container did not start ({err})"))
            }
        }
    } else {
        reasons.push("no Docker engine answers".into());
    }
    let Some(bindir) = postgres_bindir() else {
        reasons.push("PostgreSQL's initdb and postgres are neither on PATH nor in `pg_config --bindir`".into());
        return Err(Error::unavailable(SERVICE, reasons.join("; ")));
    };
    let user = unprivileged_user().map_err(|e| {
        reasons.push(e);
        Error::unavailable(SERVICE, reasons.join("; "))
    })?;
    let (dir, port, process) = start_local(&bindir, user.as_ref()).await.map_err(|e| Error::failed(SERVICE, e))?;
    let conn = ConnInfo {
        host: "127.0.0.1".into(),
        port,
        user: "postgres".into(),
        password: None,
        admin_database: "postgres".into(),
    };
    Postgres::with_fresh_database(conn, Source::LocalBinary, Backend::Local(process), Some(dir)).await
}

fn conn_info_from_url(url: &str) -> Result<ConnInfo, String> {
    let config = tokio_postgres::Config::from_str(url).map_err(|e| e.to_string())?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(_) => return Err("a Unix socket host cannot be shared with PgBouncer; use a TCP host".into()),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres").to_owned();
    let password = config.get_password().map(|p| String::from_utf8_lossy(p).into_owned());
    let admin_database = config.get_dbname().unwrap_or("postgres").to_owned();
    Ok(ConnInfo { host, port, user, password, admin_database })
}

async fn start_local(bindir: &Path, user: Option<&User>) -> Result<(tempfile::TempDir, u16, Process), String> {
    let dir = tempfile::Builder::new().prefix("brisk-postgres-").tempdir().map_err(|e| e.to_string())?;
    give_to(dir.path(), user).map_err(|e| format!("could not hand the data directory to the postgres user: {e}"))?;
    let data = dir.path().join("data");
    let mut initdb = Command::new(bindir.join("initdb"));
    initdb.args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "-D"]).arg(&data);
    run_as(&mut initdb, user);
    let out = initdb.output().map_err(|e| format!("initdb could not be run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let log = dir.path().join("postgres.log");
    let mut last = String::new();
    for _ in 0..START_ATTEMPTS {
        let port = free_port().map_err(|e| e.to_string())?;
        let spec = Spec {
            program: bindir.join("postgres"),
            args: vec![
                "-D".into(),
                data.to_string_lossy().into_owned(),
                "-p".into(),
                port.to_string(),
                "-c".into(),
                "listen_addresses=127.0.0.1".into(),
                "-c".into(),
                "unix_socket_directories=".into(),
                // Throwaway data: durability off, start-up and tests fast.
                "-c".into(),
                "fsync=off".into(),
                "-c".into(),
                "synchronous_commit=off".into(),
                "-c".into(),
                "full_page_writes=off".into(),
                "-c".into(),
                "max_connections=300".into(),
            ],
            user: user.cloned(),
            log: log.clone(),
            // Fast shutdown: roll back open transactions and stop.
            stop_signal: Signal::SIGINT,
        };
        let mut process = Process::spawn(spec).map_err(|e| format!("postgres could not be run: {e}"))?;
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        match wait_until_ready(&mut process, START_TIMEOUT, || select_one(&url)).await {
            Ok(()) => return Ok((dir, port, process)),
            Err(err) if lost_port_race(&err) => last = err,
            Err(err) => return Err(err),
        }
    }
    Err(last)
}

fn run_as(command: &mut Command, user: Option<&User>) {
    use std::os::unix::process::CommandExt;
    if let Some(user) = user {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw()).env("HOME", &user.dir).env("USER", &user.name);
        // initdb and postgres start by changing into the current directory's
        // parent chain; root's may not be readable by the postgres user.
        command.current_dir("/");
    }
}

async fn select_one(url: &str) -> Result<(), String> {
    let client = connect(url).await?;
    client.simple_query("SELECT 1").await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Connects without TLS and drives the connection on a task of its own.
async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped or the server goes.
        let _ = connection.await;
    });
    Ok(client)
}

impl Postgres {
    async fn with_fresh_database(
        conn: ConnInfo,
        source: Source,
        backend: Backend,
        dir: Option<tempfile::TempDir>,
    ) -> Result<Self, Error> {
        let database = crate::unique_name("brisk_test_");
        let admin = connect(&conn.url(&conn.admin_database)).await.map_err(|e| {
            Error::failed("postgres", format!("could not connect to {}: {e}", conn.url(&conn.admin_database)))
        })?;
        admin
            .simple_query(&format!("CREATE DATABASE \"{database}\""))
            .await
            .map_err(|e| Error::failed("postgres", format!("could not create the test database: {e}")))?;
        Ok(Self { conn, database, source, backend, _dir: dir })
    }

    /// `postgres://user@host:port/database` of this test's database.
    pub fn url(&self) -> String {
        self.conn.url(&self.database)
    }

    /// The name of this test's database.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The server's port on 127.0.0.1 (or the host of `DATABASE_URL`).
    pub fn port(&self) -> u16 {
        self.conn.port
    }

    /// The server's host.
    pub fn host(&self) -> &str {
        &self.conn.host
    }

    /// The role tests connect as.
    pub fn user(&self) -> &str {
        &self.conn.user
    }

    /// Where the server came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// A connection to this test's database (no TLS), driven on its own task.
    ///
    /// # Errors
    ///
    /// When the server refuses the connection (for instance while it is stopped).
    pub async fn connect(&self) -> Result<tokio_postgres::Client, Error> {
        connect(&self.url()).await.map_err(|e| Error::failed("postgres", e))
    }

    fn local(&mut self, action: &str) -> Result<&mut Process, Error> {
        match &mut self.backend {
            Backend::Local(process) => Ok(process),
            _ => Err(Error::unsupported(
                "postgres",
                format!("{action} needs a locally started server, this one is from the {}", self.source),
            )),
        }
    }

    /// Kills the server with `SIGKILL`, as a crash would; [`Postgres::start`]
    /// recovers it on the same port with its data.
    ///
    /// # Errors
    ///
    /// When the server was not started from local binaries.
    pub fn kill(&mut self) -> Result<(), Error> {
        self.local("kill")?.kill();
        Ok(())
    }

    /// Starts the server again on the same port and data, and waits until it
    /// answers.
    ///
    /// # Errors
    ///
    /// When the server was not started from local binaries, or did not come back.
    pub async fn start(&mut self) -> Result<(), Error> {
        let url = self.url();
        let process = self.local("start")?;
        process.restart().map_err(|e| Error::failed("postgres", e.to_string()))?;
        wait_until_ready(process, START_TIMEOUT, || select_one(&url)).await.map_err(|e| Error::failed("postgres", e))
    }

    /// Stops the server with a fast shutdown (open transactions roll back,
    /// clients are disconnected) and starts it again.
    ///
    /// # Errors
    ///
    /// When the server was not started from local binaries, or did not come back.
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.local("restart")?.stop(Duration::from_secs(30));
        self.start().await
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if !matches!(self.backend, Backend::External) {
            return; // the server and its data go with the handle
        }
        // A shared server keeps running: drop this test's database. Drop runs
        // outside any async context we could use, so give it a thread.
        let admin_url = self.conn.url(&self.conn.admin_database);
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.database);
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let client = connect(&admin_url).await.ok()?;
                client.simple_query(&sql).await.ok()
            })
        });
        let _ = dropper.join();
    }
}

/// PgBouncer's pool modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PoolMode {
    /// A server connection per client connection.
    Session,
    /// A server connection per transaction (the default, as in production set-ups).
    #[default]
    Transaction,
    /// A server connection per statement.
    Statement,
}

impl PoolMode {
    fn as_str(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// How to configure the PgBouncer of [`pgbouncer_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PgBouncerOptions {
    /// `pool_mode`; transaction by default.
    pub pool_mode: PoolMode,
    /// `default_pool_size`: server connections per database and user; 20 by default.
    pub default_pool_size: u32,
    /// `max_client_conn`; 1,000 by default.
    pub max_client_conn: u32,
}

impl Default for PgBouncerOptions {
    fn default() -> Self {
        Self { pool_mode: PoolMode::Transaction, default_pool_size: 20, max_client_conn: 1000 }
    }
}

impl PgBouncerOptions {
    /// Sets `default_pool_size`.
    #[must_use]
    pub fn default_pool_size(mut self, size: u32) -> Self {
        self.default_pool_size = size;
        self
    }

    /// Sets `pool_mode`.
    #[must_use]
    pub fn pool_mode(mut self, mode: PoolMode) -> Self {
        self.pool_mode = mode;
        self
    }

    /// Sets `max_client_conn`.
    #[must_use]
    pub fn max_client_conn(mut self, max: u32) -> Self {
        self.max_client_conn = max;
        self
    }
}

/// PgBouncer in front of a [`Postgres`], with its admin console reachable.
/// Dropping it stops PgBouncer.
#[derive(Debug)]
pub struct PgBouncer {
    port: u16,
    user: String,
    database: String,
    source: Source,
    backend: Backend,
    _dir: Option<tempfile::TempDir>,
}

/// Starts PgBouncer in transaction mode in front of `postgres` (pool size 20,
/// 1,000 clients): a container when a Docker engine answers, else `pgbouncer`
/// on `PATH`.
///
/// # Errors
///
/// [`Error::is_unavailable`] when no source can provide one; otherwise the
/// reason it did not start.
pub async fn pgbouncer(postgres: &Postgres) -> Result<PgBouncer, Error> {
    pgbouncer_with(postgres, PgBouncerOptions::default()).await
}

/// Starts PgBouncer in front of `postgres` with the given options.
///
/// # Errors
///
/// As [`pgbouncer`].
pub async fn pgbouncer_with(postgres: &Postgres, options: PgBouncerOptions) -> Result<PgBouncer, Error> {
    const SERVICE: &str = "pgbouncer";
    let mut reasons = Vec::new();
    if docker_engine().await {
        match docker_pgbouncer(postgres, &options).await {
            Ok(bouncer) => return Ok(bouncer),
            Err(err) => {
                reasons.push(format!("a Docker engine answers but the PgBouncer container did not start ({err})"))
            }
        }
    } else {
        reasons.push("no Docker engine answers".to_owned());
    }
    let Some(binary) = which("pgbouncer") else {
        reasons.push("pgbouncer is not on PATH".into());
        return Err(Error::unavailable(SERVICE, reasons.join("; ")));
    };
    let user = unprivileged_user().map_err(|e| {
        reasons.push(e);
        Error::unavailable(SERVICE, reasons.join("; "))
    })?;
    let dir = tempfile::Builder::new()
        .prefix("brisk-pgbouncer-")
        .tempdir()
        .map_err(|e| Error::failed(SERVICE, e.to_string()))?;
    give_to(dir.path(), user.as_ref()).map_err(|e| Error::failed(SERVICE, e.to_string()))?;
    let mut last = String::new();
    for _ in 0..START_ATTEMPTS {
        let port = free_port().map_err(|e| Error::failed(SERVICE, e.to_string()))?;
        let ini = write_config(dir.path(), postgres, &options, port, user.as_ref())
            .map_err(|e| Error::failed(SERVICE, e.to_string()))?;
        let spec = Spec {
            program: binary.clone(),
            args: vec![ini.to_string_lossy().into_owned()],
            user: user.clone(),
            log: dir.path().join("pgbouncer.log"),
            // SIGTERM is PgBouncer's immediate shutdown.
            stop_signal: Signal::SIGTERM,
        };
        let mut process =
            Process::spawn(spec).map_err(|e| Error::failed(SERVICE, format!("pgbouncer could not be run: {e}")))?;
        let admin = admin_url(port, postgres.user());
        match wait_until_ready(&mut process, START_TIMEOUT, || show_version(&admin)).await {
            Ok(()) => {
                return Ok(PgBouncer {
                    port,
                    user: postgres.user().to_owned(),
                    database: postgres.database().to_owned(),
                    source: Source::LocalBinary,
                    backend: Backend::Local(process),
                    _dir: Some(dir),
                });
            }
            Err(err) if lost_port_race(&err) => last = err,
            Err(err) => return Err(Error::failed(SERVICE, err)),
        }
    }
    Err(Error::failed(SERVICE, last))
}

async fn docker_pgbouncer(postgres: &Postgres, options: &PgBouncerOptions) -> Result<PgBouncer, String> {
    let port = free_port().map_err(|e| e.to_string())?;
    let ini = config_text(postgres, options, port, Path::new("/etc/pgbouncer/userlist.txt"));
    let container = crate::docker::pgbouncer(ini, userlist(postgres)).await?;
    let admin = admin_url(port, postgres.user());
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    while let Err(err) = show_version(&admin).await {
        if std::time::Instant::now() > deadline {
            return Err(format!("PgBouncer's admin console did not answer: {err}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(PgBouncer {
        port,
        user: postgres.user().to_owned(),
        database: postgres.database().to_owned(),
        source: Source::Container,
        backend: Backend::Container(container),
        _dir: None,
    })
}

fn userlist(postgres: &Postgres) -> String {
    // With auth_type = trust the password is not checked, but the user must be listed.
    format!("\"{}\" \"\"\n", postgres.user().replace('"', "\"\""))
}

fn config_text(postgres: &Postgres, options: &PgBouncerOptions, port: u16, auth_file: &Path) -> String {
    let mut server = format!("host={} port={} user={}", postgres.host(), postgres.port(), postgres.user());
    if let Some(password) = &postgres.conn.password {
        server.push_str(&format!(" password='{}'", password.replace('\\', "\\\\").replace('\'', "\\'")));
    }
    format!(
        "[databases]\n\
         * = {server}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = trust\n\
         auth_file = {auth_file}\n\
         admin_users = {user}\n\
         stats_users = {user}\n\
         pool_mode = {mode}\n\
         default_pool_size = {pool}\n\
         max_client_conn = {clients}\n\
         ignore_startup_parameters = extra_float_digits,options\n",
        auth_file = auth_file.display(),
        user = postgres.user(),
        mode = options.pool_mode.as_str(),
        pool = options.default_pool_size,
        clients = options.max_client_conn,
    )
}

fn write_config(
    dir: &Path,
    postgres: &Postgres,
    options: &PgBouncerOptions,
    port: u16,
    user: Option<&User>,
) -> std::io::Result<PathBuf> {
    let auth_file = dir.join("userlist.txt");
    std::fs::write(&auth_file, userlist(postgres))?;
    give_to(&auth_file, user)?;
    let ini = dir.join("pgbouncer.ini");
    std::fs::write(&ini, config_text(postgres, options, port, &auth_file))?;
    give_to(&ini, user)?;
    Ok(ini)
}

fn admin_url(port: u16, user: &str) -> String {
    format!("postgres://{}@127.0.0.1:{port}/pgbouncer", encode(user))
}

async fn show_version(admin_url: &str) -> Result<(), String> {
    let client = connect(admin_url).await?;
    // The admin console speaks only the simple query protocol.
    client.simple_query("SHOW VERSION").await.map_err(|e| e.to_string())?;
    Ok(())
}

impl PgBouncer {
    /// `postgres://user@127.0.0.1:port/database`: the test's database through PgBouncer.
    pub fn url(&self) -> String {
        format!("postgres://{}@127.0.0.1:{}/{}", encode(&self.user), self.port, encode(&self.database))
    }

    /// `postgres://user@127.0.0.1:port/pgbouncer`: the admin console
    /// (`SHOW POOLS`, `SHOW STATS`; simple query protocol only).
    pub fn admin_url(&self) -> String {
        admin_url(self.port, &self.user)
    }

    /// PgBouncer's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where PgBouncer came from.
    pub fn source(&self) -> Source {
        self.source
    }

    /// A connection to the admin console, driven on its own task.
    ///
    /// # Errors
    ///
    /// When PgBouncer refuses the connection.
    pub async fn admin(&self) -> Result<tokio_postgres::Client, Error> {
        connect(&self.admin_url()).await.map_err(|e| Error::failed("pgbouncer", e))
    }

    /// Stops PgBouncer at once (its clients are disconnected) and starts it
    /// again on the same port.
    ///
    /// # Errors
    ///
    /// When PgBouncer was not started from a local binary, or did not come back.
    pub async fn restart(&mut self) -> Result<(), Error> {
        self.stop()?;
        self.start().await
    }

    /// Stops PgBouncer at once: its clients are disconnected and new ones are
    /// refused until [`PgBouncer::start`], so an outage lasts as long as a
    /// test wants.
    ///
    /// # Errors
    ///
    /// When PgBouncer was not started from a local binary.
    pub fn stop(&mut self) -> Result<(), Error> {
        self.local("stop")?.stop(Duration::from_secs(10));
        Ok(())
    }

    /// Starts PgBouncer again on the same port and waits until its admin
    /// console answers.
    ///
    /// # Errors
    ///
    /// When PgBouncer was not started from a local binary, or did not come back.
    pub async fn start(&mut self) -> Result<(), Error> {
        let admin = self.admin_url();
        let process = self.local("start")?;
        process.restart().map_err(|e| Error::failed("pgbouncer", e.to_string()))?;
        wait_until_ready(process, START_TIMEOUT, || show_version(&admin))
            .await
            .map_err(|e| Error::failed("pgbouncer", e))
    }

    fn local(&mut self, action: &str) -> Result<&mut Process, Error> {
        match &mut self.backend {
            Backend::Local(process) => Ok(process),
            _ => Err(Error::unsupported(
                "pgbouncer",
                format!("{action} needs a locally started PgBouncer, this one is from the {}", self.source),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_what_needs_encoding() {
        let conn = ConnInfo {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "app user".into(),
            password: Some("p@ss/word".into()),
            admin_database: "postgres".into(),
        };
        assert_eq!(conn.url("brisk_test_1"), "postgres://app%20user:p%40ss%2Fword@127.0.0.1:5432/brisk_test_1");
    }

    #[test]
    fn database_url_is_read_into_parts() {
        let conn = conn_info_from_url("postgres://alice:secret@db.internal:6543/app").unwrap();
        assert_eq!(conn.host, "db.internal");
        assert_eq!(conn.port, 6543);
        assert_eq!(conn.user, "alice");
        assert_eq!(conn.password.as_deref(), Some("secret"));
        assert_eq!(conn.admin_database, "app");
    }

    #[test]
    fn a_malformed_database_url_is_an_error() {
        assert!(conn_info_from_url("postgres://alice@host:notaport/app").is_err());
    }
}
