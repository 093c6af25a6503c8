//! Cancellation: dropping a channel whose send side is open sends
//! `error [[7, 3], ...]`; late frames for it are dropped; nothing can be
//! sent after a terminal message.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use rpcgate::mux::{ChannelError, Invocation, MuxConfig};
use rpcgate::proto::{Args, ErrorCode, Message, Protocol, RemoteError, StreamEvent};

fn enqueue(event: &'static str) -> Invocation {
    Invocation::enqueue(Message::new(0, Args::Bytes(event.into())))
}

#[tokio::test]
async fn dropping_an_open_channel_sends_the_cancel_error() {
    let (handle, mut peer, _conn) = support::pair(MuxConfig::default()).await;
    let mut channel = handle.open(enqueue("slow")).await.unwrap();
    channel.sender.write("request").await.unwrap();
    let enqueue_frame = peer.next_frame().await.unwrap();
    assert_eq!(peer.next_frame().await.unwrap().ty, 0, "the write");
    let id = enqueue_frame.channel;
    drop(channel);

    let cancel = peer.next_frame().await.unwrap();
    assert_eq!(
        (cancel.channel, cancel.ty),
        (id, 1),
        "an error on the same channel"
    );
    let StreamEvent::Error(error) = cancel.stream_event().unwrap() else {
        panic!("expected an error frame");
    };
    assert_eq!(error.code, ErrorCode::NOT_CONNECTED);
    assert!(error.message.is_some());

    // Late frames from the app for the cancelled channel are dropped; a new
    // channel on the same connection works and gets only its own frames.
    peer.send(id, Message::write("late")).await;
    peer.send(id, Message::close()).await;
    let mut second = handle.open(enqueue("fast")).await.unwrap();
    let second_id = peer.next_frame().await.unwrap().channel;
    assert!(second_id > id);
    peer.send(second_id, Message::write("mine")).await;
    peer.send(second_id, Message::close()).await;
    let frame = second.receiver.recv().await.unwrap().unwrap();
    assert_eq!(
        frame.stream_event().unwrap(),
        StreamEvent::Write("mine".into())
    );
    assert_eq!(
        second
            .receiver
            .recv()
            .await
            .unwrap()
            .unwrap()
            .stream_event()
            .unwrap(),
        StreamEvent::Close
    );
    assert!(second.receiver.recv().await.is_none());
}

#[tokio::test]
async fn dropping_after_close_sends_nothing_more() {
    let (handle, mut peer, _conn) = support::pair(MuxConfig::default()).await;
    let channel = handle.open(enqueue("x")).await.unwrap();
    let (tx, rx) = channel.split();
    tx.close().await.unwrap();
    drop(rx);
    assert_eq!(peer.next_frame().await.unwrap().ty, 0);
    let close = peer.next_frame().await.unwrap();
    assert_eq!(close.ty, 2);
    // A marker channel proves nothing was queued between them.
    let _marker = handle.open(enqueue("marker")).await.unwrap();
    let next = peer.next_frame().await.unwrap();
    assert_eq!(next.chunk().unwrap(), "marker", "no cancel after close");
}

#[tokio::test]
async fn publish_style_channels_cancel_with_discard() {
    let (handle, mut peer, _conn) = support::pair(MuxConfig::default()).await;
    let invocation = Invocation::new(
        Message::new(4, Args::Bytes("name".into())),
        Protocol::Discard,
        Protocol::Primitive,
    );
    let channel = handle.open(invocation).await.unwrap();
    assert_eq!(peer.next_frame().await.unwrap().ty, 4);
    drop(channel);
    let discard = peer.next_frame().await.unwrap();
    assert_eq!(discard.ty, 0, "discard");
    assert_eq!(&discard.args[..], b"\x90", "discard carries no args");
}

#[tokio::test]
async fn nothing_can_be_sent_after_a_terminal_message() {
    let (handle, mut peer, _conn) = support::pair(MuxConfig::default()).await;
    // `resolve`: our side is terminal right after the opening message.
    let invocation = Invocation::new(
        Message::new(0, Args::Bytes("echo".into())),
        Protocol::Terminal,
        Protocol::Primitive,
    );
    let mut channel = handle.open(invocation).await.unwrap();
    let err = channel.sender.write("more").await.unwrap_err();
    assert!(matches!(
        err,
        ChannelError::NotAllowed {
            ty: 0,
            state: Protocol::Terminal
        }
    ));
    let err = channel
        .sender
        .send(Message::error(
            1,
            RemoteError::new(ErrorCode::NOT_CONNECTED, "x"),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, ChannelError::NotAllowed { .. }));
    // An enqueue stream after an error: the same.
    let mut stream = handle.open(enqueue("x")).await.unwrap();
    stream.sender.send(Message::close()).await.unwrap();
    assert!(matches!(
        stream.sender.write("late").await,
        Err(ChannelError::NotAllowed { .. })
    ));
    // The peer saw exactly: resolve, enqueue, close.
    let types: Vec<_> = [
        peer.next_frame().await.unwrap(),
        peer.next_frame().await.unwrap(),
        peer.next_frame().await.unwrap(),
    ]
    .iter()
    .map(|f| (f.channel, f.ty))
    .collect();
    assert_eq!(types, [(1, 0), (2, 0), (2, 2)]);
}

