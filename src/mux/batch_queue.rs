//! The batch queue: owns the hand-off of work from many producers to the
//! one task that serves a connection — a mux connection's commands, a
//! session's replies. Bounded, with producers that wait for room.
//!
//! The consumer takes everything queued in one lock and then works through
//! that batch without locking again, so a busy connection pays one lock per
//! wake-up rather than one per item. (A tokio `mpsc` channel takes its
//! semaphore's lock for every item received; in the load profile the two
//! queues every request passes through were a visible share of a request.)
//! Producers take a short uncontended lock per hand-off, and a hand-off may
//! carry several items at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

/// The consumer is gone or closed the queue: nothing more is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    /// Room promised to producers holding a [`Permit`].
    reserved: usize,
    capacity: usize,
    open: bool,
    /// The consumer, waiting for an item or the end.
    receiver: Option<Waker>,
    /// Producers waiting for room.
    waiting: usize,
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    senders: AtomicUsize,
    /// Wakes producers waiting for room (only when some are).
    room: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A queue holding at most `capacity` items (at least one) besides the batch
/// its consumer has already taken.
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            reserved: 0,
            capacity: capacity.max(1),
            open: true,
            receiver: None,
            waiting: 0,
        }),
        senders: AtomicUsize::new(1),
        room: Notify::new(),
    });
    (
        Sender {
            shared: Arc::clone(&shared),
        },
        Receiver {
            shared,
            batch: VecDeque::new(),
        },
    )
}

/// A producing end; cloneable. The queue ends (after the items in it) when
/// every sender is dropped.
#[derive(Debug)]
pub(crate) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Waits for room for one item.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting, nothing was reserved.
    pub(crate) async fn reserve(&self) -> Result<Permit<'_, T>, Closed> {
        self.reserve_many(1).await
    }

    /// Waits for room for `n` items at once (a request larger than the
    /// capacity waits for an empty queue).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting, nothing was reserved.
    pub(crate) async fn reserve_many(&self, n: usize) -> Result<Permit<'_, T>, Closed> {
        loop {
            let notified = self.shared.room.notified();
            let mut notified = std::pin::pin!(notified);
            {
                let mut state = self.shared.lock();
                if !state.open {
                    return Err(Closed);
                }
                if state.items.len() + state.reserved + n <= state.capacity.max(n) {
                    state.reserved += n;
                    return Ok(Permit {
                        sender: self,
                        slots: n,
                    });
                }
                // Registered before the lock is released: a batch taken
                // after this point wakes us.
                notified.as_mut().enable();
                state.waiting += 1;
            }
            let waiting = Waiting(&self.shared);
            notified.await;
            drop(waiting);
        }
    }

    /// Waits for room, then queues `item`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while waiting, nothing was queued.
    pub(crate) async fn send(&self, item: T) -> Result<(), Closed> {
        self.reserve().await?.send(item);
        Ok(())
    }
}

/// Counts a producer as waiting for room while it exists.
struct Waiting<'a, T>(&'a Shared<T>);

impl<T> Drop for Waiting<'_, T> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) != 1 {
            return;
        }
        // The last one: the consumer sees the end once the queue is empty.
        let waker = self.shared.lock().receiver.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Room reserved for one or more items. Dropping it unused gives the room
/// back.
#[derive(Debug)]
pub(crate) struct Permit<'a, T> {
    sender: &'a Sender<T>,
    slots: usize,
}

impl<T> Permit<'_, T> {
    /// Queues `item` (the unused rest of the room is given back).
    pub(crate) fn send(self, item: T) {
        self.send_all([item]);
    }

    /// Queues `items`, in order, in one hand-off. They should number no
    /// more than the room reserved; any beyond it are queued anyway.
    pub(crate) fn send_all(mut self, items: impl IntoIterator<Item = T>) {
        let shared = &self.sender.shared;
        let (waker, notify) = {
            let mut state = shared.lock();
            state.reserved -= self.slots;
            self.slots = 0;
            if state.open {
                state.items.extend(items);
            }
            (state.receiver.take(), state.waiting > 0)
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        if notify {
            shared.room.notify_waiters();
        }
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        if self.slots == 0 {
            return;
        }
        let shared = &self.sender.shared;
        let notify = {
            let mut state = shared.lock();
            state.reserved -= self.slots;
            state.waiting > 0
        };
        if notify {
            shared.room.notify_waiters();
        }
    }
}

/// The consuming end.
#[derive(Debug)]
pub(crate) struct Receiver<T> {
    shared: Arc<Shared<T>>,
    /// The items taken in the last lock, not yet returned.
    batch: VecDeque<T>,
}

