//! 1,000 concurrent channels on one connection, replies interleaved across
//! channels, ids strictly increasing on the wire.

#![allow(clippy::unwrap_used, clippy::expect_used)] // in tests a failed unwrap is a failed test

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use rpcgate::mux::{Invocation, MuxConfig};
use rpcgate::proto::{Args, Message, StreamEvent};

const CHANNELS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_channels_with_interleaved_replies() {
    let (handle, mut peer, conn) = support::pair(MuxConfig::default()).await;

    // The peer collects every request, checks ids, then answers all of them
    // at once with each channel's frames interleaved with every other's.
    let peer_task = tokio::spawn(async move {
        let mut first_seen = Vec::new();
        let mut bodies: HashMap<u64, Bytes> = HashMap::new();
        let mut closed = 0;
        while closed < CHANNELS {
            let frame = peer.next_frame().await.expect("peer stream ended early");
            match frame.ty {
                0 if !bodies.contains_key(&frame.channel)
                    && !first_seen.contains(&frame.channel) =>
                {
                    assert_eq!(frame.chunk().unwrap(), "echo", "enqueue event");
                    first_seen.push(frame.channel);
                }
                0 => {
                    bodies.insert(frame.channel, frame.chunk().unwrap());
                }
                2 => closed += 1,
                other => panic!("unexpected type {other}"),
            }
        }
        assert!(
            first_seen.windows(2).all(|w| w[0] < w[1]),
            "channel ids must reach the wire strictly increasing"
        );
        assert_eq!(first_seen[0], 1, "the first id on a connection is 1");
        // Round-robin replies: part 1 for all, part 2 for all, close for all,
        // walking the channels in reverse so no channel is answered in order.
        for part in 0..2 {
            for id in first_seen.iter().rev() {
                let body = &bodies[id];
                let half = body.len() / 2;
                let chunk = if part == 0 {
                    body.slice(..half)
                } else {
                    body.slice(half..)
                };
                peer.send(*id, Message::write(chunk)).await;
            }
        }
        for id in &first_seen {
            peer.send(*id, Message::close()).await;
        }
        (first_seen, peer)
    });

    let mut clients = Vec::new();
    for i in 0..CHANNELS {
        let handle = handle.clone();
        clients.push(tokio::spawn(async move {
            let message = Message::new(0, Args::Bytes("echo".into()));
            let channel = handle.open(Invocation::enqueue(message)).await.unwrap();
            let id = channel.id();
            let (mut tx, mut rx) = channel.split();
            let body = format!("request {i} on channel {id} ").repeat(i % 7 + 1);
            tx.write(body.clone()).await.unwrap();
            tx.close().await.unwrap();
            let mut got = Vec::new();
            while let Some(frame) = rx.recv().await {
                match frame.unwrap().stream_event().unwrap() {
                    StreamEvent::Write(chunk) => got.extend_from_slice(&chunk),
                    StreamEvent::Close => {}
                    StreamEvent::Error(e) => panic!("channel {id} failed: {e}"),
                }
            }
            assert_eq!(got, body.as_bytes(), "channel {id} got its own reply");
            id
        }));
    }
    let mut ids = Vec::new();
    for client in clients {
        ids.push(client.await.unwrap());
    }
    // Keep the peer's socket open: the close must come from our side.
    let (wire_ids, mut peer) = peer_task.await.unwrap();
    ids.sort_unstable();
    let mut sorted_wire = wire_ids.clone();
    sorted_wire.sort_unstable();
    assert_eq!(
        ids, sorted_wire,
        "every channel reached the peer exactly once"
    );
    assert_eq!(handle.in_flight(), 0, "finished channels leave the table");
    drop(handle);
    assert!(
        conn.await.unwrap().is_ok(),
        "the last handle closes the connection cleanly"
    );
    assert!(peer.next_frame().await.is_none(), "the peer sees EOF");
}
