//! Sign and verify a typical signed JobRequest packet (criterion), and the two signature
//! profiles side by side on the same packet: `profile_sign/{legacy,production}` and
//! `profile_verify/{legacy,production}` (production = seal with fresh metadata and a
//! random message id; verify = exact-wire checks, decode, unknown-field check, metadata,
//! authority and ECDSA).
//! `cap bench sign` prints the same figures next to the Python peer's (`cargo xtask bench sign`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_sign::production::{self, ProductionTrust, Seal};
use cap_sign::{PrivateKey, Signer, Verifier, packet};
use criterion::{Criterion, criterion_group, criterion_main};
use std::time::SystemTime;

fn bench(c: &mut Criterion) {
    let key = PrivateKey::generate();
    let public = key.public_key();
    let mut p = cap_sign::bench_support::typical_job_request();
    let signed = packet::sign_to_bytes(&mut p, &key).unwrap();
    let unsigned = cap_proto::canonical::signing_bytes(&signed).unwrap();

    c.bench_function("sign_packet", |b| {
        b.iter(|| {
            let mut q = p.clone();
            packet::sign_to_bytes(&mut q, &key).unwrap()
        })
    });
    c.bench_function("verify_packet", |b| {
        b.iter(|| packet::verify_bytes(&signed, &public).unwrap())
    });
    c.bench_function("ecdsa_sign_only", |b| {
        b.iter(|| key.sign(&unsigned).unwrap())
    });
    c.bench_function("ecdsa_verify_only", |b| {
        b.iter(|| public.verify(&unsigned, &p.signature).unwrap())
    });
}

fn profiles(c: &mut Criterion) {
    let key = PrivateKey::generate();
    let public = key.public_key();
    let mut p = cap_sign::bench_support::typical_job_request();
    p.identity = Some(cap_proto::v1::IdentityBinding {
        tenant_id: "acme".into(),
        principal_id: "alice".into(),
        ..Default::default()
    });
    let now = SystemTime::now();
    let seal = Seal::new("client-key-1", "job.code.review", now).unwrap();
    let trust = ProductionTrust::new("job.code.review", "acme", "client-1")
        .unwrap()
        .with_key("client-key-1", public.clone());
    let legacy = packet::sign_to_bytes(&mut p.clone(), &key).unwrap();
    let prod = production::seal(&p, &key, &seal).unwrap();

    let mut g = c.benchmark_group("profile_sign");
    g.bench_function("legacy", |b| {
        b.iter(|| {
            let mut q = p.clone();
            packet::sign_to_bytes(&mut q, &key).unwrap()
        })
    });
    g.bench_function("production", |b| {
        b.iter(|| production::seal(&p, &key, &seal).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("profile_verify");
    g.bench_function("legacy", |b| {
        b.iter(|| packet::verify_bytes(&legacy, &public).unwrap())
    });
    g.bench_function("production", |b| {
        b.iter(|| production::verify(&prod, &trust, now).unwrap())
    });
    // Everything but the ECDSA verification: the profile's own overhead.
    g.bench_function("production_checks_only", |b| {
        let other = ProductionTrust::new("job.code.review", "acme", "client-1")
            .unwrap()
            .with_key("other", public.clone());
        b.iter(|| production::verify(&prod, &other, now).unwrap_err())
    });
    g.finish();
}

criterion_group!(benches, bench, profiles);
criterion_main!(benches);
