//! The session task: owns the socket of one served connection and the table
//! of the channels its client opened.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::reply::{Incoming, Outgoing, Reply, Shared, dropped_reply_error};
use super::{Call, Service, SessionConfig, SessionError};
use crate::mux::WriteQueue;
use crate::mux::batch_queue;
use crate::mux::frame_queue::{self, FrameSender, TrySendError, room};
use crate::mux::id_hash::IdMap;
use crate::proto::{Frame, FrameCodec, Protocol};

/// Read buffer size: one read takes many small requests at once.
const READ_BUFFER: usize = 64 << 10;

/// Stop taking replies above this many unwritten bytes.
const WRITE_HIGH_WATER: usize = 1 << 20;

/// At most this many replies are encoded before the task writes.
const MAX_BATCH: usize = 256;

#[derive(Debug)]
struct Entry {
    /// What the client may still send.
    rx: Protocol,
    /// What we may still send.
    tx: Protocol,
    /// Where the client's frames go; `None` once nobody listens.
    incoming: Option<FrameSender>,
}

/// A frame waiting for room in its channel's queue; reading pauses.
#[derive(Debug)]
struct Pending {
    incoming: FrameSender,
    frame: Frame,
}

/// The handlers' side of a session: the shared state their replies use,
/// and the task's ends of the reply queue and the wake-up channel.
pub(crate) struct ReplyQueues {
    pub(crate) shared: Arc<Shared>,
    pub(crate) replies: batch_queue::Receiver<Outgoing>,
    pub(crate) wake: mpsc::Receiver<()>,
}

pub(crate) struct Session<'s, R, W, S: ?Sized> {
    reader: R,
    writer: W,
    service: &'s S,
    shared: Arc<Shared>,
    replies: batch_queue::Receiver<Outgoing>,
    wake: mpsc::Receiver<()>,
    config: SessionConfig,
    codec: FrameCodec,
    read_buf: BytesMut,
    queue: WriteQueue,
    channels: IdMap<Entry>,
    highest: u64,
    pending: Option<Pending>,
    dropped: Vec<(u64, Protocol)>,
    /// Channels opened by the frames just decoded, handed to the service
    /// once the whole read is dispatched: a request's first chunk usually
    /// arrives in the same read as its `enqueue`, so the handler finds it
    /// waiting.
    calls: Vec<Call>,
    shutdown: CancellationToken,
}

impl<'s, R, W, S> Session<'s, R, W, S>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    S: Service + ?Sized,
{
    pub(crate) fn new(
        reader: R,
        writer: W,
        service: &'s S,
        queues: ReplyQueues,
        config: SessionConfig,
        shutdown: CancellationToken,
    ) -> Self {
        let ReplyQueues {
            shared,
            replies,
            wake,
        } = queues;
        Self {
            reader,
            writer,
            service,
            shared,
            replies,
            wake,
            codec: FrameCodec::new(config.max_frame_len),
            config,
            read_buf: BytesMut::with_capacity(READ_BUFFER),
            queue: WriteQueue::new(),
            channels: IdMap::default(),
            highest: 0,
            pending: None,
            dropped: Vec::new(),
            calls: Vec::new(),
            shutdown,
        }
    }

    pub(crate) async fn run(mut self) -> Result<(), SessionError> {
        let result = self.drive().await;
        if let Err(e) = &result {
            tracing::debug!(error = %e, open = self.channels.len(), "session ended");
        }
        // Handlers see the disconnect on their `Incoming`; their replies
        // fail once the queue receiver is gone.
        self.channels.clear();
        result
    }

    async fn drive(&mut self) -> Result<(), SessionError> {
        let mut read_closed = false;
        loop {
            while self.pending.is_none() {
                match self.codec.decode(&mut self.read_buf) {
                    Ok(Some(frame)) => self.dispatch(frame)?,
                    Ok(None) => break,
                    Err(e) => return Err(SessionError::Protocol(e.to_string())),
                }
            }
            self.start_calls();
            if read_closed {
                // The client half-closed or left: write what is queued, then
                // stop. A client that closed cannot read later replies anyway.
                self.flush().await?;
                return Err(SessionError::Eof);
            }
            if self.read_buf.capacity() - self.read_buf.len() < READ_BUFFER / 4 {
                self.read_buf.reserve(READ_BUFFER);
            }
            let can_read = self.pending.is_none();
            let can_take = self.queue.len() < WRITE_HIGH_WATER;
            let pending_incoming = self.pending.as_ref().map(|p| p.incoming.clone());
            tokio::select! {
                () = self.shutdown.cancelled() => {
                    // A graceful close: read nothing more, but write every
                    // reply already queued (finished handlers' last frames).
                    while let Some(reply) = self.replies.try_recv() {
                        self.send(reply);
                    }
                    self.end_dropped_replies();
                    self.flush().await?;
                    let _ = self.writer.shutdown().await;
                    return Ok(());
                }
                Some(()) = self.wake.recv() => self.end_dropped_replies(),
                open = room(pending_incoming.as_ref()), if pending_incoming.is_some() => {
                    if let Some(p) = self.pending.take() {
                        // The session is the only sender: room stays room.
                        // A handler that stopped listening loses nothing it
                        // would read.
                        if open {
                            let _ = p.incoming.try_send(p.frame);
                        }
                    }
                }
                written = self.queue.write_once(&mut self.writer), if !self.queue.is_empty() => {
                    let n = written.map_err(SessionError::Io)?;
                    if n == 0 {
                        return Err(SessionError::Io(std::io::ErrorKind::WriteZero.into()));
                    }
                    self.queue.advance(n, &mut Vec::new());
                }
                reply = self.replies.recv(), if can_take => {
                    // The session holds a sender through `shared`, so the
                    // queue never closes while it runs.
                    if let Some(reply) = reply {
                        let was_idle = self.queue.is_empty();
                        self.send(reply);
                        self.take_queued();
                        if was_idle {
                            // Coalesce: let the other ready handlers reply
                            // too, so one write carries them all.
                            tokio::task::yield_now().await;
                            self.take_queued();
                        }
                    }
                }
                read = self.reader.read_buf(&mut self.read_buf), if can_read => {
                    if read.map_err(SessionError::Io)? == 0 {
                        read_closed = true;
                    }
                }
            }
        }
    }

