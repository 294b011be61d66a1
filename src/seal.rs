//! Sealing a root-volume secret to PCR values: a 32-byte key-encryption key (KEK) sealed in
//! the TPM under a PolicyPCR policy, and the secret (any size) in an AES-256-GCM envelope whose
//! associated data binds the envelope header (format version, policy digest, PCR selection,
//! parent Name).
//!
//! Envelope file format (JSON, version 1):
//! ```json
//! { "format": "bootchain-sealed", "version": 1,
//!   "parent": { "kind": "srk|ecc-p256", "name": "hex TPM Name" },
//!   "policy": { "digest": "hex", "bank": "sha256", "pcrs": [7, 11],
//!               "values": { "7": "hex", "11": "hex" } },
//!   "tpm": { "private": "base64 TPM2B_PRIVATE buffer", "public": "base64 TPMT_PUBLIC" },
//!   "payload": { "alg": "A256GCM", "nonce": "base64 (12 bytes)", "ciphertext": "base64" } }
//! ```
//! AAD = `"bootchain-sealed/1\n" || policy digest hex || "\n" || bank ":" pcrs || "\n" || parent
//! Name hex || "\n"`.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::eventlog::PcrValues;
use crate::hash::{Digest, HashAlg};
use crate::policy::{self, PcrIndex, PcrSelection};
use crate::tpm::{SealedObject, Tpm, TpmError, UnsealError};

/// Envelope format name.
pub const FORMAT: &str = "bootchain-sealed";
/// Envelope version.
pub const VERSION: u32 = 1;

/// Errors sealing or unsealing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The TPM failed.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// The TPM refused for a reason other than PCRs.
    #[error(transparent)]
    Unseal(UnsealError),
    /// PCRs differ from the sealed values.
    #[error("unseal refused: PCRs changed since sealing: {}", describe_diffs(.0))]
    PcrMismatch(Vec<PcrDiff>),
    /// A value for a selected PCR is missing.
    #[error("no {bank} value given for PCR {pcr}")]
    MissingValue {
        /// Bank.
        bank: HashAlg,
        /// PCR.
        pcr: u32,
    },
    /// The envelope is malformed.
    #[error("malformed sealed envelope: {0}")]
    Envelope(String),
    /// Decryption failed: the envelope or its sealed key was tampered with.
    #[error("the envelope does not decrypt: it was modified, or belongs to another sealed key")]
    Tampered,
    /// Policy computation failed.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
}

/// A PCR whose current value differs from the sealed one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PcrDiff {
    /// Bank.
    pub bank: HashAlg,
    /// PCR.
    pub pcr: u32,
    /// Now.
    pub current: Digest,
    /// Sealed.
    pub expected: Digest,
}

