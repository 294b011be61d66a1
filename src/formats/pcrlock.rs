//! systemd-pcrlock's policy file (`pcrlock.json`, systemd 255+ `systemd-pcrlock make-policy`)
//! and the "super PCR" policy it stands for.
//!
//! pcrlock predicts, for each protected PCR, every value a good boot may leave in it, and
//! writes the policy over those predictions into an NV index; the sealed object's policy is
//! PolicyAuthorizeNV over that index, so new predictions need no re-sealing. To satisfy it a
//! session first reaches the digest the index holds:
//!
//! 1. one PolicyPCR over every PCR with a single predicted value;
//! 2. for each PCR with 2–8 predicted values, in ascending PCR order: PolicyPCR over that PCR
//!    alone, then PolicyOR over the branches "the session so far, then PolicyPCR with value
//!    *i*", one branch per value in the file's order.
//!
//! The construction was checked against systemd-pcrlock 257: the digest its `make-policy`
//! writes into the NV index for `test-vectors/pcrlock/` equals [`PcrlockPolicy::super_pcr`].
//! A PolicyOR takes at most 8 branches (TPM 2.0 Part 3 §23.6), and pcrlock refuses more.
//!
//! The file is not secret and not trusted: a forged one cannot pass, because the TPM compares
//! the session with the digest in the NV index. Parsing is bounded by [`MAX_FILE_SIZE`].

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::hash::{Digest, HashAlg};
use crate::pcr::PcrIndex;
use crate::policy::{self, PcrSelection, PolicyError};

/// Where systemd-cryptsetup looks for the policy file, in order (systemd 257
/// `tpm2_pcrlock_search_file`): a runtime copy, then the one `make-policy` writes.
pub const DEFAULT_PATHS: [&str; 2] = ["/run/systemd/pcrlock.json", "/var/lib/systemd/pcrlock.json"];

/// A policy file larger than this is refused unread (a real one is a few KiB: at most 24 PCRs
/// of 8 values each, plus a few sealed blobs).
pub const MAX_FILE_SIZE: u64 = 1 << 20;

/// Most values a PCR may have: the branches of one PolicyOR (Part 3 §23.6, `TPML_DIGEST`).
pub const MAX_VARIANTS: usize = 8;

/// Why a `pcrlock.json` was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PcrlockError {
    /// Not JSON of the expected shape.
    #[error("pcrlock.json is not a systemd-pcrlock policy")]
    Json(#[source] serde_json::Error),
    /// A member is missing or has the wrong type.
    #[error("pcrlock.json: member {0} is missing or malformed")]
    Member(&'static str),
    /// The bank is not one bootchain knows.
    #[error("pcrlock.json: unknown PCR bank")]
    Bank(#[source] crate::hash::UnknownHashAlg),
    /// A PCR number out of range, or listed twice.
    #[error("pcrlock.json: PCR {0} is out of range or listed twice")]
    Pcr(u64),
    /// A predicted value that is not a digest of the bank.
    #[error("pcrlock.json: a predicted value of PCR {pcr} is not a {bank} digest")]
    Value {
        /// The PCR.
        pcr: u32,
        /// The bank.
        bank: HashAlg,
        /// Why.
        #[source]
        source: crate::hash::DigestParseError,
    },
    /// No value, or more than one PolicyOR can take.
    #[error(
        "pcrlock.json: PCR {pcr} has {count} predicted values; a policy takes 1 to {MAX_VARIANTS}"
    )]
    Variants {
        /// The PCR.
        pcr: u32,
        /// How many.
        count: usize,
    },
    /// `nvPublic` is not a TPM2B_NV_PUBLIC for `nvIndex`.
    #[error("pcrlock.json: nvPublic is not the TPM2B_NV_PUBLIC of NV index {0:#010x}")]
    NvPublic(u32),
    /// `nvPublic` is not base64.
    #[error("pcrlock.json: nvPublic is not base64")]
    Base64(#[source] base64::DecodeError),
    /// The file could not be read (or is larger than [`MAX_FILE_SIZE`]).
    #[error("cannot read the pcrlock policy {}", .path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Computing a PolicyPCR failed.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// A parsed `pcrlock.json`: the predictions and the NV index the policy lives in. Members
/// bootchain does not need (the recovery PIN's sealed blobs, the SRK) are ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrlockPolicy {
    bank: HashAlg,
    prediction: BTreeMap<PcrIndex, Vec<Digest>>,
    nv_index: u32,
    nv_public: Vec<u8>,
}

/// One PolicyOR step of [`SuperPcr`]: the PCR, its predicted values, and the branch digests
/// in the same order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrStep {
    /// The PCR.
    pub pcr: PcrIndex,
    /// Its predicted values.
    pub values: Vec<Digest>,
    /// The session digest after PolicyPCR with each value: the PolicyOR list.
    pub branches: Vec<Digest>,
}

/// The commands that reach a pcrlock policy, computed in software from the predictions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuperPcr {
    /// The bank.
    pub bank: HashAlg,
    /// PCRs with one predicted value, and that value (one PolicyPCR over all of them).
    pub single: Vec<(PcrIndex, Digest)>,
    /// PCRs with several, in order.
    pub or_steps: Vec<OrStep>,
    /// The resulting digest: what the NV index holds.
    pub digest: Digest,
}

