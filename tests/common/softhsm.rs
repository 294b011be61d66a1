//! A throw-away SoftHSM2 token per test: its own `SOFTHSM2_CONF` and token directory in a
//! tempdir, initialised here with `softhsm2-util`. Keys are made by openssl (so the same key
//! also exists as a file, to compare signatures) and imported; certificates are written with
//! `pkcs11-tool` (opensc). Everything that touches the token runs as a child process with
//! [`SoftHsm::env`]: SoftHSM reads its configuration once per process.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{require_tool, run_ok};

/// Debian's SoftHSM2 module (package `softhsm2`).
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const PIN: &str = "123456";
const SO_PIN: &str = "12345678";
pub const TOKEN: &str = "bootchain test";

pub struct SoftHsm {
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
    conf: PathBuf,
}

impl SoftHsm {
    /// A fresh initialised token labelled [`TOKEN`] with user PIN [`PIN`].
    pub fn new() -> SoftHsm {
        require_tool("softhsm2-util");
        require_tool("pkcs11-tool");
        require_tool("openssl");
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} missing: install softhsm2 (./scripts/install-deps does)"
        );
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_path_buf();
        std::fs::create_dir(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        let h = SoftHsm { _dir: d, dir, conf };
        run_ok(h.cmd("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            TOKEN,
            "--pin",
            PIN,
            "--so-pin",
            SO_PIN,
        ]));
        h
    }

    /// The environment a process needs to see this token.
    pub fn env(&self) -> [(&'static str, &Path); 1] {
        [("SOFTHSM2_CONF", self.conf.as_path())]
    }

    pub fn cmd(&self, prog: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(prog);
        c.envs(self.env())
            .env_remove("BOOTCHAIN_PKCS11_PIN")
            .env_remove("BOOTCHAIN_PKCS11_MODULE");
        c
    }

    fn pkcs11_tool(&self) -> Command {
        let mut c = self.cmd("pkcs11-tool");
        c.args([
            "--module",
            MODULE,
            "--token-label",
            TOKEN,
            "--login",
            "--pin",
            PIN,
        ]);
        c
    }

    /// Import a PEM private key (made by openssl) as `label` with CKA_ID `id` (hex): the
    /// private and public key objects.
    pub fn import_key(&self, key: &Path, label: &str, id: &str) {
        let p8 = self.dir.join(format!("{label}.p8"));
        run_ok(
            Command::new("openssl")
                .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
                .arg(key)
                .arg("-out")
                .arg(&p8),
        );
        run_ok(
            self.cmd("softhsm2-util")
                .arg("--import")
                .arg(&p8)
                .args(["--token", TOKEN, "--label", label, "--id", id, "--pin", PIN]),
        );
        std::fs::remove_file(&p8).unwrap();
    }

    /// Store a PEM certificate as a certificate object `label` with CKA_ID `id` (hex).
    pub fn import_cert(&self, cert: &Path, label: &str, id: &str) {
        let der = self.dir.join(format!("{label}.der"));
        run_ok(
            Command::new("openssl")
                .args(["x509", "-outform", "DER", "-in"])
                .arg(cert)
                .arg("-out")
                .arg(&der),
        );
        run_ok(
            self.pkcs11_tool()
                .args(["--write-object"])
                .arg(&der)
                .args(["--type", "cert", "--label", label, "--id", id]),
        );
    }

    /// Generate a key pair inside the token (`spec` as pkcs11-tool: "EC:prime256v1").
    pub fn generate_key(&self, spec: &str, label: &str, id: &str) {
        run_ok(self.pkcs11_tool().args([
            "--keypairgen",
            "--key-type",
            spec,
            "--label",
            label,
            "--id",
            id,
        ]));
    }

    /// Generate a secret (AES) key object.
    pub fn generate_secret(&self, label: &str, id: &str) {
        run_ok(self.pkcs11_tool().args([
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            label,
            "--id",
            id,
        ]));
    }

    /// `pkcs11:` URI of object `label` with the module and `query` (say, a PIN source).
    pub fn uri(&self, path_attrs: &str, query: &str) -> String {
        let token = TOKEN.replace(' ', "%20");
        let mut u = format!("pkcs11:token={token};{path_attrs}?module-path={MODULE}");
        if !query.is_empty() {
            u.push('&');
            u.push_str(query);
        }
        u
    }

    /// A file holding the PIN, for `pin-source`.
    pub fn pin_file(&self) -> PathBuf {
        let p = self.dir.join("pin");
        std::fs::write(&p, format!("{PIN}\n")).unwrap();
        p
    }
}
