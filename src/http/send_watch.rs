//! Watched writes: owns what a client connection's writes tell the
//! connection. It only observes: [`SendWatch`] wraps the connection's
//! stream and records
//! - how long its bytes have waited for a client that takes none (the
//!   socket stays full), so that the connection can cut a client that
//!   reads nothing for `limits.send_timeout_ms` (nginx's `send_timeout`);
//! - whether bytes may still sit in hyper's write buffer: hyper flushes
//!   the stream only once it wrote everything it buffered, so a write
//!   since the last completed flush means bytes may still be there (an
//!   HTTP/1.1 push stream is taken from hyper only once it is empty).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// Since when a connection's writes have been waiting for its client.
#[derive(Debug)]
pub(super) struct SendStall {
    base: Instant,
    /// Microseconds from `base` to the first write that found the socket
    /// full, plus one; 0 while writes go through.
    since: AtomicU64,
}

impl Default for SendStall {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            since: AtomicU64::new(0),
        }
    }
}

impl SendStall {
    /// How long writes have waited for the client; `None` if they do not.
    pub(super) fn stalled_for(&self) -> Option<Duration> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            since => {
                let at = self.base + Duration::from_micros(since - 1);
                Some(Instant::now().saturating_duration_since(at))
            }
        }
    }

    fn blocked(&self) {
        if self.since.load(Ordering::Relaxed) == 0 {
            let now = Instant::now().saturating_duration_since(self.base);
            let micros = u64::try_from(now.as_micros()).unwrap_or(u64::MAX - 1);
            self.since.store(micros + 1, Ordering::Relaxed);
        }
    }

    fn moved(&self) {
        // A load first: the common case (not stalled) writes nothing.
        if self.since.load(Ordering::Relaxed) != 0 {
            self.since.store(0, Ordering::Relaxed);
        }
    }

    /// Records the outcome of one write or flush.
    fn saw<T>(&self, polled: &Poll<T>) {
        match polled {
            Poll::Pending => self.blocked(),
            Poll::Ready(_) => self.moved(),
        }
    }
}

/// A client connection's stream, reporting its stalled writes to a
/// [`SendStall`] and whether a write came since the last completed flush
/// to `unflushed`.
#[derive(Debug)]
pub(super) struct SendWatch<IO> {
    io: IO,
    stall: Arc<SendStall>,
    unflushed: Arc<AtomicBool>,
}

impl<IO> SendWatch<IO> {
    /// `io`, reporting to `stall` and `unflushed`.
    pub(super) fn new(io: IO, stall: Arc<SendStall>, unflushed: Arc<AtomicBool>) -> Self {
        Self {
            io,
            stall,
            unflushed,
        }
    }

    /// The stream back.
    pub(super) fn into_inner(self) -> IO {
        self.io
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for SendWatch<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SendWatch<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.unflushed.store(true, Ordering::Relaxed);
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.stall.saw(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.unflushed.store(true, Ordering::Relaxed);
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.stall.saw(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.unflushed.store(false, Ordering::Relaxed);
        }
        self.stall.saw(&polled);
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_full_socket_counts_from_the_first_blocked_write_until_one_goes_through() {
        let stall = Arc::new(SendStall::default());
        // A pipe of 16 bytes whose reader reads nothing yet.
        let (client, server) = tokio::io::duplex(16);
        let mut io = SendWatch::new(server, Arc::clone(&stall), Arc::default());
        io.write_all(&[0; 16]).await.unwrap();
        assert_eq!(stall.stalled_for(), None, "the pipe took it all");
        let blocked = tokio::spawn(async move {
            io.write_all(b"more").await.unwrap();
            io
        });
        // The write now waits for the reader: the stall shows.
        while stall.stalled_for().is_none() {
            tokio::task::yield_now().await;
        }
        tokio::time::advance(Duration::from_secs(7)).await;
        let stalled = stall.stalled_for().unwrap();
        assert!(stalled >= Duration::from_secs(7), "{stalled:?}");
        // The reader takes the bytes: the write goes through and clears it.
        let mut client = client;
        let mut buf = [0; 32];
        let mut read = 0;
        while read < 20 {
            read += tokio::io::AsyncReadExt::read(&mut client, &mut buf)
                .await
                .unwrap();
        }
        let _io = blocked.await.unwrap();
        assert_eq!(stall.stalled_for(), None);
    }
}
