//! Redis restarts under a live store: a clear error while it is down, then recovery with
//! the same store (no new client).
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cap_blob::{BlobStore, ErrorKind, RedisBlobStore, RedisConfig};
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
    store
        .put("before", Bytes::from_static(b"1"), None)
        .await
        .unwrap();
    assert_eq!(reader.get("before").await.unwrap(), "1");

    server.kill();

    // While it is down: typed, retryable errors naming the server, promptly.
    for _ in 0..3 {
        let started = Instant::now();
        let err = store
            .put("during", Bytes::from_static(b"2"), None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.is_retryable());
        assert!(err.to_string().contains(&url), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "took {:?}",
            started.elapsed()
        );
        eprintln!("put while down failed in {:?}: {err}", started.elapsed());
        let err = reader.get("before").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    }

    server.restart(); // same port, empty (no persistence)

    // The same store (and its clones) work again once it is back.
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(15);
    loop {
        match store.put("after", Bytes::from_static(b"3"), None).await {
            Ok(()) => break,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                assert!(Instant::now() < deadline, "no recovery after restart: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    eprintln!("recovered {:?} after the restart", restarted.elapsed());
    assert_eq!(reader.get("after").await.unwrap(), "3");
    assert_eq!(
        reader.get("before").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}
