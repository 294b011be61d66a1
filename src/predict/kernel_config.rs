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
//!
//! Sidecar files: the stub packs the files it finds next to the UKI into generated initrds
//! (cpio "newc" archives, systemd `src/boot/cpio.c`) and measures each archive as one EV_IPL
//! event — credentials (`<uki>.extra.d\*.cred` to `.extra/credentials`, then
//! `\loader\credentials\*.cred` to `.extra/global_credentials`) and configuration extensions
//! (`<uki>.extra.d\*.confext.raw` to `.extra/confext`) into PCR 12 after the addons, system
//! extensions (`<uki>.extra.d\*.raw` but not `*.confext.raw`, to `.extra/sysext`) into PCR 13.
//! The 257 stub has no global system or configuration extensions (`\loader\extensions` came
//! later). Not predicted: a command line passed by the boot loader or an SMBIOS
//! `io.systemd.stub.kernel-cmdline-extra` string (both measured into PCR 12 as well; the stub
//! ignores them in a confidential VM), and devicetree addons.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::eventlog::EventType;
use crate::hash::{HashAlg, MultiHasher};
use crate::pcr::PcrIndex;

use crate::measure::{event, finish, EventPayload, PcrPrediction};

/// The PCR the stub measures boot configuration into (systemd `TPM2_PCR_KERNEL_CONFIG`).
pub const PCR_KERNEL_CONFIG: PcrIndex = PcrIndex::of::<12>();

/// The PCR the stub measures system extensions into (systemd `TPM2_PCR_SYSEXTS`).
pub const PCR_SYSEXTS: PcrIndex = PcrIndex::of::<13>();

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
    /// A sidecar file could not be read.
    #[error("cannot read {path}")]
    SidecarRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The stub would not pick up this file under this name.
    #[error("{path}: {problem}")]
    SidecarName {
        /// The file.
        path: PathBuf,
        /// Why the stub would skip it.
        problem: SidecarNameProblem,
    },
    /// The file is larger than cpio's 32-bit size field (the stub skips it).
    #[error("{0}: larger than 4 GiB, which a cpio archive cannot hold")]
    SidecarTooLarge(PathBuf),
}

/// Why the stub would skip a sidecar file (systemd `pack_cpio`'s filters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarNameProblem {
    /// Not ASCII, or longer than 255 characters.
    #[error("the stub only picks up ASCII file names of at most 255 characters")]
    Name,
    /// Hidden (starts with `.`).
    #[error("the stub skips hidden files")]
    Hidden,
    /// The suffix does not match the kind.
    #[error("the stub picks up this kind only as {0}")]
    Suffix(&'static str),
}

/// The addons and sidecar files the stub finds for a UKI on the ESP.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Addons {
    /// Global addons (`\loader\addons\*.addon.efi`).
    pub global: Vec<PathBuf>,
    /// The UKI's own (`<uki>.extra.d\*.addon.efi`).
    pub per_uki: Vec<PathBuf>,
    /// The UKI's credentials (`<uki>.extra.d\*.cred`; PCR 12).
    pub credentials: Vec<PathBuf>,
    /// Global credentials (`\loader\credentials\*.cred`; PCR 12).
    pub global_credentials: Vec<PathBuf>,
    /// The UKI's system extensions (`<uki>.extra.d\*.raw`, not `*.confext.raw`; PCR 13).
    pub sysexts: Vec<PathBuf>,
    /// The UKI's configuration extensions (`<uki>.extra.d\*.confext.raw`; PCR 12).
    pub confexts: Vec<PathBuf>,
}

/// One kind of sidecar file: where the stub puts it in the initrd, with which modes, and the
/// event's description (257 stub, `generate_sidecar_initrds`; prefixes and descriptions as in
/// the stub binary's strings).
struct SidecarKind {
    suffix: &'static str,
    exclude: Option<&'static str>,
    prefix: &'static str,
    dir_mode: u32,
    file_mode: u32,
    description: &'static str,
}

