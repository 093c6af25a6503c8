//! The one place an error becomes an HTTP status: every failure of the
//! request path is a [`GatewayError`], mapped here to a status, a JSON body
//! `{"error": {"status", "kind", "message", "category", "code",
//! "request_id"}}`, `X-Error-Generated-By: rpcgate` and `X-Request-Id`.

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::GatewayBody;
use crate::dispatch::jsonrpc::Answer;
use crate::dispatch::{BadRequestId, DispatchError, UploadError};
use crate::proto::category;
use crate::route::RouteError;

/// Every way the request path can fail, by who failed.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route (client: 400 or 404).
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A malformed `X-Request-Id` (client: 400).
    #[error(transparent)]
    RequestId(#[from] BadRequestId),
    /// The body is over the limit (client: 413).
    #[error("request body larger than the limit of {0} bytes")]
    BodyTooLarge(usize),
    /// The client sent no body bytes for `limits.body_timeout` (client:
    /// 408).
    #[error("no request body bytes for {0:?}")]
    BodyTimeout(std::time::Duration),
    /// The body could not be read (client: 400).
    #[error("reading the request body failed: {0}")]
    Body(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The backend side failed (locator, connection, app).
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The request came on a connection being closed because its client
    /// cancelled most of its requests (rapid reset): not dispatched (503).
    #[error("this connection is closing: its client cancelled most of its requests")]
    ConnectionClosing,
    /// A new long-lived stream past `limits.max_streams` or
    /// `limits.max_streams_per_client` (503).
    #[error(transparent)]
    TooManyStreams(#[from] super::streams::TooManyStreams),
}

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

    /// The `rpcgate_limit_hits_total` label of the client limit this
    /// error is, if it is one of the body's (size or timeout).
    pub fn body_limit_hit(&self) -> Option<&'static str> {
        match self {
            Self::BodyTooLarge(_) => Some("body_size"),
            Self::BodyTimeout(_) => Some("body_timeout"),
            Self::Dispatch(DispatchError::Upload(e)) => e.limit(),
            _ => None,
        }
    }

    /// The app error's category name, when the app answered with one.
    pub fn app_category(&self) -> Option<&'static str> {
        match self {
            Self::Dispatch(DispatchError::App(e) | DispatchError::Overloaded { last: e, .. }) => {
                Some(category::name(e.code.category))
            }
            _ => None,
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
