//! AMD SEV, SEV-ES and SEV-SNP launch digests of an OVMF guest: what the PSP's attestation
//! report carries as `MEASUREMENT` (SNP) or what `LAUNCH_MEASURE` covers (SEV, SEV-ES), from
//! the firmware image, the vCPU count and type, the guest features, the VMM and, for direct
//! kernel boot with `kernel-hashes=on`, the SHA-256 table of kernel (or UKI), initrd and
//! command line.
//!
//! Facts (and the configurations checked against it in `tests/snp.rs`) come from
//! virtee/sev-snp-measure 0.0.13 (`gctx.py`, `guest.py`, `vmsa.py`, `sev_hashes.py`,
//! `vcpu_types.py`), which follows the SEV-SNP firmware ABI (AMD pub. 56860) §8.17
//! `SNP_LAUNCH_UPDATE` and QEMU `target/i386/sev.c`:
//!
//! - **SNP**: a SHA-384 chain over `PAGE_INFO` structures ([`Gctx`]); first the whole
//!   firmware image as NORMAL pages at 4 GiB − size, then the firmware's SEV metadata
//!   sections in file order ([`SectionType`]), then one VMSA page per vCPU ([`vmsa_page`]).
//! - **SEV-ES**: SHA-256 of the image, the hash table (with a kernel) and the VMSA pages, the
//!   VMSAs with SEV features 0.
//! - **SEV**: SHA-256 of the image and the hash table (with a kernel).
//!
//! Stricter than sev-snp-measure on purpose: an SNP digest needs SEV metadata in the firmware
//! (sev-snp-measure prints a digest for Debian 12's OVMF, which has none and cannot launch an
//! SNP guest); vCPU counts are 1..=[`MAX_VCPUS`]; sections must be page-aligned. The SVSM
//! mode (`snp:svsm`) is not implemented.

use sha2::{Digest, Sha256, Sha384};

use crate::ovmf::{Ovmf, OvmfError, SectionType, SevSection};

/// Page size of every measured unit.
pub const PAGE_SIZE: usize = 4096;
/// Size of the SNP launch digest (SHA-384).
pub const LD_SIZE: usize = 48;
/// Guest-physical address recorded for VMSA pages: the RMP records `(u64)-1`, page-aligned
/// and with bits above 51 cleared (sev-snp-measure `gctx.py` `VMSA_GPA`).
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;
/// The BSP starts at the architectural reset vector (x86 reset state).
pub const BSP_EIP: u32 = 0xFFFF_FFF0;
/// At most this many vCPUs (bounds the work; QEMU's SNP guests stay far below).
pub const MAX_VCPUS: u32 = 4096;
/// `PAGE_INFO.length` (SNP ABI Table "PAGE_INFO Structure").
pub const PAGE_INFO_LEN: usize = 0x70;

/// `PAGE_INFO.page_type` values (SNP ABI §8.17, `SNP_LAUNCH_UPDATE` page types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PageType {
    /// 1: a normal page; its contents are measured.
    Normal = 1,
    /// 2: a VMSA page; its contents are measured.
    Vmsa = 2,
    /// 3: a zero page (contents field zero).
    Zero = 3,
    /// 4: an unmeasured page (contents field zero).
    Unmeasured = 4,
    /// 5: the secrets page (contents field zero).
    Secrets = 5,
    /// 6: the CPUID page (contents field zero).
    Cpuid = 6,
}

/// SEV generation of the guest (sev-snp-measure `--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SevMode {
    /// SEV: memory encryption only.
    Sev,
    /// SEV-ES: encrypted register state (VMSA).
    SevEs,
    /// SEV-SNP: with the RMP and the page-info digest.
    Snp,
}

/// The hypervisor launching the guest; they differ in initial register state and in where the
/// CPUID page goes (sev-snp-measure `vmm_types.py`, `vmsa.py`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmType {
    /// QEMU/KVM.
    Qemu,
    /// AWS EC2.
    Ec2,
    /// Google Compute Engine.
    Gce,
}

