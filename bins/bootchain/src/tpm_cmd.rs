//! `seal`, `unseal` and `luks`: the TPM-facing commands.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bootchain::hash::HashAlg;
use bootchain::measure::PcrSignatures;
use bootchain::seal::plan::SealPlan;
use bootchain::tpm::{ParentChoice, ParentKind, Tpm};
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

/// What a secret is sealed to.
#[derive(Args)]
pub struct PolicyArgs {
    /// PCRs bound to literal values, e.g. 7+11. Default with --pcr-public-key: 7 (the Secure
    /// Boot state and db, which a signed PCR 11 policy alone does not bind); give "" for none.
    #[arg(long)]
    pcrs: Option<String>,
    /// Also seal to this PCR at its boot value (zero), which bootchain-unseal extends after
    /// every unlock attempt, so nothing later in the same boot can unseal again ("none" to
    /// leave it out).
    #[arg(long = "lock-pcr", default_value = "15")]
    lock_pcr: String,
    /// PCR bank.
    #[arg(long, default_value = "sha256")]
    bank: HashAlg,
    /// Expected PCR values as JSON ({"sha256": {"7": "hex"}}); PCRs not listed are read from
    /// the TPM.
    #[arg(long = "pcr-values")]
    pcr_values: Option<PathBuf>,
    /// Take PCR 11 from the value predicted for this UKI (before it ever boots).
    #[arg(long)]
    uki: Option<PathBuf>,
    /// Boot phase for --uki ("" = right after the stub).
    #[arg(long, default_value = "")]
    phase: bootchain::measure::Phase,
    /// RSA public key (PEM, or a UKI whose .pcrpkey to use) whose signed PCR policies
    /// (.pcrsig) unlock: PolicyAuthorize, so PCR changes need a new signature, not a reseal.
    #[arg(long = "pcr-public-key")]
    pcr_public_key: Option<PathBuf>,
    /// PCRs the signed policies cover.
    #[arg(long = "pcr-public-key-pcrs", default_value = "11")]
    pcr_public_key_pcrs: String,
    /// Also require a PIN (PolicyAuthValue), read from this file (trailing newline removed).
    #[arg(long = "pin-file")]
    pin_file: Option<PathBuf>,
    /// Also require a PIN, taken from $BOOTCHAIN_PIN.
    #[arg(long = "with-pin", conflicts_with = "pin_file")]
    with_pin: bool,
    /// TPM (default: BOOTCHAIN_TCTI, else device:/dev/tpmrm0).
    #[arg(long, env = "BOOTCHAIN_TCTI", default_value = bootchain::tpm::DEFAULT_TCTI)]
    tcti: String,
    /// Seal offline for the TPM whose SRK public area this is (TPM2B_PUBLIC, from `bootchain
    /// tpm srk-public` or `systemd-analyze srk`; or its endorsement key's, from `tpm
    /// srk-public --ek`), as systemd-cryptenroll --tpm2-device-key:
    /// no TPM is used here, so every PCR value must be given (--pcr-values, --uki); the target
    /// TPM imports the object when it unseals.
    #[arg(long = "tpm2-device-key")]
    tpm2_device_key: Option<PathBuf>,
}

/// The parent of offline sealing, with every PCR value of `plan` given.
fn offline_parent(
    a: &PolicyArgs,
    plan: &SealPlan,
) -> Result<Option<bootchain::tpm_import::ParentPublic>> {
    let Some(path) = &a.tpm2_device_key else {
        return Ok(None);
    };
    let bytes = bootchain::fsutil::read_bounded(path, bootchain::tpm_import::MAX_PUBLIC as u64)
        .with_context(|| format!("reading {}", path.display()))?;
    let parent =
        bootchain::tpm_import::ParentPublic::from_tpm2b_public(&bytes).with_context(|| {
            format!(
                "{}: not a usable TPM2B_PUBLIC of a storage key",
                path.display()
            )
        })?;
    let missing = plan.missing_values();
    if !missing.is_empty() {
        let list: Vec<String> = missing.iter().map(u32::to_string).collect();
        bail!(
            "with --tpm2-device-key there is no TPM to read PCRs from: give the value of PCR {} (--pcr-values FILE, --uki for PCR 11)",
            list.join("+")
        );
    }
    Ok(Some(parent))
}

