//! The only module that talks to a TPM (through tss-esapi 7.7 and tpm2-tss 3.x).
//!
//! TCTI strings as tpm2-tss spells them: `device:/dev/tpmrm0` (the default),
//! `swtpm:host=127.0.0.1,port=2321`. tss-esapi 7.x silently ignores `path=` for swtpm, so use
//! host/port (tpm2-tss 3.x src/tss2-tcti/tcti-swtpm.c reads only `host` and `port`).
//! TCTIs other than `device:` need the feature `tcti-net` (on by default).

use std::str::FromStr;

use tss_esapi::abstraction::pcr as tss_pcr;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{DigestValues, PcrSelectionListBuilder, PcrSlot};
use tss_esapi::{Context, TctiNameConf};

use crate::eventlog::PcrValues;
use crate::hash::{Digest, HashAlg};

/// The `TSS2_LOG` value that silences tpm2-tss's own error printing. A program sets it
/// once at start, before any thread exists, unless the user set `TSS2_LOG`.
pub const QUIET_TSS_LOG: &str = "all+none";

/// Whether `TSS2_LOG` should be set to [`QUIET_TSS_LOG`] by a program's `main` (it is unset).
pub fn quiet_tss_log() -> bool {
    std::env::var_os("TSS2_LOG").is_none()
}

/// The TCTI used when none is given.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// Errors talking to the TPM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI string is not valid.
    #[error("invalid TCTI {tcti:?}")]
    Tcti {
        /// The string.
        tcti: String,
        /// Why.
        #[source]
        source: tss_esapi::Error,
    },
    /// A TCTI other than `device:` in a build without the feature `tcti-net`.
    #[error(
        "TCTI {tcti:?} is not supported by this build (only device:, feature tcti-net is off)"
    )]
    Unsupported {
        /// The string.
        tcti: String,
    },
    /// The device node of a `device:` TCTI does not exist.
    #[error("cannot open TPM via {tcti}: {path} does not exist")]
    NoDevice {
        /// The TCTI.
        tcti: String,
        /// The device node.
        path: String,
    },
    /// The TPM could not be reached.
    #[error("cannot open TPM via {tcti} (is the TPM present and the TCTI right?)")]
    Open {
        /// The TCTI.
        tcti: String,
        /// Why.
        #[source]
        source: tss_esapi::Error,
    },
    /// A TPM command failed; `code` is the response code, the source its meaning.
    #[error("TPM command {command} failed (response code {code:#x})")]
    Command {
        /// The command.
        command: &'static str,
        /// Response code.
        code: u32,
        /// The error from tss-esapi, with the decoded response code.
        #[source]
        source: tss_esapi::Error,
    },
    /// A TPM structure could not be built or converted (tss-esapi refused the values).
    #[error("TPM structure: {what}")]
    Structure {
        /// Which.
        what: &'static str,
        /// Why.
        #[source]
        source: tss_esapi::Error,
    },
    /// The TPM returned a digest of the wrong length for its bank (for PCR `pcr`; `u32::MAX`
    /// for a policy digest).
    #[error("the TPM returned a {bank} digest of the wrong length")]
    DigestLength {
        /// The bank.
        bank: HashAlg,
        /// The PCR.
        pcr: u32,
        /// The lengths.
        #[source]
        source: crate::hash::DigestLengthError,
    },
    /// A value from the TPM was not what we expected.
    #[error("unexpected TPM data: {0}")]
    Data(TpmDataError),
}

/// What the TPM returned or lacks ([`TpmError::Data`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TpmDataError {
    /// A PCR index above 23.
    #[error("PCR {0} out of range")]
    PcrOutOfRange(u32),
    /// PCR_Read returned no values for the bank.
    #[error("the TPM returned no {0} bank (is it allocated?)")]
    NoBank(HashAlg),
    /// PCR_Read returned no value for a selected PCR.
    #[error("no value for {bank} PCR {pcr}")]
    NoValue {
        /// The bank.
        bank: HashAlg,
        /// The PCR.
        pcr: u32,
    },
    /// GetCapability(ASSIGNED_PCR) answered with something else.
    #[error("GetCapability returned no PCR banks")]
    NoPcrBanks,
    /// A PCR allocated in no bank.
    #[error("PCR {0} is allocated in no bank")]
    Unallocated(u32),
    /// An unknown parent key name.
    #[error("unknown parent key kind {0:?}")]
    UnknownParent(String),
    /// The SRK is not created as a primary.
    #[error("the SRK is persistent")]
    SrkPersistent,
    /// The persistent key at the SRK handle is not a storage root key.
    #[error("the key at {SRK_HANDLE:#x} is not a storage root key (it must be fixedTPM, fixedParent, sensitiveDataOrigin, restricted, decrypt, not sign): refusing to seal under it")]
    NotStorageRootKey,
    /// No persistent key at the SRK handle.
    #[error("no storage key at persistent handle {SRK_HANDLE:#x}")]
    NoSrk,
    /// StartAuthSession returned no session.
    #[error("no session returned")]
    NoSession,
    /// The SRK's public area does not fit a TPM2B.
    #[error("the SRK's public area is too large ({0} bytes)")]
    TooLarge(usize),
    /// GetCapability(TPM_PROPERTIES) answered with something else.
    #[error("GetCapability returned no properties")]
    NoProperties,
    /// No NV index at this handle.
    #[error("the NV index {0:#010x} does not exist")]
    NoNvIndex(u32),
    /// The NV index exists but is not bootchain's epoch counter (another Name).
    #[error("the NV index {index:#010x} is not a bootchain epoch counter (Name {name}, expected {expected})")]
    NotEpochCounter {
        /// The index.
        index: u32,
        /// Its Name.
        name: String,
        /// The Name of bootchain's counter at that index.
        expected: String,
    },
    /// NV_Read returned other than 8 bytes for a counter.
    #[error("the NV counter read as {0} bytes, not 8")]
    NvSize(usize),
    /// A TPM property missing from GetCapability's answer.
    #[error("the TPM did not report {0:?}")]
    MissingProperty(tss_esapi::constants::PropertyTag),
}

/// A tss-esapi structure conversion failed.
fn structure(what: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |source| TpmError::Structure { what, source }
}

fn cmd_err(command: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |e| {
        use tss_esapi::constants::response_code::Tss2ResponseCode as R;
        let code = match e {
            tss_esapi::Error::Tss2Error(R::FormatZero(rc)) => rc.0,
            tss_esapi::Error::Tss2Error(R::FormatOne(rc)) => rc.0,
            _ => 0,
        };
        TpmError::Command {
            command,
            code,
            source: e,
        }
    }
}

fn hashing(alg: HashAlg) -> HashingAlgorithm {
    match alg {
        HashAlg::Sha1 => HashingAlgorithm::Sha1,
        HashAlg::Sha256 => HashingAlgorithm::Sha256,
        HashAlg::Sha384 => HashingAlgorithm::Sha384,
        HashAlg::Sha512 => HashingAlgorithm::Sha512,
    }
}

fn slot(pcr: u32) -> Result<PcrSlot, TpmError> {
    if pcr > 23 {
        return Err(TpmError::Data(TpmDataError::PcrOutOfRange(pcr)));
    }
    PcrSlot::try_from(1u32 << pcr).map_err(structure("conversion"))
}

/// The PCR slots and TPML_PCR_SELECTION for `pcrs` of one bank.
fn selection_list(
    bank: HashAlg,
    pcrs: &[u32],
) -> Result<(Vec<PcrSlot>, tss_esapi::structures::PcrSelectionList), TpmError> {
    let slots = pcrs
        .iter()
        .map(|p| slot(*p))
        .collect::<Result<Vec<_>, _>>()?;
    let sel = PcrSelectionListBuilder::new()
        .with_selection(hashing(bank), &slots)
        .build()
        .map_err(structure("conversion"))?;
    Ok((slots, sel))
}

/// An open TPM.
pub struct Tpm {
    ctx: Context,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tpm")
    }
}

/// Parse a TCTI string. `device[:PATH]` is parsed here: tss-esapi's `TctiNameConf::from_str`
/// compiles regular expressions, and the regex crate is about a third of an initramfs
/// binary that only ever opens `device:`.
fn tcti_conf(tcti: &str) -> Result<TctiNameConf, TpmError> {
    let (name, conf) = tcti.split_once(':').unwrap_or((tcti, ""));
    let parsed = match name {
        "device" => tss_esapi::tcti_ldr::DeviceConfig::from_str(conf).map(TctiNameConf::Device),
        #[cfg(feature = "tcti-net")]
        _ => TctiNameConf::from_str(tcti),
        #[cfg(not(feature = "tcti-net"))]
        _ => return Err(TpmError::Unsupported { tcti: tcti.into() }),
    };
    parsed.map_err(|source| TpmError::Tcti {
        tcti: tcti.into(),
        source,
    })
}

impl Tpm {
    /// Open a TPM. tpm2-tss prints ESYS errors on stderr for expected failures (a policy that
    /// does not match) unless `TSS2_LOG=all+none`; a library must not change the process
    /// environment (racy with threads), so programs set it at start ([`quiet_tss_log`]).
    ///
    /// ```no_run
    /// // A vTPM through the kernel's resource manager, or a swtpm for tests.
    /// let mut tpm = bootchain::tpm::Tpm::open("swtpm:host=127.0.0.1,port=2321")?;
    /// let pcrs = tpm.read_pcrs(&[(bootchain::hash::HashAlg::Sha256, 7)])?;
    /// # let _ = pcrs;
    /// # Ok::<(), bootchain::tpm::TpmError>(())
    /// ```
    pub fn open(tcti: &str) -> Result<Self, TpmError> {
        if let Some(dev) = tcti.strip_prefix("device:") {
            let path = if dev.is_empty() { "/dev/tpm0" } else { dev };
            if !std::path::Path::new(path).exists() {
                return Err(TpmError::NoDevice {
                    tcti: tcti.into(),
                    path: path.into(),
                });
            }
        }
        let conf = tcti_conf(tcti)?;
        let ctx = Context::new(conf).map_err(|source| TpmError::Open {
            tcti: tcti.into(),
            source,
        })?;
        Ok(Tpm { ctx })
    }

