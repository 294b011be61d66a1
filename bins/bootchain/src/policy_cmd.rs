//! `policy`: the epoch counter that signed PCR policies are bound to (rollback protection),
//! and the `--policy-nv`/`--epoch` options of the signing commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use bootchain::policy::NvEpoch;
use bootchain::tpm::Tpm;
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

/// The environment variable holding the owner hierarchy's authorization value (never argv).
const OWNER_AUTH_ENV: &str = "BOOTCHAIN_OWNER_AUTH";

/// The default epoch counter index (in the owner range 0x01800000–0x01BFFFFF).
pub const DEFAULT_NV_INDEX: &str = "0x01800b0c";

/// Parse an NV index handle: hex with 0x, or decimal; must be an NV handle (0x01xxxxxx).
pub fn parse_nv_index(s: &str) -> Result<u32, String> {
    let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?}: {e}"))?;
    if v >> 24 != 0x01 {
        return Err(format!("{s:?} is not an NV index handle (0x01xxxxxx)"));
    }
    Ok(v)
}

/// Which TPM and NV index, and how to authorize as owner.
#[derive(Args)]
pub struct NvArgs {
    /// The epoch counter's NV index.
    #[arg(long, default_value = DEFAULT_NV_INDEX, value_parser = parse_nv_index)]
    index: u32,
    /// TPM (default: BOOTCHAIN_TCTI, else device:/dev/tpmrm0).
    #[arg(long, env = "BOOTCHAIN_TCTI", default_value = bootchain::tpm::DEFAULT_TCTI)]
    tcti: String,
    /// A file holding the owner hierarchy's authorization value (default: $BOOTCHAIN_OWNER_AUTH,
    /// else empty). Needed to define, bump and delete the counter.
    #[arg(long = "owner-auth-file")]
    owner_auth_file: Option<PathBuf>,
}

impl NvArgs {
    fn owner_auth(&self) -> Result<Zeroizing<Vec<u8>>> {
        Ok(match &self.owner_auth_file {
            Some(p) => bootchain::pin::read_pin_file(p)?,
            None => match std::env::var_os(OWNER_AUTH_ENV) {
                Some(v) => Zeroizing::new(v.into_encoded_bytes()),
                None => Zeroizing::new(Vec::new()),
            },
        })
    }
}

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Define the epoch counter (an NV counter, incremented with owner authorization, read
    /// with an empty authValue) and increment it once; prints the first epoch.
    NvDefine(NvArgs),
    /// Increment the counter: every signature for an older epoch stops unsealing. Prints the
    /// new epoch, which new signatures must be made for (`measure sign --epoch`).
    Bump(NvArgs),
    /// Print the counter's index, Name and current epoch.
    Show(NvArgs),
    /// Delete the counter (signatures bound to it stop unsealing).
    NvUndefine(NvArgs),
}

pub fn policy(cmd: PolicyCmd) -> Result<ExitCode> {
    match cmd {
        PolicyCmd::NvDefine(a) => {
            let mut tpm = Tpm::open(&a.tcti)?;
            if tpm.nv_name(a.index)?.is_some() {
                bail!("the NV index {:#010x} is already defined", a.index);
            }
            let epoch = tpm.nv_define_epoch_counter(a.index, &a.owner_auth()?)?;
            tpm.current_epoch(a.index)?;
            println!("{epoch}");
        }
        PolicyCmd::Bump(a) => {
            let mut tpm = Tpm::open(&a.tcti)?;
            let epoch = tpm.nv_bump(a.index, &a.owner_auth()?)?;
            println!("{epoch}");
        }
        PolicyCmd::Show(a) => {
            let mut tpm = Tpm::open(&a.tcti)?;
            let nv = tpm.current_epoch(a.index)?;
            println!("index {:#010x}", nv.index);
            println!("name {}", hex::encode(&nv.name));
            println!("epoch {}", nv.epoch);
        }
        PolicyCmd::NvUndefine(a) => {
            let mut tpm = Tpm::open(&a.tcti)?;
            tpm.nv_undefine(a.index, &a.owner_auth()?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--policy-nv`/`--epoch` of the signing commands.
#[derive(Args, Debug)]
pub struct EpochArgs {
    /// Bind the signed policies to the epoch counter at this NV index (see `policy
    /// nv-define`): they stop unsealing once the counter is bumped past the epoch. Without
    /// --epoch, the current epoch is read from the TPM (BOOTCHAIN_TCTI).
    #[arg(long = "policy-nv", value_parser = parse_nv_index)]
    policy_nv: Option<u32>,
    /// The epoch to sign for (offline, no TPM needed); needs --policy-nv.
    #[arg(long, requires = "policy_nv")]
    epoch: Option<u64>,
}

impl EpochArgs {
    /// The binding, if asked for.
    pub fn binding(&self) -> Result<Option<NvEpoch>> {
        let Some(index) = self.policy_nv else {
            return Ok(None);
        };
        Ok(Some(match self.epoch {
            Some(e) => NvEpoch::counter(index, e),
            None => Tpm::open(&Tpm::tcti_from_env())?.current_epoch(index)?,
        }))
    }
}
