//! The demo apps: owns `echo`, `hello`, `stream`, `slow`, `fail`, `ticker`, `upload` and `chat`, built on
//! the SDK. They are the standalone mode's backends and load-test targets.
//! Parameters come from the query string.
//!
//! | app | answers |
//! |---|---|
//! | `echo` | the request it got (method, uri, version, headers, body) as JSON |
//! | `hello` | `Hello, World!` (13 bytes), the minimum for load tests |
//! | `stream` | `chunks` chunks (default 5) of `size` bytes (default: a short line), `delay_ms` apart (default 100), without Content-Length |
//! | `slow` | 200 after `delay_ms` (default 1000); stops early if the client cancels |
//! | `fail` | `error [[category, code], message]` (defaults 43, 1, "demo failure") |
//! | `ticker` | server-sent events: the app's clock every `interval_ms` (default 1000); see [`ticker`] |
//! | `upload` | the body's `bytes`, `chunks` and SipHash `sip13` as JSON, reading a streamed body (`stream_request_body`) to its end |
//! | `chat` | WebSocket rooms at `/rooms/NAME` (every message to every member) and a page at `/`; see [`chat`] |
//!
//! Every app can be given a version tag (`echo` as `echo-v1`, say): it then
//! answers with an `X-App-Version` header, so traffic shifting is visible.

pub mod chat;
pub mod ticker;
mod upload;

use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;

use super::{AppBuilder, HttpRequest, HttpResponse, RequestError};
use crate::proto::http::HeaderPair;
use crate::proto::{ErrorCode, RemoteError};

/// The demo app names.
pub const NAMES: [&str; 8] = [
    "echo", "hello", "stream", "slow", "fail", "ticker", "upload", "chat",
];

/// The body of `hello`.
pub const HELLO: &[u8] = b"Hello, World!";

/// The longest delay a demo app accepts, so a request cannot park a task
/// for hours.
const MAX_DELAY: Duration = Duration::from_secs(300);

/// The most chunks `stream` sends.
const MAX_CHUNKS: u64 = 100_000;

/// The largest `stream` chunk.
const MAX_CHUNK_SIZE: usize = 1 << 20;

/// Builds demo app `name`, published as `name` or `name-version`, with the
/// `http` event. `None` for an unknown name.
pub fn build(name: &str, version: Option<&str>) -> Option<AppBuilder> {
    let published = match version {
        Some(v) => format!("{name}-{v}"),
        None => name.to_owned(),
    };
    let tag: Option<Bytes> = version.map(|v| Bytes::copy_from_slice(v.as_bytes()));
    let app = AppBuilder::new(published.clone());
    let app = match name {
        "echo" => app.on_http("http", move |req, res| {
            echo(req, res, published.clone(), tag.clone())
        }),
        "hello" => app.on_http("http", move |req, res| hello(req, res, tag.clone())),
        "stream" => app.on_http("http", move |req, res| stream(req, res, tag.clone())),
        "slow" => app.on_http("http", move |req, res| slow(req, res, tag.clone())),
        "fail" => app.on_http("http", fail),
        "ticker" => app.on_http("http", move |req, res| {
            ticker::ticker(req, res, tag.clone())
        }),
        "upload" => app.on_http("http", move |req, res| {
            upload::upload(req, res, tag.clone())
        }),
        "chat" => {
            let rooms = std::sync::Arc::new(chat::Rooms::default());
            app.on_websocket("http", move |req| {
                chat::chat(req, std::sync::Arc::clone(&rooms), tag.clone())
            })
        }
        _ => return None,
    };
    Some(app)
}

fn header(name: &'static str, value: impl Into<Bytes>) -> HeaderPair {
    (Bytes::from_static(name.as_bytes()), value.into())
}

fn with_version(mut headers: Vec<HeaderPair>, tag: &Option<Bytes>) -> Vec<HeaderPair> {
    if let Some(tag) = tag {
        headers.push(header("X-App-Version", tag.clone()));
    }
    headers
}

