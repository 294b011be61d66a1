//! Intel TDX: CCEL parsing and RTMR replay on real TDVF logs (google/go-eventlog's testdata,
//! `test-vectors/ccel/`), against the RTMR values go-eventlog's own tests expect; and RTMR[1]
//! / RTMR[2] prediction checked event by event against those logs and against the SHA-384
//! bank of real systemd-stub 257 TPM boots.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use bootchain::ccel::{CcEventLog, CcMrIndex, CcelError, Rtmr, RtmrValues};
use bootchain::eventlog::{EventLog, EventLogError, EventType};
use bootchain::firmware::BootImage;
use bootchain::hash::{Digest, HashAlg};
use bootchain::measure::SectionDigests;
use bootchain::tdx::{predict_rtmr1, predict_rtmr2, BootPath};
use common::*;

fn vector(name: &str) -> PathBuf {
    repo_root().join("test-vectors/ccel").join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(vector(name)).unwrap()
}

fn sha384(hex: &str) -> Digest {
    Digest::from_hex(HashAlg::Sha384, hex).unwrap()
}

/// go-eventlog `ccel/cceventlog_test.go` (`COS113TDXPadded`/`COS113TDXUnpadded`), the Go byte
/// strings converted to hex.
const DUPE_SEPARATOR_RTMRS: [&str; 3] = [
    "a4de2df23e9611299123ba4359c42a5e578b0f8488bf1bba8ef5606d9ea5d81c97c064b482a5eac537d166bd0f0f752d",
    "0ee9366c928a77092f55e9e114c7394181fd264699155f0df77d23577618d5f650568a17d379355a07bd846e552f4e20",
    "4969684dc87381fc3b3134176c8d8806eaf0a901859f5f70cfae8d17714b46c10a8de219048c9fc09f11f381a6fbe7c1",
];

/// go-eventlog `ccel/extract_test.go` (`TestExtractFirmwareLogState`, cos-113-intel-tdx.bin).
const COS113_RTMRS: [&str; 3] = [
    "3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e544039c7e1edece752afd17f6",
    "f62dbc072bd5d3f3438b7b35c39a727f5aea2ffc2473f43723953f530daf62504f0a7944aa62c41a86e8a878c2b122c1",
    "4969684dc87381fc3b3134176c8d8806eaf0a901859f5f70cfae8d17714b46c10a8de219048c9fc09f11f381a6fbe7c1",
];

fn expect(values: &[&str; 3]) -> RtmrValues {
    let mut v = RtmrValues::new();
    for (r, h) in Rtmr::ALL.into_iter().zip(values) {
        v.insert(r, sha384(h));
    }
    v
}

#[test]
fn replay_equals_go_eventlog_expectations() {
    for (file, want) in [
        ("cos-113-intel-tdx.bin", &COS113_RTMRS),
        (
            "cos-113-intel-tdx-dupe-separator.bin",
            &DUPE_SEPARATOR_RTMRS,
        ),
        (
            "cos-113-intel-tdx-dupe-separator-unpadded.bin",
            &DUPE_SEPARATOR_RTMRS,
        ),
    ] {
        let log = CcEventLog::parse(&read(file)).unwrap();
        assert_eq!(log.replay_rtmrs(), expect(want), "{file}");
        assert!(bootchain::ccel::verify_rtmrs(&log, &expect(want)).is_empty());
        // Every event data the spec defines the digest of matches it.
        for e in &log.log.events {
            assert_ne!(
                bootchain::ccel::check_data(e),
                bootchain::eventlog::DataCheck::Mismatch,
                "{file} offset {}",
                e.offset
            );
        }
    }
}

#[test]
fn padded_and_unpadded_give_the_same_log() {
    let padded = read("cos-113-intel-tdx-dupe-separator.bin");
    let unpadded = read("cos-113-intel-tdx-dupe-separator-unpadded.bin");
    let p = CcEventLog::parse(&padded).unwrap();
    let u = CcEventLog::parse(&unpadded).unwrap();
    assert_eq!(p.log, u.log);
    assert_eq!(u.padding, 0);
    assert_eq!(p.padding, padded.len() - unpadded.len());
    assert!(padded[unpadded.len()..].iter().all(|&b| b == 0xFF));
    // Zero padding ends a log just as well.
    let mut zeros = unpadded.clone();
    zeros.resize(unpadded.len() + 4096, 0);
    assert_eq!(CcEventLog::parse(&zeros).unwrap().log, u.log);
    // The other logs parse and replay too (no published expectations for them).
    for f in ["CCEL_unpadded.data.bin", "event_log.bin"] {
        let l = CcEventLog::parse(&read(f)).unwrap();
        assert!(l.replay_rtmrs().get(Rtmr::Rtmr0).is_some(), "{f}");
    }
}

