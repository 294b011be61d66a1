//! The LUKS2 binary header, read in process: the JSON metadata area of the newer of its two
//! intact copies (LUKS2 On-Disk Format Specification v1.1.1, §2 "binary header", §3.1
//! "header area"), so that reading keyslots and tokens costs a read, not a `cryptsetup
//! luksDump` process (enrollment and the initramfs both read the header first).
//!
//! What the host wrote is checked before use: magic and version, a header size from the
//! specification's list, and each copy's checksum; memory is bounded by the largest allowed
//! header size (4 MiB), whatever the device says.

use std::io::{self, Read, Seek, SeekFrom};

use sha2::Digest as _;

/// Magic of the primary and secondary binary headers (§2, `LUKS2_MAGIC_1ST/2ND`).
const MAGIC_1ST: [u8; 6] = *b"LUKS\xba\xbe";
const MAGIC_2ND: [u8; 6] = *b"SKUL\xba\xbe";
/// Size of the binary part of each header copy (§2).
const BINARY_LEN: usize = 4096;
/// Allowed sizes of a header copy, binary part plus JSON area (§2, `hdr_size`).
const HDR_SIZES: [u64; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];
/// Field offsets in the binary header (§2, `struct luks2_hdr_disk`).
const OFF_VERSION: usize = 6;
const OFF_HDR_SIZE: usize = 8;
const OFF_SEQID: usize = 16;
const OFF_CSUM_ALG: usize = 72;
const CSUM_ALG_LEN: usize = 32;
const OFF_HDR_OFFSET: usize = 256;
const OFF_CSUM: usize = 448;
const CSUM_LEN: usize = 64;

/// Why no LUKS2 header could be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// Reading the device failed.
    #[error("reading the header")]
    Io(#[source] io::Error),
    /// No LUKS2 magic and version 2 at offset 0 (not LUKS, or LUKS1).
    #[error("no LUKS2 header (magic/version)")]
    NotLuks2,
    /// Neither copy is intact.
    #[error("both LUKS2 header copies are damaged ({primary}; {secondary})")]
    Damaged {
        /// What is wrong with the primary copy.
        primary: &'static str,
        /// What is wrong with the secondary copy.
        secondary: &'static str,
    },
}

/// One header copy, checked: its sequence id and JSON text.
struct Copy {
    seqid: u64,
    json: Vec<u8>,
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(v)
}

/// Reads and checks the copy at `offset` (with `magic`); `Err` says why it does not count.
fn read_copy<R: Read + Seek>(
    r: &mut R,
    offset: u64,
    magic: &[u8; 6],
    expected_size: Option<u64>,
) -> Result<Result<(Copy, u64), &'static str>, io::Error> {
    let mut bin = vec![0u8; BINARY_LEN];
    r.seek(SeekFrom::Start(offset))?;
    if let Err(e) = r.read_exact(&mut bin) {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => Ok(Err("truncated")),
            _ => Err(e),
        };
    }
    if bin[..6] != magic[..] || bin[OFF_VERSION..OFF_VERSION + 2] != [0, 2] {
        return Ok(Err("no magic"));
    }
    let size = be64(&bin, OFF_HDR_SIZE);
    if !HDR_SIZES.contains(&size) || expected_size.is_some_and(|s| s != size) {
        return Ok(Err("bad header size"));
    }
    if be64(&bin, OFF_HDR_OFFSET) != offset {
        return Ok(Err("wrong header offset"));
    }
    let alg = &bin[OFF_CSUM_ALG..OFF_CSUM_ALG + CSUM_ALG_LEN];
    let alg_len = alg.iter().position(|b| *b == 0).unwrap_or(CSUM_ALG_LEN);
    // cryptsetup writes sha256; other algorithms are accepted by the format but not by us.
    if &alg[..alg_len] != b"sha256" {
        return Ok(Err("checksum algorithm is not sha256"));
    }
    let mut area = bin;
    // `size` is at most 4 MiB (HDR_SIZES).
    area.resize(size as usize, 0);
    if let Err(e) = r.read_exact(&mut area[BINARY_LEN..]) {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof => Ok(Err("truncated")),
            _ => Err(e),
        };
    }
    let mut stored = [0u8; CSUM_LEN];
    stored.copy_from_slice(&area[OFF_CSUM..OFF_CSUM + CSUM_LEN]);
    area[OFF_CSUM..OFF_CSUM + CSUM_LEN].fill(0);
    let sum = sha2::Sha256::digest(&area);
    if stored[..32] != sum[..] || stored[32..].iter().any(|b| *b != 0) {
        return Ok(Err("checksum mismatch"));
    }
    let seqid = be64(&area, OFF_SEQID);
    let json = &area[BINARY_LEN..];
    let end = json.iter().position(|b| *b == 0).unwrap_or(json.len());
    Ok(Ok((
        Copy {
            seqid,
            json: json[..end].to_vec(),
        },
        size,
    )))
}

