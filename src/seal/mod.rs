//! Sealing a root-volume secret to a TPM policy: a 32-byte key-encryption key (KEK) sealed in
//! the TPM, and the secret (any size) in an AES-256-GCM envelope whose associated data binds
//! the envelope header.
//!
//! The policy follows systemd's order: [PolicyAuthorize(RSA key that signs PCR policies,
//! `.pcrsig`)] then [PolicyPCR over literal values] then [PolicyAuthValue for a PIN].
//!
//! Envelope file format (JSON, version 1; optional members omitted when unused):
//! ```json
//! { "format": "bootchain-sealed", "version": 1,
//!   "parent": { "kind": "srk|ecc-p256|rsa-2048|legacy-ecc|legacy-rsa|ek-rsa-2048|ek-ecc-p256", "name": "hex TPM Name" },
//!   "policy": { "digest": "hex", "bank": "sha256", "pcrs": [7, 11],
//!               "values": { "7": "hex", "11": "hex" },
//!               "authorize": { "public_key": "PEM", "key_name": "hex", "bank": "sha256",
//!                              "pcrs": [11] },
//!               "pin": { "salt": "base64 (32 bytes)" } },
//!   "tpm": { "private": "base64 TPM2B_PRIVATE buffer", "public": "base64 TPMT_PUBLIC" },
//!   "payload": { "alg": "A256GCM", "nonce": "base64 (12 bytes)", "ciphertext": "base64" } }
//! ```
//! AAD = `"bootchain-sealed/1\n" || policy digest hex || "\n" || bank ":" pcrs || "\n" || parent
//! Name hex || "\n"`, then `"authorize:" key Name hex ":" bank ":" pcrs "\n"` when signed, then
//! `"pin:" salt "\n"` with a PIN (pcrs joined by `+`).

pub mod pin;
pub mod plan;
pub mod tpm;

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::eventlog::PcrValues;
use crate::hash::{Digest, HashAlg};
use crate::measure::PcrSignatures;
use crate::policy::{self, PcrBinding, PcrIndex, PcrSelection};
use crate::tpm::{
    AuthorizeStep, ParentChoice, ParentKind, PolicySteps, SealedObject, SignedPolicy, Tpm,
    TpmError, UnsealError,
};

/// Envelope format name.
pub const FORMAT: &str = "bootchain-sealed";
/// Envelope version.
pub const VERSION: u32 = 1;

/// The PCR that bootchain seals to its boot value and extends once this boot has had its
/// chance to unseal ("locks" the boot): PCR 15, which firmware and systemd-stub never extend
/// (PCRs 8–15 belong to the OS, TCG PC Client PFP §3.3.4.1) and which systemd's
/// `tpm2-measure-pcr=` uses the same way. Sealed with value zero (PCRs 0–15 reset to zero),
/// an envelope or token unseals only before the first lock of a boot.
pub const LOCK_PCR: u32 = 15;

/// The event data extended into the lock PCRs (hashed per bank).
pub const LOCK_EVENT: &[u8] = b"bootchain-unseal: unlock attempt done, locked for this boot";

/// Add [`LOCK_PCR`] at its boot value (zero) to a literal PCR list, unless it is there; a
/// value the caller already has for it (say, from a prediction) is kept. Never read it from
/// the TPM: on a running system PCR 15 may already carry this boot's measurements.
pub fn add_lock_pcr(bank: HashAlg, pcrs: &mut Vec<u32>, values: &mut PcrValues) {
    if !pcrs.contains(&LOCK_PCR) {
        pcrs.push(LOCK_PCR);
    }
    values
        .entry((bank, LOCK_PCR))
        .or_insert_with(|| Digest::zero(bank));
}

/// The PCRs to extend after an unlock attempt so that nothing later in this boot can unseal
/// again: [`LOCK_PCR`] and PCR 11 (the UKI PCR that systemd-cryptenroll's signed policies
/// cover), after a success as after a failure. What the token that unsealed covers does not
/// decide it: the host writes the LUKS header, so it can put first a token of its own making
/// (imported to the SRK or EK, whose public areas are no secret) whose policy covers PCR 15,
/// and keep a copy of the real token — if the real one does not cover PCR 15 (a
/// systemd-cryptenroll token of PCRs 7+11, say), locking only PCR 15 would leave it
/// unsealable later in this boot. `policy_pcrs` (what the unsealed policy covers) is only
/// for the caller's warning that none of them was locked.
pub fn lock_pcrs(policy_pcrs: Option<&[u32]>) -> Vec<u32> {
    let _ = policy_pcrs;
    vec![crate::measure::PCR_KERNEL_BOOT, LOCK_PCR]
}

/// Extend `pcrs` with [`LOCK_EVENT`] in every allocated bank (see [`lock_pcrs`]).
pub fn lock(tpm: &mut Tpm, pcrs: &[u32]) -> Result<(), TpmError> {
    for p in pcrs {
        tpm.extend_event(*p, LOCK_EVENT)?;
    }
    Ok(())
}

