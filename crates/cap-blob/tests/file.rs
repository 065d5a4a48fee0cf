//! The file backend keeps the contract, writes plain files atomically, keeps TTLs across
//! restarts, and never reaches outside its root.
#![cfg(all(feature = "file", unix))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests may unwrap

use std::time::Duration;

use bytes::Bytes;
use cap_blob::{BlobStore, ErrorKind, FileBlobStore, Limits, Pointer, StoreInfo, conformance};

fn store() -> (tempfile::TempDir, FileBlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = FileBlobStore::open(dir.path().join("blobs")).unwrap();
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_store_passes_the_conformance_suite() {
    let (_dir, store) = store();
    conformance::run(&store, "conf").await.unwrap();
    // Nested keys too.
    conformance::run(&store, "nested/dir/conf").await.unwrap();
}

#[tokio::test]
async fn non_durable_store_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileBlobStore::builder(dir.path())
        .durable(false)
        .limits(Limits::default().with_max_blob_bytes(300_000))
        .open()
        .unwrap();
    conformance::run(&store, "conf").await.unwrap();
}

#[tokio::test]
async fn blobs_are_plain_files_and_no_temporaries_remain() {
    let (_dir, store) = store();
    let data: Vec<u8> = (0..=255u8).collect();
    for i in 0..20 {
        store
            .put("ctx:job-1", Bytes::from(data.clone()), None)
            .await
            .unwrap();
        store
            .put(
                &format!("k{i}"),
                Bytes::from_static(b"x"),
                Some(Duration::from_secs(60)),
            )
            .await
            .unwrap();
    }
    // Another program reading the file sees exactly the bytes.
    assert_eq!(std::fs::read(store.root().join("ctx:job-1")).unwrap(), data);
    let tmp = store.root().join(".cap-blob/tmp");
    assert_eq!(
        std::fs::read_dir(tmp).unwrap().count(),
        0,
        "temporary files left behind"
    );
}

