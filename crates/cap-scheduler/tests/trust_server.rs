//! The trust server, request by request, on the memory store: the accepted exchange,
//! renewal and revocation, and one test per rejection reason with packets made by our
//! client (the peer-made ones are in `trust_peer.rs`). Every refusal is checked to be
//! a signed, structurally valid result carrying the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod trust_support;

use cap_proto::trust::{PURPOSE_ISSUE, PURPOSE_RENEW};
use cap_proto::v1::{WorkerHandshakeRejectionReason as R, bus_packet::Payload};
use cap_runtime::trust::TrustErrorKind;
use cap_runtime::trust::client;
use cap_scheduler::trust::{Outcome, WorkerKeys};
use cap_sign::PrivateKey;
use std::time::SystemTime;
use trust_support::*;

fn enc(p: &cap_proto::v1::BusPacket) -> Vec<u8> {
    cap_proto::packet::encode(p)
}

#[tokio::test]
async fn a_worker_gets_a_session_renews_it_and_it_can_be_revoked() {
    let f = Fixture::new();
    let now = SystemTime::now();
    let s1 = f.session(now).await;
    let record = f.server.session(&s1.token, now).await.unwrap().unwrap();
    assert_eq!(record.worker_id, "w-1");
    assert_eq!(record.tenant_id, "default");
    assert!(cap_proto::trust::is_session_token(&s1.token));
    assert!(s1.expires_at > now);

    // RENEW with the current token: a new token, the old one only within the grace.
    let s2 = f.exchange(PURPOSE_RENEW, &s1.token, now).await;
    assert_ne!(s1.token, s2.token);
    assert!(f.server.session(&s1.token, now).await.unwrap().is_some());
    assert!(
        f.server
            .session(&s1.token, later(now, 11))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.server
            .session(&s2.token, later(now, 11))
            .await
            .unwrap()
            .is_some()
    );
    let stats = f.server.stats();
    assert_eq!(
        (stats.challenges, stats.sessions, stats.renewals),
        (2, 1, 1)
    );

    // Revocation ends every session of the worker.
    assert!(f.server.revoke_worker("w-1").await.unwrap() >= 1);
    assert!(f.server.session(&s2.token, now).await.unwrap().is_none());
    let s3 = f.session(now).await;
    assert!(f.server.revoke_token(&s3.token).await.unwrap());
    assert!(f.server.session(&s3.token, now).await.unwrap().is_none());
}

#[tokio::test]
async fn invalid_request_for_garbage_size_phase_unknown_fields_and_structure() {
    let f = Fixture::new();
    let now = SystemTime::now();
    for raw in [
        Vec::new(),
        b"\xff\xff garbage".to_vec(),
        vec![0x0a; 64 * 1024 + 1],
    ] {
        let reply = f.server.challenge(&raw, now).await.unwrap();
        assert_eq!(reply.outcome, Outcome::Rejected(R::InvalidRequest));
        assert_eq!(reason(&reply, &f.scheduler_key), R::InvalidRequest as i32);
        let reply = f.server.authenticate(&raw, now).await.unwrap();
        assert_eq!(reason(&reply, &f.scheduler_key), R::InvalidRequest as i32);
    }
    // An unknown field after signing (a signer cannot have covered it the peer's way).
    let mut raw = enc(&f.request(PURPOSE_ISSUE, now));
    raw.extend_from_slice(&[0xf8, 0x01, 0x01]); // field 31, varint 1
    let reply = f.server.challenge(&raw, now).await.unwrap();
    assert_eq!(reason(&reply, &f.scheduler_key), R::InvalidRequest as i32);
    // The authenticate subject receiving a challenge request.
    let raw = enc(&f.request(PURPOSE_ISSUE, now));
    let reply = f.server.authenticate(&raw, now).await.unwrap();
    assert_eq!(reason(&reply, &f.scheduler_key), R::InvalidRequest as i32);
    // A short client nonce, properly signed.
    let mut p = f.request(PURPOSE_ISSUE, now);
    if let Some(Payload::WorkerHandshakeChallengeRequest(r)) = p.payload.as_mut() {
        r.client_nonce.truncate(31);
    }
    resign(&mut p, &f.worker_key);
    let reply = f.server.challenge(&enc(&p), now).await.unwrap();
    assert_eq!(reason(&reply, &f.scheduler_key), R::InvalidRequest as i32);
    // An ISSUE authenticate carrying a token.
    let verified = f.challenge(PURPOSE_ISSUE, now).await;
    let mut auth = f.authenticate(&verified, "", now);
    auth.auth_token = "tok".into();
    resign(&mut auth, &f.worker_key);
    let reply = f.server.authenticate(&enc(&auth), now).await.unwrap();
    assert_eq!(reason(&reply, &f.scheduler_key), R::InvalidRequest as i32);
    // The refusal still names our challenge, so our client reads the reason.
    let e = client::verify_result(&f.client, &verified, &auth, &reply.bytes, now).unwrap_err();
    assert_eq!(e.rejection(), Some(R::InvalidRequest));
}

