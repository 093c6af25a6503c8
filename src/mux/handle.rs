//! The mux handle: owns the caller's side of one backend connection, the
//! cheap cloneable [`MuxHandle`] that opens channels, and the state it shares
//! with the connection task.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::{Notify, mpsc};

use super::MuxConfig;
use super::batch_queue;
use super::channel::{Channel, ChannelReceiver, ChannelSender};
use super::error::{ChannelError, ConnectionError, Delivery};
use super::frame_queue::{self, FrameSender};
use crate::proto::{Message, Protocol};

/// What a channel's owner asks the connection task to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Open channel `id` by writing `message` (and `then` right after).
    Open {
        id: u64,
        message: Message,
        then: Option<Message>,
        tx: Protocol,
        rx: Protocol,
        sink: Sink,
    },
    /// Write `message` on channel `id`.
    Send { id: u64, message: Message },
    /// Write `message` on channel `id`, holding `hold` until the task has
    /// taken it from this queue (see [`ChannelSender::write_held`]).
    SendHeld {
        id: u64,
        message: Message,
        hold: tokio::sync::OwnedSemaphorePermit,
    },
    /// Open nothing more; close once every channel is finished.
    Drain,
}

/// Where the connection task delivers a channel's frames.
#[derive(Debug)]
pub(crate) struct Sink {
    pub(crate) replies: FrameSender,
    pub(crate) state: Arc<ChannelState>,
}

/// Per-channel state the task leaves for the owner when it stops
/// delivering: how much of the request was written, or that the channel
/// was refused.
#[derive(Debug, Default)]
pub(crate) struct ChannelState {
    outcome: AtomicU8,
}

const REFUSED: u8 = u8::MAX;

impl ChannelState {
    pub(crate) fn set_delivery(&self, delivery: Delivery) {
        self.outcome.store(delivery.to_u8(), Ordering::Release);
    }

    pub(crate) fn set_refused(&self) {
        self.outcome.store(REFUSED, Ordering::Release);
    }

    /// The error an owner sees when its frames stop without a terminal one.
    pub(crate) fn error(&self, shared: &Shared) -> ChannelError {
        match self.outcome.load(Ordering::Acquire) {
            REFUSED => ChannelError::Refused,
            other => ChannelError::ConnectionLost {
                delivery: Delivery::from_u8(other),
                cause: shared.cause(),
            },
        }
    }
}

/// Channels whose senders were dropped before their side was terminal.
#[derive(Debug, Default)]
struct Cancels {
    /// Each id, and whether it asked to `close` rather than cancel.
    ids: Vec<(u64, bool)>,
    /// The task is gathering cancels to take together: queueing one need
    /// not wake it.
    gathering: bool,
}

/// State shared by every handle, channel and the connection task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: MuxConfig,
    /// The next channel id, locked together with queueing its `Open`, so
    /// ids reach the wire strictly increasing.
    next_id: Mutex<u64>,
    /// Ids whose senders were dropped before their side was terminal.
    cancels: Mutex<Cancels>,
    /// Wakes the task to process `cancels` (capacity 1: one pending wake
    /// covers any number of ids).
    wake: mpsc::Sender<()>,
    pub(crate) draining: AtomicBool,
    pub(crate) closed: AtomicBool,
    pub(crate) closed_notify: Notify,
    pub(crate) in_flight: AtomicUsize,
    /// Set while the task gathers queued requests for its next write: a
    /// request opened now travels in the same write (see
    /// [`MuxHandle::is_gathering`]).
    pub(crate) gathering: AtomicBool,
    cause: OnceLock<Arc<ConnectionError>>,
    /// The backend's address, for a TCP connection.
    pub(crate) peer: OnceLock<std::net::SocketAddr>,
}

