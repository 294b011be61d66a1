//! PIN → TPM authValue, as systemd-cryptenroll derives it (formats.md §3.4).
//!
//! - Salted (systemd ≥ 253, `tpm2_salt` in the token; always used by our envelopes):
//!   `authValue = SHA-256(base64(PBKDF2-HMAC-SHA256(pin, salt, 10000, 32)))`.
//! - Unsalted (systemd 252 tokens): `authValue = SHA-256(pin)`.
//!
//! In both cases trailing zero bytes are removed: the TPM stores an authValue without them
//! (TPM 2.0 Part 1 §17.6.4.3 "Authorization Size Convention"), so a client HMAC over the
//! untrimmed value would not match.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::hash::HashAlg;

/// `PBKDF2_HMAC_SHA256_ITERATIONS` in systemd's `tpm2-util.c`.
pub const PIN_PBKDF2_ITERATIONS: u32 = 10_000;
/// Length of the random salt systemd stores as `tpm2_salt`.
pub const PIN_SALT_LEN: usize = 32;

/// The PIN could not be turned into an authValue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the PIN cannot be used as an HMAC key")]
pub struct PinError;

/// PBKDF2-HMAC-SHA256 (RFC 8018 §5.2) producing one 32-byte block, the only size used here.
pub fn pbkdf2_hmac_sha256(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
) -> Result<Zeroizing<[u8; 32]>, PinError> {
    // HMAC takes keys of any length (RFC 2104 §2); the error path exists only in the API.
    let prf = Hmac::<Sha256>::new_from_slice(password).map_err(|_| PinError)?;
    let mut mac = prf.clone();
    mac.update(salt);
    mac.update(&1u32.to_be_bytes());
    let mut u = Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()));
    let mut t = Zeroizing::new(*u);
    for _ in 1..iterations {
        let mut mac = prf.clone();
        mac.update(&u[..]);
        *u = mac.finalize().into_bytes().into();
        for (a, b) in t.iter_mut().zip(u.iter()) {
            *a ^= b;
        }
    }
    Ok(t)
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

    #[test]
    fn trailing_zeros_trimmed_and_salt_matters() {
        let a = pin_auth_value(b"1234", None).unwrap();
        assert_eq!(&a[..], HashAlg::Sha256.digest(b"1234").as_bytes());
        let s1 = pin_auth_value(b"1234", Some(&[1; 32])).unwrap();
        let s2 = pin_auth_value(b"1234", Some(&[2; 32])).unwrap();
        assert_ne!(s1, s2);
        assert!(s1.last() != Some(&0));
    }
}
