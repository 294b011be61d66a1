//! One signing interface for every place bootchain signs — Authenticode ([`crate::sign`]) and
//! `.pcrsig` PCR policies ([`crate::measure::sign_policies`]) — with three backends:
//!
//! - a key file ([`SigningKey`], also a bare [`rsa::RsaPrivateKey`]);
//! - a key in a PKCS#11 token, named by an RFC 7512 `pkcs11:` URI
//!   ([`crate::formats::pkcs11::Pkcs11Signer`], feature `pkcs11`);
//! - a signature made elsewhere ([`ExternalSignature`]): the build machine writes the bytes to
//!   sign ([`crate::sign::prepare_signed_attributes`], `measure policy-digest`'s `tbs`), another
//!   machine signs them (`openssl pkeyutl`, an HSM), and the result is attached by "signing"
//!   with the returned signature, which is checked against the public key first.
//!
//! Signers sign a digest the caller computed ([`Signer::sign_digest`]): Authenticode and
//! `.pcrsig` need different hashes (the bank's, for systemd-measure 258), and tokens such as
//! SoftHSM offer ECDSA only as raw `CKM_ECDSA` over a host-computed hash.

use std::path::Path;

use const_oid::ObjectIdentifier;
use x509_cert::Certificate;

use crate::hash::HashAlg;
use crate::keys::{self, KeyError, PublicKey, SigningKey};

/// The signature scheme of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignatureScheme {
    /// RSASSA-PKCS1-v1_5 (RFC 8017 §8.2) with a key of this many bits.
    RsaPkcs1v15 {
        /// Modulus size.
        bits: usize,
    },
    /// ECDSA on P-256; signatures are DER `Ecdsa-Sig-Value` (RFC 5480 §2.2 / RFC 3279).
    EcdsaP256,
    /// ECDSA on P-384; signatures as for P-256.
    EcdsaP384,
}

impl SignatureScheme {
    /// The scheme of a public key.
    pub fn of(key: &PublicKey) -> Self {
        use rsa::traits::PublicKeyParts;
        match key {
            PublicKey::Rsa(k) => SignatureScheme::RsaPkcs1v15 { bits: k.size() * 8 },
            PublicKey::P256(_) => SignatureScheme::EcdsaP256,
            PublicKey::P384(_) => SignatureScheme::EcdsaP384,
        }
    }

    /// The CMS SignerInfo signatureAlgorithm for SHA-256 signed attributes: rsaEncryption (what
    /// sbsign writes) or ecdsa-with-SHA256 (RFC 5754 §3.3).
    pub fn cms_signature_oid(self) -> ObjectIdentifier {
        match self {
            SignatureScheme::RsaPkcs1v15 { .. } => const_oid::db::rfc5912::RSA_ENCRYPTION,
            SignatureScheme::EcdsaP256 | SignatureScheme::EcdsaP384 => {
                const_oid::db::rfc5912::ECDSA_WITH_SHA_256
            }
        }
    }

    /// RSA (PCR policies can only be signed with RSA: systemd verifies with RSASSA).
    pub fn is_rsa(self) -> bool {
        matches!(self, SignatureScheme::RsaPkcs1v15 { .. })
    }
}

/// Errors of a signing backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// A key file could not be loaded or did not sign.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A PKCS#11 token refused (wrong PIN, no such object, wrong key type, module not found).
    #[error(transparent)]
    Pkcs11(Box<crate::formats::pkcs11::Pkcs11Error>),
    /// A `pkcs11:` URI, but bootchain was built without the `pkcs11` feature.
    #[error("{0} names a PKCS#11 key, but this bootchain was built without the pkcs11 feature")]
    Pkcs11Disabled(String),
    /// A signature made elsewhere does not verify over the bytes it should sign.
    #[error("the signature made elsewhere does not verify with the {key} public key over the prepared bytes (signed other bytes, another signing time, or with another key?)")]
    ExternalMismatch {
        /// The key it was checked with ("RSA-2048").
        key: String,
    },
    /// A digest of the wrong length for its algorithm.
    #[error("a {alg} digest is {want} bytes, not {got}")]
    DigestLength {
        /// The algorithm.
        alg: HashAlg,
        /// Its digest size.
        want: usize,
        /// The length given.
        got: usize,
    },
}

impl From<crate::formats::pkcs11::Pkcs11Error> for SigningError {
    fn from(e: crate::formats::pkcs11::Pkcs11Error) -> Self {
        SigningError::Pkcs11(Box::new(e))
    }
}

