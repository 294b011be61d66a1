//! PCR 4, 7 and 9 as UEFI firmware (EDK2/OVMF) and the Linux EFI stub measure them, and
//! whole-boot predictions (a UKI or a chain of images, the next boot's event log). The UEFI
//! structures these measurements are made of are in [`crate::efi`].
//!
//! Sources: TCG PC Client Platform Firmware Profile (PFP) §3.3.4.4 (PCR 4), §3.3.4.8 (PCR 7),
//! §10.4.4 (UEFI_VARIABLE_DATA); UEFI 2.10 §32.4.1 (EFI_SIGNATURE_LIST). Rules established from
//! real OVMF 2022.11 boots (test-vectors/boots): PCR 4 gets EV_EFI_ACTION "Calling EFI
//! Application from Boot Option", EV_SEPARATOR, then one EV_EFI_BOOT_SERVICES_APPLICATION per
//! image with its Authenticode digest — and with Secure Boot off, the 252 stub's LoadImage of
//! `.linux` adds the kernel's digest; with Secure Boot on it does not (the stub's security
//! override bypasses the measurement). PCR 7 gets SecureBoot, PK, KEK, db, dbx as
//! EV_EFI_VARIABLE_DRIVER_CONFIG, EV_SEPARATOR, then one EV_EFI_VARIABLE_AUTHORITY per distinct
//! db entry that verified an image.

use std::collections::BTreeMap;

pub use crate::efi::*;
use crate::eventlog::EventType;
use crate::hash::{Digest, HashAlg};
use crate::measure::PredictedEvent;

/// The Secure Boot variables as the firmware will measure them.
#[derive(Clone, Debug, Default)]
pub struct SecureBootState {
    /// SecureBoot = 1.
    pub enabled: bool,
    /// PK content (signature lists), empty if unset.
    pub pk: Vec<u8>,
    /// KEK content.
    pub kek: Vec<u8>,
    /// db content.
    pub db: Vec<u8>,
    /// dbx content.
    pub dbx: Vec<u8>,
}

impl SecureBootState {
    /// The db entries, in order.
    pub fn db_entries(&self) -> Result<Vec<SignatureData>, FirmwareError> {
        Ok(parse_signature_lists(&self.db)?
            .into_iter()
            .filter(|l| l.sig_type == EFI_CERT_X509)
            .flat_map(|l| l.entries)
            .collect())
    }

    /// The EV_EFI_VARIABLE_DRIVER_CONFIG payloads, in EDK2's order (`mVariableType[]`).
    pub fn driver_config_variables(&self) -> Vec<VariableData> {
        vec![
            VariableData {
                guid: EFI_GLOBAL_VARIABLE,
                name: "SecureBoot".into(),
                data: vec![u8::from(self.enabled)],
            },
            VariableData {
                guid: EFI_GLOBAL_VARIABLE,
                name: "PK".into(),
                data: self.pk.clone(),
            },
            VariableData {
                guid: EFI_GLOBAL_VARIABLE,
                name: "KEK".into(),
                data: self.kek.clone(),
            },
            VariableData {
                guid: EFI_IMAGE_SECURITY_DATABASE,
                name: "db".into(),
                data: self.db.clone(),
            },
            VariableData {
                guid: EFI_IMAGE_SECURITY_DATABASE,
                name: "dbx".into(),
                data: self.dbx.clone(),
            },
        ]
    }
}

/// The db entry whose certificate verifies `image`'s signature (the authority EDK2 logs).
pub fn authorizing_db_entry(
    image: &std::path::Path,
    db: &[SignatureData],
) -> Option<SignatureData> {
    let certs: Vec<(usize, x509_cert::Certificate)> = db
        .iter()
        .enumerate()
        .filter_map(|(i, e)| Some((i, crate::keys::certificate_from_bytes(&e.data, "db").ok()?)))
        .collect();
    let anchors: Vec<x509_cert::Certificate> = certs.iter().map(|(_, c)| c.clone()).collect();
    let hit = crate::sign::first_trusting_anchor(image, &anchors).ok()??;
    certs.get(hit).and_then(|(i, _)| db.get(*i)).cloned()
}

pub use crate::measure::PcrPrediction;
use crate::measure::{event, finish, EventPayload};
use crate::pcr::PcrIndex;

