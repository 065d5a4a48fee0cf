//! [`Signer`] and [`Verifier`]: the pluggable halves of packet signatures. The built-in
//! implementations are the P-256 [`PrivateKey`] and [`PublicKey`]; a KMS or HSM plugs in
//! by implementing the trait.

use crate::{Error, PrivateKey, PublicKey};
use p256::ecdsa;
#[cfg(not(feature = "ring"))]
use p256::ecdsa::{signature::Signer as _, signature::Verifier as _};

/// Produces ECDSA P-256/SHA-256 signatures in ASN.1 DER.
pub trait Signer: Send + Sync {
    /// Signs `message` (hashed with SHA-256) and returns the DER signature.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error>;

    /// The public key that verifies this signer's signatures, when known.
    fn public_key(&self) -> Option<PublicKey> {
        None
    }
}

/// Checks ECDSA P-256/SHA-256 DER signatures.
pub trait Verifier: Send + Sync {
    /// Ok when `signature` (DER) is valid for `message`.
    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error>;
}

impl Signer for PrivateKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        #[cfg(feature = "ring")]
        {
            // Random nonces (like the reference peer); ring emits DER.
            let rng = ring::rand::SystemRandom::new();
            let sig = self
                .fast
                .sign(&rng, message)
                .map_err(|e| Error::Signer(e.to_string()))?;
            Ok(sig.as_ref().to_vec())
        }
        #[cfg(not(feature = "ring"))]
        {
            let sig: ecdsa::Signature = self
                .key
                .try_sign(message)
                .map_err(|e| Error::Signer(e.to_string()))?;
            Ok(sig.to_der().as_bytes().to_vec())
        }
    }

    fn public_key(&self) -> Option<PublicKey> {
        Some(PrivateKey::public_key(self))
    }
}

/// Parses a DER signature, telling a raw `r || s` signature apart from broken DER.
pub(crate) fn parse_der(signature: &[u8]) -> Result<ecdsa::Signature, Error> {
    if signature.len() == 64 && signature.first() != Some(&0x30) {
        return Err(Error::NotDer);
    }
    ecdsa::Signature::from_der(signature).map_err(|_| {
        if signature.len() == 64 {
            Error::NotDer
        } else {
            Error::MalformedDer
        }
    })
}

impl Verifier for PublicKey {
    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        // Parsing first keeps the error kinds distinct (raw r||s, broken DER).
        let sig = parse_der(signature)?;
        // High-S signatures are valid ECDSA and the reference peer produces them about
        // half the time: both backends accept them.
        #[cfg(feature = "ring")]
        {
            let _ = sig;
            ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_ASN1,
                &self.point,
            )
            .verify(message, signature)
            .map_err(|_| Error::Mismatch {
                sender: String::new(),
            })
        }
        #[cfg(not(feature = "ring"))]
        self.key.verify(message, &sig).map_err(|_| Error::Mismatch {
            sender: String::new(),
        })
    }
}

impl<T: Signer + ?Sized> Signer for std::sync::Arc<T> {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        (**self).sign(message)
    }
    fn public_key(&self) -> Option<PublicKey> {
        (**self).public_key()
    }
}

impl<T: Verifier + ?Sized> Verifier for std::sync::Arc<T> {
    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), Error> {
        (**self).verify(message, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_distinct_failures() {
        let k = PrivateKey::generate();
        let sig = k.sign(b"hello").unwrap();
        assert!((68..=72).contains(&sig.len()), "DER length {}", sig.len());
        let pk = k.public_key();
        pk.verify(b"hello", &sig).unwrap();
        assert!(matches!(
            pk.verify(b"hellO", &sig),
            Err(Error::Mismatch { .. })
        ));
        let other = PrivateKey::generate().public_key();
        assert!(matches!(
            other.verify(b"hello", &sig),
            Err(Error::Mismatch { .. })
        ));
        // Raw r||s.
        let raw = ecdsa::Signature::from_der(&sig).unwrap().to_bytes();
        assert_eq!(pk.verify(b"hello", &raw), Err(Error::NotDer));
        // Broken DER.
        let mut bad = sig.clone();
        bad[1] = bad[1].wrapping_add(1);
        assert_eq!(pk.verify(b"hello", &bad), Err(Error::MalformedDer));
        assert_eq!(pk.verify(b"hello", &[]), Err(Error::MalformedDer));
        assert_eq!(
            pk.verify(b"hello", &sig[..sig.len() - 1]),
            Err(Error::MalformedDer)
        );
    }

    #[test]
    fn high_s_signatures_verify() {
        let k = PrivateKey::generate();
        let sig = ecdsa::Signature::from_der(&k.sign(b"m").unwrap()).unwrap();
        // (r, n - s) is the other valid signature; exactly one of the two is high-S.
        let (r, s) = sig.split_scalars();
        let flipped = ecdsa::Signature::from_scalars(r, -*s).unwrap();
        let high = if sig.normalize_s() == sig {
            flipped
        } else {
            sig
        };
        assert!(
            high.normalize_s() != high,
            "constructed signature is high-S"
        );
        k.public_key()
            .verify(b"m", high.to_der().as_bytes())
            .unwrap();
    }
}
