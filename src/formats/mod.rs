//! Layer 2, formats: parsers and encoders of what the boot chain is made of — PE/COFF and
//! Authenticode, PKCS#7 signatures, keys and certificates, TCG event logs, TPM policy
//! digests — reading UKIs, and OVMF firmware images' SEV tables. Imports only the base layer (and each other, downwards:
//! `pe` ← `authenticode` ← `sign`; `keys` ← `signer` ← `sign`; `pkcs11` ← `signer`).

pub mod authenticode;
pub mod ccel;
pub(crate) mod der_lite;
pub mod eventlog;
#[cfg(feature = "build")]
pub mod genkey;
#[cfg(feature = "build")]
pub mod hwids;
pub mod keys;
pub mod ovmf;
pub mod pcrlock;
pub mod pe;
pub mod pkcs11;
pub mod policy;
pub mod quote;
pub mod sign;
pub mod signer;
pub mod spc;
pub mod tpm_import;
pub mod ukiread;
