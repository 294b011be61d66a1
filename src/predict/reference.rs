//! Reference values for verifiers: every register bootchain can predict for a UKI boot, in
//! one typed [`ReferenceValues`], with three serializers.
//!
//! - [`ReferenceValues::to_json`]: bootchain's own document (shape in README "Reference
//!   values"): a flat `registers` list (name, bank, hex value), each predicted PCR with its
//!   events (type, description, digests), the TDX RTMRs with theirs, the SEV-SNP launch
//!   measurement with the launch parameters it was computed for.
//! - [`ReferenceValues::rvps_message`]: a Trustee RVPS message of provenance type `sample`
//!   (confidential-containers/trustee `rvps/README.md`, "Quick guide": `{"version": "0.1.0",
//!   "type": "sample", "payload": base64(JSON)}`; the payload format is
//!   `rvps/src/extractors/extractor_modules/sample/README.md`: `{"<name>": ["<reference
//!   value>", …]}`), with the reference-value names Trustee's policies query:
//!   `tpm_pcr<N>` (sha256 bank, hex; `attestation-service/src/ear_token/
//!   ear_default_policy_cpu.rego` reads `tpm_pcr11`; the TPM verifier
//!   `deps/verifier/src/tpm/mod.rs` exposes every sha256 PCR as claim `pcrNN` for policies
//!   that query `tpm_pcr4`, `tpm_pcr14`, … as `kbs/test/data` policies do), `rtmr_1`,
//!   `rtmr_2` (the TDX policy section: `input.tdx.quote.body.rtmr_1 in
//!   query_reference_value("rtmr_1")`) and `snp_launch_measurement` (the SNP section:
//!   `input.snp.evidence.measurement in query_reference_value("snp_launch_measurement")`).
//!   PCR 11 lists one value per predicted boot phase: a quote taken in any of them passes.
//! - [`ReferenceValues::cel_json`]: the predicted PCR events as TCG Canonical Event Log
//!   records in the JSON shape `systemd-pcrlock cel` prints (systemd `src/pcrlock/pcrlock.c`,
//!   `verb_show_cel`): `{"pcr", "recnum", "digests": [{"hashAlg", "digest"}], "content_type":
//!   "pcclient_std", "content": {"event_type": "EV_…", "event_data": "hex"}}`. Firmware and
//!   stub events are `pcclient_std`; the boot-phase words systemd-pcrextend measures into
//!   PCR 11 from userspace are `systemd` records (content `{"string", "eventType":
//!   "phase"}`, without the boot-specific `bootId` and `timestamp` of
//!   `/run/log/systemd/tpm2-measure.log`). [`cel_records_from_log`] writes the same shape
//!   for a TCG event log, which `tests/reference_values.rs` compares with `systemd-pcrlock
//!   cel` (systemd 257) on real boots.
//!
//! Not predicted: PCRs 0–3, 5, 6 and 8 (firmware build and configuration), MRTD and
//! RTMR\[0\] (see [`crate::tdx`]); the event data of EV_EFI_BOOT_SERVICES_APPLICATION (its
//! UEFI_IMAGE_LOAD_EVENT holds the load address), which the CEL records then leave out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::eventlog::{Event, EventType};
use crate::firmware::{BootError, BootPrediction, SecureBootState};
use crate::hash::{Digest, HashAlg};
use crate::kernel_config::Addons;
use crate::measure::{Phase, PredictedEvent};
use crate::ovmf::Ovmf;
use crate::snp::{LaunchConfig, SevHashes, SevMode, SnpError, VmmType};
use crate::tdx::{TdxError, TdxOptions, TdxPrediction};

/// The RVPS message version (trustee `rvps/README.md`).
pub const RVPS_MESSAGE_VERSION: &str = "0.1.0";
/// The RVPS provenance type whose payload is plain `{"name": ["value", …]}`.
pub const RVPS_SAMPLE_TYPE: &str = "sample";
/// The bank Trustee's TPM verifier reads PCRs from (`pcrs_sha256()`).
pub const RVPS_PCR_BANK: HashAlg = HashAlg::Sha256;

