//! CAP-PRODUCTION signatures: the upstream fixture, our own packets, and every rejection
//! with its kind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use cap_proto::{ErrorCode, canonical, v1};
use cap_sign::PrivateKey;
use cap_sign::production::{
    self, Admission, MemoryReplayStore, ProductionError as E, ProductionTrust, Seal,
};
use common::*;
use std::time::{Duration, SystemTime};

#[test]
fn fixture_verifies_inside_its_window() {
    let f = fixture();
    let extracted = production::extract_signature(&f.raw).unwrap();
    assert_eq!(extracted.unsigned(), f.unsigned.as_slice());
    assert_eq!(extracted.signature(), f.signature.as_slice());
    assert_eq!(
        production::preimage_digest(&f.unsigned).to_vec(),
        f.preimage_digest
    );
    let v = production::verify(&f.raw, &fixture_trust(), fixture_now()).unwrap();
    // SHA-256 of the unsigned bytes, computed independently (Python hashlib).
    assert_eq!(
        hex(v.body_digest()),
        "9e1f0394fa4571e696dea5678b0e70e8a0a63717ee633ee8b4f7d194925dd534"
    );
    assert_eq!(v.message_id(), b"0123456789abcdef");
    assert_eq!(v.expires_at(), fixture_expiry());
    let p = v.packet();
    assert_eq!(p.sender_id, FIXTURE_SENDER);
    assert_eq!(p.signature.as_ref(), f.signature.as_slice());
    assert!(matches!(
        &p.payload,
        Some(v1::bus_packet::Payload::JobCancel(c)) if c.job_id == "job-vector"
    ));
    let key = v.replay_key();
    assert_eq!(
        (
            key.tenant.as_str(),
            key.audience.as_str(),
            key.sender.as_str()
        ),
        (FIXTURE_TENANT, FIXTURE_AUDIENCE, FIXTURE_SENDER)
    );
    let entry = v.replay_entry(Duration::from_secs(30));
    assert_eq!(entry.keep_until, fixture_expiry() + Duration::from_secs(30));
    assert_eq!(&entry.digest, v.body_digest());
}

#[test]
fn our_signature_is_over_the_peers_prehashed_digest() {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use p256::pkcs8::DecodePublicKey;
    let key = PrivateKey::generate();
    let raw = production::seal(
        &job_request("s"),
        &key,
        &Seal::new("k", "job.echo", SystemTime::now()).unwrap(),
    )
    .unwrap();
    let e = production::extract_signature(&raw).unwrap();
    let digest = production::preimage_digest(e.unsigned());
    let vk = p256::ecdsa::VerifyingKey::from_public_key_pem(&key.public_key().to_pem().unwrap())
        .unwrap();
    let sig = p256::ecdsa::Signature::from_der(e.signature()).unwrap();
    vk.verify_prehash(&digest, &sig).unwrap();
    // The fixture's Go signature checks the same way.
    let f = fixture();
    let vk = p256::ecdsa::VerifyingKey::from_public_key_pem(&f.key.to_pem().unwrap()).unwrap();
    let sig = p256::ecdsa::Signature::from_der(&f.signature).unwrap();
    vk.verify_prehash(&f.preimage_digest, &sig).unwrap();
}

#[test]
fn fixture_time_window() {
    let f = fixture();
    let trust = fixture_trust();
    let exp = fixture_expiry();
    let at = |t: SystemTime| production::verify(&f.raw, &trust, t).map(|_| ());
    assert_eq!(at(exp), Err(E::Expired), "expired at the instant of expiry");
    assert_eq!(at(exp - Duration::from_nanos(1)), Ok(()));
    assert_eq!(
        at(exp - Duration::from_secs(300)),
        Ok(()),
        "exactly 5 min ahead"
    );
    assert_eq!(
        at(exp - Duration::from_secs(301)),
        Err(E::LifetimeExceeded),
        "too far in the future"
    );
    // Skew widens both ends.
    let skewed = trust
        .clone()
        .with_clock_skew(Duration::from_secs(30))
        .unwrap();
    let at = |t: SystemTime| production::verify(&f.raw, &skewed, t).map(|_| ());
    assert_eq!(at(exp + Duration::from_secs(29)), Ok(()));
    assert_eq!(at(exp + Duration::from_secs(30)), Err(E::Expired));
    assert_eq!(at(exp - Duration::from_secs(330)), Ok(()));
    assert_eq!(at(exp - Duration::from_secs(331)), Err(E::LifetimeExceeded));
    // A shorter max lifetime.
    let short = trust.with_max_lifetime(Duration::from_secs(60)).unwrap();
    assert_eq!(
        production::verify(&f.raw, &short, exp - Duration::from_secs(61)).map(|_| ()),
        Err(E::LifetimeExceeded)
    );
}

