//! Sealing for a TPM we cannot reach: a sealed-data object wrapped so that only the TPM holding
//! a given storage parent can `TPM2_Import` it ("duplication to a public key"), computed with
//! no TPM at all — what systemd-cryptenroll does with `--tpm2-device-key` (systemd ≥ 255,
//! `tpm2_calculate_seal`) and go-tpm-tools' `CreateImportBlob`.
//!
//! The construction (TPM 2.0 Part 1 §22.4 "Outer" duplication protection, Part 1 §11.4.10
//! KDFa, §11.4.10.3 KDFe; Part 2 for the structures):
//! 1. the object's public area: KEYEDHASH, the parent's nameAlg, attributes 0 (no
//!    userWithAuth: only the policy authorizes; fixedTPM/fixedParent must be clear for
//!    Import), authPolicy, `unique` = H(seedValue ‖ secret);
//! 2. a seed shared with the parent: RSA — a random seed encrypted with RSAES-OAEP, label
//!    `"DUPLICATE\0"`; ECC — ECDH with an ephemeral key, seed = KDFe(Z, `"DUPLICATE"`,
//!    x(ephemeral), x(parent));
//! 3. `symKey` = KDFa(seed, `"STORAGE"`, Name(object)), `hmacKey` = KDFa(seed, `"INTEGRITY"`);
//! 4. the TPM2B_SENSITIVE (size prefix included) encrypted with AES-CFB, IV zero, and an outer
//!    HMAC over the ciphertext ‖ Name(object).
//!
//! The parent's public area is parsed here by hand (a TPMT_PUBLIC of a storage key is a short
//! fixed shape) so that this stays pure computation, without libtss2.

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::hash::{Digest, HashAlg};

/// TPM_ALG_ID values (Part 2 §6.3).
const ALG_RSA: u16 = 0x0001;
const ALG_KEYEDHASH: u16 = 0x0008;
const ALG_SHA256: u16 = 0x000B;
const ALG_NULL: u16 = 0x0010;
const ALG_ECC: u16 = 0x0023;
const ALG_AES: u16 = 0x0006;
const ALG_CFB: u16 = 0x0043;
/// TPM_ECC_NIST_P256 (Part 2 §6.4).
const ECC_NIST_P256: u16 = 0x0003;
/// TPMA_OBJECT bits (Part 2 §8.3).
const ATTR_FIXED_TPM: u32 = 1 << 1;
const ATTR_RESTRICTED: u32 = 1 << 16;
const ATTR_DECRYPT: u32 = 1 << 17;
const ATTR_SIGN: u32 = 1 << 18;
const ATTR_USER_WITH_AUTH: u32 = 1 << 6;
const ATTR_ADMIN_WITH_POLICY: u32 = 1 << 7;

/// The endorsement key's authPolicy: PolicySecret(TPM_RH_ENDORSEMENT) (TCG EK Credential
/// Profile 2.x §B.3.3 "Template L-1/L-2", `PolicyA` SHA-256).
pub const EK_POLICY_SHA256: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];
/// The largest sealed secret (MAX_SYM_DATA, Part 2 §10.4.3 / TPM2_MAX_SEALED_DATA).
pub const MAX_SEALED_DATA: usize = 128;
/// The largest TPM2B_PUBLIC we read (a TPMT_PUBLIC is at most a few hundred bytes).
pub const MAX_PUBLIC: usize = 1024;

