//! PCR 11 as systemd-stub measures a UKI, and signed PCR policies (`.pcrsig`).
//!
//! The stub measures, in the fixed order of systemd's `enum UnifiedSection` (`uki.h`), every
//! present, non-empty section it knows: first the section name with its NUL, then the
//! VirtualSize bytes of the section, both as EV_IPL events into PCR 11
//! (`docs/TPM2_PCR_MEASUREMENTS.md`, "PCR 11"). Which sections are measured depends on the stub
//! version: 252 measures .linux .osrel .cmdline .initrd .splash .dtb .pcrpkey; 254 adds .uname
//! and .sbat; 256 .ucode; 257 .profile .dtbauto .hwids; 258 .efifw. `.pcrsig` is never measured.
//! Afterwards systemd-pcrphase extends the boot phase words (UTF-8, no NUL).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::eventlog::{extend, EventType};
use crate::hash::{Digest, HashAlg, MultiHasher};
use crate::pe::PeHeaders;
use crate::policy::{self, NvEpoch, PcrIndex, PcrSelection};
use crate::ukiread::UkiSection;

/// The PCR the stub measures UKI sections into (systemd `TPM2_PCR_KERNEL_BOOT`).
pub const PCR_KERNEL_BOOT: u32 = 11;

pub use super::phase::{Phase, PhaseError, DEFAULT_PHASES, INITRD_PHASES};

/// The newest stub behaviour we know (what systemd-measure assumes).
pub const NEWEST_STUB: u32 = 258;

