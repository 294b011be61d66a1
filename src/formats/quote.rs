//! TPM 2.0 quotes as `tpm2_quote -m/-s` and `tpm2_createak -u` write them, parsed by hand so
//! that a verifier needs no TPM and no libtss2: the quoted structure (TPMS_ATTEST, TPM 2.0
//! Part 2 §10.12.12), its signature (TPMT_SIGNATURE, §11.3.4) and the attestation key's public
//! area (TPM2B_PUBLIC / TPMT_PUBLIC, §12.2.4; or a PEM SubjectPublicKeyInfo as
//! `tpm2_createak -f pem` writes it), and the signature check over the quote.
//!
//! TPM structures are big-endian. Every read is bounds-checked and every sized field has a
//! limit (Part 2's maxima), so malformed input gives a [`QuoteError`] naming the structure,
//! the field and the byte offset, never a panic.

use std::fmt;

use crate::hash::{Digest, HashAlg};
use crate::pcr::PcrIndex;

/// TPM_GENERATED_VALUE (Part 2 §6.2): the first field of every structure the TPM signs.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE (Part 2 §6.9).
pub const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;

const TPM_ALG_RSA: u16 = 0x0001;
const TPM_ALG_NULL: u16 = 0x0010;
const TPM_ALG_RSASSA: u16 = 0x0014;
const TPM_ALG_RSAPSS: u16 = 0x0016;
const TPM_ALG_ECDSA: u16 = 0x0018;
const TPM_ALG_ECC: u16 = 0x0023;
const TPM_ECC_NIST_P256: u16 = 0x0003;
const TPM_ECC_NIST_P384: u16 = 0x0004;

/// TPMA_OBJECT bits (Part 2 §8.3).
const ATTR_RESTRICTED: u32 = 1 << 16;
const ATTR_SIGN: u32 = 1 << 18;

/// Which structure a [`QuoteError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Structure {
    /// TPMS_ATTEST (the quote, `tpm2_quote -m`).
    Attest,
    /// TPMT_SIGNATURE (`tpm2_quote -s`).
    Signature,
    /// TPM2B_PUBLIC (the AK, `tpm2_createak -u`).
    Public,
}

impl fmt::Display for Structure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Structure::Attest => "TPMS_ATTEST",
            Structure::Signature => "TPMT_SIGNATURE",
            Structure::Public => "TPM2B_PUBLIC",
        })
    }
}

/// Why a quote, signature or AK public key is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuoteError {
    /// The bytes end inside a field.
    #[error("{structure} truncated at byte {offset}: {field} needs {needed} more bytes")]
    Truncated {
        /// The structure.
        structure: Structure,
        /// Offset of the field.
        offset: usize,
        /// The field.
        field: &'static str,
        /// Bytes missing.
        needed: usize,
    },
    /// Bytes after the end of the structure.
    #[error("{structure}: {count} bytes after its end (byte {offset})")]
    Trailing {
        /// The structure.
        structure: Structure,
        /// Where the structure ended.
        offset: usize,
        /// Bytes left over.
        count: usize,
    },
    /// A sized field larger than its type allows.
    #[error("{structure}: {field} at byte {offset} is {size} bytes, more than its maximum {max}")]
    TooLarge {
        /// The structure.
        structure: Structure,
        /// The field.
        field: &'static str,
        /// Offset of its size.
        offset: usize,
        /// The size given.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// An algorithm, curve or selector this verifier does not handle.
    #[error("{structure}: unsupported {field} {value:#06x} at byte {offset}")]
    Unsupported {
        /// The structure.
        structure: Structure,
        /// The field.
        field: &'static str,
        /// The value.
        value: u32,
        /// Its offset.
        offset: usize,
    },
    /// A structurally valid value that makes no sense (a zero-length key, a bad point).
    #[error("{structure}: {reason}")]
    Malformed {
        /// The structure.
        structure: Structure,
        /// Why.
        reason: String,
    },
    /// The key is not an attestation key: it lacks the sign or restricted attribute (a
    /// signing key that is not restricted can sign forged TPMS_ATTEST bytes).
    #[error(
        "the key is not an attestation key: objectAttributes {attributes:#010x} lack {missing}"
    )]
    NotAnAk {
        /// TPMA_OBJECT.
        attributes: u32,
        /// The missing attributes.
        missing: &'static str,
    },
    /// A PEM file that is not a public key.
    #[error("AK public key: not a PEM public key")]
    Pem(#[source] der::Error),
    /// A PEM public key of an algorithm other than RSA, P-256 and P-384.
    #[error("AK public key: algorithm {oid} is not RSA, P-256 or P-384")]
    PemAlgorithm {
        /// The key's algorithm (and curve) OIDs.
        oid: String,
    },
    /// The signature's scheme is not the one the key is bound to, or not one for its type.
    #[error("the quote is signed with {signature} but the AK is {key}")]
    SchemeMismatch {
        /// The signature's scheme.
        signature: String,
        /// The key's type and scheme.
        key: String,
    },
    /// The signature does not verify with the AK.
    #[error("the quote's {scheme} signature does not verify with the AK ({key})")]
    BadSignature {
        /// The signature's scheme.
        scheme: SigScheme,
        /// The key.
        key: String,
        /// The library's reason.
        #[source]
        source: Box<SignatureFailure>,
    },
}