/// Why a parent key or a request cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The bytes are not a TPM2B_PUBLIC we can read.
    #[error("not a TPM2B_PUBLIC: {0}")]
    Malformed(&'static str),
    /// The key is not a storage parent (restricted decryption key).
    #[error("the key is not a storage key (a restricted decryption key): TPM2_Import needs one")]
    NotStorageKey,
    /// The key is not bound to its TPM (fixedTPM clear): its private part may exist outside
    /// the TPM, so a secret sealed to it would not be confined to one TPM.
    #[error("the key is not fixedTPM: its private part may exist outside a TPM")]
    NotFixedTpm,
    /// A parameter we do not implement.
    #[error("unsupported parent: {0} (supported: RSA or ECC NIST P-256 storage keys with SHA-256 and AES-128/256-CFB, as the TCG SRK/EK templates)")]
    Unsupported(&'static str),
    /// The secret is empty or too large.
    #[error("the secret must be 1 to {MAX_SEALED_DATA} bytes, not {0}")]
    SecretSize(usize),
    /// The PIN authValue is too large.
    #[error("the authValue is longer than the parent's nameAlg digest")]
    AuthValueSize,
    /// The policy is not a SHA-256 digest.
    #[error("the policy digest must be SHA-256 (the object's nameAlg)")]
    PolicyAlg,
    /// The parent's RSA key or ECC point is not valid.
    #[error("the parent's public key is not valid")]
    BadKey,
    /// RSA-OAEP encryption failed.
    #[error("RSA-OAEP encryption to the parent failed")]
    Oaep(#[source] rsa::Error),
}

/// The public key of the storage parent the object will be imported under.
#[derive(Clone, Debug)]
pub struct ParentPublic {
    tpmt: Vec<u8>,
    name: Vec<u8>,
    sym_key_bytes: usize,
    key: ParentKey,
    endorsement: bool,
}

#[derive(Clone, Debug)]
enum ParentKey {
    Rsa(rsa::RsaPublicKey),
    EccP256(p256::PublicKey),
}

/// A cursor over marshalled TPM structures (big-endian).
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ImportError> {
        if self.b.len() < n {
            return Err(ImportError::Malformed("truncated"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u16(&mut self) -> Result<u16, ImportError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, ImportError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn tpm2b(&mut self) -> Result<&'a [u8], ImportError> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

impl ParentPublic {
    /// Read a TPM2B_PUBLIC (what `systemd-analyze srk`, `tpm2_readpublic -o` and
    /// `bootchain tpm srk-public` write) and check it is a storage parent we can wrap for.
    pub fn from_tpm2b_public(bytes: &[u8]) -> Result<Self, ImportError> {
        if bytes.len() > MAX_PUBLIC {
            return Err(ImportError::Malformed("too large"));
        }
        let mut outer = Reader { b: bytes };
        let tpmt = outer.tpm2b()?;
        if !outer.b.is_empty() {
            return Err(ImportError::Malformed("bytes after the public area"));
        }
        Self::from_tpmt_public(tpmt)
    }

    /// Read a bare TPMT_PUBLIC.
    pub fn from_tpmt_public(tpmt: &[u8]) -> Result<Self, ImportError> {
        let mut r = Reader { b: tpmt };
        let ty = r.u16()?;
        let name_alg = r.u16()?;
        let attrs = r.u32()?;
        let auth_policy = r.tpm2b()?;
        if name_alg != ALG_SHA256 {
            return Err(ImportError::Unsupported("nameAlg other than SHA-256"));
        }
        if attrs & (ATTR_RESTRICTED | ATTR_DECRYPT) != ATTR_RESTRICTED | ATTR_DECRYPT
            || attrs & ATTR_SIGN != 0
        {
            return Err(ImportError::NotStorageKey);
        }
        if attrs & ATTR_FIXED_TPM == 0 {
            return Err(ImportError::NotFixedTpm);
        }
        // A key only its policy can use as a parent: the endorsement key, whose policy
        // (PolicySecret on the endorsement hierarchy) the unseal side knows how to satisfy.
        let endorsement = attrs & ATTR_USER_WITH_AUTH == 0;
        if endorsement
            && (attrs & ATTR_ADMIN_WITH_POLICY == 0 || auth_policy != EK_POLICY_SHA256.as_slice())
        {
            return Err(ImportError::Unsupported(
                "a parent without userWithAuth whose policy is not the endorsement key's",
            ));
        }
        // TPMT_SYM_DEF_OBJECT: a storage key must name its symmetric algorithm.
        let sym = r.u16()?;
        if sym != ALG_AES {
            return Err(ImportError::Unsupported(
                "symmetric algorithm other than AES",
            ));
        }
        let sym_bits = r.u16()?;
        let mode = r.u16()?;
        if mode != ALG_CFB || !(sym_bits == 128 || sym_bits == 256) {
            return Err(ImportError::Unsupported(
                "AES mode other than CFB or key size",
            ));
        }
        let scheme = |r: &mut Reader<'_>| -> Result<(), ImportError> {
            if r.u16()? != ALG_NULL {
                return Err(ImportError::Unsupported("a scheme on a storage key"));
            }
            Ok(())
        };
        let key = match ty {
            ALG_RSA => {
                scheme(&mut r)?;
                let _bits = r.u16()?;
                let exponent = match r.u32()? {
                    0 => 65537,
                    e => e,
                };
                let n = r.tpm2b()?;
                let k = rsa::RsaPublicKey::new(
                    rsa::BigUint::from_bytes_be(n),
                    rsa::BigUint::from(exponent),
                )
                .map_err(|_| ImportError::BadKey)?;
                ParentKey::Rsa(k)
            }
            ALG_ECC => {
                scheme(&mut r)?;
                if r.u16()? != ECC_NIST_P256 {
                    return Err(ImportError::Unsupported("ECC curve other than NIST P-256"));
                }
                // TPMT_KDF_SCHEME
                if r.u16()? != ALG_NULL {
                    return Err(ImportError::Unsupported("a KDF scheme on the key"));
                }
                let x = r.tpm2b()?;
                let y = r.tpm2b()?;
                if x.len() != 32 || y.len() != 32 {
                    return Err(ImportError::BadKey);
                }
                let point = p256::EncodedPoint::from_affine_coordinates(x.into(), y.into(), false);
                // Rejects points off the curve and the identity.
                let k = p256::PublicKey::from_sec1_bytes(point.as_bytes())
                    .map_err(|_| ImportError::BadKey)?;
                ParentKey::EccP256(k)
            }
            _ => return Err(ImportError::Unsupported("key type other than RSA or ECC")),
        };
        if !r.b.is_empty() {
            return Err(ImportError::Malformed("bytes after the unique field"));
        }
        let mut name = ALG_SHA256.to_be_bytes().to_vec();
        name.extend_from_slice(&Sha256::digest(tpmt));
        Ok(ParentPublic {
            tpmt: tpmt.to_vec(),
            name,
            sym_key_bytes: usize::from(sym_bits / 8),
            key,
            endorsement,
        })
    }

    /// Whether it is an endorsement key (no userWithAuth, the EK policy): Import and Load
    /// under it need a policy session with PolicySecret(TPM_RH_ENDORSEMENT).
    pub fn is_endorsement_key(&self) -> bool {
        self.endorsement
    }

    /// The parent's Name (nameAlg ‖ H(TPMT_PUBLIC)), what a TPM reports for it.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The parent's TPMT_PUBLIC.
    pub fn tpmt_public(&self) -> &[u8] {
        &self.tpmt
    }

    /// Whether it is an ECC key (else RSA).
    pub fn is_ecc(&self) -> bool {
        matches!(self.key, ParentKey::EccP256(_))
    }
}

/// An object ready for `TPM2_Import` under the parent it was made for.
#[derive(Clone, PartialEq, Eq)]
pub struct ImportBlob {
    /// TPM2B_PRIVATE contents (the duplicate: outer HMAC and encrypted sensitive area).
    pub duplicate: Vec<u8>,
    /// The object's TPMT_PUBLIC.
    pub public: Vec<u8>,
    /// TPM2B_ENCRYPTED_SECRET contents (the seed encrypted to the parent).
    pub seed: Vec<u8>,
}

impl std::fmt::Debug for ImportBlob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The blob is encrypted, but there is nothing to learn from its bytes in a log.
        f.debug_struct("ImportBlob")
            .field("duplicate", &self.duplicate.len())
            .field("public", &self.public.len())
            .field("seed", &self.seed.len())
            .finish()
    }
}

fn put_tpm2b(v: &mut Vec<u8>, part: &[u8]) {
    // Every part here is bounded (≤ MAX_SEALED_DATA, a digest, a key): fits u16.
    v.extend_from_slice(&(part.len() as u16).to_be_bytes());
    v.extend_from_slice(part);
}

/// KDFa with HMAC-SHA-256 (Part 1 §11.4.10.2): blocks HMAC(key, i ‖ label ‖ 0 ‖ u ‖ v ‖ bits).
fn kdfa(key: &[u8], label: &str, u: &[u8], v: &[u8], bytes: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(bytes + 32));
    let mut i: u32 = 1;
    while out.len() < bytes {
        // HMAC takes keys of any length.
        let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key) else {
            break;
        };
        m.update(&i.to_be_bytes());
        m.update(label.as_bytes());
        m.update(&[0]);
        m.update(u);
        m.update(v);
        m.update(&((bytes * 8) as u32).to_be_bytes());
        out.extend_from_slice(&m.finalize().into_bytes());
        i += 1;
    }
    out.truncate(bytes);
    out
}

/// KDFe with SHA-256 (Part 1 §11.4.10.3, SP 800-56A concatenation): H(i ‖ Z ‖ label ‖ 0 ‖
/// u ‖ v), no length field.
fn kdfe(z: &[u8], label: &str, u: &[u8], v: &[u8], bytes: usize) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(bytes + 32));
    let mut i: u32 = 1;
    while out.len() < bytes {
        let mut h = Sha256::new();
        h.update(i.to_be_bytes());
        h.update(z);
        h.update(label.as_bytes());
        h.update([0]);
        h.update(u);
        h.update(v);
        out.extend_from_slice(&h.finalize());
        i += 1;
    }
    out.truncate(bytes);
    out
}

