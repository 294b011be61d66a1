//! Firmware PCRs (4, 7, 9) and event logs, checked against real boots captured in
//! test-vectors/boots (no VM needed).

mod common;

use std::collections::BTreeMap;

use bootchain::eventlog::{self, DataCheck, EventLog, EventLogError, EventType};
use bootchain::firmware::{self, BootImage, EfiGuid, SecureBootState, SignatureData, VariableData};
use bootchain::hash::{Digest, HashAlg};
use common::vectors::{self, SavedBoot};

const BANKS: [HashAlg; 2] = [HashAlg::Sha1, HashAlg::Sha256];

fn digests(v: &serde_json::Value) -> BTreeMap<HashAlg, Digest> {
    HashAlg::ALL
        .iter()
        .map(|a| {
            (
                *a,
                Digest::from_hex(*a, v[a.name()].as_str().unwrap()).unwrap(),
            )
        })
        .collect()
}

fn section<'a>(b: &'a SavedBoot, name: &str) -> &'a serde_json::Value {
    b.manifest["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

fn logged_variable(log: &EventLog, name: &str) -> Vec<u8> {
    log.events
        .iter()
        .filter(|e| e.pcr == 7 && e.event_type == EventType::EfiVariableDriverConfig)
        .filter_map(|e| VariableData::parse(&e.data).ok())
        .find(|v| v.name == name)
        .map(|v| v.data)
        .unwrap()
}

fn assert_pcr(b: &SavedBoot, p: &firmware::PcrPrediction, what: &str) {
    for bank in BANKS {
        assert_eq!(
            p.values[&bank].as_bytes(),
            &b.pcrs[bank.name()][&p.pcr.get()][..],
            "{what}: {bank} PCR {}",
            p.pcr
        );
    }
}

#[test]
fn predicted_pcr4_pcr7_pcr9_equal_real_boots() {
    for name in ["sb-on", "sb-off"] {
        let b = vectors::load_boot(name);
        let sb = b.manifest["secure_boot"].as_bool().unwrap();
        let mut images = vec![BootImage {
            description: "UKI".into(),
            authenticode: digests(&b.manifest["uki_authenticode"]),
        }];
        if !sb {
            images.push(BootImage {
                description: "kernel".into(),
                authenticode: digests(&b.manifest["kernel_authenticode"]),
            });
        }
        assert_pcr(&b, &firmware::predict_pcr4(&images, &BANKS), name);

        let (state, authorities) = if sb {
            let owner: EfiGuid = b.manifest["secureboot"]["owner_guid"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            let var = |f: &str| {
                firmware::variable_from_file(&b.dir.join("sb").join(f), Some(owner)).unwrap()
            };
            let state = SecureBootState {
                enabled: true,
                pk: var("pk.crt"),
                kek: var("kek.crt"),
                db: var("db.crt"),
                // The dbx virt-fw-vars enrols (a placeholder hash list), read from the
                // variable store it wrote, not from the log whose PCR 7 is predicted here.
                dbx: std::fs::read(b.dir.join("sb/dbx.esl")).unwrap(),
            };
            let db = state.db_entries().unwrap();
            assert_eq!(db.len(), 1);
            (state, db)
        } else {
            (SecureBootState::default(), Vec::<SignatureData>::new())
        };
        assert_pcr(
            &b,
            &firmware::predict_pcr7(&state, &authorities, &BANKS),
            name,
        );

        let cmdline = b.manifest["cmdline"].as_str().unwrap().as_bytes().to_vec();
        let initrd = digests(&section(&b, ".initrd")["digests"]);
        assert_pcr(
            &b,
            &firmware::predict_pcr9(Some(&cmdline), Some(&initrd), &BANKS),
            name,
        );
    }
}

#[test]
fn real_logs_replay_to_the_pcrs_the_guest_read() {
    for name in ["sb-on", "sb-off"] {
        let b = vectors::load_boot(name);
        let log = EventLog::parse(&b.log).unwrap();
        assert_eq!(log.to_bytes(), b.log);
        let mut actual = eventlog::PcrValues::new();
        for bank in BANKS {
            for (i, v) in &b.pcrs[bank.name()] {
                actual.insert((bank, *i), Digest::new(bank, v.clone()).unwrap());
            }
        }
        assert_eq!(eventlog::verify_replay(&log, &actual), vec![]);
        // Every PCR 0-9 and 11 has events; PCR 10 (IMA) is the kernel's own log.
        let replay = log.replay();
        for pcr in [0u32, 1, 2, 3, 4, 5, 6, 7, 9, 11] {
            assert!(
                replay.contains_key(&(HashAlg::Sha256, pcr)),
                "{name}: PCR {pcr}"
            );
        }
        // A changed value is reported with its PCR and bank.
        let mut wrong = actual.clone();
        wrong.insert((HashAlg::Sha256, 7), Digest::zero(HashAlg::Sha256));
        let m = eventlog::verify_replay(&log, &wrong);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].bank, m[0].pcr), (HashAlg::Sha256, 7));
    }
}

