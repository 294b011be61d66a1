//! Signing keys in PKCS#11 tokens (HSMs, smart cards, SoftHSM), named by RFC 7512 `pkcs11:`
//! URIs.
//!
//! The URI ([`Pkcs11Uri`]) is parsed without the token: path attributes choose the token and
//! object (`token`, `manufacturer`, `serial`, `model`, `slot-id`, `slot-description`,
//! `slot-manufacturer`, `library-*`, `object` = CKA_LABEL, `id` = CKA_ID bytes, `type`), query
//! attributes say how to get there (`module-path`, `pin-value`, `pin-source`). Names as RFC
//! 7512 §2.3 and p11-kit spell them. An unknown *path* attribute is an error (it restricts the
//! match, and ignoring it could pick another key); an unknown *query* attribute is ignored and
//! kept in [`Pkcs11Uri::ignored_query`] (RFC 7512 §2.3: query attributes are processing hints).
//! `module-name` is not resolved: give `module-path`, or set `BOOTCHAIN_PKCS11_MODULE`.
//!
//! Token access ([`Pkcs11Signer`], feature `pkcs11`, through the `cryptoki` crate) uses only the
//! raw mechanisms every token has (SoftHSM 2.6 offers no `CKM_ECDSA_SHA256`): `CKM_RSA_PKCS`
//! over DigestInfo ‖ digest (RFC 8017 §9.2) and `CKM_ECDSA` over the digest, whose raw r‖s is
//! DER-encoded. Each signature is verified with the public key before it is used.
//!
//! PINs: `pin-value` in the URI, `pin-source` (a file; `file:` URI or path), or the
//! environment variable `BOOTCHAIN_PKCS11_PIN` — in that order. A PIN is held in zeroizing
//! memory and never printed (`Debug` and error messages redact it).

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

/// Environment variable naming the PKCS#11 module when the URI has no `module-path`.
pub const MODULE_ENV: &str = "BOOTCHAIN_PKCS11_MODULE";
/// Environment variable holding the user PIN when the URI has no `pin-value`/`pin-source`.
pub const PIN_ENV: &str = "BOOTCHAIN_PKCS11_PIN";

/// True if `s` is a `pkcs11:` URI (the scheme is case-insensitive, RFC 3986 §3.1).
pub fn is_uri(s: &str) -> bool {
    s.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("pkcs11:"))
}

/// A user PIN: zeroized when dropped, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// A PIN.
    pub fn new(pin: String) -> Self {
        Pin(Zeroizing::new(pin))
    }
    /// The PIN itself, for the token login.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

/// The `type` path attribute (RFC 7512 §2.3: CKA_CLASS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ObjectType {
    /// `private`: CKO_PRIVATE_KEY.
    Private,
    /// `public`: CKO_PUBLIC_KEY.
    Public,
    /// `cert`: CKO_CERTIFICATE.
    Cert,
    /// `secret-key`: CKO_SECRET_KEY.
    SecretKey,
    /// `data`: CKO_DATA.
    Data,
}

/// A parsed RFC 7512 `pkcs11:` URI. Values are percent-decoded; `id` is raw bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Pkcs11Uri {
    /// `token`: the token label.
    pub token: Option<String>,
    /// `manufacturer`: the token manufacturer.
    pub manufacturer: Option<String>,
    /// `serial`: the token serial number.
    pub serial: Option<String>,
    /// `model`: the token model.
    pub model: Option<String>,
    /// `slot-id`: the slot number.
    pub slot_id: Option<u64>,
    /// `slot-description`.
    pub slot_description: Option<String>,
    /// `slot-manufacturer`.
    pub slot_manufacturer: Option<String>,
    /// `library-manufacturer`: the module's manufacturer.
    pub library_manufacturer: Option<String>,
    /// `library-description`: the module's description.
    pub library_description: Option<String>,
    /// `library-version` ("M" or "M.N"), checked against the module's.
    pub library_version: Option<String>,
    /// `object`: CKA_LABEL.
    pub object: Option<String>,
    /// `type`: CKA_CLASS.
    pub object_type: Option<ObjectType>,
    /// `id`: CKA_ID.
    pub id: Option<Vec<u8>>,
    /// `pin-value` (query).
    pub pin_value: Option<Pin>,
    /// `pin-source` (query): a `file:` URI or a path.
    pub pin_source: Option<String>,
    /// `module-name` (query): recorded, not resolved.
    pub module_name: Option<String>,
    /// `module-path` (query): the PKCS#11 module to load.
    pub module_path: Option<PathBuf>,
    /// Names of query attributes that were ignored.
    pub ignored_query: Vec<String>,
}