/// The seed and its encryption to the parent (Part 1 §B.10.3 RSA, §C.6.4 ECC).
fn share_seed(parent: &ParentPublic) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), ImportError> {
    match &parent.key {
        ParentKey::Rsa(k) => {
            let mut seed = Zeroizing::new(vec![0u8; 32]);
            OsRng.fill_bytes(&mut seed);
            // The label includes its NUL, as the reference TPM's DUPLICATE_STRING.
            let padding = rsa::Oaep::new_with_label::<Sha256, _>("DUPLICATE\0");
            let enc = k
                .encrypt(&mut OsRng, padding, &seed)
                .map_err(ImportError::Oaep)?;
            Ok((seed, enc))
        }
        ParentKey::EccP256(k) => {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            let eph = p256::ecdh::EphemeralSecret::random(&mut OsRng);
            let eph_pub = eph.public_key().to_encoded_point(false);
            let parent_pt = k.to_encoded_point(false);
            let z = eph.diffie_hellman(k);
            let (Some(ex), Some(ey), Some(px)) = (eph_pub.x(), eph_pub.y(), parent_pt.x()) else {
                return Err(ImportError::BadKey);
            };
            let seed = kdfe(z.raw_secret_bytes(), "DUPLICATE", ex, px, 32);
            // TPMS_ECC_POINT of the ephemeral key.
            let mut enc = Vec::with_capacity(68);
            put_tpm2b(&mut enc, ex);
            put_tpm2b(&mut enc, ey);
            Ok((seed, enc))
        }
    }
}

