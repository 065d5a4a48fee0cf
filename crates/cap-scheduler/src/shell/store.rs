//! [`JobStore`]: where job records live between events, so a restarted scheduler (or
//! another instance of it) continues the jobs in flight.

use crate::core::JobRecord;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("job store: {0}")]
pub struct StoreError(pub String);

/// Persistence of job records.
pub trait JobStore: Send + Sync + 'static {
    /// Saves (or replaces) a record.
    fn put(&self, record: &JobRecord) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Saves several records (one round trip where the backend allows).
    fn put_many(
        &self,
        records: &[&JobRecord],
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            for r in records {
                self.put(r).await?;
            }
            Ok(())
        }
    }
    /// A record by job id.
    fn get(
        &self,
        job_id: &str,
    ) -> impl Future<Output = Result<Option<JobRecord>, StoreError>> + Send;
    /// Forgets a record.
    fn delete(&self, job_id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every record (at start-up).
    fn load_all(&self) -> impl Future<Output = Result<Vec<JobRecord>, StoreError>> + Send;
}

/// Records in memory (the embedded default; gone with the process).
#[derive(Clone, Debug, Default)]
pub struct MemoryJobStore {
    records: Arc<Mutex<HashMap<String, Box<JobRecord>>>>,
}

impl MemoryJobStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Box<JobRecord>>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl JobStore for MemoryJobStore {
    async fn put(&self, record: &JobRecord) -> Result<(), StoreError> {
        self.lock()
            .insert(record.id().to_owned(), Box::new(record.clone()));
        Ok(())
    }

    async fn get(&self, job_id: &str) -> Result<Option<JobRecord>, StoreError> {
        Ok(self.lock().get(job_id).map(|r| (**r).clone()))
    }

    async fn delete(&self, job_id: &str) -> Result<(), StoreError> {
        self.lock().remove(job_id);
        Ok(())
    }

    async fn load_all(&self) -> Result<Vec<JobRecord>, StoreError> {
        Ok(self.lock().values().map(|r| (**r).clone()).collect())
    }
}

#[cfg(feature = "redis")]
pub use redis_store::{REDIS_CONNECT_TIMEOUT, RedisJobStore};

#[cfg(feature = "redis")]
mod redis_store {
    use super::{JobStore, StoreError};
    use crate::core::JobRecord;
    use redis::aio::{ConnectionManager, ConnectionManagerConfig};
    use redis::{AsyncCommands, AsyncConnectionConfig};
    use std::time::Duration;

    /// Longest wait for Redis to answer at start-up (connect and `PING`).
    pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
    /// Longest wait for an answer to one command once running.
    const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

    /// Records in Redis: `<prefix>job:<id>` holds the record as JSON, `<prefix>jobs` the
    /// set of ids. One managed connection shared by clones; it reconnects by itself.
    #[derive(Clone)]
    pub struct RedisJobStore {
        conn: ConnectionManager,
        prefix: String,
    }

    impl std::fmt::Debug for RedisJobStore {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("RedisJobStore")
                .field("prefix", &self.prefix)
                .finish()
        }
    }

    fn err(e: impl std::fmt::Display) -> StoreError {
        StoreError(e.to_string())
    }

    impl RedisJobStore {
        /// Connects (and pings) `url`; keys start with `prefix` (e.g. `cap:sched:`).
        /// Fails fast: an unreachable or silent server is an error within
        /// [`REDIS_CONNECT_TIMEOUT`] (one attempt), naming the URL without its password.
        /// Once connected, the connection is re-established by itself when Redis goes
        /// away and comes back.
        pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self, StoreError> {
            let shown = cap_blob::RedisConfig::new(url).redacted_url();
            let client = redis::Client::open(url)
                .map_err(|e| StoreError(format!("Redis URL {shown} is not usable: {e}")))?;
            let unreachable = |e: redis::RedisError| {
                StoreError(format!(
                    "cannot reach Redis at {shown} (job store, {} s timeout): {e}",
                    REDIS_CONNECT_TIMEOUT.as_secs()
                ))
            };
            // One attempt, bounded, before the manager (which retries for a while).
            let probe_config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
                .set_response_timeout(Some(REDIS_CONNECT_TIMEOUT));
            let mut probe = client
                .get_multiplexed_async_connection_with_config(&probe_config)
                .await
                .map_err(unreachable)?;
            let _: String = redis::cmd("PING")
                .query_async(&mut probe)
                .await
                .map_err(unreachable)?;
            drop(probe);
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(REDIS_CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_max_delay(Duration::from_secs(2));
            let conn = ConnectionManager::new_with_config(client, config)
                .await
                .map_err(unreachable)?;
            Ok(RedisJobStore {
                conn,
                prefix: prefix.into(),
            })
        }

        fn key(&self, id: &str) -> String {
            format!("{}job:{id}", self.prefix)
        }

        fn set(&self) -> String {
            format!("{}jobs", self.prefix)
        }
    }

    impl JobStore for RedisJobStore {
        async fn put(&self, record: &JobRecord) -> Result<(), StoreError> {
            let text = serde_json::to_string(record).map_err(err)?;
            let mut c = self.conn.clone();
            redis::pipe()
                .atomic()
                .set(self.key(record.id()), text)
                .sadd(self.set(), record.id())
                .query_async::<()>(&mut c)
                .await
                .map_err(err)
        }

        async fn put_many(&self, records: &[&JobRecord]) -> Result<(), StoreError> {
            if records.is_empty() {
                return Ok(());
            }
            let mut pipe = redis::pipe();
            pipe.atomic();
            for record in records {
                let text = serde_json::to_string(record).map_err(err)?;
                pipe.set(self.key(record.id()), text).ignore();
                pipe.sadd(self.set(), record.id()).ignore();
            }
            let mut c = self.conn.clone();
            pipe.query_async::<()>(&mut c).await.map_err(err)
        }

        async fn get(&self, job_id: &str) -> Result<Option<JobRecord>, StoreError> {
            let mut c = self.conn.clone();
            let text: Option<String> = c.get(self.key(job_id)).await.map_err(err)?;
            text.map(|t| serde_json::from_str(&t).map_err(err))
                .transpose()
        }

        async fn delete(&self, job_id: &str) -> Result<(), StoreError> {
            let mut c = self.conn.clone();
            redis::pipe()
                .atomic()
                .del(self.key(job_id))
                .srem(self.set(), job_id)
                .query_async::<()>(&mut c)
                .await
                .map_err(err)
        }

        async fn load_all(&self) -> Result<Vec<JobRecord>, StoreError> {
            let mut c = self.conn.clone();
            let ids: Vec<String> = c.smembers(self.set()).await.map_err(err)?;
            let mut out = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(500) {
                let keys: Vec<String> = chunk.iter().map(|id| self.key(id)).collect();
                let texts: Vec<Option<String>> = redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(&mut c)
                    .await
                    .map_err(err)?;
                for text in texts.into_iter().flatten() {
                    // A record that no longer parses is skipped, not fatal: log it.
                    match serde_json::from_str(&text) {
                        Ok(r) => out.push(r),
                        Err(e) => tracing::warn!(error = %e, "unreadable job record skipped"),
                    }
                }
            }
            Ok(out)
        }
    }
}
