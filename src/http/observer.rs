//! The observer: owns turning what was served ([`Served`]) into the
//! request's metrics sample, its span (OpenTelemetry export) and its
//! access-log line (text, or JSON from a writer thread of its own). A
//! JSON-RPC request's calls get one of each too, under their own service
//! and member.
//!
//! What it needs from the request head (the client, method and uri, the
//! span's start) is taken in [`Observer::begin`], before the head is
//! consumed; the rest at [`Observer::end`].

use std::sync::{Arc, OnceLock};

use hyper::http::request::Parts;
use hyper::{Method, Response};
use tokio::time::Instant;

use super::access_log::{self, AccessLog};
use super::body::GatewayBody;
use super::response;
use crate::config::Config;
use crate::dispatch::jsonrpc::CallRecord;
use crate::dispatch::{ClientAddr, GatewayError, TraceDecision, Watching};
use crate::metrics::{RequestMetrics, UNKNOWN_SERVICE};

/// The metrics label of JSON-RPC requests as a whole (their calls are
/// counted under their own services).
const JSONRPC_LABEL: &str = "jsonrpc";

/// Observes requests: metrics, spans and access-log lines.
#[derive(Debug)]
pub(crate) struct Observer {
    pub(crate) metrics: RequestMetrics,
    /// The JSON access log's writer, started by the first config that
    /// asks for it (`access_log = "json"`).
    json_log: OnceLock<Arc<AccessLog>>,
    /// OpenTelemetry export (`[tracing] otlp_endpoint`), when configured.
    otlp: Option<crate::otlp::Tracer>,
}

/// What the observer took from a request's head.
pub(crate) struct Watch {
    started: Instant,
    line: Option<AccessLine>,
    otlp: Option<crate::otlp::Pending>,
    jsonrpc: bool,
}

/// A request's fields for its access-log line.
struct AccessLine {
    client: String,
    method: Method,
    uri: String,
    /// When the head came (JSON lines only).
    time: Option<std::time::SystemTime>,
    span_id: u64,
    /// The high half of an incoming W3C trace id (0: none).
    trace_hi: u64,
}

impl Watch {
    /// Marks a JSON-RPC request: its lines are its calls'.
    pub(crate) fn for_exchange(mut self, jsonrpc: bool) -> Self {
        self.jsonrpc = jsonrpc;
        self
    }
}

/// What was served, but the answer (turned into the response by then).
pub(crate) struct Seen {
    pub(crate) request_id: u64,
    pub(crate) service: Option<String>,
    pub(crate) member: Option<Arc<str>>,
    pub(crate) event: Option<String>,
    pub(crate) attempts: u32,
    pub(crate) upstream: Option<std::net::SocketAddr>,
    pub(crate) bytes_in: Option<u64>,
    /// The gateway's error kind, when the response is an error of its own.
    pub(crate) error: Option<&'static str>,
    /// A JSON-RPC request's calls.
    pub(crate) calls: Vec<CallRecord>,
}

impl Observer {
    /// An observer with `config`'s OpenTelemetry export.
    pub(crate) fn new(config: &Config) -> Self {
        let otlp = crate::otlp::Tracer::start(&config.tracing).unwrap_or_else(|error| {
            tracing::error!(%error, "OpenTelemetry export is off");
            None
        });
        Self {
            metrics: RequestMetrics::new(),
            json_log: OnceLock::new(),
            otlp,
        }
    }

    /// The JSON access log `config` asks for (started by the first config
    /// that does).
    pub(crate) fn json_log_for(&self, config: &Config) -> Option<Arc<AccessLog>> {
        (config.access_log && config.access_log_format == crate::config::AccessLogFormat::Json)
            .then(|| {
                Arc::clone(self.json_log.get_or_init(|| {
                    Arc::new(AccessLog::start(
                        config.access_log_queue,
                        config.access_log_file.clone(),
                    ))
                }))
            })
    }

    /// The OpenTelemetry tracer, when export is on.
    pub(crate) fn tracer(&self) -> Option<&crate::otlp::Tracer> {
        self.otlp.as_ref()
    }

