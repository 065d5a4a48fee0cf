//! Expiry metadata of the file backend.
//!
//! Every put writes, next to the data file, a small metadata file naming the data file's
//! identity (device, inode, length, modification time) and its expiry. The metadata only
//! applies to the data file it names: a data file replaced by a racing writer, or put there
//! by other means, is never expired by someone else's metadata.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which data file a metadata entry is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Identity {
    pub(crate) fn of(m: &Metadata) -> Self {
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        }
    }
}

/// A parsed metadata entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) identity: Identity,
    /// Expiry as milliseconds since the Unix epoch; `None`: never.
    pub(crate) expires_at_ms: Option<u64>,
}

const MAGIC: &str = "cap-blob-meta/1";

impl Meta {
    pub(crate) fn new(identity: Identity, ttl_ms: Option<u64>, now: SystemTime) -> Self {
        Meta {
            identity,
            expires_at_ms: ttl_ms.map(|ttl| unix_ms(now).saturating_add(ttl)),
        }
    }

    pub(crate) fn encode(&self) -> String {
        let Identity {
            dev,
            ino,
            len,
            mtime_ns,
        } = self.identity;
        let expires = self
            .expires_at_ms
            .map_or_else(|| "never".to_owned(), |t| t.to_string());
        format!("{MAGIC} {dev} {ino} {len} {mtime_ns} {expires}\n")
    }

    /// Parses an entry; `None` for anything malformed (treated as absent: the blob is
    /// then kept, never expired early).
    pub(crate) fn decode(text: &str) -> Option<Self> {
        let mut it = text.trim_end_matches('\n').split(' ');
        if it.next()? != MAGIC {
            return None;
        }
        let identity = Identity {
            dev: it.next()?.parse().ok()?,
            ino: it.next()?.parse().ok()?,
            len: it.next()?.parse().ok()?,
            mtime_ns: it.next()?.parse().ok()?,
        };
        let expires_at_ms = match it.next()? {
            "never" => None,
            t => Some(t.parse().ok()?),
        };
        if it.next().is_some() {
            return None;
        }
        Some(Meta {
            identity,
            expires_at_ms,
        })
    }

    /// Whether this entry says the data file with identity `id` has expired at `now`.
    pub(crate) fn expired(&self, id: &Identity, now: SystemTime) -> bool {
        self.identity == *id && self.expires_at_ms.is_some_and(|t| t <= unix_ms(now))
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ino: u64) -> Identity {
        Identity {
            dev: 1,
            ino,
            len: 3,
            mtime_ns: -5,
        }
    }

    #[test]
    fn round_trips_and_applies_only_to_its_file() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let m = Meta::new(id(7), Some(500), now);
        let back = Meta::decode(&m.encode()).unwrap();
        assert_eq!(back, m);
        assert!(!m.expired(&id(7), now));
        assert!(m.expired(&id(7), now + Duration::from_millis(500)));
        assert!(!m.expired(&id(8), now + Duration::from_secs(9)));
        let never = Meta::new(id(7), None, now);
        assert_eq!(Meta::decode(&never.encode()), Some(never));
        assert!(!never.expired(&id(7), now + Duration::from_secs(1 << 40)));
    }

    proptest::proptest! {
        /// Whatever is in a metadata file, decoding neither panics nor misreads it.
        #[test]
        fn decoding_arbitrary_text_never_panics(text in "\\PC{0,80}") {
            if let Some(m) = Meta::decode(&text) {
                proptest::prop_assert_eq!(Meta::decode(&m.encode()), Some(m));
            }
        }

        #[test]
        fn every_entry_round_trips(dev: u64, ino: u64, len: u64, mtime_ns: i64, exp: Option<u64>) {
            let m = Meta {
                identity: Identity { dev, ino, len, mtime_ns: i128::from(mtime_ns) },
                expires_at_ms: exp,
            };
            proptest::prop_assert_eq!(Meta::decode(&m.encode()), Some(m));
        }
    }

    #[test]
    fn malformed_entries_are_ignored() {
        for bad in [
            "",
            "cap-blob-meta/1",
            "cap-blob-meta/2 1 2 3 4 never",
            "cap-blob-meta/1 1 2 3 4 soon",
            "cap-blob-meta/1 1 2 3 4 5 6",
            "cap-blob-meta/1 x 2 3 4 5",
        ] {
            assert_eq!(Meta::decode(bad), None, "{bad:?}");
        }
    }
}
