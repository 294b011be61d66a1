//! The TPM vanishing in the middle of an operation: a proxy kills swtpm at the N-th TPM
//! command, for every N the operation sends. Each time the command fails with an error, leaves
//! no output file (nor temporary file) behind, and leaves the LUKS2 header byte-identical.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;

use common::swtpm::Swtpm;
use common::tpm_proxy::KillingProxy;
use common::*;

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// The error a lost TPM gives: a TPM command failed (or the TPM could not be opened), not
/// some other refusal.
fn tpm_lost(err: &str) -> bool {
    err.contains("bootchain: error: TPM command")
        || err.contains("bootchain: error: cannot open TPM")
}

/// TPM2_CC_FlushContext (Part 2 §6.5.2).
const CC_FLUSH_CONTEXT: u32 = 0x165;

/// The TPM command codes `args` sends, in order (through a proxy that never kills).
fn commands(args: &dyn Fn(&str) -> Command) -> Vec<u32> {
    let proxy = KillingProxy::start(Swtpm::start(), 0);
    let out = run(&mut args(&proxy.tcti()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        proxy.codes.lock().unwrap().len(),
        proxy.seen.load(Ordering::SeqCst)
    );
    let codes = proxy.codes.lock().unwrap().clone();
    eprintln!("TPM commands: {codes:x?}");
    codes
}

/// Once the work is done only transient objects and sessions are flushed; losing the TPM
/// there cannot spoil the result (the TPM frees them when it restarts), so those commands
/// are allowed to be lost. Any other lost command must fail the operation.
fn must_fail(codes: &[u32], kill_at: usize) -> bool {
    codes[kill_at - 1..].iter().any(|c| *c != CC_FLUSH_CONTEXT)
}

#[test]
fn swtpm_killed_at_every_step_of_a_seal_leaves_no_output() {
    let d = tempfile::tempdir().unwrap();
    let out_dir = d.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let seal = |tcti: &str| {
        let mut c = Command::new(bootchain_bin());
        c.args(["seal", "--pcrs", "7+11", "--random", "--tcti", tcti])
            .arg("--secret-output")
            .arg(out_dir.join("secret"))
            .arg("-o")
            .arg(out_dir.join("root.sealed.json"));
        c
    };
    let codes = commands(&seal);
    let n = codes.len();
    assert!(n >= 5, "a seal takes more than {n} TPM commands");
    for f in listing(&out_dir) {
        std::fs::remove_file(out_dir.join(f)).unwrap();
    }
    for kill_at in 1..=n {
        let proxy = KillingProxy::start(Swtpm::start(), kill_at);
        let out = run(&mut seal(&proxy.tcti()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        if must_fail(&codes, kill_at) {
            assert!(
                !out.status.success(),
                "seal survived losing command {kill_at}"
            );
            assert!(tpm_lost(&err), "after command {kill_at}: {err}");
            assert_eq!(
                listing(&out_dir),
                Vec::<String>::new(),
                "after command {kill_at}"
            );
        } else if out.status.success() {
            // Complete output only.
            let text = std::fs::read_to_string(out_dir.join("root.sealed.json")).unwrap();
            bootchain::seal::Envelope::from_json(&text).unwrap();
            assert_eq!(std::fs::read(out_dir.join("secret")).unwrap().len(), 32);
            for f in listing(&out_dir) {
                std::fs::remove_file(out_dir.join(f)).unwrap();
            }
        }
    }
}

#[test]
fn swtpm_killed_at_every_step_of_an_enroll_leaves_the_header_intact() {
    let d = tempfile::tempdir().unwrap();
    let (img, key) = luks_image(d.path());
    let pristine = std::fs::read(&img).unwrap();
    let work = d.path().join("work.img");
    let enroll = |tcti: &str| {
        let mut c = Command::new(bootchain_bin());
        c.args(["luks", "enroll", "--pcrs", "7+11", "--tcti", tcti])
            .arg("--unlock-key-file")
            .arg(&key)
            .arg(&work);
        c
    };
    std::fs::write(&work, &pristine).unwrap();
    let codes = commands(&enroll);
    let n = codes.len();
    assert!(n >= 5, "an enroll takes more than {n} TPM commands");
    assert_ne!(std::fs::read(&work).unwrap(), pristine, "the enroll wrote");
    std::fs::write(&work, &pristine).unwrap();
    for kill_at in 1..=n {
        let proxy = KillingProxy::start(Swtpm::start(), kill_at);
        let out = run(&mut enroll(&proxy.tcti()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        if must_fail(&codes, kill_at) || !out.status.success() {
            assert!(
                !out.status.success(),
                "enroll survived losing command {kill_at}"
            );
            assert!(tpm_lost(&err), "after command {kill_at}: {err}");
            assert!(
                std::fs::read(&work).unwrap() == pristine,
                "header changed after losing command {kill_at}: {err}"
            );
        } else {
            // Sealing was complete: the keyslot and token are whole.
            let md = bootchain::luks::Luks::new(&work).metadata().unwrap();
            assert_eq!(md.tokens.len(), 1);
            assert_eq!(md.keyslots.len(), 2);
            std::fs::write(&work, &pristine).unwrap();
        }
    }
    // Still a valid header that opens with the original key.
    run_ok(
        Command::new("cryptsetup")
            .args(["open", "--test-passphrase", "--key-file"])
            .arg(&key)
            .arg(&work),
    );
}

/// TPM2_PCR_Extend of PCR `pcr` (sha256) with a password session (TPM 2.0 Part 3 §22.2).
fn pcr_extend_command(pcr: u32, digest: &[u8; 32]) -> Vec<u8> {
    let mut c = Vec::new();
    c.extend_from_slice(&0x8002u16.to_be_bytes()); // TPM_ST_SESSIONS
    c.extend_from_slice(&0u32.to_be_bytes()); // size, below
    c.extend_from_slice(&0x182u32.to_be_bytes()); // TPM_CC_PCR_Extend
    c.extend_from_slice(&pcr.to_be_bytes());
    c.extend_from_slice(&9u32.to_be_bytes()); // authorization area
    c.extend_from_slice(&0x4000_0009u32.to_be_bytes()); // TPM_RS_PW
    c.extend_from_slice(&[0, 0, 0, 0, 0]); // nonce, attributes, hmac
    c.extend_from_slice(&1u32.to_be_bytes());
    c.extend_from_slice(&0x000bu16.to_be_bytes());
    c.extend_from_slice(digest);
    let n = c.len() as u32;
    c[2..6].copy_from_slice(&n.to_be_bytes());
    c
}

/// A PCR outside the policy is extended between PolicyPCR and Unseal (as systemd-pcrphase may
/// do at the same moment in an initramfs): the TPM answers TPM_RC_PCR_CHANGED, and unseal
/// replays the policy and succeeds.
#[test]
fn pcr_changed_between_policy_and_unseal_is_retried() {
    const CC_UNSEAL: u32 = 0x15e;
    let d = tempfile::tempdir().unwrap();
    let env = d.path().join("root.sealed");
    let secret = d.path().join("secret");
    let sw = Swtpm::start();
    run_ok(
        Command::new(bootchain_bin())
            .args(["seal", "--pcrs", "7+11", "--random", "--tcti", &sw.tcti()])
            .arg("--secret-output")
            .arg(&secret)
            .arg("-o")
            .arg(&env),
    );
    let proxy =
        KillingProxy::start_with(sw, 0, Some((CC_UNSEAL, pcr_extend_command(12, &[7; 32]))));
    let out = run(Command::new(bootchain_bin())
        .args(["unseal", "--tcti", &proxy.tcti()])
        .arg(&env));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, std::fs::read(&secret).unwrap());
    let unseals = proxy
        .codes
        .lock()
        .unwrap()
        .iter()
        .filter(|c| **c == CC_UNSEAL)
        .count();
    assert_eq!(
        unseals, 2,
        "the first Unseal met TPM_RC_PCR_CHANGED and was retried"
    );
}
