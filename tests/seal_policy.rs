//! Signed PCR policies (PolicyAuthorize + `.pcrsig`), PINs (PolicyAuthValue, dictionary-attack
//! lockout) and parent keys, on swtpm (one instance per test).

mod common;

use bootchain::eventlog::PcrValues;
use bootchain::hash::{Digest, HashAlg};
use bootchain::measure::{self, Pcr11Prediction, PcrSignatures, PhaseValue};
use bootchain::seal::{self, AuthorizeKey, Envelope, SealError, SealRequest, UnsealOptions};
use bootchain::tpm::{ParentChoice, ParentKind, Tpm, UnsealError};
use common::swtpm::Swtpm;
use common::*;

fn pcr(t: &mut Tpm, i: u32) -> Digest {
    t.read_pcrs(&[(HashAlg::Sha256, i)]).unwrap()[&(HashAlg::Sha256, i)].clone()
}

fn values(t: &mut Tpm, pcrs: &[u32]) -> PcrValues {
    let want: Vec<_> = pcrs.iter().map(|p| (HashAlg::Sha256, *p)).collect();
    t.read_pcrs(&want).unwrap()
}

/// `.pcrsig` for one PCR 11 value, as `systemd-measure sign` makes it.
fn sign_pcr11(key: &rsa::RsaPrivateKey, v: &Digest) -> PcrSignatures {
    let pred = Pcr11Prediction {
        banks: vec![HashAlg::Sha256],
        events: vec![],
        phases: vec![PhaseValue {
            phase: bootchain::measure::Phase::after_stub(),
            values: vec![v.clone()],
        }],
    };
    measure::sign_policies(&pred, key).unwrap()
}

fn pcr_key(dir: &std::path::Path, name: &str) -> rsa::RsaPrivateKey {
    let (private, _) = make_rsa_keypair(dir, name);
    measure::load_pcr_signing_key(&private, None).unwrap()
}

fn unseal_with(
    t: &mut Tpm,
    env: &Envelope,
    sigs: Option<&PcrSignatures>,
    pin: Option<&[u8]>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, SealError> {
    seal::unseal(
        t,
        env,
        &UnsealOptions {
            signatures: sigs,
            pin,
            pcrlock: None,
        },
    )
}

/// Signed PCR 11 policy plus literal PCR 7: after PCR 11 changes, the old signatures are
/// refused (naming PCR 11 and its value) until a signature for the new value exists; then
/// the same envelope unseals without resealing. A PCR 7 change is refused naming PCR 7.
#[test]
fn signed_policy_needs_a_new_signature_not_a_reseal() {
    let d = tempfile::tempdir().unwrap();
    let key = pcr_key(d.path(), "pcr");
    let other = pcr_key(d.path(), "other");
    let sw = Swtpm::start();
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    t.extend(7, &[HashAlg::Sha256.digest(b"sb state")]).unwrap();
    t.extend(11, &[HashAlg::Sha256.digest(b"uki 1")]).unwrap();
    let v1 = pcr(&mut t, 11);
    let ak = AuthorizeKey {
        key: key.to_public_key(),
        pcrs: vec![11],
    };
    let vals = values(&mut t, &[7]);
    let req = SealRequest {
        authorize: Some(&ak),
        ..seal_request(&[7], &vals)
    };
    let env = seal::seal(&mut t, &req, b"root key").unwrap();
    let env = Envelope::from_json(&serde_json::to_string(&env).unwrap()).unwrap();
    // systemd's order: PolicyAuthorize, then PolicyPCR(7), computed in software.
    let name = bootchain::policy::object_name(
        &bootchain::policy::rsa_public_area(&key.to_public_key()).unwrap(),
    );
    let expect = bootchain::policy::policy_pcr(
        &bootchain::policy::policy_authorize(&name, b""),
        &[bootchain::policy::PcrSelection::new(
            HashAlg::Sha256,
            [bootchain::policy::PcrIndex::new(7).unwrap()],
        )],
        &[vals[&(HashAlg::Sha256, 7)].clone()],
    )
    .unwrap();
    assert_eq!(env.policy.digest, expect);

    let sigs1 = sign_pcr11(&key, &v1);
    assert_eq!(
        &*unseal_with(&mut t, &env, Some(&sigs1), None).unwrap(),
        b"root key"
    );
    assert!(matches!(
        unseal_with(&mut t, &env, None, None),
        Err(SealError::SignaturesRequired)
    ));

    // A signature by another key, relabelled with our key's fingerprint: the TPM rejects it.
    let mut forged = sign_pcr11(&other, &v1);
    let fp = measure::public_key_fingerprint(&key.to_public_key())
        .unwrap()
        .to_hex();
    forged[0].1[0].pkfp = Some(fp);
    match unseal_with(&mut t, &env, Some(&forged), None) {
        Err(SealError::Unseal(UnsealError::SignatureRejected(_))) => {}
        other => panic!("expected the TPM to reject the signature, got {other:?}"),
    }

    // PCR 11 changes: old signatures no longer match.
    t.extend(11, &[HashAlg::Sha256.digest(b"uki 2")]).unwrap();
    let v2 = pcr(&mut t, 11);
    let err = unseal_with(&mut t, &env, Some(&sigs1), None).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, SealError::NotSigned { .. })
            && msg.contains(&format!("PCR 11 (sha256) is {v2}")),
        "{msg}"
    );
    // The key holder signs the new value: same envelope, no reseal.
    let mut sigs = sigs1.clone();
    measure::merge_signatures(&mut sigs, sign_pcr11(&key, &v2));
    assert_eq!(
        &*unseal_with(&mut t, &env, Some(&sigs), None).unwrap(),
        b"root key"
    );

    // The literal part still binds PCR 7.
    t.extend(7, &[HashAlg::Sha256.digest(b"new db")]).unwrap();
    match unseal_with(&mut t, &env, Some(&sigs), None) {
        Err(SealError::PcrMismatch(d)) => {
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].pcr, 7);
        }
        other => panic!("expected PCR 7 mismatch, got {other:?}"),
    }
}

