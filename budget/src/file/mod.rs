//! Budgets from a file, in the `performance-budgets.yml` format (YAML, TOML or JSON).
//!
//! ```
//! use std::time::Duration;
//! use brisk_budget::Budgets;
//! use http::Method;
//!
//! let budgets = Budgets::from_yaml_str(
//!     "api_endpoints:\n  GET /api/blueprints/:id: {p95: 50ms, max_payload: 20KB, db_queries: 1, cache_required: true}\n",
//! )?;
//! let budget = budgets.get(&Method::GET, "/api/blueprints/{id}").expect("declared");
//! assert_eq!(budget.latency_limit(brisk_budget::Percentile::P95), Some(Duration::from_millis(50)));
//! assert_eq!(budget.max_payload_limit(), Some(20_000));
//! # Ok::<(), brisk_budget::BudgetFileError>(())
//! ```
//!
//! # Format
//!
//! One top-level key, `api_endpoints`, maps `METHOD /path` to a budget. Paths
//! may use `:id` or `{id}` parameters (stored as axum's `{id}`). Fields:
//!
//! | field            | value                                                        |
//! |------------------|--------------------------------------------------------------|
//! | `p50`/`p95`/`p99`| a duration with its unit: `30ms`, `1.5s`, `250us`            |
//! | `max_payload`    | bytes: `512`, `100KB` (1 KB = 1000 B), `20KiB` (1 KiB = 1024 B) |
//! | `db_queries`     | the most `db_queries` a request may [`record`](crate::record) |
//! | `cache_required` | `true`: responses must carry `X-Cache: HIT`, `MISS` or `STALE` |
//!
//! Any other field, or any other top-level key, is an error. Errors name the
//! line, the route and the field ([`BudgetFileError`]).

mod units;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::budget::{Budgets, DB_QUERIES, RouteBudget, RouteKey};
use units::Scalar;

/// The formats a budget file may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileFormat {
    /// YAML (`.yml`, `.yaml`), read with `serde-saphyr`.
    Yaml,
    /// TOML (`.toml`); needs the `toml` feature.
    Toml,
    /// JSON (`.json`).
    Json,
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileFormat::Yaml => "YAML",
            FileFormat::Toml => "TOML",
            FileFormat::Json => "JSON",
        })
    }
}