const CREDENTIALS: SidecarKind = SidecarKind {
    suffix: ".cred",
    exclude: None,
    prefix: ".extra/credentials",
    dir_mode: 0o500,
    file_mode: 0o400,
    description: "Credentials initrd",
};
const GLOBAL_CREDENTIALS: SidecarKind = SidecarKind {
    prefix: ".extra/global_credentials",
    description: "Global credentials initrd",
    ..CREDENTIALS
};
const SYSEXTS: SidecarKind = SidecarKind {
    suffix: ".raw",
    exclude: Some(".confext.raw"),
    prefix: ".extra/sysext",
    dir_mode: 0o555,
    file_mode: 0o444,
    description: "System extension initrd",
};
const CONFEXTS: SidecarKind = SidecarKind {
    suffix: ".confext.raw",
    exclude: None,
    prefix: ".extra/confext",
    description: "Configuration extension initrd",
    ..SYSEXTS
};

/// The 8-hex-digit fields of a newc header after the magic (kernel
/// `Documentation/driver-api/early-userspace/buffer-format.rst`).
fn newc_header(
    w: &mut impl Write,
    ino: u32,
    mode: u32,
    size: u32,
    name_len: u32,
    nlink: u32,
) -> io::Result<()> {
    write!(w, "070701{ino:08x}{mode:08x}")?;
    // uid gid nlink mtime filesize devmajor devminor rdevmajor rdevminor namesize check
    write!(
        w,
        "{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{name_len:08x}{:08x}",
        0, 0, 0, 0, 0, 0, 0, 0
    )
}

/// The stub's cpio trailer (`pack_cpio_trailer`): a newc header with nlink 1 and name size
/// 11, the name `TRAILER!!!`, NUL-padded to 124 bytes.
const TRAILER: &[u8; 124] = b"070701\
00000000000000000000000000000000000000010000000000000000000000000000000000000000000000000000000B00000000\
TRAILER!!!\0\0\0\0";

/// Counts bytes written, for the stub's 4-byte padding relative to the archive start.
struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W: Write> Counting<W> {
    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - (self.n % 4) as usize) % 4;
        self.write_all(&[0u8; 3][..pad])
    }
}

/// Write the archive the stub builds from `files` (already filtered and sorted) to `w`,
/// streaming each file's contents.
fn write_sidecar_cpio(
    kind: &SidecarKind,
    files: &[(&str, &Path)],
    w: impl Write,
) -> Result<(), AddonError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AddonError::SidecarRead { path, source }
    };
    let mut w = Counting { inner: w, n: 0 };
    let mut ino = 1u32;
    let dir = |w: &mut Counting<_>, path: &str, mode: u32, ino: &mut u32| -> io::Result<()> {
        newc_header(w, *ino, mode | 0o040000, 0, path.len() as u32 + 1, 1)?;
        *ino += 1;
        w.write_all(path.as_bytes())?;
        w.write_all(&[0])?;
        w.pad4()
    };
    let here = Path::new("<cpio>");
    // Leading directories 0555, the last with the kind's mode (`pack_cpio_prefix`).
    for (i, _) in kind.prefix.match_indices('/').filter(|(i, _)| *i > 0) {
        dir(&mut w, &kind.prefix[..i], 0o555, &mut ino).map_err(io_err(here))?;
    }
    dir(&mut w, kind.prefix, kind.dir_mode, &mut ino).map_err(io_err(here))?;
    for (name, path) in files {
        let mut f = File::open(path).map_err(io_err(path))?;
        let len = f.metadata().map_err(io_err(path))?.len();
        let size =
            u32::try_from(len).map_err(|_| AddonError::SidecarTooLarge(path.to_path_buf()))?;
        let full = format!("{}/{name}", kind.prefix);
        newc_header(
            &mut w,
            ino,
            kind.file_mode | 0o100000,
            size,
            full.len() as u32 + 1,
            1,
        )
        .map_err(io_err(path))?;
        ino += 1;
        w.write_all(full.as_bytes()).map_err(io_err(path))?;
        w.write_all(&[0]).map_err(io_err(path))?;
        w.pad4().map_err(io_err(path))?;
        // Exactly `size` bytes, even if the file grows meanwhile.
        let copied = io::copy(&mut (&mut f).take(u64::from(size)), &mut w).map_err(io_err(path))?;
        if copied != u64::from(size) {
            return Err(AddonError::SidecarRead {
                path: path.to_path_buf(),
                source: io::ErrorKind::UnexpectedEof.into(),
            });
        }
        w.pad4().map_err(io_err(path))?;
    }
    // The trailer, byte for byte as the stub's literal (its name size is upper-case hex,
    // unlike every other header field).
    w.write_all(TRAILER).map_err(io_err(here))?;
    Ok(())
}

