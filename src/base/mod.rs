//! Layer 1, the base: hash algorithms and digests, PCRs, UEFI structures, atomic files.
//! Nothing here imports another layer.

#[cfg(feature = "build")]
pub mod configparser;
pub mod efi;
pub mod error;
pub mod fsutil;
pub mod hash;
pub mod pcr;
#[cfg(feature = "build")]
pub mod python;
