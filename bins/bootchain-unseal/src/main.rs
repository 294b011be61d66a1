//! `bootchain-unseal`: the initramfs side. Unseals a bootchain envelope, or the passphrase of a
//! LUKS2 volume's `systemd-tpm2` / `bootchain-tpm2` token, and writes it to stdout (for a
//! crypttab keyscript) or to a file (mode 0600). Nothing else is printed on stdout; errors go
//! to stderr with the reason (which PCRs differ, unsigned PCR values, PIN tries left).
//!
//! After every attempt — success or not — it **locks** this boot: it extends the lock PCRs
//! (`bootchain::seal::lock_pcrs`: PCRs 11 and 15, whatever the token covered) so
//! that nothing later in this boot (the real root, a rescue shell, an `init` the host put on
//! a swapped disk) can unseal again. If the lock cannot be made, the secret is withheld.
//!
//! ```text
//! bootchain-unseal [OPTIONS] ENVELOPE
//! bootchain-unseal [OPTIONS] --luks DEVICE
//! bootchain-unseal [--tcti T] --lock
//!   --tcti T           TPM (default $BOOTCHAIN_TCTI, else device:/dev/tpmrm0)
//!   --pcrsig FILE      signed PCR policies (default /run/systemd/tpm2-pcr-signature.json,
//!                      then /.extra/tpm2-pcr-signature.json, where systemd-stub puts .pcrsig)
//!   --pin-file FILE    PIN (else $BOOTCHAIN_PIN, else --ask-pin)
//!   --pcrlock-policy FILE
//!                      systemd-pcrlock's policy, for tokens enrolled with --tpm2-pcrlock
//!                      (default /run/systemd/pcrlock.json, then /var/lib/systemd/pcrlock.json)
//!   --ask-pin PROGRAM  ask for a PIN when one is needed: PROGRAM PROMPT prints it on stdout
//!                      (/lib/cryptsetup/askpass, systemd-ask-password)
//!   --token-id N       only this LUKS2 token
//!   --tpm-wait SECS    wait up to SECS for a device TPM to appear (default 10)
//!   --no-lock          do not lock the boot afterwards (only for several volumes in one boot:
//!                      run --lock after the last)
//!   --lock             only lock this boot (before a passphrase prompt, say)
//!   --reply-password SOCKET
//!                      answer a systemd password request: send the secret to its socket
//!                      (systemd.io/PASSWORD_AGENTS) instead of printing it
//!   -o FILE            write here instead of stdout
//! ```
//! Exit status: 0 unsealed (or locked), 1 refused or failed, 2 usage.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use bootchain::measure::PcrSignatures;
use bootchain::tpm::Tpm;
use zeroize::Zeroizing;

/// How long to wait for `/dev/tpmrm0` by default: TPM drivers may probe after the initramfs
/// starts (tpm_crb/tpm_tis as modules).
const DEFAULT_TPM_WAIT: Duration = Duration::from_secs(10);

struct Opts {
    target: Option<PathBuf>,
    luks: bool,
    tcti: Option<String>,
    pcrsig: Option<PathBuf>,
    pin_file: Option<PathBuf>,
    pcrlock: Option<PathBuf>,
    ask_pin: Option<PathBuf>,
    token_id: Option<u32>,
    output: Option<PathBuf>,
    reply_socket: Option<PathBuf>,
    tpm_wait: Duration,
    lock: bool,
    lock_only: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            target: None,
            luks: false,
            tcti: None,
            pcrsig: None,
            pin_file: None,
            pcrlock: None,
            ask_pin: None,
            token_id: None,
            output: None,
            reply_socket: None,
            tpm_wait: DEFAULT_TPM_WAIT,
            lock: true,
            lock_only: false,
        }
    }
}

const USAGE: &str = "usage: bootchain-unseal [--tcti T] [--pcrsig FILE] [--pin-file FILE] [--pcrlock-policy FILE] [--ask-pin PROGRAM] [--tpm-wait SECS] [--no-lock] [-o FILE] (ENVELOPE | --luks DEVICE [--token-id N]) | --lock";

