//! Attaching PCR signatures made elsewhere (ukify `--join-pcrsig UKI --pcrsig JSON`, systemd
//! 258 on): the PCR private key never has to be on the build machine.
//!
//! ukify (systemd 262 `src/ukify/ukify.py`, `pe_add_sections` with `opts.pcrsig`) takes the
//! UKI built with `--policy-digest` as its base, reads the `.pcrsig` JSON it holds, copies each
//! `sig` of the given JSON into the entry with the same bank and `tbs` (else `pol` and `ref`)
//! and writes the result over the old content, which must fit in the section's raw size (the
//! `--policy-digest` build padded it). It checks nothing else. Here the signatures are checked
//! before anything is written: they must be by the UKI's PCR public key, over PCR 11 policies
//! predicted from the UKI's own measured sections, and every policy the UKI lists must end up
//! signed. The written entries are what `systemd-measure sign` writes (no `tbs`), so the
//! section has the same bytes as a direct `--pcr-private-key` build.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use serde::Serialize;
use x509_cert::Certificate;

use super::{pcrsig_text, Layout};
use crate::hash::HashAlg;
use crate::measure::{self, MeasureError, PcrSigVerifyError, PcrSignatures, Phase, StubRules};
use crate::pe::{self, PeHeaders, SECTION_HEADER_LEN};
use crate::sign::{SignError, SignOptions};
use crate::signer::Signer;

