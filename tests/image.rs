//! Image side, judged by the peer tools: UKI assembly (objdump, objcopy), Authenticode hash
//! (pesign -h, osslsigncode), signatures (sbverify, osslsigncode verify, sbsign).

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use bootchain::authenticode;
use bootchain::hash::HashAlg;
use bootchain::keys::{load_certificate, SigningKey};
use bootchain::pe::PeHeaders;
use bootchain::sign::{self, SignOptions};
use bootchain::uki::{self, SectionContent, UkiBuilder};
use common::*;

struct Built {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    uki: PathBuf,
    initrd_a: Vec<u8>,
    initrd_b: Vec<u8>,
    key: PathBuf,
    crt: PathBuf,
}

const CMDLINE: &str = "console=ttyS0 root=/dev/vda2 ro quiet";
const OSREL: &str = "ID=bootchain-test\nVERSION_ID=1\nPRETTY_NAME=\"bootchain test\"\n";

fn builder(dir: &Path) -> UkiBuilder {
    UkiBuilder::new()
        .stub(require_stub())
        .linux(kernel())
        .initrd(dir.join("a.cpio"))
        .initrd(dir.join("b.cpio"))
        .cmdline(SectionContent::Bytes(CMDLINE.as_bytes().to_vec()))
        .os_release(SectionContent::Bytes(OSREL.as_bytes().to_vec()))
}

/// An unsigned UKI from the Debian stub, a real Debian kernel, two initrds (the first of an
/// odd length, to exercise the 4-byte padding), a command line and os-release.
fn build_unsigned() -> Built {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let initrd_a = pseudo_random(300_001, 1);
    let initrd_b = pseudo_random(70_000, 2);
    std::fs::write(dir.join("a.cpio"), &initrd_a).unwrap();
    std::fs::write(dir.join("b.cpio"), &initrd_b).unwrap();
    let (key, crt) = make_key(&dir, "db", "rsa:2048");
    let uki = dir.join("uki.efi");
    builder(&dir).build(&uki).expect("build");
    Built {
        _dir: d,
        dir,
        uki,
        initrd_a,
        initrd_b,
        key,
        crt,
    }
}

fn section_bytes(path: &Path, name: &str) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    let (h, _) = PeHeaders::read(&mut f).unwrap();
    let s = h.section(name).unwrap_or_else(|| panic!("{name} missing"));
    bootchain::pe::read_section_memory(&mut f, s).unwrap()
}

fn pesign_hash(path: &Path) -> String {
    let out = run_ok(Command::new("pesign").arg("-h").arg("-i").arg(path));
    out.trim()
        .strip_prefix("hash: ")
        .unwrap_or_else(|| panic!("pesign -h said {out:?}"))
        .to_string()
}

fn our_hash(path: &Path) -> String {
    let mut f = File::open(path).unwrap();
    authenticode::image_digests(&mut f, &[HashAlg::Sha256]).unwrap()[0].to_hex()
}

fn sbverify(path: &Path, cert: &Path) -> bool {
    run(Command::new("sbverify").arg("--cert").arg(cert).arg(path))
        .status
        .success()
}

