//! Authenticode signatures for UEFI Secure Boot: create, embed and verify PKCS#7 SignedData.
//!
//! Structure (Microsoft "Windows Authenticode Portable Executable Signature Format"; sbsigntools
//! `src/idc.c`): a CMS SignedData (RFC 5652) of **version 1** whose encapsulated content is an
//! `SpcIndirectDataContent` (OID 1.3.6.1.4.1.311.2.1.4) carrying the image hash. One SignerInfo
//! (version 1, issuer and serial number) with signed attributes contentType and messageDigest;
//! messageDigest is the SHA-256 of the SpcIndirectDataContent's DER *contents* (without its
//! SEQUENCE tag and length). The signature is over the DER `SET OF` signed attributes.
//! No signingTime is added unless asked for, so signatures are reproducible.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::SystemTime;

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier;
use der::asn1::{OctetString, SetOfVec};
use der::{Any, Decode, Encode};
use serde::Serialize;
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::Attribute;
use x509_cert::Certificate;

use crate::authenticode::{self, AuthenticodeError, WinCertificate};
use crate::formats::der_lite;
use crate::fsutil::AtomicFile;
use crate::hash::{Digest, HashAlg};
use crate::keys::{self, KeyError, PublicKey};
use crate::pe::{self, PeHeaders, DIR_SECURITY};
use crate::signer::{Signer, SigningError};

/// SPC_INDIRECT_DATA_OBJID.
pub const SPC_INDIRECT_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.4");
use crate::formats::spc::SpcIndirectDataContent;
pub use crate::formats::spc::SPC_PE_IMAGE_DATA;
/// id-signedData (RFC 5652 §5.1).
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
/// id-contentType (RFC 5652 §11.1).
const ID_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
/// id-messageDigest (RFC 5652 §11.2).
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
/// id-signingTime (RFC 5652 §11.3).
const ID_SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");

