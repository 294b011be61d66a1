//! Unified kernel images: assembly from the systemd stub (like `ukify build`) and inspection.
//!
//! Assembly appends to the stub instead of relayouting it (UAPI "Unified Kernel Image"
//! specification; systemd `ukify.py` `pe_add_sections`):
//! - the stub's sections keep their RVAs and file offsets, so its `.reloc` stays valid;
//! - new section headers go into the spare room between the section table and SizeOfHeaders;
//! - new sections are placed after the stub's image, `.linux` last so the kernel has room to
//!   grow into its own SizeOfImage above it;
//! - VirtualSize is the exact content length (the stub measures VirtualSize bytes) and
//!   SizeOfRawData is rounded up to FileAlignment;
//! - SizeOfImage, SizeOfInitializedData and SizeOfCode are updated and CheckSum is set to 0;
//! - a trailing COFF symbol table in the stub is dropped, as ukify does.
//!
//! The output is written in one streaming pass; the Authenticode digest is computed from the
//! bytes as they are written, and the signature (if any) is appended at the end.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use core::mem::offset_of;

use object::pe::{ImageFileHeader, ImageOptionalHeader32, ImageOptionalHeader64};
use serde::Serialize;
use x509_cert::Certificate;

use crate::authenticode;
use crate::fsutil::AtomicFile;
use crate::hash::{Digest, HashAlg, MultiHasher};
use crate::keys::SigningKey;
use crate::pe::{
    self, scn, PeHeaders, SectionHeader, SectionName, DIR_SECURITY, SECTION_HEADER_LEN,
};
use crate::sign::{self, SignError, SignOptions};
pub use crate::ukiread::*;

/// Where Debian's `systemd-boot-efi` package installs the x86-64 stub.
pub const DEFAULT_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// The SBAT header line that must come first (shim `SBAT.md`).
pub const SBAT_HEADER: &str =
    "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md";
/// The entry ukify adds when no `--sbat` is given.
pub const DEFAULT_UKI_SBAT: &str =
    "uki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/";
/// Largest stub we read into memory.
const MAX_STUB_LEN: u64 = 64 * 1024 * 1024;
/// Size of the MS-DOS header (`IMAGE_DOS_HEADER`, PE/COFF spec "MS-DOS Stub"): the lowest
/// offset the PE signature may sit at.
const DOS_HEADER_LEN: usize = std::mem::size_of::<object::pe::ImageDosHeader>();
const _: () = assert!(DOS_HEADER_LEN == 0x40);
/// The "PE\0\0" signature before the COFF file header (PE/COFF spec "Signature (Image Only)").
const PE_SIGNATURE_LEN: usize = 4;
/// Copy buffer size: bounds peak memory whatever the input sizes.
const COPY_BUF: usize = 4 << 20;

/// Errors building a UKI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UkiError {
    /// An input could not be read.
    #[error("cannot read {path}")]
    Input {
        /// The input.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The default stub is not installed.
    #[error("stub {0} not found: install the Debian package systemd-boot-efi (apt-get install systemd-boot-efi) or give another stub")]
    StubMissing(PathBuf),
    /// The stub is not a usable PE image.
    #[error("stub {path} is not a usable PE image")]
    StubNotPe {
        /// The stub.
        path: PathBuf,
        /// The parse error.
        source: pe::PeError,
    },
    /// The stub is signed.
    #[error(
        "stub {0} is already signed; refusing (build from an unsigned stub, then sign the UKI)"
    )]
    StubSigned(PathBuf),
    /// The stub's layout is not one we can append to safely.
    #[error("stub {path}: {reason}")]
    StubLayout {
        /// The stub.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Not enough spare header room for the new section headers.
    #[error("not enough header space in the stub for {needed} new section headers ({available} bytes free, {per} bytes each): drop optional sections such as .uname or .splash")]
    NoHeaderRoom {
        /// Section headers needed.
        needed: usize,
        /// Bytes free.
        available: usize,
        /// Bytes per section header.
        per: usize,
    },
    /// An invalid section name.
    #[error(transparent)]
    SectionName(#[from] pe::SectionNameError),
    /// The same section twice.
    #[error("section {0} given twice")]
    DuplicateSection(String),
    /// Bad SBAT text.
    #[error("invalid SBAT: {0}")]
    Sbat(String),
    /// A PCR policy signature was asked for a UKI without `.cmdline`: the stub would then take
    /// the boot loader's command line, which PCR 11 does not cover, so the signed policy would
    /// approve any command line the host chooses.
    #[error("refusing to sign a PCR policy for a UKI without a command line (.cmdline): the stub would accept an unmeasured command line from the boot loader; give one, or allow it explicitly")]
    UnmeasuredCmdline,
    /// A section is too large for PE's 32-bit fields.
    #[error("section {name} is {len} bytes; PE sections must be under 4 GiB")]
    TooLarge {
        /// The section.
        name: String,
        /// Its length.
        len: u64,
    },
    /// The output would not fit PE's 32-bit file offsets (the certificate table offset and
    /// every PointerToRawData are 32-bit, pecoff "Optional Header Data Directories").
    #[error(
        "the UKI would be {len} bytes; PE file offsets are 32-bit, so it must stay under 4 GiB"
    )]
    OutputTooLarge {
        /// The length the output would have.
        len: u64,
    },
    /// Writing the output failed.
    #[error("writing {path}")]
    Output {
        /// The output.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// Parsing a UKI failed.
    #[error(transparent)]
    Pe(#[from] pe::PeError),
    /// Hashing failed.
    #[error(transparent)]
    Authenticode(#[from] authenticode::AuthenticodeError),
    /// Reading a file failed.
    #[error("I/O error")]
    Io(#[from] io::Error),
    /// PCR policy signing failed.
    #[error(transparent)]
    Measure(crate::measure::MeasureError),
    /// Reading a UKI failed.
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// `SOURCE_DATE_EPOCH` is not a 32-bit Unix time (PE's TimeDateStamp is 32-bit).
    #[error("SOURCE_DATE_EPOCH={0:?} is not a 32-bit Unix time")]
    SourceDateEpoch(String),
}

/// The PE TimeDateStamp for a reproducible build: `$SOURCE_DATE_EPOCH`
/// (reproducible-builds.org/specs/source-date-epoch) if set and not empty, else 0 — never
/// the build time, so the same inputs give the same bytes.
pub fn source_date_epoch() -> Result<u32, UkiError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .trim()
            .parse::<u32>()
            .map_err(|_| UkiError::SourceDateEpoch(v)),
        _ => Ok(0),
    }
}

impl From<crate::measure::MeasureError> for UkiError {
    fn from(e: crate::measure::MeasureError) -> Self {
        UkiError::Measure(e)
    }
}

fn input_err(path: &Path) -> impl FnOnce(io::Error) -> UkiError + '_ {
    move |source| UkiError::Input {
        path: path.to_path_buf(),
        source,
    }
}

