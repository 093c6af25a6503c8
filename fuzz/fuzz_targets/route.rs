//! Fuzz target: `rpcgate::fuzzing::route`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rpcgate::fuzzing::route(data));