/// Errors signing or verifying.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// I/O failure.
    #[error("I/O error")]
    Io(#[from] io::Error),
    /// Reading the PE image failed.
    #[error(transparent)]
    Pe(#[from] pe::PeError),
    /// Hashing the image failed.
    #[error(transparent)]
    Authenticode(#[from] AuthenticodeError),
    /// Key or certificate problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The signing backend failed (token, or a signature made elsewhere that does not fit).
    #[error(transparent)]
    Signer(Box<SigningError>),
    /// `--signed-data` given with a signature made elsewhere is not what this image and these
    /// options need signed (another image, or another signing time).
    #[error("the signed data given is not the signed attributes of this image (another image, or another --signing-time?)")]
    SignedDataMismatch,
    /// The image has no certificate table directory slot.
    #[error("the image has only {0} data directories; it needs the certificate table (5th) to be signed")]
    NoSecurityDirectory(usize),
    /// Encoding failed.
    #[error("DER encoding failed")]
    Encode(#[source] der::Error),
    /// An image digest that verification needs was not computed (not expected).
    #[error("no {0} image digest was computed")]
    MissingDigest(HashAlg),
    /// A signature blob is malformed.
    #[error("malformed Authenticode signature")]
    Malformed(#[source] MalformedSignature),
    /// The image has no signature.
    #[error("the image is not signed (no certificate table)")]
    Unsigned,
    /// The signed image would not fit PE's 32-bit certificate table offset and size
    /// (pecoff "The Attribute Certificate Table").
    #[error("the signed image would be {len} bytes; the certificate table must end below 4 GiB")]
    TooLarge {
        /// The length the output would have.
        len: u64,
    },
    /// Something went wrong with this file (the source says what).
    #[error("{path}")]
    InFile {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: Box<SignError>,
    },
    /// A signature refused before decoding: too large, too deep, or a SET (certificates,
    /// attributes) with too many elements.
    #[error("Authenticode signature refused before decoding")]
    Shape(#[source] crate::formats::der_lite::DerShapeError),
}

/// Largest PKCS#7 signature decoded. Authenticode signatures with a chain of a few
/// certificates and a timestamp countersignature are under 20 KiB.
pub const MAX_SIGNATURE_LEN: usize = 1 << 20;

/// Why a signature blob is malformed ([`SignError::Malformed`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedSignature {
    /// Not a DER element at all.
    #[error("not a DER structure")]
    NotDer,
    /// Non-zero bytes follow the PKCS#7 structure.
    #[error("non-zero bytes after the PKCS#7 structure")]
    TrailingBytes,
    /// A structure did not decode.
    #[error("{what}")]
    Decode {
        /// The structure.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: der::Error,
    },
    /// The ContentInfo is not signedData.
    #[error("content type is not signedData")]
    NotSignedData,
    /// The encapsulated content is of another type.
    #[error("encapsulated content is not SpcIndirectDataContent")]
    NotSpcIndirectData,
    /// No encapsulated content.
    #[error("no encapsulated content")]
    NoContent,
    /// The image digest is of an unknown algorithm or the wrong length.
    #[error("unsupported image digest algorithm {0}, or a digest of the wrong length")]
    ImageDigest(ObjectIdentifier),
    /// A digest algorithm whose image hash is not computed by this caller.
    #[error("{0} image hashes are not checked here")]
    DigestNotChecked(HashAlg),
}

/// Why one SignerInfo does not verify (reported in [`SignerReport::problem`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The signer's certificate is not in the signature.
    #[error("signer certificate is not embedded in the signature")]
    NoCertificate,
    /// The certificate's key is not usable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// An unknown digest algorithm.
    #[error("unsupported digest algorithm {0}")]
    DigestAlgorithm(ObjectIdentifier),
    /// An unknown signature algorithm.
    #[error("unsupported signature algorithm {0}")]
    SignatureAlgorithm(ObjectIdentifier),
    /// A structure did not decode or encode.
    #[error("{what}")]
    Der {
        /// The structure.
        what: &'static str,
        /// The DER error.
        #[source]
        source: der::Error,
    },
    /// No contentType signed attribute.
    #[error("no contentType signed attribute")]
    NoContentType,
    /// The contentType attribute names another type.
    #[error("contentType attribute is not SpcIndirectDataContent")]
    WrongContentType,
    /// No messageDigest signed attribute.
    #[error("no messageDigest signed attribute")]
    NoMessageDigest,
    /// The messageDigest attribute does not match.
    #[error("messageDigest does not match the signed content")]
    MessageDigestMismatch,
    /// The signature value does not verify.
    #[error("the signature does not verify with the signer certificate's key")]
    BadSignature,
}

impl From<SigningError> for SignError {
    fn from(e: SigningError) -> Self {
        SignError::Signer(Box::new(e))
    }
}

fn enc_err(e: der::Error) -> SignError {
    SignError::Encode(e)
}

/// Options for making a signature.
#[derive(Clone, Debug, Default)]
pub struct SignOptions {
    /// Add a signingTime attribute with this time. Off by default (reproducible output).
    pub signing_time: Option<SystemTime>,
}

/// Encode an SpcIndirectDataContent for a PE image digest, byte-for-byte as sbsign does
/// ([`SpcIndirectDataContent::for_pe_image`]).
pub fn spc_indirect_data_content(image_digest: &Digest) -> Result<Vec<u8>, SignError> {
    SpcIndirectDataContent::for_pe_image(image_digest)
        .and_then(|c| c.encode())
        .map_err(enc_err)
}

fn alg_id(oid: ObjectIdentifier, null_params: bool) -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid,
        parameters: null_params.then(|| Any::from(der::asn1::Null)),
    }
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, SignError> {
    let mut values = SetOfVec::new();
    values.insert(value).map_err(enc_err)?;
    Ok(Attribute { oid, values })
}

/// The DER signed attributes (contentType, messageDigest, and signingTime if asked for) of
/// the SignerInfo for `image_digest`, as a `SET OF` (tag 0x31): the bytes whose SHA-256 the
/// key signs (RFC 5652 §5.4). This is what `pe sign --prepare` writes for offline signing
/// (systemd-sbsign 258 `--prepare-offline-signing` writes the same): sign it elsewhere with
/// `openssl dgst -sha256 -sign KEY` or `openssl pkeyutl -sign -rawin -digest sha256`.
pub fn signed_attributes(image_digest: &Digest, opts: &SignOptions) -> Result<Vec<u8>, SignError> {
    signed_attribute_set(image_digest, opts)?
        .1
        .to_der()
        .map_err(enc_err)
}

/// The encapsulated SpcIndirectDataContent and the signed attributes for `image_digest`.
fn signed_attribute_set(
    image_digest: &Digest,
    opts: &SignOptions,
) -> Result<(Any, SetOfVec<Attribute>), SignError> {
    let idc = spc_indirect_data_content(image_digest)?;
    let idc_any = Any::from_der(&idc).map_err(enc_err)?;
    let content_digest = HashAlg::Sha256.digest(idc_any.value());

    let mut attrs = vec![
        attribute(
            ID_CONTENT_TYPE,
            Any::encode_from(&SPC_INDIRECT_DATA).map_err(enc_err)?,
        )?,
        attribute(
            ID_MESSAGE_DIGEST,
            Any::encode_from(&OctetString::new(content_digest.as_bytes()).map_err(enc_err)?)
                .map_err(enc_err)?,
        )?,
    ];
    if let Some(t) = opts.signing_time {
        let utc = der::asn1::UtcTime::from_system_time(t).map_err(enc_err)?;
        attrs.push(attribute(
            ID_SIGNING_TIME,
            Any::encode_from(&utc).map_err(enc_err)?,
        )?);
    }
    let signed_attrs: SetOfVec<Attribute> = SetOfVec::try_from(attrs).map_err(enc_err)?;
    Ok((idc_any, signed_attrs))
}

/// Build the DER PKCS#7 ContentInfo (SignedData) that signs `image_digest` with `key` (a key
/// file, a PKCS#11 key, or a signature made elsewhere: [`crate::signer`]).
///
/// ```no_run
/// use bootchain::{hash::HashAlg, keys, sign};
/// let key = keys::SigningKey::from_file("db.key".as_ref())?;
/// let cert = keys::load_certificate("db.crt".as_ref())?;
/// let digest = HashAlg::Sha256.digest(b"image bytes");
/// let pkcs7 = sign::authenticode_signature(&digest, &key, &cert, &Default::default())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn authenticode_signature(
    image_digest: &Digest,
    key: &dyn Signer,
    cert: &Certificate,
    opts: &SignOptions,
) -> Result<Vec<u8>, SignError> {
    key.check_matches(cert)?;
    let (idc_any, signed_attrs) = signed_attribute_set(image_digest, opts)?;
    let to_sign = signed_attrs.to_der().map_err(enc_err)?;
    let scheme = key.scheme();
    let signature = key.sign(HashAlg::Sha256, &to_sign)?;

    let is_rsa = scheme.is_rsa();
    let signer = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: cert.tbs_certificate.issuer.clone(),
            serial_number: cert.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: alg_id(HashAlg::Sha256.oid(), true),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: alg_id(scheme.cms_signature_oid(), is_rsa),
        signature: OctetString::new(signature).map_err(enc_err)?,
        unsigned_attrs: None,
    };
    let mut digest_algs = SetOfVec::new();
    digest_algs
        .insert(alg_id(HashAlg::Sha256.oid(), true))
        .map_err(enc_err)?;
    let mut certs = SetOfVec::new();
    certs
        .insert(CertificateChoices::Certificate(cert.clone()))
        .map_err(enc_err)?;
    let mut signers = SetOfVec::new();
    signers.insert(signer).map_err(enc_err)?;
    let sd = SignedData {
        // Authenticode requires version 1 (cms' builder would pick 3 for non-data content).
        version: CmsVersion::V1,
        digest_algorithms: digest_algs,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: SPC_INDIRECT_DATA,
            econtent: Some(idc_any),
        },
        certificates: Some(CertificateSet(certs)),
        crls: None,
        signer_infos: SignerInfos(signers),
    };
    let ci = ContentInfo {
        content_type: ID_SIGNED_DATA,
        content: Any::encode_from(&sd).map_err(enc_err)?,
    };
    ci.to_der().map_err(enc_err)
}

