//! bootchain: the boot chain of confidential VMs as one Rust library — build and sign unified
//! kernel images, predict what firmware and systemd-stub measure, seal disk keys to a TPM
//! policy, and unseal them in the initramfs.
//!
//! # Layers
//!
//! Modules live in folders by layer; each imports only the layers above it in this list
//! (a test in `tests/layering.rs` checks it):
//!
//! | layer | folder | modules |
//! |---|---|---|
//! | 1 base | `base/` | [`hash`], [`pcr`], [`efi`], [`fsutil`], [`python`], [`configparser`] |
//! | 2 formats | `formats/` | [`pe`], [`authenticode`], [`sign`], [`keys`], [`signer`] (key files, PKCS#11 tokens, signatures made elsewhere), [`pkcs11`], [`genkey`], [`hwids`], [`eventlog`], [`policy`], [`ukiread`], [`tpm_import`], [`ovmf`], [`ccel`], [`quote`] (TPM quotes, signatures, AK public keys) |
//! | 3 prediction | `predict/` | [`measure`] (PCR 11, `.pcrsig`, boot phases), [`kernel_config`] (PCR 12/13: profiles, addons, sidecar files), [`firmware`] (PCR 4/7/9, whole boots), [`snp`] (AMD SEV-SNP launch digests), [`tdx`] (TDX RTMR 1 and 2), [`reference`](mod@reference) (reference values for verifiers), [`attest`] (quote verification) |
//! | 4 building (feature `build`) | `build/` | [`uki`] (the builder; re-exports [`ukiread`]) |
//! | 5 sealing (feature `tpm`) | `seal/` | `seal`, `tpm`, `pin` |
//! | 6 LUKS (feature `luks`) | `luks/` | `luks`, `token` |
//!
//! Each module has its own error enum; all of them convert into [`Error`].
//!
//! Layers 1-4 are pure computation over files and never need a TPM: with
//! `default-features = false` the crate builds without tss-esapi (libtss2) and without the
//! cryptsetup wrappers.
//!
//! Features (all on by default): `tpm` (layer 5), `luks` (layer 6), `tcti-net` (TCTIs other
//! than `device:`), `pkcs11` (signing keys in PKCS#11 tokens through `cryptoki`), `build`
//! (layer 4, [`genkey`], [`hwids`], [`configparser`] and the Python-compatible JSON printers
//! of [`python`]). bootchain-unseal takes `luks` alone.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod base;
#[cfg(feature = "build")]
pub mod build;
pub mod formats;
#[cfg(feature = "luks")]
pub mod luks;
pub mod predict;
#[cfg(feature = "tpm")]
pub mod seal;

#[doc(hidden)]
pub mod fuzzing;

#[cfg(feature = "build")]
pub use base::{configparser, python};
pub use base::{efi, error, fsutil, hash, pcr};
#[cfg(feature = "build")]
pub use build::uki;
pub use formats::{
    authenticode, ccel, eventlog, keys, ovmf, pcrlock, pe, pkcs11, policy, quote, sign, signer,
    tpm_import, ukiread,
};
#[cfg(feature = "build")]
pub use formats::{genkey, hwids};
#[cfg(feature = "luks")]
pub use luks::token;
pub use predict::{attest, cache, firmware, kernel_config, measure, reference, snp, tdx};
#[cfg(feature = "tpm")]
pub use seal::{pin, tpm};

pub use formats::der_lite::DerShapeError;