/// The SEV-SNP part of a request: the firmware and launch parameters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SnpRequest<'a> {
    /// The OVMF image.
    pub ovmf: &'a Ovmf,
    /// vCPUs, vCPU signature, guest features, VMM; `hashes` is replaced (see
    /// [`SnpRequest::kernel_hashes`]).
    pub config: LaunchConfig,
    /// QEMU `kernel-hashes=on` with `-kernel uki.efi` (no `-initrd`, no `-append`): the UKI's
    /// SHA-256 goes into the measured hash table. Needs a firmware with an
    /// SNP_KERNEL_HASHES section (OVMF's AmdSev build); off, the launch digest covers the
    /// firmware and VMSAs only.
    pub kernel_hashes: bool,
}

impl<'a> SnpRequest<'a> {
    /// For `ovmf` and `config`, the UKI measured as `-kernel` with kernel hashes.
    pub fn new(ovmf: &'a Ovmf, config: LaunchConfig) -> Self {
        SnpRequest {
            ovmf,
            config,
            kernel_hashes: true,
        }
    }
}

/// What to predict.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReferenceRequest<'a> {
    /// The UKI.
    pub uki: &'a Path,
    /// Stub rules to apply instead of the `.sdmagic` version.
    pub stub_version: Option<u32>,
    /// TPM banks.
    pub banks: Vec<HashAlg>,
    /// PCR 11 after these boot phases.
    pub phases: Vec<Phase>,
    /// The profile the stub boots.
    pub profile: u32,
    /// Addons and sidecar files (PCR 12/13, RTMR\[2\]).
    pub addons: Option<&'a Addons>,
    /// Secure Boot state and images booted before the UKI: PCR 4, 7, 9.
    pub secure_boot: Option<(&'a SecureBootState, &'a [PathBuf])>,
    /// Predict RTMR\[1\] and RTMR\[2\]; `linux_stub_events` as [`TdxOptions`].
    pub tdx: Option<bool>,
    /// Compute the SEV-SNP launch measurement.
    pub snp: Option<SnpRequest<'a>>,
}

impl<'a> ReferenceRequest<'a> {
    /// For `uki`: the sha256 bank, PCR 11 after the stub's own measurements, profile 0,
    /// no firmware, TDX or SNP registers.
    pub fn new(uki: &'a Path) -> Self {
        ReferenceRequest {
            uki,
            stub_version: None,
            banks: vec![HashAlg::Sha256],
            phases: vec![Phase::after_stub()],
            profile: 0,
            addons: None,
            secure_boot: None,
            tdx: None,
            snp: None,
        }
    }
}

/// The SEV-SNP launch measurement and what it was computed for.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SnpReference {
    /// The digest (48 bytes for SNP, 32 for SEV/SEV-ES).
    pub launch_measurement: Vec<u8>,
    /// The launch parameters (with the UKI's hashes when measured with kernel hashes).
    pub config: LaunchConfig,
}

/// Every register predicted for one UKI boot.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ReferenceValues {
    /// The UKI, as given.
    pub uki: PathBuf,
    /// PCR 4, 7, 9 (with a Secure Boot state), 11, 12, 13 (when asked).
    pub boot: BootPrediction,
    /// RTMR\[1\] and RTMR\[2\].
    pub tdx: Option<TdxPrediction>,
    /// The SEV-SNP launch measurement.
    pub snp: Option<SnpReference>,
}

/// Why reference values could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// The TPM PCRs.
    #[error("predicting the PCRs of {path}")]
    Boot {
        /// The UKI.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<BootError>,
    },
    /// The TDX RTMRs.
    #[error("predicting the TDX RTMRs of {path}")]
    Tdx {
        /// The UKI.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<TdxError>,
    },
    /// The SEV-SNP launch measurement.
    #[error("computing the SEV-SNP launch measurement")]
    Snp(#[source] SnpError),
    /// RVPS reads sha256 PCR values.
    #[error("the RVPS reference values are sha256 PCR values (tpm_pcrN): predict the sha256 bank")]
    NoSha256Bank,
}

