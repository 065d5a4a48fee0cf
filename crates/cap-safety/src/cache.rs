//! [`DecisionCache`]: responses keyed by the full request content (minus `job_id`) and
//! the snapshot, with a time to live. An entry is only ever served for the snapshot it was
//! computed with: the snapshot's sequence number is part of the key, and the cache is
//! cleared whenever a new snapshot is installed.

use cap_proto::v1::{PolicyCheckRequest, PolicyCheckResponse};
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Requests whose encoding is larger than this are not cached (their key would cost more
/// than evaluating them).
pub const MAX_CACHED_REQUEST_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    seq: u64,
    content: Box<[u8]>,
}

#[derive(Debug, Clone)]
struct Entry {
    expires: Instant,
    response: Arc<PolicyCheckResponse>,
}

/// A bounded TTL cache of decisions. Disabled when the TTL or the capacity is zero.
pub(crate) struct DecisionCache {
    cache: Option<quick_cache::sync::Cache<Key, Entry>>,
    ttl: Duration,
}

impl std::fmt::Debug for DecisionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionCache")
            .field("enabled", &self.cache.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl DecisionCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        let cache =
            (!ttl.is_zero() && capacity > 0).then(|| quick_cache::sync::Cache::new(capacity));
        DecisionCache { cache, ttl }
    }

    /// The key of `req` under snapshot `seq`: its protobuf encoding without field 1
    /// (`job_id`, encoded first), or `None` when caching is off or the request is large.
    pub(crate) fn key(&self, seq: u64, req: &PolicyCheckRequest) -> Option<Key> {
        self.cache.as_ref()?;
        let len = req.encoded_len();
        if len > MAX_CACHED_REQUEST_BYTES {
            return None;
        }
        let mut buf = Vec::with_capacity(len);
        req.encode(&mut buf).ok()?;
        // prost writes fields in field-number order, so a non-empty job_id is the prefix:
        // tag byte 0x0a, the length varint, then the bytes.
        let skip = if req.job_id.is_empty() {
            0
        } else {
            1 + prost::encoding::encoded_len_varint(req.job_id.len() as u64) + req.job_id.len()
        };
        let content = buf.get(skip..)?.into();
        Some(Key { seq, content })
    }

    pub(crate) fn get(&self, key: &Key) -> Option<Arc<PolicyCheckResponse>> {
        let cache = self.cache.as_ref()?;
        let entry = cache.get(key)?;
        if entry.expires <= Instant::now() {
            cache.remove(key);
            return None;
        }
        Some(entry.response)
    }

    pub(crate) fn insert(&self, key: Key, response: Arc<PolicyCheckResponse>) {
        if let Some(cache) = &self.cache {
            let expires = Instant::now() + self.ttl;
            cache.insert(key, Entry { expires, response });
        }
    }

    pub(crate) fn clear(&self) {
        if let Some(cache) = &self.cache {
            cache.clear();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ignores_job_id_but_not_other_content_or_snapshot() {
        let c = DecisionCache::new(Duration::from_secs(5), 10);
        let a = PolicyCheckRequest {
            job_id: "a".into(),
            topic: "job.x".into(),
            ..Default::default()
        };
        let b = PolicyCheckRequest {
            job_id: "bbbbbbbb".into(),
            ..a.clone()
        };
        let other = PolicyCheckRequest {
            topic: "job.y".into(),
            ..a.clone()
        };
        assert_eq!(c.key(1, &a), c.key(1, &b));
        assert_ne!(c.key(1, &a), c.key(1, &other));
        assert_ne!(c.key(1, &a), c.key(2, &a));
        let long = PolicyCheckRequest {
            job_id: "j".repeat(300),
            ..a.clone()
        };
        assert_eq!(c.key(1, &a), c.key(1, &long));
    }

    #[test]
    fn entries_expire_and_disabled_cache_stores_nothing() {
        let c = DecisionCache::new(Duration::from_millis(1), 10);
        let req = PolicyCheckRequest {
            topic: "job.x".into(),
            ..Default::default()
        };
        let k = c.key(0, &req).unwrap();
        c.insert(k.clone(), Arc::new(PolicyCheckResponse::default()));
        std::thread::sleep(Duration::from_millis(5));
        assert!(c.get(&k).is_none());
        let off = DecisionCache::new(Duration::ZERO, 10);
        assert!(off.key(0, &req).is_none());
    }
}
