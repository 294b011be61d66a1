//! PE/COFF header parsing: the parts of a PE image that UKI assembly, Authenticode hashing and
//! PCR prediction need. Reference: Microsoft "PE Format" (pecoff), sections "MS-DOS Stub",
//! "COFF File Header", "Optional Header", "Section Table".
//!
//! The `object` crate (`object::pe` POD structs, `object::read::pe`) parses the structures;
//! bootchain adds the checks a signing and measuring tool needs on top (typed truncation errors
//! with the offset to read up to, power-of-two alignments, section data inside the file, no
//! shared file bytes, bounded zero fill, sections inside SizeOfImage, at most 16 directories).
//!
//! Only headers are held in memory; section data stays in the file and is read on demand, so
//! a 100 MiB initrd inside a UKI never has to be loaded whole.
//!
//! goblin is deliberately not used here: its `authenticode_ranges` pads unsigned images to 8
//! bytes where EDK2 and `pesign -h` hash the file as is, and `goblin::pe::PE::parse` needs the
//! whole file in memory. It serves as an independent second parser in
//! `tests/pe_differential.rs`.

use core::mem::{offset_of, size_of};
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

use object::pe::{
    ImageDataDirectory, ImageDosHeader, ImageFileHeader, ImageNtHeaders32, ImageNtHeaders64,
    ImageOptionalHeader32, ImageOptionalHeader64, ImageSectionHeader,
};
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader};
use object::{LittleEndian as LE, ReadRef, U16, U32};

/// Size of the MS-DOS header, which ends with `e_lfanew` (pecoff "MS-DOS Stub").
const DOS_HEADER_LEN: usize = size_of::<ImageDosHeader>();
/// Offset of the COFF file header from `e_lfanew`: after the `PE\0\0` signature (pecoff
/// "Signature (Image Only)").
const FILE_HEADER_OFFSET: usize = offset_of!(ImageNtHeaders64, file_header);
/// Offset of the optional header from `e_lfanew`.
const OPTIONAL_HEADER_OFFSET: usize = offset_of!(ImageNtHeaders64, optional_header);
/// Size of one section table entry (pecoff "Section Table (Section Headers)").
pub const SECTION_HEADER_LEN: usize = size_of::<ImageSectionHeader>();
/// Optional header magic for PE32 (pecoff "Optional Header Standard Fields").
const PE32_MAGIC: u16 = object::pe::IMAGE_NT_OPTIONAL_HDR32_MAGIC;
/// Optional header magic for PE32+.
const PE32_PLUS_MAGIC: u16 = object::pe::IMAGE_NT_OPTIONAL_HDR64_MAGIC;
/// Index of the certificate table ("security directory") in the data directories (pecoff
/// "Optional Header Data Directories").
pub const DIR_SECURITY: usize = object::pe::IMAGE_DIRECTORY_ENTRY_SECURITY;
/// Index of the base relocation table.
pub const DIR_BASERELOC: usize = object::pe::IMAGE_DIRECTORY_ENTRY_BASERELOC;
/// Most data directories an image may announce: the 16 pecoff defines. object accepts any
/// NumberOfRvaAndSizes that fits SizeOfOptionalHeader; bootchain refuses more.
const MAX_DATA_DIRECTORIES: usize = object::pe::IMAGE_NUMBEROF_DIRECTORY_ENTRIES;
/// Offset of CheckSum in the optional header (pecoff "Optional Header Windows-Specific
/// Fields"): 64 in both PE32 and PE32+, as BaseOfData and the wider ImageBase cancel out.
const CHECKSUM_OFFSET: usize = offset_of!(ImageOptionalHeader64, check_sum);
const _: () = assert!(CHECKSUM_OFFSET == offset_of!(ImageOptionalHeader32, check_sum));
/// Upper bound on header bytes we are willing to read (defends against absurd SizeOfHeaders).
const MAX_HEADER_LEN: u64 = 16 * 1024 * 1024;
/// How far one section's VirtualSize may exceed its SizeOfRawData: the zero fill a loader adds
/// (`.bss`). Every reader of section memory (inspect, PCR 11 prediction, `.sdmagic`) hashes or
/// allocates VirtualSize bytes, so an unbounded claim would let a 1 KiB file cost gigabytes.
/// Real images stay far below: the x86 and arm64 kernels' zero fill (decompressor heap, `.bss`)
/// is a few MiB, systemd-stub's a few KiB.
pub const MAX_SECTION_ZERO_FILL: u64 = 16 << 20;
/// Bound on the zero fill of all sections together (sections may claim the same memory, so
/// the per-section bound alone does not bound the work).
pub const MAX_TOTAL_ZERO_FILL: u64 = 64 << 20;

