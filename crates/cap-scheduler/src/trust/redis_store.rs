//! [`RedisTrustStore`]: challenges and sessions in Redis, shared by every scheduler
//! instance using the same namespace, kept across restarts, expired by Redis.
//!
//! Keys (all with one hash tag, so the scripts stay on one Redis Cluster slot):
//! `cap:trust:{<ns>}:req:<id>` (seen request ids), `…:ch:<challenge_id>` (the digest of
//! an issued challenge), `…:used:<challenge_id>` (consumed challenges),
//! `…:s:<token_id>` (a session as JSON), `…:w:<worker_id>` (a worker's token ids).
//! Consuming a challenge is one Lua script, so two instances cannot both accept it.

use super::error::Error;
use super::session::{SessionRecord, hex};
use super::store::{Consumed, TrustStore};
use futures_util::future::BoxFuture;
use redis::aio::ConnectionManager;
use std::time::Duration;

/// The namespace of a store that names none: the default audience.
pub const DEFAULT_NAMESPACE: &str = cap_proto::trust::AUDIENCE;

const CONSUME: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
local v = redis.call('GET', KEYS[1])
if not v then return 2 end
if v ~= ARGV[1] then return 3 end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 0
";

const PUT_SESSION: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 0
";

const ROTATE: &str = r"
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'XX') else redis.call('DEL', KEYS[1]) end
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[5])
if redis.call('PTTL', KEYS[3]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[3], ARGV[4]) end
return 0
";

const REVOKE_WORKER: &str = r"
local ids = redis.call('SMEMBERS', KEYS[1])
local n = 0
for _, id in ipairs(ids) do n = n + redis.call('DEL', ARGV[1] .. id) end
redis.call('DEL', KEYS[1])
return n
";

/// The trust store on Redis. Cheap to clone (one managed connection that reconnects by
/// itself).
#[derive(Clone)]
pub struct RedisTrustStore {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisTrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTrustStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisTrustStore {
    /// Connects (and pings) `url`; keys live under `cap:trust:{<namespace>}:`. Every
    /// scheduler instance that should share sessions uses the same namespace.
    pub async fn connect(url: &str, namespace: &str) -> Result<Self, Error> {
        if namespace.is_empty() || namespace.contains(['{', '}']) {
            return Err(Error::new(
                super::error::ErrorKind::Config,
                "namespace must be non-empty, without braces",
            ));
        }
        let client = redis::Client::open(url).map_err(Error::store)?;
        let mut conn = ConnectionManager::new(client).await.map_err(Error::store)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(Error::store)?;
        Ok(RedisTrustStore {
            conn,
            prefix: format!("cap:trust:{{{namespace}}}:"),
        })
    }

    /// The key prefix (`cap:trust:{<namespace>}:`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Deletes every key of this namespace (all challenges and sessions); how many.
    pub async fn purge(&self) -> Result<usize, Error> {
        let mut c = self.conn.clone();
        let pattern = format!("{}*", self.prefix.replace('{', "\\{").replace('}', "\\}"));
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut c)
                .await
                .map_err(Error::store)?;
            if !keys.is_empty() {
                let n: usize = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut c)
                    .await
                    .map_err(Error::store)?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }
}

