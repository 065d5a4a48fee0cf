//! The in-memory backend: the embedded default, for tests, examples and single-process use.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use cap_blob::{BlobStore, ErrorKind, MemoryBlobStore};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let store = MemoryBlobStore::new();
//! let shared = store.clone(); // clones share one map
//! store.put("k", Bytes::from_static(b"v"), Some(Duration::from_millis(200))).await.unwrap();
//! assert_eq!(shared.get("k").await.unwrap(), "v");
//! tokio::time::sleep(Duration::from_millis(300)).await;
//! assert_eq!(shared.get("k").await.unwrap_err().kind(), ErrorKind::NotFound);
//! # });
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cap_proto::Pointer;

use crate::limits::ttl_millis;
use crate::pointer::kv_key;
use crate::{BlobStore, Error, Limits, Result, StoreInfo, key};

/// Expired entries are swept (besides lazily on access) once this many puts, or as many
/// puts as there are entries, have happened since the last sweep: amortised O(1) per put.
const SWEEP_MIN_PUTS: usize = 1024;

/// An in-process blob store. Cheap to clone; clones share one map. Honours TTLs: expired
/// blobs are invisible at once and their memory is reclaimed by an amortised sweep.
///
/// Hands out `mem://<key>` pointers, or `redis://<key>` ones when made with
/// [`MemoryBlobStore::emulating_redis`], to stand in for Redis in an embedded deployment
/// or a test. It serves both schemes.
#[derive(Clone, Debug)]
pub struct MemoryBlobStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    scheme: &'static str,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    map: HashMap<Box<str>, Entry>,
    puts_since_sweep: usize,
}

#[derive(Debug)]
struct Entry {
    value: Bytes,
    expires_at: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }
}

impl Default for MemoryBlobStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBlobStore {
    /// An empty store with [`Limits::default`], handing out `mem://` pointers.
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// An empty store with the given limits, handing out `mem://` pointers.
    pub fn with_limits(limits: Limits) -> Self {
        Self::build(limits, "mem")
    }

    /// An empty store that hands out `redis://` pointers, like the SDKs' Redis store, so
    /// code written against Redis runs unchanged in one process.
    pub fn emulating_redis(limits: Limits) -> Self {
        Self::build(limits, "redis")
    }

