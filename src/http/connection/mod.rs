//! One client connection, from accept to close: owns telling HTTP/2 (its
//! preface, with prior knowledge or after ALPN) from HTTP/1.1, running
//! hyper's connection for either, closing it gracefully on shutdown, on the
//! idle timeout or on abuse, and parking idle HTTP/1.1 connections.
//!
//! Parking: an HTTP/1.1 connection with nothing in flight for
//! `limits.idle_release` is ended at the request boundary and taken back
//! from hyper, which frees hyper's read and write buffers (16 KiB); the
//! socket then waits on its own, and its next bytes start a fresh hyper
//! connection. This is what keeps thousands of idle keep-alive clients
//! cheap. HTTP/2 connections are not parked.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::body::{GatewayBody, Guarded};
use super::layers::LayeredResponse;
use super::log_limit::LogLimit;
use super::push_h1;
use super::send_watch::{SendStall, SendWatch};
use super::{ConnectionLimit, GatewayError, Handler};
use crate::config::LimitsConfig;
use crate::prefixed::Prefixed;

mod activity;
mod drive;
mod service;

use self::activity::*;
use self::drive::*;
use self::service::*;

/// What a client sends first on an HTTP/2 connection.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// On shutdown, how long a connection with no request in flight gets to
/// send one before it is closed (at most; see [`Watch::grace`]): one
/// accepted but not used yet may be sending its first request right now,
/// and a kept-alive HTTP/1.1 client may have sent its next one before it
/// could learn that the gateway is closing. Either is answered, with
/// `Connection: close`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// The header count hyper allows when none is configured.
const HYPER_MAX_HEADERS: usize = 100;

/// A parked connection reads its next bytes into this much.
const PARKED_READ: usize = 64;

/// The WARN line for a connection closed for rapid reset (either kind):
/// one a second at most, with the count of those held back, so a flood of
/// hostile connections cannot flood the log.
static RAPID_RESET_LOG: LogLimit = LogLimit::new(Duration::from_secs(1));

/// Serves one client connection (HTTP/1.1 or HTTP/2, plain or after a TLS
/// handshake) until it ends, or closes it gracefully on `shutdown`.
/// `client_subject` is the verified client certificate's subject (mTLS):
/// it replaces whatever the client sent in the configured header
/// (`x-client-subject` without a `[tls]` section), which is removed from
/// every request, so a client can never forge it. While parked, it can be
/// closed to make room in `connections` (see [`ConnectionLimit::acquire`]).
pub async fn serve_connection<I>(
    io: I,
    peer: Option<SocketAddr>,
    handler: Arc<Handler>,
    connections: &ConnectionLimit,
    shutdown: CancellationToken,
    client_subject: Option<HeaderValue>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_prefixed(
        Prefixed::new(BytesMut::new(), io),
        peer,
        handler,
        connections,
        shutdown,
        client_subject,
    )
    .await;
}

/// [`serve_connection`] for a stream that may carry bytes already read
/// from it (after a PROXY protocol header): the HTTP/2 sniffing puts its
/// bytes back in the same place, so reads go through one wrapper only.
pub(crate) async fn serve_prefixed<I>(
    io: Prefixed<I>,
    peer: Option<SocketAddr>,
    handler: Arc<Handler>,
    connections: &ConnectionLimit,
    shutdown: CancellationToken,
    client_subject: Option<HeaderValue>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _open = Open::new(Arc::clone(&handler));
    let cut = handler.cut.clone();
    // Limits of the connection as a whole are fixed when it opens.
    let config = handler.config();
    let limits = config.limits.clone();
    let activity = Arc::new(Activity::new(limits.max_premature_resets));
    let watch = Watch {
        activity: &activity,
        limits: &limits,
        shutdown: &shutdown,
        cut: &cut,
        peer,
        grace: shutdown_grace(&limits, config.shutdown_timeout),
        connections,
    };
    drop(config);
    let service = RequestService {
        handler,
        peer,
        peer_header: peer.and_then(|p| HeaderValue::from_str(&p.ip().to_string()).ok()),
        client_subject,
        activity: Arc::clone(&activity),
    };
    let result = match sniff(io, &watch).await {
        Sniffed::H2(io) => serve_h2(io, service, &watch).await,
        Sniffed::H1(io) => serve_h1(io, service, &watch).await,
        Sniffed::Gone => Ok(()),
    };
    // A push stream handed over as the connection ended (it refers to the
    // connection: kept, it would keep it alive).
    drop(activity.handoff.take());
    if let Err(e) = result {
        if e.is_parse_too_large() {
            crate::metrics::limit_hit("header_size");
        }
        if is_excessive_load(&e) {
            // HTTP/2 streams reset before they were processed, past
            // `limits.h2_max_pending_resets` (h2 closed it with GOAWAY).
            crate::metrics::limit_hit("h2_pending_resets");
            log_rapid_reset(peer, "resets streams before they are processed");
        }
        tracing::debug!(error = ?e, "http connection ended");
    }
}

