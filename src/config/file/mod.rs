//! The gateway config file as written (serde, unknown keys refused), and its
//! conversion into [`Config`] with each key checked.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{
    AccessLogFormat, CertificateConfig, Config, ConfigError, RouteConfig, ServiceConfig, TlsConfig,
};

mod shape;
use self::shape::*;

struct Checker<'a> {
    file: &'a Path,
}

impl Checker<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    fn addr(&self, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
        value
            .parse()
            .map_err(|_| self.err(key, format!("`{value}` is not an ip:port address")))
    }

    fn ms(&self, key: &str, value: i64, min: i64, max: i64) -> Result<Duration, ConfigError> {
        if !(min..=max).contains(&value) {
            return Err(self.err(key, format!("must be from {min} to {max} ms, not {value}")));
        }
        Ok(Duration::from_millis(value as u64))
    }

    fn int(&self, key: &str, value: i64, min: i64, max: i64) -> Result<usize, ConfigError> {
        if !(min..=max).contains(&value) {
            return Err(self.err(key, format!("must be from {min} to {max}, not {value}")));
        }
        Ok(value as usize)
    }

    fn otlp_endpoint(&self, key: &str, value: &str) -> Result<String, ConfigError> {
        super::otlp_endpoint(value).map_err(|reason| self.err(key, reason))
    }

    fn share(&self, key: &str, value: f64) -> Result<f64, ConfigError> {
        if !(0.0..=1.0).contains(&value) {
            return Err(self.err(key, format!("must be from 0 to 1, not {value}")));
        }
        Ok(value)
    }
}

/// The longest timeout accepted anywhere: a day.
const MAX_MS: i64 = 86_400_000;

