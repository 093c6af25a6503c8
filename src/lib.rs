//! rpcgate: a high-throughput HTTP to Cocaine v12 msgpack-RPC gateway.
//!
//! # Data flow
//!
//! ```text
//! http ──▶ route ──▶ dispatch ──▶ pool ──▶ mux ──▶ proto ──TCP──▶ backend
//!  ▲                    │                   │
//!  └──── reply stream ◀─┴───── channel ◀────┘     locator (behind a trait)
//! ```
//!
//! Requests go down; replies come back on the channel that the request task
//! owns. No lower module imports an upper one.
//!
//! # Layout
//!
//! - [`http`]: the hyper glue: listeners and their one accept path
//!   ([`http::accept`]), HTTP/1.1 + h2 connections, the single error →
//!   status mapping ([`http::response`]), the CORS and compression layers,
//!   and the observer (metrics, spans, access log).
//! - [`route`]: request head → virtual service, event and uri. Pure.
//! - [`dispatch`]: the [`dispatch::Dispatcher`] serves a request whole (the
//!   [`dispatch::exchange`]): route, admission, deadlines, the body,
//!   packing, the member choice of routing groups, safe retries,
//!   cancellation, the streamed reply body, push streams and WebSocket
//!   sessions ([`dispatch::streams`], [`dispatch::websocket`]), streamed
//!   uploads, and JSON-RPC calls through the same door.
//! - [`pool`]: per-service pools of multiplexed connections, refreshed on a
//!   schedule; routing groups (a pool per member, weights, slow start,
//!   outlier ejection).
//! - [`config`]: the gateway's TOML config, validated.
//! - [`listener`]: the accept step all listeners share.
//! - [`cidr`]: address blocks (trusted proxies) and the per-client key,
//!   shared by `config`, `http` and `dispatch`.
//! - [`admin`]: `/ping`, `/health`, `/ready`, `/metrics`, `/pools`, `/config`;
//!   the one admin server (gateway and locator) and its bearer token.
//! - [`metrics`]: metric names, labels and help text.
//! - [`gateway`]: the composition root and standalone mode.
//! - [`proto`]: the wire. Frames, msgpack forms, headers, typed messages.
//!   Sans-IO.
//! - [`mux`]: one backend connection. A task owns the socket and the channel
//!   table; callers hold a cheap cloneable [`mux::MuxHandle`].
//! - [`session`]: the serving side of one connection (mux seen from the
//!   other end), shared by the locator server and the app SDK.
//! - [`locator`]: the [`locator::Locator`] trait the pool consults, a remote
//!   locator client, a fixed table, the locator server, the continuum.
//! - [`app`]: the app SDK (handlers per event, HTTP helper, publishing)
//!   and the demo apps.
//! - [`backoff`]: the doubling, jittered pauses of every retry loop.
//! - [`secret_file`]: reading a credential from a private file (admin
//!   token, etcd password).
//! - [`fuzzing`]: entry points shared by `fuzz/` and the corpus tests.

#![forbid(unsafe_code)]
// `config::view` builds the whole config in one `serde_json::json!`, past
// the default macro recursion limit of 128.
#![recursion_limit = "256"]

pub mod admin;
pub mod app;
pub mod backoff;
pub mod cidr;
pub mod config;
pub mod dispatch;
pub mod fuzzing;
pub mod gateway;
pub mod http;
pub mod listener;
pub mod locator;
pub mod metrics;
pub mod mux;
pub mod otlp;
pub mod pool;
pub mod prefixed;
pub mod proto;
pub mod proxy_protocol;
pub mod rollout;
pub mod route;
pub mod secret_file;
pub mod session;
pub mod systemd;
pub mod tls;
