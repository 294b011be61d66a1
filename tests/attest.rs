//! `bootchain attest verify` (the verifier's side of remote attestation) against quotes made
//! by tpm2-tools on a swtpm into which a real boot's event log was replayed: the good quote is
//! accepted; a wrong nonce, a tampered quote, another AK's signature, a log that is not the
//! quoted one, and a log that is the quoted one but not the reference's are each refused with
//! a precise error (the last naming the PCR and the first differing event).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use bootchain::attest::{self, AttestError, FirstDifference, Reference};
use bootchain::eventlog::{EventLog, EventType};
use bootchain::hash::HashAlg;
use bootchain::quote::{AkPublic, QuoteError, Signature};
use common::swtpm::Swtpm;
use common::*;

const SELECTION: &str = "sha256:0,1,2,3,4,5,7,9,11";
const NONCE: &str = "5ca1ab1e0ddba11c0ffee0123456789a";

fn bc() -> Command {
    Command::new(bootchain_bin())
}

fn sb_on_log() -> (PathBuf, EventLog) {
    let p = vectors::boots_dir().join("sb-on/eventlog.bin");
    let l = EventLog::parse(&std::fs::read(&p).unwrap()).unwrap();
    (p, l)
}

/// A swtpm with `log` replayed into it (every digest of every extended event), an EK and
/// an AK of type `alg` (tpm2_createak's defaults otherwise).
struct Machine {
    tpm: Swtpm,
    dir: tempfile::TempDir,
}

impl Machine {
    fn boot(log: &EventLog) -> Machine {
        for t in [
            "tpm2_createek",
            "tpm2_createak",
            "tpm2_quote",
            "tpm2_readpublic",
        ] {
            require_tool(t);
        }
        let tpm = Swtpm::start();
        let mut t = bootchain::tpm::Tpm::open(&tpm.tcti()).unwrap();
        // A fresh TPM: PCR 0 starts at zero too (locality 0; the log has no StartupLocality).
        assert_eq!(log.startup_locality(), None);
        let zero = t.read_pcrs(&[(HashAlg::Sha256, 0)]).unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let m = Machine { tpm, dir };
        run_ok(
            m.tpm
                .tool("tpm2_createek")
                .args(["-G", "rsa", "-c"])
                .arg(m.path("ek.ctx")),
        );
        m.flush();
        m
    }

    /// No resource manager between tpm2-tools and swtpm: flush what each tool left loaded.
    fn flush(&self) {
        run_ok(self.tpm.tool("tpm2_flushcontext").arg("--transient-object"));
        run_ok(self.tpm.tool("tpm2_flushcontext").arg("--loaded-session"));
    }

    fn path(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }

    /// `tpm2_createak -G alg`; the public area (TPM2B_PUBLIC) in NAME.pub, the context in
    /// NAME.ctx, and the PEM form (tpm2_readpublic -f pem) in NAME.pem.
    fn ak(&self, name: &str, alg: &str) {
        run_ok(
            self.tpm
                .tool("tpm2_createak")
                .arg("-C")
                .arg(self.path("ek.ctx"))
                .args(["-G", alg, "-c"])
                .arg(self.path(&format!("{name}.ctx")))
                .arg("-u")
                .arg(self.path(&format!("{name}.pub"))),
        );
        self.flush();
        run_ok(
            self.tpm
                .tool("tpm2_readpublic")
                .arg("-c")
                .arg(self.path(&format!("{name}.ctx")))
                .args(["-f", "pem", "-o"])
                .arg(self.path(&format!("{name}.pem"))),
        );
        self.flush();
    }

    /// `tpm2_quote` with `ak` over SELECTION; returns (quote.msg, quote.sig) paths.
    fn quote(&self, ak: &str, nonce: &str, tag: &str) -> (PathBuf, PathBuf) {
        let (m, s) = (
            self.path(&format!("{tag}.msg")),
            self.path(&format!("{tag}.sig")),
        );
        run_ok(
            self.tpm
                .tool("tpm2_quote")
                .arg("-c")
                .arg(self.path(&format!("{ak}.ctx")))
                .args(["-l", SELECTION, "-q", nonce, "-m"])
                .arg(&m)
                .arg("-s")
                .arg(&s),
        );
        self.flush();
        (m, s)
    }
}

fn verify_cmd(q: &(PathBuf, PathBuf), ak: &Path, nonce: &str, log: &Path) -> Command {
    let mut c = bc();
    c.args(["attest", "verify", "--quote"])
        .arg(&q.0)
        .arg("--signature")
        .arg(&q.1)
        .arg("--ak-public")
        .arg(ak)
        .args(["--nonce", nonce])
        .arg("--eventlog")
        .arg(log);
    c
}

/// Runs and expects failure; returns stderr.
fn refused(c: &mut Command) -> String {
    let o = run(c);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    eprintln!("refused as expected: {err}");
    err
}

