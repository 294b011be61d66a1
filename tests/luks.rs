//! LUKS2 `systemd-tpm2` tokens against the real tools: tokens enrolled by systemd-cryptenroll
//! 252 (literal PCRs, signed policy, PIN) and 257 (salted PIN under the SRK) unlocked by `bootchain luks unlock`; tokens enrolled
//! by bootchain unsealed by tpm2-tools; keyslots checked with `cryptsetup open
//! --test-passphrase` (device-mapper activation is not available on the test machines).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use bootchain::hash::HashAlg;
use bootchain::tpm::Tpm;
use common::swtpm::Swtpm;
use common::*;

fn token_json(img: &Path, id: u32) -> serde_json::Value {
    let out = run_ok(
        Command::new("cryptsetup")
            .args(["token", "export", "--token-id", &id.to_string()])
            .arg(img),
    );
    serde_json::from_str(&out).unwrap()
}

/// `cryptsetup open --test-passphrase --key-slot N` with the passphrase in `file`.
fn opens_slot(img: &Path, slot: u32, file: &Path) -> bool {
    Command::new("cryptsetup")
        .args(["open", "--test-passphrase", "--key-slot", &slot.to_string()])
        .arg("--key-file")
        .arg(file)
        .arg(img)
        .output()
        .unwrap()
        .status
        .success()
}

fn bootchain(sw: &Swtpm, args: &[&str], img: &Path) -> Output {
    bootchain_pin(sw, args, img, None)
}

/// `bootchain ARGS --tcti SWTPM IMG`, with `$BOOTCHAIN_PIN` set to `pin` (or unset).
fn bootchain_pin(sw: &Swtpm, args: &[&str], img: &Path, pin: Option<&str>) -> Output {
    let mut c = Command::new(bootchain_bin());
    c.args(args).arg("--tcti").arg(sw.tcti()).arg(img);
    match pin {
        Some(p) => c.env("BOOTCHAIN_PIN", p),
        None => c.env_remove("BOOTCHAIN_PIN"),
    };
    run(&mut c)
}