/// The EV_EFI_ACTION string before the first boot option's application (PFP §10.4.4).
pub const CALLING_EFI_APPLICATION: &str = "Calling EFI Application from Boot Option";
/// EV_SEPARATOR data (PFP §3.3.2.2: 4 zero bytes in PCRs 0-7).
pub const SEPARATOR: [u8; 4] = [0; 4];

/// One image the firmware loads, with its Authenticode digest per bank.
#[derive(Clone, Debug)]
pub struct BootImage {
    /// What it is ("UKI", "kernel from .linux", a path).
    pub description: String,
    /// Authenticode digests.
    pub authenticode: BTreeMap<HashAlg, Digest>,
}

/// PCR 4: the boot-option action, the separator, then each image's Authenticode digest.
pub fn predict_pcr4(images: &[BootImage], banks: &[HashAlg]) -> PcrPrediction {
    let mut ev = vec![
        event(
            PcrIndex::of::<4>(),
            EventType::EfiAction,
            CALLING_EFI_APPLICATION.into(),
            EventPayload::HashOfData(CALLING_EFI_APPLICATION.as_bytes().to_vec()),
            banks,
        )
        .with_data(CALLING_EFI_APPLICATION.as_bytes().to_vec()),
        event(
            PcrIndex::of::<4>(),
            EventType::Separator,
            "separator".into(),
            EventPayload::HashOfData(SEPARATOR.to_vec()),
            banks,
        )
        .with_data(SEPARATOR.to_vec()),
    ];
    for img in images {
        ev.push(event(
            PcrIndex::of::<4>(),
            EventType::EfiBootServicesApplication,
            img.description.clone(),
            EventPayload::Digests(img.authenticode.clone()),
            banks,
        ));
    }
    finish(PcrIndex::of::<4>(), ev, banks)
}