/// Errors computing a launch digest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnpError {
    /// The firmware image.
    #[error(transparent)]
    Ovmf(#[from] OvmfError),
    /// A kernel, initrd or file that could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// SNP needs the firmware's SEV metadata.
    #[error("the firmware has no SEV metadata (GUID dc886566-984a-4798-a75e-5585a7bf67cc): it cannot launch an SEV-SNP guest (Debian 12's OVMF 2022.11 is such a build)")]
    NoSevMetadata,
    /// A SEV metadata section of a type this code does not know.
    #[error("the firmware's SEV metadata has a section of unknown type {0:#x}")]
    UnknownSection(u32),
    /// A section that is not made of whole, aligned pages.
    #[error("SEV metadata section at {gpa:#x} of {size:#x} bytes is not page-aligned")]
    MisalignedSection {
        /// Its address.
        gpa: u32,
        /// Its size.
        size: u32,
    },
    /// The image is not made of whole pages (SNP measures it page by page).
    #[error("firmware image size {0:#x} is not a multiple of 4096")]
    MisalignedFirmware(usize),
    /// A kernel was given but the firmware has no SNP kernel-hashes section.
    #[error("kernel hashes given, but the firmware's SEV metadata has no SNP_KERNEL_HASHES section (that is OVMF's AmdSev build, OvmfPkg/AmdSev/AmdSevX64.dsc)")]
    NoKernelHashesSection,
    /// A kernel was given but the firmware has no (or a zero) SEV hash-table location.
    #[error("kernel hashes given, but the firmware has no SEV hash table (GUID 7255371f-3a3b-4b04-927b-1da6efa8d454) to check them")]
    NoHashTable,
    /// The kernel-hashes section is not one page, or the table does not fit in it.
    #[error("the SNP_KERNEL_HASHES section ({size:#x} bytes) cannot hold the hash table at page offset {offset:#x}")]
    BadHashesSection {
        /// Section size.
        size: u32,
        /// Offset of the table in its page.
        offset: usize,
    },
    /// vCPU count out of range.
    #[error("vCPU count {0} out of range 1..={MAX_VCPUS}")]
    VcpuCount(u32),
    /// More than one vCPU and a zero AP reset EIP.
    #[error("the firmware's SEV-ES reset block gives AP reset EIP 0: only one vCPU can start")]
    NoApEip,
    /// A precomputed OVMF hash is only meaningful for SNP.
    #[error("a precomputed OVMF hash needs --mode snp")]
    OvmfHashNeedsSnp,
}

/// SNP guest context: the running launch digest (SNP ABI `GCTX.LD`), 48 zero bytes at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gctx {
    ld: [u8; LD_SIZE],
}

impl Default for Gctx {
    fn default() -> Self {
        Gctx { ld: [0; LD_SIZE] }
    }
}

impl Gctx {
    /// Start from a given digest (a precomputed firmware prefix, [`ovmf_hash`]).
    pub fn with_seed(ld: [u8; LD_SIZE]) -> Self {
        Gctx { ld }
    }

    /// The current digest.
    pub fn ld(&self) -> [u8; LD_SIZE] {
        self.ld
    }

    /// Extend with one page: LD ← SHA-384(PAGE_INFO), where PAGE_INFO (0x70 bytes, SNP ABI
    /// §8.17.2) is LD ‖ CONTENTS ‖ u16 length ‖ u8 page_type ‖ u8 is_imi (0) ‖ u8
    /// vmpl3/2/1_perms (0) ‖ u8 reserved ‖ u64 GPA, all little-endian.
    pub fn update(&mut self, page_type: PageType, gpa: u64, contents: &[u8; LD_SIZE]) {
        let mut info = [0u8; PAGE_INFO_LEN];
        info[0..48].copy_from_slice(&self.ld);
        info[48..96].copy_from_slice(contents);
        info[96..98].copy_from_slice(&(PAGE_INFO_LEN as u16).to_le_bytes());
        info[98] = page_type as u8;
        // is_imi, vmpl3_perms, vmpl2_perms, vmpl1_perms, reserved: 0.
        info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.ld = Sha384::digest(info).into();
    }

