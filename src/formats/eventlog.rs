//! TCG crypto-agile event logs (`binary_bios_measurements`): strict parsing, event decoding,
//! replay and data-versus-digest checks.
//!
//! Format: TCG PC Client Platform Firmware Profile (PFP) §10.2 — a first `TCG_PCR_EVENT`
//! (SHA-1 layout) carrying `TCG_EfiSpecIDEvent` ("Spec ID Event03", the list of banks and digest
//! sizes), then `TCG_PCR_EVENT2` records: `u32 pcrIndex; u32 eventType; u32 count;
//! count × {u16 algId; digest}; u32 eventSize; event`. Little-endian throughout.
//!
//! Every read is bounds-checked; malformed input gives a [`EventLogError`] naming the byte
//! offset, never a panic.

pub use crate::pcr::{extend, parse_pcr_values_json, pcr_values_json, PcrValues, PcrValuesError};

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::hash::{Digest, HashAlg};

/// Event types (PFP §10.4.1, Table 9) that the boot chain uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// EV_PREBOOT_CERT.
    PrebootCert,
    /// EV_POST_CODE.
    PostCode,
    /// EV_NO_ACTION: never extended.
    NoAction,
    /// EV_SEPARATOR.
    Separator,
    /// EV_ACTION.
    Action,
    /// EV_EVENT_TAG.
    EventTag,
    /// EV_S_CRTM_CONTENTS.
    SCrtmContents,
    /// EV_S_CRTM_VERSION.
    SCrtmVersion,
    /// EV_CPU_MICROCODE.
    CpuMicrocode,
    /// EV_PLATFORM_CONFIG_FLAGS.
    PlatformConfigFlags,
    /// EV_TABLE_OF_DEVICES.
    TableOfDevices,
    /// EV_COMPACT_HASH.
    CompactHash,
    /// EV_IPL.
    Ipl,
    /// EV_IPL_PARTITION_DATA.
    IplPartitionData,
    /// EV_NONHOST_CODE.
    NonhostCode,
    /// EV_NONHOST_CONFIG.
    NonhostConfig,
    /// EV_NONHOST_INFO.
    NonhostInfo,
    /// EV_OMIT_BOOT_DEVICE_EVENTS.
    OmitBootDeviceEvents,
    /// EV_EFI_VARIABLE_DRIVER_CONFIG.
    EfiVariableDriverConfig,
    /// EV_EFI_VARIABLE_BOOT.
    EfiVariableBoot,
    /// EV_EFI_BOOT_SERVICES_APPLICATION.
    EfiBootServicesApplication,
    /// EV_EFI_BOOT_SERVICES_DRIVER.
    EfiBootServicesDriver,
    /// EV_EFI_RUNTIME_SERVICES_DRIVER.
    EfiRuntimeServicesDriver,
    /// EV_EFI_GPT_EVENT.
    EfiGptEvent,
    /// EV_EFI_ACTION.
    EfiAction,
    /// EV_EFI_PLATFORM_FIRMWARE_BLOB.
    EfiPlatformFirmwareBlob,
    /// EV_EFI_HANDOFF_TABLES.
    EfiHandoffTables,
    /// EV_EFI_PLATFORM_FIRMWARE_BLOB2.
    EfiPlatformFirmwareBlob2,
    /// EV_EFI_HANDOFF_TABLES2.
    EfiHandoffTables2,
    /// EV_EFI_VARIABLE_BOOT2.
    EfiVariableBoot2,
    /// EV_EFI_HCRTM_EVENT.
    EfiHcrtmEvent,
    /// EV_EFI_VARIABLE_AUTHORITY.
    EfiVariableAuthority,
    /// EV_EFI_SPDM_FIRMWARE_BLOB.
    EfiSpdmFirmwareBlob,
    /// EV_EFI_SPDM_FIRMWARE_CONFIG.
    EfiSpdmFirmwareConfig,
    /// Anything else, kept as is.
    Unknown(u32),
}

