//! OpenTelemetry traces over OTLP/HTTP (`[tracing] otlp_endpoint`): owns
//! the `traceparent` the gateway passes on (to the app and back to the
//! client), the one span a sampled request makes, its bounded export queue,
//! and the background task that batches spans and POSTs them to the
//! collector.
//!
//! A request is sampled by the decision that sets its `trace_bit` (see
//! [`TraceDecision`]): no second roll. The request path only ever does a
//! `try_send` into a bounded channel: a collector that is slow or down
//! fills the queue, and spans past it are dropped and counted
//! ([`crate::metrics::TRACE_SPANS_DROPPED`]), never waited for. Each export
//! has a deadline and is not retried.
//!
//! With no endpoint configured there is no [`Tracer`] at all, and requests
//! pay one `Option` check.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, RetryPolicy, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use tokio::sync::{mpsc, oneshot};

use crate::config::TracingConfig;
use crate::dispatch::TraceDecision;

/// The W3C trace-context header, to the app (as a Cocaine header of the
/// same name) and in the response.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// `traceparent` for `decision`: its 128-bit trace id, the gateway span's
/// id (the `span_id` the app also gets), and the sampled flag
/// (`trace_bit`). Written by hand into one buffer: every request pays it
/// (twice) when export is on.
pub fn traceparent(decision: &TraceDecision) -> Bytes {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    fn put(out: &mut [u8], value: u64) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = HEX[((value >> (60 - 4 * i)) & 0xf) as usize];
        }
    }
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    put(&mut text[3..19], decision.trace_hi);
    put(&mut text[19..35], decision.trace.trace_id);
    put(&mut text[36..52], decision.trace.span_id);
    text[54] = if decision.verbose { b'1' } else { b'0' };
    Bytes::from_owner(text)
}

/// The exporter could not be built from the config.
#[derive(Debug, thiserror::Error)]
#[error("the OTLP exporter for `{endpoint}` could not be built")]
pub struct ExporterError {
    endpoint: String,
    #[source]
    source: opentelemetry_otlp::ExporterBuildError,
}

/// Counts of a tracer's spans since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TraceStats {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped: the queue was full, or their export failed or timed
    /// out.
    pub dropped: u64,
    /// The most spans ever waiting in the queue at once.
    pub queued_peak: u64,
}

#[derive(Debug, Default)]
struct Counters {
    exported: AtomicU64,
    dropped: AtomicU64,
    queued_peak: AtomicU64,
}

/// Records the spans of sampled requests and hands them to the background
/// exporter; cheap to clone.
#[derive(Debug, Clone)]
pub struct Tracer {
    spans: mpsc::Sender<SpanData>,
    flushes: mpsc::Sender<oneshot::Sender<()>>,
    queue: usize,
    counters: Arc<Counters>,
}

/// What a request's span needs from its start, kept until its end.
#[derive(Debug)]
pub struct Pending {
    decision: TraceDecision,
    /// Only for a sampled request (boxed: the rest pay one pointer).
    sampled: Option<Box<Start>>,
}

#[derive(Debug)]
struct Start {
    at: SystemTime,
    method: hyper::Method,
    path: String,
}

/// What the gateway learnt about a request by its end.
#[derive(Debug, Default)]
pub struct Ended<'a> {
    /// The routed service.
    pub service: Option<&'a str>,
    /// The event (the RPC method).
    pub event: Option<&'a str>,
    /// The routing group's member (or the app itself) of the last attempt.
    pub member: Option<&'a str>,
    /// Attempts made (retries included).
    pub attempts: u32,
    /// The backend connection's address of the last attempt.
    pub upstream: Option<SocketAddr>,
    /// The gateway's error kind, when the response is an error of its own.
    pub error: Option<&'static str>,
}

impl Pending {
    /// Whether the request is sampled (its span will be exported).
    pub fn is_sampled(&self) -> bool {
        self.sampled.is_some()
    }

    /// The span of a part of this request (a JSON-RPC call) with ids
    /// `decision` (a child of the request's), which took `took` until now;
    /// sampled when the request is.
    pub fn part(&self, decision: TraceDecision, took: std::time::Duration) -> Self {
        let sampled = self.sampled.as_ref().map(|start| {
            Box::new(Start {
                at: wall_clock().checked_sub(took).unwrap_or_else(wall_clock),
                method: start.method.clone(),
                path: start.path.clone(),
            })
        });
        Self { decision, sampled }
    }
}