    /// NORMAL pages: CONTENTS = SHA-384 of each page. `data` is whole pages.
    pub fn update_normal_pages(&mut self, gpa: u64, data: &[u8]) {
        for (i, page) in data.chunks(PAGE_SIZE).enumerate() {
            let h: [u8; LD_SIZE] = Sha384::digest(page).into();
            self.update(PageType::Normal, gpa + (i * PAGE_SIZE) as u64, &h);
        }
    }

    /// A VMSA page at [`VMSA_GPA`].
    pub fn update_vmsa_page(&mut self, page: &[u8; PAGE_SIZE]) {
        let h: [u8; LD_SIZE] = Sha384::digest(page).into();
        self.update(PageType::Vmsa, VMSA_GPA, &h);
    }

    /// `len / 4096` pages of a type whose CONTENTS field is zero (ZERO, UNMEASURED, SECRETS,
    /// CPUID).
    pub fn update_empty_pages(&mut self, page_type: PageType, gpa: u64, len: u64) {
        let mut off = 0;
        while off < len {
            self.update(page_type, gpa + off, &[0; LD_SIZE]);
            off += PAGE_SIZE as u64;
        }
    }
}

/// The CPUID Fn0000_0001_EAX signature of a family/model/stepping (AMD CPUID Specification,
/// pub. 25481): extended family in bits 27:20 when family > 0xf, extended model 19:16, base
/// family 11:8, base model 7:4, stepping 3:0. QEMU puts it in RDX of the initial VMSA.
pub fn cpu_sig(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    (family_high << 20)
        | (((model >> 4) & 0xf) << 16)
        | ((family_low & 0xf) << 8)
        | ((model & 0xf) << 4)
        | (stepping & 0xf)
}

/// QEMU's AMD EPYC CPU models (`target/i386/cpu.c` `builtin_x86_defs`) as (name, family,
/// model, stepping), the names sev-snp-measure's `--vcpu-type` takes (`vcpu_types.py`).
pub const VCPU_TYPES: &[(&str, u32, u32, u32)] = &[
    ("EPYC", 23, 1, 2),
    ("EPYC-v1", 23, 1, 2),
    ("EPYC-v2", 23, 1, 2),
    ("EPYC-IBPB", 23, 1, 2),
    ("EPYC-v3", 23, 1, 2),
    ("EPYC-v4", 23, 1, 2),
    ("EPYC-Rome", 23, 49, 0),
    ("EPYC-Rome-v1", 23, 49, 0),
    ("EPYC-Rome-v2", 23, 49, 0),
    ("EPYC-Rome-v3", 23, 49, 0),
    ("EPYC-Milan", 25, 1, 1),
    ("EPYC-Milan-v1", 25, 1, 1),
    ("EPYC-Milan-v2", 25, 1, 1),
    ("EPYC-Genoa", 25, 17, 0),
    ("EPYC-Genoa-v1", 25, 17, 0),
    ("EPYC-Turin", 26, 0, 0),
];

/// The CPUID signature of a QEMU CPU model name from [`VCPU_TYPES`].
pub fn vcpu_type_sig(name: &str) -> Option<u32> {
    VCPU_TYPES
        .iter()
        .find(|(n, ..)| *n == name)
        .map(|&(_, f, m, s)| cpu_sig(f, m, s))
}

/// Offsets in the VMSA (AMD APM Vol. 2 Table B-4 "VMSA Layout, State Save Area for SEV-ES";
/// Linux `struct sev_es_save_area`, `arch/x86/include/asm/svm.h`). Segments are
/// `{u16 selector, u16 attrib, u32 limit, u64 base}` (`struct vmcb_seg`).
mod vmsa_off {
    pub const ES: usize = 0x00;
    pub const CS: usize = 0x10;
    pub const SS: usize = 0x20;
    pub const DS: usize = 0x30;
    pub const FS: usize = 0x40;
    pub const GS: usize = 0x50;
    pub const GDTR: usize = 0x60;
    pub const LDTR: usize = 0x70;
    pub const IDTR: usize = 0x80;
    pub const TR: usize = 0x90;
    pub const EFER: usize = 0xd0;
    pub const CR4: usize = 0x148;
    pub const CR0: usize = 0x158;
    pub const DR7: usize = 0x160;
    pub const DR6: usize = 0x168;
    pub const RFLAGS: usize = 0x170;
    pub const RIP: usize = 0x178;
    pub const G_PAT: usize = 0x268;
    pub const RDX: usize = 0x310;
    pub const SEV_FEATURES: usize = 0x3b0;
    pub const XCR0: usize = 0x3e8;
    pub const MXCSR: usize = 0x408;
    pub const X87_FCW: usize = 0x410;
}