/// Why a `pkcs11:` URI does not parse.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// Not a `pkcs11:` URI.
    #[error("not a pkcs11: URI")]
    NotPkcs11,
    /// An attribute without `=`.
    #[error("pkcs11: URI attribute {0:?} has no '='")]
    NoValue(String),
    /// A query attribute without `=` (not repeated: it may be part of a PIN).
    #[error("pkcs11: URI query attribute number {0} has no '='")]
    QueryNoValue(usize),
    /// A path attribute RFC 7512 does not define.
    #[error("pkcs11: URI path attribute {0:?} is not one of RFC 7512's (token, manufacturer, serial, model, slot-id, slot-description, slot-manufacturer, library-*, object, type, id)")]
    UnknownAttribute(String),
    /// An attribute given twice (RFC 7512 §2.3 allows each once).
    #[error("pkcs11: URI attribute {0:?} appears twice")]
    Duplicate(String),
    /// A bad `%XX` escape.
    #[error("pkcs11: URI attribute {0:?}: bad percent-encoding")]
    Percent(String),
    /// A textual value that is not UTF-8 after decoding.
    #[error("pkcs11: URI attribute {0:?} is not UTF-8")]
    NotUtf8(String),
    /// A `type` other than private, public, cert, secret-key, data.
    #[error("pkcs11: URI type={0:?} is not private, public, cert, secret-key or data")]
    BadType(String),
    /// A `slot-id` that is not a decimal number.
    #[error("pkcs11: URI slot-id={0:?} is not a number")]
    BadSlotId(String),
}

fn percent_decode(attr: &str, v: &str) -> Result<Vec<u8>, UriError> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or(UriError::Percent(attr.into()))?;
            let s = std::str::from_utf8(hex).map_err(|_| UriError::Percent(attr.into()))?;
            out.push(u8::from_str_radix(s, 16).map_err(|_| UriError::Percent(attr.into()))?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn text(attr: &str, v: &str) -> Result<String, UriError> {
    String::from_utf8(percent_decode(attr, v)?).map_err(|_| UriError::NotUtf8(attr.into()))
}

fn set<T>(slot: &mut Option<T>, attr: &str, v: T) -> Result<(), UriError> {
    if slot.is_some() {
        return Err(UriError::Duplicate(attr.into()));
    }
    *slot = Some(v);
    Ok(())
}

impl Pkcs11Uri {
    /// Parse `pkcs11:PATH[?QUERY]` (RFC 7512 §2.3: path attributes separated by `;`, query
    /// attributes by `&`).
    pub fn parse(s: &str) -> Result<Self, UriError> {
        if !is_uri(s) {
            return Err(UriError::NotPkcs11);
        }
        let rest = &s[7..];
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut u = Pkcs11Uri::default();
        for part in path.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| UriError::NoValue(part.into()))?;
            match k {
                "token" => set(&mut u.token, k, text(k, v)?)?,
                "manufacturer" => set(&mut u.manufacturer, k, text(k, v)?)?,
                "serial" => set(&mut u.serial, k, text(k, v)?)?,
                "model" => set(&mut u.model, k, text(k, v)?)?,
                "slot-description" => set(&mut u.slot_description, k, text(k, v)?)?,
                "slot-manufacturer" => set(&mut u.slot_manufacturer, k, text(k, v)?)?,
                "library-manufacturer" => set(&mut u.library_manufacturer, k, text(k, v)?)?,
                "library-description" => set(&mut u.library_description, k, text(k, v)?)?,
                "library-version" => set(&mut u.library_version, k, text(k, v)?)?,
                "object" => set(&mut u.object, k, text(k, v)?)?,
                "id" => set(&mut u.id, k, percent_decode(k, v)?)?,
                "slot-id" => {
                    let t = text(k, v)?;
                    let n = t.parse().map_err(|_| UriError::BadSlotId(t.clone()))?;
                    set(&mut u.slot_id, k, n)?
                }
                "type" => {
                    let t = match text(k, v)?.as_str() {
                        "private" => ObjectType::Private,
                        "public" => ObjectType::Public,
                        "cert" => ObjectType::Cert,
                        "secret-key" => ObjectType::SecretKey,
                        "data" => ObjectType::Data,
                        other => return Err(UriError::BadType(other.into())),
                    };
                    set(&mut u.object_type, k, t)?
                }
                _ => return Err(UriError::UnknownAttribute(k.into())),
            }
        }
        for (i, part) in query.split('&').filter(|p| !p.is_empty()).enumerate() {
            let (k, v) = part.split_once('=').ok_or(UriError::QueryNoValue(i + 1))?;
            match k {
                "pin-value" => set(&mut u.pin_value, k, Pin::new(text(k, v)?))?,
                "pin-source" => set(&mut u.pin_source, k, text(k, v)?)?,
                "module-name" => set(&mut u.module_name, k, text(k, v)?)?,
                "module-path" => set(&mut u.module_path, k, PathBuf::from(text(k, v)?))?,
                _ => u.ignored_query.push(k.into()),
            }
        }
        Ok(u)
    }
}

/// The URI again, for messages: only the attributes that select the token and object (no PIN,
/// no module), percent-encoding what is not unreserved.
impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn enc(b: &[u8]) -> String {
            b.iter()
                .map(|&c| match c {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        (c as char).to_string()
                    }
                    _ => format!("%{c:02X}"),
                })
                .collect()
        }
        let mut parts = Vec::new();
        for (k, v) in [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("serial", &self.serial),
            ("model", &self.model),
            ("object", &self.object),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={}", enc(v.as_bytes())));
            }
        }
        if let Some(n) = self.slot_id {
            parts.push(format!("slot-id={n}"));
        }
        if let Some(id) = &self.id {
            parts.push(format!(
                "id={}",
                id.iter().map(|b| format!("%{b:02X}")).collect::<String>()
            ));
        }
        if let Some(t) = self.object_type {
            let t = match t {
                ObjectType::Private => "private",
                ObjectType::Public => "public",
                ObjectType::Cert => "cert",
                ObjectType::SecretKey => "secret-key",
                ObjectType::Data => "data",
            };
            parts.push(format!("type={t}"));
        }
        write!(f, "pkcs11:{}", parts.join(";"))
    }
}