/// Errors sealing or unsealing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The TPM failed.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// The object could not be wrapped for the given parent (offline sealing).
    #[error("cannot seal for that parent")]
    Import(#[from] crate::tpm_import::ImportError),
    /// The TPM refused for a reason other than PCRs.
    #[error(transparent)]
    Unseal(UnsealError),
    /// PCRs differ from the sealed values.
    #[error("unseal refused: PCRs changed since sealing: {}", describe_diffs(.0))]
    PcrMismatch(Vec<PcrDiff>),
    /// The literal PCR policy failed and the sealed values are not recorded (systemd tokens).
    #[error("unseal refused: the PCRs no longer have the values the secret was sealed to: now {}; the TPM computed policy {actual}, the secret needs {expected}", describe_current(.current))]
    PcrPolicyMismatch {
        /// The current values of the literal PCRs.
        current: Vec<(HashAlg, u32, Digest)>,
        /// The sealed policy.
        expected: String,
        /// The session's policy.
        actual: String,
    },
    /// No signature covers the current values of the signed PCRs.
    #[error("unseal refused: no PCR policy signature matches this boot: {} (policy {approved}); {signed} signature(s) for this key and PCR set were offered", describe_current(.current))]
    NotSigned {
        /// The current values of the signed PCRs.
        current: Vec<(HashAlg, u32, Digest)>,
        /// Their PolicyPCR digest, which nobody signed.
        approved: String,
        /// How many candidate signatures there were.
        signed: usize,
    },
    /// The secret is sealed to a signed policy but no signatures were given.
    #[error("this secret is sealed to a signed PCR policy: give the signatures (.pcrsig JSON, or the UKI that carries them)")]
    SignaturesRequired,
    /// The secret is sealed with a PIN but none was given.
    #[error("this secret is sealed with a PIN: give the PIN")]
    PinRequired,
    /// A value for a selected PCR is missing.
    #[error("no {bank} value given for PCR {pcr}")]
    MissingValue {
        /// Bank.
        bank: HashAlg,
        /// PCR.
        pcr: u32,
    },
    /// The envelope is malformed.
    #[error("malformed sealed envelope")]
    Envelope(#[source] EnvelopeError),
    /// A bad argument (an empty policy, a key that cannot sign PCR policies).
    #[error(transparent)]
    Request(#[from] RequestError),
    /// Decryption failed: the envelope or its sealed key was tampered with.
    #[error("the envelope does not decrypt: it was modified, or belongs to another sealed key")]
    Tampered,
    /// Policy computation failed.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// The PIN could not be derived.
    #[error(transparent)]
    Pin(#[from] crate::pin::PinError),
    /// The sealing policy could not be put together.
    #[error(transparent)]
    Plan(Box<plan::PlanError>),
    /// The envelope could not be turned into JSON.
    #[error("serializing the envelope")]
    Serialize(#[source] serde_json::Error),
    /// Writing an output file failed.
    #[error("writing {path}")]
    Output {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What is wrong with a sealed envelope ([`SealError::Envelope`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not JSON of the envelope's shape (or a binary member that does not decode).
    #[error(transparent)]
    Json(serde_json::Error),
    /// Another format, or a version this build does not read.
    #[error("format {format:?} version {version} is not {FORMAT} {VERSION}")]
    Version {
        /// The `format` member.
        format: String,
        /// The `version` member.
        version: u32,
    },
    /// A payload encryption other than AES-256-GCM.
    #[error("payload alg {0:?}")]
    PayloadAlg(String),
    /// `policy.digest` is of another algorithm.
    #[error("policy.digest is not a SHA-256 digest")]
    DigestNotSha256,
    /// `policy.pcrs` holds an index out of range.
    #[error("policy.pcrs")]
    Pcrs(#[source] policy::PcrIndexError),
    /// `policy.values` lacks a value of the bank for a selected PCR.
    #[error("policy.values has no {bank} value for PCR {pcr}")]
    Values {
        /// The bank.
        bank: HashAlg,
        /// The PCR.
        pcr: u32,
    },
    /// `policy.authorize.public_key` is not an RSA public key.
    #[error("policy.authorize.public_key")]
    AuthorizeKey(#[source] Box<crate::measure::MeasureError>),
    /// `policy.authorize.key_name` is not the Name of the key.
    #[error("policy.authorize.key_name does not match the public key")]
    KeyName,
    /// The recorded members do not give the recorded policy digest.
    #[error("policy members do not produce policy.digest")]
    PolicyDigest,
    /// The AES-GCM nonce has the wrong length.
    #[error("payload.nonce must be 12 bytes")]
    Nonce,
}

/// A request that cannot be sealed as asked ([`SealError::Request`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Neither literal PCRs nor a PCR public key.
    #[error("nothing to seal to: give PCRs, a PCR public key, or both")]
    NothingToSeal,
    /// A PCR public key without the PCRs its signatures cover.
    #[error("a PCR public key needs the PCRs its signatures cover")]
    NoSignedPcrs,
    /// A PCR index out of range.
    #[error(transparent)]
    PcrIndex(#[from] policy::PcrIndexError),
    /// The PCR public key cannot be encoded or fingerprinted.
    #[error(transparent)]
    PcrKey(Box<crate::measure::MeasureError>),
    /// A parent a systemd token cannot name.
    #[error("systemd tokens cannot record a {0} parent (use legacy-ecc, legacy-rsa or srk)")]
    SystemdParent(ParentKind),
    /// Offline sealing wraps for the given SRK; another parent was asked for.
    #[error(
        "offline sealing (--tpm2-device-key) seals for the given SRK; parent {0} cannot be used"
    )]
    OfflineParent(ParentKind),
    /// A systemd-tpm2 token names its parent by `tpm2_srk` only: an object sealed offline to
    /// an endorsement key goes in a bootchain envelope or token instead.
    #[error(
        "a systemd-tpm2 token cannot name an endorsement key as its parent (systemd unseals under the SRK); use a bootchain envelope or token (--token-type bootchain)"
    )]
    EndorsementKeyToken,
    /// The system random generator failed.
    #[error("system random generator")]
    Random(#[source] aes_gcm::aead::rand_core::Error),
}

/// A PCR whose current value differs from the sealed one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
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

fn describe_current(c: &[(HashAlg, u32, Digest)]) -> String {
    c.iter()
        .map(|(b, p, d)| format!("PCR {p} ({b}) is {d}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Binary envelope members as hex text (TPM Names).
mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let t = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        hex::decode(t.as_ref()).map_err(serde::de::Error::custom)
    }
}

/// Binary envelope members as standard, padded base64 text.
mod b64_bytes {
    use base64::Engine as _;
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::B64.encode(b))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let t = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
        super::B64
            .decode(t.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// The parent section. Every member is parsed when the envelope is read: an envelope that
/// deserializes has well-formed binary members.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ParentInfo {
    /// Which parent.
    pub kind: ParentKind,
    /// Its TPM Name (hex in JSON).
    #[serde(with = "hex_bytes")]
    pub name: Vec<u8>,
}

/// The signed-policy part: PolicyAuthorize by this key over PolicyPCR of `pcrs`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuthorizeInfo {
    /// The RSA public key, PEM (SubjectPublicKeyInfo).
    pub public_key: String,
    /// Its TPM Name (hex in JSON).
    #[serde(with = "hex_bytes")]
    pub key_name: Vec<u8>,
    /// Bank of the signed PolicyPCR.
    pub bank: HashAlg,
    /// PCRs of the signed PolicyPCR.
    pub pcrs: Vec<u32>,
}

/// The PIN part.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PinInfo {
    /// PBKDF2 salt (base64 in JSON).
    #[serde(with = "b64_bytes")]
    pub salt: Vec<u8>,
}

/// The policy section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PolicyInfo {
    /// Policy digest (SHA-256, hex in JSON).
    pub digest: Digest,
    /// PCR bank of the literal values.
    pub bank: HashAlg,
    /// PCRs bound to literal values (may be empty with a signed policy).
    pub pcrs: Vec<PcrIndex>,
    /// The values sealed to, by PCR (JSON: `{"7": "hex"}`); they and the key reproduce
    /// `digest`, which [`prepare_unseal`] checks.
    pub values: BTreeMap<PcrIndex, Digest>,
    /// Signed policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize: Option<AuthorizeInfo>,
    /// PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<PinInfo>,
}

/// The sealed TPM object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TpmBlob {
    /// TPM2B_PRIVATE buffer (base64 in JSON).
    #[serde(with = "b64_bytes")]
    pub private: Vec<u8>,
    /// TPMT_PUBLIC (base64 in JSON).
    #[serde(with = "b64_bytes")]
    pub public: Vec<u8>,
    /// For an object wrapped offline: the seed encrypted to the parent (base64 in JSON;
    /// absent otherwise). `private` is then the duplicate the TPM imports at unseal.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "b64_bytes")]
    pub seed: Vec<u8>,
}

/// The encrypted payload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PayloadInfo {
    /// "A256GCM".
    pub alg: String,
    /// Nonce (base64 in JSON).
    #[serde(with = "b64_bytes")]
    pub nonce: Vec<u8>,
    /// Ciphertext with tag (base64 in JSON).
    #[serde(with = "b64_bytes")]
    pub ciphertext: Vec<u8>,
}

/// A sealed envelope.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
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

fn join_pcrs(p: &[u32]) -> String {
    p.iter().map(u32::to_string).collect::<Vec<_>>().join("+")
}

impl Envelope {
    fn aad(&self) -> Vec<u8> {
        let mut s = format!(
            "{FORMAT}/{}\n{}\n{}:{}\n{}\n",
            self.version,
            self.policy.digest.to_hex(),
            self.policy.bank,
            join_pcrs(&u32s(&self.policy.pcrs)),
            hex::encode(&self.parent.name)
        );
        if let Some(a) = &self.policy.authorize {
            s.push_str(&format!(
                "authorize:{}:{}:{}\n",
                hex::encode(&a.key_name),
                a.bank,
                join_pcrs(&a.pcrs)
            ));
        }
        if let Some(p) = &self.policy.pin {
            s.push_str(&format!("pin:{}\n", B64.encode(&p.salt)));
        }
        s.into_bytes()
    }

    /// The envelope as the JSON [`Envelope::from_json`] reads (pretty-printed, as
    /// [`write_envelope`] writes it).
    pub fn to_json(&self) -> Result<String, SealError> {
        serde_json::to_string_pretty(self).map_err(SealError::Serialize)
    }

    /// Parse and check the header fields.
    pub fn from_json(text: &str) -> Result<Self, SealError> {
        let bad = |e| SealError::Envelope(EnvelopeError::Json(e));
        // Format and version first: a newer envelope is refused as such, not for a member
        // this version cannot read.
        #[derive(Deserialize)]
        struct Header {
            format: String,
            version: u32,
        }
        let h: Header = serde_json::from_str(text).map_err(bad)?;
        if h.format != FORMAT || h.version != VERSION {
            return Err(SealError::Envelope(EnvelopeError::Version {
                format: h.format,
                version: h.version,
            }));
        }
        let e: Envelope = serde_json::from_str(text).map_err(bad)?;
        if e.payload.alg != "A256GCM" {
            return Err(SealError::Envelope(EnvelopeError::PayloadAlg(
                e.payload.alg,
            )));
        }
        Ok(e)
    }

    /// Whether unsealing needs a PIN.
    pub fn needs_pin(&self) -> bool {
        self.policy.pin.is_some()
    }

    /// Whether unsealing needs `.pcrsig` signatures.
    pub fn needs_signatures(&self) -> bool {
        self.policy.authorize.is_some()
    }

    /// Every PCR the policy covers, literal or signed.
    pub fn policy_pcrs(&self) -> Vec<u32> {
        let mut v = u32s(&self.policy.pcrs);
        if let Some(a) = &self.policy.authorize {
            v.extend_from_slice(&a.pcrs);
        }
        sorted(&v)
    }
}

/// Write `env` to `out` as JSON and, if given, `secret` to its own file, both mode 0600, so
/// that both appear or neither does ([`crate::fsutil::commit_all`]): an envelope whose random
/// secret was lost, or a secret without its envelope, is worse than nothing.
pub fn write_envelope(
    env: &Envelope,
    out: &std::path::Path,
    secret: Option<(&std::path::Path, &[u8])>,
) -> Result<(), SealError> {
    use std::io::Write as _;
    let output = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| SealError::Output { path, source }
    };
    let json = env.to_json()?;
    let mut files = Vec::new();
    let mut f = crate::fsutil::AtomicFile::create(out, 0o600).map_err(output(out))?;
    f.file().write_all(json.as_bytes()).map_err(output(out))?;
    // The secret is committed first: if the envelope then fails, the secret is removed again.
    if let Some((path, data)) = secret {
        let mut s = crate::fsutil::AtomicFile::create(path, 0o600).map_err(output(path))?;
        s.file().write_all(data).map_err(output(path))?;
        files.push(s);
    }
    files.push(f);
    crate::fsutil::commit_all(files).map_err(|(path, source)| SealError::Output { path, source })
}

fn selection(bank: HashAlg, pcrs: &[u32]) -> Result<PcrSelection, policy::PcrIndexError> {
    let idx = pcrs
        .iter()
        .map(|p| PcrIndex::new(*p))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PcrSelection::new(bank, idx))
}