/// Content of a section to add.
#[derive(Clone, Debug)]
pub enum SectionContent {
    /// Literal bytes.
    Bytes(Vec<u8>),
    /// A file, streamed.
    File(PathBuf),
    /// Several files concatenated, each padded to 4 bytes (ukify's `join_initrds`; a single
    /// file is taken as is).
    Concat(Vec<PathBuf>),
}

impl SectionContent {
    /// Parse ukify's `TEXT|@FILE` convention.
    pub fn text_or_file(arg: &str) -> Self {
        match arg.strip_prefix('@') {
            Some(p) => SectionContent::File(PathBuf::from(p)),
            None => SectionContent::Bytes(arg.as_bytes().to_vec()),
        }
    }

    fn len(&self) -> Result<u64, UkiError> {
        match self {
            SectionContent::Bytes(b) => Ok(b.len() as u64),
            SectionContent::File(p) => Ok(std::fs::metadata(p).map_err(input_err(p))?.len()),
            SectionContent::Concat(ps) => {
                if ps.len() == 1 {
                    return Ok(std::fs::metadata(&ps[0]).map_err(input_err(&ps[0]))?.len());
                }
                let mut total = 0u64;
                for p in ps {
                    total += pe::align_up(std::fs::metadata(p).map_err(input_err(p))?.len(), 4);
                }
                Ok(total)
            }
        }
    }

    /// Length and digests of the content in several banks, streamed.
    fn digests(&self, banks: &[HashAlg]) -> Result<(u64, Vec<Digest>), UkiError> {
        match self {
            SectionContent::Bytes(b) => {
                Ok((b.len() as u64, banks.iter().map(|a| a.digest(b)).collect()))
            }
            SectionContent::File(p) => Ok(crate::measure::file_digests(p, banks)?),
            SectionContent::Concat(ps) => {
                let mut mh = MultiHasher::new(banks);
                let mut total = 0u64;
                let mut buf = vec![0u8; COPY_BUF];
                for p in ps {
                    let mut f = File::open(p).map_err(input_err(p))?;
                    loop {
                        let n = f.read(&mut buf).map_err(input_err(p))?;
                        if n == 0 {
                            break;
                        }
                        mh.update(&buf[..n]);
                        total += n as u64;
                    }
                    if ps.len() > 1 {
                        let pad = (pe::align_up(total, 4) - total) as usize;
                        mh.update(&[0u8; 4][..pad]);
                        total += pad as u64;
                    }
                }
                Ok((total, mh.finalize()))
            }
        }
    }

    /// Read into memory (for small sections such as SBAT or text).
    fn read_all(&self) -> Result<Vec<u8>, UkiError> {
        match self {
            SectionContent::Bytes(b) => Ok(b.clone()),
            SectionContent::File(p) => std::fs::read(p).map_err(input_err(p)),
            SectionContent::Concat(ps) => {
                let mut v = Vec::new();
                for p in ps {
                    v.extend(std::fs::read(p).map_err(input_err(p))?);
                    if ps.len() > 1 {
                        v.resize(pe::align_up(v.len() as u64, 4) as usize, 0);
                    }
                }
                Ok(v)
            }
        }
    }
}

/// Builds a UKI. Inputs are checked and streamed by [`UkiBuilder::build`].
///
/// ```no_run
/// use bootchain::uki::{SectionContent, UkiBuilder};
/// let report = UkiBuilder::new()
///     .linux("/boot/vmlinuz")
///     .initrd("/boot/initrd.img")
///     .cmdline(SectionContent::Bytes(b"console=ttyS0 root=/dev/vda2".to_vec()))
///     .build("uki.efi".as_ref())?;
/// println!("{}", report.authenticode_sha256);
/// # Ok::<(), bootchain::uki::UkiError>(())
/// ```
#[derive(Debug, Default)]
pub struct UkiBuilder {
    stub: Option<PathBuf>,
    linux: Option<PathBuf>,
    initrds: Vec<PathBuf>,
    cmdline: Option<SectionContent>,
    os_release: Option<SectionContent>,
    uname: Option<String>,
    sbat: Vec<SectionContent>,
    splash: Option<PathBuf>,
    devicetree: Option<PathBuf>,
    pcrpkey: Option<SectionContent>,
    pcrsig: Option<SectionContent>,
    extra: Vec<(String, SectionContent)>,
    timestamp: u32,
    no_default_os_release: bool,
    allow_unmeasured_cmdline: bool,
    signer: Option<(SigningKey, Certificate, SignOptions)>,
    pcr_signer: Option<PcrPolicySigner>,
}

/// Signing of the PCR 11 policy embedded as `.pcrsig` (ukify `--pcr-private-key`).
///
/// `.pcrsig` sits before `.linux` in the file, so its content must be known before the kernel
/// is written: with a PCR signer the inputs are read twice (a hashing pass for the PCR banks,
/// then the writing pass for the Authenticode digest), each digest still computed once.
pub struct PcrPolicySigner {
    /// The RSA key.
    pub key: rsa::RsaPrivateKey,
    /// Phase paths to sign for (empty: the initrd phases, [`crate::measure::INITRD_PHASES`]).
    pub phases: Vec<String>,
    /// Banks to sign for (ukify's default is sha256).
    pub banks: Vec<HashAlg>,
}