/// Whether a connection ended on HTTP/2's `ENHANCE_YOUR_CALM`, which h2
/// sends (and ends with) when a client resets streams, or makes it reset
/// them, faster than its limits allow: rapid reset. hyper has no accessor
/// for the reason, and h2 is not a direct dependency, so its name in the
/// error's debug text is what tells.
fn is_excessive_load(error: &hyper::Error) -> bool {
    format!("{error:?}").contains("ENHANCE_YOUR_CALM")
}

/// Logs a connection closed for rapid reset, at most once a second (see
/// [`RAPID_RESET_LOG`]). `what` says what its client does.
fn log_rapid_reset(peer: Option<SocketAddr>, what: &str) {
    if let Some(suppressed) = RAPID_RESET_LOG.allow() {
        tracing::warn!(
            peer = ?peer,
            suppressed,
            "closing a connection whose client {what} (rapid reset); \
             `suppressed` more like it since the last such line"
        );
    }
}

/// The shutdown grace of a connection: [`SHUTDOWN_GRACE`], but never past
/// the head timeout, nor past an eighth of the shutdown deadline: an idle
/// connection may wait out a few graces in a row (one to send a request,
/// one for hyper to end, again if bytes came), and must not be cut.
fn shutdown_grace(limits: &LimitsConfig, shutdown_timeout: Duration) -> Duration {
    SHUTDOWN_GRACE
        .min(limits.header_timeout)
        .min(shutdown_timeout / 8)
}

/// What a connection is watched for, besides its requests.
struct Watch<'a> {
    activity: &'a Activity,
    limits: &'a LimitsConfig,
    /// Close gracefully (the gateway is stopping).
    shutdown: &'a CancellationToken,
    /// Drop at once (the shutdown deadline passed).
    cut: &'a CancellationToken,
    peer: Option<SocketAddr>,
    /// Once shutting down, how long a connection with nothing in flight
    /// gets to send a request before it is closed (see [`shutdown_grace`]).
    grace: Duration,
    /// Where a parked connection waits to be closed to make room.
    connections: &'a ConnectionLimit,
}

/// The protocol a connection speaks, by its first bytes.
enum Sniffed<I> {
    H1(Prefixed<I>),
    H2(Prefixed<I>),
    /// Closed, silent past the head timeout, or cut.
    Gone,
}

