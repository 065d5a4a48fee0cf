//! Fail-over with real processes: a `cap worker echo` killed with `kill -9` in the
//! middle of a job, or a `cap scheduler` killed holding an unacknowledged submit, and
//! the work goes to a live process within 10 s (the JetStream ack wait is 5 s; live
//! workers report long jobs in progress, so those are not redelivered). A private
//! nats-server with JetStream and the shared Redis. Run by `.ci/run`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_proto::v1::{self, bus_packet::Payload};
use cap_runtime::SubmitOptions;
use common::{Cap, PrivateNats, Watch};
use std::time::{Duration, Instant};

const READY: Duration = Duration::from_secs(20);

fn running(s: &common::Seen, worker: &str) -> bool {
    s.sender_id == worker
        && matches!(&s.payload, Payload::JobProgress(p) if p.status == v1::JobStatus::Running as i32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server and a real Redis: run by .ci/run"]
async fn a_killed_workers_job_runs_on_a_live_worker_within_10_s() {
    let nats = PrivateNats::start();
    let t = common::tag();
    let (topic, a, b) = (format!("job.fo{t}"), format!("wa-{t}"), format!("wb-{t}"));
    let worker = |id: &str| {
        Cap::spawn(
            &nats.url(),
            &[
                "worker",
                "echo",
                "--topic",
                &topic,
                "--id",
                id,
                "--delay-ms",
                "3000",
            ],
        )
    };
    let mut wa = worker(&a);
    wa.wait_for_line("ready", READY);
    let bus = common::bus(&nats.url()).await;
    let client = common::client(&bus, &format!("client-{t}")).await;
    let job_id = format!("fo-{t}");
    let watch = Watch::start(&bus, &job_id).await;
    let mut handle = client
        .submit_with(
            &topic,
            &serde_json::json!({"n": 1}),
            SubmitOptions::default().direct().job_id(job_id.clone()),
        )
        .await
        .unwrap();
    watch
        .first(Duration::from_secs(10), |s| running(s, &a))
        .await
        .expect("worker A started the job");
    let wb = worker(&b);
    wb.wait_for_line("ready", READY);

    wa.kill9();
    let killed = Instant::now();
    let restarted = watch
        .first(Duration::from_secs(15), |s| running(s, &b))
        .await
        .expect("worker B got the job");
    let failover = restarted.at.duration_since(killed);
    let result = handle
        .result_within(Duration::from_secs(15))
        .await
        .unwrap()
        .clone();
    eprintln!(
        "fail-over: job of a kill -9'd worker restarted on a live one after {failover:?}, result {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(result.status, v1::JobStatus::Succeeded as i32, "{result:?}");
    assert_eq!(result.worker_id, b);
    assert!(failover < Duration::from_secs(10), "{failover:?}");
    assert_eq!(watch.starters(), [a, b]);
    let _ = cap_bus::Bus::close(&bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server and a real Redis: run by .ci/run"]
async fn a_live_workers_long_job_is_not_redelivered() {
    let nats = PrivateNats::start();
    let t = common::tag();
    let topic = format!("job.long{t}");
    // 12 s: more than two ack waits.
    let workers: Vec<Cap> = ["la", "lb"]
        .iter()
        .map(|w| {
            Cap::spawn(
                &nats.url(),
                &[
                    "worker",
                    "echo",
                    "--topic",
                    &topic,
                    "--id",
                    &format!("{w}-{t}"),
                    "--delay-ms",
                    "12000",
                ],
            )
        })
        .collect();
    for w in &workers {
        w.wait_for_line("ready", READY);
    }
    let bus = common::bus(&nats.url()).await;
    let client = common::client(&bus, &format!("client-{t}")).await;
    let job_id = format!("long-{t}");
    let watch = Watch::start(&bus, &job_id).await;
    let mut handle = client
        .submit_with(
            &topic,
            &serde_json::json!({}),
            SubmitOptions::default().direct().job_id(job_id.clone()),
        )
        .await
        .unwrap();
    let result = handle
        .result_within(Duration::from_secs(30))
        .await
        .unwrap()
        .clone();
    assert_eq!(result.status, v1::JobStatus::Succeeded as i32, "{result:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        watch.starters().len(),
        1,
        "started by {:?}",
        watch.starters()
    );
    assert_eq!(watch.results().len(), 1, "{:?}", watch.results());
    let _ = cap_bus::Bus::close(&bus).await;
}

/// The durable consumer the schedulers share for `sys.job.submit`.
async fn submit_consumer(bus: &cap_bus::NatsBus) -> async_nats::jetstream::consumer::Info {
    let js = async_nats::jetstream::new(bus.client().clone());
    let stream = js.get_stream("CAP_JOBS").await.unwrap();
    stream
        .consumer_info(cap_bus::nats::durable_name("cap-scheduler-submit"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server and a real Redis: run by .ci/run"]
async fn a_killed_schedulers_unacknowledged_submit_goes_to_a_live_one_within_10_s() {
    let nats = PrivateNats::start();
    let t = common::tag();
    let topic = format!("job.sfo{t}");
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/demo/policy.yaml");
    let worker = Cap::spawn(
        &nats.url(),
        &[
            "worker",
            "echo",
            "--topic",
            &topic,
            "--id",
            &format!("w-{t}"),
        ],
    );
    worker.wait_for_line("ready", READY);
    let scheduler =
        |id: &str| Cap::spawn(&nats.url(), &["scheduler", "--policy", policy, "--id", id]);
    let mut s1 = scheduler(&format!("s1-{t}"));
    let bus = common::bus(&nats.url()).await;
    // Started: its pull request is waiting on the submit consumer.
    let deadline = Instant::now() + READY;
    loop {
        let js = async_nats::jetstream::new(bus.client().clone());
        if let Ok(stream) = js.get_stream("CAP_JOBS").await
            && let Ok(info) = stream
                .consumer_info(cap_bus::nats::durable_name("cap-scheduler-submit"))
                .await
            && info.num_waiting > 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "scheduler 1 did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Frozen: what is delivered to it stays unacknowledged, as in a crash mid-batch.
    s1.signal("STOP");
    let client = common::client(&bus, &format!("client-{t}")).await;
    let job_id = format!("sfo-{t}");
    let mut handle = client
        .submit_with(
            &topic,
            &serde_json::json!({"x": 1}),
            SubmitOptions::default().job_id(job_id.clone()),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while submit_consumer(&bus).await.num_ack_pending != 1 {
        assert!(
            Instant::now() < deadline,
            "the submit was not delivered to scheduler 1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _s2 = scheduler(&format!("s2-{t}"));
    s1.kill9();
    let killed = Instant::now();
    let result = handle
        .result_within(Duration::from_secs(20))
        .await
        .unwrap()
        .clone();
    let failover = killed.elapsed();
    eprintln!("fail-over: submit held by a kill -9'd scheduler answered after {failover:?}");
    assert_eq!(result.status, v1::JobStatus::Succeeded as i32, "{result:?}");
    assert!(failover < Duration::from_secs(10), "{failover:?}");
    // Answered through the redelivery, not a lucky delivery to the live one: after
    // the kill, there was nothing to redeliver for at least most of an ack wait.
    assert!(failover > Duration::from_secs(1), "{failover:?}");
    let _ = cap_bus::Bus::close(&bus).await;
}
