//! TPM 2.0 policy digests computed in software (no TPM needed): PolicyPCR, PolicyAuthorize,
//! PolicyAuthValue, PolicyNV, PolicyOR, PolicyAuthorizeNV, the TPM Name of an external RSA public key
//! and of an NV index, and the epoch binding of signed policies ([`NvEpoch`]).
//!
//! Formulas: TPM 2.0 Part 3 §23 ("Enhanced Authorization"): a policy command extends the
//! session digest as `policyDigest' = H(policyDigest || commandCode || parameters)`.
//! TPM marshalling is big-endian (Part 2 §4). The session hash is always SHA-256 here, as in
//! systemd.

use std::collections::BTreeSet;

use crate::hash::{Digest, HashAlg};
pub use crate::pcr::{parse_pcr_list, PcrIndex, PcrIndexError, MAX_PCR};

/// TPM_CC_PolicyPCR (Part 2 §6.5.2).
pub const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;
/// TPM_CC_PolicyAuthorize.
pub const TPM_CC_POLICY_AUTHORIZE: u32 = 0x0000_016A;
/// TPM_CC_PolicyAuthValue.
pub const TPM_CC_POLICY_AUTH_VALUE: u32 = 0x0000_016B;
/// TPM_CC_PolicyNV.
pub const TPM_CC_POLICY_NV: u32 = 0x0000_0149;
/// TPM_CC_PolicyOR.
pub const TPM_CC_POLICY_OR: u32 = 0x0000_0171;
/// TPM_CC_PolicyAuthorizeNV.
pub const TPM_CC_POLICY_AUTHORIZE_NV: u32 = 0x0000_0192;
/// TPM_EO_UNSIGNED_LE (Part 2 §6.8): `A <= B`, unsigned, A the NV contents.
pub const TPM_EO_UNSIGNED_LE: u16 = 0x0009;
/// Size of the PCR select bitmap systemd and tpm2-tools use (TPM2_PCRS_MAX / 8).
pub const PCR_SELECT_SIZE: usize = 3;

/// One bank's selection of PCRs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank.
    pub bank: HashAlg,
    /// The PCRs, ascending.
    pub pcrs: BTreeSet<PcrIndex>,
}

impl PcrSelection {
    /// A selection.
    pub fn new(bank: HashAlg, pcrs: impl IntoIterator<Item = PcrIndex>) -> Self {
        PcrSelection {
            bank,
            pcrs: pcrs.into_iter().collect(),
        }
    }

    /// The 3-byte bitmap: PCR n sets bit n%8 of byte n/8.
    pub fn bitmap(&self) -> [u8; PCR_SELECT_SIZE] {
        let mut b = [0u8; PCR_SELECT_SIZE];
        for p in &self.pcrs {
            b[(p.get() / 8) as usize] |= 1 << (p.get() % 8);
        }
        b
    }
}

/// Marshal a TPML_PCR_SELECTION (Part 2 §10.9.7) of one or more banks.
pub fn marshal_pcr_selection(sel: &[PcrSelection]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + sel.len() * 6);
    v.extend_from_slice(&(sel.len() as u32).to_be_bytes());
    for s in sel {
        v.extend_from_slice(&s.bank.tpm_alg_id().to_be_bytes());
        v.push(PCR_SELECT_SIZE as u8);
        v.extend_from_slice(&s.bitmap());
    }
    v
}

/// The SHA-256 zero policy a session starts with.
pub fn zero_policy() -> Digest {
    Digest::zero(HashAlg::Sha256)
}

/// Errors computing a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The values do not match the selection.
    #[error("PolicyPCR needs one {bank} value per selected PCR: {expected} expected, {got} given")]
    ValueCount {
        /// The bank.
        bank: HashAlg,
        /// Values expected.
        expected: usize,
        /// Values given.
        got: usize,
    },
    /// A value of the wrong bank.
    #[error("PCR value for the {expected} bank is a {got} digest")]
    WrongBank {
        /// The bank of the selection.
        expected: HashAlg,
        /// The value's algorithm.
        got: HashAlg,
    },
    /// An RSA key whose exponent a TPMT_PUBLIC cannot hold.
    #[error("unsupported public key for a TPM Name: RSA exponent does not fit 32 bits")]
    RsaExponentTooLarge,
}

