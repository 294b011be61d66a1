//! `bootchain-unseal` locks the boot after every attempt (on swtpm): after a success PCRs 11
//! and 15 are extended and a second unseal is refused naming the lock PCR 15; after a refusal
//! both are extended again; `--lock` alone does the same; `--no-lock` leaves the PCRs; a PIN-sealed
//! envelope asks its PIN through `--ask-pin PROGRAM`.

mod common;

use std::path::Path;
use std::process::Command;

use bootchain::hash::{Digest, HashAlg};
use bootchain::tpm::Tpm;
use common::swtpm::Swtpm;
use common::*;

fn unseal_bin() -> std::path::PathBuf {
    bootchain_bin().with_file_name("bootchain-unseal")
}

fn pcr(sw: &Swtpm, i: u32) -> Digest {
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    t.read_pcrs(&[(HashAlg::Sha256, i)]).unwrap()[&(HashAlg::Sha256, i)].clone()
}

fn seal(sw: &Swtpm, dir: &Path, extra: &[&str]) -> std::path::PathBuf {
    let env = dir.join("root.sealed");
    let _ = std::fs::remove_file(&env);
    run_ok(
        Command::new(bootchain_bin())
            .args([
                "seal",
                "--pcrs",
                "7",
                "--random",
                "--tcti",
                &sw.tcti(),
                "-o",
            ])
            .arg(&env)
            .args(extra),
    );
    env
}

#[test]
fn unseal_locks_the_boot_after_success_and_after_refusal() {
    let d = tempfile::tempdir().unwrap();
    let sw = Swtpm::start();
    let env = seal(&sw, d.path(), &[]);
    let zero = Digest::zero(HashAlg::Sha256);
    assert_eq!(pcr(&sw, 15), zero);
    let unseal = |extra: &[&str]| {
        run(Command::new(unseal_bin())
            .args(["--tcti", &sw.tcti()])
            .args(extra)
            .arg(&env))
    };
    // --no-lock: unseals and leaves PCR 15 alone (for several volumes in one boot).
    let out = unseal(&["--no-lock"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 32);
    assert_eq!(pcr(&sw, 15), zero);
    // Default: unseals, then extends the lock PCRs: 15, and 11 too (what the policy covers
    // does not decide it: the host chooses which token comes first).
    let before11 = pcr(&sw, 11);
    let out = unseal(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 32);
    let lock = HashAlg::Sha256.digest(bootchain::seal::LOCK_EVENT);
    let mut after = HashAlg::Sha256.hasher();
    after.update(zero.as_bytes());
    after.update(lock.as_bytes());
    assert_eq!(pcr(&sw, 15), after.finalize());
    let mut after11 = HashAlg::Sha256.hasher();
    after11.update(before11.as_bytes());
    after11.update(lock.as_bytes());
    let locked11 = after11.finalize();
    assert_eq!(pcr(&sw, 11), locked11);
    // A second attempt in the same "boot" is refused, naming the lock PCR, and locks again.
    let out = unseal(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(out.stdout.is_empty());
    assert!(err.contains("PCR 15 (sha256)"), "{err}");
    assert_ne!(pcr(&sw, 11), locked11);
}

#[test]
fn lock_alone_extends_both_lock_pcrs() {
    let sw = Swtpm::start();
    let (p11, p15) = (pcr(&sw, 11), pcr(&sw, 15));
    let out = run(Command::new(unseal_bin()).args(["--tcti", &sw.tcti(), "--lock"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(pcr(&sw, 11), p11);
    assert_ne!(pcr(&sw, 15), p15);
    // --lock takes nothing else.
    let out = run(Command::new(unseal_bin()).args(["--lock", "x"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lock takes no envelope"));
}

#[test]
fn a_pin_is_asked_with_the_askpass_program() {
    let d = tempfile::tempdir().unwrap();
    let sw = Swtpm::start();
    let pin = d.path().join("pin");
    std::fs::write(&pin, "4711\n").unwrap();
    let env = seal(&sw, d.path(), &["--pin-file", pin.to_str().unwrap()]);
    // An askpass that prints the PIN given in its own file (as cryptsetup's askpass would
    // print what the user typed).
    let ask = d.path().join("askpass");
    std::fs::write(&ask, format!("#!/bin/sh\ncat {}\n", pin.display())).unwrap();
    let wrong = d.path().join("askpass-wrong");
    std::fs::write(&wrong, "#!/bin/sh\necho 0000\n").unwrap();
    for f in [&ask, &wrong] {
        run_ok(Command::new("chmod").arg("755").arg(f));
    }
    // Without a PIN source: refused, asking for one.
    let out = run(Command::new(unseal_bin())
        .args(["--tcti", &sw.tcti(), "--no-lock"])
        .env_remove("BOOTCHAIN_PIN")
        .arg(&env));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sealed with a PIN"));
    // A wrong PIN from the program: refused as a wrong PIN (the TPM counted it).
    let out = run(Command::new(unseal_bin())
        .args(["--tcti", &sw.tcti(), "--no-lock", "--ask-pin"])
        .arg(&wrong)
        .env_remove("BOOTCHAIN_PIN")
        .arg(&env));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong PIN"));
    // The right one.
    let out = run(Command::new(unseal_bin())
        .args(["--tcti", &sw.tcti(), "--no-lock", "--ask-pin"])
        .arg(&ask)
        .env_remove("BOOTCHAIN_PIN")
        .arg(&env));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 32);
}