fn parse(mut args: impl Iterator<Item = String>) -> Result<Opts, String> {
    let mut o = Opts::default();
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--luks" => {
                o.luks = true;
                o.target = Some(PathBuf::from(value("--luks")?));
            }
            "--tcti" => o.tcti = Some(value("--tcti")?),
            "--pcrsig" => o.pcrsig = Some(PathBuf::from(value("--pcrsig")?)),
            "--pin-file" => o.pin_file = Some(PathBuf::from(value("--pin-file")?)),
            "--pcrlock-policy" => o.pcrlock = Some(PathBuf::from(value("--pcrlock-policy")?)),
            "--ask-pin" => o.ask_pin = Some(PathBuf::from(value("--ask-pin")?)),
            "--token-id" => {
                let v = value("--token-id")?;
                o.token_id = Some(v.parse().map_err(|_| format!("--token-id {v:?}"))?);
            }
            "--tpm-wait" => {
                let v = value("--tpm-wait")?;
                let secs: u64 = v.parse().map_err(|_| format!("--tpm-wait {v:?}"))?;
                o.tpm_wait = Duration::from_secs(secs.min(600));
            }
            "--no-lock" => o.lock = false,
            "--lock" => o.lock_only = true,
            "-o" | "--output" => o.output = Some(PathBuf::from(value("-o")?)),
            "--reply-password" => o.reply_socket = Some(PathBuf::from(value("--reply-password")?)),
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ if o.target.is_none() => o.target = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    if o.lock_only {
        if o.target.is_some() {
            return Err("--lock takes no envelope or device".into());
        }
        return Ok(o);
    }
    if o.target.is_none() {
        return Err("give an envelope, --luks DEVICE, or --lock".into());
    }
    Ok(o)
}

/// An error and its sources, "a: b: c", each printed once.
fn chain(e: &dyn std::error::Error) -> String {
    bootchain::error::Chain(e).to_string()
}

/// The envelope, which the host may have planted: read at most `MAX_JSON_INPUT` bytes of it,
/// so a huge or sparse file cannot stall or exhaust the initramfs.
fn read_json(path: &Path) -> Result<Vec<u8>, String> {
    bootchain::fsutil::read_bounded(path, bootchain::fsutil::MAX_JSON_INPUT)
        .map_err(|e| format!("reading {}: {e}", path.display()))
}

fn signatures(o: &Opts) -> Result<Option<PcrSignatures>, String> {
    match &o.pcrsig {
        Some(p) => bootchain::measure::read_signatures(p).map(Some),
        None => bootchain::measure::default_signatures(),
    }
    .map_err(|e| chain(&e))
}

/// systemd-pcrlock's policy file: the one given must parse; a default one that does not is
/// reported and skipped (only pcrlock tokens need it, and they then say what is missing).
fn pcrlock(o: &Opts) -> Result<Option<bootchain::pcrlock::PcrlockPolicy>, String> {
    use bootchain::pcrlock;
    match &o.pcrlock {
        Some(p) => pcrlock::PcrlockPolicy::load(p)
            .map(Some)
            .map_err(|e| chain(&e)),
        None => Ok(pcrlock::default_policy().unwrap_or_else(|e| {
            eprintln!("bootchain-unseal: ignoring {}", chain(&e));
            None
        })),
    }
}

fn pin(o: &Opts) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    match &o.pin_file {
        Some(f) => bootchain::pin::read_pin_file(f).map(Some),
        None => bootchain::pin::pin_from_env(),
    }
    .map_err(|e| chain(&e))
}

/// Ask for the PIN with the initramfs' password program (its prompt on the console, the
/// answer on its stdout). Its environment has no PIN in it.
fn ask_pin(program: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let out = Command::new(program)
        .arg("Enter the TPM PIN to unlock the disk: ")
        .env_remove("BOOTCHAIN_PIN")
        .stdin(Stdio::inherit())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    match bootchain::pin::normalize_pin(Zeroizing::new(out.stdout)) {
        Ok(pin) if out.status.success() => Ok(pin),
        _ => Err(format!("{} gave no PIN", program.display())),
    }
}

