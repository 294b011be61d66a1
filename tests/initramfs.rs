//! The initramfs side: the initramfs-tools hook puts `bootchain-unseal` and everything it
//! loads into an initramfs tree; in a booted VM (OVMF + swtpm vTPM), that binary unseals a
//! secret sealed to the UKI's signed PCR 11 policy, using the `.pcrsig` systemd-stub hands to
//! the initrd as /.extra/tpm2-pcr-signature.json.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bootchain::hash::HashAlg;
use bootchain::seal::{AuthorizeKey, SealRequest};
use bootchain::tpm::Tpm;
use bootchain::uki::{PcrPolicySigner, SectionContent, UkiBuilder};
use common::swtpm::Swtpm;
use common::vm::{self, BootSpec};
use common::*;

fn unseal_bin() -> PathBuf {
    let b = bootchain_bin().with_file_name("bootchain-unseal");
    assert!(
        b.exists(),
        "{} missing: cargo build --workspace",
        b.display()
    );
    b
}

/// Run the hook into `dest` with a stripped copy of the binary (as a package would install).
fn run_hook(dest: &Path) {
    require_tool("strip");
    assert!(
        Path::new("/usr/share/initramfs-tools/hook-functions").exists(),
        "initramfs-tools missing: scripts/install-deps test"
    );
    let stripped = dest.with_extension("bin");
    run_ok(
        Command::new("strip")
            .arg("-o")
            .arg(&stripped)
            .arg(unseal_bin()),
    );
    std::fs::create_dir_all(dest).unwrap();
    let hook = repo_root().join("bins/bootchain-unseal/initramfs/hook");
    run_ok(
        Command::new("sh")
            .arg(&hook)
            .env("DESTDIR", dest)
            .env("verbose", "n")
            .env("BOOTCHAIN_UNSEAL", &stripped)
            .env(
                "BOOTCHAIN_KEYSCRIPT",
                repo_root().join("bins/bootchain-unseal/initramfs/keyscript"),
            ),
    );
}

