//! In-memory bus behaviour beyond the conformance kit: counters, unsubscribe, the
//! lifetime of streams, and the object-safe companion trait.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use cap_bus::{Bus, DynBus, ErrorKind, MemoryBus, MemoryOptions, SharedBus};
use futures_util::StreamExt;
use std::{sync::Arc, time::Duration};

#[tokio::test]
async fn stats_track_subscriptions_and_traffic() {
    let bus = MemoryBus::new();
    let a = bus.subscribe("s.*").await.unwrap();
    let b = bus.queue_subscribe("s.x", "g").await.unwrap();
    let c = bus.queue_subscribe("s.x", "g").await.unwrap();
    assert_eq!(bus.stats().subscriptions, 3);
    bus.publish("s.x", Bytes::from_static(b"1")).await.unwrap();
    bus.publish("other", Bytes::from_static(b"2"))
        .await
        .unwrap();
    let s = bus.stats();
    assert_eq!((s.published, s.delivered, s.dropped), (2, 2, 0));
    drop((a, b));
    assert_eq!(bus.stats().subscriptions, 1);
    drop(c);
    assert_eq!(bus.stats().subscriptions, 0);
    assert!(format!("{bus:?}").contains("MemoryBus"));
}

#[tokio::test]
async fn streams_end_when_every_bus_handle_is_gone() {
    let bus = MemoryBus::new();
    let mut sub = bus.subscribe("x").await.unwrap();
    let clone = bus.clone();
    bus.publish("x", Bytes::from_static(b"last")).await.unwrap();
    drop(bus);
    drop(clone);
    assert_eq!(sub.next().await.unwrap().payload(), "last");
    assert!(sub.next().await.is_none());
}

#[tokio::test]
async fn separate_buses_do_not_share_traffic() {
    let (a, b) = (MemoryBus::new(), MemoryBus::new());
    let mut sa = a.subscribe(">").await.unwrap();
    b.publish("x", Bytes::new()).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(20), sa.next())
            .await
            .is_err()
    );
    let err = b
        .request("x", Bytes::new(), Duration::from_millis(10))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NoResponders);
}

#[tokio::test]
async fn only_the_first_reply_counts() {
    let bus = MemoryBus::new();
    let mut s1 = bus.subscribe("svc").await.unwrap();
    let mut s2 = bus.subscribe("svc").await.unwrap();
    let responder = {
        let bus = bus.clone();
        tokio::spawn(async move {
            let (m1, m2) = (s1.next().await.unwrap(), s2.next().await.unwrap());
            bus.publish(m1.reply().unwrap(), Bytes::from_static(b"one"))
                .await
                .unwrap();
            // The requester took its reply: the second one goes nowhere, without blocking.
            bus.publish(m2.reply().unwrap(), Bytes::from_static(b"two"))
                .await
                .unwrap();
        })
    };
    let reply = bus
        .request("svc", Bytes::new(), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(reply.payload(), "one");
    tokio::time::timeout(Duration::from_secs(1), responder)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn options_are_kept_and_buffer_is_at_least_one() {
    let bus = MemoryBus::with_options(MemoryOptions::default().buffer(0));
    assert_eq!(bus.options().buffer, 1);
    assert_eq!(
        bus.max_payload(),
        Some(cap_bus::memory::DEFAULT_MAX_PAYLOAD)
    );
}

/// Generic code written against `Bus` runs unchanged on a `SharedBus`.
async fn relay<B: Bus>(bus: &B) -> Bytes {
    let mut sub = bus.subscribe("relay").await.unwrap();
    bus.publish("relay", Bytes::from_static(b"via generic"))
        .await
        .unwrap();
    sub.next().await.unwrap().into_payload()
}

#[tokio::test]
async fn dyn_bus_is_object_safe_and_a_bus_itself() {
    let concrete = MemoryBus::new();
    let shared: SharedBus = Arc::new(concrete.clone());
    let as_dyn: &dyn DynBus = &*shared;
    assert_eq!(as_dyn.dyn_max_payload(), concrete.max_payload());
    assert_eq!(relay(&shared).await, "via generic");
    assert_eq!(relay(&concrete).await, "via generic");
    let mut sub = as_dyn.dyn_subscribe("d").await.unwrap();
    as_dyn
        .dyn_publish("d", cap_bus::Headers::new(), Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(sub.next().await.unwrap().payload(), "x");
    as_dyn.dyn_close().await.unwrap();
    assert!(concrete.is_closed() && as_dyn.dyn_is_closed());
}
