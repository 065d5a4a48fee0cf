//! # cap-blob
//!
//! The pointer store of CAP, the Cordum Agent Protocol. The bus carries pointers
//! (`JobRequest.context_ptr`, `JobResult.result_ptr`, such as `redis://ctx:<job_id>`); this
//! crate holds the bytes they point to.
//!
//! - [`BlobStore`]: async get / put with an optional TTL / delete / exists, typed
//!   [`Error`]s matchable by [`ErrorKind`]. Generic for hot paths; [`DynBlobStore`] is its
//!   object-safe companion for `Arc<dyn DynBlobStore>`.
//! - [`pointer`](mod@pointer) and [`key`]: the pointer ↔ key mapping of the official SDKs
//!   (`redis://<key>`, keys `ctx:<job_id>` and `res:<job_id>`).
//! - [`Router`]: serves a pointer from the store registered for its scheme.
//! - [`PointerScope`]: the deployment-wide rule of what a job's pointers may name (its
//!   own `ctx:`/`res:`/`art:` keys and configured prefixes; never `cap:` keys, never
//!   private network targets), applied by [`BlobStore::get_scoped`] and
//!   [`Router::get_scoped`].
//! - Backends: [`MemoryBlobStore`] (embedded default), `RedisBlobStore` (feature `redis`)
//!   and `FileBlobStore` (feature `file`).
//! - [`Limits`]: a size limit checked before writing (default
//!   [`DEFAULT_MAX_BLOB_BYTES`], 2 MiB) and default TTLs for contexts and results.
//! - `conformance` (feature `conformance`): the contract as a test suite any backend runs.
//!
//! ```
//! use bytes::Bytes;
//! use cap_blob::{BlobStore, ErrorKind, MemoryBlobStore, Router};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // A client stores a job's input and sends the pointer in JobRequest.context_ptr.
//! let store = MemoryBlobStore::emulating_redis(Default::default());
//! let ctx_ptr = store.put_context("job-1", Bytes::from_static(br#"{"prompt":"hi"}"#)).await?;
//! assert_eq!(ctx_ptr.to_string(), "redis://ctx:job-1");
//!
//! // A worker resolves whatever pointer it receives through a router.
//! let router = Router::new().with(store.clone());
//! let input = router.get("redis://ctx:job-1").await?;
//! assert_eq!(input, r#"{"prompt":"hi"}"#);
//!
//! // ... and stores its output for JobResult.result_ptr.
//! let res_ptr = store.put_result("job-1", Bytes::from_static(b"\"hello\"")).await?;
//! assert_eq!(res_ptr.to_string(), "redis://res:job-1");
//!
//! // Errors are typed.
//! let err = router.get("redis://res:unknown").await.unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::NotFound);
//! let too_big = Bytes::from(vec![0u8; cap_blob::DEFAULT_MAX_BLOB_BYTES + 1]);
//! assert_eq!(store.put("big", too_big, None).await.unwrap_err().kind(), ErrorKind::TooLarge);
//! # Ok::<(), cap_blob::Error>(())
//! # }).unwrap();
//! ```
//!
//! ## Feature flags
//! - `redis` (default): `RedisBlobStore` on the `redis` crate (tokio, managed connection).
//! - `file` (default): `FileBlobStore`, a directory of plain files (Unix).
//! - `tls`: `rediss://` through rustls, configured from the `REDIS_TLS_*` variables.
//! - `conformance`: the `conformance` module.

#[cfg(feature = "conformance")]
pub mod conformance;
mod dyn_store;
mod error;
#[cfg(all(feature = "file", unix))]
mod file;
pub mod key;
mod limits;
mod memory;
pub mod pointer;
#[cfg(feature = "redis")]
mod redis_store;
mod router;
pub mod scope;
mod store;

pub use dyn_store::{BoxFuture, DynBlobStore};
pub use error::{BoxError, Error, ErrorKind, Result};
#[cfg(all(feature = "file", unix))]
pub use file::{FileBlobStore, FileStoreBuilder};
pub use limits::{DEFAULT_CONTEXT_TTL, DEFAULT_MAX_BLOB_BYTES, DEFAULT_RESULT_TTL, Limits};
pub use memory::MemoryBlobStore;
#[cfg(feature = "redis")]
pub use redis_store::{
    DEFAULT_REDIS_URL, RedisBlobStore, RedisConfig, RedisConnection, RedisTlsConfig,
};
pub use router::Router;
pub use scope::{JobScope, PointerScope, ScopeRule};
pub use store::{BlobStore, StoreInfo};

/// Re-exported: the pointer type of `cap-proto`.
pub use cap_proto::Pointer;