/// Section characteristics (pecoff "Section Flags").
pub mod scn {
    /// The section contains executable code.
    pub const CNT_CODE: u32 = object::pe::IMAGE_SCN_CNT_CODE.0;
    /// The section contains initialized data.
    pub const CNT_INITIALIZED_DATA: u32 = object::pe::IMAGE_SCN_CNT_INITIALIZED_DATA.0;
    /// The section can be read.
    pub const MEM_READ: u32 = object::pe::IMAGE_SCN_MEM_READ.0;
}

/// Errors from reading PE headers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeError {
    /// Reading the file failed.
    #[error("I/O error reading PE image")]
    Io(#[from] io::Error),
    /// The file ends before a structure it announces.
    #[error("truncated PE image: {what} needs bytes up to offset {needed}, file has {len}")]
    Truncated {
        /// The structure that does not fit.
        what: &'static str,
        /// The end offset it needs.
        needed: u64,
        /// The file length.
        len: u64,
    },
    /// No `MZ` signature.
    #[error("not a PE image: no MZ signature")]
    NoMzSignature,
    /// No `PE\0\0` signature at `e_lfanew`.
    #[error("not a PE image: no PE signature at offset {0:#x}")]
    NoPeSignature(u32),
    /// Unknown optional header magic.
    #[error("unsupported optional header magic {0:#06x} (expected PE32 0x10b or PE32+ 0x20b)")]
    BadMagic(u16),
    /// A header field has an impossible value.
    #[error("malformed PE header: {0}")]
    Malformed(MalformedHeader),
    /// A section claims more memory than its file data plus [`MAX_SECTION_ZERO_FILL`].
    #[error("section {name}: VirtualSize {virtual_size:#x} exceeds SizeOfRawData {raw_size:#x} by more than the {limit:#x}-byte zero-fill limit")]
    SectionZeroFill {
        /// The section.
        name: String,
        /// Its VirtualSize.
        virtual_size: u32,
        /// Its SizeOfRawData.
        raw_size: u32,
        /// [`MAX_SECTION_ZERO_FILL`].
        limit: u64,
    },
    /// The sections' zero fill together exceeds [`MAX_TOTAL_ZERO_FILL`].
    #[error("sections claim {total:#x} bytes of zero fill in total, more than the {limit:#x}-byte limit")]
    TotalZeroFill {
        /// The sum over all sections.
        total: u64,
        /// [`MAX_TOTAL_ZERO_FILL`].
        limit: u64,
    },
    /// A section ends past SizeOfImage (the PE loader of EDK2 refuses such images too).
    #[error("section {name}: ends in memory at {end:#x}, past SizeOfImage {size_of_image:#x}")]
    SectionOutsideImage {
        /// The section.
        name: String,
        /// VirtualAddress + VirtualSize.
        end: u64,
        /// SizeOfImage.
        size_of_image: u32,
    },
    /// Two sections share file bytes: the Authenticode hash would count them twice (and
    /// thousands of such headers would make hashing cost sections × file size).
    #[error("sections {first} and {second} overlap in the file at offset {offset:#x}")]
    SectionOverlap {
        /// The section that starts first.
        first: String,
        /// The section that starts inside it.
        second: String,
        /// Where the second starts.
        offset: u32,
    },
    /// `object` refused a structure that bootchain's own length checks let through (not
    /// expected: those checks come first so that errors say which offset is missing).
    #[error("malformed PE header: {what}")]
    Object {
        /// The structure.
        what: &'static str,
        /// object's error.
        #[source]
        source: object::read::Error,
    },
}

/// Which header field has an impossible value ([`PeError::Malformed`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedHeader {
    /// `e_lfanew` plus the COFF header offset overflows.
    #[error("e_lfanew overflows")]
    LfanewOverflow,
    /// SizeOfOptionalHeader is zero.
    #[error("optional header is empty")]
    EmptyOptionalHeader,
    /// The headers claim more than the 16 MiB bootchain reads.
    #[error("headers claim {0} bytes")]
    HeadersTooLong(u64),
    /// SizeOfOptionalHeader is smaller than the fixed optional header of its magic.
    #[error("SizeOfOptionalHeader {0} is too small for its magic")]
    OptionalHeaderTooSmall(u16),
    /// NumberOfRvaAndSizes is too large for the optional header.
    #[error("NumberOfRvaAndSizes {0} does not fit the optional header")]
    DirectoryCount(usize),
    /// FileAlignment is not a power of two.
    #[error("FileAlignment {0:#x} is not a power of two")]
    FileAlignment(u32),
    /// SectionAlignment is not a power of two.
    #[error("SectionAlignment {0:#x} is not a power of two")]
    SectionAlignment(u32),
}

