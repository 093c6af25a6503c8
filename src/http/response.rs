//! The one place an error becomes an HTTP status: every failure of the
//! request path is a [`GatewayError`] (the exchange's, `dispatch::error`),
//! mapped here to a status, a JSON body
//! `{"error": {"status", "kind", "message", "category", "code",
//! "request_id"}}`, `X-Error-Generated-By: rpcgate` and `X-Request-Id`.

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::GatewayBody;
pub use crate::dispatch::GatewayError;
use crate::dispatch::jsonrpc::{Answer, CallFailure};
use crate::dispatch::{AppBody, AppReply, Upgrade};
use crate::dispatch::{DispatchError, UploadError};
use crate::proto::category;
use crate::proto::http::HeaderPair;
use crate::route::RouteError;

impl GatewayError {
    /// The status, and a short machine-readable kind.
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Route(RouteError::DotSegment | RouteError::EncodedSlash) => {
                (StatusCode::BAD_REQUEST, "bad_path")
            }
            // Exactly as an unknown service: a client cannot probe.
            Self::Route(RouteError::NotExposed(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "service_not_found")
            }
            Self::Route(e) if e.is_bad_request() => (StatusCode::BAD_REQUEST, "bad_route"),
            Self::Route(_) => (StatusCode::NOT_FOUND, "no_route"),
            Self::RequestId(_) => (StatusCode::BAD_REQUEST, "bad_request_id"),
            Self::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            Self::Body(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            Self::ConnectionClosing => (StatusCode::SERVICE_UNAVAILABLE, "connection_closing"),
            Self::TooManyStreams(_) => (StatusCode::SERVICE_UNAVAILABLE, "too_many_streams"),
            Self::Dispatch(e) => match e {
                DispatchError::NotFound(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "service_not_found")
                }
                DispatchError::NoConnection(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "no_connection")
                }
                DispatchError::NotAnApp(_) => (StatusCode::NOT_FOUND, "not_an_app"),
                DispatchError::LocatorUnavailable(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "locator_unavailable")
                }
                DispatchError::Overloaded { .. } => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
                DispatchError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
                DispatchError::Deadline(_) => (StatusCode::GATEWAY_TIMEOUT, "deadline"),
                DispatchError::Protocol(_)
                | DispatchError::BadMeta(_)
                | DispatchError::BadFrame(_)
                | DispatchError::BadStatus(_)
                | DispatchError::Channel(_) => (StatusCode::BAD_GATEWAY, "bad_gateway"),
                DispatchError::Shed(_) => (StatusCode::SERVICE_UNAVAILABLE, "shed"),
                DispatchError::App(_) => (StatusCode::INTERNAL_SERVER_ERROR, "app_error"),
                DispatchError::Upload(e) => match e {
                    UploadError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
                    UploadError::Stalled(_) => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
                    UploadError::Client(_) => (StatusCode::BAD_REQUEST, "bad_body"),
                },
            },
        }
    }

    /// The error response.
    pub fn into_response(self, request_id: u64) -> Response<GatewayBody> {
        let (status, kind) = self.status();
        let app_error = match &self {
            Self::Dispatch(DispatchError::App(e)) => Some(e),
            Self::Dispatch(DispatchError::Overloaded { last, .. }) => Some(last),
            _ => None,
        };
        let message = match app_error {
            Some(e) => e.to_string(),
            None => self.to_string(),
        };
        let body = serde_json::json!({
            "error": {
                "status": status.as_u16(),
                "kind": kind,
                "message": message,
                "category": app_error.map(|e| category::name(e.code.category)),
                "code": app_error.map(|e| e.code.code),
                "request_id": format!("{request_id:016x}"),
            }
        });
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = Response::new(GatewayBody::full(Bytes::from(bytes)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            hyper::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            HeaderName::from_static("x-error-generated-by"),
            HeaderValue::from_static("rpcgate"),
        );
        if matches!(
            self,
            Self::Dispatch(DispatchError::Overloaded { .. } | DispatchError::Shed(_))
        ) {
            headers.insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        set_request_id(headers, request_id);
        response
    }
}

/// The response to a JSON-RPC request. The rule (JSON-RPC 2.0 over HTTP
/// as most servers apply it): every JSON-RPC response is 200 with its
/// errors inside, parse errors included; a request of only notifications
/// is 204 with no body. Failures before the body is read (413 for a body
/// over `request.body_limit`, 503 when shed) are [`GatewayError`]s.
pub fn jsonrpc(answer: Answer, request_id: u64) -> Response<GatewayBody> {
    let mut response = match answer {
        Answer::Nothing => {
            let mut response = Response::new(GatewayBody::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
        }
        Answer::Json(body) => {
            let mut response = Response::new(GatewayBody::full(body));
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
    };
    set_request_id(response.headers_mut(), request_id);
    response
}

/// The status a JSON-RPC call's outcome stands for, in its metrics sample,
/// span and access-log line (its HTTP response is 200 whatever it is).
pub fn call_status(failure: Option<CallFailure>) -> StatusCode {
    match failure {
        None => StatusCode::OK,
        Some(CallFailure::Invalid) => StatusCode::BAD_REQUEST,
        Some(CallFailure::NotFound) => StatusCode::NOT_FOUND,
        Some(CallFailure::Refused) => StatusCode::SERVICE_UNAVAILABLE,
        Some(CallFailure::Unreachable) => StatusCode::SERVICE_UNAVAILABLE,
        Some(CallFailure::Deadline) => StatusCode::GATEWAY_TIMEOUT,
        Some(CallFailure::BadReply) => StatusCode::BAD_GATEWAY,
        Some(CallFailure::Backend) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A failed JSON-RPC call's error kind, for its span.
pub fn call_failure_kind(failure: CallFailure) -> &'static str {
    match failure {
        CallFailure::Invalid => "bad_call",
        CallFailure::NotFound => "method_not_found",
        CallFailure::Refused => "shed",
        CallFailure::Unreachable => "no_connection",
        CallFailure::Deadline => "deadline",
        CallFailure::BadReply => "bad_gateway",
        CallFailure::Backend => "app_error",
    }
}

/// Headers that describe one hop and are never copied from the app.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// Tells nginx not to buffer a push stream.
pub(crate) const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// The response to the app's reply: its status, its headers (by value, less
/// the hop-by-hop ones and any that are not valid HTTP), and its body; a
/// push stream's headers tell proxies in front not to buffer it.
pub fn reply(reply: AppReply, request_id: u64) -> Response<GatewayBody> {
    let AppReply {
        status,
        headers: app_headers,
        body,
        no_body,
        push,
        event_stream,
    } = reply;
    let body = match body {
        AppBody::Empty => GatewayBody::empty(),
        AppBody::Stream(body) => GatewayBody::Stream(body),
        AppBody::Push(push) => GatewayBody::Push(push),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    copy_headers(app_headers, headers, |_| false);
    if no_body {
        headers.remove(hyper::header::CONTENT_LENGTH);
    }
    if push {
        // nginx in front must pass each chunk on at once.
        headers.remove(hyper::header::CONTENT_LENGTH);
        headers.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
        if event_stream && !headers.contains_key(hyper::header::CACHE_CONTROL) {
            headers.insert(
                hyper::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            );
        }
    }
    set_request_id(headers, request_id);
    response
}

/// The 101 for a WebSocket the app accepted: the app's headers (its
/// `Sec-WebSocket-Protocol`...), the handshake's own, and the session to
/// run once the 101 is written (see `http::websocket`).
pub fn upgrade(upgrade: Upgrade, request_id: u64) -> Response<GatewayBody> {
    let Upgrade {
        headers: app_headers,
        key,
        session,
    } = upgrade;
    let mut response = Response::new(GatewayBody::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    copy_headers(app_headers, headers, super::websocket::is_own_header);
    super::websocket::accept(headers, &key);
    set_request_id(headers, request_id);
    response
        .extensions_mut()
        .insert(super::websocket::Pending::new(session));
    response
}

/// Moves the app's headers into `headers`, less hop-by-hop ones, those
/// `skip` names, and any that are not valid HTTP. Repeated headers
/// (`Set-Cookie`...) are all kept.
fn copy_headers(
    from: Vec<HeaderPair>,
    headers: &mut hyper::HeaderMap,
    skip: impl Fn(&HeaderName) -> bool,
) {
    // By value: each header value's bytes move into the response.
    for (name, value) in from {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_maybe_shared(value),
        ) else {
            tracing::debug!("dropping an invalid response header from the app");
            continue;
        };
        if HOP_BY_HOP.contains(&name.as_str()) || skip(&name) {
            continue;
        }
        headers.append(name, value);
    }
}

/// `X-Request-Id: <16 lowercase hex digits>`.
pub fn set_request_id(headers: &mut hyper::HeaderMap, request_id: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = HEX[(request_id >> (60 - 4 * i)) as usize & 0xf];
    }
    if let Ok(value) = HeaderValue::from_bytes(&digits) {
        headers.insert(HeaderName::from_static("x-request-id"), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_16_lowercase_hex_digits() {
        for id in [0, 1, 0xabc, 0x0123_4567_89ab_cdef, u64::MAX, 1 << 63] {
            let mut headers = hyper::HeaderMap::new();
            set_request_id(&mut headers, id);
            assert_eq!(headers["x-request-id"], format!("{id:016x}").as_str());
        }
    }
}