/// The library's verdict on files.
fn lib_verify(
    q: &(PathBuf, PathBuf),
    ak: &Path,
    nonce: &str,
    log: &EventLog,
    r: Option<&Reference>,
) -> Result<attest::VerifiedQuote, AttestError> {
    let quote = std::fs::read(&q.0).unwrap();
    let sig = Signature::parse(&std::fs::read(&q.1).unwrap()).unwrap();
    let ak = AkPublic::parse(&std::fs::read(ak).unwrap()).unwrap();
    attest::verify_quote(&quote, &sig, &ak, &hex::decode(nonce).unwrap(), log, r)
}

fn write_log(dir: &Path, name: &str, l: &EventLog) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, l.to_bytes()).unwrap();
    p
}

#[test]
fn rsa_quote_of_a_real_boot() {
    let (log_path, log) = sb_on_log();
    let m = Machine::boot(&log);
    m.ak("ak", "rsa");
    m.ak("ak2", "rsa");
    let ak = m.path("ak.pub");
    let q = m.quote("ak", NONCE, "q");

    // Accepted: TPM2B_PUBLIC and PEM keys, the nonce as hex and as a file.
    let ok = run_ok(&mut verify_cmd(&q, &ak, NONCE, &log_path));
    assert!(
        ok.contains("quote verified") && ok.contains("rsassa-sha256"),
        "{ok}"
    );
    assert!(ok.contains(SELECTION), "{ok}");
    std::fs::write(m.path("nonce.bin"), hex::decode(NONCE).unwrap()).unwrap();
    let nonce_file = m.path("nonce.bin").display().to_string();
    run_ok(&mut verify_cmd(
        &q,
        &m.path("ak.pem"),
        &nonce_file,
        &log_path,
    ));
    let v = lib_verify(&q, &ak, NONCE, &log, None).unwrap();
    // The attested values are the log's replay (and pcrs.json, what the VM's TPM held).
    let pcrs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(vectors::boots_dir().join("sb-on/pcrs.json")).unwrap(),
    )
    .unwrap();
    for ((bank, pcr), d) in &v.values {
        assert_eq!(
            pcrs[bank.name()][pcr.to_string()],
            d.to_hex(),
            "{bank}:{pcr}"
        );
    }
    assert_eq!(v.values.len(), 9);
    // tpm2_checkquote (the oracle) agrees the quote is good.
    if Command::new("sh")
        .args(["-c", "command -v tpm2_checkquote"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        run_ok(
            Command::new("tpm2_checkquote")
                .arg("-u")
                .arg(&ak)
                .arg("-m")
                .arg(&q.0)
                .arg("-s")
                .arg(&q.1)
                .args(["-q", NONCE]),
        );
    }

    // (3) A wrong nonce: a replayed quote.
    let wrong = "00".repeat(16);
    let err = refused(&mut verify_cmd(&q, &ak, &wrong, &log_path));
    assert!(
        err.contains("is not the nonce") && err.contains(NONCE),
        "{err}"
    );
    assert!(matches!(
        lib_verify(&q, &ak, &wrong, &log, None),
        Err(AttestError::Nonce { .. })
    ));

    // (1) A tampered quote (one byte of the clock flipped; then of the PCR digest).
    for (i, at) in [(0, 40u64), (1, std::fs::metadata(&q.0).unwrap().len() - 1)] {
        let t = m.path(&format!("tampered{i}.msg"));
        flip_byte(&q.0, &t, at);
        let tq = (t, q.1.clone());
        let err = refused(&mut verify_cmd(&tq, &ak, NONCE, &log_path));
        assert!(err.contains("signature does not verify"), "{err}");
        assert!(matches!(
            lib_verify(&tq, &ak, NONCE, &log, None),
            Err(AttestError::Signature(QuoteError::BadSignature { .. }))
        ));
    }

    // (1) Signed by another AK of the same TPM.
    let q2 = m.quote("ak2", NONCE, "q2");
    run_ok(&mut verify_cmd(&q2, &m.path("ak2.pub"), NONCE, &log_path));
    let err = refused(&mut verify_cmd(&q2, &ak, NONCE, &log_path));
    assert!(err.contains("does not verify with the AK"), "{err}");
    // The other AK's signature on this quote.
    let mixed = (q.0.clone(), q2.1.clone());
    assert!(matches!(
        lib_verify(&mixed, &ak, NONCE, &log, None),
        Err(AttestError::Signature(_))
    ));

    // (4) Logs that are not the quoted one: an event dropped, an event's digest altered.
    let pcr7 = log
        .events
        .iter()
        .position(|e| e.pcr == 7 && e.event_type == EventType::EfiVariableDriverConfig)
        .unwrap();
    let mut dropped = log.clone();
    dropped.events.remove(pcr7);
    let mut altered = log.clone();
    let pcr4 = log
        .events
        .iter()
        .position(|e| e.pcr == 4 && e.event_type == EventType::EfiBootServicesApplication)
        .unwrap();
    for d in &mut altered.events[pcr4].digests {
        d.bytes[0] ^= 1;
    }
    // A PCR the quote does not cover may change freely (PCR 6 is not quoted).
    let mut unquoted = log.clone();
    let pcr6 = log.events.iter().position(|e| e.pcr == 6);
    if let Some(i) = pcr6 {
        unquoted.events.remove(i);
        run_ok(&mut verify_cmd(
            &q,
            &ak,
            NONCE,
            &write_log(m.dir.path(), "unquoted.bin", &unquoted),
        ));
    }
    for (name, l) in [("dropped.bin", &dropped), ("altered.bin", &altered)] {
        let p = write_log(m.dir.path(), name, l);
        let err = refused(&mut verify_cmd(&q, &ak, NONCE, &p));
        assert!(
            err.contains("the event log does not match the quote") && err.contains(SELECTION),
            "{err}"
        );
        assert!(matches!(
            lib_verify(&q, &ak, NONCE, l, None),
            Err(AttestError::PcrDigest {
                alg: HashAlg::Sha256,
                ..
            })
        ));
    }

    // (5) The log is the quoted one, the reference is not this boot.
    // a) Values only (`eventlog replay --json`) with PCR 7 changed: the PCR is named; with no
    //    events in the reference, the message says so.
    let replay = run_ok(bc().args(["eventlog", "replay", "--json"]).arg(&log_path));
    let good_ref = m.path("ref.json");
    std::fs::write(&good_ref, &replay).unwrap();
    let ok = run_ok(
        verify_cmd(&q, &ak, NONCE, &log_path)
            .arg("--reference")
            .arg(&good_ref),
    );
    assert!(ok.contains("reference: sha256:0 "), "{ok}");
    let mut v: serde_json::Value = serde_json::from_str(&replay).unwrap();
    v["sha256"]["7"] = serde_json::Value::String("ab".repeat(32));
    let bad_ref = m.path("bad-ref.json");
    std::fs::write(&bad_ref, v.to_string()).unwrap();
    let err = refused(
        verify_cmd(&q, &ak, NONCE, &log_path)
            .arg("--reference")
            .arg(&bad_ref),
    );
    assert!(
        err.contains("matches the quote but not the reference")
            && err.contains("PCR 7 (sha256)")
            && err.contains(&"ab".repeat(32))
            && err.contains("no events for this PCR"),
        "{err}"
    );
    // b) A known-good log whose PCR 7 db event differs: the event is named, with what the
    //    reference expected.
    let db = log
        .events
        .iter()
        .position(|e| {
            e.pcr == 7 && e.event_type == EventType::EfiVariableDriverConfig && {
                let d = bootchain::eventlog::describe(e);
                d.contains("-db (")
            }
        })
        .unwrap();
    let mut golden = log.clone();
    for d in &mut golden.events[db].digests {
        if let Some(last) = d.bytes.last_mut() {
            *last ^= 0x80;
        }
    }
    let golden_path = write_log(m.dir.path(), "golden.bin", &golden);
    let err = refused(
        verify_cmd(&q, &ak, NONCE, &log_path)
            .arg("--reference-log")
            .arg(&golden_path),
    );
    let want = format!("first differing event: log event #{db} ");
    assert!(
        err.contains("PCR 7 (sha256)")
            && err.contains(&want)
            && err.contains("EV_EFI_VARIABLE_DRIVER_CONFIG")
            && err.contains("-db (")
            && err.contains("the reference expects EV_EFI_VARIABLE_DRIVER_CONFIG"),
        "{err}"
    );
    let r = Reference::from_log(&golden);
    match lib_verify(&q, &ak, NONCE, &log, Some(&r)) {
        Err(AttestError::Reference(ms)) => {
            assert_eq!(ms.0.len(), 1, "only PCR 7 in the quoted bank: {ms}");
            let m7 = &ms.0[0];
            assert_eq!((m7.bank, m7.pcr), (HashAlg::Sha256, 7));
            match &m7.first {
                FirstDifference::Changed { logged, expected } => {
                    assert_eq!(logged.index, db);
                    assert_eq!(expected.event_type, EventType::EfiVariableDriverConfig);
                }
                other => panic!("{other:?}"),
            }
        }
        other => panic!("{other:?}"),
    }
    // An extra event at the end of a PCR is located as such (the reference lacks the last
    // PCR 4 event).
    let mut shorter = log.clone();
    let last4 = log.events.iter().rposition(|e| e.pcr == 4).unwrap();
    shorter.events.remove(last4);
    match lib_verify(&q, &ak, NONCE, &log, Some(&Reference::from_log(&shorter))) {
        Err(AttestError::Reference(ms)) => match &ms.0[0].first {
            FirstDifference::Extra { logged } => assert_eq!(logged.index, last4),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }

    // c) --uki of a different UKI, with this boot's Secure Boot certificates: PCR 4 differs
    //    at the UKI's EV_EFI_BOOT_SERVICES_APPLICATION event, and what was expected is named.
    require_stub();
    std::fs::write(m.path("kernel"), pseudo_random(70_000, 5)).unwrap();
    let uki = m.path("other.efi");
    run_ok(
        bc().args(["uki", "build", "--uname", "6.1", "--os-release", "ID=x"])
            .args(["--cmdline", "quiet"])
            .arg("--linux")
            .arg(m.path("kernel"))
            .arg("-o")
            .arg(&uki),
    );
    let sb = vectors::boots_dir().join("sb-on");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sb.join("manifest.json")).unwrap()).unwrap();
    let owner = manifest["secureboot"]["owner_guid"].as_str().unwrap();
    let err = refused(
        verify_cmd(&q, &ak, NONCE, &log_path)
            .arg("--uki")
            .arg(&uki)
            .args(["--secureboot", "on", "--secureboot-owner", owner])
            .arg("--secureboot-pk")
            .arg(sb.join("sb/pk.crt"))
            .arg("--secureboot-kek")
            .arg(sb.join("sb/kek.crt"))
            .arg("--secureboot-db")
            .arg(sb.join("sb/db.crt"))
            .arg("--secureboot-dbx")
            .arg(sb.join("sb/dbx.esl")),
    );
    let p4 = err
        .lines()
        .find(|l| l.contains("PCR 4 (sha256)"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        p4.contains("first differing event: log event #")
            && p4.contains("EV_EFI_BOOT_SERVICES_APPLICATION")
            && p4.contains(&format!("UKI {}", uki.display())),
        "{err}"
    );
}

