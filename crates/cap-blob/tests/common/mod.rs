//! Shared test support: unique key prefixes, and throwaway `redis-server`s.
#![allow(dead_code)] // each test binary uses a different part

pub mod outage;
pub mod redis_server;

use std::hash::{BuildHasher, RandomState};
use std::time::{SystemTime, UNIX_EPOCH};

/// A prefix no other test run uses, so tests can share a Redis server.
pub fn unique_prefix(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let r = RandomState::new().hash_one(nanos);
    format!("cap-blob-test-{name}-{r:016x}")
}

/// `REDIS_URL`, default `redis://127.0.0.1:6379/0`.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| cap_blob::DEFAULT_REDIS_URL.to_owned())
}

/// A store on the shared Redis, failing the test clearly if it cannot be reached.
pub async fn shared_redis() -> cap_blob::RedisBlobStore {
    let url = redis_url();
    cap_blob::RedisBlobStore::connect(cap_blob::RedisConfig::new(url.clone()))
        .await
        .unwrap_or_else(|e| panic!("needs a real Redis at {url} (set REDIS_URL): {e}"))
}
