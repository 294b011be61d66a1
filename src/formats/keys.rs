//! Loading signing keys and X.509 certificates from PEM or DER files, and matching them.
//!
//! Supported private keys: RSA (PKCS#1 or PKCS#8) of 2048 to 4096 bits, and ECDSA P-256 or P-384
//! (SEC1 or PKCS#8). Encrypted keys are refused with a clear error; decrypt them first.

use std::fmt;
use std::path::{Path, PathBuf};

use der::{Decode, Encode};
use rsa::traits::PublicKeyParts;
/// The X.509 certificate type keys are checked against (re-exported so callers need not
/// depend on `x509-cert`).
pub use x509_cert::Certificate;
use zeroize::Zeroizing;

/// Errors loading or using keys and certificates.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key is encrypted.
    #[error("{what}: encrypted private keys are not supported; decrypt it first (openssl pkey -in KEY -out PLAIN)")]
    Encrypted {
        /// Where it came from.
        what: String,
    },
    /// Not a key format we know.
    #[error("{what} is not a readable private key")]
    BadKey {
        /// Where it came from.
        what: String,
        /// Why it failed.
        #[source]
        reason: BadKeyReason,
    },
    /// Not a certificate.
    #[error("{what} is not a readable X.509 certificate")]
    BadCert {
        /// Where it came from.
        what: String,
        /// Why it failed.
        #[source]
        reason: BadCertReason,
    },
    /// A key type we do not sign with.
    #[error("unsupported key")]
    Unsupported(#[source] UnsupportedKey),
    /// The key does not belong to the certificate.
    #[error("the private key does not match the certificate's public key ({cert_subject})")]
    Mismatch {
        /// Subject of the certificate.
        cert_subject: String,
    },
    /// The signature operation failed.
    #[error("signing failed")]
    Sign(#[source] SigningFailure),
}

/// Why bytes are not a readable private key ([`KeyError::BadKey`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BadKeyReason {
    /// Refused before decoding (too large, too deep, too many SET elements).
    #[error(transparent)]
    Shape(#[from] crate::formats::der_lite::DerShapeError),
    /// Not a PKCS#8 PrivateKeyInfo, or a bad key inside one.
    #[error(transparent)]
    Pkcs8(#[from] pkcs8::Error),
    /// Not a PKCS#1 RSAPrivateKey.
    #[error(transparent)]
    Pkcs1(#[from] pkcs1::Error),
    /// PEM without a private key block.
    #[error("no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY PEM block")]
    NoPemBlock,
    /// DER that is none of the key formats.
    #[error("not PEM, and not a DER PKCS#8, PKCS#1 or SEC1 key")]
    UnknownDer,
    /// An `EC PRIVATE KEY` that is not SEC1 on a supported curve.
    #[error("not a SEC1 P-256 or P-384 key")]
    NotSec1,
}

/// Why bytes are not a readable certificate ([`KeyError::BadCert`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BadCertReason {
    /// PEM without a certificate block.
    #[error("no CERTIFICATE PEM block")]
    NoPemBlock,
    /// Refused before decoding (too large, too deep, too many SET elements).
    #[error(transparent)]
    Shape(#[from] crate::formats::der_lite::DerShapeError),
    /// The DER decoder refused it.
    #[error(transparent)]
    Der(#[from] der::Error),
}

/// A key bootchain does not sign or verify with ([`KeyError::Unsupported`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnsupportedKey {
    /// A SubjectPublicKeyInfo that does not decode.
    #[error("public key")]
    PublicKey(#[source] spki::Error),
    /// A public EC key on another curve.
    #[error("public key: EC curve is not P-256 or P-384")]
    PublicCurve,
    /// A public key of another algorithm.
    #[error("public key: algorithm {0} is not RSA or EC")]
    PublicAlgorithm(const_oid::ObjectIdentifier),
    /// The certificate's SubjectPublicKeyInfo could not be re-encoded.
    #[error("cannot encode the certificate's public key")]
    EncodeSpki(#[source] der::Error),
    /// A public key could not be encoded as SubjectPublicKeyInfo.
    #[error("cannot encode the public key")]
    EncodePublic(#[source] Box<spki::Error>),
    /// A private EC key on another curve.
    #[error("EC keys must be on P-256 or P-384")]
    PrivateCurve,
    /// A private key of another algorithm.
    #[error("private key algorithm {0} (only RSA and ECDSA P-256/P-384)")]
    PrivateAlgorithm(const_oid::ObjectIdentifier),
    /// An RSA key of an unsupported size.
    #[error("RSA-{0}: use 2048, 3072 or 4096 bits")]
    RsaBits(usize),
}

/// The error of the signature primitive ([`KeyError::Sign`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningFailure {
    /// RSASSA-PKCS1-v1_5.
    #[error(transparent)]
    Rsa(#[from] rsa::Error),
    /// ECDSA.
    #[error(transparent)]
    Ecdsa(#[from] signature::Error),
}

/// Largest certificate accepted, checked before decoding (real ones are 1–2 KiB; a
/// certificate with thousands of RDN attributes would make the decoder's SET sorting
/// quadratic); checked by `der_lite::check_shape`.
pub const MAX_CERT_LEN: usize = 64 << 10;
/// Largest private key DER accepted (an RSA-8192 PKCS#8 key is about 4.8 KiB).
pub const MAX_KEY_LEN: usize = 16 << 10;

/// One PEM block.
struct PemBlock {
    label: String,
    der: Zeroizing<Vec<u8>>,
}

/// Every PEM block in `text`: a file may hold several (a key and its certificate, a chain)
/// with text between them. This only finds the `-----BEGIN`/`-----END` boundaries; each block
/// is decoded by RustCrypto's RFC 7468 decoder (`der::pem`), which checks the labels and the
/// base64. Blocks it refuses (say, legacy encrypted PEM with headers) are skipped.
fn pem_blocks(text: &[u8]) -> Vec<PemBlock> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(b) = find(rest, BEGIN) {
        let block = &rest[b..];
        // The END line: "-----END " label "-----".
        let Some(e) = find(block, END) else { break };
        let Some(close) = find(&block[e + END.len()..], b"-----") else {
            break;
        };
        let end = e + END.len() + close + 5;
        if let Ok((label, der)) = der::pem::decode_vec(&block[..end]) {
            out.push(PemBlock {
                label: label.to_string(),
                der: Zeroizing::new(der),
            });
        }
        rest = &block[end..];
    }
    out
}

fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|w| w == b"-----BEGIN ")
}

/// A public key bootchain can verify with.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA.
    Rsa(rsa::RsaPublicKey),
    /// ECDSA P-256.
    P256(p256::PublicKey),
    /// ECDSA P-384.
    P384(p384::PublicKey),
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublicKey::Rsa(k) => write!(f, "RSA-{}", k.size() * 8),
            PublicKey::P256(_) => f.write_str("ECDSA P-256"),
            PublicKey::P384(_) => f.write_str("ECDSA P-384"),
        }
    }
}

impl PublicKey {
    /// From a DER SubjectPublicKeyInfo.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, KeyError> {
        use pkcs8::DecodePublicKey;
        let bad = |e| KeyError::Unsupported(UnsupportedKey::PublicKey(e));
        let spki = spki::SubjectPublicKeyInfoRef::try_from(der).map_err(bad)?;
        let oid = spki.algorithm.oid;
        if oid == const_oid::db::rfc5912::RSA_ENCRYPTION {
            return rsa::RsaPublicKey::from_public_key_der(der)
                .map(PublicKey::Rsa)
                .map_err(bad);
        }
        if oid == const_oid::db::rfc5912::ID_EC_PUBLIC_KEY {
            if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
                return Ok(PublicKey::P256(k));
            }
            if let Ok(k) = p384::PublicKey::from_public_key_der(der) {
                return Ok(PublicKey::P384(k));
            }
            return Err(KeyError::Unsupported(UnsupportedKey::PublicCurve));
        }
        Err(KeyError::Unsupported(UnsupportedKey::PublicAlgorithm(oid)))
    }

    /// The public key of a certificate.
    pub fn from_certificate(cert: &Certificate) -> Result<Self, KeyError> {
        let der = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| KeyError::Unsupported(UnsupportedKey::EncodeSpki(e)))?;
        PublicKey::from_spki_der(&der)
    }

    /// Short description: "RSA-2048", "ECDSA P-256".
    pub fn describe(&self) -> String {
        format!("{self:?}")
    }

    /// DER SubjectPublicKeyInfo (rsaEncryption or id-ecPublicKey with the curve).
    pub fn to_spki_der(&self) -> Result<Vec<u8>, KeyError> {
        use pkcs8::EncodePublicKey;
        let der = match self {
            PublicKey::Rsa(k) => k.to_public_key_der(),
            PublicKey::P256(k) => k.to_public_key_der(),
            PublicKey::P384(k) => k.to_public_key_der(),
        };
        der.map(|d| d.as_bytes().to_vec())
            .map_err(|e| KeyError::Unsupported(UnsupportedKey::EncodePublic(Box::new(e))))
    }
}

