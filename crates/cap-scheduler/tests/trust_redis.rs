//! The Redis trust store on the shared Redis: the store contract, a challenge accepted
//! once across two instances racing for it, and sessions that outlive the instance
//! that issued them. Run by `.ci/run` (`cargo test -- --ignored`); fails without Redis.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod trust_support;

use cap_proto::trust::{PURPOSE_ISSUE, PURPOSE_RENEW};
use cap_proto::v1::WorkerHandshakeRejectionReason as R;
use cap_runtime::trust::client;
use cap_scheduler::trust::{
    Outcome, RedisTrustStore, TrustServer, TrustServerConfig, WorkerKey, WorkerKeys,
    store::conformance,
};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use trust_support::services::redis_url;
use trust_support::*;

async fn store(namespace: &str) -> RedisTrustStore {
    RedisTrustStore::connect(&redis_url(), namespace)
        .await
        .unwrap_or_else(|e| panic!("Redis is required at {}: {e}", redis_url()))
}

fn namespace() -> String {
    format!("cap-trust-test-{}", &cap_runtime::id::new_trace_id()[..8])
}

#[tokio::test]
#[ignore = "needs Redis: run by .ci/run"]
async fn the_redis_store_keeps_the_contract() {
    let ns = namespace();
    let s = store(&ns).await;
    assert_eq!(s.prefix(), format!("cap:trust:{{{ns}}}:"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    conformance::run(&s, "redis", now).await.unwrap();
    assert!(s.purge().await.unwrap() > 0);
    assert_eq!(s.purge().await.unwrap(), 0);
    assert!(
        RedisTrustStore::connect(&redis_url(), "bad{ns}")
            .await
            .is_err()
    );
}

/// Two instances of one scheduler (same id and key) on one Redis namespace.
async fn pair(ns: &str) -> (Fixture, Arc<TrustServer>) {
    let f = Fixture::new();
    let server = |store: RedisTrustStore| {
        let mut keys = WorkerKeys::new();
        keys.insert(WorkerKey::new("k-1", f.worker_key.public_key()).worker("w-1"))
            .unwrap();
        let config = TrustServerConfig::new(
            SCHEDULER,
            SERVER_KEY,
            Arc::new(f.scheduler_key.clone()),
            keys,
        );
        Arc::new(TrustServer::new(config, Arc::new(store)).unwrap())
    };
    let a = server(store(ns).await);
    let b = server(store(ns).await);
    (Fixture { server: a, ..f }, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis: run by .ci/run"]
async fn a_challenge_is_accepted_once_across_instances() {
    let ns = namespace();
    let (f, b) = pair(&ns).await;
    let now = SystemTime::now();
    for _ in 0..10 {
        let verified = f.challenge(PURPOSE_ISSUE, now).await;
        let auth = cap_proto::packet::encode(&f.authenticate(&verified, "", now));
        let (x, y) = tokio::join!(
            f.server.authenticate(&auth, now),
            b.authenticate(&auth, now)
        );
        let outcomes = [x.unwrap().outcome, y.unwrap().outcome];
        let accepted = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Accepted { .. }))
            .count();
        let replays = outcomes
            .iter()
            .filter(|o| **o == Outcome::Rejected(R::ReplayDetected))
            .count();
        assert_eq!((accepted, replays), (1, 1), "{outcomes:?}");
    }
    store(&ns).await.purge().await.unwrap();
}

#[tokio::test]
#[ignore = "needs Redis: run by .ci/run"]
async fn sessions_outlive_the_instance_that_issued_them() {
    let ns = namespace();
    let (f, b) = pair(&ns).await;
    let now = SystemTime::now();
    let session = f.session(now).await;
    // Another instance (a restarted scheduler) knows the session and renews it.
    assert_eq!(
        b.session(&session.token, now)
            .await
            .unwrap()
            .unwrap()
            .worker_id,
        "w-1"
    );
    let request = f.request(PURPOSE_RENEW, now);
    let reply = b
        .challenge(&cap_proto::packet::encode(&request), now)
        .await
        .unwrap();
    let verified = client::verify_challenge(&f.client, &request, &reply.bytes, now).unwrap();
    let auth = f.authenticate(&verified, &session.token, now);
    let reply = b
        .authenticate(&cap_proto::packet::encode(&auth), now)
        .await
        .unwrap();
    let renewed = client::verify_result(&f.client, &verified, &auth, &reply.bytes, now).unwrap();
    assert_ne!(renewed.token, session.token);
    assert!(
        f.server
            .session(&renewed.token, now)
            .await
            .unwrap()
            .is_some()
    );
    // A revocation through one is seen by the other.
    assert!(f.server.revoke_worker("w-1").await.unwrap() >= 1);
    assert!(b.session(&renewed.token, now).await.unwrap().is_none());
    store(&ns).await.purge().await.unwrap();
}
