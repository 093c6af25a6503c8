//! Fuzz target: `rpcgate::fuzzing::frame_decode`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rpcgate::fuzzing::frame_decode(data));
