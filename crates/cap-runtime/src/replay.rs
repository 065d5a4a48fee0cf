//! [`RedisReplayStore`]: CAP-PRODUCTION replay admission in Redis, shared by every process
//! that points at the same server and prefix.
//!
//! One key per message: `<prefix><tenant, audience, sender and message id>` (see
//! [`ReplayKey::storage_key`]) holding the 32-byte signed body digest, with a TTL up to the
//! entry's `keep_until` (expiry + skew). Admission is one Lua script, so it is atomic
//! across processes: `GET`; if absent, `SET … PX ttl` and report first; if present,
//! compare digests (equal: duplicate; different: conflict). The script runs by `EVALSHA`
//! and is re-sent with `EVAL` when the server does not have it (after a restart or a
//! `SCRIPT FLUSH`). Any Redis error is [`ProductionError::ReplayUnavailable`]: the packet
//! is rejected, never admitted.

use cap_sign::production::{ProductionError, ReplayEntry, ReplayKey, ReplayOutcome, ReplayStore};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, ErrorKind, ServerErrorKind};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The admission script: KEYS[1] the entry, ARGV[1] the digest, ARGV[2] the TTL in ms.
/// Returns nil when the entry was stored, else the digest already there.
const ADMIT: &str = "local cur = redis.call('GET', KEYS[1])
if cur then return cur end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false";

/// Default key prefix.
pub const DEFAULT_REPLAY_PREFIX: &str = "cap:replay:";

/// Default bound on connecting and on each admission's round trip: a Redis that does not
/// answer within it makes the admission fail (unavailable) instead of stalling delivery.
pub const DEFAULT_REPLAY_TIMEOUT: Duration = Duration::from_secs(2);

/// A [`ReplayStore`] in Redis. Cheap to clone; clones share one managed connection that
/// reconnects by itself.
#[derive(Clone)]
pub struct RedisReplayStore {
    conn: ConnectionManager,
    prefix: Arc<str>,
    /// SHA-1 of [`ADMIT`] as the server reported it (`SCRIPT LOAD`), once known.
    sha: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for RedisReplayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisReplayStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn unavailable(context: &str, e: impl std::fmt::Display) -> ProductionError {
    ProductionError::ReplayUnavailable(format!("redis {context}: {e}"))
}

impl RedisReplayStore {
    /// Connects to `url` (`redis://…`) with [`DEFAULT_REPLAY_TIMEOUT`], checks the server
    /// answers and loads the script; keys start with `prefix` (e.g.
    /// [`DEFAULT_REPLAY_PREFIX`]).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, ProductionError> {
        Self::connect_with_timeout(url, prefix, DEFAULT_REPLAY_TIMEOUT).await
    }

    /// Like [`connect`](Self::connect), with `timeout` bounding the connection and every
    /// round trip. Connecting fails fast (one attempt); later, the managed connection
    /// reconnects by itself while admissions report the store unavailable.
    pub async fn connect_with_timeout(
        url: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, ProductionError> {
        let client = redis::Client::open(url).map_err(|e| unavailable("url", e))?;
        let probe_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut probe = client
            .get_multiplexed_async_connection_with_config(&probe_config)
            .await
            .map_err(|e| unavailable("connect", e))?;
        redis::cmd("PING")
            .query_async::<()>(&mut probe)
            .await
            .map_err(|e| unavailable("ping", e))?;
        drop(probe);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| unavailable("connect", e))?;
        let store = Self::from_connection(conn, prefix);
        store.load_script().await?;
        Ok(store)
    }

