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

/// How driving a hyper connection ended.
enum Ended {
    /// It finished by itself (the client closed, no keep-alive, an error),
    /// or gracefully when told to.
    Done(Result<(), hyper::Error>),
    /// Idle long enough: it finished at a request boundary when asked to,
    /// and its socket can be taken back.
    Parked,
    /// The shutdown deadline passed.
    Cut,
    /// HTTP/1.1: hyper wrote a push stream's head and everything before
    /// it; the stream is in the connection's handoff slot.
    HandedOff,
}

/// A hyper server connection, HTTP/1.1 or HTTP/2.
trait Serving {
    /// Serves; ready once the connection is done. HTTP/1.1 leaves the
    /// socket open, to be taken back.
    fn poll_serve(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<hyper::Result<()>>;
    /// Finish what is in flight, then end (HTTP/1.1: no more keep-alive,
    /// at once if idle; HTTP/2: GOAWAY).
    fn graceful(self: Pin<&mut Self>);
}

impl<I, S> Serving for http1::Connection<I, S>
where
    S: HttpService<Incoming, ResBody = ConnBody> + Unpin,
    S::Future: Unpin,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
{
    fn poll_serve(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.get_mut().poll_without_shutdown(cx)
    }

    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> Serving for http2::Connection<I, S, TokioExecutor>
where
    S: HttpService<Incoming, ResBody = ConnBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, ConnBody>,
{
    fn poll_serve(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.poll(cx)
    }

    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Drives `connection` until it is done, closing it gracefully on
/// shutdown, on abuse
/// (most requests cancelled), or past the idle timeout; with `park_after`,
/// ends it for parking once idle that long; with `head_timeout`
/// (HTTP/1.1), closes it once it has waited that long for a request head
/// (from the end of the last request, the connection's start, or its
/// resumption after parking) — the check's cadence makes this at most
/// `park_after` late.
///
/// On shutdown, HTTP/2 gets GOAWAY at once (after the grace for a first
/// request, on a connection not used yet); requests in flight finish.
/// HTTP/1.1 (`park_after` set) keeps being served: each response made
/// from then on carries `Connection: close` (see [`RequestService`]), after
/// which hyper ends the connection; one with nothing in flight is closed
/// once it has sent nothing for the grace (the client may have sent a
/// request before it could learn that the gateway is closing).
///
/// The futures it waits on live as long as the connection, not one
/// request: a busy connection is polled on every wake, and registering
/// fresh ones per request showed in the load profile. The idle check is a
/// timer that looks again every `park_after` (or idle timeout), so a
/// request ending needs no wake of its own.
async fn drive<C: Serving>(
    mut connection: Pin<&mut C>,
    w: &Watch<'_>,
    park_after: Option<Duration>,
    head_timeout: Option<Duration>,
) -> Ended {
    let idle_timeout = w.limits.idle_timeout;
    // Parked only after serving a request: a connection resumed because
    // bytes came serves them first.
    let served_before = w.activity.started.load(Ordering::Acquire);
    let parkable = || w.activity.started.load(Ordering::Acquire) > served_before;
    // The longest the idle check may sleep: a request that ends right after
    // it was armed is still parked on time.
    // A quarter of the send timeout: a client that takes nothing is cut
    // between 1 and 1.25 times it.
    let send_timeout = w.limits.send_timeout;
    let check_every = [park_after, head_timeout, Some(send_timeout / 4)]
        .into_iter()
        .flatten()
        .fold(idle_timeout, Duration::min);
    let idle_check_in = || match w.activity.idle_for() {
        Some(idle) => {
            let mut due = head_timeout.map_or(idle_timeout, |head| head.min(idle_timeout));
            if let Some(park) = park_after.filter(|_| parkable()) {
                due = due.min(park);
            }
            due.saturating_sub(idle).min(check_every)
        }
        None => check_every,
    };
    // HTTP/1.1 once shutting down: since when.
    let mut stopping: Option<Instant> = None;
    // When the idle check should look next, shutting down or not.
    let next_check = |stopping: Option<Instant>| match (stopping, w.activity.idle_for()) {
        (Some(at), Some(idle)) => idle_check_in().min(
            w.grace
                .saturating_sub(idle)
                .max(w.grace.saturating_sub(at.elapsed())),
        ),
        _ => idle_check_in(),
    };
    let shutdown = w.shutdown.cancelled();
    // Watched only once stopping: the deadline comes after the shutdown.
    let cut = w.cut.cancelled();
    let abused = w.activity.abused.notified();
    let stream_cut = w.activity.stream_cut.notified();
    let handoff = w.activity.handoff.ready.notified();
    let check = tokio::time::sleep(next_check(stopping));
    tokio::pin!(shutdown, cut, abused, stream_cut, handoff, check);
    let mut watchers = WatcherGate::default();
    // A push stream was handed over: hyper is served on until its bytes
    // are out.
    let mut handing_off = false;
    loop {
        // hyper's connection on every wake-up; the watchers only
        // when one of them woke the task (each poll of a `Notify` waiter
        // takes its lock, and the shutdown one is shared by every
        // connection).
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = connection.as_mut().poll_serve(cx) {
                return Poll::Ready(Event::Served(result));
            }
            if handing_off && !w.activity.unflushed.load(Ordering::Relaxed) {
                return Poll::Ready(Event::HandedOff);
            }
            let Some(waker) = watchers.due(cx) else {
                return Poll::Pending;
            };
            let mut cx = Context::from_waker(&waker);
            if stopping.is_none() && shutdown.as_mut().poll(&mut cx).is_ready() {
                return Poll::Ready(Event::Shutdown);
            }
            if stopping.is_some() && cut.as_mut().poll(&mut cx).is_ready() {
                return Poll::Ready(Event::Cut);
            }
            if abused.as_mut().poll(&mut cx).is_ready() {
                return Poll::Ready(Event::Abused);
            }
            if stream_cut.as_mut().poll(&mut cx).is_ready() {
                return Poll::Ready(Event::Cut);
            }
            if !handing_off && handoff.as_mut().poll(&mut cx).is_ready() {
                return Poll::Ready(Event::Handoff);
            }
            if check.as_mut().poll(&mut cx).is_ready() {
                return Poll::Ready(Event::Check);
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Served(result) => return Ended::Done(result),
            Event::Cut => return Ended::Cut,
            Event::HandedOff => return Ended::HandedOff,
            Event::Handoff => handing_off = true,
            Event::Shutdown if park_after.is_some() => {
                // HTTP/1.1: served on, closed once idle for the grace.
                w.activity.closing();
                stopping = Some(Instant::now());
                check.as_mut().reset(Instant::now() + next_check(stopping));
                watchers.rearm();
            }
            Event::Shutdown => {
                if !w.activity.ever_busy() {
                    // Accepted just before the shutdown: the client may be
                    // sending its first request now, and closing would
                    // reset it. It gets a moment to, and an answer.
                    tokio::select! {
                        result = std::future::poll_fn(|cx| connection.as_mut().poll_serve(cx)) => {
                            return Ended::Done(result);
                        }
                        () = w.activity.first_request() => {}
                        () = tokio::time::sleep(w.grace) => {}
                        () = w.cut.cancelled() => return Ended::Cut,
                    }
                }
                // Keep-alive connections are told to close (HTTP/1.1 after
                // the response in flight, HTTP/2 with GOAWAY); requests in
                // flight finish, unless the shutdown deadline cuts them.
                return finish(connection, w).await;
            }
            Event::Abused => {
                // Rapid reset paced to dodge the HTTP/2 pending-reset limit.
                crate::metrics::limit_hit("premature_resets");
                log_rapid_reset(
                    w.peer,
                    "cancels most of its requests after they reached the app",
                );
                return finish(connection, w).await;
            }
            Event::Check => {
                if w.activity
                    .send_stall
                    .stalled_for()
                    .is_some_and(|stalled| stalled >= send_timeout)
                {
                    // Bytes for the client, and it took none of them.
                    crate::metrics::limit_hit("send_timeout");
                    return Ended::Cut;
                }
                // Only if nothing was in flight the whole time.
                match w.activity.idle_for() {
                    Some(idle) if idle >= idle_timeout => {
                        crate::metrics::limit_hit("idle_timeout");
                        return finish(connection, w).await;
                    }
                    // Waiting for a head too long: a slow client (slowloris),
                    // or an idle one not parked (`idle_release` is longer).
                    // Not `finish`: told to finish, hyper still waits for the
                    // head of a connection's first request. The caller
                    // closes the socket.
                    Some(idle) if head_timeout.is_some_and(|head| idle >= head) => {
                        crate::metrics::limit_hit("header_timeout");
                        return Ended::Done(Ok(()));
                    }
                    // Shutting down, and no request came in the grace:
                    // hyper ends an idle keep-alive connection at once
                    // (one still reading a head gets one more grace);
                    // the caller then looks for bytes that came after all.
                    Some(idle)
                        if stopping
                            .is_some_and(|at| idle >= w.grace && at.elapsed() >= w.grace) =>
                    {
                        return tokio::time::timeout(w.grace, finish(connection, w))
                            .await
                            .unwrap_or(Ended::Done(Ok(())));
                    }
                    Some(idle)
                        if park_after.is_some_and(|park| idle >= park)
                            && parkable()
                            && stopping.is_none() =>
                    {
                        return match finish(connection, w).await {
                            Ended::Done(Ok(())) => Ended::Parked,
                            other => other,
                        };
                    }
                    _ => {
                        check.as_mut().reset(Instant::now() + next_check(stopping));
                        // The reset timer registers on its next poll.
                        watchers.rearm();
                    }
                }
            }
        }
    }
}

/// What woke [`drive`]'s loop.
enum Event {
    Served(Result<(), hyper::Error>),
    Shutdown,
    /// The shutdown deadline passed (watched once stopping).
    Cut,
    Abused,
    Check,
    /// A push stream was put in the handoff slot.
    Handoff,
    /// ...and hyper's bytes are out.
    HandedOff,
}

/// Lets a connection's watcher futures (shutdown, the cut, abuse, the idle check) be
/// polled only when one of them woke the task: they are polled with a
/// waker of their own, which records that it fired and wakes the task.
#[derive(Default)]
struct WatcherGate {
    /// The watchers' waker, and the task waker it wraps.
    waker: Option<(Arc<WatcherWaker>, std::task::Waker)>,
}

struct WatcherWaker {
    fired: std::sync::atomic::AtomicBool,
    task: std::task::Waker,
}

impl std::task::Wake for WatcherWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

impl WatcherGate {
    /// The waker to poll the watchers with, if they are due: on the first
    /// poll, when the task's waker changed, or when one of them fired.
    fn due(&mut self, cx: &Context<'_>) -> Option<std::task::Waker> {
        match &self.waker {
            Some((watcher, waker)) if watcher.task.will_wake(cx.waker()) => watcher
                .fired
                .swap(false, Ordering::AcqRel)
                .then(|| waker.clone()),
            _ => {
                let watcher = Arc::new(WatcherWaker {
                    fired: std::sync::atomic::AtomicBool::new(false),
                    task: cx.waker().clone(),
                });
                let waker = std::task::Waker::from(Arc::clone(&watcher));
                self.waker = Some((watcher, waker.clone()));
                Some(waker)
            }
        }
    }

    /// Polls the watchers on the next wake-up (a timer was reset).
    fn rearm(&self) {
        if let Some((watcher, _)) = &self.waker {
            watcher.fired.store(true, Ordering::Release);
        }
    }
}

/// Tells `connection` to finish gracefully and drives it until it has,
/// or until the shutdown deadline cuts it.
async fn finish<C: Serving>(mut connection: Pin<&mut C>, w: &Watch<'_>) -> Ended {
    connection.as_mut().graceful();
    tokio::select! {
        result = std::future::poll_fn(|cx| connection.as_mut().poll_serve(cx)) => Ended::Done(result),
        () = w.cut.cancelled() => Ended::Cut,
    }
}

/// The hyper service of one connection: each request gets the client
/// subject and address headers, counts as activity, and goes to the
/// handler.
#[derive(Clone)]
struct RequestService {
    handler: Arc<Handler>,
    peer: Option<SocketAddr>,
    /// The peer's address as an `X-Real-IP` value, made once per
    /// connection (most requests send just that).
    peer_header: Option<HeaderValue>,
    client_subject: Option<HeaderValue>,
    activity: Arc<Activity>,
}

/// A response body as hyper sends it: holding its request's [`Busy`]
/// until sent; or, for an HTTP/1.1 push stream, handed to the connection
/// to serve without hyper once hyper wrote its head (see [`push_h1`]).
enum ConnBody {
    Sent(Guarded<Busy>),
    HandedOff(push_h1::Handoff<Busy>),
    /// Through tower-http's compression (`[compression]` on); boxed, so
    /// the other kinds stay as small as without it.
    Compressed(Box<Compressed>),
}

/// A response body through tower-http's compression (compressed, or not
/// when the response was not compressible), holding its request's
/// [`Busy`] until sent.
struct Compressed {
    body: tower_http::compression::CompressionBody<GatewayBody>,
    _busy: Busy,
}

impl hyper::body::Body for ConnBody {
    type Data = bytes::Bytes;
    type Error = crate::dispatch::BodyAborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Sent(body) => Pin::new(body).poll_frame(cx),
            Self::Compressed(compressed) => Pin::new(&mut compressed.body)
                .poll_frame(cx)
                .map_err(|e| crate::dispatch::BodyAborted(e.to_string())),
            // Never woken: the connection stops polling hyper once hyper's
            // bytes are out.
            Self::HandedOff(handoff) => {
                handoff.poll_handoff();
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Sent(body) => body.is_end_stream(),
            Self::Compressed(compressed) => compressed.body.is_end_stream(),
            Self::HandedOff(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Self::Sent(body) => body.size_hint(),
            Self::Compressed(compressed) => compressed.body.size_hint(),
            Self::HandedOff(_) => hyper::body::SizeHint::default(),
        }
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<hyper::Response<ConnBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = hyper::Response<ConnBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let handler = Arc::clone(&self.handler);
        if self.activity.is_abusive() {
            // Told to go away for rapid reset: what it still sends (HTTP/2
            // accepts streams until the client acknowledges the GOAWAY, and
            // a hostile one never does) is answered here, never dispatched.
            let busy = Busy::new(&self.activity, &handler.busy);
            let response = GatewayError::ConnectionClosing.into_response(rand::random());
            return Box::pin(std::future::ready(Ok(
                response.map(|body| ConnBody::Sent(body.with_guard(busy)))
            )));
        }
        // One settings snapshot for the whole request, this step included.
        let settings = handler.settings();
        // The subject header (set only from a verified certificate), and
        // the client as far as trusted proxies tell in X-Real-IP and for
        // the log and the stream caps: the embedded service's rules too.
        super::client_addr::apply_client_rules(
            &mut request,
            &handler.subject_header,
            self.client_subject.as_ref(),
            self.peer.map(|p| p.ip()),
            self.peer_header.as_ref(),
            &settings.config.request.trusted_proxies,
        );
        let busy = Busy::new(&self.activity, &handler.busy);
        let unanswered = Unanswered(Some(Arc::clone(&self.activity)));
        // HTTP/2 has GOAWAY instead (and no `Connection` header).
        let h1 = request.version() < hyper::Version::HTTP_2;
        // A push stream is taken from hyper only under HTTP/1.1's chunked
        // encoding (HTTP/1.0 has no chunks: hyper keeps it).
        let chunked = request.version() == hyper::Version::HTTP_11;
        if let Some(layers) = &settings.layers {
            // CORS or compression on: through tower-http (see `layers`).
            // The synchronous step happens in this call too.
            let layered = layers.call(Arc::clone(&handler), Arc::clone(&settings), request);
            return Box::pin(async move {
                let layered = layered.response();
                tokio::pin!(layered);
                // After the request's future, as below.
                let unanswered = unanswered;
                let response = layered.await;
                unanswered.answered();
                Ok(match response {
                    LayeredResponse::Plain(response) => for_hyper(response, busy, h1, chunked),
                    // Never compressed (see `layers::Compressible`): the
                    // connection may still take it over.
                    LayeredResponse::Compressed(response)
                        if matches!(response.body().get_ref(), GatewayBody::Push(_)) =>
                    {
                        for_hyper(
                            response.map(tower_http::compression::CompressionBody::into_inner),
                            busy,
                            h1,
                            chunked,
                        )
                    }
                    LayeredResponse::Compressed(mut response) => {
                        if h1 && busy.0.is_closing() {
                            response.headers_mut().insert(
                                hyper::header::CONNECTION,
                                HeaderValue::from_static("close"),
                            );
                        }
                        response.map(|body| {
                            ConnBody::Compressed(Box::new(Compressed { body, _busy: busy }))
                        })
                    }
                })
            });
        }
        // The synchronous step now, before hyper reads ahead (see `begin`).
        let begun = handler.begin(&settings, request);
        Box::pin(async move {
            let finishing = handler.finish(&settings, begun);
            tokio::pin!(finishing);
            // Declared after the request's future, so dropped before it
            // when the client cancels: the cancellation is counted (and the
            // connection found abusive) before the backend channel is
            // cancelled, which the app may see at once.
            let unanswered = unanswered;
            let response = finishing.await;
            unanswered.answered();
            Ok(for_hyper(response, busy, h1, chunked))
        })
    }
}

/// The handler's response as hyper sends it: holding `busy` until its
/// body is sent; an HTTP/1.1 push stream set up to be taken from hyper
/// once hyper wrote its head; `Connection: close` when the gateway is
/// stopping (HTTP/1).
fn for_hyper(
    mut response: hyper::Response<GatewayBody>,
    busy: Busy,
    h1: bool,
    chunked: bool,
) -> hyper::Response<ConnBody> {
    if h1 {
        // One reply at a time per HTTP/1.1 connection: a client cut for
        // reading too slowly loses the connection (hyper, waiting to
        // write, would not poll the body to learn it).
        response.body().close_connection_on_cut(&busy.0.stream_cut);
    }
    if let Some(pending) = response
        .extensions_mut()
        .remove::<super::websocket::Pending>()
        && h1
    {
        // A WebSocket: its session runs on this connection's socket
        // once hyper has written the 101 (see `serve_h1`).
        busy.0.upgrade(pending);
    }
    if chunked && matches!(response.body(), GatewayBody::Push(_)) {
        // Served without hyper once hyper wrote the head; the
        // connection closes when the stream ends.
        let headers = response.headers_mut();
        headers.insert(
            hyper::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        let slot = Arc::clone(&busy.0.handoff);
        return response.map(|body| match body {
            GatewayBody::Push(push) => ConnBody::HandedOff(push_h1::Handoff::new(push, busy, slot)),
            other => ConnBody::Sent(other.with_guard(busy)),
        });
    }
    let switching = response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS;
    if h1 && busy.0.is_closing() && !switching {
        // The gateway is stopping: the client learns it here, and
        // hyper ends the connection after this response.
        response
            .headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    // Busy until the body is sent too.
    response.map(|body| ConnBody::Sent(body.with_guard(busy)))
}

/// When a connection last had a request in flight.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    /// When the last request ended (or the connection opened, or resumed
    /// after parking).
    since: std::sync::Mutex<Instant>,
    /// Requests started (the first one wakes `first`), and those the client
    /// cancelled before their response head (see
    /// `limits.max_premature_resets`).
    started: AtomicUsize,
    first: tokio::sync::Notify,
    premature: AtomicUsize,
    max_premature: usize,
    /// Set (before `abused` is notified) once cancellations passed the
    /// limit: the connection's later requests are refused.
    abusive: std::sync::atomic::AtomicBool,
    /// Wakes the connection when cancellations pass the limit.
    abused: tokio::sync::Notify,
    /// Set once the connection knows the gateway is stopping: its HTTP/1
    /// responses carry `Connection: close` from then on. A flag of its own,
    /// not the shutdown token, which every connection shares (and whose
    /// reads take its lock).
    closing: std::sync::atomic::AtomicBool,
    /// Notified when a push stream on this HTTP/1.1 connection cut its
    /// client for reading too slowly: the connection is closed at once.
    stream_cut: Arc<tokio::sync::Notify>,
    /// Since when writes to the client have waited (`limits.send_timeout_ms`).
    send_stall: Arc<SendStall>,
    /// A WebSocket accepted on this HTTP/1.1 connection, to run once its
    /// 101 is written.
    upgrade: std::sync::Mutex<Option<super::websocket::Pending>>,
    /// HTTP/1.1: whether hyper may hold bytes not yet written (see
    /// [`SendWatch`]).
    unflushed: Arc<AtomicBool>,
    /// HTTP/1.1: a push stream handed over by hyper, to be served without
    /// it (see [`push_h1`]).
    handoff: Arc<push_h1::HandoffSlot<Busy>>,
}

impl Activity {
    fn new(max_premature: usize) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            since: std::sync::Mutex::new(Instant::now()),
            started: AtomicUsize::new(0),
            first: tokio::sync::Notify::new(),
            premature: AtomicUsize::new(0),
            max_premature,
            abusive: std::sync::atomic::AtomicBool::new(false),
            abused: tokio::sync::Notify::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
            stream_cut: Arc::new(tokio::sync::Notify::new()),
            send_stall: Arc::default(),
            upgrade: std::sync::Mutex::new(None),
            unflushed: Arc::new(AtomicBool::new(false)),
            handoff: Arc::default(),
        }
    }

    /// Keeps `pending` for the connection to run after its 101.
    fn upgrade(&self, pending: super::websocket::Pending) {
        *self
            .upgrade
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(pending);
    }

    /// The WebSocket accepted on this connection, once.
    fn take_upgrade(&self) -> Option<super::websocket::Session> {
        self.upgrade
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()?
            .take()
    }

    /// The gateway is stopping (see [`Self::is_closing`]).
    fn closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Whether responses should say `Connection: close`.
    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Whether its client cancelled too many requests (see [`Unanswered`]).
    fn is_abusive(&self) -> bool {
        self.abusive.load(Ordering::Acquire)
    }

    fn ever_busy(&self) -> bool {
        self.started.load(Ordering::Acquire) > 0
    }

    /// Returns once a request has started on the connection.
    async fn first_request(&self) {
        let first = self.first.notified();
        tokio::pin!(first);
        first.as_mut().enable();
        if !self.ever_busy() {
            first.await;
        }
    }

    /// The wait for the next request starts now (a request ended, or a
    /// parked connection resumed).
    fn waiting_since_now(&self) {
        *self
            .since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    }

    /// How long nothing has been in flight; `None` while something is.
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = *self
            .since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(since.elapsed())
    }
}

/// A request in flight on a connection (and in the gateway), until dropped.
pub(super) struct Busy(Arc<Activity>, Arc<AtomicUsize>);

impl Busy {
    fn new(activity: &Arc<Activity>, gateway: &Arc<AtomicUsize>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        if activity.started.fetch_add(1, Ordering::AcqRel) == 0 {
            activity.first.notify_waiters();
        }
        gateway.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity), Arc::clone(gateway))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.waiting_since_now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.1.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request whose response head is not made yet: dropped so, the client
/// cancelled it (an HTTP/2 reset, or it went away), which counts toward
/// `limits.max_premature_resets`.
struct Unanswered(Option<Arc<Activity>>);

impl Unanswered {
    fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(activity) = self.0.take() else {
            return;
        };
        let premature = activity.premature.fetch_add(1, Ordering::AcqRel) + 1;
        if premature > activity.max_premature
            && premature * 2 > activity.started.load(Ordering::Acquire)
        {
            activity.abusive.store(true, Ordering::Release);
            activity.abused.notify_one();
        }
    }
}

/// Counts a parked connection in [`crate::metrics::HTTP_PARKED`] until
/// dropped.
struct ParkedGauge;

impl ParkedGauge {
    fn new() -> Self {
        metrics::gauge!(crate::metrics::HTTP_PARKED).increment(1.0);
        Self
    }
}

impl Drop for ParkedGauge {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::HTTP_PARKED).decrement(1.0);
    }
}

/// Counts an open client connection until dropped.
struct Open(Arc<Handler>);

impl Open {
    fn new(handler: Arc<Handler>) -> Self {
        metrics::gauge!(crate::metrics::HTTP_CONNECTIONS).increment(1.0);
        handler.open_connections.fetch_add(1, Ordering::AcqRel);
        Self(handler)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::HTTP_CONNECTIONS).decrement(1.0);
        self.0.open_connections.fetch_sub(1, Ordering::AcqRel);
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
