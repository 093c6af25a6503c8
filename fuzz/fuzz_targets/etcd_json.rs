//! Fuzz target: `rpcgate::fuzzing::etcd_json`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| rpcgate::fuzzing::etcd_json(data));
