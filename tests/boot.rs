//! Boots under QEMU + OVMF + swtpm: the firmware and the real stub judge our UKIs and
//! signatures. These tests are `#[ignore]`d (slow); `./scripts/test` runs them.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use bootchain::keys::{load_certificate, SigningKey};
use bootchain::sign::SignOptions;
use bootchain::uki::{SectionContent, UkiBuilder};
use common::vm::{self, BootSpec, SbKeys};
use common::*;

struct Fixture {
    dir: PathBuf,
    keys: SbKeys,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = fixture_dir("boot");
        let keys = SbKeys::generate(&dir.join("sb"));
        Fixture { dir, keys }
    })
}

fn build_uki(out: &Path, sign: Option<(&Path, &Path)>) {
    let mut b = UkiBuilder::new()
        .stub(require_stub())
        .linux(kernel())
        .initrd(vm::test_initrd())
        .cmdline(SectionContent::Bytes(vm::TEST_CMDLINE.as_bytes().to_vec()))
        .os_release(SectionContent::Bytes(b"ID=bootchain-test\n".to_vec()));
    if let Some((k, c)) = sign {
        b = b.sign_with(
            SigningKey::from_file(k).unwrap(),
            load_certificate(c).unwrap(),
            SignOptions::default(),
        );
    }
    b.build(out).unwrap();
}

const TIMEOUT: Duration = Duration::from_secs(240);

#[test]
#[ignore = "boots a VM; run by ./scripts/test"]
fn secure_boot_runs_our_signed_uki() {
    if !vm::require_qemu("secure_boot_runs_our_signed_uki") {
        return;
    }
    let f = fixture();
    // This UKI also carries .pcrpkey and .pcrsig: 8 new sections, more than the Debian stub's
    // spare header room, so the PE headers are moved down to 0x40. The firmware must still
    // verify and run it.
    let uki = f.dir.join("signed.efi");
    let (pcr_key, _) = make_rsa_keypair(&f.dir, "pcr");
    UkiBuilder::new()
        .stub(require_stub())
        .linux(kernel())
        .initrd(vm::test_initrd())
        .cmdline(SectionContent::Bytes(vm::TEST_CMDLINE.as_bytes().to_vec()))
        .os_release(SectionContent::Bytes(b"ID=bootchain-test\n".to_vec()))
        .sign_pcr_policy(bootchain::uki::PcrPolicySigner {
            key: Box::new(bootchain::measure::load_pcr_signing_key(&pcr_key, None).unwrap()),
            phases: vec![],
            banks: vec![],
        })
        .sign_with(
            SigningKey::from_file(&f.keys.db_key).unwrap(),
            load_certificate(&f.keys.db).unwrap(),
            SignOptions::default(),
        )
        .build(&uki)
        .unwrap();
    let mut file = std::fs::File::open(&uki).unwrap();
    let (h, _) = bootchain::pe::PeHeaders::read(&mut file).unwrap();
    assert_eq!(h.pe_offset, 0x40, "expected compacted headers");
    assert!(h.section(".pcrsig").is_some());
    let r = vm::boot(&BootSpec {
        uki: &uki,
        secure_boot: Some(&f.keys),
        timeout: TIMEOUT,
        tpm_state: None,
    });
    assert!(r.reached_initrd, "signed UKI did not reach the initrd");
    assert!(!r.refused);
    assert_eq!(r.cmdline, vm::TEST_CMDLINE);
    assert_eq!(r.pcr("sha256", 4).len(), 32);
    assert!(!r.event_log.is_empty());
}

