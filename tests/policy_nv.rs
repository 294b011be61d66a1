//! Rollback-safe signed policies on swtpm: `.pcrsig` entries bound to an NV epoch counter
//! (PolicyPCR ∧ PolicyNV "counter ≤ epoch", approved by PolicyAuthorize). One sealed
//! envelope; a bump revokes the old signatures, new ones unseal without resealing; a deleted
//! or replaced index is named as such; a redefined counter does not go back.

mod common;

use bootchain::hash::{Digest, HashAlg};
use bootchain::measure::{self, Pcr11Prediction, PcrSignatures, PhaseValue};
use bootchain::policy::{self, NvEpoch};
use bootchain::seal::{self, AuthorizeKey, Envelope, SealError, SealRequest, UnsealOptions};
use bootchain::tpm::{Tpm, UnsealError};
use common::swtpm::Swtpm;
use common::*;

const INDEX: u32 = 0x0180_0b0c;

/// `.pcrsig` for one PCR 11 value, bound to `nv`.
fn sign_pcr11(key: &rsa::RsaPrivateKey, v: &Digest, nv: Option<&NvEpoch>) -> PcrSignatures {
    let pred = Pcr11Prediction {
        banks: vec![HashAlg::Sha256],
        events: vec![],
        phases: vec![PhaseValue {
            phase: measure::Phase::after_stub(),
            values: vec![v.clone()],
        }],
    };
    measure::sign_policies_bound(&pred, key, nv).unwrap()
}

fn unseal(t: &mut Tpm, env: &Envelope, sigs: &PcrSignatures) -> Result<Vec<u8>, SealError> {
    seal::unseal(
        t,
        env,
        &UnsealOptions {
            signatures: Some(sigs),
            pin: None,
        },
    )
    .map(|k| k.to_vec())
}

fn pcr11(t: &mut Tpm) -> Digest {
    t.read_pcrs(&[(HashAlg::Sha256, 11)]).unwrap()[&(HashAlg::Sha256, 11)].clone()
}

/// The Name tpm2-tools reads for `index` (`tpm2_nvreadpublic`).
fn tools_name(sw: &Swtpm, index: u32) -> String {
    let out = run_ok(sw.tool("tpm2_nvreadpublic").arg(format!("{index:#x}")));
    out.lines()
        .find_map(|l| l.trim().strip_prefix("name: "))
        .unwrap_or_else(|| panic!("no name in {out}"))
        .trim()
        .to_string()
}

struct Sealed {
    _d: tempfile::TempDir,
    sw: Swtpm,
    t: Tpm,
    key: rsa::RsaPrivateKey,
    env: Envelope,
    v: Digest,
}

/// A swtpm with the epoch counter defined and a root key sealed once to a signed PCR 11
/// policy (plus literal PCR 7).
fn sealed() -> (Sealed, u64) {
    let d = tempfile::tempdir().unwrap();
    let (private, _) = make_rsa_keypair(d.path(), "pcr");
    let key = measure::load_pcr_signing_key(&private, None).unwrap();
    let sw = Swtpm::start();
    let mut t = Tpm::open(&sw.tcti()).unwrap();
    t.extend(11, &[HashAlg::Sha256.digest(b"uki 1")]).unwrap();
    let e1 = t.nv_define_epoch_counter(INDEX, b"").unwrap();
    let ak = AuthorizeKey {
        key: key.to_public_key(),
        pcrs: vec![11],
    };
    let vals = t.read_pcrs(&[(HashAlg::Sha256, 7)]).unwrap();
    let req = SealRequest {
        authorize: Some(&ak),
        ..seal_request(&[7], &vals)
    };
    let env = seal::seal(&mut t, &req, b"root key").unwrap();
    let v = pcr11(&mut t);
    (
        Sealed {
            _d: d,
            sw,
            t,
            key,
            env,
            v,
        },
        e1,
    )
}