fn malformed(m: MalformedHeader) -> PeError {
    PeError::Malformed(m)
}

/// PE32 or PE32+.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeKind {
    /// 32-bit optional header.
    Pe32,
    /// 64-bit optional header.
    Pe32Plus,
}

/// One data directory entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DataDirectory {
    /// RVA (for the certificate table: a file offset).
    pub virtual_address: u32,
    /// Size in bytes.
    pub size: u32,
}

/// A section name: up to 8 bytes, NUL padded.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SectionName([u8; 8]);

/// Error for an invalid section name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SectionNameError {
    /// Longer than 8 bytes (the systemd stub does not support long names via the string table).
    #[error("section name {name:?} is longer than 8 characters")]
    TooLong {
        /// The name given.
        name: String,
    },
    /// Empty, or not printable ASCII.
    #[error("section name {name:?} must be 1-8 printable ASCII characters")]
    Invalid {
        /// The name given.
        name: String,
    },
}

impl SectionName {
    /// Validate a name: 1 to 8 printable ASCII characters.
    pub fn new(name: &str) -> Result<Self, SectionNameError> {
        if name.len() > 8 {
            return Err(SectionNameError::TooLong {
                name: name.to_string(),
            });
        }
        if name.is_empty() || !name.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(SectionNameError::Invalid {
                name: name.to_string(),
            });
        }
        let mut raw = [0u8; 8];
        raw[..name.len()].copy_from_slice(name.as_bytes());
        Ok(SectionName(raw))
    }

    /// The raw 8 header bytes.
    pub fn raw(&self) -> [u8; 8] {
        self.0
    }

    /// The name without NUL padding, lossily decoded.
    pub fn as_str(&self) -> String {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(8);
        String::from_utf8_lossy(&self.0[..end]).into_owned()
    }
}

impl fmt::Display for SectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl fmt::Debug for SectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// One section table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionHeader {
    /// Name.
    pub name: SectionName,
    /// Size in memory; the systemd stub measures this many bytes.
    pub virtual_size: u32,
    /// RVA.
    pub virtual_address: u32,
    /// Size in the file (FileAlignment multiple).
    pub size_of_raw_data: u32,
    /// File offset of the data.
    pub pointer_to_raw_data: u32,
    /// Characteristics flags.
    pub characteristics: u32,
}

impl SectionHeader {
    /// Serialize to the 40-byte on-disk form. PointerToRelocations, PointerToLinenumbers and
    /// the NumberOf* fields stay zero (pecoff: zero for images).
    pub fn to_bytes(&self) -> [u8; SECTION_HEADER_LEN] {
        let h = ImageSectionHeader {
            name: self.name.raw(),
            virtual_size: U32::new(LE, self.virtual_size),
            virtual_address: U32::new(LE, self.virtual_address),
            size_of_raw_data: U32::new(LE, self.size_of_raw_data),
            pointer_to_raw_data: U32::new(LE, self.pointer_to_raw_data),
            pointer_to_relocations: U32::new(LE, 0),
            pointer_to_linenumbers: U32::new(LE, 0),
            number_of_relocations: U16::new(LE, 0),
            number_of_linenumbers: U16::new(LE, 0),
            characteristics: U32::new(LE, object::pe::SectionFlags(self.characteristics)),
        };
        let mut b = [0u8; SECTION_HEADER_LEN];
        b.copy_from_slice(object::bytes_of(&h));
        b
    }

    /// The fields bootchain uses from object's section header. The name keeps its raw 8 bytes
    /// (object's `raw_name()` cuts at the first NUL, but headers are rewritten byte for byte).
    fn from_object(s: &ImageSectionHeader) -> Self {
        SectionHeader {
            name: SectionName(s.name),
            virtual_size: s.virtual_size.get(LE),
            virtual_address: s.virtual_address.get(LE),
            size_of_raw_data: s.size_of_raw_data.get(LE),
            pointer_to_raw_data: s.pointer_to_raw_data.get(LE),
            characteristics: s.characteristics.get(LE).0,
        }
    }

