//! `Router`: serves a pointer from the store registered for its scheme.
//!
//! ```
//! use bytes::Bytes;
//! use cap_blob::{BlobStore, ErrorKind, MemoryBlobStore, Router};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = MemoryBlobStore::new();
//! let router = Router::new().with(store.clone());
//! let ptr = store.put_result("job-1", Bytes::from_static(b"{}")).await.unwrap();
//! assert_eq!(router.get(&ptr.to_string()).await.unwrap(), "{}");
//!
//! let err = router.get("s3://bucket/key").await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::UnregisteredScheme);
//! assert_eq!(router.get("not a pointer").await.unwrap_err().kind(), ErrorKind::InvalidPointer);
//! # });
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cap_proto::Pointer;

use crate::{BlobStore, DynBlobStore, Error, JobScope, Result};

/// Maps pointer schemes (`redis`, `mem`, `file`, ...) to stores. Cheap to clone.
#[derive(Clone, Default)]
pub struct Router {
    stores: BTreeMap<String, Arc<dyn DynBlobStore>>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("schemes", &self.stores.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Router {
    /// A router with no stores.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `store` for the scheme of the pointers it hands out
    /// ([`StoreInfo::scheme`](crate::StoreInfo::scheme)), replacing any earlier one.
    pub fn with<S: BlobStore + 'static>(self, store: S) -> Self {
        let scheme = store.scheme();
        self.with_scheme(scheme, Arc::new(store))
    }

    /// Registers `store` for `scheme` (without `://`), replacing any earlier one. A store
    /// may serve several schemes: a [`MemoryBlobStore`](crate::MemoryBlobStore) serves
    /// `redis://` pointers in a single-process deployment, for example.
    pub fn with_scheme(mut self, scheme: &str, store: Arc<dyn DynBlobStore>) -> Self {
        self.register(scheme, store);
        self
    }

    /// Registers `store` for `scheme`, replacing any earlier one.
    pub fn register(&mut self, scheme: &str, store: Arc<dyn DynBlobStore>) {
        self.stores.insert(scheme.to_owned(), store);
    }

    /// The schemes with a store, in order.
    pub fn schemes(&self) -> impl Iterator<Item = &str> {
        self.stores.keys().map(String::as_str)
    }

    /// The store serving `pointer`, or [`ErrorKind::UnregisteredScheme`](crate::ErrorKind::UnregisteredScheme).
    pub fn store_for(&self, pointer: &Pointer) -> Result<&Arc<dyn DynBlobStore>> {
        let scheme = pointer.scheme();
        self.stores
            .get(scheme)
            .ok_or_else(|| Error::UnregisteredScheme {
                scheme: scheme.to_owned(),
            })
    }

    /// The blob a pointer string (as carried on the bus) names. A malformed pointer fails
    /// with [`ErrorKind::InvalidPointer`](crate::ErrorKind::InvalidPointer).
    pub async fn get(&self, pointer: &str) -> Result<Bytes> {
        self.get_ptr(&Pointer::parse(pointer)?).await
    }

    /// The blob `pointer` names.
    pub async fn get_ptr(&self, pointer: &Pointer) -> Result<Bytes> {
        let store = self.store_for(pointer)?;
        store.get_boxed(store.key_for(pointer)?).await
    }

    /// The blob a pointer carried by a job names, if `scope` lets the job read it (see
    /// [`BlobStore::get_scoped`]).
    pub async fn get_scoped(&self, pointer: &Pointer, scope: &JobScope<'_>) -> Result<Bytes> {
        scope.check_pointer(pointer)?;
        let store = self.store_for(pointer)?;
        let key = store.key_for(pointer)?;
        scope.check_key(key)?;
        store.get_boxed(key).await
    }

    /// Stores `value` where `pointer` points, expiring after `ttl` (`None`: never).
    pub async fn put_ptr(
        &self,
        pointer: &Pointer,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let store = self.store_for(pointer)?;
        store.put_boxed(store.key_for(pointer)?, value, ttl).await
    }

    /// Removes the blob `pointer` names; `true` if a live blob was removed.
    pub async fn delete_ptr(&self, pointer: &Pointer) -> Result<bool> {
        let store = self.store_for(pointer)?;
        store.delete_boxed(store.key_for(pointer)?).await
    }

    /// Whether a live blob exists where `pointer` points.
    pub async fn exists_ptr(&self, pointer: &Pointer) -> Result<bool> {
        let store = self.store_for(pointer)?;
        store.exists_boxed(store.key_for(pointer)?).await
    }
}