    fn build(limits: Limits, scheme: &'static str) -> Self {
        MemoryBlobStore {
            inner: Arc::new(Inner {
                limits,
                scheme,
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock, so a poisoned map is still consistent.
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of live blobs.
    pub fn len(&self) -> usize {
        let now = Instant::now();
        self.state().map.values().filter(|e| e.live(now)).count()
    }

    /// Whether no live blob is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every expired blob now; returns how many were dropped.
    pub fn purge_expired(&self) -> usize {
        let mut state = self.state();
        let before = state.map.len();
        let now = Instant::now();
        state.map.retain(|_, e| e.live(now));
        state.puts_since_sweep = 0;
        before - state.map.len()
    }

    /// Number of entries held, expired ones not yet reclaimed included.
    #[cfg(test)]
    fn raw_len(&self) -> usize {
        self.state().map.len()
    }

    fn get_now(&self, key: &str) -> Result<Bytes> {
        key::check(key)?;
        let now = Instant::now();
        let mut state = self.state();
        match state.map.get(key) {
            Some(e) if e.live(now) => Ok(e.value.clone()),
            Some(_) => {
                state.map.remove(key);
                Err(Error::not_found(key))
            }
            None => Err(Error::not_found(key)),
        }
    }

    fn put_now(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<()> {
        key::check(key)?;
        self.inner.limits.check_size(value.len())?;
        let now = Instant::now();
        let expires_at = ttl.and_then(|t| now.checked_add(Duration::from_millis(ttl_millis(t))));
        let entry = Entry { value, expires_at };
        let mut state = self.state();
        // One lookup (keys are usually new): an existing key keeps its allocation and
        // gets the new entry.
        state.map.insert(key.into(), entry);
        state.puts_since_sweep += 1;
        if state.puts_since_sweep >= SWEEP_MIN_PUTS.max(state.map.len()) {
            state.map.retain(|_, e| e.live(now));
            state.puts_since_sweep = 0;
        }
        Ok(())
    }

    fn put_if_absent_now(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<bool> {
        key::check(key)?;
        self.inner.limits.check_size(value.len())?;
        let now = Instant::now();
        let mut state = self.state();
        if state.map.get(key).is_some_and(|e| e.live(now)) {
            return Ok(false);
        }
        let expires_at = ttl.and_then(|t| now.checked_add(Duration::from_millis(ttl_millis(t))));
        state.map.insert(key.into(), Entry { value, expires_at });
        Ok(true)
    }

    fn delete_now(&self, key: &str) -> Result<bool> {
        key::check(key)?;
        let now = Instant::now();
        Ok(self.state().map.remove(key).is_some_and(|e| e.live(now)))
    }

    fn exists_now(&self, key: &str) -> Result<bool> {
        key::check(key)?;
        let now = Instant::now();
        Ok(self.state().map.get(key).is_some_and(|e| e.live(now)))
    }
}

impl StoreInfo for MemoryBlobStore {
    fn scheme(&self) -> &'static str {
        self.inner.scheme
    }

    fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    fn pointer_for(&self, key: &str) -> Result<Pointer> {
        key::check(key)?;
        let key = key.to_owned();
        Ok(if self.inner.scheme == "redis" {
            Pointer::Redis { key }
        } else {
            Pointer::Mem { key }
        })
    }

    fn key_for<'p>(&self, pointer: &'p Pointer) -> Result<&'p str> {
        kv_key(pointer, "memory")
    }
}

impl BlobStore for MemoryBlobStore {
    fn get(&self, key: &str) -> impl Future<Output = Result<Bytes>> + Send {
        std::future::ready(self.get_now(key))
    }

    fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(self.put_now(key, value, ttl))
    }

    fn delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send {
        std::future::ready(self.delete_now(key))
    }

    fn exists(&self, key: &str) -> impl Future<Output = Result<bool>> + Send {
        std::future::ready(self.exists_now(key))
    }

    fn put_if_absent(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<bool>> + Send {
        std::future::ready(self.put_if_absent_now(key, value, ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_entries_are_reclaimed_by_the_sweep() {
        let store = MemoryBlobStore::new();
        for i in 0..100 {
            store
                .put_now(&format!("old{i}"), Bytes::new(), Some(Duration::ZERO))
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(store.len(), 0);
        assert_eq!(store.raw_len(), 100);
        // Enough puts to trigger the amortised sweep.
        for i in 0..SWEEP_MIN_PUTS {
            store
                .put_now(&format!("k{}", i % 10), Bytes::new(), None)
                .unwrap();
        }
        assert_eq!(store.raw_len(), 10);
        assert_eq!(store.len(), 10);
    }

    #[test]
    fn purge_and_lazy_removal() {
        let store = MemoryBlobStore::new();
        store
            .put_now("a", Bytes::new(), Some(Duration::ZERO))
            .unwrap();
        store
            .put_now("b", Bytes::new(), Some(Duration::ZERO))
            .unwrap();
        store.put_now("c", Bytes::new(), None).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(store.get_now("a").is_err());
        assert_eq!(store.raw_len(), 2, "expired entry removed on read");
        assert_eq!(store.purge_expired(), 1);
        assert_eq!(store.raw_len(), 1);
        assert!(!store.is_empty());
    }

    #[test]
    fn pointers_follow_the_chosen_scheme() {
        let mem = MemoryBlobStore::new();
        assert_eq!(mem.pointer_for("k").unwrap().to_string(), "mem://k");
        let redis = MemoryBlobStore::emulating_redis(Limits::default());
        assert_eq!(redis.pointer_for("k").unwrap().to_string(), "redis://k");
        assert_eq!(redis.scheme(), "redis");
        assert!(mem.pointer_for("").is_err());
    }
}