    /// A store on an existing managed connection (the script is loaded on first use).
    pub fn from_connection(conn: ConnectionManager, prefix: &str) -> Self {
        RedisReplayStore {
            conn,
            prefix: prefix.into(),
            sha: Arc::new(Mutex::new(None)),
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The Redis key of a replay key.
    pub fn redis_key(&self, key: &ReplayKey) -> String {
        format!("{}{}", self.prefix, key.storage_key())
    }

    async fn load_script(&self) -> Result<String, ProductionError> {
        let mut conn = self.conn.clone();
        let sha: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(ADMIT)
            .query_async(&mut conn)
            .await
            .map_err(|e| unavailable("script load", e))?;
        *self.sha.lock().unwrap_or_else(|p| p.into_inner()) = Some(sha.clone());
        Ok(sha)
    }

    fn known_sha(&self) -> Option<String> {
        self.sha.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs the script: `EVALSHA`, or `EVAL` when the server lost it.
    async fn run(
        &self,
        key: &str,
        digest: &[u8],
        ttl_ms: u64,
    ) -> redis::RedisResult<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        if let Some(sha) = self.known_sha() {
            let r = redis::cmd("EVALSHA")
                .arg(&sha)
                .arg(1)
                .arg(key)
                .arg(digest)
                .arg(ttl_ms)
                .query_async(&mut conn)
                .await;
            match r {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {}
                other => return other,
            }
        }
        // EVAL caches the script too; remember its SHA for the next admissions.
        let r = redis::cmd("EVAL")
            .arg(ADMIT)
            .arg(1)
            .arg(key)
            .arg(digest)
            .arg(ttl_ms)
            .query_async(&mut conn)
            .await;
        if r.is_ok() && self.known_sha().is_none() {
            // Best effort: a failure here only means the next call uses EVAL again.
            let _ = self.load_script().await;
        }
        r
    }
}

impl ReplayStore for RedisReplayStore {
    async fn admit(
        &self,
        entry: &ReplayEntry,
        now: SystemTime,
    ) -> Result<ReplayOutcome, ProductionError> {
        entry.check(now)?;
        let ttl = entry
            .keep_until
            .duration_since(now)
            .map_err(|_| unavailable("ttl", "entry already expired"))?;
        // Whole milliseconds, rounded up so the record never goes before keep_until.
        let ttl_ms = u64::try_from(ttl.as_nanos().div_ceil(1_000_000))
            .unwrap_or(u64::MAX)
            .max(1);
        let key = self.redis_key(&entry.key);
        match self.run(&key, &entry.digest, ttl_ms).await {
            Ok(None) => Ok(ReplayOutcome::First),
            Ok(Some(existing)) if existing == entry.digest => Ok(ReplayOutcome::Duplicate),
            Ok(Some(_)) => Err(ProductionError::ReplayConflict),
            Err(e) => Err(unavailable("admit", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn url() -> String {
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
    }

    /// A server without the script (restarted, or `SCRIPT FLUSH`ed) is sent it again; a
    /// store built on a bare connection starts with `EVAL` and then learns the SHA.
    #[tokio::test]
    #[ignore = "needs a real Redis: run by .ci/run"]
    async fn lost_or_unknown_script_is_sent_again() {
        let prefix = format!("cap:test:replay:noscript:{}:", crate::id::new_trace_id());
        let store = RedisReplayStore::connect(&url(), &prefix)
            .await
            .unwrap_or_else(|e| panic!("needs a Redis server at {}: {e}", url()));
        // As if the server had lost the script: a SHA it does not know.
        *store.sha.lock().unwrap() = Some("0".repeat(40));
        let entry = ReplayEntry {
            key: ReplayKey {
                tenant: "acme".into(),
                audience: "a".into(),
                sender: "s".into(),
                message_id: [1; 16],
            },
            digest: [1; 32],
            keep_until: SystemTime::now() + Duration::from_secs(10),
        };
        let now = SystemTime::now();
        assert_eq!(store.admit(&entry, now).await, Ok(ReplayOutcome::First));

        let client = redis::Client::open(url()).unwrap();
        let conn = ConnectionManager::new(client).await.unwrap();
        let bare = RedisReplayStore::from_connection(conn, &prefix);
        assert!(bare.known_sha().is_none());
        assert_eq!(bare.admit(&entry, now).await, Ok(ReplayOutcome::Duplicate));
        assert_eq!(bare.known_sha().map(|s| s.len()), Some(40));
        assert_eq!(bare.admit(&entry, now).await, Ok(ReplayOutcome::Duplicate));

        let mut c = store.conn.clone();
        let _: () = redis::cmd("DEL")
            .arg(store.redis_key(&entry.key))
            .query_async(&mut c)
            .await
            .unwrap();
    }
}
