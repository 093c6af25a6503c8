//! The frame queue: owns the hand-off of one channel's frames from the task
//! that reads the socket to the channel's owner. Bounded, one consumer, and
//! a producer that can wait for room.
//!
//! Every request gets one, so it is made to be cheap to create: one small
//! allocation, growing only with the frames actually queued. (A tokio
//! `mpsc` channel allocates a block of 32 slots up front; in the load
//! profile, creating and filling those was a visible share of a request.)
//! Both ends take a short uncontended lock per operation.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::proto::Frame;

/// Why [`FrameSender::try_send`] gave a frame back.
#[derive(Debug)]
pub(crate) enum TrySendError {
    /// The queue holds its capacity: wait with [`FrameSender::ready`].
    Full(Frame),
    /// The receiver is gone, or the queue was full and its receiver asked
    /// to be cut rather than waited for ([`FrameReceiver::cut_when_full`]):
    /// the frame is dropped, and the producer stops delivering.
    Closed,
}

#[derive(Debug)]
struct State {
    frames: VecDeque<Frame>,
    capacity: usize,
    senders: usize,
    receiver_alive: bool,
    /// A full queue cuts the receiver instead of making the producer wait.
    cut_when_full: bool,
    /// The queue was cut that way: its frames are gone, and the receiver
    /// learns it at the end.
    overflowed: bool,
    /// The receiver, waiting for a frame or the end.
    receiver: Option<Waker>,
    /// A sender waiting for room.
    sender: Option<Waker>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A queue holding at most `capacity` frames (at least one).
pub(crate) fn channel(capacity: usize) -> (FrameSender, FrameReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            frames: VecDeque::new(),
            capacity: capacity.max(1),
            senders: 1,
            receiver_alive: true,
            cut_when_full: false,
            overflowed: false,
            receiver: None,
            sender: None,
        }),
    });
    (
        FrameSender {
            shared: Arc::clone(&shared),
        },
        FrameReceiver { shared },
    )
}

/// The producing end; cloneable. The queue ends (after the frames in it)
/// when every sender is dropped.
#[derive(Debug)]
pub(crate) struct FrameSender {
    shared: Arc<Shared>,
}

impl FrameSender {
    /// Queues `frame` unless the queue is full or the receiver is gone.
    pub(crate) fn try_send(&self, frame: Frame) -> Result<(), TrySendError> {
        let waker = {
            let mut state = self.shared.lock();
            if !state.receiver_alive || state.overflowed {
                return Err(TrySendError::Closed);
            }
            if state.frames.len() >= state.capacity {
                if !state.cut_when_full {
                    return Err(TrySendError::Full(frame));
                }
                // Cut: what is queued goes (outside the lock), and the
                // receiver wakes to learn it.
                state.overflowed = true;
                let frames = std::mem::take(&mut state.frames);
                let waker = state.receiver.take();
                drop(state);
                drop(frames);
                drop(frame);
                if let Some(waker) = waker {
                    waker.wake();
                }
                return Err(TrySendError::Closed);
            }
            state.frames.push_back(frame);
            state.receiver.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Ready with `true` once there is room, `false` if the receiver is
    /// gone. One waiting sender at a time is woken.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = self.shared.lock();
        if !state.receiver_alive || state.overflowed {
            return Poll::Ready(false);
        }
        // A queue that cuts when full never makes its producer wait.
        if state.frames.len() < state.capacity || state.cut_when_full {
            return Poll::Ready(true);
        }
        state.sender = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Waits for room: `true`, or `false` if the receiver is gone. With a
    /// single producer, the next [`FrameSender::try_send`] then succeeds.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub(crate) async fn ready(&self) -> bool {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }
}

impl Clone for FrameSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for FrameSender {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            if state.senders > 0 {
                return;
            }
            state.receiver.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The consuming end.
#[derive(Debug)]
pub(crate) struct FrameReceiver {
    shared: Arc<Shared>,
}

impl FrameReceiver {
    /// The next frame; `None` once every sender is gone and the queue is
    /// empty.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let mut state = self.shared.lock();
        if let Some(frame) = state.frames.pop_front() {
            let waker = state.sender.take();
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
            return Poll::Ready(Some(frame));
        }
        if state.senders == 0 || state.overflowed {
            return Poll::Ready(None);
        }
        if !state
            .receiver
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.receiver = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// From now on, a frame that finds the queue holding `capacity` frames
    /// cuts the queue instead of waiting for room: the frames queued are
    /// dropped, the producer stops delivering, and the queue ends
    /// ([`FrameReceiver::overflowed`] then says why). For a stream whose
    /// slow consumer must not hold up the producer's other queues.
    pub(crate) fn cut_when_full(&mut self, capacity: usize) {
        let waker = {
            let mut state = self.shared.lock();
            state.cut_when_full = true;
            state.capacity = capacity.max(1);
            state.sender.take()
        };
        // A producer waiting for room re-checks, and cuts if still full.
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether the queue was cut because it was full (see
    /// [`FrameReceiver::cut_when_full`]).
    pub(crate) fn overflowed(&self) -> bool {
        self.shared.lock().overflowed
    }

    /// See [`FrameReceiver::poll_recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a frame is taken only when returned.
    pub(crate) async fn recv(&mut self) -> Option<Frame> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl Drop for FrameReceiver {
    fn drop(&mut self) {
        let (frames, waker) = {
            let mut state = self.shared.lock();
            state.receiver_alive = false;
            (std::mem::take(&mut state.frames), state.sender.take())
        };
        // Frames are dropped outside the lock.
        drop(frames);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Waits for room in `queue`: `true`, or `false` if its receiver is gone.
/// With no queue it never completes (a disabled `select!` branch).
pub(crate) async fn room(queue: Option<&FrameSender>) -> bool {
    match queue {
        Some(queue) => queue.ready().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
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
        assert!(rx.overflowed());
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
        assert!(rx.overflowed());
        assert!(rx.recv().await.is_none());
    }
}
