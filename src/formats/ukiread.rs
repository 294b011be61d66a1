//! Reading unified kernel images: sections as the stub maps and measures them (VirtualSize
//! bytes, zero-filled past the raw data), the `.sdmagic` stub version, metadata sections read
//! whole (bounded), and `inspect`. Below the prediction layer, which measures what is read
//! here; the builder (`crate::uki`) re-exports all of it.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::authenticode;
use crate::hash::{Digest, HashAlg, MultiHasher};
use crate::pe::{self, PeHeaders, SectionHeader};
use crate::sign::{self, SignerReport};

/// A well-known UKI section (UAPI UKI spec, "UKI Components"; systemd `uki.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum UkiSection {
    /// The kernel (`.linux`).
    Linux,
    /// os-release (`.osrel`).
    Osrel,
    /// Kernel command line (`.cmdline`).
    Cmdline,
    /// Initrd (`.initrd`).
    Initrd,
    /// Microcode initrd (`.ucode`).
    Ucode,
    /// Boot splash (`.splash`).
    Splash,
    /// Devicetree (`.dtb`).
    Dtb,
    /// `uname -r` (`.uname`).
    Uname,
    /// SBAT (`.sbat`).
    Sbat,
    /// Signed PCR policy JSON (`.pcrsig`).
    Pcrsig,
    /// PCR signing public key (`.pcrpkey`).
    Pcrpkey,
    /// A profile of a multi-profile UKI (`.profile`, systemd 257).
    Profile,
    /// Devicetrees matched by hardware ID (`.dtbauto`, systemd 257).
    Dtbauto,
    /// Hardware IDs (`.hwids`, systemd 257).
    Hwids,
    /// Firmware images picked by hardware ID (`.efifw`, systemd 258).
    Efifw,
}

impl UkiSection {
    /// The PE section name.
    pub const fn name(self) -> &'static str {
        match self {
            UkiSection::Linux => ".linux",
            UkiSection::Osrel => ".osrel",
            UkiSection::Cmdline => ".cmdline",
            UkiSection::Initrd => ".initrd",
            UkiSection::Ucode => ".ucode",
            UkiSection::Splash => ".splash",
            UkiSection::Dtb => ".dtb",
            UkiSection::Uname => ".uname",
            UkiSection::Sbat => ".sbat",
            UkiSection::Pcrsig => ".pcrsig",
            UkiSection::Pcrpkey => ".pcrpkey",
            UkiSection::Profile => ".profile",
            UkiSection::Dtbauto => ".dtbauto",
            UkiSection::Hwids => ".hwids",
            UkiSection::Efifw => ".efifw",
        }
    }

    /// Every known section in systemd-stub's measurement order: the order of systemd's
    /// `enum UnifiedSection` (`src/fundamental/uki.h`), which systemd never reorders.
    pub const MEASUREMENT_ORDER: &'static [UkiSection] = &[
        UkiSection::Linux,
        UkiSection::Osrel,
        UkiSection::Cmdline,
        UkiSection::Initrd,
        UkiSection::Ucode,
        UkiSection::Splash,
        UkiSection::Dtb,
        UkiSection::Uname,
        UkiSection::Sbat,
        UkiSection::Pcrsig,
        UkiSection::Pcrpkey,
        UkiSection::Profile,
        UkiSection::Dtbauto,
        UkiSection::Hwids,
        UkiSection::Efifw,
    ];

    /// The section with PE name `name`, if it is one the stub knows.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::MEASUREMENT_ORDER
            .iter()
            .copied()
            .find(|s| s.name() == name)
    }

    /// Whether the content is text (shown by `inspect`).
    pub fn is_text(self) -> bool {
        use UkiSection::*;
        matches!(
            self,
            Cmdline | Osrel | Uname | Sbat | Pcrsig | Pcrpkey | Profile
        )
    }
}

impl std::fmt::Display for UkiSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for UkiSection {
    type Err = UnknownSection;
    fn from_str(s: &str) -> Result<Self, UnknownSection> {
        Self::from_name(s).ok_or_else(|| UnknownSection(s.into()))
    }
}

/// A name that is not a section the stub knows.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a UKI section systemd-stub knows")]
pub struct UnknownSection(pub String);

