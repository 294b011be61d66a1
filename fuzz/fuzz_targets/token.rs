#![no_main]
//! See `bootchain::fuzzing::token`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| bootchain::fuzzing::token(data));