/// A reader over the first `data_len` bytes of a file followed by zeros up to `padded_len`:
/// the image as a signer sees it after padding to 8 bytes.
struct PaddedImage<'a, R> {
    file: &'a mut R,
    data_len: u64,
    padded_len: u64,
    pos: u64,
}

impl<R: Read + Seek> Read for PaddedImage<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.padded_len {
            return Ok(0);
        }
        let n = if self.pos < self.data_len {
            let want = (buf.len() as u64).min(self.data_len - self.pos) as usize;
            self.file.seek(SeekFrom::Start(self.pos))?;
            self.file.read(&mut buf[..want])?
        } else {
            let want = (buf.len() as u64).min(self.padded_len - self.pos) as usize;
            buf[..want].fill(0);
            want
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for PaddedImage<'_, R> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.padded_len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad seek"))?;
        Ok(self.pos)
    }
}

/// The image part of a PE file (everything before the certificate table), padded to 8 bytes,
/// and its headers with the certificate table removed.
struct SignableImage {
    headers: PeHeaders,
    header_bytes: Vec<u8>,
    image_len: u64,
    padded_len: u64,
    existing: Vec<WinCertificate>,
}

fn signable_image<R: Read + Seek>(f: &mut R) -> Result<SignableImage, SignError> {
    let (headers, header_bytes) = PeHeaders::read(f)?;
    if headers.data_directories.len() <= DIR_SECURITY {
        return Err(SignError::NoSecurityDirectory(
            headers.data_directories.len(),
        ));
    }
    let existing = authenticode::read_certificates(f, &headers)?;
    let image_len = if headers.is_signed() {
        // Validate the layout the same way the hash does.
        authenticode::hash_ranges(&headers)?;
        headers
            .security_directory()
            .map(|d| u64::from(d.virtual_address))
            .unwrap_or(headers.file_len)
    } else {
        headers.file_len
    };
    let padded_len = pe::align_up(image_len, 8);
    let mut h = headers.clone();
    h.file_len = padded_len;
    h.data_directories[DIR_SECURITY] = Default::default();
    Ok(SignableImage {
        headers: h,
        header_bytes,
        image_len,
        padded_len,
        existing,
    })
}

fn signable_digest<R: Read + Seek>(
    f: &mut R,
    img: &SignableImage,
    alg: HashAlg,
) -> Result<Digest, SignError> {
    let mut r = PaddedImage {
        file: f,
        data_len: img.image_len,
        padded_len: img.padded_len,
        pos: 0,
    };
    let d = authenticode::image_digests_with_headers(&mut r, &img.headers, &[alg])?;
    d.into_iter().next().ok_or(SignError::MissingDigest(alg))
}