/// PIN: missing → asked for; wrong → refused with the tries left (counted from the threshold
/// the TPM reports); after the last try the TPM is locked out, even for the right PIN.
#[test]
fn wrong_pin_reports_tries_left_then_lockout() {
    let sw = Swtpm::start();
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    let before = t.lockout_status().unwrap();
    assert_eq!(before.counter, 0);
    let vals = values(&mut t, &[11]);
    let req = SealRequest {
        pin: Some(b"1234"),
        ..seal_request(&[11], &vals)
    };
    let env = seal::seal(&mut t, &req, b"pinned").unwrap();
    assert!(env.policy.pin.is_some());
    assert!(matches!(
        unseal_with(&mut t, &env, None, None),
        Err(SealError::PinRequired)
    ));
    assert_eq!(
        &*unseal_with(&mut t, &env, None, Some(b"1234")).unwrap(),
        b"pinned"
    );
    let max = before.max_tries;
    assert!(max >= 2, "swtpm allows {max} tries");
    for n in 1..=max {
        let err = unseal_with(&mut t, &env, None, Some(b"4321")).unwrap_err();
        match &err {
            SealError::Unseal(UnsealError::BadPin { tries_left }) => {
                assert_eq!(*tries_left, Some(max - n), "after {n} wrong PINs");
            }
            other => panic!("expected a wrong-PIN error, got {other:?}"),
        }
        if n == 1 {
            assert!(
                err.to_string().contains(&format!("{} tries left", max - 1)),
                "{err}"
            );
        }
    }
    let err = unseal_with(&mut t, &env, None, Some(b"1234")).unwrap_err();
    assert!(
        matches!(err, SealError::Unseal(UnsealError::LockedOut { .. }))
            && err.to_string().contains("locked out"),
        "{err}"
    );
}