fn u32s(pcrs: &[PcrIndex]) -> Vec<u32> {
    pcrs.iter().map(|p| p.get()).collect()
}

fn sorted(pcrs: &[u32]) -> Vec<u32> {
    let mut v = pcrs.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

/// A signed-policy key (the `.pcrpkey`) and the PCRs its signatures cover.
#[derive(Clone, Debug)]
pub struct AuthorizeKey {
    /// The RSA public key.
    pub key: rsa::RsaPublicKey,
    /// Signed PCRs (systemd's default: 11).
    pub pcrs: Vec<u32>,
}

impl AuthorizeKey {
    fn public_area(&self) -> Result<Vec<u8>, SealError> {
        Ok(policy::rsa_public_area(&self.key)?)
    }
}

/// PCRs bound to literal values: one bank and each selected PCR with its value, taken in one
/// step from a set of values — so a request never names a PCR without its value, nor a value
/// of another bank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiteralPcrs {
    bank: HashAlg,
    values: BTreeMap<PcrIndex, Digest>,
}

impl LiteralPcrs {
    /// No literal PCRs (a signed policy alone), in `bank` (which the signed PCRs use).
    pub fn none(bank: HashAlg) -> Self {
        LiteralPcrs {
            bank,
            values: BTreeMap::new(),
        }
    }