/// A private key that signs digests: RSASSA-PKCS1-v1_5 or ECDSA (DER signatures).
///
/// `Send + Sync` so a builder holding one can be moved between threads; backends with state
/// (a PKCS#11 session) lock it.
pub trait Signer: Send + Sync {
    /// The public key (for checking a certificate, `.pcrpkey` and `pkfp`).
    fn public_key(&self) -> PublicKey;

    /// Sign the `hash` digest `digest` of a message: RSASSA-PKCS1-v1_5 with `hash`'s
    /// DigestInfo, or ECDSA over the digest (DER `Ecdsa-Sig-Value`).
    fn sign_digest(&self, hash: HashAlg, digest: &[u8]) -> Result<Vec<u8>, SigningError>;

    /// The certificate the backend holds for this key (a token's certificate object with the
    /// key's id), if any.
    fn certificate(&self) -> Result<Option<Certificate>, SigningError> {
        Ok(None)
    }

    /// The signature scheme.
    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::of(&self.public_key())
    }

    /// Hash `msg` with `hash` and sign it.
    fn sign(&self, hash: HashAlg, msg: &[u8]) -> Result<Vec<u8>, SigningError> {
        self.sign_digest(hash, hash.digest(msg).as_bytes())
    }

    /// The public key as DER SubjectPublicKeyInfo.
    fn public_key_spki_der(&self) -> Result<Vec<u8>, KeyError> {
        self.public_key().to_spki_der()
    }

    /// Fail unless this key belongs to `cert`.
    fn check_matches(&self, cert: &Certificate) -> Result<(), KeyError> {
        keys::check_key_matches(&self.public_key(), cert)
    }
}

/// Shows the key type only: never key material or PINs.
impl std::fmt::Debug for dyn Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({:?})", self.public_key())
    }
}

fn check_digest_len(hash: HashAlg, digest: &[u8]) -> Result<(), SigningError> {
    if digest.len() != hash.output_len() {
        return Err(SigningError::DigestLength {
            alg: hash,
            want: hash.output_len(),
            got: digest.len(),
        });
    }
    Ok(())
}

/// RSASSA-PKCS1-v1_5 with `alg`'s DigestInfo (RFC 8017 §9.2 note 1).
pub(crate) fn pkcs1v15(alg: HashAlg) -> rsa::Pkcs1v15Sign {
    match alg {
        HashAlg::Sha1 => rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
        HashAlg::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
        HashAlg::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
        HashAlg::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
    }
}

fn rsa_sign(k: &rsa::RsaPrivateKey, hash: HashAlg, digest: &[u8]) -> Result<Vec<u8>, SigningError> {
    check_digest_len(hash, digest)?;
    k.sign(pkcs1v15(hash), digest)
        .map_err(|e| KeyError::Sign(e.into()).into())
}

impl Signer for SigningKey {
    fn public_key(&self) -> PublicKey {
        SigningKey::public_key(self)
    }

    fn sign_digest(&self, hash: HashAlg, digest: &[u8]) -> Result<Vec<u8>, SigningError> {
        use signature::hazmat::PrehashSigner;
        check_digest_len(hash, digest)?;
        let sign_err = |e: signature::Error| SigningError::Key(KeyError::Sign(e.into()));
        match self {
            SigningKey::Rsa(k) => rsa_sign(k, hash, digest),
            SigningKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign_prehash(digest).map_err(sign_err)?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
            SigningKey::P384(k) => {
                let sig: p384::ecdsa::Signature = k.sign_prehash(digest).map_err(sign_err)?;
                Ok(sig.to_der().as_bytes().to_vec())
            }
        }
    }
}

impl Signer for rsa::RsaPrivateKey {
    fn public_key(&self) -> PublicKey {
        PublicKey::Rsa(self.to_public_key())
    }

    fn sign_digest(&self, hash: HashAlg, digest: &[u8]) -> Result<Vec<u8>, SigningError> {
        rsa_sign(self, hash, digest)
    }
}

impl<T: Signer + ?Sized> Signer for Box<T> {
    fn public_key(&self) -> PublicKey {
        (**self).public_key()
    }
    fn sign_digest(&self, hash: HashAlg, digest: &[u8]) -> Result<Vec<u8>, SigningError> {
        (**self).sign_digest(hash, digest)
    }
    fn certificate(&self) -> Result<Option<Certificate>, SigningError> {
        (**self).certificate()
    }
}

