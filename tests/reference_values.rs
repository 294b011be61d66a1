//! `bootchain reference-values`: its registers equal what `pcr predict`, `pcr predict --tdx`
//! and `snp measure` print for the same options; the RVPS payload decodes to the same hex; the
//! CEL-JSON replays to the predicted PCRs; and the CEL-JSON shape equals `systemd-pcrlock cel`
//! (systemd 257, Debian 13) on a real boot's event log, record for record.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use bootchain::eventlog::EventLog;
use bootchain::firmware::{self, BootImage, EfiGuid, SecureBootState};
use bootchain::hash::{Digest, HashAlg};
use bootchain::measure::{SectionDigests, StubRules};
use bootchain::reference;
use common::{bootchain_bin, make_key, pseudo_random, repo_root, run_ok, vectors};
use serde_json::Value;

const OWNER: &str = "b0075c4a-7e5b-4c48-9b8e-bc0eb0075c4a";

fn bc() -> Command {
    Command::new(bootchain_bin())
}

fn sb_dir() -> PathBuf {
    vectors::boots_dir().join("sb-on/sb")
}

/// A UKI from the bookworm stub, signed by a fresh db key, and the `--secureboot*` options
/// of the sb-on boot's keys (PK, KEK, dbx) with that key's certificate added to its db.
fn fixture(d: &Path) -> (PathBuf, Vec<String>) {
    std::fs::write(d.join("k"), pseudo_random(90_000, 7)).unwrap();
    let (key, crt) = make_key(d, "db", "rsa:2048");
    let uki = d.join("uki.efi");
    run_ok(
        bc().args([
            "uki",
            "build",
            "--uname",
            "6.1",
            "--os-release",
            "ID=x",
            "--cmdline",
            "quiet root=/dev/vda",
        ])
        .arg("--linux")
        .arg(d.join("k"))
        .arg("--initrd")
        .arg(d.join("k"))
        .arg("--secureboot-private-key")
        .arg(&key)
        .arg("--secureboot-certificate")
        .arg(&crt)
        .arg("-o")
        .arg(&uki),
    );
    let sb = sb_dir();
    let p = |f: &str| sb.join(f).display().to_string();
    let args = vec![
        "--secureboot".into(),
        "on".into(),
        "--secureboot-owner".into(),
        OWNER.into(),
        "--secureboot-pk".into(),
        p("pk.crt"),
        "--secureboot-kek".into(),
        p("kek.crt"),
        "--secureboot-db".into(),
        p("db.crt"),
        "--secureboot-db".into(),
        crt.display().to_string(),
        "--secureboot-dbx".into(),
        p("dbx.esl"),
    ];
    (uki, args)
}

fn json(cmd: &mut Command) -> Value {
    serde_json::from_str(&run_ok(cmd)).unwrap()
}

/// `{"bank": {"pcr": "hex"}}` of `pcr predict --json` as (bank, pcr) → hex.
fn predict_values(v: &Value) -> BTreeMap<(String, u32), String> {
    let mut m = BTreeMap::new();
    for (bank, pcrs) in v["values"].as_object().unwrap() {
        for (pcr, hex) in pcrs.as_object().unwrap() {
            m.insert(
                (bank.clone(), pcr.parse().unwrap()),
                hex.as_str().unwrap().to_string(),
            );
        }
    }
    m
}

/// Fold each record's digests into its PCR, per bank.
fn replay(cel: &Value) -> BTreeMap<(String, u32), String> {
    let mut m: BTreeMap<(String, u32), Digest> = BTreeMap::new();
    let mut last_recnum = 0;
    for r in cel.as_array().unwrap() {
        let recnum = r["recnum"].as_u64().unwrap();
        assert_eq!(recnum, last_recnum + 1, "recnum counts from 1 without gaps");
        last_recnum = recnum;
        let pcr = r["pcr"].as_u64().unwrap() as u32;
        for d in r["digests"].as_array().unwrap() {
            let alg: HashAlg = d["hashAlg"].as_str().unwrap().parse().unwrap();
            let digest = Digest::from_hex(alg, d["digest"].as_str().unwrap()).unwrap();
            let acc = m
                .entry((alg.name().to_string(), pcr))
                .or_insert_with(|| Digest::zero(alg));
            *acc = bootchain::pcr::extend(acc, &digest);
        }
    }
    m.into_iter().map(|(k, v)| (k, v.to_hex())).collect()
}