impl std::fmt::Debug for PcrPolicySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcrPolicySigner")
            .field("phases", &self.phases)
            .field("banks", &self.banks)
            .finish_non_exhaustive()
    }
}

/// What [`UkiBuilder::build`] produced.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct BuildReport {
    /// The output file.
    pub output: PathBuf,
    /// Its length in bytes.
    pub size: u64,
    /// Authenticode SHA-256 of the image (what PCR 4 gets and what was signed).
    pub authenticode_sha256: Digest,
    /// The sections added, in file order.
    pub added_sections: Vec<String>,
    /// How `.sbat` was stored: "in-place" (the stub's section rewritten) or "appended".
    pub sbat_placement: Option<String>,
    /// Whether the image was signed.
    pub signed: bool,
    /// Non-fatal remarks.
    pub warnings: Vec<String>,
}

impl UkiBuilder {
    /// A builder with the default stub and no sections.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stub (default: [`DEFAULT_STUB`]).
    pub fn stub(mut self, p: impl Into<PathBuf>) -> Self {
        self.stub = Some(p.into());
        self
    }
    /// The kernel.
    pub fn linux(mut self, p: impl Into<PathBuf>) -> Self {
        self.linux = Some(p.into());
        self
    }
    /// Add an initrd; several are concatenated in order.
    pub fn initrd(mut self, p: impl Into<PathBuf>) -> Self {
        self.initrds.push(p.into());
        self
    }
    /// Kernel command line.
    pub fn cmdline(mut self, c: SectionContent) -> Self {
        self.cmdline = Some(c);
        self
    }
    /// os-release (default: the host's `/etc/os-release` when a kernel is given, as ukify).
    pub fn os_release(mut self, c: SectionContent) -> Self {
        self.os_release = Some(c);
        self
    }
    /// Do not default `.osrel` to the host's os-release.
    pub fn no_default_os_release(mut self) -> Self {
        self.no_default_os_release = true;
        self
    }
    /// `uname -r` of the kernel (default: read from the kernel's x86 boot header).
    pub fn uname(mut self, u: impl Into<String>) -> Self {
        self.uname = Some(u.into());
        self
    }
    /// SBAT entries to merge with the stub's and the kernel's.
    pub fn sbat(mut self, c: SectionContent) -> Self {
        self.sbat.push(c);
        self
    }
    /// Boot splash (BMP).
    pub fn splash(mut self, p: impl Into<PathBuf>) -> Self {
        self.splash = Some(p.into());
        self
    }
    /// Devicetree blob.
    pub fn devicetree(mut self, p: impl Into<PathBuf>) -> Self {
        self.devicetree = Some(p.into());
        self
    }
    /// PCR signing public key (PEM), measured.
    pub fn pcrpkey(mut self, c: SectionContent) -> Self {
        self.pcrpkey = Some(c);
        self
    }
    /// Signed PCR policy JSON, not measured.
    pub fn pcrsig(mut self, c: SectionContent) -> Self {
        self.pcrsig = Some(c);
        self
    }
    /// An extra section (name of at most 8 characters).
    pub fn section(mut self, name: impl Into<String>, c: SectionContent) -> Self {
        self.extra.push((name.into(), c));
        self
    }
    /// COFF TimeDateStamp (use `SOURCE_DATE_EPOCH`; default 0).
    pub fn timestamp(mut self, t: u32) -> Self {
        self.timestamp = t;
        self
    }
    /// Embed `.pcrpkey` (unless given) and a `.pcrsig` signing the PCR 11 values of the final
    /// image, as measured by the stub in use.
    pub fn sign_pcr_policy(mut self, signer: PcrPolicySigner) -> Self {
        self.pcr_signer = Some(signer);
        self
    }

    /// Sign a PCR policy even without `.cmdline` (see [`UkiError::UnmeasuredCmdline`]): only
    /// for stubs that ignore the loader's command line under Secure Boot.
    pub fn allow_unmeasured_cmdline(mut self, allow: bool) -> Self {
        self.allow_unmeasured_cmdline = allow;
        self
    }

    /// Sign the result for Secure Boot.
    pub fn sign_with(mut self, key: SigningKey, cert: Certificate, opts: SignOptions) -> Self {
        self.signer = Some((key, cert, opts));
        self
    }

