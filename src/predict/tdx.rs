//! Intel TDX RTMR\[1\] and RTMR\[2\] for a UKI boot, predicted from the image (the TDX analogue
//! of PCR 4 and PCR 11/12/13; register model and PCR mapping in [`crate::ccel`]).
//!
//! - **RTMR\[1\]** (PCR 2–6 events, UEFI 2.10 §38.4.1): OVMF/TDVF measures every image it
//!   starts (Authenticode SHA-384, EV_EFI_BOOT_SERVICES_APPLICATION), the EV_EFI_ACTION
//!   "Calling EFI Application from Boot Option" with one separator at ReadyToBoot, and the two
//!   ExitBootServices actions. Booted from disk the action and separator come first, then the
//!   GPT and the images; with QEMU direct boot (`-kernel uki.efi`) the image is loaded (and
//!   measured) before ReadyToBoot, so it comes first and there is no GPT event. A UKI has no
//!   Linux setup header, so QEMU never patches it: the measured image is the file.
//! - **RTMR\[2\]** (PCR 8–15 events): systemd-stub ≥ 256 measures its EV_IPL events through
//!   `EFI_CC_MEASUREMENT_PROTOCOL` as well as the TPM (`tpm_log_ipl_event`, systemd PR
//!   #30996): the PCR 11 section pairs, then the PCR 12 addon command line and sidecar
//!   archives and the PCR 13 system extensions, each digest the SHA-384 of the same bytes.
//!   EV_EVENT_TAG events (the profile number) go to the TPM only. Stubs before 256 measure
//!   nothing into RTMRs. Without a vTPM the Linux EFI stub measures its load options and
//!   initrd through the CC protocol too (optional, [`TdxOptions::linux_stub_events`]).
//!
//! Not predicted: MRTD and RTMR\[0\] (firmware build, memory size, ACPI tables, variables —
//! platform reference values), and a command line passed by a boot loader.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::ccel::{Rtmr, RtmrValues};
use crate::eventlog::{extend, EventType};
use crate::firmware::{BootImage, CALLING_EFI_APPLICATION, SEPARATOR};
use crate::hash::{Digest, HashAlg};
use crate::kernel_config::{AddonError, Addons};
use crate::measure::{event, EventPayload, MeasureError, PredictedEvent, StubRules};
use crate::pcr::PcrIndex;
use crate::ukiread::UkiSection;

/// EV_EFI_ACTION at ExitBootServices entry (PCR 5; EDK2 `EFI_EXIT_BOOT_SERVICES_INVOCATION`).
pub const EXIT_BOOT_SERVICES_INVOCATION: &str = "Exit Boot Services Invocation";
/// EV_EFI_ACTION after ExitBootServices succeeded (PCR 5; EDK2
/// `EFI_EXIT_BOOT_SERVICES_SUCCEEDED`).
pub const EXIT_BOOT_SERVICES_SUCCEEDED: &str = "Exit Boot Services Returned with Success";
/// The first systemd release whose stub measures into the CC protocol (PR #30996, #31939).
pub const FIRST_CC_STUB: u32 = 256;

const BANK: [HashAlg; 1] = [HashAlg::Sha384];

/// A predicted RTMR: its events (each with the PCR it maps from) and the final value.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct RtmrPrediction {
    /// The register.
    #[serde(serialize_with = "ser_display")]
    pub rtmr: Rtmr,
    /// Events in order (digests in the sha384 bank).
    pub events: Vec<PredictedEvent>,
    /// The final value.
    pub value: Digest,
}

fn ser_display<S: serde::Serializer>(r: &Rtmr, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(r)
}

impl RtmrPrediction {
    fn fold(rtmr: Rtmr, events: Vec<PredictedEvent>) -> Self {
        let value = events
            .iter()
            .filter_map(|e| e.digests.get(&HashAlg::Sha384))
            .fold(Rtmr::initial(), |acc, d| extend(&acc, d));
        RtmrPrediction {
            rtmr,
            events,
            value,
        }
    }
}

/// How the firmware reaches the first image, which fixes the RTMR\[1\] event order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootPath {
    /// QEMU `-kernel`: the image first, then the ReadyToBoot action and separator.
    Direct,
    /// A boot option on a disk: action, separator, the GPT event (its UEFI_GPT_DATA, if
    /// known), then the images.
    Disk {
        /// The EV_EFI_GPT_EVENT data.
        gpt: Option<Vec<u8>>,
    },
}

fn action(pcr: PcrIndex, text: &str) -> PredictedEvent {
    event(
        pcr,
        EventType::EfiAction,
        text.into(),
        EventPayload::HashOfData(text.as_bytes().to_vec()),
        &BANK,
    )
}