#[test]
fn fixture_authority_rejections() {
    let f = fixture();
    let now = fixture_now();
    let verify = |t: &ProductionTrust| production::verify(&f.raw, t, now).map(|_| ());
    let base = fixture_trust();
    assert!(matches!(
        verify(&base.with_audience("sys.job.other").unwrap()),
        Err(E::AudienceMismatch { .. })
    ));
    let t = ProductionTrust::new(FIXTURE_AUDIENCE, "tenant-other", FIXTURE_SENDER)
        .unwrap()
        .with_key(FIXTURE_KEY_ID, f.key.clone());
    assert!(matches!(verify(&t), Err(E::TenantMismatch { .. })));
    let t = ProductionTrust::new(FIXTURE_AUDIENCE, FIXTURE_TENANT, "worker-other")
        .unwrap()
        .with_key(FIXTURE_KEY_ID, f.key.clone());
    assert!(matches!(verify(&t), Err(E::SenderMismatch { .. })));
    let t = ProductionTrust::new(FIXTURE_AUDIENCE, FIXTURE_TENANT, FIXTURE_SENDER)
        .unwrap()
        .with_key("another-key", f.key.clone());
    assert_eq!(
        verify(&t),
        Err(E::UnknownKeyId {
            key_id: FIXTURE_KEY_ID.into()
        })
    );
    let t = ProductionTrust::new(FIXTURE_AUDIENCE, FIXTURE_TENANT, FIXTURE_SENDER)
        .unwrap()
        .with_key(FIXTURE_KEY_ID, PrivateKey::generate().public_key());
    assert_eq!(verify(&t), Err(E::BadSignature), "right id, wrong key");
    // Tampered: one byte of the cancel reason ("fixture" -> "fixturf").
    let mut tampered = f.raw.clone();
    let at = tampered.windows(7).position(|w| w == b"fixture").unwrap();
    tampered[at + 6] ^= 0x03;
    assert_eq!(
        production::verify(&tampered, &base, now).map(|_| ()),
        Err(E::BadSignature)
    );
    // Tampered signature.
    let mut bad_sig = f.raw.clone();
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 1;
    assert_eq!(
        production::verify(&bad_sig, &base, now).map(|_| ()),
        Err(E::BadSignature)
    );
}

/// A sealed job request for `acme` from `sched`, audience `job.echo`, and its trust.
fn sealed(now: SystemTime) -> (PrivateKey, Vec<u8>, ProductionTrust) {
    let key = PrivateKey::generate();
    let raw = production::seal(
        &job_request("sched"),
        &key,
        &Seal::new("k1", "job.echo", now).unwrap(),
    )
    .unwrap();
    let trust = ProductionTrust::new("job.echo", "acme", "sched")
        .unwrap()
        .with_key("k1", key.public_key());
    (key, raw, trust)
}

/// Unsigned bytes of `raw` with `edit` applied, re-signed validly with `key`.
fn resigned(raw: &[u8], key: &PrivateKey, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut unsigned = production::extract_signature(raw).unwrap().into_unsigned();
    edit(&mut unsigned);
    sign_raw(&unsigned, key)
}