/// The JSON metadata text of the header on `r`: the intact copy with the higher sequence id
/// (the primary when equal), as cryptsetup chooses it.
pub fn read_json<R: Read + Seek>(r: &mut R) -> Result<Vec<u8>, HeaderError> {
    let primary = read_copy(r, 0, &MAGIC_1ST, None).map_err(HeaderError::Io)?;
    // The secondary copy sits right after the primary (§2: at hdr_size); with a damaged
    // primary, try every allowed size.
    let secondary = match &primary {
        Ok((_, size)) => read_copy(r, *size, &MAGIC_2ND, Some(*size)).map_err(HeaderError::Io)?,
        Err(_) => {
            let mut found = Err("no magic");
            for size in HDR_SIZES {
                let c = read_copy(r, size, &MAGIC_2ND, Some(size)).map_err(HeaderError::Io)?;
                if c.is_ok() {
                    found = c;
                    break;
                }
            }
            found
        }
    };
    match (primary, secondary) {
        (Ok((p, _)), Ok((s, _))) => Ok(if s.seqid > p.seqid { s.json } else { p.json }),
        (Ok((p, _)), Err(_)) => Ok(p.json),
        (Err(_), Ok((s, _))) => Ok(s.json),
        // No copy with a LUKS2 magic anywhere a secondary may sit: not LUKS2 at all (told
        // apart from a damaged primary whose secondary is at any allowed offset).
        (Err("no magic" | "truncated"), Err("no magic" | "truncated")) => {
            Err(HeaderError::NotLuks2)
        }
        (Err(primary), Err(secondary)) => Err(HeaderError::Damaged { primary, secondary }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal two-copy header with `json` in both, the secondary's seqid `seq2`.
    fn header(json: &str, seq2: u64) -> Vec<u8> {
        let size = 0x4000usize;
        let mut out = Vec::new();
        for (i, (magic, seq)) in [(MAGIC_1ST, 1u64), (MAGIC_2ND, seq2)].iter().enumerate() {
            let mut a = vec![0u8; size];
            a[..6].copy_from_slice(magic);
            a[OFF_VERSION..OFF_VERSION + 2].copy_from_slice(&[0, 2]);
            a[OFF_HDR_SIZE..OFF_HDR_SIZE + 8].copy_from_slice(&(size as u64).to_be_bytes());
            a[OFF_SEQID..OFF_SEQID + 8].copy_from_slice(&seq.to_be_bytes());
            a[OFF_CSUM_ALG..OFF_CSUM_ALG + 6].copy_from_slice(b"sha256");
            a[OFF_HDR_OFFSET..OFF_HDR_OFFSET + 8]
                .copy_from_slice(&((i * size) as u64).to_be_bytes());
            let j = format!("{json}{seq}");
            a[BINARY_LEN..BINARY_LEN + j.len()].copy_from_slice(j.as_bytes());
            let sum = sha2::Sha256::digest(&a);
            a[OFF_CSUM..OFF_CSUM + 32].copy_from_slice(&sum);
            out.extend(a);
        }
        out
    }

    #[test]
    fn newer_intact_copy_wins() {
        let h = header("{}", 2);
        assert_eq!(read_json(&mut io::Cursor::new(&h)).unwrap(), b"{}2");
        let h = header("{}", 0);
        assert_eq!(read_json(&mut io::Cursor::new(&h)).unwrap(), b"{}1");
        // A damaged primary: the secondary.
        let mut h = header("{}", 0);
        h[BINARY_LEN] ^= 1;
        assert_eq!(read_json(&mut io::Cursor::new(&h)).unwrap(), b"{}0");
        h[0] = 0;
        assert_eq!(read_json(&mut io::Cursor::new(&h)).unwrap(), b"{}0");
        // Both damaged.
        h[0x4000 + BINARY_LEN] ^= 1;
        assert!(matches!(
            read_json(&mut io::Cursor::new(&h)),
            Err(HeaderError::NotLuks2)
        ));
        let mut h = header("{}", 0);
        h[BINARY_LEN] ^= 1;
        h[0x4000 + BINARY_LEN] ^= 1;
        assert!(matches!(
            read_json(&mut io::Cursor::new(&h)),
            Err(HeaderError::Damaged { .. })
        ));
        // A header cryptsetup 2.6 (Debian 12) wrote: `luksFormat --type luks2` of a 32 MiB
        // file, its first 32 KiB (both copies).
        let real =
            include_bytes!("../../test-vectors/fuzz/luks_header/luks2-header-cryptsetup-2.6");
        let md =
            super::super::Metadata::parse(&read_json(&mut io::Cursor::new(real)).unwrap()).unwrap();
        assert_eq!(md.keyslots.keys().copied().collect::<Vec<_>>(), [0]);
        assert_eq!(md.data_offset, Some(16 << 20));
        // Not LUKS at all, and short input.
        assert!(matches!(
            read_json(&mut io::Cursor::new(vec![0u8; 100])),
            Err(HeaderError::NotLuks2)
        ));
    }
}