/// Fail unless `key` is the public key of `cert`.
pub fn check_key_matches(key: &PublicKey, cert: &Certificate) -> Result<(), KeyError> {
    if PublicKey::from_certificate(cert)? != *key {
        return Err(KeyError::Mismatch {
            cert_subject: cert.tbs_certificate.subject.to_string(),
        });
    }
    Ok(())
}

/// A private key that can make Authenticode and `.pcrsig` signatures.
pub enum SigningKey {
    /// RSA, signed with RSASSA-PKCS1-v1_5.
    Rsa(Box<rsa::RsaPrivateKey>),
    /// ECDSA P-256.
    P256(p256::ecdsa::SigningKey),
    /// ECDSA P-384.
    P384(p384::ecdsa::SigningKey),
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        write!(f, "SigningKey({:?})", self.public_key())
    }
}

impl SigningKey {
    /// Load from a PEM or DER file.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?);
        SigningKey::from_bytes(&bytes, &path.display().to_string())
    }

    /// Load from PEM or DER bytes; `what` names the source in errors.
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self, KeyError> {
        let shape = |der: &[u8]| {
            crate::formats::der_lite::check_shape(der, MAX_KEY_LEN).map_err(|e| KeyError::BadKey {
                what: what.into(),
                reason: e.into(),
            })
        };
        if is_pem(bytes) {
            let blocks = pem_blocks(bytes);
            for b in &blocks {
                match b.label.as_str() {
                    "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY" => shape(&b.der)?,
                    _ => {}
                }
                match b.label.as_str() {
                    "PRIVATE KEY" => return Self::from_pkcs8(&b.der, what),
                    "RSA PRIVATE KEY" => return Self::from_pkcs1(&b.der, what),
                    "EC PRIVATE KEY" => return Self::from_sec1(&b.der, what),
                    "ENCRYPTED PRIVATE KEY" => {
                        return Err(KeyError::Encrypted { what: what.into() })
                    }
                    _ => {}
                }
            }
            return Err(KeyError::BadKey {
                what: what.into(),
                reason: BadKeyReason::NoPemBlock,
            });
        }
        shape(bytes)?;
        Self::from_pkcs8(bytes, what)
            .or_else(|_| Self::from_pkcs1(bytes, what))
            .or_else(|_| Self::from_sec1(bytes, what))
            .map_err(|_| KeyError::BadKey {
                what: what.into(),
                reason: BadKeyReason::UnknownDer,
            })
    }

    fn from_pkcs8(der: &[u8], what: &str) -> Result<Self, KeyError> {
        use pkcs8::DecodePrivateKey;
        let bad = |e: pkcs8::Error| KeyError::BadKey {
            what: what.into(),
            reason: e.into(),
        };
        let info = pkcs8::PrivateKeyInfo::try_from(der).map_err(bad)?;
        let oid = info.algorithm.oid;
        if oid == const_oid::db::rfc5912::RSA_ENCRYPTION {
            let k = rsa::RsaPrivateKey::from_pkcs8_der(der).map_err(bad)?;
            return Self::checked_rsa(k);
        }
        if oid == const_oid::db::rfc5912::ID_EC_PUBLIC_KEY {
            if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
                return Ok(SigningKey::P256(k));
            }
            if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_der(der) {
                return Ok(SigningKey::P384(k));
            }
            return Err(KeyError::Unsupported(UnsupportedKey::PrivateCurve));
        }
        Err(KeyError::Unsupported(UnsupportedKey::PrivateAlgorithm(oid)))
    }

    fn from_pkcs1(der: &[u8], what: &str) -> Result<Self, KeyError> {
        use pkcs1::DecodeRsaPrivateKey;
        let k = rsa::RsaPrivateKey::from_pkcs1_der(der).map_err(|e| KeyError::BadKey {
            what: what.into(),
            reason: e.into(),
        })?;
        Self::checked_rsa(k)
    }

    fn from_sec1(der: &[u8], what: &str) -> Result<Self, KeyError> {
        if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
            return Ok(SigningKey::P256(k.into()));
        }
        if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
            return Ok(SigningKey::P384(k.into()));
        }
        Err(KeyError::BadKey {
            what: what.into(),
            reason: BadKeyReason::NotSec1,
        })
    }

    fn checked_rsa(k: rsa::RsaPrivateKey) -> Result<Self, KeyError> {
        let bits = k.size() * 8;
        if !(2048..=8192).contains(&bits) {
            return Err(KeyError::Unsupported(UnsupportedKey::RsaBits(bits)));
        }
        Ok(SigningKey::Rsa(Box::new(k)))
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        match self {
            SigningKey::Rsa(k) => PublicKey::Rsa(k.to_public_key()),
            SigningKey::P256(k) => PublicKey::P256(p256::PublicKey::from(k.verifying_key())),
            SigningKey::P384(k) => PublicKey::P384(p384::PublicKey::from(k.verifying_key())),
        }
    }

    /// Fail unless this key belongs to `cert`.
    pub fn check_matches(&self, cert: &Certificate) -> Result<(), KeyError> {
        check_key_matches(&self.public_key(), cert)
    }
}