/// PCR 7: the Secure Boot variables, the separator, then one authority event per distinct db
/// entry in `authorities` (in first-use order).
pub fn predict_pcr7(
    state: &SecureBootState,
    authorities: &[SignatureData],
    banks: &[HashAlg],
) -> PcrPrediction {
    let mut ev: Vec<PredictedEvent> = state
        .driver_config_variables()
        .into_iter()
        .map(|v| {
            event(
                PcrIndex::of::<7>(),
                EventType::EfiVariableDriverConfig,
                v.name.clone(),
                EventPayload::HashOfData(v.to_bytes()),
                banks,
            )
            .with_data(v.to_bytes())
        })
        .collect();
    ev.push(
        event(
            PcrIndex::of::<7>(),
            EventType::Separator,
            "separator".into(),
            EventPayload::HashOfData(SEPARATOR.to_vec()),
            banks,
        )
        .with_data(SEPARATOR.to_vec()),
    );
    let mut seen: Vec<&SignatureData> = Vec::new();
    for a in authorities {
        if seen.contains(&a) {
            continue;
        }
        seen.push(a);
        let v = VariableData {
            guid: EFI_IMAGE_SECURITY_DATABASE,
            name: "db".into(),
            data: a.to_bytes(),
        };
        ev.push(
            event(
                PcrIndex::of::<7>(),
                EventType::EfiVariableAuthority,
                format!("db entry owned by {}", a.owner),
                EventPayload::HashOfData(v.to_bytes()),
                banks,
            )
            .with_data(v.to_bytes()),
        );
    }
    finish(PcrIndex::of::<7>(), ev, banks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trip_and_byte_order() {
        let g: EfiGuid = "8be4df61-93ca-11d2-aa0d-00e098032b8c".parse().unwrap();
        assert_eq!(g, EFI_GLOBAL_VARIABLE);
        // PFP example byte order.
        assert_eq!(hex::encode(g.0), "61dfe48bca93d211aa0d00e098032b8c");
        assert_eq!(g.to_string(), "8be4df61-93ca-11d2-aa0d-00e098032b8c");
        assert!("nope".parse::<EfiGuid>().is_err());
    }

    #[test]
    fn secure_boot_variable_is_53_bytes() {
        let s = SecureBootState {
            enabled: true,
            ..Default::default()
        };
        assert_eq!(s.driver_config_variables()[0].to_bytes().len(), 53);
        let v = VariableData::parse(&s.driver_config_variables()[0].to_bytes()).unwrap();
        assert_eq!(v.name, "SecureBoot");
        assert!(VariableData::parse(&[0u8; 31]).is_err());
    }

    #[test]
    fn signature_lists_round_trip_and_reject_garbage() {
        let l = vec![
            x509_list(EFI_GLOBAL_VARIABLE, b"certificate"),
            x509_list(EFI_CERT_SHA256, b"x"),
        ];
        let b = encode_signature_lists(&l);
        assert_eq!(parse_signature_lists(&b).unwrap(), l);
        for n in 1..b.len() {
            let _ = parse_signature_lists(&b[..n]);
        }
        assert!(parse_signature_lists(&[0u8; 27]).is_err());
    }
}

/// Linux EFI stub event tag for the load options (`efistub.h` LOAD_OPTIONS_EVENT_TAG_ID).
pub const LOAD_OPTIONS_EVENT_TAG_ID: u32 = 0x8F3B_22ED;
/// Linux EFI stub event tag for the initrd (`efistub.h` INITRD_EVENT_TAG_ID).
pub const INITRD_EVENT_TAG_ID: u32 = 0x8F3B_22EC;

/// PCR 9 as the Linux EFI stub (6.x) measures it: the load options the systemd stub passes
/// (the `.cmdline` as UTF-16LE with its NUL), then the initrd bytes, both as EV_EVENT_TAG.
/// Established from real boots: see test-vectors/boots.
pub fn predict_pcr9(
    cmdline: Option<&[u8]>,
    initrd: Option<&BTreeMap<HashAlg, Digest>>,
    banks: &[HashAlg],
) -> PcrPrediction {
    let mut ev = Vec::new();
    if let Some(c) = cmdline.filter(|c| !c.is_empty()) {
        let mut utf16: Vec<u8> = String::from_utf8_lossy(c)
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        utf16.extend_from_slice(&[0, 0]);
        ev.push(
            event(
                PcrIndex::of::<9>(),
                EventType::EventTag,
                "LOADED_IMAGE::LoadOptions".into(),
                EventPayload::HashOfData(utf16),
                banks,
            )
            .with_data(crate::measure::tagged_event_data(
                LOAD_OPTIONS_EVENT_TAG_ID,
                b"LOADED_IMAGE::LoadOptions\0",
            )),
        );
    }
    if let Some(d) = initrd {
        ev.push(
            event(
                PcrIndex::of::<9>(),
                EventType::EventTag,
                "Linux initrd".into(),
                EventPayload::Digests(d.clone()),
                banks,
            )
            .with_data(crate::measure::tagged_event_data(
                INITRD_EVENT_TAG_ID,
                b"Linux initrd\0",
            )),
        );
    }
    finish(PcrIndex::of::<9>(), ev, banks)
}

/// What a UKI's boot measures before the root is opened: PCR 11 for each asked phase, and
/// PCR 4 and 7 (and 9 for a boot chain) when the Secure Boot state is known. What `bootchain
/// pcr predict` prints.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BootPrediction {
    /// PCR 11 (systemd-stub's measurements), per phase.
    pub pcr11: crate::measure::Pcr11Prediction,
    /// Firmware PCRs (4, 7, 9), empty without a Secure Boot state.
    pub firmware: Vec<PcrPrediction>,
    /// PCR 12 (the profile number, addons, credentials, configuration extensions), when
    /// asked with addons or a profile ≠ 0.
    pub kernel_config: Option<PcrPrediction>,
    /// PCR 13 (system extensions), when asked with system extensions.
    pub sysexts: Option<PcrPrediction>,
}

impl BootPrediction {
    /// The values to seal to: every firmware PCR, and PCR 11 when exactly one phase was
    /// predicted (with several, which one to seal to is the caller's choice).
    pub fn values(&self) -> crate::pcr::PcrValues {
        let mut values = crate::pcr::PcrValues::new();
        for p in self.stub_pcrs() {
            for (bank, v) in &p.values {
                values.insert((*bank, p.pcr.get()), v.clone());
            }
        }
        if let [only] = self.pcr11.phases.as_slice() {
            for v in &only.values {
                values.insert((v.alg(), crate::measure::PCR_KERNEL_BOOT), v.clone());
            }
        }
        values
    }

    /// Every predicted PCR but 11: firmware (4, 7, 9), then 12 and 13.
    pub fn stub_pcrs(&self) -> impl Iterator<Item = &PcrPrediction> {
        self.firmware
            .iter()
            .chain(&self.kernel_config)
            .chain(&self.sysexts)
    }

