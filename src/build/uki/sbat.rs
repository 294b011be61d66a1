//! The UKI's `.sbat`: the stub's, the kernel's and the user's entries merged into one text
//! (shim `SBAT.md`; ukify `merge_sbat`).

use std::path::Path;

use super::inputs::pe_section_text;
use super::{SectionContent, UkiError};

/// The SBAT header line that must come first (shim `SBAT.md`).
pub const SBAT_HEADER: &str =
    "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md";
/// The entry ukify adds when no SBAT is given.
pub const DEFAULT_UKI_SBAT: &str =
    "uki,1,UKI,uki,1,https://uapi-group.org/specifications/specs/unified_kernel_image/";

/// Where SBAT text came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SbatSource {
    /// The stub's `.sbat`.
    Stub,
    /// The kernel's `.sbat`.
    Kernel,
    /// ukify's default entry.
    Default,
    /// SBAT text given to the builder.
    User,
}

impl std::fmt::Display for SbatSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SbatSource::Stub => "stub .sbat",
            SbatSource::Kernel => "kernel .sbat",
            SbatSource::Default => "default",
            SbatSource::User => "the SBAT text",
        })
    }
}

/// Bad SBAT input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SbatError {
    /// The first line is not the `sbat,` header.
    #[error("{0} must start with an \"sbat,\" header line")]
    NoHeader(SbatSource),
    /// An entry has fewer than the six CSV fields `SBAT.md` requires.
    #[error("{source_of}: entry {entry:?} needs 6 comma-separated fields")]
    ShortEntry {
        /// Where it came from.
        source_of: SbatSource,
        /// The entry.
        entry: String,
    },
    /// The text is not UTF-8.
    #[error("the SBAT text is not UTF-8")]
    NotUtf8(#[source] std::string::FromUtf8Error),
    /// `.sbat` was given as an extra section; it must go through the merge.
    #[error("give SBAT entries as SBAT content (UkiBuilder::sbat), not as an extra section")]
    ExtraSection,
}

/// Merge the stub's, the kernel's and the user's SBAT entries (`default_entry` when the user
/// gives none) under one header.
pub(super) fn merge(
    stub: Option<&str>,
    kernel: Option<&Path>,
    user: &[SectionContent],
    default_entry: &str,
) -> Result<String, UkiError> {
    let mut entries: Vec<String> = Vec::new();
    // Non-strict sources without a header are skipped; strict ones are errors.
    let mut take = |text: &str, from: SbatSource, strict: bool| -> Result<(), SbatError> {
        let text = text.trim_end_matches('\0');
        let mut lines = text.lines();
        match lines.next() {
            Some(first) if first.starts_with("sbat,") => {}
            _ if !strict => return Ok(()),
            _ => return Err(SbatError::NoHeader(from)),
        }
        for l in lines.filter(|l| !l.trim().is_empty()) {
            if l.split(',').count() < 6 {
                return Err(SbatError::ShortEntry {
                    source_of: from,
                    entry: l.to_string(),
                });
            }
            entries.push(l.to_string());
        }
        Ok(())
    };
    if let Some(t) = stub {
        take(t, SbatSource::Stub, false)?;
    }
    if let Some(l) = kernel {
        if let Some(t) = pe_section_text(l, ".sbat")? {
            take(&t, SbatSource::Kernel, false)?;
        }
    }
    if user.is_empty() {
        take(
            &format!("{SBAT_HEADER}\n{default_entry}\n"),
            SbatSource::Default,
            true,
        )?;
    }
    for c in user {
        let text = String::from_utf8(c.read_all()?).map_err(SbatError::NotUtf8)?;
        take(&text, SbatSource::User, true)?;
    }
    Ok(format!("{SBAT_HEADER}\n{}\n\0", entries.join("\n")))
}
