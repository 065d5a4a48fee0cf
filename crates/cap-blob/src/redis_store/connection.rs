//! The connection a store sends its commands on: the `redis` crate's connection manager,
//! or (for a TLS server name that differs from the URL host) our own reconnecting
//! connection, which takes the DNS resolver the manager cannot.

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

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Managed(c) => c.req_packed_command(cmd),
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
            #[cfg(feature = "tls")]
            Connection::Redirected(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Managed(c) => c.get_db(),
            #[cfg(feature = "tls")]
            Connection::Redirected(c) => c.get_db(),
        }
    }
}
