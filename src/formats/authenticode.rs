//! The Authenticode PE image hash and the attribute certificate table.
//!
//! The hash is what UEFI firmware measures into PCR 4 (EV_EFI_BOOT_SERVICES_APPLICATION) and
//! checks against db/dbx. Algorithm: Microsoft "Windows Authenticode Portable Executable
//! Signature Format", "Calculating the PE Image Hash", as implemented by EDK2
//! `DxeImageVerificationLib` / `Tcg2Dxe MeasureBootPeCoff.c`:
//!
//! 1. hash the headers up to SizeOfHeaders, skipping the CheckSum field and the certificate
//!    table directory entry;
//! 2. hash each section with SizeOfRawData != 0, in ascending PointerToRawData order;
//! 3. hash the bytes after SizeOfHeaders + sum(SizeOfRawData), up to the certificate table.
//!
//! No padding is added: for a file whose length is not a multiple of 8 this matches EDK2 and
//! `pesign -h`. Signers pad the file to 8 bytes before appending the certificate table, and the
//! padding then is part of the hashed image.

use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;

use crate::hash::{Digest, HashAlg, MultiHasher};
use crate::pe::{PeHeaders, DIR_SECURITY};

/// WIN_CERTIFICATE revision 2.0 (pecoff "The Attribute Certificate Table").
pub const WIN_CERT_REVISION_2_0: u16 = 0x0200;
/// WIN_CERT_TYPE_PKCS_SIGNED_DATA.
pub const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;
/// Size of the WIN_CERTIFICATE header (dwLength, wRevision, wCertificateType).
pub const WIN_CERT_HEADER_LEN: usize = 8;
/// Most WIN_CERTIFICATE entries read from one image. Signed images carry one to a few (one
/// per signing key during a rotation); every entry costs a signature check per trust anchor.
pub const MAX_WIN_CERTIFICATES: usize = 64;

/// Errors computing the image hash or reading the certificate table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthenticodeError {
    /// Reading the file failed.
    #[error("I/O error")]
    Io(#[from] io::Error),
    /// The headers could not be parsed.
    #[error(transparent)]
    Pe(#[from] crate::pe::PeError),
    /// The layout violates what the hash algorithm assumes.
    #[error("image cannot be hashed: {0}")]
    Layout(LayoutError),
    /// The certificate table is malformed.
    #[error("malformed certificate table at offset {offset:#x}: {reason}")]
    CertTable {
        /// File offset of the bad entry.
        offset: u64,
        /// What is wrong.
        reason: CertTableError,
    },
}

/// How an image's layout breaks the Authenticode hash's assumptions
/// ([`AuthenticodeError::Layout`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The CheckSum field is not inside the headers.
    #[error("CheckSum field ends past SizeOfHeaders ({size_of_headers:#x})")]
    ChecksumPastHeaders {
        /// SizeOfHeaders.
        size_of_headers: u64,
    },
    /// The certificate directory entry is not inside the headers.
    #[error("certificate directory entry lies past SizeOfHeaders")]
    DirectoryPastHeaders,
    /// Two sections share file bytes.
    #[error("section {name} overlaps the previous section's file data")]
    SectionOverlap {
        /// The later section.
        name: String,
    },
    /// The certificate table is not the last thing in the file.
    #[error(
        "certificate table {start:#x}..{end:#x} is not at the end of the file ({file_len:#x})"
    )]
    CertTableNotAtEnd {
        /// Table start.
        start: u64,
        /// Table end.
        end: u64,
        /// File length.
        file_len: u64,
    },
    /// The certificate table starts inside section data.
    #[error("certificate table overlaps the hashed image data")]
    CertTableOverlap,
}

