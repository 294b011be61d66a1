//! The whole chain in real boots: a signed UKI (Debian's stub, kernel and a real initramfs)
//! boots under OVMF Secure Boot (per-run PK/KEK/db) with a swtpm vTPM and opens its encrypted
//! root (a LUKS2 volume enrolled before the first boot from predictions only), mounts it and
//! switches root to it — with initramfs-tools (bootchain's keyscript), dracut (bootchain's
//! module as a password agent) and systemd's own systemd-cryptsetup (a token bootchain wrote).
//!
//! The guest's root filesystem (tests/guest/root-init as /sbin/init) prints the marker the
//! previous boot left on the disk, writes its own, tries a second unseal in the same boot
//! (refused: the boot is locked), and powers off.
//!
//! Kernels and initramfs images come from `scripts/build-guest` (mmdebstrap chroots cached in
//! .cache/guest); the encrypted payload is written from userspace by `bootchain luks
//! format-image` (this host has no device-mapper).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::swtpm::Swtpm;
use common::vm::{self, BootExtras, BootSpec, SbKeys};
use common::*;

/// The root volume's UUID, fixed so the initramfs (built once) can name it in /etc/crypttab.
const LUKS_UUID: &str = "6a0f7c43-0c55-4e4e-a1a5-0b00d0c0ffee";
const RECOVERY: &str = "correct-horse-recovery-7731";
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

struct Guest {
    dir: PathBuf,
    itools: PathBuf,
    dracut: PathBuf,
    rootfs: PathBuf,
}

fn build_guest(stack: &str, out: &Path) {
    let unseal = bootchain_bin().with_file_name("bootchain-unseal");
    assert!(unseal.exists(), "{} missing: cargo build", unseal.display());
    run_ok(
        Command::new(repo_root().join("scripts/build-guest"))
            .arg(stack)
            .arg(out)
            .env("BOOTCHAIN_UNSEAL", &unseal)
            .env("LUKS_UUID", LUKS_UUID),
    );
}

/// The guest images, built once per test process and shared by the tests.
fn guest() -> &'static Guest {
    static G: OnceLock<Guest> = OnceLock::new();
    G.get_or_init(|| {
        require_tool("mmdebstrap");
        // Earlier runs' directories (disk images, hundreds of MB) whose process is gone.
        if let Ok(rd) = std::fs::read_dir(repo_root().join(".cache/e2e")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{name}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = repo_root().join(format!(".cache/e2e/{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let g = Guest {
            itools: dir.join("itools"),
            dracut: dir.join("dracut"),
            rootfs: dir.join("rootfs"),
            dir,
        };
        build_guest("initramfs-tools", &g.itools);
        build_guest("dracut", &g.dracut);
        build_guest("rootfs", &g.rootfs);
        g
    })
}

/// A per-test work directory under the guest directory (removed with it).
fn workdir(name: &str) -> PathBuf {
    let d = guest().dir.join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn bc(args: &[&str]) -> String {
    run_ok(Command::new(bootchain_bin()).args(args))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A signed UKI of `stack`'s kernel and initramfs with this command line and `.pcrsig` key.
fn uki(g: &Path, cmdline: &str, keys: &SbKeys, pcr_key: &Path, out: &Path) {
    bc(&[
        "uki",
        "build",
        "--linux",
        s(&g.join("vmlinuz")),
        "--initrd",
        s(&g.join("initrd.img")),
        "--cmdline",
        cmdline,
        "--os-release",
        "ID=bootchain-e2e\n",
        "--secureboot-private-key",
        s(&keys.db_key),
        "--secureboot-certificate",
        s(&keys.db),
        "--pcr-private-key",
        s(pcr_key),
        "--output",
        s(out),
    ]);
}

/// PCR 7 (Secure Boot on with these keys) and PCR 11 (right after the stub) predicted for
/// `uki`, as `seal --pcr-values` reads them.
fn predict(uki: &Path, keys: &SbKeys, out: &Path) {
    let dbx = out.with_extension("dbx.esl");
    vm::enrolled_dbx(keys, &dbx);
    let json = bc(&[
        "pcr",
        "predict",
        "--uki",
        s(uki),
        "--bank",
        "sha256",
        "--phase",
        "",
        "--secureboot",
        "on",
        "--secureboot-pk",
        s(&keys.pk),
        "--secureboot-kek",
        s(&keys.kek),
        "--secureboot-db",
        s(&keys.db),
        "--secureboot-dbx",
        s(&dbx),
        "--secureboot-owner",
        vm::OWNER_GUID,
        "--json",
    ]);
    std::fs::write(out, json).unwrap();
}

/// The encrypted root: the rootfs image in a LUKS2 volume, keyslot 0 the recovery passphrase.
fn encrypted_root(dir: &Path) -> (PathBuf, PathBuf) {
    let rec = dir.join("recovery.key");
    std::fs::write(&rec, RECOVERY).unwrap();
    let disk = dir.join("root.img");
    format_image(&disk, &rec);
    (disk, rec)
}

/// `bootchain luks format-image` of the guest's root filesystem into `disk` (UUID
/// [`LUKS_UUID`], keyslot 0 the passphrase in `key`).
fn format_image(disk: &Path, key: &Path) {
    bc(&[
        "luks",
        "format-image",
        s(&guest().rootfs.join("rootfs.ext4")),
        "--output",
        s(disk),
        "--key-file",
        s(key),
        "--uuid",
        LUKS_UUID,
        "--minimal-pbkdf",
    ]);
}

/// A vTPM state directory (swtpm manufactured, nothing replayed into it) and its TCTI-backed
/// enrollment: `luks enroll` with `args`, the VM's own vTPM the only TPM touched.
fn enroll_in_fresh_vtpm(dir: &Path, disk: &Path, rec: &Path, args: &[&str]) -> PathBuf {
    let mut sw = Swtpm::start();
    let mut a = vec!["luks", "enroll", s(disk), "--unlock-key-file", s(rec)];
    let tcti = sw.tcti();
    a.extend_from_slice(args);
    a.extend_from_slice(&["--tcti", &tcti]);
    bc(&a);
    sw.kill();
    let state = dir.join("vtpm");
    std::fs::create_dir_all(&state).unwrap();
    for e in std::fs::read_dir(&sw.state).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), state.join(e.file_name())).unwrap();
    }
    state
}

