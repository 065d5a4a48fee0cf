//! [`ReplayGuard`]: freshness and replay protection in bounded memory.
//!
//! A packet is fresh when its `created_at` lies within ±`window` of now. A signed packet
//! is a replay when a packet with the same signature was already accepted and is still
//! inside the window (a re-sent copy, even re-encoded in another field order, carries the
//! same signature). Entries are dropped once their packet can no longer be fresh, so
//! memory is bounded by the rate of signed packets × 2 × window.
//!
//! **At the bound**: when `capacity` entries are all still inside the window, new signed
//! packets are refused with [`Error::ReplayCapacity`] (fail closed) until entries age out.
//! Size `capacity` for the peak signed-packet rate × 2 × window.

use crate::Error;
use cap_proto::Timestamp;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Default freshness window: ±60 s.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Default number of remembered signatures.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Rejects stale packets and replays of accepted signed packets.
#[derive(Debug)]
pub struct ReplayGuard {
    window: Duration,
    capacity: usize,
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    digests: HashSet<[u8; 32]>,
    /// (expiry in ms since epoch, digest), ordered by expiry.
    expiry: BTreeSet<(i128, [u8; 32])>,
}

fn millis(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i128,
        Err(e) => -(e.duration().as_millis() as i128),
    }
}

impl Default for ReplayGuard {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW, DEFAULT_CAPACITY)
    }
}

impl ReplayGuard {
    /// A guard with the given window and capacity.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            window,
            capacity: capacity.max(1),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// The freshness window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// How many signatures are remembered now.
    pub fn len(&self) -> usize {
        self.seen.lock().map(|s| s.digests.len()).unwrap_or(0)
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks freshness of `created_at` against `now`; for a signed packet (non-empty
    /// `signature`) also records it and rejects a copy seen before.
    pub fn check(
        &self,
        created_at: Option<&Timestamp>,
        signature: &[u8],
        now: SystemTime,
    ) -> Result<(), Error> {
        let window_ms = self.window.as_millis() as i128;
        let now_ms = millis(now);
        let Some(ts) = created_at else {
            return Err(Error::Stale { skew_ms: i64::MIN });
        };
        let created_ms = i128::from(ts.seconds) * 1000 + i128::from(ts.nanos) / 1_000_000;
        let skew = created_ms - now_ms;
        if skew.abs() > window_ms {
            return Err(Error::Stale {
                skew_ms: skew.clamp(i64::MIN as i128, i64::MAX as i128) as i64,
            });
        }
        if signature.is_empty() {
            return Ok(());
        }
        let digest: [u8; 32] = Sha256::digest(signature).into();
        // A poisoned lock only means another thread panicked mid-update; the sets are
        // still consistent enough to keep refusing replays.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // Forget entries whose packets can no longer be fresh.
        while let Some(&(exp, d)) = seen.expiry.first() {
            if exp >= now_ms {
                break;
            }
            seen.expiry.pop_first();
            seen.digests.remove(&d);
        }
        if seen.digests.contains(&digest) {
            return Err(Error::Replayed);
        }
        if seen.digests.len() >= self.capacity {
            return Err(Error::ReplayCapacity);
        }
        seen.digests.insert(digest);
        seen.expiry.insert((created_ms + window_ms, digest));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(t: SystemTime) -> Timestamp {
        cap_proto::packet::timestamp(t)
    }

    #[test]
    fn freshness_window() {
        let g = ReplayGuard::default();
        let now = SystemTime::now();
        g.check(Some(&ts(now)), b"", now).unwrap();
        g.check(Some(&ts(now - Duration::from_secs(59))), b"", now)
            .unwrap();
        assert!(
            matches!(g.check(Some(&ts(now - Duration::from_secs(61))), b"", now), Err(Error::Stale { skew_ms }) if skew_ms < 0)
        );
        assert!(
            matches!(g.check(Some(&ts(now + Duration::from_secs(61))), b"", now), Err(Error::Stale { skew_ms }) if skew_ms > 0)
        );
        assert!(matches!(g.check(None, b"", now), Err(Error::Stale { .. })));
    }

    #[test]
    fn replays_are_rejected_until_they_expire() {
        let g = ReplayGuard::new(Duration::from_secs(60), 10);
        let now = SystemTime::now();
        let t = ts(now);
        g.check(Some(&t), b"sig-1", now).unwrap();
        assert_eq!(g.check(Some(&t), b"sig-1", now), Err(Error::Replayed));
        g.check(Some(&t), b"sig-2", now).unwrap();
        assert_eq!(g.len(), 2);
        // Later, the entries expire; the old packet is now stale rather than a replay.
        let later = now + Duration::from_secs(121);
        assert!(matches!(
            g.check(Some(&t), b"sig-1", later),
            Err(Error::Stale { .. })
        ));
        g.check(Some(&ts(later)), b"sig-3", later).unwrap();
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn fails_closed_at_capacity() {
        let g = ReplayGuard::new(Duration::from_secs(60), 3);
        let now = SystemTime::now();
        for i in 0..3u8 {
            g.check(Some(&ts(now)), &[i], now).unwrap();
        }
        assert_eq!(
            g.check(Some(&ts(now)), &[9], now),
            Err(Error::ReplayCapacity)
        );
        // Unsigned packets are only checked for freshness.
        g.check(Some(&ts(now)), b"", now).unwrap();
        let later = now + Duration::from_secs(61);
        g.check(Some(&ts(later)), &[9], later).unwrap();
    }
}
