//! The `BlobStore` trait: the contract every backend keeps.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cap_proto::Pointer;

use crate::{JobScope, Limits, Result, key};

/// What a store is, apart from its IO: its limits and how its keys map to pointers.
///
/// Object safe; a supertrait of both [`BlobStore`] and [`DynBlobStore`](crate::DynBlobStore).
pub trait StoreInfo: Send + Sync {
    /// The scheme of the pointers this store hands out (`redis`, `mem`, `file`). A
    /// [`Router`](crate::Router) registers the store under it by default.
    fn scheme(&self) -> &'static str;

    /// The store's size limit and default TTLs.
    fn limits(&self) -> &Limits;

    /// The pointer naming `key` in this store (`redis://ctx:job-1`, `file:///root/ctx:job-1`).
    /// Fails with [`ErrorKind::InvalidKey`](crate::ErrorKind::InvalidKey) for a key the
    /// store cannot hold.
    fn pointer_for(&self, key: &str) -> Result<Pointer>;

    /// The key `pointer` names in this store. Fails with
    /// [`ErrorKind::InvalidPointer`](crate::ErrorKind::InvalidPointer) for a pointer this
    /// store does not serve (another scheme, a file outside its root, ...).
    fn key_for<'p>(&self, pointer: &'p Pointer) -> Result<&'p str>;
}

/// An async key → bytes store with optional expiry: where `context_ptr` and `result_ptr`
/// point.
///
/// # Contract
/// Every backend keeps it, and the `conformance` module (feature `conformance`) checks it:
/// - [`get`](Self::get) of a key never written, deleted or expired fails with
///   [`ErrorKind::NotFound`](crate::ErrorKind::NotFound); an empty blob is a blob.
/// - [`put`](Self::put) replaces the value *and* the TTL: a put without TTL makes the blob
///   permanent. TTLs are kept in whole milliseconds, rounded up (at least 1 ms, at most
///   about 100 years).
/// - A blob over [`Limits::max_blob_bytes`] fails with
///   [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) before anything is written.
/// - Values are opaque bytes: binary, not necessarily UTF-8, returned byte for byte.
/// - Concurrent writers to one key leave one of the written values, whole.
/// - Keys are checked with [`key::check`]; invalid ones fail with
///   [`ErrorKind::InvalidKey`](crate::ErrorKind::InvalidKey).
///
/// Methods return `Send` futures, so stores can be used from spawned tasks. For
/// `Arc<dyn …>` use, every `BlobStore` is also a [`DynBlobStore`](crate::DynBlobStore),
/// and `Arc<dyn DynBlobStore>` is again a `BlobStore`.
pub trait BlobStore: StoreInfo {
    /// The blob under `key`.
    fn get(&self, key: &str) -> impl Future<Output = Result<Bytes>> + Send;

    /// Stores `value` under `key`, expiring after `ttl` (`None`: never).
    fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Removes the blob under `key`. `true` if a live blob was removed.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Whether a live blob is stored under `key`.
    fn exists(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Stores `value` under `key` only if no live blob is there (an expired one counts
    /// as none), atomically: of concurrent callers on one key, exactly one gets `true`.
    /// `false` leaves the existing blob and its TTL untouched. The building block of
    /// claims and leases, such as the worker's claim to run a job
    /// ([`key::run_claim`]).
    fn put_if_absent(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// The blob `pointer` names.
    fn get_ptr(&self, pointer: &Pointer) -> impl Future<Output = Result<Bytes>> + Send {
        async move { self.get(self.key_for(pointer)?).await }
    }

    /// The blob a pointer carried by a job names, if `scope` lets the job read it (see
    /// [`PointerScope`](crate::PointerScope)): the pointer is checked, mapped to this
    /// store's key, the key checked, and only then read. A refusal is
    /// [`ErrorKind::OutOfScope`](crate::ErrorKind::OutOfScope) and reads nothing.
    fn get_scoped(
        &self,
        pointer: &Pointer,
        scope: &JobScope<'_>,
    ) -> impl Future<Output = Result<Bytes>> + Send {
        let checked = scope
            .check_pointer(pointer)
            .and_then(|()| self.key_for(pointer))
            .and_then(|key| scope.check_key(key).map(|()| key));
        async move { self.get(checked?).await }
    }

    /// Stores `value` where `pointer` points.
    fn put_ptr(
        &self,
        pointer: &Pointer,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send {
        async move { self.put(self.key_for(pointer)?, value, ttl).await }
    }

    /// Stores a job's input context at `ctx:<job_id>` with the default context TTL and
    /// returns the pointer to put in `JobRequest.context_ptr`.
    fn put_context(
        &self,
        job_id: &str,
        value: Bytes,
    ) -> impl Future<Output = Result<Pointer>> + Send {
        async move {
            let ttl = self.limits().context_ttl;
            self.put_keyed(key::context(job_id), value, ttl).await
        }
    }

    /// Like [`put_context`](Self::put_context) with an explicit TTL (`None`: never expires).
    fn put_context_with_ttl(
        &self,
        job_id: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<Pointer>> + Send {
        async move { self.put_keyed(key::context(job_id), value, ttl).await }
    }

    /// Stores a job's result at `res:<job_id>` with the default result TTL and returns the
    /// pointer to put in `JobResult.result_ptr`.
    fn put_result(
        &self,
        job_id: &str,
        value: Bytes,
    ) -> impl Future<Output = Result<Pointer>> + Send {
        async move {
            let ttl = self.limits().result_ttl;
            self.put_keyed(key::result(job_id), value, ttl).await
        }
    }

    /// Like [`put_result`](Self::put_result) with an explicit TTL (`None`: never expires).
    fn put_result_with_ttl(
        &self,
        job_id: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<Pointer>> + Send {
        async move { self.put_keyed(key::result(job_id), value, ttl).await }
    }

    /// Stores `value` under `key` and returns the pointer naming it.
    fn put_keyed(
        &self,
        key: String,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<Pointer>> + Send {
        async move {
            let pointer = self.pointer_for(&key)?;
            self.put(&key, value, ttl).await?;
            Ok(pointer)
        }
    }
}

impl<S: StoreInfo + ?Sized> StoreInfo for Arc<S> {
    fn scheme(&self) -> &'static str {
        (**self).scheme()
    }
    fn limits(&self) -> &Limits {
        (**self).limits()
    }
    fn pointer_for(&self, key: &str) -> Result<Pointer> {
        (**self).pointer_for(key)
    }
    fn key_for<'p>(&self, pointer: &'p Pointer) -> Result<&'p str> {
        (**self).key_for(pointer)
    }
}

impl<S: BlobStore + ?Sized> BlobStore for Arc<S> {
    fn get(&self, key: &str) -> impl Future<Output = Result<Bytes>> + Send {
        (**self).get(key)
    }
    fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send {
        (**self).put(key, value, ttl)
    }
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send {
        (**self).delete(key)
    }
    fn exists(&self, key: &str) -> impl Future<Output = Result<bool>> + Send {
        (**self).exists(key)
    }
    fn put_if_absent(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<bool>> + Send {
        (**self).put_if_absent(key, value, ttl)
    }
}
