//! Publish, discard and disconnect make a service appear and disappear;
//! unknown names and bad input get the protocol's answers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::time::Duration;

use rpcgate::locator::{LocatorConfig, publish};
use rpcgate::mux::{Invocation, MuxConfig};
use rpcgate::proto::locator::{Endpoint, PublishRequest, method};
use rpcgate::proto::{Args, ErrorCode, Graph, Message, PrimitiveEvent, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

fn endpoint(port: u16) -> Endpoint {
    Endpoint {
        host: "127.0.0.1".into(),
        port,
    }
}

#[tokio::test]
async fn unknown_names_get_service_not_available() {
    let locator = support::start_locator(LocatorConfig::default()).await;
    let (handle, _conn) = support::connect(locator.addr, MuxConfig::default()).await;
    let error = support::resolve(&handle, "nope", None).await.unwrap_err();
    assert_eq!(error.code, ErrorCode::SERVICE_NOT_AVAILABLE);
    assert_eq!(error.to_string(), "[1]: service is not available");
}

#[tokio::test]
async fn publish_then_discard_and_publish_then_disconnect() {
    let locator = support::start_locator(LocatorConfig::default()).await;
    let registry = std::sync::Arc::clone(locator.registry());
    let (handle, _conn) = support::connect(locator.addr, MuxConfig::default()).await;
    let tracker = TaskTracker::new();
    let limit = Duration::from_secs(5);

    // Discard: the publication's explicit `discard`.
    let publication = publish(
        &[locator.addr],
        "svc",
        vec![endpoint(7001)],
        limit,
        &tracker,
    )
    .await
    .unwrap();
    let reply = support::resolve(&handle, "svc", None).await.unwrap();
    assert_eq!(reply.endpoints, [endpoint(7001)]);
    assert_eq!(reply.version, 1);
    assert_eq!(reply.graph, Graph::app());
    let mut changes = registry.watch_services();
    changes.borrow_and_update();
    publication.unpublish().await;
    changes
        .wait_for(|_| !registry.has_service("svc"))
        .await
        .unwrap();
    assert_eq!(
        support::resolve(&handle, "svc", None)
            .await
            .unwrap_err()
            .code,
        ErrorCode::SERVICE_NOT_AVAILABLE
    );

    // Disconnect: the publisher's socket closes without a discard.
    let publisher = TcpStream::connect(locator.addr).await.unwrap();
    let (pub_handle, pub_conn) = rpcgate::mux::from_tcp(publisher, MuxConfig::default()).unwrap();
    let pub_task = tokio::spawn(pub_conn.run());
    let request = PublishRequest {
        name: "svc".into(),
        endpoints: vec![endpoint(7002)],
        meta: None,
    };
    let invocation = Invocation::new(
        Message::new(method::PUBLISH, request.to_args()),
        Protocol::Discard,
        Protocol::Primitive,
    );
    let mut channel = pub_handle.open(invocation).await.unwrap();
    let frame = channel.receiver.recv().await.unwrap().unwrap();
    assert!(matches!(
        frame.primitive_event().unwrap(),
        PrimitiveEvent::Value(_)
    ));
    assert_eq!(
        support::resolve(&handle, "svc", None)
            .await
            .unwrap()
            .endpoints,
        [endpoint(7002)]
    );
    pub_task.abort(); // drops the socket: no discard is sent
    let _ = pub_task.await;
    std::mem::forget(channel); // its sender must not send a discard either
    changes
        .wait_for(|_| !registry.has_service("svc"))
        .await
        .unwrap();
}

#[tokio::test]
async fn version_zero_is_a_missing_version_error() {
    let locator = support::start_locator(LocatorConfig::default()).await;
    let (handle, _conn) = support::connect(locator.addr, MuxConfig::default()).await;
    let request = PublishRequest {
        name: "svc".into(),
        endpoints: vec![endpoint(1)],
        meta: Some((0, Graph::app())),
    };
    let invocation = Invocation::new(
        Message::new(method::PUBLISH, request.to_args()),
        Protocol::Discard,
        Protocol::Primitive,
    );
    let mut channel = handle.open(invocation).await.unwrap();
    let frame = channel.receiver.recv().await.unwrap().unwrap();
    let PrimitiveEvent::Error(error) = frame.primitive_event().unwrap() else {
        panic!("expected an error");
    };
    assert_eq!(error.code, ErrorCode::MISSING_VERSION);
    assert!(!locator.registry().has_service("svc"));
}

#[tokio::test]
async fn bad_input_closes_only_that_connection() {
    let locator = support::start_locator(support::locator_config(
        "[services.echo]\nendpoints = [\"127.0.0.1:41234\"]\n",
    ))
    .await;
    let (good, _conn) = support::connect(locator.addr, MuxConfig::default()).await;

    // Garbage that is not a frame: the connection is closed.
    let mut garbage = TcpStream::connect(locator.addr).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        garbage.read(&mut buf).await.unwrap_or(0),
        0,
        "closed without a reply"
    );

    // An unknown method id: closed, as the runtime does (slot_not_found).
    let mut unknown = TcpStream::connect(locator.addr).await.unwrap();
    unknown
        .write_all(&[0x94, 0x01, 0x2a, 0x90, 0x90])
        .await
        .unwrap();
    assert_eq!(unknown.read(&mut buf).await.unwrap_or(0), 0);

    // A channel id that does not increase: closed (revoked channel).
    let mut revoked = TcpStream::connect(locator.addr).await.unwrap();
    revoked
        .write_all(&[0x94, 0x05, 0x06, 0x90, 0x90])
        .await
        .unwrap();
    let n = revoked.read(&mut buf).await.unwrap();
    assert!(
        n > 3 && buf.starts_with(&[0x94, 0x05, 0x00]),
        "uuid on channel 5 is answered"
    );
    let mut rest = Vec::new();
    revoked
        .write_all(&[0x94, 0x05, 0x06, 0x90, 0x90])
        .await
        .unwrap();
    let _ = revoked.read_to_end(&mut rest).await;
    assert!(
        !rest.windows(3).any(|w| w == [0x94, 0x05, 0x00]),
        "channel 5 again is not answered; the connection is closed"
    );

    // Wrong argument shapes get invalid_argument; the connection stays.
    let invocation = Invocation::new(
        Message::new(method::RESOLVE, Args::Empty),
        Protocol::Terminal,
        Protocol::Primitive,
    );
    let mut channel = good.open(invocation).await.unwrap();
    let frame = channel.receiver.recv().await.unwrap().unwrap();
    let PrimitiveEvent::Error(error) = frame.primitive_event().unwrap() else {
        panic!("expected an error");
    };
    assert_eq!(error.code, ErrorCode::INVALID_ARGUMENT);

    // Through all of that, the well-behaved client is served.
    let reply = support::resolve(&good, "echo", None).await.unwrap();
    assert_eq!(reply.endpoints, [endpoint(41234)]);
}

