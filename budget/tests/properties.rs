//! Budget files: arbitrary input never panics; generated files read back exactly.

use std::time::Duration;

use brisk_budget::{Budgets, Percentile};
use http::Method;
use proptest::prelude::*;

proptest! {
    #[test]
    fn arbitrary_text_is_an_error_or_budgets_never_a_panic(text in ".{0,300}") {
        let _ = Budgets::from_yaml_str(&text);
        let _ = Budgets::from_json_str(&text);
        #[cfg(feature = "toml")]
        let _ = Budgets::from_toml_str(&text);
    }

    #[test]
    fn arbitrary_entries_under_api_endpoints_never_panic(key in "[A-Za-z /:{}_-]{0,30}", value in "[a-z0-9: {},.]{0,40}") {
        let _ = Budgets::from_yaml_str(&format!("api_endpoints:\n  {key}: {value}\n"));
    }

    #[test]
    fn generated_files_read_back(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]),
        segments in prop::collection::vec(("[a-z]{1,8}", any::<bool>()), 1..5),
        p95_ms in 1u64..100_000,
        size in 0u64..1_000_000,
        binary in any::<bool>(),
        queries in 0u64..1000,
        cached in any::<bool>(),
    ) {
        let colon: String = segments.iter().map(|(s, p)| if *p { format!("/:{s}") } else { format!("/{s}") }).collect();
        let braces: String = segments.iter().map(|(s, p)| if *p { format!("/{{{s}}}") } else { format!("/{s}") }).collect();
        let unit = if binary { "KiB" } else { "KB" };
        let yaml = format!(
            "api_endpoints:\n  {method} {colon}: {{p95: {p95_ms}ms, max_payload: {size}{unit}, db_queries: {queries}, cache_required: {cached}}}\n"
        );
        let budgets = Budgets::from_yaml_str(&yaml).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let budget = budgets.get(&method, &braces).ok_or_else(|| TestCaseError::fail(format!("{braces} missing")))?;
        prop_assert_eq!(budget.latency_limit(Percentile::P95), Some(Duration::from_millis(p95_ms)));
        prop_assert_eq!(budget.max_payload_limit(), Some(size * if binary { 1024 } else { 1000 }));
        prop_assert_eq!(budget.counter_limits().collect::<Vec<_>>(), vec![("db_queries", queries)]);
        prop_assert_eq!(budget.is_cache_required(), cached);
    }
}
