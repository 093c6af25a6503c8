//! Metric names and labels: owns every metric the library emits, as
//! constants, and their help text ([`describe`]). Library code only calls
//! the `metrics` macros; the binary installs the Prometheus recorder and
//! the admin API renders it at `/metrics` (STYLE.md §19).
//!
//! Labels stay low-cardinality: a service label is only ever a service that
//! resolved (anything else is [`UNKNOWN_SERVICE`]), and status is a class.

/// Requests answered, by `service`, `member` and `status` class (2xx...5xx).
pub const REQUESTS: &str = "rpcgate_requests_total";
/// Request latency in seconds, by `service` and `member`.
pub const REQUEST_SECONDS: &str = "rpcgate_request_duration_seconds";
/// JSON access-log lines dropped because the writer fell behind (its
/// queue, `access_log_queue`, was full).
pub const ACCESS_LOG_DROPPED: &str = "rpcgate_access_log_dropped_total";
/// Requests being handled now.
pub const IN_FLIGHT: &str = "rpcgate_requests_in_flight";
/// Open HTTP connections.
pub const HTTP_CONNECTIONS: &str = "rpcgate_http_connections";
/// Gauge: idle HTTP/1.1 connections parked without buffers (a part of
/// [`HTTP_CONNECTIONS`]).
pub const HTTP_PARKED: &str = "rpcgate_http_connections_parked";
/// Backend connections by `service` and `state` (live, stale, draining).
pub const POOL_CONNECTIONS: &str = "rpcgate_pool_connections";
/// Backend connects, by `service` and `result` (ok, error).
pub const POOL_CONNECTS: &str = "rpcgate_pool_connects_total";
/// Rolling refreshes started, by `service`.
pub const POOL_REFRESHES: &str = "rpcgate_pool_refreshes_total";
/// Resolves sent to a locator, by `result` (ok, not_found, error).
pub const RESOLVES: &str = "rpcgate_resolves_total";
/// Requests sent again after a refusal that proved non-delivery, by
/// `service` and the `member` that refused.
pub const RETRIES: &str = "rpcgate_retries_total";
/// Error responses, by `kind` and app error `category`.
pub const ERRORS: &str = "rpcgate_errors_total";

/// Member picks of routing groups, by `service` (the group) and `member`:
/// what the weighted choice sent where (retries included).
pub const MEMBER_PICKS: &str = "rpcgate_member_picks_total";
/// Gauge: each group member's weight, by `service`, `member` and `kind`
/// (`configured`: its points on the ring; `effective`: after slow start
/// and ejection, on the same scale).
pub const MEMBER_WEIGHT: &str = "rpcgate_member_weight";
/// Members ejected for backend failures in a row, by `service` and `member`.
pub const OUTLIER_EJECTIONS: &str = "rpcgate_outlier_ejections_total";
/// Ejected members back in their group, by `service` and `member`.
pub const OUTLIER_RETURNS: &str = "rpcgate_outlier_returns_total";

/// Client limits that fired, by `limit` (see `config::LimitsConfig`).
pub const LIMIT_HITS: &str = "rpcgate_limit_hits_total";
/// Gauge: 1 while a locator's session with the cluster store (etcd) is
/// up, 0 while it serves its last view and retries.
pub const LOCATOR_STORE_CONNECTED: &str = "rpcgate_locator_store_connected";
/// Counter: a locator's sessions with the cluster store that failed.
pub const LOCATOR_STORE_FAILURES: &str = "rpcgate_locator_store_failures_total";

/// Gauge: long-lived streams open now (server-sent events, WebSocket), by
/// `kind`.
pub const STREAMS_OPEN: &str = "rpcgate_streams_open";
/// Stream messages, by `kind` and `direction` (`in`: from the client,
/// `out`: to it); an SSE stream counts the app's chunks out.
pub const STREAM_MESSAGES: &str = "rpcgate_stream_messages_total";
/// Streams ended, by `kind` and `reason` (see `http::streams`).
pub const STREAM_DISCONNECTS: &str = "rpcgate_stream_disconnects_total";

/// Spans exported to the OTLP collector (`[tracing]`).
pub const TRACE_SPANS_EXPORTED: &str = "rpcgate_trace_spans_exported_total";
/// Spans dropped, by `reason`: `queue_full` (the collector is behind or
/// down), `export_failed`, `export_timeout`.
pub const TRACE_SPANS_DROPPED: &str = "rpcgate_trace_spans_dropped_total";

