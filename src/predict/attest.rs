//! Remote attestation, the verifier's side (as keylime's verifier and go-attestation do): a
//! TPM quote checked against the attestation key, the verifier's nonce, the machine's event
//! log and a reference for the boot.
//!
//! [`verify_quote`] checks, in order, each failure a typed [`AttestError`]:
//!
//! 1. the signature over the TPMS_ATTEST bytes with the AK ([`crate::quote::AkPublic::verify`]);
//! 2. magic TPM_GENERATED_VALUE and type TPM_ST_ATTEST_QUOTE;
//! 3. extraData equals the nonce;
//! 4. pcrDigest equals the hash of the event log's replayed values of the quoted PCRs (so the
//!    log is the one the TPM measured: its values are now attested);
//! 5. with a [`Reference`], the replayed values equal the reference's (for the quoted PCRs; the
//!    reference's others are listed as not attested, and a reference with none is an error). On a mismatch the error
//!    names the PCR and the first log event that differs from the reference's events and what
//!    was expected there ([`FirstDifference`]), when the reference has events (a prediction,
//!    `pcr predict --json`, a known-good log); without them, what a prefix replay can tell.
//!
//! Pure computation: no TPM, no libtss2.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

use crate::eventlog::{describe, extend, initial_pcr, EventLog, EventType};
use crate::hash::{Digest, HashAlg};
use crate::pcr::{PcrValues, PcrValuesError};
use crate::quote::{
    AkPublic, Attest, PcrSelection, QuoteError, SigScheme, Signature, TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
};

/// An event the reference expects.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExpectedEvent {
    /// The event type.
    pub event_type: EventType,
    /// What is measured.
    pub description: String,
    /// Digest per bank.
    pub digests: BTreeMap<HashAlg, Digest>,
}

/// What a boot should replay to: PCR values, and where known the events of each PCR (in
/// order), which locate a difference.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reference {
    /// Expected values.
    pub values: PcrValues,
    /// Expected events per PCR (empty for a values-only reference).
    pub events: BTreeMap<u32, Vec<ExpectedEvent>>,
}

#[derive(Deserialize)]
struct JsonEvent {
    pcr: u32,
    event_type: String,
    #[serde(default)]
    description: String,
    digests: BTreeMap<String, String>,
}

impl Reference {
    /// A reference from JSON: `{"sha256": {"7": "hex", ...}}` (`eventlog replay --json`) or a
    /// document with that under `"values"` (`pcr predict --json`). Events are taken where the
    /// document has them: `pcr predict --json`'s `events` (PCR 11), `firmware[].events`,
    /// `pcr12.events`, `pcr13.events` — each `{"pcr", "event_type", "description",
    /// "digests": {"bank": "hex"}}`.
    pub fn from_json(text: &str) -> Result<Self, AttestError> {
        let values =
            crate::pcr::parse_pcr_values_json(text).map_err(AttestError::ReferenceValues)?;
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(AttestError::ReferenceJson)?;
        let mut lists = Vec::new();
        if let Some(e) = doc.get("events") {
            lists.push(e);
        }
        if let Some(serde_json::Value::Array(fw)) = doc.get("firmware") {
            lists.extend(fw.iter().filter_map(|p| p.get("events")));
        }
        for k in ["pcr12", "pcr13"] {
            if let Some(e) = doc.get(k).and_then(|p| p.get("events")) {
                lists.push(e);
            }
        }
        let mut events: BTreeMap<u32, Vec<ExpectedEvent>> = BTreeMap::new();
        let mut index = 0;
        for list in lists {
            let parsed: Vec<JsonEvent> =
                serde_json::from_value(list.clone()).map_err(AttestError::ReferenceJson)?;
            for e in parsed {
                let bad = |reason: String| AttestError::ReferenceEvent {
                    index,
                    pcr: e.pcr,
                    reason,
                };
                let event_type = EventType::from_name(&e.event_type)
                    .ok_or_else(|| bad(format!("unknown event type {:?}", e.event_type)))?;
                let mut digests = BTreeMap::new();
                for (bank, hex) in &e.digests {
                    // Banks bootchain does not compute (shown as 0xNNNN) are skipped.
                    let Ok(alg) = bank.parse::<HashAlg>() else {
                        continue;
                    };
                    let d = Digest::from_hex(alg, hex)
                        .map_err(|err| bad(format!("{bank} digest: {err}")))?;
                    digests.insert(alg, d);
                }
                if event_type != EventType::NoAction {
                    events.entry(e.pcr).or_default().push(ExpectedEvent {
                        event_type,
                        description: e.description,
                        digests,
                    });
                }
                index += 1;
            }
        }
        Ok(Reference { values, events })
    }