/// PolicyPCR (Part 3 §23.7): `H(prev || TPM_CC_PolicyPCR || pcrs || pcrDigest)` where
/// `pcrDigest = H(values in selection order)`. `values` lists, for each selection in order,
/// the values of its PCRs in ascending index order.
pub fn policy_pcr(
    prev: &Digest,
    selections: &[PcrSelection],
    values: &[Digest],
) -> Result<Digest, PolicyError> {
    let expected: usize = selections.iter().map(|s| s.pcrs.len()).sum();
    if values.len() != expected {
        let bank = selections
            .first()
            .map(|s| s.bank)
            .unwrap_or(HashAlg::Sha256);
        return Err(PolicyError::ValueCount {
            bank,
            expected,
            got: values.len(),
        });
    }
    let mut vh = HashAlg::Sha256.hasher();
    let mut i = 0;
    for s in selections {
        for _ in &s.pcrs {
            if values[i].alg() != s.bank {
                return Err(PolicyError::WrongBank {
                    expected: s.bank,
                    got: values[i].alg(),
                });
            }
            vh.update(values[i].as_bytes());
            i += 1;
        }
    }
    let pcr_digest = vh.finalize();
    let mut h = HashAlg::Sha256.hasher();
    h.update(prev.as_bytes());
    h.update(&TPM_CC_POLICY_PCR.to_be_bytes());
    h.update(&marshal_pcr_selection(selections));
    h.update(pcr_digest.as_bytes());
    Ok(h.finalize())
}

/// PolicyAuthorize (Part 3 §23.16): the digest is reset, then
/// `H(H(0 || TPM_CC_PolicyAuthorize || keyName) || policyRef)`.
pub fn policy_authorize(key_name: &[u8], policy_ref: &[u8]) -> Digest {
    let mut h = HashAlg::Sha256.hasher();
    h.update(zero_policy().as_bytes());
    h.update(&TPM_CC_POLICY_AUTHORIZE.to_be_bytes());
    h.update(key_name);
    let inner = h.finalize();
    let mut h = HashAlg::Sha256.hasher();
    h.update(inner.as_bytes());
    h.update(policy_ref);
    h.finalize()
}

/// PolicyAuthValue (Part 3 §23.17): `H(prev || TPM_CC_PolicyAuthValue)`.
pub fn policy_auth_value(prev: &Digest) -> Digest {
    let mut h = HashAlg::Sha256.hasher();
    h.update(prev.as_bytes());
    h.update(&TPM_CC_POLICY_AUTH_VALUE.to_be_bytes());
    h.finalize()
}

/// The literal-PCR part of a sealing policy: a selection and its values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrBinding {
    /// The PCRs (one bank).
    pub selection: PcrSelection,
    /// Their values, ascending PCR order.
    pub values: Vec<Digest>,
}

/// The whole sealing policy in systemd's order (`tpm2_calculate_sealing_policy`):
/// PolicyAuthorize(key Name), then PolicyPCR over literal values, then PolicyAuthValue (each
/// optional).
pub fn sealing_policy(
    authorize_key_name: Option<&[u8]>,
    pcrs: Option<&PcrBinding>,
    pin: bool,
) -> Result<Digest, PolicyError> {
    let mut d = match authorize_key_name {
        Some(name) => policy_authorize(name, b""),
        None => zero_policy(),
    };
    if let Some(b) = pcrs.filter(|b| !b.selection.pcrs.is_empty()) {
        d = policy_pcr(&d, std::slice::from_ref(&b.selection), &b.values)?;
    }
    if pin {
        d = policy_auth_value(&d);
    }
    Ok(d)
}

/// The approved-policy hash a PolicyAuthorize signature covers:
/// `aHash = H(approvedPolicy || policyRef)` (Part 3 §23.16).
pub fn authorize_signed_hash(approved: &Digest, policy_ref: &[u8]) -> Digest {
    let mut h = HashAlg::Sha256.hasher();
    h.update(approved.as_bytes());
    h.update(policy_ref);
    h.finalize()
}

/// TPM_ALG_RSA.
const TPM_ALG_RSA: u16 = 0x0001;
/// TPM_ALG_NULL.
const TPM_ALG_NULL: u16 = 0x0010;
/// TPMA_OBJECT userWithAuth | decrypt | sign, as systemd and `tpm2_loadexternal -a
/// 'decrypt|sign|userwithauth'` give an external verification key.
pub const EXTERNAL_KEY_ATTRIBUTES: u32 = 0x0006_0040;