/// Mirror copies (`[services.X] mirror`), by `service`, `mirror` and
/// `outcome`: `match` (the same status class as the primary's),
/// `mismatch`, `error` (no reply from the mirror), `dropped` (over
/// `mirror_max_in_flight`), `abandoned` (the primary never answered).
pub const MIRROR_TOTAL: &str = "rpcgate_mirror_total";
/// Mirror copies whose status class differed from the primary's, by
/// `service`, `mirror`, `primary` and `mirrored` class (`error`: no reply).
pub const MIRROR_MISMATCHES: &str = "rpcgate_mirror_status_mismatches_total";
/// Seconds to the reply head of mirrored requests, by `service`, `mirror`
/// and `side` (`primary`, `mirror`).
pub const MIRROR_DURATION: &str = "rpcgate_mirror_duration_seconds";
/// Label: the service a copy went to.
pub const MIRROR_TARGET: &str = "mirror";
/// Label: what a copy came to.
pub const MIRROR_OUTCOME: &str = "outcome";
/// Label: `primary` or `mirror`.
pub const MIRROR_SIDE: &str = "side";
/// Label: the primary's status class.
pub const MIRROR_PRIMARY_CLASS: &str = "primary";
/// Label: the mirror's status class.
pub const MIRRORED_CLASS: &str = "mirrored";

/// Label: which limit.
pub const LIMIT: &str = "limit";
/// Label: a stream's kind (`sse`, `websocket`).
pub const STREAM_KIND: &str = "kind";
/// Label: a message's direction (`in`, `out`).
pub const DIRECTION: &str = "direction";
/// Label: why a stream ended.
pub const REASON: &str = "reason";

/// Counts one hit of `limit`.
pub fn limit_hit(limit: &'static str) {
    metrics::counter!(LIMIT_HITS, LIMIT => limit).increment(1);
}

/// Label: the virtual service.
pub const SERVICE: &str = "service";
/// Label: what served a request: a routing group's member, or the app
/// itself (then equal to [`SERVICE`]).
pub const MEMBER: &str = "member";
/// Label: the HTTP status class.
pub const STATUS: &str = "status";
/// Label: a connection state.
pub const STATE: &str = "state";
/// Label: an outcome.
pub const RESULT: &str = "result";
/// Label: an error kind (see `http::response`).
pub const KIND: &str = "kind";
/// Label: an app error category name.
pub const CATEGORY: &str = "category";

/// The service label for requests that never reached a known service.
pub const UNKNOWN_SERVICE: &str = "_unknown";

/// Registers help text for every metric (call once, after installing a
/// recorder).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(REQUESTS, "Requests answered, by service and status class.");
    describe_histogram!(
        REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "Request latency, by service."
    );
    describe_gauge!(IN_FLIGHT, "Requests being handled now.");
    describe_counter!(
        MIRROR_TOTAL,
        "Mirror copies, by service, mirror and outcome (match, mismatch, error, dropped, abandoned)."
    );
    describe_counter!(
        MIRROR_MISMATCHES,
        "Mirror copies whose status class differed from the primary's."
    );
    describe_histogram!(
        MIRROR_DURATION,
        metrics::Unit::Seconds,
        "Time to the reply head of mirrored requests, primary and mirror side."
    );
    describe_gauge!(HTTP_CONNECTIONS, "Open HTTP connections.");
    describe_gauge!(
        HTTP_PARKED,
        "Idle HTTP/1.1 connections that gave back their buffers."
    );
    describe_gauge!(
        POOL_CONNECTIONS,
        "Backend connections by service and state."
    );
    describe_counter!(POOL_CONNECTS, "Backend connects by service and result.");
    describe_counter!(
        POOL_REFRESHES,
        "Rolling pool refreshes started, by service."
    );
    describe_counter!(RESOLVES, "Locator resolves by result.");
    describe_counter!(
        RETRIES,
        "Requests retried after proven non-delivery, by service."
    );
    describe_counter!(ERRORS, "Error responses by kind and app error category.");
    describe_counter!(LIMIT_HITS, "Client limits that fired, by limit.");
    describe_counter!(
        ACCESS_LOG_DROPPED,
        "JSON access-log lines dropped: the writer fell behind and its queue was full."
    );
    describe_counter!(
        TRACE_SPANS_EXPORTED,
        "Spans exported to the OTLP collector."
    );
    describe_counter!(
        TRACE_SPANS_DROPPED,
        "Spans dropped (queue full, export failed or timed out), by reason."
    );
    describe_gauge!(
        STREAMS_OPEN,
        "Long-lived streams open now (SSE, WebSocket), by kind."
    );
    describe_counter!(
        STREAM_MESSAGES,
        "Stream messages by kind and direction (in: from the client, out: to it)."
    );
    describe_counter!(STREAM_DISCONNECTS, "Streams ended, by kind and reason.");
    describe_counter!(
        MEMBER_PICKS,
        "Routing-group member picks (retries included), by group and member."
    );
    describe_gauge!(
        MEMBER_WEIGHT,
        "Routing-group member weights (ring points), configured and effective."
    );
    describe_counter!(
        OUTLIER_EJECTIONS,
        "Group members ejected after backend failures in a row."
    );
    describe_counter!(OUTLIER_RETURNS, "Ejected group members back in service.");
    describe_gauge!(
        LOCATOR_STORE_CONNECTED,
        "1 while the locator's cluster store (etcd) session is up."
    );
    describe_counter!(
        LOCATOR_STORE_FAILURES,
        "Cluster store sessions that failed (the locator serves its last view and retries)."
    );
}