/// The Authenticode SHA-256 of the UKI appears in PCR 4 as an
/// EV_EFI_BOOT_SERVICES_APPLICATION event, and the log replays to the PCRs the guest read.
fn check_log_against_pcrs(
    r: &vm::BootResult,
    uki: &Path,
    keys: Option<&SbKeys>,
) -> bootchain::eventlog::EventLog {
    use bootchain::eventlog::{EventLog, EventType};
    use bootchain::hash::HashAlg;
    let log = EventLog::parse(&r.event_log).expect("the captured event log parses");
    let mut f = std::fs::File::open(uki).unwrap();
    let auth = bootchain::authenticode::image_digests(&mut f, &[HashAlg::Sha256]).unwrap();
    let apps: Vec<_> = log
        .events
        .iter()
        .filter(|e| e.pcr == 4 && e.event_type == EventType::EfiBootServicesApplication)
        .collect();
    assert!(
        apps.iter()
            .any(|e| e.digest(HashAlg::Sha256).as_ref() == Some(&auth[0])),
        "UKI Authenticode digest {} not among PCR 4 application events",
        auth[0]
    );
    // PCR 11 as predicted for this very UKI (stub 252 rules, no boot phase: the test initrd
    // is not systemd) equals what the guest read.
    let pred = bootchain::measure::predict_uki(
        uki,
        None,
        &[HashAlg::Sha1, HashAlg::Sha256],
        &[bootchain::measure::Phase::after_stub()],
    )
    .unwrap();
    for bank in [HashAlg::Sha1, HashAlg::Sha256] {
        assert_eq!(
            pred.value(bank, &bootchain::measure::Phase::after_stub())
                .unwrap()
                .as_bytes(),
            r.pcr(bank.name(), 11),
            "{bank} PCR 11 prediction"
        );
    }
    // PCRs 4, 7, 9 and 11 predicted from the files alone equal what the guest read.
    let state = match keys {
        Some(k) => {
            let owner = vm::OWNER_GUID.parse().unwrap();
            let var = |p: &Path| bootchain::firmware::variable_from_file(p, Some(owner)).unwrap();
            bootchain::firmware::SecureBootState {
                enabled: true,
                pk: var(&k.pk),
                kek: var(&k.kek),
                db: var(&k.db),
                // virt-fw-vars' placeholder dbx, read back from the enrolled store (the log).
                dbx: logged_dbx(&log),
            }
        }
        None => Default::default(),
    };
    let preds = bootchain::firmware::predict_uki_boot(
        uki,
        &state,
        &[HashAlg::Sha1, HashAlg::Sha256],
        &[bootchain::measure::Phase::after_stub()],
    )
    .unwrap();
    for p in &preds {
        for (bank, v) in &p.values {
            assert_eq!(
                v.as_bytes(),
                r.pcr(bank.name(), p.pcr.get()),
                "predicted {bank} PCR {}",
                p.pcr
            );
        }
    }
    let replay = log.replay();
    for bank in [HashAlg::Sha1, HashAlg::Sha256] {
        for pcr in 0..16u32 {
            let read = r.pcr(bank.name(), pcr);
            // PCRs without firmware log events are untouched, or extended by the kernel
            // (IMA, PCR 10), whose events are not in this log.
            if let Some(v) = replay.get(&(bank, pcr)) {
                assert_eq!(v.as_bytes(), read, "{bank} PCR {pcr} replay");
            }
        }
    }
    log
}

fn logged_dbx(log: &bootchain::eventlog::EventLog) -> Vec<u8> {
    log.events
        .iter()
        .filter(|e| e.pcr == 7)
        .filter_map(|e| bootchain::firmware::VariableData::parse(&e.data).ok())
        .find(|v| v.name == "dbx")
        .map(|v| v.data)
        .unwrap_or_default()
}

#[test]
#[ignore = "boots a VM; run by ./scripts/test"]
fn secure_boot_log_has_uki_digest_in_pcr4_and_replays() {
    if !vm::require_qemu("secure_boot_log_has_uki_digest_in_pcr4_and_replays") {
        return;
    }
    let f = fixture();
    let uki = f.dir.join("signed-log.efi");
    build_uki(&uki, Some((&f.keys.db_key, &f.keys.db)));
    let r = vm::boot(&BootSpec {
        uki: &uki,
        secure_boot: Some(&f.keys),
        timeout: TIMEOUT,
        tpm_state: None,
    });
    assert!(r.reached_initrd);
    check_log_against_pcrs(&r, &uki, Some(&f.keys));
}

