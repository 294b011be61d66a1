//! The runnable `examples/` do what they say, against the real tools: `build_sign_seal`
//! against a swtpm (its signature checked by sbverify too), `enroll_luks` on a LUKS2 image
//! (the keyslot it adds opens with cryptsetup), `verify_eventlog` on a recorded OVMF boot
//! (passes) and on the same log with one byte of event data changed (fails).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::swtpm::Swtpm;
use common::*;

/// `target/<profile>/examples/NAME`, built by `cargo build --all-targets` (./scripts/test).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        p.exists(),
        "{} missing: build the examples (cargo build --all-targets)",
        p.display()
    );
    p
}

#[test]
fn build_sign_seal_runs_against_swtpm() {
    require_tool("sbverify");
    let d = tempfile::tempdir().unwrap();
    let (key, crt) = make_key(d.path(), "db", "rsa:2048");
    let sw = Swtpm::start();
    let out = run(Command::new(example("build_sign_seal"))
        .arg(require_stub())
        .arg(kernel())
        .arg(&key)
        .arg(&crt)
        .arg(sw.tcti())
        .arg(d.path()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("signature trusted: true"), "{stdout}");
    assert!(
        stdout.contains("unsealed after the predicted boot: ok"),
        "{stdout}"
    );
    let uki = d.path().join("example.efi");
    run_ok(Command::new("sbverify").arg("--cert").arg(&crt).arg(&uki));
    // The predicted PCR 11 is what the TPM now holds (the example extended it).
    let predicted = bootchain::measure::predict_uki(
        &uki,
        None,
        &[bootchain::hash::HashAlg::Sha256],
        &[bootchain::measure::Phase::after_stub()],
    )
    .unwrap();
    let mut t = bootchain::tpm::Tpm::open(&sw.tcti()).unwrap();
    let now = t
        .read_pcrs(&[(bootchain::hash::HashAlg::Sha256, 11)])
        .unwrap();
    assert_eq!(
        Some(&now[&(bootchain::hash::HashAlg::Sha256, 11)]),
        predicted.value(
            bootchain::hash::HashAlg::Sha256,
            &bootchain::measure::Phase::after_stub()
        )
    );
    let mode = std::fs::metadata(d.path().join("root.envelope")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}

#[test]
fn enroll_luks_adds_a_keyslot_that_opens() {
    let d = tempfile::tempdir().unwrap();
    let (img, pass) = luks_image(d.path());
    let sw = Swtpm::start();
    let out = run(Command::new(example("enroll_luks"))
        .arg(&img)
        .arg(&pass)
        .arg(sw.tcti()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("token 0 for keyslot 1"), "{stdout}");
    assert!(stdout.contains("keyslot 1 opens"), "{stdout}");
    let dump = run_ok(
        Command::new("cryptsetup")
            .args(["token", "export", "--token-id", "0"])
            .arg(&img),
    );
    assert!(dump.contains("\"systemd-tpm2\""), "{dump}");
}

#[test]
fn verify_eventlog_passes_a_real_log_and_fails_a_tampered_one() {
    let dir = repo_root().join("test-vectors/boots/sb-on");
    let log = dir.join("eventlog.bin");
    let pcrs = dir.join("pcrs.json");
    let out = run(Command::new(example("verify_eventlog"))
        .arg(&log)
        .arg(&pcrs));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("all checks passed"), "{stdout}");

    // The last byte of the first EV_SEPARATOR's data (4 zero bytes whose SHA-256 the log
    // records) changed: the data check and the exit status catch it.
    let bytes = std::fs::read(&log).unwrap();
    let parsed = bootchain::eventlog::EventLog::parse(&bytes).unwrap();
    let sep = parsed
        .events
        .iter()
        .find(|e| e.event_type.to_u32() == 4)
        .expect("a separator");
    let off = sep.offset + serialized_len(sep) - 1;
    let mut bad = bytes.clone();
    bad[off] ^= 1;
    let d = tempfile::tempdir().unwrap();
    let tampered = d.path().join("tampered.bin");
    std::fs::write(&tampered, &bad).unwrap();
    let out = run(Command::new(example("verify_eventlog"))
        .arg(&tampered)
        .arg(&pcrs));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("is not the hash of the data"), "{stdout}");
}

/// Bytes of one serialized crypto-agile event (TCG PFP §10.2.2 TCG_PCR_EVENT2): PCR index,
/// type, digest count, (alg id, digest)*, event size, event data.
fn serialized_len(e: &bootchain::eventlog::Event) -> usize {
    4 + 4 + 4 + e.digests.iter().map(|d| 2 + d.bytes.len()).sum::<usize>() + 4 + e.data.len()
}