    /// The sections this builder will add, in canonical file order (without `.sbat`), with
    /// their contents. Used by `build` and by PCR prediction from loose parts.
    pub fn planned_sections(&self) -> Result<Vec<(SectionName, SectionContent)>, UkiError> {
        let mut out: Vec<(SectionName, SectionContent)> = Vec::new();
        let mut push = |name: &str, c: Option<SectionContent>| -> Result<(), UkiError> {
            if let Some(c) = c {
                let n = SectionName::new(name)?;
                if out.iter().any(|(m, _)| *m == n) {
                    return Err(UkiError::DuplicateSection(name.into()));
                }
                out.push((n, c));
            }
            Ok(())
        };
        let os_release = match (&self.os_release, &self.linux) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(_)) if !self.no_default_os_release => default_os_release(),
            _ => None,
        };
        let uname = match (&self.uname, &self.linux) {
            (Some(u), _) => Some(u.clone()),
            (None, Some(l)) => scrape_uname(l)?,
            _ => None,
        };
        // File order as ukify writes it; measurement order is fixed by the stub regardless.
        push(".osrel", os_release)?;
        push(".cmdline", self.cmdline.clone())?;
        push(".dtb", self.devicetree.clone().map(SectionContent::File))?;
        push(
            ".uname",
            uname.map(|u| SectionContent::Bytes(u.into_bytes())),
        )?;
        push(".splash", self.splash.clone().map(SectionContent::File))?;
        push(".pcrpkey", self.pcrpkey.clone())?;
        push(
            ".initrd",
            (!self.initrds.is_empty()).then(|| SectionContent::Concat(self.initrds.clone())),
        )?;
        for (name, c) in &self.extra {
            push(name, Some(c.clone()))?;
        }
        push(".pcrsig", self.pcrsig.clone())?;
        push(".linux", self.linux.clone().map(SectionContent::File))?;
        Ok(out)
    }

    /// Assemble (and optionally sign) the UKI, writing `output` atomically.
    pub fn build(self, output: &Path) -> Result<BuildReport, UkiError> {
        let stub_path = self
            .stub
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STUB));
        if !stub_path.exists() && self.stub.is_none() {
            return Err(UkiError::StubMissing(stub_path));
        }
        let stub = read_stub(&stub_path)?;
        let mut warnings = Vec::new();
        let mut planned = self.planned_sections()?;
        if planned.iter().any(|(n, _)| n.as_str() == ".sbat") {
            return Err(UkiError::Sbat(
                "give SBAT entries as SBAT content (UkiBuilder::sbat), not as an extra section"
                    .into(),
            ));
        }

        // SBAT: merge stub + kernel + user entries into one text.
        let sbat_text = self.merged_sbat(&stub)?;
        if self.pcr_signer.is_some()
            && !self.allow_unmeasured_cmdline
            && self.cmdline.is_none()
            && !planned.iter().any(|(n, _)| n.as_str() == ".cmdline")
        {
            return Err(UkiError::UnmeasuredCmdline);
        }
        if let Some(ps) = &self.pcr_signer {
            if self.pcrpkey.is_none() {
                let pem = crate::measure::public_key_pem(&ps.key.to_public_key())?;
                let pos = planned
                    .iter()
                    .position(|(n, _)| n.as_str() == ".initrd" || n.as_str() == ".linux")
                    .unwrap_or(planned.len());
                planned.insert(
                    pos,
                    (
                        SectionName::new(".pcrpkey")?,
                        SectionContent::Bytes(pem.into_bytes()),
                    ),
                );
            }
        }
        let mut stub_data = stub.data.clone();
        let mut headers = stub.headers.clone();
        let mut sbat_placement = None;
        let mut sbat_in_place: Option<Vec<u8>> = None;
        if let Some(text) = sbat_text {
            let bytes = text.into_bytes();
            match stub_sbat_slot(&headers) {
                Some((idx, room)) if bytes.len() as u64 <= room => {
                    let s = &mut headers.sections[idx];
                    let start = s.pointer_to_raw_data as usize;
                    let end = start + s.size_of_raw_data as usize;
                    let slot = &mut stub_data[start..end];
                    slot.fill(0);
                    slot[..bytes.len()].copy_from_slice(&bytes);
                    // bytes.len() <= room <= SizeOfRawData, a u32.
                    s.virtual_size =
                        u32::try_from(bytes.len()).map_err(|_| UkiError::TooLarge {
                            name: ".sbat".into(),
                            len: bytes.len() as u64,
                        })?;
                    sbat_placement = Some("in-place".to_string());
                    sbat_in_place = Some(bytes);
                }
                Some((idx, room)) => {
                    // The stub's slot is too small (its next section follows in memory). Keep the
                    // stub's bytes where they are under another name, so nothing moves, and
                    // append the merged `.sbat`; shim rejects images with two `.sbat` sections.
                    headers.sections[idx].name = SectionName::new(".sbatstb")?;
                    warnings.push(format!(
                        "merged SBAT ({} bytes) does not fit the stub's .sbat slot ({room} bytes): stub section renamed .sbatstb, merged .sbat appended",
                        bytes.len()
                    ));
                    insert_before_linux(&mut planned, ".sbat", SectionContent::Bytes(bytes))?;
                    sbat_placement = Some("appended".to_string());
                }
                None => {
                    insert_before_linux(&mut planned, ".sbat", SectionContent::Bytes(bytes))?;
                    sbat_placement = Some("appended".to_string());
                }
            }
        }

        if let Some(ps) = &self.pcr_signer {
            let json = self.pcrsig_json(ps, &stub, &planned, sbat_in_place.as_deref())?;
            insert_before_linux(
                &mut planned,
                ".pcrsig",
                SectionContent::Bytes(json.into_bytes()),
            )?;
        }

        // Sizes, dropping empty sections (the stub and systemd-measure skip them too).
        let mut sized = Vec::new();
        for (name, c) in planned {
            let len = c.len()?;
            if len == 0 {
                warnings.push(format!("section {name} is empty and was left out"));
                continue;
            }
            if len >= u64::from(u32::MAX) - u64::from(headers.file_alignment) {
                return Err(UkiError::TooLarge {
                    name: name.as_str(),
                    len,
                });
            }
            sized.push((name, c, len));
        }

        let needed = sized.len();
        if needed * SECTION_HEADER_LEN > headers.spare_header_room()
            && headers.pe_offset > DOS_HEADER_LEN
        {
            // Gain room by moving the PE headers down over the MS-DOS stub program (e_lfanew
            // may be 0x40, right after the MS-DOS header). Section data does not move.
            compact_headers(&mut stub_data, &mut headers);
            warnings.push(
                "moved the PE headers to offset 0x40 (over the MS-DOS stub program) to make room for section headers".into(),
            );
        }
        let available = headers.spare_header_room();
        if needed * SECTION_HEADER_LEN > available {
            return Err(UkiError::NoHeaderRoom {
                needed,
                available,
                per: SECTION_HEADER_LEN,
            });
        }

        // Layout after the stub's image.
        let fa = u64::from(headers.file_alignment);
        let sa = u64::from(headers.section_alignment);
        let mut file_off = pe::align_up(stub_data.len() as u64, fa);
        let mut rva = pe::align_up(
            headers.virtual_end().max(u64::from(headers.size_of_image)),
            sa,
        );
        let mut new_headers = Vec::new();
        let (mut add_code, mut add_data) = (0u64, 0u64);
        for (name, _, len) in &sized {
            let raw = pe::align_up(*len, fa);
            let too_large = || UkiError::TooLarge {
                name: name.as_str(),
                len: *len,
            };
            let code = name.as_str() == ".linux";
            let sh = SectionHeader {
                name: *name,
                virtual_size: u32::try_from(*len).map_err(|_| too_large())?,
                virtual_address: u32::try_from(rva).map_err(|_| UkiError::TooLarge {
                    name: name.as_str(),
                    len: rva,
                })?,
                size_of_raw_data: u32::try_from(raw).map_err(|_| too_large())?,
                pointer_to_raw_data: u32::try_from(file_off).map_err(|_| UkiError::TooLarge {
                    name: name.as_str(),
                    len: file_off,
                })?,
                characteristics: scn::MEM_READ
                    | if code {
                        scn::CNT_CODE
                    } else {
                        scn::CNT_INITIALIZED_DATA
                    },
            };
            if code {
                add_code += raw;
            } else {
                add_data += raw;
            }
            new_headers.push(sh);
            file_off += raw;
            rva = pe::align_up(rva + len, sa);
        }
        let size_of_image = u32::try_from(rva).map_err(|_| UkiError::TooLarge {
            name: "image".into(),
            len: rva,
        })?;
        let total_len = pe::align_up(file_off, 8);
        // Refuse before writing anything: the certificate table offset (and the end of the last
        // section) must fit 32 bits, or a signed image's directory would point elsewhere.
        let total_len_u32 =
            u32::try_from(total_len).map_err(|_| UkiError::OutputTooLarge { len: total_len })?;

        // Patch the header region.
        let mut hdr = stub_data[..headers.size_of_headers as usize].to_vec();
        // Field offsets from object's structures (pecoff "COFF File Header", "Optional Header
        // Standard Fields", "Windows-Specific Fields").
        let coff = headers.pe_offset + PE_SIGNATURE_LEN;
        let fh = |field: usize| coff + field;
        let nsec = u16::try_from(headers.sections.len() + new_headers.len()).map_err(|_| {
            UkiError::NoHeaderRoom {
                needed,
                available,
                per: SECTION_HEADER_LEN,
            }
        })?;
        let o = fh(offset_of!(ImageFileHeader, number_of_sections));
        hdr[o..o + 2].copy_from_slice(&nsec.to_le_bytes());
        let o = fh(offset_of!(ImageFileHeader, time_date_stamp));
        hdr[o..o + 4].copy_from_slice(&self.timestamp.to_le_bytes());
        if stub.stripped_symbols {
            // PointerToSymbolTable and NumberOfSymbols.
            let o = fh(offset_of!(ImageFileHeader, pointer_to_symbol_table));
            hdr[o..o + 8].fill(0);
        }
        let opt = headers.optional_header_offset;
        let add32 = |hdr: &mut [u8], off: usize, add: u64| {
            let old = u32::from_le_bytes([hdr[off], hdr[off + 1], hdr[off + 2], hdr[off + 3]]);
            let new = (u64::from(old) + add).min(u64::from(u32::MAX)) as u32;
            hdr[off..off + 4].copy_from_slice(&new.to_le_bytes());
        };
        add32(&mut hdr, opt + OPT_SIZE_OF_CODE, add_code);
        add32(&mut hdr, opt + OPT_SIZE_OF_INITIALIZED_DATA, add_data);
        hdr[opt + OPT_SIZE_OF_IMAGE..opt + OPT_SIZE_OF_IMAGE + 4]
            .copy_from_slice(&size_of_image.to_le_bytes());
        let cks = headers.checksum_offset();
        hdr[cks..cks + 4].fill(0);
        let has_secdir = headers.data_directories.len() > DIR_SECURITY;
        let sd = headers.data_directory_offset(DIR_SECURITY);
        if has_secdir {
            hdr[sd..sd + 8].fill(0);
        }
        for (i, s) in headers.sections.iter().enumerate() {
            let o = headers.section_table_offset + i * SECTION_HEADER_LEN;
            hdr[o..o + SECTION_HEADER_LEN].copy_from_slice(&s.to_bytes());
        }
        for (i, s) in new_headers.iter().enumerate() {
            let o = headers.section_table_end() + i * SECTION_HEADER_LEN;
            hdr[o..o + SECTION_HEADER_LEN].copy_from_slice(&s.to_bytes());
        }
        if self.signer.is_some() && !has_secdir {
            return Err(SignError::NoSecurityDirectory(headers.data_directories.len()).into());
        }

        // Stream the output, hashing every byte once.
        let out_err = |source: io::Error| UkiError::Output {
            path: output.to_path_buf(),
            source,
        };
        let mut out = AtomicFile::create(output, 0o644).map_err(out_err)?;
        let syncer = EarlyWriteback::start(out.file()).map_err(out_err)?;
        let mut w = HashingWriter {
            inner: out.file(),
            hasher: MultiHasher::new(&[HashAlg::Sha256]),
            pos: 0,
            syncer,
            skip: if has_secdir {
                vec![(cks as u64, 4), (sd as u64, 8)]
            } else {
                vec![(cks as u64, 4)]
            },
        };
        w.write_all(&hdr).map_err(out_err)?;
        w.write_all(&stub_data[hdr.len()..]).map_err(out_err)?;
        let mut buf = vec![0u8; COPY_BUF];
        for ((_, content, len), sh) in sized.iter().zip(&new_headers) {
            w.pad_to(u64::from(sh.pointer_to_raw_data), &mut buf)
                .map_err(out_err)?;
            let written = copy_content(content, &mut w, &mut buf)?;
            if written != *len {
                return Err(UkiError::Input {
                    path: PathBuf::from(sh.name.as_str()),
                    source: io::Error::other(format!(
                        "input changed while reading ({written} bytes instead of {len})"
                    )),
                });
            }
        }
        w.pad_to(total_len, &mut buf).map_err(out_err)?;
        let HashingWriter { hasher, syncer, .. } = w;
        drop(syncer);
        let digest = hasher
            .finalize()
            .pop()
            .ok_or_else(|| UkiError::Io(io::Error::other("no digest")))?;

        let signed = self.signer.is_some();
        if let Some((key, cert, opts)) = &self.signer {
            let pkcs7 = sign::authenticode_signature(&digest, key, cert, opts)?;
            let entry = authenticode::WinCertificate {
                offset: total_len,
                revision: authenticode::WIN_CERT_REVISION_2_0,
                cert_type: authenticode::WIN_CERT_TYPE_PKCS_SIGNED_DATA,
                data: pkcs7,
            }
            .to_padded_bytes();
            let f = out.file();
            f.write_all(&entry).map_err(out_err)?;
            let mut dir = [0u8; 8];
            let table_len = u32::try_from(entry.len())
                .ok()
                .filter(|l| total_len_u32.checked_add(*l).is_some())
                .ok_or(UkiError::OutputTooLarge {
                    len: total_len + entry.len() as u64,
                })?;
            dir[..4].copy_from_slice(&total_len_u32.to_le_bytes());
            dir[4..].copy_from_slice(&table_len.to_le_bytes());
            f.seek(SeekFrom::Start(sd as u64)).map_err(out_err)?;
            f.write_all(&dir).map_err(out_err)?;
        }
        let size = out.file().seek(SeekFrom::End(0)).map_err(out_err)?;
        out.commit().map_err(out_err)?;
        Ok(BuildReport {
            output: output.to_path_buf(),
            size,
            authenticode_sha256: digest.clone(),
            added_sections: new_headers.iter().map(|s| s.name.as_str()).collect(),
            sbat_placement,
            signed,
            warnings,
        })
    }

    /// The `.pcrsig` JSON for the sections about to be written.
    fn pcrsig_json(
        &self,
        ps: &PcrPolicySigner,
        stub: &Stub,
        planned: &[(SectionName, SectionContent)],
        sbat_in_place: Option<&[u8]>,
    ) -> Result<String, UkiError> {
        use crate::measure;
        let banks = if ps.banks.is_empty() {
            vec![HashAlg::Sha256]
        } else {
            ps.banks.clone()
        };
        let mut sections = Vec::new();
        for (name, content) in planned {
            let (size, digests) = content.digests(&banks)?;
            sections.push(measure::SectionDigests {
                name: name.as_str(),
                size,
                digests,
            });
        }
        if let Some(b) = sbat_in_place {
            sections.push(measure::SectionDigests {
                name: ".sbat".into(),
                size: b.len() as u64,
                digests: banks.iter().map(|a| a.digest(b)).collect(),
            });
        }
        let version = stub
            .headers
            .section(".sdmagic")
            .and_then(|s| {
                let mut c = io::Cursor::new(&stub.data);
                pe::read_section_memory(&mut c, s).ok()
            })
            .and_then(|b| parse_sdmagic(&String::from_utf8_lossy(&b)))
            .and_then(|v| measure::stub_major(&v))
            .unwrap_or(measure::NEWEST_STUB);
        // Disk keys are released in the initrd: sign only the initrd phases unless told.
        let phases = if ps.phases.is_empty() {
            measure::INITRD_PHASES
                .iter()
                .map(|p| p.to_string())
                .collect()
        } else {
            measure::phase_list(&ps.phases).map_err(UkiError::Measure)?
        };
        let pred = measure::predict_pcr11(
            &sections,
            Some(measure::StubRules::new(version)),
            &banks,
            &phases,
        );
        let sigs = measure::sign_policies(&pred, &ps.key).map_err(UkiError::Measure)?;
        Ok(measure::signatures_json(&sigs).to_string())
    }

    fn merged_sbat(&self, stub: &Stub) -> Result<Option<String>, UkiError> {
        if self.linux.is_none() && self.sbat.is_empty() {
            return Ok(None);
        }
        let mut entries: Vec<String> = Vec::new();
        let mut take = |text: &str, what: &str, strict: bool| -> Result<(), UkiError> {
            let text = text.trim_end_matches('\0');
            let mut lines = text.lines();
            match lines.next() {
                Some(first) if first.starts_with("sbat,") => {}
                _ if !strict => return Ok(()),
                _ => {
                    return Err(UkiError::Sbat(format!(
                        "{what} must start with an \"sbat,\" header line"
                    )))
                }
            }
            for l in lines.filter(|l| !l.trim().is_empty()) {
                if l.split(',').count() < 6 {
                    return Err(UkiError::Sbat(format!(
                        "{what}: entry {l:?} needs 6 comma-separated fields"
                    )));
                }
                entries.push(l.to_string());
            }
            Ok(())
        };
        if let Some(t) = &stub.sbat {
            take(t, "stub .sbat", false)?;
        }
        if let Some(l) = &self.linux {
            if let Some(t) = pe_section_text(l, ".sbat")? {
                take(&t, "kernel .sbat", false)?;
            }
        }
        if self.sbat.is_empty() {
            take(
                &format!("{SBAT_HEADER}\n{DEFAULT_UKI_SBAT}\n"),
                "default",
                true,
            )?;
        }
        for c in &self.sbat {
            let bytes = c.read_all()?;
            let text = String::from_utf8(bytes)
                .map_err(|_| UkiError::Sbat("the SBAT text is not UTF-8".into()))?;
            take(&text, "the SBAT text", true)?;
        }
        Ok(Some(format!("{SBAT_HEADER}\n{}\n\0", entries.join("\n"))))
    }
}

