//! Inputs read from other files: the build host's os-release, a PE's small sections, the
//! kernel release from a bzImage.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::{input_err, UkiError};
use crate::pe::{self, PeHeaders};

/// The build host's os-release, which ukify embeds as `.osrel` when none is given
/// (os-release(5): `/etc/os-release`, else `/usr/lib/os-release`).
pub(super) fn default_os_release() -> Option<PathBuf> {
    ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Read a small section of a PE file as text, if the file is a PE with that section.
pub(super) fn pe_section_text(path: &Path, name: &str) -> Result<Option<String>, UkiError> {
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

/// Whether the kernel PE sets NX_COMPAT (pecoff "DLL Characteristics"); `None` when it is
/// not a PE we can read (ukify then leaves the stub's flag alone).
pub(super) fn nx_compat(kernel: &Path) -> Result<Option<bool>, UkiError> {
    let mut f = File::open(kernel).map_err(input_err(kernel))?;
    let Ok((h, _)) = PeHeaders::read(&mut f) else {
        return Ok(None);
    };
    let mut b = [0u8; 2];
    let at = (h.optional_header_offset + super::layout::OPT_DLL_CHARACTERISTICS) as u64;
    f.seek(SeekFrom::Start(at)).map_err(input_err(kernel))?;
    f.read_exact(&mut b).map_err(input_err(kernel))?;
    Ok(Some(u16::from_le_bytes(b) & super::layout::NX_COMPAT != 0))
}