    /// JSON access-log lines dropped so far.
    pub(crate) fn access_log_dropped(&self) -> u64 {
        self.json_log.get().map_or(0, |log| log.dropped())
    }

    /// Waits (at most `limit`) until the JSON access log's queued lines are
    /// written and flushed; logs a warning if they were not.
    pub(crate) async fn flush_access_log(&self, limit: std::time::Duration) {
        if let Some(log) = self.json_log.get()
            && !log.flush(limit).await
        {
            tracing::warn!("the last access-log lines were not written in time");
        }
    }

    /// What a request's head tells the observer, taken before it is
    /// consumed; `decision` is `None` when its trace ids were malformed.
    pub(crate) fn begin(
        &self,
        config: &Config,
        json: bool,
        parts: &Parts,
        decision: Option<&TraceDecision>,
        started: Instant,
    ) -> Watch {
        let line = decision
            .filter(|_| config.access_log)
            .map(|decision| AccessLine {
                client: parts
                    .extensions
                    .get::<ClientAddr>()
                    .map_or_else(|| "-".to_owned(), |c| c.0.to_string()),
                method: parts.method.clone(),
                uri: parts.uri.to_string(),
                time: json.then(access_log::now),
                span_id: decision.trace.span_id,
                trace_hi: decision.trace_hi,
            });
        let otlp = self
            .otlp
            .as_ref()
            .zip(decision)
            .map(|(t, decision)| t.begin(*decision, parts));
        Watch {
            started,
            line,
            otlp,
            jsonrpc: false,
        }
    }

    /// What the exchange should keep or add for this request.
    pub(crate) fn watching(&self, json: bool, watch: &Watch) -> Watching {
        Watching {
            event: json
                || watch
                    .otlp
                    .as_ref()
                    .is_some_and(crate::otlp::Pending::is_sampled),
            traceparent: self.otlp.is_some(),
        }
    }

