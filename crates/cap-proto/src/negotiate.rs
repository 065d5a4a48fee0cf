//! Handshake negotiation: the protocol version two peers share, and capability matching.
//!
//! ```
//! use cap_proto::negotiate::{self, CapabilityMatch, capability};
//! use cap_proto::v1::Handshake;
//!
//! assert_eq!(negotiate::version(&[1, 2], &[2, 3]), Ok(2));
//! assert!(negotiate::version(&[1], &[2]).is_err());
//!
//! let peer = Handshake {
//!     capabilities: [(capability::PROGRESS.to_string(), true)].into(),
//!     ..Default::default()
//! };
//! let m = negotiate::capabilities(&[capability::PROGRESS], &[capability::CANCEL], &peer);
//! assert_eq!(m, CapabilityMatch::Degraded { missing_optional: vec!["cancel".into()] });
//! ```

use crate::ErrorCode;
use crate::v1::Handshake;

/// Registry capability keys. Custom keys are namespaced `x-…`.
pub mod capability {
    /// Packet signatures.
    pub const SIGNATURES: &str = "signatures";
    /// Compensation jobs.
    pub const COMPENSATION: &str = "compensation";
    /// Progress reports.
    pub const PROGRESS: &str = "progress";
    /// Job cancellation.
    pub const CANCEL: &str = "cancel";
    /// Structured error codes.
    pub const ERROR_CODES: &str = "error_codes";
    /// Heartbeats.
    pub const HEARTBEATS: &str = "heartbeats";
    /// Workflows (parent/child jobs).
    pub const WORKFLOWS: &str = "workflows";
    /// Conformance level core.
    pub const CONFORMANCE_CORE: &str = "conformance.core";
    /// Conformance level standard.
    pub const CONFORMANCE_STANDARD: &str = "conformance.standard";
    /// Conformance level full.
    pub const CONFORMANCE_FULL: &str = "conformance.full";

    /// Whether `key` is a registry key or a namespaced custom key (`x-…`).
    pub fn is_valid(key: &str) -> bool {
        const REGISTRY: [&str; 10] = [
            SIGNATURES,
            COMPENSATION,
            PROGRESS,
            CANCEL,
            ERROR_CODES,
            HEARTBEATS,
            WORKFLOWS,
            CONFORMANCE_CORE,
            CONFORMANCE_STANDARD,
            CONFORMANCE_FULL,
        ];
        REGISTRY.contains(&key) || (key.len() > 2 && key.starts_with("x-"))
    }
}

/// No protocol version in common.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no common protocol version (ours {ours:?}, theirs {theirs:?})")]
pub struct NoCommonVersion {
    /// Versions we support.
    pub ours: Vec<i32>,
    /// Versions the peer supports.
    pub theirs: Vec<i32>,
}

impl NoCommonVersion {
    /// `PROTOCOL_VERSION_MISMATCH` (100).
    pub fn code(&self) -> ErrorCode {
        ErrorCode::PROTOCOL_VERSION_MISMATCH
    }
}

/// The highest version both sides support.
pub fn version(ours: &[i32], theirs: &[i32]) -> Result<i32, NoCommonVersion> {
    ours.iter()
        .copied()
        .filter(|v| *v > 0 && theirs.contains(v))
        .max()
        .ok_or_else(|| NoCommonVersion {
            ours: ours.to_vec(),
            theirs: theirs.to_vec(),
        })
}

/// The highest version two handshakes share.
pub fn handshake_version(ours: &Handshake, theirs: &Handshake) -> Result<i32, NoCommonVersion> {
    version(&ours.supported_versions, &theirs.supported_versions)
}

/// The outcome of matching capabilities against a peer's handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapabilityMatch {
    /// Every required and optional capability is there.
    Accepted,
    /// Every required capability is there; these optional ones are not.
    Degraded {
        /// Optional capabilities the peer lacks.
        missing_optional: Vec<String>,
    },
    /// The peer cannot be used.
    Rejected {
        /// Required capabilities the peer lacks.
        missing_required: Vec<String>,
        /// Keys given as both required and optional (a caller error).
        conflicting: Vec<String>,
    },
}

/// Matches `required` and `optional` capability keys against a peer's handshake. A
/// capability counts only when the peer advertises it as `true`.
pub fn capabilities(required: &[&str], optional: &[&str], peer: &Handshake) -> CapabilityMatch {
    let has = |k: &str| peer.capabilities.get(k).copied().unwrap_or(false);
    let conflicting: Vec<String> = required
        .iter()
        .filter(|k| optional.contains(k))
        .map(|k| k.to_string())
        .collect();
    let missing_required: Vec<String> = required
        .iter()
        .filter(|k| !has(k))
        .map(|k| k.to_string())
        .collect();
    if !conflicting.is_empty() || !missing_required.is_empty() {
        return CapabilityMatch::Rejected {
            missing_required,
            conflicting,
        };
    }
    let missing_optional: Vec<String> = optional
        .iter()
        .filter(|k| !has(k))
        .map(|k| k.to_string())
        .collect();
    if missing_optional.is_empty() {
        CapabilityMatch::Accepted
    } else {
        CapabilityMatch::Degraded { missing_optional }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(caps: &[(&str, bool)]) -> Handshake {
        Handshake {
            capabilities: caps.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            supported_versions: vec![1],
            ..Default::default()
        }
    }

    #[test]
    fn versions() {
        assert_eq!(version(&[1], &[1]), Ok(1));
        assert_eq!(version(&[1, 2, 3], &[3, 2]), Ok(3));
        let err = version(&[1], &[]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::PROTOCOL_VERSION_MISMATCH);
        assert!(version(&[0, -1], &[0, -1]).is_err());
        assert_eq!(handshake_version(&peer(&[]), &peer(&[])), Ok(1));
    }

    #[test]
    fn capability_outcomes() {
        let p = peer(&[("signatures", true), ("progress", true), ("cancel", false)]);
        assert_eq!(
            capabilities(&["signatures"], &["progress"], &p),
            CapabilityMatch::Accepted
        );
        assert_eq!(
            capabilities(&["signatures"], &["cancel", "progress"], &p),
            CapabilityMatch::Degraded {
                missing_optional: vec!["cancel".into()]
            }
        );
        assert_eq!(
            capabilities(&["cancel", "workflows"], &[], &p),
            CapabilityMatch::Rejected {
                missing_required: vec!["cancel".into(), "workflows".into()],
                conflicting: vec![]
            }
        );
        assert_eq!(
            capabilities(&["signatures"], &["signatures"], &p),
            CapabilityMatch::Rejected {
                missing_required: vec![],
                conflicting: vec!["signatures".into()]
            }
        );
    }

    #[test]
    fn capability_keys() {
        assert!(capability::is_valid("progress"));
        assert!(capability::is_valid("conformance.full"));
        assert!(capability::is_valid("x-gpu"));
        assert!(!capability::is_valid("x-"));
        assert!(!capability::is_valid("gpu"));
    }
}
