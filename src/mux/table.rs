//! The channel table: owns the per-channel protocol state of one connection
//! (what each side may still send, and how much of the request was written).
//! Sans-IO and generic over the reply sink, so the stateful fuzz target and
//! unit tests drive it without sockets or tasks.
//!
//! Invariants (checked by `fuzzing::mux_ops`):
//! - ids are opened strictly increasing and never reused;
//! - nothing is ever written on a channel after its terminal message;
//! - a channel cancelled before its opening frame was written is never
//!   written at all;
//! - an entry is removed exactly when both directions are finished (or the
//!   owner stopped listening), so the table never grows without bound.

use super::id_hash::{IdMap, IdSet};

use super::error::Delivery;
use crate::proto::Protocol;

/// One open channel.
#[derive(Debug)]
struct Entry<S> {
    /// What we may still send.
    tx: Protocol,
    /// What the peer may still send.
    rx: Protocol,
    /// Where replies go; `None` once the owner stopped listening.
    sink: Option<S>,
    /// How much of the request has been written.
    delivery: Delivery,
}

/// What to do with a newly opened channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenAction {
    /// Write the opening frame.
    Write,
    /// Its owner cancelled it before it was written: write nothing.
    Skip,
    /// The id does not increase: a bug upstream. Write nothing.
    Reject,
}

/// What to do with an outgoing message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendAction {
    /// Write it; `terminal` when it ends our side.
    Write {
        /// Whether this message ends our side of the channel.
        terminal: bool,
    },
    /// Drop it: the channel was cancelled or is finished.
    Drop,
}

/// How to end our side of a cancelled channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// Send `error [[7, 3], ...]` with this message id.
    Error(u64),
    /// Send `discard []` (locator `publish` and `routing`).
    Discard,
    /// Send `close []`: the owner finished its streaming side.
    Close,
}

/// What to do with an incoming frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiveAction {
    /// Hand it to the owner; `last` when nothing more will follow (the
    /// peer's terminal message, or a message its protocol does not allow).
    Deliver {
        /// Whether this is the last frame the owner gets.
        last: bool,
    },
    /// Drop it without noise: a late frame for a finished or cancelled
    /// channel, or a frame nobody listens to.
    Drop,
}

/// The channel table of one connection.
#[derive(Debug)]
pub struct ChannelTable<S> {
    entries: IdMap<Entry<S>>,
    /// The highest id seen by `open`.
    highest: u64,
    /// Ids cancelled by their owners before `open` saw them.
    precancelled: IdSet,
    /// Entries removed since the last [`ChannelTable::take_removed`].
    removed: usize,
}

impl<S> Default for ChannelTable<S> {
    fn default() -> Self {
        Self {
            entries: IdMap::default(),
            highest: 0,
            precancelled: IdSet::default(),
            removed: 0,
        }
    }
}