fn boot(
    uki: &Path,
    keys: Option<&SbKeys>,
    tpm: &Path,
    disk: &Path,
    typed: Vec<(&str, &str)>,
) -> vm::BootResult {
    let r = vm::boot_with(
        &BootSpec {
            uki,
            secure_boot: keys,
            timeout: BOOT_TIMEOUT,
            tpm_state: Some(tpm),
        },
        &BootExtras {
            disks: vec![disk],
            serial_input: typed,
            end_marker: Some("BOOTCHAIN-ROOT-DONE"),
            persist_tpm: true,
            count_tpm_commands: false,
            ..Default::default()
        },
    );
    assert!(!r.timed_out, "boot timed out:\n{}", r.serial);
    r
}

fn line_after<'a>(serial: &'a str, marker: &str) -> Option<&'a str> {
    serial
        .lines()
        .find_map(|l| l.split_once(marker).map(|(_, rest)| rest.trim()))
}

/// The root was opened from the volume: returns (previous marker, new marker).
fn root_reached(r: &vm::BootResult) -> (String, String) {
    assert!(
        r.serial.contains("BOOTCHAIN-ROOT-REACHED"),
        "root not reached:\n{}",
        r.serial
    );
    let dev = line_after(&r.serial, "BOOTCHAIN-ROOT-DEVICE").unwrap_or("");
    assert!(
        dev.starts_with("/dev/mapper/"),
        "root on {dev:?}:\n{}",
        r.serial
    );
    let prev = line_after(&r.serial, "BOOTCHAIN-PREVIOUS-MARKER").unwrap_or("");
    let new = line_after(&r.serial, "BOOTCHAIN-NEW-MARKER").unwrap_or("");
    assert_eq!(new.len(), 36, "boot id marker: {}", r.serial);
    (prev.to_string(), new.to_string())
}

/// The second unseal in the same boot (from the root) was refused.
fn second_unseal_refused_at_all(r: &vm::BootResult) -> &str {
    line_after(&r.serial, "BOOTCHAIN-SECOND-UNSEAL-REFUSED")
        .unwrap_or_else(|| panic!("second unseal not refused:\n{}", r.serial))
}

