//! Observability with real processes: `/metrics` of a `cap safety serve`, a
//! `cap scheduler` and a `cap worker echo` after a known mix of jobs, over a private
//! nats-server and the shared Redis. Run by `.ci/run`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_proto::v1;
use cap_runtime::SubmitOptions;
use cap_runtime::metrics::sample;
use common::{Cap, PrivateNats, metrics_addr, scrape};
use std::time::Duration;

const READY: Duration = Duration::from_secs(20);

fn value(text: &str, name: &str) -> f64 {
    sample(text, name).unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server and a real Redis: run by .ci/run"]
async fn metrics_of_kernel_scheduler_and_worker_count_a_known_mix() {
    let nats = PrivateNats::start();
    let t = common::tag();
    let topic = format!("job.obs{t}");
    let denied = format!("job.obsno{t}");
    let dir = std::env::temp_dir().join(format!("cap-obs-{t}"));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: obs-1\nrules:\n  - id: no\n    match: {{ topics: [\"{denied}\"] }}\n    decision: deny\n    reason: not this one\n"
        ),
    )
    .unwrap();
    let kernel_port = common::closed_port().to_string();
    let kernel = Cap::spawn(
        &nats.url(),
        &[
            "safety",
            "serve",
            "--policy",
            policy.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{kernel_port}"),
            "--cache-ttl-ms",
            "0",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let kernel_metrics = metrics_addr(&kernel);
    let scheduler = Cap::spawn(
        &nats.url(),
        &[
            "scheduler",
            "--safety",
            &format!("http://127.0.0.1:{kernel_port}"),
            "--id",
            &format!("sched-{t}"),
            "--store-prefix",
            &format!("cap:obs:{t}:"),
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    let scheduler_metrics = metrics_addr(&scheduler);
    let worker = Cap::spawn(
        &nats.url(),
        &[
            "worker",
            "echo",
            "--topic",
            &topic,
            "--id",
            &format!("w-{t}"),
            "--fail-field",
            "fail",
            "--metrics",
            "127.0.0.1:0",
        ],
    );
    worker.wait_for_line("ready", READY);
    let worker_metrics = metrics_addr(&worker);
    // The scheduler learns the worker's topics from its handshake.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let bus = common::bus(&nats.url()).await;
    let client = common::client(&bus, &format!("client-{t}")).await;
    let mix: [(&str, serde_json::Value, v1::JobStatus); 7] = [
        (
            &topic,
            serde_json::json!({"n": 1}),
            v1::JobStatus::Succeeded,
        ),
        (
            &topic,
            serde_json::json!({"n": 2}),
            v1::JobStatus::Succeeded,
        ),
        (
            &topic,
            serde_json::json!({"n": 3}),
            v1::JobStatus::Succeeded,
        ),
        (&denied, serde_json::json!({"n": 4}), v1::JobStatus::Denied),
        (&denied, serde_json::json!({"n": 5}), v1::JobStatus::Denied),
        (
            &topic,
            serde_json::json!({"fail": "retryable"}),
            v1::JobStatus::Failed,
        ),
        (
            &topic,
            serde_json::json!({"fail": "fatal"}),
            v1::JobStatus::FailedFatal,
        ),
    ];
    for (i, (subject, input, want)) in mix.iter().enumerate() {
        let mut handle = client
            .submit_with(
                subject,
                input,
                SubmitOptions::default().job_id(format!("obs-{t}-{i}")),
            )
            .await
            .unwrap();
        let result = handle
            .result_within(Duration::from_secs(30))
            .await
            .unwrap()
            .clone();
        assert_eq!(result.status, *want as i32, "job {i}: {result:?}");
    }
    // Results reach the client as the scheduler records them; let the last ones land.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let k = scrape(&kernel_metrics);
    let s = scrape(&scheduler_metrics);
    let w = scrape(&worker_metrics);
    eprintln!("--- kernel\n{k}\n--- scheduler\n{s}\n--- worker\n{w}");

    // Scheduler: 7 submitted; 5 allowed and dispatched, the retryable one 4 times (3
    // retries, then FAILED and dead-lettered).
    assert_eq!(value(&s, "cap_scheduler_jobs_received_total"), 7.0);
    assert_eq!(value(&s, "cap_scheduler_jobs_dispatched_total"), 8.0);
    assert_eq!(value(&s, "cap_scheduler_retries_total"), 3.0);
    assert_eq!(value(&s, "cap_scheduler_dead_letters_total"), 1.0);
    for (status, n) in [
        ("SUCCEEDED", 3.0),
        ("DENIED", 2.0),
        ("FAILED", 1.0),
        ("FAILED_FATAL", 1.0),
    ] {
        assert_eq!(
            value(
                &s,
                &format!("cap_scheduler_jobs_completed_total{{status=\"{status}\"}}")
            ),
            n,
            "{status}"
        );
    }
    assert_eq!(
        value(
            &s,
            "cap_scheduler_safety_decisions_total{decision=\"deny\"}"
        ),
        2.0
    );
    let allowed = value(
        &s,
        "cap_scheduler_safety_decisions_total{decision=\"allow\"}",
    );
    assert_eq!(value(&s, "cap_scheduler_dispatch_seconds_count"), 8.0);
    assert_eq!(value(&s, "cap_scheduler_run_seconds_count"), 5.0);
    assert_eq!(value(&s, "cap_scheduler_worker_sessions"), 1.0);
    assert_eq!(value(&s, "cap_bus_reconnects_total"), 0.0);
    assert!(value(&s, "cap_packets_accepted_total") >= 7.0);

    // Kernel: every check the scheduler made, by the same decisions.
    assert_eq!(
        value(&k, "cap_kernel_decisions_total{decision=\"deny\"}"),
        2.0
    );
    assert_eq!(
        value(&k, "cap_kernel_decisions_total{decision=\"allow\"}"),
        allowed
    );
    assert_eq!(value(&k, "cap_kernel_check_seconds_count"), allowed + 2.0);
    assert!(allowed >= 5.0, "{allowed}");

    // Worker: 3 echoes, the retryable job 4 times, the fatal one once.
    let tl = format!("topic=\"{topic}\"");
    assert_eq!(
        value(&w, &format!("cap_worker_jobs_received_total{{{tl}}}")),
        8.0
    );
    for (status, n) in [
        ("SUCCEEDED", 3.0),
        ("FAILED_RETRYABLE", 4.0),
        ("FAILED_FATAL", 1.0),
    ] {
        assert_eq!(
            value(
                &w,
                &format!("cap_worker_jobs_completed_total{{{tl},status=\"{status}\"}}")
            ),
            n,
            "{status}"
        );
    }
    assert_eq!(value(&w, "cap_worker_jobs_in_flight"), 0.0);
    assert_eq!(
        value(&w, &format!("cap_worker_run_seconds_count{{{tl}}}")),
        8.0
    );
    let _ = cap_bus::Bus::close(&bus).await;
    let _ = std::fs::remove_dir_all(&dir);
}
