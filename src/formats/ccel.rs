//! Intel TDX measurement registers and the confidential-computing event log (CCEL).
//!
//! A TD has MRTD (fixed at build time) and four runtime registers RTMR[0..3], all SHA-384,
//! extended as `RTMR ← SHA-384(RTMR ‖ digest)` from 48 zero bytes. UEFI 2.10 §38.4.1
//! (`EFI_CC_MEASUREMENT_PROTOCOL`) maps PCRs to CC MR indexes: PCR 0 → 0 (MRTD), PCR 1 and 7
//! → 1 (RTMR\[0\]), PCR 2–6 → 2 (RTMR\[1\]), PCR 8–15 → 3 (RTMR\[2\]); index 4 is RTMR\[3\]; firmware
//! extends RTMR[index − 1] (EDK2 `TdxHashLogExtendEvent`).
//!
//! The log the ACPI `CCEL` table points to is a TCG crypto-agile log (PFP §10.2) with one
//! bank, SHA-384, whose index field is the CC MR index. TDVF writes its header record with
//! index 1 and pads the log area with 0xFF after the last event.

use std::collections::BTreeMap;
use std::fmt;

use crate::eventlog::{extend, DataCheck, Event, EventLog, EventLogError, EventType};
use crate::hash::{Digest, DigestParseError, HashAlg};
use crate::pcr::PcrIndex;

/// A TDX runtime measurement register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rtmr {
    /// RTMR\[0\]: firmware configuration (TD HOB, CFV, Secure Boot and boot variables, ACPI).
    Rtmr0,
    /// RTMR\[1\]: the boot path (PCR 2–6 events: images started, GPT, boot actions).
    Rtmr1,
    /// RTMR\[2\]: the OS loader's measurements (PCR 8–15 events).
    Rtmr2,
    /// RTMR\[3\]: not mapped to any PCR; for the guest's own use.
    Rtmr3,
}

impl Rtmr {
    /// All four, in order.
    pub const ALL: [Rtmr; 4] = [Rtmr::Rtmr0, Rtmr::Rtmr1, Rtmr::Rtmr2, Rtmr::Rtmr3];

    /// The register's number (0..=3).
    pub fn number(self) -> u8 {
        match self {
            Rtmr::Rtmr0 => 0,
            Rtmr::Rtmr1 => 1,
            Rtmr::Rtmr2 => 2,
            Rtmr::Rtmr3 => 3,
        }
    }

    /// From its number.
    pub fn from_number(n: u8) -> Option<Self> {
        Rtmr::ALL.get(usize::from(n)).copied()
    }

    /// The CC MR index that names it in a CCEL (its number + 1).
    pub fn mr_index(self) -> CcMrIndex {
        CcMrIndex::Rtmr(self)
    }

    /// The reset value: 48 zero bytes.
    pub fn initial() -> Digest {
        Digest::zero(HashAlg::Sha384)
    }
}

impl fmt::Display for Rtmr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rtmr{}", self.number())
    }
}

/// A CC measurement-register index (UEFI 2.10 §38.4.1, `EFI_CC_MR_INDEX`) as the CCEL's index
/// field holds it: 0 is MRTD, 1..=4 are RTMR[0..3].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CcMrIndex {
    /// 0: MRTD, built by the TDX module at TD build time; never extended at runtime.
    Mrtd,
    /// 1..=4: a runtime register.
    Rtmr(Rtmr),
}

impl CcMrIndex {
    /// From the raw index field; `None` above 4.
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(CcMrIndex::Mrtd),
            n => u8::try_from(n - 1)
                .ok()
                .and_then(Rtmr::from_number)
                .map(CcMrIndex::Rtmr),
        }
    }

    /// The raw index.
    pub fn to_u32(self) -> u32 {
        match self {
            CcMrIndex::Mrtd => 0,
            CcMrIndex::Rtmr(r) => u32::from(r.number()) + 1,
        }
    }

    /// The index a PCR measurement goes to (UEFI 2.10 §38.4.1; EDK2 `MapPcrToMrIndex`):
    /// PCR 0 → MRTD, 1 and 7 → RTMR\[0\], 2–6 → RTMR\[1\], 8–15 → RTMR\[2\]; `None` above 15.
    pub fn from_pcr(pcr: PcrIndex) -> Option<Self> {
        match pcr.get() {
            0 => Some(CcMrIndex::Mrtd),
            1 | 7 => Some(CcMrIndex::Rtmr(Rtmr::Rtmr0)),
            2..=6 => Some(CcMrIndex::Rtmr(Rtmr::Rtmr1)),
            8..=15 => Some(CcMrIndex::Rtmr(Rtmr::Rtmr2)),
            _ => None,
        }
    }
}

