//! An in-process app peer for the mux benches: answers every request
//! channel, on its `close`, with a 13-byte `write` and a `close`. Replies
//! to everything decoded from one read go out in one write.

use bytes::BytesMut;
use rpcgate::proto::{FrameCodec, Message};
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
