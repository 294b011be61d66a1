//! `bootchain eventlog` and `bootchain pcr predict` on real logs, against a JSON file and
//! against a real (software) TPM.

mod common;

use std::process::Command;

use bootchain::eventlog::{EventLog, EventType};
use bootchain::hash::HashAlg;
use bootchain::tpm::Tpm;
use common::swtpm::Swtpm;
use common::*;

fn bc() -> Command {
    Command::new(bootchain_bin())
}

#[test]
fn replay_and_verify_against_json() {
    let dir = vectors::boots_dir().join("sb-on");
    let log = dir.join("eventlog.bin");
    let out = run_ok(bc().args(["eventlog", "replay", "--json"]).arg(&log));
    let replay: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pcrs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pcrs.json")).unwrap()).unwrap();
    assert_eq!(replay["sha256"]["7"], pcrs["sha256"]["7"]);
    assert_eq!(replay["sha1"]["4"], pcrs["sha1"]["4"]);
    run_ok(
        bc().args(["eventlog", "verify", "--pcrs"])
            .arg(dir.join("pcrs.json"))
            .arg(&log),
    );
    // A PCR that differs is named, with its bank, and the exit status is 1.
    let mut wrong = pcrs.clone();
    wrong["sha256"]["4"] = serde_json::Value::String("00".repeat(32));
    let t = tempfile::tempdir().unwrap();
    let wp = t.path().join("pcrs.json");
    std::fs::write(&wp, wrong.to_string()).unwrap();
    let o = run(bc()
        .args(["eventlog", "verify", "--pcrs"])
        .arg(&wp)
        .arg(&log));
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("PCR 4 sha256"), "{text}");
}

#[test]
fn show_decodes_events_and_flags_lies() {
    let log = vectors::boots_dir().join("sb-on/eventlog.bin");
    let out = run_ok(bc().args(["eventlog", "show"]).arg(&log));
    for needle in [
        "EV_EFI_VARIABLE_AUTHORITY",
        "Calling EFI Application from Boot Option",
        "8be4df61-93ca-11d2-aa0d-00e098032b8c-SecureBoot",
        "tag 0x8f3b22ec: Linux initrd",
        "data ok",
    ] {
        assert!(out.contains(needle), "show lacks {needle:?}");
    }
    assert!(!out.contains("DOES NOT MATCH"));
    let json: serde_json::Value =
        serde_json::from_str(&run_ok(bc().args(["eventlog", "show", "--json"]).arg(&log))).unwrap();
    assert!(json["events"].as_array().unwrap().len() > 20);
    // A lying log: the SecureBoot variable's data says 0 while its digest says 1.
    let mut l = EventLog::parse(&std::fs::read(&log).unwrap()).unwrap();
    let e = l
        .events
        .iter_mut()
        .find(|e| e.pcr == 7 && e.event_type == EventType::EfiVariableDriverConfig)
        .unwrap();
    let last = e.data.len() - 1;
    e.data[last] = 0;
    let t = tempfile::tempdir().unwrap();
    let lie = t.path().join("lie.bin");
    std::fs::write(&lie, l.to_bytes()).unwrap();
    let pcrs = vectors::boots_dir().join("sb-on/pcrs.json");
    let o = run(bc()
        .args(["eventlog", "verify", "--pcrs"])
        .arg(&pcrs)
        .arg(&lie));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("data does not match its digest"));
}

#[test]
fn garbage_logs_are_clear_errors() {
    let t = tempfile::tempdir().unwrap();
    let good = std::fs::read(vectors::boots_dir().join("sb-off/eventlog.bin")).unwrap();
    for (name, bytes, needle) in [
        ("empty", vec![], "truncated at offset 0: header pcrIndex"),
        (
            "short",
            good[..40].to_vec(),
            "truncated at offset 32: Spec ID event",
        ),
        (
            "text",
            b"this is not an event log".to_vec(),
            "truncated at offset 0: header SHA-1 digest",
        ),
    ] {
        let p = t.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let o = run(bc().args(["eventlog", "show"]).arg(&p));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(needle) && !err.contains("panicked"),
            "{name}: {err}"
        );
    }
    // Positive control: the whole log.
    let p = t.path().join("good");
    std::fs::write(&p, &good).unwrap();
    run_ok(bc().args(["eventlog", "show"]).arg(&p));
}

