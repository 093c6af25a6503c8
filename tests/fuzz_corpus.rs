//! Runs every fuzz target's function over its committed seed corpus
//! (`fuzz/corpus/<target>/`), so stable CI covers the fuzz targets.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

use std::path::Path;

fn run_corpus(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        f(&data);
        seeds += 1;
    }
    assert!(
        seeds >= 3,
        "{target}: the corpus at {} has {seeds} seeds",
        dir.display()
    );
}

#[test]
fn frame_decode_corpus() {
    run_corpus("frame_decode", rpcgate::fuzzing::frame_decode);
}

#[test]
fn split_stream_corpus() {
    run_corpus("split_stream", rpcgate::fuzzing::split_stream);
}

#[test]
fn header_table_corpus() {
    run_corpus("header_table", rpcgate::fuzzing::header_table);
}

#[test]
fn mux_ops_corpus() {
    run_corpus("mux_ops", rpcgate::fuzzing::mux_ops);
}

#[test]
fn proxy_header_corpus() {
    run_corpus("proxy_header", rpcgate::fuzzing::proxy_header);
}

#[test]
fn jsonrpc_convert_corpus() {
    run_corpus("jsonrpc_convert", rpcgate::fuzzing::jsonrpc_convert);
}

#[test]
fn route_corpus() {
    run_corpus("route", rpcgate::fuzzing::route);
}

#[test]
fn websocket_pack_corpus() {
    run_corpus("websocket_pack", rpcgate::fuzzing::websocket_pack);
}

#[test]
fn etcd_json_corpus() {
    run_corpus("etcd_json", rpcgate::fuzzing::etcd_json);
}