/// Errors opening or using a PKCS#11 key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs11Error {
    /// The URI does not parse.
    #[error(transparent)]
    Uri(#[from] UriError),
    /// No module: the URI has no `module-path` and `BOOTCHAIN_PKCS11_MODULE` is not set.
    #[error("{uri}: no PKCS#11 module; add ?module-path=/path/to/module.so to the URI or set BOOTCHAIN_PKCS11_MODULE (SoftHSM: /usr/lib/softhsm/libsofthsm2.so)")]
    NoModule {
        /// The URI (without PIN).
        uri: String,
    },
    /// The module could not be loaded.
    #[cfg(feature = "pkcs11")]
    #[error("cannot load the PKCS#11 module {}", path.display())]
    Module {
        /// The module.
        path: PathBuf,
        /// Why.
        #[source]
        source: cryptoki::error::Error,
    },
    /// A token call failed.
    #[cfg(feature = "pkcs11")]
    #[error("PKCS#11 {op} failed")]
    Token {
        /// What was being done.
        op: &'static str,
        /// The module's error.
        #[source]
        source: cryptoki::error::Error,
    },
    /// No token matches the URI.
    #[error("no PKCS#11 token matches {uri}")]
    NoToken {
        /// The URI (without PIN).
        uri: String,
    },
    /// The module's library attributes do not match the URI's `library-*`.
    #[error("the PKCS#11 module does not match the URI's library-* attributes ({uri})")]
    LibraryMismatch {
        /// The URI (without PIN).
        uri: String,
    },
    /// The token refused the PIN.
    #[error("the PKCS#11 token {token:?} refused the PIN")]
    WrongPin {
        /// The token label.
        token: String,
    },
    /// The token's PIN is locked (too many wrong PINs).
    #[error("the PIN of PKCS#11 token {token:?} is locked")]
    PinLocked {
        /// The token label.
        token: String,
    },
    /// The token needs a login and no PIN was given.
    #[error("PKCS#11 token {token:?} needs a PIN: add pin-source=FILE to the URI or set BOOTCHAIN_PKCS11_PIN")]
    PinRequired {
        /// The token label.
        token: String,
    },
    /// More than one token matches the URI of a private key.
    #[error("{uri} matches {} tokens ({}): add token= (or serial=) to name one", tokens.len(), tokens.join(", "))]
    AmbiguousToken {
        /// The URI (without PIN).
        uri: String,
        /// The labels of the matching tokens.
        tokens: Vec<String>,
    },
    /// The `pin-source` file could not be read.
    #[error("cannot read the PIN from {}", path.display())]
    PinSource {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A `pin-source` that is not a file (such as `|command`).
    #[error("pin-source {0:?}: only files (file: URIs or paths) are supported")]
    UnsupportedPinSource(String),
    /// No private key matches the URI.
    #[error("no private key matches {uri}")]
    NoSuchKey {
        /// The URI (without PIN).
        uri: String,
    },
    /// The URI names an object that is not a private key.
    #[error("{uri} is a {class}, not a private key")]
    NotAPrivateKey {
        /// The URI (without PIN).
        uri: String,
        /// What the object is (CKO_ name).
        class: String,
    },
    /// Several private keys match.
    #[error("{count} private keys match {uri}; add object= or id=")]
    Ambiguous {
        /// The URI (without PIN).
        uri: String,
        /// How many.
        count: usize,
    },
    /// A private key that is not RSA or EC.
    #[error("{uri}: key type {key_type} is not RSA or EC")]
    UnsupportedKeyType {
        /// The URI (without PIN).
        uri: String,
        /// The CKK_ name.
        key_type: String,
    },
    /// A key bootchain does not sign with (curve, size).
    #[error("{uri}: unsupported key")]
    UnsupportedKey {
        /// The URI (without PIN).
        uri: String,
        /// Why.
        #[source]
        source: crate::keys::UnsupportedKey,
    },
    /// An EC key without a public key object or certificate to take the point from.
    #[error(
        "{uri}: no public key object or certificate with the key's id to read its public key from"
    )]
    NoPublicKey {
        /// The URI (without PIN).
        uri: String,
    },
    /// A public key attribute that does not decode.
    #[error("{uri}: the token's public key does not decode")]
    BadPublicKey {
        /// The URI (without PIN).
        uri: String,
    },
    /// No certificate object matches.
    #[error("no certificate matches {uri}")]
    NoCertificate {
        /// The URI (without PIN).
        uri: String,
    },
    /// A certificate object that does not decode.
    #[error("{uri}: the certificate object does not decode")]
    BadCertificate {
        /// The URI (without PIN).
        uri: String,
        /// Why.
        #[source]
        source: crate::keys::KeyError,
    },
    /// The token made a signature the public key does not verify.
    #[error("{uri}: the token's signature does not verify with its public key")]
    BadTokenSignature {
        /// The URI (without PIN).
        uri: String,
    },
}

