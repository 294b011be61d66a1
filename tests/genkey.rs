//! `bootchain uki genkey` (ukify 257's `genkey`): openssl reads the keys and certificate
//! (subject, critical CA:FALSE, `rsa -check`), a UKI signed with the pair passes sbverify,
//! the PCR pair signs policies with `measure sign`, private keys are 0600, and existing
//! targets are refused with the file unchanged.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

/// Whether `tool` is installed; a missing one makes the caller skip, loudly.
fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        eprintln!(
            "SKIPPED: `{tool}` is not installed (sbsigntool/openssl); this check did not run"
        );
    }
    found
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn genkey(dir: &Path, args: &[&str]) -> std::process::Output {
    run(Command::new(bootchain_bin())
        .current_dir(dir)
        .args(["uki", "genkey"])
        .args(args))
}

#[test]
fn secureboot_pair_is_read_by_openssl_and_signs_a_uki_sbverify_accepts() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let out = genkey(
        p,
        &[
            "--secureboot-private-key=sb.key",
            "--secureboot-certificate=sb.crt",
            "--secureboot-certificate-validity=30",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (key, crt) = (p.join("sb.key"), p.join("sb.crt"));
    assert_eq!(mode(&key), 0o600);
    let key_pem = std::fs::read_to_string(&key).unwrap();
    assert!(key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
    assert!(std::fs::read_to_string(&crt)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----\n"));

    if have("openssl") {
        let text = run_ok(
            Command::new("openssl")
                .args(["x509", "-noout", "-text", "-in"])
                .arg(&crt),
        );
        let host = bootchain::genkey::host_fqdn();
        let cn = bootchain::genkey::secureboot_common_name(&host);
        assert!(text.contains(&format!("Subject: CN = {cn}\n")), "{text}");
        assert!(text.contains(&format!("Issuer: CN = {cn}\n")), "{text}");
        assert!(text.contains("Version: 3 (0x2)"), "{text}");
        assert!(
            text.contains("Signature Algorithm: sha256WithRSAEncryption"),
            "{text}"
        );
        assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
        assert!(text.contains("Exponent: 65537"), "{text}");
        assert!(
            text.contains("X509v3 Basic Constraints: critical\n                CA:FALSE"),
            "{text}"
        );
        // The only extension.
        assert_eq!(text.matches("X509v3 ").count(), 2, "{text}");
        let check = run_ok(
            Command::new("openssl")
                .args(["rsa", "-check", "-noout", "-in"])
                .arg(&key),
        );
        assert!(check.contains("RSA key ok"), "{check}");
        // The certificate verifies under its own key (self-signed).
        run_ok(
            Command::new("openssl")
                .args(["verify", "-check_ss_sig", "-partial_chain", "-CAfile"])
                .arg(&crt)
                .arg(&crt),
        );
    }

    // Our signer takes the pair; sbverify accepts the signed UKI.
    let uki = p.join("uki.efi");
    run_ok(
        Command::new(bootchain_bin())
            .args(["uki", "build", "--stub"])
            .arg(require_stub())
            .arg("--linux")
            .arg(kernel())
            .args(["--cmdline", "quiet", "--os-release", "ID=genkey-test"])
            .arg("--secureboot-private-key")
            .arg(&key)
            .arg("--secureboot-certificate")
            .arg(&crt)
            .arg("--output")
            .arg(&uki),
    );
    if have("sbverify") {
        run_ok(Command::new("sbverify").arg("--cert").arg(&crt).arg(&uki));
    }
}

#[test]
fn pcr_keys_sign_policies() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let out = genkey(
        p,
        &[
            "--pcr-private-key=a.key",
            "--pcr-public-key=a.pub",
            "--pcr-private-key=b.key",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for k in ["a.key", "b.key"] {
        assert_eq!(mode(&p.join(k)), 0o600, "{k}");
        assert!(std::fs::read_to_string(p.join(k))
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
    }
    // The second group has no public key path: none is written.
    assert_eq!(std::fs::read_dir(p).unwrap().count(), 3);
    let public = std::fs::read_to_string(p.join("a.pub")).unwrap();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));

    std::fs::write(p.join("cmdline"), "quiet").unwrap();
    std::fs::write(p.join("osrel"), "ID=genkey-test\n").unwrap();
    let json = run_ok(
        Command::new(bootchain_bin())
            .current_dir(p)
            .args(["measure", "sign", "--osrel=osrel", "--cmdline=cmdline"])
            .arg(format!("--linux={}", kernel().display()))
            .args(["--private-key=a.key", "--public-key=a.pub", "--json=short"]),
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let entry = &v["sha256"][0];
    assert!(
        entry["sig"].as_str().is_some_and(|s| !s.is_empty()),
        "{json}"
    );
    if have("openssl") {
        // pkfp is the SHA-256 of the public key's PKCS#1 DER (systemd's i2d_PublicKey), the
        // key genkey wrote.
        let der = run(Command::new("openssl")
            .args([
                "rsa",
                "-pubin",
                "-RSAPublicKey_out",
                "-outform",
                "DER",
                "-in",
            ])
            .arg(p.join("a.pub")));
        assert!(der.status.success());
        assert_eq!(
            entry["pkfp"].as_str(),
            Some(sha256_hex(&der.stdout).as_str())
        );
        let check = run_ok(
            Command::new("openssl")
                .args(["rsa", "-check", "-noout", "-in"])
                .arg(p.join("b.key")),
        );
        assert!(check.contains("RSA key ok"), "{check}");
    }
    // b.key signs as well (no public key to compare with).
    run_ok(
        Command::new(bootchain_bin())
            .current_dir(p)
            .args(["measure", "sign", "--osrel=osrel", "--cmdline=cmdline"])
            .arg(format!("--linux={}", kernel().display()))
            .args(["--private-key=b.key", "--json=short"]),
    );
}

#[test]
fn existing_targets_are_refused_and_kept() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    std::fs::write(p.join("sb.crt"), b"precious").unwrap();
    let out = genkey(
        p,
        &[
            "--secureboot-private-key=sb.key",
            "--secureboot-certificate=sb.crt",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sb.crt is present"), "{err}");
    assert_eq!(std::fs::read(p.join("sb.crt")).unwrap(), b"precious");
    // Nothing else was written, not even the key that did not exist.
    assert!(!p.join("sb.key").exists());
    assert_eq!(std::fs::read_dir(p).unwrap().count(), 1);

    std::fs::write(p.join("pcr.pub"), b"mine").unwrap();
    let out = genkey(
        p,
        &["--pcr-private-key=pcr.key", "--pcr-public-key=pcr.pub"],
    );
    assert!(!out.status.success());
    assert_eq!(std::fs::read(p.join("pcr.pub")).unwrap(), b"mine");
    assert!(!p.join("pcr.key").exists());

    // Nothing asked: ukify's error.
    let out = genkey(p, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be specified"));
}