#[test]
fn real_logs_have_no_lying_events_and_a_lie_is_flagged() {
    let b = vectors::load_boot("sb-on");
    let log = EventLog::parse(&b.log).unwrap();
    let mut checked = 0;
    for e in &log.events {
        let c = eventlog::check_data(e);
        assert_ne!(
            c,
            DataCheck::Mismatch,
            "event at {} ({})",
            e.offset,
            e.event_type
        );
        if c == DataCheck::Match {
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} events checked");
    // Claim Secure Boot is off in the data while the digest says on.
    let mut lying = log.clone();
    let sb = lying
        .events
        .iter_mut()
        .find(|e| e.pcr == 7 && eventlog::describe(e).contains("SecureBoot"))
        .unwrap();
    let last = sb.data.len() - 1;
    sb.data[last] = 0;
    assert_eq!(eventlog::check_data(sb), DataCheck::Mismatch);
    // A boot variable whose data was swapped is flagged too.
    let boot = lying
        .events
        .iter_mut()
        .find(|e| e.event_type == EventType::EfiVariableBoot)
        .unwrap();
    assert_eq!(eventlog::check_data(boot), DataCheck::Match);
    let last = boot.data.len() - 1;
    boot.data[last] ^= 1;
    assert_eq!(eventlog::check_data(boot), DataCheck::Mismatch);
}

#[test]
fn corrupted_logs_give_typed_errors_never_panics() {
    let b = vectors::load_boot("sb-on");
    let good = &b.log;
    // Every truncation: an error, or a valid shorter log (cut between records).
    for n in 0..good.len() {
        if let Ok(l) = EventLog::parse(&good[..n]) {
            assert!(l.events.len() < EventLog::parse(good).unwrap().events.len());
        }
    }
    let log = EventLog::parse(good).unwrap();
    let second = log.events[1].offset;
    // Absurd digest count.
    let mut bad = good.clone();
    bad[second + 8..second + 12].copy_from_slice(&1000u32.to_le_bytes());
    assert!(matches!(
        EventLog::parse(&bad),
        Err(EventLogError::Malformed { offset, .. }) if offset == second
    ));
    // Absurd event size.
    let e = &log.events[1];
    let size_at = e.offset + 12 + e.digests.iter().map(|d| 2 + d.bytes.len()).sum::<usize>();
    let mut bad = good.clone();
    bad[size_at..size_at + 4].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let err = EventLog::parse(&bad).unwrap_err();
    assert!(
        matches!(&err, EventLogError::Malformed { offset, reason }
            if *offset == e.offset && reason.contains("eventSize")),
        "{err:?}"
    );
    // An algorithm in an event that the header does not list.
    let mut bad = good.clone();
    bad[second + 12..second + 14].copy_from_slice(&0x0012u16.to_le_bytes());
    let err = EventLog::parse(&bad).unwrap_err();
    assert!(
        matches!(err, EventLogError::Malformed { offset, .. } if offset >= second),
        "{err:?}"
    );
    // Unknown algorithm in the header (SM3, 32 bytes): parsed, but not replayed.
    let mut odd = good.clone();
    let hdr_alg = 32 + 16 + 4 + 4 + 4; // first algorithmId in the Spec ID event
    let first = u16::from_le_bytes([odd[hdr_alg], odd[hdr_alg + 1]]);
    assert_eq!(first, 0x0004, "sha1 first in OVMF's header");
    // Turn sha1 (20 bytes) into an unknown id with the same size: parses, sha1 not replayed.
    odd[hdr_alg..hdr_alg + 2].copy_from_slice(&0x7777u16.to_le_bytes());
    match EventLog::parse(&odd) {
        Ok(l) => assert!(!l.banks().contains(&HashAlg::Sha1)),
        Err(e) => assert!(matches!(e, EventLogError::Malformed { .. })),
    }
    // Random byte corruption.
    let noise = common::pseudo_random(4000, 77);
    for k in 0..2000 {
        let mut m = good.clone();
        let off = (usize::from(noise[2 * k]) << 8 | usize::from(noise[2 * k + 1])) % m.len();
        m[off] ^= noise[k] | 1;
        if let Ok(l) = EventLog::parse(&m) {
            let _ = l.replay();
            for e in &l.events {
                let _ = eventlog::check_data(e);
                let _ = eventlog::describe(e);
            }
        }
    }
}

#[test]
fn variable_and_signature_list_decoding_round_trips_on_real_data() {
    let b = vectors::load_boot("sb-on");
    let log = EventLog::parse(&b.log).unwrap();
    for name in ["PK", "KEK", "db", "dbx"] {
        let data = logged_variable(&log, name);
        let lists = firmware::parse_signature_lists(&data).unwrap();
        assert_eq!(firmware::encode_signature_lists(&lists), data, "{name}");
    }
}
