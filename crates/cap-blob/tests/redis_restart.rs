//! Redis restarts under a live store: a clear error while it is down, then recovery with
//! the same store (no new client).
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

mod common;

use cap_blob::{RedisBlobStore, RedisConfig};
use common::outage;
use common::redis_server::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the redis-server binary: run by .ci/run"]
async fn recovers_after_a_redis_restart_without_a_new_client() {
    let mut server = RedisServer::start();
    let url = server.url();
    let store = RedisBlobStore::connect(RedisConfig::new(url.clone()))
        .await
        .unwrap();
    let reader = store.clone();
    outage::write_before(&store, &reader).await;

    server.kill();

    // While it is down: typed, retryable errors naming the server, promptly.
    outage::assert_unavailable(&store, &reader, &url).await;

    server.restart(); // same port, empty (no persistence)

    // The same store (and its clones) work again once it is back.
    outage::assert_recovers(&store, &reader).await;
}
