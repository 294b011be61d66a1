//! PCR 11 prediction and signed PCR policies, judged by systemd-measure (252), a TPM trial
//! session (tpm2-tools on swtpm) and the PCR values of real boots (test-vectors/boots).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bootchain::hash::{Digest, HashAlg};
use bootchain::measure::{self, Phase, SectionDigests, StubRules};
use bootchain::policy::{self, PcrIndex, PcrSelection};
use bootchain::uki::{PcrPolicySigner, SectionContent, UkiBuilder};
use common::swtpm::Swtpm;
use common::*;

const SYSTEMD_MEASURE: &str = "/usr/lib/systemd/systemd-measure";

fn require_measure() {
    assert!(
        Path::new(SYSTEMD_MEASURE).exists(),
        "{SYSTEMD_MEASURE} missing (package systemd; ./scripts/test installs its libtss2 deps)"
    );
}

struct Parts {
    _d: tempfile::TempDir,
    dir: PathBuf,
    osrel: PathBuf,
    cmdline: PathBuf,
    initrd: PathBuf,
}

fn parts() -> Parts {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_path_buf();
    let osrel = dir.join("osrel");
    let cmdline = dir.join("cmdline");
    let initrd = dir.join("initrd");
    std::fs::write(&osrel, "ID=bootchain-test\nVERSION_ID=1\n").unwrap();
    std::fs::write(&cmdline, "console=ttyS0 root=/dev/vda2").unwrap();
    std::fs::write(&initrd, pseudo_random(200_003, 11)).unwrap();
    Parts {
        _d: d,
        dir,
        osrel,
        cmdline,
        initrd,
    }
}

fn systemd_calculate(args: &[String]) -> serde_json::Value {
    let out = run_ok(
        Command::new(SYSTEMD_MEASURE)
            .arg("calculate")
            .arg("--json=short")
            .args(args),
    );
    serde_json::from_str(&out).unwrap()
}

fn part_args(p: &Parts, kernel: &Path) -> Vec<String> {
    vec![
        format!("--linux={}", kernel.display()),
        format!("--osrel={}", p.osrel.display()),
        format!("--cmdline={}", p.cmdline.display()),
        format!("--initrd={}", p.initrd.display()),
    ]
}

fn enter_initrd() -> Phase {
    Phase::parse("enter-initrd").unwrap()
}

fn loose_prediction(
    files: &[(&str, &Path)],
    banks: &[HashAlg],
    phases: &[Phase],
) -> measure::Pcr11Prediction {
    let sections: Vec<SectionDigests> = files
        .iter()
        .map(|(n, p)| {
            let (size, digests) = measure::file_digests(p, banks).unwrap();
            SectionDigests {
                section: n.parse().unwrap(),
                size,
                digests,
            }
        })
        .collect();
    measure::predict_pcr11(&sections, None, banks, phases)
}

#[test]
fn loose_parts_equal_systemd_measure_in_all_banks_and_phases() {
    require_measure();
    let p = parts();
    let k = kernel();
    let phases = vec![
        "".to_string(),
        "enter-initrd".to_string(),
        "enter-initrd:leave-initrd:sysinit:ready".to_string(),
    ];
    let mut args = part_args(&p, &k);
    for ph in &phases {
        args.push(format!("--phase={ph}"));
    }
    let theirs = systemd_calculate(&args);
    let ours = loose_prediction(
        &[
            (".linux", &k),
            (".osrel", &p.osrel),
            (".cmdline", &p.cmdline),
            (".initrd", &p.initrd),
        ],
        &HashAlg::ALL,
        &measure::phase_list(&phases).unwrap(),
    );
    assert_eq!(measure::calculate_json(&ours), theirs);
}

