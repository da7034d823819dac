use std::time::Duration;

use http::Method;

use crate::budget::{Budgets, Percentile};

const SEEDS: &str = "api_endpoints:
  GET /api/blueprints:    {p50: 30ms, p95: 100ms, p99: 300ms, max_payload: 100KB, db_queries: 2, cache_required: true}
  GET /api/blueprints/:id: {p95: 50ms, max_payload: 20KB, db_queries: 1, cache_required: true}
  POST /api/deploy:       {p95: 200ms, max_payload: 50KB, db_queries: 5}
";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn assert_seeds(b: &Budgets) {
    assert_eq!(b.len(), 3);
    let list = b.get(&Method::GET, "/api/blueprints").unwrap();
    assert_eq!(list.latency_limit(Percentile::P50), Some(ms(30)));
    assert_eq!(list.latency_limit(Percentile::P95), Some(ms(100)));
    assert_eq!(list.latency_limit(Percentile::P99), Some(ms(300)));
    assert_eq!(list.max_payload_limit(), Some(100_000));
    assert_eq!(list.counter_limits().collect::<Vec<_>>(), vec![("db_queries", 2)]);
    assert!(list.is_cache_required());
    let one = b.get(&Method::GET, "/api/blueprints/{id}").unwrap();
    assert_eq!(one.latency_limit(Percentile::P50), None);
    assert_eq!(one.latency_limit(Percentile::P95), Some(ms(50)));
    assert_eq!(one.max_payload_limit(), Some(20_000));
    let deploy = b.get(&Method::POST, "/api/deploy").unwrap();
    assert!(!deploy.is_cache_required());
    assert_eq!(deploy.counter_limits().collect::<Vec<_>>(), vec![("db_queries", 5)]);
}

#[test]
fn reads_the_seeds_yaml() {
    assert_seeds(&Budgets::from_yaml_str(SEEDS).unwrap());
}

#[test]
fn block_style_yaml_and_binary_units() {
    let b = Budgets::from_yaml_str(
        "api_endpoints:\n  GET /a/{id}:\n    p99: 1.5s\n    max_payload: 20KiB\n  \"DELETE /a/:id\": {}\n",
    )
    .unwrap();
    let a = b.get(&Method::GET, "/a/:id").unwrap();
    assert_eq!(a.latency_limit(Percentile::P99), Some(ms(1500)));
    assert_eq!(a.max_payload_limit(), Some(20 * 1024));
    assert!(b.get(&Method::DELETE, "/a/{id}").is_some());
}

#[cfg(feature = "toml")]
#[test]
fn reads_toml() {
    let b = Budgets::from_toml_str(
        r#"
[api_endpoints]
"GET /api/blueprints" = { p50 = "30ms", p95 = "100ms", p99 = "300ms", max_payload = "100KB", db_queries = 2, cache_required = true }
"GET /api/blueprints/:id" = { p95 = "50ms", max_payload = "20KB", db_queries = 1, cache_required = true }
"POST /api/deploy" = { p95 = "200ms", max_payload = "50KB", db_queries = 5 }
"#,
    )
    .unwrap();
    assert_seeds(&b);
}

#[test]
fn reads_json() {
    let b = Budgets::from_json_str(
        r#"{"api_endpoints": {
  "GET /api/blueprints": {"p50": "30ms", "p95": "100ms", "p99": "300ms", "max_payload": "100KB", "db_queries": 2, "cache_required": true},
  "GET /api/blueprints/{id}": {"p95": "50ms", "max_payload": "20KB", "db_queries": 1, "cache_required": true},
  "POST /api/deploy": {"p95": "200ms", "max_payload": 50000, "db_queries": 5}
}}"#,
    )
    .unwrap();
    assert_seeds(&b);
}

#[test]
fn yaml_unknown_field_names_line_route_and_field() {
    let text = "api_endpoints:\n  GET /a: {p95: 10ms}\n  GET /b: {p95: 20ms, p90: 10ms}\n";
    let err = Budgets::from_yaml_str(text).unwrap_err();
    assert_eq!(err.line(), Some(3), "{err}");
    assert_eq!(err.route(), Some("GET /b"), "{err}");
    assert_eq!(err.field(), Some("p90"), "{err}");
    let message = err.to_string();
    assert!(message.starts_with("invalid performance budgets, line 3, route `GET /b`, field `p90`: "), "{message}");
    assert!(message.contains("unknown field"), "{message}");
}