/// Why a signature did not verify: the RSA or ECDSA library's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureFailure {
    /// RSA (PKCS#1 v1.5 or PSS).
    #[error(transparent)]
    Rsa(rsa::Error),
    /// ECDSA.
    #[error(transparent)]
    Ecdsa(signature::Error),
}

/// A bounds-checked big-endian reader over one structure.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    structure: Structure,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], structure: Structure) -> Self {
        Reader {
            buf,
            pos: 0,
            structure,
        }
    }
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], QuoteError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(QuoteError::Truncated {
                structure: self.structure,
                offset: self.pos,
                field,
                needed: n - left,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], QuoteError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }
    fn u8(&mut self, field: &'static str) -> Result<u8, QuoteError> {
        Ok(self.array::<1>(field)?[0])
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, QuoteError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, QuoteError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }
    fn u64(&mut self, field: &'static str) -> Result<u64, QuoteError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
    /// A TPM2B: u16 size, then that many bytes (at most `max`).
    fn tpm2b(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], QuoteError> {
        let at = self.pos;
        let size = usize::from(self.u16(field)?);
        if size > max {
            return Err(QuoteError::TooLarge {
                structure: self.structure,
                field,
                offset: at,
                size,
                max,
            });
        }
        self.take(size, field)
    }
    fn unsupported(&self, field: &'static str, value: u32, width: usize) -> QuoteError {
        QuoteError::Unsupported {
            structure: self.structure,
            field,
            value,
            offset: self.pos.saturating_sub(width),
        }
    }
    /// A TPMI_ALG_HASH this crate computes.
    fn hash_alg(&mut self, field: &'static str) -> Result<HashAlg, QuoteError> {
        let v = self.u16(field)?;
        HashAlg::from_tpm_alg_id(v).ok_or_else(|| self.unsupported(field, v.into(), 2))
    }
    fn end(&self) -> Result<(), QuoteError> {
        if self.pos != self.buf.len() {
            return Err(QuoteError::Trailing {
                structure: self.structure,
                offset: self.pos,
                count: self.buf.len() - self.pos,
            });
        }
        Ok(())
    }
}

/// Largest digest (TPMU_HA, SHA-512).
const MAX_DIGEST: usize = 64;
/// TPM2B_NAME: a handle or an algorithm id and a digest.
const MAX_NAME: usize = 2 + MAX_DIGEST;
/// TPM2B_DATA: sizeof(TPMT_HA).
const MAX_DATA: usize = 2 + MAX_DIGEST;
/// TPM2B_PUBLIC_KEY_RSA: 4096-bit keys.
const MAX_RSA: usize = 512;
/// TPM2B_ECC_PARAMETER: up to P-521.
const MAX_ECC: usize = 66;
/// TPML_PCR_SELECTION: HASH_COUNT banks.
const MAX_BANKS: u32 = 16;
/// TPMS_PCR_SELECTION.sizeofSelect: PCR_SELECT_MAX for 32 PCRs.
const MAX_SELECT: u8 = 4;