    /// The TCTI from `BOOTCHAIN_TCTI`, else [`DEFAULT_TCTI`].
    pub fn tcti_from_env() -> String {
        std::env::var("BOOTCHAIN_TCTI").unwrap_or_else(|_| DEFAULT_TCTI.to_string())
    }

    /// Read PCR values.
    pub fn read_pcrs(&mut self, which: &[(HashAlg, u32)]) -> Result<PcrValues, TpmError> {
        let mut out = PcrValues::new();
        for bank in HashAlg::ALL {
            let pcrs: Vec<u32> = which
                .iter()
                .filter(|(b, _)| *b == bank)
                .map(|(_, i)| *i)
                .collect();
            if pcrs.is_empty() {
                continue;
            }
            let (slots, sel) = selection_list(bank, &pcrs)?;
            let data = tss_pcr::read_all(&mut self.ctx, sel).map_err(cmd_err("PCR_Read"))?;
            let bank_data = data
                .pcr_bank(hashing(bank))
                .ok_or(TpmError::Data(TpmDataError::NoBank(bank)))?;
            for (p, s) in pcrs.iter().zip(&slots) {
                let d = bank_data
                    .get_digest(*s)
                    .ok_or(TpmError::Data(TpmDataError::NoValue { bank, pcr: *p }))?;
                let d = Digest::new(bank, d.value().to_vec()).map_err(|source| {
                    TpmError::DigestLength {
                        bank,
                        pcr: *p,
                        source,
                    }
                })?;
                out.insert((bank, *p), d);
            }
        }
        Ok(out)
    }

    /// The hash banks that have `pcr` allocated (TPM2_GetCapability(TPM_CAP_PCRS), TPM 2.0
    /// Part 2 §10.9.7 TPML_PCR_SELECTION).
    pub fn allocated_banks(&mut self, pcr: u32) -> Result<Vec<HashAlg>, TpmError> {
        use tss_esapi::constants::CapabilityType;
        use tss_esapi::structures::CapabilityData;
        let want = slot(pcr)?;
        let (data, _) = self
            .ctx
            .execute_without_session(|ctx| ctx.get_capability(CapabilityType::AssignedPcr, 0, 1))
            .map_err(cmd_err("GetCapability"))?;
        let CapabilityData::AssignedPcr(list) = data else {
            return Err(TpmError::Data(TpmDataError::NoPcrBanks));
        };
        Ok(list
            .get_selections()
            .iter()
            .filter(|s| s.is_selected(want))
            .filter_map(|s| {
                HashAlg::ALL
                    .into_iter()
                    .find(|a| hashing(*a) == s.hashing_algorithm())
            })
            .collect())
    }

    /// Extend `pcr` in every allocated bank with the hash of `data` (what TPM2_PCR_Event does,
    /// done as PCR_Extend because tss-esapi 7.7 has no PCR_Event).
    pub fn extend_event(&mut self, pcr: u32, data: &[u8]) -> Result<(), TpmError> {
        let banks = self.allocated_banks(pcr)?;
        if banks.is_empty() {
            return Err(TpmError::Data(TpmDataError::Unallocated(pcr)));
        }
        let digests: Vec<Digest> = banks.iter().map(|b| b.digest(data)).collect();
        self.extend(pcr, &digests)
    }

    /// Extend a PCR with digests (one per bank given).
    pub fn extend(&mut self, pcr: u32, digests: &[Digest]) -> Result<(), TpmError> {
        use tss_esapi::handles::PcrHandle;
        if pcr > 23 {
            return Err(TpmError::Data(TpmDataError::PcrOutOfRange(pcr)));
        }
        let handle = PcrHandle::try_from(tss_esapi::tss2_esys::ESYS_TR_PCR0 + pcr)
            .map_err(structure("conversion"))?;
        let mut vals = DigestValues::new();
        for d in digests {
            let v = tss_esapi::structures::Digest::try_from(d.as_bytes().to_vec())
                .map_err(structure("conversion"))?;
            vals.set(hashing(d.alg()), v);
        }
        self.ctx
            .execute_with_session(PASSWORD, |ctx| ctx.pcr_extend(handle, vals))
            .map_err(cmd_err("PCR_Extend"))
    }
}

/// The persistent handle of the Storage Root Key (TCG Provisioning Guidance, "Reserved
/// Handles"; systemd `TPM2_SRK_HANDLE`).
pub const SRK_HANDLE: u32 = 0x8100_0001;

/// The primary key a sealed object lives under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParentKind {
    /// The persistent SRK at [`SRK_HANDLE`].
    Srk,
    /// A transient primary from the TCG ECC P-256 storage template (with noDA).
    EccP256,
    /// A transient primary from the TCG RSA-2048 storage template (with noDA), for TPMs
    /// without ECC.
    Rsa2048,
    /// systemd's legacy transient ECC P-256 primary (the TCG template without noDA), which
    /// systemd 252 uses for every token and later versions for tokens without `tpm2_srk`.
    LegacyEcc,
    /// systemd's legacy transient RSA-2048 primary (without noDA).
    LegacyRsa,
    /// The endorsement key from the TCG RSA-2048 EK template (EK Credential Profile 2.x,
    /// Template L-1), for objects sealed offline to a vTPM known by its EK (as cloud
    /// attestation reports it). Only its policy, PolicySecret(TPM_RH_ENDORSEMENT), lets it
    /// import and load.
    EkRsa,
    /// The endorsement key from the TCG ECC P-256 EK template (Template L-2).
    EkEcc,
}

impl ParentKind {
    /// The name written to envelopes.
    pub fn as_str(self) -> &'static str {
        match self {
            ParentKind::Srk => "srk",
            ParentKind::EccP256 => "ecc-p256",
            ParentKind::Rsa2048 => "rsa-2048",
            ParentKind::LegacyEcc => "legacy-ecc",
            ParentKind::LegacyRsa => "legacy-rsa",
            ParentKind::EkRsa => "ek-rsa-2048",
            ParentKind::EkEcc => "ek-ecc-p256",
        }
    }
}

impl std::fmt::Display for ParentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// As its envelope name ([`ParentKind::as_str`]).
impl serde::Serialize for ParentKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ParentKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        t.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for ParentKind {
    type Err = TpmError;
    fn from_str(s: &str) -> Result<Self, TpmError> {
        Ok(match s {
            "srk" => ParentKind::Srk,
            "ecc-p256" => ParentKind::EccP256,
            "rsa-2048" => ParentKind::Rsa2048,
            "legacy-ecc" => ParentKind::LegacyEcc,
            "legacy-rsa" => ParentKind::LegacyRsa,
            "ek-rsa-2048" => ParentKind::EkRsa,
            "ek-ecc-p256" => ParentKind::EkEcc,
            _ => return Err(TpmError::Data(TpmDataError::UnknownParent(s.to_string()))),
        })
    }
}

/// Which parent to seal under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParentChoice {
    /// The SRK if one is persisted at [`SRK_HANDLE`], else a transient ECC P-256 primary,
    /// else (a TPM without ECC) RSA-2048.
    Auto,
    /// Exactly this kind.
    Kind(ParentKind),
}

/// A sealed object as the TPM returned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedObject {
    /// TPM2B_PRIVATE contents (the buffer, without its size prefix).
    pub private: Vec<u8>,
    /// TPMT_PUBLIC, marshalled.
    pub public: Vec<u8>,
    /// The Name of the parent it was created under.
    pub parent_name: Vec<u8>,
    /// The parent.
    pub parent: ParentKind,
    /// For an object wrapped offline ([`crate::tpm_import`]): TPM2B_ENCRYPTED_SECRET contents,
    /// the seed encrypted to the parent. `private` is then the duplicate, which the TPM must
    /// import (TPM2_Import) before it can load it.
    pub seed: Option<Vec<u8>>,
}

impl SealedObject {
    /// An object wrapped offline for `parent` (see [`crate::tpm_import::seal_for_import`]).
    pub fn from_import_blob(
        blob: crate::tpm_import::ImportBlob,
        parent: &crate::tpm_import::ParentPublic,
        kind: ParentKind,
    ) -> Self {
        SealedObject {
            private: blob.duplicate,
            public: blob.public,
            parent_name: parent.name().to_vec(),
            parent: kind,
            seed: Some(blob.seed),
        }
    }
}

/// The PolicyAuthorize step of a policy: an external RSA key signs PolicyPCR digests
/// (`.pcrsig` entries), so PCR values can change without resealing.
#[derive(Clone, Debug)]
pub struct AuthorizeStep<'a> {
    /// The key's TPMT_PUBLIC ([`crate::policy::rsa_public_area`]).
    pub public_area: &'a [u8],
    /// Bank of the signed PolicyPCR.
    pub bank: HashAlg,
    /// PCRs of the signed PolicyPCR.
    pub pcrs: &'a [u32],
    /// Candidate signed policies.
    pub candidates: &'a [SignedPolicy],
}

/// A `.pcrsig` entry as unsealing uses it: the approved policy, the RSASSA-SHA256 signature
/// over it, and the epoch it is bound to (if any: `pol` is then PolicyPCR ∧ PolicyNV).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPolicy {
    /// The approved policy digest.
    pub pol: Digest,
    /// The signature.
    pub sig: Vec<u8>,
    /// The epoch binding.
    pub nv: Option<crate::policy::NvEpoch>,
}

impl SignedPolicy {
    /// Whether this entry approves the session after PolicyPCR gave `pcr_policy`.
    fn approves(&self, pcr_policy: &Digest) -> bool {
        match &self.nv {
            None => self.pol == *pcr_policy,
            Some(nv) => self.pol == nv.extend(pcr_policy),
        }
    }
}

