//! [`KeyRing`]: the public keys trusted for each sender, with room for rotation.

use crate::{Error, PublicKey, Verifier};
use std::collections::HashMap;
use std::path::Path;

/// Trusted public keys by `sender_id`. A sender may have several keys (rotation): a
/// signature is valid when any of them verifies it.
///
/// ```
/// use cap_sign::{KeyRing, PrivateKey, Signer};
/// let key = PrivateKey::generate();
/// let mut ring = KeyRing::new();
/// ring.add("worker-1", key.public_key());
/// let sig = key.sign(b"msg").unwrap();
/// ring.verify("worker-1", b"msg", &sig).unwrap();
/// assert!(ring.verify("worker-2", b"msg", &sig).is_err());
/// ```
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    keys: HashMap<String, Vec<PublicKey>>,
}

impl KeyRing {
    /// An empty key ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `key` for `sender` (in addition to any key it already has).
    pub fn add(&mut self, sender: impl Into<String>, key: PublicKey) {
        let keys = self.keys.entry(sender.into()).or_default();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }

    /// Stops trusting every key of `sender`.
    pub fn remove(&mut self, sender: &str) {
        self.keys.remove(sender);
    }

    /// The keys trusted for `sender`.
    pub fn keys(&self, sender: &str) -> &[PublicKey] {
        self.keys.get(sender).map(Vec::as_slice).unwrap_or_default()
    }

    /// Whether any key is trusted for `sender`.
    pub fn contains(&self, sender: &str) -> bool {
        !self.keys(sender).is_empty()
    }

    /// Number of senders.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no sender is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Loads every `<sender_id>.pem` in `dir` (files ending in `.key.pem` are private keys
    /// and are skipped). A file may hold several `PUBLIC KEY` blocks: all are trusted.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref();
        let mut ring = KeyRing::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| Error::Key(format!("reading trust dir {}: {e}", dir.display())))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::Key(e.to_string()))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.ends_with(".pem") || name.ends_with(".key.pem") {
                continue;
            }
            let sender = name.trim_end_matches(".pem");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::Key(format!("reading {}: {e}", path.display())))?;
            let blocks = pem_blocks(&text);
            if blocks.is_empty() {
                return Err(Error::Key(format!(
                    "{}: no PUBLIC KEY block",
                    path.display()
                )));
            }
            for block in blocks {
                let key = PublicKey::from_pem(&block)
                    .map_err(|e| Error::Key(format!("{}: {e}", path.display())))?;
                ring.add(sender, key);
            }
        }
        Ok(ring)
    }

    /// Verifies `signature` over `message` with the keys of `sender`.
    pub fn verify(&self, sender: &str, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        let keys = self.keys(sender);
        if keys.is_empty() {
            return Err(Error::UnknownSender {
                sender: sender.to_owned(),
            });
        }
        let mut last = Error::Mismatch {
            sender: sender.to_owned(),
        };
        for key in keys {
            match key.verify(message, signature) {
                Ok(()) => return Ok(()),
                // A malformed signature is malformed for every key.
                Err(e @ (Error::NotDer | Error::MalformedDer)) => return Err(e),
                Err(_) => {
                    last = Error::Mismatch {
                        sender: sender.to_owned(),
                    }
                }
            }
        }
        Err(last)
    }
}

fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("-----BEGIN PUBLIC KEY-----") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
        if line.starts_with("-----END PUBLIC KEY-----")
            && let Some(block) = current.take()
        {
            blocks.push(block);
        }
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PrivateKey, Signer};

    #[test]
    fn rotation_and_directory_loading() {
        let dir = std::env::temp_dir().join(format!("cap-keyring-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = PrivateKey::generate();
        let new = PrivateKey::generate();
        let both = format!(
            "{}{}",
            old.public_key().to_pem().unwrap(),
            new.public_key().to_pem().unwrap()
        );
        std::fs::write(dir.join("worker-1.pem"), both).unwrap();
        std::fs::write(dir.join("worker-1.key.pem"), old.to_pem().unwrap()).unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let ring = KeyRing::load_dir(&dir).unwrap();
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.keys("worker-1").len(), 2);
        for k in [&old, &new] {
            let sig = k.sign(b"m").unwrap();
            ring.verify("worker-1", b"m", &sig).unwrap();
        }
        let stranger = PrivateKey::generate().sign(b"m").unwrap();
        assert!(matches!(
            ring.verify("worker-1", b"m", &stranger),
            Err(Error::Mismatch { .. })
        ));
        assert!(matches!(
            ring.verify("nobody", b"m", &stranger),
            Err(Error::UnknownSender { .. })
        ));

        std::fs::write(
            dir.join("broken.pem"),
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        assert!(matches!(KeyRing::load_dir(&dir), Err(Error::Key(_))));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(KeyRing::load_dir(&dir).is_err());
    }
}
