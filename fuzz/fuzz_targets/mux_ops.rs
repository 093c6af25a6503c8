//! Fuzz target: `rpcgate::fuzzing::mux_ops`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rpcgate::fuzzing::mux_ops(data));
