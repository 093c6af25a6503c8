//! Streamed uploads (`[services.X] stream_request_body = true`): the body
//! reaches the app as `write` chunks as it arrives, ended by an empty
//! chunk, with `request.body_limit` and `limits.body_timeout_ms` enforced
//! on the way; retried only while the first body chunk is all the gateway
//! took. And the body timeout on a buffered body. Real sockets on
//! 127.0.0.1: a locator, the apps and the gateway in process.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::convert::Infallible;
use std::hash::Hasher;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use rpcgate::app::{AppBuilder, HttpRequest, HttpResponse, RequestError, demo};
use rpcgate::config::{Config, ServiceConfig};
use rpcgate::proto::{ErrorCode, RemoteError};
use support::child::bounded;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// A config whose `streamed` services take streamed uploads.
fn config(streamed: &[&str]) -> Config {
    let mut config = Config::default();
    config.pool.size = 1;
    for name in streamed {
        config.services.insert(
            (*name).to_owned(),
            ServiceConfig {
                stream_request_body: true,
                ..ServiceConfig::default()
            },
        );
    }
    config
}

/// A request body the test writes chunk by chunk; it ends when the sender
/// is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// An HTTP/1.1 connection whose request bodies are `B`.
async fn h1<B>(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<B>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// A POST of `body` to `path` (chunked unless `length` is given).
fn post<B>(path: &str, length: Option<u64>, body: B) -> hyper::Request<B> {
    let mut builder = hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "test");
    if let Some(length) = length {
        builder = builder.header("content-length", length.to_string());
    }
    builder.body(body).unwrap()
}

/// A chunked upload to `path` fed through the returned sender, and the
/// response once its head arrives.
async fn upload(
    addr: SocketAddr,
    path: &str,
) -> (
    mpsc::Sender<Bytes>,
    tokio::task::JoinHandle<hyper::Response<hyper::body::Incoming>>,
) {
    let (tx, rx) = mpsc::channel(4);
    let mut sender = h1(addr).await;
    let request = post(path, None, ChannelBody(rx));
    let response = tokio::spawn(async move { sender.send_request(request).await.unwrap() });
    (tx, response)
}

/// What a [`reader`] app saw.
#[derive(Debug, PartialEq)]
enum Seen {
    /// A body chunk of this many bytes.
    Chunk(usize),
    /// The body's end, after this many bytes.
    End(usize),
    /// The body stopped early, and how.
    Stopped(String),
}

/// An app reading its body to the end and reporting, on `seen`, each
/// chunk and the end, or how the body stopped.
fn reader(name: &str, seen: mpsc::Sender<Seen>) -> AppBuilder {
    AppBuilder::new(name).on_http("http", move |mut req: HttpRequest, res: HttpResponse| {
        let seen = seen.clone();
        async move {
            let mut read = req.body.len();
            // A buffered body is all in the 5-tuple.
            while req.is_body_streamed()
                && let Some(chunk) = req.next_body_chunk().await
            {
                match chunk {
                    Ok(chunk) => {
                        read += chunk.len();
                        seen.send(Seen::Chunk(chunk.len())).await.ok();
                    }
                    Err(e) => {
                        let how = match e {
                            RequestError::Cancelled(e) => format!("cancelled: {e}"),
                            other => other.to_string(),
                        };
                        seen.send(Seen::Stopped(how)).await.ok();
                        return Ok(());
                    }
                }
            }
            seen.send(Seen::End(read)).await.ok();
            res.respond(200, vec![], read.to_string()).await.ok();
            Ok(())
        }
    })
}

// === 1 GiB ===

/// The length of the repeating pattern of the big upload: not a divisor
/// of any chunk size, so a chunk lost, doubled or reordered changes the
/// checksum.
const PATTERN_LEN: usize = (1 << 20) + 13;

/// `total` bytes of a repeating pseudo-random pattern, in frames of at most
/// `step` bytes, each a slice of one buffer (generating it costs nothing
/// per byte).
struct Pattern {
    pattern: Bytes,
    sent: u64,
    total: u64,
    step: usize,
}

