//! The integration suite on a real Redis Cluster of three masters: every
//! multi-key script keeps its keys in one slot, clean-up scans every master.

#![cfg(feature = "redis")]

mod suite;

use suite::Backend;

async fn backend() -> Option<(brisk_testkit::RedisCluster, Backend)> {
    match brisk_testkit::redis_cluster().await {
        Ok(c) => {
            let b = Backend::Cluster(c.urls().to_vec());
            Some((c, b))
        }
        Err(e) => {
            brisk_testkit::skip_or_fail(&e);
            None
        }
    }
}

macro_rules! suite_test {
    ($name:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some((_cluster, b)) = backend().await else { return };
            suite::$name(&b).await;
        }
    };
}

suite_test!(l2_hit_fills_l1_and_costs_one_command);
suite_test!(garbage_in_l2_is_a_miss_deleted_and_counted);
suite_test!(lease_runs_the_loader_once_across_four_caches);
suite_test!(a_fill_in_flight_during_a_remote_invalidation_is_fenced);
suite_test!(invalidations_reach_the_other_l1_within_100ms);
suite_test!(a_set_replaces_the_value_in_every_l1);
suite_test!(losing_the_bus_flushes_l1);
suite_test!(pattern_invalidation_is_o1_and_cleanup_removes_only_matches);
suite_test!(clear_empties_every_instance);