/// The second unseal in the same boot (from the root) was refused because of the lock: a
/// lock PCR is named — 15, or 11 for a signed PCR 11 policy, which is checked first (the
/// other PCRs still have their good values).
fn second_unseal_refused(r: &vm::BootResult) {
    let why = second_unseal_refused_at_all(r);
    assert!(
        why.contains("PCR 15") || why.contains("PCR 11 (sha256) is"),
        "refused, but not by the lock: {why}"
    );
}

/// Note a good boot's time (firmware start to the root's last marker) for scripts/bench.
fn record(stack: &str, r: &vm::BootResult) {
    let stack = match r.tpm_commands {
        Some(n) => format!("{stack} [{n} TPM commands in the boot]"),
        None => stack.to_string(),
    };
    let stack = stack.as_str();
    let path = repo_root().join(".cache/e2e/timings.txt");
    let mut lines: Vec<String> = std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with(stack.split(" [").next().unwrap_or(stack)))
        .map(str::to_string)
        .collect();
    lines.push(format!(
        "{stack:<44} {:>6.1} s ({:?})",
        r.duration.as_secs_f64(),
        r.accel.unwrap_or(vm::Accel::Tcg)
    ));
    lines.sort();
    let _ = std::fs::write(&path, lines.join("\n") + "\n");
}

fn lockout_counter(state: &Path) -> u32 {
    let sw = Swtpm::start_with_state(state);
    let mut t = bootchain::tpm::Tpm::open(&sw.tcti()).unwrap();
    t.lockout_status().unwrap().counter
}