    /// The reference a boot prediction gives ([`crate::firmware::predict_boot`]): its
    /// [`values`](crate::firmware::BootPrediction::values) and the events of every predicted
    /// PCR (PCR 11's when one phase was predicted).
    pub fn from_prediction(p: &crate::firmware::BootPrediction) -> Self {
        let mut events: BTreeMap<u32, Vec<ExpectedEvent>> = BTreeMap::new();
        let mut add = |pcr: u32, list: &[crate::measure::PredictedEvent]| {
            events
                .entry(pcr)
                .or_default()
                .extend(list.iter().map(|e| ExpectedEvent {
                    event_type: e.event_type,
                    description: e.description.clone(),
                    digests: e.digests.clone(),
                }));
        };
        for pp in p.stub_pcrs() {
            add(pp.pcr.get(), &pp.events);
        }
        if p.pcr11.phases.len() == 1 {
            add(crate::measure::PCR_KERNEL_BOOT, &p.pcr11.events);
        }
        Reference {
            values: p.values(),
            events,
        }
    }

    /// A known-good boot's log as the reference: its replay and its events.
    pub fn from_log(log: &EventLog) -> Self {
        let mut events: BTreeMap<u32, Vec<ExpectedEvent>> = BTreeMap::new();
        for e in log
            .events
            .iter()
            .filter(|e| e.event_type != EventType::NoAction)
        {
            events.entry(e.pcr).or_default().push(ExpectedEvent {
                event_type: e.event_type,
                description: describe(e),
                digests: e
                    .digests
                    .iter()
                    .filter_map(|d| d.digest().map(|x| (x.alg(), x)))
                    .collect(),
            });
        }
        Reference {
            values: log.replay(),
            events,
        }
    }
}

/// A log event, located.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoggedEvent {
    /// Index in the log (0 = the first event after the Spec ID header).
    pub index: usize,
    /// Position among the events extended into its PCR (0-based).
    pub position: usize,
    /// Byte offset in the log.
    pub offset: usize,
    /// Type.
    pub event_type: EventType,
    /// Description ([`crate::eventlog::describe`]).
    pub description: String,
    /// Its digest in the compared bank.
    pub digest: Digest,
}

impl fmt::Display for LoggedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "log event #{} (the PCR's event {}, offset {:#x}) {} \"{}\" {}:{}",
            self.index,
            self.position,
            self.offset,
            self.event_type,
            self.description,
            self.digest.alg(),
            self.digest
        )
    }
}

/// Where a PCR's log first departs from the reference.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FirstDifference {
    /// This event differs from the one the reference expects in its place.
    Changed {
        /// The log's event.
        logged: LoggedEvent,
        /// The reference's.
        expected: ExpectedEvent,
    },
    /// The log has this event (and maybe more) after everything the reference expects.
    Extra {
        /// The first extra event.
        logged: LoggedEvent,
    },
    /// The log ends where the reference expects more.
    Missing {
        /// Position of the first missing event among the PCR's events.
        position: usize,
        /// The first missing event.
        expected: ExpectedEvent,
    },
    /// The events agree, the values do not (a different initial value: locality).
    EventsAgree,
    /// The reference has no events for this PCR and no prefix of the log replays to its value.
    Unknown {
        /// The log's events for this PCR.
        events: usize,
    },
}

/// A PCR whose attested value is not the reference's.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PcrMismatch {
    /// Bank.
    pub bank: HashAlg,
    /// PCR.
    pub pcr: u32,
    /// What the log replays to (and the quote attests).
    pub quoted: Digest,
    /// What the reference says.
    pub expected: Digest,
    /// The first differing event.
    pub first: FirstDifference,
}

/// What a PCR measures: what to look at, re-predict or re-sign when it changes.
fn pcr_hint(pcr: u32) -> &'static str {
    match pcr {
        0 => "firmware code",
        1 => "firmware configuration",
        2 | 3 => "option ROMs",
        4 => "boot loaders and UKIs loaded: re-predict for the new image",
        5 => "GPT and boot variables",
        7 => "Secure Boot state and the db certificates that verified images: update the reference or re-sign the image with an enrolled key",
        9 => "kernel command line and initrd",
        11 => "UKI sections: re-sign the .pcrsig for the new UKI",
        12 => "addons, credentials, confexts",
        13 => "system extensions",
        _ => "",
    }
}

