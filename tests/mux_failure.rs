//! Connection failure: every open channel learns how much of its request was
//! written; a corrupt frame fails only its own connection; drain.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::time::Duration;

use rpcgate::mux::{ChannelError, ConnectionError, Delivery, Invocation, MuxConfig};
use rpcgate::proto::{Args, Message, StreamEvent};

fn enqueue() -> Invocation {
    Invocation::enqueue(Message::new(0, Args::Bytes("http".into())))
}

fn lost(result: Option<Result<rpcgate::proto::Frame, ChannelError>>) -> ChannelError {
    match result {
        Some(Err(e)) => e,
        other => panic!("expected a channel error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_closing_mid_stream_reports_delivery_per_channel() {
    let (handle, mut peer, conn) = support::pair(MuxConfig::default()).await;

    // Complete: enqueue, write and close all written.
    let complete = handle.open(enqueue()).await.unwrap();
    let (tx, mut complete_rx) = complete.split();
    // Partial: the enqueue was written, the close never will be.
    let mut partial = handle.open(enqueue()).await.unwrap();

    let mut tx = Some(tx);
    // Wait on the peer for proof that these frames were written.
    if let Some(tx) = tx.as_mut() {
        tx.write("body").await.unwrap();
    }
    tx.take().unwrap().close().await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let f = peer.next_frame().await.unwrap();
        seen.push((f.channel, f.ty));
    }
    assert_eq!(seen, [(1, 0), (2, 0), (1, 0), (1, 2)]);

    // The peer answers the first channel halfway, then dies.
    peer.send(1, Message::write("half")).await;
    let first = complete_rx.recv().await.unwrap().unwrap();
    assert_eq!(
        first.stream_event().unwrap(),
        StreamEvent::Write("half".into())
    );
    drop(peer);

    let err = lost(complete_rx.recv().await);
    assert!(
        matches!(
            err,
            ChannelError::ConnectionLost {
                delivery: Delivery::Complete,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_retry_safe());
    let err = lost(partial.receiver.recv().await);
    assert!(
        matches!(
            err,
            ChannelError::ConnectionLost {
                delivery: Delivery::Partial,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_retry_safe());
    assert!(
        partial.receiver.recv().await.is_none(),
        "nothing after the error"
    );

    let cause = conn.await.unwrap().unwrap_err();
    assert!(matches!(
        *cause,
        ConnectionError::Eof | ConnectionError::Io(_)
    ));
    handle.closed().await;
    assert!(handle.is_closed());
    assert_eq!(handle.in_flight(), 0);
    // A closed connection refuses new channels: safe to retry elsewhere.
    let err = handle.open(enqueue()).await.unwrap_err();
    assert!(err.is_retry_safe());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_stuck_behind_a_blocked_write_are_not_sent() {
    let (handle, mut peer, _conn) = support::pair(MuxConfig::default()).await;
    // The peer reads the first enqueue, then stops reading: a 48 MiB chunk
    // cannot fit in the socket buffers, so the writer blocks mid-frame.
    let mut big = handle.open(enqueue()).await.unwrap();
    assert_eq!(peer.next_frame().await.unwrap().ty, 0);
    let sender = tokio::spawn(async move {
        big.sender.write(vec![b'x'; 48 << 20]).await.unwrap();
        big
    });
    let mut big = sender.await.unwrap();
    // Queued after the big frame: its bytes cannot have been written.
    let mut behind = handle.open(enqueue()).await.unwrap();
    behind.sender.write("small").await.unwrap();
    // Make sure the writer really is blocked: the peer's socket has data.
    let mut probe = [0u8; 1];
    assert_eq!(peer.stream.peek(&mut probe).await.unwrap(), 1);
    drop(peer); // unread data: the kernel resets the connection

    let err = lost(behind.receiver.recv().await);
    assert!(err.is_retry_safe(), "queued behind a blocked write: {err}");
    assert_eq!(err.delivery(), Some(Delivery::NotSent));
    let err = lost(big.receiver.recv().await);
    assert_eq!(err.delivery(), Some(Delivery::Partial), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_frame_fails_only_its_connection() {
    let (bad_handle, mut bad_peer, bad_conn) = support::pair(MuxConfig::default()).await;
    let (good_handle, mut good_peer, _good_conn) = support::pair(MuxConfig::default()).await;
    let mut bad = bad_handle.open(enqueue()).await.unwrap();
    let mut good = good_handle.open(enqueue()).await.unwrap();
    assert_eq!(bad_peer.next_frame().await.unwrap().channel, 1);
    assert_eq!(good_peer.next_frame().await.unwrap().channel, 1);

    // A frame whose header list references index 0: invalid (6/2 hpack).
    bad_peer
        .send_raw(&[0x94, 0x01, 0x00, 0x91, 0xa1, b'x', 0x91, 0x00])
        .await;
    let err = lost(bad.receiver.recv().await);
    let ChannelError::ConnectionLost { cause, delivery } = &err else {
        panic!("{err}");
    };
    assert_eq!(*delivery, Delivery::Partial);
    assert!(matches!(**cause, ConnectionError::Decode(_)), "{cause}");
    assert!(matches!(
        *bad_conn.await.unwrap().unwrap_err(),
        ConnectionError::Decode(_)
    ));

    good_peer.send(1, Message::write("fine")).await;
    let frame = good.receiver.recv().await.unwrap().unwrap();
    assert_eq!(
        frame.stream_event().unwrap(),
        StreamEvent::Write("fine".into())
    );
    assert!(!good_handle.is_closed());
}

#[tokio::test]
async fn a_message_the_protocol_forbids_fails_only_its_channel() {
    let (handle, mut peer, _conn) = support::pair(MuxConfig::default()).await;
    let mut a = handle.open(enqueue()).await.unwrap();
    let mut b = handle.open(enqueue()).await.unwrap();
    peer.next_frame().await.unwrap();
    peer.next_frame().await.unwrap();
    peer.send(1, Message::new(7, Args::Empty)).await;
    let err = lost(a.receiver.recv().await);
    assert!(matches!(err, ChannelError::UnexpectedMessage { ty: 7 }));
    peer.send(2, Message::close()).await;
    assert_eq!(
        b.receiver
            .recv()
            .await
            .unwrap()
            .unwrap()
            .stream_event()
            .unwrap(),
        StreamEvent::Close
    );
}

#[tokio::test]
async fn drain_refuses_new_channels_and_closes_after_the_last() {
    let (handle, mut peer, conn) = support::pair(MuxConfig::default()).await;
    let channel = handle.open(enqueue()).await.unwrap();
    let (tx, mut rx) = channel.split();
    tx.close().await.unwrap();
    handle.drain().await;
    assert!(matches!(
        handle.open(enqueue()).await,
        Err(ChannelError::Refused)
    ));
    assert!(!handle.is_closed(), "still serving the open channel");

    assert_eq!(peer.next_frame().await.unwrap().ty, 0);
    assert_eq!(peer.next_frame().await.unwrap().ty, 2);
    peer.send(1, Message::write("done")).await;
    peer.send(1, Message::close()).await;
    assert!(rx.recv().await.unwrap().is_ok());
    assert!(rx.recv().await.unwrap().is_ok());
    assert!(
        conn.await.unwrap().is_ok(),
        "a drained connection closes cleanly"
    );
    assert!(handle.close_cause().is_none());
    assert!(
        tokio::time::timeout(Duration::from_secs(10), peer.next_frame())
            .await
            .unwrap()
            .is_none(),
        "the peer sees EOF"
    );
}
