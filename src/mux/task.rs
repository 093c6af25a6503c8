//! The connection task: owns the socket of one backend connection. It reads
//! and decodes frames and routes them to channels, encodes queued messages
//! and writes them in batches, sends cancellations, and fails every open
//! channel when the connection dies. All protocol decisions are the
//! [`ChannelTable`]'s; this file only moves bytes.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;

use super::batch_queue;
use super::error::{ConnectionError, Delivery};
use super::frame_queue::{FrameSender, TrySendError, room};
use super::handle::{Command, Shared, Sink};
use super::table::{Cancel, ChannelTable, OpenAction, ReceiveAction, SendAction};
use super::write::WriteQueue;
use crate::proto::protocol::DISCARD;
use crate::proto::{Args, ErrorCode, Frame, FrameCodec, Message, RemoteError};

/// At most this many queued commands are encoded before the task writes,
/// so one busy connection cannot starve the read side.
const MAX_BATCH: usize = 256;

/// How long a `close` that ends a finished exchange may wait for other
/// frames to travel with. Under load the next request carries it at once;
/// on an idle connection it goes alone after this delay. Nothing waits for
/// it: the reply is complete and the channel has left the table.
const CLOSE_DELAY: std::time::Duration = std::time::Duration::from_millis(2);

/// The message carried by the `error` that cancels a channel.
const CANCEL_MESSAGE: &str = "rpcgate: request cancelled by the client";

/// A frame that could not be delivered because its channel's queue was
/// full; reading pauses until it is delivered.
#[derive(Debug)]
struct Pending {
    id: u64,
    replies: FrameSender,
    frame: Frame,
}

/// The task side of one backend connection. Run it with
/// [`Connection::run`], usually in its own tracked task.
#[derive(Debug)]
pub struct Connection<R, W> {
    reader: R,
    writer: W,
    commands: batch_queue::Receiver<Command>,
    wake: mpsc::Receiver<()>,
    shared: Arc<Shared>,
    table: ChannelTable<Sink>,
    codec: FrameCodec,
    read_buf: BytesMut,
    queue: WriteQueue,
    pending: Option<Pending>,
    draining: bool,
    commands_closed: bool,
    /// Channels whose `close` waits to travel with the next write.
    deferred_closes: Vec<u64>,
    /// Armed while `deferred_closes` is not empty: when it fires they are
    /// written alone.
    close_timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    /// Scratch space reused across iterations.
    cancels: Vec<(u64, bool)>,
    passed: Vec<(u64, Delivery)>,
}