impl fmt::Display for PcrMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bank;
        write!(
            f,
            "PCR {} ({b}) is {} in the quote, {} in the reference",
            self.pcr, self.quoted, self.expected
        )?;
        let h = pcr_hint(self.pcr);
        if !h.is_empty() {
            write!(f, " [{h}]")?;
        }
        let exp = |e: &ExpectedEvent| {
            let d = e
                .digests
                .get(&b)
                .map_or_else(|| format!("no {b} digest"), |d| format!("{b}:{d}"));
            format!("{} \"{}\" {d}", e.event_type, e.description)
        };
        match &self.first {
            FirstDifference::Changed { logged, expected } => write!(
                f,
                "; first differing event: {logged}; the reference expects {}",
                exp(expected)
            ),
            FirstDifference::Extra { logged } => write!(
                f,
                "; the log has events the reference does not, from {logged}"
            ),
            FirstDifference::Missing { position, expected } => write!(
                f,
                "; the log ends after the PCR's event {}; the reference expects next {}",
                position.saturating_sub(1),
                exp(expected)
            ),
            FirstDifference::EventsAgree => {
                f.write_str("; every event agrees: the initial value differs (startup locality)")
            }
            FirstDifference::Unknown { events } => write!(
                f,
                "; the reference has no events for this PCR and no prefix of the log's {events} events replays to it: give a reference with events (pcr predict --json, --uki, a known-good log) to find the event"
            ),
        }
    }
}

/// The mismatches, one per line after the first.
#[derive(Debug)]
pub struct Mismatches(pub Vec<PcrMismatch>);

impl fmt::Display for Mismatches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n  ")?;
            }
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

/// Why a quote is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// (1) The signature is not the AK's over these bytes.
    #[error("the quote's signature does not verify")]
    Signature(#[source] QuoteError),
    /// The signed bytes are not a TPMS_ATTEST.
    #[error("the quote is not a well-formed TPMS_ATTEST")]
    Quote(#[source] QuoteError),
    /// (2) Not produced by a TPM.
    #[error("the quote was not generated by a TPM: magic {found:#010x}, not TPM_GENERATED_VALUE {TPM_GENERATED_VALUE:#010x}")]
    Magic {
        /// The magic found.
        found: u32,
    },
    /// (2) An attestation of another kind (a certify, a time attestation, ...).
    #[error("not a quote: type {found:#06x}, not TPM_ST_ATTEST_QUOTE {TPM_ST_ATTEST_QUOTE:#06x}")]
    NotAQuote {
        /// The type found.
        found: u16,
    },
    /// (3) Not this verifier's nonce: a replayed or foreign quote.
    #[error(
        "the quote's extraData {found} is not the nonce {expected}: a replayed or foreign quote"
    )]
    Nonce {
        /// The nonce, hex.
        expected: String,
        /// extraData, hex.
        found: String,
    },
    /// (4) The quote covers a bank the log does not have.
    #[error("the quote covers the {bank} bank, which the event log does not have")]
    LogLacksBank {
        /// The bank.
        bank: HashAlg,
    },
    /// (4) The log is not what the TPM measured.
    #[error("the event log does not match the quote: the quoted {alg} PCR digest over {selection} is {quoted}, the log replays to {replayed}")]
    PcrDigest {
        /// The selection, as tpm2-tools spells it.
        selection: String,
        /// The digest algorithm (the signing scheme's hash).
        alg: HashAlg,
        /// pcrDigest, hex.
        quoted: String,
        /// The digest of the replayed values.
        replayed: Digest,
    },
    /// (5) The reference has nothing to compare with the quoted PCRs.
    #[error("the reference has no values for the quoted PCRs ({banks})")]
    EmptyReference {
        /// The quoted banks.
        banks: String,
    },
    /// (5) The log (and so the quote) is not the reference's boot.
    #[error("the event log matches the quote but not the reference:\n  {0}")]
    Reference(Mismatches),
    /// A reference document that is not JSON of the expected shape.
    #[error("reference JSON")]
    ReferenceJson(#[source] serde_json::Error),
    /// A reference whose values do not parse.
    #[error("reference values")]
    ReferenceValues(#[source] PcrValuesError),
    /// A reference event that does not parse.
    #[error("reference event {index} (PCR {pcr}): {reason}")]
    ReferenceEvent {
        /// Its index among the document's events.
        index: usize,
        /// Its PCR.
        pcr: u32,
        /// Why.
        reason: String,
    },
}

/// What a verified quote attests.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct VerifiedQuote {
    /// The quote.
    pub attest: Attest,
    /// Its signature scheme.
    pub scheme: SigScheme,
    /// The selections quoted.
    pub selections: Vec<PcrSelection>,
    /// The quoted PCRs' values (the log's replay, which the quote's digest confirms).
    pub values: PcrValues,
    /// The PCRs compared with the reference (empty without one).
    pub reference_checked: Vec<(HashAlg, u32)>,
    /// PCRs of the reference in the quoted banks that the quote does not cover: not attested,
    /// so not checked (quote them to check them).
    pub reference_not_quoted: Vec<(HashAlg, u32)>,
}