/// The stub, read and checked.
struct Stub {
    headers: PeHeaders,
    /// Bytes from 0 to the end of the last section's raw data (symbol table dropped).
    data: Vec<u8>,
    stripped_symbols: bool,
    sbat: Option<String>,
}

fn read_stub(path: &Path) -> Result<Stub, UkiError> {
    let mut data = match crate::fsutil::read_bounded(path, MAX_STUB_LEN) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
            return Err(UkiError::StubLayout {
                path: path.into(),
                reason: format!("more than {MAX_STUB_LEN} bytes is too large for a stub"),
            })
        }
        Err(e) => return Err(input_err(path)(e)),
    };
    let headers =
        PeHeaders::parse(&data, data.len() as u64).map_err(|source| UkiError::StubNotPe {
            path: path.into(),
            source,
        })?;
    if headers.is_signed() {
        return Err(UkiError::StubSigned(path.into()));
    }
    let layout = |reason: String| UkiError::StubLayout {
        path: path.into(),
        reason,
    };
    if headers.section_table_end() > headers.size_of_headers as usize {
        return Err(layout("section table extends past SizeOfHeaders".into()));
    }
    // Section data must be contiguous from SizeOfHeaders, so that the Authenticode hash of
    // the result is simply "every byte but CheckSum and the certificate directory".
    let mut secs: Vec<_> = headers
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data != 0)
        .collect();
    secs.sort_by_key(|s| s.pointer_to_raw_data);
    let mut end = u64::from(headers.size_of_headers);
    for s in &secs {
        if u64::from(s.pointer_to_raw_data) != end {
            return Err(layout(format!(
                "section {} starts at file offset {:#x}, expected {end:#x}: gaps or overlaps between sections are not supported",
                s.name, s.pointer_to_raw_data
            )));
        }
        end = s.raw_end();
    }
    let mut stripped_symbols = false;
    if (end as usize) < data.len() {
        let sym = u64::from(headers.pointer_to_symbol_table);
        let gap_is_zero = |to: u64| data[end as usize..to as usize].iter().all(|&b| b == 0);
        if sym >= end && sym <= data.len() as u64 && gap_is_zero(sym) {
            stripped_symbols = true;
        } else if gap_is_zero(data.len() as u64) {
            // Zero padding only.
        } else {
            return Err(layout(format!(
                "{} bytes of unknown data after the last section",
                data.len() as u64 - end
            )));
        }
        data.truncate(end as usize);
    }
    let mut cursor = io::Cursor::new(&data);
    let sbat = match headers.section(".sbat") {
        Some(s) => {
            let b = pe::read_section_memory(&mut cursor, s)?;
            Some(String::from_utf8_lossy(&b).into_owned())
        }
        None => None,
    };
    Ok(Stub {
        headers,
        data,
        stripped_symbols,
        sbat,
    })
}