/// The initial VMSA of a vCPU starting at `eip` (KVM/QEMU reset state as sev-snp-measure
/// `vmsa.py` `build_save_area` records it, with the per-VMM differences):
///
/// - segments ES/SS/DS/FS/GS data (0x93), CS selector 0xf000 with base `eip & 0xffff0000`,
///   LDTR 0x82, TR busy TSS (0x8b), all limits 0xffff;
/// - EFER 0x1000 (SVME, set by KVM), CR4 0x40 (MCE), CR0 0x10 (ET), DR7 0x400, DR6
///   0xffff0ff0, RFLAGS 2, RIP `eip & 0xffff`, XCR0 1;
/// - G_PAT 0x0007040600070406 (APM Vol. 2 §A.3 PAT reset value), GCE 0x70106;
/// - RDX: the CPUID signature on QEMU, 0x600 on EC2 and GCE;
/// - MXCSR 0x1f80 and x87 FCW 0x37f on QEMU, 0 on EC2 and GCE;
/// - EC2: CS 0x9a for the BSP, SS 0x92, TR 0x83;
/// - SEV_FEATURES: the guest features word (SNP) or 0 (SEV-ES).
pub fn vmsa_page(eip: u32, sev_features: u64, vcpu_sig: u32, vmm: VmmType) -> Box<[u8; PAGE_SIZE]> {
    use vmsa_off::*;
    let mut p = Box::new([0u8; PAGE_SIZE]);
    let mut put = |at: usize, bytes: &[u8]| p[at..at + bytes.len()].copy_from_slice(bytes);

    let (cs_attr, ss_attr, tr_attr, rdx, mxcsr, fcw, g_pat): (u16, u16, u16, u64, u32, u16, u64) =
        match vmm {
            VmmType::Qemu => (
                0x9b,
                0x93,
                0x8b,
                u64::from(vcpu_sig),
                0x1f80,
                0x37f,
                0x0007_0406_0007_0406,
            ),
            VmmType::Ec2 => (
                if eip == BSP_EIP { 0x9a } else { 0x9b },
                0x92,
                0x83,
                0x600,
                0,
                0,
                0x0007_0406_0007_0406,
            ),
            VmmType::Gce => (0x9b, 0x93, 0x8b, 0x600, 0, 0, 0x0007_0106),
        };
    let seg = |selector: u16, attrib: u16, base: u64| {
        let mut s = [0u8; 16];
        s[0..2].copy_from_slice(&selector.to_le_bytes());
        s[2..4].copy_from_slice(&attrib.to_le_bytes());
        s[4..8].copy_from_slice(&0xffffu32.to_le_bytes());
        s[8..16].copy_from_slice(&base.to_le_bytes());
        s
    };
    put(ES, &seg(0, 0x93, 0));
    put(CS, &seg(0xf000, cs_attr, u64::from(eip & 0xffff_0000)));
    put(SS, &seg(0, ss_attr, 0));
    put(DS, &seg(0, 0x93, 0));
    put(FS, &seg(0, 0x93, 0));
    put(GS, &seg(0, 0x93, 0));
    put(GDTR, &seg(0, 0, 0));
    put(LDTR, &seg(0, 0x82, 0));
    put(IDTR, &seg(0, 0, 0));
    put(TR, &seg(0, tr_attr, 0));
    put(EFER, &0x1000u64.to_le_bytes());
    put(CR4, &0x40u64.to_le_bytes());
    put(CR0, &0x10u64.to_le_bytes());
    put(DR7, &0x400u64.to_le_bytes());
    put(DR6, &0xffff_0ff0u64.to_le_bytes());
    put(RFLAGS, &2u64.to_le_bytes());
    put(RIP, &u64::from(eip & 0xffff).to_le_bytes());
    put(G_PAT, &g_pat.to_le_bytes());
    put(RDX, &rdx.to_le_bytes());
    put(SEV_FEATURES, &sev_features.to_le_bytes());
    put(XCR0, &1u64.to_le_bytes());
    put(MXCSR, &mxcsr.to_le_bytes());
    put(X87_FCW, &fcw.to_le_bytes());
    p
}

