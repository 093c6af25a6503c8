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
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::GatewayBody;
use crate::dispatch::BodyAborted;

/// What the writer thread is handed.
// Lines are the traffic and sit in the queue inline, with no box per line;
// a flush is once per shutdown.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Entry {
    /// A line to write.
    Line(Record),
    /// Write and flush everything queued before this, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Where JSON lines go: a bounded queue to the writer thread.
#[derive(Debug)]
pub(crate) struct AccessLog {
    queue: SyncSender<Entry>,
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
        match self.queue.try_send(Entry::Line(record)) {
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

    /// Waits until the lines queued before this call are written and
    /// flushed, for at most `limit`; whether they were. Shutdown calls it,
    /// so the last requests' lines are not lost with the process.
    pub(crate) async fn flush(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        let (done, flushed) = tokio::sync::oneshot::channel();
        let mut entry = Entry::Flush(done);
        loop {
            match self.queue.try_send(entry) {
                Ok(()) => break,
                // A full queue is being written: look again shortly.
                Err(TrySendError::Full(back)) if Instant::now() < until => {
                    entry = back;
                    tokio::time::sleep(LINGER).await;
                }
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return false,
            }
        }
        matches!(tokio::time::timeout_at(until, flushed).await, Ok(Ok(())))
    }
}

/// How long the writer lets lines gather after writing a batch before it
/// looks again. Under load it so wakes once per `LINGER`, not once per line
/// (a wake-up per request was most of the JSON log's cost); a line that
/// comes to an idle writer is written at once.
const LINGER: Duration = Duration::from_millis(5);

/// The writer thread: each record becomes one line. After each batch the
/// output is flushed, so a line waits at most about [`LINGER`] to reach the
/// sink, and a quiet gateway's lines are never held.
fn write_lines(lines: &Receiver<Entry>, file: Option<PathBuf>) {
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
    let mut report = |result: std::io::Result<()>| {
        if result.is_err() && !failed {
            failed = true;
            tracing::error!("writing the access log failed; later lines may be lost");
        }
    };
    // Blocks only when the last look, after a linger, found nothing.
    while let Ok(entry) = lines.recv() {
        let mut next = Some(entry);
        loop {
            while let Some(entry) = next {
                match entry {
                    Entry::Line(record) => {
                        line.clear();
                        record.write_json(&mut line);
                        report(out.write_all(&line));
                    }
                    Entry::Flush(done) => {
                        report(out.flush());
                        let _ = done.send(());
                    }
                }
                next = lines.try_recv().ok();
            }
            report(out.flush());
            linger();
            match lines.try_recv() {
                Ok(entry) => next = Some(entry),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
    }
}

/// Lets lines gather for [`LINGER`]. This thread is the writer's own, not a
/// runtime worker, so a blocking sleep holds up nothing else.
#[allow(clippy::disallowed_methods)]
fn linger() {
    std::thread::sleep(LINGER);
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
    /// The record as one JSON object and a newline, its fields in the
    /// order of the README's table. Written straight into `out`: no
    /// `serde_json::Value` and no string per field (the writer's cost per
    /// line is most of the JSON log's cost, see benches/ab_layers.sh).
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        // Writing into a Vec never fails: the results are ignored.
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        out.extend_from_slice(b"{\"time\":\"");
        write_rfc3339(out, self.time);
        let _ = write!(out, "\",\"request_id\":\"{:016x}\"", self.request_id);
        out.extend_from_slice(b",\"trace_id\":\"");
        if self.trace_hi != 0 {
            let _ = write!(out, "{:016x}", self.trace_hi);
        }
        let _ = write!(
            out,
            "{:016x}\",\"span_id\":\"{:016x}\",\"client\":",
            self.trace_id, self.span_id
        );
        json_str(out, &self.client);
        out.extend_from_slice(b",\"method\":");
        json_str(out, self.method.as_str());
        out.extend_from_slice(b",\"uri\":");
        json_str(out, &self.uri);
        let _ = write!(out, ",\"status\":{},\"service\":", self.status);
        json_opt_str(out, self.service.as_deref());
        out.extend_from_slice(b",\"event\":");
        json_opt_str(out, self.event.as_deref());
        out.extend_from_slice(b",\"member\":");
        json_opt_str(out, self.member.as_deref());
        out.extend_from_slice(b",\"upstream\":");
        match self.upstream {
            // An address's text needs no escaping.
            Some(addr) => {
                let _ = write!(out, "\"{addr}\"");
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"attempts\":");
        json_opt_num(out, self.attempts);
        out.extend_from_slice(b",\"bytes_in\":");
        json_opt_num(out, self.bytes_in);
        out.extend_from_slice(b",\"bytes_out\":");
        json_opt_num(out, self.bytes_out);
        out.extend_from_slice(b",\"complete\":");
        json_opt_num(out, self.complete);
        out.extend_from_slice(b",\"head_ms\":");
        let _ = serde_json::to_writer(&mut *out, &ms(self.head));
        out.extend_from_slice(b",\"duration_ms\":");
        let _ = serde_json::to_writer(&mut *out, &ms(self.duration));
        out.extend_from_slice(b"}\n");
    }
}

/// `value` as a JSON string, escaped.
fn json_str(out: &mut Vec<u8>, value: &str) {
    let _ = serde_json::to_writer(out, value);
}

/// `value` as a JSON string, or `null`.
fn json_opt_str(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(value) => json_str(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// `value` as a JSON number or boolean (its `Display`), or `null`.
fn json_opt_num<T: std::fmt::Display>(out: &mut Vec<u8>, value: Option<T>) {
    let _ = match value {
        Some(value) => write!(out, "{value}"),
        None => write!(out, "null"),
    };
}

/// `time` as RFC 3339 in UTC with milliseconds: `2024-05-01T12:34:56.789Z`.
fn write_rfc3339(out: &mut Vec<u8>, time: SystemTime) {
    let since = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    );
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
    /// The body it counts.
    pub(crate) fn body(&self) -> &GatewayBody {
        &self.body
    }

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
            let mut out = Vec::new();
            write_rfc3339(
                &mut out,
                SystemTime::UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis),
            );
            String::from_utf8(out).unwrap()
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

    #[test]
    fn every_field_is_written_escaped_on_one_line() {
        let record = Record {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_709_164_799_999),
            request_id: 0xab,
            trace_id: 0xab,
            trace_hi: 0,
            span_id: 0x5f0c_6a3d_9e21_b4c7,
            client: "[::1]:4711".to_owned(),
            method: hyper::Method::POST,
            uri: "/echo/http/a\"b\\c\u{1}d\u{e9}?x=\n".to_owned(),
            status: 502,
            service: Some("echo".to_owned()),
            event: Some("http".to_owned()),
            member: Some(Arc::from("echo-v2")),
            upstream: Some("127.0.0.1:41234".parse().unwrap()),
            attempts: Some(2),
            bytes_in: Some(10),
            bytes_out: Some(0),
            complete: Some(false),
            head: Duration::from_micros(412),
            duration: Duration::from_micros(1_468),
        };
        let mut line = Vec::new();
        record.write_json(&mut line);
        assert!(
            line.starts_with(b"{\"time\":"),
            "time first, as the README shows"
        );
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        let expected = serde_json::json!({
            "time": "2024-02-28T23:59:59.999Z",
            "request_id": "00000000000000ab",
            "trace_id": "00000000000000ab",
            "span_id": "5f0c6a3d9e21b4c7",
            "client": "[::1]:4711",
            "method": "POST",
            "uri": "/echo/http/a\"b\\c\u{1}d\u{e9}?x=\n",
            "status": 502,
            "service": "echo",
            "event": "http",
            "member": "echo-v2",
            "upstream": "127.0.0.1:41234",
            "attempts": 2,
            "bytes_in": 10,
            "bytes_out": 0,
            "complete": false,
            "head_ms": 0.412,
            "duration_ms": 1.468,
        });
        assert_eq!(value, expected);
    }
}
