//! End to end over gRPC: a server on a loopback port, the typed client, health,
//! reflection, size limits, hot reload seen through ListSnapshots, retries, fail-closed
//! clients, and shutdown. Everything runs in-process; no external service.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use cap_proto::v1::PolicyCheckRequest;
use cap_safety::reload::ReloadOptions;
use cap_safety::server::{self, ServeOptions, ServerHandle};
use cap_safety::{
    Decision, DynSafetyClient, ErrorKind, GrpcClientOptions, GrpcSafetyClient, Kernel,
    KernelOptions, RULE_FAIL_CLOSED, SafetyClient, decision_of,
};
use common::req;
use std::sync::Arc;
use std::time::{Duration, Instant};

const POLICY: &str = r#"
version: e2e-1
default_tenant: acme
rules:
  - id: deny-admin
    match: { topics: ["job.admin.*"] }
    decision: deny
    reason: no admin jobs
  - id: approve-pay
    match: { topics: ["job.pay.*"] }
    decision: require_approval
  - id: sandbox
    match: { capabilities: [build] }
    decision: allow
    constraints: { sandbox: { isolated: true } }
"#;

fn loopback() -> ServeOptions {
    ServeOptions {
        listen: ([127, 0, 0, 1], 0).into(),
        reload: ReloadOptions {
            poll_interval: Some(Duration::from_millis(20)),
            sighup: false,
        },
        ..ServeOptions::default()
    }
}

async fn start(policy: &str) -> (ServerHandle, tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, policy).unwrap();
    let kernel = Kernel::from_file(&path, KernelOptions::default()).unwrap();
    let handle = server::spawn(kernel, loopback()).await.unwrap();
    (handle, dir, path)
}

async fn client(h: &ServerHandle) -> GrpcSafetyClient {
    GrpcSafetyClient::connect(GrpcClientOptions::new(h.url()))
        .await
        .unwrap()
}

