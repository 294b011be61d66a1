//! Sealing to PCR values on swtpm (one instance per test): round trip, refusal naming the
//! changed PCR, tampering, a TPM swap, and sealing to values predicted for a UKI.

mod common;

use bootchain::eventlog::PcrValues;
use bootchain::hash::{Digest, HashAlg};
use bootchain::seal::{self, Envelope, SealError, UnsealOptions};
use bootchain::tpm::Tpm;
use common::swtpm::Swtpm;
use common::*;

fn current(t: &mut Tpm, pcrs: &[u32]) -> PcrValues {
    let want: Vec<_> = pcrs.iter().map(|p| (HashAlg::Sha256, *p)).collect();
    t.read_pcrs(&want).unwrap()
}

fn seal_to(
    t: &mut Tpm,
    pcrs: &[u32],
    values: &PcrValues,
    secret: &[u8],
) -> Result<Envelope, SealError> {
    seal::seal(t, &seal_request(pcrs, values), secret)
}

fn unseal_plain(t: &mut Tpm, env: &Envelope) -> Result<zeroize::Zeroizing<Vec<u8>>, SealError> {
    seal::unseal(t, env, &UnsealOptions::default())
}

fn fresh_tpm(sw: &Swtpm) -> Tpm {
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    // Guard: a private, fresh swtpm has PCR 11 all zero.
    let v = current(&mut t, &[11]);
    assert!(v.values().all(|d| d.as_bytes().iter().all(|&b| b == 0)));
    t
}

#[test]
fn round_trip_then_refused_naming_the_changed_pcr() {
    let sw = Swtpm::start();
    let mut t = fresh_tpm(&sw);
    t.extend(7, &[HashAlg::Sha256.digest(b"secure boot state")])
        .unwrap();
    let secret = pseudo_random(5000, 3);
    let vals = current(&mut t, &[7, 11]);
    let env = seal_to(&mut t, &[11, 7], &vals, &secret).unwrap();
    assert_eq!(env.policy.pcrs, vec![7, 11]);
    // The envelope round-trips through its JSON form.
    let env = Envelope::from_json(&serde_json::to_string(&env).unwrap()).unwrap();
    assert_eq!(&*unseal_plain(&mut t, &env).unwrap(), &secret[..]);
    assert_eq!(&*unseal_plain(&mut t, &env).unwrap(), &secret[..]);
    t.extend(11, &[HashAlg::Sha256.digest(b"something else booted")])
        .unwrap();
    match unseal_plain(&mut t, &env) {
        Err(SealError::PcrMismatch(d)) => {
            assert_eq!(d.len(), 1);
            assert_eq!((d[0].bank, d[0].pcr), (HashAlg::Sha256, 11));
            let msg = SealError::PcrMismatch(d).to_string();
            assert!(msg.contains("PCR 11 (sha256)"), "{msg}");
        }
        other => panic!("expected a PCR mismatch, got {other:?}"),
    }
}

#[test]
fn tampered_envelope_or_blob_is_refused() {
    let sw = Swtpm::start();
    let mut t = fresh_tpm(&sw);
    let vals = current(&mut t, &[11]);
    let env = seal_to(&mut t, &[11], &vals, b"disk key").unwrap();
    // Ciphertext.
    let mut e = env.clone();
    e.payload.ciphertext[0] ^= 1;
    assert!(matches!(unseal_plain(&mut t, &e), Err(SealError::Tampered)));
    // The parent Name is bound (and checked against the TPM).
    let mut e = env.clone();
    *e.parent.name.last_mut().unwrap() ^= 1;
    let msg = unseal_plain(&mut t, &e).unwrap_err().to_string();
    assert!(
        msg.contains("not the one the secret was sealed under"),
        "{msg}"
    );
    // Recorded values edited: refused before touching the TPM.
    let mut e = env.clone();
    e.policy.values.insert(
        bootchain::pcr::PcrIndex::new(11).unwrap(),
        bootchain::hash::Digest::new(HashAlg::Sha256, vec![0x11; 32]).unwrap(),
    );
    assert!(matches!(
        unseal_plain(&mut t, &e),
        Err(SealError::Envelope(_))
    ));
    // The TPM private blob.
    let mut e = env.clone();
    let n = e.tpm.private.len() - 3;
    e.tpm.private[n] ^= 0x40;
    assert!(matches!(
        unseal_plain(&mut t, &e),
        Err(SealError::Unseal(_) | SealError::Tpm(_))
    ));
    // Still fine untouched.
    assert_eq!(&*unseal_plain(&mut t, &env).unwrap(), b"disk key");
}

