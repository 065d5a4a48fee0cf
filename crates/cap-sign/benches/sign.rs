//! Sign and verify a typical signed JobRequest packet (criterion).
//! `cap bench sign` prints the same figures next to the Python peer's (`cargo xtask bench sign`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_sign::{PrivateKey, Signer, Verifier, packet};
use criterion::{Criterion, criterion_group, criterion_main};

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

criterion_group!(benches, bench);
criterion_main!(benches);
