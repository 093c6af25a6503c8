//! The frame queue: owns the hand-off of one channel's frames from the task
//! that reads the socket to the channel's owner. Bounded, one consumer, and
//! a producer that can wait for room.
//!
//! Every request gets one, so it is made to be cheap to create: one small
//! allocation, growing only with the frames actually queued. (A tokio
//! `mpsc` channel allocates a block of 32 slots up front; in the load
//! profile, creating and filling those was a visible share of a request.)
//! Both ends take a short uncontended lock per operation.
//!
//! A queue made with a [`ReplyBudget`] ([`channel_with_budget`]) never
//! makes its producer wait: it holds frames up to the budget's bytes per
//! reply, and is cut past them, or when the budget's total is reached and
//! it holds the most (see [`super::reply_budget`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

use super::reply_budget::{Holder, ReplyBudget, Reserved, TRACKED_FROM};
use crate::proto::Frame;

/// What a queued frame costs against a [`ReplyBudget`] beyond its args:
/// the `Frame` itself, its slot in the queue and its buffer's handle,
/// rounded up, so that many tiny frames cannot hide behind a small byte
/// count.
const FRAME_COST: usize = 128;

/// A budgeted queue holding this much copies the frames it queues out of
/// the connection's read buffer, so that a reader that falls behind holds
/// only the bytes it was counted for, never whole read buffers its frames
/// point into (the 1,000-stalled-reader drill measured 1.6 GB of RSS
/// against a 512 MiB budget with this at 1 MiB). A reader that keeps up
/// never holds this much, and pays no copy.
const COMPACT_FROM: usize = TRACKED_FROM;

/// Why a queue was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// `cut_when_full`: this many frames were queued unread.
    Frames(usize),
    /// It would have held more than the budget's bytes per reply.
    Reply(usize),
    /// The budget's total was reached, and it held the most.
    Total(usize),
}

/// The bytes a frame costs against the budget.
fn cost(frame: &Frame) -> usize {
    frame.args.len() + FRAME_COST
}

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
    /// The queue was cut, and why: its frames are gone, and the receiver
    /// learns it at the end.
    cut: Option<Cut>,
    /// The receiver, waiting for a frame or the end.
    receiver: Option<Waker>,
    /// A sender waiting for room.
    sender: Option<Waker>,
    /// The budget this queue's bytes count against, if any.
    budget: Option<Budgeted>,
    /// Notified when the queue is cut (see [`FrameReceiver::notify_on_cut`]).
    on_cut: Option<Arc<Notify>>,
}

/// A queue's share of a [`ReplyBudget`].
#[derive(Debug)]
struct Budgeted {
    budget: ReplyBudget,
    key: u64,
    /// Bytes of the budget its frames hold.
    bytes: usize,
    /// Whether the budget tracks it as a candidate to cut.
    tracked: bool,
}

impl State {
    /// Cuts the queue for `why`: the frames go (returned, to be dropped
    /// outside the lock), their bytes go back to the budget, and the
    /// receiver (waker returned) and the cut signal learn it.
    fn cut(&mut self, why: Cut) -> (VecDeque<Frame>, Option<Waker>) {
        self.cut = Some(why);
        if let Some(b) = &mut self.budget {
            b.budget.release(std::mem::take(&mut b.bytes));
        }
        if let Some(signal) = &self.on_cut {
            signal.notify_one();
        }
        crate::metrics::limit_hit("slow_client");
        (std::mem::take(&mut self.frames), self.receiver.take())
    }

    /// Takes the next frame, giving its bytes back to the budget.
    fn pop(&mut self) -> Option<Frame> {
        let frame = self.frames.pop_front()?;
        if let Some(b) = &mut self.budget {
            let n = cost(&frame);
            b.bytes -= n;
            b.budget.release(n);
        }
        Some(frame)
    }
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

impl Holder for Shared {
    fn held(&self) -> usize {
        self.lock().budget.as_ref().map_or(0, |b| b.bytes)
    }

