//! Channels: owns the owner's two halves of one channel, the sender (with
//! local enforcement of our protocol state and cancel-on-drop) and the
//! receiver (which checks the peer's protocol state).

use std::sync::Arc;

use bytes::Bytes;

use super::batch_queue;
use super::error::ChannelError;
use super::frame_queue::{Cut, FrameReceiver};
use super::handle::{ChannelState, Command, Shared};
use crate::proto::{Frame, Message, Protocol, RemoteError};

/// One channel on a backend connection: both halves.
#[derive(Debug)]
pub struct Channel {
    /// What we send.
    pub sender: ChannelSender,
    /// What the peer sends.
    pub receiver: ChannelReceiver,
}

impl Channel {
    /// The channel id on its connection.
    pub fn id(&self) -> u64 {
        self.sender.id
    }

    /// Splits into the two halves.
    pub fn split(self) -> (ChannelSender, ChannelReceiver) {
        (self.sender, self.receiver)
    }
}

/// Our side of a channel.
///
/// Dropping it while our side is not terminal cancels the channel: the task
/// sends `error [[7, 3], "..."]` (or `discard` for `publish`/`routing`)
/// unless the opening frame was not written yet, in which case nothing is
/// written at all. Later frames for the channel are dropped.
#[derive(Debug)]
pub struct ChannelSender {
    id: u64,
    state: Protocol,
    close_on_drop: bool,
    commands: batch_queue::Sender<Command>,
    shared: Arc<Shared>,
    channel: Arc<ChannelState>,
}

impl ChannelSender {
    pub(crate) fn new(
        id: u64,
        state: Protocol,
        commands: batch_queue::Sender<Command>,
        shared: Arc<Shared>,
        channel: Arc<ChannelState>,
    ) -> Self {
        Self {
            id,
            state,
            close_on_drop: false,
            commands,
            shared,
            channel,
        }
    }

    /// The channel id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Makes dropping this sender end our side with `close` instead of
    /// cancelling with `error [[7, 3]]`. For a request whose reply is
    /// complete: the app is told we are done, not that we gave up.
    pub fn close_on_drop(&mut self) {
        self.close_on_drop = true;
    }

    /// Our current send state.
    pub fn state(&self) -> Protocol {
        self.state
    }

    /// Sends `message` if our protocol state allows it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. The only await is for room in the connection's bounded
    /// queue; dropped there, nothing was queued and the state is unchanged.
    pub async fn send(&mut self, message: Message) -> Result<(), ChannelError> {
        self.queue(message, |id, message| Command::Send { id, message })
            .await
    }

    /// Checks `message` against our protocol state and the frame limit,
    /// waits for room in the connection's queue, and queues the command
    /// `make` builds from it (see [`ChannelSender::send`]).
    async fn queue(
        &mut self,
        message: Message,
        make: impl FnOnce(u64, Message) -> Command,
    ) -> Result<(), ChannelError> {
        let next = self
            .state
            .next(message.ty)
            .ok_or(ChannelError::NotAllowed {
                ty: message.ty,
                state: self.state,
            })?;
        message
            .check(self.id, self.shared.config.max_frame_len)
            .map_err(ChannelError::Encode)?;
        let permit = self
            .commands
            .reserve()
            .await
            .map_err(|_| self.channel.error(&self.shared))?;
        permit.send(make(self.id, message));
        self.state = next;
        Ok(())
    }

    /// Streaming `write [chunk]`.
    pub async fn write(&mut self, chunk: impl Into<Bytes>) -> Result<(), ChannelError> {
        self.send(Message::write(chunk)).await
    }