/// The event for one kind of sidecar files, or `None` when the stub finds none.
fn sidecar_event(
    pcr: PcrIndex,
    kind: &SidecarKind,
    files: &[PathBuf],
    banks: &[HashAlg],
) -> Result<Option<crate::measure::PredictedEvent>, AddonError> {
    let mut named = Vec::with_capacity(files.len());
    for p in files {
        let bad = |problem| AddonError::SidecarName {
            path: p.clone(),
            problem,
        };
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.is_ascii() && n.len() <= 255)
            .ok_or(bad(SidecarNameProblem::Name))?;
        if name.starts_with('.') {
            return Err(bad(SidecarNameProblem::Hidden));
        }
        let lower = name.to_ascii_lowercase();
        if !lower.ends_with(kind.suffix) || kind.exclude.is_some_and(|x| lower.ends_with(x)) {
            return Err(bad(SidecarNameProblem::Suffix(match kind.exclude {
                Some(_) => "*.raw (not *.confext.raw)",
                None => kind.suffix,
            })));
        }
        named.push((name, p.as_path()));
    }
    if named.is_empty() {
        return Ok(None);
    }
    // strcmp16 on ASCII names: byte order.
    named.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = MultiHasher::new(banks);
    write_sidecar_cpio(kind, &named, &mut h)?;
    let digests = banks.iter().copied().zip(h.finalize()).collect();
    Ok(Some(
        event(
            pcr,
            EventType::Ipl,
            kind.description.to_string(),
            EventPayload::Digests(digests),
            banks,
        )
        .with_data(utf16z(kind.description)),
    ))
}

/// PCR 13 after the 257 stub packs the UKI's system extensions (see the module
/// documentation).
pub fn predict_pcr13(addons: &Addons, banks: &[HashAlg]) -> Result<PcrPrediction, AddonError> {
    let events = sidecar_event(PCR_SYSEXTS, &SYSEXTS, &addons.sysexts, banks)?
        .into_iter()
        .collect();
    Ok(finish(PCR_SYSEXTS, events, banks))
}

impl Addons {
    /// No addons.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether no file at all is listed.
    pub fn is_empty(&self) -> bool {
        [
            &self.global,
            &self.per_uki,
            &self.credentials,
            &self.global_credentials,
            &self.sysexts,
            &self.confexts,
        ]
        .iter()
        .all(|v| v.is_empty())
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
        events.push(
            event(
                PCR_KERNEL_CONFIG,
                EventType::EventTag,
                format!("profile {number}"),
                EventPayload::HashOfData(utf16z(&number)),
                banks,
            )
            .with_data(crate::measure::tagged_event_data(
                PROFILE_EVENT_TAG,
                &utf16z(&number),
            )),
        );
    }
    events.extend(addons_event(addons, banks)?);
    for (kind, files) in [
        (&CREDENTIALS, &addons.credentials),
        (&GLOBAL_CREDENTIALS, &addons.global_credentials),
        (&CONFEXTS, &addons.confexts),
    ] {
        events.extend(sidecar_event(PCR_KERNEL_CONFIG, kind, files, banks)?);
    }
    Ok(finish(PCR_KERNEL_CONFIG, events, banks))
}

/// The one EV_IPL event of the cmdline addons, if any carries a command line.
fn addons_event(
    addons: &Addons,
    banks: &[HashAlg],
) -> Result<Option<crate::measure::PredictedEvent>, AddonError> {
    let mut lines = Vec::new();
    for p in by_name(&addons.global)
        .into_iter()
        .chain(by_name(&addons.per_uki))
    {
        if let Some(c) = addon_cmdline(p)?.filter(|c| !c.is_empty()) {
            lines.push(c);
        }
    }
    if lines.is_empty() {
        return Ok(None);
    }
    let joined = lines.join(" ");
    Ok(Some(
        event(
            PCR_KERNEL_CONFIG,
            EventType::Ipl,
            joined.clone(),
            EventPayload::HashOfData(utf16z(&joined)),
            banks,
        )
        .with_data(utf16z(&joined)),
    ))
}

