//! `snp measure`: AMD SEV/SEV-ES/SEV-SNP launch digests, with virtee/sev-snp-measure's
//! options and meaning (its `cli.py`, 0.0.13).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use base64::Engine;
use bootchain::ovmf::Ovmf;
use bootchain::snp::{self, LaunchConfig, SevHashes, SevMode, VmmType};
use clap::{Args, Subcommand};

/// AMD SEV commands.
#[derive(Subcommand)]
pub enum SnpCmd {
    /// Print the launch digest of an OVMF guest (as PyPI sev-snp-measure does): SEV-SNP's
    /// 48-byte MEASUREMENT, or SEV/SEV-ES's 32-byte launch digest.
    Measure(MeasureArgs),
}

/// `snp measure` options (sev-snp-measure's names).
#[derive(Args)]
pub struct MeasureArgs {
    /// Guest mode: sev, seves, snp, or snp:ovmf-hash (the digest of the firmware pages alone,
    /// for --snp-ovmf-hash).
    #[arg(long, value_parser = ["sev", "seves", "snp", "snp:ovmf-hash"])]
    mode: String,
    /// Number of guest vCPUs (seves, snp).
    #[arg(long, value_name = "N")]
    vcpus: Option<u32>,
    /// QEMU CPU model of the guest vCPUs (EPYC, EPYC-v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa,
    /// EPYC-Turin, ...).
    #[arg(long = "vcpu-type", value_name = "CPUTYPE", value_parser = vcpu_type)]
    vcpu_type: Option<String>,
    /// Guest vCPU signature (CPUID Fn0000_0001_EAX), e.g. 0x800f12.
    #[arg(long = "vcpu-sig", value_name = "VALUE", value_parser = auto_base_u32)]
    vcpu_sig: Option<u32>,
    /// Guest vCPU family (with --vcpu-model and --vcpu-stepping).
    #[arg(long = "vcpu-family", value_name = "FAMILY", requires_all = ["vcpu_model", "vcpu_stepping"])]
    vcpu_family: Option<u32>,
    /// Guest vCPU model.
    #[arg(long = "vcpu-model", value_name = "MODEL")]
    vcpu_model: Option<u32>,
    /// Guest vCPU stepping.
    #[arg(long = "vcpu-stepping", value_name = "STEPPING")]
    vcpu_stepping: Option<u32>,
    /// Type of the VMM: QEMU, ec2 or gce.
    #[arg(long = "vmm-type", value_name = "VMMTYPE", default_value = "QEMU",
          value_parser = ["QEMU", "ec2", "gce"])]
    vmm_type: String,
    /// OVMF firmware image.
    #[arg(long, value_name = "PATH")]
    ovmf: PathBuf,
    /// Kernel (or UKI) file passed to QEMU's -kernel with kernel-hashes=on.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initrd passed to -initrd (needs --kernel).
    #[arg(long, value_name = "PATH", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line passed to -append (needs --kernel).
    #[arg(
        long,
        value_name = "CMDLINE",
        requires = "kernel",
        allow_hyphen_values = true
    )]
    append: Option<String>,
    /// Guest features word of the VMSAs (snp), e.g. 0x1 (SNPActive, the default).
    #[arg(long = "guest-features", value_name = "VALUE", default_value = "0x1",
          value_parser = auto_base_u64)]
    guest_features: u64,
    /// Output format of the digest.
    #[arg(long = "output-format", default_value = "hex", value_parser = ["hex", "base64"])]
    output_format: String,
    /// Precomputed digest of the firmware pages (hex, from --mode snp:ovmf-hash): the image's
    /// pages are not measured again (snp).
    #[arg(long = "snp-ovmf-hash", value_name = "HASH")]
    snp_ovmf_hash: Option<String>,
    /// Print "Calculated MODE guest measurement: DIGEST".
    #[arg(short, long)]
    verbose: bool,
}

/// An integer in Python's `int(s, 0)` notation: 0x…, 0o…, 0b… or decimal.
pub(crate) fn auto_base_u64(s: &str) -> Result<u64, String> {
    let t = s.replace('_', "");
    let (digits, radix) = match t.get(..2).map(str::to_ascii_lowercase).as_deref() {
        Some("0x") => (&t[2..], 16),
        Some("0o") => (&t[2..], 8),
        Some("0b") => (&t[2..], 2),
        _ => (t.as_str(), 10),
    };
    u64::from_str_radix(digits, radix).map_err(|e| format!("{s:?}: {e}"))
}