/// Verify `sig` over the prehashed `digest` with `key`.
pub fn verify_prehashed(
    key: &PublicKey,
    hash: crate::hash::HashAlg,
    digest: &[u8],
    sig: &[u8],
) -> bool {
    use crate::hash::HashAlg;
    use signature::hazmat::PrehashVerifier;
    match key {
        PublicKey::Rsa(k) => {
            let scheme = match hash {
                HashAlg::Sha1 => rsa::Pkcs1v15Sign::new::<sha1::Sha1>(),
                HashAlg::Sha256 => rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
                HashAlg::Sha384 => rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
                HashAlg::Sha512 => rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
            };
            k.verify(scheme, digest, sig).is_ok()
        }
        PublicKey::P256(k) => p256::ecdsa::Signature::from_der(sig).ok().is_some_and(|s| {
            p256::ecdsa::VerifyingKey::from(k)
                .verify_prehash(digest, &s)
                .is_ok()
        }),
        PublicKey::P384(k) => p384::ecdsa::Signature::from_der(sig).ok().is_some_and(|s| {
            p384::ecdsa::VerifyingKey::from(k)
                .verify_prehash(digest, &s)
                .is_ok()
        }),
    }
}

/// Load one certificate from a PEM or DER file.
pub fn load_certificate(path: &Path) -> Result<Certificate, KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    certificate_from_bytes(&bytes, &path.display().to_string())
}

