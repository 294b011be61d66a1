#![no_main]
//! See `bootchain::fuzzing::pcrsig`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| bootchain::fuzzing::pcrsig(data));