impl TrustStore for RedisTrustStore {
    fn remember<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let mut c = self.conn.clone();
            let set: Option<String> = redis::cmd("SET")
                .arg(self.key("req", key))
                .arg("1")
                .arg("NX")
                .arg("PX")
                .arg(ms(ttl))
                .query_async(&mut c)
                .await
                .map_err(Error::store)?;
            Ok(set.is_some())
        })
    }

    fn put_challenge<'a>(
        &'a self,
        challenge_id: &'a str,
        digest: [u8; 32],
        ttl: Duration,
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let mut c = self.conn.clone();
            redis::cmd("SET")
                .arg(self.key("ch", challenge_id))
                .arg(hex(&digest))
                .arg("PX")
                .arg(ms(ttl))
                .query_async::<()>(&mut c)
                .await
                .map_err(Error::store)
        })
    }

    fn consume_challenge<'a>(
        &'a self,
        challenge_id: &'a str,
        digest: [u8; 32],
        used_ttl: Duration,
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<Consumed, Error>> {
        Box::pin(async move {
            let mut c = self.conn.clone();
            let code: i64 = redis::cmd("EVAL")
                .arg(CONSUME)
                .arg(2)
                .arg(self.key("ch", challenge_id))
                .arg(self.key("used", challenge_id))
                .arg(hex(&digest))
                .arg(ms(used_ttl))
                .query_async(&mut c)
                .await
                .map_err(Error::store)?;
            Ok(match code {
                0 => Consumed::Fresh,
                1 => Consumed::Replayed,
                3 => Consumed::Mismatch,
                _ => Consumed::Unknown,
            })
        })
    }

    fn put_session<'a>(
        &'a self,
        token_id: &'a str,
        record: &'a SessionRecord,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let json = serde_json::to_string(record).map_err(Error::store)?;
            let ttl = record.expires_at_ms.saturating_sub(now_ms).max(1);
            let mut c = self.conn.clone();
            redis::cmd("EVAL")
                .arg(PUT_SESSION)
                .arg(2)
                .arg(self.key("s", token_id))
                .arg(self.key("w", &record.worker_id))
                .arg(json)
                .arg(ttl)
                .arg(token_id)
                .query_async::<i64>(&mut c)
                .await
                .map(|_| ())
                .map_err(Error::store)
        })
    }

    fn session<'a>(
        &'a self,
        token_id: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, Error>> {
        Box::pin(async move {
            let mut c = self.conn.clone();
            let text: Option<String> = redis::cmd("GET")
                .arg(self.key("s", token_id))
                .query_async(&mut c)
                .await
                .map_err(Error::store)?;
            let Some(text) = text else { return Ok(None) };
            let record: SessionRecord = serde_json::from_str(&text).map_err(Error::store)?;
            Ok(record.is_live(now_ms).then_some(record))
        })
    }

    fn rotate_session<'a>(
        &'a self,
        old: &'a str,
        old_record: &'a SessionRecord,
        new: &'a str,
        record: &'a SessionRecord,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let old_json = serde_json::to_string(old_record).map_err(Error::store)?;
            let new_json = serde_json::to_string(record).map_err(Error::store)?;
            let old_ttl = old_record.expires_at_ms.saturating_sub(now_ms);
            let new_ttl = record.expires_at_ms.saturating_sub(now_ms).max(1);
            let mut c = self.conn.clone();
            redis::cmd("EVAL")
                .arg(ROTATE)
                .arg(3)
                .arg(self.key("s", old))
                .arg(self.key("s", new))
                .arg(self.key("w", &record.worker_id))
                .arg(old_json)
                .arg(old_ttl)
                .arg(new_json)
                .arg(new_ttl)
                .arg(new)
                .query_async::<i64>(&mut c)
                .await
                .map(|_| ())
                .map_err(Error::store)
        })
    }

    fn revoke_session<'a>(&'a self, token_id: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        Box::pin(async move {
            let mut c = self.conn.clone();
            let n: i64 = redis::cmd("DEL")
                .arg(self.key("s", token_id))
                .query_async(&mut c)
                .await
                .map_err(Error::store)?;
            Ok(n > 0)
        })
    }

    fn revoke_worker<'a>(&'a self, worker_id: &'a str) -> BoxFuture<'a, Result<usize, Error>> {
        Box::pin(async move {
            let mut c = self.conn.clone();
            let n: i64 = redis::cmd("EVAL")
                .arg(REVOKE_WORKER)
                .arg(1)
                .arg(self.key("w", worker_id))
                .arg(format!("{}s:", self.prefix))
                .query_async(&mut c)
                .await
                .map_err(Error::store)?;
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }
}