const EVENT_TYPES: &[(u32, EventType, &str)] = &[
    (0x0000_0000, EventType::PrebootCert, "EV_PREBOOT_CERT"),
    (0x0000_0001, EventType::PostCode, "EV_POST_CODE"),
    (0x0000_0003, EventType::NoAction, "EV_NO_ACTION"),
    (0x0000_0004, EventType::Separator, "EV_SEPARATOR"),
    (0x0000_0005, EventType::Action, "EV_ACTION"),
    (0x0000_0006, EventType::EventTag, "EV_EVENT_TAG"),
    (0x0000_0007, EventType::SCrtmContents, "EV_S_CRTM_CONTENTS"),
    (0x0000_0008, EventType::SCrtmVersion, "EV_S_CRTM_VERSION"),
    (0x0000_0009, EventType::CpuMicrocode, "EV_CPU_MICROCODE"),
    (
        0x0000_000A,
        EventType::PlatformConfigFlags,
        "EV_PLATFORM_CONFIG_FLAGS",
    ),
    (
        0x0000_000B,
        EventType::TableOfDevices,
        "EV_TABLE_OF_DEVICES",
    ),
    (0x0000_000C, EventType::CompactHash, "EV_COMPACT_HASH"),
    (0x0000_000D, EventType::Ipl, "EV_IPL"),
    (
        0x0000_000E,
        EventType::IplPartitionData,
        "EV_IPL_PARTITION_DATA",
    ),
    (0x0000_000F, EventType::NonhostCode, "EV_NONHOST_CODE"),
    (0x0000_0010, EventType::NonhostConfig, "EV_NONHOST_CONFIG"),
    (0x0000_0011, EventType::NonhostInfo, "EV_NONHOST_INFO"),
    (
        0x0000_0012,
        EventType::OmitBootDeviceEvents,
        "EV_OMIT_BOOT_DEVICE_EVENTS",
    ),
    (
        0x8000_0001,
        EventType::EfiVariableDriverConfig,
        "EV_EFI_VARIABLE_DRIVER_CONFIG",
    ),
    (
        0x8000_0002,
        EventType::EfiVariableBoot,
        "EV_EFI_VARIABLE_BOOT",
    ),
    (
        0x8000_0003,
        EventType::EfiBootServicesApplication,
        "EV_EFI_BOOT_SERVICES_APPLICATION",
    ),
    (
        0x8000_0004,
        EventType::EfiBootServicesDriver,
        "EV_EFI_BOOT_SERVICES_DRIVER",
    ),
    (
        0x8000_0005,
        EventType::EfiRuntimeServicesDriver,
        "EV_EFI_RUNTIME_SERVICES_DRIVER",
    ),
    (0x8000_0006, EventType::EfiGptEvent, "EV_EFI_GPT_EVENT"),
    (0x8000_0007, EventType::EfiAction, "EV_EFI_ACTION"),
    (
        0x8000_0008,
        EventType::EfiPlatformFirmwareBlob,
        "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    ),
    (
        0x8000_0009,
        EventType::EfiHandoffTables,
        "EV_EFI_HANDOFF_TABLES",
    ),
    (
        0x8000_000A,
        EventType::EfiPlatformFirmwareBlob2,
        "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    ),
    (
        0x8000_000B,
        EventType::EfiHandoffTables2,
        "EV_EFI_HANDOFF_TABLES2",
    ),
    (
        0x8000_000C,
        EventType::EfiVariableBoot2,
        "EV_EFI_VARIABLE_BOOT2",
    ),
    (0x8000_0010, EventType::EfiHcrtmEvent, "EV_EFI_HCRTM_EVENT"),
    (
        0x8000_00E0,
        EventType::EfiVariableAuthority,
        "EV_EFI_VARIABLE_AUTHORITY",
    ),
    (
        0x8000_00E1,
        EventType::EfiSpdmFirmwareBlob,
        "EV_EFI_SPDM_FIRMWARE_BLOB",
    ),
    (
        0x8000_00E2,
        EventType::EfiSpdmFirmwareConfig,
        "EV_EFI_SPDM_FIRMWARE_CONFIG",
    ),
];

impl EventType {
    /// From the raw value.
    pub fn from_u32(v: u32) -> Self {
        EVENT_TYPES
            .iter()
            .find(|(n, _, _)| *n == v)
            .map(|(_, t, _)| *t)
            .unwrap_or(EventType::Unknown(v))
    }

    /// The raw value.
    pub fn to_u32(self) -> u32 {
        match self {
            EventType::Unknown(v) => v,
            t => EVENT_TYPES
                .iter()
                .find(|(_, e, _)| *e == t)
                .map(|(n, _, _)| *n)
                .unwrap_or(0),
        }
    }

    /// From the spec name (`EV_SEPARATOR`) or a hex value (`0x800000e0`), as [`Self::name`]
    /// writes them.
    pub fn from_name(s: &str) -> Option<Self> {
        EVENT_TYPES
            .iter()
            .find(|(_, _, n)| *n == s)
            .map(|(_, t, _)| *t)
            .or_else(|| {
                s.strip_prefix("0x")
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .map(EventType::from_u32)
            })
    }

    /// The spec name (`EV_SEPARATOR`), or the hex value for unknown types.
    pub fn name(self) -> String {
        match self {
            EventType::Unknown(v) => format!("0x{v:08x}"),
            t => EVENT_TYPES
                .iter()
                .find(|(_, e, _)| *e == t)
                .map(|(_, _, n)| (*n).to_string())
                .unwrap_or_default(),
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Serialize for EventType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// Errors parsing an event log. Every variant names the byte offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventLogError {
    /// The log ends inside a structure.
    #[error("event log truncated at offset {offset}: {what} needs {needed} more bytes")]
    Truncated {
        /// Offset of the structure.
        offset: usize,
        /// What was being read.
        what: &'static str,
        /// Bytes missing.
        needed: usize,
    },
    /// The first event is not a Spec ID Event03 header.
    #[error("offset {offset}: not a crypto-agile log: {reason}")]
    NotCryptoAgile {
        /// Offset.
        offset: usize,
        /// Why.
        reason: String,
    },
    /// An absurd value.
    #[error("offset {offset}: {reason}")]
    Malformed {
        /// Offset.
        offset: usize,
        /// Why.
        reason: String,
    },
}

/// An algorithm listed in the Spec ID event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AlgorithmSize {
    /// TPM_ALG_ID.
    pub alg_id: u16,
    /// Digest size in bytes.
    pub digest_size: u16,
}

/// The TCG_EfiSpecIDEvent header (PFP §10.4.5.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SpecIdEvent {
    /// platformClass.
    pub platform_class: u32,
    /// specVersionMinor.
    pub spec_version_minor: u8,
    /// specVersionMajor.
    pub spec_version_major: u8,
    /// specErrata.
    pub spec_errata: u8,
    /// uintnSize.
    pub uintn_size: u8,
    /// The banks.
    pub algorithms: Vec<AlgorithmSize>,
    /// vendorInfo.
    pub vendor_info: Vec<u8>,
}

/// One digest of an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventDigest {
    /// TPM_ALG_ID.
    pub alg_id: u16,
    /// The digest bytes.
    pub bytes: Vec<u8>,
}

impl EventDigest {
    /// As a typed [`Digest`], if the algorithm is one we know.
    pub fn digest(&self) -> Option<Digest> {
        let alg = HashAlg::from_tpm_alg_id(self.alg_id)?;
        Digest::new(alg, self.bytes.clone()).ok()
    }
}

/// One TCG_PCR_EVENT2 record.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Event {
    /// Byte offset of the record in the log.
    pub offset: usize,
    /// pcrIndex.
    pub pcr: u32,
    /// eventType.
    pub event_type: EventType,
    /// The digests, in log order.
    pub digests: Vec<EventDigest>,
    /// The event data.
    pub data: Vec<u8>,
}

