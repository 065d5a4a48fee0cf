//! Counters of a packet layer: rejections by error code, alerts, answers.

use cap_proto::ErrorCode;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a packet layer's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PacketStats {
    /// Packets published.
    pub published: u64,
    /// Packets received and accepted.
    pub accepted: u64,
    /// CAP-PRODUCTION packets received again after their first admission (redeliveries,
    /// handed on marked as duplicates).
    pub duplicates: u64,
    /// Packets received and rejected, by error code (100-104).
    pub rejected: BTreeMap<ErrorCode, u64>,
    /// Alerts published on `sys.alert`.
    pub alerts_published: u64,
    /// Alerts not published because of the rate limit.
    pub alerts_suppressed: u64,
    /// Alerts whose publish failed.
    pub alerts_failed: u64,
    /// FAILED results sent for rejected job requests.
    pub failed_results: u64,
}

impl PacketStats {
    /// All rejections, whatever the code.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Rejections with `code`.
    pub fn rejected_with(&self, code: ErrorCode) -> u64 {
        self.rejected.get(&code).copied().unwrap_or(0)
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    rejected: Mutex<BTreeMap<ErrorCode, u64>>,
    pub(crate) alerts_published: AtomicU64,
    pub(crate) alerts_suppressed: AtomicU64,
    pub(crate) alerts_failed: AtomicU64,
    pub(crate) failed_results: AtomicU64,
}

impl Counters {
    pub(crate) fn reject(&self, code: ErrorCode) {
        let mut map = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(code).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> PacketStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PacketStats {
            published: get(&self.published),
            accepted: get(&self.accepted),
            duplicates: get(&self.duplicates),
            rejected: self
                .rejected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            alerts_published: get(&self.alerts_published),
            alerts_suppressed: get(&self.alerts_suppressed),
            alerts_failed: get(&self.alerts_failed),
            failed_results: get(&self.failed_results),
        }
    }
}

pub(crate) fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}
