//! A served channel's two halves: owns [`Reply`] (our side, checked against
//! the method's upstream protocol, with an automatic error when dropped
//! unfinished) and [`Incoming`] (the client's later frames).

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::mux::batch_queue;
use crate::mux::frame_queue::FrameReceiver;
use crate::proto::{Args, EncodeError, ErrorCode, Frame, Message, Protocol, RemoteError};

/// A reply on its way to the session's writer.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) channel: u64,
    pub(crate) message: Message,
}

/// State shared by a session's replies and its task.
#[derive(Debug)]
pub(crate) struct Shared {
    replies: batch_queue::Sender<Outgoing>,
    /// Channels whose `Reply` was dropped before its terminal message.
    dropped: Mutex<Vec<(u64, Protocol)>>,
    wake: mpsc::Sender<()>,
    max_frame_len: usize,
}

impl Shared {
    pub(crate) fn new(
        replies: batch_queue::Sender<Outgoing>,
        wake: mpsc::Sender<()>,
        max_frame_len: usize,
    ) -> Self {
        Self {
            replies,
            dropped: Mutex::new(Vec::new()),
            wake,
            max_frame_len,
        }
    }

    pub(crate) fn take_dropped(&self, into: &mut Vec<(u64, Protocol)>) {
        into.append(&mut self.dropped.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Why a reply could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The message is not allowed in the channel's current state.
    #[error("message type {ty} is not allowed in reply state {state:?}")]
    NotAllowed {
        /// The refused message id.
        ty: u64,
        /// The state at the time.
        state: Protocol,
    },
    /// The message could not be encoded; nothing was sent.
    #[error("reply not sent: {0}")]
    Encode(#[source] EncodeError),
    /// The client is gone.
    #[error("client disconnected")]
    Disconnected,
}

/// Our side of a served channel.
///
/// Dropping it before its terminal message sends
/// `error [[7, 7], "handler finished without a reply"]`, so a client never
/// waits for a reply that will not come.
#[derive(Debug)]
pub struct Reply {
    channel: u64,
    state: Protocol,
    shared: Arc<Shared>,
}

impl Reply {
    pub(crate) fn new(channel: u64, state: Protocol, shared: Arc<Shared>) -> Self {
        Self {
            channel,
            state,
            shared,
        }
    }

    /// What we may still send.
    pub fn state(&self) -> Protocol {
        self.state
    }

    /// Sends `message` if the upstream protocol allows it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the only await is for room in the session's queue.
    pub async fn send(&mut self, message: Message) -> Result<(), ReplyError> {
        self.send_all([message]).await
    }

    /// Sends `messages` in order, as one hand-off to the session (one wait
    /// for queue room instead of one per message), if the upstream
    /// protocol allows all of them; otherwise sends none.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the only await is for room in the session's queue.
    pub async fn send_all<const N: usize>(
        &mut self,
        messages: [Message; N],
    ) -> Result<(), ReplyError> {
        let mut state = self.state;
        for message in &messages {
            state = state.next(message.ty).ok_or(ReplyError::NotAllowed {
                ty: message.ty,
                state,
            })?;
            message
                .check(self.channel, self.shared.max_frame_len)
                .map_err(ReplyError::Encode)?;
        }
        let permit = self
            .shared
            .replies
            .reserve_many(N)
            .await
            .map_err(|_| ReplyError::Disconnected)?;
        let channel = self.channel;
        permit.send_all(
            messages
                .into_iter()
                .map(|message| Outgoing { channel, message }),
        );
        self.state = state;
        Ok(())
    }

    /// Streaming `write [chunk]`.
    pub async fn write(&mut self, chunk: impl Into<Bytes>) -> Result<(), ReplyError> {
        self.send(Message::write(chunk)).await
    }

    /// Streaming `close []`.
    pub async fn close(mut self) -> Result<(), ReplyError> {
        self.send(Message::close()).await
    }

    /// Primitive `value args`.
    pub async fn value(mut self, args: Args) -> Result<(), ReplyError> {
        self.send(Message::new(crate::proto::protocol::primitive::VALUE, args))
            .await
    }

    /// `error [[category, code], message]`, in either protocol.
    pub async fn error(mut self, error: RemoteError) -> Result<(), ReplyError> {
        let ty = self.state.error_id().ok_or(ReplyError::NotAllowed {
            ty: crate::proto::protocol::streaming::ERROR,
            state: self.state,
        })?;
        self.send(Message::error(ty, error)).await
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if self.state.error_id().is_some() {
            self.shared
                .dropped
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((self.channel, self.state));
            let _ = self.shared.wake.try_send(());
        }
    }
}

/// The message a dropped, unfinished reply is ended with.
pub(crate) fn dropped_reply_error(state: Protocol) -> Option<Message> {
    let ty = state.error_id()?;
    Some(Message::error(
        ty,
        RemoteError::new(
            ErrorCode::UNCAUGHT_ERROR,
            "handler finished without a reply",
        ),
    ))
}

/// The client's later frames on a served channel.
#[derive(Debug)]
pub struct Incoming {
    state: Protocol,
    frames: Option<FrameReceiver>,
}

impl Incoming {
    pub(crate) fn new(state: Protocol, frames: Option<FrameReceiver>) -> Self {
        Self { state, frames }
    }

    /// What the client may still send.
    pub fn state(&self) -> Protocol {
        self.state
    }

    /// The next frame (already checked against the protocol); `None` after
    /// the client's terminal message; `Err` if the client disconnected
    /// first.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<Result<Frame, ReplyError>> {
        if self.state.is_terminal() {
            return None;
        }
        let frames = self.frames.as_mut()?;
        match frames.recv().await {
            Some(frame) => {
                self.state = self.state.next(frame.ty).unwrap_or(Protocol::Terminal);
                Some(Ok(frame))
            }
            None => {
                self.state = Protocol::Terminal;
                Some(Err(ReplyError::Disconnected))
            }
        }
    }
}
