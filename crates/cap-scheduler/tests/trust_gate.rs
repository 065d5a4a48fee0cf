//! The enforcement point: which worker packets pass in `off`, `warn` and `enforce`,
//! the scheduler's own signed packets, session lookups (revocation, expiry, a store that
//! is down) and the alert naming a spoofing sender.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod trust_support;

use cap_bus::{Bus, MemoryBus};
use cap_proto::v1::{self, BusPacket, bus_packet::Payload};
use cap_proto::{Timestamp, subject};
use cap_runtime::packets::{PacketConfig, Packets};
use cap_scheduler::trust::{Decision, Gate, Violation, WorkerTrustMode};
use cap_sign::PrivateKey;
use futures_util::StreamExt;
use std::time::{Duration, SystemTime};
use trust_support::*;

fn heartbeat(sender: &str, worker: &str, token: &str) -> BusPacket {
    let mut p = BusPacket::new(
        "t",
        sender,
        cap_proto::packet::timestamp(SystemTime::now()),
        v1::Heartbeat {
            worker_id: worker.into(),
            ..Default::default()
        },
    );
    p.auth_token = token.into();
    p
}

fn raw(p: &BusPacket) -> Vec<u8> {
    cap_proto::packet::encode(p)
}

async fn check(gate: &Gate, p: &BusPacket) -> Decision {
    gate.check(&raw(p), p, SystemTime::now()).await
}

#[tokio::test]
async fn enforce_accepts_only_live_sessions_of_the_sender() {
    let f = Fixture::new();
    let now = SystemTime::now();
    let token = f.session(now).await.token.to_string();
    let gate = Gate::new(WorkerTrustMode::Enforce, f.server.clone()).cache_ttl(Duration::ZERO);

    assert_eq!(
        check(&gate, &heartbeat("w-1", "w-1", &token)).await,
        Decision::Accept
    );
    assert_eq!(
        check(&gate, &heartbeat("w-1", "w-1", "")).await,
        Decision::Reject(Violation::MissingSession)
    );
    assert_eq!(
        check(&gate, &heartbeat("w-1", "w-1", "cap-ws.forged")).await,
        Decision::Reject(Violation::UnknownSession)
    );
    // A stolen token used under another sender id.
    assert_eq!(
        check(&gate, &heartbeat("w-2", "w-2", &token)).await,
        Decision::Reject(Violation::SenderMismatch)
    );
    // A session holder speaking for another worker.
    assert_eq!(
        check(&gate, &heartbeat("w-1", "w-2", &token)).await,
        Decision::Reject(Violation::IdentityMismatch)
    );
    // Handshakes, results and progress are gated too; requests and cancels are not.
    let gated = [
        Payload::Handshake(capability("w-1")),
        Payload::JobResult(v1::JobResult {
            job_id: "j".into(),
            worker_id: "w-1".into(),
            status: 5,
            ..Default::default()
        }),
        Payload::JobProgress(v1::JobProgress {
            job_id: "j".into(),
            ..Default::default()
        }),
    ];
    for payload in gated {
        let mut p = BusPacket::new("t", "w-1", Timestamp::default(), payload);
        assert_eq!(
            check(&gate, &p).await,
            Decision::Reject(Violation::MissingSession)
        );
        p.auth_token = token.clone();
        assert_eq!(check(&gate, &p).await, Decision::Accept);
    }
    for payload in [
        Payload::JobRequest(v1::JobRequest::default()),
        Payload::JobCancel(v1::JobCancel::default()),
    ] {
        let p = BusPacket::new("t", "client", Timestamp::default(), payload);
        assert_eq!(check(&gate, &p).await, Decision::Accept);
    }
    // Revoked: refused (no cache here).
    f.server.revoke_worker("w-1").await.unwrap();
    assert_eq!(
        check(&gate, &heartbeat("w-1", "w-1", &token)).await,
        Decision::Reject(Violation::UnknownSession)
    );
    // The store is down: fail closed.
    let token = f.session(now).await.token.to_string();
    f.store.set_unavailable(true);
    assert_eq!(
        check(&gate, &heartbeat("w-1", "w-1", &token)).await,
        Decision::Reject(Violation::StoreUnavailable)
    );
    let stats = gate.stats();
    assert_eq!(stats.accepted, 4, "requests and cancels are not counted");
    assert_eq!(stats.rejected, 9);
    assert!(stats.by_violation.contains(&("missing_session", 4)));
}

