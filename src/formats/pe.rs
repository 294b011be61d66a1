//! PE/COFF header parsing: the parts of a PE image that UKI assembly, Authenticode hashing and
//! PCR prediction need. Reference: Microsoft "PE Format" (pecoff), sections "MS-DOS Stub",
//! "COFF File Header", "Optional Header", "Section Table".
//!
//! Only headers are held in memory; section data stays in the file and is read on demand, so
//! a 100 MiB initrd inside a UKI never has to be loaded whole.

use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

/// Offset of `e_lfanew` in the MS-DOS header.
const E_LFANEW_OFFSET: usize = 0x3c;
/// Size of the COFF file header that follows the `PE\0\0` signature.
const COFF_HEADER_LEN: usize = 20;
/// Size of one section table entry.
pub const SECTION_HEADER_LEN: usize = 40;
/// Optional header magic for PE32.
const PE32_MAGIC: u16 = 0x10b;
/// Optional header magic for PE32+.
const PE32_PLUS_MAGIC: u16 = 0x20b;
/// Index of the certificate table ("security directory") in the data directories.
pub const DIR_SECURITY: usize = 4;
/// Index of the base relocation table.
pub const DIR_BASERELOC: usize = 5;
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
    pub const CNT_CODE: u32 = 0x0000_0020;
    /// The section contains initialized data.
    pub const CNT_INITIALIZED_DATA: u32 = 0x0000_0040;
    /// The section can be read.
    pub const MEM_READ: u32 = 0x4000_0000;
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
    Malformed(String),
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
}

fn malformed(msg: impl Into<String>) -> PeError {
    PeError::Malformed(msg.into())
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
    #[error("section name {0:?} is longer than 8 characters")]
    TooLong(String),
    /// Empty, or not printable ASCII.
    #[error("section name {0:?} must be 1-8 printable ASCII characters")]
    Invalid(String),
}