    /// End of the raw data in the file.
    pub fn raw_end(&self) -> u64 {
        u64::from(self.pointer_to_raw_data) + u64::from(self.size_of_raw_data)
    }

    /// End of the section in memory.
    pub fn virtual_end(&self) -> u64 {
        u64::from(self.virtual_address) + u64::from(self.virtual_size)
    }

    /// Bytes the loader copies from the file: min(VirtualSize, SizeOfRawData).
    pub fn loaded_file_len(&self) -> u32 {
        self.virtual_size.min(self.size_of_raw_data)
    }
}

/// Parsed PE headers, with the file offsets of the fields that tools patch.
#[derive(Clone, Debug)]
pub struct PeHeaders {
    /// PE32 or PE32+.
    pub kind: PeKind,
    /// `e_lfanew`: offset of the `PE\0\0` signature.
    pub pe_offset: usize,
    /// COFF Machine.
    pub machine: u16,
    /// COFF TimeDateStamp.
    pub time_date_stamp: u32,
    /// COFF PointerToSymbolTable (deprecated for images, but present in some stubs).
    pub pointer_to_symbol_table: u32,
    /// COFF NumberOfSymbols.
    pub number_of_symbols: u32,
    /// COFF Characteristics.
    pub characteristics: u16,
    /// File offset of the optional header.
    pub optional_header_offset: usize,
    /// SizeOfOptionalHeader.
    pub size_of_optional_header: u16,
    /// SectionAlignment.
    pub section_alignment: u32,
    /// FileAlignment.
    pub file_alignment: u32,
    /// SizeOfImage.
    pub size_of_image: u32,
    /// SizeOfHeaders.
    pub size_of_headers: u32,
    /// CheckSum.
    pub checksum: u32,
    /// Data directories (NumberOfRvaAndSizes of them).
    pub data_directories: Vec<DataDirectory>,
    /// File offset of the section table.
    pub section_table_offset: usize,
    /// Section headers in table order.
    pub sections: Vec<SectionHeader>,
    /// The file length the headers were checked against.
    pub file_len: u64,
}

/// Read a POD structure of object's at `offset` of `buf`, or say how far the file must reach.
fn pod_at<'a, T: object::Pod>(
    buf: &'a [u8],
    offset: usize,
    what: &'static str,
    file_len: u64,
) -> Result<&'a T, PeError> {
    buf.read_at::<T>(offset as u64)
        .map_err(|()| PeError::Truncated {
            what,
            needed: offset as u64 + size_of::<T>() as u64,
            len: file_len.min(buf.len() as u64),
        })
}

/// What [`PeHeaders::parse`] knows before the optional header's magic picks object's NT
/// headers type.
struct Coff<'a> {
    pe_offset: usize,
    file_header: &'a ImageFileHeader,
    optional_header_offset: usize,
}