#[tokio::test]
async fn authentication_failed_for_signature_key_audience_identity_and_forged_challenges() {
    let f = Fixture::new();
    let now = SystemTime::now();
    let refused = |reply: cap_scheduler::trust::Reply| {
        assert_eq!(reply.outcome, Outcome::Rejected(R::AuthenticationFailed));
        assert_eq!(
            reason(&reply, &f.scheduler_key),
            R::AuthenticationFailed as i32
        );
    };
    // Tampered after signing.
    let mut p = f.request(PURPOSE_ISSUE, now);
    if let Some(Payload::WorkerHandshakeChallengeRequest(r)) = p.payload.as_mut() {
        r.sdk_version = "tampered".into();
    }
    refused(f.server.challenge(&enc(&p), now).await.unwrap());
    // Signed by a key that is not the registered one.
    let mut p = f.request(PURPOSE_ISSUE, now);
    resign(&mut p, &PrivateKey::generate());
    refused(f.server.challenge(&enc(&p), now).await.unwrap());
    // A key id nobody registered.
    let stranger = PrivateKey::generate();
    let c = client_config("w-1", "k-unknown", &stranger, &f.scheduler_key);
    let p = client::build_challenge_request(
        &c,
        &client::RequestOptions::fresh(PURPOSE_ISSUE, now).unwrap(),
    )
    .unwrap();
    refused(f.server.challenge(&enc(&p), now).await.unwrap());
    // Another audience.
    let c = cap_runtime::trust::WorkerTrustConfig::new(
        cap_runtime::trust::WorkerTrustMode::Enforce,
        "k-1",
        std::sync::Arc::new(f.worker_key.clone()),
        SCHEDULER,
    )
    .scheduler_key(SERVER_KEY, f.scheduler_key.public_key())
    .audience("someone-else")
    .resolve("w-1")
    .unwrap();
    let p = client::build_challenge_request(
        &c,
        &client::RequestOptions::fresh(PURPOSE_ISSUE, now).unwrap(),
    )
    .unwrap();
    refused(f.server.challenge(&enc(&p), now).await.unwrap());
    // The key of w-1 used by w-9 (identity not bound to the key).
    let c = client_config("w-9", "k-1", &f.worker_key, &f.scheduler_key);
    let p = client::build_challenge_request(
        &c,
        &client::RequestOptions::fresh(PURPOSE_ISSUE, now).unwrap(),
    )
    .unwrap();
    refused(f.server.challenge(&enc(&p), now).await.unwrap());
    // The server nonce changed in the authenticate (re-signed by the worker).
    let verified = f.challenge(PURPOSE_ISSUE, now).await;
    let mut auth = f.authenticate(&verified, "", now);
    if let Some(Payload::WorkerHandshakeAuthenticate(a)) = auth.payload.as_mut()
        && let Some(c) = a.challenge.as_mut()
    {
        c.server_nonce[0] ^= 1;
    }
    resign(&mut auth, &f.worker_key);
    refused(f.server.authenticate(&enc(&auth), now).await.unwrap());
    // A challenge this server never issued.
    let mut auth = f.authenticate(&verified, "", now);
    if let Some(Payload::WorkerHandshakeAuthenticate(a)) = auth.payload.as_mut()
        && let Some(c) = a.challenge.as_mut()
    {
        c.challenge_id = "forged".into();
    }
    resign(&mut auth, &f.worker_key);
    refused(f.server.authenticate(&enc(&auth), now).await.unwrap());
    // A key removed at run time.
    f.server.set_keys(WorkerKeys::new());
    refused(
        f.server
            .challenge(&enc(&f.request(PURPOSE_ISSUE, now)), now)
            .await
            .unwrap(),
    );
    assert_eq!(
        f.server.stats().rejected[R::AuthenticationFailed as usize],
        8
    );
}

