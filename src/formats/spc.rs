//! Authenticode's SPC structures (Microsoft "Windows Authenticode Portable Executable Signature
//! Format", §"SpcIndirectDataContent"), as `der` derive types: what a PE signature's
//! encapsulated content holds — the image's digest, and the PE image data sbsign, pesign and
//! osslsigncode write next to it.

use der::asn1::{Any, BitString, BmpString, ObjectIdentifier, OctetString};
use der::{Choice, Decode, Encode, Sequence};
use spki::AlgorithmIdentifierOwned;

use crate::hash::{Digest, HashAlg};

/// SPC_PE_IMAGE_DATA_OBJID (1.3.6.1.4.1.311.2.1.15).
pub const SPC_PE_IMAGE_DATA: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.15");

/// The file name every signer writes into SpcPeImageData (the field is unused).
const OBSOLETE: &str = "<<<Obsolete>>>";

/// `SpcIndirectDataContent ::= SEQUENCE { data SpcAttributeTypeAndOptionalValue,
/// messageDigest DigestInfo }`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SpcIndirectDataContent {
    /// The kind of file signed (for PE images, SpcPeImageData).
    pub data: SpcAttributeTypeAndOptionalValue,
    /// The Authenticode digest of the image.
    pub message_digest: DigestInfo,
}

/// `SpcAttributeTypeAndOptionalValue ::= SEQUENCE { type ObjectID, value ANY OPTIONAL }`.
/// The value stays undecoded when verifying: signers differ in it (links, monikers) and it
/// does not affect what is checked.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SpcAttributeTypeAndOptionalValue {
    /// SPC_PE_IMAGE_DATA_OBJID for PE images.
    pub value_type: ObjectIdentifier,
    /// SpcPeImageData, encoded.
    pub value: Option<Any>,
}

/// `DigestInfo ::= SEQUENCE { digestAlgorithm AlgorithmIdentifier, digest OCTET STRING }`.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct DigestInfo {
    /// The hash algorithm (with NULL parameters, as every signer writes them).
    pub digest_algorithm: AlgorithmIdentifierOwned,
    /// The digest.
    pub digest: OctetString,
}

/// `SpcPeImageData ::= SEQUENCE { flags SpcPeImageFlags DEFAULT { includeResources },
/// file [0] EXPLICIT SpcLink OPTIONAL }`. sbsign writes the flags (an empty BIT STRING)
/// explicitly, so they are not treated as a DEFAULT here.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SpcPeImageData {
    /// SpcPeImageFlags.
    pub flags: BitString,
    /// The obsolete file link.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub file: Option<SpcLink>,
}

/// `SpcLink ::= CHOICE { ..., file [2] EXPLICIT SpcString }` (the one variant signers of PE
/// images use).
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
pub enum SpcLink {
    /// A file name.
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", constructed = "true")]
    File(SpcString),
}

/// `SpcString ::= CHOICE { unicode [0] IMPLICIT BMPSTRING, ... }`.
#[derive(Clone, Debug, Eq, PartialEq, Choice)]
pub enum SpcString {
    /// UCS-2 text.
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT")]
    Unicode(BmpString),
}

impl SpcIndirectDataContent {
    /// The content for a PE image digest, byte-for-byte as sbsign writes it:
    /// `SpcPeImageData { flags: empty BIT STRING, file: [0] { [2] { [0] "<<<Obsolete>>>" } } }`.
    pub fn for_pe_image(image_digest: &Digest) -> der::Result<Self> {
        let pe = SpcPeImageData {
            flags: BitString::new(0, Vec::new())?,
            file: Some(SpcLink::File(SpcString::Unicode(BmpString::from_utf8(
                OBSOLETE,
            )?))),
        };
        Ok(SpcIndirectDataContent {
            data: SpcAttributeTypeAndOptionalValue {
                value_type: SPC_PE_IMAGE_DATA,
                value: Some(Any::encode_from(&pe)?),
            },
            message_digest: DigestInfo {
                digest_algorithm: AlgorithmIdentifierOwned {
                    oid: image_digest.alg().oid(),
                    parameters: Some(Any::null()),
                },
                digest: OctetString::new(image_digest.as_bytes())?,
            },
        })
    }

    /// Decode DER bytes.
    pub fn parse(der: &[u8]) -> der::Result<Self> {
        Self::from_der(der)
    }

    /// Encode as DER.
    pub fn encode(&self) -> der::Result<Vec<u8>> {
        self.to_der()
    }

    /// The image digest, if its algorithm is one bootchain knows.
    pub fn image_digest(&self) -> Option<Digest> {
        let alg = HashAlg::from_oid(&self.message_digest.digest_algorithm.oid)?;
        Digest::new(alg, self.message_digest.digest.as_bytes().to_vec()).ok()
    }
}
