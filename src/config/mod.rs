//! Gateway configuration: owns the TOML file format of `rpcgate --config`
//! (every key documented in `config/rpcgate.toml`) and its validation into
//! typed values with defaults a user would pick. Unknown keys are errors and
//! every error names the file and the key.

mod file;
mod view;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use self::view::view;
pub use crate::locator::ConfigError;

mod edge;
mod limits;
mod tls;
pub use self::edge::*;
pub use self::limits::*;
pub use self::tls::*;

/// The whole gateway configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where HTTP is served.
    pub listen: SocketAddr,
    /// Where the admin API is served.
    pub admin: Option<SocketAddr>,
    /// Whether the admin API may listen on an address other than loopback
    /// (it needs `admin_token` then).
    pub admin_allow_remote: bool,
    /// The bearer token admin writes (PUT, POST, DELETE) need, read from
    /// `admin_token_file`; `None`: writes need none (loopback only).
    pub admin_token: Option<crate::admin::Token>,
    /// Locator endpoints, tried in order.
    pub locators: Vec<SocketAddr>,
    /// The limit on resolving a service name through the locators
    /// (connect included), for the locator client and each pool.
    pub resolve_timeout: Duration,
    /// Request handling defaults.
    pub request: RequestConfig,
    /// Pool defaults.
    pub pool: PoolConfig,
    /// Retry policy.
    pub retry: RetryConfig,
    /// Per-service overrides.
    pub services: BTreeMap<String, ServiceConfig>,
    /// Configured routes, tried before the header and path rules.
    pub routes: Vec<RouteConfig>,
    /// Which convention rules apply, and what they may reach.
    pub routing: RoutingConfig,
    /// JSON-RPC 2.0 calls to any exposed service method.
    pub jsonrpc: JsonRpcConfig,
    /// Whether each request is logged: as a `tracing` event (target
    /// `access`) or as a JSON line, by `access_log_format`.
    pub access_log: bool,
    /// How the access log is written when `access_log` is on.
    pub access_log_format: AccessLogFormat,
    /// JSON lines waiting for the writer at most; past it a line is
    /// dropped and counted (`rpcgate_access_log_dropped_total`).
    pub access_log_queue: usize,
    /// Where JSON lines go: this file (appended to), or standard error.
    pub access_log_file: Option<PathBuf>,
    /// Cross-origin resource sharing: answered by the gateway.
    pub cors: CorsConfig,
    /// Response compression (gzip, br).
    pub compression: CompressionConfig,
    /// A unix-socket HTTP listener too (for `proxy_pass http://unix:...`).
    /// Its connections count as coming from 127.0.0.1.
    pub listen_unix: Option<PathBuf>,
    /// The HTTPS listener, if any.
    pub tls: Option<TlsConfig>,
    /// Whether connections to `listen` start with a PROXY protocol header
    /// (v1 or v2, from an L4 balancer); required on every connection when
    /// on. The header's client address replaces the connection's peer.
    pub proxy_protocol: bool,
    /// Limits on clients (connections, heads, time, load).
    pub limits: LimitsConfig,
    /// Outlier ejection of routing-group members.
    pub outlier: OutlierConfig,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish;
    /// past it they are cut and the process exits non-zero.
    pub shutdown_timeout: Duration,
    /// OpenTelemetry spans over OTLP/HTTP (`[tracing]`); off by default.
    pub tracing: TracingConfig,
}

/// Outlier ejection: a routing group's member whose requests fail in the
/// backend (connect refused, connection lost, protocol violation, app not
/// running) this many times in a row is taken out of the group for a while.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// Backend failures in a row that eject a member; 0 turns it off.
    pub consecutive_failures: u32,
    /// An ejection lasts this long times the member's ejections so far.
    pub base_ejection: Duration,
    /// At most this share of a group's members are ejected at once.
    pub max_ejection_share: f64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection_share: 0.5,
        }
    }
}

