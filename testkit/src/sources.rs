//! Finding what can provide a server: environment variables, a Docker engine,
//! binaries on `PATH`, free loopback ports.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// A non-empty environment variable.
pub(crate) fn env_url(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// The first executable `program` in the directories of `path` (a `PATH`-style list).
pub(crate) fn find_in(program: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path).map(|dir| dir.join(program)).find(|candidate| {
        std::fs::metadata(candidate).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

/// `program` on this process's `PATH`.
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    find_in(program, &std::env::var_os("PATH")?)
}

/// The folder of PostgreSQL's server binaries (`initdb`, `postgres`): `PATH`
/// first, then `pg_config --bindir`, then the newest of Debian's
/// `/usr/lib/postgresql/<version>/bin` (Debian keeps them off `PATH`).
pub(crate) fn postgres_bindir() -> Option<PathBuf> {
    let usable = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(initdb) = which("initdb")
        && let Some(dir) = initdb.parent().filter(|dir| usable(dir))
    {
        return Some(dir.to_path_buf());
    }
    let from_pg_config = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    if let Some(dir) = from_pg_config.filter(|dir| usable(dir)) {
        return Some(dir);
    }
    // Only where PATH is searched at all: an empty PATH means "no binaries".
    std::env::var_os("PATH").filter(|p| !p.is_empty())?;
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| usable(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

/// The user to run PostgreSQL and PgBouncer as: none when not root (run as
/// ourselves), the `postgres` user when root.
pub(crate) fn unprivileged_user() -> Result<Option<nix::unistd::User>, String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(user)) => Ok(Some(user)),
        Ok(None) => Err("running as root, and there is no `postgres` user to start PostgreSQL as \
                         (PostgreSQL refuses to run as root; Debian's postgresql package creates it)"
            .into()),
        Err(err) => Err(format!("looking up the `postgres` user failed: {err}")),
    }
}

/// A port on 127.0.0.1 that nothing listens on right now. The kernel picks it,
/// so parallel tests get different ports; a server that still loses the race
/// is restarted on another port by the caller.
pub(crate) fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Whether a Docker engine answers, probed once per process.
pub(crate) async fn docker_engine() -> bool {
    static ANSWER: OnceLock<bool> = OnceLock::new();
    if let Some(answer) = ANSWER.get() {
        return *answer;
    }
    let answer = probe_docker().await;
    *ANSWER.get_or_init(|| answer)
}

async fn probe_docker() -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PING: &[u8] = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n";
    let host = env_url("DOCKER_HOST").unwrap_or_else(|| "unix:///var/run/docker.sock".into());
    let attempt = async {
        let mut reply = Vec::new();
        if let Some(path) = host.strip_prefix("unix://") {
            let mut stream = tokio::net::UnixStream::connect(path).await.ok()?;
            stream.write_all(PING).await.ok()?;
            stream.read_to_end(&mut reply).await.ok()?;
        } else if let Some(addr) = host.strip_prefix("tcp://") {
            let mut stream = tokio::net::TcpStream::connect(addr.trim_end_matches('/')).await.ok()?;
            stream.write_all(PING).await.ok()?;
            stream.read_to_end(&mut reply).await.ok()?;
        } else {
            return None;
        }
        let reply = String::from_utf8_lossy(&reply);
        Some(reply.starts_with("HTTP/1.") && reply.contains(" 200 "))
    };
    matches!(tokio::time::timeout(Duration::from_secs(2), attempt).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_only_in_the_given_path() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("fake-server");
        std::fs::write(&program, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_in("fake-server", dir.path().as_os_str()), Some(program));
        assert_eq!(find_in("fake-server", std::ffi::OsStr::new("")), None);
    }

    #[test]
    fn a_file_that_is_not_executable_is_not_a_program() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes"), "text").unwrap();
        assert_eq!(find_in("notes", dir.path().as_os_str()), None);
    }
}
