//! Fuzz target: `rpcgate::fuzzing::websocket_pack`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rpcgate::fuzzing::websocket_pack(data));
