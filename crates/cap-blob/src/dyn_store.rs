//! `DynBlobStore`: the object-safe companion of [`BlobStore`], for `Arc<dyn …>` use.
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use cap_blob::{BlobStore, DynBlobStore, MemoryBlobStore};
//!
//! # tokio_test_block_on(async {
//! let store: Arc<dyn DynBlobStore> = Arc::new(MemoryBlobStore::new());
//! // `Arc<dyn DynBlobStore>` is itself a `BlobStore`.
//! store.put("k", Bytes::from_static(b"v"), None).await.unwrap();
//! assert_eq!(store.get("k").await.unwrap(), "v");
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use crate::{BlobStore, Result, StoreInfo};

/// A boxed, `Send` future: what [`DynBlobStore`] methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe form of [`BlobStore`]: the same operations, returning boxed futures.
///
/// Implemented for every `BlobStore`; call it through `Arc<dyn DynBlobStore>`, which is a
/// `BlobStore` again (so generic code takes either).
pub trait DynBlobStore: StoreInfo {
    /// [`BlobStore::get`], boxed.
    fn get_boxed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes>>;
    /// [`BlobStore::put`], boxed.
    fn put_boxed<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>>;
    /// [`BlobStore::delete`], boxed.
    fn delete_boxed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>>;
    /// [`BlobStore::exists`], boxed.
    fn exists_boxed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>>;
    /// [`BlobStore::put_if_absent`], boxed.
    fn put_if_absent_boxed<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>>;
}

impl<S: BlobStore> DynBlobStore for S {
    fn get_boxed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Bytes>> {
        Box::pin(self.get(key))
    }
    fn put_boxed<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.put(key, value, ttl))
    }
    fn delete_boxed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.delete(key))
    }
    fn exists_boxed<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.exists(key))
    }
    fn put_if_absent_boxed<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(self.put_if_absent(key, value, ttl))
    }
}

// `async fn` captures `self` and `key` separately: returning the boxed future directly
// would need their intersection, which an opaque type cannot name.
impl BlobStore for dyn DynBlobStore {
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.get_boxed(key).await
    }
    async fn put(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        self.put_boxed(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.delete_boxed(key).await
    }
    async fn exists(&self, key: &str) -> Result<bool> {
        self.exists_boxed(key).await
    }
    async fn put_if_absent(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<bool> {
        self.put_if_absent_boxed(key, value, ttl).await
    }
}

/// Compile-time proof that both traits stay object safe.
const _OBJECT_SAFE: fn() = || {
    fn takes(_: Option<&dyn DynBlobStore>, _: Option<&dyn StoreInfo>) {}
    takes(None, None);
};
