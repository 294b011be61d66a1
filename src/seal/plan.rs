//! What to seal to, gathered from files before any TPM is opened: literal PCRs and their
//! values (a `pcr predict --json` file, the PCR 11 predicted for a UKI), the key whose signed
//! policies unlock (a PEM file, or a UKI's `.pcrpkey`), the boot lock PCR, a PIN. The CLI's
//! `seal` and `luks enroll` are this plus argument parsing.
//!
//! ```no_run
//! use bootchain::hash::HashAlg;
//! use bootchain::seal::plan::SealPlan;
//! use bootchain::tpm::{ParentChoice, Tpm};
//!
//! // Literal PCR 7 from a prediction, PCR 11 signed by the UKI's .pcrpkey, the lock PCR 15.
//! let mut plan = SealPlan::new(HashAlg::Sha256)
//!     .literal_pcrs(&[7])?
//!     .values_from_json("pcrs.json".as_ref())?
//!     .authorize_from_file("uki.efi".as_ref(), &[11])?
//!     .with_lock();
//! let mut tpm = Tpm::open("swtpm:host=127.0.0.1,port=2321")?;
//! let read_from_tpm = plan.fill_from_tpm(&mut tpm)?; // PCRs no prediction gave (warn!)
//! assert!(read_from_tpm.is_empty());
//! let env = bootchain::seal::seal(&mut tpm, &plan.request(ParentChoice::Auto)?, b"secret")?;
//! bootchain::seal::write_envelope(&env, "root.envelope".as_ref(), None)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::Path;

use zeroize::Zeroizing;

