//! Shared helpers for integration tests: a scriptable Cocaine peer on
//! 127.0.0.1 written with `rpcgate::proto`, and a mux connected to it.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// in tests a failed unwrap is a failed test

// Each test file uses a different subset, and `pub` here is for the test
// crates that include this module.
#![allow(dead_code, unreachable_pub)]

pub mod browser;
pub mod child;
pub mod etcd;
pub mod groups;
pub mod standalone;

use std::net::SocketAddr;

use bytes::BytesMut;
use rpcgate::mux::{self, MuxConfig, MuxHandle};
use rpcgate::proto::{Frame, FrameCodec, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::codec::{Decoder, Encoder};

/// A listening test peer.
pub struct Peer {
    listener: TcpListener,
    pub addr: SocketAddr,
}

impl Peer {
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Self { listener, addr }
    }

    pub async fn accept(&self) -> PeerConn {
        let (stream, _) = self.listener.accept().await.unwrap();
        PeerConn::new(stream)
    }
}

/// One accepted connection, speaking frames.
pub struct PeerConn {
    pub stream: TcpStream,
    codec: FrameCodec,
    buf: BytesMut,
}

impl PeerConn {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            codec: FrameCodec::default(),
            buf: BytesMut::new(),
        }
    }

    /// The next frame, or `None` at EOF or on a reset.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self
                .codec
                .decode(&mut self.buf)
                .expect("client sent a valid frame")
            {
                return Some(frame);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Encodes and writes one frame.
    pub async fn send(&mut self, channel: u64, message: Message) {
        let mut out = BytesMut::new();
        self.codec.encode((channel, message), &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// Writes raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }
}

/// A mux connected to `addr`, its task spawned.
pub async fn connect(
    addr: SocketAddr,
    config: MuxConfig,
) -> (
    MuxHandle,
    JoinHandle<Result<(), std::sync::Arc<mux::ConnectionError>>>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (handle, connection) = mux::from_tcp(stream, config).unwrap();
    (handle, tokio::spawn(connection.run()))
}

/// A mux and the peer connection it talks to.
pub async fn pair(
    config: MuxConfig,
) -> (
    MuxHandle,
    PeerConn,
    JoinHandle<Result<(), std::sync::Arc<mux::ConnectionError>>>,
) {
    let peer = Peer::bind().await;
    let (connected, accepted) = tokio::join!(connect(peer.addr, config), peer.accept());
    (connected.0, accepted, connected.1)
}

// === locator helpers ===

use rpcgate::locator::{LocatorConfig, RunningLocator};
use rpcgate::mux::{Channel, Invocation};
use rpcgate::proto::locator::{
    ResolveReply, ResolveRequest, RoutingRequest, RoutingUpdate, method,
};
use rpcgate::proto::{PrimitiveEvent, Protocol, RemoteError, StreamEvent};

/// A locator on 127.0.0.1 with an ephemeral port (and admin API).
pub async fn start_locator(mut config: LocatorConfig) -> RunningLocator {
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    RunningLocator::start(config, None).await.unwrap()
}

/// Parses locator TOML for a test.
pub fn locator_config(toml: &str) -> LocatorConfig {
    LocatorConfig::parse(toml, std::path::Path::new("test.toml")).unwrap()
}

/// `resolve [name, seed?]` on an open connection.
pub async fn resolve(
    handle: &MuxHandle,
    name: &str,
    seed: Option<&str>,
) -> Result<ResolveReply, RemoteError> {
    let request = ResolveRequest {
        name: name.to_owned(),
        seed: seed.map(|s| bytes::Bytes::copy_from_slice(s.as_bytes())),
    };
    let invocation = Invocation::new(
        Message::new(method::RESOLVE, request.to_args()),
        Protocol::Terminal,
        Protocol::Primitive,
    );
    let mut channel = handle.open(invocation).await.unwrap();
    let frame = channel.receiver.recv().await.unwrap().unwrap();
    match frame.primitive_event().unwrap() {
        PrimitiveEvent::Value(args) => Ok(ResolveReply::decode_args(&args).unwrap()),
        PrimitiveEvent::Error(e) => Err(e),
    }
}

/// `routing [router_id]` on an open connection.
pub async fn subscribe(handle: &MuxHandle, router_id: &str) -> Channel {
    let request = RoutingRequest {
        router_id: bytes::Bytes::copy_from_slice(router_id.as_bytes()),
    };
    let invocation = Invocation::new(
        Message::new(method::ROUTING, request.to_args()),
        Protocol::Discard,
        Protocol::Streaming,
    );
    handle.open(invocation).await.unwrap()
}

/// The next event on a `routing` stream.
pub async fn next_routing_event(channel: &mut Channel) -> Option<StreamEvent> {
    let frame = channel.receiver.recv().await?.unwrap();
    Some(frame.stream_event().unwrap())
}

/// The next dump on a `routing` stream.
pub async fn next_dump(channel: &mut Channel) -> RoutingUpdate {
    let frame = channel.receiver.recv().await.unwrap().unwrap();
    assert_eq!(frame.ty, 0, "a routing write");
    RoutingUpdate::decode_args(&frame.args).unwrap()
}

/// A plain HTTP/1.1 request with `Connection: close`; returns status and body.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

// === app helpers ===

use rpcgate::proto::http::HttpRequest as HttpTuple;

/// Opens an `enqueue` channel for `event`.
pub async fn enqueue(handle: &MuxHandle, event: &str) -> Channel {
    let message = Message::new(
        0,
        rpcgate::proto::Args::Bytes(bytes::Bytes::copy_from_slice(event.as_bytes())),
    );
    handle.open(Invocation::enqueue(message)).await.unwrap()
}

/// A GET request 5-tuple for `uri`.
pub fn get(uri: &str) -> bytes::Bytes {
    HttpTuple {
        method: "GET".into(),
        uri: bytes::Bytes::copy_from_slice(uri.as_bytes()),
        version: "1.1".into(),
        headers: vec![("Host".into(), "test".into())],
        body: bytes::Bytes::new(),
    }
    .to_bytes()
}

/// Every stream event until the channel ends.
pub async fn collect(channel: &mut Channel) -> Vec<StreamEvent> {
    let mut events = Vec::new();
    while let Some(frame) = channel.receiver.recv().await {
        events.push(frame.unwrap().stream_event().unwrap());
    }
    events
}

// === gateway helpers ===

use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rpcgate::app::{AppBuilder, RunningApp};
use rpcgate::config::Config;
use rpcgate::gateway::RunningGateway;
use rpcgate::locator::{RemoteLocator, RemoteLocatorConfig};

/// A locator, some apps published to it, and a gateway in front.
pub struct Cluster {
    pub locator: RunningLocator,
    pub apps: Vec<RunningApp>,
    pub gateway: RunningGateway,
    pub client: RemoteLocator,
}

/// Starts a cluster: `locator_toml` configures the locator (groups...),
/// `apps` are bound and published, `config` is the gateway's (its
/// addresses are replaced with ephemeral loopback ones).
pub async fn cluster(locator_toml: &str, apps: Vec<AppBuilder>, mut config: Config) -> Cluster {
    let locator = start_locator(locator_config(locator_toml)).await;
    let mut running = Vec::new();
    for app in apps {
        let app = app
            .bind("127.0.0.1:0".parse().unwrap(), vec![locator.addr])
            .await
            .unwrap();
        app.published().await;
        running.push(app);
    }
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.admin = Some("127.0.0.1:0".parse().unwrap());
    config.locators = vec![locator.addr];
    let client = RemoteLocator::new(RemoteLocatorConfig {
        endpoints: vec![locator.addr],
        ..RemoteLocatorConfig::default()
    });
    tokio::time::timeout(std::time::Duration::from_secs(10), client.routing_ready())
        .await
        .unwrap();
    let gateway = RunningGateway::start(config, std::sync::Arc::new(client.clone()))
        .await
        .unwrap();
    Cluster {
        locator,
        apps: running,
        gateway,
        client,
    }
}

/// `rpcgate_limit_hits_total{limit}` from the admin API at `admin` (0
/// before the first hit; the metrics recorder must be installed).
pub async fn limit_hits(admin: SocketAddr, limit: &str) -> u64 {
    let (_, text) = http(admin, "GET", "/metrics", "").await;
    let series = format!("rpcgate_limit_hits_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// A response: status, headers, whole body.
pub struct Got {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: bytes::Bytes,
}

impl Got {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Opens an HTTP/1.1 connection to `addr`.
pub async fn h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>> {
    h1_over(TcpStream::connect(addr).await.unwrap()).await
}

/// HTTP/1.1 over an already open stream (TLS, a unix socket...).
pub async fn h1_over<IO>(io: IO) -> hyper::client::conn::http1::SendRequest<Full<bytes::Bytes>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// Opens an HTTP/2 (h2c, prior knowledge) connection to `addr`.
pub async fn h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<bytes::Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// A request.
pub fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> hyper::Request<Full<bytes::Bytes>> {
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "test");
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    builder
        .body(Full::new(bytes::Bytes::copy_from_slice(body.as_bytes())))
        .unwrap()
}

/// One request on a fresh HTTP/1.1 connection.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Got {
    let mut sender = h1(addr).await;
    let response = sender
        .send_request(request(method, path, headers, body))
        .await
        .unwrap();
    got(response).await
}

/// A response read whole.
pub async fn got(response: hyper::Response<hyper::body::Incoming>) -> Got {
    let (parts, body) = response.into_parts();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// An app `name` answering with every value of the request header
/// `header` it received, joined by ` | ` (so a duplicate shows).
pub fn header_echo(name: &str, header: &'static str) -> rpcgate::app::AppBuilder {
    rpcgate::app::AppBuilder::new(name).on_http(
        "http",
        move |req: rpcgate::app::HttpRequest, res: rpcgate::app::HttpResponse| async move {
            let values: Vec<String> = req
                .headers()
                .filter(|(n, _)| n.eq_ignore_ascii_case(header.as_bytes()))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect();
            res.respond(200, vec![], values.join(" | ")).await.ok();
            Ok(())
        },
    )
}

/// Publishes each `(name, port)` at 127.0.0.1:port to the locator at
/// `locator`; the services stay published while the returned values live.
pub async fn publish_members(
    locator: SocketAddr,
    members: &[(&str, u16)],
) -> Vec<rpcgate::locator::Publication> {
    let tracker = tokio_util::task::TaskTracker::new();
    let mut publications = Vec::new();
    for (name, port) in members {
        let endpoint = rpcgate::proto::locator::Endpoint {
            host: "127.0.0.1".into(),
            port: *port,
        };
        let publication = rpcgate::locator::publish(
            &[locator],
            name,
            vec![endpoint],
            std::time::Duration::from_secs(5),
            &tracker,
        )
        .await
        .unwrap();
        publications.push(publication);
    }
    publications
}

/// An app `name` answering `body` after the `?ms=N` of its uri (0 without),
/// sending on `arrived` as each request arrives.
pub fn delayed(
    name: &str,
    body: &'static str,
    arrived: tokio::sync::mpsc::Sender<()>,
) -> rpcgate::app::AppBuilder {
    rpcgate::app::AppBuilder::new(name).on_http(
        "http",
        move |req: rpcgate::app::HttpRequest, res: rpcgate::app::HttpResponse| {
            let arrived = arrived.clone();
            async move {
                arrived.send(()).await.ok();
                let uri = String::from_utf8_lossy(&req.uri).into_owned();
                let ms: u64 = uri
                    .split_once("ms=")
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                res.respond(200, vec![], body).await.ok();
                Ok(())
            }
        },
    )
}

/// Reads one HTTP/1.1 response (Content-Length or chunked) from `stream`
/// written raw, with `buf` holding bytes read earlier: pipelined responses
/// can arrive in one read, and what follows this one stays in `buf`.
/// Returns status and body.
pub async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, Vec<u8>) {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
            let rest = &buf[end + 4..];
            let done = if head.contains("transfer-encoding: chunked") {
                dechunk(rest)
            } else {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                (rest.len() >= len).then(|| (rest[..len].to_vec(), len))
            };
            if let Some((body, used)) = done {
                buf.drain(..end + 4 + used);
                return (status, body);
            }
        }
        let mut chunk = [0u8; 4096];
        let n = child::bounded("a response", stream.read(&mut chunk))
            .await
            .unwrap();
        assert!(n > 0, "closed before a whole response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The data of a whole chunked body at the start of `bytes`, and how many
/// bytes it took; `None` while incomplete.
fn dechunk(mut bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = bytes.len();
    let mut data = Vec::new();
    loop {
        let line = bytes.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&bytes[..line]).ok()?.trim(), 16).ok()?;
        let chunk = bytes.get(line + 2..line + 2 + size + 2)?;
        data.extend_from_slice(&chunk[..size]);
        bytes = &bytes[line + 2 + size + 2..];
        if size == 0 {
            return Some((data, total - bytes.len()));
        }
    }
}

/// Publishes `name` at `port` with `graph`; published while the channel
/// lives.
pub async fn publish_graph(
    locator: SocketAddr,
    name: &str,
    port: u16,
    graph: rpcgate::proto::Graph,
) -> (MuxHandle, Channel) {
    let (handle, _task) = connect(locator, rpcgate::mux::MuxConfig::default()).await;
    let request = rpcgate::proto::locator::PublishRequest {
        name: name.into(),
        endpoints: vec![rpcgate::proto::locator::Endpoint {
            host: "127.0.0.1".into(),
            port,
        }],
        meta: Some((1, graph)),
    };
    let mut channel = handle
        .open(Invocation::new(
            Message::new(method::PUBLISH, request.to_args()),
            Protocol::Discard,
            Protocol::Primitive,
        ))
        .await
        .unwrap();
    channel.receiver.recv().await.unwrap().unwrap();
    (handle, channel)
}
