use std::fmt;

/// Why a test server could not be had.
///
/// [`Error::is_unavailable`] tells apart "nothing on this machine can provide
/// the server" (skip the test, or fail it in CI) from "a server was found but
/// did not work" (always a failure).
#[derive(Debug)]
pub struct Error {
    service: &'static str,
    kind: Kind,
    detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unavailable,
    Failed,
    Unsupported,
}

impl Error {
    pub(crate) fn unavailable(service: &'static str, detail: impl Into<String>) -> Self {
        Self { service, kind: Kind::Unavailable, detail: detail.into() }
    }

    pub(crate) fn failed(service: &'static str, detail: impl Into<String>) -> Self {
        Self { service, kind: Kind::Failed, detail: detail.into() }
    }

    pub(crate) fn unsupported(service: &'static str, detail: impl Into<String>) -> Self {
        Self { service, kind: Kind::Unsupported, detail: detail.into() }
    }

    /// No source (environment, Docker, local binaries) can provide the server.
    pub fn is_unavailable(&self) -> bool {
        self.kind == Kind::Unavailable
    }

    /// The server asked for: `"redis"`, `"redis cluster"`, `"postgres"` or `"pgbouncer"`.
    pub fn service(&self) -> &str {
        self.service
    }

    fn install_hint(&self) -> &'static str {
        match self.service {
            "redis" => {
                "set REDIS_URL, run a Docker engine, or install redis-server (Debian: apt-get install redis-server)"
            }
            "redis cluster" => {
                "set REDIS_CLUSTER_URLS, run a Docker engine, or install redis-server (Debian: apt-get install redis-server)"
            }
            "postgres" => {
                "set DATABASE_URL, run a Docker engine, or install PostgreSQL (Debian: apt-get install postgresql)"
            }
            "pgbouncer" => "run a Docker engine or install pgbouncer (Debian: apt-get install pgbouncer)",
            _ => "see the brisk-testkit docs",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Unavailable => {
                write!(f, "no {} for this test: {}; to run it, {}", self.service, self.detail, self.install_hint())
            }
            Kind::Failed => write!(f, "{} did not start: {}", self.service, self.detail),
            Kind::Unsupported => write!(f, "{}: {}", self.service, self.detail),
        }
    }
}

impl std::error::Error for Error {}

/// What a test does with an [`Error`]: skip, or fail.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Skip,
    Fail,
}

/// `CI` counts as set when it is present and not empty, `0` or `false`.
pub(crate) fn ci_is_set(value: Option<&str>) -> bool {
    match value {
        None => false,
        Some(v) => {
            let v = v.trim();
            !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
        }
    }
}

pub(crate) fn verdict(err: &Error, ci: Option<&str>) -> Verdict {
    if err.is_unavailable() && !ci_is_set(ci) { Verdict::Skip } else { Verdict::Fail }
}

/// Skips the current test with a message naming the reason, or fails it.
///
/// Fails (panics) when the error is not [`Error::is_unavailable`], or when the
/// `CI` environment variable is set: CI must never pass by skipping. This is
/// what [`require!`](crate::require) calls.
///
/// # Panics
///
/// As described: whenever the test must fail rather than be skipped.
pub fn skip_or_fail(err: &Error) {
    let ci = std::env::var("CI").ok();
    let test = std::thread::current().name().unwrap_or("this test").to_owned();
    match verdict(err, ci.as_deref()) {
        Verdict::Skip => {
            // Straight to the process's stderr: the test harness captures
            // `eprintln!`, and a skip must be seen even when the test passes.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {err}");
        }
        Verdict::Fail if err.is_unavailable() => {
            panic!("{test}: {err} (CI is set, so a missing server fails the test instead of skipping it)")
        }
        Verdict::Fail => panic!("{test}: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_skips_outside_ci_and_fails_in_ci() {
        let err = Error::unavailable("redis", "redis-server is not on PATH");
        assert_eq!(verdict(&err, None), Verdict::Skip);
        assert_eq!(verdict(&err, Some("")), Verdict::Skip);
        assert_eq!(verdict(&err, Some("false")), Verdict::Skip);
        assert_eq!(verdict(&err, Some("0")), Verdict::Skip);
        assert_eq!(verdict(&err, Some("true")), Verdict::Fail);
        assert_eq!(verdict(&err, Some("1")), Verdict::Fail);
    }

    #[test]
    fn a_server_that_failed_to_start_always_fails() {
        let err = Error::failed("postgres", "initdb exited with status 1");
        assert_eq!(verdict(&err, None), Verdict::Fail);
        assert_eq!(verdict(&err, Some("true")), Verdict::Fail);
    }

    #[test]
    fn the_message_says_why_and_what_to_install() {
        let err = Error::unavailable("pgbouncer", "pgbouncer is not on PATH");
        let text = err.to_string();
        assert!(text.contains("pgbouncer is not on PATH"), "{text}");
        assert!(text.contains("apt-get install pgbouncer"), "{text}");
    }

    #[test]
    fn skip_or_fail_panics_for_a_failed_server() {
        let err = Error::failed("redis", "exited at once");
        let outcome = std::panic::catch_unwind(|| skip_or_fail(&err));
        assert!(outcome.is_err());
    }
}