/// GUIDs of the SEV hash table (QEMU `target/i386/sev.c` `sev_hash_table_header_guid`,
/// `sev_kernel_entry_guid` …; EDK2 `OvmfPkg/Library/BlobVerifierLib/BlobVerifierSevHashes.c`),
/// in their on-disk (mixed-endian) form.
pub mod hash_guids {
    use crate::efi::EfiGuid;
    /// Table header: 9438d606-4f22-4cc9-b479-a793d411fd21.
    pub const TABLE: EfiGuid = EfiGuid::from_fields(
        0x9438d606,
        0x4f22,
        0x4cc9,
        [0xb4, 0x79, 0xa7, 0x93, 0xd4, 0x11, 0xfd, 0x21],
    );
    /// Command line: 97d02dd8-bd20-4c94-aa78-e7714d36ab2a.
    pub const CMDLINE: EfiGuid = EfiGuid::from_fields(
        0x97d02dd8,
        0xbd20,
        0x4c94,
        [0xaa, 0x78, 0xe7, 0x71, 0x4d, 0x36, 0xab, 0x2a],
    );
    /// Initrd: 44baf731-3a2f-4bd7-9af1-41e29169781d.
    pub const INITRD: EfiGuid = EfiGuid::from_fields(
        0x44baf731,
        0x3a2f,
        0x4bd7,
        [0x9a, 0xf1, 0x41, 0xe2, 0x91, 0x69, 0x78, 0x1d],
    );
    /// Kernel: 4de79437-abd2-427f-b835-d5b172d2045b.
    pub const KERNEL: EfiGuid = EfiGuid::from_fields(
        0x4de79437,
        0xabd2,
        0x427f,
        [0xb8, 0x35, 0xd5, 0xb1, 0x72, 0xd2, 0x04, 0x5b],
    );
}

/// Size of one hash-table entry: GUID, u16 length, SHA-256.
pub const HASH_ENTRY_SIZE: usize = 16 + 2 + 32;
/// Size of the table without padding: header GUID, u16 length, three entries (168).
pub const HASH_TABLE_SIZE: usize = 16 + 2 + 3 * HASH_ENTRY_SIZE;
/// Size of the table padded to 16 bytes, as QEMU measures it (176).
pub const PADDED_HASH_TABLE_SIZE: usize = (HASH_TABLE_SIZE + 15) & !15;

/// The SHA-256 hashes QEMU puts in the SEV hash table for `-kernel`, `-initrd` and `-append`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SevHashes {
    /// SHA-256 of the kernel (or UKI) file as passed to `-kernel`: QEMU does not patch it
    /// when SEV is on.
    pub kernel: [u8; 32],
    /// SHA-256 of the initrd file, or of nothing.
    pub initrd: [u8; 32],
    /// SHA-256 of the command line followed by a NUL, or of a lone NUL.
    pub cmdline: [u8; 32],
}

impl SevHashes {
    /// From the contents of kernel and initrd and the command line. An empty `append` is
    /// the same as none (QEMU and sev-snp-measure both hash a lone NUL).
    pub fn new(kernel: &[u8], initrd: Option<&[u8]>, append: Option<&str>) -> Self {
        SevHashes {
            kernel: Sha256::digest(kernel).into(),
            initrd: Sha256::digest(initrd.unwrap_or_default()).into(),
            cmdline: Self::cmdline_hash(append),
        }
    }

