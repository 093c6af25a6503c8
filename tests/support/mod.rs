//! Shared helpers for integration tests: a scriptable Cocaine peer on
//! 127.0.0.1 written with `rpcgate::proto`, and a mux connected to it.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// in tests a failed unwrap is a failed test

// Each test file uses a different subset, and `pub` here is for the test
// crates that include this module.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use bytes::BytesMut;
use rpcgate::mux::{self, MuxConfig, MuxHandle};
use rpcgate::proto::{Frame, FrameCodec, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Encoder};

/// A listening test peer.
pub struct Peer {
    listener: TcpListener,
    pub addr: SocketAddr,
}

impl Peer {
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Self { listener, addr }
    }

    pub async fn accept(&self) -> PeerConn {
        let (stream, _) = self.listener.accept().await.unwrap();
        PeerConn::new(stream)
    }
}

/// One accepted connection, speaking frames.
pub struct PeerConn {
    pub stream: TcpStream,
    codec: FrameCodec,
    buf: BytesMut,
}

impl PeerConn {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            codec: FrameCodec::default(),
            buf: BytesMut::new(),
        }
    }

    /// The next frame, or `None` at EOF or on a reset.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self
                .codec
                .decode(&mut self.buf)
                .expect("client sent a valid frame")
            {
                return Some(frame);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Encodes and writes one frame.
    pub async fn send(&mut self, channel: u64, message: Message) {
        let mut out = BytesMut::new();
        self.codec.encode((channel, message), &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }
}

/// A mux connected to `addr`, its task spawned.
pub async fn connect(
    addr: SocketAddr,
    config: MuxConfig,
) -> (
    MuxHandle,
    JoinHandle<Result<(), std::sync::Arc<mux::ConnectionError>>>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (handle, connection) = mux::from_tcp(stream, config).unwrap();
    (handle, tokio::spawn(connection.run()))
}

/// A mux and the peer connection it talks to.
pub async fn pair(
    config: MuxConfig,
) -> (
    MuxHandle,
    PeerConn,
    JoinHandle<Result<(), std::sync::Arc<mux::ConnectionError>>>,
) {
    let peer = Peer::bind().await;
    let (connected, accepted) = tokio::join!(connect(peer.addr, config), peer.accept());
    (connected.0, accepted, connected.1)
}