    /// `pcrs` of `bank` with their values from `values` (from the TPM, a prediction, or a
    /// UKI); a missing value, a value of another length or an index past 23 is an error.
    pub fn select(bank: HashAlg, pcrs: &[u32], values: &PcrValues) -> Result<Self, SealError> {
        let mut out = BTreeMap::new();
        for &p in pcrs {
            let index = PcrIndex::new(p).map_err(RequestError::from)?;
            let v = values
                .get(&(bank, p))
                .ok_or(SealError::MissingValue { bank, pcr: p })?;
            if v.alg() != bank {
                return Err(SealError::MissingValue { bank, pcr: p });
            }
            out.insert(index, v.clone());
        }
        Ok(LiteralPcrs { bank, values: out })
    }

    /// The bank.
    pub fn bank(&self) -> HashAlg {
        self.bank
    }

    /// The PCRs, ascending.
    pub fn pcrs(&self) -> Vec<u32> {
        self.values.keys().map(|p| p.get()).collect()
    }

    /// Each PCR with its value, ascending.
    pub fn values(&self) -> impl Iterator<Item = (PcrIndex, &Digest)> {
        self.values.iter().map(|(p, d)| (*p, d))
    }

    /// Whether no PCR is bound literally.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// What to seal to. Its `Debug` shows whether a PIN is set, never the PIN.
#[derive(Clone)]
pub struct SealRequest<'a> {
    /// Parent key.
    pub parent: ParentChoice,
    /// PCRs bound to literal values, and the bank both they and the signed PCRs use.
    pub literal: LiteralPcrs,
    /// Signed policy.
    pub authorize: Option<&'a AuthorizeKey>,
    /// PIN.
    pub pin: Option<&'a [u8]>,
}

impl std::fmt::Debug for SealRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealRequest")
            .field("parent", &self.parent)
            .field("literal", &self.literal)
            .field("authorize", &self.authorize)
            .field("pin", &self.pin.map(|_| "<redacted>"))
            .finish()
    }
}

impl std::fmt::Debug for UnsealOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsealOptions")
            .field("signatures", &self.signatures.map(|s| s.len()))
            .field("pin", &self.pin.map(|_| "<redacted>"))
            .field("pcrlock", &self.pcrlock.map(|p| p.nv_index()))
            .finish()
    }
}

/// A sealing policy computed in software, with what an envelope or token records of it.
#[derive(Clone, Debug)]
pub struct ComputedPolicy {
    /// The policy digest (systemd's order: PolicyAuthorize, PolicyPCR, PolicyAuthValue).
    pub digest: Digest,
    /// The literal PCRs, ascending.
    pub literal: Vec<u32>,
    /// Their values.
    pub values: Vec<Digest>,
    /// The signed-policy part.
    pub authorize: Option<AuthorizeInfo>,
}