impl PeHeaders {
    /// Parse headers from `buf`, the start of a file of `file_len` bytes. `buf` must hold at
    /// least the section table; use [`PeHeaders::read`] to get exactly that from a reader.
    pub fn parse(buf: &[u8], file_len: u64) -> Result<Self, PeError> {
        let trunc = |what: &'static str, needed: usize| PeError::Truncated {
            what,
            needed: needed as u64,
            len: file_len.min(buf.len() as u64),
        };
        match buf.get(..2) {
            None => return Err(trunc("MS-DOS header", 2)),
            Some(m) if m != object::pe::IMAGE_DOS_SIGNATURE.to_le_bytes() => {
                return Err(PeError::NoMzSignature)
            }
            Some(_) => {}
        }
        if buf.len() < DOS_HEADER_LEN {
            return Err(trunc("MS-DOS header", DOS_HEADER_LEN));
        }
        let dos = ImageDosHeader::parse(buf).map_err(|source| PeError::Object {
            what: "MS-DOS header",
            source,
        })?;
        let e_lfanew = dos.nt_headers_offset();
        // Signature and file header are read on their own rather than by
        // `ImageNtHeaders::parse`: that reads the whole fixed optional header first, and
        // `read` needs the offset to grow its buffer to, from each step.
        let coff = usize::try_from(e_lfanew)
            .ok()
            .and_then(|p| p.checked_add(FILE_HEADER_OFFSET))
            .ok_or_else(|| malformed(MalformedHeader::LfanewOverflow))?;
        let pe_offset = coff - FILE_HEADER_OFFSET;
        let file_header: &ImageFileHeader =
            pod_at(buf, coff, "PE signature and COFF header", file_len)?;
        let signature: &U32<LE> = pod_at(buf, pe_offset, "PE signature", file_len)?;
        if signature.get(LE) != object::pe::IMAGE_NT_SIGNATURE {
            return Err(PeError::NoPeSignature(e_lfanew));
        }
        // In bounds: the file header before it was read from `buf`.
        let opt = pe_offset + OPTIONAL_HEADER_OFFSET;
        let opt_end = opt + usize::from(file_header.size_of_optional_header.get(LE));
        if buf.len() < opt_end {
            return Err(trunc("optional header", opt_end));
        }
        let magic: &U16<LE> = buf
            .read_at(opt as u64)
            .map_err(|()| malformed(MalformedHeader::EmptyOptionalHeader))?;
        let coff = Coff {
            pe_offset,
            file_header,
            optional_header_offset: opt,
        };
        match magic.get(LE) {
            PE32_MAGIC => parse_nt::<ImageNtHeaders32>(buf, file_len, PeKind::Pe32, coff),
            PE32_PLUS_MAGIC => parse_nt::<ImageNtHeaders64>(buf, file_len, PeKind::Pe32Plus, coff),
            other => Err(PeError::BadMagic(other)),
        }
    }

    /// Read and parse the headers of a seekable PE file. Returns the headers and the raw bytes
    /// from offset 0 up to max(SizeOfHeaders, end of the section table).
    pub fn read<R: Read + Seek>(r: &mut R) -> Result<(Self, Vec<u8>), PeError> {
        let file_len = r.seek(SeekFrom::End(0))?;
        r.seek(SeekFrom::Start(0))?;
        // Start with 4 KiB; grow once if the headers announce more.
        let mut want = file_len.min(4096);
        loop {
            let mut buf = vec![0u8; want as usize];
            r.seek(SeekFrom::Start(0))?;
            r.read_exact(&mut buf)?;
            match PeHeaders::parse(&buf, file_len) {
                Ok(h) => {
                    let need = h.header_region_len();
                    if need <= want {
                        buf.truncate(need as usize);
                        return Ok((h, buf));
                    }
                    want = need;
                }
                Err(PeError::Truncated { needed, .. }) if needed <= file_len && needed > want => {
                    want = needed;
                }
                Err(e) => return Err(e),
            }
            if want > MAX_HEADER_LEN {
                return Err(malformed(MalformedHeader::HeadersTooLong(want)));
            }
        }
    }

    /// Length of the header region: max(SizeOfHeaders, end of the section table).
    pub fn header_region_len(&self) -> u64 {
        u64::from(self.size_of_headers).max(self.section_table_end() as u64)
    }

    /// End offset of the section table.
    pub fn section_table_end(&self) -> usize {
        self.section_table_offset + self.sections.len() * SECTION_HEADER_LEN
    }

    /// File offset of the CheckSum field (64 bytes into the optional header, PE32 or PE32+).
    pub fn checksum_offset(&self) -> usize {
        self.optional_header_offset + CHECKSUM_OFFSET
    }

    /// File offset of the NumberOfSections field.
    pub fn number_of_sections_offset(&self) -> usize {
        self.pe_offset + FILE_HEADER_OFFSET + offset_of!(ImageFileHeader, number_of_sections)
    }

    /// File offset of data directory `index` (whether or not it exists).
    pub fn data_directory_offset(&self, index: usize) -> usize {
        // The directories follow the fixed part of the optional header.
        let base = match self.kind {
            PeKind::Pe32 => size_of::<ImageOptionalHeader32>(),
            PeKind::Pe32Plus => size_of::<ImageOptionalHeader64>(),
        };
        self.optional_header_offset + base + index * size_of::<ImageDataDirectory>()
    }

    /// The certificate table directory, if the image has that directory slot.
    pub fn security_directory(&self) -> Option<DataDirectory> {
        self.data_directories.get(DIR_SECURITY).copied()
    }

    /// True if a certificate table is present (the image is signed).
    pub fn is_signed(&self) -> bool {
        self.security_directory()
            .is_some_and(|d| d.virtual_address != 0 && d.size != 0)
    }

    /// First section with this name.
    pub fn section(&self, name: &str) -> Option<&SectionHeader> {
        self.sections.iter().find(|s| s.name.as_str() == name)
    }

    /// End of the highest section in memory, unaligned.
    pub fn virtual_end(&self) -> u64 {
        self.sections
            .iter()
            .map(SectionHeader::virtual_end)
            .max()
            .unwrap_or(0)
    }

    /// Free bytes between the section table and SizeOfHeaders (room for new section headers).
    pub fn spare_header_room(&self) -> usize {
        (self.size_of_headers as usize).saturating_sub(self.section_table_end())
    }
}