/// Marshal the TPMT_PUBLIC (Part 2 §12.2.4) of an external RSA verification key: nameAlg
/// SHA-256, no symmetric algorithm, no scheme, the modulus as `unique`, exponent 65537 written
/// explicitly (as systemd 252 and tpm2-tools do; the Name differs if 0 is written instead).
pub fn rsa_public_area(key: &rsa::RsaPublicKey) -> Result<Vec<u8>, PolicyError> {
    use rsa::traits::PublicKeyParts;
    let n = key.n().to_bytes_be();
    let e = key.e().to_bytes_be();
    if e.len() > 4 {
        return Err(PolicyError::RsaExponentTooLarge);
    }
    let exponent = e.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    let mut v = Vec::with_capacity(32 + n.len());
    v.extend_from_slice(&TPM_ALG_RSA.to_be_bytes());
    v.extend_from_slice(&HashAlg::Sha256.tpm_alg_id().to_be_bytes());
    v.extend_from_slice(&EXTERNAL_KEY_ATTRIBUTES.to_be_bytes());
    v.extend_from_slice(&0u16.to_be_bytes()); // authPolicy: empty
    v.extend_from_slice(&TPM_ALG_NULL.to_be_bytes()); // symmetric
    v.extend_from_slice(&TPM_ALG_NULL.to_be_bytes()); // scheme
    v.extend_from_slice(&((n.len() * 8) as u16).to_be_bytes()); // keyBits
    v.extend_from_slice(&exponent.to_be_bytes());
    v.extend_from_slice(&(n.len() as u16).to_be_bytes());
    v.extend_from_slice(&n);
    Ok(v)
}

/// The TPM Name of an object: `nameAlg || H(TPMT_PUBLIC)` (Part 1 §16).
pub fn object_name(public_area: &[u8]) -> Vec<u8> {
    let mut v = HashAlg::Sha256.tpm_alg_id().to_be_bytes().to_vec();
    v.extend_from_slice(HashAlg::Sha256.digest(public_area).as_bytes());
    v
}

/// TPMA_NV bits (Part 2 §13.4) that bootchain's epoch counter uses.
pub mod tpma_nv {
    /// TPMA_NV_OWNERWRITE: written (incremented) with owner authorization.
    pub const OWNERWRITE: u32 = 1 << 1;
    /// TPM_NT_COUNTER in TPMA_NV_TPM_NT (bits 7:4).
    pub const COUNTER: u32 = 1 << 4;
    /// TPMA_NV_AUTHREAD: read with the index's authValue.
    pub const AUTHREAD: u32 = 1 << 18;
    /// TPMA_NV_NO_DA.
    pub const NO_DA: u32 = 1 << 25;
    /// TPMA_NV_WRITTEN: set by the TPM on the first write; part of the Name.
    pub const WRITTEN: u32 = 1 << 29;
}

/// The attributes of bootchain's epoch counter as defined (without TPMA_NV_WRITTEN): a
/// counter, incremented with owner authorization, read (by PolicyNV) with its own empty
/// authValue, outside dictionary-attack protection.
pub const EPOCH_COUNTER_ATTRIBUTES: u32 =
    tpma_nv::OWNERWRITE | tpma_nv::COUNTER | tpma_nv::AUTHREAD | tpma_nv::NO_DA;

/// Marshal a TPMS_NV_PUBLIC (Part 2 §13.5): nvIndex, nameAlg SHA-256, attributes, authPolicy
/// (TPM2B), dataSize.
pub fn nv_public_area(index: u32, attributes: u32, auth_policy: &[u8], data_size: u16) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + auth_policy.len());
    v.extend_from_slice(&index.to_be_bytes());
    v.extend_from_slice(&HashAlg::Sha256.tpm_alg_id().to_be_bytes());
    v.extend_from_slice(&attributes.to_be_bytes());
    v.extend_from_slice(&(auth_policy.len() as u16).to_be_bytes());
    v.extend_from_slice(auth_policy);
    v.extend_from_slice(&data_size.to_be_bytes());
    v
}

