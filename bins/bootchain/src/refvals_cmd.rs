//! `reference-values`: every register bootchain predicts for a UKI boot, for verifiers
//! (`bootchain::reference`: the library assembles and serializes, this parses and prints).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use bootchain::hash::HashAlg;
use bootchain::ovmf::Ovmf;
use bootchain::reference::{self, ReferenceRequest, SnpRequest};
use bootchain::snp::{LaunchConfig, SevMode};
use clap::{Args, ValueEnum};

use crate::snp_cmd::{auto_base_u32, auto_base_u64, vcpu_signature, vcpu_type, vmm_type};

/// Output formats.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// bootchain's JSON: registers, and each PCR's and RTMR's events (README "Reference
    /// values").
    Bootchain,
    /// A Trustee RVPS message, provenance type "sample" (tpm_pcrN, rtmr_1, rtmr_2,
    /// snp_launch_measurement).
    Rvps,
    /// The predicted PCR events as TCG CEL-JSON (the shape `systemd-pcrlock cel` prints).
    Cel,
}

/// `reference-values` options.
#[derive(Args)]
pub struct RefArgs {
    /// The UKI.
    #[arg(long)]
    uki: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "bootchain")]
    format: Format,
    /// PCR bank (repeatable; default sha256).
    #[arg(long = "bank")]
    banks: Vec<HashAlg>,
    /// Boot phase path of PCR 11 (repeatable; "" = right after the stub, the default).
    #[arg(long = "phase")]
    phases: Vec<String>,
    /// Use this stub version's rules instead of the one in .sdmagic.
    #[arg(long)]
    stub_version: Option<u32>,
    /// The profile the stub boots (PCR 11; PCR 12 when not 0).
    #[arg(long, default_value_t = 0)]
    profile: u32,
    /// Addons and sidecar files on the ESP (PCR 12 and 13).
    #[command(flatten)]
    esp: crate::EspArgs,
    /// Images the firmware loads before the UKI, in order (PCR 4; needs --secureboot).
    #[arg(long = "boot-chain")]
    boot_chain: Vec<PathBuf>,
    /// Secure Boot state: with --secureboot, PCRs 4, 7 and 9.
    #[command(flatten)]
    sb: crate::SecureBootArgs,
    /// TDX: RTMR[1] (QEMU direct boot of the UKI) and RTMR[2].
    #[arg(long)]
    tdx: bool,
    /// With --tdx: no vTPM, the Linux EFI stub's events go to RTMR[2].
    #[arg(long, requires = "tdx")]
    no_vtpm: bool,
    /// SEV-SNP: the launch measurement of this OVMF with the UKI as QEMU's -kernel
    /// (kernel-hashes=on).
    #[arg(long, value_name = "PATH")]
    ovmf: Option<PathBuf>,
    /// With --ovmf: QEMU without kernel-hashes (the firmware has no SNP_KERNEL_HASHES
    /// section, as Debian's OVMF): the measurement covers firmware and vCPUs only.
    #[arg(long, requires = "ovmf")]
    no_kernel_hashes: bool,
    /// With --ovmf: number of vCPUs.
    #[arg(long, value_name = "N", requires = "ovmf")]
    vcpus: Option<u32>,
    /// With --ovmf: QEMU CPU model of the vCPUs (as `snp measure`).
    #[arg(long = "vcpu-type", value_name = "CPUTYPE", value_parser = vcpu_type, requires = "ovmf")]
    vcpu_type: Option<String>,
    /// With --ovmf: vCPU signature (CPUID Fn0000_0001_EAX).
    #[arg(long = "vcpu-sig", value_name = "VALUE", value_parser = auto_base_u32, requires = "ovmf")]
    vcpu_sig: Option<u32>,
    /// With --ovmf: vCPU family (with --vcpu-model and --vcpu-stepping).
    #[arg(long = "vcpu-family", requires_all = ["vcpu_model", "vcpu_stepping", "ovmf"])]
    vcpu_family: Option<u32>,
    /// With --ovmf: vCPU model.
    #[arg(long = "vcpu-model")]
    vcpu_model: Option<u32>,
    /// With --ovmf: vCPU stepping.
    #[arg(long = "vcpu-stepping")]
    vcpu_stepping: Option<u32>,
    /// With --ovmf: the VMM (QEMU, ec2, gce).
    #[arg(long = "vmm-type", default_value = "QEMU", value_parser = ["QEMU", "ec2", "gce"])]
    vmm_type: String,
    /// With --ovmf: guest features word of the VMSAs.
    #[arg(long = "guest-features", default_value = "0x1", value_parser = auto_base_u64)]
    guest_features: u64,
}

/// Run `reference-values`.
pub fn reference_values(a: RefArgs) -> Result<ExitCode> {
    if a.sb.secureboot.is_none() && !a.boot_chain.is_empty() {
        anyhow::bail!("--boot-chain needs --secureboot on|off");
    }
    let addons = a.esp.addons();
    let state =
        a.sb.secureboot
            .is_some()
            .then(|| a.sb.state())
            .transpose()?;
    let ovmf = match &a.ovmf {
        Some(p) => Some(Ovmf::read(p).with_context(|| format!("firmware {}", p.display()))?),
        None => None,
    };
    let mut req = ReferenceRequest::new(&a.uki);
    if !a.banks.is_empty() {
        req.banks = a.banks;
    }
    if !a.phases.is_empty() {
        req.phases = bootchain::measure::phase_list(&a.phases)?;
    }
    req.stub_version = a.stub_version;
    req.profile = a.profile;
    req.addons = addons.as_ref();
    req.secure_boot = state.as_ref().map(|s| (s, a.boot_chain.as_slice()));
    req.tdx = a.tdx.then_some(a.no_vtpm);
    if let Some(fw) = &ovmf {
        let vmm = vmm_type(&a.vmm_type);
        let vcpus = a
            .vcpus
            .context("--ovmf needs --vcpus N (the guest's vCPU count)")?;
        let vcpu_sig = vcpu_signature(
            a.vcpu_family.map(|f| (f, a.vcpu_model, a.vcpu_stepping)),
            a.vcpu_sig,
            a.vcpu_type.as_deref(),
            vmm,
        )
        .context("--ovmf")?;
        let mut s = SnpRequest::new(
            fw,
            LaunchConfig {
                mode: SevMode::Snp,
                vcpus,
                vcpu_sig,
                guest_features: a.guest_features,
                vmm,
                hashes: None,
                ovmf_hash: None,
            },
        );
        s.kernel_hashes = !a.no_kernel_hashes;
        req.snp = Some(s);
    }
    let refs = reference::reference_values(&req).map_err(|e| {
        let hint = matches!(
            &e,
            reference::ReferenceError::Snp(bootchain::snp::SnpError::NoKernelHashesSection)
        );
        let e = anyhow::Error::from(e);
        if hint {
            e.context("give --no-kernel-hashes for a firmware without kernel hashes (QEMU kernel-hashes=off)")
        } else {
            e
        }
    })?;
    let doc = match a.format {
        Format::Bootchain => refs.to_json(),
        Format::Rvps => refs.rvps_message()?,
        Format::Cel => refs.cel_json(),
    };
    outln!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(ExitCode::SUCCESS)
}
