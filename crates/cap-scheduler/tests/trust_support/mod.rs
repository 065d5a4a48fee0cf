//! Shared fixtures of the worker trust tests: a trust server on the memory store with
//! one registered worker, our client's configuration for it, and reply inspection.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod services;

use cap_proto::v1::{self, BusPacket, bus_packet::Payload};
use cap_runtime::trust::client::{self, RequestOptions, Session, VerifiedChallenge};
use cap_runtime::trust::{ResolvedTrust, WorkerTrustConfig, WorkerTrustMode};
use cap_scheduler::trust::{
    MemoryTrustStore, Reply, TrustServer, TrustServerConfig, WorkerKey, WorkerKeys,
};
use cap_sign::PrivateKey;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub const SCHEDULER: &str = "sched-test";
pub const SERVER_KEY: &str = "sched-key-1";

pub struct Fixture {
    pub scheduler_key: PrivateKey,
    pub worker_key: PrivateKey,
    pub store: MemoryTrustStore,
    pub server: Arc<TrustServer>,
    pub client: ResolvedTrust,
}

impl Fixture {
    /// Worker `w-1` with proof key `k-1`, plus worker `w-2` (key `k-2`, tenant `acme`).
    pub fn new() -> Self {
        Self::with(|c| c)
    }

    pub fn with(f: impl FnOnce(TrustServerConfig) -> TrustServerConfig) -> Self {
        let scheduler_key = PrivateKey::generate();
        let worker_key = PrivateKey::generate();
        let mut keys = WorkerKeys::new();
        keys.insert(WorkerKey::new("k-1", worker_key.public_key()).worker("w-1"))
            .unwrap();
        keys.insert(
            WorkerKey::new("k-2", PrivateKey::generate().public_key())
                .worker("w-2")
                .tenant("acme"),
        )
        .unwrap();
        let store = MemoryTrustStore::new();
        let config = f(TrustServerConfig::new(
            SCHEDULER,
            SERVER_KEY,
            Arc::new(scheduler_key.clone()),
            keys,
        ));
        let server = Arc::new(TrustServer::new(config, Arc::new(store.clone())).unwrap());
        let client = client_config("w-1", "k-1", &worker_key, &scheduler_key);
        Fixture {
            scheduler_key,
            worker_key,
            store,
            server,
            client,
        }
    }

    pub fn request(&self, purpose: i32, now: SystemTime) -> BusPacket {
        client::build_challenge_request(&self.client, &RequestOptions::fresh(purpose, now).unwrap())
            .unwrap()
    }

    /// A challenge request answered and verified.
    pub async fn challenge(&self, purpose: i32, now: SystemTime) -> VerifiedChallenge {
        let request = self.request(purpose, now);
        let reply = self
            .server
            .challenge(&cap_proto::packet::encode(&request), now)
            .await
            .unwrap();
        client::verify_challenge(&self.client, &request, &reply.bytes, now).unwrap()
    }

    pub fn authenticate(
        &self,
        verified: &VerifiedChallenge,
        token: &str,
        now: SystemTime,
    ) -> BusPacket {
        client::build_authenticate(&self.client, verified, &capability("w-1"), token, now).unwrap()
    }

    /// A full ISSUE exchange.
    pub async fn session(&self, now: SystemTime) -> Session {
        self.exchange(cap_proto::trust::PURPOSE_ISSUE, "", now)
            .await
    }

    pub async fn exchange(&self, purpose: i32, token: &str, now: SystemTime) -> Session {
        let verified = self.challenge(purpose, now).await;
        let auth = self.authenticate(&verified, token, now);
        let reply = self
            .server
            .authenticate(&cap_proto::packet::encode(&auth), now)
            .await
            .unwrap();
        client::verify_result(&self.client, &verified, &auth, &reply.bytes, now).unwrap()
    }
}

pub fn client_config(
    worker: &str,
    key_id: &str,
    key: &PrivateKey,
    scheduler_key: &PrivateKey,
) -> ResolvedTrust {
    WorkerTrustConfig::new(
        WorkerTrustMode::Enforce,
        key_id,
        Arc::new(key.clone()),
        SCHEDULER,
    )
    .scheduler_key(SERVER_KEY, scheduler_key.public_key())
    .resolve(worker)
    .unwrap()
}

pub fn capability(worker: &str) -> v1::Handshake {
    cap_runtime::worker::handshake(worker, ["job.echo"], false)
}

/// Signs `packet` again with `key` after a change (as a sender would).
pub fn resign(packet: &mut BusPacket, key: &PrivateKey) {
    cap_sign::transcript::sign_handshake(packet, key).unwrap();
}

/// The reply, checked: signed by the scheduler's key with the result domain, a
/// structurally valid result; its rejection reason (0 when accepted).
pub fn reason(reply: &Reply, scheduler_key: &PrivateKey) -> i32 {
    let p = cap_sign::transcript::verify_handshake(&reply.bytes, &scheduler_key.public_key())
        .expect("reply signed by the scheduler");
    cap_proto::trust::validate_packet(&p).expect("reply is structurally valid");
    assert_eq!(p.sender_id, SCHEDULER);
    match p.payload {
        Some(Payload::WorkerHandshakeResult(r)) => {
            assert_eq!(r.accepted, r.rejection_reason == 0);
            r.rejection_reason
        }
        Some(Payload::WorkerHandshakeChallenge(_)) => 0,
        other => panic!("unexpected reply {other:?}"),
    }
}

pub fn later(now: SystemTime, secs: u64) -> SystemTime {
    now + Duration::from_secs(secs)
}
