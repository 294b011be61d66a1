#![no_main]
//! See `bootchain::fuzzing::pe_uki`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| bootchain::fuzzing::pe_uki(data));