/// The Name of bootchain's epoch counter at `index` once written (incremented at least once,
/// as `policy nv-define` leaves it): `nameAlg || H(TPMS_NV_PUBLIC)` with TPMA_NV_WRITTEN set.
pub fn epoch_counter_name(index: u32) -> Vec<u8> {
    object_name(&nv_public_area(
        index,
        EPOCH_COUNTER_ATTRIBUTES | tpma_nv::WRITTEN,
        &[],
        8,
    ))
}

/// PolicyNV (Part 3 §23.9): `args = H(operandB || offset || operation)`, then
/// `H(prev || TPM_CC_PolicyNV || args || nvIndexName)`.
pub fn policy_nv(
    prev: &Digest,
    operand_b: &[u8],
    offset: u16,
    operation: u16,
    nv_name: &[u8],
) -> Digest {
    let mut h = HashAlg::Sha256.hasher();
    h.update(operand_b);
    h.update(&offset.to_be_bytes());
    h.update(&operation.to_be_bytes());
    let args = h.finalize();
    let mut h = HashAlg::Sha256.hasher();
    h.update(prev.as_bytes());
    h.update(&TPM_CC_POLICY_NV.to_be_bytes());
    h.update(args.as_bytes());
    h.update(nv_name);
    h.finalize()
}

/// PolicyOR (Part 3 §23.6): the digest is reset, then
/// `H(0 || TPM_CC_PolicyOR || branch digests, concatenated in list order)`.
pub fn policy_or(branches: &[Digest]) -> Digest {
    let mut h = HashAlg::Sha256.hasher();
    h.update(zero_policy().as_bytes());
    h.update(&TPM_CC_POLICY_OR.to_be_bytes());
    for b in branches {
        h.update(b.as_bytes());
    }
    h.finalize()
}

/// PolicyAuthorizeNV (Part 3 §23.22): the digest is reset, then
/// `H(0 || TPM_CC_PolicyAuthorizeNV || nvIndexName)`.
pub fn policy_authorize_nv(nv_name: &[u8]) -> Digest {
    let mut h = HashAlg::Sha256.hasher();
    h.update(zero_policy().as_bytes());
    h.update(&TPM_CC_POLICY_AUTHORIZE_NV.to_be_bytes());
    h.update(nv_name);
    h.finalize()
}

/// A signed policy's binding to an epoch counter: the signature approves PolicyPCR ∧
/// PolicyNV(counter at `index` ≤ `epoch`), so it stops working once the counter is bumped
/// past `epoch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvEpoch {
    /// The NV index handle (0x01xxxxxx).
    pub index: u32,
    /// The index's Name (as NV_ReadPublic returns it, written).
    pub name: Vec<u8>,
    /// The highest counter value the signature is valid for.
    pub epoch: u64,
}

impl NvEpoch {
    /// The binding to bootchain's epoch counter at `index` ([`epoch_counter_name`]).
    pub fn counter(index: u32, epoch: u64) -> Self {
        NvEpoch {
            index,
            name: epoch_counter_name(index),
            epoch,
        }
    }