impl SectionName {
    /// Validate a name: 1 to 8 printable ASCII characters.
    pub fn new(name: &str) -> Result<Self, SectionNameError> {
        if name.len() > 8 {
            return Err(SectionNameError::TooLong(name.to_string()));
        }
        if name.is_empty() || !name.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(SectionNameError::Invalid(name.to_string()));
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
    /// Serialize to the 40-byte on-disk form.
    pub fn to_bytes(&self) -> [u8; SECTION_HEADER_LEN] {
        let mut b = [0u8; SECTION_HEADER_LEN];
        b[0..8].copy_from_slice(&self.name.raw());
        b[8..12].copy_from_slice(&self.virtual_size.to_le_bytes());
        b[12..16].copy_from_slice(&self.virtual_address.to_le_bytes());
        b[16..20].copy_from_slice(&self.size_of_raw_data.to_le_bytes());
        b[20..24].copy_from_slice(&self.pointer_to_raw_data.to_le_bytes());
        // PointerToRelocations, PointerToLinenumbers, NumberOf* stay zero (images).
        b[36..40].copy_from_slice(&self.characteristics.to_le_bytes());
        b
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

fn le16(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off.checked_add(2)?)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off.checked_add(4)?)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
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
        if buf.len() < 2 || &buf[0..2] != b"MZ" {
            if buf.len() < 2 {
                return Err(trunc("MS-DOS header", 2));
            }
            return Err(PeError::NoMzSignature);
        }
        let e_lfanew = le32(buf, E_LFANEW_OFFSET).ok_or_else(|| trunc("MS-DOS header", 0x40))?;
        let pe_offset = e_lfanew as usize;
        let coff = pe_offset
            .checked_add(4)
            .ok_or_else(|| malformed("e_lfanew overflows"))?;
        let coff_end = coff + COFF_HEADER_LEN;
        if buf.len() < coff_end {
            return Err(trunc("PE signature and COFF header", coff_end));
        }
        if &buf[pe_offset..coff] != b"PE\0\0" {
            return Err(PeError::NoPeSignature(e_lfanew));
        }
        let machine = le16(buf, coff).unwrap_or(0);
        let number_of_sections = le16(buf, coff + 2).unwrap_or(0);
        let time_date_stamp = le32(buf, coff + 4).unwrap_or(0);
        let pointer_to_symbol_table = le32(buf, coff + 8).unwrap_or(0);
        let number_of_symbols = le32(buf, coff + 12).unwrap_or(0);
        let size_of_optional_header = le16(buf, coff + 16).unwrap_or(0);
        let characteristics = le16(buf, coff + 18).unwrap_or(0);

        let opt = coff_end;
        let opt_end = opt + usize::from(size_of_optional_header);
        if buf.len() < opt_end {
            return Err(trunc("optional header", opt_end));
        }
        let magic = le16(buf, opt).ok_or_else(|| malformed("optional header is empty"))?;
        let (kind, dd_offset) = match magic {
            PE32_MAGIC => (PeKind::Pe32, 96),
            PE32_PLUS_MAGIC => (PeKind::Pe32Plus, 112),
            other => return Err(PeError::BadMagic(other)),
        };
        if usize::from(size_of_optional_header) < dd_offset {
            return Err(malformed(format!(
                "SizeOfOptionalHeader {size_of_optional_header} is too small for its magic"
            )));
        }
        let field = |rel: usize| le32(buf, opt + rel).unwrap_or(0);
        let section_alignment = field(32);
        let file_alignment = field(36);
        let size_of_image = field(56);
        let size_of_headers = field(60);
        let checksum = field(64);
        let n_rva = field(dd_offset - 4) as usize;
        if n_rva > 16 || dd_offset + n_rva * 8 > usize::from(size_of_optional_header) {
            return Err(malformed(format!(
                "NumberOfRvaAndSizes {n_rva} does not fit the optional header"
            )));
        }
        let data_directories = (0..n_rva)
            .map(|i| DataDirectory {
                virtual_address: field(dd_offset + i * 8),
                size: field(dd_offset + i * 8 + 4),
            })
            .collect();

        if file_alignment == 0 || !file_alignment.is_power_of_two() {
            return Err(malformed(format!(
                "FileAlignment {file_alignment:#x} is not a power of two"
            )));
        }
        if section_alignment == 0 || !section_alignment.is_power_of_two() {
            return Err(malformed(format!(
                "SectionAlignment {section_alignment:#x} is not a power of two"
            )));
        }

        let section_table_offset = opt_end;
        let table_end = section_table_offset + usize::from(number_of_sections) * SECTION_HEADER_LEN;
        if buf.len() < table_end {
            return Err(trunc("section table", table_end));
        }
        if u64::from(size_of_headers) > file_len {
            return Err(PeError::Truncated {
                what: "headers (SizeOfHeaders)",
                needed: u64::from(size_of_headers),
                len: file_len,
            });
        }
        let mut sections = Vec::with_capacity(usize::from(number_of_sections));
        for i in 0..usize::from(number_of_sections) {
            let s = section_table_offset + i * SECTION_HEADER_LEN;
            let mut name = [0u8; 8];
            name.copy_from_slice(&buf[s..s + 8]);
            let get = |rel: usize| le32(buf, s + rel).unwrap_or(0);
            let sh = SectionHeader {
                name: SectionName(name),
                virtual_size: get(8),
                virtual_address: get(12),
                size_of_raw_data: get(16),
                pointer_to_raw_data: get(20),
                characteristics: get(36),
            };
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
            pe_offset,
            machine,
            time_date_stamp,
            pointer_to_symbol_table,
            number_of_symbols,
            characteristics,
            optional_header_offset: opt,
            size_of_optional_header,
            section_alignment,
            file_alignment,
            size_of_image,
            size_of_headers,
            checksum,
            data_directories,
            section_table_offset,
            sections,
            file_len,
        })
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
                return Err(malformed(format!("headers claim {want} bytes")));
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

    /// File offset of the CheckSum field (always 64 bytes into the optional header).
    pub fn checksum_offset(&self) -> usize {
        self.optional_header_offset + 64
    }

    /// File offset of the NumberOfSections field.
    pub fn number_of_sections_offset(&self) -> usize {
        self.pe_offset + 4 + 2
    }

    /// File offset of data directory `index` (whether or not it exists).
    pub fn data_directory_offset(&self, index: usize) -> usize {
        let base = match self.kind {
            PeKind::Pe32 => 96,
            PeKind::Pe32Plus => 112,
        };
        self.optional_header_offset + base + index * 8
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
            Err(SectionNameError::TooLong(_))
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