/// TPM administration.
#[derive(Subcommand)]
pub enum TpmCmd {
    /// Write the SRK's public area (TPM2B_PUBLIC, as `systemd-analyze srk`): the persistent
    /// SRK at 0x81000001, or the key the SRK template gives when none is persisted. Input to
    /// offline sealing (--tpm2-device-key).
    SrkPublic {
        /// Write it here (default: stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The endorsement key instead, from the TCG EK template (`rsa`: RSA-2048, L-1;
        /// `ecc`: NIST P-256, L-2), as `tpm2_createek` makes it: for a vTPM known by the EK
        /// its attestation reports. Objects sealed to it go in bootchain envelopes/tokens.
        #[arg(long, value_name = "rsa|ecc")]
        ek: Option<EkAlg>,
        /// TPM (default: BOOTCHAIN_TCTI, else device:/dev/tpmrm0).
        #[arg(long, env = "BOOTCHAIN_TCTI", default_value = bootchain::tpm::DEFAULT_TCTI)]
        tcti: String,
    },
}

/// The endorsement key's algorithm.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum EkAlg {
    /// RSA-2048 (EK template L-1).
    Rsa,
    /// NIST P-256 (EK template L-2).
    Ecc,
}

pub fn tpm(cmd: TpmCmd) -> Result<ExitCode> {
    match cmd {
        TpmCmd::SrkPublic { output, ek, tcti } => {
            let mut tpm = Tpm::open(&tcti)?;
            let public = match ek {
                Some(alg) => tpm.ek_public(match alg {
                    EkAlg::Rsa => bootchain::tpm::ParentKind::EkRsa,
                    EkAlg::Ecc => bootchain::tpm::ParentKind::EkEcc,
                })?,
                None => {
                    let (public, persistent) = tpm.srk_public()?;
                    if !persistent {
                        eprintln!("bootchain: note: no SRK is persisted at 0x81000001; this is the key the SRK template gives (unseal recreates it)");
                    }
                    public
                }
            };
            match output {
                Some(p) => bootchain::fsutil::write_atomic(&p, &public, 0o644)
                    .with_context(|| format!("writing {}", p.display()))?,
                None => {
                    let mut o = std::io::stdout().lock();
                    o.write_all(&public)?;
                    o.flush()?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Args)]
pub struct SealArgs {
    #[command(flatten)]
    policy: PolicyArgs,
    /// Parent key: auto (SRK at 0x81000001, else transient ECC P-256, else RSA-2048), srk,
    /// ecc-p256, rsa-2048, legacy-ecc, legacy-rsa.
    #[arg(long, default_value = "auto")]
    parent: String,
    /// The secret to seal (a file; any size).
    #[arg(long, conflicts_with = "random")]
    secret: Option<PathBuf>,
    /// Seal a fresh random 32-byte secret.
    #[arg(long)]
    random: bool,
    /// With --random: also write the secret to this file (mode 0600).
    #[arg(long, requires = "random")]
    secret_output: Option<PathBuf>,
    /// The envelope to write (mode 0600).
    #[arg(long, short)]
    output: PathBuf,
}

/// Where signatures and PINs for unsealing come from.
#[derive(Args)]
pub struct UnlockArgs {
    /// Signed PCR policies (.pcrsig JSON). Default: the UKI's (--pcrsig-uki), else
    /// /run/systemd/tpm2-pcr-signature.json or /.extra/tpm2-pcr-signature.json.
    #[arg(long)]
    pcrsig: Option<PathBuf>,
    /// Take the signed PCR policies from this UKI's .pcrsig section.
    #[arg(long = "pcrsig-uki", conflicts_with = "pcrsig")]
    pcrsig_uki: Option<PathBuf>,
    /// The PIN, from this file (trailing newline removed); else $BOOTCHAIN_PIN.
    #[arg(long = "pin-file")]
    pin_file: Option<PathBuf>,
    /// systemd-pcrlock's policy file, for tokens enrolled with --tpm2-pcrlock. Default:
    /// /run/systemd/pcrlock.json, else /var/lib/systemd/pcrlock.json.
    #[arg(long = "pcrlock-policy")]
    pcrlock_policy: Option<PathBuf>,
    /// TPM (default: BOOTCHAIN_TCTI, else device:/dev/tpmrm0).
    #[arg(long, env = "BOOTCHAIN_TCTI", default_value = bootchain::tpm::DEFAULT_TCTI)]
    tcti: String,
}

#[derive(Args)]
pub struct UnsealArgs {
    /// The envelope.
    envelope: PathBuf,
    /// Write the secret here (mode 0600) instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[command(flatten)]
    unlock: UnlockArgs,
}

#[derive(Subcommand)]
pub enum LuksCmd {
    /// Add a TPM2 keyslot and systemd-tpm2 token (like systemd-cryptenroll --tpm2-device).
    Enroll {
        /// The LUKS2 device or image.
        device: PathBuf,
        /// A file with an existing passphrase or key of the volume.
        #[arg(long = "unlock-key-file")]
        unlock_key_file: PathBuf,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Token type: systemd (systemd-tpm2, readable by systemd-cryptsetup) or bootchain
        /// (bootchain-tpm2: an envelope recording the sealed PCR values and the parent Name, so
        /// failures name each changed PCR and a swapped TPM; only bootchain reads it).
        #[arg(long = "token-type", default_value = "systemd")]
        token_type: String,
        /// Parent key. systemd tokens: legacy-ecc (default: the transient primary every systemd
        /// ≥ 250 can recreate), legacy-rsa, or srk (persistent 0x81000001, recorded as
        /// tpm2_srk; systemd ≥ 254 only). bootchain tokens: as `seal --parent` (default auto).
        #[arg(long)]
        parent: Option<String>,
        /// Hash the PIN as systemd 252 does (no salt), so 252's unlock accepts it.
        #[arg(long = "unsalted-pin")]
        unsalted_pin: bool,
    },
    /// Unseal a systemd-tpm2 token's passphrase and test it, write it, or activate the volume.
    Unlock {
        /// The LUKS2 device or image.
        device: PathBuf,
        /// Only this token.
        #[arg(long = "token-id")]
        token_id: Option<u32>,
        /// Check the passphrase opens its keyslot (cryptsetup --test-passphrase); activate
        /// nothing.
        #[arg(long)]
        test: bool,
        /// Write the keyslot passphrase here (mode 0600).
        #[arg(long = "passphrase-output")]
        passphrase_output: Option<PathBuf>,
        /// Activate as /dev/mapper/NAME.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        unlock: UnlockArgs,
    },
    /// List the TPM2 tokens.
    List {
        /// The LUKS2 device or image.
        device: PathBuf,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Create a LUKS2 image holding a filesystem image, encrypted from userspace (no
    /// device-mapper, no root): the encrypted root volume of a VM image, before first boot.
    FormatImage {
        /// The filesystem image to encrypt (e.g. made by mke2fs -d); a multiple of 512 bytes.
        payload: PathBuf,
        /// The LUKS2 image to write.
        #[arg(long, short)]
        output: PathBuf,
        /// A file with the passphrase or recovery key of keyslot 0.
        #[arg(long = "key-file")]
        key_file: PathBuf,
        /// The volume's UUID (so an initramfs built beforehand can name it).
        #[arg(long)]
        uuid: Option<String>,
        /// PBKDF2 with 1000 iterations for keyslot 0 instead of Argon2id: only for a
        /// high-entropy recovery key, or a guest too small for Argon2id.
        #[arg(long = "minimal-pbkdf")]
        minimal_pbkdf: bool,
    },
    /// Remove a systemd-tpm2 token and its keyslot(s).
    Remove {
        /// The LUKS2 device or image.
        device: PathBuf,
        /// The token.
        #[arg(long = "token-id")]
        token_id: u32,
    },
}

fn parse_parent(s: &str) -> Result<ParentChoice> {
    if s == "auto" {
        return Ok(ParentChoice::Auto);
    }
    Ok(ParentChoice::Kind(s.parse::<ParentKind>()?))
}

fn read_pin(file: Option<&Path>, from_env: bool) -> Result<Option<Zeroizing<Vec<u8>>>> {
    use bootchain::pin;
    Ok(match file {
        Some(p) => Some(pin::read_pin_file(p)?),
        None if from_env => Some(
            pin::pin_from_env()?
                .with_context(|| format!("--with-pin needs the PIN in ${}", pin::PIN_ENV))?,
        ),
        None => None,
    })
}

/// The PIN for unsealing: the file, else $BOOTCHAIN_PIN, else none.
fn unlock_pin(a: &UnlockArgs) -> Result<Option<Zeroizing<Vec<u8>>>> {
    read_pin(
        a.pin_file.as_deref(),
        std::env::var_os(bootchain::pin::PIN_ENV).is_some(),
    )
}

/// The signatures for unsealing; `None` if none are given or found.
fn unlock_signatures(a: &UnlockArgs) -> Result<Option<PcrSignatures>> {
    Ok(if let Some(p) = &a.pcrsig {
        Some(bootchain::measure::read_signatures(p)?)
    } else if let Some(u) = &a.pcrsig_uki {
        match bootchain::uki::read_section(u, ".pcrsig")? {
            Some(b) => Some(bootchain::measure::parse_signatures(&b)?),
            None => bail!("{} has no .pcrsig section", u.display()),
        }
    } else {
        bootchain::measure::default_signatures()?
    })
}

/// systemd-pcrlock's policy file for unlocking: the one given (which must parse), else the
/// first of the default paths that exists. A default file that does not parse is reported
/// and skipped: only pcrlock tokens need it, and they then name what is missing.
fn unlock_pcrlock(a: &UnlockArgs) -> Result<Option<bootchain::pcrlock::PcrlockPolicy>> {
    use bootchain::pcrlock;
    Ok(match &a.pcrlock_policy {
        Some(p) => Some(pcrlock::PcrlockPolicy::load(p)?),
        None => match pcrlock::default_policy() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("bootchain: ignoring {}", bootchain::error::Chain(&e));
                None
            }
        },
    })
}

/// The policy arguments as a library [`SealPlan`], from files only (checked before any TPM is
/// opened); [`fill_from_tpm`] adds the rest.
fn resolve_policy(a: &PolicyArgs) -> Result<SealPlan> {
    use bootchain::policy::parse_pcr_list;
    let default_pcrs = if a.pcr_public_key.is_some() { "7" } else { "" };
    let pcrs: Vec<u32> = parse_pcr_list(a.pcrs.as_deref().unwrap_or(default_pcrs))?
        .into_iter()
        .map(u32::from)
        .collect();
    let mut plan = SealPlan::new(a.bank).literal_pcrs(&pcrs)?;
    if let Some(p) = &a.pcr_public_key {
        let signed: Vec<u32> = parse_pcr_list(&a.pcr_public_key_pcrs)?
            .into_iter()
            .map(u32::from)
            .collect();
        plan = plan.authorize_from_file(p, &signed)?;
    }
    if plan.check().is_err() {
        bail!("give --pcrs, --pcr-public-key, or both");
    }
    let lock = match a.lock_pcr.as_str() {
        "none" => false,
        s if s == bootchain::seal::LOCK_PCR.to_string() => true,
        s => bail!(
            "--lock-pcr {s:?}: only {} (what bootchain-unseal extends) or none",
            bootchain::seal::LOCK_PCR
        ),
    };
    if let Some(p) = &a.pcr_values {
        plan = plan.values_from_json(p)?;
    }
    if let Some(uki) = &a.uki {
        plan = plan.predicted_pcr11(uki, &a.phase)?;
    }
    if lock {
        plan = plan.with_lock();
    }
    if let Some(pin) = read_pin(a.pin_file.as_deref(), a.with_pin)? {
        plan = plan.with_pin(pin);
    }
    Ok(plan)
}

/// Literal PCRs without a given value take the TPM's current value (with a warning), and a
/// PIN policy warns when the TPM's lockout is not protected.
fn fill_from_tpm(plan: &mut SealPlan, tpm: &mut Tpm) -> Result<()> {
    let read = plan.fill_from_tpm(tpm)?;
    if !read.is_empty() {
        let list: Vec<String> = read.iter().map(u32::to_string).collect();
        eprintln!(
            "bootchain: warning: PCR {} taken from this TPM's current values (an unauthenticated PCR_Read: whoever controls the TPM channel chooses them); prefer predicted values (--pcr-values from `pcr predict --json`, or --uki)",
            list.join("+")
        );
    }
    if plan.pin.is_some() {
        match tpm.lockout_auth_set() {
            Ok(false) => eprintln!(
                "bootchain: warning: this TPM has no lockout authorization set: anyone can reset its dictionary-attack counter, so the lockout does not limit PIN guessing (set one with tpm2_changeauth -c lockout)"
            ),
            Ok(true) => {}
            Err(e) => eprintln!("bootchain: warning: cannot read the TPM's lockout state: {e}"),
        }
    }
    Ok(())
}

pub fn seal(a: SealArgs) -> Result<ExitCode> {
    let parent = parse_parent(&a.parent)?;
    let secret = match (&a.secret, a.random) {
        (Some(p), _) => {
            Zeroizing::new(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)
        }
        (None, true) => {
            let mut k = Zeroizing::new(vec![0u8; 32]);
            getrandom::getrandom(&mut k).map_err(|e| anyhow::anyhow!("random: {e}"))?;
            k
        }
        (None, false) => bail!("give --secret FILE or --random"),
    };
    let mut p = resolve_policy(&a.policy)?;
    let env = match offline_parent(&a.policy, &p)? {
        Some(srk) => bootchain::seal::seal_offline(&p.request(parent)?, &srk, &secret)?,
        None => {
            let mut tpm = Tpm::open(&a.policy.tcti)?;
            fill_from_tpm(&mut p, &mut tpm)?;
            bootchain::seal::seal(&mut tpm, &p.request(parent)?, &secret)?
        }
    };
    bootchain::seal::write_envelope(
        &env,
        &a.output,
        a.secret_output.as_deref().map(|p| (p, &secret[..])),
    )?;
    eprintln!(
        "sealed under {} (policy {})",
        env.parent.kind, env.policy.digest
    );
    Ok(ExitCode::SUCCESS)
}

fn write_secret(out: Option<&Path>, secret: &[u8]) -> Result<()> {
    match out {
        Some(p) => bootchain::fsutil::write_atomic(p, secret, 0o600)
            .with_context(|| format!("writing {}", p.display())),
        None => {
            let mut o = std::io::stdout().lock();
            o.write_all(secret)?;
            o.flush()?;
            Ok(())
        }
    }
}

pub fn unseal(a: UnsealArgs) -> Result<ExitCode> {
    let bytes = bootchain::fsutil::read_bounded(&a.envelope, bootchain::fsutil::MAX_JSON_INPUT)
        .with_context(|| format!("reading {}", a.envelope.display()))?;
    let text = std::str::from_utf8(&bytes)
        .with_context(|| format!("{} is not UTF-8 text", a.envelope.display()))?;
    let env = bootchain::seal::Envelope::from_json(text)?;
    let sigs = if env.needs_signatures() {
        unlock_signatures(&a.unlock)?
    } else {
        None
    };
    let pin = if env.needs_pin() {
        unlock_pin(&a.unlock)?
    } else {
        None
    };
    let mut tpm = Tpm::open(&a.unlock.tcti)?;
    let opts = bootchain::seal::UnsealOptions {
        signatures: sigs.as_ref(),
        pin: pin.as_ref().map(|p| p.as_slice()),
        pcrlock: None,
    };
    let secret = bootchain::seal::unseal(&mut tpm, &env, &opts)?;
    write_secret(a.output.as_deref(), &secret)?;
    Ok(ExitCode::SUCCESS)
}

pub fn luks(cmd: LuksCmd) -> Result<ExitCode> {
    use bootchain::luks::Luks;
    use bootchain::token;
    match cmd {
        LuksCmd::Enroll {
            device,
            unlock_key_file,
            policy,
            token_type,
            parent,
            unsalted_pin,
        } => {
            let kind = match token_type.as_str() {
                "systemd" => token::TokenKind::Systemd,
                "bootchain" => token::TokenKind::Bootchain,
                other => bail!("--token-type {other:?}: systemd or bootchain"),
            };
            let offline = policy.tpm2_device_key.is_some();
            let parent = match (kind, parent.as_deref()) {
                (_, None) if offline => ParentChoice::Kind(ParentKind::Srk),
                (token::TokenKind::Systemd, None) => ParentChoice::Kind(ParentKind::LegacyEcc),
                (token::TokenKind::Bootchain, None) => ParentChoice::Auto,
                (_, Some(p)) => parse_parent(p)?,
            };
            if kind == token::TokenKind::Systemd && parent == ParentChoice::Auto {
                bail!("systemd tokens need an explicit parent: legacy-ecc, legacy-rsa or srk");
            }
            let luks = Luks::new(&device);
            let mut p = resolve_policy(&policy)?;
            let srk = offline_parent(&policy, &p)?;
            let mut tpm = match srk {
                Some(_) => None,
                None => {
                    let mut tpm = Tpm::open(&policy.tcti)?;
                    fill_from_tpm(&mut p, &mut tpm)?;
                    Some(tpm)
                }
            };
            let req = token::EnrollRequest {
                seal: p.request(parent)?,
                unsalted_pin,
                kind,
            };
            let mut sealer = match (&srk, tpm.as_mut()) {
                (Some(srk), _) => bootchain::seal::Sealer::Offline(srk),
                (None, Some(tpm)) => bootchain::seal::Sealer::Tpm(tpm),
                (None, None) => bail!("no TPM and no --tpm2-device-key"),
            };
            let (id, slot) = token::enroll_luks_by(&mut sealer, &luks, &unlock_key_file, &req)?;
            eprintln!("enrolled TPM2 token {id} for keyslot {slot}");
            Ok(ExitCode::SUCCESS)
        }
        LuksCmd::Unlock {
            device,
            token_id,
            test,
            passphrase_output,
            name,
            unlock,
        } => {
            let luks = Luks::new(&device);
            let sigs = unlock_signatures(&unlock)?;
            let pin = unlock_pin(&unlock)?;
            let pcrlock = unlock_pcrlock(&unlock)?;
            let mut tpm = Tpm::open(&unlock.tcti)?;
            let opts = bootchain::seal::UnsealOptions {
                signatures: sigs.as_ref(),
                pin: pin.as_ref().map(|p| p.as_slice()),
                pcrlock: pcrlock.as_ref(),
            };
            let u = token::unlock_luks(&mut tpm, &luks, token_id, &opts)?;
            let pass = u.passphrase.as_bytes();
            if test {
                luks.test_passphrase(u.keyslot, pass)?;
                eprintln!(
                    "token {} unsealed; its passphrase opens keyslot {}",
                    u.token_id,
                    u.keyslot.map_or("?".into(), |s| s.to_string())
                );
            }
            if let Some(o) = &passphrase_output {
                bootchain::fsutil::write_atomic(o, pass, 0o600)
                    .with_context(|| format!("writing {}", o.display()))?;
            }
            if let Some(n) = &name {
                luks.activate(n, u.keyslot, pass)?;
                eprintln!("activated /dev/mapper/{n}");
            }
            if !test && passphrase_output.is_none() && name.is_none() {
                bail!("say what to do with the passphrase: --test, --passphrase-output FILE or --name NAME");
            }
            Ok(ExitCode::SUCCESS)
        }
        LuksCmd::List { device, json } => {
            let rows = token::list_luks(&Luks::new(&device))?;
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for r in &rows {
                    let mut line = format!("token {} {} keyslots {}", r.token, r.kind, r.keyslots);
                    if let Some(t) = &r.tpm {
                        line.push_str(&format!(
                            " bank {} pcrs {} signed-pcrs {} pin {} parent {}",
                            t.pcr_bank,
                            serde_json::json!(t.pcrs),
                            serde_json::json!(t.pubkey_pcrs),
                            t.pin,
                            t.parent
                        ));
                    }
                    outln!("{line}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LuksCmd::FormatImage {
            payload,
            output,
            key_file,
            uuid,
            minimal_pbkdf,
        } => {
            let key = Zeroizing::new(
                std::fs::read(&key_file)
                    .with_context(|| format!("reading {}", key_file.display()))?,
            );
            let kdf = if minimal_pbkdf {
                bootchain::luks::KeyslotKdf::Minimal
            } else {
                bootchain::luks::KeyslotKdf::Default
            };
            bootchain::luks::format_image(&payload, &output, &key, uuid.as_deref(), kdf)?;
            eprintln!(
                "wrote {} (LUKS2, aes-xts-plain64, keyslot 0 from {})",
                output.display(),
                key_file.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        LuksCmd::Remove { device, token_id } => {
            token::remove_luks(&Luks::new(&device), token_id)?;
            eprintln!("removed token {token_id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