/// Insert a section before `.linux` (which stays last), or at the end.
fn insert_before_linux(
    planned: &mut Vec<(SectionName, SectionContent)>,
    name: &str,
    content: SectionContent,
) -> Result<(), UkiError> {
    let pos = planned
        .iter()
        .position(|(n, _)| n.as_str() == ".linux")
        .unwrap_or(planned.len());
    planned.insert(pos, (SectionName::new(name)?, content));
    Ok(())
}

/// Offsets of the optional header fields a UKI build patches; the same in PE32 and PE32+
/// (the wider ImageBase of PE32+ takes the place of PE32's BaseOfData).
const OPT_SIZE_OF_CODE: usize = offset_of!(ImageOptionalHeader64, size_of_code);
const OPT_SIZE_OF_INITIALIZED_DATA: usize =
    offset_of!(ImageOptionalHeader64, size_of_initialized_data);
const OPT_SIZE_OF_IMAGE: usize = offset_of!(ImageOptionalHeader64, size_of_image);
const _: () = assert!(
    OPT_SIZE_OF_CODE == offset_of!(ImageOptionalHeader32, size_of_code)
        && OPT_SIZE_OF_INITIALIZED_DATA
            == offset_of!(ImageOptionalHeader32, size_of_initialized_data)
        && OPT_SIZE_OF_IMAGE == offset_of!(ImageOptionalHeader32, size_of_image)
);