#[test]
fn structural_negatives_with_valid_signatures() {
    let now = SystemTime::now();
    let (key, raw, trust) = sealed(now);
    production::verify(&raw, &trust, now).unwrap();
    let check = |bytes: &[u8]| production::verify(bytes, &trust, now).map(|_| ());
    let unsigned = production::extract_signature(&raw).unwrap().into_unsigned();
    assert_eq!(unsigned[0], 0x0a, "trace_id first");
    // created_at after trace_id "trace-1" and sender_id "sched": 0x1a, length 6.
    let ts_at = 9 + 7;
    assert_eq!(&unsigned[ts_at..ts_at + 2], &[0x1a, 0x06]);

    // Non-minimal length of trace_id (0x87 0x00 for 7).
    let b = resigned(&raw, &key, |u| {
        u.splice(1..2, [0x87, 0x00]);
    });
    assert_eq!(check(&b), Err(E::NonMinimalVarint));
    // Duplicate trace_id.
    let b = resigned(&raw, &key, |u| u.extend_from_slice(&[0x0a, 0x01, b'x']));
    assert_eq!(check(&b), Err(E::DuplicateField { field: 1 }));
    // Two payloads: a heartbeat after the job request.
    let b = resigned(&raw, &key, |u| u.extend_from_slice(&[0x62, 0x00]));
    assert_eq!(check(&b), Err(E::MultiplePayloads { field: 12 }));
    // Unknown top-level field 7.
    let b = resigned(&raw, &key, |u| u.extend_from_slice(&[0x38, 0x01]));
    assert_eq!(check(&b), Err(E::UnknownField { field: 7 }));
    // Version as 0x81 0x00, as 2, and missing.
    let version_at = unsigned.windows(2).position(|w| w == [0x20, 0x01]).unwrap();
    let b = resigned(&raw, &key, |u| {
        u.splice(version_at + 1..version_at + 2, [0x81, 0x00]);
    });
    assert_eq!(check(&b), Err(E::NonMinimalVarint));
    let b = resigned(&raw, &key, |u| u[version_at + 1] = 0x02);
    assert_eq!(check(&b), Err(E::ProtocolVersion));
    let b = resigned(&raw, &key, |u| {
        u.drain(version_at..version_at + 2);
    });
    assert_eq!(check(&b), Err(E::ProtocolVersion));
    // Unknown field inside created_at (Timestamp field 3), lengths adjusted.
    let b = resigned(&raw, &key, |u| {
        u[ts_at + 1] += 2;
        u.splice(ts_at + 8..ts_at + 8, [0x18, 0x01]);
    });
    assert_eq!(check(&b), Err(E::UnknownNestedField));
    // created_at.seconds (a varint) as a length-delimited value: unknown to the peer.
    let b = resigned(&raw, &key, |u| {
        u.splice(ts_at + 2..ts_at + 8, [0x0a, 0x04, b'a', b'b', b'c', b'd']);
    });
    assert_eq!(check(&b), Err(E::UnknownNestedField));
    // Invalid UTF-8 in trace_id (the structure is fine; decoding fails).
    let b = resigned(&raw, &key, |u| u[2] = 0xff);
    assert!(matches!(check(&b), Err(E::Malformed(_))));
    // Unsigned, and signed twice.
    assert_eq!(check(&unsigned), Err(E::MissingSignature));
    let mut twice = raw.clone();
    production::append_signature(&mut twice, &[0x30]);
    assert_eq!(check(&twice), Err(E::DuplicateField { field: 14 }));
}