/// The PE checksum (pecoff "CheckSum"; the algorithm of imagehlp `CheckSumMappedFile`):
/// 16-bit one's-complement style sum of the file with the CheckSum field taken as zero, plus
/// the file length.
#[derive(Debug, Default)]
pub struct PeChecksum {
    sum: u64,
    pos: u64,
    odd: Option<u8>,
    checksum_offset: u64,
}

impl PeChecksum {
    /// A checksum accumulator for a file whose CheckSum field is at `checksum_offset`.
    pub fn new(checksum_offset: u64) -> Self {
        PeChecksum {
            checksum_offset,
            ..Default::default()
        }
    }

    /// Feed the next bytes of the file.
    pub fn update(&mut self, data: &[u8]) {
        for &b in data {
            let in_field = self.pos >= self.checksum_offset && self.pos < self.checksum_offset + 4;
            let b = if in_field { 0 } else { b };
            match self.odd.take() {
                None => self.odd = Some(b),
                Some(lo) => {
                    self.sum += u64::from(u16::from_le_bytes([lo, b]));
                    self.sum = (self.sum & 0xffff) + (self.sum >> 16);
                }
            }
            self.pos += 1;
        }
    }

    /// The checksum value.
    pub fn finish(mut self) -> u32 {
        if let Some(lo) = self.odd.take() {
            self.sum += u64::from(lo);
        }
        let mut s = self.sum;
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        // The PE checksum adds the file length modulo 2^32 (truncation intended).
        (s as u32 & 0xffff).wrapping_add(self.pos as u32)
    }
}

/// Sign a PE file, writing the signed image atomically to `output`. A file that is already
/// signed keeps its signatures and gets one more WIN_CERTIFICATE (key rotation).
/// Returns the Authenticode SHA-256 that was signed.
///
/// ```no_run
/// use bootchain::keys::{load_certificate, SigningKey};
/// let key = SigningKey::from_file("db.key".as_ref())?;
/// let cert = load_certificate("db.crt".as_ref())?;
/// let digest = bootchain::sign::sign_file(
///     "uki.efi".as_ref(), "uki.signed.efi".as_ref(), &key, &cert, &Default::default())?;
/// let report = bootchain::sign::verify_file("uki.signed.efi".as_ref(), None, Some(&cert))?;
/// assert!(report.passed(true));
/// # let _ = digest;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn sign_file(
    input: &Path,
    output: &Path,
    key: &dyn Signer,
    cert: &Certificate,
    opts: &SignOptions,
) -> Result<Digest, SignError> {
    key.check_matches(cert)?;
    let in_file = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SignError::InFile {
            path,
            source: Box::new(source),
        }
    };
    let mut f = File::open(input).map_err(|e| in_file(input)(SignError::Io(e)))?;
    let img = signable_image(&mut f).map_err(in_file(input))?;
    let digest = signable_digest(&mut f, &img, HashAlg::Sha256).map_err(in_file(input))?;
    let pkcs7 = authenticode_signature(&digest, key, cert, opts)?;
    let mut table = Vec::new();
    for c in &img.existing {
        table.extend_from_slice(&c.to_padded_bytes());
    }
    table.extend_from_slice(
        &WinCertificate {
            offset: 0,
            revision: authenticode::WIN_CERT_REVISION_2_0,
            cert_type: authenticode::WIN_CERT_TYPE_PKCS_SIGNED_DATA,
            data: pkcs7,
        }
        .to_padded_bytes(),
    );

    // Patched headers: certificate table location and size.
    let mut header = img.header_bytes.clone();
    let sd = img.headers.data_directory_offset(DIR_SECURITY);
    let too_large = || SignError::TooLarge {
        len: img.padded_len + table.len() as u64,
    };
    let table_off = u32::try_from(img.padded_len).map_err(|_| too_large())?;
    let table_len = u32::try_from(table.len())
        .ok()
        .filter(|l| table_off.checked_add(*l).is_some())
        .ok_or_else(too_large)?;
    header[sd..sd + 4].copy_from_slice(&table_off.to_le_bytes());
    header[sd + 4..sd + 8].copy_from_slice(&table_len.to_le_bytes());
    let cks_off = img.headers.checksum_offset();
    let keep_zero_checksum = img.headers.checksum == 0;

    let mut out =
        AtomicFile::create(output, 0o644).map_err(|e| in_file(output)(SignError::Io(e)))?;
    let mut ck = PeChecksum::new(cks_off as u64);
    {
        let w = out.file();
        w.write_all(&header)?;
        ck.update(&header);
        f.seek(SeekFrom::Start(header.len() as u64))?;
        let mut left = img.image_len.saturating_sub(header.len() as u64);
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..n])?;
            w.write_all(&buf[..n])?;
            ck.update(&buf[..n]);
            left -= n as u64;
        }
        let pad = vec![0u8; (img.padded_len - img.image_len) as usize];
        w.write_all(&pad)?;
        ck.update(&pad);
        w.write_all(&table)?;
        ck.update(&table);
        if !keep_zero_checksum {
            w.seek(SeekFrom::Start(cks_off as u64))?;
            w.write_all(&ck.finish().to_le_bytes())?;
        }
    }
    out.commit()?;
    Ok(digest)
}