impl Event {
    /// The digest for a bank.
    pub fn digest(&self, alg: HashAlg) -> Option<Digest> {
        self.digests
            .iter()
            .find(|d| d.alg_id == alg.tpm_alg_id())
            .and_then(EventDigest::digest)
    }
}

/// A parsed log.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventLog {
    /// The header.
    pub spec_id: SpecIdEvent,
    /// The header record's data, kept for re-serialisation.
    pub header_data: Vec<u8>,
    /// Every record after the header.
    pub events: Vec<Event>,
}

/// Largest event we accept (a db with many certificates is well under this).
const MAX_EVENT_SIZE: usize = 16 << 20;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str, at: usize) -> Result<&'a [u8], EventLogError> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(EventLogError::Truncated {
                offset: at,
                what,
                needed: n - left,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, what: &'static str, at: usize) -> Result<u8, EventLogError> {
        Ok(self.take(1, what, at)?[0])
    }
    fn u16(&mut self, what: &'static str, at: usize) -> Result<u16, EventLogError> {
        let b = self.take(2, what, at)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str, at: usize) -> Result<u32, EventLogError> {
        let b = self.take(4, what, at)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The Spec ID signature ("Spec ID Event03\0").
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";

impl EventLog {
    /// Parse a crypto-agile log. Trailing 0xFFFFFFFF padding records (PFP §10.2.4) and
    /// trailing zero bytes end the log.
    ///
    /// ```no_run
    /// let bytes = std::fs::read("/sys/kernel/security/tpm0/binary_bios_measurements")?;
    /// let log = bootchain::eventlog::EventLog::parse(&bytes)?;
    /// for ((bank, pcr), value) in &log.replay() {
    ///     println!("{pcr}:{bank}={value}");
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn parse(buf: &[u8]) -> Result<Self, EventLogError> {
        Self::parse_with(buf, &[0]).map(|(log, _)| log)
    }

    /// The index field of the first record: 0 in a TPM log (PFP §10.2.1), 1 in TDVF's CCEL.
    pub fn header_index(buf: &[u8]) -> Option<u32> {
        buf.get(..4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }

    /// [`Self::parse`] accepting a header record whose index is one of `header_indexes`
    /// (a CCEL's is 1). Also returns the offset where the log's content ends (the start of
    /// the 0xFF or zero padding, or the buffer's end).
    pub(crate) fn parse_with(
        buf: &[u8],
        header_indexes: &[u32],
    ) -> Result<(Self, usize), EventLogError> {
        let mut r = Reader { buf, pos: 0 };
        // TCG_PCR_EVENT (SHA-1 layout) header.
        let pcr = r.u32("header pcrIndex", 0)?;
        let ty = r.u32("header eventType", 0)?;
        r.take(20, "header SHA-1 digest", 0)?;
        let size = r.u32("header eventSize", 0)? as usize;
        if !header_indexes.contains(&pcr) || ty != 3 {
            return Err(EventLogError::NotCryptoAgile {
                offset: 0,
                reason: format!(
                    "first event is index {pcr} type {ty:#x}, not {header_indexes:?} EV_NO_ACTION"
                ),
            });
        }
        if size > MAX_EVENT_SIZE {
            return Err(EventLogError::Malformed {
                offset: 28,
                reason: format!("header eventSize {size} is absurd"),
            });
        }
        let header_data = r.take(size, "Spec ID event", 32)?.to_vec();
        let spec_id = parse_spec_id(&header_data, 32)?;

        // Trailing zero bytes end the log: find where they start once, so that the loop stays
        // linear (a rescan of the rest before every event was quadratic on many zero events).
        let content_end = buf.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let mut events = Vec::new();
        while r.pos < content_end {
            let at = r.pos;
            let pcr = r.u32("pcrIndex", at)?;
            if pcr == 0xFFFF_FFFF {
                r.pos = at;
                break;
            }
            let ty = r.u32("eventType", at)?;
            let count = r.u32("digest count", at)? as usize;
            if count > spec_id.algorithms.len() {
                return Err(EventLogError::Malformed {
                    offset: at,
                    reason: format!(
                        "{count} digests, but the header lists {} banks",
                        spec_id.algorithms.len()
                    ),
                });
            }
            let mut digests = Vec::with_capacity(count);
            for _ in 0..count {
                let alg_id = r.u16("digest algorithm", at)?;
                let size = spec_id
                    .algorithms
                    .iter()
                    .find(|a| a.alg_id == alg_id)
                    .map(|a| a.digest_size as usize)
                    .ok_or_else(|| EventLogError::Malformed {
                        offset: at,
                        reason: format!("digest algorithm {alg_id:#06x} is not in the header"),
                    })?;
                if digests.iter().any(|d: &EventDigest| d.alg_id == alg_id) {
                    return Err(EventLogError::Malformed {
                        offset: at,
                        reason: format!("two digests of algorithm {alg_id:#06x}"),
                    });
                }
                let bytes = r.take(size, "digest", at)?.to_vec();
                digests.push(EventDigest { alg_id, bytes });
            }
            let size = r.u32("eventSize", at)? as usize;
            if size > MAX_EVENT_SIZE {
                return Err(EventLogError::Malformed {
                    offset: at,
                    reason: format!("eventSize {size} is absurd"),
                });
            }
            let data = r.take(size, "event data", at)?.to_vec();
            events.push(Event {
                offset: at,
                pcr,
                event_type: EventType::from_u32(ty),
                digests,
                data,
            });
        }
        let end = r.pos;
        Ok((
            EventLog {
                spec_id,
                header_data,
                events,
            },
            end,
        ))
    }

    /// The banks of the log that bootchain can compute.
    pub fn banks(&self) -> Vec<HashAlg> {
        self.spec_id
            .algorithms
            .iter()
            .filter_map(|a| HashAlg::from_tpm_alg_id(a.alg_id))
            .collect()
    }

    /// Serialize back to the binary form (header as parsed, then every event).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&[0u8; 20]);
        v.extend_from_slice(&(self.header_data.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.header_data);
        for e in &self.events {
            v.extend_from_slice(&e.pcr.to_le_bytes());
            v.extend_from_slice(&e.event_type.to_u32().to_le_bytes());
            v.extend_from_slice(&(e.digests.len() as u32).to_le_bytes());
            for d in &e.digests {
                v.extend_from_slice(&d.alg_id.to_le_bytes());
                v.extend_from_slice(&d.bytes);
            }
            v.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            v.extend_from_slice(&e.data);
        }
        v
    }

    /// Replay: the value of every PCR that has events, per bank we can compute.
    ///
    /// EV_NO_ACTION events are skipped, except that a `StartupLocality` NO_ACTION event in
    /// PCR 0 sets that PCR's initial value to the locality (PFP §10.4.5.3).
    pub fn replay(&self) -> PcrValues {
        let mut out = PcrValues::new();
        let locality = self.startup_locality();
        for alg in self.banks() {
            for e in &self.events {
                if e.event_type == EventType::NoAction {
                    continue;
                }
                let Some(d) = e.digest(alg) else { continue };
                let cur = out
                    .entry((alg, e.pcr))
                    .or_insert_with(|| initial_pcr(alg, e.pcr, locality));
                *cur = extend(cur, &d);
            }
        }
        out
    }

    /// The locality from a StartupLocality event, if any.
    pub fn startup_locality(&self) -> Option<u8> {
        self.events.iter().find_map(|e| {
            (e.event_type == EventType::NoAction
                && e.pcr == 0
                && e.data.len() == 17
                && e.data.starts_with(b"StartupLocality\0"))
            .then(|| e.data[16])
        })
    }
}

/// The reset value of a PCR (zeros; PCR 0 gets the startup locality in its last byte).
pub fn initial_pcr(alg: HashAlg, pcr: u32, locality: Option<u8>) -> Digest {
    let mut v = vec![0u8; alg.output_len()];
    if pcr == 0 {
        if let (Some(l), Some(last)) = (locality, v.last_mut()) {
            *last = l;
        }
    }
    Digest::new(alg, v).unwrap_or_else(|_| Digest::zero(alg))
}

fn parse_spec_id(d: &[u8], base: usize) -> Result<SpecIdEvent, EventLogError> {
    let mut r = Reader { buf: d, pos: 0 };
    let sig = r.take(16, "Spec ID signature", base)?;
    if sig != SPEC_ID_SIGNATURE {
        return Err(EventLogError::NotCryptoAgile {
            offset: base,
            reason: "no \"Spec ID Event03\" signature (SHA-1-only logs are not supported)".into(),
        });
    }
    let platform_class = r.u32("platformClass", base)?;
    let spec_version_minor = r.u8("specVersionMinor", base)?;
    let spec_version_major = r.u8("specVersionMajor", base)?;
    let spec_errata = r.u8("specErrata", base)?;
    let uintn_size = r.u8("uintnSize", base)?;
    let n = r.u32("numberOfAlgorithms", base)? as usize;
    if n == 0 || n > 16 {
        return Err(EventLogError::Malformed {
            offset: base,
            reason: format!("numberOfAlgorithms {n} is absurd"),
        });
    }
    let mut algorithms = Vec::with_capacity(n);
    for _ in 0..n {
        let alg_id = r.u16("algorithmId", base)?;
        let digest_size = r.u16("digestSize", base)?;
        if digest_size == 0 || digest_size > 64 {
            return Err(EventLogError::Malformed {
                offset: base,
                reason: format!("digest size {digest_size} for algorithm {alg_id:#06x} is absurd"),
            });
        }
        // Each bank once (PFP §10.4.5.1 lists the active banks): repeats would multiply the
        // per-event work (data checks hash the data once per digest).
        if algorithms
            .iter()
            .any(|a: &AlgorithmSize| a.alg_id == alg_id)
        {
            return Err(EventLogError::Malformed {
                offset: base,
                reason: format!("algorithm {alg_id:#06x} is listed twice"),
            });
        }
        if let Some(known) = HashAlg::from_tpm_alg_id(alg_id) {
            if known.output_len() != usize::from(digest_size) {
                return Err(EventLogError::Malformed {
                    offset: base,
                    reason: format!(
                        "header says {known} digests are {digest_size} bytes, not {}",
                        known.output_len()
                    ),
                });
            }
        }
        algorithms.push(AlgorithmSize {
            alg_id,
            digest_size,
        });
    }
    let vlen = r.u8("vendorInfoSize", base)? as usize;
    let vendor_info = r.take(vlen, "vendorInfo", base)?.to_vec();
    Ok(SpecIdEvent {
        platform_class,
        spec_version_minor,
        spec_version_major,
        spec_errata,
        uintn_size,
        algorithms,
        vendor_info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(algs: &[(u16, u16)]) -> Vec<u8> {
        let mut d = SPEC_ID_SIGNATURE.to_vec();
        d.extend_from_slice(&0u32.to_le_bytes());
        d.extend_from_slice(&[0, 2, 0, 2]);
        d.extend_from_slice(&(algs.len() as u32).to_le_bytes());
        for (a, s) in algs {
            d.extend_from_slice(&a.to_le_bytes());
            d.extend_from_slice(&s.to_le_bytes());
        }
        d.push(0);
        let mut v = vec![0u8; 4];
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&[0u8; 20]);
        v.extend_from_slice(&(d.len() as u32).to_le_bytes());
        v.extend_from_slice(&d);
        v
    }

    #[test]
    fn round_trip_and_replay() {
        let mut log = header(&[(0x000B, 32)]);
        let sep = HashAlg::Sha256.digest(&[0, 0, 0, 0]);
        log.extend_from_slice(&7u32.to_le_bytes());
        log.extend_from_slice(&4u32.to_le_bytes());
        log.extend_from_slice(&1u32.to_le_bytes());
        log.extend_from_slice(&0x000Bu16.to_le_bytes());
        log.extend_from_slice(sep.as_bytes());
        log.extend_from_slice(&4u32.to_le_bytes());
        log.extend_from_slice(&[0, 0, 0, 0]);
        let l = EventLog::parse(&log).unwrap();
        assert_eq!(l.to_bytes(), log);
        let pcrs = l.replay();
        let want = extend(&Digest::zero(HashAlg::Sha256), &sep);
        assert_eq!(pcrs[&(HashAlg::Sha256, 7)], want);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let mut log = header(&[(0x0004, 20), (0x000B, 32)]);
        log.extend_from_slice(&4u32.to_le_bytes());
        log.extend_from_slice(&4u32.to_le_bytes());
        log.extend_from_slice(&2u32.to_le_bytes());
        log.extend_from_slice(&0x0004u16.to_le_bytes());
        log.extend_from_slice(&[1u8; 20]);
        log.extend_from_slice(&0x000Bu16.to_le_bytes());
        log.extend_from_slice(&[2u8; 32]);
        log.extend_from_slice(&4u32.to_le_bytes());
        log.extend_from_slice(&[9, 9, 9, 9]);
        assert!(EventLog::parse(&log).is_ok());
        for n in 0..log.len() {
            match EventLog::parse(&log[..n]) {
                Err(_) => {}
                // A cut exactly between records is a shorter valid log.
                Ok(l) => assert!(l.events.is_empty() && n >= 32),
            }
        }
    }

    #[test]
    fn absurd_headers_are_errors() {
        assert!(EventLog::parse(&header(&[])).is_err());
        assert!(EventLog::parse(&header(&[(0x000B, 20)])).is_err());
        assert!(EventLog::parse(&header(&[(0x000B, 9999)])).is_err());
        let mut big = header(&[(0x000B, 32)]);
        big.extend_from_slice(&0u32.to_le_bytes());
        big.extend_from_slice(&4u32.to_le_bytes());
        big.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            EventLog::parse(&big),
            Err(EventLogError::Malformed { .. })
        ));
    }

    fn sha256_event(log: &mut Vec<u8>, digests: usize) {
        log.extend_from_slice(&7u32.to_le_bytes());
        log.extend_from_slice(&4u32.to_le_bytes());
        log.extend_from_slice(&(digests as u32).to_le_bytes());
        for _ in 0..digests {
            log.extend_from_slice(&0x000Bu16.to_le_bytes());
            log.extend_from_slice(&[7u8; 32]);
        }
        log.extend_from_slice(&0u32.to_le_bytes());
    }

    #[test]
    fn banks_are_listed_and_digested_once() {
        let twice = header(&[(0x000B, 32), (0x000B, 32)]);
        assert!(
            matches!(EventLog::parse(&twice), Err(EventLogError::Malformed { ref reason, .. }) if reason.contains("listed twice"))
        );
        let mut log = header(&[(0x0004, 20), (0x000B, 32)]);
        let mut good = log.clone();
        sha256_event(&mut good, 1);
        assert_eq!(EventLog::parse(&good).map(|l| l.events.len()), Ok(1));
        sha256_event(&mut log, 2);
        assert!(
            matches!(EventLog::parse(&log), Err(EventLogError::Malformed { ref reason, .. }) if reason.contains("two digests"))
        );
    }

    #[test]
    fn zero_events_then_padding() {
        // Zero-length events (16 zero bytes each) count as events while something follows
        // them; trailing zeros end the log.
        let mut log = header(&[(0x000B, 32)]);
        log.extend_from_slice(&[0u8; 16 * 1000]);
        let mut with_tail = log.clone();
        sha256_event(&mut with_tail, 1);
        let parsed = EventLog::parse(&with_tail).unwrap();
        assert_eq!(parsed.events.len(), 1001);
        assert_eq!(parsed.events[1000].pcr, 7);
        assert!(EventLog::parse(&log).unwrap().events.is_empty());
    }
}

/// Whether an event's data hashes to its digests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataCheck {
    /// The spec says the digest is of the data, and it is.
    Match,
    /// The spec says the digest is of the data, and it is not: the log lies.
    Mismatch,
    /// The digest is of something else (an image, a table in memory): not checkable here.
    NotApplicable,
}

