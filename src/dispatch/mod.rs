//! Dispatch: owns turning a routed request into an `enqueue` stream and its
//! reply into an HTTP response head and body stream: admission (load
//! shedding) and the deadline ([`Dispatcher::admit`]), packing (PROTOCOL.md
//! §5.2, §5.3), the member choice of a routing group, the safe-retry rule
//! (DESIGN.md §3.4) with a retry budget, outlier reports, and cancellation
//! (`error [[7, 3]]`) when the client goes away or the deadline passes.
//! The HTTP side holds a [`Dispatcher`], never the pools.
//!
//! Our side of the channel stays open until the reply ends, so that a
//! cancel is still possible; the app gets `close` once its reply is
//! complete (see [`crate::mux::ChannelSender::close_on_drop`]). A streamed
//! upload ([`upload`]) marks the end of its body with an empty `write`
//! chunk for the same reason.

mod admission;
mod body;
pub mod jsonrpc;
pub mod mirror;
mod pack;
mod push;
pub mod upload;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rand::Rng;
use tokio::time::Instant;

pub use self::admission::{Policy, Ticket};
pub use self::body::{BodyAborted, ReplyBody};
pub use self::pack::{BadRequestId, PackedRequest, TraceDecision, pack_request};
pub use self::push::{PushBody, PushLimits};
pub use self::upload::{Upload, UploadError};
use crate::mux::{ChannelError, Invocation};
use crate::pool::{Choice, PoolError, Pools};
use crate::proto::http::ResponseMeta;
use crate::proto::msgpack::MsgpackError;
use crate::proto::{Args, Message, MessageError, RemoteError, StreamEvent};