impl Tracer {
    /// Builds the exporter for `config` and starts its background task on
    /// the current runtime. `Ok(None)` when no endpoint is configured.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, when an endpoint is configured.
    pub fn start(config: &TracingConfig) -> Result<Option<Self>, ExporterError> {
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(None);
        };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(config.export_timeout)
            // A failed batch is dropped: retries would hold the queue.
            .with_retry_policy(RetryPolicy::disabled())
            .build()
            .map_err(|source| ExporterError {
                endpoint: endpoint.clone(),
                source,
            })?;
        exporter.set_resource(
            &opentelemetry_sdk::Resource::builder_empty()
                .with_service_name("rpcgate")
                .build(),
        );
        let (spans, spans_rx) = mpsc::channel(config.queue.max(1));
        let (flushes, flushes_rx) = mpsc::channel(8);
        let counters = Arc::new(Counters::default());
        let task = Exporting {
            exporter,
            spans: spans_rx,
            flushes: flushes_rx,
            batch: config.batch.max(1),
            delay: config.batch_delay,
            timeout: config.export_timeout,
            counters: Arc::clone(&counters),
        };
        tokio::spawn(task.run());
        Ok(Some(Self {
            spans,
            flushes,
            queue: config.queue.max(1),
            counters,
        }))
    }

    /// A request's start: its trace decision, and for a sampled request
    /// what its span will say of it.
    pub fn begin(&self, decision: TraceDecision, parts: &hyper::http::request::Parts) -> Pending {
        let sampled = decision.verbose.then(|| {
            Box::new(Start {
                at: wall_clock(),
                method: parts.method.clone(),
                path: parts.uri.path().to_owned(),
            })
        });
        Pending { decision, sampled }
    }

    /// A request's end: `traceparent` on the response (sampled or not),
    /// and a sampled request's span queued for export (dropped and counted
    /// when the queue is full).
    pub fn end<B>(&self, pending: Pending, response: &mut hyper::Response<B>, ended: &Ended<'_>) {
        if let Ok(value) = HeaderValue::from_maybe_shared(traceparent(&pending.decision)) {
            response.headers_mut().insert(TRACEPARENT, value);
        }
        self.end_part(pending, response.status().as_u16(), ended);
    }

    /// Ends the span of a part of a request that has no response of its
    /// own (a JSON-RPC call, see [`Pending::part`]), with the status its
    /// outcome stands for.
    pub fn end_part(&self, pending: Pending, status: u16, ended: &Ended<'_>) {
        let Some(start) = pending.sampled else {
            return;
        };
        let span = span(&pending.decision, &start, status, ended);
        match self.spans.try_send(span) {
            Ok(()) => {
                let queued = (self.queue - self.spans.capacity()) as u64;
                self.counters
                    .queued_peak
                    .fetch_max(queued, Ordering::Relaxed);
            }
            Err(_) => self.dropped(1, "queue_full"),
        }
    }

    fn dropped(&self, n: u64, reason: &'static str) {
        count_dropped(&self.counters, n, reason);
    }

    /// Exports every span queued so far, and returns once the collector
    /// answered (or the export failed or timed out).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.flushes.send(done).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> TraceStats {
        TraceStats {
            exported: self.counters.exported.load(Ordering::Relaxed),
            dropped: self.counters.dropped.load(Ordering::Relaxed),
            queued_peak: self.counters.queued_peak.load(Ordering::Relaxed),
        }
    }
}

/// Now, by the wall clock: a span's timestamps are wall-clock time, as a
/// log line's are (nothing waits on them).
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> SystemTime {
    SystemTime::now()
}

fn count_dropped(counters: &Counters, n: u64, reason: &'static str) {
    counters.dropped.fetch_add(n, Ordering::Relaxed);
    metrics::counter!(crate::metrics::TRACE_SPANS_DROPPED, crate::metrics::REASON => reason)
        .increment(n);
}