/// One bank of a PCR selection (TPMS_PCR_SELECTION).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank.
    pub bank: HashAlg,
    /// The selected PCRs, ascending.
    pub pcrs: Vec<PcrIndex>,
}

impl fmt::Display for PcrSelection {
    /// As tpm2-tools spells it: `sha256:0,1,7`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self.pcrs.iter().map(|p| p.to_string()).collect();
        write!(f, "{}:{}", self.bank, list.join(","))
    }
}

/// TPMS_QUOTE_INFO: what a quote covers.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuoteInfo {
    /// pcrSelect, in the order the TPM hashed the values.
    pub selections: Vec<PcrSelection>,
    /// pcrDigest: the hash (with the signing scheme's algorithm) of the selected PCR values,
    /// concatenated in selection order.
    pub pcr_digest: Vec<u8>,
}

/// TPMS_ATTEST (Part 2 §10.12.12). [`Attest::parse`] reads any type's header; the
/// attested part only of a quote (other types leave [`Attest::quote`] empty). Magic and type
/// are kept as found: checking them is the verifier's job.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attest {
    /// magic (TPM_GENERATED_VALUE in anything the TPM produced).
    pub magic: u32,
    /// type (TPM_ST_ATTEST_QUOTE for a quote).
    pub attest_type: u16,
    /// qualifiedSigner: the AK's qualified name.
    pub qualified_signer: Vec<u8>,
    /// extraData: the verifier's nonce.
    pub extra_data: Vec<u8>,
    /// clockInfo.clock (milliseconds the TPM has been powered).
    pub clock: u64,
    /// clockInfo.resetCount.
    pub reset_count: u32,
    /// clockInfo.restartCount.
    pub restart_count: u32,
    /// clockInfo.safe.
    pub safe: bool,
    /// firmwareVersion.
    pub firmware_version: u64,
    /// The quote info, for type TPM_ST_ATTEST_QUOTE.
    pub quote: Option<QuoteInfo>,
}

impl Attest {
    /// Parse the bytes `tpm2_quote -m` writes (the TPMS_ATTEST, without TPM2B_ATTEST's size).
    pub fn parse(b: &[u8]) -> Result<Self, QuoteError> {
        let mut r = Reader::new(b, Structure::Attest);
        let magic = r.u32("magic")?;
        let attest_type = r.u16("type")?;
        let qualified_signer = r.tpm2b("qualifiedSigner", MAX_NAME)?.to_vec();
        let extra_data = r.tpm2b("extraData", MAX_DATA)?.to_vec();
        let clock = r.u64("clockInfo.clock")?;
        let reset_count = r.u32("clockInfo.resetCount")?;
        let restart_count = r.u32("clockInfo.restartCount")?;
        let safe = match r.u8("clockInfo.safe")? {
            0 => false,
            1 => true,
            v => return Err(r.unsupported("clockInfo.safe", v.into(), 1)),
        };
        let firmware_version = r.u64("firmwareVersion")?;
        let quote = if attest_type == TPM_ST_ATTEST_QUOTE {
            let count = r.u32("pcrSelect.count")?;
            if count > MAX_BANKS {
                return Err(r.unsupported("pcrSelect.count", count, 4));
            }
            let mut selections = Vec::new();
            for _ in 0..count {
                let bank = r.hash_alg("pcrSelections.hash")?;
                let size = r.u8("pcrSelections.sizeofSelect")?;
                if size > MAX_SELECT {
                    return Err(r.unsupported("pcrSelections.sizeofSelect", size.into(), 1));
                }
                let bits = r.take(usize::from(size), "pcrSelections.pcrSelect")?;
                let mut pcrs = Vec::new();
                for (byte, v) in bits.iter().enumerate() {
                    for bit in 0..8u32 {
                        if v & (1 << bit) != 0 {
                            let i = u32::try_from(byte).unwrap_or(u32::MAX) * 8 + bit;
                            let pcr = PcrIndex::new(i).map_err(|_| QuoteError::Malformed {
                                structure: Structure::Attest,
                                reason: format!("PCR {i} selected; PCRs go up to 23"),
                            })?;
                            pcrs.push(pcr);
                        }
                    }
                }
                selections.push(PcrSelection { bank, pcrs });
            }
            let pcr_digest = r.tpm2b("pcrDigest", MAX_DIGEST)?.to_vec();
            r.end()?;
            Some(QuoteInfo {
                selections,
                pcr_digest,
            })
        } else {
            None
        };
        Ok(Attest {
            magic,
            attest_type,
            qualified_signer,
            extra_data,
            clock,
            reset_count,
            restart_count,
            safe,
            firmware_version,
            quote,
        })
    }
}

