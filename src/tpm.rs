//! The only module that talks to a TPM (through tss-esapi 7.7 and tpm2-tss 3.x).
//!
//! TCTI strings as tpm2-tss spells them: `device:/dev/tpmrm0` (the default),
//! `swtpm:host=127.0.0.1,port=2321`. tss-esapi 7.x silently ignores `path=` for swtpm, so use
//! host/port (see ../shared/spec/tpm-swtpm-notes.md).

use std::str::FromStr;

use tss_esapi::abstraction::pcr as tss_pcr;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::structures::{DigestValues, PcrSelectionListBuilder, PcrSlot};
use tss_esapi::{Context, TctiNameConf};

use crate::eventlog::PcrValues;
use crate::hash::{Digest, HashAlg};

/// The TCTI used when none is given.
pub const DEFAULT_TCTI: &str = "device:/dev/tpmrm0";

/// Errors talking to the TPM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The TCTI string is not valid.
    #[error("invalid TCTI {tcti:?}: {reason}")]
    Tcti {
        /// The string.
        tcti: String,
        /// Why.
        reason: String,
    },
    /// The TPM could not be reached.
    #[error("cannot open TPM via {tcti}: {reason} (is the TPM present and the TCTI right?)")]
    Open {
        /// The TCTI.
        tcti: String,
        /// Why.
        reason: String,
    },
    /// A TPM command failed; `code` is the response code, `name` its meaning.
    #[error("TPM command {command} failed: {name} (response code {code:#x})")]
    Command {
        /// The command.
        command: &'static str,
        /// Response code.
        code: u32,
        /// Decoded meaning.
        name: String,
    },
    /// A value from the TPM was not what we expected.
    #[error("unexpected TPM data: {0}")]
    Data(String),
}

fn cmd_err(command: &'static str) -> impl FnOnce(tss_esapi::Error) -> TpmError {
    move |e| {
        use tss_esapi::constants::response_code::Tss2ResponseCode as R;
        let code = match e {
            tss_esapi::Error::Tss2Error(R::FormatZero(rc)) => rc.0,
            tss_esapi::Error::Tss2Error(R::FormatOne(rc)) => rc.0,
            _ => 0,
        };
        TpmError::Command {
            command,
            code,
            name: e.to_string(),
        }
    }
}

fn hashing(alg: HashAlg) -> HashingAlgorithm {
    match alg {
        HashAlg::Sha1 => HashingAlgorithm::Sha1,
        HashAlg::Sha256 => HashingAlgorithm::Sha256,
        HashAlg::Sha384 => HashingAlgorithm::Sha384,
        HashAlg::Sha512 => HashingAlgorithm::Sha512,
    }
}

fn slot(pcr: u32) -> Result<PcrSlot, TpmError> {
    if pcr > 23 {
        return Err(TpmError::Data(format!("PCR {pcr} out of range")));
    }
    PcrSlot::try_from(1u32 << pcr).map_err(|e| TpmError::Data(e.to_string()))
}

/// An open TPM.
pub struct Tpm {
    ctx: Context,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tpm")
    }
}

impl Tpm {
    /// Open a TPM. tpm2-tss logging is silenced unless `TSS2_LOG` is set: expected failures
    /// (a policy that does not match) would otherwise print ESYS errors on stderr.
    pub fn open(tcti: &str) -> Result<Self, TpmError> {
        if std::env::var_os("TSS2_LOG").is_none() {
            std::env::set_var("TSS2_LOG", "all+none");
        }
        let conf = TctiNameConf::from_str(tcti).map_err(|e| TpmError::Tcti {
            tcti: tcti.into(),
            reason: e.to_string(),
        })?;
        let ctx = Context::new(conf).map_err(|e| TpmError::Open {
            tcti: tcti.into(),
            reason: e.to_string(),
        })?;
        Ok(Tpm { ctx })
    }

    /// The TCTI from `BOOTCHAIN_TCTI`, else [`DEFAULT_TCTI`].
    pub fn tcti_from_env() -> String {
        std::env::var("BOOTCHAIN_TCTI").unwrap_or_else(|_| DEFAULT_TCTI.to_string())
    }

    /// Read PCR values.
    pub fn read_pcrs(&mut self, which: &[(HashAlg, u32)]) -> Result<PcrValues, TpmError> {
        let mut out = PcrValues::new();
        for bank in HashAlg::ALL {
            let pcrs: Vec<u32> = which
                .iter()
                .filter(|(b, _)| *b == bank)
                .map(|(_, i)| *i)
                .collect();
            if pcrs.is_empty() {
                continue;
            }
            let slots = pcrs
                .iter()
                .map(|p| slot(*p))
                .collect::<Result<Vec<_>, _>>()?;
            let sel = PcrSelectionListBuilder::new()
                .with_selection(hashing(bank), &slots)
                .build()
                .map_err(|e| TpmError::Data(e.to_string()))?;
            let data = tss_pcr::read_all(&mut self.ctx, sel).map_err(cmd_err("PCR_Read"))?;
            let bank_data = data.pcr_bank(hashing(bank)).ok_or_else(|| {
                TpmError::Data(format!(
                    "the TPM returned no {bank} bank (is it allocated?)"
                ))
            })?;
            for (p, s) in pcrs.iter().zip(&slots) {
                let d = bank_data
                    .get_digest(*s)
                    .ok_or_else(|| TpmError::Data(format!("no value for {bank} PCR {p}")))?;
                let d = Digest::new(bank, d.value().to_vec())
                    .map_err(|e| TpmError::Data(e.to_string()))?;
                out.insert((bank, *p), d);
            }
        }
        Ok(out)
    }

    /// Extend a PCR with digests (one per bank given).
    pub fn extend(&mut self, pcr: u32, digests: &[Digest]) -> Result<(), TpmError> {
        use tss_esapi::handles::PcrHandle;
        if pcr > 23 {
            return Err(TpmError::Data(format!("PCR {pcr} out of range")));
        }
        let handle = PcrHandle::try_from(tss_esapi::tss2_esys::ESYS_TR_PCR0 + pcr)
            .map_err(|e| TpmError::Data(e.to_string()))?;
        let mut vals = DigestValues::new();
        for d in digests {
            let v = tss_esapi::structures::Digest::try_from(d.as_bytes().to_vec())
                .map_err(|e| TpmError::Data(e.to_string()))?;
            vals.set(hashing(d.alg()), v);
        }
        self.ctx
            .execute_with_nullauth_session(|ctx| ctx.pcr_extend(handle, vals))
            .map_err(cmd_err("PCR_Extend"))
    }
}
