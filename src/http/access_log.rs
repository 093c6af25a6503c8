//! The JSON access log (`access_log = "json"`): owns the record of one
//! request, the bounded queue from requests to a writer thread, the line
//! format, and counting the lines dropped when the writer falls behind. A
//! request never waits for the writer: a full queue drops the line and
//! counts it in `rpcgate_access_log_dropped_total`.
//!
//! The writer is a thread of its own, not a task: writing to a pipe or a
//! terminal blocks, and must not hold a runtime worker. It ends when the
//! handler (the queue's only sender) is dropped, after writing what is
//! queued.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::GatewayBody;
use crate::dispatch::BodyAborted;

/// Where JSON lines go: a bounded queue to the writer thread.
#[derive(Debug)]
pub(crate) struct AccessLog {
    queue: SyncSender<Record>,
    /// Lines dropped so far (the queue was full, or the writer is gone).
    dropped: AtomicU64,
}

impl AccessLog {
    /// Starts the writer thread: lines are appended to `file`, or written
    /// to standard error; at most `capacity` wait for it.
    pub(crate) fn start(capacity: usize, file: Option<PathBuf>) -> Self {
        let (queue, lines) = std::sync::mpsc::sync_channel(capacity.max(1));
        let spawned = std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || write_lines(&lines, file));
        if let Err(error) = spawned {
            // Its receiver is gone with the closure: every line is dropped
            // and counted.
            tracing::error!(%error, "the access log writer could not start");
        }
        Self {
            queue,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues `record` for the writer, or drops and counts it if the queue
    /// is full. Never waits.
    pub(crate) fn send(&self, record: Record) {
        match self.queue.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metrics::ACCESS_LOG_DROPPED).increment(1);
            }
        }
    }

    /// Lines dropped so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The writer thread: each record becomes one line; the output is flushed
/// whenever the queue is empty, so a quiet gateway's lines are never held.
fn write_lines(lines: &Receiver<Record>, file: Option<PathBuf>) {
    let sink: Box<dyn Write> = match file {
        None => Box::new(std::io::stderr()),
        Some(path) => match std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
        {
            Ok(file) => Box::new(file),
            Err(error) => {
                tracing::error!(%error, path = %path.display(), "the access log file cannot be opened; writing to standard error");
                Box::new(std::io::stderr())
            }
        },
    };
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, sink);
    let mut line = Vec::with_capacity(512);
    let mut failed = false;
    while let Ok(record) = lines.recv() {
        let mut next = Some(record);
        while let Some(record) = next {
            line.clear();
            record.write_json(&mut line);
            if out.write_all(&line).is_err() && !failed {
                failed = true;
                tracing::error!("writing the access log failed; later lines may be lost");
            }
            next = lines.try_recv().ok();
        }
        if out.flush().is_err() && !failed {
            failed = true;
            tracing::error!("writing the access log failed; later lines may be lost");
        }
    }
}

/// What one access-log line says.
#[derive(Debug)]
pub(crate) struct Record {
    /// When the request head was taken up (wall clock).
    pub(crate) time: SystemTime,
    /// The response's `X-Request-Id` (also the trace id).
    pub(crate) request_id: u64,
    /// The trace id sent to the backend (equal to `request_id`).
    pub(crate) trace_id: u64,
    /// The high 64 bits of an incoming W3C trace id (0 when none): the
    /// log then names the whole 128-bit trace, as its span does.
    pub(crate) trace_hi: u64,
    /// The span id sent to the backend.
    pub(crate) span_id: u64,
    pub(crate) client: String,
    pub(crate) method: hyper::Method,
    pub(crate) uri: String,
    pub(crate) status: u16,
    pub(crate) service: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) member: Option<Arc<str>>,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) attempts: Option<u32>,
    pub(crate) bytes_in: Option<u64>,
    pub(crate) bytes_out: Option<u64>,
    /// Whether the response body was sent to its end (`false`: the client
    /// went away, or the app aborted it); `None` for a push stream, logged
    /// when its head is made.
    pub(crate) complete: Option<bool>,
    /// From the head's arrival to the response head being made.
    pub(crate) head: Duration,
    /// From the head's arrival to the end of the body (or the head, for a
    /// push stream).
    pub(crate) duration: Duration,
}