    /// The `pcr predict --json` document: `events` (PCR 11), `pcr11` (systemd-measure's
    /// shape), `firmware`, and `values` (what `seal --pcr-values` and
    /// [`crate::pcr::parse_pcr_values_json`] read).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "events": self.pcr11.events,
            "pcr11": crate::measure::calculate_json(&self.pcr11),
            "firmware": self.firmware,
            "pcr12": self.kernel_config,
            "pcr13": self.sysexts,
            "values": crate::pcr::pcr_values_json(&self.values()),
        })
    }
}

/// Predict a UKI's boot: PCR 11 for `phases` when the stub boots `profile` (0 unless the
/// UKI has several; stub rules from its `.sdmagic`, or `stub_version`); PCR 12 with `addons`
/// or a profile ≠ 0, PCR 13 with system extensions ([`crate::kernel_config`]); and with `secure_boot` = (state, images
/// booted before the UKI) PCR 4, 7 and 9 as well (PCR 9 from the UKI's own `.cmdline`).
///
/// ```no_run
/// use bootchain::firmware::{predict_boot, SecureBootFiles};
/// use bootchain::hash::HashAlg;
/// let mut sb = SecureBootFiles::new(true);
/// sb.pk = Some("PK.esl".into());
/// sb.kek = Some("KEK.esl".into());
/// sb.db = vec!["db.esl".into()];
/// let state = sb.state()?;
/// let phases = ["enter-initrd".parse()?];
/// let boot = predict_boot("uki.efi".as_ref(), None, &[HashAlg::Sha256], &phases, 0, None,
///     Some((&state, &[])))?;
/// // PCR 4, 7, 9 and 11 as `seal --pcr-values` reads them.
/// println!("{}", boot.to_json()["values"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn predict_boot(
    uki: &std::path::Path,
    stub_version: Option<u32>,
    banks: &[HashAlg],
    phases: &[crate::measure::Phase],
    profile: u32,
    addons: Option<&crate::kernel_config::Addons>,
    secure_boot: Option<(&SecureBootState, &[std::path::PathBuf])>,
) -> Result<BootPrediction, BootError> {
    let pcr11 = crate::measure::predict_uki_profile(uki, stub_version, banks, phases, profile)?;
    let kernel_config = match (addons, profile) {
        (None, 0) => None,
        (a, p) => Some(crate::kernel_config::predict_pcr12(
            p,
            a.unwrap_or(&crate::kernel_config::Addons::new()),
            banks,
        )?),
    };
    let sysexts = match addons {
        Some(a) if !a.sysexts.is_empty() => Some(crate::kernel_config::predict_pcr13(a, banks)?),
        _ => None,
    };
    let firmware = match secure_boot {
        Some((state, chain)) => {
            let mut preds = predict_chain_boot(
                chain,
                uki,
                state,
                banks,
                &[crate::measure::Phase::after_stub()],
            )?;
            preds.retain(|p| p.pcr != crate::measure::PCR_KERNEL_BOOT);
            preds
        }
        None => Vec::new(),
    };
    Ok(BootPrediction {
        pcr11,
        firmware,
        kernel_config,
        sysexts,
    })
}

/// Why a whole boot could not be predicted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BootError {
    /// PCR 11 or the firmware PCRs.
    #[error(transparent)]
    Measure(#[from] crate::measure::MeasureError),
    /// PCR 12's addons.
    #[error(transparent)]
    Addon(#[from] crate::kernel_config::AddonError),
}

/// Why a Secure Boot variable file is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VariableFileError {
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Neither a certificate (PEM/DER) nor EFI_SIGNATURE_LISTs.
    #[error("{path}: neither a certificate nor signature lists")]
    Neither {
        /// The file.
        path: std::path::PathBuf,
        /// Why it is not signature lists.
        #[source]
        source: FirmwareError,
    },
    /// The certificate could not be re-encoded as DER.
    #[error("{path}: encoding the certificate")]
    Encode {
        /// The file.
        path: std::path::PathBuf,
        /// The DER error.
        #[source]
        source: der::Error,
    },
    /// A certificate, but no SignatureOwner to list it under.
    #[error("{path}: a certificate needs the SignatureOwner GUID it was enrolled with")]
    NeedsOwner {
        /// The file.
        path: std::path::PathBuf,
    },
}