/// RTMR\[1\] for the images the firmware starts, in order (their Authenticode SHA-384 taken
/// from [`BootImage::authenticode`]), followed by the two ExitBootServices actions.
pub fn predict_rtmr1(path: &BootPath, images: &[BootImage]) -> RtmrPrediction {
    let pcr4 = PcrIndex::of::<4>();
    let pcr5 = PcrIndex::of::<5>();
    let ready_to_boot = [
        action(pcr4, CALLING_EFI_APPLICATION),
        event(
            pcr4,
            EventType::Separator,
            "separator".into(),
            EventPayload::HashOfData(SEPARATOR.to_vec()),
            &BANK,
        ),
    ];
    let image_events = images.iter().map(|img| {
        event(
            pcr4,
            EventType::EfiBootServicesApplication,
            img.description.clone(),
            EventPayload::Digests(img.authenticode.clone()),
            &BANK,
        )
    });
    let mut events = Vec::new();
    match path {
        BootPath::Direct => {
            events.extend(image_events);
            events.extend(ready_to_boot);
        }
        BootPath::Disk { gpt } => {
            events.extend(ready_to_boot);
            if let Some(g) = gpt {
                events.push(event(
                    pcr5,
                    EventType::EfiGptEvent,
                    "GPT".into(),
                    EventPayload::HashOfData(g.clone()),
                    &BANK,
                ));
            }
            events.extend(image_events);
        }
    }
    events.push(action(pcr5, EXIT_BOOT_SERVICES_INVOCATION));
    events.push(action(pcr5, EXIT_BOOT_SERVICES_SUCCEEDED));
    RtmrPrediction::fold(Rtmr::Rtmr1, events)
}

/// What the boot adds to RTMR\[2\] besides the UKI's sections.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct TdxOptions<'a> {
    /// Use this stub version's rules instead of the one in `.sdmagic`.
    pub stub_version: Option<u32>,
    /// The profile the stub boots (its EV_EVENT_TAG goes to the TPM only).
    pub profile: u32,
    /// Addons and sidecar files the stub finds (PCR 12/13 EV_IPL events).
    pub addons: Option<&'a Addons>,
    /// The guest has no vTPM, so the Linux EFI stub measures its load options and initrd
    /// into RTMR\[2\] through the CC protocol (kernels that fall back to it).
    pub linux_stub_events: bool,
}

/// Why RTMRs could not be predicted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TdxError {
    /// Reading or hashing the UKI.
    #[error(transparent)]
    Measure(#[from] MeasureError),
    /// An addon or sidecar file.
    #[error(transparent)]
    Addon(#[from] AddonError),
    /// Reading the UKI's `.cmdline`.
    #[error("reading the UKI's .cmdline")]
    Section(#[source] crate::ukiread::InspectError),
    /// The Linux EFI stub's events are not predicted for this boot.
    #[error("the Linux EFI stub's RTMR[2] events are not predicted with {0}: the stub then hands the kernel a command line or initrd bootchain does not model")]
    LinuxEventsUnsupported(&'static str),
}

/// RTMR\[1\] (direct boot) and RTMR\[2\] of a UKI.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct TdxPrediction {
    /// The stub version whose rules were applied.
    pub stub_version: u32,
    /// RTMR\[1\].
    pub rtmr1: RtmrPrediction,
    /// RTMR\[2\].
    pub rtmr2: RtmrPrediction,
}

impl TdxPrediction {
    /// The predicted values.
    pub fn values(&self) -> RtmrValues {
        let mut v = RtmrValues::new();
        v.insert(Rtmr::Rtmr1, self.rtmr1.value.clone());
        v.insert(Rtmr::Rtmr2, self.rtmr2.value.clone());
        v
    }

    /// `tdx predict --json`: the stub version, both registers' events, and `values`
    /// (`{"rtmr1": "hex", "rtmr2": "hex"}`, what `eventlog verify --ccel --pcrs` reads).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "stub_version": self.stub_version,
            "rtmr1": self.rtmr1,
            "rtmr2": self.rtmr2,
            "values": self.values().to_json(),
        })
    }
}

/// RTMR\[2\] from a UKI's section digests (sha384) as a stub of `stub_version` boots it, plus
/// the stub's PCR 12/13 EV_IPL events `stub_events` (see the module documentation) and the
/// Linux EFI stub's `linux_events`. Stubs before [`FIRST_CC_STUB`] add nothing.
pub fn predict_rtmr2(
    sections: &[crate::measure::SectionDigests],
    stub_version: u32,
    stub_events: Vec<PredictedEvent>,
    linux_events: Vec<PredictedEvent>,
) -> RtmrPrediction {
    let mut events = Vec::new();
    if stub_version >= FIRST_CC_STUB {
        let pcr11 =
            crate::measure::predict_pcr11(sections, Some(StubRules::new(stub_version)), &BANK, &[]);
        events.extend(pcr11.events);
        events.extend(
            stub_events
                .into_iter()
                .filter(|e| e.event_type != EventType::EventTag),
        );
    }
    events.extend(linux_events);
    RtmrPrediction::fold(Rtmr::Rtmr2, events)
}

