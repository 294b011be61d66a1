//! Signing with keys in a PKCS#11 token (SoftHSM2, initialised by each test) and offline
//! signing, through the CLI:
//! - an HSM-signed image is byte-identical to the one signed with the same key as a file
//!   (RSASSA-PKCS1-v1_5 is deterministic) and passes `sbverify --cert`; ECDSA P-256 too;
//! - `pe sign --prepare`, `openssl pkeyutl` as the other machine, `--signed-data-signature`
//!   gives the directly signed bytes; a `.pcrsig` signed the same way joins to the HSM's;
//! - a `.pcrsig` signed in the token unseals on swtpm;
//! - wrong PIN, missing object, wrong object or key type, no module: typed errors, exit 1,
//!   no output file;
//! - one Secure Boot boot of an HSM-signed UKI (`#[ignore]`, as every VM test).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::softhsm::{SoftHsm, MODULE, PIN};
use common::*;

/// A token holding: `db` (RSA-2048, id 01, with its certificate), `ec` (P-256, id 02, with
/// certificate), `pcr` (RSA-2048, id 03), all also kept as files; `ecgen` (P-256 generated in
/// the token, id 04) and `aes` (a secret key, id 05).
struct Fixture {
    hsm: SoftHsm,
    db_key: PathBuf,
    db_crt: PathBuf,
    ec_key: PathBuf,
    ec_crt: PathBuf,
    pcr_key: PathBuf,
    pcr_pub: PathBuf,
}

fn fixture() -> Fixture {
    let hsm = SoftHsm::new();
    let dir = hsm.dir.clone();
    let (db_key, db_crt) = make_key(&dir, "db", "rsa:2048");
    let (ec_key, ec_crt) = make_key(&dir, "ec", "ec");
    let (pcr_key, pcr_pub) = make_rsa_keypair(&dir, "pcr");
    hsm.import_key(&db_key, "db", "01");
    hsm.import_cert(&db_crt, "db", "01");
    hsm.import_key(&ec_key, "ec", "02");
    hsm.import_cert(&ec_crt, "ec", "02");
    hsm.import_key(&pcr_key, "pcr", "03");
    Fixture {
        hsm,
        db_key,
        db_crt,
        ec_key,
        ec_crt,
        pcr_key,
        pcr_pub,
    }
}

impl Fixture {
    fn bootchain(&self) -> Command {
        self.hsm.cmd(bootchain_bin())
    }
    fn path(&self, name: &str) -> PathBuf {
        self.hsm.dir.join(name)
    }
    /// A PE image to sign: the systemd stub.
    fn image(&self) -> PathBuf {
        let p = self.path("stub.efi");
        if !p.exists() {
            std::fs::copy(require_stub(), &p).unwrap();
        }
        p
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn sbverify(cert: &Path, image: &Path) {
    require_tool("sbverify");
    let out = run(Command::new("sbverify").arg("--cert").arg(cert).arg(image));
    assert!(out.status.success(), "sbverify: {}", stderr(&out));
}

fn pe_sign(f: &Fixture, args: &[&str], out: &Path) -> Output {
    run(f
        .bootchain()
        .args(["pe", "sign"])
        .arg(f.image())
        .args(args)
        .arg("-o")
        .arg(out))
}

/// RSA key in the token, certificate read from the token (same id), PIN from a file: the
/// same bytes as the key file gives, and sbverify accepts them. The certificate can also be
/// named by URI, and the PIN come from the environment.
#[test]
fn hsm_rsa_signature_is_the_key_files_and_sbverify_accepts_it() {
    let f = fixture();
    let pin = f.hsm.pin_file();
    let uri = f
        .hsm
        .uri("object=db", &format!("pin-source=file:{}", pin.display()));
    let hsm = f.path("hsm.efi");
    let o = pe_sign(&f, &["--key", &uri], &hsm);
    assert!(o.status.success(), "{}", stderr(&o));
    let file = f.path("file.efi");
    let (k, c) = (f.db_key.to_str().unwrap(), f.db_crt.to_str().unwrap());
    run_ok(
        f.bootchain()
            .args(["pe", "sign"])
            .arg(f.image())
            .args(["--key", k, "--cert", c, "-o"])
            .arg(&file),
    );
    assert_eq!(std::fs::read(&hsm).unwrap(), std::fs::read(&file).unwrap());
    sbverify(&f.db_crt, &hsm);

    // Certificate by URI, PIN from BOOTCHAIN_PKCS11_PIN, module from BOOTCHAIN_PKCS11_MODULE.
    let by_uri = f.path("by-uri.efi");
    let o = pe_sign(
        &f,
        &[
            "--key",
            "pkcs11:token=bootchain%20test;id=%01;type=private",
            "--cert",
            "pkcs11:token=bootchain%20test;object=db;type=cert",
        ],
        &by_uri,
    );
    assert!(!o.status.success(), "no module named anywhere");
    assert!(stderr(&o).contains("no PKCS#11 module"), "{}", stderr(&o));
    let o = run(f
        .bootchain()
        .env("BOOTCHAIN_PKCS11_PIN", PIN)
        .env("BOOTCHAIN_PKCS11_MODULE", MODULE)
        .args(["pe", "sign"])
        .arg(f.image())
        .args([
            "--key",
            "pkcs11:token=bootchain%20test;id=%01;type=private",
            "--cert",
            "pkcs11:token=bootchain%20test;object=db;type=cert",
            "-o",
        ])
        .arg(&by_uri));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&by_uri).unwrap(),
        std::fs::read(&file).unwrap()
    );
}