/// The stub's EV_IPL events into PCR 12 and 13 for `addons`, interleaved in the order the
/// 257 stub measures them (as its TPM logs show, `test-vectors/boots/stub257-addons`): the
/// addons' command line, credentials, global credentials, system extensions (PCR 13), then
/// configuration extensions. The EV_EVENT_TAG profile event is not among them: the stub
/// measures tagged events into the TPM only (`tpm_log_tagged_event`), so they never reach a
/// TDX RTMR.
pub(crate) fn stub_ipl_events(
    addons: &Addons,
    banks: &[HashAlg],
) -> Result<Vec<crate::measure::PredictedEvent>, AddonError> {
    let mut events: Vec<_> = addons_event(addons, banks)?.into_iter().collect();
    for (pcr, kind, files) in [
        (PCR_KERNEL_CONFIG, &CREDENTIALS, &addons.credentials),
        (
            PCR_KERNEL_CONFIG,
            &GLOBAL_CREDENTIALS,
            &addons.global_credentials,
        ),
        (PCR_SYSEXTS, &SYSEXTS, &addons.sysexts),
        (PCR_KERNEL_CONFIG, &CONFEXTS, &addons.confexts),
    ] {
        events.extend(sidecar_event(pcr, kind, files, banks)?);
    }
    Ok(events)
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

    /// The archive's shape: the leading directory, each file header + name padded to 4, the
    /// contents padded to 4, the trailer; files in name order whatever order they came in.
    #[test]
    fn sidecar_archive_layout() {
        let dir = tempfile::tempdir().unwrap();
        let (b, a) = (dir.path().join("b.cred"), dir.path().join("a.cred"));
        std::fs::write(&b, b"bb").unwrap();
        std::fs::write(&a, b"a").unwrap();
        let mut out = Vec::new();
        write_sidecar_cpio(&CREDENTIALS, &[("a.cred", &a), ("b.cred", &b)], &mut out).unwrap();
        let text = String::from_utf8_lossy(&out);
        // ".extra" (0555), then ".extra/credentials" (0500), inode 2.
        assert!(text.starts_with("070701000000010000416d"));
        assert!(text.contains("070701000000020000414000000000"));
        let first = text.find(".extra/credentials/a.cred").unwrap();
        assert!(first < text.find(".extra/credentials/b.cred").unwrap());
        assert!(out.ends_with(TRAILER));
        assert_eq!(out.len() % 4, 0);
        // Both orders of input give the same event.
        let e1 = sidecar_event(
            PCR_KERNEL_CONFIG,
            &CREDENTIALS,
            &[a.clone(), b.clone()],
            &[HashAlg::Sha256],
        );
        let e2 = sidecar_event(PCR_KERNEL_CONFIG, &CREDENTIALS, &[b, a], &[HashAlg::Sha256]);
        assert_eq!(e1.unwrap().unwrap().digests, e2.unwrap().unwrap().digests);
    }

    #[test]
    fn files_the_stub_would_skip_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (name, kind) in [
            ("x.txt", &CREDENTIALS),
            (".hidden.cred", &CREDENTIALS),
            ("etc.confext.raw", &SYSEXTS),
            ("tools.raw", &CONFEXTS),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, b"x").unwrap();
            assert!(
                matches!(
                    sidecar_event(PCR_KERNEL_CONFIG, kind, &[p], &[HashAlg::Sha256]),
                    Err(AddonError::SidecarName { .. })
                ),
                "{name}"
            );
        }
        let missing = dir.path().join("missing.cred");
        assert!(matches!(
            sidecar_event(
                PCR_KERNEL_CONFIG,
                &CREDENTIALS,
                &[missing],
                &[HashAlg::Sha256]
            ),
            Err(AddonError::SidecarRead { .. })
        ));
    }
}
