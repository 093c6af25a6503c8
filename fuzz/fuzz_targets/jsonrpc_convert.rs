//! Fuzz target: `rpcgate::fuzzing::jsonrpc_convert`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rpcgate::fuzzing::jsonrpc_convert(data));
