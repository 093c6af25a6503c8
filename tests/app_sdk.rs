//! The app SDK over real sockets: concurrency and the queue-full limit,
//! handler errors and panics, unknown events, the HTTP helper, `info`, and a
//! graceful stop that unpublishes and finishes open requests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rpcgate::app::{AppBuilder, HttpRequest, HttpResponse, Request, Response, RunningApp, demo};
use rpcgate::locator::LocatorConfig;
use rpcgate::mux::{ConnectionError, MuxConfig, MuxHandle};
use rpcgate::proto::http::{HttpRequest as HttpTuple, ResponseMeta};
use rpcgate::proto::{ErrorCode, RemoteError, StreamEvent};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

/// `app` on an ephemeral loopback port (no locator), and a connection to it.
async fn serve(
    app: AppBuilder,
) -> (
    RunningApp,
    MuxHandle,
    JoinHandle<Result<(), Arc<ConnectionError>>>,
) {
    let app = app
        .bind("127.0.0.1:0".parse().unwrap(), vec![])
        .await
        .unwrap();
    let (handle, conn) = support::connect(app.addr, MuxConfig::default()).await;
    (app, handle, conn)
}

fn meta(event: &StreamEvent) -> ResponseMeta {
    let StreamEvent::Write(chunk) = event else {
        panic!("expected the meta chunk, got {event:?}");
    };
    ResponseMeta::decode(chunk).unwrap()
}

