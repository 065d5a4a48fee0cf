//! [`TrustStore`]: where challenges and sessions live between requests, with time
//! limits, so several scheduler instances share them and a restarted one keeps its
//! sessions. [`MemoryTrustStore`] for one process; `RedisTrustStore` (feature `redis`)
//! for many.
//!
//! Times are passed in (`now_ms`, Unix milliseconds) so the memory store follows the
//! caller's clock; the Redis store lets Redis expire keys after the same TTLs.

use super::error::Error;
use super::session::SessionRecord;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What consuming a challenge found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consumed {
    /// Issued here, unchanged, first use: now used up.
    Fresh,
    /// Already used.
    Replayed,
    /// Never issued (or long gone).
    Unknown,
    /// Issued with other contents (a nonce or field was changed).
    Mismatch,
}

/// Storage of the trust service. Every operation is atomic on its own, also across
/// scheduler instances sharing the backend.
pub trait TrustStore: Send + Sync + 'static {
    /// Records `key` for `ttl`; `false` when it was already recorded (a replay).
    fn remember<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<bool, Error>>;

    /// Records an issued challenge: its id and the digest of its contents, for `ttl`.
    fn put_challenge<'a>(
        &'a self,
        challenge_id: &'a str,
        digest: [u8; 32],
        ttl: Duration,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Uses up a challenge whose contents hash to `digest`; a used challenge id is
    /// remembered for `used_ttl`.
    fn consume_challenge<'a>(
        &'a self,
        challenge_id: &'a str,
        digest: [u8; 32],
        used_ttl: Duration,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Consumed, Error>>;

    /// Stores a session under its token id (see [`token_id`](super::token_id)) until
    /// `record.expires_at_ms`.
    fn put_session<'a>(
        &'a self,
        token_id: &'a str,
        record: &'a SessionRecord,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// The session of a token id, if it has not expired.
    fn session<'a>(
        &'a self,
        token_id: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, Error>>;

    /// Replaces session `old` by `new` in one step: `old` is stored again with
    /// `old_record` (its expiry shortened to a grace period, for packets already on their
    /// way) only if it still exists, `new` like [`put_session`](Self::put_session).
    fn rotate_session<'a>(
        &'a self,
        old: &'a str,
        old_record: &'a SessionRecord,
        new: &'a str,
        record: &'a SessionRecord,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), Error>>;

    /// Ends one session; `true` if it existed.
    fn revoke_session<'a>(&'a self, token_id: &'a str) -> BoxFuture<'a, Result<bool, Error>>;

    /// Ends every session of a worker; how many there were.
    fn revoke_worker<'a>(&'a self, worker_id: &'a str) -> BoxFuture<'a, Result<usize, Error>>;
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Default)]
struct Inner {
    remembered: HashMap<String, u64>,
    challenges: HashMap<String, ([u8; 32], u64)>,
    used: HashMap<String, u64>,
    sessions: HashMap<String, SessionRecord>,
    ops: u32,
}

impl Inner {
    /// Forgets what expired, every 256 operations.
    fn sweep(&mut self, now: u64) {
        self.ops = self.ops.wrapping_add(1);
        if !self.ops.is_multiple_of(256) {
            return;
        }
        self.remembered.retain(|_, until| *until > now);
        self.challenges.retain(|_, (_, until)| *until > now);
        self.used.retain(|_, until| *until > now);
        self.sessions.retain(|_, r| r.is_live(now));
    }
}

/// Challenges and sessions in this process's memory (gone with it). Clones share the
/// contents, so two trust servers in one process can share one store.
/// [`set_unavailable`](Self::set_unavailable) makes every operation fail, as a store
/// that is down does.
#[derive(Clone, Default)]
pub struct MemoryTrustStore {
    inner: Arc<Mutex<Inner>>,
    down: Arc<AtomicBool>,
}

