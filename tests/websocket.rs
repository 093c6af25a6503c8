//! WebSocket through the gateway: the upgrade routed to an app that
//! authorises it (or refuses it with any response), messages both ways as
//! `write` chunks, close codes both ways, pings answered by the gateway,
//! the size and rate limits, idle streams, a stalled client cut without
//! holding up the backend connection it shares, and shutdown (1001).

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rpcgate::app::{AppBuilder, WebSocketMessage, WebSocketRequest};
use rpcgate::config::Config;
use rpcgate::proto::{ErrorCode, RemoteError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(20);

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn config(f: impl FnOnce(&mut Config)) -> Config {
    let mut config = Config::default();
    config.request.timeout = Duration::from_millis(2000);
    config.pool.lifespan = Duration::from_secs(3600);
    config.limits.idle_timeout = Duration::from_secs(3600);
    f(&mut config);
    config
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

/// Waits until the metric `line_start` reaches `at_least`.
async fn metric_reaches(c: &support::Cluster, line_start: &str, at_least: f64) {
    let reached = async {
        while metric(c, line_start).await < at_least {
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(WAIT, reached)
        .await
        .unwrap_or_else(|_| panic!("{line_start} never reached {at_least}"));
}

async fn connect(c: &support::Cluster, path: &str) -> Client {
    let url = format!("ws://{}{path}", c.gateway.addr);
    let (client, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("the handshake hung")
        .expect("the handshake failed");
    assert_eq!(response.status(), 101);
    client
}

/// The next message other than a pong or the gateway's pings.
async fn next(client: &mut Client) -> Message {
    loop {
        match tokio::time::timeout(WAIT, client.next()).await {
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(Some(Ok(message))) => return message,
            Ok(other) => panic!("the WebSocket ended instead: {other:?}"),
            Err(_) => panic!("no message in {WAIT:?}"),
        }
    }
}

/// Reads until the close frame, skipping data messages; its code and
/// reason.
async fn close_frame(client: &mut Client) -> (CloseCode, String) {
    loop {
        match tokio::time::timeout(WAIT, client.next()).await {
            Ok(Some(Ok(Message::Close(Some(CloseFrame { code, reason }))))) => {
                return (code, reason.to_string());
            }
            Ok(Some(Ok(Message::Close(None)))) => panic!("a close frame without a code"),
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("ended without a close frame: {other:?}"),
            Err(_) => panic!("no close frame in {WAIT:?}"),
        }
    }
}

fn text(message: &Message) -> &str {
    match message {
        Message::Text(text) => text.as_str(),
        other => panic!("not a text message: {other:?}"),
    }
}

/// A test app; what it saw goes to `seen`. Paths:
/// - `/auth`: refuses (403) without `Authorization: Bearer ok`; else
///   accepts with `Sec-WebSocket-Protocol: chat`, says what upgrade headers
///   it got, and closes.
/// - `/echo`: echoes each message with its number (`1:hello`).
/// - `/fail`: accepts, then fails with a 300-byte message.
/// - `/bad`: accepts, then writes a chunk that is not a message.
/// - `/wait`: accepts and reports how the stream ended: `closed` (the
///   client's close) or `cancelled`.
/// - `/flood`: 16 KiB binary messages, one a millisecond, until it ends.
fn app(name: &str, seen: mpsc::UnboundedSender<String>) -> AppBuilder {
    AppBuilder::new(name).on_websocket("http", move |req: WebSocketRequest| {
        let seen = seen.clone();
        async move {
            let path = req.path().into_owned();
            match path.as_str() {
                "/auth" => {
                    if req.header("authorization") != Some(&b"Bearer ok"[..]) {
                        req.respond(403, vec![], "no entry\n").await.ok();
                        return Ok(());
                    }
                    let said = format!(
                        "upgrade={} key={} protocols={:?}",
                        String::from_utf8_lossy(req.header("upgrade").unwrap_or_default()),
                        req.header("sec-websocket-key").is_some(),
                        req.protocols(),
                    );
                    // The subprotocol, if offered.
                    let protocol = req.protocols().contains(&"chat".to_owned()).then(|| {
                        (
                            Bytes::from_static(b"Sec-WebSocket-Protocol"),
                            Bytes::from_static(b"chat"),
                        )
                    });
                    let Ok(ws) = req.accept_with(protocol.into_iter().collect()).await else {
                        return Ok(());
                    };
                    ws.send(said).await.ok();
                    ws.close().await.ok();
                }
                "/echo" => {
                    let Ok(mut ws) = req.accept().await else {
                        return Ok(());
                    };
                    let mut n = 0;
                    while let Some(Ok(message)) = ws.recv().await {
                        n += 1;
                        let answer = match message {
                            WebSocketMessage::Text(t) => WebSocketMessage::Text(format!("{n}:{t}")),
                            binary => binary,
                        };
                        if ws.send(answer).await.is_err() {
                            break;
                        }
                    }
                    ws.close().await.ok();
                }
                "/fail" => {
                    let Ok(ws) = req.accept().await else {
                        return Ok(());
                    };
                    let message = format!("broken: {}", "é".repeat(150));
                    ws.fail(RemoteError::new(ErrorCode::new(43, 1), message))
                        .await
                        .ok();
                }
                "/bad" => {
                    let (_req, mut res) = req.into_http();
                    if res.head(101, vec![]).await.is_ok() {
                        res.body(Bytes::from_static(b"\x09not a message"))
                            .await
                            .ok();
                        // Kept open: the gateway ends the stream.
                        let mut req = _req;
                        req.cancelled().await;
                        seen.send("bad: cancelled".into()).ok();
                    }
                }
                "/wait" => {
                    let Ok(mut ws) = req.accept().await else {
                        return Ok(());
                    };
                    seen.send("accepted".into()).ok();
                    let how = loop {
                        match ws.recv().await {
                            Some(Ok(_)) => {}
                            Some(Err(_)) => break "cancelled",
                            None => break "closed",
                        }
                    };
                    seen.send(how.into()).ok();
                    ws.close().await.ok();
                }
                "/flood" => {
                    let Ok(mut ws) = req.accept().await else {
                        return Ok(());
                    };
                    let message = Bytes::from(vec![b'x'; 16 << 10]);
                    let mut ticks = tokio::time::interval(Duration::from_millis(1));
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    loop {
                        tokio::select! {
                            _ = ticks.tick() => if ws.send(message.clone()).await.is_err() {
                                break;
                            },
                            m = ws.recv() => if !matches!(m, Some(Ok(_))) { break },
                        }
                    }
                }
                _ => {
                    req.respond(404, vec![], "").await.ok();
                }
            }
            Ok(())
        }
    })
}

async fn ws_cluster(
    f: impl FnOnce(&mut Config),
) -> (support::Cluster, mpsc::UnboundedReceiver<String>) {
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let c = support::cluster("", vec![app("wsapp", seen_tx)], config(f)).await;
    (c, seen)
}

async fn seen_next(seen: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(WAIT, seen.recv())
        .await
        .expect("the app reported nothing")
        .expect("the app is gone")
}

#[tokio::test]
async fn chat_broadcasts_text_and_binary_to_every_member_sender_included() {
    let chat = rpcgate::app::demo::build("chat", None).unwrap();
    let c = support::cluster("", vec![chat], config(|_| {})).await;
    let in_before = metric(
        &c,
        "rpcgate_stream_messages_total{kind=\"websocket\",direction=\"in\"}",
    )
    .await;
    let out_before = metric(
        &c,
        "rpcgate_stream_messages_total{kind=\"websocket\",direction=\"out\"}",
    )
    .await;
    let mut alice = connect(&c, "/chat/http/rooms/lobby").await;
    let mut bob = connect(&c, "/chat/http/rooms/lobby").await;
    let mut elsewhere = connect(&c, "/chat/http/rooms/other").await;
    assert_eq!(c.gateway.streams_open(), 3);
    alice.send(Message::text("hello, room")).await.unwrap();
    assert_eq!(text(&next(&mut alice).await), "hello, room");
    assert_eq!(text(&next(&mut bob).await), "hello, room");
    bob.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    for client in [&mut alice, &mut bob] {
        assert_eq!(
            next(client).await,
            Message::Binary(Bytes::from_static(&[0, 1, 2, 255]))
        );
    }
    // Another room hears nothing of it: its own message is the next.
    elsewhere.send(Message::text("anyone?")).await.unwrap();
    assert_eq!(text(&next(&mut elsewhere).await), "anyone?");
    // 3 messages in; 5 out (two to each lobby member, one elsewhere).
    metric_reaches(
        &c,
        "rpcgate_stream_messages_total{kind=\"websocket\",direction=\"in\"}",
        in_before + 3.0,
    )
    .await;
    metric_reaches(
        &c,
        "rpcgate_stream_messages_total{kind=\"websocket\",direction=\"out\"}",
        out_before + 5.0,
    )
    .await;
    // The page: a plain GET on the same app.
    let (status, page) = support::http(c.gateway.addr, "GET", "/chat/http/", "").await;
    assert_eq!(status, 200);
    assert!(page.contains("new WebSocket(") && page.contains("new EventSource("));
    // A room asked for without an upgrade: 426.
    let (status, _) = support::http(c.gateway.addr, "GET", "/chat/http/rooms/lobby", "").await;
    assert_eq!(status, 426);
}

#[tokio::test]
async fn the_app_sees_the_upgrade_headers_and_refuses_or_accepts() {
    let (c, _seen) = ws_cluster(|_| {}).await;
    let url = format!("ws://{}/wsapp/http/auth", c.gateway.addr);
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            // The app's own response (tungstenite hands over the raw,
            // chunked body).
            let body = response.body().clone().unwrap_or_default();
            assert!(
                body.windows(8).any(|w| w == b"no entry"),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
        other => panic!("expected a refusal, got {:?}", other.map(|(_, r)| r)),
    }
    assert_eq!(c.gateway.streams_open(), 0);
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer ok".parse().unwrap());
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "chat, superchat".parse().unwrap());
    let (mut client, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(
        text(&next(&mut client).await),
        "upgrade=websocket key=true protocols=[\"chat\", \"superchat\"]"
    );
    assert_eq!(close_frame(&mut client).await.0, CloseCode::Normal);
}

#[tokio::test]
async fn close_codes_both_ways() {
    let (c, mut seen) = ws_cluster(|_| {}).await;
    // The app fails: 1011, its message as the reason, cut to 123 bytes.
    let mut client = connect(&c, "/wsapp/http/fail").await;
    let (code, reason) = close_frame(&mut client).await;
    assert_eq!(code, CloseCode::Error);
    assert!(reason.starts_with("broken: é"), "{reason}");
    assert!(
        reason.len() <= 123 && reason.len() >= 120,
        "{}",
        reason.len()
    );
    // A chunk that is not a message: 1011, and the app is cancelled.
    let mut client = connect(&c, "/wsapp/http/bad").await;
    assert_eq!(close_frame(&mut client).await.0, CloseCode::Error);
    assert_eq!(seen_next(&mut seen).await, "bad: cancelled");
    // The client closes: the app sees the end of the messages, then its
    // close comes back as the answer.
    let mut client = connect(&c, "/wsapp/http/wait").await;
    assert_eq!(seen_next(&mut seen).await, "accepted");
    client.close(None).await.unwrap();
    assert_eq!(seen_next(&mut seen).await, "closed");
    let rest = tokio::time::timeout(WAIT, async {
        while let Some(Ok(_)) = client.next().await {}
    });
    rest.await.expect("the gateway never ended the WebSocket");
    // The client vanishes: the app is cancelled.
    let client = connect(&c, "/wsapp/http/wait").await;
    assert_eq!(seen_next(&mut seen).await, "accepted");
    drop(client);
    assert_eq!(seen_next(&mut seen).await, "cancelled");
}

#[tokio::test]
async fn the_app_closing_gives_1000_after_its_messages() {
    let (c, _seen) = ws_cluster(|_| {}).await;
    let url = format!("ws://{}/wsapp/http/auth", c.gateway.addr);
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer ok".parse().unwrap());
    let (mut client, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert!(text(&next(&mut client).await).starts_with("upgrade="));
    let (code, reason) = close_frame(&mut client).await;
    assert_eq!((code, reason.as_str()), (CloseCode::Normal, ""));
}

#[tokio::test]
async fn pings_are_answered_by_the_gateway_and_never_reach_the_app() {
    let (c, _seen) = ws_cluster(|_| {}).await;
    let mut client = connect(&c, "/wsapp/http/echo").await;
    client
        .send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    let pong = tokio::time::timeout(WAIT, async {
        loop {
            match client.next().await {
                Some(Ok(Message::Pong(data))) => return data,
                Some(Ok(Message::Ping(_))) => {}
                other => panic!("expected a pong, got {other:?}"),
            }
        }
    })
    .await
    .expect("no pong");
    assert_eq!(pong, "are you there");
    // The app's first message is 1: it never saw the ping.
    client.send(Message::text("hi")).await.unwrap();
    assert_eq!(text(&next(&mut client).await), "1:hi");
}

#[tokio::test]
async fn the_gateway_pings_a_quiet_client() {
    let (c, _seen) = ws_cluster(|c| c.limits.websocket_ping = Duration::from_millis(50)).await;
    let mut client = connect(&c, "/wsapp/http/echo").await;
    let ping = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Ok(Message::Ping(_))) = client.next().await {
                return;
            }
        }
    });
    ping.await.expect("no ping from the gateway");
}

#[tokio::test]
async fn a_message_over_the_size_limit_gets_1009() {
    let (c, _seen) = ws_cluster(|c| c.limits.websocket_max_message = 1024).await;
    let mut client = connect(&c, "/wsapp/http/echo").await;
    client.send(Message::binary(vec![7u8; 1024])).await.unwrap();
    assert_eq!(
        next(&mut client).await,
        Message::Binary(vec![7u8; 1024].into())
    );
    // Errors from here on are the gateway closing; the close frame says why.
    let _ = client.send(Message::binary(vec![7u8; 1025])).await;
    assert_eq!(close_frame(&mut client).await.0, CloseCode::Size);
}

#[tokio::test]
async fn too_many_messages_a_second_get_1008() {
    let (c, _seen) = ws_cluster(|c| c.limits.websocket_max_rate = 5).await;
    let policy_before = metric(
        &c,
        "rpcgate_stream_disconnects_total{kind=\"websocket\",reason=\"policy\"}",
    )
    .await;
    let mut client = connect(&c, "/wsapp/http/echo").await;
    // A burst of 50: the bucket holds 5 and refills 5 a second.
    for i in 0..50 {
        if client.feed(Message::text(format!("m{i}"))).await.is_err() {
            break;
        }
    }
    let _ = client.flush().await;
    let (code, reason) = close_frame(&mut client).await;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Policy, "too many messages")
    );
    metric_reaches(
        &c,
        "rpcgate_stream_disconnects_total{kind=\"websocket\",reason=\"policy\"}",
        policy_before + 1.0,
    )
    .await;
}