#[test]
fn values_equal_pcr_predict_rvps_decodes_and_cel_replays() {
    let d = tempfile::tempdir().unwrap();
    let (uki, sb) = fixture(d.path());
    for phase in ["", "enter-initrd:leave-initrd"] {
        let common_args = |c: &mut Command| {
            c.args(["--bank", "sha256", "--bank", "sha384", "--phase", phase])
                .args(&sb)
                .arg("--uki")
                .arg(&uki);
        };
        let mut p = bc();
        p.args(["pcr", "predict", "--json"]);
        common_args(&mut p);
        let expected = predict_values(&json(&mut p));
        assert_eq!(
            expected
                .keys()
                .map(|(_, p)| *p)
                .collect::<std::collections::BTreeSet<_>>(),
            [4, 7, 9, 11].into_iter().collect(),
            "pcr predict predicts PCR 4, 7, 9, 11"
        );

        // bootchain format: the registers.
        let mut r = bc();
        r.args(["reference-values", "--format", "bootchain"]);
        common_args(&mut r);
        let doc = json(&mut r);
        let regs: BTreeMap<(String, u32), String> = doc["registers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let n = r["name"].as_str().unwrap();
                (
                    (
                        r["bank"].as_str().unwrap().to_string(),
                        n.strip_prefix("pcr").unwrap().parse().unwrap(),
                    ),
                    r["value"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(regs, expected, "phase {phase:?}");
        // Every PCR comes with its events; PCR 7 ends with the db authority of our key.
        let pcrs = doc["pcrs"].as_array().unwrap();
        assert_eq!(
            pcrs.iter()
                .map(|p| p["pcr"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [4, 7, 9, 11]
        );
        let pcr7 = pcrs[1]["events"].as_array().unwrap();
        assert_eq!(
            pcr7.last().unwrap()["event_type"],
            "EV_EFI_VARIABLE_AUTHORITY"
        );
        assert!(pcr7[0]["digests"]["sha256"].is_string());

        // RVPS: the message decodes to tpm_pcrN = [the sha256 value].
        let mut r = bc();
        r.args(["reference-values", "--format", "rvps"]);
        common_args(&mut r);
        let msg = json(&mut r);
        assert_eq!(msg["version"], "0.1.0");
        assert_eq!(msg["type"], "sample");
        let payload = base64::engine::general_purpose::STANDARD
            .decode(msg["payload"].as_str().unwrap())
            .unwrap();
        let payload: BTreeMap<String, Vec<String>> = serde_json::from_slice(&payload).unwrap();
        let want: BTreeMap<String, Vec<String>> = expected
            .iter()
            .filter(|((bank, _), _)| bank == "sha256")
            .map(|((_, pcr), hex)| (format!("tpm_pcr{pcr}"), vec![hex.clone()]))
            .collect();
        assert_eq!(payload, want);

        // CEL-JSON: folding every record's digests gives the predicted PCRs.
        let mut r = bc();
        r.args(["reference-values", "--format", "cel"]);
        common_args(&mut r);
        let cel = json(&mut r);
        assert_eq!(replay(&cel), expected, "CEL replay, phase {phase:?}");
        for rec in cel.as_array().unwrap() {
            let ct = rec["content_type"].as_str().unwrap();
            assert!(ct == "pcclient_std" || (ct == "systemd" && rec["pcr"] == 11));
        }
    }
}

/// PCR 11 with several phases: one RVPS value per phase, and the library agrees with the CLI.
#[test]
fn several_phases_give_several_pcr11_reference_values() {
    let d = tempfile::tempdir().unwrap();
    let (uki, _) = fixture(d.path());
    let mut req = reference::ReferenceRequest::new(&uki);
    req.phases =
        bootchain::measure::phase_list(&["enter-initrd", "enter-initrd:leave-initrd"]).unwrap();
    let refs = reference::reference_values(&req).unwrap();
    let payload = refs.rvps_payload().unwrap();
    let want: Vec<Value> = refs
        .boot
        .pcr11
        .phases
        .iter()
        .map(|p| Value::from(p.values[0].to_hex()))
        .collect();
    assert_eq!(want.len(), 2);
    assert_eq!(payload["tpm_pcr11"], Value::Array(want));
    // No single phase: PCR 11 is not among the sealable values, as with pcr predict.
    assert!(refs.pcr_values().value(HashAlg::Sha256, 11).is_none());
    // RVPS needs the sha256 bank.
    req.banks = vec![HashAlg::Sha384];
    let refs = reference::reference_values(&req).unwrap();
    assert!(matches!(
        refs.rvps_payload(),
        Err(reference::ReferenceError::NoSha256Bank)
    ));
}

#[test]
fn tdx_rtmrs_equal_pcr_predict_tdx() {
    let d = tempfile::tempdir().unwrap();
    let (uki, _) = fixture(d.path());
    // Stub 257 rules, so RTMR[2] holds the sections (a 252 stub measures nothing there).
    let tdx = json(
        bc().args(["pcr", "predict", "--tdx", "--json", "--stub-version", "257"])
            .arg("--uki")
            .arg(&uki),
    );
    let doc = json(
        bc().args([
            "reference-values",
            "--tdx",
            "--stub-version",
            "257",
            "--format",
            "bootchain",
        ])
        .arg("--uki")
        .arg(&uki),
    );
    for r in ["rtmr1", "rtmr2"] {
        let reg = doc["registers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == r)
            .unwrap();
        assert_eq!(reg["bank"], "sha384");
        assert_eq!(reg["value"], tdx["values"][r], "{r}");
        assert_eq!(doc["tdx"][r]["value"], tdx["values"][r]);
    }
    assert_ne!(tdx["values"]["rtmr2"], "00".repeat(48));
    let msg = json(
        bc().args([
            "reference-values",
            "--tdx",
            "--stub-version",
            "257",
            "--format",
            "rvps",
        ])
        .arg("--uki")
        .arg(&uki),
    );
    let payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(msg["payload"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["rtmr_1"][0], tdx["values"]["rtmr1"]);
    assert_eq!(payload["rtmr_2"][0], tdx["values"]["rtmr2"]);
}

/// Debian 13's OVMF (`scripts/cc-tools` puts it under .cache/ovmf-trixie).
fn ovmf13() -> Option<PathBuf> {
    let p = repo_root().join(".cache/ovmf-trixie/usr/share/ovmf/OVMF.fd");
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {} absent (run scripts/cc-tools to fetch Debian 13's OVMF)",
            p.display()
        );
        None
    }
}

#[test]
fn snp_launch_measurement_equals_snp_measure() {
    let Some(fw) = ovmf13() else { return };
    let d = tempfile::tempdir().unwrap();
    let (uki, _) = fixture(d.path());
    for (vcpus, ty) in [("1", "EPYC-v4"), ("4", "EPYC-Milan")] {
        let want = run_ok(
            bc().args(["snp", "measure", "--mode", "snp", "--vcpus", vcpus])
                .args(["--vcpu-type", ty, "--ovmf"])
                .arg(&fw),
        );
        let doc = json(
            bc().args(["reference-values", "--no-kernel-hashes", "--vcpus", vcpus])
                .args(["--vcpu-type", ty, "--ovmf"])
                .arg(&fw)
                .arg("--uki")
                .arg(&uki),
        );
        let reg = doc["registers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "snp_launch_measurement")
            .unwrap();
        assert_eq!(reg["value"].as_str().unwrap(), want.trim());
        assert_eq!(doc["snp"]["kernel_hashes"], false);
        let msg = json(
            bc().args(["reference-values", "--format", "rvps", "--no-kernel-hashes"])
                .args(["--vcpus", vcpus, "--vcpu-type", ty, "--ovmf"])
                .arg(&fw)
                .arg("--uki")
                .arg(&uki),
        );
        let payload: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(msg["payload"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(payload["snp_launch_measurement"][0], want.trim());
    }
    // With kernel hashes (the default) Debian's OVMF cannot check the UKI: a typed error,
    // and the CLI names the option.
    let ovmf = bootchain::ovmf::Ovmf::read(&fw).unwrap();
    let mut req = reference::ReferenceRequest::new(&uki);
    let mut cfg = bootchain::snp::LaunchConfig {
        mode: bootchain::snp::SevMode::Snp,
        vcpus: 1,
        vcpu_sig: bootchain::snp::vcpu_type_sig("EPYC-v4").unwrap(),
        guest_features: 1,
        vmm: bootchain::snp::VmmType::Qemu,
        hashes: None,
        ovmf_hash: None,
    };
    req.snp = Some(reference::SnpRequest::new(&ovmf, cfg.clone()));
    assert!(matches!(
        reference::reference_values(&req),
        Err(reference::ReferenceError::Snp(
            bootchain::snp::SnpError::NoKernelHashesSection
        ))
    ));
    let out = bc()
        .args([
            "reference-values",
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC-v4",
            "--ovmf",
        ])
        .arg(&fw)
        .arg("--uki")
        .arg(&uki)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-kernel-hashes"));
    // The library without kernel hashes equals launch_digest with none.
    let mut s = reference::SnpRequest::new(&ovmf, cfg.clone());
    s.kernel_hashes = false;
    req.snp = Some(s);
    let refs = reference::reference_values(&req).unwrap();
    cfg.hashes = None;
    assert_eq!(
        refs.snp.unwrap().launch_measurement,
        bootchain::snp::launch_digest(&ovmf, &cfg).unwrap()
    );
}

/// `systemd-pcrlock cel` (257) on the sb-on boot's firmware log.
fn pcrlock_cel(boot: &str) -> Value {
    let dir = vectors::boots_dir().join(boot);
    let out = common::trixie_tools(
        &dir,
        &[("SYSTEMD_MEASURE_LOG_FIRMWARE", "/w/eventlog.bin")],
        &[
            "/usr/lib/systemd/systemd-pcrlock",
            "cel",
            "--json=short",
            "--no-pager",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "systemd-pcrlock cel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A record with its digests as a map (pcrlock lists them in reverse log order).
fn normalized(r: &Value, with_recnum: bool) -> Value {
    let mut r = r.clone();
    let digests: BTreeMap<String, String> = r["digests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["hashAlg"].as_str().unwrap().to_string(),
                d["digest"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    r["digests"] = serde_json::to_value(digests).unwrap();
    if !with_recnum {
        r.as_object_mut().unwrap().remove("recnum");
    }
    r
}

#[test]
fn cel_json_equals_systemd_pcrlock_cel() {
    let theirs = pcrlock_cel("sb-on");
    let b = vectors::load_boot("sb-on");
    let log = EventLog::parse(&b.log).unwrap();

    // 1. Every record of the real log, field by field.
    let ours = reference::cel_records_from_log(&log.events);
    let (ours, theirs_all) = (ours.as_array().unwrap(), theirs.as_array().unwrap());
    assert_eq!(ours.len(), theirs_all.len());
    for (o, t) in ours.iter().zip(theirs_all) {
        assert_eq!(
            o.as_object().unwrap().keys().collect::<Vec<_>>(),
            t.as_object().unwrap().keys().collect::<Vec<_>>(),
            "key order"
        );
        assert_eq!(normalized(o, true), normalized(t, true));
    }

    // 2. The predicted events of PCR 4, 7, 9 and 11 for this boot (from its manifest and
    // Secure Boot keys) equal pcrlock's records of those PCRs, event data included wherever
    // bootchain predicts it (all but the image load event, whose digest still matches).
    let banks = HashAlg::ALL;
    let m = &b.manifest;
    let digests = |v: &Value| -> BTreeMap<HashAlg, Digest> {
        banks
            .iter()
            .map(|a| {
                (
                    *a,
                    Digest::from_hex(*a, v[a.name()].as_str().unwrap()).unwrap(),
                )
            })
            .collect()
    };
    let owner: EfiGuid = OWNER.parse().unwrap();
    let var = |f: &str| firmware::variable_from_file(&sb_dir().join(f), Some(owner)).unwrap();
    let state = SecureBootState {
        enabled: true,
        pk: var("pk.crt"),
        kek: var("kek.crt"),
        db: var("db.crt"),
        dbx: std::fs::read(sb_dir().join("dbx.esl")).unwrap(),
    };
    let db = state.db_entries().unwrap();
    let sections: Vec<SectionDigests> = m["sections"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| Some((s["name"].as_str()?.parse().ok()?, s)))
        .map(|(section, s)| SectionDigests {
            section,
            size: s["size"].as_u64().unwrap(),
            digests: digests(&s["digests"]).into_values().collect(),
        })
        .collect();
    let initrd = m["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == ".initrd")
        .unwrap();
    let pcr4 = firmware::predict_pcr4(
        &[BootImage {
            description: "UKI".into(),
            authenticode: digests(&m["uki_authenticode"]),
        }],
        &banks,
    );
    let pcr7 = firmware::predict_pcr7(&state, &db, &banks);
    let pcr9 = firmware::predict_pcr9(
        Some(m["cmdline"].as_str().unwrap().as_bytes()),
        Some(&digests(&initrd["digests"])),
        &banks,
    );
    let pcr11 =
        bootchain::measure::predict_pcr11(&sections, Some(StubRules::new(252)), &banks, &[]);
    let mut checked_data = 0;
    for (pcr, events) in [
        (4, &pcr4.events),
        (7, &pcr7.events),
        (9, &pcr9.events),
        (11, &pcr11.events),
    ] {
        let predicted = reference::cel_records_predicted(events.iter());
        let logged: Vec<&Value> = theirs_all.iter().filter(|r| r["pcr"] == pcr).collect();
        let predicted = predicted.as_array().unwrap();
        assert_eq!(predicted.len(), logged.len(), "PCR {pcr} record count");
        for (p, l) in predicted.iter().zip(logged) {
            let (p, mut l) = (normalized(p, false), normalized(l, false));
            if p["content"].get("event_data").is_none() {
                assert_eq!(
                    p["content"]["event_type"],
                    "EV_EFI_BOOT_SERVICES_APPLICATION"
                );
                l["content"].as_object_mut().unwrap().remove("event_data");
            } else {
                checked_data += 1;
            }
            assert_eq!(p, l, "PCR {pcr}");
        }
    }
    // PCR 4: action, separator; PCR 7: five variables, separator, authority; PCR 9: two
    // tagged events; PCR 11: eight EV_IPL.
    assert_eq!(checked_data, 2 + 7 + 2 + 8);
}
