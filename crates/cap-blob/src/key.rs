//! Blob keys: what a key may contain, and the job keys the official SDKs use.
//!
//! A key is what a store files a blob under (`ctx:job-1`). Every valid key maps to a
//! pointer that [`cap_proto::Pointer::parse`] accepts and that maps back to the same key,
//! so a blob written here can always be named on the bus.
//!
//! ```
//! use cap_blob::key;
//! assert_eq!(key::context("job-1"), "ctx:job-1");
//! assert_eq!(key::result("job-1"), "res:job-1");
//! assert!(key::check("res:job-1").is_ok());
//! assert!(key::check("has space").is_err());
//! ```

use cap_proto::pointer::{CONTEXT_PREFIX, RESULT_PREFIX};

use crate::{Error, Result};

/// Longest key accepted, in bytes. With a scheme in front it stays well within
/// [`cap_proto::pointer::MAX_POINTER_LEN`].
pub const MAX_KEY_LEN: usize = 1024;

/// The key of a job's input context: `ctx:<job_id>`.
pub fn context(job_id: &str) -> String {
    format!("{CONTEXT_PREFIX}{job_id}")
}

/// The key of a job's result: `res:<job_id>`.
pub fn result(job_id: &str) -> String {
    format!("{RESULT_PREFIX}{job_id}")
}

/// The key of a worker's claim to run one dispatch of a job:
/// `cap:run:<job_id>` or `cap:run:<job_id>:<dispatch_id>` (under the reserved prefix, so
/// no job's pointer can name it). Taken with [`BlobStore::put_if_absent`](crate::BlobStore::put_if_absent).
pub fn run_claim(job_id: &str, dispatch_id: &str) -> String {
    if dispatch_id.is_empty() {
        format!("{}run:{job_id}", crate::scope::RESERVED_PREFIX)
    } else {
        format!(
            "{}run:{job_id}:{dispatch_id}",
            crate::scope::RESERVED_PREFIX
        )
    }
}

/// Checks that `key` can be stored and named by a pointer.
///
/// Rules (those of [`cap_proto::Pointer::parse`] for `redis://` and `mem://`): not empty,
/// at most [`MAX_KEY_LEN`] bytes, no control characters or whitespace, and no `@` before
/// the first `/` (it would read as credentials in a URI).
pub fn check(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey {
            reason: "key is empty",
        });
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidKey {
            reason: "key is longer than 1024 bytes",
        });
    }
    if key.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(Error::InvalidKey {
            reason: "key contains a control character or whitespace",
        });
    }
    let authority = key.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(Error::InvalidKey {
            reason: "key has `@` before its first `/`",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cap_proto::Pointer;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_keys() {
        for bad in ["", "a b", "a\nb", "a\0b", "user@host", "a\u{2003}b"] {
            assert_eq!(
                check(bad).unwrap_err().kind(),
                crate::ErrorKind::InvalidKey,
                "{bad:?}"
            );
        }
        assert!(check(&"k".repeat(MAX_KEY_LEN)).is_ok());
        assert!(check(&"k".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(check("dir/mail@x").is_ok());
    }

    proptest! {
        /// Every key `check` accepts names a pointer that parses back to the same key.
        #[test]
        fn valid_keys_round_trip_through_pointers(key in "\\PC{1,64}") {
            if check(&key).is_ok() {
                for scheme in ["redis", "mem"] {
                    let p = Pointer::parse(&format!("{scheme}://{key}")).unwrap();
                    prop_assert_eq!(p.key(), key.as_str());
                }
            }
        }

        /// And the keys a pointer can carry are keys `check` accepts.
        #[test]
        fn pointer_keys_are_valid_keys(key in "[ -~]{1,64}") {
            if let Ok(p) = Pointer::parse(&format!("redis://{key}")) {
                prop_assert!(check(p.key()).is_ok());
            }
        }
    }
}