fn cryptenroll(sw: &Swtpm, key: &Path, img: &Path, args: &[&str], env: &[(&str, &str)]) {
    require_tool("systemd-cryptenroll");
    run_ok(
        Command::new("systemd-cryptenroll")
            .arg(format!("--unlock-key-file={}", key.display()))
            .arg(format!(
                "--tpm2-device=swtpm:host=127.0.0.1,port={}",
                sw.port
            ))
            .args(args)
            .arg(img)
            .envs(env.iter().copied()),
    );
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// systemd-cryptenroll 252 `--tpm2-pcrs=7+11` → `bootchain luks unlock` recovers the keyslot
/// passphrase (base64 of the sealed secret) and cryptsetup accepts it; after PCR 7 changes the
/// unlock is refused naming the PCRs and their current values, and nothing is written.
#[test]
fn systemd_cryptenroll_token_unlocked_by_bootchain() {
    let d = tempfile::tempdir().unwrap();
    let (img, key) = luks_image(d.path());
    let sw = Swtpm::start();
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    t.extend(7, &[HashAlg::Sha256.digest(b"db")]).unwrap();
    t.extend(11, &[HashAlg::Sha256.digest(b"uki")]).unwrap();
    drop(t);
    cryptenroll(&sw, &key, &img, &["--tpm2-pcrs=7+11"], &[]);
    let tok = token_json(&img, 0);
    assert_eq!(tok["type"], "systemd-tpm2");
    assert_eq!(tok["keyslots"], serde_json::json!(["1"]));

    let pass = d.path().join("recovered");
    let out = bootchain(
        &sw,
        &[
            "luks",
            "unlock",
            "--test",
            "--passphrase-output",
            pass.to_str().unwrap(),
        ],
        &img,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("opens keyslot 1"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&pass).unwrap().len(),
        44,
        "base64 of 32 bytes"
    );
    assert!(opens_slot(&img, 1, &pass));
    assert!(!opens_slot(&img, 0, &pass));
    // The initramfs binary gives the same passphrase on stdout (a crypttab keyscript's job).
    let out = run(
        Command::new(bootchain_bin().with_file_name("bootchain-unseal"))
            .args(["--tcti", &sw.tcti(), "--luks"])
            .arg(&img),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(out.stdout, std::fs::read(&pass).unwrap());

    let mut t = Tpm::open(&sw.tcti()).unwrap();
    t.extend(7, &[HashAlg::Sha256.digest(b"another db")])
        .unwrap();
    drop(t);
    let pass2 = d.path().join("recovered2");
    let out = bootchain(
        &sw,
        &[
            "luks",
            "unlock",
            "--passphrase-output",
            pass2.to_str().unwrap(),
        ],
        &img,
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("PCR 7 (sha256) is") && err.contains("no longer have the values"),
        "{err}"
    );
    assert!(!pass2.exists());
}

/// systemd-cryptenroll 252 `--tpm2-public-key` (signed PCR 11 policy, no literal PCRs): the
/// `.pcrsig` comes from a UKI built and signed by bootchain; after PCR 11 holds that UKI's
/// predicted value, `bootchain luks unlock --pcrsig-uki` opens the keyslot. Before, it is
/// refused with the unsigned PCR 11 value.
#[test]
fn systemd_cryptenroll_signed_policy_unlocked_with_a_ukis_pcrsig() {
    let d = tempfile::tempdir().unwrap();
    let (img, key) = luks_image(d.path());
    let (private, public) = make_rsa_keypair(d.path(), "pcr");
    let sw = Swtpm::start();
    cryptenroll(
        &sw,
        &key,
        &img,
        &[
            "--tpm2-pcrs=",
            &format!("--tpm2-public-key={}", public.display()),
            "--tpm2-public-key-pcrs=11",
        ],
        &[],
    );
    let tok = token_json(&img, 0);
    assert_eq!(tok["tpm2_pubkey_pcrs"], serde_json::json!([11]));

    std::fs::write(d.path().join("k"), pseudo_random(90_000, 21)).unwrap();
    let uki = d.path().join("uki.efi");
    bootchain::uki::UkiBuilder::new()
        .stub(require_stub())
        .linux(d.path().join("k"))
        .uname("6.1.0")
        .os_release(bootchain::uki::SectionContent::Bytes(b"ID=t\n".to_vec()))
        .cmdline(bootchain::uki::SectionContent::Bytes(b"quiet".to_vec()))
        .sign_pcr_policy(bootchain::uki::PcrPolicySigner {
            key: Box::new(bootchain::measure::load_pcr_signing_key(&private, None).unwrap()),
            phases: vec![],
            banks: vec![HashAlg::Sha256],
        })
        .build(&uki)
        .unwrap();
    let pass = d.path().join("recovered");
    let args = [
        "luks",
        "unlock",
        "--pcrsig-uki",
        uki.to_str().unwrap(),
        "--passphrase-output",
        pass.to_str().unwrap(),
    ];
    let out = bootchain(&sw, &args, &img);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no PCR policy signature matches this boot"),
        "{}",
        stderr(&out)
    );
    // "Boot" the UKI, up to the "enter-initrd" phase systemd-pcrphase measures before
    // cryptsetup runs (the stub-only value is not among systemd-measure's default phases).
    sw.boot_uki(&uki, "enter-initrd");
    let out = bootchain(&sw, &args, &img);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(opens_slot(&img, 1, &pass));
}

/// systemd-cryptenroll 252 `--tpm2-with-pin` (unsalted PIN hash in 252): the right PIN
/// unlocks, a wrong one is refused with the tries left.
#[test]
fn systemd_cryptenroll_pin_token() {
    let d = tempfile::tempdir().unwrap();
    let (img, key) = luks_image(d.path());
    let sw = Swtpm::start();
    cryptenroll(
        &sw,
        &key,
        &img,
        &["--tpm2-pcrs=7", "--tpm2-with-pin=yes"],
        &[("NEWPIN", "2468")],
    );
    assert_eq!(token_json(&img, 0)["tpm2-pin"], true);
    // A second PIN token (ours, salted PIN) behind it.
    let out = bootchain_pin(
        &sw,
        &[
            "luks",
            "enroll",
            "--pcrs",
            "7",
            "--with-pin",
            "--unlock-key-file",
            key.to_str().unwrap(),
        ],
        &img,
        Some("2468"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pass = d.path().join("recovered");
    let args = [
        "luks",
        "unlock",
        "--passphrase-output",
        pass.to_str().unwrap(),
    ];
    // A wrong PIN costs one try, not one per PIN-protected token (the TPM's lockout
    // threshold is read, not assumed).
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    let before = t.lockout_status().unwrap();
    drop(t);
    assert!(before.max_tries >= 2, "{before:?}");
    let out = bootchain_pin(&sw, &args, &img, Some("1357"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "wrong PIN: {} tries left",
            before.max_tries - before.counter - 1
        )) && !stderr(&out).contains("token 1"),
        "{}",
        stderr(&out)
    );
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    assert_eq!(t.lockout_status().unwrap().counter, before.counter + 1);
    drop(t);
    let out = bootchain(&sw, &args, &img);
    assert!(
        stderr(&out).contains("sealed with a PIN"),
        "{}",
        stderr(&out)
    );
    let out = bootchain_pin(&sw, &args, &img, Some("2468"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(opens_slot(&img, 1, &pass));
    // Our salted-PIN token opens its own keyslot with the same PIN.
    let out = bootchain_pin(
        &sw,
        &[
            "luks",
            "unlock",
            "--token-id",
            "1",
            "--passphrase-output",
            pass.to_str().unwrap(),
        ],
        &img,
        Some("2468"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(opens_slot(&img, 2, &pass));
}

/// systemd-cryptenroll 257 (Debian 13's, in a chroot) `--tpm2-with-pin`: since systemd 253 the
/// PIN is salted (`tpm2_salt`) and the object lives under the persistent SRK (`tpm2_srk`, which
/// 257 creates). bootchain derives the same authValue from PIN and salt: the right PIN opens
/// systemd's keyslot, a wrong one is refused as a wrong PIN with the TPM's count.
#[test]
fn systemd_257_salted_pin_token() {
    let d = tempfile::tempdir().unwrap();
    let (img, key) = luks_image(d.path());
    let sw = Swtpm::start();
    // systemd 257 refuses a key file readable by others.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tcti = format!("--tpm2-device=swtpm:host=127.0.0.1,port={}", sw.port);
    let out = run(&mut trixie_tools(
        d.path(),
        &[("NEWPIN", "2468")],
        &[
            "systemd-cryptenroll",
            "--unlock-key-file=/w/pass",
            &tcti,
            "--tpm2-pcrs=7",
            "--tpm2-with-pin=yes",
            "/w/disk.img",
        ],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("New TPM2 token enrolled as key slot 1"),
        "{}",
        stderr(&out)
    );
    let tok = token_json(&img, 0);
    assert_eq!(tok["tpm2-pin"], true);
    assert!(tok["tpm2_salt"].is_string(), "{tok}");
    assert!(tok["tpm2_srk"].is_string(), "{tok}");
    let pass = d.path().join("recovered");
    let args = [
        "luks",
        "unlock",
        "--passphrase-output",
        pass.to_str().unwrap(),
    ];
    let out = bootchain_pin(&sw, &args, &img, Some("1357"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("wrong PIN"), "{}", stderr(&out));
    assert!(!pass.exists());
    let out = bootchain_pin(&sw, &args, &img, Some("2468"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(opens_slot(&img, 1, &pass));
}

/// systemd-cryptenroll 257 (Debian 13) tokens with literal PCRs and with a signed PCR 11
/// policy (`--tpm2-public-key`): `bootchain luks unlock` opens systemd's keyslot with each —
/// the signed one with a `.pcrsig` over the TPM's current PCR 11.
#[test]
fn systemd_257_literal_and_signed_policy_tokens() {
    let d = tempfile::tempdir().unwrap();
    let (img, key) = luks_image(d.path());
    let sw = Swtpm::start();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (private, public) = make_rsa_keypair(d.path(), "pcr");
    std::fs::copy(&public, d.path().join("pcr.pub.pem")).unwrap();
    let tcti = format!("--tpm2-device=swtpm:host=127.0.0.1,port={}", sw.port);
    for extra in [
        vec!["--tpm2-pcrs=7"],
        vec![
            "--tpm2-pcrs=",
            "--tpm2-public-key=/w/pcr.pub.pem",
            "--tpm2-public-key-pcrs=11",
        ],
    ] {
        let mut args = vec!["systemd-cryptenroll", "--unlock-key-file=/w/pass", &tcti];
        args.extend(extra);
        args.push("/w/disk.img");
        let out = run(&mut trixie_tools(d.path(), &[], &args));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let literal = token_json(&img, 0);
    assert_eq!(literal["tpm2-pcrs"], serde_json::json!([7]));
    let signed = token_json(&img, 1);
    assert_eq!(signed["tpm2_pubkey_pcrs"], serde_json::json!([11]));

    let pass = d.path().join("recovered");
    let out = bootchain(
        &sw,
        &[
            "luks",
            "unlock",
            "--token-id",
            "0",
            "--passphrase-output",
            pass.to_str().unwrap(),
        ],
        &img,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(opens_slot(&img, 1, &pass));
    std::fs::remove_file(&pass).unwrap();

    // The signed token: PCR 11 is 0 on this fresh TPM; sign that as systemd-measure would.
    let key_rsa = bootchain::measure::load_pcr_signing_key(&private, None).unwrap();
    let pred = bootchain::measure::Pcr11Prediction {
        banks: vec![HashAlg::Sha256],
        events: vec![],
        phases: vec![bootchain::measure::PhaseValue {
            phase: bootchain::measure::Phase::after_stub(),
            values: vec![bootchain::hash::Digest::zero(HashAlg::Sha256)],
        }],
    };
    let sigs = bootchain::measure::sign_policies(&pred, &key_rsa).unwrap();
    let sigfile = d.path().join("tpm2-pcr-signature.json");
    std::fs::write(
        &sigfile,
        bootchain::measure::signatures_json(&sigs).to_string(),
    )
    .unwrap();
    let args = |id: &'static str| {
        vec![
            "luks".to_string(),
            "unlock".into(),
            "--token-id".into(),
            id.into(),
            "--pcrsig".into(),
            sigfile.display().to_string(),
            "--passphrase-output".into(),
            pass.display().to_string(),
        ]
    };
    let a = args("1");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let out = bootchain(&sw, &a, &img);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(opens_slot(&img, 2, &pass));
}

/// A token enrolled by `bootchain luks enroll` is standard: tpm2-tools recreate systemd's
/// legacy ECC primary, load the blob, satisfy PolicyPCR and unseal the secret whose base64
/// opens the keyslot. `list` shows it; `remove` removes token and keyslot but never the last
/// keyslot.
#[test]
fn bootchain_token_unsealed_by_tpm2_tools_then_listed_and_removed() {
    for tool in [
        "tpm2_createprimary",
        "tpm2_load",
        "tpm2_policypcr",
        "tpm2_unseal",
    ] {
        require_tool(tool);
    }
    let d = tempfile::tempdir().unwrap();
    let (img, key) = luks_image(d.path());
    let sw = Swtpm::start();
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    t.extend(11, &[HashAlg::Sha256.digest(b"uki")]).unwrap();
    drop(t);
    let out = bootchain(
        &sw,
        &[
            "luks",
            "enroll",
            "--pcrs",
            "7+11",
            "--unlock-key-file",
            key.to_str().unwrap(),
        ],
        &img,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let tok = token_json(&img, 0);
    assert_eq!(tok["type"], "systemd-tpm2");
    // 15: the lock PCR at its boot value, added by default (bootchain-unseal extends it).
    assert_eq!(tok["tpm2-pcrs"], serde_json::json!([7, 11, 15]));
    assert_eq!(tok["tpm2-primary-alg"], "ecc");
    assert_eq!(tok["keyslots"], serde_json::json!(["1"]));

    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let blob = b64.decode(tok["tpm2-blob"].as_str().unwrap()).unwrap();
    let priv_len = usize::from(u16::from_be_bytes([blob[0], blob[1]])) + 2;
    let f = |n: &str| d.path().join(n);
    let (_, secret) = sw.tpm2_tools_unseal(
        d.path(),
        "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth",
        &blob[priv_len..],
        &blob[..priv_len],
        "sha256:7,11,15",
    );

    assert_eq!(secret.len(), 32);
    std::fs::write(f("pass.b64"), b64.encode(&secret)).unwrap();
    assert!(opens_slot(&img, 1, &f("pass.b64")));

    // Our own unlock agrees.
    let out = bootchain(&sw, &["luks", "unlock", "--test"], &img);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = run(Command::new(bootchain_bin())
        .args(["luks", "list", "--json"])
        .arg(&img));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["pcrs"], serde_json::json!([7, 11, 15]));
    assert_eq!(list[0]["parent"], "legacy-ecc");

    let out = run(Command::new(bootchain_bin())
        .args(["luks", "remove", "--token-id", "0"])
        .arg(&img));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!opens_slot(&img, 1, &f("pass.b64")));
    assert!(opens_slot(&img, 0, &key));
    let md = bootchain::luks::Luks::new(&img).metadata().unwrap();
    assert!(md.tokens.is_empty());
    assert_eq!(md.keyslots.keys().copied().collect::<Vec<_>>(), vec![0]);
}

/// Enrolling with a PIN and a signed policy through the CLI, then unlocking: our salted PIN
/// (tpm2_salt) and PolicyAuthorize tokens round-trip; a wrong unlock key leaves the header as it
/// was.
#[test]
fn bootchain_enroll_signed_and_pin_round_trip_and_wrong_unlock_key() {
    let d = tempfile::tempdir().unwrap();
    let (img, key) = luks_image(d.path());
    let (private, public) = make_rsa_keypair(d.path(), "pcr");
    let sw = Swtpm::start();
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    t.extend(11, &[HashAlg::Sha256.digest(b"uki")]).unwrap();
    let v11 = t.read_pcrs(&[(HashAlg::Sha256, 11)]).unwrap()[&(HashAlg::Sha256, 11)].clone();
    drop(t);
    let header = std::fs::read(&img).unwrap()[..16 << 20].to_vec();
    let wrong = d.path().join("wrong");
    std::fs::write(&wrong, b"not the passphrase").unwrap();
    let out = bootchain(
        &sw,
        &[
            "luks",
            "enroll",
            "--pcrs",
            "7",
            "--unlock-key-file",
            wrong.to_str().unwrap(),
        ],
        &img,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does not open"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&img).unwrap()[..16 << 20], header[..]);

    let pin = d.path().join("pin");
    std::fs::write(&pin, "9999\n").unwrap();
    let out = bootchain(
        &sw,
        &[
            "luks",
            "enroll",
            "--pcrs",
            "7",
            "--pcr-public-key",
            public.to_str().unwrap(),
            "--pin-file",
            pin.to_str().unwrap(),
            "--unlock-key-file",
            key.to_str().unwrap(),
        ],
        &img,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let tok = token_json(&img, 0);
    assert_eq!(tok["tpm2-pin"], true);
    assert!(tok["tpm2_salt"].is_string());
    assert_eq!(tok["tpm2_pubkey_pcrs"], serde_json::json!([11]));

    // Sign the current PCR 11 the way systemd-measure does and write the .pcrsig JSON.
    let key_rsa = bootchain::measure::load_pcr_signing_key(&private, None).unwrap();
    let pred = bootchain::measure::Pcr11Prediction {
        banks: vec![HashAlg::Sha256],
        events: vec![],
        phases: vec![bootchain::measure::PhaseValue {
            phase: bootchain::measure::Phase::after_stub(),
            values: vec![v11],
        }],
    };
    let sigs = bootchain::measure::sign_policies(&pred, &key_rsa).unwrap();
    let sigfile = d.path().join("tpm2-pcr-signature.json");
    std::fs::write(
        &sigfile,
        bootchain::measure::signatures_json(&sigs).to_string(),
    )
    .unwrap();
    let pass = d.path().join("recovered");
    let out = bootchain(
        &sw,
        &[
            "luks",
            "unlock",
            "--pcrsig",
            sigfile.to_str().unwrap(),
            "--pin-file",
            pin.to_str().unwrap(),
            "--passphrase-output",
            pass.to_str().unwrap(),
        ],
        &img,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(opens_slot(&img, 1, &pass));
}

/// `--parent srk`: the token records the persistent SRK as `tpm2_srk`, byte-identical to the
/// ESYS_TR serialization tpm2-tools writes (`tpm2_readpublic -t`), and no `tpm2-primary-alg`
/// (systemd ≥ 254's shape). Unlock works; another TPM's SRK is refused by Name.
#[test]
fn enroll_under_the_persistent_srk_records_tpm2_srk() {
    require_tool("tpm2_evictcontrol");
    let d = tempfile::tempdir().unwrap();
    let (img, key) = luks_image(d.path());
    let provision = |sw: &Swtpm| {
        let ctx = d.path().join(format!("srk-{}.ctx", sw.port));
        sw.tools_primary(
            &ctx,
            "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda",
        );
        run_ok(
            sw.tool("tpm2_evictcontrol")
                .args(["-C", "o", "-c"])
                .arg(&ctx)
                .arg("0x81000001"),
        );
        run_ok(sw.tool("tpm2_flushcontext").arg("--transient-object"));
    };
    let sw = Swtpm::start();
    provision(&sw);
    let out = bootchain(
        &sw,
        &[
            "luks",
            "enroll",
            "--pcrs",
            "7",
            "--parent",
            "srk",
            "--unlock-key-file",
            key.to_str().unwrap(),
        ],
        &img,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let tok = token_json(&img, 0);
    assert!(tok.get("tpm2-primary-alg").is_none());
    use base64::Engine as _;
    let srk = base64::engine::general_purpose::STANDARD
        .decode(tok["tpm2_srk"].as_str().unwrap())
        .unwrap();
    let tr = d.path().join("srk.tr");
    run_ok(
        sw.tool("tpm2_readpublic")
            .args(["-c", "0x81000001", "-t"])
            .arg(&tr),
    );
    assert_eq!(
        srk,
        std::fs::read(&tr).unwrap(),
        "tpm2_srk == ESYS_TR serialization"
    );
    let out = bootchain(&sw, &["luks", "unlock", "--test"], &img);
    assert!(out.status.success(), "{}", stderr(&out));

    let other = Swtpm::start();
    provision(&other);
    let out = bootchain(&other, &["luks", "unlock", "--test"], &img);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not the one the secret was sealed under"),
        "{}",
        stderr(&out)
    );
}

/// A key at the SRK handle that is not a storage key (here a signing key: its holder could
/// have made it outside this TPM's storage hierarchy rules) is refused before anything is
/// sealed under it, whether `--parent srk` is asked for or chosen automatically — never a
/// silent switch to another parent — and the header keeps its keyslots. The same enrolment
/// succeeds once a real SRK sits there.
#[test]
fn a_signing_key_at_the_srk_handle_is_refused() {
    require_tool("tpm2_evictcontrol");
    let d = tempfile::tempdir().unwrap();
    let (img, key) = luks_image(d.path());
    let sw = Swtpm::start();
    let persist = |ctx: &Path| {
        run_ok(
            sw.tool("tpm2_evictcontrol")
                .args(["-C", "o", "-c"])
                .arg(ctx)
                .arg("0x81000001"),
        );
        run_ok(sw.tool("tpm2_flushcontext").arg("--transient-object"));
    };
    let signer = d.path().join("signer.ctx");
    run_ok(
        sw.tool("tpm2_createprimary")
            .args(["-C", "o", "-g", "sha256", "-G", "ecc256:ecdsa-sha256", "-a"])
            .arg("sign|fixedtpm|fixedparent|sensitivedataorigin|userwithauth")
            .arg("-c")
            .arg(&signer),
    );
    persist(&signer);
    let keyslots = |img: &Path| {
        let out = run_ok(
            Command::new("cryptsetup")
                .args(["luksDump", "--dump-json-metadata"])
                .arg(img),
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["keyslots"].as_object().unwrap().len()
    };
    // systemd tokens take an explicit parent; bootchain tokens may choose it (auto).
    let enroll = |parent: &str, token_type: &str| {
        bootchain(
            &sw,
            &[
                "luks",
                "enroll",
                "--pcrs",
                "7",
                "--parent",
                parent,
                "--token-type",
                token_type,
                "--unlock-key-file",
                key.to_str().unwrap(),
            ],
            &img,
        )
    };
    for (parent, token_type) in [("srk", "systemd"), ("auto", "bootchain")] {
        let out = enroll(parent, token_type);
        assert!(!out.status.success(), "--parent {parent}");
        assert!(
            stderr(&out).contains("is not a storage root key"),
            "--parent {parent}: {}",
            stderr(&out)
        );
        assert_eq!(keyslots(&img), 1, "--parent {parent} touched the header");
    }
    // Positive control: a storage key at the same handle.
    run_ok(
        sw.tool("tpm2_evictcontrol")
            .args(["-C", "o", "-c", "0x81000001"]),
    );
    let srk = d.path().join("srk.ctx");
    sw.tools_primary(
        &srk,
        "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda",
    );
    persist(&srk);
    let out = enroll("srk", "systemd");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(keyslots(&img), 2);
}

/// A `bootchain-tpm2` token (our envelope in the header) next to a systemd-cryptenroll token:
/// both unlock; after PCR 11 changes ours names PCR 11 with its current and sealed value while
/// systemd's (PCR 7 only) still opens; another TPM is refused by the parent Name; `remove`
/// takes our token and its keyslot.
#[test]
fn bootchain_token_type_next_to_a_systemd_token() {
    let d = tempfile::tempdir().unwrap();
    let (img, key) = luks_image(d.path());
    let sw = Swtpm::start();
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    t.extend(7, &[HashAlg::Sha256.digest(b"db")]).unwrap();
    t.extend(11, &[HashAlg::Sha256.digest(b"uki")]).unwrap();
    let sealed11 = t.read_pcrs(&[(HashAlg::Sha256, 11)]).unwrap()[&(HashAlg::Sha256, 11)].clone();
    drop(t);
    cryptenroll(&sw, &key, &img, &["--tpm2-pcrs=7"], &[]);
    let out = bootchain(
        &sw,
        &[
            "luks",
            "enroll",
            "--token-type",
            "bootchain",
            "--pcrs",
            "7+11",
            "--unlock-key-file",
            key.to_str().unwrap(),
        ],
        &img,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let tok = token_json(&img, 1);
    assert_eq!(tok["type"], "bootchain-tpm2");
    assert_eq!(tok["keyslots"], serde_json::json!(["2"]));
    assert_eq!(tok["bootchain_envelope"]["parent"]["kind"], "ecc-p256");
    let out = run(Command::new(bootchain_bin())
        .args(["luks", "list", "--json"])
        .arg(&img));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[1]["pcrs"], serde_json::json!([7, 11, 15]));

    let pass = d.path().join("recovered");
    let ours = [
        "luks",
        "unlock",
        "--token-id",
        "1",
        "--passphrase-output",
        pass.to_str().unwrap(),
    ];
    let out = bootchain(&sw, &ours, &img);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(opens_slot(&img, 2, &pass));
    std::fs::remove_file(&pass).unwrap();

    let mut t = Tpm::open(&sw.tcti()).unwrap();
    t.extend(11, &[HashAlg::Sha256.digest(b"other uki")])
        .unwrap();
    let now11 = t.read_pcrs(&[(HashAlg::Sha256, 11)]).unwrap()[&(HashAlg::Sha256, 11)].clone();
    drop(t);
    let out = bootchain(&sw, &ours, &img);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "PCR 11 (sha256) is {now11} but the secret was sealed to {sealed11}"
        )),
        "{}",
        stderr(&out)
    );
    assert!(!pass.exists());
    // Without --token-id the systemd token (PCR 7 only) still opens the volume.
    let out = bootchain(&sw, &["luks", "unlock", "--test"], &img);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("token 0"), "{}", stderr(&out));

    let other = Swtpm::start();
    let out = bootchain(
        &other,
        &["luks", "unlock", "--test", "--token-id", "1"],
        &img,
    );
    assert!(
        stderr(&out).contains("not the one the secret was sealed under"),
        "{}",
        stderr(&out)
    );

    let out = run(Command::new(bootchain_bin())
        .args(["luks", "remove", "--token-id", "1"])
        .arg(&img));
    assert!(out.status.success(), "{}", stderr(&out));
    let md = bootchain::luks::Luks::new(&img).metadata().unwrap();
    assert_eq!(md.tokens.keys().copied().collect::<Vec<_>>(), vec![0]);
    assert_eq!(md.keyslots.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
}

/// A file that is not a LUKS2 header, with a working TPM (so the TPM cannot be what stops
/// the command): `luks enroll` and `luks unlock --test` fail naming the header problem and
/// leave the file untouched. Positive control: the same commands on a LUKS2 image succeed.
#[test]
fn not_a_luks2_header_is_refused_with_a_working_tpm() {
    let d = tempfile::tempdir().unwrap();
    let (img, key) = luks_image(d.path());
    let sw = Swtpm::start();
    let enroll = [
        "luks",
        "enroll",
        "--pcrs",
        "7",
        "--unlock-key-file",
        key.to_str().unwrap(),
    ];
    let unlock = ["luks", "unlock", "--test"];
    let out = bootchain(&sw, &enroll, &img);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = bootchain(&sw, &unlock, &img);
    assert!(out.status.success(), "{}", stderr(&out));

    let not_luks = d.path().join("plain.img");
    std::fs::write(&not_luks, vec![0u8; 1 << 20]).unwrap();
    for args in [&enroll[..], &unlock[..]] {
        let out = bootchain(&sw, args, &not_luks);
        let err = stderr(&out);
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(
            err.contains("no LUKS2 header"),
            "{args:?} stopped elsewhere: {err}"
        );
    }
    assert_eq!(std::fs::read(&not_luks).unwrap(), vec![0u8; 1 << 20]);
}

/// systemd's PIN authValue computed without our code: PBKDF2-HMAC-SHA256 by openssl (10000
/// iterations over `tpm2_salt`), base64, SHA-256 (sha256sum), trailing zero bytes removed
/// (systemd src/shared/tpm2-util.c; TPM 2.0 Part 1 §17.6.4.3). Returns it as hex.
fn pin_auth_value_by_tools(pin: &str, salt: &[u8]) -> String {
    use base64::Engine as _;
    let kdf = run_ok(
        Command::new("openssl")
            .args(["kdf", "-keylen", "32", "-kdfopt", "digest:SHA256"])
            .arg("-kdfopt")
            .arg(format!("pass:{pin}"))
            .arg("-kdfopt")
            .arg(format!("hexsalt:{}", hex::encode(salt)))
            .args(["-kdfopt", "iter:10000", "PBKDF2"]),
    );
    let key = hex::decode(kdf.trim().replace(':', "")).unwrap();
    let text = base64::engine::general_purpose::STANDARD.encode(key);
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("t"), text).unwrap();
    let sum = run_ok(Command::new("sha256sum").arg(d.path().join("t")));
    let mut digest = hex::decode(sum.split_whitespace().next().unwrap()).unwrap();
    while digest.last() == Some(&0) {
        digest.pop();
    }
    hex::encode(digest)
}

/// Tokens that `bootchain luks enroll` writes with a PIN, and with a PIN and a signed PCR
/// policy, are unsealed by tpm2-tools alone, replaying systemd's policy (systemd
/// src/shared/tpm2-util.c `tpm2_make_policy_session`): [PolicyPCR on the signed PCRs,
/// VerifySignature, PolicyAuthorize,] PolicyPCR on the literal PCRs, PolicyAuthValue; the
/// session carries the authValue derived from the PIN and `tpm2_salt` by openssl. Control:
/// the same session with a wrong PIN is refused by the TPM.
#[test]
fn bootchain_pin_and_signed_pin_tokens_unsealed_by_tpm2_tools() {
    for tool in [
        "tpm2_createprimary",
        "tpm2_load",
        "tpm2_loadexternal",
        "tpm2_verifysignature",
        "tpm2_policyauthorize",
        "tpm2_policyauthvalue",
        "tpm2_unseal",
    ] {
        require_tool(tool);
    }
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let d = tempfile::tempdir().unwrap();
    let f = |n: &str| d.path().join(n);
    let (img, key) = luks_image(d.path());
    let (private, public) = make_rsa_keypair(d.path(), "pcr");
    let sw = Swtpm::start();
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    t.extend(11, &[HashAlg::Sha256.digest(b"uki")]).unwrap();
    let v11 = t.read_pcrs(&[(HashAlg::Sha256, 11)]).unwrap()[&(HashAlg::Sha256, 11)].clone();
    drop(t);
    std::fs::write(f("pin"), "9999\n").unwrap();
    let pin_file = f("pin");
    let enroll = |extra: &[&str]| {
        let mut args = vec!["luks", "enroll", "--pcrs", "7"];
        args.extend(["--pin-file", pin_file.to_str().unwrap()]);
        args.extend(extra);
        args.extend(["--unlock-key-file", key.to_str().unwrap()]);
        let out = bootchain(&sw, &args, &img);
        assert!(out.status.success(), "{}", stderr(&out));
    };
    enroll(&[]);
    enroll(&["--pcr-public-key", public.to_str().unwrap()]);

    // The signed PCR 11 policy, as systemd-measure signs it.
    let key_rsa = bootchain::measure::load_pcr_signing_key(&private, None).unwrap();
    let pred = bootchain::measure::Pcr11Prediction {
        banks: vec![HashAlg::Sha256],
        events: vec![],
        phases: vec![bootchain::measure::PhaseValue {
            phase: bootchain::measure::Phase::after_stub(),
            values: vec![v11],
        }],
    };
    let sigs = bootchain::measure::sign_policies(&pred, &key_rsa).unwrap();
    let entry = &sigs[0].1[0];
    std::fs::write(f("pol.bin"), hex::decode(&entry.pol).unwrap()).unwrap();
    std::fs::write(
        f("sig.bin"),
        b64.decode(entry.sig.as_deref().unwrap()).unwrap(),
    )
    .unwrap();

    let attrs = "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth";
    let path_arg = |n: &str| f(n).to_str().unwrap().to_string();
    for (id, signed) in [(0u32, false), (1, true)] {
        let tok = token_json(&img, id);
        assert_eq!(tok["tpm2-pin"], true);
        assert_eq!(tok["tpm2_pubkey_pcrs"].is_array(), signed, "{tok}");
        let salt = b64.decode(tok["tpm2_salt"].as_str().unwrap()).unwrap();
        let blob = b64.decode(tok["tpm2-blob"].as_str().unwrap()).unwrap();
        let priv_len = usize::from(u16::from_be_bytes([blob[0], blob[1]])) + 2;
        std::fs::write(f("obj.priv"), &blob[..priv_len]).unwrap();
        std::fs::write(f("obj.pub"), &blob[priv_len..]).unwrap();
        sw.tools_primary(&f("prim.ctx"), attrs);
        run_ok(sw.tool("tpm2_load").args([
            "-C",
            &path_arg("prim.ctx"),
            "-u",
            &path_arg("obj.pub"),
            "-r",
            &path_arg("obj.priv"),
            "-c",
            &path_arg("obj.ctx"),
        ]));
        run_ok(sw.tool("tpm2_flushcontext").arg("--transient-object"));
        let unseal = |pin: &str| {
            let s = path_arg("s.ctx");
            run_ok(
                sw.tool("tpm2_startauthsession")
                    .args(["--policy-session", "-S", &s]),
            );
            if signed {
                run_ok(
                    sw.tool("tpm2_policypcr")
                        .args(["-S", &s, "-l", "sha256:11"]),
                );
                run_ok(sw.tool("tpm2_loadexternal").args([
                    "-C",
                    "o",
                    "-G",
                    "rsa",
                    "-u",
                    public.to_str().unwrap(),
                    "-c",
                    &path_arg("pk.ctx"),
                    "-n",
                    &path_arg("pk.name"),
                ]));
                run_ok(sw.tool("tpm2_verifysignature").args([
                    "-c",
                    &path_arg("pk.ctx"),
                    "-g",
                    "sha256",
                    "-m",
                    &path_arg("pol.bin"),
                    "-s",
                    &path_arg("sig.bin"),
                    "-f",
                    "rsassa",
                    "-t",
                    &path_arg("ticket.bin"),
                ]));
                run_ok(sw.tool("tpm2_flushcontext").arg("--transient-object"));
                run_ok(sw.tool("tpm2_policyauthorize").args([
                    "-S",
                    &s,
                    "-i",
                    &path_arg("pol.bin"),
                    "-n",
                    &path_arg("pk.name"),
                    "-t",
                    &path_arg("ticket.bin"),
                ]));
            }
            run_ok(
                sw.tool("tpm2_policypcr")
                    .args(["-S", &s, "-l", "sha256:7,15"]),
            );
            run_ok(sw.tool("tpm2_policyauthvalue").args(["-S", &s]));
            let auth = pin_auth_value_by_tools(pin, &salt);
            let _ = std::fs::remove_file(f("unsealed"));
            let out = run(sw.tool("tpm2_unseal").args([
                "-c",
                &path_arg("obj.ctx"),
                "-p",
                &format!("session:{s}+hex:{auth}"),
                "-o",
                &path_arg("unsealed"),
            ]));
            run_ok(sw.tool("tpm2_flushcontext").arg(&s));
            out
        };
        // Control: a wrong PIN is refused by the TPM (TPM_RC_AUTH_FAIL on the session).
        let out = unseal("1111");
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("Esys_Unseal(0x98E)")
                && stderr(&out).contains("authorization HMAC check failed"),
            "{}",
            stderr(&out)
        );
        // Forget that failure, whatever the TPM's lockout threshold.
        run_ok(sw.tool("tpm2_dictionarylockout").arg("--clear-lockout"));
        let out = unseal("9999");
        assert!(out.status.success(), "token {id}: {}", stderr(&out));
        let secret = std::fs::read(f("unsealed")).unwrap();
        assert_eq!(secret.len(), 32);
        std::fs::write(f("pass.b64"), b64.encode(&secret)).unwrap();
        let slot: u32 = tok["keyslots"][0].as_str().unwrap().parse().unwrap();
        assert!(opens_slot(&img, slot, &f("pass.b64")), "token {id}");
        run_ok(sw.tool("tpm2_flushcontext").arg("--transient-object"));
    }
}
