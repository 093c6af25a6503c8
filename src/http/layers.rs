//! tower-http's CORS and response compression around the handler: owns
//! building them from the config (`[cors]`, `[compression]`), deciding
//! which responses are compressible, and calling the handler through them.
//!
//! Each costs nothing when off: a config with both off (the default) has no
//! [`Layers`], and its requests take the handler's path exactly as before
//! (no layer, box or allocation of this module's). The layers are read from
//! each request's settings snapshot, so a reload (SIGHUP) applies to the
//! next request, on open connections too.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::Body;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tower_http::compression::predicate::{Predicate, SizeAbove};
use tower_http::compression::{CompressionBody, CompressionLayer};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer, ExposeHeaders};
use tower_layer::Layer;
use tower_service::Service;

use super::response::X_ACCEL_BUFFERING;
use super::{GatewayBody, Handler, Settings};
use crate::config::{CompressionConfig, Config, CorsConfig};

/// The layers a config turns on; `None` from [`Layers::new`] when none is.
#[derive(Debug)]
pub(crate) struct Layers {
    cors: Option<CorsLayer>,
    compression: Option<CompressionLayer<Compressible>>,
}

impl Layers {
    /// The layers `config` turns on, or `None` if it turns on none. A CORS
    /// config that cannot be served (refused when a file is loaded, but a
    /// config built in code is not checked there) is left off, with an
    /// error logged: tower-http would panic on it.
    pub(crate) fn new(config: &Config) -> Option<Self> {
        let cors = config.cors.enabled().then(|| cors(&config.cors)).flatten();
        let compression = config
            .compression
            .enabled
            .then(|| compression(&config.compression));
        (cors.is_some() || compression.is_some()).then_some(Self { cors, compression })
    }

    /// Serves `request` through the layers and the handler. The handler's
    /// synchronous first step ([`Handler::begin`]) runs now, before this
    /// returns, as it does without layers.
    pub(crate) fn call<B>(
        &self,
        handler: Arc<Handler>,
        settings: Arc<Settings>,
        request: Request<B>,
    ) -> Layered
    where
        B: Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let inner = Inner {
            cors: self.cors.as_ref(),
            handled: Handled { handler, settings },
        };
        match &self.compression {
            None => Layered::Plain(inner.call_once(request)),
            Some(compression) => Layered::Compressed(compression.layer(inner).call(request)),
        }
    }
}

/// A response future that does not fail.
type ResponseFuture<B> = Pin<Box<dyn Future<Output = Result<Response<B>, Infallible>> + Send>>;

/// A request being served through the layers.
pub(crate) enum Layered {
    /// CORS only: the body is the handler's.
    Plain(ResponseFuture<GatewayBody>),
    /// Through compression (identity when the response is not compressed).
    Compressed(tower_http::compression::ResponseFuture<ResponseFuture<GatewayBody>, Compressible>),
}

impl std::fmt::Debug for Layered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain(_) => "Layered::Plain",
            Self::Compressed(_) => "Layered::Compressed",
        })
    }
}

/// The response of a [`Layered`] request.
// Short-lived: a compressed body (its encoder's state inline) is boxed at
// once by the connection.
#[allow(clippy::large_enum_variant)]
pub(crate) enum LayeredResponse {
    Plain(Response<GatewayBody>),
    Compressed(Response<CompressionBody<GatewayBody>>),
}

impl LayeredResponse {
    /// The response with one body type (the embedded service's).
    pub(crate) fn into_gateway_body(self) -> Response<GatewayBody> {
        match self {
            Self::Plain(response) => response,
            Self::Compressed(response) => response
                .map(|body| GatewayBody::Compressed(Box::new(super::body::CompressedBody(body)))),
        }
    }
}

impl Layered {
    /// The response.
    pub(crate) async fn response(self) -> LayeredResponse {
        match self {
            Self::Plain(future) => match future.await {
                Ok(response) => LayeredResponse::Plain(response),
                Err(never) => match never {},
            },
            Self::Compressed(future) => match future.await {
                Ok(response) => LayeredResponse::Compressed(response),
                Err(never) => match never {},
            },
        }
    }
}

/// CORS (when on) around the handler: the service compression wraps.
struct Inner<'a> {
    cors: Option<&'a CorsLayer>,
    handled: Handled,
}

impl Inner<'_> {
    fn call_once<B>(self, request: Request<B>) -> ResponseFuture<GatewayBody>
    where
        B: Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        match self.cors {
            // A plain OPTIONS (no `Access-Control-Request-Method`) is not
            // a preflight: it goes to the app, as without CORS.
            Some(cors) if !is_plain_options(&request) => {
                // `Handled` is always ready, and the rules were checked
                // when the config was made (see `cors`): no `poll_ready`.
                Box::pin(cors.layer(self.handled).call(request))
            }
            _ => self.handled.call_now(request),
        }
    }
}

impl<B> Service<Request<B>> for Inner<'_>
where
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = ResponseFuture<GatewayBody>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Inner {
            cors: self.cors,
            handled: self.handled.clone(),
        }
        .call_once(request)
    }
}

/// Whether `request` is an OPTIONS request that is not a CORS preflight.
fn is_plain_options<B>(request: &Request<B>) -> bool {
    request.method() == Method::OPTIONS
        && !request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The handler as a tower service, with one settings snapshot.
#[derive(Clone)]
struct Handled {
    handler: Arc<Handler>,
    settings: Arc<Settings>,
}

impl Handled {
    /// Takes the request's first step now (see [`Handler::begin`]).
    fn call_now<B>(self, request: Request<B>) -> ResponseFuture<GatewayBody>
    where
        B: Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let begun = self.handler.begin(&self.settings, request);
        Box::pin(async move { Ok(self.handler.finish(&self.settings, begun).await) })
    }
}

