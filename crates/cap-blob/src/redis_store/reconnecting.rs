//! A multiplexed connection that replaces itself once it is lost: what
//! `redis::aio::ConnectionManager` does, for a connection configuration the manager cannot
//! take (it builds its own, without a DNS resolver).
//!
//! Commands run on the current connection. A command failing in a way that means the
//! connection is gone (`RedisError::is_unrecoverable_error`, the manager's test) drops it;
//! the next command connects again: one attempt plus `retries`, with exponential backoff
//! capped at [`MAX_RECONNECT_DELAY`]. Only one caller connects at a time; callers that
//! waited for it share its outcome (the new connection, or its error) instead of starting
//! rounds of their own.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};

use super::MAX_RECONNECT_DELAY;

/// Pause before the first retry; each later one doubles it, up to [`MAX_RECONNECT_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// A self-healing multiplexed connection. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub(crate) struct Reconnecting(Arc<Inner>);

struct Inner {
    client: Client,
    config: AsyncConnectionConfig,
    retries: usize,
    db: i64,
    state: RwLock<State>,
    /// Held by the one caller connecting.
    connecting: tokio::sync::Mutex<()>,
}

struct State {
    /// The live connection, `None` once it was lost or a connection round failed.
    conn: Option<MultiplexedConnection>,
    /// Bumped when a connection round ends, either way.
    generation: u64,
    /// Why the last round failed, for the callers that waited for it.
    last_error: Option<RedisError>,
}

impl Reconnecting {
    /// Starts with `conn`, an established connection of `client` made with `config`.
    pub(crate) fn new(
        client: Client,
        config: AsyncConnectionConfig,
        retries: usize,
        conn: MultiplexedConnection,
    ) -> Self {
        Reconnecting(Arc::new(Inner {
            client,
            config,
            retries,
            db: conn.get_db(),
            state: RwLock::new(State {
                conn: Some(conn),
                generation: 0,
                last_error: None,
            }),
            connecting: tokio::sync::Mutex::new(()),
        }))
    }

    fn state(&self) -> RwLockReadGuard<'_, State> {
        // The lock guards plain assignments: a panic elsewhere cannot leave it half-written.
        self.0.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn state_mut(&self) -> RwLockWriteGuard<'_, State> {
        self.0.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current connection and its generation, connecting first if there is none.
    async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        let seen = {
            let state = self.state();
            if let Some(conn) = &state.conn {
                return Ok((state.generation, conn.clone()));
            }
            state.generation
        };
        let _turn = self.0.connecting.lock().await;
        {
            let state = self.state();
            if state.generation != seen {
                // A round ended while we waited: take its outcome.
                if let Some(conn) = &state.conn {
                    return Ok((state.generation, conn.clone()));
                }
                if let Some(e) = &state.last_error {
                    return Err(e.clone());
                }
            }
        }
        let outcome = self.connect().await;
        let mut state = self.state_mut();
        state.generation += 1;
        match outcome {
            Ok(conn) => {
                state.conn = Some(conn.clone());
                state.last_error = None;
                Ok((state.generation, conn))
            }
            Err(e) => {
                state.conn = None;
                state.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// One attempt plus `retries`, with backoff between them.
    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut attempt = 0;
        loop {
            match self
                .0
                .client
                .get_multiplexed_async_connection_with_config(&self.0.config)
                .await
            {
                Ok(conn) => return Ok(conn),
                Err(e) if attempt >= self.0.retries => return Err(e),
                Err(_) => {
                    tokio::time::sleep(retry_delay(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Drops the connection of `generation` if `result` says it is gone (a newer one stays).
    fn check<T>(&self, generation: u64, result: &Result<T, RedisError>) {
        if let Err(e) = result
            && e.is_unrecoverable_error()
        {
            let mut state = self.state_mut();
            if state.generation == generation {
                state.conn = None;
            }
        }
    }
}

/// The pause after failed attempt `attempt` (0-based).
fn retry_delay(attempt: usize) -> Duration {
    let factor = 1u32 << attempt.min(16);
    FIRST_RETRY_DELAY
        .saturating_mul(factor)
        .min(MAX_RECONNECT_DELAY)
}

impl ConnectionLike for Reconnecting {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut conn) = self.connection().await?;
            let result = conn.req_packed_command(cmd).await;
            self.check(generation, &result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut conn) = self.connection().await?;
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            self.check(generation, &result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.0.db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let ms: Vec<u128> = (0..8).map(|a| retry_delay(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(retry_delay(usize::MAX), MAX_RECONNECT_DELAY);
    }
}
