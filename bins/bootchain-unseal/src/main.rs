//! `bootchain-unseal`: the initramfs side. Unseals a bootchain envelope, or the passphrase of a
//! LUKS2 volume's `systemd-tpm2` token, and writes it to stdout (for a crypttab keyscript) or
//! to a file (mode 0600). Nothing else is printed on stdout; errors go to stderr with the
//! reason (which PCRs differ, unsigned PCR values, PIN tries left).
//!
//! ```text
//! bootchain-unseal [OPTIONS] ENVELOPE
//! bootchain-unseal [OPTIONS] --luks DEVICE
//!   --tcti T        TPM (default $BOOTCHAIN_TCTI, else device:/dev/tpmrm0)
//!   --pcrsig FILE   signed PCR policies (default /run/systemd/tpm2-pcr-signature.json,
//!                   then /.extra/tpm2-pcr-signature.json, where systemd-stub puts .pcrsig)
//!   --pin-file FILE PIN (else $BOOTCHAIN_PIN)
//!   --token-id N    only this LUKS2 token
//!   -o FILE         write here instead of stdout
//! ```
//! Exit status: 0 unsealed, 1 refused or failed, 2 usage.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bootchain::measure::PcrSignatures;
use bootchain::tpm::Tpm;
use zeroize::Zeroizing;

const SIGNATURE_PATHS: [&str; 2] = [
    "/run/systemd/tpm2-pcr-signature.json",
    "/.extra/tpm2-pcr-signature.json",
];

#[derive(Default)]
struct Opts {
    target: Option<PathBuf>,
    luks: bool,
    tcti: Option<String>,
    pcrsig: Option<PathBuf>,
    pin_file: Option<PathBuf>,
    token_id: Option<u32>,
    output: Option<PathBuf>,
}

const USAGE: &str = "usage: bootchain-unseal [--tcti T] [--pcrsig FILE] [--pin-file FILE] [-o FILE] (ENVELOPE | --luks DEVICE [--token-id N])";

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
            "--token-id" => {
                let v = value("--token-id")?;
                o.token_id = Some(v.parse().map_err(|_| format!("--token-id {v:?}"))?);
            }
            "-o" | "--output" => o.output = Some(PathBuf::from(value("-o")?)),
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ if o.target.is_none() => o.target = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    if o.target.is_none() {
        return Err("give an envelope or --luks DEVICE".into());
    }
    Ok(o)
}

fn signatures(o: &Opts) -> Result<Option<PcrSignatures>, String> {
    let path = match &o.pcrsig {
        Some(p) => p.clone(),
        None => match SIGNATURE_PATHS.iter().find(|p| Path::new(p).exists()) {
            Some(p) => PathBuf::from(p),
            None => return Ok(None),
        },
    };
    let text = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    bootchain::measure::parse_signatures(&text)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

fn pin(o: &Opts) -> Result<Option<Zeroizing<Vec<u8>>>, String> {
    let mut p = match &o.pin_file {
        Some(f) => {
            Zeroizing::new(std::fs::read(f).map_err(|e| format!("reading {}: {e}", f.display()))?)
        }
        None => match std::env::var_os("BOOTCHAIN_PIN") {
            Some(v) => Zeroizing::new(v.into_encoded_bytes()),
            None => return Ok(None),
        },
    };
    while matches!(p.last(), Some(b'\n' | b'\r')) {
        p.pop();
    }
    Ok(Some(p))
}

fn run(o: &Opts) -> Result<Zeroizing<Vec<u8>>, String> {
    let target = o.target.as_deref().ok_or("no target")?;
    // Parse what we were given before touching the TPM.
    let env = if o.luks {
        None
    } else {
        let text = std::fs::read_to_string(target)
            .map_err(|e| format!("reading {}: {e}", target.display()))?;
        Some(bootchain::seal::Envelope::from_json(&text).map_err(|e| e.to_string())?)
    };
    let sigs = signatures(o)?;
    let pin = pin(o)?;
    let tcti = o.tcti.clone().unwrap_or_else(Tpm::tcti_from_env);
    let mut tpm = Tpm::open(&tcti).map_err(|e| e.to_string())?;
    match env {
        None => {
            let luks = bootchain::luks::Luks::new(target);
            let u = bootchain::token::unlock_luks(
                &mut tpm,
                &luks,
                o.token_id,
                sigs.as_ref(),
                pin.as_ref().map(|p| p.as_slice()),
            )
            .map_err(|e| e.to_string())?;
            Ok(Zeroizing::new(u.passphrase.as_bytes().to_vec()))
        }
        Some(env) => {
            let opts = bootchain::seal::UnsealOptions {
                signatures: sigs.as_ref(),
                pin: pin.as_ref().map(|p| p.as_slice()),
            };
            bootchain::seal::unseal(&mut tpm, &env, &opts).map_err(|e| e.to_string())
        }
    }
}

fn main() -> ExitCode {
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
        Ok(s) => s,
        Err(e) => {
            eprintln!("bootchain-unseal: {e}");
            return ExitCode::FAILURE;
        }
    };
    let written = match &o.output {
        Some(p) => bootchain::fsutil::write_atomic(p, &secret, 0o600)
            .map_err(|e| format!("writing {}: {e}", p.display())),
        None => {
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