#[test]
fn legacy_signed_and_foreign_transcripts_are_refused() {
    let now = SystemTime::now();
    let (key, _, trust) = sealed(now);
    // A legacy-signed packet: no metadata.
    let mut legacy = job_request("sched");
    let bytes = cap_sign::packet::sign_to_bytes(&mut legacy, &key).unwrap();
    let got = production::verify(&bytes, &trust, now).unwrap_err();
    assert_eq!(got, E::MissingMetadata);
    assert_eq!(got.code(), ErrorCode::PROTOCOL_SIGNATURE_MISSING);
    // Production metadata, but signed the legacy way (no domain).
    let mut p = job_request("sched");
    p.signature_metadata = Some(
        Seal::new("k1", "job.echo", now)
            .unwrap()
            .metadata()
            .unwrap(),
    );
    let unsigned = canonical::to_bytes(&p);
    let sig = cap_sign::Signer::sign(&key, &unsigned).unwrap();
    let mut wire = unsigned.clone();
    production::append_signature(&mut wire, &sig);
    assert_eq!(
        production::verify(&wire, &trust, now).map(|_| ()),
        Err(E::BadSignature)
    );
    // A production signature does not verify as a legacy one.
    let (key, raw, _) = sealed(now);
    assert!(cap_sign::packet::verify_bytes(&raw, &key.public_key()).is_err());
}

#[test]
fn metadata_rejections() {
    let now = SystemTime::now();
    let (key, _, trust) = sealed(now);
    let with_meta = |edit: &dyn Fn(&mut v1::SignatureMetadata)| {
        let mut p = job_request("sched");
        let mut m = Seal::new("k1", "job.echo", now)
            .unwrap()
            .metadata()
            .unwrap();
        edit(&mut m);
        p.signature_metadata = Some(m);
        let raw = sign_raw(&canonical::to_bytes(&p), &key);
        production::verify(&raw, &trust, now).map(|_| ())
    };
    assert_eq!(with_meta(&|_| {}), Ok(()));
    assert_eq!(
        with_meta(&|m| m.profile_version = "cap-production-v2".into()),
        Err(E::UnsupportedProfile)
    );
    assert_eq!(
        with_meta(&|m| m.algorithm = "ECDSA-P384-SHA384".into()),
        Err(E::UnsupportedProfile)
    );
    assert!(matches!(
        with_meta(&|m| m.message_id.truncate(15)),
        Err(E::InvalidMetadata(_))
    ));
    assert!(matches!(
        with_meta(&|m| m.key_id.clear()),
        Err(E::InvalidMetadata(_))
    ));
    assert!(matches!(
        with_meta(&|m| m.audience.clear()),
        Err(E::InvalidMetadata(_))
    ));
    assert_eq!(with_meta(&|m| m.expires_at = None), Err(E::Expired));
    assert_eq!(
        with_meta(&|m| m.expires_at.as_mut().unwrap().nanos = -1),
        Err(E::InvalidExpiry)
    );
    assert_eq!(
        with_meta(&|m| m.expires_at.as_mut().unwrap().seconds = 253_402_300_800),
        Err(E::InvalidExpiry)
    );
}

