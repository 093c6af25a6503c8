//! Dispatch: owns serving a request whole ([`exchange`]): the route,
//! admission (load shedding) and the deadline ([`Dispatcher::admit`]), the
//! body, packing into an `enqueue` stream (PROTOCOL.md §5.2, §5.3), the
//! member choice of a routing group, the safe-retry rule (DESIGN.md §3.4)
//! with a retry budget (`attempt`, `retry`), outlier reports, the kind
//! of reply (a body, a push or SSE stream, a WebSocket session), and
//! cancellation (`error [[7, 3]]`) when the client goes away or the
//! deadline passes. JSON-RPC calls go through the same door. The HTTP side
//! holds a [`Dispatcher`], never the pools, and turns what was served into
//! a response.
//!
//! Our side of the channel stays open until the reply ends, so that a
//! cancel is still possible; the app gets `close` once its reply is
//! complete (see [`crate::mux::ChannelSender::close_on_drop`]). A streamed
//! upload ([`upload`]) marks the end of its body with an empty `write`
//! chunk for the same reason.

mod admission;
mod attempt;
mod body;
mod error;
pub mod exchange;
pub mod jsonrpc;
pub mod mirror;
mod pack;
mod push;
mod retry;
mod served;
pub mod streams;
pub mod upload;
pub mod websocket;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use bytes::Bytes;

pub use self::admission::{Policy, Ticket};
use self::attempt::{Streamed, Whole, attempts};
pub use self::body::{BodyAborted, ReplyBody};
pub use self::error::{DispatchError, GatewayError};
pub use self::exchange::{
    Answer, AppBody, AppReply, ClientAddr, Exchange, Served, Upgrade, Watching,
};
pub use self::pack::{BadRequestId, PackedRequest, TraceDecision, pack_request};
pub use self::push::{PushBody, PushLimits};
pub use self::retry::Retry;
pub use self::upload::{Upload, UploadError};
use crate::pool::Pools;
use crate::proto::http::ResponseMeta;

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

/// Serves requests whole (see [`exchange`]): admission (see
/// [`Dispatcher::admit`]), the member choice, retries under the deadline,
/// outlier reports, and the long-lived streams they open. It holds the
/// pools; the HTTP side holds only a dispatcher.
#[derive(Debug)]
pub struct Dispatcher {
    pools: Arc<Pools>,
    /// Requests in flight, for `limits.max_in_flight`.
    in_flight: Arc<AtomicUsize>,
    /// JSON-RPC calls to any service method.
    jsonrpc: jsonrpc::JsonRpc,
    /// Long-lived streams open now (SSE, push, WebSocket).
    streams: streams::Streams,
    /// Copies to `[services.X] mirror` (none in the mirrors' own
    /// dispatcher).
    mirrors: Option<mirror::Mirrors>,
}

impl Dispatcher {
    /// A dispatcher over `pools`, mirroring what the config asks.
    pub fn new(pools: Arc<Pools>) -> Self {
        let mirrors = mirror::Mirrors::new(&pools);
        Self {
            mirrors: Some(mirrors),
            ..Self::unmirrored(pools)
        }
    }

    /// A dispatcher over `pools` that mirrors nothing (the mirrors' own).
    fn unmirrored(pools: Arc<Pools>) -> Self {
        Self {
            jsonrpc: jsonrpc::JsonRpc::new(Arc::clone(pools.locator())),
            pools,
            in_flight: Arc::default(),
            streams: streams::Streams::default(),
            mirrors: None,
        }
    }

    /// [`Dispatcher::send`] of a request whose whole body is in `request`
    /// (`buffered`: not an upgrade or a push service's), plus its mirror
    /// copy when the service has one (see [`mirror`]). A service that
    /// mirrors nothing (every service, by default) takes `send` straight:
    /// the mirroring future is boxed apart, so it does not grow theirs.
    async fn send_buffered(
        &self,
        policy: &Policy,
        service: &str,
        ticket: &Ticket,
        request: &PackedRequest,
        buffered: bool,
    ) -> Outcome {
        if buffered
            && let Some(mirrors) = &self.mirrors
            && policy.mirrors(service)
        {
            let config = policy.config();
            return Box::pin(mirrors.send(self, config, policy, service, ticket, request, true))
                .await;
        }
        self.send(policy, service, ticket, request).await
    }

    /// The pools it sends through.
    pub fn pools(&self) -> &Arc<Pools> {
        &self.pools
    }

    /// The long-lived streams its requests opened (counted, capped, and
    /// stopped or cut at shutdown).
    pub fn streams(&self) -> &streams::Streams {
        &self.streams
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

/// Bytes of the `enqueue` event, for callers building a [`PackedRequest`].
pub fn event_bytes(event: &str) -> Bytes {
    Bytes::copy_from_slice(event.as_bytes())
}