    /// Takes the replies already queued, up to a batch.
    fn take_queued(&mut self) {
        for _ in 0..MAX_BATCH {
            if self.queue.len() >= WRITE_HIGH_WATER {
                break;
            }
            match self.replies.try_recv() {
                Some(reply) => self.send(reply),
                None => break,
            }
        }
    }

    /// Writes everything queued.
    async fn flush(&mut self) -> Result<(), SessionError> {
        while !self.queue.is_empty() {
            let n = self
                .queue
                .write_once(&mut self.writer)
                .await
                .map_err(SessionError::Io)?;
            if n == 0 {
                return Err(SessionError::Io(std::io::ErrorKind::WriteZero.into()));
            }
            self.queue.advance(n, &mut Vec::new());
        }
        Ok(())
    }

    /// Routes one frame from the client.
    fn dispatch(&mut self, frame: Frame) -> Result<(), SessionError> {
        let id = frame.channel;
        if id > self.highest {
            return self.open(frame);
        }
        let Some(entry) = self.channels.get_mut(&id) else {
            // An id at or below the highest seen that is not open: the
            // runtime calls this a revoked channel and drops the connection.
            return Err(SessionError::Protocol(format!(
                "frame for finished or unknown channel {id}"
            )));
        };
        let Some(next) = entry.rx.next(frame.ty) else {
            return Err(SessionError::Protocol(format!(
                "message type {} not allowed on channel {id} in state {:?}",
                frame.ty, entry.rx
            )));
        };
        entry.rx = next;
        if let Some(incoming) = &entry.incoming {
            match incoming.try_send(frame) {
                Ok(()) => {}
                Err(TrySendError::Full(frame)) => {
                    self.pending = Some(Pending {
                        incoming: incoming.clone(),
                        frame,
                    });
                }
                // The handler stopped listening: frames are checked, then dropped.
                Err(TrySendError::Closed) => entry.incoming = None,
            }
        }
        if next.is_terminal() {
            entry.incoming = None;
            self.remove_if_finished(id);
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame) -> Result<(), SessionError> {
        let id = frame.channel;
        let Some((rx, tx)) = self.service.protocols(frame.ty) else {
            return Err(SessionError::Protocol(format!(
                "unknown method {} on channel {id}",
                frame.ty
            )));
        };
        self.highest = id;
        let (incoming_tx, incoming_rx) = if rx.is_terminal() {
            (None, None)
        } else {
            let (tx, rx) = frame_queue::channel(self.config.channel_queue);
            (Some(tx), Some(rx))
        };
        self.channels.insert(
            id,
            Entry {
                rx,
                tx,
                incoming: incoming_tx,
            },
        );
        self.calls.push(Call {
            channel: id,
            method: frame.ty,
            args: frame.args,
            headers: frame.headers,
            incoming: Incoming::new(rx, incoming_rx),
            reply: Reply::new(id, tx, Arc::clone(&self.shared)),
        });
        Ok(())
    }

    /// Hands the channels opened by the frames just dispatched to the
    /// service, in order.
    fn start_calls(&mut self) {
        let mut calls = std::mem::take(&mut self.calls);
        for call in calls.drain(..) {
            let id = call.channel;
            self.service.call(call);
            self.remove_if_finished(id);
        }
        self.calls = calls;
    }

    /// Encodes a reply, if the channel's state still allows it.
    fn send(&mut self, reply: Outgoing) {
        let Some(entry) = self.channels.get_mut(&reply.channel) else {
            return;
        };
        let Some(next) = entry.tx.next(reply.message.ty) else {
            return;
        };
        entry.tx = next;
        self.queue.push(reply.channel, &reply.message, None);
        if next.is_terminal() {
            self.remove_if_finished(reply.channel);
        }
    }

    /// Ends the channels whose handlers dropped their reply unfinished.
    fn end_dropped_replies(&mut self) {
        self.shared.take_dropped(&mut self.dropped);
        let dropped = std::mem::take(&mut self.dropped);
        for (id, state) in &dropped {
            // Replies queued before the drop come first: drain them now.
            while let Some(reply) = self.replies.try_recv() {
                self.send(reply);
            }
            let still_open = self
                .channels
                .get(id)
                .is_some_and(|entry| entry.tx == *state && !state.is_terminal());
            if still_open {
                if let Some(message) = dropped_reply_error(*state) {
                    self.send(Outgoing {
                        channel: *id,
                        message,
                    });
                }
            }
        }
        self.dropped = dropped;
        self.dropped.clear();
    }

    fn remove_if_finished(&mut self, id: u64) {
        if self
            .channels
            .get(&id)
            .is_some_and(|e| e.rx.is_terminal() && e.tx.is_terminal())
        {
            self.channels.remove(&id);
        }
    }
}
