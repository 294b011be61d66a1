//! `bootchain snp measure` against PyPI sev-snp-measure 0.0.13 (virtee), both run as command
//! lines on Debian 13's OVMF 2025.02 (`OVMF.fd` and `OVMF_CODE_4M.fd` from the trixie `ovmf`
//! .deb), set up by `scripts/cc-tools` under `.cache/`. A machine where it cannot be set up
//! skips these tests with a "SKIPPED:" line on stderr, never silently.
//!
//! Debian's OVMF has no SNP_KERNEL_HASHES section (only the AmdSev build has it), so the
//! kernel-hashes path is checked twice: the table and page bytes against sev-snp-measure's own
//! `sevsnpmeasure.sev_hashes`, and whole digests with `--kernel` against sev-snp-measure on a
//! *synthetic* firmware: Debian 13's OVMF.fd with its SVSM_CAA section retyped as
//! SNP_KERNEL_HASHES and a hash-table GPA written into its footer table.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use bootchain::ovmf::{Ovmf, OvmfError, SectionType};
use bootchain::snp::{self, SevHashes, SnpError};
use bootchain::uki::{SectionContent, UkiBuilder};
use common::{bootchain_bin, kernel, pseudo_random, repo_root, require_stub};

/// What `scripts/cc-tools` printed (KEY=VALUE), or why it could not run.
fn cc_tools() -> Result<&'static BTreeMap<String, String>, &'static str> {
    static T: OnceLock<Result<BTreeMap<String, String>, String>> = OnceLock::new();
    T.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/cc-tools"))
            .output()
            .map_err(|e| format!("cannot run scripts/cc-tools: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/cc-tools failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    })
    .as_ref()
    .map_err(String::as_str)
}

/// The tools, or `None` after printing why the test is skipped.
fn tools(test: &str) -> Option<&'static BTreeMap<String, String>> {
    match cc_tools() {
        Ok(t) => Some(t),
        Err(why) => {
            eprintln!(
                "SKIPPED: {test}: sev-snp-measure 0.0.13 / Debian 13 OVMF unavailable: {why}"
            );
            None
        }
    }
}

fn ovmf13(t: &BTreeMap<String, String>) -> Vec<PathBuf> {
    let root = PathBuf::from(&t["ovmf13"]);
    vec![
        root.join("usr/share/ovmf/OVMF.fd"),
        root.join("usr/share/OVMF/OVMF_CODE_4M.fd"),
    ]
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// Run both tools with the same arguments; both must succeed with the same output.
fn same(t: &BTreeMap<String, String>, args: &[String]) -> String {
    let (ok1, ours, err1) = run(Command::new(bootchain_bin())
        .args(["snp", "measure"])
        .args(args));
    let (ok2, theirs, err2) = run(Command::new(&t["sev_snp_measure"]).args(args));
    assert!(ok1, "bootchain snp measure {args:?} failed: {err1}");
    assert!(ok2, "sev-snp-measure {args:?} failed: {err2}");
    assert_eq!(ours, theirs, "digests differ for {args:?}");
    ours
}

fn args(s: &str, ovmf: &Path) -> Vec<String> {
    let mut v: Vec<String> = s.split_whitespace().map(String::from).collect();
    v.push("--ovmf".into());
    v.push(ovmf.display().to_string());
    v
}

#[test]
fn snp_digests_equal_sev_snp_measure() {
    let Some(t) = tools("snp_digests_equal_sev_snp_measure") else {
        return;
    };
    let mut n = 0;
    for fw in ovmf13(t) {
        let mut matrix = BTreeMap::new();
        for vcpus in [1, 2, 4] {
            for ty in ["EPYC-v4", "EPYC-Milan"] {
                for gf in ["0x1", "0x21"] {
                    let a = format!(
                        "--mode snp --vcpus {vcpus} --vcpu-type {ty} --guest-features {gf}"
                    );
                    matrix.insert(same(t, &args(&a, &fw)), a);
                    n += 1;
                }
            }
        }
        // Every configuration of the matrix gives its own digest (vCPU type, count and
        // features all count).
        assert_eq!(matrix.len(), 12, "two configurations gave the same digest");
        let one = |a: &str| same(t, &args(a, &fw));
        // Other ways to name a vCPU give the same digest as the type they stand for.
        let milan = one("--mode snp --vcpus 2 --vcpu-type EPYC-Milan");
        assert_eq!(one("--mode snp --vcpus 2 --vcpu-sig 0xa00f11"), milan);
        let genoa = one("--mode snp --vcpus 2 --vcpu-type EPYC-Genoa");
        assert_eq!(
            one("--mode snp --vcpus 2 --vcpu-family 25 --vcpu-model 17 --vcpu-stepping 0"),
            genoa
        );
        assert_ne!(genoa, milan);
        n += 4;
        // Other VMMs, base64 output, the verbose line.
        for a in [
            "--mode snp --vcpus 2 --vcpu-type EPYC-Rome",
            "--mode snp --vcpus 2 --vmm-type ec2",
            "--mode snp --vcpus 3 --vmm-type gce",
            "--mode snp --vcpus 1 --vcpu-type EPYC-v4 --vmm-type ec2",
            "--mode snp --vcpus 2 --vcpu-type EPYC-v4 --output-format base64",
            "--mode snp --vcpus 2 --vcpu-type EPYC-v4 -v",
        ] {
            one(a);
            n += 1;
        }
    }
    eprintln!("snp: {n} configurations on Debian 13's OVMF.fd and OVMF_CODE_4M.fd matched");
}

#[test]
fn seves_and_sev_digests_equal_sev_snp_measure() {
    let Some(t) = tools("seves_and_sev_digests_equal_sev_snp_measure") else {
        return;
    };
    let mut n = 0;
    for fw in ovmf13(t) {
        for vcpus in [1, 2, 4] {
            for ty in ["EPYC-v4", "EPYC-Milan"] {
                same(
                    t,
                    &args(
                        &format!("--mode seves --vcpus {vcpus} --vcpu-type {ty}"),
                        &fw,
                    ),
                );
                n += 1;
            }
        }
        same(t, &args("--mode seves --vcpus 2 --vmm-type gce", &fw));
        same(t, &args("--mode sev", &fw));
        same(t, &args("--mode sev --output-format base64", &fw));
        n += 3;
    }
    eprintln!("seves/sev: {n} configurations matched");
}

#[test]
fn precomputed_ovmf_hash_equals_sev_snp_measure() {
    let Some(t) = tools("precomputed_ovmf_hash_equals_sev_snp_measure") else {
        return;
    };
    let fw = &ovmf13(t)[0];
    let h = same(t, &args("--mode snp:ovmf-hash", fw));
    let direct = same(t, &args("--mode snp --vcpus 2 --vcpu-type EPYC-v4", fw));
    let seeded = same(
        t,
        &args(
            &format!("--mode snp --vcpus 2 --vcpu-type EPYC-v4 --snp-ovmf-hash {h}"),
            fw,
        ),
    );
    assert_eq!(direct, seeded);
}

/// A real UKI (Debian stub, Debian kernel), an initrd, and command lines.
struct Inputs {
    _dir: tempfile::TempDir,
    uki: PathBuf,
    initrd: PathBuf,
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let initrd = dir.path().join("initrd.img");
    std::fs::write(&initrd, pseudo_random(300_000, 7)).unwrap();
    let uki = dir.path().join("uki.efi");
    UkiBuilder::new()
        .stub(require_stub())
        .linux(kernel())
        .cmdline(SectionContent::Bytes(b"console=ttyS0 rw".to_vec()))
        .build(&uki)
        .unwrap();
    Inputs {
        _dir: dir,
        uki,
        initrd,
    }
}

const APPENDS: &[Option<&str>] = &[
    None,
    Some(""),
    Some("console=ttyS0 root=/dev/vda2 quiet"),
    Some("ä é \u{1F600}"),
];

#[test]
fn hashes_table_equals_sev_snp_measures_construction() {
    let Some(t) = tools("hashes_table_equals_sev_snp_measures_construction") else {
        return;
    };
    let inp = inputs();
    let script = "import sys\n\
from sevsnpmeasure.sev_hashes import SevHashes\n\
k, i, a, off = sys.argv[1], sys.argv[2] or None, sys.argv[3] if sys.argv[4] == '1' else None, int(sys.argv[5])\n\
h = SevHashes(k, i, a)\n\
print(h.construct_table().hex())\n\
print(h.construct_page(off).hex())\n";
    let mut n = 0;
    for initrd in [None, Some(&inp.initrd)] {
        for append in APPENDS {
            for offset in [0usize, 0xc00, 4096 - 176] {
                let (ok, out, err) = run(Command::new(&t["python"])
                    .args(["-c", script])
                    .arg(&inp.uki)
                    .arg(initrd.map(|p| p.as_os_str()).unwrap_or_default())
                    .arg(append.unwrap_or_default())
                    .arg(if append.is_some() { "1" } else { "0" })
                    .arg(offset.to_string()));
                assert!(ok, "sevsnpmeasure.sev_hashes failed: {err}");
                let mut lines = out.lines();
                let ours =
                    SevHashes::from_files(&inp.uki, initrd.map(|p| p.as_path()), *append).unwrap();
                assert_eq!(
                    hex::encode(ours.table()),
                    lines.next().unwrap(),
                    "table, {initrd:?} {append:?}"
                );
                assert_eq!(
                    hex::encode(&ours.page(offset).unwrap()[..]),
                    lines.next().unwrap(),
                    "page at {offset:#x}, {initrd:?} {append:?}"
                );
                // The in-memory constructor agrees with the streaming one.
                let bytes = SevHashes::new(
                    &std::fs::read(&inp.uki).unwrap(),
                    initrd.map(|p| std::fs::read(p).unwrap()).as_deref(),
                    *append,
                );
                assert_eq!(bytes, ours);
                n += 1;
            }
        }
    }
    eprintln!("kernel hashes: {n} tables and pages matched sevsnpmeasure.sev_hashes");
}

/// Debian 13's OVMF.fd made to look like an AmdSev build: the SVSM_CAA section (one page)
/// becomes SNP_KERNEL_HASHES, and the SEV hash-table entry points into it at `offset`.
fn synthetic_amdsev(src: &Path, dst: &Path, offset: u32) {
    let mut d = std::fs::read(src).unwrap();
    let o = Ovmf::parse(d.clone()).unwrap();
    let caa = *o
        .sev_sections()
        .unwrap()
        .iter()
        .find(|s| s.kind == SectionType::SvsmCaa && s.size == 4096)
        .expect("Debian 13's OVMF has a one-page SVSM_CAA section");
    // The metadata: "ASEV" header, then 12-byte descriptors; find this one by its bytes.
    let mut desc = caa.gpa.to_le_bytes().to_vec();
    desc.extend_from_slice(&caa.size.to_le_bytes());
    desc.extend_from_slice(&4u32.to_le_bytes());
    let at = d.windows(12).rposition(|w| w == desc).unwrap();
    d[at + 8..at + 12].copy_from_slice(&0x10u32.to_le_bytes());
    // The hash-table entry: 8 data bytes, then u16 size (26) and the GUID.
    let g = bootchain::ovmf::SEV_HASH_TABLE_RV_GUID.0;
    let at = d.windows(16).rposition(|w| w == g).unwrap();
    assert_eq!(&d[at - 2..at], &26u16.to_le_bytes());
    d[at - 10..at - 6].copy_from_slice(&(caa.gpa + offset).to_le_bytes());
    d[at - 6..at - 2].copy_from_slice(&4096u32.to_le_bytes());
    std::fs::write(dst, d).unwrap();
}

#[test]
fn kernel_hashes_digests_equal_sev_snp_measure_on_synthetic_amdsev_firmware() {
    let Some(t) = tools("kernel_hashes_digests_equal_sev_snp_measure_on_synthetic_amdsev_firmware")
    else {
        return;
    };
    let inp = inputs();
    let dir = tempfile::tempdir().unwrap();
    let fw = dir.path().join("amdsev-like.fd");
    synthetic_amdsev(&ovmf13(t)[0], &fw, 0xc00);
    let mut n = 0;
    let mut seen = std::collections::BTreeSet::new();
    for mode in [
        "--mode snp --vcpus 2 --vcpu-type EPYC-v4",
        "--mode seves --vcpus 2 --vcpu-type EPYC-Milan",
        "--mode sev",
    ] {
        // Without a kernel the section is measured as zero pages.
        seen.insert(same(t, &args(mode, &fw)));
        n += 1;
        for initrd in [None, Some(&inp.initrd)] {
            for append in [None, Some("console=ttyS0 quiet")] {
                let mut a = args(mode, &fw);
                a.extend(["--kernel".into(), inp.uki.display().to_string()]);
                if let Some(i) = initrd {
                    a.extend(["--initrd".into(), i.display().to_string()]);
                }
                if let Some(c) = append {
                    a.extend(["--append".into(), c.into()]);
                }
                seen.insert(same(t, &a));
                n += 1;
            }
        }
    }
    assert_eq!(seen.len(), n);
    eprintln!("kernel hashes: {n} whole digests matched on the synthetic AmdSev-like firmware");
}

#[test]
fn kernel_on_debian_ovmf_is_refused_like_sev_snp_measure() {
    let Some(t) = tools("kernel_on_debian_ovmf_is_refused_like_sev_snp_measure") else {
        return;
    };
    let inp = inputs();
    let fw = &ovmf13(t)[0];
    let o = Ovmf::read(fw).unwrap();
    let h = SevHashes::from_files(&inp.uki, None, None).unwrap();
    for (mode, want) in [
        (snp::SevMode::Snp, "NoKernelHashesSection"),
        (snp::SevMode::SevEs, "NoHashTable"),
        (snp::SevMode::Sev, "NoHashTable"),
    ] {
        let cfg = snp::LaunchConfig {
            mode,
            vcpus: 1,
            vcpu_sig: 0,
            guest_features: 1,
            vmm: snp::VmmType::Qemu,
            hashes: Some(h.clone()),
            ovmf_hash: None,
        };
        let e = snp::launch_digest(&o, &cfg).unwrap_err();
        assert!(format!("{e:?}").starts_with(want), "{mode:?}: {e:?}");
    }
    for mode in ["snp", "seves", "sev"] {
        let mut a = args(&format!("--mode {mode} --vcpus 1 --vcpu-type EPYC-v4"), fw);
        a.extend(["--kernel".into(), inp.uki.display().to_string()]);
        let (ok1, _, _) = run(Command::new(bootchain_bin())
            .args(["snp", "measure"])
            .args(&a));
        let (ok2, _, _) = run(Command::new(&t["sev_snp_measure"]).args(&a));
        assert!(
            !ok1 && !ok2,
            "--mode {mode} --kernel on Debian's OVMF must fail in both"
        );
    }
}

/// Run our CLI on a bad firmware file: it must fail and say `want`.
fn refused(fw: &Path, mode: &str, want: &str) {
    let (ok, out, err) = run(Command::new(bootchain_bin())
        .args(["snp", "measure"])
        .args(args(mode, fw)));
    assert!(!ok, "{} accepted: {out}", fw.display());
    assert!(err.contains(want), "{}: {err}", fw.display());
}

#[test]
fn bad_firmware_files_get_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let snp2 = "--mode snp --vcpus 2 --vcpu-type EPYC-v4";

    std::fs::write(p("empty.fd"), b"").unwrap();
    assert!(matches!(
        Ovmf::read(&p("empty.fd")),
        Err(OvmfError::Truncated { size: 0 })
    ));
    refused(&p("empty.fd"), snp2, "too short");

    std::fs::write(p("random.fd"), pseudo_random(1 << 20, 3)).unwrap();
    assert!(matches!(
        Ovmf::read(&p("random.fd")),
        Err(OvmfError::NoFooterTable)
    ));
    for mode in [
        snp2,
        "--mode seves --vcpus 1 --vcpu-type EPYC-v4",
        "--mode sev",
    ] {
        refused(&p("random.fd"), mode, "no OVMF footer table");
    }
    assert!(matches!(
        Ovmf::read(&p("missing.fd")),
        Err(OvmfError::Io { .. })
    ));

    let Some(t) = tools("bad_firmware_files_get_typed_errors (Debian firmware cases)") else {
        return;
    };
    let good = std::fs::read(&ovmf13(t)[0]).unwrap();
    // Cut short at the end (the table is gone) and at the start (the SEV metadata pointer
    // then points before the image).
    std::fs::write(p("cut-end.fd"), &good[..good.len() - 4096]).unwrap();
    assert!(matches!(
        Ovmf::read(&p("cut-end.fd")),
        Err(OvmfError::NoFooterTable)
    ));
    refused(&p("cut-end.fd"), snp2, "no OVMF footer table");
    let meta_off = u32::from_le_bytes(
        Ovmf::parse(good.clone())
            .unwrap()
            .entry(&bootchain::ovmf::OVMF_SEV_METADATA_GUID)
            .unwrap()[..4]
            .try_into()
            .unwrap(),
    ) as usize;
    std::fs::write(p("cut-start.fd"), &good[good.len() - meta_off + 8..]).unwrap();
    assert!(matches!(
        Ovmf::read(&p("cut-start.fd")),
        Err(OvmfError::BadSevMetadata(_))
    ));
    refused(&p("cut-start.fd"), snp2, "malformed OVMF SEV metadata");
    // A footer whose size runs past the start of the image.
    let mut bad = good.clone();
    let f = bad.len() - 32 - 18;
    bad[f..f + 2].copy_from_slice(&0xffffu16.to_le_bytes());
    let small = bad[bad.len() - 0x8000..].to_vec();
    std::fs::write(p("bad-table.fd"), small).unwrap();
    assert!(matches!(
        Ovmf::read(&p("bad-table.fd")),
        Err(OvmfError::BadTable(_))
    ));
    refused(&p("bad-table.fd"), snp2, "malformed OVMF footer table");
    // Not page-sized: SNP measures pages.
    let mut odd = vec![0u8; 100];
    odd.extend_from_slice(&good);
    std::fs::write(p("odd.fd"), odd).unwrap();
    refused(&p("odd.fd"), snp2, "not a multiple of 4096");

    // Debian 12's OVMF_CODE_4M.fd (2022.11) has the footer table but no SEV metadata:
    // sev-snp-measure prints a digest anyway; we refuse. (Debian 12's 2 MiB OVMF.fd does
    // have SEV metadata, and both tools agree on it.)
    let old = PathBuf::from(&t["ovmf12"]).join("usr/share/OVMF/OVMF_CODE_4M.fd");
    let o = Ovmf::read(&old).unwrap();
    assert!(o.sev_sections().is_none());
    let cfg = snp::LaunchConfig {
        mode: snp::SevMode::Snp,
        vcpus: 2,
        vcpu_sig: 0,
        guest_features: 1,
        vmm: snp::VmmType::Qemu,
        hashes: None,
        ovmf_hash: None,
    };
    assert!(matches!(
        snp::launch_digest(&o, &cfg),
        Err(SnpError::NoSevMetadata)
    ));
    refused(&old, snp2, "no SEV metadata");
    let old2m = PathBuf::from(&t["ovmf12"]).join("usr/share/ovmf/OVMF.fd");
    same(t, &args(snp2, &old2m));
    // vCPU counts out of range.
    for v in ["0", "5000"] {
        refused(
            &ovmf13(t)[0],
            &format!("--mode snp --vcpu-type EPYC-v4 --vcpus {v}"),
            "vCPU count",
        );
    }
}