impl Pattern {
    fn new(total: u64, step: usize) -> Self {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let pattern: Vec<u8> = (0..PATTERN_LEN)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        Self {
            pattern: Bytes::from(pattern),
            sent: 0,
            total,
            step,
        }
    }

    fn next_slice(&mut self) -> Option<Bytes> {
        if self.sent == self.total {
            return None;
        }
        let at = (self.sent % PATTERN_LEN as u64) as usize;
        let n = self
            .step
            .min(PATTERN_LEN - at)
            .min((self.total - self.sent) as usize);
        self.sent += n as u64;
        Some(self.pattern.slice(at..at + n))
    }

    /// The checksum the `upload` demo computes over the same bytes.
    fn checksum(&self) -> String {
        let mut copy = Self {
            pattern: self.pattern.clone(),
            sent: 0,
            total: self.total,
            step: self.step,
        };
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        while let Some(slice) = copy.next_slice() {
            hasher.write(&slice);
        }
        format!("{:016x}", hasher.finish())
    }
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.next_slice().map(|s| Ok(Frame::data(s))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.total
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.total - self.sent)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_gib_streamed_upload_reaches_the_app_whole_and_in_order() {
    const TOTAL: u64 = 1 << 30;
    let mut config = config(&["upload"]);
    config.request.body_limit = TOTAL as usize;
    // The deadline covers the upload (until the response head); the debug
    // build on a loaded box is slow, and the body timeout cuts a stall.
    config.request.timeout = Duration::from_secs(600);
    let c = support::cluster("", vec![demo::build("upload", None).unwrap()], config).await;
    let body = Pattern::new(TOTAL, 1 << 20);
    let expected = tokio::task::spawn_blocking({
        let body = Pattern::new(TOTAL, 1 << 20);
        move || body.checksum()
    });
    let mut sender = h1::<Pattern>(c.gateway.addr).await;
    let response = tokio::time::timeout(
        Duration::from_secs(600),
        sender.send_request(post("/upload/http/", Some(TOTAL), body)),
    )
    .await
    .expect("the upload within 600 s")
    .unwrap();
    let got = support::got(response).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    let json = got.json();
    assert_eq!(json["streamed"], true);
    assert_eq!(json["bytes"], TOTAL);
    assert_eq!(json["sip13"], expected.await.unwrap());
    // Streamed in chunks of at most 64 KiB, not one body.
    assert!(json["chunks"].as_u64().unwrap() >= TOTAL / (64 << 10));
}

// === Streaming really happens ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_answers_after_the_first_chunk_while_the_client_is_still_sending() {
    // The app answers as soon as it has the first chunk, then reads the
    // rest of the body and reports it at the end of its response.
    let app = AppBuilder::new("early").on_http(
        "http",
        |mut req: HttpRequest, mut res: HttpResponse| async move {
            let first = match req.next_body_chunk().await {
                Some(Ok(chunk)) => chunk,
                other => {
                    return Err(RemoteError::new(
                        ErrorCode::INVALID_ARGUMENT,
                        format!("{other:?}"),
                    ));
                }
            };
            let head = vec![(
                Bytes::from_static(b"X-Tuple-Body"),
                Bytes::from(format!("{} {}", req.is_body_streamed(), req.body.len())),
            )];
            res.head(200, head).await.ok();
            res.body(format!("first={}\n", String::from_utf8_lossy(&first)))
                .await
                .ok();
            let mut rest = Vec::new();
            while let Some(chunk) = req.next_body_chunk().await {
                match chunk {
                    Ok(chunk) => rest.extend_from_slice(&chunk),
                    Err(e) => {
                        return Err(RemoteError::new(ErrorCode::INVALID_ARGUMENT, e.to_string()));
                    }
                }
            }
            res.body(format!("rest={}\n", String::from_utf8_lossy(&rest)))
                .await
                .ok();
            res.finish().await.ok();
            Ok(())
        },
    );
    let c = support::cluster("", vec![app], config(&["early"])).await;
    let (tx, response) = upload(c.gateway.addr, "/early/http/").await;
    tx.send(Bytes::from_static(b"hello")).await.unwrap();
    // The head comes while the upload is still open: the app had the
    // first chunk before the body ended.
    let response = bounded("the early response head", response).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-tuple-body"], "true 0");
    let mut body = response.into_body();
    let first = bounded("the first body chunk", body.frame()).await;
    let first = first.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"first=hello\n");
    // The rest of the upload still flows, under the response.
    tx.send(Bytes::from_static(b" streamed")).await.unwrap();
    tx.send(Bytes::from_static(b" world")).await.unwrap();
    drop(tx);
    let rest = bounded("the rest", body.collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&rest[..], b"rest= streamed world\n");
}