#[test]
fn another_tpm_is_refused_with_the_parent_name_reason() {
    let a = Swtpm::start();
    let b = Swtpm::start();
    let mut ta = fresh_tpm(&a);
    let mut tb = fresh_tpm(&b);
    let vals = current(&mut ta, &[11]);
    let env = seal_to(&mut ta, &[11], &vals, b"k").unwrap();
    let err = unseal_plain(&mut tb, &env).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("not the one the secret was sealed under"),
        "{msg}"
    );
}

/// Seal to the PCR 11 predicted for a UKI, boot nothing, extend the swtpm's PCR 11 with the
/// events the predictor lists, and unseal: prediction and sealing agree.
#[test]
fn sealing_to_a_predicted_uki_unseals_after_replaying_its_events() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("k"), pseudo_random(90_000, 8)).unwrap();
    std::fs::write(d.path().join("i"), pseudo_random(10_000, 9)).unwrap();
    let uki = d.path().join("uki.efi");
    bootchain::uki::UkiBuilder::new()
        .stub(require_stub())
        .linux(d.path().join("k"))
        .initrd(d.path().join("i"))
        .uname("6.1.0")
        .os_release(bootchain::uki::SectionContent::Bytes(b"ID=t\n".to_vec()))
        .build(&uki)
        .unwrap();
    let pred = bootchain::measure::predict_uki(
        &uki,
        None,
        &[HashAlg::Sha256],
        &[bootchain::measure::Phase::after_stub()],
    )
    .unwrap();
    let mut vals = PcrValues::new();
    vals.insert(
        (HashAlg::Sha256, 11),
        pred.value(HashAlg::Sha256, &bootchain::measure::Phase::after_stub())
            .unwrap()
            .clone(),
    );
    let sw = Swtpm::start();
    let mut t = fresh_tpm(&sw);
    let env = seal_to(&mut t, &[11], &vals, b"root volume key").unwrap();
    assert!(matches!(
        unseal_plain(&mut t, &env),
        Err(SealError::PcrMismatch(_))
    ));
    sw.boot_uki(&uki, "");
    assert_eq!(&*unseal_plain(&mut t, &env).unwrap(), b"root volume key");
}

#[test]
fn cli_seal_unseal_round_trip_and_refusal() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    let sw = Swtpm::start();
    let d = tempfile::tempdir().unwrap();
    let env = d.path().join("root.sealed.json");
    let secret = d.path().join("secret");
    run_ok(
        Command::new(bootchain_bin())
            .args(["seal", "--pcrs", "7+11", "--random", "--tcti"])
            .arg(sw.tcti())
            .arg("--secret-output")
            .arg(&secret)
            .arg("-o")
            .arg(&env),
    );
    for p in [&env, &secret] {
        assert_eq!(
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    // The secret's file cannot be written: no envelope appears either (its random secret
    // would be lost), and no temporary file is left.
    let env2 = d.path().join("second.sealed.json");
    let seal_into = |secret_dir: &str| {
        run(Command::new(bootchain_bin())
            .args(["seal", "--pcrs", "7", "--random", "--tcti"])
            .arg(sw.tcti())
            .arg("--secret-output")
            .arg(d.path().join(secret_dir).join("secret2"))
            .arg("-o")
            .arg(&env2))
    };
    let listing = || {
        let mut left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        left
    };
    let out = seal_into("no-such-dir");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no-such-dir/secret2") && err.contains("No such file or directory"),
        "stopped elsewhere: {err}"
    );
    assert_eq!(listing(), ["root.sealed.json", "secret"]);
    // Positive control: the same command with a writable secret path writes both.
    let out = seal_into(".");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        listing(),
        [
            "root.sealed.json",
            "second.sealed.json",
            "secret",
            "secret2"
        ]
    );
    let out = run(Command::new(bootchain_bin())
        .args(["unseal", "--tcti"])
        .arg(sw.tcti())
        .arg(&env));
    assert!(out.status.success());
    assert_eq!(out.stdout, std::fs::read(&secret).unwrap());
    // A tampered envelope: refused, nothing written.
    let mut e = Envelope::from_json(&std::fs::read_to_string(&env).unwrap()).unwrap();
    e.payload.ciphertext[3] ^= 0x80;
    let bad = d.path().join("tampered.json");
    std::fs::write(&bad, serde_json::to_string(&e).unwrap()).unwrap();
    let target = d.path().join("unsealed");
    let out = run(Command::new(bootchain_bin())
        .args(["unseal", "--tcti"])
        .arg(sw.tcti())
        .arg(&bad)
        .arg("-o")
        .arg(&target));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not decrypt"));
    assert!(!target.exists());
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    t.extend(7, &[HashAlg::Sha256.digest(b"new db")]).unwrap();
    drop(t);
    let target = d.path().join("unsealed");
    let out = run(Command::new(bootchain_bin())
        .args(["unseal", "--tcti"])
        .arg(sw.tcti())
        .arg(&env)
        .arg("-o")
        .arg(&target));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("PCR 7 (sha256)"),
        "{err}"
    );
    assert!(!target.exists());
}

