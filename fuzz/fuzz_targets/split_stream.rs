//! Fuzz target: `rpcgate::fuzzing::split_stream`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rpcgate::fuzzing::split_stream(data));