/// Whether a section named `name` holds text (`.sdmagic` and the text UKI sections).
pub fn is_text_section(name: &str) -> bool {
    name == ".sdmagic" || UkiSection::from_name(name).is_some_and(UkiSection::is_text)
}

/// Errors reading or inspecting a UKI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The image could not be read.
    #[error("cannot read {path}")]
    Input {
        /// The image.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A section asked for in memory ([`read_section`]) is larger than the sections a UKI
    /// reader needs whole (`.osrel`, `.cmdline`, `.pcrsig`, `.pcrpkey`, `.sbat`, `.uname`):
    /// reading it would let a planted image claim gigabytes of memory.
    #[error("section {name} is {len} bytes; sections read whole are limited to {limit} bytes")]
    SectionTooLarge {
        /// The section.
        name: String,
        /// Its VirtualSize.
        len: u64,
        /// [`MAX_READ_SECTION`].
        limit: u64,
    },
    /// Parsing the PE headers failed.
    #[error(transparent)]
    Pe(#[from] pe::PeError),
    /// Hashing failed.
    #[error(transparent)]
    Authenticode(#[from] authenticode::AuthenticodeError),
    /// Reading a signature failed.
    #[error(transparent)]
    Sign(#[from] sign::SignError),
    /// Reading the image failed.
    #[error("I/O error")]
    Io(#[from] io::Error),
    /// Something went wrong reading this file (the source says what).
    #[error("{path}")]
    InFile {
        /// The image.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<InspectError>,
    },
    /// An extracted section (`inspect --section NAME:MODE@FILE`) could not be written.
    #[error("cannot write {}", path.display())]
    Output {
        /// The output file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// No SHA-256 digest came out of the Authenticode hash (asked for one).
    #[error("the Authenticode hash returned no digest")]
    NoDigest,
}

impl InspectError {
    /// Name the file an error happened in (errors that name it already stay as they are).
    fn in_file(self, path: &Path) -> Self {
        match self {
            e @ (InspectError::Input { .. }
            | InspectError::InFile { .. }
            | InspectError::Output { .. }) => e,
            e => InspectError::InFile {
                path: path.to_path_buf(),
                source: Box::new(e),
            },
        }
    }
}

fn input_err(path: &Path) -> impl FnOnce(io::Error) -> InspectError + '_ {
    move |source| InspectError::Input {
        path: path.to_path_buf(),
        source,
    }
}

/// One section as `inspect` reports it.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct SectionInfo {
    /// Section name.
    pub name: String,
    /// RVA.
    pub rva: u32,
    /// VirtualSize: the number of bytes the stub measures.
    pub virtual_size: u32,
    /// File offset of the data.
    pub file_offset: u32,
    /// SizeOfRawData.
    pub raw_size: u32,
    /// SHA-256 of the VirtualSize bytes the loader maps (and the stub measures).
    pub sha256: Digest,
    /// The content, for text sections.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// What `bootchain uki inspect` shows. The JSON form of this struct is the documented,
/// stable output of `inspect --json` (see README "inspect JSON").
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct UkiInfo {
    /// File length.
    pub size: u64,
    /// Stub version from `.sdmagic` (e.g. "252.39-1~deb12u2").
    pub stub_version: Option<String>,
    /// Authenticode SHA-256 of the image, hex.
    pub authenticode_sha256: Digest,
    /// Every section in table order.
    pub sections: Vec<SectionInfo>,
    /// Every signature.
    pub signatures: Vec<SignerReport>,
}

/// Hash the bytes a loader maps for section `s`: the file bytes up to min(VirtualSize,
/// SizeOfRawData), then zeros up to VirtualSize. Streams large sections.
pub fn section_memory_digests<R: Read + Seek>(
    r: &mut R,
    s: &SectionHeader,
    algs: &[HashAlg],
) -> io::Result<Vec<Digest>> {
    let mut mh = MultiHasher::new(algs);
    let file_part = u64::from(s.loaded_file_len());
    authenticode::hash_file_ranges(
        r,
        std::slice::from_ref(
            &(u64::from(s.pointer_to_raw_data)..u64::from(s.pointer_to_raw_data) + file_part),
        ),
        &mut mh,
    )?;
    let mut zeros = u64::from(s.virtual_size) - file_part;
    let z = [0u8; 4096];
    while zeros > 0 {
        let n = zeros.min(4096) as usize;
        mh.update(&z[..n]);
        zeros -= n as u64;
    }
    Ok(mh.finalize())
}

/// The stub version in a `.sdmagic` text ("#### LoaderInfo: systemd-stub 252.39 ####").
pub fn parse_sdmagic(text: &str) -> Option<String> {
    let t = text.trim_end_matches('\0');
    let rest = t.split("LoaderInfo:").nth(1)?;
    let mut words = rest.split_whitespace();
    let first = words.next()?;
    let version = if first.starts_with("systemd-") {
        words.next()?
    } else {
        first
    };
    (version != "####").then(|| version.to_string())
}

/// The largest section [`read_section`] reads into memory: 16 MiB, far above any text or key
/// section (the kernel and initrd are hashed and copied as streams, never read whole).
pub const MAX_READ_SECTION: u64 = 16 << 20;

/// The in-memory bytes of section `name` of a UKI (trailing NULs kept), if present. For the
/// small metadata sections (`.pcrsig`, `.pcrpkey`, `.cmdline` ...); refuses sections over
/// [`MAX_READ_SECTION`] with [`InspectError::SectionTooLarge`].
pub fn read_section(path: &Path, name: &str) -> Result<Option<Vec<u8>>, InspectError> {
    read_section_in(path, name).map_err(|e| e.in_file(path))
}

fn read_section_in(path: &Path, name: &str) -> Result<Option<Vec<u8>>, InspectError> {
    let mut f = File::open(path).map_err(input_err(path))?;
    let (h, _) = PeHeaders::read(&mut f)?;
    let Some(s) = h.sections.iter().find(|s| s.name.as_str() == name) else {
        return Ok(None);
    };
    if u64::from(s.virtual_size) > MAX_READ_SECTION {
        return Err(InspectError::SectionTooLarge {
            name: name.to_string(),
            len: u64::from(s.virtual_size),
            limit: MAX_READ_SECTION,
        });
    }
    Ok(Some(pe::read_section_memory(&mut f, s)?))
}

/// Inspect a UKI (or any PE image).
///
/// ```no_run
/// let info = bootchain::uki::inspect("uki.efi".as_ref())?;
/// for s in &info.sections { println!("{} {}", s.name, s.sha256); }
/// # Ok::<(), bootchain::uki::InspectError>(())
/// ```
pub fn inspect(path: &Path) -> Result<UkiInfo, InspectError> {
    let mut f = File::open(path).map_err(input_err(path))?;
    inspect_reader(&mut f).map_err(|e| e.in_file(path))
}

/// [`inspect`] on an open image (a file, or a `Cursor` over bytes in memory).
pub fn inspect_reader<R: Read + Seek>(f: &mut R) -> Result<UkiInfo, InspectError> {
    let (h, _) = PeHeaders::read(f)?;
    let auth = authenticode::image_digests_with_headers(f, &h, &[HashAlg::Sha256])?
        .pop()
        .ok_or(InspectError::NoDigest)?;
    let mut sections = Vec::new();
    let mut stub_version = None;
    for s in &h.sections {
        let name = s.name.as_str();
        let d = section_memory_digests(f, s, &[HashAlg::Sha256])?;
        let text = if is_text_section(&name) && s.virtual_size <= 1 << 20 {
            let b = pe::read_section_memory(f, s)?;
            Some(
                String::from_utf8_lossy(&b)
                    .trim_end_matches('\0')
                    .to_string(),
            )
        } else {
            None
        };
        if name == ".sdmagic" {
            stub_version = text.as_deref().and_then(parse_sdmagic);
        }
        sections.push(SectionInfo {
            name,
            rva: s.virtual_address,
            virtual_size: s.virtual_size,
            file_offset: s.pointer_to_raw_data,
            raw_size: s.size_of_raw_data,
            sha256: d.into_iter().next().ok_or(InspectError::NoDigest)?,
            text,
        });
    }
    let signatures = sign::describe_signatures(f, &h, &auth)?;
    Ok(UkiInfo {
        size: h.file_len,
        stub_version,
        authenticode_sha256: auth,
        sections,
        signatures,
    })
}

/// How `ukify inspect` shows a section: with its text, or size and digest only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShowAs {
    /// Size, SHA-256 and the text.
    Text,
    /// Size and SHA-256.
    Binary,
}

/// The sections `ukify inspect` (systemd 257) shows when no `--section` is given, and how
/// (ukify's `DEFAULT_SECTIONS_TO_SHOW`). Other sections show as binary with `--all`.
pub fn ukify_default_show(name: &str) -> Option<ShowAs> {
    match name {
        ".linux" | ".initrd" | ".ucode" | ".splash" | ".dtb" | ".dtbauto" | ".hwids" | ".sbom" => {
            Some(ShowAs::Binary)
        }
        ".cmdline" | ".osrel" | ".uname" | ".pcrpkey" | ".pcrsig" | ".sbat" | ".profile" => {
            Some(ShowAs::Text)
        }
        _ => None,
    }
}

/// A `--section NAME:text|binary[@FILE]` selector of `ukify inspect`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionSelector {
    /// The section name.
    pub name: String,
    /// How to show it.
    pub show: ShowAs,
    /// Write the section's bytes (`min(VirtualSize, SizeOfRawData)`, trailing NULs kept)
    /// here.
    pub extract: Option<PathBuf>,
}

/// A selector that does not parse (ukify: "Cannot parse section spec").
#[derive(Debug, thiserror::Error)]
#[error("cannot parse section spec {0:?}: expected NAME:text|binary[@FILE]")]
pub struct SelectorError(pub String);

impl std::str::FromStr for SectionSelector {
    type Err = SelectorError;
    /// As ukify's `re.match(r'([a-zA-Z0-9_.]+):(text|binary)(?:@(.+))?', s)`: anchored at
    /// the start only, so text after the mode that does not start with `@` is ignored, and
    /// the file name ends at the first newline.
    fn from_str(s: &str) -> Result<Self, SelectorError> {
        let bad = || SelectorError(s.to_string());
        let name_len = s
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'.')
            .count();
        if name_len == 0 {
            return Err(bad());
        }
        let (name, rest) = s.split_at(name_len);
        let rest = rest.strip_prefix(':').ok_or_else(bad)?;
        let (show, rest) = if let Some(r) = rest.strip_prefix("text") {
            (ShowAs::Text, r)
        } else if let Some(r) = rest.strip_prefix("binary") {
            (ShowAs::Binary, r)
        } else {
            return Err(bad());
        };
        let extract = rest
            .strip_prefix('@')
            .map(|r| r.split('\n').next().unwrap_or(""))
            .filter(|f| !f.is_empty())
            .map(PathBuf::from);
        Ok(SectionSelector {
            name: name.to_string(),
            show,
            extract,
        })
    }
}

/// What `ukify inspect` shows and extracts.
#[derive(Clone, Debug, Default)]
pub struct UkifyInspectOptions {
    /// `--section` selectors (for a name given twice, the last counts).
    pub selectors: Vec<SectionSelector>,
    /// `--all`: every section.
    pub all: bool,
}

/// The text of a section shown as text.
#[derive(Clone, Debug)]
pub enum SectionText {
    /// `data.rstrip(b'\0').replace(b'\0', b'\\0')`, decoded.
    Utf8(String),
    /// Not UTF-8 (ukify shows "(not valid UTF-8)" and warns).
    NotUtf8(std::str::Utf8Error),
}

/// One section as `ukify inspect` describes it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct UkifySection {
    /// Name.
    pub name: String,
    /// `min(VirtualSize, SizeOfRawData)`.
    pub size: u64,
    /// SHA-256 of those bytes.
    pub sha256: Digest,
    /// The text, when shown as text.
    pub text: Option<SectionText>,
}

