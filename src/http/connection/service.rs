//! The hyper service of one connection: the client header rules, the
//! handler's two steps (through the layers when configured), and the
//! response as hyper sends it.

#[allow(clippy::wildcard_imports)] // the connection's own rooms share its imports
use super::*;

/// The hyper service of one connection: each request gets the client
/// subject and address headers, counts as activity, and goes to the
/// handler.
#[derive(Clone)]
pub(super) struct RequestService {
    pub(super) handler: Arc<Handler>,
    pub(super) peer: Option<SocketAddr>,
    /// The peer's address as an `X-Real-IP` value, made once per
    /// connection (most requests send just that).
    pub(super) peer_header: Option<HeaderValue>,
    pub(super) client_subject: Option<HeaderValue>,
    pub(super) activity: Arc<Activity>,
}

/// A response body as hyper sends it: holding its request's [`Busy`]
/// until sent; or, for an HTTP/1.1 push stream, handed to the connection
/// to serve without hyper once hyper wrote its head (see [`push_h1`]).
pub(super) enum ConnBody {
    Sent(Guarded<Busy>),
    HandedOff(push_h1::Handoff<Busy>),
    /// Through tower-http's compression (`[compression]` on); boxed, so
    /// the other kinds stay as small as without it.
    Compressed(Box<Compressed>),
}

/// A response body through tower-http's compression (compressed, or not
/// when the response was not compressible), holding its request's
/// [`Busy`] until sent.
pub(super) struct Compressed {
    pub(super) body: tower_http::compression::CompressionBody<GatewayBody>,
    pub(super) _busy: Busy,
}

impl hyper::body::Body for ConnBody {
    type Data = bytes::Bytes;
    type Error = crate::dispatch::BodyAborted;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.get_mut() {
            Self::Sent(body) => Pin::new(body).poll_frame(cx),
            Self::Compressed(compressed) => Pin::new(&mut compressed.body)
                .poll_frame(cx)
                .map_err(crate::dispatch::BodyAborted::Compression),
            // Never woken: the connection stops polling hyper once hyper's
            // bytes are out.
            Self::HandedOff(handoff) => {
                handoff.poll_handoff();
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Sent(body) => body.is_end_stream(),
            Self::Compressed(compressed) => compressed.body.is_end_stream(),
            Self::HandedOff(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Self::Sent(body) => body.size_hint(),
            Self::Compressed(compressed) => compressed.body.size_hint(),
            Self::HandedOff(_) => hyper::body::SizeHint::default(),
        }
    }
}

pub(super) type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<hyper::Response<ConnBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for RequestService {
    type Response = hyper::Response<ConnBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let handler = Arc::clone(&self.handler);
        if self.activity.is_abusive() {
            // Told to go away for rapid reset: what it still sends (HTTP/2
            // accepts streams until the client acknowledges the GOAWAY, and
            // a hostile one never does) is answered here, never dispatched.
            let busy = Busy::new(&self.activity, &handler.busy);
            let response = GatewayError::ConnectionClosing.into_response(rand::random());
            return Box::pin(std::future::ready(Ok(
                response.map(|body| ConnBody::Sent(body.with_guard(busy)))
            )));
        }
        // One settings snapshot for the whole request, this step included.
        let settings = handler.settings();
        // The subject header (set only from a verified certificate), and
        // the client as far as trusted proxies tell in X-Real-IP and for
        // the log and the stream caps: the embedded service's rules too.
        super::super::client_addr::apply_client_rules(
            &mut request,
            &handler.subject_header,
            self.client_subject.as_ref(),
            self.peer.map(|p| p.ip()),
            self.peer_header.as_ref(),
            &settings.config.request.trusted_proxies,
        );
        let busy = Busy::new(&self.activity, &handler.busy);
        let unanswered = Unanswered(Some(Arc::clone(&self.activity)));
        // HTTP/2 has GOAWAY instead (and no `Connection` header).
        let h1 = request.version() < hyper::Version::HTTP_2;
        // A push stream is taken from hyper only under HTTP/1.1's chunked
        // encoding (HTTP/1.0 has no chunks: hyper keeps it).
        let chunked = request.version() == hyper::Version::HTTP_11;
        if let Some(layers) = &settings.layers {
            // CORS or compression on: through tower-http (see `layers`).
            // The synchronous step happens in this call too.
            let layered = layers.call(Arc::clone(&handler), Arc::clone(&settings), request);
            return Box::pin(async move {
                let layered = layered.response();
                tokio::pin!(layered);
                // After the request's future, as below.
                let unanswered = unanswered;
                let response = layered.await;
                unanswered.answered();
                Ok(match response {
                    LayeredResponse::Plain(response) => for_hyper(response, busy, h1, chunked),
                    // Never compressed (see `layers::Compressible`): the
                    // connection may still take it over.
                    LayeredResponse::Compressed(response)
                        if matches!(response.body().get_ref(), GatewayBody::Push(_)) =>
                    {
                        for_hyper(
                            response.map(tower_http::compression::CompressionBody::into_inner),
                            busy,
                            h1,
                            chunked,
                        )
                    }
                    LayeredResponse::Compressed(mut response) => {
                        if h1 && busy.0.is_closing() {
                            response.headers_mut().insert(
                                hyper::header::CONNECTION,
                                HeaderValue::from_static("close"),
                            );
                        }
                        response.map(|body| {
                            ConnBody::Compressed(Box::new(Compressed { body, _busy: busy }))
                        })
                    }
                })
            });
        }
        // The synchronous step now, before hyper reads ahead (see `begin`).
        let begun = handler.begin(&settings, request);
        Box::pin(async move {
            let finishing = handler.finish(&settings, begun);
            tokio::pin!(finishing);
            // Declared after the request's future, so dropped before it
            // when the client cancels: the cancellation is counted (and the
            // connection found abusive) before the backend channel is
            // cancelled, which the app may see at once.
            let unanswered = unanswered;
            let response = finishing.await;
            unanswered.answered();
            Ok(for_hyper(response, busy, h1, chunked))
        })
    }
}

