//! The in-memory backend keeps the whole contract, directly and behind `Arc<dyn …>`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cap_blob::{
    BlobStore, DynBlobStore, ErrorKind, Limits, MemoryBlobStore, StoreInfo, conformance,
};

#[tokio::test]
async fn memory_store_passes_the_conformance_suite() {
    conformance::run(&MemoryBlobStore::new(), "conf")
        .await
        .unwrap();
}

#[tokio::test]
async fn memory_store_emulating_redis_passes_the_conformance_suite() {
    let store = MemoryBlobStore::emulating_redis(Limits::default());
    conformance::run(&store, "conf").await.unwrap();
}

#[tokio::test]
async fn small_limit_passes_the_conformance_suite() {
    let store = MemoryBlobStore::with_limits(Limits::default().with_max_blob_bytes(300_000));
    conformance::run(&store, "conf").await.unwrap();
}

#[tokio::test]
async fn arc_dyn_store_passes_the_conformance_suite() {
    let store: Arc<dyn DynBlobStore> = Arc::new(MemoryBlobStore::new());
    // `Arc<dyn DynBlobStore>` is a `BlobStore`, and so is the bare `dyn DynBlobStore`.
    conformance::run(&store, "conf").await.unwrap();
    conformance::run(&*store, "conf2").await.unwrap();
}

#[tokio::test]
async fn clones_share_one_map() {
    let a = MemoryBlobStore::new();
    let b = a.clone();
    a.put("k", Bytes::from_static(b"v"), None).await.unwrap();
    assert_eq!(b.get("k").await.unwrap(), "v");
    assert!(b.delete("k").await.unwrap());
    assert_eq!(a.get("k").await.unwrap_err().kind(), ErrorKind::NotFound);
    // Separate stores do not share.
    let c = MemoryBlobStore::new();
    a.put("k", Bytes::from_static(b"v"), None).await.unwrap();
    assert!(!c.exists("k").await.unwrap());
}

#[tokio::test]
async fn job_helpers_use_the_configured_default_ttls() {
    let limits = Limits::default()
        .with_context_ttl(Some(Duration::from_millis(50)))
        .with_result_ttl(None);
    let store = MemoryBlobStore::emulating_redis(limits);
    let ctx = store
        .put_context("j", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let res = store
        .put_result("j", Bytes::from_static(b"1"))
        .await
        .unwrap();
    let kept = store
        .put_context_with_ttl(
            "k",
            Bytes::from_static(b"{}"),
            Some(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(ctx.to_string(), "redis://ctx:j");
    assert_eq!(res.to_string(), "redis://res:j");
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(
        store.get_ptr(&ctx).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(store.get_ptr(&res).await.unwrap(), "1");
    assert_eq!(store.get_ptr(&kept).await.unwrap(), "{}");
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn the_limit_is_per_store_and_checked_before_writing() {
    let store = MemoryBlobStore::with_limits(Limits::default().with_max_blob_bytes(4));
    assert_eq!(store.limits().max_blob_bytes, 4);
    let err = store
        .put("k", Bytes::from_static(b"12345"), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
    assert_eq!(
        err.to_string(),
        "blob of 5 bytes exceeds the limit of 4 bytes"
    );
    assert!(store.is_empty());
    let err = store
        .put_result("j", Bytes::from_static(b"12345"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
}

#[test]
fn store_futures_are_send() {
    fn send<T: Send>(_: T) {}
    let store = MemoryBlobStore::new();
    send(store.get("k"));
    send(store.put_context("j", Bytes::new()));
    let dynamic: Arc<dyn DynBlobStore> = Arc::new(store);
    send(dynamic.get("k"));
    send(dynamic.get_boxed("k"));
}