/// The optional header, data directories and section table, parsed by object's NT headers type
/// for the magic (PE32 or PE32+), then checked.
fn parse_nt<Pe: ImageNtHeaders>(
    buf: &[u8],
    file_len: u64,
    kind: PeKind,
    coff: Coff<'_>,
) -> Result<PeHeaders, PeError> {
    let object_error = |what: &'static str| move |source| PeError::Object { what, source };
    let size_of_optional_header = coff.file_header.size_of_optional_header.get(LE);
    let fixed = size_of::<Pe::ImageOptionalHeader>();
    if usize::from(size_of_optional_header) < fixed {
        return Err(malformed(MalformedHeader::OptionalHeaderTooSmall(
            size_of_optional_header,
        )));
    }
    // The directory count is checked before object reads the directories: object accepts any
    // count that fits SizeOfOptionalHeader and only says "invalid" when it does not.
    let nt: &Pe = pod_at(buf, coff.pe_offset, "optional header", file_len)?;
    let n_rva = nt.optional_header().number_of_rva_and_sizes() as usize;
    if n_rva > MAX_DATA_DIRECTORIES
        || fixed + n_rva * size_of::<ImageDataDirectory>() > usize::from(size_of_optional_header)
    {
        return Err(malformed(MalformedHeader::DirectoryCount(n_rva)));
    }
    let mut offset = coff.pe_offset as u64;
    let (nt, dirs) = Pe::parse(buf, &mut offset).map_err(object_error("NT headers"))?;
    let oh = nt.optional_header();
    let (section_alignment, file_alignment) = (oh.section_alignment(), oh.file_alignment());
    let (size_of_image, size_of_headers) = (oh.size_of_image(), oh.size_of_headers());
    // Every entry, zero or not: `DataDirectories::get` hides all-zero entries, but whether the
    // certificate table slot exists decides whether an image can be signed.
    let data_directories = dirs
        .iter()
        .map(|d| DataDirectory {
            virtual_address: d.virtual_address.get(LE),
            size: d.size.get(LE),
        })
        .collect();

    if file_alignment == 0 || !file_alignment.is_power_of_two() {
        return Err(malformed(MalformedHeader::FileAlignment(file_alignment)));
    }
    if section_alignment == 0 || !section_alignment.is_power_of_two() {
        return Err(malformed(MalformedHeader::SectionAlignment(
            section_alignment,
        )));
    }

    let fh = nt.file_header();
    let number_of_sections = usize::from(fh.number_of_sections.get(LE));
    // object leaves `offset` after the optional header, where the section table starts.
    let section_table_offset = coff.optional_header_offset + usize::from(size_of_optional_header);
    let table_end = section_table_offset + number_of_sections * SECTION_HEADER_LEN;
    if buf.len() < table_end {
        return Err(PeError::Truncated {
            what: "section table",
            needed: table_end as u64,
            len: file_len.min(buf.len() as u64),
        });
    }
    if u64::from(size_of_headers) > file_len {
        return Err(PeError::Truncated {
            what: "headers (SizeOfHeaders)",
            needed: u64::from(size_of_headers),
            len: file_len,
        });
    }
    let table = nt
        .sections(buf, offset)
        .map_err(object_error("section table"))?;
    let mut sections = Vec::with_capacity(number_of_sections);
    for s in table.iter() {
        let sh = SectionHeader::from_object(s);
        // object checks nothing about the data a section header points to.
        if sh.size_of_raw_data != 0 && sh.raw_end() > file_len {
            return Err(PeError::Truncated {
                what: "section data",
                needed: sh.raw_end(),
                len: file_len,
            });
        }
        check_section_memory(&sh, size_of_image)?;
        sections.push(sh);
    }
    check_section_layout(&sections)?;
    Ok(PeHeaders {
        kind,
        pe_offset: coff.pe_offset,
        machine: fh.machine.get(LE).0,
        time_date_stamp: fh.time_date_stamp.get(LE),
        pointer_to_symbol_table: fh.pointer_to_symbol_table.get(LE),
        number_of_symbols: fh.number_of_symbols.get(LE),
        characteristics: fh.characteristics.get(LE).0,
        optional_header_offset: coff.optional_header_offset,
        size_of_optional_header,
        section_alignment,
        file_alignment,
        size_of_image,
        size_of_headers,
        checksum: oh.check_sum(),
        data_directories,
        section_table_offset,
        sections,
        file_len,
    })
}

