//! The running config as the admin API shows it (`GET /config`): owns
//! turning a [`Config`] into JSON with the file's key names and units
//! (`*_ms` in milliseconds), with anything that could be secret redacted.
//!
//! What is shown: addresses, limits, timeouts, routes, services, header
//! names, certificate and key *paths* (never their contents, which the
//! config does not hold). What would be redacted: the values of any
//! credential a future key adds; today no key holds one, and each field is
//! listed here by hand so that a new one is shown only once someone has
//! decided it may be.

use std::time::Duration;

use serde_json::{Value, json};

use super::Config;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The config as JSON, keyed as in the file.
pub fn view(config: &Config) -> Value {
    let c = config;
    let mut view = json!({
        "listen": c.listen.to_string(),
        "listen_unix": c.listen_unix.as_ref().map(|p| p.display().to_string()),
        "admin": c.admin.map(|a| a.to_string()),
        "admin_allow_remote": c.admin_allow_remote,
        "locators": c.locators.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "resolve_timeout_ms": ms(c.resolve_timeout),
        "access_log": match (c.access_log, c.access_log_format) {
            (false, _) => json!(false),
            (true, super::AccessLogFormat::Text) => json!("text"),
            (true, super::AccessLogFormat::Json) => json!("json"),
        },
        "access_log_queue": c.access_log_queue,
        "access_log_file": c.access_log_file.as_ref().map(|p| p.display().to_string()),
        "cors": {
            "allow_origins": c.cors.allow_origins,
            "allow_methods": c.cors.allow_methods,
            "allow_headers": c.cors.allow_headers,
            "expose_headers": c.cors.expose_headers,
            "allow_credentials": c.cors.allow_credentials,
            "max_age_secs": c.cors.max_age.map(|d| d.as_secs()),
        },
        "compression": {
            "enabled": c.compression.enabled,
            "min_bytes": c.compression.min_bytes,
        },
        "proxy_protocol": c.proxy_protocol,
        "shutdown_timeout_ms": ms(c.shutdown_timeout),
        "request": {
            "timeout_ms": ms(c.request.timeout),
            "body_limit": c.request.body_limit,
            // Header names only: no value is configured here.
            "forward_headers": c.request.forward_headers,
            "tracing_probability": c.request.tracing_probability,
            "trusted_proxies": c.request.trusted_proxies.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "sticky_header": c.request.sticky_header,
        },
        "pool": {
            "size": c.pool.size,
            "lifespan_ms": ms(c.pool.lifespan),
            "jitter": c.pool.jitter,
            "reconnect_share": c.pool.reconnect_share,
            "connect_timeout_ms": ms(c.pool.connect_timeout),
            "idle_timeout_ms": c.pool.idle_timeout.map_or(0, ms),
            "slow_start_ms": ms(c.pool.slow_start),
        },
        "retry": {
            "attempts": c.retry.attempts,
            "budget_share": c.retry.budget_share,
            "budget_floor": c.retry.budget_floor,
            "backoff_ms": ms(c.retry.backoff),
        },
        "outlier": {
            "consecutive_failures": c.outlier.consecutive_failures,
            "base_ejection_ms": ms(c.outlier.base_ejection),
            "max_ejection_share": c.outlier.max_ejection_share,
        },
        "routing": {
            "by_header": c.routing.by_header,
            "by_path": c.routing.by_path,
            "expose": c.routing.expose,
            "allow_encoded_slash": c.routing.allow_encoded_slash,
        },
        "routes": c.routes.iter().map(|r| json!({
            "host": r.host,
            "prefix": r.prefix,
            "service": r.service,
            "event": r.event,
            "strip_prefix": r.strip_prefix,
        })).collect::<Vec<_>>(),
        "services": c.services.iter().map(|(name, s)| (name.clone(), json!({
            "stream_request_body": s.stream_request_body,
            "timeout_ms": s.timeout.map(ms),
            "pool_size": s.pool_size,
            "lifespan_ms": s.lifespan.map(ms),
            "max_in_flight": s.max_in_flight,
            "push": s.push,
        }))).collect::<serde_json::Map<_, _>>(),
        "limits": limits(&c.limits),
        "tracing": {
            "otlp_endpoint": c.tracing.otlp_endpoint,
            "otlp_timeout_ms": ms(c.tracing.export_timeout),
            "otlp_batch_delay_ms": ms(c.tracing.batch_delay),
            "otlp_queue": c.tracing.queue,
            "otlp_batch": c.tracing.batch,
        },
        "tls": c.tls.as_ref().map(|t| json!({
            "listen": t.listen.to_string(),
            // Paths only: the key material never leaves its file.
            "certificates": t.certificates.iter().map(|pair| json!({
                "cert": pair.cert.display().to_string(),
                "key": pair.key.display().to_string(),
                "names": pair.names,
            })).collect::<Vec<_>>(),
            "client_ca": t.client_ca.as_ref().map(|p| p.display().to_string()),
            "client_subject_header": t.client_subject_header,
            "handshake_timeout_ms": ms(t.handshake_timeout),
            "reload_poll_ms": ms(t.reload_poll),
            "proxy_protocol": t.proxy_protocol,
        })),
    });
    // The file only, never the token (set apart: `json!` is at its
    // recursion limit).
    view["admin_token_file"] = json!(
        c.admin_token
            .as_ref()
            .map(|t| t.file().display().to_string())
    );
    view
}

/// The `limits` section (its own `json!`: one macro for the whole config
/// passes the macro recursion limit).
fn limits(l: &super::LimitsConfig) -> serde_json::Value {
    json!({
        "max_header_bytes": l.max_header_bytes,
        "max_headers": l.max_headers,
        "header_timeout_ms": ms(l.header_timeout),
        "body_timeout_ms": ms(l.body_timeout),
        "idle_timeout_ms": ms(l.idle_timeout),
        "idle_release_ms": ms(l.idle_release),
        "max_connections": l.max_connections,
        "max_connections_per_client": l.max_connections_per_client,
        "client_ipv6_prefix": l.client_ipv6_prefix,
        "max_in_flight": l.max_in_flight,
        "h2_max_concurrent_streams": l.h2_max_concurrent_streams,
        "h2_max_header_list_size": l.h2_max_header_list_size,
        "h2_max_pending_resets": l.h2_max_pending_resets,
        "max_premature_resets": l.max_premature_resets,
        "stream_idle_timeout_ms": ms(l.stream_idle_timeout),
        "stream_max_lifetime_ms": ms(l.stream_max_lifetime),
        "max_streams": l.max_streams,
        "max_streams_per_client": l.max_streams_per_client,
        "stream_queue": l.stream_queue,
        "sse_keepalive_ms": ms(l.sse_keepalive),
        "websocket_max_message_bytes": l.websocket_max_message,
        "websocket_max_frames_per_sec": l.websocket_max_rate,
        "websocket_ping_ms": ms(l.websocket_ping),
        "reply_buffer": l.reply_buffer,
        "reply_buffer_total": l.reply_buffer_total,
        "send_timeout_ms": ms(l.send_timeout),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_is_shown_in_file_units() {
        let value = view(&Config::default());
        assert_eq!(value["request"]["timeout_ms"], 30_000);
        assert_eq!(value["pool"]["idle_timeout_ms"], 300_000);
        assert_eq!(value["admin"], "127.0.0.1:9090");
        assert_eq!(value["routing"]["by_path"], true);
        assert!(value["tls"].is_null());
    }
}
