//! Configuration from the environment.

use std::net::SocketAddr;

/// What the service runs with. Every field has a default, so the service
/// starts with no configuration at all.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// `BIND`: the address to listen on; `127.0.0.1:3000` by default.
    pub bind: SocketAddr,
}

impl Default for Config {
    fn default() -> Self {
        Self { bind: SocketAddr::from(([127, 0, 0, 1], 3000)) }
    }
}

/// A configuration value that could not be used, naming the variable.
#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?} is not valid: {reason}")]
pub struct ConfigError {
    variable: &'static str,
    value: String,
    reason: String,
}

impl Config {
    /// Reads the configuration from the process environment.
    ///
    /// # Errors
    ///
    /// When a variable is set to a value that cannot be used; the error names it.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    ///
    /// # Errors
    ///
    /// As [`Config::from_env`].
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut config = Self::default();
        if let Some(value) = lookup("BIND").filter(|v| !v.trim().is_empty()) {
            config.bind = value.trim().parse().map_err(|e: std::net::AddrParseError| ConfigError {
                variable: "BIND",
                value: value.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_environment() {
        let config = Config::from_lookup(|_| None).unwrap();
        assert_eq!(config.bind.to_string(), "127.0.0.1:3000");
    }

    #[test]
    fn a_bad_bind_address_names_the_variable() {
        let err = Config::from_lookup(|name| (name == "BIND").then(|| "localhost:port".to_owned())).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("BIND=\"localhost:port\" is not valid"), "{text}");
    }
}