/// Check an event's data against its digests where the spec defines the digest as a hash of
/// the data (PFP §10.4.1): separators, EV_EFI_ACTION/EV_ACTION strings, Secure Boot
/// variables, GPT, S-CRTM version, EV_IPL strings outside the systemd PCRs, and
/// EV_EFI_VARIABLE_BOOT (whose digest covers only VariableData).
pub fn check_data(e: &Event) -> DataCheck {
    let payload: Vec<Vec<u8>> = match e.event_type {
        EventType::Separator
        | EventType::EfiAction
        | EventType::Action
        | EventType::EfiVariableDriverConfig
        | EventType::EfiVariableAuthority
        | EventType::EfiVariableBoot2
        | EventType::EfiGptEvent
        | EventType::SCrtmVersion => vec![e.data.clone()],
        EventType::EfiVariableBoot => match crate::firmware::VariableData::parse(&e.data) {
            Ok(v) => vec![v.data],
            Err(_) => return DataCheck::Mismatch,
        },
        // systemd-stub's EV_IPL events carry a description; the digest is of the section.
        EventType::Ipl if (11..=13).contains(&e.pcr) => return DataCheck::NotApplicable,
        EventType::Ipl => {
            let mut v = vec![e.data.clone()];
            if let Some(stripped) = e.data.strip_suffix(&[0]) {
                v.push(stripped.to_vec());
            }
            v
        }
        _ => return DataCheck::NotApplicable,
    };
    let mut any = false;
    for d in &e.digests {
        let Some(alg) = HashAlg::from_tpm_alg_id(d.alg_id) else {
            continue;
        };
        any = true;
        if !payload
            .iter()
            .any(|p| alg.digest(p).as_bytes() == d.bytes.as_slice())
        {
            return DataCheck::Mismatch;
        }
    }
    if any {
        DataCheck::Match
    } else {
        DataCheck::NotApplicable
    }
}