/// Explicit parents: RSA-2048 (the fallback for TPMs without ECC), systemd's legacy ECC
/// template, and a persisted SRK (auto picks it once present); a blob under the SRK is
/// refused by another TPM with the parent-name reason.
#[test]
fn parents_rsa_legacy_and_persistent_srk() {
    let sw = Swtpm::start();
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    let vals = values(&mut t, &[11]);
    for (choice, kind) in [
        (ParentChoice::Kind(ParentKind::Rsa2048), "rsa-2048"),
        (ParentChoice::Kind(ParentKind::LegacyEcc), "legacy-ecc"),
        (ParentChoice::Auto, "ecc-p256"),
    ] {
        let req = SealRequest {
            parent: choice,
            ..seal_request(&[11], &vals)
        };
        let env = seal::seal(&mut t, &req, kind.as_bytes()).unwrap();
        assert_eq!(env.parent.kind.as_str(), kind);
        assert_eq!(
            &*unseal_with(&mut t, &env, None, None).unwrap(),
            kind.as_bytes()
        );
    }
    let name = t.provision_srk().unwrap();
    let env = seal::seal(&mut t, &seal_request(&[11], &vals), b"under srk").unwrap();
    assert_eq!(env.parent.kind.as_str(), "srk");
    assert_eq!(env.parent.name, name);
    assert_eq!(
        &*unseal_with(&mut t, &env, None, None).unwrap(),
        b"under srk"
    );
    let other = Swtpm::start();
    let mut t2 = Tpm::open(&other.tcti()).unwrap();
    t2.provision_srk().unwrap();
    let err = unseal_with(&mut t2, &env, None, None).unwrap_err();
    assert!(
        err.to_string()
            .contains("not the one the secret was sealed under"),
        "{err}"
    );
}

/// The ukify-style flow with the CLI only: a UKI carrying `.pcrpkey` and `.pcrsig` (signed for
/// systemd-measure's default phases); `seal --pcr-public-key uki.efi` takes the key from the
/// UKI; after PCR 11 holds the UKI's "enter-initrd" value, `unseal --pcrsig-uki` opens it.
#[test]
fn cli_seal_to_a_ukis_pcr_key_and_unseal_with_its_signatures() {
    use std::process::Command;
    let d = tempfile::tempdir().unwrap();
    let (private, _) = make_rsa_keypair(d.path(), "pcr");
    std::fs::write(d.path().join("k"), pseudo_random(50_000, 5)).unwrap();
    let uki = d.path().join("uki.efi");
    let builder = || {
        bootchain::uki::UkiBuilder::new()
            .stub(require_stub())
            .linux(d.path().join("k"))
            .uname("6.1.0")
            .os_release(bootchain::uki::SectionContent::Bytes(b"ID=t\n".to_vec()))
            .sign_pcr_policy(bootchain::uki::PcrPolicySigner {
                key: Box::new(measure::load_pcr_signing_key(&private, None).unwrap()),
                phases: vec![],
                banks: vec![HashAlg::Sha256],
            })
    };
    // Without .cmdline the stub would take the loader's command line, unmeasured: refused.
    assert!(matches!(
        builder().build(&uki),
        Err(bootchain::uki::UkiError::UnmeasuredCmdline)
    ));
    assert!(!uki.exists());
    builder()
        .cmdline(bootchain::uki::SectionContent::Bytes(b"quiet".to_vec()))
        .build(&uki)
        .unwrap();
    let sigs = measure::parse_signatures(
        &bootchain::uki::read_section(&uki, ".pcrsig")
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    // Default phases: the initrd ones only ("" and enter-initrd), two signatures.
    assert_eq!(sigs.iter().map(|(_, e)| e.len()).sum::<usize>(), 2);
    let sw = Swtpm::start();
    let env = d.path().join("root.sealed");
    run_ok(
        Command::new(bootchain_bin())
            .args(["seal", "--random", "--tcti", &sw.tcti(), "--pcr-public-key"])
            .arg(&uki)
            .arg("-o")
            .arg(&env),
    );
    let text = std::fs::read_to_string(&env).unwrap();
    let parsed = Envelope::from_json(&text).unwrap();
    assert!(parsed.needs_signatures());
    // A signed PCR 11 policy also binds literal PCR 7 and the lock PCR 15 by default.
    let pcr = |i| bootchain::pcr::PcrIndex::new(i).unwrap();
    assert_eq!(parsed.policy.pcrs, vec![pcr(7), pcr(15)]);
    assert_eq!(
        parsed.policy.values[&pcr(15)],
        bootchain::hash::Digest::zero(HashAlg::Sha256)
    );
    let unseal = || {
        run(Command::new(bootchain_bin())
            .args(["unseal", "--tcti", &sw.tcti(), "--pcrsig-uki"])
            .arg(&uki)
            .arg(&env))
    };
    let out = unseal();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no PCR policy signature matches this boot"),
        "stopped elsewhere: {err}"
    );
    sw.boot_uki(&uki, "enter-initrd");
    let out = unseal();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 32);
}