pub(crate) fn auto_base_u32(s: &str) -> Result<u32, String> {
    u32::try_from(auto_base_u64(s)?).map_err(|_| format!("{s:?}: more than 32 bits"))
}

pub(crate) fn vcpu_type(s: &str) -> Result<String, String> {
    match snp::vcpu_type_sig(s) {
        Some(_) => Ok(s.to_string()),
        None => Err(format!(
            "unknown vCPU type {s:?} (known: {})",
            snp::VCPU_TYPES
                .iter()
                .map(|t| t.0)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Run an `snp` subcommand.
pub fn snp(cmd: SnpCmd) -> Result<ExitCode> {
    match cmd {
        SnpCmd::Measure(a) => measure(a),
    }
}

fn measure(a: MeasureArgs) -> Result<ExitCode> {
    let ovmf = Ovmf::read(&a.ovmf).with_context(|| format!("firmware {}", a.ovmf.display()))?;
    if a.mode == "snp:ovmf-hash" {
        outln!("{}", hex(&snp::ovmf_hash(&ovmf)?));
        return Ok(ExitCode::SUCCESS);
    }
    let (mode, name) = match a.mode.as_str() {
        "sev" => (SevMode::Sev, "SEV"),
        "seves" => (SevMode::SevEs, "SEV_ES"),
        _ => (SevMode::Snp, "SEV_SNP"),
    };
    let vmm = vmm_type(&a.vmm_type);
    let vcpus = match (mode, a.vcpus) {
        (SevMode::Sev, v) => v.unwrap_or(0),
        (_, Some(v)) => v,
        (_, None) => bail!("missing --vcpus N in guest mode '{}'", a.mode),
    };
    // sev-snp-measure's precedence: family/model/stepping, then --vcpu-sig, then --vcpu-type;
    // EC2 and GCE do not put the signature in the VMSA.
    let vcpu_sig = match mode {
        SevMode::Sev => 0,
        _ => vcpu_signature(
            a.vcpu_family.map(|f| (f, a.vcpu_model, a.vcpu_stepping)),
            a.vcpu_sig,
            a.vcpu_type.as_deref(),
            vmm,
        )
        .with_context(|| format!("guest mode '{}'", a.mode))?,
    };
    let ovmf_hash = match &a.snp_ovmf_hash {
        Some(h) => Some(
            <[u8; snp::LD_SIZE]>::try_from(unhex(h).context("--snp-ovmf-hash")?)
                .map_err(|v| anyhow::anyhow!("--snp-ovmf-hash: {} bytes, want 48", v.len()))?,
        ),
        None => None,
    };
    let hashes = match &a.kernel {
        Some(k) => Some(SevHashes::from_files(
            k,
            a.initrd.as_deref(),
            a.append.as_deref(),
        )?),
        None => None,
    };
    let cfg = LaunchConfig {
        mode,
        vcpus,
        vcpu_sig,
        guest_features: a.guest_features,
        vmm,
        hashes,
        ovmf_hash,
    };
    let digest = snp::launch_digest(&ovmf, &cfg)?;
    let text = match a.output_format.as_str() {
        "base64" => base64::engine::general_purpose::STANDARD.encode(&digest),
        _ => hex(&digest),
    };
    if a.verbose {
        outln!("Calculated {name} guest measurement: {text}");
    } else {
        outln!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The vCPU signature from sev-snp-measure's options, in its precedence: family/model/
/// stepping, then the signature, then the CPU type; EC2 and GCE do not put it in the VMSA.
pub(crate) fn vcpu_signature(
    family: Option<(u32, Option<u32>, Option<u32>)>,
    sig: Option<u32>,
    cpu_type: Option<&str>,
    vmm: VmmType,
) -> Result<u32> {
    Ok(match (family, sig, cpu_type) {
        (Some((f, m, s)), ..) => snp::cpu_sig(f, m.unwrap_or_default(), s.unwrap_or_default()),
        (None, Some(sig), _) => sig,
        (None, None, Some(t)) => snp::vcpu_type_sig(t).unwrap_or_default(),
        (None, None, None) if vmm == VmmType::Qemu => {
            bail!("missing --vcpu-type or --vcpu-sig or --vcpu-family")
        }
        (None, None, None) => 0,
    })
}

/// `--vmm-type` as the library's type.
pub(crate) fn vmm_type(s: &str) -> VmmType {
    match s {
        "ec2" => VmmType::Ec2,
        "gce" => VmmType::Gce,
        _ => VmmType::Qemu,
    }
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        bail!("not a hex string");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("not a hex string"))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
