//! The custom transport passes the same contract as the built-in buses.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cap_bus::conformance::{self, Config};
use custom_transport::BroadcastBus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_bus_passes_the_conformance_kit() {
    let bus = BroadcastBus::new(8192);
    let report = conformance::run(bus.clone(), &Config::unique())
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(bus.lagged(), 0, "nothing was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_subscriber_is_counted() {
    use cap_bus::Bus;
    let bus = BroadcastBus::new(4);
    let mut slow = bus.subscribe("x").await.unwrap();
    for i in 0..10u8 {
        bus.publish("x", bytes::Bytes::from(vec![i])).await.unwrap();
    }
    use futures_util::StreamExt;
    // The four newest survive; six were lost and counted.
    assert_eq!(slow.next().await.unwrap().payload()[0], 6);
    assert_eq!(bus.lagged(), 6);
}