/// A signature scheme and its hash, as TPMT_SIGNATURE and TPMT_PUBLIC name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigScheme {
    /// RSASSA-PKCS1-v1_5 (TPM_ALG_RSASSA).
    RsaSsa(HashAlg),
    /// RSASSA-PSS (TPM_ALG_RSAPSS).
    RsaPss(HashAlg),
    /// ECDSA (TPM_ALG_ECDSA).
    Ecdsa(HashAlg),
}

impl SigScheme {
    /// The hash the scheme signs (and a quote's pcrDigest is computed with).
    pub fn hash(self) -> HashAlg {
        match self {
            SigScheme::RsaSsa(h) | SigScheme::RsaPss(h) | SigScheme::Ecdsa(h) => h,
        }
    }
}

impl fmt::Display for SigScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SigScheme::RsaSsa(h) => write!(f, "rsassa-{h}"),
            SigScheme::RsaPss(h) => write!(f, "rsapss-{h}"),
            SigScheme::Ecdsa(h) => write!(f, "ecdsa-{h}"),
        }
    }
}

/// TPMT_SIGNATURE (Part 2 §11.3.4) of the schemes an AK signs with.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signature {
    /// RSASSA or RSAPSS: the signature as a big-endian integer the modulus' size.
    Rsa {
        /// Scheme and hash.
        scheme: SigScheme,
        /// The signature.
        sig: Vec<u8>,
    },
    /// ECDSA: r and s.
    Ecdsa {
        /// The hash.
        hash: HashAlg,
        /// signatureR.
        r: Vec<u8>,
        /// signatureS.
        s: Vec<u8>,
    },
}

impl Signature {
    /// Parse the bytes `tpm2_quote -s` writes (format `tss`, the default).
    pub fn parse(b: &[u8]) -> Result<Self, QuoteError> {
        let mut r = Reader::new(b, Structure::Signature);
        let alg = r.u16("sigAlg")?;
        let s = match alg {
            TPM_ALG_RSASSA | TPM_ALG_RSAPSS => {
                let h = r.hash_alg("hash")?;
                let sig = r.tpm2b("sig", MAX_RSA)?.to_vec();
                let scheme = if alg == TPM_ALG_RSASSA {
                    SigScheme::RsaSsa(h)
                } else {
                    SigScheme::RsaPss(h)
                };
                Signature::Rsa { scheme, sig }
            }
            TPM_ALG_ECDSA => {
                let hash = r.hash_alg("hash")?;
                let rr = r.tpm2b("signatureR", MAX_ECC)?.to_vec();
                let ss = r.tpm2b("signatureS", MAX_ECC)?.to_vec();
                Signature::Ecdsa { hash, r: rr, s: ss }
            }
            v => return Err(r.unsupported("sigAlg", v.into(), 2)),
        };
        r.end()?;
        Ok(s)
    }

