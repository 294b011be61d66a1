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
//! | 1 base | `base/` | [`hash`], [`pcr`], [`efi`], [`fsutil`] |
//! | 2 formats | `formats/` | [`pe`], [`authenticode`], [`sign`], [`keys`], [`eventlog`], [`policy`], [`ukiread`] |
//! | 3 prediction | `predict/` | [`measure`] (PCR 11, `.pcrsig`), [`firmware`] (PCR 4/7/9, whole boots) |
//! | 4 building | `build/` | [`uki`] (the builder; re-exports [`ukiread`]) |
//! | 5 sealing (feature `tpm`) | `seal/` | [`seal`], [`tpm`], [`pin`] |
//! | 6 LUKS (feature `luks`) | `luks/` | [`luks`], [`token`] |
//!
//! Layers 1-4 are pure computation over files and never need a TPM: with
//! `default-features = false` the crate builds without tss-esapi (libtss2) and without the
//! cryptsetup wrappers.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod base;
pub mod build;
pub mod formats;
#[cfg(feature = "luks")]
pub mod luks;
pub mod predict;
#[cfg(feature = "tpm")]
pub mod seal;

#[doc(hidden)]
pub mod fuzzing;

pub use base::{efi, error, fsutil, hash, pcr};
pub use build::uki;
pub use formats::{authenticode, eventlog, keys, pe, policy, sign, ukiread};
#[cfg(feature = "luks")]
pub use luks::token;
pub use predict::{firmware, measure};
#[cfg(feature = "tpm")]
pub use seal::{pin, tpm};

pub use formats::der_lite::DerShapeError;
