//! Generating signing keys as `ukify genkey` (systemd 257) does: a Secure Boot key and a
//! self-signed certificate, and PCR policy signing key pairs.
//!
//! - Secure Boot pair: RSA-2048 (e = 65537), the key as PEM PKCS#1 (`RSA PRIVATE KEY`), mode
//!   0600; an X.509 v3 certificate with subject = issuer = `CN=SecureBoot signing key on host
//!   <fqdn>` (cut to 61 characters + `...` when longer than 64), valid from now for
//!   `validity_days`, a random positive 20-byte serial, one extension (basicConstraints,
//!   critical, CA:FALSE), signed sha256WithRSAEncryption; PEM, mode 0644.
//! - PCR keys: RSA-2048, the private key as PEM PKCS#1 (0600), the public key as PEM
//!   SubjectPublicKeyInfo (`PUBLIC KEY`, 0644) when a path is given.
//!
//! Existing files are never replaced: every target is checked before any key is generated,
//! and the files are committed with no-replace renames, all or none.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use der::asn1::{BitString, OctetString, SetOfVec, UtcTime};
use der::{Decode, Encode, EncodePem};
use rand_core::{OsRng, RngCore};
use rsa::RsaPrivateKey;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::ext::Extension;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use zeroize::Zeroizing;

use crate::fsutil::AtomicFile;

/// RSA modulus size of every generated key (what ukify generates; what Microsoft documents
/// for Secure Boot keys).
pub const KEY_BITS: usize = 2048;
/// ukify's default `--secureboot-certificate-validity`.
pub const DEFAULT_VALIDITY_DAYS: u32 = 3650;

/// A Secure Boot key and certificate to generate.
#[derive(Clone, Debug)]
pub struct SecureBootTarget {
    /// Where the private key goes (PEM PKCS#1, 0600).
    pub key: PathBuf,
    /// Where the certificate goes (PEM).
    pub cert: PathBuf,
    /// Validity of the certificate, in days from now.
    pub validity_days: u32,
    /// The host named in the subject (see [`host_fqdn`]).
    pub host: String,
}

/// A PCR signing key pair to generate.
#[derive(Clone, Debug)]
pub struct PcrKeyTarget {
    /// Where the private key goes (PEM PKCS#1, 0600).
    pub private_key: PathBuf,
    /// Where the public key goes (PEM SubjectPublicKeyInfo), if anywhere.
    pub public_key: Option<PathBuf>,
}

/// What to generate.
#[derive(Clone, Debug, Default)]
pub struct GenkeyRequest {
    /// The Secure Boot pair.
    pub secureboot: Option<SecureBootTarget>,
    /// PCR signing keys.
    pub pcr: Vec<PcrKeyTarget>,
}

/// One file written by [`genkey`], in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// What it is (as ukify says it: "SecureBoot private key", ...).
    pub what: &'static str,
    /// Where.
    pub path: PathBuf,
}

