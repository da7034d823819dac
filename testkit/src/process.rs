//! A server process started from a local binary, and stopped by its own PID.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User};

/// How to start a server: enough to start it again on the same port.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    /// Run as this user (PostgreSQL and PgBouncer refuse to run as root).
    pub(crate) user: Option<User>,
    /// Where stdout and stderr go; appended to across restarts.
    pub(crate) log: PathBuf,
    /// The signal that asks the server to shut down quickly.
    pub(crate) stop_signal: Signal,
}

/// A running server. Dropping it stops the server.
#[derive(Debug)]
pub(crate) struct Process {
    spec: Spec,
    child: Option<Child>,
}

impl Process {
    pub(crate) fn spawn(spec: Spec) -> std::io::Result<Self> {
        let child = start(&spec)?;
        Ok(Self { spec, child: Some(child) })
    }

    pub(crate) fn pid(&self) -> Option<Pid> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok()).map(Pid::from_raw)
    }

    /// Whether the server is still running (not exited, not reaped).
    pub(crate) fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    pub(crate) fn signal(&self, signal: Signal) -> std::io::Result<()> {
        let pid = self.pid().ok_or_else(|| std::io::Error::other("the server is not running"))?;
        kill(pid, signal).map_err(std::io::Error::from)
    }

    /// Asks the server to stop, then kills it if it has not exited within `grace`.
    pub(crate) fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else { return };
        if matches!(child.try_wait(), Ok(None)) {
            if let Ok(pid) = i32::try_from(child.id()) {
                // A frozen server must be thawed to act on the stop signal.
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
                let _ = kill(Pid::from_raw(pid), self.spec.stop_signal);
            }
            let deadline = Instant::now() + grace;
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the server at once (`SIGKILL`), as a crash would.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again with the same command line (same port, same files).
    pub(crate) fn restart(&mut self) -> std::io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.child = Some(start(&self.spec)?);
        Ok(())
    }

    /// The last lines the server wrote, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.spec.log, 40)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

fn start(spec: &Spec) -> std::io::Result<Child> {
    let log = File::options().create(true).append(true).open(&spec.log)?;
    let mut command = match crate::sources::which("setpriv") {
        // The server gets the stop signal when the thread that started it
        // exits, so a test process killed mid-run leaves no server behind.
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command.arg(format!("--pdeathsig={}", signal_name(spec.stop_signal))).arg("--").arg(&spec.program);
            command
        }
        None => Command::new(&spec.program),
    };
    command.args(&spec.args).stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    if let Some(user) = &spec.user {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        // HOME and USER of root would point the server at root's files.
        command.env("HOME", &user.dir).env("USER", &user.name).env("LOGNAME", &user.name);
    }
    command.spawn()
}

fn signal_name(signal: Signal) -> &'static str {
    signal.as_str().trim_start_matches("SIG")
}

pub(crate) fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let Ok(mut file) = File::open(path) else { return String::new() };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `ready` until it succeeds, the process exits, or `timeout` passes.
pub(crate) async fn wait_until_ready<F, Fut>(
    process: &mut Process,
    timeout: Duration,
    mut ready: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_error;
    loop {
        if !process.is_running() {
            return Err(format!("the server exited at start; its log ends with:\n{}", process.log_tail()));
        }
        match tokio::time::timeout(Duration::from_secs(2), ready()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(err)) => last_error = err,
            Err(_) => last_error = "the readiness probe timed out".into(),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "not ready after {timeout:?} (last probe: {last_error}); its log ends with:\n{}",
                process.log_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether a start failed because another process took the port first.
pub(crate) fn lost_port_race(message: &str) -> bool {
    message.contains("Address already in use") || message.contains("could not bind")
}

/// Makes `path` belong to `user` (so an unprivileged server can write there).
pub(crate) fn give_to(path: &std::path::Path, user: Option<&User>) -> std::io::Result<()> {
    if let Some(user) = user {
        nix::unistd::chown(path, Some(user.uid), Some(user.gid)).map_err(std::io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(dir: &std::path::Path) -> Spec {
        Spec {
            program: PathBuf::from("/bin/sleep"),
            args: vec!["30".into()],
            user: None,
            log: dir.join("sleep.log"),
            stop_signal: Signal::SIGTERM,
        }
    }

    #[test]
    fn dropping_the_handle_stops_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let process = Process::spawn(sleeper(dir.path())).unwrap();
        let pid = process.pid().unwrap();
        drop(process);
        // Reaped by the drop: signal 0 reports that no such process exists.
        assert!(kill(pid, None).is_err());
    }

    #[test]
    fn a_killed_process_restarts_with_the_same_command() {
        let dir = tempfile::tempdir().unwrap();
        let mut process = Process::spawn(sleeper(dir.path())).unwrap();
        process.kill();
        assert!(!process.is_running());
        process.restart().unwrap();
        assert!(process.is_running());
    }

    #[test]
    fn the_port_race_is_recognised() {
        assert!(lost_port_race(
            "Warning: Could not create server TCP listening socket 127.0.0.1:6379: bind: Address already in use"
        ));
        assert!(!lost_port_race("FATAL: data directory has wrong ownership"));
    }
}