/// Any error of this crate, for callers that handle them alike (rustls' style: one
/// `#[non_exhaustive]` enum; each module keeps its own precise error, which converts into
/// this with `?` and stays reachable by matching or as [`std::error::Error::source`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A digest or hash algorithm name.
    #[error(transparent)]
    Digest(#[from] hash::DigestParseError),
    /// An unknown hash algorithm name.
    #[error(transparent)]
    HashAlg(#[from] hash::UnknownHashAlg),
    /// A PCR index out of range.
    #[error(transparent)]
    PcrIndex(#[from] pcr::PcrIndexError),
    /// PCR values JSON.
    #[error(transparent)]
    PcrValues(#[from] pcr::PcrValuesError),
    /// UEFI structures.
    #[error(transparent)]
    Efi(#[from] efi::FirmwareError),
    /// PE/COFF headers.
    #[error(transparent)]
    Pe(#[from] pe::PeError),
    /// Authenticode hashing.
    #[error(transparent)]
    Authenticode(#[from] authenticode::AuthenticodeError),
    /// Authenticode signatures.
    #[error(transparent)]
    Sign(#[from] sign::SignError),
    /// Keys and certificates.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// A signing backend (PKCS#11 token, signature made elsewhere).
    #[error(transparent)]
    Signer(#[from] signer::SigningError),
    /// TCG event logs.
    #[error(transparent)]
    EventLog(#[from] eventlog::EventLogError),
    /// Sealing for TPM2_Import (offline).
    #[error(transparent)]
    TpmImport(#[from] tpm_import::ImportError),
    /// TPM policy digests.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// Reading a UKI.
    #[error(transparent)]
    Inspect(#[from] ukiread::InspectError),
    /// PCR 11 prediction and `.pcrsig`.
    #[error(transparent)]
    Measure(#[from] measure::MeasureError),
    /// PCR 12 prediction (addons).
    #[error(transparent)]
    Addon(#[from] kernel_config::AddonError),
    /// Whole-boot prediction.
    #[error(transparent)]
    Boot(#[from] firmware::BootError),
    /// Secure Boot variable files.
    #[error(transparent)]
    VariableFile(#[from] firmware::VariableFileError),
    /// OVMF firmware images (footer table, SEV metadata).
    #[error(transparent)]
    Ovmf(#[from] ovmf::OvmfError),
    /// AMD SEV/SEV-ES/SEV-SNP launch digests.
    #[error(transparent)]
    Snp(#[from] snp::SnpError),
    /// TDX CC event logs (CCEL).
    #[error(transparent)]
    Ccel(#[from] ccel::CcelError),
    /// RTMR values JSON.
    #[error(transparent)]
    RtmrValues(#[from] ccel::RtmrValuesError),
    /// TPM quotes, their signatures and AK public keys.
    #[error(transparent)]
    Quote(#[from] quote::QuoteError),
    /// Quote verification.
    #[error(transparent)]
    Attest(#[from] attest::AttestError),
    /// TDX RTMR prediction.
    #[error(transparent)]
    Tdx(#[from] tdx::TdxError),
    /// Reference values.
    #[error(transparent)]
    Reference(#[from] reference::ReferenceError),
    /// Building a UKI.
    #[cfg(feature = "build")]
    #[error(transparent)]
    Uki(#[from] uki::UkiError),
    /// A `ukify.conf`.
    #[cfg(feature = "build")]
    #[error(transparent)]
    UkifyConfig(#[from] uki::UkifyConfigError),
    /// Sealing and unsealing.
    #[cfg(feature = "tpm")]
    #[error(transparent)]
    Seal(#[from] seal::SealError),
    /// Putting a sealing policy together.
    #[cfg(feature = "tpm")]
    #[error(transparent)]
    Plan(#[from] seal::plan::PlanError),
    /// The TPM.
    #[cfg(feature = "tpm")]
    #[error(transparent)]
    Tpm(#[from] tpm::TpmError),
    /// PINs.
    #[cfg(feature = "tpm")]
    #[error(transparent)]
    Pin(#[from] pin::PinError),
    /// LUKS2 headers.
    #[cfg(feature = "luks")]
    #[error(transparent)]
    Luks(#[from] luks::LuksError),
    /// TPM2 tokens.
    #[cfg(feature = "luks")]
    #[error(transparent)]
    Token(#[from] token::TokenError),
    /// TPM2 tokens of a LUKS2 volume.
    #[cfg(feature = "luks")]
    #[error(transparent)]
    LuksToken(#[from] token::LuksTokenError),
}