/// Why [`join_pcrsig`] refused or failed. Nothing is written then.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The UKI could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The UKI.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Not a PE image.
    #[error("{path}: not a usable PE image")]
    Pe {
        /// The UKI.
        path: PathBuf,
        /// Why.
        #[source]
        source: pe::PeError,
    },
    /// The UKI is Authenticode-signed: changing `.pcrsig` would break the signature (sign
    /// after joining).
    #[error("{0} is already signed for Secure Boot; join the PCR signatures before signing")]
    Signed(PathBuf),
    /// No `.pcrsig` to fill (ukify 258 then silently writes nothing).
    #[error("{0} has no .pcrsig section; build it with --policy-digest")]
    NoPcrsig(PathBuf),
    /// Several `.pcrsig` sections (a multi-profile UKI): not supported yet.
    #[error("{0} has several .pcrsig sections (profiles); joining those is not supported yet")]
    Profiles(PathBuf),
    /// No public key to check the signatures with.
    #[error("no PCR public key: the UKI has no .pcrpkey and none was given")]
    NoPublicKey,
    /// The given public key is not the UKI's `.pcrpkey`.
    #[error("the PCR public key given is not the UKI's .pcrpkey")]
    PcrpkeyMismatch,
    /// The UKI's `.pcrpkey`, or its `.pcrsig`, could not be read, or PCR 11 predicted.
    #[error("{what} of the UKI")]
    Uki {
        /// What.
        what: &'static str,
        /// Why.
        #[source]
        source: MeasureError,
    },
    /// A signature is refused.
    #[error("the PCR signatures do not belong to this UKI")]
    Verify(#[from] PcrSigVerifyError),
    /// A policy the UKI lists got no signature.
    #[error("{bank} policy {pol} of the UKI is not signed by the JSON given")]
    Unsigned {
        /// The bank.
        bank: HashAlg,
        /// The policy digest.
        pol: String,
    },
    /// The signed JSON does not fit in the `.pcrsig` section.
    #[error(".pcrsig holds {room} bytes, the signed JSON needs {len}")]
    TooLarge {
        /// The section's raw size.
        room: u32,
        /// The JSON's length.
        len: usize,
    },
    /// Writing the output failed.
    #[error("cannot write {path}")]
    Output {
        /// The output.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Secure Boot signing of the output failed.
    #[error("signing the joined UKI")]
    Sign(#[source] SignError),
}

/// A section whose data lies past the end of the file.
fn truncated(needed: usize, len: usize) -> pe::PeError {
    pe::PeError::Truncated {
        what: "section data",
        needed: needed as u64,
        len: len as u64,
    }
}

/// What to join.
#[derive(Clone, Debug, Default)]
pub struct JoinPcrsig {
    /// The signed `.pcrsig` JSON made elsewhere.
    pub signatures: PcrSignatures,
    /// The PCR public key; must equal `.pcrpkey` when the UKI has one.
    pub public_key: Option<rsa::RsaPublicKey>,
    /// Phase paths signatures may be for, besides systemd-measure's four default phases and
    /// the initrd phases.
    pub phases: Vec<Phase>,
}

/// What [`join_pcrsig`] wrote.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct JoinReport {
    /// The output.
    pub output: PathBuf,
    /// The new `.pcrsig` text.
    pub pcrsig: String,
    /// Signatures checked.
    pub signatures: usize,
    /// Whether the output is Authenticode-signed.
    pub signed: bool,
}

/// Fill the `.pcrsig` of `uki` (built with [`super::PcrPolicyDigests`]) with the signatures of
/// `req` after checking them, and write the result to `output` atomically (signed for Secure
/// Boot with `signer`).
pub fn join_pcrsig(
    uki: &Path,
    req: &JoinPcrsig,
    output: &Path,
    signer: Option<(&dyn Signer, &Certificate, &SignOptions)>,
) -> Result<JoinReport, JoinError> {
    let mut data = std::fs::read(uki).map_err(|source| JoinError::Read {
        path: uki.to_path_buf(),
        source,
    })?;
    let pe_err = |source| JoinError::Pe {
        path: uki.to_path_buf(),
        source,
    };
    let h = PeHeaders::parse(&data, data.len() as u64).map_err(pe_err)?;
    if h.is_signed() {
        return Err(JoinError::Signed(uki.to_path_buf()));
    }
    let idx = match h
        .sections
        .iter()
        .enumerate()
        .filter(|(_, s)| s.name.as_str() == ".pcrsig")
        .map(|(i, _)| i)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => return Err(JoinError::NoPcrsig(uki.to_path_buf())),
        [i] => *i,
        _ => return Err(JoinError::Profiles(uki.to_path_buf())),
    };
    let sect = h.sections[idx];
    let raw = |s: &pe::SectionHeader| -> Result<&[u8], JoinError> {
        let start = s.pointer_to_raw_data as usize;
        data.get(start..start + s.loaded_file_len() as usize)
            .ok_or_else(|| pe_err(truncated(start + s.loaded_file_len() as usize, data.len())))
    };
    let uki_err = |what| move |source| JoinError::Uki { what, source };

    // The key: the UKI's .pcrpkey and the one given must agree.
    let pcrpkey = match h.section(".pcrpkey") {
        Some(s) => Some(measure::rsa_public_key_from_pem(raw(s)?).map_err(uki_err(".pcrpkey"))?),
        None => None,
    };
    let key = match (&pcrpkey, &req.public_key) {
        (Some(a), Some(b)) if a != b => return Err(JoinError::PcrpkeyMismatch),
        (Some(k), _) | (None, Some(k)) => k.clone(),
        (None, None) => return Err(JoinError::NoPublicKey),
    };
    let mut listed = measure::parse_signatures(raw(&sect)?).map_err(uki_err(".pcrsig"))?;

    // PCR 11 policies predicted from the UKI's own sections, with its stub's rules.
    let mut banks: Vec<HashAlg> = Vec::new();
    for (b, _) in req.signatures.iter().chain(listed.iter()) {
        if !banks.contains(b) {
            banks.push(*b);
        }
    }
    let mut phases: Vec<Phase> = Phase::list(measure::DEFAULT_PHASES)
        .map_err(|e| JoinError::Uki {
            what: "phases",
            source: e.into(),
        })?
        .into_iter()
        .chain(Phase::initrd())
        .chain(req.phases.iter().cloned())
        .collect();
    phases.sort();
    phases.dedup();
    let (sections, version) =
        measure::uki_sections_from(&mut Cursor::new(&data), &banks).map_err(uki_err("sections"))?;
    let major = version
        .as_deref()
        .and_then(measure::stub_major)
        .ok_or_else(|| JoinError::Uki {
            what: "stub version",
            source: MeasureError::NoStubVersion(uki.to_path_buf()),
        })?;
    let pred = measure::predict_pcr11(&sections, Some(StubRules::new(major)), &banks, &phases);
    let predicted = measure::pcr11_policies(&pred).map_err(uki_err("PCR 11 policies"))?;

    measure::verify_signatures(&req.signatures, &key, &predicted)?;
    // What the UKI lists must be its own policies too (its .pcrsig is not measured).
    for (bank, entries) in &listed {
        for e in entries {
            let ok = e.is_predicted(*bank, &predicted).unwrap_or(false);
            if !ok {
                return Err(PcrSigVerifyError::OtherPolicy {
                    bank: *bank,
                    pol: e.pol.clone(),
                }
                .into());
            }
        }
    }
    if listed.iter().all(|(_, e)| e.is_empty()) {
        listed = req.signatures.clone();
    } else if let Some((bank, pol)) = measure::apply_signatures(&mut listed, &req.signatures)
        .into_iter()
        .next()
    {
        return Err(JoinError::Unsigned { bank, pol });
    }
    for e in listed.iter_mut().flat_map(|(_, e)| e.iter_mut()) {
        e.tbs = None;
    }
    let text = pcrsig_text(&listed, Layout::for_stub(major));
    if text.len() > sect.size_of_raw_data as usize {
        return Err(JoinError::TooLarge {
            room: sect.size_of_raw_data,
            len: text.len(),
        });
    }

    // In place, as ukify: content and zero padding, VirtualSize, CheckSum 0, SizeOfImage.
    let start = sect.pointer_to_raw_data as usize;
    let end = start + sect.size_of_raw_data as usize;
    let len = data.len();
    let slot = data
        .get_mut(start..end)
        .ok_or_else(|| pe_err(truncated(end, len)))?;
    slot.fill(0);
    slot[..text.len()].copy_from_slice(text.as_bytes());
    let mut new = sect;
    new.virtual_size = text.len() as u32;
    let at = h.section_table_offset + idx * SECTION_HEADER_LEN;
    data[at..at + SECTION_HEADER_LEN].copy_from_slice(&new.to_bytes());
    let mut sections = h.sections.clone();
    sections[idx] = new;
    let virtual_end = sections.iter().map(|s| s.virtual_end()).max().unwrap_or(0);
    let size_of_image = pe::align_up(virtual_end, u64::from(h.section_alignment)) as u32;
    // SizeOfImage is at offset 56 of the optional header in PE32 and PE32+ alike.
    let soi = h.optional_header_offset + 56;
    data[soi..soi + 4].copy_from_slice(&size_of_image.to_le_bytes());
    let ck = h.checksum_offset();
    data[ck..ck + 4].copy_from_slice(&0u32.to_le_bytes());

    let out_err = |source| JoinError::Output {
        path: output.to_path_buf(),
        source,
    };
    match signer {
        None => crate::fsutil::write_atomic(output, &data, 0o644).map_err(out_err)?,
        Some((k, c, o)) => {
            let dir = match output.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let tmp = tempfile::NamedTempFile::new_in(dir).map_err(out_err)?;
            std::fs::write(tmp.path(), &data).map_err(out_err)?;
            crate::sign::sign_file(tmp.path(), output, k, c, o).map_err(JoinError::Sign)?;
        }
    }
    Ok(JoinReport {
        output: output.to_path_buf(),
        pcrsig: text,
        signatures: req.signatures.iter().map(|(_, e)| e.len()).sum(),
        signed: signer.is_some(),
    })
}