#[test]
fn uki_prediction_with_stub_252_rules_equals_systemd_measure() {
    require_measure();
    let p = parts();
    let k = kernel();
    let uki = p.dir.join("uki.efi");
    UkiBuilder::new()
        .stub(require_stub())
        .linux(&k)
        .initrd(&p.initrd)
        .cmdline(SectionContent::File(p.cmdline.clone()))
        .os_release(SectionContent::File(p.osrel.clone()))
        .build(&uki)
        .unwrap();
    // The UKI also carries .uname and .sbat, which the 252 stub does not measure and
    // systemd-measure 252 does not know.
    let phases = Phase::list(&["", "enter-initrd"]).unwrap();
    let ours = measure::predict_uki(&uki, None, &HashAlg::ALL, &phases).unwrap();
    let mut args = part_args(&p, &k);
    args.push("--phase=".into());
    args.push("--phase=enter-initrd".into());
    assert_eq!(measure::calculate_json(&ours), systemd_calculate(&args));
    // With the newest rules, .uname and .sbat count and the value differs.
    let newest = measure::predict_uki(&uki, Some(257), &[HashAlg::Sha256], &phases).unwrap();
    assert_ne!(
        newest.value(HashAlg::Sha256, &Phase::after_stub()),
        ours.value(HashAlg::Sha256, &Phase::after_stub())
    );
    // Event list: name then data for each of the four sections, in stub order.
    let names: Vec<&str> = ours.events.iter().map(|e| e.description.as_str()).collect();
    assert_eq!(
        names,
        [".linux", ".linux", ".osrel", ".osrel", ".cmdline", ".cmdline", ".initrd", ".initrd"]
    );
}

#[test]
fn cli_calculate_output_is_byte_identical_to_systemd_measure() {
    require_measure();
    let p = parts();
    let k = kernel();
    let args = part_args(&p, &k);
    for mode in [&["--json=pretty"][..], &["--json=short"][..], &[][..]] {
        let theirs = run_ok(
            Command::new(SYSTEMD_MEASURE)
                .arg("calculate")
                .args(&args)
                .args(mode),
        );
        let ours = run_ok(
            Command::new(bootchain_bin())
                .args(["measure", "calculate"])
                .args(&args)
                .args(mode),
        );
        assert_eq!(ours, theirs, "mode {mode:?}");
    }
}

fn pcr_keys(dir: &Path) -> (PathBuf, PathBuf) {
    make_rsa_keypair(dir, "pcr")
}

#[test]
fn sign_equals_systemd_measure_sign_byte_for_byte() {
    require_measure();
    require_tool("swtpm");
    let p = parts();
    let k = kernel();
    let (private, public) = pcr_keys(&p.dir);
    let tpm = Swtpm::start();
    let mut args = part_args(&p, &k);
    args.extend([
        "--bank=sha1".to_string(),
        "--bank=sha256".to_string(),
        "--phase=".to_string(),
        "--phase=enter-initrd".to_string(),
        format!("--private-key={}", private.display()),
        format!("--public-key={}", public.display()),
        "--json=pretty".to_string(),
    ]);
    let theirs = run_ok(
        Command::new(SYSTEMD_MEASURE)
            .arg("sign")
            .arg(format!("--tpm2-device={}", tpm.tcti()))
            .args(&args)
            .env("SYSTEMD_LOG_LEVEL", "err"),
    );
    let ours = run_ok(
        Command::new(bootchain_bin())
            .args(["measure", "sign"])
            .args(&args),
    );
    assert_eq!(ours, theirs);
    // --append merges without repeating entries.
    let first = p.dir.join("first.json");
    std::fs::write(&first, &ours).unwrap();
    let merged = run_ok(
        Command::new(bootchain_bin())
            .args(["measure", "sign"])
            .args(&args)
            .arg(format!("--append={}", first.display())),
    );
    assert_eq!(merged, ours);
}

