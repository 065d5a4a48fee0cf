//! The checks of a Redis outage under a live store, shared by the plain and TLS restart
//! tests: typed, retryable, prompt errors while the server is down; recovery of the same
//! store (and its clones) once it is back.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cap_blob::{BlobStore, ErrorKind, RedisBlobStore};

/// Longest a call may take while Redis is down.
pub const PROMPT: Duration = Duration::from_secs(6);

/// Writes `before` = 1 through `store` and reads it back through `reader`.
pub async fn write_before(store: &RedisBlobStore, reader: &RedisBlobStore) {
    store
        .put("before", Bytes::from_static(b"1"), None)
        .await
        .unwrap();
    assert_eq!(reader.get("before").await.unwrap(), "1");
}

/// While the server at `url` is down: puts and gets fail promptly as `Unavailable`,
/// retryable, naming the URL.
pub async fn assert_unavailable(store: &RedisBlobStore, reader: &RedisBlobStore, url: &str) {
    for _ in 0..3 {
        let started = Instant::now();
        let err = store
            .put("during", Bytes::from_static(b"2"), None)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.is_retryable());
        assert!(err.to_string().contains(url), "{err}");
        assert!(started.elapsed() < PROMPT, "took {:?}", started.elapsed());
        eprintln!("put while down failed in {:?}: {err}", started.elapsed());
        let err = reader.get("before").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    }
}

/// After a restart (empty server): the same store works again within 15 s, its clone
/// reads what it writes, and the key written before the outage is gone.
pub async fn assert_recovers(store: &RedisBlobStore, reader: &RedisBlobStore) {
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