impl PcrlockPolicy {
    /// Parse the JSON `systemd-pcrlock make-policy` writes.
    pub fn from_json(json: &[u8]) -> Result<Self, PcrlockError> {
        let v: serde_json::Value = serde_json::from_slice(json).map_err(PcrlockError::Json)?;
        let bank: HashAlg = v
            .get("pcrBank")
            .and_then(serde_json::Value::as_str)
            .ok_or(PcrlockError::Member("pcrBank"))?
            .parse()
            .map_err(PcrlockError::Bank)?;
        let mut prediction = BTreeMap::new();
        for entry in v
            .get("pcrValues")
            .and_then(serde_json::Value::as_array)
            .ok_or(PcrlockError::Member("pcrValues"))?
        {
            let n = entry
                .get("pcr")
                .and_then(serde_json::Value::as_u64)
                .ok_or(PcrlockError::Member("pcrValues[].pcr"))?;
            let pcr = u32::try_from(n)
                .ok()
                .and_then(|p| PcrIndex::new(p).ok())
                .ok_or(PcrlockError::Pcr(n))?;
            let list = entry
                .get("values")
                .and_then(serde_json::Value::as_array)
                .ok_or(PcrlockError::Member("pcrValues[].values"))?;
            if list.is_empty() || list.len() > MAX_VARIANTS {
                return Err(PcrlockError::Variants {
                    pcr: pcr.get(),
                    count: list.len(),
                });
            }
            let mut values: Vec<Digest> = Vec::with_capacity(list.len());
            for v in list.iter().map(|x| {
                let hex = x
                    .as_str()
                    .ok_or(PcrlockError::Member("pcrValues[].values[]"))?;
                Digest::from_hex(bank, hex).map_err(|source| PcrlockError::Value {
                    pcr: pcr.get(),
                    bank,
                    source,
                })
            }) {
                // systemd keeps the predictions in an ordered set: a repeat is dropped, and
                // the first occurrence keeps its place (and PolicyOR branch).
                let v = v?;
                if !values.contains(&v) {
                    values.push(v);
                }
            }
            if prediction.insert(pcr, values).is_some() {
                return Err(PcrlockError::Pcr(n));
            }
        }
        let nv_index = v
            .get("nvIndex")
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(PcrlockError::Member("nvIndex"))?;
        let nv_public = base64::engine::general_purpose::STANDARD
            .decode(
                v.get("nvPublic")
                    .and_then(serde_json::Value::as_str)
                    .ok_or(PcrlockError::Member("nvPublic"))?,
            )
            .map_err(PcrlockError::Base64)?;
        // TPM2B_NV_PUBLIC: a size, then TPMS_NV_PUBLIC starting with the index (Part 2 §13.6).
        let well_formed = nv_public.len() >= 2 + 14
            && usize::from(u16::from_be_bytes([nv_public[0], nv_public[1]])) == nv_public.len() - 2
            && nv_public[2..6] == nv_index.to_be_bytes();
        if !well_formed {
            return Err(PcrlockError::NvPublic(nv_index));
        }
        Ok(PcrlockPolicy {
            bank,
            prediction,
            nv_index,
            nv_public,
        })
    }

    /// Read and parse a policy file, refusing one larger than [`MAX_FILE_SIZE`].
    pub fn load(path: &std::path::Path) -> Result<Self, PcrlockError> {
        let bytes = crate::fsutil::read_bounded(path, MAX_FILE_SIZE).map_err(|source| {
            PcrlockError::Read {
                path: path.to_path_buf(),
                source,
            }
        })?;
        Self::from_json(&bytes)
    }

    /// The bank of the predicted values.
    pub fn bank(&self) -> HashAlg {
        self.bank
    }

    /// The predicted values of each protected PCR.
    pub fn prediction(&self) -> &BTreeMap<PcrIndex, Vec<Digest>> {
        &self.prediction
    }

    /// The NV index holding the policy digest.
    pub fn nv_index(&self) -> u32 {
        self.nv_index
    }

    /// The NV index's Name once written, as the TPM reports it and PolicyAuthorizeNV binds:
    /// `nameAlg || H(TPMS_NV_PUBLIC)` with TPMA_NV_WRITTEN set (pcrlock writes the index
    /// right after defining it; the file records the attributes from before).
    pub fn nv_name(&self) -> Vec<u8> {
        let mut area = self.nv_public[2..].to_vec();
        // TPMS_NV_PUBLIC: nvIndex (4), nameAlg (2), attributes (4).
        let attrs =
            u32::from_be_bytes([area[6], area[7], area[8], area[9]]) | policy::tpma_nv::WRITTEN;
        area[6..10].copy_from_slice(&attrs.to_be_bytes());
        policy::object_name(&area)
    }