/// Predict every register `req` asks for.
///
/// ```no_run
/// use bootchain::reference::{reference_values, ReferenceRequest};
/// let refs = reference_values(&ReferenceRequest::new("uki.efi".as_ref()))?;
/// println!("{}", refs.rvps_message()?);
/// # Ok::<(), bootchain::reference::ReferenceError>(())
/// ```
pub fn reference_values(req: &ReferenceRequest<'_>) -> Result<ReferenceValues, ReferenceError> {
    let boot = crate::firmware::predict_boot(
        req.uki,
        req.stub_version,
        &req.banks,
        &req.phases,
        req.profile,
        req.addons,
        req.secure_boot,
    )
    .map_err(|source| ReferenceError::Boot {
        path: req.uki.to_path_buf(),
        source: Box::new(source),
    })?;
    let tdx = match req.tdx {
        Some(no_vtpm) => {
            let o = TdxOptions {
                stub_version: req.stub_version,
                profile: req.profile,
                addons: req.addons,
                linux_stub_events: no_vtpm,
            };
            Some(crate::tdx::predict_tdx_uki(req.uki, &o).map_err(|source| {
                ReferenceError::Tdx {
                    path: req.uki.to_path_buf(),
                    source: Box::new(source),
                }
            })?)
        }
        None => None,
    };
    let snp = match &req.snp {
        Some(s) => {
            let mut config = s.config.clone();
            config.hashes = if s.kernel_hashes {
                Some(SevHashes::from_files(req.uki, None, None).map_err(ReferenceError::Snp)?)
            } else {
                None
            };
            let launch_measurement =
                crate::snp::launch_digest(s.ovmf, &config).map_err(ReferenceError::Snp)?;
            Some(SnpReference {
                launch_measurement,
                config,
            })
        }
        None => None,
    };
    Ok(ReferenceValues {
        uki: req.uki.to_path_buf(),
        boot,
        tdx,
        snp,
    })
}

/// One predicted register value.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Register {
    /// `pcr4`, `rtmr1`, `snp_launch_measurement`.
    pub name: String,
    /// The bank (sha384 for RTMRs and SNP).
    pub bank: HashAlg,
    /// PCR 11 only: the boot phase after which it holds this value.
    pub phase: Option<Phase>,
    /// The value.
    pub value: Vec<u8>,
}

fn push_pcr(out: &mut Vec<Register>, i: u32, vals: &BTreeMap<HashAlg, Digest>) {
    for (bank, v) in vals {
        out.push(Register {
            name: format!("pcr{i}"),
            bank: *bank,
            phase: None,
            value: v.as_bytes().to_vec(),
        });
    }
}

fn mode_name(m: SevMode) -> &'static str {
    match m {
        SevMode::Sev => "sev",
        SevMode::SevEs => "seves",
        _ => "snp",
    }
}

fn vmm_name(v: VmmType) -> &'static str {
    match v {
        VmmType::Ec2 => "ec2",
        VmmType::Gce => "gce",
        _ => "QEMU",
    }
}

impl ReferenceValues {
    /// The flat list: PCRs by index and bank (PCR 11 once per phase), RTMR\[1\], RTMR\[2\],
    /// the SNP launch measurement.
    pub fn registers(&self) -> Vec<Register> {
        let mut out = Vec::new();
        let mut pcrs: Vec<(u32, &BTreeMap<HashAlg, Digest>)> = self
            .boot
            .stub_pcrs()
            .map(|p| (p.pcr.get(), &p.values))
            .collect();
        pcrs.sort_by_key(|(i, _)| *i);
        let pcr11 = crate::measure::PCR_KERNEL_BOOT;
        for (i, vals) in pcrs.iter().filter(|(i, _)| *i < pcr11) {
            push_pcr(&mut out, *i, vals);
        }
        for ph in &self.boot.pcr11.phases {
            for v in &ph.values {
                out.push(Register {
                    name: format!("pcr{pcr11}"),
                    bank: v.alg(),
                    phase: Some(ph.phase.clone()),
                    value: v.as_bytes().to_vec(),
                });
            }
        }
        for (i, vals) in pcrs.iter().filter(|(i, _)| *i > pcr11) {
            push_pcr(&mut out, *i, vals);
        }
        if let Some(t) = &self.tdx {
            for r in [&t.rtmr1, &t.rtmr2] {
                out.push(Register {
                    name: r.rtmr.to_string(),
                    bank: HashAlg::Sha384,
                    phase: None,
                    value: r.value.as_bytes().to_vec(),
                });
            }
        }
        if let Some(s) = &self.snp {
            out.push(Register {
                name: "snp_launch_measurement".into(),
                bank: if s.launch_measurement.len() == 32 {
                    HashAlg::Sha256
                } else {
                    HashAlg::Sha384
                },
                phase: None,
                value: s.launch_measurement.clone(),
            });
        }
        out
    }