#[tokio::test]
async fn check_evaluate_explain_simulate_and_list_snapshots() {
    let (h, _dir, _) = start(POLICY).await;
    let c = client(&h).await;

    let admin = req("job.admin.reset").job("j1").build();
    let r = c.check(&admin).await.unwrap();
    assert_eq!(
        (decision_of(&r), r.rule_id.as_str(), r.reason.as_str()),
        (Decision::Deny, "deny-admin", "no admin jobs")
    );
    assert!(
        r.policy_snapshot.starts_with("e2e-1@sha256:"),
        "{}",
        r.policy_snapshot
    );
    assert_eq!(c.evaluate(&admin).await.unwrap(), r);

    let pay = c
        .check(&req("job.pay.out").job("j2").build())
        .await
        .unwrap();
    assert_eq!(pay.decision, 3);
    assert!(pay.approval_required);
    assert_eq!(pay.approval_ref, "j2");

    let build = c
        .check(&req("job.b").capability("build").build())
        .await
        .unwrap();
    assert_eq!(build.decision, 5);
    assert!(build.constraints.unwrap().sandbox.unwrap().isolated);

    let e = c.explain(&admin).await.unwrap();
    assert_eq!(e.decision, r.decision);
    assert!(
        e.reason.contains("rules[0] deny-admin: MATCH"),
        "{}",
        e.reason
    );

    // Simulate: no candidate → the loaded policy.
    assert_eq!(c.simulate(&admin).await.unwrap().decision, 2);
    // YAML and JSON candidates, never touching the loaded policy.
    let mut sim = admin.clone();
    sim.effective_config = b"version: cand\nrules:\n  - id: open\n    decision: allow\n".to_vec();
    let s = c.simulate(&sim).await.unwrap();
    assert_eq!((s.decision, s.rule_id.as_str()), (1, "open"));
    assert!(
        s.policy_snapshot.starts_with("candidate:cand@sha256:"),
        "{}",
        s.policy_snapshot
    );
    sim.effective_config = br#"{"rules":[{"id":"json","decision":"throttle"}]}"#.to_vec();
    assert_eq!(c.simulate(&sim).await.unwrap().rule_id, "json");
    assert_eq!(c.check(&admin).await.unwrap().rule_id, "deny-admin");
    // An invalid candidate is INVALID_ARGUMENT with the path.
    sim.effective_config = b"rules:\n  - id: x\n    match: { nope: 1 }\n".to_vec();
    let err = c.simulate(&sim).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status);
    let msg = err.to_string();
    assert!(
        msg.contains("InvalidArgument") && msg.contains("rules[0].match.nope"),
        "{msg}"
    );

    let snaps = c.list_snapshots().await.unwrap();
    assert_eq!(snaps, vec![r.policy_snapshot.clone()]);

    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn editing_the_policy_file_shows_up_as_a_new_snapshot() {
    let (h, _dir, path) = start(POLICY).await;
    let c = client(&h).await;
    let first = c.list_snapshots().await.unwrap();
    let admin = req("job.admin.x").build();
    assert_eq!(c.check(&admin).await.unwrap().decision, 2);

    std::fs::write(
        &path,
        POLICY
            .replace("e2e-1", "e2e-2")
            .replace("decision: deny", "decision: throttle"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let snaps = loop {
        let s = c.list_snapshots().await.unwrap();
        if s.len() == 2 {
            break s;
        }
        assert!(Instant::now() < deadline, "reload not seen: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(snaps[0].starts_with("e2e-2@"), "newest first: {snaps:?}");
    assert_eq!(snaps[1], first[0]);
    let r = c.check(&admin).await.unwrap();
    assert_eq!(
        (r.decision, r.policy_snapshot.as_str()),
        (4, snaps[0].as_str())
    );

    // A broken edit keeps serving e2e-2.
    std::fs::write(&path, "rules: {").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.check(&admin).await.unwrap().policy_snapshot, snaps[0]);
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let (h, _dir, _) = start(POLICY).await;
    let channel = tonic::transport::Endpoint::from_shared(h.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", cap_safety::grpc::SERVICE_NAME] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, 1, "SERVING for {service:?}");
    }

    let mut refl = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = refl
        .server_reflection_info(futures_util::stream::iter(vec![ask]))
        .await
        .unwrap()
        .into_inner();
    let resp = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("unexpected reflection answer {resp:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.iter().any(|n| n == cap_safety::grpc::SERVICE_NAME),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_requests_are_refused() {
    let kernel = Kernel::from_text(POLICY, "mem", KernelOptions::default()).unwrap();
    let h = server::spawn(
        kernel,
        ServeOptions {
            max_message_bytes: 1024,
            ..loopback()
        },
    )
    .await
    .unwrap();
    let c = client(&h).await;
    let mut big: PolicyCheckRequest = req("job.x").build();
    big.input_content = vec![b'x'; 4096];
    let err = c.check(&big).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Status, "{err}");
    assert!(
        err.to_string().contains("OutOfRange") || err.to_string().contains("ResourceExhausted"),
        "{err}"
    );
    // A request under the limit still works on the same connection.
    assert_eq!(
        c.check(&req("job.admin.x").build()).await.unwrap().decision,
        2
    );
    h.shutdown().await.unwrap();
}

/// A loopback port with nothing listening (bound, then released).
async fn free_port() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn unreachable_kernels_are_errors_or_denials_when_failing_closed() {
    let addr = free_port().await;
    let mut o = GrpcClientOptions::new(addr.to_string());
    o.retries = 1;
    o.backoff = Duration::from_millis(5);
    let open = GrpcSafetyClient::new(o.clone()).unwrap();
    let err = open.check(&req("job.x").build()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(err.is_retryable());

    o.fail_closed = true;
    let closed = GrpcSafetyClient::new(o).unwrap();
    let r = closed.check(&req("job.x").build()).await.unwrap();
    assert_eq!(
        (decision_of(&r), r.rule_id.as_str()),
        (Decision::Deny, RULE_FAIL_CLOSED)
    );
    assert!(r.reason.contains("fail-closed"), "{}", r.reason);
}

#[tokio::test]
async fn transport_errors_are_retried_until_the_kernel_comes_up() {
    let addr = free_port().await;
    let mut o = GrpcClientOptions::new(format!("http://{addr}"));
    o.retries = 8;
    o.backoff = Duration::from_millis(50);
    let c = GrpcSafetyClient::new(o).unwrap();
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let kernel = Kernel::from_text(POLICY, "mem", KernelOptions::default()).unwrap();
        server::spawn(
            kernel,
            ServeOptions {
                listen: addr,
                ..loopback()
            },
        )
        .await
        .unwrap()
    });
    let r = c.check(&req("job.admin.x").build()).await.unwrap();
    assert_eq!(r.decision, 2);
    starter.await.unwrap().shutdown().await.unwrap();
}

#[tokio::test]
async fn slow_calls_time_out() {
    // A TCP listener that accepts and never answers: the HTTP/2 handshake stalls.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _keep = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut o = GrpcClientOptions::new(addr.to_string());
    o.timeout = Duration::from_millis(100);
    o.connect_timeout = Duration::from_millis(100);
    o.retries = 0;
    let c = GrpcSafetyClient::new(o).unwrap();
    let t0 = Instant::now();
    let err = c.check(&req("job.x").build()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.is_retryable());
    assert!(t0.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn the_embedded_kernel_and_the_remote_one_answer_alike_through_one_trait() {
    let kernel = Kernel::from_text(POLICY, "mem", KernelOptions::default()).unwrap();
    let h = server::spawn(kernel.clone(), loopback()).await.unwrap();
    let clients: Vec<Arc<dyn DynSafetyClient>> = vec![Arc::new(kernel), Arc::new(client(&h).await)];
    let reqs = [
        req("job.admin.a").job("1").build(),
        req("job.pay.b").job("2").build(),
        req("job.c").capability("BUILD").job("3").build(),
        req("job.d").job("4").build(),
        req("").job("5").build(),
    ];
    for r in &reqs {
        let local = clients[0].check(r).await.unwrap();
        let remote = clients[1].check(r).await.unwrap();
        assert_eq!(local, remote, "{r:?}");
        assert_eq!(clients[1].evaluate(r).await.unwrap(), local);
    }
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_conformance_kit_passes_embedded_and_over_grpc() {
    use cap_safety::conformance;
    let kernel = Kernel::from_text(conformance::POLICY, "c", KernelOptions::default()).unwrap();
    conformance::run(&kernel).await.unwrap();
    let h = server::spawn(kernel, loopback()).await.unwrap();
    let remote: Arc<dyn DynSafetyClient> = Arc::new(client(&h).await);
    conformance::run(&remote).await.unwrap();
    // The kit notices a kernel serving a different policy.
    let other = Kernel::from_text(POLICY, "other", KernelOptions::default()).unwrap();
    let failures = conformance::run(&other).await.unwrap_err();
    assert!(failures.len() > 3, "{failures:?}");
    h.shutdown().await.unwrap();
}

#[tokio::test]
async fn after_shutdown_calls_fail_with_transport_errors() {
    let (h, _dir, _) = start(POLICY).await;
    let url = h.url();
    let c = client(&h).await;
    assert_eq!(c.check(&req("job.x").build()).await.unwrap().decision, 1);
    h.shutdown().await.unwrap();
    let mut o = GrpcClientOptions::new(url);
    o.retries = 0;
    let fresh = GrpcSafetyClient::new(o).unwrap();
    assert_eq!(
        fresh.check(&req("job.x").build()).await.unwrap_err().kind(),
        ErrorKind::Transport
    );
}

#[test]
fn building_a_client_outside_a_runtime_is_an_error_not_a_panic() {
    let err = GrpcSafetyClient::new(GrpcClientOptions::new("127.0.0.1:1")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
}

#[test]
fn every_decision_logs_one_line_with_ids_and_no_payload() {
    use std::io::Write;
    use std::sync::Mutex;
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let sink = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let kernel = Kernel::from_text(POLICY, "mem", KernelOptions::default()).unwrap();
    tracing::subscriber::with_default(subscriber, || {
        let mut r = req("job.admin.zap").job("job-log-1").tenant("Acme").build();
        r.input_content = b"TOP-SECRET-PAYLOAD".to_vec();
        r.labels.insert("note".into(), "LABEL-VALUE".into());
        kernel.check(&r);
        kernel.check(&r);
    });
    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("policy decision"))
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    for l in &lines {
        for field in [
            "job_id=job-log-1",
            "tenant=acme",
            "topic=job.admin.zap",
            "decision=deny",
            "rule_id=deny-admin",
        ] {
            assert!(l.contains(field), "{field} missing in {l}");
        }
        assert!(
            !l.contains("TOP-SECRET-PAYLOAD") && !l.contains("LABEL-VALUE"),
            "{l}"
        );
    }
    assert!(lines[1].contains("cached=true"), "{}", lines[1]);
}

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn asking_for_tls_without_the_feature_is_a_config_error() {
    let kernel = Kernel::from_text(POLICY, "mem", KernelOptions::default()).unwrap();
    let tls = cap_safety::server::TlsFiles {
        cert: "c.pem".into(),
        key: "k.pem".into(),
        client_ca: None,
    };
    let err = server::spawn(
        kernel,
        ServeOptions {
            tls: Some(tls),
            ..loopback()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let mut o = GrpcClientOptions::new("127.0.0.1:1");
    o.tls = Some(cap_safety::ClientTls {
        ca: "ca.pem".into(),
        identity: None,
        domain: None,
    });
    assert_eq!(
        GrpcSafetyClient::new(o).unwrap_err().kind(),
        ErrorKind::Config
    );
}
