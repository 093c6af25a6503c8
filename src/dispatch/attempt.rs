//! The attempts of one request: the member choice of a routing group (by
//! weight, or by the sticky key), a connection from the member's pool,
//! sending on a fresh channel, the reply head, the safe-retry rule
//! (DESIGN.md §3.4) under the retry budget, and outlier reports.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::retry::{InFlight, Retry};
use super::{DispatchError, PackedRequest, Reply, ReplyBody, Ticket, Trail, Upload, upload};
use crate::mux::{ChannelError, Invocation};
use crate::pool::{Choice, PoolError, Pools};
use crate::proto::http::ResponseMeta;
use crate::proto::{Args, Message, StreamEvent};

/// One way of sending a request on a fresh channel, once per attempt.
pub(super) trait Sending {
    /// What a successful attempt gives.
    type Reply;

    /// The timeout the request told the app on its first attempt, if any.
    fn sent_timeout(&self) -> Option<Duration>;

    /// Sends the request on a channel of `handle` and waits for the reply
    /// head; `remaining` is what is left of the deadline, for a retry.
    async fn attempt(
        &mut self,
        handle: &crate::mux::MuxHandle,
        remaining: Option<Duration>,
    ) -> Result<Self::Reply, Attempt>;
}

/// A request packed whole: the 5-tuple carries the body.
pub(super) struct Whole<'a>(pub(super) &'a PackedRequest);

impl Sending for Whole<'_> {
    type Reply = Reply;

    fn sent_timeout(&self) -> Option<Duration> {
        self.0.headers.request_timeout()
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
pub(super) struct Streamed<'a> {
    pub(super) request: &'a PackedRequest,
    /// Taken by the reply when the head comes before the body's end.
    pub(super) upload: Option<Upload>,
}

impl Sending for Streamed<'_> {
    type Reply = Reply;

    fn sent_timeout(&self) -> Option<Duration> {
        self.request.headers.request_timeout()
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

pub(super) async fn attempts<S: Sending>(
    pools: &Arc<Pools>,
    retry: &Retry,
    service: &str,
    ticket: &Ticket,
    mut request: S,
    trail: &mut Trail,
) -> Result<S::Reply, DispatchError> {
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
        let remaining = (attempt > 1 && request.sent_timeout().is_none_or(|sent| sent <= total))
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

pub(super) enum Attempt {
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
