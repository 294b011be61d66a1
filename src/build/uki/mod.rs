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

use serde::Serialize;
use x509_cert::Certificate;

use crate::authenticode;
use crate::fsutil::AtomicFile;
use crate::hash::{Digest, HashAlg, MultiHasher};
use crate::measure::{self, Pcr11Prediction, Phase, SectionDigests, StubRules};
use crate::pe::{self, PeHeaders, SectionName, SECTION_HEADER_LEN};
use crate::sign::{self, SignError, SignOptions};
use crate::signer::Signer;
pub use crate::ukiread::*;

mod config;
mod inputs;
mod join;
mod layout;
mod sbat;
mod write;

pub use config::{
    PcrSignatureGroup, UkifyConfig, UkifyConfigError, DEFAULT_CONFIG_DIRS, DEFAULT_CONFIG_FILE,
    MAX_CONFIG_SIZE,
};
pub use inputs::scrape_uname;
pub use join::{join_pcrsig, JoinError, JoinPcrsig, JoinReport};
pub use layout::{ProfileError, StubLayoutError};
pub use sbat::{SbatError, SbatSource, DEFAULT_UKI_SBAT, SBAT_HEADER};
use write::{copy_content, EarlyWriteback, HashingWriter, COPY_BUF};

/// Where Debian's `systemd-boot-efi` package installs the x86-64 stub.
pub const DEFAULT_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

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
    #[error("stub {0} not found: install the Debian package systemd-boot-efi (apt-get install systemd-boot-efi; the addon stub comes with systemd 255 and later) or give another stub")]
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
    #[error("stub {path}: unsupported layout")]
    StubLayout {
        /// The stub.
        path: PathBuf,
        /// What is wrong.
        #[source]
        reason: StubLayoutError,
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
    /// The `--hwids` directory could not be turned into a `.hwids` table.
    #[error("hardware IDs (.hwids)")]
    Hwids(#[from] crate::hwids::HwidsError),
    /// `.hwids` asked for with a layout that has no place for it (ukify 252 predates it).
    #[error(".hwids needs a systemd 257 stub or layout (ukify 252 has no --hwids)")]
    HwidsLayout,
    /// An invalid section name.
    #[error(transparent)]
    SectionName(#[from] pe::SectionNameError),
    /// The same section twice.
    #[error("section {0} given twice")]
    DuplicateSection(SectionName),
    /// Bad SBAT text.
    #[error("invalid SBAT")]
    Sbat(#[from] SbatError),
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
    /// The kernel was to be signed without a Secure Boot key.
    #[error("signing the kernel needs the Secure Boot key and certificate")]
    SignKernelWithoutKey,
    /// A profile PE to join is not a PE.
    #[error("profile {path} is not a usable PE image")]
    ProfileNotPe {
        /// The profile PE.
        path: PathBuf,
        /// Why.
        #[source]
        source: pe::PeError,
    },
    /// A profile PE to join has no proper profile.
    #[error("profile {path} cannot be joined")]
    Profile {
        /// The profile PE.
        path: PathBuf,
        /// Why.
        #[source]
        reason: layout::ProfileError,
    },
    /// An input changed size between planning and writing.
    #[error("section {section}: input changed while reading ({read} bytes instead of {expected})")]
    InputChanged {
        /// The section.
        section: SectionName,
        /// The length planned.
        expected: u64,
        /// The length read.
        read: u64,
    },
    /// The `.pcrsig` signed during the write came out longer or shorter than planned (an
    /// internal error: nothing is left at the output path).
    #[error("internal: .pcrsig is {actual} bytes, {planned} were planned")]
    PcrsigLength {
        /// Planned length.
        planned: u64,
        /// Actual length.
        actual: u64,
    },
    /// The hasher gave no digest (an internal error).
    #[error("no Authenticode digest was computed")]
    NoDigest,
    /// Signing failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// Parsing a UKI failed.
    #[error(transparent)]
    Pe(#[from] pe::PeError),
    /// Hashing failed.
    #[error(transparent)]
    Authenticode(#[from] authenticode::AuthenticodeError),
    /// PCR policy signing failed.
    #[error(transparent)]
    Measure(crate::measure::MeasureError),
    /// Reading a UKI failed.
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// Unsigned policy digests and a PCR signing key were both asked for (ukify:
    /// "--pcr-private-key= cannot be specified with --policy-digest").
    #[error("PCR policy digests for offline signing and a PCR signing key exclude each other")]
    PolicyDigestWithKey,
    /// `SOURCE_DATE_EPOCH` is not a 32-bit Unix time (PE's TimeDateStamp is 32-bit).
    #[error("SOURCE_DATE_EPOCH={value:?} is not a 32-bit Unix time")]
    SourceDateEpoch {
        /// The variable's value.
        value: String,
        /// Why it does not parse.
        #[source]
        source: std::num::ParseIntError,
    },
}

/// The PE TimeDateStamp for a reproducible build: `$SOURCE_DATE_EPOCH`
/// (reproducible-builds.org/specs/source-date-epoch) if set and not empty; `None` otherwise,
/// and the build keeps the stub's (as ukify does) — never the build time, so the same inputs
/// give the same bytes.
pub fn source_date_epoch() -> Result<Option<u32>, UkiError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => v
            .trim()
            .parse::<u32>()
            .map(Some)
            .map_err(|source| UkiError::SourceDateEpoch { value: v, source }),
        _ => Ok(None),
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
    /// `len` bytes of a file from `offset` (a section copied from another PE, such as a
    /// profile joined with [`UkiBuilder::join_profile`]), streamed.
    Range {
        /// The file.
        path: PathBuf,
        /// Where the bytes start.
        offset: u64,
        /// How many.
        len: u64,
    },
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
            SectionContent::Range { len, .. } => Ok(*len),
        }
    }

    /// A reader of a [`SectionContent::Range`]: exactly `len` bytes, or an error naming the
    /// file when it is shorter.
    fn range_reader(path: &Path, offset: u64, len: u64) -> Result<io::Take<File>, UkiError> {
        let mut f = File::open(path).map_err(input_err(path))?;
        let end = offset.checked_add(len);
        let size = f.metadata().map_err(input_err(path))?.len();
        if end.is_none_or(|e| e > size) {
            return Err(UkiError::Input {
                path: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::UnexpectedEof, "section past the end"),
            });
        }
        f.seek(SeekFrom::Start(offset)).map_err(input_err(path))?;
        Ok(f.take(len))
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
            SectionContent::Range { path, offset, len } => {
                let mut r = Self::range_reader(path, *offset, *len)?;
                let mut mh = MultiHasher::new(banks);
                let n = io::copy(&mut r, &mut mh).map_err(input_err(path))?;
                Ok((n, mh.finalize()))
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
            SectionContent::Range { path, offset, len } => {
                let mut v = Vec::new();
                Self::range_reader(path, *offset, *len)?
                    .read_to_end(&mut v)
                    .map_err(input_err(path))?;
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
    timestamp: Option<u32>,
    microcode: Option<PathBuf>,
    devicetree_auto: Vec<PathBuf>,
    hwids: Option<PathBuf>,
    profile: Option<SectionContent>,
    join_profiles: Vec<PathBuf>,
    layout: Option<Layout>,
    no_default_os_release: bool,
    allow_unmeasured_cmdline: bool,
    signer: Option<(Box<dyn Signer>, Certificate, SignOptions)>,
    pcr_signers: Vec<PcrPolicySigner>,
    policy_digests: Option<PcrPolicyDigests>,
    policy_nv: Option<crate::policy::NvEpoch>,
    measure: Option<(Vec<HashAlg>, Vec<Phase>)>,
    sign_kernel: Option<bool>,
}

/// Signing of the PCR 11 policy embedded as `.pcrsig` (ukify `--pcr-private-key`).
///
/// `.pcrsig` sits before `.linux` in the file, so its content must be known before the kernel
/// is written: with a PCR signer the inputs are read twice (a hashing pass for the PCR banks,
/// then the writing pass for the Authenticode digest), each digest still computed once; the
/// build report's PCR 11 prediction reuses the first pass.
pub struct PcrPolicySigner {
    /// The RSA key: a key file ([`crate::keys::SigningKey`], [`rsa::RsaPrivateKey`]) or a
    /// PKCS#11 key ([`crate::signer::open`]). Any other key fails the build with
    /// [`crate::measure::PcrKeyError::NotRsa`].
    pub key: Box<dyn Signer>,
    /// Phase paths to sign for (empty: the initrd phases, [`Phase::initrd`]).
    pub phases: Vec<Phase>,
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

/// ukify `--policy-digest` (systemd 258 on): embed the PCR 11 policies of the final image
/// unsigned, to be signed elsewhere and attached with [`join_pcrsig`]. The `.pcrsig` holds
/// `systemd-measure policy-digest`'s JSON (`pkfp`, `pol`, `tbs`, no `sig`) followed by 1024
/// spaces per policy, so that the signed JSON fits in place later (ukify 262
/// `call_systemd_measure`: "At most we'll need 4kb per digest").
#[derive(Clone, Debug)]
pub struct PcrPolicyDigests {
    /// The public key the policies will be signed with (`.pcrpkey` unless given, and `pkfp`).
    pub public: rsa::RsaPublicKey,
    /// Phase paths (empty: the initrd phases, [`Phase::initrd`]).
    pub phases: Vec<Phase>,
    /// Banks (empty: sha256).
    pub banks: Vec<HashAlg>,
}

/// One PCR policy group of a build: private key (none: unsigned digests), public key, banks,
/// phases.
type PolicyGroup<'a> = (
    Option<&'a dyn Signer>,
    rsa::RsaPublicKey,
    &'a [HashAlg],
    &'a [Phase],
);

/// Whose file layout a build follows. Sections are measured in the stub's fixed order
/// whatever the layout; the layout decides the bytes, so it matters for byte-identical
/// output next to ukify and for what a signature covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub enum Layout {
    /// ukify 252 (`pe_add_sections` of systemd 252): metadata sections, `.initrd`, extra
    /// sections, `.pcrsig`, then `.linux` last; SizeOfCode and SizeOfInitializedData grow by
    /// the raw sizes.
    Ukify252,
    /// ukify 257: a profile PE's `.profile` first; metadata sections, `.linux`, `.initrd`,
    /// `.ucode`, extra sections, `.sbat` (if it does not fit the stub's), the base `.profile`,
    /// `.pcrsig`, then each joined profile's sections; SizeOfInitializedData grows by each
    /// VirtualSize and SizeOfCode stays the stub's; NX_COMPAT is cleared when the kernel
    /// lacks it (both must agree for firmware that enforces it).
    Ukify257,
}

impl Layout {
    /// The layout of the ukify released with a stub of systemd `major` (257 on; 252 before —
    /// the versions between were not compared byte for byte).
    pub fn for_stub(major: u32) -> Self {
        if major >= 257 {
            Layout::Ukify257
        } else {
            Layout::Ukify252
        }
    }
}

/// What a build makes, as ukify tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ImageKind {
    /// A UKI (has a kernel).
    Uki,
    /// An addon (no kernel, usually on the addon stub): `.sbat` from ukify's addon entry only.
    Addon,
    /// A profile PE to join into a multi-profile UKI: no `.sbat`.
    ProfilePe,
}

/// The SBAT entry ukify 257 gives addons when none is given.
pub const DEFAULT_ADDON_SBAT: &str = "uki-addon,1,UKI Addon,addon,1,https://www.freedesktop.org/software/systemd/man/latest/systemd-stub.html";

/// Where Debian's `systemd-boot-efi` (257 and later) installs the x86-64 addon stub.
pub const DEFAULT_ADDON_STUB: &str = "/usr/lib/systemd/boot/efi/addonx64.efi.stub";

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
    /// The build host's os-release file embedded as `.osrel` because none was given (ukify
    /// does the same; see [`UkiBuilder::no_default_os_release`]).
    pub os_release_from_host: Option<PathBuf>,
    /// PCR 11 as the image's stub will measure it, from the digests the build computed
    /// anyway: present with a PCR policy signer (the signed phases and banks) or when asked
    /// with [`UkiBuilder::measure`].
    pub pcr11: Option<Pcr11Prediction>,
    /// The stub's systemd version (from `.sdmagic`), whose rules `pcr11` follows.
    pub stub_version: Option<String>,
    /// The file layout followed.
    pub layout: Layout,
    /// Whether the embedded kernel was signed with the Secure Boot key.
    pub kernel_signed: bool,
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
    /// os-release (default: the build host's `/etc/os-release` when a kernel is given, as
    /// ukify does; the report names the file, [`BuildReport::os_release_from_host`]).
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
    /// COFF TimeDateStamp (`SOURCE_DATE_EPOCH`, see [`source_date_epoch`]; default: the
    /// stub's, as ukify keeps it).
    pub fn timestamp(mut self, t: u32) -> Self {
        self.timestamp = Some(t);
        self
    }
    /// Microcode initrd (`.ucode`, ukify `--microcode`; measured by stubs from 256 on, loaded
    /// before the other initrds).
    pub fn microcode(mut self, p: impl Into<PathBuf>) -> Self {
        self.microcode = Some(p.into());
        self
    }
    /// A devicetree the stub picks by hardware ID (`.dtbauto`, ukify `--devicetree-auto`;
    /// repeatable).
    pub fn devicetree_auto(mut self, p: impl Into<PathBuf>) -> Self {
        self.devicetree_auto.push(p.into());
        self
    }
    /// Hardware IDs (`.hwids`, ukify `--hwids DIR`): the table built from the `*.json` hwid
    /// descriptions under `dir` ([`crate::hwids`]), by which the stub picks a `.dtbauto`.
    pub fn hwids_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.hwids = Some(dir.into());
        self
    }
    /// This image's profile (`.profile`, ukify `--profile`): alone, the image is a profile PE
    /// to join into a multi-profile UKI (`.profile` first, no `.sbat`); with
    /// [`join_profile`](Self::join_profile) it is the base profile (profile 0).
    pub fn profile(mut self, c: SectionContent) -> Self {
        self.profile = Some(c);
        self
    }
    /// Append the profile in PE `p` (built with [`profile`](Self::profile)) as the next
    /// profile of a multi-profile UKI (ukify `--join-profile`, repeatable). Without a base
    /// profile, the base gets ukify's `ID=main`.
    pub fn join_profile(mut self, p: impl Into<PathBuf>) -> Self {
        self.join_profiles.push(p.into());
        self
    }
    /// Follow this ukify's layout rather than the one of the stub's systemd version.
    pub fn layout(mut self, l: Layout) -> Self {
        self.layout = Some(l);
        self
    }
    /// Embed a `.pcrsig` signing the PCR 11 values of the final image, as measured by the
    /// stub in use, and `.pcrpkey` (unless given) when this is the only signer. Repeatable:
    /// each call is one signing group with its own key and phases (ukify's
    /// `[PCRSignature:NAME]`), and `.pcrsig` holds them all, merged per bank.
    pub fn sign_pcr_policy(mut self, signer: PcrPolicySigner) -> Self {
        self.pcr_signers.push(signer);
        self
    }

    /// Embed the PCR 11 policies unsigned instead ([`PcrPolicyDigests`]); the build fails with
    /// [`UkiError::PolicyDigestWithKey`] if a signer is given too (ukify refuses both).
    pub fn pcr_policy_digests(mut self, d: PcrPolicyDigests) -> Self {
        self.policy_digests = Some(d);
        self
    }

    /// Bind the signed (or printed) PCR 11 policies to an epoch counter: each approves
    /// PolicyPCR ∧ PolicyNV(counter ≤ epoch) ([`crate::policy::NvEpoch`]), so bumping the
    /// counter revokes them.
    pub fn bind_pcr_policies(mut self, nv: crate::policy::NvEpoch) -> Self {
        self.policy_nv = Some(nv);
        self
    }

    /// Each PCR policy group: its private key (none for [`PcrPolicyDigests`]), public key,
    /// banks and phases as given.
    fn policy_groups(&self) -> Result<Vec<PolicyGroup<'_>>, UkiError> {
        let mut v: Vec<PolicyGroup<'_>> = self
            .pcr_signers
            .iter()
            .map(|ps| {
                Ok((
                    Some(&*ps.key as &dyn Signer),
                    measure::pcr_signer_public(&*ps.key).map_err(UkiError::Measure)?,
                    ps.banks.as_slice(),
                    ps.phases.as_slice(),
                ))
            })
            .collect::<Result<_, UkiError>>()?;
        if let Some(d) = &self.policy_digests {
            v.push((
                None,
                d.public.clone(),
                d.banks.as_slice(),
                d.phases.as_slice(),
            ));
        }
        Ok(v)
    }

    /// Sign a PCR policy even without `.cmdline` (see [`UkiError::UnmeasuredCmdline`]): only
    /// for stubs that ignore the loader's command line under Secure Boot.
    pub fn allow_unmeasured_cmdline(mut self, allow: bool) -> Self {
        self.allow_unmeasured_cmdline = allow;
        self
    }

    /// Report PCR 11 for these banks and phases ([`BuildReport::pcr11`], ukify `--measure`),
    /// hashing each measured section while it is written rather than in a second pass. With
    /// a PCR policy signer the report has the signed banks and phases without this.
    pub fn measure(mut self, banks: Vec<HashAlg>, phases: Vec<Phase>) -> Self {
        self.measure = Some((banks, phases));
        self
    }

    /// Sign the embedded kernel with the Secure Boot key too (ukify `--sign-kernel`):
    /// `true` always, `false` never; unset (the default), as the layout's ukify decides —
    /// 257: when the kernel is a PE without signatures, so firmware or shim that verifies the
    /// kernel the stub loads accepts it; 252: never.
    pub fn sign_kernel(mut self, sign: bool) -> Self {
        self.sign_kernel = Some(sign);
        self
    }

    /// Sign the result for Secure Boot with `key`: a key file ([`crate::keys::SigningKey`]),
    /// a PKCS#11 key, or any other [`Signer`].
    pub fn sign_with(
        mut self,
        key: impl Signer + 'static,
        cert: Certificate,
        opts: SignOptions,
    ) -> Self {
        self.signer = Some((Box::new(key), cert, opts));
        self
    }

    /// The sections this builder will add, in `layout`'s file order (without `.sbat`,
    /// `.pcrsig` and joined profiles, which the build places), with their contents.
    pub fn planned_sections(
        &self,
        layout: Layout,
    ) -> Result<Vec<(SectionName, SectionContent)>, UkiError> {
        let mut out: Vec<(SectionName, SectionContent)> = Vec::new();
        let mut push = |name: &str, c: Option<SectionContent>| -> Result<(), UkiError> {
            if let Some(c) = c {
                let n = SectionName::new(name)?;
                // .dtbauto is the one section ukify repeats.
                if name != ".dtbauto" && out.iter().any(|(m, _)| *m == n) {
                    return Err(UkiError::DuplicateSection(n));
                }
                out.push((n, c));
            }
            Ok(())
        };
        let os_release = match (&self.os_release, self.host_os_release()) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(p)) => Some(SectionContent::File(p)),
            _ => None,
        };
        let uname = match (&self.uname, &self.linux) {
            (Some(u), _) => Some(u.clone()),
            (None, Some(l)) => scrape_uname(l)?,
            _ => None,
        };
        let uname = uname.map(|u| SectionContent::Bytes(u.into_bytes()));
        let file = |p: &Option<PathBuf>| p.clone().map(SectionContent::File);
        let initrd =
            (!self.initrds.is_empty()).then(|| SectionContent::Concat(self.initrds.clone()));
        let base_profile = self.base_profile();
        let hwids = match &self.hwids {
            Some(dir) => Some(SectionContent::Bytes(crate::hwids::blob_from_dir(dir)?)),
            None => None,
        };
        match layout {
            // ukify 252 `make_uki`; the stub measures in its own order regardless.
            Layout::Ukify252 => {
                if hwids.is_some() {
                    return Err(UkiError::HwidsLayout);
                }
                push(".osrel", os_release)?;
                push(".cmdline", self.cmdline.clone())?;
                push(".dtb", file(&self.devicetree))?;
                push(".uname", uname)?;
                push(".splash", file(&self.splash))?;
                push(".pcrpkey", self.pcrpkey.clone())?;
                push(".initrd", initrd)?;
                push(".ucode", file(&self.microcode))?;
                for d in &self.devicetree_auto {
                    push(".dtbauto", Some(SectionContent::File(d.clone())))?;
                }
                for (name, c) in &self.extra {
                    push(name, Some(c.clone()))?;
                }
                push(".pcrsig", self.pcrsig.clone())?;
                push(".linux", file(&self.linux))?;
            }
            // ukify 257 `make_uki`: a profile PE starts with `.profile`; a multi-profile UKI
            // ends its shared part with the base `.profile`.
            Layout::Ukify257 => {
                if self.join_profiles.is_empty() {
                    push(".profile", base_profile.clone())?;
                }
                push(".osrel", os_release)?;
                push(".cmdline", self.cmdline.clone())?;
                push(".dtb", file(&self.devicetree))?;
                for d in &self.devicetree_auto {
                    push(".dtbauto", Some(SectionContent::File(d.clone())))?;
                }
                push(".hwids", hwids)?;
                push(".uname", uname)?;
                push(".splash", file(&self.splash))?;
                push(".pcrpkey", self.pcrpkey.clone())?;
                push(".linux", file(&self.linux))?;
                push(".initrd", initrd)?;
                push(".ucode", file(&self.microcode))?;
                for (name, c) in &self.extra {
                    push(name, Some(c.clone()))?;
                }
                if !self.join_profiles.is_empty() {
                    push(".profile", base_profile)?;
                }
                push(".pcrsig", self.pcrsig.clone())?;
            }
        }
        Ok(out)
    }

    /// The base profile: the one given, or ukify's `ID=main` when profiles are joined.
    fn base_profile(&self) -> Option<SectionContent> {
        match (&self.profile, self.join_profiles.is_empty()) {
            (Some(p), _) => Some(p.clone()),
            (None, false) => Some(SectionContent::Bytes(b"ID=main".to_vec())),
            (None, true) => None,
        }
    }

    /// What is being built.
    fn kind(&self) -> ImageKind {
        match (&self.linux, &self.profile, self.join_profiles.is_empty()) {
            (_, Some(_), true) => ImageKind::ProfilePe,
            (Some(_), _, _) => ImageKind::Uki,
            (None, _, _) => ImageKind::Addon,
        }
    }

    /// The kernel signed with the Secure Boot key, when [`Self::sign_kernel`] says so.
    fn signed_kernel(&self, layout: Layout) -> Result<Option<tempfile::NamedTempFile>, UkiError> {
        let Some(kernel) = &self.linux else {
            return Ok(None);
        };
        let Some((key, cert, opts)) = &self.signer else {
            return match self.sign_kernel {
                Some(true) => Err(UkiError::SignKernelWithoutKey),
                _ => Ok(None),
            };
        };
        let sign = match (self.sign_kernel, layout) {
            (Some(s), _) => s,
            // ukify 252 never signs the kernel.
            (None, Layout::Ukify252) => false,
            (None, _) => {
                let mut f = File::open(kernel).map_err(input_err(kernel))?;
                // Not a PE (a compressed kernel): nothing firmware could verify.
                matches!(PeHeaders::read(&mut f), Ok((h, _)) if !h.is_signed())
            }
        };
        if !sign {
            return Ok(None);
        }
        let tmp = tempfile::NamedTempFile::new().map_err(|source| UkiError::Input {
            path: std::env::temp_dir(),
            source,
        })?;
        sign::sign_file(kernel, tmp.path(), &**key, cert, opts)?;
        Ok(Some(tmp))
    }

    /// The build host's os-release when it will be embedded by default.
    fn host_os_release(&self) -> Option<PathBuf> {
        if self.os_release.is_some() || self.linux.is_none() || self.no_default_os_release {
            return None;
        }
        inputs::default_os_release()
    }

    /// Assemble (and optionally sign) the UKI, writing `output` atomically.
    pub fn build(self, output: &Path) -> Result<BuildReport, UkiError> {
        let kind = self.kind();
        let stub_path = self.stub.clone().unwrap_or_else(|| {
            PathBuf::from(if kind == ImageKind::Addon {
                DEFAULT_ADDON_STUB
            } else {
                DEFAULT_STUB
            })
        });
        if !stub_path.exists() && self.stub.is_none() {
            return Err(UkiError::StubMissing(stub_path));
        }
        let stub = layout::read_stub(&stub_path)?;
        let stub_version = stub
            .headers
            .section(".sdmagic")
            .and_then(|s| {
                let mut c = io::Cursor::new(&stub.data);
                pe::read_section_memory(&mut c, s).ok()
            })
            .and_then(|b| parse_sdmagic(&String::from_utf8_lossy(&b)));
        let rules = StubRules::new(
            stub_version
                .as_deref()
                .and_then(measure::stub_major)
                .unwrap_or(measure::NEWEST_STUB),
        );
        let mut warnings = Vec::new();
        let os_release_from_host = self.host_os_release();
        if let Some(p) = &os_release_from_host {
            warnings.push(format!(
                "no os-release given: embedded the build host's {} as .osrel (as ukify does)",
                p.display()
            ));
        }
        let layout = self.layout.unwrap_or(Layout::for_stub(rules.version));
        let mut planned = self.planned_sections(layout)?;
        // The kernel signed for Secure Boot, in a temporary file that lives until the build
        // has copied it.
        let signed_kernel = self.signed_kernel(layout)?;
        if let Some(tmp) = &signed_kernel {
            for (name, content) in planned.iter_mut() {
                if name.as_str() == ".linux" {
                    *content = SectionContent::File(tmp.path().to_path_buf());
                }
            }
        }
        if planned.iter().any(|(n, _)| n.as_str() == ".sbat") {
            return Err(SbatError::ExtraSection.into());
        }

        // SBAT, as ukify 257 decides it: a UKI merges the stub's, the kernel's and the user's
        // entries; an addon has the user's (or ukify's addon entry) only; a profile PE none.
        let sbat_text = match kind {
            ImageKind::Uki => Some(sbat::merge(
                stub.sbat.as_deref(),
                self.linux.as_deref(),
                &self.sbat,
                DEFAULT_UKI_SBAT,
            )?),
            ImageKind::Addon => Some(sbat::merge(None, None, &self.sbat, DEFAULT_ADDON_SBAT)?),
            ImageKind::ProfilePe => None,
        };
        if self.policy_digests.is_some() && !self.pcr_signers.is_empty() {
            return Err(UkiError::PolicyDigestWithKey);
        }
        let groups = self.policy_groups()?;
        if !groups.is_empty()
            && !self.allow_unmeasured_cmdline
            && self.cmdline.is_none()
            && !planned.iter().any(|(n, _)| n.as_str() == ".cmdline")
        {
            return Err(UkiError::UnmeasuredCmdline);
        }
        if let [(_, public, _, _)] = groups.as_slice() {
            if self.pcrpkey.is_none() {
                let pem = measure::public_key_pem(public)?;
                let before: &[&str] = match layout {
                    Layout::Ukify252 => &[".initrd", ".linux"],
                    Layout::Ukify257 => &[".linux"],
                };
                let pos = planned
                    .iter()
                    .position(|(n, _)| before.contains(&n.as_str().as_str()))
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
            match layout::stub_sbat_slot(&headers) {
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
                    layout::insert_appended(
                        &mut planned,
                        layout,
                        ".sbat",
                        SectionContent::Bytes(bytes),
                    )?;
                    sbat_placement = Some("appended".to_string());
                }
                None => {
                    layout::insert_appended(
                        &mut planned,
                        layout,
                        ".sbat",
                        SectionContent::Bytes(bytes),
                    )?;
                    sbat_placement = Some("appended".to_string());
                }
            }
        }

        // Measured sections hashed by the PCR signer's pass, reused for the report.
        let mut signer_pass = None;
        // Or, in one pass: `.pcrsig` signed while the output is written (see `DeferredPcrsig`).
        let mut deferred = None;
        if !groups.is_empty() && self.one_pass_pcrsig(&groups, &planned) {
            let (banks, sgroups) = self.signer_banks()?;
            // The text's length does not depend on the digests (fixed-length hex, one RSA
            // signature of the key's size per policy): sign zero digests to learn it.
            let mut zero = Vec::new();
            for (name, content) in &planned {
                if let Some(section) =
                    UkiSection::from_name(&name.as_str()).filter(|s| rules.measures(*s))
                {
                    zero.push(SectionDigests {
                        section,
                        size: content.len()?,
                        digests: banks.iter().map(|b| Digest::zero(*b)).collect(),
                    });
                }
            }
            if let Some(b) = &sbat_in_place {
                zero.push(sbat_digests(b, &banks));
            }
            let placeholder = self
                .signer_pass(rules, layout, banks.clone(), sgroups.clone(), zero)?
                .json;
            layout::insert_appended(
                &mut planned,
                layout,
                ".pcrsig",
                SectionContent::Bytes(placeholder.into_bytes()),
            )?;
            deferred = Some(DeferredPcrsig {
                banks,
                groups: sgroups,
                at: 0,
                before: Vec::new(),
                after: Vec::new(),
            });
        } else if !groups.is_empty() {
            let pass = self.pcrsig_json(rules, layout, &planned, sbat_in_place.as_deref())?;
            layout::insert_appended(
                &mut planned,
                layout,
                ".pcrsig",
                SectionContent::Bytes(pass.json.clone().into_bytes()),
            )?;
            signer_pass = Some(pass);
        }
        let measure_req = self.measure.as_ref().map(|(banks, phases)| {
            let banks = if banks.is_empty() {
                vec![HashAlg::Sha256]
            } else {
                banks.clone()
            };
            (banks, phases_or_default(phases))
        });
        // Hash sections while writing only when no signer pass has their digests already.
        let measure_banks: Option<&[HashAlg]> = match (&measure_req, &signer_pass) {
            (Some((banks, _)), Some(pass)) if banks.iter().all(|b| pass.banks.contains(b)) => None,
            (Some((banks, _)), _) => Some(banks),
            (None, _) => None,
        };

        // Joined profiles follow, each signed on its own (base sections it does not replace,
        // plus its own) when PCR policies are signed.
        for path in &self.join_profiles {
            let sections = layout::profile_sections(path, self.os_release.is_some())?;
            if let Some(pass) = &signer_pass {
                let json = self.profile_pcrsig(rules, layout, pass, &sections)?;
                planned.extend(sections);
                planned.push((
                    SectionName::new(".pcrsig")?,
                    SectionContent::Bytes(json.into_bytes()),
                ));
            } else {
                planned.extend(sections);
            }
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

        // Sections hashed while written: what `--measure` reports, and what the deferred
        // `.pcrsig` signs; those after `.pcrsig` in the file are hashed for it beforehand.
        let mut hash_banks: Vec<HashAlg> =
            measure_banks.map(<[HashAlg]>::to_vec).unwrap_or_default();
        if let Some(d) = &mut deferred {
            for b in &d.banks {
                if !hash_banks.contains(b) {
                    hash_banks.push(*b);
                }
            }
            d.at = sized
                .iter()
                .position(|(n, _, _)| n.as_str() == ".pcrsig")
                .ok_or(UkiError::NoDigest)?;
            for (i, (name, content, _)) in sized.iter().enumerate().skip(d.at + 1) {
                if let Some(section) =
                    UkiSection::from_name(&name.as_str()).filter(|s| rules.measures(*s))
                {
                    let (size, digests) = content.digests(&hash_banks)?;
                    d.after.push((
                        i,
                        SectionDigests {
                            section,
                            size,
                            digests,
                        },
                    ));
                }
            }
        }

        let needed = sized.len();
        if needed * SECTION_HEADER_LEN > headers.spare_header_room()
            && headers.pe_offset > layout::DOS_HEADER_LEN
        {
            // Gain room by moving the PE headers down over the MS-DOS stub program (e_lfanew
            // may be 0x40, right after the MS-DOS header). Section data does not move.
            layout::compact_headers(&mut stub_data, &mut headers);
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

        let placement = layout::place(&headers, stub_data.len() as u64, &sized, layout)?;
        let total_len = placement.total_len;
        // Refuse before writing anything: the certificate table offset (and the end of the last
        // section) must fit 32 bits, or a signed image's directory would point elsewhere.
        let total_len_u32 =
            u32::try_from(total_len).map_err(|_| UkiError::OutputTooLarge { len: total_len })?;
        let nx_compat = match (layout, &self.linux) {
            (Layout::Ukify257, Some(k)) => inputs::nx_compat(k)?,
            _ => None,
        };
        let patched = layout::patch_headers(
            &stub,
            &headers,
            &stub_data,
            &placement,
            self.timestamp,
            nx_compat,
        )?;
        if self.signer.is_some() && patched.security_dir.is_none() {
            return Err(SignError::NoSecurityDirectory(headers.data_directories.len()).into());
        }

        // Stream the output, hashing every byte once (and, when PCR 11 is reported and no
        // signer pass hashed them, every measured section's bytes on the side).
        let out_err = |source: io::Error| UkiError::Output {
            path: output.to_path_buf(),
            source,
        };
        let mut out = AtomicFile::create(output, 0o644).map_err(out_err)?;
        let syncer = EarlyWriteback::start(out.file()).map_err(out_err)?;
        let mut skip = vec![(patched.checksum_offset as u64, 4)];
        if let Some(sd) = patched.security_dir {
            skip.push((sd as u64, 8));
        }
        let mut w = HashingWriter {
            inner: out.file(),
            path: output,
            hasher: MultiHasher::new(&[HashAlg::Sha256]),
            pos: 0,
            syncer,
            skip,
            section: None,
        };
        w.put(&patched.bytes)?;
        w.put(&stub_data[patched.bytes.len()..])?;
        let mut buf = vec![0u8; COPY_BUF];
        let mut measured = Vec::new();
        for (i, ((name, content, len), sh)) in sized.iter().zip(&placement.headers).enumerate() {
            w.pad_to(u64::from(sh.pointer_to_raw_data), &mut buf)?;
            if let Some(d) = deferred.as_ref().filter(|d| d.at == i) {
                let mut sections = d.before.clone();
                sections.extend(d.after.iter().map(|(_, s)| s.clone()));
                if let Some(b) = &sbat_in_place {
                    sections.push(sbat_digests(b, &d.banks));
                }
                let pass =
                    self.signer_pass(rules, layout, d.banks.clone(), d.groups.clone(), sections)?;
                if pass.json.len() as u64 != *len {
                    return Err(UkiError::PcrsigLength {
                        planned: *len,
                        actual: pass.json.len() as u64,
                    });
                }
                w.put(pass.json.as_bytes())?;
                signer_pass = Some(pass);
                continue;
            }
            let section = UkiSection::from_name(&name.as_str()).filter(|s| rules.measures(*s));
            let hashed_before = deferred
                .as_ref()
                .and_then(|d| d.after.iter().find(|(j, _)| *j == i))
                .map(|(_, s)| s.clone());
            w.section = match (section, &hashed_before) {
                (Some(_), None) if !hash_banks.is_empty() => Some(MultiHasher::new(&hash_banks)),
                _ => None,
            };
            let written = copy_content(content, &mut w, &mut buf)?;
            if written != *len {
                return Err(UkiError::InputChanged {
                    section: *name,
                    expected: *len,
                    read: written,
                });
            }
            let digests = match (section, w.section.take()) {
                (Some(section), Some(h)) => Some(SectionDigests {
                    section,
                    size: *len,
                    digests: h.finalize(),
                }),
                _ => hashed_before,
            };
            if let Some(sd) = digests {
                if let Some(d) = deferred.as_mut().filter(|d| i < d.at) {
                    d.before.push(sd.clone());
                }
                if measure_banks.is_some() {
                    measured.push(sd);
                }
            }
        }
        w.pad_to(total_len, &mut buf)?;
        let HashingWriter { hasher, syncer, .. } = w;
        drop(syncer);
        let digest = hasher.finalize().pop().ok_or(UkiError::NoDigest)?;

        let signed = self.signer.is_some();
        if let (Some((key, cert, opts)), Some(sd)) = (&self.signer, patched.security_dir) {
            let pkcs7 = sign::authenticode_signature(&digest, &**key, cert, opts)?;
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

        let pcr11 = match (&measure_req, signer_pass) {
            (Some((banks, phases)), pass) => {
                let sections = match (measure_banks, pass) {
                    (None, Some(pass)) => pass.sections,
                    _ => {
                        if let Some(b) = &sbat_in_place {
                            measured.push(sbat_digests(b, banks));
                        }
                        measured
                    }
                };
                Some(measure::predict_pcr11(
                    &sections,
                    Some(rules),
                    banks,
                    phases,
                ))
            }
            (None, Some(pass)) => Some(pass.prediction),
            (None, None) => None,
        };
        Ok(BuildReport {
            output: output.to_path_buf(),
            size,
            authenticode_sha256: digest.clone(),
            added_sections: placement.headers.iter().map(|s| s.name.as_str()).collect(),
            sbat_placement,
            signed,
            os_release_from_host,
            pcr11,
            stub_version,
            layout,
            kernel_signed: signed_kernel.is_some(),
            warnings,
        })
    }

    /// The `.pcrsig` JSON for the sections about to be written, with the digests and the
    /// PCR 11 prediction it signs (the first group's).
    fn pcrsig_json(
        &self,
        rules: StubRules,
        layout: Layout,
        planned: &[(SectionName, SectionContent)],
        sbat_in_place: Option<&[u8]>,
    ) -> Result<SignerPass, UkiError> {
        let (banks, groups) = self.signer_banks()?;
        let mut sections = Vec::new();
        for (name, content) in planned {
            // Only what the stub measures is hashed.
            let Some(section) =
                UkiSection::from_name(&name.as_str()).filter(|s| rules.measures(*s))
            else {
                continue;
            };
            let (size, digests) = content.digests(&banks)?;
            sections.push(SectionDigests {
                section,
                size,
                digests,
            });
        }
        if let Some(b) = sbat_in_place {
            sections.push(sbat_digests(b, &banks));
        }
        self.signer_pass(rules, layout, banks, groups, sections)
    }

    /// Whether `.pcrsig` can be signed during the write: one signing group with a private
    /// key (its text then has one length whatever the digests), no joined profiles and at
    /// most one `.dtbauto` (whose signatures are merged, so their number could vary).
    fn one_pass_pcrsig(
        &self,
        groups: &[PolicyGroup<'_>],
        planned: &[(SectionName, SectionContent)],
    ) -> bool {
        groups.len() == 1
            && groups[0].0.is_some()
            && self.policy_digests.is_none()
            && self.join_profiles.is_empty()
            && planned
                .iter()
                .filter(|(n, _)| n.as_str() == ".dtbauto")
                .count()
                <= 1
    }

    /// Every bank a signing group uses, and each group's banks and phases.
    #[allow(clippy::type_complexity)]
    fn signer_banks(&self) -> Result<(Vec<HashAlg>, Vec<(Vec<HashAlg>, Vec<Phase>)>), UkiError> {
        // Each group's banks (ukify's default: sha256) and phases (ours: the initrd phases,
        // where disk keys are released); sections are hashed once in every bank any uses.
        let groups: Vec<(Vec<HashAlg>, Vec<Phase>)> = self
            .policy_groups()?
            .into_iter()
            .map(|(_, _, banks, phases)| {
                let banks = if banks.is_empty() {
                    vec![HashAlg::Sha256]
                } else {
                    banks.to_vec()
                };
                let phases = if phases.is_empty() {
                    Phase::initrd()
                } else {
                    let mut p = phases.to_vec();
                    p.sort();
                    p.dedup();
                    p
                };
                (banks, phases)
            })
            .collect();
        let mut banks: Vec<HashAlg> = Vec::new();
        for b in groups.iter().flat_map(|(b, _)| b) {
            if !banks.contains(b) {
                banks.push(*b);
            }
        }
        Ok((banks, groups))
    }

    /// The `.pcrsig` text and predictions for measured `sections` (their digests in `banks`).
    fn signer_pass(
        &self,
        rules: StubRules,
        layout: Layout,
        banks: Vec<HashAlg>,
        groups: Vec<(Vec<HashAlg>, Vec<Phase>)>,
        sections: Vec<SectionDigests>,
    ) -> Result<SignerPass, UkiError> {
        // The stub measures the one `.dtbauto` it picks by hardware ID (`.hwids`), so ukify
        // 257 (`call_systemd_measure`) signs once per `.dtbauto`, each with the other
        // sections, and merges the policies.
        let dtbautos: Vec<&SectionDigests> = sections
            .iter()
            .filter(|s| s.section == UkiSection::Dtbauto)
            .collect();
        let (sigs, prediction) = if dtbautos.len() > 1 {
            let others: Vec<SectionDigests> = sections
                .iter()
                .filter(|s| s.section != UkiSection::Dtbauto)
                .cloned()
                .collect();
            let mut all = Vec::new();
            let mut first = None;
            for d in dtbautos {
                let mut variant = others.clone();
                variant.push(d.clone());
                let (sigs, predictions) = self.sign_groups(rules, &groups, &variant)?;
                merge_signatures(&mut all, sigs);
                if first.is_none() {
                    first = predictions.into_iter().next();
                }
            }
            (all, first.ok_or(UkiError::NoDigest)?)
        } else {
            let (sigs, predictions) = self.sign_groups(rules, &groups, &sections)?;
            (
                sigs,
                predictions.into_iter().next().ok_or(UkiError::NoDigest)?,
            )
        };
        Ok(SignerPass {
            json: self.pcrsig_section_text(&sigs, layout),
            sections,
            banks,
            groups,
            prediction,
        })
    }

    /// Sign PCR 11 as predicted from `sections` for each signing group, merged per bank
    /// without duplicates (ukify `combine_signatures`); and each group's prediction.
    fn sign_groups(
        &self,
        rules: StubRules,
        groups: &[(Vec<HashAlg>, Vec<Phase>)],
        sections: &[SectionDigests],
    ) -> Result<(measure::PcrSignatures, Vec<Pcr11Prediction>), UkiError> {
        let mut all: measure::PcrSignatures = Vec::new();
        let mut predictions = Vec::new();
        for ((key, public, _, _), (banks, phases)) in self.policy_groups()?.into_iter().zip(groups)
        {
            let prediction = measure::predict_pcr11(sections, Some(rules), banks, phases);
            let sigs = match key {
                Some(k) => measure::sign_policies_bound(&prediction, k, self.policy_nv.as_ref()),
                None => measure::policy_digests_bound(
                    &prediction,
                    Some(&public),
                    self.policy_nv.as_ref(),
                ),
            }
            .map_err(UkiError::Measure)?;
            merge_signatures(&mut all, sigs);
            predictions.push(prediction);
        }
        Ok((all, predictions))
    }
}

impl UkiBuilder {
    /// The `.pcrsig` of a joined profile: PCR 11 when the stub boots that profile — its
    /// measured sections, and the base's (the part before the first `.profile`) that it does
    /// not replace (ukify 257 `call_systemd_measure` with `profile_start`).
    fn profile_pcrsig(
        &self,
        rules: StubRules,
        layout: Layout,
        base: &SignerPass,
        sections: &[(SectionName, SectionContent)],
    ) -> Result<String, UkiError> {
        let mut measured = Vec::new();
        for (name, content) in sections {
            let Some(section) =
                UkiSection::from_name(&name.as_str()).filter(|s| rules.measures(*s))
            else {
                continue;
            };
            let (size, digests) = content.digests(&base.banks)?;
            measured.push(SectionDigests {
                section,
                size,
                digests,
            });
        }
        for s in base
            .sections
            .iter()
            .filter(|s| s.section != UkiSection::Profile)
        {
            if !measured.iter().any(|m| m.section == s.section) {
                measured.push(s.clone());
            }
        }
        let (sigs, _) = self.sign_groups(rules, &base.groups, &measured)?;
        Ok(self.pcrsig_section_text(&sigs, layout))
    }

    /// [`pcrsig_text`], padded for [`PcrPolicyDigests`].
    fn pcrsig_section_text(&self, sigs: &measure::PcrSignatures, layout: Layout) -> String {
        let mut text = pcrsig_text(sigs, layout);
        if self.policy_digests.is_some() {
            let n: usize = sigs.iter().map(|(_, e)| e.len()).sum();
            text.push_str(&" ".repeat(1024 * n));
        }
        text
    }
}

/// Add `sigs` to `all`, per bank, without duplicates (ukify `combine_signatures`).
fn merge_signatures(all: &mut measure::PcrSignatures, sigs: measure::PcrSignatures) {
    for (bank, entries) in sigs {
        let pos = match all.iter().position(|(b, _)| *b == bank) {
            Some(p) => p,
            None => {
                all.push((bank, Vec::new()));
                all.len() - 1
            }
        };
        for e in entries {
            if !all[pos].1.contains(&e) {
                all[pos].1.push(e);
            }
        }
    }
}

/// `.pcrsig` as the layout's ukify writes it: systemd-measure's compact JSON (252), or
/// Python's `json.dumps` of it (257 `combine_signatures`: ", " and ": " separators).
pub(crate) fn pcrsig_text(sigs: &measure::PcrSignatures, layout: Layout) -> String {
    let v = measure::signatures_json(sigs);
    match layout {
        Layout::Ukify252 => v.to_string(),
        // Serializing a Value cannot fail.
        Layout::Ukify257 => crate::python::json_dumps(&v, None).unwrap_or_else(|_| v.to_string()),
    }
}

/// What the PCR signer's hashing pass computed.
/// A `.pcrsig` signed during the write (one pass over the inputs): its placeholder of the
/// right length is planned, the measured sections before it are hashed as they are written,
/// those after it just before the write, and the text is made when the writer reaches it.
struct DeferredPcrsig {
    banks: Vec<HashAlg>,
    groups: Vec<(Vec<HashAlg>, Vec<Phase>)>,
    /// Index of `.pcrsig` among the written sections.
    at: usize,
    /// Digests of the measured sections written before `.pcrsig`.
    before: Vec<SectionDigests>,
    /// Digests of the measured sections after it (their index among the written sections).
    after: Vec<(usize, SectionDigests)>,
}

struct SignerPass {
    json: String,
    sections: Vec<SectionDigests>,
    /// Every bank a group signs.
    banks: Vec<HashAlg>,
    /// Each group's banks and phases.
    groups: Vec<(Vec<HashAlg>, Vec<Phase>)>,
    /// The first group's prediction.
    prediction: Pcr11Prediction,
}

/// The digests of the stub's own `.sbat`, rewritten in place.
fn sbat_digests(bytes: &[u8], banks: &[HashAlg]) -> SectionDigests {
    SectionDigests {
        section: UkiSection::Sbat,
        size: bytes.len() as u64,
        digests: banks.iter().map(|a| a.digest(bytes)).collect(),
    }
}

/// The phases to report: the given ones, or systemd-measure's defaults (what ukify
/// `--measure` prints).
fn phases_or_default(phases: &[Phase]) -> Vec<Phase> {
    if phases.is_empty() {
        return Phase::defaults();
    }
    let mut p = phases.to_vec();
    p.sort();
    p.dedup();
    p
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