/// A Secure Boot variable's content from a file: EFI_SIGNATURE_LISTs as they are, or one
/// certificate (PEM/DER) wrapped in an EFI_CERT_X509 list owned by `owner` (which must then be
/// given: the owner GUID is part of what PCR 7 measures).
pub fn variable_from_file(
    path: &std::path::Path,
    owner: Option<EfiGuid>,
) -> Result<Vec<u8>, VariableFileError> {
    let bytes = std::fs::read(path).map_err(|source| VariableFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let Err(esl_err) = parse_signature_lists(&bytes) else {
        return Ok(bytes);
    };
    if let Ok(cert) = crate::keys::certificate_from_bytes(&bytes, &path.display().to_string()) {
        use der::Encode;
        let owner = owner.ok_or_else(|| VariableFileError::NeedsOwner {
            path: path.to_path_buf(),
        })?;
        let der = cert.to_der().map_err(|source| VariableFileError::Encode {
            path: path.to_path_buf(),
            source,
        })?;
        return Ok(encode_signature_lists(&[x509_list(owner, &der)]));
    }
    Err(VariableFileError::Neither {
        path: path.to_path_buf(),
        source: esl_err,
    })
}

/// The Secure Boot variables of the next boot, as files: what `--secureboot-*` name.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct SecureBootFiles {
    /// SecureBoot on.
    pub enabled: bool,
    /// PK: signature lists or a certificate.
    pub pk: Option<std::path::PathBuf>,
    /// KEK: signature lists or a certificate.
    pub kek: Option<std::path::PathBuf>,
    /// db: signature lists or certificates, in order.
    pub db: Vec<std::path::PathBuf>,
    /// dbx: signature lists.
    pub dbx: Option<std::path::PathBuf>,
    /// SignatureOwner of the certificates given as PEM/DER.
    pub owner: Option<EfiGuid>,
}

impl SecureBootFiles {
    /// Secure Boot `enabled` with no variables yet.
    pub fn new(enabled: bool) -> Self {
        SecureBootFiles {
            enabled,
            ..Default::default()
        }
    }

    /// The db content alone (`None` without db files).
    pub fn db_content(&self) -> Result<Option<Vec<u8>>, VariableFileError> {
        if self.db.is_empty() {
            return Ok(None);
        }
        let mut v = Vec::new();
        for p in &self.db {
            v.extend(variable_from_file(p, self.owner)?);
        }
        Ok(Some(v))
    }

