//! Replay admission for CAP-PRODUCTION: a store remembers each admitted (tenant, audience,
//! sender, message id) with the signed body digest until the signature's expiry plus the
//! clock skew. The first copy is [`ReplayOutcome::First`]; the same bytes again are
//! [`ReplayOutcome::Duplicate`] (drop, the handler already ran); the same key with another
//! digest is [`ProductionError::ReplayConflict`]; a store that cannot answer is
//! [`ProductionError::ReplayUnavailable`], which callers treat as a rejection.
//!
//! [`ReplayStore`] is the generic trait (hot paths stay generic); [`DynReplayStore`] is
//! its object-safe companion (`Arc<dyn DynReplayStore>` is a `ReplayStore` again).
//! [`MemoryReplayStore`] is the bounded in-memory store for single-process deployments;
//! `cap-runtime` has the Redis one for stores shared between processes.

use super::ProductionError;
use super::metadata::nanos;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Default capacity of a [`MemoryReplayStore`]: unexpired entries it holds at most.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

/// What identifies one production message for replay purposes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplayKey {
    /// `identity.tenant_id` (the verified tenant).
    pub tenant: String,
    /// The metadata audience (the subject the packet was sent on).
    pub audience: String,
    /// `sender_id`.
    pub sender: String,
    /// The metadata's 16-byte message id.
    pub message_id: [u8; 16],
}

impl ReplayKey {
    /// An unambiguous text form for key-value backends: each string with its byte length
    /// in front, then the message id in hex (`4:acme|8:job.echo|5:sched|00ff…`), so no
    /// choice of strings makes two keys collide.
    pub fn storage_key(&self) -> String {
        let mut s =
            String::with_capacity(self.tenant.len() + self.audience.len() + self.sender.len() + 48);
        for part in [&self.tenant, &self.audience, &self.sender] {
            let _ = write!(s, "{}:{}|", part.len(), part);
        }
        for b in self.message_id {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

/// One admission request: the key, the signed body digest, and until when to remember it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayEntry {
    /// The message's identity.
    pub key: ReplayKey,
    /// SHA-256 of the unsigned bytes.
    pub digest: [u8; 32],
    /// Expiry of the signature plus the receiver's clock skew.
    pub keep_until: SystemTime,
}

impl ReplayEntry {
    /// Checks what every store refuses before looking anything up: empty tenant,
    /// audience or sender, or an entry already past `keep_until` (the peer's store
    /// reports both as unavailable).
    pub fn check(&self, now: SystemTime) -> Result<(), ProductionError> {
        let k = &self.key;
        if k.tenant.is_empty() || k.audience.is_empty() || k.sender.is_empty() {
            return Err(ProductionError::ReplayUnavailable(
                "invalid replay admission input".into(),
            ));
        }
        if self.keep_until <= now {
            return Err(ProductionError::ReplayUnavailable(
                "entry expires before it is stored".into(),
            ));
        }
        Ok(())
    }
}

/// What a store says about an admitted message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplayOutcome {
    /// First time seen: act on it.
    First,
    /// Seen before with the same body: a redelivery, do not act again.
    Duplicate,
}

/// Atomic replay admission. Implementations must decide "first" for exactly one of any
/// number of concurrent admissions of one key, across every process sharing the store.
pub trait ReplayStore: Send + Sync {
    /// Admits `entry` at `now`: [`ReplayOutcome::First`] and remembered until
    /// `entry.keep_until`, [`ReplayOutcome::Duplicate`] when remembered with the same
    /// digest, [`ProductionError::ReplayConflict`] with another digest, and
    /// [`ProductionError::ReplayUnavailable`] (or [`ProductionError::ReplayFull`]) when the
    /// store cannot answer or `entry` fails [`ReplayEntry::check`].
    fn admit(
        &self,
        entry: &ReplayEntry,
        now: SystemTime,
    ) -> impl Future<Output = Result<ReplayOutcome, ProductionError>> + Send;
}

/// A boxed, `Send` future: what [`DynReplayStore`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe form of [`ReplayStore`]. Every `ReplayStore` implements it, and
/// `dyn DynReplayStore` (so `Arc<dyn DynReplayStore>`) is a `ReplayStore` again.
pub trait DynReplayStore: Send + Sync {
    /// [`ReplayStore::admit`], boxed.
    fn admit_boxed<'a>(
        &'a self,
        entry: &'a ReplayEntry,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<ReplayOutcome, ProductionError>>;
}

impl<S: ReplayStore> DynReplayStore for S {
    fn admit_boxed<'a>(
        &'a self,
        entry: &'a ReplayEntry,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<ReplayOutcome, ProductionError>> {
        Box::pin(self.admit(entry, now))
    }
}

impl ReplayStore for dyn DynReplayStore {
    async fn admit(
        &self,
        entry: &ReplayEntry,
        now: SystemTime,
    ) -> Result<ReplayOutcome, ProductionError> {
        self.admit_boxed(entry, now).await
    }
}

impl<S: ReplayStore + ?Sized> ReplayStore for Arc<S> {
    fn admit(
        &self,
        entry: &ReplayEntry,
        now: SystemTime,
    ) -> impl Future<Output = Result<ReplayOutcome, ProductionError>> + Send {
        (**self).admit(entry, now)
    }
}

/// Compile-time proof that [`DynReplayStore`] stays object safe.
const _OBJECT_SAFE: fn() = || {
    fn takes(_: Option<&dyn DynReplayStore>) {}
    takes(None);
};