#[tokio::test]
async fn an_idle_websocket_is_closed_with_1001() {
    let (c, mut seen) =
        ws_cluster(|c| c.limits.stream_idle_timeout = Duration::from_millis(300)).await;
    let mut client = connect(&c, "/wsapp/http/wait").await;
    assert_eq!(seen_next(&mut seen).await, "accepted");
    let (code, reason) = close_frame(&mut client).await;
    assert_eq!((code, reason.as_str()), (CloseCode::Away, "idle"));
    assert_eq!(seen_next(&mut seen).await, "cancelled");
}

#[tokio::test]
async fn shutdown_closes_open_websockets_with_1001_within_the_deadline() {
    let chat = rpcgate::app::demo::build("chat", None).unwrap();
    let c = support::cluster("", vec![chat], config(|_| {})).await;
    let mut client = connect(&c, "/chat/http/rooms/lobby").await;
    client.send(Message::text("still here")).await.unwrap();
    assert_eq!(text(&next(&mut client).await), "still here");
    let support::Cluster { gateway, apps, .. } = c;
    let shutdown = tokio::spawn(gateway.shutdown_within(Duration::from_secs(10)));
    let (code, _) = close_frame(&mut client).await;
    assert_eq!(code, CloseCode::Away);
    // The close handshake completes and the connection ends.
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(Ok(_)) = client.next().await {}
    });
    ended.await.expect("the connection stayed open");
    let report = tokio::time::timeout(WAIT, shutdown).await.unwrap().unwrap();
    assert!(report.is_clean(), "{report:?}");
    drop(apps);
}

