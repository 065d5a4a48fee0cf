//! The in-memory bus's bounded buffers: backpressure loses nothing, the drop policy
//! counts every loss, and close releases a publisher waiting for room.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use cap_bus::{Bus, ErrorKind, MemoryBus, MemoryOptions, OverflowPolicy};
use futures_util::StreamExt;
use std::time::Duration;

#[tokio::test]
async fn backpressure_waits_for_room_and_loses_nothing() {
    let bus = MemoryBus::with_options(MemoryOptions::default().buffer(4));
    let mut sub = bus.subscribe("bp").await.unwrap();
    for i in 0..4u8 {
        bus.publish("bp", Bytes::from(vec![i])).await.unwrap();
    }
    assert_eq!(sub.pending(), 4);
    // The fifth publish cannot complete until the subscriber reads.
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.publish("bp", Bytes::from(vec![4])).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!publisher.is_finished(), "publisher must wait for room");
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(sub.next().await.unwrap().payload()[0]);
    }
    publisher.await.unwrap().unwrap();
    assert_eq!(got, [0, 1, 2, 3, 4]);
    let stats = bus.stats();
    assert_eq!((stats.published, stats.delivered, stats.dropped), (5, 5, 0));
    assert_eq!(sub.dropped(), 0);
}

#[tokio::test]
async fn drop_policy_counts_every_lost_message() {
    let bus = MemoryBus::with_options(
        MemoryOptions::default()
            .buffer(3)
            .overflow(OverflowPolicy::DropNewest),
    );
    let mut slow = bus.subscribe("d.>").await.unwrap();
    let mut fast = bus.subscribe("d.x").await.unwrap();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while let Some(_m) = fast.next().await {
            n += 1;
        }
        n
    });
    for i in 0..10u8 {
        bus.publish("d.x", Bytes::from(vec![i])).await.unwrap();
        tokio::task::yield_now().await;
    }
    // The slow subscriber kept the first three and lost seven, all counted.
    assert_eq!(slow.dropped(), 7);
    let stats = bus.stats();
    assert_eq!(stats.dropped, 7);
    assert_eq!(stats.published, 10);
    assert_eq!(stats.delivered + stats.dropped, 20);
    let mut kept = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(20), slow.next()).await {
        kept.push(m.payload()[0]);
    }
    assert_eq!(kept, [0, 1, 2]);
    bus.close().await.unwrap();
    assert_eq!(
        reader.await.unwrap(),
        10,
        "the fast subscriber lost nothing"
    );
}

#[tokio::test]
async fn queue_groups_prefer_a_member_with_room() {
    let bus = MemoryBus::with_options(
        MemoryOptions::default()
            .buffer(2)
            .overflow(OverflowPolicy::DropNewest),
    );
    let mut a = bus.queue_subscribe("q", "g").await.unwrap();
    let mut b = bus.queue_subscribe("q", "g").await.unwrap();
    for i in 0..4u8 {
        bus.publish("q", Bytes::from(vec![i])).await.unwrap();
    }
    assert_eq!((a.pending(), b.pending()), (2, 2));
    // Both full now: the next one is dropped and counted on the member whose turn it was.
    bus.publish("q", Bytes::from_static(&[9])).await.unwrap();
    assert_eq!(a.dropped() + b.dropped(), 1);
    assert_eq!(bus.stats().dropped, 1);
    let _ = (a.next().await, b.next().await);
}

#[tokio::test]
async fn close_releases_a_publisher_waiting_for_room() {
    let bus = MemoryBus::with_options(MemoryOptions::default().buffer(1));
    let _stuck = bus.subscribe("s").await.unwrap();
    bus.publish("s", Bytes::new()).await.unwrap();
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.publish("s", Bytes::new()).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!publisher.is_finished());
    bus.close().await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(1), publisher)
        .await
        .expect("close released the publisher")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}
