//! The router serves each pointer from the store registered for its scheme.
#![cfg(all(feature = "file", unix))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cap_blob::{
    BlobStore, DynBlobStore, ErrorKind, FileBlobStore, Limits, MemoryBlobStore, Pointer, Router,
};

#[tokio::test]
async fn routes_by_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let mem = MemoryBlobStore::new();
    let redis_standin = MemoryBlobStore::emulating_redis(Limits::default());
    let file = FileBlobStore::open(dir.path()).unwrap();
    let router = Router::new()
        .with(mem.clone())
        .with(redis_standin.clone())
        .with(file.clone());
    assert_eq!(
        router.schemes().collect::<Vec<_>>(),
        ["file", "mem", "redis"]
    );

    let m = mem.put_result("j", Bytes::from_static(b"m")).await.unwrap();
    let r = redis_standin
        .put_result("j", Bytes::from_static(b"r"))
        .await
        .unwrap();
    let f = file
        .put_result("j", Bytes::from_static(b"f"))
        .await
        .unwrap();
    assert_eq!(router.get(&m.to_string()).await.unwrap(), "m");
    assert_eq!(router.get(&r.to_string()).await.unwrap(), "r");
    assert_eq!(router.get(&f.to_string()).await.unwrap(), "f");
    assert_eq!(router.get("redis://res:j").await.unwrap(), "r");

    // Writes, deletes and lookups by pointer go to the same stores.
    let p = Pointer::parse("mem://via-router").unwrap();
    router
        .put_ptr(&p, Bytes::from_static(b"v"), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(mem.get("via-router").await.unwrap(), "v");
    assert!(router.exists_ptr(&p).await.unwrap());
    assert!(router.delete_ptr(&p).await.unwrap());
    assert!(!router.exists_ptr(&p).await.unwrap());
}

#[tokio::test]
async fn unregistered_schemes_and_bad_pointers_are_typed_errors() {
    let router = Router::new().with(MemoryBlobStore::new());
    let e = router.get("s3://bucket/key").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnregisteredScheme);
    assert_eq!(
        e.to_string(),
        "no blob store is registered for pointer scheme `s3://`"
    );
    let e = router.get("redis://ctx:1").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnregisteredScheme);
    for bad in ["", "ctx:1", "ftp://x/y", "redis://a b", "redis://u:p@h/0"] {
        assert_eq!(
            router.get(bad).await.unwrap_err().kind(),
            ErrorKind::InvalidPointer,
            "{bad:?}"
        );
    }
    let e = Router::new().get("mem://k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnregisteredScheme);
    assert_eq!(
        router.get("mem://missing").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn one_store_can_serve_several_schemes() {
    // An embedded deployment: the memory store answers for redis:// pointers too.
    let mem = MemoryBlobStore::new();
    let shared: Arc<dyn DynBlobStore> = Arc::new(mem.clone());
    let router = Router::new()
        .with_scheme("mem", shared.clone())
        .with_scheme("redis", shared);
    mem.put("ctx:1", Bytes::from_static(b"{}"), None)
        .await
        .unwrap();
    assert_eq!(router.get("redis://ctx:1").await.unwrap(), "{}");
    assert_eq!(router.get("mem://ctx:1").await.unwrap(), "{}");
    // A store registered for a scheme it does not serve refuses the pointer.
    let dir = tempfile::tempdir().unwrap();
    let odd =
        Router::new().with_scheme("redis", Arc::new(FileBlobStore::open(dir.path()).unwrap()));
    assert_eq!(
        odd.get("redis://k").await.unwrap_err().kind(),
        ErrorKind::InvalidPointer
    );
    assert!(format!("{router:?}").contains("redis"));
}
