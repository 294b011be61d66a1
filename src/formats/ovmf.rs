//! OVMF firmware images as AMD SEV launches read them: the GUIDed footer table near the end of
//! the image, the SEV metadata sections it points to, the SEV-ES reset block (the AP reset
//! EIP) and the SEV hash-table location.
//!
//! Layout (EDK2 `OvmfPkg/ResetVector/Ia16/ResetVectorVtf0.asm`, "OVMF GUIDed structure table";
//! QEMU `hw/i386/pc_sysfw_ovmf.c` `pc_system_parse_ovmf_flash`; virtee/sev-snp-measure
//! `ovmf.py`):
//!
//! - The last 32 bytes of the image are the reset vector. Just before them is the table
//!   *footer*: `u16le size` then the footer GUID [`OVMF_TABLE_FOOTER_GUID`], 18 bytes. `size`
//!   counts the whole table, entries and footer together.
//! - The entries lie below the footer and are read from the top down: each one ends with its
//!   own `u16le size` (data and this 18-byte header) and GUID; its data precede them.
//! - [`OVMF_SEV_METADATA_GUID`]'s entry holds a `u32le` offset, counted back from the end of
//!   the image, of the SEV metadata (`OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm`): a header
//!   `"ASEV"`, `u32 size`, `u32 version = 1`, `u32 num_items`, then `num_items` section
//!   descriptors `{u32 gpa, u32 size, u32 type}`.
//! - [`SEV_ES_RESET_BLOCK_GUID`]'s entry starts with the `u32le` reset EIP of the APs.
//! - [`SEV_HASH_TABLE_RV_GUID`]'s entry holds `u32le gpa, u32le size` of the area where QEMU
//!   puts the kernel/initrd/cmdline hash table (`kernel-hashes=on`).
//!
//! Parsing is strict where sev-snp-measure is lenient (it ignores bytes left below the last
//! entry, lets Python slices wrap and lets a later duplicate GUID win): such files get a
//! typed [`OvmfError`]. Work is bounded: at most [`MAX_FIRMWARE_SIZE`] bytes, at most
//! [`MAX_SECTIONS`] metadata sections, each section inside the 4 GiB guest-physical space.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::efi::EfiGuid;

/// GUID of the table footer (EDK2 `ResetVectorVtf0.asm` `guidedStructureEnd`, QEMU
/// `OVMF_TABLE_FOOTER_GUID`): 96b582de-1fb2-45f7-baea-a366c55a082d.
pub const OVMF_TABLE_FOOTER_GUID: EfiGuid = EfiGuid::from_fields(
    0x96b582de,
    0x1fb2,
    0x45f7,
    [0xba, 0xea, 0xa3, 0x66, 0xc5, 0x5a, 0x08, 0x2d],
);
/// GUID of the SEV metadata pointer (`OvmfSevMetadata.asm`, QEMU `SEV_INFO_BLOCK`'s sibling
/// `OVMF_SEV_META_DATA_GUID`): dc886566-984a-4798-a75e-5585a7bf67cc.
pub const OVMF_SEV_METADATA_GUID: EfiGuid = EfiGuid::from_fields(
    0xdc886566,
    0x984a,
    0x4798,
    [0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc],
);
/// GUID of the SEV-ES reset block (`ResetVectorVtf0.asm` `SEV_ES_RESET_BLOCK_GUID`, QEMU
/// `SEV_INFO_BLOCK_GUID` users): 00f771de-1a7e-4fcb-890e-68c77e2fb44e.
pub const SEV_ES_RESET_BLOCK_GUID: EfiGuid = EfiGuid::from_fields(
    0x00f771de,
    0x1a7e,
    0x4fcb,
    [0x89, 0x0e, 0x68, 0xc7, 0x7e, 0x2f, 0xb4, 0x4e],
);
/// GUID of the SEV hash-table location (`ResetVectorVtf0.asm` `SEV_HASH_TABLE_RV_GUID`, QEMU
/// `target/i386/sev.c`): 7255371f-3a3b-4b04-927b-1da6efa8d454.
pub const SEV_HASH_TABLE_RV_GUID: EfiGuid = EfiGuid::from_fields(
    0x7255371f,
    0x3a3b,
    0x4b04,
    [0x92, 0x7b, 0x1d, 0xa6, 0xef, 0xa8, 0xd4, 0x54],
);