    /// The super-PCR policy: its steps and the digest the NV index holds for it.
    pub fn super_pcr(&self) -> Result<SuperPcr, PcrlockError> {
        let single: Vec<(PcrIndex, Digest)> = self
            .prediction
            .iter()
            .filter(|(_, v)| v.len() == 1)
            .map(|(p, v)| (*p, v[0].clone()))
            .collect();
        let mut digest = policy::zero_policy();
        if !single.is_empty() {
            let sel = PcrSelection::new(self.bank, single.iter().map(|(p, _)| *p));
            let values: Vec<Digest> = single.iter().map(|(_, v)| v.clone()).collect();
            digest = policy::policy_pcr(&digest, &[sel], &values)?;
        }
        let mut or_steps = Vec::new();
        for (pcr, values) in self.prediction.iter().filter(|(_, v)| v.len() > 1) {
            let sel = [PcrSelection::new(self.bank, [*pcr])];
            let branches = values
                .iter()
                .map(|v| policy::policy_pcr(&digest, &sel, std::slice::from_ref(v)))
                .collect::<Result<Vec<_>, _>>()?;
            digest = policy::policy_or(&branches);
            or_steps.push(OrStep {
                pcr: *pcr,
                values: values.clone(),
                branches,
            });
        }
        Ok(SuperPcr {
            bank: self.bank,
            single,
            or_steps,
            digest,
        })
    }
}

/// The first policy file found at [`DEFAULT_PATHS`], if any.
pub fn default_policy() -> Result<Option<PcrlockPolicy>, PcrlockError> {
    for p in DEFAULT_PATHS {
        let p = std::path::Path::new(p);
        if p.exists() {
            return PcrlockPolicy::load(p).map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector() -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("test-vectors/pcrlock/policy-pcr12-pcr13.json"),
        )
        .unwrap()
    }

    /// The digest systemd-pcrlock 257 wrote into its NV index (`nv-0x01800c00.bin`, a
    /// TPMT_HA) for this policy: PCR 13 single, PCR 12 with two values.
    #[test]
    fn super_pcr_equals_systemd_pcrlock_nv_contents() {
        let p = PcrlockPolicy::from_json(&vector()).unwrap();
        assert_eq!(p.nv_index(), 0x0180_0c00);
        let s = p.super_pcr().unwrap();
        assert_eq!(s.single.len(), 1);
        assert_eq!(s.single[0].0.get(), 13);
        assert_eq!(s.or_steps.len(), 1);
        assert_eq!(s.or_steps[0].pcr.get(), 12);
        assert_eq!(s.or_steps[0].branches.len(), 2);
        let nv = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("test-vectors/pcrlock/nv-0x01800c00.bin"),
        )
        .unwrap();
        assert_eq!(&nv[..2], &HashAlg::Sha256.tpm_alg_id().to_be_bytes());
        assert_eq!(&nv[2..], s.digest.as_bytes());
        // Branch order is the file's order: swapping the values changes the digest.
        let mut swapped = p.clone();
        swapped
            .prediction
            .get_mut(&PcrIndex::new(12).unwrap())
            .unwrap()
            .reverse();
        assert_ne!(swapped.super_pcr().unwrap().digest, s.digest);
    }

    #[test]
    fn malformed_files_are_refused_by_name() {
        let good: serde_json::Value = serde_json::from_slice(&vector()).unwrap();
        let refuse = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            f(&mut v);
            PcrlockPolicy::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err()
        };
        assert!(matches!(
            refuse(&|v| v["pcrBank"] = "md5".into()),
            PcrlockError::Bank(_)
        ));
        assert!(matches!(
            refuse(&|v| v["pcrValues"][0]["pcr"] = 24.into()),
            PcrlockError::Pcr(24)
        ));
        assert!(matches!(
            refuse(&|v| v["pcrValues"][1]["pcr"] = 12.into()),
            PcrlockError::Pcr(12)
        ));
        assert!(matches!(
            refuse(&|v| v["pcrValues"][0]["values"][0] = "00".into()),
            PcrlockError::Value { pcr: 12, .. }
        ));
        assert!(matches!(
            refuse(&|v| v["pcrValues"][0]["values"] = serde_json::json!([])),
            PcrlockError::Variants { pcr: 12, count: 0 }
        ));
        let nine: Vec<String> = (0..9u8).map(|i| hex::encode([i; 32])).collect();
        assert!(matches!(
            refuse(&|v| v["pcrValues"][0]["values"] = serde_json::json!(nine)),
            PcrlockError::Variants { pcr: 12, count: 9 }
        ));
        assert!(matches!(
            refuse(&|v| v["nvIndex"] = 0x0180_0c01.into()),
            PcrlockError::NvPublic(0x0180_0c01)
        ));
        assert!(matches!(
            refuse(&|v| v["nvPublic"] = "AAA".into()),
            PcrlockError::Base64(_) | PcrlockError::NvPublic(_)
        ));
        assert!(matches!(
            refuse(&|v| {
                v.as_object_mut().unwrap().remove("nvIndex");
            }),
            PcrlockError::Member("nvIndex")
        ));
        assert!(matches!(
            PcrlockPolicy::from_json(b"[1"),
            Err(PcrlockError::Json(_))
        ));
    }
}