/// Reads until the first bytes tell HTTP/2's preface from anything else
/// (HTTP/1.1), within the head timeout (shortened to the first-request
/// grace once shutting down). The bytes read are put back.
async fn sniff<I: AsyncRead + Unpin>(mut io: Prefixed<I>, w: &Watch<'_>) -> Sniffed<I> {
    let mut buf = BytesMut::with_capacity(H2_PREFACE.len());
    let mut deadline = Instant::now() + w.limits.header_timeout;
    let mut stopping = false;
    loop {
        if !H2_PREFACE.starts_with(&buf) {
            io.unread(&buf);
            return Sniffed::H1(io);
        }
        if buf.len() == H2_PREFACE.len() {
            io.unread(&buf);
            return Sniffed::H2(io);
        }
        tokio::select! {
            read = io.read_buf(&mut buf) => {
                if !matches!(read, Ok(n) if n > 0) {
                    return Sniffed::Gone;
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                crate::metrics::limit_hit("header_timeout");
                return Sniffed::Gone;
            }
            () = w.shutdown.cancelled(), if !stopping => {
                stopping = true;
                deadline = deadline.min(Instant::now() + w.grace);
            }
            () = w.cut.cancelled() => return Sniffed::Gone,
        }
    }
}

async fn serve_h2<I>(
    io: Prefixed<I>,
    service: RequestService,
    w: &Watch<'_>,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(w.limits.h2_max_concurrent_streams)
        .max_header_list_size(w.limits.h2_max_header_list_size)
        .max_pending_accept_reset_streams(w.limits.h2_max_pending_resets);
    let io = SendWatch::new(
        io,
        Arc::clone(&w.activity.send_stall),
        Arc::clone(&w.activity.unflushed),
    );
    let mut connection = Box::pin(builder.serve_connection(TokioIo::new(io), service));
    match drive(connection.as_mut(), w, None, None).await {
        Ended::Done(result) => result,
        Ended::Parked | Ended::Cut | Ended::HandedOff => Ok(()),
    }
}

/// Serves HTTP/1.1 with one hyper connection after another: each ends
/// when the client is done, or is parked when idle (see the module docs).
async fn serve_h1<I>(
    mut io: Prefixed<I>,
    service: RequestService,
    w: &Watch<'_>,
) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // No hyper timer: hyper's head timeout sets, polls and drops a boxed
    // timer for every request, 3% of the gateway's CPU under load.
    // `drive` enforces the head timeout with the connection's idle check.
    let mut builder = http1::Builder::new();
    builder.max_buf_size(w.limits.max_header_bytes);
    // hyper's own limit is 100 headers, parsed into stack arrays; any
    // explicit limit (even 100) makes it build heap-sized ones for every
    // request, which showed in the load profile.
    if w.limits.max_headers != HYPER_MAX_HEADERS {
        builder.max_headers(w.limits.max_headers);
    }
    // Once shutting down, bytes found after hyper ended an idle
    // connection are served (with `Connection: close`) once, not dropped.
    let mut rescued = false;
    loop {
        if w.shutdown.is_cancelled() {
            // Shut down while parked, or while hyper was ending.
            w.activity.closing();
        }
        // Boxed: its buffers and state live only while it serves.
        let watched = SendWatch::new(
            io,
            Arc::clone(&w.activity.send_stall),
            Arc::clone(&w.activity.unflushed),
        );
        let mut connection =
            Box::pin(builder.serve_connection(TokioIo::new(watched), service.clone()));
        let ended = drive(
            connection.as_mut(),
            w,
            Some(w.limits.idle_release),
            Some(w.limits.header_timeout),
        )
        .await;
        let parked = match ended {
            Ended::Cut => return Ok(()),
            Ended::Done(Err(e)) => return Err(e),
            Ended::Done(Ok(())) => false,
            Ended::Parked => true,
            Ended::HandedOff => {
                // hyper wrote all it had (the push stream's head last),
                // and holds nothing the stream needs: its buffers go.
                let io = Pin::into_inner(connection).into_parts().io.into_inner();
                if let Some((push, busy)) = w.activity.handoff.take() {
                    let io = io.into_inner();
                    push_h1::serve(io, push, &w.activity.stream_cut, w.cut).await;
                    drop(busy);
                }
                return Ok(());
            }
        };
        let parts = Pin::into_inner(connection).into_parts();
        io = parts.io.into_inner().into_inner();
        io.unread(&parts.read_buf);
        // Even empty, hyper's read buffer holds its allocation: let go.
        let mut unread = !parts.read_buf.is_empty();
        drop(parts.read_buf);
        if let Some(session) = w.activity.take_upgrade() {
            // hyper wrote the 101 and gave the socket back (an upgrade under
            // `poll_without_shutdown`), with what it read ahead in front:
            // the socket is the WebSocket's now.
            session.run(io).await;
            return Ok(());
        }
        if !parked && !rescued && w.shutdown.is_cancelled() {
            // Closed while idle on shutdown: a request the client sent
            // before it could learn so may be in hyper's buffer, or
            // already in the socket's. Served, it is answered with
            // `Connection: close`; dropped, the client would see nothing.
            rescued = true;
            unread = unread || has_bytes_now(&mut io).await;
            if unread {
                w.activity.waiting_since_now();
                continue;
            }
        }
        if !parked {
            // The client is done (closed, or no keep-alive): end it
            // cleanly (a FIN, or TLS close_notify), unless cut meanwhile.
            tokio::select! {
                _ = io.shutdown() => {}
                () = w.cut.cancelled() => {}
            }
            return Ok(());
        }
        if !unread && !park(&mut io, w).await {
            return Ok(());
        }
        // Bytes came: the wait for their head starts now.
        w.activity.waiting_since_now();
    }
}