impl<S> ChannelTable<S> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of open channels.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no channel is open.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The highest id opened (or skipped) so far.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// Whether channel `id` is open.
    pub fn contains(&self, id: u64) -> bool {
        self.entries.contains_key(&id)
    }

    /// How many entries were removed since the last call.
    pub fn take_removed(&mut self) -> usize {
        std::mem::take(&mut self.removed)
    }

    /// The reply sink of channel `id`.
    pub fn sink(&self, id: u64) -> Option<&S> {
        self.entries.get(&id).and_then(|e| e.sink.as_ref())
    }

    /// Opens channel `id`. `tx` is our send state *after* the opening
    /// message; `rx` is what the peer may send.
    pub fn open(&mut self, id: u64, tx: Protocol, rx: Protocol, sink: S) -> OpenAction {
        if id <= self.highest {
            return OpenAction::Reject;
        }
        self.highest = id;
        if self.precancelled.remove(&id) {
            return OpenAction::Skip;
        }
        self.entries.insert(
            id,
            Entry {
                tx,
                rx,
                sink: Some(sink),
                delivery: Delivery::NotSent,
            },
        );
        OpenAction::Write
    }

    /// Checks an outgoing message `ty` on channel `id` and advances our
    /// send state.
    pub fn send(&mut self, id: u64, ty: u64) -> SendAction {
        let Some(entry) = self.entries.get_mut(&id) else {
            return SendAction::Drop;
        };
        match entry.tx.next(ty) {
            Some(next) => {
                entry.tx = next;
                let terminal = next.is_terminal();
                if terminal {
                    self.remove_if_finished(id);
                }
                SendAction::Write { terminal }
            }
            None => SendAction::Drop,
        }
    }

    /// The owner dropped its sender. Returns the message that ends our side
    /// (`error` or `discard`), if our side was still open. A cancel for an
    /// id not opened yet is remembered, so the opening frame is never
    /// written.
    pub fn cancel(&mut self, id: u64) -> Option<Cancel> {
        self.end(id, false)
    }

    /// Like [`ChannelTable::cancel`], but a streaming side that is still
    /// open ends with `close` (the owner finished, rather than gave up).
    pub fn finish(&mut self, id: u64) -> Option<Cancel> {
        self.end(id, true)
    }

    fn end(&mut self, id: u64, close: bool) -> Option<Cancel> {
        let Some(entry) = self.entries.get_mut(&id) else {
            if id > self.highest {
                self.precancelled.insert(id);
            }
            return None;
        };
        let cancel = match entry.tx {
            Protocol::Terminal => return None,
            Protocol::Discard => Cancel::Discard,
            Protocol::Streaming if close => Cancel::Close,
            other => Cancel::Error(other.error_id()?),
        };
        entry.tx = Protocol::Terminal;
        self.remove_if_finished(id);
        Some(cancel)
    }

    /// Checks an incoming frame of type `ty` on channel `id` and advances
    /// the peer's state. A type the peer's protocol does not allow is
    /// delivered as the last frame, so the owner sees the violation.
    pub fn receive(&mut self, id: u64, ty: u64) -> ReceiveAction {
        let Some(entry) = self.entries.get_mut(&id) else {
            return ReceiveAction::Drop;
        };
        if entry.sink.is_none() || entry.rx.is_terminal() {
            return ReceiveAction::Drop;
        }
        let next = entry.rx.next(ty).unwrap_or(Protocol::Terminal);
        entry.rx = next;
        ReceiveAction::Deliver {
            last: next.is_terminal(),
        }
    }

    /// The owner got its last frame, or stopped listening: drop its sink
    /// and remove the entry when our side is finished too. Returns the sink.
    pub fn finish_rx(&mut self, id: u64) -> Option<S> {
        let entry = self.entries.get_mut(&id)?;
        entry.rx = Protocol::Terminal;
        let sink = entry.sink.take();
        self.remove_if_finished(id);
        sink
    }

    /// Records that frames up to `delivery` were written on channel `id`.
    pub fn mark_written(&mut self, id: u64, delivery: Delivery) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.delivery = entry.delivery.max(delivery);
        }
    }

    /// Removes every entry (the connection is gone), with how much of each
    /// request was written.
    pub fn drain(&mut self) -> impl Iterator<Item = (u64, Delivery, Option<S>)> + '_ {
        self.precancelled.clear();
        self.removed += self.entries.len();
        self.entries.drain().map(|(id, e)| (id, e.delivery, e.sink))
    }

    fn remove_if_finished(&mut self, id: u64) {
        if let Some(entry) = self.entries.get(&id) {
            if entry.tx.is_terminal() && (entry.rx.is_terminal() || entry.sink.is_none()) {
                self.entries.remove(&id);
                self.removed += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::protocol::streaming::{CLOSE, ERROR, WRITE};

    #[test]
    fn ids_must_increase() {
        let mut t = ChannelTable::new();
        assert_eq!(
            t.open(1, Protocol::Streaming, Protocol::Streaming, ()),
            OpenAction::Write
        );
        assert_eq!(
            t.open(3, Protocol::Streaming, Protocol::Streaming, ()),
            OpenAction::Write
        );
        assert_eq!(
            t.open(2, Protocol::Streaming, Protocol::Streaming, ()),
            OpenAction::Reject
        );
        assert_eq!(
            t.open(3, Protocol::Streaming, Protocol::Streaming, ()),
            OpenAction::Reject
        );
    }

    #[test]
    fn nothing_after_terminal() {
        let mut t = ChannelTable::new();
        t.open(1, Protocol::Streaming, Protocol::Streaming, ());
        assert_eq!(t.send(1, WRITE), SendAction::Write { terminal: false });
        assert_eq!(t.send(1, CLOSE), SendAction::Write { terminal: true });
        assert_eq!(t.send(1, WRITE), SendAction::Drop);
        assert_eq!(t.cancel(1), None, "no error after close");
        assert_eq!(t.len(), 1, "still waiting for the reply");
        assert_eq!(t.receive(1, WRITE), ReceiveAction::Deliver { last: false });
        assert_eq!(t.receive(1, CLOSE), ReceiveAction::Deliver { last: true });
        t.finish_rx(1);
        assert!(t.is_empty());
        assert_eq!(
            t.receive(1, WRITE),
            ReceiveAction::Drop,
            "late frames are dropped"
        );
    }

    #[test]
    fn cancel_sends_error_once_and_blocks_later_writes() {
        let mut t = ChannelTable::new();
        t.open(1, Protocol::Streaming, Protocol::Streaming, ());
        assert_eq!(t.cancel(1), Some(Cancel::Error(ERROR)));
        assert_eq!(t.cancel(1), None);
        assert_eq!(t.send(1, WRITE), SendAction::Drop);
    }

    #[test]
    fn cancel_before_open_skips_the_channel() {
        let mut t = ChannelTable::new();
        assert_eq!(t.cancel(5), None);
        assert_eq!(
            t.open(5, Protocol::Streaming, Protocol::Streaming, ()),
            OpenAction::Skip
        );
        assert!(t.is_empty());
        assert_eq!(t.send(5, WRITE), SendAction::Drop);
    }

    #[test]
    fn discard_protocols_cancel_with_discard() {
        let mut t = ChannelTable::new();
        t.open(1, Protocol::Discard, Protocol::Streaming, ());
        assert_eq!(t.cancel(1), Some(Cancel::Discard));
    }

    #[test]
    fn unexpected_types_are_delivered_last() {
        let mut t = ChannelTable::new();
        t.open(1, Protocol::Terminal, Protocol::Primitive, ());
        assert_eq!(t.receive(1, 7), ReceiveAction::Deliver { last: true });
        assert!(t.finish_rx(1).is_some());
        assert!(t.is_empty());
    }

    #[test]
    fn drain_reports_delivery() {
        let mut t = ChannelTable::new();
        t.open(1, Protocol::Streaming, Protocol::Streaming, ());
        t.open(2, Protocol::Streaming, Protocol::Streaming, ());
        t.mark_written(2, Delivery::Partial);
        let mut drained: Vec<_> = t.drain().map(|(id, d, _)| (id, d)).collect();
        drained.sort();
        assert_eq!(drained, [(1, Delivery::NotSent), (2, Delivery::Partial)]);
    }
}