/// Move the PE signature, COFF and optional headers and the section table to offset 0x40,
/// right after the MS-DOS header.
fn compact_headers(data: &mut [u8], h: &mut PeHeaders) {
    let shift = h.pe_offset - DOS_HEADER_LEN;
    let end = h.section_table_end();
    data.copy_within(h.pe_offset..end, DOS_HEADER_LEN);
    data[end - shift..end].fill(0);
    let lfanew = std::mem::offset_of!(object::pe::ImageDosHeader, e_lfanew);
    data[lfanew..lfanew + 4].copy_from_slice(&(DOS_HEADER_LEN as u32).to_le_bytes());
    h.pe_offset -= shift;
    h.optional_header_offset -= shift;
    h.section_table_offset -= shift;
}

/// The stub's `.sbat` section index and the bytes it can hold without overlapping the next
/// section in memory or growing in the file.
fn stub_sbat_slot(h: &PeHeaders) -> Option<(usize, u64)> {
    let idx = h.sections.iter().position(|s| s.name.as_str() == ".sbat")?;
    let s = &h.sections[idx];
    let next_rva = h
        .sections
        .iter()
        .map(|t| u64::from(t.virtual_address))
        .filter(|&va| va > u64::from(s.virtual_address))
        .min()
        .unwrap_or(u64::MAX);
    let room = (next_rva - u64::from(s.virtual_address)).min(u64::from(s.size_of_raw_data));
    Some((idx, room))
}

fn default_os_release() -> Option<SectionContent> {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .map(SectionContent::File)
}

/// Read a small section of a PE file as text, if the file is a PE with that section.
fn pe_section_text(path: &Path, name: &str) -> Result<Option<String>, UkiError> {
    let mut f = File::open(path).map_err(input_err(path))?;
    let Ok((h, _)) = PeHeaders::read(&mut f) else {
        return Ok(None);
    };
    match h.section(name) {
        Some(s) if s.virtual_size <= 1 << 20 => {
            let b = pe::read_section_memory(&mut f, s).map_err(input_err(path))?;
            Ok(Some(String::from_utf8_lossy(&b).into_owned()))
        }
        _ => Ok(None),
    }
}