pub(super) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let c = Checker { file: path };
    let raw: File = toml::from_str(text).map_err(|e| {
        c.err(
            "(syntax)",
            e.to_string().replace('\n', " ").trim().to_owned(),
        )
    })?;
    let mut config = Config::default();
    if let Some(v) = &raw.listen {
        config.listen = c.addr("listen", v)?;
    }
    if let Some(v) = &raw.admin {
        config.admin = if v.is_empty() {
            None
        } else {
            Some(c.addr("admin", v)?)
        };
    }
    if let Some(v) = raw.admin_allow_remote {
        config.admin_allow_remote = v;
    }
    if let Some(v) = &raw.admin_token_file {
        let token = crate::admin::Token::load(Path::new(v))
            .map_err(|e| c.err("admin_token_file", e.to_string()))?;
        config.admin_token = Some(token);
    }
    if let Some(reason) = config.admin_exposure() {
        return Err(c.err("admin", reason));
    }
    if let Some(list) = &raw.locators {
        config.locators = list
            .iter()
            .map(|v| c.addr("locators", v))
            .collect::<Result<_, _>>()?;
        if config.locators.is_empty() {
            return Err(c.err("locators", "needs at least one ip:port"));
        }
    }
    match raw.access_log {
        None => {}
        Some(AccessLogFile::On(on)) => config.access_log = on,
        Some(AccessLogFile::Format(format)) => {
            config.access_log = true;
            config.access_log_format = match format.as_str() {
                "text" => AccessLogFormat::Text,
                "json" => AccessLogFormat::Json,
                other => {
                    return Err(c.err(
                        "access_log",
                        format!("`{other}` is not true, false, \"text\" or \"json\""),
                    ));
                }
            };
        }
    }
    if let Some(v) = raw.access_log_queue {
        config.access_log_queue = c.int("access_log_queue", v, 1, 1 << 24)?;
    }
    if let Some(v) = &raw.access_log_file {
        if v.is_empty() {
            return Err(c.err("access_log_file", "must be a file path"));
        }
        let base = c.file.parent().unwrap_or(Path::new("."));
        config.access_log_file = Some(base.join(v));
    }
    if let Some(cors) = raw.cors {
        let config = &mut config.cors;
        if let Some(v) = cors.allow_origins {
            config.allow_origins = v;
        }
        if let Some(v) = cors.allow_methods {
            config.allow_methods = v;
        }
        if let Some(v) = cors.allow_headers {
            config.allow_headers = v;
        }
        if let Some(v) = cors.expose_headers {
            config.expose_headers = v;
        }
        if let Some(v) = cors.allow_credentials {
            config.allow_credentials = v;
        }
        if let Some(v) = cors.max_age_secs {
            let secs = c.int("cors.max_age_secs", v, 0, 86_400)?;
            config.max_age = Some(Duration::from_secs(secs as u64));
        }
        if let Some((key, reason)) = config.problem() {
            return Err(c.err(key, reason));
        }
    }
    if let Some(z) = raw.compression {
        if let Some(v) = z.enabled {
            config.compression.enabled = v;
        }
        if let Some(v) = z.min_bytes {
            config.compression.min_bytes = c.int("compression.min_bytes", v, 0, 65_535)? as u16;
        }
    }
    if let Some(v) = raw.proxy_protocol {
        config.proxy_protocol = v;
    }
    if let Some(v) = &raw.listen_unix {
        if v.is_empty() {
            return Err(c.err("listen_unix", "must be a socket path"));
        }
        let base = c.file.parent().unwrap_or(Path::new("."));
        config.listen_unix = Some(base.join(v));
    }
    if let Some(v) = raw.resolve_timeout_ms {
        config.resolve_timeout = c.ms("resolve_timeout_ms", v, 1, MAX_MS)?;
    }
    if let Some(v) = raw.shutdown_timeout_ms {
        config.shutdown_timeout = c.ms("shutdown_timeout_ms", v, 0, MAX_MS)?;
    }
    if let Some(r) = raw.request {
        if let Some(v) = r.timeout_ms {
            config.request.timeout = c.ms("request.timeout_ms", v, 1, MAX_MS)?;
        }
        if let Some(v) = r.body_limit {
            config.request.body_limit = c.int("request.body_limit", v, 0, 1 << 30)?;
        }
        if let Some(map) = r.forward_headers {
            for (http, cocaine) in &map {
                let key = format!("request.forward_headers.{http}");
                if http.is_empty() || cocaine.is_empty() {
                    return Err(c.err(&key, "header names must not be empty"));
                }
                if hyper::header::HeaderName::from_bytes(http.as_bytes()).is_err() {
                    return Err(c.err(&key, format!("`{http}` is not a valid HTTP header name")));
                }
                if cocaine.as_bytes() == crate::proto::http::REQUEST_BODY {
                    return Err(c.err(
                        &key,
                        format!("`{cocaine}` is reserved: it marks a streamed request body"),
                    ));
                }
                let mut probe = crate::proto::Headers::new();
                if probe.insert(cocaine.clone(), vec![0u8; 3]).is_err() {
                    return Err(c.err(
                        &key,
                        format!("`{cocaine}` is reserved for trace and timeout headers"),
                    ));
                }
            }
            config.request.forward_headers = map
                .into_iter()
                .map(|(http, cocaine)| (http.to_ascii_lowercase(), cocaine))
                .collect();
        }
        if let Some(v) = r.tracing_probability {
            config.request.tracing_probability = c.share("request.tracing_probability", v)?;
        }
        if let Some(list) = r.trusted_proxies {
            config.request.trusted_proxies = list
                .iter()
                .map(|v| {
                    crate::cidr::Cidr::parse(v).ok_or_else(|| {
                        c.err(
                            "request.trusted_proxies",
                            format!("`{v}` is not an address or ADDR/PREFIX block"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = r.sticky_header {
            if hyper::header::HeaderName::from_bytes(v.as_bytes()).is_err() {
                return Err(c.err(
                    "request.sticky_header",
                    format!("`{v}` is not a valid HTTP header name"),
                ));
            }
            config.request.sticky_header = v.to_ascii_lowercase();
        }
    }
    if let Some(t) = raw.tracing {
        let tracing = &mut config.tracing;
        if let Some(v) = &t.otlp_endpoint {
            tracing.otlp_endpoint = if v.is_empty() {
                None
            } else {
                Some(c.otlp_endpoint("tracing.otlp_endpoint", v)?)
            };
        }
        if let Some(v) = t.otlp_timeout_ms {
            tracing.export_timeout = c.ms("tracing.otlp_timeout_ms", v, 1, 60_000)?;
        }
        if let Some(v) = t.otlp_batch_delay_ms {
            tracing.batch_delay = c.ms("tracing.otlp_batch_delay_ms", v, 1, 60_000)?;
        }
        if let Some(v) = t.otlp_queue {
            tracing.queue = c.int("tracing.otlp_queue", v, 1, 1 << 20)?;
        }
        if let Some(v) = t.otlp_batch {
            tracing.batch = c.int("tracing.otlp_batch", v, 1, 1 << 16)?;
        }
    }
    if let Some(p) = raw.pool {
        if let Some(v) = p.size {
            config.pool.size = c.int("pool.size", v, 1, 256)?;
        }
        if let Some(v) = p.lifespan_ms {
            config.pool.lifespan = c.ms("pool.lifespan_ms", v, 10, MAX_MS)?;
        }
        if let Some(v) = p.jitter {
            config.pool.jitter = c.share("pool.jitter", v)?;
        }
        if let Some(v) = p.reconnect_share {
            config.pool.reconnect_share = c.share("pool.reconnect_share", v)?;
        }
        if let Some(v) = p.connect_timeout_ms {
            config.pool.connect_timeout = c.ms("pool.connect_timeout_ms", v, 1, MAX_MS)?;
        }
        if let Some(v) = p.idle_timeout_ms {
            let timeout = c.ms("pool.idle_timeout_ms", v, 0, MAX_MS)?;
            config.pool.idle_timeout = (!timeout.is_zero()).then_some(timeout);
        }
        if let Some(v) = p.slow_start_ms {
            config.pool.slow_start = c.ms("pool.slow_start_ms", v, 0, MAX_MS)?;
        }
    }
    if let Some(r) = raw.routing {
        if let Some(v) = r.by_header {
            config.routing.by_header = v;
        }
        if let Some(v) = r.by_path {
            config.routing.by_path = v;
        }
        if let Some(v) = r.allow_encoded_slash {
            config.routing.allow_encoded_slash = v;
        }
        if let Some(list) = r.expose {
            if let Some(empty) = list.iter().find(|name| name.is_empty()) {
                return Err(c.err(
                    "routing.expose",
                    format!("`{empty}`: a service name must not be empty"),
                ));
            }
            config.routing.expose = Some(list.into_iter().collect());
        }
    }
    if let Some(j) = raw.jsonrpc {
        if let Some(v) = j.enabled {
            config.jsonrpc.enabled = v;
        }
        if let Some(path) = j.path {
            if !path.starts_with('/') {
                return Err(c.err("jsonrpc.path", "must start with `/`"));
            }
            config.jsonrpc.path = path;
        }
        if let Some(v) = j.max_batch {
            config.jsonrpc.max_batch = c.int("jsonrpc.max_batch", v, 1, 100_000)?;
        }
        if let Some(list) = j.allow {
            // Only whole methods: a service name alone would open every
            // method of, say, `node` by accident.
            if let Some(bad) = list.iter().find(|entry| {
                !entry
                    .split_once('.')
                    .is_some_and(|(s, m)| !s.is_empty() && !m.is_empty())
            }) {
                return Err(c.err(
                    "jsonrpc.allow",
                    format!("`{bad}`: entries are \"service.method\", a whole method each"),
                ));
            }
            config.jsonrpc.allow = list.into_iter().collect();
        }
    }
    if let Some(o) = raw.outlier {
        if let Some(v) = o.consecutive_failures {
            config.outlier.consecutive_failures =
                c.int("outlier.consecutive_failures", v, 0, 1_000_000)? as u32;
        }
        if let Some(v) = o.base_ejection_ms {
            config.outlier.base_ejection = c.ms("outlier.base_ejection_ms", v, 1, MAX_MS)?;
        }
        if let Some(v) = o.max_ejection_share {
            config.outlier.max_ejection_share = c.share("outlier.max_ejection_share", v)?;
        }
    }
    if let Some(r) = raw.retry {
        if let Some(v) = r.attempts {
            config.retry.attempts = c.int("retry.attempts", v, 1, 10)? as u32;
        }
        if let Some(v) = r.budget_share {
            config.retry.budget_share = c.share("retry.budget_share", v)?;
        }
        if let Some(v) = r.budget_floor {
            config.retry.budget_floor = c.int("retry.budget_floor", v, 0, 1_000_000)?;
        }
        if let Some(v) = r.backoff_ms {
            config.retry.backoff = c.ms("retry.backoff_ms", v, 0, 60_000)?;
        }
    }
    for (name, s) in raw.services {
        let key = |k: &str| format!("services.{name}.{k}");
        let service = ServiceConfig {
            stream_request_body: s.stream_request_body.unwrap_or(false),
            timeout: s
                .timeout_ms
                .map(|v| c.ms(&key("timeout_ms"), v, 1, MAX_MS))
                .transpose()?,
            pool_size: s
                .pool_size
                .map(|v| c.int(&key("pool_size"), v, 1, 256))
                .transpose()?,
            lifespan: s
                .lifespan_ms
                .map(|v| c.ms(&key("lifespan_ms"), v, 10, MAX_MS))
                .transpose()?,
            max_in_flight: s
                .max_in_flight
                .map(|v| c.int(&key("max_in_flight"), v, 1, 10_000_000))
                .transpose()?,
            push: s.push.unwrap_or(false),
            mirror: match s.mirror {
                Some(m) if m.is_empty() || m == name => {
                    return Err(c.err(&key("mirror"), "must name another service"));
                }
                m => m,
            },
            mirror_share: s
                .mirror_share
                .map(|v| c.share(&key("mirror_share"), v))
                .transpose()?
                .unwrap_or(super::DEFAULT_MIRROR_SHARE),
            mirror_max_in_flight: s
                .mirror_max_in_flight
                .map(|v| c.int(&key("mirror_max_in_flight"), v, 1, 1_000_000))
                .transpose()?
                .unwrap_or(super::DEFAULT_MIRROR_MAX_IN_FLIGHT),
        };
        config.services.insert(name, service);
    }
    for (i, r) in raw.routes.into_iter().enumerate() {
        let key = |k: &str| format!("routes[{i}].{k}");
        if r.service.is_empty() {
            return Err(c.err(&key("service"), "must not be empty"));
        }
        if r.host.is_none() && r.prefix.is_none() {
            return Err(c.err(
                &format!("routes[{i}]"),
                "needs a `host`, a `prefix`, or both",
            ));
        }
        if let Some(prefix) = &r.prefix {
            if !prefix.starts_with('/') {
                return Err(c.err(&key("prefix"), "must start with `/`"));
            }
        }
        config.routes.push(RouteConfig {
            host: r.host.map(|h| h.to_ascii_lowercase()),
            prefix: r.prefix,
            service: r.service,
            event: r.event.unwrap_or_else(|| "http".to_owned()),
            strip_prefix: r.strip_prefix.unwrap_or(false),
        });
    }
    if let Some(l) = raw.limits {
        let limits = &mut config.limits;
        if let Some(v) = l.max_header_bytes {
            // hyper's HTTP/1 read buffer has a floor of 8 KiB.
            limits.max_header_bytes = c.int("limits.max_header_bytes", v, 8192, 16 << 20)?;
        }
        if let Some(v) = l.max_headers {
            limits.max_headers = c.int("limits.max_headers", v, 1, 10_000)?;
        }
        if let Some(v) = l.header_timeout_ms {
            limits.header_timeout = c.ms("limits.header_timeout_ms", v, 1, MAX_MS)?;
        }
        if let Some(v) = l.body_timeout_ms {
            limits.body_timeout = c.ms("limits.body_timeout_ms", v, 1, MAX_MS)?;
        }
        if let Some(v) = l.idle_timeout_ms {
            limits.idle_timeout = c.ms("limits.idle_timeout_ms", v, 1, MAX_MS)?;
        }
        if let Some(v) = l.idle_release_ms {
            limits.idle_release = c.ms("limits.idle_release_ms", v, 0, MAX_MS)?;
        }
        if let Some(v) = l.max_connections {
            limits.max_connections = c.int("limits.max_connections", v, 1, 10_000_000)?;
        }
        if let Some(v) = l.max_connections_per_client {
            limits.max_connections_per_client =
                c.int("limits.max_connections_per_client", v, 1, 10_000_000)?;
        }
        if let Some(v) = l.client_ipv6_prefix {
            limits.client_ipv6_prefix = c.int("limits.client_ipv6_prefix", v, 1, 128)? as u8;
        }
        if let Some(v) = l.max_in_flight {
            limits.max_in_flight = c.int("limits.max_in_flight", v, 1, 10_000_000)?;
        }
        if let Some(v) = l.h2_max_concurrent_streams {
            limits.h2_max_concurrent_streams =
                c.int("limits.h2_max_concurrent_streams", v, 1, 100_000)? as u32;
        }
        if let Some(v) = l.h2_max_header_list_size {
            limits.h2_max_header_list_size =
                c.int("limits.h2_max_header_list_size", v, 1024, 16 << 20)? as u32;
        }
        if let Some(v) = l.h2_max_pending_resets {
            limits.h2_max_pending_resets = c.int("limits.h2_max_pending_resets", v, 1, 100_000)?;
        }
        if let Some(v) = l.max_premature_resets {
            limits.max_premature_resets = c.int("limits.max_premature_resets", v, 1, 1 << 30)?;
        }
        if let Some(v) = l.stream_idle_timeout_ms {
            limits.stream_idle_timeout = c.ms("limits.stream_idle_timeout_ms", v, 1, MAX_MS)?;
        }
        if let Some(v) = l.stream_max_lifetime_ms {
            limits.stream_max_lifetime = c.ms("limits.stream_max_lifetime_ms", v, 1, MAX_MS)?;
        }
        if let Some(v) = l.max_streams {
            limits.max_streams = c.int("limits.max_streams", v, 1, 10_000_000)?;
        }
        if let Some(v) = l.max_streams_per_client {
            limits.max_streams_per_client =
                c.int("limits.max_streams_per_client", v, 1, 10_000_000)?;
        }
        if let Some(v) = l.stream_queue {
            limits.stream_queue = c.int("limits.stream_queue", v, 1, 1 << 20)?;
        }
        if let Some(v) = l.sse_keepalive_ms {
            limits.sse_keepalive = c.ms("limits.sse_keepalive_ms", v, 1, MAX_MS)?;
        }
        if let Some(v) = l.websocket_max_message_bytes {
            limits.websocket_max_message =
                c.int("limits.websocket_max_message_bytes", v, 1, 1 << 30)?;
        }
        if let Some(v) = l.websocket_max_frames_per_sec {
            limits.websocket_max_rate =
                c.int("limits.websocket_max_frames_per_sec", v, 1, 1_000_000)? as u32;
        }
        if let Some(v) = l.websocket_ping_ms {
            limits.websocket_ping = c.ms("limits.websocket_ping_ms", v, 1, MAX_MS)?;
        }
        if let Some(v) = l.reply_buffer {
            limits.reply_buffer = c.int("limits.reply_buffer", v, 4096, 1 << 40)?;
        }
        if let Some(v) = l.reply_buffer_total {
            limits.reply_buffer_total = c.int("limits.reply_buffer_total", v, 4096, 1 << 44)?;
        }
        if limits.reply_buffer_total < limits.reply_buffer {
            return Err(c.err(
                "limits.reply_buffer_total",
                "must be at least limits.reply_buffer",
            ));
        }
        if let Some(v) = l.send_timeout_ms {
            limits.send_timeout = c.ms("limits.send_timeout_ms", v, 1, MAX_MS)?;
        }
    }
    if let Some(t) = raw.tls {
        config.tls = Some(tls(&c, t)?);
    }
    Ok(config)
}

fn tls(c: &Checker<'_>, t: TlsFile) -> Result<TlsConfig, ConfigError> {
    // Relative paths are relative to the config file.
    let base = c.file.parent().unwrap_or(Path::new("."));
    let path = |key: &str, v: &str| {
        if v.is_empty() {
            Err(c.err(key, "must not be empty"))
        } else {
            Ok(base.join(v))
        }
    };
    let listen = c.addr("tls.listen", &t.listen)?;
    let mut certificates = Vec::new();
    for (i, pair) in t.certificates.iter().enumerate() {
        let key = |k: &str| format!("tls.certificates[{i}].{k}");
        let mut names = Vec::new();
        for name in &pair.names {
            let bare = name.strip_prefix("*.").unwrap_or(name);
            if bare.is_empty() || bare.contains('*') || bare.contains(char::is_whitespace) {
                return Err(c.err(&key("names"), format!("`{name}` is not a server name")));
            }
            names.push(name.to_ascii_lowercase());
        }
        certificates.push(CertificateConfig {
            cert: path(&key("cert"), &pair.cert)?,
            key: path(&key("key"), &pair.key)?,
            names,
        });
    }
    let Some(first) = certificates.first().cloned() else {
        return Err(c.err("tls.certificates", "needs at least one `cert` + `key` pair"));
    };
    let mut config = TlsConfig::new(listen, first.cert, first.key);
    config.certificates = certificates;
    if let Some(v) = &t.client_ca {
        config.client_ca = Some(path("tls.client_ca", v)?);
    }
    if let Some(v) = t.client_subject_header {
        if hyper::header::HeaderName::from_bytes(v.as_bytes()).is_err() {
            return Err(c.err(
                "tls.client_subject_header",
                format!("`{v}` is not a valid HTTP header name"),
            ));
        }
        config.client_subject_header = v.to_ascii_lowercase();
    }
    if let Some(v) = t.handshake_timeout_ms {
        config.handshake_timeout = c.ms("tls.handshake_timeout_ms", v, 1, MAX_MS)?;
    }
    if let Some(v) = t.reload_poll_ms {
        config.reload_poll = c.ms("tls.reload_poll_ms", v, 10, MAX_MS)?;
    }
    if let Some(v) = t.proxy_protocol {
        config.proxy_protocol = v;
    }
    Ok(config)
}