/// initramfs-tools (mkinitramfs + cryptsetup-initramfs + bootchain's keyscript and hook),
/// bootchain-tpm2 token sealed to literal PCR 7 + signed PCR 11 (+ the lock PCR) from
/// predictions only. Good boots open the root and keep data across boots; a new UKI signed by
/// the same PCR key opens it without re-enrolling; a foreign `.pcrsig`, Secure Boot off and a
/// different vTPM are refused with the reason, after which the recovery passphrase typed on
/// the console still opens it and the boot stays locked; a UKI signed by another db key is
/// refused by the firmware; no dictionary-attack failures accumulate.
#[test]
#[ignore = "boots VMs; run by ./scripts/test"]
fn initramfs_tools_root_opens_only_for_the_signed_image() {
    if !vm::require_qemu("initramfs_tools_root_opens_only_for_the_signed_image") {
        return;
    }
    let g = guest();
    let d = workdir("test-itools");
    let keys = SbKeys::generate(&d.join("sb"));
    let (pcr_key, _) = make_rsa_keypair(&d, "pcr");
    let (other_pcr_key, _) = make_rsa_keypair(&d, "other-pcr");
    let cmdline = "console=ttyS0 root=/dev/mapper/root panic=-1 quiet".to_string();
    let uki_a = d.join("a.efi");
    uki(&g.itools, &cmdline, &keys, &pcr_key, &uki_a);
    let values = d.join("values.json");
    predict(&uki_a, &keys, &values);

    let (disk, rec) = encrypted_root(&d);
    let state = enroll_in_fresh_vtpm(
        &d,
        &disk,
        &rec,
        &[
            "--token-type",
            "bootchain",
            "--pcr-public-key",
            s(&uki_a),
            "--pcr-values",
            s(&values),
        ],
    );

    // 1. The image we signed opens its root; nothing later in the boot can unseal again.
    let r = boot(&uki_a, Some(&keys), &state, &disk, vec![]);
    let (prev, m1) = root_reached(&r);
    assert_eq!(prev, "none");
    second_unseal_refused(&r);
    record("initramfs-tools + bootchain keyscript", &r);

    // 2. Update: new command line, same PCR key: opens without re-enrolling; data survived.
    let uki_b = d.join("b.efi");
    uki(
        &g.itools,
        &format!("{cmdline} loglevel=3"),
        &keys,
        &pcr_key,
        &uki_b,
    );
    let r = boot(&uki_b, Some(&keys), &state, &disk, vec![]);
    let (prev, m2) = root_reached(&r);
    assert_eq!(prev, m1, "the marker of the previous boot");
    second_unseal_refused(&r);

    // 3. A command line nobody signed (db-signed, .pcrsig by another key): refused naming
    // PCR 11; the recovery passphrase typed on the console opens it; still locked after.
    let uki_c = d.join("c.efi");
    uki(
        &g.itools,
        &format!("{cmdline} loglevel=5"),
        &keys,
        &other_pcr_key,
        &uki_c,
    );
    let r = boot(
        &uki_c,
        Some(&keys),
        &state,
        &disk,
        vec![("Please unlock disk", &format!("{RECOVERY}\n"))],
    );
    assert!(
        r.serial
            .contains("no PCR policy signature matches this boot")
            && r.serial.contains("PCR 11 (sha256) is"),
        "reason names PCR 11:\n{}",
        r.serial
    );
    let (prev, m3) = root_reached(&r);
    assert_eq!(prev, m2);
    second_unseal_refused_at_all(&r);

    // 4. Secure Boot off (the same UKI): PCR 7 differs, named with both values.
    let r = boot(
        &uki_a,
        None,
        &state,
        &disk,
        vec![("Please unlock disk", &format!("{RECOVERY}\n"))],
    );
    assert!(
        r.serial.contains("PCR 7 (sha256) is"),
        "reason names PCR 7:\n{}",
        r.serial
    );
    let (prev, _) = root_reached(&r);
    assert_eq!(prev, m3);
    second_unseal_refused_at_all(&r);

    // 4b. The host swaps disks: its own LUKS volume (a passphrase it knows, no token) under
    // the UUID the initramfs expects, our volume under another UUID. The signed image boots
    // with good PCRs; bootchain-unseal finds no token on the decoy and locks the boot; the
    // host types its passphrase; the decoy's init tries our volume: refused by the lock PCR.
    let decoy_dir = d.join("decoy");
    std::fs::create_dir_all(&decoy_dir).unwrap();
    let decoy_pass = decoy_dir.join("host.key");
    std::fs::write(&decoy_pass, "the-host-knows-this").unwrap();
    let decoy = decoy_dir.join("decoy.img");
    format_image(&decoy, &decoy_pass);
    let moved = decoy_dir.join("ours.img");
    std::fs::copy(&disk, &moved).unwrap();
    run_ok(Command::new("cryptsetup").args([
        "luksUUID",
        "-q",
        "--uuid",
        "0b5c1a7e-0000-4000-8000-000000000001",
        s(&moved),
    ]));
    let r = vm::boot_with(
        &BootSpec {
            uki: &uki_a,
            secure_boot: Some(&keys),
            timeout: BOOT_TIMEOUT,
            tpm_state: Some(&state),
        },
        &BootExtras {
            disks: vec![&decoy, &moved],
            serial_input: vec![("Please unlock disk", "the-host-knows-this\n")],
            end_marker: Some("BOOTCHAIN-ROOT-DONE"),
            persist_tpm: true,
            count_tpm_commands: false,
            ..Default::default()
        },
    );
    assert!(!r.timed_out, "{}", r.serial);
    assert!(
        r.serial
            .contains("has no systemd-tpm2 or bootchain-tpm2 token"),
        "{}",
        r.serial
    );
    let (prev, _) = root_reached(&r);
    assert_eq!(prev, "none", "the host's decoy root");
    // Our volume (/dev/vdb) with good PCR 7 and a matching .pcrsig for this boot: refused,
    // because the failed attempt on the decoy locked PCR 11 (and 15).
    let why = second_unseal_refused_at_all(&r);
    let ours = why.split("[/dev/vdb]").nth(1).unwrap_or("");
    assert!(
        ours.contains("no PCR policy signature matches this boot: PCR 11 (sha256)"),
        "our volume refused by the lock: {why}"
    );

    // 5. A different vTPM (fresh state): refused with the storage-key reason.
    let other = d.join("other-vtpm");
    std::fs::create_dir_all(&other).unwrap();
    let r = boot(
        &uki_a,
        Some(&keys),
        &other,
        &disk,
        vec![("Please unlock disk", &format!("{RECOVERY}\n"))],
    );
    assert!(
        r.serial
            .contains("is not the one the secret was sealed under"),
        "reason names the other TPM:\n{}",
        r.serial
    );
    root_reached(&r);

    // 6. A UKI signed by a db key the firmware does not trust: refused before it runs.
    let foreign = SbKeys::generate(&d.join("foreign"));
    let uki_f = d.join("f.efi");
    uki(&g.itools, &cmdline, &foreign, &pcr_key, &uki_f);
    let r = boot(&uki_f, Some(&keys), &state, &disk, vec![]);
    assert!(
        r.refused,
        "firmware refused the foreign image:\n{}",
        r.serial
    );
    assert!(!r.serial.contains("BOOTCHAIN-ROOT-REACHED"));

    // Refused unseals are policy failures, and every boot powered off cleanly (the kernel
    // sends TPM2_Shutdown): no dictionary-attack failures were counted.
    assert_eq!(lockout_counter(&state), 0);
}