/// Wait (bounded) for a device TPM's node: drivers may still be probing.
fn wait_for_device(tcti: &str, wait: Duration) {
    let Some(dev) = tcti.strip_prefix("device:") else {
        return;
    };
    let path = if dev.is_empty() { "/dev/tpm0" } else { dev };
    let start = Instant::now();
    while !Path::new(path).exists() && start.elapsed() < wait {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An unsealed secret and the PCRs its policy covers.
type Unsealed = (Zeroizing<Vec<u8>>, Vec<u32>);

/// What an unseal attempt produced.
type Outcome = Result<Unsealed, String>;

/// Why an attempt failed, and whether a PIN would help.
type Refusal = (String, bool);

fn unseal_with(
    tpm: &mut Tpm,
    o: &Opts,
    env: Option<&bootchain::seal::Envelope>,
    opts: &bootchain::seal::UnsealOptions<'_>,
) -> Result<Unsealed, Refusal> {
    match env {
        None => {
            let target = o
                .target
                .as_deref()
                .ok_or(("no target".to_string(), false))?;
            let luks = bootchain::luks::Luks::new(target);
            match bootchain::token::unlock_luks(tpm, &luks, o.token_id, opts) {
                Ok(u) => Ok((
                    Zeroizing::new(u.passphrase.as_bytes().to_vec()),
                    u.policy_pcrs,
                )),
                Err(e) => {
                    let pin_needed = matches!(
                        &e,
                        bootchain::token::LuksTokenError::AllFailed { reasons, .. }
                            if reasons.iter().any(|(_, r)| matches!(
                                r,
                                bootchain::token::TokenError::Seal(
                                    bootchain::seal::SealError::PinRequired
                                )
                            ))
                    );
                    Err((chain(&e), pin_needed))
                }
            }
        }
        Some(env) => match bootchain::seal::unseal(tpm, env, opts) {
            Ok(s) => Ok((s, env.policy_pcrs())),
            Err(e) => {
                let pin_needed = matches!(e, bootchain::seal::SealError::PinRequired);
                Err((chain(&e), pin_needed))
            }
        },
    }
}

/// What the attempt needs besides the TPM, read (and checked) before the TPM is touched.
struct Inputs {
    env: Option<bootchain::seal::Envelope>,
    sigs: Option<PcrSignatures>,
    pin: Option<Zeroizing<Vec<u8>>>,
    pcrlock: Option<bootchain::pcrlock::PcrlockPolicy>,
}

fn inputs(o: &Opts) -> Result<Inputs, String> {
    let env = if o.luks {
        None
    } else {
        let target = o.target.as_deref().ok_or("no target")?;
        let bytes = read_json(target)?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| format!("{}: not UTF-8 text", target.display()))?;
        Some(bootchain::seal::Envelope::from_json(text).map_err(|e| chain(&e))?)
    };
    Ok(Inputs {
        env,
        sigs: signatures(o)?,
        pin: pin(o)?,
        pcrlock: if o.luks { pcrlock(o)? } else { None },
    })
}

fn attempt(tpm: &mut Tpm, o: &Opts, i: &Inputs) -> Outcome {
    let given = i.pin.as_ref().map(|p| p.as_slice());
    let mut opts = bootchain::seal::UnsealOptions {
        signatures: i.sigs.as_ref(),
        pin: given,
        pcrlock: i.pcrlock.as_ref(),
    };
    match unseal_with(tpm, o, i.env.as_ref(), &opts) {
        Ok(r) => Ok(r),
        Err((_, true)) if given.is_none() && o.ask_pin.is_some() => {
            let program = o.ask_pin.as_deref().ok_or("no PIN program")?;
            let asked = ask_pin(program)?;
            opts.pin = Some(&asked);
            unseal_with(tpm, o, i.env.as_ref(), &opts).map_err(|(e, _)| e)
        }
        Err((e, _)) => Err(e),
    }
}

fn run(o: &Opts) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    let tcti = o.tcti.clone().unwrap_or_else(Tpm::tcti_from_env);
    // Bad input is reported before the TPM is waited for; the lock below still happens for
    // every attempt that reached the TPM.
    let prepared = if o.lock_only { None } else { Some(inputs(o)) };
    wait_for_device(&tcti, o.tpm_wait);
    let mut tpm = match Tpm::open(&tcti) {
        Ok(t) => t,
        Err(e) => {
            return Err(match prepared {
                Some(Err(bad)) => bad,
                _ => chain(&e),
            })
        }
    };
    let outcome = match prepared {
        None => {
            let pcrs = bootchain::seal::lock_pcrs(None);
            bootchain::seal::lock(&mut tpm, &pcrs)
                .map_err(|e| format!("cannot lock this boot (extend PCRs {pcrs:?}): {e}"))?;
            return Ok(None);
        }
        Some(Err(e)) => Err(e),
        Some(Ok(i)) => attempt(&mut tpm, o, &i),
    };
    if !o.lock {
        return outcome.map(|(s, _)| Some(s));
    }
    let pcrs = bootchain::seal::lock_pcrs(outcome.as_ref().ok().map(|(_, p)| p.as_slice()));
    let locked = bootchain::seal::lock(&mut tpm, &pcrs);
    match (outcome, locked) {
        (Ok((secret, covered)), Ok(())) => {
            if !pcrs.iter().any(|p| covered.contains(p)) {
                eprintln!(
                    "bootchain-unseal: warning: this policy covers PCRs {covered:?}, none of which can be locked: it stays unsealable for the rest of this boot (seal with PCR {} or 11)",
                    bootchain::seal::LOCK_PCR
                );
            }
            Ok(Some(secret))
        }
        // Fail closed: a secret whose boot cannot be locked could be unsealed again later.
        (Ok(_), Err(e)) => Err(format!(
            "unsealed, but cannot lock this boot (extend PCRs {pcrs:?}): {e}; withholding the secret"
        )),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(l)) => Err(format!(
            "{e}; also cannot lock this boot (extend PCRs {pcrs:?}): {l}"
        )),
    }
}

