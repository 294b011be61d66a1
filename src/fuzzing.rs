//! Fuzz entry points: one function per `fuzz/` target, taking the fuzzer's bytes. They are
//! here, not in `fuzz/`, so that `tests/fuzz_corpus.rs` replays the committed corpora
//! (`test-vectors/fuzz/<target>/`) through exactly the same code in the normal test suite.
//!
//! Each entry runs a parser and what the CLI does with its result, ignoring errors (errors
//! are the expected outcome for most inputs), and asserts the properties that must hold for
//! every input: no panic, work bounded by the input size (checked explicitly where the bound
//! is computable, e.g. bytes hashed), and round trips where the format has an encoder.
//! Not a stable API.

use std::io::Cursor;

use crate::hash::HashAlg;

/// Split `data` at a length given by its first two bytes (little-endian), for targets that
/// take two inputs: returns (first part, rest).
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return (&[], data);
    };
    let n = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    rest.split_at(n)
}

/// Bytes the Authenticode hash of `h` reads: must stay within a small multiple of the file.
fn assert_hash_bounded(h: &crate::pe::PeHeaders) {
    if let Ok(ranges) = crate::authenticode::hash_ranges(h) {
        let total: u64 = ranges.iter().map(|r| r.end.saturating_sub(r.start)).sum();
        assert!(
            total <= 2 * h.file_len,
            "Authenticode hash reads {total} bytes of a {}-byte file",
            h.file_len
        );
    }
}

/// PE headers, UKI inspect, PCR 11 section digests, section reads.
pub fn pe_uki(data: &[u8]) {
    let len = data.len() as u64;
    if let Ok(h) = crate::pe::PeHeaders::parse(data, len) {
        assert_hash_bounded(&h);
        // Reading every section's memory costs at most the file plus the zero-fill limit.
        let memory: u64 = h.sections.iter().map(|s| u64::from(s.virtual_size)).sum();
        assert!(
            memory <= len + crate::pe::MAX_TOTAL_ZERO_FILL,
            "sections claim {memory} bytes of memory from a {len}-byte file"
        );
        let mut c = Cursor::new(data);
        for s in &h.sections {
            if let Ok(b) = crate::pe::read_section_memory(&mut c, s) {
                assert_eq!(b.len(), s.virtual_size as usize);
            }
        }
    }
    let mut c = Cursor::new(data);
    if let Ok(info) = crate::ukiread::inspect_reader(&mut c) {
        assert_eq!(info.size, len);
    }
    let mut c = Cursor::new(data);
    let _ = crate::measure::uki_sections_from(&mut c, &[HashAlg::Sha256]);
}

/// Authenticode hash, embedded signatures, and a detached signature: the first two bytes
/// give the detached signature's length, it follows, the image is the rest.
pub fn authenticode(data: &[u8]) {
    let mut c = Cursor::new(data);
    if let Ok((h, _)) = crate::pe::PeHeaders::read(&mut c) {
        assert_hash_bounded(&h);
        let _ = crate::authenticode::read_certificates(&mut c, &h);
    }
    let mut c = Cursor::new(data);
    let _ = crate::authenticode::image_digests(&mut c, &[HashAlg::Sha256, HashAlg::Sha1]);
    let mut c = Cursor::new(data);
    let _ = crate::sign::verify_reader(&mut c, None, None);
    let (detached, image) = split(data);
    let mut c = Cursor::new(image);
    let _ = crate::sign::verify_reader(&mut c, Some(detached), None);
}

/// Event log parse, serialisation round trip, replay, data checks, descriptions.
pub fn eventlog(data: &[u8]) {
    let Ok(log) = crate::eventlog::EventLog::parse(data) else {
        return;
    };
    // Round trip. Trailing events that serialise to zero bytes only (PCR 0, type 0, no
    // digests, no data) are indistinguishable from the zero padding that ends a log, so a
    // re-parse drops them; everything else must come back unchanged.
    let mut expected = log.clone();
    while let Some(e) = expected.events.last() {
        if e.pcr == 0 && e.event_type.to_u32() == 0 && e.digests.is_empty() && e.data.is_empty() {
            expected.events.pop();
        } else {
            break;
        }
    }
    let again = crate::eventlog::EventLog::parse(&log.to_bytes());
    assert_eq!(
        again.as_ref(),
        Ok(&expected),
        "to_bytes does not round-trip"
    );
    let replayed = log.replay();
    assert!(
        crate::eventlog::verify_replay(&log, &replayed).is_empty(),
        "a log does not verify against its own replay"
    );
    let _ = crate::eventlog::pcr_values_json(&replayed);
    for e in &log.events {
        let _ = crate::eventlog::EventView::of(e);
    }
    let _ = log.startup_locality();
}

