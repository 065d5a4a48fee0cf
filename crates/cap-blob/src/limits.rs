//! Size limit and default lifetimes of blobs.
//!
//! ```
//! use std::time::Duration;
//! use cap_blob::Limits;
//! let limits = Limits::default()
//!     .with_max_blob_bytes(64 * 1024)
//!     .with_result_ttl(Some(Duration::from_secs(3600)));
//! assert!(limits.check_size(64 * 1024).is_ok());
//! assert!(limits.check_size(64 * 1024 + 1).is_err());
//! ```

use std::time::Duration;

use crate::{Error, Result};

/// Default size limit of one blob: 2 MiB, the official runtime's limit for contexts and
/// results.
pub const DEFAULT_MAX_BLOB_BYTES: usize = 2 * 1024 * 1024;

/// Default lifetime of a job context: 6 hours ("contexts should expire in hours").
pub const DEFAULT_CONTEXT_TTL: Duration = Duration::from_secs(6 * 60 * 60);

/// Default lifetime of a job result: 7 days ("results in days").
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// A store's size limit and the default TTLs its job helpers use.
///
/// The size limit is enforced by every backend before anything is written. The TTLs are
/// used by [`BlobStore::put_context`](crate::BlobStore::put_context) and
/// [`BlobStore::put_result`](crate::BlobStore::put_result); a plain
/// [`BlobStore::put`](crate::BlobStore::put) takes its TTL as an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest blob accepted, in bytes.
    pub max_blob_bytes: usize,
    /// Lifetime of contexts written by `put_context`; `None` keeps them forever.
    pub context_ttl: Option<Duration>,
    /// Lifetime of results written by `put_result`; `None` keeps them forever.
    pub result_ttl: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blob_bytes: DEFAULT_MAX_BLOB_BYTES,
            context_ttl: Some(DEFAULT_CONTEXT_TTL),
            result_ttl: Some(DEFAULT_RESULT_TTL),
        }
    }
}

impl Limits {
    /// Sets the largest blob accepted, in bytes.
    pub fn with_max_blob_bytes(mut self, bytes: usize) -> Self {
        self.max_blob_bytes = bytes;
        self
    }

    /// Sets the default lifetime of contexts.
    pub fn with_context_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.context_ttl = ttl;
        self
    }

    /// Sets the default lifetime of results.
    pub fn with_result_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.result_ttl = ttl;
        self
    }

    /// Fails with [`ErrorKind::TooLarge`](crate::ErrorKind::TooLarge) if a blob of `size`
    /// bytes is over the limit.
    pub fn check_size(&self, size: usize) -> Result<()> {
        if size > self.max_blob_bytes {
            return Err(Error::TooLarge {
                size,
                limit: self.max_blob_bytes,
            });
        }
        Ok(())
    }
}

/// Longest TTL kept, in milliseconds (about 100 years); longer ones are cut to it, so that
/// every backend can represent the expiry time.
pub(crate) const MAX_TTL_MILLIS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;

/// A TTL in whole milliseconds, rounded up, at least 1 and at most [`MAX_TTL_MILLIS`]:
/// the resolution and range every backend keeps.
pub(crate) fn ttl_millis(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms)
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MILLIS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let l = Limits::default();
        assert_eq!(l.max_blob_bytes, 2 * 1024 * 1024);
        assert!(l.context_ttl.unwrap() >= Duration::from_secs(3600));
        assert!(l.context_ttl.unwrap() < Duration::from_secs(24 * 3600));
        assert!(l.result_ttl.unwrap() >= Duration::from_secs(24 * 3600));
    }

    #[test]
    fn ttl_rounds_up_to_milliseconds() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_nanos(1)), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_millis(Duration::from_secs(2)), 2000);
        assert_eq!(ttl_millis(Duration::MAX), MAX_TTL_MILLIS);
    }
}
