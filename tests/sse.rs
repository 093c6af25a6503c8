//! Server-sent events through the gateway: a `text/event-stream` reply is a
//! push stream with no request deadline, keepalive comments while the app
//! is quiet, an idle limit, a clean end on shutdown, `Last-Event-ID` passed
//! on, the app cancelled when the client goes, and a client that stalls cut
//! without holding up the backend connection it shares.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use rpcgate::app::{AppBuilder, HttpRequest, HttpResponse};
use rpcgate::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

/// What a `quiet` app saw of one request.
#[derive(Debug)]
enum Seen {
    /// The `request_timeout` it was told, in ms.
    Timeout(Option<u64>),
    /// The request was cancelled (the gateway ended it).
    Cancelled,
}

/// An app that answers one SSE event, then stays quiet until the request
/// ends, reporting what it saw.
fn quiet(name: &str, seen: mpsc::UnboundedSender<Seen>, content_type: &'static str) -> AppBuilder {
    AppBuilder::new(name).on_http(
        "http",
        move |mut req: HttpRequest, mut res: HttpResponse| {
            let seen = seen.clone();
            async move {
                let timeout = req
                    .frame_headers
                    .request_timeout()
                    .map(|t| t.as_millis() as u64);
                seen.send(Seen::Timeout(timeout)).ok();
                let head = vec![(
                    Bytes::from_static(b"content-type"),
                    Bytes::from_static(content_type.as_bytes()),
                )];
                if res.head(200, head).await.is_err() || res.body("data: hello\n\n").await.is_err()
                {
                    return Ok(());
                }
                req.cancelled().await;
                seen.send(Seen::Cancelled).ok();
                Ok(())
            }
        },
    )
}

/// An app whose every request gets an SSE stream of 16 KiB events, one a
/// millisecond (16 MB/s: a client reading keeps up; one that stalls falls
/// behind), until it is cancelled.
fn paced(name: &str) -> AppBuilder {
    AppBuilder::new(name).on_http(
        "http",
        |mut req: HttpRequest, mut res: HttpResponse| async move {
            let head = vec![(
                Bytes::from_static(b"content-type"),
                Bytes::from_static(b"text/event-stream"),
            )];
            if res.head(200, head).await.is_err() {
                return Ok(());
            }
            let mut event = vec![b'x'; 16 << 10];
            event[..6].copy_from_slice(b"data: ");
            event[(16 << 10) - 2..].copy_from_slice(b"\n\n");
            let event = Bytes::from(event);
            let mut ticks = tokio::time::interval(Duration::from_millis(1));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = ticks.tick() => if res.body(event.clone()).await.is_err() { return Ok(()) },
                    _ = req.cancelled() => return Ok(()),
                }
            }
        },
    )
}

fn config(f: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    config.request.timeout = Duration::from_millis(1000);
    // No pool refresh or idle close inside the tests' virtual minutes.
    config.pool.lifespan = Duration::from_secs(3600);
    config.limits.idle_timeout = Duration::from_secs(3600);
    f(&mut config);
    config
}

/// The next body frame's data, `None` at the body's end.
async fn next_data(body: &mut hyper::body::Incoming) -> Option<Bytes> {
    loop {
        match body.frame().await? {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    return Some(data);
                }
            }
            Err(e) => panic!("the stream failed instead of ending: {e}"),
        }
    }
}