/// One boot of the dracut guest: a UKI with `extra` on the command line, enrolled with
/// `enroll` (plus the predicted values) before the first boot, booted under Secure Boot.
fn dracut_boot(name: &str, extra: &str, enroll: &[&str]) -> vm::BootResult {
    let g = guest();
    let d = workdir(name);
    let keys = SbKeys::generate(&d.join("sb"));
    let (pcr_key, _) = make_rsa_keypair(&d, "pcr");
    let cmdline = format!(
        "console=ttyS0 rd.luks.uuid={LUKS_UUID} {extra}root=/dev/mapper/luks-{LUKS_UUID} rd.shell=0 panic=-1 systemd.show_status=1"
    );
    let uki_a = d.join("a.efi");
    uki(&g.dracut, &cmdline, &keys, &pcr_key, &uki_a);
    let values = d.join("values.json");
    predict(&uki_a, &keys, &values);
    let (disk, rec) = encrypted_root(&d);
    let mut args = enroll.to_vec();
    args.extend_from_slice(&["--pcrs", "7+11", "--pcr-values", s(&values)]);
    let state = enroll_in_fresh_vtpm(&d, &disk, &rec, &args);
    let mut markers = vec!["none".to_string()];
    let mut last = None;
    // Two boots: the second reads the marker the first left inside the volume. The second
    // counts the TPM commands of the whole boot (same firmware, kernel and initrd for both
    // dracut tests: the difference is the unlock path).
    for count in [false, true] {
        let r = vm::boot_with(
            &BootSpec {
                uki: &uki_a,
                secure_boot: Some(&keys),
                timeout: BOOT_TIMEOUT,
                tpm_state: Some(&state),
            },
            &BootExtras {
                disks: vec![&disk],
                end_marker: Some("BOOTCHAIN-ROOT-DONE"),
                persist_tpm: true,
                count_tpm_commands: count,
                ..Default::default()
            },
        );
        assert!(!r.timed_out, "boot timed out:\n{}", r.serial);
        let (prev, new) = root_reached(&r);
        assert_eq!(Some(&prev), markers.last(), "the previous boot's marker");
        markers.push(new);
        second_unseal_refused(&r);
        last = Some(r);
    }
    last.expect("two boots")
}

/// dracut (systemd in the initrd) with bootchain's module: its password agent answers
/// systemd-cryptsetup with the passphrase unsealed from a bootchain-tpm2 token sealed to
/// literal PCR 7+11 (+ the lock PCR), predicted before the first boot. (A bootchain-tpm2
/// token: systemd ignores it — a systemd-tpm2 token it opens by itself, see the next test —
/// so the passphrase request is answered by our agent.)
#[test]
#[ignore = "boots VMs; run by ./scripts/test"]
fn dracut_root_opens_with_the_bootchain_agent() {
    if !vm::require_qemu("dracut_root_opens_with_the_bootchain_agent") {
        return;
    }
    let r = dracut_boot("test-dracut", "", &["--token-type", "bootchain"]);
    assert!(
        r.serial
            .contains("bootchain: answered the passphrase request for"),
        "the bootchain agent answered:\n{}",
        r.serial
    );
    record("dracut (systemd initrd) + bootchain agent", &r);
}

/// systemd's own systemd-cryptsetup (252, dracut initrd, `tpm2-device=auto`) opens a
/// systemd-tpm2 token that `bootchain luks enroll` wrote before the first boot.
#[test]
#[ignore = "boots VMs; run by ./scripts/test"]
fn systemd_cryptsetup_opens_a_token_bootchain_wrote() {
    if !vm::require_qemu("systemd_cryptsetup_opens_a_token_bootchain_wrote") {
        return;
    }
    let r = dracut_boot("test-systemd", "rd.luks.options=tpm2-device=auto ", &[]);
    // Nobody typed anything and bootchain's agent did not answer: systemd unsealed the token.
    assert!(
        !r.serial
            .contains("bootchain: answered the passphrase request"),
        "{}",
        r.serial
    );
    record("dracut + systemd-cryptsetup tpm2-device=auto", &r);
}