    /// Scheme and hash.
    pub fn scheme(&self) -> SigScheme {
        match self {
            Signature::Rsa { scheme, .. } => *scheme,
            Signature::Ecdsa { hash, .. } => SigScheme::Ecdsa(*hash),
        }
    }
}

/// An attestation key's public key.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AkKey {
    /// RSA.
    Rsa(rsa::RsaPublicKey),
    /// ECC NIST P-256.
    P256(p256::ecdsa::VerifyingKey),
    /// ECC NIST P-384.
    P384(p384::ecdsa::VerifyingKey),
}

impl fmt::Display for AkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use rsa::traits::PublicKeyParts;
        match self {
            AkKey::Rsa(k) => write!(f, "RSA {}", k.n().bits()),
            AkKey::P256(_) => f.write_str("ECC P-256"),
            AkKey::P384(_) => f.write_str("ECC P-384"),
        }
    }
}

/// An attestation key: its public key, the scheme its public area binds it to, and its Name.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AkPublic {
    /// The key.
    pub key: AkKey,
    /// The scheme in TPMT_PUBLIC (None for TPM_ALG_NULL or a PEM key).
    pub scheme: Option<SigScheme>,
    /// The Name (nameAlg || H(TPMT_PUBLIC)), from a TPM2B_PUBLIC.
    pub name: Option<Vec<u8>>,
}

impl fmt::Display for AkPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.key)?;
        if let Some(s) = self.scheme {
            write!(f, " {s}")?;
        }
        Ok(())
    }
}

impl AkPublic {
    /// Parse a PEM public key (`tpm2_createak -f pem`, `openssl pkey -pubout`) or a
    /// TPM2B_PUBLIC (`tpm2_createak -u`, `tpm2_readpublic -o`). A TPM2B_PUBLIC must be a
    /// restricted signing key.
    pub fn parse(b: &[u8]) -> Result<Self, QuoteError> {
        if b.starts_with(b"-----BEGIN") {
            return Self::from_pem(b);
        }
        Self::from_tpm2b_public(b)
    }

    fn from_pem(b: &[u8]) -> Result<Self, QuoteError> {
        use pkcs8::DecodePublicKey;
        let text = std::str::from_utf8(b).map_err(|e| QuoteError::Pem(der::Error::from(e)))?;
        let key = if let Ok(k) = rsa::RsaPublicKey::from_public_key_pem(text) {
            AkKey::Rsa(k)
        } else if let Ok(k) = p256::PublicKey::from_public_key_pem(text) {
            AkKey::P256(k.into())
        } else if let Ok(k) = p384::PublicKey::from_public_key_pem(text) {
            AkKey::P384(k.into())
        } else {
            use rsa::pkcs1::DecodeRsaPublicKey;
            match rsa::RsaPublicKey::from_pkcs1_pem(text) {
                Ok(k) => AkKey::Rsa(k),
                Err(_) => {
                    // Report why: not SPKI at all, or an algorithm we do not verify.
                    use der::DecodePem;
                    return Err(
                        match pkcs8::spki::SubjectPublicKeyInfoOwned::from_pem(text) {
                            Err(e) => QuoteError::Pem(e),
                            Ok(spki) => QuoteError::PemAlgorithm {
                                oid: spki.algorithm.oid.to_string(),
                            },
                        },
                    );
                }
            }
        };
        Ok(AkPublic {
            key,
            scheme: None,
            name: None,
        })
    }