/// How requests are handled.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestConfig {
    /// The default deadline of a request (also sent as `request_timeout`).
    pub timeout: Duration,
    /// The largest request body buffered; beyond it, 413.
    pub body_limit: usize,
    /// HTTP header (lowercase) → Cocaine header forwarded on the enqueue.
    pub forward_headers: BTreeMap<String, String>,
    /// The share of requests sent with `trace_bit = 1`.
    pub tracing_probability: f64,
    /// Peers whose `X-Forwarded-For`, `X-Real-IP` and `Forwarded` headers
    /// are believed (e.g. the nginx in front). The client address that
    /// results reaches the app as `X-Real-IP` and the access log.
    pub trusted_proxies: Vec<crate::cidr::Cidr>,
    /// The header (lowercase) whose value picks a routing group's member on
    /// the group's continuum, as the locator's seeded resolve does.
    pub sticky_header: String,
}

/// How each service's connection pool behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Connections kept per service.
    pub size: usize,
    /// The age after which a connection is replaced.
    pub lifespan: Duration,
    /// Lifespans vary by up to this share either way.
    pub jitter: f64,
    /// At most this share of a pool reconnects at once (at least one).
    pub reconnect_share: f64,
    /// The limit on one TCP connect to a backend.
    pub connect_timeout: Duration,
    /// A pool made on demand (its service is not configured) that served
    /// nothing for this long is closed; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// A member that joins a routing group (or rises from weight 0) ramps
    /// from 10% to 100% of its weight over this long; zero: off.
    pub slow_start: Duration,
}

/// When and how much to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// Retries may be at most this share of the requests in flight...
    pub budget_share: f64,
    /// ...but this many are always allowed.
    pub budget_floor: usize,
    /// The base of the jittered backoff between attempts.
    pub backoff: Duration,
}

/// Overrides for one virtual service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Streamed uploads: a request body goes to the app as `write` chunks
    /// as it arrives, after a 5-tuple with an empty body, instead of
    /// inside the 5-tuple (see `dispatch::upload`). Off by default:
    /// existing workers expect the whole body in the 5-tuple.
    pub stream_request_body: bool,
    /// The deadline for this service's requests.
    pub timeout: Option<Duration>,
    /// Its pool size.
    pub pool_size: Option<usize>,
    /// Its requests in flight at most; beyond it 503 + `Retry-After`.
    pub max_in_flight: Option<usize>,
    /// Its connection lifespan.
    pub lifespan: Option<Duration>,
    /// A push service: its replies are long-lived streams, so the app is
    /// told the stream's lifetime (`limits.stream_max_lifetime`) as
    /// `request_timeout` instead of the request deadline, and its reply
    /// queue cuts a slow client from the start.
    pub push: bool,
    /// Another service (or a routing-group member, even of weight 0) that
    /// gets a copy of a share of this service's buffered requests, fire
    /// and forget (see `dispatch::mirror`).
    pub mirror: Option<String>,
    /// The share of requests copied to `mirror`, 0 to 1.
    pub mirror_share: f64,
    /// Mirror copies in flight at most for this service; past it they are
    /// dropped and counted.
    pub mirror_max_in_flight: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            stream_request_body: false,
            timeout: None,
            pool_size: None,
            max_in_flight: None,
            lifespan: None,
            push: false,
            mirror: None,
            mirror_share: DEFAULT_MIRROR_SHARE,
            mirror_max_in_flight: DEFAULT_MIRROR_MAX_IN_FLIGHT,
        }
    }
}

/// The default `mirror_share`.
pub const DEFAULT_MIRROR_SHARE: f64 = 0.1;
/// The default `mirror_max_in_flight`: a mirror that is slow or down holds
/// at most this many copies (and their backend channels) per service.
pub const DEFAULT_MIRROR_MAX_IN_FLIGHT: usize = 64;

