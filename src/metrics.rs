//! Metric names and labels: owns every metric the library emits, as
//! constants, and their help text ([`describe`]). Library code only calls
//! the `metrics` macros; the binary installs the Prometheus recorder and
//! the admin API renders it at `/metrics` (STYLE.md §19).
//!
//! Labels stay low-cardinality: a service label is only ever a service that
//! resolved (anything else is [`UNKNOWN_SERVICE`]), and status is a class.

/// Requests answered, by `service` and `status` class (2xx...5xx).
pub const REQUESTS: &str = "rpcgate_requests_total";
/// Request latency in seconds, by `service`.
pub const REQUEST_SECONDS: &str = "rpcgate_request_duration_seconds";
/// Requests being handled now.
pub const IN_FLIGHT: &str = "rpcgate_requests_in_flight";
/// Open HTTP connections.
pub const HTTP_CONNECTIONS: &str = "rpcgate_http_connections";
/// Backend connections by `service` and `state` (live, stale, draining).
pub const POOL_CONNECTIONS: &str = "rpcgate_pool_connections";
/// Backend connects, by `service` and `result` (ok, error).
pub const POOL_CONNECTS: &str = "rpcgate_pool_connects_total";
/// Rolling refreshes started, by `service`.
pub const POOL_REFRESHES: &str = "rpcgate_pool_refreshes_total";
/// Resolves sent to a locator, by `result` (ok, not_found, error).
pub const RESOLVES: &str = "rpcgate_resolves_total";
/// Requests sent again after a refusal that proved non-delivery, by `service`.
pub const RETRIES: &str = "rpcgate_retries_total";
/// Error responses, by `kind` and app error `category`.
pub const ERRORS: &str = "rpcgate_errors_total";

/// Label: the virtual service.
pub const SERVICE: &str = "service";
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
    describe_gauge!(HTTP_CONNECTIONS, "Open HTTP connections.");
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
}

/// `200` → `2xx`.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
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

/// Keeps [`IN_FLIGHT`] right even if a request future is dropped.
#[derive(Debug)]
pub(crate) struct InFlightGuard;

impl InFlightGuard {
    pub(crate) fn new() -> Self {
        metrics::gauge!(IN_FLIGHT).increment(1.0);
        Self
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        metrics::gauge!(IN_FLIGHT).decrement(1.0);
    }
}
