//! TPM 2.0 policy digests computed in software (no TPM needed): PolicyPCR, PolicyAuthorize,
//! PolicyAuthValue, and the TPM Name of an external RSA public key.
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
}