/// The policy to replay at unseal, in systemd's order. Its `Debug` never shows the authValue.
#[derive(Clone, Default)]
pub struct PolicySteps<'a> {
    /// PolicyAuthorizeNV over this NV index (handle, Name): systemd-pcrlock's policy.
    pub authorize_nv: Option<(u32, &'a [u8])>,
    /// The pcrlock predictions the NV index's policy is over (from `pcrlock.json`), replayed
    /// before PolicyAuthorizeNV. Without them only an index holding the zero policy matches.
    pub super_pcr: Option<&'a crate::pcrlock::SuperPcr>,
    /// PolicyAuthorize over a signed PolicyPCR.
    pub authorize: Option<AuthorizeStep<'a>>,
    /// PolicyPCR over literal values: bank and PCRs (empty: none).
    pub pcrs: Option<(HashAlg, &'a [u32])>,
    /// PolicyAuthValue with this authValue (the PIN, derived with [`crate::pin`]).
    pub auth_value: Option<&'a [u8]>,
}

impl std::fmt::Debug for PolicySteps<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicySteps")
            .field("authorize_nv", &self.authorize_nv)
            .field("super_pcr", &self.super_pcr)
            .field("authorize", &self.authorize)
            .field("pcrs", &self.pcrs)
            .field("auth_value", &self.auth_value.map(|_| "<redacted>"))
            .finish()
    }
}

/// Dictionary-attack state (TPM 2.0 Part 2 §6.13 TPM_PT_LOCKOUT_*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockoutStatus {
    /// Failures counted so far.
    pub counter: u32,
    /// Failures allowed before lockout.
    pub max_tries: u32,
    /// Seconds until one failure is forgiven.
    pub interval: u32,
}

impl LockoutStatus {
    /// Tries left before the TPM locks out.
    pub fn tries_left(&self) -> u32 {
        self.max_tries.saturating_sub(self.counter)
    }
}

/// Why an unseal was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnsealError {
    /// The parent key differs from the one the object was sealed under.
    #[error("this TPM's storage key (Name {actual}) is not the one the secret was sealed under (Name {expected}): a different TPM, or its owner hierarchy was cleared")]
    ParentMismatch {
        /// The recorded Name.
        expected: String,
        /// This TPM's Name.
        actual: String,
    },
    /// The TPM refused to load the object under this parent.
    #[error("the TPM refused to load the sealed object ({0}): it was sealed by a different TPM or under a different storage key, or the blob was modified")]
    WrongTpm(TpmError),
    /// The policy the TPM computed from the current PCRs is not the sealed one.
    #[error("the current PCR values do not satisfy the sealed policy (policy {actual}, sealed {expected})")]
    PolicyMismatch {
        /// The sealed policy digest.
        expected: String,
        /// The digest of the session.
        actual: String,
    },
    /// No signature covers the PolicyPCR digest of the current PCR values.
    #[error(
        "no signature covers the current {bank} PCR {pcrs:?} values (their policy is {approved})"
    )]
    NoSignature {
        /// Bank.
        bank: HashAlg,
        /// PCRs.
        pcrs: Vec<u32>,
        /// The PolicyPCR digest of the current values.
        approved: String,
    },
    /// The signed policies are bound to an NV index that does not exist.
    #[error("the policy NV index {index:#010x} does not exist: the sealed policy is bound to it (was it deleted, or is this another TPM? bootchain's epoch counter: `bootchain policy nv-define`; systemd-pcrlock's index: `systemd-pcrlock make-policy`, then re-enroll)")]
    NvIndexMissing {
        /// The index.
        index: u32,
    },
    /// The NV index exists but is not the one the signed policies are bound to.
    #[error("the policy NV index {index:#010x} was changed: its Name is {actual}, the sealed policy expects {expected} (deleted and redefined with other attributes)")]
    NvIndexChanged {
        /// The index.
        index: u32,
        /// The Name the signatures name.
        expected: String,
        /// The Name the TPM reports.
        actual: String,
    },
    /// Every signature for the current PCR values is for an epoch the counter has passed.
    #[error("the PCR policy signature is revoked: it is valid up to epoch {epoch}, but the policy NV index {index:#010x} counter is at {counter} (sign the policy for the current epoch)")]
    Revoked {
        /// The index.
        index: u32,
        /// The newest epoch signed for.
        epoch: u64,
        /// The counter.
        counter: u64,
    },
    /// systemd-pcrlock's NV index holds a policy over predicted PCR values, and no
    /// `pcrlock.json` with those predictions was given.
    #[error("the systemd-pcrlock policy in NV index {index:#010x} predicts PCR values: unlocking needs the pcrlock.json that `systemd-pcrlock make-policy` wrote, and none usable was given (the tools look in {})", crate::pcrlock::DEFAULT_PATHS.join(", "))]
    PcrlockPolicyFileNeeded {
        /// The index.
        index: u32,
        /// The TPM's refusal.
        #[source]
        source: TpmError,
    },
    /// The NV index holds another policy than the `pcrlock.json` given describes.
    #[error("the systemd-pcrlock policy in NV index {index:#010x} ({held}) is not the one pcrlock.json describes ({expected}): `systemd-pcrlock make-policy` ran again since this pcrlock.json was written (use the new one; a copy in an initramfs needs the initramfs rebuilt), or the file was altered")]
    PcrlockStale {
        /// The index.
        index: u32,
        /// The digest pcrlock.json gives.
        expected: String,
        /// The digest the index holds.
        held: String,
        /// The TPM's refusal, when PolicyAuthorizeNV was sent.
        #[source]
        source: Option<TpmError>,
    },
    /// A PCR holds a value the pcrlock policy does not predict.
    #[error("PCR {pcr} ({bank}) is {actual}, which is not among the {predicted} value(s) pcrlock.json predicts for it: this boot differs from every boot systemd-pcrlock locked")]
    PcrlockUnpredicted {
        /// The PCR.
        pcr: u32,
        /// The bank.
        bank: HashAlg,
        /// Its value.
        actual: String,
        /// How many values were predicted.
        predicted: usize,
    },
    /// The TPM rejected the signature (wrong key or corrupted signature).
    #[error("the TPM rejected the PCR policy signature: {0}")]
    SignatureRejected(TpmError),
    /// Wrong PIN.
    #[error("wrong PIN{}", match .tries_left { Some(n) => format!(": {n} tries left before the TPM locks out"), None => String::new() })]
    BadPin {
        /// Tries left before lockout, if the TPM said.
        tries_left: Option<u32>,
    },
    /// The TPM is in dictionary-attack lockout.
    #[error("the TPM is locked out after too many wrong PINs{}", match .interval { Some(s) => format!("; one try is restored every {s} s"), None => String::new() })]
    LockedOut {
        /// Seconds per forgiven failure.
        interval: Option<u32>,
    },
    /// Any other TPM failure.
    #[error(transparent)]
    Tpm(#[from] TpmError),
}

/// TPM 2.0 Part 2 §6.6.3 format-one error numbers (bits 0..5 when bit 7 is set).
/// The empty password authorization (TPM 2.0 Part 1 §19.8.4, TPM_RS_PW): no TPM round trip.
/// Used instead of an unsalted HMAC session (tss-esapi's `execute_with_nullauth_session`, a
/// StartAuthSession and a FlushContext per command) for commands whose parameters hold no
/// secret (CreatePrimary with an empty sensitive area, Load and Import of blobs that are
/// already wrapped, EvictControl, PCR_Extend); only the session that unseals is salted.
const PASSWORD: Option<tss_esapi::interface_types::session_handles::AuthSession> =
    Some(tss_esapi::interface_types::session_handles::AuthSession::Password);

const RC_FMT1: u32 = 0x080;
const RC_AUTH_FAIL: u32 = 0x00E;
const RC_POLICY_FAIL: u32 = 0x01D;
const RC_INTEGRITY: u32 = 0x01F;
/// TPM_RC_VALUE: e.g. an RSA-OAEP seed that does not decrypt under this key.
const RC_VALUE: u32 = 0x004;
/// TPM_RC_ECC_POINT: an ephemeral point that is not on the curve.
const RC_ECC_POINT: u32 = 0x027;
/// TPM_RC_HANDLE (RC_FMT1 + 0x00B): the handle is not loaded / does not exist.
const RC_HANDLE: u32 = 0x00B;
/// TPM_RC_POLICY (RC_VER1 + 0x026): PolicyNV's comparison failed.
const RC_POLICY: u32 = 0x126;
/// TPM_RC_LOCKOUT (RC_WARN + 0x021).
const RC_LOCKOUT: u32 = 0x921;
/// TPM_RC_PCR_CHANGED (RC_VER1 + 0x028): a PCR changed after PolicyPCR in this session.
const RC_PCR_CHANGED: u32 = 0x128;
/// How often an unseal is tried when PCRs keep changing under it.
const PCR_CHANGED_ATTEMPTS: u32 = 10;

fn fmt1(e: &TpmError) -> Option<u32> {
    match e {
        TpmError::Command { code, .. } if code & RC_FMT1 != 0 => Some(code & 0x3F),
        _ => None,
    }
}

fn command_code(e: &TpmError) -> Option<u32> {
    match e {
        TpmError::Command { code, .. } => Some(*code),
        _ => None,
    }
}

struct Parent {
    handle: tss_esapi::handles::KeyHandle,
    name: Vec<u8>,
    transient: bool,
    kind: ParentKind,
}

fn srk_attributes(no_da: bool) -> Result<tss_esapi::attributes::ObjectAttributes, TpmError> {
    tss_esapi::attributes::ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_decrypt(true)
        .with_no_da(no_da)
        .build()
        .map_err(structure("conversion"))
}

/// The endorsement key's attributes (EK Credential Profile 2.x, Templates L-1/L-2): usable
/// only through its policy.
fn ek_attributes() -> Result<tss_esapi::attributes::ObjectAttributes, TpmError> {
    tss_esapi::attributes::ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_admin_with_policy(true)
        .with_restricted(true)
        .with_decrypt(true)
        .build()
        .map_err(structure("conversion"))
}