// === Limits ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_body_past_the_limit_gets_413_and_cancels_the_app() {
    let _ = rpcgate::metrics::install_prometheus();
    let (seen_tx, mut seen) = mpsc::channel(4);
    let mut config = config(&["counted"]);
    config.request.body_limit = 1000;
    let c = support::cluster("", vec![reader("counted", seen_tx)], config).await;
    let before = support::limit_hits(c.gateway.admin_addr.unwrap(), "body_size").await;
    // Chunked, so no Content-Length tells the size up front.
    let (tx, response) = upload(c.gateway.addr, "/counted/http/").await;
    tx.send(Bytes::from(vec![b'a'; 600])).await.unwrap();
    // The app has its channel and the first chunk...
    let first = bounded("the first chunk at the app", seen.recv()).await;
    assert_eq!(first, Some(Seen::Chunk(600)));
    // ...and the second passes the limit.
    tx.send(Bytes::from(vec![b'b'; 600])).await.unwrap();
    let got = support::got(bounded("the 413", response).await.unwrap()).await;
    assert_eq!(got.status, 413);
    assert_eq!(got.json()["error"]["kind"], "body_too_large");
    let how = bounded("the app's end", seen.recv()).await.unwrap();
    assert!(
        matches!(&how, Seen::Stopped(how) if how.starts_with("cancelled")),
        "{how:?}"
    );
    drop(tx);
    let after = support::limit_hits(c.gateway.admin_addr.unwrap(), "body_size").await;
    assert!(after > before, "body_size hits {before} → {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_streamed_or_buffered() {
    let _ = rpcgate::metrics::install_prometheus();
    let (streamed_tx, mut streamed_seen) = mpsc::channel(4);
    let (buffered_tx, mut buffered_seen) = mpsc::channel(4);
    let mut config = config(&["streamed"]);
    config.limits.body_timeout = Duration::from_millis(300);
    let c = support::cluster(
        "",
        vec![
            reader("streamed", streamed_tx),
            reader("buffered", buffered_tx),
        ],
        config,
    )
    .await;
    let admin = c.gateway.admin_addr.unwrap();
    let before = support::limit_hits(admin, "body_timeout").await;
    for path in ["/streamed/http/", "/buffered/http/"] {
        // Some bytes, then nothing: the sender stays open, so the body
        // neither ends nor fails; only the gateway's timeout ends it.
        let (tx, response) = upload(c.gateway.addr, path).await;
        tx.send(Bytes::from_static(b"some bytes")).await.unwrap();
        if path.starts_with("/streamed") {
            let first = bounded("the first chunk at the app", streamed_seen.recv()).await;
            assert_eq!(first, Some(Seen::Chunk(10)));
        }
        let got = support::got(bounded("the 408", response).await.unwrap()).await;
        assert_eq!(got.status, 408, "{path}");
        let json = got.json();
        assert_eq!(json["error"]["kind"], "body_timeout", "{path}");
        assert_eq!(json["error"]["status"], 408, "{path}");
        drop(tx);
    }
    // The streamed request's app had its channel and saw it cancelled.
    let how = bounded("the app's end", streamed_seen.recv())
        .await
        .unwrap();
    assert!(
        matches!(&how, Seen::Stopped(how) if how.starts_with("cancelled")),
        "{how:?}"
    );
    // The buffered one never reached its app: a request after it is the
    // first the app sees.
    let got = support::send(c.gateway.addr, "POST", "/buffered/http/", &[], "abc").await;
    assert_eq!(got.status, 200);
    assert_eq!(buffered_seen.recv().await.unwrap(), Seen::End(3));
    let after = support::limit_hits(admin, "body_timeout").await;
    assert!(after >= before + 2, "body_timeout hits {before} → {after}");
}

