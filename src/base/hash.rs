//! Hash algorithms and digests shared by every module (PCR banks, Authenticode, policies).

use std::fmt;
use std::io;
use std::str::FromStr;

use digest::Digest as _;
use serde::{Deserialize, Serialize};

/// A hash algorithm bootchain can compute.
///
/// The same four algorithms appear as TPM PCR banks (TCG Algorithm Registry: SHA1 = 0x0004,
/// SHA256 = 0x000B, SHA384 = 0x000C, SHA512 = 0x000D) and as Authenticode digest algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    /// SHA-1 (20 bytes). Kept for the legacy PCR bank; never used to sign.
    Sha1,
    /// SHA-256 (32 bytes).
    Sha256,
    /// SHA-384 (48 bytes).
    Sha384,
    /// SHA-512 (64 bytes).
    Sha512,
}

impl HashAlg {
    /// All algorithms, in the order systemd-measure lists banks.
    pub const ALL: [HashAlg; 4] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    /// Digest length in bytes.
    pub const fn output_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// Lower-case name as systemd and tpm2-tools spell it (`sha256`).
    pub const fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }

    /// The TPM algorithm identifier (TCG Algorithm Registry, TPM_ALG_ID).
    pub const fn tpm_alg_id(self) -> u16 {
        match self {
            HashAlg::Sha1 => 0x0004,
            HashAlg::Sha256 => 0x000B,
            HashAlg::Sha384 => 0x000C,
            HashAlg::Sha512 => 0x000D,
        }
    }

    /// The algorithm for a TPM_ALG_ID, if it is one of ours.
    pub const fn from_tpm_alg_id(id: u16) -> Option<HashAlg> {
        match id {
            0x0004 => Some(HashAlg::Sha1),
            0x000B => Some(HashAlg::Sha256),
            0x000C => Some(HashAlg::Sha384),
            0x000D => Some(HashAlg::Sha512),
            _ => None,
        }
    }

    /// The ASN.1 object identifier (NIST / OIW arcs) used in AlgorithmIdentifier.
    pub const fn oid(self) -> const_oid::ObjectIdentifier {
        match self {
            HashAlg::Sha1 => const_oid::db::rfc5912::ID_SHA_1,
            HashAlg::Sha256 => const_oid::db::rfc5912::ID_SHA_256,
            HashAlg::Sha384 => const_oid::db::rfc5912::ID_SHA_384,
            HashAlg::Sha512 => const_oid::db::rfc5912::ID_SHA_512,
        }
    }

    /// The algorithm for a digest OID.
    pub fn from_oid(oid: &const_oid::ObjectIdentifier) -> Option<HashAlg> {
        HashAlg::ALL.into_iter().find(|a| a.oid() == *oid)
    }

    /// A fresh incremental hasher.
    pub fn hasher(self) -> Hasher {
        match self {
            HashAlg::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashAlg::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashAlg::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            HashAlg::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Hash `data` in one call.
    pub fn digest(self, data: &[u8]) -> Digest {
        let mut h = self.hasher();
        h.update(data);
        h.finalize()
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error for an unknown hash algorithm name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hash algorithm {0:?} (expected sha1, sha256, sha384 or sha512)")]
pub struct UnknownHashAlg(pub String);

impl FromStr for HashAlg {
    type Err = UnknownHashAlg;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('-', "").as_str() {
            "sha1" => Ok(HashAlg::Sha1),
            "sha256" => Ok(HashAlg::Sha256),
            "sha384" => Ok(HashAlg::Sha384),
            "sha512" => Ok(HashAlg::Sha512),
            _ => Err(UnknownHashAlg(s.to_string())),
        }
    }
}

/// A digest value tagged with the algorithm that produced it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    alg: HashAlg,
    bytes: Vec<u8>,
}

/// Error for a digest whose length does not fit its algorithm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{alg} digest must be {expected} bytes, got {got}")]
pub struct DigestLengthError {
    /// The algorithm.
    pub alg: HashAlg,
    /// Its output length.
    pub expected: usize,
    /// The length given.
    pub got: usize,
}

impl Digest {
    /// Wrap raw bytes, checking the length against the algorithm.
    pub fn new(alg: HashAlg, bytes: Vec<u8>) -> Result<Self, DigestLengthError> {
        if bytes.len() != alg.output_len() {
            return Err(DigestLengthError {
                alg,
                expected: alg.output_len(),
                got: bytes.len(),
            });
        }
        Ok(Digest { alg, bytes })
    }

    /// The all-zero value (a PCR after reset).
    pub fn zero(alg: HashAlg) -> Self {
        Digest {
            alg,
            bytes: vec![0; alg.output_len()],
        }
    }

    /// Parse lower- or upper-case hex.
    pub fn from_hex(alg: HashAlg, s: &str) -> Result<Self, DigestParseError> {
        let bytes = hex::decode(s.trim()).map_err(|_| DigestParseError::NotHex)?;
        Digest::new(alg, bytes).map_err(DigestParseError::Length)
    }

    /// The algorithm.
    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.bytes)
    }
}