impl MemoryTrustStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every operation fail (`true`) or work again (`false`).
    pub fn set_unavailable(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    fn with<T>(&self, now: u64, f: impl FnOnce(&mut Inner) -> T) -> Result<T, Error> {
        if self.down.load(Ordering::Relaxed) {
            return Err(Error::store("memory store marked unavailable"));
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.sweep(now);
        Ok(f(&mut inner))
    }
}

impl std::fmt::Debug for MemoryTrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTrustStore")
            .field("down", &self.down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TrustStore for MemoryTrustStore {
    fn remember<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<bool, Error>> {
        let r = self.with(now_ms, |i| match i.remembered.get(key) {
            Some(until) if *until > now_ms => false,
            _ => {
                i.remembered
                    .insert(key.to_owned(), now_ms.saturating_add(ms(ttl)));
                true
            }
        });
        Box::pin(std::future::ready(r))
    }

    fn put_challenge<'a>(
        &'a self,
        challenge_id: &'a str,
        digest: [u8; 32],
        ttl: Duration,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let r = self.with(now_ms, |i| {
            i.challenges.insert(
                challenge_id.to_owned(),
                (digest, now_ms.saturating_add(ms(ttl))),
            );
        });
        Box::pin(std::future::ready(r))
    }

    fn consume_challenge<'a>(
        &'a self,
        challenge_id: &'a str,
        digest: [u8; 32],
        used_ttl: Duration,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Consumed, Error>> {
        let r = self.with(now_ms, |i| {
            if i.used
                .get(challenge_id)
                .is_some_and(|until| *until > now_ms)
            {
                return Consumed::Replayed;
            }
            match i.challenges.get(challenge_id) {
                Some((_, until)) if *until <= now_ms => Consumed::Unknown,
                None => Consumed::Unknown,
                Some((d, _)) if *d != digest => Consumed::Mismatch,
                Some(_) => {
                    i.challenges.remove(challenge_id);
                    i.used
                        .insert(challenge_id.to_owned(), now_ms.saturating_add(ms(used_ttl)));
                    Consumed::Fresh
                }
            }
        });
        Box::pin(std::future::ready(r))
    }

    fn put_session<'a>(
        &'a self,
        token_id: &'a str,
        record: &'a SessionRecord,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let r = self.with(now_ms, |i| {
            i.sessions.insert(token_id.to_owned(), record.clone());
        });
        Box::pin(std::future::ready(r))
    }

    fn session<'a>(
        &'a self,
        token_id: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<SessionRecord>, Error>> {
        let r = self.with(now_ms, |i| {
            i.sessions
                .get(token_id)
                .filter(|r| r.is_live(now_ms))
                .cloned()
        });
        Box::pin(std::future::ready(r))
    }

    fn rotate_session<'a>(
        &'a self,
        old: &'a str,
        old_record: &'a SessionRecord,
        new: &'a str,
        record: &'a SessionRecord,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), Error>> {
        let r = self.with(now_ms, |i| {
            if let Some(o) = i.sessions.get_mut(old) {
                *o = old_record.clone();
            }
            i.sessions.insert(new.to_owned(), record.clone());
        });
        Box::pin(std::future::ready(r))
    }

    fn revoke_session<'a>(&'a self, token_id: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        let r = self.with(0, |i| i.sessions.remove(token_id).is_some());
        Box::pin(std::future::ready(r))
    }

    fn revoke_worker<'a>(&'a self, worker_id: &'a str) -> BoxFuture<'a, Result<usize, Error>> {
        let r = self.with(0, |i| {
            let before = i.sessions.len();
            i.sessions.retain(|_, r| r.worker_id != worker_id);
            before - i.sessions.len()
        });
        Box::pin(std::future::ready(r))
    }
}

/// The contract every [`TrustStore`] keeps, run against the memory store here and the
/// Redis store in the integration tests.
#[doc(hidden)]
pub mod conformance {
    use super::*;

    fn record(worker: &str, expires_at_ms: u64) -> SessionRecord {
        SessionRecord {
            worker_id: worker.into(),
            agent_id: worker.into(),
            tenant_id: "default".into(),
            proof_key_id: worker.into(),
            issued_at_ms: 0,
            expires_at_ms,
        }
    }

