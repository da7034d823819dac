//! Prometheus alerting rules generated from the budgets.
//!
//! ```
//! use std::time::Duration;
//! use brisk_budget::{Budgets, RouteBudget};
//! use http::Method;
//!
//! let budgets = Budgets::new().route(Method::GET, "/api/blueprints", RouteBudget::new().p95(Duration::from_millis(100)));
//! let rules = budgets.alert_rules().rate_window("5m").to_yaml();
//! assert!(rules.contains("histogram_quantile(0.95"));
//! ```
//!
//! Latency budgets become `histogram_quantile` over
//! `http_server_request_duration_seconds_bucket`; since every latency threshold
//! is a bucket edge (see [`BudgetLayer::register`](crate::BudgetLayer)), the
//! comparison at the threshold is exact, not interpolated between distant
//! edges. Payload, counter and cache budgets alert on any increase of
//! `budget_violations_total` for that budget.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::budget::{Budgets, Percentile, RouteKey};

/// A builder of alerting rules; see the [module docs](crate::alerts).
#[derive(Debug, Clone)]
#[must_use]
pub struct AlertRules<'a> {
    budgets: &'a Budgets,
    group: String,
    rate_window: String,
    for_duration: String,
    severity: String,
}

impl Budgets {
    /// Prometheus alerting rules for these budgets.
    pub fn alert_rules(&self) -> AlertRules<'_> {
        AlertRules {
            budgets: self,
            group: "performance-budgets".to_owned(),
            rate_window: "5m".to_owned(),
            for_duration: "10m".to_owned(),
            severity: "warning".to_owned(),
        }
    }
}

#[derive(Serialize)]
struct RuleFile {
    groups: Vec<Group>,
}

#[derive(Serialize)]
struct Group {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Serialize)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_duration: String,
    labels: BTreeMap<&'static str, String>,
    annotations: BTreeMap<&'static str, String>,
}

/// Escapes a PromQL label value.
fn quote(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl AlertRules<'_> {
    /// The rule group's name. Default `performance-budgets`.
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.group = name.into();
        self
    }

    /// The range of `rate()`/`increase()` (a PromQL duration). Default `5m`.
    pub fn rate_window(mut self, window: impl Into<String>) -> Self {
        self.rate_window = window.into();
        self
    }

    /// How long a condition must hold before the alert fires. Default `10m`.
    pub fn for_duration(mut self, duration: impl Into<String>) -> Self {
        self.for_duration = duration.into();
        self
    }

    /// The `severity` label of the alerts. Default `warning`.
    pub fn severity(mut self, severity: impl Into<String>) -> Self {
        self.severity = severity.into();
        self
    }

    fn rule(&self, key: &RouteKey, budget: &str, alert: &str, expr: String, summary: String) -> Rule {
        let labels = BTreeMap::from([
            ("severity", self.severity.clone()),
            ("method", key.method().to_owned()),
            ("route", key.template().to_owned()),
            ("budget", budget.to_owned()),
        ]);
        let annotations = BTreeMap::from([
            ("summary", summary),
            ("description", format!("Performance budget `{budget}` of {key} is not met.")),
        ]);
        Rule { alert: alert.to_owned(), expr, for_duration: self.for_duration.clone(), labels, annotations }
    }

    fn rules(&self) -> Vec<Rule> {
        let mut rules = Vec::new();
        for (key, budget) in self.budgets.iter() {
            let selector = format!("method=\"{}\",route=\"{}\"", quote(key.method()), quote(key.template()));
            let window = &self.rate_window;
            for p in Percentile::ALL {
                let Some(limit) = budget.latency_limit(p) else { continue };
                let expr = format!(
                    "histogram_quantile({}, sum by (le) (rate(http_server_request_duration_seconds_bucket{{{selector}}}[{window}]))) > {}",
                    p.quantile(),
                    limit.as_secs_f64()
                );
                let summary = format!("{key}: {p} latency above {}", humantime::format_duration(limit));
                let alert = format!("LatencyBudget{}Exceeded", p.name().to_uppercase());
                rules.push(self.rule(key, p.name(), &alert, expr, summary));
            }
            let mut violation = |name: &str, alert: &str, summary: String| {
                let expr = format!(
                    "sum(increase(budget_violations_total{{{selector},budget=\"{}\"}}[{window}])) > 0",
                    quote(name)
                );
                rules.push(self.rule(key, name, alert, expr, summary));
            };
            if let Some(limit) = budget.max_payload_limit() {
                violation(
                    "max_payload",
                    "PayloadBudgetExceeded",
                    format!("{key}: responses larger than {limit} bytes"),
                );
            }
            for (name, limit) in budget.counter_limits() {
                violation(name, "CounterBudgetExceeded", format!("{key}: requests with {name} above {limit}"));
            }
            if budget.is_cache_required() {
                violation(
                    "cache_required",
                    "CacheBudgetExceeded",
                    format!("{key}: responses not served through the cache"),
                );
            }
        }
        rules
    }

    /// The rules as a Prometheus rule file (YAML), ready for `rule_files`.
    pub fn to_yaml(&self) -> String {
        let file = RuleFile { groups: vec![Group { name: self.group.clone(), rules: self.rules() }] };
        serde_saphyr::to_string(&file).expect("a rule file has string keys and string values only")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::Method;

    use crate::budget::RouteBudget;

    use super::*;

    #[test]
    fn rules_round_trip_through_a_yaml_parser() {
        let budgets = Budgets::new().route(
            Method::GET,
            "/api/blueprints/:id",
            RouteBudget::new()
                .p50(Duration::from_millis(30))
                .p95(Duration::from_millis(100))
                .max_payload(20_000)
                .db_queries(1)
                .cache_required(true),
        );
        let yaml = budgets.alert_rules().severity("page").to_yaml();
        let parsed: serde_json::Value = serde_saphyr::from_str(&yaml).unwrap();
        let rules = parsed["groups"][0]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 5);
        assert_eq!(
            rules[0]["expr"],
            "histogram_quantile(0.5, sum by (le) (rate(http_server_request_duration_seconds_bucket{method=\"GET\",route=\"/api/blueprints/{id}\"}[5m]))) > 0.03"
        );
        assert_eq!(rules[1]["alert"], "LatencyBudgetP95Exceeded");
        assert!(rules[1]["expr"].as_str().unwrap().ends_with("> 0.1"));
        assert_eq!(
            rules[2]["expr"],
            "sum(increase(budget_violations_total{method=\"GET\",route=\"/api/blueprints/{id}\",budget=\"max_payload\"}[5m])) > 0"
        );
        assert_eq!(rules[3]["labels"]["budget"], "db_queries");
        assert_eq!(rules[4]["labels"]["budget"], "cache_required");
        assert_eq!(rules[4]["labels"]["severity"], "page");
        assert_eq!(rules[4]["for"], "10m");
    }
}