/// The TCG storage key templates (EK Credential Profile L-1/L-2 shape, as systemd's
/// `tpm2_get_srk_template`; the legacy ones lack noDA, as `tpm2_get_legacy_template`).
fn primary_template(kind: ParentKind) -> Result<tss_esapi::structures::Public, TpmError> {
    use tss_esapi::interface_types::{
        algorithm::PublicAlgorithm, ecc::EccCurve, key_bits::RsaKeyBits,
    };
    use tss_esapi::structures::{
        EccPoint, PublicBuilder, PublicEccParametersBuilder, PublicKeyRsa,
        PublicRsaParametersBuilder, RsaExponent, SymmetricDefinitionObject,
    };
    let d = |e| structure("primary key template")(e);
    // Every template here is a restricted decryption key with AES-128-CFB: RSA 2048 (default
    // exponent) or ECC NIST P-256.
    let rsa_params = || {
        PublicRsaParametersBuilder::new_restricted_decryption_key(
            SymmetricDefinitionObject::AES_128_CFB,
            RsaKeyBits::Rsa2048,
            RsaExponent::default(),
        )
        .build()
        .map_err(d)
    };
    let ecc_params = || {
        PublicEccParametersBuilder::new_restricted_decryption_key(
            SymmetricDefinitionObject::AES_128_CFB,
            EccCurve::NistP256,
        )
        .build()
        .map_err(d)
    };
    let b = PublicBuilder::new().with_name_hashing_algorithm(HashingAlgorithm::Sha256);
    let public = match kind {
        ParentKind::EccP256 | ParentKind::LegacyEcc => {
            let params = ecc_params()?;
            b.with_public_algorithm(PublicAlgorithm::Ecc)
                .with_object_attributes(srk_attributes(kind == ParentKind::EccP256)?)
                .with_ecc_parameters(params)
                .with_ecc_unique_identifier(EccPoint::default())
                .build()
        }
        ParentKind::Rsa2048 | ParentKind::LegacyRsa => {
            let params = rsa_params()?;
            b.with_public_algorithm(PublicAlgorithm::Rsa)
                .with_object_attributes(srk_attributes(kind == ParentKind::Rsa2048)?)
                .with_rsa_parameters(params)
                .with_rsa_unique_identifier(PublicKeyRsa::default())
                .build()
        }
        ParentKind::EkRsa | ParentKind::EkEcc => {
            let policy = tss_esapi::structures::Digest::try_from(
                crate::tpm_import::EK_POLICY_SHA256.to_vec(),
            )
            .map_err(d)?;
            let b = b
                .with_object_attributes(ek_attributes()?)
                .with_auth_policy(policy);
            // The templates' unique fields are zeros of the key's size (L-1: 256 bytes; L-2:
            // 32 for x and y), unlike the SRK templates' empty ones.
            if kind == ParentKind::EkRsa {
                let params = rsa_params()?;
                b.with_public_algorithm(PublicAlgorithm::Rsa)
                    .with_rsa_parameters(params)
                    .with_rsa_unique_identifier(PublicKeyRsa::try_from(vec![0u8; 256]).map_err(d)?)
                    .build()
            } else {
                let params = ecc_params()?;
                let zero = || tss_esapi::structures::EccParameter::try_from(vec![0u8; 32]);
                b.with_public_algorithm(PublicAlgorithm::Ecc)
                    .with_ecc_parameters(params)
                    .with_ecc_unique_identifier(EccPoint::new(
                        zero().map_err(d)?,
                        zero().map_err(d)?,
                    ))
                    .build()
            }
        }
        ParentKind::Srk => return Err(TpmError::Data(TpmDataError::SrkPersistent)),
    };
    public.map_err(d)
}

/// An ESYS_TR serialization of a key (tpm2-tss `iesys_MU_IESYS_RESOURCE`): `u32 handle ||
/// TPM2B_NAME || u32 IESYSC_KEY_RSRC(1) || TPM2B_PUBLIC`, what systemd records as `tpm2_srk`
/// and `Esys_TR_Deserialize` reads.
pub fn esys_tr_serialization(
    handle: u32,
    name: &[u8],
    tpmt_public: &[u8],
) -> Result<Vec<u8>, TpmError> {
    let tpm2b = |v: &mut Vec<u8>, part: &[u8]| -> Result<(), TpmError> {
        let n = u16::try_from(part.len())
            .map_err(|_| TpmError::Data(TpmDataError::TooLarge(part.len())))?;
        v.extend_from_slice(&n.to_be_bytes());
        v.extend_from_slice(part);
        Ok(())
    };
    let mut v = handle.to_be_bytes().to_vec();
    tpm2b(&mut v, name)?;
    v.extend_from_slice(&1u32.to_be_bytes()); // IESYSC_KEY_RSRC
    tpm2b(&mut v, tpmt_public)?;
    Ok(v)
}

impl Tpm {
    /// An ESYS handle for the TPM entity `h` (its public area read with `command`), `None`
    /// when the TPM answers TPM_RC_HANDLE (Part 2 §6.6.3, 0x08B with its parameter bits):
    /// nothing there.
    fn tr_from_public(
        &mut self,
        h: tss_esapi::handles::TpmHandle,
        command: &'static str,
    ) -> Result<Option<tss_esapi::handles::ObjectHandle>, TpmError> {
        match self.ctx.tr_from_tpm_public(h) {
            Ok(o) => Ok(Some(o)),
            Err(e) => {
                let e = cmd_err(command)(e);
                match fmt1(&e) {
                    Some(RC_HANDLE) => Ok(None),
                    _ => Err(e),
                }
            }
        }
    }

    fn persistent_srk(&mut self) -> Result<Option<Parent>, TpmError> {
        use tss_esapi::handles::{KeyHandle, PersistentTpmHandle, TpmHandle};
        let h = PersistentTpmHandle::new(SRK_HANDLE).map_err(structure("conversion"))?;
        // Nothing persisted there is "no SRK"; any other failure is reported, not taken as
        // "no SRK" (which would silently switch parents).
        let Some(obj) = self.tr_from_public(TpmHandle::Persistent(h), "ReadPublic")? else {
            return Ok(None);
        };
        let name = self
            .ctx
            .tr_get_name(obj)
            .map_err(cmd_err("TR_GetName"))?
            .value()
            .to_vec();
        // Only a storage key we could have made ourselves: a restricted decryption key bound
        // to this TPM (TCG Provisioning Guidance, SRK template). Anything else at the SRK
        // handle (a signing key, a key with a known seed) must not protect our secrets.
        let (public, _, _) = self
            .ctx
            .read_public(KeyHandle::from(obj))
            .map_err(cmd_err("ReadPublic"))?;
        let a = public.object_attributes();
        let ok = a.fixed_tpm()
            && a.fixed_parent()
            && a.sensitive_data_origin()
            && a.restricted()
            && a.decrypt()
            && !a.sign_encrypt();
        if !ok {
            return Err(TpmError::Data(TpmDataError::NotStorageRootKey));
        }
        Ok(Some(Parent {
            handle: KeyHandle::from(obj),
            name,
            transient: false,
            kind: ParentKind::Srk,
        }))
    }

    fn create_primary(&mut self, kind: ParentKind) -> Result<Parent, TpmError> {
        use tss_esapi::interface_types::resource_handles::Hierarchy;
        let template = primary_template(kind)?;
        let r = self
            .ctx
            .execute_with_session(PASSWORD, |ctx| {
                let hierarchy = match kind {
                    ParentKind::EkRsa | ParentKind::EkEcc => Hierarchy::Endorsement,
                    _ => Hierarchy::Owner,
                };
                ctx.create_primary(hierarchy, template, None, None, None, None)
            })
            .map_err(cmd_err("CreatePrimary"))?;
        let name = self
            .ctx
            .tr_get_name(r.key_handle.into())
            .map_err(cmd_err("TR_GetName"));
        let name = match name {
            Ok(n) => n.value().to_vec(),
            Err(e) => {
                let _ = self.ctx.flush_context(r.key_handle.into());
                return Err(e);
            }
        };
        Ok(Parent {
            handle: r.key_handle,
            name,
            transient: true,
            kind,
        })
    }