/// Compute the sealing policy for `literal` PCRs, an optional signed policy key, and an
/// optional PIN.
pub fn compute_policy(
    literal: &LiteralPcrs,
    authorize: Option<&AuthorizeKey>,
    pin: bool,
) -> Result<ComputedPolicy, SealError> {
    let req = SealRequest {
        parent: ParentChoice::Auto,
        literal: literal.clone(),
        authorize,
        pin: pin.then_some(&[][..]),
    };
    compute(&req)
}

fn compute(req: &SealRequest<'_>) -> Result<ComputedPolicy, SealError> {
    let bank = req.literal.bank();
    if req.literal.is_empty() && req.authorize.is_none() {
        return Err(RequestError::NothingToSeal.into());
    }
    let literal = req.literal.pcrs();
    let values: Vec<Digest> = req.literal.values().map(|(_, d)| d.clone()).collect();
    let binding = PcrBinding {
        selection: PcrSelection::new(bank, req.literal.values().map(|(p, _)| p)),
        values: values.clone(),
    };
    let authorize = match req.authorize {
        Some(k) => {
            let signed = sorted(&k.pcrs);
            if signed.is_empty() {
                return Err(RequestError::NoSignedPcrs.into());
            }
            selection(bank, &signed).map_err(RequestError::from)?;
            let name = policy::object_name(&k.public_area()?);
            Some(AuthorizeInfo {
                public_key: crate::measure::public_key_pem(&k.key)
                    .map_err(|e| RequestError::PcrKey(Box::new(e)))?,
                key_name: name,
                bank,
                pcrs: signed,
            })
        }
        None => None,
    };
    let name = authorize.as_ref().map(|a| a.key_name.clone());
    let digest = policy::sealing_policy(name.as_deref(), Some(&binding), req.pin.is_some())?;
    Ok(ComputedPolicy {
        digest,
        literal,
        values,
        authorize,
    })
}

/// Seal `secret` as `req` says.
///
/// ```no_run
/// use bootchain::hash::HashAlg;
/// use bootchain::seal::plan::SealPlan;
/// use bootchain::tpm::{ParentChoice, Tpm};
/// let plan = SealPlan::new(HashAlg::Sha256)
///     .literal_pcrs(&[7])?
///     .values_from_json("predicted.json".as_ref())?;
/// let mut tpm = Tpm::open("device:/dev/tpmrm0")?;
/// let env = bootchain::seal::seal(&mut tpm, &plan.request(ParentChoice::Auto)?, b"key")?;
/// let back = bootchain::seal::unseal(&mut tpm, &env, &Default::default())?;
/// assert_eq!(&back[..], b"key");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn seal(tpm: &mut Tpm, req: &SealRequest<'_>, secret: &[u8]) -> Result<Envelope, SealError> {
    seal_by(&mut Sealer::Tpm(tpm), req, secret)
}

/// Who makes the sealed object: this machine's TPM, or software for a TPM known only by its
/// storage parent's public area (offline sealing, [`crate::tpm_import`]).
pub enum Sealer<'a> {
    /// The TPM at hand.
    Tpm(&'a mut Tpm),
    /// A TPM elsewhere: the object is wrapped for its SRK and imported there at unseal.
    Offline(&'a crate::tpm_import::ParentPublic),
}

impl Sealer<'_> {
    /// Seal `secret` under `policy` (with the PIN's `auth` value). Offline, the parent is
    /// always the given SRK.
    pub fn seal_object(
        &mut self,
        parent: ParentChoice,
        policy: &Digest,
        secret: &[u8],
        auth: Option<&[u8]>,
    ) -> Result<SealedObject, SealError> {
        match self {
            Sealer::Tpm(tpm) => Ok(tpm.seal(parent, policy, secret, auth)?),
            Sealer::Offline(p) => {
                let blob = crate::tpm_import::seal_for_import(p, policy, secret, auth)?;
                let kind = match (p.is_endorsement_key(), p.is_ecc()) {
                    (false, _) => ParentKind::Srk,
                    (true, true) => ParentKind::EkEcc,
                    (true, false) => ParentKind::EkRsa,
                };
                Ok(SealedObject::from_import_blob(blob, p, kind))
            }
        }
    }

    /// The SRK as systemd's `tpm2_srk` records it (an ESYS_TR serialization, handle
    /// [`crate::tpm::SRK_HANDLE`]).
    pub fn serialize_srk(&mut self) -> Result<Vec<u8>, SealError> {
        match self {
            Sealer::Tpm(tpm) => Ok(tpm.serialize_srk()?),
            Sealer::Offline(p) => Ok(crate::tpm::esys_tr_serialization(
                crate::tpm::SRK_HANDLE,
                p.name(),
                p.tpmt_public(),
            )?),
        }
    }
}

/// Seal `secret` as `req` says, with `sealer`.
pub fn seal_by(
    sealer: &mut Sealer<'_>,
    req: &SealRequest<'_>,
    secret: &[u8],
) -> Result<Envelope, SealError> {
    let parent = req.parent;
    seal_with(req, secret, |digest, kek, auth| {
        sealer.seal_object(parent, digest, kek, auth)
    })
}

/// Seal `secret` for a TPM this machine cannot reach, known only by its storage parent's
/// public area (`tpm srk-public`, `systemd-analyze srk`): no TPM is used here; the target TPM
/// imports the object at unseal (see [`crate::tpm_import`]). `req.parent` is not used: the
/// object belongs to `parent`, recorded as the SRK (the persistent one at
/// [`crate::tpm::SRK_HANDLE`], or the key its template gives).
///
/// ```no_run
/// use bootchain::hash::HashAlg;
/// use bootchain::seal::plan::SealPlan;
/// use bootchain::tpm::ParentChoice;
/// use bootchain::tpm_import::ParentPublic;
/// let srk = ParentPublic::from_tpm2b_public(&std::fs::read("srk.tpm2b_public")?)?;
/// let plan = SealPlan::new(HashAlg::Sha256)
///     .literal_pcrs(&[7])?
///     .values_from_json("predicted.json".as_ref())?;
/// let env = bootchain::seal::seal_offline(&plan.request(ParentChoice::Auto)?, &srk, b"key")?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn seal_offline(
    req: &SealRequest<'_>,
    parent: &crate::tpm_import::ParentPublic,
    secret: &[u8],
) -> Result<Envelope, SealError> {
    seal_by(&mut Sealer::Offline(parent), req, secret)
}