/// A bounded in-memory [`ReplayStore`] for one process. Entries are evicted once past
/// their `keep_until`; when `capacity` unexpired entries are held, new keys are refused
/// with [`ProductionError::ReplayFull`] (fail closed) until some expire. Size it for the
/// peak production message rate × (max lifetime + skew).
///
/// ```
/// use cap_sign::production::{MemoryReplayStore, ReplayEntry, ReplayKey, ReplayOutcome, ReplayStore};
/// use std::time::{Duration, SystemTime};
///
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     let mut f = std::pin::pin!(f);
/// #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
/// #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
/// # }
/// let store = MemoryReplayStore::new(1000);
/// let now = SystemTime::now();
/// let entry = ReplayEntry {
///     key: ReplayKey { tenant: "acme".into(), audience: "job.echo".into(), sender: "sched".into(), message_id: [7; 16] },
///     digest: [1; 32],
///     keep_until: now + Duration::from_secs(60),
/// };
/// assert_eq!(block_on(store.admit(&entry, now)), Ok(ReplayOutcome::First));
/// assert_eq!(block_on(store.admit(&entry, now)), Ok(ReplayOutcome::Duplicate));
/// ```
#[derive(Debug)]
pub struct MemoryReplayStore {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// key → (digest, keep_until in ns since the epoch).
    entries: HashMap<ReplayKey, ([u8; 32], i128)>,
    /// (keep_until, key), oldest first, for eviction.
    by_expiry: BTreeSet<(i128, ReplayKey)>,
}

impl Default for MemoryReplayStore {
    fn default() -> Self {
        Self::new(DEFAULT_REPLAY_CAPACITY)
    }
}

impl MemoryReplayStore {
    /// A store holding at most `capacity` unexpired entries (at least 1).
    pub fn new(capacity: usize) -> Self {
        MemoryReplayStore {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many entries are held (expired ones included until the next admission).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-admission; both maps
        // are updated together after every check, so the state is still consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The synchronous admission behind [`ReplayStore::admit`].
    pub fn admit_now(
        &self,
        entry: &ReplayEntry,
        now: SystemTime,
    ) -> Result<ReplayOutcome, ProductionError> {
        entry.check(now)?;
        let now = nanos(now);
        let mut inner = self.lock();
        while let Some((until, _)) = inner.by_expiry.first() {
            if *until > now {
                break;
            }
            if let Some((_, key)) = inner.by_expiry.pop_first() {
                inner.entries.remove(&key);
            }
        }
        if let Some((digest, _)) = inner.entries.get(&entry.key) {
            return if *digest == entry.digest {
                Ok(ReplayOutcome::Duplicate)
            } else {
                Err(ProductionError::ReplayConflict)
            };
        }
        if inner.entries.len() >= self.capacity {
            return Err(ProductionError::ReplayFull {
                capacity: self.capacity,
            });
        }
        let until = nanos(entry.keep_until);
        inner
            .entries
            .insert(entry.key.clone(), (entry.digest, until));
        inner.by_expiry.insert((until, entry.key.clone()));
        Ok(ReplayOutcome::First)
    }
}

impl ReplayStore for MemoryReplayStore {
    fn admit(
        &self,
        entry: &ReplayEntry,
        now: SystemTime,
    ) -> impl Future<Output = Result<ReplayOutcome, ProductionError>> + Send {
        std::future::ready(self.admit_now(entry, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry(id: u8, digest: u8, until: SystemTime) -> ReplayEntry {
        ReplayEntry {
            key: ReplayKey {
                tenant: "acme".into(),
                audience: "job.echo".into(),
                sender: "sched".into(),
                message_id: [id; 16],
            },
            digest: [digest; 32],
            keep_until: until,
        }
    }

    #[test]
    fn entries_expire_and_capacity_fails_closed() {
        let store = MemoryReplayStore::new(2);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let soon = now + Duration::from_secs(10);
        let later = now + Duration::from_secs(100);
        assert_eq!(
            store.admit_now(&entry(1, 1, soon), now),
            Ok(ReplayOutcome::First)
        );
        assert_eq!(
            store.admit_now(&entry(2, 1, later), now),
            Ok(ReplayOutcome::First)
        );
        assert_eq!(
            store.admit_now(&entry(3, 1, later), now),
            Err(ProductionError::ReplayFull { capacity: 2 })
        );
        // Still remembered just before its keep_until; forgotten at it.
        let before = soon - Duration::from_nanos(1);
        assert_eq!(
            store.admit_now(&entry(1, 1, later), before),
            Ok(ReplayOutcome::Duplicate)
        );
        assert_eq!(
            store.admit_now(&entry(3, 1, later), soon),
            Ok(ReplayOutcome::First)
        );
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.admit_now(&entry(1, 9, later), soon),
            Err(ProductionError::ReplayFull { capacity: 2 }),
            "entry 1 expired: a new key, and the store is full again"
        );
        // Expired input is refused, not admitted.
        assert!(matches!(
            store.admit_now(&entry(4, 1, now), now),
            Err(ProductionError::ReplayUnavailable(_))
        ));
    }

    #[test]
    fn storage_keys_are_unambiguous() {
        let a = ReplayKey {
            tenant: "a|1:b".into(),
            audience: "c".into(),
            sender: "s".into(),
            message_id: [0; 16],
        };
        let b = ReplayKey {
            tenant: "a".into(),
            audience: "b|1:c".into(),
            ..a.clone()
        };
        assert_ne!(a.storage_key(), b.storage_key());
        assert!(a.storage_key().ends_with(&"00".repeat(16)));
        assert!(a.storage_key().starts_with("5:a|1:b|1:c|1:s|"));
    }
}
