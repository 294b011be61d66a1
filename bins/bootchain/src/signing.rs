//! Opening signing keys and certificates named on the command line: files or RFC 7512
//! `pkcs11:` URIs (`bootchain::signer`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use bootchain::keys::Certificate;
use bootchain::sign::SignOptions;
use bootchain::signer::{self, Signer};

use crate::BuildArgs;

/// True if the option's value is a `pkcs11:` URI.
pub fn is_pkcs11(p: &Path) -> bool {
    p.to_str().is_some_and(bootchain::pkcs11::is_uri)
}

fn spec(p: &Path) -> Result<&str> {
    let s = p
        .to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))?;
    if bootchain::pkcs11::is_uri(s) && s.contains("pin-value=") {
        eprintln!(
            "bootchain: warning: a pin-value in a pkcs11: URI on the command line is visible to every user of this machine (/proc/PID/cmdline) and in shell history; prefer pin-source=FILE or ${}",
            bootchain::pkcs11::PIN_ENV
        );
    }
    Ok(s)
}

/// `p` for printing: a `pkcs11:` URI without its PIN and module, other paths as they are.
pub fn shown(p: &Path) -> std::path::PathBuf {
    match p.to_str().map(bootchain::pkcs11::Pkcs11Uri::parse) {
        Some(Ok(u)) => u.to_string().into(),
        Some(Err(_)) if is_pkcs11(p) => "pkcs11:<malformed>".into(),
        _ => p.to_path_buf(),
    }
}

/// A certificate from a file or a `pkcs11:` URI.
pub fn certificate(p: &Path) -> Result<Certificate> {
    Ok(signer::open_certificate(spec(p)?)?)
}

/// The Secure Boot key and its certificate: `cert` (file or URI), else the certificate the
/// token holds with the key's id. The key must belong to the certificate.
pub fn sb_signer(key: &Path, cert: Option<&Path>) -> Result<(Box<dyn Signer>, Certificate)> {
    let k = signer::open(spec(key)?)?;
    let c = match cert {
        Some(c) => certificate(c)?,
        None => match k.certificate()? {
            Some(c) => c,
            None if is_pkcs11(key) => bail!(
                "the token has no certificate with the key's id: give the certificate (a file or a pkcs11: URI)"
            ),
            None => bail!("a certificate is required with a key file"),
        },
    };
    k.check_matches(&c)?;
    if !k.scheme().is_rsa() {
        // ECDSA Authenticode signatures are valid, but most UEFI firmware (EDK2 built with
        // MbedTLS, many vendor implementations) only verifies RSA.
        eprintln!(
            "bootchain: warning: signing with {:?}: most UEFI firmware only accepts RSA signatures in db checks",
            k.public_key()
        );
    }
    Ok((k, c))
}

/// A PCR policy signing key (RSA; file or URI), checked against `public` if given.
pub fn pcr_signer(key: &Path, public: Option<&Path>) -> Result<Box<dyn Signer>> {
    let k = signer::open(spec(key)?)?;
    bootchain::measure::check_pcr_signer(&*k, public)?;
    Ok(k)
}

/// `--signing-time`: absent (no attribute), `now`, or seconds since the epoch.
pub fn sign_options(t: Option<&str>) -> Result<SignOptions> {
    let signing_time = match t {
        None => None,
        Some("now") => Some(std::time::SystemTime::now()),
        Some(s) => {
            let secs: u64 = s
                .parse()
                .with_context(|| format!("--signing-time={s}: not a number of seconds"))?;
            Some(
                std::time::UNIX_EPOCH
                    .checked_add(std::time::Duration::from_secs(secs))
                    .with_context(|| format!("--signing-time={s}: out of range"))?,
            )
        }
    };
    Ok(SignOptions { signing_time })
}

/// ukify's `--signing-engine`/`--signing-provider`/`--certificate-provider`: `pkcs11` is what
/// they name for HSM keys, which bootchain opens itself from the `pkcs11:` URI ukify passes as
/// the key (or certificate); anything else needs OpenSSL and is refused.
pub fn check_ukify_sources(a: &BuildArgs) -> Result<()> {
    for (value, opt) in [
        (&a.signing_engine, "--signing-engine/SigningEngine="),
        (&a.signing_provider, "--signing-provider/SigningProvider="),
    ] {
        match value.as_deref() {
            None => {}
            Some("pkcs11") => {
                let keys = a
                    .secureboot_private_key
                    .iter()
                    .chain(&a.pcr_private_key);
                for k in keys {
                    if !is_pkcs11(k) {
                        bail!("{opt}pkcs11 needs pkcs11: URIs as keys, not {}", k.display());
                    }
                }
            }
            Some(other) => bail!("{opt}{other} is not supported: bootchain opens key files and pkcs11: URIs itself (use {opt}pkcs11 with a pkcs11: URI, or no engine)"),
        }
    }
    match a.certificate_provider.as_deref() {
        None => {}
        Some("pkcs11") => {
            if let Some(c) = a.secureboot_certificate.as_deref().filter(|c| !is_pkcs11(c)) {
                bail!("--certificate-provider=pkcs11 needs a pkcs11: URI as the certificate, not {}", c.display());
            }
        }
        Some(other) => bail!("--certificate-provider/CertificateProvider={other} is not supported (only pkcs11, with a pkcs11: URI)"),
    }
    Ok(())
}
