//! systemd's `systemd-tpm2` LUKS2 token (systemd src/cryptsetup/cryptsetup-tokens/luks2-tpm2.c,
//! src/shared/tpm2-util.c): the JSON fields systemd 252+ read and write, the `tpm2-blob`
//! marshalling, and sealing/unsealing a token's secret.
//!
//! The keyslot passphrase is `base64(secret)` (systemd `enroll_tpm2`). The secret is 32 random
//! bytes sealed directly in the TPM (no envelope), so systemd can unseal what we enroll and we
//! can unseal what systemd-cryptenroll enrolls.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::hash::{Digest, HashAlg};
use crate::policy;
use crate::seal::{signature_candidates, RequestError, SealError, SealRequest, Sealer};
use crate::tpm::{
    AuthorizeStep, ParentChoice, ParentKind, PolicySteps, SealedObject, Tpm, TpmError, UnsealError,
    SRK_HANDLE,
};

/// The token type systemd-cryptenroll writes.
pub const TOKEN_TYPE: &str = "systemd-tpm2";
/// Our own token type: a bootchain envelope (src/seal.rs) in the LUKS2 header, for what
/// systemd's token cannot say or do: the sealed PCR values (so a failed unlock names each PCR
/// with its current and sealed value), the parent's Name for every parent (a swapped TPM is
/// named as such), a salted PIN on systemd 252, and the persistent SRK on 252. systemd ignores
/// it; the keyslot passphrase convention is the same (`base64(secret)`).
pub const BOOTCHAIN_TOKEN_TYPE: &str = "bootchain-tpm2";
/// The member of a `bootchain-tpm2` token holding the envelope.
pub const ENVELOPE_MEMBER: &str = "bootchain_envelope";

/// Which token to write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenKind {
    /// `systemd-tpm2`, readable by systemd-cryptsetup.
    #[default]
    Systemd,
    /// `bootchain-tpm2`, readable by bootchain only.
    Bootchain,
}

/// Size of the secret systemd seals (and the LUKS passphrase is the base64 of).
pub const SECRET_LEN: usize = 32;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Tokens systemd writes that bootchain cannot unlock yet, named precisely.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnsupportedToken {
    /// Sealed in several shards (systemd 257 writes `tpm2-blob`/`tpm2-policy-hash` as
    /// arrays).
    #[error("{member} has {shards} shards; bootchain unlocks single-shard tokens only")]
    Sharded {
        /// The member.
        member: &'static str,
        /// How many entries it has.
        shards: usize,
    },
    /// A systemd-pcrlock policy (PolicyAuthorizeNV over the pcrlock NV index) combined with
    /// a signed policy.
    #[error("the token combines a systemd-pcrlock policy (tpm2_pcrlock) with a signed policy (tpm2_pubkey), which bootchain does not evaluate")]
    Pcrlock,
    /// A systemd-pcrlock token of systemd 255/256 names its NV index only in `pcrlock.json`,
    /// and none was given.
    #[error("the token uses a systemd-pcrlock policy whose NV index is named only in pcrlock.json (systemd 255/256 write no tpm2_pcrlock_nv), and no usable pcrlock.json was given (the tools look in {})", crate::pcrlock::DEFAULT_PATHS.join(", "))]
    PcrlockWithoutPolicyFile,
    /// The `pcrlock.json` given is for another NV index than the token's.
    #[error(
        "pcrlock.json is for NV index {file:#010x}, the token's policy is bound to {token:#010x}"
    )]
    PcrlockIndex {
        /// The index in `pcrlock.json`.
        file: u32,
        /// The index in `tpm2_pcrlock_nv`.
        token: u32,
    },
    /// The token's policy is PolicyAuthorizeNV over another Name of the index than the one
    /// `pcrlock.json` gives: the index was redefined after the volume was enrolled.
    #[error("the token's policy is bound to NV index {index:#010x} as it was when the volume was enrolled, and pcrlock.json describes a redefined index (systemd-pcrlock remove-policy/make-policy since): enroll the volume again")]
    PcrlockRedefined {
        /// The index.
        index: u32,
    },
    /// The `pcrlock.json` given cannot be used.
    #[error("the pcrlock.json given cannot be used")]
    PcrlockPolicy(#[source] crate::pcrlock::PcrlockError),
}