    /// Records a request that was served: its metrics sample, its span,
    /// its access-log line (JSON lines when `json_log`), and its calls'.
    pub(crate) fn end(
        &self,
        json_log: Option<&Arc<AccessLog>>,
        watch: Watch,
        seen: Seen,
        mut response: Response<GatewayBody>,
    ) -> Response<GatewayBody> {
        let Watch {
            started,
            line,
            otlp,
            jsonrpc,
        } = watch;
        let label = match &seen.service {
            _ if jsonrpc => JSONRPC_LABEL,
            Some(service) => service,
            None => UNKNOWN_SERVICE,
        };
        // Before a member was chosen (shed, not found...), the service is
        // its own member.
        let member_label = match (&seen.service, &seen.member) {
            (Some(_), Some(member)) if !jsonrpc => &**member,
            _ => label,
        };
        let elapsed = started.elapsed();
        let status = response.status().as_u16();
        self.metrics
            .member(label, member_label)
            .record(status, elapsed);
        if !seen.calls.is_empty() {
            self.calls(json_log, otlp.as_ref(), line.as_ref(), &seen);
        }
        if let (Some(tracer), Some(pending)) = (&self.otlp, otlp) {
            let ended = crate::otlp::Ended {
                service: seen.service.as_deref(),
                event: seen.event.as_deref(),
                member: seen.service.is_some().then_some(member_label),
                attempts: seen.attempts,
                upstream: seen.upstream,
                error: seen.error,
            };
            tracer.end(pending, &mut response, &ended);
        }
        // A JSON-RPC request's lines are its calls'.
        let Some(line) = line.filter(|_| !jsonrpc) else {
            return response;
        };
        if let Some(log) = json_log {
            let record = access_log::Record {
                time: line.time.unwrap_or_else(access_log::now),
                request_id: seen.request_id,
                trace_id: seen.request_id,
                trace_hi: line.trace_hi,
                span_id: line.span_id,
                client: line.client,
                method: line.method,
                uri: line.uri,
                status,
                member: seen.service.as_ref().and(seen.member),
                service: seen.service,
                event: seen.event,
                upstream: seen.upstream,
                attempts: (seen.attempts > 0).then_some(seen.attempts),
                bytes_in: seen.bytes_in,
                bytes_out: None,
                complete: None,
                head: elapsed,
                duration: elapsed,
            };
            return log_json(response, record, log, started);
        }
        tracing::info!(
            target: "access",
            request_id = %format!("{:016x}", seen.request_id),
            client = %line.client,
            method = %line.method,
            uri = %line.uri,
            service = label,
            member = member_label,
            status,
            ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
        response
    }

    /// A JSON-RPC request's calls: a metrics sample, a span and an
    /// access-log line each, under the call's service and member.
    fn calls(
        &self,
        json_log: Option<&Arc<AccessLog>>,
        request_span: Option<&crate::otlp::Pending>,
        line: Option<&AccessLine>,
        seen: &Seen,
    ) {
        for call in &seen.calls {
            let status = response::call_status(call.failure).as_u16();
            let service = call.service.as_deref().unwrap_or(UNKNOWN_SERVICE);
            let member = match (&call.service, &call.member) {
                (Some(_), Some(member)) => &**member,
                _ => service,
            };
            self.metrics
                .member(service, member)
                .record(status, call.elapsed);
            let ended = crate::otlp::Ended {
                service: call.service.as_deref(),
                event: Some(&call.method),
                member: call.service.is_some().then_some(member),
                attempts: call.attempts,
                upstream: call.upstream,
                error: call.failure.map(response::call_failure_kind),
            };
            if let (Some(tracer), Some(pending)) = (&self.otlp, request_span) {
                tracer.end_part(pending.part(call.trace, call.elapsed), status, &ended);
            }
            let Some(line) = line else {
                continue;
            };
            if let Some(log) = json_log {
                log.send(access_log::Record {
                    time: line.time.unwrap_or_else(access_log::now),
                    request_id: seen.request_id,
                    trace_id: call.trace.trace.trace_id,
                    trace_hi: call.trace.trace_hi,
                    span_id: call.trace.trace.span_id,
                    client: line.client.clone(),
                    method: line.method.clone(),
                    uri: line.uri.clone(),
                    status,
                    service: call.service.clone(),
                    event: Some(call.method.clone()),
                    member: call.service.as_ref().and(call.member.clone()),
                    upstream: call.upstream,
                    attempts: (call.attempts > 0).then_some(call.attempts),
                    bytes_in: None,
                    bytes_out: None,
                    complete: None,
                    head: call.elapsed,
                    duration: call.elapsed,
                });
                continue;
            }
            tracing::info!(
                target: "access",
                request_id = %format!("{:016x}", seen.request_id),
                client = %line.client,
                method = %line.method,
                uri = %line.uri,
                service,
                member,
                call = %call.method,
                status,
                ms = call.elapsed.as_secs_f64() * 1000.0,
                "json-rpc call"
            );
        }
    }
}

/// `response` with its JSON access-log line: written now for a push
/// stream (its body is never wrapped, so the HTTP/1.1 connection can still
/// take it over; `bytes_out` unknown), else when its body is dropped (sent
/// or abandoned), with the bytes it passed on.
fn log_json(
    response: Response<GatewayBody>,
    record: access_log::Record,
    log: &Arc<AccessLog>,
    started: Instant,
) -> Response<GatewayBody> {
    if matches!(response.body(), GatewayBody::Push(_)) {
        log.send(record);
        return response;
    }
    response.map(|body| {
        GatewayBody::Logged(Box::new(access_log::Logged::new(
            body,
            record,
            Arc::clone(log),
            started,
        )))
    })
}

/// Counts an error response's error (and its limit hit, for a body
/// limit): the `rpcgate_errors_total` sample. Its kind, for the span.
pub(crate) fn count_error(error: &GatewayError) -> &'static str {
    if let Some(limit) = error.body_limit_hit() {
        crate::metrics::limit_hit(limit);
    }
    let (_, kind) = error.status();
    let category = error.app_category().unwrap_or("none");
    metrics::counter!(crate::metrics::ERRORS, crate::metrics::KIND => kind, crate::metrics::CATEGORY => category)
        .increment(1);
    kind
}