/// Replay a real log into swtpm (every extend the firmware did), then verify the log against
/// the TPM with --tcti; one more extend makes verification fail naming the PCR.
#[test]
fn verify_against_a_real_tpm() {
    let tpm = Swtpm::start();
    let log_path = vectors::boots_dir().join("sb-off/eventlog.bin");
    let log = EventLog::parse(&std::fs::read(&log_path).unwrap()).unwrap();
    let mut t = Tpm::open(&tpm.tcti()).unwrap();
    // A fresh TPM: our guard that this is really our private swtpm.
    let zero = t.read_pcrs(&[(HashAlg::Sha256, 11)]).unwrap();
    assert!(zero.values().all(|d| d.as_bytes().iter().all(|&b| b == 0)));
    for e in log
        .events
        .iter()
        .filter(|e| e.event_type != EventType::NoAction)
    {
        let ds: Vec<_> = HashAlg::ALL.iter().filter_map(|b| e.digest(*b)).collect();
        t.extend(e.pcr, &ds).unwrap();
    }
    drop(t);
    let ok = run(bc()
        .args(["eventlog", "verify", "--tcti"])
        .arg(tpm.tcti())
        .arg(&log_path));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    let mut t = Tpm::open(&tpm.tcti()).unwrap();
    let x: Vec<_> = HashAlg::ALL.iter().map(|b| b.digest(b"x")).collect();
    t.extend(5, &x).unwrap();
    drop(t);
    let bad = run(bc()
        .args(["eventlog", "verify", "--tcti"])
        .arg(tpm.tcti())
        .arg(&log_path));
    assert_eq!(bad.status.code(), Some(1));
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(
        text.contains("PCR 5 sha1") && text.contains("PCR 5 sha256"),
        "{text}"
    );
    // No TPM at all: a clear error, not a panic.
    let none = run(bc()
        .args([
            "eventlog",
            "verify",
            "--tcti",
            "swtpm:host=127.0.0.1,port=1",
        ])
        .arg(&log_path));
    let err = String::from_utf8_lossy(&none.stderr);
    assert!(
        !none.status.success()
            && err.contains("cannot open TPM via swtpm:host=127.0.0.1,port=1")
            && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn pcr_predict_cli_matches_the_library() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("k"), pseudo_random(70_000, 21)).unwrap();
    let (key, crt) = make_key(d.path(), "db", "rsa:2048");
    let uki = d.path().join("uki.efi");
    run_ok(
        bc().args([
            "uki",
            "build",
            "--uname",
            "6.1",
            "--os-release",
            "ID=x",
            "--cmdline",
            "quiet",
        ])
        .arg("--linux")
        .arg(d.path().join("k"))
        .arg("--secureboot-private-key")
        .arg(&key)
        .arg("--secureboot-certificate")
        .arg(&crt)
        .arg("-o")
        .arg(&uki),
    );
    let owner = "11111111-2222-3333-4444-555555555555";
    let out = run_ok(
        bc().args([
            "pcr",
            "predict",
            "--json",
            "--bank",
            "sha256",
            "--phase",
            "",
            "--secureboot",
            "on",
        ])
        .args(["--secureboot-owner", owner])
        .arg("--secureboot-pk")
        .arg(&crt)
        .arg("--secureboot-kek")
        .arg(&crt)
        .arg("--secureboot-db")
        .arg(&crt)
        .arg("--uki")
        .arg(&uki),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let g: bootchain::firmware::EfiGuid = owner.parse().unwrap();
    let var = |p: &std::path::Path| bootchain::firmware::variable_from_file(p, Some(g)).unwrap();
    let state = bootchain::firmware::SecureBootState {
        enabled: true,
        pk: var(&crt),
        kek: var(&crt),
        db: var(&crt),
        dbx: vec![],
    };
    let lib = bootchain::firmware::predict_uki_boot(
        &uki,
        &state,
        &[HashAlg::Sha256],
        &[bootchain::measure::Phase::after_stub()],
    )
    .unwrap();
    for p in lib.iter().filter(|p| p.pcr != 11) {
        let cli = v["firmware"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["pcr"] == p.pcr.get())
            .unwrap();
        assert_eq!(cli["values"]["sha256"], p.values[&HashAlg::Sha256].to_hex());
    }
    // The authority event is there: the db certificate verifies the UKI.
    let p7 = lib.iter().find(|p| p.pcr == 7).unwrap();
    assert_eq!(
        p7.events.last().unwrap().event_type.to_string(),
        "EV_EFI_VARIABLE_AUTHORITY"
    );
    // Certificates without an owner GUID are refused with a reason.
    let o = run(bc()
        .args(["pcr", "predict", "--secureboot", "on", "--secureboot-db"])
        .arg(&crt)
        .arg("--uki")
        .arg(&uki));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--secureboot-owner"));
}