/// The acceptance path: epoch-1 signature unseals; after the bump it is refused (by the TPM's
/// PolicyNV, reported naming the index, epoch and counter); the epoch-2 signature unseals the
/// same envelope; a `.pcrsig` with both picks the valid one.
#[test]
fn bump_revokes_old_signatures_without_resealing() {
    let (mut s, e1) = sealed();
    // The Name computed in software (TPMA_NV_WRITTEN set) is what the TPM and tpm2-tools read.
    let name = policy::epoch_counter_name(INDEX);
    assert_eq!(s.t.nv_name(INDEX).unwrap(), Some(name.clone()));
    assert_eq!(tools_name(&s.sw, INDEX), hex::encode(&name));
    assert_eq!(s.t.nv_read_counter(INDEX).unwrap(), e1);

    let sigs1 = sign_pcr11(&s.key, &s.v, Some(&NvEpoch::counter(INDEX, e1)));
    let entry = &sigs1[0].1[0];
    assert_eq!(entry.nv_index, Some(INDEX));
    assert_eq!(entry.epoch, Some(e1));
    // Unsealing replays PolicyPCR, PolicyNV and checks the session digest against `pol`
    // (PolicyGetDigest), so success shows the software PolicyNV digest is the TPM's.
    assert_eq!(unseal(&mut s.t, &s.env, &sigs1).unwrap(), b"root key");

    let e2 = s.t.nv_bump(INDEX, b"").unwrap();
    assert_eq!(e2, e1 + 1);
    let err = unseal(&mut s.t, &s.env, &sigs1).unwrap_err();
    match &err {
        SealError::Unseal(UnsealError::Revoked {
            index,
            epoch,
            counter,
        }) => assert_eq!((*index, *epoch, *counter), (INDEX, e1, e2)),
        other => panic!("expected a revoked signature, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("0x01800b0c") && msg.contains("revoked"),
        "{msg}"
    );

    let sigs2 = sign_pcr11(&s.key, &s.v, Some(&NvEpoch::counter(INDEX, e2)));
    assert_eq!(unseal(&mut s.t, &s.env, &sigs2).unwrap(), b"root key");
    let mut both = sigs1.clone();
    measure::merge_signatures(&mut both, sigs2.clone());
    assert_eq!(unseal(&mut s.t, &s.env, &both).unwrap(), b"root key");

    // An epoch-2 signature over other PCR 11 values is still no signature for this boot.
    let other = sign_pcr11(
        &s.key,
        &HashAlg::Sha256.digest(b"other"),
        Some(&NvEpoch::counter(INDEX, e2)),
    );
    assert!(matches!(
        unseal(&mut s.t, &s.env, &other),
        Err(SealError::NotSigned { .. })
    ));
}

/// tpm2-tools' PolicyNV over the counter (trial session, TPM-computed digest) gives the digest
/// computed in software.
#[test]
fn policy_nv_digest_matches_tpm2_tools() {
    require_tool("tpm2_policynv");
    let (s, e1) = sealed();
    let dir = tempfile::tempdir().unwrap();
    let f = |n: &str| dir.path().join(n);
    std::fs::write(f("operand"), e1.to_be_bytes()).unwrap();
    run_ok(
        s.sw.tool("tpm2_startauthsession")
            .arg("-S")
            .arg(f("session")),
    );
    run_ok(
        s.sw.tool("tpm2_policynv")
            .args(["-S"])
            .arg(f("session"))
            .arg("-i")
            .arg(f("operand"))
            .arg("-L")
            .arg(f("policy"))
            .args([&format!("{INDEX:#x}"), "ule"]),
    );
    let got = std::fs::read(f("policy")).unwrap();
    let want = NvEpoch::counter(INDEX, e1).extend(&policy::zero_policy());
    assert_eq!(hex::encode(got), want.to_hex());
}

/// A deleted index is named as missing; a counter redefined with the same attributes has the
/// same Name but did not go back (the old signature stays revoked); an index redefined with
/// other attributes is named as changed.
#[test]
fn missing_redefined_and_changed_index() {
    let (mut s, e1) = sealed();
    let sigs1 = sign_pcr11(&s.key, &s.v, Some(&NvEpoch::counter(INDEX, e1)));
    s.t.nv_undefine(INDEX, b"").unwrap();
    let err = unseal(&mut s.t, &s.env, &sigs1).unwrap_err();
    assert!(
        matches!(
            err,
            SealError::Unseal(UnsealError::NvIndexMissing { index: INDEX })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("the policy NV index 0x01800b0c does not exist"),
        "{err}"
    );

    // Same attributes, same Name; but the first NV_Increment of a new counter starts from
    // the highest value any counter on the TPM has had (TPM 2.0 Part 3, NV_Increment), so
    // the counter does not go back and the epoch-1 signature stays revoked.
    let again = s.t.nv_define_epoch_counter(INDEX, b"").unwrap();
    assert!(again > e1, "counter went back: {again} <= {e1}");
    assert!(matches!(
        unseal(&mut s.t, &s.env, &sigs1),
        Err(SealError::Unseal(UnsealError::Revoked { .. }))
    ));

    // Other attributes (ownerread added): another Name.
    s.t.nv_undefine(INDEX, b"").unwrap();
    run_ok(s.sw.tool("tpm2_nvdefine").args([
        &format!("{INDEX:#x}"),
        "-C",
        "o",
        "-s",
        "8",
        "-a",
        "ownerwrite|ownerread|authread|nt=counter|no_da",
    ]));
    run_ok(
        s.sw.tool("tpm2_nvincrement")
            .args([&format!("{INDEX:#x}"), "-C", "o"]),
    );
    let err = unseal(&mut s.t, &s.env, &sigs1).unwrap_err();
    assert!(
        matches!(
            err,
            SealError::Unseal(UnsealError::NvIndexChanged { index: INDEX, .. })
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("the policy NV index 0x01800b0c was changed"),
        "{err}"
    );
}

/// The commands: `policy nv-define`/`show`/`bump`, `measure sign --policy-nv` (epoch read from
/// the TPM, the same bytes as `--epoch` given offline), and `bootchain-unseal` on an envelope
/// sealed once by `bootchain seal`: the epoch-1 `.pcrsig` unseals, after `policy bump` it is
/// refused naming the index, the epoch-2 one unseals.
#[test]
fn commands_and_initramfs_unseal() {
    let d = tempfile::tempdir().unwrap();
    let (private, public) = make_rsa_keypair(d.path(), "pcr");
    let key = measure::load_pcr_signing_key(&private, None).unwrap();
    let sw = Swtpm::start();
    let cli = |args: &[&str]| {
        let mut c = std::process::Command::new(bootchain_bin());
        c.env("BOOTCHAIN_TCTI", sw.tcti()).args(args);
        c
    };
    let e1: u64 = run_ok(&mut cli(&["policy", "nv-define"]))
        .trim()
        .parse()
        .unwrap();
    let show = run_ok(&mut cli(&["policy", "show"]));
    assert!(show.contains(&format!("epoch {e1}")), "{show}");
    assert!(
        show.contains(&hex::encode(policy::epoch_counter_name(INDEX))),
        "{show}"
    );
    let out = run(&mut cli(&["policy", "nv-define"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already defined"));

    // measure sign: online (epoch from the TPM) and offline give the same document.
    let linux = d.path().join("linux");
    std::fs::write(&linux, b"kernel").unwrap();
    let sign = |extra: &[&str]| {
        let mut c = cli(&["measure", "sign", "--json=short", "--private-key"]);
        c.arg(&private).arg("--linux").arg(&linux).args(extra);
        run_ok(&mut c)
    };
    let online = sign(&["--policy-nv", "0x01800b0c"]);
    let offline = sign(&["--policy-nv", "0x01800b0c", "--epoch", &e1.to_string()]);
    assert_eq!(online, offline);
    let v: serde_json::Value = serde_json::from_str(online.trim()).unwrap();
    let entry = &v["sha256"][0];
    assert_eq!(entry["nvIndex"], INDEX);
    assert_eq!(entry["epoch"], e1);
    assert_eq!(
        entry["nvName"],
        hex::encode(policy::epoch_counter_name(INDEX))
    );

    // Seal once; the initramfs binary unseals with NV-bound signatures.
    let env = d.path().join("root.sealed");
    run_ok(
        cli(&["seal", "--pcrs", "7", "--random", "--pcr-public-key"])
            .arg(&public)
            .arg("-o")
            .arg(&env),
    );
    let v11 = pcr11(&mut Tpm::open(&sw.tcti()).unwrap());
    let write_sig = |epoch: u64| {
        let p = d.path().join(format!("sig{epoch}.json"));
        let s = sign_pcr11(&key, &v11, Some(&NvEpoch::counter(INDEX, epoch)));
        std::fs::write(&p, measure::signatures_json(&s).to_string()).unwrap();
        p
    };
    let unseal = |sig: &std::path::Path| {
        run(
            std::process::Command::new(bootchain_bin().with_file_name("bootchain-unseal"))
                .args(["--tcti", &sw.tcti(), "--no-lock", "--pcrsig"])
                .arg(sig)
                .arg(&env),
        )
    };
    let sig1 = write_sig(e1);
    let out = unseal(&sig1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key1 = out.stdout;
    let e2: u64 = run_ok(&mut cli(&["policy", "bump"]))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(e2, e1 + 1);
    let out = unseal(&sig1);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("revoked")
            && err.contains("0x01800b0c")
            && err.contains(&format!("counter is at {e2}")),
        "{err}"
    );
    let out = unseal(&write_sig(e2));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, key1);
}

/// systemd-pcrlock 257 `make-policy` (Debian 13 chroot, `scripts/trixie-tools`) driven against
/// swtpm (`SYSTEMD_TPM2_DEVICE=swtpm:…`, the firmware log from `SYSTEMD_MEASURE_LOG_FIRMWARE`):
/// without `.pcrlock` components its policy predicts no PCRs and writes the zero policy to its
/// NV index. That index has the Name bootchain computes from the policy's `nvPublic` (with
/// TPMA_NV_WRITTEN), PolicyAuthorizeNV over it (the vendored tss-esapi wrapper) gives the
/// digest bootchain computes in software, and a LUKS token systemd-cryptenroll 257 binds to it
/// (`--tpm2-pcrlock`) unlocks with bootchain.
#[test]
fn pcrlock_make_policy_index_and_policy_authorize_nv() {
    use base64::Engine as _;
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo_root().join("test-vectors/boots/sb-on/eventlog.bin"),
        d.path().join("eventlog.bin"),
    )
    .unwrap();
    std::fs::create_dir(d.path().join("comp")).unwrap();
    let sw = Swtpm::start();
    let tcti = sw.tcti();
    run_ok(&mut trixie_tools(
        d.path(),
        &[
            ("SYSTEMD_TPM2_DEVICE", &tcti),
            ("SYSTEMD_MEASURE_LOG_FIRMWARE", "/w/eventlog.bin"),
        ],
        &[
            "/usr/lib/systemd/systemd-pcrlock",
            "make-policy",
            "--pcr=7",
            "--components=/w/comp",
            "--policy=/w/policy.json",
            "--recovery-pin=hide",
            "--nv-index=0x01800c00",
        ],
    ));
    let p: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("policy.json")).unwrap()).unwrap();
    assert_eq!(p["nvIndex"], 0x0180_0c00);
    assert_eq!(p["pcrValues"], serde_json::json!([]));
    let tpm2b = base64::engine::general_purpose::STANDARD
        .decode(p["nvPublic"].as_str().unwrap())
        .unwrap();
    // TPM2B_NV_PUBLIC: size, then TPMS_NV_PUBLIC with the attributes at bytes 6..10.
    let mut area = tpm2b[2..].to_vec();
    let attrs = u32::from_be_bytes(area[6..10].try_into().unwrap()) | policy::tpma_nv::WRITTEN;
    area[6..10].copy_from_slice(&attrs.to_be_bytes());
    let name = policy::object_name(&area);
    let mut t = Tpm::open(&tcti).unwrap();
    assert_eq!(t.nv_name(0x0180_0c00).unwrap(), Some(name.clone()));
    assert_eq!(
        t.policy_authorize_nv_trial(0x0180_0c00).unwrap(),
        policy::policy_authorize_nv(&name)
    );
    drop(t);

    // systemd-cryptenroll 257 --tpm2-pcrlock enrolls a token bound to that index;
    // `bootchain luks unlock` opens it (PolicyAuthorizeNV in the unseal session), and names
    // the index once it is deleted.
    let (img, _) = luks_image(d.path());
    run_ok(&mut trixie_tools(
        d.path(),
        &[],
        &[
            "systemd-cryptenroll",
            "--unlock-key-file=/w/pass",
            &format!("--tpm2-device={tcti}"),
            "--tpm2-pcrlock=/w/policy.json",
            "/w/disk.img",
        ],
    ));
    let unlock = || {
        run(std::process::Command::new(bootchain_bin())
            .env("BOOTCHAIN_TCTI", &tcti)
            .args(["luks", "unlock", "--test"])
            .arg(&img))
    };
    let out = unlock();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_ok(sw.tool("tpm2_nvundefine").args(["-C", "o", "0x01800c00"]));
    let out = unlock();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the policy NV index 0x01800c00 does not exist"),
        "{err}"
    );
}