/// Make a detached PKCS#7 signature (DER) for a PE file, as `sbsign --detached` does.
pub fn detached_signature(
    input: &Path,
    key: &dyn Signer,
    cert: &Certificate,
    opts: &SignOptions,
) -> Result<Vec<u8>, SignError> {
    authenticode_signature(&signable_sha256(input)?, key, cert, opts)
}

/// The Authenticode SHA-256 of a PE file as a signer computes it (padded to 8 bytes, the
/// certificate table left out).
pub fn signable_sha256(input: &Path) -> Result<Digest, SignError> {
    (|| {
        let mut f = File::open(input)?;
        let img = signable_image(&mut f)?;
        signable_digest(&mut f, &img, HashAlg::Sha256)
    })()
    .map_err(|source| SignError::InFile {
        path: input.to_path_buf(),
        source: Box::new(source),
    })
}

/// Offline signing, first step: the signed attributes a signature of `input` covers
/// ([`signed_attributes`]), to be signed elsewhere and attached with [`attach_signature`].
pub fn prepare_signed_attributes(input: &Path, opts: &SignOptions) -> Result<Vec<u8>, SignError> {
    signed_attributes(&signable_sha256(input)?, opts)
}

/// Offline signing, second step: sign `input` into `output` with `signature`, made elsewhere
/// over [`prepare_signed_attributes`] by `cert`'s key. The signature is checked first;
/// with `signed_data` (the prepared bytes, as systemd-sbsign `--signed-data`) those must also
/// be the signed attributes of this image and these options. Nothing is written on failure.
pub fn attach_signature(
    input: &Path,
    output: &Path,
    cert: &Certificate,
    signature: Vec<u8>,
    signed_data: Option<&[u8]>,
    opts: &SignOptions,
) -> Result<Digest, SignError> {
    if let Some(d) = signed_data {
        if prepare_signed_attributes(input, opts)? != d {
            return Err(SignError::SignedDataMismatch);
        }
    }
    let ext = crate::signer::ExternalSignature::new(PublicKey::from_certificate(cert)?, signature);
    sign_file(input, output, &ext, cert, opts)
}

/// What one signature says and whether it holds.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct SignerReport {
    /// Index of the WIN_CERTIFICATE entry (0-based), or 0 for a detached signature.
    pub index: usize,
    /// Signer certificate subject (RFC 4514), if the certificate is embedded.
    pub subject: Option<String>,
    /// Signer certificate issuer.
    pub issuer: String,
    /// Signer certificate serial number, hex.
    pub serial: String,
    /// Digest algorithm of the image hash in SpcIndirectDataContent.
    pub digest_algorithm: String,
    /// Signature algorithm (e.g. "RSA-2048", "ECDSA P-256").
    pub key: Option<String>,
    /// Signer certificate validity, notBefore.
    pub not_before: Option<String>,
    /// Signer certificate validity, notAfter.
    pub not_after: Option<String>,
    /// The image hash recorded in the signature, hex.
    pub signed_image_digest: String,
    /// The recorded hash equals the file's hash.
    pub image_digest_matches: bool,
    /// The CMS signature verifies with the signer certificate's key.
    pub signature_valid: bool,
    /// Whether the signer chains to the trusted certificate (`None` when none was given).
    pub trusted: Option<bool>,
    /// What went wrong, if anything.
    pub problem: Option<String>,
}

impl SignerReport {
    /// A report for a signature that could not be parsed or has no signer.
    fn failed(index: usize, problem: String, trusted: Option<bool>) -> Self {
        SignerReport {
            index,
            subject: None,
            issuer: String::new(),
            serial: String::new(),
            digest_algorithm: String::new(),
            key: None,
            not_before: None,
            not_after: None,
            signed_image_digest: String::new(),
            image_digest_matches: false,
            signature_valid: false,
            trusted,
            problem: Some(problem),
        }
    }

    /// Valid (and trusted, if a trust anchor was given).
    pub fn ok(&self) -> bool {
        self.image_digest_matches && self.signature_valid && self.trusted != Some(false)
    }
}

/// Parsed, not yet verified, Authenticode signature.
struct ParsedSignature {
    sd: SignedData,
    idc: Vec<u8>,
    image_digest: Digest,
}

