//! Write batching (many frames per write call), backpressure without loss,
//! and decoded headers on received frames.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::BytesMut;
use rpcgate::mux::{self, Invocation, MuxConfig};
use rpcgate::proto::{Args, FrameCodec, Headers, Message, StreamEvent, TraceContext};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio_util::codec::Decoder;

/// Forwards to `inner`, counting write calls that wrote something.
struct CountingWriter<W> {
    inner: W,
    writes: Arc<AtomicUsize>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for CountingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(poll, Poll::Ready(Ok(n)) if n > 0) {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Never yields data; the mux only writes in this test.
struct Silent;

impl AsyncRead for Silent {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

#[tokio::test(flavor = "current_thread")]
async fn queued_frames_go_out_in_one_write() {
    let (client, mut server) = tokio::io::duplex(1 << 20);
    let writes = Arc::new(AtomicUsize::new(0));
    let writer = CountingWriter {
        inner: client,
        writes: Arc::clone(&writes),
    };
    let (handle, connection) = mux::new(Silent, writer, MuxConfig::default());
    // On a current-thread runtime the connection task cannot run until this
    // task awaits something pending, so all 100 opens queue up first.
    let mut channels = Vec::new();
    for _ in 0..100 {
        let message = Message::new(0, Args::Bytes("http".into()));
        channels.push(handle.open(Invocation::enqueue(message)).await.unwrap());
    }
    tokio::spawn(connection.run());

    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let mut frames = 0;
    while frames < 100 {
        server.read_buf(&mut buf).await.unwrap();
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            frames += 1;
            assert_eq!(frame.channel, frames);
        }
    }
    assert_eq!(
        writes.load(Ordering::SeqCst),
        1,
        "100 frames, one write call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_loses_nothing_and_writes_go_on() {
    let config = MuxConfig {
        channel_queue: 2,
        ..MuxConfig::default()
    };
    let (handle, mut peer, _conn) = support::pair(config).await;
    let message = Message::new(0, Args::Bytes("stream".into()));
    let mut slow = handle
        .open(Invocation::enqueue(message.clone()))
        .await
        .unwrap();
    assert_eq!(peer.next_frame().await.unwrap().channel, 1);
    for i in 0..200u32 {
        peer.send(1, Message::write(i.to_be_bytes().to_vec())).await;
    }
    peer.send(1, Message::close()).await;

    // While the slow channel's queue is full and reading is paused, new
    // channels are still opened and written.
    let _other = handle.open(Invocation::enqueue(message)).await.unwrap();
    assert_eq!(peer.next_frame().await.unwrap().channel, 2);

    let mut next = 0u32;
    while let Some(frame) = slow.receiver.recv().await {
        match frame.unwrap().stream_event().unwrap() {
            StreamEvent::Write(chunk) => {
                assert_eq!(chunk[..], next.to_be_bytes(), "in order, none lost");
                next += 1;
                tokio::task::yield_now().await;
            }
            StreamEvent::Close => break,
            StreamEvent::Error(e) => panic!("{e}"),
        }
    }
    assert_eq!(next, 200);
}

#[tokio::test]
async fn received_headers_are_decoded() {
    let (handle, mut peer, _conn) = support::pair(MuxConfig::default()).await;
    let mut channel = handle
        .open(Invocation::enqueue(Message::new(
            0,
            Args::Bytes("x".into()),
        )))
        .await
        .unwrap();
    peer.next_frame().await.unwrap();
    let trace = TraceContext {
        trace_id: 42,
        span_id: 43,
        parent_id: 44,
    };
    let mut headers = Headers::new();
    headers.set_trace(trace);
    peer.send(1, Message::close().with_headers(headers)).await;
    let frame = channel.receiver.recv().await.unwrap().unwrap();
    assert_eq!(frame.headers.trace(), Some(trace));
}

#[tokio::test(flavor = "current_thread")]
async fn a_blocked_last_frame_is_delivered_after_every_handle_is_gone() {
    // Current-thread runtime: the connection task runs only when this task
    // yields, which makes the interleaving below exact.
    let (client, mut server) = tokio::io::duplex(1 << 16);
    let config = MuxConfig {
        channel_queue: 1,
        ..MuxConfig::default()
    };
    let (handle, connection) = mux::from_io(client, config);
    let conn = tokio::spawn(connection.run());
    let message = Message::new(0, Args::Bytes("x".into()));
    let channel = handle.open(Invocation::enqueue(message)).await.unwrap();
    let (tx, mut rx) = channel.split();
    tx.close().await.unwrap();
    drop(handle); // nothing left that could send: the task may close once idle

    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        server.read_buf(&mut buf).await.unwrap();
        while let Some(frame) = codec.decode(&mut buf).unwrap() {
            seen.push(frame.ty);
        }
    }
    assert_eq!(seen, [0, 2]);
    let mut replies = BytesMut::new();
    for message in [Message::write("a"), Message::write("b"), Message::close()] {
        tokio_util::codec::Encoder::encode(&mut codec, (1, message), &mut replies).unwrap();
    }
    tokio::io::AsyncWriteExt::write_all(&mut server, &replies)
        .await
        .unwrap();
    // The task reads all three: "a" fills the queue, "b" blocks. Reading
    // "a" frees a slot; "b" moves in and the close, decoded next, blocks in
    // turn, after the channel already left the table.
    tokio::task::yield_now().await;
    let mut got = Vec::new();
    while let Some(frame) = rx.recv().await {
        got.push(frame.unwrap().stream_event().unwrap());
        tokio::task::yield_now().await;
    }
    assert_eq!(
        got,
        [
            StreamEvent::Write("a".into()),
            StreamEvent::Write("b".into()),
            StreamEvent::Close
        ],
        "the last frame must not be lost when the task closes"
    );
    assert!(conn.await.unwrap().is_ok());
}
