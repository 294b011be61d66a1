//! The stub's layout and the layout of the sections appended to it: reading and checking the
//! stub, placing new sections after its image, and patching the PE headers (PE/COFF spec
//! "Section Table", "Optional Header Windows-Specific Fields").

use std::io;
use std::path::Path;

use core::mem::offset_of;

use object::pe::{ImageFileHeader, ImageOptionalHeader32, ImageOptionalHeader64};

use super::{input_err, Layout, SectionContent, UkiError};
use crate::pe::{
    self, scn, PeHeaders, SectionHeader, SectionName, DIR_SECURITY, SECTION_HEADER_LEN,
};

/// Largest stub we read into memory.
const MAX_STUB_LEN: u64 = 64 * 1024 * 1024;
/// Size of the MS-DOS header (`IMAGE_DOS_HEADER`, PE/COFF spec "MS-DOS Stub"): the lowest
/// offset the PE signature may sit at.
pub(super) const DOS_HEADER_LEN: usize = std::mem::size_of::<object::pe::ImageDosHeader>();
const _: () = assert!(DOS_HEADER_LEN == 0x40);
/// The "PE\0\0" signature before the COFF file header (PE/COFF spec "Signature (Image Only)").
const PE_SIGNATURE_LEN: usize = 4;

/// Why a stub's layout is not one we can append to safely.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StubLayoutError {
    /// Larger than any stub.
    #[error("more than {max} bytes is too large for a stub")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// The section table does not fit the headers.
    #[error("section table extends past SizeOfHeaders")]
    SectionTablePastHeaders,
    /// Section data has gaps or overlaps.
    #[error("section {section} starts at file offset {offset:#x}, expected {expected:#x}: gaps or overlaps between sections are not supported")]
    NotContiguous {
        /// The section.
        section: SectionName,
        /// Its PointerToRawData.
        offset: u32,
        /// Where the previous section ended.
        expected: u64,
    },
    /// Non-zero bytes that are not a symbol table after the last section.
    #[error("{len} bytes of unknown data after the last section")]
    TrailingData {
        /// How many.
        len: u64,
    },
}

/// The stub, read and checked.
pub(super) struct Stub {
    pub(super) headers: PeHeaders,
    /// Bytes from 0 to the end of the last section's raw data (symbol table dropped).
    pub(super) data: Vec<u8>,
    pub(super) stripped_symbols: bool,
    pub(super) sbat: Option<String>,
}