fn param<T: FromStr>(req: &HttpRequest, name: &str, default: T) -> Result<T, RemoteError> {
    match req.query_param(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            RemoteError::new(
                ErrorCode::new(crate::proto::category::WORKER_USER, 400),
                format!("query parameter `{name}` has a bad value `{v}`"),
            )
        }),
    }
}

fn delay(req: &HttpRequest, default_ms: u64) -> Result<Duration, RemoteError> {
    Ok(Duration::from_millis(param(req, "delay_ms", default_ms)?).min(MAX_DELAY))
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn echo(
    req: HttpRequest,
    res: HttpResponse,
    app: String,
    tag: Option<Bytes>,
) -> super::HandlerResult {
    // The body is the one in the 5-tuple, as Cocaine HTTP workers read it: a
    // gateway keeps its side of the channel open until the reply ends (so it
    // can still cancel), so waiting for more chunks would wait for ever.
    let body = &req.body;
    let json = serde_json::json!({
        "app": app,
        "version": tag.as_deref().map(lossy),
        "method": lossy(&req.method),
        "uri": lossy(&req.uri),
        "http_version": lossy(&req.version),
        "headers": req.headers().map(|(n, v)| [lossy(n), lossy(v)]).collect::<Vec<_>>(),
        "body": String::from_utf8_lossy(body),
        "trace_id": req.frame_headers.trace_id().map(|t| format!("{t:016x}")),
    });
    let body = serde_json::to_vec_pretty(&json).unwrap_or_default();
    let headers = with_version(
        vec![
            header("Content-Type", "application/json"),
            header("Content-Length", body.len().to_string()),
        ],
        &tag,
    );
    res.respond(200, headers, body).await.ok();
    Ok(())
}

async fn hello(_req: HttpRequest, res: HttpResponse, tag: Option<Bytes>) -> super::HandlerResult {
    let headers = with_version(
        vec![
            header("Content-Type", "text/plain"),
            header("Content-Length", "13"),
        ],
        &tag,
    );
    res.respond(200, headers, Bytes::from_static(HELLO))
        .await
        .ok();
    Ok(())
}

async fn stream(
    mut req: HttpRequest,
    mut res: HttpResponse,
    tag: Option<Bytes>,
) -> super::HandlerResult {
    let chunks: u64 = param(&req, "chunks", 5u64)?.min(MAX_CHUNKS);
    let size: usize = param(&req, "size", 0usize)?.min(MAX_CHUNK_SIZE);
    let pause = delay(&req, 100)?;
    let headers = with_version(vec![header("Content-Type", "text/plain")], &tag);
    if res.head(200, headers).await.is_err() {
        return Ok(());
    }
    for i in 0..chunks {
        let chunk = if size == 0 {
            Bytes::from(format!("chunk {i}\n"))
        } else {
            Bytes::from(vec![b'a' + (i % 26) as u8; size])
        };
        if res.body(chunk).await.is_err() {
            return Ok(());
        }
        if i + 1 < chunks {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                e = req.cancelled() => return stopped(e),
            }
        }
    }
    res.finish().await.ok();
    Ok(())
}

async fn slow(mut req: HttpRequest, res: HttpResponse, tag: Option<Bytes>) -> super::HandlerResult {
    let pause = delay(&req, 1000)?;
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        e = req.cancelled() => return stopped(e),
    }
    let body = format!("slept {} ms\n", pause.as_millis());
    let headers = with_version(
        vec![
            header("Content-Type", "text/plain"),
            header("Content-Length", body.len().to_string()),
        ],
        &tag,
    );
    res.respond(200, headers, body).await.ok();
    Ok(())
}

/// A cancelled request needs no answer: the client ended its side.
fn stopped(e: RequestError) -> super::HandlerResult {
    tracing::debug!(reason = %e, "demo request stopped early");
    Ok(())
}

async fn fail(req: HttpRequest, _res: HttpResponse) -> super::HandlerResult {
    let category = param(&req, "category", crate::proto::category::WORKER_USER)?;
    let code = param(&req, "code", 1u64)?;
    let message = req
        .query_param("message")
        .unwrap_or_else(|| "demo failure".to_owned());
    Err(RemoteError::new(ErrorCode::new(category, code), message))
}