/// Whether bytes can be read from `io` at once, without waiting (they are
/// put back). Best effort: it sees what the runtime already knows came.
async fn has_bytes_now<I: AsyncRead + Unpin>(io: &mut Prefixed<I>) -> bool {
    let mut first = [0u8; PARKED_READ];
    tokio::select! {
        biased;
        read = io.read(&mut first) => match read {
            Ok(n) if n > 0 => {
                io.unread(&first[..n]);
                true
            }
            _ => false,
        },
        () = std::future::ready(()) => false,
    }
}

/// Waits, holding only the socket, for the next bytes of a parked
/// connection: `true` once some came (they are put back), `false` when
/// it should close (the client closed, the idle timeout, the shutdown
/// grace passed without a request, or evicted to make room for a new
/// connection at `limits.max_connections`).
async fn park<I: AsyncRead + Unpin>(io: &mut Prefixed<I>, w: &Watch<'_>) -> bool {
    let _parked = ParkedGauge::new();
    let mut slot = w.connections.park();
    let mut first = [0u8; PARKED_READ];
    let idle = w.activity.idle_for().unwrap_or_default();
    let idle_end = tokio::time::sleep(w.limits.idle_timeout.saturating_sub(idle));
    tokio::pin!(idle_end);
    // Once shutting down: when the grace ends.
    let mut close_at = None;
    loop {
        tokio::select! {
            // Evicted: close, even if its client is sending right now (it
            // was idle the longest; the accept that evicted it waits for
            // its room).
            biased;
            () = slot.evicted() => return false,
            read = io.read(&mut first) => return match read {
                Ok(n) if n > 0 => {
                    io.unread(&first[..n]);
                    true
                }
                _ => false,
            },
            () = &mut idle_end => {
                crate::metrics::limit_hit("idle_timeout");
                return false;
            }
            () = w.shutdown.cancelled(), if close_at.is_none() => {
                w.activity.closing();
                close_at = Some(Instant::now() + w.grace);
            }
            () = tokio::time::sleep_until(close_at.unwrap_or_else(Instant::now)), if close_at.is_some() => {
                return false;
            }
            () = w.cut.cancelled() => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed test

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Sniffs `io` (with `prefix` already read from it) after `sent` was
    /// written to its peer, and returns the protocol and every byte the
    /// server will read, up to `expect_len`.
    async fn sniffed(prefix: &[u8], sent: &[u8], expect_len: usize) -> (&'static str, Vec<u8>) {
        let (server, mut client) = tokio::io::duplex(1024);
        client.write_all(sent).await.unwrap();
        // The end of the stream after it: a missing byte fails the read
        // below instead of waiting for ever.
        drop(client);
        let activity = Activity::new(100);
        let limits = LimitsConfig::default();
        let (shutdown, cut) = (CancellationToken::new(), CancellationToken::new());
        let w = Watch {
            activity: &activity,
            limits: &limits,
            shutdown: &shutdown,
            cut: &cut,
            peer: None,
            grace: SHUTDOWN_GRACE,
            connections: &ConnectionLimit::new(1),
        };
        let io = Prefixed::new(BytesMut::from(prefix), server);
        let (kind, mut io) = match sniff(io, &w).await {
            Sniffed::H1(io) => ("h1", io),
            Sniffed::H2(io) => ("h2", io),
            Sniffed::Gone => return ("gone", Vec::new()),
        };
        let mut read = vec![0; expect_len];
        io.read_exact(&mut read).await.unwrap();
        (kind, read)
    }

    #[tokio::test]
    async fn sniffing_keeps_bytes_read_before_it_in_front() {
        let h2 = [H2_PREFACE, b"\0\0\0\x04\0\0\0\0\0"].concat();
        // All of the preface already read (after a PROXY header), some of
        // it, or none.
        for split in [h2.len(), 10, 0] {
            let (kind, read) = sniffed(&h2[..split], &h2[split..], h2.len()).await;
            assert_eq!((kind, &read[..]), ("h2", &h2[..]), "split at {split}");
        }
        let h1 = b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n";
        for split in [h1.len(), 3, 0] {
            let (kind, read) = sniffed(&h1[..split], &h1[split..], h1.len()).await;
            assert_eq!((kind, &read[..]), ("h1", &h1[..]), "split at {split}");
        }
    }
}
