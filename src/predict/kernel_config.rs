//! PCR 12 (`kernel-config`) as systemd-stub 257 measures it when a UKI is booted without a
//! command line from the boot loader: the profile number when it is not 0, then the command
//! lines of the cmdline addons, combined.
//!
//! Established from real boots of Debian 13's 257 stub (`tests/boot257.rs`,
//! `test-vectors/boots/stub257-*`), which differ from systemd's newer documentation in one
//! point — the tool wins:
//! - profile N ≠ 0: one EV_EVENT_TAG event, tag [`PROFILE_EVENT_TAG`], whose digest covers
//!   the decimal number in UTF-16LE *with* its NUL terminator;
//! - addons: one EV_IPL event for all cmdline addons, global (`\loader\addons\`) first, then
//!   the UKI's own (`<uki>.extra.d\`), each set in file-name order, joined by one space; the
//!   digest covers the joined text in UTF-16LE *with* its NUL terminator
//!   (`docs/TPM2_PCR_MEASUREMENTS.md` says without; the 257 stub measures it with).
//!
//! Each addon's `.cmdline` is cleaned as the stub's `mangle_stub_cmdline` does: control
//! characters become spaces, and leading and trailing spaces are dropped.

use std::path::{Path, PathBuf};

use crate::eventlog::EventType;
use crate::hash::HashAlg;
use crate::pcr::PcrIndex;

use crate::measure::{event, finish, EventPayload, PcrPrediction};

/// The PCR the stub measures boot configuration into (systemd `TPM2_PCR_KERNEL_CONFIG`).
pub const PCR_KERNEL_CONFIG: PcrIndex = PcrIndex::of::<12>();

/// EV_EVENT_TAG id of the profile measurement (as the 257 stub logs it).
pub const PROFILE_EVENT_TAG: u32 = 0x13ae_d6db;

/// Why an addon cannot be predicted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddonError {
    /// The addon could not be read.
    #[error("{path}: not a readable addon")]
    Read {
        /// The addon.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::ukiread::InspectError,
    },
    /// It is a UKI (has `.linux`): the stub refuses to load it as an addon.
    #[error("{0}: has a .linux section; the stub refuses UKIs as addons")]
    IsUki(PathBuf),
    /// It carries sections whose PCR 12 measurement bootchain does not predict yet.
    #[error("{path}: {section} addons are not predicted yet (only .cmdline)")]
    Unsupported {
        /// The addon.
        path: PathBuf,
        /// The section.
        section: &'static str,
    },
}

/// The addons the stub finds for a UKI.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Addons {
    /// Global addons (`\loader\addons\*.addon.efi`).
    pub global: Vec<PathBuf>,
    /// The UKI's own (`<uki>.extra.d\*.addon.efi`).
    pub per_uki: Vec<PathBuf>,
}

impl Addons {
    /// No addons.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The `.cmdline` of an addon, cleaned as the stub cleans it; `None` without one.
pub fn addon_cmdline(path: &Path) -> Result<Option<String>, AddonError> {
    let read = |name| {
        crate::ukiread::read_section(path, name).map_err(|source| AddonError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    if read(".linux")?.is_some() {
        return Err(AddonError::IsUki(path.to_path_buf()));
    }
    for section in [".dtb", ".dtbauto", ".initrd", ".ucode"] {
        if read(section)?.is_some() {
            return Err(AddonError::Unsupported {
                path: path.to_path_buf(),
                section,
            });
        }
    }
    Ok(read(".cmdline")?.map(|b| mangle(&String::from_utf8_lossy(&b))))
}

/// systemd's `mangle_stub_cmdline`: control characters to spaces, outer spaces dropped.
fn mangle(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if (c as u32) < 0x20 { ' ' } else { c })
        .collect();
    s.trim_matches(|c: char| c == ' ' || c == '\0').to_string()
}

fn utf16z(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// Sort by file name, as the stub reads addon directories.
fn by_name(paths: &[PathBuf]) -> Vec<&PathBuf> {
    let mut v: Vec<&PathBuf> = paths.iter().collect();
    v.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    v
}

/// PCR 12 after the 257 stub boots `profile` of a UKI with `addons` (see the module
/// documentation; stubs before 257 know no profiles).
///
/// ```no_run
/// use bootchain::hash::HashAlg;
/// use bootchain::kernel_config::{predict_pcr12, Addons};
/// let mut addons = Addons::new();
/// addons.per_uki.push("debug.addon.efi".into());
/// let p = predict_pcr12(1, &addons, &[HashAlg::Sha256])?;
/// println!("PCR 12 = {}", p.values[&HashAlg::Sha256]);
/// # Ok::<(), bootchain::kernel_config::AddonError>(())
/// ```
pub fn predict_pcr12(
    profile: u32,
    addons: &Addons,
    banks: &[HashAlg],
) -> Result<PcrPrediction, AddonError> {
    let mut events = Vec::new();
    if profile != 0 {
        let number = profile.to_string();
        events.push(event(
            PCR_KERNEL_CONFIG,
            EventType::EventTag,
            format!("profile {number}"),
            EventPayload::HashOfData(utf16z(&number)),
            banks,
        ));
    }
    let mut lines = Vec::new();
    for p in by_name(&addons.global)
        .into_iter()
        .chain(by_name(&addons.per_uki))
    {
        if let Some(c) = addon_cmdline(p)?.filter(|c| !c.is_empty()) {
            lines.push(c);
        }
    }
    if !lines.is_empty() {
        let joined = lines.join(" ");
        events.push(event(
            PCR_KERNEL_CONFIG,
            EventType::Ipl,
            joined.clone(),
            EventPayload::HashOfData(utf16z(&joined)),
            banks,
        ));
    }
    Ok(finish(PCR_KERNEL_CONFIG, events, banks))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digests seen in the 257 stub's event logs (test-vectors/boots/stub257-*).
    #[test]
    fn digests_as_the_257_stub_logs_them() {
        let sha = HashAlg::Sha256;
        assert_eq!(
            sha.digest(&utf16z("1")).to_hex(),
            "60864aae264519399c7a7379382e411d40a3bd0f1641e669fb73183d223f6bd0"
        );
        assert_eq!(
            sha.digest(&utf16z("bootchain.addon=1")).to_hex(),
            "2977dee8a7340f37f65bb791046eda8e67bacc63f3af7d8c24ca44e976dacdbe"
        );
        assert_eq!(mangle("\n a\tb \0"), "a b");
        let p = predict_pcr12(0, &Addons::new(), &[sha]).unwrap();
        assert!(p.events.is_empty());
        assert_eq!(p.values[&sha], crate::hash::Digest::zero(sha));
    }
}