/// The span of one request: a server span, child of the incoming
/// `traceparent`'s span when there was one.
fn span(decision: &TraceDecision, start: &Start, status: u16, ended: &Ended<'_>) -> SpanData {
    let trace = decision.trace;
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&decision.trace_hi.to_be_bytes());
    trace_id[8..].copy_from_slice(&trace.trace_id.to_be_bytes());
    let context = SpanContext::new(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(trace.span_id.to_be_bytes()),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    );
    let parent = if decision.remote_parent {
        SpanId::from_bytes(trace.parent_id.to_be_bytes())
    } else {
        SpanId::INVALID
    };
    let mut attributes = Vec::with_capacity(12);
    attributes.push(KeyValue::new("rpc.system", "cocaine"));
    attributes.push(KeyValue::new(
        "http.request.method",
        start.method.as_str().to_owned(),
    ));
    attributes.push(KeyValue::new("url.path", start.path.clone()));
    attributes.push(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if let Some(service) = ended.service {
        attributes.push(KeyValue::new("rpc.service", service.to_owned()));
    }
    if let Some(event) = ended.event {
        attributes.push(KeyValue::new("rpc.method", event.to_owned()));
    }
    if let Some(member) = ended.member {
        attributes.push(KeyValue::new("rpcgate.member", member.to_owned()));
    }
    if ended.attempts > 0 {
        attributes.push(KeyValue::new("rpcgate.attempts", i64::from(ended.attempts)));
    }
    if let Some(upstream) = ended.upstream {
        attributes.push(KeyValue::new("server.address", upstream.ip().to_string()));
        attributes.push(KeyValue::new("server.port", i64::from(upstream.port())));
    }
    let error = match ended.error {
        Some(kind) => Some(Cow::Borrowed(kind)),
        None if status >= 500 => Some(Cow::Owned(status.to_string())),
        None => None,
    };
    if let Some(kind) = &error {
        attributes.push(KeyValue::new("error.type", kind.clone()));
    }
    let name = match (ended.service, ended.event) {
        (Some(service), Some(event)) => Cow::Owned(format!("{service}/{event}")),
        _ => Cow::Owned(start.method.as_str().to_owned()),
    };
    SpanData {
        span_context: context,
        parent_span_id: parent,
        parent_span_is_remote: decision.remote_parent,
        span_kind: SpanKind::Server,
        name,
        start_time: start.at,
        end_time: wall_clock(),
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        // HTTP server spans: 5xx is an error, 4xx is the client's.
        status: match error {
            Some(kind) if status >= 500 => Status::error(kind),
            _ => Status::Unset,
        },
        instrumentation_scope: InstrumentationScope::builder("rpcgate")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    }
}

/// The background task: takes spans off the queue into batches, and
/// exports a batch when it is full, when `delay` passed since its first
/// span, or on a flush.
struct Exporting {
    exporter: opentelemetry_otlp::SpanExporter,
    spans: mpsc::Receiver<SpanData>,
    flushes: mpsc::Receiver<oneshot::Sender<()>>,
    batch: usize,
    delay: Duration,
    timeout: Duration,
    counters: Arc<Counters>,
}

impl Exporting {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(self.batch);
        loop {
            let deadline = tokio::time::sleep(self.delay);
            tokio::pin!(deadline);
            // Gather until the batch is full or its time is up.
            let flush = loop {
                tokio::select! {
                    span = self.spans.recv() => match span {
                        Some(span) => {
                            if batch.is_empty() {
                                // The first span of a batch starts its clock.
                                deadline.as_mut().reset(tokio::time::Instant::now() + self.delay);
                            }
                            batch.push(span);
                            if batch.len() >= self.batch {
                                break None;
                            }
                        }
                        // Every tracer is gone: send what is left, stop.
                        None => {
                            self.export(&mut batch).await;
                            return;
                        }
                    },
                    () = &mut deadline, if !batch.is_empty() => break None,
                    done = self.flushes.recv() => match done {
                        Some(done) => break Some(done),
                        // Every tracer is gone: send what is left, stop.
                        None => {
                            self.drain(&mut batch).await;
                            return;
                        }
                    },
                }
            };
            if let Some(done) = flush {
                self.drain(&mut batch).await;
                let _ = done.send(());
            } else {
                self.export(&mut batch).await;
            }
        }
    }

    /// Exports `batch` and everything queued now, in batches.
    async fn drain(&mut self, batch: &mut Vec<SpanData>) {
        while let Ok(span) = self.spans.try_recv() {
            batch.push(span);
            if batch.len() >= self.batch {
                self.export(batch).await;
            }
        }
        self.export(batch).await;
    }

    /// Exports and empties `batch`, within the timeout; a failed batch is
    /// dropped and counted.
    async fn export(&self, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::replace(batch, Vec::with_capacity(self.batch));
        let n = spans.len() as u64;
        match tokio::time::timeout(self.timeout, self.exporter.export(spans)).await {
            Ok(Ok(())) => {
                self.counters.exported.fetch_add(n, Ordering::Relaxed);
                metrics::counter!(crate::metrics::TRACE_SPANS_EXPORTED).increment(n);
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, spans = n, "span export failed; dropped");
                count_dropped(&self.counters, n, "export_failed");
            }
            Err(_) => {
                tracing::debug!(spans = n, "span export timed out; dropped");
                count_dropped(&self.counters, n, "export_timeout");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::TraceContext;

    #[test]
    fn traceparent_carries_the_full_trace_id_the_span_and_the_flag() {
        let decision = TraceDecision {
            trace: TraceContext {
                trace_id: 0x0102_0304_0506_0708,
                span_id: 0xaabb,
                parent_id: 7,
            },
            trace_hi: 0xf0,
            remote_parent: true,
            verbose: true,
        };
        assert_eq!(
            &traceparent(&decision)[..],
            b"00-00000000000000f00102030405060708-000000000000aabb-01"
        );
        let unsampled = TraceDecision {
            verbose: false,
            ..decision
        };
        assert!(traceparent(&unsampled).ends_with(b"-00"));
    }
}
