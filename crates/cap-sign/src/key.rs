//! P-256 keys: generation and PEM (PKCS#8 and SEC1 private keys, SubjectPublicKeyInfo
//! public keys). Strictly P-256: any other curve or algorithm is a [`Error::Key`].

use crate::Error;
use p256::ecdsa;
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use sha2::{Digest, Sha256};
use std::fmt;

/// A P-256 private key.
#[derive(Clone)]
pub struct PrivateKey {
    pub(crate) key: ecdsa::SigningKey,
    #[cfg(feature = "ring")]
    pub(crate) fast: std::sync::Arc<ring::signature::EcdsaKeyPair>,
}

/// A P-256 public key.
#[derive(Clone)]
pub struct PublicKey {
    pub(crate) key: ecdsa::VerifyingKey,
    /// Uncompressed SEC1 point, for the ring backend.
    #[cfg_attr(not(feature = "ring"), allow(dead_code))]
    pub(crate) point: [u8; 65],
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.point == other.point
    }
}

impl Eq for PublicKey {}

impl From<ecdsa::VerifyingKey> for PublicKey {
    fn from(key: ecdsa::VerifyingKey) -> Self {
        let mut point = [0u8; 65];
        point.copy_from_slice(key.to_sec1_point(false).as_ref());
        PublicKey { key, point }
    }
}

impl PrivateKey {
    fn from_signing_key(key: ecdsa::SigningKey) -> Result<Self, Error> {
        #[cfg(feature = "ring")]
        {
            let public = PublicKey::from(*key.verifying_key());
            let fast = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
                &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                key.to_bytes().as_slice(),
                &public.point,
                &ring::rand::SystemRandom::new(),
            )
            .map_err(|e| Error::Key(format!("ring rejected the key: {e}")))?;
            Ok(PrivateKey {
                key,
                fast: std::sync::Arc::new(fast),
            })
        }
        #[cfg(not(feature = "ring"))]
        Ok(PrivateKey { key })
    }
}

impl PrivateKey {
    /// A new random key from the operating system's RNG.
    pub fn generate() -> Self {
        use p256::elliptic_curve::Generate;
        loop {
            // A fresh valid scalar is always accepted; the loop only guards the type.
            if let Ok(k) = Self::from_signing_key(ecdsa::SigningKey::generate()) {
                return k;
            }
        }
    }

    /// Reads a PEM private key: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
            let sk = p256::SecretKey::from_sec1_pem(pem)
                .map_err(|e| Error::Key(format!("SEC1: {e}")))?;
            return Self::from_signing_key(ecdsa::SigningKey::from(&sk));
        }
        let key = ecdsa::SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| Error::Key(format!("PKCS#8 P-256 private key expected: {e}")))?;
        Self::from_signing_key(key)
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String, Error> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| Error::Key(e.to_string()))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey::from(*self.key.verifying_key())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("public", &self.public_key().fingerprint())
            .finish()
    }
}

impl PublicKey {
    /// Reads a SubjectPublicKeyInfo PEM (`PUBLIC KEY`); rejects any non-P-256 key.
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        ecdsa::VerifyingKey::from_public_key_pem(pem)
            .map(PublicKey::from)
            .map_err(|e| {
                Error::Key(format!(
                    "SubjectPublicKeyInfo P-256 public key expected: {e}"
                ))
            })
    }

    /// The key as SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> Result<String, Error> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::Key(e.to_string()))
    }

    /// A short stable id: the first 16 hex digits of SHA-256 over the SEC1 point.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.point);
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips() {
        let k = PrivateKey::generate();
        let pem = k.to_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = PrivateKey::from_pem(&pem).unwrap();
        assert_eq!(back.public_key(), k.public_key());
        let pub_pem = k.public_key().to_pem().unwrap();
        assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(PublicKey::from_pem(&pub_pem).unwrap(), k.public_key());
    }

    #[test]
    fn reads_sec1() {
        let k = PrivateKey::generate();
        let sk = p256::SecretKey::from(k.key.as_nonzero_scalar());
        let sec1 = sk.to_sec1_pem(LineEnding::LF).unwrap();
        assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        assert_eq!(
            PrivateKey::from_pem(&sec1).unwrap().public_key(),
            k.public_key()
        );
    }

    #[test]
    fn rejects_garbage_and_other_algorithms() {
        assert!(matches!(PrivateKey::from_pem("nope"), Err(Error::Key(_))));
        assert!(matches!(PublicKey::from_pem("nope"), Err(Error::Key(_))));
        // An Ed25519 SubjectPublicKeyInfo.
        let ed = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";
        assert!(matches!(PublicKey::from_pem(ed), Err(Error::Key(_))));
    }
}