fn utf16z(b: &[u8]) -> Option<String> {
    if b.len() < 2 || b.len() % 2 != 0 {
        return None;
    }
    let u: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let u = u.strip_suffix(&[0]).unwrap_or(&u);
    let s = String::from_utf16(u).ok()?;
    s.chars().all(|c| !c.is_control()).then_some(s)
}

fn printable(b: &[u8]) -> Option<String> {
    let b = b.strip_suffix(&[0]).unwrap_or(b);
    let s = std::str::from_utf8(b).ok()?;
    (!s.is_empty() && s.chars().all(|c| !c.is_control() || c == '\n')).then(|| s.to_string())
}

/// A short human description of an event's data.
pub fn describe(e: &Event) -> String {
    use crate::firmware::VariableData;
    match e.event_type {
        EventType::Separator => format!("separator {}", hex::encode(&e.data)),
        EventType::EfiVariableDriverConfig
        | EventType::EfiVariableBoot
        | EventType::EfiVariableBoot2
        | EventType::EfiVariableAuthority => match VariableData::parse(&e.data) {
            Ok(v) => format!("{}-{} ({} bytes)", v.guid, v.name, v.data.len()),
            Err(err) => format!("malformed variable: {err}"),
        },
        EventType::EfiBootServicesApplication
        | EventType::EfiBootServicesDriver
        | EventType::EfiRuntimeServicesDriver => {
            if e.data.len() >= 32 {
                let u =
                    |o: usize| u64::from_le_bytes(e.data[o..o + 8].try_into().unwrap_or_default());
                format!(
                    "image at {:#x}, {} bytes, device path {} bytes",
                    u(0),
                    u(8),
                    u(24)
                )
            } else {
                "malformed UEFI_IMAGE_LOAD_EVENT".into()
            }
        }
        EventType::EventTag if e.data.len() >= 8 => {
            let id = u32::from_le_bytes([e.data[0], e.data[1], e.data[2], e.data[3]]);
            let body = &e.data[8..];
            let text = printable(body)
                .or_else(|| utf16z(body))
                .unwrap_or_else(|| format!("{} bytes", body.len()));
            format!("tag {id:#010x}: {text}")
        }
        EventType::NoAction if e.data.starts_with(b"StartupLocality\0") => {
            format!("StartupLocality {}", e.data.get(16).copied().unwrap_or(0))
        }
        _ => printable(&e.data)
            .or_else(|| utf16z(&e.data))
            .unwrap_or_else(|| format!("{} bytes", e.data.len())),
    }
}

