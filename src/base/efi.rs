//! UEFI structures that firmware measures and Secure Boot variables hold: EFI_GUID,
//! UEFI_VARIABLE_DATA (TCG PC Client PFP §10.4.4) and EFI_SIGNATURE_LIST (UEFI 2.10 §32.4.1).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// An EFI_GUID, stored in its on-disk (mixed-endian) byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EfiGuid(pub [u8; 16]);

/// Error parsing a GUID string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid GUID {0:?} (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")]
pub struct GuidError(pub String);

impl EfiGuid {
    /// From the four fields of the textual form `d1-d2-d3-d4[0..2]-d4[2..8]` (usable in
    /// `const` items).
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        EfiGuid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }
}

impl EfiGuid {
    /// The RFC 4122 (big-endian, as written) bytes: the order in which GUIDs compare as
    /// numbers (Python's `uuid.UUID.bytes`; the stored form is its `bytes_le`).
    pub fn rfc4122_bytes(&self) -> [u8; 16] {
        let mut b = self.0;
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        b
    }

    /// From RFC 4122 (big-endian) bytes.
    pub fn from_rfc4122_bytes(mut b: [u8; 16]) -> Self {
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        EfiGuid(b)
    }
}

impl FromStr for EfiGuid {
    type Err = GuidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let e = || GuidError(s.to_string());
        let parts: Vec<&str> = s.split('-').collect();
        if parts.len() != 5
            || [8, 4, 4, 4, 12] != parts.iter().map(|p| p.len()).collect::<Vec<_>>()[..]
            // from_str_radix alone would take a sign ("+abcdef0").
            || !parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(e());
        }
        let d1 = u32::from_str_radix(parts[0], 16).map_err(|_| e())?;
        let d2 = u16::from_str_radix(parts[1], 16).map_err(|_| e())?;
        let d3 = u16::from_str_radix(parts[2], 16).map_err(|_| e())?;
        let tail = hex::decode(format!("{}{}", parts[3], parts[4])).map_err(|_| e())?;
        let mut d4 = [0u8; 8];
        d4.copy_from_slice(&tail);
        Ok(EfiGuid::from_fields(d1, d2, d3, d4))
    }
}

impl fmt::Display for EfiGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{}-{}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            hex::encode(&b[8..10]),
            hex::encode(&b[10..16])
        )
    }
}

impl fmt::Debug for EfiGuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl Serialize for EfiGuid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// EFI_GLOBAL_VARIABLE (SecureBoot, PK, KEK, Boot####): 8be4df61-93ca-11d2-aa0d-00e098032b8c.
pub const EFI_GLOBAL_VARIABLE: EfiGuid = EfiGuid::from_fields(
    0x8be4df61,
    0x93ca,
    0x11d2,
    [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
);
/// EFI_IMAGE_SECURITY_DATABASE_GUID (db, dbx): d719b2cb-3d3a-4596-a3bc-dad00e67656f.
pub const EFI_IMAGE_SECURITY_DATABASE: EfiGuid = EfiGuid::from_fields(
    0xd719b2cb,
    0x3d3a,
    0x4596,
    [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
);
/// EFI_CERT_X509_GUID: a5c059a1-94e4-4aa7-87b5-ab155c2bf072.
pub const EFI_CERT_X509: EfiGuid = EfiGuid::from_fields(
    0xa5c059a1,
    0x94e4,
    0x4aa7,
    [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
);
/// EFI_CERT_SHA256_GUID: c1c41626-504c-4092-aca9-41f936934328.
pub const EFI_CERT_SHA256: EfiGuid = EfiGuid::from_fields(
    0xc1c41626,
    0x504c,
    0x4092,
    [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28],
);

/// Errors decoding UEFI structures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FirmwareError {
    /// Malformed bytes.
    #[error("malformed {what} at byte {offset}: {reason}")]
    Malformed {
        /// The structure.
        what: &'static str,
        /// Offset within it.
        offset: usize,
        /// Why.
        reason: MalformedReason,
    },
}

/// What is wrong in a UEFI structure ([`FirmwareError::Malformed`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedReason {
    /// A UEFI_VARIABLE_DATA shorter than its header.
    #[error("shorter than its 32-byte header")]
    ShortVariable,
    /// The name and data lengths do not add up to the structure's length.
    #[error("name length {name_len} and data length {data_len} do not match {len} bytes")]
    Lengths {
        /// NameLength (UTF-16 characters).
        name_len: u64,
        /// DataLength.
        data_len: u64,
        /// The structure's length.
        len: usize,
    },
    /// Fewer bytes left than a list header.
    #[error("truncated header")]
    TruncatedHeader,
    /// SignatureListSize is too small or runs past the data.
    #[error("SignatureListSize {0}")]
    ListSize(usize),
    /// SignatureSize or SignatureHeaderSize do not fit the list.
    #[error("SignatureSize {sig_size}, header {header_size}")]
    SignatureSize {
        /// SignatureSize.
        sig_size: usize,
        /// SignatureHeaderSize.
        header_size: usize,
    },
    /// The list body is not a whole number of entries.
    #[error("entries do not fill the list")]
    Unfilled,
}

fn malformed(what: &'static str, offset: usize, reason: MalformedReason) -> FirmwareError {
    FirmwareError::Malformed {
        what,
        offset,
        reason,
    }
}

/// UEFI_VARIABLE_DATA (PFP §10.4.4): the event data of variable measurements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VariableData {
    /// VariableName (the vendor GUID).
    pub guid: EfiGuid,
    /// UnicodeName.
    pub name: String,
    /// VariableData.
    #[serde(serialize_with = "ser_hex")]
    pub data: Vec<u8>,
}