#[tokio::test]
async fn oversized_and_invalid_messages_are_refused_before_the_wire() {
    let config = MuxConfig {
        max_frame_len: 1024,
        ..MuxConfig::default()
    };
    let (handle, mut peer, _conn) = support::pair(config).await;
    let mut channel = handle.open(enqueue("x")).await.unwrap();
    let err = channel.sender.write(vec![0u8; 4096]).await.unwrap_err();
    assert!(matches!(err, ChannelError::Encode(_)));
    assert_eq!(err.delivery(), Some(rpcgate::mux::Delivery::NotSent));
    channel.sender.write("fits").await.unwrap();
    assert_eq!(peer.next_frame().await.unwrap().ty, 0, "enqueue");
    assert_eq!(peer.next_frame().await.unwrap().chunk().unwrap(), "fits");
}

#[tokio::test]
async fn a_first_chunk_handed_over_with_the_open_follows_it_on_the_wire() {
    let (handle, mut peer, _conn) = support::pair(MuxConfig::default()).await;
    let channel = handle
        .open(enqueue("x").then(Message::write("request")))
        .await
        .unwrap();
    assert_eq!(
        channel.sender.state(),
        Protocol::Streaming,
        "the write is accounted for"
    );
    let open = peer.next_frame().await.unwrap();
    let chunk = peer.next_frame().await.unwrap();
    assert_eq!((open.channel, open.ty), (channel.id(), 0));
    assert_eq!((chunk.channel, chunk.ty), (channel.id(), 0));
    assert_eq!(
        chunk.stream_event().unwrap(),
        StreamEvent::Write("request".into())
    );
    // It counts as sent: `close` after it is the next frame.
    channel.sender.close().await.unwrap();
    assert_eq!(peer.next_frame().await.unwrap().ty, 2);
}

#[tokio::test]
async fn a_follow_up_our_protocol_forbids_is_refused_and_nothing_is_written() {
    let (handle, mut peer, _conn) = support::pair(MuxConfig::default()).await;
    // `resolve`-like: our side is terminal once opened.
    let terminal = Invocation::new(
        Message::new(0, Args::Bytes("name".into())),
        Protocol::Terminal,
        Protocol::Streaming,
    )
    .then(Message::write("more"));
    let err = handle.open(terminal).await.unwrap_err();
    assert!(matches!(err, ChannelError::NotAllowed { .. }), "{err:?}");
    // The next channel is the first frame the peer sees.
    let _marker = handle.open(enqueue("marker")).await.unwrap();
    let next = peer.next_frame().await.unwrap();
    assert_eq!(
        next.chunk().unwrap(),
        "marker",
        "the refused open wrote nothing"
    );
}

/// The connection task takes the cancels of channels dropped together in
/// one wake-up (it lets the other ready tasks queue theirs first): every
/// one of them still reaches the wire, and a cancel after the burst wakes
/// the task again.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn cancels_dropped_together_all_reach_the_wire_and_later_ones_still_wake_the_task() {
    const BURST: usize = 32;
    let (handle, mut peer, _conn) = support::pair(MuxConfig::default()).await;
    let mut channels = Vec::new();
    for _ in 0..BURST {
        channels.push(handle.open(enqueue("slow")).await.unwrap());
    }
    let mut open = std::collections::BTreeSet::new();
    for _ in 0..BURST {
        open.insert(peer.next_frame().await.unwrap().channel);
    }
    assert_eq!(handle.in_flight(), BURST);
    // Each dropped by its own task, all ready at once: the first wakes the
    // connection task, the rest are queued while it gathers.
    let drops: Vec<_> = channels
        .into_iter()
        .map(|channel| tokio::spawn(async move { drop(channel) }))
        .collect();
    for dropped in drops {
        dropped.await.unwrap();
    }
    let within = std::time::Duration::from_secs(10);
    for _ in 0..BURST {
        let frame = tokio::time::timeout(within, peer.next_frame())
            .await
            .expect("every cancel of the burst is written")
            .unwrap();
        assert_eq!(frame.ty, 1, "an error frame");
        assert!(open.remove(&frame.channel), "one cancel per channel");
    }
    assert!(open.is_empty());

    let later = handle.open(enqueue("slow")).await.unwrap();
    let id = peer.next_frame().await.unwrap().channel;
    drop(later);
    let frame = tokio::time::timeout(within, peer.next_frame())
        .await
        .expect("a cancel after the burst wakes the task")
        .unwrap();
    assert_eq!((frame.channel, frame.ty), (id, 1));
}