#[tokio::test]
async fn the_cache_bounds_how_long_a_revoked_session_is_still_accepted() {
    let f = Fixture::new();
    let token = f.session(SystemTime::now()).await.token.to_string();
    let gate =
        Gate::new(WorkerTrustMode::Enforce, f.server.clone()).cache_ttl(Duration::from_millis(200));
    let hb = heartbeat("w-1", "w-1", &token);
    assert_eq!(check(&gate, &hb).await, Decision::Accept);
    f.server.revoke_worker("w-1").await.unwrap();
    assert_eq!(check(&gate, &hb).await, Decision::Accept, "cached");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        check(&gate, &hb).await,
        Decision::Reject(Violation::UnknownSession)
    );
    // clear_cache applies a revocation at once.
    let token = f.session(SystemTime::now()).await.token.to_string();
    let hb = heartbeat("w-1", "w-1", &token);
    assert_eq!(check(&gate, &hb).await, Decision::Accept);
    f.server.revoke_worker("w-1").await.unwrap();
    gate.clear_cache();
    assert_eq!(
        check(&gate, &hb).await,
        Decision::Reject(Violation::UnknownSession)
    );
    // An expired session is refused even from the cache.
    let late = SystemTime::now() + Duration::from_secs(16 * 60);
    let token = f.session(SystemTime::now()).await.token.to_string();
    let hb = heartbeat("w-1", "w-1", &token);
    assert_eq!(check(&gate, &hb).await, Decision::Accept);
    assert_eq!(
        gate.check(&raw(&hb), &hb, late).await,
        Decision::Reject(Violation::UnknownSession)
    );
}

#[tokio::test]
async fn the_schedulers_own_packets_pass_only_when_signed_with_its_key() {
    let f = Fixture::new();
    let gate = Gate::new(WorkerTrustMode::Enforce, f.server.clone())
        .peer(SCHEDULER, f.scheduler_key.public_key());
    let mut result = BusPacket::new(
        "t",
        SCHEDULER,
        Timestamp::default(),
        v1::JobResult {
            job_id: "j".into(),
            status: 9,
            ..Default::default()
        },
    );
    let signed = cap_sign::packet::sign_to_bytes(&mut result.clone(), &f.scheduler_key).unwrap();
    let decoded = cap_proto::packet::decode(&signed, 1 << 20).unwrap();
    assert_eq!(
        gate.check(&signed, &decoded, SystemTime::now()).await,
        Decision::Accept
    );
    // Claiming the scheduler's id without its key.
    let forged = cap_sign::packet::sign_to_bytes(&mut result, &PrivateKey::generate()).unwrap();
    let decoded = cap_proto::packet::decode(&forged, 1 << 20).unwrap();
    assert_eq!(
        gate.check(&forged, &decoded, SystemTime::now()).await,
        Decision::Reject(Violation::PeerSignature)
    );
}

#[tokio::test]
async fn off_passes_everything_and_warn_counts_but_passes() {
    let f = Fixture::new();
    let off = Gate::new(WorkerTrustMode::Off, f.server.clone());
    assert_eq!(
        check(&off, &heartbeat("x", "y", "")).await,
        Decision::Accept
    );
    let warn = Gate::new(WorkerTrustMode::Warn, f.server.clone());
    assert_eq!(
        check(&warn, &heartbeat("x", "x", "")).await,
        Decision::Warn(Violation::MissingSession)
    );
    let packets = Packets::new(MemoryBus::new(), PacketConfig::new(SCHEDULER));
    let hb = heartbeat("x", "x", "");
    assert!(
        warn.admit(&packets, &raw(&hb), &hb).await,
        "warn lets it through"
    );
    assert_eq!(warn.stats().warned, 2);
    assert_eq!(warn.stats().alerts, 0);
}

#[tokio::test]
async fn enforce_alerts_name_the_spoofing_sender_once_per_interval() {
    let f = Fixture::new();
    let bus = MemoryBus::new();
    let packets = Packets::new(bus.clone(), PacketConfig::new(SCHEDULER));
    let mut alerts = bus.subscribe(subject::ALERT).await.unwrap();
    let gate = Gate::new(WorkerTrustMode::Enforce, f.server.clone());
    let hb = heartbeat("spoof-1", "spoof-1", "");
    assert!(!gate.admit(&packets, &raw(&hb), &hb).await);
    assert!(!gate.admit(&packets, &raw(&hb), &hb).await);
    let msg = tokio::time::timeout(Duration::from_secs(2), alerts.next())
        .await
        .unwrap()
        .unwrap();
    let p = cap_proto::packet::decode(msg.payload(), 1 << 20).unwrap();
    let Some(Payload::Alert(a)) = p.payload else {
        panic!("an alert")
    };
    assert!(a.message.contains("spoof-1"), "{}", a.message);
    assert_eq!(
        a.details.get("sender_id").map(String::as_str),
        Some("spoof-1")
    );
    assert_eq!(a.severity, v1::AlertSeverity::Critical as i32);
    // One alert for the two packets (rate limit per sender).
    assert!(
        tokio::time::timeout(Duration::from_millis(200), alerts.next())
            .await
            .is_err()
    );
    assert_eq!(gate.stats().alerts, 1);
    assert_eq!(gate.stats().rejected, 2);
}
