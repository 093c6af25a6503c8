use super::*;
use crate::proto::Message;

fn frame(n: u64) -> Frame {
    let mut buf = bytes::BytesMut::new();
    Message::write(n.to_string()).encode(n, &mut buf);
    let mut codec = crate::proto::FrameCodec::default();
    tokio_util::codec::Decoder::decode(&mut codec, &mut buf)
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn frames_arrive_in_order_then_the_end() {
    let (tx, mut rx) = channel(4);
    for n in 1..=3 {
        tx.try_send(frame(n)).unwrap();
    }
    drop(tx);
    for n in 1..=3 {
        assert_eq!(rx.recv().await.unwrap().channel, n);
    }
    assert!(rx.recv().await.is_none(), "ends after the queued frames");
}

#[tokio::test]
async fn a_full_queue_gives_the_frame_back_and_a_sender_waits_for_room() {
    let (tx, mut rx) = channel(2);
    tx.try_send(frame(1)).unwrap();
    tx.try_send(frame(2)).unwrap();
    let TrySendError::Full(back) = tx.try_send(frame(3)).unwrap_err() else {
        panic!("full");
    };
    assert_eq!(back.channel, 3);
    let waiter = tokio::spawn(async move {
        let ready = tx.ready().await;
        (ready, tx.try_send(back).is_ok())
    });
    assert_eq!(rx.recv().await.unwrap().channel, 1);
    assert_eq!(waiter.await.unwrap(), (true, true));
    assert_eq!(rx.recv().await.unwrap().channel, 2);
    assert_eq!(rx.recv().await.unwrap().channel, 3);
    assert!(rx.recv().await.is_none());
}

#[tokio::test]
async fn a_dropped_receiver_closes_the_queue_and_wakes_a_waiting_sender() {
    let (tx, rx) = channel(1);
    tx.try_send(frame(1)).unwrap();
    let clone = tx.clone();
    let waiter = tokio::spawn(async move { clone.ready().await });
    drop(rx);
    assert!(!waiter.await.unwrap(), "woken with `false`");
    assert!(matches!(tx.try_send(frame(2)), Err(TrySendError::Closed)));
}

#[tokio::test]
async fn the_queue_ends_only_when_every_sender_is_gone() {
    let (tx, mut rx) = channel(1);
    let clone = tx.clone();
    drop(tx);
    let receiver = tokio::spawn(async move {
        let first = rx.recv().await.map(|f| f.channel);
        (first, rx.recv().await.is_none())
    });
    clone.try_send(frame(7)).unwrap();
    drop(clone);
    assert_eq!(receiver.await.unwrap(), (Some(7), true));
}

#[tokio::test]
async fn a_queue_set_to_cut_drops_its_frames_and_ends_instead_of_waiting() {
    let (tx, mut rx) = channel(8);
    tx.try_send(frame(1)).unwrap();
    tx.try_send(frame(2)).unwrap();
    // Below the new capacity: still queued as usual.
    rx.cut_when_full(3);
    tx.try_send(frame(3)).unwrap();
    assert!(
        tx.ready().await,
        "a cutting queue never makes its producer wait"
    );
    assert!(matches!(tx.try_send(frame(4)), Err(TrySendError::Closed)));
    assert_eq!(rx.cut(), Some(Cut::Frames(3)));
    // What was queued is gone; the queue ends though a sender lives.
    assert!(rx.recv().await.is_none());
    assert!(matches!(tx.try_send(frame(5)), Err(TrySendError::Closed)));
    assert!(!tx.ready().await);
}

#[tokio::test]
async fn a_producer_waiting_for_room_is_released_when_the_queue_turns_to_cutting() {
    let (tx, mut rx) = channel(1);
    tx.try_send(frame(1)).unwrap();
    let waiting = tx.clone();
    let waiter = tokio::spawn(async move {
        let room = waiting.ready().await;
        (room, waiting.try_send(frame(2)).is_err())
    });
    tokio::task::yield_now().await;
    rx.cut_when_full(1);
    assert_eq!(waiter.await.unwrap(), (true, true));
    assert_eq!(rx.cut(), Some(Cut::Frames(1)));
    assert!(rx.recv().await.is_none());
}

/// A frame whose args hold `n` bytes (plus the message's own few).
fn big(channel: u64, n: usize) -> Frame {
    let mut buf = bytes::BytesMut::new();
    Message::write(vec![b'x'; n]).encode(channel, &mut buf);
    let mut codec = crate::proto::FrameCodec::default();
    tokio_util::codec::Decoder::decode(&mut codec, &mut buf)
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_budgeted_queue_never_makes_its_producer_wait_and_cuts_past_its_bound() {
    let budget = ReplyBudget::new(10_000, 1 << 20);
    let (tx, mut rx) = channel_with_budget(2, Some(&budget));
    // Past the frame capacity: still queued, never `Full`.
    for n in 0..4 {
        tx.try_send(big(n, 1000)).unwrap();
        assert!(tx.ready().await);
    }
    let held = budget.used();
    assert_eq!(held, 4 * cost(&big(0, 1000)));
    // One frame is taken: its bytes go back.
    assert_eq!(rx.recv().await.unwrap().channel, 0);
    assert_eq!(budget.used(), 3 * cost(&big(0, 1000)));
    // Past 10,000 bytes for this reply: cut, everything given back.
    let mut cut = false;
    for n in 4..20 {
        if tx.try_send(big(n, 1000)).is_err() {
            cut = true;
            break;
        }
    }
    assert!(cut);
    assert_eq!(rx.cut(), Some(Cut::Reply(10_000)));
    assert!(tx.is_cut());
    assert_eq!(budget.used(), 0);
    assert!(rx.recv().await.is_none(), "its frames are gone");
}

#[tokio::test]
async fn at_the_total_the_stalled_reply_holding_most_is_cut_not_the_reader_that_keeps_up() {
    let budget = ReplyBudget::new(1 << 20, 300_000);
    let signal = Arc::new(Notify::new());
    let (stalled_tx, stalled_rx) = channel_with_budget(64, Some(&budget));
    stalled_rx.notify_on_cut(Arc::clone(&signal));
    // The stalled reply takes 200 KB and is tracked.
    for n in 0..20 {
        stalled_tx.try_send(big(n, 10_000)).unwrap();
    }
    let (fast_tx, mut fast_rx) = channel_with_budget(64, Some(&budget));
    // The reader that keeps up gets 150 KB through, in frames it
    // takes as they come: at the total, the stalled one goes.
    for n in 0..15 {
        fast_tx.try_send(big(n, 10_000)).unwrap();
    }
    assert_eq!(stalled_rx.cut(), Some(Cut::Total(300_000)));
    signal.notified().await;
    for n in 0..15 {
        assert_eq!(fast_rx.recv().await.unwrap().channel, n);
    }
    assert!(fast_rx.cut().is_none());
    assert_eq!(budget.used(), 0);
}

#[tokio::test]
async fn a_dropped_budgeted_queue_gives_its_bytes_back() {
    let budget = ReplyBudget::new(1 << 20, 1 << 20);
    let (tx, rx) = channel_with_budget(64, Some(&budget));
    for n in 0..10 {
        tx.try_send(big(n, 10_000)).unwrap();
    }
    assert!(budget.used() >= 100_000);
    drop(rx);
    assert_eq!(budget.used(), 0);
    assert!(matches!(
        tx.try_send(big(11, 10)),
        Err(TrySendError::Closed)
    ));
}
