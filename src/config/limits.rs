//! The limits that protect the gateway from its clients (`[limits]`).

use super::*;

/// Limits that protect the gateway from slow, huge or hostile clients.
/// Each one that fires counts in `rpcgate_limit_hits_total{limit}`.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// The largest request head (request line + headers), in bytes (431).
    pub max_header_bytes: usize,
    /// The most header lines in a request (431).
    pub max_headers: usize,
    /// Time to receive a request head; past it the connection is closed
    /// (slowloris). An HTTP/1.1 connection waiting for its next request is
    /// bound by it too until it is parked (`idle_release`). HTTP/1.1
    /// checks it with the connection's idle check: up to `idle_release`
    /// late.
    pub header_timeout: Duration,
    /// A client that sends no request-body bytes for this long, mid-body
    /// (buffered or streamed), is cut: 408 if no response was sent yet,
    /// the app's channel cancelled if it was opened.
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// An HTTP/1.1 connection with no request in flight for this long
    /// gives back its read and write buffers until its next request
    /// (about 16 KiB less per idle connection).
    pub idle_release: Duration,
    /// Open client connections at most. At the limit, the connection
    /// parked (idle) longest is closed to make room for a new one; with
    /// none parked, accepting pauses.
    pub max_connections: usize,
    /// Open connections from one client address at most; past it a new
    /// one is closed at once, unanswered. Unix-socket peers and
    /// `request.trusted_proxies` are exempt.
    pub max_connections_per_client: usize,
    /// IPv6 clients are grouped by this many leading bits of their address
    /// for the per-client caps (connections, streams); IPv4-mapped IPv6
    /// addresses count as their IPv4 address. 1..=128.
    pub client_ipv6_prefix: u8,
    /// Requests in flight at most; beyond it 503 + `Retry-After` at once.
    pub max_in_flight: usize,
    /// HTTP/2: streams open at once per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: the largest header list, in bytes.
    pub h2_max_header_list_size: u32,
    /// HTTP/2: streams reset by the client and not yet processed; past it
    /// the connection is closed (rapid reset, CVE-2023-44487).
    pub h2_max_pending_resets: usize,
    /// Requests a client cancels before their response head: past this
    /// many on one connection, while they are more than half of its
    /// requests, the connection is closed (paced rapid reset).
    pub max_premature_resets: usize,
    /// A long-lived stream (server-sent events, WebSocket) with nothing
    /// moving either way for this long is ended.
    pub stream_idle_timeout: Duration,
    /// A long-lived stream is ended at this age; a `push` service's app is
    /// told it as `request_timeout`.
    pub stream_max_lifetime: Duration,
    /// Long-lived streams (SSE, push, WebSocket) open at most; past it a
    /// new one gets 503 `too_many_streams`.
    pub max_streams: usize,
    /// Long-lived streams open from one client (grouped as by
    /// `client_ipv6_prefix`) at most; past it, 503 `too_many_streams`.
    pub max_streams_per_client: usize,
    /// Frames a stream may have queued for a client that reads slowly;
    /// past it the client is cut (the backend connection never waits).
    pub stream_queue: usize,
    /// An SSE stream whose app is quiet this long gets a `: keepalive`
    /// comment (and again after as long).
    pub sse_keepalive: Duration,
    /// The largest WebSocket message a client may send, in bytes (a
    /// fragmented one counts whole); past it the stream gets close 1009.
    pub websocket_max_message: usize,
    /// WebSocket messages a client may send per second, pings and pongs
    /// included (a token bucket as deep as one second's worth); past it
    /// the stream gets close 1008.
    pub websocket_max_rate: u32,
    /// The gateway pings a WebSocket client this often (the pong is not
    /// waited for: a dead peer shows as a failed write).
    pub websocket_ping: Duration,
    /// Bytes of one reply the gateway holds for a client that reads more
    /// slowly than the app sends; past it the client is cut and the app's
    /// channel cancelled. The backend connection never waits for a client.
    pub reply_buffer: usize,
    /// Bytes of all replies held together (one budget for the gateway);
    /// at it, the reply holding the most is cut to make room.
    pub reply_buffer_total: usize,
    /// A client that takes no response bytes for this long while the
    /// gateway has some to send is cut (nginx's `send_timeout`).
    pub send_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: 64 << 10,
            max_headers: 100,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            idle_release: Duration::from_millis(100),
            max_connections: 10_000,
            max_connections_per_client: 1_000,
            client_ipv6_prefix: 64,
            max_in_flight: 10_000,
            h2_max_concurrent_streams: 256,
            h2_max_header_list_size: 64 << 10,
            h2_max_pending_resets: 20,
            max_premature_resets: 100,
            stream_idle_timeout: Duration::from_secs(300),
            stream_max_lifetime: Duration::from_secs(24 * 3600),
            max_streams: 10_000,
            max_streams_per_client: 64,
            stream_queue: 64,
            sse_keepalive: Duration::from_secs(15),
            websocket_max_message: 1 << 20,
            websocket_max_rate: 200,
            websocket_ping: Duration::from_secs(30),
            // A 64 MiB download completes to a client that reads it more
            // slowly than the app writes it; see config/rpcgate.toml.
            reply_buffer: 64 << 20,
            reply_buffer_total: 512 << 20,
            send_timeout: Duration::from_secs(60),
        }
    }
}
