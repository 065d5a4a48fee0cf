//! The conformance kit against the in-memory bus, in each of its configurations and
//! behind `Arc<dyn DynBus>`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cap_bus::{
    MemoryBus, MemoryOptions, OverflowPolicy, SharedBus,
    conformance::{self, Config},
};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bus_passes_the_kit() {
    let report = conformance::run(MemoryBus::new(), &Config::unique())
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.passed.len(), 14, "{:?}", report.passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bus_with_drop_policy_and_small_buffers_passes_the_kit() {
    // 1024 slots: big enough for every burst the kit sends, so nothing is dropped.
    let bus = MemoryBus::with_options(
        MemoryOptions::default()
            .buffer(1024)
            .overflow(OverflowPolicy::DropNewest)
            .max_payload(Some(4096)),
    );
    conformance::run(bus.clone(), &Config::unique())
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(bus.stats().dropped, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn memory_bus_passes_the_kit_on_one_thread() {
    conformance::run(MemoryBus::new(), &Config::unique())
        .await
        .unwrap_or_else(|f| panic!("{f}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_dyn_bus_passes_the_kit() {
    let bus: SharedBus = Arc::new(MemoryBus::new());
    conformance::run(bus, &Config::unique())
        .await
        .unwrap_or_else(|f| panic!("{f}"));
}

#[tokio::test]
async fn a_bus_without_size_limit_skips_only_that_check() {
    let bus = MemoryBus::with_options(MemoryOptions::default().max_payload(None));
    let report = conformance::run(bus, &Config::unique())
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].0, "payload_too_large");
}