#[tokio::test]
async fn a_stalled_client_is_cut_and_a_fast_one_on_the_same_backend_connection_keeps_going() {
    let (c, _seen) = ws_cluster(|c| {
        c.limits.stream_queue = 256;
        // One backend connection: both streams share it.
        c.services.insert(
            "wsapp".into(),
            rpcgate::config::ServiceConfig {
                pool_size: Some(1),
                ..Default::default()
            },
        );
    })
    .await;
    let slow_before = metric(
        &c,
        "rpcgate_stream_disconnects_total{kind=\"websocket\",reason=\"slow_client\"}",
    )
    .await;
    // The stalled client: upgrades, then never reads.
    let mut stalled = TcpStream::connect(c.gateway.addr).await.unwrap();
    stalled
        .write_all(
            b"GET /wsapp/http/flood HTTP/1.1\r\nhost: t\r\nupgrade: websocket\r\n\
              connection: Upgrade\r\nsec-websocket-version: 13\r\n\
              sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .await
        .unwrap();
    // The fast client reads on: far more than every buffer between the
    // app and the stalled client holds (its queue, both sockets').
    let mut fast = connect(&c, "/wsapp/http/flood").await;
    let mut got = 0usize;
    let read = async {
        while got < 64 << 20 {
            match next(&mut fast).await {
                Message::Binary(data) => got += data.len(),
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .unwrap_or_else(|_| panic!("the fast client stalled after {got} bytes"));
    metric_reaches(
        &c,
        "rpcgate_stream_disconnects_total{kind=\"websocket\",reason=\"slow_client\"}",
        slow_before + 1.0,
    )
    .await;
    // The stalled one's connection is closed (after what was buffered).
    let closed = async {
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            match stalled.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(WAIT, closed)
        .await
        .expect("the stalled client's connection stayed open");
    assert_eq!(c.gateway.streams_open(), 1, "the fast stream is still open");
}
