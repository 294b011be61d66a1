//! The CLI on bad input: a clear error, a non-zero exit, no panic, and no output file (not even
//! a temporary one) left behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../../../tests/common/swtpm.rs"]
#[allow(dead_code)]
mod swtpm;

/// Fail loudly (not skip) when a peer tool is missing: `./scripts/test` installs them all.
fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "peer tool `{tool}` is not installed; run ./scripts/test"
    );
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bootchain"))
}

fn openssl_key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let crt = dir.join(format!("{name}.crt"));
    let ok = Command::new("openssl")
        .args([
            "req", "-new", "-x509", "-nodes", "-days", "3", "-newkey", "rsa:2048",
        ])
        .arg("-subj")
        .arg(format!("/CN={name}/"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "openssl req failed");
    (key, crt)
}

/// Run, expect failure with `needle` in stderr, and no file in `dir` but the `keep` ones.
fn expect_failure(cmd: &mut Command, needle: &str, dir: &Path, keep: &[&str]) -> Output {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{cmd:?} succeeded; stderr: {err}");
    assert!(!err.contains("panicked"), "{cmd:?} panicked: {err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "{cmd:?}: stderr lacks {needle:?}: {err}"
    );
    let mut left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    left.sort();
    assert!(left.is_empty(), "{cmd:?} left files behind: {left:?}");
    out
}

struct Env {
    _tmp: tempfile::TempDir,
    inputs: PathBuf,
    out: PathBuf,
}

