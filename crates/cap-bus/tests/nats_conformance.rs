//! The conformance kit against the real NATS server (core only, and with JetStream on
//! for a private durable subject set).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cap_bus::{Bus, conformance};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real NATS: run by .ci/run"]
async fn nats_core_passes_the_kit() {
    let bus = connect(&nats_url(), None).await;
    let report = conformance::run(bus, &conformance::Config::new(prefix()))
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real NATS: run by .ci/run"]
async fn nats_with_jetstream_passes_the_kit_on_core_subjects() {
    let p = prefix();
    let js = js_options(&p);
    let bus = connect(&nats_url(), Some(js)).await;
    let admin = bus.clone();
    assert!(bus.jetstream().is_some());
    let result = conformance::run(bus, &conformance::Config::new(format!("{p}.core"))).await;
    // The kit closed `bus`; a second connection removes the private stream.
    let cleanup = connect(&nats_url(), admin.jetstream().cloned()).await;
    cleanup.delete_stream().await.unwrap();
    cleanup.close().await.unwrap();
    result.unwrap_or_else(|f| panic!("{f}"));
}