/// `measure sign --json=short` is byte-identical to systemd-measure 252's; `--append` (which
/// 252 lacks) equals systemd-measure's own outputs for each sign, merged per bank in order
/// without repeats (as systemd ≥ 253 `--append` and ukify do). RSASSA-PKCS1-v1_5 signatures
/// are deterministic, so every `sig` is comparable.
#[test]
fn sign_short_and_append_equal_systemd_measure() {
    require_measure();
    require_tool("swtpm");
    let p = parts();
    let k = kernel();
    let (private, public) = pcr_keys(&p.dir);
    let tpm = Swtpm::start();
    let sign_args = |banks: &[&str], phases: &[&str]| {
        let mut a = part_args(&p, &k);
        a.extend(banks.iter().map(|b| format!("--bank={b}")));
        a.extend(phases.iter().map(|ph| format!("--phase={ph}")));
        a.push(format!("--private-key={}", private.display()));
        a.push(format!("--public-key={}", public.display()));
        a.push("--json=short".to_string());
        a
    };
    let theirs = |a: &[String]| {
        run_ok(
            Command::new(SYSTEMD_MEASURE)
                .arg("sign")
                .arg(format!("--tpm2-device={}", tpm.tcti()))
                .args(a)
                .env("SYSTEMD_LOG_LEVEL", "err"),
        )
    };
    let ours = |a: &[String], append: Option<&Path>| {
        let mut c = Command::new(bootchain_bin());
        c.args(["measure", "sign"]).args(a);
        if let Some(f) = append {
            c.arg(format!("--append={}", f.display()));
        }
        run_ok(&mut c)
    };
    let first = sign_args(&["sha1", "sha256"], &["", "enter-initrd"]);
    let second = sign_args(
        &["sha256", "sha384"],
        &["enter-initrd", "enter-initrd:leave-initrd"],
    );
    let (theirs1, theirs2) = (theirs(&first), theirs(&second));
    let ours1 = ours(&first, None);
    assert_eq!(ours1, theirs1, "--json=short");
    assert_eq!(ours(&second, None), theirs2, "--json=short");

    let f1 = p.dir.join("append-first.json");
    std::fs::write(&f1, &ours1).unwrap();
    let merged: serde_json::Value =
        serde_json::from_str(&ours(&second, Some(f1.as_path()))).unwrap();
    // The expected merge, from systemd-measure's outputs alone.
    let mut want: serde_json::Value = serde_json::from_str(&theirs1).unwrap();
    let add: serde_json::Value = serde_json::from_str(&theirs2).unwrap();
    let mut repeated = 0;
    for (bank, entries) in add.as_object().unwrap() {
        let slot = want
            .as_object_mut()
            .unwrap()
            .entry(bank.clone())
            .or_insert_with(|| serde_json::json!([]))
            .as_array_mut()
            .unwrap();
        for e in entries.as_array().unwrap() {
            if slot.contains(e) {
                repeated += 1;
            } else {
                slot.push(e.clone());
            }
        }
    }
    assert!(repeated > 0, "the two signs overlap (sha256, enter-initrd)");
    assert_eq!(merged, want, "--append");
    assert_eq!(
        merged.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["sha1", "sha256", "sha384"]
    );
    // Appending what is already there changes nothing.
    let again = ours(&first, Some(f1.as_path()));
    assert_eq!(again, theirs1);
}

#[test]
fn policy_pcr_equals_tpm_trial_session() {
    require_tool("tpm2_createpolicy");
    let tpm = Swtpm::start();
    // Make the PCRs non-trivial.
    for (pcr, bank, data) in [
        (7u32, "sha256", "aa"),
        (11, "sha256", "bb"),
        (11, "sha1", "cc"),
        (0, "sha256", "dd"),
    ] {
        let d = bank.parse::<HashAlg>().unwrap().digest(data.as_bytes());
        run_ok(
            tpm.tool("tpm2_pcrextend")
                .arg(format!("{pcr}:{bank}={}", d.to_hex())),
        );
    }
    for (bank, pcrs) in [
        (HashAlg::Sha256, vec![11u32]),
        (HashAlg::Sha256, vec![0, 7, 11]),
        (HashAlg::Sha1, vec![11]),
        (HashAlg::Sha256, vec![23]),
    ] {
        let list = pcrs
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let (_keep, out) = tpm_dir_file("policy.bin");
        run_ok(
            tpm.tool("tpm2_createpolicy")
                .args(["--policy-pcr", "-l"])
                .arg(format!("{}:{list}", bank.name()))
                .arg("-L")
                .arg(&out),
        );
        // No resource manager: flush the trial session tpm2-tools leaves behind.
        run_ok(tpm.tool("tpm2_flushcontext").arg("--loaded-session"));
        let trial = std::fs::read(&out).unwrap();
        let values: Vec<Digest> = pcrs.iter().map(|i| read_pcr(&tpm, bank, *i)).collect();
        let sel = PcrSelection::new(bank, pcrs.iter().map(|i| PcrIndex::new(*i).unwrap()));
        let ours = policy::policy_pcr(&policy::zero_policy(), &[sel], &values).unwrap();
        assert_eq!(hex::encode(&trial), ours.to_hex(), "{bank}:{list}");
    }
}