    /// Checks the store's semantics; ids are made unique with `tag`. `now_ms` is the
    /// current wall-clock time (Redis expires keys on its own clock).
    pub async fn run(store: &dyn TrustStore, tag: &str, now_ms: u64) -> Result<(), String> {
        let ttl = Duration::from_secs(30);
        let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_owned()) };
        let key = format!("{tag}-req");
        check(
            store
                .remember(&key, ttl, now_ms)
                .await
                .map_err(|e| e.to_string())?,
            "first remember",
        )?;
        check(
            !store
                .remember(&key, ttl, now_ms)
                .await
                .map_err(|e| e.to_string())?,
            "second remember is a replay",
        )?;

        let ch = format!("{tag}-ch");
        let e = |e: Error| e.to_string();
        store
            .put_challenge(&ch, [1; 32], ttl, now_ms)
            .await
            .map_err(e)?;
        check(
            store
                .consume_challenge(&ch, [2; 32], ttl, now_ms)
                .await
                .map_err(e)?
                == Consumed::Mismatch,
            "changed contents",
        )?;
        check(
            store
                .consume_challenge(&ch, [1; 32], ttl, now_ms)
                .await
                .map_err(e)?
                == Consumed::Fresh,
            "first use",
        )?;
        check(
            store
                .consume_challenge(&ch, [1; 32], ttl, now_ms)
                .await
                .map_err(e)?
                == Consumed::Replayed,
            "second use",
        )?;
        check(
            store
                .consume_challenge(&format!("{tag}-never"), [1; 32], ttl, now_ms)
                .await
                .map_err(e)?
                == Consumed::Unknown,
            "never issued",
        )?;

        let (a, b, c) = (format!("{tag}-a"), format!("{tag}-b"), format!("{tag}-c"));
        let worker = format!("{tag}-w");
        let live = record(&worker, now_ms + 60_000);
        store.put_session(&a, &live, now_ms).await.map_err(e)?;
        check(
            store.session(&a, now_ms).await.map_err(e)? == Some(live.clone()),
            "stored session",
        )?;
        check(
            store
                .session(&a, now_ms + 60_000)
                .await
                .map_err(e)?
                .is_none(),
            "expired session",
        )?;
        let short = SessionRecord {
            expires_at_ms: now_ms + 1_000,
            ..live.clone()
        };
        store
            .rotate_session(&a, &short, &b, &live, now_ms)
            .await
            .map_err(e)?;
        let old = store.session(&a, now_ms).await.map_err(e)?;
        check(
            old.as_ref()
                .is_some_and(|o| o.expires_at_ms <= now_ms + 1_000),
            "old token within its grace",
        )?;
        check(
            store
                .session(&a, now_ms + 1_000)
                .await
                .map_err(e)?
                .is_none(),
            "old token after its grace",
        )?;
        check(
            store.session(&b, now_ms).await.map_err(e)?.is_some(),
            "new token",
        )?;
        store.put_session(&c, &live, now_ms).await.map_err(e)?;
        check(store.revoke_session(&c).await.map_err(e)?, "revoke one")?;
        let d = format!("{tag}-d");
        store
            .rotate_session(&c, &short, &d, &live, now_ms)
            .await
            .map_err(e)?;
        check(
            store.session(&c, now_ms).await.map_err(e)?.is_none(),
            "a rotation does not revive a revoked token",
        )?;
        check(
            store.session(&c, now_ms).await.map_err(e)?.is_none(),
            "revoked token",
        )?;
        check(
            store.revoke_worker(&worker).await.map_err(e)? >= 1,
            "revoke worker",
        )?;
        check(
            store.session(&b, now_ms).await.map_err(e)?.is_none(),
            "worker's tokens revoked",
        )?;
        check(
            !store.revoke_session(&b).await.map_err(e)?,
            "nothing left to revoke",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_store_keeps_the_contract() {
        let store = MemoryTrustStore::new();
        conformance::run(&store, "mem", 1_000_000).await.unwrap();
        store.set_unavailable(true);
        assert!(
            store
                .remember("x", Duration::from_secs(1), 0)
                .await
                .is_err()
        );
        assert!(conformance::run(&store, "down", 1_000_000).await.is_err());
    }

    #[tokio::test]
    async fn memory_store_follows_the_callers_clock() {
        let store = MemoryTrustStore::new();
        let ttl = Duration::from_millis(100);
        assert!(store.remember("k", ttl, 0).await.unwrap());
        assert!(store.remember("k", ttl, 100).await.unwrap(), "expired");
        store.put_challenge("c", [0; 32], ttl, 0).await.unwrap();
        assert_eq!(
            store
                .consume_challenge("c", [0; 32], ttl, 100)
                .await
                .unwrap(),
            Consumed::Unknown
        );
        // Sweeping keeps live entries.
        for n in 0..600 {
            store.remember(&format!("n{n}"), ttl, 1_000).await.unwrap();
        }
        assert!(!store.remember("n599", ttl, 1_050).await.unwrap());
    }
}