    fn from_tpm2b_public(b: &[u8]) -> Result<Self, QuoteError> {
        let mut outer = Reader::new(b, Structure::Public);
        let area = outer.tpm2b("size", 2048)?;
        outer.end()?;
        let mut r = Reader::new(area, Structure::Public);
        let ty = r.u16("type")?;
        let name_alg = r.hash_alg("nameAlg")?;
        let attributes = r.u32("objectAttributes")?;
        r.tpm2b("authPolicy", MAX_DIGEST)?;
        let missing = match (
            attributes & ATTR_SIGN != 0,
            attributes & ATTR_RESTRICTED != 0,
        ) {
            (true, true) => None,
            (false, true) => Some("sign"),
            (true, false) => Some("restricted"),
            (false, false) => Some("sign and restricted"),
        };
        if let Some(missing) = missing {
            return Err(QuoteError::NotAnAk {
                attributes,
                missing,
            });
        }
        let (key, scheme) = match ty {
            TPM_ALG_RSA => {
                symmetric(&mut r)?;
                let scheme = match r.u16("scheme")? {
                    TPM_ALG_NULL => None,
                    TPM_ALG_RSASSA => Some(SigScheme::RsaSsa(r.hash_alg("scheme.hashAlg")?)),
                    TPM_ALG_RSAPSS => Some(SigScheme::RsaPss(r.hash_alg("scheme.hashAlg")?)),
                    v => return Err(r.unsupported("scheme", v.into(), 2)),
                };
                let bits = r.u16("keyBits")?;
                let exponent = match r.u32("exponent")? {
                    0 => 65537,
                    e => e,
                };
                let n = r.tpm2b("unique.rsa", MAX_RSA)?;
                if n.is_empty() || n.len() * 8 != usize::from(bits) {
                    return Err(QuoteError::Malformed {
                        structure: Structure::Public,
                        reason: format!("keyBits {bits} but the modulus is {} bytes", n.len()),
                    });
                }
                let key = rsa::RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(n),
                    rsa::BigUint::from(exponent),
                )
                .map_err(|e| QuoteError::Malformed {
                    structure: Structure::Public,
                    reason: format!("RSA key: {e}"),
                })?;
                (AkKey::Rsa(key), scheme)
            }
            TPM_ALG_ECC => {
                symmetric(&mut r)?;
                let scheme = match r.u16("scheme")? {
                    TPM_ALG_NULL => None,
                    TPM_ALG_ECDSA => Some(SigScheme::Ecdsa(r.hash_alg("scheme.hashAlg")?)),
                    v => return Err(r.unsupported("scheme", v.into(), 2)),
                };
                let curve = r.u16("curveID")?;
                if r.u16("kdf.scheme")? != TPM_ALG_NULL {
                    r.u16("kdf.hashAlg")?;
                }
                let x = r.tpm2b("unique.x", MAX_ECC)?;
                let y = r.tpm2b("unique.y", MAX_ECC)?;
                let key = match curve {
                    TPM_ECC_NIST_P256 => AkKey::P256(
                        p256::ecdsa::VerifyingKey::from_sec1_bytes(&point(x, y, 32)?)
                            .map_err(|_| bad_point("P-256"))?,
                    ),
                    TPM_ECC_NIST_P384 => AkKey::P384(
                        p384::ecdsa::VerifyingKey::from_sec1_bytes(&point(x, y, 48)?)
                            .map_err(|_| bad_point("P-384"))?,
                    ),
                    v => return Err(r.unsupported("curveID", v.into(), 2)),
                };
                (key, scheme)
            }
            v => {
                return Err(QuoteError::Unsupported {
                    structure: Structure::Public,
                    field: "type",
                    value: v.into(),
                    offset: 2,
                })
            }
        };
        r.end()?;
        let mut name = name_alg.tpm_alg_id().to_be_bytes().to_vec();
        name.extend_from_slice(name_alg.digest(area).as_bytes());
        Ok(AkPublic {
            key,
            scheme,
            name: Some(name),
        })
    }

    /// Check `sig` over `message` (the TPMS_ATTEST bytes) with this key. The signature's
    /// scheme must be the key's when its public area names one.
    pub fn verify(&self, message: &[u8], sig: &Signature) -> Result<(), QuoteError> {
        let scheme = sig.scheme();
        if let Some(bound) = self.scheme {
            if bound != scheme {
                return Err(QuoteError::SchemeMismatch {
                    signature: scheme.to_string(),
                    key: self.to_string(),
                });
            }
        }
        let hash = scheme.hash();
        if hash == HashAlg::Sha1 {
            return Err(QuoteError::SchemeMismatch {
                signature: scheme.to_string(),
                key: format!("{self} (SHA-1 signatures are refused)"),
            });
        }
        let digest = hash.digest(message);
        let bad = |source| QuoteError::BadSignature {
            scheme,
            key: self.to_string(),
            source: Box::new(source),
        };
        let ecdsa = |e| bad(SignatureFailure::Ecdsa(e));
        match (&self.key, sig) {
            (AkKey::Rsa(k), Signature::Rsa { scheme, sig }) => {
                rsa_verify(k, *scheme, &digest, sig).map_err(|e| bad(SignatureFailure::Rsa(e)))
            }
            (AkKey::P256(k), Signature::Ecdsa { r, s, .. }) => {
                use signature::hazmat::PrehashVerifier;
                let sig = p256::ecdsa::Signature::from_scalars(
                    p256::FieldBytes::from(scalar::<32>(r)?),
                    p256::FieldBytes::from(scalar::<32>(s)?),
                )
                .map_err(ecdsa)?;
                k.verify_prehash(digest.as_bytes(), &sig).map_err(ecdsa)
            }
            (AkKey::P384(k), Signature::Ecdsa { r, s, .. }) => {
                use signature::hazmat::PrehashVerifier;
                let sig = p384::ecdsa::Signature::from_scalars(
                    p384::FieldBytes::from(scalar::<48>(r)?),
                    p384::FieldBytes::from(scalar::<48>(s)?),
                )
                .map_err(ecdsa)?;
                k.verify_prehash(digest.as_bytes(), &sig).map_err(ecdsa)
            }
            _ => Err(QuoteError::SchemeMismatch {
                signature: scheme.to_string(),
                key: self.to_string(),
            }),
        }
    }
}

