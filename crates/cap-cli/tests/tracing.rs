//! One job followed across three `cap` processes (`cap submit`, `cap scheduler`,
//! `cap worker echo`) over a private nats-server and the shared Redis: every packet about
//! it carries the same W3C trace id in its `traceparent` header, and the spans the
//! processes export over OTLP (to a receiver in this test) form one trace whose parent
//! links run client → scheduler → worker → client. Run by `.ci/run`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_runtime::trace_context::TraceContext;
use common::{Cap, PrivateNats};
use futures_util::StreamExt;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const READY: Duration = Duration::from_secs(20);

/// A packet seen on the bus: its subject, its `traceparent` header, the packet.
type Seen = (String, Option<String>, cap_proto::v1::BusPacket);

/// The spans received, with the service that sent them.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    spans.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn receiver() -> (Receiver, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = Receiver::default();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (receiver, format!("http://{addr}"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server and a real Redis: run by .ci/run"]
async fn one_job_is_one_w3c_trace_across_three_processes() {
    let nats = PrivateNats::start();
    let t = common::tag();
    let topic = format!("job.tr{t}");
    let (spans, endpoint) = receiver().await;
    let dir = std::env::temp_dir().join(format!("cap-trace-{t}"));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, "version: 1\nrules: []\n").unwrap();
    let env = |service: &'static str| {
        [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
            ("OTEL_SERVICE_NAME", service.to_owned()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ]
    };
    let spawn = |service: &'static str, args: &[&str]| {
        let env = env(service);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Cap::spawn_with(&nats.url(), &common::redis_url(), &env, args)
    };

    // Every packet on the job's subjects, with its headers.
    let raw = async_nats::connect(nats.url()).await.unwrap();
    let mut subs = Vec::new();
    for s in ["sys.job.>", "job.>", "worker.*.jobs"] {
        subs.push(raw.subscribe(s).await.unwrap());
    }
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = seen.clone();
    tokio::spawn(async move {
        let mut all = futures_util::stream::select_all(subs);
        while let Some(m) = all.next().await {
            let Ok(p) = cap_proto::packet::decode(&m.payload, 1 << 20) else {
                continue;
            };
            let tp = m
                .headers
                .as_ref()
                .and_then(|h| h.get("traceparent"))
                .map(|v| v.as_str().to_owned());
            sink.lock().unwrap().push((m.subject.to_string(), tp, p));
        }
    });

    let scheduler = spawn(
        "cap-scheduler",
        &[
            "scheduler",
            "--policy",
            policy.to_str().unwrap(),
            "--id",
            &format!("sched-{t}"),
            "--store-prefix",
            &format!("cap:trace:{t}:"),
        ],
    );
    let worker = spawn(
        "cap-worker",
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
    tokio::time::sleep(Duration::from_millis(700)).await;
    let client = spawn(
        "cap-client",
        &[
            "submit",
            "--topic",
            &topic,
            "--input",
            "{\"n\":1}",
            "--wait",
            "--id",
            &format!("c-{t}"),
        ],
    );
    client.wait_for_line("SUCCEEDED", READY);
    let line = client.stdout.lock().unwrap()[0].clone();
    let out: serde_json::Value = serde_json::from_str(&line).unwrap();
    let job_id = out["job_id"].as_str().unwrap().to_owned();
    let trace_id = out["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(trace_id.len(), 32, "{trace_id}");

    // Every packet about the job: submit, dispatch, progress, result.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let packets: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, p)| p.job_id() == Some(job_id.as_str()))
        .cloned()
        .collect();
    let subjects: Vec<&str> = packets.iter().map(|(s, _, _)| s.as_str()).collect();
    assert!(subjects.contains(&"sys.job.submit"), "{subjects:?}");
    assert!(subjects.contains(&topic.as_str()), "{subjects:?}");
    assert!(subjects.contains(&"sys.job.result"), "{subjects:?}");
    let mut parents = HashMap::new();
    for (subject, tp, p) in &packets {
        let tp = tp
            .as_deref()
            .unwrap_or_else(|| panic!("{subject}: no traceparent"));
        let ctx = TraceContext::parse(tp, None).unwrap();
        assert_eq!(ctx.trace_id_hex(), trace_id, "{subject}");
        assert_eq!(p.trace_id, trace_id, "{subject}");
        parents.insert(subject.clone(), hex(&ctx.span_id));
    }

    // A job its client does not sample: the scheduler and the worker sample every trace
    // of their own, but follow the job's decision, so every packet about it says "not
    // sampled" and no process makes a span of it (checked below, once all have flushed).
    let unsampled = {
        let mut env = env("cap-client").to_vec();
        env.push(("OTEL_TRACES_SAMPLER", "parentbased_always_off".to_owned()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let id = format!("c2-{t}");
        let args = [
            "submit",
            "--topic",
            &topic,
            "--input",
            "{\"n\":2}",
            "--wait",
            "--id",
            &id,
        ];
        Cap::spawn_with(&nats.url(), &common::redis_url(), &env, &args)
    };
    unsampled.wait_for_line("SUCCEEDED", READY);
    let line = unsampled.stdout.lock().unwrap()[0].clone();
    let out: serde_json::Value = serde_json::from_str(&line).unwrap();
    let job2 = out["job_id"].as_str().unwrap().to_owned();
    let trace2 = out["trace_id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let packets: Vec<_> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, p)| p.job_id() == Some(job2.as_str()))
        .cloned()
        .collect();
    let subjects: Vec<&str> = packets.iter().map(|(s, _, _)| s.as_str()).collect();
    for s in ["sys.job.submit", topic.as_str(), "sys.job.result"] {
        assert!(subjects.contains(&s), "{s} in {subjects:?}");
    }
    for (subject, tp, _) in &packets {
        let ctx = TraceContext::parse(tp.as_deref().unwrap_or_default(), None)
            .unwrap_or_else(|| panic!("{subject}: no traceparent"));
        assert_eq!(ctx.trace_id_hex(), trace2, "{subject}");
        assert!(!ctx.sampled, "{subject}: flagged sampled");
    }

    // The spans: stop the services so they flush, then wait for all six hops.
    scheduler.signal("TERM");
    worker.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    let ours = loop {
        let ours: Vec<(String, Span)> = spans
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| hex(&s.trace_id) == trace_id)
            .cloned()
            .collect();
        if ours.len() >= 6 || Instant::now() > deadline {
            break ours;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let by_name = |service: &str, name: &str| {
        ours.iter()
            .find(|(sv, s)| sv.contains(service) && s.name == name)
            .map(|(_, s)| s.clone())
            .unwrap_or_else(|| {
                let have: Vec<_> = ours.iter().map(|(sv, s)| (sv, &s.name)).collect();
                panic!("no {name} span from {service}; have {have:?}")
            })
    };
    let submit = by_name("cap-client", "submit");
    let check = by_name("cap-scheduler", "policy_check");
    let dispatch = by_name("cap-scheduler", "dispatch");
    let handle = by_name("cap-worker", "handle");
    let client_result = by_name("cap-client", "result");
    let sched_result = by_name("cap-scheduler", "result");
    // One trace: the submit is its root, every other span's parent is a span of it.
    assert!(submit.parent_span_id.is_empty(), "the submit is the root");
    let ids: Vec<Vec<u8>> = ours.iter().map(|(_, s)| s.span_id.clone()).collect();
    for (_, s) in &ours {
        assert!(
            s.parent_span_id.is_empty() == (s.span_id == submit.span_id),
            "{}: a parent outside the trace",
            s.name
        );
        assert!(s.parent_span_id.is_empty() || ids.contains(&s.parent_span_id));
    }
    // Every hop's span names the job and its trace id, once.
    for s in [
        &submit,
        &check,
        &dispatch,
        &handle,
        &client_result,
        &sched_result,
    ] {
        let text = |key: &str| -> Vec<String> {
            s.attributes
                .iter()
                .filter(|kv| kv.key == key)
                .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(v) => {
                        Some(v.clone())
                    }
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            text("trace_id"),
            std::slice::from_ref(&trace_id),
            "{}",
            s.name
        );
        assert_eq!(text("job_id"), std::slice::from_ref(&job_id), "{}", s.name);
    }
    // The links follow the packets: submit → (check, dispatch) → handle → results.
    assert_eq!(check.parent_span_id, submit.span_id);
    assert_eq!(dispatch.parent_span_id, submit.span_id);
    assert_eq!(handle.parent_span_id, dispatch.span_id);
    assert_eq!(client_result.parent_span_id, handle.span_id);
    assert_eq!(sched_result.parent_span_id, handle.span_id);
    // And the headers name those spans.
    assert_eq!(parents["sys.job.submit"], hex(&submit.span_id));
    assert_eq!(parents[&topic], hex(&dispatch.span_id));
    assert_eq!(parents["sys.job.result"], hex(&handle.span_id));
    // Nothing of the unsampled job's trace.
    let leaked: Vec<String> = spans
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s)| hex(&s.trace_id) == trace2)
        .map(|(sv, s)| format!("{sv}/{}", s.name))
        .collect();
    assert!(leaked.is_empty(), "spans of an unsampled job: {leaked:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