fn describe_diffs(d: &[PcrDiff]) -> String {
    d.iter()
        .map(|x| {
            format!(
                "PCR {} ({}) is {} but the secret was sealed to {}",
                x.pcr, x.bank, x.current, x.expected
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The parent section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParentInfo {
    /// Which parent.
    pub kind: String,
    /// Its TPM Name, hex.
    pub name: String,
}

/// The policy section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyInfo {
    /// Policy digest, hex.
    pub digest: String,
    /// PCR bank.
    pub bank: HashAlg,
    /// PCRs.
    pub pcrs: Vec<u32>,
    /// The values sealed to (for diagnosis).
    pub values: BTreeMap<String, String>,
}

/// The sealed TPM object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TpmBlob {
    /// TPM2B_PRIVATE buffer, base64.
    pub private: String,
    /// TPMT_PUBLIC, base64.
    pub public: String,
}

/// The encrypted payload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PayloadInfo {
    /// "A256GCM".
    pub alg: String,
    /// Nonce, base64.
    pub nonce: String,
    /// Ciphertext with tag, base64.
    pub ciphertext: String,
}

/// A sealed envelope.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Envelope {
    /// "bootchain-sealed".
    pub format: String,
    /// 1.
    pub version: u32,
    /// Parent.
    pub parent: ParentInfo,
    /// Policy.
    pub policy: PolicyInfo,
    /// TPM object.
    pub tpm: TpmBlob,
    /// Payload.
    pub payload: PayloadInfo,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl Envelope {
    fn aad(&self) -> Vec<u8> {
        let pcrs: Vec<String> = self.policy.pcrs.iter().map(u32::to_string).collect();
        format!(
            "{FORMAT}/{}\n{}\n{}:{}\n{}\n",
            self.version,
            self.policy.digest,
            self.policy.bank,
            pcrs.join("+"),
            self.parent.name
        )
        .into_bytes()
    }

    /// Parse and check the header fields.
    pub fn from_json(text: &str) -> Result<Self, SealError> {
        let e: Envelope =
            serde_json::from_str(text).map_err(|e| SealError::Envelope(e.to_string()))?;
        if e.format != FORMAT || e.version != VERSION {
            return Err(SealError::Envelope(format!(
                "format {:?} version {} is not {FORMAT} {VERSION}",
                e.format, e.version
            )));
        }
        if e.payload.alg != "A256GCM" {
            return Err(SealError::Envelope(format!(
                "payload alg {:?}",
                e.payload.alg
            )));
        }
        Ok(e)
    }

    fn selection(&self) -> Result<PcrSelection, SealError> {
        let pcrs = self
            .policy
            .pcrs
            .iter()
            .map(|p| PcrIndex::new(*p).map_err(|e| SealError::Envelope(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PcrSelection::new(self.policy.bank, pcrs))
    }
}

/// Seal `secret` to `values` of `pcrs` in `bank`.
pub fn seal(
    tpm: &mut Tpm,
    bank: HashAlg,
    pcrs: &[u32],
    values: &PcrValues,
    secret: &[u8],
) -> Result<Envelope, SealError> {
    let mut sorted: Vec<u32> = pcrs.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let sel = PcrSelection::new(
        bank,
        sorted
            .iter()
            .map(|p| PcrIndex::new(*p).map_err(|e| SealError::Envelope(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?,
    );
    let vals = sorted
        .iter()
        .map(|p| {
            values
                .get(&(bank, *p))
                .cloned()
                .ok_or(SealError::MissingValue { bank, pcr: *p })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let digest = policy::policy_pcr(&policy::zero_policy(), &[sel], &vals)?;
    let kek = Aes256Gcm::generate_key(&mut OsRng);
    let kek = Zeroizing::new(kek.to_vec());
    let obj = tpm.seal(&digest, &kek)?;
    let mut env = Envelope {
        format: FORMAT.into(),
        version: VERSION,
        parent: ParentInfo {
            kind: obj.parent.clone(),
            name: hex::encode(&obj.parent_name),
        },
        policy: PolicyInfo {
            digest: digest.to_hex(),
            bank,
            pcrs: sorted.clone(),
            values: sorted
                .iter()
                .zip(&vals)
                .map(|(p, v)| (p.to_string(), v.to_hex()))
                .collect(),
        },
        tpm: TpmBlob {
            private: B64.encode(&obj.private),
            public: B64.encode(&obj.public),
        },
        payload: PayloadInfo {
            alg: "A256GCM".into(),
            nonce: String::new(),
            ciphertext: String::new(),
        },
    };
    let cipher = Aes256Gcm::new_from_slice(&kek).map_err(|_| SealError::Tampered)?;
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let aad = env.aad();
    let ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: secret,
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Tampered)?;
    env.payload.nonce = B64.encode(nonce);
    env.payload.ciphertext = B64.encode(ct);
    Ok(env)
}

/// Unseal an envelope. When the PCRs no longer match, the error lists each PCR that differs,
/// with its current and sealed value.
pub fn unseal(tpm: &mut Tpm, env: &Envelope) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let bad = |m: &str| SealError::Envelope(m.to_string());
    let obj = SealedObject {
        private: B64
            .decode(&env.tpm.private)
            .map_err(|_| bad("tpm.private"))?,
        public: B64.decode(&env.tpm.public).map_err(|_| bad("tpm.public"))?,
        parent_name: hex::decode(&env.parent.name).map_err(|_| bad("parent.name"))?,
        parent: env.parent.kind.clone(),
    };
    let expected =
        Digest::from_hex(HashAlg::Sha256, &env.policy.digest).map_err(|_| bad("policy.digest"))?;
    let sel = env.selection()?;
    // The recorded values must produce the recorded policy (else the envelope was edited).
    let recorded = sel
        .pcrs
        .iter()
        .map(|p| {
            env.policy
                .values
                .get(&p.get().to_string())
                .and_then(|h| Digest::from_hex(env.policy.bank, h).ok())
                .ok_or_else(|| bad("policy.values"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if policy::policy_pcr(
        &policy::zero_policy(),
        std::slice::from_ref(&sel),
        &recorded,
    )? != expected
    {
        return Err(bad("policy.values do not produce policy.digest"));
    }
    let pcrs: Vec<u32> = sel.pcrs.iter().map(|p| p.get()).collect();
    let kek = match tpm.unseal(&obj, env.policy.bank, &pcrs, &expected) {
        Ok(k) => k,
        Err(UnsealError::PolicyMismatch { .. }) => {
            let want: Vec<(HashAlg, u32)> = pcrs.iter().map(|p| (env.policy.bank, *p)).collect();
            let now = tpm.read_pcrs(&want)?;
            let diffs: Vec<PcrDiff> = want
                .iter()
                .zip(&recorded)
                .filter_map(|(k, exp)| {
                    let cur = now.get(k)?;
                    (cur != exp).then(|| PcrDiff {
                        bank: k.0,
                        pcr: k.1,
                        current: cur.clone(),
                        expected: exp.clone(),
                    })
                })
                .collect();
            return Err(SealError::PcrMismatch(diffs));
        }
        Err(e) => return Err(SealError::Unseal(e)),
    };
    let cipher = Aes256Gcm::new_from_slice(&kek).map_err(|_| SealError::Tampered)?;
    let nonce = B64
        .decode(&env.payload.nonce)
        .map_err(|_| bad("payload.nonce"))?;
    let nonce: [u8; 12] = nonce
        .try_into()
        .map_err(|_| bad("payload.nonce must be 12 bytes"))?;
    let ct = B64
        .decode(&env.payload.ciphertext)
        .map_err(|_| bad("payload.ciphertext"))?;
    let aad = env.aad();
    let pt = cipher
        .decrypt(
            &aes_gcm::Nonce::from(nonce),
            Payload {
                msg: &ct,
                aad: &aad,
            },
        )
        .map_err(|_| SealError::Tampered)?;
    Ok(Zeroizing::new(pt))
}