    /// `prev` extended by PolicyNV(NV[0..8] ≤ epoch, unsigned, 8 bytes big-endian).
    pub fn extend(&self, prev: &Digest) -> Digest {
        policy_nv(
            prev,
            &self.epoch.to_be_bytes(),
            0,
            TPM_EO_UNSIGNED_LE,
            &self.name,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcr(i: u32) -> PcrIndex {
        PcrIndex::new(i).unwrap()
    }

    #[test]
    fn selection_marshalling() {
        let s = PcrSelection::new(HashAlg::Sha256, [pcr(7), pcr(11)]);
        assert_eq!(
            hex::encode(marshal_pcr_selection(&[s])),
            "00000001000b03800800"
        );
    }

    /// Vectors from the debug log in systemd PR #32993 (PolicyPCR, then PolicyAuthorize).
    #[test]
    fn systemd_vectors() {
        let v11 = Digest::from_hex(
            HashAlg::Sha256,
            "cd4a21cb128034894805634efa3de7bf7ad64bab838831a22d525a33b6afe133",
        )
        .unwrap();
        let sel = PcrSelection::new(HashAlg::Sha256, [pcr(11)]);
        let p = policy_pcr(&zero_policy(), &[sel], &[v11]).unwrap();
        assert_eq!(
            p.to_hex(),
            "bd34d71c240e83bcfc49b2f6e5becf220c5f1f7380d57838e7b65aad1d963b23"
        );
        let name =
            hex::decode("000bad2a981c0eed83d41d9544750be2bc8f80b39f8af1ab3463bd7dbefb6576da3e")
                .unwrap();
        let a = policy_authorize(&name, b"");
        assert_eq!(
            a.to_hex(),
            "513c0686708c06d99dd558564d916e0cfd3ed03040e91cc6de5a8ac89d5b02b6"
        );
    }

    #[test]
    fn value_count_checked() {
        let sel = PcrSelection::new(HashAlg::Sha256, [pcr(7), pcr(11)]);
        assert!(policy_pcr(&zero_policy(), &[sel], &[zero_policy()]).is_err());
        assert_eq!(parse_pcr_list("7+11").unwrap().len(), 2);
        assert!(parse_pcr_list("24").is_err());
        assert!(parse_pcr_list("x").is_err());
    }

    /// Name of a written counter, checked against tpm2-tools on swtpm
    /// (`tpm2_nvdefine 0x01800b0c -s 8 -a "ownerwrite|nt=counter|authread|no_da"`,
    /// `tpm2_nvincrement`, `tpm2_nvreadpublic`), and PolicyNV against `tpm2_policynv`.
    #[test]
    fn nv_counter_name_and_policy_nv() {
        assert_eq!(EPOCH_COUNTER_ATTRIBUTES, 0x0204_0012);
        let area = nv_public_area(
            0x0180_0b0c,
            EPOCH_COUNTER_ATTRIBUTES | tpma_nv::WRITTEN,
            &[],
            8,
        );
        assert_eq!(hex::encode(&area), "01800b0c000b2204001200000008");
        let name = epoch_counter_name(0x0180_0b0c);
        assert_eq!(name.len(), 34);
        assert_eq!(&name[..2], &[0x00, 0x0b]);
        let e = NvEpoch::counter(0x0180_0b0c, 3);
        let d = e.extend(&zero_policy());
        // Manual recomputation from Part 3 §23.9.
        let mut args = Vec::new();
        args.extend_from_slice(&3u64.to_be_bytes());
        args.extend_from_slice(&[0, 0, 0, 9]);
        let args = HashAlg::Sha256.digest(&args);
        let mut m = vec![0u8; 32];
        m.extend_from_slice(&[0, 0, 1, 0x49]);
        m.extend_from_slice(args.as_bytes());
        m.extend_from_slice(&name);
        assert_eq!(d, HashAlg::Sha256.digest(&m));
        assert_ne!(d, NvEpoch::counter(0x0180_0b0c, 4).extend(&zero_policy()));
        let mut m = vec![0u8; 32];
        m.extend_from_slice(&[0, 0, 1, 0x92]);
        m.extend_from_slice(&name);
        assert_eq!(policy_authorize_nv(&name), HashAlg::Sha256.digest(&m));
    }

    /// systemd-pcrlock 257 `make-policy` on swtpm (debug log and policy.json `nvPublic`): its
    /// NV index (0x01800c00, policyWrite|writeAll|ownerRead, authPolicy = its PolicySigned
    /// digest, 34 bytes for a TPMT_HA) has, written, the Name it logs, and PolicyAuthorizeNV
    /// over it gives the digest it logs.
    #[test]
    fn pcrlock_nv_index_vectors() {
        let auth_policy =
            hex::decode("16a90c82a5a5e803d26f41e684020cf7fdf86fc0406f2bfea5567bd4b0b7539a")
                .unwrap();
        let area = nv_public_area(0x0180_0c00, 0x0002_1008, &auth_policy, 34);
        assert_eq!(
            hex::encode(&area),
            "01800c00000b00021008002016a90c82a5a5e803d26f41e684020cf7fdf86fc0406f2bfea5567bd4b0b7539a0022"
        );
        let written = nv_public_area(
            0x0180_0c00,
            0x0002_1008 | tpma_nv::WRITTEN,
            &auth_policy,
            34,
        );
        let name = object_name(&written);
        assert_eq!(
            hex::encode(&name),
            "000ba70f95ed08f739d16c0ab926601d3e256bd865072c2f28273a05a45537a24a4d"
        );
        assert_eq!(
            policy_authorize_nv(&name).to_hex(),
            "7ffb7d270b215d04be9ed17fcbcb309f157127d320c7c2e59ca6c7263752cef3"
        );
    }
}