    /// From files, streamed (a UKI or initrd is never held in memory whole).
    pub fn from_files(
        kernel: &std::path::Path,
        initrd: Option<&std::path::Path>,
        append: Option<&str>,
    ) -> Result<Self, SnpError> {
        let hash_file = |p: &std::path::Path| -> Result<[u8; 32], SnpError> {
            let io = |source| SnpError::Io {
                path: p.to_path_buf(),
                source,
            };
            let mut f = std::fs::File::open(p).map_err(io)?;
            let mut h = Sha256::new();
            std::io::copy(&mut f, &mut h).map_err(io)?;
            Ok(h.finalize().into())
        };
        Ok(SevHashes {
            kernel: hash_file(kernel)?,
            initrd: match initrd {
                Some(p) => hash_file(p)?,
                None => Sha256::digest(b"").into(),
            },
            cmdline: Self::cmdline_hash(append),
        })
    }

    fn cmdline_hash(append: Option<&str>) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(append.unwrap_or_default().as_bytes());
        h.update([0u8]);
        h.finalize().into()
    }

    /// The table QEMU writes and the firmware verifies (QEMU `SevHashTable` +
    /// `PaddedSevHashTable`): header GUID, u16 168, then {GUID, u16 50, SHA-256} for the
    /// command line, the initrd and the kernel, in that order, zero-padded to 176 bytes.
    pub fn table(&self) -> [u8; PADDED_HASH_TABLE_SIZE] {
        let mut t = [0u8; PADDED_HASH_TABLE_SIZE];
        t[0..16].copy_from_slice(&hash_guids::TABLE.0);
        t[16..18].copy_from_slice(&(HASH_TABLE_SIZE as u16).to_le_bytes());
        let entries = [
            (hash_guids::CMDLINE, &self.cmdline),
            (hash_guids::INITRD, &self.initrd),
            (hash_guids::KERNEL, &self.kernel),
        ];
        for (i, (guid, hash)) in entries.into_iter().enumerate() {
            let at = 18 + i * HASH_ENTRY_SIZE;
            t[at..at + 16].copy_from_slice(&guid.0);
            t[at + 16..at + 18].copy_from_slice(&(HASH_ENTRY_SIZE as u16).to_le_bytes());
            t[at + 18..at + 50].copy_from_slice(hash);
        }
        t
    }

    /// The page SNP measures for the SNP_KERNEL_HASHES section: zeros with [`Self::table`]
    /// at `offset` (the table's GPA within its page).
    pub fn page(&self, offset: usize) -> Option<Box<[u8; PAGE_SIZE]>> {
        let end = offset.checked_add(PADDED_HASH_TABLE_SIZE)?;
        if end > PAGE_SIZE {
            return None;
        }
        let mut p = Box::new([0u8; PAGE_SIZE]);
        p[offset..end].copy_from_slice(&self.table());
        Some(p)
    }
}

/// What a launch digest depends on besides the firmware.
#[derive(Debug, Clone)]
pub struct LaunchConfig {
    /// SEV generation.
    pub mode: SevMode,
    /// Number of vCPUs (ignored for SEV).
    pub vcpus: u32,
    /// CPUID signature for the VMSA's RDX (QEMU only; ignored for SEV).
    pub vcpu_sig: u32,
    /// SEV features word of the VMSAs (SNP only; SEV-ES uses 0). sev-snp-measure's default
    /// is 0x1 (SNPActive).
    pub guest_features: u64,
    /// The hypervisor.
    pub vmm: VmmType,
    /// Kernel hashes for direct boot with `kernel-hashes=on`.
    pub hashes: Option<SevHashes>,
    /// SNP only: start from this precomputed firmware-prefix digest ([`ovmf_hash`]) instead
    /// of measuring the image pages.
    pub ovmf_hash: Option<[u8; LD_SIZE]>,
}

/// The SNP digest of the firmware image pages alone (sev-snp-measure `snp:ovmf-hash`), to be
/// given back as [`LaunchConfig::ovmf_hash`].
pub fn ovmf_hash(ovmf: &Ovmf) -> Result<[u8; LD_SIZE], SnpError> {
    let data = ovmf.data();
    if data.len() % PAGE_SIZE != 0 {
        return Err(SnpError::MisalignedFirmware(data.len()));
    }
    let mut g = Gctx::default();
    g.update_normal_pages(ovmf.gpa(), data);
    Ok(g.ld())
}