/// `ukify inspect` (systemd 257): the sections shown, in table order (repeated names
/// repeated), and each selector's `@FILE` written (atomically; a name present several
/// times is written each time, so the last wins, as in ukify). Text sections are limited to
/// [`MAX_READ_SECTION`] bytes ([`InspectError::SectionTooLarge`]).
pub fn inspect_ukify(
    path: &Path,
    opts: &UkifyInspectOptions,
) -> Result<Vec<UkifySection>, InspectError> {
    let mut f = File::open(path).map_err(input_err(path))?;
    inspect_ukify_in(&mut f, opts).map_err(|e| e.in_file(path))
}

fn inspect_ukify_in(
    f: &mut File,
    opts: &UkifyInspectOptions,
) -> Result<Vec<UkifySection>, InspectError> {
    let (h, _) = PeHeaders::read(f)?;
    let mut out = Vec::new();
    for s in &h.sections {
        let name = s.name.as_str();
        let selector = opts.selectors.iter().rev().find(|sel| sel.name == name);
        let default = ukify_default_show(&name).filter(|_| opts.selectors.is_empty());
        let show = match (selector, default) {
            (Some(sel), _) => sel.show,
            (None, Some(d)) => d,
            (None, None) if opts.all => ShowAs::Binary,
            (None, None) => continue,
        };
        let size = u64::from(s.loaded_file_len());
        if show == ShowAs::Text && size > MAX_READ_SECTION {
            return Err(InspectError::SectionTooLarge {
                name,
                len: size,
                limit: MAX_READ_SECTION,
            });
        }
        let mut file = match selector.and_then(|sel| sel.extract.as_deref()) {
            Some(p) => Some(crate::fsutil::AtomicFile::create(p, 0o644).map_err(output_err(p))?),
            None => None,
        };
        let mut text = (show == ShowAs::Text).then(Vec::new);
        let mut hasher = MultiHasher::new(&[HashAlg::Sha256]);
        let mut window = pe::Window::section(f, s);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = window.read(&mut buf)?;
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            hasher.update(chunk);
            if let Some(t) = text.as_mut() {
                t.extend_from_slice(chunk);
            }
            if let Some(af) = file.as_mut() {
                let p = af.dest().to_path_buf();
                io::Write::write_all(af.file(), chunk).map_err(output_err(&p))?;
            }
        }
        if window.stream_position()? != size {
            return Err(InspectError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("section {name} ends past the end of the file"),
            )));
        }
        if let Some(af) = file {
            let p = af.dest().to_path_buf();
            af.commit().map_err(output_err(&p))?;
        }
        out.push(UkifySection {
            name,
            size,
            sha256: hasher
                .finalize()
                .into_iter()
                .next()
                .ok_or(InspectError::NoDigest)?,
            text: text.map(|t| ukify_text(&t)),
        });
    }
    Ok(out)
}

