//! Fuzz target: `rpcgate::fuzzing::header_table`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rpcgate::fuzzing::header_table(data));