#[tokio::test]
async fn replayed_requests_and_authenticates() {
    let f = Fixture::new();
    let now = SystemTime::now();
    let raw = enc(&f.request(PURPOSE_ISSUE, now));
    assert!(matches!(
        f.server.challenge(&raw, now).await.unwrap().outcome,
        Outcome::Challenged { .. }
    ));
    let again = f.server.challenge(&raw, now).await.unwrap();
    assert_eq!(reason(&again, &f.scheduler_key), R::ReplayDetected as i32);

    let verified = f.challenge(PURPOSE_ISSUE, now).await;
    let auth = enc(&f.authenticate(&verified, "", now));
    let first = f.server.authenticate(&auth, now).await.unwrap();
    assert!(matches!(
        first.outcome,
        Outcome::Accepted { renewal: false, .. }
    ));
    let second = f.server.authenticate(&auth, now).await.unwrap();
    assert_eq!(second.outcome, Outcome::Rejected(R::ReplayDetected));
    assert_eq!(reason(&second, &f.scheduler_key), R::ReplayDetected as i32);
}

#[tokio::test]
async fn clock_skew_and_expired_challenges() {
    let f = Fixture::new();
    let now = SystemTime::now();
    // A request made two minutes "ago" (or answered two minutes later).
    let raw = enc(&f.request(PURPOSE_ISSUE, now));
    let reply = f.server.challenge(&raw, later(now, 120)).await.unwrap();
    assert_eq!(reason(&reply, &f.scheduler_key), R::ClockSkew as i32);
    // An authenticate with created_at a minute and a half ahead.
    let verified = f.challenge(PURPOSE_ISSUE, now).await;
    let auth = f.authenticate(&verified, "", later(now, 90));
    let reply = f.server.authenticate(&enc(&auth), now).await.unwrap();
    assert_eq!(reason(&reply, &f.scheduler_key), R::ClockSkew as i32);
    // The default lifetime is 30 s: 31 s later the challenge is over (skew still fine).
    let verified = f.challenge(PURPOSE_ISSUE, now).await;
    let auth = f.authenticate(&verified, "", now);
    let reply = f
        .server
        .authenticate(&enc(&auth), later(now, 31))
        .await
        .unwrap();
    assert_eq!(reply.outcome, Outcome::Rejected(R::ChallengeExpired));
    assert_eq!(reason(&reply, &f.scheduler_key), R::ChallengeExpired as i32);
}

#[tokio::test]
async fn renewals_need_a_live_session_of_the_same_worker() {
    let f = Fixture::new();
    let now = SystemTime::now();
    let session = f.session(now).await;
    // RENEW without a token: built with one, then stripped and signed again.
    let verified = f.challenge(PURPOSE_RENEW, now).await;
    let mut auth = f.authenticate(&verified, &session.token, now);
    auth.auth_token.clear();
    resign(&mut auth, &f.worker_key);
    let reply = f.server.authenticate(&enc(&auth), now).await.unwrap();
    assert_eq!(reason(&reply, &f.scheduler_key), R::SessionRequired as i32);
    // RENEW with a token that is no session.
    let verified = f.challenge(PURPOSE_RENEW, now).await;
    let auth = f.authenticate(&verified, "cap-ws.bogus", now);
    let reply = f.server.authenticate(&enc(&auth), now).await.unwrap();
    assert_eq!(reason(&reply, &f.scheduler_key), R::SessionInvalid as i32);
    let e = client::verify_result(&f.client, &verified, &auth, &reply.bytes, now).unwrap_err();
    assert_eq!(
        (e.kind(), e.rejection()),
        (TrustErrorKind::Rejected, Some(R::SessionInvalid))
    );
    // RENEW with an expired session (the session lasts 15 minutes; 16 minutes on the
    // challenge is fresh, so only the session is at fault).
    let t = later(now, 16 * 60);
    let verified = f.challenge(PURPOSE_RENEW, t).await;
    let auth = f.authenticate(&verified, &session.token, t);
    let reply = f.server.authenticate(&enc(&auth), t).await.unwrap();
    assert_eq!(reason(&reply, &f.scheduler_key), R::SessionInvalid as i32);
}

#[tokio::test]
async fn a_renewal_with_another_workers_session_is_invalid() {
    let f = Fixture::new();
    let now = SystemTime::now();
    // w-3 has its own key and session.
    let key3 = PrivateKey::generate();
    let mut keys = f.server.keys();
    keys.insert(cap_scheduler::trust::WorkerKey::new("k-3", key3.public_key()).worker("w-3"))
        .unwrap();
    f.server.set_keys(keys);
    let c3 = client_config("w-3", "k-3", &key3, &f.scheduler_key);
    let req = client::build_challenge_request(
        &c3,
        &client::RequestOptions::fresh(PURPOSE_ISSUE, now).unwrap(),
    )
    .unwrap();
    let reply = f.server.challenge(&enc(&req), now).await.unwrap();
    let v3 = client::verify_challenge(&c3, &req, &reply.bytes, now).unwrap();
    let auth = client::build_authenticate(&c3, &v3, &capability("w-3"), "", now).unwrap();
    let reply = f.server.authenticate(&enc(&auth), now).await.unwrap();
    let s3 = client::verify_result(&c3, &v3, &auth, &reply.bytes, now).unwrap();
    // w-1 renews with w-3's token.
    let verified = f.challenge(PURPOSE_RENEW, now).await;
    let auth = f.authenticate(&verified, &s3.token, now);
    let reply = f.server.authenticate(&enc(&auth), now).await.unwrap();
    assert_eq!(reason(&reply, &f.scheduler_key), R::SessionInvalid as i32);
}