fn parse_signature(pkcs7: &[u8]) -> Result<ParsedSignature, SignError> {
    let m = SignError::Malformed;
    let decode = |what: &'static str| {
        move |source| SignError::Malformed(MalformedSignature::Decode { what, source })
    };
    // Some signers (osslsigncode) count their zero padding in dwLength: decode the first DER
    // element and require that only zeros follow it.
    let first = der_lite::read(pkcs7).ok_or(m(MalformedSignature::NotDer))?;
    let der_len = pkcs7.len() - first.rest.len();
    if first.rest.iter().any(|&b| b != 0) {
        return Err(m(MalformedSignature::TrailingBytes));
    }
    // The der crate sorts every decoded SET OF in quadratic time: bound the element counts
    // (and so the certificate count) and the size first.
    der_lite::check_shape(&pkcs7[..der_len], MAX_SIGNATURE_LEN).map_err(SignError::Shape)?;
    let ci = ContentInfo::from_der(&pkcs7[..der_len]).map_err(decode("ContentInfo"))?;
    if ci.content_type != ID_SIGNED_DATA {
        return Err(m(MalformedSignature::NotSignedData));
    }
    let sd: SignedData = ci.content.decode_as().map_err(decode("SignedData"))?;
    if sd.encap_content_info.econtent_type != SPC_INDIRECT_DATA {
        return Err(m(MalformedSignature::NotSpcIndirectData));
    }
    let econtent = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or(m(MalformedSignature::NoContent))?;
    let idc = econtent.to_der().map_err(enc_err)?;
    let content = SpcIndirectDataContent::parse(&idc).map_err(decode("SpcIndirectDataContent"))?;
    let oid = content.message_digest.digest_algorithm.oid;
    let image_digest = content
        .image_digest()
        .ok_or(m(MalformedSignature::ImageDigest(oid)))?;
    Ok(ParsedSignature {
        sd,
        idc,
        image_digest,
    })
}

fn sig_hash_for(sig_alg: &ObjectIdentifier, digest_alg: HashAlg) -> Option<HashAlg> {
    use const_oid::db::rfc5912 as o;
    Some(match *sig_alg {
        o::RSA_ENCRYPTION => digest_alg,
        o::SHA_1_WITH_RSA_ENCRYPTION => HashAlg::Sha1,
        o::SHA_256_WITH_RSA_ENCRYPTION | o::ECDSA_WITH_SHA_256 => HashAlg::Sha256,
        o::SHA_384_WITH_RSA_ENCRYPTION | o::ECDSA_WITH_SHA_384 => HashAlg::Sha384,
        o::SHA_512_WITH_RSA_ENCRYPTION | o::ECDSA_WITH_SHA_512 => HashAlg::Sha512,
        _ => return None,
    })
}

/// True if `cert` is `anchor`, or is signed by `anchor`'s key with `anchor` as its issuer.
pub fn issued_by_or_equal(cert: &Certificate, anchor: &Certificate) -> bool {
    if cert == anchor {
        return true;
    }
    if cert.tbs_certificate.issuer != anchor.tbs_certificate.subject {
        return false;
    }
    let Ok(anchor_key) = PublicKey::from_certificate(anchor) else {
        return false;
    };
    let Some(hash) = sig_hash_for(&cert.signature_algorithm.oid, HashAlg::Sha256) else {
        return false;
    };
    let Ok(tbs) = cert.tbs_certificate.to_der() else {
        return false;
    };
    let Some(sig) = cert.signature.as_bytes() else {
        return false;
    };
    keys::verify_prehashed(&anchor_key, hash, hash.digest(&tbs).as_bytes(), sig)
}

fn verify_parsed(
    index: usize,
    p: &ParsedSignature,
    file_digest: &dyn Fn(HashAlg) -> Result<Digest, SignError>,
    trusted: Option<&Certificate>,
) -> Vec<SignerReport> {
    let mut out = Vec::new();
    let recomputed = file_digest(p.image_digest.alg());
    for si in p.sd.signer_infos.0.iter() {
        let (issuer, serial) = match &si.sid {
            SignerIdentifier::IssuerAndSerialNumber(isn) => (
                isn.issuer.to_string(),
                hex::encode(isn.serial_number.as_bytes()),
            ),
            SignerIdentifier::SubjectKeyIdentifier(ski) => {
                (String::new(), hex::encode(ski.0.as_bytes()))
            }
        };
        let cert = p.sd.certificates.as_ref().and_then(|cs| {
            cs.0.iter().find_map(|c| match (c, &si.sid) {
                (
                    CertificateChoices::Certificate(c),
                    SignerIdentifier::IssuerAndSerialNumber(isn),
                ) if c.tbs_certificate.issuer == isn.issuer
                    && c.tbs_certificate.serial_number == isn.serial_number =>
                {
                    Some(c)
                }
                _ => None,
            })
        });
        let mut r = SignerReport {
            index,
            subject: cert.map(|c| c.tbs_certificate.subject.to_string()),
            issuer,
            serial,
            digest_algorithm: p.image_digest.alg().to_string(),
            key: None,
            not_before: cert.map(|c| c.tbs_certificate.validity.not_before.to_string()),
            not_after: cert.map(|c| c.tbs_certificate.validity.not_after.to_string()),
            signed_image_digest: p.image_digest.to_hex(),
            image_digest_matches: false,
            signature_valid: false,
            trusted: None,
            problem: None,
        };
        match &recomputed {
            Ok(d) if *d == p.image_digest => r.image_digest_matches = true,
            Ok(d) => {
                r.problem = Some(format!(
                    "image hash mismatch: signature has {}, file has {}",
                    p.image_digest, d
                ))
            }
            Err(e) => r.problem = Some(crate::error::Chain(&e).to_string()),
        }
        match check_signer(si, cert, &p.idc) {
            Ok(key) => {
                r.signature_valid = true;
                r.key = Some(key.describe());
            }
            Err(e) => {
                r.problem
                    .get_or_insert_with(|| crate::error::Chain(&e).to_string());
            }
        }
        if let Some(anchor) = trusted {
            let t = cert.is_some_and(|c| issued_by_or_equal(c, anchor));
            r.trusted = Some(t);
            if !t {
                r.problem.get_or_insert_with(|| {
                    "signer does not chain to the given certificate".to_string()
                });
            }
        }
        out.push(r);
    }
    if out.is_empty() {
        let mut r = SignerReport::failed(
            index,
            "signature has no SignerInfo".into(),
            trusted.map(|_| false),
        );
        r.digest_algorithm = p.image_digest.alg().to_string();
        r.signed_image_digest = p.image_digest.to_hex();
        out.push(r);
    }
    out
}

