//! One swtpm per test on a free TCP port pair (data P, control P+1, as libtss2's swtpm TCTI
//! expects), killed on drop. TCTI string: `swtpm:host=127.0.0.1,port=P`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::vm::Guard;

pub struct Swtpm {
    pub port: u16,
    _dir: Option<tempfile::TempDir>,
    pub state: PathBuf,
    guard: Option<Guard>,
}

static SPAWN: Mutex<()> = Mutex::new(());

pub fn free_pair() -> Option<u16> {
    for _ in 0..50 {
        let l = TcpListener::bind("127.0.0.1:0").ok()?;
        let p = l.local_addr().ok()?.port();
        if p == u16::MAX {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return Some(p);
        }
    }
    None
}

impl Swtpm {
    pub fn start() -> Swtpm {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().to_path_buf();
        Self::start_in(Some(dir), state)
    }

    /// A swtpm on an existing state directory (e.g. a VM's vTPM after its boots).
    pub fn start_with_state(state: &std::path::Path) -> Swtpm {
        Self::start_in(None, state.to_path_buf())
    }

    fn start_in(dir: Option<tempfile::TempDir>, state: PathBuf) -> Swtpm {
        super::require_tool("swtpm");
        let _lock = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..20 {
            let port = free_pair().expect("no free port pair");
            let child = Command::new("swtpm")
                .args(["socket", "--tpm2"])
                .arg("--tpmstate")
                .arg(format!("dir={}", state.display()))
                .arg("--server")
                .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
                .args(["--flags", "not-need-init,startup-clear"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start swtpm");
            let mut g = Guard {
                child,
                what: "swtpm",
            };
            let start = Instant::now();
            let mut up = false;
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = g.child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && std::net::TcpStream::connect(("127.0.0.1", port + 1)).is_ok()
                {
                    up = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if up {
                return Swtpm {
                    port,
                    _dir: dir,
                    state,
                    guard: Some(g),
                };
            }
        }
        panic!("could not start swtpm");
    }

    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// A tpm2-tools command aimed at this TPM.
    pub fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(name);
        c.env("TPM2TOOLS_TCTI", self.tcti())
            .env("TSS2_LOG", "all+none");
        c
    }

    /// `tpm2_createprimary` in the owner hierarchy: ECC P-256, AES-128-CFB, with `attrs` (the
    /// TCG storage template's shape); its context goes to `ctx`.
    pub fn tools_primary(&self, ctx: &std::path::Path, attrs: &str) {
        super::run_ok(
            self.tool("tpm2_createprimary")
                .args([
                    "-C",
                    "o",
                    "-g",
                    "sha256",
                    "-G",
                    "ecc256:null:aes128cfb",
                    "-a",
                ])
                .arg(attrs)
                .arg("-c")
                .arg(ctx),
        );
    }

    /// With tpm2-tools alone: create an ECC P-256 primary with `attrs` (the TCG template's
    /// shape), load the object from its TPM2B_PUBLIC / TPM2B_PRIVATE bytes, satisfy PolicyPCR
    /// over `pcrs` (e.g. "sha256:7,11") in a policy session and unseal. Returns the primary's
    /// Name and the unsealed data.
    pub fn tpm2_tools_unseal(
        &self,
        dir: &std::path::Path,
        attrs: &str,
        public: &[u8],
        private: &[u8],
        pcrs: &str,
    ) -> (Vec<u8>, Vec<u8>) {
        use super::run_ok;
        let f = |n: &str| dir.join(n);
        std::fs::write(f("obj.pub"), public).unwrap();
        std::fs::write(f("obj.priv"), private).unwrap();
        self.tools_primary(&f("prim.ctx"), attrs);
        run_ok(
            self.tool("tpm2_readpublic")
                .arg("-c")
                .arg(f("prim.ctx"))
                .arg("-n")
                .arg(f("prim.name")),
        );
        run_ok(self.tool("tpm2_flushcontext").arg("--transient-object"));
        run_ok(
            self.tool("tpm2_load")
                .arg("-C")
                .arg(f("prim.ctx"))
                .arg("-u")
                .arg(f("obj.pub"))
                .arg("-r")
                .arg(f("obj.priv"))
                .arg("-c")
                .arg(f("obj.ctx")),
        );
        run_ok(self.tool("tpm2_flushcontext").arg("--transient-object"));
        run_ok(
            self.tool("tpm2_startauthsession")
                .arg("--policy-session")
                .arg("-S")
                .arg(f("s.ctx")),
        );
        run_ok(
            self.tool("tpm2_policypcr")
                .arg("-S")
                .arg(f("s.ctx"))
                .args(["-l", pcrs]),
        );
        run_ok(
            self.tool("tpm2_unseal")
                .arg("-c")
                .arg(f("obj.ctx"))
                .arg("-p")
                .arg(format!("session:{}", f("s.ctx").display()))
                .arg("-o")
                .arg(f("unsealed")),
        );
        run_ok(self.tool("tpm2_flushcontext").arg(f("s.ctx")));
        (
            std::fs::read(f("prim.name")).unwrap(),
            std::fs::read(f("unsealed")).unwrap(),
        )
    }

    /// "Boot" `uki` on this TPM: extend sha256 PCR 11 with the events predicted for it, then
    /// each word of the phase path (as systemd-pcrphase does). Asserts the TPM now holds the
    /// predicted value, and returns it.
    pub fn boot_uki(&self, uki: &std::path::Path, phase: &str) -> bootchain::hash::Digest {
        use bootchain::hash::HashAlg;
        let pred = bootchain::measure::predict_uki(uki, None, &[HashAlg::Sha256], &[phase.into()])
            .unwrap();
        let mut t = bootchain::tpm::Tpm::open(&self.tcti()).unwrap();
        for e in &pred.events {
            t.extend(11, &[e.digests[&HashAlg::Sha256].clone()])
                .unwrap();
        }
        for word in phase.split(':').filter(|w| !w.is_empty()) {
            t.extend(11, &[HashAlg::Sha256.digest(word.as_bytes())])
                .unwrap();
        }
        let now = t.read_pcrs(&[(HashAlg::Sha256, 11)]).unwrap()[&(HashAlg::Sha256, 11)].clone();
        assert_eq!(
            Some(&now),
            pred.value(HashAlg::Sha256, phase),
            "PCR 11 after booting"
        );
        now
    }

    pub fn pid(&self) -> u32 {
        self.guard.as_ref().map(|g| g.pid()).unwrap_or(0)
    }

    /// Kill swtpm now (to test interrupted operations).
    pub fn kill(&mut self) {
        self.guard = None;
    }
}