/// parameters.symmetric: TPM_ALG_NULL for a signing key; keyBits and mode otherwise.
fn symmetric(r: &mut Reader<'_>) -> Result<(), QuoteError> {
    if r.u16("symmetric.algorithm")? != TPM_ALG_NULL {
        r.u16("symmetric.keyBits")?;
        r.u16("symmetric.mode")?;
    }
    Ok(())
}

fn bad_point(curve: &str) -> QuoteError {
    QuoteError::Malformed {
        structure: Structure::Public,
        reason: format!("unique is not a point on {curve}"),
    }
}

/// An uncompressed SEC1 point from TPM coordinates (left-padded to the curve's size).
fn point(x: &[u8], y: &[u8], size: usize) -> Result<Vec<u8>, QuoteError> {
    let mut v = vec![0x04];
    for c in [x, y] {
        if c.len() > size {
            return Err(QuoteError::Malformed {
                structure: Structure::Public,
                reason: format!("a {}-byte coordinate on a {size}-byte curve", c.len()),
            });
        }
        v.resize(v.len() + size - c.len(), 0);
        v.extend_from_slice(c);
    }
    Ok(v)
}

/// An ECDSA scalar left-padded to the curve's size.
fn scalar<const N: usize>(b: &[u8]) -> Result<[u8; N], QuoteError> {
    let mut a = [0u8; N];
    if b.len() > N {
        return Err(QuoteError::Malformed {
            structure: Structure::Signature,
            reason: format!("a {}-byte ECDSA scalar for a {N}-byte curve", b.len()),
        });
    }
    a[N - b.len()..].copy_from_slice(b);
    Ok(a)
}