/// The kernel release from an x86 bzImage's setup header (Linux boot protocol, "The Real-Mode
/// Kernel Header": `HdrS` at 0x202, `kernel_version` pointer at 0x20E, relative to 0x200).
pub fn scrape_uname(kernel: &Path) -> Result<Option<String>, UkiError> {
    let mut f = File::open(kernel).map_err(input_err(kernel))?;
    let mut hdr = [0u8; 0x210];
    if f.read_exact(&mut hdr).is_err() || &hdr[0x202..0x206] != b"HdrS" {
        return Ok(None);
    }
    let ptr = u16::from_le_bytes([hdr[0x20e], hdr[0x20f]]);
    if ptr == 0 {
        return Ok(None);
    }
    let mut text = [0u8; 128];
    f.seek(SeekFrom::Start(0x200 + u64::from(ptr)))
        .map_err(input_err(kernel))?;
    let n = f.read(&mut text).map_err(input_err(kernel))?;
    let s = &text[..n];
    let s = &s[..s.iter().position(|&b| b == 0).unwrap_or(s.len())];
    let s = String::from_utf8_lossy(s);
    Ok(s.split_whitespace()
        .next()
        .filter(|v| {
            v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
        })
        .map(str::to_string))
}

/// A writer that hashes what it writes, except for the byte ranges in `skip`.
///
/// Large writes hash on a second thread while the first writes, so on two cores a build
/// costs about max(hash, write) rather than their sum.
struct HashingWriter<'a> {
    inner: &'a mut File,
    hasher: MultiHasher,
    pos: u64,
    syncer: EarlyWriteback,
    skip: Vec<(u64, u64)>,
}

/// Starts writeback of a large output while it is still being written (fdatasync on a
/// helper thread every [`EarlyWriteback::EVERY`] bytes), so the final fsync before the rename
/// has little left to do.
struct EarlyWriteback {
    tx: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    last: u64,
}

impl EarlyWriteback {
    const EVERY: u64 = 32 << 20;

    fn start(f: &File) -> io::Result<Self> {
        let f = f.try_clone()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::spawn(move || {
            while rx.recv().is_ok() {
                // Best effort: the final sync_all before the rename is what guarantees
                // durability, and reports errors.
                let _ = f.sync_data();
            }
        });
        Ok(EarlyWriteback {
            tx: Some(tx),
            thread: Some(thread),
            last: 0,
        })
    }

    fn progress(&mut self, pos: u64) {
        if pos - self.last >= Self::EVERY {
            if let Some(tx) = &self.tx {
                // A full channel means a sync is still running: skip this one.
                let _ = tx.try_send(());
            }
            self.last = pos;
        }
    }
}

impl Drop for EarlyWriteback {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hash `data`, which sits at file offset `start`, leaving out the `skip` ranges.
fn hash_skipping(hasher: &mut MultiHasher, skip: &[(u64, u64)], start: u64, data: &[u8]) {
    let end = start + data.len() as u64;
    let mut cur = start;
    let mut skips: Vec<_> = skip
        .iter()
        .filter(|(o, l)| *o < end && o + l > start)
        .copied()
        .collect();
    skips.sort();
    for (o, l) in skips {
        let s = o.max(start);
        if s > cur {
            hasher.update(&data[(cur - start) as usize..(s - start) as usize]);
        }
        cur = cur.max((o + l).min(end));
    }
    if cur < end {
        hasher.update(&data[(cur - start) as usize..]);
    }
}

/// Writes at least this large are hashed on a helper thread.
const PARALLEL_MIN: usize = 256 * 1024;

impl HashingWriter<'_> {
    fn pad_to(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        while self.pos < offset {
            let n = (offset - self.pos).min(buf.len() as u64) as usize;
            buf[..n].fill(0);
            self.write_all(&buf[..n])?;
        }
        Ok(())
    }
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let start = self.pos;
        let HashingWriter {
            inner,
            hasher,
            skip,
            ..
        } = self;
        if data.len() >= PARALLEL_MIN {
            std::thread::scope(|s| {
                let t = s.spawn(|| hash_skipping(hasher, skip, start, data));
                let r = inner.write_all(data);
                t.join()
                    .map_err(|_| io::Error::other("hashing thread panicked"))?;
                r
            })?;
        } else {
            inner.write_all(data)?;
            hash_skipping(hasher, skip, start, data);
        }
        self.pos += data.len() as u64;
        self.syncer.progress(self.pos);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn copy_file(path: &Path, w: &mut HashingWriter<'_>, buf: &mut [u8]) -> Result<u64, UkiError> {
    let mut f = File::open(path).map_err(input_err(path))?;
    let mut total = 0u64;
    loop {
        let n = f.read(buf).map_err(input_err(path))?;
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).map_err(UkiError::Io)?;
        total += n as u64;
    }
    Ok(total)
}

fn copy_content(
    c: &SectionContent,
    w: &mut HashingWriter<'_>,
    buf: &mut [u8],
) -> Result<u64, UkiError> {
    match c {
        SectionContent::Bytes(b) => {
            w.write_all(b)?;
            Ok(b.len() as u64)
        }
        SectionContent::File(p) => copy_file(p, w, buf),
        SectionContent::Concat(ps) => {
            let mut total = 0;
            for p in ps {
                total += copy_file(p, w, buf)?;
                if ps.len() > 1 {
                    let pad = (pe::align_up(total, 4) - total) as usize;
                    w.write_all(&[0u8; 4][..pad])?;
                    total += pad as u64;
                }
            }
            Ok(total)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdmagic() {
        assert_eq!(
            parse_sdmagic("#### LoaderInfo: systemd-stub 252.39-1~deb12u2 ####\0").as_deref(),
            Some("252.39-1~deb12u2")
        );
        assert_eq!(parse_sdmagic("garbage"), None);
    }

    #[test]
    fn text_or_file() {
        assert!(matches!(
            SectionContent::text_or_file("@/x"),
            SectionContent::File(_)
        ));
        assert!(matches!(
            SectionContent::text_or_file("quiet"),
            SectionContent::Bytes(_)
        ));
    }
}