/// Answer a systemd password request: one datagram, "+" and the password
/// (systemd.io/PASSWORD_AGENTS, what systemd-reply-password sends).
fn reply_password(socket: &Path, secret: &[u8]) -> Result<(), String> {
    let mut msg = Zeroizing::new(Vec::with_capacity(secret.len() + 1));
    msg.push(b'+');
    msg.extend_from_slice(secret);
    let s = std::os::unix::net::UnixDatagram::unbound()
        .map_err(|e| format!("password reply socket: {e}"))?;
    s.send_to(&msg, socket)
        .map(|_| ())
        .map_err(|e| format!("answering {}: {e}", socket.display()))
}

fn main() -> ExitCode {
    // Silence tpm2-tss's own error printing (expected failures such as a policy that does not
    // match would print ESYS errors); done here, before any thread exists, not in the library.
    if bootchain::tpm::quiet_tss_log() {
        std::env::set_var("TSS2_LOG", bootchain::tpm::QUIET_TSS_LOG);
    }
    let o = match parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("bootchain-unseal: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let secret = match run(&o) {
        Ok(Some(s)) => s,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootchain-unseal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let written = match (&o.output, &o.reply_socket) {
        (_, Some(sock)) => reply_password(sock, &secret),
        (Some(p), None) => bootchain::fsutil::write_atomic(p, &secret, 0o600)
            .map_err(|e| format!("writing {}: {e}", p.display())),
        (None, None) => {
            let mut out = std::io::stdout().lock();
            out.write_all(&secret)
                .and_then(|_| out.flush())
                .map_err(|e| format!("stdout: {e}"))
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bootchain-unseal: {e}");
            ExitCode::FAILURE
        }
    }
}
