#![no_main]
//! See `bootchain::fuzzing::eventlog`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| bootchain::fuzzing::eventlog(data));