    /// The same values as [`BootPrediction::values`] (what `pcr predict --json` prints as
    /// `values`): every predicted PCR, PCR 11 when exactly one phase was predicted.
    pub fn pcr_values(&self) -> crate::pcr::PcrValues {
        self.boot.values()
    }

    /// bootchain's reference-values document (README "Reference values").
    pub fn to_json(&self) -> Value {
        let registers: Vec<Value> = self
            .registers()
            .into_iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("name".into(), r.name.into());
                m.insert("bank".into(), r.bank.name().into());
                if let Some(p) = r.phase {
                    m.insert("phase".into(), p.as_str().into());
                }
                m.insert("value".into(), hex::encode(r.value).into());
                Value::Object(m)
            })
            .collect();
        let pcr11 = crate::measure::PCR_KERNEL_BOOT;
        let mut pcrs: Vec<(u32, Value)> = self
            .boot
            .stub_pcrs()
            .map(|p| (p.pcr.get(), json!(p)))
            .collect();
        pcrs.push((
            pcr11,
            json!({
                "pcr": pcr11,
                "events": self.boot.pcr11.events,
                "phases": self.boot.pcr11.phases.iter().map(|p| json!({
                    "phase": p.phase,
                    "values": p.values.iter().map(|v| (v.alg().name().to_string(), Value::from(v.to_hex()))).collect::<Map<_, _>>(),
                })).collect::<Vec<_>>(),
            }),
        ));
        pcrs.sort_by_key(|(i, _)| *i);
        let snp = self.snp.as_ref().map(|s| {
            json!({
                "mode": mode_name(s.config.mode),
                "vcpus": s.config.vcpus,
                "vcpu_sig": format!("{:#x}", s.config.vcpu_sig),
                "guest_features": format!("{:#x}", s.config.guest_features),
                "vmm_type": vmm_name(s.config.vmm),
                "kernel_hashes": s.config.hashes.is_some(),
                "launch_measurement": hex::encode(&s.launch_measurement),
            })
        });
        json!({
            "uki": self.uki.display().to_string(),
            "registers": registers,
            "pcrs": pcrs.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            "tdx": self.tdx.as_ref().map(|t| json!({
                "stub_version": t.stub_version,
                "rtmr1": t.rtmr1,
                "rtmr2": t.rtmr2,
            })),
            "snp": snp,
        })
    }

    /// The RVPS `sample` payload: `{"tpm_pcr4": ["hex"], …, "tpm_pcr11": ["hex per phase"],
    /// …, "rtmr_1": ["hex"], "rtmr_2": ["hex"], "snp_launch_measurement": ["hex"]}` (PCRs
    /// from the sha256 bank, see the module documentation).
    pub fn rvps_payload(&self) -> Result<Value, ReferenceError> {
        let regs = self.registers();
        let has_pcrs = regs.iter().any(|r| r.name.starts_with("pcr"));
        if has_pcrs && !regs.iter().any(|r| r.bank == RVPS_PCR_BANK) {
            return Err(ReferenceError::NoSha256Bank);
        }
        let mut m: Map<String, Value> = Map::new();
        for r in regs {
            let name = if let Some(n) = r.name.strip_prefix("pcr") {
                if r.bank != RVPS_PCR_BANK {
                    continue;
                }
                format!("tpm_pcr{n}")
            } else if let Some(n) = r.name.strip_prefix("rtmr") {
                format!("rtmr_{n}")
            } else {
                r.name.clone()
            };
            let hex = Value::from(hex::encode(&r.value));
            match m.entry(name).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(a) if !a.contains(&hex) => a.push(hex),
                _ => {}
            }
        }
        Ok(Value::Object(m))
    }

    /// The RVPS message registering [`Self::rvps_payload`] (`rvps-tool register --path`).
    pub fn rvps_message(&self) -> Result<Value, ReferenceError> {
        let payload = self.rvps_payload()?.to_string();
        Ok(json!({
            "version": RVPS_MESSAGE_VERSION,
            "type": RVPS_SAMPLE_TYPE,
            "payload": base64::engine::general_purpose::STANDARD.encode(payload),
        }))
    }

    /// The predicted PCR events as CEL-JSON records (module documentation), PCRs in index
    /// order and each PCR's events in measurement order, `recnum` counting from 1. With
    /// exactly one PCR 11 phase its words follow the stub's events as `systemd` records, so
    /// the records replay to [`Self::pcr_values`].
    pub fn cel_json(&self) -> Value {
        let mut per_pcr: Vec<(u32, Vec<Value>)> = self
            .boot
            .stub_pcrs()
            .map(|p| (p.pcr.get(), p.events.iter().map(cel_content).collect()))
            .collect();
        let pcr11 = crate::measure::PCR_KERNEL_BOOT;
        let mut p11: Vec<Value> = self.boot.pcr11.events.iter().map(cel_content).collect();
        if let [only] = self.boot.pcr11.phases.as_slice() {
            for w in only.phase.words() {
                let digests: Vec<Value> = self
                    .boot
                    .pcr11
                    .banks
                    .iter()
                    .map(|b| cel_digest(*b, b.digest(w.as_bytes()).as_bytes()))
                    .collect();
                p11.push(json!({
                    "digests": digests,
                    "content_type": "systemd",
                    "content": {"string": w, "eventType": "phase"},
                }));
            }
        }
        per_pcr.push((pcr11, p11));
        per_pcr.sort_by_key(|(i, _)| *i);
        let mut recnum = 0u64;
        let mut out = Vec::new();
        for (pcr, records) in per_pcr {
            for r in records {
                recnum += 1;
                out.push(cel_record(pcr, recnum, r));
            }
        }
        Value::Array(out)
    }
}