#[test]
fn sealing_and_signing() {
    let now = SystemTime::now();
    let key = PrivateKey::generate();
    let mut p = job_request("sched");
    p.protocol_version = 0; // sealing sets it
    p.signature = vec![1, 2, 3].into(); // and ignores a stale signature
    let seal = Seal::new("k1", "job.echo", now)
        .unwrap()
        .with_lifetime(Duration::from_secs(30))
        .unwrap();
    let a = production::seal(&p, &key, &seal).unwrap();
    let b = production::seal(&p, &key, &seal).unwrap();
    let trust = ProductionTrust::new("job.echo", "acme", "sched")
        .unwrap()
        .with_key("k1", key.public_key());
    let va = production::verify(&a, &trust, now).unwrap();
    let vb = production::verify(&b, &trust, now).unwrap();
    assert_ne!(va.message_id(), vb.message_id(), "fresh message ids");
    let m = va.packet().signature_metadata.clone().unwrap();
    assert_eq!(m.profile_version, "cap-production-v1");
    assert_eq!(m.algorithm, "ECDSA-P256-SHA256");
    assert_eq!((m.audience.as_str(), m.key_id.as_str()), ("job.echo", "k1"));
    assert_eq!(va.packet().protocol_version, 1);
    // The wire is the canonical unsigned encoding, then field 14 last.
    let mut unsigned_packet = va.packet().clone();
    unsigned_packet.signature = Default::default();
    let e = production::extract_signature(&a).unwrap();
    assert_eq!(
        e.unsigned(),
        canonical::to_bytes(&unsigned_packet).as_slice()
    );
    assert!(a.starts_with(e.unsigned()));
    assert_eq!(a[e.unsigned().len()], 0x72);
    assert_eq!(
        production::verify(&a, &trust, now + Duration::from_secs(31)).map(|_| ()),
        Err(E::Expired)
    );
    // A given message id is used as is.
    let fixed = seal.clone().with_message_id([9; 16]);
    let c = production::seal(&p, &key, &fixed).unwrap();
    assert_eq!(
        production::verify(&c, &trust, now).unwrap().message_id(),
        &[9; 16]
    );
    // Sealing bounds.
    assert!(matches!(
        Seal::new("k1", "job.echo", now)
            .unwrap()
            .with_lifetime(Duration::from_secs(301)),
        Err(E::Config(_))
    ));
    assert!(matches!(
        Seal::new("k1", "job.echo", now)
            .unwrap()
            .with_lifetime(Duration::ZERO),
        Err(E::Config(_))
    ));
    assert!(matches!(Seal::new(" ", "a", now), Err(E::Config(_))));

    // `sign` checks the caller's metadata like the peer's signer.
    let mut q = job_request("sched");
    assert_eq!(production::sign(&q, &key, now), Err(E::MissingMetadata));
    let mut m = Seal::new("k1", "job.echo", now)
        .unwrap()
        .metadata()
        .unwrap();
    m.expires_at = Some(cap_proto::packet::timestamp(now + Duration::from_secs(301)));
    q.signature_metadata = Some(m.clone());
    assert_eq!(production::sign(&q, &key, now), Err(E::LifetimeExceeded));
    m.expires_at = Some(cap_proto::packet::timestamp(now));
    q.signature_metadata = Some(m.clone());
    assert_eq!(production::sign(&q, &key, now), Err(E::Expired));
    m.expires_at = Some(cap_proto::packet::timestamp(now + Duration::from_secs(10)));
    q.signature_metadata = Some(m);
    q.protocol_version = 2;
    assert_eq!(production::sign(&q, &key, now), Err(E::ProtocolVersion));
    q.protocol_version = 1;
    let signed = production::sign(&q, &key, now).unwrap();
    production::verify(&signed, &trust, now).unwrap();

    // `sign_unsigned` signs exact bytes (here non-canonical order), after the checks.
    let mut unsigned = production::extract_signature(&signed)
        .unwrap()
        .into_unsigned();
    let trace_len = 2 + unsigned[1] as usize;
    unsigned.rotate_left(trace_len); // trace_id moved to the end
    let resigned = production::sign_unsigned(&unsigned, &key, now).unwrap();
    assert!(resigned.starts_with(&unsigned));
    production::verify(&resigned, &trust, now).unwrap();
    let mut with_unknown = unsigned.clone();
    with_unknown.extend_from_slice(&[0x38, 0x01]);
    assert_eq!(
        production::sign_unsigned(&with_unknown, &key, now),
        Err(E::UnknownField { field: 7 })
    );
    assert_eq!(
        production::sign_unsigned(&signed, &key, now),
        Err(E::DuplicateField { field: 14 })
    );
}

