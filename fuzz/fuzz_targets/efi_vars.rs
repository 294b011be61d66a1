#![no_main]
//! See `bootchain::fuzzing::efi_vars`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| bootchain::fuzzing::efi_vars(data));
