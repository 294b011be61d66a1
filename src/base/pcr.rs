//! PCRs: indexes, the extend operation, and sets of values per bank. The base every
//! measurement, prediction and policy module builds on.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::hash::{Digest, DigestParseError, HashAlg, UnknownHashAlg};

/// Highest PCR index in a 3-byte selection.
pub const MAX_PCR: u32 = 23;

/// A PCR index 0..=23.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct PcrIndex(u32);

/// Error for an out-of-range PCR index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PCR index {0} is out of range (0-23)")]
pub struct PcrIndexError(pub u32);

impl PcrIndex {
    /// Validate an index.
    pub fn new(i: u32) -> Result<Self, PcrIndexError> {
        if i > MAX_PCR {
            return Err(PcrIndexError(i));
        }
        Ok(PcrIndex(i))
    }
    /// An index fixed at compile time: `PcrIndex::of::<11>()` (past 23 it does not compile).
    pub const fn of<const N: u32>() -> Self {
        const { assert!(N <= MAX_PCR, "PCR index out of range") };
        PcrIndex(N)
    }
    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for PcrIndex {
    type Error = PcrIndexError;
    fn try_from(v: u32) -> Result<Self, Self::Error> {
        PcrIndex::new(v)
    }
}

impl From<PcrIndex> for u32 {
    fn from(p: PcrIndex) -> u32 {
        p.0
    }
}

/// Compare with a plain number (`pcrs == [7, 11]`).
impl PartialEq<u32> for PcrIndex {
    fn eq(&self, other: &u32) -> bool {
        self.0 == *other
    }
}

impl std::fmt::Display for PcrIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Parse a PCR list as systemd spells it: "7+11", "7,11", "" (none).
pub fn parse_pcr_list(s: &str) -> Result<BTreeSet<PcrIndex>, PcrIndexError> {
    s.split(['+', ','])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .map_err(|_| PcrIndexError(u32::MAX))
                .and_then(PcrIndex::new)
        })
        .collect()
}

/// PCR extend (TPM 2.0 Part 1 §17.2): `new = H(old || digest)`.
pub fn extend(old: &Digest, digest: &Digest) -> Digest {
    let alg = old.alg();
    let mut h = alg.hasher();
    h.update(old.as_bytes());
    h.update(digest.as_bytes());
    h.finalize()
}

/// PCR values keyed by (bank, index): what a TPM reports, a log replays to, a prediction
/// gives, or a JSON file holds. A map underneath (it derefs to one), with its own type so
/// signatures say what flows through them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PcrValues(BTreeMap<(HashAlg, u32), Digest>);

impl PcrValues {
    /// No values.
    pub fn new() -> Self {
        PcrValues(BTreeMap::new())
    }

    /// The value of `pcr` in `bank`.
    pub fn value(&self, bank: HashAlg, pcr: u32) -> Option<&Digest> {
        self.0.get(&(bank, pcr))
    }

    /// The map.
    pub fn into_inner(self) -> BTreeMap<(HashAlg, u32), Digest> {
        self.0
    }
}

impl std::ops::Deref for PcrValues {
    type Target = BTreeMap<(HashAlg, u32), Digest>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for PcrValues {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl From<BTreeMap<(HashAlg, u32), Digest>> for PcrValues {
    fn from(m: BTreeMap<(HashAlg, u32), Digest>) -> Self {
        PcrValues(m)
    }
}

impl FromIterator<((HashAlg, u32), Digest)> for PcrValues {
    fn from_iter<I: IntoIterator<Item = ((HashAlg, u32), Digest)>>(i: I) -> Self {
        PcrValues(i.into_iter().collect())
    }
}

impl Extend<((HashAlg, u32), Digest)> for PcrValues {
    fn extend<I: IntoIterator<Item = ((HashAlg, u32), Digest)>>(&mut self, i: I) {
        self.0.extend(i)
    }
}

impl IntoIterator for PcrValues {
    type Item = ((HashAlg, u32), Digest);
    type IntoIter = std::collections::btree_map::IntoIter<(HashAlg, u32), Digest>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a PcrValues {
    type Item = (&'a (HashAlg, u32), &'a Digest);
    type IntoIter = std::collections::btree_map::Iter<'a, (HashAlg, u32), Digest>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Parse PCR values from JSON `{"sha256": {"0": "hex", ...}, ...}` (the shape of
/// test-vectors/boots/*/pcrs.json and of `bootchain eventlog replay --json`), or from an
/// object carrying that shape as `"values"` (`bootchain pcr predict --json`).
pub fn parse_pcr_values_json(text: &str) -> Result<PcrValues, PcrValuesError> {
    let mut top: serde_json::Value = serde_json::from_str(text).map_err(PcrValuesError::Json)?;
    if let Some(inner) = top.get_mut("values") {
        top = inner.take();
    }
    let v: BTreeMap<String, BTreeMap<String, String>> =
        serde_json::from_value(top).map_err(PcrValuesError::Json)?;
    let mut out = PcrValues::new();
    for (bank, m) in v {
        let alg: HashAlg = bank.parse().map_err(PcrValuesError::Bank)?;
        for (idx, val) in m {
            let i = idx
                .parse::<u32>()
                .map_err(BadPcrIndex::from)
                .and_then(|i| PcrIndex::new(i).map_err(BadPcrIndex::from))
                .map_err(|source| PcrValuesError::Index {
                    index: idx.clone(),
                    source,
                })?;
            let d = Digest::from_hex(alg, &val).map_err(|source| PcrValuesError::Value {
                bank: alg,
                pcr: i.get(),
                source,
            })?;
            out.insert((alg, i.get()), d);
        }
    }
    Ok(out)
}

/// PCR values as JSON in the same shape.
pub fn pcr_values_json(v: &PcrValues) -> serde_json::Value {
    let mut m: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for ((alg, i), d) in v {
        m.entry(alg.name().into())
            .or_default()
            .insert(i.to_string(), d.to_hex());
    }
    serde_json::to_value(m).unwrap_or_default()
}

/// Why a PCR values JSON key is not a PCR index ([`PcrValuesError::Index`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BadPcrIndex {
    /// Not a decimal number.
    #[error(transparent)]
    NotNumber(#[from] std::num::ParseIntError),
    /// Above 23.
    #[error(transparent)]
    Range(#[from] PcrIndexError),
}

/// Why a PCR values JSON document is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PcrValuesError {
    /// Not JSON of the expected shape.
    #[error("PCR values JSON")]
    Json(#[source] serde_json::Error),
    /// An unknown bank name.
    #[error("PCR values JSON")]
    Bank(#[source] UnknownHashAlg),
    /// A PCR index that is not 0-23.
    #[error("PCR values JSON: bad PCR index {index:?}")]
    Index {
        /// The key as written.
        index: String,
        /// Why it is not an index.
        #[source]
        source: BadPcrIndex,
    },
    /// A value that is not a digest of its bank.
    #[error("PCR values JSON: {bank}:{pcr}")]
    Value {
        /// Bank.
        bank: HashAlg,
        /// PCR.
        pcr: u32,
        /// Why.
        #[source]
        source: DigestParseError,
    },
}
