//! PIN → TPM authValue, as systemd-cryptenroll derives it (systemd src/shared/tpm2-util.c,
//! `tpm2_util_pbkdf2_hmac_sha256()` and the PIN hashing around it).
//!
//! - Salted (systemd ≥ 253, `tpm2_salt` in the token; always used by our envelopes):
//!   `authValue = SHA-256(base64(PBKDF2-HMAC-SHA256(pin, salt, 10000, 32)))`.
//! - Unsalted (systemd 252 tokens): `authValue = SHA-256(pin)`.
//!
//! In both cases trailing zero bytes are removed: the TPM stores an authValue without them
//! (TPM 2.0 Part 1 §17.6.4.3 "Authorization Size Convention"), so a client HMAC over the
//! untrimmed value would not match.

use base64::Engine as _;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::hash::HashAlg;

/// `PBKDF2_HMAC_SHA256_ITERATIONS` in systemd's `tpm2-util.c`.
pub const PIN_PBKDF2_ITERATIONS: u32 = 10_000;
/// Length of the random salt systemd stores as `tpm2_salt`.
pub const PIN_SALT_LEN: usize = 32;

/// The PIN could not be read or turned into an authValue.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PinError {
    /// HMAC refused the PIN as a key (never for HMAC-SHA256, whose keys may have any length;
    /// kept because the API has the error path).
    #[error("the PIN cannot be used as an HMAC key")]
    Key,
    /// The PIN file could not be read (or holds more than [`MAX_PIN_FILE`] bytes).
    #[error("reading the PIN file {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The PIN is empty once trailing newlines are removed.
    #[error("the PIN is empty")]
    Empty,
}

/// The environment variable the CLI and `bootchain-unseal` read a PIN from (never passed on
/// to a child process).
pub const PIN_ENV: &str = "BOOTCHAIN_PIN";

/// The largest PIN file read: a PIN is typed by a person, 4 KiB is far more than any.
pub const MAX_PIN_FILE: u64 = 4096;

/// A PIN as typed: trailing `\n` / `\r` removed (files and `echo` add them, askpass programs
/// print one); an empty PIN is refused.
pub fn normalize_pin(mut pin: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>, PinError> {
    while matches!(pin.last(), Some(b'\n' | b'\r')) {
        pin.pop();
    }
    if pin.is_empty() {
        return Err(PinError::Empty);
    }
    Ok(pin)
}

/// The PIN in `path` (at most [`MAX_PIN_FILE`] bytes), normalized ([`normalize_pin`]).
pub fn read_pin_file(path: &std::path::Path) -> Result<Zeroizing<Vec<u8>>, PinError> {
    let bytes =
        crate::fsutil::read_bounded(path, MAX_PIN_FILE).map_err(|source| PinError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    normalize_pin(Zeroizing::new(bytes))
}

/// The PIN in `$BOOTCHAIN_PIN` ([`PIN_ENV`]), normalized; `None` if it is not set.
pub fn pin_from_env() -> Result<Option<Zeroizing<Vec<u8>>>, PinError> {
    match std::env::var_os(PIN_ENV) {
        Some(v) => normalize_pin(Zeroizing::new(v.into_encoded_bytes())).map(Some),
        None => Ok(None),
    }
}

/// PBKDF2-HMAC-SHA256 (RFC 8018 §5.2) producing one 32-byte block, the only size used here
/// (RustCrypto's `pbkdf2`; the RFC 7914 vectors below pin it).
pub fn pbkdf2_hmac_sha256(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<Zeroizing<[u8; 32]>, PinError> {
    let mut out = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out[..]);
    Ok(out)
}

/// The authValue for `pin`: salted when `salt` is given, else systemd 252's plain SHA-256.
pub fn pin_auth_value(pin: &[u8], salt: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, PinError> {
    let digest = match salt {
        Some(salt) => {
            let salted = pbkdf2_hmac_sha256(pin, salt, PIN_PBKDF2_ITERATIONS)?;
            let text =
                Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&salted[..]));
            HashAlg::Sha256.digest(text.as_bytes())
        }
        None => HashAlg::Sha256.digest(pin),
    };
    let mut v = Zeroizing::new(digest.as_bytes().to_vec());
    while v.last() == Some(&0) {
        v.pop();
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7914 §11 PBKDF2-HMAC-SHA-256 vectors (first 32 bytes).
    #[test]
    fn rfc7914_vectors() {
        assert_eq!(
            hex::encode(&pbkdf2_hmac_sha256(b"passwd", b"salt", 1).unwrap()[..]),
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        assert_eq!(
            hex::encode(&pbkdf2_hmac_sha256(b"Password", b"NaCl", 80000).unwrap()[..]),
            "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56"
        );
    }

    /// `digest` without its trailing zero bytes, computed independently of `pin_auth_value`.
    fn trimmed(digest: &[u8]) -> Vec<u8> {
        let end = digest.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        digest[..end].to_vec()
    }

    /// Search for PINs whose digest ends in 0x00 (one in 256), so the trim is exercised.
    #[test]
    fn trailing_zeros_trimmed_and_salt_matters() {
        use sha2::Digest as _;
        let pin = (0u32..100_000)
            .map(|n| format!("pin-{n}"))
            .find(|p| Sha256::digest(p.as_bytes())[31] == 0)
            .expect("a PIN whose SHA-256 ends in 0x00");
        let full = Sha256::digest(pin.as_bytes());
        let a = pin_auth_value(pin.as_bytes(), None).unwrap();
        assert!(a.len() < 32, "{pin}: nothing trimmed");
        assert_eq!(&a[..], &trimmed(&full)[..], "{pin}");

        let salt = [7u8; 32];
        let salted_digest = |p: &str| {
            let k = pbkdf2_hmac_sha256(p.as_bytes(), &salt, PIN_PBKDF2_ITERATIONS).unwrap();
            Sha256::digest(
                base64::engine::general_purpose::STANDARD
                    .encode(&k[..])
                    .as_bytes(),
            )
        };
        let (pin, full) = (0u32..4096)
            .map(|n| format!("{n:04}"))
            .map(|p| {
                let d = salted_digest(&p);
                (p, d)
            })
            .find(|(_, d)| d[31] == 0)
            .expect("a salted PIN digest ending in 0x00");
        let s = pin_auth_value(pin.as_bytes(), Some(&salt)).unwrap();
        assert!(s.len() < 32, "{pin}: nothing trimmed");
        assert_eq!(&s[..], &trimmed(&full)[..], "{pin}");

        let s1 = pin_auth_value(b"1234", Some(&[1; 32])).unwrap();
        let s2 = pin_auth_value(b"1234", Some(&[2; 32])).unwrap();
        assert_ne!(s1, s2);
    }
}