async fn open_stream(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> hyper::Response<hyper::body::Incoming> {
    let mut sender = support::h1(addr).await;
    let response = sender
        .send_request(support::request("GET", path, headers, ""))
        .await
        .unwrap();
    // The connection task lives on; keep the sender with it.
    tokio::spawn(async move {
        let _sender = sender;
        std::future::pending::<()>().await;
    });
    response
}

async fn metric(c: &support::Cluster, line_start: &str) -> f64 {
    // Once per process; the tests that read metrics all call this.
    let _ = rpcgate::metrics::install_prometheus();
    let (_, text) = support::http(c.gateway.admin_addr.unwrap(), "GET", "/metrics", "").await;
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits (at most [`WAIT`]) until the metric `line` reaches `at_least`.
async fn metric_reaches(c: &support::Cluster, line: &str, at_least: f64, what: &str) {
    let reached = async {
        while metric(c, line).await < at_least {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(WAIT, reached)
        .await
        .unwrap_or_else(|_| panic!("{what}: {line} never reached {at_least}"));
}

#[tokio::test]
async fn keepalives_arrive_through_a_quiet_minute_and_the_stream_outlives_the_request_deadline() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let c = support::cluster(
        "",
        vec![quiet("quiet", seen_tx, "text/event-stream")],
        config(|c| {
            c.limits.sse_keepalive = Duration::from_secs(15);
            c.limits.stream_idle_timeout = Duration::from_secs(600);
        }),
    )
    .await;
    let response = open_stream(c.gateway.addr, "/quiet/http/", &[]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    assert!(response.headers().get("content-length").is_none());
    let mut body = response.into_body();
    assert_eq!(next_data(&mut body).await.unwrap(), "data: hello\n\n");
    assert!(matches!(seen.recv().await, Some(Seen::Timeout(Some(1000)))));

    // A quiet minute on the paused clock: 4 keepalives, one per 15 s. (The
    // gateway's clocks started when it got the event, a moment before
    // `start`: hence a second either way.)
    tokio::time::pause();
    let start = tokio::time::Instant::now();
    let deadline = c.gateway.config().request.timeout;
    for n in 1..=4u32 {
        let data = next_data(&mut body).await.expect("the stream ended");
        assert_eq!(data, ": keepalive\n\n", "keepalive {n}");
        let at = start.elapsed();
        assert!(
            at > Duration::from_secs(15) * n - Duration::from_secs(1)
                && at < Duration::from_secs(15) * n + Duration::from_secs(1),
            "keepalive {n} at {at:?}"
        );
    }
    assert!(
        start.elapsed() >= deadline * 60,
        "the stream outlived the request deadline many times over"
    );
    assert_eq!(c.gateway.streams_open(), 1);
    assert!(
        seen.try_recv().is_err(),
        "the app was never cancelled while the stream was quiet"
    );
    tokio::time::resume();
    drop(body);
    assert!(matches!(
        tokio::time::timeout(WAIT, seen.recv()).await,
        Ok(Some(Seen::Cancelled))
    ));
}

#[tokio::test]
async fn a_stream_with_nothing_moving_past_the_idle_limit_ends_cleanly_and_cancels_the_app() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let c = support::cluster(
        "",
        vec![quiet("quiet", seen_tx, "text/event-stream")],
        config(|c| {
            c.limits.sse_keepalive = Duration::from_secs(15);
            c.limits.stream_idle_timeout = Duration::from_secs(40);
        }),
    )
    .await;
    let idle_before = metric(
        &c,
        "rpcgate_stream_disconnects_total{kind=\"sse\",reason=\"idle\"}",
    )
    .await;
    let mut body = open_stream(c.gateway.addr, "/quiet/http/", &[])
        .await
        .into_body();
    assert_eq!(next_data(&mut body).await.unwrap(), "data: hello\n\n");
    tokio::time::pause();
    let start = tokio::time::Instant::now();
    let mut keepalives = 0;
    // Keepalives do not count as activity: the stream ends at 40 s.
    while let Some(data) = next_data(&mut body).await {
        assert_eq!(data, ": keepalive\n\n");
        keepalives += 1;
    }
    let ended = start.elapsed();
    tokio::time::resume();
    assert_eq!(keepalives, 2, "at 15 s and 30 s");
    assert!(
        ended > Duration::from_secs(39) && ended < Duration::from_secs(41),
        "ended at {ended:?}"
    );
    assert!(matches!(seen.recv().await, Some(Seen::Timeout(_))));
    assert!(matches!(
        tokio::time::timeout(WAIT, seen.recv()).await,
        Ok(Some(Seen::Cancelled))
    ));
    let idle_after = metric(
        &c,
        "rpcgate_stream_disconnects_total{kind=\"sse\",reason=\"idle\"}",
    )
    .await;
    assert_eq!(idle_after, idle_before + 1.0);
}

#[tokio::test]
async fn last_event_id_reaches_the_app_and_a_finished_stream_ends_cleanly() {
    let ticker = rpcgate::app::demo::build("ticker", None).unwrap();
    let c = support::cluster("", vec![ticker], config(|_| {})).await;
    let response = open_stream(
        c.gateway.addr,
        "/ticker/http/?interval_ms=5&count=2",
        &[("last-event-id", "41")],
    )
    .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .collect();
    assert_eq!(ids, ["42", "43"], "{text}");
    assert!(
        text.lines()
            .filter(|l| l.starts_with("data: "))
            .all(|l| l[6..].parse::<u64>().is_ok())
    );
    let open = async {
        while c.gateway.streams_open() != 0 {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(WAIT, open)
        .await
        .expect("the stream was never counted closed");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_apps_channel() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let c = support::cluster(
        "",
        vec![quiet("quiet", seen_tx, "text/event-stream")],
        config(|_| {}),
    )
    .await;
    let before = metric(
        &c,
        "rpcgate_stream_disconnects_total{kind=\"sse\",reason=\"client_closed\"}",
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(c.gateway.addr)
        .await
        .unwrap();
    stream
        .write_all(b"GET /quiet/http/ HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    while !String::from_utf8_lossy(&buf).contains("data: hello") {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the first event");
        buf.extend_from_slice(&chunk[..n]);
    }
    drop(stream);
    assert!(matches!(seen.recv().await, Some(Seen::Timeout(_))));
    assert!(matches!(
        tokio::time::timeout(WAIT, seen.recv()).await,
        Ok(Some(Seen::Cancelled))
    ));
    metric_reaches(
        &c,
        "rpcgate_stream_disconnects_total{kind=\"sse\",reason=\"client_closed\"}",
        before + 1.0,
        "the disconnect was never counted",
    )
    .await;
}

#[tokio::test]
async fn a_push_service_tells_its_app_the_stream_lifetime_and_any_reply_streams() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let c = support::cluster(
        "",
        vec![quiet("feed", seen_tx, "application/x-ndjson")],
        config(|c| {
            c.limits.stream_max_lifetime = Duration::from_secs(7200);
            c.services.insert(
                "feed".into(),
                rpcgate::config::ServiceConfig {
                    push: true,
                    ..Default::default()
                },
            );
        }),
    )
    .await;
    let response = open_stream(c.gateway.addr, "/feed/http/", &[]).await;
    assert_eq!(response.headers()["x-accel-buffering"], "no");
    let mut body = response.into_body();
    assert_eq!(next_data(&mut body).await.unwrap(), "data: hello\n\n");
    match seen.recv().await {
        Some(Seen::Timeout(Some(ms))) => assert_eq!(ms, 7_200_000),
        other => panic!("the app saw {other:?}"),
    }
    assert_eq!(c.gateway.streams_open(), 1);
}

#[tokio::test]
async fn shutdown_ends_open_streams_cleanly_within_the_drain_deadline() {
    let ticker = rpcgate::app::demo::build("ticker", None).unwrap();
    let c = support::cluster("", vec![ticker], config(|_| {})).await;
    let mut body = open_stream(c.gateway.addr, "/ticker/http/?interval_ms=10", &[])
        .await
        .into_body();
    assert!(next_data(&mut body).await.unwrap().starts_with(b"id: 1\n"));
    let support::Cluster { gateway, .. } = c;
    let shutdown = tokio::spawn(gateway.shutdown_within(Duration::from_secs(10)));
    // The body ends (the chunked body's last chunk), not fails.
    let ended = async { while next_data(&mut body).await.is_some() {} };
    tokio::time::timeout(WAIT, ended)
        .await
        .expect("the stream did not end on shutdown");
    let report = shutdown.await.unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test]
async fn a_stalled_client_is_cut_and_a_fast_one_on_the_same_backend_connection_keeps_going() {
    let c = support::cluster(
        "",
        vec![paced("flood")],
        config(|c| {
            c.limits.stream_queue = 256;
            // One backend connection: both streams share it.
            c.services.insert(
                "flood".into(),
                rpcgate::config::ServiceConfig {
                    pool_size: Some(1),
                    ..Default::default()
                },
            );
        }),
    )
    .await;
    let slow_before = metric(
        &c,
        "rpcgate_stream_disconnects_total{kind=\"sse\",reason=\"slow_client\"}",
    )
    .await;
    // The stalled client: asks, then never reads.
    let mut stalled = tokio::net::TcpStream::connect(c.gateway.addr)
        .await
        .unwrap();
    stalled
        .write_all(b"GET /flood/http/ HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    // The fast client reads on: far more than every buffer between the
    // app and the stalled client holds (its queue, hyper's, both sockets').
    let mut fast = open_stream(c.gateway.addr, "/flood/http/", &[])
        .await
        .into_body();
    let mut got = 0usize;
    let read = async {
        while got < 64 << 20 {
            got += next_data(&mut fast)
                .await
                .expect("the fast stream ended")
                .len();
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .unwrap_or_else(|_| panic!("the fast client stalled after {got} bytes"));
    // The stalled one was cut: counted, and its connection closed.
    metric_reaches(
        &c,
        "rpcgate_stream_disconnects_total{kind=\"sse\",reason=\"slow_client\"}",
        slow_before + 1.0,
        "the stalled client was never cut",
    )
    .await;
    let mut tail = Vec::new();
    let closed = async {
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            match stalled.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => tail.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, closed)
        .await
        .expect("the stalled client's connection stayed open");
    assert!(
        !tail.ends_with(b"0\r\n\r\n"),
        "a cut stream must not look complete"
    );
    assert_eq!(c.gateway.streams_open(), 1, "the fast stream is still open");
}