fn env() -> Env {
    assert!(
        Path::new(STUB).exists(),
        "install systemd-boot-efi (./scripts/test does)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("in");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(inputs.join("kernel"), b"MZ not really a kernel").unwrap();
    std::fs::write(inputs.join("initrd"), vec![7u8; 1000]).unwrap();
    Env {
        _tmp: tmp,
        inputs,
        out,
    }
}

/// A build without a kernel, on the Debian 12 UKI stub (without `--linux` the default stub
/// would be the addon stub, which systemd-boot-efi 252 does not ship); `extra` may override
/// `--stub` (the last one wins, as with ukify).
fn build(e: &Env, extra: &[&str]) -> Command {
    let mut c = bin();
    c.args(["uki", "build", "--os-release", "ID=test"])
        .args(["--stub", "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"])
        .arg("--initrd")
        .arg(e.inputs.join("initrd"))
        .arg("--output")
        .arg(e.out.join("uki.efi"))
        .args(extra);
    c
}

#[test]
fn missing_input_file() {
    let e = env();
    expect_failure(
        &mut build(&e, &["--linux", "/nonexistent/vmlinuz"]),
        "/nonexistent/vmlinuz",
        &e.out,
        &[],
    );
    // Positive control: an existing kernel file.
    run_ok(&mut build(
        &e,
        &["--linux", e.inputs.join("kernel").to_str().unwrap()],
    ));
}

#[test]
fn non_pe_stub() {
    let e = env();
    let stub = e.inputs.join("stub");
    std::fs::write(&stub, b"#!/bin/sh\necho not a PE\n").unwrap();
    expect_failure(
        &mut build(&e, &["--stub", stub.to_str().unwrap()]),
        "not a usable PE image",
        &e.out,
        &[],
    );
    run_ok(&mut build(&e, &["--stub", STUB]));
}

#[test]
fn truncated_stub() {
    let e = env();
    let full = std::fs::read(STUB).unwrap();
    for len in [0x30usize, 0x100, 0x300, 0x8000] {
        let stub = e.inputs.join("stub");
        std::fs::write(&stub, &full[..len]).unwrap();
        expect_failure(
            &mut build(&e, &["--stub", stub.to_str().unwrap()]),
            "truncated",
            &e.out,
            &[],
        );
    }
    // Positive control: the whole stub, copied the same way.
    let stub = e.inputs.join("stub");
    std::fs::write(&stub, &full).unwrap();
    run_ok(&mut build(&e, &["--stub", stub.to_str().unwrap()]));
}

#[test]
fn no_spare_header_room() {
    let e = env();
    // The Debian 252 stub has room for 7 new section headers; ask for 9.
    let mut args = vec![];
    for i in 0..8 {
        args.push("--section".to_string());
        args.push(format!(".x{i}:data{i}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    expect_failure(
        &mut build(&e, &args),
        "not enough header space",
        &e.out,
        &[],
    );
    // Positive control: three fewer sections fit.
    run_ok(&mut build(&e, &args[..args.len() - 6]));
}

#[test]
fn section_name_too_long() {
    let e = env();
    expect_failure(
        &mut build(&e, &["--section", ".waytoolong:x"]),
        "longer than 8",
        &e.out,
        &[],
    );
    run_ok(&mut build(&e, &["--section", ".waytool:x"]));
}

#[test]
fn already_signed_stub_is_refused() {
    let e = env();
    let (key, crt) = openssl_key(&e.inputs, "db");
    let signed = e.inputs.join("stub.signed");
    let ok = bin()
        .args(["pe", "sign", STUB, "--key"])
        .arg(&key)
        .arg("--cert")
        .arg(&crt)
        .arg("--output")
        .arg(&signed)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    expect_failure(
        &mut build(&e, &["--stub", signed.to_str().unwrap()]),
        "already signed",
        &e.out,
        &[],
    );
    run_ok(&mut build(&e, &["--stub", STUB]));
}

#[test]
fn key_not_matching_certificate() {
    let e = env();
    let (key, crt_a) = openssl_key(&e.inputs, "a");
    let (_, crt) = openssl_key(&e.inputs, "b");
    expect_failure(
        &mut build(
            &e,
            &[
                "--secureboot-private-key",
                key.to_str().unwrap(),
                "--secureboot-certificate",
                crt.to_str().unwrap(),
            ],
        ),
        "does not match the certificate",
        &e.out,
        &[],
    );
    let mut c = bin();
    c.args(["pe", "sign", STUB, "--key"])
        .arg(&key)
        .arg("--cert")
        .arg(&crt)
        .arg("--output")
        .arg(e.out.join("signed.efi"));
    expect_failure(&mut c, "does not match the certificate", &e.out, &[]);
    // Positive control: the key with its own certificate.
    run_ok(&mut build(
        &e,
        &[
            "--secureboot-private-key",
            key.to_str().unwrap(),
            "--secureboot-certificate",
            crt_a.to_str().unwrap(),
        ],
    ));
    run_ok(
        bin()
            .args(["pe", "sign", STUB, "--key"])
            .arg(&key)
            .arg("--cert")
            .arg(&crt_a)
            .arg("--output")
            .arg(e.out.join("signed.efi")),
    );
}

#[test]
fn unreadable_key() {
    let e = env();
    let (good, crt) = openssl_key(&e.inputs, "a");
    let garbage = e.inputs.join("garbage.key");
    std::fs::write(
        &garbage,
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    for k in [garbage.clone(), e.inputs.join("missing.key")] {
        let mut c = bin();
        c.args(["pe", "sign", STUB, "--key"])
            .arg(&k)
            .arg("--cert")
            .arg(&crt)
            .arg("--output")
            .arg(e.out.join("signed.efi"));
        expect_failure(
            &mut c,
            k.file_name().unwrap().to_str().unwrap(),
            &e.out,
            &[],
        );
    }
    // Positive control: a readable key that matches.
    run_ok(
        bin()
            .args(["pe", "sign", STUB, "--key"])
            .arg(&good)
            .arg("--cert")
            .arg(&crt)
            .arg("--output")
            .arg(e.out.join("signed.efi")),
    );
}

#[test]
fn verify_of_unsigned_or_tampered_image_exits_non_zero() {
    let e = env();
    expect_failure(
        bin().args(["pe", "verify", STUB]),
        "not signed",
        &e.out,
        &[],
    );
    let (key, crt) = openssl_key(&e.inputs, "db");
    let signed = e.out.join("stub.signed");
    assert!(bin()
        .args(["pe", "sign", STUB, "--key"])
        .arg(&key)
        .arg("--cert")
        .arg(&crt)
        .arg("-o")
        .arg(&signed)
        .status()
        .unwrap()
        .success());
    assert!(bin()
        .args(["pe", "verify", "--cert"])
        .arg(&crt)
        .arg(&signed)
        .status()
        .unwrap()
        .success());
    let mut b = std::fs::read(&signed).unwrap();
    b[0x500] ^= 1;
    std::fs::write(&signed, b).unwrap();
    let out = bin()
        .args(["pe", "verify", "--cert"])
        .arg(&crt)
        .arg(&signed)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("image hash mismatch"));
}

#[test]
fn hash_of_non_pe_is_an_error() {
    let e = env();
    expect_failure(
        bin().args(["pe", "hash"]).arg(e.inputs.join("initrd")),
        "no MZ signature",
        &e.out,
        &[],
    );
    run_ok(bin().args(["pe", "hash", STUB]));
}

/// TPM and LUKS commands on bad input: a missing TPM device, an absent or out-of-range PCR
/// list, malformed envelopes, a file that is not LUKS2. Each fails with the reason and writes
/// nothing; each has a positive control: the same command with the one bad thing fixed (a
/// working swtpm, a valid PCR list, a valid envelope, a LUKS2 image) succeeds.
#[test]
fn seal_and_luks_bad_input() {
    let e = env();
    let sw = swtpm::Swtpm::start();
    let tpm = sw.tcti();
    let missing_tpm = "device:/dev/bootchain-no-such-tpm";
    // Controls write into their own directory; `e.out` must stay empty.
    let ok_dir = e.inputs.join("ok");
    std::fs::create_dir(&ok_dir).unwrap();
    let sealed = ok_dir.join("root.sealed");
    let seal = |args: &[&str], tcti: &str, out: &Path| {
        let mut c = bin();
        c.arg("seal")
            .args(args)
            .args(["--random", "--tcti", tcti, "-o"])
            .arg(out);
        c
    };
    let out_file = e.out.join("root.sealed");
    for (args, needle) in [
        (
            &["--pcrs", "7"][..],
            "/dev/bootchain-no-such-tpm does not exist",
        ),
        (&[][..], "give --pcrs, --pcr-public-key, or both"),
        (&["--pcrs", "7+24"][..], "out of range"),
    ] {
        expect_failure(&mut seal(args, missing_tpm, &out_file), needle, &e.out, &[]);
    }
    run_ok(&mut seal(&["--pcrs", "7"], &tpm, &sealed));
    run_ok(&mut seal(
        &["--pcrs", "7+23"],
        &tpm,
        &ok_dir.join("b.sealed"),
    ));

    // Malformed envelopes are refused before the TPM is opened.
    for (text, needle) in [
        ("not json", "malformed sealed envelope"),
        ("{\"format\": \"other\"}", "malformed sealed envelope"),
        (
            r#"{"format":"bootchain-sealed","version":9,"parent":{"kind":"srk","name":""},
               "policy":{"digest":"","bank":"sha256","pcrs":[],"values":{}},
               "tpm":{"private":"","public":""},
               "payload":{"alg":"A256GCM","nonce":"","ciphertext":""}}"#,
            "version 9",
        ),
    ] {
        let env_file = e.inputs.join("bad.sealed");
        std::fs::write(&env_file, text).unwrap();
        expect_failure(
            bin()
                .args(["unseal", "--tcti", &tpm])
                .arg(&env_file)
                .arg("-o")
                .arg(e.out.join("secret")),
            needle,
            &e.out,
            &[],
        );
    }
    run_ok(
        bin()
            .args(["unseal", "--tcti", &tpm])
            .arg(&sealed)
            .arg("-o")
            .arg(ok_dir.join("secret")),
    );
    assert_eq!(std::fs::read(ok_dir.join("secret")).unwrap().len(), 32);

    // Not a LUKS2 header. (`luks unlock` and `luks enroll` open the TPM before they read
    // the header: tests/luks.rs not_a_luks2_header_is_refused_with_a_working_tpm.)
    let not_luks = e.inputs.join("plain.img");
    std::fs::write(&not_luks, vec![0u8; 1 << 20]).unwrap();
    expect_failure(
        bin().args(["luks", "list"]).arg(&not_luks),
        "no LUKS2 header",
        &e.out,
        &[],
    );
    assert_eq!(std::fs::read(&not_luks).unwrap(), vec![0u8; 1 << 20]);
    require_tool("cryptsetup");
    let luks = e.inputs.join("luks.img");
    std::fs::File::create(&luks)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    run_ok(
        Command::new("cryptsetup")
            .args(["luksFormat", "--type", "luks2", "--batch-mode"])
            .args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
            .arg("--key-file")
            .arg(e.inputs.join("initrd"))
            .arg(&luks),
    );
    run_ok(bin().args(["luks", "list"]).arg(&luks));
}

/// `generate man` writes a page per visible command from the clap definition (hidden ones,
/// such as `generate` itself, are left out) and `generate completions` a script per shell;
/// `generate` does not show in --help. scripts/package ships both.
#[test]
fn generate_man_pages_and_completions() {
    let d = tempfile::tempdir().unwrap();
    let man = d.path().join("man");
    run_ok(bin().args(["generate", "man"]).arg(&man));
    let build = std::fs::read_to_string(man.join("bootchain-uki-build.1")).unwrap();
    assert!(build.contains(".TH bootchain-uki-build 1"), "{build}");
    assert!(build.contains("secureboot\\-private\\-key"), "{build}");
    for page in [
        "bootchain.1",
        "bootchain-uki.1",
        "bootchain-seal.1",
        "bootchain-pcr-predict.1",
    ] {
        assert!(man.join(page).is_file(), "no {page}");
    }
    assert!(!man.join("bootchain-generate.1").exists());
    let bash = run_ok(bin().args(["generate", "completions", "bash"]));
    assert!(bash.contains("-F _bootchain"), "{bash}");
    let zsh = run_ok(bin().args(["generate", "completions", "zsh"]));
    assert!(zsh.starts_with("#compdef bootchain"), "{zsh}");
    let fish = run_ok(bin().args(["generate", "completions", "fish"]));
    assert!(fish.contains("complete -c bootchain"), "{fish}");
    let help = run_ok(bin().arg("--help"));
    assert!(!help.contains("generate"), "{help}");
    expect_failure(
        bin().args(["generate", "completions", "tcsh"]),
        "invalid value",
        d.path(),
        &["man"],
    );
}