    fn evict(&self) -> bool {
        let (frames, waker) = {
            let mut state = self.lock();
            if state.cut.is_some() || !state.receiver_alive {
                return false;
            }
            let total = state.budget.as_ref().map_or(0, |b| b.budget.total());
            state.cut(Cut::Total(total))
        };
        drop(frames);
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = &mut state.budget {
            b.budget.release(std::mem::take(&mut b.bytes));
            if b.tracked {
                b.budget.untrack(b.key);
            }
        }
    }
}

/// A queue holding at most `capacity` frames (at least one).
pub(crate) fn channel(capacity: usize) -> (FrameSender, FrameReceiver) {
    channel_with_budget(capacity, None)
}

/// A queue whose bytes count against `budget`, when given: then it never
/// makes its producer wait, and `capacity` applies only once the receiver
/// asks to be cut when full. Without a budget, as [`channel`].
pub(crate) fn channel_with_budget(
    capacity: usize,
    budget: Option<&ReplyBudget>,
) -> (FrameSender, FrameReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            frames: VecDeque::new(),
            capacity: capacity.max(1),
            senders: 1,
            receiver_alive: true,
            cut_when_full: false,
            cut: None,
            receiver: None,
            sender: None,
            budget: budget.map(|budget| Budgeted {
                budget: budget.clone(),
                key: budget.key(),
                bytes: 0,
                tracked: false,
            }),
            on_cut: None,
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
    /// A budgeted queue is never full: past its bounds it is cut.
    pub(crate) fn try_send(&self, mut frame: Frame) -> Result<(), TrySendError> {
        let mut state = self.shared.lock();
        if !state.receiver_alive || state.cut.is_some() {
            return Err(TrySendError::Closed);
        }
        if state.frames.len() >= state.capacity {
            if state.cut_when_full {
                let capacity = state.capacity;
                return Err(self.cut_locked(state, Cut::Frames(capacity)));
            }
            if state.budget.is_none() {
                return Err(TrySendError::Full(frame));
            }
        }
        let mut track = None;
        if let Some(b) = &state.budget {
            let n = cost(&frame);
            let per_reply = b.budget.per_reply();
            if b.bytes + n > per_reply {
                return Err(self.cut_locked(state, Cut::Reply(per_reply)));
            }
            // Below the total (the usual case) the bytes are taken under
            // this lock; at it, reserving may cut another queue, which
            // takes that queue's lock: never while holding this one.
            if !b.budget.try_take(n) {
                let (budget, key, held) = (b.budget.clone(), b.key, b.bytes);
                drop(state);
                let reserved = budget.reserve(n, held, Some(key));
                state = self.shared.lock();
                if reserved == Reserved::No {
                    if state.cut.is_some() || !state.receiver_alive {
                        return Err(TrySendError::Closed);
                    }
                    let total = budget.total();
                    return Err(self.cut_locked(state, Cut::Total(total)));
                }
                if state.cut.is_some() || !state.receiver_alive {
                    budget.release(n);
                    return Err(TrySendError::Closed);
                }
            }
            if let Some(b) = &mut state.budget {
                if b.bytes >= COMPACT_FROM {
                    frame.args = bytes::Bytes::copy_from_slice(&frame.args);
                }
                b.bytes += n;
                if b.bytes >= TRACKED_FROM && !b.tracked {
                    b.tracked = true;
                    track = Some((b.budget.clone(), b.key));
                }
            }
        }
        state.frames.push_back(frame);
        let waker = state.receiver.take();
        drop(state);
        if let Some((budget, key)) = track {
            let holder: Weak<dyn Holder> =
                Arc::downgrade(&(Arc::clone(&self.shared) as Arc<dyn Holder>));
            budget.track(key, holder);
        }
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Cuts the queue (locked in `state`) for `why`; what the producer
    /// is told.
    fn cut_locked(&self, mut state: MutexGuard<'_, State>, why: Cut) -> TrySendError {
        let (frames, waker) = state.cut(why);
        drop(state);
        drop(frames);
        if let Some(waker) = waker {
            waker.wake();
        }
        TrySendError::Closed
    }

    /// Whether the queue was cut for a slow receiver.
    pub(crate) fn is_cut(&self) -> bool {
        self.shared.lock().cut.is_some()
    }

    /// Ready with `true` once there is room, `false` if the receiver is
    /// gone. One waiting sender at a time is woken.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<bool> {
        let mut state = self.shared.lock();
        if !state.receiver_alive || state.cut.is_some() {
            return Poll::Ready(false);
        }
        // A queue that cuts when full (or is budgeted) never makes its
        // producer wait.
        if state.frames.len() < state.capacity || state.cut_when_full || state.budget.is_some() {
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
        if let Some(frame) = state.pop() {
            let waker = state.sender.take();
            drop(state);
            if let Some(waker) = waker {
                waker.wake();
            }
            return Poll::Ready(Some(frame));
        }
        if state.senders == 0 || state.cut.is_some() {
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
    /// ([`FrameReceiver::cut`] then says why). For a stream whose
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

    /// Why the queue was cut, if it was (see
    /// [`FrameReceiver::cut_when_full`] and [`channel_with_budget`]).
    pub(crate) fn cut(&self) -> Option<Cut> {
        self.shared.lock().cut
    }

    /// Notifies `signal` (once) when the queue is cut; at once if it was
    /// already.
    pub(crate) fn notify_on_cut(&self, signal: Arc<Notify>) {
        let mut state = self.shared.lock();
        if state.cut.is_some() {
            signal.notify_one();
        }
        state.on_cut = Some(signal);
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
            if let Some(b) = &mut state.budget {
                b.budget.release(std::mem::take(&mut b.bytes));
            }
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
mod tests;