fn osslsigncode_verify(path: &Path, cert: &Path) -> (bool, String) {
    let out = run(Command::new("osslsigncode")
        .args(["verify", "-CAfile"])
        .arg(cert)
        .arg("-in")
        .arg(path));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn our_verify(path: &Path, cert: &Path) -> bool {
    let c = load_certificate(cert).unwrap();
    match sign::verify_file(path, None, Some(&c)) {
        Ok(r) => r.passed(true),
        Err(_) => false,
    }
}

/// Our verification's report on the first signer, or the error's text.
fn our_first_signer(path: &Path, cert: &Path) -> Result<sign::SignerReport, String> {
    let c = load_certificate(cert).unwrap();
    let r = sign::verify_file(path, None, Some(&c)).map_err(|e| e.to_string())?;
    r.signers
        .into_iter()
        .next()
        .ok_or_else(|| "no signer".into())
}

fn sign_ours(src: &Path, dst: &Path, key: &Path, crt: &Path) {
    let k = SigningKey::from_file(key).unwrap();
    let c = load_certificate(crt).unwrap();
    sign::sign_file(src, dst, &k, &c, &SignOptions::default()).unwrap();
}

#[test]
fn sections_read_back_equal_inputs_and_objdump_lists_them() {
    require_tool("objdump");
    require_tool("objcopy");
    let b = build_unsigned();
    assert_eq!(section_bytes(&b.uki, ".cmdline"), CMDLINE.as_bytes());
    assert_eq!(section_bytes(&b.uki, ".osrel"), OSREL.as_bytes());
    assert_eq!(
        section_bytes(&b.uki, ".linux"),
        std::fs::read(kernel()).unwrap()
    );
    // Two initrds: concatenated in order, each padded to 4 bytes (ukify join_initrds).
    let mut want = b.initrd_a.clone();
    want.resize(want.len().div_ceil(4) * 4, 0);
    want.extend_from_slice(&b.initrd_b);
    want.resize(want.len().div_ceil(4) * 4, 0);
    assert_eq!(section_bytes(&b.uki, ".initrd"), want);
    let uname = String::from_utf8(section_bytes(&b.uki, ".uname")).unwrap();
    assert!(
        kernel().to_string_lossy().ends_with(&uname),
        "uname {uname:?} not taken from the kernel"
    );
    let sbat = String::from_utf8(section_bytes(&b.uki, ".sbat")).unwrap();
    assert!(sbat.starts_with(uki::SBAT_HEADER));
    assert!(
        sbat.contains("\nsystemd,1,"),
        "stub SBAT not merged: {sbat}"
    );
    assert!(sbat.contains(uki::DEFAULT_UKI_SBAT));
    assert!(sbat.ends_with("\n\0"));
    assert_eq!(sbat.matches("sbat,1,SBAT Version").count(), 1);

    // An independent reader agrees.
    let listing = run_ok(Command::new("objdump").arg("-h").arg(&b.uki));
    for name in [
        ".text", ".reloc", ".sdmagic", ".osrel", ".cmdline", ".uname", ".initrd", ".sbat", ".linux",
    ] {
        assert!(
            listing.contains(&format!(" {name} ")),
            "objdump -h lacks {name}:\n{listing}"
        );
    }
    let dumped = b.dir.join("cmdline.bin");
    run_ok(
        Command::new("objcopy")
            .arg(format!("--dump-section=.cmdline={}", dumped.display()))
            .arg(&b.uki)
            .arg(b.dir.join("scratch.efi")),
    );
    assert_eq!(std::fs::read(&dumped).unwrap(), CMDLINE.as_bytes());

    // Layout rules: stub sections untouched, output 8-aligned, VirtualSize exact, .linux last.
    let mut f = File::open(&b.uki).unwrap();
    let (h, _) = PeHeaders::read(&mut f).unwrap();
    let mut sf = File::open(STUB).unwrap();
    let (sh, _) = PeHeaders::read(&mut sf).unwrap();
    for (a, s) in sh.sections.iter().zip(&h.sections) {
        assert_eq!(a.virtual_address, s.virtual_address);
        assert_eq!(a.pointer_to_raw_data, s.pointer_to_raw_data);
    }
    assert_eq!(h.file_len % 8, 0);
    assert_eq!(h.checksum, 0);
    let last = h.sections.last().unwrap();
    assert_eq!(last.name.as_str(), ".linux");
    assert_eq!(
        u64::from(last.virtual_size),
        std::fs::metadata(kernel()).unwrap().len()
    );
    assert_eq!(
        u64::from(h.size_of_image),
        bootchain::pe::align_up(last.virtual_end(), u64::from(h.section_alignment))
    );
    assert_eq!(h.time_date_stamp, 0);
    assert_eq!(h.pointer_to_symbol_table, 0);
}

#[test]
fn authenticode_hash_equals_pesign_on_stub_kernel_and_uki() {
    require_tool("pesign");
    let b = build_unsigned();
    for p in [PathBuf::from(STUB), kernel(), b.uki.clone()] {
        assert_eq!(our_hash(&p), pesign_hash(&p), "{}", p.display());
    }
}

#[test]
fn streamed_build_digest_equals_file_digest() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.cpio"), pseudo_random(1234, 3)).unwrap();
    std::fs::write(d.path().join("b.cpio"), pseudo_random(99, 4)).unwrap();
    let (key, crt) = make_key(d.path(), "db", "rsa:2048");
    let out = d.path().join("signed.efi");
    let report = builder(d.path())
        .sign_with(
            SigningKey::from_file(&key).unwrap(),
            load_certificate(&crt).unwrap(),
            SignOptions::default(),
        )
        .build(&out)
        .unwrap();
    assert_eq!(report.authenticode_sha256.to_hex(), our_hash(&out));
    assert_eq!(report.authenticode_sha256.to_hex(), pesign_hash(&out));
}