#[tokio::test]
async fn unsupported_versions_2_and_999() {
    let f = Fixture::new();
    let now = SystemTime::now();
    for v in [2, 999] {
        // In the envelope.
        let mut p = f.request(PURPOSE_ISSUE, now);
        p.protocol_version = v;
        resign(&mut p, &f.worker_key);
        let reply = f.server.challenge(&enc(&p), now).await.unwrap();
        assert_eq!(reply.outcome, Outcome::Rejected(R::UnsupportedVersion));
        assert_eq!(
            reason(&reply, &f.scheduler_key),
            R::UnsupportedVersion as i32
        );
        // In the request.
        let mut p = f.request(PURPOSE_ISSUE, now);
        if let Some(Payload::WorkerHandshakeChallengeRequest(r)) = p.payload.as_mut() {
            r.protocol_version = v;
        }
        resign(&mut p, &f.worker_key);
        let reply = f.server.challenge(&enc(&p), now).await.unwrap();
        assert_eq!(
            reason(&reply, &f.scheduler_key),
            R::UnsupportedVersion as i32
        );
        // In the authenticate's envelope.
        let verified = f.challenge(PURPOSE_ISSUE, now).await;
        let mut auth = f.authenticate(&verified, "", now);
        auth.protocol_version = v;
        resign(&mut auth, &f.worker_key);
        let reply = f.server.authenticate(&enc(&auth), now).await.unwrap();
        assert_eq!(
            reason(&reply, &f.scheduler_key),
            R::UnsupportedVersion as i32
        );
    }
}

#[tokio::test]
async fn internal_error_when_the_store_is_down() {
    let f = Fixture::new();
    let now = SystemTime::now();
    let verified = f.challenge(PURPOSE_ISSUE, now).await;
    f.store.set_unavailable(true);
    let reply = f
        .server
        .challenge(&enc(&f.request(PURPOSE_ISSUE, now)), now)
        .await
        .unwrap();
    assert_eq!(reason(&reply, &f.scheduler_key), R::InternalError as i32);
    let auth = f.authenticate(&verified, "", now);
    let reply = f.server.authenticate(&enc(&auth), now).await.unwrap();
    assert_eq!(reply.outcome, Outcome::Rejected(R::InternalError));
    // The store comes back: the same challenge still works (it was not consumed).
    f.store.set_unavailable(false);
    let reply = f.server.authenticate(&enc(&auth), now).await.unwrap();
    assert!(matches!(reply.outcome, Outcome::Accepted { .. }));
}

#[tokio::test]
async fn the_client_refuses_answers_not_from_the_expected_scheduler() {
    let f = Fixture::new();
    let now = SystemTime::now();
    let request = f.request(PURPOSE_ISSUE, now);
    let reply = f.server.challenge(&enc(&request), now).await.unwrap();
    // Another key under the same key id.
    let impostor = client_config("w-1", "k-1", &f.worker_key, &PrivateKey::generate());
    let e = client::verify_challenge(&impostor, &request, &reply.bytes, now).unwrap_err();
    assert_eq!(e.kind(), TrustErrorKind::Packet);
    // A challenge for another request.
    let other = f.request(PURPOSE_ISSUE, now);
    let e = client::verify_challenge(&f.client, &other, &reply.bytes, now).unwrap_err();
    assert_eq!(e.kind(), TrustErrorKind::Binding);
    // Too late.
    let e =
        client::verify_challenge(&f.client, &request, &reply.bytes, later(now, 30)).unwrap_err();
    assert_eq!(e.kind(), TrustErrorKind::Expired);
    // A refused request reads as the reason.
    let mut bad = f.request(PURPOSE_ISSUE, now);
    resign(&mut bad, &PrivateKey::generate());
    let reply = f.server.challenge(&enc(&bad), now).await.unwrap();
    let e = client::verify_challenge(&f.client, &bad, &reply.bytes, now).unwrap_err();
    assert_eq!(e.rejection(), Some(R::AuthenticationFailed));
}