/// A signature made elsewhere (offline signing): "signing" returns it after checking that it
/// verifies over the digest asked for with `public`, so attaching it goes through the same
/// code as signing with the key (and, RSASSA-PKCS1-v1_5 being deterministic, gives the same
/// bytes).
#[derive(Clone, Debug)]
pub struct ExternalSignature {
    public: PublicKey,
    signature: Vec<u8>,
}

impl ExternalSignature {
    /// `signature` (RSASSA-PKCS1-v1_5, or DER ECDSA as `openssl pkeyutl`/`openssl dgst -sign`
    /// write it) by the key of `public`.
    pub fn new(public: PublicKey, signature: Vec<u8>) -> Self {
        ExternalSignature { public, signature }
    }
}

impl Signer for ExternalSignature {
    fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    fn sign_digest(&self, hash: HashAlg, digest: &[u8]) -> Result<Vec<u8>, SigningError> {
        check_digest_len(hash, digest)?;
        if keys::verify_prehashed(&self.public, hash, digest, &self.signature) {
            Ok(self.signature.clone())
        } else {
            Err(SigningError::ExternalMismatch {
                key: self.public.describe(),
            })
        }
    }
}

/// Open the signing key `spec` names: an RFC 7512 `pkcs11:` URI (feature `pkcs11`), else a
/// PEM or DER key file.
///
/// ```no_run
/// use bootchain::{hash::HashAlg, signer};
/// let key = signer::open("pkcs11:token=sb;object=db?pin-source=/run/pin")?;
/// let sig = key.sign(HashAlg::Sha256, b"message")?;
/// # let _ = sig;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn open(spec: &str) -> Result<Box<dyn Signer>, SigningError> {
    if crate::formats::pkcs11::is_uri(spec) {
        #[cfg(feature = "pkcs11")]
        {
            let uri = crate::formats::pkcs11::Pkcs11Uri::parse(spec)
                .map_err(crate::formats::pkcs11::Pkcs11Error::from)?;
            return Ok(Box::new(crate::formats::pkcs11::Pkcs11Signer::open(&uri)?));
        }
        #[cfg(not(feature = "pkcs11"))]
        return Err(SigningError::Pkcs11Disabled(shown_uri(spec)));
    }
    Ok(Box::new(SigningKey::from_file(Path::new(spec))?))
}

/// Load the certificate `spec` names: a `pkcs11:` URI of a certificate object (feature
/// `pkcs11`), else a PEM or DER file.
pub fn open_certificate(spec: &str) -> Result<Certificate, SigningError> {
    if crate::formats::pkcs11::is_uri(spec) {
        #[cfg(feature = "pkcs11")]
        {
            let uri = crate::formats::pkcs11::Pkcs11Uri::parse(spec)
                .map_err(crate::formats::pkcs11::Pkcs11Error::from)?;
            return Ok(crate::formats::pkcs11::load_certificate(&uri)?);
        }
        #[cfg(not(feature = "pkcs11"))]
        return Err(SigningError::Pkcs11Disabled(shown_uri(spec)));
    }
    Ok(keys::load_certificate(Path::new(spec))?)
}

/// A `pkcs11:` URI for messages: without its PIN and module (the URI may carry `pin-value`).
#[cfg(not(feature = "pkcs11"))]
fn shown_uri(spec: &str) -> String {
    crate::formats::pkcs11::Pkcs11Uri::parse(spec)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| "a pkcs11: URI".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_key() -> SigningKey {
        SigningKey::P256(p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap())
    }

    #[test]
    fn external_signature_must_verify() {
        let k = test_key();
        let d = HashAlg::Sha256.digest(b"tbs");
        let sig = Signer::sign_digest(&k, HashAlg::Sha256, d.as_bytes()).unwrap();
        let ext = ExternalSignature::new(Signer::public_key(&k), sig.clone());
        assert_eq!(ext.sign_digest(HashAlg::Sha256, d.as_bytes()).unwrap(), sig);
        let other = HashAlg::Sha256.digest(b"other");
        assert!(matches!(
            ext.sign_digest(HashAlg::Sha256, other.as_bytes()),
            Err(SigningError::ExternalMismatch { .. })
        ));
        assert!(matches!(
            ext.sign_digest(HashAlg::Sha256, &[0; 20]),
            Err(SigningError::DigestLength { .. })
        ));
        assert_eq!(ext.scheme(), SignatureScheme::EcdsaP256);
    }
}
