//! bootchain: the boot chain of confidential VMs as one Rust library.
//!
//! - [`uki`]: build unified kernel images from the systemd stub (like `ukify build`) and
//!   inspect them;
//! - [`authenticode`]: the PE image hash that firmware measures and checks;
//! - [`sign`]: Authenticode PKCS#7 signing and verification (like `sbsign` / `sbverify`);
//! - [`pe`]: PE/COFF header parsing; [`keys`]: key and certificate loading;
//! - [`hash`]: hash algorithms and digests shared by all of the above.
//!
//! Everything here is pure computation over files: no module needs a TPM.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod authenticode;
mod der_lite;
pub mod eventlog;
pub mod firmware;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod keys;
pub mod luks;
pub mod measure;
pub mod pe;
pub mod pin;
pub mod policy;
pub mod seal;
pub mod sign;
pub mod token;
pub mod tpm;
pub mod uki;

pub use der_lite::DerShapeError;