/// Error parsing a hex digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestParseError {
    /// Not hexadecimal.
    #[error("digest is not hexadecimal")]
    NotHex,
    /// Wrong length.
    #[error(transparent)]
    Length(DigestLengthError),
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg, self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

/// A digest from its hex text, the algorithm told by the length: unambiguous for the banks
/// bootchain knows (20, 32, 48, 64 bytes), so JSON written by [`Serialize`] reads back.
impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes = hex::decode(text.trim()).map_err(D::Error::custom)?;
        let alg = HashAlg::ALL
            .into_iter()
            .find(|a| a.output_len() == bytes.len())
            .ok_or_else(|| {
                D::Error::custom(format!("no hash algorithm has {} bytes", bytes.len()))
            })?;
        Digest::new(alg, bytes).map_err(D::Error::custom)
    }
}

impl AsRef<[u8]> for Digest {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

/// An incremental hasher for one [`HashAlg`].
#[derive(Clone)]
pub enum Hasher {
    /// SHA-1 state.
    Sha1(sha1::Sha1),
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-384 state.
    Sha384(sha2::Sha384),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
}

impl Hasher {
    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The algorithm.
    pub fn alg(&self) -> HashAlg {
        match self {
            Hasher::Sha1(_) => HashAlg::Sha1,
            Hasher::Sha256(_) => HashAlg::Sha256,
            Hasher::Sha384(_) => HashAlg::Sha384,
            Hasher::Sha512(_) => HashAlg::Sha512,
        }
    }

    /// Finish and return the digest.
    pub fn finalize(self) -> Digest {
        let alg = self.alg();
        let bytes = match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        Digest { alg, bytes }
    }
}

impl io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Several hashers fed the same bytes (one pass over the data for every bank).
#[derive(Clone)]
pub struct MultiHasher {
    hashers: Vec<Hasher>,
}

impl MultiHasher {
    /// One hasher per algorithm.
    pub fn new(algs: &[HashAlg]) -> Self {
        MultiHasher {
            hashers: algs.iter().map(|a| a.hasher()).collect(),
        }
    }

    /// Feed bytes to every hasher.
    pub fn update(&mut self, data: &[u8]) {
        for h in &mut self.hashers {
            h.update(data);
        }
    }

    /// Finish all hashers, in the order given to [`MultiHasher::new`].
    pub fn finalize(self) -> Vec<Digest> {
        self.hashers.into_iter().map(Hasher::finalize).collect()
    }
}

/// Hash what is written, so a file is hashed in every bank with `io::copy(&mut file, &mut h)`
/// (streaming, bounded memory).
impl std::io::Write for MultiHasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multihasher_as_a_writer() {
        let mut h = MultiHasher::new(&[HashAlg::Sha256, HashAlg::Sha1]);
        std::io::copy(&mut &b"abc"[..], &mut h).unwrap();
        assert_eq!(
            h.finalize(),
            vec![HashAlg::Sha256.digest(b"abc"), HashAlg::Sha1.digest(b"abc")]
        );
    }

    #[test]
    fn digest_json_round_trip_and_refusals() {
        for alg in HashAlg::ALL {
            let d = alg.digest(b"x");
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        }
        assert!(serde_json::from_str::<Digest>("\"abcd\"").is_err());
        assert!(serde_json::from_str::<Digest>("\"zz\"").is_err());
    }

    #[test]
    fn known_answers() {
        // FIPS 180-2 "abc" vectors.
        assert_eq!(
            HashAlg::Sha256.digest(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            HashAlg::Sha1.digest(b"abc").to_hex(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn parse_names_and_lengths() {
        assert_eq!("SHA-256".parse::<HashAlg>().unwrap(), HashAlg::Sha256);
        assert!("md5".parse::<HashAlg>().is_err());
        assert!(Digest::new(HashAlg::Sha1, vec![0; 32]).is_err());
        assert!(Digest::from_hex(HashAlg::Sha1, "zz").is_err());
    }
}