/// `name` in a temporary directory that lives as long as the returned guard.
fn tpm_dir_file(name: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(name);
    (d, p)
}

fn read_pcr(tpm: &Swtpm, bank: HashAlg, i: u32) -> Digest {
    let out = run_ok(tpm.tool("tpm2_pcrread").arg(format!("{}:{i}", bank.name())));
    let hexval = out
        .lines()
        .find_map(|l| {
            let (idx, val) = l.split_once(':')?;
            (idx.trim() == i.to_string() && val.trim().starts_with("0x"))
                .then(|| val.trim().trim_start_matches("0x").to_string())
        })
        .unwrap_or_else(|| panic!("tpm2_pcrread said {out}"));
    Digest::from_hex(bank, &hexval).unwrap()
}

#[test]
fn uki_with_pcrsig_signs_the_final_image_including_pcrpkey() {
    require_measure();
    let p = parts();
    let k = kernel();
    let (private, public) = pcr_keys(&p.dir);
    let uki = p.dir.join("signed-policy.efi");
    let key = measure::load_pcr_signing_key(&private, Some(&public)).unwrap();
    let report = UkiBuilder::new()
        .stub(require_stub())
        .linux(&k)
        .initrd(&p.initrd)
        .cmdline(SectionContent::File(p.cmdline.clone()))
        .os_release(SectionContent::File(p.osrel.clone()))
        .pcrpkey(SectionContent::File(public.clone()))
        .sign_pcr_policy(PcrPolicySigner {
            key: Box::new(key),
            phases: vec![enter_initrd()],
            banks: vec![HashAlg::Sha256],
        })
        .build(&uki)
        .unwrap();
    let reported = report
        .pcr11
        .expect("a PCR-signed build reports the PCR 11 it signed");
    let info = bootchain::uki::inspect(&uki).unwrap();
    let text = |n: &str| {
        info.sections
            .iter()
            .find(|s| s.name == n)
            .and_then(|s| s.text.clone())
            .unwrap()
    };
    assert_eq!(text(".pcrpkey"), std::fs::read_to_string(&public).unwrap());
    let sigs = measure::parse_signatures(text(".pcrsig").as_bytes()).unwrap();
    // The policy signed is PolicyPCR over the PCR 11 the stub will produce for this file.
    let pred = measure::predict_uki(&uki, None, &[HashAlg::Sha256], &[enter_initrd()]).unwrap();
    let v = pred
        .value(HashAlg::Sha256, &enter_initrd())
        .unwrap()
        .clone();
    assert_eq!(reported.value(HashAlg::Sha256, &enter_initrd()), Some(&v));
    let sel = PcrSelection::new(HashAlg::Sha256, [PcrIndex::new(11).unwrap()]);
    let pol = policy::policy_pcr(&policy::zero_policy(), &[sel], &[v]).unwrap();
    assert_eq!(sigs[0].1[0].pol, pol.to_hex());
    // And systemd-measure, given the same parts including .pcrpkey, computes the same policy.
    let mut args = part_args(&p, &k);
    args.push(format!("--pcrpkey={}", public.display()));
    args.push("--phase=enter-initrd".into());
    args.push("--bank=sha256".into());
    let theirs = systemd_calculate(&args);
    assert_eq!(
        theirs["sha256"][0]["hash"],
        pred.value(HashAlg::Sha256, &enter_initrd())
            .unwrap()
            .to_hex()
    );
    // The signature verifies with the public key (RSASSA-PKCS1-v1_5, SHA-256 over pol).
    let pubkey = measure::rsa_public_key_from_pem(&std::fs::read(&public).unwrap()).unwrap();
    use base64::Engine as _;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(sigs[0].1[0].sig.as_deref().unwrap())
        .unwrap();
    let h = HashAlg::Sha256.digest(pol.as_bytes());
    assert!(bootchain::keys::verify_prehashed(
        &bootchain::keys::PublicKey::Rsa(pubkey),
        HashAlg::Sha256,
        h.as_bytes(),
        &sig
    ));
    // And so does openssl, not our code: RSASSA-PKCS1-v1_5 with SHA-256 over the policy
    // digest's bytes, as systemd-measure signs it. A changed policy byte fails (control).
    let sig_file = p.dir.join("pcrsig.bin");
    std::fs::write(&sig_file, &sig).unwrap();
    let mut tampered = pol.as_bytes().to_vec();
    tampered[0] ^= 1;
    for (data, ok) in [(pol.as_bytes().to_vec(), true), (tampered, false)] {
        let pol_file = p.dir.join("pol.bin");
        std::fs::write(&pol_file, &data).unwrap();
        let out = run(Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&public)
            .arg("-signature")
            .arg(&sig_file)
            .arg(&pol_file));
        let text = String::from_utf8_lossy(&out.stdout);
        if ok {
            assert!(
                out.status.success() && text.contains("Verified OK"),
                "{text}"
            );
        } else {
            assert!(
                !out.status.success() && text.contains("Verification failure"),
                "{text}"
            );
        }
    }
}

