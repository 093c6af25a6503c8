//! Client limits, each triggered for real on loopback: request head size and
//! header count (431), slowloris (200 connections trickling a head while
//! normal requests succeed), idle keep-alive, the connection limit (accept
//! pauses), load shedding (503 + `Retry-After`, global and per service),
//! HTTP/2 concurrent streams and header lists, and HTTP/2 rapid reset
//! (CVE-2023-44487) with raw frames.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rpcgate::app::{AppBuilder, HttpRequest, HttpResponse, demo};
use rpcgate::config::{Config, ServiceConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config() -> Config {
    let mut config = Config::default();
    config.pool.size = 2;
    config
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .unwrap_or_else(|_| panic!("{what} within 20 s"))
}

/// Sends `head` raw and reads until the server closes; the status code.
async fn raw_status(addr: std::net::SocketAddr, head: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(head.as_bytes()).await;
    let mut response = Vec::new();
    let _ = bounded("the answer", stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Waits until the server closes `stream` (EOF or reset).
async fn closed_by_server(stream: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_head_or_too_many_headers_is_431() {
    let mut config = config();
    config.limits.max_header_bytes = 16 << 10;
    config.limits.max_headers = 20;
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config).await;
    let addr = c.gateway.addr;
    let big = format!(
        "GET /hello/http/ HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 << 10)
    );
    assert_eq!(raw_status(addr, &big).await, 431);
    let many: String = (0..40).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /hello/http/ HTTP/1.1\r\nHost: t\r\n{many}\r\n");
    assert_eq!(raw_status(addr, &many).await, 431);
    // Within both limits it is served.
    let fine = "GET /hello/http/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    assert_eq!(raw_status(addr, fine).await, 200);
}

/// The default header-count limit (100, which the gateway leaves to hyper's
/// own default) still holds: 100 header lines are served, 101 are a 431.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_header_count_limit_is_100() {
    assert_eq!(Config::default().limits.max_headers, 100);
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config()).await;
    let addr = c.gateway.addr;
    // Host and Connection are two of the lines.
    let head = |extra: usize| {
        let lines: String = (0..extra).map(|i| format!("X-H{i}: v\r\n")).collect();
        format!("GET /hello/http/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{lines}\r\n")
    };
    assert_eq!(raw_status(addr, &head(98)).await, 200);
    assert_eq!(raw_status(addr, &head(99)).await, 431);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_while_normal_requests_succeed() {
    const TRICKLERS: usize = 200;
    let mut config = config();
    config.limits.header_timeout = Duration::from_millis(500);
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config).await;
    let addr = c.gateway.addr;
    // 200 clients that start a head and then send one byte every 50 ms,
    // never finishing it. Each stops by itself: when the server closes it,
    // or after 400 bytes (20 s), which would fail the test.
    let closed = Arc::new(AtomicUsize::new(0));
    let mut tricklers = Vec::new();
    for _ in 0..TRICKLERS {
        let closed = Arc::clone(&closed);
        tricklers.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /hello/http/ HTTP/1.1\r\nX-Slow: ")
                .await
                .unwrap();
            let mut buf = [0u8; 64];
            for _ in 0..400 {
                if stream.write_all(b"a").await.is_err() {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                if let Ok(Ok(0) | Err(_)) =
                    tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await
                {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }));
    }
    // Meanwhile, normal requests keep succeeding.
    for _ in 0..20 {
        let got = support::send(addr, "GET", "/hello/http/", &[], "").await;
        assert_eq!(got.status, 200);
    }
    for trickler in tricklers {
        bounded("a trickler to be cut", trickler).await.unwrap();
    }
    assert_eq!(closed.load(Ordering::SeqCst), TRICKLERS);
    let got = support::send(addr, "GET", "/hello/http/", &[], "").await;
    assert_eq!(got.status, 200, "still serving after the attack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_but_a_slow_request_is_not() {
    let mut config = config();
    config.limits.idle_timeout = Duration::from_millis(300);
    let c = support::cluster("", vec![demo::build("slow", None).unwrap()], config).await;
    let addr = c.gateway.addr;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // A request that takes longer than the idle timeout is not cut...
    stream
        .write_all(b"GET /slow/http/?delay_ms=800 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut response = vec![0u8; 4096];
    let n = bounded("the slow response", stream.read(&mut response))
        .await
        .unwrap();
    assert!(
        response[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&response[..n])
    );
    // ...then the kept-alive connection, idle, is closed.
    bounded(
        "the idle connection to close",
        closed_by_server(&mut stream),
    )
    .await;
}

/// A gateway with the `hello` app and these parking and head timeouts (idle
/// timeout 30 s), and a keep-alive connection that has had one request
/// answered.
async fn after_one_request(
    idle_release: Duration,
    header_timeout: Duration,
) -> (support::Cluster, TcpStream) {
    let mut config = config();
    config.limits.idle_release = idle_release;
    config.limits.header_timeout = header_timeout;
    config.limits.idle_timeout = Duration::from_secs(30);
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config).await;
    let mut stream = TcpStream::connect(c.gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /hello/http/ HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(support::read_response(&mut stream, &mut buf).await.0, 200);
    (c, stream)
}

/// A keep-alive client that trickles its next request head with gaps longer
/// than the parking delay (so the connection is parked and resumed between
/// bytes) is still cut by the head timeout, not only by the much longer
/// idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_across_parks_is_cut_at_the_head_timeout() {
    let (_c, mut stream) =
        after_one_request(Duration::from_millis(20), Duration::from_millis(600)).await;
    // One byte of the next head every 100 ms (5 parking delays), for at most
    // 60 bytes (6 s): the server must close within the head timeout plus
    // one gap or so, long before the 30 s idle timeout.
    let started = tokio::time::Instant::now();
    let head = b"GET /hello/http/ HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaa";
    let mut closed_after = None;
    for byte in head.iter().take(60) {
        if stream.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        // The client's pace (not a synchronisation): it waits 100 ms for
        // the server to react before its next byte.
        if let Ok(read) =
            tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await
        {
            assert!(
                !matches!(read, Ok(n) if n > 0 && !buf.starts_with(b"HTTP/1.1 408")),
                "an answer to half a head"
            );
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("the trickled head was never cut");
    assert!(
        closed_after < Duration::from_millis(2500),
        "cut after {closed_after:?}, head timeout 600 ms"
    );
}

/// The head timeout counts from when a parked connection's next bytes
/// come, not from its last response: a client idle far longer than the
/// head timeout still gets its next request answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_gets_a_fresh_head_timeout_when_it_resumes() {
    let (_c, mut stream) =
        after_one_request(Duration::from_millis(20), Duration::from_millis(600)).await;
    // The client's own pauses (not synchronisation): idle for longer than
    // the head timeout, then a head in two writes 100 ms apart.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stream
        .write_all(b"GET /hello/http/ HTTP/1.1\r\nHo")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(b"st: t\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(support::read_response(&mut stream, &mut buf).await.0, 200);
}

/// Until it is parked, a keep-alive connection waiting for its next head
/// is bound by the head timeout (here parking comes much later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unparked_idle_connection_is_closed_at_the_head_timeout() {
    let (_c, mut stream) =
        after_one_request(Duration::from_secs(20), Duration::from_millis(300)).await;
    let started = tokio::time::Instant::now();
    bounded(
        "the idle connection to close",
        closed_by_server(&mut stream),
    )
    .await;
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_secs(5),
        "closed after {after:?}; head timeout 300 ms, parking 20 s, idle timeout 30 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_accepting_pauses() {
    let mut config = config();
    config.limits.max_connections = 2;
    // Never parked here, so never closed to make room (see
    // `tests/connection_limits.rs`).
    config.limits.idle_release = Duration::from_secs(30);
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config).await;
    let addr = c.gateway.addr;
    let mut first = support::h1(addr).await;
    let mut second = support::h1(addr).await;
    for sender in [&mut first, &mut second] {
        let response = sender
            .send_request(support::request("GET", "/hello/http/", &[], ""))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // A third connects (the kernel's backlog) but is not served...
    let third =
        tokio::spawn(async move { support::send(addr, "GET", "/hello/http/", &[], "").await });
    let mut third = third;
    if let Ok(done) = tokio::time::timeout(Duration::from_millis(500), &mut third).await {
        panic!("served past the limit: {}", done.unwrap().status);
    }
    // ...until one of the two closes.
    drop(first);
    let got = bounded("the third connection to be served", third)
        .await
        .unwrap();
    assert_eq!(got.status, 200);
    drop(second);
}

/// An app whose requests wait until released, telling when each started.
fn held(
    name: &str,
) -> (
    AppBuilder,
    tokio::sync::mpsc::Receiver<()>,
    Arc<tokio::sync::Semaphore>,
) {
    let (started_tx, started) = tokio::sync::mpsc::channel(64);
    let release = Arc::new(tokio::sync::Semaphore::new(0));
    let gate = Arc::clone(&release);
    let app = AppBuilder::new(name).on_http("http", move |_req: HttpRequest, res: HttpResponse| {
        let started = started_tx.clone();
        let gate = Arc::clone(&gate);
        async move {
            started.send(()).await.ok();
            gate.acquire().await.unwrap().forget();
            res.respond(200, vec![], "released").await.ok();
            Ok(())
        }
    });
    (app, started, release)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_limits_requests_are_shed_at_once() {
    let mut config = config();
    config.limits.max_in_flight = 3;
    config.services.insert(
        "one".into(),
        ServiceConfig {
            max_in_flight: Some(1),
            ..ServiceConfig::default()
        },
    );
    let (many, mut many_started, many_release) = held("many");
    let (one, mut one_started, one_release) = held("one");
    let c = support::cluster("", vec![many, one], config).await;
    let addr = c.gateway.addr;
    let shed = |got: &support::Got| {
        assert_eq!(got.status, 503, "{:?}", got.body);
        assert_eq!(got.json()["error"]["kind"], "shed");
        assert_eq!(got.header("retry-after"), Some("1"));
    };

    // Per service: `one` takes one request at a time.
    let first =
        tokio::spawn(async move { support::send(addr, "GET", "/one/http/", &[], "").await });
    bounded("the first request at the app", one_started.recv()).await;
    shed(&support::send(addr, "GET", "/one/http/", &[], "").await);

    // Globally: two more fill the gateway's three; a fourth is shed.
    let mut held_requests = Vec::new();
    for _ in 0..2 {
        held_requests.push(tokio::spawn(async move {
            support::send(addr, "GET", "/many/http/", &[], "").await
        }));
        bounded("a request at the app", many_started.recv()).await;
    }
    shed(&support::send(addr, "GET", "/many/http/", &[], "").await);

    // Released, everything held completes, and new requests pass again.
    one_release.add_permits(10);
    many_release.add_permits(10);
    assert_eq!(first.await.unwrap().status, 200);
    for request in held_requests {
        assert_eq!(request.await.unwrap().status, 200);
    }
    assert_eq!(
        support::send(addr, "GET", "/one/http/", &[], "")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_per_connection_are_capped() {
    let mut config = config();
    config.limits.h2_max_concurrent_streams = 2;
    let (app, mut started, release) = held("held");
    let c = support::cluster("", vec![app], config).await;
    let mut sender = support::h2(c.gateway.addr).await;
    // One answered request first: the server's SETTINGS (its stream
    // limit) arrive before it, so the client knows the limit. Streams sent
    // before that would be refused (REFUSED_STREAM) rather than wait.
    let response = sender
        .send_request(support::request("GET", "/", &[], ""))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let mut requests = Vec::new();
    for _ in 0..4 {
        let mut sender = sender.clone();
        requests.push(tokio::spawn(async move {
            sender
                .send_request(support::request("GET", "/held/http/", &[], ""))
                .await
                .unwrap()
                .status()
        }));
    }
    bounded("two streams at the app", async {
        started.recv().await;
        started.recv().await;
    })
    .await;
    // The other two wait in the client: the server allows two streams.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), started.recv())
            .await
            .is_err(),
        "a third stream reached the app"
    );
    release.add_permits(4);
    for request in requests {
        assert_eq!(bounded("a stream", request).await.unwrap(), 200);
    }
}

/// One HTTP/2 frame: length, type, flags, stream, payload.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Reads frames until a GOAWAY; its error code. Panics if the connection
/// ends first.
async fn goaway_code(stream: &mut (impl AsyncReadExt + Unpin)) -> u32 {
    let mut buf = Vec::new();
    loop {
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, payload) = (buf[3], buf[9..9 + len].to_vec());
            buf.drain(..9 + len);
            if kind == 7 {
                return u32::from_be_bytes(payload[4..8].try_into().unwrap());
            }
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        assert!(n > 0, "the connection ended without a GOAWAY");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The HPACK block of `GET http://t{path}`: :method GET, :scheme http
/// (static), :path (literal, name index 4), :authority "t" (name index 1).
fn h2_get(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 1, b't']);
    block
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_rapid_resets_close_the_connection() {
    let mut config = config();
    config.limits.h2_max_pending_resets = 10;
    let reached = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&reached);
    let app =
        AppBuilder::new("count").on_http("http", move |_req: HttpRequest, res: HttpResponse| {
            counted.fetch_add(1, Ordering::AcqRel);
            async move {
                res.respond(200, vec![], "ok").await.ok();
                Ok(())
            }
        });
    let c = support::cluster("", vec![app], config).await;
    let mut stream = TcpStream::connect(c.gateway.addr).await.unwrap();
    // h2c with prior knowledge, then 500 streams each opened (HEADERS with
    // END_STREAM) and cancelled (RST_STREAM CANCEL) at once, in one write.
    let mut attack = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    attack.extend(h2_frame(4, 0, 0, &[]));
    let block = h2_get("/count/http/");
    let sent = 500u32;
    for i in 0..sent {
        let id = 1 + 2 * i;
        attack.extend(h2_frame(1, 0x5, id, &block));
        attack.extend(h2_frame(3, 0, id, &8u32.to_be_bytes()));
    }
    // The server may close before it has read everything.
    let _ = stream.write_all(&attack).await;
    // ENHANCE_YOUR_CALM (0xb), then the connection closes.
    assert_eq!(bounded("a GOAWAY", goaway_code(&mut stream)).await, 0xb);
    bounded("the connection to close", closed_by_server(&mut stream)).await;
    let reached = reached.load(Ordering::Acquire);
    assert!(
        reached < sent as usize / 2,
        "{reached} of {sent} reset streams reached the app"
    );
    // Other clients are served as before.
    let got = support::send(c.gateway.addr, "GET", "/count/http/", &[], "").await;
    assert_eq!(got.status, 200);
}

/// An app whose requests wait until the client cancels them, telling when
/// each started and when each was cancelled.
fn cancelled_only(
    name: &str,
) -> (
    AppBuilder,
    tokio::sync::mpsc::Receiver<()>,
    tokio::sync::mpsc::Receiver<()>,
) {
    let (started_tx, started) = tokio::sync::mpsc::channel(64);
    let (cancelled_tx, cancelled) = tokio::sync::mpsc::channel(64);
    let app =
        AppBuilder::new(name).on_http("http", move |mut req: HttpRequest, _res: HttpResponse| {
            let (started, cancelled) = (started_tx.clone(), cancelled_tx.clone());
            async move {
                started.send(()).await.ok();
                req.cancelled().await;
                cancelled.send(()).await.ok();
                Ok(())
            }
        });
    (app, started, cancelled)
}

/// Reads HTTP/2 frames from `read` and sends each one's type and stream.
fn frames(
    mut read: impl AsyncReadExt + Unpin + Send + 'static,
) -> tokio::sync::mpsc::Receiver<(u8, u32)> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while buf.len() >= 9 {
                let len =
                    usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                let stream = u32::from_be_bytes(buf[5..9].try_into().unwrap()) & 0x7fff_ffff;
                if tx.send((buf[3], stream)).await.is_err() {
                    return;
                }
                buf.drain(..9 + len);
            }
            match read.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_resets_after_the_app_got_the_request_close_the_connection() {
    const GOAWAY: u8 = 7;
    const HEADERS: u8 = 1;
    let mut config = config();
    config.limits.max_premature_resets = 10;
    let (app, mut started, mut cancelled) = cancelled_only("held");
    let c = support::cluster("", vec![app], config).await;
    let stream = TcpStream::connect(c.gateway.addr).await.unwrap();
    let (read, mut write) = stream.into_split();
    let mut frames = frames(read);
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend(h2_frame(4, 0, 0, &[]));
    write.write_all(&hello).await.unwrap();
    // Each stream is reset only once the app has its request: every one
    // costs a backend request, and none counts as a pending-accept reset.
    // The next one opens only once the app saw the reset, and so once the
    // gateway counted it: the count is exact.
    let block = h2_get("/held/http/");
    let (mut resets, mut id) = (0, 1);
    // Whether the gateway answered stream `id` itself (only a stream it
    // refuses is answered: the app answers nothing).
    let mut answered = false;
    loop {
        assert!(resets < 40, "no GOAWAY after {resets} resets");
        write
            .write_all(&h2_frame(1, 0x5, id, &block))
            .await
            .unwrap();
        let reached = bounded("the app or a GOAWAY", async {
            loop {
                tokio::select! {
                    biased;
                    frame = frames.recv() => match frame {
                        Some((GOAWAY, _)) => return false,
                        Some((HEADERS, stream)) if stream == id => answered = true,
                        Some((HEADERS, stream)) => panic!("an answer on stream {stream}"),
                        Some(_) => {}
                        None => panic!("the connection ended without a GOAWAY"),
                    },
                    _ = started.recv() => return true,
                }
            }
        })
        .await;
        if !reached {
            break;
        }
        write
            .write_all(&h2_frame(3, 0, id, &8u32.to_be_bytes()))
            .await
            .unwrap();
        bounded("the app to see the reset", cancelled.recv()).await;
        resets += 1;
        id += 2;
    }
    // Past 10 (and more than half of the requests), the connection is told
    // to go away, exactly then.
    assert_eq!(resets, 11, "GOAWAY after {resets} resets");
    // The stream opened after that never reached the app: the gateway
    // answered it itself.
    while !answered {
        match bounded(
            "an answer to the stream opened after the limit",
            frames.recv(),
        )
        .await
        {
            Some((HEADERS, stream)) if stream == id => answered = true,
            Some((HEADERS, stream)) => panic!("an answer on stream {stream}"),
            Some(_) => {}
            None => panic!("the connection ended before answering stream {id}"),
        }
    }
    assert!(
        started.try_recv().is_err(),
        "a request reached the app after the limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_header_lists_past_the_limit_are_refused() {
    let mut config = config();
    config.limits.h2_max_header_list_size = 4096;
    let c = support::cluster("", vec![demo::build("hello", None).unwrap()], config).await;
    let mut sender = support::h2(c.gateway.addr).await;
    // Within the limit: served (this also brings the server's SETTINGS).
    let small = "v".repeat(1000);
    let response = sender
        .send_request(support::request(
            "GET",
            "/hello/http/",
            &[("x-big", &small)],
            "",
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Past it: answered 431 by the HTTP/2 stack, without reaching the app.
    let big = "v".repeat(8000);
    let response = sender
        .send_request(support::request(
            "GET",
            "/hello/http/",
            &[("x-big", &big)],
            "",
        ))
        .await
        .unwrap();
    assert_eq!(response.status(), 431);
    // The connection still serves requests within the limit.
    let response = sender
        .send_request(support::request("GET", "/hello/http/", &[], ""))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
