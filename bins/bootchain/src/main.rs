//! `bootchain`: the command-line face of the bootchain library. Every subcommand is a thin
//! layer over a public library function.

/// `out!` to stdout through [`write_stdout`]: a closed stdout ends the process quietly.
macro_rules! out {
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*)) };
}

/// `outln!` to stdout through [`write_stdout`]: a closed stdout ends the process quietly.
macro_rules! outln {
    () => { $crate::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => {{
        $crate::write_stdout(format_args!($($arg)*));
        $crate::write_stdout(format_args!("\n"));
    }};
}

mod generate;
mod policy_cmd;
mod refvals_cmd;
mod signing;
mod snp_cmd;
mod tpm_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bootchain::hash::HashAlg;
use bootchain::keys;
use bootchain::sign::{self, SignOptions};
use bootchain::uki::{self, SectionContent, UkiBuilder};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bootchain",
    version,
    about = "Build, sign and measure unified kernel images"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Unified kernel images.
    #[command(subcommand)]
    Uki(UkiCmd),
    /// PE images: Authenticode hash, sign, verify.
    #[command(subcommand)]
    Pe(PeCmd),
    /// systemd-measure drop-in: PCR 11 from loose UKI parts; signed PCR policies.
    #[command(subcommand)]
    Measure(MeasureCmd),
    /// PCR prediction for a built UKI.
    #[command(subcommand)]
    Pcr(PcrCmd),
    /// TCG event logs: show, replay, verify, predict the next boot.
    #[command(subcommand)]
    Eventlog(EventlogCmd),
    /// Seal a secret to a TPM policy (PCR values, signed PCR policies, PIN) in an
    /// AES-256-GCM envelope (JSON).
    Seal(tpm_cmd::SealArgs),
    /// Unseal an envelope made by `seal`.
    Unseal(tpm_cmd::UnsealArgs),
    /// LUKS2 volumes: enroll, unlock, list and remove systemd-tpm2 TPM keyslots.
    #[command(subcommand)]
    Luks(tpm_cmd::LuksCmd),
    /// The TPM: the SRK's public area for offline sealing.
    #[command(subcommand)]
    Tpm(tpm_cmd::TpmCmd),
    /// The epoch counter signed PCR policies are bound to: define, bump (revoke older
    /// signatures), show.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCmd),
    /// AMD SEV/SEV-ES/SEV-SNP: launch digests of OVMF guests.
    #[command(subcommand)]
    Snp(snp_cmd::SnpCmd),
    /// Reference values for verifiers: every register bootchain predicts for a UKI boot (PCR
    /// 4/7/9/11/12/13, TDX RTMR[1]/[2], the SEV-SNP launch measurement) as bootchain JSON, a
    /// Trustee RVPS message or TCG CEL-JSON.
    ReferenceValues(Box<refvals_cmd::RefArgs>),
    /// Remote attestation, the verifier's side: TPM quotes against event logs and references.
    #[command(subcommand)]
    Attest(AttestCmd),
    /// ukify 257's command line: `bootchain ukify build|inspect|genkey ARGS` or `--version`
    /// (what the `ukify` drop-in script runs; options as in ukify, before or after the verb).
    #[command(disable_help_flag = true)]
    Ukify {
        /// The verb and ukify's options.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Man pages and shell completions from this command line (for packagers).
    #[command(subcommand, hide = true)]
    Generate(generate::GenerateCmd),
}

/// The version `bootchain ukify --version` reports: ukify's shape (`ukify MAJOR (FULL)`;
/// mkosi reads the third word) for the systemd release whose ukify bootchain follows.
const UKIFY_VERSION: &str = concat!("ukify 257 (257-bootchain-", env!("CARGO_PKG_VERSION"), ")");

/// ukify's options that take no value (everything else takes one, as `--opt VALUE`).
const UKIFY_FLAGS: &[&str] = &[
    "--summary",
    "--sign-kernel",
    "--no-sign-kernel",
    "--measure",
    "--no-measure",
    "--all",
    "--version",
    "-j",
    "-h",
    "--help",
];

/// Run ukify's command line as the matching `bootchain uki` subcommand.
fn ukify_cmd(args: Vec<std::ffi::OsString>) -> Result<ExitCode> {
    // argparse takes options before or after the verb: find the verb by skipping options and
    // their values.
    let mut verb = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--version" {
            outln!("{UKIFY_VERSION}");
            return Ok(ExitCode::SUCCESS);
        }
        if a.starts_with('-') {
            let takes_value = !a.contains('=') && !UKIFY_FLAGS.contains(&a.as_ref());
            i += if takes_value { 2 } else { 1 };
            continue;
        }
        verb = Some(i);
        break;
    }
    let Some(at) = verb else {
        bail!("ukify: give a verb: build, inspect or genkey");
    };
    let mut rest = args;
    let v = rest.remove(at);
    let mut argv: Vec<std::ffi::OsString> = vec!["bootchain".into(), "uki".into()];
    match v.to_str() {
        Some("build") => argv.extend(["build".into(), "--ukify-defaults".into()]),
        Some("genkey") => argv.push("genkey".into()),
        Some("inspect") => argv.extend(["inspect".into(), "--format=ukify".into()]),
        _ => bail!(
            "ukify: unknown verb {:?}; the legacy `ukify LINUX INITRD…` form is not supported: use `build --linux=LINUX --initrd=INITRD`",
            v
        ),
    }
    argv.extend(rest);
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    run(cli)
}

/// The Secure Boot state the firmware will measure into PCR 7.
#[derive(Args, Default)]
struct SecureBootArgs {
    /// Secure Boot on or off at the next boot (enables PCR 4/7/9 prediction).
    #[arg(long, value_parser = ["on", "off"])]
    secureboot: Option<String>,
    /// PK: an EFI_SIGNATURE_LIST file or a certificate (PEM/DER).
    #[arg(long = "secureboot-pk")]
    pk: Option<PathBuf>,
    /// KEK: signature lists or a certificate.
    #[arg(long = "secureboot-kek")]
    kek: Option<PathBuf>,
    /// db: signature lists or certificates; repeat to list several in order.
    #[arg(long = "secureboot-db")]
    db: Vec<PathBuf>,
    /// dbx: signature lists.
    #[arg(long = "secureboot-dbx")]
    dbx: Option<PathBuf>,
    /// SignatureOwner GUID for certificates given as PEM/DER (as they were enrolled).
    #[arg(long = "secureboot-owner")]
    owner: Option<String>,
}

impl SecureBootArgs {
    fn files(&self) -> Result<bootchain::firmware::SecureBootFiles> {
        let mut f =
            bootchain::firmware::SecureBootFiles::new(self.secureboot.as_deref() == Some("on"));
        f.pk = self.pk.clone();
        f.kek = self.kek.clone();
        f.db = self.db.clone();
        f.dbx = self.dbx.clone();
        f.owner = self.owner.as_deref().map(str::parse).transpose()?;
        Ok(f)
    }

    fn db_content(&self) -> Result<Option<Vec<u8>>> {
        self.files()?.db_content().map_err(owner_hint)
    }

    fn state(&self) -> Result<bootchain::firmware::SecureBootState> {
        self.files()?.state().map_err(owner_hint)
    }
}

/// Name the flag that supplies what the library says is missing.
fn owner_hint(e: bootchain::firmware::VariableFileError) -> anyhow::Error {
    let hint = matches!(e, bootchain::firmware::VariableFileError::NeedsOwner { .. });
    let e = anyhow::Error::from(e);
    if hint {
        e.context("give --secureboot-owner GUID for certificates given as PEM/DER")
    } else {
        e
    }
}