/// Errors with tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The JSON is not a systemd-tpm2 token.
    #[error("malformed systemd-tpm2 token")]
    Malformed(#[source] MalformedToken),
    /// A token systemd writes that bootchain cannot unlock yet.
    #[error("unsupported systemd-tpm2 token")]
    Unsupported(#[from] UnsupportedToken),
    /// A TPM object is too large for `tpm2-blob`'s 16-bit sizes.
    #[error("TPM object too large for tpm2-blob ({0} bytes)")]
    ObjectTooLarge(usize),
    /// A token or envelope could not be turned into JSON.
    #[error("serializing the {what}")]
    Serialize {
        /// What was serialized.
        what: &'static str,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// Sealing or unsealing failed.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// What is wrong with a token ([`TokenError::Malformed`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedToken {
    /// Not JSON of a token's shape.
    #[error(transparent)]
    Json(serde_json::Error),
    /// Another token type.
    #[error("type {0:?} is not {TOKEN_TYPE}")]
    Type(String),
    /// `tpm2-blob` is empty.
    #[error("empty tpm2-blob")]
    EmptyBlob,
    /// A member that is not base64.
    #[error("{field} is not base64")]
    Base64 {
        /// The member.
        field: &'static str,
        /// The decoder's error.
        #[source]
        source: base64::DecodeError,
    },
    /// `tpm2-pcr-bank` names no hash algorithm.
    #[error("tpm2-pcr-bank")]
    Bank(#[source] crate::hash::UnknownHashAlg),
    /// `tpm2_srk` is not a serialized ESYS_TR.
    #[error("tpm2_srk is not a serialized ESYS_TR")]
    SrkNotEsysTr,
    /// `tpm2_pcrlock_nv` is not a serialized ESYS_TR.
    #[error("tpm2_pcrlock_nv is not a serialized ESYS_TR")]
    PcrlockNvNotEsysTr,
    /// `tpm2_srk` names another handle.
    #[error("tpm2_srk names handle {0:#x}, only {SRK_HANDLE:#x} is supported")]
    SrkHandle(u32),
    /// An unknown `tpm2-primary-alg`.
    #[error("tpm2-primary-alg {0:?}")]
    PrimaryAlg(String),
    /// `tpm2_pubkey` is not an RSA public key.
    #[error("tpm2_pubkey")]
    PublicKey(#[source] Box<crate::measure::MeasureError>),
    /// `tpm2-blob` ends inside a structure.
    #[error("tpm2-blob: {0} truncated")]
    BlobTruncated(&'static str),
    /// `tpm2-blob` has bytes after TPM2B_PUBLIC.
    #[error("tpm2-blob has trailing data (an offline-sealed object with a seed is not supported)")]
    BlobTrailing,
    /// `tpm2-policy-hash` is not a SHA-256 digest.
    #[error("tpm2-policy-hash")]
    PolicyHash(#[source] crate::hash::DigestParseError),
    /// A `bootchain-tpm2` token without its envelope.
    #[error("no {ENVELOPE_MEMBER} member")]
    NoEnvelope,
}

impl From<MalformedToken> for TokenError {
    fn from(e: MalformedToken) -> Self {
        TokenError::Malformed(e)
    }
}

impl From<crate::pin::PinError> for TokenError {
    fn from(e: crate::pin::PinError) -> Self {
        TokenError::Seal(SealError::Pin(e))
    }
}

impl From<TpmError> for TokenError {
    fn from(e: TpmError) -> Self {
        TokenError::Seal(SealError::Tpm(e))
    }
}

/// A `systemd-tpm2` token. Field names are systemd's (mixed `-` and `_`, as in 252+).
/// Unknown members are kept, so a token read and written back loses nothing.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct SystemdTpm2Token {
    /// "systemd-tpm2".
    #[serde(rename = "type")]
    pub kind: String,
    /// Keyslots, as strings.
    pub keyslots: Vec<String>,
    /// base64(TPM2B_PRIVATE || TPM2B_PUBLIC).
    #[serde(rename = "tpm2-blob")]
    pub blob: String,
    /// Literal PCRs.
    #[serde(rename = "tpm2-pcrs")]
    pub pcrs: Vec<u32>,
    /// Bank.
    #[serde(
        rename = "tpm2-pcr-bank",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pcr_bank: Option<String>,
    /// "ecc" / "rsa": a transient legacy primary (absent with `tpm2_srk`).
    #[serde(
        rename = "tpm2-primary-alg",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub primary_alg: Option<String>,
    /// The policy digest, hex.
    #[serde(rename = "tpm2-policy-hash")]
    pub policy_hash: String,
    /// PIN (PolicyAuthValue).
    #[serde(rename = "tpm2-pin", default)]
    pub pin: bool,
    /// base64 of the PCR public key PEM file.
    #[serde(
        rename = "tpm2_pubkey",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pubkey: Option<String>,
    /// Signed PCRs.
    #[serde(
        rename = "tpm2_pubkey_pcrs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub pubkey_pcrs: Option<Vec<u32>>,
    /// PIN salt, base64 (systemd ≥ 253).
    #[serde(rename = "tpm2_salt", default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Serialized ESYS_TR of the SRK, base64 (systemd ≥ 254).
    #[serde(rename = "tpm2_srk", default, skip_serializing_if = "Option::is_none")]
    pub srk: Option<String>,
    /// Members we do not interpret.
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// Marshal `tpm2-blob`: TPM2B_PRIVATE || TPM2B_PUBLIC, and for an object wrapped offline
/// || TPM2B_ENCRYPTED_SECRET (systemd `tpm2_marshal_blob`).
pub fn marshal_blob(obj: &SealedObject) -> Result<Vec<u8>, TokenError> {
    let mut v = Vec::with_capacity(6 + obj.private.len() + obj.public.len());
    for part in [&obj.private, &obj.public]
        .into_iter()
        .chain(obj.seed.as_ref())
    {
        let n = u16::try_from(part.len()).map_err(|_| TokenError::ObjectTooLarge(part.len()))?;
        v.extend_from_slice(&n.to_be_bytes());
        v.extend_from_slice(part);
    }
    Ok(v)
}

/// The parts of a `tpm2-blob`: TPM2B_PRIVATE and TPMT_PUBLIC buffers, and the encrypted seed
/// (TPM2B_ENCRYPTED_SECRET contents) of an object wrapped offline (systemd ≥ 255
/// `--tpm2-device-key`), which must be imported before it is loaded.
pub type BlobParts = (Vec<u8>, Vec<u8>, Option<Vec<u8>>);

/// Split `tpm2-blob` into its parts ([`BlobParts`]).
pub fn unmarshal_blob(b: &[u8]) -> Result<BlobParts, TokenError> {
    let mut rest = b;
    let mut take = |what: &'static str| -> Result<Vec<u8>, TokenError> {
        if rest.len() < 2 {
            return Err(MalformedToken::BlobTruncated(what).into());
        }
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if rest.len() < 2 + n {
            return Err(MalformedToken::BlobTruncated(what).into());
        }
        let part = rest[2..2 + n].to_vec();
        rest = &rest[2 + n..];
        Ok(part)
    };
    let private = take("TPM2B_PRIVATE")?;
    let public = take("TPM2B_PUBLIC")?;
    let consumed = 4 + private.len() + public.len();
    let seed = match b.len() > consumed {
        true => Some(take("TPM2B_ENCRYPTED_SECRET")?),
        false => None,
    };
    let used = consumed + seed.as_ref().map_or(0, |s| 2 + s.len());
    if used != b.len() {
        return Err(MalformedToken::BlobTrailing.into());
    }
    Ok((private, public, seed))
}

/// ESYS_TR serialization of a persistent key (tpm2-tss `iesys_MU_IESYS_RESOURCE`):
/// `u32 handle || TPM2B_NAME || u32 IESYSC_KEY_RSRC(1) || TPM2B_PUBLIC`. We read the handle and
/// the Name.
fn parse_srk_tr(b: &[u8]) -> Result<(u32, Vec<u8>), TokenError> {
    parse_esys_tr(b, MalformedToken::SrkNotEsysTr)
}

/// The handle and Name of any ESYS_TR serialization (they start alike); `err` if too short.
fn parse_esys_tr(b: &[u8], err: MalformedToken) -> Result<(u32, Vec<u8>), TokenError> {
    let parsed = (|| {
        let handle = u32::from_be_bytes(b.get(0..4)?.try_into().ok()?);
        let n = usize::from(u16::from_be_bytes(b.get(4..6)?.try_into().ok()?));
        Some((handle, b.get(6..6 + n)?.to_vec()))
    })();
    parsed.ok_or(TokenError::Malformed(err))
}

impl SystemdTpm2Token {
    /// Parse a token's JSON. systemd 257 may write `tpm2-blob` and `tpm2-policy-hash` as
    /// arrays (one entry per shard); a single shard is read as the plain member, several and
    /// pcrlock policies are refused with [`UnsupportedToken`] before anything else.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, TokenError> {
        let mut v = v.clone();
        if is_pcrlock_json(&v) && v.get("tpm2_pubkey").is_some() {
            return Err(UnsupportedToken::Pcrlock.into());
        }
        for member in ["tpm2-blob", "tpm2-policy-hash"] {
            if let Some(serde_json::Value::Array(shards)) = v.get(member) {
                match shards.as_slice() {
                    [one] => {
                        let one = one.clone();
                        v[member] = one;
                    }
                    _ => {
                        return Err(UnsupportedToken::Sharded {
                            member,
                            shards: shards.len(),
                        }
                        .into())
                    }
                }
            }
        }
        let t: SystemdTpm2Token = serde_json::from_value(v).map_err(MalformedToken::Json)?;
        if t.kind != TOKEN_TYPE {
            return Err(MalformedToken::Type(t.kind).into());
        }
        if t.blob.is_empty() {
            return Err(MalformedToken::EmptyBlob.into());
        }
        Ok(t)
    }

    /// Whether the token's policy is systemd-pcrlock's (`tpm2_pcrlock`).
    pub fn is_pcrlock(&self) -> bool {
        self.other
            .get("tpm2_pcrlock")
            .and_then(serde_json::Value::as_bool)
            == Some(true)
    }

    /// systemd-pcrlock's NV index (handle, Name) from `tpm2_pcrlock_nv` (systemd 257: the
    /// index's ESYS_TR serialization), for a token with `tpm2_pcrlock`; `None` for other
    /// tokens and for pcrlock tokens of systemd 255/256, which do not record it.
    pub fn pcrlock_nv(&self) -> Result<Option<(u32, Vec<u8>)>, TokenError> {
        if !self.is_pcrlock() {
            return Ok(None);
        }
        let Some(text) = self
            .other
            .get("tpm2_pcrlock_nv")
            .and_then(serde_json::Value::as_str)
        else {
            return Ok(None);
        };
        let raw = B64.decode(text).map_err(|source| MalformedToken::Base64 {
            field: "tpm2_pcrlock_nv",
            source,
        })?;
        parse_esys_tr(&raw, MalformedToken::PcrlockNvNotEsysTr).map(Some)
    }

    /// The bank (systemd's default before `tpm2-pcr-bank` existed: SHA-256).
    pub fn bank(&self) -> Result<HashAlg, TokenError> {
        match &self.pcr_bank {
            None => Ok(HashAlg::Sha256),
            Some(b) => b.parse().map_err(|e| MalformedToken::Bank(e).into()),
        }
    }

    /// The parent this token's object lives under.
    pub fn parent(&self) -> Result<(ParentKind, Option<Vec<u8>>), TokenError> {
        if let Some(srk) = &self.srk {
            let raw = B64.decode(srk).map_err(|source| MalformedToken::Base64 {
                field: "tpm2_srk",
                source,
            })?;
            let (handle, name) = parse_srk_tr(&raw)?;
            if handle != SRK_HANDLE {
                return Err(MalformedToken::SrkHandle(handle).into());
            }
            return Ok((ParentKind::Srk, Some(name)));
        }
        match self.primary_alg.as_deref() {
            None | Some("ecc") => Ok((ParentKind::LegacyEcc, None)),
            Some("rsa") => Ok((ParentKind::LegacyRsa, None)),
            Some(other) => Err(MalformedToken::PrimaryAlg(other.to_string()).into()),
        }
    }

    /// The PCR public key, if the token uses a signed policy.
    pub fn public_key(&self) -> Result<Option<rsa::RsaPublicKey>, TokenError> {
        let Some(p) = &self.pubkey else {
            return Ok(None);
        };
        let pem = B64.decode(p).map_err(|source| MalformedToken::Base64 {
            field: "tpm2_pubkey",
            source,
        })?;
        crate::measure::rsa_public_key_from_pem(&pem)
            .map(Some)
            .map_err(|e| MalformedToken::PublicKey(Box::new(e)).into())
    }
}

/// What to enroll: the policy and parent as for an envelope ([`ParentChoice::Auto`] means
/// systemd's legacy ECC primary, which every systemd ≥ 250 can recreate), and how to hash a PIN.
#[derive(Clone, Debug)]
pub struct EnrollRequest<'a> {
    /// Policy, parent and PIN.
    pub seal: SealRequest<'a>,
    /// Hash the PIN as systemd 252 (unsalted SHA-256), so 252's unlock accepts it; else salted
    /// as systemd ≥ 253 (`tpm2_salt`). `systemd-tpm2` tokens only.
    pub unsalted_pin: bool,
    /// The token type to write.
    pub kind: TokenKind,
}

/// Seal a fresh 32-byte secret in a `bootchain-tpm2` token (keyslots still to fill in).
pub fn enroll_envelope(
    tpm: &mut Tpm,
    req: &EnrollRequest<'_>,
) -> Result<(serde_json::Value, Zeroizing<Vec<u8>>), TokenError> {
    enroll_envelope_by(&mut Sealer::Tpm(tpm), req)
}

/// [`enroll_envelope`] with any [`Sealer`] (offline sealing for a TPM elsewhere).
pub fn enroll_envelope_by(
    sealer: &mut Sealer<'_>,
    req: &EnrollRequest<'_>,
) -> Result<(serde_json::Value, Zeroizing<Vec<u8>>), TokenError> {
    let mut secret = Zeroizing::new(vec![0u8; SECRET_LEN]);
    getrandom_fill(&mut secret)?;
    let env = crate::seal::seal_by(sealer, &req.seal, &secret)?;
    let env = serde_json::to_value(&env).map_err(|source| TokenError::Serialize {
        what: "envelope",
        source,
    })?;
    Ok((
        serde_json::json!({ "type": BOOTCHAIN_TOKEN_TYPE, "keyslots": [], ENVELOPE_MEMBER: env }),
        secret,
    ))
}

/// Unseal the secret of a `bootchain-tpm2` token.
pub fn unseal_envelope(
    tpm: &mut Tpm,
    token: &serde_json::Value,
    opts: &crate::seal::UnsealOptions<'_>,
) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    Ok(crate::seal::unseal(tpm, &envelope_of(token)?, opts)?)
}

/// The envelope inside a `bootchain-tpm2` token.
pub fn envelope_of(token: &serde_json::Value) -> Result<crate::seal::Envelope, TokenError> {
    let env = token
        .get(ENVELOPE_MEMBER)
        .ok_or(MalformedToken::NoEnvelope)?;
    Ok(crate::seal::Envelope::from_json(&env.to_string())?)
}

/// Seal a fresh 32-byte secret for a token. Returns the token (keyslot still to fill in) and
/// the secret; the LUKS passphrase is [`passphrase`] of it.
pub fn enroll(
    tpm: &mut Tpm,
    req: &EnrollRequest<'_>,
) -> Result<(SystemdTpm2Token, Zeroizing<Vec<u8>>), TokenError> {
    enroll_by(&mut Sealer::Tpm(tpm), req)
}

/// [`enroll`] with any [`Sealer`]. Offline the parent is the given SRK, recorded as
/// `tpm2_srk`, as systemd-cryptenroll `--tpm2-device-key` does; a request for another parent
/// is refused.
pub fn enroll_by(
    sealer: &mut Sealer<'_>,
    req: &EnrollRequest<'_>,
) -> Result<(SystemdTpm2Token, Zeroizing<Vec<u8>>), TokenError> {
    let r = &req.seal;
    let parent = match (r.parent, &sealer) {
        (_, Sealer::Offline(p)) if p.is_endorsement_key() => {
            return Err(SealError::Request(RequestError::EndorsementKeyToken).into())
        }
        (ParentChoice::Auto | ParentChoice::Kind(ParentKind::Srk), Sealer::Offline(_)) => {
            ParentKind::Srk
        }
        (ParentChoice::Kind(other), Sealer::Offline(_)) => {
            return Err(SealError::Request(RequestError::OfflineParent(other)).into())
        }
        (ParentChoice::Auto, _) => ParentKind::LegacyEcc,
        (ParentChoice::Kind(k), _) => k,
    };
    let (primary_alg, srk) = match parent {
        ParentKind::LegacyEcc => (Some("ecc".to_string()), None),
        ParentKind::LegacyRsa => (Some("rsa".to_string()), None),
        ParentKind::Srk => (None, Some(B64.encode(sealer.serialize_srk()?))),
        other => return Err(SealError::Request(RequestError::SystemdParent(other)).into()),
    };
    let policy = crate::seal::compute_policy(&r.literal, r.authorize, r.pin.is_some())?;
    let (pubkey, pubkey_pcrs) = match &policy.authorize {
        Some(a) => (
            Some(B64.encode(a.public_key.as_bytes())),
            Some(a.pcrs.clone()),
        ),
        None => (None, None),
    };
    let digest = policy.digest;
    let literal = policy.literal;
    let (salt, auth) = match r.pin {
        Some(pin) if req.unsalted_pin => (None, Some(crate::pin::pin_auth_value(pin, None)?)),
        Some(pin) => {
            let mut salt = [0u8; crate::pin::PIN_SALT_LEN];
            getrandom_fill(&mut salt)?;
            (
                Some(B64.encode(salt)),
                Some(crate::pin::pin_auth_value(pin, Some(&salt))?),
            )
        }
        None => (None, None),
    };
    let mut secret = Zeroizing::new(vec![0u8; SECRET_LEN]);
    getrandom_fill(&mut secret)?;
    let obj = sealer.seal_object(
        ParentChoice::Kind(parent),
        &digest,
        &secret,
        auth.as_ref().map(|a| a.as_slice()),
    )?;
    let token = SystemdTpm2Token {
        kind: TOKEN_TYPE.into(),
        keyslots: Vec::new(),
        blob: B64.encode(marshal_blob(&obj)?),
        pcrs: literal,
        pcr_bank: Some(r.literal.bank().to_string()),
        primary_alg,
        policy_hash: digest.to_hex(),
        pin: r.pin.is_some(),
        pubkey,
        pubkey_pcrs,
        salt,
        srk,
        other: Default::default(),
    };
    Ok((token, secret))
}

fn getrandom_fill(buf: &mut [u8]) -> Result<(), TokenError> {
    use aes_gcm::aead::rand_core::RngCore;
    aes_gcm::aead::OsRng
        .try_fill_bytes(buf)
        .map_err(|e| SealError::Request(RequestError::Random(e)).into())
}

/// The LUKS passphrase for a token secret: base64, standard alphabet, padded.
pub fn passphrase(secret: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(B64.encode(secret))
}

/// A `systemd-tpm2` token checked and decoded for [`unseal`], short of the TPM: the blob
/// unmarshalled, the parent (and the SRK's Name) parsed, the PIN turned into the authValue, the
/// matching `.pcrsig` entries picked. All of this runs on a header the host may have written,
/// before any TPM command.
pub struct PreparedToken {
    obj: SealedObject,
    parent_name: Option<Vec<u8>>,
    bank: HashAlg,
    pcrs: Vec<u32>,
    expected: Digest,
    authorize: Option<(Vec<u8>, Vec<u32>)>,
    pcrlock_nv: Option<(u32, Vec<u8>)>,
    super_pcr: Option<crate::pcrlock::SuperPcr>,
    candidates: Vec<crate::tpm::SignedPolicy>,
    auth: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for PreparedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedToken")
            .field("parent", &self.obj.parent)
            .field("bank", &self.bank)
            .field("pcrs", &self.pcrs)
            .field("expected", &self.expected)
            .field("signature_candidates", &self.candidates.len())
            .field("auth_value", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl PreparedToken {
    /// The parent the sealed object lives under.
    pub fn parent(&self) -> ParentKind {
        self.obj.parent
    }

    /// The `.pcrsig` entries that may satisfy the signed policy (empty without one).
    pub fn signature_candidates(&self) -> usize {
        self.candidates.len()
    }
}

/// systemd-pcrlock's NV index and the predictions its policy is over, for a pcrlock token:
/// the index from `tpm2_pcrlock_nv` (systemd 257) or else from `pcrlock.json` (systemd
/// 255/256), which must agree when both name one. Without `pcrlock.json` a 257 token can
/// still unlock when the index holds the zero policy (no PCRs predicted).
fn pcrlock_binding(
    t: &SystemdTpm2Token,
    file: Option<&crate::pcrlock::PcrlockPolicy>,
) -> Result<PcrlockBinding, TokenError> {
    if !t.is_pcrlock() {
        return Ok((None, None));
    }
    let nv = match (t.pcrlock_nv()?, file) {
        (Some((index, _)), Some(f)) if f.nv_index() != index => {
            return Err(UnsupportedToken::PcrlockIndex {
                file: f.nv_index(),
                token: index,
            }
            .into())
        }
        (Some(nv), _) => nv,
        (None, Some(f)) => (f.nv_index(), f.nv_name()),
        (None, None) => return Err(UnsupportedToken::PcrlockWithoutPolicyFile.into()),
    };
    let super_pcr = file
        .map(|f| f.super_pcr())
        .transpose()
        .map_err(UnsupportedToken::PcrlockPolicy)?;
    Ok((Some(nv), super_pcr))
}

type PcrlockBinding = (Option<(u32, Vec<u8>)>, Option<crate::pcrlock::SuperPcr>);

/// Check and decode token `t` for unsealing (see [`PreparedToken`]).
pub fn prepare(
    t: &SystemdTpm2Token,
    opts: &crate::seal::UnsealOptions<'_>,
) -> Result<PreparedToken, TokenError> {
    let (signatures, pin) = (opts.signatures, opts.pin);
    let raw = B64
        .decode(&t.blob)
        .map_err(|source| MalformedToken::Base64 {
            field: "tpm2-blob",
            source,
        })?;
    let (private, public, seed) = unmarshal_blob(&raw)?;
    let (parent, parent_name) = t.parent()?;
    let bank = t.bank()?;
    let expected =
        Digest::from_hex(HashAlg::Sha256, &t.policy_hash).map_err(MalformedToken::PolicyHash)?;
    let key = t.public_key()?;
    let area = key
        .as_ref()
        .map(policy::rsa_public_area)
        .transpose()
        .map_err(SealError::from)?;
    let signed_pcrs = t.pubkey_pcrs.clone().unwrap_or_default();
    let (pcrlock_nv, super_pcr) = pcrlock_binding(t, opts.pcrlock)?;
    // A pcrlock policy without literal PCRs is known in software: PolicyAuthorizeNV over the
    // index's Name, then PolicyAuthValue with a PIN. A token whose policy hash differs was
    // bound to an earlier definition of the index (systemd 255/256 tokens take the Name from
    // pcrlock.json, which follows the index).
    if let (Some((index, name)), true) = (&pcrlock_nv, t.pcrs.is_empty()) {
        let mut want = policy::policy_authorize_nv(name);
        if t.pin {
            want = policy::policy_auth_value(&want);
        }
        if want != expected {
            return Err(UnsupportedToken::PcrlockRedefined { index: *index }.into());
        }
    }
    let candidates = match &key {
        Some(k) => {
            let sigs = signatures.ok_or(SealError::SignaturesRequired)?;
            signature_candidates(sigs, k, bank, &signed_pcrs)?
        }
        None => Vec::new(),
    };
    let auth = match (t.pin, pin) {
        (true, Some(pin)) => {
            let salt = t
                .salt
                .as_ref()
                .map(|s| B64.decode(s))
                .transpose()
                .map_err(|source| MalformedToken::Base64 {
                    field: "tpm2_salt",
                    source,
                })?;
            Some(crate::pin::pin_auth_value(pin, salt.as_deref())?)
        }
        (true, None) => return Err(SealError::PinRequired.into()),
        (false, _) => None,
    };
    Ok(PreparedToken {
        obj: SealedObject {
            private,
            public,
            parent_name: parent_name.clone().unwrap_or_default(),
            parent,
            seed,
        },
        parent_name,
        bank,
        pcrs: t.pcrs.clone(),
        expected,
        authorize: area.map(|a| (a, signed_pcrs)),
        pcrlock_nv,
        super_pcr,
        candidates,
        auth,
    })
}

/// Unseal a token's secret. Errors say which PCRs differ, which signed PCRs have no signature,
/// or how many PIN tries are left. The token is checked ([`prepare`]) before the first TPM
/// command.
pub fn unseal(
    tpm: &mut Tpm,
    t: &SystemdTpm2Token,
    opts: &crate::seal::UnsealOptions<'_>,
) -> Result<Zeroizing<Vec<u8>>, TokenError> {
    let p = prepare(t, opts)?;
    let steps = PolicySteps {
        authorize_nv: p.pcrlock_nv.as_ref().map(|(i, n)| (*i, n.as_slice())),
        super_pcr: p.super_pcr.as_ref(),
        authorize: p.authorize.as_ref().map(|(a, pcrs)| AuthorizeStep {
            public_area: a,
            bank: p.bank,
            pcrs,
            candidates: &p.candidates,
        }),
        pcrs: Some((p.bank, &p.pcrs)),
        auth_value: p.auth.as_ref().map(|a| a.as_slice()),
    };
    match tpm.unseal(&p.obj, p.parent_name.as_deref(), &steps, &p.expected) {
        Ok(s) => Ok(s),
        Err(UnsealError::PolicyMismatch { expected, actual }) => {
            // The token does not record the values sealed to; name the PCRs and their values
            // now so the user can compare with a prediction.
            Err(SealError::PcrPolicyMismatch {
                current: crate::seal::current_values(tpm, p.bank, &p.pcrs)?,
                expected,
                actual,
            }
            .into())
        }
        Err(UnsealError::NoSignature {
            bank,
            pcrs,
            approved,
        }) => Err(crate::seal::not_signed(tpm, bank, &pcrs, approved, p.candidates.len()).into()),
        Err(e) => Err(SealError::Unseal(e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_round_trip_and_truncation() {
        let obj = SealedObject {
            private: vec![1, 2, 3],
            public: vec![4, 5],
            parent_name: vec![],
            parent: ParentKind::LegacyEcc,
            seed: None,
        };
        let b = marshal_blob(&obj).unwrap();
        assert_eq!(b, [0, 3, 1, 2, 3, 0, 2, 4, 5]);
        assert_eq!(
            unmarshal_blob(&b).unwrap(),
            (vec![1, 2, 3], vec![4, 5], None)
        );
        let seeded = SealedObject {
            seed: Some(vec![9]),
            ..obj.clone()
        };
        let s = marshal_blob(&seeded).unwrap();
        assert_eq!(unmarshal_blob(&s).unwrap().2, Some(vec![9]));
        for n in 0..b.len() {
            assert!(unmarshal_blob(&b[..n]).is_err(), "{n}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(unmarshal_blob(&long).is_err());
    }
}

/// Errors enrolling into or unlocking a LUKS2 volume.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LuksTokenError {
    /// The header operation failed.
    #[error(transparent)]
    Luks(#[from] crate::luks::LuksError),
    /// Sealing or unsealing failed.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// No TPM2 token (or not the requested one).
    #[error("{device} has no systemd-tpm2 or bootchain-tpm2 token{}", .id.map(|i| format!(" with id {i}")).unwrap_or_default())]
    NoToken {
        /// The device.
        device: String,
        /// The requested id.
        id: Option<u32>,
    },
    /// The token is not a TPM2 token (neither systemd's nor ours): not ours to remove.
    #[error("token {id} is a {kind:?} token, not a TPM2 token of ours or systemd's")]
    NotTpm2 {
        /// The token.
        id: u32,
        /// Its type.
        kind: String,
    },
    /// A token's `keyslots` member is not a list of keyslot numbers.
    #[error("token {id}: keyslot {slot} is not a keyslot number")]
    BadKeyslot {
        /// The token.
        id: u32,
        /// The entry.
        slot: String,
    },
    /// Removing the token's keyslots would leave the volume without any keyslot.
    #[error("refusing: removing token {id} would remove the last keyslot")]
    LastKeyslot {
        /// The token.
        id: u32,
    },
    /// Every token failed; each reason is listed.
    #[error("no TPM2 token of {device} could be unsealed: {}", .reasons.iter().map(|(i, e)| format!("token {i}: {}", crate::error::Chain(e))).collect::<Vec<_>>().join("; "))]
    AllFailed {
        /// The device.
        device: String,
        /// Token id and why it failed.
        reasons: Vec<(u32, TokenError)>,
    },
}

/// One token of a LUKS2 header as `bootchain luks list` shows it.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct TokenSummary {
    /// Token id.
    pub token: u32,
    /// Token type (`systemd-tpm2`, `bootchain-tpm2`, `systemd-fido2`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The keyslots it opens, as the header lists them.
    pub keyslots: serde_json::Value,
    /// The policy of a TPM2 token.
    #[serde(flatten)]
    pub tpm: Option<TpmTokenSummary>,
    /// Why a TPM2 token could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The policy of a TPM2 token.
#[derive(Clone, Debug, serde::Serialize)]
#[non_exhaustive]
pub struct TpmTokenSummary {
    /// PCR bank.
    pub pcr_bank: String,
    /// Literal PCRs.
    pub pcrs: Vec<u32>,
    /// PCRs of the signed policy, if any.
    pub pubkey_pcrs: Option<Vec<u32>>,
    /// Whether a PIN is needed.
    pub pin: bool,
    /// The parent key.
    pub parent: String,
    /// The policy digest, hex.
    pub policy: String,
}

/// The tokens of `luks` (`bootchain luks list`).
pub fn list_luks(luks: &crate::luks::Luks) -> Result<Vec<TokenSummary>, LuksTokenError> {
    let md = luks.metadata()?;
    Ok(md.tokens.iter().map(|(id, v)| summarize(*id, v)).collect())
}

fn summarize(id: u32, v: &serde_json::Value) -> TokenSummary {
    let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or("?");
    let mut s = TokenSummary {
        token: id,
        kind: kind.to_string(),
        keyslots: v.get("keyslots").cloned().unwrap_or_default(),
        tpm: None,
        error: None,
    };
    let chain = |e: &dyn std::error::Error| crate::error::Chain(e).to_string();
    if kind == BOOTCHAIN_TOKEN_TYPE {
        match envelope_of(v) {
            Ok(env) => {
                s.tpm = Some(TpmTokenSummary {
                    pcr_bank: env.policy.bank.to_string(),
                    pcrs: env.policy.pcrs.iter().map(|p| p.get()).collect(),
                    pubkey_pcrs: env.policy.authorize.as_ref().map(|a| a.pcrs.clone()),
                    pin: env.policy.pin.is_some(),
                    parent: env.parent.kind.to_string(),
                    policy: env.policy.digest.to_hex(),
                })
            }
            Err(e) => s.error = Some(chain(&e)),
        }
    } else if kind == TOKEN_TYPE {
        match SystemdTpm2Token::from_json(v) {
            Ok(t) => {
                s.tpm = Some(TpmTokenSummary {
                    pcr_bank: t.bank().map(|b| b.to_string()).unwrap_or_default(),
                    pcrs: t.pcrs.clone(),
                    pubkey_pcrs: t.pubkey_pcrs.clone(),
                    pin: t.pin,
                    parent: t
                        .parent()
                        .map(|(k, _)| k.to_string())
                        .unwrap_or_else(|e| chain(&e)),
                    policy: t.policy_hash.clone(),
                })
            }
            Err(e) => s.error = Some(chain(&e)),
        }
    }
    s
}

/// Remove TPM2 token `id` of `luks` and the keyslots it opens (`bootchain luks remove`), but
/// never the last keyslot: that is refused before the header is touched. Returns the removed
/// keyslots.
pub fn remove_luks(luks: &crate::luks::Luks, id: u32) -> Result<Vec<u32>, LuksTokenError> {
    let md = luks.metadata()?;
    let Some(v) = md.tokens.get(&id) else {
        return Err(LuksTokenError::NoToken {
            device: luks.device().display().to_string(),
            id: Some(id),
        });
    };
    let kind = v.get("type").and_then(|t| t.as_str()).unwrap_or("?");
    if kind != TOKEN_TYPE && kind != BOOTCHAIN_TOKEN_TYPE {
        return Err(LuksTokenError::NotTpm2 {
            id,
            kind: kind.to_string(),
        });
    }
    let slots: Vec<u32> = v
        .get("keyslots")
        .and_then(|k| k.as_array())
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            s.as_str()
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| LuksTokenError::BadKeyslot {
                    id,
                    slot: s.to_string(),
                })
        })
        .collect::<Result<_, _>>()?;
    if md.keyslots.keys().all(|k| slots.contains(k)) {
        return Err(LuksTokenError::LastKeyslot { id });
    }
    luks.remove_token(id)?;
    for s in &slots {
        luks.kill_keyslot(*s)?;
    }
    Ok(slots)
}

/// Enroll a TPM2 keyslot and its `systemd-tpm2` token, as `systemd-cryptenroll --tpm2-device`:
/// seal a fresh secret (nothing touches the header if the TPM fails), add a keyslot for
/// `base64(secret)` authorized by `unlock_key_file`, then store the token. If storing the token
/// fails the new keyslot is removed again. Returns (token id, keyslot).
pub fn enroll_luks(
    tpm: &mut Tpm,
    luks: &crate::luks::Luks,
    unlock_key_file: &std::path::Path,
    req: &EnrollRequest<'_>,
) -> Result<(u32, u32), LuksTokenError> {
    enroll_luks_by(&mut Sealer::Tpm(tpm), luks, unlock_key_file, req)
}

/// [`enroll_luks`] with any [`Sealer`]: offline, for a TPM this machine cannot reach.
pub fn enroll_luks_by(
    sealer: &mut Sealer<'_>,
    luks: &crate::luks::Luks,
    unlock_key_file: &std::path::Path,
    req: &EnrollRequest<'_>,
) -> Result<(u32, u32), LuksTokenError> {
    // One header read, before the TPM is touched; the new keyslot and token id come from it
    // (cryptsetup refuses a slot or id taken meanwhile rather than overwrite it).
    let md = luks.metadata()?;
    let (mut json, secret) = match req.kind {
        TokenKind::Systemd => {
            let (token, secret) = enroll_by(sealer, req)?;
            let json = serde_json::to_value(&token).map_err(|source| TokenError::Serialize {
                what: "token",
                source,
            })?;
            (json, secret)
        }
        TokenKind::Bootchain => enroll_envelope_by(sealer, req)?,
    };
    let pass = passphrase(&secret);
    let slot = luks.add_keyslot(&md, unlock_key_file, pass.as_bytes())?;
    json["keyslots"] = serde_json::json!([slot.to_string()]);
    match luks.import_token(&md, &json) {
        Ok(id) => Ok((id, slot)),
        Err(e) => {
            let _ = luks.kill_keyslot(slot);
            Err(e.into())
        }
    }
}

/// A token that unsealed.
#[derive(Debug)]
#[non_exhaustive]
pub struct Unlocked {
    /// Token id.
    pub token_id: u32,
    /// The keyslot it opens (the first listed).
    pub keyslot: Option<u32>,
    /// The LUKS passphrase, `base64(secret)`.
    pub passphrase: Zeroizing<String>,
    /// Every PCR the token's policy covers (to choose what to lock, [`crate::seal::lock_pcrs`]).
    pub policy_pcrs: Vec<u32>,
}

/// Whether a token's JSON says it is bound to a systemd-pcrlock policy.
fn is_pcrlock_json(v: &serde_json::Value) -> bool {
    v.get("tpm2_pcrlock").and_then(serde_json::Value::as_bool) == Some(true)
}

/// Every PCR a `systemd-tpm2` or `bootchain-tpm2` token's policy covers, literal or signed;
/// empty when the token does not say.
pub fn token_policy_pcrs(v: &serde_json::Value) -> Vec<u32> {
    let list = |x: Option<&serde_json::Value>| -> Vec<u32> {
        x.and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_u64().and_then(|n| u32::try_from(n).ok()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = if v.get("type").and_then(|t| t.as_str()) == Some(BOOTCHAIN_TOKEN_TYPE) {
        let p = v.get(ENVELOPE_MEMBER).and_then(|e| e.get("policy"));
        let mut o = list(p.and_then(|p| p.get("pcrs")));
        o.extend(list(
            p.and_then(|p| p.get("authorize"))
                .and_then(|a| a.get("pcrs")),
        ));
        o
    } else {
        let mut o = list(v.get("tpm2-pcrs"));
        o.extend(list(v.get("tpm2_pubkey_pcrs")));
        o
    };
    out.sort_unstable();
    out.dedup();
    out
}

/// Unseal the passphrase of a `systemd-tpm2` or `bootchain-tpm2` token of `luks` (the given
/// id, or each in turn until one works). Nothing is written to the header.
///
/// ```no_run
/// use bootchain::luks::Luks;
/// let mut tpm = bootchain::tpm::Tpm::open("device:/dev/tpmrm0")?;
/// let luks = Luks::new("/dev/vda2".as_ref());
/// let sigs = bootchain::measure::default_signatures()?; // the booted UKI's .pcrsig
/// // systemd-pcrlock's policy file, for tokens enrolled with `--tpm2-pcrlock`.
/// let pcrlock = bootchain::pcrlock::default_policy()?;
/// let opts = bootchain::seal::UnsealOptions {
///     signatures: sigs.as_ref(),
///     pcrlock: pcrlock.as_ref(),
///     ..Default::default()
/// };
/// let u = bootchain::token::unlock_luks(&mut tpm, &luks, None, &opts)?;
/// luks.test_passphrase(u.keyslot, u.passphrase.as_bytes())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn unlock_luks(
    tpm: &mut Tpm,
    luks: &crate::luks::Luks,
    token_id: Option<u32>,
    opts: &crate::seal::UnsealOptions<'_>,
) -> Result<Unlocked, LuksTokenError> {
    let md = luks.metadata()?;
    let tokens: Vec<(u32, &serde_json::Value)> = md
        .tokens
        .iter()
        .filter(|(_, v)| {
            matches!(
                v.get("type").and_then(|t| t.as_str()),
                Some(TOKEN_TYPE | BOOTCHAIN_TOKEN_TYPE)
            )
        })
        .filter(|(i, _)| token_id.is_none_or(|want| want == **i))
        .map(|(i, v)| (*i, v))
        .collect();
    if tokens.is_empty() {
        return Err(LuksTokenError::NoToken {
            device: luks.device().display().to_string(),
            id: token_id,
        });
    }
    let mut reasons = Vec::new();
    for (id, v) in tokens {
        let r = if v.get("type").and_then(|t| t.as_str()) == Some(BOOTCHAIN_TOKEN_TYPE) {
            unseal_envelope(tpm, v, opts)
        } else {
            SystemdTpm2Token::from_json(v).and_then(|t| unseal(tpm, &t, opts))
        };
        match r {
            Ok(secret) => {
                return Ok(Unlocked {
                    token_id: id,
                    keyslot: v
                        .get("keyslots")
                        .and_then(|k| k.get(0))
                        .and_then(|k| k.as_str())
                        .and_then(|k| k.parse().ok()),
                    passphrase: passphrase(&secret),
                    policy_pcrs: {
                        let mut pcrs = token_policy_pcrs(v);
                        // A systemd pcrlock token's PCRs are those of pcrlock.json's
                        // predictions (its unseal replayed them; a bootchain-tpm2 token's
                        // `tpm2_pcrlock` member would prove nothing).
                        let systemd = v.get("type").and_then(|t| t.as_str()) == Some(TOKEN_TYPE);
                        if let Some(f) = opts.pcrlock.filter(|_| systemd && is_pcrlock_json(v)) {
                            pcrs.extend(f.prediction().keys().map(|p| p.get()));
                            pcrs.sort_unstable();
                            pcrs.dedup();
                        }
                        pcrs
                    },
                });
            }
            Err(e) => {
                // A wrong PIN counts against the TPM's lockout: do not spend another try on the
                // next PIN-protected token.
                let stop = matches!(
                    e,
                    TokenError::Seal(SealError::Unseal(
                        UnsealError::BadPin { .. } | UnsealError::LockedOut { .. }
                    ))
                );
                reasons.push((id, e));
                if stop {
                    break;
                }
            }
        }
    }
    Err(LuksTokenError::AllFailed {
        device: luks.device().display().to_string(),
        reasons,
    })
}
