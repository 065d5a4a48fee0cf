//! The fail-over time of durable consumers: the default ack wait is short (5 s), a
//! consumer made earlier with a longer one is brought to the configured value, and a
//! holder that reports its delivery in progress keeps it past the ack wait while one
//! that stops reporting loses it to another member. Private stream per test, deleted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use cap_bus::nats::{DEFAULT_ACK_WAIT, durable_name};
use cap_bus::{Bus, NatsBus};
use common::*;
use futures_util::StreamExt;
use std::time::{Duration, Instant};

async fn next(
    sub: &mut (impl futures_core::Stream<Item = cap_bus::Message> + Unpin),
    within: Duration,
) -> Option<cap_bus::Message> {
    tokio::time::timeout(within, sub.next())
        .await
        .ok()
        .flatten()
}

async fn consumer_ack_wait(bus: &NatsBus, queue: &str) -> Duration {
    let js = async_nats::jetstream::new(bus.client().clone());
    let stream_name = bus.jetstream().unwrap().stream.clone();
    let stream = js.get_stream(&stream_name).await.unwrap();
    let info = stream
        .consumer_info(durable_name(queue))
        .await
        .expect("consumer info");
    info.config.ack_wait
}

#[test]
fn the_default_ack_wait_is_five_seconds() {
    assert_eq!(DEFAULT_ACK_WAIT, Duration::from_secs(5));
    assert_eq!(
        cap_bus::nats::JetStreamOptions::default().ack_wait,
        DEFAULT_ACK_WAIT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real NATS: run by .ci/run"]
async fn a_consumer_made_with_a_longer_ack_wait_is_updated() {
    let p = prefix();
    let old = js_options(&p).ack_wait(Duration::from_secs(30));
    let pool = format!("{p}.job.echo");
    let before = connect(&nats_url(), Some(old.clone())).await;
    let sub = before.queue_subscribe(&pool, &pool).await.unwrap();
    assert_eq!(
        consumer_ack_wait(&before, &pool).await,
        Duration::from_secs(30)
    );
    drop(sub);
    let after = connect(&nats_url(), Some(old.ack_wait(Duration::from_secs(2)))).await;
    let sub = after.queue_subscribe(&pool, &pool).await.unwrap();
    let now = consumer_ack_wait(&after, &pool).await;
    drop(sub);
    after.delete_stream().await.unwrap();
    let _ = before.close().await;
    let _ = after.close().await;
    assert_eq!(now, Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real NATS: run by .ci/run"]
async fn in_progress_reports_keep_a_delivery_and_silence_loses_it() {
    let p = prefix();
    // ack wait 1 s (js_options).
    let bus = connect(&nats_url(), Some(js_options(&p))).await;
    let pool = format!("{p}.job.long");
    let mut holder = bus.queue_subscribe(&pool, &pool).await.unwrap();
    bus.publish(&pool, Bytes::from_static(b"job-1"))
        .await
        .unwrap();
    let msg = next(&mut holder, Duration::from_secs(5))
        .await
        .expect("delivered");
    let mut other = bus.queue_subscribe(&pool, &pool).await.unwrap();
    // Reported in progress every 300 ms for 3 s (three ack waits): nobody else gets it.
    let until = Instant::now() + Duration::from_secs(3);
    let mut stolen = None;
    while Instant::now() < until {
        msg.in_progress().await.unwrap();
        if let Some(m) = next(&mut other, Duration::from_millis(300)).await {
            stolen = Some(m);
            break;
        }
    }
    // Then silence, as from a killed process (its subscription gone): another member
    // gets it after the ack wait.
    drop(holder);
    let silent = Instant::now();
    let redelivered = match stolen {
        Some(_) => None,
        None => next(&mut other, Duration::from_secs(5)).await,
    };
    let waited = silent.elapsed();
    let _ = bus.delete_stream().await;
    let _ = bus.close().await;
    assert!(stolen.is_none(), "redelivered while reported in progress");
    let m = redelivered.expect("redelivered once the reports stopped");
    assert_eq!(m.payload(), "job-1");
    assert!(m.delivery_count() >= 2, "{}", m.delivery_count());
    assert!(waited < Duration::from_millis(2500), "{waited:?}");
}