/// The launch digest: 48 bytes (SHA-384) for SNP, 32 (SHA-256) for SEV and SEV-ES.
pub fn launch_digest(ovmf: &Ovmf, cfg: &LaunchConfig) -> Result<Vec<u8>, SnpError> {
    if cfg.ovmf_hash.is_some() && cfg.mode != SevMode::Snp {
        return Err(SnpError::OvmfHashNeedsSnp);
    }
    if cfg.mode != SevMode::Sev && !(1..=MAX_VCPUS).contains(&cfg.vcpus) {
        return Err(SnpError::VcpuCount(cfg.vcpus));
    }
    match cfg.mode {
        SevMode::Snp => snp_digest(ovmf, cfg).map(|d| d.to_vec()),
        SevMode::SevEs | SevMode::Sev => {
            let mut h = Sha256::new();
            h.update(ovmf.data());
            if let Some(hashes) = &cfg.hashes {
                match ovmf.sev_hash_table_gpa()? {
                    Some(gpa) if gpa != 0 => h.update(hashes.table()),
                    _ => return Err(SnpError::NoHashTable),
                }
            }
            if cfg.mode == SevMode::SevEs {
                for page in vmsa_pages(ovmf, cfg, 0)? {
                    h.update(&page[..]);
                }
            }
            Ok(h.finalize().to_vec())
        }
    }
}

/// The VMSA pages of all vCPUs: the BSP at the reset vector, the APs at the firmware's
/// SEV-ES reset EIP (which the firmware must declare even for one vCPU, as sev-snp-measure
/// requires).
fn vmsa_pages(
    ovmf: &Ovmf,
    cfg: &LaunchConfig,
    sev_features: u64,
) -> Result<Vec<Box<[u8; PAGE_SIZE]>>, SnpError> {
    let ap_eip = ovmf.sev_es_reset_eip()?;
    if cfg.vcpus > 1 && ap_eip == 0 {
        return Err(SnpError::NoApEip);
    }
    let bsp = vmsa_page(BSP_EIP, sev_features, cfg.vcpu_sig, cfg.vmm);
    let ap = vmsa_page(ap_eip, sev_features, cfg.vcpu_sig, cfg.vmm);
    Ok((0..cfg.vcpus)
        .map(|i| if i == 0 { bsp.clone() } else { ap.clone() })
        .collect())
}

fn check_pages(s: &SevSection) -> Result<(), SnpError> {
    if s.gpa as usize % PAGE_SIZE != 0 || s.size as usize % PAGE_SIZE != 0 {
        return Err(SnpError::MisalignedSection {
            gpa: s.gpa,
            size: s.size,
        });
    }
    Ok(())
}