/// A budget file could not be read: it says where (line, route, field) and why.
#[derive(Debug)]
pub struct BudgetFileError {
    line: Option<u64>,
    route: Option<String>,
    field: Option<String>,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl BudgetFileError {
    fn new(message: impl Into<String>) -> Self {
        Self { line: None, route: None, field: None, message: message.into(), source: None }
    }

    fn at(mut self, line: Option<u64>, route: Option<&str>, field: Option<&str>) -> Self {
        self.line = self.line.or(line);
        self.route = self.route.or_else(|| route.map(str::to_owned));
        self.field = self.field.or_else(|| field.map(str::to_owned));
        self
    }

    fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The 1-based line of the offending entry, when known.
    pub fn line(&self) -> Option<u64> {
        self.line
    }

    /// The route (`GET /api/blueprints/:id`, as written) of the offending entry, when known.
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// The offending field (`p95`), when known.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl fmt::Display for BudgetFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid performance budgets")?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if let Some(route) = &self.route {
            write!(f, ", route `{route}`")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl StdError for BudgetFileError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile<K: std::hash::Hash + Eq, R> {
    api_endpoints: HashMap<K, R>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute<V> {
    p50: Option<V>,
    p95: Option<V>,
    p99: Option<V>,
    max_payload: Option<V>,
    db_queries: Option<V>,
    cache_required: Option<V>,
}

impl<V> RawRoute<V> {
    fn fields(self) -> impl Iterator<Item = (&'static str, V)> {
        [
            ("p50", self.p50),
            ("p95", self.p95),
            ("p99", self.p99),
            ("max_payload", self.max_payload),
            ("db_queries", self.db_queries),
            ("cache_required", self.cache_required),
        ]
        .into_iter()
        .filter_map(|(name, v)| Some((name, v?)))
    }
}

/// One route as read from a file, with where it was written.
struct Entry {
    key: String,
    line: Option<u64>,
    fields: Vec<(&'static str, Scalar, Option<u64>)>,
}

impl Budgets {
    /// Reads budgets written in YAML (the `performance-budgets.yml` format).
    ///
    /// # Errors
    ///
    /// Malformed YAML, an unknown field, a bad value or a bad route key; the
    /// error names the line, the route and the field.
    pub fn from_yaml_str(text: &str) -> Result<Self, BudgetFileError> {
        type Route = RawRoute<serde_saphyr::Spanned<Scalar>>;
        match serde_saphyr::from_str::<RawFile<serde_saphyr::Spanned<String>, Route>>(text) {
            Ok(raw) => {
                let entries = raw.api_endpoints.into_iter().map(|(key, route)| Entry {
                    line: Some(key.referenced.line()),
                    key: key.value,
                    fields: route.fields().map(|(name, v)| (name, v.value, Some(v.referenced.line()))).collect(),
                });
                build(entries)
            }
            Err(e) => {
                let line = e.location().map(|l| l.line());
                let message = e.without_snippet().to_string();
                // Name the route the error is in: the last key written at or before it.
                let keys = serde_saphyr::from_str::<RawFile<serde_saphyr::Spanned<String>, IgnoredAny>>(text)
                    .map(|raw| {
                        raw.api_endpoints.into_keys().map(|k| (k.referenced.line(), k.value)).collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                Err(serde_error(message, line, keys).with_source(e))
            }
        }
    }

    /// Reads budgets written in JSON: `{"api_endpoints": {"GET /api/x": {"p95": "50ms"}}}`.
    ///
    /// # Errors
    ///
    /// As [`Budgets::from_yaml_str`].
    pub fn from_json_str(text: &str) -> Result<Self, BudgetFileError> {
        match serde_json::from_str::<RawFile<String, RawRoute<Scalar>>>(text) {
            Ok(raw) => build(raw.api_endpoints.into_iter().map(|(key, route)| {
                let line = locate(text, &key, None);
                let fields = route.fields().map(|(name, v)| (name, v, locate(text, &key, Some(name)))).collect();
                Entry { key, line, fields }
            })),
            Err(e) => {
                let keys = text_keys(serde_json::from_str::<RawFile<String, IgnoredAny>>(text).ok(), text);
                let line = (e.line() > 0).then_some(e.line() as u64);
                Err(serde_error(e.to_string(), line, keys).with_source(e))
            }
        }
    }

    /// Reads budgets written in TOML: an `[api_endpoints]` table of
    /// `"GET /api/x" = { p95 = "50ms" }`.
    ///
    /// # Errors
    ///
    /// As [`Budgets::from_yaml_str`].
    #[cfg(feature = "toml")]
    pub fn from_toml_str(text: &str) -> Result<Self, BudgetFileError> {
        let line_at = |offset: usize| Some(line_of(text, offset));
        match toml::from_str::<RawFile<String, RawRoute<toml::Spanned<Scalar>>>>(text) {
            Ok(raw) => build(raw.api_endpoints.into_iter().map(|(key, route)| {
                let line = locate(text, &key, None);
                let fields = route
                    .fields()
                    .map(|(name, v)| {
                        let at = line_at(v.span().start);
                        (name, v.into_inner(), at)
                    })
                    .collect();
                Entry { key, line, fields }
            })),
            Err(e) => {
                let keys = text_keys(toml::from_str::<RawFile<String, IgnoredAny>>(text).ok(), text);
                let line = e.span().and_then(|s| line_at(s.start));
                Err(serde_error(e.message().trim().to_owned(), line, keys).with_source(e))
            }
        }
    }

    /// Reads a budget file, choosing the format by extension (`.yml`/`.yaml`,
    /// `.toml`, `.json`).
    ///
    /// # Errors
    ///
    /// The file cannot be read, its extension is unknown, or its contents are
    /// invalid (as [`Budgets::from_yaml_str`]).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, BudgetFileError> {
        let path = path.as_ref();
        let format = match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("yml" | "yaml") => FileFormat::Yaml,
            Some("toml") => FileFormat::Toml,
            Some("json") => FileFormat::Json,
            _ => {
                return Err(BudgetFileError::new(format!(
                    "cannot tell the format of {}: use .yml, .yaml, .toml or .json",
                    path.display()
                )));
            }
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| BudgetFileError::new(format!("cannot read {}: {e}", path.display())).with_source(e))?;
        Self::from_str_as(&text, format)
    }

    /// Reads budgets from `text` in `format`.
    ///
    /// # Errors
    ///
    /// As [`Budgets::from_yaml_str`]; TOML without the `toml` feature is an error.
    pub fn from_str_as(text: &str, format: FileFormat) -> Result<Self, BudgetFileError> {
        match format {
            FileFormat::Yaml => Self::from_yaml_str(text),
            FileFormat::Json => Self::from_json_str(text),
            #[cfg(feature = "toml")]
            FileFormat::Toml => Self::from_toml_str(text),
            #[cfg(not(feature = "toml"))]
            FileFormat::Toml => Err(BudgetFileError::new("TOML budget files need the `toml` feature of brisk-budget")),
        }
    }
}

/// An error from the deserializer, placed in the route whose key precedes it.
fn serde_error(message: String, line: Option<u64>, keys: Vec<(u64, String)>) -> BudgetFileError {
    let route = line.and_then(|line| keys.into_iter().filter(|(l, _)| *l <= line).max_by_key(|(l, _)| *l)).map(|k| k.1);
    let field = message
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(field, _)| field.to_owned());
    BudgetFileError::new(message).at(line, route.as_deref(), field.as_deref())
}

fn text_keys<R>(raw: Option<RawFile<String, R>>, text: &str) -> Vec<(u64, String)> {
    raw.map(|raw| raw.api_endpoints.into_keys().filter_map(|k| Some((locate(text, &k, None)?, k))).collect::<Vec<_>>())
        .unwrap_or_default()
}

/// The line where a route key (and optionally a field after it) is written, found
/// in the text for the formats whose parsers give no spans.
fn locate(text: &str, key: &str, field: Option<&str>) -> Option<u64> {
    let quoted = format!("\"{key}\"");
    let mut at = text.find(&quoted)?;
    if let Some(field) = field {
        let rest = &text[at..];
        let found = rest.find(&format!("\"{field}\"")).or_else(|| {
            rest.match_indices(field)
                .find(|(i, _)| rest[..*i].ends_with(|c: char| c.is_whitespace() || c == '{' || c == ','))
                .map(|(i, _)| i)
        })?;
        at += found;
    }
    Some(line_of(text, at))
}

fn line_of(text: &str, offset: usize) -> u64 {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset].iter().filter(|b| **b == b'\n').count() as u64 + 1
}

fn build(entries: impl Iterator<Item = Entry>) -> Result<Budgets, BudgetFileError> {
    let mut entries: Vec<Entry> = entries.collect();
    entries.sort_by(|a, b| a.line.cmp(&b.line).then_with(|| a.key.cmp(&b.key)));
    let mut budgets = Budgets::new();
    let mut written_as: HashMap<RouteKey, String> = HashMap::new();
    for entry in entries {
        let fail = |message: String, field: Option<&str>, line: Option<u64>| {
            BudgetFileError::new(message).at(line.or(entry.line), Some(&entry.key), field)
        };
        let key = RouteKey::parse(&entry.key).map_err(|e| fail(e.to_string(), None, None))?;
        if let Some(first) = written_as.get(&key) {
            return Err(fail(format!("`{first}` already declares route `{key}`"), None, None));
        }
        let mut budget = RouteBudget::new();
        for (name, value, line) in &entry.fields {
            let err = |message: String| fail(message, Some(name), *line);
            budget = match *name {
                "p50" => budget.p50(units::duration(value).map_err(err)?),
                "p95" => budget.p95(units::duration(value).map_err(err)?),
                "p99" => budget.p99(units::duration(value).map_err(err)?),
                "max_payload" => budget.max_payload(units::size(value).map_err(err)?),
                "db_queries" => budget.counter(DB_QUERIES, units::count(value).map_err(err)?),
                "cache_required" => budget.cache_required(units::flag(value).map_err(err)?),
                other => unreachable!("RawRoute has no field {other}"),
            };
        }
        let limits = [("p50", budget.p50), ("p95", budget.p95), ("p99", budget.p99)];
        let mut previous: Option<(&str, std::time::Duration)> = None;
        for (name, limit) in limits {
            let Some(limit) = limit else { continue };
            if let Some((prev_name, prev)) = previous
                && prev > limit
            {
                let line = entry.fields.iter().find(|f| f.0 == name).and_then(|f| f.2);
                return Err(fail(
                    format!(
                        "{name} ({}) is lower than {prev_name} ({}): percentiles cannot decrease",
                        humantime::format_duration(limit),
                        humantime::format_duration(prev)
                    ),
                    Some(name),
                    line,
                ));
            }
            previous = Some((name, limit));
        }
        written_as.insert(key.clone(), entry.key.clone());
        budgets.routes.insert(key, budget);
    }
    Ok(budgets)
}

#[cfg(test)]
mod tests;