impl<R, W> Connection<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    pub(crate) fn new(
        reader: R,
        writer: W,
        commands: batch_queue::Receiver<Command>,
        wake: mpsc::Receiver<()>,
        shared: Arc<Shared>,
    ) -> Self {
        let config = &shared.config;
        Self {
            reader,
            writer,
            commands,
            wake,
            codec: FrameCodec::new(config.max_frame_len),
            read_buf: BytesMut::with_capacity(config.read_buffer),
            table: ChannelTable::new(),
            queue: WriteQueue::new(),
            pending: None,
            draining: false,
            commands_closed: false,
            deferred_closes: Vec::new(),
            close_timer: Box::pin(tokio::time::sleep(CLOSE_DELAY)),
            cancels: Vec::new(),
            passed: Vec::new(),
            shared,
        }
    }

    /// Runs the connection until it is drained, abandoned by every handle
    /// and channel, or fails. On the way out every open channel learns how
    /// much of its request was written.
    pub async fn run(mut self) -> Result<(), Arc<ConnectionError>> {
        let result = self.drive().await.map_err(Arc::new);
        if let Err(cause) = &result {
            tracing::debug!(error = %cause, in_flight = self.table.len(), "backend connection failed");
            self.shared.set_cause(Arc::clone(cause));
        }
        self.teardown();
        result
    }

    async fn drive(&mut self) -> Result<(), ConnectionError> {
        loop {
            while self.pending.is_none() {
                match self.codec.decode(&mut self.read_buf) {
                    Ok(Some(frame)) => self.dispatch(frame),
                    Ok(None) => break,
                    Err(e) => return Err(ConnectionError::Decode(e)),
                }
            }
            if !self.queue.is_empty() || self.draining || self.commands_closed {
                self.queue_deferred_closes();
            }
            if (self.draining || self.commands_closed)
                && self.table.is_empty()
                && self.queue.is_empty()
                && self.pending.is_none()
            {
                // A clean close: nothing in flight, nothing to write.
                let _ = self.writer.shutdown().await;
                return Ok(());
            }
            if self.read_buf.capacity() - self.read_buf.len() < self.shared.config.read_buffer / 4 {
                self.read_buf.reserve(self.shared.config.read_buffer);
            }
            self.reconcile_in_flight();
            let can_read = self.pending.is_none();
            let can_take =
                !self.commands_closed && self.queue.len() < self.shared.config.write_high_water;
            let pending_replies = self.pending.as_ref().map(|p| p.replies.clone());

            // Unbiased: under sustained load every branch stays ready, and a
            // fixed order would starve the later ones (reads, typically).
            tokio::select! {
                Some(()) = self.wake.recv() => {
                    // Coalesce: a finished request's `close` comes here
                    // when its response ends, and the responses of one
                    // read end one after another. The tasks ready now run
                    // first and queue theirs without waking this one, so
                    // one wake-up takes them all (nothing waits for a
                    // `close`; a cancel is late by one round of the
                    // scheduler at most).
                    self.shared.gather_cancels();
                    tokio::task::yield_now().await;
                    self.process_cancels();
                }
                () = &mut self.close_timer, if !self.deferred_closes.is_empty() => {
                    self.queue_deferred_closes();
                }
                open = room(pending_replies.as_ref()), if pending_replies.is_some() => {
                    if let Some(p) = self.pending.take() {
                        // The task is the only sender: room stays room.
                        if !open || p.replies.try_send(p.frame).is_err() {
                            self.finish_rx(p.id);
                        }
                    }
                }
                written = self.queue.write_once(&mut self.writer), if !self.queue.is_empty() => {
                    let n = written.map_err(ConnectionError::Io)?;
                    if n == 0 {
                        return Err(ConnectionError::Io(std::io::ErrorKind::WriteZero.into()));
                    }
                    self.queue.advance(n, &mut self.passed);
                    for (id, delivery) in self.passed.drain(..) {
                        self.table.mark_written(id, delivery);
                    }
                    if self.queue.is_empty() {
                        self.writer.flush().await.map_err(ConnectionError::Io)?;
                    }
                }
                command = self.commands.recv(), if can_take => match command {
                    Some(command) => {
                        let was_idle = self.queue.is_empty();
                        self.handle(command);
                        self.take_queued();
                        if was_idle {
                            // Coalesce: let the other ready tasks queue their
                            // requests too, so one write carries them all.
                            self.shared.gathering.store(true, Ordering::Relaxed);
                            tokio::task::yield_now().await;
                            self.shared.gathering.store(false, Ordering::Relaxed);
                            self.take_queued();
                        }
                    }
                    None => self.commands_closed = true,
                },
                read = self.reader.read_buf(&mut self.read_buf), if can_read => {
                    if read.map_err(ConnectionError::Io)? == 0 {
                        return Err(ConnectionError::Eof);
                    }
                }
            }
        }
    }

    /// Takes the commands already queued, up to a batch.
    fn take_queued(&mut self) {
        for _ in 1..MAX_BATCH {
            if self.queue.len() >= self.shared.config.write_high_water {
                break;
            }
            match self.commands.try_recv() {
                Some(command) => self.handle(command),
                None => break,
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Open {
                id,
                message,
                then,
                tx,
                rx,
                sink,
            } => {
                let refused = self.draining;
                let state = Arc::clone(&sink.state);
                let action = if refused {
                    OpenAction::Skip
                } else {
                    self.table.open(id, tx, rx, sink)
                };
                match action {
                    OpenAction::Write => {
                        let delivery = if tx.is_terminal() {
                            Delivery::Complete
                        } else {
                            Delivery::Partial
                        };
                        self.queue.push(id, &message, Some(delivery));
                        if let Some(then) = then {
                            self.send(id, &then);
                        }
                    }
                    OpenAction::Skip | OpenAction::Reject => {
                        if action == OpenAction::Reject {
                            tracing::error!(id, "channel id does not increase; not opened");
                        }
                        state.set_refused();
                        self.shared.finish_channels(1);
                    }
                }
            }
            Command::Send { id, message } => self.send(id, &message),
            Command::SendHeld { id, message, hold } => {
                self.send(id, &message);
                // In the write queue now (bounded by `write_high_water`):
                // the sender may queue another.
                drop(hold);
            }
            Command::Drain => self.draining = true,
        }
    }

    /// Queues `message` on channel `id` if the table allows it.
    fn send(&mut self, id: u64, message: &Message) {
        match self.table.send(id, message.ty) {
            SendAction::Write { terminal } => {
                let mark = terminal.then_some(Delivery::Complete);
                self.queue.push(id, message, mark);
            }
            SendAction::Drop => {}
        }
    }

    fn process_cancels(&mut self) {
        self.shared.take_cancels(&mut self.cancels);
        let mut cancels = std::mem::take(&mut self.cancels);
        for (id, close) in cancels.drain(..) {
            self.end_our_side(id, close);
        }
        self.cancels = cancels;
    }

    /// Ends our side of channel `id`: `close` (deferred, see
    /// [`CLOSE_DELAY`]) or a cancel; nothing if it ended already.
    fn end_our_side(&mut self, id: u64, close: bool) {
        let ended = if close {
            self.table.finish(id)
        } else {
            self.table.cancel(id)
        };
        let message = match ended {
            Some(Cancel::Error(ty)) => Message::error(
                ty,
                RemoteError::new(ErrorCode::NOT_CONNECTED, CANCEL_MESSAGE),
            ),
            Some(Cancel::Discard) => Message::new(DISCARD, Args::Empty),
            Some(Cancel::Close) => {
                if self.deferred_closes.is_empty() {
                    let at = tokio::time::Instant::now() + CLOSE_DELAY;
                    self.close_timer.as_mut().reset(at);
                }
                self.deferred_closes.push(id);
                return;
            }
            None => return,
        };
        self.queue.push(id, &message, None);
    }

    /// Moves the deferred `close` frames into the write queue.
    fn queue_deferred_closes(&mut self) {
        let close = Message::close();
        for id in self.deferred_closes.drain(..) {
            self.queue.push(id, &close, None);
        }
    }

    fn dispatch(&mut self, frame: Frame) {
        let id = frame.channel;
        let ReceiveAction::Deliver { last } = self.table.receive(id, frame.ty) else {
            tracing::trace!(id, ty = frame.ty, "dropping frame for a finished channel");
            return;
        };
        if last {
            // Leave the table (and the in-flight count) before the owner can
            // see its last frame; dropping the sender then ends its queue.
            let Some(sink) = self.table.finish_rx(id) else {
                return;
            };
            self.reconcile_in_flight();
            match sink.replies.try_send(frame) {
                Ok(()) => {}
                Err(TrySendError::Full(frame)) => {
                    self.pending = Some(Pending {
                        id,
                        replies: sink.replies,
                        frame,
                    });
                }
                Err(TrySendError::Closed) => {
                    if sink.replies.is_cut() {
                        self.end_our_side(id, false);
                    }
                }
            }
            return;
        }
        let Some(sink) = self.table.sink(id) else {
            return;
        };
        match sink.replies.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Full(frame)) => {
                self.pending = Some(Pending {
                    id,
                    replies: sink.replies.clone(),
                    frame,
                });
            }
            Err(TrySendError::Closed) => {
                // Cut for a slow reader: the peer is told at once, not
                // when the owner (which may not be polled) lets go.
                let cut = sink.replies.is_cut();
                self.finish_rx(id);
                if cut {
                    self.end_our_side(id, false);
                }
            }
        }
    }

    /// The owner got its last frame or stopped listening. Dropping the
    /// sink ends the owner's queue after the frames already in it.
    fn finish_rx(&mut self, id: u64) {
        drop(self.table.finish_rx(id));
    }

    /// Channels that left the table are no longer in flight.
    fn reconcile_in_flight(&mut self) {
        for _ in 0..self.table.take_removed() {
            self.shared.finish_channels(1);
        }
    }

    fn teardown(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.pending = None;
        self.reconcile_in_flight();
        for (_, delivery, sink) in self.table.drain() {
            if let Some(sink) = sink {
                sink.state.set_delivery(delivery);
            }
        }
        self.reconcile_in_flight();
        self.commands.close();
        while let Some(command) = self.commands.try_recv() {
            if let Command::Open { sink, .. } = command {
                sink.state.set_refused();
                self.shared.finish_channels(1);
            }
        }
        self.shared.closed_notify.notify_waiters();
    }
}
