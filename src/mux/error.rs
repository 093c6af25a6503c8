//! Mux errors: owns what a channel owner learns when its channel fails, and
//! whether resending the request elsewhere is safe (STYLE.md §6).

use std::io;
use std::sync::Arc;

use crate::proto::{DecodeError, EncodeError, Protocol};

/// How much of a channel's request reached the socket before it failed.
///
/// "Reached the socket" means handed to the kernel in full: bytes in the
/// kernel may or may not reach the peer, so anything but `NotSent` must be
/// treated as possibly delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Delivery {
    /// Not even the opening frame was written: no worker can have seen it.
    NotSent,
    /// The opening frame was written, but not the terminal one.
    Partial,
    /// Every frame up to and including the terminal one was written.
    Complete,
}

impl Delivery {
    pub(crate) fn to_u8(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::NotSent,
            1 => Self::Partial,
            _ => Self::Complete,
        }
    }
}

/// Why a backend connection ended. Shared by every channel that was open.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The peer closed the connection.
    #[error("backend closed the connection")]
    Eof,
    /// Reading or writing the socket failed.
    #[error("backend connection I/O error: {0}")]
    Io(#[source] io::Error),
    /// The peer sent bytes that are not a valid frame; the connection was
    /// closed, as a Cocaine runtime would do.
    #[error("backend sent an invalid frame: {0}")]
    Decode(#[source] DecodeError),
    /// The connection task stopped without recording a cause (it was
    /// dropped or aborted).
    #[error("backend connection task stopped")]
    Aborted,
}

/// Why a channel failed, from the point of view of its owner.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The connection is draining or closed and opened no channel. Nothing
    /// was sent; retrying on another connection is safe.
    #[error("backend connection is not accepting new channels")]
    Refused,
    /// The connection died while the channel was open.
    #[error("backend connection lost ({delivery:?}): {cause}")]
    ConnectionLost {
        /// How much of the request was written first.
        delivery: Delivery,
        /// Why the connection ended.
        #[source]
        cause: Arc<ConnectionError>,
    },
    /// The message is not allowed in the channel's current send state (for
    /// example anything after `close`). Nothing was sent.
    #[error("message type {ty} is not allowed in send state {state:?}")]
    NotAllowed {
        /// The refused message id.
        ty: u64,
        /// The send state at the time.
        state: Protocol,
    },
    /// The message could not be encoded (too large, or an invalid reserved
    /// header). Nothing was sent.
    #[error("message not sent: {0}")]
    Encode(#[source] EncodeError),
    /// The peer sent a message that its protocol does not allow here. The
    /// channel is finished; the connection stays up.
    #[error("backend sent unexpected message type {ty}")]
    UnexpectedMessage {
        /// The unexpected message id.
        ty: u64,
    },
    /// The owner read too slowly: its queue filled while it was set to be
    /// cut rather than hold up the connection's other channels (see
    /// [`crate::mux::ChannelReceiver::cut_when_full`]). Later frames are
    /// dropped; the connection stays up.
    #[error("the stream's reader fell {0} frames behind the backend and was cut")]
    Overflow(usize),
    /// The owner read too slowly: its reply would have held more than this
    /// many bytes of the connection's reply budget (see
    /// [`crate::mux::MuxConfig::reply_budget`]). Later frames are dropped
    /// and the channel is cancelled; the connection stays up.
    #[error("the reply's reader fell {0} bytes behind the backend and was cut")]
    ReplyBuffer(usize),
    /// The owner read too slowly: the replies buffered for all readers
    /// reached the budget's total (this many bytes), and this reply held
    /// the most. As [`ChannelError::ReplyBuffer`] otherwise.
    #[error("the gateway's reply buffers were full ({0} bytes) and this reply held the most")]
    ReplyBudget(usize),
}

impl ChannelError {
    /// Whether the owner was cut for reading too slowly (a slow client).
    pub fn is_slow_reader(&self) -> bool {
        matches!(
            self,
            Self::Overflow(_) | Self::ReplyBuffer(_) | Self::ReplyBudget(_)
        )
    }

    /// Whether the request provably never reached the peer, so it may be
    /// sent again on another connection.
    pub fn is_retry_safe(&self) -> bool {
        matches!(
            self,
            Self::Refused
                | Self::ConnectionLost {
                    delivery: Delivery::NotSent,
                    ..
                }
        )
    }

    /// How much of the request was written, when the connection was lost.
    pub fn delivery(&self) -> Option<Delivery> {
        match self {
            Self::ConnectionLost { delivery, .. } => Some(*delivery),
            Self::Refused | Self::NotAllowed { .. } | Self::Encode(_) => Some(Delivery::NotSent),
            Self::UnexpectedMessage { .. }
            | Self::Overflow(_)
            | Self::ReplyBuffer(_)
            | Self::ReplyBudget(_) => None,
        }
    }
}