/// The convention rules (PROTOCOL.md §5.1) and what they may reach.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingConfig {
    /// Whether `X-Cocaine-Service` + `X-Cocaine-Event` route a request.
    pub by_header: bool,
    /// Whether `/<service>/<event>/<rest>` routes a request.
    pub by_path: bool,
    /// The services the header and path rules may reach; `None`: any.
    /// Configured routes always reach their own service.
    pub expose: Option<std::collections::BTreeSet<String>>,
    /// Whether a path may carry an encoded `/` or `\` (`%2f`, `%5c`);
    /// off: 400 `bad_path`, for every rule and configured route.
    pub allow_encoded_slash: bool,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            by_header: true,
            by_path: true,
            expose: None,
            allow_encoded_slash: false,
        }
    }
}

/// JSON-RPC 2.0 (`[jsonrpc]`): requests with `X-Cocaine-JSON-RPC` or
/// `Content-Type: application/json-rpc` on `path` call service methods.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonRpcConfig {
    /// Whether JSON-RPC requests are served.
    pub enabled: bool,
    /// The path they are served on.
    pub path: String,
    /// The most calls in one batch.
    pub max_batch: usize,
    /// Methods of services that are not apps which may be called, as
    /// `"service.method"` (e.g. `locator.resolve`). Apps' methods are
    /// always callable; nothing else is. `routing.expose` narrows both.
    pub allow: std::collections::BTreeSet<String>,
}

impl Default for JsonRpcConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: "/".to_owned(),
            max_batch: 100,
            allow: std::collections::BTreeSet::new(),
        }
    }
}

/// A configured route: host and/or path prefix → service and event.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Match this `Host` (without port), if set.
    pub host: Option<String>,
    /// Match paths starting with this, if set.
    pub prefix: Option<String>,
    /// The virtual service.
    pub service: String,
    /// The event.
    pub event: String,
    /// Whether the prefix is removed from the uri sent to the app.
    pub strip_prefix: bool,
}