/// Bytes at the very end of the image that are not part of the table (the reset vector,
/// `ResetVectorVtf0.asm`; QEMU's `ovmf_table` starts 32 bytes before the end).
pub const RESET_VECTOR_SIZE: usize = 32;
/// Size of a table entry's trailer and of the footer: `u16 size` + GUID.
pub const ENTRY_HEADER_SIZE: usize = 2 + 16;
/// Size of the SEV metadata header (`"ASEV"`, size, version, num_items).
pub const SEV_METADATA_HEADER_SIZE: usize = 16;
/// Size of one SEV metadata section descriptor (gpa, size, type).
pub const SEV_SECTION_DESC_SIZE: usize = 12;
/// The only SEV metadata version there is (`OvmfSevMetadata.asm`).
pub const SEV_METADATA_VERSION: u32 = 1;
/// Firmware images larger than this are refused (OVMF builds are 1-4 MiB; the image is
/// mapped below 4 GiB).
pub const MAX_FIRMWARE_SIZE: usize = 64 << 20;
/// At most this many SEV metadata sections (EDK2 declares five kinds; a few of each).
pub const MAX_SECTIONS: usize = 64;
/// The guest-physical space the image and its sections live in: below 4 GiB.
pub const FOUR_GIB: u64 = 1 << 32;

/// Kinds of SEV metadata sections (`OvmfSevMetadata.asm`, `OVMF_SECTION_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectionType {
    /// 1: memory the PSP validates before launch (`OVMF_SECTION_TYPE_SNP_SEC_MEM`).
    SnpSecMem,
    /// 2: the SNP secrets page (`OVMF_SECTION_TYPE_SNP_SECRETS`).
    SnpSecrets,
    /// 3: the CPUID page (`OVMF_SECTION_TYPE_CPUID`).
    Cpuid,
    /// 4: the SVSM calling-area page (`OVMF_SECTION_TYPE_SVSM_CAA`).
    SvsmCaa,
    /// 0x10: the kernel hashes page (`OVMF_SECTION_TYPE_KERNEL_HASHES`, AmdSev builds only).
    SnpKernelHashes,
    /// Any other value (kept so that a caller can refuse it with a precise message).
    Unknown(u32),
}

impl SectionType {
    /// From the descriptor's `type` field.
    pub fn from_u32(v: u32) -> Self {
        match v {
            1 => SectionType::SnpSecMem,
            2 => SectionType::SnpSecrets,
            3 => SectionType::Cpuid,
            4 => SectionType::SvsmCaa,
            0x10 => SectionType::SnpKernelHashes,
            other => SectionType::Unknown(other),
        }
    }
}

/// One SEV metadata section descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevSection {
    /// Guest-physical address.
    pub gpa: u32,
    /// Size in bytes.
    pub size: u32,
    /// What the section is.
    pub kind: SectionType,
}

/// One entry of the footer table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    /// The entry's GUID.
    pub guid: EfiGuid,
    /// Its data (without the trailing size and GUID).
    pub data: Vec<u8>,
}