/// Wrap `secret` for import under `parent`: only the TPM holding the parent's private key can
/// import it, and the TPM enforces `policy` (SHA-256) at Unseal. `auth_value` is the PIN's
/// authValue when the policy includes PolicyAuthValue.
///
/// ```no_run
/// use bootchain::tpm_import::{seal_for_import, ParentPublic};
/// let srk = ParentPublic::from_tpm2b_public(&std::fs::read("srk.tpm2b_public")?)?;
/// let policy = bootchain::policy::zero_policy(); // a real one: policy::sealing_policy
/// let blob = seal_for_import(&srk, &policy, b"volume key", None)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn seal_for_import(
    parent: &ParentPublic,
    policy: &Digest,
    secret: &[u8],
    auth_value: Option<&[u8]>,
) -> Result<ImportBlob, ImportError> {
    if secret.is_empty() || secret.len() > MAX_SEALED_DATA {
        return Err(ImportError::SecretSize(secret.len()));
    }
    if policy.alg() != HashAlg::Sha256 {
        return Err(ImportError::PolicyAlg);
    }
    let auth = auth_value.unwrap_or_default();
    if auth.len() > 32 {
        return Err(ImportError::AuthValueSize);
    }
    // seedValue: independent of the duplication seed (systemd reuses one value for both;
    // both import, independent values are cleaner).
    let mut seed_value = Zeroizing::new(vec![0u8; 32]);
    OsRng.fill_bytes(&mut seed_value);

    // The object's public area (Part 2 §12.2.4 TPMT_PUBLIC, KEYEDHASH).
    let mut public = Vec::with_capacity(80);
    public.extend_from_slice(&ALG_KEYEDHASH.to_be_bytes());
    public.extend_from_slice(&ALG_SHA256.to_be_bytes());
    public.extend_from_slice(&0u32.to_be_bytes());
    put_tpm2b(&mut public, policy.as_bytes());
    public.extend_from_slice(&ALG_NULL.to_be_bytes()); // TPMT_KEYEDHASH_SCHEME: NULL
    let mut h = Sha256::new();
    h.update(&*seed_value);
    h.update(secret);
    put_tpm2b(&mut public, &h.finalize());
    let mut name = ALG_SHA256.to_be_bytes().to_vec();
    name.extend_from_slice(&Sha256::digest(&public));

    // TPM2B_SENSITIVE, its size prefix included in what is encrypted.
    let mut sensitive = Zeroizing::new(Vec::with_capacity(200));
    sensitive.extend_from_slice(&ALG_KEYEDHASH.to_be_bytes());
    put_tpm2b(&mut sensitive, auth);
    put_tpm2b(&mut sensitive, &seed_value);
    put_tpm2b(&mut sensitive, secret);
    let mut plain = Zeroizing::new(Vec::with_capacity(sensitive.len() + 2));
    put_tpm2b(&mut plain, &sensitive);

    let (seed, enc_seed) = share_seed(parent)?;
    let sym_key = kdfa(&seed, "STORAGE", &name, &[], parent.sym_key_bytes);
    let hmac_key = kdfa(&seed, "INTEGRITY", &[], &[], 32);
    let mut enc = plain.to_vec();
    let iv = [0u8; 16];
    match parent.sym_key_bytes {
        16 => cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&sym_key, &iv)
            .map_err(|_| ImportError::Unsupported("AES key size"))?
            .encrypt(&mut enc),
        _ => cfb_mode::Encryptor::<aes::Aes256>::new_from_slices(&sym_key, &iv)
            .map_err(|_| ImportError::Unsupported("AES key size"))?
            .encrypt(&mut enc),
    }
    let mut m = Hmac::<Sha256>::new_from_slice(&hmac_key)
        .map_err(|_| ImportError::Unsupported("HMAC key"))?;
    m.update(&enc);
    m.update(&name);
    let outer = m.finalize().into_bytes();
    let mut duplicate = Vec::with_capacity(2 + outer.len() + enc.len());
    put_tpm2b(&mut duplicate, &outer);
    duplicate.extend_from_slice(&enc);
    Ok(ImportBlob {
        duplicate,
        public,
        seed: enc_seed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// KDFa test vector: the KDFa of TPM 2.0 Part 1 with HMAC-SHA-256, cross-checked with an
    /// independent HMAC composition.
    #[test]
    fn kdfa_matches_its_definition() {
        let key = [7u8; 32];
        let got = kdfa(&key, "STORAGE", b"u", b"v", 48);
        let block = |i: u32| {
            let mut m = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            m.update(&i.to_be_bytes());
            m.update(b"STORAGE\0uv");
            m.update(&384u32.to_be_bytes());
            m.finalize().into_bytes().to_vec()
        };
        let mut want = block(1);
        want.extend(block(2));
        assert_eq!(&got[..], &want[..48]);
    }

    #[test]
    fn parents_that_cannot_import_are_refused() {
        assert!(matches!(
            ParentPublic::from_tpm2b_public(&[0, 4, 0, 1]),
            Err(ImportError::Malformed(_))
        ));
        assert!(matches!(
            ParentPublic::from_tpm2b_public(&[]),
            Err(ImportError::Malformed(_))
        ));
        // An ECC signing key (sign, not restricted decrypt).
        let mut t = vec![0x00, 0x23, 0x00, 0x0B];
        t.extend_from_slice(&(ATTR_SIGN | ATTR_FIXED_TPM).to_be_bytes());
        t.extend_from_slice(&[0, 0]);
        let mut b = (t.len() as u16).to_be_bytes().to_vec();
        b.extend_from_slice(&t);
        assert!(matches!(
            ParentPublic::from_tpm2b_public(&b),
            Err(ImportError::NotStorageKey)
        ));
        // A storage key usable only through a policy that is not the endorsement key's: the
        // unseal side could not authorize Import under it.
        let mut t = vec![0x00, 0x23, 0x00, 0x0B];
        t.extend_from_slice(
            &(ATTR_RESTRICTED | ATTR_DECRYPT | ATTR_FIXED_TPM | ATTR_ADMIN_WITH_POLICY)
                .to_be_bytes(),
        );
        t.extend_from_slice(&[0, 32]);
        t.extend_from_slice(&[0x11; 32]);
        let mut b = (t.len() as u16).to_be_bytes().to_vec();
        b.extend_from_slice(&t);
        assert!(matches!(
            ParentPublic::from_tpm2b_public(&b),
            Err(ImportError::Unsupported(m)) if m.contains("endorsement key")
        ));
    }
}
