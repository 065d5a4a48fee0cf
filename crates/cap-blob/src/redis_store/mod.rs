//! The Redis backend, compatible with the official SDKs' `RedisBlobStore`: the same keys,
//! the same bytes (a plain `SET key value`, with `PX` when a TTL is given).
//!
//! One managed, multiplexed connection is shared by all clones of a store. When Redis goes
//! away, calls fail with [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) naming
//! the URL (without its password), and the connection is re-established: once Redis is
//! back, the same store works again.
//!
//! With `rediss://` (feature `tls`), the `REDIS_TLS_*` variables mean what they mean for
//! the official SDKs. A `REDIS_TLS_SERVER_NAME` that differs from the URL host is honoured
//! like Python's `ssl` `server_hostname`: TCP goes to the URL's host and port, while the
//! TLS handshake sends that name (SNI) and verifies the certificate against it. The
//! `redis` crate's connection manager cannot be given the DNS resolver this takes, so such
//! a store keeps its connection in its own reconnecting wrapper (`reconnecting.rs`) with
//! the same contract; it reconnects on the next call rather than in the background.

mod client;
mod config;
mod connection;
#[cfg(feature = "tls")]
mod reconnecting;
#[cfg(feature = "tls")]
mod resolver;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cap_proto::Pointer;
use redis::{RedisError, RetryMethod};

use crate::limits::ttl_millis;
use crate::pointer::kv_key;
use crate::{BlobStore, Error, Limits, Result, StoreInfo, key};

use connection::Connection;

pub use config::{DEFAULT_REDIS_URL, RedisConfig, RedisTlsConfig};

/// A connection to Redis or a Redis Cluster as [`RedisConfig`] describes it (TLS,
/// timeouts, reconnection, cluster routing), for other CAP stores that keep their data in
/// the same Redis (the scheduler's job store). Cheap to clone; clones share it.
#[derive(Clone)]
pub struct RedisConnection {
    conn: Connection,
    location: String,
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnection")
            .field("url", &self.location)
            .field("cluster", &self.conn.is_cluster())
            .finish()
    }
}

impl RedisConnection {
    /// Connects and checks with a `PING`, failing fast with an error naming the URL
    /// without its password (see [`RedisBlobStore::connect`]).
    pub async fn open(config: &RedisConfig) -> Result<Self> {
        let location = config.redacted_url();
        let classify = |e: RedisError| {
            Shared {
                limits: config.limits,
                location: location.clone(),
            }
            .error(e)
        };
        let conn = match config.cluster_nodes() {
            Some(nodes) => {
                for n in &nodes {
                    RedisConfig::check_url(n)?;
                }
                Connection::open_cluster(&nodes, config)
                    .await
                    .map_err(classify)?
            }
            None => {
                let url = config.parsed_url()?;
                let target = client::build(config, &url)?;
                Connection::open(target, config).await.map_err(classify)?
            }
        };
        Ok(RedisConnection { conn, location })
    }

    /// Whether it is a Redis Cluster connection (commands for keys in different slots
    /// must not share a pipeline).
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// The server's URL (or the cluster's node URLs) without passwords.
    pub fn location(&self) -> &str {
        &self.location
    }
}

impl redis::aio::ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        self.conn.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        self.conn.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// Longest pause between reconnection attempts.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);

/// A blob store in Redis. Cheap to clone; clones share one connection.
///
/// ```no_run
/// # async fn demo() -> cap_blob::Result<()> {
/// use cap_blob::{BlobStore, RedisBlobStore, RedisConfig};
/// // REDIS_URL (default redis://127.0.0.1:6379/0) and REDIS_TLS_*; fails fast if unreachable.
/// let store = RedisBlobStore::connect(RedisConfig::from_env()).await?;
/// let ptr = store.put_context("job-1", bytes::Bytes::from_static(b"{}")).await?;
/// assert_eq!(ptr.to_string(), "redis://ctx:job-1");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBlobStore {
    conn: Connection,
    shared: Arc<Shared>,
}

struct Shared {
    limits: Limits,
    /// The URL without its password, for errors.
    location: String,
}

impl std::fmt::Debug for RedisBlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBlobStore")
            .field("url", &self.shared.location)
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