fn rsa_verify(
    k: &rsa::RsaPublicKey,
    scheme: SigScheme,
    digest: &Digest,
    sig: &[u8],
) -> Result<(), rsa::Error> {
    use rsa::traits::PublicKeyParts;
    let hashed = digest.as_bytes();
    match scheme {
        SigScheme::RsaSsa(HashAlg::Sha256) => {
            k.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), hashed, sig)
        }
        SigScheme::RsaSsa(HashAlg::Sha384) => {
            k.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha384>(), hashed, sig)
        }
        SigScheme::RsaSsa(HashAlg::Sha512) => {
            k.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha512>(), hashed, sig)
        }
        SigScheme::RsaPss(h) => {
            // TPMs salt with the hash's length (Part 1 §B.7, FIPS mode) or the largest salt
            // the modulus allows (older revisions): accept either.
            let em_len = (k.n().bits() + 6) / 8;
            let max = em_len.saturating_sub(h.output_len() + 2);
            let pss = |salt: usize| match h {
                HashAlg::Sha384 => rsa::pss::Pss::new_with_salt::<sha2::Sha384>(salt),
                HashAlg::Sha512 => rsa::pss::Pss::new_with_salt::<sha2::Sha512>(salt),
                _ => rsa::pss::Pss::new_with_salt::<sha2::Sha256>(salt),
            };
            if h == HashAlg::Sha1 {
                return Err(rsa::Error::Verification);
            }
            k.verify(pss(h.output_len()), hashed, sig)
                .or_else(|_| k.verify(pss(max), hashed, sig))
        }
        _ => Err(rsa::Error::Verification),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quote_bytes() -> Vec<u8> {
        let mut q = TPM_GENERATED_VALUE.to_be_bytes().to_vec();
        q.extend_from_slice(&TPM_ST_ATTEST_QUOTE.to_be_bytes());
        q.extend_from_slice(&[0, 2, 0xAB, 0xCD]); // qualifiedSigner
        q.extend_from_slice(&[0, 3, 1, 2, 3]); // extraData
        q.extend_from_slice(&[0u8; 17]); // clockInfo
        q.extend_from_slice(&[0u8; 8]); // firmwareVersion
        q.extend_from_slice(&1u32.to_be_bytes());
        q.extend_from_slice(&[0x00, 0x0B, 3, 0b1000_0011, 0, 0b0000_1000]);
        q.extend_from_slice(&[0, 32]);
        q.extend_from_slice(&[7u8; 32]);
        q
    }

    #[test]
    fn quote_parses_and_every_truncation_is_an_error() {
        let q = quote_bytes();
        let a = Attest::parse(&q).unwrap();
        assert_eq!(a.extra_data, [1, 2, 3]);
        let info = a.quote.unwrap();
        assert_eq!(info.selections[0].to_string(), "sha256:0,1,7,19");
        for n in 0..q.len() {
            assert!(matches!(
                Attest::parse(&q[..n]),
                Err(QuoteError::Truncated { .. })
            ));
        }
        let mut long = q.clone();
        long.push(0);
        assert!(matches!(
            Attest::parse(&long),
            Err(QuoteError::Trailing { count: 1, .. })
        ));
        let mut big = q.clone();
        big[10] = 0xFF; // extraData size (bytes 10-11)
        assert!(matches!(
            Attest::parse(&big),
            Err(QuoteError::TooLarge {
                field: "extraData",
                ..
            })
        ));
    }

    #[test]
    fn signatures_and_keys_refuse_garbage() {
        assert!(matches!(
            Signature::parse(&[0x00, 0x10]),
            Err(QuoteError::Unsupported {
                field: "sigAlg",
                ..
            })
        ));
        assert!(matches!(
            Signature::parse(&[0x00, 0x14, 0x00, 0x0B, 0x00, 0x02, 1]),
            Err(QuoteError::Truncated { .. })
        ));
        assert!(
            AkPublic::parse(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
                .is_err()
        );
        // A keyed-hash object.
        let mut p = vec![0, 10, 0x00, 0x08, 0x00, 0x0B];
        p.extend_from_slice(&(ATTR_SIGN | ATTR_RESTRICTED).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        assert!(matches!(
            AkPublic::parse(&p),
            Err(QuoteError::Unsupported { field: "type", .. })
        ));
        p[6..10].copy_from_slice(&ATTR_SIGN.to_be_bytes());
        assert!(matches!(
            AkPublic::parse(&p),
            Err(QuoteError::NotAnAk {
                missing: "restricted",
                ..
            })
        ));
    }
}
