#![no_main]
//! See `bootchain::fuzzing::keys`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| bootchain::fuzzing::keys(data));
