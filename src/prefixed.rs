//! Owns [`Prefixed`]: a stream with bytes already read from it put back in
//! front, for whoever had to look at a connection's first bytes (the PROXY
//! protocol header, the HTTP/2 preface) or took it back from hyper with
//! bytes unparsed.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream with some bytes already read from it put back in front.
#[derive(Debug)]
pub struct Prefixed<IO> {
    prefix: BytesMut,
    io: IO,
}

impl<IO> Prefixed<IO> {
    /// `io`, with `prefix` read first.
    pub fn new(prefix: BytesMut, io: IO) -> Self {
        Self { prefix, io }
    }

    /// Puts `bytes` in front of whatever is still unread.
    pub fn unread(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut prefix = BytesMut::with_capacity(bytes.len() + self.prefix.len());
        prefix.extend_from_slice(bytes);
        prefix.extend_from_slice(&self.prefix);
        self.prefix = prefix;
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, out);
        }
        let n = self.prefix.len().min(out.remaining());
        out.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
