//! Several limiters in one prometheus-client registry: one valid OpenMetrics
//! exposition, each metric family written once, each limiter's series told
//! apart by `limiter="<prefix>"`.

use std::collections::HashMap;
use std::num::NonZeroU32;

use brisk_ratelimit::clock::FakeClock;
use brisk_ratelimit::{Policy, Quota, RateLimiter};
use openmetrics_parser::openmetrics::parse_openmetrics;
use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use prometheus_client::registry::Registry;

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn limiter(prefix: &str, clock: &FakeClock, policies: Vec<Policy>) -> RateLimiter {
    let mut b = RateLimiter::builder(prefix).clock(clock.clone());
    for p in policies {
        b = b.policy(p);
    }
    b.build().unwrap()
}

fn scrape(registry: &Registry) -> (String, Exposition) {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let exposition = parse_openmetrics(&text).unwrap_or_else(|e| panic!("invalid OpenMetrics ({e:?}):\n{text}"));
    (text, exposition)
}

/// The value of the sample of `family` with these labels (by name), if any.
fn sample(exposition: &Exposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let family = exposition.families.get(family)?;
    let by_name: HashMap<&str, &str> = labels.iter().copied().collect();
    let values: Option<Vec<String>> =
        family.get_label_names().iter().map(|n| by_name.get(n.as_str()).map(|v| v.to_string())).collect();
    if family.get_label_names().len() != labels.len() {
        return None;
    }
    match &family.get_sample_by_label_values(&values?)?.value {
        OpenMetricsValue::Counter(c) => Some(c.value.as_f64()),
        OpenMetricsValue::Gauge(g) => Some(g.as_f64()),
        other => panic!("unexpected value {other:?}"),
    }
}

#[tokio::test]
async fn three_limiters_in_one_registry_make_one_family_per_metric() {
    let clock = FakeClock::new();
    let api = limiter("rl:api:", &clock, vec![Policy::new("api", Quota::per_minute(nz(2)))]);
    let deploy = limiter("rl:deploy:", &clock, vec![Policy::new("deploy", Quota::per_hour(nz(1)))]);
    let search = limiter(
        "rl:search:",
        &clock,
        vec![Policy::new("burst", Quota::per_second(nz(1))), Policy::new("daily", Quota::per_day(nz(100)))],
    );
    let mut registry = Registry::default();
    RateLimiter::register_all(&mut registry, [&api, &deploy, &search]);

    for _ in 0..3 {
        api.check("198.51.100.1").await.unwrap();
    }
    for _ in 0..2 {
        deploy.check("user-1").await.unwrap();
    }
    assert!(search.check("198.51.100.1").await.unwrap().is_allowed());
    // Refused by `burst`: `daily` is not charged, but both answer.
    assert!(!search.check("198.51.100.1").await.unwrap().is_allowed());

    let (text, exposition) = scrape(&registry);
    // Each family once (OpenMetrics forbids a repeated family).
    for family in exposition.families.keys() {
        let declared = text.lines().filter(|l| l.starts_with(&format!("# TYPE {family} "))).count();
        assert_eq!(declared, 1, "{family} declared {declared} times in\n{text}");
    }

    let decisions = |limiter: &str, policy: &str, outcome: &str| {
        sample(
            &exposition,
            "ratelimit_decisions",
            &[("limiter", limiter), ("policy", policy), ("outcome", outcome), ("source", "store")],
        )
    };
    assert_eq!(decisions("rl:api:", "api", "allowed"), Some(2.0), "{text}");
    assert_eq!(decisions("rl:api:", "api", "denied"), Some(1.0), "{text}");
    assert_eq!(decisions("rl:deploy:", "deploy", "allowed"), Some(1.0), "{text}");
    assert_eq!(decisions("rl:deploy:", "deploy", "denied"), Some(1.0), "{text}");
    assert_eq!(decisions("rl:search:", "burst", "allowed"), Some(1.0), "{text}");
    assert_eq!(decisions("rl:search:", "burst", "denied"), Some(1.0), "{text}");
    assert_eq!(decisions("rl:search:", "daily", "allowed"), Some(2.0), "{text}");
    assert_eq!(decisions("rl:search:", "daily", "denied"), None, "{text}");
    for prefix in ["rl:api:", "rl:deploy:", "rl:search:"] {
        assert_eq!(sample(&exposition, "ratelimit_fallback_active", &[("limiter", prefix)]), Some(0.0), "{text}");
        assert_eq!(sample(&exposition, "ratelimit_blocked_cache_entries", &[("limiter", prefix)]), Some(0.0));
    }
}

#[tokio::test]
async fn limiters_sharing_a_prefix_add_up_and_dropped_limiters_leave() {
    let clock = FakeClock::new();
    let policy = || vec![Policy::new("api", Quota::per_minute(nz(10)))];
    let a = limiter("rl:api:", &clock, policy());
    let b = limiter("rl:api:", &clock, policy());
    let gone = limiter("rl:gone:", &clock, policy());
    let mut registry = Registry::default();
    RateLimiter::register_all(&mut registry, [&a, &b, &gone]);
    a.check("k").await.unwrap();
    b.check("k").await.unwrap();
    gone.check("k").await.unwrap();
    drop(gone);

    let (text, exposition) = scrape(&registry);
    let labels = |limiter| [("limiter", limiter), ("policy", "api"), ("outcome", "allowed"), ("source", "store")];
    assert_eq!(sample(&exposition, "ratelimit_decisions", &labels("rl:api:")), Some(2.0), "{text}");
    assert_eq!(sample(&exposition, "ratelimit_decisions", &labels("rl:gone:")), None, "{text}");
    assert!(!text.contains("rl:gone:"), "{text}");
}

#[tokio::test]
async fn one_limiter_registers_alone() {
    let clock = FakeClock::new();
    let api = limiter("rl:api:", &clock, vec![Policy::new("api", Quota::per_minute(nz(1)))]);
    let mut registry = Registry::default();
    api.register(&mut registry);
    api.check("k").await.unwrap();
    api.check("k").await.unwrap();
    let (text, exposition) = scrape(&registry);
    let labels = |outcome| [("limiter", "rl:api:"), ("policy", "api"), ("outcome", outcome), ("source", "store")];
    assert_eq!(sample(&exposition, "ratelimit_decisions", &labels("allowed")), Some(1.0), "{text}");
    assert_eq!(sample(&exposition, "ratelimit_decisions", &labels("denied")), Some(1.0), "{text}");
}