impl RedisBlobStore {
    /// Connects and checks the server with a `PING`, failing fast (one attempt, bounded by
    /// `connect_timeout`) with an error naming the URL without its password:
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) if Redis cannot be reached,
    /// [`ErrorKind::Backend`](crate::ErrorKind::Backend) if it refuses us (authentication),
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig) for a bad URL or TLS
    /// setting.
    pub async fn connect(config: RedisConfig) -> Result<Self> {
        let conn = RedisConnection::open(&config).await?;
        let shared = Arc::new(Shared {
            limits: config.limits,
            location: conn.location.clone(),
        });
        Ok(RedisBlobStore {
            conn: conn.conn,
            shared,
        })
    }

    /// [`connect`](Self::connect) with [`RedisConfig::from_env`].
    pub async fn from_env() -> Result<Self> {
        Self::connect(RedisConfig::from_env()).await
    }

    /// The server's URL without its password.
    pub fn location(&self) -> &str {
        &self.shared.location
    }

    /// Sends a `PING`: a health check.
    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.shared.error(e))
    }
}

impl Shared {
    /// Classifies a Redis error: connection trouble and "try later" answers are
    /// `Unavailable`, the rest `Backend`.
    fn error(&self, e: RedisError) -> Error {
        let transient = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || (matches!(e.kind(), redis::ErrorKind::Server(_))
                && matches!(
                    e.retry_method(),
                    RetryMethod::WaitAndRetry | RetryMethod::RetryImmediately
                ));
        let location = self.location.clone();
        let source = Box::new(e);
        if transient {
            Error::Unavailable {
                backend: "redis",
                location,
                source,
            }
        } else {
            Error::Backend {
                backend: "redis",
                location,
                source,
            }
        }
    }
}

impl StoreInfo for RedisBlobStore {
    fn scheme(&self) -> &'static str {
        "redis"
    }

    fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    fn pointer_for(&self, key: &str) -> Result<Pointer> {
        crate::pointer::for_key(key)
    }

    fn key_for<'p>(&self, pointer: &'p Pointer) -> Result<&'p str> {
        kv_key(pointer, "redis")
    }
}

impl BlobStore for RedisBlobStore {
    fn get(&self, key: &str) -> impl Future<Output = Result<Bytes>> + Send {
        let mut conn = self.conn.clone();
        async move {
            key::check(key)?;
            let value: Option<Bytes> = match redis::cmd("GET").arg(key).query_async(&mut conn).await
            {
                Ok(v) => v,
                // A key holding a list, set, hash, ... is not a blob: no blob there.
                Err(e) if e.code() == Some("WRONGTYPE") => None,
                Err(e) => return Err(self.shared.error(e)),
            };
            value.ok_or_else(|| Error::not_found(key))
        }
    }

    fn put(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<()>> + Send {
        let mut conn = self.conn.clone();
        async move {
            key::check(key)?;
            self.shared.limits.check_size(value.len())?;
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(value.as_ref());
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg(ttl_millis(ttl));
            }
            cmd.query_async::<()>(&mut conn)
                .await
                .map_err(|e| self.shared.error(e))
        }
    }

    fn delete(&self, key: &str) -> impl Future<Output = Result<bool>> + Send {
        let mut conn = self.conn.clone();
        async move {
            key::check(key)?;
            let n: i64 = redis::cmd("DEL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.shared.error(e))?;
            Ok(n > 0)
        }
    }

    fn exists(&self, key: &str) -> impl Future<Output = Result<bool>> + Send {
        let mut conn = self.conn.clone();
        async move {
            key::check(key)?;
            let n: i64 = redis::cmd("EXISTS")
                .arg(key)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.shared.error(e))?;
            Ok(n > 0)
        }
    }

    fn put_if_absent(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<bool>> + Send {
        let mut conn = self.conn.clone();
        async move {
            key::check(key)?;
            self.shared.limits.check_size(value.len())?;
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(value.as_ref()).arg("NX");
            if let Some(ttl) = ttl {
                cmd.arg("PX").arg(ttl_millis(ttl));
            }
            // `OK` when set, nil when the key was there.
            let set: Option<String> = cmd
                .query_async(&mut conn)
                .await
                .map_err(|e| self.shared.error(e))?;
            Ok(set.is_some())
        }
    }
}