/// Predict RTMR\[1\] for QEMU direct boot of `uki` and RTMR\[2\] for its stub.
///
/// ```no_run
/// use bootchain::tdx::{predict_tdx_uki, TdxOptions};
/// let p = predict_tdx_uki("uki.efi".as_ref(), &TdxOptions::default())?;
/// println!("rtmr1={} rtmr2={}", p.rtmr1.value, p.rtmr2.value);
/// # Ok::<(), bootchain::tdx::TdxError>(())
/// ```
pub fn predict_tdx_uki(uki: &Path, opts: &TdxOptions<'_>) -> Result<TdxPrediction, TdxError> {
    let io = |source| MeasureError::Input {
        path: uki.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(uki).map_err(io)?;
    let auth = crate::authenticode::image_digests(&mut f, &BANK).map_err(|source| {
        MeasureError::Image {
            path: uki.to_path_buf(),
            source,
        }
    })?;
    let image = BootImage {
        description: format!("UKI {}", uki.display()),
        authenticode: auth.into_iter().map(|d| (d.alg(), d)).collect(),
    };
    let rtmr1 = predict_rtmr1(&BootPath::Direct, &[image]);

    let (sections, version) = crate::measure::uki_profile_sections(uki, &BANK, opts.profile)?;
    let stub_version = match opts.stub_version {
        Some(v) => v,
        None => version
            .as_deref()
            .and_then(crate::measure::stub_major)
            .ok_or_else(|| MeasureError::NoStubVersion(uki.to_path_buf()))?,
    };
    let stub_events = match opts.addons {
        Some(a) => crate::kernel_config::stub_ipl_events(a, &BANK)?,
        None => Vec::new(),
    };
    let linux_events = if opts.linux_stub_events {
        linux_stub_events(uki, opts, &sections)?
    } else {
        Vec::new()
    };
    let rtmr2 = predict_rtmr2(&sections, stub_version, stub_events, linux_events);
    Ok(TdxPrediction {
        stub_version,
        rtmr1,
        rtmr2,
    })
}

/// The Linux EFI stub's two events (as PCR 9 has them) when the systemd stub hands it the
/// UKI's own `.cmdline` and `.initrd` unchanged; other cases are refused.
fn linux_stub_events(
    uki: &Path,
    opts: &TdxOptions<'_>,
    sections: &[crate::measure::SectionDigests],
) -> Result<Vec<PredictedEvent>, TdxError> {
    if opts.profile != 0 {
        return Err(TdxError::LinuxEventsUnsupported("a profile other than 0"));
    }
    if opts.addons.is_some() {
        return Err(TdxError::LinuxEventsUnsupported("addons or sidecar files"));
    }
    if sections.iter().any(|s| s.section == UkiSection::Ucode) {
        return Err(TdxError::LinuxEventsUnsupported("a .ucode section"));
    }
    let cmdline = crate::ukiread::read_section(uki, ".cmdline").map_err(TdxError::Section)?;
    let initrd: Option<BTreeMap<HashAlg, Digest>> = sections
        .iter()
        .find(|s| s.section == UkiSection::Initrd)
        .map(|s| s.digests.iter().map(|d| (d.alg(), d.clone())).collect());
    Ok(crate::firmware::predict_pcr9(cmdline.as_deref(), initrd.as_ref(), &BANK).events)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixed events' digests as TDVF logs them (go-eventlog's cos-113 CCEL, MR index 2).
    #[test]
    fn fixed_event_digests() {
        let d = |s: &str| HashAlg::Sha384.digest(s.as_bytes()).to_hex();
        assert!(d(CALLING_EFI_APPLICATION).starts_with("77a0dab2312b4e1e"));
        assert!(d(EXIT_BOOT_SERVICES_INVOCATION).starts_with("214b0bef13797560"));
        assert!(d(EXIT_BOOT_SERVICES_SUCCEEDED).starts_with("0a2e01c85deae718"));
        assert!(HashAlg::Sha384
            .digest(&SEPARATOR)
            .to_hex()
            .starts_with("394341b7182cd227"));
    }

    #[test]
    fn old_stubs_add_nothing_and_tags_are_dropped() {
        let s = crate::measure::SectionDigests {
            section: UkiSection::Linux,
            size: 3,
            digests: vec![HashAlg::Sha384.digest(b"abc")],
        };
        let tag = event(
            PcrIndex::of::<12>(),
            EventType::EventTag,
            "profile 1".into(),
            EventPayload::HashOfData(b"1".to_vec()),
            &BANK,
        );
        let old = predict_rtmr2(std::slice::from_ref(&s), 255, vec![tag.clone()], vec![]);
        assert!(old.events.is_empty());
        assert_eq!(old.value, Rtmr::initial());
        let new = predict_rtmr2(&[s], 256, vec![tag], vec![]);
        assert_eq!(new.events.len(), 2);
        assert!(new.events.iter().all(|e| e.event_type == EventType::Ipl));
    }
}