/// The PCR 11 the booted guests read equals our prediction from the manifest's section
/// digests with the rules of the stub that booted (252, and 257 for the single-profile
/// stub257 boots; no phase: the test initrd is not systemd).
#[test]
fn boot_vectors_pcr11_equals_prediction() {
    for name in ["sb-on", "sb-off", "stub257-single", "stub257-addons"] {
        let b = vectors::load_boot(name);
        let sections: Vec<SectionDigests> = b.manifest["sections"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| {
                let section = s["name"].as_str().unwrap().parse().ok()?;
                Some((section, s))
            })
            .map(|(section, s)| SectionDigests {
                section,
                size: s["size"].as_u64().unwrap(),
                digests: HashAlg::ALL
                    .iter()
                    .map(|a| {
                        Digest::from_hex(*a, s["digests"][a.name()].as_str().unwrap()).unwrap()
                    })
                    .collect(),
            })
            .collect();
        let version = b.manifest["stub_version"].as_str().unwrap();
        let rules = StubRules::new(measure::stub_major(version).unwrap());
        let pred = measure::predict_pcr11(
            &sections,
            Some(rules),
            &[HashAlg::Sha1, HashAlg::Sha256],
            &[bootchain::measure::Phase::after_stub()],
        );
        for bank in [HashAlg::Sha1, HashAlg::Sha256] {
            assert_eq!(
                pred.value(bank, &bootchain::measure::Phase::after_stub())
                    .unwrap()
                    .as_bytes(),
                &b.pcrs[bank.name()][&11][..],
                "{name} {bank} PCR 11"
            );
        }
    }
}