/// The PIN for `uri`: `pin-value`, else `pin-source`, else `BOOTCHAIN_PKCS11_PIN`.
pub fn resolve_pin(uri: &Pkcs11Uri) -> Result<Option<Pin>, Pkcs11Error> {
    if let Some(p) = &uri.pin_value {
        return Ok(Some(p.clone()));
    }
    if let Some(src) = &uri.pin_source {
        let path = if let Some(p) = src.strip_prefix("file://") {
            PathBuf::from(p)
        } else if let Some(p) = src.strip_prefix("file:") {
            PathBuf::from(p)
        } else if src.starts_with('|') || src.contains("://") {
            // Programs (`|command`) and other URI schemes are not followed: only files.
            return Err(Pkcs11Error::UnsupportedPinSource(src.clone()));
        } else {
            PathBuf::from(src)
        };
        // Bounded (a PIN file is a line; /dev/zero is not), and strictly UTF-8: a lossy
        // conversion would change the PIN and spend one of the token's tries.
        let bytes = Zeroizing::new(crate::fsutil::read_bounded(&path, MAX_PIN_FILE).map_err(
            |source| Pkcs11Error::PinSource {
                path: path.clone(),
                source,
            },
        )?);
        let text = std::str::from_utf8(&bytes).map_err(|_| Pkcs11Error::PinSource {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
        })?;
        let pin = text.trim_end_matches(['\n', '\r']).to_string();
        return Ok(Some(Pin::new(pin)));
    }
    Ok(std::env::var(PIN_ENV).ok().map(Pin::new))
}

/// A `pin-source` file larger than this is refused (a PIN is one line).
const MAX_PIN_FILE: u64 = 4096;

/// The module for `uri`: `module-path`, else `BOOTCHAIN_PKCS11_MODULE`.
pub fn resolve_module(uri: &Pkcs11Uri) -> Result<PathBuf, Pkcs11Error> {
    if let Some(p) = &uri.module_path {
        return Ok(p.clone());
    }
    std::env::var_os(MODULE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| Pkcs11Error::NoModule {
            uri: uri.to_string(),
        })
}

#[cfg(feature = "pkcs11")]
pub use token::{load_certificate, Pkcs11Signer};

