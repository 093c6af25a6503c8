//! An in-process app peer for the mux benches: answers every request
//! channel, on its `close`, with a 13-byte `write` and a `close`. Replies
//! to everything decoded from one read go out in one write.

use bytes::{Bytes, BytesMut};
use rpcgate::mux::{self, Invocation, MuxConfig, MuxHandle};
use rpcgate::proto::{Args, FrameCodec, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

pub(crate) async fn serve<IO: AsyncRead + AsyncWrite + Unpin>(mut io: IO) {
    let mut codec = FrameCodec::default();
    let mut input = BytesMut::with_capacity(64 << 10);
    let mut output = BytesMut::with_capacity(64 << 10);
    loop {
        match io.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while let Ok(Some(frame)) = codec.decode(&mut input) {
            if frame.ty == 2 {
                let reply = Message::write(&b"Hello, World!"[..]);
                codec.encode((frame.channel, reply), &mut output).unwrap();
                codec
                    .encode((frame.channel, Message::close()), &mut output)
                    .unwrap();
            }
        }
        if !output.is_empty() {
            if io.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
        }
    }
}

/// A mux over an in-memory duplex to a spawned [`serve`] peer. Call it
/// inside the runtime that will drive it.
pub(crate) fn connect() -> MuxHandle {
    let (client, server) = tokio::io::duplex(1 << 20);
    tokio::spawn(serve(server));
    let (handle, connection) = mux::from_io(client, MuxConfig::default());
    tokio::spawn(connection.run());
    handle
}

/// One request round trip on its own channel: enqueue + `body` + close,
/// then every reply frame. Returns the number of frames.
pub(crate) async fn request(handle: &MuxHandle, body: Bytes) -> usize {
    let message = Message::new(0, Args::Bytes(Bytes::from_static(b"http")));
    let channel = handle.open(Invocation::enqueue(message)).await.unwrap();
    let (mut tx, mut rx) = channel.split();
    tx.write(body).await.unwrap();
    tx.close().await.unwrap();
    let mut frames = 0;
    while let Some(frame) = rx.recv().await {
        frame.unwrap();
        frames += 1;
    }
    frames
}