/// `{"hashAlg": "sha256", "digest": "hex"}`.
fn cel_digest(bank: HashAlg, bytes: &[u8]) -> Value {
    json!({"hashAlg": bank.name(), "digest": hex::encode(bytes)})
}

/// A record's digests and content (all but `pcr` and `recnum`).
fn cel_content(e: &PredictedEvent) -> Value {
    let digests: Vec<Value> = e
        .digests
        .iter()
        .map(|(b, d)| cel_digest(*b, d.as_bytes()))
        .collect();
    let mut content = Map::new();
    content.insert("event_type".into(), cel_event_type(e.event_type).into());
    if let Some(d) = &e.event_data {
        content.insert("event_data".into(), hex::encode(d).into());
    }
    json!({"digests": digests, "content_type": "pcclient_std", "content": content})
}

/// pcrlock's key order: pcr, recnum, digests, content_type, content.
fn cel_record(pcr: u32, recnum: u64, body: Value) -> Value {
    let mut m = Map::new();
    m.insert("pcr".into(), pcr.into());
    m.insert("recnum".into(), recnum.into());
    if let Value::Object(b) = body {
        m.extend(b);
    }
    Value::Object(m)
}

/// The `event_type` text: the spec name, or the decimal value for types without one (as
/// pcrlock prints them).
pub fn cel_event_type(t: EventType) -> String {
    match t {
        EventType::Unknown(v) => v.to_string(),
        t => t.name(),
    }
}

/// CEL-JSON records for predicted events, in the given order, `recnum` from 1 (what
/// [`ReferenceValues::cel_json`] writes for each PCR; event data left out where
/// [`PredictedEvent::event_data`] is `None`).
pub fn cel_records_predicted<'a>(events: impl IntoIterator<Item = &'a PredictedEvent>) -> Value {
    Value::Array(
        events
            .into_iter()
            .enumerate()
            .map(|(i, e)| cel_record(e.pcr.get(), i as u64 + 1, cel_content(e)))
            .collect(),
    )
}

/// CEL-JSON records for the events of a TCG event log (the Spec ID header excluded, as
/// pcrlock does; `recnum` from 1; digests in log order; digests of algorithms bootchain
/// does not know are named by their TPM_ALG_ID in hex).
pub fn cel_records_from_log(events: &[Event]) -> Value {
    Value::Array(
        events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let digests: Vec<Value> = e
                    .digests
                    .iter()
                    .map(|d| match HashAlg::from_tpm_alg_id(d.alg_id) {
                        Some(b) => cel_digest(b, &d.bytes),
                        None => json!({"hashAlg": format!("0x{:04x}", d.alg_id), "digest": hex::encode(&d.bytes)}),
                    })
                    .collect();
                cel_record(
                    e.pcr,
                    i as u64 + 1,
                    json!({
                        "digests": digests,
                        "content_type": "pcclient_std",
                        "content": {
                            "event_type": cel_event_type(e.event_type),
                            "event_data": hex::encode(&e.data),
                        },
                    }),
                )
            })
            .collect(),
    )
}