// === Retries ===

/// An app that refuses its first request as "queue is full" (never
/// delivered, so retry-safe) after reading `chunks_first` body chunks,
/// then echoes bodies; `count` counts the requests it got, and each chunk
/// it reads is reported on `read`.
fn refusing(
    name: &str,
    chunks_first: usize,
    count: Arc<AtomicUsize>,
    read: mpsc::Sender<Bytes>,
) -> AppBuilder {
    AppBuilder::new(name).on_http("http", move |mut req: HttpRequest, res: HttpResponse| {
        let n = count.fetch_add(1, Ordering::SeqCst);
        let read = read.clone();
        async move {
            let mut body = req.body.to_vec();
            if n == 0 {
                for _ in 0..chunks_first {
                    if let Some(Ok(chunk)) = req.next_body_chunk().await {
                        read.send(chunk).await.ok();
                    }
                }
                return Err(RemoteError::new(ErrorCode::QUEUE_IS_FULL, "queue is full"));
            }
            while let Some(Ok(chunk)) = req.next_body_chunk().await {
                body.extend_from_slice(&chunk);
            }
            res.respond(200, vec![], body).await.ok();
            Ok(())
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_streamed_request_is_retried_with_its_kept_first_chunk() {
    let count = Arc::new(AtomicUsize::new(0));
    let (read_tx, _read) = mpsc::channel(8);
    let app = refusing("again", 0, Arc::clone(&count), read_tx);
    let c = support::cluster("", vec![app], config(&["again"])).await;
    // One body frame: the gateway keeps it until a second is taken, so
    // the refused attempt can be sent again.
    let (tx, response) = upload(c.gateway.addr, "/again/http/").await;
    tx.send(Bytes::from_static(b"the whole body"))
        .await
        .unwrap();
    drop(tx);
    let got = support::got(bounded("the answer", response).await.unwrap()).await;
    assert_eq!(got.status, 200, "{:?}", got.body);
    assert_eq!(&got.body[..], b"the whole body");
    assert_eq!(count.load(Ordering::SeqCst), 2, "refused once, then served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_request_is_not_retried_once_its_body_has_flowed() {
    let count = Arc::new(AtomicUsize::new(0));
    let (read_tx, mut read) = mpsc::channel(8);
    // Refused as "queue is full" (otherwise retry-safe) only after the
    // app has read two chunks: the gateway no longer holds the first.
    let app = refusing("once", 2, Arc::clone(&count), read_tx);
    let c = support::cluster("", vec![app], config(&["once"])).await;
    let (tx, response) = upload(c.gateway.addr, "/once/http/").await;
    tx.send(Bytes::from_static(b"first")).await.unwrap();
    let chunk = bounded("the first chunk at the app", read.recv()).await;
    assert_eq!(chunk.as_deref(), Some(&b"first"[..]));
    tx.send(Bytes::from_static(b"second")).await.unwrap();
    let got = support::got(bounded("the answer", response).await.unwrap()).await;
    drop(tx);
    assert_eq!(got.status, 500, "{:?}", got.body);
    assert_eq!(got.json()["error"]["kind"], "app_error");
    assert_eq!(count.load(Ordering::SeqCst), 1, "not sent again");
}

// === Buffered stays buffered ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_the_key_gets_the_body_in_the_tuple() {
    let c = support::cluster("", vec![demo::build("upload", None).unwrap()], config(&[])).await;
    let got = support::send(c.gateway.addr, "POST", "/upload/http/", &[], "abcdef").await;
    assert_eq!(got.status, 200);
    let json = got.json();
    assert_eq!(json["streamed"], false);
    assert_eq!(json["bytes"], 6);
    assert_eq!(json["chunks"], 1);
}