impl Shared {
    pub(crate) fn new(config: MuxConfig, wake: mpsc::Sender<()>) -> Self {
        Self {
            config,
            next_id: Mutex::new(1),
            cancels: Mutex::new(Cancels::default()),
            wake,
            draining: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            closed_notify: Notify::new(),
            in_flight: AtomicUsize::new(0),
            gathering: AtomicBool::new(false),
            cause: OnceLock::new(),
            peer: OnceLock::new(),
        }
    }

    fn lock_cancels(&self) -> std::sync::MutexGuard<'_, Cancels> {
        self.cancels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn cancel(&self, id: u64, close: bool) {
        let wake = {
            let mut cancels = self.lock_cancels();
            cancels.ids.push((id, close));
            !cancels.gathering
        };
        if wake {
            // Full means a wake is already pending; closed means the task
            // is gone and will never write anything again. Both are fine.
            let _ = self.wake.try_send(());
        }
    }

    /// Until the next [`Shared::take_cancels`], cancels are queued without
    /// waking the task: it has promised to take them (see
    /// `Connection::drive`).
    pub(crate) fn gather_cancels(&self) {
        self.lock_cancels().gathering = true;
    }

    /// Takes the queued cancels; later ones wake the task again.
    pub(crate) fn take_cancels(&self, into: &mut Vec<(u64, bool)>) {
        let mut cancels = self.lock_cancels();
        // In the same lock as the take: a cancel queued after it sees the
        // flag cleared and wakes the task.
        cancels.gathering = false;
        into.append(&mut cancels.ids);
    }

    pub(crate) fn set_cause(&self, cause: Arc<ConnectionError>) {
        let _ = self.cause.set(cause);
    }

    pub(crate) fn cause(&self) -> Arc<ConnectionError> {
        self.cause
            .get()
            .cloned()
            .unwrap_or_else(|| Arc::new(ConnectionError::Aborted))
    }