#[test]
fn malformed_logs_are_typed_errors() {
    let good = read("cos-113-intel-tdx-dupe-separator-unpadded.bin");
    // Cut inside the last event.
    assert!(matches!(
        CcEventLog::parse(&good[..good.len() - 10]),
        Err(CcelError::Parse(EventLogError::Truncated { .. }))
    ));
    // Garbage instead of padding: read as a record, it is malformed or truncated.
    let mut garbage = good.clone();
    garbage.extend_from_slice(b"this is not an event, nor padding at all");
    assert!(matches!(
        CcEventLog::parse(&garbage),
        Err(CcelError::Parse(_))
    ));
    // Garbage inside the 0xFF padding.
    let mut padded = read("cos-113-intel-tdx-dupe-separator.bin");
    let at = good.len() + 1000;
    padded[at] = 0x42;
    assert_eq!(
        CcEventLog::parse(&padded),
        Err(CcelError::Garbage {
            offset: at,
            byte: 0x42
        })
    );
    // An event in MRTD (index 0), and one past RTMR[3] (index 5).
    let first = CcEventLog::parse(&good).unwrap().log.events[0].offset;
    for (index, want_mrtd) in [(0u32, true), (5, false)] {
        let mut bad = good.clone();
        bad[first..first + 4].copy_from_slice(&index.to_le_bytes());
        match CcEventLog::parse(&bad) {
            Err(CcelError::MrtdEvent { offset, .. }) if want_mrtd => assert_eq!(offset, first),
            Err(CcelError::BadMrIndex { offset, index: i }) if !want_mrtd => {
                assert_eq!((offset, i), (first, 5))
            }
            other => panic!("index {index}: {other:?}"),
        }
    }
    // A TPM log is not a CCEL (four banks), and a CCEL is not a TPM log (header index 1).
    let tpm = std::fs::read(vectors::boots_dir().join("sb-on/eventlog.bin")).unwrap();
    assert!(matches!(
        CcEventLog::parse(&tpm),
        Err(CcelError::NotSha384(_))
    ));
    assert!(matches!(
        EventLog::parse(&good),
        Err(EventLogError::NotCryptoAgile { .. })
    ));
}

/// RTMR[1]'s event order and fixed events, from the real log: TDVF booting shim and GRUB from
/// disk. Fed the log's own GPT data and image digests (we have not the binaries), the
/// prediction folds to go-eventlog's RTMR[1]; the action, separator and ExitBootServices
/// digests are ours, computed from the strings, and equal the logged ones.
#[test]
fn rtmr1_disk_boot_equals_the_real_log() {
    let log = CcEventLog::parse(&read("cos-113-intel-tdx.bin")).unwrap();
    let rtmr1: Vec<_> = log
        .log
        .events
        .iter()
        .filter(|e| CcEventLog::rtmr_of(e) == Some(Rtmr::Rtmr1))
        .collect();
    let gpt = rtmr1
        .iter()
        .find(|e| e.event_type == EventType::EfiGptEvent)
        .unwrap()
        .data
        .clone();
    let images: Vec<BootImage> = rtmr1
        .iter()
        .filter(|e| e.event_type == EventType::EfiBootServicesApplication)
        .map(|e| BootImage {
            description: format!("image at {}", e.offset),
            authenticode: BTreeMap::from([(HashAlg::Sha384, e.digest(HashAlg::Sha384).unwrap())]),
        })
        .collect();
    assert_eq!(images.len(), 2, "shim and GRUB");
    let pred = predict_rtmr1(&BootPath::Disk { gpt: Some(gpt) }, &images);
    assert_eq!(pred.events.len(), rtmr1.len());
    for (p, e) in pred.events.iter().zip(&rtmr1) {
        assert_eq!(p.event_type, e.event_type, "offset {}", e.offset);
        assert_eq!(
            p.digests[&HashAlg::Sha384],
            e.digest(HashAlg::Sha384).unwrap(),
            "offset {}",
            e.offset
        );
    }
    assert_eq!(pred.value, sha384(COS113_RTMRS[1]));
    // Direct boot: the same events, the image first and no GPT.
    let direct = predict_rtmr1(&BootPath::Direct, &images[..1]);
    let types: Vec<_> = direct.events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        types,
        [
            EventType::EfiBootServicesApplication,
            EventType::EfiAction,
            EventType::Separator,
            EventType::EfiAction,
            EventType::EfiAction
        ]
    );
}

