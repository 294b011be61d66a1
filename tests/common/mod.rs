//! Shared fixtures for the integration tests: the Debian stub, a real Debian kernel, keys made
//! with openssl, and helpers to run the peer tools (sbsign, sbverify, osslsigncode, pesign).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub const STUB: &str = bootchain::uki::DEFAULT_STUB;

pub mod softhsm;
pub mod swtpm;
pub mod tpm_proxy;
pub mod vectors;
pub mod vm;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fail loudly (not skip) when a peer tool is missing: `./scripts/test` installs them all.
pub fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "peer tool `{tool}` is not installed; run ./scripts/test (it installs every test dependency)"
    );
}

pub fn require_stub() -> PathBuf {
    let p = PathBuf::from(STUB);
    assert!(
        p.exists(),
        "{STUB} missing: install systemd-boot-efi (./scripts/test does)"
    );
    p
}

/// A real Debian kernel, fetched once per machine by scripts/fetch-kernel.
pub fn kernel() -> PathBuf {
    static K: OnceLock<PathBuf> = OnceLock::new();
    K.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/fetch-kernel"))
            .output()
            .expect("run scripts/fetch-kernel");
        assert!(
            out.status.success(),
            "scripts/fetch-kernel failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_string());
        assert!(p.exists(), "kernel {p:?} missing");
        p
    })
    .clone()
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A self-signed certificate and key made by openssl. `alg` is e.g. "rsa:2048" or "ec".
pub fn make_key(dir: &Path, name: &str, alg: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let crt = dir.join(format!("{name}.crt"));
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-new", "-x509", "-nodes", "-days", "30", "-subj"])
        .arg(format!("/CN=bootchain test {name}/"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt);
    if alg == "ec" {
        cmd.args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
    } else {
        cmd.args(["-newkey", alg]);
    }
    run_ok(&mut cmd);
    (key, crt)
}

/// A bare RSA-2048 key pair (for PCR policy signing): private PEM and SPKI public PEM.
pub fn make_rsa_keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}-priv.pem"));
    let public = dir.join(format!("{name}-pub.pem"));
    run_ok(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&private),
    );
    run_ok(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public),
    );
    (private, public)
}

/// Deterministic pseudo-random bytes (xorshift), for initrds.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    bootchain::hash::HashAlg::Sha256.digest(data).to_hex()
}

/// The text of a UKI section, as `bootchain::uki::inspect` shows it ("" when absent).
pub fn section_text(uki: &Path, name: &str) -> String {
    bootchain::uki::inspect(uki)
        .unwrap()
        .sections
        .into_iter()
        .find(|s| s.name == name)
        .and_then(|s| s.text)
        .unwrap_or_default()
}

pub fn flip_byte(src: &Path, dst: &Path, offset: u64) {
    let mut b = std::fs::read(src).unwrap();
    b[offset as usize] ^= 0x01;
    std::fs::write(dst, b).unwrap();
}

/// The `bootchain` CLI binary (built by `cargo test` / `cargo build --workspace` alongside
/// the tests, in the same target directory).
pub fn bootchain_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = dir.join("bootchain");
    assert!(
        bin.exists(),
        "{} missing: build the workspace first (cargo build --workspace)",
        bin.display()
    );
    bin
}

/// A command that runs `args` with Debian 13's systemd 257 tools (`scripts/trixie-tools`: a
/// cached mmdebstrap trixie chroot, built on first use, about a minute), `dir` bound at `/w`
/// and the working directory, and only the variables in `env` passed in (by name, never in
/// argv). A machine that cannot build the chroot fails the test with the script's reason.
pub fn trixie_tools(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    require_tool("mmdebstrap");
    let mut c = Command::new(repo_root().join("scripts/trixie-tools"));
    c.arg("--bind").arg(dir);
    for (k, v) in env {
        c.arg("--env").arg(k).env(k, v);
    }
    c.args(args);
    c
}

/// A 32 MiB LUKS2 image with one passphrase keyslot (slot 0; cheap PBKDF for tests), and the
/// file holding its passphrase.
pub fn luks_image(dir: &Path) -> (PathBuf, PathBuf) {
    require_tool("cryptsetup");
    let img = dir.join("disk.img");
    let key = dir.join("pass");
    std::fs::write(&key, b"correct horse battery staple").unwrap();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    run_ok(
        Command::new("cryptsetup")
            .args(["luksFormat", "--type", "luks2", "--batch-mode"])
            .args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
            .arg("--key-file")
            .arg(&key)
            .arg(&img),
    );
    (img, key)
}

/// A sealing request with the defaults the tests share (auto parent, sha256, no signed
/// policy, no PIN); override members with struct update syntax.
pub fn seal_request<'a>(
    pcrs: &'a [u32],
    values: &'a bootchain::eventlog::PcrValues,
) -> bootchain::seal::SealRequest<'a> {
    bootchain::seal::SealRequest {
        parent: bootchain::tpm::ParentChoice::Auto,
        literal: bootchain::seal::LiteralPcrs::select(
            bootchain::hash::HashAlg::Sha256,
            pcrs,
            values,
        )
        .expect("a value for every PCR"),
        authorize: None,
        pin: None,
    }
}

/// A directory for a test binary's shared (`static`) fixture, under the target directory.
/// Statics are never dropped, so it outlives the run: the directories of earlier runs whose
/// process is gone are removed here instead.
#[allow(dead_code)]
pub fn fixture_dir(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let prefix = format!("{name}-fixture-");
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            let file = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = file.strip_prefix(&prefix) {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    let dir = root.join(format!("{prefix}{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