    /// Streaming `write [chunk]`, holding `hold` until the connection task
    /// has moved the frame from the connection's command queue into its
    /// write queue (which `write_high_water` bounds). A caller that takes
    /// its permits from a small semaphore of its own thus bounds how much
    /// of its data waits in the shared command queue, however slow the
    /// backend: a streamed upload uses it so that one request can neither
    /// hold an unbounded amount of memory nor fill the queue every other
    /// channel of the connection needs.
    ///
    /// # Cancel safety
    ///
    /// As [`ChannelSender::send`]: dropped while waiting for room, nothing
    /// was queued and `hold` is released.
    pub async fn write_held(
        &mut self,
        chunk: Bytes,
        hold: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(), ChannelError> {
        self.queue(Message::write(chunk), |id, message| Command::SendHeld {
            id,
            message,
            hold,
        })
        .await
    }

    /// Streaming `close []`: ends our side.
    pub async fn close(mut self) -> Result<(), ChannelError> {
        self.send(Message::close()).await
    }

    /// `error [[category, code], message]`: ends our side.
    pub async fn error(mut self, error: RemoteError) -> Result<(), ChannelError> {
        let ty = self.state.error_id().ok_or(ChannelError::NotAllowed {
            ty: crate::proto::protocol::streaming::ERROR,
            state: self.state,
        })?;
        self.send(Message::error(ty, error)).await
    }
}

impl Drop for ChannelSender {
    fn drop(&mut self) {
        if !self.state.is_terminal() {
            self.shared.cancel(self.id, self.close_on_drop);
        }
    }
}

/// The peer's side of a channel.
#[derive(Debug)]
pub struct ChannelReceiver {
    id: u64,
    state: Protocol,
    replies: FrameReceiver,
    shared: Arc<Shared>,
    channel: Arc<ChannelState>,
}

impl ChannelReceiver {
    pub(crate) fn new(
        id: u64,
        state: Protocol,
        replies: FrameReceiver,
        shared: Arc<Shared>,
        channel: Arc<ChannelState>,
    ) -> Self {
        Self {
            id,
            state,
            replies,
            shared,
            channel,
        }
    }

    /// The channel id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// What the peer may still send.
    pub fn state(&self) -> Protocol {
        self.state
    }

    /// Polls for the next frame; see [`ChannelReceiver::recv`].
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame, ChannelError>>> {
        if self.state.is_terminal() {
            return std::task::Poll::Ready(None);
        }
        let polled = std::task::ready!(self.replies.poll_recv(cx));
        std::task::Poll::Ready(Some(self.accept(polled)))
    }

    fn accept(&mut self, polled: Option<Frame>) -> Result<Frame, ChannelError> {
        match polled {
            Some(frame) => match self.state.next(frame.ty) {
                Some(next) => {
                    self.state = next;
                    Ok(frame)
                }
                None => {
                    self.state = Protocol::Terminal;
                    Err(ChannelError::UnexpectedMessage { ty: frame.ty })
                }
            },
            None => {
                self.state = Protocol::Terminal;
                match self.replies.cut() {
                    Some(Cut::Frames(capacity)) => Err(ChannelError::Overflow(capacity)),
                    Some(Cut::Reply(limit)) => Err(ChannelError::ReplyBuffer(limit)),
                    Some(Cut::Total(total)) => Err(ChannelError::ReplyBudget(total)),
                    None => Err(self.channel.error(&self.shared)),
                }
            }
        }
    }

    /// Makes this channel a stream whose slow reader is cut rather than
    /// waited for: once `capacity` frames are queued unread, the next
    /// frame from the peer cuts it. The queued frames are dropped, the
    /// connection stops delivering to this channel (its other channels go
    /// on unhindered), and the receiver yields [`ChannelError::Overflow`].
    /// The owner then drops its sender, which cancels the channel (`error
    /// [[7, 3]]`).
    ///
    /// Without it (the default), a full queue holds the connection's reads
    /// until the owner catches up: right for a reply a client reads as
    /// fast as it can, wrong for a push stream to a client that may stall.
    pub fn cut_when_full(&mut self, capacity: usize) {
        self.replies.cut_when_full(capacity);
    }

    /// Notifies `signal` when the channel is cut for a slow reader (see
    /// [`ChannelReceiver::cut_when_full`] and [`super::MuxConfig::reply_budget`]),
    /// at once if it was already. For an owner that may not be polled
    /// while its reader stalls (an HTTP/1.1 body hyper cannot write), so
    /// that its connection can be closed at once.
    pub fn notify_on_cut(&self, signal: Arc<tokio::sync::Notify>) {
        self.replies.notify_on_cut(signal);
    }

    /// The next frame from the peer, with headers decoded; `None` after the
    /// peer's terminal message or after an error.
    ///
    /// A frame whose type the peer's protocol does not allow ends the
    /// channel with [`ChannelError::UnexpectedMessage`]. A lost connection
    /// ends it with [`ChannelError::ConnectionLost`], saying how much of the
    /// request was written.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a frame is taken from the queue only when returned.
    pub async fn recv(&mut self) -> Option<Result<Frame, ChannelError>> {
        if self.state.is_terminal() {
            return None;
        }
        let polled = self.replies.recv().await;
        Some(self.accept(polled))
    }
}