fn manifest_sections(m: &serde_json::Value) -> Vec<SectionDigests> {
    m["sections"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| Some((s["name"].as_str()?.parse().ok()?, s)))
        .map(|(section, s)| SectionDigests {
            section,
            size: s["size"].as_u64().unwrap(),
            digests: vec![sha384(s["digests"]["sha384"].as_str().unwrap())],
        })
        .collect()
}

/// No public TDX log of a systemd-stub boot exists; the stub sends the same EV_IPL events to
/// the CC protocol as to the TPM (`tpm_log_ipl_event`), so RTMR[2] is the fold of the SHA-384
/// bank of its PCR 11–13 EV_IPL events. Checked here against the real 257 boots' TPM logs:
/// our RTMR[2] from the UKIs' section digests equals that fold of their PCR 11 events.
#[test]
fn rtmr2_equals_the_sha384_bank_of_real_stub_257_events() {
    for name in ["stub257-single", "stub257-addons"] {
        let b = vectors::load_boot(name);
        let log = EventLog::parse(&b.log).unwrap();
        let pcr11: Vec<Digest> = log
            .events
            .iter()
            .filter(|e| e.pcr == 11 && e.event_type == EventType::Ipl)
            .map(|e| e.digest(HashAlg::Sha384).unwrap())
            .collect();
        let want = pcr11
            .iter()
            .fold(Rtmr::initial(), |acc, d| bootchain::pcr::extend(&acc, d));
        let pred = predict_rtmr2(&manifest_sections(&b.manifest), 257, vec![], vec![]);
        let ours: Vec<Digest> = pred
            .events
            .iter()
            .map(|e| e.digests[&HashAlg::Sha384].clone())
            .collect();
        assert_eq!(ours, pcr11, "{name}");
        assert_eq!(pred.value, want, "{name}");
        // A 255 stub measures nothing into RTMRs.
        let old = predict_rtmr2(&manifest_sections(&b.manifest), 255, vec![], vec![]);
        assert_eq!(old.value, Rtmr::initial());
    }
    // The order the stub measures PCR 12 and 13 events in (what `stub_ipl_events` follows),
    // and the addon command line's SHA-384 as logged.
    let b = vectors::load_boot("stub257-addons");
    let log = EventLog::parse(&b.log).unwrap();
    let later: Vec<(u32, String)> = log
        .events
        .iter()
        .filter(|e| (12..=13).contains(&e.pcr) && e.event_type == EventType::Ipl)
        .map(|e| (e.pcr, bootchain::eventlog::describe(e)))
        .collect();
    let pcrs: Vec<u32> = later.iter().map(|(p, _)| *p).collect();
    assert_eq!(pcrs, [12, 12, 12, 13, 12], "{later:?}");
    let cmdline = "bootchain.global=1 bootchain.addon=1";
    let utf16z: Vec<u8> = cmdline
        .encode_utf16()
        .chain([0])
        .flat_map(u16::to_le_bytes)
        .collect();
    let first = log
        .events
        .iter()
        .find(|e| e.pcr == 12 && e.event_type == EventType::Ipl)
        .unwrap();
    assert_eq!(
        first.digest(HashAlg::Sha384).unwrap(),
        HashAlg::Sha384.digest(&utf16z)
    );
}

#[test]
fn mr_index_of_the_logged_events_follows_the_pcr_mapping() {
    // Every EV_EFI_ACTION in the real logs is a PCR 4/5 event: MR index 2 (RTMR[1]).
    let log = CcEventLog::parse(&read("cos-113-intel-tdx.bin")).unwrap();
    for e in log
        .log
        .events
        .iter()
        .filter(|e| e.event_type == EventType::EfiAction)
    {
        assert_eq!(
            CcMrIndex::from_u32(e.pcr),
            CcMrIndex::from_pcr(bootchain::pcr::PcrIndex::of::<4>())
        );
    }
}

fn bc() -> Command {
    Command::new(bootchain_bin())
}