/// `examples/sign_with_hsm` signs with the token key and its certificate from the token.
#[test]
fn sign_with_hsm_example_runs() {
    let f = fixture();
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples/sign_with_hsm");
    assert!(
        example.exists(),
        "{} missing: cargo build --all-targets",
        example.display()
    );
    let out = f.path("example.efi");
    let o = run(f
        .hsm
        .cmd(&example)
        .env("BOOTCHAIN_PKCS11_PIN", PIN)
        .arg(f.image())
        .arg(f.hsm.uri("object=db", ""))
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("RsaPkcs1v15 { bits: 2048 }"));
    sbverify(&f.db_crt, &out);
}

/// ECDSA P-256 in the token (CKM_ECDSA over a host SHA-256, r‖s re-encoded as DER): the
/// signature verifies with our verifier and with sbverify (OpenSSL).
#[test]
fn hsm_ecdsa_p256_signature_verifies() {
    let f = fixture();
    let uri = f.hsm.uri("object=ec", &format!("pin-value={PIN}"));
    let out = f.path("ec.efi");
    let o = pe_sign(&f, &["--key", &uri], &out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("ECDSA P-256"),
        "firmware warning: {}",
        stderr(&o)
    );
    let v = run_ok(
        f.bootchain()
            .args(["pe", "verify", "--json", "--cert"])
            .arg(&f.ec_crt)
            .arg(&out),
    );
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["signers"][0]["key"], "ECDSA P-256", "{v}");
    assert_eq!(v["signers"][0]["trusted"], true, "{v}");
    sbverify(&f.ec_crt, &out);
    let _ = &f.ec_key;
}

/// The other sizes and curves: RSA-4096 from the token gives the key file's bytes; ECDSA
/// P-384 verifies (our verifier and sbverify).
#[test]
fn hsm_rsa4096_and_p384_sign() {
    let f = fixture();
    let pin = format!("pin-value={PIN}");
    for (name, id, newkey) in [
        ("rsa4096", "0a", &["-newkey", "rsa:4096"][..]),
        (
            "p384",
            "0b",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"][..],
        ),
    ] {
        let (key, crt) = (
            f.path(&format!("{name}.key")),
            f.path(&format!("{name}.crt")),
        );
        run_ok(
            Command::new("openssl")
                .args([
                    "req", "-new", "-x509", "-nodes", "-days", "30", "-subj", "/CN=t/",
                ])
                .args(newkey)
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&crt),
        );
        f.hsm.import_key(&key, name, id);
        f.hsm.import_cert(&crt, name, id);
        let hsm = f.path(&format!("{name}-hsm.efi"));
        let o = pe_sign(
            &f,
            &["--key", &f.hsm.uri(&format!("object={name}"), &pin)],
            &hsm,
        );
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        sbverify(&crt, &hsm);
        let v = run_ok(
            f.bootchain()
                .args(["pe", "verify", "--json", "--cert"])
                .arg(&crt)
                .arg(&hsm),
        );
        let v: serde_json::Value = serde_json::from_str(&v).unwrap();
        let want = if name == "p384" {
            "ECDSA P-384"
        } else {
            "RSA-4096"
        };
        assert_eq!(v["signers"][0]["key"], want, "{v}");
        assert_eq!(v["signers"][0]["trusted"], true, "{v}");
        if name == "rsa4096" {
            let file = f.path("rsa4096-file.efi");
            let (k, c) = (key.to_str().unwrap(), crt.to_str().unwrap());
            assert!(pe_sign(&f, &["--key", k, "--cert", c], &file)
                .status
                .success());
            assert_eq!(std::fs::read(&hsm).unwrap(), std::fs::read(&file).unwrap());
        }
    }
}

