//! Reconnection: a private nats-server (JetStream, file store) is restarted in the
//! middle of the test; subscriptions carry on and nothing stored is lost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use cap_bus::Bus;
use common::*;
use futures_util::StreamExt;
use std::time::Duration;

async fn next(
    sub: &mut (impl futures_core::Stream<Item = cap_bus::Message> + Unpin),
    secs: u64,
) -> Option<cap_bus::Message> {
    tokio::time::timeout(Duration::from_secs(secs), sub.next())
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the nats-server binary: run by .ci/run"]
async fn subscriptions_survive_a_server_restart_and_durable_jobs_are_not_lost() {
    let mut server = PrivateNats::start();
    let p = prefix();
    let bus = connect(&server.url(), Some(js_options(&p))).await;
    let core_subject = format!("{p}.sys.heartbeat");
    let pool = format!("{p}.job.echo");

    let mut observer = bus.subscribe(&core_subject).await.unwrap();
    let mut worker = bus.queue_subscribe(&pool, &pool).await.unwrap();
    bus.publish(&core_subject, Bytes::from_static(b"before"))
        .await
        .unwrap();
    bus.publish(&pool, Bytes::from_static(b"job-before"))
        .await
        .unwrap();
    assert_eq!(next(&mut observer, 5).await.unwrap().payload(), "before");
    let m = next(&mut worker, 5).await.unwrap();
    assert_eq!(m.payload(), "job-before");
    m.ack().await.unwrap();

    // A job stored but not yet acknowledged when the server goes down.
    bus.publish(&pool, Bytes::from_static(b"job-pending"))
        .await
        .unwrap();
    let pending = next(&mut worker, 5).await.unwrap();
    assert_eq!(pending.payload(), "job-pending");
    drop(pending); // never acknowledged

    server.stop();
    // Publishing to a durable subject while the server is down: retried until the
    // server is back, then stored exactly once.
    let publisher = {
        let bus = bus.clone();
        let pool = pool.clone();
        tokio::spawn(async move { bus.publish(&pool, Bytes::from_static(b"job-during")).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();

    publisher
        .await
        .unwrap()
        .expect("durable publish completes after reconnect");
    // The core subscription was re-established by the reconnect.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut got_after = false;
    while tokio::time::Instant::now() < deadline && !got_after {
        bus.publish(&core_subject, Bytes::from_static(b"after"))
            .await
            .unwrap();
        got_after = next(&mut observer, 1)
            .await
            .is_some_and(|m| m.payload() == "after");
    }
    assert!(got_after, "core subscription did not survive the restart");
    assert!(bus.stats().disconnects >= 1, "{:?}", bus.stats());

    // The durable consumer survived: the unacknowledged job comes back, the one
    // published during the outage arrives, once each.
    let mut jobs = Vec::new();
    while let Some(m) = next(&mut worker, 8).await {
        jobs.push(String::from_utf8(m.payload().to_vec()).unwrap());
        m.ack().await.unwrap();
        if jobs.len() == 2 {
            break;
        }
    }
    jobs.sort();
    assert_eq!(jobs, ["job-during", "job-pending"]);
    assert!(
        next(&mut worker, 3).await.is_none(),
        "no duplicate deliveries"
    );

    bus.close().await.unwrap();
    assert!(observer.next().await.is_none());
    assert!(worker.next().await.is_none());
}