    fn parent(&mut self, choice: ParentChoice) -> Result<Parent, TpmError> {
        match choice {
            ParentChoice::Kind(ParentKind::Srk) => self
                .persistent_srk()?
                .ok_or(TpmError::Data(TpmDataError::NoSrk)),
            ParentChoice::Kind(kind) => self.create_primary(kind),
            ParentChoice::Auto => {
                if let Some(p) = self.persistent_srk()? {
                    return Ok(p);
                }
                match self.create_primary(ParentKind::EccP256) {
                    Ok(p) => Ok(p),
                    // A TPM without ECC P-256 answers with a parameter/curve error; take RSA.
                    Err(e) if command_code(&e).is_some() => {
                        self.create_primary(ParentKind::Rsa2048).map_err(|_| e)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn release(&mut self, p: Parent) {
        if p.transient {
            let _ = self.ctx.flush_context(p.handle.into());
        }
    }

    /// Runs `f` (Import or Load under `parent`) with the parent's authorization: the empty
    /// password, or for an endorsement key a policy session that satisfies its
    /// PolicySecret(TPM_RH_ENDORSEMENT) with the (empty) endorsement hierarchy password.
    fn as_parent<T>(
        &mut self,
        parent: &Parent,
        f: impl FnOnce(&mut Context) -> tss_esapi::Result<T>,
    ) -> Result<T, tss_esapi::Error> {
        use tss_esapi::constants::SessionType;
        use tss_esapi::handles::AuthHandle;
        use tss_esapi::interface_types::session_handles::PolicySession;
        use tss_esapi::structures::SymmetricDefinition;
        if !matches!(parent.kind, ParentKind::EkRsa | ParentKind::EkEcc) {
            return self.ctx.execute_with_session(PASSWORD, f);
        }
        let s = self
            .ctx
            .start_auth_session(
                None,
                None,
                None,
                SessionType::Policy,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )?
            .ok_or(tss_esapi::Error::WrapperError(
                tss_esapi::WrapperErrorKind::WrongValueFromTpm,
            ))?;
        let r = PolicySession::try_from(s).and_then(|ps| {
            self.ctx.execute_with_session(PASSWORD, |ctx| {
                ctx.policy_secret(
                    ps,
                    AuthHandle::Endorsement,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    None,
                )
            })
        });
        let r = r.and_then(|_| self.ctx.execute_with_session(Some(s), f));
        self.flush_session(s);
        r
    }

    /// A session salted with the parent key, with parameter encryption both ways, so secrets
    /// never cross the TPM bus in clear.
    fn salted_session(
        &mut self,
        parent: &Parent,
        kind: tss_esapi::constants::SessionType,
    ) -> Result<tss_esapi::interface_types::session_handles::AuthSession, TpmError> {
        use tss_esapi::attributes::SessionAttributesBuilder;
        use tss_esapi::structures::SymmetricDefinition;
        let s = self
            .ctx
            .start_auth_session(
                Some(parent.handle),
                None,
                None,
                kind,
                SymmetricDefinition::AES_128_CFB,
                HashingAlgorithm::Sha256,
            )
            .map_err(cmd_err("StartAuthSession"))?
            .ok_or(TpmError::Data(TpmDataError::NoSession))?;
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_decrypt(true)
            .with_encrypt(true)
            .with_continue_session(true)
            .build();
        if let Err(e) = self.ctx.tr_sess_set_attributes(s, attrs, mask) {
            self.flush_session(s);
            return Err(cmd_err("TRSess_SetAttributes")(e));
        }
        Ok(s)
    }

    fn flush_session(&mut self, s: tss_esapi::interface_types::session_handles::AuthSession) {
        use tss_esapi::handles::SessionHandle;
        let h: SessionHandle = s.into();
        let _ = self.ctx.flush_context(h.into());
    }

    /// The persistent SRK as an ESYS_TR serialization (tpm2-tss `Esys_TR_Serialize`:
    /// `u32 handle || TPM2B_NAME || u32 IESYSC_KEY_RSRC || TPM2B_PUBLIC`), systemd's `tpm2_srk`.
    pub fn serialize_srk(&mut self) -> Result<Vec<u8>, TpmError> {
        use tss_esapi::traits::Marshall;
        let p = self
            .persistent_srk()?
            .ok_or(TpmError::Data(TpmDataError::NoSrk))?;
        let (public, name, _) = self
            .ctx
            .read_public(p.handle)
            .map_err(cmd_err("ReadPublic"))?;
        let public = public.marshall().map_err(structure("conversion"))?;
        esys_tr_serialization(SRK_HANDLE, name.value(), &public)
    }

    /// Persist a new SRK at [`SRK_HANDLE`] from the TCG ECC template, as systemd ≥ 254 and
    /// `tpm2_createprimary` + `tpm2_evictcontrol` provisioning do. Returns its Name.
    pub fn provision_srk(&mut self) -> Result<Vec<u8>, TpmError> {
        use tss_esapi::handles::PersistentTpmHandle;
        use tss_esapi::interface_types::{
            dynamic_handles::Persistent, resource_handles::Provision,
        };
        if let Some(p) = self.persistent_srk()? {
            return Ok(p.name);
        }
        let p = self.create_primary(ParentKind::EccP256)?;
        let h = PersistentTpmHandle::new(SRK_HANDLE).map_err(structure("conversion"))?;
        let r = self.ctx.execute_with_session(PASSWORD, |ctx| {
            ctx.evict_control(Provision::Owner, p.handle.into(), Persistent::Persistent(h))
        });
        let name = p.name.clone();
        self.release(p);
        r.map_err(cmd_err("EvictControl"))?;
        Ok(name)
    }

    /// Whether the lockout hierarchy has an authorization value (TPM_PT_PERMANENT bit 2,
    /// lockoutAuthSet, TPM 2.0 Part 2 §8.6). Without one, anyone can reset the
    /// dictionary-attack counter, so the lockout does not limit PIN guessing.
    pub fn lockout_auth_set(&mut self) -> Result<bool, TpmError> {
        use tss_esapi::constants::{CapabilityType, PropertyTag};
        use tss_esapi::structures::CapabilityData;
        let (data, _) = self
            .ctx
            .execute_without_session(|ctx| {
                ctx.get_capability(
                    CapabilityType::TpmProperties,
                    u32::from(PropertyTag::Permanent),
                    1,
                )
            })
            .map_err(cmd_err("GetCapability"))?;
        let CapabilityData::TpmProperties(props) = data else {
            return Err(TpmError::Data(TpmDataError::NoProperties));
        };
        props
            .iter()
            .find(|p| p.property() == PropertyTag::Permanent)
            .map(|p| p.value() & (1 << 2) != 0)
            .ok_or(TpmError::Data(TpmDataError::MissingProperty(
                PropertyTag::Permanent,
            )))
    }

    /// The dictionary-attack counters. Read with GetCapability each time: tss-esapi's
    /// `get_tpm_property` caches values, which is wrong for these variable properties.
    pub fn lockout_status(&mut self) -> Result<LockoutStatus, TpmError> {
        use tss_esapi::constants::{CapabilityType, PropertyTag};
        use tss_esapi::structures::CapabilityData;
        let (data, _) = self
            .ctx
            .execute_without_session(|ctx| {
                ctx.get_capability(
                    CapabilityType::TpmProperties,
                    u32::from(PropertyTag::LockoutCounter),
                    3,
                )
            })
            .map_err(cmd_err("GetCapability"))?;
        let CapabilityData::TpmProperties(props) = data else {
            return Err(TpmError::Data(TpmDataError::NoProperties));
        };
        let get = |tag: PropertyTag| {
            props
                .iter()
                .find(|p| p.property() == tag)
                .map(|p| p.value())
                .ok_or(TpmError::Data(TpmDataError::MissingProperty(tag)))
        };
        Ok(LockoutStatus {
            counter: get(PropertyTag::LockoutCounter)?,
            max_tries: get(PropertyTag::MaxAuthFail)?,
            interval: get(PropertyTag::LockoutInterval)?,
        })
    }

    /// Seal `secret` (at most 128 bytes) in a keyed-hash object that only `policy` can
    /// authorize: attributes fixedTPM|fixedParent, no userWithAuth and no noDA (so wrong PINs
    /// count towards lockout), as systemd-cryptenroll seals. `auth_value` is the PIN's
    /// authValue when the policy includes PolicyAuthValue.
    pub fn seal(
        &mut self,
        parent: ParentChoice,
        policy: &Digest,
        secret: &[u8],
        auth_value: Option<&[u8]>,
    ) -> Result<SealedObject, TpmError> {
        use tss_esapi::attributes::ObjectAttributesBuilder;
        use tss_esapi::interface_types::algorithm::PublicAlgorithm;
        use tss_esapi::structures::{
            Auth, KeyedHashScheme, PublicBuilder, PublicKeyedHashParameters, SensitiveData,
        };
        use tss_esapi::traits::Marshall;
        let attrs = ObjectAttributesBuilder::new()
            .with_fixed_tpm(true)
            .with_fixed_parent(true)
            .build()
            .map_err(structure("conversion"))?;
        let public = PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::KeyedHash)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_auth_policy(
                tss_esapi::structures::Digest::try_from(policy.as_bytes().to_vec())
                    .map_err(structure("conversion"))?,
            )
            .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
            .with_keyed_hash_unique_identifier(Default::default())
            .build()
            .map_err(structure("conversion"))?;
        let data = SensitiveData::try_from(secret.to_vec())
            .map_err(structure("sealed data (secret too large?)"))?;
        let auth = auth_value
            .map(|a| Auth::try_from(a.to_vec()))
            .transpose()
            .map_err(structure("PIN auth value"))?;
        let parent = self.parent(parent)?;
        let session = match self.salted_session(&parent, tss_esapi::constants::SessionType::Hmac) {
            Ok(s) => s,
            Err(e) => {
                self.release(parent);
                return Err(e);
            }
        };
        let r = self.ctx.execute_with_session(Some(session), |ctx| {
            ctx.create(parent.handle, public, auth, Some(data), None, None)
        });
        self.flush_session(session);
        let out = r.map_err(cmd_err("Create"));
        let result = out.and_then(|r| {
            Ok(SealedObject {
                private: r.out_private.value().to_vec(),
                public: r.out_public.marshall().map_err(structure("conversion"))?,
                parent_name: parent.name.clone(),
                parent: parent.kind,
                seed: None,
            })
        });
        self.release(parent);
        result
    }

    /// Unseal: recreate (or find) the parent, check its Name when one was recorded, load the
    /// object, replay `steps` in a salted, encrypting policy session, compare the session
    /// digest with `expected_policy`, and unseal.
    pub fn unseal(
        &mut self,
        obj: &SealedObject,
        expected_parent_name: Option<&[u8]>,
        steps: &PolicySteps<'_>,
        expected_policy: &Digest,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, UnsealError> {
        use tss_esapi::structures::{Auth, Private};
        use tss_esapi::traits::UnMarshall;
        let public = tss_esapi::structures::Public::unmarshall(&obj.public)
            .map_err(structure("sealed public area"))?;
        let private =
            Private::try_from(obj.private.clone()).map_err(structure("sealed private area"))?;
        let parent = match (obj.parent, &obj.seed) {
            // An object wrapped offline for "the SRK" from `tpm srk-public`, which gives the
            // SRK template's key when none is persisted: the same template gives the same key
            // (and Name, checked below) as a transient primary.
            (ParentKind::Srk, Some(_)) => match self.persistent_srk()? {
                Some(p) => p,
                None => self.create_primary(ParentKind::EccP256)?,
            },
            (kind, _) => self.parent(ParentChoice::Kind(kind))?,
        };
        if let Some(expected) = expected_parent_name.filter(|n| *n != parent.name.as_slice()) {
            let e = UnsealError::ParentMismatch {
                expected: hex::encode(expected),
                actual: hex::encode(&parent.name),
            };
            self.release(parent);
            return Err(e);
        }
        let private = match &obj.seed {
            None => private,
            Some(seed) => match self.import(&parent, &public, private, seed) {
                Ok(p) => p,
                Err(e) => {
                    self.release(parent);
                    return Err(e);
                }
            },
        };
        let parent_handle = parent.handle;
        let loaded = self
            .as_parent(&parent, |ctx| ctx.load(parent_handle, private, public))
            .map_err(cmd_err("Load"));
        let loaded = match loaded {
            Ok(h) => h,
            Err(e) => {
                self.release(parent);
                return Err(match fmt1(&e) {
                    Some(RC_INTEGRITY) => UnsealError::WrongTpm(e),
                    _ => e.into(),
                });
            }
        };
        let result = (|| -> Result<zeroize::Zeroizing<Vec<u8>>, UnsealError> {
            if let Some(a) = steps.auth_value {
                let auth = Auth::try_from(a.to_vec()).map_err(structure("PIN auth value"))?;
                self.ctx
                    .tr_set_auth(loaded.into(), auth)
                    .map_err(cmd_err("TR_SetAuth"))?;
            }
            // A PCR extended between PolicyPCR and Unseal (systemd-pcrphase running at the
            // same time, say) fails the Unseal with TPM_RC_PCR_CHANGED: replay the policy in a
            // fresh session, as systemd does.
            let mut attempt = 1;
            loop {
                let session =
                    self.salted_session(&parent, tss_esapi::constants::SessionType::Policy)?;
                let r = self.run_policy_and_unseal(session, loaded, steps, expected_policy);
                self.flush_session(session);
                match r {
                    Err(UnsealError::Tpm(ref e))
                        if command_code(e) == Some(RC_PCR_CHANGED)
                            && attempt < PCR_CHANGED_ATTEMPTS =>
                    {
                        attempt += 1;
                    }
                    r => return r,
                }
            }
        })();
        let _ = self.ctx.flush_context(loaded.into());
        self.release(parent);
        result
    }

    /// TPM2_Import of an object wrapped offline: the TPM decrypts the seed with the parent's
    /// private key, checks the outer HMAC and re-wraps the object under the parent. A wrong
    /// TPM fails here (the seed does not decrypt, or the HMAC does not match).
    fn import(
        &mut self,
        parent: &Parent,
        public: &tss_esapi::structures::Public,
        duplicate: tss_esapi::structures::Private,
        seed: &[u8],
    ) -> Result<tss_esapi::structures::Private, UnsealError> {
        use tss_esapi::structures::{EncryptedSecret, SymmetricDefinitionObject};
        let seed = EncryptedSecret::try_from(seed.to_vec()).map_err(structure("import seed"))?;
        let parent_handle = parent.handle;
        let r = self.as_parent(parent, |ctx| {
            ctx.import(
                parent_handle.into(),
                None,
                public.clone(),
                duplicate,
                seed,
                SymmetricDefinitionObject::Null,
            )
        });
        r.map_err(cmd_err("Import")).map_err(|e| match fmt1(&e) {
            // TPM_RC_INTEGRITY / TPM_RC_VALUE (the seed does not decrypt) / TPM_RC_ECC_POINT:
            // wrapped for another parent.
            Some(RC_INTEGRITY) | Some(RC_VALUE) | Some(RC_ECC_POINT) => UnsealError::WrongTpm(e),
            _ => e.into(),
        })
    }

    /// The SRK's TPM2B_PUBLIC (what `systemd-analyze srk` prints and offline sealing takes):
    /// the persistent SRK at [`SRK_HANDLE`], or, when none is persisted, the key the SRK
    /// template gives (created transiently, not persisted). Returns the bytes and whether the
    /// SRK is persistent.
    pub fn srk_public(&mut self) -> Result<(Vec<u8>, bool), TpmError> {
        let (p, persistent) = match self.persistent_srk()? {
            Some(p) => (p, true),
            None => (self.create_primary(ParentKind::EccP256)?, false),
        };
        Ok((self.public_of(p)?, persistent))
    }

    /// The endorsement key's TPM2B_PUBLIC, from the TCG EK template (`kind` is
    /// [`ParentKind::EkRsa`] or [`ParentKind::EkEcc`]): offline sealing to it needs nothing
    /// persisted on the TPM. tpm2-tools' `tpm2_createek` makes the same key.
    pub fn ek_public(&mut self, kind: ParentKind) -> Result<Vec<u8>, TpmError> {
        if !matches!(kind, ParentKind::EkRsa | ParentKind::EkEcc) {
            return Err(TpmError::Data(TpmDataError::UnknownParent(
                kind.to_string(),
            )));
        }
        let p = self.create_primary(kind)?;
        self.public_of(p)
    }

    /// `p`'s TPM2B_PUBLIC as the TPM reports it; releases `p`.
    fn public_of(&mut self, p: Parent) -> Result<Vec<u8>, TpmError> {
        use tss_esapi::traits::Marshall;
        let r = self
            .ctx
            .read_public(p.handle)
            .map_err(cmd_err("ReadPublic"));
        self.release(p);
        let (public, _, _) = r?;
        let tpmt = public.marshall().map_err(structure("conversion"))?;
        let n = u16::try_from(tpmt.len())
            .map_err(|_| TpmError::Data(TpmDataError::TooLarge(tpmt.len())))?;
        let mut v = n.to_be_bytes().to_vec();
        v.extend_from_slice(&tpmt);
        Ok(v)
    }

    fn run_policy_and_unseal(
        &mut self,
        session: tss_esapi::interface_types::session_handles::AuthSession,
        loaded: tss_esapi::handles::KeyHandle,
        steps: &PolicySteps<'_>,
        expected_policy: &Digest,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, UnsealError> {
        use tss_esapi::interface_types::session_handles::PolicySession;
        let ps = PolicySession::try_from(session).map_err(structure("conversion"))?;
        if let Some((index, name)) = steps.authorize_nv {
            self.policy_authorize_nv_step(ps, index, name, steps.super_pcr)?;
        }
        if let Some(a) = &steps.authorize {
            self.policy_authorize(ps, a)?;
        }
        if let Some((bank, pcrs)) = steps.pcrs.filter(|(_, p)| !p.is_empty()) {
            let (_, sel) = selection_list(bank, pcrs)?;
            self.ctx
                .policy_pcr(ps, Default::default(), sel)
                .map_err(cmd_err("PolicyPCR"))?;
        }
        if steps.auth_value.is_some() {
            self.ctx
                .policy_auth_value(ps)
                .map_err(cmd_err("PolicyAuthValue"))?;
        }
        // With a PIN, compare the session's digest first: an Unseal whose policy does not
        // match would still check the PIN and count a failure against the dictionary-attack
        // lockout. Without one, a mismatch costs nothing, so the digest is read only then.
        let digest = |ctx: &mut Context| {
            ctx.policy_get_digest(ps)
                .map_err(cmd_err("PolicyGetDigest"))
        };
        let mismatch = |got: &tss_esapi::structures::Digest| UnsealError::PolicyMismatch {
            expected: expected_policy.to_hex(),
            actual: hex::encode(got.value()),
        };
        if steps.auth_value.is_some() {
            let got = digest(&mut self.ctx)?;
            if got.value() != expected_policy.as_bytes() {
                return Err(mismatch(&got));
            }
        }
        let data = self
            .ctx
            .execute_with_session(Some(session), |ctx| ctx.unseal(loaded.into()))
            .map_err(cmd_err("Unseal"));
        match data {
            Ok(d) => Ok(zeroize::Zeroizing::new(d.value().to_vec())),
            Err(e) if fmt1(&e) == Some(RC_AUTH_FAIL) => Err(UnsealError::BadPin {
                tries_left: self.lockout_status().ok().map(|s| s.tries_left()),
            }),
            Err(e) if command_code(&e) == Some(RC_LOCKOUT) => Err(UnsealError::LockedOut {
                interval: self.lockout_status().ok().map(|s| s.interval),
            }),
            Err(e) if fmt1(&e) == Some(RC_POLICY_FAIL) => Err(mismatch(&digest(&mut self.ctx)?)),
            Err(e) => Err(e.into()),
        }
    }

    /// The session's policy digest (PolicyGetDigest).
    fn session_digest(
        &mut self,
        ps: tss_esapi::interface_types::session_handles::PolicySession,
    ) -> Result<Digest, TpmError> {
        let d = self
            .ctx
            .policy_get_digest(ps)
            .map_err(cmd_err("PolicyGetDigest"))?;
        Digest::new(HashAlg::Sha256, d.value().to_vec()).map_err(|source| TpmError::DigestLength {
            bank: HashAlg::Sha256,
            pcr: u32::MAX,
            source,
        })
    }

    /// PolicyNV(counter ≤ epoch) for `nv`, after checking that the index exists and has the
    /// Name the signature names; a counter past the epoch is reported as
    /// [`UnsealError::Revoked`] (the TPM refuses it: PolicyNV fails with TPM_RC_POLICY).
    fn policy_nv_epoch(
        &mut self,
        ps: tss_esapi::interface_types::session_handles::PolicySession,
        nv: &crate::policy::NvEpoch,
    ) -> Result<(), UnsealError> {
        use tss_esapi::handles::AuthHandle;
        let operand = tss_esapi::structures::Digest::try_from(nv.epoch.to_be_bytes().to_vec())
            .map_err(structure("conversion"))?;
        let handle = self.nv_expected(nv.index, &nv.name)?;
        let r = self.using_nv(handle, |s, handle| {
            s.ctx.execute_with_nullauth_session(|ctx| {
                ctx.policy_nv(
                    ps,
                    AuthHandle::from(handle),
                    handle,
                    operand,
                    0,
                    tss_esapi::constants::tss::TPM2_EO_UNSIGNED_LE,
                )
            })
        });
        match r.map_err(cmd_err("PolicyNV")) {
            Ok(()) => Ok(()),
            Err(e) if command_code(&e).map(|c| c & 0xFFF) == Some(RC_POLICY) => {
                Err(UnsealError::Revoked {
                    index: nv.index,
                    epoch: nv.epoch,
                    counter: self.nv_read_counter(nv.index)?,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// An ESYS handle for the NV index `index` a policy is bound to, which must exist and have
    /// the Name `name` (checked with NV_ReadPublic before any policy command).
    fn nv_expected(
        &mut self,
        index: u32,
        name: &[u8],
    ) -> Result<tss_esapi::handles::NvIndexHandle, UnsealError> {
        match self.nv_open(index)? {
            None => Err(UnsealError::NvIndexMissing { index }),
            Some((handle, actual)) if actual != name => {
                self.nv_close(handle);
                Err(UnsealError::NvIndexChanged {
                    index,
                    expected: hex::encode(name),
                    actual: hex::encode(&actual),
                })
            }
            Some((handle, _)) => Ok(handle),
        }
    }

    /// The super-PCR policy of systemd-pcrlock ([`crate::pcrlock`]): one PolicyPCR over the
    /// PCRs with one predicted value, then PolicyPCR and PolicyOR for each PCR with several.
    /// The PCRs are read first, so that a value outside the prediction is named
    /// ([`UnsealError::PcrlockUnpredicted`]) rather than left to a failed PolicyOR.
    fn policy_super_pcr(
        &mut self,
        ps: tss_esapi::interface_types::session_handles::PolicySession,
        sp: &crate::pcrlock::SuperPcr,
    ) -> Result<(), UnsealError> {
        use tss_esapi::structures::{Digest as TssDigest, DigestList};
        let which: Vec<(HashAlg, u32)> = sp
            .single
            .iter()
            .map(|(p, _)| p.get())
            .chain(sp.or_steps.iter().map(|o| o.pcr.get()))
            .map(|p| (sp.bank, p))
            .collect();
        if which.is_empty() {
            return Ok(());
        }
        let current = self.read_pcrs(&which)?;
        let checks = sp
            .single
            .iter()
            .map(|(p, v)| (*p, std::slice::from_ref(v)))
            .chain(sp.or_steps.iter().map(|o| (o.pcr, o.values.as_slice())));
        for (pcr, values) in checks {
            let actual = current.get(&(sp.bank, pcr.get())).ok_or(TpmError::Data(
                TpmDataError::NoValue {
                    bank: sp.bank,
                    pcr: pcr.get(),
                },
            ))?;
            if !values.contains(actual) {
                return Err(UnsealError::PcrlockUnpredicted {
                    pcr: pcr.get(),
                    bank: sp.bank,
                    actual: actual.to_hex(),
                    predicted: values.len(),
                });
            }
        }
        if !sp.single.is_empty() {
            let pcrs: Vec<u32> = sp.single.iter().map(|(p, _)| p.get()).collect();
            let (_, sel) = selection_list(sp.bank, &pcrs)?;
            self.ctx
                .policy_pcr(ps, Default::default(), sel)
                .map_err(cmd_err("PolicyPCR"))?;
        }
        for o in &sp.or_steps {
            let (_, sel) = selection_list(sp.bank, &[o.pcr.get()])?;
            self.ctx
                .policy_pcr(ps, Default::default(), sel)
                .map_err(cmd_err("PolicyPCR"))?;
            let mut list = DigestList::new();
            for b in &o.branches {
                list.add(TssDigest::try_from(b.as_bytes().to_vec()).map_err(structure("digest"))?)
                    .map_err(structure("PolicyOR list"))?;
            }
            self.ctx.policy_or(ps, list).map_err(cmd_err("PolicyOR"))?;
        }
        Ok(())
    }

    /// PolicyAuthorizeNV over systemd-pcrlock's index (read with owner authorization, empty,
    /// as systemd does), after [`Self::policy_super_pcr`] when `super_pcr` is given. The
    /// index is checked first (it exists, with the Name the token or pcrlock.json gives).
    /// When a PCR is outside the prediction or the TPM refuses, the index is read to say
    /// why: it holds another policy than pcrlock.json describes
    /// ([`UnsealError::PcrlockStale`], which explains an unpredicted PCR too), or a policy over
    /// predictions when none were given ([`UnsealError::PcrlockPolicyFileNeeded`]).
    fn policy_authorize_nv_step(
        &mut self,
        ps: tss_esapi::interface_types::session_handles::PolicySession,
        index: u32,
        name: &[u8],
        super_pcr: Option<&crate::pcrlock::SuperPcr>,
    ) -> Result<(), UnsealError> {
        use tss_esapi::handles::AuthHandle;
        use tss_esapi::interface_types::resource_handles::NvAuth;
        let handle = self.nv_expected(index, name)?;
        self.using_nv(handle, |s, handle| {
            // The TPMT_HA the index holds: hashAlg, then the approved policy.
            let held = |s: &mut Self| -> Option<Vec<u8>> {
                s.ctx
                    .execute_with_nullauth_session(|ctx| ctx.nv_read(NvAuth::Owner, handle, 34, 0))
                    .ok()
                    .and_then(|d| d.value().get(2..).map(<[u8]>::to_vec))
            };
            let stale =
                |held: &[u8], sp: &crate::pcrlock::SuperPcr, source| UnsealError::PcrlockStale {
                    index,
                    expected: sp.digest.to_hex(),
                    held: hex::encode(held),
                    source,
                };
            if let Some(sp) = super_pcr {
                match s.policy_super_pcr(ps, sp) {
                    Ok(()) => {}
                    // A PCR outside a stale file's prediction: the stale file is the reason.
                    Err(e @ UnsealError::PcrlockUnpredicted { .. }) => {
                        return Err(match held(s) {
                            Some(h) if h != sp.digest.as_bytes() => stale(&h, sp, None),
                            _ => e,
                        })
                    }
                    Err(e) => return Err(e),
                }
            }
            let r = s.ctx.execute_with_nullauth_session(|ctx| {
                ctx.policy_authorize_nv(ps, AuthHandle::Owner, handle)
            });
            let Err(e) = r.map_err(cmd_err("PolicyAuthorizeNV")) else {
                return Ok(());
            };
            match (held(s), super_pcr) {
                (Some(h), Some(sp)) if h != sp.digest.as_bytes() => Err(stale(&h, sp, Some(e))),
                (Some(h), None) if h.iter().any(|b| *b != 0) => {
                    Err(UnsealError::PcrlockPolicyFileNeeded { index, source: e })
                }
                _ => Err(e.into()),
            }
        })
    }

    /// An ESYS handle for the NV index `index` and its Name, or `None` if it is not defined.
    fn nv_open(
        &mut self,
        index: u32,
    ) -> Result<Option<(tss_esapi::handles::NvIndexHandle, Vec<u8>)>, TpmError> {
        use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle};
        let h = NvIndexTpmHandle::new(index).map_err(structure("NV index handle"))?;
        let Some(obj) = self.tr_from_public(TpmHandle::NvIndex(h), "NV_ReadPublic")? else {
            return Ok(None);
        };
        let handle = NvIndexHandle::from(obj);
        let name = self
            .ctx
            .nv_read_public(handle)
            .map_err(cmd_err("NV_ReadPublic"));
        match name {
            Ok((_, name)) => Ok(Some((handle, name.value().to_vec()))),
            Err(e) => {
                let _ = self.ctx.tr_close(&mut obj.clone());
                Err(e)
            }
        }
    }

    /// An ESYS handle for the NV index `index`, which must exist.
    fn nv_handle(&mut self, index: u32) -> Result<tss_esapi::handles::NvIndexHandle, TpmError> {
        self.nv_open(index)?
            .map(|(h, _)| h)
            .ok_or(TpmError::Data(TpmDataError::NoNvIndex(index)))
    }

    /// Release the ESYS object of an NV index handle (the index stays).
    fn nv_close(&mut self, handle: tss_esapi::handles::NvIndexHandle) {
        let _ = self.ctx.tr_close(&mut handle.into());
    }

    /// Run `f` with `handle`, then release it.
    fn using_nv<T>(
        &mut self,
        handle: tss_esapi::handles::NvIndexHandle,
        f: impl FnOnce(&mut Self, tss_esapi::handles::NvIndexHandle) -> T,
    ) -> T {
        let r = f(self, handle);
        self.nv_close(handle);
        r
    }

    /// The Name of the NV index `index` as the TPM reports it (NV_ReadPublic), `None` if it is
    /// not defined.
    pub fn nv_name(&mut self, index: u32) -> Result<Option<Vec<u8>>, TpmError> {
        Ok(match self.nv_open(index)? {
            Some((h, n)) => {
                self.nv_close(h);
                Some(n)
            }
            None => None,
        })
    }

    /// bootchain's epoch counter at `index` with its current epoch, what `.pcrsig` entries
    /// are bound to. The index must exist with the Name [`crate::policy::epoch_counter_name`]
    /// gives: another index (other attributes, another owner) is refused, not signed for.
    pub fn current_epoch(&mut self, index: u32) -> Result<crate::policy::NvEpoch, TpmError> {
        let name = self
            .nv_name(index)?
            .ok_or(TpmError::Data(TpmDataError::NoNvIndex(index)))?;
        let expected = crate::policy::epoch_counter_name(index);
        if name != expected {
            return Err(TpmError::Data(TpmDataError::NotEpochCounter {
                index,
                name: hex::encode(&name),
                expected: hex::encode(&expected),
            }));
        }
        Ok(crate::policy::NvEpoch::counter(
            index,
            self.nv_read_counter(index)?,
        ))
    }

    /// The value of the epoch counter at `index` (NV_Read with its empty authValue).
    pub fn nv_read_counter(&mut self, index: u32) -> Result<u64, TpmError> {
        use tss_esapi::interface_types::resource_handles::NvAuth;
        let handle = self.nv_handle(index)?;
        let data = self
            .using_nv(handle, |s, h| {
                s.ctx
                    .execute_with_nullauth_session(|ctx| ctx.nv_read(NvAuth::NvIndex(h), h, 8, 0))
            })
            .map_err(cmd_err("NV_Read"))?;
        let bytes: [u8; 8] = data
            .value()
            .try_into()
            .map_err(|_| TpmError::Data(TpmDataError::NvSize(data.value().len())))?;
        Ok(u64::from_be_bytes(bytes))
    }

    /// The digest PolicyAuthorizeNV gives in a fresh trial session over the NV index `index`
    /// (read with owner authorization, empty: systemd-pcrlock's index is ownerRead): the
    /// index must hold the zero policy (a TPMT_HA over no policy), else the TPM refuses.
    /// Checks an index against [`crate::policy::policy_authorize_nv`] of its Name.
    pub fn policy_authorize_nv_trial(&mut self, index: u32) -> Result<Digest, TpmError> {
        use tss_esapi::constants::SessionType;
        use tss_esapi::handles::AuthHandle;
        use tss_esapi::interface_types::session_handles::PolicySession;
        use tss_esapi::structures::SymmetricDefinition;
        let handle = self.nv_handle(index)?;
        self.using_nv(handle, |s, handle| {
            let session = s
                .ctx
                .start_auth_session(
                    None,
                    None,
                    None,
                    SessionType::Trial,
                    SymmetricDefinition::Null,
                    HashingAlgorithm::Sha256,
                )
                .map_err(cmd_err("StartAuthSession"))?
                .ok_or(TpmError::Data(TpmDataError::NoSession))?;
            let r = (|| {
                let ps = PolicySession::try_from(session).map_err(structure("conversion"))?;
                s.ctx
                    .execute_with_nullauth_session(|ctx| {
                        ctx.policy_authorize_nv(ps, AuthHandle::Owner, handle)
                    })
                    .map_err(cmd_err("PolicyAuthorizeNV"))?;
                s.session_digest(ps)
            })();
            s.flush_session(session);
            r
        })
    }

    /// Run `f` with the owner hierarchy's authValue set to `owner_auth` (a password session),
    /// then clear it again.
    fn with_owner_auth<T>(
        &mut self,
        owner_auth: &[u8],
        f: impl FnOnce(&mut Context) -> tss_esapi::Result<T>,
    ) -> tss_esapi::Result<T> {
        use tss_esapi::handles::ObjectHandle;
        use tss_esapi::structures::Auth;
        self.ctx
            .tr_set_auth(ObjectHandle::Owner, Auth::try_from(owner_auth.to_vec())?)?;
        let r = self.ctx.execute_with_nullauth_session(f);
        let _ = self.ctx.tr_set_auth(ObjectHandle::Owner, Auth::default());
        r
    }

    /// Define bootchain's epoch counter at `index` ([`crate::policy::EPOCH_COUNTER_ATTRIBUTES`],
    /// empty authValue) with owner authorization, and increment it once (a counter reads only
    /// once written, and a new counter starts at the highest value any counter on this TPM
    /// has had). Returns the first epoch.
    pub fn nv_define_epoch_counter(
        &mut self,
        index: u32,
        owner_auth: &[u8],
    ) -> Result<u64, TpmError> {
        use tss_esapi::attributes::NvIndexAttributes;
        use tss_esapi::handles::NvIndexTpmHandle;
        use tss_esapi::interface_types::resource_handles::Provision;
        use tss_esapi::structures::NvPublicBuilder;
        let public = NvPublicBuilder::new()
            .with_nv_index(NvIndexTpmHandle::new(index).map_err(structure("NV index handle"))?)
            .with_index_name_algorithm(HashingAlgorithm::Sha256)
            .with_index_attributes(
                NvIndexAttributes::try_from(crate::policy::EPOCH_COUNTER_ATTRIBUTES)
                    .map_err(structure("NV attributes"))?,
            )
            .with_data_area_size(8)
            .build()
            .map_err(structure("NV public area"))?;
        let handle = self
            .with_owner_auth(owner_auth, |ctx| {
                ctx.nv_define_space(Provision::Owner, None, public)
            })
            .map_err(cmd_err("NV_DefineSpace"))?;
        let _ = self.ctx.tr_close(&mut handle.into());
        self.nv_bump(index, owner_auth)
    }

    /// Increment the epoch counter at `index` with owner authorization; returns the new epoch.
    pub fn nv_bump(&mut self, index: u32, owner_auth: &[u8]) -> Result<u64, TpmError> {
        use tss_esapi::interface_types::resource_handles::NvAuth;
        let handle = self.nv_handle(index)?;
        self.using_nv(handle, |s, h| {
            s.with_owner_auth(owner_auth, |ctx| ctx.nv_increment(NvAuth::Owner, h))
        })
        .map_err(cmd_err("NV_Increment"))?;
        self.nv_read_counter(index)
    }

    /// Delete the NV index `index` with owner authorization.
    pub fn nv_undefine(&mut self, index: u32, owner_auth: &[u8]) -> Result<(), TpmError> {
        use tss_esapi::interface_types::resource_handles::Provision;
        let handle = self.nv_handle(index)?;
        let r = self.with_owner_auth(owner_auth, |ctx| {
            ctx.nv_undefine_space(Provision::Owner, handle)
        });
        // Undefined, the ESYS object is gone with the index; refused, it is still ours.
        if r.is_err() {
            self.nv_close(handle);
        }
        r.map_err(cmd_err("NV_UndefineSpace"))
    }

    /// PolicyPCR over the signed PCRs, find the signature of the resulting digest, have the
    /// TPM verify it (VerifySignature → ticket), then PolicyAuthorize (Part 3 §23.16).
    fn policy_authorize(
        &mut self,
        ps: tss_esapi::interface_types::session_handles::PolicySession,
        a: &AuthorizeStep<'_>,
    ) -> Result<(), UnsealError> {
        use tss_esapi::interface_types::resource_handles::Hierarchy;
        use tss_esapi::structures::{Nonce, PublicKeyRsa, RsaSignature, Signature};
        use tss_esapi::traits::UnMarshall;
        let (_, sel) = selection_list(a.bank, a.pcrs)?;
        self.ctx
            .policy_pcr(ps, Default::default(), sel)
            .map_err(cmd_err("PolicyPCR"))?;
        let pcr_policy = self.session_digest(ps)?;
        let matching: Vec<&SignedPolicy> = a
            .candidates
            .iter()
            .filter(|c| c.approves(&pcr_policy))
            .collect();
        // A plain signature needs nothing more; else the newest epoch-bound one.
        let chosen = match matching.iter().find(|c| c.nv.is_none()) {
            Some(c) => *c,
            None => match matching
                .iter()
                .filter_map(|c| c.nv.as_ref().map(|nv| (*c, nv)))
                .max_by_key(|(_, nv)| nv.epoch)
            {
                Some((c, nv)) => {
                    self.policy_nv_epoch(ps, nv)?;
                    // The TPM's PolicyNV must have given the digest computed in software
                    // (Name with TPMA_NV_WRITTEN, operand, operation).
                    let got = self.session_digest(ps)?;
                    if got != c.pol {
                        return Err(UnsealError::PolicyMismatch {
                            expected: c.pol.to_hex(),
                            actual: got.to_hex(),
                        });
                    }
                    c
                }
                None => {
                    return Err(UnsealError::NoSignature {
                        bank: a.bank,
                        pcrs: a.pcrs.to_vec(),
                        approved: pcr_policy.to_hex(),
                    })
                }
            },
        };
        let sig = &chosen.sig;
        let approved = tss_esapi::structures::Digest::try_from(chosen.pol.as_bytes().to_vec())
            .map_err(structure("conversion"))?;
        let key_public = tss_esapi::structures::Public::unmarshall(a.public_area)
            .map_err(structure("PCR public key"))?;
        // Owner hierarchy: a key loaded in the Null hierarchy yields a NULL ticket.
        let key = self
            .ctx
            .load_external_public(key_public, Hierarchy::Owner)
            .map_err(cmd_err("LoadExternal"))?;
        let r = (|| -> Result<(), UnsealError> {
            let name = self
                .ctx
                .tr_get_name(key.into())
                .map_err(cmd_err("TR_GetName"))?;
            let a_hash = crate::policy::authorize_signed_hash(&chosen.pol, b"");
            let sig = RsaSignature::create(
                HashingAlgorithm::Sha256,
                PublicKeyRsa::try_from(sig.clone()).map_err(structure("conversion"))?,
            )
            .map_err(structure("conversion"))?;
            let digest = tss_esapi::structures::Digest::try_from(a_hash.as_bytes().to_vec())
                .map_err(structure("conversion"))?;
            let ticket = self
                .ctx
                .verify_signature(key, digest, Signature::RsaSsa(sig))
                .map_err(|e| UnsealError::SignatureRejected(cmd_err("VerifySignature")(e)))?;
            self.ctx
                .policy_authorize(ps, approved.clone(), Nonce::default(), &name, ticket)
                .map_err(cmd_err("PolicyAuthorize"))?;
            Ok(())
        })();
        let _ = self.ctx.flush_context(key.into());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `device` strings parse as tss-esapi's own parser reads them.
    #[test]
    fn device_tcti_as_tss_esapi() {
        for s in ["device", "device:", "device:/dev/tpmrm0", "device:/x:y"] {
            assert_eq!(
                tcti_conf(s).unwrap(),
                TctiNameConf::from_str(s).unwrap(),
                "{s}"
            );
        }
        assert!(tcti_conf("devices:/dev/tpm0").is_err());
    }

    #[cfg(feature = "tcti-net")]
    #[test]
    fn network_tcti() {
        let s = "swtpm:host=127.0.0.1,port=2321";
        assert_eq!(tcti_conf(s).unwrap(), TctiNameConf::from_str(s).unwrap());
    }
}