/// Offline signing with `openssl pkeyutl` as the other machine: --prepare writes the DER
/// signed attributes; the signature attached with --signed-data-signature gives exactly the
/// directly signed image (same signing time; RSA) and sbverify accepts it. For ECDSA the
/// signature differs (random k) but verifies. A signature over other bytes, or prepared
/// bytes of another signing time, are refused and nothing is written.
#[test]
fn offline_signing_with_openssl_pkeyutl() {
    require_tool("openssl");
    let f = fixture();
    let time = "--signing-time=1700000000";
    for (key, crt, name) in [(&f.db_key, &f.db_crt, "rsa"), (&f.ec_key, &f.ec_crt, "ec")] {
        let tbs = f.path(&format!("{name}.tbs"));
        run_ok(
            f.bootchain()
                .args(["pe", "sign"])
                .arg(f.image())
                .args([time, "--prepare"])
                .arg(&tbs),
        );
        let der = std::fs::read(&tbs).unwrap();
        assert_eq!(der[0], 0x31, "a DER SET OF attributes");
        let sig = f.path(&format!("{name}.sig"));
        run_ok(
            Command::new("openssl")
                .args(["pkeyutl", "-sign", "-rawin", "-digest", "sha256", "-inkey"])
                .arg(key)
                .arg("-in")
                .arg(&tbs)
                .arg("-out")
                .arg(&sig),
        );
        let (crt_s, tbs_s, sig_s) = (
            crt.to_str().unwrap(),
            tbs.to_str().unwrap(),
            sig.to_str().unwrap(),
        );
        let attach = |extra: &[&str], out: &Path| {
            let mut a = vec!["--cert", crt_s, "--signed-data-signature", sig_s];
            a.extend_from_slice(extra);
            pe_sign(&f, &a, out)
        };
        let attached = f.path(&format!("{name}-offline.efi"));
        let o = attach(&[time, "--signed-data", tbs_s], &attached);
        assert!(o.status.success(), "{}", stderr(&o));
        sbverify(crt, &attached);
        let direct = f.path(&format!("{name}-direct.efi"));
        let o = pe_sign(
            &f,
            &[time, "--key", key.to_str().unwrap(), "--cert", crt_s],
            &direct,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        if name == "rsa" {
            assert_eq!(
                std::fs::read(&attached).unwrap(),
                std::fs::read(&direct).unwrap(),
                "offline RSA signature gives the directly signed bytes"
            );
        }
        // Attaching without the signing time the bytes were prepared with: the signature does
        // not verify, or (with --signed-data) the prepared bytes are not this image's.
        let bad = f.path(&format!("{name}-bad.efi"));
        for (extra, want) in [
            (&[][..], "does not verify"),
            (
                &["--signed-data", tbs_s][..],
                "not the signed attributes of this image",
            ),
        ] {
            let o = attach(extra, &bad);
            assert!(!o.status.success());
            assert!(stderr(&o).contains(want), "{}", stderr(&o));
            assert!(!bad.exists());
        }
    }
}

/// Each refusal names its cause, exits 1 and leaves no output.
#[test]
fn refusals_are_typed_and_leave_no_output() {
    let f = fixture();
    f.hsm.generate_key("EC:prime256v1", "ecgen", "04");
    f.hsm.generate_secret("aes", "05");
    let out = f.path("never.efi");
    let pin = format!("pin-value={PIN}");
    let cases: Vec<(String, &str)> = vec![
        (
            f.hsm.uri("object=db", "pin-value=000000"),
            "refused the PIN",
        ),
        (f.hsm.uri("object=nope", &pin), "no private key matches"),
        (
            f.hsm.uri("object=db;type=cert", &pin),
            "is a certificate (CKO_CERTIFICATE), not a private key",
        ),
        (
            f.hsm.uri("object=aes", &pin),
            "is a secret key (CKO_SECRET_KEY), not a private key",
        ),
        (f.hsm.uri("object=db", ""), "needs a PIN"),
        (
            f.hsm.uri("object=ecgen", &pin),
            "the token has no certificate with the key's id",
        ),
        (
            "pkcs11:object=db?module-path=/nonexistent/module.so&pin-value=1".into(),
            "cannot load the PKCS#11 module",
        ),
        (
            "pkcs11:object=db;colour=red".into(),
            "not one of RFC 7512's",
        ),
    ];
    for (uri, want) in &cases {
        let o = pe_sign(&f, &["--key", uri], &out);
        assert_eq!(o.status.code(), Some(1), "{uri}");
        let e = stderr(&o);
        assert!(e.contains(want), "{uri}: wanted {want:?}, got: {e}");
        assert!(
            !e.contains("000000") && !e.contains(PIN),
            "PIN in message: {e}"
        );
        assert!(!out.exists(), "{uri} left {out:?}");
    }
    // An EC key for a PCR policy (systemd verifies .pcrsig with RSA only).
    let o = run(f
        .bootchain()
        .args(["measure", "sign", "--linux"])
        .arg(f.image())
        .args(["--private-key", &f.hsm.uri("object=ec", &pin)]));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("signed with RSA keys"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
    // The certificate of another key.
    let o = pe_sign(
        &f,
        &[
            "--key",
            &f.hsm.uri("object=db", &pin),
            "--cert",
            f.ec_crt.to_str().unwrap(),
        ],
        &out,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not match"), "{}", stderr(&o));
    assert!(!out.exists());
}

/// A UKI whose `.pcrsig` and Secure Boot signature are made in the token (`ukify build` with
/// `--signing-engine=pkcs11`, as ukify passes HSM keys) equals the one built from the key
/// files; a secret sealed to its PCR key on swtpm unseals once PCR 11 holds its value.
#[test]
fn hsm_signed_pcrsig_unseals_on_swtpm() {
    let f = fixture();
    let pin = format!("pin-value={PIN}");
    let kernel = f.path("k");
    std::fs::write(&kernel, pseudo_random(50_000, 5)).unwrap();
    let build = |out: &Path, sb: &str, pcr: &str, extra: &[&str]| {
        run(f
            .bootchain()
            .args(["ukify", "build", "--stub"])
            .arg(require_stub())
            .arg("--linux")
            .arg(&kernel)
            .args([
                "--uname",
                "6.1.0",
                "--os-release",
                "ID=t",
                "--cmdline",
                "quiet",
            ])
            .args(["--phases", "enter-initrd", "--pcr-banks", "sha256"])
            .args(["--secureboot-private-key", sb, "--secureboot-certificate"])
            .arg(&f.db_crt)
            .args(["--pcr-private-key", pcr, "--pcr-public-key"])
            .arg(&f.pcr_pub)
            .args(extra)
            .arg("--output")
            .arg(out))
    };
    let hsm_uki = f.path("hsm-uki.efi");
    let (sb_uri, pcr_uri) = (f.hsm.uri("object=db", &pin), f.hsm.uri("object=pcr", &pin));
    let refused = build(
        &hsm_uki,
        &sb_uri,
        &pcr_uri,
        &["--signing-engine=openssl-engine"],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("is not supported"),
        "{}",
        stderr(&refused)
    );
    assert!(!hsm_uki.exists());
    let o = build(&hsm_uki, &sb_uri, &pcr_uri, &["--signing-engine=pkcs11"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let file_uki = f.path("file-uki.efi");
    let o = build(
        &file_uki,
        f.db_key.to_str().unwrap(),
        f.pcr_key.to_str().unwrap(),
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&hsm_uki).unwrap(),
        std::fs::read(&file_uki).unwrap(),
        "HSM and file keys give the same UKI"
    );
    sbverify(&f.db_crt, &hsm_uki);

    let sw = common::swtpm::Swtpm::start();
    let env = f.path("root.sealed");
    run_ok(
        f.bootchain()
            .args(["seal", "--random", "--tcti", &sw.tcti(), "--pcr-public-key"])
            .arg(&hsm_uki)
            .arg("-o")
            .arg(&env),
    );
    let unseal = || {
        run(f
            .bootchain()
            .args(["unseal", "--tcti", &sw.tcti(), "--pcrsig-uki"])
            .arg(&hsm_uki)
            .arg(&env))
    };
    let o = unseal();
    assert!(
        !o.status.success(),
        "unsealed before PCR 11 holds the UKI's value"
    );
    sw.boot_uki(&hsm_uki, "enter-initrd");
    let o = unseal();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout.len(), 32);
}

/// The `.pcrsig` offline flow with `openssl pkeyutl` (a digest signed as an HSM would):
/// `measure policy-digest` (or `measure sign --prepare`) prints `tbs`; its SHA-256 signed with `-pkeyopt digest:sha256`
/// gives the signature `measure sign` makes with the token key.
#[test]
fn pcrsig_offline_with_pkeyutl_matches_the_token() {
    let f = fixture();
    let kernel = f.path("k");
    std::fs::write(&kernel, pseudo_random(30_000, 9)).unwrap();
    std::fs::write(f.path("osrel"), "ID=t\n").unwrap();
    std::fs::write(f.path("cmdline"), "quiet").unwrap();
    let parts = |c: &mut Command| {
        c.arg("--linux")
            .arg(&kernel)
            .arg("--osrel")
            .arg(f.path("osrel"))
            .arg("--cmdline")
            .arg(f.path("cmdline"))
            .args(["--bank", "sha256"]);
    };
    let mut c = f.bootchain();
    c.args(["measure", "policy-digest", "--json=short", "--public-key"])
        .arg(&f.pcr_pub);
    parts(&mut c);
    let digests: serde_json::Value = serde_json::from_str(run_ok(&mut c).trim()).unwrap();
    // `measure sign --prepare` is the same step under systemd-measure sign's name.
    let mut c = f.bootchain();
    c.args([
        "measure",
        "sign",
        "--prepare",
        "--json=short",
        "--public-key",
    ])
    .arg(&f.pcr_pub);
    parts(&mut c);
    let prepared: serde_json::Value = serde_json::from_str(run_ok(&mut c).trim()).unwrap();
    assert_eq!(prepared, digests);
    let mut c = f.bootchain();
    c.args(["measure", "sign", "--json=short", "--private-key"])
        .arg(f.hsm.uri("object=pcr", &format!("pin-value={PIN}")));
    parts(&mut c);
    let signed: serde_json::Value = serde_json::from_str(run_ok(&mut c).trim()).unwrap();
    let entries = digests["sha256"].as_array().unwrap();
    assert!(!entries.is_empty());
    for (i, e) in entries.iter().enumerate() {
        use base64::Engine as _;
        let tbs = hex::decode(e["tbs"].as_str().unwrap()).unwrap();
        let d = f.path("tbs.sha256");
        std::fs::write(&d, sha2_256(&tbs)).unwrap();
        let sig = f.path("tbs.sig");
        run_ok(
            Command::new("openssl")
                .args(["pkeyutl", "-sign", "-pkeyopt", "digest:sha256", "-inkey"])
                .arg(&f.pcr_key)
                .arg("-in")
                .arg(&d)
                .arg("-out")
                .arg(&sig),
        );
        let token = &signed["sha256"][i];
        assert_eq!(token["pol"], e["pol"]);
        assert_eq!(token["pkfp"], e["pkfp"]);
        assert_eq!(
            token["sig"].as_str().unwrap(),
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(&sig).unwrap())
        );
    }
}

fn sha2_256(b: &[u8]) -> Vec<u8> {
    bootchain::hash::HashAlg::Sha256
        .digest(b)
        .as_bytes()
        .to_vec()
}

/// The firmware judges an HSM-signed UKI: OVMF with Secure Boot enforcing and the token
/// key's certificate in db runs it to the initrd.
#[test]
#[ignore = "boots a VM; run by ./scripts/test"]
fn secure_boot_runs_a_uki_signed_in_the_token() {
    use common::vm::{self, BootSpec, SbKeys};
    if !vm::require_qemu("secure_boot_runs_a_uki_signed_in_the_token") {
        return;
    }
    let hsm = SoftHsm::new();
    let keys = SbKeys::generate(&hsm.dir.join("sb"));
    hsm.import_key(&keys.db_key, "db", "01");
    hsm.import_cert(&keys.db, "db", "01");
    let uki = hsm.dir.join("hsm.efi");
    run_ok(
        hsm.cmd(bootchain_bin())
            .args(["uki", "build", "--stub"])
            .arg(require_stub())
            .arg("--linux")
            .arg(kernel())
            .arg("--initrd")
            .arg(vm::test_initrd())
            .args([
                "--cmdline",
                vm::TEST_CMDLINE,
                "--os-release",
                "ID=bootchain-test",
            ])
            .args([
                "--secureboot-private-key",
                &hsm.uri("object=db", &format!("pin-value={PIN}")),
            ])
            .arg("--output")
            .arg(&uki),
    );
    sbverify(&keys.db, &uki);
    let r = vm::boot(&BootSpec {
        uki: &uki,
        secure_boot: Some(&keys),
        timeout: std::time::Duration::from_secs(240),
        tpm_state: None,
    });
    assert!(!r.refused, "firmware refused the HSM-signed UKI");
    assert!(r.reached_initrd, "HSM-signed UKI did not reach the initrd");
    assert_eq!(r.cmdline, vm::TEST_CMDLINE);
}