/// Why a request could not be answered by the app. Each says who failed;
/// the single HTTP mapping lives in `http::response`.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The locator does not know the service (503).
    #[error("service `{0}` is not available")]
    NotFound(String),
    /// No backend connection before the deadline (503).
    #[error("{0}")]
    NoConnection(#[source] PoolError),
    /// The service is not an app (its graph from `resolve`), so it is never
    /// sent an HTTP request (404: the URL names nothing that serves HTTP).
    #[error("service `{0}` is not an app: it does not take HTTP requests")]
    NotAnApp(String),
    /// No backend connection, and the locator cannot be reached (503).
    #[error("{0}")]
    LocatorUnavailable(#[source] PoolError),
    /// Every attempt was refused as "queue full" or equivalent (503 +
    /// Retry-After).
    #[error("the app is overloaded after {attempts} attempts: {last}")]
    Overloaded {
        /// Attempts made.
        attempts: u32,
        /// The last refusal.
        last: RemoteError,
    },
    /// The deadline passed (504).
    #[error("no reply from the app within {0:?}")]
    Deadline(Duration),
    /// The backend broke the protocol before the response head (502).
    #[error("bad gateway: {0}")]
    Protocol(&'static str),
    /// The app's response meta could not be read (502).
    #[error("bad gateway: the app's response meta is malformed: {0}")]
    BadMeta(#[source] MsgpackError),
    /// A frame on the request's channel did not fit its protocol (502).
    #[error("bad gateway: a malformed frame on the request's channel: {0}")]
    BadFrame(#[source] MessageError),
    /// The app sent a status that is not an HTTP status (502).
    #[error("bad gateway: the app sent status {0}")]
    BadStatus(u16),
    /// The backend connection failed under the request before the
    /// response head: lost, refused, or a message it could not carry (502).
    #[error("bad gateway: {0}")]
    Channel(#[source] ChannelError),
    /// The app answered with an error (500).
    #[error("app error {0}")]
    App(RemoteError),
    /// A streamed upload stopped on the client's side before the response
    /// head (413, 408 or 400); the app's channel was cancelled.
    #[error("{0}")]
    Upload(#[source] UploadError),
    /// Too many requests in flight (at the gateway or for the service):
    /// refused at once (503 + `Retry-After`).
    #[error("too many requests in flight {0}; try again shortly")]
    Shed(&'static str),
    /// The gateway is shutting down (503).
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

/// The retry policy and its budget.
#[derive(Debug)]
pub struct Retry {
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// Retries may be this share of requests in flight...
    pub budget_share: f64,
    /// ...with this floor.
    pub budget_floor: usize,
    /// The base of the jittered backoff.
    pub backoff: Duration,
    in_flight: AtomicUsize,
    retrying: AtomicUsize,
}

impl Retry {
    /// A policy.
    pub fn new(attempts: u32, budget_share: f64, budget_floor: usize, backoff: Duration) -> Self {
        Self {
            attempts,
            budget_share,
            budget_floor,
            backoff,
            in_flight: AtomicUsize::new(0),
            retrying: AtomicUsize::new(0),
        }
    }

    fn try_take(&self) -> Option<RetryToken<'_>> {
        let allowed = ((self.in_flight.load(Ordering::Relaxed) as f64 * self.budget_share)
            as usize)
            .max(self.budget_floor);
        let taken = self.retrying.fetch_add(1, Ordering::AcqRel);
        if taken >= allowed {
            self.retrying.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(RetryToken(self))
    }

    fn pause(&self, attempt: u32) -> Duration {
        let base = self.backoff.saturating_mul(1 << attempt.min(10));
        base.mul_f64(rand::rng().random_range(0.5..1.5))
    }
}

struct RetryToken<'a>(&'a Retry);

impl Drop for RetryToken<'_> {
    fn drop(&mut self) {
        self.0.retrying.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request in flight counts toward the retry budget while it lives.
struct InFlight<'a>(&'a Retry);

impl<'a> InFlight<'a> {
    fn new(retry: &'a Retry) -> Self {
        retry.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(retry)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A successful start of a reply: the app's meta and the body to come.
#[derive(Debug)]
pub struct Reply {
    /// The status and headers the app sent.
    pub meta: ResponseMeta,
    /// The body chunks, streamed.
    pub body: ReplyBody,
}

/// What [`Dispatcher::send`] came to, and which member served (or failed)
/// it.
#[derive(Debug)]
pub struct Outcome {
    /// The reply, or why there is none.
    pub result: Result<Reply, DispatchError>,
    /// The group member of the last attempt, or the app itself; `None` if
    /// no attempt got as far as a member.
    pub member: Option<Arc<str>>,
    /// Attempts made (0: none got as far as a connection).
    pub attempts: u32,
    /// The backend address of the last attempt's connection.
    pub upstream: Option<std::net::SocketAddr>,
}

/// What the attempts of one request went through, for its [`Outcome`].
#[derive(Debug, Default)]
struct Trail {
    member: Option<Arc<str>>,
    attempts: u32,
    upstream: Option<std::net::SocketAddr>,
}

impl Trail {
    fn outcome(self, result: Result<Reply, DispatchError>) -> Outcome {
        Outcome {
            result,
            member: self.member,
            attempts: self.attempts,
            upstream: self.upstream,
        }
    }
}

/// Turns routed requests into replies: admission (see [`Dispatcher::admit`]),
/// the member choice, retries under the deadline, and outlier reports. It
/// holds the pools; the HTTP side holds only a dispatcher.
#[derive(Debug)]
pub struct Dispatcher {
    pools: Arc<Pools>,
    /// Requests in flight, for `limits.max_in_flight`.
    in_flight: Arc<AtomicUsize>,
    /// JSON-RPC calls to any service method.
    jsonrpc: jsonrpc::JsonRpc,
}

impl Dispatcher {
    /// A dispatcher over `pools`.
    pub fn new(pools: Arc<Pools>) -> Self {
        Self {
            jsonrpc: jsonrpc::JsonRpc::new(Arc::clone(pools.locator())),
            pools,
            in_flight: Arc::default(),
        }
    }

    /// The pools it sends through.
    pub fn pools(&self) -> &Arc<Pools> {
        &self.pools
    }

    /// Answers a JSON-RPC request body admitted with `ticket` (its deadline
    /// covers the whole batch); see [`jsonrpc::JsonRpc::answer`].
    pub async fn jsonrpc(
        &self,
        config: &crate::config::Config,
        body: &[u8],
        ticket: &Ticket,
    ) -> jsonrpc::Answer {
        let scope = jsonrpc::Scope::new(config, ticket.deadline(), ticket.timeout());
        self.jsonrpc.answer(body, scope).await
    }

    /// Sends an admitted request to `service` and waits for the response
    /// head until the ticket's deadline.
    ///
    /// For a routing group, each attempt picks a member (by weight, or by
    /// the sticky key's point on the ring), passing over members that are
    /// ejected, not connected, or (for a retry) the one that just refused.
    /// Each attempt's outcome feeds the member's outlier detection.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the channel, which sends
    /// `error [[7, 3]]` to the app if the request was sent.
    pub async fn send(
        &self,
        policy: &Policy,
        service: &str,
        ticket: &Ticket,
        request: &PackedRequest,
    ) -> Outcome {
        let mut trail = Trail::default();
        let result = attempts(
            &self.pools,
            policy.retry(),
            service,
            ticket,
            Whole(request),
            &mut trail,
        )
        .await;
        trail.outcome(result)
    }

    /// As [`Dispatcher::send`], for a streamed upload: `request` is the
    /// `enqueue` and a 5-tuple with an empty body, and `upload` the body,
    /// sent as `write` chunks as it arrives (see [`upload`]). The reply may
    /// come before the body has all been sent; its body then goes on
    /// sending it. Retried only while the upload
    /// [is replayable](Upload::is_replayable).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the channel, which sends
    /// `error [[7, 3]]` to the app if the request was sent.
    pub async fn send_streamed(
        &self,
        policy: &Policy,
        service: &str,
        ticket: &Ticket,
        request: &PackedRequest,
        upload: Upload,
    ) -> Outcome {
        let mut trail = Trail::default();
        let result = attempts(
            &self.pools,
            policy.retry(),
            service,
            ticket,
            Streamed {
                request,
                upload: Some(upload),
            },
            &mut trail,
        )
        .await;
        trail.outcome(result)
    }
}

/// One way of sending a request on a fresh channel, once per attempt.
trait Exchange {
    /// The `enqueue` and 5-tuple.
    fn packed(&self) -> &PackedRequest;

    /// Sends the request on a channel of `handle` and waits for the reply
    /// head; `remaining` is what is left of the deadline, for a retry.
    async fn attempt(
        &mut self,
        handle: &crate::mux::MuxHandle,
        remaining: Option<Duration>,
    ) -> Result<Reply, Attempt>;
}

/// A request packed whole: the 5-tuple carries the body.
struct Whole<'a>(&'a PackedRequest);

impl Exchange for Whole<'_> {
    fn packed(&self) -> &PackedRequest {
        self.0
    }

    async fn attempt(
        &mut self,
        handle: &crate::mux::MuxHandle,
        remaining: Option<Duration>,
    ) -> Result<Reply, Attempt> {
        attempt_once(handle, self.0, remaining).await
    }
}

/// A streamed upload: the 5-tuple (empty body), then the body's chunks.
struct Streamed<'a> {
    request: &'a PackedRequest,
    /// Taken by the reply when the head comes before the body's end.
    upload: Option<Upload>,
}

impl Exchange for Streamed<'_> {
    fn packed(&self) -> &PackedRequest {
        self.request
    }

    async fn attempt(
        &mut self,
        handle: &crate::mux::MuxHandle,
        remaining: Option<Duration>,
    ) -> Result<Reply, Attempt> {
        attempt_streamed(handle, self.request, remaining, &mut self.upload).await
    }
}

/// How many times a request chooses again because the member it chose
/// left its group while it waited for a connection.
const MAX_RECHOICES: u32 = 8;

fn pool_error(e: PoolError) -> DispatchError {
    match e {
        PoolError::NotFound(name) => DispatchError::NotFound(name),
        PoolError::NoConnection { .. } | PoolError::Left(_) => DispatchError::NoConnection(e),
        PoolError::LocatorUnavailable { .. } => DispatchError::LocatorUnavailable(e),
        PoolError::NotAnApp(name) => DispatchError::NotAnApp(name),
        PoolError::ShuttingDown => DispatchError::ShuttingDown,
    }
}

/// Whether an attempt's error is the backend failing (for outlier
/// detection): a lost or refused connection, a protocol violation, or the
/// app not running. The app's own answers are not.
fn is_backend_failure(error: &DispatchError) -> bool {
    match error {
        DispatchError::Protocol(_)
        | DispatchError::BadMeta(_)
        | DispatchError::BadFrame(_)
        | DispatchError::BadStatus(_)
        | DispatchError::Channel(_) => true,
        DispatchError::App(e) => {
            e.code == crate::proto::ErrorCode::NOT_RUNNING
                || e.code == crate::proto::ErrorCode::APP_STOPPED
        }
        _ => false,
    }
}

async fn attempts(
    pools: &Arc<Pools>,
    retry: &Retry,
    service: &str,
    ticket: &Ticket,
    mut request: impl Exchange,
    trail: &mut Trail,
) -> Result<Reply, DispatchError> {
    let _in_flight = InFlight::new(retry);
    let mut group = ticket.group.clone();
    let mut plain = match group {
        Some(_) => None,
        None => Some(pools.get(service)),
    };
    let (deadline, total) = (ticket.deadline(), ticket.timeout());
    let mut attempt = 0;
    let mut rechoices = 0;
    let mut exclude: Option<Arc<str>> = None;
    let mut token = None;
    loop {
        attempt += 1;
        let (handle, pool) = match (&plain, &group) {
            (Some(pool), _) => match pool.checkout(deadline).await {
                Ok(handle) => (handle, Arc::clone(pool)),
                // The name turned out to be a routing group (its ring
                // arrived) and this pool for it was closed: pick a member.
                Err(PoolError::Left(_)) if rechoices < MAX_RECHOICES => {
                    rechoices += 1;
                    attempt -= 1;
                    group = pools.group(service);
                    plain = match group {
                        Some(_) => None,
                        None => Some(pools.get(service)),
                    };
                    continue;
                }
                Err(e) => return Err(pool_error(e)),
            },
            (None, Some(group)) => match group.choose(ticket.sticky, exclude.as_deref()) {
                None => return Err(DispatchError::NotFound(service.to_owned())),
                Some(Choice::Ready(chosen, handle)) => (handle, Arc::clone(chosen.pool())),
                Some(Choice::Wait(chosen)) => {
                    trail.member = Some(Arc::clone(chosen.name()));
                    match chosen.pool().checkout(deadline).await {
                        Ok(handle) => (handle, Arc::clone(chosen.pool())),
                        Err(PoolError::Left(_)) if rechoices < MAX_RECHOICES => {
                            rechoices += 1;
                            attempt -= 1;
                            continue;
                        }
                        Err(e) => return Err(pool_error(e)),
                    }
                }
            },
            (None, None) => return Err(DispatchError::NotFound(service.to_owned())),
        };
        trail.member = Some(Arc::clone(pool.label()));
        trail.attempts = attempt;
        trail.upstream = handle.peer();
        // A retry tells the app what is left of the deadline, not the
        // whole timeout the first attempt carried.
        // (A push service's stream lifetime, longer than the deadline,
        // stays as it was.)
        let remaining = (attempt > 1
            && request
                .packed()
                .headers
                .request_timeout()
                .is_none_or(|sent| sent <= total))
        .then(|| deadline.saturating_duration_since(Instant::now()));
        let outcome = tokio::time::timeout_at(deadline, request.attempt(&handle, remaining)).await;
        let retriable = match outcome {
            Err(_) => return Err(DispatchError::Deadline(total)),
            Ok(Ok(reply)) => {
                pools.report_success(&pool);
                return Ok(reply);
            }
            Ok(Err(Attempt::Failed(e))) => {
                if is_backend_failure(&e) {
                    pools.report_failure(&pool);
                } else {
                    pools.report_success(&pool);
                }
                return Err(e);
            }
            Ok(Err(Attempt::Retriable(e))) => {
                if is_backend_failure(&e) {
                    pools.report_failure(&pool);
                }
                e
            }
        };
        exclude = Some(Arc::clone(pool.label()));
        if attempt >= retry.attempts {
            return Err(match retriable {
                DispatchError::App(last) => DispatchError::Overloaded {
                    attempts: attempt,
                    last,
                },
                other => other,
            });
        }
        // A request takes one token for all its retries: the budget counts
        // requests being retried, not attempts.
        if token.is_none() {
            token = retry.try_take();
        }
        if token.is_none() {
            return Err(match retriable {
                DispatchError::App(last) => DispatchError::Overloaded {
                    attempts: attempt,
                    last,
                },
                other => other,
            });
        }
        metrics::counter!(
            crate::metrics::RETRIES,
            crate::metrics::SERVICE => service.to_owned(),
            crate::metrics::MEMBER => pool.label().to_string()
        )
        .increment(1);
        let pause = retry.pause(attempt - 1);
        if Instant::now() + pause >= deadline {
            return Err(DispatchError::Deadline(total));
        }
        tokio::time::sleep(pause).await;
    }
}

enum Attempt {
    /// Provably not delivered to a worker: may be sent again.
    Retriable(DispatchError),
    Failed(DispatchError),
}

async fn attempt_once(
    handle: &crate::mux::MuxHandle,
    request: &PackedRequest,
    remaining: Option<Duration>,
) -> Result<Reply, Attempt> {
    let lost = |e: ChannelError| {
        if e.is_retry_safe() {
            Attempt::Retriable(DispatchError::Channel(e))
        } else {
            Attempt::Failed(DispatchError::Channel(e))
        }
    };
    // The request goes in one chunk, handed over with the `enqueue`.
    let invocation = invocation(request, remaining);
    let channel = handle.open(invocation).await.map_err(lost)?;
    let (mut sender, mut receiver) = channel.split();
    let first = match receiver.recv().await {
        Some(Err(e)) => return Err(lost(e)),
        other => other,
    };
    let meta = reply_head(first, &mut sender, true)?;
    let (proto11, content_length) = reply_framing(&meta);
    Ok(Reply {
        meta,
        body: ReplyBody::new(sender, receiver, proto11, content_length),
    })
}

/// The `enqueue` and the 5-tuple of `request` (telling the app what is
/// `remaining` of the deadline on a retry).
fn invocation(request: &PackedRequest, remaining: Option<Duration>) -> Invocation {
    let mut headers = request.headers.clone();
    if let Some(remaining) = remaining {
        headers.set_request_timeout(remaining);
    }
    let enqueue = Message::new(0, Args::Bytes(request.event.clone())).with_headers(headers);
    Invocation::enqueue(enqueue).then(Message::write(request.tuple.clone()))
}

/// The response meta from the app's first frame on a request's channel
/// (`None`: the channel ended). An `error` the app sent before reading is
/// retriable when it proves non-delivery and the request is `replayable`.
fn reply_head(
    first: Option<Result<crate::proto::Frame, ChannelError>>,
    sender: &mut crate::mux::ChannelSender,
    replayable: bool,
) -> Result<ResponseMeta, Attempt> {
    let frame = match first {
        Some(Ok(frame)) => frame,
        Some(Err(e)) => return Err(Attempt::Failed(DispatchError::Channel(e))),
        None => {
            return Err(Attempt::Failed(DispatchError::Protocol(
                "the request's channel ended without a reply",
            )));
        }
    };
    match frame.stream_event() {
        Ok(StreamEvent::Write(chunk)) => {
            ResponseMeta::decode(&chunk).map_err(|e| Attempt::Failed(DispatchError::BadMeta(e)))
        }
        Ok(StreamEvent::Error(error)) => {
            // The app refused before reading: our side ends with `close`.
            sender.close_on_drop();
            if error.code.is_never_delivered() && replayable {
                Err(Attempt::Retriable(DispatchError::App(error)))
            } else {
                Err(Attempt::Failed(DispatchError::App(error)))
            }
        }
        Ok(StreamEvent::Close) => {
            sender.close_on_drop();
            Err(Attempt::Failed(DispatchError::Protocol(
                "the app closed the stream before sending the response meta",
            )))
        }
        Err(e) => Err(Attempt::Failed(DispatchError::BadFrame(e))),
    }
}

/// One attempt of a streamed upload: the `enqueue` and the 5-tuple, then
/// the body's chunks while waiting for the reply head. Retriable only
/// when not delivered and the upload is still replayable.
async fn attempt_streamed(
    handle: &crate::mux::MuxHandle,
    request: &PackedRequest,
    remaining: Option<Duration>,
    slot: &mut Option<Upload>,
) -> Result<Reply, Attempt> {
    let Some(upload) = slot.as_mut() else {
        // Taken by a reply, which ends the attempts: never here.
        return Err(Attempt::Failed(DispatchError::Protocol(
            "the upload was already sent",
        )));
    };
    upload.rewind();
    let lost = |e: ChannelError, upload: &Upload| {
        if e.is_retry_safe() && upload.is_replayable() {
            Attempt::Retriable(DispatchError::Channel(e))
        } else {
            Attempt::Failed(DispatchError::Channel(e))
        }
    };
    let invocation = invocation(request, remaining);
    let channel = handle.open(invocation).await.map_err(|e| lost(e, upload))?;
    let (mut sender, mut receiver) = channel.split();
    // The body flows until the app's first frame (or the body's end).
    let first = loop {
        if upload.is_ended() {
            break receiver.recv().await;
        }
        tokio::select! {
            biased;
            frame = receiver.recv() => break frame,
            step = upload.step(&mut sender) => match step {
                Ok(_) => {}
                // Dropping the sender cancels the app's channel.
                Err(upload::StepError::Upload(e)) => {
                    return Err(Attempt::Failed(DispatchError::Upload(e)));
                }
                Err(upload::StepError::Channel(e)) => return Err(lost(e, upload)),
            },
        }
    };
    let first = match first {
        Some(Err(e)) => return Err(lost(e, upload)),
        other => other,
    };
    let meta = reply_head(first, &mut sender, upload.is_replayable())?;
    let (proto11, content_length) = reply_framing(&meta);
    let body = if upload.is_ended() {
        ReplyBody::new(sender, receiver, proto11, content_length)
    } else {
        match slot.take() {
            Some(upload) => {
                ReplyBody::uploading(upload.into_tail(sender), receiver, proto11, content_length)
            }
            None => ReplyBody::new(sender, receiver, proto11, content_length),
        }
    };
    Ok(Reply { meta, body })
}

/// Whether a reply's body ends at an empty chunk
/// (`X-Cocaine-HTTP-Proto-Version: 1.1`), and its `Content-Length`.
fn reply_framing(meta: &ResponseMeta) -> (bool, Option<u64>) {
    let proto11 = meta
        .headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case(b"x-cocaine-http-proto-version") && &v[..] == b"1.1");
    let content_length = meta
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(b"content-length"))
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.trim().parse().ok());
    (proto11, content_length)
}

/// Bytes of the `enqueue` event, for callers building a [`PackedRequest`].
pub fn event_bytes(event: &str) -> Bytes {
    Bytes::copy_from_slice(event.as_bytes())
}