/// The hook copies the binary, every library ldd names, and the dlopen()ed device TCTI; in a
/// chroot of only that tree the binary runs and, without a TPM device, fails with the reason.
#[test]
fn hook_makes_a_self_contained_tree() {
    let d = tempfile::tempdir().unwrap();
    let dest = d.path().join("root");
    run_hook(&dest);
    assert!(dest.join("usr/bin/bootchain-unseal").exists());
    assert!(dest.join("usr/lib/bootchain/bootchain-keyscript").exists());
    let ldd = run_ok(Command::new("ldd").arg(unseal_bin()));
    for lib in ldd
        .lines()
        .filter_map(|l| l.split("=>").nth(1))
        .filter_map(|r| r.split_whitespace().next())
    {
        let name = Path::new(lib).file_name().unwrap();
        let found = ["usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu"]
            .iter()
            .any(|dir| dest.join(dir).join(name).exists());
        assert!(found, "{lib} not copied");
    }
    assert!(dest
        .join("usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0")
        .exists());
    // Merged /usr, as in the real initramfs.
    for l in ["lib", "lib64"] {
        if dest.join("usr").join(l).exists() && !dest.join(l).exists() {
            std::os::unix::fs::symlink(format!("usr/{l}"), dest.join(l)).unwrap();
        }
    }
    let env = dest.join("root.sealed");
    std::fs::write(&env, "{}").unwrap();
    let out = run(Command::new("chroot").arg(&dest).args([
        "/usr/bin/bootchain-unseal",
        "--tcti",
        "device:/dev/tpmrm0",
        "--luks",
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "usage error exits 2: {err}");
    assert!(
        err.contains("--luks needs a value") && err.contains("usage: bootchain-unseal"),
        "{err}"
    );
    // Positive control: with the value given, the usage is accepted and the missing TPM
    // is what stops it.
    let out = run(Command::new("chroot").arg(&dest).args([
        "/usr/bin/bootchain-unseal",
        "--tcti",
        "device:/dev/tpmrm0",
        "--luks",
        "/root.sealed",
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/dev/tpmrm0 does not exist") && !err.contains("usage:"),
        "{err}"
    );
    let out = run(Command::new("chroot").arg(&dest).args([
        "/usr/bin/bootchain-unseal",
        "--tcti",
        "device:/dev/tpmrm0",
        "/root.sealed",
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("malformed sealed envelope"), "{err}");
    // A well-formed envelope (its digest a SHA-256 one): now the missing TPM is the error.
    std::fs::write(
        &env,
        serde_json::to_string(&serde_json::json!({
            "format": "bootchain-sealed", "version": 1,
            "parent": {"kind": "ecc-p256", "name": "00"},
            "policy": {"digest": "00".repeat(32), "bank": "sha256", "pcrs": [], "values": {}},
            "tpm": {"private": "", "public": ""},
            "payload": {"alg": "A256GCM", "nonce": "", "ciphertext": ""}}))
        .unwrap(),
    )
    .unwrap();
    let out = run(Command::new("chroot").arg(&dest).args([
        "/usr/bin/bootchain-unseal",
        "--tcti",
        "device:/dev/tpmrm0",
        "/root.sealed",
    ]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot open TPM via device:/dev/tpmrm0: /dev/tpmrm0 does not exist"),
        "{err}"
    );
}

const UNSEAL_INIT: &str = r#"#!/bin/sh
export PATH=/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "BOOTCHAIN-INITRD-REACHED"
ls /.extra
if /usr/bin/bootchain-unseal --tcti device:/dev/tpmrm0 /etc/root.sealed > /secret 2> /err; then
  echo "BOOTCHAIN-UNSEAL-OK $(base64 /secret)"
else
  echo "BOOTCHAIN-UNSEAL-FAILED $(cat /err)"
fi
poweroff -f
"#;

fn uki_with_signed_policy(out: &Path, initrd: &Path, key: &Path) {
    UkiBuilder::new()
        .stub(require_stub())
        .linux(kernel())
        .initrd(initrd)
        .cmdline(SectionContent::Bytes(vm::TEST_CMDLINE.as_bytes().to_vec()))
        .sign_pcr_policy(PcrPolicySigner {
            key: Box::new(bootchain::measure::load_pcr_signing_key(key, None).unwrap()),
            // The busybox initrd runs no systemd-pcrphase: sign PCR 11 as the stub leaves it.
            phases: vec![bootchain::measure::Phase::after_stub()],
            banks: vec![HashAlg::Sha256],
        })
        .build(out)
        .unwrap();
}

/// Seal on the host (to "PCR 11 signed by this key"), boot UKIs under OVMF with that vTPM:
/// the UKI signed by the key unseals in its initramfs; one signed by another key is refused
/// there with the reason.
#[test]
#[ignore = "boots VMs; run by ./scripts/test"]
fn initramfs_unseals_with_the_ukis_signed_pcr_policy() {
    if !vm::require_qemu("initramfs_unseals_with_the_ukis_signed_pcr_policy") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (private, public) = make_rsa_keypair(d.path(), "pcr");
    let (other, _) = make_rsa_keypair(d.path(), "other");
    let key =
        bootchain::measure::rsa_public_key_from_pem(&std::fs::read(&public).unwrap()).unwrap();

    // Seal with a TCP swtpm, then keep its state for the VM.
    let secret = pseudo_random(48, 77);
    let mut sw = Swtpm::start();
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    let ak = AuthorizeKey {
        key,
        pcrs: vec![11],
    };
    let env = bootchain::seal::seal(
        &mut t,
        &SealRequest {
            authorize: Some(&ak),
            ..seal_request(&[], &Default::default())
        },
        &secret,
    )
    .unwrap();
    drop(t);
    sw.kill();
    let state = d.path().join("tpmstate");
    std::fs::create_dir(&state).unwrap();
    for e in std::fs::read_dir(&sw.state).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), state.join(e.file_name())).unwrap();
    }
    drop(sw);

    let tree = d.path().join("tree");
    run_hook(&tree);
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(
        tree.join("etc/root.sealed"),
        serde_json::to_string(&env).unwrap(),
    )
    .unwrap();
    let init = d.path().join("init");
    std::fs::write(&init, UNSEAL_INIT).unwrap();
    let initrd = d.path().join("initrd.img");
    run_ok(
        Command::new(repo_root().join("scripts/make-initrd"))
            .arg(&initrd)
            .arg(&init)
            .arg(&tree),
    );

    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&secret);
    for (signer, ok) in [(&private, true), (&other, false)] {
        let uki = d.path().join("uki.efi");
        uki_with_signed_policy(&uki, &initrd, signer);
        let r = vm::boot(&BootSpec {
            uki: &uki,
            secure_boot: None,
            timeout: Duration::from_secs(240),
            tpm_state: Some(&state),
        });
        assert!(r.reached_initrd, "{}", r.serial);
        assert!(
            r.serial.contains("tpm2-pcr-signature.json"),
            "the stub passed .pcrsig to the initrd: {}",
            r.serial
        );
        if ok {
            assert!(
                r.serial.contains(&format!("BOOTCHAIN-UNSEAL-OK {b64}")),
                "{}",
                r.serial
            );
        } else {
            assert!(
                r.serial.contains("BOOTCHAIN-UNSEAL-FAILED")
                    && r.serial
                        .contains("no PCR policy signature matches this boot"),
                "{}",
                r.serial
            );
        }
    }
}