#[tokio::test]
async fn cluster_uuid_refresh_and_connect_answer() {
    let config = LocatorConfig {
        uuid: Some("test-uuid".into()),
        ..LocatorConfig::default()
    };
    let locator = support::start_locator(config).await;
    let (handle, _conn) = support::connect(locator.addr, MuxConfig::default()).await;
    let call = |m: u64, rx: Protocol| {
        let handle = handle.clone();
        async move {
            let invocation = Invocation::new(Message::new(m, Args::Empty), Protocol::Terminal, rx);
            let mut channel = handle.open(invocation).await.unwrap();
            channel.receiver.recv().await.unwrap().unwrap()
        }
    };
    let uuid = call(method::UUID, Protocol::Primitive).await;
    assert_eq!(
        rpcgate::proto::locator::UuidArgs::decode_args(&uuid.args)
            .unwrap()
            .uuid,
        "test-uuid"
    );
    let cluster = call(method::CLUSTER, Protocol::Primitive).await;
    assert!(
        rpcgate::proto::locator::ClusterReply::decode_args(&cluster.args)
            .unwrap()
            .nodes
            .is_empty()
    );
    let connect = call(method::CONNECT, Protocol::Streaming).await;
    assert_eq!(
        connect.ty, 2,
        "no cluster: the connect stream closes at once"
    );
    let refresh = Invocation::new(
        Message::new(
            method::REFRESH,
            rpcgate::proto::locator::RefreshRequest {
                groups: vec!["g".into()],
            }
            .to_args(),
        ),
        Protocol::Terminal,
        Protocol::Primitive,
    );
    let mut channel = handle.open(refresh).await.unwrap();
    assert_eq!(
        channel.receiver.recv().await.unwrap().unwrap().ty,
        0,
        "value []"
    );
}

/// `rpcgate resolve`'s client: a published service's endpoints, counted
/// per resolve; an unknown name is the locator's error, named.
#[tokio::test]
async fn the_resolve_client_counts_answers_and_names_errors() {
    use rpcgate::locator::client::{ResolveError, resolve_split};
    let locator = support::start_locator(LocatorConfig::default()).await;
    let tracker = TaskTracker::new();
    let _publication = publish(
        &[locator.addr],
        "svc",
        vec![endpoint(7001), endpoint(7002)],
        Duration::from_secs(5),
        &tracker,
    )
    .await
    .unwrap();
    let split = resolve_split(locator.addr, "svc", None, 3).await.unwrap();
    assert_eq!(
        split.into_iter().collect::<Vec<_>>(),
        [("127.0.0.1:7001,127.0.0.1:7002".to_owned(), 3)]
    );
    let error = resolve_split(locator.addr, "nope", None, 1)
        .await
        .unwrap_err();
    assert!(matches!(error, ResolveError::Remote { .. }), "{error:?}");
    assert_eq!(error.to_string(), "`nope`: [1]: service is not available");
}
