#![no_main]
//! See `bootchain::fuzzing::envelope`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| bootchain::fuzzing::envelope(data));