/// EFI signature lists (db, dbx, KEK, PK content) and UEFI_VARIABLE_DATA.
pub fn efi_vars(data: &[u8]) {
    if let Ok(lists) = crate::firmware::parse_signature_lists(data) {
        let enc = crate::firmware::encode_signature_lists(&lists);
        assert_eq!(
            crate::firmware::parse_signature_lists(&enc).as_ref().ok(),
            Some(&lists),
            "signature lists do not round-trip"
        );
        for l in &lists {
            for e in &l.entries {
                let _ = crate::keys::certificate_from_bytes(&e.data, "db entry");
            }
        }
    }
    if let Ok(v) = crate::firmware::VariableData::parse(data) {
        let again = crate::firmware::VariableData::parse(&v.to_bytes());
        assert!(again.is_ok(), "UEFI_VARIABLE_DATA does not re-parse");
    }
}

#[cfg(feature = "tpm")]
/// What `unseal` is given besides the envelope or token: a PIN and an (empty) signature set,
/// so that PIN and signed policies get as far as they can without a TPM.
const FUZZ_PIN: &[u8] = b"1234";

#[cfg(feature = "luks")]
/// Every check `unlock` makes on a systemd-tpm2 token before the TPM.
fn prepare_token(t: &crate::token::SystemdTpm2Token) {
    let sigs = crate::measure::PcrSignatures::new();
    // systemd-pcrlock 257's policy file, so pcrlock tokens get as far as they can.
    let pcrlock = crate::pcrlock::PcrlockPolicy::from_json(include_bytes!(
        "../test-vectors/pcrlock/policy-pcr12-pcr13.json"
    ))
    .ok();
    let with = crate::seal::UnsealOptions {
        signatures: Some(&sigs),
        pin: Some(FUZZ_PIN),
        pcrlock: pcrlock.as_ref(),
    };
    let _ = crate::token::prepare(t, &with);
    let _ = crate::token::prepare(t, &crate::seal::UnsealOptions::default());
}

#[cfg(feature = "tpm")]
/// Every check `unseal` makes on an envelope before the TPM.
fn prepare_envelope(env: &crate::seal::Envelope) {
    let sigs = crate::measure::PcrSignatures::new();
    let with = crate::seal::UnsealOptions {
        signatures: Some(&sigs),
        pin: Some(FUZZ_PIN),
        pcrlock: None,
    };
    let _ = crate::seal::prepare_unseal(env, &with);
    let _ = crate::seal::prepare_unseal(env, &crate::seal::UnsealOptions::default());
}

#[cfg(feature = "luks")]
/// A systemd-tpm2 LUKS2 token (JSON), its fields, raw `tpm2-blob` bytes, and the checks made
/// before the TPM.
pub fn token(data: &[u8]) {
    let _ = crate::token::unmarshal_blob(data);
    // An SRK public area given to offline sealing (--tpm2-device-key).
    let _ = crate::tpm_import::ParentPublic::from_tpm2b_public(data);
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = crate::token::token_policy_pcrs(&v);
    // systemd-pcrlock's policy file (read from /run or /var/lib in the initramfs).
    if let Ok(p) = crate::pcrlock::PcrlockPolicy::from_json(data) {
        let _ = p.super_pcr();
        let _ = p.nv_name();
    }
    let Ok(t) = crate::token::SystemdTpm2Token::from_json(&v) else {
        return;
    };
    prepare_token(&t);
    let _ = t.bank();
    let _ = t.parent();
    let _ = t.public_key();
    use base64::Engine as _;
    if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(&t.blob) {
        if let Ok((private, public, seed)) = crate::token::unmarshal_blob(&b) {
            let seed = seed.map_or(0, |s| s.len() + 2);
            assert_eq!(private.len() + public.len() + 4 + seed, b.len());
        }
    }
}

