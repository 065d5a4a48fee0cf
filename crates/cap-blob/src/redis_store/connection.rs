//! The connection a store sends its commands on: the `redis` crate's connection manager,
//! a Redis Cluster connection (slot routing, failover to replicas), or (for a TLS server
//! name that differs from the URL host) our own reconnecting connection, which takes the
//! DNS resolver the manager cannot.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::client::Target;
use super::{MAX_RECONNECT_DELAY, RedisConfig};

#[cfg(feature = "tls")]
use super::reconnecting::Reconnecting;

/// A managed, multiplexed connection that reconnects after the server comes back.
#[derive(Clone)]
pub(crate) enum Connection {
    /// The usual case.
    Managed(ConnectionManager),
    /// A Redis Cluster: commands go to the node owning their keys' slot.
    Cluster(std::sync::Arc<Cluster>),
    /// TCP to the URL host, TLS to `REDIS_TLS_SERVER_NAME`.
    #[cfg(feature = "tls")]
    Redirected(Reconnecting),
}

impl Connection {
    /// Connects once, checks the server with a `PING` (failing fast: one attempt, bounded
    /// by `connect_timeout`), then sets up the managed connection.
    pub(crate) async fn open(target: Target, config: &RedisConfig) -> Result<Self, RedisError> {
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout));
        #[cfg(feature = "tls")]
        let redirected = target.connect_to.is_some();
        #[cfg(feature = "tls")]
        let conn_config = match target.connect_to {
            Some(resolver) => conn_config.set_dns_resolver(resolver),
            None => conn_config,
        };
        let mut probe = target
            .client
            .get_multiplexed_async_connection_with_config(&conn_config)
            .await?;
        redis::cmd("PING").query_async::<()>(&mut probe).await?;

        #[cfg(feature = "tls")]
        if redirected {
            return Ok(Connection::Redirected(Reconnecting::new(
                target.client,
                conn_config,
                config.reconnect_retries,
                probe,
            )));
        }
        drop(probe);
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(config.reconnect_retries)
            .set_max_delay(MAX_RECONNECT_DELAY);
        let manager = ConnectionManager::new_with_config(target.client, manager_config).await?;
        Ok(Connection::Managed(manager))
    }
}

/// A Redis Cluster connection that rebuilds itself from the seed nodes when a node stops
/// answering: the `redis` crate's cluster client reconnects to a dead primary's address
/// instead of re-reading the topology, so after a failover it would keep failing.
pub(crate) struct Cluster {
    client: redis::cluster::ClusterClient,
    conn: std::sync::RwLock<redis::cluster_async::ClusterConnection>,
    /// When the connection was last rebuilt (rebuilds are at most one per second).
    rebuilt: std::sync::Mutex<std::time::Instant>,
    connect_timeout: std::time::Duration,
}

impl Cluster {
    fn current(&self) -> redis::cluster_async::ClusterConnection {
        self.conn.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// After a connection failure or a timeout: a fresh connection (fresh topology).
    async fn rebuild(&self) {
        {
            let mut last = self.rebuilt.lock().unwrap_or_else(|p| p.into_inner());
            if last.elapsed() < std::time::Duration::from_secs(1) {
                return;
            }
            *last = std::time::Instant::now();
        }
        let fresh =
            tokio::time::timeout(self.connect_timeout, self.client.get_async_connection()).await;
        if let Ok(Ok(conn)) = fresh {
            *self.conn.write().unwrap_or_else(|p| p.into_inner()) = conn;
        }
    }
}

/// Whether an error means the node is gone or not answering (not a command error).
fn lost(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

impl Connection {
    /// Connects to a Redis Cluster through any of `seeds`, checks it with a `PING`.
    pub(crate) async fn open_cluster(
        seeds: &[String],
        config: &RedisConfig,
    ) -> Result<Self, RedisError> {
        let client = redis::cluster::ClusterClient::builder(seeds.to_vec())
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.response_timeout)
            .retries(u32::try_from(config.reconnect_retries).unwrap_or(u32::MAX))
            .build()?;
        let connect = client.get_async_connection();
        let mut conn = tokio::time::timeout(config.connect_timeout, connect)
            .await
            .map_err(|_| {
                RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no cluster node answered in time",
                ))
            })??;
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        Ok(Connection::Cluster(std::sync::Arc::new(Cluster {
            client,
            conn: std::sync::RwLock::new(conn),
            rebuilt: std::sync::Mutex::new(std::time::Instant::now()),
            connect_timeout: config.connect_timeout,
        })))
    }

    /// Whether commands for different slots must be sent separately.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster(_))
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Managed(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => {
                let c = c.clone();
                Box::pin(async move {
                    let r = c.current().req_packed_command(cmd).await;
                    if let Err(e) = &r
                        && lost(e)
                    {
                        c.rebuild().await;
                    }
                    r
                })
            }
            #[cfg(feature = "tls")]
            Connection::Redirected(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => {
                let c = c.clone();
                Box::pin(async move {
                    let r = c
                        .current()
                        .req_packed_commands(pipeline, offset, count)
                        .await;
                    if let Err(e) = &r
                        && lost(e)
                    {
                        c.rebuild().await;
                    }
                    r
                })
            }
            #[cfg(feature = "tls")]
            Connection::Redirected(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Managed(c) => c.get_db(),
            Connection::Cluster(c) => c.current().get_db(),
            #[cfg(feature = "tls")]
            Connection::Redirected(c) => c.get_db(),
        }
    }
}
