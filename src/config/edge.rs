//! The settings of what the HTTP side adds around each request: spans and
//! the access log, CORS, compression.

use super::*;

/// OpenTelemetry export (`[tracing]`): one span per request whose
/// `trace_bit` is set, batched and sent in the background to an OTLP/HTTP
/// collector. Built at start: a change needs a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingConfig {
    /// Where spans are POSTed (protobuf): `http://host:port/path`, with
    /// `/v1/traces` filled in when the file gave no path. `None`: off.
    pub otlp_endpoint: Option<String>,
    /// The limit on one export (one batch's POST, connect included).
    pub export_timeout: Duration,
    /// A batch smaller than `batch` is sent after waiting this long.
    pub batch_delay: Duration,
    /// Spans waiting for export, at most; past it new spans are dropped
    /// (and counted).
    pub queue: usize,
    /// Spans in one export, at most.
    pub batch: usize,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            export_timeout: Duration::from_secs(5),
            batch_delay: Duration::from_secs(1),
            queue: 2048,
            batch: 512,
        }
    }
}

/// The access log's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// A `tracing` event per request (target `access`), in the process's
    /// log format.
    #[default]
    Text,
    /// One JSON object per line, written off the request path by a writer
    /// of its own (see `README-operating-http.md` for the fields).
    Json,
}

/// CORS, answered by the gateway with tower-http's `CorsLayer`: preflights
/// (`OPTIONS` with `Access-Control-Request-Method`) never reach an app.
/// Off while `allow_origins` is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct CorsConfig {
    /// Origins allowed, exactly as browsers send them
    /// (`https://app.example.com`), or just `"*"` for any.
    pub allow_origins: Vec<String>,
    /// Methods a preflight allows (`"*"` for any).
    pub allow_methods: Vec<String>,
    /// Request headers a preflight allows (`"*"` for any).
    pub allow_headers: Vec<String>,
    /// Response headers scripts may read (`"*"` for any).
    pub expose_headers: Vec<String>,
    /// Whether credentials (cookies, HTTP auth) may be sent; never with a
    /// `"*"` in any list.
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight's answer; `None` sends no
    /// `Access-Control-Max-Age`.
    pub max_age: Option<Duration>,
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allow_origins: Vec::new(),
            allow_methods: ["GET", "HEAD", "POST"].map(str::to_owned).to_vec(),
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            allow_credentials: false,
            max_age: None,
        }
    }
}

impl CorsConfig {
    /// Whether CORS is on (some origin is allowed).
    pub fn enabled(&self) -> bool {
        !self.allow_origins.is_empty()
    }

    /// Why this combination cannot be served, with the key (under `cors.`)
    /// that is wrong; `None` when it is fine.
    pub fn problem(&self) -> Option<(&'static str, String)> {
        let lists = [
            ("cors.allow_origins", &self.allow_origins),
            ("cors.allow_methods", &self.allow_methods),
            ("cors.allow_headers", &self.allow_headers),
            ("cors.expose_headers", &self.expose_headers),
        ];
        for (key, list) in lists {
            if list.len() > 1 && list.iter().any(|v| v == "*") {
                return Some((key, "`*` must be the only entry when given".to_owned()));
            }
            if self.allow_credentials && list.iter().any(|v| v == "*") {
                return Some((
                    "cors.allow_credentials",
                    format!("credentials cannot be allowed with `*` in {key} (browsers refuse it)"),
                ));
            }
        }
        for origin in &self.allow_origins {
            if origin != "*"
                && (hyper::header::HeaderValue::from_str(origin).is_err()
                    || !(origin.starts_with("http://") || origin.starts_with("https://"))
                    || origin.ends_with('/'))
            {
                return Some((
                    "cors.allow_origins",
                    format!("`{origin}` is not an origin (scheme://host[:port], no path)"),
                ));
            }
        }
        for method in &self.allow_methods {
            if method != "*" && hyper::Method::from_bytes(method.as_bytes()).is_err() {
                return Some(("cors.allow_methods", format!("`{method}` is not a method")));
            }
        }
        for (key, list) in [
            ("cors.allow_headers", &self.allow_headers),
            ("cors.expose_headers", &self.expose_headers),
        ] {
            for name in list {
                if name != "*" && hyper::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Some((key, format!("`{name}` is not a header name")));
                }
            }
        }
        None
    }
}

/// Response compression with tower-http's `CompressionLayer`: gzip or br
/// by the request's `Accept-Encoding`, for compressible content types
/// only, never for event streams, push streams, or a response the app
/// encoded itself.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressionConfig {
    /// Whether responses are compressed at all.
    pub enabled: bool,
    /// Bodies known to be smaller than this are sent as they are (a body
    /// of unknown length, streamed, is compressed).
    pub min_bytes: u16,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            min_bytes: 1024,
        }
    }
}
