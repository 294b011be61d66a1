//! A TCP proxy in front of a swtpm that kills the swtpm when the N-th TPM command arrives:
//! the TPM disappears in the middle of an operation, deterministically, at every step.
//!
//! libtss2's swtpm TCTI sends raw TPM commands (header: tag u16, size u32, code u32) on the
//! data port and control messages on port+1; the proxy listens on its own pair, bound by
//! [`bound_pair`] and held until the proxy is dropped (never probed and released).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::swtpm::{bound_pair, Swtpm};

pub struct KillingProxy {
    pub port: u16,
    /// Commands seen so far.
    pub seen: Arc<AtomicUsize>,
    /// Their command codes, in order.
    pub codes: Arc<Mutex<Vec<u32>>>,
    tpm: Arc<Mutex<Swtpm>>,
    stop: Arc<AtomicBool>,
}

impl Drop for KillingProxy {
    /// Kill swtpm and end the accept loops (woken by a connection).
    fn drop(&mut self) {
        self.tpm.lock().unwrap_or_else(|e| e.into_inner()).kill();
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        let _ = TcpStream::connect(("127.0.0.1", self.port + 1));
    }
}

impl KillingProxy {
    /// Proxy to `tpm`; the command numbered `kill_at` (1-based) kills swtpm instead of being
    /// forwarded. `kill_at = 0` never kills (to count an operation's commands).
    pub fn start(tpm: Swtpm, kill_at: usize) -> KillingProxy {
        Self::start_with(tpm, kill_at, None)
    }

    /// Like [`Self::start`]; with `inject = Some((code, command))`, the first time a command
    /// with that code arrives, `command` is sent to swtpm first (its response dropped).
    pub fn start_with(tpm: Swtpm, kill_at: usize, inject: Option<(u32, Vec<u8>)>) -> KillingProxy {
        let inject = Arc::new(Mutex::new(inject));
        let (data, ctrl) = bound_pair();
        let port = data.local_addr().unwrap().port();
        let target = tpm.port;
        let tpm = Arc::new(Mutex::new(tpm));
        let seen = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let codes = Arc::new(Mutex::new(Vec::new()));
        let stop1 = stop.clone();
        std::thread::spawn(move || {
            for c in ctrl.incoming().flatten() {
                if stop1.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", target + 1)) else {
                    continue;
                };
                pipe(c, up);
            }
        });
        let counter = seen.clone();
        let (tpm2, stop2, codes2) = (tpm.clone(), stop.clone(), codes.clone());
        let inject2 = inject.clone();
        std::thread::spawn(move || {
            for c in data.incoming().flatten() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let tpm = tpm2.clone();
                let counter = counter.clone();
                let codes = codes2.clone();
                let inject = inject2.clone();
                std::thread::spawn(move || {
                    serve(c, target, kill_at, &tpm, &counter, &codes, &inject)
                });
            }
        });
        KillingProxy {
            port,
            seen,
            codes,
            tpm,
            stop,
        }
    }

    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
    let (mut a, mut b) = (a, b);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut a, &mut b2);
    });
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut b, &mut a2);
    });
}

fn read_msg(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut h = [0u8; 10];
    s.read_exact(&mut h).ok()?;
    let size = u32::from_be_bytes([h[2], h[3], h[4], h[5]]) as usize;
    let mut m = h.to_vec();
    m.resize(size.max(10), 0);
    s.read_exact(&mut m[10..]).ok()?;
    Some(m)
}

fn serve(
    mut c: TcpStream,
    target: u16,
    kill_at: usize,
    tpm: &Mutex<Swtpm>,
    counter: &AtomicUsize,
    codes: &Mutex<Vec<u32>>,
    inject: &Mutex<Option<(u32, Vec<u8>)>>,
) {
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    while let Some(cmd) = read_msg(&mut c) {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        codes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(u32::from_be_bytes([cmd[6], cmd[7], cmd[8], cmd[9]]));
        if kill_at != 0 && n >= kill_at {
            tpm.lock().unwrap_or_else(|e| e.into_inner()).kill();
            return;
        }
        let code = u32::from_be_bytes([cmd[6], cmd[7], cmd[8], cmd[9]]);
        let extra = {
            let mut g = inject.lock().unwrap_or_else(|e| e.into_inner());
            match g.as_ref() {
                Some((c, _)) if *c == code => g.take().map(|(_, bytes)| bytes),
                _ => None,
            }
        };
        if let Some(extra) = extra {
            if up.write_all(&extra).is_err() || read_msg(&mut up).is_none() {
                return;
            }
        }
        if up.write_all(&cmd).is_err() {
            return;
        }
        let Some(resp) = read_msg(&mut up) else {
            return;
        };
        if c.write_all(&resp).is_err() {
            return;
        }
    }
}
