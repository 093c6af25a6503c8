//! Fuzz target: `rpcgate::fuzzing::proxy_header`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rpcgate::fuzzing::proxy_header(data));