/// Parse one certificate from PEM or DER bytes.
pub fn certificate_from_bytes(bytes: &[u8], what: &str) -> Result<Certificate, KeyError> {
    let bad = |r: BadCertReason| KeyError::BadCert {
        what: what.into(),
        reason: r,
    };
    if is_pem(bytes) {
        let blocks = pem_blocks(bytes);
        let b = blocks
            .iter()
            .find(|b| b.label == "CERTIFICATE")
            .ok_or_else(|| bad(BadCertReason::NoPemBlock))?;
        crate::formats::der_lite::check_shape(&b.der, MAX_CERT_LEN).map_err(|e| bad(e.into()))?;
        return Certificate::from_der(&b.der).map_err(|e| bad(e.into()));
    }
    crate::formats::der_lite::check_shape(bytes, MAX_CERT_LEN).map_err(|e| bad(e.into()))?;
    Certificate::from_der(bytes).map_err(|e| bad(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_keys_are_errors() {
        assert!(SigningKey::from_bytes(b"", "empty").is_err());
        assert!(SigningKey::from_bytes(
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "x"
        )
        .is_err());
        assert!(matches!(
            SigningKey::from_bytes(
                b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "x"
            ),
            Err(KeyError::Encrypted { .. })
        ));
        assert!(certificate_from_bytes(b"\x30\x03\x02\x01\x01", "x").is_err());
    }
}