/// One section's memory claim: bounded zero fill, inside SizeOfImage.
fn check_section_memory(s: &SectionHeader, size_of_image: u32) -> Result<(), PeError> {
    let fill = u64::from(s.virtual_size).saturating_sub(u64::from(s.size_of_raw_data));
    if fill > MAX_SECTION_ZERO_FILL {
        return Err(PeError::SectionZeroFill {
            name: s.name.as_str(),
            virtual_size: s.virtual_size,
            raw_size: s.size_of_raw_data,
            limit: MAX_SECTION_ZERO_FILL,
        });
    }
    if s.virtual_end() > u64::from(size_of_image) {
        return Err(PeError::SectionOutsideImage {
            name: s.name.as_str(),
            end: s.virtual_end(),
            size_of_image,
        });
    }
    Ok(())
}

/// The sections together: bounded total zero fill, no shared file bytes. After this, hashing
/// every section's memory costs at most the file size plus [`MAX_TOTAL_ZERO_FILL`].
fn check_section_layout(sections: &[SectionHeader]) -> Result<(), PeError> {
    let total: u64 = sections
        .iter()
        .map(|s| u64::from(s.virtual_size).saturating_sub(u64::from(s.size_of_raw_data)))
        .sum();
    if total > MAX_TOTAL_ZERO_FILL {
        return Err(PeError::TotalZeroFill {
            total,
            limit: MAX_TOTAL_ZERO_FILL,
        });
    }
    let mut raw: Vec<&SectionHeader> = sections
        .iter()
        .filter(|s| s.size_of_raw_data != 0)
        .collect();
    raw.sort_by_key(|s| s.pointer_to_raw_data);
    for w in raw.windows(2) {
        if let [a, b] = w {
            if u64::from(b.pointer_to_raw_data) < a.raw_end() {
                return Err(PeError::SectionOverlap {
                    first: a.name.as_str(),
                    second: b.name.as_str(),
                    offset: b.pointer_to_raw_data,
                });
            }
        }
    }
    Ok(())
}

/// Round `v` up to a multiple of `align` (a power of two).
pub fn align_up(v: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two());
    (v + align - 1) & !(align - 1)
}

/// Read `len` bytes at `offset`.
pub fn read_at<R: Read + Seek>(r: &mut R, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    r.seek(SeekFrom::Start(offset))?;
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// The bytes of a section as the loader places them in memory: `min(VirtualSize,
/// SizeOfRawData)` bytes from the file, zero-filled up to VirtualSize. These are the bytes the
/// systemd stub measures. Loads the whole section; use for small sections.
pub fn read_section_memory<R: Read + Seek>(r: &mut R, s: &SectionHeader) -> io::Result<Vec<u8>> {
    let mut v = read_at(
        r,
        u64::from(s.pointer_to_raw_data),
        s.loaded_file_len() as usize,
    )?;
    v.resize(s.virtual_size as usize, 0);
    Ok(v)
}

/// A seekable view of `len` bytes at `start` of an inner reader: lets an embedded image (a
/// UKI's `.linux`) be parsed and hashed in place, without loading it.
#[derive(Debug)]
pub struct Window<'a, R> {
    inner: &'a mut R,
    start: u64,
    len: u64,
    pos: u64,
}

impl<'a, R: Read + Seek> Window<'a, R> {
    /// The view of `len` bytes at `start`.
    pub fn new(inner: &'a mut R, start: u64, len: u64) -> Self {
        Window {
            inner,
            start,
            len,
            pos: 0,
        }
    }

    /// The loaded bytes of a section.
    pub fn section(inner: &'a mut R, s: &SectionHeader) -> Self {
        Window::new(
            inner,
            u64::from(s.pointer_to_raw_data),
            u64::from(s.loaded_file_len()),
        )
    }
}

