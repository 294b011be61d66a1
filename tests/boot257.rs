//! Real boots of systemd 257's stub (Debian 13's, from the trixie chroot) under QEMU + OVMF +
//! swtpm: PCR 11 and PCR 12 read in the guest equal what bootchain predicts, for a
//! single-profile UKI, a multi-profile UKI booted with profile 0 and with profile 1, and a UKI
//! with a command-line addon on the ESP. `#[ignore]`d (slow); `./scripts/test` runs them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use bootchain::eventlog::EventLog;
use bootchain::hash::HashAlg;
use bootchain::kernel_config::{predict_pcr12, predict_pcr13, Addons};
use bootchain::measure::{self, Phase};
use bootchain::uki::{SectionContent, UkiBuilder};
use common::vm::{self, BootExtras, BootResult, BootSpec};
use common::*;

const TIMEOUT: Duration = Duration::from_secs(300);
const BANKS: [HashAlg; 2] = [HashAlg::Sha1, HashAlg::Sha256];
/// Profile 1's command line: the test init prints /proc/cmdline, so the boot shows which
/// profile ran.
const PROFILE1_CMDLINE: &str = "console=ttyS0 quiet loglevel=0 panic=-1 bootchain.profile=1";
const ADDON_CMDLINE: &str = "bootchain.addon=1";
const GLOBAL_CMDLINE: &str = "bootchain.global=1";

struct Fixture {
    dir: PathBuf,
    single: PathBuf,
    multi: PathBuf,
    addon: PathBuf,
    global: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = fixture_dir("boot257");
        require_tool("mmdebstrap");
        let root = run_ok(Command::new(repo_root().join("scripts/trixie-tools")).arg("--path"));
        let efi = PathBuf::from(root.trim()).join("usr/lib/systemd/boot/efi");
        let stub = efi.join("linuxx64.efi.stub");
        let addon_stub = efi.join("addonx64.efi.stub");
        let base = || {
            UkiBuilder::new()
                .stub(&stub)
                .linux(kernel())
                .initrd(vm::test_initrd())
                .cmdline(SectionContent::Bytes(vm::TEST_CMDLINE.as_bytes().to_vec()))
                .os_release(SectionContent::Bytes(b"ID=bootchain-test\n".to_vec()))
        };
        let single = dir.join("single.efi");
        base().build(&single).unwrap();
        let p1 = dir.join("p1.efi");
        UkiBuilder::new()
            .stub(&addon_stub)
            .profile(SectionContent::Bytes(b"ID=one\nTITLE=Profile one".to_vec()))
            .cmdline(SectionContent::Bytes(PROFILE1_CMDLINE.as_bytes().to_vec()))
            .build(&p1)
            .unwrap();
        let multi = dir.join("multi.efi");
        base()
            .profile(SectionContent::Bytes(b"ID=base".to_vec()))
            .join_profile(&p1)
            .build(&multi)
            .unwrap();
        let addon = dir.join("cmdline.addon.efi");
        UkiBuilder::new()
            .stub(&addon_stub)
            .cmdline(SectionContent::Bytes(ADDON_CMDLINE.as_bytes().to_vec()))
            .build(&addon)
            .unwrap();
        let global = dir.join("global.addon.efi");
        UkiBuilder::new()
            .stub(&addon_stub)
            .cmdline(SectionContent::Bytes(GLOBAL_CMDLINE.as_bytes().to_vec()))
            .build(&global)
            .unwrap();
        Fixture {
            dir,
            single,
            multi,
            addon,
            global,
        }
    })
}

fn boot(uki: &Path, extras: &BootExtras<'_>) -> BootResult {
    let r = vm::boot_with(
        &BootSpec {
            uki,
            secure_boot: None,
            timeout: TIMEOUT,
            tpm_state: None,
        },
        extras,
    );
    assert!(
        r.reached_initrd || r.serial.contains("BOOTCHAIN-INITRD-REACHED"),
        "the 257 stub did not reach the initrd:\n{}",
        r.serial
    );
    r
}

