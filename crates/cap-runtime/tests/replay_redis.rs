//! CAP-PRODUCTION replay admission in a real Redis (run by .ci/run with
//! `cargo test -- --ignored`): the replay-store contract, admissions shared between
//! stores, the TTL, exactly one first admission under concurrency, and the full admit
//! pipeline. Each test uses its own key prefix and deletes its keys.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use cap_proto::{Timestamp, v1};
use cap_runtime::replay::RedisReplayStore;
use cap_sign::PrivateKey;
use cap_sign::production::{
    self, Admission, ProductionError, ProductionTrust, ReplayEntry, ReplayKey, ReplayOutcome,
    ReplayStore, Seal,
};
use std::time::{Duration, SystemTime};

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

fn unique_prefix(tag: &str) -> String {
    format!(
        "cap:test:replay:{tag}:{}:",
        &cap_runtime::id::new_trace_id()[..12]
    )
}

async fn store(prefix: &str) -> RedisReplayStore {
    RedisReplayStore::connect(&redis_url(), prefix)
        .await
        .unwrap_or_else(|e| panic!("needs a Redis server at {}: {e}", redis_url()))
}

async fn raw_conn() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Deletes every key under `prefix` (SCAN, never KEYS, on a shared server); returns how
/// many there were.
async fn cleanup(prefix: &str) -> usize {
    let mut c = raw_conn().await;
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await
            .unwrap();
        if !keys.is_empty() {
            let n: usize = redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut c)
                .await
                .unwrap();
            deleted += n;
        }
        if next == 0 {
            return deleted;
        }
        cursor = next;
    }
}

fn entry(tenant: &str, id: u8, digest: u8, keep: Duration) -> ReplayEntry {
    ReplayEntry {
        key: ReplayKey {
            tenant: tenant.into(),
            audience: "job.echo".into(),
            sender: "sched".into(),
            message_id: [id; 16],
        },
        digest: [digest; 32],
        keep_until: SystemTime::now() + keep,
    }
}

#[tokio::test]
#[ignore = "needs a real Redis: run by .ci/run"]
async fn redis_store_honours_the_replay_contract() {
    let prefix = unique_prefix("contract");
    let s = store(&prefix).await;
    production::conformance::check_replay_store(&s, "redis", SystemTime::now())
        .await
        .unwrap();
    assert!(cleanup(&prefix).await > 0, "the contract stored keys");
}

#[tokio::test]
#[ignore = "needs a real Redis: run by .ci/run"]
async fn two_stores_share_admissions_and_entries_expire() {
    let prefix = unique_prefix("shared");
    let a = store(&prefix).await;
    let b = store(&prefix).await;
    let e = entry("acme", 1, 1, Duration::from_secs(90));
    let now = SystemTime::now();
    assert_eq!(a.admit(&e, now).await, Ok(ReplayOutcome::First));
    assert_eq!(b.admit(&e, now).await, Ok(ReplayOutcome::Duplicate));
    let mut other = e.clone();
    other.digest = [2; 32];
    assert_eq!(
        b.admit(&other, now).await,
        Err(ProductionError::ReplayConflict)
    );
    // The TTL runs to keep_until, and the value is the digest.
    let mut c = raw_conn().await;
    let key = a.redis_key(&e.key);
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert!((80_000..=90_000).contains(&pttl), "PTTL {pttl}");
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(stored, [1; 32]);
    // A short-lived entry is gone after its TTL: the same key is first again.
    let short = entry("acme", 3, 1, Duration::from_millis(300));
    assert_eq!(
        a.admit(&short, SystemTime::now()).await,
        Ok(ReplayOutcome::First)
    );
    assert_eq!(
        b.admit(&short, SystemTime::now()).await,
        Ok(ReplayOutcome::Duplicate)
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    let again = ReplayEntry {
        keep_until: SystemTime::now() + Duration::from_secs(5),
        ..short
    };
    assert_eq!(
        b.admit(&again, SystemTime::now()).await,
        Ok(ReplayOutcome::First)
    );
    cleanup(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Redis: run by .ci/run"]
async fn concurrent_admissions_have_exactly_one_first() {
    let prefix = unique_prefix("race");
    let stores = [store(&prefix).await, store(&prefix).await];
    let e = entry("acme", 7, 7, Duration::from_secs(30));
    let mut tasks = Vec::new();
    for i in 0..32 {
        let s = stores[i % 2].clone();
        let e = e.clone();
        tasks.push(tokio::spawn(
            async move { s.admit(&e, SystemTime::now()).await },
        ));
    }
    let mut firsts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(ReplayOutcome::First) => firsts += 1,
            Ok(ReplayOutcome::Duplicate) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(firsts, 1);
    cleanup(&prefix).await;
}

#[tokio::test]
#[ignore = "needs a real Redis: run by .ci/run"]
async fn admit_pipeline_over_redis() {
    let prefix = unique_prefix("admit");
    let s = store(&prefix).await;
    let key = PrivateKey::generate();
    let now = SystemTime::now();
    let mut p = v1::BusPacket::new(
        "t",
        "sched",
        Timestamp::default(),
        v1::JobRequest {
            job_id: "j".into(),
            tenant_id: "acme".into(),
            ..Default::default()
        },
    );
    p.identity = Some(v1::IdentityBinding {
        tenant_id: "acme".into(),
        ..Default::default()
    });
    let raw = production::seal(&p, &key, &Seal::new("k", "job.echo", now).unwrap()).unwrap();
    let trust = ProductionTrust::new("job.echo", "acme", "sched")
        .unwrap()
        .with_key("k", key.public_key())
        .with_clock_skew(Duration::from_secs(30))
        .unwrap();
    let first = production::admit(&raw, &trust, &s, now).await.unwrap();
    assert!(first.is_first());
    assert!(matches!(
        production::admit(&raw, &trust, &s, now).await.unwrap(),
        Admission::Duplicate(_)
    ));
    // Kept until expiry (5 min) + skew (30 s).
    let mut c = raw_conn().await;
    let pttl: i64 = redis::cmd("PTTL")
        .arg(s.redis_key(&first.verified().replay_key()))
        .query_async(&mut c)
        .await
        .unwrap();
    assert!((320_000..=330_000).contains(&pttl), "PTTL {pttl}");
    cleanup(&prefix).await;
}

#[tokio::test]
async fn unreachable_redis_is_unavailable_and_fails_fast() {
    let started = std::time::Instant::now();
    let e = RedisReplayStore::connect("redis://127.0.0.1:1/0", "x:")
        .await
        .unwrap_err();
    assert!(e.is_store_failure(), "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