/// Check one SignerInfo's signed attributes and signature; returns the signer's key.
fn check_signer(
    si: &SignerInfo,
    cert: Option<&Certificate>,
    idc: &[u8],
) -> Result<PublicKey, SignerError> {
    let der = |what: &'static str| move |source| SignerError::Der { what, source };
    let cert = cert.ok_or(SignerError::NoCertificate)?;
    let key = PublicKey::from_certificate(cert)?;
    let digest_alg = HashAlg::from_oid(&si.digest_alg.oid)
        .ok_or(SignerError::DigestAlgorithm(si.digest_alg.oid))?;
    let sig_hash = sig_hash_for(&si.signature_algorithm.oid, digest_alg)
        .ok_or(SignerError::SignatureAlgorithm(si.signature_algorithm.oid))?;
    let idc_any = Any::from_der(idc).map_err(der("SpcIndirectDataContent"))?;
    let signed_bytes = match &si.signed_attrs {
        Some(attrs) => {
            let find = |oid: ObjectIdentifier| {
                attrs
                    .iter()
                    .find(|a| a.oid == oid)
                    .and_then(|a| a.values.iter().next())
            };
            let ct = find(ID_CONTENT_TYPE).ok_or(SignerError::NoContentType)?;
            let ct: ObjectIdentifier = ct.decode_as().map_err(der("contentType attribute"))?;
            if ct != SPC_INDIRECT_DATA {
                return Err(SignerError::WrongContentType);
            }
            let md = find(ID_MESSAGE_DIGEST).ok_or(SignerError::NoMessageDigest)?;
            let md: OctetString = md.decode_as().map_err(der("messageDigest attribute"))?;
            if md.as_bytes() != digest_alg.digest(idc_any.value()).as_bytes() {
                return Err(SignerError::MessageDigestMismatch);
            }
            attrs.to_der().map_err(der("signed attributes"))?
        }
        None => idc_any.value().to_vec(),
    };
    let d = sig_hash.digest(&signed_bytes);
    if keys::verify_prehashed(&key, sig_hash, d.as_bytes(), si.signature.as_bytes()) {
        Ok(key)
    } else {
        Err(SignerError::BadSignature)
    }
}

/// The result of verifying every signature of an image.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Authenticode SHA-256 of the file.
    pub image_sha256: Digest,
    /// One report per signer of every signature.
    pub signers: Vec<SignerReport>,
}

impl VerifyReport {
    /// With a trust anchor: at least one signature is valid and trusted. Without: there is at
    /// least one signature and every one is valid.
    pub fn passed(&self, with_anchor: bool) -> bool {
        if with_anchor {
            self.signers.iter().any(SignerReport::ok)
        } else {
            !self.signers.is_empty() && self.signers.iter().all(SignerReport::ok)
        }
    }
}