/// The PolicyAuthorize digest for a PCR signing key equals the tpm2-policy-hash that
/// systemd-cryptenroll (252) writes for `--tpm2-public-key`; this pins the TPM Name of the key
/// (exponent 65537 written explicitly).
#[test]
fn policy_authorize_equals_systemd_cryptenroll() {
    require_tool("systemd-cryptenroll");
    require_tool("cryptsetup");
    let p = parts();
    let (_, public) = pcr_keys(&p.dir);
    let tpm = Swtpm::start();
    let img = p.dir.join("luks.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let pass = p.dir.join("pass");
    std::fs::write(&pass, "passphrase").unwrap();
    run_ok(
        Command::new("cryptsetup")
            .args([
                "luksFormat",
                "--type",
                "luks2",
                "--batch-mode",
                "--pbkdf",
                "pbkdf2",
            ])
            .args(["--pbkdf-force-iterations", "1000", "--key-file"])
            .arg(&pass)
            .arg(&img),
    );
    run_ok(
        Command::new("systemd-cryptenroll")
            .arg(format!("--unlock-key-file={}", pass.display()))
            .arg(format!("--tpm2-device={}", tpm.tcti()))
            .arg("--tpm2-pcrs=")
            .arg(format!("--tpm2-public-key={}", public.display()))
            .arg("--tpm2-public-key-pcrs=11")
            .arg(&img),
    );
    let token: serde_json::Value = serde_json::from_str(&run_ok(
        Command::new("cryptsetup")
            .args(["token", "export", "--token-id", "0"])
            .arg(&img),
    ))
    .unwrap();
    let key = measure::rsa_public_key_from_pem(&std::fs::read(&public).unwrap()).unwrap();
    let name = policy::object_name(&policy::rsa_public_area(&key).unwrap());
    let ours = policy::policy_authorize(&name, b"");
    assert_eq!(token["tpm2-policy-hash"], ours.to_hex());
}

/// The build reports the PCR 11 the stub will measure from the digests it computed while
/// writing (no second pass): equal to predicting the written file, in every bank and phase,
/// with the in-place `.sbat` and the appended sections; `uki build --measure` prints it as
/// `systemd-measure calculate` does.
#[test]
fn build_report_pcr11_equals_prediction_of_the_written_image() {
    let p = parts();
    let k = kernel();
    let uki = p.dir.join("measured.efi");
    let phases = Phase::list(&["", "enter-initrd", "enter-initrd:leave-initrd"]).unwrap();
    let report = UkiBuilder::new()
        .stub(require_stub())
        .linux(&k)
        .initrd(&p.initrd)
        .cmdline(SectionContent::File(p.cmdline.clone()))
        .os_release(SectionContent::File(p.osrel.clone()))
        .measure(HashAlg::ALL.to_vec(), phases.clone())
        .build(&uki)
        .unwrap();
    let reported = report.pcr11.expect("asked for PCR 11");
    let written = measure::predict_uki(&uki, None, &HashAlg::ALL, &phases).unwrap();
    assert_eq!(reported.phases.len(), 3);
    for ph in &phases {
        for bank in HashAlg::ALL {
            assert_eq!(
                reported.value(bank, ph),
                written.value(bank, ph),
                "{bank} after phase {ph:?}"
            );
        }
    }
    assert_eq!(reported.events.len(), written.events.len());
    assert!(
        report.os_release_from_host.is_none(),
        "os-release was given"
    );

    // Without an os-release the host's is embedded, and the report says so.
    let uki2 = p.dir.join("host-osrel.efi");
    let out = run_ok(
        Command::new(bootchain_bin())
            .args(["uki", "build", "--measure", "--phases", "enter-initrd"])
            .arg("--stub")
            .arg(require_stub())
            .arg("--linux")
            .arg(&k)
            .arg(format!("--cmdline=@{}", p.cmdline.display()))
            .arg("-o")
            .arg(&uki2),
    );
    let pred = measure::predict_uki(&uki2, None, &[HashAlg::Sha256], &[enter_initrd()]).unwrap();
    assert_eq!(
        out.trim(),
        format!(
            "11:sha256={}",
            pred.value(HashAlg::Sha256, &enter_initrd()).unwrap()
        )
    );
    let json = run_ok(
        Command::new(bootchain_bin())
            .args(["uki", "build", "--json"])
            .arg("--stub")
            .arg(require_stub())
            .arg("--linux")
            .arg(&k)
            .arg("-o")
            .arg(p.dir.join("host-osrel-2.efi")),
    );
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["os_release_from_host"], "/etc/os-release");
    assert!(json["pcr11"].is_null(), "not asked, no signer: no PCR 11");
}
