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
            pcrlock: None,
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

/// `systemd-pcrlock make-policy` 257 (trixie chroot) against the swtpm at `tcti` for `pcrs`,
/// with the components in `dir/comp` and the firmware log `dir/eventlog.bin`: writes
/// `dir/policy.json` and NV index 0x01800c00.
fn make_policy(dir: &std::path::Path, tcti: &str, pcrs: &str) {
    run_ok(&mut trixie_tools(
        dir,
        &[
            ("SYSTEMD_TPM2_DEVICE", tcti),
            ("SYSTEMD_MEASURE_LOG_FIRMWARE", "/w/eventlog.bin"),
        ],
        &[
            "/usr/lib/systemd/systemd-pcrlock",
            "make-policy",
            &format!("--pcr={pcrs}"),
            "--components=/w/comp",
            "--policy=/w/policy.json",
            "--recovery-pin=hide",
            "--nv-index=0x01800c00",
        ],
    ));
}

/// A LUKS2 image in `dir` with a token `systemd-cryptenroll` 257 `--tpm2-pcrlock` binds to
/// `dir/policy.json`.
fn enroll_pcrlock(dir: &std::path::Path, tcti: &str) -> std::path::PathBuf {
    let (img, _) = luks_image(dir);
    run_ok(&mut trixie_tools(
        dir,
        &[],
        &[
            "systemd-cryptenroll",
            "--unlock-key-file=/w/pass",
            &format!("--tpm2-device={tcti}"),
            "--tpm2-pcrlock=/w/policy.json",
            "/w/disk.img",
        ],
    ));
    img
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
    make_policy(d.path(), &tcti, "7");
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
    let img = enroll_pcrlock(d.path(), &tcti);
    let unlock = || {
        run(std::process::Command::new(bootchain_bin())
            .env("BOOTCHAIN_TCTI", &tcti)
            .args(["luks", "unlock", "--test", "--pcrlock-policy"])
            .arg(d.path().join("policy.json"))
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

/// The sb-on firmware log with more events: each `data` measured into its `pcr` (EV_IPL) in
/// every bank of the log; the same digests are extended into swtpm so log and TPM agree.
fn log_with_events(sw: &Swtpm, events: &[(u32, &[u8])]) -> Vec<u8> {
    let mut log = std::fs::read(repo_root().join("test-vectors/boots/sb-on/eventlog.bin")).unwrap();
    let parsed = bootchain::eventlog::EventLog::parse(&log).unwrap();
    let banks: Vec<HashAlg> = parsed
        .spec_id
        .algorithms
        .iter()
        .map(|a| HashAlg::from_tpm_alg_id(a.alg_id).unwrap())
        .collect();
    for (pcr, data) in events {
        log.extend_from_slice(&pcr.to_le_bytes());
        log.extend_from_slice(&0x0Du32.to_le_bytes());
        log.extend_from_slice(&(banks.len() as u32).to_le_bytes());
        let mut extend = Vec::new();
        for b in &banks {
            log.extend_from_slice(&b.tpm_alg_id().to_le_bytes());
            let d = b.digest(data);
            log.extend_from_slice(d.as_bytes());
            extend.push(format!("{b}={}", d.to_hex()));
        }
        log.extend_from_slice(&(data.len() as u32).to_le_bytes());
        log.extend_from_slice(data);
        run_ok(
            sw.tool("tpm2_pcrextend")
                .arg(format!("{pcr}:{}", extend.join(","))),
        );
    }
    log
}

/// `systemd-pcrlock lock-raw` of each of `variants` (file contents) for `pcr`, as variants of
/// component `name` in `dir/comp`.
fn lock_raw_variants(dir: &std::path::Path, name: &str, pcr: u32, variants: &[&str]) {
    let comp = dir.join(format!("comp/{name}.pcrlock.d"));
    std::fs::create_dir_all(&comp).unwrap();
    for v in variants {
        std::fs::write(dir.join(v), v).unwrap();
        run_ok(&mut trixie_tools(
            dir,
            &[],
            &[
                "/usr/lib/systemd/systemd-pcrlock",
                "lock-raw",
                &format!("--pcr={pcr}"),
                &format!("--pcrlock=/w/comp/{name}.pcrlock.d/{v}.pcrlock"),
                &format!("/w/{v}"),
            ],
        ));
    }
}

/// systemd-pcrlock 257 `make-policy` over predicted PCRs, against swtpm. The firmware log has
/// one event in PCR 12 and one in PCR 14, each recognized by a `.pcrlock` component with two
/// variants (`lock-raw` of "a"/"b" and "c"/"d"); PCRs 13 and 15 have nothing measured. So
/// pcrlock's policy has every shape: one PolicyPCR over two single-value PCRs, then two
/// chained PolicyOR steps in PCR order. The digest it writes to its NV index is the one
/// bootchain computes from `pcrlock.json`; a `systemd-cryptenroll --tpm2-pcrlock` token
/// unlocks with `bootchain luks unlock` and `bootchain-unseal` given that file, and — like a
/// token of systemd 255/256, which does not name the index — through the library. Without
/// the file, with a PCR outside the prediction, with a forged file and with a file for a
/// redefined index, the reason is named.
#[test]
fn pcrlock_policy_over_predicted_pcrs_unlocks() {
    let d = tempfile::tempdir().unwrap();
    let w = d.path();
    let sw = Swtpm::start();
    let tcti = sw.tcti();
    std::fs::write(
        w.join("eventlog.bin"),
        log_with_events(&sw, &[(12, b"a"), (14, b"c")]),
    )
    .unwrap();
    lock_raw_variants(w, "250-test", 12, &["a", "b"]);
    lock_raw_variants(w, "260-other", 14, &["c", "d"]);
    make_policy(w, &tcti, "12,13,14,15");
    let policy_file = w.join("policy.json");
    let file = bootchain::pcrlock::PcrlockPolicy::load(&policy_file).unwrap();
    let sp = file.super_pcr().unwrap();
    assert_eq!(
        sp.single.iter().map(|(p, _)| p.get()).collect::<Vec<_>>(),
        [13, 15]
    );
    assert_eq!(
        sp.or_steps
            .iter()
            .map(|o| (o.pcr.get(), o.values.len()))
            .collect::<Vec<_>>(),
        [(12, 2), (14, 2)]
    );
    // The NV index holds a TPMT_HA: SHA-256, then the super-PCR digest.
    let held = sw
        .tool("tpm2_nvread")
        .args(["-C", "o", "0x01800c00"])
        .output()
        .unwrap();
    assert!(
        held.status.success(),
        "{}",
        String::from_utf8_lossy(&held.stderr)
    );
    assert_eq!(&held.stdout[..2], &[0x00, 0x0b]);
    assert_eq!(&held.stdout[2..], sp.digest.as_bytes());
    let mut t = Tpm::open(&tcti).unwrap();
    assert_eq!(t.nv_name(0x0180_0c00).unwrap(), Some(file.nv_name()));
    drop(t);

    let img = enroll_pcrlock(w, &tcti);
    let unlock = |policy: &std::path::Path| {
        run(std::process::Command::new(bootchain_bin())
            .env("BOOTCHAIN_TCTI", &tcti)
            .args(["luks", "unlock", "--passphrase-output"])
            .arg(w.join("passphrase"))
            .arg("--pcrlock-policy")
            .arg(policy)
            .arg(&img))
    };
    let out = unlock(&policy_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passphrase = std::fs::read(w.join("passphrase")).unwrap();
    run_ok(
        std::process::Command::new("cryptsetup")
            .args(["open", "--test-passphrase", "--key-file", "-"])
            .arg(&img)
            .stdin(std::fs::File::open(w.join("passphrase")).unwrap()),
    );

    // bootchain-unseal, as in the initramfs (without locking, so the TPM stays as it is).
    let out = run(
        std::process::Command::new(bootchain_bin().with_file_name("bootchain-unseal"))
            .args(["--tcti", &tcti, "--no-lock", "--pcrlock-policy"])
            .arg(&policy_file)
            .arg("--luks")
            .arg(&img),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, passphrase);

    // Through the library: the 257 token without the file (the index holds a policy over
    // predictions: the file is needed), and the token as systemd 255/256 write it (no
    // tpm2_pcrlock_nv: the index comes from pcrlock.json), with and without the file.
    let md = bootchain::luks::Luks::new(&img).metadata().unwrap();
    let (_, v) = md
        .tokens_of_type(bootchain::token::TOKEN_TYPE)
        .next()
        .unwrap();
    let token = bootchain::token::SystemdTpm2Token::from_json(v).unwrap();
    let mut old = v.clone();
    old.as_object_mut().unwrap().remove("tpm2_pcrlock_nv");
    let old = bootchain::token::SystemdTpm2Token::from_json(&old).unwrap();
    let chain = |e: &dyn std::error::Error| bootchain::error::Chain(e).to_string();
    let mut t = Tpm::open(&tcti).unwrap();
    let e = bootchain::token::unseal(&mut t, &token, &UnsealOptions::default()).unwrap_err();
    assert!(
        chain(&e).contains("NV index 0x01800c00 predicts PCR values")
            && chain(&e).contains("needs the pcrlock.json")
            && chain(&e).contains("PolicyAuthorizeNV"),
        "{}",
        chain(&e)
    );
    let opts = UnsealOptions {
        pcrlock: Some(&file),
        ..Default::default()
    };
    let secret = bootchain::token::unseal(&mut t, &old, &opts).unwrap();
    assert_eq!(bootchain::token::passphrase(&secret).as_bytes(), passphrase);
    let e = bootchain::token::unseal(&mut t, &old, &UnsealOptions::default()).unwrap_err();
    assert!(
        chain(&e).contains("named only in pcrlock.json"),
        "{}",
        chain(&e)
    );
    // A pcrlock.json for a redefined index (another Name): the 255/256 token's policy is
    // bound to the old one, which is named before any TPM command.
    let mut redefined: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&policy_file).unwrap()).unwrap();
    {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut nv = b64.decode(redefined["nvPublic"].as_str().unwrap()).unwrap();
        // TPM2B size (2), nvIndex (4), nameAlg (2), then the attributes: flip TPMA_NV_NO_DA.
        nv[2 + 6] ^= 0x02;
        redefined["nvPublic"] = b64.encode(nv).into();
    }
    let redefined =
        bootchain::pcrlock::PcrlockPolicy::from_json(&serde_json::to_vec(&redefined).unwrap())
            .unwrap();
    let opts = UnsealOptions {
        pcrlock: Some(&redefined),
        ..Default::default()
    };
    let e = bootchain::token::prepare(&old, &opts).unwrap_err();
    assert!(
        matches!(
            e,
            bootchain::token::TokenError::Unsupported(
                bootchain::token::UnsupportedToken::PcrlockRedefined { index: 0x0180_0c00 }
            )
        ),
        "{e:?}"
    );
    drop(t);

    // A forged pcrlock.json. One that predicts another value for PCR 13 fails bootchain's own
    // PCR check, and since the index holds another policy than the file describes, that is
    // what is reported. One that keeps every current value but changes a branch passes the
    // PCR check and PolicyOR; the TPM refuses PolicyAuthorizeNV (the session is not the
    // index's policy): named, with the TPM's refusal.
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&policy_file).unwrap()).unwrap();
    let forged_file = w.join("forged.json");
    let forge = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = original.clone();
        f(&mut v);
        std::fs::write(&forged_file, serde_json::to_vec(&v).unwrap()).unwrap();
        let out = unlock(&forged_file);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let pcr13 = |v: &serde_json::Value| {
        v["pcrValues"]
            .as_array()
            .unwrap()
            .iter()
            .position(|e| e["pcr"] == 13)
            .unwrap()
    };
    let err = forge(&|v| {
        let i = pcr13(v);
        v["pcrValues"][i]["values"][0] = "22".repeat(32).into();
    });
    assert!(
        err.contains("is not the one pcrlock.json describes"),
        "{err}"
    );
    let current12 = {
        let mut t = Tpm::open(&tcti).unwrap();
        t.read_pcrs(&[(HashAlg::Sha256, 12)]).unwrap()[&(HashAlg::Sha256, 12)].to_hex()
    };
    let err = forge(&|v| {
        let i = v["pcrValues"]
            .as_array()
            .unwrap()
            .iter()
            .position(|e| e["pcr"] == 12)
            .unwrap();
        v["pcrValues"][i]["values"] = serde_json::json!([current12, "11".repeat(32)]);
    });
    assert!(
        err.contains("is not the one pcrlock.json describes") && err.contains("PolicyAuthorizeNV"),
        "{err}"
    );

    // This boot measures something pcrlock did not predict into PCR 12: named.
    run_ok(
        sw.tool("tpm2_pcrextend")
            .arg(format!("12:sha256={}", "33".repeat(32))),
    );
    let out = unlock(&policy_file);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PCR 12 (sha256) is ")
            && err.contains("not among the 2 value(s) pcrlock.json predicts"),
        "{err}"
    );
}