#[test]
fn cli_replay_and_verify_a_ccel() {
    let log = vector("cos-113-intel-tdx.bin");
    let out = run_ok(bc().args(["eventlog", "replay", "--json"]).arg(&log));
    let got = RtmrValues::from_json(&out).unwrap();
    assert_eq!(got, expect(&COS113_RTMRS));
    // Auto-detected (header index 1) and with --ccel: the same.
    assert_eq!(
        run_ok(bc().args(["eventlog", "replay", "--ccel"]).arg(&log)),
        run_ok(bc().args(["eventlog", "replay"]).arg(&log))
    );
    let t = tempfile::tempdir().unwrap();
    let good = t.path().join("rtmrs.json");
    std::fs::write(&good, &out).unwrap();
    run_ok(
        bc().args(["eventlog", "verify", "--pcrs"])
            .arg(&good)
            .arg(&log),
    );
    let mut v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["rtmr2"] = serde_json::Value::String("00".repeat(48));
    let bad = t.path().join("bad.json");
    std::fs::write(&bad, v.to_string()).unwrap();
    let o = run(bc()
        .args(["eventlog", "verify", "--ccel", "--pcrs"])
        .arg(&bad)
        .arg(&log));
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("rtmr2: log replays to"), "{text}");
    let show = run_ok(bc().args(["eventlog", "show"]).arg(&log));
    assert!(show.contains("MR   2 EV_EFI_ACTION"), "{show}");
    assert!(!show.contains("DOES NOT MATCH"));
}

/// `pcr predict --tdx` on a UKI built from the installed stub: RTMR[1] folds the UKI's
/// Authenticode SHA-384 (as `pe hash` prints it) with the fixed events; RTMR[2] is empty for
/// the 252 stub and, with 257 rules, the fold of `pcr predict`'s own sha384 PCR 11 events.
#[test]
fn cli_predict_tdx() {
    let stub = require_stub();
    let t = tempfile::tempdir().unwrap();
    let (linux, initrd, uki) = (
        t.path().join("linux"),
        t.path().join("initrd"),
        t.path().join("uki.efi"),
    );
    std::fs::write(&linux, pseudo_random(4096, 1)).unwrap();
    std::fs::write(&initrd, pseudo_random(1000, 2)).unwrap();
    run_ok(
        bc().args(["uki", "build", "--stub"])
            .arg(&stub)
            .arg("--linux")
            .arg(&linux)
            .arg("--initrd")
            .arg(&initrd)
            .args(["--cmdline", "console=ttyS0", "--output"])
            .arg(&uki),
    );
    let pred = |extra: &[&str]| -> serde_json::Value {
        serde_json::from_str(&run_ok(
            bc().args(["pcr", "predict", "--tdx", "--json", "--uki"])
                .arg(&uki)
                .args(extra),
        ))
        .unwrap()
    };
    let p252 = pred(&[]);
    let auth = bootchain::authenticode::image_digests(
        &mut std::fs::File::open(&uki).unwrap(),
        &[HashAlg::Sha384],
    )
    .unwrap();
    let fixed = [
        bootchain::firmware::CALLING_EFI_APPLICATION.as_bytes(),
        &bootchain::firmware::SEPARATOR,
        bootchain::tdx::EXIT_BOOT_SERVICES_INVOCATION.as_bytes(),
        bootchain::tdx::EXIT_BOOT_SERVICES_SUCCEEDED.as_bytes(),
    ];
    let rtmr1 = fixed.iter().fold(
        bootchain::pcr::extend(&Rtmr::initial(), &auth[0]),
        |acc, d| bootchain::pcr::extend(&acc, &HashAlg::Sha384.digest(d)),
    );
    assert_eq!(p252["values"]["rtmr1"], rtmr1.to_hex());
    assert_eq!(p252["values"]["rtmr2"], Rtmr::initial().to_hex());

    let p257 = pred(&["--stub-version", "257"]);
    let pcr11: serde_json::Value = serde_json::from_str(&run_ok(
        bc().args([
            "pcr",
            "predict",
            "--json",
            "--bank",
            "sha384",
            "--stub-version",
            "257",
        ])
        .arg("--uki")
        .arg(&uki),
    ))
    .unwrap();
    let rtmr2 = pcr11["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| sha384(e["digests"]["sha384"].as_str().unwrap()))
        .fold(Rtmr::initial(), |acc, d| bootchain::pcr::extend(&acc, &d));
    assert_eq!(p257["values"]["rtmr2"], rtmr2.to_hex());
    assert_eq!(p257["values"]["rtmr1"], rtmr1.to_hex());
    // The values verify a log that replays to them: a JSON `eventlog verify` reads.
    assert!(RtmrValues::from_json(&p257.to_string()).is_ok());
}