#[cfg(feature = "pkcs11")]
mod token {
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, OnceLock};

    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::error::{Error as CkError, RvError};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
    use cryptoki::session::{Session, UserType};
    use cryptoki::slot::Slot;
    use cryptoki::types::AuthPin;
    use der::Decode;
    use x509_cert::Certificate;

    use super::{resolve_module, resolve_pin, ObjectType, Pkcs11Error, Pkcs11Uri};
    use crate::hash::HashAlg;
    use crate::keys::{self, PublicKey, UnsupportedKey};
    use crate::signer::{Signer, SigningError};

    /// OID of P-256 in CKA_EC_PARAMS (RFC 5480 §2.1.1.1, secp256r1).
    const P256_OID: const_oid::ObjectIdentifier = const_oid::db::rfc5912::SECP_256_R_1;
    /// OID of P-384 (RFC 5480 §2.1.1.1, secp384r1).
    const P384_OID: const_oid::ObjectIdentifier = const_oid::db::rfc5912::SECP_384_R_1;

    fn tok(op: &'static str) -> impl Fn(CkError) -> Pkcs11Error {
        move |source| Pkcs11Error::Token { op, source }
    }

    /// One initialised context per module path for the process: C_Initialize may be called
    /// once per module, and the SB key and the PCR key may live in the same token.
    fn context(path: &Path) -> Result<Pkcs11, Pkcs11Error> {
        static MODULES: OnceLock<Mutex<Vec<(PathBuf, Pkcs11)>>> = OnceLock::new();
        let mut m = MODULES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = m.iter().find(|(p, _)| p == path) {
            return Ok(c.clone());
        }
        let module_err = |source| Pkcs11Error::Module {
            path: path.to_path_buf(),
            source,
        };
        let c = Pkcs11::new(path).map_err(module_err)?;
        match c.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => return Err(module_err(e)),
        }
        m.push((path.to_path_buf(), c.clone()));
        Ok(c)
    }

    fn library_matches(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<bool, Pkcs11Error> {
        if uri.library_manufacturer.is_none()
            && uri.library_description.is_none()
            && uri.library_version.is_none()
        {
            return Ok(true);
        }
        let info = ctx.get_library_info().map_err(tok("C_GetInfo"))?;
        let v = info.library_version();
        let version = format!("{}.{}", v.major(), v.minor());
        Ok(uri
            .library_manufacturer
            .as_deref()
            .is_none_or(|m| m == info.manufacturer_id().trim_end())
            && uri
                .library_description
                .as_deref()
                .is_none_or(|d| d == info.library_description().trim_end())
            && uri.library_version.as_deref().is_none_or(|want| {
                want == version || (!want.contains('.') && format!("{want}.0") == version)
            }))
    }

    /// The slots whose token and slot attributes match the URI, with their token labels.
    fn matching_slots(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<Vec<(Slot, String)>, Pkcs11Error> {
        let mut out = Vec::new();
        for slot in ctx.get_slots_with_token().map_err(tok("C_GetSlotList"))? {
            if uri.slot_id.is_some_and(|id| id != slot.id()) {
                continue;
            }
            let ti = ctx.get_token_info(slot).map_err(tok("C_GetTokenInfo"))?;
            let eq = |want: &Option<String>, have: &str| {
                want.as_deref().is_none_or(|w| w == have.trim_end())
            };
            if !(eq(&uri.token, ti.label())
                && eq(&uri.manufacturer, ti.manufacturer_id())
                && eq(&uri.serial, ti.serial_number())
                && eq(&uri.model, ti.model()))
            {
                continue;
            }
            if uri.slot_description.is_some() || uri.slot_manufacturer.is_some() {
                let si = ctx.get_slot_info(slot).map_err(tok("C_GetSlotInfo"))?;
                if !(eq(&uri.slot_description, si.slot_description())
                    && eq(&uri.slot_manufacturer, si.manufacturer_id()))
                {
                    continue;
                }
            }
            out.push((slot, ti.label().trim_end().to_string()));
        }
        Ok(out)
    }

    fn open_session(
        uri: &Pkcs11Uri,
        slot: Slot,
        label: &str,
        ctx: &Pkcs11,
        login: bool,
    ) -> Result<Session, Pkcs11Error> {
        let session = ctx.open_ro_session(slot).map_err(tok("C_OpenSession"))?;
        if !login {
            return Ok(session);
        }
        let ti = ctx.get_token_info(slot).map_err(tok("C_GetTokenInfo"))?;
        let pin = resolve_pin(uri)?;
        let Some(pin) = pin else {
            if ti.login_required() {
                return Err(Pkcs11Error::PinRequired {
                    token: label.into(),
                });
            }
            return Ok(session);
        };
        let auth = AuthPin::from(pin.expose());
        match session.login(UserType::User, Some(&auth)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                Err(Pkcs11Error::WrongPin {
                    token: label.into(),
                })
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(Pkcs11Error::PinLocked {
                token: label.into(),
            }),
            Err(e) => Err(tok("C_Login")(e)),
        }
    }

    fn selector(uri: &Pkcs11Uri) -> Vec<Attribute> {
        let mut t = Vec::new();
        if let Some(l) = &uri.object {
            t.push(Attribute::Label(l.as_bytes().to_vec()));
        }
        if let Some(id) = &uri.id {
            t.push(Attribute::Id(id.clone()));
        }
        t
    }

    fn class_name(c: ObjectClass) -> String {
        match c {
            ObjectClass::SECRET_KEY => "secret key (CKO_SECRET_KEY)".into(),
            ObjectClass::PUBLIC_KEY => "public key (CKO_PUBLIC_KEY)".into(),
            ObjectClass::CERTIFICATE => "certificate (CKO_CERTIFICATE)".into(),
            ObjectClass::DATA => "data object (CKO_DATA)".into(),
            other => other.to_string(),
        }
    }

    fn find_one(
        session: &Session,
        class: ObjectClass,
        sel: &[Attribute],
    ) -> Result<Vec<ObjectHandle>, Pkcs11Error> {
        let mut t = vec![Attribute::Class(class)];
        t.extend_from_slice(sel);
        session.find_objects(&t).map_err(tok("C_FindObjects"))
    }

    fn attr_bytes(attrs: &[Attribute], ty: AttributeType) -> Option<&[u8]> {
        attrs.iter().find_map(|a| match (a, ty) {
            (Attribute::Modulus(v), AttributeType::Modulus)
            | (Attribute::PublicExponent(v), AttributeType::PublicExponent)
            | (Attribute::EcParams(v), AttributeType::EcParams)
            | (Attribute::EcPoint(v), AttributeType::EcPoint)
            | (Attribute::Id(v), AttributeType::Id)
            | (Attribute::Value(v), AttributeType::Value) => Some(v.as_slice()),
            _ => None,
        })
    }

    /// A certificate object (CKO_CERTIFICATE) matching `sel`.
    fn certificate_in(
        session: &Session,
        sel: &[Attribute],
        uri: &str,
    ) -> Result<Option<Certificate>, Pkcs11Error> {
        let Some(h) = find_one(session, ObjectClass::CERTIFICATE, sel)?
            .into_iter()
            .next()
        else {
            return Ok(None);
        };
        let attrs = session
            .get_attributes(h, &[AttributeType::Value])
            .map_err(tok("C_GetAttributeValue"))?;
        let der = attr_bytes(&attrs, AttributeType::Value).unwrap_or_default();
        keys::certificate_from_bytes(der, uri)
            .map(Some)
            .map_err(|source| Pkcs11Error::BadCertificate {
                uri: uri.into(),
                source,
            })
    }

    /// CKA_EC_POINT: DER OCTET STRING holding the point (PKCS#11 2.40 §2.3.3), or the raw
    /// point from tokens that skip the wrapping.
    fn ec_point(v: &[u8]) -> Vec<u8> {
        match der::asn1::OctetString::from_der(v) {
            Ok(o) => o.as_bytes().to_vec(),
            Err(_) => v.to_vec(),
        }
    }

    fn public_key_of(
        session: &Session,
        key_type: KeyType,
        attrs: &[Attribute],
        uri: &str,
    ) -> Result<PublicKey, Pkcs11Error> {
        let bad = || Pkcs11Error::BadPublicKey { uri: uri.into() };
        // The matching public key object and certificate share the private key's CKA_ID
        // (else its CKA_LABEL).
        let id_sel: Vec<Attribute> = match attr_bytes(attrs, AttributeType::Id) {
            Some(id) if !id.is_empty() => vec![Attribute::Id(id.to_vec())],
            _ => attrs
                .iter()
                .find_map(|a| match a {
                    Attribute::Label(l) if !l.is_empty() => Some(vec![Attribute::Label(l.clone())]),
                    _ => None,
                })
                .unwrap_or_default(),
        };
        let public_attrs = |types: &[AttributeType]| -> Result<Vec<Attribute>, Pkcs11Error> {
            if id_sel.is_empty() {
                return Ok(Vec::new());
            }
            match find_one(session, ObjectClass::PUBLIC_KEY, &id_sel)?.first() {
                Some(h) => session
                    .get_attributes(*h, types)
                    .map_err(tok("C_GetAttributeValue")),
                None => Ok(Vec::new()),
            }
        };
        if key_type == KeyType::RSA {
            let (n, e) = match (
                attr_bytes(attrs, AttributeType::Modulus),
                attr_bytes(attrs, AttributeType::PublicExponent),
            ) {
                (Some(n), Some(e)) => (n.to_vec(), e.to_vec()),
                _ => {
                    let p = public_attrs(&[AttributeType::Modulus, AttributeType::PublicExponent])?;
                    match (
                        attr_bytes(&p, AttributeType::Modulus),
                        attr_bytes(&p, AttributeType::PublicExponent),
                    ) {
                        (Some(n), Some(e)) => (n.to_vec(), e.to_vec()),
                        _ => return Err(Pkcs11Error::NoPublicKey { uri: uri.into() }),
                    }
                }
            };
            // The rsa crate's default limit is 4096 bits; bootchain signs with up to 8192.
            let k = rsa::RsaPublicKey::new_with_max_size(
                rsa::BigUint::from_bytes_be(&n),
                rsa::BigUint::from_bytes_be(&e),
                8192,
            )
            .map_err(|_| bad())?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if !(2048..=8192).contains(&bits) {
                return Err(Pkcs11Error::UnsupportedKey {
                    uri: uri.into(),
                    source: UnsupportedKey::RsaBits(bits),
                });
            }
            return Ok(PublicKey::Rsa(k));
        }
        // EC: the curve from the private key, the point from the public key object or the
        // certificate.
        let params = attr_bytes(attrs, AttributeType::EcParams).ok_or_else(bad)?;
        let curve = const_oid::ObjectIdentifier::from_der(params).map_err(|_| bad())?;
        if curve != P256_OID && curve != P384_OID {
            return Err(Pkcs11Error::UnsupportedKey {
                uri: uri.into(),
                source: UnsupportedKey::PrivateCurve,
            });
        }
        let p = public_attrs(&[AttributeType::EcPoint])?;
        if let Some(point) = attr_bytes(&p, AttributeType::EcPoint) {
            let point = ec_point(point);
            return if curve == P256_OID {
                p256::PublicKey::from_sec1_bytes(&point).map(PublicKey::P256)
            } else {
                p384::PublicKey::from_sec1_bytes(&point).map(PublicKey::P384)
            }
            .map_err(|_| bad());
        }
        if id_sel.is_empty() {
            return Err(Pkcs11Error::NoPublicKey { uri: uri.into() });
        }
        match certificate_in(session, &id_sel, uri)? {
            Some(c) => PublicKey::from_certificate(&c).map_err(|_| bad()),
            None => Err(Pkcs11Error::NoPublicKey { uri: uri.into() }),
        }
    }

    /// A private key in a PKCS#11 token ([`Signer`]). Holds a logged-in read-only session
    /// for its lifetime.
    pub struct Pkcs11Signer {
        session: Mutex<Session>,
        key: ObjectHandle,
        id: Option<Vec<u8>>,
        public: PublicKey,
        uri: String,
    }

    impl std::fmt::Debug for Pkcs11Signer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "Pkcs11Signer({}, {:?})", self.uri, self.public)
        }
    }

    impl Pkcs11Signer {
        /// Open the private key `uri` names: load the module, find the token, log in with
        /// the PIN ([`resolve_pin`]), find exactly one private key, read its public key.
        pub fn open(uri: &Pkcs11Uri) -> Result<Self, Pkcs11Error> {
            let shown = uri.to_string();
            if let Some(t) = uri.object_type.filter(|t| *t != ObjectType::Private) {
                let class = match t {
                    ObjectType::Public => ObjectClass::PUBLIC_KEY,
                    ObjectType::Cert => ObjectClass::CERTIFICATE,
                    ObjectType::SecretKey => ObjectClass::SECRET_KEY,
                    _ => ObjectClass::DATA,
                };
                return Err(Pkcs11Error::NotAPrivateKey {
                    uri: shown,
                    class: class_name(class),
                });
            }
            let ctx = context(&resolve_module(uri)?)?;
            if !library_matches(&ctx, uri)? {
                return Err(Pkcs11Error::LibraryMismatch { uri: shown });
            }
            let slots = matching_slots(&ctx, uri)?;
            if slots.is_empty() {
                return Err(Pkcs11Error::NoToken { uri: shown });
            }
            // Logging in to each matching token in turn would spend a PIN try on tokens that
            // do not hold the key, and could pick another token's key: one token only.
            if slots.len() > 1 {
                return Err(Pkcs11Error::AmbiguousToken {
                    uri: shown,
                    tokens: slots.iter().map(|(_, l)| l.clone()).collect(),
                });
            }
            let sel = selector(uri);
            let mut not_found = Pkcs11Error::NoSuchKey { uri: shown.clone() };
            for (slot, label) in slots {
                let session = open_session(uri, slot, &label, &ctx, true)?;
                let keys = find_one(&session, ObjectClass::PRIVATE_KEY, &sel)?;
                let key = match keys.as_slice() {
                    [k] => *k,
                    [] => {
                        // Say what the URI names instead, if anything.
                        if !sel.is_empty() {
                            if let Some(h) = session
                                .find_objects(&sel)
                                .map_err(tok("C_FindObjects"))?
                                .first()
                            {
                                let attrs = session
                                    .get_attributes(*h, &[AttributeType::Class])
                                    .map_err(tok("C_GetAttributeValue"))?;
                                if let Some(Attribute::Class(c)) = attrs.first() {
                                    not_found = Pkcs11Error::NotAPrivateKey {
                                        uri: shown.clone(),
                                        class: class_name(*c),
                                    };
                                }
                            }
                        }
                        continue;
                    }
                    many => {
                        return Err(Pkcs11Error::Ambiguous {
                            uri: shown,
                            count: many.len(),
                        })
                    }
                };
                let attrs = session
                    .get_attributes(
                        key,
                        &[
                            AttributeType::KeyType,
                            AttributeType::Id,
                            AttributeType::Label,
                            AttributeType::Modulus,
                            AttributeType::PublicExponent,
                            AttributeType::EcParams,
                        ],
                    )
                    .map_err(tok("C_GetAttributeValue"))?;
                let key_type = attrs
                    .iter()
                    .find_map(|a| match a {
                        Attribute::KeyType(t) => Some(*t),
                        _ => None,
                    })
                    .ok_or_else(|| Pkcs11Error::BadPublicKey { uri: shown.clone() })?;
                if key_type != KeyType::RSA && key_type != KeyType::EC {
                    return Err(Pkcs11Error::UnsupportedKeyType {
                        uri: shown,
                        key_type: key_type.to_string(),
                    });
                }
                let public = public_key_of(&session, key_type, &attrs, &shown)?;
                let id = attr_bytes(&attrs, AttributeType::Id)
                    .filter(|i| !i.is_empty())
                    .map(<[u8]>::to_vec);
                return Ok(Pkcs11Signer {
                    session: Mutex::new(session),
                    key,
                    id,
                    public,
                    uri: shown,
                });
            }
            Err(not_found)
        }
    }

    impl Signer for Pkcs11Signer {
        fn public_key(&self) -> PublicKey {
            self.public.clone()
        }

        fn sign_digest(&self, hash: HashAlg, digest: &[u8]) -> Result<Vec<u8>, SigningError> {
            if digest.len() != hash.output_len() {
                return Err(SigningError::DigestLength {
                    alg: hash,
                    want: hash.output_len(),
                    got: digest.len(),
                });
            }
            let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
            let bad = || Pkcs11Error::BadTokenSignature {
                uri: self.uri.clone(),
            };
            let sig = match &self.public {
                PublicKey::Rsa(_) => {
                    // CKM_RSA_PKCS over DigestInfo || digest (RFC 8017 §9.2 step 2).
                    let mut m = crate::signer::pkcs1v15(hash).prefix.to_vec();
                    m.extend_from_slice(digest);
                    session
                        .sign(&Mechanism::RsaPkcs, self.key, &m)
                        .map_err(tok("C_Sign"))?
                }
                PublicKey::P256(_) => {
                    let raw = session
                        .sign(&Mechanism::Ecdsa, self.key, digest)
                        .map_err(tok("C_Sign"))?;
                    p256::ecdsa::Signature::from_slice(&raw)
                        .map_err(|_| bad())?
                        .to_der()
                        .as_bytes()
                        .to_vec()
                }
                PublicKey::P384(_) => {
                    let raw = session
                        .sign(&Mechanism::Ecdsa, self.key, digest)
                        .map_err(tok("C_Sign"))?;
                    p384::ecdsa::Signature::from_slice(&raw)
                        .map_err(|_| bad())?
                        .to_der()
                        .as_bytes()
                        .to_vec()
                }
            };
            if !keys::verify_prehashed(&self.public, hash, digest, &sig) {
                return Err(bad().into());
            }
            Ok(sig)
        }

        fn certificate(&self) -> Result<Option<Certificate>, SigningError> {
            let Some(id) = &self.id else { return Ok(None) };
            let session = self.session.lock().unwrap_or_else(|e| e.into_inner());
            Ok(certificate_in(
                &session,
                &[Attribute::Id(id.clone())],
                &self.uri,
            )?)
        }
    }

    /// The certificate object `uri` names (`type=cert`, or any type: the certificate with the
    /// URI's `object`/`id`). Certificates are public objects: no login.
    pub fn load_certificate(uri: &Pkcs11Uri) -> Result<Certificate, Pkcs11Error> {
        let shown = uri.to_string();
        let ctx = context(&resolve_module(uri)?)?;
        let sel = selector(uri);
        for (slot, label) in matching_slots(&ctx, uri)? {
            let session = open_session(uri, slot, &label, &ctx, false)?;
            if let Some(c) = certificate_in(&session, &sel, &shown)? {
                return Ok(c);
            }
        }
        Err(Pkcs11Error::NoCertificate { uri: shown })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query part without `=` is not repeated in the error: it may be the tail of a PIN.
    #[test]
    fn malformed_query_does_not_echo_a_pin() {
        let e = Pkcs11Uri::parse("pkcs11:object=db?pin-value=12&3456").unwrap_err();
        assert!(matches!(e, UriError::QueryNoValue(2)), "{e:?}");
        assert!(!e.to_string().contains("3456"), "{e}");
    }

    /// `pin-source` is read bounded and strictly as UTF-8.
    #[test]
    fn pin_source_is_bounded_and_utf8() {
        let d = tempfile::tempdir().unwrap();
        let uri = |p: &std::path::Path| {
            Pkcs11Uri::parse(&format!("pkcs11:object=db?pin-source={}", p.display())).unwrap()
        };
        let ok = d.path().join("pin");
        std::fs::write(&ok, "1234\n").unwrap();
        assert_eq!(resolve_pin(&uri(&ok)).unwrap().unwrap().expose(), "1234");
        let bad = d.path().join("latin1");
        std::fs::write(&bad, b"12\xe934").unwrap();
        assert!(matches!(
            resolve_pin(&uri(&bad)),
            Err(Pkcs11Error::PinSource { .. })
        ));
        assert!(matches!(
            resolve_pin(&uri(std::path::Path::new("/dev/zero"))),
            Err(Pkcs11Error::PinSource { .. })
        ));
    }

    #[test]
    fn parses_rfc7512_examples() {
        let u = Pkcs11Uri::parse(
            "pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91;serial=?pin-source=file:/etc/token_pin&module-path=/usr/lib/softhsm/libsofthsm2.so&x-vendor=1",
        )
        .unwrap();
        assert_eq!(u.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(u.manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(u.object.as_deref(), Some("my-certificate"));
        assert_eq!(u.object_type, Some(ObjectType::Cert));
        assert_eq!(
            u.id.as_deref(),
            Some(&[0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91][..])
        );
        assert_eq!(u.serial.as_deref(), Some(""));
        assert_eq!(u.pin_source.as_deref(), Some("file:/etc/token_pin"));
        assert_eq!(
            u.module_path.as_deref(),
            Some(std::path::Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        assert_eq!(u.ignored_query, ["x-vendor"]);
        assert!(is_uri("PKCS11:object=a"));
    }

    #[test]
    fn refuses_and_redacts() {
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:colour=red"),
            Err(UriError::UnknownAttribute(_))
        ));
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:id=%G1"),
            Err(UriError::Percent(_))
        ));
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:object=a;object=b"),
            Err(UriError::Duplicate(_))
        ));
        assert!(matches!(
            Pkcs11Uri::parse("pkcs11:type=key"),
            Err(UriError::BadType(_))
        ));
        assert!(matches!(
            Pkcs11Uri::parse("file:/x"),
            Err(UriError::NotPkcs11)
        ));
        let u = Pkcs11Uri::parse("pkcs11:object=db%20key;id=%01?pin-value=123456").unwrap();
        assert_eq!(u.pin_value.as_ref().map(Pin::expose), Some("123456"));
        let shown = format!("{u} {u:?}");
        assert!(!shown.contains("123456"), "{shown}");
        assert!(shown.contains("pkcs11:object=db%20key;id=%01"), "{shown}");
    }

    #[test]
    fn pin_and_module_sources() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pin");
        std::fs::write(&f, "4321\n").unwrap();
        let u =
            Pkcs11Uri::parse(&format!("pkcs11:object=a?pin-source=file:{}", f.display())).unwrap();
        assert_eq!(resolve_pin(&u).unwrap().unwrap().expose(), "4321");
        let u = Pkcs11Uri::parse("pkcs11:object=a?pin-source=%7Cecho%201").unwrap();
        assert!(matches!(
            resolve_pin(&u),
            Err(Pkcs11Error::UnsupportedPinSource(_))
        ));
        let u = Pkcs11Uri::parse("pkcs11:object=a?module-path=/m.so").unwrap();
        assert_eq!(resolve_module(&u).unwrap(), PathBuf::from("/m.so"));
    }
}