/// Errors predicting PCR 11 or signing policies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MeasureError {
    /// Reading an input failed.
    #[error("cannot read {path}")]
    Input {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Reading a stream failed (the caller that knows the file names it: [`Self::Input`]).
    #[error("reading the image")]
    Read(#[source] io::Error),
    /// The UKI file could not be parsed.
    #[error("{path}: not a usable PE image")]
    UkiPe {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::pe::PeError,
    },
    /// The UKI could not be parsed.
    #[error(transparent)]
    Pe(#[from] crate::pe::PeError),
    /// No stub version could be found.
    #[error("{0}: no .sdmagic stub version found; give the stub's systemd version")]
    NoStubVersion(PathBuf),
    /// A bad phase path.
    #[error(transparent)]
    Phase(#[from] PhaseError),
    /// Policy computation failed.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// A PCR index out of range.
    #[error(transparent)]
    Pcr(#[from] crate::pcr::PcrIndexError),
    /// The PCR signing key (or public key) is not usable.
    #[error("PCR signing key")]
    Key(#[from] PcrKeyError),
    /// An image's Authenticode hash could not be computed.
    #[error("{path}: Authenticode hash")]
    Image {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::authenticode::AuthenticodeError,
    },
    /// The Secure Boot db could not be parsed.
    #[error("the Secure Boot db")]
    Db(#[source] crate::efi::FirmwareError),
    /// An event log has no bank whose digests bootchain computes.
    #[error("the log has no bank bootchain can compute")]
    NoBank,
    /// The UKI has no such profile.
    #[error("the UKI has no profile {profile} ({profiles} profiles)")]
    NoProfile {
        /// The profile asked for.
        profile: u32,
        /// How many the UKI has (0: not a multi-profile UKI).
        profiles: u32,
    },
    /// Malformed `.pcrsig` JSON.
    #[error("malformed PCR signature JSON")]
    Json(#[source] PcrSignatureJsonError),
}

/// What is wrong with `.pcrsig` JSON ([`MeasureError::Json`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PcrSignatureJsonError {
    /// Not JSON.
    #[error(transparent)]
    Syntax(serde_json::Error),
    /// The top level is not an object of banks.
    #[error("top level is not an object")]
    NotObject,
    /// A bank name that is not a hash algorithm.
    #[error("unknown bank")]
    Bank(#[source] crate::hash::UnknownHashAlg),
    /// A bank's entries are not signature objects.
    #[error("{bank}")]
    Entries {
        /// The bank.
        bank: String,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
}

/// What a systemd-stub version measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StubRules {
    /// The systemd major version.
    pub version: u32,
}

impl StubRules {
    /// Rules for a version.
    pub fn new(version: u32) -> Self {
        StubRules { version }
    }

    /// Whether this stub measures `section` into PCR 11.
    ///
    /// The stub's `measure_sections` (`src/boot/stub.c`) measures every section of
    /// `enum UnifiedSection` (`src/fundamental/uki.h`) that `unified_section_measure` allows —
    /// all but `.pcrsig` — so a section is measured from the release that added it to the
    /// enum: 258 added `UNIFIED_SECTION_EFIFW` after `HWIDS`. (ukify 258 adds `.efifw` with
    /// `measure=False`, so it does not pass it to systemd-measure; the stub measures it
    /// anyway.)
    pub fn measures(&self, section: UkiSection) -> bool {
        use UkiSection::*;
        match section {
            Linux | Osrel | Cmdline | Initrd | Splash | Dtb | Pcrpkey => true,
            Uname | Sbat => self.version >= 254,
            Ucode => self.version >= 256,
            Profile | Dtbauto | Hwids => self.version >= 257,
            Efifw => self.version >= 258,
            Pcrsig => false,
        }
    }
}

/// The major version from a `.sdmagic` version string ("252.39-1~deb12u2" -> 252).
pub fn stub_major(version: &str) -> Option<u32> {
    let digits: String = version.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A section's measured bytes, as digests in several banks.
#[derive(Clone, Debug)]
pub struct SectionDigests {
    /// The section.
    pub section: UkiSection,
    /// Byte count.
    pub size: u64,
    /// One digest per bank.
    pub digests: Vec<Digest>,
}

/// One predicted event.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct PredictedEvent {
    /// The PCR.
    pub pcr: PcrIndex,
    /// The event type as the log records it.
    pub event_type: crate::eventlog::EventType,
    /// What was measured.
    pub description: String,
    /// Digest per bank (bank name -> hex).
    pub digests: BTreeMap<HashAlg, Digest>,
    /// The event data as the log records it, where it is known in advance (not in the JSON
    /// of `pcr predict`; TCG CEL-JSON `event_data`, see `crate::reference`). `None` for
    /// EV_EFI_BOOT_SERVICES_APPLICATION (its UEFI_IMAGE_LOAD_EVENT holds the load address).
    #[serde(skip)]
    pub event_data: Option<Vec<u8>>,
}

impl PredictedEvent {
    /// With the event data the log will hold.
    pub(crate) fn with_data(mut self, data: Vec<u8>) -> Self {
        self.event_data = Some(data);
        self
    }
}

/// TCG_PCClientTaggedEvent (PFP §10.4.2.1): taggedEventID, taggedEventDataSize, the data.
pub(crate) fn tagged_event_data(tag: u32, data: &[u8]) -> Vec<u8> {
    let mut v = tag.to_le_bytes().to_vec();
    v.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// UTF-16LE with a terminating NUL: how systemd-stub's EV_IPL events carry their description.
pub(crate) fn utf16z_bytes(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain([0])
        .flat_map(|u| u.to_le_bytes())
        .collect()
}

/// A predicted PCR: its events and final value per bank.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct PcrPrediction {
    /// PCR index.
    pub pcr: PcrIndex,
    /// Events in order.
    pub events: Vec<PredictedEvent>,
    /// Final values.
    pub values: BTreeMap<HashAlg, Digest>,
}

pub(crate) fn event(
    pcr: PcrIndex,
    ty: EventType,
    desc: String,
    data_or_digest: EventPayload,
    banks: &[HashAlg],
) -> PredictedEvent {
    let digests = banks
        .iter()
        .map(|b| {
            let d = match &data_or_digest {
                EventPayload::HashOfData(d) => b.digest(d),
                EventPayload::Digests(m) => m.get(b).cloned().unwrap_or_else(|| Digest::zero(*b)),
            };
            (*b, d)
        })
        .collect();
    PredictedEvent {
        pcr,
        event_type: ty,
        description: desc,
        digests,
        event_data: None,
    }
}

pub(crate) enum EventPayload {
    HashOfData(Vec<u8>),
    Digests(BTreeMap<HashAlg, Digest>),
}

pub(crate) fn finish(
    pcr: PcrIndex,
    events: Vec<PredictedEvent>,
    banks: &[HashAlg],
) -> PcrPrediction {
    let values = banks
        .iter()
        .map(|b| {
            let v = events
                .iter()
                .filter_map(|e| e.digests.get(b))
                .fold(Digest::zero(*b), |acc, d| extend(&acc, d));
            (*b, v)
        })
        .collect();
    PcrPrediction {
        pcr,
        events,
        values,
    }
}

/// A PCR 11 value after a phase path.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseValue {
    /// The phase path.
    pub phase: Phase,
    /// One value per bank.
    pub values: Vec<Digest>,
}

/// A PCR 11 prediction.
#[derive(Clone, Debug, Serialize)]
pub struct Pcr11Prediction {
    /// Banks, in output order.
    pub banks: Vec<HashAlg>,
    /// The stub's events, in order.
    pub events: Vec<PredictedEvent>,
    /// The values after each requested phase path.
    pub phases: Vec<PhaseValue>,
}

impl Pcr11Prediction {
    /// The value for a bank and phase.
    pub fn value(&self, bank: HashAlg, phase: &Phase) -> Option<&Digest> {
        self.phases
            .iter()
            .find(|p| p.phase == *phase)
            .and_then(|p| p.values.iter().find(|v| v.alg() == bank))
    }
}

/// [`Phase::list`] of `paths`, or systemd-measure's default phases when none are given.
pub fn phase_list<S: AsRef<str>>(paths: &[S]) -> Result<Vec<Phase>, MeasureError> {
    if paths.is_empty() {
        return Ok(Phase::defaults());
    }
    Ok(Phase::list(paths)?)
}

fn utf16_description(s: &str) -> String {
    s.to_string()
}

/// Predict PCR 11 from the loose parts of a UKI not yet built (systemd-measure's
/// `--linux=... --initrd=...`): each file hashed once, every section systemd-measure knows
/// counted, for `phases`.
///
/// ```no_run
/// use bootchain::hash::HashAlg;
/// use bootchain::ukiread::UkiSection;
/// let parts = [
///     (UkiSection::Linux, "vmlinuz".as_ref()),
///     (UkiSection::Cmdline, "cmdline.txt".as_ref()),
/// ];
/// let phases = [bootchain::measure::Phase::parse("enter-initrd")?];
/// let pred = bootchain::measure::predict_parts(&parts, &[HashAlg::Sha256], &phases)?;
/// println!("PCR 11 = {}", pred.phases[0].values[0]);
/// # Ok::<(), bootchain::measure::MeasureError>(())
/// ```
pub fn predict_parts(
    parts: &[(crate::ukiread::UkiSection, &Path)],
    banks: &[HashAlg],
    phases: &[Phase],
) -> Result<Pcr11Prediction, MeasureError> {
    let mut sections = Vec::new();
    for (section, path) in parts {
        let (size, digests) = file_digests(path, banks)?;
        sections.push(SectionDigests {
            section: *section,
            size,
            digests,
        });
    }
    Ok(predict_pcr11(&sections, None, banks, phases))
}

/// Predict PCR 11 from section digests: `rules` decides which sections count (`None`: every
/// section systemd-measure knows, as it does). Sections are taken in measurement order, the
/// first of each name, skipping empty ones.
pub fn predict_pcr11(
    sections: &[SectionDigests],
    rules: Option<StubRules>,
    banks: &[HashAlg],
    phases: &[Phase],
) -> Pcr11Prediction {
    let mut pcr: Vec<Digest> = banks.iter().map(|b| Digest::zero(*b)).collect();
    let mut events = Vec::new();
    for &section in UkiSection::MEASUREMENT_ORDER {
        // systemd-measure (no rules) knows every section; none measures `.pcrsig`.
        if section == UkiSection::Pcrsig || rules.is_some_and(|r| !r.measures(section)) {
            continue;
        }
        let Some(s) = sections.iter().find(|s| s.section == section) else {
            continue;
        };
        let name = section.name();
        if s.size == 0 {
            continue;
        }
        let mut name_nul = name.as_bytes().to_vec();
        name_nul.push(0);
        let name_digests: BTreeMap<HashAlg, Digest> =
            banks.iter().map(|b| (*b, b.digest(&name_nul))).collect();
        let data_digests: BTreeMap<HashAlg, Digest> = banks
            .iter()
            .filter_map(|b| {
                s.digests
                    .iter()
                    .find(|d| d.alg() == *b)
                    .map(|d| (*b, d.clone()))
            })
            .collect();
        for (i, b) in banks.iter().enumerate() {
            pcr[i] = extend(&pcr[i], &name_digests[b]);
            if let Some(d) = data_digests.get(b) {
                pcr[i] = extend(&pcr[i], d);
            }
        }
        events.push(PredictedEvent {
            pcr: PcrIndex::of::<11>(),
            event_type: crate::eventlog::EventType::Ipl,
            description: utf16_description(name),
            digests: name_digests,
            event_data: Some(utf16z_bytes(name)),
        });
        events.push(PredictedEvent {
            pcr: PcrIndex::of::<11>(),
            event_type: crate::eventlog::EventType::Ipl,
            description: utf16_description(name),
            digests: data_digests,
            event_data: Some(utf16z_bytes(name)),
        });
    }
    let phases = phases
        .iter()
        .map(|path| {
            let mut v = pcr.clone();
            for word in path.words() {
                for (i, b) in banks.iter().enumerate() {
                    v[i] = extend(&v[i], &b.digest(word.as_bytes()));
                }
            }
            PhaseValue {
                phase: path.clone(),
                values: v,
            }
        })
        .collect();
    Pcr11Prediction {
        banks: banks.to_vec(),
        events,
        phases,
    }
}

/// Digests of a file's content in several banks, streamed.
pub fn file_digests(path: &Path, banks: &[HashAlg]) -> Result<(u64, Vec<Digest>), MeasureError> {
    let err = |source| MeasureError::Input {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(err)?;
    let mut mh = MultiHasher::new(banks);
    let n_total = std::io::copy(&mut f, &mut mh).map_err(err)?;
    Ok((n_total, mh.finalize()))
}

/// Section digests and stub version of a UKI file, as the stub measures them when it boots
/// profile 0 (the only one of a single-profile UKI).
pub fn uki_sections(
    path: &Path,
    banks: &[HashAlg],
) -> Result<(Vec<SectionDigests>, Option<String>), MeasureError> {
    uki_profile_sections(path, banks, 0)
}

/// Section digests and stub version of a UKI file when the stub boots `profile`: the
/// profile's sections (from its `.profile` to the next), and the base's (those before the
/// first `.profile`) it does not replace — systemd 257 `pe_locate_profile_sections`, and
/// ukify's `call_systemd_measure`.
pub fn uki_profile_sections(
    path: &Path,
    banks: &[HashAlg],
    profile: u32,
) -> Result<(Vec<SectionDigests>, Option<String>), MeasureError> {
    let mut f = File::open(path).map_err(|source| MeasureError::Input {
        path: path.to_path_buf(),
        source,
    })?;
    uki_profile_sections_from(&mut f, banks, profile).map_err(|e| match e {
        MeasureError::Read(source) => MeasureError::Input {
            path: path.to_path_buf(),
            source,
        },
        MeasureError::Pe(source) => MeasureError::UkiPe {
            path: path.to_path_buf(),
            source,
        },
        other => other,
    })
}

/// Section digests and stub version of a UKI in memory (`Cursor<&[u8]>`) or any seekable
/// stream, for profile 0; sections are hashed in streaming fashion.
pub fn uki_sections_from<R: Read + std::io::Seek>(
    f: &mut R,
    banks: &[HashAlg],
) -> Result<(Vec<SectionDigests>, Option<String>), MeasureError> {
    uki_profile_sections_from(f, banks, 0)
}

/// [`uki_profile_sections`] of a stream.
pub fn uki_profile_sections_from<R: Read + std::io::Seek>(
    f: &mut R,
    banks: &[HashAlg],
    profile: u32,
) -> Result<(Vec<SectionDigests>, Option<String>), MeasureError> {
    let err = MeasureError::Read;
    let (h, _) = PeHeaders::read(f)?;
    // Which profile each section belongs to: None for the base, Some(n) from the n-th
    // `.profile` on.
    let mut owner = Vec::with_capacity(h.sections.len());
    let mut seen: Option<u32> = None;
    for s in &h.sections {
        if s.name.as_str() == ".profile" {
            seen = Some(seen.map_or(0, |n| n.saturating_add(1)));
        }
        owner.push(seen);
    }
    let profiles = seen.map_or(0, |n| n.saturating_add(1));
    if profile > 0 && profile >= profiles {
        return Err(MeasureError::NoProfile { profile, profiles });
    }
    // The profile's own sections first, so they win over the base's of the same name.
    let order = h
        .sections
        .iter()
        .zip(&owner)
        .filter(|(_, o)| **o == Some(profile))
        .chain(h.sections.iter().zip(&owner).filter(|(_, o)| o.is_none()));
    let mut out: Vec<SectionDigests> = Vec::new();
    let mut version = None;
    // The first `.sdmagic` only: a crafted image with many would otherwise be read many times.
    if let Some(s) = h.sections.iter().find(|s| s.name.as_str() == ".sdmagic") {
        let b = crate::pe::read_section_memory(f, s).map_err(err)?;
        version = crate::ukiread::parse_sdmagic(&String::from_utf8_lossy(&b));
    }
    for (s, _) in order {
        let Some(section) = UkiSection::from_name(&s.name.as_str()) else {
            continue;
        };
        if out.iter().any(|o| o.section == section) {
            continue;
        }
        let digests = crate::ukiread::section_memory_digests(f, s, banks).map_err(err)?;
        out.push(SectionDigests {
            section,
            size: u64::from(s.virtual_size),
            digests,
        });
    }
    Ok((out, version))
}

/// Predict PCR 11 for a UKI file with the rules of the stub inside it (or `stub_version`).
///
/// ```no_run
/// use bootchain::hash::HashAlg;
/// use bootchain::measure::Phase;
/// let p = bootchain::measure::predict_uki("uki.efi".as_ref(), None, &[HashAlg::Sha256], &[Phase::after_stub()])?;
/// println!("{}", p.value(HashAlg::Sha256, &Phase::after_stub()).unwrap());
/// # Ok::<(), bootchain::measure::MeasureError>(())
/// ```
pub fn predict_uki(
    path: &Path,
    stub_version: Option<u32>,
    banks: &[HashAlg],
    phases: &[Phase],
) -> Result<Pcr11Prediction, MeasureError> {
    predict_uki_profile(path, stub_version, banks, phases, 0)
}

/// [`predict_uki`] for the stub booting `profile` of a multi-profile UKI.
pub fn predict_uki_profile(
    path: &Path,
    stub_version: Option<u32>,
    banks: &[HashAlg],
    phases: &[Phase],
    profile: u32,
) -> Result<Pcr11Prediction, MeasureError> {
    let (sections, version) = uki_profile_sections(path, banks, profile)?;
    let major = match stub_version {
        Some(v) => v,
        None => version
            .as_deref()
            .and_then(stub_major)
            .ok_or_else(|| MeasureError::NoStubVersion(path.to_path_buf()))?,
    };
    Ok(predict_pcr11(
        &sections,
        Some(StubRules::new(major)),
        banks,
        phases,
    ))
}

/// One entry of a `.pcrsig` bank array (UAPI UKI spec, "JSON Format for .pcrsig").
///
/// Members are written in systemd-measure's order (`build_policy_digest()` in
/// `src/measure/measure.c` of 258, `measure-tool.c` later): `pcrs`, `pkfp` (only when a public
/// key is known), `ref`, `pol`, `tbs`, `sig` (only when signed: `policy-digest` leaves it
/// out). `ref` and `tbs` come from systemd after 258 (systemd PRs #42626 and #43642); absent
/// members are not written, so 257/258 documents keep their bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PcrSignature {
    /// The PCRs the policy covers.
    pub pcrs: Vec<u32>,
    /// SHA-256 of the public key's DER (PKCS#1 RSAPublicKey for RSA), hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkfp: Option<String>,
    /// The TPM2 policy reference the signature is bound to (systemd-measure `--policyref`):
    /// PolicyAuthorize then covers `pol || SHA-256(ref)` (UTF-8, no NUL; systemd issue
    /// #43635).
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub policy_ref: Option<String>,
    /// The PolicyPCR digest (SHA-256 session), hex.
    pub pol: String,
    /// The exact bytes an offline signer hashes and signs, hex: `pol`, followed by SHA-256 of
    /// `ref` when there is one ([`to_be_signed`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tbs: Option<String>,
    /// The RSASSA-PKCS1-v1_5 signature over the to-be-signed bytes, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// bootchain's epoch binding (not systemd's): the NV counter index the policy is bound
    /// to. With `nvName` and `epoch`, `pol` is PolicyPCR followed by PolicyNV(counter ≤
    /// epoch) ([`crate::policy::NvEpoch`]); systemd ignores these members and finds no use for
    /// such an entry (its `pol` is not a plain PolicyPCR digest).
    #[serde(rename = "nvIndex", default, skip_serializing_if = "Option::is_none")]
    pub nv_index: Option<u32>,
    /// The NV index's Name, hex.
    #[serde(rename = "nvName", default, skip_serializing_if = "Option::is_none")]
    pub nv_name: Option<String>,
    /// The highest counter value this signature is valid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

/// `nvIndex`, `nvName` and `epoch` of a `.pcrsig` entry are not all given, or `nvName` is not
/// hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nvIndex, nvName and epoch must be given together (nvName as hex)")]
#[non_exhaustive]
pub struct NvMembersError;

impl PcrSignature {
    /// The epoch binding of this entry, if it has one.
    pub fn nv_epoch(&self) -> Result<Option<NvEpoch>, NvMembersError> {
        match (self.nv_index, &self.nv_name, self.epoch) {
            (None, None, None) => Ok(None),
            (Some(index), Some(name), Some(epoch)) => Ok(Some(NvEpoch {
                index,
                name: hex::decode(name).map_err(|_| NvMembersError)?,
                epoch,
            })),
            _ => Err(NvMembersError),
        }
    }

    /// Whether `pol` is one of the `predicted` PolicyPCR digests of `bank`, extended by the
    /// entry's epoch binding when it has one. A malformed `pol` is not predicted.
    pub fn is_predicted(
        &self,
        bank: HashAlg,
        predicted: &[(HashAlg, Vec<Digest>)],
    ) -> Result<bool, NvMembersError> {
        let nv = self.nv_epoch()?;
        let Ok(d) = Digest::from_hex(HashAlg::Sha256, &self.pol) else {
            return Ok(false);
        };
        Ok(predicted
            .iter()
            .filter(|(b, _)| *b == bank)
            .flat_map(|(_, pols)| pols)
            .any(|p| nv.as_ref().map_or(p.clone(), |n| n.extend(p)) == d))
    }

    fn set_nv_epoch(&mut self, nv: Option<&NvEpoch>) {
        self.nv_index = nv.map(|n| n.index);
        self.nv_name = nv.map(|n| hex::encode(&n.name));
        self.epoch = nv.map(|n| n.epoch);
    }
}

/// Why a PCR signing key or PCR public key is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PcrKeyError {
    /// The private key could not be loaded.
    #[error(transparent)]
    Load(#[from] crate::keys::KeyError),
    /// Not an RSA key: PCR policies are verified by TPM2_VerifySignature with RSASSA, which
    /// systemd uses.
    #[error("PCR policies are signed with RSA keys (TPM2_VerifySignature with RSASSA)")]
    NotRsa,
    /// The public key given does not belong to the private key.
    #[error("{0} does not match the private key")]
    Mismatch(PathBuf),
    /// Neither SubjectPublicKeyInfo, PKCS#1 nor a certificate with an RSA key.
    #[error("not an RSA public key (PEM)")]
    NotRsaPublic,
    /// Encoding the public key (PKCS#1 DER for its fingerprint, SPKI PEM) failed.
    #[error("encoding the public key")]
    Encode(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The RSA signature could not be made.
    #[error("signing")]
    Sign(#[source] rsa::Error),
    /// The signing backend failed (PKCS#11 token, signature made elsewhere).
    #[error("signing the PCR policy")]
    Signer(#[source] Box<crate::signer::SigningError>),
}

/// A whole `.pcrsig` document: bank name -> entries. Keys keep insertion order.
pub type PcrSignatures = Vec<(HashAlg, Vec<PcrSignature>)>;

/// `pkfp`: SHA-256 of the PKCS#1 RSAPublicKey DER (OpenSSL `i2d_PublicKey`, as systemd).
pub fn public_key_fingerprint(key: &rsa::RsaPublicKey) -> Result<Digest, MeasureError> {
    use pkcs1::EncodeRsaPublicKey;
    let der = key
        .to_pkcs1_der()
        .map_err(|e| PcrKeyError::Encode(Box::new(e)))?;
    Ok(HashAlg::Sha256.digest(der.as_bytes()))
}

/// Load the RSA key pair for PCR signing: private key PEM/DER; the public key (if given) must
/// match it.
pub fn load_pcr_signing_key(
    private: &Path,
    public: Option<&Path>,
) -> Result<rsa::RsaPrivateKey, MeasureError> {
    let key = crate::keys::SigningKey::from_file(private).map_err(PcrKeyError::Load)?;
    check_pcr_signer(&key, public)?;
    let crate::keys::SigningKey::Rsa(k) = key else {
        return Err(PcrKeyError::NotRsa.into());
    };
    Ok(*k)
}

/// Parse an RSA public key from PEM (SubjectPublicKeyInfo or PKCS#1) or a certificate.
pub fn rsa_public_key_from_pem(pem: &[u8]) -> Result<rsa::RsaPublicKey, MeasureError> {
    use pkcs1::DecodeRsaPublicKey;
    use pkcs8::DecodePublicKey;
    let text = String::from_utf8_lossy(pem);
    if let Ok(k) = rsa::RsaPublicKey::from_public_key_pem(text.trim()) {
        return Ok(k);
    }
    if let Ok(k) = rsa::RsaPublicKey::from_pkcs1_pem(text.trim()) {
        return Ok(k);
    }
    if let Ok(c) = crate::keys::certificate_from_bytes(pem, "public key") {
        if let Ok(crate::keys::PublicKey::Rsa(k)) = crate::keys::PublicKey::from_certificate(&c) {
            return Ok(k);
        }
    }
    Err(PcrKeyError::NotRsaPublic.into())
}

/// The public key as PEM SubjectPublicKeyInfo (the `.pcrpkey` content ukify writes).
pub fn public_key_pem(key: &rsa::RsaPublicKey) -> Result<String, MeasureError> {
    use pkcs8::EncodePublicKey;
    key.to_public_key_pem(pkcs8::LineEnding::LF)
        .map_err(|e| PcrKeyError::Encode(Box::new(e)).into())
}

/// The bytes an offline signer hashes and signs for a PolicyAuthorize of `pol` with
/// `policy_ref`: `pol`, then SHA-256 of the reference string when there is one. The TPM checks
/// the signature against `aHash = H(approvedPolicy || policyRef)` (TPM 2.0 Part 3 §23.16), and
/// systemd's policyRef is SHA-256 of the string without NUL (systemd issue #43635); without a
/// reference this is `pol` alone, which is what systemd-measure 252–258 signs.
pub fn to_be_signed(pol: &Digest, policy_ref: Option<&str>) -> Vec<u8> {
    let mut v = pol.as_bytes().to_vec();
    if let Some(r) = policy_ref.filter(|r| !r.is_empty()) {
        v.extend_from_slice(HashAlg::Sha256.digest(r.as_bytes()).as_bytes());
    }
    v
}

/// The PolicyPCR digest (PCR 11 = value, from the zero policy, SHA-256 session) of every bank
/// and phase of `pred`, in `pred`'s order.
pub fn pcr11_policies(pred: &Pcr11Prediction) -> Result<Vec<(HashAlg, Vec<Digest>)>, MeasureError> {
    let pcr11 = PcrIndex::new(PCR_KERNEL_BOOT)?;
    let mut out = Vec::new();
    for (bi, bank) in pred.banks.iter().enumerate() {
        let sel = PcrSelection::new(*bank, [pcr11]);
        let pols = pred
            .phases
            .iter()
            .map(|ph| {
                policy::policy_pcr(
                    &policy::zero_policy(),
                    std::slice::from_ref(&sel),
                    &[ph.values[bi].clone()],
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push((*bank, pols));
    }
    Ok(out)
}

/// The PCR 11 policy of every bank and phase of `pred`, unsigned, as `systemd-measure
/// policy-digest` prints them (systemd 258 `src/measure/measure.c`, `build_policy_digest(sign =
/// false)`): `pcrs`, `pkfp` when `public` is given, `pol`; plus `tbs` ([`to_be_signed`]), which
/// systemd writes since PR #43642 so that an offline signer need not know the rules.
pub fn policy_digests(
    pred: &Pcr11Prediction,
    public: Option<&rsa::RsaPublicKey>,
) -> Result<PcrSignatures, MeasureError> {
    policy_digests_bound(pred, public, None)
}

/// [`policy_digests`], each policy bound to the epoch `nv` when given (`pol` is then PolicyPCR
/// ∧ PolicyNV, and the entries carry `nvIndex`, `nvName`, `epoch`).
pub fn policy_digests_bound(
    pred: &Pcr11Prediction,
    public: Option<&rsa::RsaPublicKey>,
    nv: Option<&NvEpoch>,
) -> Result<PcrSignatures, MeasureError> {
    let pkfp = public
        .map(|k| public_key_fingerprint(k).map(|d| d.to_hex()))
        .transpose()?;
    Ok(pcr11_policies_bound(pred, nv)?
        .into_iter()
        .map(|(bank, pols)| {
            let entries = pols
                .iter()
                .map(|pol| {
                    let mut e = PcrSignature {
                        pcrs: vec![PCR_KERNEL_BOOT],
                        pkfp: pkfp.clone(),
                        policy_ref: None,
                        pol: pol.to_hex(),
                        tbs: Some(hex::encode(to_be_signed(pol, None))),
                        sig: None,
                        nv_index: None,
                        nv_name: None,
                        epoch: None,
                    };
                    e.set_nv_epoch(nv);
                    e
                })
                .collect();
            (bank, entries)
        })
        .collect())
}

/// [`pcr11_policies`], each extended by `nv`'s PolicyNV when given.
fn pcr11_policies_bound(
    pred: &Pcr11Prediction,
    nv: Option<&NvEpoch>,
) -> Result<Vec<(HashAlg, Vec<Digest>)>, MeasureError> {
    let mut pols = pcr11_policies(pred)?;
    if let Some(nv) = nv {
        for (_, p) in pols.iter_mut() {
            for d in p.iter_mut() {
                *d = nv.extend(d);
            }
        }
    }
    Ok(pols)
}

/// The RSA public key of a PCR policy signer, refusing other keys ([`PcrKeyError::NotRsa`]:
/// systemd verifies `.pcrsig` with RSASSA only).
pub fn pcr_signer_public(
    key: &dyn crate::signer::Signer,
) -> Result<rsa::RsaPublicKey, MeasureError> {
    match key.public_key() {
        crate::keys::PublicKey::Rsa(k) => Ok(k),
        _ => Err(PcrKeyError::NotRsa.into()),
    }
}

/// Check a PCR policy signer: RSA, and (if given) the public key or certificate PEM at
/// `public` is its key. Returns the public key.
pub fn check_pcr_signer(
    key: &dyn crate::signer::Signer,
    public: Option<&Path>,
) -> Result<rsa::RsaPublicKey, MeasureError> {
    let k = pcr_signer_public(key)?;
    if let Some(p) = public {
        let pem = std::fs::read(p).map_err(|source| MeasureError::Input {
            path: p.to_path_buf(),
            source,
        })?;
        if rsa_public_key_from_pem(&pem)? != k {
            return Err(PcrKeyError::Mismatch(p.to_path_buf()).into());
        }
    }
    Ok(k)
}

/// Sign the PCR 11 policy of every bank and phase of `pred`, like `systemd-measure sign`
/// (252–258): `pol` is PolicyPCR(PCR 11 = value) from the zero policy; `sig` is
/// RSASSA-PKCS1-v1_5 over `pol` with the bank's hash (258's `digest_and_sign(p->md, ...)`;
/// later systemd always hashes with SHA-256, the same for the sha256 bank). `key` is any
/// [`crate::signer::Signer`] with an RSA key: a key file, a PKCS#11 token.
pub fn sign_policies(
    pred: &Pcr11Prediction,
    key: &dyn crate::signer::Signer,
) -> Result<PcrSignatures, MeasureError> {
    sign_policies_bound(pred, key, None)
}

/// [`sign_policies`], each policy bound to the epoch `nv` when given: the signature approves
/// PolicyPCR ∧ PolicyNV(counter ≤ epoch) and stops unsealing once the counter is bumped past
/// the epoch ([`crate::policy::NvEpoch`]).
pub fn sign_policies_bound(
    pred: &Pcr11Prediction,
    key: &dyn crate::signer::Signer,
    nv: Option<&NvEpoch>,
) -> Result<PcrSignatures, MeasureError> {
    let pkfp = public_key_fingerprint(&pcr_signer_public(key)?)?.to_hex();
    let mut out: PcrSignatures = Vec::new();
    for (bank, pols) in pcr11_policies_bound(pred, nv)? {
        let mut entries = Vec::new();
        for pol in pols {
            let sig = key
                .sign(bank, &to_be_signed(&pol, None))
                .map_err(|e| PcrKeyError::Signer(Box::new(e)))?;
            let mut e = PcrSignature {
                pcrs: vec![PCR_KERNEL_BOOT],
                pkfp: Some(pkfp.clone()),
                policy_ref: None,
                pol: pol.to_hex(),
                tbs: None,
                sig: Some(base64::engine::general_purpose::STANDARD.encode(sig)),
                nv_index: None,
                nv_name: None,
                epoch: None,
            };
            e.set_nv_epoch(nv);
            entries.push(e);
        }
        out.push((bank, entries));
    }
    Ok(out)
}

/// Why a `.pcrsig` made elsewhere is refused ([`verify_signatures`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PcrSigVerifyError {
    /// An entry is for another public key than the UKI's.
    #[error("{bank} entry for policy {pol} names key {pkfp}, not the PCR public key {want}")]
    OtherKey {
        /// The bank.
        bank: HashAlg,
        /// The entry's policy digest.
        pol: String,
        /// The entry's key fingerprint.
        pkfp: String,
        /// The expected key's fingerprint.
        want: String,
    },
    /// An entry's policy is not one of the UKI's predicted PCR 11 policies.
    #[error(
        "{bank} policy {pol} is not a PCR 11 policy of this UKI (signed over other PCR values)"
    )]
    OtherPolicy {
        /// The bank.
        bank: HashAlg,
        /// The entry's policy digest.
        pol: String,
    },
    /// A policy digest or `tbs` that is not hex of the right length, or a `tbs` that is not
    /// the to-be-signed bytes of its `pol` and `ref`.
    #[error("{bank} entry for policy {pol}: malformed pol/tbs")]
    Malformed {
        /// The bank.
        bank: HashAlg,
        /// The entry's policy digest.
        pol: String,
    },
    /// An entry without a signature.
    #[error("{bank} policy {pol} has no signature")]
    Unsigned {
        /// The bank.
        bank: HashAlg,
        /// The policy digest.
        pol: String,
    },
    /// A signature that is not base64.
    #[error("{bank} policy {pol}: signature is not base64")]
    Base64 {
        /// The bank.
        bank: HashAlg,
        /// The policy digest.
        pol: String,
        /// The decoder's error.
        #[source]
        source: base64::DecodeError,
    },
    /// A signature the PCR public key does not verify.
    #[error("{bank} policy {pol}: the signature does not verify with the PCR public key")]
    BadSignature {
        /// The bank.
        bank: HashAlg,
        /// The policy digest.
        pol: String,
        /// RSA's error.
        #[source]
        source: rsa::Error,
    },
}

/// Check `.pcrsig` entries made elsewhere before they are embedded: every entry names `key`
/// (when it has `pkfp`), its `pol` is one of `predicted` for its bank (extended by its epoch
/// binding, [`PcrSignature::is_predicted`]), its `tbs` (when given) is
/// the to-be-signed bytes of `pol`/`ref`, and its `sig` verifies with `key` — RSASSA-PKCS1-v1_5
/// over the to-be-signed bytes hashed with the bank's algorithm (systemd-measure 258) or with
/// SHA-256 (later systemd); both agree for sha256.
pub fn verify_signatures(
    sigs: &PcrSignatures,
    key: &rsa::RsaPublicKey,
    predicted: &[(HashAlg, Vec<Digest>)],
) -> Result<(), PcrSigVerifyError> {
    let want = public_key_fingerprint(key)
        .map(|d| d.to_hex())
        .unwrap_or_default();
    for (bank, entries) in sigs {
        let bank = *bank;
        for e in entries {
            let pol = e.pol.clone();
            if let Some(p) = &e.pkfp {
                if !p.eq_ignore_ascii_case(&want) {
                    return Err(PcrSigVerifyError::OtherKey {
                        bank,
                        pol,
                        pkfp: p.clone(),
                        want,
                    });
                }
            }
            let d = Digest::from_hex(HashAlg::Sha256, &e.pol).map_err(|_| {
                PcrSigVerifyError::Malformed {
                    bank,
                    pol: pol.clone(),
                }
            })?;
            let known =
                e.is_predicted(bank, predicted)
                    .map_err(|_| PcrSigVerifyError::Malformed {
                        bank,
                        pol: pol.clone(),
                    })?;
            if !known || e.pcrs != [PCR_KERNEL_BOOT] {
                return Err(PcrSigVerifyError::OtherPolicy { bank, pol });
            }
            let tbs = to_be_signed(&d, e.policy_ref.as_deref());
            if let Some(t) = &e.tbs {
                if hex::decode(t).ok().as_deref() != Some(tbs.as_slice()) {
                    return Err(PcrSigVerifyError::Malformed { bank, pol });
                }
            }
            let Some(sig) = &e.sig else {
                return Err(PcrSigVerifyError::Unsigned { bank, pol });
            };
            let sig = base64::engine::general_purpose::STANDARD
                .decode(sig)
                .map_err(|source| PcrSigVerifyError::Base64 {
                    bank,
                    pol: pol.clone(),
                    source,
                })?;
            let verify = |alg: HashAlg| {
                key.verify(
                    crate::signer::pkcs1v15(alg),
                    alg.digest(&tbs).as_bytes(),
                    &sig,
                )
            };
            if let Err(source) = verify(bank) {
                if bank == HashAlg::Sha256 || verify(HashAlg::Sha256).is_err() {
                    return Err(PcrSigVerifyError::BadSignature { bank, pol, source });
                }
            }
        }
    }
    Ok(())
}

/// Put the signatures of `signed` into the matching entries of `digests` (the `.pcrsig` a
/// `--policy-digest` build embedded), as ukify's `apply_pcr_signatures` (systemd 262
/// `src/ukify/ukify.py`): same bank, and the same `tbs` when both have one, else the same
/// `pol` and `ref`. Returns the entries of `digests` left without a signature.
pub fn apply_signatures(
    digests: &mut PcrSignatures,
    signed: &PcrSignatures,
) -> Vec<(HashAlg, String)> {
    let mut unsigned = Vec::new();
    for (bank, entries) in digests.iter_mut() {
        for e in entries.iter_mut() {
            let found = signed
                .iter()
                .filter(|(b, _)| b == bank)
                .flat_map(|(_, s)| s)
                .find(|s| match (&e.tbs, &s.tbs) {
                    (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                    _ => e.pol.eq_ignore_ascii_case(&s.pol) && e.policy_ref == s.policy_ref,
                });
            match found.and_then(|s| s.sig.clone()) {
                Some(sig) => e.sig = Some(sig),
                None => unsigned.push((*bank, e.pol.clone())),
            }
        }
    }
    unsigned
}

/// Where systemd-stub leaves the booted UKI's `.pcrsig` (systemd-stub(7): it is passed to the
/// initrd as `/.extra/tpm2-pcr-signature.json` and copied to `/run/systemd/`), in the order
/// they are searched.
pub const DEFAULT_PCRSIG_PATHS: [&str; 2] = [
    "/run/systemd/tpm2-pcr-signature.json",
    "/.extra/tpm2-pcr-signature.json",
];

/// Read and parse a `.pcrsig` JSON file, at most [`crate::fsutil::MAX_JSON_INPUT`] bytes (in
/// the initramfs it lies where the host may have planted a huge one).
pub fn read_signatures(path: &Path) -> Result<PcrSignatures, MeasureError> {
    let text =
        crate::fsutil::read_bounded(path, crate::fsutil::MAX_JSON_INPUT).map_err(|source| {
            MeasureError::Input {
                path: path.to_path_buf(),
                source,
            }
        })?;
    parse_signatures(&text)
}

/// The signatures at the first of [`DEFAULT_PCRSIG_PATHS`] that exists; `None` if none does.
pub fn default_signatures() -> Result<Option<PcrSignatures>, MeasureError> {
    match DEFAULT_PCRSIG_PATHS
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
    {
        Some(p) => read_signatures(p).map(Some),
        None => Ok(None),
    }
}

/// Parse `.pcrsig` JSON (a trailing NUL is tolerated, as the spec writes one).
pub fn parse_signatures(text: &[u8]) -> Result<PcrSignatures, MeasureError> {
    let text = String::from_utf8_lossy(text);
    let v: serde_json::Value = serde_json::from_str(text.trim_end_matches('\0').trim())
        .map_err(|e| MeasureError::Json(PcrSignatureJsonError::Syntax(e)))?;
    let obj = v
        .as_object()
        .ok_or(MeasureError::Json(PcrSignatureJsonError::NotObject))?;
    let mut out = Vec::new();
    for (k, arr) in obj {
        let bank: HashAlg = k
            .parse()
            .map_err(|e| MeasureError::Json(PcrSignatureJsonError::Bank(e)))?;
        let entries: Vec<PcrSignature> = serde_json::from_value(arr.clone()).map_err(|source| {
            MeasureError::Json(PcrSignatureJsonError::Entries {
                bank: k.clone(),
                source,
            })
        })?;
        out.push((bank, entries));
    }
    Ok(out)
}

/// Merge `add` into `base` (systemd-measure `--append`, ukify `combine_signatures`):
/// entries already present are not repeated.
pub fn merge_signatures(base: &mut PcrSignatures, add: PcrSignatures) {
    for (bank, entries) in add {
        let slot = match base.iter_mut().position(|(b, _)| *b == bank) {
            Some(i) => &mut base[i].1,
            None => {
                base.push((bank, Vec::new()));
                let last = base.len() - 1;
                &mut base[last].1
            }
        };
        for e in entries {
            if !slot.contains(&e) {
                slot.push(e);
            }
        }
    }
}

/// `.pcrsig` as a JSON value, banks in order.
pub fn signatures_json(s: &PcrSignatures) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (bank, entries) in s {
        m.insert(
            bank.name().to_string(),
            serde_json::to_value(entries).unwrap_or_default(),
        );
    }
    serde_json::Value::Object(m)
}

/// `systemd-measure calculate --json` output as a JSON value.
pub fn calculate_json(pred: &Pcr11Prediction) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for (bi, bank) in pred.banks.iter().enumerate() {
        let arr: Vec<serde_json::Value> = pred
            .phases
            .iter()
            .map(|p| {
                let mut o = serde_json::Map::new();
                if !p.phase.is_after_stub() {
                    o.insert("phase".into(), p.phase.as_str().into());
                }
                o.insert("pcr".into(), PCR_KERNEL_BOOT.into());
                o.insert("hash".into(), p.values[bi].to_hex().into());
                serde_json::Value::Object(o)
            })
            .collect();
        m.insert(bank.name().into(), arr.into());
    }
    serde_json::Value::Object(m)
}

/// Format JSON the way systemd's `json_variant_dump(JSON_FORMAT_PRETTY)` does: tab
/// indentation, `"key" : value`, one array element per line.
pub fn systemd_pretty_json(v: &serde_json::Value) -> String {
    fn go(v: &serde_json::Value, depth: usize, out: &mut String) {
        let ind = |d: usize| "\t".repeat(d);
        match v {
            serde_json::Value::Object(m) if !m.is_empty() => {
                out.push_str("{\n");
                let n = m.len();
                for (i, (k, val)) in m.iter().enumerate() {
                    out.push_str(&ind(depth + 1));
                    out.push_str(&serde_json::Value::String(k.clone()).to_string());
                    out.push_str(" : ");
                    go(val, depth + 1, out);
                    out.push_str(if i + 1 < n { ",\n" } else { "\n" });
                }
                out.push_str(&ind(depth));
                out.push('}');
            }
            serde_json::Value::Array(a) if !a.is_empty() => {
                out.push_str("[\n");
                let n = a.len();
                for (i, val) in a.iter().enumerate() {
                    out.push_str(&ind(depth + 1));
                    go(val, depth + 1, out);
                    out.push_str(if i + 1 < n { ",\n" } else { "\n" });
                }
                out.push_str(&ind(depth));
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut s = String::new();
    go(v, 0, &mut s);
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stub measures each section's name with its NUL, then its data, and
    /// systemd-pcrphase each phase word (systemd src/boot/efi/stub.c, src/boot/pcrphase.c;
    /// the name digests match systemd issue #36502's event log).
    #[test]
    fn section_name_and_phase_digests() {
        let sha = HashAlg::Sha256;
        let sections: Vec<SectionDigests> =
            [UkiSection::Cmdline, UkiSection::Osrel, UkiSection::Linux]
                .iter()
                .map(|n| SectionDigests {
                    section: *n,
                    size: 1,
                    digests: vec![sha.digest(n.name().as_bytes())],
                })
                .collect();
        let phases = Phase::list(&["", "enter-initrd"]).unwrap();
        let p = predict_pcr11(&sections, None, &[sha], &phases);
        let names: Vec<String> = p
            .events
            .iter()
            .step_by(2)
            .map(|e| e.digests[&sha].to_hex())
            .collect();
        assert_eq!(
            names,
            [
                "0da293e37ad5511c59be47993769aacb91b243f7d010288e118dc90e95aaef5a",
                "3fb9e4e3cc810d4326b5c13cef18aee1f9df8c5f4f7f5b96665724fa3b846e08",
                "461203a89f23e36c3a4dc817f905b00484d2cf7e7d9376f13df91c41d84abe46",
            ],
            ".linux, .osrel, .cmdline in measurement order"
        );
        let ext = |pcr: &Digest, d: &[u8]| sha.digest(&[pcr.as_bytes(), d].concat());
        let mut want = Digest::zero(sha);
        for e in &p.events {
            want = ext(&want, e.digests[&sha].as_bytes());
        }
        assert_eq!(p.value(sha, &phases[0]), Some(&want));
        let word = hex::decode("51e6b92f405d1f98d96e3de343d61d420ad6923b25de21d766f9298192f14fed")
            .unwrap();
        assert_eq!(p.value(sha, &phases[1]), Some(&ext(&want, &word)));
    }

    #[test]
    fn rules_by_version() {
        assert!(!StubRules::new(252).measures(UkiSection::Uname));
        assert!(StubRules::new(254).measures(UkiSection::Sbat));
        assert!(!StubRules::new(257).measures(UkiSection::Pcrsig));
        assert_eq!(stub_major("252.39-1~deb12u2"), Some(252));
    }

    #[test]
    fn stub_258_measures_efifw_and_257_does_not() {
        let rules = |v: &str| StubRules::new(stub_major(v).unwrap());
        let (s257, s258) = (rules("257.9-1~deb13u1"), rules("258.1-2"));
        assert!(!s257.measures(UkiSection::Efifw));
        assert!(s258.measures(UkiSection::Efifw));
        for s in [UkiSection::Profile, UkiSection::Dtbauto, UkiSection::Hwids] {
            assert!(s257.measures(s) && s258.measures(s));
        }
        assert!(!s258.measures(UkiSection::Pcrsig));
        // In the stub's order: last, after .hwids (uki.h's enum).
        assert_eq!(
            UkiSection::MEASUREMENT_ORDER.last(),
            Some(&UkiSection::Efifw)
        );

        // A UKI's .efifw counts in PCR 11 for a 258 stub only.
        let sha = HashAlg::Sha256;
        let sec = |section, data: &[u8]| SectionDigests {
            section,
            size: data.len() as u64,
            digests: vec![sha.digest(data)],
        };
        let parts = [
            sec(UkiSection::Linux, b"kernel"),
            sec(UkiSection::Efifw, b"fw"),
        ];
        let ph = [Phase::after_stub()];
        let p257 = predict_pcr11(&parts, Some(s257), &[sha], &ph);
        let p258 = predict_pcr11(&parts, Some(s258), &[sha], &ph);
        assert_eq!(p257.events.len(), 2);
        assert_eq!(p258.events.len(), 4);
        assert_eq!(p258.events[2].description, ".efifw");
        assert_ne!(p257.phases[0].values, p258.phases[0].values);
    }

    #[test]
    fn phases_sorted_and_normalised() {
        let p = phase_list(&["enter-initrd", "", "::enter-initrd:"]).unwrap();
        assert_eq!(
            p,
            vec![Phase::after_stub(), Phase::parse("enter-initrd").unwrap()]
        );
        assert_eq!(phase_list::<&str>(&[]).unwrap().len(), 4);
    }

    #[test]
    fn empty_sections_are_skipped() {
        let banks = [HashAlg::Sha256];
        let s = vec![SectionDigests {
            section: UkiSection::Cmdline,
            size: 0,
            digests: vec![HashAlg::Sha256.digest(b"")],
        }];
        let p = predict_pcr11(&s, None, &banks, &[Phase::after_stub()]);
        assert!(p.events.is_empty());
        assert_eq!(
            p.value(HashAlg::Sha256, &Phase::after_stub()).unwrap(),
            &Digest::zero(HashAlg::Sha256)
        );
    }
}