#[tokio::test]
async fn ttls_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    {
        let store = FileBlobStore::open(dir.path()).unwrap();
        store
            .put(
                "short",
                Bytes::from_static(b"s"),
                Some(Duration::from_millis(300)),
            )
            .await
            .unwrap();
        store
            .put(
                "long",
                Bytes::from_static(b"l"),
                Some(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
    }
    let store = FileBlobStore::open(dir.path()).unwrap();
    let present = store.exists("short").await.unwrap();
    if t0.elapsed() < Duration::from_millis(300) {
        assert!(present, "expired early");
    }
    tokio::time::sleep_until((t0 + Duration::from_millis(600)).into()).await;
    let reopened = FileBlobStore::open(dir.path()).unwrap();
    assert_eq!(
        reopened.get("short").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(reopened.get("long").await.unwrap(), "l");
}

#[tokio::test]
async fn purge_removes_expired_files_only() {
    let (_dir, store) = store();
    for i in 0..5 {
        store
            .put(
                &format!("old{i}"),
                Bytes::from_static(b"o"),
                Some(Duration::from_millis(1)),
            )
            .await
            .unwrap();
    }
    store
        .put(
            "a/b/nested-old",
            Bytes::from_static(b"o"),
            Some(Duration::from_millis(1)),
        )
        .await
        .unwrap();
    store
        .put("keep", Bytes::from_static(b"k"), None)
        .await
        .unwrap();
    store
        .put(
            "later",
            Bytes::from_static(b"l"),
            Some(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.purge_expired().await.unwrap(), 6);
    assert!(!store.root().join("old0").exists());
    assert!(!store.root().join("a/b/nested-old").exists());
    assert_eq!(store.get("keep").await.unwrap(), "k");
    assert_eq!(store.get("later").await.unwrap(), "l");
    assert_eq!(store.purge_expired().await.unwrap(), 0);
    // Deleted blobs leave no metadata behind.
    assert!(store.delete("keep").await.unwrap());
    assert!(!store.root().join(".cap-blob/meta/keep").exists());
}

#[tokio::test]
async fn a_file_replaced_by_other_means_is_not_expired_by_old_metadata() {
    let (_dir, store) = store();
    store
        .put(
            "k",
            Bytes::from_static(b"old"),
            Some(Duration::from_millis(1)),
        )
        .await
        .unwrap();
    // Another program replaces the file (new inode, new length).
    let tmp = store.root().join("outside-write");
    std::fs::write(&tmp, b"written by hand").unwrap();
    std::fs::rename(&tmp, store.root().join("k")).unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.get("k").await.unwrap(), "written by hand");
}

#[tokio::test]
async fn pointers_name_files_under_the_root() {
    let (_dir, store) = store();
    let ptr = store
        .put_context("job-7", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    let expected = format!("file://{}/ctx:job-7", store.root().display());
    assert_eq!(ptr.to_string(), expected);
    assert_eq!(
        store
            .get_ptr(&Pointer::parse(&expected).unwrap())
            .await
            .unwrap(),
        "{}"
    );
    let nested = store.pointer_for("a/b").unwrap();
    assert_eq!(store.key_for(&nested).unwrap(), "a/b");
}

#[tokio::test]
async fn nothing_outside_the_root_is_reachable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let store = FileBlobStore::open(&root).unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"top secret").unwrap();
    let root = store.root().to_str().unwrap().to_owned();
    let outside = secret.canonicalize().unwrap();
    let outside = outside.to_str().unwrap();

    for ptr in [
        format!("file://{outside}"),
        format!("file://{root}"),
        format!("file://{root}other/x"),
        format!("file://{root}/.cap-blob/meta/x"),
        format!("file://{root}/a//b"),
        format!("file://{root}/./x"),
        "redis://ctx:1".to_owned(),
    ] {
        let p = Pointer::parse(&ptr).unwrap();
        let e = store.get_ptr(&p).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidPointer, "{ptr}: {e}");
        let e = store
            .put_ptr(&p, Bytes::from_static(b"x"), None)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidPointer, "{ptr}: {e}");
    }
    // `..` never gets as far as the store: pointers with it do not parse.
    assert!(Pointer::parse(&format!("file://{root}/../secret")).is_err());
    for key in [
        "../secret",
        "a/../../secret",
        "/etc/passwd",
        ".cap-blob/meta/k",
        "a/./b",
    ] {
        assert_eq!(
            store.get(key).await.unwrap_err().kind(),
            ErrorKind::InvalidKey,
            "{key}"
        );
        assert_eq!(
            store
                .put(key, Bytes::from_static(b"x"), None)
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidKey,
            "{key}"
        );
    }

    // Symbolic links planted in the root are not followed, for files or directories.
    std::os::unix::fs::symlink(&secret, store.root().join("link")).unwrap();
    std::os::unix::fs::symlink(dir.path(), store.root().join("dirlink")).unwrap();
    assert_eq!(
        store.get("link").await.unwrap_err().kind(),
        ErrorKind::Backend
    );
    assert_eq!(
        store.get("dirlink/secret").await.unwrap_err().kind(),
        ErrorKind::Backend
    );
    assert_eq!(
        store
            .put("dirlink/planted", Bytes::from_static(b"x"), None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Backend
    );
    assert!(!dir.path().join("planted").exists());
    // Overwriting the link replaces the link, not the file it pointed to.
    store
        .put("link", Bytes::from_static(b"mine"), None)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&secret).unwrap(), b"top secret");
    assert_eq!(store.get("link").await.unwrap(), "mine");
}

#[tokio::test]
async fn oversized_files_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileBlobStore::builder(dir.path())
        .limits(Limits::default().with_max_blob_bytes(10))
        .open()
        .unwrap();
    std::fs::write(store.root().join("big"), vec![0u8; 11]).unwrap();
    assert_eq!(
        store.get("big").await.unwrap_err().kind(),
        ErrorKind::TooLarge
    );
}

#[tokio::test]
async fn directories_are_not_blobs() {
    let (_dir, store) = store();
    store
        .put("a/b", Bytes::from_static(b"x"), None)
        .await
        .unwrap();
    assert_eq!(
        store.get("a").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(!store.exists("a").await.unwrap());
    assert!(!store.delete("a").await.unwrap());
    assert_eq!(
        store
            .put("a", Bytes::from_static(b"x"), None)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Backend
    );
}

#[test]
fn unusable_roots_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let e = FileBlobStore::open(file.join("sub")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    let e = FileBlobStore::open(dir.path().join("with space")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
}

#[test]
fn works_outside_a_tokio_runtime() {
    let (_dir, store) = store();
    futures_util::FutureExt::now_or_never(store.put("k", Bytes::from_static(b"v"), None))
        .expect("runs inline without a runtime")
        .unwrap();
    let got = futures_util::FutureExt::now_or_never(store.get("k"))
        .unwrap()
        .unwrap();
    assert_eq!(got, "v");
}