/// Why a CCEL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CcelError {
    /// Not a well-formed crypto-agile log.
    #[error("not a well-formed CC event log")]
    Parse(#[source] EventLogError),
    /// The header does not list exactly the SHA-384 bank.
    #[error("a CCEL has one bank, sha384; this log's header lists algorithm ids {0:04x?}")]
    NotSha384(Vec<u16>),
    /// An event claims to extend MRTD, which cannot be extended at runtime.
    #[error("offset {offset}: event of type {event_type} has CC MR index 0 (MRTD), which cannot be extended")]
    MrtdEvent {
        /// Offset of the record.
        offset: usize,
        /// Its type.
        event_type: EventType,
    },
    /// An index field above 4.
    #[error("offset {offset}: CC MR index {index} is not 1..=4")]
    BadMrIndex {
        /// Offset of the record.
        offset: usize,
        /// The index field.
        index: u32,
    },
    /// A measured event without a SHA-384 digest.
    #[error("offset {offset}: event has no sha384 digest")]
    MissingDigest {
        /// Offset of the record.
        offset: usize,
    },
    /// Bytes after the end marker that are neither 0xFF nor zero padding.
    #[error("offset {offset}: byte {byte:#04x} after the last event is not 0xFF or zero padding")]
    Garbage {
        /// Offset of the first such byte.
        offset: usize,
        /// The byte.
        byte: u8,
    },
}

/// A parsed CCEL: a crypto-agile log whose records are checked to carry CC MR indexes and
/// SHA-384 digests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CcEventLog {
    /// The log (each event's `pcr` field holds the CC MR index).
    pub log: EventLog,
    /// Bytes of padding after the last event.
    pub padding: usize,
}

impl CcEventLog {
    /// Parse a CCEL (the data the ACPI `CCEL` table points to, or
    /// `/sys/firmware/acpi/tables/data/CCEL`), stopping at the 0xFF (or zero) padding.
    ///
    /// ```no_run
    /// let bytes = std::fs::read("/sys/firmware/acpi/tables/data/CCEL")?;
    /// let log = bootchain::ccel::CcEventLog::parse(&bytes)?;
    /// for (rtmr, value) in log.replay_rtmrs().iter() {
    ///     println!("{rtmr}={value}");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(buf: &[u8]) -> Result<Self, CcelError> {
        // TDVF writes the header with index 1; accept the TPM log's 0 too.
        let (log, end) = EventLog::parse_with(buf, &[0, 1]).map_err(CcelError::Parse)?;
        let algs: Vec<u16> = log.spec_id.algorithms.iter().map(|a| a.alg_id).collect();
        if algs != [HashAlg::Sha384.tpm_alg_id()] {
            return Err(CcelError::NotSha384(algs));
        }
        for e in &log.events {
            match CcMrIndex::from_u32(e.pcr) {
                None => {
                    return Err(CcelError::BadMrIndex {
                        offset: e.offset,
                        index: e.pcr,
                    })
                }
                // EV_NO_ACTION records are not extended; their index does not matter.
                Some(CcMrIndex::Mrtd) if e.event_type != EventType::NoAction => {
                    return Err(CcelError::MrtdEvent {
                        offset: e.offset,
                        event_type: e.event_type,
                    })
                }
                _ => {}
            }
            if e.event_type != EventType::NoAction && e.digest(HashAlg::Sha384).is_none() {
                return Err(CcelError::MissingDigest { offset: e.offset });
            }
        }
        let tail = buf.get(end..).unwrap_or_default();
        if let Some(i) = tail.iter().position(|&b| b != 0xFF && b != 0) {
            return Err(CcelError::Garbage {
                offset: end + i,
                byte: tail[i],
            });
        }
        Ok(CcEventLog {
            log,
            padding: tail.len(),
        })
    }

    /// The register an event extends (`None` for EV_NO_ACTION records).
    pub fn rtmr_of(e: &Event) -> Option<Rtmr> {
        if e.event_type == EventType::NoAction {
            return None;
        }
        match CcMrIndex::from_u32(e.pcr) {
            Some(CcMrIndex::Rtmr(r)) => Some(r),
            _ => None,
        }
    }

    /// Replay: the value of every RTMR the log has events for.
    pub fn replay_rtmrs(&self) -> RtmrValues {
        let mut out = RtmrValues::default();
        for e in &self.log.events {
            let (Some(r), Some(d)) = (Self::rtmr_of(e), e.digest(HashAlg::Sha384)) else {
                continue;
            };
            let cur = out.0.entry(r).or_insert_with(Rtmr::initial);
            *cur = extend(cur, &d);
        }
        out
    }
}

/// Whether a CCEL event's data hashes to its digest: as [`crate::eventlog::check_data`],
/// except that EV_IPL events in RTMR\[2\] that do not match are not applicable (systemd-stub
/// logs a section's name and measures its bytes; GRUB's strings do match).
pub fn check_data(e: &Event) -> DataCheck {
    let mut as_tpm = e.clone();
    // Checked as if at a PCR outside systemd's 11–13, so that matching strings still count.
    as_tpm.pcr = 8;
    match crate::eventlog::check_data(&as_tpm) {
        DataCheck::Mismatch
            if e.event_type == EventType::Ipl && CcEventLog::rtmr_of(e) == Some(Rtmr::Rtmr2) =>
        {
            DataCheck::NotApplicable
        }
        other => other,
    }
}