impl<B> Service<Request<B>> for Handled
where
    B: Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<GatewayBody>;
    type Error = Infallible;
    type Future = ResponseFuture<GatewayBody>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.clone().call_now(request)
    }
}

/// tower-http's CORS layer for `config`; `None` (and an error logged) if
/// the combination cannot be served.
fn cors(config: &CorsConfig) -> Option<CorsLayer> {
    if let Some((key, reason)) = config.problem() {
        tracing::error!(key, %reason, "CORS left off: the configuration cannot be served");
        return None;
    }
    let star = |list: &[String]| list.len() == 1 && list[0] == "*";
    let values = |list: &[String]| {
        list.iter()
            .filter_map(|v| HeaderValue::from_str(v).ok())
            .collect::<Vec<_>>()
    };
    let origin = if star(&config.allow_origins) {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(values(&config.allow_origins))
    };
    let methods = if star(&config.allow_methods) {
        AllowMethods::any()
    } else {
        AllowMethods::list(
            config
                .allow_methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok()),
        )
    };
    let names = |list: &[String]| {
        list.iter()
            .filter_map(|n| header::HeaderName::from_bytes(n.as_bytes()).ok())
            .collect::<Vec<_>>()
    };
    let headers = if star(&config.allow_headers) {
        AllowHeaders::any()
    } else {
        AllowHeaders::list(names(&config.allow_headers))
    };
    let expose = if star(&config.expose_headers) {
        ExposeHeaders::any()
    } else {
        ExposeHeaders::list(names(&config.expose_headers))
    };
    let mut layer = CorsLayer::new()
        .allow_origin(origin)
        .allow_methods(methods)
        .allow_headers(headers)
        .expose_headers(expose)
        .allow_credentials(config.allow_credentials);
    if let Some(max_age) = config.max_age {
        layer = layer.max_age(max_age);
    }
    Some(layer)
}

/// tower-http's compression layer for `config`: gzip and br (the features
/// built), for [`Compressible`] responses.
fn compression(config: &CompressionConfig) -> CompressionLayer<Compressible> {
    CompressionLayer::new().compress_when(Compressible {
        min: SizeAbove::new(config.min_bytes),
    })
}

/// Which responses are compressed (besides tower-http's own rules: never
/// one with `Content-Encoding` or `Content-Range`): a compressible content
/// type, a body not known to be under `compression.min_bytes`, and never an
/// informational (101 included), 204 or 304 response, an event stream, or
/// a push stream (the handler marks every push stream with
/// `X-Accel-Buffering: no`; the HTTP/1.1 connection takes those from hyper
/// and writes them itself, which a compressed body would break).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Compressible {
    min: SizeAbove,
}

impl Predicate for Compressible {
    fn should_compress<B>(&self, response: &Response<B>) -> bool
    where
        B: Body,
    {
        let status = response.status();
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
            || response.body().size_hint().exact() == Some(0)
        {
            return false;
        }
        let headers = response.headers();
        if headers
            .get(X_ACCEL_BUFFERING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"no"))
        {
            return false;
        }
        let compressible = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| is_compressible(v.as_bytes()));
        compressible && self.min.should_compress(response)
    }
}

/// Whether a `Content-Type` is worth compressing: text (but event
/// streams), JSON, JavaScript, XML, and their `+json`/`+xml` kin.
fn is_compressible(content_type: &[u8]) -> bool {
    let media = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii()
        .to_ascii_lowercase();
    let Some(slash) = media.iter().position(|&b| b == b'/') else {
        return false;
    };
    let (kind, subtype) = (&media[..slash], &media[slash + 1..]);
    match kind {
        b"text" => subtype != b"event-stream",
        b"application" => {
            matches!(
                subtype,
                b"json" | b"javascript" | b"ecmascript" | b"xml" | b"x-www-form-urlencoded"
            ) || subtype.ends_with(b"+json")
                || subtype.ends_with(b"+xml")
        }
        b"image" => subtype == b"svg+xml",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_content_types() {
        for yes in [
            "text/html",
            "text/plain; charset=utf-8",
            "application/json",
            "Application/JSON",
            "application/problem+json",
            "application/javascript",
            "application/atom+xml",
            "image/svg+xml",
        ] {
            assert!(is_compressible(yes.as_bytes()), "{yes}");
        }
        for no in [
            "text/event-stream",
            "text/event-stream; charset=utf-8",
            "image/png",
            "application/octet-stream",
            "application/grpc",
            "",
            "text",
        ] {
            assert!(!is_compressible(no.as_bytes()), "{no}");
        }
    }

    #[test]
    fn push_streams_and_small_or_empty_bodies_are_never_compressed() {
        let predicate = Compressible {
            min: SizeAbove::new(10),
        };
        let response = |body: &'static str, extra: Option<(&'static str, &'static str)>| {
            let mut response = Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            if let Some((name, value)) = extra {
                response
                    .headers_mut()
                    .insert(name, HeaderValue::from_static(value));
            }
            response
        };
        assert!(predicate.should_compress(&response("long enough body", None)));
        assert!(!predicate.should_compress(&response("short", None)));
        assert!(!predicate.should_compress(&response("", None)));
        assert!(!predicate.should_compress(&response(
            "long enough body",
            Some(("x-accel-buffering", "no"))
        )));
        let mut switching = response("long enough body", None);
        *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        assert!(!predicate.should_compress(&switching));
    }
}