fn output_err(path: &Path) -> impl FnOnce(io::Error) -> InspectError + '_ {
    move |source| InspectError::Output {
        path: path.to_path_buf(),
        source,
    }
}

/// ukify's `data.rstrip(b'\0').replace(b'\0', b'\\0').decode()`.
pub fn ukify_text(data: &[u8]) -> SectionText {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let mut v = Vec::with_capacity(end);
    for &b in &data[..end] {
        if b == 0 {
            v.extend_from_slice(b"\\0");
        } else {
            v.push(b);
        }
    }
    match String::from_utf8(v) {
        Ok(s) => SectionText::Utf8(s),
        Err(e) => SectionText::NotUtf8(e.utf8_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stub measures VirtualSize bytes of the mapped image: past SizeOfRawData the loader
    /// zero-fills (ukify 257.x set `.linux`'s VirtualSize to the kernel's SizeOfImage, which
    /// exceeds the file data), and a VirtualSize below SizeOfRawData cuts the file padding.
    #[test]
    fn memory_digest_zero_fills_past_raw_data_and_cuts_padding() {
        let file: Vec<u8> = (0..=255u8).cycle().take(0x400).collect();
        let header = |virtual_size, size_of_raw_data| SectionHeader {
            name: pe::SectionName::new(".linux").unwrap(),
            virtual_size,
            virtual_address: 0x1000,
            size_of_raw_data,
            pointer_to_raw_data: 0x200,
            characteristics: 0,
        };
        let digest = |s: &SectionHeader| {
            section_memory_digests(&mut io::Cursor::new(&file), s, &[HashAlg::Sha256]).unwrap()[0]
                .clone()
        };
        // 0x80 file bytes, then 0x1f80 zeros (more than one 4 KiB zero block).
        let mut want = file[0x200..0x280].to_vec();
        want.resize(0x2000 + 0x80 - 0x80, 0);
        assert_eq!(digest(&header(0x2000, 0x80)), HashAlg::Sha256.digest(&want));
        assert_eq!(
            digest(&header(0x10, 0x80)),
            HashAlg::Sha256.digest(&file[0x200..0x210])
        );
    }
}