#[test]
fn yaml_bad_value_names_line_route_and_field() {
    let text = "api_endpoints:\n  GET /a:\n    p95: 10ms\n    max_payload: 10 parsecs\n";
    let err = Budgets::from_yaml_str(text).unwrap_err();
    assert_eq!((err.line(), err.route(), err.field()), (Some(4), Some("GET /a"), Some("max_payload")), "{err}");
    assert!(err.to_string().contains("unknown unit `parsecs`"), "{err}");

    let err = Budgets::from_yaml_str("api_endpoints:\n  GET /a: {p95: 100}\n").unwrap_err();
    assert_eq!((err.line(), err.field()), (Some(2), Some("p95")));
    assert!(err.to_string().contains("has no unit"), "{err}");

    let err = Budgets::from_yaml_str("api_endpoints:\n  GET /a: {db_queries: many}\n").unwrap_err();
    assert_eq!(err.field(), Some("db_queries"));
    assert!(err.to_string().contains("expected a whole number, found `many`"), "{err}");

    let err = Budgets::from_yaml_str("api_endpoints:\n  GET /a: {cache_required: sometimes}\n").unwrap_err();
    assert_eq!(err.field(), Some("cache_required"));
}

#[test]
fn yaml_bad_route_keys() {
    let err = Budgets::from_yaml_str("api_endpoints:\n  GET /a: {}\n  /b: {p95: 1ms}\n").unwrap_err();
    assert_eq!((err.line(), err.route(), err.field()), (Some(3), Some("/b"), None), "{err}");
    assert!(err.to_string().contains("METHOD /path"), "{err}");

    let err = Budgets::from_yaml_str("api_endpoints:\n  GET /a/:id: {}\n  GET /a/{id}: {}\n").unwrap_err();
    assert_eq!(err.line(), Some(3));
    assert!(err.to_string().contains("already declares route `GET /a/{id}`"), "{err}");
}

#[test]
fn yaml_percentiles_must_not_decrease() {
    let err = Budgets::from_yaml_str("api_endpoints:\n  GET /a:\n    p50: 80ms\n    p95: 50ms\n").unwrap_err();
    assert_eq!((err.line(), err.field()), (Some(4), Some("p95")), "{err}");
    assert!(err.to_string().contains("percentiles cannot decrease"), "{err}");
}

#[test]
fn yaml_unknown_top_level_key_and_syntax_errors() {
    let err = Budgets::from_yaml_str("api_endpoints: {}\nendpoints: {}\n").unwrap_err();
    assert_eq!(err.line(), Some(2), "{err}");
    assert!(err.to_string().contains("endpoints"), "{err}");

    let err = Budgets::from_yaml_str("api_endpoints:\n  GET /a: {p95: 10ms\n").unwrap_err();
    assert!(err.line().is_some(), "{err}");
}

#[test]
fn json_errors_name_line_route_and_field() {
    let text = "{\"api_endpoints\": {\n  \"GET /a\": {\"p95\": \"10ms\"},\n  \"GET /b\": {\"p95\": \"20ms\", \"p90\": \"1ms\"}\n}}";
    let err = Budgets::from_json_str(text).unwrap_err();
    assert_eq!((err.line(), err.route(), err.field()), (Some(3), Some("GET /b"), Some("p90")), "{err}");

    let text = "{\"api_endpoints\": {\n  \"GET /a\": {\n    \"p95\": \"10ms\",\n    \"max_payload\": \"lots\"\n  }\n}}";
    let err = Budgets::from_json_str(text).unwrap_err();
    assert_eq!((err.line(), err.route(), err.field()), (Some(4), Some("GET /a"), Some("max_payload")), "{err}");
}

#[cfg(feature = "toml")]
#[test]
fn toml_errors_name_line_route_and_field() {
    let text = "[api_endpoints]\n\"GET /a\" = { p95 = \"10ms\" }\n\"GET /b\" = { p95 = \"20ms\", p90 = \"1ms\" }\n";
    let err = Budgets::from_toml_str(text).unwrap_err();
    assert_eq!((err.line(), err.route(), err.field()), (Some(3), Some("GET /b"), Some("p90")), "{err}");

    let text = "[api_endpoints]\n\"GET /a\" = { p95 = \"10ms\" }\n\"GET /b\" = { p95 = 20 }\n";
    let err = Budgets::from_toml_str(text).unwrap_err();
    assert_eq!((err.line(), err.route(), err.field()), (Some(3), Some("GET /b"), Some("p95")), "{err}");
}

#[test]
fn from_path_picks_the_format_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let yml = dir.path().join("performance-budgets.yml");
    std::fs::write(&yml, SEEDS).unwrap();
    assert_seeds(&Budgets::from_path(&yml).unwrap());
    let txt = dir.path().join("budgets.txt");
    std::fs::write(&txt, SEEDS).unwrap();
    assert!(Budgets::from_path(&txt).unwrap_err().to_string().contains("cannot tell the format"));
    let missing = dir.path().join("missing.yml");
    let err = Budgets::from_path(&missing).unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
}