/// Verify every embedded signature of a PE file (or a detached one, if `detached` is given).
///
/// ```no_run
/// let report = bootchain::sign::verify_file("uki.efi".as_ref(), None, None)?;
/// assert!(report.passed(false));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn verify_file(
    path: &Path,
    detached: Option<&[u8]>,
    trusted: Option<&Certificate>,
) -> Result<VerifyReport, SignError> {
    let in_file = |source| SignError::InFile {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let mut f = File::open(path).map_err(|e| in_file(SignError::Io(e)))?;
    verify_reader(&mut f, detached, trusted).map_err(in_file)
}

/// [`verify_file`] on an open image (a file, or a `Cursor` over bytes in memory).
pub fn verify_reader<R: Read + Seek>(
    f: &mut R,
    detached: Option<&[u8]>,
    trusted: Option<&Certificate>,
) -> Result<VerifyReport, SignError> {
    let (headers, _) = PeHeaders::read(f)?;
    let blobs: Vec<Vec<u8>> = match detached {
        Some(d) => vec![d.to_vec()],
        None => {
            let certs = authenticode::read_certificates(f, &headers)?;
            if certs.is_empty() {
                return Err(SignError::Unsigned);
            }
            certs.into_iter().map(|c| c.data).collect()
        }
    };
    let mut image_digest = |alg: HashAlg| -> Result<Digest, SignError> {
        // Signed file: hash as the firmware does. Detached: as a signer does (padded to 8).
        if detached.is_none() {
            let mut d = authenticode::image_digests_with_headers(f, &headers, &[alg])?;
            return d.pop().ok_or(SignError::MissingDigest(alg));
        }
        let img = signable_image(f)?;
        signable_digest(f, &img, alg)
    };
    let sha256 = image_digest(HashAlg::Sha256)?;
    let mut cache = vec![sha256.clone()];
    let mut signers = Vec::new();
    for (i, blob) in blobs.iter().enumerate() {
        match parse_signature(blob) {
            Ok(p) => {
                let alg = p.image_digest.alg();
                if !cache.iter().any(|d| d.alg() == alg) {
                    cache.push(image_digest(alg)?);
                }
                let lookup = |a: HashAlg| {
                    cache
                        .iter()
                        .find(|d| d.alg() == a)
                        .cloned()
                        .ok_or(SignError::MissingDigest(a))
                };
                signers.extend(verify_parsed(i, &p, &lookup, trusted));
            }
            Err(e) => signers.push(SignerReport::failed(
                i,
                crate::error::Chain(&e).to_string(),
                trusted.map(|_| false),
            )),
        }
    }
    Ok(VerifyReport {
        image_sha256: sha256.clone(),
        signers,
    })
}

/// The index of the first certificate in `anchors` that a valid embedded signature of the
/// image chains to (what firmware does with db), or `None`. The image is hashed once per
/// digest algorithm, whatever the number of anchors.
pub fn first_trusting_anchor(
    path: &Path,
    anchors: &[Certificate],
) -> Result<Option<usize>, SignError> {
    let in_file = |source| SignError::InFile {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let (parsed, digests) = (|| -> Result<_, SignError> {
        let mut f = File::open(path)?;
        let (headers, _) = PeHeaders::read(&mut f)?;
        let parsed: Vec<ParsedSignature> = authenticode::read_certificates(&mut f, &headers)?
            .iter()
            .filter_map(|c| parse_signature(&c.data).ok())
            .collect();
        let mut digests: Vec<Digest> = Vec::new();
        for p in &parsed {
            let alg = p.image_digest.alg();
            if !digests.iter().any(|d| d.alg() == alg) {
                digests.extend(authenticode::image_digests_with_headers(
                    &mut f,
                    &headers,
                    &[alg],
                )?);
            }
        }
        Ok((parsed, digests))
    })()
    .map_err(in_file)?;
    let lookup = |a: HashAlg| {
        digests
            .iter()
            .find(|d| d.alg() == a)
            .cloned()
            .ok_or(SignError::MissingDigest(a))
    };
    Ok(anchors.iter().position(|anchor| {
        parsed.iter().any(|p| {
            verify_parsed(0, p, &lookup, Some(anchor))
                .iter()
                .any(SignerReport::ok)
        })
    }))
}

/// Describe the signatures embedded in an already-open image without judging trust.
pub fn describe_signatures<R: Read + Seek>(
    r: &mut R,
    headers: &PeHeaders,
    image_sha256: &Digest,
) -> Result<Vec<SignerReport>, SignError> {
    let certs = authenticode::read_certificates(r, headers)?;
    let mut out = Vec::new();
    for (i, c) in certs.iter().enumerate() {
        match parse_signature(&c.data) {
            Ok(p) => {
                let d = image_sha256.clone();
                let lookup = move |a: HashAlg| {
                    if a == d.alg() {
                        Ok(d.clone())
                    } else {
                        Err(SignError::Malformed(MalformedSignature::DigestNotChecked(
                            a,
                        )))
                    }
                };
                out.extend(verify_parsed(i, &p, &lookup, None));
            }
            Err(e) => out.push(SignerReport::failed(
                i,
                crate::error::Chain(&e).to_string(),
                None,
            )),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idc_matches_sbsign_layout() {
        let d = HashAlg::Sha256.digest(b"x");
        let idc = spc_indirect_data_content(&d).unwrap();
        // sbsign's SpcIndirectDataContent for SHA-256 is 0x68 bytes of content.
        assert_eq!(&idc[..2], &[0x30, 0x68]);
        assert_eq!(idc.len(), 0x6a);
        assert!(idc.ends_with(d.as_bytes()));
    }

    #[test]
    fn checksum_of_small_buffer() {
        let mut c = PeChecksum::new(0x40);
        c.update(&[1, 0, 2, 0, 3]);
        assert_eq!(c.finish(), 1 + 2 + 3 + 5);
    }

    #[test]
    fn garbage_signatures_are_errors() {
        assert!(parse_signature(&[]).is_err());
        assert!(parse_signature(&[0x30, 0x03, 0x06, 0x01, 0x00]).is_err());
    }
}
