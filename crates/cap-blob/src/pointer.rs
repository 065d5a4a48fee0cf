//! Pointer ↔ key mapping, as the official SDKs do it.
//!
//! The SDKs' Redis blob store files a blob under a plain key and names it on the bus as
//! `redis://<key>`: a job's context at `ctx:<job_id>` (`redis://ctx:<job_id>`), its result
//! at `res:<job_id>` (`redis://res:<job_id>`). Parsing is [`cap_proto::Pointer`]'s; this
//! module adds the key checks and the job helpers.
//!
//! ```
//! use cap_blob::pointer;
//! let p = pointer::for_key("ctx:job-1").unwrap();
//! assert_eq!(p.to_string(), "redis://ctx:job-1");
//! assert_eq!(pointer::key_from_str("redis://ctx:job-1").unwrap(), "ctx:job-1");
//! assert_eq!(pointer::context("job-1").unwrap().to_string(), "redis://ctx:job-1");
//! assert!(pointer::key_from_str("s3://bucket/key").is_err());
//! ```

use cap_proto::Pointer;

use crate::{Error, Result, key};

/// The Redis pointer of `key`: `redis://<key>`. Fails if the key is not a valid key.
pub fn for_key(key: &str) -> Result<Pointer> {
    key::check(key)?;
    Ok(Pointer::Redis {
        key: key.to_owned(),
    })
}

/// The pointer to a job's context: `redis://ctx:<job_id>`.
pub fn context(job_id: &str) -> Result<Pointer> {
    for_key(&key::context(job_id))
}

/// The pointer to a job's result: `redis://res:<job_id>`.
pub fn result(job_id: &str) -> Result<Pointer> {
    for_key(&key::result(job_id))
}

/// The key a `redis://` pointer names. Other schemes are refused with
/// [`ErrorKind::InvalidPointer`](crate::ErrorKind::InvalidPointer).
pub fn key_of(pointer: &Pointer) -> Result<&str> {
    match pointer {
        Pointer::Redis { key } => {
            key::check(key)
                .map_err(|_| Error::invalid_pointer("pointer key is not a valid key"))?;
            Ok(key)
        }
        other => Err(Error::invalid_pointer(format!(
            "expected a redis:// pointer, got {}://",
            other.scheme()
        ))),
    }
}

/// Parses a pointer string and returns the key of a `redis://` pointer, like the SDKs'
/// `key_from_pointer`.
pub fn key_from_str(pointer: &str) -> Result<String> {
    let p = Pointer::parse(pointer)?;
    key_of(&p).map(str::to_owned)
}

/// The key a key-value pointer (`redis://` or `mem://`) names: the mapping shared by the
/// Redis and in-memory stores, which serve either scheme.
pub(crate) fn kv_key<'p>(pointer: &'p Pointer, store: &str) -> Result<&'p str> {
    match pointer {
        Pointer::Redis { key } | Pointer::Mem { key } => {
            key::check(key)
                .map_err(|_| Error::invalid_pointer("pointer key is not a valid key"))?;
            Ok(key)
        }
        other => Err(Error::invalid_pointer(format!(
            "the {store} store serves redis:// and mem:// pointers, not {}://",
            other.scheme()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn job_pointers_match_cap_proto() {
        assert_eq!(context("j").unwrap(), Pointer::context("j"));
        assert_eq!(result("j").unwrap(), Pointer::result("j"));
    }

    #[test]
    fn refuses_what_the_sdk_refuses() {
        for (ptr, kind) in [
            ("", ErrorKind::InvalidPointer),
            ("ctx:1", ErrorKind::InvalidPointer),
            ("redis://", ErrorKind::InvalidPointer),
            ("mem://k", ErrorKind::InvalidPointer),
            ("file:///tmp/x", ErrorKind::InvalidPointer),
            ("redis://user:pw@host/0", ErrorKind::InvalidPointer),
        ] {
            assert_eq!(key_from_str(ptr).unwrap_err().kind(), kind, "{ptr:?}");
        }
        assert_eq!(for_key("a b").unwrap_err().kind(), ErrorKind::InvalidKey);
        assert_eq!(context("").unwrap().to_string(), "redis://ctx:");
        assert_eq!(context("a b").unwrap_err().kind(), ErrorKind::InvalidKey);
    }

    #[test]
    fn kv_stores_take_both_schemes() {
        let m = Pointer::parse("mem://k").unwrap();
        let r = Pointer::parse("redis://k").unwrap();
        assert_eq!(kv_key(&m, "memory").unwrap(), "k");
        assert_eq!(kv_key(&r, "memory").unwrap(), "k");
        let f = Pointer::parse("file:///x").unwrap();
        let e = kv_key(&f, "memory").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidPointer);
        assert!(e.to_string().contains("file://"), "{e}");
        // Keys longer than a store key but within a pointer's length are refused.
        let long = Pointer::parse(&format!("redis://{}", "k".repeat(1500))).unwrap();
        assert_eq!(
            kv_key(&long, "redis").unwrap_err().kind(),
            ErrorKind::InvalidPointer
        );
    }
}
