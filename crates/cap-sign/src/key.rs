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
pub struct PrivateKey(pub(crate) ecdsa::SigningKey);

/// A P-256 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(pub(crate) ecdsa::VerifyingKey);

impl PrivateKey {
    /// A new random key from the operating system's RNG.
    pub fn generate() -> Self {
        use p256::elliptic_curve::Generate;
        PrivateKey(ecdsa::SigningKey::generate())
    }

    /// Reads a PEM private key: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, Error> {
        if pem.contains("-----BEGIN EC PRIVATE KEY-----") {
            let sk = p256::SecretKey::from_sec1_pem(pem)
                .map_err(|e| Error::Key(format!("SEC1: {e}")))?;
            return Ok(PrivateKey(ecdsa::SigningKey::from(&sk)));
        }
        ecdsa::SigningKey::from_pkcs8_pem(pem)
            .map(PrivateKey)
            .map_err(|e| Error::Key(format!("PKCS#8 P-256 private key expected: {e}")))
    }

    /// The key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String, Error> {
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|z| z.to_string())
            .map_err(|e| Error::Key(e.to_string()))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(*self.0.verifying_key())
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
            .map(PublicKey)
            .map_err(|e| {
                Error::Key(format!(
                    "SubjectPublicKeyInfo P-256 public key expected: {e}"
                ))
            })
    }

    /// The key as SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> Result<String, Error> {
        self.0
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| Error::Key(e.to_string()))
    }

    /// A short stable id: the first 16 hex digits of SHA-256 over the SEC1 point.
    pub fn fingerprint(&self) -> String {
        let point = self.0.to_sec1_point(false);
        let digest = Sha256::digest(point.as_ref());
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
        let sk = p256::SecretKey::from(k.0.as_nonzero_scalar());
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