/// What is wrong with the certificate table ([`AuthenticodeError::CertTable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertTableError {
    /// The table ends past the file.
    #[error("table ends at {end:#x}, past the end of the file")]
    PastEnd {
        /// Table end.
        end: u64,
    },
    /// Fewer than 8 non-zero bytes left.
    #[error("truncated WIN_CERTIFICATE header")]
    TruncatedHeader,
    /// dwLength is too small or runs past the table.
    #[error("dwLength {0} does not fit the table")]
    Length(usize),
    /// More than [`MAX_WIN_CERTIFICATES`] entries.
    #[error("more than {MAX_WIN_CERTIFICATES} WIN_CERTIFICATE entries")]
    TooMany,
}

/// The file byte ranges that make up the Authenticode hash, in hashing order.
pub fn hash_ranges(h: &PeHeaders) -> Result<Vec<Range<u64>>, AuthenticodeError> {
    let layout = AuthenticodeError::Layout;
    let soh = u64::from(h.size_of_headers);
    let cks = h.checksum_offset() as u64;
    if cks + 4 > soh {
        return Err(layout(LayoutError::ChecksumPastHeaders {
            size_of_headers: soh,
        }));
    }
    let mut ranges = Vec::with_capacity(4 + h.sections.len());
    ranges.push(0..cks);
    if h.data_directories.len() > DIR_SECURITY {
        let sd = h.data_directory_offset(DIR_SECURITY) as u64;
        if sd + 8 > soh {
            return Err(layout(LayoutError::DirectoryPastHeaders));
        }
        ranges.push(cks + 4..sd);
        ranges.push(sd + 8..soh);
    } else {
        ranges.push(cks + 4..soh);
    }

    let mut sections: Vec<_> = h
        .sections
        .iter()
        .filter(|s| s.size_of_raw_data != 0)
        .collect();
    sections.sort_by_key(|s| s.pointer_to_raw_data);
    let mut sum = soh;
    let mut prev_end = 0u64;
    for s in sections {
        // PeHeaders::parse refuses shared file bytes; headers built by hand must not slip
        // past it, or hashing would cost sections × file size.
        if u64::from(s.pointer_to_raw_data) < prev_end {
            return Err(layout(LayoutError::SectionOverlap {
                name: s.name.to_string(),
            }));
        }
        prev_end = s.raw_end();
        ranges.push(u64::from(s.pointer_to_raw_data)..s.raw_end());
        sum += u64::from(s.size_of_raw_data);
    }

    let cert_size = match h.security_directory() {
        Some(d) if d.virtual_address != 0 || d.size != 0 => {
            let start = u64::from(d.virtual_address);
            let end = start + u64::from(d.size);
            if end != h.file_len {
                return Err(layout(LayoutError::CertTableNotAtEnd {
                    start,
                    end,
                    file_len: h.file_len,
                }));
            }
            u64::from(d.size)
        }
        _ => 0,
    };
    if h.file_len > sum {
        let end = h.file_len.checked_sub(cert_size).filter(|&e| e >= sum);
        let Some(end) = end else {
            return Err(layout(LayoutError::CertTableOverlap));
        };
        if end > sum {
            ranges.push(sum..end);
        }
    }
    Ok(ranges)
}

/// Feed `ranges` of `r` to `hasher`, 1 MiB at a time.
pub fn hash_file_ranges<R: Read + Seek>(
    r: &mut R,
    ranges: &[Range<u64>],
    hasher: &mut MultiHasher,
) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    for range in ranges {
        r.seek(SeekFrom::Start(range.start))?;
        let mut left = range.end - range.start;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..n])?;
            hasher.update(&buf[..n]);
            left -= n as u64;
        }
    }
    Ok(())
}

/// Authenticode digests of a PE image, one per algorithm, computed in one pass.
///
/// ```no_run
/// use bootchain::{authenticode, hash::HashAlg};
/// let mut f = std::fs::File::open("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")?;
/// let d = authenticode::image_digests(&mut f, &[HashAlg::Sha256])?;
/// println!("{}", d[0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// ```no_run
/// use bootchain::hash::HashAlg;
/// let mut f = std::fs::File::open("uki.efi")?;
/// // What firmware measures into PCR 4 for this image, and what db/dbx hashes name.
/// let d = bootchain::authenticode::image_digests(&mut f, &[HashAlg::Sha256])?;
/// println!("{}", d[0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn image_digests<R: Read + Seek>(
    r: &mut R,
    algs: &[HashAlg],
) -> Result<Vec<Digest>, AuthenticodeError> {
    let (h, _) = PeHeaders::read(r)?;
    image_digests_with_headers(r, &h, algs)
}