    /// Read every file into the state the firmware will measure.
    pub fn state(&self) -> Result<SecureBootState, VariableFileError> {
        let var = |p: &Option<std::path::PathBuf>| {
            p.as_deref()
                .map(|p| variable_from_file(p, self.owner))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        Ok(SecureBootState {
            enabled: self.enabled,
            pk: var(&self.pk)?,
            kek: var(&self.kek)?,
            db: self.db_content()?.unwrap_or_default(),
            dbx: var(&self.dbx)?,
        })
    }
}

/// Predictions of PCRs 4, 7 and 11 for a UKI booted directly by OVMF with the 252-style stub
/// rules (see the module documentation), with Secure Boot as in `state`.
pub fn predict_uki_boot(
    uki: &std::path::Path,
    state: &SecureBootState,
    banks: &[HashAlg],
    phases: &[crate::measure::Phase],
) -> Result<Vec<PcrPrediction>, crate::measure::MeasureError> {
    predict_chain_boot(&[], uki, state, banks, phases)
}

/// Like [`predict_uki_boot`], with `chain` images (e.g. shim, systemd-boot) loaded by the
/// firmware before the UKI, each measured into PCR 4 and each adding its db authority.
pub fn predict_chain_boot(
    chain: &[std::path::PathBuf],
    uki: &std::path::Path,
    state: &SecureBootState,
    banks: &[HashAlg],
    phases: &[crate::measure::Phase],
) -> Result<Vec<PcrPrediction>, crate::measure::MeasureError> {
    use crate::measure::MeasureError;
    let io = |source| MeasureError::Input {
        path: uki.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(uki).map_err(io)?;
    let (h, _) = crate::pe::PeHeaders::read(&mut f).map_err(|e| MeasureError::Image {
        path: uki.to_path_buf(),
        source: e.into(),
    })?;
    let auth =
        crate::authenticode::image_digests_with_headers(&mut f, &h, banks).map_err(|source| {
            MeasureError::Image {
                path: uki.to_path_buf(),
                source,
            }
        })?;
    let mut images = Vec::new();
    for p in chain {
        let mut cf = std::fs::File::open(p).map_err(|source| MeasureError::Input {
            path: p.clone(),
            source,
        })?;
        let d = crate::authenticode::image_digests(&mut cf, banks).map_err(|source| {
            MeasureError::Image {
                path: p.clone(),
                source,
            }
        })?;
        images.push(BootImage {
            description: p.display().to_string(),
            authenticode: d.into_iter().map(|d| (d.alg(), d)).collect(),
        });
    }
    images.push(BootImage {
        description: format!("UKI {}", uki.display()),
        authenticode: auth.into_iter().map(|d| (d.alg(), d)).collect(),
    });
    if !state.enabled {
        // The stub loads .linux with LoadImage; without Secure Boot the firmware measures it.
        if let Some(s) = h.section(".linux") {
            let mut w = crate::pe::Window::section(&mut f, s);
            if let Ok(k) = crate::authenticode::image_digests(&mut w, banks) {
                images.push(BootImage {
                    description: "kernel from .linux".into(),
                    authenticode: k.into_iter().map(|d| (d.alg(), d)).collect(),
                });
            }
        }
    }
    let authorities: Vec<SignatureData> = if state.enabled {
        let db = state.db_entries().map_err(MeasureError::Db)?;
        authorizing_db_entry(uki, &db).into_iter().collect()
    } else {
        Vec::new()
    };
    // One pass over the sections feeds both PCR 11 and PCR 9 (the initrd digest).
    let (sections, version) = crate::measure::uki_sections(uki, banks)?;
    let major = version
        .as_deref()
        .and_then(crate::measure::stub_major)
        .ok_or_else(|| MeasureError::NoStubVersion(uki.to_path_buf()))?;
    let pcr11 = crate::measure::predict_pcr11(
        &sections,
        Some(crate::measure::StubRules::new(major)),
        banks,
        phases,
    );
    let mut out = vec![
        predict_pcr4(&images, banks),
        predict_pcr7(state, &authorities, banks),
    ];
    let cmdline = match h.section(".cmdline") {
        Some(s) => Some(crate::pe::read_section_memory(&mut f, s).map_err(io)?),
        None => None,
    };
    let initrd: Option<BTreeMap<HashAlg, Digest>> = sections
        .iter()
        .find(|s| s.section == crate::ukiread::UkiSection::Initrd)
        .map(|s| s.digests.iter().map(|d| (d.alg(), d.clone())).collect());
    out.push(predict_pcr9(cmdline.as_deref(), initrd.as_ref(), banks));
    if let Some(ph) = pcr11.phases.first() {
        out.push(PcrPrediction {
            pcr: PcrIndex::of::<11>(),
            events: pcr11.events.clone(),
            values: ph.values.iter().map(|v| (v.alg(), v.clone())).collect(),
        });
    }
    Ok(out)
}

/// What [`predict_next_boot`] produced: the log the next boot should write, and its replay.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NextBoot {
    /// The predicted log (the current one with the affected events replaced).
    pub log: crate::eventlog::EventLog,
    /// Its replay.
    pub values: crate::eventlog::PcrValues,
}

fn make_event(
    pcr: u32,
    ty: crate::eventlog::EventType,
    data: Vec<u8>,
    digests: &BTreeMap<HashAlg, Digest>,
    banks: &[HashAlg],
) -> crate::eventlog::Event {
    crate::eventlog::Event {
        offset: 0,
        pcr,
        event_type: ty,
        digests: banks
            .iter()
            .filter_map(|b| digests.get(b))
            .map(|d| crate::eventlog::EventDigest {
                alg_id: d.alg().tpm_alg_id(),
                bytes: d.as_bytes().to_vec(),
            })
            .collect(),
        data,
    }
}

fn hashed(data: &[u8], banks: &[HashAlg]) -> BTreeMap<HashAlg, Digest> {
    banks.iter().map(|b| (*b, b.digest(data))).collect()
}

/// Predict the next boot from the current boot's event log and a new UKI (and optionally new
/// db/dbx contents): PCR 4's application events, PCR 7's db/dbx variables and authority, PCR 9
/// (kernel load options and initrd) and PCR 11 (stub) are replaced; every other event (PCRs
/// 0-3, 5, 6, ...) is kept as logged. Models a UKI booted directly by the firmware, as
/// [`predict_uki_boot`] does.
pub fn predict_next_boot(
    current: &crate::eventlog::EventLog,
    uki: &std::path::Path,
    new_db: Option<&[u8]>,
    new_dbx: Option<&[u8]>,
) -> Result<NextBoot, crate::measure::MeasureError> {
    use crate::eventlog::EventType as T;
    use crate::measure::MeasureError;
    let banks = current.banks();
    // Current Secure Boot state from the log.
    let mut state = SecureBootState::default();
    for e in current
        .events
        .iter()
        .filter(|e| e.pcr == 7 && e.event_type == T::EfiVariableDriverConfig)
    {
        if let Ok(v) = VariableData::parse(&e.data) {
            match v.name.as_str() {
                "SecureBoot" => state.enabled = v.data.first() == Some(&1),
                "PK" => state.pk = v.data,
                "KEK" => state.kek = v.data,
                "db" => state.db = v.data,
                "dbx" => state.dbx = v.data,
                _ => {}
            }
        }
    }
    if let Some(db) = new_db {
        state.db = db.to_vec();
    }
    if let Some(dbx) = new_dbx {
        state.dbx = dbx.to_vec();
    }
    let preds = predict_uki_boot(uki, &state, &banks, &[crate::measure::Phase::after_stub()])?;
    let pred = |pcr: u32| preds.iter().find(|p| p.pcr == pcr);

    let mut out: Vec<crate::eventlog::Event> = Vec::new();
    let mut inserted = [false; 24];
    let mut insert = |pcr: u32, out: &mut Vec<crate::eventlog::Event>, old_data: &[u8]| {
        if inserted[pcr as usize] {
            return;
        }
        inserted[pcr as usize] = true;
        let Some(p) = pred(pcr) else { return };
        let skip = match pcr {
            4 => 2, // action and separator are kept from the log
            7 => 6, // variables and separator are handled in place
            _ => 0,
        };
        for ev in p.events.iter().skip(skip) {
            let ty = match ev.event_type {
                t @ (T::EfiBootServicesApplication | T::EfiVariableAuthority | T::EventTag) => t,
                _ => T::Ipl,
            };
            let data = match ty {
                T::EfiBootServicesApplication => old_data.to_vec(),
                T::Ipl => ev
                    .description
                    .encode_utf16()
                    .chain([0])
                    .flat_map(|u| u.to_le_bytes())
                    .collect(),
                _ => Vec::new(),
            };
            out.push(make_event(pcr, ty, data, &ev.digests, &banks));
        }
    };
    for e in &current.events {
        match (e.pcr, e.event_type) {
            (4, T::EfiBootServicesApplication) => insert(4, &mut out, &e.data),
            (7, T::EfiVariableAuthority) => insert(7, &mut out, &e.data),
            (9, T::EventTag) => insert(9, &mut out, &e.data),
            (11, T::Ipl) | (11, T::EventTag) => insert(11, &mut out, &e.data),
            (7, T::EfiVariableDriverConfig) => {
                let mut e = e.clone();
                if let Ok(mut v) = VariableData::parse(&e.data) {
                    let replace = match v.name.as_str() {
                        "db" => new_db,
                        "dbx" => new_dbx,
                        _ => None,
                    };
                    if let Some(r) = replace {
                        v.data = r.to_vec();
                        e = make_event(
                            7,
                            T::EfiVariableDriverConfig,
                            v.to_bytes(),
                            &hashed(&v.to_bytes(), &banks),
                            &banks,
                        );
                    }
                }
                out.push(e);
            }
            _ => out.push(e.clone()),
        }
    }
    // PCRs whose events the old log lacked entirely: append.
    for pcr in [4u32, 7, 9, 11] {
        insert(pcr, &mut out, &[]);
    }
    let log = crate::eventlog::EventLog {
        spec_id: current.spec_id.clone(),
        header_data: current.header_data.clone(),
        events: out,
    };
    let values = log.replay();
    if values.is_empty() {
        return Err(MeasureError::NoBank);
    }
    Ok(NextBoot { log, values })
}