fn error_of(events: &[StreamEvent]) -> RemoteError {
    match events {
        [StreamEvent::Error(e)] => e.clone(),
        other => panic!("expected exactly one error frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_thousand_concurrent_enqueues() {
    let app = demo::build("hello", None).unwrap();
    let (_app, handle, _conn) = serve(app).await;
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let handle = handle.clone();
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = support::enqueue(&handle, "http").await.split();
            tx.write(support::get("/")).await.unwrap();
            tx.close().await.unwrap();
            let mut events = Vec::new();
            while let Some(frame) = rx.recv().await {
                events.push(frame.unwrap().stream_event().unwrap());
            }
            events
        }));
    }
    for task in tasks {
        let events = task.await.unwrap();
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(meta(&events[0]).status, 200);
        assert_eq!(
            events[1],
            StreamEvent::Write(Bytes::from_static(demo::HELLO))
        );
        assert_eq!(events[2], StreamEvent::Close);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_full_appears_exactly_past_the_limit() {
    const LIMIT: usize = 8;
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::channel(LIMIT * 2);
    let app = {
        let gate = Arc::clone(&gate);
        AppBuilder::new("gated").concurrency(LIMIT).on(
            "work",
            move |_req: Request, res: Response| {
                let gate = Arc::clone(&gate);
                let started = started_tx.clone();
                async move {
                    started.send(()).await.unwrap();
                    let _permit = gate.acquire().await.unwrap();
                    res.write("done").await.unwrap();
                    res.close().await.unwrap();
                    Ok(())
                }
            },
        )
    };
    let (app, handle, _conn) = serve(app).await;
    let mut admitted = Vec::new();
    for _ in 0..LIMIT {
        admitted.push(support::enqueue(&handle, "work").await);
    }
    for _ in 0..LIMIT {
        started.recv().await.unwrap();
    }
    assert_eq!(app.in_flight(), LIMIT);
    let mut refused = support::enqueue(&handle, "work").await;
    let error = error_of(&support::collect(&mut refused).await);
    assert_eq!(error.code, ErrorCode::QUEUE_IS_FULL);
    assert_eq!(error.message.as_deref(), Some(&b"queue is full"[..]));

    gate.add_permits(LIMIT);
    for mut channel in admitted {
        assert_eq!(
            support::collect(&mut channel).await,
            [StreamEvent::Write("done".into()), StreamEvent::Close]
        );
    }
    // Below the limit again: admitted.
    let mut after = support::enqueue(&handle, "work").await;
    started.recv().await.unwrap();
    gate.add_permits(1);
    assert_eq!(support::collect(&mut after).await.len(), 2);
}

#[tokio::test]
async fn close_before_meta_errors_panics_and_unknown_events_give_their_frames() {
    let app = AppBuilder::new("frames")
        .on("close", |_req, res: Response| async move {
            res.close().await.unwrap();
            Ok(())
        })
        .on("fail", |_req, _res| async move {
            Err(RemoteError::new(ErrorCode::new(43, 7), "boom"))
        })
        .on("panic", |_req, _res| async move {
            let empty: Vec<u8> = Vec::new();
            if empty.is_empty() {
                panic!("handler bug");
            }
            Ok(())
        })
        .on("ok", |_req, res: Response| async move {
            res.write("fine").await.unwrap();
            res.close().await.unwrap();
            Ok(())
        });
    let (_app, handle, _conn) = serve(app).await;

    let mut close = support::enqueue(&handle, "close").await;
    assert_eq!(support::collect(&mut close).await, [StreamEvent::Close]);

    let mut fail = support::enqueue(&handle, "fail").await;
    let error = error_of(&support::collect(&mut fail).await);
    assert_eq!(
        (error.code, error.message.as_deref()),
        (ErrorCode::new(43, 7), Some(&b"boom"[..]))
    );

    let mut panic = support::enqueue(&handle, "panic").await;
    let error = error_of(&support::collect(&mut panic).await);
    assert_eq!(error.code, ErrorCode::UNCAUGHT_ERROR);
    assert!(error.message_lossy().contains("handler bug"), "{error}");

    let mut unknown = support::enqueue(&handle, "nope").await;
    let error = error_of(&support::collect(&mut unknown).await);
    assert_eq!(error.code, ErrorCode::EVENT_NOT_FOUND);
    assert_eq!(error.to_string(), "[1]: event not found");

    // The app kept serving through all of it.
    let mut ok = support::enqueue(&handle, "ok").await;
    assert_eq!(
        support::collect(&mut ok).await,
        [StreamEvent::Write("fine".into()), StreamEvent::Close]
    );
}

#[tokio::test]
async fn the_http_helper_reads_the_tuple_and_streamed_body_chunks() {
    // A handler that reads the whole streamed body, then answers with it.
    let app = AppBuilder::new("collector").on_http(
        "http",
        |mut req: HttpRequest, res: HttpResponse| async move {
            let mut body = req.body.to_vec();
            while let Some(chunk) = req.next_body_chunk().await {
                let chunk = chunk
                    .map_err(|e| RemoteError::new(ErrorCode::INVALID_ARGUMENT, e.to_string()))?;
                body.extend_from_slice(&chunk);
            }
            let cookies = req
                .headers()
                .filter(|(n, _)| n.eq_ignore_ascii_case(b"cookie"))
                .count();
            let headers = vec![("X-Cookies".into(), Bytes::from(cookies.to_string()))];
            let line = format!(
                "{} {} {} ",
                String::from_utf8_lossy(&req.method),
                req.path(),
                req.query_param("x").unwrap_or_default()
            );
            res.respond(200, headers, [line.as_bytes(), &body].concat())
                .await
                .ok();
            Ok(())
        },
    );
    let (_app, handle, _conn) = serve(app).await;
    let mut channel = support::enqueue(&handle, "http").await;
    channel.sender.write(post_tuple()).await.unwrap();
    channel.sender.write("def").await.unwrap();
    channel.sender.write("ghi").await.unwrap();
    channel
        .sender
        .send(rpcgate::proto::Message::close())
        .await
        .unwrap();
    let events = support::collect(&mut channel).await;
    let head = meta(&events[0]);
    assert_eq!(head.status, 200);
    assert!(head.headers.contains(&("X-Cookies".into(), "2".into())));
    assert_eq!(
        events[1],
        StreamEvent::Write("POST /a/b 1 abcdefghi".into())
    );
    assert_eq!(events.last(), Some(&StreamEvent::Close));
}

/// A 5-tuple whose header list is `lines`, each already encoded.
fn tuple_with_header_lines(lines: &[&[u8]]) -> Bytes {
    use rpcgate::proto::msgpack::{put_array_len, put_str};
    let mut buf = bytes::BytesMut::new();
    put_array_len(&mut buf, 5);
    put_str(&mut buf, b"GET");
    put_str(&mut buf, b"/");
    put_str(&mut buf, b"1.1");
    put_array_len(&mut buf, lines.len());
    for line in lines {
        buf.extend_from_slice(line);
    }
    put_str(&mut buf, b"");
    buf.freeze()
}

#[tokio::test]
async fn header_lines_are_checked_before_the_handler_runs_and_read_when_it_looks() {
    let app = AppBuilder::new("strict").on_http(
        "http",
        |req: HttpRequest, res: HttpResponse| async move {
            let lines: Vec<String> = req
                .headers()
                .map(|(n, v)| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(n),
                        String::from_utf8_lossy(v)
                    )
                })
                .collect();
            let host = req.header("HOST").map(<[u8]>::to_vec).unwrap_or_default();
            let body = format!(
                "{} host={}",
                lines.join(","),
                String::from_utf8_lossy(&host)
            );
            res.respond(200, vec![], body).await.ok();
            Ok(())
        },
    );
    let (_app, handle, _conn) = serve(app).await;
    let send = |tuple: Bytes| {
        let handle = handle.clone();
        async move {
            let mut channel = support::enqueue(&handle, "http").await;
            channel.sender.write(tuple).await.unwrap();
            channel
                .sender
                .send(rpcgate::proto::Message::close())
                .await
                .unwrap();
            support::collect(&mut channel).await
        }
    };

    // Lines in order, repeated names kept, a third element skipped, bin
    // and str alike.
    let good = tuple_with_header_lines(&[
        b"\x92\xa4Host\xa1a",
        b"\x93\xa4Host\xa1b\xa5extra",
        b"\x92\xc4\x01X\xc4\x01y",
    ]);
    let events = send(good).await;
    assert_eq!(
        events[1],
        StreamEvent::Write("Host=a,Host=b,X=y host=a".into())
    );

    // A line with one element, a name that is not a byte string, a line
    // cut short: refused as the handler's request, which never runs.
    for bad in [
        tuple_with_header_lines(&[b"\x91\xa4Host"]),
        tuple_with_header_lines(&[b"\x92\x05\xa1a"]),
        tuple_with_header_lines(&[b"\x92\xa4Host"]),
    ] {
        let error = error_of(&send(bad).await);
        assert_eq!(error.code, ErrorCode::INVALID_ARGUMENT);
        assert!(error.message_lossy().contains("request 5-tuple"), "{error}");
    }
}

