//! Boot test vectors in test-vectors/boots/: what a real boot measured, with the digests of
//! its inputs, so PCR prediction and event-log code can be checked without booting.
//! Written by `scripts/regen-boot-vectors` (BOOTCHAIN_REGEN_VECTORS=1).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bootchain::eventlog::EventLog;
use bootchain::hash::HashAlg;
use bootchain::pe::PeHeaders;
use serde_json::{json, Value};

use super::repo_root;
use super::vm::{BootResult, SbKeys, OWNER_GUID};

pub fn boots_dir() -> PathBuf {
    repo_root().join("test-vectors/boots")
}

fn digests_of(bytes_alg: impl Fn(HashAlg) -> String) -> Value {
    let mut m = serde_json::Map::new();
    for a in HashAlg::ALL {
        m.insert(a.name().into(), Value::String(bytes_alg(a)));
    }
    Value::Object(m)
}

/// Save one boot: event log, PCRs and a manifest of the inputs' digests. Into
/// test-vectors/boots/<sb-on|sb-off> when BOOTCHAIN_REGEN_VECTORS=1, else a scratch dir (so the
/// code path is exercised on every run).
pub fn save_boot(r: &BootResult, log: &EventLog, uki: &Path, keys: Option<&SbKeys>) {
    let name = if keys.is_some() { "sb-on" } else { "sb-off" };
    save_boot_as(name, r, log, uki, keys)
}

/// Save a boot as `test-vectors/boots/NAME` (written there with BOOTCHAIN_REGEN_VECTORS=1,
/// else to a scratch directory, so the saving itself is always exercised).
pub fn save_boot_as(name: &str, r: &BootResult, log: &EventLog, uki: &Path, keys: Option<&SbKeys>) {
    let regen = std::env::var("BOOTCHAIN_REGEN_VECTORS").as_deref() == Ok("1");
    let scratch;
    let dir = if regen {
        boots_dir().join(name)
    } else {
        scratch = tempfile::tempdir().unwrap();
        scratch.path().join(name)
    };
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("eventlog.bin"), log.to_bytes()).unwrap();
    assert_eq!(log.to_bytes(), r.event_log, "log re-serialises byte-exact");

    let mut pcrs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for ((bank, idx), v) in &r.pcrs {
        pcrs.entry(bank.clone())
            .or_default()
            .insert(idx.to_string(), hex::encode(v));
    }
    std::fs::write(
        dir.join("pcrs.json"),
        serde_json::to_string_pretty(&pcrs).unwrap() + "\n",
    )
    .unwrap();

    let mut f = std::fs::File::open(uki).unwrap();
    let (h, _) = PeHeaders::read(&mut f).unwrap();
    let auth =
        bootchain::authenticode::image_digests_with_headers(&mut f, &h, &HashAlg::ALL).unwrap();
    let mut sections = vec![];
    let mut kernel_auth = Value::Null;
    for s in &h.sections {
        let d = bootchain::uki::section_memory_digests(&mut f, s, &HashAlg::ALL).unwrap();
        sections.push(json!({
            "name": s.name.as_str(),
            "size": s.virtual_size,
            "digests": digests_of(|a| d.iter().find(|x| x.alg() == a).unwrap().to_hex()),
        }));
        if s.name.as_str() == ".linux" {
            let bytes = bootchain::pe::read_section_memory(&mut f, s).unwrap();
            let mut c = std::io::Cursor::new(bytes);
            let k = bootchain::authenticode::image_digests(&mut c, &HashAlg::ALL).unwrap();
            kernel_auth = digests_of(|a| k.iter().find(|x| x.alg() == a).unwrap().to_hex());
        }
    }
    let info = bootchain::uki::inspect(uki).unwrap();
    let mut manifest = json!({
        "description": "A real boot of a bootchain-built UKI under QEMU + OVMF + swtpm, captured by tests/boot.rs",
        "secure_boot": keys.is_some(),
        "accel": format!("{:?}", r.accel.unwrap()),
        "stub_version": info.stub_version,
        "cmdline": r.cmdline,
        "uki_authenticode": digests_of(|a| auth.iter().find(|x| x.alg() == a).unwrap().to_hex()),
        "kernel_authenticode": kernel_auth,
        "sections": sections,
    });
    if let Some(k) = keys {
        let sb = dir.join("sb");
        std::fs::create_dir_all(&sb).unwrap();
        for (n, p) in [("pk.crt", &k.pk), ("kek.crt", &k.kek), ("db.crt", &k.db)] {
            std::fs::copy(p, sb.join(n)).unwrap();
        }
        manifest["secureboot"] = json!({
            "owner_guid": OWNER_GUID,
            "pk": "sb/pk.crt", "kek": "sb/kek.crt", "db": "sb/db.crt",
            "db_signed_uki": true,
        });
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest).unwrap() + "\n",
    )
    .unwrap();
    if regen {
        eprintln!("vectors: wrote {}", dir.display());
    }
}

/// A saved boot.
pub struct SavedBoot {
    pub dir: PathBuf,
    pub manifest: Value,
    pub log: Vec<u8>,
    /// bank -> index -> value
    pub pcrs: BTreeMap<String, BTreeMap<u32, Vec<u8>>>,
}

pub fn load_boot(name: &str) -> SavedBoot {
    let dir = boots_dir().join(name);
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let log = std::fs::read(dir.join("eventlog.bin")).unwrap();
    let raw: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pcrs.json")).unwrap()).unwrap();
    let pcrs = raw
        .into_iter()
        .map(|(b, m)| {
            (
                b,
                m.into_iter()
                    .map(|(i, v)| (i.parse().unwrap(), hex::decode(v).unwrap()))
                    .collect(),
            )
        })
        .collect();
    SavedBoot {
        dir,
        manifest,
        log,
        pcrs,
    }
}