/// The handler's response as hyper sends it: holding `busy` until its
/// body is sent; an HTTP/1.1 push stream set up to be taken from hyper
/// once hyper wrote its head; `Connection: close` when the gateway is
/// stopping (HTTP/1).
pub(super) fn for_hyper(
    mut response: hyper::Response<GatewayBody>,
    busy: Busy,
    h1: bool,
    chunked: bool,
) -> hyper::Response<ConnBody> {
    if h1 {
        // One reply at a time per HTTP/1.1 connection: a client cut for
        // reading too slowly loses the connection (hyper, waiting to
        // write, would not poll the body to learn it).
        response.body().close_connection_on_cut(&busy.0.stream_cut);
    }
    if let Some(pending) = response
        .extensions_mut()
        .remove::<super::super::websocket::Pending>()
        && h1
    {
        // A WebSocket: its session runs on this connection's socket
        // once hyper has written the 101 (see `serve_h1`).
        busy.0.upgrade(pending);
    }
    if chunked && matches!(response.body(), GatewayBody::Push(_)) {
        // Served without hyper once hyper wrote the head; the
        // connection closes when the stream ends.
        let headers = response.headers_mut();
        headers.insert(
            hyper::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        let slot = Arc::clone(&busy.0.handoff);
        return response.map(|body| match body {
            GatewayBody::Push(push) => ConnBody::HandedOff(push_h1::Handoff::new(push, busy, slot)),
            other => ConnBody::Sent(other.with_guard(busy)),
        });
    }
    let switching = response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS;
    if h1 && busy.0.is_closing() && !switching {
        // The gateway is stopping: the client learns it here, and
        // hyper ends the connection after this response.
        response
            .headers_mut()
            .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    }
    // Busy until the body is sent too.
    response.map(|body| ConnBody::Sent(body.with_guard(busy)))
}