/// Renders the installed recorder's metrics as Prometheus text.
pub type Renderer = Box<dyn Fn() -> String + Send + Sync>;

static RENDERER: std::sync::OnceLock<Renderer> = std::sync::OnceLock::new();

/// Registers how `/metrics` renders (the binary does this when it installs
/// the Prometheus recorder). Only the first call takes effect.
pub fn set_renderer(renderer: Renderer) {
    let _ = RENDERER.set(renderer);
}

/// The Prometheus text, if a renderer was registered.
pub fn render() -> Option<String> {
    RENDERER.get().map(|render| render())
}

/// Installs the Prometheus recorder as the process's `metrics` recorder,
/// registers it as the `/metrics` renderer and describes every metric.
/// Call it once, inside a tokio runtime, before serving: it also spawns
/// the task that folds histogram samples every few seconds, so memory
/// stays bounded even when nobody scrapes.
///
/// # Errors
///
/// A recorder is already installed.
pub fn install_prometheus() -> Result<(), String> {
    // Histograms with buckets (Prometheus `histogram`, aggregatable across
    // gateways), not the exporter's default summaries: a summary keeps a
    // sketch per series that every sample updates, which showed in the
    // load profile; a bucket count is one comparison chain.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .map_err(|e| format!("cannot configure the metrics recorder: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    let upkeep = handle.clone();
    set_renderer(Box::new(move || handle.render()));
    describe();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(())
}

/// The latency histogram's bucket bounds, in seconds: from half a
/// millisecond (a local app) to the longest request timeouts.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Request metrics with their handles registered once: the request path
/// only touches atomics, never the recorder's registry. Handles taken
/// before a recorder is installed record nothing, so build it after.
#[derive(Debug)]
pub(crate) struct RequestMetrics {
    in_flight: metrics::Gauge,
    /// By service, then by member.
    services: std::sync::RwLock<ByService>,
}

type ByService = std::collections::HashMap<String, ServiceEntry>;

/// A service's handles: its own (a plain app is its own member), then
/// those of each routing-group member that served it.
#[derive(Debug)]
struct ServiceEntry {
    own: std::sync::Arc<ServiceMetrics>,
    members: std::collections::HashMap<String, std::sync::Arc<ServiceMetrics>>,
}

impl ServiceEntry {
    fn get(&self, service: &str, member: &str) -> Option<&std::sync::Arc<ServiceMetrics>> {
        if member == service {
            Some(&self.own)
        } else {
            self.members.get(member)
        }
    }
}

/// One service member's request counters (by status class) and latency.
#[derive(Debug)]
pub(crate) struct ServiceMetrics {
    by_class: [metrics::Counter; 5],
    latency: metrics::Histogram,
}

impl ServiceMetrics {
    fn new(service: &str, member: &str) -> Self {
        let counter = |class: &'static str| {
            metrics::counter!(
                REQUESTS,
                SERVICE => service.to_owned(),
                MEMBER => member.to_owned(),
                STATUS => class
            )
        };
        Self {
            by_class: [
                counter("1xx"),
                counter("2xx"),
                counter("3xx"),
                counter("4xx"),
                counter("5xx"),
            ],
            latency: metrics::histogram!(
                REQUEST_SECONDS,
                SERVICE => service.to_owned(),
                MEMBER => member.to_owned()
            ),
        }
    }

    /// Counts one answered request.
    pub(crate) fn record(&self, status: u16, elapsed: std::time::Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].increment(1);
        self.latency.record(elapsed.as_secs_f64());
    }
}

impl RequestMetrics {
    pub(crate) fn new() -> Self {
        Self {
            in_flight: metrics::gauge!(IN_FLIGHT),
            services: std::sync::RwLock::default(),
        }
    }

    /// The handles of `member` of `service` (registered on first use).
    pub(crate) fn member(&self, service: &str, member: &str) -> std::sync::Arc<ServiceMetrics> {
        use std::sync::PoisonError;
        if let Some(found) = self
            .services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(service)
            .and_then(|entry| entry.get(service, member))
        {
            return std::sync::Arc::clone(found);
        }
        let mut services = self
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = services
            .entry(service.to_owned())
            .or_insert_with(|| ServiceEntry {
                own: std::sync::Arc::new(ServiceMetrics::new(service, service)),
                members: std::collections::HashMap::new(),
            });
        if member == service {
            return std::sync::Arc::clone(&entry.own);
        }
        std::sync::Arc::clone(
            entry
                .members
                .entry(member.to_owned())
                .or_insert_with(|| std::sync::Arc::new(ServiceMetrics::new(service, member))),
        )
    }

    /// Counts a request in flight until the guard drops (even if the
    /// request future is dropped).
    pub(crate) fn in_flight(&self) -> InFlightGuard<'_> {
        self.in_flight.increment(1.0);
        InFlightGuard(&self.in_flight)
    }
}

/// Keeps [`IN_FLIGHT`] right even if a request future is dropped.
#[derive(Debug)]
pub(crate) struct InFlightGuard<'a>(&'a metrics::Gauge);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