/// What step 5 compared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReferenceCheck {
    /// The PCRs compared (all equal).
    pub checked: Vec<(HashAlg, u32)>,
    /// The reference's PCRs in the compared banks without a value to compare.
    pub not_covered: Vec<(HashAlg, u32)>,
}

/// The value of a PCR nothing was extended into: zeros, PCR 0 with the startup locality,
/// PCRs 17-22 (dynamic root of trust) all ones.
fn reset_value(alg: HashAlg, pcr: u32, locality: Option<u8>) -> Digest {
    if (17..=22).contains(&pcr) {
        return Digest::new(alg, vec![0xFF; alg.output_len()])
            .unwrap_or_else(|_| Digest::zero(alg));
    }
    initial_pcr(alg, pcr, locality)
}

/// Replay `log` into the PCRs of `bank` listed in `pcrs` (every PCR gets a value: its reset
/// value when the log extends nothing into it). As [`EventLog::replay`], one bank.
fn replay_bank(log: &EventLog, bank: HashAlg, pcrs: &BTreeSet<u32>) -> BTreeMap<u32, Digest> {
    let locality = log.startup_locality();
    let mut out: BTreeMap<u32, Digest> = pcrs
        .iter()
        .map(|p| (*p, reset_value(bank, *p, locality)))
        .collect();
    for e in &log.events {
        if e.event_type == EventType::NoAction {
            continue;
        }
        let Some(cur) = out.get_mut(&e.pcr) else {
            continue;
        };
        if let Some(d) = e.digest(bank) {
            *cur = extend(cur, &d);
        }
    }
    out
}

/// Verify a quote (the TPMS_ATTEST bytes `tpm2_quote -m` writes and its signature) made with
/// `ak` over `nonce`, against the machine's event log and, if given, a reference. See the
/// module documentation for the checks.
pub fn verify_quote(
    quote: &[u8],
    signature: &Signature,
    ak: &AkPublic,
    nonce: &[u8],
    log: &EventLog,
    reference: Option<&Reference>,
) -> Result<VerifiedQuote, AttestError> {
    // (1) Before anything in the bytes is believed.
    ak.verify(quote, signature)
        .map_err(AttestError::Signature)?;
    let attest = Attest::parse(quote).map_err(AttestError::Quote)?;
    // (2)
    if attest.magic != TPM_GENERATED_VALUE {
        return Err(AttestError::Magic {
            found: attest.magic,
        });
    }
    let Some(info) = attest.quote.clone() else {
        return Err(AttestError::NotAQuote {
            found: attest.attest_type,
        });
    };
    // (3)
    if attest.extra_data != nonce {
        return Err(AttestError::Nonce {
            expected: hex::encode(nonce),
            found: hex::encode(&attest.extra_data),
        });
    }
    // (4)
    let scheme = signature.scheme();
    let alg = scheme.hash();
    let banks = log.banks();
    let mut values = PcrValues::new();
    let mut h = alg.hasher();
    for s in &info.selections {
        if !banks.contains(&s.bank) {
            return Err(AttestError::LogLacksBank { bank: s.bank });
        }
        let pcrs: BTreeSet<u32> = s.pcrs.iter().map(|p| p.get()).collect();
        let replayed = replay_bank(log, s.bank, &pcrs);
        for p in &s.pcrs {
            if let Some(v) = replayed.get(&p.get()) {
                h.update(v.as_bytes());
                values.insert((s.bank, p.get()), v.clone());
            }
        }
    }
    let replayed = h.finalize();
    let selection = selection_text(&info.selections);
    if replayed.as_bytes() != info.pcr_digest.as_slice() {
        return Err(AttestError::PcrDigest {
            selection,
            alg,
            quoted: hex::encode(&info.pcr_digest),
            replayed,
        });
    }
    // (5)
    let check = match reference {
        Some(r) => compare(log, &values, r)?,
        None => ReferenceCheck::default(),
    };
    Ok(VerifiedQuote {
        attest,
        scheme,
        selections: info.selections,
        values,
        reference_checked: check.checked,
        reference_not_quoted: check.not_covered,
    })
}