/// Boot UKI A, predict from A's event log what UKI B (other command line and initrd) will
/// measure, boot B, and compare every firmware PCR.
#[test]
#[ignore = "boots a VM; run by ./scripts/test"]
fn next_boot_prediction_equals_the_next_boot() {
    if !vm::require_qemu("next_boot_prediction_equals_the_next_boot") {
        return;
    }
    let f = fixture();
    let a = f.dir.join("next-a.efi");
    build_uki(&a, Some((&f.keys.db_key, &f.keys.db)));
    let b = f.dir.join("next-b.efi");
    UkiBuilder::new()
        .stub(require_stub())
        .linux(kernel())
        .initrd(vm::test_initrd())
        .initrd(vm::test_initrd())
        .cmdline(SectionContent::Bytes(
            format!("{} bootchain.next=1", vm::TEST_CMDLINE).into_bytes(),
        ))
        .os_release(SectionContent::Bytes(
            b"ID=bootchain-test\nVERSION_ID=2\n".to_vec(),
        ))
        .sign_with(
            SigningKey::from_file(&f.keys.db_key).unwrap(),
            load_certificate(&f.keys.db).unwrap(),
            SignOptions::default(),
        )
        .build(&b)
        .unwrap();
    let spec = |uki| BootSpec {
        uki,
        secure_boot: Some(&f.keys),
        timeout: TIMEOUT,
        tpm_state: None,
    };
    let ra = vm::boot(&spec(&a));
    assert!(ra.reached_initrd);
    let log_a = bootchain::eventlog::EventLog::parse(&ra.event_log).unwrap();
    let next = bootchain::firmware::predict_next_boot(&log_a, &b, None, None).unwrap();
    let rb = vm::boot(&spec(&b));
    assert!(rb.reached_initrd);
    use bootchain::hash::HashAlg;
    let mut compared = 0;
    for bank in [HashAlg::Sha1, HashAlg::Sha256] {
        for pcr in (0..16u32).filter(|p| *p != 10) {
            if let Some(v) = next.values.get(&(bank, pcr)) {
                assert_eq!(
                    v.as_bytes(),
                    rb.pcr(bank.name(), pcr),
                    "next boot {bank} PCR {pcr}"
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 20);
    // And B's PCRs 4, 9, 11 differ from A's, so the check was not vacuous.
    for pcr in [4u32, 9, 11] {
        assert_ne!(ra.pcr("sha256", pcr), rb.pcr("sha256", pcr));
    }
}

#[test]
#[ignore = "boots a VM; run by ./scripts/test"]
fn secure_boot_refuses_unsigned_foreign_and_tampered_images() {
    if !vm::require_qemu("secure_boot_refuses_unsigned_foreign_and_tampered_images") {
        return;
    }
    let f = fixture();
    let unsigned = f.dir.join("unsigned.efi");
    build_uki(&unsigned, None);
    let (ok, oc) = make_key(&f.dir, "not-in-db", "rsa:2048");
    let foreign = f.dir.join("foreign.efi");
    build_uki(&foreign, Some((&ok, &oc)));
    // Sign, then change one byte of .cmdline: the signature no longer covers the image.
    let signed = f.dir.join("to-tamper.efi");
    build_uki(&signed, Some((&f.keys.db_key, &f.keys.db)));
    let mut file = std::fs::File::open(&signed).unwrap();
    let (h, _) = bootchain::pe::PeHeaders::read(&mut file).unwrap();
    let cmd = h.section(".cmdline").unwrap();
    let tampered = f.dir.join("tampered.efi");
    flip_byte(&signed, &tampered, u64::from(cmd.pointer_to_raw_data) + 2);
    for img in [&unsigned, &foreign, &tampered] {
        let r = vm::boot(&BootSpec {
            uki: img,
            secure_boot: Some(&f.keys),
            timeout: TIMEOUT,
            tpm_state: None,
        });
        assert!(
            r.refused && !r.reached_initrd,
            "{} was not refused by Secure Boot (refused={}, initrd={}, timed_out={})",
            img.display(),
            r.refused,
            r.reached_initrd,
            r.timed_out
        );
    }
}

/// Five boots in a row (Secure Boot on and off), each reaching the initrd, with no child
/// process left afterwards. The first two boots are the test vectors in test-vectors/boots/;
/// with BOOTCHAIN_REGEN_VECTORS=1 (scripts/regen-boot-vectors) they are written there.
#[test]
#[ignore = "boots a VM; run by ./scripts/test"]
fn five_boots_in_a_row_leave_no_processes() {
    if !vm::require_qemu("five_boots_in_a_row_leave_no_processes") {
        return;
    }
    let f = fixture();
    let uki = f.dir.join("signed-5.efi");
    build_uki(&uki, Some((&f.keys.db_key, &f.keys.db)));
    let mut pids = vec![];
    for i in 0..5 {
        let sb = i % 2 == 0;
        let r = vm::boot(&BootSpec {
            uki: &uki,
            secure_boot: sb.then_some(&f.keys),
            timeout: TIMEOUT,
            tpm_state: None,
        });
        assert!(r.reached_initrd, "boot {i} (secure boot {sb}) failed");
        let log = check_log_against_pcrs(&r, &uki, sb.then_some(&f.keys));
        pids.extend(r.child_pids.iter().copied());
        if i < 2 {
            common::vectors::save_boot(&r, &log, &uki, sb.then_some(&f.keys));
        }
    }
    for pid in pids {
        assert!(!vm::pid_alive(pid), "child process {pid} survived its boot");
    }
}
