//! Reading the encoded registry back through a real OpenMetrics parser.

#![allow(dead_code, unreachable_pub)]

use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use prometheus_client::registry::Registry;

pub type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// Encodes `registry` and parses it; panics with the text when it is not
/// valid OpenMetrics.
pub fn scrape(registry: &Registry) -> Exposition {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encoding into a String cannot fail");
    openmetrics_parser::openmetrics::parse_openmetrics(&text)
        .unwrap_or_else(|e| panic!("invalid OpenMetrics ({e:?}):\n{text}"))
}

/// The value of the sample of `family` whose labels include `labels`: a
/// gauge's or counter's value, a histogram's count.
pub fn value(exposition: &Exposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let family = exposition.families.get(family)?;
    family.iter_samples().find_map(|sample| {
        let set = sample.get_labelset().ok()?;
        if !labels.iter().all(|(name, value)| set.get_label_value(name) == Some(*value)) {
            return None;
        }
        match &sample.value {
            OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => Some(n.as_f64()),
            OpenMetricsValue::Counter(c) => Some(c.value.as_f64()),
            OpenMetricsValue::Histogram(h) => h.count.map(|c| c as f64),
            _ => None,
        }
    })
}

/// As [`value`], panicking with the family's samples when absent.
#[track_caller]
pub fn expect(exposition: &Exposition, family: &str, labels: &[(&str, &str)]) -> f64 {
    value(exposition, family, labels).unwrap_or_else(|| {
        panic!("no sample {family}{labels:?}; families: {:?}", exposition.families.keys().collect::<Vec<_>>())
    })
}
