//! The write queue: owns the bytes waiting to go out on one connection, the
//! batching of many frames per syscall, and the record of which frame ended
//! where, so the mux knows exactly which requests reached the socket.
//!
//! Small frames are appended to one buffer; a payload of at least
//! [`LARGE_PAYLOAD`](crate::proto::frame::LARGE_PAYLOAD) bytes is queued as
//! its own `Bytes` segment and written with vectored I/O, never copied.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::error::Delivery;
use crate::proto::frame::{FrameWrite, LARGE_PAYLOAD, Message};

/// At most this many slices go into one vectored write (Linux's IOV_MAX is
/// 1024; 64 already amortises the syscall over many frames).
pub const MAX_IOVECS: usize = 64;

/// A note that, once the byte at `end` is written, channel `id` reached
/// `delivery`.
#[derive(Debug, Clone, Copy)]
struct Mark {
    end: u64,
    id: u64,
    delivery: Delivery,
}

/// Bytes waiting to be written, in order: every segment, then `tail`.
#[derive(Debug, Default)]
pub struct WriteQueue {
    segments: VecDeque<Bytes>,
    tail: BytesMut,
    /// Unwritten bytes in `segments` and `tail`.
    len: usize,
    /// Bytes written since the connection started.
    written: u64,
    marks: VecDeque<Mark>,
}

impl WriteQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Unwritten bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether everything was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Encodes `message` on channel `id`. Once all of it is written, the
    /// channel will be marked as `delivery` (if given).
    pub fn push(&mut self, id: u64, message: &Message, delivery: Option<Delivery>) {
        message.encode(id, self);
        self.len += message.encoded_len(id);
        if let Some(delivery) = delivery {
            self.marks.push_back(Mark {
                end: self.written + self.len as u64,
                id,
                delivery,
            });
        }
    }

    /// Fills `slices` with the next bytes to write; returns how many.
    pub fn io_slices<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_IOVECS]) -> usize {
        let mut n = 0;
        for segment in &self.segments {
            if n == MAX_IOVECS {
                return n;
            }
            slices[n] = IoSlice::new(segment);
            n += 1;
        }
        if n < MAX_IOVECS && !self.tail.is_empty() {
            slices[n] = IoSlice::new(&self.tail);
            n += 1;
        }
        n
    }

    /// One vectored write of the queued bytes; returns how many were
    /// written (call [`WriteQueue::advance`] with it).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a write that did not complete wrote nothing.
    pub async fn write_once<W: AsyncWrite + Unpin>(
        &self,
        writer: &mut W,
    ) -> std::io::Result<usize> {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let n = self.io_slices(&mut slices);
        writer.write_vectored(&slices[..n]).await
    }

    /// Consumes `n` written bytes and returns the channels whose marks were
    /// passed, in order.
    pub fn advance(&mut self, mut n: usize, passed: &mut Vec<(u64, Delivery)>) {
        n = n.min(self.len);
        self.len -= n;
        self.written += n as u64;
        while n > 0 {
            match self.segments.front_mut() {
                Some(front) if front.len() <= n => {
                    n -= front.len();
                    self.segments.pop_front();
                }
                Some(front) => {
                    front.advance(n);
                    n = 0;
                }
                None => {
                    self.tail.advance(n);
                    n = 0;
                }
            }
        }
        while let Some(mark) = self.marks.front() {
            if mark.end > self.written {
                break;
            }
            passed.push((mark.id, mark.delivery));
            self.marks.pop_front();
        }
    }
}

impl FrameWrite for WriteQueue {
    fn buf(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    fn put_payload(&mut self, payload: &Bytes) {
        if payload.len() < LARGE_PAYLOAD {
            self.tail.extend_from_slice(payload);
            return;
        }
        if !self.tail.is_empty() {
            self.segments.push_back(self.tail.split().freeze());
        }
        self.segments.push_back(payload.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_to_vec(q: &mut WriteQueue, step: usize, passed: &mut Vec<(u64, Delivery)>) -> Vec<u8> {
        let mut out = Vec::new();
        while !q.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let n = q.io_slices(&mut slices);
            let mut budget = step;
            let mut written = 0;
            for s in &slices[..n] {
                let take = s.len().min(budget);
                out.extend_from_slice(&s[..take]);
                budget -= take;
                written += take;
                if budget == 0 {
                    break;
                }
            }
            q.advance(written, passed);
        }
        out
    }

    #[test]
    fn large_payloads_are_segments_and_order_is_kept() {
        let mut q = WriteQueue::new();
        let big = Bytes::from(vec![7u8; LARGE_PAYLOAD]);
        q.push(1, &Message::write("small"), Some(Delivery::Partial));
        q.push(1, &Message::write(big.clone()), None);
        q.push(1, &Message::close(), Some(Delivery::Complete));
        assert_eq!(q.segments.len(), 2, "head+small, then the big payload");
        assert!(
            q.segments.iter().any(|s| s.as_ptr() == big.as_ptr()),
            "the payload itself is queued, not a copy"
        );
        let mut expected = BytesMut::new();
        Message::write("small").encode(1, &mut expected);
        Message::write(big).encode(1, &mut expected);
        Message::close().encode(1, &mut expected);
        assert_eq!(q.len(), expected.len());

        let mut passed = Vec::new();
        let out = drain_to_vec(&mut q, 1000, &mut passed);
        assert_eq!(out, expected);
        assert_eq!(passed, [(1, Delivery::Partial), (1, Delivery::Complete)]);
    }

    #[test]
    fn marks_pass_only_when_their_frame_is_fully_written() {
        let mut q = WriteQueue::new();
        q.push(1, &Message::write("abc"), Some(Delivery::Partial));
        let first_len = q.len();
        q.push(2, &Message::write("def"), Some(Delivery::Partial));
        let mut passed = Vec::new();
        q.advance(first_len - 1, &mut passed);
        assert!(passed.is_empty());
        q.advance(1, &mut passed);
        assert_eq!(passed, [(1, Delivery::Partial)]);
        q.advance(q.len(), &mut passed);
        assert_eq!(passed, [(1, Delivery::Partial), (2, Delivery::Partial)]);
        assert!(q.is_empty());
    }
}
