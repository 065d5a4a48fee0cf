//! JetStream behaviour of the NATS bus on the durable subjects: stored publishes,
//! delivery to a consumer that starts later, explicit ack, redelivery of what was not
//! acknowledged, shared durable consumers, and typed errors at the server's limits.
//! Each test uses a private stream and subject prefix and deletes the stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use cap_bus::{Bus, ErrorKind, Headers, NatsBus, nats::Retention};
use common::*;
use futures_util::{FutureExt, StreamExt};
use std::{collections::BTreeSet, future::Future, panic::AssertUnwindSafe, time::Duration};

/// Runs `body` with a bus on a private durable subject set, then deletes the stream
/// whether or not the body panicked.
async fn with_durable_bus<F, Fut>(body: F)
where
    F: FnOnce(NatsBus, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let p = prefix();
    let bus = connect(&nats_url(), Some(js_options(&p))).await;
    let admin = connect(&nats_url(), bus.jetstream().cloned()).await;
    let result = AssertUnwindSafe(body(bus.clone(), p)).catch_unwind().await;
    let _ = bus.close().await;
    admin.delete_stream().await.expect("delete the test stream");
    admin.close().await.unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

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
#[ignore = "needs a real NATS: run by .ci/run"]
async fn a_job_published_while_no_worker_runs_is_delivered_when_one_starts() {
    with_durable_bus(|bus, p| async move {
        let pool = format!("{p}.job.echo");
        for i in 0..3 {
            bus.publish(&pool, Bytes::from(format!("job-{i}")))
                .await
                .unwrap();
        }
        // The worker starts only now.
        let mut worker = bus.queue_subscribe(&pool, &pool).await.unwrap();
        assert!(worker.is_durable());
        for i in 0..3 {
            let msg = next(&mut worker, 5).await.expect("stored job delivered");
            assert_eq!(msg.payload(), format!("job-{i}").as_bytes());
            assert_eq!(msg.delivery_count(), 1);
            assert!(msg.ack_handle().is_durable());
            assert_eq!(msg.reply(), None, "the ack subject is not exposed as reply");
            assert!(msg.headers().get("Nats-Msg-Id").is_some());
            msg.ack().await.unwrap();
        }
        drop(worker);
        // Acknowledged: a new member of the group gets nothing.
        let mut again = bus.queue_subscribe(&pool, &pool).await.unwrap();
        assert!(next(&mut again, 2).await.is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real NATS: run by .ci/run"]
async fn an_unacknowledged_job_is_redelivered_after_a_crash() {
    with_durable_bus(|bus, p| async move {
        let submit = format!("{p}.sys.job.submit");
        bus.publish(&submit, Bytes::from_static(b"job-1"))
            .await
            .unwrap();
        // A scheduler takes the job and "crashes" before acknowledging.
        let mut first = bus.queue_subscribe(&submit, "scheduler").await.unwrap();
        let msg = next(&mut first, 5).await.expect("first delivery");
        assert_eq!(msg.delivery_count(), 1);
        drop(msg);
        drop(first);
        // Its replacement gets the job again after the ack wait (1 s here).
        let mut second = bus.queue_subscribe(&submit, "scheduler").await.unwrap();
        let again = next(&mut second, 10).await.expect("redelivery");
        assert_eq!(again.payload(), "job-1");
        assert_eq!(again.delivery_count(), 2);
        again.ack().await.unwrap();
        assert!(
            next(&mut second, 3).await.is_none(),
            "acked: no third delivery"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real NATS: run by .ci/run"]
async fn nak_and_in_progress_control_redelivery() {
    with_durable_bus(|bus, p| async move {
        let result = format!("{p}.sys.job.result");
        let mut sub = bus.queue_subscribe(&result, "results").await.unwrap();
        bus.publish(&result, Bytes::from_static(b"r"))
            .await
            .unwrap();
        let m = next(&mut sub, 5).await.unwrap();
        m.nak(None).await.unwrap();
        let m2 = next(&mut sub, 5).await.expect("nak redelivers at once");
        assert_eq!(m2.delivery_count(), 2);
        // Keep it alive past the ack wait with progress, then ack: no redelivery.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            m2.in_progress().await.unwrap();
        }
        m2.ack().await.unwrap();
        assert!(next(&mut sub, 2).await.is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real NATS: run by .ci/run"]
async fn members_of_a_durable_group_share_the_work_exactly_once() {
    with_durable_bus(|bus, p| async move {
        let pool = format!("{p}.job.batch");
        let mut members = Vec::new();
        for _ in 0..2 {
            let mut sub = bus.queue_subscribe(&pool, &pool).await.unwrap();
            members.push(tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(m) = next(&mut sub, 3).await {
                    got.push(String::from_utf8(m.payload().to_vec()).unwrap());
                    m.ack().await.unwrap();
                }
                got
            }));
        }
        // An observer on the same subject sees everything through core NATS.
        let mut observer = bus.subscribe(&pool).await.unwrap();
        assert!(!observer.is_durable());
        let n = 200;
        for i in 0..n {
            bus.publish(&pool, Bytes::from(i.to_string()))
                .await
                .unwrap();
        }
        let mut counts = Vec::new();
        let mut all = BTreeSet::new();
        for m in members {
            let got = m.await.unwrap();
            counts.push(got.len());
            all.extend(got);
        }
        assert_eq!(counts.iter().sum::<usize>(), n, "{counts:?}");
        assert_eq!(all.len(), n);
        assert!(
            counts.iter().all(|&c| c > 0),
            "both members worked: {counts:?}"
        );
        let mut seen = 0;
        while next(&mut observer, 1).await.is_some() {
            seen += 1;
        }
        assert_eq!(seen, n);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real NATS: run by .ci/run"]
async fn payload_over_the_server_max_is_a_typed_error_on_both_paths() {
    with_durable_bus(|bus, p| async move {
        let max = bus.max_payload().unwrap();
        assert_eq!(max, bus.client().server_info().max_payload);
        let big = Bytes::from(vec![0u8; max + 1]);
        for subject in [format!("{p}.core.big"), format!("{p}.job.big")] {
            let err = bus.publish(&subject, big.clone()).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::PayloadTooLarge, "{subject}: {err}");
            assert_eq!(err.code(), cap_proto::ErrorCode::TRANSPORT_PUBLISH_FAILED);
        }
        let h = Headers::new().with("Pad", "x").unwrap();
        let err = bus
            .publish_with_headers(&format!("{p}.core.big"), h, Bytes::from(vec![0u8; max]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real NATS: run by .ci/run"]
async fn an_existing_stream_with_other_retention_is_a_config_error() {
    with_durable_bus(|bus, _p| async move {
        let mut js = bus.jetstream().cloned().unwrap();
        js = js.retention(Retention::Limits);
        let mut opts = cap_bus::NatsOptions::new(&nats_url());
        opts.jetstream = Some(js);
        let err = NatsBus::connect(opts).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real NATS: run by .ci/run"]
async fn a_durable_group_with_another_filter_is_refused() {
    with_durable_bus(|bus, p| async move {
        let _a = bus
            .queue_subscribe(&format!("{p}.job.a"), "grp")
            .await
            .unwrap();
        let err = bus
            .queue_subscribe(&format!("{p}.job.b"), "grp")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    })
    .await;
}