#[test]
fn ecc_quote_and_pem_key() {
    let (log_path, log) = sb_on_log();
    let m = Machine::boot(&log);
    m.ak("ak", "ecc");
    let q = m.quote("ak", NONCE, "q");
    for key in ["ak.pub", "ak.pem"] {
        let ok = run_ok(verify_cmd(&q, &m.path(key), NONCE, &log_path).arg("--json"));
        let v: serde_json::Value = serde_json::from_str(&ok).unwrap();
        assert_eq!(v["verified"], true);
        assert_eq!(v["scheme"], "ecdsa-sha256", "{ok}");
        assert!(v["ak"].as_str().unwrap().contains("P-256"), "{ok}");
    }
    let err = refused(&mut verify_cmd(&q, &m.path("ak.pub"), "01", &log_path));
    assert!(err.contains("is not the nonce"), "{err}");
    let t = m.path("t.msg");
    flip_byte(&q.0, &t, 20);
    let err = refused(&mut verify_cmd(
        &(t, q.1.clone()),
        &m.path("ak.pub"),
        NONCE,
        &log_path,
    ));
    assert!(
        err.contains("ecdsa-sha256 signature does not verify"),
        "{err}"
    );
}

/// Malformed inputs are typed errors, never panics: every truncation of a real quote,
/// signature and AK public area, and a key that is not an attestation key.
#[test]
fn malformed_inputs_are_typed_errors() {
    let (_, log) = sb_on_log();
    let m = Machine::boot(&log);
    m.ak("ak", "rsa");
    let q = m.quote("ak", NONCE, "q");
    let quote = std::fs::read(&q.0).unwrap();
    let sig = std::fs::read(&q.1).unwrap();
    let ak = std::fs::read(m.path("ak.pub")).unwrap();
    for n in 0..quote.len() {
        assert!(bootchain::quote::Attest::parse(&quote[..n]).is_err());
    }
    for n in 0..sig.len() {
        assert!(Signature::parse(&sig[..n]).is_err());
    }
    for n in 0..ak.len() {
        assert!(AkPublic::parse(&ak[..n]).is_err());
    }
    // The EK: a restricted decryption key, not a signing key.
    run_ok(
        m.tpm
            .tool("tpm2_readpublic")
            .arg("-c")
            .arg(m.path("ek.ctx"))
            .arg("-o")
            .arg(m.path("ek.pub")),
    );
    m.flush();
    let e = AkPublic::parse(&std::fs::read(m.path("ek.pub")).unwrap()).unwrap_err();
    assert!(
        matches!(
            e,
            QuoteError::NotAnAk {
                missing: "sign",
                ..
            }
        ),
        "{e}"
    );
    let err = refused(&mut verify_cmd(
        &q,
        &m.path("ek.pub"),
        NONCE,
        &vectors::boots_dir().join("sb-on/eventlog.bin"),
    ));
    assert!(err.contains("not an attestation key"), "{err}");
}