/// An event as `eventlog show --json` prints it.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct EventView {
    /// Byte offset.
    pub offset: usize,
    /// PCR.
    pub pcr: u32,
    /// Type name.
    pub event_type: EventType,
    /// Digest per bank name (unknown algorithms as 0xNNNN).
    pub digests: BTreeMap<String, String>,
    /// Description.
    pub description: String,
    /// Data check verdict.
    pub data_check: DataCheck,
    /// The raw data, hex.
    pub data: String,
}

impl EventView {
    /// View of an event.
    pub fn of(e: &Event) -> Self {
        EventView {
            offset: e.offset,
            pcr: e.pcr,
            event_type: e.event_type,
            digests: e
                .digests
                .iter()
                .map(|d| {
                    let k = HashAlg::from_tpm_alg_id(d.alg_id)
                        .map(|a| a.name().to_string())
                        .unwrap_or_else(|| format!("{:#06x}", d.alg_id));
                    (k, hex::encode(&d.bytes))
                })
                .collect(),
            description: describe(e),
            data_check: check_data(e),
            data: hex::encode(&e.data),
        }
    }
}

/// A PCR whose replayed value differs from the reported one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PcrMismatch {
    /// Bank.
    pub bank: HashAlg,
    /// PCR.
    pub pcr: u32,
    /// What the log replays to.
    pub replayed: Digest,
    /// What the TPM (or file) says.
    pub actual: Digest,
}

/// Compare the replay of `log` with `actual` for every PCR the log has events for (in banks
/// present in both). PCRs the log does not touch are not compared.
pub fn verify_replay(log: &EventLog, actual: &PcrValues) -> Vec<PcrMismatch> {
    log.replay()
        .into_iter()
        .filter_map(|((bank, pcr), replayed)| {
            let a = actual.get(&(bank, pcr))?;
            (a != &replayed).then(|| PcrMismatch {
                bank,
                pcr,
                replayed,
                actual: a.clone(),
            })
        })
        .collect()
}