#[test]
fn authenticode_hash_equals_osslsigncode_digest() {
    require_tool("osslsigncode");
    let b = build_unsigned();
    let signed = b.dir.join("ossl.efi");
    run_ok(
        Command::new("osslsigncode")
            .args(["sign", "-certs"])
            .arg(&b.crt)
            .arg("-key")
            .arg(&b.key)
            .arg("-in")
            .arg(&b.uki)
            .arg("-out")
            .arg(&signed),
    );
    let (ok, text) = osslsigncode_verify(&signed, &b.crt);
    assert!(ok, "{text}");
    let calc = text
        .lines()
        .find(|l| l.contains("Calculated message digest"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_ascii_lowercase())
        .expect("osslsigncode prints the calculated digest");
    assert_eq!(calc, our_hash(&signed));
    assert_eq!(calc, our_hash(&b.uki));
    // And a UKI signed by osslsigncode passes our verify.
    assert!(our_verify(&signed, &b.crt));
}

#[test]
fn our_signed_uki_passes_sbverify_and_osslsigncode() {
    require_tool("sbverify");
    require_tool("osslsigncode");
    let b = build_unsigned();
    let signed = b.dir.join("signed.efi");
    builder(&b.dir)
        .sign_with(
            SigningKey::from_file(&b.key).unwrap(),
            load_certificate(&b.crt).unwrap(),
            SignOptions::default(),
        )
        .build(&signed)
        .unwrap();
    assert!(sbverify(&signed, &b.crt));
    let (ok, text) = osslsigncode_verify(&signed, &b.crt);
    assert!(ok, "{text}");
    assert!(our_verify(&signed, &b.crt));
    // pe sign on the unsigned image gives the same signature bytes (deterministic RSA).
    let signed2 = b.dir.join("signed2.efi");
    sign_ours(&b.uki, &signed2, &b.key, &b.crt);
    assert_eq!(
        std::fs::read(&signed).unwrap(),
        std::fs::read(&signed2).unwrap()
    );
}

#[test]
fn sbsign_signed_uki_passes_our_verify() {
    require_tool("sbsign");
    let b = build_unsigned();
    let signed = b.dir.join("sbsign.efi");
    run_ok(
        Command::new("sbsign")
            .arg("--key")
            .arg(&b.key)
            .arg("--cert")
            .arg(&b.crt)
            .arg("--output")
            .arg(&signed)
            .arg(&b.uki),
    );
    assert!(our_verify(&signed, &b.crt));
    // Same image digest before and after signing.
    assert_eq!(our_hash(&signed), our_hash(&b.uki));
}

#[test]
fn flipped_bytes_fail_our_verify_and_sbverify() {
    require_tool("sbverify");
    let b = build_unsigned();
    let signed = b.dir.join("signed.efi");
    sign_ours(&b.uki, &signed, &b.key, &b.crt);
    assert!(our_verify(&signed, &b.crt) && sbverify(&signed, &b.crt));
    let mut f = File::open(&signed).unwrap();
    let (h, _) = PeHeaders::read(&mut f).unwrap();
    let mut offsets = vec![
        ("COFF TimeDateStamp", (h.pe_offset + 8) as u64),
        ("SizeOfImage", (h.optional_header_offset + 56) as u64),
        ("section table", (h.section_table_offset + 3) as u64),
    ];
    for name in [".text", ".osrel", ".cmdline", ".initrd", ".linux", ".sbat"] {
        let s = h.section(name).unwrap();
        offsets.push((
            name,
            u64::from(s.pointer_to_raw_data) + u64::from(s.virtual_size) / 2,
        ));
    }
    let certs = authenticode::read_certificates(&mut f, &h).unwrap();
    let sig_entry_end = certs[0].offset + 8 + certs[0].data.len() as u64;
    // The last bytes of the PKCS#7 are the RSA signature value.
    offsets.push(("signature value", sig_entry_end - 10));
    // The image hash inside SpcIndirectDataContent.
    let idx = certs[0]
        .data
        .windows(32)
        .position(|w| hex::encode(w) == our_hash(&b.uki))
        .expect("image digest inside the PKCS#7");
    offsets.push(("signed digest", certs[0].offset + 8 + idx as u64 + 5));
    for (what, off) in offsets {
        let bad = b.dir.join("bad.efi");
        flip_byte(&signed, &bad, off);
        assert!(
            !our_verify(&bad, &b.crt),
            "our verify accepted a flipped byte in {what}"
        );
        // Refused for the reason the flip implies: the image hash, or the signature.
        let r = our_first_signer(&bad, &b.crt).unwrap_or_else(|e| panic!("{what}: {e}"));
        match what {
            "signature value" => assert!(
                !r.signature_valid && r.image_digest_matches,
                "{what}: {r:?}"
            ),
            "signed digest" => assert!(!r.image_digest_matches, "{what}: {r:?}"),
            _ => assert!(
                !r.image_digest_matches && r.signature_valid,
                "{what}: {r:?}"
            ),
        }
        assert!(
            !sbverify(&bad, &b.crt),
            "sbverify accepted a flipped byte in {what}"
        );
    }
}

#[test]
fn wrong_certificate_fails() {
    require_tool("sbverify");
    let b = build_unsigned();
    let signed = b.dir.join("signed.efi");
    sign_ours(&b.uki, &signed, &b.key, &b.crt);
    let (_, other) = make_key(&b.dir, "other", "rsa:2048");
    assert!(!our_verify(&signed, &other));
    // Refused for the trust anchor alone: hash and signature are fine.
    let r = our_first_signer(&signed, &other).unwrap();
    assert!(
        r.trusted == Some(false) && r.signature_valid && r.image_digest_matches,
        "{r:?}"
    );
    assert!(
        our_verify(&signed, &b.crt),
        "control: the right certificate"
    );
    assert!(!sbverify(&signed, &other));
    // Without a trust anchor the signature itself is still reported valid.
    let r = sign::verify_file(&signed, None, None).unwrap();
    assert!(r.passed(false));
    assert_eq!(
        r.signers[0].subject.as_deref(),
        Some("CN=bootchain test db")
    );
}

#[test]
fn second_signature_is_appended_and_both_verify() {
    require_tool("sbverify");
    let b = build_unsigned();
    let (k2, c2) = make_key(&b.dir, "db2", "rsa:3072");
    let once = b.dir.join("once.efi");
    let twice = b.dir.join("twice.efi");
    sign_ours(&b.uki, &once, &b.key, &b.crt);
    sign_ours(&once, &twice, &k2, &c2);
    assert!(sbverify(&twice, &b.crt));
    assert!(sbverify(&twice, &c2));
    let r = sign::verify_file(&twice, None, Some(&load_certificate(&c2).unwrap())).unwrap();
    assert!(r.passed(true));
    assert_eq!(r.signers.len(), 2);
    assert!(!r.signers[0].ok() && r.signers[0].signature_valid);
    assert!(r.signers[1].ok());
    let info = uki::inspect(&twice).unwrap();
    assert_eq!(info.signatures.len(), 2);
    assert_eq!(info.authenticode_sha256.to_hex(), our_hash(&b.uki));
}

#[test]
fn ecdsa_p256_signature_verifies_with_sbverify() {
    require_tool("sbverify");
    let b = build_unsigned();
    let (k, c) = make_key(&b.dir, "ec", "ec");
    let signed = b.dir.join("ec.efi");
    sign_ours(&b.uki, &signed, &k, &c);
    assert!(our_verify(&signed, &c));
    assert!(sbverify(&signed, &c));
}

#[test]
fn detached_signature_round_trip() {
    require_tool("sbverify");
    let b = build_unsigned();
    let k = SigningKey::from_file(&b.key).unwrap();
    let c = load_certificate(&b.crt).unwrap();
    let sig = sign::detached_signature(&b.uki, &k, &c, &SignOptions::default()).unwrap();
    let sig_path = b.dir.join("uki.pk7");
    std::fs::write(&sig_path, &sig).unwrap();
    let r = sign::verify_file(&b.uki, Some(&sig), Some(&c)).unwrap();
    assert!(r.passed(true));
    assert!(run(Command::new("sbverify")
        .arg("--cert")
        .arg(&b.crt)
        .arg("--detached")
        .arg(&sig_path)
        .arg(&b.uki))
    .status
    .success());
}

#[test]
fn two_builds_are_byte_identical() {
    let b = build_unsigned();
    let again = b.dir.join("again.efi");
    builder(&b.dir).build(&again).unwrap();
    assert_eq!(
        std::fs::read(&b.uki).unwrap(),
        std::fs::read(&again).unwrap()
    );
    // Signed builds too (no signing time by default).
    let k = || SigningKey::from_file(&b.key).unwrap();
    let c = || load_certificate(&b.crt).unwrap();
    let s1 = b.dir.join("s1.efi");
    let s2 = b.dir.join("s2.efi");
    builder(&b.dir)
        .sign_with(k(), c(), SignOptions::default())
        .build(&s1)
        .unwrap();
    builder(&b.dir)
        .sign_with(k(), c(), SignOptions::default())
        .build(&s2)
        .unwrap();
    assert_eq!(std::fs::read(&s1).unwrap(), std::fs::read(&s2).unwrap());
}

#[test]
fn inspect_reports_sections_stub_version_and_signer() {
    let b = build_unsigned();
    let signed = b.dir.join("signed.efi");
    sign_ours(&b.uki, &signed, &b.key, &b.crt);
    let info = uki::inspect(&signed).unwrap();
    assert!(info.stub_version.as_deref().unwrap().starts_with("252"));
    let cmd = info.sections.iter().find(|s| s.name == ".cmdline").unwrap();
    assert_eq!(cmd.text.as_deref(), Some(CMDLINE));
    assert_eq!(cmd.sha256.to_hex(), sha256_hex(CMDLINE.as_bytes()));
    let linux = info.sections.iter().find(|s| s.name == ".linux").unwrap();
    assert_eq!(
        linux.sha256.to_hex(),
        sha256_hex(&std::fs::read(kernel()).unwrap())
    );
    assert_eq!(info.signatures.len(), 1);
    let s = &info.signatures[0];
    assert!(s.ok());
    assert_eq!(s.subject.as_deref(), Some("CN=bootchain test db"));
    assert_eq!(s.digest_algorithm, "sha256");
    let json = serde_json::to_value(&info).unwrap();
    for key in [
        "size",
        "stub_version",
        "authenticode_sha256",
        "sections",
        "signatures",
    ] {
        assert!(json.get(key).is_some(), "inspect JSON lacks {key}");
    }
}

#[test]
fn mutated_images_never_panic() {
    // Not a fuzzer, but every header byte of a signed UKI flipped in turn, and random
    // corruption of the certificate table: parse, hash, verify and inspect must return
    // Ok or Err, never panic.
    // A small UKI (fake 64 KiB kernel) keeps the ~1,600 iterations fast.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("k"), pseudo_random(65536, 5)).unwrap();
    std::fs::write(d.path().join("i"), pseudo_random(4096, 6)).unwrap();
    let (key, crt) = make_key(d.path(), "db", "rsa:2048");
    let signed = d.path().join("signed.efi");
    UkiBuilder::new()
        .stub(require_stub())
        .linux(d.path().join("k"))
        .initrd(d.path().join("i"))
        .uname("6.1.0-test")
        .os_release(SectionContent::Bytes(OSREL.as_bytes().to_vec()))
        .sign_with(
            SigningKey::from_file(&key).unwrap(),
            load_certificate(&crt).unwrap(),
            SignOptions::default(),
        )
        .build(&signed)
        .unwrap();
    let orig = std::fs::read(&signed).unwrap();
    let mut f = File::open(&signed).unwrap();
    let (h, _) = PeHeaders::read(&mut f).unwrap();
    let cert_start = h.security_directory().unwrap().virtual_address as usize;
    let bad = d.path().join("m.efi");
    let mut targets: Vec<(usize, u8)> = (0..h.section_table_end()).map(|i| (i, 0xff)).collect();
    let rnd = pseudo_random(400, 9);
    for i in 0..200 {
        let off = cert_start
            + (rnd[2 * i] as usize * 7 + rnd[2 * i + 1] as usize) % (orig.len() - cert_start);
        targets.push((off, rnd[i] | 1));
    }
    for (off, x) in targets {
        let mut m = orig.clone();
        m[off] ^= x;
        std::fs::write(&bad, &m).unwrap();
        let _ = uki::inspect(&bad);
        let _ = sign::verify_file(&bad, None, None);
    }
    // Truncations.
    for len in [
        0usize,
        1,
        2,
        0x3c,
        0x40,
        0x100,
        0x3ff,
        0x400,
        0x8000,
        orig.len() - 1,
    ] {
        std::fs::write(&bad, &orig[..len]).unwrap();
        // The error names the file, then says what is wrong with it.
        match uki::inspect(&bad).map_err(|e| bootchain::error::Chain(&e).to_string()) {
            // Cut in the headers or sections: "truncated"; in the signature: the
            // certificate table no longer ends the file.
            Err(e) if len == orig.len() - 1 => assert!(
                e.starts_with(&bad.display().to_string())
                    && e.contains("certificate table")
                    && e.contains("is not at the end of the file"),
                "{len}: {e}"
            ),
            Err(e) => assert!(
                e.starts_with(&bad.display().to_string())
                    && e.contains("truncated PE image")
                    && e.contains(&format!("file has {len}")),
                "{len}: {e}"
            ),
            Ok(_) => assert!(len > 0x8000, "a {len}-byte prefix inspected"),
        }
        let _ = sign::verify_file(&bad, None, None);
    }
}
