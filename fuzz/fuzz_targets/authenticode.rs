#![no_main]
//! See `bootchain::fuzzing::authenticode`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| bootchain::fuzzing::authenticode(data));
