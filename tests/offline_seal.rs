//! Offline sealing (`--tpm2-device-key`): objects wrapped for a TPM known only by its SRK's
//! public area, with no TPM at hand, then imported by the target TPM at unseal.
//! - a bootchain envelope sealed offline unseals on its swtpm and on no other;
//! - tpm2-tools (the oracle) imports, loads and unseals our blobs, for an ECC and an RSA parent;
//! - systemd-cryptenroll 257 `--tpm2-device-key` tokens unlock with `bootchain luks unlock`,
//!   and so do bootchain's own offline tokens;
//! - parents that cannot import (not a storage key, garbage) are refused before anything is
//!   written;
//! - the endorsement key (`tpm srk-public --ek`, byte-identical to `tpm2_createek`'s) is a
//!   parent too: its objects import and unseal through PolicySecret(endorsement).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use bootchain::hash::{Digest, HashAlg};
use bootchain::policy::{PcrBinding, PcrSelection};
use bootchain::tpm_import::{seal_for_import, ParentPublic};
use common::swtpm::Swtpm;
use common::*;

/// A TCTI nothing listens on: the offline steps must not need a TPM.
const NO_TPM: &str = "swtpm:host=127.0.0.1,port=1";

fn bc(args: &[&str], tcti: &str) -> Output {
    run(Command::new(bootchain_bin())
        .args(args)
        .env("BOOTCHAIN_TCTI", tcti)
        .env_remove("BOOTCHAIN_PIN"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The SRK public area of `sw` as `bootchain tpm srk-public` writes it.
fn srk_public(sw: &Swtpm, out: &Path) {
    let o = bc(
        &["tpm", "srk-public", "-o", out.to_str().unwrap()],
        &sw.tcti(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

fn zero_pcr_values(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("values.json");
    let z = "0".repeat(64);
    std::fs::write(&p, format!(r#"{{"sha256": {{"7": "{z}", "11": "{z}"}}}}"#)).unwrap();
    p
}

#[test]
fn offline_envelope_unseals_on_its_tpm_only() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let (target, other) = (Swtpm::start(), Swtpm::start());
    srk_public(&target, &d.path().join("srk.pub"));
    let values = zero_pcr_values(d.path());
    std::fs::write(d.path().join("secret"), b"root volume key").unwrap();

    // No TPM is reachable while sealing.
    let o = bc(
        &[
            "seal",
            "--tpm2-device-key",
            &p("srk.pub"),
            "--pcrs",
            "7+11",
            "--pcr-values",
            values.to_str().unwrap(),
            "--secret",
            &p("secret"),
            "-o",
            &p("env.json"),
        ],
        NO_TPM,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("env.json")).unwrap()).unwrap();
    assert!(
        env["tpm"]["seed"].is_string(),
        "the envelope carries the seed"
    );

    let o = bc(&["unseal", &p("env.json")], &target.tcti());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"root volume key");

    let o = bc(&["unseal", &p("env.json")], &other.tcti());
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("another TPM") || e.contains("parent") || e.contains("Name"),
        "the other TPM's refusal names the cause: {e}"
    );

    // Missing PCR values cannot be read from a TPM that is not there.
    let o = bc(
        &[
            "seal",
            "--tpm2-device-key",
            &p("srk.pub"),
            "--pcrs",
            "7+11",
            "--secret",
            &p("secret"),
            "-o",
            &p("env2.json"),
        ],
        NO_TPM,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("PCR 7+11"), "{}", stderr(&o));
    assert!(!d.path().join("env2.json").exists());
}

#[test]
fn sealed_offline_to_the_endorsement_key() {
    require_tool("tpm2_createek");
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let (target, other) = (Swtpm::start(), Swtpm::start());
    let values = zero_pcr_values(d.path());
    std::fs::write(d.path().join("secret"), b"root volume key").unwrap();
    for (alg, kind) in [("rsa", "ek-rsa-2048"), ("ecc", "ek-ecc-p256")] {
        let ek = p(&format!("ek-{alg}.pub"));
        let o = bc(
            &["tpm", "srk-public", "--ek", alg, "-o", &ek],
            &target.tcti(),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        // The TCG EK template, as tpm2-tools makes it.
        let tools = p(&format!("ek-{alg}-tools.pub"));
        run_ok(target.tool("tpm2_createek").args([
            "-c",
            &p(&format!("ek-{alg}.ctx")),
            "-G",
            alg,
            "-u",
            &tools,
        ]));
        run_ok(target.tool("tpm2_flushcontext").arg("-t"));
        assert_eq!(
            std::fs::read(&ek).unwrap(),
            std::fs::read(&tools).unwrap(),
            "{alg}: bootchain's EK public area is tpm2_createek's"
        );

        let env = p(&format!("env-{alg}.json"));
        let o = bc(
            &[
                "seal",
                "--tpm2-device-key",
                &ek,
                "--pcrs",
                "7+11",
                "--pcr-values",
                values.to_str().unwrap(),
                "--secret",
                &p("secret"),
                "-o",
                &env,
            ],
            NO_TPM,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&env).unwrap()).unwrap();
        assert_eq!(json["parent"]["kind"], kind, "{json}");
        let o = bc(&["unseal", &env], &target.tcti());
        assert!(o.status.success(), "{alg}: {}", stderr(&o));
        assert_eq!(o.stdout, b"root volume key");
        let o = bc(&["unseal", &env], &other.tcti());
        assert!(!o.status.success(), "{alg}: another TPM unsealed it");
    }

    // A systemd-tpm2 token cannot say "under the EK": refused, the image untouched.
    let (img, key) = luks_image(d.path());
    let before = std::fs::read(&img).unwrap();
    let o = bc(
        &[
            "luks",
            "enroll",
            "--tpm2-device-key",
            &p("ek-rsa.pub"),
            "--pcrs",
            "7",
            "--pcr-values",
            values.to_str().unwrap(),
            "--unlock-key-file",
            key.to_str().unwrap(),
            img.to_str().unwrap(),
        ],
        NO_TPM,
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("endorsement key"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&img).unwrap(), before);
}

#[test]
fn parents_that_cannot_import_are_refused_before_writing() {
    require_tool("tpm2_createprimary");
    require_tool("tpm2_readpublic");
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let sw = Swtpm::start();
    // A signing key's public area, a truncated one, and garbage.
    run_ok(sw.tool("tpm2_createprimary").args([
        "-C",
        "o",
        "-G",
        "ecc256",
        "-a",
        "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
        "-c",
        &p("sign.ctx"),
    ]));
    run_ok(
        sw.tool("tpm2_readpublic")
            .args(["-c", &p("sign.ctx"), "-o", &p("sign.pub")]),
    );
    let good = std::fs::read(p("sign.pub")).unwrap();
    std::fs::write(p("short.pub"), &good[..good.len() / 2]).unwrap();
    std::fs::write(p("garbage.pub"), b"not a key").unwrap();
    let values = zero_pcr_values(d.path());
    std::fs::write(p("secret"), b"x").unwrap();
    for (parent, why) in [
        ("sign.pub", "storage key"),
        ("short.pub", "TPM2B_PUBLIC"),
        ("garbage.pub", "TPM2B_PUBLIC"),
    ] {
        let o = bc(
            &[
                "seal",
                "--tpm2-device-key",
                &p(parent),
                "--pcrs",
                "7",
                "--pcr-values",
                values.to_str().unwrap(),
                "--secret",
                &p("secret"),
                "-o",
                &p("out.json"),
            ],
            NO_TPM,
        );
        assert!(!o.status.success(), "{parent} accepted");
        let e = stderr(&o);
        assert!(e.contains(why), "{parent}: {e}");
        assert!(!d.path().join("out.json").exists());
    }
}

/// tpm2-tools imports what bootchain wrapped offline — for the SRK template's ECC key and
/// for an RSA-2048 storage key — loads it and unseals it with a PolicyPCR session.
#[test]
fn tpm2_tools_import_our_offline_blobs() {
    for tool in [
        "tpm2_createprimary",
        "tpm2_readpublic",
        "tpm2_import",
        "tpm2_load",
        "tpm2_unseal",
    ] {
        require_tool(tool);
    }
    let attrs = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda";
    for alg in ["ecc256:null:aes128cfb", "rsa2048:null:aes128cfb"] {
        let d = tempfile::tempdir().unwrap();
        let f = |n: &str| d.path().join(n).to_str().unwrap().to_string();
        let sw = Swtpm::start();
        run_ok(sw.tool("tpm2_createprimary").args([
            "-C",
            "o",
            "-g",
            "sha256",
            "-G",
            alg,
            "-a",
            attrs,
            "-c",
            &f("prim.ctx"),
        ]));
        run_ok(
            sw.tool("tpm2_readpublic")
                .args(["-c", &f("prim.ctx"), "-o", &f("prim.pub")]),
        );
        let parent = ParentPublic::from_tpm2b_public(&std::fs::read(f("prim.pub")).unwrap())
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        // PolicyPCR over sha256:7 at its boot value (zero).
        let binding = PcrBinding {
            selection: PcrSelection::new(HashAlg::Sha256, [bootchain::pcr::PcrIndex::of::<7>()]),
            values: vec![Digest::zero(HashAlg::Sha256)],
        };
        let policy = bootchain::policy::sealing_policy(None, Some(&binding), false).unwrap();
        let blob = seal_for_import(&parent, &policy, b"imported by tpm2-tools", None).unwrap();
        let tpm2b = |b: &[u8]| {
            let mut v = (b.len() as u16).to_be_bytes().to_vec();
            v.extend_from_slice(b);
            v
        };
        std::fs::write(f("obj.pub"), tpm2b(&blob.public)).unwrap();
        std::fs::write(f("obj.dpriv"), tpm2b(&blob.duplicate)).unwrap();
        std::fs::write(f("obj.seed"), tpm2b(&blob.seed)).unwrap();
        run_ok(sw.tool("tpm2_flushcontext").arg("--transient-object"));
        let o = run(sw.tool("tpm2_import").args([
            "-C",
            &f("prim.ctx"),
            "-u",
            &f("obj.pub"),
            "-i",
            &f("obj.dpriv"),
            "-s",
            &f("obj.seed"),
            "-r",
            &f("obj.priv"),
        ]));
        assert!(o.status.success(), "{alg}: tpm2_import: {}", stderr(&o));
        run_ok(sw.tool("tpm2_flushcontext").arg("--transient-object"));
        run_ok(sw.tool("tpm2_load").args([
            "-C",
            &f("prim.ctx"),
            "-u",
            &f("obj.pub"),
            "-r",
            &f("obj.priv"),
            "-c",
            &f("obj.ctx"),
        ]));
        run_ok(sw.tool("tpm2_flushcontext").arg("--transient-object"));
        run_ok(
            sw.tool("tpm2_startauthsession")
                .args(["--policy-session", "-S", &f("s.ctx")]),
        );
        run_ok(
            sw.tool("tpm2_policypcr")
                .args(["-S", &f("s.ctx"), "-l", "sha256:7"]),
        );
        let out = run_ok(sw.tool("tpm2_unseal").args([
            "-c",
            &f("obj.ctx"),
            "-p",
            &format!("session:{}", f("s.ctx")),
        ]));
        assert_eq!(out, "imported by tpm2-tools", "{alg}");
    }
}

/// systemd-cryptenroll 257 `--tpm2-device-key` (no TPM: literal PCR values on the command
/// line) writes a token `bootchain luks unlock` opens on the target TPM; bootchain's own
/// offline token opens there too, and on no other TPM.
#[test]
fn offline_luks_tokens_from_systemd_and_bootchain_unlock() {
    require_tool("mmdebstrap");
    let d = tempfile::tempdir().unwrap();
    let (img, key) = luks_image(d.path());
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (target, other) = (Swtpm::start(), Swtpm::start());
    srk_public(&target, &d.path().join("srk.pub"));
    let z = "0".repeat(64);
    let pcr = format!("--tpm2-pcrs=7:sha256={z}");
    let out = run(&mut trixie_tools(
        d.path(),
        &[],
        &[
            "systemd-cryptenroll",
            "--unlock-key-file=/w/pass",
            "--tpm2-device-key=/w/srk.pub",
            &pcr,
            "/w/disk.img",
        ],
    ));
    assert!(out.status.success(), "{}", stderr(&out));

    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let values = zero_pcr_values(d.path());
    let o = bc(
        &[
            "luks",
            "enroll",
            img.to_str().unwrap(),
            "--unlock-key-file",
            key.to_str().unwrap(),
            "--tpm2-device-key",
            &p("srk.pub"),
            "--pcrs",
            "7",
            "--lock-pcr",
            "none",
            "--pcr-values",
            values.to_str().unwrap(),
        ],
        NO_TPM,
    );
    assert!(o.status.success(), "{}", stderr(&o));

    for id in ["0", "1"] {
        let pass = d.path().join(format!("pass-{id}"));
        let args = [
            "luks",
            "unlock",
            "--token-id",
            id,
            "--passphrase-output",
            pass.to_str().unwrap(),
            img.to_str().unwrap(),
        ];
        let o = bc(&args, &target.tcti());
        assert!(o.status.success(), "token {id}: {}", stderr(&o));
        let slot = if id == "0" { "1" } else { "2" };
        assert!(
            Command::new("cryptsetup")
                .args([
                    "open",
                    "--test-passphrase",
                    "--key-slot",
                    slot,
                    "--key-file"
                ])
                .arg(&pass)
                .arg(&img)
                .status()
                .unwrap()
                .success(),
            "token {id} opens keyslot {slot}"
        );
        std::fs::remove_file(&pass).unwrap();
        let o = bc(&args, &other.tcti());
        assert!(!o.status.success(), "token {id} unlocked on another TPM");
        assert!(!pass.exists());
    }
}