#[cfg(feature = "tpm")]
/// An envelope (`bootchain seal` output), and the checks `unseal` makes before the TPM.
pub fn envelope(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(env) = crate::seal::Envelope::from_json(text) else {
        return;
    };
    prepare_envelope(&env);
    let _ = env.needs_pin();
    let _ = env.needs_signatures();
    // Serialising and reading back gives the same envelope.
    if let Ok(json) = serde_json::to_string(&env) {
        assert_eq!(
            crate::seal::Envelope::from_json(&json).ok().as_ref(),
            Some(&env),
            "an envelope does not round-trip"
        );
    }
    if let Some(a) = &env.policy.authorize {
        if let Ok(k) = crate::measure::rsa_public_key_from_pem(a.public_key.as_bytes()) {
            let _ = crate::policy::rsa_public_area(&k);
        }
    }
}

#[cfg(feature = "luks")]
/// A LUKS2 JSON metadata area as `cryptsetup luksDump --dump-json-metadata` prints it (the
/// host writes the header): keyslots, tokens, data offset, every TPM2 token of either type as
/// `luks unlock` reads it up to the TPM; also `luksDump --dump-volume-key` output.
pub fn luks_header(data: &[u8]) {
    let _ = crate::luks::parse_volume_key_dump(data);
    // The binary header (two copies, checksums) in front of the JSON area.
    if let Ok(json) = crate::luks::header::read_json(&mut Cursor::new(data)) {
        assert!(json.len() < data.len());
        luks_header(&json);
    }
    let Ok(md) = crate::luks::Metadata::parse(data) else {
        return;
    };
    assert!(md.keyslots.len() <= 32 && md.tokens.len() <= 32);
    let _ = (md.free_keyslot(), md.free_token());
    for (_, v) in md.tokens_of_type(crate::token::TOKEN_TYPE) {
        let _ = crate::token::token_policy_pcrs(v);
        if let Ok(t) = crate::token::SystemdTpm2Token::from_json(v) {
            prepare_token(&t);
        }
    }
    for (_, v) in md.tokens_of_type(crate::token::BOOTCHAIN_TOKEN_TYPE) {
        let _ = crate::token::token_policy_pcrs(v);
        if let Ok(env) = crate::token::envelope_of(v) {
            prepare_envelope(&env);
        }
    }
}

/// `.pcrsig` JSON: parse, merge, serialise, round trip.
pub fn pcrsig(data: &[u8]) {
    let Ok(sigs) = crate::measure::parse_signatures(data) else {
        return;
    };
    let json = crate::measure::signatures_json(&sigs).to_string();
    let again = crate::measure::parse_signatures(json.as_bytes());
    assert!(again.is_ok(), "signatures_json output does not parse");
    let mut merged = sigs.clone();
    crate::measure::merge_signatures(&mut merged, sigs);
}

/// Private keys, certificates and public keys, PEM or DER.
pub fn keys(data: &[u8]) {
    if let Ok(k) = crate::keys::SigningKey::from_bytes(data, "fuzz") {
        let _ = k.public_key().describe();
    }
    if let Ok(c) = crate::keys::certificate_from_bytes(data, "fuzz") {
        let _ = crate::keys::PublicKey::from_certificate(&c);
    }
    let _ = crate::keys::PublicKey::from_spki_der(data);
    let _ = crate::measure::rsa_public_key_from_pem(data);
}

/// A fuzz entry point.
pub type Entry = fn(&[u8]);

/// Every target by name, for the corpus replay test.
#[cfg(feature = "luks")]
pub const TARGETS: &[(&str, Entry)] = &[
    ("pe_uki", pe_uki),
    ("authenticode", authenticode),
    ("eventlog", eventlog),
    ("efi_vars", efi_vars),
    ("token", token),
    ("envelope", envelope),
    ("pcrsig", pcrsig),
    ("keys", keys),
    ("luks_header", luks_header),
];

/// Every target by name, for the corpus replay test.
#[cfg(not(feature = "luks"))]
pub const TARGETS: &[(&str, Entry)] = &[
    ("pe_uki", pe_uki),
    ("authenticode", authenticode),
    ("eventlog", eventlog),
    ("efi_vars", efi_vars),
    ("pcrsig", pcrsig),
    ("keys", keys),
];