fn snp_digest(ovmf: &Ovmf, cfg: &LaunchConfig) -> Result<[u8; LD_SIZE], SnpError> {
    let sections = ovmf.sev_sections().ok_or(SnpError::NoSevMetadata)?;
    let mut g = match cfg.ovmf_hash {
        Some(seed) => Gctx::with_seed(seed),
        None => Gctx::with_seed(ovmf_hash(ovmf)?),
    };
    for s in sections {
        let gpa = u64::from(s.gpa);
        let size = u64::from(s.size);
        match s.kind {
            SectionType::SnpSecMem => {
                check_pages(s)?;
                let t = if cfg.vmm == VmmType::Gce {
                    PageType::Unmeasured
                } else {
                    PageType::Zero
                };
                g.update_empty_pages(t, gpa, size);
            }
            SectionType::SnpSecrets => {
                check_pages(s)?;
                g.update(PageType::Secrets, gpa, &[0; LD_SIZE]);
            }
            SectionType::Cpuid => {
                check_pages(s)?;
                // EC2 inserts the CPUID page after all other sections.
                if cfg.vmm != VmmType::Ec2 {
                    g.update(PageType::Cpuid, gpa, &[0; LD_SIZE]);
                }
            }
            SectionType::SvsmCaa => {
                check_pages(s)?;
                g.update_empty_pages(PageType::Zero, gpa, size);
            }
            SectionType::SnpKernelHashes => {
                check_pages(s)?;
                match &cfg.hashes {
                    Some(h) => {
                        let table_gpa = ovmf.sev_hash_table_gpa()?.ok_or(SnpError::NoHashTable)?;
                        let offset = (table_gpa & 0xfff) as usize;
                        let page = h
                            .page(offset)
                            .filter(|_| s.size as usize == PAGE_SIZE)
                            .ok_or(SnpError::BadHashesSection {
                                size: s.size,
                                offset,
                            })?;
                        g.update_normal_pages(gpa, &page[..]);
                    }
                    None => g.update_empty_pages(PageType::Zero, gpa, size),
                }
            }
            SectionType::Unknown(t) => return Err(SnpError::UnknownSection(t)),
        }
    }
    if cfg.vmm == VmmType::Ec2 {
        for s in sections.iter().filter(|s| s.kind == SectionType::Cpuid) {
            g.update(PageType::Cpuid, u64::from(s.gpa), &[0; LD_SIZE]);
        }
    }
    if cfg.hashes.is_some() && !ovmf.has_section(SectionType::SnpKernelHashes) {
        return Err(SnpError::NoKernelHashesSection);
    }
    for page in vmsa_pages(ovmf, cfg, cfg.guest_features)? {
        g.update_vmsa_page(&page);
    }
    Ok(g.ld())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_signatures() {
        // EPYC-v4: family 23 = 0xf + 8, model 1, stepping 2.
        assert_eq!(vcpu_type_sig("EPYC-v4"), Some(0x0080_0f12));
        assert_eq!(vcpu_type_sig("EPYC-Milan"), Some(0x00a0_0f11));
        assert_eq!(vcpu_type_sig("EPYC-Genoa"), Some(0x00a1_0f10));
        assert_eq!(vcpu_type_sig("EPYC-Rome"), Some(0x0083_0f10));
        assert_eq!(cpu_sig(6, 0x55, 4), 0x0005_0654);
        assert_eq!(vcpu_type_sig("Opteron"), None);
    }

    #[test]
    fn hash_table_layout() {
        let h = SevHashes::new(b"kernel", None, None);
        let t = h.table();
        assert_eq!(HASH_TABLE_SIZE, 168);
        assert_eq!(t.len(), 176);
        assert_eq!(&t[16..18], &168u16.to_le_bytes());
        assert_eq!(&t[18..34], &hash_guids::CMDLINE.0);
        assert_eq!(&t[34..36], &50u16.to_le_bytes());
        let nul: [u8; 32] = Sha256::digest([0u8]).into();
        assert_eq!(&t[36..68], &nul);
        assert_eq!(&t[168..], &[0u8; 8]);
        assert_eq!(
            SevHashes::new(b"k", None, Some("")),
            SevHashes::new(b"k", Some(b""), None)
        );
        assert!(h.page(4096 - 176).is_some());
        assert!(h.page(4096 - 175).is_none());
    }

    #[test]
    fn vmsa_fields() {
        let p = vmsa_page(0xffff_b004, 1, 0x0080_0f12, VmmType::Qemu);
        assert_eq!(
            &p[0x10..0x20],
            &[0x00, 0xf0, 0x9b, 0, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0]
        );
        assert_eq!(&p[0x178..0x180], &0xb004u64.to_le_bytes());
        assert_eq!(&p[0x310..0x318], &0x0080_0f12u64.to_le_bytes());
        let e = vmsa_page(BSP_EIP, 1, 0, VmmType::Ec2);
        assert_eq!(e[0x12], 0x9a);
        assert_eq!(&e[0x408..0x40c], &[0; 4]);
    }

    #[test]
    fn page_info_chain() {
        // One ZERO page from the zero seed: SHA-384 of the 0x70-byte PAGE_INFO.
        let mut g = Gctx::default();
        g.update(PageType::Zero, 0x1000, &[0; LD_SIZE]);
        let mut info = [0u8; PAGE_INFO_LEN];
        info[96] = 0x70;
        info[98] = 3;
        info[105] = 0x10;
        let want: [u8; LD_SIZE] = Sha384::digest(info).into();
        assert_eq!(g.ld(), want);
    }
}