/// RTMR values: what a TD quote reports, a CCEL replays to, or a prediction gives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RtmrValues(BTreeMap<Rtmr, Digest>);

impl RtmrValues {
    /// No values.
    pub fn new() -> Self {
        Self::default()
    }

    /// A register's value.
    pub fn get(&self, r: Rtmr) -> Option<&Digest> {
        self.0.get(&r)
    }

    /// Set a register's value.
    pub fn insert(&mut self, r: Rtmr, v: Digest) {
        self.0.insert(r, v);
    }

    /// The values in register order.
    pub fn iter(&self) -> impl Iterator<Item = (Rtmr, &Digest)> {
        self.0.iter().map(|(r, d)| (*r, d))
    }

    /// As JSON: `{"rtmr0": "hex", "rtmr1": "hex", …}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.0
                .iter()
                .map(|(r, d)| (r.to_string(), serde_json::Value::String(d.to_hex())))
                .collect(),
        )
    }

    /// Parse the [`Self::to_json`] shape (also inside a `"values"` member, as `tdx predict
    /// --json` prints it).
    pub fn from_json(text: &str) -> Result<Self, RtmrValuesError> {
        let mut top: serde_json::Value =
            serde_json::from_str(text).map_err(RtmrValuesError::Json)?;
        if let Some(inner) = top.get_mut("values") {
            top = inner.take();
        }
        let m: BTreeMap<String, String> =
            serde_json::from_value(top).map_err(RtmrValuesError::Json)?;
        let mut out = RtmrValues::new();
        for (k, v) in m {
            let r = Rtmr::ALL
                .into_iter()
                .find(|r| r.to_string() == k)
                .ok_or_else(|| RtmrValuesError::Key(k.clone()))?;
            let d = Digest::from_hex(HashAlg::Sha384, &v)
                .map_err(|source| RtmrValuesError::Value { rtmr: r, source })?;
            out.insert(r, d);
        }
        Ok(out)
    }
}

/// Why an RTMR values JSON document is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtmrValuesError {
    /// Not JSON of the expected shape.
    #[error("RTMR values JSON (expected {{\"rtmr0\": \"hex\", …}})")]
    Json(#[source] serde_json::Error),
    /// A key other than rtmr0..rtmr3.
    #[error("RTMR values JSON: unknown key {0:?} (expected rtmr0..rtmr3)")]
    Key(String),
    /// A value that is not 48 bytes of hex.
    #[error("RTMR values JSON: {rtmr}")]
    Value {
        /// The register.
        rtmr: Rtmr,
        /// Why.
        #[source]
        source: DigestParseError,
    },
}

/// A register whose replayed value differs from the expected one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RtmrMismatch {
    /// The register.
    pub rtmr: Rtmr,
    /// What the log replays to (the initial value if the log has no events for it).
    pub replayed: Digest,
    /// What was expected.
    pub expected: Digest,
}

/// Compare the replay of `log` with every register `expected` gives.
pub fn verify_rtmrs(log: &CcEventLog, expected: &RtmrValues) -> Vec<RtmrMismatch> {
    let replayed = log.replay_rtmrs();
    expected
        .iter()
        .filter_map(|(r, want)| {
            let got = replayed.get(r).cloned().unwrap_or_else(Rtmr::initial);
            (got != *want).then(|| RtmrMismatch {
                rtmr: r,
                replayed: got,
                expected: want.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mr_index_mapping() {
        let map = |p: u32| CcMrIndex::from_pcr(PcrIndex::new(p).unwrap());
        assert_eq!(map(0), Some(CcMrIndex::Mrtd));
        assert_eq!(map(7), Some(CcMrIndex::Rtmr(Rtmr::Rtmr0)));
        assert_eq!(map(4), Some(CcMrIndex::Rtmr(Rtmr::Rtmr1)));
        assert_eq!(map(11), Some(CcMrIndex::Rtmr(Rtmr::Rtmr2)));
        assert_eq!(map(16), None);
        for i in 0..=4 {
            assert_eq!(CcMrIndex::from_u32(i).map(CcMrIndex::to_u32), Some(i));
        }
        assert_eq!(CcMrIndex::from_u32(5), None);
        assert_eq!(Rtmr::Rtmr2.mr_index().to_u32(), 3);
    }

    #[test]
    fn json_round_trip_and_refusals() {
        let mut v = RtmrValues::new();
        v.insert(Rtmr::Rtmr1, HashAlg::Sha384.digest(b"x"));
        let back = RtmrValues::from_json(&v.to_json().to_string()).unwrap();
        assert_eq!(back, v);
        assert!(matches!(
            RtmrValues::from_json(r#"{"rtmr9": "00"}"#),
            Err(RtmrValuesError::Key(_))
        ));
        assert!(matches!(
            RtmrValues::from_json(r#"{"rtmr0": "00"}"#),
            Err(RtmrValuesError::Value { .. })
        ));
    }
}