/// tpm2-tools, not our code, loads and unseals our sealed object under the same TCG ECC
/// primary with a PolicyPCR session, and the key it recovers opens the envelope as the
/// documented format says (AES-256-GCM, AAD = the header lines): the blob is standard.
#[test]
fn tpm2_tools_unseal_our_blob_and_the_key_opens_the_envelope() {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    for tool in [
        "tpm2_createprimary",
        "tpm2_load",
        "tpm2_policypcr",
        "tpm2_unseal",
    ] {
        require_tool(tool);
    }
    let sw = Swtpm::start();
    let mut t = fresh_tpm(&sw);
    t.extend(11, &[HashAlg::Sha256.digest(b"booted")]).unwrap();
    let vals = current(&mut t, &[11]);
    let env = seal_to(&mut t, &[11], &vals, b"the root volume key").unwrap();
    assert_eq!(env.parent.kind.as_str(), "ecc-p256");
    drop(t);
    let d = tempfile::tempdir().unwrap();
    let tpm2b = |b: Vec<u8>| {
        let mut v = (b.len() as u16).to_be_bytes().to_vec();
        v.extend(b);
        v
    };
    let (name, kek) = sw.tpm2_tools_unseal(
        d.path(),
        "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda",
        &tpm2b(env.tpm.public.clone()),
        &tpm2b(env.tpm.private.clone()),
        "sha256:11",
    );
    assert_eq!(
        name, env.parent.name,
        "tpm2-tools' TCG ECC primary has the Name recorded in the envelope"
    );

    assert_eq!(kek.len(), 32);
    let aad = format!(
        "bootchain-sealed/1\n{}\nsha256:11\n{}\n",
        env.policy.digest.to_hex(),
        hex::encode(&env.parent.name)
    );
    let nonce: [u8; 12] = env.payload.nonce.clone().try_into().unwrap();
    let pt = aes_gcm::Aes256Gcm::new_from_slice(&kek)
        .unwrap()
        .decrypt(
            &aes_gcm::Nonce::from(nonce),
            Payload {
                msg: &env.payload.ciphertext,
                aad: aad.as_bytes(),
            },
        )
        .unwrap();
    assert_eq!(pt, b"the root volume key");
}

/// `pcr predict --json` → `seal --pcr-values`: seal to the PCR 4 and PCR 11 values predicted for
/// a UKI booting without Secure Boot; nothing booted, so unsealing is refused naming both
/// PCRs; after the swtpm is extended with exactly the events the prediction lists, it unseals.
#[test]
fn cli_seal_to_predicted_firmware_and_uki_pcrs() {
    use std::process::Command;
    let d = tempfile::tempdir().unwrap();
    let uki = d.path().join("uki.efi");
    bootchain::uki::UkiBuilder::new()
        .stub(require_stub())
        .linux(kernel())
        .uname("6.1.0")
        .os_release(bootchain::uki::SectionContent::Bytes(b"ID=t\n".to_vec()))
        .build(&uki)
        .unwrap();
    let out = run_ok(
        Command::new(bootchain_bin())
            .args(["pcr", "predict", "--secureboot", "off", "--bank", "sha256"])
            .args(["--phase", "", "--json", "--uki"])
            .arg(&uki),
    );
    let pred = d.path().join("predicted.json");
    std::fs::write(&pred, &out).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let sw = Swtpm::start();
    let env = d.path().join("root.sealed");
    let secret = d.path().join("secret");
    run_ok(
        Command::new(bootchain_bin())
            .args(["seal", "--pcrs", "4+11", "--random", "--tcti"])
            .arg(sw.tcti())
            .arg("--pcr-values")
            .arg(&pred)
            .arg("--secret-output")
            .arg(&secret)
            .arg("-o")
            .arg(&env),
    );
    let unseal = || {
        run(Command::new(bootchain_bin())
            .args(["unseal", "--tcti"])
            .arg(sw.tcti())
            .arg(&env))
    };
    let o = unseal();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("PCR 4 (sha256)") && err.contains("PCR 11 (sha256)"),
        "{err}"
    );
    // "Boot": every predicted event, firmware first, then the stub's.
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    let mut events: Vec<&serde_json::Value> = v["firmware"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["pcr"] == 4)
        .flat_map(|p| p["events"].as_array().unwrap())
        .collect();
    events.extend(v["events"].as_array().unwrap());
    assert!(events.len() >= 4, "{events:?}");
    for e in events {
        let pcr = e["pcr"].as_u64().unwrap() as u32;
        let dg =
            Digest::from_hex(HashAlg::Sha256, e["digests"]["sha256"].as_str().unwrap()).unwrap();
        t.extend(pcr, &[dg]).unwrap();
    }
    drop(t);
    let o = unseal();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, std::fs::read(&secret).unwrap());
}