impl Default for RequestConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            body_limit: 10 << 20,
            forward_headers: [("authorization".to_owned(), "authorization".to_owned())].into(),
            tracing_probability: 0.01,
            trusted_proxies: Vec::new(),
            sticky_header: "x-cocaine-sticky".to_owned(),
        }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            size: 32,
            lifespan: Duration::from_secs(60),
            jitter: 0.2,
            reconnect_share: 0.25,
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Some(Duration::from_secs(300)),
            slow_start: Duration::ZERO,
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            attempts: 3,
            budget_share: 0.2,
            budget_floor: 10,
            backoff: Duration::from_millis(5),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            admin_allow_remote: false,
            admin_token: None,
            locators: vec![SocketAddr::from(([127, 0, 0, 1], 10053))],
            resolve_timeout: Duration::from_secs(2),
            tls: None,
            proxy_protocol: false,
            listen_unix: None,
            limits: LimitsConfig::default(),
            outlier: OutlierConfig::default(),
            shutdown_timeout: Duration::from_secs(30),
            request: RequestConfig::default(),
            pool: PoolConfig::default(),
            retry: RetryConfig::default(),
            services: BTreeMap::new(),
            routes: Vec::new(),
            routing: RoutingConfig::default(),
            jsonrpc: JsonRpcConfig::default(),
            access_log: false,
            access_log_format: AccessLogFormat::Text,
            access_log_queue: 4096,
            access_log_file: None,
            cors: CorsConfig::default(),
            compression: CompressionConfig::default(),
            tracing: TracingConfig::default(),
        }
    }
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&crate::locator::config::read_file(path)?, path)
    }

    /// Parses and validates TOML; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Self, ConfigError> {
        file::parse(text, file)
    }

    /// Why the admin address may not be used: it is not a loopback address
    /// and `admin_allow_remote` is off, or `admin_allow_remote` is on
    /// without a token. `None` when it is fine.
    pub fn admin_exposure(&self) -> Option<String> {
        let addr = self.admin?;
        if self.admin_allow_remote && self.admin_token.is_none() {
            return Some(format!(
                "admin_allow_remote = true puts the admin API (`{addr}`) on the \
                 network, where its writes need a token: set admin_token_file"
            ));
        }
        (!addr.ip().is_loopback() && !self.admin_allow_remote).then(|| {
            format!(
                "`{addr}` is not a loopback address; set admin_allow_remote = true \
                 (and admin_token_file) to serve the admin API there"
            )
        })
    }

    /// The deadline for `service`.
    pub fn timeout_for(&self, service: &str) -> Duration {
        self.services
            .get(service)
            .and_then(|s| s.timeout)
            .unwrap_or(self.request.timeout)
    }

    /// The pool size for `service`.
    pub fn pool_size_for(&self, service: &str) -> usize {
        self.services
            .get(service)
            .and_then(|s| s.pool_size)
            .unwrap_or(self.pool.size)
    }

    /// The keys whose change from `self` to `new` cannot apply to a
    /// running gateway (listeners are bound, locator clients started), by
    /// their names in the file. Everything else reloads live.
    pub fn needs_restart(&self, new: &Self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut differs = |key, changed: bool| {
            if changed {
                keys.push(key);
            }
        };
        differs("listen", self.listen != new.listen);
        differs("admin", self.admin != new.admin);
        differs("locators", self.locators != new.locators);
        differs(
            "resolve_timeout_ms",
            self.resolve_timeout != new.resolve_timeout,
        );
        differs("listen_unix", self.listen_unix != new.listen_unix);
        differs("proxy_protocol", self.proxy_protocol != new.proxy_protocol);
        // The JSON writer is made once, with its queue and file.
        differs(
            "access_log_queue",
            self.access_log_queue != new.access_log_queue,
        );
        differs(
            "access_log_file",
            self.access_log_file != new.access_log_file,
        );
        // The exporter and its queue are built at start.
        differs("tracing", self.tracing != new.tracing);
        match (&self.tls, &new.tls) {
            (Some(old), Some(new)) => {
                // Certificates reload live; the rest shapes the listener.
                differs("tls.listen", old.listen != new.listen);
                differs("tls.client_ca", old.client_ca != new.client_ca);
                differs(
                    "tls.client_subject_header",
                    old.client_subject_header != new.client_subject_header,
                );
                differs(
                    "tls.handshake_timeout_ms",
                    old.handshake_timeout != new.handshake_timeout,
                );
                differs("tls.reload_poll_ms", old.reload_poll != new.reload_poll);
                differs(
                    "tls.proxy_protocol",
                    old.proxy_protocol != new.proxy_protocol,
                );
            }
            (old, new) => differs("tls", old.is_some() != new.is_some()),
        }
        keys
    }

    /// The connection lifespan for `service`.
    pub fn lifespan_for(&self, service: &str) -> Duration {
        self.services
            .get(service)
            .and_then(|s| s.lifespan)
            .unwrap_or(self.pool.lifespan)
    }
}

/// An OTLP/HTTP endpoint as `[tracing] otlp_endpoint` takes it:
/// `http://host:port[/path]`, no user, query or fragment; a missing path
/// (or `/`) becomes `/v1/traces`. The normalised URL, or why not.
pub fn otlp_endpoint(value: &str) -> Result<String, String> {
    let refuse = |why: &str| format!("`{value}` is not an http://host:port[/path] endpoint: {why}");
    let uri: hyper::Uri = value.parse().map_err(|_| refuse("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(refuse("the scheme must be http (no TLS to the collector)"));
    }
    let authority = uri.authority().ok_or_else(|| refuse("no host"))?;
    if authority.as_str().contains('@') {
        return Err(refuse("no user or password"));
    }
    if authority.host().is_empty() || authority.port_u16().is_none() {
        return Err(refuse("it needs a host and a port"));
    }
    if uri.query().is_some() || value.contains('#') {
        return Err(refuse("no query or fragment"));
    }
    let path = match uri.path() {
        "" | "/" => "/v1/traces",
        path => path,
    };
    Ok(format!("http://{authority}{path}"))
}

/// Where a config came from, for messages.
pub fn inline() -> PathBuf {
    PathBuf::from("<inline>")
}