#[test]
fn admission_pipeline() {
    let now = SystemTime::now();
    let (key, raw, trust) = sealed(now);
    let store = MemoryReplayStore::new(16);
    let first = block_on(production::admit(&raw, &trust, &store, now)).unwrap();
    assert!(first.is_first());
    let again = block_on(production::admit(&raw, &trust, &store, now)).unwrap();
    assert!(matches!(again, Admission::Duplicate(_)));
    assert_eq!(again.verified(), first.verified());
    // The same message id with another body: a conflict.
    let id = *first.verified().message_id();
    let mut other = job_request("sched");
    other.trace_id = "trace-2".into();
    let seal = Seal::new("k1", "job.echo", now)
        .unwrap()
        .with_message_id(id);
    let conflicting = production::seal(&other, &key, &seal).unwrap();
    let err = block_on(production::admit(&conflicting, &trust, &store, now)).unwrap_err();
    assert_eq!(err, E::ReplayConflict);
    assert_eq!(err.code(), ErrorCode::PROTOCOL_SIGNATURE_INVALID);
    // A job request whose mirrors disagree with the envelope identity.
    let mut p = job_request("sched");
    if let Some(v1::bus_packet::Payload::JobRequest(r)) = &mut p.payload {
        r.principal_id = "mallory".into();
    }
    let bad = production::seal(&p, &key, &Seal::new("k1", "job.echo", now).unwrap()).unwrap();
    assert_eq!(
        block_on(production::admit(&bad, &trust, &store, now)).unwrap_err(),
        E::IdentityMismatch("principal")
    );
    // An unauthenticated packet never takes a replay slot.
    let before = store.len();
    let mut tampered = raw.clone();
    tampered[3] ^= 1;
    assert!(block_on(production::admit(&tampered, &trust, &store, now)).is_err());
    assert_eq!(store.len(), before);
    // A full store rejects, as a store failure.
    let tiny = MemoryReplayStore::new(1);
    let (_, raw2, trust2) = sealed(now);
    block_on(production::admit(&raw2, &trust2, &tiny, now)).unwrap();
    let (_, raw3, trust3) = sealed(now);
    let full = block_on(production::admit(&raw3, &trust3, &tiny, now)).unwrap_err();
    assert!(full.is_store_failure());
    // Through `Arc<dyn DynReplayStore>`.
    let shared: std::sync::Arc<dyn production::DynReplayStore> =
        std::sync::Arc::new(MemoryReplayStore::default());
    assert!(
        block_on(production::admit(&raw, &trust, &shared, now))
            .unwrap()
            .is_first()
    );
}

#[test]
fn memory_store_honours_the_replay_contract() {
    let store = MemoryReplayStore::default();
    block_on(production::conformance::check_replay_store(
        &store,
        "memory",
        SystemTime::now(),
    ))
    .unwrap();
}

#[test]
fn trust_configuration_bounds() {
    assert!(matches!(
        ProductionTrust::new("", "t", "s"),
        Err(E::Config(_))
    ));
    assert!(matches!(
        ProductionTrust::new("a", "t ", "s"),
        Err(E::Config(_))
    ));
    assert!(matches!(
        ProductionTrust::new("a", "t", "\ts"),
        Err(E::Config(_))
    ));
    let t = ProductionTrust::new("a", "t", "s").unwrap();
    assert_eq!(t.max_lifetime(), Duration::from_secs(300));
    assert_eq!(t.clock_skew(), Duration::ZERO);
    assert!(t.clone().with_clock_skew(Duration::from_secs(61)).is_err());
    assert!(t.clone().with_max_lifetime(Duration::ZERO).is_err());
    let short = t
        .clone()
        .with_max_lifetime(Duration::from_secs(10))
        .unwrap();
    assert!(short.with_clock_skew(Duration::from_secs(11)).is_err());
    let skewed = t.with_clock_skew(Duration::from_secs(60)).unwrap();
    assert!(skewed.with_max_lifetime(Duration::from_secs(59)).is_err());
}

#[test]
fn error_codes() {
    assert_eq!(
        E::NonMinimalVarint.code(),
        ErrorCode::PROTOCOL_MALFORMED_PACKET
    );
    assert_eq!(
        E::ProtocolVersion.code(),
        ErrorCode::PROTOCOL_VERSION_MISMATCH
    );
    assert_eq!(
        E::MissingSignature.code(),
        ErrorCode::PROTOCOL_SIGNATURE_MISSING
    );
    assert_eq!(E::Expired.code(), ErrorCode::PROTOCOL_SIGNATURE_INVALID);
    assert_eq!(
        E::ReplayUnavailable("down".into()).code(),
        ErrorCode::UNSPECIFIED
    );
    assert!(E::ReplayUnavailable("down".into()).is_store_failure());
    assert!(!E::ReplayConflict.is_store_failure());
}
