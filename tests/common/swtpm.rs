//! One swtpm per test, killed on drop. libtss2's swtpm TCTI (`swtpm:host=127.0.0.1,port=P`)
//! talks to a data port P and a control port P+1 (tcti-swtpm.c connects to `port + 1`).
//!
//! No port is ever probed and released: the test process binds both TCP listeners (a pair
//! found by binding port 0 and then the next port, holding every socket until a pair is
//! held) and keeps them for the swtpm's lifetime, forwarding each connection to swtpm's Unix
//! sockets in a private directory. swtpm 0.7 cannot take a listening TCP socket for its data
//! channel (`--server type=tcp,fd=N` reads the fd as one connection), so this is the only way
//! a parallel test can neither steal the port nor reach another test's TPM.
//!
//! Needs `super::require_tool` and `super::run_ok` only, so bins/bootchain/tests/cli.rs can
//! include it by path.

use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The swtpm process, killed and reaped on drop.
struct Guard {
    child: Child,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Swtpm {
    pub port: u16,
    /// swtpm's state directory (only state files: the sockets live elsewhere).
    pub state: PathBuf,
    guard: Option<Guard>,
    _forward: Forwarder,
    _dir: tempfile::TempDir,
}

/// Two TCP listeners on adjacent ports 127.0.0.1:P and P+1, both held. Bind port 0 (the kernel
/// picks a free port P), then try P+1; on failure keep the P listener (so the kernel cannot
/// hand it out again) and retry.
pub fn bound_pair() -> (TcpListener, TcpListener) {
    let mut held = Vec::new();
    for _ in 0..200 {
        let a = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let p = a.local_addr().expect("local address").port();
        if p != u16::MAX {
            if let Ok(b) = TcpListener::bind(("127.0.0.1", p + 1)) {
                return (a, b);
            }
        }
        held.push(a);
    }
    panic!("no pair of adjacent free ports on 127.0.0.1");
}

/// Accept loops on a held listener pair, each connection piped to swtpm's Unix socket for
/// that channel; stopped on drop.
struct Forwarder {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    fn start(data: TcpListener, ctrl: TcpListener, data_sock: PathBuf, ctrl_sock: PathBuf) -> Self {
        let port = data.local_addr().expect("local address").port();
        let stop = Arc::new(AtomicBool::new(false));
        for (l, target) in [(data, data_sock), (ctrl, ctrl_sock)] {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for c in l.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    // swtpm gone (killed): the client sees its connection closed.
                    if let (Ok(c), Ok(up)) = (c, UnixStream::connect(&target)) {
                        pipe(c, up);
                    }
                }
            });
        }
        Forwarder { port, stop }
    }
}

impl Drop for Forwarder {
    /// End both accept loops (woken by a connection); the listeners close with them.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        let _ = TcpStream::connect(("127.0.0.1", self.port + 1));
    }
}

/// Copy both ways; when either side ends, shut both down so each peer sees the end (swtpm
/// serves one connection at a time and must see a client go).
fn pipe(c: TcpStream, up: UnixStream) {
    let (Ok(mut c2), Ok(mut up2)) = (c.try_clone(), up.try_clone()) else {
        return;
    };
    let (mut c, mut up) = (c, up);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c, &mut up);
        let _ = up.shutdown(Shutdown::Both);
        let _ = c.shutdown(Shutdown::Both);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut up2, &mut c2);
        let _ = up2.shutdown(Shutdown::Both);
        let _ = c2.shutdown(Shutdown::Both);
    });
}

impl Swtpm {
    pub fn start() -> Swtpm {
        Self::start_in(None)
    }

    /// A swtpm on an existing state directory (e.g. a VM's vTPM after its boots).
    pub fn start_with_state(state: &std::path::Path) -> Swtpm {
        Self::start_in(Some(state))
    }

    fn start_in(existing: Option<&std::path::Path>) -> Swtpm {
        super::require_tool("swtpm");
        let dir = tempfile::tempdir().unwrap();
        let state = match existing {
            Some(s) => s.to_path_buf(),
            None => {
                let s = dir.path().join("state");
                std::fs::create_dir(&s).unwrap();
                s
            }
        };
        let data_sock = dir.path().join("data.sock");
        let ctrl_sock = dir.path().join("ctrl.sock");
        let (data, ctrl) = bound_pair();
        let port = data.local_addr().unwrap().port();
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2"])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", data_sock.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", ctrl_sock.display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start swtpm");
        let mut g = Guard { child };
        // Ready when both of its sockets (in our private directory) accept.
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = g.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = g.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("swtpm exited ({status}): {err}");
            }
            if UnixStream::connect(&data_sock).is_ok() && UnixStream::connect(&ctrl_sock).is_ok() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "swtpm not ready after 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Swtpm {
            port,
            state,
            guard: Some(g),
            _forward: Forwarder::start(data, ctrl, data_sock, ctrl_sock),
            _dir: dir,
        }
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
        let phase: bootchain::measure::Phase = phase.parse().unwrap();
        let pred = bootchain::measure::predict_uki(
            uki,
            None,
            &[HashAlg::Sha256],
            std::slice::from_ref(&phase),
        )
        .unwrap();
        let mut t = bootchain::tpm::Tpm::open(&self.tcti()).unwrap();
        for e in &pred.events {
            t.extend(11, &[e.digests[&HashAlg::Sha256].clone()])
                .unwrap();
        }
        for word in phase.words() {
            t.extend(11, &[HashAlg::Sha256.digest(word.as_bytes())])
                .unwrap();
        }
        let now = t.read_pcrs(&[(HashAlg::Sha256, 11)]).unwrap()[&(HashAlg::Sha256, 11)].clone();
        assert_eq!(
            Some(&now),
            pred.value(HashAlg::Sha256, &phase),
            "PCR 11 after booting"
        );
        now
    }

    pub fn pid(&self) -> u32 {
        self.guard.as_ref().map(|g| g.child.id()).unwrap_or(0)
    }

    /// Kill swtpm now (to test interrupted operations).
    pub fn kill(&mut self) {
        self.guard = None;
    }
}
