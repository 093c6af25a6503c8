use super::*;

#[test]
fn targets_accept_trivial_inputs() {
    for data in [&[][..], &[0], &[0x94, 1, 0, 0x90, 0x90], &[0xff; 64]] {
        frame_decode(data);
        split_stream(data);
        header_table(data);
        mux_ops(data);
        jsonrpc_convert(data);
        route(data);
        websocket_pack(data);
        etcd_json(data);
    }
}