/// PCR 11 predicted for `profile` of `uki` (the test initrd is not systemd: no phase word)
/// equals what the guest read, in both banks.
fn assert_pcr11(r: &BootResult, uki: &Path, profile: u32) {
    let after = Phase::after_stub();
    let pred =
        measure::predict_uki_profile(uki, None, &BANKS, std::slice::from_ref(&after), profile)
            .unwrap();
    for bank in BANKS {
        assert_eq!(
            pred.value(bank, &after).unwrap().as_bytes(),
            r.pcr(bank.name(), 11),
            "{bank} PCR 11 of profile {profile}"
        );
    }
}

/// PCR 12 predicted for `profile` with `addons` equals what the guest read, in both banks,
/// and the boot's log replays to it.
fn assert_pcr12(r: &BootResult, profile: u32, per_uki: &[&Path], global: &[&Path]) {
    let mut addons = Addons::new();
    addons.per_uki = per_uki.iter().map(|p| p.to_path_buf()).collect();
    addons.global = global.iter().map(|p| p.to_path_buf()).collect();
    assert_stub_pcrs(r, profile, &addons);
}

/// PCR 12 and PCR 13 predicted for `profile` with `addons` (and sidecar files) equal what
/// the guest read, in both banks, event by event.
fn assert_stub_pcrs(r: &BootResult, profile: u32, addons: &Addons) {
    let log = EventLog::parse(&r.event_log).unwrap();
    let p12 = predict_pcr12(profile, addons, &BANKS).unwrap();
    let p13 = predict_pcr13(addons, &BANKS).unwrap();
    for pred in [p12, p13] {
        let pcr = pred.pcr.get();
        let logged: Vec<_> = log.events.iter().filter(|e| e.pcr == pcr).collect();
        assert_eq!(logged.len(), pred.events.len(), "PCR {pcr} events");
        for (l, p) in logged.iter().zip(&pred.events) {
            assert_eq!(l.event_type, p.event_type);
            assert_eq!(
                l.digest(HashAlg::Sha256).as_ref(),
                p.digests.get(&HashAlg::Sha256),
                "PCR {pcr} event {:?}",
                p.description
            );
        }
        for bank in BANKS {
            assert_eq!(
                pred.values[&bank].as_bytes(),
                r.pcr(bank.name(), pcr),
                "{bank} PCR {pcr} of profile {profile}"
            );
        }
    }
}

fn save(name: &str, r: &BootResult, uki: &Path) {
    let log = EventLog::parse(&r.event_log).unwrap();
    common::vectors::save_boot_as(name, r, &log, uki, None);
}