pub(super) fn read_stub(path: &Path) -> Result<Stub, UkiError> {
    let mut data = match crate::fsutil::read_bounded(path, MAX_STUB_LEN) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::FileTooLarge => {
            return Err(UkiError::StubLayout {
                path: path.into(),
                reason: StubLayoutError::TooLarge { max: MAX_STUB_LEN },
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
    let layout = |reason: StubLayoutError| UkiError::StubLayout {
        path: path.into(),
        reason,
    };
    if headers.section_table_end() > headers.size_of_headers as usize {
        return Err(layout(StubLayoutError::SectionTablePastHeaders));
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
            return Err(layout(StubLayoutError::NotContiguous {
                section: s.name,
                offset: s.pointer_to_raw_data,
                expected: end,
            }));
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
            return Err(layout(StubLayoutError::TrailingData {
                len: data.len() as u64 - end,
            }));
        }
        data.truncate(end as usize);
    }
    let mut cursor = io::Cursor::new(&data);
    let sbat = match headers.section(".sbat") {
        Some(s) => {
            let b = pe::read_section_memory(&mut cursor, s).map_err(input_err(path))?;
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

/// Insert `.sbat` or `.pcrsig`, made by the build, where `layout` puts them: before
/// `.linux` (which stays last) in ukify 252's; in ukify 257's `.sbat` before the base
/// `.profile` (or `.pcrsig`) and `.pcrsig` at the end of the image's own sections.
pub(super) fn insert_appended(
    planned: &mut Vec<(SectionName, SectionContent)>,
    layout: Layout,
    name: &str,
    content: SectionContent,
) -> Result<(), UkiError> {
    let before: &[&str] = match (layout, name) {
        (Layout::Ukify252, _) => &[".linux"],
        (Layout::Ukify257, ".sbat") => &[".pcrsig"],
        (Layout::Ukify257, _) => &[],
    };
    let mut pos = planned
        .iter()
        .position(|(n, _)| before.contains(&n.as_str().as_str()))
        .unwrap_or(planned.len());
    // The base profile of a multi-profile UKI closes the shared part; SBAT is shared.
    if layout == Layout::Ukify257
        && name == ".sbat"
        && pos > 0
        && planned[pos - 1].0.as_str() == ".profile"
        && planned.len() > 1
    {
        pos -= 1;
    }
    planned.insert(pos, (SectionName::new(name)?, content));
    Ok(())
}

/// Sections ukify 257 takes from a profile PE (`make_uki`, `to_import`); `.osrel` only when
/// the UKI has its own os-release.
const PROFILE_IMPORT: &[&str] = &[
    ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname", ".sbat",
    ".profile",
];

/// Why a profile PE cannot be joined.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// It has none of the sections a profile contributes.
    #[error("no profile sections")]
    Empty,
    /// Its first profile section is not `.profile`.
    #[error("the first profile section is {0}, not .profile")]
    NotFirst(SectionName),
    /// More than one `.profile`.
    #[error("more than one .profile section")]
    Several,
}

/// The sections a profile PE contributes, in its file order, as ranges of the file
/// (min(VirtualSize, SizeOfRawData) bytes each, as ukify copies them).
pub(super) fn profile_sections(
    path: &Path,
    with_osrel: bool,
) -> Result<Vec<(SectionName, SectionContent)>, UkiError> {
    let mut f = std::fs::File::open(path).map_err(input_err(path))?;
    let (h, _) = PeHeaders::read(&mut f).map_err(|source| UkiError::ProfileNotPe {
        path: path.into(),
        source,
    })?;
    let bad = |reason| UkiError::Profile {
        path: path.into(),
        reason,
    };
    let picked: Vec<_> = h
        .sections
        .iter()
        .filter(|s| {
            let n = s.name.as_str();
            PROFILE_IMPORT.contains(&n.as_str()) && (with_osrel || n != ".osrel")
        })
        .collect();
    match picked.first() {
        None => return Err(bad(ProfileError::Empty)),
        Some(s) if s.name.as_str() != ".profile" => {
            return Err(bad(ProfileError::NotFirst(s.name)))
        }
        _ => {}
    }
    if picked
        .iter()
        .filter(|s| s.name.as_str() == ".profile")
        .count()
        > 1
    {
        return Err(bad(ProfileError::Several));
    }
    Ok(picked
        .into_iter()
        .map(|s| {
            (
                s.name,
                SectionContent::Range {
                    path: path.to_path_buf(),
                    offset: u64::from(s.pointer_to_raw_data),
                    len: u64::from(s.virtual_size.min(s.size_of_raw_data)),
                },
            )
        })
        .collect())
}

/// Offsets of the optional header fields a UKI build patches; the same in PE32 and PE32+
/// (the wider ImageBase of PE32+ takes the place of PE32's BaseOfData).
const OPT_SIZE_OF_CODE: usize = offset_of!(ImageOptionalHeader64, size_of_code);
const OPT_SIZE_OF_INITIALIZED_DATA: usize =
    offset_of!(ImageOptionalHeader64, size_of_initialized_data);
const OPT_SIZE_OF_IMAGE: usize = offset_of!(ImageOptionalHeader64, size_of_image);
pub(super) const OPT_DLL_CHARACTERISTICS: usize =
    offset_of!(ImageOptionalHeader64, dll_characteristics);
/// IMAGE_DLLCHARACTERISTICS_NX_COMPAT (pecoff "DLL Characteristics"); object's constant is a
/// typed flag, this is the raw bit the header holds.
pub(super) const NX_COMPAT: u16 = 0x0100;
const _: () =
    assert!(OPT_DLL_CHARACTERISTICS == offset_of!(ImageOptionalHeader32, dll_characteristics));
const _: () = assert!(
    OPT_SIZE_OF_CODE == offset_of!(ImageOptionalHeader32, size_of_code)
        && OPT_SIZE_OF_INITIALIZED_DATA
            == offset_of!(ImageOptionalHeader32, size_of_initialized_data)
        && OPT_SIZE_OF_IMAGE == offset_of!(ImageOptionalHeader32, size_of_image)
);

/// Move the PE signature, COFF and optional headers and the section table to offset 0x40,
/// right after the MS-DOS header.
pub(super) fn compact_headers(data: &mut [u8], h: &mut PeHeaders) {
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
pub(super) fn stub_sbat_slot(h: &PeHeaders) -> Option<(usize, u64)> {
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

/// Where the new sections go: their headers, and what they add to the image.
pub(super) struct Placement {
    /// Headers of the new sections, in file order.
    pub(super) headers: Vec<SectionHeader>,
    /// SizeOfCode and SizeOfInitializedData to add.
    pub(super) add_code: u64,
    pub(super) add_data: u64,
    /// The new SizeOfImage.
    pub(super) size_of_image: u32,
    /// The file length before any certificate table (8-byte aligned, pecoff "The Attribute
    /// Certificate Table").
    pub(super) total_len: u64,
}

/// Place `sized` sections (name, content, length) after the stub's image: file offsets from
/// the stub's end at FileAlignment, RVAs above its image at SectionAlignment.
pub(super) fn place(
    headers: &PeHeaders,
    stub_len: u64,
    sized: &[(SectionName, SectionContent, u64)],
    layout: Layout,
) -> Result<Placement, UkiError> {
    let fa = u64::from(headers.file_alignment);
    let sa = u64::from(headers.section_alignment);
    let mut file_off = pe::align_up(stub_len, fa);
    let mut rva = pe::align_up(
        headers.virtual_end().max(u64::from(headers.size_of_image)),
        sa,
    );
    let mut out = Vec::new();
    let (mut add_code, mut add_data) = (0u64, 0u64);
    for (name, _, len) in sized {
        let raw = pe::align_up(*len, fa);
        let too_large = |len: u64| UkiError::TooLarge {
            name: name.as_str(),
            len,
        };
        let code = name.as_str() == ".linux";
        let sh = SectionHeader {
            name: *name,
            virtual_size: u32::try_from(*len).map_err(|_| too_large(*len))?,
            virtual_address: u32::try_from(rva).map_err(|_| too_large(rva))?,
            size_of_raw_data: u32::try_from(raw).map_err(|_| too_large(*len))?,
            pointer_to_raw_data: u32::try_from(file_off).map_err(|_| too_large(file_off))?,
            characteristics: scn::MEM_READ
                | if code {
                    scn::CNT_CODE
                } else {
                    scn::CNT_INITIALIZED_DATA
                },
        };
        match layout {
            Layout::Ukify252 if code => add_code += raw,
            Layout::Ukify252 => add_data += raw,
            // ukify 257 adds each VirtualSize to SizeOfInitializedData, the kernel's too.
            Layout::Ukify257 => add_data += *len,
        }
        out.push(sh);
        file_off += raw;
        rva = pe::align_up(rva + len, sa);
    }
    let size_of_image = u32::try_from(rva).map_err(|_| UkiError::TooLarge {
        name: "image".into(),
        len: rva,
    })?;
    Ok(Placement {
        headers: out,
        add_code,
        add_data,
        size_of_image,
        total_len: pe::align_up(file_off, 8),
    })
}

/// The patched header region, and where the hash must skip (CheckSum, and the certificate
/// directory when the image has one).
pub(super) struct PatchedHeaders {
    pub(super) bytes: Vec<u8>,
    pub(super) checksum_offset: usize,
    pub(super) security_dir: Option<usize>,
}

/// Patch the stub's header region for the new sections: section count, TimeDateStamp,
/// dropped symbol table, SizeOf*, CheckSum 0, no certificate directory, section table.
pub(super) fn patch_headers(
    stub: &Stub,
    headers: &PeHeaders,
    data: &[u8],
    placement: &Placement,
    timestamp: Option<u32>,
    kernel_nx_compat: Option<bool>,
) -> Result<PatchedHeaders, UkiError> {
    let mut hdr = data[..headers.size_of_headers as usize].to_vec();
    // Field offsets from object's structures (pecoff "COFF File Header", "Optional Header
    // Standard Fields", "Windows-Specific Fields").
    let coff = headers.pe_offset + PE_SIGNATURE_LEN;
    let fh = |field: usize| coff + field;
    let nsec = u16::try_from(headers.sections.len() + placement.headers.len()).map_err(|_| {
        UkiError::NoHeaderRoom {
            needed: placement.headers.len(),
            available: headers.spare_header_room(),
            per: SECTION_HEADER_LEN,
        }
    })?;
    let o = fh(offset_of!(ImageFileHeader, number_of_sections));
    hdr[o..o + 2].copy_from_slice(&nsec.to_le_bytes());
    if let Some(t) = timestamp {
        let o = fh(offset_of!(ImageFileHeader, time_date_stamp));
        hdr[o..o + 4].copy_from_slice(&t.to_le_bytes());
    }
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
    add32(&mut hdr, opt + OPT_SIZE_OF_CODE, placement.add_code);
    add32(
        &mut hdr,
        opt + OPT_SIZE_OF_INITIALIZED_DATA,
        placement.add_data,
    );
    hdr[opt + OPT_SIZE_OF_IMAGE..opt + OPT_SIZE_OF_IMAGE + 4]
        .copy_from_slice(&placement.size_of_image.to_le_bytes());
    if kernel_nx_compat == Some(false) {
        let o = opt + OPT_DLL_CHARACTERISTICS;
        let v = u16::from_le_bytes([hdr[o], hdr[o + 1]]) & !NX_COMPAT;
        hdr[o..o + 2].copy_from_slice(&v.to_le_bytes());
    }
    let cks = headers.checksum_offset();
    hdr[cks..cks + 4].fill(0);
    let security_dir = (headers.data_directories.len() > DIR_SECURITY)
        .then(|| headers.data_directory_offset(DIR_SECURITY));
    if let Some(sd) = security_dir {
        hdr[sd..sd + 8].fill(0);
    }
    for (i, s) in headers.sections.iter().enumerate() {
        let o = headers.section_table_offset + i * SECTION_HEADER_LEN;
        hdr[o..o + SECTION_HEADER_LEN].copy_from_slice(&s.to_bytes());
    }
    for (i, s) in placement.headers.iter().enumerate() {
        let o = headers.section_table_end() + i * SECTION_HEADER_LEN;
        hdr[o..o + SECTION_HEADER_LEN].copy_from_slice(&s.to_bytes());
    }
    Ok(PatchedHeaders {
        bytes: hdr,
        checksum_offset: cks,
        security_dir,
    })
}