impl<R: Read + Seek> Read for Window<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.len - self.pos) as usize;
        self.inner.seek(SeekFrom::Start(self.start + self.pos))?;
        let n = self.inner.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for Window<'_, R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad seek"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(SectionName::new(".linux").unwrap().as_str(), ".linux");
        assert!(matches!(
            SectionName::new(".toolongname"),
            Err(SectionNameError::TooLong { .. })
        ));
        assert!(SectionName::new("").is_err());
        assert!(SectionName::new("a b").is_err());
    }

    /// A PE32+ image with 16 data directories, 0x400-byte headers and these sections
    /// (name, VirtualSize, VirtualAddress, SizeOfRawData, PointerToRawData), file data zeros.
    fn image(size_of_image: u32, sections: &[(&str, u32, u32, u32, u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[0..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        b[0x40..0x44].copy_from_slice(b"PE\0\0");
        let coff = 0x44;
        b[coff + 2..coff + 4].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        b[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let opt = coff + 20;
        b[opt..opt + 2].copy_from_slice(&PE32_PLUS_MAGIC.to_le_bytes());
        b[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes());
        b[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes());
        b[opt + 56..opt + 60].copy_from_slice(&size_of_image.to_le_bytes());
        b[opt + 60..opt + 64].copy_from_slice(&0x400u32.to_le_bytes());
        b[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        let mut end = 0x400u64;
        for (i, (name, vs, va, raw, ptr)) in sections.iter().enumerate() {
            let sh = SectionHeader {
                name: SectionName::new(name).unwrap(),
                virtual_size: *vs,
                virtual_address: *va,
                size_of_raw_data: *raw,
                pointer_to_raw_data: *ptr,
                characteristics: 0,
            };
            let o = opt + 240 + i * SECTION_HEADER_LEN;
            b[o..o + SECTION_HEADER_LEN].copy_from_slice(&sh.to_bytes());
            end = end.max(sh.raw_end());
        }
        b.resize(end as usize, 0);
        b
    }

    fn parse(b: &[u8]) -> Result<PeHeaders, PeError> {
        PeHeaders::parse(b, b.len() as u64)
    }

    #[test]
    fn section_memory_claims_are_bounded() {
        let fill = MAX_SECTION_ZERO_FILL as u32;
        // Positive control: zero fill up to the limit, inside SizeOfImage.
        let ok = image(
            0x2000 + fill,
            &[(".bss", 0x200 + fill, 0x1000, 0x200, 0x200)],
        );
        assert!(parse(&ok).is_ok());
        let b = image(
            0x3000 + fill,
            &[(".linux", 0x201 + fill, 0x1000, 0x200, 0x200)],
        );
        assert!(
            matches!(parse(&b), Err(PeError::SectionZeroFill { ref name, .. }) if name == ".linux")
        );
        let b = image(0x1800, &[(".text", 0x1000, 0x1000, 0x200, 0x200)]);
        assert!(
            matches!(parse(&b), Err(PeError::SectionOutsideImage { ref name, end: 0x2000, .. }) if name == ".text")
        );
        let many: Vec<(&str, u32, u32, u32, u32)> =
            (0..5).map(|_| (".bss", fill, 0x1000, 0, 0)).collect();
        assert!(matches!(
            parse(&image(0x2000 + fill, &many)),
            Err(PeError::TotalZeroFill { .. })
        ));
        assert!(parse(&image(0x2000 + fill, &many[..4])).is_ok());
    }

    #[test]
    fn sections_sharing_file_bytes_are_refused() {
        let ok = image(
            0x3000,
            &[
                (".a", 0x200, 0x1000, 0x200, 0x200),
                (".b", 0x200, 0x2000, 0x200, 0x400),
            ],
        );
        assert!(parse(&ok).is_ok());
        let b = image(
            0x3000,
            &[
                (".a", 0x200, 0x1000, 0x200, 0x200),
                (".b", 0x200, 0x2000, 0x200, 0x3ff),
            ],
        );
        assert!(matches!(
            parse(&b),
            Err(PeError::SectionOverlap { ref first, ref second, offset: 0x3ff }) if first == ".a" && second == ".b"
        ));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for len in 0..300 {
            let mut buf = vec![0u8; len];
            if len >= 2 {
                buf[0] = b'M';
                buf[1] = b'Z';
            }
            if len >= 0x40 {
                buf[0x3c] = 0x40;
            }
            if len >= 0x44 {
                buf[0x40..0x44].copy_from_slice(b"PE\0\0");
            }
            assert!(PeHeaders::parse(&buf, len as u64).is_err());
        }
    }
}