impl<T> Receiver<T> {
    /// Moves everything queued into `batch` in one lock and wakes producers
    /// waiting for room; whether anything was queued. With the sender
    /// count, it tells whether the queue ended: `(taken, ended)`.
    fn take_batch(&mut self, waker: Option<&Waker>) -> (bool, bool) {
        let mut state = self.shared.lock();
        if state.items.is_empty() {
            if self.shared.senders.load(Ordering::Acquire) == 0 {
                return (false, true);
            }
            if let Some(waker) = waker {
                if !state.receiver.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    state.receiver = Some(waker.clone());
                }
            }
            return (false, false);
        }
        // `batch` is empty: the two buffers trade places, so neither
        // allocates once both have grown.
        std::mem::swap(&mut state.items, &mut self.batch);
        let notify = state.waiting > 0;
        drop(state);
        if notify {
            self.shared.room.notify_waiters();
        }
        (true, false)
    }

    /// The next item; `None` once every sender is gone and nothing is left.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        if let Some(item) = self.batch.pop_front() {
            return Poll::Ready(Some(item));
        }
        match self.take_batch(Some(cx.waker())) {
            (true, _) => Poll::Ready(self.batch.pop_front()),
            (false, true) => Poll::Ready(None),
            (false, false) => Poll::Pending,
        }
    }

    /// See [`Receiver::poll_recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an item is taken only when returned.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next item if one is queued.
    pub(crate) fn try_recv(&mut self) -> Option<T> {
        if self.batch.is_empty() {
            self.take_batch(None);
        }
        self.batch.pop_front()
    }

    /// Accepts nothing more: waiting and later producers get [`Closed`].
    /// What is queued can still be taken.
    pub(crate) fn close(&mut self) {
        self.shared.lock().open = false;
        self.shared.room.notify_waiters();
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let items = {
            let mut state = self.shared.lock();
            state.open = false;
            std::mem::take(&mut state.items)
        };
        // Items are dropped outside the lock.
        drop(items);
        self.shared.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::task::Waker;

    use super::*;

    fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn items_come_out_in_order_across_batches() {
        let (tx, mut rx) = channel(8);
        let other = tx.clone();
        for i in 0..3 {
            tx.reserve_many(1)
                .now_or_never()
                .expect("room")
                .expect("open")
                .send(i);
        }
        assert_eq!(rx.try_recv(), Some(0));
        other
            .reserve_many(2)
            .now_or_never()
            .expect("room")
            .expect("open")
            .send_all([3, 4]);
        let got: Vec<i32> = std::iter::from_fn(|| rx.try_recv()).collect();
        assert_eq!(got, [1, 2, 3, 4]);
        assert_eq!(rx.try_recv(), None);
    }

    #[test]
    fn a_full_queue_makes_producers_wait_until_a_batch_is_taken() {
        let (tx, mut rx) = channel(2);
        tx.reserve_many(2)
            .now_or_never()
            .expect("room")
            .expect("open")
            .send_all([1, 2]);
        let mut waiting = std::pin::pin!(tx.reserve());
        assert!(poll_once(waiting.as_mut()).is_pending(), "full");
        // Reserved but unused room counts too, until the permit is dropped.
        assert_eq!(rx.try_recv(), Some(1));
        let Poll::Ready(Ok(permit)) = poll_once(waiting.as_mut()) else {
            panic!("room once the batch was taken");
        };
        let tx2 = tx.clone();
        let mut second = std::pin::pin!(tx2.reserve_many(2));
        assert!(poll_once(second.as_mut()).is_pending(), "1 reserved of 2");
        drop(permit);
        assert!(matches!(poll_once(second.as_mut()), Poll::Ready(Ok(_))));
        assert_eq!(rx.try_recv(), Some(2));
    }

    #[test]
    fn the_queue_ends_when_every_sender_is_gone_after_its_items() {
        let (tx, mut rx) = channel(4);
        let other = tx.clone();
        tx.reserve()
            .now_or_never()
            .expect("room")
            .expect("open")
            .send(7);
        drop(tx);
        assert_eq!(rx.recv().now_or_never(), Some(Some(7)));
        let mut recv = std::pin::pin!(rx.recv());
        assert!(poll_once(recv.as_mut()).is_pending(), "one sender left");
        drop(other);
        assert_eq!(poll_once(recv.as_mut()), Poll::Ready(None));
    }

    #[test]
    fn closing_refuses_producers_but_keeps_what_is_queued() {
        let (tx, mut rx) = channel(1);
        tx.reserve()
            .now_or_never()
            .expect("room")
            .expect("open")
            .send("queued");
        let mut waiting = std::pin::pin!(tx.reserve());
        assert!(poll_once(waiting.as_mut()).is_pending());
        rx.close();
        assert!(matches!(
            poll_once(waiting.as_mut()),
            Poll::Ready(Err(Closed))
        ));
        assert_eq!(rx.try_recv(), Some("queued"));
        assert!(tx.reserve().now_or_never().expect("ready").is_err());
        drop(rx);
        let (tx, rx) = channel::<u8>(1);
        drop(rx);
        assert!(tx.reserve().now_or_never().expect("ready").is_err());
    }

    #[test]
    fn a_cancelled_wait_is_no_longer_counted_as_waiting() {
        let (tx, mut rx) = channel(1);
        tx.reserve()
            .now_or_never()
            .expect("room")
            .expect("open")
            .send(1u8);
        {
            let mut waiting = std::pin::pin!(tx.reserve());
            assert!(poll_once(waiting.as_mut()).is_pending());
            assert_eq!(tx.shared.lock().waiting, 1);
        }
        assert_eq!(tx.shared.lock().waiting, 0);
        assert_eq!(rx.try_recv(), Some(1));
    }

    /// `FutureExt::now_or_never` without the dependency.
    trait NowOrNever: Future + Sized {
        fn now_or_never(self) -> Option<Self::Output> {
            let mut future = std::pin::pin!(self);
            match poll_once(future.as_mut()) {
                Poll::Ready(output) => Some(output),
                Poll::Pending => None,
            }
        }
    }

    impl<F: Future> NowOrNever for F {}
}