fn selection_text(s: &[PcrSelection]) -> String {
    s.iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("+")
}

/// Check a log against a reference alone (no quote): replay every PCR the reference names in
/// the banks both have, and compare as [`verify_quote`]'s step 5 does. Returns the PCRs
/// compared. What a verifier does per log once the quote's signature is checked; the
/// throughput benchmark's unit.
pub fn verify_log(log: &EventLog, reference: &Reference) -> Result<ReferenceCheck, AttestError> {
    let mut values = PcrValues::new();
    let mut wanted: BTreeMap<HashAlg, BTreeSet<u32>> = BTreeMap::new();
    for (bank, pcr) in reference.values.keys() {
        wanted.entry(*bank).or_default().insert(*pcr);
    }
    let banks = log.banks();
    for (bank, pcrs) in wanted.iter().filter(|(b, _)| banks.contains(b)) {
        for (p, v) in replay_bank(log, *bank, pcrs) {
            values.insert((*bank, p), v);
        }
    }
    compare(log, &values, reference)
}

/// Step 5: the reference's values in the banks of `values` against `values`.
fn compare(
    log: &EventLog,
    values: &PcrValues,
    reference: &Reference,
) -> Result<ReferenceCheck, AttestError> {
    let banks: BTreeSet<HashAlg> = values.keys().map(|(b, _)| *b).collect();
    let mut checked = Vec::new();
    let mut not_covered = Vec::new();
    let mut mismatches = Vec::new();
    for ((bank, pcr), expected) in reference.values.iter() {
        if !banks.contains(bank) {
            continue;
        }
        let Some(quoted) = values.get(&(*bank, *pcr)) else {
            not_covered.push((*bank, *pcr));
            continue;
        };
        checked.push((*bank, *pcr));
        if quoted != expected {
            mismatches.push(PcrMismatch {
                bank: *bank,
                pcr: *pcr,
                quoted: quoted.clone(),
                expected: expected.clone(),
                first: first_difference(log, *bank, *pcr, expected, reference),
            });
        }
    }
    if checked.is_empty() {
        return Err(AttestError::EmptyReference {
            banks: banks
                .iter()
                .map(|b| b.name())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if !mismatches.is_empty() {
        return Err(AttestError::Reference(Mismatches(mismatches)));
    }
    Ok(ReferenceCheck {
        checked,
        not_covered,
    })
}

/// Locate the first event of `pcr` where the log departs from the reference: event by event
/// against the reference's events when it has them, else by replaying prefixes of the log.
pub fn first_difference(
    log: &EventLog,
    bank: HashAlg,
    pcr: u32,
    expected_value: &Digest,
    reference: &Reference,
) -> FirstDifference {
    let logged: Vec<LoggedEvent> = log
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.pcr == pcr && e.event_type != EventType::NoAction)
        .filter_map(|(i, e)| Some((i, e, e.digest(bank)?)))
        .enumerate()
        .map(|(position, (index, e, digest))| LoggedEvent {
            index,
            position,
            offset: e.offset,
            event_type: e.event_type,
            description: describe(e),
            digest,
        })
        .collect();
    match reference.events.get(&pcr).filter(|v| !v.is_empty()) {
        Some(expected) => {
            for (i, x) in expected.iter().enumerate() {
                match logged.get(i) {
                    None => {
                        return FirstDifference::Missing {
                            position: i,
                            expected: x.clone(),
                        }
                    }
                    Some(l) if x.digests.get(&bank) != Some(&l.digest) => {
                        return FirstDifference::Changed {
                            logged: l.clone(),
                            expected: x.clone(),
                        }
                    }
                    Some(_) => {}
                }
            }
            match logged.get(expected.len()) {
                Some(l) => FirstDifference::Extra { logged: l.clone() },
                None => FirstDifference::EventsAgree,
            }
        }
        None => {
            let mut cur = reset_value(bank, pcr, log.startup_locality());
            for l in &logged {
                if &cur == expected_value {
                    return FirstDifference::Extra { logged: l.clone() };
                }
                cur = extend(&cur, &l.digest);
            }
            FirstDifference::Unknown {
                events: logged.len(),
            }
        }
    }
}