#[test]
#[ignore = "boots a VM; run by ./scripts/test"]
fn stub_257_profiles_and_addons_measure_as_predicted() {
    if !vm::require_qemu("stub_257_profiles_and_addons_measure_as_predicted") {
        return;
    }
    let f = fixture();

    // A single-profile UKI: PCR 11 by the 257 rules, nothing in PCR 12.
    let r = boot(&f.single, &BootExtras::default());
    assert_eq!(r.cmdline, vm::TEST_CMDLINE);
    assert_pcr11(&r, &f.single, 0);
    assert_pcr12(&r, 0, &[], &[]);
    save("stub257-single", &r, &f.single);

    // The multi-profile UKI booted by the firmware: profile 0.
    let r = boot(&f.multi, &BootExtras::default());
    assert_eq!(r.cmdline, vm::TEST_CMDLINE);
    assert_pcr11(&r, &f.multi, 0);
    assert_pcr12(&r, 0, &[], &[]);

    // Profile 1, chosen with "@1" on the UEFI shell's command line (startup.nsh: the stub
    // reads its arguments from the shell), with a cmdline addon in the UKI's .extra.d.
    let nsh = f.dir.join("startup.nsh");
    std::fs::write(&nsh, "FS0:\\EFI\\Linux\\multi.efi @1\r\n").unwrap();
    let r = boot(
        &f.multi,
        &BootExtras {
            uki_at: Some("EFI/Linux/multi.efi"),
            esp_files: vec![
                ("startup.nsh", &nsh),
                ("EFI/Linux/multi.efi.extra.d/cmdline.addon.efi", &f.addon),
            ],
            ..Default::default()
        },
    );
    assert_eq!(r.cmdline, format!("{PROFILE1_CMDLINE} {ADDON_CMDLINE}"));
    assert_pcr11(&r, &f.multi, 1);
    assert_pcr12(&r, 1, &[&f.addon], &[]);
    // The CLI predicts the same values to seal to.
    let out = run_ok(
        Command::new(bootchain_bin())
            .args([
                "pcr",
                "predict",
                "--bank",
                "sha256",
                "--phase",
                "",
                "--profile",
                "1",
            ])
            .arg("--uki")
            .arg(&f.multi)
            .arg("--addon")
            .arg(&f.addon)
            .arg("--json"),
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    for pcr in [11, 12] {
        assert_eq!(
            json["values"]["sha256"][pcr.to_string()].as_str().unwrap(),
            hex::encode(r.pcr("sha256", pcr)),
            "pcr predict --json PCR {pcr}"
        );
    }
    save("stub257-multi-profile1-addon", &r, &f.multi);

    // A global and a per-UKI cmdline addon: one PCR 12 event, global first; and sidecar
    // files the stub packs into generated initrds: the UKI's credentials (two, written out of
    // name order), a global credential and a configuration extension (PCR 12), a system
    // extension (PCR 13).
    let side = |name: &str, len: usize, seed: u64| {
        let p = f.dir.join(name);
        std::fs::write(&p, pseudo_random(len, seed)).unwrap();
        p
    };
    let (cred_b, cred_a) = (side("b.cred", 37, 11), side("a.cred", 100, 12));
    let global_cred = side("g.cred", 5, 13);
    let sysext = side("tools.raw", 4099, 14);
    let confext = side("etc.confext.raw", 1000, 15);
    let x = "EFI/BOOT/BOOTX64.EFI.extra.d";
    let (xb, xa, xs, xc) = (
        format!("{x}/b.cred"),
        format!("{x}/a.cred"),
        format!("{x}/tools.raw"),
        format!("{x}/etc.confext.raw"),
    );
    let r = boot(
        &f.single,
        &BootExtras {
            esp_files: vec![
                ("EFI/BOOT/BOOTX64.EFI.extra.d/cmdline.addon.efi", &f.addon),
                ("loader/addons/global.addon.efi", &f.global),
                (&xb, &cred_b),
                (&xa, &cred_a),
                (&xs, &sysext),
                (&xc, &confext),
                ("loader/credentials/g.cred", &global_cred),
            ],
            ..Default::default()
        },
    );
    assert_eq!(
        r.cmdline,
        format!("{} {GLOBAL_CMDLINE} {ADDON_CMDLINE}", vm::TEST_CMDLINE)
    );
    assert_pcr11(&r, &f.single, 0);
    let mut addons = Addons::new();
    addons.per_uki = vec![f.addon.clone()];
    addons.global = vec![f.global.clone()];
    addons.credentials = vec![cred_b.clone(), cred_a.clone()];
    addons.global_credentials = vec![global_cred.clone()];
    addons.sysexts = vec![sysext.clone()];
    addons.confexts = vec![confext.clone()];
    assert_stub_pcrs(&r, 0, &addons);
    // The CLI predicts the same PCR 12 and 13.
    let out = run_ok(
        Command::new(bootchain_bin())
            .args(["pcr", "predict", "--bank", "sha256", "--phase", ""])
            .arg("--uki")
            .arg(&f.single)
            .arg("--addon")
            .arg(&f.addon)
            .arg("--global-addon")
            .arg(&f.global)
            .arg("--credential")
            .arg(&cred_b)
            .arg("--credential")
            .arg(&cred_a)
            .arg("--global-credential")
            .arg(&global_cred)
            .arg("--sysext")
            .arg(&sysext)
            .arg("--confext")
            .arg(&confext)
            .arg("--json"),
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    for pcr in [12, 13] {
        assert_eq!(
            json["values"]["sha256"][pcr.to_string()].as_str().unwrap(),
            hex::encode(r.pcr("sha256", pcr)),
            "pcr predict --json PCR {pcr}"
        );
    }
    save("stub257-addons", &r, &f.single);
}
