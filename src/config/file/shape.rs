//! The file's shape, key for key, as serde reads it: every section refuses
//! unknown keys. Values stay as written; `super` checks and converts them.

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub(super) listen: Option<String>,
    pub(super) listen_unix: Option<String>,
    pub(super) admin: Option<String>,
    pub(super) admin_allow_remote: Option<bool>,
    pub(super) admin_token_file: Option<String>,
    pub(super) locators: Option<Vec<String>>,
    pub(super) resolve_timeout_ms: Option<i64>,
    pub(super) access_log: Option<AccessLogFile>,
    pub(super) access_log_queue: Option<i64>,
    pub(super) access_log_file: Option<String>,
    pub(super) cors: Option<CorsFile>,
    pub(super) compression: Option<CompressionFile>,
    pub(super) proxy_protocol: Option<bool>,
    pub(super) shutdown_timeout_ms: Option<i64>,
    pub(super) request: Option<RequestFile>,
    pub(super) pool: Option<PoolFile>,
    pub(super) retry: Option<RetryFile>,
    #[serde(default)]
    pub(super) services: BTreeMap<String, ServiceFile>,
    #[serde(default)]
    pub(super) routes: Vec<RouteFile>,
    pub(super) tls: Option<TlsFile>,
    pub(super) limits: Option<LimitsFile>,
    pub(super) outlier: Option<OutlierFile>,
    pub(super) routing: Option<RoutingFile>,
    pub(super) jsonrpc: Option<JsonRpcFile>,
    pub(super) tracing: Option<TracingFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TracingFile {
    pub(super) otlp_endpoint: Option<String>,
    pub(super) otlp_timeout_ms: Option<i64>,
    pub(super) otlp_batch_delay_ms: Option<i64>,
    pub(super) otlp_queue: Option<i64>,
    pub(super) otlp_batch: Option<i64>,
}

/// `access_log`: a bool (as before: text or off) or a format name.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum AccessLogFile {
    On(bool),
    Format(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CorsFile {
    pub(super) allow_origins: Option<Vec<String>>,
    pub(super) allow_methods: Option<Vec<String>>,
    pub(super) allow_headers: Option<Vec<String>>,
    pub(super) expose_headers: Option<Vec<String>>,
    pub(super) allow_credentials: Option<bool>,
    pub(super) max_age_secs: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CompressionFile {
    pub(super) enabled: Option<bool>,
    pub(super) min_bytes: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JsonRpcFile {
    pub(super) enabled: Option<bool>,
    pub(super) path: Option<String>,
    pub(super) max_batch: Option<i64>,
    pub(super) allow: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoutingFile {
    pub(super) by_header: Option<bool>,
    pub(super) by_path: Option<bool>,
    pub(super) expose: Option<Vec<String>>,
    pub(super) allow_encoded_slash: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutlierFile {
    pub(super) consecutive_failures: Option<i64>,
    pub(super) base_ejection_ms: Option<i64>,
    pub(super) max_ejection_share: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsFile {
    pub(super) max_header_bytes: Option<i64>,
    pub(super) max_headers: Option<i64>,
    pub(super) header_timeout_ms: Option<i64>,
    pub(super) body_timeout_ms: Option<i64>,
    pub(super) idle_timeout_ms: Option<i64>,
    pub(super) idle_release_ms: Option<i64>,
    pub(super) max_connections: Option<i64>,
    pub(super) max_connections_per_client: Option<i64>,
    pub(super) client_ipv6_prefix: Option<i64>,
    pub(super) max_in_flight: Option<i64>,
    pub(super) h2_max_concurrent_streams: Option<i64>,
    pub(super) h2_max_header_list_size: Option<i64>,
    pub(super) h2_max_pending_resets: Option<i64>,
    pub(super) max_premature_resets: Option<i64>,
    pub(super) stream_idle_timeout_ms: Option<i64>,
    pub(super) stream_max_lifetime_ms: Option<i64>,
    pub(super) max_streams: Option<i64>,
    pub(super) max_streams_per_client: Option<i64>,
    pub(super) stream_queue: Option<i64>,
    pub(super) sse_keepalive_ms: Option<i64>,
    pub(super) websocket_max_message_bytes: Option<i64>,
    pub(super) websocket_max_frames_per_sec: Option<i64>,
    pub(super) websocket_ping_ms: Option<i64>,
    pub(super) reply_buffer: Option<i64>,
    pub(super) reply_buffer_total: Option<i64>,
    pub(super) send_timeout_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFile {
    pub(super) listen: String,
    pub(super) certificates: Vec<CertificateFile>,
    pub(super) client_ca: Option<String>,
    pub(super) client_subject_header: Option<String>,
    pub(super) handshake_timeout_ms: Option<i64>,
    pub(super) reload_poll_ms: Option<i64>,
    pub(super) proxy_protocol: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CertificateFile {
    pub(super) cert: String,
    pub(super) key: String,
    #[serde(default)]
    pub(super) names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RequestFile {
    pub(super) timeout_ms: Option<i64>,
    pub(super) body_limit: Option<i64>,
    pub(super) forward_headers: Option<BTreeMap<String, String>>,
    pub(super) tracing_probability: Option<f64>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    pub(super) sticky_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PoolFile {
    pub(super) size: Option<i64>,
    pub(super) lifespan_ms: Option<i64>,
    pub(super) jitter: Option<f64>,
    pub(super) reconnect_share: Option<f64>,
    pub(super) connect_timeout_ms: Option<i64>,
    pub(super) idle_timeout_ms: Option<i64>,
    pub(super) slow_start_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryFile {
    pub(super) attempts: Option<i64>,
    pub(super) budget_share: Option<f64>,
    pub(super) budget_floor: Option<i64>,
    pub(super) backoff_ms: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServiceFile {
    pub(super) stream_request_body: Option<bool>,
    pub(super) timeout_ms: Option<i64>,
    pub(super) pool_size: Option<i64>,
    pub(super) lifespan_ms: Option<i64>,
    pub(super) max_in_flight: Option<i64>,
    pub(super) push: Option<bool>,
    pub(super) mirror: Option<String>,
    pub(super) mirror_share: Option<f64>,
    pub(super) mirror_max_in_flight: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RouteFile {
    pub(super) host: Option<String>,
    pub(super) prefix: Option<String>,
    pub(super) service: String,
    pub(super) event: Option<String>,
    pub(super) strip_prefix: Option<bool>,
}
