//! Sessions: the opaque tokens the trust service hands out, what it remembers about
//! each ([`SessionRecord`]), and how tokens are named in the store (by their SHA-256,
//! so a store dump does not leak usable tokens).

use super::error::{Error, ErrorKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of the tokens this service issues (the rest is 64 hex digits: 256 random
/// bits).
pub const TOKEN_PREFIX: &str = "cap-ws.";

/// What the store keeps about one session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The worker (sender id) the session belongs to.
    pub worker_id: String,
    /// Its agent id.
    pub agent_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// The proof key that authenticated it.
    pub proof_key_id: String,
    /// Issued at (Unix ms).
    pub issued_at_ms: u64,
    /// Ends at (Unix ms).
    pub expires_at_ms: u64,
}

impl SessionRecord {
    /// Whether the session is live at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }
}

/// A fresh token: [`TOKEN_PREFIX`] and 32 random bytes in hex (printable ASCII, far
/// below the 16 KiB limit).
pub fn new_token() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|_| Error::new(ErrorKind::Sign, "the system RNG failed"))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// The store's name of a token: hex SHA-256 of its bytes.
///
/// ```
/// let id = cap_scheduler::trust::token_id("t");
/// assert_eq!(id.len(), 64);
/// assert_eq!(id, cap_scheduler::trust::token_id("t"));
/// assert_ne!(id, cap_scheduler::trust::token_id("u"));
/// ```
pub fn token_id(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Lower-case hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    s
}

/// `n` random bytes.
pub(crate) fn random_bytes(n: usize) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; n];
    getrandom::fill(&mut out).map_err(|_| Error::new(ErrorKind::Sign, "the system RNG failed"))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_fresh_printable_and_hashed() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert!(cap_proto::trust::is_session_token(&a));
        assert_ne!(token_id(&a), token_id(&b));
        assert_eq!(random_bytes(32).unwrap().len(), 32);
        let r = SessionRecord {
            worker_id: "w".into(),
            agent_id: "w".into(),
            tenant_id: "default".into(),
            proof_key_id: "k".into(),
            issued_at_ms: 1,
            expires_at_ms: 10,
        };
        assert!(r.is_live(9) && !r.is_live(10));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<SessionRecord>(&json).unwrap(), r);
    }
}