use super::{add_lock_pcr, AuthorizeKey, LiteralPcrs, SealError, SealRequest};
use crate::hash::HashAlg;
use crate::pcr::{PcrIndex, PcrValues};
use crate::tpm::{ParentChoice, Tpm, TpmError};

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A PCR values file is not `pcr predict --json` / `eventlog replay --json` shaped.
    #[error("{path}")]
    Values {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: crate::pcr::PcrValuesError,
    },
    /// The public key file is neither an RSA public key PEM nor a UKI with `.pcrpkey`.
    #[error("{path}: no RSA public key (PEM) and no UKI with a .pcrpkey section")]
    Key {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Predicting PCR 11 for the UKI failed.
    #[error("predicting PCR 11")]
    Predict(#[source] crate::measure::MeasureError),
    /// Neither literal PCRs nor a signed policy: the secret would be bound to nothing.
    #[error("a policy needs literal PCRs, a signed PCR policy, or both")]
    Empty,
    /// Reading PCRs from the TPM failed.
    #[error(transparent)]
    Tpm(TpmError),
}

/// A sealing policy being put together; [`SealPlan::request`] turns it into a
/// [`SealRequest`]. Its `Debug` never shows the PIN.
#[non_exhaustive]
pub struct SealPlan {
    /// Bank of every PCR.
    pub bank: HashAlg,
    /// PCRs bound to literal values.
    pub pcrs: Vec<u32>,
    /// Values known so far (predictions); [`SealPlan::fill_from_tpm`] adds the rest.
    pub values: PcrValues,
    /// The key whose signed policies unlock.
    pub authorize: Option<AuthorizeKey>,
    /// The PIN (PolicyAuthValue).
    pub pin: Option<Zeroizing<Vec<u8>>>,
}

impl std::fmt::Debug for SealPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealPlan")
            .field("bank", &self.bank)
            .field("pcrs", &self.pcrs)
            .field("values", &self.values)
            .field("authorize", &self.authorize)
            .field("pin", &self.pin.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl SealPlan {
    /// An empty plan in `bank`.
    pub fn new(bank: HashAlg) -> Self {
        SealPlan {
            bank,
            pcrs: Vec::new(),
            values: PcrValues::new(),
            authorize: None,
            pin: None,
        }
    }

    /// Bind these PCRs to literal values.
    pub fn literal_pcrs(mut self, pcrs: &[u32]) -> Result<Self, crate::pcr::PcrIndexError> {
        for p in pcrs {
            let p = PcrIndex::new(*p)?.get();
            if !self.pcrs.contains(&p) {
                self.pcrs.push(p);
            }
        }
        Ok(self)
    }

    /// Take values from a PCR values JSON file (`bootchain pcr predict --json`, `eventlog
    /// replay --json`); later sources override earlier ones.
    pub fn values_from_json(mut self, path: &Path) -> Result<Self, PlanError> {
        let text =
            crate::fsutil::read_bounded(path, crate::fsutil::MAX_JSON_INPUT).map_err(|source| {
                PlanError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        let text = String::from_utf8_lossy(&text);
        let v = crate::pcr::parse_pcr_values_json(&text).map_err(|source| PlanError::Values {
            path: path.to_path_buf(),
            source,
        })?;
        self.values.extend(v);
        Ok(self)
    }

    /// Take PCR 11 from the value predicted for `uki` at boot `phase`, before the UKI ever
    /// boots.
    pub fn predicted_pcr11(
        mut self,
        uki: &Path,
        phase: &crate::measure::Phase,
    ) -> Result<Self, PlanError> {
        let phases = [phase.clone()];
        let pred = crate::measure::predict_uki(uki, None, &[self.bank], &phases)
            .map_err(PlanError::Predict)?;
        if let Some(v) = pred.phases.first().and_then(|p| p.values.first()) {
            self.values
                .insert((self.bank, crate::measure::PCR_KERNEL_BOOT), v.clone());
        }
        Ok(self)
    }

    /// Unlock with policies signed by the RSA key in `path` — a PEM public key, or a UKI whose
    /// `.pcrpkey` section holds it (what ukify embeds from `--pcr-public-key`) — over
    /// `signed_pcrs` (systemd's default: 11).
    pub fn authorize_from_file(
        mut self,
        path: &Path,
        signed_pcrs: &[u32],
    ) -> Result<Self, PlanError> {
        self.authorize = Some(AuthorizeKey {
            key: public_key_from_file(path)?,
            pcrs: signed_pcrs.to_vec(),
        });
        Ok(self)
    }

    /// Also seal to the lock PCR at zero ([`super::LOCK_PCR`]), which `bootchain-unseal`
    /// extends after every attempt.
    pub fn with_lock(mut self) -> Self {
        add_lock_pcr(self.bank, &mut self.pcrs, &mut self.values);
        self
    }

    /// Require a PIN.
    pub fn with_pin(mut self, pin: Zeroizing<Vec<u8>>) -> Self {
        self.pin = Some(pin);
        self
    }

    /// Literal PCRs with no value yet.
    pub fn missing_values(&self) -> Vec<u32> {
        self.pcrs
            .iter()
            .copied()
            .filter(|p| !self.values.contains_key(&(self.bank, *p)))
            .collect()
    }

    /// Fill the PCRs without a value from the TPM's current values and return them. Such a
    /// value comes from an unauthenticated PCR_Read: whoever controls the TPM channel chooses
    /// it, so prefer predictions and tell the user when this returns anything.
    pub fn fill_from_tpm(&mut self, tpm: &mut Tpm) -> Result<Vec<u32>, PlanError> {
        let missing = self.missing_values();
        if !missing.is_empty() {
            let want: Vec<(HashAlg, u32)> = missing.iter().map(|p| (self.bank, *p)).collect();
            self.values
                .extend(tpm.read_pcrs(&want).map_err(PlanError::Tpm)?);
        }
        Ok(missing)
    }

    /// Check that the plan binds something.
    pub fn check(&self) -> Result<(), PlanError> {
        if self.pcrs.is_empty() && self.authorize.is_none() {
            return Err(PlanError::Empty);
        }
        Ok(())
    }

    /// The request for [`super::seal`] under `parent`: the literal PCRs with their values
    /// (a PCR without one is [`SealError::MissingValue`]; fill them first).
    pub fn request(&self, parent: ParentChoice) -> Result<SealRequest<'_>, SealError> {
        Ok(SealRequest {
            parent,
            literal: LiteralPcrs::select(self.bank, &self.pcrs, &self.values)?,
            authorize: self.authorize.as_ref(),
            pin: self.pin.as_ref().map(|p| p.as_slice()),
        })
    }
}

/// The RSA public key in `path`: PEM, or the `.pcrpkey` section of a UKI (recognised by its
/// `MZ` signature; trailing NULs of the section removed).
pub fn public_key_from_file(path: &Path) -> Result<rsa::RsaPublicKey, PlanError> {
    let key_err = |source: Option<Box<dyn std::error::Error + Send + Sync>>| PlanError::Key {
        path: path.to_path_buf(),
        source,
    };
    // A key file is small; a UKI is read only for its headers and one section.
    let mut head = [0u8; 2];
    {
        use std::io::Read as _;
        let mut f = std::fs::File::open(path).map_err(|source| PlanError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let _ = f.read(&mut head);
    }
    let mut pem = if &head == b"MZ" {
        crate::ukiread::read_section(path, ".pcrpkey")
            .map_err(|e| key_err(Some(Box::new(e))))?
            .ok_or_else(|| key_err(None))?
    } else {
        crate::fsutil::read_bounded(path, crate::fsutil::MAX_JSON_INPUT).map_err(|source| {
            PlanError::Read {
                path: path.to_path_buf(),
                source,
            }
        })?
    };
    while pem.last() == Some(&0) {
        pem.pop();
    }
    crate::measure::rsa_public_key_from_pem(&pem).map_err(|e| key_err(Some(Box::new(e))))
}

impl From<PlanError> for SealError {
    fn from(e: PlanError) -> Self {
        SealError::Plan(Box::new(e))
    }
}