/// Errors of [`genkey`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenkeyError {
    /// A target exists already (ukify: "PATH is present").
    #[error("{} is present", path.display())]
    Present {
        /// The path.
        path: PathBuf,
    },
    /// Two targets are the same path.
    #[error("{} is given twice", path.display())]
    Duplicate {
        /// The path.
        path: PathBuf,
    },
    /// Nothing was asked for.
    #[error("genkey: --secureboot-private-key=/--secureboot-certificate= or --pcr-private-key/--pcr-public-key must be specified")]
    Nothing,
    /// The certificate's end is not representable.
    #[error("a certificate valid for {days} days ends past year 9999")]
    Validity {
        /// The validity asked for.
        days: u32,
        /// The time encoder's error, if it had one.
        #[source]
        source: Option<der::Error>,
    },
    /// RSA key generation failed.
    #[error("generating an RSA-{KEY_BITS} key failed")]
    Generate(#[source] rsa::Error),
    /// Encoding a private key failed.
    #[error("encoding the private key failed")]
    EncodePrivate(#[source] pkcs1::Error),
    /// Encoding a public key failed.
    #[error("encoding the public key failed")]
    EncodePublic(#[source] spki::Error),
    /// Encoding the certificate failed.
    #[error("encoding the certificate failed")]
    EncodeCert(#[source] der::Error),
    /// Signing the certificate failed.
    #[error("signing the certificate failed")]
    Sign(#[source] rsa::Error),
    /// Writing a file failed.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The host name `ukify genkey` puts in the certificate subject, as Python's
/// `socket.getfqdn()` finds it with a files-only resolver: the kernel's host name, or the
/// first dotted name of the `/etc/hosts` line naming it. "localhost" if there is none.
pub fn host_fqdn() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    if host.contains('.') {
        return host;
    }
    let hosts = crate::fsutil::read_bounded(Path::new("/etc/hosts"), 1 << 20).unwrap_or_default();
    fqdn_from_hosts(&host, &String::from_utf8_lossy(&hosts)).unwrap_or(host)
}

/// The first dotted name (canonical name, then aliases) of the first `/etc/hosts` line that
/// names `host`.
fn fqdn_from_hosts(host: &str, hosts: &str) -> Option<String> {
    for line in hosts.lines() {
        let line = line.split('#').next().unwrap_or("");
        let names: Vec<&str> = line.split_whitespace().skip(1).collect();
        if names.contains(&host) {
            return names
                .iter()
                .find(|n| n.contains('.'))
                .map(|n| n.to_string());
        }
    }
    None
}

/// The certificate subject ukify 257 uses for `host`.
pub fn secureboot_common_name(host: &str) -> String {
    let cn = format!("SecureBoot signing key on host {host}");
    if cn.chars().count() > 64 {
        let mut s: String = cn.chars().take(61).collect();
        s.push_str("...");
        s
    } else {
        cn
    }
}

/// Generate what `req` asks for and write it. Refuses before generating anything if a
/// target exists ([`GenkeyError::Present`]) or nothing is asked ([`GenkeyError::Nothing`]).
/// Returns the files written, in ukify's order.
pub fn genkey(req: &GenkeyRequest) -> Result<Vec<Written>, GenkeyError> {
    let mut targets: Vec<&Path> = Vec::new();
    if let Some(sb) = &req.secureboot {
        targets.push(&sb.key);
        targets.push(&sb.cert);
    }
    for p in &req.pcr {
        targets.push(&p.private_key);
        if let Some(public) = &p.public_key {
            targets.push(public);
        }
    }
    if targets.is_empty() {
        return Err(GenkeyError::Nothing);
    }
    for (i, t) in targets.iter().enumerate() {
        if t.symlink_metadata().is_ok() {
            return Err(GenkeyError::Present {
                path: t.to_path_buf(),
            });
        }
        if targets[..i].contains(t) {
            return Err(GenkeyError::Duplicate {
                path: t.to_path_buf(),
            });
        }
    }

    let mut files: Vec<AtomicFile> = Vec::new();
    let mut written = Vec::new();
    let mut add = |what: &'static str, path: &Path, data: &[u8], mode: u32| {
        let werr = |source| GenkeyError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut f = AtomicFile::create_new(path, mode).map_err(werr)?;
        f.file().write_all(data).map_err(werr)?;
        files.push(f);
        written.push(Written {
            what,
            path: path.to_path_buf(),
        });
        Ok::<(), GenkeyError>(())
    };

    if let Some(sb) = &req.secureboot {
        let key = new_key()?;
        let cert = self_signed_cert(&key, &secureboot_common_name(&sb.host), sb.validity_days)?;
        add(
            "SecureBoot private key",
            &sb.key,
            private_pem(&key)?.as_bytes(),
            0o600,
        )?;
        add("SecureBoot certificate", &sb.cert, cert.as_bytes(), 0o644)?;
    }
    for p in &req.pcr {
        let key = new_key()?;
        add(
            "private key for PCR signing",
            &p.private_key,
            private_pem(&key)?.as_bytes(),
            0o600,
        )?;
        if let Some(public) = &p.public_key {
            add(
                "public key for PCR signing",
                public,
                public_pem(&key)?.as_bytes(),
                0o644,
            )?;
        }
    }
    crate::fsutil::commit_all(files).map_err(|(path, source)| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            GenkeyError::Present { path }
        } else {
            GenkeyError::Write { path, source }
        }
    })?;
    Ok(written)
}

fn new_key() -> Result<RsaPrivateKey, GenkeyError> {
    RsaPrivateKey::new(&mut OsRng, KEY_BITS).map_err(GenkeyError::Generate)
}

fn private_pem(key: &RsaPrivateKey) -> Result<Zeroizing<String>, GenkeyError> {
    use pkcs1::EncodeRsaPrivateKey;
    key.to_pkcs1_pem(pkcs1::LineEnding::LF)
        .map_err(GenkeyError::EncodePrivate)
}

fn public_pem(key: &RsaPrivateKey) -> Result<String, GenkeyError> {
    use pkcs8::EncodePublicKey;
    key.to_public_key()
        .to_public_key_pem(pkcs8::LineEnding::LF)
        .map_err(GenkeyError::EncodePublic)
}

/// RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
fn cert_time(t: SystemTime) -> der::Result<Time> {
    match UtcTime::from_system_time(t) {
        Ok(u) => Ok(Time::UtcTime(u)),
        Err(_) => Time::try_from(t),
    }
}

fn validity(days: u32) -> Result<Validity, GenkeyError> {
    let err = |source| GenkeyError::Validity { days, source };
    let now = SystemTime::now();
    let end = now
        .checked_add(Duration::from_secs(u64::from(days) * 86_400))
        .ok_or(err(None))?;
    Ok(Validity {
        not_before: cert_time(now).map_err(|e| err(Some(e)))?,
        not_after: cert_time(end).map_err(|e| err(Some(e)))?,
    })
}

/// `CN=<cn>`, the value a UTF8String (as Python cryptography encodes it).
fn cn_name(cn: &str) -> Result<Name, der::Error> {
    let value = der::Any::new(der::Tag::Utf8String, cn.as_bytes())?;
    let atv = AttributeTypeAndValue {
        oid: const_oid::db::rfc4519::CN,
        value,
    };
    let rdn = RelativeDistinguishedName::from(SetOfVec::try_from(vec![atv])?);
    Ok(RdnSequence(vec![rdn]))
}

/// A random positive serial number of 20 bytes (159 bits of randomness, as cryptography's
/// `random_serial_number`; the top bit cleared and the next set, so it is exactly 20 bytes).
fn random_serial() -> Result<SerialNumber, der::Error> {
    let mut b = [0u8; 20];
    OsRng.fill_bytes(&mut b);
    b[0] = (b[0] & 0x7f) | 0x40;
    SerialNumber::new(&b)
}

/// The PEM of a self-signed v3 certificate for `key`.
fn self_signed_cert(key: &RsaPrivateKey, cn: &str, days: u32) -> Result<String, GenkeyError> {
    use pkcs8::EncodePublicKey;
    let enc = GenkeyError::EncodeCert;
    let name = cn_name(cn).map_err(enc)?;
    let spki_der = key
        .to_public_key()
        .to_public_key_der()
        .map_err(GenkeyError::EncodePublic)?;
    let spki = SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes()).map_err(enc)?;
    let alg = AlgorithmIdentifierOwned {
        oid: const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
        parameters: Some(der::Any::null()),
    };
    let bc = BasicConstraints {
        ca: false,
        path_len_constraint: None,
    };
    let ext = Extension {
        extn_id: const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS,
        critical: true,
        extn_value: OctetString::new(bc.to_der().map_err(enc)?).map_err(enc)?,
    };
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: random_serial().map_err(enc)?,
        signature: alg.clone(),
        issuer: name.clone(),
        validity: validity(days)?,
        subject: name,
        subject_public_key_info: spki,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(vec![ext]),
    };
    let tbs_der = tbs.to_der().map_err(enc)?;
    let digest = <sha2::Sha256 as sha2::Digest>::digest(&tbs_der);
    let sig = key
        .sign(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &digest)
        .map_err(GenkeyError::Sign)?;
    let cert = Certificate {
        tbs_certificate: tbs,
        signature_algorithm: alg,
        signature: BitString::from_bytes(&sig).map_err(enc)?,
    };
    cert.to_pem(der::pem::LineEnding::LF).map_err(enc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_is_cut_like_ukify() {
        assert_eq!(
            secureboot_common_name("h.example"),
            "SecureBoot signing key on host h.example"
        );
        let long = secureboot_common_name(&"a".repeat(40));
        assert_eq!(long.len(), 64);
        assert!(long.ends_with("..."));
        assert_eq!(
            &long[..61],
            &format!("SecureBoot signing key on host {}", "a".repeat(40))[..61]
        );
        // Exactly 64 stays.
        let h = "b".repeat(64 - "SecureBoot signing key on host ".len());
        assert_eq!(secureboot_common_name(&h).len(), 64);
        assert!(!secureboot_common_name(&h).ends_with("..."));
    }

    #[test]
    fn fqdn_from_hosts_file() {
        let hosts =
            "127.0.0.1 localhost\n# 127.0.1.1 box.wrong box\n127.0.1.1\tbox.example.org box\n";
        assert_eq!(
            fqdn_from_hosts("box", hosts).as_deref(),
            Some("box.example.org")
        );
        assert_eq!(fqdn_from_hosts("other", hosts), None);
        assert_eq!(fqdn_from_hosts("localhost", hosts), None);
    }

    #[test]
    fn certificate_shape() {
        let key = new_key().unwrap();
        let pem = self_signed_cert(&key, "CN test, with comma", 10).unwrap();
        let cert = crate::keys::certificate_from_bytes(pem.as_bytes(), "cert").unwrap();
        let signer =
            crate::keys::SigningKey::from_bytes(private_pem(&key).unwrap().as_bytes(), "key")
                .unwrap();
        signer.check_matches(&cert).unwrap();
        assert!(private_pem(&key)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
        assert!(public_pem(&key)
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let tbs = &cert.tbs_certificate;
        assert_eq!(tbs.version, Version::V3);
        assert_eq!(tbs.subject, tbs.issuer);
        assert_eq!(tbs.serial_number.as_bytes().len(), 20);
        let exts = tbs.extensions.as_ref().unwrap();
        assert_eq!(exts.len(), 1);
        assert!(exts[0].critical);
        assert_eq!(exts[0].extn_value.as_bytes(), &[0x30, 0x00]);
        assert!(matches!(tbs.validity.not_after, Time::UtcTime(_)));
    }

    #[test]
    fn refuses_existing_and_nothing() {
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            genkey(&GenkeyRequest::default()),
            Err(GenkeyError::Nothing)
        ));
        let taken = d.path().join("pub.pem");
        std::fs::write(&taken, b"keep").unwrap();
        let req = GenkeyRequest {
            secureboot: None,
            pcr: vec![PcrKeyTarget {
                private_key: d.path().join("priv.pem"),
                public_key: Some(taken.clone()),
            }],
        };
        match genkey(&req) {
            Err(GenkeyError::Present { path }) => assert_eq!(path, taken),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&taken).unwrap(), b"keep");
        assert!(!d.path().join("priv.pem").exists());
    }
}
