//! The Redis backend: the contract on a real server, fail-fast start-up, and errors that
//! name the server without its password.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cap_blob::{
    BlobStore, DynBlobStore, ErrorKind, Limits, RedisBlobStore, RedisConfig, conformance,
};
use common::redis_server::{RedisServer, free_port};

#[tokio::test]
async fn startup_fails_fast_naming_the_url_without_its_password() {
    let port = free_port(); // nothing listens there
    let started = Instant::now();
    let err = RedisBlobStore::connect(RedisConfig::new(format!(
        "redis://:hunter2@127.0.0.1:{port}/0"
    )))
    .await
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(err.is_retryable());
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("redis://:***@127.0.0.1:{port}/0")),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[tokio::test]
async fn bad_urls_are_configuration_errors() {
    for url in ["http://127.0.0.1:6379", "not a url", "redis://"] {
        let err = RedisBlobStore::connect(RedisConfig::new(url))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{url}: {err}");
    }
}

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn rediss_without_the_tls_feature_is_a_configuration_error() {
    let err = RedisBlobStore::connect(RedisConfig::new("rediss://:pw@127.0.0.1:1/0"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.to_string().contains("`tls` feature"), "{err}");
    assert!(!err.to_string().contains("pw@"), "{err}");
}

#[tokio::test]
#[ignore = "needs a real Redis: run by .ci/run"]
async fn redis_store_passes_the_conformance_suite() {
    let store = common::shared_redis().await;
    conformance::run(&store, &common::unique_prefix("conf"))
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs a real Redis: run by .ci/run"]
async fn redis_store_behind_arc_dyn_passes_the_conformance_suite() {
    let store: Arc<dyn DynBlobStore> = Arc::new(common::shared_redis().await);
    conformance::run(&store, &common::unique_prefix("conf-dyn"))
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "needs a real Redis: run by .ci/run"]
async fn redis_store_with_a_small_limit_passes_the_conformance_suite() {
    let url = common::redis_url();
    let cfg = RedisConfig::new(url).with_limits(Limits::default().with_max_blob_bytes(1500));
    let store = RedisBlobStore::connect(cfg).await.unwrap();
    conformance::run(&store, &common::unique_prefix("conf-small"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Redis: run by .ci/run"]
async fn clones_share_the_connection_across_tasks() {
    let store = common::shared_redis().await;
    let prefix = common::unique_prefix("clones");
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            let key = format!("{prefix}-{i}");
            tokio::spawn(async move {
                store
                    .put(
                        &key,
                        Bytes::from(vec![i as u8; 100]),
                        Some(Duration::from_secs(60)),
                    )
                    .await
                    .unwrap();
                let got = store.get(&key).await.unwrap();
                assert!(store.delete(&key).await.unwrap());
                got
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_eq!(t.await.unwrap(), vec![i as u8; 100]);
    }
    store.ping().await.unwrap();
}

#[tokio::test]
#[ignore = "needs a real Redis: run by .ci/run"]
async fn ttls_are_set_on_the_server() {
    // The TTL is Redis's own (PX), visible to every client, not bookkeeping in ours.
    let store = common::shared_redis().await;
    let key = common::unique_prefix("pttl");
    store
        .put(
            &key,
            Bytes::from_static(b"x"),
            Some(Duration::from_secs(100)),
        )
        .await
        .unwrap();
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((99_000..=100_000).contains(&pttl), "{pttl}");
    store
        .put(&key, Bytes::from_static(b"x"), None)
        .await
        .unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(pttl, -1, "a put without TTL makes the key permanent");
    store.delete(&key).await.unwrap();
}

#[tokio::test]
#[ignore = "needs the redis-server binary: run by .ci/run"]
async fn a_wrong_password_is_a_backend_error_without_the_password() {
    let server = RedisServer::start_with(free_port(), &["--requirepass".into(), "right-pw".into()]);
    let port = server.port();
    let err = RedisBlobStore::connect(RedisConfig::new(format!(
        "redis://:wrong-pw@127.0.0.1:{port}/0"
    )))
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("redis://:***@127.0.0.1:{port}/0")),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong-pw") && !msg.contains("right-pw"),
        "{msg}"
    );

    let store = RedisBlobStore::connect(RedisConfig::new(format!(
        "redis://:right-pw@127.0.0.1:{port}/0"
    )))
    .await
    .unwrap();
    assert_eq!(store.location(), format!("redis://:***@127.0.0.1:{port}/0"));
    assert!(!format!("{store:?}").contains("right-pw"));
    store
        .put("k", Bytes::from_static(b"v"), None)
        .await
        .unwrap();
    assert_eq!(store.get("k").await.unwrap(), "v");
}

#[tokio::test]
async fn a_silent_server_fails_within_the_connect_timeout() {
    // Accepts connections (the kernel's backlog) but never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let started = Instant::now();
    let err = RedisBlobStore::connect(RedisConfig::new(format!("redis://127.0.0.1:{port}/0")))
        .await
        .unwrap_err();
    let took = started.elapsed();
    drop(listener);
    assert!(took < Duration::from_secs(3), "took {took:?}: {err}");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}