/// The common part of [`seal`] and [`seal_offline`]: the policy, the PIN's authValue, a fresh
/// key-encryption key sealed by `seal_kek`, and the payload encrypted under it.
fn seal_with(
    req: &SealRequest<'_>,
    secret: &[u8],
    seal_kek: impl FnOnce(&Digest, &[u8], Option<&[u8]>) -> Result<SealedObject, SealError>,
) -> Result<Envelope, SealError> {
    let c = compute(req)?;
    let (pin, auth) = match req.pin {
        Some(pin) => {
            let mut salt = [0u8; crate::pin::PIN_SALT_LEN];
            aes_gcm::aead::rand_core::RngCore::fill_bytes(&mut OsRng, &mut salt);
            let auth = crate::pin::pin_auth_value(pin, Some(&salt))?;
            (
                Some(PinInfo {
                    salt: salt.to_vec(),
                }),
                Some(auth),
            )
        }
        None => (None, None),
    };
    let kek = Aes256Gcm::generate_key(&mut OsRng);
    let kek = Zeroizing::new(kek.to_vec());
    let obj = seal_kek(&c.digest, &kek, auth.as_ref().map(|a| a.as_slice()))?;
    let mut env = Envelope {
        format: FORMAT.into(),
        version: VERSION,
        parent: ParentInfo {
            kind: obj.parent,
            name: obj.parent_name.clone(),
        },
        policy: PolicyInfo {
            digest: c.digest.clone(),
            bank: req.literal.bank(),
            pcrs: req.literal.values().map(|(p, _)| p).collect(),
            values: req.literal.values().map(|(p, d)| (p, d.clone())).collect(),
            authorize: c.authorize,
            pin,
        },
        tpm: TpmBlob {
            private: obj.private.clone(),
            public: obj.public.clone(),
            seed: obj.seed.clone().unwrap_or_default(),
        },
        payload: PayloadInfo {
            alg: "A256GCM".into(),
            nonce: Vec::new(),
            ciphertext: Vec::new(),
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
    env.payload.nonce = nonce.to_vec();
    env.payload.ciphertext = ct;
    Ok(env)
}

/// What unsealing may need besides the TPM. Its `Debug` never shows the PIN.
#[derive(Clone, Default)]
pub struct UnsealOptions<'a> {
    /// `.pcrsig` signatures, for envelopes sealed to a signed policy.
    pub signatures: Option<&'a PcrSignatures>,
    /// The PIN, for envelopes sealed with one.
    pub pin: Option<&'a [u8]>,
    /// systemd-pcrlock's policy file, for `systemd-tpm2` tokens bound to a pcrlock policy.
    pub pcrlock: Option<&'a crate::pcrlock::PcrlockPolicy>,
}

/// The signed-policy candidates of `sigs` for `key` over `pcrs` in `bank` (systemd's
/// `find_signature`: same PCR set and key fingerprint, no policy reference), with their epoch
/// binding when they have one. Entries with malformed members are skipped.
pub fn signature_candidates(
    sigs: &PcrSignatures,
    key: &rsa::RsaPublicKey,
    bank: HashAlg,
    pcrs: &[u32],
) -> Result<Vec<SignedPolicy>, SealError> {
    let fp = crate::measure::public_key_fingerprint(key)
        .map_err(|e| RequestError::PcrKey(Box::new(e)))?
        .to_hex();
    let want = sorted(pcrs);
    Ok(sigs
        .iter()
        .filter(|(b, _)| *b == bank)
        .flat_map(|(_, entries)| entries.iter())
        .filter(|e| {
            // Our PolicyAuthorize has an empty policyRef: an entry bound to a reference
            // (systemd-measure --policyref) cannot satisfy it.
            sorted(&e.pcrs) == want
                && e.pkfp
                    .as_deref()
                    .is_some_and(|p| p.eq_ignore_ascii_case(&fp))
                && e.policy_ref.as_deref().unwrap_or("").is_empty()
        })
        .filter_map(|e| {
            let pol = Digest::from_hex(HashAlg::Sha256, &e.pol).ok()?;
            let sig = B64.decode(e.sig.as_deref()?).ok()?;
            let nv = e.nv_epoch().ok()?;
            Some(SignedPolicy { pol, sig, nv })
        })
        .collect())
}

/// An envelope checked and decoded for [`unseal`]: everything short of the TPM. The recorded
/// PCR values and key reproduce the recorded policy digest, the PIN (if the policy has one) is
/// turned into the authValue, and the `.pcrsig` entries that match the key and PCRs are picked.
/// Every one of these checks runs on input the host may have written, before any TPM command.
pub struct PreparedUnseal {
    obj: SealedObject,
    expected: Digest,
    bank: HashAlg,
    literal: Vec<u32>,
    recorded: Vec<Digest>,
    authorize: Option<(Vec<u8>, HashAlg, Vec<u32>)>,
    candidates: Vec<SignedPolicy>,
    auth: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for PreparedUnseal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedUnseal")
            .field("expected", &self.expected)
            .field("bank", &self.bank)
            .field("literal", &self.literal)
            .field("signature_candidates", &self.candidates.len())
            .field("auth_value", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl PreparedUnseal {
    /// The policy digest the sealed object requires.
    pub fn policy_digest(&self) -> &Digest {
        &self.expected
    }

    /// The `.pcrsig` entries that may satisfy the signed policy (empty without one).
    pub fn signature_candidates(&self) -> usize {
        self.candidates.len()
    }

    fn steps(&self) -> PolicySteps<'_> {
        PolicySteps {
            authorize_nv: None,
            super_pcr: None,
            authorize: self
                .authorize
                .as_ref()
                .map(|(area, bank, pcrs)| AuthorizeStep {
                    public_area: area,
                    bank: *bank,
                    pcrs,
                    candidates: &self.candidates,
                }),
            pcrs: Some((self.bank, &self.literal)),
            auth_value: self.auth.as_ref().map(|a| a.as_slice()),
        }
    }
}

/// Check and decode `env` for unsealing with `opts`, without a TPM (see [`PreparedUnseal`]).
pub fn prepare_unseal(
    env: &Envelope,
    opts: &UnsealOptions<'_>,
) -> Result<PreparedUnseal, SealError> {
    let bad = SealError::Envelope;
    let obj = SealedObject {
        private: env.tpm.private.clone(),
        public: env.tpm.public.clone(),
        parent_name: env.parent.name.clone(),
        parent: env.parent.kind,
        seed: (!env.tpm.seed.is_empty()).then(|| env.tpm.seed.clone()),
    };
    if env.policy.digest.alg() != HashAlg::Sha256 {
        return Err(bad(EnvelopeError::DigestNotSha256));
    }
    let expected = env.policy.digest.clone();
    let sel = PcrSelection::new(env.policy.bank, env.policy.pcrs.iter().copied());
    let literal = u32s(&env.policy.pcrs);
    // The recorded values and key must produce the recorded policy (else the envelope was
    // edited).
    let recorded = env
        .policy
        .pcrs
        .iter()
        .map(|p| {
            env.policy
                .values
                .get(p)
                .filter(|d| d.alg() == env.policy.bank)
                .cloned()
                .ok_or(bad(EnvelopeError::Values {
                    bank: env.policy.bank,
                    pcr: p.get(),
                }))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let key = env
        .policy
        .authorize
        .as_ref()
        .map(|a| {
            crate::measure::rsa_public_key_from_pem(a.public_key.as_bytes())
                .map_err(|e| bad(EnvelopeError::AuthorizeKey(Box::new(e))))
        })
        .transpose()?;
    let key_area = key.as_ref().map(policy::rsa_public_area).transpose()?;
    let name = key_area.as_deref().map(policy::object_name);
    if let (Some(a), Some(n)) = (&env.policy.authorize, &name) {
        if *n != a.key_name {
            return Err(bad(EnvelopeError::KeyName));
        }
    }
    let binding = PcrBinding {
        selection: sel,
        values: recorded.clone(),
    };
    if policy::sealing_policy(name.as_deref(), Some(&binding), env.policy.pin.is_some())?
        != expected
    {
        return Err(bad(EnvelopeError::PolicyDigest));
    }
    let auth = match (&env.policy.pin, opts.pin) {
        (Some(p), Some(pin)) => Some(crate::pin::pin_auth_value(pin, Some(&p.salt))?),
        (Some(_), None) => return Err(SealError::PinRequired),
        (None, _) => None,
    };
    let candidates = match (&env.policy.authorize, &key) {
        (Some(a), Some(k)) => {
            let sigs = opts.signatures.ok_or(SealError::SignaturesRequired)?;
            signature_candidates(sigs, k, a.bank, &a.pcrs)?
        }
        _ => Vec::new(),
    };
    let authorize = match (&env.policy.authorize, key_area) {
        (Some(a), Some(area)) => Some((area, a.bank, a.pcrs.clone())),
        _ => None,
    };
    Ok(PreparedUnseal {
        obj,
        expected,
        bank: env.policy.bank,
        literal,
        recorded,
        authorize,
        candidates,
        auth,
    })
}

/// Unseal an envelope. When the TPM refuses, the error says why: each literal PCR that
/// differs (current vs sealed), the signed PCRs whose current values nobody signed, a wrong PIN
/// with the tries left, or a different TPM. The envelope is checked ([`prepare_unseal`]) before
/// the first TPM command.
pub fn unseal(
    tpm: &mut Tpm,
    env: &Envelope,
    opts: &UnsealOptions<'_>,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let p = prepare_unseal(env, opts)?;
    let kek = match tpm.unseal(&p.obj, Some(&p.obj.parent_name), &p.steps(), &p.expected) {
        Ok(k) => k,
        Err(UnsealError::PolicyMismatch { .. }) => {
            return Err(SealError::PcrMismatch(pcr_diffs(
                tpm,
                p.bank,
                &p.literal,
                &p.recorded,
            )?))
        }
        Err(UnsealError::NoSignature {
            bank,
            pcrs,
            approved,
        }) => return Err(not_signed(tpm, bank, &pcrs, approved, p.candidates.len())),
        Err(e) => return Err(SealError::Unseal(e)),
    };
    open_payload(env, &kek)
}

/// The current values of `pcrs`, for error messages.
pub(crate) fn current_values(
    tpm: &mut Tpm,
    bank: HashAlg,
    pcrs: &[u32],
) -> Result<Vec<(HashAlg, u32, Digest)>, SealError> {
    let want: Vec<(HashAlg, u32)> = pcrs.iter().map(|p| (bank, *p)).collect();
    let now = tpm.read_pcrs(&want)?;
    Ok(want
        .iter()
        .filter_map(|k| now.get(k).map(|d| (k.0, k.1, d.clone())))
        .collect())
}

/// [`SealError::NotSigned`] with the current values of the signed PCRs.
pub(crate) fn not_signed(
    tpm: &mut Tpm,
    bank: HashAlg,
    pcrs: &[u32],
    approved: String,
    offered: usize,
) -> SealError {
    match current_values(tpm, bank, pcrs) {
        Ok(current) => SealError::NotSigned {
            current,
            approved,
            signed: offered,
        },
        Err(e) => e,
    }
}

/// The literal PCRs whose current value differs from the recorded one.
fn pcr_diffs(
    tpm: &mut Tpm,
    bank: HashAlg,
    pcrs: &[u32],
    recorded: &[Digest],
) -> Result<Vec<PcrDiff>, SealError> {
    let want: Vec<(HashAlg, u32)> = pcrs.iter().map(|p| (bank, *p)).collect();
    let now = tpm.read_pcrs(&want)?;
    Ok(want
        .iter()
        .zip(recorded)
        .filter_map(|(k, exp)| {
            let cur = now.get(k)?;
            (cur != exp).then(|| PcrDiff {
                bank: k.0,
                pcr: k.1,
                current: cur.clone(),
                expected: exp.clone(),
            })
        })
        .collect())
}

fn open_payload(env: &Envelope, kek: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let cipher = Aes256Gcm::new_from_slice(kek).map_err(|_| SealError::Tampered)?;
    let nonce: [u8; 12] = env
        .payload
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| SealError::Envelope(EnvelopeError::Nonce))?;
    let ct = &env.payload.ciphertext;
    let aad = env.aad();
    let pt = cipher
        .decrypt(&aes_gcm::Nonce::from(nonce), Payload { msg: ct, aad: &aad })
        .map_err(|_| SealError::Tampered)?;
    Ok(Zeroizing::new(pt))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcr(i: u32) -> PcrIndex {
        PcrIndex::new(i).unwrap()
    }

    fn sample() -> Envelope {
        Envelope {
            format: FORMAT.into(),
            version: VERSION,
            parent: ParentInfo {
                kind: ParentKind::EccP256,
                name: vec![0, 0x0b],
            },
            policy: PolicyInfo {
                digest: Digest::zero(HashAlg::Sha256),
                bank: HashAlg::Sha256,
                pcrs: vec![pcr(7)],
                values: [(pcr(7), Digest::zero(HashAlg::Sha256))]
                    .into_iter()
                    .collect(),
                authorize: None,
                pin: Some(PinInfo {
                    salt: vec![1u8; 32],
                }),
            },
            tpm: TpmBlob {
                private: vec![1, 2],
                public: vec![3, 4],
                seed: Vec::new(),
            },
            payload: PayloadInfo {
                alg: "A256GCM".into(),
                nonce: vec![0u8; 12],
                ciphertext: vec![9u8; 20],
            },
        }
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let text = sample().to_json().unwrap();
        assert_eq!(Envelope::from_json(&text).unwrap(), sample());
        for n in 0..text.len() {
            assert!(
                matches!(Envelope::from_json(&text[..n]), Err(SealError::Envelope(_))),
                "{n}"
            );
        }
    }

    /// A request's literal PCRs come with their values, of its bank, or not at all.
    #[test]
    fn literal_pcrs_are_consistent_or_refused() {
        let mut values = PcrValues::new();
        values.insert((HashAlg::Sha256, 7), HashAlg::Sha256.digest(b"seven"));
        values.insert((HashAlg::Sha256, 11), HashAlg::Sha1.digest(b"wrong bank"));
        let l = LiteralPcrs::select(HashAlg::Sha256, &[7, 7], &values).unwrap();
        assert_eq!(l.pcrs(), [7]);
        assert!(matches!(
            LiteralPcrs::select(HashAlg::Sha256, &[7, 9], &values),
            Err(SealError::MissingValue { pcr: 9, .. })
        ));
        assert!(LiteralPcrs::select(HashAlg::Sha256, &[11], &values).is_err());
        assert!(LiteralPcrs::select(HashAlg::Sha256, &[24], &values).is_err());
        assert!(LiteralPcrs::none(HashAlg::Sha256).is_empty());
    }

    #[test]
    fn debug_never_shows_the_pin() {
        let req = SealRequest {
            parent: ParentChoice::Auto,
            literal: LiteralPcrs::none(HashAlg::Sha256),
            authorize: None,
            pin: Some(b"secret-pin-4711"),
        };
        let shown = format!("{req:?}");
        assert!(
            shown.contains("<redacted>") && !shown.contains("4711"),
            "{shown}"
        );
        let opts = UnsealOptions {
            signatures: None,
            pin: Some(b"secret-pin-4711"),
            pcrlock: None,
        };
        let shown = format!("{opts:?}");
        assert!(
            shown.contains("<redacted>") && !shown.contains("4711"),
            "{shown}"
        );
        let auth = [0x47u8, 0x11];
        let steps = PolicySteps {
            auth_value: Some(&auth),
            ..Default::default()
        };
        let shown = format!("{steps:?}");
        assert!(
            !shown.contains("71") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn aad_binds_every_header_member() {
        let base = sample().aad();
        let mut e = sample();
        e.policy.pin = None;
        assert_ne!(e.aad(), base);
        let mut e = sample();
        e.policy.pcrs = vec![pcr(7), pcr(11)];
        assert_ne!(e.aad(), base);
        let mut e = sample();
        e.parent.name = vec![0, 0x0c];
        assert_ne!(e.aad(), base);
        let mut e = sample();
        e.policy.authorize = Some(AuthorizeInfo {
            public_key: String::new(),
            key_name: vec![0],
            bank: HashAlg::Sha256,
            pcrs: vec![11],
        });
        assert_ne!(e.aad(), base);
    }
}