#[derive(Subcommand)]
enum EventlogCmd {
    /// Print every event: PCR, type, digests, decoded data, data check.
    Show {
        /// The binary log (e.g. /sys/kernel/security/tpm0/binary_bios_measurements).
        log: PathBuf,
        /// The log is a TDX CCEL (/sys/firmware/acpi/tables/data/CCEL): the index column is
        /// the CC MR index. Detected without the flag when the header record has index 1.
        #[arg(long)]
        ccel: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Replay the log: the PCR values it produces, per bank (for a CCEL: RTMR values).
    Replay {
        /// The binary log.
        log: PathBuf,
        /// The log is a TDX CCEL: print RTMR[0..3] (detected when the header has index 1).
        #[arg(long)]
        ccel: bool,
        /// JSON output ({"sha256": {"0": "hex", ...}}; for a CCEL {"rtmr0": "hex", ...}).
        #[arg(long)]
        json: bool,
    },
    /// Replay and compare with PCR values from a JSON file or a TPM; check event data.
    Verify {
        /// The binary log.
        log: PathBuf,
        /// The log is a TDX CCEL: compare RTMRs with --pcrs (detected when the header has
        /// index 1).
        #[arg(long)]
        ccel: bool,
        /// PCR values as JSON ({"sha256": {"0": "hex", ...}}); for a CCEL, RTMR values
        /// ({"rtmr0": "hex", ...}, as `eventlog replay --json` prints them).
        #[arg(long, alias = "rtmrs", conflicts_with = "tcti")]
        pcrs: Option<PathBuf>,
        /// Read PCRs from this TPM (TCTI, e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321).
        #[arg(long, env = "BOOTCHAIN_TCTI")]
        tcti: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Predict the PCRs of the next boot: this log with a new UKI (and optionally new db/dbx).
    PredictNext {
        /// The current boot's binary log.
        log: PathBuf,
        /// The UKI the next boot will run.
        #[arg(long)]
        uki: PathBuf,
        /// New db/dbx contents (the rest of --secureboot-* is taken from the log).
        #[command(flatten)]
        sb: SecureBootArgs,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AttestCmd {
    /// Verify a TPM quote (as `tpm2_quote -m/-s` write it): the AK's signature, magic and
    /// type, the nonce, the event log's replay against the quoted PCR digest, and with a
    /// reference the replayed values against it (naming the first event that differs).
    Verify(Box<AttestVerifyArgs>),
}

#[derive(Args)]
struct AttestVerifyArgs {
    /// The quoted TPMS_ATTEST (`tpm2_quote -m`).
    #[arg(long)]
    quote: PathBuf,
    /// Its TPMT_SIGNATURE (`tpm2_quote -s`).
    #[arg(long)]
    signature: PathBuf,
    /// The AK's public key: TPM2B_PUBLIC (`tpm2_createak -u`, `tpm2_readpublic -o`) or PEM.
    #[arg(long = "ak-public")]
    ak_public: PathBuf,
    /// The nonce the quote must carry: hex, or a file holding it (raw bytes).
    #[arg(long)]
    nonce: String,
    /// The machine's event log (binary_bios_measurements).
    #[arg(long)]
    eventlog: PathBuf,
    /// Reference PCR values as JSON ({"sha256": {"7": "hex"}}, `eventlog replay --json`, or
    /// `pcr predict --json`, whose events locate a difference).
    #[arg(long, conflicts_with_all = ["reference_log", "uki"])]
    reference: Option<PathBuf>,
    /// A known-good boot's event log as the reference (values and events).
    #[arg(long = "reference-log", conflicts_with = "uki")]
    reference_log: Option<PathBuf>,
    /// Predict the reference for this UKI (PCR 11 right after the stub; with --secureboot
    /// also PCR 4, 7 and 9), as `pcr predict` does.
    #[arg(long)]
    uki: Option<PathBuf>,
    /// With --uki: images the firmware loads before the UKI, in order (PCR 4).
    #[arg(long = "boot-chain", requires = "uki")]
    boot_chain: Vec<PathBuf>,
    /// With --uki: the Secure Boot state (PCR 4, 7, 9 are predicted with --secureboot).
    #[command(flatten)]
    sb: SecureBootArgs,
    /// JSON output on success.
    #[arg(long)]
    json: bool,
}

/// The UKI parts systemd-measure takes (each a file).
#[derive(Args)]
struct PartArgs {
    /// Kernel image (.linux).
    #[arg(long)]
    linux: Option<PathBuf>,
    /// os-release (.osrel).
    #[arg(long)]
    osrel: Option<PathBuf>,
    /// Command line file (.cmdline).
    #[arg(long)]
    cmdline: Option<PathBuf>,
    /// Initrd (.initrd).
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Microcode initrd (.ucode).
    #[arg(long)]
    ucode: Option<PathBuf>,
    /// Splash (.splash).
    #[arg(long)]
    splash: Option<PathBuf>,
    /// Devicetree (.dtb).
    #[arg(long)]
    dtb: Option<PathBuf>,
    /// uname file (.uname).
    #[arg(long)]
    uname: Option<PathBuf>,
    /// SBAT file (.sbat).
    #[arg(long)]
    sbat: Option<PathBuf>,
    /// PCR public key (.pcrpkey).
    #[arg(long)]
    pcrpkey: Option<PathBuf>,
    /// Profile metadata (.profile, systemd 257).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Devicetree picked by hardware ID (.dtbauto, systemd 257).
    #[arg(long)]
    dtbauto: Option<PathBuf>,
    /// Hardware IDs (.hwids, systemd 257).
    #[arg(long)]
    hwids: Option<PathBuf>,
    /// Firmware image blob (.efifw, systemd-measure 258).
    #[arg(long)]
    efifw: Option<PathBuf>,
    /// PCR bank (repeatable; default sha1, sha256, sha384, sha512).
    #[arg(long = "bank")]
    banks: Vec<HashAlg>,
    /// Boot phase path such as enter-initrd:leave-initrd (repeatable; "" = none).
    #[arg(long = "phase")]
    phases: Vec<String>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum JsonMode {
    Pretty,
    Short,
    Off,
}

#[derive(Subcommand)]
enum MeasureCmd {
    /// Calculate expected PCR 11 values (like `systemd-measure calculate`).
    Calculate {
        #[command(flatten)]
        parts: PartArgs,
        /// JSON output.
        #[arg(long, value_enum, default_value = "off", num_args = 0..=1, default_missing_value = "pretty", require_equals = true)]
        json: JsonMode,
    },
    /// Calculate and sign PCR 11 policies (like `systemd-measure sign`), without a TPM.
    Sign {
        #[command(flatten)]
        parts: PartArgs,
        /// RSA private key: a PEM file or a pkcs11: URI.
        #[arg(long = "private-key", required_unless_present = "prepare")]
        private_key: Option<PathBuf>,
        /// Print what an offline signer signs instead (`policy-digest`: each policy's `tbs`,
        /// with `pkfp` of --public-key); attach the signed JSON with `uki build --join-pcrsig`.
        #[arg(long, conflicts_with = "private_key")]
        prepare: bool,
        /// Public key (PEM) to check against the private key.
        #[arg(long = "public-key")]
        public_key: Option<PathBuf>,
        /// Merge into this existing .pcrsig JSON.
        #[arg(long)]
        append: Option<PathBuf>,
        #[command(flatten)]
        epoch: policy_cmd::EpochArgs,
        /// JSON output (short unless stdout is a terminal).
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "pretty", require_equals = true)]
        json: Option<JsonMode>,
    },
    /// The PCR 11 policies `sign` would sign, unsigned (like `systemd-measure policy-digest`,
    /// systemd 258): `pol`, and `tbs`, the bytes an offline signer hashes (SHA-256) and signs.
    PolicyDigest {
        #[command(flatten)]
        parts: PartArgs,
        /// Public key (PEM) whose fingerprint goes in `pkfp`.
        #[arg(long = "public-key", conflicts_with = "certificate")]
        public_key: Option<PathBuf>,
        /// Certificate whose public key goes in `pkfp`.
        #[arg(long)]
        certificate: Option<PathBuf>,
        /// Merge into this existing JSON.
        #[arg(long)]
        append: Option<PathBuf>,
        #[command(flatten)]
        epoch: policy_cmd::EpochArgs,
        /// JSON output (short unless stdout is a terminal).
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "pretty", require_equals = true)]
        json: Option<JsonMode>,
    },
}

/// What the stub finds on the ESP next to a UKI: addons and sidecar files (PCR 12 and 13).
#[derive(Args)]
pub(crate) struct EspArgs {
    /// A cmdline addon the stub loads from the UKI's <uki>.extra.d/ (repeatable): PCR 12.
    #[arg(long)]
    addon: Vec<PathBuf>,
    /// A cmdline addon from the ESP's /loader/addons/ (repeatable): PCR 12.
    #[arg(long = "global-addon")]
    global_addon: Vec<PathBuf>,
    /// A credential (*.cred) in the UKI's <uki>.extra.d/ (repeatable): PCR 12.
    #[arg(long)]
    credential: Vec<PathBuf>,
    /// A credential (*.cred) in the ESP's /loader/credentials/ (repeatable): PCR 12.
    #[arg(long = "global-credential")]
    global_credential: Vec<PathBuf>,
    /// A system extension (*.raw) in the UKI's <uki>.extra.d/ (repeatable): PCR 13.
    #[arg(long)]
    sysext: Vec<PathBuf>,
    /// A configuration extension (*.confext.raw) in <uki>.extra.d/ (repeatable): PCR 12.
    #[arg(long)]
    confext: Vec<PathBuf>,
}

impl EspArgs {
    /// The files as the library takes them; `None` when none was given.
    pub(crate) fn addons(self) -> Option<bootchain::kernel_config::Addons> {
        let mut a = bootchain::kernel_config::Addons::new();
        a.per_uki = self.addon;
        a.global = self.global_addon;
        a.credentials = self.credential;
        a.global_credentials = self.global_credential;
        a.sysexts = self.sysext;
        a.confexts = self.confext;
        (!a.is_empty()).then_some(a)
    }
}

#[derive(Subcommand)]
enum PcrCmd {
    /// Predict PCR 11 for a UKI with the rules of the stub inside it.
    Predict {
        /// The UKI.
        #[arg(long)]
        uki: PathBuf,
        /// PCR bank (repeatable; default sha1, sha256, sha384, sha512).
        #[arg(long = "bank")]
        banks: Vec<HashAlg>,
        /// Boot phase path (repeatable; "" = right after the stub; default: systemd-measure's four).
        #[arg(long = "phase")]
        phases: Vec<String>,
        /// Use this stub version's rules instead of the one in .sdmagic.
        #[arg(long)]
        stub_version: Option<u32>,
        /// The profile the stub boots, of a multi-profile UKI (PCR 11; and PCR 12 when not 0).
        #[arg(long, default_value_t = 0)]
        profile: u32,
        /// Addons and sidecar files on the ESP (PCR 12 and 13).
        #[command(flatten)]
        esp: EspArgs,
        /// Images the firmware loads before the UKI (shim, boot loader), in order (PCR 4).
        #[arg(long = "boot-chain")]
        boot_chain: Vec<PathBuf>,
        /// Secure Boot state: with --secureboot, PCRs 4, 7 and 9 are predicted too.
        #[command(flatten)]
        sb: SecureBootArgs,
        /// Predict the Intel TDX registers instead: RTMR[1] for QEMU direct boot of the UKI
        /// and RTMR[2] as its stub (256 or newer) measures it, SHA-384 (MRTD and RTMR[0] are
        /// platform values, not predicted).
        #[arg(long, conflicts_with_all = ["boot_chain", "banks", "phases"])]
        tdx: bool,
        /// With --tdx: the guest has no vTPM, so the Linux EFI stub's load options and initrd
        /// events go to RTMR[2] as well.
        #[arg(long, requires = "tdx")]
        no_vtpm: bool,
        /// Print JSON: events, PCR 11 per phase, firmware PCRs, and "values" ({"bank":
        /// {"pcr": "hex"}}, what `seal --pcr-values` reads; PCR 11 only with one --phase).
        /// With --tdx: both registers' events and "values" ({"rtmr1": "hex", "rtmr2": "hex"},
        /// what `eventlog verify --pcrs` reads for a CCEL).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UkiCmd {
    /// Build a UKI from the systemd stub (options named as in `ukify build`).
    Build(Box<BuildArgs>),
    /// Show the sections, stub version, Authenticode hash and signatures of a UKI.
    Inspect {
        /// The UKI.
        file: PathBuf,
        /// Print JSON (stable shape, see README); with --format ukify, ukify's JSON.
        #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "pretty", require_equals = true)]
        json: Option<JsonMode>,
        /// Output shape: bootchain's, or exactly `ukify inspect`'s (systemd 257).
        #[arg(long, value_enum, default_value = "bootchain")]
        format: InspectFormat,
        /// NAME:text|binary[@FILE]: show this section (instead of ukify's default set) in
        /// this mode, and with @FILE write its bytes there (repeatable; --format ukify).
        #[arg(long = "section")]
        sections: Vec<String>,
        /// Show every section (--format ukify).
        #[arg(long)]
        all: bool,
    },
    /// Generate a Secure Boot key and certificate and/or PCR signing keys (as `ukify genkey`).
    Genkey(GenkeyArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum InspectFormat {
    Bootchain,
    Ukify,
}

#[derive(Args)]
struct GenkeyArgs {
    /// Secure Boot private key to create (PEM PKCS#1, mode 0600).
    #[arg(long = "secureboot-private-key", requires = "sb_cert")]
    sb_key: Option<PathBuf>,
    /// Self-signed Secure Boot certificate to create (PEM).
    #[arg(long = "secureboot-certificate", requires = "sb_key")]
    sb_cert: Option<PathBuf>,
    /// Validity of the certificate in days.
    #[arg(long = "secureboot-certificate-validity", default_value_t = bootchain::genkey::DEFAULT_VALIDITY_DAYS)]
    sb_days: u32,
    /// PCR signing private key to create (repeatable; PEM PKCS#1, mode 0600).
    #[arg(long = "pcr-private-key")]
    pcr_private_keys: Vec<PathBuf>,
    /// Public key of the PCR signing key in the same position (repeatable; PEM).
    #[arg(long = "pcr-public-key")]
    pcr_public_keys: Vec<PathBuf>,
}

/// `uki build`'s options; as with ukify (argparse), an option given twice takes the last value.
#[derive(Args, Debug)]
#[command(args_override_self = true)]
struct BuildArgs {
    /// A ukify.conf to read ([UKI] and [PCRSignature:NAME], as ukify 257). Without it the
    /// first ukify.conf in /etc/systemd, /run/systemd, /usr/local/lib/systemd or
    /// /usr/lib/systemd is read, as ukify does. Options given here win over the file, except
    /// Initrd= and DeviceTreeAuto=, which come first.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Print the options after the configuration file is applied, and exit (ukify --summary).
    #[arg(long)]
    summary: bool,
    /// The kernel image.
    #[arg(long)]
    linux: Option<PathBuf>,
    /// An initrd; repeat to concatenate several in order.
    #[arg(long)]
    initrd: Vec<PathBuf>,
    /// Kernel command line: TEXT or @FILE.
    #[arg(long)]
    cmdline: Option<String>,
    /// os-release: TEXT or @FILE (default: the host's /etc/os-release).
    #[arg(long = "os-release")]
    os_release: Option<String>,
    /// `uname -r` of the kernel (default: read from the kernel).
    #[arg(long)]
    uname: Option<String>,
    /// SBAT entries: TEXT or @FILE, merged with the stub's and the kernel's. Repeatable.
    #[arg(long)]
    sbat: Vec<String>,
    /// Boot splash image (BMP).
    #[arg(long)]
    splash: Option<PathBuf>,
    /// Devicetree blob.
    #[arg(long)]
    devicetree: Option<PathBuf>,
    /// PCR signing public key (PEM file) for the `.pcrpkey` section.
    #[arg(long)]
    pcrpkey: Option<PathBuf>,
    /// Extra section NAME:TEXT or NAME:@FILE. Repeatable.
    #[arg(long)]
    section: Vec<String>,
    /// The systemd stub (default: linuxx64.efi.stub with --linux, else the addon stub
    /// addonx64.efi.stub, as ukify).
    #[arg(long)]
    stub: Option<PathBuf>,
    /// Microcode initrd for the .ucode section.
    #[arg(long)]
    microcode: Option<PathBuf>,
    /// Devicetree the stub picks by hardware ID (.dtbauto). Repeatable.
    #[arg(long = "devicetree-auto")]
    devicetree_auto: Vec<PathBuf>,
    /// Directory of hwid descriptions (*.json with name, compatible, hwids; searched
    /// recursively) for the .hwids section, as ukify 257 --hwids.
    #[arg(long, value_name = "DIR")]
    hwids: Option<PathBuf>,
    /// Profile metadata for the .profile section: TEXT or @FILE. Alone it builds a profile PE
    /// to join; with --join-profile it is the base profile (default then: ID=main).
    #[arg(long)]
    profile: Option<String>,
    /// A profile PE (built with --profile) to add as the next profile. Repeatable.
    #[arg(long = "join-profile")]
    join_profile: Vec<PathBuf>,
    /// EFI architecture of the stub (ukify --efi-arch); only x64 is supported, which selects
    /// the default stubs.
    #[arg(long = "efi-arch", value_parser = ["x64"])]
    efi_arch: Option<String>,
    /// ukify's choice of signing program; bootchain signs itself, with output equal to
    /// sbsign's (sbsign, systemd-sbsign). pesign is not offered.
    #[arg(long, value_parser = ["sbsign", "systemd-sbsign"])]
    signtool: Option<String>,
    /// ukify's directories to search for helper programs: accepted and unused (bootchain
    /// runs none).
    #[arg(long)]
    tools: Vec<PathBuf>,
    /// Sign the embedded kernel with the Secure Boot key too (default: when it is unsigned).
    #[arg(long = "sign-kernel", overrides_with = "no_sign_kernel")]
    sign_kernel: bool,
    /// Never sign the embedded kernel.
    #[arg(long = "no-sign-kernel", overrides_with = "sign_kernel")]
    no_sign_kernel: bool,
    /// Secure Boot signing key: PEM or DER file, or a pkcs11: URI.
    #[arg(long = "secureboot-private-key")]
    secureboot_private_key: Option<PathBuf>,
    /// Secure Boot certificate: PEM or DER file, or a pkcs11: URI (with a pkcs11: key,
    /// default: the token's certificate with the key's id).
    #[arg(long = "secureboot-certificate", requires = "secureboot_private_key")]
    secureboot_certificate: Option<PathBuf>,
    /// Add a signingTime attribute (off by default: reproducible signatures).
    #[arg(long)]
    signing_time: bool,
    /// RSA key to sign the PCR 11 policy with (embeds .pcrsig, and .pcrpkey with one key): a
    /// PEM file or a pkcs11: URI.
    /// Repeatable: each is one signing group, paired with the --pcr-public-key and --phases
    /// of the same position, as ukify's.
    #[arg(long = "pcr-private-key")]
    pcr_private_key: Vec<PathBuf>,
    /// Public key of the same group (with one group, .pcrpkey; default: derived from the
    /// private key).
    #[arg(long = "pcr-public-key")]
    pcr_public_key: Vec<PathBuf>,
    /// Phase paths to sign for, comma or space separated; ":" is the phase right after the
    /// stub (default: ": enter-initrd", the initrd phases only, where disk keys are released;
    /// systemd-measure's default also signs the phases after the initrd). One per group;
    /// with --measure, all of them.
    #[arg(long)]
    phases: Vec<String>,
    /// Sign a PCR policy even though the UKI has no .cmdline (the stub would then accept an
    /// unmeasured command line from the boot loader).
    #[arg(long = "allow-unmeasured-cmdline")]
    allow_unmeasured_cmdline: bool,
    /// PCR banks to sign for, comma separated (default: sha256).
    #[arg(long = "pcr-banks")]
    pcr_banks: Option<String>,
    /// Certificate of the PCR key, in place of --pcr-public-key (ukify 258).
    #[arg(long = "pcr-certificate", conflicts_with = "pcr_public_key")]
    pcr_certificate: Vec<PathBuf>,
    /// Embed the PCR 11 policies unsigned (room left for the signatures) and print them, for
    /// offline signing; needs one --pcr-public-key or --pcr-certificate (ukify 258).
    #[arg(long = "policy-digest", conflicts_with = "pcr_private_key")]
    policy_digest: bool,
    #[command(flatten)]
    epoch: policy_cmd::EpochArgs,
    /// A UKI built with --policy-digest to attach --pcrsig to (ukify 258); the signatures are
    /// checked against its predicted PCR 11 policies and its .pcrpkey first.
    #[arg(long = "join-pcrsig", requires = "pcrsig")]
    join_pcrsig: Option<PathBuf>,
    /// The signed PCR policy JSON for --join-pcrsig: TEXT or @FILE.
    #[arg(long, requires = "join_pcrsig")]
    pcrsig: Option<String>,
    /// Print PCR 11 as the stub will measure the result, like `systemd-measure calculate`
    /// (ukify --measure), from the digests the build computes anyway: for --phases (default:
    /// systemd-measure's four phases) and --pcr-banks.
    #[arg(long, overrides_with = "no_measure")]
    measure: bool,
    /// Do not print PCR 11 (ukify --no-measure; the default).
    #[arg(long = "no-measure", overrides_with = "measure")]
    no_measure: bool,
    /// Output file (default, as ukify: the kernel's file name with .efi when signing, else
    /// .unsigned.efi, in the working directory).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Print the build report as JSON (pretty, short, or off; ukify 257 accepts and ignores
    /// --json for build).
    #[arg(long, value_enum, num_args = 0..=1, default_missing_value = "pretty", require_equals = true)]
    json: Option<JsonMode>,
    /// --json=pretty.
    #[arg(short = 'j')]
    j: bool,
    /// ukify's OpenSSL engine for signing keys: only `pkcs11` (keys are then pkcs11: URIs,
    /// opened without OpenSSL).
    #[arg(long = "signing-engine", hide = true)]
    signing_engine: Option<String>,
    /// ukify's OpenSSL provider for signing keys: only `pkcs11`, as --signing-engine.
    #[arg(long = "signing-provider", hide = true)]
    signing_provider: Option<String>,
    /// ukify's OpenSSL provider for certificates: only `pkcs11` (the certificate is then a
    /// pkcs11: URI).
    #[arg(long = "certificate-provider", hide = true)]
    certificate_provider: Option<String>,
    /// pesign's certificate nickname: not supported (pesign is not offered).
    #[arg(long = "secureboot-certificate-name", hide = true)]
    sb_cert_name: Option<String>,
    /// pesign's NSS database directory: accepted and unused (pesign is not offered).
    #[arg(long = "secureboot-certificate-dir", hide = true)]
    sb_cert_dir: Option<PathBuf>,
    /// Certificate validity for genkey: accepted and unused by build, as in ukify.
    #[arg(long = "secureboot-certificate-validity", hide = true)]
    sb_cert_validity: Option<u32>,
    /// ukify's defaults for a PCR signing group without --phases/--pcr-banks: systemd-measure's
    /// four phases (after the initrd too) in its four banks. Set by `bootchain ukify`.
    #[arg(long = "ukify-defaults", hide = true)]
    ukify_defaults: bool,
}

#[derive(Subcommand)]
enum PeCmd {
    /// Print the Authenticode hash of a PE image (what firmware measures into PCR 4).
    Hash {
        /// The image.
        file: PathBuf,
        /// Digest algorithm.
        #[arg(long, default_value = "sha256")]
        alg: HashAlg,
    },
    /// Sign a PE image for Secure Boot (sbsign-compatible flags), with a key file or a
    /// PKCS#11 key, or in two steps for a key on another machine (--prepare, then
    /// --signed-data-signature).
    Sign {
        /// The image.
        file: PathBuf,
        /// Private key: a PEM or DER file, or an RFC 7512 pkcs11: URI.
        #[arg(long, required_unless_present_any = ["prepare", "prepare_offline_signing", "signed_data_signature"])]
        key: Option<String>,
        /// Certificate: a PEM or DER file, or a pkcs11: URI (default with a pkcs11: key: the
        /// token's certificate with the key's id).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Output (default: FILE.signed, or FILE.pk7 with --detached).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Write a detached PKCS#7 signature instead of a signed image.
        #[arg(long)]
        detached: bool,
        /// Add a signingTime attribute: now, or =SECONDS since the epoch (needed to prepare and
        /// attach an offline signature with a signing time).
        #[arg(long, num_args = 0..=1, default_missing_value = "now", require_equals = true)]
        signing_time: Option<String>,
        /// Offline signing, step 1: write the bytes to sign (the DER signed attributes) to
        /// OUT; sign them elsewhere with `openssl dgst -sha256 -sign KEY -out SIG OUT`.
        #[arg(long, value_name = "OUT", conflicts_with_all = ["key", "signed_data_signature", "detached"])]
        prepare: Option<PathBuf>,
        /// As --prepare, writing to --output (systemd-sbsign 258's spelling).
        #[arg(long, requires = "output", conflicts_with_all = ["key", "signed_data_signature", "detached", "prepare"])]
        prepare_offline_signing: bool,
        /// Offline signing, step 2: attach this signature (RSA PKCS#1 v1.5, or DER ECDSA) over
        /// the prepared bytes, made by the key of --cert.
        #[arg(long, value_name = "SIG", requires = "cert", conflicts_with_all = ["key", "detached"])]
        signed_data_signature: Option<PathBuf>,
        /// The prepared bytes the signature was made over; checked against this image.
        #[arg(long, value_name = "DATA", requires = "signed_data_signature")]
        signed_data: Option<PathBuf>,
    },
    /// Verify the signatures of a PE image (sbverify-compatible flags).
    Verify {
        /// The image.
        file: PathBuf,
        /// Trusted certificate: a signature must chain to it.
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Verify this detached PKCS#7 signature instead of the embedded ones.
        #[arg(long)]
        detached: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Exit status after stdout was closed under us (`bootchain … | head`): what a shell reports
/// for coreutils, which die of SIGPIPE (128 + 13). Rust ignores SIGPIPE, so the write fails
/// with EPIPE instead, and `outln!` would panic.
const EXIT_BROKEN_PIPE: u8 = 141;

/// Write to stdout. A reader that went away (EPIPE) ends the process quietly, like coreutils;
/// any other write error ends it with a message.
fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(i32::from(EXIT_BROKEN_PIPE));
        }
        eprintln!("bootchain: error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

fn main() -> ExitCode {
    // Silence tpm2-tss's own error printing (expected failures such as a policy that does not
    // match would print ESYS errors); done here, before any thread exists, not in the library.
    if bootchain::tpm::quiet_tss_log() {
        std::env::set_var("TSS2_LOG", bootchain::tpm::QUIET_TSS_LOG);
    }
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bootchain: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn sign_opts(signing_time: bool) -> SignOptions {
    SignOptions {
        signing_time: signing_time.then(std::time::SystemTime::now),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Ukify { args } => ukify_cmd(args),
        Cmd::Generate(g) => generate::run(g),
        Cmd::Uki(UkiCmd::Build(a)) => uki_build(*a),
        Cmd::Uki(UkiCmd::Inspect {
            file,
            json,
            format: InspectFormat::Ukify,
            sections,
            all,
        }) => ukify_inspect(&file, json.unwrap_or(JsonMode::Off), &sections, all),
        Cmd::Uki(UkiCmd::Inspect {
            file,
            json,
            sections,
            all,
            ..
        }) => {
            if all || !sections.is_empty() {
                bail!("--section and --all need --format ukify");
            }
            let info = uki::inspect(&file)?;
            match json {
                None | Some(JsonMode::Off) => print_inspect(&info),
                Some(JsonMode::Pretty) => outln!("{}", serde_json::to_string_pretty(&info)?),
                Some(JsonMode::Short) => outln!("{}", serde_json::to_string(&info)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Uki(UkiCmd::Genkey(a)) => genkey(a),
        Cmd::Measure(MeasureCmd::Calculate { parts, json }) => {
            let pred = predict_parts(&parts)?;
            match json {
                JsonMode::Off => print_calculate(&pred),
                JsonMode::Short => outln!("{}", bootchain::measure::calculate_json(&pred)),
                JsonMode::Pretty => out!(
                    "{}",
                    bootchain::measure::systemd_pretty_json(&bootchain::measure::calculate_json(
                        &pred
                    ))
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Measure(MeasureCmd::Sign {
            parts,
            private_key: Some(private_key),
            public_key,
            append,
            epoch,
            json,
            prepare: false,
        }) => {
            let key = signing::pcr_signer(&private_key, public_key.as_deref())?;
            let pred = predict_parts(&parts)?;
            let sigs =
                bootchain::measure::sign_policies_bound(&pred, &*key, epoch.binding()?.as_ref())?;
            print_merged_policies(sigs, append.as_deref(), json)
        }
        Cmd::Measure(MeasureCmd::Sign {
            parts,
            public_key,
            append,
            epoch,
            json,
            ..
        }) => policy_digest_cmd(
            &parts,
            public_key.as_deref(),
            append.as_deref(),
            json,
            epoch.binding()?.as_ref(),
        ),
        Cmd::Measure(MeasureCmd::PolicyDigest {
            parts,
            public_key,
            certificate,
            append,
            epoch,
            json,
        }) => policy_digest_cmd(
            &parts,
            public_key.or(certificate).as_deref(),
            append.as_deref(),
            json,
            epoch.binding()?.as_ref(),
        ),
        Cmd::Pcr(PcrCmd::Predict {
            uki,
            banks,
            phases,
            stub_version,
            profile,
            esp,
            boot_chain,
            sb,
            tdx,
            no_vtpm,
            json,
        }) => {
            let addons = esp.addons();
            if tdx {
                let mut opts = bootchain::tdx::TdxOptions::default();
                opts.stub_version = stub_version;
                opts.profile = profile;
                opts.addons = addons.as_ref();
                opts.linux_stub_events = no_vtpm;
                let p = bootchain::tdx::predict_tdx_uki(&uki, &opts)
                    .with_context(|| format!("predicting the RTMRs of {}", uki.display()))?;
                if json {
                    outln!("{}", serde_json::to_string_pretty(&p.to_json())?);
                } else {
                    if p.stub_version < bootchain::tdx::FIRST_CC_STUB {
                        eprintln!(
                            "bootchain: note: systemd-stub {} measures nothing into RTMRs (only {} and newer do)",
                            p.stub_version,
                            bootchain::tdx::FIRST_CC_STUB
                        );
                    }
                    for r in [&p.rtmr1, &p.rtmr2] {
                        for e in &r.events {
                            let d = e
                                .digests
                                .values()
                                .map(|d| d.to_hex())
                                .collect::<Vec<_>>()
                                .join(" ");
                            outln!(
                                "{} PCR {:>2} {:<34} {:<42} sha384:{d}",
                                r.rtmr,
                                e.pcr,
                                e.event_type.name(),
                                e.description
                            );
                        }
                    }
                    for (r, v) in p.values().iter() {
                        outln!("{r}={v}");
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            let banks = if banks.is_empty() {
                HashAlg::ALL.to_vec()
            } else {
                banks
            };
            let phases = bootchain::measure::phase_list(&phases)?;
            if sb.secureboot.is_none() && !boot_chain.is_empty() {
                bail!("--boot-chain needs --secureboot on|off");
            }
            let state = sb.secureboot.is_some().then(|| sb.state()).transpose()?;
            let boot = bootchain::firmware::predict_boot(
                &uki,
                stub_version,
                &banks,
                &phases,
                profile,
                addons.as_ref(),
                state.as_ref().map(|s| (s, boot_chain.as_slice())),
            )
            .with_context(|| format!("predicting {}", uki.display()))?;
            let (pred, firmware) = (&boot.pcr11, &boot.firmware);
            if json {
                outln!("{}", serde_json::to_string_pretty(&boot.to_json())?);
            } else {
                for p in firmware {
                    print_events(&p.events);
                }
                print_events(&pred.events);
                for p in boot.kernel_config.iter().chain(&boot.sysexts) {
                    print_events(&p.events);
                }
                for p in boot.stub_pcrs() {
                    for (bank, v) in &p.values {
                        outln!("{}:{bank}={v}", p.pcr);
                    }
                }
                for ph in &pred.phases {
                    for v in &ph.values {
                        outln!(
                            "11:{}={}{}",
                            v.alg(),
                            v,
                            if ph.phase.is_after_stub() {
                                String::new()
                            } else {
                                format!("  # phase {}", ph.phase)
                            }
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Eventlog(cmd) => eventlog_cmd(cmd),
        Cmd::Seal(a) => tpm_cmd::seal(a),
        Cmd::Unseal(a) => tpm_cmd::unseal(a),
        Cmd::Luks(c) => tpm_cmd::luks(c),
        Cmd::Tpm(c) => tpm_cmd::tpm(c),
        Cmd::Policy(c) => policy_cmd::policy(c),
        Cmd::Snp(c) => snp_cmd::snp(c),
        Cmd::ReferenceValues(a) => refvals_cmd::reference_values(*a),
        Cmd::Attest(AttestCmd::Verify(a)) => attest_verify(*a),
        Cmd::Pe(PeCmd::Hash { file, alg }) => {
            let mut f = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let d = bootchain::authenticode::image_digests(&mut f, &[alg])
                .with_context(|| format!("hashing {}", file.display()))?;
            for d in d {
                outln!("{d}  {}", file.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Pe(PeCmd::Sign {
            file,
            key,
            cert,
            output,
            detached,
            signing_time,
            prepare,
            prepare_offline_signing,
            signed_data_signature,
            signed_data,
        }) => {
            let preparing = prepare.is_some() || prepare_offline_signing;
            if (preparing || signed_data_signature.is_some())
                && signing_time.as_deref() == Some("now")
            {
                // The attach step rebuilds the signed attributes: both steps need the same time.
                bail!("offline signing needs --signing-time=SECONDS (the same in both steps), not now");
            }
            let opts = signing::sign_options(signing_time.as_deref())?;
            if let Some(out) = prepare.or(output.clone().filter(|_| prepare_offline_signing)) {
                let tbs = sign::prepare_signed_attributes(&file, &opts)?;
                bootchain::fsutil::write_atomic(&out, &tbs, 0o644)
                    .with_context(|| format!("writing {}", out.display()))?;
                eprintln!(
                    "wrote the signed attributes to sign ({} bytes) to {}",
                    tbs.len(),
                    out.display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let out = output
                .unwrap_or_else(|| with_suffix(&file, if detached { ".pk7" } else { ".signed" }));
            if let Some(sig) = signed_data_signature {
                let c = signing::certificate(cert.as_deref().context("--cert is required")?)?;
                let read = |p: &std::path::Path| {
                    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
                };
                let data = signed_data.as_deref().map(read).transpose()?;
                let d =
                    sign::attach_signature(&file, &out, &c, read(&sig)?, data.as_deref(), &opts)?;
                eprintln!("signed {} (Authenticode sha256 {d})", out.display());
                return Ok(ExitCode::SUCCESS);
            }
            let (k, c) = signing::sb_signer(
                key.as_deref().context("--key is required")?.as_ref(),
                cert.as_deref(),
            )?;
            if detached {
                let sig = sign::detached_signature(&file, &*k, &c, &opts)?;
                bootchain::fsutil::write_atomic(&out, &sig, 0o644)
                    .with_context(|| format!("writing {}", out.display()))?;
                eprintln!("wrote detached signature {}", out.display());
            } else {
                let d = sign::sign_file(&file, &out, &*k, &c, &opts)?;
                eprintln!("signed {} (Authenticode sha256 {d})", out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Pe(PeCmd::Verify {
            file,
            cert,
            detached,
            json,
        }) => {
            let anchor = cert.as_deref().map(keys::load_certificate).transpose()?;
            let det = detached
                .as_deref()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                .transpose()?;
            let report = sign::verify_file(&file, det.as_deref(), anchor.as_ref())?;
            let passed = report.passed(anchor.is_some());
            if json {
                outln!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                outln!("image sha256: {}", report.image_sha256);
                for s in &report.signers {
                    outln!(
                        "signature {}: {} — signer {} (issuer {}, serial {})",
                        s.index,
                        if s.ok() {
                            "OK"
                        } else if s.image_digest_matches && s.signature_valid {
                            "valid, but not trusted by --cert"
                        } else {
                            "FAILED"
                        },
                        s.subject.as_deref().unwrap_or("?"),
                        s.issuer,
                        s.serial
                    );
                    if let Some(p) = &s.problem {
                        outln!("  {p}");
                    }
                }
                outln!(
                    "{}",
                    if passed {
                        "Signature verification OK"
                    } else {
                        "Signature verification failed"
                    }
                );
            }
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn with_suffix(p: &std::path::Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// A ukify.conf applied to the command line's options with ukify 257's rules (see
/// `bootchain::uki::UkifyConfig`): the command line wins, lists from the file come first,
/// `[PCRSignature:NAME]` groups follow the command line's. Returns the file's groups.
fn apply_ukify_config(a: &mut BuildArgs) -> Result<Vec<uki::PcrSignatureGroup>> {
    let dirs: Vec<&std::path::Path> = uki::DEFAULT_CONFIG_DIRS
        .iter()
        .map(std::path::Path::new)
        .collect();
    let Some(path) = uki::UkifyConfig::locate(a.config.as_deref(), &dirs) else {
        return Ok(Vec::new());
    };
    if a.config.is_some() {
        eprintln!("Using config file: {}", path.display());
    } else {
        eprintln!("Using found config file: {}", path.display());
    }
    let c = uki::UkifyConfig::from_file(&path)?;
    for (section, key) in &c.unknown {
        eprintln!("Unknown config setting [{section}] {key}=");
    }
    fn unset<T>(cli: &mut Option<T>, file: Option<T>) {
        if cli.is_none() {
            *cli = file;
        }
    }
    unset(&mut a.linux, c.linux);
    unset(&mut a.os_release, c.os_release);
    unset(&mut a.cmdline, c.cmdline);
    unset(&mut a.microcode, c.microcode);
    unset(&mut a.splash, c.splash);
    unset(&mut a.devicetree, c.devicetree);
    unset(&mut a.hwids, c.hwids);
    unset(&mut a.uname, c.uname);
    unset(&mut a.pcrpkey, c.pcrpkey);
    unset(&mut a.profile, c.profile);
    unset(&mut a.efi_arch, c.efi_arch);
    unset(&mut a.stub, c.stub);
    unset(&mut a.pcr_banks, c.pcr_banks);
    unset(&mut a.signing_engine, c.signing_engine);
    unset(&mut a.signing_provider, c.signing_provider);
    unset(&mut a.certificate_provider, c.certificate_provider);
    unset(&mut a.signtool, c.signtool);
    unset(&mut a.secureboot_private_key, c.sb_key);
    unset(&mut a.secureboot_certificate, c.sb_cert);
    unset(&mut a.sb_cert_name, c.sb_cert_name);
    if let (false, false, Some(sign)) = (a.sign_kernel, a.no_sign_kernel, c.sign_kernel) {
        a.sign_kernel = sign;
        a.no_sign_kernel = !sign;
    }
    // ukify's config_set: the file wins for these two.
    if c.sb_cert_dir.is_some() {
        a.sb_cert_dir = c.sb_cert_dir;
    }
    if c.sb_cert_validity.is_some() {
        a.sb_cert_validity = c.sb_cert_validity;
    }
    // ukify's config_list_prepend.
    a.initrd.splice(0..0, c.initrd);
    a.devicetree_auto.splice(0..0, c.devicetree_auto);
    // SBAT= is read and ignored, as ukify 257 ignores it (its --sbat default is [], not None).
    if c.sbat.is_some() {
        eprintln!(
            "bootchain: note: SBAT= in {} is ignored, as ukify 257 ignores it; use --sbat",
            path.display()
        );
    }
    Ok(c.pcr_groups)
}

/// One PCR signing group after the command line and the file are merged.
struct PcrGroup {
    private_key: PathBuf,
    public_key: Option<PathBuf>,
    phases: Option<String>,
}

/// ukify's pairing: the i-th `--pcr-private-key` with the i-th `--pcr-public-key` and
/// `--phases`, then the file's groups in order (ukify's config_set_group, which pads the
/// lists with None for a group that leaves a key out).
fn pcr_groups(a: &BuildArgs, file: &[uki::PcrSignatureGroup]) -> Result<Vec<PcrGroup>> {
    fn put<T: Clone>(v: &mut Vec<Option<T>>, idx: usize, value: &Option<T>) {
        if let Some(x) = value {
            if v.len() < idx {
                v.resize(idx, None);
            }
            v.push(Some(x.clone()));
        }
    }
    let n = a.pcr_private_key.len();
    let mut privs: Vec<Option<PathBuf>> = a.pcr_private_key.iter().cloned().map(Some).collect();
    let mut pubs: Vec<Option<PathBuf>> = a.pcr_public_key.iter().cloned().map(Some).collect();
    let mut phases: Vec<Option<String>> = a.phases.iter().cloned().map(Some).collect();
    for (j, g) in file.iter().enumerate() {
        put(&mut privs, n + j, &g.private_key);
        put(&mut pubs, n + j, &g.public_key);
        put(&mut phases, n + j, &g.phases);
    }
    if !pubs.is_empty() && !privs.is_empty() && pubs.len() != privs.len() {
        bail!("--pcr-public-key= specifications must match --pcr-private-key=");
    }
    if !phases.is_empty() && !privs.is_empty() && phases.len() != privs.len() {
        bail!("--phases= specifications must match --pcr-private-key=");
    }
    privs
        .into_iter()
        .enumerate()
        .map(|(i, private_key)| {
            let Some(private_key) = private_key else {
                let name = i
                    .checked_sub(n)
                    .and_then(|j| file.get(j))
                    .map_or("?", |g| g.name.as_str());
                bail!("[PCRSignature:{name}] has no PCRPrivateKey=");
            };
            Ok(PcrGroup {
                private_key,
                public_key: pubs.get(i).cloned().flatten(),
                phases: phases.get(i).cloned().flatten(),
            })
        })
        .collect()
}

fn uki_build(mut a: BuildArgs) -> Result<ExitCode> {
    if let (Some(uki), Some(pcrsig)) = (&a.join_pcrsig, &a.pcrsig) {
        // As ukify: the joined UKI is the whole input.
        if a.linux.is_some()
            || !a.initrd.is_empty()
            || a.cmdline.is_some()
            || a.stub.is_some()
            || !a.pcr_private_key.is_empty()
            || a.policy_digest
            || !a.join_profile.is_empty()
            || a.profile.is_some()
            || !a.section.is_empty()
            || a.os_release.is_some()
        {
            bail!("--pcrsig and --join-pcrsig cannot be used with other sections or PCR keys");
        }
        return uki_join(&a, uki, pcrsig);
    }
    let file_groups = apply_ukify_config(&mut a)?;
    if a.summary {
        // Key options may be pkcs11: URIs with a pin-value: never print it.
        a.secureboot_private_key = a.secureboot_private_key.as_deref().map(signing::shown);
        a.secureboot_certificate = a.secureboot_certificate.as_deref().map(signing::shown);
        for k in &mut a.pcr_private_key {
            *k = signing::shown(k);
        }
        outln!("{a:#?}");
        return Ok(ExitCode::SUCCESS);
    }
    signing::check_ukify_sources(&a)?;
    for (set, opt) in [(
        a.sb_cert_name.is_some(),
        "--secureboot-certificate-name/SecureBootCertificateName= (pesign)",
    )] {
        if set {
            bail!("{opt} is not supported: bootchain signs with key and certificate files (--secureboot-private-key, --secureboot-certificate)");
        }
    }
    match a.signtool.as_deref() {
        None | Some("sbsign" | "systemd-sbsign") => {}
        Some(t) => bail!("SecureBootSigningTool={t} is not supported: bootchain signs as sbsign does (sbsign, systemd-sbsign)"),
    }
    match a.efi_arch.as_deref() {
        None | Some("x64") => {}
        Some(arch) => bail!("EFIArch={arch} is not supported: only x64"),
    }
    if a.secureboot_private_key.is_some() != a.secureboot_certificate.is_some()
        && !a
            .secureboot_private_key
            .as_deref()
            .is_some_and(signing::is_pkcs11)
    {
        bail!("--secureboot-private-key= and --secureboot-certificate= must be specified together");
    }
    let output = match (&a.output, &a.linux) {
        (Some(o), _) => o.clone(),
        (None, None) => bail!("--output= must be specified when building a PE addon"),
        (None, Some(linux)) => {
            let name = linux.file_name().context("--linux has no file name")?;
            let suffix = if a.secureboot_private_key.is_some() {
                ".efi"
            } else {
                ".unsigned.efi"
            };
            with_suffix(std::path::Path::new(name), suffix)
        }
    };
    let json = match (a.json, a.j) {
        (Some(m), _) => m,
        (None, true) => JsonMode::Pretty,
        (None, false) => JsonMode::Off,
    };
    let groups = pcr_groups(&a, &file_groups)?;
    if !a.pcr_public_key.is_empty() && groups.is_empty() && !a.policy_digest {
        bail!("--pcr-public-key needs --pcr-private-key (or --policy-digest)");
    }
    let mut b = UkiBuilder::new();
    if let Some(nv) = a.epoch.binding()? {
        b = b.bind_pcr_policies(nv);
    }
    if let Some(t) = bootchain::uki::source_date_epoch()? {
        b = b.timestamp(t);
    }
    if let Some(stub) = &a.stub {
        if !stub.exists() {
            bail!("stub {} does not exist", stub.display());
        }
        b = b.stub(stub);
    }
    if let Some(m) = &a.microcode {
        b = b.microcode(m);
    }
    if a.sign_kernel || a.no_sign_kernel {
        b = b.sign_kernel(a.sign_kernel);
    }
    for d in &a.devicetree_auto {
        b = b.devicetree_auto(d);
    }
    if let Some(d) = &a.hwids {
        b = b.hwids_dir(d);
    }
    if let Some(p) = &a.profile {
        b = b.profile(SectionContent::text_or_file(p));
    }
    for p in &a.join_profile {
        b = b.join_profile(p);
    }
    if let Some(l) = &a.linux {
        b = b.linux(l);
    }
    for i in &a.initrd {
        b = b.initrd(i);
    }
    if let Some(c) = &a.cmdline {
        // As ukify: a literal command line has its whitespace collapsed; @FILE is verbatim.
        b = b.cmdline(match c.strip_prefix('@') {
            Some(_) => SectionContent::text_or_file(c),
            None => SectionContent::Bytes(
                c.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .into_bytes(),
            ),
        });
    }
    if let Some(c) = &a.os_release {
        b = b.os_release(SectionContent::text_or_file(c));
    }
    if let Some(u) = &a.uname {
        b = b.uname(u);
    }
    for s in &a.sbat {
        b = b.sbat(SectionContent::text_or_file(s));
    }
    if let Some(s) = &a.splash {
        b = b.splash(s);
    }
    if let Some(d) = &a.devicetree {
        b = b.devicetree(d);
    }
    if let Some(p) = &a.pcrpkey {
        b = b.pcrpkey(SectionContent::File(p.clone()));
    }
    for s in &a.section {
        let Some((name, content)) = s.split_once(':') else {
            bail!("--section {s:?}: expected NAME:TEXT or NAME:@FILE");
        };
        b = b.section(name, SectionContent::text_or_file(content));
    }
    let split = |s: &str| -> Vec<String> {
        s.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect()
    };
    let mut banks = a
        .pcr_banks
        .as_deref()
        .map(split)
        .unwrap_or_default()
        .iter()
        .map(|s| s.parse::<HashAlg>())
        .collect::<Result<Vec<_>, _>>()?;
    if a.ukify_defaults && banks.is_empty() && !groups.is_empty() {
        // systemd-measure 257 signs every bank it knows when ukify passes no --bank.
        banks = vec![
            HashAlg::Sha1,
            HashAlg::Sha256,
            HashAlg::Sha384,
            HashAlg::Sha512,
        ];
    }
    // Without signing groups, --phases only chooses what --measure prints.
    let measured_phases: Vec<&String> = if groups.is_empty() {
        a.phases.iter().collect()
    } else {
        groups.iter().filter_map(|g| g.phases.as_ref()).collect()
    };
    if !a.pcr_certificate.is_empty()
        && !groups.is_empty()
        && a.pcr_certificate.len() != groups.len()
    {
        bail!("--pcr-certificate= specifications must match --pcr-private-key=");
    }
    let group_phases = a
        .phases
        .iter()
        .map(|p| bootchain::measure::Phase::list(&split(p)))
        .collect::<Result<Vec<_>, _>>()?;
    if a.measure {
        let mut all = Vec::new();
        for p in measured_phases {
            all.extend(bootchain::measure::Phase::list(&split(p))?);
        }
        all.sort();
        all.dedup();
        b = b.measure(banks.clone(), all);
    }
    if a.policy_digest {
        // ukify 258: exactly one public key or certificate, which also makes .pcrpkey.
        let public = match (a.pcr_public_key.as_slice(), a.pcr_certificate.as_slice()) {
            ([p], []) | ([], [p]) => p,
            _ => bail!(
                "--policy-digest requires exactly one --pcr-public-key= or --pcr-certificate="
            ),
        };
        let key = bootchain::measure::rsa_public_key_from_pem(
            &std::fs::read(public).with_context(|| format!("reading {}", public.display()))?,
        )?;
        if a.pcrpkey.is_none() && !a.pcr_public_key.is_empty() {
            b = b.pcrpkey(SectionContent::File(public.clone()));
        }
        b = b.allow_unmeasured_cmdline(a.allow_unmeasured_cmdline);
        b = b.pcr_policy_digests(uki::PcrPolicyDigests {
            public: key,
            phases: group_phases.iter().flatten().cloned().collect(),
            banks: banks.clone(),
        });
    }
    for (i, g) in groups.iter().enumerate() {
        let public = g.public_key.as_ref().or(a.pcr_certificate.get(i));
        let key = signing::pcr_signer(&g.private_key, public.map(PathBuf::as_path))?;
        if let (Some(p), None, 1, true) = (
            public,
            &a.pcrpkey,
            groups.len(),
            a.pcr_certificate.is_empty(),
        ) {
            b = b.pcrpkey(SectionContent::File(p.clone()));
        }
        b = b.allow_unmeasured_cmdline(a.allow_unmeasured_cmdline);
        let phases = match &g.phases {
            Some(p) => bootchain::measure::Phase::list(&split(p))?,
            None if a.ukify_defaults => {
                eprintln!("bootchain: note: as ukify, the PCR policy is signed for systemd-measure's default phases, including those after the initrd (`bootchain uki build` signs only the initrd phases unless --phases says otherwise)");
                bootchain::measure::Phase::defaults()
            }
            None => Vec::new(),
        };
        b = b.sign_pcr_policy(uki::PcrPolicySigner {
            key,
            phases,
            banks: banks.clone(),
        });
    }
    if let Some(k) = &a.secureboot_private_key {
        let (key, cert) = signing::sb_signer(k, a.secureboot_certificate.as_deref())?;
        b = b.sign_with(key, cert, sign_opts(a.signing_time));
    }
    let report = b.build(&output)?;
    for w in &report.warnings {
        eprintln!("bootchain: warning: {w}");
    }
    if let (true, Some(pred), JsonMode::Off) = (a.measure, &report.pcr11, json) {
        print_calculate(pred);
    }
    if let (true, JsonMode::Off) = (a.policy_digest, json) {
        // ukify 258 prints the policy digests JSON after the build.
        // Only the .pcrsig section is read back, not the whole image hashed again.
        if let Some(t) = bootchain::uki::read_section(&output, ".pcrsig")? {
            outln!("{}", String::from_utf8_lossy(&t).trim_end());
        }
    }
    if let JsonMode::Pretty = json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else if let JsonMode::Short = json {
        outln!("{}", serde_json::to_string(&report)?);
    } else {
        eprintln!(
            "wrote {} {} ({} bytes, Authenticode sha256 {})",
            if report.signed { "signed" } else { "unsigned" },
            report.output.display(),
            report.size,
            report.authenticode_sha256
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `measure policy-digest` (and `measure sign --prepare`): the unsigned policies, with `pkfp`
/// of the public key or certificate PEM `public`.
fn policy_digest_cmd(
    parts: &PartArgs,
    public: Option<&std::path::Path>,
    append: Option<&std::path::Path>,
    json: Option<JsonMode>,
    nv: Option<&bootchain::policy::NvEpoch>,
) -> Result<ExitCode> {
    let key = match public {
        Some(p) => Some(bootchain::measure::rsa_public_key_from_pem(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )?),
        None => None,
    };
    let pred = predict_parts(parts)?;
    let sigs = bootchain::measure::policy_digests_bound(&pred, key.as_ref(), nv)?;
    print_merged_policies(sigs, append, json)
}

/// Merge `sigs` into the `.pcrsig` JSON at `append` (if any) and print as systemd-measure.
fn print_merged_policies(
    sigs: bootchain::measure::PcrSignatures,
    append: Option<&std::path::Path>,
    json: Option<JsonMode>,
) -> Result<ExitCode> {
    let mut all = match append {
        Some(p) => bootchain::measure::parse_signatures(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )?,
        None => Vec::new(),
    };
    bootchain::measure::merge_signatures(&mut all, sigs);
    print_measure_json(&bootchain::measure::signatures_json(&all), json);
    Ok(ExitCode::SUCCESS)
}

/// systemd-measure's JSON output: pretty (tabs) on a terminal, else one line.
fn print_measure_json(v: &serde_json::Value, json: Option<JsonMode>) {
    use std::io::IsTerminal;
    let mode = json.unwrap_or(if std::io::stdout().is_terminal() {
        JsonMode::Pretty
    } else {
        JsonMode::Short
    });
    match mode {
        JsonMode::Pretty => out!("{}", bootchain::measure::systemd_pretty_json(v)),
        _ => outln!("{v}"),
    }
}

/// `uki build --join-pcrsig UKI --pcrsig JSON`.
fn uki_join(a: &BuildArgs, uki: &std::path::Path, pcrsig: &str) -> Result<ExitCode> {
    let text = match pcrsig.strip_prefix('@') {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {p}"))?,
        None => pcrsig.as_bytes().to_vec(),
    };
    let signatures = bootchain::measure::parse_signatures(&text)?;
    let public_key = match a.pcr_public_key.first().or(a.pcr_certificate.first()) {
        Some(p) => Some(bootchain::measure::rsa_public_key_from_pem(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )?),
        None => None,
    };
    let split_phases = a
        .phases
        .iter()
        .flat_map(|p| {
            p.split([',', ' '])
                .filter(|w| !w.is_empty())
                .map(str::to_string)
        })
        .collect::<Vec<_>>();
    let req = uki::JoinPcrsig {
        signatures,
        public_key,
        phases: bootchain::measure::Phase::list(&split_phases)?,
    };
    let signer = match &a.secureboot_private_key {
        Some(k) => {
            let (key, cert) = signing::sb_signer(k, a.secureboot_certificate.as_deref())?;
            Some((key, cert, sign_opts(a.signing_time)))
        }
        None => None,
    };
    let output = a
        .output
        .as_deref()
        .context("--output= must be specified with --join-pcrsig")?;
    let report = uki::join_pcrsig(
        uki,
        &req,
        output,
        signer.as_ref().map(|(k, c, o)| (&**k, c, o)),
    )?;
    if a.j || matches!(a.json, Some(JsonMode::Pretty | JsonMode::Short)) {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        eprintln!(
            "wrote {} {} ({} PCR signatures checked and joined)",
            if report.signed { "signed" } else { "unsigned" },
            report.output.display(),
            report.signatures
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// PCR 11 values as `systemd-measure calculate` prints them.
fn print_calculate(pred: &bootchain::measure::Pcr11Prediction) {
    for ph in &pred.phases {
        if pred.phases.len() > 1 && !ph.phase.is_after_stub() {
            eprintln!("# PCR[11] Phase <{}>", ph.phase);
        }
        for (bank, v) in pred.banks.iter().zip(&ph.values) {
            outln!("11:{bank}={v}");
        }
    }
}

fn genkey(a: GenkeyArgs) -> Result<ExitCode> {
    use bootchain::genkey::{GenkeyRequest, PcrKeyTarget, SecureBootTarget};
    if a.pcr_public_keys.len() > a.pcr_private_keys.len() {
        bail!("genkey: each --pcr-public-key needs a --pcr-private-key before it");
    }
    let secureboot = match (a.sb_key, a.sb_cert) {
        (Some(key), Some(cert)) => Some(SecureBootTarget {
            key,
            cert,
            validity_days: a.sb_days,
            host: bootchain::genkey::host_fqdn(),
        }),
        _ => None,
    };
    let mut public = a.pcr_public_keys.into_iter();
    let pcr = a
        .pcr_private_keys
        .into_iter()
        .map(|private_key| PcrKeyTarget {
            private_key,
            public_key: public.next(),
        })
        .collect();
    for w in bootchain::genkey::genkey(&GenkeyRequest { secureboot, pcr })? {
        eprintln!("Wrote {} to {}", w.what, w.path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `ukify inspect` output, byte for byte (systemd 257).
fn ukify_inspect(
    file: &std::path::Path,
    json: JsonMode,
    sections: &[String],
    all: bool,
) -> Result<ExitCode> {
    use bootchain::ukiread::{SectionSelector, SectionText, UkifyInspectOptions};
    let selectors = sections
        .iter()
        .map(|s| s.parse::<SectionSelector>())
        .collect::<Result<Vec<_>, _>>()?;
    let shown = bootchain::ukiread::inspect_ukify(file, &UkifyInspectOptions { selectors, all })?;
    let mut descs = serde_json::Map::new();
    for s in &shown {
        let text = s.text.as_ref().map(|t| match t {
            SectionText::Utf8(t) => t.as_str(),
            SectionText::NotUtf8(e) => {
                eprintln!("Section {:?} is not valid text: {e}", s.name);
                "(not valid UTF-8)"
            }
        });
        if matches!(json, JsonMode::Off) {
            outln!(
                "{}:\n  size: {} bytes\n  sha256: {}",
                s.name,
                s.size,
                s.sha256
            );
            if let Some(t) = text {
                let t = bootchain::python::textwrap_indent(bootchain::python::py_rstrip(t), "    ");
                outln!("  text:\n{t}");
            }
        }
        let mut d = serde_json::Map::new();
        d.insert("size".into(), s.size.into());
        d.insert("sha256".into(), s.sha256.to_string().into());
        if let Some(t) = text {
            d.insert("text".into(), t.into());
        }
        // As a Python dict: a repeated name keeps its place and takes the last value.
        descs.insert(s.name.clone(), d.into());
    }
    match json {
        JsonMode::Off => {}
        JsonMode::Short => out!("{}", bootchain::python::json_dumps(&descs, None)?),
        JsonMode::Pretty => out!("{}", bootchain::python::json_dumps(&descs, Some(4))?),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_inspect(info: &uki::UkiInfo) {
    outln!("size:            {} bytes", info.size);
    outln!(
        "stub version:    {}",
        info.stub_version.as_deref().unwrap_or("(no .sdmagic)")
    );
    outln!("authenticode:    sha256:{}", info.authenticode_sha256);
    outln!("sections:");
    outln!(
        "  {:<9} {:>10} {:>10} {:>10} {:>10}  sha256",
        "name",
        "rva",
        "vsize",
        "offset",
        "rawsize"
    );
    for s in &info.sections {
        outln!(
            "  {:<9} {:#10x} {:#10x} {:#10x} {:#10x}  {}",
            s.name,
            s.rva,
            s.virtual_size,
            s.file_offset,
            s.raw_size,
            s.sha256
        );
        if let Some(t) = &s.text {
            for line in t.lines() {
                outln!("            | {line}");
            }
        }
    }
    if info.signatures.is_empty() {
        outln!("signatures:      none");
    }
    for s in &info.signatures {
        outln!("signature {}:", s.index);
        outln!("  subject:       {}", s.subject.as_deref().unwrap_or("?"));
        outln!("  issuer:        {}", s.issuer);
        outln!("  serial:        {}", s.serial);
        outln!("  digest:        {}", s.digest_algorithm);
        outln!("  key:           {}", s.key.as_deref().unwrap_or("?"));
        outln!(
            "  status:        {}",
            if s.ok() {
                "valid signature over this image".to_string()
            } else {
                s.problem.clone().unwrap_or_else(|| "invalid".into())
            }
        );
    }
}

/// PCR 11 from loose parts, as systemd-measure computes it (every section it knows).
fn predict_parts(p: &PartArgs) -> Result<bootchain::measure::Pcr11Prediction> {
    let banks = if p.banks.is_empty() {
        HashAlg::ALL.to_vec()
    } else {
        p.banks.clone()
    };
    use bootchain::ukiread::UkiSection as S;
    let parts: Vec<(S, &std::path::Path)> = [
        (S::Linux, &p.linux),
        (S::Osrel, &p.osrel),
        (S::Cmdline, &p.cmdline),
        (S::Initrd, &p.initrd),
        (S::Ucode, &p.ucode),
        (S::Splash, &p.splash),
        (S::Dtb, &p.dtb),
        (S::Uname, &p.uname),
        (S::Sbat, &p.sbat),
        (S::Pcrpkey, &p.pcrpkey),
        (S::Profile, &p.profile),
        (S::Dtbauto, &p.dtbauto),
        (S::Hwids, &p.hwids),
        (S::Efifw, &p.efifw),
    ]
    .into_iter()
    .filter_map(|(s, path)| path.as_deref().map(|p| (s, p)))
    .collect();
    let phases = bootchain::measure::phase_list(&p.phases)?;
    Ok(bootchain::measure::predict_parts(&parts, &banks, &phases)?)
}

fn print_events(events: &[bootchain::measure::PredictedEvent]) {
    for e in events {
        let d = e
            .digests
            .iter()
            .map(|(b, d)| format!("{b}:{d}"))
            .collect::<Vec<_>>()
            .join(" ");
        outln!(
            "PCR {:>2} {:<34} {:<42} {d}",
            e.pcr,
            e.event_type,
            e.description
        );
    }
}

fn read_log(p: &std::path::Path) -> Result<bootchain::eventlog::EventLog> {
    let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    bootchain::eventlog::EventLog::parse(&bytes).with_context(|| format!("parsing {}", p.display()))
}

/// A TPM log or a TDX CCEL.
enum AnyLog {
    Tpm(bootchain::eventlog::EventLog),
    Cc(bootchain::ccel::CcEventLog),
}

/// Read a log; a CCEL when `ccel` or when its header record has index 1 (a TPM log's is
/// always 0, PFP §10.2.1; TDVF writes 1).
/// Files of a quote are small; bound reads so that a wrong path cannot exhaust memory.
fn read_small(p: &std::path::Path, limit: u64) -> Result<Vec<u8>> {
    bootchain::fsutil::read_bounded(p, limit).with_context(|| format!("reading {}", p.display()))
}

fn attest_verify(a: AttestVerifyArgs) -> Result<ExitCode> {
    use bootchain::attest::{self, Reference};
    use bootchain::quote::{AkPublic, Signature};
    let quote = read_small(&a.quote, 64 << 10)?;
    let sig = Signature::parse(&read_small(&a.signature, 64 << 10)?)
        .with_context(|| format!("parsing {}", a.signature.display()))?;
    let ak = AkPublic::parse(&read_small(&a.ak_public, 64 << 10)?)
        .with_context(|| format!("parsing {}", a.ak_public.display()))?;
    let nonce_path = std::path::Path::new(&a.nonce);
    let nonce = if nonce_path.is_file() {
        read_small(nonce_path, 1 << 10)?
    } else {
        hex::decode(a.nonce.trim())
            .with_context(|| format!("--nonce {:?} is neither a file nor hex", a.nonce))?
    };
    let log = bootchain::eventlog::EventLog::parse(&read_small(&a.eventlog, 64 << 20)?)
        .with_context(|| format!("parsing {}", a.eventlog.display()))?;
    let reference = if let Some(p) = &a.reference {
        let text = String::from_utf8(read_small(p, 16 << 20)?)
            .with_context(|| format!("{} is not UTF-8", p.display()))?;
        Some(Reference::from_json(&text).with_context(|| format!("parsing {}", p.display()))?)
    } else if let Some(p) = &a.reference_log {
        let l = bootchain::eventlog::EventLog::parse(&read_small(p, 64 << 20)?)
            .with_context(|| format!("parsing {}", p.display()))?;
        Some(Reference::from_log(&l))
    } else if let Some(uki) = &a.uki {
        if a.sb.secureboot.is_none() && !a.boot_chain.is_empty() {
            bail!("--boot-chain needs --secureboot on|off");
        }
        let state =
            a.sb.secureboot
                .is_some()
                .then(|| a.sb.state())
                .transpose()?;
        let boot = bootchain::firmware::predict_boot(
            uki,
            None,
            &log.banks(),
            &[bootchain::measure::Phase::after_stub()],
            0,
            None,
            state.as_ref().map(|s| (s, a.boot_chain.as_slice())),
        )
        .with_context(|| format!("predicting {}", uki.display()))?;
        Some(Reference::from_prediction(&boot))
    } else {
        None
    };
    let v = attest::verify_quote(&quote, &sig, &ak, &nonce, &log, reference.as_ref())?;
    let selection: Vec<String> = v.selections.iter().map(|s| s.to_string()).collect();
    let checked: Vec<String> = v
        .reference_checked
        .iter()
        .map(|(b, p)| format!("{b}:{p}"))
        .collect();
    let not_quoted: Vec<String> = v
        .reference_not_quoted
        .iter()
        .map(|(b, p)| format!("{b}:{p}"))
        .collect();
    if a.json {
        let doc = serde_json::json!({
            "verified": true,
            "ak": ak.to_string(),
            "scheme": v.scheme.to_string(),
            "nonce": hex::encode(&nonce),
            "selection": selection,
            "clock": v.attest.clock,
            "reset_count": v.attest.reset_count,
            "restart_count": v.attest.restart_count,
            "firmware_version": format!("{:#018x}", v.attest.firmware_version),
            "values": bootchain::pcr::pcr_values_json(&v.values),
            "reference_checked": checked,
            "reference_not_quoted": not_quoted,
        });
        outln!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        outln!("quote verified: signed by the AK ({ak}, {})", v.scheme);
        outln!("nonce: {}", hex::encode(&nonce));
        outln!(
            "PCRs {}: the event log replays to the quoted digest",
            selection.join("+")
        );
        if reference.is_some() {
            outln!("reference: {} equal", checked.join(" "));
            if !not_quoted.is_empty() {
                outln!(
                    "not attested (the reference has them, the quote does not cover them): {}",
                    not_quoted.join(" ")
                );
            }
        }
        outln!(
            "clock {} ms, resets {}, restarts {}, firmware {:#018x}",
            v.attest.clock,
            v.attest.reset_count,
            v.attest.restart_count,
            v.attest.firmware_version
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn read_any_log(p: &std::path::Path, ccel: bool) -> Result<AnyLog> {
    let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    if ccel || bootchain::eventlog::EventLog::header_index(&bytes) == Some(1) {
        let l = bootchain::ccel::CcEventLog::parse(&bytes)
            .with_context(|| format!("parsing {} as a CC event log", p.display()))?;
        return Ok(AnyLog::Cc(l));
    }
    let l = bootchain::eventlog::EventLog::parse(&bytes)
        .with_context(|| format!("parsing {}", p.display()))?;
    Ok(AnyLog::Tpm(l))
}

fn ccel_verify(
    l: &bootchain::ccel::CcEventLog,
    pcrs: Option<PathBuf>,
    json: bool,
) -> Result<ExitCode> {
    use bootchain::ccel;
    use bootchain::eventlog::{DataCheck, EventView};
    let Some(p) = pcrs else {
        bail!("give --pcrs FILE with RTMR values ({{\"rtmr0\": \"hex\", ...}}) for a CC event log");
    };
    let expected = ccel::RtmrValues::from_json(
        &std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
    )
    .with_context(|| format!("parsing {}", p.display()))?;
    let mismatches = ccel::verify_rtmrs(l, &expected);
    let lies: Vec<_> = l
        .log
        .events
        .iter()
        .filter(|e| ccel::check_data(e) == DataCheck::Mismatch)
        .map(EventView::of)
        .collect();
    let ok = mismatches.is_empty() && lies.is_empty();
    if json {
        let m: Vec<_> = mismatches
            .iter()
            .map(|m| {
                serde_json::json!({
                    "rtmr": m.rtmr.to_string(),
                    "replayed": m.replayed.to_hex(),
                    "expected": m.expected.to_hex(),
                })
            })
            .collect();
        let v = serde_json::json!({ "ok": ok, "mismatches": m, "lying_events": lies });
        outln!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for m in &mismatches {
            outln!(
                "{}: log replays to {}, but expected {}",
                m.rtmr,
                m.replayed,
                m.expected
            );
        }
        for e in &lies {
            outln!(
                "event at offset {} (MR index {}, {}): data does not match its digest",
                e.offset,
                e.pcr,
                e.event_type.name()
            );
        }
        outln!(
            "{}",
            if ok {
                "event log verified"
            } else {
                "event log verification FAILED"
            }
        );
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn eventlog_cmd(cmd: EventlogCmd) -> Result<ExitCode> {
    use bootchain::eventlog::{self, DataCheck, EventView};
    match cmd {
        EventlogCmd::Show { log, ccel, json } => {
            let (l, cc) = match read_any_log(&log, ccel)? {
                AnyLog::Tpm(l) => (l, false),
                AnyLog::Cc(c) => (c.log, true),
            };
            let views: Vec<EventView> = l
                .events
                .iter()
                .map(|e| {
                    let mut v = EventView::of(e);
                    if cc {
                        v.data_check = bootchain::ccel::check_data(e);
                    }
                    v
                })
                .collect();
            if json {
                let v = serde_json::json!({ "spec_id": l.spec_id, "events": views });
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let banks: Vec<String> = l.banks().iter().map(|b| b.to_string()).collect();
                outln!("banks: {}", banks.join(", "));
                for v in &views {
                    let check = match v.data_check {
                        DataCheck::Match => "data ok",
                        DataCheck::Mismatch => "DATA DOES NOT MATCH DIGEST",
                        DataCheck::NotApplicable => "",
                    };
                    outln!(
                        "{:>6} {} {:>2} {:<34} {} {}",
                        v.offset,
                        if cc { "MR " } else { "PCR" },
                        v.pcr,
                        v.event_type.name(),
                        v.description,
                        check
                    );
                    for (b, d) in &v.digests {
                        outln!("{:>17} {b}:{d}", "");
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        EventlogCmd::Replay { log, ccel, json } => {
            let l = match read_any_log(&log, ccel)? {
                AnyLog::Tpm(l) => l,
                AnyLog::Cc(c) => {
                    let values = c.replay_rtmrs();
                    if json {
                        outln!("{}", serde_json::to_string_pretty(&values.to_json())?);
                    } else {
                        for (r, d) in values.iter() {
                            outln!("{r}={d}");
                        }
                    }
                    return Ok(ExitCode::SUCCESS);
                }
            };
            let values = l.replay();
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&eventlog::pcr_values_json(&values))?
                );
            } else {
                for ((b, i), d) in &values {
                    outln!("{i}:{b}={d}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        EventlogCmd::Verify {
            log,
            ccel,
            pcrs,
            tcti,
            json,
        } => {
            let l = match read_any_log(&log, ccel)? {
                AnyLog::Tpm(l) => l,
                AnyLog::Cc(c) => return ccel_verify(&c, pcrs, json),
            };
            let actual = match (pcrs, tcti) {
                (Some(p), _) => eventlog::parse_pcr_values_json(
                    &std::fs::read_to_string(&p)
                        .with_context(|| format!("reading {}", p.display()))?,
                )
                .map_err(anyhow::Error::msg)?,
                (None, Some(t)) => read_tpm_pcrs(&t, &l)?,
                (None, None) => bail!("give --pcrs FILE or --tcti TCTI (or BOOTCHAIN_TCTI)"),
            };
            let mismatches = eventlog::verify_replay(&l, &actual);
            let lies: Vec<_> = l
                .events
                .iter()
                .filter(|e| eventlog::check_data(e) == DataCheck::Mismatch)
                .map(EventView::of)
                .collect();
            let ok = mismatches.is_empty() && lies.is_empty();
            if json {
                let v =
                    serde_json::json!({ "ok": ok, "mismatches": mismatches, "lying_events": lies });
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for m in &mismatches {
                    outln!(
                        "PCR {} {}: log replays to {}, but the PCR is {}",
                        m.pcr,
                        m.bank,
                        m.replayed,
                        m.actual
                    );
                }
                for e in &lies {
                    outln!(
                        "event at offset {} (PCR {}, {}): data does not match its digest",
                        e.offset,
                        e.pcr,
                        e.event_type.name()
                    );
                }
                outln!(
                    "{}",
                    if ok {
                        "event log verified"
                    } else {
                        "event log verification FAILED"
                    }
                );
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        EventlogCmd::PredictNext { log, uki, sb, json } => {
            let l = read_log(&log)?;
            let db = sb.db_content()?;
            let owner = sb.files()?.owner;
            let dbx = sb
                .dbx
                .as_deref()
                .map(|p| bootchain::firmware::variable_from_file(p, owner))
                .transpose()?;
            let next =
                bootchain::firmware::predict_next_boot(&l, &uki, db.as_deref(), dbx.as_deref())?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&eventlog::pcr_values_json(&next.values))?
                );
            } else {
                for ((b, i), d) in &next.values {
                    outln!("{i}:{b}={d}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// PCR values from a TPM for every (bank, PCR) the log touches.
fn read_tpm_pcrs(
    tcti: &str,
    log: &bootchain::eventlog::EventLog,
) -> Result<bootchain::eventlog::PcrValues> {
    let want: Vec<(HashAlg, u32)> = log.replay().keys().copied().collect();
    let mut tpm = bootchain::tpm::Tpm::open(tcti)?;
    Ok(tpm.read_pcrs(&want)?)
}