impl Record {
    /// The record as one JSON object and a newline.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let value = serde_json::json!({
            "time": rfc3339(self.time),
            "request_id": format!("{:016x}", self.request_id),
            "trace_id": if self.trace_hi == 0 {
                format!("{:016x}", self.trace_id)
            } else {
                format!("{:016x}{:016x}", self.trace_hi, self.trace_id)
            },
            "span_id": format!("{:016x}", self.span_id),
            "client": self.client,
            "method": self.method.as_str(),
            "uri": self.uri,
            "status": self.status,
            "service": self.service,
            "event": self.event,
            "member": self.member.as_deref(),
            "upstream": self.upstream.map(|a| a.to_string()),
            "attempts": self.attempts,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "complete": self.complete,
            "head_ms": ms(self.head),
            "duration_ms": ms(self.duration),
        });
        // Writing into a Vec fails only if serialising fails, which a
        // `Value` never does.
        let _ = serde_json::to_writer(&mut *out, &value);
        out.push(b'\n');
    }
}

/// `time` as RFC 3339 in UTC with milliseconds: `2024-05-01T12:34:56.789Z`.
fn rfc3339(time: SystemTime) -> String {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The wall-clock time now, for a record.
#[allow(clippy::disallowed_methods)] // wall-clock time in logging is what the ban allows
pub(crate) fn now() -> SystemTime {
    SystemTime::now()
}

/// A response body that counts the bytes it passes on and, when dropped
/// (sent, or abandoned by the client), writes its request's line.
#[derive(Debug)]
pub struct Logged {
    body: GatewayBody,
    /// `None` once written.
    record: Option<Record>,
    log: Arc<AccessLog>,
    started: Instant,
    bytes: u64,
    ended: bool,
}

impl Logged {
    /// `body`, whose request's `record` is written to `log` when it is
    /// dropped; `started` is when the request head came.
    pub(crate) fn new(
        body: GatewayBody,
        record: Record,
        log: Arc<AccessLog>,
        started: Instant,
    ) -> Self {
        let ended = body.is_end_stream();
        Self {
            body,
            record: Some(record),
            log,
            started,
            bytes: 0,
            ended,
        }
    }

    pub(crate) fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyAborted>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.bytes_out = Some(self.bytes);
            record.complete = Some(self.ended || self.body.is_end_stream());
            record.duration = self.started.elapsed();
            self.log.send(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        let at = |secs: u64, millis: u64| {
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(at(1_709_164_799, 999), "2024-02-28T23:59:59.999Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        // No writer: the queue of one fills at once.
        let (queue, _lines) = std::sync::mpsc::sync_channel(1);
        let log = AccessLog {
            queue,
            dropped: AtomicU64::new(0),
        };
        let record = || Record {
            time: SystemTime::UNIX_EPOCH,
            request_id: 1,
            trace_id: 1,
            trace_hi: 0,
            span_id: 2,
            client: "-".to_owned(),
            method: hyper::Method::GET,
            uri: "/".to_owned(),
            status: 200,
            service: None,
            event: None,
            member: None,
            upstream: None,
            attempts: None,
            bytes_in: None,
            bytes_out: None,
            complete: None,
            head: Duration::ZERO,
            duration: Duration::ZERO,
        };
        for _ in 0..5 {
            log.send(record());
        }
        assert_eq!(log.dropped(), 4);
        let mut line = Vec::new();
        record().write_json(&mut line);
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["request_id"], "0000000000000001");
        assert_eq!(value["span_id"], "0000000000000002");
        assert_eq!(value["trace_id"], "0000000000000001");
        assert!(value["upstream"].is_null());
        // A W3C trace id is written whole, as the span names it.
        let mut line = Vec::new();
        Record {
            trace_hi: 0x0af7_6519_16cd_43dd,
            ..record()
        }
        .write_json(&mut line);
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(value["trace_id"], "0af7651916cd43dd0000000000000001");
    }
}
