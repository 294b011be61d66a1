//! Layer 3, prediction: what systemd-stub measures into PCR 11 and signs in `.pcrsig`
//! ([`measure`]), and what firmware and the Linux stub measure into PCR 4, 7 and 9 over a
//! whole boot ([`firmware`]), AMD SEV/SEV-ES/SEV-SNP launch digests ([`snp`]) and the TDX RTMRs
//! a UKI boot extends ([`tdx`]), a digest cache for predicting many images that share inputs
//! ([`cache`]), and all of them together as reference values for verifiers
//! ([`reference`](mod@reference): bootchain JSON, Trustee RVPS, TCG CEL-JSON). Pure computation over formats; no TPM.

pub mod attest;
pub mod cache;
pub mod firmware;
pub mod kernel_config;
pub mod measure;
pub mod phase;
pub mod reference;
pub mod snp;
pub mod tdx;