fn ser_hex<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

impl VariableData {
    /// Encode: GUID, u64 name length in CHAR16 (no NUL), u64 data length, UTF-16LE name, data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let name: Vec<u16> = self.name.encode_utf16().collect();
        let mut v = Vec::with_capacity(32 + name.len() * 2 + self.data.len());
        v.extend_from_slice(&self.guid.0);
        v.extend_from_slice(&(name.len() as u64).to_le_bytes());
        v.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        for u in name {
            v.extend_from_slice(&u.to_le_bytes());
        }
        v.extend_from_slice(&self.data);
        v
    }

    /// Decode, requiring the lengths to account for every byte.
    pub fn parse(b: &[u8]) -> Result<Self, FirmwareError> {
        const W: &str = "UEFI_VARIABLE_DATA";
        if b.len() < 32 {
            return Err(malformed(W, 0, MalformedReason::ShortVariable));
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&b[..16]);
        let nlen = u64::from_le_bytes(b[16..24].try_into().unwrap_or_default());
        let dlen = u64::from_le_bytes(b[24..32].try_into().unwrap_or_default());
        let need = nlen
            .checked_mul(2)
            .and_then(|n| n.checked_add(dlen))
            .and_then(|n| n.checked_add(32));
        if need != Some(b.len() as u64) {
            return Err(malformed(
                W,
                16,
                MalformedReason::Lengths {
                    name_len: nlen,
                    data_len: dlen,
                    len: b.len(),
                },
            ));
        }
        let nend = 32 + nlen as usize * 2;
        let units: Vec<u16> = b[32..nend]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Ok(VariableData {
            guid: EfiGuid(guid),
            name: String::from_utf16_lossy(&units),
            data: b[nend..].to_vec(),
        })
    }
}

/// One EFI_SIGNATURE_DATA: owner GUID and data (a DER certificate, or a hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignatureData {
    /// SignatureOwner.
    pub owner: EfiGuid,
    /// SignatureData.
    #[serde(serialize_with = "ser_hex")]
    pub data: Vec<u8>,
}

impl SignatureData {
    /// Owner GUID followed by the data (the EV_EFI_VARIABLE_AUTHORITY payload, PFP §3.3.4.8).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = self.owner.0.to_vec();
        v.extend_from_slice(&self.data);
        v
    }
}

/// One EFI_SIGNATURE_LIST.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignatureList {
    /// SignatureType.
    pub sig_type: EfiGuid,
    /// SignatureHeader (usually empty).
    #[serde(serialize_with = "ser_hex")]
    pub header: Vec<u8>,
    /// The entries.
    pub entries: Vec<SignatureData>,
}

/// Parse a variable's content: a sequence of EFI_SIGNATURE_LISTs.
pub fn parse_signature_lists(b: &[u8]) -> Result<Vec<SignatureList>, FirmwareError> {
    const W: &str = "EFI_SIGNATURE_LIST";
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < b.len() {
        if b.len() - pos < 28 {
            return Err(malformed(W, pos, MalformedReason::TruncatedHeader));
        }
        let mut t = [0u8; 16];
        t.copy_from_slice(&b[pos..pos + 16]);
        let u = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]) as usize;
        let list_size = u(pos + 16);
        let header_size = u(pos + 20);
        let sig_size = u(pos + 24);
        if list_size < 28 || list_size > b.len() - pos {
            return Err(malformed(W, pos, MalformedReason::ListSize(list_size)));
        }
        if sig_size < 16 || header_size > list_size - 28 {
            return Err(malformed(
                W,
                pos,
                MalformedReason::SignatureSize {
                    sig_size,
                    header_size,
                },
            ));
        }
        let body = list_size - 28 - header_size;
        if body % sig_size != 0 {
            return Err(malformed(W, pos, MalformedReason::Unfilled));
        }
        let header = b[pos + 28..pos + 28 + header_size].to_vec();
        let mut entries = Vec::new();
        let mut e = pos + 28 + header_size;
        while e < pos + list_size {
            let mut owner = [0u8; 16];
            owner.copy_from_slice(&b[e..e + 16]);
            entries.push(SignatureData {
                owner: EfiGuid(owner),
                data: b[e + 16..e + sig_size].to_vec(),
            });
            e += sig_size;
        }
        out.push(SignatureList {
            sig_type: EfiGuid(t),
            header,
            entries,
        });
        pos += list_size;
    }
    Ok(out)
}

/// Encode signature lists.
pub fn encode_signature_lists(lists: &[SignatureList]) -> Vec<u8> {
    let mut v = Vec::new();
    for l in lists {
        let sig_size = l.entries.first().map(|e| 16 + e.data.len()).unwrap_or(16);
        let size = 28 + l.header.len() + sig_size * l.entries.len();
        v.extend_from_slice(&l.sig_type.0);
        v.extend_from_slice(&(size as u32).to_le_bytes());
        v.extend_from_slice(&(l.header.len() as u32).to_le_bytes());
        v.extend_from_slice(&(sig_size as u32).to_le_bytes());
        v.extend_from_slice(&l.header);
        for e in &l.entries {
            v.extend_from_slice(&e.owner.0);
            v.extend_from_slice(&e.data);
        }
    }
    v
}

/// A one-certificate X.509 signature list, as enrolment tools write for each certificate.
pub fn x509_list(owner: EfiGuid, cert_der: &[u8]) -> SignatureList {
    SignatureList {
        sig_type: EFI_CERT_X509,
        header: Vec::new(),
        entries: vec![SignatureData {
            owner,
            data: cert_der.to_vec(),
        }],
    }
}