/// Errors reading an OVMF image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OvmfError {
    /// The file could not be read.
    #[error("cannot read firmware {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Larger than [`MAX_FIRMWARE_SIZE`].
    #[error("firmware image larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// Too short to hold the reset vector and the table footer.
    #[error("firmware image of {size} bytes is too short for an OVMF footer table (truncated?)")]
    Truncated {
        /// The image size.
        size: usize,
    },
    /// No footer GUID where the table must end: not an OVMF image, or one cut short.
    #[error("no OVMF footer table (GUID 96b582de-1fb2-45f7-baea-a366c55a082d) at the end of the firmware: not an OVMF image, or truncated")]
    NoFooterTable,
    /// The footer table is malformed.
    #[error("malformed OVMF footer table: {0}")]
    BadTable(&'static str),
    /// The same GUID twice in the table.
    #[error("OVMF footer table has GUID {0} twice")]
    DuplicateEntry(EfiGuid),
    /// A table entry whose data are shorter than what it must hold.
    #[error("OVMF footer table entry {guid} has {len} bytes of data, needs {need}")]
    ShortEntry {
        /// The entry.
        guid: EfiGuid,
        /// Its data length.
        len: usize,
        /// What is needed.
        need: usize,
    },
    /// A table entry that must be there is absent.
    #[error("OVMF footer table has no {what} entry ({guid})")]
    MissingEntry {
        /// The entry's name.
        what: &'static str,
        /// Its GUID.
        guid: EfiGuid,
    },
    /// The SEV metadata are malformed.
    #[error("malformed OVMF SEV metadata: {0}")]
    BadSevMetadata(&'static str),
    /// A SEV metadata section reaches past 4 GiB.
    #[error("OVMF SEV metadata section at {gpa:#x} of {size:#x} bytes lies beyond 4 GiB")]
    SectionOutOfRange {
        /// Its address.
        gpa: u32,
        /// Its size.
        size: u32,
    },
}

/// An OVMF image with its footer table and SEV metadata parsed.
#[derive(Debug, Clone)]
pub struct Ovmf {
    data: Vec<u8>,
    table: Vec<TableEntry>,
    sections: Option<Vec<SevSection>>,
}

fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn guid_at(b: &[u8], at: usize) -> Option<EfiGuid> {
    Some(EfiGuid(b.get(at..at.checked_add(16)?)?.try_into().ok()?))
}

impl Ovmf {
    /// Read and parse a firmware file (at most [`MAX_FIRMWARE_SIZE`] bytes are read).
    pub fn read(path: &Path) -> Result<Self, OvmfError> {
        let io = |source| OvmfError::Io {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        let mut data = Vec::new();
        f.take(MAX_FIRMWARE_SIZE as u64 + 1)
            .read_to_end(&mut data)
            .map_err(io)?;
        Self::parse(data)
    }

    /// Parse a firmware image held in memory.
    pub fn parse(data: Vec<u8>) -> Result<Self, OvmfError> {
        if data.len() > MAX_FIRMWARE_SIZE {
            return Err(OvmfError::TooLarge {
                max: MAX_FIRMWARE_SIZE,
            });
        }
        let table = parse_table(&data)?;
        let mut ovmf = Ovmf {
            data,
            table,
            sections: None,
        };
        ovmf.sections = ovmf.parse_sev_metadata()?;
        Ok(ovmf)
    }

    /// The image bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Guest-physical address of the image's first byte: the image ends at 4 GiB.
    pub fn gpa(&self) -> u64 {
        FOUR_GIB - self.data.len() as u64
    }

    /// The footer table's entries, from the footer downwards (file order reversed).
    pub fn table(&self) -> &[TableEntry] {
        &self.table
    }

    /// The data of the table entry with this GUID.
    pub fn entry(&self, guid: &EfiGuid) -> Option<&[u8]> {
        self.table
            .iter()
            .find(|e| e.guid == *guid)
            .map(|e| e.data.as_slice())
    }

    /// The SEV metadata sections in file order, or `None` when the image has no SEV metadata
    /// (e.g. Debian 12's OVMF 2022.11): such firmware cannot launch an SEV-SNP guest.
    pub fn sev_sections(&self) -> Option<&[SevSection]> {
        self.sections.as_deref()
    }

    /// Whether a SEV metadata section of this kind exists.
    pub fn has_section(&self, kind: SectionType) -> bool {
        self.sections
            .as_deref()
            .is_some_and(|s| s.iter().any(|x| x.kind == kind))
    }

    /// The APs' reset EIP from the SEV-ES reset block (its first `u32le`).
    pub fn sev_es_reset_eip(&self) -> Result<u32, OvmfError> {
        self.entry_u32(&SEV_ES_RESET_BLOCK_GUID, "SEV-ES reset block")
    }

    /// Guest-physical address of the SEV hash table (first `u32le` of its entry), if the image
    /// has the entry.
    pub fn sev_hash_table_gpa(&self) -> Result<Option<u32>, OvmfError> {
        match self.entry_u32(&SEV_HASH_TABLE_RV_GUID, "SEV hash table") {
            Ok(v) => Ok(Some(v)),
            Err(OvmfError::MissingEntry { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn entry_u32(&self, guid: &EfiGuid, what: &'static str) -> Result<u32, OvmfError> {
        let d = self
            .entry(guid)
            .ok_or(OvmfError::MissingEntry { what, guid: *guid })?;
        le_u32(d, 0).ok_or(OvmfError::ShortEntry {
            guid: *guid,
            len: d.len(),
            need: 4,
        })
    }

    fn parse_sev_metadata(&self) -> Result<Option<Vec<SevSection>>, OvmfError> {
        let Some(off) = self
            .entry(&OVMF_SEV_METADATA_GUID)
            .map(|_| self.entry_u32(&OVMF_SEV_METADATA_GUID, "SEV metadata"))
            .transpose()?
        else {
            return Ok(None);
        };
        let bad = OvmfError::BadSevMetadata;
        let d = &self.data;
        let start = d
            .len()
            .checked_sub(off as usize)
            .ok_or(bad("offset points before the image"))?;
        let header = d
            .get(start..)
            .filter(|h| h.len() >= SEV_METADATA_HEADER_SIZE)
            .ok_or(bad("header runs past the end of the image"))?;
        if &header[0..4] != b"ASEV" {
            return Err(bad("signature is not \"ASEV\""));
        }
        let size = le_u32(header, 4).ok_or(bad("header truncated"))? as usize;
        let version = le_u32(header, 8).ok_or(bad("header truncated"))?;
        let num = le_u32(header, 12).ok_or(bad("header truncated"))? as usize;
        if version != SEV_METADATA_VERSION {
            return Err(bad("version is not 1"));
        }
        if size < SEV_METADATA_HEADER_SIZE || size > header.len() {
            return Err(bad("size field out of range"));
        }
        if num > MAX_SECTIONS {
            return Err(bad("too many sections"));
        }
        if num * SEV_SECTION_DESC_SIZE > size - SEV_METADATA_HEADER_SIZE {
            return Err(bad("section descriptors run past the metadata size"));
        }
        let items = &header[SEV_METADATA_HEADER_SIZE..size];
        let mut out = Vec::with_capacity(num);
        for desc in items.chunks_exact(SEV_SECTION_DESC_SIZE).take(num) {
            let gpa = le_u32(desc, 0).ok_or(bad("descriptor truncated"))?;
            let size = le_u32(desc, 4).ok_or(bad("descriptor truncated"))?;
            let kind = le_u32(desc, 8).ok_or(bad("descriptor truncated"))?;
            if u64::from(gpa) + u64::from(size) > FOUR_GIB {
                return Err(OvmfError::SectionOutOfRange { gpa, size });
            }
            out.push(SevSection {
                gpa,
                size,
                kind: SectionType::from_u32(kind),
            });
        }
        Ok(Some(out))
    }
}

/// The footer table's entries, walked from the footer downwards.
fn parse_table(d: &[u8]) -> Result<Vec<TableEntry>, OvmfError> {
    let footer_at = d
        .len()
        .checked_sub(RESET_VECTOR_SIZE + ENTRY_HEADER_SIZE)
        .ok_or(OvmfError::Truncated { size: d.len() })?;
    if guid_at(d, footer_at + 2) != Some(OVMF_TABLE_FOOTER_GUID) {
        return Err(OvmfError::NoFooterTable);
    }
    let total = le_u16(d, footer_at).ok_or(OvmfError::NoFooterTable)? as usize;
    let entries_len = total
        .checked_sub(ENTRY_HEADER_SIZE)
        .ok_or(OvmfError::BadTable("footer size smaller than the footer"))?;
    let table_start = footer_at
        .checked_sub(entries_len)
        .ok_or(OvmfError::BadTable("table starts before the image"))?;
    let mut rest = &d[table_start..footer_at];
    let mut out: Vec<TableEntry> = Vec::new();
    // Each entry is at least 18 bytes, so the walk takes at most 65535 / 18 steps.
    while !rest.is_empty() {
        let hdr_at = rest
            .len()
            .checked_sub(ENTRY_HEADER_SIZE)
            .ok_or(OvmfError::BadTable("bytes left below the last entry"))?;
        let size = le_u16(rest, hdr_at).ok_or(OvmfError::BadTable("entry truncated"))? as usize;
        let guid = guid_at(rest, hdr_at + 2).ok_or(OvmfError::BadTable("entry truncated"))?;
        if size < ENTRY_HEADER_SIZE {
            return Err(OvmfError::BadTable("entry size smaller than its header"));
        }
        let data_at = rest
            .len()
            .checked_sub(size)
            .ok_or(OvmfError::BadTable("entry larger than the table"))?;
        if out.iter().any(|e| e.guid == guid) {
            return Err(OvmfError::DuplicateEntry(guid));
        }
        out.push(TableEntry {
            guid,
            data: rest[data_at..hdr_at].to_vec(),
        });
        rest = &rest[..data_at];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic image: `len` bytes with a table of `entries` (file order) before the
    /// reset vector.
    fn image(len: usize, entries: &[(EfiGuid, Vec<u8>)]) -> Vec<u8> {
        let mut table = Vec::new();
        for (g, data) in entries {
            table.extend_from_slice(data);
            table.extend_from_slice(&((data.len() + ENTRY_HEADER_SIZE) as u16).to_le_bytes());
            table.extend_from_slice(&g.0);
        }
        table.extend_from_slice(&((table.len() + ENTRY_HEADER_SIZE) as u16).to_le_bytes());
        table.extend_from_slice(&OVMF_TABLE_FOOTER_GUID.0);
        let mut d = vec![0u8; len];
        let end = len - RESET_VECTOR_SIZE;
        d[end - table.len()..end].copy_from_slice(&table);
        d
    }

    fn metadata(sections: &[(u32, u32, u32)]) -> Vec<u8> {
        let mut m = b"ASEV".to_vec();
        m.extend_from_slice(&((16 + 12 * sections.len()) as u32).to_le_bytes());
        m.extend_from_slice(&1u32.to_le_bytes());
        m.extend_from_slice(&(sections.len() as u32).to_le_bytes());
        for (g, s, t) in sections {
            for v in [g, s, t] {
                m.extend_from_slice(&v.to_le_bytes());
            }
        }
        m
    }

    #[test]
    fn guids_match_their_text() {
        for (g, s) in [
            (
                OVMF_TABLE_FOOTER_GUID,
                "96b582de-1fb2-45f7-baea-a366c55a082d",
            ),
            (
                OVMF_SEV_METADATA_GUID,
                "dc886566-984a-4798-a75e-5585a7bf67cc",
            ),
            (
                SEV_ES_RESET_BLOCK_GUID,
                "00f771de-1a7e-4fcb-890e-68c77e2fb44e",
            ),
            (
                SEV_HASH_TABLE_RV_GUID,
                "7255371f-3a3b-4b04-927b-1da6efa8d454",
            ),
        ] {
            assert_eq!(g, s.parse::<EfiGuid>().unwrap());
        }
    }

    #[test]
    fn parses_table_and_metadata() {
        let mut d = image(
            0x4000,
            &[
                (
                    SEV_HASH_TABLE_RV_GUID,
                    [0x00u8, 0x0c, 0x80, 0, 0, 4, 0, 0].to_vec(),
                ),
                (OVMF_SEV_METADATA_GUID, 0x1000u32.to_le_bytes().to_vec()),
                (
                    SEV_ES_RESET_BLOCK_GUID,
                    0xffff_b004u32.to_le_bytes().to_vec(),
                ),
            ],
        );
        let m = metadata(&[
            (0x80_0000, 0x9000, 1),
            (0x80_9000, 0x1000, 2),
            (0x80_a000, 0x1000, 0x10),
        ]);
        let at = d.len() - 0x1000;
        d[at..at + m.len()].copy_from_slice(&m);
        let o = Ovmf::parse(d).unwrap();
        assert_eq!(o.gpa(), FOUR_GIB - 0x4000);
        assert_eq!(o.sev_es_reset_eip().unwrap(), 0xffff_b004);
        assert_eq!(o.sev_hash_table_gpa().unwrap(), Some(0x80_0c00));
        let s = o.sev_sections().unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[2].kind, SectionType::SnpKernelHashes);
        assert!(o.has_section(SectionType::SnpSecrets));
        assert!(!o.has_section(SectionType::Cpuid));
    }

    #[test]
    fn refuses_malformed_images() {
        assert!(matches!(
            Ovmf::parse(vec![0; 20]),
            Err(OvmfError::Truncated { .. })
        ));
        assert!(matches!(
            Ovmf::parse(vec![0xa5; 8192]),
            Err(OvmfError::NoFooterTable)
        ));
        // Footer size larger than the image.
        let mut d = image(0x1000, &[]);
        let f = d.len() - RESET_VECTOR_SIZE - ENTRY_HEADER_SIZE;
        d[f..f + 2].copy_from_slice(&0xfff0u16.to_le_bytes());
        assert!(matches!(Ovmf::parse(d), Err(OvmfError::BadTable(_))));
        // An entry claiming more than the table holds.
        let mut d = image(0x1000, &[(SEV_ES_RESET_BLOCK_GUID, vec![0; 4])]);
        let e = d.len() - RESET_VECTOR_SIZE - 2 * ENTRY_HEADER_SIZE;
        d[e..e + 2].copy_from_slice(&200u16.to_le_bytes());
        assert!(matches!(Ovmf::parse(d), Err(OvmfError::BadTable(_))));
        // Duplicate GUIDs.
        let d = image(
            0x1000,
            &[
                (SEV_ES_RESET_BLOCK_GUID, vec![0; 4]),
                (SEV_ES_RESET_BLOCK_GUID, vec![0; 4]),
            ],
        );
        assert!(matches!(Ovmf::parse(d), Err(OvmfError::DuplicateEntry(_))));
        // Metadata pointer out of the image, wrong signature, section past 4 GiB.
        let d = image(
            0x1000,
            &[(OVMF_SEV_METADATA_GUID, 0x2000u32.to_le_bytes().to_vec())],
        );
        assert!(matches!(Ovmf::parse(d), Err(OvmfError::BadSevMetadata(_))));
        let d = image(
            0x2000,
            &[(OVMF_SEV_METADATA_GUID, 0x1000u32.to_le_bytes().to_vec())],
        );
        assert!(matches!(Ovmf::parse(d), Err(OvmfError::BadSevMetadata(_))));
        let mut d = image(
            0x2000,
            &[(OVMF_SEV_METADATA_GUID, 0x1000u32.to_le_bytes().to_vec())],
        );
        let m = metadata(&[(0xffff_f000, 0x2000, 1)]);
        d[0x1000..0x1000 + m.len()].copy_from_slice(&m);
        assert!(matches!(
            Ovmf::parse(d),
            Err(OvmfError::SectionOutOfRange { .. })
        ));
        // Short reset block entry.
        let d = image(0x1000, &[(SEV_ES_RESET_BLOCK_GUID, vec![0; 2])]);
        let o = Ovmf::parse(d).unwrap();
        assert!(matches!(
            o.sev_es_reset_eip(),
            Err(OvmfError::ShortEntry { .. })
        ));
        assert!(o.sev_sections().is_none());
    }
}