fn post_tuple() -> Bytes {
    HttpTuple {
        method: "POST".into(),
        uri: "/a/b?x=1".into(),
        version: "1.1".into(),
        headers: vec![
            ("Cookie".into(), "a=1".into()),
            ("Cookie".into(), "b=2".into()),
        ],
        body: "abc".into(),
    }
    .to_bytes()
}

#[tokio::test]
async fn echo_answers_from_the_first_chunk_as_json() {
    let app = demo::build("echo", Some("v2")).unwrap();
    let (_app, handle, _conn) = serve(app).await;
    let mut channel = support::enqueue(&handle, "http").await;
    // Only the first chunk: echo answers without waiting for `close`.
    channel.sender.write(post_tuple()).await.unwrap();
    let first = channel.receiver.recv().await.unwrap().unwrap();
    let head = meta(&first.stream_event().unwrap());
    assert_eq!(head.status, 200);
    assert!(
        head.headers
            .contains(&("X-App-Version".into(), "v2".into()))
    );
    let second = channel.receiver.recv().await.unwrap().unwrap();
    let StreamEvent::Write(body) = second.stream_event().unwrap() else {
        panic!("a body chunk")
    };
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["method"], "POST");
    assert_eq!(json["uri"], "/a/b?x=1");
    assert_eq!(json["body"], "abc");
    assert_eq!(json["app"], "echo-v2");
    assert_eq!(json["headers"][1], serde_json::json!(["Cookie", "b=2"]));
}

#[tokio::test]
async fn info_describes_the_app() {
    let app = demo::build("hello", None).unwrap();
    let (_app, handle, _conn) = serve(app).await;
    let invocation = rpcgate::mux::Invocation::new(
        rpcgate::proto::Message::new(1, rpcgate::proto::Args::Empty),
        rpcgate::proto::Protocol::Terminal,
        rpcgate::proto::Protocol::Primitive,
    );
    let mut channel = handle.open(invocation).await.unwrap();
    let frame = channel.receiver.recv().await.unwrap().unwrap();
    let info = rpcgate::proto::app::InfoReply::decode_args(&frame.args).unwrap();
    let text = format!("{:?}", info.info);
    assert!(text.contains("hello") && text.contains("running"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_unpublishes_refuses_and_finishes_open_requests() {
    let locator = support::start_locator(LocatorConfig::default()).await;
    let registry = Arc::clone(locator.registry());
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, mut started) = mpsc::channel(4);
    let app = {
        let gate = Arc::clone(&gate);
        AppBuilder::new("stopper").on("work", move |_req, res: Response| {
            let gate = Arc::clone(&gate);
            let started = started_tx.clone();
            async move {
                started.send(()).await.unwrap();
                let _permit = gate.acquire().await.unwrap();
                res.write("finished").await.unwrap();
                res.close().await.unwrap();
                Ok(())
            }
        })
    };
    let app = app
        .bind("127.0.0.1:0".parse().unwrap(), vec![locator.addr])
        .await
        .unwrap();
    app.published().await;
    let (locator_handle, _lconn) = support::connect(locator.addr, MuxConfig::default()).await;
    let resolved = support::resolve(&locator_handle, "stopper", None)
        .await
        .unwrap();
    assert_eq!(resolved.endpoints[0].port, app.addr.port());

    let (handle, _conn) = support::connect(app.addr, MuxConfig::default()).await;
    let mut in_flight = support::enqueue(&handle, "work").await;
    started.recv().await.unwrap();

    let mut changes = registry.watch_services();
    let stopping = tokio::spawn(app.stop());
    changes
        .wait_for(|_| !registry.has_service("stopper"))
        .await
        .unwrap();

    // New requests on the existing connection: refused, safe to retry.
    let mut late = support::enqueue(&handle, "work").await;
    let error = error_of(&support::collect(&mut late).await);
    assert_eq!(error.code, ErrorCode::APP_STOPPED);
    assert!(error.code.is_never_delivered());
    assert!(!stopping.is_finished(), "stop waits for the open request");

    gate.add_permits(1);
    assert_eq!(
        support::collect(&mut in_flight).await,
        [StreamEvent::Write("finished".into()), StreamEvent::Close]
    );
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .unwrap()
        .unwrap();
    handle.closed().await;
}
