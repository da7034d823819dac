//! The Prometheus export, read back with an OpenMetrics parser.
#![cfg(feature = "prometheus")]

use std::collections::HashMap;

use brisk_dataloader::{DataLoader, LoaderStats, batch_fn};
use openmetrics_parser::{MetricNumber, OpenMetricsValue};
use prometheus_client::registry::Registry;

fn counter(
    exposition: &openmetrics_parser::MetricsExposition<openmetrics_parser::OpenMetricsType, OpenMetricsValue>,
    family: &str,
    loader: &str,
) -> f64 {
    let family = exposition.families.get(family).unwrap_or_else(|| panic!("no family {family}"));
    let sample = family.get_sample_by_label_values(&[loader.to_owned()]).expect("a sample for the loader");
    match &sample.value {
        OpenMetricsValue::Counter(c) => c.value.as_f64(),
        other => panic!("not a counter: {other:?}"),
    }
}

#[tokio::test]
async fn stats_of_several_loaders_are_exported_once_per_family() {
    let users_stats = LoaderStats::new("users");
    let projects_stats = LoaderStats::new("projects");
    let users = DataLoader::builder(batch_fn(|ids: Vec<u64>| async move {
        Ok::<_, std::io::Error>(ids.iter().filter(|&&id| id != 404).map(|&id| (id, id)).collect::<HashMap<_, _>>())
    }))
    .stats(users_stats.clone())
    .build();
    let projects = DataLoader::builder(batch_fn(|ids: Vec<u64>| async move {
        Ok::<_, std::io::Error>(ids.iter().map(|&id| Some(id)).collect::<Vec<_>>())
    }))
    .stats(projects_stats.clone())
    .build();

    let mut registry = Registry::default();
    LoaderStats::register_all(&mut registry, [users_stats, projects_stats]);

    let answers = users.load_many([1, 2, 2, 404]).await;
    assert!(answers[3].as_ref().unwrap_err().is_not_found());
    users.load(1).await.unwrap();
    projects.load_many(0..30).await;

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let exposition = openmetrics_parser::openmetrics::parse_openmetrics(&text).expect("valid OpenMetrics");

    assert_eq!(counter(&exposition, "brisk_dataloader_loads", "users"), 5.0);
    assert_eq!(counter(&exposition, "brisk_dataloader_dedups", "users"), 1.0);
    assert_eq!(counter(&exposition, "brisk_dataloader_cache_hits", "users"), 1.0);
    assert_eq!(counter(&exposition, "brisk_dataloader_not_found", "users"), 1.0);
    assert_eq!(counter(&exposition, "brisk_dataloader_batches", "users"), 1.0);
    assert_eq!(counter(&exposition, "brisk_dataloader_errors", "users"), 0.0);
    assert_eq!(counter(&exposition, "brisk_dataloader_loads", "projects"), 30.0);

    let sizes = exposition.families.get("brisk_dataloader_batch_size").expect("histogram");
    let projects = sizes.get_sample_by_label_values(&["projects".to_owned()]).expect("projects sample");
    let OpenMetricsValue::Histogram(h) = &projects.value else { panic!("not a histogram") };
    assert_eq!(h.count, Some(1));
    assert_eq!(h.sum.as_ref().map(MetricNumber::as_f64), Some(30.0));
    let le_20 = h.buckets.iter().find(|b| b.upper_bound == 20.0).expect("le=20");
    let le_50 = h.buckets.iter().find(|b| b.upper_bound == 50.0).expect("le=50");
    assert_eq!((le_20.count.as_f64(), le_50.count.as_f64()), (0.0, 1.0), "cumulative buckets");
}

#[tokio::test]
async fn a_loader_registers_its_own_stats() {
    let loader = DataLoader::builder(batch_fn(|ids: Vec<u64>| async move {
        Ok::<_, std::io::Error>(ids.iter().map(|&id| Some(id)).collect::<Vec<_>>())
    }))
    .stats(LoaderStats::new("users"))
    .build();
    let mut registry = Registry::default();
    loader.register(&mut registry);
    loader.load(7).await.unwrap();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("brisk_dataloader_loads_total{loader=\"users\"} 1"), "{text}");
}