    /// `n` channels are no longer in flight.
    pub(crate) fn finish_channels(&self, n: usize) {
        if n > 0 {
            self.in_flight.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

/// A cheap, cloneable handle to one backend connection.
///
/// Channels opened through it share the connection; each clone is an `Arc`
/// and a queue sender. The connection closes when every handle and channel
/// is dropped and nothing is in flight, when [`MuxHandle::drain`] was called
/// and the last channel finished, or when the peer or the socket fails.
#[derive(Debug, Clone)]
pub struct MuxHandle {
    commands: batch_queue::Sender<Command>,
    shared: Arc<Shared>,
}

impl MuxHandle {
    pub(crate) fn new(commands: batch_queue::Sender<Command>, shared: Arc<Shared>) -> Self {
        Self { commands, shared }
    }

    /// Opens a channel by sending `invocation`'s message with the next id.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. The only await is for room in the connection's bounded
    /// queue; if the future is dropped there, nothing was queued and nothing
    /// reaches the wire. Once it returns, dropping the [`Channel`] cancels
    /// it on the wire (see [`ChannelSender`]).
    pub async fn open(&self, invocation: Invocation) -> Result<Channel, ChannelError> {
        if self.is_draining() || self.is_closed() {
            return Err(ChannelError::Refused);
        }
        // The id is not known yet; checking with the widest id is exact
        // enough and never lets an oversized frame through.
        invocation
            .message
            .check(u64::MAX, self.shared.config.max_frame_len)
            .map_err(ChannelError::Encode)?;
        // Our send state once the follow-up message (if any) is queued.
        let tx_after = match &invocation.then {
            Some(then) => {
                then.check(u64::MAX, self.shared.config.max_frame_len)
                    .map_err(ChannelError::Encode)?;
                invocation
                    .tx
                    .next(then.ty)
                    .ok_or(ChannelError::NotAllowed {
                        ty: then.ty,
                        state: invocation.tx,
                    })?
            }
            None => invocation.tx,
        };
        let permit = self
            .commands
            .reserve()
            .await
            .map_err(|_| ChannelError::Refused)?;
        let (replies_tx, replies_rx) = frame_queue::channel_with_budget(
            self.shared.config.channel_queue,
            self.shared.config.reply_budget.as_ref(),
        );
        let state = Arc::new(ChannelState::default());
        let sink = Sink {
            replies: replies_tx,
            state: Arc::clone(&state),
        };
        self.shared.in_flight.fetch_add(1, Ordering::Relaxed);
        let Invocation {
            message,
            tx,
            rx,
            then,
        } = invocation;
        let id = {
            let mut next = self
                .shared
                .next_id
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let id = *next;
            *next += 1;
            permit.send(Command::Open {
                id,
                message,
                then,
                tx,
                rx,
                sink,
            });
            id
        };
        Ok(Channel {
            sender: ChannelSender::new(
                id,
                tx_after,
                self.commands.clone(),
                Arc::clone(&self.shared),
                Arc::clone(&state),
            ),
            receiver: ChannelReceiver::new(id, rx, replies_rx, Arc::clone(&self.shared), state),
        })
    }

    /// Stops opening channels; the connection closes once the open ones
    /// finish. Channels opened after this fail with [`ChannelError::Refused`].
    pub async fn drain(&self) {
        self.shared.draining.store(true, Ordering::Release);
        // If the task is gone the connection is closed already.
        let _ = self.commands.send(Command::Drain).await;
    }

    /// Whether the connection was told to drain.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    /// The backend's address, for a connection made over TCP.
    pub fn peer(&self) -> Option<std::net::SocketAddr> {
        self.shared.peer.get().copied()
    }

    /// Records the backend's address (once).
    pub(crate) fn set_peer(&self, peer: std::net::SocketAddr) {
        let _ = self.shared.peer.set(peer);
    }

    /// Whether the connection task has stopped.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// Channels opened and not yet finished on both sides.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Whether the connection is gathering requests for a write it has not
    /// made yet. A channel opened now shares that write (one syscall on
    /// each side for the whole batch), so a pool may prefer this
    /// connection. A hint: it may change at any moment.
    pub fn is_gathering(&self) -> bool {
        self.shared.gathering.load(Ordering::Relaxed)
    }

    /// Why the connection closed, once it has (a clean drain gives `None`).
    pub fn close_cause(&self) -> Option<Arc<ConnectionError>> {
        self.is_closed()
            .then(|| self.shared.cause.get().cloned())
            .flatten()
    }

    /// Waits until the connection task has stopped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only observes.
    pub async fn closed(&self) {
        loop {
            let notified = self.shared.closed_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_closed() {
                return;
            }
            notified.await;
        }
    }
}

/// The opening message of a channel and the protocol of each direction.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The opening message (e.g. `enqueue [event]` with trace headers).
    pub message: Message,
    /// What we may send after it (`Streaming` for `enqueue`; `Terminal` for
    /// `resolve`; `Discard` for `publish` and `routing`).
    pub tx: Protocol,
    /// What the peer sends back.
    pub rx: Protocol,
    /// A message to send right after the opening one, queued with it.
    then: Option<Message>,
}

impl Invocation {
    /// An app `enqueue`: streaming both ways.
    pub fn enqueue(message: Message) -> Self {
        Self {
            message,
            tx: Protocol::Streaming,
            rx: Protocol::Streaming,
            then: None,
        }
    }

    /// Any invocation.
    pub fn new(message: Message, tx: Protocol, rx: Protocol) -> Self {
        Self {
            message,
            tx,
            rx,
            then: None,
        }
    }

    /// Also sends `message` right after the opening one, in the same hand-off
    /// to the connection task (e.g. an `enqueue`'s first chunk): one queue
    /// operation instead of two, and the two frames travel in one write.
    /// [`MuxHandle::open`] refuses it if our protocol does not allow it.
    pub fn then(mut self, message: Message) -> Self {
        self.then = Some(message);
        self
    }
}
