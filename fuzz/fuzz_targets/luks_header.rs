#![no_main]
//! See `bootchain::fuzzing::luks_header`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| bootchain::fuzzing::luks_header(data));