/// Like [`image_digests`], with headers already parsed.
pub fn image_digests_with_headers<R: Read + Seek>(
    r: &mut R,
    h: &PeHeaders,
    algs: &[HashAlg],
) -> Result<Vec<Digest>, AuthenticodeError> {
    let ranges = hash_ranges(h)?;
    let mut mh = MultiHasher::new(algs);
    hash_file_ranges(r, &ranges, &mut mh)?;
    Ok(mh.finalize())
}

/// One WIN_CERTIFICATE entry of the attribute certificate table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WinCertificate {
    /// File offset of the entry.
    pub offset: u64,
    /// wRevision.
    pub revision: u16,
    /// wCertificateType.
    pub cert_type: u16,
    /// bCertificate: for type 2, a DER PKCS#7 ContentInfo.
    pub data: Vec<u8>,
}

impl WinCertificate {
    /// Encode with the unpadded dwLength, followed by zero padding to 8 bytes (the convention of
    /// sbsign and EDK2; see systemd #42884 for the padded-length bug).
    pub fn to_padded_bytes(&self) -> Vec<u8> {
        let len = WIN_CERT_HEADER_LEN + self.data.len();
        let mut v = Vec::with_capacity(len + 8);
        v.extend_from_slice(&(len as u32).to_le_bytes());
        v.extend_from_slice(&self.revision.to_le_bytes());
        v.extend_from_slice(&self.cert_type.to_le_bytes());
        v.extend_from_slice(&self.data);
        v.resize(crate::pe::align_up(len as u64, 8) as usize, 0);
        v
    }
}

/// Read every entry of the certificate table (empty if the image is unsigned).
pub fn read_certificates<R: Read + Seek>(
    r: &mut R,
    h: &PeHeaders,
) -> Result<Vec<WinCertificate>, AuthenticodeError> {
    let Some(dir) = h.security_directory() else {
        return Ok(Vec::new());
    };
    if dir.virtual_address == 0 || dir.size == 0 {
        return Ok(Vec::new());
    }
    let start = u64::from(dir.virtual_address);
    let end = start + u64::from(dir.size);
    if end > h.file_len {
        return Err(AuthenticodeError::CertTable {
            offset: start,
            reason: CertTableError::PastEnd { end },
        });
    }
    let table = crate::pe::read_at(r, start, dir.size as usize)?;
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < table.len() {
        let offset = start + pos as u64;
        let bad = |reason| AuthenticodeError::CertTable { offset, reason };
        if table.len() - pos < WIN_CERT_HEADER_LEN {
            // Trailing zero padding is tolerated; anything else is not.
            if table[pos..].iter().all(|&b| b == 0) {
                break;
            }
            return Err(bad(CertTableError::TruncatedHeader));
        }
        let len = u32::from_le_bytes([table[pos], table[pos + 1], table[pos + 2], table[pos + 3]])
            as usize;
        let revision = u16::from_le_bytes([table[pos + 4], table[pos + 5]]);
        let cert_type = u16::from_le_bytes([table[pos + 6], table[pos + 7]]);
        if len < WIN_CERT_HEADER_LEN || len > table.len() - pos {
            return Err(bad(CertTableError::Length(len)));
        }
        if out.len() == MAX_WIN_CERTIFICATES {
            return Err(bad(CertTableError::TooMany));
        }
        out.push(WinCertificate {
            offset,
            revision,
            cert_type,
            data: table[pos + WIN_CERT_HEADER_LEN..pos + len].to_vec(),
        });
        pos += crate::pe::align_up(len as u64, 8) as usize;
    }
    Ok(out)
}
